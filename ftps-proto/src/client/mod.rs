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
//! Data connections never pass through the session. For a transfer it requests
//! [`RequestKind::ConnectData`] (passive: connect there, answer [`Outcome::DataConnected`]) or
//! [`RequestKind::Listen`] (active: bind, answer [`Outcome::Listening`]), then, once the server's 1xx reply
//! arrived, [`RequestKind::DriveData`] with an owned [`DataChannel`] in the TLS client role (RFC 4217 section 10:
//! the client is always the TLS client). The frontend pumps it and answers [`Outcome::DataFinished`] (for
//! listings [`Outcome::ListingReceived`] with the bytes). A setup that fails is answered
//! [`Outcome::DataConnectFailed`]: the session then aborts the transfer itself. A transfer completes only when
//! both the data channel finished and the final reply (226/250) arrived, in either order.
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
mod event;
mod op;
mod request;
mod site_to_site;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;

use crate::codec::{AuthMechanism, Command, EpsvArgument, ProtectionLevel, Reply, ReplyParser};
use crate::codec::{RepresentationType, Timeval};
use crate::data::{
    DataChannel, DataError, DataFlow, DataOptions, DataProtection, DataReport, DataTls,
};
use crate::tls::{ReadState, TlsConn};

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

/// One FTPS control connection, client side. See the [module docs](self) for the drive loop.
pub struct ClientSession {
    config: ClientSessionConfig,
    /// The caller's TLS config with a resumption store private to this session (control and data share it).
    tls_config: Option<Arc<rustls::ClientConfig>>,
    server_name: ServerName<'static>,
    peer: SocketAddr,
    phase: Phase,
    tls: Option<TlsConn>,
    replies: ReplyParser,
    /// Bytes for the control socket not yet handed out.
    out: Vec<u8>,
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
    /// `CCC` was accepted: waiting for the server's close_notify before going on in plaintext.
    ccc_closing: bool,
    /// Around `CCC`: the TLS record being collected (it may arrive split across reads).
    ccc_record: Vec<u8>,
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
        let tls_config = match (&config.security, &config.tls) {
            (Security::Plain, _) => None,
            (_, None) => {
                return Err(SessionError::Config(
                    "TLS requested without a rustls::ClientConfig",
                ))
            }
            // One resumption store per control connection, shared by its data connections and by nobody else
            // (DESIGN.md "Data-channel TLS is bound to its control session").
            (_, Some(base)) => Some(crate::tls::connection_bound_client_config(base)),
        };
        let mut session = Self {
            tls_config,
            server_name,
            peer,
            phase: Phase::Greeting,
            tls: None,
            replies: ReplyParser::default(),
            out: Vec::new(),
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
            ccc_closing: false,
            ccc_record: Vec::new(),
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
        self.tls.as_ref().and_then(TlsConn::info)
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
        while consumed < input.len() && self.error.is_none() && self.phase != Phase::Closed {
            let rest = input.get(consumed..).unwrap_or_default();
            // Around CCC, TLS gets whole records one at a time, so the bytes after the server's close_notify
            // stay plaintext for the reply parser (RFC 4217 section 12.3). A record split across reads is
            // collected first: taking nothing would stall a frontend that offers only what it has.
            let record: Vec<u8>;
            let whole_record = self.ccc_pending() && self.tls.is_some();
            let rest = if whole_record {
                let taken = collect_tls_record(&mut self.ccc_record, rest);
                consumed += taken;
                if self.ccc_record.is_empty()
                    || first_tls_record(&self.ccc_record).len() != self.ccc_record.len()
                {
                    if taken == 0 {
                        break;
                    }
                    continue;
                }
                record = std::mem::take(&mut self.ccc_record);
                &record[..]
            } else {
                rest
            };
            if let Some(tls) = self.tls.as_mut() {
                let n = match tls.read_tls(rest) {
                    Ok(n) if whole_record && n != rest.len() => {
                        // One record never meets TLS backpressure: the plaintext is drained after each.
                        self.fail(SessionError::Tls(rustls::Error::General(
                            "control TLS record not taken".to_owned(),
                        )));
                        break;
                    }
                    Ok(_) if whole_record => 0,
                    Ok(n) => n,
                    Err(e) => {
                        self.fail(SessionError::Tls(e));
                        break;
                    }
                };
                consumed += n;
                let progressed = self.drain_tls_plaintext(now);
                if self.ccc_closing
                    && self
                        .tls
                        .as_mut()
                        .is_some_and(|t| t.read_state() != ReadState::Open)
                {
                    // The server's close_notify: the control connection is plaintext from the next byte on.
                    self.tls = None;
                    self.ccc_closing = false;
                    self.reply_deadline = None;
                    self.advance(now);
                    continue;
                }
                if n == 0 && !progressed && !whole_record {
                    break;
                }
            } else {
                let (n, reply) = self.replies.decode(rest);
                consumed += n;
                match reply {
                    Some(Ok(reply)) => self.on_reply(now, reply),
                    Some(Err(e)) => self.fail(e.into()),
                    None if n == 0 => break,
                    None => {}
                }
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
        if let Some(tls) = self.tls.as_mut() {
            let result = tls.handle_eof();
            // A final reply may still sit in TLS' plaintext buffer.
            self.drain_tls_plaintext(now);
            if let Err(e) = result {
                if self.phase != Phase::Closed {
                    self.fail(SessionError::Tls(e));
                    return;
                }
            }
        }
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
                _ if self.ccc_closing => SessionError::Timeout("CCC close_notify"),
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
    /// operation already ended (aborted, or the session failed), or one that does not fit, is ignored.
    ///
    /// A transfer completes when its data side is answered and the final reply arrived, in either order.
    pub fn complete(&mut self, now: Instant, id: ReqId, outcome: Outcome) {
        let Some(running) = self.current.as_mut() else {
            return;
        };
        let t = &mut running.transfer;
        if t.setup_request == Some(id) {
            t.setup_request = None;
            match outcome {
                // The 1xx came first: the channel goes out now.
                Outcome::DataConnected if t.preliminary => self.drive_data(now),
                Outcome::DataConnected => {}
                Outcome::Listening(addr) => self.listening(now, addr),
                Outcome::DataConnectFailed(e) => self.data_connect_failed(now, e),
                _ => {}
            }
        } else if t.drive_request == Some(id) {
            t.drive_request = None;
            match outcome {
                Outcome::DataFinished(result) => self.data_finished(now, result),
                Outcome::ListingReceived { data, bytes } => {
                    if bytes.len() > self.config.max_listing_bytes {
                        t.listing_overflow = true;
                    } else {
                        t.listing = bytes;
                    }
                    self.data_finished(now, data);
                }
                Outcome::DataConnectFailed(e) => self.data_connect_failed(now, e),
                _ => {}
            }
        }
    }

    /// Tells the session today's date (UTC).    /// Tells the session today's date (UTC). `ls`-style `LIST` lines omit the year of recent files; it is
    /// inferred from this date. The session never reads a clock itself.
    pub fn set_today(&mut self, today: Timeval) {
        self.today = today;
    }

    // ----- outputs -----

    /// Appends bytes for the control socket to `buf`. Returns how many were appended (0: nothing to send).
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut Vec<u8>) -> usize {
        let mut n = self.out.len();
        buf.append(&mut self.out);
        if let Some(tls) = self.tls.as_mut() {
            n += tls.write_tls_into(buf);
        }
        n
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

    // ----- internals: control connection -----

    fn start_tls(&mut self) -> Result<(), SessionError> {
        let Some(config) = self.tls_config.clone() else {
            return Err(SessionError::Config(
                "TLS requested without a rustls::ClientConfig",
            ));
        };
        let tls = TlsConn::client(config, self.server_name.clone()).map_err(SessionError::Tls)?;
        self.tls = Some(tls);
        Ok(())
    }

    /// Moves received plaintext from TLS to the reply parser; returns whether anything happened.
    fn drain_tls_plaintext(&mut self, now: Instant) -> bool {
        let mut progressed = false;
        loop {
            if self.error.is_some() || self.phase == Phase::Closed {
                return progressed;
            }
            let Some(tls) = self.tls.as_mut() else {
                return progressed;
            };
            if self.phase == Phase::Handshake && !tls.is_handshaking() {
                self.on_control_tls_ready(now);
                progressed = true;
                continue;
            }
            let chunk = tls.plaintext_chunk();
            if chunk.is_empty() {
                if tls.read_state() != ReadState::Open
                    && self.awaiting != Some(Step::Quit)
                    && !self.ccc_closing
                {
                    self.fail(SessionError::ConnectionClosed);
                }
                return progressed;
            }
            let (n, reply) = self.replies.decode(chunk);
            tls.consume_plaintext(n);
            progressed = true;
            match reply {
                Some(Ok(reply)) => self.on_reply(now, reply),
                Some(Err(e)) => self.fail(e.into()),
                None if n == 0 => return progressed,
                None => {}
            }
        }
    }

    fn on_control_tls_ready(&mut self, now: Instant) {
        self.phase = Phase::Ready;
        self.reply_deadline = None;
        let tls = self.tls_info();
        if let Some(tls) = &tls {
            self.trace(|| Trace::ControlTls(tls.clone()));
        }
        if let Some(greeting) = self.greeting.take() {
            self.events.push_back(Event::Connected { greeting, tls });
        }
        self.pump(now);
    }

    /// Queues a trace entry when tracing is on; `entry` is built only then.
    fn trace(&mut self, entry: impl FnOnce() -> Trace) {
        if self.config.trace {
            self.events.push_back(Event::Trace(entry()));
        }
    }

    /// Queues one command line for the control connection and records what it waits for.
    fn send(&mut self, now: Instant, command: &Command, step: Step) {
        self.trace(|| Trace::sent(command));
        let line = format!("{command}\r\n");
        match self.tls.as_mut() {
            Some(tls) => {
                // The control connection has no send limit: one command line at a time.
                let _ = tls.write_plaintext(line.as_bytes());
            }
            None => self.out.extend_from_slice(line.as_bytes()),
        }
        self.awaiting = Some(step);
        self.reply_deadline = Some(now + self.config.reply_timeout);
    }

    /// Every reply goes through here, in order.
    fn on_reply(&mut self, now: Instant, reply: Reply) {
        self.trace(|| Trace::Received(reply.clone()));
        if reply.code.get() == 421 {
            // RFC 959 section 4.2: 421 may answer any command and means the server is closing.
            self.fail(SessionError::ServiceClosing(reply));
            return;
        }
        let Some(step) = self.awaiting else {
            self.events.push_back(Event::UnsolicitedReply(reply));
            return;
        };
        if let Step::Abort(state) = step {
            self.on_abort_reply(now, state, reply);
            return;
        }
        if reply.code.is_preliminary() {
            match step {
                // 120: "ready in nnn minutes"; the 220 follows.
                Step::Greeting => {}
                Step::Transfer => self.on_transfer_started(now),
                _ => self.fail(SessionError::UnexpectedReply {
                    reply,
                    to: step.verb(),
                }),
            }
            return;
        }
        self.awaiting = None;
        self.reply_deadline = None;
        match step {
            Step::Greeting => self.on_greeting(now, reply),
            Step::Auth { ssl } => self.on_auth(now, ssl, reply),
            Step::Quit => self.close_after_quit(Some(reply)),
            Step::Transfer => self.on_transfer_reply(now, reply),
            _ => self.on_op_reply(now, step, reply),
        }
    }

    fn on_greeting(&mut self, now: Instant, reply: Reply) {
        if reply.code.get() != 220 {
            self.fail(SessionError::GreetingRefused(reply));
            return;
        }
        match self.config.security {
            Security::Explicit { .. } => {
                self.greeting = Some(reply);
                self.phase = Phase::Auth;
                self.send(
                    now,
                    &Command::Auth(AuthMechanism::Tls),
                    Step::Auth { ssl: false },
                );
            }
            Security::Implicit | Security::Plain => {
                self.phase = Phase::Ready;
                let tls = self.tls_info();
                self.events.push_back(Event::Connected {
                    greeting: reply,
                    tls,
                });
                self.pump(now);
            }
        }
    }

    fn on_auth(&mut self, now: Instant, ssl: bool, reply: Reply) {
        let allow_ssl = matches!(
            self.config.security,
            Security::Explicit {
                allow_auth_ssl: true
            }
        );
        match reply.code.get() {
            // RFC 4217 section 4: 234 and the TLS handshake starts; the bytes after the reply belong to TLS.
            234 => {
                if let Err(e) = self.start_tls() {
                    self.fail(e);
                    return;
                }
                self.phase = Phase::Handshake;
                self.reply_deadline = Some(now + self.config.reply_timeout);
            }
            _ if !ssl && allow_ssl && reply.code.is_negative() => {
                self.send(
                    now,
                    &Command::Auth(AuthMechanism::Ssl),
                    Step::Auth { ssl: true },
                );
            }
            _ => self.fail(SessionError::AuthRefused(reply)),
        }
    }

    fn close_after_quit(&mut self, reply: Option<Reply>) {
        self.reply_deadline = None;
        self.awaiting = None;
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
        }
        if let Some(running) = self.current.take() {
            let result = match reply {
                Some(reply) if reply.code.is_completion() => Ok(Output::Done(reply)),
                Some(reply) => Err(OpError::Refused(reply)),
                None => Err(OpError::Session(SessionError::ConnectionClosed)),
            };
            self.complete_op(running.id, result);
        }
        self.phase = Phase::Closed;
        while let Some((id, _)) = self.queue.pop_front() {
            self.complete_op(id, Err(OpError::Session(SessionError::Closed)));
        }
        self.events.push_back(Event::Closed);
    }

    /// Fails the session for good: every pending operation completes with the error.
    fn fail(&mut self, error: SessionError) {
        if self.error.is_some() {
            return;
        }
        self.error = Some(error.clone());
        self.phase = Phase::Closed;
        self.awaiting = None;
        self.reply_deadline = None;
        if let Some(running) = self.current.take() {
            self.complete_op(running.id, Err(OpError::Session(error.clone())));
        }
        while let Some((id, _)) = self.queue.pop_front() {
            self.complete_op(id, Err(OpError::Session(error.clone())));
        }
        self.events.push_back(Event::Failed(error));
    }

    fn complete_op(&mut self, op: OpId, result: Result<Output, OpError>) {
        self.events.push_back(Event::Completed { op, result });
    }

    // ----- internals: operations -----

    /// Starts the next queued operation when the connection is free.
    fn pump(&mut self, now: Instant) {
        while self.phase == Phase::Ready
            && self.current.is_none()
            && self.awaiting.is_none()
            && self.error.is_none()
        {
            let Some((id, op)) = self.queue.pop_front() else {
                return;
            };
            let plan = self.plan(&op);
            self.current = Some(Running {
                id,
                op,
                plan,
                features: ServerFeatures::default(),
                transfer: TransferState::default(),
            });
            self.advance(now);
        }
    }

    /// The commands an operation starts with.
    fn plan(&self, op: &Operation) -> VecDeque<Step> {
        let mut plan = VecDeque::new();
        match op {
            Operation::Login(_) => plan.push_back(Step::User),
            Operation::Rename { .. } => plan.extend([Step::Rnfr, Step::Rnto]),
            Operation::Quit => plan.push_back(Step::Quit),
            Operation::SetDataProtection(true)
                if self.tls_config.is_some() && !self.protection_settled =>
            {
                plan.extend([Step::Pbsz, Step::Single]);
            }
            Operation::SiteToSiteTransfer(_) => {
                if !self.type_image {
                    plan.push_back(Step::Type);
                }
                plan.push_back(Step::Transfer);
            }
            op if op.is_transfer() => {
                if self.tls_config.is_some() && !self.protection_settled {
                    plan.extend([Step::Pbsz, Step::Prot]);
                }
                if !self.type_image {
                    plan.push_back(Step::Type);
                }
                match self.config.data_mode {
                    DataConnectionMode::Passive if self.epsv_refused => plan.push_back(Step::Pasv),
                    DataConnectionMode::Passive => plan.push_back(Step::Epsv),
                    DataConnectionMode::Active => plan.extend([Step::Listen, Step::Eprt]),
                }
                if let Operation::Retrieve {
                    offset: Some(_), ..
                }
                | Operation::StoreAt { .. } = op
                {
                    plan.push_back(Step::Rest);
                }
                plan.push_back(Step::Transfer);
            }
            _ => plan.push_back(Step::Single),
        }
        plan
    }

    /// Sends the next command of the current operation, or completes it when none is left.
    fn advance(&mut self, now: Instant) {
        let Some(running) = self.current.as_mut() else {
            return;
        };
        if running.transfer.abort_requested {
            self.finish_aborted();
            self.pump(now);
            return;
        }
        let Some(step) = running.plan.pop_front() else {
            let result = self.output_without_reply();
            self.finish_op(result);
            self.pump(now);
            return;
        };
        let command = match self.command_for(step) {
            Ok(Some(command)) => command,
            Ok(None) => return, // waiting for the frontend (Listen)
            Err(e) => {
                self.finish_op(Err(e));
                self.pump(now);
                return;
            }
        };
        // A caller's argument with a line break would put a second command on the wire (RFC 959 section 4.1:
        // one command per line); refuse what does not go out as exactly this one line.
        if !command.is_encodable() {
            self.finish_op(Err(OpError::InvalidOperation(
                "argument cannot be sent as one command line",
            )));
            self.pump(now);
            return;
        }
        self.send(now, &command, step);
    }

    /// The command a step sends; `None` for a step that waits for the frontend.
    fn command_for(&mut self, step: Step) -> Result<Option<Command>, OpError> {
        let Some(running) = self.current.as_mut() else {
            return Err(OpError::InvalidOperation("no operation running"));
        };
        let features = self.features.clone().unwrap_or_default();
        let command = match (step, &running.op) {
            (Step::User, Operation::Login(c)) => Command::User(c.user.clone()),
            (Step::Pass, Operation::Login(c)) => Command::Pass(c.password.clone()),
            (Step::Acct, Operation::Login(c)) => match &c.account {
                Some(account) => Command::Acct(account.clone()),
                None => {
                    return Err(OpError::InvalidOperation(
                        "the server asks for an account (332)",
                    ))
                }
            },
            (Step::Pbsz, _) => Command::Pbsz(0),
            (Step::Prot, _) => Command::Prot(ProtectionLevel::Private),
            (Step::Ccc, _) => Command::Ccc,
            (Step::Feat, _) => Command::Feat,
            (Step::OptsUtf8, _) => Command::Opts {
                name: "UTF8".to_string(),
                value: Some("ON".to_string()),
            },
            (Step::Type, _) => Command::Type(RepresentationType::Image),
            (Step::Rnfr, Operation::Rename { from, .. }) => Command::Rnfr(from.clone()),
            (Step::Rnto, Operation::Rename { to, .. }) => Command::Rnto(to.clone()),
            (Step::Epsv, _) => Command::Epsv(EpsvArgument::Default),
            (Step::Pasv, _) => Command::Pasv,
            (Step::Listen, _) => {
                running.transfer.awaiting_listen = true;
                let id = ReqId(self.next_request);
                self.next_request += 1;
                running.transfer.setup_request = Some(id);
                self.requests.push_back(Request {
                    id,
                    op: running.id,
                    kind: RequestKind::Listen,
                });
                return Ok(None);
            }
            (Step::Eprt, _) => match self.data_addr {
                Some(addr) if self.eprt_refused => match addr {
                    SocketAddr::V4(v4) => Command::Port(v4),
                    SocketAddr::V6(_) => {
                        return Err(OpError::InvalidOperation("server refused EPRT for IPv6"))
                    }
                },
                Some(addr) => Command::Eprt(addr),
                None => return Err(OpError::InvalidOperation("no listening address")),
            },
            (Step::Port, _) => match self.data_addr {
                Some(SocketAddr::V4(v4)) => Command::Port(v4),
                _ => {
                    return Err(OpError::InvalidOperation(
                        "PORT needs an IPv4 listening address",
                    ))
                }
            },
            (
                Step::Rest,
                Operation::Retrieve {
                    offset: Some(offset),
                    ..
                }
                | Operation::StoreAt { offset, .. },
            ) => Command::Rest(*offset),
            (Step::Transfer, op) => match op {
                Operation::List(path) if features.mlsd => Command::Mlsd(path.clone()),
                Operation::List(path) => {
                    running.transfer.used_list = true;
                    Command::List(path.clone())
                }
                Operation::NameList(path) => Command::Nlst(path.clone()),
                Operation::Retrieve { path, .. } => Command::Retr(path.clone()),
                Operation::Store(path) | Operation::StoreAt { path, .. } => {
                    Command::Stor(path.clone())
                }
                Operation::Append(path) => Command::Appe(path.clone()),
                Operation::StoreUnique(hint) => Command::Stou(hint.clone()),
                Operation::SiteToSiteTransfer(SiteToSiteCommand::Retrieve(path)) => {
                    Command::Retr(path.clone())
                }
                Operation::SiteToSiteTransfer(SiteToSiteCommand::Store(path)) => {
                    Command::Stor(path.clone())
                }
                _ => return Err(OpError::InvalidOperation("not a transfer")),
            },
            (Step::Single, op) => match op {
                Operation::Pwd => Command::Pwd,
                Operation::Cwd(p) => Command::Cwd(p.clone()),
                Operation::Cdup => Command::Cdup,
                Operation::Mkdir(p) => Command::Mkd(p.clone()),
                Operation::Rmdir(p) => Command::Rmd(p.clone()),
                Operation::Delete(p) => Command::Dele(p.clone()),
                Operation::Size(p) => Command::Size(p.clone()),
                Operation::Mdtm(p) => Command::Mdtm(p.clone()),
                Operation::SetModified { path, time } => Command::Mfmt {
                    time: *time,
                    path: path.clone(),
                },
                Operation::Raw(c) => c.clone(),
                Operation::Noop => Command::Noop,
                Operation::SetDataProtection(true) => Command::Prot(ProtectionLevel::Private),
                Operation::SetDataProtection(false) => Command::Prot(ProtectionLevel::Clear),
                Operation::SiteToSiteTlsClient(on) => Command::Sscn(Some(*on)),
                Operation::SiteToSitePassive { tls_client: true } => Command::Cpsv,
                Operation::SiteToSitePassive { tls_client: false } => Command::Pasv,
                Operation::SiteToSitePort(SocketAddr::V4(v4)) => Command::Port(*v4),
                Operation::SiteToSitePort(addr) => Command::Eprt(*addr),
                _ => {
                    return Err(OpError::InvalidOperation(
                        "no single command for this operation",
                    ))
                }
            },
            (Step::Quit, _) => Command::Quit,
            _ => return Err(OpError::InvalidOperation("step does not fit the operation")),
        };
        Ok(Some(command))
    }

    /// The result of an operation whose plan ran out (login after `TYPE I`).
    fn output_without_reply(&mut self) -> Result<Output, OpError> {
        match self.current.as_ref() {
            Some(running) if matches!(running.op, Operation::Login(_)) => {
                Ok(Output::LoggedIn(running.features.clone()))
            }
            _ => Err(OpError::InvalidOperation(
                "operation ended without a result",
            )),
        }
    }

    /// Ends the current transfer after `ABOR` (or before any command went out).
    fn finish_aborted(&mut self) {
        let error = match self.current.as_mut() {
            Some(running) => running.transfer.abort_error(),
            None => OpError::Aborted,
        };
        self.finish_op(Err(error));
    }

    /// Ends the current operation with `result`.
    fn finish_op(&mut self, result: Result<Output, OpError>) {
        self.data_addr = None;
        if let Some(running) = self.current.take() {
            self.complete_op(running.id, result);
        }
    }

    /// The final reply to a non-transfer command of the current operation.
    fn on_op_reply(&mut self, now: Instant, step: Step, reply: Reply) {
        let code = reply.code.get();
        let Some(running) = self.current.as_mut() else {
            // A reply for a command nobody runs cannot happen (awaiting is only set by running ops).
            self.events.push_back(Event::UnsolicitedReply(reply));
            return;
        };
        if running.transfer.abort_requested {
            self.finish_aborted();
            self.pump(now);
            return;
        }
        match step {
            Step::User | Step::Pass | Step::Acct => match code {
                230 | 202 | 232 => self.logged_in(),
                331 if step == Step::User => running.plan.push_front(Step::Pass),
                332 if step != Step::Acct => running.plan.push_front(Step::Acct),
                _ => return self.refuse(now, reply),
            },
            Step::Pbsz | Step::Prot => {
                if reply.code.is_completion() {
                    if step == Step::Prot {
                        self.data_private = true;
                        self.protection_settled = true;
                    }
                } else if self.config.allow_clear_data {
                    // RFC 4217 section 9: data connections stay in the clear; the caller opted in.
                    running.plan.retain(|s| *s != Step::Prot);
                    self.data_private = false;
                    self.protection_settled = true;
                } else {
                    self.fail(SessionError::DataProtectionRefused(reply));
                    return;
                }
            }
            // CCC refused: the control connection simply stays protected.
            Step::Ccc if reply.code.is_completion() => {
                self.clear_command_channel(now);
                // The next command goes out in plaintext, after the server's close_notify.
                return;
            }
            Step::Ccc => {}
            Step::Feat => {
                let features = parse_features(&reply);
                if features.utf8 {
                    running.plan.push_front(Step::OptsUtf8);
                }
                running.features = features.clone();
                self.features = Some(features);
            }
            // Servers that always speak UTF-8 answer 202 or 5xx: either way the session goes on.
            Step::OptsUtf8 => {}
            Step::Type => {
                if reply.code.is_completion() {
                    self.type_image = true;
                } else {
                    return self.refuse(now, reply);
                }
            }
            // RFC 959 section 4.1.3: RNFR and REST are answered with 350 when the next command may follow.
            Step::Rnfr | Step::Rest if code != 350 => return self.refuse(now, reply),
            Step::Rnfr | Step::Rest => {}
            Step::Epsv => {
                if code == 229 {
                    match reply.parse_epsv() {
                        Some(port) => {
                            self.open_data_connection(SocketAddr::new(self.peer.ip(), port))
                        }
                        None => return self.malformed(now, "229 without a port"),
                    }
                } else if reply.code.is_permanent_negative() {
                    // RFC 2428 section 3: a server without EPSV; fall back to PASV for the rest of the session.
                    self.epsv_refused = true;
                    running.plan.push_front(Step::Pasv);
                } else {
                    return self.refuse(now, reply);
                }
            }
            Step::Pasv => {
                if code != 227 {
                    return self.refuse(now, reply);
                }
                match reply.parse_pasv() {
                    Some(addr) => {
                        let addr = if self.config.trust_pasv_address {
                            SocketAddr::V4(addr)
                        } else {
                            // The 227 address is ignored by default: the server is where the control
                            // connection goes (defeats FTP bounce and broken NAT rewriting).
                            SocketAddr::new(self.peer.ip(), addr.port())
                        };
                        self.open_data_connection(addr);
                    }
                    None => return self.malformed(now, "227 without an address"),
                }
            }
            Step::Eprt | Step::Port if reply.code.is_completion() => {}
            // RFC 2428 section 2: a server without EPRT; fall back to PORT (IPv4 only) for the session.
            Step::Eprt
                if reply.code.is_permanent_negative()
                    && !self.eprt_refused
                    && matches!(self.data_addr, Some(SocketAddr::V4(_))) =>
            {
                self.eprt_refused = true;
                running.plan.push_front(Step::Port);
            }
            Step::Eprt | Step::Port => return self.refuse(now, reply),
            Step::Single | Step::Rnto => {
                if let Operation::Raw(Command::Type(t)) = &running.op {
                    if reply.code.is_completion() {
                        self.type_image = *t == RepresentationType::Image;
                    }
                }
                if let Operation::SetDataProtection(private) = running.op {
                    if reply.code.is_completion() {
                        self.data_private = private;
                        self.protection_settled = true;
                    }
                }
                let result = single_output(&running.op, reply);
                self.finish_op(result);
                self.pump(now);
                return;
            }
            // Handled before: greeting, auth, quit, transfer, abort, listen.
            _ => {}
        }
        self.advance(now);
    }

    fn logged_in(&mut self) {
        let tls = self.tls_config.is_some();
        let ccc = self.config.clear_command_channel && self.tls.is_some();
        let settled = self.protection_settled;
        let Some(running) = self.current.as_mut() else {
            return;
        };
        running.plan.clear();
        if tls && !settled {
            running.plan.extend([Step::Pbsz, Step::Prot]);
        }
        if ccc {
            running.plan.push_back(Step::Ccc);
        }
        running.plan.extend([Step::Feat, Step::Type]);
    }

    /// RFC 4217 section 12.3: after 200 to `CCC` both ends close TLS and the control connection goes on in the
    /// clear. The session sends its close_notify and continues in plaintext.
    /// The session sends its close_notify at once and keeps reading TLS records until the server's close_notify;
    /// commands wait until then.
    fn clear_command_channel(&mut self, now: Instant) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = tls.write_tls_into(&mut self.out);
            self.ccc_closing = true;
            self.reply_deadline = Some(now + self.config.reply_timeout);
        }
    }

    /// Whether TLS input must be fed record by record: `CCC` is on the wire or its TLS shutdown runs.
    fn ccc_pending(&self) -> bool {
        self.awaiting == Some(Step::Ccc) || self.ccc_closing
    }

    fn open_data_connection(&mut self, addr: SocketAddr) {
        self.data_addr = Some(addr);
        let Some(op) = self.current.as_ref().map(|r| r.id) else {
            return;
        };
        let id = self.request(op, RequestKind::ConnectData { addr });
        if let Some(running) = self.current.as_mut() {
            running.transfer.setup_request = Some(id);
        }
    }

    /// The operation failed with a negative reply; the session goes on.
    fn refuse(&mut self, now: Instant, reply: Reply) {
        self.finish_op(Err(OpError::Refused(reply)));
        self.pump(now);
    }

    fn malformed(&mut self, now: Instant, why: &str) {
        self.finish_op(Err(OpError::MalformedReply(why.to_string())));
        self.pump(now);
    }

    /// Active mode: the frontend listens for the current transfer's data connection on `addr`.
    fn listening(&mut self, now: Instant, addr: SocketAddr) {
        if self.error.is_some() || self.awaiting.is_some() {
            return;
        }
        let Some(running) = self.current.as_mut().filter(|r| r.transfer.awaiting_listen) else {
            return;
        };
        running.transfer.awaiting_listen = false;
        self.data_addr = Some(addr);
        self.advance(now);
    }

    /// The current transfer's data channel finished or failed.
    fn data_finished(&mut self, now: Instant, result: Result<DataReport, DataError>) {
        let Some(running) = self.current.as_mut().filter(|r| r.op.is_transfer()) else {
            return;
        };
        if running.transfer.data_ended() {
            return;
        }
        if self.config.trace {
            if let Ok(report) = &result {
                self.events.push_back(Event::Trace(Trace::DataConnection {
                    tls: report.tls.clone(),
                    bytes: report.bytes_received + report.bytes_sent,
                }));
            }
        }
        running.transfer.data = Some(result);
        if running.transfer.abort_requested {
            return;
        }
        if running.transfer.final_reply.is_some() {
            self.complete_transfer(now);
        } else if self.awaiting == Some(Step::Transfer) {
            // The data side is done: the final reply is due now.
            self.reply_deadline = Some(now + self.config.reply_timeout);
        }
    }

    /// The frontend could not set up the current transfer's data connection. A connect failure is not a TLS
    /// failure: the operation completes with [`OpError::DataConnect`]. The transfer command, when it is out, is
    /// aborted (`ABOR`, so the server stops waiting for the connection); the session goes on.
    fn data_connect_failed(&mut self, now: Instant, error: DataConnectError) {
        let Some(running) = self.current.as_mut().filter(|r| r.op.is_transfer()) else {
            return;
        };
        if running.transfer.data_ended() {
            return;
        }
        running.transfer.connect_failure = Some(error);
        if running.transfer.awaiting_listen {
            // Nothing is on the wire for this transfer yet.
            running.transfer.awaiting_listen = false;
            self.finish_aborted();
            self.pump(now);
            return;
        }
        let op = running.id;
        self.abort(now, op);
    }

    /// Queues a request for the frontend.
    fn request(&mut self, op: OpId, kind: RequestKind) -> ReqId {
        let id = ReqId(self.next_request);
        self.next_request += 1;
        self.requests.push_back(Request { id, op, kind });
        id
    }

    // ----- internals: transfers -----

    /// 1xx to the transfer command: hand the frontend its data channel once the connection is set up.
    fn on_transfer_started(&mut self, now: Instant) {
        let Some(running) = self.current.as_mut() else {
            return;
        };
        if running.transfer.preliminary {
            // A second 1xx (e.g. 125 after 150) changes nothing.
            return;
        }
        running.transfer.preliminary = true;
        if matches!(running.op, Operation::SiteToSiteTransfer(_)) {
            // The data connection runs between two servers: nothing to hand out, and no deadline while they
            // copy (the final reply comes when they are done).
            self.reply_deadline = None;
            return;
        }
        if running.transfer.setup_request.is_some() {
            // Still connecting: the channel goes out with the answer.
            return;
        }
        self.drive_data(now);
    }

    /// Hands the frontend the current transfer's data channel ([`RequestKind::DriveData`]), its handshake timed
    /// from `now`.
    fn drive_data(&mut self, now: Instant) {
        let Some(running) = self.current.as_ref() else {
            return;
        };
        let op = running.id;
        let direction = if running.op.is_upload() {
            Direction::Upload
        } else {
            Direction::Download
        };
        let payload = match running.op {
            Operation::List(_) | Operation::NameList(_) => Payload::Listing {
                max_bytes: self.config.max_listing_bytes,
            },
            _ => Payload::File,
        };
        if running.transfer.data_ended() || running.transfer.drive_request.is_some() {
            // The data connection already failed (keep waiting for the final reply), or is handed out.
            return;
        }
        // The transfer may run for a long time: no reply deadline until the data side finishes.
        self.reply_deadline = None;
        let channel = match self.data_channel(now, direction) {
            Ok(channel) => channel,
            Err(e) => {
                if let Some(running) = self.current.as_mut() {
                    running.transfer.data = Some(Err(e));
                }
                self.reply_deadline = Some(now + self.config.reply_timeout);
                return;
            }
        };
        let kind = RequestKind::DriveData {
            channel: Box::new(channel),
            direction,
            payload,
        };
        let id = self.request(op, kind);
        if let Some(running) = self.current.as_mut() {
            running.transfer.drive_request = Some(id);
        }
    }

    /// A data channel for the current transfer, its handshake timed from `now` (the 1xx reply). TLS client role
    /// (RFC 4217 section 10) with this session's private resumption store, so it resumes the control session.
    fn data_channel(&self, now: Instant, direction: Direction) -> Result<DataChannel, DataError> {
        let protection = match (&self.tls_config, self.data_private) {
            (Some(config), true) => DataProtection::Tls(DataTls::Client {
                config: config.clone(),
                server_name: self.server_name.clone(),
            }),
            _ => DataProtection::Clear,
        };
        let options = DataOptions {
            flow: match direction {
                Direction::Upload => DataFlow::Send,
                Direction::Download => DataFlow::Receive,
            },
            handshake_timeout: self.config.data_handshake_timeout,
            ..DataOptions::default()
        };
        DataChannel::new(now, protection, options)
    }

    /// The final reply to the transfer command.
    fn on_transfer_reply(&mut self, now: Instant, reply: Reply) {
        let Some(running) = self.current.as_mut() else {
            self.events.push_back(Event::UnsolicitedReply(reply));
            return;
        };
        if !reply.code.is_completion() {
            // 425/426/450/451/5xx: the transfer failed; the frontend drops the data channel.
            return self.refuse(now, reply);
        }
        if matches!(running.op, Operation::SiteToSiteTransfer(_)) {
            self.finish_op(Ok(Output::Done(reply)));
            self.pump(now);
            return;
        }
        let preliminary = running.transfer.preliminary;
        running.transfer.final_reply = Some(reply);
        if !preliminary || running.transfer.data_ended() {
            // 226 without 150 (an empty listing, some servers): no data channel was handed out.
            self.complete_transfer(now);
        }
    }

    /// Both the final reply and the data report are in (or no data connection was used).
    fn complete_transfer(&mut self, now: Instant) {
        let require_close_notify = self.config.require_close_notify && self.data_private;
        let Some(mut running) = self.current.take() else {
            return;
        };
        self.data_addr = None;
        let t = &mut running.transfer;
        let Some(reply) = t.final_reply.take() else {
            self.current = Some(running);
            return;
        };
        if let Some(e) = t.connect_failure.take() {
            self.complete_op(running.id, Err(OpError::DataConnect(e)));
            self.pump(now);
            return;
        }
        let report = match t.data.take() {
            Some(Ok(report)) => report,
            Some(Err(e)) => {
                self.complete_op(running.id, Err(OpError::Data(e)));
                self.pump(now);
                return;
            }
            None => DataReport::default(),
        };
        let download = !running.op.is_upload();
        let clean_close = report.clean_close || !t.preliminary;
        let result = if download && t.preliminary && require_close_notify && !report.clean_close {
            Err(OpError::Truncated)
        } else if t.listing_overflow {
            Err(OpError::ListingTooLarge)
        } else {
            match &running.op {
                Operation::List(_) => Ok(Output::Listing(parse_listing(
                    &t.listing,
                    t.used_list,
                    self.today,
                ))),
                Operation::NameList(_) => Ok(Output::Names(parse_names(&t.listing))),
                _ => Ok(Output::Transfer(TransferReport {
                    bytes: if download {
                        report.bytes_received
                    } else {
                        report.bytes_sent
                    },
                    resumed: report.tls.as_ref().is_some_and(|tls| tls.resumed),
                    clean_close,
                    tls: report.tls.clone(),
                    reply,
                })),
            }
        };
        self.complete_op(running.id, result);
        self.pump(now);
    }

    /// Replies while settling an `ABOR`.
    fn on_abort_reply(&mut self, now: Instant, state: AbortState, reply: Reply) {
        let code = reply.code.get();
        if reply.code.is_preliminary() {
            // A late 150 for the aborted transfer: the final reply still follows.
            return;
        }
        let absorbed = match self.current.as_mut() {
            Some(running) => {
                running.transfer.abort_replies = running.transfer.abort_replies.saturating_add(1);
                running.transfer.abort_replies
            }
            None => MAX_ABORT_REPLIES,
        };
        if absorbed > MAX_ABORT_REPLIES {
            self.fail(SessionError::AbortUnresolved);
            return;
        }
        let next = match state {
            AbortState::AwaitTransferReply if reply.code.is_negative() => {
                Some(AbortState::AwaitAborReply)
            }
            // 226/225 alone: either the transfer's reply (ABOR's follows) or ABOR's only reply. Fence it.
            AbortState::AwaitTransferReply => Some(AbortState::Fence),
            AbortState::AwaitAborReply => None,
            AbortState::Fence if code == 200 => None,
            AbortState::Fence => Some(AbortState::Fence),
        };
        match next {
            Some(AbortState::Fence) if state != AbortState::Fence => {
                self.send(now, &Command::Noop, Step::Abort(AbortState::Fence));
                self.reply_deadline = Some(now + self.config.abort_timeout);
            }
            Some(next) => self.awaiting = Some(Step::Abort(next)),
            None => {
                self.awaiting = None;
                self.reply_deadline = None;
                self.finish_aborted();
                self.pump(now);
            }
        }
    }
}

/// Moves bytes of `input` into `record` up to the end of one TLS record (5-byte header, RFC 8446 section
/// 5.1); returns how many it moved.
fn collect_tls_record(record: &mut Vec<u8>, input: &[u8]) -> usize {
    let header = 5usize.saturating_sub(record.len()).min(input.len());
    record.extend_from_slice(input.get(..header).unwrap_or_default());
    let Some(&[hi, lo]) = record.get(3..5) else {
        return header;
    };
    let total = 5 + usize::from(u16::from_be_bytes([hi, lo]));
    let rest = input.get(header..).unwrap_or_default();
    let body = total.saturating_sub(record.len()).min(rest.len());
    record.extend_from_slice(rest.get(..body).unwrap_or_default());
    header + body
}

/// The first TLS record of `input` (5-byte header, RFC 8446 section 5.1), or nothing while it is incomplete.
pub(crate) fn first_tls_record(input: &[u8]) -> &[u8] {
    let len = match input.get(3..5) {
        Some(&[hi, lo]) => 5 + usize::from(u16::from_be_bytes([hi, lo])),
        _ => return &[],
    };
    input.get(..len).unwrap_or(&[])
}

/// Why a raw command is refused: it would need a data connection or switch protocols.
fn raw_refusal(command: &Command) -> Option<&'static str> {
    match command {
        Command::Retr(_)
        | Command::Stor(_)
        | Command::Stou(_)
        | Command::Appe(_)
        | Command::List(_)
        | Command::Nlst(_)
        | Command::Mlsd(_) => Some("transfer commands need the typed transfer operations"),
        Command::Auth(_) | Command::Ccc | Command::Rein | Command::Prot(_) | Command::Pbsz(_) => {
            Some("security state is managed by the session")
        }
        Command::Abor => Some("use ClientSession::abort"),
        Command::Quit => Some("use Operation::Quit"),
        Command::Pasv | Command::Epsv(_) | Command::Port(_) | Command::Eprt(_) | Command::Cpsv => {
            Some("data connections are managed by the session")
        }
        _ => None,
    }
}

/// The output of a one-command operation from its final reply.
fn single_output(op: &Operation, reply: Reply) -> Result<Output, OpError> {
    let code = reply.code.get();
    match op {
        Operation::Raw(_) => Ok(Output::Done(reply)),
        _ if !reply.code.is_completion() => Err(OpError::Refused(reply)),
        Operation::Pwd | Operation::Mkdir(_) if code == 257 => match reply.parse_pathname() {
            Some(path) => Ok(Output::Directory(path)),
            None => Err(OpError::MalformedReply(
                "257 without a quoted path".to_string(),
            )),
        },
        Operation::Pwd => Err(OpError::MalformedReply(
            "PWD answered without 257".to_string(),
        )),
        Operation::Mkdir(path) => Ok(Output::Directory(path.clone())),
        Operation::SiteToSitePassive { .. } => match reply.parse_pasv() {
            Some(addr) => Ok(Output::PassiveAddress(addr)),
            None => Err(OpError::MalformedReply(
                "227 without an address".to_string(),
            )),
        },
        Operation::Size(_) => match reply.parse_file_size() {
            Some(size) => Ok(Output::Size(size)),
            _ => Err(OpError::MalformedReply(
                "SIZE answered without a size".to_string(),
            )),
        },
        Operation::Mdtm(_) => match reply.parse_modification_time() {
            Some(time) => Ok(Output::Modified(time)),
            _ => Err(OpError::MalformedReply(
                "MDTM answered without a time-val".to_string(),
            )),
        },
        _ => Ok(Output::Done(reply)),
    }
}

/// What the session uses of a `FEAT` reply (RFC 2389 section 3.2); a server without `FEAT` offers nothing.
fn parse_features(reply: &Reply) -> ServerFeatures {
    let Some(features) = reply.parse_feat() else {
        return ServerFeatures::default();
    };
    let rest_stream = features
        .params_all("REST")
        .any(|p| p.trim().eq_ignore_ascii_case("STREAM"));
    ServerFeatures {
        mlsd: features.has("MLST") || features.has("MLSD"),
        size: features.has("SIZE"),
        mdtm: features.has("MDTM"),
        mfmt: features.has("MFMT"),
        rest_stream,
        utf8: features.has("UTF8"),
        epsv: features.has("EPSV"),
        advertised: features,
    }
}

fn parse_listing(bytes: &[u8], list_format: bool, today: Timeval) -> Vec<crate::codec::Entry> {
    let text = String::from_utf8_lossy(bytes);
    if list_format {
        crate::codec::parse_list(&text, today)
    } else {
        crate::codec::parse_mlsd(&text)
    }
}

fn parse_names(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}
