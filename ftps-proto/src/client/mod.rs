//! The FTPS client engine: [`ClientSession`], a pure state machine for one control connection.
//!
//! # Method taxonomy (after quinn-proto's `Connection`)
//!
//! - getters (`&self`): [`ClientSession::error`], [`ClientSession::features`], [`ClientSession::is_idle`], ...
//! - inputs: [`ClientSession::handle_input`] (bytes from the control socket), [`ClientSession::handle_eof`],
//!   [`ClientSession::handle_timeout`];
//! - mutators: [`ClientSession::submit`] (a typed [`Operation`]), [`ClientSession::abort`], and
//!   [`ClientSession::complete`], which answers a [`Request`] by its [`ReqId`] (the server engine's shape);
//! - outputs, all `#[must_use]`: [`ClientSession::poll_transmit`] (bytes for the control socket),
//!   [`ClientSession::poll_request`] ([`Request`]s: data connections to open, listeners to bind, channels to
//!   run; each answered exactly once), [`ClientSession::poll_event`] ([`Event`]s, notices that need no answer:
//!   connected, completed operations, traces), [`ClientSession::poll_timeout`].
//!
//! # The drive loop
//!
//! After every input or mutation, drain every `poll_*` until empty; then wait for the earliest of control socket
//! readiness, a request finishing, or `poll_timeout()`. The session never reads a clock: time comes in as
//! `now`. [`ClientSession::handle_timeout`] clears or reschedules every expired timer, so the same deadline is
//! never returned twice.
//!
//! Data connections never pass through the session. For a transfer it requests [`RequestKind::ConnectData`]
//! (passive: connect there, answer [`Outcome::DataConnected`]) or [`RequestKind::Listen`] (active: bind, answer
//! [`Outcome::Listening`]), then, once the server's 1xx reply arrived, [`RequestKind::DriveData`] with an owned
//! [`DataChannel`](crate::data::DataChannel) in the TLS client role (RFC 4217 section 10: the client is always
//! the TLS client). The frontend pumps it and answers [`Outcome::DataFinished`] (for listings
//! [`Outcome::ListingReceived`] with the bytes). A setup that fails is answered [`Outcome::DataConnectFailed`]:
//! the session then aborts the transfer itself. A transfer completes only when both the data channel finished
//! and the final reply (226/250) arrived, in either order.
//!
//! `examples/tokio_client.rs` in the `ftps-client-blocking` crate is this loop on tokio, in under 250 lines.
//!
//! # Example
//!
//! A scripted plain-FTP server, driven by hand:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use ftps_proto::client::{ClientSession, ClientSessionConfig, Credentials, Event, Operation, Output};
//!
//! let now = Instant::now();
//! let peer: SocketAddr = "192.0.2.1:21".parse().unwrap();
//! let server_name = "ftp.example.com".try_into().unwrap();
//! let mut session = ClientSession::new(ClientSessionConfig::plain(), server_name, peer, now).unwrap();
//! let login = session.submit(now, Operation::Login(Credentials::new("alice", "secret")));
//!
//! // The server's side of the conversation: each reply answers the command the client just sent.
//! let script: &[(&str, &str)] = &[
//!     ("", "220 Welcome\r\n"),
//!     ("USER alice\r\n", "331 Password please\r\n"),
//!     ("PASS secret\r\n", "230-Welcome\r\n230 Logged in\r\n"),
//!     ("FEAT\r\n", "211-Features:\r\n MDTM\r\n SIZE\r\n211 End\r\n"),
//!     ("TYPE I\r\n", "200 Binary\r\n"),
//! ];
//! let mut wire = Vec::new();
//! for (expected, reply) in script {
//!     wire.clear();
//!     while session.poll_transmit(&mut wire) > 0 {}
//!     assert_eq!(String::from_utf8_lossy(&wire), *expected);
//!     let consumed = session.handle_input(now, reply.as_bytes());
//!     assert_eq!(consumed, reply.len());
//! }
//! let mut logged_in = false;
//! while let Some(event) = session.poll_event() {
//!     if let Event::Completed { op, result: Ok(Output::LoggedIn(features)) } = event {
//!         assert_eq!(op, login);
//!         assert!(features.size && features.mdtm && !features.mlsd);
//!         logged_in = true;
//!     }
//! }
//! assert!(logged_in);
//! ```

mod config;
mod control;
mod event;
mod op;
mod operations;
mod request;
mod site_to_site;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
mod transfer;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;

use crate::codec::{Command, Reply, ReplyParser, Timeval};
use crate::control_channel::ControlChannel;
use crate::data::{DataError, DataReport};
use operations::raw_refusal;

pub use config::{ClientSessionConfig, DataConnectionMode, Security};
pub use event::{DataConnectError, Direction, Event, SessionError, Trace};
pub use op::{
    Credentials, OpError, OpId, Operation, Output, ServerFeatures, SiteToSiteCommand,
    TransferReport,
};
pub use request::{Outcome, Payload, ReqId, Request, RequestKind};
pub use site_to_site::{
    bytes_in_reply, Side, SiteToSiteError, SiteToSiteOptions, SiteToSitePlan, SiteToSiteProtection,
    TlsClientMethod,
};

/// Whether `first`, the first byte a server sent in answer to a TLS ClientHello, starts a TLS record (a
/// handshake or an alert): the sign of an implicit FTPS port. An explicit-FTPS client whose greeting timed out
/// can send an implicit session's ClientHello ([`Security::Implicit`]: it is in `poll_transmit` at once) and ask
/// this of the answer, to tell its user which port it reached.
pub fn is_tls_answer(first: u8) -> bool {
    crate::tls::starts_handshake_or_alert(first)
}

/// Replies the session absorbs while settling an `ABOR` before it gives up.
const MAX_ABORT_REPLIES: u8 = 4;

/// Where the control connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the 220 greeting (over TLS in implicit mode).
    Greeting,
    /// `AUTH` sent, waiting for 234.
    Auth,
    /// 234 received; the control TLS handshake runs.
    Handshake,
    /// Operations may run.
    Ready,
    /// `QUIT` answered or the session failed: nothing more happens.
    Closed,
}

/// The command on the wire, which decides what replies it can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Greeting,
    Auth {
        ssl: bool,
    },
    User,
    Pass,
    Acct,
    Pbsz,
    Prot,
    Ccc,
    Feat,
    OptsUtf8,
    Type,
    /// The single command of a one-command operation.
    Single,
    Rnfr,
    Rnto,
    Epsv,
    Pasv,
    /// Not a command: waiting for the answer to [`RequestKind::Listen`].
    Listen,
    Eprt,
    Port,
    Rest,
    /// `RETR`, `STOR`, `LIST`, ...: 1xx, then a final reply.
    Transfer,
    /// `ABOR` (and maybe a `NOOP` fence) after a transfer command.
    Abort(AbortState),
    Quit,
}

impl Step {
    fn verb(self) -> &'static str {
        match self {
            Step::Greeting => "greeting",
            Step::Auth { .. } => "AUTH",
            Step::User => "USER",
            Step::Pass => "PASS",
            Step::Acct => "ACCT",
            Step::Pbsz => "PBSZ",
            Step::Prot => "PROT",
            Step::Ccc => "CCC",
            Step::Feat => "FEAT",
            Step::OptsUtf8 => "OPTS",
            Step::Type => "TYPE",
            Step::Single => "command",
            Step::Rnfr => "RNFR",
            Step::Rnto => "RNTO",
            Step::Epsv => "EPSV",
            Step::Pasv => "PASV",
            Step::Listen => "listen",
            Step::Eprt => "EPRT",
            Step::Port => "PORT",
            Step::Rest => "REST",
            Step::Transfer => "transfer",
            Step::Abort(_) => "ABOR",
            Step::Quit => "QUIT",
        }
    }
}

/// Settling an `ABOR` (RFC 959 section 4.1.3): 426 then 226, 226 alone, or 225.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AbortState {
    /// The transfer command's own final reply has not arrived yet.
    AwaitTransferReply,
    /// The transfer's final reply is in; the next reply answers `ABOR`.
    AwaitAborReply,
    /// A lone 226/225 left it open whether one more reply follows: a `NOOP` was sent and every reply up to its
    /// 200 belongs to the `ABOR` (the server answers commands in order).
    Fence,
}

/// The data side of a running transfer.
#[derive(Debug, Default)]
struct TransferState {
    /// The server accepted with 1xx and the channel was handed out.
    preliminary: bool,
    /// What the frontend reported about the data channel.
    data: Option<Result<DataReport, DataError>>,
    /// The frontend could not set up the data connection (connect, listen or accept failed).
    connect_failure: Option<DataConnectError>,
    /// The transfer command's final positive reply.
    final_reply: Option<Reply>,
    /// Listing bytes received so far.
    listing: Vec<u8>,
    /// The listing exceeded `max_listing_bytes`.
    listing_overflow: bool,
    /// The caller asked for `ABOR`.
    abort_requested: bool,
    /// Replies absorbed while settling `ABOR`.
    abort_replies: u8,
    /// `LIST` was used because `MLSD` is not offered.
    used_list: bool,
    /// Active mode: [`RequestKind::Listen`] was sent and not answered yet.
    awaiting_listen: bool,
    /// The unanswered [`RequestKind::ConnectData`] or [`RequestKind::Listen`].
    setup_request: Option<ReqId>,
    /// The unanswered [`RequestKind::DriveData`].
    drive_request: Option<ReqId>,
    /// The data connection's TLS 1.3 handshake had no ticket of this session to offer: it cannot resume.
    without_ticket: bool,
}

impl TransferState {
    /// Whether the data side has ended, one way or another.
    fn data_ended(&self) -> bool {
        self.data.is_some() || self.connect_failure.is_some()
    }

    /// How an aborted transfer ends: with the data connection's setup failure when that caused the abort.
    fn abort_error(&mut self) -> OpError {
        match self.connect_failure.take() {
            Some(e) => OpError::DataConnect(e),
            None => OpError::Aborted,
        }
    }
}

/// The operation being worked on.
#[derive(Debug)]
struct Running {
    id: OpId,
    op: Operation,
    /// Commands still to send, in order.
    plan: VecDeque<Step>,
    /// Features learnt during login.
    features: ServerFeatures,
    transfer: TransferState,
}

/// What [`ClientSession::poll_output`] asks of the frontend next (the server's is
/// [`crate::server::Output`]; here [`Output`] is already an operation's result).
#[derive(Debug)]
#[must_use]
pub enum SessionOutput {
    /// This many control-connection bytes were appended to the buffer: send them.
    Transmit(usize),
    /// An operation's progress or result, a trace line, or the session's end.
    Event(Event),
    /// A request to answer with [`ClientSession::complete`].
    Request(Request),
    /// Nothing more for now: wait for input, a finished request, or this deadline (then
    /// [`ClientSession::handle_timeout`]); `None` means no timer is running.
    Wait(Option<Instant>),
}

/// One FTPS control connection, client side. See the [module docs](self) for the drive loop.
pub struct ClientSession {
    config: ClientSessionConfig,
    /// The caller's TLS config with a resumption store private to this session (control and data share it).
    tls_config: Option<Arc<rustls::ClientConfig>>,
    /// That store's TLS 1.3 ticket count: whether a data connection can resume a TLS 1.3 control session.
    tickets: Option<Arc<crate::tls::ConnectionTickets>>,
    server_name: ServerName<'static>,
    peer: SocketAddr,
    phase: Phase,
    /// The control connection's transport: plain, TLS, plain again after `CCC`.
    control: ControlChannel,
    replies: ReplyParser,
    events: VecDeque<Event>,
    requests: VecDeque<Request>,
    next_request: u64,
    queue: VecDeque<(OpId, Operation)>,
    current: Option<Running>,
    /// The command whose reply is awaited.
    awaiting: Option<Step>,
    /// The greeting, kept for [`Event::Connected`] in explicit mode.
    greeting: Option<Reply>,
    next_op: u64,
    features: Option<ServerFeatures>,
    /// `PROT P` is in force: data connections use TLS.
    data_private: bool,
    /// `PBSZ`/`PROT` were negotiated (or refused and accepted) already.
    protection_settled: bool,
    /// `TYPE I` is in force.
    type_image: bool,
    /// The server refused `EPSV` once: use `PASV` for the rest of the session (RFC 2428 section 3).
    epsv_refused: bool,
    /// The server refused `EPRT` once: use `PORT` for the rest of the session.
    eprt_refused: bool,
    /// The address of the data connection of the current transfer (passive) or listener (active).
    data_addr: Option<SocketAddr>,
    reply_deadline: Option<Instant>,
    error: Option<SessionError>,
    /// Today's date (UTC) as the frontend last told it, for `LIST` lines that omit the year.
    today: Timeval,
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("phase", &self.phase)
            .field("peer", &self.peer)
            .field("awaiting", &self.awaiting)
            .field("current", &self.current.as_ref().map(|r| r.id))
            .field("queued", &self.queue.len())
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// A session for a control connection to `peer`, just opened at `now`.
    ///
    /// `server_name` is what the server's certificate is verified against; `peer` is the control connection's
    /// remote address, used for passive data connections. In implicit mode the TLS ClientHello is ready in
    /// [`ClientSession::poll_transmit`] at once.
    pub fn new(
        config: ClientSessionConfig,
        server_name: ServerName<'static>,
        peer: SocketAddr,
        now: Instant,
    ) -> Result<Self, SessionError> {
        let (tls_config, tickets) = match (&config.security, &config.tls) {
            (Security::Plain, _) => (None, None),
            (_, None) => {
                return Err(SessionError::Config(
                    "TLS requested without a rustls::ClientConfig",
                ))
            }
            // One resumption store per control connection, shared by its data connections and by nobody else
            // (DESIGN.md "Data-channel TLS is bound to its control session").
            (_, Some(base)) => {
                let (config, tickets) = crate::tls::connection_bound_client_config(base);
                (Some(config), Some(tickets))
            }
        };
        let mut session = Self {
            tls_config,
            tickets,
            server_name,
            peer,
            phase: Phase::Greeting,
            control: ControlChannel::plain(),
            replies: ReplyParser::default(),
            events: VecDeque::new(),
            requests: VecDeque::new(),
            next_request: 0,
            queue: VecDeque::new(),
            current: None,
            awaiting: Some(Step::Greeting),
            greeting: None,
            next_op: 0,
            features: None,
            data_private: false,
            protection_settled: false,
            type_image: false,
            epsv_refused: false,
            eprt_refused: false,
            data_addr: None,
            reply_deadline: Some(now + config.reply_timeout),
            error: None,
            today: Timeval::UNIX_EPOCH,
            config,
        };
        if session.config.security == Security::Implicit {
            session.start_tls()?;
        }
        Ok(session)
    }

    // ----- getters -----

    /// The fatal error, once the session failed. Sticky.
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }

    /// The server's features, once `FEAT` was answered during login.
    pub fn features(&self) -> Option<&ServerFeatures> {
        self.features.as_ref()
    }

    /// Whether the control connection is up and no operation is running or queued.
    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Ready
            && self.current.is_none()
            && self.queue.is_empty()
            && self.awaiting.is_none()
    }

    /// The control connection's remote address, as given to [`ClientSession::new`].
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Whether the session ended (closed with `QUIT` or failed): the frontend may close the socket.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether data connections are protected with TLS (`PROT P` in force).
    pub fn data_protected(&self) -> bool {
        self.data_private
    }

    /// Whether the server refused `EPSV` and `PASV` is used instead for the rest of the session.
    pub fn uses_pasv(&self) -> bool {
        self.epsv_refused
    }

    /// The control connection's TLS parameters, once its handshake finished.
    pub fn tls_info(&self) -> Option<crate::TlsInfo> {
        self.control.tls_info()
    }

    /// The operation currently running, if any.
    pub fn current_op(&self) -> Option<OpId> {
        self.current.as_ref().map(|r| r.id)
    }

    // ----- inputs -----

    /// Feeds bytes read from the control socket. Returns how many were consumed; offer the rest again after
    /// draining the outputs (only TLS backpressure leaves bytes unconsumed).
    ///
    /// After a `234` reply to `AUTH`, the bytes that follow it go to TLS, never to the reply parser.
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize {
        let mut consumed = 0;
        while self.error.is_none() && self.phase != Phase::Closed {
            let taken = self
                .control
                .handle_input(input.get(consumed..).unwrap_or_default());
            consumed += taken;
            self.read_control(now);
            if taken == 0 || consumed >= input.len() {
                break;
            }
        }
        if self.error.is_some() || self.phase == Phase::Closed {
            // A failed or closed session discards what it is given: nothing can be read by the wrong command.
            return input.len();
        }
        consumed
    }

    /// The control socket reached EOF.
    pub fn handle_eof(&mut self, now: Instant) {
        if self.error.is_some() || self.phase == Phase::Closed {
            return;
        }
        self.control.handle_eof();
        // A final reply may still be buffered (in TLS' plaintext, or undecoded).
        self.read_control(now);
        if self.phase == Phase::Closed || self.error.is_some() {
            return;
        }
        if self.awaiting == Some(Step::Quit) {
            // The server closed right after (or instead of) its 221: the session is over either way.
            self.close_after_quit(None);
            return;
        }
        self.fail(SessionError::ConnectionClosed);
    }

    /// Handles every deadline at or before `now`. A handled deadline is never returned again by
    /// [`ClientSession::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.reply_deadline.is_some_and(|d| d <= now) {
            self.reply_deadline = None;
            let error = match self.awaiting {
                _ if self.control.is_clearing() => SessionError::Timeout("CCC close_notify"),
                Some(Step::Abort(_)) => SessionError::AbortUnresolved,
                Some(step) => SessionError::Timeout(step.verb()),
                None => SessionError::Timeout("reply"),
            };
            self.fail(error);
        }
    }

    // ----- mutators -----

    /// Queues an operation. It runs after those submitted before it; its result arrives as exactly one
    /// [`Event::Completed`] with the returned id.
    ///
    /// `now` starts the reply timeout when the operation's first command goes out at once.
    pub fn submit(&mut self, now: Instant, op: Operation) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        if let Some(e) = &self.error {
            let e = e.clone();
            self.complete_op(id, Err(OpError::Session(e)));
            return id;
        }
        if self.phase == Phase::Closed {
            self.complete_op(id, Err(OpError::Session(SessionError::Closed)));
            return id;
        }
        if let Operation::Raw(command) = &op {
            if let Some(why) = raw_refusal(command) {
                self.complete_op(id, Err(OpError::InvalidOperation(why)));
                return id;
            }
        }
        self.queue.push_back((id, op));
        self.pump(now);
        id
    }

    /// Aborts transfer `op` with `ABOR` (RFC 959 section 4.1.3); the frontend should drop its data channel.
    ///
    /// The operation then completes with [`OpError::Aborted`] once the server settled the abort (426 then 226,
    /// 226 alone, or 225). If the replies do not settle within the abort timeout, the session fails with
    /// [`SessionError::AbortUnresolved`] rather than risk reading a reply for the wrong command. Returns false
    /// when `op` is not a running transfer.
    pub fn abort(&mut self, now: Instant, op: OpId) -> bool {
        let Some(running) = self.current.as_mut() else {
            return false;
        };
        if running.id != op || !running.op.is_transfer() || running.transfer.abort_requested {
            return false;
        }
        running.transfer.abort_requested = true;
        let final_seen = running.transfer.final_reply.is_some();
        match self.awaiting {
            Some(Step::Transfer) => {
                self.send(
                    now,
                    &Command::Abor,
                    Step::Abort(AbortState::AwaitTransferReply),
                );
                self.reply_deadline = Some(now + self.config.abort_timeout);
            }
            None if final_seen => {
                // 226 is in, the data channel still runs: the server answers ABOR with 225 or 226.
                self.send(now, &Command::Abor, Step::Abort(AbortState::AwaitAborReply));
                self.reply_deadline = Some(now + self.config.abort_timeout);
            }
            None => {
                // Waiting for `listening()`: nothing is on the wire yet.
                self.finish_aborted();
                self.pump(now);
            }
            // A preparatory command (EPSV, REST, ...) is in flight: stop when its reply arrives.
            Some(_) => {}
        }
        true
    }

    /// Answers request `id` (see [`RequestKind`] for which [`Outcome`]s fit). An answer to a request whose
    /// operation already ended (aborted, or the session failed), a second answer, and one that does not fit the
    /// request are ignored.
    ///
    /// A transfer completes when its data side is answered and the final reply arrived, in either order.
    pub fn complete(&mut self, now: Instant, id: ReqId, outcome: Outcome) {
        let Some(running) = self.current.as_mut() else {
            return;
        };
        let t = &mut running.transfer;
        let (setup, drive) = (t.setup_request == Some(id), t.drive_request == Some(id));
        match outcome {
            Outcome::DataConnected if setup => {
                t.setup_request = None;
                // The 1xx came first: the channel goes out now.
                if t.preliminary {
                    self.drive_data(now);
                }
            }
            Outcome::Listening(addr) if setup => {
                t.setup_request = None;
                self.listening(now, addr);
            }
            Outcome::DataConnectFailed(e) if setup || drive => {
                (t.setup_request, t.drive_request) = (None, None);
                self.data_connect_failed(now, e);
            }
            Outcome::DataFinished(result) if drive => {
                t.drive_request = None;
                self.data_finished(now, result);
            }
            Outcome::ListingReceived { data, bytes } if drive => {
                t.drive_request = None;
                if bytes.len() > self.config.max_listing_bytes {
                    t.listing_overflow = true;
                } else {
                    t.listing = bytes;
                }
                self.data_finished(now, data);
            }
            // Another request's id, one answered already, or an answer that does not fit it: ignored, and a
            // request that got a misfitting answer stays open.
            _ => {}
        }
    }

    /// Tells the session today's date (UTC). `ls`-style `LIST` lines omit the year of recent files; it is
    /// inferred from this date. The session never reads a clock itself.
    pub fn set_today(&mut self, today: Timeval) {
        self.today = today;
    }

    // ----- outputs -----

    /// The one drain: the next thing the frontend must do, until [`SessionOutput::Wait`]. It yields what
    /// [`poll_transmit`](Self::poll_transmit), [`poll_event`](Self::poll_event),
    /// [`poll_request`](Self::poll_request) and [`poll_timeout`](Self::poll_timeout) give, in that order,
    /// so a loop over it cannot forget one of them.
    pub fn poll_output(&mut self, buf: &mut Vec<u8>) -> SessionOutput {
        let n = self.poll_transmit(buf);
        if n > 0 {
            return SessionOutput::Transmit(n);
        }
        if let Some(event) = self.poll_event() {
            return SessionOutput::Event(event);
        }
        match self.poll_request() {
            Some(request) => SessionOutput::Request(request),
            None => SessionOutput::Wait(self.poll_timeout()),
        }
    }

    /// Appends bytes for the control socket to `buf`. Returns how many were appended (0: nothing to send).
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> usize {
        self.control.poll_transmit(buf)
    }

    /// The next request for the frontend: answer it with [`ClientSession::complete`].
    #[must_use]
    pub fn poll_request(&mut self) -> Option<Request> {
        self.requests.pop_front()
    }

    /// The next event for the frontend.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest deadline; call [`ClientSession::handle_timeout`] when it passes.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.reply_deadline
    }
}
