//! [`UsersFile`]: users from a TOML file with argon2id password hashes.
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # `ftps-server user add alice`
//! home = "/alice"            # inside the server root (default "/"), or:
//! # root = "/srv/alice"      # a separate directory
//! permission = "read-write"  # or "read-only"
//! # require_tls = false      # per-user override of the server policy
//! # site_to_site = true      # per-user FXP opt-in (PORT/PASV with another server, SSCN/CPSV); false denies it
//! # cert_cn = "alice"        # client certificate mapping (subject CN or a subjectAltName)
//! ```
//!
//! Plain-text passwords are refused: a `password` field is a load error.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, PasswordHash};
use serde::{Deserialize, Serialize};

use super::{
    certificate_names, AuthError, AuthOutcome, AuthenticatedUser, Authenticator, LoginAttempt,
    Permission, UserHome,
};
use crate::storage::BoxFuture;

/// One `[[user]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password_hash: Option<String>,
    #[serde(default = "default_home")]
    home: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    root: Option<PathBuf>,
    #[serde(default = "default_permission")]
    permission: Permission,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    require_tls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    site_to_site: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert_cn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cert_san: Option<String>,
}

fn default_home() -> String {
    "/".to_owned()
}

fn default_permission() -> Permission {
    Permission::ReadWrite
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileContents {
    #[serde(default)]
    user: Vec<UserEntry>,
}

/// Anonymous access settings for [`UsersFile::load`]: the `anonymous` and `ftp` user names (unless
/// a configured user has that name) log in read-only with any password.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnonymousAccess {
    /// The directory anonymous users see; `None` is the server root.
    pub root: Option<PathBuf>,
}

/// An [`Authenticator`] over a TOML users file, loaded once (reload by loading again).
#[derive(Debug)]
pub struct UsersFile {
    users: HashMap<String, Arc<UserEntry>>,
    anonymous: Option<AnonymousAccess>,
    /// Verified for unknown users, so a miss costs what a hit costs (no user enumeration by timing).
    dummy_hash: Arc<str>,
}

fn invalid(path: &Path, message: impl Into<String>) -> AuthError {
    AuthError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn read_contents(path: &Path) -> Result<FileContents, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::Io {
        path: path.to_owned(),
        source,
    })?;
    let value: toml::Table = toml::from_str(&text).map_err(|e| invalid(path, e.to_string()))?;
    if let Some(toml::Value::Array(users)) = value.get("user") {
        for user in users {
            if user.get("password").is_some() {
                return Err(invalid(
                    path,
                    "plain-text `password` fields are refused: store an argon2id `password_hash` \
                     (`ftps-server user passwd NAME` writes one)",
                ));
            }
        }
    }
    value
        .try_into::<FileContents>()
        .map_err(|e| invalid(path, e.to_string()))
}

fn check_entry(path: &Path, user: &UserEntry) -> Result<(), AuthError> {
    let who = &user.name;
    if user.name.is_empty() || user.name.chars().any(|c| c.is_control() || c == ' ') {
        return Err(invalid(
            path,
            format!("user name {who:?} is empty or has spaces"),
        ));
    }
    if let Some(hash) = &user.password_hash {
        let parsed = PasswordHash::new(hash).map_err(|e| {
            invalid(
                path,
                format!("user {who}: password_hash is not a PHC string: {e}"),
            )
        })?;
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return Err(invalid(
                path,
                format!(
                    "user {who}: password_hash must be argon2id, not {}",
                    parsed.algorithm
                ),
            ));
        }
    } else if user.cert_cn.is_none() && user.cert_san.is_none() {
        return Err(invalid(
            path,
            format!(
                "user {who}: needs a password_hash or a certificate mapping (cert_cn/cert_san)"
            ),
        ));
    }
    if !user.home.starts_with('/') || user.home.split('/').any(|c| c == "..") {
        return Err(invalid(
            path,
            format!(
                "user {who}: home {:?} must be an absolute virtual path without ..",
                user.home
            ),
        ));
    }
    Ok(())
}

impl UsersFile {
    /// Loads and checks a users file. Blocking (it also hashes a dummy password once); call at start.
    ///
    /// # Errors
    /// Unreadable file, bad TOML, plain passwords, non-argon2id hashes, duplicate names.
    pub fn load(path: &Path, anonymous: Option<AnonymousAccess>) -> Result<Self, AuthError> {
        let contents = read_contents(path)?;
        let mut users = HashMap::new();
        for user in contents.user {
            check_entry(path, &user)?;
            let name = user.name.clone();
            if users.insert(name.clone(), Arc::new(user)).is_some() {
                return Err(invalid(path, format!("user {name} is listed twice")));
            }
        }
        let dummy_hash = hash_password(&generate_password())?;
        Ok(Self {
            users,
            anonymous,
            dummy_hash: dummy_hash.into(),
        })
    }

    /// The directories that users have as a storage root of their own (`root = ...`), each once: the
    /// server cleans their upload temp folders at start.
    #[must_use]
    pub fn directory_homes(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self.users.values().filter_map(|u| u.root.clone()).collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// How many users the file defines.
    #[must_use]
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file defines no users.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn accepted(user: &UserEntry) -> AuthenticatedUser {
        AuthenticatedUser {
            name: user.name.clone(),
            home: match &user.root {
                Some(root) => UserHome::Directory(root.clone()),
                None => UserHome::Virtual(user.home.clone()),
            },
            permission: user.permission,
            require_tls: user.require_tls,
            site_to_site: user.site_to_site,
        }
    }
}

/// Whether the certificate satisfies the user's mapping (`true` when the user has none).
fn certificate_matches(user: &UserEntry, certificate: Option<&[u8]>) -> bool {
    if user.cert_cn.is_none() && user.cert_san.is_none() {
        return true;
    }
    let Some(der) = certificate else {
        return false;
    };
    let names = certificate_names(der);
    let cn_ok = user
        .cert_cn
        .as_ref()
        .is_none_or(|cn| names.common_names.iter().any(|n| n == cn));
    let san_ok = user
        .cert_san
        .as_ref()
        .is_none_or(|san| names.alt_names.iter().any(|n| n.eq_ignore_ascii_case(san)));
    cn_ok && san_ok
}

fn verify(hash: &str, password: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// How many argon2id verifications run at once: one per core.
///
/// Each one holds its memory cost (19 MiB at the defaults, `m=19456`) and a core for tens of milliseconds. The
/// blocking pool would start one thread per waiting login (up to 500), so a burst of 200 logins measured 3.8 GiB
/// of server RSS and every one of them finished late (13 s p50, `cargo xtask load`); queued here, memory stays at
/// a few dozen MiB and logins finish in arrival order.
fn kdf_slots() -> &'static smol::lock::Semaphore {
    static SLOTS: std::sync::OnceLock<smol::lock::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        smol::lock::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    })
}

/// Verifies a password on the blocking pool, never on the event loop, at most [`kdf_slots`] at once.
async fn verify_off_loop(hash: Arc<str>, password: String) -> bool {
    let _slot = kdf_slots().acquire().await;
    blocking::unblock(move || verify(&hash, &password)).await
}

impl Authenticator for UsersFile {
    /// A user with a `password_hash` needs the password; a user with `cert_cn`/`cert_san` needs a
    /// matching client certificate; a user with both needs both.
    fn authenticate(&self, attempt: LoginAttempt) -> BoxFuture<'_, AuthOutcome> {
        Box::pin(async move {
            let Some(user) = self.users.get(&attempt.user).cloned() else {
                if let Some(anonymous) = &self.anonymous {
                    if attempt.user == "anonymous" || attempt.user == "ftp" {
                        return AuthOutcome::Accepted(AuthenticatedUser {
                            name: "anonymous".to_owned(),
                            home: match &anonymous.root {
                                Some(root) => UserHome::Directory(root.clone()),
                                None => UserHome::Virtual("/".to_owned()),
                            },
                            permission: Permission::ReadOnly,
                            require_tls: None,
                            site_to_site: None,
                        });
                    }
                }
                verify_off_loop(Arc::clone(&self.dummy_hash), attempt.password).await;
                return AuthOutcome::Denied;
            };
            let cert_ok = certificate_matches(&user, attempt.client_certificate.as_deref());
            let password_ok = match user.password_hash.clone() {
                // Hash even when the certificate failed, so timing says nothing about which.
                Some(hash) => verify_off_loop(hash.into(), attempt.password).await,
                None => true,
            };
            if cert_ok && password_ok {
                AuthOutcome::Accepted(Self::accepted(&user))
            } else {
                AuthOutcome::Denied
            }
        })
    }
}

/// Hashes a password with argon2id and default parameters, as a PHC string.
///
/// # Errors
/// When the OS random generator fails.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Other(format!("password hashing failed: {e}")))
}

/// A random 20-character password from an unambiguous alphabet (no 0/O, 1/l/I).
#[must_use]
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    if getrandom::fill(&mut bytes).is_err() {
        // Without OS randomness nothing secure can be generated; fall back to the hasher's salt
        // source failing later too. Use time-derived bytes so the call still returns.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (nanos >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
        }
    }
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// Writes `contents` to `path` atomically: a 0600 temporary file in the same directory, fsync,
/// rename.
fn write_contents(path: &Path, contents: &FileContents) -> Result<(), AuthError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io_err = |source| AuthError::Io {
        path: path.to_owned(),
        source,
    };
    let text = toml::to_string(contents).map_err(|e| AuthError::Other(e.to_string()))?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{file_name}.{}.tmp", generate_password()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io_err(e)
    })
}

/// Adds a user to the users file (created if missing) with an argon2id hash of `password`.
///
/// # Errors
/// When the user exists, the file is invalid, or writing fails.
pub fn add_user(
    path: &Path,
    name: &str,
    password: &str,
    home: &str,
    permission: Permission,
) -> Result<(), AuthError> {
    let mut contents = if path.exists() {
        read_contents(path)?
    } else {
        FileContents::default()
    };
    if contents.user.iter().any(|u| u.name == name) {
        return Err(AuthError::Other(format!(
            "user {name} already exists in {}",
            path.display()
        )));
    }
    let entry = UserEntry {
        name: name.to_owned(),
        password_hash: Some(hash_password(password)?),
        home: home.to_owned(),
        root: None,
        permission,
        require_tls: None,
        site_to_site: None,
        cert_cn: None,
        cert_san: None,
    };
    check_entry(path, &entry)?;
    contents.user.push(entry);
    write_contents(path, &contents)
}

/// Replaces a user's password hash in the users file.
///
/// # Errors
/// When the user does not exist, the file is invalid, or writing fails.
pub fn set_password(path: &Path, name: &str, password: &str) -> Result<(), AuthError> {
    let mut contents = read_contents(path)?;
    let user = contents
        .user
        .iter_mut()
        .find(|u| u.name == name)
        .ok_or_else(|| AuthError::Other(format!("no user {name} in {}", path.display())))?;
    user.password_hash = Some(hash_password(password)?);
    write_contents(path, &contents)
}

/// The user the default users file is created with. Not `ftp`: that name is the traditional alias of
/// `anonymous` (RFC 1635), which the engine treats as an anonymous login.
pub const DEFAULT_USER: &str = "ftps";

/// Creates the users file with one read-write user [`DEFAULT_USER`] (home `/`) and a random password if the
/// file does not exist; returns that password so it can be shown once.
///
/// # Errors
/// When writing fails.
pub fn ensure_users_file(path: &Path) -> Result<Option<String>, AuthError> {
    if path.exists() {
        return Ok(None);
    }
    let password = generate_password();
    add_user(path, DEFAULT_USER, &password, "/", Permission::ReadWrite)?;
    Ok(Some(password))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;

    fn attempt(user: &str, password: &str, cert: Option<Vec<u8>>) -> LoginAttempt {
        LoginAttempt {
            user: user.to_owned(),
            password: password.to_owned(),
            client_certificate: cert,
            peer_ip: [127, 0, 0, 1].into(),
        }
    }

    /// A password check computed on the polling thread would be done within the first poll and stall every
    /// session on that executor thread meanwhile; off the loop, the first poll only starts it.
    #[test]
    fn password_checks_run_off_the_event_loop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        add_user(&path, "alice", "s3cret", "/", Permission::ReadWrite).unwrap();
        let users = UsersFile::load(&path, None).unwrap();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for (user, password) in [("alice", "s3cret"), ("alice", "wrong"), ("nobody", "x")] {
            let mut login = users.authenticate(attempt(user, password, None));
            assert!(
                login.as_mut().poll(&mut cx).is_pending(),
                "{user}/{password}: the KDF ran inside poll"
            );
            let accepted = matches!(block_on(login), AuthOutcome::Accepted(_));
            assert_eq!(accepted, password == "s3cret");
        }
    }

    #[test]
    fn add_user_then_authenticate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        add_user(&path, "alice", "s3cret", "/alice", Permission::ReadOnly).unwrap();
        add_user(&path, "bob", "pw", "/", Permission::ReadWrite).unwrap();
        assert!(add_user(&path, "bob", "x", "/", Permission::ReadWrite).is_err());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let users = UsersFile::load(&path, None).unwrap();
        assert_eq!(users.len(), 2);
        block_on(async {
            assert_eq!(
                users.authenticate(attempt("alice", "s3cret", None)).await,
                AuthOutcome::Accepted(AuthenticatedUser {
                    name: "alice".into(),
                    home: UserHome::Virtual("/alice".into()),
                    permission: Permission::ReadOnly,
                    require_tls: None,
                    site_to_site: None,
                })
            );
            assert_eq!(
                users.authenticate(attempt("alice", "wrong", None)).await,
                AuthOutcome::Denied
            );
            assert_eq!(
                users.authenticate(attempt("carol", "s3cret", None)).await,
                AuthOutcome::Denied
            );
            assert_eq!(
                users.authenticate(attempt("anonymous", "x", None)).await,
                AuthOutcome::Denied
            );
        });
        set_password(&path, "alice", "new").unwrap();
        assert!(set_password(&path, "nobody", "new").is_err());
        let users = UsersFile::load(&path, None).unwrap();
        block_on(async {
            assert_eq!(
                users.authenticate(attempt("alice", "s3cret", None)).await,
                AuthOutcome::Denied
            );
            assert!(matches!(
                users.authenticate(attempt("alice", "new", None)).await,
                AuthOutcome::Accepted(_)
            ));
        });
        // No temp files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn plain_passwords_and_weak_hashes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, "[[user]]\nname = \"a\"\npassword = \"x\"\n").unwrap();
        let err = UsersFile::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("plain-text"), "{err}");
        std::fs::write(&path, "[[user]]\nname = \"a\"\npassword_hash = \"$argon2i$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"\n").unwrap();
        let err = UsersFile::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("argon2id"), "{err}");
        std::fs::write(&path, "[[user]]\nname = \"a\"\n").unwrap();
        let err = UsersFile::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("needs a password_hash"), "{err}");
        std::fs::write(
            &path,
            "[[user]]\nname = \"a\"\ncert_cn = \"a\"\nhome = \"/../x\"\n",
        )
        .unwrap();
        let err = UsersFile::load(&path, None).unwrap_err().to_string();
        assert!(err.contains("home"), "{err}");
    }

    #[test]
    fn anonymous_is_read_only_and_only_when_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, "").unwrap();
        let users = UsersFile::load(
            &path,
            Some(AnonymousAccess {
                root: Some("/pub".into()),
            }),
        )
        .unwrap();
        block_on(async {
            assert_eq!(
                users.authenticate(attempt("ftp", "guest@", None)).await,
                AuthOutcome::Accepted(AuthenticatedUser {
                    name: "anonymous".into(),
                    home: UserHome::Directory("/pub".into()),
                    permission: Permission::ReadOnly,
                    require_tls: None,
                    site_to_site: None,
                })
            );
        });
    }

    #[test]
    fn certificate_mapping() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["dave.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "dave");
        let cert = params.self_signed(&key).unwrap().der().to_vec();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let hash = hash_password("pw").unwrap();
        std::fs::write(
            &path,
            format!(
                "[[user]]\nname = \"dave\"\ncert_cn = \"dave\"\nroot = \"/srv/dave\"\nrequire_tls = true\n\
                 site_to_site = true\n\
                 [[user]]\nname = \"erin\"\ncert_san = \"DAVE.example\"\npassword_hash = \"{hash}\"\n"
            ),
        )
        .unwrap();
        let users = UsersFile::load(&path, None).unwrap();
        block_on(async {
            // Certificate alone.
            assert_eq!(
                users
                    .authenticate(attempt("dave", "", Some(cert.clone())))
                    .await,
                AuthOutcome::Accepted(AuthenticatedUser {
                    name: "dave".into(),
                    home: UserHome::Directory("/srv/dave".into()),
                    permission: Permission::ReadWrite,
                    require_tls: Some(true),
                    site_to_site: Some(true),
                })
            );
            assert_eq!(
                users.authenticate(attempt("dave", "", None)).await,
                AuthOutcome::Denied
            );
            // Certificate and password.
            assert!(matches!(
                users
                    .authenticate(attempt("erin", "pw", Some(cert.clone())))
                    .await,
                AuthOutcome::Accepted(_)
            ));
            assert_eq!(
                users.authenticate(attempt("erin", "pw", None)).await,
                AuthOutcome::Denied
            );
            assert_eq!(
                users.authenticate(attempt("erin", "no", Some(cert))).await,
                AuthOutcome::Denied
            );
        });
    }

    #[test]
    fn ensure_users_file_creates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let password = ensure_users_file(&path).unwrap().unwrap();
        assert_eq!(password.len(), 20);
        assert_eq!(ensure_users_file(&path).unwrap(), None);
        let users = UsersFile::load(&path, None).unwrap();
        block_on(async {
            assert!(matches!(
                users
                    .authenticate(attempt(DEFAULT_USER, &password, None))
                    .await,
                AuthOutcome::Accepted(_)
            ));
        });
    }

    #[test]
    fn login_attempt_debug_hides_the_password() {
        let text = format!("{:?}", attempt("u", "hunter2", None));
        assert!(!text.contains("hunter2"), "{text}");
    }
}
