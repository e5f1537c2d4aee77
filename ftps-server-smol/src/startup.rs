//! Turning a validated [`Config`] into the ready-to-run parts of a server: directories, TLS,
//! users, storage, lockout tracker. The binary calls [`prepare`] and hands the result to the server
//! loop.

use std::sync::Arc;
use std::time::SystemTime;

use crate::auth::{
    ensure_users_file, AnonymousAccess, AuthError, Authenticator, LoginThrottle, UsersFile,
};
use crate::certs::{CertError, CertReloader, TlsSettings};
use crate::config::{Config, ConfigError, StorageBackend};
use crate::storage::{LocalStorage, S3Storage, StorageError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// TLS could not be set up.
    #[error(transparent)]
    Certs(#[from] CertError),
    /// The users file is unusable.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// A directory could not be created or opened.
    #[error("{what} {path}: {source}")]
    Directory {
        /// Which directory.
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Startup cleanup of the storage failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

/// Everything the server loop needs, built from the configuration.
pub struct ServerParts {
    /// The validated configuration.
    pub config: Config,
    /// The current TLS configuration, rebuilt when the files change.
    pub tls: Arc<CertReloader>,
    /// Login checks.
    pub authenticator: Arc<dyn Authenticator>,
    /// The storage root (users' homes are subdirectories or separate roots); `None` with the S3 backend, whose
    /// `root` is not used (and not created).
    pub storage: Option<LocalStorage>,
    /// With `[storage] backend = "s3"`: the bucket, served instead of `storage` (users' homes are sub-prefixes;
    /// a home that names a directory of its own stays local).
    pub object_storage: Option<S3Storage>,
    /// The per-IP failed-login lockout.
    pub throttle: Arc<LoginThrottle>,
    /// When this process started preparing (upload temp files older than this were removed).
    pub started_at: SystemTime,
    /// The password of the default user when the users file was just created (show it once).
    pub generated_password: Option<String>,
}

impl std::fmt::Debug for ServerParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerParts")
            .field("config", &self.config)
            .field("storage", &self.storage)
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

fn create_dir(what: &'static str, path: &std::path::Path) -> Result<(), StartupError> {
    std::fs::create_dir_all(path).map_err(|source| StartupError::Directory {
        what,
        path: path.to_owned(),
        source,
    })
}

/// Validates the configuration, creates `root` and `state_dir` if missing, generates the
/// self-signed certificate and the default users file on first start, loads users, and removes
/// upload temp files left by an earlier process. Blocking: call before the server loop starts.
///
/// # Errors
/// The first thing that prevents starting, in words for the operator.
pub fn prepare(config: Config) -> Result<ServerParts, StartupError> {
    let started_at = SystemTime::now();
    config.validate()?;
    let local = config.storage.backend == StorageBackend::Local;
    if local {
        create_dir("root", &config.root)?;
    }
    create_dir("state_dir", &config.state_dir)?;
    let tls = CertReloader::new(TlsSettings::from_config(&config.tls, &config.state_dir)?)?;
    let users_path = config.users_file_path();
    let generated_password = if config.users_file.is_none() {
        ensure_users_file(&users_path)?
    } else {
        None
    };
    let anonymous = config.anonymous.enabled.then(|| AnonymousAccess {
        root: config.anonymous.root.clone(),
    });
    let users = UsersFile::load(&users_path, anonymous)?;
    tracing::info!(users = users.len(), file = %users_path.display(), "users loaded");
    let storage = if local {
        let storage = LocalStorage::open(&config.root)
            .map_err(|source| StartupError::Directory {
                what: "root",
                path: config.root.clone(),
                source,
            })?
            .with_sync_on_commit(config.storage.fsync);
        let removed = futures_lite::future::block_on(storage.cleanup_temp_files(started_at))?;
        if removed > 0 {
            tracing::info!(removed, "removed upload temp files left by an earlier run");
        }
        Some(storage)
    } else {
        None
    };
    // Users whose home is a directory of its own keep their temp files there.
    for dir in users.directory_homes() {
        let cleaned = LocalStorage::open(&dir)
            .map_err(StorageError::from)
            .and_then(|home| futures_lite::future::block_on(home.cleanup_temp_files(started_at)));
        match cleaned {
            Ok(0) => {}
            Ok(removed) => {
                tracing::info!(removed, home = %dir.display(), "removed upload temp files left by an earlier run")
            }
            Err(e) => {
                tracing::warn!(home = %dir.display(), error = %e, "cannot clean upload temp files")
            }
        }
    }
    let object_storage = match config.storage.backend {
        StorageBackend::S3 => {
            let options = config.storage.s3_options()?;
            let s3 = S3Storage::new(&options)?;
            // A wrong endpoint, bucket or key fails the start, not every login.
            futures_lite::future::block_on(s3.check())?;
            // The time views read the bucket's own versions: without versioning there would be none to show.
            if config.versions.enabled {
                futures_lite::future::block_on(s3.check_versioning())?;
            }
            tracing::info!(endpoint = %options.endpoint, bucket = %options.bucket, prefix = %options.prefix, "serving an S3 bucket");
            Some(s3)
        }
        _ => None,
    };
    let limits = &config.limits;
    let throttle = LoginThrottle::new(
        limits.max_failed_logins,
        limits.lockout_window(),
        limits.lockout_period(),
        limits.lockout_table_size,
    );
    Ok(ServerParts {
        tls: Arc::new(tls),
        authenticator: Arc::new(users),
        storage,
        object_storage,
        throttle: Arc::new(throttle),
        started_at,
        generated_password,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_start_creates_everything_and_second_reuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            root: dir.path().join("root"),
            state_dir: dir.path().join("state"),
            ..Config::default()
        };
        let parts = prepare(config.clone()).unwrap();
        assert!(parts.generated_password.is_some());
        for file in ["cert.pem", "key.pem", "users.toml"] {
            assert!(dir.path().join("state").join(file).is_file(), "{file}");
        }
        assert!(dir.path().join("root").is_dir());
        let again = prepare(config).unwrap();
        assert_eq!(again.generated_password, None);
    }

    #[test]
    fn storage_fsync_follows_the_config_and_defaults_to_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            root: dir.path().join("root"),
            state_dir: dir.path().join("state"),
            ..Config::default()
        };
        let sync = |config: Config| prepare(config).unwrap().storage.unwrap().sync_on_commit();
        assert!(sync(config.clone()));
        config.storage.fsync = false;
        assert!(!sync(config));
    }

    #[test]
    fn a_crash_leftover_in_the_reserved_folder_is_removed_at_start_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let config = Config {
            root: root.clone(),
            state_dir: dir.path().join("state"),
            ..Config::default()
        };
        prepare(config.clone()).unwrap();
        std::fs::create_dir_all(root.join(crate::storage::RESERVED_NAME)).unwrap();
        let leftover = root
            .join(crate::storage::RESERVED_NAME)
            .join("upload.00112233aabbccdd.tmp");
        std::fs::write(&leftover, b"partial").unwrap();
        std::fs::write(root.join(".ftps-upload.mine.tmp"), b"mine").unwrap();
        // Older than the next start.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&leftover)
            .unwrap()
            .set_modified(old)
            .unwrap();
        prepare(config).unwrap();
        assert!(!leftover.exists());
        assert_eq!(
            std::fs::read(root.join(".ftps-upload.mine.tmp")).unwrap(),
            b"mine"
        );
    }

    #[test]
    fn invalid_config_is_refused_before_touching_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            root: dir.path().join("root"),
            ..Config::default()
        };
        config.limits.max_sessions = 0;
        assert!(matches!(prepare(config), Err(StartupError::Config(_))));
        assert!(!dir.path().join("root").exists());
    }
}
