//! How a [`ClientSession`](super::ClientSession) connects, secures and times its work.

use std::sync::Arc;
use std::time::Duration;

/// How the control connection is secured (RFC 4217 section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Security {
    /// Explicit FTPS: plaintext greeting, then `AUTH TLS` upgrades the control connection (RFC 4217 section 4).
    Explicit {
        /// Try the historic `AUTH SSL` when the server refuses `AUTH TLS`. Off by default: a server that only
        /// knows `AUTH SSL` is old enough to be treated with suspicion.
        allow_auth_ssl: bool,
    },
    /// Implicit FTPS: TLS from the first byte (the de-facto port 990 convention).
    Implicit,
    /// Plain FTP: no TLS at all, control and data in the clear. Only when explicitly asked for.
    Plain,
}

/// Who opens the data connection (RFC 959 section 3.2, RFC 2428).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DataConnectionMode {
    /// Passive: `EPSV` (sticky fallback to `PASV`); the client connects to the server.
    Passive,
    /// Active: the client listens (the frontend binds, see
    /// [`RequestKind::Listen`](super::RequestKind::Listen)) and sends `EPRT` (sticky fallback to `PORT`); the server connects.
    Active,
}

/// Settings for one [`ClientSession`](super::ClientSession).
///
/// Start from [`ClientSessionConfig::new`] (explicit FTPS, secure defaults) or [`ClientSessionConfig::plain`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientSessionConfig {
    /// How the control connection is secured.
    pub security: Security,
    /// The caller's TLS config. The session clones it and gives the clone a fresh, private resumption store, so
    /// the control connection and the data connections of *this* session share TLS sessions, and no two control
    /// connections ever do. `None` only with [`Security::Plain`].
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Accept data connections in the clear when the server refuses `PROT P`. Off by default: the session
    /// fails closed with [`SessionError::DataProtectionRefused`](super::SessionError::DataProtectionRefused).
    pub allow_clear_data: bool,
    /// Send `CCC` after login, returning the control connection to plaintext (RFC 4217 section 12.3), e.g. for
    /// NAT helpers. Data connections stay protected.
    pub clear_command_channel: bool,
    /// Passive or active data connections.
    pub data_mode: DataConnectionMode,
    /// Use the address in a `227` reply. Off by default: the session connects to the control connection's peer
    /// IP with the port from the reply, which defeats FTP bounce attacks and broken NAT rewriting.
    pub trust_pasv_address: bool,
    /// How long to wait for each reply.
    pub reply_timeout: Duration,
    /// How long the data connection may take from the 1xx reply to a finished TLS handshake.
    pub data_handshake_timeout: Duration,
    /// How long to wait for the replies that settle an `ABOR` before declaring the session unusable.
    pub abort_timeout: Duration,
    /// Upper bound on the bytes of one directory listing the session buffers for parsing.
    pub max_listing_bytes: usize,
    /// Require close_notify at the end of downloads; a bare TCP close is then reported as truncation.
    pub require_close_notify: bool,
    /// Report the protocol exchange as [`Event::Trace`](super::Event::Trace): every command (`PASS` masked),
    /// every reply, and the TLS of the control and of each data connection. Off by default.
    pub trace: bool,
}

impl ClientSessionConfig {
    /// Explicit FTPS (`AUTH TLS`), `PBSZ 0` + `PROT P`, passive data connections, PASV address ignored.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            security: Security::Explicit {
                allow_auth_ssl: false,
            },
            tls: Some(tls),
            allow_clear_data: false,
            ..Self::plain()
        }
    }

    /// Implicit FTPS (TLS from the first byte) with the same defaults as [`ClientSessionConfig::new`].
    pub fn implicit(tls: Arc<rustls::ClientConfig>) -> Self {
        Self {
            security: Security::Implicit,
            ..Self::new(tls)
        }
    }

    /// Plain FTP: nothing is encrypted. Use only where that is acceptable.
    pub fn plain() -> Self {
        Self {
            security: Security::Plain,
            tls: None,
            allow_clear_data: true,
            clear_command_channel: false,
            data_mode: DataConnectionMode::Passive,
            trust_pasv_address: false,
            reply_timeout: Duration::from_secs(30),
            data_handshake_timeout: Duration::from_secs(10),
            abort_timeout: Duration::from_secs(10),
            max_listing_bytes: 64 * 1024 * 1024,
            require_close_notify: true,
            trace: false,
        }
    }
}
