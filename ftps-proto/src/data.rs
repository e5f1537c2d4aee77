//! The data channel: one owned, `Send` state machine per transfer (DESIGN.md, "The data channel is its own
//! object").
//!
//! A [`DataChannel`] carries the bytes of one FTP data connection (RFC 959 §3.2, stream mode), in the clear
//! (`PROT C`) or under TLS (`PROT P`, RFC 4217 §9). It owns no socket: the caller feeds it what the socket
//! read ([`DataChannel::handle_input`], [`DataChannel::handle_eof`]), sends what it produces
//! ([`DataChannel::poll_transmit`]), and moves plaintext in and out ([`DataChannel::read_chunk`] /
//! [`DataChannel::consume`], [`DataChannel::write`] / [`DataChannel::finish`]).
//!
//! # Method taxonomy
//!
//! - getters (`&self`): [`is_handshaking`](DataChannel::is_handshaking), [`tls_info`](DataChannel::tls_info),
//!   [`bytes_received`](DataChannel::bytes_received), [`bytes_sent`](DataChannel::bytes_sent),
//!   [`is_read_closed`](DataChannel::is_read_closed), [`is_write_closed`](DataChannel::is_write_closed),
//!   [`wants_transmit`](DataChannel::wants_transmit), [`is_closed`](DataChannel::is_closed),
//!   [`error`](DataChannel::error), [`report`](DataChannel::report);
//! - inputs: [`handle_input`](DataChannel::handle_input), [`handle_eof`](DataChannel::handle_eof),
//!   [`handle_timeout`](DataChannel::handle_timeout);
//! - mutators: [`write`](DataChannel::write), [`finish`](DataChannel::finish), [`consume`](DataChannel::consume)
//!   (with its borrow [`read_chunk`](DataChannel::read_chunk));
//! - outputs (`#[must_use]`): the one drain [`poll_output`](DataChannel::poll_output), which yields what
//!   [`poll_transmit`](DataChannel::poll_transmit), [`poll_event`](DataChannel::poll_event) and
//!   [`poll_timeout`](DataChannel::poll_timeout) give, plus the duties only it reports
//!   ([`DataOutput::ShutdownWrite`], [`DataOutput::TransferReady`]).
//!
//! After every input or mutation, loop over `poll_output` until [`DataOutput::Wait`], then wait for the earliest
//! of socket readiness and its deadline.
//!
//! # Lifecycle and events
//!
//! 0. A server session builds its channel as soon as the data connection is up
//!    ([`RequestKind::DriveData`](crate::server::RequestKind::DriveData)), so the handshake runs before the
//!    transfer command; no payload moves until [`DataChannel::start_transfer`] says which way it goes
//!    ([`DataFlow`]). Channels built with [`DataChannel::new`] start at once.
//! 1. TLS only: the handshake runs; [`DataEvent::HandshakeComplete`] reports what it negotiated. A server-role
//!    channel checks its [`ResumptionPolicy`] first: a full handshake is refused at the ClientHello; a ticket of
//!    another control session that is still logging in holds the answer to the ClientHello until that login is
//!    decided (see `ResumptionScope`). [`DataChannel::write`] takes nothing before this point.
//! 2. Bytes flow. FTP moves a file one way per connection, but both directions work.
//! 3. The sender calls [`DataChannel::finish`]: under TLS a close_notify is queued behind its data. Once
//!    [`DataChannel::is_write_closed`] is true, `poll_output` says [`DataOutput::ShutdownWrite`] and the caller
//!    shuts down the socket's write half (in the clear the TCP FIN is the only end-of-file marker, RFC 959 §3.4.1).
//! 4. The receiver sees the end of the peer's stream once it has consumed every byte before it:
//!    [`DataEvent::ReadClosed`] with `clean: true` for the peer's close_notify (TLS) or a TCP EOF (clear), and
//!    `clean: false` for a TLS stream cut by a TCP EOF without close_notify (possible truncation), unless this end
//!    is the [`DataFlow::Send`]er and had finished (see [`DataOptions::flow`]). Either way this end then finishes
//!    too, so both ends always send close_notify (DESIGN.md "close_notify": Python's ftplib calls `unwrap()` after
//!    `STOR` and fails on a bare FIN).
//! 5. When both directions have ended, [`DataEvent::Finished`] carries the [`DataReport`]; the caller sends what
//!    `poll_transmit` still gives and closes the socket. A fatal error instead yields one [`DataEvent::Failed`]
//!    (sticky: later inputs are discarded, `write` takes nothing); the caller sends what `poll_transmit` gives (a
//!    TLS alert) and closes. Exactly one of `Finished` and `Failed` is emitted.
//!
//! # Example
//!
//! An in-memory pair: a server-role channel sends a file to a client-role channel.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//! use ftps_proto::data::{DataChannel, DataEvent, DataOptions, DataProtection, DataTls, ResumptionPolicy};
//!
//! let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
//! let provider = Arc::new(rustls::crypto::ring::default_provider());
//! let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
//! let server_config = rustls::ServerConfig::builder_with_provider(provider.clone())
//!     .with_safe_default_protocol_versions().unwrap()
//!     .with_no_client_auth()
//!     .with_single_cert(vec![ck.cert.der().clone()], key).unwrap();
//! let mut roots = rustls::RootCertStore::empty();
//! roots.add(ck.cert.der().clone()).unwrap();
//! let client_config = rustls::ClientConfig::builder_with_provider(provider)
//!     .with_safe_default_protocol_versions().unwrap()
//!     .with_root_certificates(roots)
//!     .with_no_client_auth();
//!
//! let now = Instant::now();
//! let server_tls = DataTls::Server {
//!     config: Arc::new(server_config),
//!     // A real server passes the control session's config and keeps the default, `Required`.
//!     resumption: ResumptionPolicy::Off,
//! };
//! let client_tls = DataTls::Client {
//!     config: Arc::new(client_config),
//!     server_name: "localhost".try_into().unwrap(),
//! };
//! let mut server = DataChannel::new(now, DataProtection::Tls(server_tls), DataOptions::default()).unwrap();
//! let mut client = DataChannel::new(now, DataProtection::Tls(client_tls), DataOptions::default()).unwrap();
//!
//! let file = vec![7u8; 200_000];
//! let (mut sent, mut received, mut wire) = (0, Vec::new(), Vec::new());
//! let (mut server_done, mut client_done) = (None, None);
//! while server_done.is_none() || client_done.is_none() {
//!     // The server writes as much as it may, then finishes.
//!     sent += server.write(&file[sent..]);
//!     if sent == file.len() {
//!         server.finish(now);
//!     }
//!     // Server -> client.
//!     wire.clear();
//!     let _ = server.poll_transmit(&mut wire);
//!     let mut at = 0;
//!     while at < wire.len() {
//!         at += client.handle_input(now, &wire[at..]);
//!         // Read out everything buffered: input is taken only while there is room.
//!         loop {
//!             let chunk = client.read_chunk();
//!             if chunk.is_empty() {
//!                 break;
//!             }
//!             received.extend_from_slice(chunk);
//!             let n = chunk.len();
//!             client.consume(n);
//!         }
//!     }
//!     // Client -> server.
//!     wire.clear();
//!     let _ = client.poll_transmit(&mut wire);
//!     let consumed = server.handle_input(now, &wire);
//!     assert_eq!(consumed, wire.len());
//!     while let Some(event) = server.poll_event() {
//!         if let DataEvent::Finished(report) = event { server_done = Some(report) }
//!     }
//!     while let Some(event) = client.poll_event() {
//!         if let DataEvent::Finished(report) = event { client_done = Some(report) }
//!     }
//! }
//! assert_eq!(received, file);
//! let (server_report, client_report) = (server_done.unwrap(), client_done.unwrap());
//! assert!(server_report.clean_close && client_report.clean_close);
//! assert_eq!(server_report.bytes_sent, 200_000);
//! assert_eq!(client_report.bytes_received, 200_000);
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use crate::ascii::{FromNetwork, ToNetwork};
use crate::tls::{BindingState, ConnectionBinding, HandshakeDecision, ReadState, TlsConn, TlsInfo};
use crate::ReqId;

/// How soon a held ClientHello answer looks again at the login it waits for, doubling up to
/// [`BINDING_RECHECK_MAX`]: a login takes a few milliseconds (a password hash) to a second (a failed-login delay).
const BINDING_RECHECK_FIRST: Duration = Duration::from_millis(1);
const BINDING_RECHECK_MAX: Duration = Duration::from_millis(64);

/// How a data connection is protected (RFC 4217 §9, `PROT C` / `PROT P`).
#[derive(Clone)]
pub enum DataProtection {
    /// `PROT C`: bytes pass through unchanged.
    Clear,
    /// `PROT P`: TLS in the given role.
    Tls(DataTls),
}

/// The TLS role of a data connection and what it needs.
#[derive(Clone)]
pub enum DataTls {
    /// The normal server side: the FTP server is the TLS server.
    Server {
        /// The control session's private config (the crate's session-bound clone of the server's base config),
        /// so a resumed handshake can only resume *this* control session's TLS session.
        config: Arc<rustls::ServerConfig>,
        /// What to do when the client does not resume.
        resumption: ResumptionPolicy,
    },
    /// The TLS client side: the FTP client normally, and an FTP server after `SSCN ON` / `CPSV` (site-to-site).
    Client {
        /// The control connection's config; its resumption store lets the data connection resume the control
        /// session, which servers with a reuse policy require.
        config: Arc<rustls::ClientConfig>,
        /// The name the server's certificate is checked against.
        server_name: ServerName<'static>,
    },
}

impl fmt::Debug for DataProtection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Clear => f.write_str("Clear"),
            Self::Tls(DataTls::Server { resumption, .. }) => f
                .debug_struct("TlsServer")
                .field("resumption", resumption)
                .finish_non_exhaustive(),
            Self::Tls(DataTls::Client { server_name, .. }) => f
                .debug_struct("TlsClient")
                .field("server_name", server_name)
                .finish_non_exhaustive(),
        }
    }
}

/// Whether a server-role data connection must resume the control connection's TLS session.
///
/// Requiring it (vsftpd's `require_ssl_reuse`, FileZilla Server's default) proves the data connection comes from
/// the client that authenticated on the control connection, closing the data-connection theft hole of RFC 4217
/// §10 that PASV alone leaves open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResumptionPolicy {
    /// Refuse a handshake that does not resume: the channel fails with [`DataError::SessionReuseRequired`] after
    /// sending only a fatal `access_denied` alert (the session answers `522`).
    #[default]
    Required,
    /// Accept it; [`TlsInfo::resumed`] records whether it resumed.
    Preferred,
    /// Do not look.
    Off,
}

/// Which way a transfer's payload moves, seen from this end of the data connection.
///
/// FTP moves a file one way per data connection (RFC 959 section 3.2). The direction decides what a TCP close
/// without close_notify means, and when a server sends its TLS 1.3 tickets (see [`DataOptions::flow`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataFlow {
    /// This end sends the payload (a server's `RETR` or listing, a client's `STOR`).
    Send,
    /// This end receives the payload (a server's `STOR`, a client's `RETR`).
    Receive,
    /// Not known, or both: every missing close_notify is a possible truncation, tickets go out at once.
    #[default]
    Both,
}

/// How the payload is represented on the wire (RFC 959 section 3.1.1, `TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DataType {
    /// `TYPE I`: bytes pass unchanged.
    #[default]
    Binary,
    /// `TYPE A` (RFC 959 section 3.1.1.1): lines end in CRLF on the wire. The channel converts: what
    /// [`DataChannel::write`] takes gets CRLF line ends (LF not already after CR becomes CRLF), and what
    /// [`DataChannel::read_chunk`] gives has CRLF turned into LF.
    Ascii,
}

/// Tunables of a data channel. Build with `DataOptions::default()` and change fields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DataOptions {
    /// Which way the payload moves (default [`DataFlow::Both`]).
    ///
    /// - End of stream: the *receiver* treats a TCP close without close_notify as a possible truncation
    ///   (`clean: false`), since bytes may be missing. The *sender* ([`DataFlow::Send`]) that has called
    ///   [`DataChannel::finish`] needs nothing more from the peer: its payload and close_notify are out, and a
    ///   peer that then closes without close_notify (wget does) has cut nothing. Before `finish`, a close is a
    ///   truncation either way.
    /// - TLS 1.3 tickets of a server-role [`DataFlow::Receive`] channel (an upload) are held back until the
    ///   client's stream has ended, then sent with this end's close_notify. A client that never reads an upload
    ///   connection (Go's `crypto/tls`, so rclone) would otherwise close with unread bytes, which makes the
    ///   kernel reset the connection and drop the upload's unsent tail. A client that started its handshake
    ///   before this end's preliminary reply reads the connection once just before it closes (curl) and needs the
    ///   tickets by then: see [`DataChannel::start_transfer`].
    pub flow: DataFlow,
    /// How the payload is represented (default [`DataType::Binary`]); the channel converts `TYPE A` itself.
    pub data_type: DataType,
    /// How long the TLS handshake may take, counted from [`DataChannel::new`]'s `now`.
    pub handshake_timeout: Duration,
    /// Leniency for peers known to skip close_notify; `None` (the default) is strict.
    ///
    /// Strict: a TCP EOF without the peer's close_notify always means `clean: false` (possible truncation).
    /// With `Some(grace)`, such an EOF still counts as clean when all of these hold:
    /// this end received no payload at all (the peer was the receiving side, so nothing of its can have been
    /// cut), [`DataChannel::finish`] was called at some `t`, and the EOF arrives with `now <= t + grace`.
    /// The engine cannot see TCP acknowledgements; this is the closest sans-IO stand-in for "the peer got our
    /// data and hung up". [`DataReport::peer_close_notify`] still says whether close_notify arrived.
    pub close_notify_grace: Option<Duration>,
    /// Upper bound on plaintext accepted by [`DataChannel::write`] and not yet handed out by
    /// [`DataChannel::poll_transmit`] (under TLS: the rustls send buffer limit). At least 64 KiB is sensible.
    pub send_buffer_limit: usize,
    /// Upper bound on received bytes buffered before [`DataChannel::consume`], in the clear. Under TLS rustls
    /// bounds it instead: it stops taking ciphertext once 16 KiB of plaintext wait (about two records at most).
    pub receive_buffer_limit: usize,
}

impl Default for DataOptions {
    fn default() -> Self {
        Self {
            flow: DataFlow::Both,
            data_type: DataType::Binary,
            handshake_timeout: Duration::from_secs(30),
            close_notify_grace: None,
            send_buffer_limit: 256 * 1024,
            receive_buffer_limit: 256 * 1024,
        }
    }
}

/// What happened on a data channel; see the module docs for the order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum DataEvent {
    /// The TLS handshake finished (and passed the resumption policy). Never emitted in the clear.
    HandshakeComplete(TlsInfo),
    /// The peer's stream ended and every byte before the end has been consumed.
    ReadClosed {
        /// Ended by close_notify (TLS) or EOF (clear), or accepted by the close_notify grace; `false` means a
        /// TLS stream cut without close_notify, i.e. possibly truncated.
        clean: bool,
    },
    /// A fatal error; no further events follow.
    Failed(DataError),
    /// Both directions have ended; no further events follow.
    Finished(DataReport),
}

/// What [`DataChannel::poll_output`] asks of the frontend next. Exhaustive: every variant is a duty.
#[derive(Debug)]
#[must_use]
pub enum DataOutput {
    /// That many bytes were appended to the buffer: write them all to the data socket.
    Transmit(usize),
    /// This end has finished and everything, close_notify included, went out: shut down the socket's write half
    /// now. In the clear the TCP FIN is the only end of file (RFC 959 section 3.4.1): a client reading to EOF
    /// and a channel waiting for the client's close would otherwise wait for each other. Yielded once.
    ShutdownWrite,
    /// The transfer may be announced: hand this to
    /// [`ServerSession::data_ready`](crate::server::ServerSession::data_ready) (on the control session's task).
    /// What the channel sent before it (an upload's handshake, its tickets) has been yielded already. Yielded
    /// once, and only by a server session's channel (`RequestKind::DriveData`).
    TransferReady(DataReady),
    /// Something happened; see [`DataEvent`].
    Event(DataEvent),
    /// Nothing more for now: wait for socket input, payload room, or this deadline (then
    /// [`DataChannel::handle_timeout`]).
    Wait(Option<Instant>),
}

/// A server data channel's word that its transfer may be announced (the preliminary reply it held, see
/// `SessionConfig::preliminary_reply_wait`); it names the `DriveData` request the channel came with. `Send`, so it
/// crosses from the data connection's task to the control session's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "pass it to ServerSession::data_ready, or the preliminary reply waits for its timeout"]
pub struct DataReady {
    transfer: ReqId,
}

impl DataReady {
    /// The readiness of `DriveData` request `transfer`'s channel. Frontends get it from
    /// [`DataOutput::TransferReady`]; this is for test and fuzz harnesses.
    pub fn new(transfer: ReqId) -> Self {
        Self { transfer }
    }

    /// The `DriveData` request whose channel is ready.
    pub fn transfer(self) -> ReqId {
        self.transfer
    }
}

/// Why a data channel failed. Fatal and sticky.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// rustls rejected the configuration when the connection was created.
    #[error("TLS configuration rejected: {0}")]
    Config(rustls::Error),
    /// The TLS layer failed: a bad record, a failed handshake, an alert from the peer.
    #[error("TLS error: {0}")]
    Tls(rustls::Error),
    /// The client did not resume the control connection's TLS session and the policy requires it.
    #[error("TLS session reuse required on the data connection")]
    SessionReuseRequired,
    /// The TLS handshake did not finish within [`DataOptions::handshake_timeout`].
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    /// The transport ended before the TLS handshake finished.
    #[error("connection closed during the TLS handshake")]
    EofDuringHandshake,
}

/// The outcome of a transfer, for the session's final reply and for logs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct DataReport {
    /// Plaintext bytes received and consumed by the caller.
    pub bytes_received: u64,
    /// Plaintext bytes taken by [`DataChannel::write`].
    pub bytes_sent: u64,
    /// Whether the peer's stream ended cleanly (see [`DataEvent::ReadClosed`]); `false` after a failure.
    pub clean_close: bool,
    /// Whether the peer's close_notify arrived (always `false` in the clear).
    pub peer_close_notify: bool,
    /// What the TLS handshake negotiated, including whether it resumed; `None` in the clear or before it ended.
    pub tls: Option<TlsInfo>,
}

/// The clear-text transport: bounded buffers, reused for the whole transfer.
struct ClearBuffers {
    received: Vec<u8>,
    /// Bytes of `received` before this offset have been consumed.
    read_at: usize,
    sending: Vec<u8>,
    eof: bool,
}

/// `TYPE A` conversion state: converted bytes wait here until the transport or the caller takes them, so
/// the bounded buffers stay bounded (a converted chunk is at most twice [`ASCII_CHUNK`]).
#[derive(Default)]
struct AsciiBuffers {
    to_network: ToNetwork,
    /// Converted outgoing bytes the transport has not taken yet, from `out_at`.
    out: Vec<u8>,
    out_at: usize,
    from_network: FromNetwork,
    /// Converted incoming bytes the caller has not consumed yet, from `in_at`.
    input: Vec<u8>,
    in_at: usize,
}

impl AsciiBuffers {
    fn out_pending(&self) -> &[u8] {
        self.out.get(self.out_at..).unwrap_or_default()
    }

    fn input_pending(&self) -> &[u8] {
        self.input.get(self.in_at..).unwrap_or_default()
    }

    /// At the end of the peer's stream: a CR held back by the converter is text after all.
    fn release_held_cr(&mut self) {
        if self.input_pending().is_empty() && self.from_network.holds_cr() {
            self.input.clear();
            self.in_at = 0;
            self.from_network.finish(&mut self.input);
        }
    }
}

/// `write` converts at most this much of its input at a time.
const ASCII_CHUNK: usize = 16 * 1024;

enum Transport {
    Clear(ClearBuffers),
    Tls(Box<TlsConn>),
}

/// One data connection's state machine. Owned and `Send`; see the module docs.
pub struct DataChannel {
    transport: Transport,
    /// `Some` for the TLS server role.
    policy: Option<ResumptionPolicy>,
    options: DataOptions,
    handshake_deadline: Option<Instant>,
    /// TLS: the handshake finished and passed the policy. Clear: always.
    established: bool,
    tls_info: Option<TlsInfo>,
    error: Option<DataError>,
    /// The caller (or the end of the peer's stream) asked to finish.
    finish_requested: bool,
    /// When the caller called `finish`, for the close_notify grace.
    finished_at: Option<Instant>,
    /// close_notify queued (TLS) / no more bytes accepted (clear).
    write_ended: bool,
    /// A TCP EOF without close_notify still counts as a clean end (sender after `finish`, or within the grace).
    eof_accepted: bool,
    /// Post-handshake TLS output waits for the end of the peer's stream (see [`DataOptions::flow`]).
    hold_tickets: bool,
    /// Server role, set by the session: whose ticket the handshake resumed.
    binding: Option<ConnectionBinding>,
    /// The ticket is another session's that is still logging in: every output waits, and the binding is
    /// looked at again at `.0`; `.1` is the next interval (doubling).
    binding_wait: Option<(Instant, Duration)>,
    /// Built by a server session when the data connection arrived: no payload moves before
    /// [`DataChannel::start_transfer`].
    awaiting_transfer: bool,
    /// The peer has sent at least one byte.
    peer_started: bool,
    /// [`DataOutput::TransferReady`] is due when the handshake completes.
    ready_on_handshake: bool,
    /// The `DriveData` request this channel came with (server sessions), named by its [`DataReady`].
    transfer: Option<ReqId>,
    /// [`DataOutput::TransferReady`] is due.
    ready_due: bool,
    /// [`DataOutput::ShutdownWrite`] was handed out.
    write_shut: bool,
    read_closed: Option<bool>,
    terminated: bool,
    /// `TYPE A`: the line-end conversions and their buffers (`None` for `TYPE I`).
    ascii: Option<Box<AsciiBuffers>>,
    bytes_received: u64,
    bytes_sent: u64,
    events: VecDeque<DataEvent>,
}

impl fmt::Debug for DataChannel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataChannel")
            .field("tls", &matches!(self.transport, Transport::Tls(_)))
            .field("established", &self.established)
            .field("error", &self.error)
            .field("read_closed", &self.read_closed)
            .field("write_ended", &self.write_ended)
            .field("bytes_received", &self.bytes_received)
            .field("bytes_sent", &self.bytes_sent)
            .finish_non_exhaustive()
    }
}

impl DataChannel {
    /// A channel for one data connection, just connected at `now`.
    ///
    /// In the TLS client role the ClientHello is ready in [`DataChannel::poll_transmit`] at once.
    pub fn new(
        now: Instant,
        protection: DataProtection,
        options: DataOptions,
    ) -> Result<Self, DataError> {
        let (transport, policy) = match protection {
            DataProtection::Clear => (
                Transport::Clear(ClearBuffers {
                    received: Vec::new(),
                    read_at: 0,
                    sending: Vec::new(),
                    eof: false,
                }),
                None,
            ),
            DataProtection::Tls(DataTls::Server { config, resumption }) => (
                Transport::Tls(Box::new(
                    TlsConn::server(config).map_err(DataError::Config)?,
                )),
                Some(resumption),
            ),
            DataProtection::Tls(DataTls::Client {
                config,
                server_name,
            }) => (
                Transport::Tls(Box::new(
                    TlsConn::client(config, server_name).map_err(DataError::Config)?,
                )),
                None,
            ),
        };
        let is_tls = matches!(transport, Transport::Tls(_));
        let mut channel = Self {
            transport,
            policy,
            handshake_deadline: is_tls.then(|| now + options.handshake_timeout),
            established: !is_tls,
            tls_info: None,
            error: None,
            finish_requested: false,
            finished_at: None,
            write_ended: false,
            eof_accepted: false,
            hold_tickets: false,
            binding: None,
            binding_wait: None,
            awaiting_transfer: false,
            peer_started: false,
            ready_on_handshake: false,
            transfer: None,
            ready_due: false,
            write_shut: false,
            read_closed: None,
            terminated: false,
            ascii: (options.data_type == DataType::Ascii).then(Box::default),
            bytes_received: 0,
            bytes_sent: 0,
            events: VecDeque::new(),
            options,
        };
        if let Transport::Tls(tls) = &mut channel.transport {
            tls.set_send_buffer_limit(Some(channel.options.send_buffer_limit));
        }
        channel.hold_tickets =
            channel.policy.is_some() && channel.options.flow == DataFlow::Receive;
        Ok(channel)
    }

    // ----- getters -----

    /// Whether the TLS handshake is still running (false in the clear and after a failure).
    pub fn is_handshaking(&self) -> bool {
        matches!(self.transport, Transport::Tls(_)) && !self.established && self.error.is_none()
    }

    /// What the TLS handshake negotiated, once it finished and passed the policy.
    pub fn tls_info(&self) -> Option<TlsInfo> {
        self.tls_info.clone()
    }

    /// Plaintext bytes received and consumed so far.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Plaintext bytes taken by [`DataChannel::write`] so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// The peer's stream has ended and was consumed to its end: `Some(clean)`, as in [`DataEvent::ReadClosed`].
    pub fn is_read_closed(&self) -> Option<bool> {
        self.read_closed
    }

    /// This end has finished and `poll_transmit` has handed out everything, close_notify included: the caller may
    /// shut down the socket's write half.
    pub fn is_write_closed(&self) -> bool {
        self.write_ended && !self.wants_transmit()
    }

    /// Whether [`DataChannel::poll_transmit`] has bytes to hand out.
    pub fn wants_transmit(&self) -> bool {
        let converted = self
            .ascii
            .as_ref()
            .is_some_and(|a| !a.out_pending().is_empty());
        if converted && !self.output_held() {
            return true;
        }
        match &self.transport {
            Transport::Clear(clear) => !clear.sending.is_empty(),
            Transport::Tls(_) if self.output_held() => false,
            Transport::Tls(tls) => tls.wants_write(),
        }
    }

    /// Whether [`DataChannel::write`] may take bytes now: established, transfer started, not finished, not
    /// failed. It may still take 0 when the send buffer is full.
    pub fn can_write(&self) -> bool {
        self.established
            && !self.awaiting_transfer
            && !self.finish_requested
            && self.error.is_none()
    }

    /// Whether the peer has sent anything yet (under TLS: started its handshake).
    pub fn peer_started(&self) -> bool {
        self.peer_started
    }

    /// Whether the channel waits for [`DataChannel::start_transfer`] (a server session's channel, built when the
    /// data connection arrived).
    pub fn awaits_transfer(&self) -> bool {
        self.awaiting_transfer
    }

    /// Whether the channel is over (finished or failed) and has nothing left to send: close the socket.
    pub fn is_closed(&self) -> bool {
        self.terminated && !self.wants_transmit()
    }

    /// The fatal error, if the channel failed.
    pub fn error(&self) -> Option<&DataError> {
        self.error.as_ref()
    }

    /// The transfer's figures so far (final once [`DataEvent::Finished`] or [`DataEvent::Failed`] was emitted).
    pub fn report(&self) -> DataReport {
        DataReport {
            bytes_received: self.bytes_received,
            bytes_sent: self.bytes_sent,
            clean_close: self.error.is_none() && self.read_closed == Some(true),
            peer_close_notify: match &self.transport {
                Transport::Tls(tls) => tls.peer_closed(),
                Transport::Clear(_) => false,
            },
            tls: self.tls_info.clone(),
        }
    }

    // ----- inputs -----

    /// Feeds bytes read from the socket. Returns how many were taken.
    ///
    /// Fewer than `input.len()` are taken when received plaintext fills the buffer (backpressure): read it out
    /// with [`DataChannel::read_chunk`] / [`DataChannel::consume`], then offer the rest again. After a failure,
    /// and after the peer's close_notify, input is discarded (reported as taken).
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize {
        if self.error.is_some() {
            return input.len();
        }
        self.peer_started |= !input.is_empty();
        let taken = match &mut self.transport {
            Transport::Clear(clear) => {
                if clear.eof {
                    input.len()
                } else {
                    clear.take(input, self.options.receive_buffer_limit)
                }
            }
            Transport::Tls(tls) => match tls.read_tls(input) {
                // Nothing after close_notify is data (RFC 8446 §6.1): drop it.
                Ok(_) if tls.peer_closed() => input.len(),
                Ok(n) => n,
                Err(e) => {
                    self.fail(DataError::Tls(e));
                    return input.len();
                }
            },
        };
        self.progress(now);
        if self.error.is_some() {
            return input.len();
        }
        taken
    }

    /// The transport delivered EOF (the peer's TCP FIN): no more input will come.
    pub fn handle_eof(&mut self, now: Instant) {
        if self.error.is_some() {
            return;
        }
        match &mut self.transport {
            Transport::Clear(clear) => clear.eof = true,
            Transport::Tls(tls) => {
                if tls.transport_eof() {
                    return;
                }
                if let Err(e) = tls.handle_eof() {
                    self.fail(DataError::Tls(e));
                    return;
                }
                if !self.established {
                    self.fail(DataError::EofDuringHandshake);
                    return;
                }
                if !tls.peer_closed() {
                    self.eof_accepted = match (self.options.flow, self.finished_at) {
                        // Our payload and close_notify are out: the peer's close cuts nothing of ours.
                        (DataFlow::Send, Some(_)) => true,
                        (_, finished) => match (self.options.close_notify_grace, finished) {
                            (Some(grace), Some(at)) => {
                                self.bytes_received == 0
                                    && tls.plaintext_chunk().is_empty()
                                    && now <= at + grace
                            }
                            _ => false,
                        },
                    };
                }
            }
        }
        self.progress(now);
    }

    /// Time passed: `now` is at or after a deadline from [`DataChannel::poll_timeout`].
    ///
    /// An expired handshake deadline fails the channel with [`DataError::HandshakeTimeout`]; every expired
    /// deadline is cleared, so `poll_timeout` never returns it again.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(deadline) = self.handshake_deadline {
            if now >= deadline {
                self.handshake_deadline = None;
                // A connection nobody has spoken on, waiting for its transfer command, is the control session's
                // business (its idle timeout); `start_transfer` arms the deadline again.
                let idle = self.awaiting_transfer && !self.peer_started;
                if !self.established && !idle {
                    self.fail(DataError::HandshakeTimeout);
                }
            }
        }
        if self.binding_wait.is_some_and(|(at, _)| now >= at) {
            self.progress(now);
        }
    }

    // ----- mutators -----

    /// Borrows the next run of received plaintext, without copying; empty when none is buffered.
    ///
    /// Under TLS a run is at most one record (16 KiB); call again after [`DataChannel::consume`]. Under
    /// [`DataType::Ascii`] the run is the converted text (CRLF turned into LF).
    pub fn read_chunk(&mut self) -> &[u8] {
        if self.error.is_some() || self.awaiting_transfer || !self.established {
            return &[];
        }
        if self.ascii.is_some() {
            self.convert_input();
            return self.ascii.as_ref().map_or(&[], |a| a.input_pending());
        }
        match &mut self.transport {
            Transport::Clear(clear) => clear.received.get(clear.read_at..).unwrap_or(&[]),
            Transport::Tls(tls) => tls.plaintext_chunk(),
        }
    }

    /// Marks the first `n` bytes of [`DataChannel::read_chunk`] as used (clamped to its length).
    pub fn consume(&mut self, n: usize) {
        if self.error.is_some() {
            return;
        }
        if let Some(ascii) = self.ascii.as_mut() {
            ascii.in_at += n.min(ascii.input_pending().len());
            self.update_ends();
            return;
        }
        let used = self.consume_transport(n);
        self.bytes_received += used as u64;
        self.update_ends();
    }

    /// Queues plaintext to send. Returns how many bytes were taken: 0 before the TLS handshake finished, after
    /// [`DataChannel::finish`] or a failure, and while the send buffer is full (drain `poll_transmit` first).
    /// Under [`DataType::Ascii`] the bytes are converted to CRLF line ends first.
    pub fn write(&mut self, plaintext: &[u8]) -> usize {
        if !self.can_write() {
            return 0;
        }
        let taken = match self.ascii.as_mut() {
            Some(ascii) => {
                if !ascii.out_pending().is_empty() {
                    self.flush_converted();
                }
                match self.ascii.as_mut() {
                    Some(ascii) if ascii.out_pending().is_empty() => {
                        let take = plaintext.len().min(ASCII_CHUNK);
                        ascii.out.clear();
                        ascii.out_at = 0;
                        let (input, out) = (plaintext.get(..take).unwrap_or(&[]), &mut ascii.out);
                        ascii.to_network.convert(input, out);
                        self.flush_converted();
                        take
                    }
                    _ => 0,
                }
            }
            None => self.write_transport(plaintext),
        };
        self.bytes_sent += taken as u64;
        taken
    }

    /// No more plaintext will be written: under TLS, queue close_notify behind the data (after the handshake, if
    /// it is still running). Idempotent. `now` starts the close_notify grace ([`DataOptions::close_notify_grace`]).
    pub fn finish(&mut self, now: Instant) {
        if self.finished_at.is_none() && !self.finish_requested {
            self.finished_at = Some(now);
        }
        self.finish_requested = true;
        self.update_ends();
    }

    /// The transfer command for this connection runs: payload may move now, `flow` and `data_type` from the
    /// [`TransferPlan`](crate::server::TransferPlan). Only channels that
    /// [`awaits_transfer`](DataChannel::awaits_transfer) need it; the handshake deadline starts again if the
    /// handshake is still running.
    ///
    /// An upload's TLS 1.3 tickets ([`DataOptions::flow`]) are held back only when the client has not started its
    /// handshake yet: it waits for the preliminary reply and may never read the connection (Go). A client that
    /// spoke first drives the data connection alongside the control connection and reads an upload connection
    /// once, just before it closes (curl): it needs its ticket as soon as the handshake ends.
    pub fn start_transfer(&mut self, now: Instant, flow: DataFlow, data_type: DataType) {
        if !self.awaiting_transfer {
            return;
        }
        self.awaiting_transfer = false;
        self.options.flow = flow;
        self.options.data_type = data_type;
        self.ascii = (data_type == DataType::Ascii).then(Box::default);
        self.hold_tickets = self.policy.is_some()
            && flow == DataFlow::Receive
            && !self.peer_started
            && !self.established;
        if self.is_handshaking() {
            self.handshake_deadline = Some(now + self.options.handshake_timeout);
        }
        // A client that spoke first is mid-handshake: the preliminary reply waits for the handshake (and the
        // tickets it produced) to go out first. A client that waits for the reply gets it at once.
        if self.is_handshaking() && self.peer_started {
            self.ready_on_handshake = true;
        } else if self.error.is_none() {
            self.ready_due = true;
        }
        self.update_ends();
    }

    /// Binds a server-role channel to the session's record of whose ticket its handshake opens.
    pub(crate) fn bind(&mut self, binding: ConnectionBinding) {
        self.binding = Some(binding);
    }

    /// Marks a channel built before its transfer command, for `DriveData` request `transfer`: see
    /// [`DataChannel::start_transfer`].
    pub(crate) fn await_transfer(&mut self, transfer: ReqId) {
        self.transfer = Some(transfer);
        self.awaiting_transfer = true;
        self.hold_tickets = false;
    }

    // ----- outputs -----

    /// The one drain: the next thing the frontend must do, until [`DataOutput::Wait`]. It yields, in this order,
    /// the bytes to send, the moment to shut down the socket's write half, the transfer's readiness for the
    /// control session, and the events, so a loop over it cannot forget one of them (the enum is exhaustive on
    /// purpose: a new duty breaks the frontend's build instead of being ignored).
    pub fn poll_output(&mut self, out: &mut Vec<u8>) -> DataOutput {
        let n = self.poll_transmit(out);
        if n > 0 {
            return DataOutput::Transmit(n);
        }
        if self.is_write_closed() && !self.write_shut {
            self.write_shut = true;
            return DataOutput::ShutdownWrite;
        }
        if std::mem::take(&mut self.ready_due) {
            if let Some(transfer) = self.transfer {
                return DataOutput::TransferReady(DataReady { transfer });
            }
        }
        match self.poll_event() {
            Some(event) => DataOutput::Event(event),
            None => DataOutput::Wait(self.poll_timeout()),
        }
    }

    /// Appends the bytes to send (ciphertext, or plain bytes in the clear) to `out`; returns how many.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let mut total = 0;
        loop {
            let held = self.output_held();
            let n = match &mut self.transport {
                Transport::Clear(clear) => {
                    let n = clear.sending.len();
                    out.extend_from_slice(&clear.sending);
                    clear.sending.clear();
                    n
                }
                Transport::Tls(_) if held => 0,
                Transport::Tls(tls) => tls.write_tls_into(out),
            };
            total += n;
            // Converted `TYPE A` bytes waiting for room go in now that some went out; a finish waits for them.
            let converted = self
                .ascii
                .as_ref()
                .is_some_and(|a| !a.out_pending().is_empty());
            if !converted || held || (n == 0 && total > 0) {
                return total;
            }
            if self.flush_converted() == 0 && n == 0 {
                return total;
            }
            self.update_ends();
        }
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<DataEvent> {
        self.events.pop_front()
    }

    /// The earliest deadline at which [`DataChannel::handle_timeout`] must be called, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let binding = self.binding_wait.map(|(at, _)| at);
        match (self.handshake_deadline, binding) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- internals -----

    /// TLS output after the handshake (an upload's tickets) waits for the end of the peer's stream.
    fn output_held(&self) -> bool {
        self.error.is_none()
            && (self.binding_wait.is_some() || (self.hold_tickets && self.established))
    }

    /// After TLS input: the handshake, the resumption policy, then the ends of both directions.
    fn progress(&mut self, now: Instant) {
        if let (Transport::Tls(tls), false) = (&mut self.transport, self.established) {
            let required = self.policy == Some(ResumptionPolicy::Required);
            let decision = tls.handshake_decision();
            let binding = match (&self.binding, decision) {
                (Some(binding), HandshakeDecision::Resumed) if required => binding.state(),
                _ => BindingState::Confirmed,
            };
            if required && (decision == HandshakeDecision::Full || binding == BindingState::Refused)
            {
                // Decided at the ClientHello, or while its answer was held: nothing of ours has been sent, so
                // only a plaintext alert goes out.
                tls.refuse();
                self.fail(DataError::SessionReuseRequired);
                return;
            }
            if binding == BindingState::Pending {
                // Another session's ticket, and that session is still logging in: answer nothing until it has.
                let interval = self.binding_wait.map_or(BINDING_RECHECK_FIRST, |(_, i)| {
                    (i * 2).min(BINDING_RECHECK_MAX)
                });
                self.binding_wait = Some((now + interval, interval));
                return;
            }
            self.binding_wait = None;
            if tls.is_handshaking() {
                return;
            }
            let Some(info) = tls.info() else { return };
            // Only TLS 1.3 sends anything after its handshake (tickets); a TLS 1.2 server may still have its
            // Finished queued when the handshake is complete.
            self.hold_tickets &= info.version == rustls::ProtocolVersion::TLSv1_3;
            self.established = true;
            self.handshake_deadline = None;
            self.tls_info = Some(info.clone());
            self.events.push_back(DataEvent::HandshakeComplete(info));
            if std::mem::take(&mut self.ready_on_handshake) {
                self.ready_due = true;
            }
        }
        self.discard_if_sending();
        self.update_ends();
    }

    /// A sender receives no payload (FTP data flows one way, RFC 959 section 3.2): whatever the peer writes
    /// anyway is dropped, so it can never fill the bounded receive buffer and stall the transfer.
    fn discard_if_sending(&mut self) {
        if self.options.flow != DataFlow::Send
            || self.awaiting_transfer
            || !self.established
            || self.error.is_some()
        {
            return;
        }
        loop {
            let n = match &mut self.transport {
                Transport::Clear(clear) => clear.received.len().saturating_sub(clear.read_at),
                Transport::Tls(tls) => tls.plaintext_chunk().len(),
            };
            if n == 0 || self.consume_transport(n) == 0 {
                return;
            }
        }
    }

    /// Consumes `n` received bytes from the transport; returns how many it had.
    fn consume_transport(&mut self, n: usize) -> usize {
        match &mut self.transport {
            Transport::Clear(clear) => {
                let used = n.min(clear.received.len().saturating_sub(clear.read_at));
                clear.read_at += used;
                if clear.read_at == clear.received.len() {
                    clear.received.clear();
                    clear.read_at = 0;
                }
                used
            }
            Transport::Tls(tls) => tls.consume_plaintext(n),
        }
    }

    /// Hands plaintext to the transport within its bound; returns how much it took.
    fn write_transport(&mut self, plaintext: &[u8]) -> usize {
        match &mut self.transport {
            Transport::Clear(clear) => {
                let room = self
                    .options
                    .send_buffer_limit
                    .saturating_sub(clear.sending.len());
                let taken = plaintext.len().min(room);
                clear
                    .sending
                    .extend_from_slice(plaintext.get(..taken).unwrap_or(&[]));
                taken
            }
            Transport::Tls(tls) => tls.write_plaintext(plaintext),
        }
    }

    /// Moves converted `TYPE A` output into the transport as far as it takes it; returns how much.
    fn flush_converted(&mut self) -> usize {
        let Some(mut ascii) = self.ascii.take() else {
            return 0;
        };
        let taken = self.write_transport(ascii.out_pending());
        ascii.out_at += taken;
        self.ascii = Some(ascii);
        taken
    }

    /// Refills the converted `TYPE A` input from the transport once the caller has read it all.
    fn convert_input(&mut self) {
        let Some(mut ascii) = self.ascii.take() else {
            return;
        };
        if ascii.input_pending().is_empty() {
            ascii.input.clear();
            ascii.in_at = 0;
            let raw = match &mut self.transport {
                Transport::Clear(clear) => clear.received.get(clear.read_at..).unwrap_or(&[]),
                Transport::Tls(tls) => tls.plaintext_chunk(),
            };
            ascii.from_network.convert(raw, &mut ascii.input);
            let raw_len = raw.len();
            if raw_len > 0 {
                let used = self.consume_transport(raw_len);
                self.bytes_received += used as u64;
            }
        }
        self.ascii = Some(ascii);
    }

    /// Notices the end of the peer's stream, answers it, queues close_notify, and emits `Finished`.
    fn update_ends(&mut self) {
        if self.error.is_some() || self.terminated {
            return;
        }
        // The peer's end (close_notify or EOF) ends ours too: FTP data flows one way, and both ends send
        // close_notify.
        let peer_ended = match &self.transport {
            Transport::Clear(clear) => clear.eof,
            Transport::Tls(tls) => tls.peer_closed() || tls.transport_eof(),
        };
        if peer_ended {
            self.finish_requested = true;
            // The client has written everything: it now reads until our close_notify, or has gone.
            self.hold_tickets = false;
        }
        let converted_out = self
            .ascii
            .as_ref()
            .is_some_and(|a| !a.out_pending().is_empty());
        if self.finish_requested && self.established && !self.write_ended && !converted_out {
            self.write_ended = true;
            if let Transport::Tls(tls) = &mut self.transport {
                tls.send_close_notify();
            }
        }
        if self.read_closed.is_none() && !self.awaiting_transfer {
            let clean = match &mut self.transport {
                Transport::Clear(clear) => {
                    (clear.eof && clear.read_at == clear.received.len()).then_some(true)
                }
                Transport::Tls(tls) => match tls.read_state() {
                    ReadState::Open => None,
                    ReadState::CleanClose => Some(true),
                    ReadState::Truncated => Some(self.eof_accepted),
                },
            };
            // `TYPE A`: the converted text, and a CR held at the very end, must be read out first.
            let clean = match (clean, self.ascii.as_deref_mut()) {
                (Some(true), Some(ascii)) => {
                    ascii.release_held_cr();
                    ascii.input_pending().is_empty().then_some(true)
                }
                (clean, _) => clean,
            };
            if let Some(clean) = clean {
                self.read_closed = Some(clean);
                self.events.push_back(DataEvent::ReadClosed { clean });
            }
        }
        if self.read_closed.is_some() && self.write_ended && !self.awaiting_transfer {
            self.terminated = true;
            self.events.push_back(DataEvent::Finished(self.report()));
        }
    }

    fn fail(&mut self, error: DataError) {
        if self.error.is_some() || self.terminated {
            return;
        }
        self.error = Some(error.clone());
        self.handshake_deadline = None;
        self.terminated = true;
        self.events.push_back(DataEvent::Failed(error));
    }
}

impl ClearBuffers {
    /// Copies as much of `input` as the receive bound allows; returns how much.
    fn take(&mut self, input: &[u8], limit: usize) -> usize {
        let buffered = self.received.len().saturating_sub(self.read_at);
        let taken = input.len().min(limit.saturating_sub(buffered));
        if taken == 0 {
            return 0;
        }
        if self.read_at > 0 && self.received.len() + taken > limit {
            // Slide the unread bytes to the front instead of growing past the bound.
            self.received.drain(..self.read_at);
            self.read_at = 0;
        }
        self.received
            .extend_from_slice(input.get(..taken).unwrap_or(&[]));
        taken
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use crate::test_support::{control_session, localhost, TestPki, TLS12, TLS13};

    type Versions = &'static [&'static rustls::SupportedProtocolVersion];

    /// The alert a refused server-role channel sends: fatal access_denied in a plaintext record.
    const ACCESS_DENIED_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 49];

    /// One end of an in-memory pair: its channel, what it should send, and what it saw.
    struct End {
        ch: DataChannel,
        payload: Vec<u8>,
        written: usize,
        /// Call `finish` once the payload is written.
        finish: bool,
        received: Vec<u8>,
        events: Vec<DataEvent>,
    }

    impl End {
        fn new(ch: DataChannel, payload: Vec<u8>, finish: bool) -> Self {
            Self {
                ch,
                payload,
                written: 0,
                finish,
                received: Vec::new(),
                events: Vec::new(),
            }
        }

        fn drain(&mut self) {
            loop {
                let chunk = self.ch.read_chunk();
                if chunk.is_empty() {
                    break;
                }
                let n = chunk.len();
                self.received.extend_from_slice(chunk);
                self.ch.consume(n);
            }
            while let Some(event) = self.ch.poll_event() {
                self.events.push(event);
            }
        }

        fn finished(&self) -> Option<&DataReport> {
            self.events.iter().find_map(|e| match e {
                DataEvent::Finished(r) => Some(r),
                _ => None,
            })
        }

        fn failed(&self) -> Option<&DataError> {
            self.events.iter().find_map(|e| match e {
                DataEvent::Failed(e) => Some(e),
                _ => None,
            })
        }
    }

    /// Moves `from`'s output into `to`; returns whether anything happened.
    fn transfer(now: Instant, from: &mut End, to: &mut End, wire: &mut Vec<u8>) -> bool {
        let mut progress = false;
        if from.ch.can_write() {
            let n = from.ch.write(&from.payload[from.written..]);
            from.written += n;
            progress |= n > 0;
            if from.finish && from.written == from.payload.len() {
                from.ch.finish(now);
            }
        }
        wire.clear();
        let _ = from.ch.poll_transmit(wire);
        progress |= !wire.is_empty();
        let mut at = 0;
        while at < wire.len() {
            let n = to.ch.handle_input(now, &wire[at..]);
            at += n;
            let buffered = !to.ch.read_chunk().is_empty();
            assert!(n > 0 || buffered, "stuck: nothing taken, nothing to read");
            to.drain();
        }
        from.drain();
        to.drain();
        progress
    }

    fn run(now: Instant, a: &mut End, b: &mut End) {
        let mut wire = Vec::new();
        for _ in 0..100_000 {
            let x = transfer(now, a, b, &mut wire);
            let y = transfer(now, b, a, &mut wire);
            if !x && !y {
                return;
            }
        }
        panic!("pair did not settle");
    }

    fn server_channel(
        now: Instant,
        config: &Arc<rustls::ServerConfig>,
        policy: ResumptionPolicy,
    ) -> DataChannel {
        let tls = DataTls::Server {
            config: config.clone(),
            resumption: policy,
        };
        DataChannel::new(now, DataProtection::Tls(tls), DataOptions::default()).unwrap()
    }

    fn client_channel(now: Instant, config: &Arc<rustls::ClientConfig>) -> DataChannel {
        let tls = DataTls::Client {
            config: config.clone(),
            server_name: localhost(),
        };
        DataChannel::new(now, DataProtection::Tls(tls), DataOptions::default()).unwrap()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// A data connection on a control session: the server sends `download`, the client sends `upload`.
    fn data_connection(
        now: Instant,
        bound: &Arc<rustls::ServerConfig>,
        client: &Arc<rustls::ClientConfig>,
        policy: ResumptionPolicy,
        download: usize,
    ) -> (End, End) {
        let mut server = End::new(server_channel(now, bound, policy), pattern(download), true);
        let mut client = End::new(client_channel(now, client), Vec::new(), false);
        run(now, &mut server, &mut client);
        (server, client)
    }

    fn clear_channel(flow: DataFlow, data_type: DataType) -> DataChannel {
        let options = DataOptions {
            flow,
            data_type,
            ..DataOptions::default()
        };
        DataChannel::new(Instant::now(), DataProtection::Clear, options).unwrap()
    }

    fn read_all(ch: &mut DataChannel) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            let chunk = ch.read_chunk();
            if chunk.is_empty() {
                return got;
            }
            got.extend_from_slice(chunk);
            let n = chunk.len();
            ch.consume(n);
        }
    }

    /// `TYPE A` (RFC 959 section 3.1.1.1) is the channel's job: LF goes out as CRLF (CRLF stays), CRLF comes in
    /// as LF even when split between reads, and a CR held at the very end is text after all.
    #[test]
    fn type_a_converts_line_ends_in_the_channel() {
        let now = Instant::now();
        let mut sender = clear_channel(DataFlow::Send, DataType::Ascii);
        let text = b"a\nb\r\nc\n".repeat(5_000);
        let mut wire = Vec::new();
        let mut at = 0;
        while at < text.len() {
            at += sender.write(&text[at..]);
            let _ = sender.poll_transmit(&mut wire);
        }
        sender.finish(now);
        let _ = sender.poll_transmit(&mut wire);
        assert!(sender.is_write_closed());
        assert_eq!(wire, b"a\r\nb\r\nc\r\n".repeat(5_000));
        assert_eq!(sender.bytes_sent(), text.len() as u64);

        let mut receiver = clear_channel(DataFlow::Receive, DataType::Ascii);
        let mut got = Vec::new();
        for part in [&b"x\r"[..], b"\ny\r", b"\r\nz\r"] {
            assert_eq!(receiver.handle_input(now, part), part.len());
            got.extend(read_all(&mut receiver));
        }
        receiver.handle_eof(now);
        got.extend(read_all(&mut receiver));
        assert_eq!(got, b"x\ny\r\nz\r");
        assert_eq!(receiver.is_read_closed(), Some(true));
    }

    /// A sender receives no payload: what the peer writes anyway is dropped, so it never fills the bounded
    /// receive buffer (nor stalls the transfer), whoever drives the channel.
    #[test]
    fn a_sender_drops_what_the_peer_writes() {
        let now = Instant::now();
        let mut sender = clear_channel(DataFlow::Send, DataType::Binary);
        let junk = vec![b'j'; 64 * 1024];
        for _ in 0..16 {
            assert_eq!(sender.handle_input(now, &junk), junk.len());
        }
        assert!(sender.read_chunk().is_empty());
        assert_eq!(sender.bytes_received(), 0);
    }

    #[test]
    fn channel_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<DataChannel>();
        assert_send::<DataEvent>();
    }

    #[test]
    fn clear_mode_passes_bytes_through_bounded() {
        let now = Instant::now();
        let options = DataOptions {
            send_buffer_limit: 1000,
            receive_buffer_limit: 300,
            ..DataOptions::default()
        };
        let mut ch = DataChannel::new(now, DataProtection::Clear, options).unwrap();
        assert!(!ch.is_handshaking());
        assert_eq!(ch.poll_timeout(), None);
        assert_eq!(ch.write(&[1u8; 1500]), 1000);
        assert_eq!(ch.write(&[1u8; 10]), 0);
        let mut out = Vec::new();
        assert_eq!(ch.poll_transmit(&mut out), 1000);
        assert_eq!(out, vec![1u8; 1000]);
        assert_eq!(ch.write(&[2u8; 10]), 10);

        let input = pattern(1000);
        assert_eq!(ch.handle_input(now, &input), 300);
        assert_eq!(ch.handle_input(now, &input[300..]), 0);
        assert_eq!(ch.read_chunk(), &input[..300]);
        ch.consume(100);
        assert_eq!(ch.handle_input(now, &input[300..]), 100);
        assert_eq!(ch.read_chunk(), &input[100..400]);
        ch.consume(1_000_000); // clamped
        assert_eq!(ch.bytes_received(), 400);
        assert_eq!(ch.handle_input(now, &input[400..]), 300);
        ch.consume(300);
        ch.handle_eof(now);
        assert_eq!(ch.poll_event(), Some(DataEvent::ReadClosed { clean: true }));
        let report = DataReport {
            bytes_received: 700,
            bytes_sent: 1010,
            clean_close: true,
            peer_close_notify: false,
            tls: None,
        };
        assert_eq!(ch.poll_event(), Some(DataEvent::Finished(report)));
        assert_eq!(ch.poll_event(), None);
        assert!(!ch.is_write_closed(), "10 bytes still to send");
        out.clear();
        assert_eq!(ch.poll_transmit(&mut out), 10);
        assert!(ch.is_write_closed() && ch.is_closed());
        assert_eq!(ch.write(b"x"), 0);
    }

    #[test]
    fn clear_mode_pair_moves_a_file() {
        let now = Instant::now();
        let clear =
            || DataChannel::new(now, DataProtection::Clear, DataOptions::default()).unwrap();
        let mut sender = End::new(clear(), pattern(1_000_000), true);
        let mut receiver = End::new(clear(), Vec::new(), false);
        run(now, &mut sender, &mut receiver);
        assert!(sender.ch.is_write_closed());
        // The sender's TCP FIN is the end of file.
        receiver.ch.handle_eof(now);
        receiver.drain();
        assert_eq!(receiver.received, sender.payload);
        let report = receiver.finished().unwrap();
        assert!(report.clean_close);
        assert_eq!(report.bytes_received, 1_000_000);
    }

    fn tls_transfer_both_ways(versions: Versions) {
        let now = Instant::now();
        let pki = TestPki::new();
        let base = pki.server_config(versions);
        let client_config = pki.client_config(versions);
        let bound = control_session(&base, &client_config);
        // Download: the server sends, the client answers close_notify.
        let (server, client) = data_connection(
            now,
            &bound,
            &client_config,
            ResumptionPolicy::Required,
            300_000,
        );
        assert_eq!(client.received, server.payload);
        let (s, c) = (server.finished().unwrap(), client.finished().unwrap());
        assert!(s.clean_close && s.peer_close_notify && c.clean_close && c.peer_close_notify);
        assert_eq!((s.bytes_sent, s.bytes_received), (300_000, 0));
        assert_eq!((c.bytes_sent, c.bytes_received), (0, 300_000));
        assert!(s.tls.as_ref().unwrap().resumed);
        assert_eq!(s.tls.as_ref().unwrap().version, versions[0].version);
        assert!(server.ch.is_closed() && client.ch.is_closed());

        // Upload: the client sends and finishes; the server never calls finish yet answers with close_notify.
        let mut server = End::new(
            server_channel(now, &bound, ResumptionPolicy::Required),
            Vec::new(),
            false,
        );
        let mut client = End::new(client_channel(now, &client_config), pattern(100_000), true);
        run(now, &mut client, &mut server);
        assert_eq!(server.received, client.payload);
        assert!(matches!(
            server.events[0],
            DataEvent::HandshakeComplete(TlsInfo { resumed: true, .. })
        ));
        assert_eq!(server.events[1], DataEvent::ReadClosed { clean: true });
        let (s, c) = (server.finished().unwrap(), client.finished().unwrap());
        assert!(
            s.clean_close && c.clean_close && c.peer_close_notify,
            "{s:?} {c:?}"
        );
        assert_eq!(client.events.last(), Some(&DataEvent::Finished(c.clone())));
        assert_eq!(server.events.len(), 3);
    }

    #[test]
    fn tls12_transfer_both_ways_with_close_notify() {
        tls_transfer_both_ways(TLS12);
    }

    #[test]
    fn tls13_transfer_both_ways_with_close_notify() {
        tls_transfer_both_ways(TLS13);
    }

    fn resumption_binds_to_control_session(versions: Versions) {
        let now = Instant::now();
        let pki = TestPki::new();
        let base = pki.server_config(versions);
        let client_config = pki.client_config(versions);
        let bound = control_session(&base, &client_config);

        // Resumes this control session: accepted.
        let (server, client) = data_connection(
            now,
            &bound,
            &client_config,
            ResumptionPolicy::Required,
            1000,
        );
        assert_eq!(client.received.len(), 1000);
        assert!(server.ch.tls_info().unwrap().resumed);
        assert!(client.ch.tls_info().unwrap().resumed);

        // A client with no ticket at all: refused with nothing but the alert.
        let fresh = pki.client_config(versions);
        assert_refused(now, &bound, &fresh);

        // A ticket of ANOTHER control session on the same base config: refused.
        let other_client = pki.client_config(versions);
        let _other_bound = control_session(&base, &other_client);
        assert_refused(now, &bound, &other_client);
        // ... while that client still resumes on its own session's config.
        let (server, _) = data_connection(
            now,
            &_other_bound,
            &other_client,
            ResumptionPolicy::Required,
            10,
        );
        assert!(server.ch.tls_info().unwrap().resumed);

        // Preferred records a full handshake; Off ignores it.
        for policy in [ResumptionPolicy::Preferred, ResumptionPolicy::Off] {
            let fresh = pki.client_config(versions);
            let (server, client) = data_connection(now, &bound, &fresh, policy, 5000);
            assert_eq!(client.received.len(), 5000);
            assert!(!server.finished().unwrap().tls.as_ref().unwrap().resumed);
            assert!(server.finished().unwrap().clean_close);
        }
    }

    fn assert_refused(
        now: Instant,
        bound: &Arc<rustls::ServerConfig>,
        client_config: &Arc<rustls::ClientConfig>,
    ) {
        let mut server = server_channel(now, bound, ResumptionPolicy::Required);
        let mut client = client_channel(now, client_config);
        let mut hello = Vec::new();
        let _ = client.poll_transmit(&mut hello);
        assert_eq!(server.handle_input(now, &hello), hello.len());
        assert_eq!(
            server.poll_event(),
            Some(DataEvent::Failed(DataError::SessionReuseRequired))
        );
        assert_eq!(server.poll_event(), None);
        assert_eq!(server.error(), Some(&DataError::SessionReuseRequired));
        let mut out = Vec::new();
        assert_eq!(server.poll_transmit(&mut out), 7);
        assert_eq!(out, ACCESS_DENIED_ALERT);
        assert_eq!(server.poll_transmit(&mut out), 0);
        assert!(server.is_closed() && !server.is_handshaking());
        assert!(!server.report().clean_close);
        assert_eq!(client.handle_input(now, &out), 7);
        assert_eq!(
            client.poll_event(),
            Some(DataEvent::Failed(DataError::Tls(
                rustls::Error::AlertReceived(rustls::AlertDescription::AccessDenied)
            )))
        );
        // Sticky: later input is discarded, nothing more happens.
        assert_eq!(server.handle_input(now, &hello), hello.len());
        server.handle_eof(now);
        server.handle_timeout(now + Duration::from_secs(3600));
        assert_eq!(server.poll_event(), None);
        assert_eq!(server.write(b"data"), 0);
    }

    #[test]
    fn tls12_resumption_is_bound_to_the_control_session() {
        resumption_binds_to_control_session(TLS12);
    }

    #[test]
    fn tls13_resumption_is_bound_to_the_control_session() {
        resumption_binds_to_control_session(TLS13);
    }

    fn many_connections_all_resume(versions: Versions) {
        let now = Instant::now();
        let pki = TestPki::new();
        let base = pki.server_config(versions);
        // The store a client session keeps per control connection.
        let client_config =
            crate::tls::connection_bound_client_config(&pki.client_config(versions)).0;
        let bound = control_session(&base, &client_config);
        for i in 0..200 {
            // Alternate directions: uploads must also leave the client with fresh tickets.
            let (server, client) = if i % 2 == 0 {
                data_connection(now, &bound, &client_config, ResumptionPolicy::Required, 100)
            } else {
                let mut server = End::new(
                    server_channel(now, &bound, ResumptionPolicy::Required),
                    vec![],
                    false,
                );
                let mut client = End::new(client_channel(now, &client_config), pattern(100), true);
                run(now, &mut client, &mut server);
                (server, client)
            };
            assert_eq!(server.failed(), None, "connection {i}");
            assert!(
                server.finished().unwrap().tls.as_ref().unwrap().resumed,
                "connection {i}"
            );
            assert!(client.finished().unwrap().clean_close, "connection {i}");
        }
    }

    #[test]
    fn tls12_two_hundred_data_connections_all_resume() {
        many_connections_all_resume(TLS12);
    }

    #[test]
    fn tls13_two_hundred_data_connections_all_resume() {
        many_connections_all_resume(TLS13);
    }

    /// A TLS pair after the handshake, the server having sent `n` bytes without finishing.
    fn established_pair(now: Instant, options: DataOptions, n: usize) -> (End, End) {
        let pki = TestPki::new();
        let config = pki.server_config(TLS13);
        let tls = DataTls::Server {
            config,
            resumption: ResumptionPolicy::Off,
        };
        let server = DataChannel::new(now, DataProtection::Tls(tls), options).unwrap();
        let mut server = End::new(server, pattern(n), false);
        let mut client = End::new(
            client_channel(now, &pki.client_config(TLS13)),
            vec![],
            false,
        );
        run(now, &mut server, &mut client);
        assert_eq!(client.received.len(), n);
        (server, client)
    }

    #[test]
    fn eof_without_close_notify_is_truncation() {
        let now = Instant::now();
        let (mut server, mut client) = established_pair(now, DataOptions::default(), 5000);
        client.ch.handle_eof(now);
        client.drain();
        assert_eq!(
            client.events.last(),
            Some(&DataEvent::Finished(client.ch.report()))
        );
        assert!(client
            .events
            .contains(&DataEvent::ReadClosed { clean: false }));
        let report = client.finished().unwrap();
        assert!(!report.clean_close && !report.peer_close_notify);
        assert_eq!(report.bytes_received, 5000);
        // The sender likewise: the client's bare FIN after the data is not a clean close without a grace.
        server.ch.finish(now);
        server.ch.handle_eof(now);
        server.drain();
        assert!(!server.finished().unwrap().clean_close);
    }

    #[test]
    fn close_notify_grace_accepts_a_bare_fin_only_from_a_pure_receiver_in_time() {
        let now = Instant::now();
        let grace = Duration::from_secs(2);
        let options = DataOptions {
            close_notify_grace: Some(grace),
            ..DataOptions::default()
        };
        // Sender finished at `now`, the peer (which sent nothing) hangs up within the grace: clean.
        let (mut server, _) = established_pair(now, options.clone(), 1000);
        server.ch.finish(now);
        server.ch.handle_eof(now + grace);
        server.drain();
        let report = server.finished().unwrap();
        assert!(report.clean_close && !report.peer_close_notify);

        // Too late: truncation.
        let (mut server, _) = established_pair(now, options.clone(), 1000);
        server.ch.finish(now);
        server.ch.handle_eof(now + grace + Duration::from_millis(1));
        server.drain();
        assert!(!server.finished().unwrap().clean_close);

        // Not finished: truncation.
        let (mut server, _) = established_pair(now, options.clone(), 1000);
        server.ch.handle_eof(now);
        server.drain();
        assert!(!server.finished().unwrap().clean_close);

        // A receiver never gets the grace: its payload may be cut.
        let (_, mut client) = established_pair(now, options, 1000);
        client.ch.finish(now);
        client.ch.handle_eof(now);
        client.drain();
        assert!(!client.finished().unwrap().clean_close);
    }

    #[test]
    fn a_sender_that_finished_needs_no_close_notify_but_a_receiver_does() {
        let now = Instant::now();
        let options = |flow| DataOptions {
            flow,
            ..DataOptions::default()
        };
        // wget: reads the download to our close_notify, then closes with a bare FIN: complete.
        let (mut server, _) = established_pair(now, options(DataFlow::Send), 1000);
        server.ch.finish(now);
        server.ch.handle_eof(now + Duration::from_secs(60));
        server.drain();
        let report = server.finished().unwrap();
        assert!(report.clean_close && !report.peer_close_notify);
        // The same close before the sender finished: the download was cut.
        let (mut server, _) = established_pair(now, options(DataFlow::Send), 1000);
        server.ch.handle_eof(now);
        server.drain();
        assert!(!server.finished().unwrap().clean_close);
        // A receiver's payload may be cut by a bare FIN, finished or not.
        for flow in [DataFlow::Receive, DataFlow::Both] {
            let (mut receiver, _) = established_pair(now, options(flow), 0);
            receiver.ch.finish(now);
            receiver.ch.handle_eof(now);
            receiver.drain();
            assert!(!receiver.finished().unwrap().clean_close, "{flow:?}");
        }
    }

    /// Server role, TLS 1.3, an upload on a session-bound channel built before its transfer command: how many
    /// bytes the server sends after its handshake, before and after the client's close_notify.
    fn upload_output(client_speaks_first: bool) -> (usize, usize) {
        let now = Instant::now();
        let pki = TestPki::new();
        let client_config = pki.client_config(TLS13);
        let bound = control_session(&pki.server_config(TLS13), &client_config);
        let mut server = server_channel(now, &bound, ResumptionPolicy::Required);
        server.await_transfer(ReqId(7));
        let mut client = client_channel(now, &client_config);
        let mut wire = Vec::new();
        let _ = client.poll_transmit(&mut wire);
        if !client_speaks_first {
            server.start_transfer(now, DataFlow::Receive, DataType::Binary);
        }
        assert_eq!(server.handle_input(now, &wire), wire.len());
        if client_speaks_first {
            server.start_transfer(now, DataFlow::Receive, DataType::Binary);
        }
        // The server's flight, then the client's Finished and its payload.
        wire.clear();
        let _ = server.poll_transmit(&mut wire);
        assert_eq!(client.handle_input(now, &wire), wire.len());
        assert_eq!(client.write(b"upload"), 6);
        wire.clear();
        let _ = client.poll_transmit(&mut wire);
        assert_eq!(server.handle_input(now, &wire), wire.len());
        assert_eq!(server.read_chunk(), b"upload");
        server.consume(6);
        assert!(server.tls_info().unwrap().resumed);
        let mut before = Vec::new();
        let _ = server.poll_transmit(&mut before);
        // The client's close_notify: the end of the upload.
        client.finish(now);
        wire.clear();
        let _ = client.poll_transmit(&mut wire);
        assert_eq!(server.handle_input(now, &wire), wire.len());
        let mut after = Vec::new();
        let _ = server.poll_transmit(&mut after);
        assert!(server.report().clean_close);
        // The client takes all of it (tickets, then close_notify).
        assert_eq!(client.handle_input(now, &before), before.len());
        assert_eq!(client.handle_input(now, &after), after.len());
        assert!(client.report().peer_close_notify);
        (before.len(), after.len())
    }

    /// Drains `poll_output` until `Wait`: the bytes, and every other output in order.
    fn outputs(ch: &mut DataChannel) -> (Vec<u8>, Vec<String>) {
        let (mut wire, mut seen) = (Vec::new(), Vec::new());
        loop {
            match ch.poll_output(&mut wire) {
                DataOutput::Transmit(_) => {}
                DataOutput::Wait(_) => return (wire, seen),
                other => seen.push(format!("{other:?}")),
            }
        }
    }

    #[test]
    fn the_one_drain_says_when_to_shut_down_and_when_the_transfer_is_ready() {
        let now = Instant::now();
        // In the clear: the bytes, then (once) the write half, then the rest.
        let mut ch = DataChannel::new(now, DataProtection::Clear, DataOptions::default()).unwrap();
        assert_eq!(ch.write(b"file"), 4);
        ch.finish(now);
        let (wire, seen) = outputs(&mut ch);
        assert_eq!(wire, b"file");
        assert_eq!(seen, ["ShutdownWrite"]);
        assert_eq!(outputs(&mut ch).1, Vec::<String>::new(), "yielded once");
        // A server session's channel names its DriveData request when its transfer may be announced.
        let pki = TestPki::new();
        let client_config = pki.client_config(TLS13);
        let bound = control_session(&pki.server_config(TLS13), &client_config);
        let mut server = server_channel(now, &bound, ResumptionPolicy::Required);
        server.await_transfer(ReqId(7));
        assert!(outputs(&mut server).1.is_empty());
        server.start_transfer(now, DataFlow::Receive, DataType::Binary);
        let ready = DataReady::new(ReqId(7));
        assert_eq!(
            outputs(&mut server).1,
            [format!("TransferReady({ready:?})")]
        );
    }

    /// An alert record: header and 2 bytes, sealed (TLS 1.3 adds a content type byte and a 16-byte tag).
    const SEALED_ALERT: usize = 5 + 2 + 1 + 16;

    #[test]
    fn an_uploads_tickets_wait_for_the_clients_close_notify_unless_it_spoke_first() {
        // Go never reads an upload connection: nothing may wait unread in it when it closes.
        let (before, after) = upload_output(false);
        assert_eq!(before, 0);
        assert!(after > SEALED_ALERT, "tickets then close_notify: {after}");
        // curl started before the transfer command and reads once, just before closing: tickets at once.
        let (before, after) = upload_output(true);
        assert!(before > 0, "tickets right after the handshake");
        assert_eq!(after, SEALED_ALERT, "close_notify only");
    }

    /// The handshake message types in a TLS 1.2 server flight's plaintext handshake records (before its
    /// ChangeCipherSpec).
    fn tls12_handshake_types(flight: &[u8]) -> Vec<u8> {
        let mut types = Vec::new();
        let mut at = 0;
        while at + 5 <= flight.len() {
            let (kind, len) = (
                flight[at],
                usize::from(u16::from_be_bytes([flight[at + 3], flight[at + 4]])),
            );
            if kind != 22 {
                break;
            }
            let mut record = &flight[at + 5..at + 5 + len];
            while record.len() >= 4 {
                types.push(record[0]);
                let body = usize::from(record[1]) << 16
                    | usize::from(record[2]) << 8
                    | usize::from(record[3]);
                record = &record[4 + body..];
            }
            at += 5 + len;
        }
        types
    }

    #[test]
    fn tls12_data_connections_resume_the_control_ticket_a_thousand_times_and_issue_none() {
        const NEW_SESSION_TICKET: u8 = 4;
        let now = Instant::now();
        let pki = TestPki::new();
        let keyring = crate::tls::SessionKeyring::default();
        let tls = crate::tls::SessionTls::new(
            &pki.server_config(TLS12),
            &keyring,
            crate::tls::ResumptionScope::Session,
        )
        .unwrap();
        let client_config = pki.client_config(TLS12);
        // The control connection: a full handshake that issues the session's ticket (with its second flight).
        let control = server_channel(now, &tls.control, ResumptionPolicy::Off);
        let mut control = End::new(control, vec![], false);
        let mut client = End::new(client_channel(now, &client_config), vec![], false);
        run(now, &mut control, &mut client);
        assert!(!client.ch.tls_info().unwrap().resumed);
        let mut wire = Vec::new();
        // Each data connection resumes with that same ticket and gets no new one: an OpenSSL client in
        // client-cache mode (PHP) would otherwise drop the session it holds without learning the new one.
        // The server's first flight to a ClientHello.
        let flight = |server: &mut DataChannel, client: &mut DataChannel, wire: &mut Vec<u8>| {
            wire.clear();
            let _ = client.poll_transmit(wire);
            assert_eq!(server.handle_input(now, wire), wire.len());
            wire.clear();
            let _ = server.poll_transmit(wire);
        };
        for i in 0..1000 {
            let (config, binding) = tls.data_connection(Some(rustls::ProtocolVersion::TLSv1_2));
            let mut server = server_channel(now, &config, ResumptionPolicy::Required);
            server.bind(binding);
            let mut client = client_channel(now, &client_config);
            flight(&mut server, &mut client, &mut wire);
            assert!(
                !tls12_handshake_types(&wire).contains(&NEW_SESSION_TICKET),
                "connection {i}"
            );
            let mut server = End::new(server, pattern(10), true);
            let mut client = End::new(client, vec![], false);
            assert_eq!(client.ch.handle_input(now, &wire), wire.len());
            run(now, &mut server, &mut client);
            assert!(
                server.finished().unwrap().tls.as_ref().unwrap().resumed,
                "connection {i}"
            );
            assert_eq!(client.received.len(), 10);
        }
        // What the assertion above looks for is there when a ticket is issued (the parser sees it).
        let (config, _) = tls.data_connection(None);
        let mut server = server_channel(now, &config, ResumptionPolicy::Required);
        let mut client = client_channel(now, &client_config);
        flight(&mut server, &mut client, &mut wire);
        assert!(tls12_handshake_types(&wire).contains(&NEW_SESSION_TICKET));
    }

    #[test]
    fn backpressure_on_received_plaintext() {
        let now = Instant::now();
        let (mut server, mut client) = established_pair(now, DataOptions::default(), 0);
        assert_eq!(server.ch.write(&pattern(200_000)), 200_000);
        let mut wire = Vec::new();
        let _ = server.ch.poll_transmit(&mut wire);
        assert!(wire.len() > 200_000);
        let first = client.ch.handle_input(now, &wire);
        assert!(first < wire.len() && first > 16 * 1024, "took {first}");
        assert_eq!(
            client.ch.handle_input(now, &wire[first..]),
            0,
            "full until consumed"
        );
        let mut at = first;
        let mut received = Vec::new();
        loop {
            let chunk = client.ch.read_chunk();
            if chunk.is_empty() {
                if at == wire.len() {
                    break;
                }
                let n = client.ch.handle_input(now, &wire[at..]);
                assert!(n > 0);
                at += n;
                continue;
            }
            assert!(chunk.len() <= 16 * 1024);
            received.extend_from_slice(chunk);
            let n = chunk.len();
            client.ch.consume(n);
        }
        assert_eq!(received, pattern(200_000));
        assert_eq!(client.ch.bytes_received(), 200_000);
    }

    #[test]
    fn send_buffer_is_bounded() {
        let now = Instant::now();
        let options = DataOptions {
            send_buffer_limit: 100_000,
            ..DataOptions::default()
        };
        let (mut server, _) = established_pair(now, options, 0);
        let big = pattern(1_000_000);
        let first = server.ch.write(&big);
        assert!((64 * 1024..=100_000).contains(&first), "took {first}");
        assert_eq!(server.ch.write(&big[first..]), 0);
        let mut wire = Vec::new();
        assert!(server.ch.poll_transmit(&mut wire) > first);
        assert!(server.ch.write(&big[first..]) > 64 * 1024);
    }

    #[test]
    fn handshake_timeout_fires_once() {
        let now = Instant::now();
        let options = DataOptions {
            handshake_timeout: Duration::from_secs(5),
            ..DataOptions::default()
        };
        let pki = TestPki::new();
        let tls = DataTls::Server {
            config: pki.server_config(TLS13),
            resumption: ResumptionPolicy::Required,
        };
        let mut ch = DataChannel::new(now, DataProtection::Tls(tls), options).unwrap();
        assert!(ch.is_handshaking());
        let deadline = now + Duration::from_secs(5);
        assert_eq!(ch.poll_timeout(), Some(deadline));
        ch.handle_timeout(deadline - Duration::from_millis(1));
        assert_eq!(ch.poll_event(), None);
        assert_eq!(ch.poll_timeout(), Some(deadline));
        ch.handle_timeout(deadline);
        assert_eq!(
            ch.poll_event(),
            Some(DataEvent::Failed(DataError::HandshakeTimeout))
        );
        assert_eq!(ch.poll_timeout(), None);
        ch.handle_timeout(deadline + Duration::from_secs(1));
        assert_eq!(ch.poll_event(), None);
        assert!(ch.is_closed());

        // A finished handshake clears the deadline.
        let (server, client) = established_pair(now, DataOptions::default(), 1);
        assert_eq!(server.ch.poll_timeout(), None);
        assert_eq!(client.ch.poll_timeout(), None);
    }

    #[test]
    fn eof_during_handshake_fails() {
        let now = Instant::now();
        let pki = TestPki::new();
        let mut client = client_channel(now, &pki.client_config(TLS13));
        client.handle_eof(now);
        assert_eq!(
            client.poll_event(),
            Some(DataEvent::Failed(DataError::EofDuringHandshake))
        );
        assert_eq!(client.poll_event(), None);
    }

    #[test]
    fn finish_before_handshake_sends_close_notify_after_it() {
        let now = Instant::now();
        let pki = TestPki::new();
        let config = pki.client_config(TLS12);
        let bound = control_session(&pki.server_config(TLS12), &config);
        let mut server = End::new(
            server_channel(now, &bound, ResumptionPolicy::Required),
            vec![],
            true,
        );
        server.ch.finish(now); // an empty file, before the handshake
        let mut client = End::new(client_channel(now, &config), vec![], false);
        run(now, &mut client, &mut server);
        assert!(client.finished().unwrap().clean_close);
        assert!(server.finished().unwrap().clean_close);
        assert_eq!(client.received.len(), 0);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic_and_errors_stick(chunks in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000), 1..8),
            tls_header in proptest::prelude::any::<bool>()) {
            let now = Instant::now();
            let pki = TestPki::new();
            let mut ch = server_channel(now, &pki.server_config(TLS13), ResumptionPolicy::Required);
            let mut failed = 0;
            let mut out = Vec::new();
            for (i, mut chunk) in chunks.into_iter().enumerate() {
                if tls_header && i == 0 && chunk.len() >= 3 {
                    chunk[..3].copy_from_slice(&[22, 3, 1]); // looks like a handshake record
                }
                let n = ch.handle_input(now, &chunk);
                proptest::prop_assert!(n <= chunk.len());
                let _ = ch.poll_transmit(&mut out);
                let _ = ch.read_chunk();
                while let Some(event) = ch.poll_event() {
                    if matches!(event, DataEvent::Failed(_)) { failed += 1; }
                }
                if ch.error().is_some() {
                    proptest::prop_assert_eq!(ch.handle_input(now, &chunk), chunk.len());
                }
            }
            ch.handle_eof(now);
            while let Some(event) = ch.poll_event() {
                if matches!(event, DataEvent::Failed(_)) { failed += 1; }
            }
            proptest::prop_assert!(failed <= 1);
            proptest::prop_assert_eq!(failed, 1, "random bytes never complete a handshake");
        }
    }
}
