//! What every session of one server shares (storage, users, TLS, limits, the session counts and the
//! eviction of silent sessions) and what the sessions of one listener share. The accept loops in
//! [`crate::server`] create it; sessions only read and count through it, so neither imports the other.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_listener::Event;
use ftps_proto::server::{Refusal, SessionConfig};

use crate::auth::{Authenticator, CheckSlot, LoginThrottle};
use crate::certs::CertReloader;
use crate::config::PortRange;
use crate::listener::PassivePorts;
use crate::storage::Storage;

/// Where the TLS configuration comes from: fixed, or reloaded when the files change.
#[derive(Clone)]
pub(crate) enum TlsSource {
    Fixed(Arc<rustls::ServerConfig>),
    Reloading(Arc<CertReloader>),
}

impl TlsSource {
    pub(crate) fn current(&self) -> Arc<rustls::ServerConfig> {
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
    pub(crate) tls: Option<TlsSource>,
    pub(crate) session: SessionConfig,
    /// The TLS client config of site-to-site data connections (`SSCN`/`CPSV`), unless the session config
    /// brought its own.
    pub(crate) site_to_site_tls: Arc<rustls::ClientConfig>,
    pub(crate) limits: Limits,
    pub(crate) throttle: Option<Arc<LoginThrottle>>,
    pub(crate) log_transfers: bool,
    /// `LocalStorage::with_sync_on_commit` for users whose home is a directory of its own.
    pub(crate) sync_on_commit: bool,
    /// Serve `/@at/` and `/@versions/` to every user (`TimeViews` over their storage).
    pub(crate) time_views: bool,
    /// Versions in the homes of users whose home is a directory of its own.
    pub(crate) home_versions: Option<HomeVersions>,
    pub(crate) next_id: AtomicU64,
    pub(crate) sessions: AtomicUsize,
    /// Passive listeners bound right now (see [`ServerStats::passive_listeners`](crate::server::ServerStats::passive_listeners)).
    pub(crate) passive_listeners: Arc<AtomicUsize>,
    pub(crate) per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// Admitted sessions that have not sent a command yet, oldest first (by admission number): when the server is
    /// full, a new connection evicts the oldest of them instead of being refused.
    pub(crate) silent: Mutex<BTreeMap<u64, Arc<Silent>>>,
    /// Admission numbers for `silent`.
    pub(crate) admitted: AtomicU64,
    /// Evicted sessions that have not ended yet: the server holds at most this many sessions over the cap.
    pub(crate) evicting: AtomicUsize,
    pub(crate) shutting_down: AtomicBool,
    pub(crate) shutdown: Event,
    pub(crate) metrics: crate::metrics::Metrics,
    pub(crate) proxy: crate::proxy::ProxyPolicy,
    pub(crate) events: Arc<crate::events::Events>,
    pub(crate) upload_check: Option<Arc<crate::upload_check::UploadCheck>>,
    /// Users' data keys for encryption at rest (`[encryption]`); `None`: files are stored as sent.
    pub(crate) keyring: Option<Arc<crate::keys::Keyring>>,
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
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<SessionGuard, Refusal> {
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
    pub(crate) key: u64,
    pub(crate) evicted: AtomicBool,
    pub(crate) event: Event,
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
    pub(crate) shared: Arc<Shared>,
    pub(crate) ip: IpAddr,
    pub(crate) silent: Arc<Silent>,
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
    pub(crate) options: ListenerOptions,
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

/// The versioning layer of each home that is a directory of its own, opened at its first login and shared by every
/// session of that home afterwards (one history log, one lock per home).
pub(crate) struct HomeVersions {
    options: crate::storage::VersionsOptions,
    prune_every: std::time::Duration,
    prune_batch: usize,
    homes: Mutex<HashMap<std::path::PathBuf, Arc<crate::storage::Versioned>>>,
}

impl HomeVersions {
    pub(crate) fn new(
        options: crate::storage::VersionsOptions,
        prune_every: std::time::Duration,
        prune_batch: usize,
    ) -> Self {
        Self {
            options,
            prune_every,
            prune_batch,
            homes: Mutex::new(HashMap::new()),
        }
    }

    /// The versioned storage of home `dir` (blocking at its first use: the history log is read).
    pub(crate) fn open(
        &self,
        dir: &std::path::Path,
        sync_on_commit: bool,
    ) -> std::io::Result<Arc<crate::storage::Versioned>> {
        let mut homes = self
            .homes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(home) = homes.get(dir) {
            return Ok(Arc::clone(home));
        }
        let local = crate::storage::LocalStorage::open(dir)?.with_sync_on_commit(sync_on_commit);
        let log = crate::storage::LocalStorage::history_log_path(dir)?;
        let versioned =
            crate::storage::Versioned::open(Arc::new(local), &log, self.options.clone())
                .map_err(std::io::Error::from)?;
        versioned.spawn_pruner(self.prune_every, self.prune_batch);
        let versioned = Arc::new(versioned);
        homes.insert(dir.to_path_buf(), Arc::clone(&versioned));
        Ok(versioned)
    }
}
