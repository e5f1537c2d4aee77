//! Certificates: PEM loading, the rustls `ServerConfig`, a self-signed certificate on first start,
//! and [`CertReloader`], which rebuilds the config when the files change.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{ClientCertificates, TlsConfig, TlsVersion};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration (e.g. key does not match certificate).
    #[error("TLS configuration: {0}")]
    Rustls(String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(String),
}

/// Everything needed to build the server's TLS configuration, with resolved file paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain (leaf first).
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// Lowest TLS version.
    pub min_version: TlsVersion,
    /// Highest TLS version.
    pub max_version: TlsVersion,
    /// Client certificate policy.
    pub client_certificates: ClientCertificates,
    /// CA bundle for client certificates (required unless `Off`).
    pub client_ca_file: Option<PathBuf>,
}

impl TlsSettings {
    /// Settings from the config's `[tls]` table; without `cert_file`/`key_file`, a self-signed
    /// certificate in `state_dir` is created (first start) or reused ([`ensure_self_signed`]).
    ///
    /// # Errors
    /// When the self-signed certificate cannot be generated or written.
    pub fn from_config(tls: &TlsConfig, state_dir: &Path) -> Result<Self, CertError> {
        let (cert_file, key_file) = match (&tls.cert_file, &tls.key_file) {
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => ensure_self_signed(state_dir)?,
        };
        Ok(Self {
            cert_file,
            key_file,
            min_version: tls.min_version,
            max_version: tls.max_version,
            client_certificates: tls.client_certificates,
            client_ca_file: tls.client_ca_file.clone(),
        })
    }
}

/// Reads a PEM certificate chain.
///
/// # Errors
/// When the file is unreadable or holds no certificate.
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let pem_err = |message: String| CertError::Pem {
        path: path.to_owned(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(pem_err("no CERTIFICATE block".into()));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// When the file is unreadable or holds no key.
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = std::fs::read(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| CertError::Pem {
        path: path.to_owned(),
        message: format!("no usable private key: {e}"),
    })
}

/// Builds the server's TLS configuration (ring provider). The engine clones it per control
/// session for session binding (DESIGN.md), so nothing session-specific is set here.
///
/// # Errors
/// Unreadable files, a key that does not match the certificate, an empty CA bundle.
pub fn build_server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, CertError> {
    let chain = load_certificates(&settings.cert_file)?;
    let key = load_private_key(&settings.key_file)?;
    let provider = Arc::new(ftps_proto::tls_provider());
    let versions: &[&rustls::SupportedProtocolVersion] =
        match (settings.min_version, settings.max_version) {
            (TlsVersion::Tls12, TlsVersion::Tls13) => {
                &[&rustls::version::TLS13, &rustls::version::TLS12]
            }
            (TlsVersion::Tls12, TlsVersion::Tls12) => &[&rustls::version::TLS12],
            (TlsVersion::Tls13, _) => &[&rustls::version::TLS13],
        };
    let rustls_err = |e: rustls::Error| CertError::Rustls(e.to_string());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(rustls_err)?;
    let builder = match settings.client_certificates {
        ClientCertificates::Off => builder.with_no_client_auth(),
        mode => {
            let ca_file = settings.client_ca_file.as_deref().ok_or_else(|| {
                CertError::Rustls("client certificates need tls.client_ca_file".into())
            })?;
            let mut roots = RootCertStore::empty();
            for ca in load_certificates(ca_file)? {
                roots.add(ca).map_err(rustls_err)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == ClientCertificates::Request {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| CertError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(rustls_err)?;
    Ok(Arc::new(config))
}

/// Returns `<state_dir>/cert.pem` and `<state_dir>/key.pem`, generating a self-signed certificate
/// for `localhost`, `127.0.0.1` and `::1` there if either is missing (key written with mode 0600).
///
/// # Errors
/// When the directory or files cannot be written.
pub fn ensure_self_signed(state_dir: &Path) -> Result<(PathBuf, PathBuf), CertError> {
    let cert_path = state_dir.join("cert.pem");
    let key_path = state_dir.join("key.pem");
    if cert_path.is_file() && key_path.is_file() {
        return Ok((cert_path, key_path));
    }
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| CertError::Io { path, source }
    };
    std::fs::create_dir_all(state_dir).map_err(io_err(state_dir))?;
    let generated = rcgen::generate_simple_self_signed(vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(|e| CertError::Generate(e.to_string()))?;
    // Key first, private from the first byte; a half-written pair is regenerated next start.
    write_new_file(
        &key_path,
        generated.key_pair.serialize_pem().as_bytes(),
        0o600,
    )
    .map_err(io_err(&key_path))?;
    write_new_file(&cert_path, generated.cert.pem().as_bytes(), 0o644)
        .map_err(io_err(&cert_path))?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed certificate");
    Ok((cert_path, key_path))
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // `mode` applies only when the file is created: make an existing file private too.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()
}

/// What identifies a version of a file without reading it.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Holds the current TLS configuration and rebuilds it when the certificate, key or CA files
/// change. Sessions keep the `Arc` they took; new sessions get the new one. A failed reload keeps
/// the old configuration (a half-renewed certificate never takes the server down).
#[derive(Debug)]
pub struct CertReloader {
    settings: TlsSettings,
    current: Mutex<Arc<ServerConfig>>,
    stamps: Mutex<Vec<Stamp>>,
}

impl CertReloader {
    /// Builds the first configuration.
    ///
    /// # Errors
    /// As [`build_server_config`].
    pub fn new(settings: TlsSettings) -> Result<Self, CertError> {
        let stamps = Self::stamps_of(&settings);
        let config = build_server_config(&settings)?;
        Ok(Self {
            settings,
            current: Mutex::new(config),
            stamps: Mutex::new(stamps),
        })
    }

    /// The configuration for a new session.
    #[must_use]
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The settings in use.
    #[must_use]
    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Rebuilds the configuration now (SIGHUP).
    ///
    /// # Errors
    /// As [`build_server_config`]; the old configuration stays in use.
    pub fn reload(&self) -> Result<(), CertError> {
        let stamps = Self::stamps_of(&self.settings);
        let config = build_server_config(&self.settings)?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = config;
        *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) = stamps;
        tracing::info!(cert = %self.settings.cert_file.display(), "TLS configuration reloaded");
        Ok(())
    }

    /// Rebuilds the configuration if a file's modification time or size changed since the last
    /// build (call it periodically, e.g. every minute). Returns whether it reloaded.
    ///
    /// # Errors
    /// As [`build_server_config`]; the old configuration stays in use, and the same change is
    /// retried on the next call.
    pub fn reload_if_changed(&self) -> Result<bool, CertError> {
        let now = Self::stamps_of(&self.settings);
        if *self.stamps.lock().unwrap_or_else(PoisonError::into_inner) == now {
            return Ok(false);
        }
        self.reload().map(|()| true)
    }

    fn stamps_of(settings: &TlsSettings) -> Vec<Stamp> {
        let mut stamps = vec![stamp(&settings.cert_file), stamp(&settings.key_file)];
        if let Some(ca) = &settings.client_ca_file {
            stamps.push(stamp(ca));
        }
        stamps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn settings(dir: &Path) -> TlsSettings {
        TlsSettings::from_config(&TlsConfig::default(), dir).unwrap()
    }

    #[test]
    fn self_signed_is_generated_once_with_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let s = settings(&state);
        assert_eq!(s.cert_file, state.join("cert.pem"));
        let mode = std::fs::metadata(&s.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let first = std::fs::read(&s.cert_file).unwrap();
        let again = settings(&state);
        assert_eq!(again, s);
        assert_eq!(std::fs::read(&s.cert_file).unwrap(), first);
        let config = build_server_config(&s).unwrap();
        assert!(config.alpn_protocols.is_empty());
    }

    #[test]
    fn tls13_only_and_client_auth_configs_build() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.min_version = TlsVersion::Tls13;
        build_server_config(&s).unwrap();
        (s.min_version, s.max_version) = (TlsVersion::Tls12, TlsVersion::Tls12);
        build_server_config(&s).unwrap();
        s.min_version = TlsVersion::Tls13;
        s.client_certificates = ClientCertificates::Require;
        assert!(matches!(build_server_config(&s), Err(CertError::Rustls(_))));
        // The self-signed certificate doubles as a CA bundle for the test.
        s.client_ca_file = Some(s.cert_file.clone());
        build_server_config(&s).unwrap();
        s.client_certificates = ClientCertificates::Request;
        build_server_config(&s).unwrap();
    }

    #[test]
    fn bad_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        s.cert_file = empty.clone();
        assert!(matches!(
            build_server_config(&s),
            Err(CertError::Pem { .. })
        ));
        s.cert_file = dir.path().join("missing.pem");
        assert!(matches!(build_server_config(&s), Err(CertError::Io { .. })));
        // A key that does not match the certificate.
        let other = tempfile::tempdir().unwrap();
        let mut s = settings(dir.path());
        s.key_file = settings(other.path()).key_file;
        assert!(matches!(build_server_config(&s), Err(CertError::Rustls(_))));
    }

    #[test]
    fn reloader_picks_up_changed_files_and_keeps_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path());
        let reloader = CertReloader::new(s.clone()).unwrap();
        let first = reloader.current();
        assert!(!reloader.reload_if_changed().unwrap());
        assert!(Arc::ptr_eq(&first, &reloader.current()));
        // Replace with a fresh pair (a renewal).
        let other = tempfile::tempdir().unwrap();
        let fresh = settings(other.path());
        std::fs::copy(&fresh.cert_file, &s.cert_file).unwrap();
        std::fs::copy(&fresh.key_file, &s.key_file).unwrap();
        let size = std::fs::metadata(&s.cert_file).unwrap().len();
        // Size may be equal; force a distinct mtime.
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&s.cert_file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert!(size > 0);
        assert!(reloader.reload_if_changed().unwrap());
        assert!(!Arc::ptr_eq(&first, &reloader.current()));
        // A broken key: the reload fails and the previous config stays.
        let current = reloader.current();
        std::fs::write(&s.key_file, "garbage").unwrap();
        assert!(reloader.reload_if_changed().is_err());
        assert!(Arc::ptr_eq(&current, &reloader.current()));
    }
}
