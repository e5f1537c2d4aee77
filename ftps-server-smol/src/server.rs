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
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_listener::Event;
use ftps_proto::data::ResumptionPolicy;
use ftps_proto::server::SessionConfig;
use smol::net::TcpListener;

use crate::auth::{Authenticator, LoginThrottle};
use crate::certs::CertReloader;
use crate::config::{Config, DataResumption, ListenMode};
use crate::events::{Events, SinkConfig, SinkTarget};
use crate::keys::Keyring;
use crate::listener::PassivePorts;
use crate::proxy::{Admission, ProxyPolicy};
pub use crate::shared::{Limits, ListenerOptions};
use crate::shared::{ListenerContext, Shared, TlsSource};
use crate::startup::ServerParts;
use crate::storage::{LocalStorage, Storage, Versioned, VersionsOptions};
use crate::upload_check::UploadCheck;

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
    proxy: ProxyPolicy,
    events: Arc<Events>,
    upload_check: Option<Arc<UploadCheck>>,
    time_views: bool,
    home_versions: Option<(VersionsOptions, Duration, usize)>,
    keyring: Option<Arc<Keyring>>,
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
            proxy: ProxyPolicy::default(),
            events: Arc::new(Events::default()),
            upload_check: None,
            time_views: false,
            home_versions: None,
            keyring: None,
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
            // Admitted here, in accept order, unless a proxy must first say whose connection it is.
            let early = (!shared.proxy.is_active()).then(|| shared.admit(peer.ip()));
            smol::spawn(async move {
                let (peer, admission) = match early {
                    Some(admission) => (peer, admission),
                    None => match shared.proxy.admit(&stream, peer).await {
                        Admission::Client(client) => (client, shared.admit(client.ip())),
                        Admission::Refuse(why) => {
                            tracing::debug!(%peer, why, "connection refused");
                            return;
                        }
                    },
                };
                // Over a limit, the engine still answers (421) before the connection closes.
                let (guard, refusal) = match admission {
                    Ok(guard) => (Some(guard), None),
                    Err(refusal) => (None, Some(refusal)),
                };
                if guard.is_some() {
                    shared.metrics.session_opened();
                }
                let silent = guard.as_ref().map(|g| Arc::clone(g.silent()));
                crate::session::run(shared, context, stream, peer, refusal, silent).await;
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

impl Server {
    /// The server's metrics in the Prometheus text format (what `[metrics] listen` serves at `/metrics`).
    pub fn metrics(&self) -> String {
        let stats = self.stats();
        self.shared.metrics.render(crate::metrics::Gauges {
            sessions: stats.sessions,
            passive_listeners: stats.passive_listeners,
        })
    }

    /// Serves [`Server::metrics`] at `GET /metrics` on `listener` (Prometheus scrapes it) until
    /// [`Server::shutdown`].
    pub async fn serve_metrics(&self, listener: TcpListener) {
        let server = self.clone();
        futures_lite::future::or(
            crate::metrics::serve(listener, move || server.metrics()),
            self.shared.shutdown_requested(),
        )
        .await;
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
    /// The PROXY protocol: which peers are load balancers whose header names the client (control and passive
    /// data connections alike), and whether only they may connect. Off by default.
    pub fn proxy_protocol(mut self, policy: ProxyPolicy) -> Self {
        self.proxy = policy;
        self
    }
    /// Where events go (webhooks, commands): see [`Events::start`]. None by default.
    pub fn events(mut self, events: Events) -> Self {
        self.events = Arc::new(events);
        self
    }
    /// Holds every upload until `check` accepts it (`[hooks] upload_check`). None by default.
    pub fn upload_check(mut self, check: UploadCheck) -> Self {
        // Spool files of uploads cut short by a crash wait for no one: start clean.
        if let Ok(entries) = std::fs::read_dir(&check.spool) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("upload.") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        self.upload_check = Some(Arc::new(check));
        self
    }

    /// Whether each user sees the history of the storage as the read-only paths `/@at/<TIME>/` and
    /// `/@versions/` ([`TimeViews`](crate::storage::TimeViews) over their home; default off). The storage must
    /// keep history, e.g. [`Versioned`].
    pub fn time_views(mut self, on: bool) -> Self {
        self.time_views = on;
        self
    }

    /// Keep versions in the homes of users whose home is a directory of its own (`UserHome::Directory`), with
    /// these options: each such home gets one [`Versioned`] layer (shared by all its sessions, history log in its
    /// own reserved folder), pruned in the background every `prune_every`, at most `prune_batch` a round.
    /// Default: none.
    pub fn home_versions(
        mut self,
        options: Option<VersionsOptions>,
        prune_every: Duration,
        prune_batch: usize,
    ) -> Self {
        self.home_versions = options.map(|o| (o, prune_every, prune_batch));
        self
    }

    /// Encrypt users' files at rest with their data keys from `keyring` (`[encryption]`). Default: none.
    pub fn encryption(mut self, keyring: Option<Arc<Keyring>>) -> Self {
        self.keyring = keyring;
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
                time_views: self.time_views,
                home_versions: self
                    .home_versions
                    .map(|(o, every, batch)| crate::shared::HomeVersions::new(o, every, batch)),
                next_id: AtomicU64::new(1),
                sessions: AtomicUsize::new(0),
                passive_listeners: Arc::new(AtomicUsize::new(0)),
                per_ip: Mutex::new(HashMap::new()),
                silent: Mutex::new(BTreeMap::new()),
                admitted: AtomicU64::new(0),
                evicting: AtomicUsize::new(0),
                metrics: crate::metrics::Metrics::default(),
                proxy: self.proxy,
                events: self.events,
                upload_check: self.upload_check,
                keyring: self.keyring,
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
    let sinks = config
        .webhooks
        .iter()
        .map(|w| SinkConfig {
            target: SinkTarget::Webhook {
                url: w.url.clone(),
                secret: w.secret.clone(),
            },
            events: w.events.clone(),
        })
        .chain(config.event_commands.iter().map(|c| SinkConfig {
            target: SinkTarget::Command {
                argv: c.command.clone(),
            },
            events: c.events.clone(),
        }))
        .collect();
    let events = Events::start(&config.state_dir, sinks).map_err(|e| format!("events: {e}"))?;
    let versions = &config.versions;
    // One set of options for the shared tree's versions and for those of users with a home of their own.
    let versions_options = if versions.enabled {
        Some(VersionsOptions {
            keep: versions.keep_duration().map_err(|e| e.to_string())?,
            max_per_file: (versions.max_per_file > 0).then_some(versions.max_per_file),
            sync: config.storage.fsync,
            clock: None,
        })
    } else {
        None
    };
    let prune_every = Duration::from_secs(versions.prune_interval.max(1));
    let prune_batch = versions.prune_batch.max(1);
    // Startup opened the bucket or the local root, never both.
    let storage: Arc<dyn Storage> = match (parts.object_storage, parts.storage, &versions_options) {
        (Some(bucket), _, _) => {
            // The bucket keeps the versions (checked enabled at start) and its lifecycle policy prunes them: no
            // `Versioned` layer and no pruner here.
            if versions.enabled {
                tracing::info!("versions served from the bucket's versioning; time views at /@at/<TIME>/ and /@versions/");
            }
            Arc::new(bucket)
        }
        (None, Some(local), Some(options)) => {
            let log = LocalStorage::history_log_path(&config.root)
                .map_err(|e| format!("versions: {}: {e}", config.root.display()))?;
            let versioned = Versioned::open(Arc::new(local), &log, options.clone())
                .map_err(|e| format!("versions: {}: {e}", log.display()))?;
            versioned.spawn_pruner(prune_every, prune_batch);
            tracing::info!(log = %log.display(), "versions kept; time views at /@at/<TIME>/ and /@versions/");
            Arc::new(versioned)
        }
        (None, Some(local), None) => Arc::new(local),
        (None, None, _) => return Err("no storage configured".into()),
    };
    let keyring = if config.encryption.enabled {
        // At start: a missing KEK file is generated, an unsafe one or a failing KMS hook stops the start here.
        let keyring = Keyring::from_config(&config.encryption, &config.state_dir)
            .map_err(|e| format!("encryption: {e}"))?;
        tracing::info!(keys = %keyring.dir().display(), kek = ?keyring, "files encrypted at rest");
        Some(Arc::new(keyring))
    } else {
        None
    };
    let mut builder = Server::builder().encryption(keyring);
    if let Some(check) = config.hooks.upload_check(&config.state_dir) {
        builder = builder.upload_check(check);
    }
    let server = builder
        .time_views(versions.enabled)
        .home_versions(versions_options, prune_every, prune_batch)
        .storage(storage)
        .authenticator(parts.authenticator)
        .tls_reloading(Arc::clone(&parts.tls))
        .session_config(session_config_from(&config))
        .limits(limits)
        .login_throttle(parts.throttle)
        .log_transfers(config.log.transfers)
        .sync_on_commit(config.storage.fsync)
        .events(events)
        .proxy_protocol(ProxyPolicy {
            trusted: config.proxy_protocol.trusted.clone(),
            required: config.proxy_protocol.required,
        })
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

    let metrics = match config.metrics.listen {
        Some(addr) => {
            let socket = std::net::TcpListener::bind(addr)
                .map_err(|e| format!("metrics: listen on {addr}: {e}"))?;
            let addr = socket.local_addr().map_err(|e| e.to_string())?;
            println!("ftps-server: metrics on http://{addr}/metrics");
            Some(socket)
        }
        None => None,
    };

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
        if let Some(socket) = metrics {
            let listener = TcpListener::try_from(socket).map_err(|e| e.to_string())?;
            let server = server.clone();
            tasks.push(smol::spawn(
                async move { server.serve_metrics(listener).await },
            ));
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
