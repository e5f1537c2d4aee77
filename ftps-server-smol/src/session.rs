//! One control connection: the engine's drive loop on smol.
//!
//! The loop keeps the contract of `ftps_proto::server`: after every input or completion it drains every
//! `poll_*` output, then waits for the earliest of control-socket input, a finished request, or the engine's
//! timeout. Requests run as tasks that report back through a channel; transfers run on their own tasks with the
//! owned `DataChannel`, so bulk bytes never pass through here. No reply codes or verbs: the engine does the FTP.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use async_io::Timer;
use ftps_proto::data::DataReady;
use ftps_proto::path::VirtualPath;
use ftps_proto::server as engine;
use ftps_proto::server::{
    Event, Failure, LoginGrant, Notice, Outcome, Output, Refusal, ReqId, Request, RequestKind,
    ServerSession, Source, UserPolicy, Work,
};
use futures_lite::{future, AsyncReadExt, AsyncWriteExt};
use smol::channel::{Receiver, Sender};
use smol::net::TcpStream;
use smol::Task;
use tracing::Instrument;

use crate::auth::{AuthOutcome, AuthenticatedUser, LoginAttempt, Permission, UserHome};
use crate::events::{tls_version_label, DigestSlot, EventKind, EventRecord, HashingUpload};
use crate::listener::CountedListener;
use crate::metrics::StorageOp;
use crate::proxy::Admission;
use crate::requests::{self, Answer, OpenFile};
use crate::shared::{ListenerContext, Shared, Silent};
use crate::storage::{DataKey, Encrypted, LocalStorage, ReadOnly, Storage, Subtree, TimeViews};
use crate::timing::{within, LazyTimer};
use crate::transfer::{self, Body};
use crate::upload_check::CheckedUpload;

/// The control-channel read buffer starts this small: an idle session holds it for its whole life, and commands
/// (RFC 959 section 4.1.3 lines) and TLS handshake flights fit in a few reads of it.
const CONTROL_READ_INITIAL: usize = 1024;
/// It doubles each time a read fills it, up to one TLS record (16 KiB plaintext, RFC 8446 section 5.1), so a
/// client that pipelines or sends big lines costs fewer reads; idle sessions never pay for that.
const CONTROL_READ_MAX: usize = 16 * 1024;
/// Reply bytes kept between writes; a bigger burst (a long `STAT` or `HELP` reply) is released after it is sent.
const CONTROL_WRITE_KEEP: usize = 1024;

/// What a finished piece of outside work reports to the loop.
enum Completion {
    /// A plain answer for the engine.
    Outcome(ReqId, Outcome),
    /// A login decision; the loop installs the user's storage before telling the engine.
    Login(ReqId, Option<LoggedIn>),
    /// A file opened for a transfer; the loop keeps it until `RunTransfer` or `ReleaseFile`.
    Opened(ReqId, OpenFile, Outcome),
    /// A data connection is up (accepted or connected); the engine decides whether its peer may be used.
    Connected(ReqId, TcpStream, SocketAddr),
    /// The transfer's data connection is ready for the preliminary reply.
    DataReady(DataReady),
}

/// An accepted user, with their data key when files are encrypted at rest.
struct LoggedIn {
    user: AuthenticatedUser,
    data_key: Option<DataKey>,
}

/// What one session holds for its requests.
struct Resources {
    /// The logged-in user's view of the storage.
    storage: Option<Arc<dyn Storage>>,
    user: Option<String>,
    /// Counted in the server's gauge; the accept task holds a clone while it waits.
    passive: Option<Arc<CountedListener>>,
    /// The data connection just reported to the engine, until its `DriveData` request takes it.
    data: Option<TcpStream>,
    /// The task driving the data connection (its TLS handshake) until a transfer runs on it: the `DriveData`
    /// id, and where the transfer's part goes.
    channel: Option<(ReqId, Sender<transfer::Start>, Task<()>)>,
    /// The task accepting or connecting the data connection, with its request id.
    data_wait: Option<(ReqId, Task<()>)>,
    files: HashMap<ReqId, OpenFile>,
    transfers: HashMap<ReqId, Task<()>>,
}

/// Spawns a task of this session: it logs in the session's span (the caller runs inside it).
fn spawn<T: Send + 'static>(work: impl Future<Output = T> + Send + 'static) -> Task<T> {
    smol::spawn(work.in_current_span())
}

/// Runs one control connection to its end; `refusal` turns it away with the engine's 421.
pub(crate) async fn run(
    shared: Arc<Shared>,
    listener: Arc<ListenerContext>,
    stream: TcpStream,
    peer: SocketAddr,
    refusal: Option<Refusal>,
    silent: Option<Arc<Silent>>,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let id = shared.next_session_id();
    // The span is attached to the session's future (and each task it spawns, see `spawn`), never entered with a
    // guard held across an await: a guard stays entered on the thread while the future is suspended, so every
    // other session polled there nested its span inside this one (nesting depth 3,001 in a flood of 3,000
    // connections, and transfer lines logged in another session's span).
    let span = tracing::info_span!("session", id, %peer);
    serve(shared, listener, stream, refusal, silent, peer, local)
        .instrument(span)
        .await;
}

/// [`run`] inside the session's span.
async fn serve(
    shared: Arc<Shared>,
    listener: Arc<ListenerContext>,
    stream: TcpStream,
    refusal: Option<Refusal>,
    silent: Option<Arc<Silent>>,
    peer: SocketAddr,
    local: SocketAddr,
) {
    tracing::info!(%local, "connected");

    let config = listener.session_config(&shared);
    let refusal = refusal.or_else(|| shared.refusal_for(peer.ip()));
    let mut session = match refusal {
        Some(refusal) => {
            tracing::warn!(?refusal, "connection refused");
            ServerSession::refuse(config, peer, local, Instant::now(), refusal)
        }
        None => ServerSession::new(config, peer, local, Instant::now()),
    };
    let (done_tx, done_rx) = smol::channel::unbounded();
    let mut driver = Driver {
        shared,
        listener,
        stream,
        peer,
        local,
        done_tx,
        done_rx,
        res: Resources {
            storage: None,
            user: None,
            passive: None,
            data: None,
            channel: None,
            data_wait: None,
            files: HashMap::new(),
            transfers: HashMap::new(),
        },
        out: Vec::new(),
        input: vec![0; CONTROL_READ_INITIAL],
        pending: 0..0,
        shutdown_seen: false,
        silent,
        deadline: LazyTimer::new(),
        control_tls: None,
        upload_digest: DigestSlot::default(),
    };
    let result = driver.drive(&mut session).await;
    if let Err(e) = result {
        tracing::info!(error = %e, "control connection ended");
    }
    // Dropping the tasks cancels them: open uploads abort, data sockets close.
    driver.res.transfers.clear();
    driver.res.channel = None;
    driver.res.data_wait = None;
    let _ = driver.stream.shutdown(std::net::Shutdown::Both);
    tracing::info!("closed");
}

struct Driver {
    shared: Arc<Shared>,
    listener: Arc<ListenerContext>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    done_tx: Sender<Completion>,
    done_rx: Receiver<Completion>,
    res: Resources,
    out: Vec<u8>,
    input: Vec<u8>,
    /// Read but not yet taken by the engine (it takes less while its bounded queues are full).
    pending: std::ops::Range<usize>,
    /// The server's shutdown has been passed to the engine.
    shutdown_seen: bool,
    /// Until the client's first command: the server may evict this session to admit another.
    silent: Option<Arc<Silent>>,
    /// Fires by the engine's next deadline (`poll_timeout`).
    deadline: LazyTimer,
    /// The control connection's TLS version, for events.
    control_tls: Option<&'static str>,
    /// The SHA-256 of the last committed upload, for its event (only while events are on).
    upload_digest: DigestSlot,
}

enum Wake {
    Read(io::Result<usize>),
    Done(Option<Completion>),
    Timer,
    Shutdown,
    Evicted,
}

impl Driver {
    async fn drive(&mut self, session: &mut ServerSession) -> io::Result<()> {
        loop {
            // Before the reply goes out: a client that has its answer must no longer count as silent, or a full
            // server could evict it for a newcomer (seen in CI: the last NOOP's 200 arrived first).
            if !session.awaits_first_command() {
                if let Some(silent) = self.silent.take() {
                    self.shared.spoke(&silent);
                }
            }
            self.drain(session).await?;
            if session.is_closed() {
                return Ok(());
            }
            // Offer input the engine could not take before; if it takes some, drain again.
            if !self.pending.is_empty() {
                let took = session.handle_input(Instant::now(), &self.input[self.pending.clone()]);
                self.pending.start += took;
                if took > 0 {
                    continue;
                }
            }
            if let Some(at) = session.poll_timeout() {
                self.deadline.arm_by(at);
            }
            let can_read = self.pending.is_empty();
            let watch_shutdown = !self.shutdown_seen;
            let wake = {
                let (reader, input) = (&mut self.stream, &mut self.input);
                let (done_rx, shared) = (&self.done_rx, &self.shared);
                let deadline = &mut self.deadline;
                let read = async {
                    if can_read {
                        Wake::Read(reader.read(input).await)
                    } else {
                        future::pending().await
                    }
                };
                let done = async { Wake::Done(done_rx.recv().await.ok()) };
                let timer = async {
                    deadline.fired().await;
                    Wake::Timer
                };
                let shutdown = async {
                    if watch_shutdown {
                        shared.shutdown_requested().await;
                    } else {
                        future::pending::<()>().await;
                    }
                    Wake::Shutdown
                };
                let silent = self.silent.as_deref();
                let evicted = async {
                    match silent {
                        Some(silent) => silent.evicted().await,
                        None => future::pending::<()>().await,
                    }
                    Wake::Evicted
                };
                let wait = future::or(future::or(read, done), future::or(timer, shutdown));
                future::or(wait, evicted).await
            };
            let now = Instant::now();
            match wake {
                Wake::Read(Ok(0)) | Wake::Read(Err(_)) => session.handle_eof(now),
                Wake::Read(Ok(n)) => {
                    let took = session.handle_input(now, &self.input[..n]);
                    self.pending = took..n;
                    if n == self.input.len() && n < CONTROL_READ_MAX {
                        // Growing keeps the unconsumed bytes where `pending` points.
                        self.input.resize((n * 2).min(CONTROL_READ_MAX), 0);
                    }
                }
                Wake::Done(Some(completion)) => self.complete(session, completion),
                Wake::Done(None) => {}
                // The timer may fire before the engine's current deadline (it is re-armed lazily).
                Wake::Timer => {
                    if session.poll_timeout().is_some_and(|at| at <= now) {
                        session.handle_timeout(now);
                    }
                }
                // Graceful shutdown: the engine says 421 now, or after a running transfer's final reply; the
                // server ends the process after its grace period whatever is left.
                Wake::Shutdown => {
                    self.shutdown_seen = true;
                    session.shutdown(now);
                }
                // The server is full and this session has not spoken: the engine says 421 and closes.
                Wake::Evicted => {
                    self.silent = None;
                    tracing::info!("evicted to admit a new connection (no command sent yet)");
                    session.evict(now);
                }
            }
        }
    }

    /// Drains every engine output, one at a time (`poll_output`): control bytes, events, requests and
    /// notices, until the engine waits.
    async fn drain(&mut self, session: &mut ServerSession) -> io::Result<()> {
        loop {
            self.out.clear();
            match session.poll_output(&mut self.out) {
                Output::Transmit(_) => {
                    let idle = self.shared.write_timeout();
                    within(idle, self.stream.write_all(&self.out))
                        .await
                        .unwrap_or_else(|| {
                            Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "client does not read",
                            ))
                        })?;
                    if self.out.capacity() > CONTROL_WRITE_KEEP {
                        self.out.clear();
                        self.out.shrink_to(CONTROL_WRITE_KEEP);
                    }
                }
                Output::Event(event) => self.log(event),
                Output::Work(Work::Request(request)) => self.start(session, request),
                Output::Work(Work::Notice(notice)) => self.act_on(session, notice),
                Output::Wait(_) => return Ok(()),
            }
        }
    }

    fn log(&mut self, event: Event) {
        self.shared.metrics.record(&event);
        if self.shared.events.is_active() {
            self.emit_event_for(&event);
        }
        match event {
            Event::Command(line) => {
                tracing::info!(target: "ftps::protocol", user = self.res.user.as_deref().unwrap_or("-"), "> {line}")
            }
            Event::Reply(reply) => {
                tracing::info!(target: "ftps::protocol", "< {} {}", reply.code.get(), reply.lines.join(" | "))
            }
            Event::TlsEstablished(info) => tracing::info!(
                version = ?info.version,
                suite = ?info.cipher_suite,
                resumed = info.resumed,
                "control TLS established"
            ),
            // The lockout counted the check when it ran (`Shared::begin_login`).
            Event::LoggedIn { user, anonymous } => tracing::info!(%user, anonymous, "logged in"),
            Event::LoginFailed { user } => tracing::warn!(%user, "login failed"),
            Event::TransferFinished(record) => {
                if self.shared.log_transfers() {
                    tracing::info!(
                        target: "ftps::transfer",
                        peer = %self.peer,
                        user = self.res.user.as_deref().unwrap_or("-"),
                        path = record.path.as_str(),
                        bytes = record.bytes,
                        direction = ?record.direction,
                        duration_ms = record.duration.as_millis() as u64,
                        status = record.status.get(),
                        tls = ?record.tls.as_ref().map(|t| t.version),
                        resumed = record.tls.as_ref().is_some_and(|t| t.resumed),
                        "transfer"
                    );
                }
            }
            Event::Closed(reason) => tracing::info!(?reason, "session closed"),
            Event::DataConnectionRefused { peer } => {
                tracing::warn!(%peer, "data connection from a foreign address refused (PASV hijack protection)")
            }
            other => tracing::debug!(?other, "event"),
        }
    }

    /// The event a storage request makes when it succeeds: deletes, renames, directories made and removed.
    fn change_event(&self, kind: &RequestKind) -> Option<EventRecord> {
        let (event, path, target) = match kind {
            RequestKind::Delete { path } => (EventKind::Delete, path, None),
            RequestKind::Rename { from, to } => (EventKind::Rename, from, Some(to)),
            RequestKind::MakeDir { path } => (EventKind::Mkdir, path, None),
            RequestKind::RemoveDir { path } => (EventKind::Rmdir, path, None),
            _ => return None,
        };
        let mut record = EventRecord::new(event, self.peer.ip());
        record.path = Some(path.as_str().to_owned());
        record.target = target.map(|t| t.as_str().to_owned());
        record.user.clone_from(&self.res.user);
        record.tls_version = self.control_tls;
        Some(record)
    }

    /// Queues the user-level event (login, logout, upload, download) that an engine event stands for, if any.
    fn emit_event_for(&mut self, event: &Event) {
        let ip = self.peer.ip();
        let mut record = match event {
            Event::TlsEstablished(info) => {
                self.control_tls = Some(tls_version_label(info.version));
                return;
            }
            Event::LoggedIn { user, .. } => {
                let mut record = EventRecord::new(EventKind::Login, ip);
                record.user = Some(user.clone());
                record
            }
            Event::LoginFailed { user } => {
                let mut record = EventRecord::new(EventKind::LoginFailed, ip);
                record.user = Some(user.clone());
                record.status = "failed";
                record
            }
            Event::Closed(_) if self.res.user.is_some() => EventRecord::new(EventKind::Logout, ip),
            Event::TransferFinished(transfer) if !transfer.listing => {
                let rejected =
                    transfer.failure == Some(Failure::Storage(engine::StorageError::Rejected));
                let kind = match transfer.direction {
                    _ if rejected => EventKind::UploadRejected,
                    ftps_proto::server::Direction::Upload => EventKind::Upload,
                    ftps_proto::server::Direction::Download => EventKind::Download,
                };
                let mut record = EventRecord::new(kind, ip);
                record.path = Some(transfer.path.as_str().to_owned());
                record.size = Some(transfer.bytes);
                record.data_tls_resumed = transfer.tls.as_ref().map(|t| t.resumed);
                record.reply_code = Some(transfer.status.get());
                if transfer.failure.is_some() {
                    record.status = "failed";
                }
                if kind == EventKind::Upload {
                    // Set by the commit of this transfer's upload; taken so a failed one never shows the last.
                    record.sha256 = self.upload_digest.lock().ok().and_then(|mut d| d.take());
                }
                record
            }
            _ => return,
        };
        if record.user.is_none() {
            record.user.clone_from(&self.res.user);
        }
        record.tls_version = self.control_tls;
        self.shared.events.emit(&record);
    }

    /// Sends a completion from a task back to the loop.
    fn spawn_completion(
        &self,
        work: impl std::future::Future<Output = Completion> + Send + 'static,
    ) {
        let tx = self.done_tx.clone();
        spawn(async move {
            let _ = tx.send(work.await).await;
        })
        .detach();
    }

    fn storage(&self) -> Option<Arc<dyn Storage>> {
        self.res.storage.clone()
    }

    /// Starts the outside work a request asks for.
    fn start(&mut self, session: &mut ServerSession, request: Request) {
        let id = request.id;
        let now = Instant::now();
        match request.kind {
            RequestKind::Authenticate {
                user,
                password,
                client_cert,
                ..
            } => {
                let shared = Arc::clone(&self.shared);
                let peer_ip = self.peer.ip();
                self.spawn_completion(async move {
                    // Counted before the check runs, so parallel sessions cannot check more passwords than
                    // the lockout allows while earlier failures are still on their way.
                    if !shared.begin_login(peer_ip).await {
                        return Completion::Login(id, None);
                    }
                    let attempt = LoginAttempt {
                        user,
                        password,
                        client_certificate: client_cert.map(|c| c.to_vec()),
                        peer_ip,
                    };
                    let user = match shared.authenticator.authenticate(attempt).await {
                        AuthOutcome::Accepted(user) => Some(user),
                        _ => None,
                    };
                    shared.finish_login(peer_ip, user.is_some());
                    let Some(user) = user else {
                        return Completion::Login(id, None);
                    };
                    let data_key = match shared.keyring.clone() {
                        None => None,
                        // A first login creates and writes the key, and a rotation may run the KMS command: not
                        // on the executor.
                        Some(keyring) => {
                            let name = user.name.clone();
                            match blocking::unblock(move || keyring.data_key(&name)).await {
                                Ok(key) => Some(DataKey::from_bytes(key)),
                                Err(e) => {
                                    // Never a new key in its place: that would hide the user's files behind garbage.
                                    tracing::error!(user = %user.name, error = %e, "data key unusable; login refused");
                                    return Completion::Login(id, None);
                                }
                            }
                        }
                    };
                    Completion::Login(id, Some(LoggedIn { user, data_key }))
                });
            }
            // One name per server: every HOST is this host (RFC 7151 allows a server without virtual hosts).
            RequestKind::SelectHost { .. } => session.complete(now, id, Outcome::Done),
            RequestKind::OpenPassive { .. } => {
                self.release_data();
                let outcome = match self.listener.passive_ports.bind(self.local.ip()) {
                    Ok(listener) => match listener.local_addr() {
                        Ok(addr) => {
                            let gauge = self.shared.passive_gauge();
                            self.res.passive =
                                Some(Arc::new(CountedListener::new(listener, gauge)));
                            Outcome::PassiveListening(addr)
                        }
                        Err(_) => Outcome::Failed(Failure::DataConnection),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot bind a passive port");
                        Outcome::Failed(Failure::DataConnection)
                    }
                };
                // The engine paces the reply itself (SessionConfig::passive_reply_pacing).
                session.complete(now, id, outcome);
            }
            RequestKind::AcceptData => {
                let Some(listener) = self.res.passive.clone() else {
                    session.complete(now, id, Outcome::Failed(Failure::DataConnection));
                    return;
                };
                // A connection the engine refused (another host's) is closed here; the engine wants the next.
                self.res.data = None;
                let tx = self.done_tx.clone();
                let shared = Arc::clone(&self.shared);
                let task = spawn(async move {
                    // Behind a load balancer the engine checks the client its PROXY header names.
                    let completion = loop {
                        match crate::listener::accept_from(&listener, |_| true).await {
                            Ok((stream, peer)) => match shared.proxy.admit(&stream, peer).await {
                                Admission::Client(client) => {
                                    break Completion::Connected(id, stream, client)
                                }
                                Admission::Refuse(why) => {
                                    tracing::warn!(%peer, why, "data connection refused");
                                }
                            },
                            Err(_) => {
                                break Completion::Outcome(
                                    id,
                                    Outcome::Failed(Failure::DataConnection),
                                )
                            }
                        }
                    };
                    let _ = tx.send(completion).await;
                });
                self.res.data_wait = Some((id, task));
            }
            RequestKind::ConnectData { addr } => {
                let tx = self.done_tx.clone();
                let local_ip = self.local.ip();
                let task = spawn(async move {
                    let completion = match connect_data(local_ip, addr).await {
                        Ok(stream) => Completion::Connected(id, stream, addr),
                        Err(e) => {
                            tracing::info!(%addr, error = %e, "active data connection failed");
                            Completion::Outcome(id, Outcome::Failed(Failure::DataConnection))
                        }
                    };
                    let _ = tx.send(completion).await;
                });
                self.res.data_wait = Some((id, task));
            }
            RequestKind::DriveData { channel } => {
                let Some(socket) = self.res.data.take() else {
                    session.complete(now, id, Outcome::Failed(Failure::DataConnection));
                    return;
                };
                // The listener has done its job; the next transfer needs a new PASV/EPSV.
                self.res.passive = None;
                let (start_tx, start_rx) = smol::channel::bounded(1);
                let tx = self.done_tx.clone();
                let idle = self.shared.data_idle_timeout();
                let task = spawn(async move {
                    let outcome = match transfer::run(channel, socket, idle, start_rx).await {
                        Ok(report) => Outcome::TransferFinished(report),
                        Err(transfer::Failed::Before(failure)) => Outcome::Failed(failure),
                        Err(transfer::Failed::During(failure, report)) => {
                            Outcome::TransferFailed { failure, report }
                        }
                    };
                    let _ = tx.send(Completion::Outcome(id, outcome)).await;
                });
                self.res.channel = Some((id, start_tx, task));
            }
            kind if requests::is_storage_request(&kind) => {
                let Some(storage) = self.storage() else {
                    return session.complete(now, id, not_logged_in());
                };
                let shared = Arc::clone(&self.shared);
                let op = StorageOp::of(&kind);
                // A change to the tree is an event once the storage says it is done.
                let change = self
                    .shared
                    .events
                    .is_active()
                    .then(|| self.change_event(&kind))
                    .flatten();
                // An upload waits in the spool for the upload check's verdict.
                let checked = match (&self.shared.upload_check, &kind) {
                    (Some(check), RequestKind::OpenWrite { path, .. }) => Some((
                        Arc::clone(check),
                        path.as_str().to_owned(),
                        self.res.user.clone(),
                    )),
                    _ => None,
                };
                self.spawn_completion(async move {
                    let started = Instant::now();
                    let answer = requests::answer(&*storage, kind).await;
                    if let Some(op) = op {
                        let failed = matches!(answer, Answer::Outcome(Outcome::Failed(_)));
                        shared.metrics.storage_op(op, started.elapsed(), failed);
                    }
                    if let (Some(record), Answer::Outcome(Outcome::Done)) = (&change, &answer) {
                        shared.events.emit(record);
                    }
                    match (answer, checked) {
                        (Answer::Opened(OpenFile::Write(upload), outcome), Some((check, path, user))) => {
                            match CheckedUpload::new(upload, check, path, user) {
                                Ok(held) => {
                                    Completion::Opened(id, OpenFile::Write(Box::new(held)), outcome)
                                }
                                Err(e) => {
                                    tracing::error!(error = %e, "upload spool unusable; upload refused");
                                    let failure = engine::StorageError::Other(e.to_string());
                                    Completion::Outcome(id, Outcome::Failed(Failure::Storage(failure)))
                                }
                            }
                        }
                        (Answer::Outcome(outcome), _) => Completion::Outcome(id, outcome),
                        (Answer::Opened(file, outcome), _) => Completion::Opened(id, file, outcome),
                    }
                });
            }
            _ => session.complete(now, id, Outcome::Failed(Failure::Unsupported)),
        }
    }

    /// Acts on a notice of the engine; none is answered.
    fn act_on(&mut self, session: &mut ServerSession, notice: Notice) {
        let now = Instant::now();
        match notice {
            Notice::ReleaseData => self.release_data(),
            Notice::ReleaseFile { file } => {
                if let Some(OpenFile::Write(upload)) = self.res.files.remove(&file) {
                    spawn(upload.abort()).detach();
                }
            }
            Notice::RunTransfer { data, plan } => {
                let channel = self.res.channel.take();
                let Some((_, start_tx, task)) = channel.filter(|(cid, _, _)| *cid == data) else {
                    session.complete(now, data, Outcome::Failed(Failure::DataConnection));
                    return;
                };
                let flow = plan.flow();
                let body = match plan.source {
                    Source::Bytes(bytes) => Body::Bytes(bytes),
                    Source::File(file) | Source::Upload(file) => match self.res.files.remove(&file)
                    {
                        Some(OpenFile::Read(handle)) => Body::Read(handle.reader, handle.size),
                        Some(OpenFile::Write(upload)) => Body::Write(upload),
                        None => {
                            session.complete(now, data, Outcome::Failed(Failure::DataConnection));
                            return;
                        }
                    },
                };
                let ready_tx = self.done_tx.clone();
                let on_ready: transfer::OnReady = Box::new(move |ready| {
                    let _ = ready_tx.try_send(Completion::DataReady(ready));
                });
                let start = transfer::Start {
                    body,
                    data_type: plan.data_type,
                    flow,
                    on_ready,
                };
                // The task is alive until it answers, and it waits for this: the send cannot fail otherwise.
                let _ = start_tx.try_send(start);
                self.res.transfers.insert(data, task);
            }
            // Cancelling the task closes the data socket and aborts an upload (its Drop); the engine has replied.
            Notice::AbortTransfer { data } => drop(self.res.transfers.remove(&data)),
            _ => {}
        }
    }

    /// Feeds a finished piece of work to the engine.
    fn complete(&mut self, session: &mut ServerSession, completion: Completion) {
        let now = Instant::now();
        match completion {
            Completion::Outcome(id, outcome) => {
                self.res.transfers.remove(&id);
                if self
                    .res
                    .channel
                    .as_ref()
                    .is_some_and(|(cid, _, _)| *cid == id)
                {
                    self.res.channel = None;
                }
                if self
                    .res
                    .data_wait
                    .as_ref()
                    .is_some_and(|(wait, _)| *wait == id)
                {
                    self.res.data_wait = None;
                }
                session.complete(now, id, outcome);
            }
            Completion::Login(id, None) => session.complete(now, id, Outcome::Denied),
            Completion::Login(id, Some(LoggedIn { user, data_key })) => {
                match self.user_storage(&user, data_key) {
                    Ok(storage) => {
                        self.res.storage = Some(storage);
                        self.res.user = Some(user.name.clone());
                        let grant = LoginGrant {
                            home: VirtualPath::root(),
                            policy: UserPolicy {
                                require_tls_data: user.require_tls == Some(true),
                                allow_site_to_site: user.site_to_site == Some(true),
                                deny_site_to_site: user.site_to_site == Some(false),
                                ..UserPolicy::default()
                            },
                        };
                        session.complete(now, id, Outcome::LoggedIn(grant));
                    }
                    Err(e) => {
                        tracing::error!(user = %user.name, error = %e, "user home unusable");
                        session.complete(now, id, Outcome::Denied);
                    }
                }
            }
            Completion::Opened(id, file, outcome) => {
                let file = match file {
                    OpenFile::Write(upload) if self.shared.events.is_active() => OpenFile::Write(
                        Box::new(HashingUpload::new(upload, Arc::clone(&self.upload_digest))),
                    ),
                    file => file,
                };
                self.res.files.insert(id, file);
                session.complete(now, id, outcome);
            }
            Completion::DataReady(ready) => session.data_ready(now, ready),
            Completion::Connected(id, stream, peer) => {
                self.res.data_wait = None;
                self.res.data = Some(stream);
                session.complete(now, id, Outcome::DataConnected { peer });
            }
        }
    }

    /// The storage a user sees: their home as `/`, encrypted with their data key when files are encrypted at
    /// rest, read-only when that is all they may do.
    fn user_storage(
        &self,
        user: &AuthenticatedUser,
        data_key: Option<DataKey>,
    ) -> io::Result<Arc<dyn Storage>> {
        let home: Arc<dyn Storage> = match &user.home {
            UserHome::Virtual(prefix) => {
                Arc::new(Subtree::new(Arc::clone(&self.shared.storage), prefix))
            }
            UserHome::Directory(dir) => match &self.shared.home_versions {
                Some(versions) => versions.open(dir, self.shared.sync_on_commit)?,
                None => Arc::new(
                    LocalStorage::open(dir)?.with_sync_on_commit(self.shared.sync_on_commit),
                ),
            },
        };
        // Above the versions layer, so kept versions are the encrypted files; below the views, so `/@at/` reads
        // decrypt.
        let home: Arc<dyn Storage> = match data_key {
            Some(key) => Arc::new(Encrypted::new(home, key)),
            None => home,
        };
        let storage: Arc<dyn Storage> = match user.permission {
            Permission::ReadOnly => Arc::new(ReadOnly(home)),
            _ => home,
        };
        // Outermost, so each user's views start at their own root and show only their files.
        Ok(if self.shared.time_views {
            Arc::new(TimeViews(storage))
        } else {
            storage
        })
    }

    fn release_data(&mut self) {
        self.res.passive = None;
        self.res.data = None;
        self.res.channel = None;
        self.res.data_wait = None;
    }
}

fn not_logged_in() -> Outcome {
    Outcome::Failed(Failure::Storage(
        ftps_proto::server::StorageError::PermissionDenied,
    ))
}

/// Connects an active-mode data connection from the control connection's local address.
async fn connect_data(local_ip: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    let _ = local_ip;
    let connect = TcpStream::connect(addr);
    let stream = future::or(connect, async {
        Timer::after(std::time::Duration::from_secs(10)).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
    })
    .await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
