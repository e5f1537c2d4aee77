//! An FTPS server on tokio: the `ftps-proto` engine driven by another runtime, in one file.
//!
//! The engine ([`ServerSession`], [`DataChannel`]) does all of FTP: commands, every reply code, TLS on the control
//! and data connections, the data-connection checks of RFC 2577 and RFC 4217, `TYPE A`, `STOU` names. The crate's
//! [`requests::answer`] answers storage requests from any [`Storage`]. What is left, and all this program does, is
//! the frontend's part the `ftps_proto` crate docs describe: sockets, tasks and timers.
//!
//! ```text
//! cargo run -p ftps-server-smol --example tokio_server -- 2121 /srv/ftp
//! curl --ssl-reqd -k -u demo:demo ftp://127.0.0.1:2121/
//! ```
//!
//! One user, `demo` / `demo`, reads and writes `ROOT` (default: the current directory). TLS is required on
//! control and data connections, and each data connection must resume its own control session's TLS session.
//! The first line on stdout is `listening on ADDR`; transfers are logged to stderr.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftps_proto::data::{
    DataChannel, DataEvent, DataFlow, DataOutput, DataReady, DataReport, DataType,
};
use ftps_proto::server::{
    Event, Failure, LoginGrant, Notice, Outcome, Output, ReqId, Request, RequestKind,
    ServerSession, SessionConfig, Source, Work,
};
use ftps_server_smol::requests::{self, engine_storage_error, Answer, OpenFile};
use ftps_server_smol::storage::{LocalStorage, ReadHandle, Storage};
use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::{AbortHandle, JoinSet};

/// Socket and file reads in this unit: several TLS records at a time.
const CHUNK: usize = 64 * 1024;
/// A data connection silent this long fails its transfer (426).
const DATA_IDLE: Duration = Duration::from_secs(60);

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port = args.next().unwrap_or("0".into());
    let port: u16 = port.parse().map_err(io::Error::other)?;
    let root = args.next().unwrap_or(".".into());
    let storage: Arc<dyn Storage> = Arc::new(LocalStorage::open(root)?);
    let config = session_config()?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    loop {
        let (control, _) = listener.accept().await?;
        // Replies go out at once, not after the peer's delayed ACK (40 ms a reply).
        control.set_nodelay(true)?;
        // An error ends its connection only; the client sees the connection close.
        tokio::spawn(serve(control, config.clone(), Arc::clone(&storage)));
    }
}

/// The engine's secure defaults (TLS and data-connection resumption required), with a self-signed certificate.
fn session_config() -> io::Result<SessionConfig> {
    let cert = rcgen::generate_simple_self_signed(["localhost".into()]).map_err(io::Error::other);
    let cert = cert?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(ftps_proto::tls_provider()))
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(io::Error::other)?;
    Ok(SessionConfig {
        tls: Some(Arc::new(tls)),
        // This frontend forwards `DataOutput::TransferReady`, so the engine may hold an upload's 150 for it.
        preliminary_reply_wait: Duration::from_secs(1),
        ..SessionConfig::default()
    })
}

/// Work finished on another task, for the control loop.
enum Done {
    /// An answer for [`ServerSession::complete`], with the file a request opened (kept until its transfer).
    Answer(ReqId, Outcome, Option<OpenFile>),
    /// A data connection is up (accepted or connected).
    Connected(ReqId, TcpStream, SocketAddr),
    /// A data channel said [`DataOutput::TransferReady`]: for [`ServerSession::data_ready`].
    Ready(DataReady),
}

/// What a [`Notice::RunTransfer`] hands its data connection's task (a listing is read from memory).
type Start = (OpenFile, DataFlow, DataType);

/// What one control connection holds for the engine.
struct Connection {
    storage: Arc<dyn Storage>,
    local: SocketAddr,
    done: mpsc::UnboundedSender<Done>,
    tasks: Tasks,
}

/// The sockets, files and tasks a connection holds for the engine's requests.
#[derive(Default)]
struct Tasks {
    passive: Option<Arc<TcpListener>>,
    /// The data connection just reported, until its `DriveData` takes it.
    data: Option<TcpStream>,
    /// The task accepting or connecting a data connection.
    waiting: Option<AbortHandle>,
    /// The `DriveData` task waiting for its transfer.
    channel: Option<(ReqId, oneshot::Sender<Start>, AbortHandle)>,
    files: HashMap<ReqId, OpenFile>,
    transfers: HashMap<ReqId, AbortHandle>,
    /// Every task of this connection: dropping the set stops them (closing sockets, dropping uploads).
    set: JoinSet<()>,
}

/// The drive loop of the `ftps_proto` crate docs: drain every output, then wait for input, a finished task or
/// the engine's deadline, and feed it in.
async fn serve(
    mut control: TcpStream,
    config: SessionConfig,
    storage: Arc<dyn Storage>,
) -> io::Result<()> {
    let (peer, local) = (control.peer_addr()?, control.local_addr()?);
    let mut session = ServerSession::new(config, peer, local, Instant::now());
    let (done, mut finished) = mpsc::unbounded_channel();
    let mut conn = Connection {
        storage,
        local,
        done,
        tasks: Tasks::default(),
    };
    let (mut input, mut unread, mut wire) = (vec![0; 16 * 1024], Vec::new(), Vec::new());
    loop {
        // Input, or what the engine could not take before (its command queue was full).
        let taken = session.handle_input(Instant::now(), &unread);
        unread.drain(..taken);
        let deadline = loop {
            wire.clear();
            match session.poll_output(&mut wire) {
                Output::Transmit(_) => control.write_all(&wire).await?,
                Output::Event(Event::TransferFinished(t)) => {
                    eprintln!("{peer} {} {} {}", t.status.get(), t.path, t.bytes);
                }
                Output::Event(_) => {}
                Output::Work(Work::Request(request)) => conn.start(&mut session, request),
                Output::Work(Work::Notice(notice)) => conn.act_on(&mut session, notice),
                Output::Wait(deadline) => break deadline,
            }
        };
        if session.is_closed() {
            return control.shutdown().await;
        }
        while conn.tasks.set.try_join_next().is_some() {}
        tokio::select! {
            read = control.read(&mut input), if unread.is_empty() => match read {
                Ok(0) | Err(_) => session.handle_eof(Instant::now()),
                Ok(n) => unread.extend_from_slice(&input[..n]),
            },
            Some(done) = finished.recv() => conn.finished(&mut session, done),
            () = sleep_until(deadline) => session.handle_timeout(Instant::now()),
        }
    }
}

impl Connection {
    /// Starts the work a request asks for; its answer comes back now or as a [`Done`].
    fn start(&mut self, session: &mut ServerSession, Request { id, kind }: Request) {
        let (now, tx, tasks) = (Instant::now(), self.done.clone(), &mut self.tasks);
        match kind {
            RequestKind::Authenticate { user, password, .. } => {
                let granted = (user == "demo" && password == "demo").then(LoginGrant::default);
                session.complete(now, id, granted.map_or(Outcome::Denied, Outcome::LoggedIn));
            }
            RequestKind::OpenPassive { .. } => {
                let listener = passive_listener(self.local.ip()).ok();
                let addr = listener.as_ref().and_then(|l| l.local_addr().ok());
                tasks.passive = listener.map(Arc::new);
                let outcome = addr.map_or_else(no_data, Outcome::PassiveListening);
                session.complete(now, id, outcome);
            }
            RequestKind::AcceptData => {
                // A connection the engine refused (another host's) closes here: it asks for the next one.
                tasks.data = None;
                let Some(listener) = tasks.passive.clone() else {
                    return session.complete(now, id, no_data());
                };
                tasks.waiting = Some(tasks.set.spawn(async move {
                    let _ = tx.send(match listener.accept().await {
                        Ok((socket, peer)) => Done::Connected(id, socket, peer),
                        Err(_) => Done::Answer(id, no_data(), None),
                    });
                }));
            }
            RequestKind::ConnectData { addr } => {
                tasks.waiting = Some(tasks.set.spawn(async move {
                    let _ = tx.send(match TcpStream::connect(addr).await {
                        Ok(socket) => Done::Connected(id, socket, addr),
                        Err(_) => Done::Answer(id, no_data(), None),
                    });
                }));
            }
            RequestKind::DriveData { channel } => {
                let Some(socket) = tasks.data.take() else {
                    return session.complete(now, id, no_data());
                };
                // The listener has done its job: the next transfer needs a new PASV/EPSV.
                tasks.passive = None;
                let (start, started) = oneshot::channel();
                let task = tasks.set.spawn(async move {
                    let outcome = drive_data(socket, channel, started, &tx).await;
                    let _ = tx.send(Done::Answer(id, outcome, None));
                });
                tasks.channel = Some((id, start, task));
            }
            kind if requests::is_storage_request(&kind) => {
                let storage = Arc::clone(&self.storage);
                tasks.set.spawn(async move {
                    let _ = tx.send(match requests::answer(&*storage, kind).await {
                        Answer::Outcome(outcome) => Done::Answer(id, outcome, None),
                        Answer::Opened(file, outcome) => Done::Answer(id, outcome, Some(file)),
                    });
                });
            }
            _ => session.complete(now, id, Outcome::Failed(Failure::Unsupported)),
        }
    }

    /// Acts on a notice; notices are never answered.
    fn act_on(&mut self, session: &mut ServerSession, notice: Notice) {
        let tasks = &mut self.tasks;
        match notice {
            Notice::ReleaseData => {
                (tasks.passive, tasks.data) = (None, None);
                let channel = tasks.channel.take().map(|(_, _, task)| task);
                tasks
                    .waiting
                    .take()
                    .into_iter()
                    .chain(channel)
                    .for_each(|task| task.abort());
            }
            Notice::ReleaseFile { file } => {
                if let Some(OpenFile::Write(upload)) = tasks.files.remove(&file) {
                    tasks.set.spawn(upload.abort());
                }
            }
            Notice::RunTransfer { data, plan } => {
                let (flow, data_type) = (plan.flow(), plan.data_type);
                let file = match plan.source {
                    Source::File(file) | Source::Upload(file) => tasks.files.remove(&file),
                    Source::Bytes(bytes) => Some(OpenFile::Read(ReadHandle {
                        size: bytes.len() as u64,
                        reader: Box::new(futures_lite::io::Cursor::new(bytes)),
                    })),
                };
                match (file, tasks.channel.take().filter(|(id, _, _)| *id == data)) {
                    (Some(file), Some((_, start, task))) => {
                        let _ = start.send((file, flow, data_type));
                        tasks.transfers.insert(data, task);
                    }
                    _ => session.complete(Instant::now(), data, no_data()),
                }
            }
            // Stopping the task closes the data connection; an upload's drop discards it. The engine has replied.
            Notice::AbortTransfer { data } => tasks
                .transfers
                .remove(&data)
                .iter()
                .for_each(AbortHandle::abort),
            _ => {}
        }
    }

    /// Feeds a finished piece of work to the engine.
    fn finished(&mut self, session: &mut ServerSession, done: Done) {
        let (now, tasks) = (Instant::now(), &mut self.tasks);
        match done {
            Done::Answer(id, outcome, file) => {
                tasks.transfers.remove(&id);
                tasks.channel.take_if(|(channel, _, _)| *channel == id);
                tasks.files.extend(file.map(|file| (id, file)));
                session.complete(now, id, outcome);
            }
            Done::Connected(id, socket, peer) => {
                let _ = socket.set_nodelay(true);
                tasks.data = Some(socket);
                session.complete(now, id, Outcome::DataConnected { peer });
            }
            Done::Ready(ready) => session.data_ready(now, ready),
        }
    }
}

/// Drives one data connection's channel: its TLS handshake at once, then the transfer `started` brings.
async fn drive_data(
    mut socket: TcpStream,
    mut channel: Box<DataChannel>,
    mut started: oneshot::Receiver<Start>,
    done: &mpsc::UnboundedSender<Done>,
) -> Outcome {
    let (mut input, mut unread, mut wire) = (vec![0; CHUNK], Vec::new(), Vec::new());
    let (mut file, mut buf, mut at, mut end) = (None, Vec::new(), 0, 0);
    let (mut sent, mut eof) = (false, false);
    loop {
        // Payload: file (or listing) bytes to the channel, or received plaintext to the upload.
        match file.as_mut() {
            Some(OpenFile::Read(source)) if !sent && channel.can_write() => {
                if at == end {
                    (at, end) = (0, source.reader.read(&mut buf).await.unwrap_or(0));
                    if end == 0 {
                        sent = true;
                        channel.finish(Instant::now());
                    }
                }
                at += channel.write(&buf[at..end]);
            }
            Some(OpenFile::Write(upload)) => loop {
                let chunk = channel.read_chunk();
                let n = chunk.len();
                if n == 0 {
                    break;
                }
                if let Err(e) = upload.write_all(chunk).await {
                    return Outcome::Failed(Failure::Storage(engine_storage_error(&e.into())));
                }
                channel.consume(n);
            },
            _ => {}
        }
        // The channel's one drain: bytes out, the write half, readiness for the control loop, the end.
        let deadline = loop {
            wire.clear();
            match channel.poll_output(&mut wire) {
                DataOutput::Transmit(_) => {
                    if socket.write_all(&wire).await.is_err() {
                        return Outcome::Failed(Failure::Truncated);
                    }
                }
                DataOutput::ShutdownWrite => drop(socket.shutdown().await),
                DataOutput::TransferReady(ready) => drop(done.send(Done::Ready(ready))),
                DataOutput::Event(DataEvent::Failed(error)) => {
                    return Outcome::Failed(Failure::from(&error))
                }
                DataOutput::Event(DataEvent::Finished(report)) => {
                    return commit_upload(file, report).await
                }
                DataOutput::Event(_) => {}
                DataOutput::Wait(deadline) => break deadline,
            }
        };
        // Input, or what the channel could not take before (it takes none while it waits for its transfer).
        let taken = channel.handle_input(Instant::now(), &unread);
        unread.drain(..taken);
        let sending = matches!(file, Some(OpenFile::Read(_))) && !sent && channel.can_write();
        if taken > 0 || sending || channel.wants_transmit() {
            continue;
        }
        let deadline = deadline.unwrap_or(Instant::now() + DATA_IDLE);
        tokio::select! {
            // What arrived before the transfer command decides when an upload's tickets go out: read it first.
            biased;
            read = socket.read(&mut input), if !eof && unread.is_empty() => match read {
                Ok(0) | Err(_) => (eof, ()) = (true, channel.handle_eof(Instant::now())),
                Ok(n) => unread.extend_from_slice(&input[..n]),
            },
            start = &mut started, if file.is_none() => match start {
                Ok((opened, flow, data_type)) => {
                    channel.start_transfer(Instant::now(), flow, data_type);
                    (file, buf) = (Some(opened), vec![0; CHUNK]);
                }
                Err(_) => return no_data(),
            },
            () = sleep_until(Some(deadline)) => {
                if channel.poll_timeout().is_none() && file.is_some() {
                    return Outcome::Failed(Failure::Truncated);
                }
                channel.handle_timeout(Instant::now());
            }
        }
    }
}

/// A finished transfer's answer; an upload becomes visible only after a clean close.
async fn commit_upload(file: Option<OpenFile>, report: DataReport) -> Outcome {
    let committed = match file {
        Some(OpenFile::Write(upload)) if report.clean_close => upload.commit().await.map(drop),
        Some(OpenFile::Write(upload)) => {
            upload.abort().await;
            Ok(())
        }
        _ => Ok(()),
    };
    let failed = |e| Outcome::Failed(Failure::Storage(engine_storage_error(&e)));
    committed.map_or_else(failed, |()| Outcome::TransferFinished(report))
}

/// A passive listener on the address the client reached us on; the engine announces its port.
fn passive_listener(ip: IpAddr) -> io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind((ip, 0))?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// Why a data connection could not be used (425).
fn no_data() -> Outcome {
    Outcome::Failed(Failure::DataConnection)
}

/// Sleeps until `deadline`, or forever without one.
///
/// Not `tokio::time::sleep_until`: tokio's timer ticks in milliseconds and rounds up, so the engine's 100 µs
/// passive-reply pacing (`SessionConfig::passive_reply_pacing`) cost 1-2 ms per transfer, most of this example's
/// gap to the smol server (benches/tokio-vs-smol.sh: ratio about 0.85 before, 1.2 to 1.4 after). async-io's
/// timer runs on its own reactor thread, works under any executor, and wakes within microseconds.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => drop(async_io::Timer::at(at).await),
        None => std::future::pending().await,
    }
}
