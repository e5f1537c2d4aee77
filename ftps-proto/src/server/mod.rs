//! The server session: the pure FTPS server state machine of DESIGN.md ("The engine's contract").
//!
//! A [`ServerSession`] is one control connection. It never touches a clock, socket, file or thread: bytes come in
//! through [`ServerSession::handle_input`], time through the `now` arguments, the outside world's answers through
//! [`ServerSession::complete`]; bytes, work and log events go out through the `poll_*` methods.
//!
//! # Method taxonomy
//!
//! * getters (`&self`): [`ServerSession::is_closed`], [`ServerSession::error`], [`ServerSession::peer`],
//!   [`ServerSession::cwd`], [`ServerSession::user`], [`ServerSession::tls_active`],
//!   [`ServerSession::data_peer_allowed`];
//! * inputs: [`ServerSession::handle_input`], [`ServerSession::handle_eof`], [`ServerSession::handle_timeout`];
//! * mutator: [`ServerSession::complete`] (answer a [`Request`]);
//! * outputs (all `#[must_use]`): [`ServerSession::poll_transmit`] (control-connection bytes, TLS ciphertext once
//!   TLS is up), [`ServerSession::poll_work`] ([`Request`]s to answer, [`Notice`]s to act on),
//!   [`ServerSession::poll_event`] (for the log), [`ServerSession::poll_timeout`].
//!
//! # The drive loop
//!
//! After **every** input or mutation, drain every `poll_*` until it is empty: send what `poll_transmit` gave,
//! start every request (answer each exactly once, now or later) and act on every notice (never answered), log
//! every event, and remember `poll_timeout()`. Then wait for the earliest of: control
//! socket readable, a request completed, or the timeout; feed that in and repeat. Once [`ServerSession::is_closed`]
//! is true and `poll_transmit` gives nothing more, close the control socket. `handle_input` returns how much it
//! took; offer the rest again after the next drain (it takes less only when its bounded queues are full).
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use ftps_proto::server::{ServerSession, SessionConfig};
//!
//! let config = SessionConfig { require_tls_control: false, require_tls_data: false, ..Default::default() };
//! let peer: SocketAddr = "192.0.2.7:50000".parse().unwrap();
//! let local: SocketAddr = "192.0.2.1:21".parse().unwrap();
//! let now = Instant::now();
//! let mut session = ServerSession::new(config, peer, local, now);
//!
//! let mut wire = Vec::new();
//! let _ = session.poll_transmit(&mut wire);
//! assert_eq!(wire, b"220 ftps-rs ready\r\n");
//!
//! let input = b"SYST\r\nQUIT\r\n";
//! let consumed = session.handle_input(now, input);
//! assert_eq!(consumed, input.len());
//! wire.clear();
//! let _ = session.poll_transmit(&mut wire);
//! assert_eq!(wire, b"215 UNIX Type: L8\r\n221 Goodbye\r\n");
//! while let Some(_event) = session.poll_event() {} // log them
//! assert!(session.poll_work().is_none());
//! assert!(session.is_closed());
//! ```
//!
//! # Ordering (RFC 959 section 4.1.3)
//!
//! One command runs at a time. While a command waits for its request, or a failed login waits out its delay,
//! later commands queue in order (bounded; when the queue is full, `handle_input` takes no more bytes). During a
//! transfer (from the transfer command to its final reply) `ABOR` and `STAT` act at once, as RFC 959 section
//! 4.1.3 asks of them (they are the commands a client sends *during* a transfer); all other commands queue and
//! run after the transfer's final reply. `QUIT` queues too: RFC 959 section 4.1.1 says the server closes after
//! the transfer's result reply, and commands the client sent before `QUIT` still run first, so the replies do
//! not depend on how the input was chunked.
//!
//! # The `AUTH TLS` protocol switch
//!
//! A line parsed as `AUTH` stops the parser: bytes after it are held unparsed until `AUTH` runs, then given to
//! TLS when it was accepted (or parsed as commands when refused). So `AUTH TLS\r\nUSER x\r\n` in one read never
//! runs `USER`: `USER x\r\n` goes to rustls, fails the handshake, and the session closes (CVE-2011-0411 class).
//!
//! # Data connections
//!
//! When a data connection is up (the answer to `AcceptData`/`ConnectData`), the engine hands its
//! [`DataChannel`] over at once ([`RequestKind::DriveData`]): the frontend drives its TLS handshake from then on,
//! and the transfer command later names it ([`Notice::RunTransfer`]). Under TLS the channel's config is
//! this session's own (its ticket key; see [`ResumptionScope`]), built for the version the control connection
//! negotiated.
//!
//! # Who checks the data connection's peer
//!
//! The engine, always. The frontend reports the peer of each passive data connection it accepted
//! ([`Outcome::DataConnected`]); the engine refuses a peer other than the control peer (RFC 2577 section 3) by
//! asking for the next connection (a new [`RequestKind::AcceptData`]), so a frontend cannot forget the check.
//! It checks `PORT`/`EPRT` targets before emitting any request.

mod commands;
mod config;
mod data_connections;
mod listing;
mod outcomes;
mod request;
#[cfg(test)]
mod tests;
mod transfer;
mod transport;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

pub use crate::data::{DataChannel, DataReady, DataReport, DataType, ResumptionPolicy};
pub use crate::tls::{site_to_site_client_config, ResumptionScope, SessionKeyring};
pub use config::{SessionConfig, UserPolicy};
pub use request::{
    Direction, Failure, FileInfo, FileKind, ListFormat, LoginGrant, Notice, Outcome, ReqId,
    Request, RequestKind, Source, StorageError, TransferPlan, TransferRecord, Work, WriteMode,
};

use crate::codec::{
    parse_command, AuthMechanism, Command, EpsvArgument, FileStructure, FormatControl, FrameError,
    LineFramer, ProtectionLevel, Reply, ReplyCode, RepresentationType, Timeval, TransferMode,
};
use crate::control_channel::{ControlChannel, Received};
use crate::path::VirtualPath;
use crate::tls::{SessionTls, TlsConn};
use crate::TlsInfo;
use listing::FactSet;

/// What [`ServerSession::poll_output`] asks of the frontend next.
#[derive(Debug)]
#[must_use]
pub enum Output {
    /// This many control-connection bytes were appended to the buffer: send them.
    Transmit(usize),
    /// Something happened, for the log.
    Event(Event),
    /// A request to answer with [`ServerSession::complete`], or a notice to act on.
    Work(Work),
    /// Nothing more for now: wait for input, a finished request, a ready data channel, or this deadline
    /// (then [`ServerSession::handle_timeout`]); `None` means no timer is running.
    Wait(Option<Instant>),
}

/// The name hint of `STOU` without an argument: the file is created in the current directory as
/// `stou.<8 hex digits>` (see [`unique_candidate`]).
pub const STOU_DEFAULT_NAME: &str = "stou";

/// Names the engine tries for one `STOU` before giving up (each an exclusive create, [`WriteMode::Unique`]):
/// with 32 random bits per attempt, a collision even once is already unlikely.
pub const STOU_ATTEMPTS: u32 = 8;

/// The `attempt`-th name to try for `STOU` with the name hint `hint` (see [`WriteMode::Unique`]): the hint
/// itself first when the client gave a name, then `name.<8 hex digits of random>` in the same directory.
/// The engine asks the frontend to create each candidate exclusively (never overwriting) and stops at the first
/// that works, so no name is probed with a separate `stat`. `None` only when the hint has no file name.
#[must_use]
pub fn unique_candidate(hint: &VirtualPath, attempt: u32, random: u32) -> Option<VirtualPath> {
    let name = hint.file_name()?;
    if attempt == 0 && name != STOU_DEFAULT_NAME {
        return Some(hint.clone());
    }
    hint.parent().join_name(&format!("{name}.{random:08x}"))
}

/// Commands parsed but not yet run; beyond this `handle_input` stops taking bytes (backpressure).
const MAX_QUEUED: usize = 32;

/// Something worth logging.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A command line as received, with any password masked.
    Command(String),
    /// A reply as sent.
    Reply(Reply),
    /// The control connection's TLS handshake finished.
    TlsEstablished(TlsInfo),
    /// The control connection went back to cleartext after `CCC`.
    TlsCleared,
    /// A user logged in.
    LoggedIn {
        /// The user name (`anonymous` for anonymous logins).
        user: String,
        /// Whether it was an anonymous login.
        anonymous: bool,
    },
    /// A login was refused.
    LoginFailed {
        /// The user name tried.
        user: String,
    },
    /// A transfer ended (successfully or not).
    TransferFinished(TransferRecord),
    /// A passive data connection came from an address other than the control peer's and was refused (RFC 2577
    /// section 3, "port stealing"); the engine asked for the next connection with a new
    /// [`RequestKind::AcceptData`].
    DataConnectionRefused {
        /// The refused connection's peer.
        peer: SocketAddr,
    },
    /// The session ended; no more input is processed.
    Closed(CloseReason),
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent `QUIT`.
    Quit,
    /// The client closed the connection.
    PeerClosed,
    /// No command within the idle timeout.
    IdleTimeout,
    /// Not logged in within the login timeout.
    LoginTimeout,
    /// No command within [`SessionConfig::auth_timeout`] of connecting.
    AuthTimeout,
    /// Closed before its first command to make room for a new connection ([`ServerSession::evict`]).
    Evicted,
    /// Too many failed logins.
    TooManyFailedLogins,
    /// A fatal error, see [`ServerSession::error`].
    Error,
    /// Refused at connect time ([`ServerSession::refuse`]).
    Refused,
    /// The server is shutting down ([`ServerSession::shutdown`]).
    Shutdown,
}

/// Why a connection is turned away before its session starts: the frontend's limits, answered 421 instead of the
/// 220 greeting (RFC 959 section 5.4 lists 421 as a reply to the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The server's session limit is reached.
    TooManySessions,
    /// The limit of sessions from the client's address is reached.
    TooManyFromAddress,
    /// The client's address is locked out after repeated failed logins (RFC 2577 section 5).
    LockedOut,
    /// The server is shutting down.
    ShuttingDown,
}

/// A fatal session error; sticky once set.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The control connection's TLS failed (bad handshake, bytes that are not TLS after `AUTH TLS`, ...).
    #[error("control connection TLS error: {0}")]
    Tls(rustls::Error),
    /// Implicit FTPS was configured without a TLS config.
    #[error("implicit FTPS needs a TLS config")]
    NoTlsConfig,
}

/// The control connection's transport.
/// Login progress.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Login {
    None,
    User {
        user: String,
        anonymous: bool,
    },
    NeedAccount {
        user: String,
        password: String,
        anonymous: bool,
    },
    LoggedIn {
        user: String,
    },
}

/// What a non-transfer request is awaited for.
#[derive(Debug)]
enum Pending {
    Auth {
        user: String,
        anonymous: bool,
    },
    Host {
        host: String,
    },
    Passive {
        extended: bool,
    },
    Cwd {
        path: VirtualPath,
    },
    Size,
    Mdtm,
    /// `MFMT`: the reply says the time the file has afterwards when the frontend reads it back
    /// ([`Outcome::Metadata`]), else the time asked for ([`Outcome::Done`]).
    Mfmt {
        path: VirtualPath,
        time: Timeval,
    },
    Mlst {
        path: VirtualPath,
    },
    Rnfr {
        path: VirtualPath,
    },
    StatList {
        path: VirtualPath,
    },
    /// `STAT path` named a file: its metadata is the listing.
    StatFile {
        path: VirtualPath,
    },
    /// Reply `code text` on `Done`.
    Simple {
        code: ReplyCode,
        text: String,
    },
    Site,
}

/// The data connection's setup.
#[derive(Debug, Default)]
struct Data {
    /// `PORT`/`EPRT` target.
    active: Option<SocketAddr>,
    /// A passive listener is bound (or being bound).
    passive: bool,
    /// Outstanding `AcceptData`/`ConnectData`.
    waiting: Option<ReqId>,
    /// Established and not yet handed over: the peer.
    connected: Option<SocketAddr>,
    /// The passive listener came from `CPSV`: this server is the TLS client on its connection.
    cpsv: bool,
    /// The `DriveData` request driving the connected channel, until a transfer runs on it.
    channel: Option<ReqId>,
    /// That channel is the TLS server under [`ResumptionPolicy::Required`].
    resumption_required: bool,
    /// The channel ended before a transfer ran on it (a refused handshake): what the transfer command gets.
    failed: Option<Failure>,
}

/// Where a transfer command is.
#[derive(Debug)]
enum Stage {
    /// Waiting for `OpenRead`/`OpenWrite`/`List`.
    Preparing(ReqId),
    /// Waiting for the data connection.
    AwaitingData,
    /// `RunTransfer` issued.
    Running(ReqId),
}

/// The transfer command in progress.
#[derive(Debug)]
struct Transfer {
    started: Instant,
    path: VirtualPath,
    direction: Direction,
    stage: Stage,
    /// What to run once the data connection is there.
    source: Option<Source>,
    format: Option<ListFormat>,
    write_mode: Option<WriteMode>,
    offset: u64,
    aborted: bool,
    /// `OpenRead`/`OpenWrite` id, to release on failure.
    file: Option<ReqId>,
    /// The data channel runs as TLS server under [`ResumptionPolicy::Required`] (decided when it is built).
    resumption_required: bool,
    /// `STOU`: the name hint and how many candidate names were tried (see [`unique_candidate`]).
    unique: Option<(VirtualPath, u32)>,
    /// `LIST`/`NLST` named a file: its metadata is listed as a one-line listing.
    single_file: bool,
}

/// The session's timers; each is taken when it fires, so no deadline is returned twice.
#[derive(Debug, Default)]
struct Timers {
    idle: Option<Instant>,
    login: Option<Instant>,
    /// Until the first command line (`auth_timeout`).
    auth: Option<Instant>,
    data_accept: Option<Instant>,
    /// A reply held back: a failed login's 530 (`failed_login_delay`) or a paced 227/229
    /// (`passive_reply_pacing`).
    reply_delay: Option<Instant>,
    /// When a held preliminary reply goes out anyway (`preliminary_reply_wait`).
    preliminary: Option<Instant>,
}

/// One FTPS control connection, server side. See the [module docs](self) for the drive loop.
pub struct ServerSession {
    base: SessionConfig,
    /// `base` narrowed by the logged-in user's policy.
    policy: SessionConfig,
    peer: SocketAddr,
    local: SocketAddr,
    now: Instant,

    /// The control connection's transport: plain, TLS, plain again after `CCC`.
    control: ControlChannel,
    /// This session's TLS configs (control and data), bound to its own ticket key; made when TLS starts.
    session_tls: Option<SessionTls>,
    /// The running transfer's preliminary reply, held until `data_ready` (see `preliminary_reply_wait`).
    held_preliminary: Option<(ReplyCode, String)>,
    /// The TLS version the control connection negotiated (kept after `CCC`): the data connections' too.
    control_tls_version: Option<rustls::ProtocolVersion>,
    framer: LineFramer,
    queue: VecDeque<Result<Command, ReplyCode>>,
    /// An `AUTH` line is queued: parse nothing more until it ran.
    switch_held: bool,

    /// Requests and notices, in order.
    work: VecDeque<Work>,
    events: VecDeque<Event>,
    next_id: u64,
    pending: Option<(ReqId, Pending)>,
    /// Ids whose answers are no longer wanted; an `Opened` among them is released.
    abandoned: Vec<ReqId>,

    login: Login,
    failed_logins: u32,
    delayed_reply: Option<(ReplyCode, String, bool)>,
    host: Option<String>,
    pbsz: bool,
    prot_private: bool,
    ascii: bool,
    rest: u64,
    rnfr: Option<VirtualPath>,
    epsv_all: bool,
    /// The state of the `STOU` name sequence (see [`SessionConfig::unique_name_seed`]).
    unique_names: u64,
    /// `SSCN ON`: this server takes the TLS client role on data connections (site-to-site transfers).
    sscn_client: bool,
    facts: FactSet,
    cwd: VirtualPath,
    data: Data,
    transfer: Option<Transfer>,
    timers: Timers,

    closed: bool,
    /// `shutdown` was asked during a transfer: 421 and close after its final reply.
    shutdown_pending: bool,
    error: Option<SessionError>,
}

impl std::fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerSession")
            .field("peer", &self.peer)
            .field("login", &self.login)
            .field("cwd", &self.cwd)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

/// Whether two IPs are the same host, IPv4-mapped IPv6 included.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

impl ServerSession {
    /// A session for a control connection from `peer` accepted on `local`; the greeting (plain, or inside TLS
    /// for implicit FTPS) is ready in `poll_transmit` at once.
    pub fn new(config: SessionConfig, peer: SocketAddr, local: SocketAddr, now: Instant) -> Self {
        let mut session = Self::build(config, peer, local, now);
        if session.base.implicit_tls {
            match session.start_tls() {
                Ok(()) => {
                    // Implicit FTPS: protected data by default (RFC 4217 section 4 describes explicit mode;
                    // implicit servers behave as after `PBSZ 0` + `PROT P`).
                    session.pbsz = true;
                    session.prot_private = true;
                }
                Err(e) => {
                    session.fail(e);
                    return session;
                }
            }
        }
        let greeting = session.base.greeting.clone();
        session.reply(ReplyCode::SERVICE_READY, greeting);
        session
    }

    /// A session that turns the connection away: `421` instead of the greeting, then closed.
    ///
    /// With implicit FTPS nothing can be said before the TLS handshake, so the session just closes.
    pub fn refuse(
        config: SessionConfig,
        peer: SocketAddr,
        local: SocketAddr,
        now: Instant,
        refusal: Refusal,
    ) -> Self {
        let mut session = Self::build(config, peer, local, now);
        if !session.base.implicit_tls {
            let text = match refusal {
                Refusal::TooManySessions => "Too many connections, try again later",
                Refusal::TooManyFromAddress => "Too many connections from your address",
                Refusal::LockedOut => "Too many failed logins from your address, try again later",
                Refusal::ShuttingDown => "Server shutting down",
            };
            session.reply(ReplyCode::SERVICE_NOT_AVAILABLE, text);
        }
        session.close(CloseReason::Refused);
        session
    }

    /// The session's state before anything is said.
    fn build(config: SessionConfig, peer: SocketAddr, local: SocketAddr, now: Instant) -> Self {
        let mut session = Self {
            policy: config.clone(),
            framer: LineFramer::new(config.max_line_len),
            base: config,
            peer,
            local,
            now,
            control: ControlChannel::plain(),
            session_tls: None,
            held_preliminary: None,
            control_tls_version: None,
            queue: VecDeque::new(),
            switch_held: false,
            work: VecDeque::new(),
            events: VecDeque::new(),
            next_id: 0,
            pending: None,
            abandoned: Vec::new(),
            login: Login::None,
            failed_logins: 0,
            delayed_reply: None,
            host: None,
            pbsz: false,
            prot_private: false,
            ascii: true,
            rest: 0,
            rnfr: None,
            epsv_all: false,
            sscn_client: false,
            unique_names: 0,
            facts: FactSet::default(),
            cwd: VirtualPath::root(),
            data: Data::default(),
            transfer: None,
            timers: Timers::default(),
            closed: false,
            shutdown_pending: false,
            error: None,
        };
        session.unique_names = session.base.unique_name_seed.unwrap_or_else(random_seed);
        session.timers.login = Some(now + session.base.login_timeout);
        session.timers.idle = Some(now + session.base.idle_timeout);
        session.timers.auth = Some(now + session.base.auth_timeout);
        session
    }

    // ----- getters -----

    /// Whether the session has ended: send what `poll_transmit` still gives, then close the socket.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether no command line has arrived yet (the auth timer runs): such a session may be
    /// [evicted](ServerSession::evict) when the server is full.
    pub fn awaits_first_command(&self) -> bool {
        !self.closed && self.timers.auth.is_some()
    }

    /// The fatal error that ended the session, if one did.
    pub fn error(&self) -> Option<&SessionError> {
        self.error.as_ref()
    }

    /// The control connection's peer.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The current working directory.
    pub fn cwd(&self) -> &VirtualPath {
        &self.cwd
    }

    /// The logged-in user.
    pub fn user(&self) -> Option<&str> {
        match &self.login {
            Login::LoggedIn { user } => Some(user),
            _ => None,
        }
    }

    /// Whether the control connection is protected by TLS (handshake finished or in progress).
    pub fn tls_active(&self) -> bool {
        self.control.is_tls()
    }

    /// Whether a data connection from `ip` may be used (RFC 2577 section 3): the control peer's IP, unless the
    /// policy allows site-to-site transfers. The engine applies it to every [`Outcome::DataConnected`].
    pub fn data_peer_allowed(&self, ip: IpAddr) -> bool {
        self.policy.allow_site_to_site || same_ip(ip, self.peer.ip())
    }

    /// Whether `SSCN` and `CPSV` are offered: site-to-site allowed, TLS configured, and a TLS client config
    /// for the data connections on which this server is the TLS client.
    pub fn site_to_site_tls_offered(&self) -> bool {
        self.policy.allow_site_to_site
            && self.base.tls.is_some()
            && self.base.site_to_site_tls.is_some()
    }

    // ----- inputs -----

    /// Feeds control-connection bytes (ciphertext once TLS is up). Returns how many were taken.
    pub fn handle_input(&mut self, now: Instant, input: &[u8]) -> usize {
        self.now = now;
        if self.closed {
            return input.len();
        }
        let taken = self.control.handle_input(input);
        self.pump();
        if self.closed {
            return input.len();
        }
        taken
    }

    /// The control connection's transport ended (the peer closed or shut down its sending side).
    pub fn handle_eof(&mut self, now: Instant) {
        self.now = now;
        if self.closed {
            return;
        }
        // Plaintext that arrived before the end still counts.
        self.control.handle_eof();
        self.pump();
        if !self.closed {
            if let Some(Transfer {
                stage: Stage::Running(id),
                ..
            }) = &self.transfer
            {
                let id = *id;
                self.push_notice(Notice::AbortTransfer { data: id });
            }
            self.release_data();
            self.close(CloseReason::PeerClosed);
        }
    }

    /// Runs every timer due at `now`. Each fired timer is cleared or rescheduled later.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.closed {
            return;
        }
        let due = |t: &mut Option<Instant>| t.is_some_and(|d| d <= now) && t.take().is_some();
        if due(&mut self.timers.reply_delay) {
            if let Some((code, text, fatal)) = self.delayed_reply.take() {
                self.reply(code, text);
                if fatal {
                    self.close(CloseReason::TooManyFailedLogins);
                    return;
                }
            }
        }
        if due(&mut self.timers.login) {
            self.reply(
                ReplyCode::SERVICE_NOT_AVAILABLE,
                "Login timeout, closing control connection",
            );
            self.abort_everything();
            self.close(CloseReason::LoginTimeout);
            return;
        }
        if due(&mut self.timers.auth) {
            self.reply(
                ReplyCode::SERVICE_NOT_AVAILABLE,
                "No command received, closing control connection",
            );
            self.abort_everything();
            self.close(CloseReason::AuthTimeout);
            return;
        }
        if due(&mut self.timers.idle) {
            self.reply(
                ReplyCode::SERVICE_NOT_AVAILABLE,
                "Idle timeout, closing control connection",
            );
            self.abort_everything();
            self.close(CloseReason::IdleTimeout);
            return;
        }
        if due(&mut self.timers.preliminary) {
            self.release_preliminary();
        }
        if due(&mut self.timers.data_accept) {
            if let Some(t) = &self.transfer {
                if matches!(t.stage, Stage::AwaitingData) {
                    self.fail_transfer_before_run(Failure::DataConnection, "No data connection");
                }
            }
        }
        self.pump();
    }

    // ----- mutators -----

    /// Ends the session for a server shutdown: `421` and close now, or, while a transfer runs, right after its
    /// final reply (so a transfer in progress can finish within the frontend's grace period).
    pub fn shutdown(&mut self, now: Instant) {
        self.now = now;
        if self.closed {
            return;
        }
        if self.transfer.is_some() {
            self.shutdown_pending = true;
            return;
        }
        self.say_shutdown();
    }

    /// Closes a session that has not sent a command yet ([`ServerSession::awaits_first_command`]) to make room
    /// for a new connection when the server is full: `421` and close. A session that has spoken is left alone.
    pub fn evict(&mut self, now: Instant) {
        self.now = now;
        if !self.awaits_first_command() {
            return;
        }
        self.reply(
            ReplyCode::SERVICE_NOT_AVAILABLE,
            "Too many connections, closing one that sent no command",
        );
        self.abort_everything();
        self.close(CloseReason::Evicted);
    }

    fn say_shutdown(&mut self) {
        self.reply(ReplyCode::SERVICE_NOT_AVAILABLE, "Server shutting down");
        self.abort_everything();
        self.close(CloseReason::Shutdown);
    }

    /// Tells the engine the data connection of the running transfer is ready for the preliminary reply: its TLS
    /// handshake completed and what it sent has been flushed, or the client is not starting a handshake before
    /// the 150. `ready` comes from the channel ([`DataOutput::TransferReady`](crate::data::DataOutput)); a stale
    /// one (another transfer's) is ignored. Only matters with `preliminary_reply_wait` set.
    pub fn data_ready(&mut self, now: Instant, ready: DataReady) {
        self.now = now;
        let transfer = ready.transfer();
        let running = self
            .transfer
            .as_ref()
            .is_some_and(|t| matches!(t.stage, Stage::Running(id) if id == transfer));
        if running {
            self.release_preliminary();
            self.pump();
        }
    }

    /// Answers request `id`. Unknown or stale ids are ignored (a request cancelled by `ReleaseData` may still be
    /// answered).
    pub fn complete(&mut self, now: Instant, id: ReqId, outcome: Outcome) {
        self.now = now;
        if let Some(at) = self.abandoned.iter().position(|a| *a == id) {
            self.abandoned.swap_remove(at);
            if matches!(outcome, Outcome::Opened { .. }) {
                self.push_notice(Notice::ReleaseFile { file: id });
            }
            return;
        }
        if self.closed {
            return;
        }
        if self.data.waiting == Some(id) {
            self.data.waiting = None;
            self.on_data_outcome(outcome);
        } else if self.data.channel == Some(id) {
            self.on_data_channel_ended(outcome);
        } else if self.pending.as_ref().is_some_and(|(p, _)| *p == id) {
            if let Some((_, pending)) = self.pending.take() {
                self.on_pending_outcome(pending, outcome);
            }
        } else if let Some(t) = &self.transfer {
            match t.stage {
                Stage::Preparing(p) if p == id => self.on_prepared(id, outcome),
                Stage::Running(r) if r == id => self.on_transfer_done(outcome),
                _ => {}
            }
        }
        self.pump();
    }

    // ----- outputs -----

    /// The one drain: the next thing the frontend must do, until [`Output::Wait`]. Call it after every
    /// input or mutation, in a loop, handling each output before asking for the next; `Wait` says the
    /// session has nothing more until the next input, answer or deadline. It yields the same outputs as
    /// [`poll_transmit`](Self::poll_transmit), [`poll_event`](Self::poll_event),
    /// [`poll_work`](Self::poll_work) and [`poll_timeout`](Self::poll_timeout), in that order, so a loop
    /// over it cannot forget one of them.
    pub fn poll_output(&mut self, out: &mut Vec<u8>) -> Output {
        let n = self.poll_transmit(out);
        if n > 0 {
            return Output::Transmit(n);
        }
        if let Some(event) = self.poll_event() {
            return Output::Event(event);
        }
        match self.poll_work() {
            Some(work) => Output::Work(work),
            None => Output::Wait(self.poll_timeout()),
        }
    }

    /// Appends control-connection bytes to send to `out`; returns how many.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        self.control.poll_transmit(out)
    }

    /// The next piece of work for the frontend: a [`Request`] to answer with [`ServerSession::complete`], or a
    /// [`Notice`] to act on without answering. Take them in order: a notice may name an earlier request.
    #[must_use]
    pub fn poll_work(&mut self) -> Option<Work> {
        self.work.pop_front()
    }

    /// The next event for the log.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest timer deadline; call [`ServerSession::handle_timeout`] then.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        [
            self.timers.idle,
            self.timers.login,
            self.timers.auth,
            self.timers.data_accept,
            self.timers.reply_delay,
            self.timers.preliminary,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- output helpers -----

    pub(super) fn next_id(&mut self) -> ReqId {
        self.next_id += 1;
        ReqId(self.next_id)
    }

    fn push_request(&mut self, kind: RequestKind) -> ReqId {
        let id = self.next_id();
        self.work.push_back(Work::Request(Request { id, kind }));
        id
    }

    fn push_notice(&mut self, notice: Notice) {
        self.work.push_back(Work::Notice(notice));
    }

    fn request(&mut self, pending: Pending, kind: RequestKind) {
        let id = self.push_request(kind);
        self.pending = Some((id, pending));
    }

    /// `STAT path`: the listing on the control connection (RFC 959 section 4.1.3).
    fn stat_list(&mut self, path: &VirtualPath, entries: &[FileInfo], now: Option<&Timeval>) {
        let mut lines = vec![format!("Status of {path}:")];
        for e in entries {
            if !e.name.contains(['\r', '\n']) {
                lines.push(format!(" {}", listing::unix_line(e, now)));
            }
        }
        lines.push("End of status".to_owned());
        self.reply_lines(ReplyCode::FILE_STATUS, lines);
    }

    fn reply(&mut self, code: ReplyCode, text: impl Into<String>) {
        self.send(Reply::new(code, text));
    }

    fn reply_lines(&mut self, code: ReplyCode, lines: Vec<String>) {
        self.send(Reply { code, lines });
    }

    fn send(&mut self, reply: Reply) {
        if self.closed {
            return;
        }
        let mut line = Vec::new();
        reply.encode(&mut line);
        self.control.queue(&line);
        self.events.push_back(Event::Reply(reply));
    }
}

/// `LIST -la /pub` is `/pub`: leading `ls` options are not part of the path (a common client habit).
fn strip_ls_options(mut arg: &str) -> &str {
    while arg.starts_with('-') {
        arg = arg
            .split_once(' ')
            .map_or("", |(_, rest)| rest.trim_start());
    }
    arg
}

/// Which transfer command.
#[derive(Debug, Clone, Copy)]
enum TransferKind {
    Retr,
    Write(WriteMode),
    List(ListFormat),
}

/// A seed for `STOU` names from the TLS provider's generator (the engine reads no OS source itself).
fn random_seed() -> u64 {
    let mut bytes = [0u8; 8];
    // A failing generator only makes the names predictable; the exclusive create still never overwrites.
    let _ = crate::tls_provider().secure_random.fill(&mut bytes);
    u64::from_le_bytes(bytes)
}

/// The next 32 bits of a SplitMix64 sequence: names need to differ, not to be secret.
fn next_random(state: &mut u64) -> u32 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) >> 32) as u32
}
