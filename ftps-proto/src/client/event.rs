//! What a [`ClientSession`](super::ClientSession) tells its frontend, and how it fails.

use std::net::SocketAddr;

use crate::codec::{Reply, ReplyError};
use crate::data::DataChannel;
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
    /// Passive mode: open a TCP connection to `addr` for operation `op` now. The channel to run over it follows in
    /// [`Event::DataChannel`].
    OpenDataConnection {
        /// The operation the connection is for.
        op: OpId,
        /// Where to connect (the control peer's IP unless the config trusts 227 addresses).
        addr: SocketAddr,
    },
    /// Active mode: listen for the server's data connection (normally on the control connection's local IP)
    /// and report the bound address with [`ClientSession::listening`](super::ClientSession::listening). Accept one
    /// connection and run the following [`Event::DataChannel`] over it.
    Listen {
        /// The operation the listener is for.
        op: OpId,
    },
    /// The server accepted the transfer (1xx): run `channel` over the data connection of `op` (TLS client role,
    /// RFC 4217 section 10), then report with
    /// [`ClientSession::data_finished`](super::ClientSession::data_finished).
    DataChannel {
        /// The operation the channel is for.
        op: OpId,
        /// The channel, owned by the frontend from now on.
        channel: Box<DataChannel>,
        /// Which way the payload flows.
        direction: Direction,
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

impl From<ReplyError> for SessionError {
    fn from(e: ReplyError) -> Self {
        Self::MalformedReply(e)
    }
}
