//! Authentication backends: who may log in, where their files are and what they may do.
//!
//! [`Authenticator`] is the trait the server calls for each login attempt (USER/PASS after the
//! engine's request); [`UsersFile`] is the TOML-backed implementation, and [`LoginThrottle`] the
//! per-IP failed-login lockout (RFC 2577 section 5 recommends limiting password guessing).

mod cert_names;
mod throttle;
mod users_file;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::storage::BoxFuture;

pub use cert_names::{certificate_names, CertificateNames};
pub use throttle::{CheckSlot, LoginThrottle};
pub use users_file::{
    add_user, ensure_users_file, generate_password, hash_password, set_password, AnonymousAccess,
    UsersFile, DEFAULT_USER,
};

/// What a user may do with files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Permission {
    /// List and download only.
    ReadOnly,
    /// Everything: upload, delete, rename, mkdir.
    ReadWrite,
}

/// Where a user's files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserHome {
    /// A directory inside the server's storage root, as a virtual absolute path (`/alice`); the
    /// user's `/` is that directory.
    Virtual(String),
    /// A separate filesystem directory that becomes the user's `/`.
    Directory(PathBuf),
}

/// A successful login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticatedUser {
    /// The user name (for logs; `anonymous` for anonymous users).
    pub name: String,
    /// The user's root.
    pub home: UserHome,
    /// What the user may do.
    pub permission: Permission,
    /// Per-user override of the server's `require_tls_*` policy: `Some(false)` lets this user work
    /// in clear text even if the server requires TLS; `None` follows the server.
    pub require_tls: Option<bool>,
    /// Per-user site-to-site (FXP) policy: `Some(true)` allows this user `PORT`/`EPRT` to another server's
    /// address (never below port 1024), passive connections from another address, and `SSCN`/`CPSV`, even
    /// when the server's `allow_site_to_site` is off; `Some(false)` denies it even when it is on; `None`
    /// follows the server.
    pub site_to_site: Option<bool>,
}

/// One login attempt, as the frontend knows it.
#[derive(Clone)]
pub struct LoginAttempt {
    /// The name sent with USER.
    pub user: String,
    /// The password sent with PASS.
    pub password: String,
    /// The client's TLS certificate (DER, end entity), already verified by rustls against the
    /// configured client CA bundle.
    pub client_certificate: Option<Vec<u8>>,
    /// The client's IP address.
    pub peer_ip: IpAddr,
}

impl fmt::Debug for LoginAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never log a password.
        f.debug_struct("LoginAttempt")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("client_certificate", &self.client_certificate.is_some())
            .field("peer_ip", &self.peer_ip)
            .finish()
    }
}

/// The answer to a login attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    /// Logged in.
    Accepted(AuthenticatedUser),
    /// Wrong user, password or certificate (deliberately not saying which).
    Denied,
}

/// Checks logins. Object-safe: use it as `Arc<dyn Authenticator>`. Implementations must not block
/// the caller's executor (run password hashing on a thread pool).
pub trait Authenticator: Send + Sync {
    /// Decides on one login attempt.
    fn authenticate(&self, attempt: LoginAttempt) -> BoxFuture<'_, AuthOutcome>;
}

/// Why a users file could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has wrong fields.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Password hashing failed, or a user name is unknown / duplicate.
    #[error("{0}")]
    Other(String),
}
