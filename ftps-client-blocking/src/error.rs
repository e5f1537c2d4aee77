//! The one error type of the blocking client.

use std::io;
use std::net::SocketAddr;

use ftps_proto::client::{DataConnectError, OpError, SessionError};
use ftps_proto::codec::{Reply, ReplyCode};
use ftps_proto::data::DataError;

/// Why a [`Client`](crate::Client) call failed. `Display` is one line.
///
/// A refusal ([`Error::Refused`], [`Error::LoginRefused`]), [`Error::Aborted`], [`Error::Truncated`],
/// [`Error::Data`], [`Error::DataConnect`] and [`Error::SourceChanged`] leave the session usable; the others mean
/// the control connection is gone or cannot be trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TCP connection to the server could not be made (resolution, refusal, connect timeout).
    #[error("connect to {addr}: {source}")]
    Connect {
        /// What was being connected to.
        addr: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// The TLS settings could not be built (unreadable CA file, no trust roots, bad server name).
    #[error("TLS configuration: {0}")]
    TlsConfig(String),
    /// TLS failed on the control connection (including certificate verification).
    #[error("TLS: {0}")]
    Tls(rustls::Error),
    /// A socket or file operation failed.
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    /// A phase did not finish in time; the text names the phase.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The server answered with a negative reply. The session goes on.
    #[error("server refused: {code} {text}")]
    Refused {
        /// The reply code, e.g. 550.
        code: u16,
        /// The reply text, lines joined with spaces.
        text: String,
    },
    /// The server refused the login (`USER`/`PASS`/`ACCT`).
    #[error("login refused: {code} {text}")]
    LoginRefused {
        /// The reply code, e.g. 530.
        code: u16,
        /// The reply text, lines joined with spaces.
        text: String,
    },
    /// The server refused `PBSZ 0` / `PROT P`: it will not protect data connections with TLS, and the
    /// config does not allow clear ones ([`crate::ClientConfig::allow_clear_data`]). Not a login failure:
    /// the credentials were not the problem.
    #[error("server will not protect the data channel (PBSZ/PROT P refused): {code} {text}")]
    ProtectionRefused {
        /// The reply code, e.g. 534 or 536.
        code: u16,
        /// The reply text, lines joined with spaces.
        text: String,
    },
    /// No greeting came on an explicit-FTPS connection, but the port answered a TLS ClientHello at once:
    /// it is an implicit FTPS port (`Client::connect` with [`crate::ClientConfig::implicit`]).
    #[error("no greeting from {addr}, but it answers TLS at once: an implicit FTPS port (connect with implicit TLS)")]
    ImplicitTlsPort {
        /// The address that was probed.
        addr: SocketAddr,
    },
    /// The server's replies could not be understood, or the call cannot be made as given.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A download's data connection ended without TLS close_notify: the data may be truncated.
    #[error("transfer truncated: data connection closed without close_notify")]
    Truncated,
    /// The transfer was aborted (`ABOR`); the session goes on.
    #[error("transfer aborted")]
    Aborted,
    /// The data connection failed (its TLS handshake, session reuse, or the transport); the session goes on.
    #[error("data connection: {0}")]
    Data(DataError),
    /// The data connection could not be opened (connecting to the server's passive port, or in active mode
    /// listening or accepting, failed). A socket failure, not a TLS one; the transfer was aborted and the
    /// session goes on.
    #[error("data connection: {0}")]
    DataConnect(DataConnectError),
    /// The server refused a transfer because its data connection could not resume the control connection's
    /// TLS 1.3 session: the server issued no ticket this session had not used yet, and rustls offers each TLS 1.3
    /// ticket once (ProFTPD under TLS 1.3 does this from the third transfer of a session on). A new session
    /// limited to TLS 1.2 ([`TlsVersions::Tls12Only`](crate::TlsVersions::Tls12Only)) resumes without limit; the
    /// `ftps` command switches to one by itself. This session goes on.
    #[error("server refused a data connection that could not resume the TLS 1.3 session ({code} {text}): the server issues no further TLS 1.3 tickets and each is used once; TLS 1.2 resumes without limit (--tls12)")]
    ResumptionExhausted {
        /// The reply code, e.g. 425.
        code: u16,
        /// The reply text, lines joined with spaces.
        text: String,
    },
    /// The control connection is closed (by `quit`, by the server, or after an earlier fatal error).
    #[error("connection closed: {0}")]
    Closed(String),
    /// The remote file's size changed during a download made of several ranges
    /// ([`SessionPool::get_segmented`](crate::SessionPool::get_segmented)): the pieces would not fit
    /// together. The session goes on.
    #[error(
        "the remote file changed during the download: {expected} bytes expected, {found} found"
    )]
    SourceChanged {
        /// The size `SIZE` reported (or the end of the range being read).
        expected: u64,
        /// Where the data actually ended, or the byte count reached when it went past `expected`.
        found: u64,
    },
}

/// A convenient alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The reply code of a refusal, if this is one.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Error::Refused { code, .. }
            | Error::LoginRefused { code, .. }
            | Error::ProtectionRefused { code, .. }
            | Error::ResumptionExhausted { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether this is a transient refusal: a 4yz reply (RFC 959 section 4.2, e.g. 421, 425, 426, 450, 451), after
    /// which the same command may succeed if tried again.
    pub fn is_transient_refusal(&self) -> bool {
        self.refusal_code()
            .is_some_and(ReplyCode::is_transient_negative)
    }

    /// Whether this is a permanent refusal: a 5yz reply (RFC 959 section 4.2, e.g. 550 no such file, 553 name
    /// not allowed), which the same command will meet again.
    pub fn is_permanent_refusal(&self) -> bool {
        self.refusal_code()
            .is_some_and(ReplyCode::is_permanent_negative)
    }

    /// The typed reply code of a refusal; the engine's rules about it live on [`ReplyCode`].
    fn refusal_code(&self) -> Option<ReplyCode> {
        self.reply_code().and_then(ReplyCode::new)
    }

    /// Whether the control connection can still be used after this error.
    pub fn is_session_usable(&self) -> bool {
        matches!(
            self,
            Error::Refused { .. }
                | Error::LoginRefused { .. }
                | Error::Truncated
                | Error::Aborted
                | Error::Data(_)
                | Error::SourceChanged { .. }
                | Error::DataConnect(_)
                | Error::ResumptionExhausted { .. }
        )
    }

    pub(crate) fn refused(reply: &Reply) -> Self {
        Error::Refused {
            code: reply.code.get(),
            text: reply_text(reply),
        }
    }
}

/// The reply's lines on one line.
fn reply_text(reply: &Reply) -> String {
    reply
        .lines
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl From<SessionError> for Error {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::Tls(e) => Error::Tls(e),
            SessionError::Timeout(phase) => Error::Timeout(phase),
            SessionError::AbortUnresolved => Error::Timeout("ABOR"),
            SessionError::ConnectionClosed => Error::Closed(e.to_string()),
            SessionError::Closed => Error::Closed(e.to_string()),
            SessionError::ServiceClosing(ref reply) | SessionError::GreetingRefused(ref reply) => {
                Error::Closed(format!("{}: {}", e, reply_text(reply)))
            }
            SessionError::AuthRefused(ref reply) => Error::refused(reply),
            SessionError::DataProtectionRefused(ref reply) => Error::ProtectionRefused {
                code: reply.code.get(),
                text: reply_text(reply),
            },
            other => Error::Protocol(other.to_string()),
        }
    }
}

impl From<OpError> for Error {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Refused(reply) => Error::refused(&reply),
            OpError::Aborted => Error::Aborted,
            OpError::Data(e) => Error::Data(e),
            OpError::DataConnect(e) => Error::DataConnect(e),
            OpError::Truncated => Error::Truncated,
            OpError::ResumptionExhausted(reply) => Error::ResumptionExhausted {
                code: reply.code.get(),
                text: reply_text(&reply),
            },
            OpError::Session(e) => e.into(),
            other => Error::Protocol(other.to_string()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn reply(code: u16, lines: &[&str]) -> Reply {
        Reply {
            code: ReplyCode::new(code).unwrap(),
            lines: lines.iter().map(|l| l.to_string()).collect(),
        }
    }

    #[test]
    fn refusal_display_is_one_line_with_code_and_text() {
        let e: Error = OpError::Refused(reply(550, &["No such file", " or directory "])).into();
        assert_eq!(
            e.to_string(),
            "server refused: 550 No such file or directory"
        );
        assert_eq!(e.reply_code(), Some(550));
        assert!(e.is_session_usable());
    }

    #[test]
    fn refusals_are_transient_or_permanent_as_the_engine_says() {
        let transient: Error = OpError::Refused(reply(451, &["local error"])).into();
        assert!(transient.is_transient_refusal() && !transient.is_permanent_refusal());
        let permanent: Error = OpError::Refused(reply(550, &["no such file"])).into();
        assert!(permanent.is_permanent_refusal() && !permanent.is_transient_refusal());
        let not_a_refusal: Error = OpError::Truncated.into();
        assert!(!not_a_refusal.is_transient_refusal() && !not_a_refusal.is_permanent_refusal());
    }

    #[test]
    fn session_errors_map_to_their_kind() {
        let e: Error = OpError::Session(SessionError::Timeout("PWD")).into();
        assert_eq!(e.to_string(), "timed out: PWD");
        assert!(!e.is_session_usable());
        let e: Error = SessionError::AbortUnresolved.into();
        assert!(matches!(e, Error::Timeout("ABOR")));
        let e: Error = OpError::Truncated.into();
        assert!(matches!(e, Error::Truncated));
    }
}
