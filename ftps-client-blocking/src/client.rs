//! [`Client`]: one control connection on a blocking `TcpStream`, driving a [`ClientSession`].
//!
//! # The drive loop
//!
//! Every call submits one typed [`Operation`] and then keeps the engine's contract: after each input or mutation
//! it drains `poll_transmit` (written to the socket) and `poll_event`, then blocks on the control socket with a
//! read timeout computed from `poll_timeout()`; when the timeout passes it calls `handle_timeout`. Data
//! connections are opened, accepted and pumped on the calling thread (see [`crate::transfer`]); no background
//! thread is used, so nothing reads the control connection while the caller is idle — see
//! [`Client::keepalive_if_idle`].

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ftps_proto::client::{
    is_tls_answer, ClientSession, Credentials, DataConnectError, Direction, Event, OpError, OpId,
    Operation, Outcome, Output, Payload, ReqId, Request, RequestKind, ServerFeatures,
};
use ftps_proto::codec::{Entry, Reply, Timeval};
use ftps_proto::data::{DataChannel, DataError, DataReport};
use ftps_proto::TlsInfo;
use rustls::pki_types::ServerName;

use crate::config::{ClientConfig, TraceSink};
use crate::data_conn::DataConn;
use crate::error::{Error, Result};
use crate::read_buffer::ReadBuffer;
use ftps_proto::client::Security;

/// Control connection read buffer: replies are small; TLS records are at most ~16 KiB.
const CONTROL_BUFFER: usize = 32 * 1024;

/// A blocking FTPS client: one control connection, one operation at a time.
///
/// ```no_run
/// use ftps_client_blocking::{Client, ClientConfig};
/// # fn main() -> ftps_client_blocking::Result<()> {
/// let mut client = Client::connect("ftp.example.com", 21, ClientConfig::new())?;
/// client.login("alice", "secret")?;
/// for entry in client.list(None)? {
///     println!("{}", entry.name);
/// }
/// client.get("remote.bin", "local.bin".as_ref(), true)?;
/// client.quit()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Client {
    pub(crate) control: Control,
    pub(crate) config: ClientConfig,
    greeting: Option<Reply>,
    features: Option<ServerFeatures>,
    /// The data connection prepared for the running transfer.
    pending_data: Option<PendingData>,
    /// The running transfer's unanswered data channel request, and what it carries.
    drive: Option<(OpId, ReqId, Payload)>,
}

/// A data connection made ready before the server's 1xx reply.
#[derive(Debug)]
enum PendingData {
    /// Passive: connected to where the engine said.
    Connected { op: OpId, stream: TcpStream },
    /// Active: listening for the server.
    Listening { op: OpId, listener: TcpListener },
}

/// What waiting on a transfer operation produced.
pub(crate) enum Progress {
    /// The operation ended.
    Done(std::result::Result<Output, OpError>),
    /// The server accepted the transfer: run this channel.
    Channel(Box<DataChannel>, Direction),
}

/// A transfer whose data connection is up (TLS handshake done), or one that ended without one.
pub(crate) enum Started {
    /// Pump this connection, then report it with [`Client::finish_data`].
    Data(OpId, Box<DataConn>),
    /// The server finished without a data connection (e.g. 226 without 150 for an empty listing).
    Done(Output),
}

impl Client {
    /// Connects to `host:port`, reads the greeting and (unless plain) secures the control connection. The
    /// server's certificate is verified against `host` (or [`ClientConfig::server_name`]).
    pub fn connect(host: &str, port: u16, config: ClientConfig) -> Result<Self> {
        let server_name = config.server_name_for(host)?;
        let addrs = (host, port)
            .to_socket_addrs()
            .map_err(|source| Error::Connect {
                addr: format!("{host}:{port}"),
                source,
            })?;
        Self::connect_to(addrs.collect(), server_name, config)
    }

    /// Connects to a resolved address. The certificate is verified against [`ClientConfig::server_name`] when
    /// set, else against the IP address.
    pub fn connect_addr(addr: impl ToSocketAddrs, config: ClientConfig) -> Result<Self> {
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|source| Error::Connect {
                addr: "address".to_string(),
                source,
            })?
            .collect();
        let first = addrs.first().ok_or_else(|| Error::Connect {
            addr: "address".to_string(),
            source: io::Error::new(ErrorKind::InvalidInput, "no address"),
        })?;
        let server_name = config.server_name_for(&first.ip().to_string())?;
        Self::connect_to(addrs, server_name, config)
    }

    fn connect_to(
        addrs: Vec<SocketAddr>,
        server_name: ServerName<'static>,
        config: ClientConfig,
    ) -> Result<Self> {
        let session_config = config.session_config()?;
        let stream = connect_any(&addrs, config.connect_timeout)?;
        let peer = stream.peer_addr()?;
        let now = Instant::now();
        let mut session = ClientSession::new(session_config, server_name, peer, now)?;
        session.set_today(today());
        let mut client = Self {
            control: Control::new(stream, session, config.reply_timeout, config.trace.clone())?,
            config,
            greeting: None,
            features: None,
            pending_data: None,
            drive: None,
        };
        loop {
            let Next::Event(event) = client.control.next()? else {
                continue;
            };
            match event {
                Event::Connected { greeting, .. } => {
                    client.greeting = Some(greeting);
                    return Ok(client);
                }
                Event::Failed(e)
                    if e.is_greeting_timeout()
                        && matches!(client.config.security, Security::Explicit { .. })
                        && answers_tls_at_once(peer, &client.config) =>
                {
                    return Err(Error::ImplicitTlsPort { addr: peer });
                }
                Event::Failed(e) => return Err(e.into()),
                _ => {}
            }
        }
    }

    // ----- getters -----

    /// The server's 220 greeting.
    pub fn greeting(&self) -> Option<&Reply> {
        self.greeting.as_ref()
    }

    /// The server's features, once logged in.
    pub fn features(&self) -> Option<&ServerFeatures> {
        self.features.as_ref()
    }

    /// What the control connection's TLS negotiated (`None` for plain FTP).
    pub fn tls_info(&self) -> Option<TlsInfo> {
        self.control.session.tls_info()
    }

    /// Whether the session is over (after [`Client::quit`], or a fatal error).
    pub fn is_closed(&self) -> bool {
        self.control.session.is_closed()
    }

    /// The control connection's peer.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.control.stream.peer_addr()
    }

    // ----- operations -----

    /// Logs in (`USER`/`PASS`), then sets up data protection, features and binary type as the engine decides.
    pub fn login(&mut self, user: &str, password: &str) -> Result<()> {
        self.login_with(Credentials::new(user, password))
    }

    /// Logs in with full credentials (including an account, for servers that ask for one).
    pub fn login_with(&mut self, credentials: Credentials) -> Result<()> {
        match self.run(Operation::Login(credentials)) {
            Ok(Output::LoggedIn(features)) => {
                self.features = Some(features);
                Ok(())
            }
            Ok(other) => Err(unexpected(&other)),
            Err(Error::Refused { code, text }) => Err(Error::LoginRefused { code, text }),
            Err(e) => Err(e),
        }
    }

    /// The current directory.
    pub fn pwd(&mut self) -> Result<String> {
        match self.run(Operation::Pwd)? {
            Output::Directory(dir) => Ok(dir),
            other => Err(unexpected(&other)),
        }
    }

    /// Changes the current directory.
    pub fn cwd(&mut self, path: &str) -> Result<()> {
        self.run(Operation::Cwd(path.to_string())).map(drop)
    }

    /// Changes to the parent directory.
    pub fn cdup(&mut self) -> Result<()> {
        self.run(Operation::Cdup).map(drop)
    }

    /// Creates a directory; returns its path as the server reports it.
    pub fn mkdir(&mut self, path: &str) -> Result<String> {
        match self.run(Operation::Mkdir(path.to_string()))? {
            Output::Directory(dir) => Ok(dir),
            other => Err(unexpected(&other)),
        }
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, path: &str) -> Result<()> {
        self.run(Operation::Rmdir(path.to_string())).map(drop)
    }

    /// Deletes a file.
    pub fn delete(&mut self, path: &str) -> Result<()> {
        self.run(Operation::Delete(path.to_string())).map(drop)
    }

    /// Renames (moves) a file or directory.
    pub fn rename(&mut self, from: &str, to: &str) -> Result<()> {
        self.run(Operation::Rename {
            from: from.to_string(),
            to: to.to_string(),
        })
        .map(drop)
    }

    /// A file's size in bytes.
    pub fn size(&mut self, path: &str) -> Result<u64> {
        match self.run(Operation::Size(path.to_string()))? {
            Output::Size(size) => Ok(size),
            other => Err(unexpected(&other)),
        }
    }

    /// A file's modification time (UTC) as the server reports it.
    pub fn mdtm_timeval(&mut self, path: &str) -> Result<Timeval> {
        match self.run(Operation::Mdtm(path.to_string()))? {
            Output::Modified(time) => Ok(time),
            other => Err(unexpected(&other)),
        }
    }

    /// A file's modification time.
    pub fn mdtm(&mut self, path: &str) -> Result<SystemTime> {
        Ok(self.mdtm_timeval(path)?.to_system_time())
    }

    /// Sets a file's modification time (`MFMT`), to the second.
    pub fn set_mtime(&mut self, path: &str, time: SystemTime) -> Result<()> {
        let seconds = match time.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_secs()).ok(),
            Err(before) => i64::try_from(before.duration().as_secs()).ok().map(|s| -s),
        };
        let time = seconds
            .and_then(Timeval::from_unix_seconds)
            .ok_or_else(|| Error::Protocol("time out of range for MFMT".to_string()))?;
        self.run(Operation::SetModified {
            path: path.to_string(),
            time,
        })
        .map(drop)
    }

    /// `NOOP`: checks the control connection.
    pub fn noop(&mut self) -> Result<()> {
        self.run(Operation::Noop).map(drop)
    }

    /// Sends `NOOP` when keepalive is configured ([`ClientConfig::keepalive`]) and the control connection has been
    /// idle at least that long; returns whether it did.
    ///
    /// The client has no background thread: an application that stays idle between calls (or runs long local
    /// work) calls this periodically so NAT gateways and server idle timers keep the control connection open.
    pub fn keepalive_if_idle(&mut self) -> Result<bool> {
        let Some(interval) = self.config.keepalive else {
            return Ok(false);
        };
        if self.control.last_activity.elapsed() < interval || !self.control.session.is_idle() {
            return Ok(false);
        }
        self.noop()?;
        Ok(true)
    }

    /// A directory listing (`MLSD` when the server offers it, else `LIST` parsed; the engine decides).
    pub fn list(&mut self, path: Option<&str>) -> Result<Vec<Entry>> {
        self.control.session.set_today(today());
        match self.run_listing(Operation::List(path.map(str::to_string)))? {
            Output::Listing(entries) => Ok(entries),
            other => Err(unexpected(&other)),
        }
    }

    /// Names in a directory (`NLST`).
    pub fn nlst(&mut self, path: Option<&str>) -> Result<Vec<String>> {
        match self.run_listing(Operation::NameList(path.map(str::to_string)))? {
            Output::Names(names) => Ok(names),
            other => Err(unexpected(&other)),
        }
    }

    /// Ends the session with `QUIT` and closes the connection.
    pub fn quit(mut self) -> Result<()> {
        let result = self.run(Operation::Quit).map(drop);
        let _ = self.control.stream.shutdown(std::net::Shutdown::Both);
        result
    }

    // ----- the drive loop -----

    /// Submits `op` and waits for its result.
    pub(crate) fn run(&mut self, op: Operation) -> Result<Output> {
        let id = self.submit(op);
        match self.wait(id)? {
            Progress::Done(result) => result.map_err(Error::from),
            Progress::Channel(..) => Err(Error::Protocol(
                "data channel for a non-transfer operation".to_string(),
            )),
        }
    }

    /// Submits `op` and waits for the engine's own result, for callers that let the engine judge a refusal.
    /// The outer error is this client's (I/O, a failed session).
    pub(crate) fn run_op(&mut self, op: Operation) -> Result<std::result::Result<Output, OpError>> {
        let id = self.submit(op);
        match self.wait(id)? {
            Progress::Done(result) => Ok(result),
            Progress::Channel(..) => Err(Error::Protocol(
                "data channel for a non-transfer operation".to_string(),
            )),
        }
    }

    fn submit(&mut self, op: Operation) -> OpId {
        self.control.session.submit(Instant::now(), op)
    }

    /// Drives the session until operation `id` completes or hands out its data channel, opening data connections
    /// on the way.
    pub(crate) fn wait(&mut self, id: OpId) -> Result<Progress> {
        loop {
            let event = match self.control.next()? {
                Next::Request(Request {
                    id: request,
                    op,
                    kind,
                }) => {
                    match kind {
                        RequestKind::ConnectData { addr } => self.open_passive(request, op, addr),
                        RequestKind::Listen => self.listen(request, op),
                        RequestKind::DriveData {
                            channel,
                            direction,
                            payload,
                        } if op == id => {
                            self.drive = Some((op, request, payload));
                            return Ok(Progress::Channel(channel, direction));
                        }
                        // The channel of a transfer abandoned by a dropped guard: its ABOR settles it.
                        _ => self.pending_data = None,
                    }
                    continue;
                }
                Next::Event(event) => event,
            };
            match event {
                Event::Completed { op, result } if op == id => return Ok(Progress::Done(result)),
                // A transfer abandoned by a dropped guard settling its ABOR.
                Event::Completed { .. } => {}
                Event::Connected { greeting, .. } => self.greeting = Some(greeting),
                // Failures complete every pending operation; the rest needs no action.
                _ => {}
            }
        }
    }

    /// Passive mode: connect now, before the server's 1xx.
    fn open_passive(&mut self, request: ReqId, op: OpId, addr: SocketAddr) {
        let outcome = match connect_data(addr, self.config.connect_timeout) {
            Ok(stream) => {
                self.pending_data = Some(PendingData::Connected { op, stream });
                Outcome::DataConnected
            }
            Err(e) => Outcome::DataConnectFailed(DataConnectError::Connect {
                addr,
                reason: e.to_string(),
            }),
        };
        self.control
            .session
            .complete(Instant::now(), request, outcome);
    }

    /// Active mode: listen on the control connection's local IP.
    fn listen(&mut self, request: ReqId, op: OpId) {
        let bound = self
            .control
            .stream
            .local_addr()
            .and_then(|local| TcpListener::bind((local.ip(), 0)))
            .and_then(|listener| listener.local_addr().map(|addr| (listener, addr)));
        let outcome = match bound {
            Ok((listener, addr)) => {
                self.pending_data = Some(PendingData::Listening { op, listener });
                Outcome::Listening(addr)
            }
            Err(e) => Outcome::DataConnectFailed(DataConnectError::Listen {
                reason: e.to_string(),
            }),
        };
        self.control
            .session
            .complete(Instant::now(), request, outcome);
    }

    /// The data connection of `op`: the passive one, or the server's accepted on the active listener.
    fn take_data_stream(&mut self, op: OpId) -> std::result::Result<TcpStream, DataConnectError> {
        match self.pending_data.take() {
            Some(PendingData::Connected { op: o, stream }) if o == op => Ok(stream),
            Some(PendingData::Listening { op: o, listener }) if o == op => {
                let accepted = self
                    .control
                    .stream
                    .peer_addr()
                    .map_err(Error::from)
                    .and_then(|peer| {
                        accept_from(&listener, peer.ip(), self.config.connect_timeout)
                    });
                accepted.map_err(|e| DataConnectError::Accept {
                    reason: e.to_string(),
                })
            }
            _ => Err(DataConnectError::Accept {
                reason: "no data connection was opened".to_string(),
            }),
        }
    }

    /// Submits a transfer and runs it up to a data connection with finished TLS handshake.
    pub(crate) fn start_transfer(&mut self, op: Operation) -> Result<Started> {
        let id = self.submit(op);
        let (channel, direction) = match self.wait(id)? {
            Progress::Done(Ok(output)) => return Ok(Started::Done(output)),
            Progress::Done(Err(e)) => return Err(e.into()),
            Progress::Channel(channel, direction) => (channel, direction),
        };
        let stream = match self.take_data_stream(id) {
            Ok(stream) => stream,
            Err(e) => {
                self.answer_drive(id, Outcome::DataConnectFailed(e));
                return match self.wait(id)? {
                    Progress::Done(Err(e)) => Err(e.into()),
                    _ => Err(Error::Protocol(
                        "transfer went on without its data connection".to_string(),
                    )),
                };
            }
        };
        let mut conn = Box::new(DataConn::new(stream, channel, direction, &self.config)?);
        if let Err(e) = conn.handshake() {
            // The server's reply (e.g. 522 for a refused session reuse) says more than our side of it.
            let outcome = conn.take_outcome();
            drop(conn);
            return match self.finish_data(id, outcome) {
                Err(reply_error) if reply_error.reply_code().is_some() => Err(reply_error),
                _ => Err(e),
            };
        }
        Ok(Started::Data(id, conn))
    }

    /// Answers the data channel request of transfer `id`.
    fn answer_drive(&mut self, id: OpId, outcome: Outcome) {
        if let Some((_, request, _)) = self.drive.take_if(|(op, ..)| *op == id) {
            self.control
                .session
                .complete(Instant::now(), request, outcome);
        }
    }

    /// Reports the data side of `id` and waits for the operation's result.
    pub(crate) fn finish_data(
        &mut self,
        id: OpId,
        outcome: std::result::Result<DataReport, DataError>,
    ) -> Result<Output> {
        self.finish_with(id, Outcome::DataFinished(outcome))
    }

    /// Answers the data side of `id` with `outcome` and waits for the operation's result.
    fn finish_with(&mut self, id: OpId, outcome: Outcome) -> Result<Output> {
        self.answer_drive(id, outcome);
        match self.wait(id)? {
            Progress::Done(result) => result.map_err(Error::from),
            Progress::Channel(..) => Err(Error::Protocol("second data channel".to_string())),
        }
    }

    /// Aborts transfer `id` (its data connection already closed) and waits until the server settled it.
    pub(crate) fn abort_transfer(&mut self, id: OpId) -> Result<()> {
        self.control.session.abort(Instant::now(), id);
        match self.wait(id)? {
            Progress::Done(Ok(_)) | Progress::Done(Err(OpError::Aborted)) => Ok(()),
            Progress::Done(Err(e)) => match Error::from(e) {
                e if e.is_session_usable() => Ok(()),
                e => Err(e),
            },
            Progress::Channel(..) => Err(Error::Protocol("second data channel".to_string())),
        }
    }

    /// Aborts transfer `id` without waiting: the result is consumed by a later call (used on drop).
    pub(crate) fn abort_quietly(&mut self, id: OpId) {
        self.control.session.abort(Instant::now(), id);
        let _ = self.control.flush();
    }

    /// Runs a listing transfer, handing its bytes to the engine.
    fn run_listing(&mut self, op: Operation) -> Result<Output> {
        let (id, mut conn) = match self.start_transfer(op)? {
            Started::Done(output) => return Ok(output),
            Started::Data(id, conn) => (id, conn),
        };
        let max_bytes = match self.drive {
            Some((_, _, Payload::Listing { max_bytes })) => max_bytes,
            _ => usize::MAX,
        };
        let mut bytes = Vec::new();
        // One byte past the limit is enough for the engine to call the listing too large.
        let drained = conn.drain(|chunk| {
            let room = max_bytes.saturating_add(1).saturating_sub(bytes.len());
            bytes.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        });
        let data = conn.take_outcome();
        drop(conn);
        if let Err(e) = drained {
            let _ = self.abort_transfer(id);
            return Err(e);
        }
        self.finish_with(id, Outcome::ListingReceived { data, bytes })
    }
}

/// What the session handed out: work to do and answer, or a notice.
#[derive(Debug)]
enum Next {
    Request(Request),
    Event(Event),
}

/// The control socket, the session and their buffers.
#[derive(Debug)]
pub(crate) struct Control {
    stream: TcpStream,
    pub(crate) session: ClientSession,
    /// Received bytes not yet taken by the session.
    input: ReadBuffer,
    output: Vec<u8>,
    /// Requests and events not handed out yet, requests of each drain first.
    pending: VecDeque<Next>,
    eof: bool,
    /// The longest a read may block when the engine has no deadline (a safety net; it normally has one).
    reply_timeout: Duration,
    read_timeout: Option<Duration>,
    pub(crate) last_activity: Instant,
    /// Where trace events go ([`ClientConfig::trace`]); they never reach `events`.
    trace: Option<TraceSink>,
}

impl Control {
    fn new(
        stream: TcpStream,
        session: ClientSession,
        reply_timeout: Duration,
        trace: Option<TraceSink>,
    ) -> Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(reply_timeout))?;
        Ok(Self {
            stream,
            session,
            input: ReadBuffer::new(CONTROL_BUFFER, CONTROL_BUFFER),
            output: Vec::new(),
            pending: VecDeque::new(),
            eof: false,
            reply_timeout,
            read_timeout: None,
            last_activity: Instant::now(),
            trace,
        })
    }

    /// Writes what the session wants sent and collects its requests and events.
    pub(crate) fn flush(&mut self) -> Result<()> {
        while self.session.poll_transmit(&mut self.output) > 0 {}
        if !self.output.is_empty() {
            let written = self.stream.write_all(&self.output);
            self.output.clear();
            written?;
            self.last_activity = Instant::now();
        }
        while let Some(request) = self.session.poll_request() {
            self.pending.push_back(Next::Request(request));
        }
        while let Some(event) = self.session.poll_event() {
            match event {
                Event::Trace(line) => {
                    if let Some(sink) = &self.trace {
                        (sink.0)(&line);
                    }
                }
                event => self.pending.push_back(Next::Event(event)),
            }
        }
        Ok(())
    }

    /// The next request or event, reading the control socket as long as needed.
    fn next(&mut self) -> Result<Next> {
        loop {
            self.flush()?;
            if let Some(next) = self.pending.pop_front() {
                return Ok(next);
            }
            if self.session.is_closed() {
                return Err(match self.session.error() {
                    Some(e) => e.clone().into(),
                    None => Error::Closed("session closed".to_string()),
                });
            }
            let now = Instant::now();
            if !self.input.unread().is_empty() {
                let taken = self.session.handle_input(now, self.input.unread());
                self.input.consume(taken);
                if taken > 0 {
                    continue;
                }
            }
            if self.eof {
                return Err(Error::Closed(
                    "control connection closed by the server".to_string(),
                ));
            }
            let deadline = self.session.poll_timeout();
            if deadline.is_some_and(|d| d <= now) {
                self.session.handle_timeout(now);
                continue;
            }
            let wait = deadline.map_or(self.reply_timeout, |d| d - now);
            self.read(wait, deadline.is_some())?;
        }
    }

    /// One read from the control socket, waiting at most `wait`.
    fn read(&mut self, wait: Duration, engine_deadline: bool) -> Result<()> {
        let wait = Some(wait.max(Duration::from_millis(1)));
        if self.read_timeout != wait {
            self.stream.set_read_timeout(wait)?;
            self.read_timeout = wait;
        }
        // A full buffer the session does not take from would read as a false EOF.
        let Some(free) = self.input.space() else {
            return Err(Error::Protocol("control input stalled".to_string()));
        };
        match self.stream.read(free) {
            Ok(0) => {
                self.eof = true;
                self.session.handle_eof(Instant::now());
            }
            Ok(n) => {
                self.input.filled(n);
                self.last_activity = Instant::now();
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if !engine_deadline {
                    return Err(Error::Timeout("reply"));
                }
                // The loop calls handle_timeout once the deadline has passed.
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }
}

/// How long the implicit-port probe waits for a TLS answer: a server that speaks TLS first answers a
/// ClientHello within a round trip.
const IMPLICIT_PROBE_WAIT: Duration = Duration::from_secs(3);

/// Whether `addr` answers a TLS ClientHello at once with a TLS record (a handshake or an alert): the sign
/// of an implicit FTPS port, where an explicit client waits in vain for a plaintext greeting.
fn answers_tls_at_once(addr: SocketAddr, config: &ClientConfig) -> bool {
    let probe = || -> Result<bool> {
        // An implicit session's first output is its ClientHello.
        let implicit = config.clone().implicit().session_config()?;
        let name = ServerName::from(addr.ip());
        let mut session = ClientSession::new(implicit, name, addr, Instant::now())?;
        let mut hello = Vec::new();
        while session.poll_transmit(&mut hello) > 0 {}
        let mut stream = TcpStream::connect_timeout(&addr, IMPLICIT_PROBE_WAIT)?;
        stream.set_read_timeout(Some(IMPLICIT_PROBE_WAIT))?;
        stream.set_write_timeout(Some(IMPLICIT_PROBE_WAIT))?;
        stream.write_all(&hello)?;
        let mut first = [0u8; 1];
        Ok(stream.read(&mut first)? == 1 && is_tls_answer(first[0]))
    };
    probe().unwrap_or(false)
}

/// Connects a passive data connection, with `TCP_NODELAY`.
fn connect_data(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Connects to the first address that answers within `timeout`, with `TCP_NODELAY`.
pub(crate) fn connect_any(addrs: &[SocketAddr], timeout: Duration) -> Result<TcpStream> {
    let mut last = io::Error::new(ErrorKind::InvalidInput, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) => last = e,
        }
    }
    Err(Error::Connect {
        addr: addrs
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        source: last,
    })
}

/// Accepts the server's data connection (active mode) within `timeout`, refusing any from another host: only
/// the control connection's peer may deliver data (RFC 2577 section 3, data connection theft).
fn accept_from(listener: &TcpListener, peer: IpAddr, timeout: Duration) -> Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        match listener.accept() {
            Ok((stream, from)) if from.ip() == peer => {
                stream.set_nonblocking(false)?;
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(_) => {} // a stranger: dropped
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(Error::Timeout("accepting the data connection"));
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Today's date (UTC), for `LIST` lines that omit the year.
fn today() -> Timeval {
    Timeval::from_system_time(SystemTime::now()).unwrap_or(Timeval::UNIX_EPOCH)
}

fn unexpected(output: &Output) -> Error {
    Error::Protocol(format!("unexpected result {output:?}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap

    use std::io::{BufRead, BufReader};

    use super::*;

    /// A plain-FTP server on loopback answering each command line from `answer` (a `None` answer sends nothing);
    /// returns its address and the commands it received, once the client closed.
    fn scripted_server(
        answer: impl Fn(&str) -> Option<String> + Send + 'static,
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            tcp.write_all(b"220 scripted\r\n").unwrap();
            let mut reader = BufReader::new(tcp.try_clone().unwrap());
            let mut received = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return received;
                }
                let line = line.trim_end().to_string();
                if let Some(reply) = answer(&line) {
                    tcp.write_all(reply.as_bytes()).unwrap();
                }
                received.push(line);
            }
        });
        (addr, server)
    }

    /// A passive port that refuses connections: bound, then closed again.
    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn a_refused_data_connection_is_a_connect_failure_and_the_session_goes_on() {
        let port = closed_port();
        let (addr, server) = scripted_server(move |line| {
            let verb = line.split_whitespace().next().unwrap_or("");
            Some(match verb {
                "USER" => "331 password\r\n".to_string(),
                "PASS" => "230 in\r\n".to_string(),
                "FEAT" => "211-Features:\r\n211 End\r\n".to_string(),
                "TYPE" | "NOOP" => "200 ok\r\n".to_string(),
                "EPSV" => format!("229 Entering Extended Passive Mode (|||{port}|)\r\n"),
                // Like a real server, RETR waits for the data connection: no reply until ABOR.
                "RETR" => return None,
                "ABOR" => "425 no data connection\r\n226 abort ok\r\n".to_string(),
                "QUIT" => "221 bye\r\n".to_string(),
                _ => "502 not here\r\n".to_string(),
            })
        });
        let config = ClientConfig::new()
            .plain()
            .reply_timeout(Duration::from_secs(10));
        let mut client = Client::connect_addr(addr, config).unwrap();
        client.login("alice", "secret").unwrap();
        let error = client.retr("file.bin", 0).map(drop).unwrap_err();
        match &error {
            Error::DataConnect(DataConnectError::Connect { addr, .. }) => {
                assert_eq!(addr.port(), port);
            }
            other => panic!("expected a data connect failure, got {other:?}"),
        }
        assert!(error.is_session_usable(), "{error}");
        assert!(error.to_string().contains("connect to"), "{error}");
        client.noop().unwrap();
        client.quit().unwrap();
        let received = server.join().unwrap();
        assert!(received.iter().any(|l| l == "ABOR"), "{received:?}");
    }
}
