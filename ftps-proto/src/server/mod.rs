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

mod config;
mod listing;
mod request;
#[cfg(test)]
mod tests;
mod transfer;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

pub use crate::data::{DataChannel, DataReport, DataType, ResumptionPolicy};
pub use crate::tls::{ResumptionScope, SessionKeyring};
pub use config::{SessionConfig, UserPolicy};
pub use request::{
    Direction, Failure, FileInfo, FileKind, ListFormat, LoginGrant, Notice, Outcome, ReqId,
    Request, RequestKind, Source, StorageError, TransferPlan, TransferRecord, Work, WriteMode,
};

use crate::codec::{
    parse_command, AuthMechanism, Command, EpsvArgument, FileStructure, FormatControl, FrameError,
    LineFramer, ProtectionLevel, Reply, ReplyCode, RepresentationType, Timeval, TransferMode,
};
use crate::path::VirtualPath;
use crate::tls::{ReadState, SessionTls, TlsConn};
use crate::TlsInfo;
use listing::FactSet;

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
/// Raw control bytes held (after an `AUTH` line, or waiting to be parsed); beyond this input is not taken.
const MAX_INBOUND: usize = 64 * 1024;

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
enum Control {
    Plain,
    Tls(Box<TlsConn>),
}

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

    control: Control,
    /// This session's TLS configs (control and data), bound to its own ticket key; made when TLS starts.
    session_tls: Option<SessionTls>,
    /// The running transfer's preliminary reply, held until `data_ready` (see `preliminary_reply_wait`).
    held_preliminary: Option<(ReplyCode, String)>,
    tls_reported: bool,
    /// The TLS version the control connection negotiated (kept after `CCC`): the data connections' too.
    control_tls_version: Option<rustls::ProtocolVersion>,
    ccc_close_pending: bool,
    ccc_awaiting_peer: bool,
    inbound: Vec<u8>,
    framer: LineFramer,
    queue: VecDeque<Result<Command, ReplyCode>>,
    /// An `AUTH` line is queued: parse nothing more until it ran.
    switch_held: bool,
    wire_out: Vec<u8>,
    tls_plain_out: Vec<u8>,
    close_notify_sent: bool,

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
            control: Control::Plain,
            session_tls: None,
            held_preliminary: None,
            tls_reported: false,
            control_tls_version: None,
            ccc_close_pending: false,
            ccc_awaiting_peer: false,
            inbound: Vec::new(),
            queue: VecDeque::new(),
            switch_held: false,
            wire_out: Vec::new(),
            tls_plain_out: Vec::new(),
            close_notify_sent: false,
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
        matches!(self.control, Control::Tls(_))
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
        let room = MAX_INBOUND.saturating_sub(self.inbound.len());
        let taken = input.len().min(room);
        self.inbound
            .extend_from_slice(input.get(..taken).unwrap_or_default());
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
        if let Control::Tls(tls) = &mut self.control {
            // Plaintext that arrived before the end still counts; a TLS error here just ends the session.
            let _ = tls.handle_eof();
        }
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
                    self.fail_transfer_before_run(
                        ReplyCode::CANT_OPEN_DATA_CONNECTION,
                        "No data connection",
                    );
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

    /// Tells the engine the data connection of the running transfer `transfer` (the `RunTransfer` request) is
    /// ready for the preliminary reply: its TLS handshake completed and what it sent has been flushed, or the
    /// client is not starting a handshake before the 150. Only matters with `preliminary_reply_wait` set.
    pub fn data_ready(&mut self, now: Instant, transfer: ReqId) {
        self.now = now;
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

    /// Appends control-connection bytes to send to `out`; returns how many.
    #[must_use]
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let before = out.len();
        out.append(&mut self.wire_out);
        if let Control::Tls(tls) = &mut self.control {
            loop {
                let mut progressed = false;
                if !self.tls_plain_out.is_empty() && !self.close_notify_sent {
                    let n = tls.write_plaintext(&self.tls_plain_out);
                    self.tls_plain_out.drain(..n);
                    progressed |= n > 0;
                }
                if self.tls_plain_out.is_empty()
                    && (self.ccc_close_pending || self.closed)
                    && !self.close_notify_sent
                {
                    tls.send_close_notify();
                    self.close_notify_sent = true;
                    self.ccc_close_pending = false;
                }
                progressed |= tls.write_tls_into(out) > 0;
                if !progressed {
                    break;
                }
            }
        }
        out.len() - before
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

    // ----- internals: transport -----

    fn start_tls(&mut self) -> Result<(), SessionError> {
        if self.session_tls.is_none() {
            let base = self.base.tls.as_ref().ok_or(SessionError::NoTlsConfig)?;
            let tls = SessionTls::new(
                base,
                &self.base.session_keys,
                self.base.data_resumption_scope,
            )
            .ok_or(SessionError::Tls(rustls::Error::FailedToGetRandomBytes))?;
            if let Login::LoggedIn { user } = &self.login {
                tls.set_owner(Some((user, self.peer.ip())));
            }
            self.session_tls = Some(tls);
        }
        let config = self
            .session_tls
            .as_ref()
            .map(|tls| Arc::clone(&tls.control))
            .ok_or(SessionError::NoTlsConfig)?;
        let conn = TlsConn::server(config).map_err(SessionError::Tls)?;
        self.control = Control::Tls(Box::new(conn));
        self.tls_reported = false;
        self.close_notify_sent = false;
        Ok(())
    }

    fn fail(&mut self, error: SessionError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self.abort_everything();
        self.close(CloseReason::Error);
    }

    fn close(&mut self, reason: CloseReason) {
        if !self.closed {
            self.closed = true;
            self.inbound.clear();
            self.queue.clear();
            self.timers = Timers::default();
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// Stops whatever data work is under way (the session is ending).
    fn abort_everything(&mut self) {
        if let Some(t) = self.transfer.take() {
            match t.stage {
                Stage::Running(id) => {
                    self.push_notice(Notice::AbortTransfer { data: id });
                }
                Stage::Preparing(id) => self.abandoned.push(id),
                Stage::AwaitingData => {}
            }
            if let Some(file) = t.file {
                if !matches!(t.stage, Stage::Running(_)) {
                    self.push_notice(Notice::ReleaseFile { file });
                }
            }
        }
        self.release_data();
    }

    /// Parses and runs as much input as the state allows.
    fn pump(&mut self) {
        loop {
            self.run_queue();
            if self.closed {
                self.inbound.clear();
                return;
            }
            if self.switch_held || self.queue.len() >= MAX_QUEUED {
                return;
            }
            let progressed = match &mut self.control {
                Control::Plain => {
                    if self.inbound.is_empty() {
                        false
                    } else {
                        let (n, line) = self.framer.decode(&self.inbound);
                        let line = line.map(|l| l.map(<[u8]>::to_vec));
                        self.inbound.drain(..n.min(self.inbound.len()));
                        if let Some(line) = line {
                            self.on_line(line);
                        }
                        n > 0
                    }
                }
                Control::Tls(tls) => {
                    let mut progressed = false;
                    // rustls reads nothing while its handshake output waits: move that output out first.
                    let _ = tls.write_tls_into(&mut self.wire_out);
                    if !self.inbound.is_empty() {
                        // RFC 4217 section 12.3: after CCC, cleartext follows the client's close_notify in the
                        // same stream; feed whole records one at a time so rustls never swallows it.
                        let input = if self.ccc_awaiting_peer {
                            crate::tls::first_tls_record(&self.inbound)
                        } else {
                            &self.inbound[..]
                        };
                        match tls.read_tls(input) {
                            Ok(n) => {
                                self.inbound.drain(..n.min(self.inbound.len()));
                                progressed |= n > 0;
                            }
                            Err(e) => {
                                self.fail(SessionError::Tls(e));
                                return;
                            }
                        }
                    }
                    if !self.tls_reported {
                        if let Some(info) = tls.info() {
                            self.tls_reported = true;
                            self.control_tls_version = Some(info.version);
                            self.events.push_back(Event::TlsEstablished(info));
                        }
                    }
                    let chunk = tls.plaintext_chunk();
                    if chunk.is_empty() {
                        match tls.read_state() {
                            ReadState::Open => {}
                            ReadState::CleanClose if self.ccc_awaiting_peer => {
                                // RFC 4217 section 12.3: after both close_notify alerts the control connection
                                // continues in cleartext; what follows the alert is plaintext.
                                let mut rest = Vec::new();
                                let _ = tls.write_tls_into(&mut self.wire_out);
                                rest.append(&mut self.inbound);
                                self.control = Control::Plain;
                                self.ccc_awaiting_peer = false;
                                self.inbound = rest;
                                self.events.push_back(Event::TlsCleared);
                                progressed = true;
                            }
                            ReadState::CleanClose | ReadState::Truncated => {
                                // The client ended TLS (close_notify, or EOF without it): the session is over.
                                self.abort_everything();
                                self.close(CloseReason::PeerClosed);
                                return;
                            }
                        }
                    } else {
                        let (n, line) = self.framer.decode(chunk);
                        let line = line.map(|l| l.map(<[u8]>::to_vec));
                        tls.consume_plaintext(n);
                        if let Some(line) = line {
                            self.on_line(line);
                        }
                        progressed |= n > 0;
                    }
                    progressed
                }
            };
            if !progressed {
                return;
            }
        }
    }

    // ----- internals: commands -----

    fn on_line(&mut self, line: Result<Vec<u8>, FrameError>) {
        // A client that speaks has passed the auth timeout; the login timeout goes on.
        self.timers.auth = None;
        if let Some(idle) = self.timers.idle.as_mut() {
            *idle = self.now + self.policy.idle_timeout;
        }
        let parsed = match line {
            Ok(line) => parse_command(&line).map_err(|e| {
                self.events
                    .push_back(Event::Command(e.verb.clone().unwrap_or_default()));
                e.reply_code()
            }),
            Err(FrameError::LineTooLong) => {
                self.events
                    .push_back(Event::Command("<line too long>".to_owned()));
                Err(ReplyCode::SYNTAX_ERROR)
            }
        };
        if let Ok(cmd) = &parsed {
            self.events
                .push_back(Event::Command(cmd.masked().to_string()));
        }
        if self.transfer.is_some() {
            if let Ok(cmd @ (Command::Abor | Command::Stat(None))) = &parsed {
                let cmd = cmd.clone();
                self.urgent(cmd);
                return;
            }
        }
        if matches!(parsed, Ok(Command::Auth(_))) && matches!(self.control, Control::Plain) {
            self.switch_held = true;
        }
        self.queue.push_back(parsed);
    }

    fn busy(&self) -> bool {
        self.pending.is_some() || self.transfer.is_some() || self.timers.reply_delay.is_some()
    }

    fn run_queue(&mut self) {
        while !self.closed && !self.busy() {
            let Some(next) = self.queue.pop_front() else {
                return;
            };
            match next {
                Ok(cmd) => self.execute(cmd),
                Err(code) => {
                    self.rnfr = None;
                    let text = if code == ReplyCode::SYNTAX_ERROR {
                        "Syntax error"
                    } else {
                        "Bad argument"
                    };
                    self.reply(code, text);
                }
            }
        }
    }

    /// `ABOR` and `STAT` during a transfer.
    fn urgent(&mut self, cmd: Command) {
        match cmd {
            Command::Abor => self.abort_transfer(),
            _ => {
                let mut lines = self.status_lines();
                if let Some(t) = &self.transfer {
                    lines.insert(1, format!(" Transfer in progress: {}", t.path));
                }
                self.reply_lines(ReplyCode::SYSTEM_STATUS, lines);
            }
        }
    }

    fn abort_transfer(&mut self) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        match t.stage {
            Stage::Running(id) => {
                // The frontend closes the data connection when it sees the notice, without answering: 426 for
                // the transfer and 226 for ABOR now (RFC 959 section 4.1.3), and a late answer is ignored.
                t.aborted = true;
                self.push_notice(Notice::AbortTransfer { data: id });
                self.abandoned.push(id);
                self.on_transfer_done(Outcome::Failed(Failure::Aborted));
            }
            Stage::Preparing(id) => {
                self.abandoned.push(id);
                self.fail_transfer_before_run(ReplyCode::TRANSFER_ABORTED, "Transfer aborted");
                self.reply(ReplyCode::CLOSING_DATA_CONNECTION, "ABOR successful");
            }
            Stage::AwaitingData => {
                self.fail_transfer_before_run(ReplyCode::TRANSFER_ABORTED, "Transfer aborted");
                self.reply(ReplyCode::CLOSING_DATA_CONNECTION, "ABOR successful");
            }
        }
    }

    fn logged_in(&self) -> bool {
        matches!(self.login, Login::LoggedIn { .. })
    }

    /// Resolves the argument of a command that names a plain file (`RETR`, `STOR`, `SIZE`, `DELE`, ...):
    /// a trailing `/` names a directory, so it is refused (550) rather than dropped, and a `..` above `/`
    /// is refused (553) rather than clamped. The reply is sent when `None` is returned.
    fn resolve_file(&mut self, path: &str) -> Option<VirtualPath> {
        if path.len() > 1 && path.ends_with('/') {
            self.reply(ReplyCode::FILE_NOT_AVAILABLE, "Not a plain file");
            return None;
        }
        match self.cwd.resolve_within(path) {
            Ok(p) => Some(p),
            Err(_) => {
                self.reply(ReplyCode::FILE_NAME_NOT_ALLOWED, "File name not allowed");
                None
            }
        }
    }

    fn resolve(&mut self, path: &str) -> Option<VirtualPath> {
        match self.cwd.resolve(path) {
            Ok(p) => Some(p),
            Err(_) => {
                self.reply(ReplyCode::FILE_NAME_NOT_ALLOWED, "File name not allowed");
                None
            }
        }
    }

    fn execute(&mut self, cmd: Command) {
        let rnfr = self.rnfr.take();
        // Commands allowed before login (RFC 959 section 5.4 lists what needs it; RFC 4217 section 4 the TLS ones).
        let open = matches!(
            cmd,
            Command::User(_)
                | Command::Pass(_)
                | Command::Acct(_)
                | Command::Auth(_)
                | Command::Pbsz(_)
                | Command::Prot(_)
                | Command::Ccc
                | Command::Feat
                | Command::Syst
                | Command::Help(_)
                | Command::Noop
                | Command::Quit
                | Command::Opts { .. }
                | Command::Host(_)
                | Command::Rein
                | Command::Stat(None)
                | Command::Unknown { .. }
        );
        if let Command::Auth(_) = cmd {
            self.switch_held = false;
        }
        if !open && !self.logged_in() {
            self.reply(ReplyCode::NOT_LOGGED_IN, "Please login with USER and PASS");
            return;
        }
        match cmd {
            Command::User(user) => self.cmd_user(user),
            Command::Pass(password) => self.cmd_pass(password),
            Command::Acct(account) => self.cmd_acct(account),
            Command::Quit => {
                self.reply(ReplyCode::CLOSING, "Goodbye");
                self.abort_everything();
                self.close(CloseReason::Quit);
            }
            Command::Noop => self.reply(ReplyCode::COMMAND_OK, "NOOP ok"),
            Command::Syst => self.reply(ReplyCode::SYSTEM_TYPE, "UNIX Type: L8"),
            Command::Feat => self.cmd_feat(),
            Command::Opts { name, value } => self.cmd_opts(&name, value.as_deref()),
            Command::Help(topic) => self.cmd_help(topic.as_deref()),
            Command::Stat(None) => {
                let lines = self.status_lines();
                self.reply_lines(ReplyCode::SYSTEM_STATUS, lines);
            }
            Command::Stat(Some(arg)) => {
                if let Some(path) = self.resolve(&arg) {
                    self.request(
                        Pending::StatList { path: path.clone() },
                        RequestKind::List {
                            path,
                            format: ListFormat::Unix,
                        },
                    );
                }
            }
            Command::Host(host) => self.cmd_host(host),
            Command::Auth(mech) => self.cmd_auth(mech),
            Command::Pbsz(_) => {
                if !self.tls_active() {
                    self.reply(ReplyCode::BAD_SEQUENCE, "PBSZ needs AUTH TLS first");
                } else {
                    self.pbsz = true;
                    self.reply(ReplyCode::COMMAND_OK, "PBSZ=0");
                }
            }
            Command::Prot(level) => self.cmd_prot(level),
            Command::Ccc => self.cmd_ccc(),
            Command::Rein => self.cmd_rein(),
            Command::Pwd => {
                let text = format!("\"{}\" is the current directory", self.cwd.quoted());
                self.reply(ReplyCode::PATHNAME_CREATED, text);
            }
            Command::Cwd(arg) => {
                if let Some(path) = self.resolve(&arg) {
                    self.request(
                        Pending::Cwd { path: path.clone() },
                        RequestKind::Metadata { path },
                    );
                }
            }
            Command::Cdup => {
                self.cwd = self.cwd.parent();
                self.reply(ReplyCode::FILE_ACTION_OK, "Directory changed");
            }
            Command::Mkd(arg) => {
                if let Some(path) = self.resolve(&arg) {
                    let text = format!("\"{}\" created", path.quoted());
                    let pending = Pending::Simple {
                        code: ReplyCode::PATHNAME_CREATED,
                        text,
                    };
                    self.request(pending, RequestKind::MakeDir { path });
                }
            }
            Command::Rmd(arg) => match self.resolve(&arg) {
                // `RMD .` or `RMD /` at the top: the user's root (a home directory, for a chrooted user).
                Some(path) if path.is_root() => self.reply(
                    ReplyCode::FILE_NOT_AVAILABLE,
                    "The root directory cannot be removed",
                ),
                Some(path) => {
                    let pending = Pending::Simple {
                        code: ReplyCode::FILE_ACTION_OK,
                        text: "Directory removed".to_owned(),
                    };
                    self.request(pending, RequestKind::RemoveDir { path });
                }
                None => {}
            },
            Command::Dele(arg) => {
                if let Some(path) = self.resolve_file(&arg) {
                    let pending = Pending::Simple {
                        code: ReplyCode::FILE_ACTION_OK,
                        text: "File deleted".to_owned(),
                    };
                    self.request(pending, RequestKind::Delete { path });
                }
            }
            Command::Rnfr(arg) => {
                if let Some(path) = self.resolve(&arg) {
                    self.request(
                        Pending::Rnfr { path: path.clone() },
                        RequestKind::Metadata { path },
                    );
                }
            }
            Command::Rnto(arg) => match rnfr {
                None => self.reply(ReplyCode::BAD_SEQUENCE, "RNFR required first"),
                Some(from) => {
                    let Some(to) = self.resolve(&arg) else {
                        return;
                    };
                    if from.is_root() || to.is_root() {
                        self.reply(
                            ReplyCode::FILE_NOT_AVAILABLE,
                            "The root directory cannot be renamed",
                        );
                    } else if to.as_str().starts_with(&format!("{from}/")) {
                        self.reply(
                            ReplyCode::FILE_NOT_AVAILABLE,
                            "A directory cannot be moved into itself",
                        );
                    } else {
                        let pending = Pending::Simple {
                            code: ReplyCode::FILE_ACTION_OK,
                            text: "Renamed".to_owned(),
                        };
                        self.request(pending, RequestKind::Rename { from, to });
                    }
                }
            },
            Command::Size(arg) => {
                if self.ascii {
                    // RFC 3659 section 4: SIZE is the size *as transferred* in the current TYPE; computing the
                    // ASCII size means reading the file, so we refuse like vsftpd and ProFTPD do.
                    self.reply(
                        ReplyCode::FILE_NOT_AVAILABLE,
                        "SIZE not allowed in ASCII mode",
                    );
                } else if let Some(path) = self.resolve_file(&arg) {
                    self.request(Pending::Size, RequestKind::Metadata { path });
                }
            }
            Command::Mdtm(arg) => {
                if let Some(path) = self.resolve_file(&arg) {
                    self.request(Pending::Mdtm, RequestKind::Metadata { path });
                }
            }
            Command::Mfmt { time, path } => {
                if let Some(path) = self.resolve_file(&path) {
                    let pending = Pending::Mfmt {
                        path: path.clone(),
                        time,
                    };
                    self.request(pending, RequestKind::SetModified { path, time });
                }
            }
            Command::Mlst(arg) => {
                if let Some(path) = self.resolve(arg.as_deref().unwrap_or("")) {
                    self.request(
                        Pending::Mlst { path: path.clone() },
                        RequestKind::Metadata { path },
                    );
                }
            }
            Command::Site(text) => self.cmd_site(&text),
            Command::Type(t) => {
                let (ok, ascii) = match t {
                    RepresentationType::Ascii(FormatControl::NonPrint) => (true, true),
                    RepresentationType::Image | RepresentationType::Local(8) => (true, false),
                    _ => (false, self.ascii),
                };
                self.ascii = ascii;
                if ok {
                    let text = if ascii {
                        "Switching to ASCII mode"
                    } else {
                        "Switching to Binary mode"
                    };
                    self.reply(ReplyCode::COMMAND_OK, text);
                } else {
                    self.reply(ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER, "Unsupported TYPE");
                }
            }
            Command::Mode(TransferMode::Stream) => {
                self.reply(ReplyCode::COMMAND_OK, "Mode set to S")
            }
            Command::Mode(_) => self.reply(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Only MODE S is supported",
            ),
            Command::Stru(FileStructure::File) => {
                self.reply(ReplyCode::COMMAND_OK, "Structure set to F")
            }
            Command::Stru(_) => self.reply(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Only STRU F is supported",
            ),
            Command::Allo { .. } => self.reply(ReplyCode::SUPERFLUOUS, "ALLO not needed"),
            // A position no file can have (lseek(2) takes an i64): refused now, not as a failed RETR later.
            Command::Rest(offset) if i64::try_from(offset).is_err() => {
                self.reply(
                    ReplyCode::SYNTAX_ERROR_ARGUMENTS,
                    "Restart position out of range",
                );
            }
            Command::Rest(offset) => {
                self.rest = offset;
                self.reply(
                    ReplyCode::FILE_ACTION_PENDING,
                    format!("Restarting at {offset}"),
                );
            }
            Command::Abor => {
                // No transfer (RFC 959 section 4.1.3): close any pending data connection, answer 226.
                self.release_data();
                self.reply(ReplyCode::CLOSING_DATA_CONNECTION, "No transfer to abort");
            }
            Command::Pasv => self.cmd_passive(false),
            Command::Sscn(mode) => self.cmd_sscn(mode),
            Command::Cpsv => {
                if self.site_to_site_tls_offered() {
                    self.cmd_passive(false);
                    self.data.cpsv = true;
                } else {
                    self.reply(
                        ReplyCode::NOT_IMPLEMENTED,
                        "CPSV not available: site-to-site transfers are not enabled",
                    );
                }
            }
            Command::Epsv(EpsvArgument::Default) => self.cmd_passive(true),
            Command::Epsv(EpsvArgument::All) => {
                self.epsv_all = true;
                self.reply(ReplyCode::COMMAND_OK, "EPSV ALL ok");
            }
            Command::Epsv(EpsvArgument::Protocol(p)) => {
                let want = if self.local.is_ipv6() { 2 } else { 1 };
                if p == want {
                    self.cmd_passive(true);
                } else {
                    self.reply(
                        ReplyCode::NETWORK_PROTOCOL_NOT_SUPPORTED,
                        format!("Network protocol not supported, use ({want})"),
                    );
                }
            }
            Command::Port(addr) => self.cmd_active(SocketAddr::V4(addr)),
            Command::Eprt(addr) => self.cmd_active(addr),
            Command::Retr(arg) => self.cmd_transfer(Some(arg), TransferKind::Retr),
            Command::Stor(arg) => {
                self.cmd_transfer(Some(arg), TransferKind::Write(WriteMode::Create))
            }
            Command::Appe(arg) => {
                self.cmd_transfer(Some(arg), TransferKind::Write(WriteMode::Append))
            }
            Command::Stou(arg) => self.cmd_transfer(arg, TransferKind::Write(WriteMode::Unique)),
            Command::List(arg) => self.cmd_transfer(arg, TransferKind::List(ListFormat::Unix)),
            Command::Nlst(arg) => self.cmd_transfer(arg, TransferKind::List(ListFormat::Names)),
            Command::Mlsd(arg) => self.cmd_transfer(arg, TransferKind::List(ListFormat::Mlsd)),
            Command::Unknown { .. } => self.reply(ReplyCode::SYNTAX_ERROR, "Unknown command"),
            _ => self.reply(ReplyCode::NOT_IMPLEMENTED, "Command not implemented"),
        }
    }

    fn cmd_user(&mut self, user: String) {
        if self.logged_in() {
            self.reply(ReplyCode::BAD_SEQUENCE, "Already logged in");
            return;
        }
        if self.policy.require_tls_control && !self.tls_active() {
            // RFC 4217 section 6: a server may refuse an unprotected login; 530 is what clients display.
            self.reply(ReplyCode::NOT_LOGGED_IN, "TLS required: use AUTH TLS first");
            return;
        }
        let anonymous = user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp");
        if anonymous && !self.policy.allow_anonymous {
            self.login = Login::None;
            self.reply(ReplyCode::NOT_LOGGED_IN, "Anonymous login not allowed");
            return;
        }
        let user = if anonymous {
            "anonymous".to_owned()
        } else {
            user
        };
        self.login = Login::User { user, anonymous };
        let text = if anonymous {
            "Guest login ok, send your e-mail address as password"
        } else {
            "Password required"
        };
        self.reply(ReplyCode::NEED_PASSWORD, text);
    }

    fn cmd_pass(&mut self, password: String) {
        if self.logged_in() {
            self.reply(ReplyCode::SUPERFLUOUS, "Already logged in");
            return;
        }
        if self.policy.require_tls_control && !self.tls_active() {
            self.reply(ReplyCode::NOT_LOGGED_IN, "TLS required: use AUTH TLS first");
            return;
        }
        let Login::User { user, anonymous } = std::mem::replace(&mut self.login, Login::None)
        else {
            self.reply(ReplyCode::BAD_SEQUENCE, "Login with USER first");
            return;
        };
        self.authenticate(user, password, None, anonymous);
    }

    fn cmd_acct(&mut self, account: String) {
        match std::mem::replace(&mut self.login, Login::None) {
            Login::NeedAccount {
                user,
                password,
                anonymous,
            } => self.authenticate(user, password, Some(account), anonymous),
            Login::LoggedIn { user } => {
                self.login = Login::LoggedIn { user };
                self.reply(ReplyCode::SUPERFLUOUS, "ACCT not needed");
            }
            other => {
                self.login = other;
                self.reply(ReplyCode::BAD_SEQUENCE, "Login with USER and PASS first");
            }
        }
    }

    fn authenticate(
        &mut self,
        user: String,
        password: String,
        account: Option<String>,
        anonymous: bool,
    ) {
        let client_cert = match &self.control {
            Control::Tls(tls) => tls.peer_certificates().and_then(|c| c.first()).cloned(),
            Control::Plain => None,
        };
        let kind = RequestKind::Authenticate {
            user: user.clone(),
            password: password.clone(),
            account,
            anonymous,
            host: self.host.clone(),
            client_cert,
        };
        // Keep the password only as long as an ACCT may need it again.
        self.request(
            Pending::Auth {
                user: user.clone(),
                anonymous,
            },
            kind,
        );
        self.login = Login::NeedAccount {
            user,
            password,
            anonymous,
        };
    }

    fn cmd_host(&mut self, host: String) {
        if !matches!(self.login, Login::None) {
            // RFC 7151 section 3: HOST comes before USER.
            self.reply(ReplyCode::BAD_SEQUENCE, "HOST must come before login");
        } else {
            self.request(
                Pending::Host { host: host.clone() },
                RequestKind::SelectHost { host },
            );
        }
    }

    fn cmd_auth(&mut self, mech: AuthMechanism) {
        if self.tls_active() {
            self.reply(ReplyCode::BAD_SEQUENCE, "TLS already active");
            return;
        }
        if self.base.tls.is_none() {
            self.reply(ReplyCode::NOT_IMPLEMENTED, "TLS not available");
            return;
        }
        let implies_prot_p = match mech {
            AuthMechanism::Tls | AuthMechanism::TlsC => false,
            AuthMechanism::Ssl | AuthMechanism::TlsP => true,
            _ => {
                self.reply(
                    ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                    "Unsupported AUTH mechanism",
                );
                return;
            }
        };
        self.reply(ReplyCode::AUTH_OK, "AUTH TLS successful");
        if let Err(e) = self.start_tls() {
            self.fail(e);
            return;
        }
        if implies_prot_p {
            self.pbsz = true;
            self.prot_private = true;
        }
    }

    fn cmd_prot(&mut self, level: ProtectionLevel) {
        if !self.tls_active() || !self.pbsz {
            self.reply(ReplyCode::BAD_SEQUENCE, "PBSZ required first");
            return;
        }
        match level {
            ProtectionLevel::Private => {
                self.prot_private = true;
                self.reply(ReplyCode::COMMAND_OK, "Protection set to Private");
            }
            ProtectionLevel::Clear if self.policy.require_tls_data => {
                self.reply(ReplyCode::DENIED_FOR_POLICY, "PROT C not allowed by policy");
            }
            ProtectionLevel::Clear => {
                self.prot_private = false;
                self.reply(ReplyCode::COMMAND_OK, "Protection set to Clear");
            }
            ProtectionLevel::Safe | ProtectionLevel::Confidential => {
                self.reply(
                    ReplyCode::PROT_LEVEL_NOT_SUPPORTED,
                    "PROT level not supported",
                );
            }
        }
    }

    fn cmd_ccc(&mut self) {
        if !self.policy.allow_ccc {
            self.reply(ReplyCode::DENIED_FOR_POLICY, "CCC not allowed");
        } else if !self.tls_active() {
            self.reply(ReplyCode::BAD_SEQUENCE, "TLS not active");
        } else {
            self.reply(ReplyCode::COMMAND_OK, "Control connection cleared");
            self.ccc_close_pending = true;
            self.ccc_awaiting_peer = true;
        }
    }

    fn cmd_rein(&mut self) {
        // RFC 959 section 4.1.1: flush user and transfer parameters; TLS stays (RFC 4217 has no REIN rule).
        self.release_data();
        self.login = Login::None;
        if let Some(tls) = &self.session_tls {
            tls.set_owner(None);
        }
        self.policy = self.base.clone();
        self.host = None;
        self.ascii = true;
        self.rest = 0;
        self.rnfr = None;
        self.epsv_all = false;
        self.sscn_client = false;
        self.facts = FactSet::default();
        self.cwd = VirtualPath::root();
        self.timers.login = Some(self.now + self.base.login_timeout);
        self.reply(ReplyCode::SERVICE_READY, "Service ready for new user");
    }

    fn cmd_feat(&mut self) {
        let mut lines = vec!["Features:".to_owned()];
        if self.base.tls.is_some() {
            lines.extend([
                " AUTH TLS".to_owned(),
                " PBSZ".to_owned(),
                " PROT".to_owned(),
            ]);
            if self.policy.allow_ccc {
                lines.push(" CCC".to_owned());
            }
        }
        if self.site_to_site_tls_offered() {
            lines.extend([" CPSV".to_owned(), " SSCN".to_owned()]);
        }
        for f in ["EPRT", "EPSV", "HOST", "MDTM", "MFMT"] {
            lines.push(format!(" {f}"));
        }
        lines.push(format!(" MLST {}", self.facts.feat()));
        for f in ["REST STREAM", "SIZE", "TVFS", "UTF8"] {
            lines.push(format!(" {f}"));
        }
        lines.push("End".to_owned());
        self.reply_lines(ReplyCode::SYSTEM_STATUS, lines);
    }

    fn cmd_opts(&mut self, name: &str, value: Option<&str>) {
        if name.eq_ignore_ascii_case("UTF8") {
            if value.is_some_and(|v| v.trim().eq_ignore_ascii_case("ON")) {
                self.reply(ReplyCode::COMMAND_OK, "UTF8 mode always on");
            } else {
                self.reply(
                    ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                    "Only OPTS UTF8 ON is supported",
                );
            }
        } else if name.eq_ignore_ascii_case("MLST") {
            let accepted = self.facts.select(value.unwrap_or(""));
            self.reply(ReplyCode::COMMAND_OK, format!("MLST OPTS {accepted}"));
        } else {
            self.reply(ReplyCode::SYNTAX_ERROR_ARGUMENTS, "Unknown option");
        }
    }

    fn cmd_help(&mut self, topic: Option<&str>) {
        if let Some(topic) = topic {
            self.reply(
                ReplyCode::HELP_MESSAGE,
                format!("No detailed help for {}", topic.to_ascii_uppercase()),
            );
            return;
        }
        let lines = vec![
            "The following commands are recognized:".to_owned(),
            " ABOR ACCT ALLO APPE AUTH CCC CDUP CWD DELE EPRT EPSV FEAT HELP HOST LIST MDTM MFMT MKD MLSD MLST".to_owned(),
            " MODE NLST NOOP OPTS PASS PASV PBSZ PORT PROT PWD QUIT REIN REST RETR RMD RNFR RNTO SITE SIZE STAT".to_owned(),
            " STOR STOU STRU SYST TYPE USER XCUP XCWD XMKD XPWD XRMD".to_owned(),
            "Help OK".to_owned(),
        ];
        self.reply_lines(ReplyCode::HELP_MESSAGE, lines);
    }

    fn cmd_site(&mut self, text: &str) {
        let mut words = text.trim().splitn(2, ' ');
        let sub = words.next().unwrap_or("").to_ascii_uppercase();
        let rest = words.next().map(str::trim).filter(|r| !r.is_empty());
        match sub.as_str() {
            "HELP" => self.reply(ReplyCode::HELP_MESSAGE, "SITE commands: CHMOD HELP"),
            "CHMOD" => {
                let mut args = rest.unwrap_or("").splitn(2, ' ');
                let mode = args
                    .next()
                    .and_then(|m| u32::from_str_radix(m, 8).ok())
                    .filter(|m| *m <= 0o7777);
                match (mode, args.next().map(str::trim).filter(|p| !p.is_empty())) {
                    (Some(mode), Some(path)) => {
                        if let Some(path) = self.resolve(path) {
                            let pending = Pending::Simple {
                                code: ReplyCode::COMMAND_OK,
                                text: "SITE CHMOD command ok".to_owned(),
                            };
                            self.request(pending, RequestKind::Chmod { path, mode });
                        }
                    }
                    _ => self.reply(
                        ReplyCode::SYNTAX_ERROR_ARGUMENTS,
                        "Usage: SITE CHMOD mode path",
                    ),
                }
            }
            "" => self.reply(ReplyCode::SYNTAX_ERROR_ARGUMENTS, "SITE needs a command"),
            _ => {
                let kind = RequestKind::SiteCustom {
                    command: sub,
                    argument: rest.map(str::to_owned),
                };
                self.request(Pending::Site, kind);
            }
        }
    }

    fn status_lines(&self) -> Vec<String> {
        let mut lines = vec![
            "FTP server status:".to_owned(),
            format!(" Connected to {}", self.peer.ip()),
        ];
        match &self.login {
            Login::LoggedIn { user } => lines.push(format!(" Logged in as {user}")),
            _ => lines.push(" Not logged in".to_owned()),
        }
        lines.push(format!(
            " TYPE: {}",
            if self.ascii { "ASCII" } else { "BINARY" }
        ));
        lines.push(format!(
            " Control connection: {}; data protection: {}",
            if self.tls_active() { "TLS" } else { "plain" },
            if self.prot_private {
                "Private"
            } else {
                "Clear"
            }
        ));
        lines.push("End of status".to_owned());
        lines
    }

    // ----- data connections -----

    fn release_data(&mut self) {
        let had = self.data.passive
            || self.data.waiting.is_some()
            || self.data.connected.is_some()
            || self.data.channel.is_some();
        if let Some(id) = self.data.waiting.take() {
            self.abandoned.push(id);
        }
        self.data = Data::default();
        self.timers.data_accept = None;
        if had {
            self.push_notice(Notice::ReleaseData);
        }
    }

    fn cmd_passive(&mut self, extended: bool) {
        if self.epsv_all && !extended {
            self.reply(ReplyCode::BAD_SEQUENCE, "Only EPSV allowed after EPSV ALL");
            return;
        }
        let ipv6 = self.local.ip().to_canonical().is_ipv6();
        if ipv6 && !extended {
            self.reply(
                ReplyCode::CANT_OPEN_DATA_CONNECTION,
                "PASV needs IPv4: use EPSV",
            );
            return;
        }
        self.release_data();
        self.data.passive = true;
        self.request(
            Pending::Passive { extended },
            RequestKind::OpenPassive { ipv6 },
        );
    }

    /// `SSCN [ON|OFF]`: the data-connection TLS role for the connections opened after it, active or passive.
    /// The replies follow FileZilla Server and glftpd: "200 Client method" / "200 Server method".
    fn cmd_sscn(&mut self, mode: Option<bool>) {
        if !self.site_to_site_tls_offered() {
            self.reply(
                ReplyCode::NOT_IMPLEMENTED,
                "SSCN not available: site-to-site transfers are not enabled",
            );
            return;
        }
        if let Some(on) = mode {
            self.sscn_client = on;
        }
        let text = if self.sscn_client {
            "Client method"
        } else {
            "Server method"
        };
        self.reply(ReplyCode::COMMAND_OK, text);
    }

    fn cmd_active(&mut self, addr: SocketAddr) {
        if self.epsv_all {
            self.reply(ReplyCode::BAD_SEQUENCE, "Only EPSV allowed after EPSV ALL");
            return;
        }
        // RFC 2577 section 3: no bounce to a third host, no privileged ports.
        if !self.policy.allow_site_to_site && !same_ip(addr.ip(), self.peer.ip()) {
            self.reply(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Data connection must go to the control peer",
            );
            return;
        }
        if addr.port() < 1024 {
            self.reply(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Privileged data port refused",
            );
            return;
        }
        self.release_data();
        self.data.active = Some(addr);
        self.reply(ReplyCode::COMMAND_OK, "PORT command successful");
    }

    fn on_data_outcome(&mut self, outcome: Outcome) {
        match outcome {
            // RFC 2577 section 3 ("port stealing"): a passive connection from another host is dropped and the
            // next one awaited, within the same data-accept timeout; the frontend need not know the rule.
            Outcome::DataConnected { peer }
                if self.data.passive && !self.data_peer_allowed(peer.ip()) =>
            {
                self.events.push_back(Event::DataConnectionRefused { peer });
                let id = self.push_request(RequestKind::AcceptData);
                self.data.waiting = Some(id);
            }
            Outcome::DataConnected { peer } => {
                self.data.connected = Some(peer);
                self.start_data_channel();
                if matches!(
                    self.transfer.as_ref().map(|t| &t.stage),
                    Some(Stage::AwaitingData)
                ) {
                    self.run_transfer(ReplyCode::FILE_STATUS_OK);
                }
            }
            _ => {
                self.data.passive = false;
                if matches!(
                    self.transfer.as_ref().map(|t| &t.stage),
                    Some(Stage::AwaitingData)
                ) {
                    self.fail_transfer_before_run(
                        ReplyCode::CANT_OPEN_DATA_CONNECTION,
                        "Can't open data connection",
                    );
                }
            }
        }
    }

    // ----- transfers -----

    fn cmd_transfer(&mut self, arg: Option<String>, kind: TransferKind) {
        let offset = std::mem::take(&mut self.rest);
        let raw = arg.as_deref().unwrap_or("");
        // LIST/NLST options such as `-la` are not paths (a common ls-ism): ignore them.
        let raw = match kind {
            TransferKind::List(_) => strip_ls_options(raw),
            _ => raw,
        };
        // The path first: a name that can never be served is refused as such, whatever the data connection.
        let resolved = match kind {
            TransferKind::List(_) => self.resolve(raw),
            // STOU alone: a fresh name in the current directory (RFC 959 section 4.1.3).
            TransferKind::Write(WriteMode::Unique) if raw.is_empty() => {
                self.cwd.join_name(STOU_DEFAULT_NAME)
            }
            _ if raw.is_empty() => {
                self.reply(ReplyCode::SYNTAX_ERROR_ARGUMENTS, "Path required");
                return;
            }
            _ => self.resolve_file(raw),
        };
        let Some(path) = resolved else {
            return;
        };
        if !self.data.passive && self.data.active.is_none() {
            self.reply(
                ReplyCode::CANT_OPEN_DATA_CONNECTION,
                "Use PORT, PASV or EPSV first",
            );
            return;
        }
        if self.policy.require_tls_data && !self.prot_private {
            // RFC 4217 section 9: 521 when the data connection must be protected.
            self.reply(
                ReplyCode::DATA_PROTECTION_REQUIRED,
                "Data connections must be protected: use PROT P",
            );
            return;
        }
        let unique = match kind {
            TransferKind::Write(WriteMode::Unique) => Some((path.clone(), 0)),
            _ => None,
        };
        let path = match &unique {
            Some((hint, _)) => match unique_candidate(hint, 0, next_random(&mut self.unique_names))
            {
                Some(first) => first,
                None => {
                    self.reply(ReplyCode::FILE_NAME_NOT_ALLOWED, "File name not allowed");
                    return;
                }
            },
            None => path,
        };
        let (direction, request, format, write_mode, offset) = match kind {
            TransferKind::Retr => (
                Direction::Download,
                RequestKind::OpenRead {
                    path: path.clone(),
                    offset,
                },
                None,
                None,
                offset,
            ),
            TransferKind::Write(mode) => {
                let offset = if mode == WriteMode::Unique { 0 } else { offset };
                (
                    Direction::Upload,
                    RequestKind::OpenWrite {
                        path: path.clone(),
                        mode,
                        offset,
                    },
                    None,
                    Some(mode),
                    offset,
                )
            }
            TransferKind::List(format) => (
                Direction::Download,
                RequestKind::List {
                    path: path.clone(),
                    format,
                },
                Some(format),
                None,
                0,
            ),
        };
        let id = self.push_request(request);
        self.transfer = Some(Transfer {
            started: self.now,
            path,
            direction,
            stage: Stage::Preparing(id),
            source: None,
            format,
            write_mode,
            offset,
            aborted: false,
            file: None,
            resumption_required: false,
            unique,
            single_file: false,
        });
    }

    fn on_prepared(&mut self, id: ReqId, outcome: Outcome) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        match outcome {
            // RFC 3659 section 5.4: a restart point past the end of the file is an invalid REST parameter.
            Outcome::Opened {
                size: Some(size), ..
            } if t.direction == Direction::Download && t.offset > size => {
                self.transfer = None;
                self.push_notice(Notice::ReleaseFile { file: id });
                self.reply(
                    ReplyCode::INVALID_REST_PARAMETER,
                    "Restart position beyond end of file",
                );
                return;
            }
            Outcome::Opened { path, .. } => {
                t.file = Some(id);
                if t.write_mode == Some(WriteMode::Unique) {
                    t.path = path;
                }
                t.source = Some(if t.direction == Direction::Upload {
                    Source::Upload(id)
                } else {
                    Source::File(id)
                });
            }
            // `STOU`: the name was taken meanwhile; try the next candidate.
            Outcome::Failed(Failure::Storage(StorageError::Exists))
                if t.unique
                    .as_ref()
                    .is_some_and(|(_, n)| n + 1 < STOU_ATTEMPTS) =>
            {
                let Some((hint, attempt)) = t.unique.as_mut() else {
                    return;
                };
                *attempt += 1;
                let Some(path) =
                    unique_candidate(hint, *attempt, next_random(&mut self.unique_names))
                else {
                    self.transfer = None;
                    self.reply(ReplyCode::FILE_NAME_NOT_ALLOWED, "File name not allowed");
                    return;
                };
                t.path = path.clone();
                let request = RequestKind::OpenWrite {
                    path,
                    mode: WriteMode::Unique,
                    offset: 0,
                };
                let id = self.push_request(request);
                if let Some(t) = self.transfer.as_mut() {
                    t.stage = Stage::Preparing(id);
                }
                return;
            }
            // `LIST file` / `NLST file` (as `ls` does): the file's own line. `MLSD` is for directories only
            // (RFC 3659 section 7.1), so it keeps the error.
            Outcome::Failed(Failure::Storage(StorageError::NotADirectory))
                if !t.single_file && t.format.is_some_and(|f| f != ListFormat::Mlsd) =>
            {
                t.single_file = true;
                let request = RequestKind::Metadata {
                    path: t.path.clone(),
                };
                let id = self.push_request(request);
                if let Some(t) = self.transfer.as_mut() {
                    t.stage = Stage::Preparing(id);
                }
                return;
            }
            Outcome::Metadata(_) | Outcome::MetadataAt { .. } if !t.single_file => {
                self.transfer = None;
                self.reply(ReplyCode::LOCAL_ERROR, "Unexpected answer");
                return;
            }
            Outcome::Metadata(mut info) => {
                info.name = t.path.file_name().unwrap_or("/").to_owned();
                let format = t.format.unwrap_or(ListFormat::Unix);
                t.source = Some(Source::Bytes(listing::render(
                    &[info],
                    format,
                    self.facts,
                    None,
                )));
            }
            Outcome::MetadataAt { mut info, now } => {
                info.name = t.path.file_name().unwrap_or("/").to_owned();
                let format = t.format.unwrap_or(ListFormat::Unix);
                let bytes = listing::render(&[info], format, self.facts, Some(&now));
                t.source = Some(Source::Bytes(bytes));
            }
            Outcome::Listing(entries) => {
                let format = t.format.unwrap_or(ListFormat::Unix);
                let bytes = listing::render(&entries, format, self.facts, None);
                t.source = Some(Source::Bytes(bytes));
            }
            Outcome::ListingAt { entries, now } => {
                let format = t.format.unwrap_or(ListFormat::Unix);
                let bytes = listing::render(&entries, format, self.facts, Some(&now));
                t.source = Some(Source::Bytes(bytes));
            }
            Outcome::Failed(f) => {
                let (code, text) = transfer::failure_reply(&f);
                self.transfer = None;
                self.reply(code, text);
                return;
            }
            _ => {
                self.transfer = None;
                self.reply(ReplyCode::LOCAL_ERROR, "Unexpected answer");
                return;
            }
        }
        t.stage = Stage::AwaitingData;
        if self.data.connected.is_some() {
            self.run_transfer(ReplyCode::DATA_CONNECTION_ALREADY_OPEN);
            return;
        }
        if self.data.waiting.is_none() {
            if let Some(addr) = self.data.active {
                let id = self.push_request(RequestKind::ConnectData { addr });
                self.data.waiting = Some(id);
            }
        }
        self.timers.data_accept = Some(self.now + self.policy.data_accept_timeout);
    }

    /// The data connection is up: build its channel and hand it to the frontend at once, so a client that
    /// starts its TLS handshake as soon as it has connected (curl) gets its answer without waiting for the
    /// transfer command (see [`RequestKind::DriveData`]).
    fn start_data_channel(&mut self) {
        let role = self.data_tls_role();
        self.data.resumption_required = matches!(
            role,
            transfer::DataRole::TlsServer {
                resumption: ResumptionPolicy::Required,
                ..
            }
        );
        match transfer::build_channel(self.now, role) {
            Ok(mut channel) => {
                channel.await_transfer();
                let id = self.push_request(RequestKind::DriveData {
                    channel: Box::new(channel),
                });
                self.data.channel = Some(id);
            }
            Err(_) => self.data.failed = Some(Failure::DataTls),
        }
    }

    /// The data channel ended before a transfer ran on it: the next transfer command gets why.
    fn on_data_channel_ended(&mut self, outcome: Outcome) {
        self.data.channel = None;
        self.data.failed = Some(match outcome {
            Outcome::Failed(failure) | Outcome::TransferFailed { failure, .. } => failure,
            _ => Failure::DataConnection,
        });
    }

    /// The data connection is there: preliminary reply, then the transfer runs on its channel.
    fn run_transfer(&mut self, code: ReplyCode) {
        self.timers.data_accept = None;
        if let Some(failure) = self.data.failed.take() {
            let (code, text) = transfer::failure_reply(&failure);
            self.fail_transfer_before_run(code, text);
            return;
        }
        let Some(data) = self.data.channel else {
            self.fail_transfer_before_run(
                ReplyCode::CANT_OPEN_DATA_CONNECTION,
                "Can't open data connection",
            );
            return;
        };
        let resumption_required = self.data.resumption_required;
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        let Some(source) = t.source.take() else {
            return;
        };
        t.resumption_required = resumption_required;
        let plan = TransferPlan {
            path: t.path.clone(),
            source,
            data_type: if self.ascii {
                DataType::Ascii
            } else {
                DataType::Binary
            },
            offset: t.offset,
        };
        let text = match (&plan.source, code) {
            // RFC 1123 section 4.1.2.9: STOU's preliminary reply says which name the server chose.
            _ if t.write_mode == Some(WriteMode::Unique) => {
                format!("FILE: {}", plan.path.file_name().unwrap_or_default())
            }
            (_, c) if c == ReplyCode::DATA_CONNECTION_ALREADY_OPEN => {
                "Data connection already open; transfer starting".to_owned()
            }
            (Source::Bytes(_), _) => "Here comes the directory listing".to_owned(),
            _ => "Opening data connection".to_owned(),
        };
        // The data connection now belongs to the transfer; the next one needs a new PASV/PORT.
        self.data = Data::default();
        // Only uploads: a client reads a download's data connection anyway (and gets its tickets there).
        let wait = self.policy.preliminary_reply_wait;
        if self.prot_private && !wait.is_zero() && plan.source.is_upload() {
            self.held_preliminary = Some((code, text));
            self.timers.preliminary = Some(self.now + wait);
        } else {
            self.reply(code, text);
        }
        self.push_notice(Notice::RunTransfer { data, plan });
        if let Some(t) = self.transfer.as_mut() {
            t.stage = Stage::Running(data);
        }
    }

    /// The TLS role of the data connection about to run: none under `PROT C`; the TLS client after `SSCN ON`
    /// or `CPSV`; otherwise the TLS server with the session-bound config. The resumption rule applies only when
    /// the data peer is the control peer's IP: a third party (site-to-site, allowed only by the opt-in) is
    /// another server that cannot hold our control session (see [`SessionConfig::allow_site_to_site`]).
    fn data_tls_role(&self) -> transfer::DataRole {
        if !self.prot_private {
            return transfer::DataRole::Clear;
        }
        let peer = self.data.connected.unwrap_or(self.peer);
        if self.sscn_client || self.data.cpsv {
            return match &self.base.site_to_site_tls {
                Some(config) => transfer::DataRole::TlsClient {
                    config: Arc::clone(config),
                    peer: peer.ip(),
                },
                None => transfer::DataRole::Clear,
            };
        }
        let version = self.control_tls_version;
        let Some((config, binding)) = self
            .session_tls
            .as_ref()
            .map(|tls| tls.data_connection(version))
        else {
            return transfer::DataRole::Clear;
        };
        let resumption = if same_ip(peer.ip(), self.peer.ip()) {
            self.policy.data_resumption
        } else {
            match self.policy.data_resumption {
                ResumptionPolicy::Required => ResumptionPolicy::Preferred,
                other => other,
            }
        };
        transfer::DataRole::TlsServer {
            config,
            resumption,
            binding,
        }
    }

    /// Sends the held preliminary reply, if any.
    fn release_preliminary(&mut self) {
        self.timers.preliminary = None;
        if let Some((code, text)) = self.held_preliminary.take() {
            self.reply(code, text);
        }
    }

    /// Ends a transfer that never reached `RunTransfer`: release its file and data connection, reply `code`.
    fn fail_transfer_before_run(&mut self, code: ReplyCode, text: &str) {
        if let Some(t) = self.transfer.take() {
            if let Some(file) = t.file {
                self.push_notice(Notice::ReleaseFile { file });
            }
            self.record(&t, 0, code, None);
        }
        self.release_data();
        self.reply(code, text);
    }

    fn on_transfer_done(&mut self, outcome: Outcome) {
        let Some(t) = self.transfer.take() else {
            return;
        };
        let resumption_required = t.resumption_required;
        let (code, text, bytes, tls): (ReplyCode, &str, u64, Option<TlsInfo>) = match outcome {
            Outcome::TransferFinished(report) => {
                let bytes = report.bytes_sent.saturating_add(report.bytes_received);
                let resumed = report.tls.as_ref().is_some_and(|t| t.resumed);
                let (c, s) = if t.aborted {
                    (ReplyCode::TRANSFER_ABORTED, "Transfer aborted")
                } else if resumption_required && !resumed {
                    // The channel enforces this itself; checking again keeps a 226 from ever vouching for it.
                    transfer::failure_reply(&Failure::ResumptionRefused)
                } else if report.clean_close {
                    (ReplyCode::CLOSING_DATA_CONNECTION, "Transfer complete")
                } else {
                    transfer::failure_reply(&Failure::Truncated)
                };
                (c, s, bytes, report.tls)
            }
            Outcome::Failed(f) => {
                let (c, s) = if t.aborted {
                    transfer::failure_reply(&Failure::Aborted)
                } else {
                    transfer::failure_reply(&f)
                };
                (c, s, 0, None)
            }
            // The data connection did its part (or some of it) and the transfer still failed: the reply is the
            // failure's, the record keeps what the connection did.
            Outcome::TransferFailed { failure, report } => {
                let (c, s) = if t.aborted {
                    transfer::failure_reply(&Failure::Aborted)
                } else {
                    transfer::failure_reply(&failure)
                };
                let bytes = report.bytes_sent.saturating_add(report.bytes_received);
                (c, s, bytes, report.tls)
            }
            _ => (ReplyCode::LOCAL_ERROR, "Unexpected answer", 0, None),
        };
        // A held preliminary reply still precedes a success; a failure alone is a complete answer (RFC 959
        // section 5.4 allows 4xx/5xx without 1xx), so it is dropped then.
        if code.is_completion() {
            self.release_preliminary();
        } else {
            self.held_preliminary = None;
            self.timers.preliminary = None;
        }
        self.reply(code, text);
        if t.aborted {
            // RFC 959 section 4.1.3: 426 for the aborted transfer, then 226 for ABOR itself.
            self.reply(ReplyCode::CLOSING_DATA_CONNECTION, "ABOR successful");
        }
        self.record(&t, bytes, code, tls);
        if self.shutdown_pending {
            self.say_shutdown();
            return;
        }
        if let Some(idle) = self.timers.idle.as_mut() {
            *idle = self.now + self.policy.idle_timeout;
        }
    }

    fn record(&mut self, t: &Transfer, bytes: u64, status: ReplyCode, tls: Option<TlsInfo>) {
        self.events
            .push_back(Event::TransferFinished(TransferRecord {
                path: t.path.clone(),
                bytes,
                direction: t.direction,
                duration: self.now.saturating_duration_since(t.started),
                status,
                tls,
            }));
    }

    // ----- request outcomes -----

    fn on_pending_outcome(&mut self, pending: Pending, outcome: Outcome) {
        // `STAT file` lists the file's own line, as `LIST file` does.
        if let (
            Pending::StatList { path },
            Outcome::Failed(Failure::Storage(StorageError::NotADirectory)),
        ) = (&pending, &outcome)
        {
            let path = path.clone();
            let request = RequestKind::Metadata { path: path.clone() };
            self.request(Pending::StatFile { path }, request);
            return;
        }
        let outcome = match (&pending, outcome) {
            (Pending::StatFile { path }, Outcome::MetadataAt { mut info, now }) => {
                info.name = path.file_name().unwrap_or("/").to_owned();
                self.stat_list(path, &[info], Some(&now));
                return;
            }
            (_, Outcome::MetadataAt { info, .. }) => Outcome::Metadata(info),
            (_, outcome) => outcome,
        };
        if let Outcome::Failed(f) = &outcome {
            if let Pending::Auth { .. } = pending {
                // Fall through to Denied handling below.
            } else {
                if let Pending::Passive { .. } = pending {
                    self.data.passive = false;
                }
                if let Pending::Host { .. } = pending {
                    self.reply(ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER, "Unknown host");
                    return;
                }
                let (code, text) = transfer::failure_reply(f);
                self.reply(code, text);
                return;
            }
        }
        match (pending, outcome) {
            (Pending::Auth { user, anonymous }, Outcome::LoggedIn(grant)) => {
                self.policy = self.base.narrowed(&grant.policy);
                self.cwd = grant.home;
                self.timers.login = None;
                if let Some(tls) = &self.session_tls {
                    tls.set_owner(Some((&user, self.peer.ip())));
                }
                self.login = Login::LoggedIn { user: user.clone() };
                self.reply(ReplyCode::LOGGED_IN, "Login successful");
                self.events.push_back(Event::LoggedIn { user, anonymous });
            }
            (Pending::Auth { .. }, Outcome::NeedAccount) => {
                self.reply(ReplyCode::NEED_ACCOUNT, "Need account for login");
            }
            (Pending::Auth { user, .. }, _) => {
                self.login = Login::None;
                self.failed_logins = self.failed_logins.saturating_add(1);
                self.events.push_back(Event::LoginFailed { user });
                let fatal = self.failed_logins >= self.base.max_failed_logins;
                self.delayed_reply = Some(if fatal {
                    (
                        ReplyCode::SERVICE_NOT_AVAILABLE,
                        "Too many failed logins, closing control connection".to_owned(),
                        true,
                    )
                } else {
                    (
                        ReplyCode::NOT_LOGGED_IN,
                        "Login incorrect".to_owned(),
                        false,
                    )
                });
                // The reply waits out the delay (slows password guessing); commands meanwhile queue.
                self.timers.reply_delay = Some(self.now + self.base.failed_login_delay);
            }
            (Pending::Host { host }, Outcome::Done) => {
                self.host = Some(host);
                self.reply(ReplyCode::SERVICE_READY, "Host accepted");
            }
            (Pending::Passive { extended }, Outcome::PassiveListening(addr)) => {
                if !self.data.passive {
                    return;
                }
                let text = if extended {
                    format!("Entering Extended Passive Mode (|||{}|)", addr.port())
                } else {
                    let ip = match (self.policy.passive_public_ipv4, addr.ip().to_canonical()) {
                        (Some(public), _) => public,
                        (None, IpAddr::V4(v4)) => v4,
                        (None, IpAddr::V6(_)) => {
                            self.release_data();
                            self.reply(
                                ReplyCode::CANT_OPEN_DATA_CONNECTION,
                                "PASV needs IPv4: use EPSV",
                            );
                            return;
                        }
                    };
                    let [a, b, c, d] = ip.octets();
                    let [p1, p2] = addr.port().to_be_bytes();
                    format!("Entering Passive Mode ({a},{b},{c},{d},{p1},{p2})")
                };
                let code = if extended {
                    ReplyCode::ENTERING_EXTENDED_PASSIVE_MODE
                } else {
                    ReplyCode::ENTERING_PASSIVE_MODE
                };
                // The port listens already (a client that connects at once is queued by the kernel); the
                // reply waits out the pacing (`SessionConfig::passive_reply_pacing`), commands meanwhile queue.
                let id = self.push_request(RequestKind::AcceptData);
                self.data.waiting = Some(id);
                let pacing = self.base.passive_reply_pacing;
                if pacing.is_zero() {
                    self.reply(code, text);
                } else {
                    self.delayed_reply = Some((code, text, false));
                    self.timers.reply_delay = Some(self.now + pacing);
                }
            }
            (Pending::Cwd { path }, Outcome::Metadata(info)) => {
                if info.kind == FileKind::File {
                    self.reply(ReplyCode::FILE_NOT_AVAILABLE, "Not a directory");
                } else {
                    self.cwd = path;
                    self.reply(ReplyCode::FILE_ACTION_OK, "Directory changed");
                }
            }
            (Pending::Size, Outcome::Metadata(info)) => {
                if info.kind == FileKind::Dir {
                    self.reply(ReplyCode::FILE_NOT_AVAILABLE, "Not a plain file");
                } else {
                    self.reply(ReplyCode::FILE_STATUS, info.size.to_string());
                }
            }
            (Pending::Mdtm, Outcome::Metadata(info)) => match &info.modified {
                Some(t) => self.reply(ReplyCode::FILE_STATUS, listing::timeval(t)),
                None => self.reply(ReplyCode::FILE_NOT_AVAILABLE, "Modification time unknown"),
            },
            (Pending::Mlst { path }, Outcome::Metadata(info)) => {
                // RFC 3659 section 7.2: one fact line, starting with a space, naming the path.
                let line = format!(" {}", listing::facts(&info, self.facts, path.as_str()));
                self.reply_lines(
                    ReplyCode::FILE_ACTION_OK,
                    vec![format!("Listing {path}"), line, "End".to_owned()],
                );
            }
            (Pending::Rnfr { path }, Outcome::Metadata(_)) => {
                self.rnfr = Some(path);
                self.reply(ReplyCode::FILE_ACTION_PENDING, "Ready for RNTO");
            }
            (Pending::StatList { path }, Outcome::Listing(entries)) => {
                self.stat_list(&path, &entries, None);
            }
            (Pending::StatList { path }, Outcome::ListingAt { entries, now }) => {
                self.stat_list(&path, &entries, Some(&now));
            }
            (Pending::StatFile { path }, Outcome::Metadata(mut info)) => {
                info.name = path.file_name().unwrap_or("/").to_owned();
                self.stat_list(&path, &[info], None);
            }
            (Pending::Simple { code, text }, Outcome::Done) => self.reply(code, text),
            (Pending::Mfmt { path, time }, Outcome::Done) => {
                let text = format!("Modify={}; {}", listing::timeval(&time), path);
                self.reply(ReplyCode::FILE_STATUS, text);
            }
            (Pending::Mfmt { path, time }, Outcome::Metadata(info)) => match info.modified {
                // Filesystems clamp what they cannot store (ext4: before 1901 or after 2446): say what is set.
                Some(set) => {
                    let text = format!("Modify={}; {}", listing::timeval(&set), path);
                    self.reply(ReplyCode::FILE_STATUS, text);
                }
                None => {
                    let text = format!("Modify={}; {}", listing::timeval(&time), path);
                    self.reply(ReplyCode::FILE_STATUS, text);
                }
            },
            (Pending::Site, Outcome::SiteReply(lines)) => {
                let mut lines: Vec<String> = lines
                    .into_iter()
                    .map(|l| l.replace(['\r', '\n'], " "))
                    .collect();
                if lines.is_empty() {
                    lines.push("OK".to_owned());
                }
                self.reply_lines(ReplyCode::COMMAND_OK, lines);
            }
            (Pending::Site, Outcome::Done) => self.reply(ReplyCode::COMMAND_OK, "OK"),
            (Pending::Passive { .. }, _) => {
                self.data.passive = false;
                self.reply(ReplyCode::LOCAL_ERROR, "Unexpected answer");
            }
            _ => self.reply(ReplyCode::LOCAL_ERROR, "Unexpected answer"),
        }
    }

    // ----- output helpers -----

    fn next_id(&mut self) -> ReqId {
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
        match self.control {
            Control::Plain => reply.encode(&mut self.wire_out),
            Control::Tls(_) => reply.encode(&mut self.tls_plain_out),
        }
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
