//! Work the client engine hands to its frontend ([`Request`]) and the frontend's answers ([`Outcome`]).
//!
//! The server engine's shape ([`crate::server::Request`]): every request carries a [`ReqId`] and is answered
//! exactly once with [`ClientSession::complete`](super::ClientSession::complete), unless the operation it belongs
//! to ended first (after [`ClientSession::abort`](super::ClientSession::abort), or a failed session): then the
//! frontend drops what it holds for it, and a late answer is ignored. The frontend reports *what happened*; the
//! engine decides what it means (an `ABOR` when a connect failed, a truncation when close_notify is missing).

use std::net::SocketAddr;

use crate::data::{DataChannel, DataError, DataReport};

use super::event::{DataConnectError, Direction};
use super::op::OpId;

pub use crate::request_id::ReqId;

/// One piece of work for the frontend, from [`ClientSession::poll_request`](super::ClientSession::poll_request).
#[derive(Debug)]
pub struct Request {
    /// Pass this to [`ClientSession::complete`](super::ClientSession::complete).
    pub id: ReqId,
    /// The transfer the request serves.
    pub op: OpId,
    /// What to do.
    pub kind: RequestKind,
}

/// What a [`Request`] asks for.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestKind {
    /// Passive mode: open a TCP connection to `addr` and keep it for the [`RequestKind::DriveData`] that follows.
    /// Answer: [`Outcome::DataConnected`] or [`Outcome::DataConnectFailed`].
    ConnectData {
        /// Where to connect (the control peer's IP unless the config trusts 227 addresses).
        addr: SocketAddr,
    },
    /// Active mode: bind a listener for the server's data connection (normally on the control connection's
    /// local IP). Answer: [`Outcome::Listening`] with the bound address (the engine sends it with `EPRT`/`PORT`)
    /// or [`Outcome::DataConnectFailed`].
    Listen,
    /// The server accepted the transfer (1xx) and the data connection is set up: run `channel` over it (in active
    /// mode, accept the server's connection first, only from the control connection's peer). The channel is in
    /// the TLS client role (RFC 4217 section 10), resuming the control connection's TLS session.
    ///
    /// For [`Payload::File`], move the caller's bytes; for [`Payload::Listing`], collect what arrives. Answer
    /// once the channel finished or failed: [`Outcome::DataFinished`] (files), [`Outcome::ListingReceived`]
    /// (listings), or [`Outcome::DataConnectFailed`] when the active-mode accept failed.
    DriveData {
        /// The channel, owned by the frontend from now on.
        channel: Box<DataChannel>,
        /// Which way the payload flows.
        direction: Direction,
        /// What the payload is.
        payload: Payload,
    },
}

/// What a data connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// A file's bytes, from or to the caller.
    File,
    /// A directory listing for the engine to parse: collect at most `max_bytes` (one more byte tells the engine
    /// it was exceeded) and hand them back with [`Outcome::ListingReceived`].
    Listing {
        /// The configured `max_listing_bytes`.
        max_bytes: usize,
    },
}

/// The frontend's answer to a [`Request`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// [`RequestKind::ConnectData`]: connected.
    DataConnected,
    /// [`RequestKind::Listen`]: listening on this address.
    Listening(SocketAddr),
    /// The data connection could not be set up (connect, listen or accept failed). Not a TLS failure.
    DataConnectFailed(DataConnectError),
    /// [`RequestKind::DriveData`] for a file: the channel finished
    /// ([`DataEvent::Finished`](crate::data::DataEvent::Finished)) or failed
    /// ([`DataEvent::Failed`](crate::data::DataEvent::Failed), including its handshake timeout).
    DataFinished(Result<DataReport, DataError>),
    /// [`RequestKind::DriveData`] for a listing: how the channel ended, and the bytes it received.
    ListingReceived {
        /// How the channel ended, as for [`Outcome::DataFinished`].
        data: Result<DataReport, DataError>,
        /// The listing's bytes.
        bytes: Vec<u8>,
    },
}
