//! The server: listeners, session limits, graceful shutdown, and the [`Server`] library entry point.
//!
//! ```no_run
//! use std::sync::Arc;
//! use ftps_server_smol::server::{ListenerOptions, Server};
//! use ftps_server_smol::storage::MemoryStorage;
//! # fn tls() -> Arc<rustls::ServerConfig> { unimplemented!() }
//! # fn users() -> Arc<dyn ftps_server_smol::auth::Authenticator> { unimplemented!() }
//!
//! let server = Server::builder()
//!     .storage(Arc::new(MemoryStorage::new()))
//!     .authenticator(users())
//!     .tls(tls())
//!     .build();
//! smol::block_on(async {
//!     let listener = smol::net::TcpListener::bind("127.0.0.1:2121").await?;
//!     server.serve(listener, ListenerOptions::default()).await
//! })
//! .unwrap();
//! ```

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_listener::Event;
use ftps_proto::data::ResumptionPolicy;
use ftps_proto::server::{Refusal, SessionConfig};
use smol::net::TcpListener;

use crate::auth::{Authenticator, CheckSlot, LoginThrottle};
use crate::certs::CertReloader;
use crate::config::{Config, DataResumption, ListenMode, PortRange};
use crate::listener::PassivePorts;
use crate::startup::ServerParts;
use crate::storage::Storage;

/// Where the TLS configuration comes from: fixed, or reloaded when the files change.
#[derive(Clone)]
enum TlsSource {
    Fixed(Arc<rustls::ServerConfig>),
    Reloading(Arc<CertReloader>),
}

impl TlsSource {
    fn current(&self) -> Arc<rustls::ServerConfig> {
        match self {
            Self::Fixed(config) => Arc::clone(config),
            Self::Reloading(reloader) => reloader.current(),
        }
    }
}

/// Limits that protect the server as a whole.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sessions at once, over all clients.
    pub max_sessions: usize,
    /// Sessions at once from one IP address.
    pub max_sessions_per_ip: usize,
    /// How long a data connection may stay silent.
    pub data_idle_timeout: Duration,
    /// How long a write to a client that does not read may block.
    pub write_timeout: Duration,
    /// How long running transfers may go on after a shutdown request.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sessions: 1000,
            max_sessions_per_ip: 50,
            data_idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// What is shared by every session of a server.
pub(crate) struct Shared {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) authenticator: Arc<dyn Authenticator>,
    tls: Option<TlsSource>,
    session: SessionConfig,
    /// The TLS client config of site-to-site data connections (`SSCN`/`CPSV`), unless the session config
    /// brought its own.
    site_to_site_tls: Arc<rustls::ClientConfig>,
    limits: Limits,
    throttle: Option<Arc<LoginThrottle>>,
    log_transfers: bool,
    /// `LocalStorage::with_sync_on_commit` for users whose home is a directory of its own.
    pub(crate) sync_on_commit: bool,
    next_id: AtomicU64,
    sessions: AtomicUsize,
    /// Passive listeners bound right now (see [`ServerStats::passive_listeners`]).
    passive_listeners: Arc<AtomicUsize>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Admitted sessions that have not sent a command yet, oldest first (by admission number): when the server is
    /// full, a new connection evicts the oldest of them instead of being refused.
    silent: Mutex<BTreeMap<u64, Arc<Silent>>>,
    /// Admission numbers for `silent`.
    admitted: AtomicU64,
    /// Evicted sessions that have not ended yet: the server holds at most this many sessions over the cap.
    evicting: AtomicUsize,
    shutting_down: AtomicBool,
    shutdown: Event,
}

impl Shared {
    pub(crate) fn next_session_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Why a new connection from `ip` must be refused, if it must.
    pub(crate) fn refusal_for(&self, ip: IpAddr) -> Option<Refusal> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Some(Refusal::ShuttingDown);
        }
        if self.is_locked_out(ip) {
            return Some(Refusal::LockedOut);
        }
        None
    }

    pub(crate) fn is_locked_out(&self, ip: IpAddr) -> bool {
        self.throttle
            .as_ref()
            .is_some_and(|t| t.is_locked(ip, Instant::now()))
    }

    /// Reserves a password check for `ip` in the lockout before it runs, waiting while checks already running
    /// fill the address's budget; `false`: locked out, refuse without checking.
    pub(crate) async fn begin_login(&self, ip: IpAddr) -> bool {
        let Some(throttle) = &self.throttle else {
            return true;
        };
        loop {
            match throttle.begin(ip, Instant::now()) {
                CheckSlot::Go => return true,
                CheckSlot::Locked => return false,
                // A password check takes milliseconds (argon2id ~35 ms): look again shortly.
                CheckSlot::Wait => smol::Timer::after(Duration::from_millis(5)).await,
            };
        }
    }

    /// Ends a check [`Shared::begin_login`] reserved.
    pub(crate) fn finish_login(&self, ip: IpAddr, accepted: bool) {
        if let Some(throttle) = &self.throttle {
            if throttle.finish(ip, accepted, Instant::now()) {
                tracing::warn!(%ip, "address locked out after repeated failed logins");
            }
        }
    }

    /// The gauge a session's passive listener counts itself in while it is bound.
    pub(crate) fn passive_gauge(&self) -> &Arc<AtomicUsize> {
        &self.passive_listeners
    }

    pub(crate) fn log_transfers(&self) -> bool {
        self.log_transfers
    }

    pub(crate) fn data_idle_timeout(&self) -> Duration {
        self.limits.data_idle_timeout
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        self.limits.write_timeout
    }

    /// Resolves when a shutdown has been requested.
    pub(crate) async fn shutdown_requested(&self) {
        loop {
            if self.shutting_down.load(Ordering::Acquire) {
                return;
            }
            let listener = self.shutdown.listen();
            if self.shutting_down.load(Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }

    /// Counts a session in, or says which limit refuses it (the guard counts it out on drop).
    ///
    /// An address over `max_sessions_per_ip` is refused. A server at `max_sessions` evicts its oldest session that
    /// has not sent a command yet (421) and admits the newcomer in its place; only when every session has spoken
    /// is the newcomer refused. Silent connections therefore cannot lock clients out, even from many addresses:
    /// a client sends its first command within a round trip, so it is rarely the oldest silent one.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<SessionGuard, Refusal> {
        let mut per_ip = self.per_ip.lock().map_err(|_| Refusal::TooManySessions)?;
        if per_ip.get(&ip).copied().unwrap_or(0) >= self.limits.max_sessions_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        let over = self
            .sessions
            .load(Ordering::Relaxed)
            .saturating_sub(self.evicting.load(Ordering::Relaxed));
        if over >= self.limits.max_sessions && !self.evict_oldest_silent() {
            return Err(Refusal::TooManySessions);
        }
        *per_ip.entry(ip).or_insert(0) += 1;
        self.sessions.fetch_add(1, Ordering::Relaxed);
        let silent = Arc::new(Silent {
            key: self.admitted.fetch_add(1, Ordering::Relaxed),
            evicted: AtomicBool::new(false),
            event: Event::new(),
        });
        if let Ok(mut map) = self.silent.lock() {
            map.insert(silent.key, Arc::clone(&silent));
        }
        Ok(SessionGuard {
            shared: Arc::clone(self),
            ip,
            silent,
        })
    }

    /// Tells the oldest session that has not spoken to close; `false` when there is none (or too many evicted
    /// sessions are still ending: at most a sixteenth of the cap, so a flood cannot push the count far over it).
    fn evict_oldest_silent(&self) -> bool {
        if self.evicting.load(Ordering::Relaxed) > self.limits.max_sessions / 16 {
            return false;
        }
        let Some(victim) = self
            .silent
            .lock()
            .ok()
            .and_then(|mut map| map.pop_first().map(|(_, v)| v))
        else {
            return false;
        };
        self.evicting.fetch_add(1, Ordering::Relaxed);
        victim.evicted.store(true, Ordering::Release);
        victim.event.notify(usize::MAX);
        true
    }

    /// The session behind `silent` has sent a command: it may no longer be evicted.
    pub(crate) fn spoke(&self, silent: &Silent) {
        if let Ok(mut map) = self.silent.lock() {
            map.remove(&silent.key);
        }
    }
}

/// A session that may be evicted until it sends its first command (see [`Shared::admit`]).
pub(crate) struct Silent {
    key: u64,
    evicted: AtomicBool,
    event: Event,
}

impl Silent {
    /// Resolves when the server evicts this session.
    pub(crate) async fn evicted(&self) {
        loop {
            if self.evicted.load(Ordering::Acquire) {
                return;
            }
            let listener = self.event.listen();
            if self.evicted.load(Ordering::Acquire) {
                return;
            }
            listener.await;
        }
    }
}

/// Keeps one session counted while it lives.
pub(crate) struct SessionGuard {
    shared: Arc<Shared>,
    ip: IpAddr,
    silent: Arc<Silent>,
}

impl SessionGuard {
    /// The session's eviction handle.
    pub(crate) fn silent(&self) -> &Arc<Silent> {
        &self.silent
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.shared.spoke(&self.silent);
        if self.silent.evicted.load(Ordering::Acquire) {
            self.shared.evicting.fetch_sub(1, Ordering::Relaxed);
        }
        self.shared.sessions.fetch_sub(1, Ordering::Relaxed);
        if let Ok(mut per_ip) = self.shared.per_ip.lock() {
            if let Some(n) = per_ip.get_mut(&self.ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_ip.remove(&self.ip);
                }
            }
        }
    }
}

/// Per-listener settings.
#[derive(Debug, Clone, Default)]
pub struct ListenerOptions {
    /// Implicit FTPS (TLS from the first byte, port 990 style) instead of explicit `AUTH TLS`.
    pub implicit: bool,
    /// Ports for passive data connections; `None` lets the OS pick.
    pub passive_ports: Option<PortRange>,
    /// The IPv4 address to announce in 227 replies (behind NAT).
    pub passive_public_ipv4: Option<Ipv4Addr>,
}

/// What sessions of one listener share.
pub(crate) struct ListenerContext {
    options: ListenerOptions,
    pub(crate) passive_ports: PassivePorts,
}

impl ListenerContext {
    /// The engine policy for a new session on this listener, with the current TLS config.
    pub(crate) fn session_config(&self, shared: &Shared) -> SessionConfig {
        let mut config = shared.session.clone();
        config.tls = shared.tls.as_ref().map(TlsSource::current);
        if config.site_to_site_tls.is_none() && config.tls.is_some() {
            // Offered only to sessions whose (user) policy allows site-to-site transfers.
            config.site_to_site_tls = Some(Arc::clone(&shared.site_to_site_tls));
        }
        config.implicit_tls = self.options.implicit;
        config.passive_public_ipv4 = self.options.passive_public_ipv4;
        config
    }
}

/// An FTPS server: storage, users, TLS and policy, ready to serve listeners.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

/// Builds a [`Server`].
pub struct ServerBuilder {
    storage: Option<Arc<dyn Storage>>,
    authenticator: Option<Arc<dyn Authenticator>>,
    tls: Option<TlsSource>,
    session: SessionConfig,
    limits: Limits,
    throttle: Option<Arc<LoginThrottle>>,
    log_transfers: bool,
    sync_on_commit: bool,
}

impl Server {
    /// Starts building a server. Storage and an authenticator are required.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            storage: None,
            authenticator: None,
            tls: None,
            session: SessionConfig::default(),
            limits: Limits::default(),
            throttle: None,
            log_transfers: true,
            sync_on_commit: false,
        }
    }

    /// Accepts connections on `listener` until [`Server::shutdown`] is called, each session on its own task.
    ///
    /// # Errors
    /// When accepting fails in a way that will not go away (not for a single failed connection).
    pub async fn serve(&self, listener: TcpListener, options: ListenerOptions) -> io::Result<()> {
        let context = Arc::new(ListenerContext {
            passive_ports: PassivePorts::new(options.passive_ports),
            options,
        });
        loop {
            let accepted =
                futures_lite::future::or(async { Some(listener.accept().await) }, async {
                    self.shared.shutdown_requested().await;
                    None
                })
                .await;
            let Some(accepted) = accepted else {
                return Ok(());
            };
            let (stream, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    async_io::Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let shared = Arc::clone(&self.shared);
            let context = Arc::clone(&context);
            // Over a limit, the engine still answers (421) before the connection closes.
            let (guard, refusal) = match self.shared.admit(peer.ip()) {
                Ok(guard) => (Some(guard), None),
                Err(refusal) => (None, Some(refusal)),
            };
            smol::spawn(async move {
                let silent = guard.as_ref().map(|g| Arc::clone(g.silent()));
                crate::session::run(shared, context, stream, refusal, silent).await;
                drop(guard);
            })
            .detach();
        }
    }

    /// Stops accepting; idle sessions close, transfers get the shutdown grace period.
    pub fn shutdown(&self) {
        self.shared.shutting_down.store(true, Ordering::Release);
        self.shared.shutdown.notify(usize::MAX);
    }

    /// Sessions open right now.
    pub fn session_count(&self) -> usize {
        self.shared.sessions.load(Ordering::Relaxed)
    }

    /// What the server holds right now: a gauge for monitoring, and for tests that prove every disconnect
    /// releases its session and its passive listener.
    pub fn stats(&self) -> ServerStats {
        ServerStats {
            sessions: self.shared.sessions.load(Ordering::Relaxed),
            passive_listeners: self.shared.passive_listeners.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of [`Server::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ServerStats {
    /// Control connections admitted and not yet closed (connections refused with 421 are not counted).
    pub sessions: usize,
    /// Passive data listeners bound (at most one per session: a new `PASV`/`EPSV` releases the previous one).
    pub passive_listeners: usize,
}

impl ServerBuilder {
    /// Where files live (users see their home inside it).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Who may log in.
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// A fixed TLS configuration.
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsSource::Fixed(config));
        self
    }

    /// A TLS configuration reloaded when its files change; new sessions get the new one.
    pub fn tls_reloading(mut self, reloader: Arc<CertReloader>) -> Self {
        self.tls = Some(TlsSource::Reloading(reloader));
        self
    }

    /// The engine policy (TLS requirements, resumption, timeouts...).
    pub fn session_config(mut self, config: SessionConfig) -> Self {
        self.session = config;
        self
    }

    /// Server-wide limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The per-IP failed-login lockout.
    pub fn login_throttle(mut self, throttle: Arc<LoginThrottle>) -> Self {
        self.throttle = Some(throttle);
        self
    }

    /// Whether to log one line per transfer (default on).
    pub fn log_transfers(mut self, on: bool) -> Self {
        self.log_transfers = on;
        self
    }

    /// Whether the storage of users whose home is a directory of its own (`UserHome::Directory`) makes
    /// uploads durable before `226` (`LocalStorage::with_sync_on_commit`; default off, the binary's
    /// `[storage] fsync` default on). The main storage is configured where it is built.
    pub fn sync_on_commit(mut self, on: bool) -> Self {
        self.sync_on_commit = on;
        self
    }

    /// The server.
    ///
    /// # Panics
    /// When storage or the authenticator was not set: a programming error, not a runtime condition.
    #[allow(clippy::expect_used)]
    pub fn build(self) -> Server {
        Server {
            shared: Arc::new(Shared {
                storage: self
                    .storage
                    .expect("Server::builder().storage(..) is required"),
                authenticator: self
                    .authenticator
                    .expect("Server::builder().authenticator(..) is required"),
                tls: self.tls,
                session: self.session,
                // ring supports both versions; only a provider without them could fail here.
                site_to_site_tls: ftps_proto::server::site_to_site_client_config(&[
                    &rustls::version::TLS13,
                    &rustls::version::TLS12,
                ])
                .expect("the ring provider supports TLS 1.2 and 1.3"),
                limits: self.limits,
                throttle: self.throttle,
                log_transfers: self.log_transfers,
                sync_on_commit: self.sync_on_commit,
                next_id: AtomicU64::new(1),
                sessions: AtomicUsize::new(0),
                passive_listeners: Arc::new(AtomicUsize::new(0)),
                per_ip: Mutex::new(HashMap::new()),
                silent: Mutex::new(BTreeMap::new()),
                admitted: AtomicU64::new(0),
                evicting: AtomicUsize::new(0),
                shutting_down: AtomicBool::new(false),
                shutdown: Event::new(),
            }),
        }
    }
}

/// The longest the engine holds a preliminary reply for the data handshake (see `SessionConfig`).
pub const PRELIMINARY_REPLY_WAIT: Duration = Duration::from_secs(1);

/// The engine policy a configuration file describes.
pub fn session_config_from(config: &Config) -> SessionConfig {
    let limits = &config.limits;
    SessionConfig {
        require_tls_control: config.policy.require_tls_control,
        require_tls_data: config.policy.require_tls_data,
        data_resumption: match config.policy.data_resumption {
            DataResumption::Required => ResumptionPolicy::Required,
            DataResumption::Preferred => ResumptionPolicy::Preferred,
            DataResumption::Off => ResumptionPolicy::Off,
        },
        data_resumption_scope: match config.policy.data_resumption_scope {
            crate::config::ResumptionScope::User => ftps_proto::server::ResumptionScope::User,
            crate::config::ResumptionScope::Session => ftps_proto::server::ResumptionScope::Session,
        },
        allow_anonymous: config.anonymous.enabled,
        allow_ccc: config.policy.allow_ccc,
        allow_site_to_site: config.policy.allow_site_to_site,
        idle_timeout: limits.idle_timeout(),
        login_timeout: limits.login_timeout(),
        auth_timeout: limits.auth_timeout(),
        data_accept_timeout: limits.data_timeout(),
        max_failed_logins: limits.max_failed_logins,
        max_line_len: limits.max_line_len,
        passive_reply_pacing: limits.passive_reply_pacing(),
        // This frontend reports data readiness (transfer.rs), so the engine may hold the 150 for it.
        preliminary_reply_wait: PRELIMINARY_REPLY_WAIT,
        ..SessionConfig::default()
    }
}

/// Runs the server a configuration describes until SIGINT/SIGTERM: every listener, certificate reloads on
/// SIGHUP and file changes, graceful shutdown.
///
/// # Errors
/// When a listener cannot be bound or a public address cannot be resolved.
pub fn run(parts: ServerParts) -> Result<(), String> {
    let config = parts.config;
    let limits = Limits {
        max_sessions: config.limits.max_sessions,
        max_sessions_per_ip: config.limits.max_sessions_per_ip,
        data_idle_timeout: config.limits.data_timeout(),
        write_timeout: config.limits.idle_timeout(),
        ..Limits::default()
    };
    let storage: Arc<dyn Storage> = Arc::new(parts.storage);
    let server = Server::builder()
        .storage(storage)
        .authenticator(parts.authenticator)
        .tls_reloading(Arc::clone(&parts.tls))
        .session_config(session_config_from(&config))
        .limits(limits)
        .login_throttle(parts.throttle)
        .log_transfers(config.log.transfers)
        .sync_on_commit(config.storage.fsync)
        .build();

    let mut bound = Vec::new();
    for listener in &config.listeners {
        let public = listener
            .resolve_public_address()
            .map_err(|e| e.to_string())?;
        let passive_public_ipv4 = match public {
            Some(IpAddr::V4(ip)) => Some(ip),
            Some(IpAddr::V6(_)) => {
                return Err(format!(
                "{}: passive_public_address must be IPv4 (227 replies carry IPv4; EPSV needs none)",
                listener.address
            ))
            }
            None => None,
        };
        let socket = std::net::TcpListener::bind(listener.address)
            .map_err(|e| format!("listen on {}: {e}", listener.address))?;
        let addr = socket.local_addr().map_err(|e| e.to_string())?;
        let implicit = listener.mode == ListenMode::Implicit;
        println!(
            "ftps-server: listening on {addr} ({} FTPS), passive ports {}-{}",
            if implicit { "implicit" } else { "explicit" },
            listener.passive_ports.first,
            listener.passive_ports.last
        );
        bound.push((
            socket,
            ListenerOptions {
                implicit,
                passive_ports: Some(listener.passive_ports),
                passive_public_ipv4,
            },
        ));
    }

    // Everything runs on smol's executor threads, which also drive the reactor. The main thread only waits
    // (futures-lite's block_on parks it without touching the reactor), so it cannot hold the reactor while the
    // executor thread runs the sessions, where a socket event could cost a wake-up across threads (measured
    // with 1000 small files: no difference beyond the noise; kept because the main thread has no I/O).
    futures_lite::future::block_on(smol::spawn(async move {
        let mut tasks = Vec::new();
        for (socket, options) in bound {
            let listener = TcpListener::try_from(socket).map_err(|e| e.to_string())?;
            let server = server.clone();
            tasks.push(smol::spawn(async move {
                if let Err(e) = server.serve(listener, options).await {
                    tracing::error!(error = %e, "listener failed");
                }
            }));
        }
        let reloader = Arc::clone(&parts.tls);
        let _reload = smol::spawn(watch_certificates(reloader));
        wait_for_signals(&parts.tls).await;
        tracing::info!("shutting down: no new sessions; transfers get the grace period");
        server.shutdown();
        for task in tasks {
            task.await;
        }
        let deadline = Instant::now() + server.shared.limits.shutdown_grace;
        while server.session_count() > 0 && Instant::now() < deadline {
            async_io::Timer::after(Duration::from_millis(100)).await;
        }
        Ok(())
    }))
}

/// Reloads the certificate when its files change (polled: portable and cheap).
async fn watch_certificates(reloader: Arc<CertReloader>) {
    loop {
        async_io::Timer::after(Duration::from_secs(5)).await;
        match reloader.reload_if_changed() {
            Ok(true) => tracing::info!("certificate reloaded (files changed)"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "certificate reload failed; keeping the old one"),
        }
    }
}

/// Waits for SIGINT or SIGTERM, reloading certificates on SIGHUP meanwhile.
async fn wait_for_signals(reloader: &CertReloader) {
    use async_signal::{Signal, Signals};
    use futures_lite::StreamExt;
    let Ok(mut signals) = Signals::new([Signal::Int, Signal::Term, Signal::Hup]) else {
        tracing::warn!("cannot install signal handlers; stop the server with SIGKILL");
        return futures_lite::future::pending().await;
    };
    while let Some(signal) = signals.next().await {
        match signal {
            Ok(Signal::Hup) => match reloader.reload() {
                Ok(()) => tracing::info!("certificate reloaded (SIGHUP)"),
                Err(e) => {
                    tracing::warn!(error = %e, "certificate reload failed; keeping the old one")
                }
            },
            Ok(_) => return,
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AuthOutcome, LoginAttempt};
    use crate::storage::{BoxFuture, MemoryStorage};
    use futures_lite::{AsyncBufReadExt, AsyncWriteExt};

    struct NoUsers;

    impl Authenticator for NoUsers {
        fn authenticate(&self, _attempt: LoginAttempt) -> BoxFuture<'_, AuthOutcome> {
            Box::pin(async { AuthOutcome::Denied })
        }
    }

    async fn first_line(stream: &smol::net::TcpStream) -> String {
        let mut line = String::new();
        let mut reader = futures_lite::io::BufReader::new(stream.clone());
        reader.read_line(&mut line).await.unwrap();
        line
    }

    #[test]
    fn the_auth_timeout_reaches_the_engine() {
        let config = Config::from_toml("[limits]\nauth_timeout = 3\n").unwrap();
        assert_eq!(
            session_config_from(&config).auth_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(
            session_config_from(&Config::default()).auth_timeout,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn over_the_per_address_limit_a_client_gets_421_and_a_close() {
        smol::block_on(async {
            let server = Server::builder()
                .storage(Arc::new(MemoryStorage::new()))
                .authenticator(Arc::new(NoUsers))
                .session_config(SessionConfig {
                    require_tls_control: false,
                    require_tls_data: false,
                    ..SessionConfig::default()
                })
                .limits(Limits {
                    max_sessions_per_ip: 1,
                    ..Limits::default()
                })
                .build();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let serving = server.clone();
            let task =
                smol::spawn(
                    async move { serving.serve(listener, ListenerOptions::default()).await },
                );

            let first = smol::net::TcpStream::connect(addr).await.unwrap();
            assert!(first_line(&first).await.starts_with("220 "));
            let second = smol::net::TcpStream::connect(addr).await.unwrap();
            assert_eq!(
                first_line(&second).await,
                "421 Too many connections from your address\r\n"
            );
            assert_eq!(server.session_count(), 1);

            // The first session still works, and once it ends a new one is admitted.
            let mut first = first;
            first.write_all(b"QUIT\r\n").await.unwrap();
            assert!(first_line(&first).await.starts_with("221 "));
            drop(first);
            let deadline = Instant::now() + Duration::from_secs(5);
            while server.session_count() > 0 && Instant::now() < deadline {
                async_io::Timer::after(Duration::from_millis(10)).await;
            }
            let third = smol::net::TcpStream::connect(addr).await.unwrap();
            assert!(first_line(&third).await.starts_with("220 "));

            // Shutdown: the idle session is told 421 by the engine, and serve() returns.
            server.shutdown();
            assert_eq!(first_line(&third).await, "421 Server shutting down\r\n");
            task.await.unwrap();
        });
    }
}
