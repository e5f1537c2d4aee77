//! The virtual-time `Pair` harness of DESIGN.md ("Tests and measurements"): a [`ClientSession`] wired to a
//! [`ServerSession`] in memory, with real rustls on both sides, an in-memory store answering every server
//! [`Request`], and a [`ChunkPolicy`] deciding how bytes cross each connection (control and data alike).
//!
//! The drive loop keeps the engine contract: after every input or mutation every `poll_*` is drained. Time is
//! virtual: it only moves when nothing else can, straight to the earliest `poll_timeout()` of any party.
//!
//! Chunking invariance: each scenario runs whole, byte by byte and at random splits; the client's events and the
//! server's replies must be identical.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;

use std::time::{Duration, Instant};

use crate::client::{
    self, ClientSession, ClientSessionConfig, Credentials, DataConnectionMode, OpError, OpId,
    Operation, Output,
};
use crate::codec::{Reply, Timeval};
use crate::data::{DataChannel, DataEvent, DataOutput, DataType};
use crate::path::VirtualPath;
use crate::server::{
    Event as ServerEvent, Failure, FileInfo, FileKind, LoginGrant, Notice, Outcome, ReqId, Request,
    RequestKind, ServerSession, SessionConfig, Source, StorageError, Work, WriteMode,
};
use crate::test_support::{localhost, TestPki, TLS12, TLS13};

const SERVER_CONTROL: &str = "127.0.0.1:21";
const CLIENT_CONTROL: &str = "127.0.0.1:40001";
const SERVER_PASSIVE: &str = "127.0.0.1:50000";
const CLIENT_ACTIVE: &str = "127.0.0.1:40002";
const USER: &str = "alice";
const PASSWORD: &str = "secret";
/// Every file's modification time until `MFMT` changes it.
const EPOCH: Timeval = Timeval {
    year: 2024,
    month: 1,
    day: 2,
    hour: 3,
    minute: 4,
    second: 5,
    millisecond: None,
};
/// Drive-loop steps before the harness declares a livelock.
const MAX_STEPS: u64 = 20_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// How bytes cross a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChunkPolicy {
    /// Everything pending at once.
    Whole,
    /// One byte per delivery.
    ByteByByte,
    /// Random lengths from 1 to everything pending, from this seed.
    Random(u64),
}

/// Picks delivery lengths for one connection direction.
#[derive(Debug)]
struct Splitter {
    policy: ChunkPolicy,
    state: u64,
}

impl Splitter {
    fn new(policy: ChunkPolicy, stream: u64) -> Self {
        let seed = match policy {
            ChunkPolicy::Random(seed) => seed,
            _ => 0,
        };
        Self {
            policy,
            state: seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        }
    }

    /// splitmix64: small, seedable, good enough to pick split points.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn len(&mut self, available: usize) -> usize {
        match self.policy {
            ChunkPolicy::Whole => available,
            ChunkPolicy::ByteByByte => available.min(1),
            ChunkPolicy::Random(_) => {
                // Log-uniform lengths: many pieces split lines and TLS records, a few are large.
                let r = self.next_u64();
                let max = 1usize << (r % 15);
                let n = 1 + (r >> 8) as usize % max;
                n.min(available)
            }
        }
    }
}

/// One direction of a connection: bytes in flight, then maybe a FIN.
#[derive(Debug)]
struct Pipe {
    buf: Vec<u8>,
    start: usize,
    fin: bool,
    eof_delivered: bool,
    split: Splitter,
}

impl Pipe {
    fn new(policy: ChunkPolicy, stream: u64) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            fin: false,
            eof_delivered: false,
            split: Splitter::new(policy, stream),
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn push(&mut self, bytes: &[u8]) {
        assert!(!self.fin, "bytes written after FIN");
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Offers the next piece to `feed`, which returns how much it took. Returns whether anything was taken.
    fn deliver(&mut self, feed: impl FnOnce(&[u8]) -> usize) -> bool {
        let available = self.buf.len() - self.start;
        if available == 0 {
            return false;
        }
        let n = self.split.len(available);
        let piece = &self.buf[self.start..self.start + n];
        let taken = feed(piece);
        assert!(taken <= n, "took more than offered");
        self.start += taken;
        taken > 0
    }

    /// Whether the FIN is due now: everything before it was delivered.
    fn eof_due(&mut self) -> bool {
        if self.fin && !self.eof_delivered && self.pending().is_empty() {
            self.eof_delivered = true;
            true
        } else {
            false
        }
    }
}

/// A file or directory in the store, as `FileInfo` describes it.
#[derive(Debug, Default)]
pub(crate) struct Store {
    pub(crate) files: BTreeMap<String, Vec<u8>>,
    pub(crate) dirs: BTreeSet<String>,
    mtimes: BTreeMap<String, Timeval>,
}

fn parent_of(path: &str) -> String {
    VirtualPath::new(path).unwrap().parent().as_str().to_owned()
}

fn name_of(path: &str) -> String {
    VirtualPath::new(path)
        .unwrap()
        .file_name()
        .unwrap_or("")
        .to_owned()
}

impl Store {
    fn new() -> Self {
        let mut store = Self::default();
        store.dirs.insert("/".to_owned());
        store
    }

    fn info(&self, path: &str) -> Option<FileInfo> {
        let name = name_of(path);
        let mut info = if let Some(data) = self.files.get(path) {
            let mut i = FileInfo::new(name, FileKind::File, data.len() as u64);
            i.mode = Some(0o644);
            i
        } else if self.dirs.contains(path) {
            let mut i = FileInfo::new(name, FileKind::Dir, 0);
            i.mode = Some(0o755);
            i
        } else {
            return None;
        };
        info.modified = Some(self.mtimes.get(path).copied().unwrap_or(EPOCH));
        Some(info)
    }

    fn children(&self, dir: &str) -> Vec<FileInfo> {
        let all = self.dirs.iter().chain(self.files.keys());
        let mut out: Vec<FileInfo> = all
            .filter(|p| p.as_str() != "/" && parent_of(p) == dir)
            .filter_map(|p| self.info(p))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    fn exists(&self, path: &str) -> bool {
        self.files.contains_key(path) || self.dirs.contains(path)
    }
}

fn storage(e: StorageError) -> Outcome {
    Outcome::Failed(Failure::Storage(e))
}

/// A file the server opened and has not transferred yet.
#[derive(Debug)]
enum OpenFile {
    Read(Vec<u8>),
    Write { path: String, data: Vec<u8> },
}

/// The server's end of a data connection (its `DriveData`), and the transfer `RunTransfer` starts on it.
#[derive(Debug)]
struct ServerTransfer {
    id: ReqId,
    channel: Box<DataChannel>,
    /// `RunTransfer` has named this channel.
    started: bool,
    /// Bytes to send and how many went out, for downloads and listings.
    send: Option<(Vec<u8>, usize)>,
    /// Where an upload goes and what it holds so far.
    upload: Option<(String, Vec<u8>)>,
    finished: bool,
}

/// What the client does with the payload of a transfer.
#[derive(Debug)]
enum ClientPayload {
    Upload {
        data: Vec<u8>,
        sent: usize,
    },
    Download,
    /// The listing's bytes so far.
    Listing(Vec<u8>),
}

/// The client's end of a running transfer (its `RequestKind::DriveData`).
#[derive(Debug)]
struct ClientTransfer {
    op: OpId,
    /// The `DriveData` request, answered when the channel ends.
    request: client::ReqId,
    channel: Box<DataChannel>,
    payload: ClientPayload,
    finished: bool,
}

/// One in-memory data connection.
#[derive(Debug)]
struct DataLink {
    c2s: Pipe,
    s2c: Pipe,
    client: Option<ClientTransfer>,
    server: Option<ServerTransfer>,
    /// The client closed its socket (channel done, or the transfer abandoned and settled).
    client_closed: bool,
    server_closed: bool,
}

/// How both sessions are configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Setup {
    /// Explicit FTPS, `PROT P`, resumption required (the secure defaults), passive data connections.
    Passive,
    /// As `Passive`, with active (`EPRT`) data connections.
    Active,
    /// Implicit FTPS.
    Implicit,
    /// As `Passive`, and the client clears the control channel after login (`CCC`, RFC 4217 section 12.3).
    Ccc,
    /// Plain FTP: no TLS anywhere.
    Plain,
    /// As `Passive`, with the server holding its 1xx for the frontend's `data_ready` (the smol server's set-up).
    HeldPreliminary,
}

impl Setup {
    fn configs(
        self,
        pki: &TestPki,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (SessionConfig, ClientSessionConfig) {
        let mut server = SessionConfig {
            tls: Some(pki.server_config(versions)),
            ..SessionConfig::default()
        };
        let mut client = ClientSessionConfig::new(pki.client_config(versions));
        match self {
            Setup::Passive => {}
            Setup::HeldPreliminary => server.preliminary_reply_wait = Duration::from_secs(1),
            Setup::Active => client.data_mode = DataConnectionMode::Active,
            Setup::Implicit => {
                server.implicit_tls = true;
                client = ClientSessionConfig::implicit(pki.client_config(versions));
            }
            Setup::Ccc => {
                server.allow_ccc = true;
                client.clear_command_channel = true;
            }
            Setup::Plain => {
                server = SessionConfig {
                    require_tls_control: false,
                    require_tls_data: false,
                    data_resumption: crate::data::ResumptionPolicy::Off,
                    ..SessionConfig::default()
                };
                client = ClientSessionConfig::plain();
            }
        }
        // Every chunking of one script must see the same STOU names.
        server.unique_name_seed = Some(1);
        (server, client)
    }
}

/// Two sessions in memory, a store, and virtual time.
pub(crate) struct Pair {
    base: Instant,
    offset: Duration,
    policy: ChunkPolicy,
    streams: u64,
    pub(crate) client: ClientSession,
    pub(crate) server: ServerSession,
    c2s: Pipe,
    s2c: Pipe,
    pub(crate) store: Store,
    open_files: HashMap<ReqId, OpenFile>,
    /// The server's outstanding `AcceptData` / `ConnectData` (answered once the client side is there).
    /// `true` for `ConnectData` (active mode).
    data_wanted: Option<(ReqId, bool)>,
    /// The client opened (passive) or listens for (active) a data connection.
    client_data_ready: bool,
    link: Option<DataLink>,
    /// What each client transfer sends, keyed by op.
    uploads: HashMap<OpId, Vec<u8>>,
    listings: HashSet<OpId>,
    /// Bytes each download received.
    pub(crate) downloads: HashMap<OpId, Vec<u8>>,
    /// Abort these transfers once they received this many bytes.
    abort_after: HashMap<OpId, u64>,
    /// An aborted transfer whose data socket stays open until its `ABOR` settled.
    abandoned: Option<OpId>,
    results: HashMap<OpId, Result<Output, OpError>>,
    /// Client events, rendered (`DataChannel` carries an owned channel, so the log keeps its shape).
    pub(crate) client_log: Vec<String>,
    /// Server replies, in order.
    pub(crate) server_log: Vec<Reply>,
    steps: u64,
}

impl Pair {
    /// A pair over TLS `versions`, set up as `setup` says.
    pub(crate) fn new(
        pki: &TestPki,
        versions: &[&'static rustls::SupportedProtocolVersion],
        policy: ChunkPolicy,
        setup: Setup,
    ) -> Self {
        let base = Instant::now();
        let (server_config, client_config) = setup.configs(pki, versions);
        let server = ServerSession::new(
            server_config,
            addr(CLIENT_CONTROL),
            addr(SERVER_CONTROL),
            base,
        );
        let client =
            ClientSession::new(client_config, localhost(), addr(SERVER_CONTROL), base).unwrap();
        let mut pair = Self {
            base,
            offset: Duration::ZERO,
            policy,
            streams: 2,
            client,
            server,
            c2s: Pipe::new(policy, 0),
            s2c: Pipe::new(policy, 1),
            store: Store::new(),
            open_files: HashMap::new(),
            data_wanted: None,
            client_data_ready: false,
            link: None,
            uploads: HashMap::new(),
            listings: HashSet::new(),
            downloads: HashMap::new(),
            abort_after: HashMap::new(),
            abandoned: None,
            results: HashMap::new(),
            client_log: Vec::new(),
            server_log: Vec::new(),
            steps: 0,
        };
        pair.drain();
        pair
    }

    fn now(&self) -> Instant {
        self.base + self.offset
    }

    // ----- the operations a test runs -----

    /// Submits `op` and runs until everything is idle; returns its result.
    pub(crate) fn run(&mut self, op: Operation) -> Result<Output, OpError> {
        let id = self.submit(op);
        self.run_until_idle();
        self.results
            .remove(&id)
            .unwrap_or_else(|| panic!("operation {id:?} never completed"))
    }

    fn submit(&mut self, op: Operation) -> OpId {
        let listing = matches!(op, Operation::List(_) | Operation::NameList(_));
        let now = self.now();
        let id = self.client.submit(now, op);
        if listing {
            self.listings.insert(id);
        }
        self.drain();
        id
    }

    pub(crate) fn login(&mut self) -> Result<Output, OpError> {
        self.run(Operation::Login(Credentials::new(USER, PASSWORD)))
    }

    /// An upload: `op` sends `data`.
    pub(crate) fn upload(&mut self, op: Operation, data: &[u8]) -> Result<Output, OpError> {
        assert!(op.is_upload());
        let now = self.now();
        let id = self.client.submit(now, op);
        self.uploads.insert(id, data.to_vec());
        self.drain();
        self.run_until_idle();
        self.results.remove(&id).expect("upload completed")
    }

    /// A download: the result and the bytes received.
    pub(crate) fn download(
        &mut self,
        path: &str,
        offset: Option<u64>,
    ) -> (Result<Output, OpError>, Vec<u8>) {
        let id = self.submit(Operation::Retrieve {
            path: path.to_owned(),
            offset,
        });
        self.run_until_idle();
        let result = self.results.remove(&id).expect("download completed");
        (result, self.downloads.remove(&id).unwrap_or_default())
    }

    /// A download the client aborts once `after` bytes arrived.
    pub(crate) fn download_aborted(&mut self, path: &str, after: u64) -> Result<Output, OpError> {
        let op = Operation::Retrieve {
            path: path.to_owned(),
            offset: None,
        };
        self.transfer_aborted(op, None, after)
    }

    /// A transfer the client aborts once `after` payload bytes moved on its data channel (`upload` is the
    /// payload of an upload).
    pub(crate) fn transfer_aborted(
        &mut self,
        op: Operation,
        upload: Option<&[u8]>,
        after: u64,
    ) -> Result<Output, OpError> {
        let now = self.now();
        let id = self.client.submit(now, op);
        if let Some(data) = upload {
            self.uploads.insert(id, data.to_vec());
        }
        self.abort_after.insert(id, after);
        self.drain();
        self.run_until_idle();
        self.results
            .remove(&id)
            .expect("aborted transfer completed")
    }

    /// Submits `op` and aborts it at once, before any reply arrived.
    pub(crate) fn submit_and_abort(&mut self, op: Operation) -> Result<Output, OpError> {
        let now = self.now();
        let id = self.client.submit(now, op);
        assert!(self.client.abort(now, id), "abort refused");
        self.drain();
        self.run_until_idle();
        self.results
            .remove(&id)
            .expect("aborted transfer completed")
    }

    /// Lets `duration` of virtual time pass, firing every timer on the way.
    pub(crate) fn wait(&mut self, duration: Duration) {
        let target = self.now() + duration;
        while let Some(deadline) = self.next_deadline().filter(|d| *d <= target) {
            self.advance_to(deadline);
            while self.step() {}
        }
        self.offset = target - self.base;
        while self.step() {}
    }

    // ----- the drive loop -----

    /// Moves bytes, answers requests and fires timers until the client has nothing running and nothing moves.
    pub(crate) fn run_until_idle(&mut self) {
        loop {
            if self.step() {
                continue;
            }
            if self.client.is_idle() || (self.client.is_closed() && self.server.is_closed()) {
                return;
            }
            let deadline = self.next_deadline().unwrap_or_else(|| {
                panic!(
                    "stalled with no deadline: client {:?}, server {:?}",
                    self.client, self.server
                )
            });
            self.advance_to(deadline);
        }
    }

    /// One round: a piece over every pipe, data channels pumped, FINs delivered. Whether anything moved.
    fn step(&mut self) -> bool {
        self.steps += 1;
        assert!(self.steps < MAX_STEPS, "livelock");
        let mut progressed = false;
        let now = self.now();

        // Control connection, client to server.
        let server = &mut self.server;
        if self.c2s.deliver(|b| server.handle_input(now, b)) {
            progressed = true;
            self.drain();
        }
        if self.c2s.eof_due() {
            self.server.handle_eof(now);
            progressed = true;
            self.drain();
        }
        // Server to client.
        let client = &mut self.client;
        if self.s2c.deliver(|b| client.handle_input(now, b)) {
            progressed = true;
            self.drain();
        }
        if self.s2c.eof_due() {
            self.client.handle_eof(now);
            progressed = true;
            self.drain();
        }
        progressed |= self.pump_data();
        progressed
    }

    /// Drains every output of both sessions until none has anything, acting on what comes out.
    fn drain(&mut self) {
        loop {
            let mut any = false;
            let mut out = Vec::new();
            if self.client.poll_transmit(&mut out) > 0 {
                self.c2s.push(&out);
                any = true;
            }
            while let Some(request) = self.client.poll_request() {
                any = true;
                self.on_client_request(request);
            }
            while let Some(event) = self.client.poll_event() {
                any = true;
                self.on_client_event(event);
            }
            out.clear();
            if self.server.poll_transmit(&mut out) > 0 {
                self.s2c.push(&out);
                any = true;
            }
            while let Some(work) = self.server.poll_work() {
                any = true;
                match work {
                    Work::Request(request) => self.on_request(request),
                    Work::Notice(notice) => self.on_notice(notice),
                }
            }
            while let Some(event) = self.server.poll_event() {
                any = true;
                if let ServerEvent::Reply(reply) = event {
                    self.server_log.push(reply);
                }
            }
            // A closed session with nothing more to send closes its socket.
            if self.client.is_closed() && !self.c2s.fin {
                self.c2s.fin = true;
                any = true;
            }
            if self.server.is_closed() && !self.s2c.fin {
                self.s2c.fin = true;
                any = true;
            }
            if !any {
                return;
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let link = self.link.as_ref();
        [
            self.client.poll_timeout(),
            self.server.poll_timeout(),
            link.and_then(|l| l.client.as_ref())
                .and_then(|c| c.channel.poll_timeout()),
            link.and_then(|l| l.server.as_ref())
                .and_then(|s| s.channel.poll_timeout()),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Jumps the clock to `deadline` and fires every timer due.
    fn advance_to(&mut self, deadline: Instant) {
        if deadline > self.now() {
            self.offset = deadline - self.base;
        }
        let now = self.now();
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        if let Some(link) = self.link.as_mut() {
            if let Some(c) = link.client.as_mut() {
                if c.channel.poll_timeout().is_some_and(|t| t <= now) {
                    c.channel.handle_timeout(now);
                }
            }
            if let Some(s) = link.server.as_mut() {
                if s.channel.poll_timeout().is_some_and(|t| t <= now) {
                    s.channel.handle_timeout(now);
                }
            }
        }
        self.drain();
        let _ = self.pump_data();
    }

    // ----- the client's frontend -----

    fn on_client_request(&mut self, request: client::Request) {
        let now = self.now();
        let client::Request { id, op, kind } = request;
        match kind {
            client::RequestKind::ConnectData { addr: target } => {
                self.client_log
                    .push(format!("ConnectData {{ op: {op:?}, addr: {target} }}"));
                assert_eq!(target, addr(SERVER_PASSIVE));
                self.new_link();
                self.client_data_ready = true;
                self.connect_data();
                self.client
                    .complete(now, id, client::Outcome::DataConnected);
            }
            client::RequestKind::Listen => {
                self.client_log.push(format!("Listen {{ op: {op:?} }}"));
                let listening = client::Outcome::Listening(addr(CLIENT_ACTIVE));
                self.client.complete(now, id, listening);
                self.client_data_ready = true;
                self.connect_data();
            }
            client::RequestKind::DriveData {
                channel, direction, ..
            } => {
                self.client_log.push(format!(
                    "DriveData {{ op: {op:?}, direction: {direction:?} }}"
                ));
                let payload = if let Some(data) = self.uploads.remove(&op) {
                    ClientPayload::Upload { data, sent: 0 }
                } else if self.listings.contains(&op) {
                    ClientPayload::Listing(Vec::new())
                } else {
                    ClientPayload::Download
                };
                let link = self
                    .link
                    .as_mut()
                    .expect("a data channel without a connection");
                assert!(
                    link.client.is_none(),
                    "second data channel on one connection"
                );
                link.client = Some(ClientTransfer {
                    op,
                    request: id,
                    channel,
                    payload,
                    finished: false,
                });
            }
        }
    }

    fn on_client_event(&mut self, event: client::Event) {
        match event {
            client::Event::Completed { op, result } => {
                self.client_log
                    .push(format!("Completed {{ op: {op:?}, result: {result:?} }}"));
                if self.abandoned == Some(op) {
                    // The aborted transfer settled: now its data socket closes.
                    self.abandoned = None;
                    if let Some(link) = self.link.as_mut() {
                        link.client_closed = true;
                        link.c2s.fin = true;
                    }
                }
                self.results.insert(op, result);
            }
            other => self.client_log.push(format!("{other:?}")),
        }
    }

    fn new_link(&mut self) {
        let (a, b) = (self.streams, self.streams + 1);
        self.streams += 2;
        self.link = Some(DataLink {
            c2s: Pipe::new(self.policy, a),
            s2c: Pipe::new(self.policy, b),
            client: None,
            server: None,
            client_closed: false,
            server_closed: false,
        });
    }

    /// Both ends want the data connection: it is established.
    fn connect_data(&mut self) {
        if !self.client_data_ready {
            return;
        }
        let Some((id, active)) = self.data_wanted.take() else {
            return;
        };
        if active {
            // Active mode: the server connects to the client's listener now.
            self.new_link();
        }
        self.client_data_ready = false;
        let now = self.now();
        self.server.complete(
            now,
            id,
            Outcome::DataConnected {
                peer: addr(CLIENT_ACTIVE),
            },
        );
    }

    // ----- the server's frontend: the in-memory store -----

    fn on_request(&mut self, request: Request) {
        let now = self.now();
        let id = request.id;
        let outcome = match request.kind {
            RequestKind::Authenticate { user, password, .. } => {
                if user == USER && password == PASSWORD {
                    Outcome::LoggedIn(LoginGrant::default())
                } else {
                    Outcome::Denied
                }
            }
            RequestKind::SelectHost { .. } => Outcome::Failed(Failure::Unsupported),
            RequestKind::OpenPassive { .. } => Outcome::PassiveListening(addr(SERVER_PASSIVE)),
            RequestKind::AcceptData => {
                self.data_wanted = Some((id, false));
                self.connect_data();
                return;
            }
            RequestKind::ConnectData { addr: target } => {
                assert_eq!(target, addr(CLIENT_ACTIVE));
                self.data_wanted = Some((id, true));
                self.connect_data();
                return;
            }
            RequestKind::Metadata { path } => match self.store.info(path.as_str()) {
                Some(info) => Outcome::Metadata(info),
                None => storage(StorageError::NotFound),
            },
            RequestKind::OpenRead { path, offset } => match self.store.files.get(path.as_str()) {
                Some(data) => {
                    let from = usize::try_from(offset)
                        .unwrap_or(usize::MAX)
                        .min(data.len());
                    let size = data.len() as u64;
                    self.open_files
                        .insert(id, OpenFile::Read(data[from..].to_vec()));
                    Outcome::Opened {
                        size: Some(size),
                        path,
                    }
                }
                None => storage(StorageError::NotFound),
            },
            RequestKind::OpenWrite { path, mode, offset } => {
                self.open_write(id, path, mode, offset)
            }
            RequestKind::List { path, .. } => {
                let p = path.as_str();
                if self.store.dirs.contains(p) {
                    Outcome::Listing(self.store.children(p))
                } else {
                    match self.store.info(p) {
                        Some(info) => Outcome::Listing(vec![info]),
                        None => storage(StorageError::NotFound),
                    }
                }
            }
            RequestKind::MakeDir { path } => {
                let p = path.as_str();
                if self.store.exists(p) {
                    storage(StorageError::Exists)
                } else if !self.store.dirs.contains(&parent_of(p)) {
                    storage(StorageError::NotFound)
                } else {
                    self.store.dirs.insert(p.to_owned());
                    Outcome::Done
                }
            }
            RequestKind::RemoveDir { path } => {
                let p = path.as_str();
                if !self.store.dirs.contains(p) || path.is_root() {
                    storage(StorageError::NotFound)
                } else if !self.store.children(p).is_empty() {
                    storage(StorageError::PermissionDenied)
                } else {
                    self.store.dirs.remove(p);
                    Outcome::Done
                }
            }
            RequestKind::Delete { path } => match self.store.files.remove(path.as_str()) {
                Some(_) => {
                    self.store.mtimes.remove(path.as_str());
                    Outcome::Done
                }
                None => storage(StorageError::NotFound),
            },
            RequestKind::Rename { from, to } => self.rename(from.as_str(), to.as_str()),
            RequestKind::SetModified { path, time } => {
                if self.store.files.contains_key(path.as_str()) {
                    self.store.mtimes.insert(path.as_str().to_owned(), time);
                    Outcome::Done
                } else {
                    storage(StorageError::NotFound)
                }
            }
            RequestKind::Chmod { .. } => Outcome::Done,
            RequestKind::SiteCustom { .. } => Outcome::Failed(Failure::Unsupported),
            RequestKind::DriveData { channel } => {
                let link = self
                    .link
                    .as_mut()
                    .expect("DriveData without a data connection");
                assert!(
                    link.server.is_none(),
                    "second channel on one data connection"
                );
                link.server = Some(ServerTransfer {
                    id,
                    channel,
                    started: false,
                    send: None,
                    upload: None,
                    finished: false,
                });
                return;
            }
        };
        self.server.complete(now, id, outcome);
    }

    /// Acts on a notice of the server; none is answered.
    fn on_notice(&mut self, notice: Notice) {
        let now = self.now();
        match notice {
            Notice::ReleaseData => {
                self.data_wanted = None;
                // A data connection without a transfer is closed.
                if let Some(link) = self.link.as_mut() {
                    if !link.server.as_ref().is_some_and(|s| s.started) && !link.server_closed {
                        link.server = None;
                        link.server_closed = true;
                        link.s2c.fin = true;
                    }
                }
            }
            Notice::ReleaseFile { file } => {
                self.open_files.remove(&file);
            }
            Notice::RunTransfer { data: id, plan } => {
                assert_eq!(
                    plan.data_type,
                    DataType::Binary,
                    "the client always uses TYPE I"
                );
                let (send, upload) = match plan.source.clone() {
                    Source::Bytes(bytes) => (Some((bytes, 0)), None),
                    Source::File(file) => match self.open_files.remove(&file) {
                        Some(OpenFile::Read(data)) => (Some((data, 0)), None),
                        other => panic!("RunTransfer names {file:?}: {other:?}"),
                    },
                    Source::Upload(file) => match self.open_files.remove(&file) {
                        Some(OpenFile::Write { path, data }) => (None, Some((path, data))),
                        other => panic!("RunTransfer names {file:?}: {other:?}"),
                    },
                };
                let s = self
                    .link
                    .as_mut()
                    .and_then(|link| link.server.as_mut())
                    .filter(|s| s.id == id && !s.started)
                    .expect("RunTransfer names the running DriveData");
                s.started = true;
                s.send = send;
                s.upload = upload;
                s.channel.start_transfer(now, plan.flow(), plan.data_type);
            }
            Notice::AbortTransfer { data: transfer } => {
                if let Some(link) = self.link.as_mut() {
                    if link.server.as_ref().is_some_and(|s| s.id == transfer) {
                        // Close the data connection at once; the upload (if any) is dropped. A notice: no answer.
                        link.server = None;
                        link.server_closed = true;
                        link.s2c.fin = true;
                    }
                }
            }
        }
    }

    fn open_write(
        &mut self,
        id: ReqId,
        path: VirtualPath,
        mode: WriteMode,
        offset: u64,
    ) -> Outcome {
        let path = path.as_str().to_owned();
        if mode == WriteMode::Unique && self.store.exists(&path) {
            return storage(StorageError::Exists);
        }
        if self.store.dirs.contains(&path) {
            return storage(StorageError::NotADirectory);
        }
        if !self.store.dirs.contains(&parent_of(&path)) {
            return storage(StorageError::NotFound);
        }
        let existing = self.store.files.get(&path).cloned().unwrap_or_default();
        let data = match mode {
            WriteMode::Create => {
                let keep = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(existing.len());
                existing[..keep].to_vec()
            }
            WriteMode::Append => existing,
            WriteMode::Unique => Vec::new(),
        };
        let opened = VirtualPath::new(&path).unwrap();
        self.open_files.insert(id, OpenFile::Write { path, data });
        Outcome::Opened {
            size: None,
            path: opened,
        }
    }

    fn rename(&mut self, from: &str, to: &str) -> Outcome {
        if self.store.exists(to) {
            return storage(StorageError::Exists);
        }
        if !self.store.dirs.contains(&parent_of(to)) {
            return storage(StorageError::NotFound);
        }
        if let Some(data) = self.store.files.remove(from) {
            self.store.files.insert(to.to_owned(), data);
            if let Some(t) = self.store.mtimes.remove(from) {
                self.store.mtimes.insert(to.to_owned(), t);
            }
            return Outcome::Done;
        }
        if self.store.dirs.contains(from) && from != "/" {
            let prefix = format!("{from}/");
            let moved = |p: &String| p == from || p.starts_with(&prefix);
            let dirs: Vec<String> = self
                .store
                .dirs
                .iter()
                .filter(|p| moved(p))
                .cloned()
                .collect();
            for d in dirs {
                self.store.dirs.remove(&d);
                self.store.dirs.insert(format!("{to}{}", &d[from.len()..]));
            }
            let files: Vec<String> = self
                .store
                .files
                .keys()
                .filter(|p| moved(p))
                .cloned()
                .collect();
            for f in files {
                let data = self.store.files.remove(&f).unwrap_or_default();
                self.store
                    .files
                    .insert(format!("{to}{}", &f[from.len()..]), data);
            }
            return Outcome::Done;
        }
        storage(StorageError::NotFound)
    }

    // ----- data connections -----

    /// Moves data-connection bytes one piece each way and runs both channels. Whether anything moved.
    fn pump_data(&mut self) -> bool {
        let now = self.now();
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let mut progressed = false;

        // Client to server.
        if let Some(s) = link.server.as_mut() {
            let channel = &mut s.channel;
            progressed |= link.c2s.deliver(|b| channel.handle_input(now, b));
            if link.c2s.eof_due() {
                s.channel.handle_eof(now);
                progressed = true;
            }
        } else if link.server_closed {
            // Nobody reads: bytes to a closed socket are lost.
            progressed |= link.c2s.deliver(|b| b.len());
            let _ = link.c2s.eof_due();
        }
        // Server to client.
        if let Some(c) = link.client.as_mut() {
            let channel = &mut c.channel;
            progressed |= link.s2c.deliver(|b| channel.handle_input(now, b));
            if link.s2c.eof_due() {
                c.channel.handle_eof(now);
                progressed = true;
            }
        } else if link.client_closed {
            progressed |= link.s2c.deliver(|b| b.len());
            let _ = link.s2c.eof_due();
        }

        progressed |= self.run_client_channel(now);
        progressed |= self.run_server_channel(now);
        self.drain();

        if let Some(link) = self.link.as_ref() {
            if link.client_closed && link.server_closed {
                self.link = None;
                progressed = true;
            }
        }
        progressed
    }

    /// The client's side of the data connection, as the blocking client drives it.
    fn run_client_channel(&mut self, now: Instant) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let Some(c) = link.client.as_mut() else {
            return false;
        };
        let mut progressed = false;
        if let ClientPayload::Upload { data, sent } = &mut c.payload {
            if c.channel.can_write() {
                while *sent < data.len() {
                    let n = c.channel.write(&data[*sent..]);
                    if n == 0 {
                        break;
                    }
                    *sent += n;
                    progressed = true;
                }
                if *sent == data.len() {
                    c.channel.finish(now);
                    progressed = true;
                }
            }
        }
        loop {
            let chunk = c.channel.read_chunk();
            if chunk.is_empty() {
                break;
            }
            let chunk = chunk.to_vec();
            c.channel.consume(chunk.len());
            progressed = true;
            match &mut c.payload {
                ClientPayload::Listing(bytes) => bytes.extend_from_slice(&chunk),
                ClientPayload::Download => self
                    .downloads
                    .entry(c.op)
                    .or_default()
                    .extend_from_slice(&chunk),
                ClientPayload::Upload { .. } => {}
            }
        }
        let op = c.op;
        let moved = c.channel.bytes_received().max(c.channel.bytes_sent());
        if self
            .abort_after
            .get(&op)
            .is_some_and(|after| moved >= *after)
        {
            // The user gives up: the channel is dropped, its socket stays open until ABOR settled (so the
            // server sees ABOR, not a truncation, whatever the chunking).
            self.abort_after.remove(&op);
            link.client = None;
            self.abandoned = Some(op);
            assert!(self.client.abort(now, op), "abort refused");
            return true;
        }
        let mut out = Vec::new();
        loop {
            out.clear();
            let event = match c.channel.poll_output(&mut out) {
                DataOutput::Wait(_) => break,
                DataOutput::Transmit(_) => {
                    link.c2s.push(&out);
                    progressed = true;
                    continue;
                }
                // In the clear the FIN is the end of the file.
                DataOutput::ShutdownWrite => {
                    link.c2s.fin = true;
                    progressed = true;
                    continue;
                }
                DataOutput::TransferReady(_) => {
                    unreachable!("a client channel is never a DriveData")
                }
                DataOutput::Event(event) => event,
            };
            progressed = true;
            let data = match event {
                DataEvent::Finished(report) => Ok(report),
                DataEvent::Failed(e) => Err(e),
                _ => continue,
            };
            c.finished = true;
            let outcome = match &mut c.payload {
                ClientPayload::Listing(bytes) => client::Outcome::ListingReceived {
                    data,
                    bytes: std::mem::take(bytes),
                },
                _ => client::Outcome::DataFinished(data),
            };
            self.client.complete(now, c.request, outcome);
        }
        if c.finished && c.channel.is_closed() {
            link.client = None;
            link.client_closed = true;
            link.c2s.fin = true;
            progressed = true;
        }
        progressed
    }

    /// The server's side of a data connection, as the smol frontend drives it: the handshake from the start,
    /// the payload once `RunTransfer` named it.
    fn run_server_channel(&mut self, now: Instant) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let Some(s) = link.server.as_mut() else {
            return false;
        };
        let mut progressed = false;
        if let Some((data, sent)) = &mut s.send {
            if s.channel.can_write() {
                while *sent < data.len() {
                    let n = s.channel.write(&data[*sent..]);
                    if n == 0 {
                        break;
                    }
                    *sent += n;
                    progressed = true;
                }
                if *sent == data.len() {
                    s.channel.finish(now);
                    progressed = true;
                }
            }
        }
        loop {
            let chunk = s.channel.read_chunk();
            if chunk.is_empty() {
                break;
            }
            let n = chunk.len();
            if let Some((_, data)) = s.upload.as_mut() {
                data.extend_from_slice(chunk);
            }
            s.channel.consume(n);
            progressed = true;
        }
        let mut out = Vec::new();
        let mut outcome = None;
        loop {
            out.clear();
            match s.channel.poll_output(&mut out) {
                DataOutput::Wait(_) => break,
                DataOutput::Transmit(_) => link.s2c.push(&out),
                DataOutput::ShutdownWrite => link.s2c.fin = true,
                DataOutput::TransferReady(ready) => self.server.data_ready(now, ready),
                DataOutput::Event(DataEvent::Finished(report)) => outcome = Some(Ok(report)),
                DataOutput::Event(DataEvent::Failed(e)) => outcome = Some(Err(Failure::from(&e))),
                DataOutput::Event(_) => {}
            }
            progressed = true;
        }
        let id = s.id;
        if let Some(outcome) = outcome {
            s.finished = true;
            let outcome = match outcome {
                Ok(report) => {
                    // Only a clean close commits an upload (DESIGN.md "close_notify").
                    if let (Some((path, data)), true) = (s.upload.take(), report.clean_close) {
                        self.store.files.insert(path, data);
                    }
                    Outcome::TransferFinished(report)
                }
                Err(failure) => Outcome::Failed(failure),
            };
            self.server.complete(now, id, outcome);
        }
        if s.finished && s.channel.is_closed() {
            link.server = None;
            link.server_closed = true;
            link.s2c.fin = true;
            progressed = true;
        }
        progressed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use proptest::prelude::*;

    use super::*;
    use crate::codec::{EntryKind, ReplyCode};

    type Versions = &'static [&'static rustls::SupportedProtocolVersion];
    type Scenario = fn(&mut Pair);

    fn pki() -> &'static TestPki {
        static PKI: OnceLock<TestPki> = OnceLock::new();
        PKI.get_or_init(TestPki::new)
    }

    /// Bytes that are not all alike, so an offset error shows.
    fn pattern(len: usize, salt: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
            .collect()
    }

    fn code(result: &Result<Output, OpError>) -> u16 {
        match result {
            Ok(Output::Done(reply)) => reply.code.get(),
            Err(OpError::Refused(reply)) => reply.code.get(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn transfer(result: Result<Output, OpError>) -> client::TransferReport {
        match result {
            Ok(Output::Transfer(report)) => report,
            other => panic!("expected a transfer, got {other:?}"),
        }
    }

    /// A finished transfer of `bytes`, protected, resumed, closed cleanly, answered 226.
    fn assert_transfer(result: Result<Output, OpError>, bytes: u64) {
        let report = transfer(result);
        assert_eq!(report.bytes, bytes);
        assert!(report.resumed, "data connection did not resume: {report:?}");
        assert!(report.clean_close);
        assert_eq!(report.reply.code, ReplyCode::CLOSING_DATA_CONNECTION);
        assert!(report.tls.is_some_and(|t| t.resumed));
    }

    fn login(pair: &mut Pair) {
        match pair.login() {
            Ok(Output::LoggedIn(f)) => assert!(f.mlsd && f.size && f.mdtm && f.mfmt && f.epsv),
            other => panic!("login failed: {other:?}"),
        }
    }

    fn quit(pair: &mut Pair) {
        assert_eq!(code(&pair.run(Operation::Quit)), 221);
        assert!(pair.client.is_closed());
        assert!(pair.server.is_closed());
        assert!(pair.client.error().is_none());
        assert!(pair.server.error().is_none());
    }

    fn directories(pair: &mut Pair) {
        login(pair);
        assert_eq!(pair.run(Operation::Pwd), Ok(Output::Directory("/".into())));
        assert_eq!(
            pair.run(Operation::Mkdir("docs".into())),
            Ok(Output::Directory("/docs".into()))
        );
        assert_eq!(code(&pair.run(Operation::Mkdir("docs".into()))), 550);
        assert_eq!(code(&pair.run(Operation::Cwd("docs".into()))), 250);
        assert_eq!(
            pair.run(Operation::Pwd),
            Ok(Output::Directory("/docs".into()))
        );
        assert_eq!(code(&pair.run(Operation::Cwd("/nope".into()))), 550);
        assert_eq!(code(&pair.run(Operation::Cdup)), 250);
        assert_eq!(pair.run(Operation::Pwd), Ok(Output::Directory("/".into())));
        assert_eq!(code(&pair.run(Operation::Rmdir("docs".into()))), 250);
        assert_eq!(code(&pair.run(Operation::Rmdir("docs".into()))), 550);
        assert!(!pair.store.dirs.contains("/docs"));
        quit(pair);
    }

    fn files(pair: &mut Pair) {
        login(pair);
        let data = pattern(40_000, 7);
        assert_transfer(pair.upload(Operation::Store("a.bin".into()), &data), 40_000);
        assert_eq!(pair.store.files["/a.bin"], data);

        let (result, got) = pair.download("a.bin", None);
        assert_transfer(result, 40_000);
        assert!(got == data, "retrieved bytes differ");

        assert_transfer(pair.upload(Operation::Append("a.bin".into()), b"tail"), 4);
        let mut expected = data.clone();
        expected.extend_from_slice(b"tail");
        assert_eq!(pair.store.files["/a.bin"], expected);

        let (result, got) = pair.download("a.bin", Some(39_990));
        assert_transfer(result, 14);
        assert_eq!(got, expected[39_990..]);

        let op = Operation::StoreAt {
            path: "a.bin".into(),
            offset: 10,
        };
        assert_transfer(pair.upload(op, b"XY"), 2);
        let mut expected = data[..10].to_vec();
        expected.extend_from_slice(b"XY");
        assert_eq!(pair.store.files["/a.bin"], expected);

        assert_eq!(
            pair.run(Operation::Size("a.bin".into())),
            Ok(Output::Size(12))
        );
        assert_eq!(
            pair.run(Operation::Mdtm("a.bin".into())),
            Ok(Output::Modified(EPOCH))
        );
        let later = Timeval {
            year: 2025,
            month: 6,
            day: 7,
            hour: 8,
            minute: 9,
            second: 10,
            millisecond: None,
        };
        let op = Operation::SetModified {
            path: "a.bin".into(),
            time: later,
        };
        assert_eq!(code(&pair.run(op)), 213);
        assert_eq!(
            pair.run(Operation::Mdtm("a.bin".into())),
            Ok(Output::Modified(later))
        );

        // A 0-byte upload into a subdirectory.
        assert_eq!(
            pair.run(Operation::Mkdir("sub".into())),
            Ok(Output::Directory("/sub".into()))
        );
        assert_transfer(pair.upload(Operation::Store("sub/empty".into()), b""), 0);
        assert_eq!(pair.store.files["/sub/empty"], b"");

        match pair.run(Operation::List(None)) {
            Ok(Output::Listing(entries)) => {
                let got: Vec<_> = entries
                    .iter()
                    .map(|e| (e.name.as_str(), e.kind.clone(), e.size, e.modified))
                    .collect();
                assert_eq!(
                    got,
                    vec![
                        ("a.bin", EntryKind::File, Some(12), Some(later)),
                        ("sub", EntryKind::Dir, Some(0), Some(EPOCH)),
                    ]
                );
            }
            other => panic!("list failed: {other:?}"),
        }
        match pair.run(Operation::List(Some("sub".into()))) {
            Ok(Output::Listing(entries)) => {
                assert_eq!(entries.len(), 1);
                assert_eq!(entries[0].name, "empty");
                assert_eq!(entries[0].size, Some(0));
            }
            other => panic!("list failed: {other:?}"),
        }
        assert_eq!(
            pair.run(Operation::NameList(None)),
            Ok(Output::Names(vec!["a.bin".into(), "sub".into()]))
        );

        let op = Operation::Rename {
            from: "a.bin".into(),
            to: "sub/c.bin".into(),
        };
        assert_eq!(code(&pair.run(op)), 250);
        assert_eq!(
            pair.run(Operation::Size("sub/c.bin".into())),
            Ok(Output::Size(12))
        );
        assert_eq!(code(&pair.run(Operation::Size("a.bin".into()))), 550);
        assert_eq!(code(&pair.run(Operation::Delete("sub/c.bin".into()))), 250);
        assert_eq!(code(&pair.run(Operation::Delete("sub/c.bin".into()))), 550);
        let (result, got) = pair.download("missing", None);
        assert_eq!(code(&result), 550);
        assert!(got.is_empty());
        quit(pair);
    }

    fn many_uploads(pair: &mut Pair) {
        login(pair);
        for i in 0..50u8 {
            let data = pattern(usize::from(i) * 3, i);
            let op = Operation::Store(format!("f{i:02}"));
            assert_transfer(pair.upload(op, &data), u64::from(i) * 3);
            assert_eq!(pair.store.files[&format!("/f{i:02}")], data);
        }
        assert_eq!(pair.store.files.len(), 50);
        quit(pair);
    }

    fn abort_retrieve(pair: &mut Pair) {
        login(pair);
        let data = pattern(100_000, 3);
        assert_transfer(pair.upload(Operation::Store("big".into()), &data), 100_000);
        assert_eq!(pair.download_aborted("big", 1), Err(OpError::Aborted));
        assert_eq!(code(&pair.run(Operation::Noop)), 200);
        // The session is fully usable: the file comes through whole afterwards.
        let (result, got) = pair.download("big", None);
        assert_transfer(result, 100_000);
        assert!(got == data);
        quit(pair);
    }

    fn failed_login(pair: &mut Pair) {
        let wrong = Operation::Login(Credentials::new(USER, "wrong"));
        assert_eq!(code(&pair.run(wrong)), 530);
        // The 530 waited out the failed-login delay, in virtual time.
        assert!(pair.offset >= Duration::from_secs(1));
        login(pair);
        assert_eq!(pair.run(Operation::Pwd), Ok(Output::Directory("/".into())));
        quit(pair);
    }

    /// Plain FTP: clear data connections end with a TCP FIN, not close_notify.
    fn plain(pair: &mut Pair) {
        login(pair);
        let data = pattern(30_000, 5);
        let report = transfer(pair.upload(Operation::Store("p".into()), &data));
        assert_eq!(
            (report.bytes, report.resumed, report.tls),
            (30_000, false, None)
        );
        assert!(report.clean_close);
        assert_eq!(pair.store.files["/p"], data);
        let (result, got) = pair.download("p", Some(1));
        assert_eq!(transfer(result).bytes, 29_999);
        assert!(got == data[1..]);
        assert_transfer_plain(pair.upload(Operation::Store("e".into()), b""));
        assert_eq!(pair.store.files["/e"], b"");
        assert_eq!(
            pair.run(Operation::NameList(None)),
            Ok(Output::Names(vec!["e".into(), "p".into()]))
        );
        assert_eq!(pair.download_aborted("p", 1), Err(OpError::Aborted));
        assert_eq!(code(&pair.run(Operation::Noop)), 200);
        quit(pair);
    }

    fn assert_transfer_plain(result: Result<Output, OpError>) {
        let report = transfer(result);
        assert!(report.clean_close && !report.resumed && report.tls.is_none());
    }

    /// Odd names, unique names, big and empty listings, aborts at every stage.
    fn edges(pair: &mut Pair) {
        login(pair);
        let dir = "dir with space";
        assert_eq!(
            pair.run(Operation::Mkdir(dir.into())),
            Ok(Output::Directory(format!("/{dir}")))
        );
        let name = format!("{dir}/ünïcödé ñame.txt");
        assert_transfer(pair.upload(Operation::Store(name.clone()), b"hello"), 5);
        assert_eq!(pair.store.files[&format!("/{name}")], b"hello");
        assert_eq!(pair.run(Operation::Size(name.clone())), Ok(Output::Size(5)));
        assert_eq!(
            pair.run(Operation::NameList(Some(dir.into()))),
            Ok(Output::Names(vec!["ünïcödé ñame.txt".into()]))
        );

        // STOU twice with the same hint: two files.
        for _ in 0..2 {
            let report = transfer(pair.upload(Operation::StoreUnique(Some("u".into())), b"uu"));
            assert_eq!(report.bytes, 2);
        }
        assert_eq!(pair.store.files["/u"], b"uu");
        let second: Vec<_> = pair
            .store
            .files
            .keys()
            .filter(|k| k.starts_with("/u."))
            .collect();
        assert_eq!(second.len(), 1, "{second:?}");

        // An empty directory lists nothing; a big one spans many TLS records.
        assert_eq!(
            pair.run(Operation::Mkdir("empty".into())),
            Ok(Output::Directory("/empty".into()))
        );
        assert_eq!(
            pair.run(Operation::List(Some("empty".into()))),
            Ok(Output::Listing(Vec::new()))
        );
        assert_eq!(
            pair.run(Operation::NameList(Some("empty".into()))),
            Ok(Output::Names(Vec::new()))
        );
        assert_eq!(
            pair.run(Operation::Mkdir("big".into())),
            Ok(Output::Directory("/big".into()))
        );
        for i in 0..400 {
            pair.store
                .files
                .insert(format!("/big/file-number-{i:04}.dat"), vec![0; i]);
        }
        match pair.run(Operation::List(Some("big".into()))) {
            Ok(Output::Listing(entries)) => {
                assert_eq!(entries.len(), 400);
                assert_eq!(entries[399].name, "file-number-0399.dat");
                assert_eq!(entries[399].size, Some(399));
            }
            other => panic!("big listing failed: {other:?}"),
        }

        // Abort before any reply, then during an upload; the session goes on each time.
        let op = Operation::Retrieve {
            path: "u".into(),
            offset: None,
        };
        assert_eq!(pair.submit_and_abort(op), Err(OpError::Aborted));
        assert_eq!(code(&pair.run(Operation::Noop)), 200);
        let data = pattern(200_000, 1);
        let op = Operation::Store("partial".into());
        assert_eq!(
            pair.transfer_aborted(op, Some(&data), 1),
            Err(OpError::Aborted)
        );
        assert!(
            !pair.store.files.contains_key("/partial"),
            "an aborted upload was committed"
        );
        assert_eq!(code(&pair.run(Operation::Noop)), 200);
        let (result, got) = pair.download("u", None);
        assert_transfer(result, 2);
        assert_eq!(got, b"uu");
        quit(pair);
    }

    /// Three failed logins close the session (421); so does the idle timeout.
    fn closing(pair: &mut Pair) {
        for _ in 0..2 {
            let wrong = Operation::Login(Credentials::new(USER, "wrong"));
            assert_eq!(code(&pair.run(wrong)), 530);
        }
        let wrong = Operation::Login(Credentials::new(USER, "wrong"));
        match pair.run(wrong) {
            Err(OpError::Session(client::SessionError::ServiceClosing(reply))) => {
                assert_eq!(reply.code.get(), 421)
            }
            other => panic!("expected 421, got {other:?}"),
        }
        assert!(pair.client.is_closed() && pair.server.is_closed());
    }

    fn idle_timeout(pair: &mut Pair) {
        login(pair);
        pair.wait(Duration::from_secs(299));
        assert!(!pair.server.is_closed());
        pair.wait(Duration::from_secs(2));
        assert!(pair.server.is_closed());
        assert!(matches!(
            pair.client.error(),
            Some(client::SessionError::ServiceClosing(_))
        ));
    }

    /// A bit of everything, for the proptest.
    fn mixed(pair: &mut Pair) {
        let wrong = Operation::Login(Credentials::new("bob", PASSWORD));
        assert_eq!(code(&pair.run(wrong)), 530);
        login(pair);
        let data = pattern(20_000, 9);
        assert_transfer(pair.upload(Operation::Store("m".into()), &data), 20_000);
        let (result, got) = pair.download("m", Some(5));
        assert_transfer(result, 19_995);
        assert!(got == data[5..]);
        assert_eq!(pair.download_aborted("m", 1), Err(OpError::Aborted));
        assert_eq!(code(&pair.run(Operation::Noop)), 200);
        assert_eq!(
            pair.run(Operation::NameList(None)),
            Ok(Output::Names(vec!["m".into()]))
        );
        assert_transfer(pair.upload(Operation::Store("z".into()), b""), 0);
        let op = Operation::Rename {
            from: "m".into(),
            to: "n".into(),
        };
        assert_eq!(code(&pair.run(op)), 250);
        assert_eq!(
            pair.run(Operation::Size("n".into())),
            Ok(Output::Size(20_000))
        );
        quit(pair);
    }

    type Log = (Vec<String>, Vec<Reply>);

    fn run(versions: Versions, policy: ChunkPolicy, mode: Setup, scenario: Scenario) -> Log {
        let mut pair = Pair::new(pki(), versions, policy, mode);
        scenario(&mut pair);
        (pair.client_log, pair.server_log)
    }

    const POLICIES: [ChunkPolicy; 4] = [
        ChunkPolicy::ByteByByte,
        ChunkPolicy::Random(1),
        ChunkPolicy::Random(2),
        ChunkPolicy::Random(3),
    ];

    /// The scenario's client events and server replies are the same under every chunk policy.
    fn check_invariance(versions: Versions, mode: Setup, scenario: Scenario) {
        let reference = run(versions, ChunkPolicy::Whole, mode, scenario);
        for policy in POLICIES {
            let got = run(versions, policy, mode, scenario);
            assert_eq!(got.0, reference.0, "client events differ under {policy:?}");
            assert_eq!(got.1, reference.1, "server replies differ under {policy:?}");
        }
    }

    #[test]
    fn directories_tls12() {
        check_invariance(TLS12, Setup::Passive, directories);
    }

    #[test]
    fn directories_tls13() {
        check_invariance(TLS13, Setup::Passive, directories);
    }

    #[test]
    fn files_tls12() {
        check_invariance(TLS12, Setup::Passive, files);
    }

    #[test]
    fn files_tls13() {
        check_invariance(TLS13, Setup::Passive, files);
    }

    #[test]
    fn files_active_mode() {
        check_invariance(TLS13, Setup::Active, files);
    }

    #[test]
    fn fifty_uploads_resume_tls12() {
        check_invariance(TLS12, Setup::Passive, many_uploads);
    }

    #[test]
    fn fifty_uploads_resume_tls13() {
        check_invariance(TLS13, Setup::Passive, many_uploads);
    }

    #[test]
    fn abort_retrieve_tls12() {
        check_invariance(TLS12, Setup::Passive, abort_retrieve);
    }

    #[test]
    fn abort_retrieve_tls13() {
        check_invariance(TLS13, Setup::Passive, abort_retrieve);
    }

    #[test]
    fn failed_login_tls12() {
        check_invariance(TLS12, Setup::Passive, failed_login);
    }

    #[test]
    fn failed_login_tls13() {
        check_invariance(TLS13, Setup::Passive, failed_login);
    }

    #[test]
    fn implicit_tls12() {
        check_invariance(TLS12, Setup::Implicit, files);
    }

    #[test]
    fn implicit_tls13() {
        check_invariance(TLS13, Setup::Implicit, files);
    }

    #[test]
    fn ccc_tls12() {
        check_invariance(TLS12, Setup::Ccc, files);
    }

    #[test]
    fn ccc_tls13() {
        check_invariance(TLS13, Setup::Ccc, files);
    }

    #[test]
    fn held_preliminary_reply() {
        check_invariance(TLS13, Setup::HeldPreliminary, files);
        check_invariance(TLS12, Setup::HeldPreliminary, abort_retrieve);
    }

    #[test]
    fn plain_ftp() {
        check_invariance(TLS13, Setup::Plain, plain);
    }

    #[test]
    fn edges_tls12() {
        check_invariance(TLS12, Setup::Passive, edges);
    }

    #[test]
    fn edges_tls13() {
        check_invariance(TLS13, Setup::Passive, edges);
    }

    #[test]
    fn edges_active() {
        check_invariance(TLS13, Setup::Active, edges);
    }

    #[test]
    fn three_failed_logins_close() {
        check_invariance(TLS13, Setup::Passive, closing);
    }

    #[test]
    fn idle_timeout_closes() {
        check_invariance(TLS12, Setup::Passive, idle_timeout);
    }

    /// The replies of the abort scenario, exactly: RFC 959 section 4.1.3's 426 then 226, then NOOP's 200.
    #[test]
    fn abort_replies_are_426_then_226() {
        let (_, replies) = run(TLS13, ChunkPolicy::Whole, Setup::Passive, abort_retrieve);
        let codes: Vec<u16> = replies.iter().map(|r| r.code.get()).collect();
        let at = codes
            .windows(3)
            .position(|w| w == [426, 226, 200])
            .expect("426, 226, 200 in order");
        // The passive connection was there before RETR: 125, "already open" (RFC 959 section 4.2).
        assert_eq!(codes[at - 2..at], [229, 125]);
    }

    fn mixed_reference(versions: Versions) -> &'static Log {
        static REF12: OnceLock<Log> = OnceLock::new();
        static REF13: OnceLock<Log> = OnceLock::new();
        let cell = if versions == TLS12 { &REF12 } else { &REF13 };
        cell.get_or_init(|| run(versions, ChunkPolicy::Whole, Setup::Passive, mixed))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn random_splits_do_not_change_events(seed in any::<u64>(), tls13 in any::<bool>()) {
            let versions = if tls13 { TLS13 } else { TLS12 };
            let reference = mixed_reference(versions);
            let got = run(versions, ChunkPolicy::Random(seed), Setup::Passive, mixed);
            prop_assert_eq!(&got.0, &reference.0);
            prop_assert_eq!(&got.1, &reference.1);
        }
    }
}
