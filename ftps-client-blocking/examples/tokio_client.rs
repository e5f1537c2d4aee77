//! An FTPS client on tokio, driving the sans-IO engine directly: log in, list, upload a file and download it back,
//! with `PROT P` and data connections that resume the control connection's TLS session.
//!
//! ```text
//! tokio_client HOST PORT USER PASSWORD FILE [CA_PEM]
//! ```
//!
//! Uploads `FILE` under its own name, lists the directory, downloads it to `FILE.back`. Certificates are verified
//! against `CA_PEM` when given, else against the system roots.
//!
//! The drive loop is the one `ftps_proto`'s docs teach: after every input or mutation drain `poll_output` (bytes
//! to send, requests answered by id with `complete`, events) until it says `Wait`; then wait for the earliest of
//! control socket readiness, the running data task, or that deadline. Everything FTP (commands, reply codes, TLS roles,
//! resumption, aborting when a data connection fails) is the engine's: this file owns sockets, tasks and time.

use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use ftps_proto::client::{
    ClientSession, ClientSessionConfig, Credentials, DataConnectError, Direction, Event, Operation,
    Outcome, Output, Payload, ReqId, Request, RequestKind, SessionOutput,
};
use ftps_proto::data::{DataChannel, DataEvent, DataOutput};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

type BoxError = Box<dyn Error + Send + Sync>;

/// What a data task hands back: the answer to its `DriveData` request, and a download's bytes.
type DataDone = (Outcome, Vec<u8>);

/// One control connection: its socket, its session, and the data connection of the running transfer.
struct Control {
    tcp: TcpStream,
    session: ClientSession,
    /// Received control bytes the session has not taken yet (it takes less only under TLS backpressure).
    input: Vec<u8>,
    /// A passive data connection, opened before the server's 1xx, waiting for its channel.
    connected: Option<TcpStream>,
    /// The data task and the request its result answers.
    data: Option<(ReqId, JoinHandle<DataDone>)>,
    /// What the next upload sends; what the last download received.
    upload: Vec<u8>,
    downloaded: Vec<u8>,
}

impl Control {
    /// Submits `op` and drives the session until it completes.
    async fn run(&mut self, op: Operation) -> Result<Output, BoxError> {
        let id = self.session.submit(Instant::now(), op);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            // 1. Drain every output, one at a time.
            let mut wire = Vec::new();
            let deadline = loop {
                wire.clear();
                match self.session.poll_output(&mut wire) {
                    SessionOutput::Transmit(_) => self.tcp.write_all(&wire).await?,
                    SessionOutput::Request(request) => self.start(request).await?,
                    SessionOutput::Event(Event::Completed { op, result }) if op == id => {
                        return Ok(result?)
                    }
                    SessionOutput::Event(Event::Failed(e)) => return Err(e.into()),
                    SessionOutput::Event(_) => {}
                    SessionOutput::Wait(deadline) => break deadline,
                }
            };
            if !self.input.is_empty() {
                let taken = self.session.handle_input(Instant::now(), &self.input);
                self.input.drain(..taken);
                if taken > 0 {
                    continue;
                }
            }
            // 2. Wait for the earliest of: control bytes, the data task, the engine's deadline.
            tokio::select! {
                read = self.tcp.read(&mut buf) => match read? {
                    0 => self.session.handle_eof(Instant::now()),
                    n => self.input.extend_from_slice(&buf[..n]),
                },
                done = data_task(&mut self.data) => {
                    let (request, (outcome, bytes)) = done?;
                    (self.data, self.downloaded) = (None, bytes);
                    self.session.complete(Instant::now(), request, outcome);
                }
                () = sleep_until(deadline) => self.session.handle_timeout(Instant::now()),
            }
        }
    }

    /// Starts the work of one request; data channels run on their own task.
    async fn start(&mut self, request: Request) -> Result<(), BoxError> {
        let outcome = match request.kind {
            RequestKind::ConnectData { addr } => match TcpStream::connect(addr).await {
                Ok(tcp) => {
                    tcp.set_nodelay(true)?;
                    self.connected = Some(tcp);
                    Outcome::DataConnected
                }
                Err(e) => Outcome::DataConnectFailed(DataConnectError::Connect {
                    addr,
                    reason: e.to_string(),
                }),
            },
            RequestKind::DriveData {
                channel,
                direction,
                payload,
            } => {
                let tcp = self.connected.take().ok_or("no data connection")?;
                let upload = std::mem::take(&mut self.upload);
                let task = tokio::spawn(pump(tcp, channel, direction, payload, upload));
                self.data = Some((request.id, task));
                return Ok(());
            }
            // This example uses passive mode only (the config's default).
            _ => Outcome::DataConnectFailed(DataConnectError::Listen {
                reason: "active mode not supported here".into(),
            }),
        };
        self.session.complete(Instant::now(), request.id, outcome);
        Ok(())
    }
}

/// The running data task's result; never ready while none runs.
async fn data_task(
    data: &mut Option<(ReqId, JoinHandle<DataDone>)>,
) -> Result<(ReqId, DataDone), BoxError> {
    match data {
        Some((request, task)) => Ok((*request, task.await?)),
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Runs one data channel over `tcp` to its end: the TLS handshake, the payload (`upload`, or what arrives), the
/// close_notify exchange. The channel decides everything; this moves bytes and keeps its clock.
async fn pump(
    mut tcp: TcpStream,
    mut channel: Box<DataChannel>,
    direction: Direction,
    payload: Payload,
    upload: Vec<u8>,
) -> DataDone {
    let (mut received, mut sent) = (Vec::new(), 0);
    let mut buf = vec![0u8; 64 * 1024];
    let mut wire = Vec::new();
    let result = loop {
        let now = Instant::now();
        if direction == Direction::Upload {
            sent += channel.write(&upload[sent..]);
            if sent == upload.len() {
                channel.finish(now);
            }
        }
        wire.clear();
        let deadline = match channel.poll_output(&mut wire) {
            DataOutput::Transmit(_) => {
                if tcp.write_all(&wire).await.is_err() {
                    channel.handle_eof(now);
                }
                continue;
            }
            // Our close_notify is out: the FIN follows, as a receiver in the clear needs it to see the end.
            DataOutput::ShutdownWrite => {
                let _ = tcp.shutdown().await;
                continue;
            }
            DataOutput::TransferReady(_) => continue, // a server session's duty, never a client's
            DataOutput::Event(DataEvent::Finished(report)) => break Ok(report),
            DataOutput::Event(DataEvent::Failed(e)) => break Err(e),
            DataOutput::Event(_) => continue,
            DataOutput::Wait(deadline) => deadline,
        };
        if direction == Direction::Upload && channel.can_write() {
            continue;
        }
        tokio::select! {
            read = tcp.read(&mut buf) => match read {
                Ok(0) | Err(_) => channel.handle_eof(Instant::now()),
                Ok(n) => {
                    let mut at = 0;
                    while at < n {
                        at += channel.handle_input(Instant::now(), &buf[at..n]);
                        // Taking the plaintext out makes room for the rest (backpressure).
                        loop {
                            let chunk = channel.read_chunk();
                            if chunk.is_empty() {
                                break;
                            }
                            received.extend_from_slice(chunk);
                            let used = chunk.len();
                            channel.consume(used);
                        }
                    }
                }
            },
            () = sleep_until(deadline) => channel.handle_timeout(Instant::now()),
        }
    };
    let outcome = match payload {
        Payload::Listing { .. } => Outcome::ListingReceived {
            data: result,
            bytes: std::mem::take(&mut received),
        },
        _ => Outcome::DataFinished(result),
    };
    (outcome, received)
}

/// Trust `ca_pem` when given, else the system roots.
fn tls_config(ca_pem: Option<&String>) -> Result<Arc<rustls::ClientConfig>, BoxError> {
    let certs: Vec<CertificateDer> = match ca_pem {
        Some(path) => CertificateDer::pem_file_iter(path)?.collect::<Result<_, _>>()?,
        None => rustls_native_certs::load_native_certs().certs,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(certs);
    let provider = Arc::new(ftps_proto::tls_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// One line per transfer: bytes and whether the data connection resumed the control connection's TLS session.
fn report(what: &str, output: &Output) {
    if let Output::Transfer(t) = output {
        let resumed = if t.resumed { "resumed" } else { "not resumed" };
        println!("{what}: {} bytes, data TLS {resumed}", t.bytes);
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, port, user, password, file, rest @ ..] = &args[..] else {
        return Err("usage: tokio_client HOST PORT USER PASSWORD FILE [CA_PEM]".into());
    };
    let tcp = TcpStream::connect((host.as_str(), port.parse::<u16>()?)).await?;
    tcp.set_nodelay(true)?;
    let peer = tcp.peer_addr()?;
    let config = ClientSessionConfig::new(tls_config(rest.first())?);
    let server_name = ServerName::try_from(host.clone())?;
    let session = ClientSession::new(config, server_name, peer, Instant::now())?;
    let mut control = Control {
        tcp,
        session,
        input: Vec::new(),
        connected: None,
        data: None,
        upload: Vec::new(),
        downloaded: Vec::new(),
    };
    control
        .run(Operation::Login(Credentials::new(user, password)))
        .await?;
    let name = Path::new(file)
        .file_name()
        .ok_or("FILE has no name")?
        .to_string_lossy()
        .into_owned();
    control.upload = std::fs::read(file)?;
    report(
        &format!("put {name}"),
        &control.run(Operation::Store(name.clone())).await?,
    );
    if let Output::Listing(entries) = control.run(Operation::List(None)).await? {
        for entry in entries {
            println!("listed {} {}", entry.name, entry.size.unwrap_or(0));
        }
    }
    let get = Operation::Retrieve {
        path: name.clone(),
        offset: None,
    };
    report(&format!("get {name}"), &control.run(get).await?);
    std::fs::write(format!("{file}.back"), &control.downloaded)?;
    control.run(Operation::Quit).await?;
    Ok(())
}
