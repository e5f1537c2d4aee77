//! A minimal FTPS server on tokio: proof that the `ftps-proto` engine does not care which runtime drives it.
//!
//! The engine ([`ServerSession`]) does all of FTP: it parses commands, picks every reply code, runs TLS on the
//! control connection and builds the TLS [`DataChannel`] of each transfer. This program only moves bytes and
//! answers the engine's [`Request`]s: there is no reply code and no FTP verb below. The real server
//! (`ftps-server`) does the same on smol/async-io; tokio is a dev-dependency of this example only.
//!
//! It serves one user (`demo` / `demo`), read-only, from a few in-memory files, passive mode only, with TLS
//! required on control and data connections and data connections required to resume the control connection's
//! TLS session (RFC 4217 section 10; the engine checks it, this program only forwards the channel's report).
//!
//! ```text
//! cargo run -p ftps-server-smol --example tokio_minimal -- 2121
//! curl --ssl-reqd -k -u demo:demo ftp://127.0.0.1:2121/hello.txt
//! ```
//!
//! The first line on stdout is `listening on ADDR`; the engine's events are logged to stderr.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use ftps_proto::data::{DataChannel, DataEvent, DataFlow, DataType, ResumptionPolicy};
use ftps_proto::path::VirtualPath;
use ftps_proto::server::{
    Failure, FileInfo, FileKind, LoginGrant, Notice, Outcome, ReqId, Request, RequestKind,
    ServerSession, SessionConfig, Source, StorageError, Work,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

/// The whole file system: absolute path -> contents.
const FILES: &[(&str, &[u8])] = &[
    ("/hello.txt", b"Hello from ftps-rs on tokio!\n"),
    (
        "/notes.md",
        b"# Notes\n\nThe engine is sans-IO; this example is the IO.\n",
    ),
    ("/empty.bin", b""),
];

/// An answer to a request that took a while (a transfer), sent back to the connection's drive loop.
type Completion = (ReqId, Outcome);

/// What a transfer sends, and in which representation (the channel converts `TYPE A`).
type Payload = (Vec<u8>, DataType);

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "usage: tokio_minimal [PORT]")
        })?,
        None => 0,
    };
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    // Stdout is line-buffered: this line reaches a test reading our stdout at once.
    println!("listening on {}", listener.local_addr()?);

    let config = session_config()?;
    loop {
        let (control, peer) = listener.accept().await?;
        // Replies and data go out as soon as they are written, not after a delayed ACK (40 ms a file).
        control.set_nodelay(true)?;
        let config = config.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(control, peer, config).await {
                eprintln!("{peer}: {e}");
            }
        });
    }
}

/// The engine's policy: secure defaults, spelled out because they are the point of the example.
fn session_config() -> io::Result<SessionConfig> {
    // A fresh self-signed certificate per run; clients connect with `-k` / no verification.
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .map_err(io::Error::other)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.key_pair.serialize_der().into());
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(ftps_proto::tls_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(vec![generated.cert.der().clone()], key)
        .map_err(io::Error::other)?;
    Ok(SessionConfig {
        tls: Some(Arc::new(tls)),
        require_tls_control: true,
        require_tls_data: true,
        // Data connections must resume the control session (what vsftpd calls `require_ssl_reuse`).
        data_resumption: ResumptionPolicy::Required,
        ..SessionConfig::default()
    })
}

/// What one control connection has open on the engine's behalf.
struct Connection {
    /// The address the client reached us on (127.0.0.1 here): passive listeners bind there.
    local_ip: IpAddr,
    /// The passive listener of the last `OpenPassive`.
    passive: Option<TcpListener>,
    /// An `AcceptData` waiting for a connection on `passive`.
    accepting: Option<ReqId>,
    /// A data connection accepted, until its `DriveData` takes it.
    data: Option<TcpStream>,
    /// The `DriveData` task of the data connection waiting for its transfer: its id, where the payload goes,
    /// and the task.
    channel: Option<(ReqId, oneshot::Sender<Payload>, AbortHandle)>,
    /// Files opened by `OpenRead`, keyed by that request's id: contents and start offset.
    open_files: HashMap<ReqId, (&'static [u8], u64)>,
    /// Running transfers, keyed by their `DriveData` id, to stop them on `AbortTransfer`.
    transfers: HashMap<ReqId, AbortHandle>,
    /// Where transfer tasks send their answers. Unbounded is fine: the engine runs one transfer at a time.
    completions: mpsc::UnboundedSender<Completion>,
}

/// Runs one control connection: the drive loop of the `ftps_proto::server` module docs.
async fn serve(mut control: TcpStream, peer: SocketAddr, config: SessionConfig) -> io::Result<()> {
    let local = control.local_addr()?;
    let mut session = ServerSession::new(config, peer, local, Instant::now());
    let (completions, mut completed) = mpsc::unbounded_channel();
    let mut conn = Connection {
        local_ip: local.ip(),
        passive: None,
        accepting: None,
        data: None,
        channel: None,
        open_files: HashMap::new(),
        transfers: HashMap::new(),
        completions,
    };
    let mut read_buf = vec![0u8; 16 * 1024];
    // Control bytes read but not yet taken by the engine (it takes less only while its queue is full).
    let mut unread: Vec<u8> = Vec::new();

    let result = loop {
        // After every input: offer held-back bytes again, then drain every output.
        if !unread.is_empty() {
            let taken = session.handle_input(Instant::now(), &unread);
            unread.drain(..taken);
        }
        if let Err(e) = drain(&mut session, &mut conn, &mut control).await {
            break Err(e);
        }
        if session.is_closed() {
            break Ok(());
        }
        let deadline = session.poll_timeout();

        // Wait for whichever comes first. Every branch is cancel-safe, and the futures are dropped before a
        // handler runs, so handlers may use `conn` and `session` freely.
        tokio::select! {
            read = control.read(&mut read_buf), if unread.is_empty() => match read {
                Ok(0) | Err(_) => session.handle_eof(Instant::now()),
                Ok(n) => {
                    let input = &read_buf[..n];
                    let taken = session.handle_input(Instant::now(), input);
                    unread.extend_from_slice(&input[taken..]);
                }
            },
            Some((id, outcome)) = completed.recv() => {
                conn.transfers.remove(&id);
                if conn.channel.as_ref().is_some_and(|(c, _, _)| *c == id) {
                    conn.channel = None;
                }
                session.complete(Instant::now(), id, outcome);
            }
            accepted = accept(conn.passive.as_ref()), if conn.accepting.is_some() => {
                on_accepted(&mut session, &mut conn, accepted);
            }
            () = sleep_until(deadline) => session.handle_timeout(Instant::now()),
        }
    };

    // The session is over: stop what still runs and close the control connection (dropping `conn` closes the
    // passive listener and any idle data connection).
    for (_, transfer) in conn.transfers.drain() {
        transfer.abort();
    }
    if let Some((_, _, task)) = conn.channel.take() {
        task.abort();
    }
    let _ = control.shutdown().await;
    result
}

/// Sends what the engine wants sent, logs its events and starts its requests, until all three are empty.
async fn drain(
    session: &mut ServerSession,
    conn: &mut Connection,
    control: &mut TcpStream,
) -> io::Result<()> {
    let mut wire = Vec::new();
    loop {
        wire.clear();
        if session.poll_transmit(&mut wire) > 0 {
            control.write_all(&wire).await?;
        }
        while let Some(event) = session.poll_event() {
            eprintln!("{}: {event:?}", session.peer());
        }
        let answer = match session.poll_work() {
            None => return Ok(()),
            Some(Work::Request(request)) => start(conn, request).await,
            Some(Work::Notice(notice)) => act_on(conn, notice),
        };
        // Answers known at once go straight back; the loop then drains what they caused.
        if let Some((id, outcome)) = answer {
            session.complete(Instant::now(), id, outcome);
        }
    }
}

/// Starts one request. Returns the answer when it is known at once; `None` for notifications and for work that
/// answers later through `conn.completions` or the accept branch of the drive loop.
async fn start(conn: &mut Connection, request: Request) -> Option<Completion> {
    let Request { id, kind } = request;
    let outcome = match kind {
        RequestKind::Authenticate { user, password, .. } => {
            if user == "demo" && password == "demo" {
                Outcome::LoggedIn(LoginGrant::default())
            } else {
                // The engine delays the refusal and counts failures.
                Outcome::Denied
            }
        }
        RequestKind::Metadata { path } => match lookup(&path) {
            Some(info) => Outcome::Metadata(info),
            None => not_found(),
        },
        RequestKind::List { path, .. } => {
            if path.is_root() {
                Outcome::Listing(
                    FILES
                        .iter()
                        .map(|(name, data)| file_info(name, data))
                        .collect(),
                )
            } else {
                match lookup(&path) {
                    Some(info) => Outcome::Listing(vec![info]),
                    None => not_found(),
                }
            }
        }
        RequestKind::OpenRead { path, offset } => {
            match FILES.iter().find(|(name, _)| *name == path.as_str()) {
                Some((_, data)) => {
                    conn.open_files.insert(id, (data, offset));
                    Outcome::Opened {
                        size: Some(data.len() as u64),
                        path,
                    }
                }
                None => not_found(),
            }
        }
        RequestKind::OpenPassive { .. } => {
            // Bind on the address the client reached us on; the engine announces it (227 or 229).
            match TcpListener::bind((conn.local_ip, 0)).await {
                Ok(listener) => match listener.local_addr() {
                    Ok(addr) => {
                        conn.passive = Some(listener);
                        Outcome::PassiveListening(addr)
                    }
                    Err(_) => Outcome::Failed(Failure::DataConnection),
                },
                Err(_) => Outcome::Failed(Failure::DataConnection),
            }
        }
        RequestKind::AcceptData => {
            // A connection the engine refused (another host's) closes here.
            conn.data = None;
            if conn.passive.is_none() {
                Outcome::Failed(Failure::DataConnection)
            } else {
                // Answered by the drive loop's accept branch; the engine bounds the wait.
                conn.accepting = Some(id);
                return None;
            }
        }
        RequestKind::DriveData { channel } => {
            // The channel runs from now on: a client may start its TLS handshake as soon as it has connected.
            let Some(socket) = conn.data.take() else {
                return Some((id, Outcome::Failed(Failure::DataConnection)));
            };
            let (payload_tx, payload_rx) = oneshot::channel();
            let completions = conn.completions.clone();
            let task = tokio::spawn(async move {
                let outcome = send_over(socket, channel, payload_rx).await;
                let _ = completions.send((id, outcome));
            });
            conn.channel = Some((id, payload_tx, task.abort_handle()));
            return None;
        }
        // Active mode (`ConnectData`) is left out to keep the example short: the client falls back to passive.
        RequestKind::ConnectData { .. } => Outcome::Failed(Failure::DataConnection),
        RequestKind::OpenWrite { .. }
        | RequestKind::MakeDir { .. }
        | RequestKind::RemoveDir { .. }
        | RequestKind::Delete { .. }
        | RequestKind::Rename { .. }
        | RequestKind::SetModified { .. }
        | RequestKind::Chmod { .. } => {
            Outcome::Failed(Failure::Storage(StorageError::PermissionDenied))
        }
        // `HOST`, `SITE` extensions, and whatever later engine versions ask for.
        _ => Outcome::Failed(Failure::Unsupported),
    };
    Some((id, outcome))
}

/// Acts on one notice. Returns an answer for the transfer's `DriveData` when it cannot run at all.
fn act_on(conn: &mut Connection, notice: Notice) -> Option<Completion> {
    match notice {
        Notice::ReleaseData => {
            conn.passive = None;
            conn.accepting = None;
            conn.data = None;
            if let Some((_, _, task)) = conn.channel.take() {
                task.abort();
            }
            None
        }
        Notice::ReleaseFile { file } => {
            conn.open_files.remove(&file);
            None
        }
        Notice::RunTransfer { data, plan } => {
            let payload: Vec<u8> = match plan.source {
                Source::Bytes(listing) => listing,
                Source::File(file) => match conn.open_files.remove(&file) {
                    Some((data, offset)) => {
                        let from = usize::try_from(offset)
                            .unwrap_or(usize::MAX)
                            .min(data.len());
                        data[from..].to_vec()
                    }
                    None => {
                        return Some((
                            data,
                            Outcome::Failed(Failure::Storage(StorageError::NotFound)),
                        ))
                    }
                },
                // Read-only: `OpenWrite` is refused, so no upload is ever planned.
                Source::Upload(_) => return Some((data, Outcome::Failed(Failure::Unsupported))),
            };
            let Some((_, payload_tx, task)) = conn.channel.take().filter(|(c, _, _)| *c == data)
            else {
                return Some((data, Outcome::Failed(Failure::DataConnection)));
            };
            let _ = payload_tx.send((payload, plan.data_type));
            conn.transfers.insert(data, task);
            None
        }
        Notice::AbortTransfer { data } => {
            // Dropping the task closes the data socket at once; the engine has replied already.
            if let Some(task) = conn.transfers.remove(&data) {
                task.abort();
            }
            None
        }
        _ => None,
    }
}

/// Accepts on the passive listener, or never completes when there is none.
async fn accept(listener: Option<&TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => {
            let (stream, peer) = listener.accept().await?;
            stream.set_nodelay(true)?;
            Ok((stream, peer))
        }
        None => std::future::pending().await,
    }
}

/// A connection arrived on the passive listener: hand it to the engine, unless it comes from someone else.
fn on_accepted(
    session: &mut ServerSession,
    conn: &mut Connection,
    accepted: io::Result<(TcpStream, SocketAddr)>,
) {
    let Some(id) = conn.accepting else { return };
    match accepted {
        Ok((socket, from)) => {
            conn.accepting = None;
            conn.data = Some(socket);
            session.complete(Instant::now(), id, Outcome::DataConnected { peer: from });
        }
        Err(_) => {
            conn.accepting = None;
            session.complete(Instant::now(), id, Outcome::Failed(Failure::DataConnection));
        }
    }
}

/// Drives one data connection's [`DataChannel`] on its socket: its handshake at once, then, once the transfer
/// command sent `payload`, the download: write it, finish, and wait for the channel to end.
async fn send_over(
    mut socket: TcpStream,
    mut channel: Box<DataChannel>,
    mut payload_rx: oneshot::Receiver<Payload>,
) -> Outcome {
    let mut payload: Option<Vec<u8>> = None;
    let mut sent = 0;
    let mut wire = Vec::new();
    let mut read_buf = vec![0u8; 16 * 1024];
    let mut write_half_closed = false;
    loop {
        // Plaintext in (the channel takes nothing before its transfer starts and its TLS handshake is done),
        // then the end of it.
        if let Some(payload) = &payload {
            sent += channel.write(&payload[sent..]);
            if sent == payload.len() {
                channel.finish(Instant::now());
            }
        }
        // Ciphertext out: TLS records, then close_notify once everything before it went out.
        wire.clear();
        if channel.poll_transmit(&mut wire) > 0 && socket.write_all(&wire).await.is_err() {
            return Outcome::Failed(Failure::Truncated);
        }
        if channel.is_write_closed() && !write_half_closed {
            let _ = socket.shutdown().await;
            write_half_closed = true;
        }
        while let Some(event) = channel.poll_event() {
            match event {
                // The engine reads the report: 226 only for a clean close that resumed the control session.
                DataEvent::Finished(report) => return Outcome::TransferFinished(report),
                // Flush the alert the channel may have queued, then report what went wrong.
                DataEvent::Failed(error) => {
                    wire.clear();
                    if channel.poll_transmit(&mut wire) > 0 {
                        let _ = socket.write_all(&wire).await;
                    }
                    return Outcome::Failed(Failure::from(&error));
                }
                _ => {}
            }
        }
        // More to write right now? Loop. Otherwise wait for the peer (handshake, close_notify), the transfer
        // command's payload, or a deadline.
        let more = payload
            .as_ref()
            .is_some_and(|p| sent < p.len() && channel.can_write());
        if channel.wants_transmit() || more {
            continue;
        }
        let deadline = channel.poll_timeout();
        tokio::select! {
            read = socket.read(&mut read_buf) => match read {
                Ok(0) | Err(_) => channel.handle_eof(Instant::now()),
                Ok(n) => {
                    // A download receives no payload: the channel drops what arrives anyway, so it takes all.
                    let _ = channel.handle_input(Instant::now(), &read_buf[..n]);
                }
            },
            received = &mut payload_rx, if payload.is_none() => match received {
                Ok((bytes, data_type)) => {
                    channel.start_transfer(Instant::now(), DataFlow::Send, data_type);
                    payload = Some(bytes);
                }
                // The session let the connection go without a transfer.
                Err(_) => return Outcome::Failed(Failure::DataConnection),
            },
            () = sleep_until(deadline) => channel.handle_timeout(Instant::now()),
        }
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// The directory entry of one in-memory file.
fn file_info(path: &str, data: &[u8]) -> FileInfo {
    let name = path.trim_start_matches('/');
    let mut info = FileInfo::new(name, FileKind::File, data.len() as u64);
    info.mode = Some(0o444);
    info
}

/// Status of `path`: the root directory or one of the files.
fn lookup(path: &VirtualPath) -> Option<FileInfo> {
    if path.is_root() {
        let mut root = FileInfo::new("/", FileKind::Dir, 0);
        root.mode = Some(0o555);
        return Some(root);
    }
    FILES
        .iter()
        .find(|(name, _)| *name == path.as_str())
        .map(|(name, data)| file_info(name, data))
}

fn not_found() -> Outcome {
    Outcome::Failed(Failure::Storage(StorageError::NotFound))
}
