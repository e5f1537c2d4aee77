//! What a [`ClientSession`](super::ClientSession) tells its frontend, and how it fails.

use std::fmt;
use std::net::SocketAddr;

use crate::codec::{Command, Reply, ReplyError};
use crate::TlsInfo;

use super::op::{OpError, OpId, Output};

/// Which way the payload of a data connection flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Server to client: read the channel until it finishes (downloads and listings).
    Download,
    /// Client to server: write the payload, then `finish()` and keep reading until the channel closes, so the
    /// server's close_notify and TLS 1.3 tickets are processed.
    Upload,
}

/// Something the frontend must act on, from [`ClientSession::poll_event`](super::ClientSession::poll_event).
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// The control connection is ready: greeting received and, unless plain, TLS established.
    Connected {
        /// The server's 220 greeting.
        greeting: Reply,
        /// What the control connection's TLS negotiated; `None` for plain FTP.
        tls: Option<TlsInfo>,
    },
    /// An operation ended. Every submitted operation gets exactly one.
    Completed {
        /// The operation.
        op: OpId,
        /// Its result.
        result: Result<Output, OpError>,
    },
    /// A reply arrived while no command was waiting for one (e.g. a 421 at idle). Not a desynchronisation.
    UnsolicitedReply(Reply),
    /// The session failed; the error is also available from
    /// [`ClientSession::error`](super::ClientSession::error). Close the connection.
    Failed(SessionError),
    /// The session ended cleanly (`QUIT` answered, or EOF after it). Close the connection.
    Closed,
    /// One line of the protocol exchange, when [`ClientSessionConfig::trace`](super::ClientSessionConfig::trace)
    /// is on: for a `-v` log, or as evidence that data connections were protected. Needs no answer.
    Trace(Trace),
}

/// Why the frontend could not set up a data connection
/// ([`Outcome::DataConnectFailed`](super::Outcome::DataConnectFailed)). A socket failure, not a TLS one: TLS
/// failures of a connected data channel are [`DataError`](crate::data::DataError)s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DataConnectError {
    /// Passive mode: connecting to the server's data port failed.
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// Where the session said to connect.
        addr: SocketAddr,
        /// The socket error, as text.
        reason: String,
    },
    /// Active mode: no listener could be bound.
    #[error("listen: {reason}")]
    Listen {
        /// The socket error, as text.
        reason: String,
    },
    /// Active mode: the server's connection did not arrive (or accepting it failed).
    #[error("accept: {reason}")]
    Accept {
        /// The socket error or timeout, as text.
        reason: String,
    },
}

/// Why the whole session failed. Sticky: once set, every later operation fails with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// TLS failed on the control connection.
    #[error("control connection TLS: {0}")]
    Tls(rustls::Error),
    /// The session could not be set up as configured (e.g. TLS requested without a TLS config).
    #[error("configuration: {0}")]
    Config(&'static str),
    /// The server's bytes are not FTP replies.
    #[error("malformed reply: {0:?}")]
    MalformedReply(ReplyError),
    /// A reply that no pending command can take (e.g. a 1xx to `CWD`): continuing would desynchronise.
    #[error("unexpected reply {} to {}", .reply.code.get(), .to)]
    UnexpectedReply {
        /// The reply.
        reply: Reply,
        /// The verb it arrived for.
        to: &'static str,
    },
    /// The server refused the greeting (e.g. 421 or 5xx instead of 220).
    #[error("server refused the connection: {}", .0.code.get())]
    GreetingRefused(Reply),
    /// The server refused `AUTH TLS` (and `AUTH SSL`, when allowed).
    #[error("server refused AUTH: {}", .0.code.get())]
    AuthRefused(Reply),
    /// The server refused `PBSZ 0` / `PROT P` and the config does not allow clear data connections.
    #[error("server refused data protection (PROT P): {}", .0.code.get())]
    DataProtectionRefused(Reply),
    /// The server sent 421: it is closing the control connection.
    #[error("server closing: {}", .0.code.get())]
    ServiceClosing(Reply),
    /// No reply within the reply timeout.
    #[error("timed out waiting for a reply to {0}")]
    Timeout(&'static str),
    /// `ABOR` was not settled within the abort timeout: the reply stream can no longer be trusted.
    #[error("ABOR not settled; session unusable")]
    AbortUnresolved,
    /// The control connection ended unexpectedly.
    #[error("control connection closed by the server")]
    ConnectionClosed,
    /// The session was closed with `QUIT`.
    #[error("session closed")]
    Closed,
}

impl SessionError {
    /// Whether no greeting came within the reply timeout. On an explicit-FTPS connection that is the sign of
    /// an implicit port, which waits for a ClientHello (see [`is_tls_answer`](super::is_tls_answer)).
    pub fn is_greeting_timeout(&self) -> bool {
        matches!(self, SessionError::Timeout("greeting"))
    }
}

impl From<ReplyError> for SessionError {
    fn from(e: ReplyError) -> Self {
        Self::MalformedReply(e)
    }
}

/// One entry of the protocol trace ([`Event::Trace`]). Its `Display` is the log line: `> ` for a command sent
/// (`PASS` masked), `< ` for each line of a reply, `* ` for what TLS negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trace {
    /// A command line sent on the control connection, `PASS` argument replaced by `****`.
    Sent(String),
    /// A reply received on the control connection.
    Received(Reply),
    /// The control connection's TLS handshake finished.
    ControlTls(TlsInfo),
    /// A data connection ended: what its TLS negotiated (`None`: in the clear).
    DataConnection {
        /// The data connection's TLS, with whether it resumed the control connection's session.
        tls: Option<TlsInfo>,
        /// Plaintext bytes received and sent on it.
        bytes: u64,
    },
}

impl Trace {
    /// The trace entry of a command about to be sent.
    pub(crate) fn sent(command: &Command) -> Self {
        Trace::Sent(command.masked().to_string())
    }
}

/// `TLSv1_3 TLS13_AES_128_GCM_SHA256`, with `, resumed` when the handshake resumed a session.
fn write_tls(f: &mut fmt::Formatter<'_>, tls: &TlsInfo) -> fmt::Result {
    write!(f, "{:?} {:?}", tls.version, tls.cipher_suite)?;
    if tls.resumed {
        f.write_str(", resumed")?;
    }
    Ok(())
}

impl fmt::Display for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trace::Sent(line) => write!(f, "> {line}"),
            Trace::Received(reply) => {
                let text = reply.to_string();
                for (i, line) in text.lines().enumerate() {
                    if i > 0 {
                        f.write_str("\n")?;
                    }
                    write!(f, "< {line}")?;
                }
                Ok(())
            }
            Trace::ControlTls(tls) => {
                f.write_str("* control connection: ")?;
                write_tls(f, tls)
            }
            Trace::DataConnection { tls, bytes } => {
                f.write_str("* data connection: ")?;
                match tls {
                    Some(tls) => write_tls(f, tls)?,
                    None => f.write_str("clear (not protected)")?,
                }
                write!(f, ", {bytes} bytes")
            }
        }
    }
}
