//! Handshakes per second, in memory (real rustls, no sockets): a `ClientSession` against a `ServerSession`.
//!
//! - `control_auth_tls_login`: greeting, `AUTH TLS`, the control TLS handshake (full, no resumption), then the
//!   client's whole login operation (`USER`/`PASS`, `PBSZ 0`/`PROT P`, `FEAT`, `TYPE I`), sessions created and
//!   dropped inside the timed routine. The ceiling next to it: a raw rustls full handshake (with the TLS 1.3
//!   tickets delivered, as the control connection does), same suite and certificate.
//! - `data_resumed_handshake`: on one logged-in session (set up outside the timed routine), one 0-byte `RETR`
//!   round trip: `EPSV`, `RETR`, the server's `DriveData` channel against the client's `DataChannel` event,
//!   a resumed data handshake (the default policy requires it, so a full one would fail the transfer),
//!   close_notify both ways, 226. The ceiling next to it: a raw rustls resumed handshake with a shared session
//!   cache, tickets delivered and close_notify both ways.
//!
//! The server answers its requests at once, from nothing: every login is granted, every file is empty.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ftps_benches::{localhost, Pki};
use ftps_proto::client::{
    ClientSession, ClientSessionConfig, Credentials, Event as ClientEvent, OpId, Operation,
    Outcome as ClientOutcome, Output, ReqId as ClientReqId, RequestKind as ClientRequestKind,
};
use ftps_proto::data::{DataChannel, DataEvent, DataReport};
use ftps_proto::server::{
    Failure, LoginGrant, Notice, Outcome, ReqId, RequestKind, ServerSession, SessionConfig, Work,
};
use rustls::crypto::ring::cipher_suite as cs;
use rustls::{HandshakeKind, SupportedCipherSuite};

/// The client's end of the control connection, as the server sees it.
const CLIENT_ADDR: &str = "192.0.2.7:50000";
/// The server's end of the control connection, as the client sees it.
const SERVER_ADDR: &str = "192.0.2.1:21";
/// Where the server's passive "listener" is.
const PASSIVE_ADDR: &str = "192.0.2.1:40000";
/// The client's end of a data connection.
const DATA_PEER: &str = "192.0.2.7:50001";
/// Rounds of byte exchange after which a conversation that still moves is a bug in this bench.
const MAX_ROUNDS: usize = 1000;

/// The suites measured: both on the same ECDSA P-256 certificate, so only the protocol version differs.
fn suites() -> [(&'static str, SupportedCipherSuite); 2] {
    [
        ("tls13_aes128gcm", cs::TLS13_AES_128_GCM_SHA256),
        (
            "tls12_ecdhe_ecdsa_aes128gcm",
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
    ]
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("address")
}

/// A client session wired to a server session in memory, with a frontend that answers every request at once.
struct Pair {
    now: Instant,
    client: ClientSession,
    server: ServerSession,
    /// Client bytes the server has not taken yet (it takes less only while its command queue is full).
    to_server: Vec<u8>,
    /// Server bytes the client has not taken yet (TLS backpressure).
    to_client: Vec<u8>,
    client_events: Vec<ClientEvent>,
    /// The client's channel from its last `DriveData`, with that request's id and operation.
    client_channel: Option<(ClientReqId, OpId, Box<DataChannel>)>,
    /// The server's channel from the last `DriveData`, with that request's id.
    server_channel: Option<(ReqId, Box<DataChannel>)>,
}

impl Pair {
    fn new(
        now: Instant,
        server_config: &SessionConfig,
        client_tls: &Arc<rustls::ClientConfig>,
    ) -> Self {
        let client = ClientSession::new(
            ClientSessionConfig::new(client_tls.clone()),
            localhost(),
            addr(SERVER_ADDR),
            now,
        )
        .expect("client session");
        let server = ServerSession::new(
            server_config.clone(),
            addr(CLIENT_ADDR),
            addr(SERVER_ADDR),
            now,
        );
        Self {
            now,
            client,
            server,
            to_server: Vec::new(),
            to_client: Vec::new(),
            client_events: Vec::new(),
            client_channel: None,
            server_channel: None,
        }
    }

    /// Moves control bytes both ways and answers requests until nothing moves (the drive-loop contract: every
    /// `poll_*` drained after every input or mutation).
    fn drive(&mut self) {
        for _ in 0..MAX_ROUNDS {
            let mut moved = false;
            while self.client.poll_transmit(&mut self.to_server) > 0 {}
            if !self.to_server.is_empty() {
                let taken = self.server.handle_input(self.now, &self.to_server);
                moved |= taken > 0;
                self.to_server.drain(..taken);
            }
            loop {
                let mut progressed = self.server.poll_transmit(&mut self.to_client) > 0;
                while self.server.poll_event().is_some() {
                    progressed = true;
                }
                match self.server.poll_work() {
                    Some(Work::Request(request)) => {
                        progressed = true;
                        if let Some(outcome) = self.answer(request.id, request.kind) {
                            self.server.complete(self.now, request.id, outcome);
                        }
                    }
                    Some(Work::Notice(Notice::RunTransfer { data, plan })) => {
                        progressed = true;
                        let channel = self.server_channel.as_mut().filter(|(i, _)| *i == data);
                        if let Some((_, channel)) = channel {
                            channel.start_transfer(self.now, plan.flow(), plan.data_type);
                        }
                    }
                    Some(_) => progressed = true,
                    None => {}
                }
                if !progressed {
                    break;
                }
                moved = true;
            }
            if !self.to_client.is_empty() {
                let taken = self.client.handle_input(self.now, &self.to_client);
                moved |= taken > 0;
                self.to_client.drain(..taken);
            }
            while let Some(request) = self.client.poll_request() {
                moved = true;
                match request.kind {
                    // In memory: "connected" at once.
                    ClientRequestKind::ConnectData { .. } => {
                        self.client
                            .complete(self.now, request.id, ClientOutcome::DataConnected);
                    }
                    ClientRequestKind::DriveData { channel, .. } => {
                        self.client_channel = Some((request.id, request.op, channel));
                    }
                    other => panic!("unexpected client request {other:?}"),
                }
            }
            while let Some(event) = self.client.poll_event() {
                moved = true;
                self.client_events.push(event);
            }
            if !moved {
                return;
            }
        }
        panic!("the control conversation does not settle");
    }

    /// The frontend's answer to one request; `None` for the transfer, answered later.
    fn answer(&mut self, id: ReqId, kind: RequestKind) -> Option<Outcome> {
        let outcome = match kind {
            RequestKind::Authenticate { .. } => Outcome::LoggedIn(LoginGrant::default()),
            RequestKind::OpenPassive { .. } => Outcome::PassiveListening(addr(PASSIVE_ADDR)),
            RequestKind::AcceptData | RequestKind::ConnectData { .. } => Outcome::DataConnected {
                peer: addr(DATA_PEER),
            },
            RequestKind::OpenRead { path, .. } => Outcome::Opened {
                size: Some(0),
                path,
            },
            RequestKind::List { .. } => Outcome::Listing(Vec::new()),
            RequestKind::DriveData { channel } => {
                self.server_channel = Some((id, channel));
                return None;
            }
            _ => Outcome::Failed(Failure::Unsupported),
        };
        Some(outcome)
    }

    /// Removes and returns the `Completed` event of `op`, if it arrived.
    fn take_completed(&mut self, op: OpId) -> Option<Result<Output, ftps_proto::client::OpError>> {
        let at = self
            .client_events
            .iter()
            .position(|e| matches!(e, ClientEvent::Completed { op: o, .. } if *o == op))?;
        match self.client_events.remove(at) {
            ClientEvent::Completed { result, .. } => Some(result),
            _ => None,
        }
    }

    /// Removes and returns the client's data channel of `op` and its request id, if it was handed out.
    fn take_client_channel(&mut self, op: OpId) -> Option<(ClientReqId, Box<DataChannel>)> {
        let (id, _, channel) = self.client_channel.take_if(|(_, o, _)| *o == op)?;
        Some((id, channel))
    }
}

/// Greeting, `AUTH TLS`, control handshake and login; returns the logged-in pair.
fn connect_and_login(
    server_config: &SessionConfig,
    client_tls: &Arc<rustls::ClientConfig>,
) -> Pair {
    let now = Instant::now();
    let mut pair = Pair::new(now, server_config, client_tls);
    let op = pair
        .client
        .submit(now, Operation::Login(Credentials::new("bench", "bench")));
    pair.drive();
    match pair.take_completed(op) {
        Some(Ok(Output::LoggedIn(_))) => {}
        other => panic!("login: {other:?}, client events {:?}", pair.client_events),
    }
    assert!(pair.client.data_protected(), "PROT P not in force");
    assert_eq!(pair.server.user(), Some("bench"));
    pair.client_events.clear();
    pair
}

/// Pumps the two ends of one data connection until both finished: the server sends nothing and finishes, the
/// client (download) answers the server's close_notify with its own. A side whose write half is done and sent
/// gives the other side EOF, as a TCP half-close would.
fn pump_data(
    now: Instant,
    server: &mut DataChannel,
    client: &mut DataChannel,
) -> (DataReport, DataReport) {
    server.finish(now);
    let (mut server_done, mut client_done) = (None, None);
    let (mut server_eof, mut client_eof) = (false, false);
    let mut wire = Vec::new();
    for _ in 0..MAX_ROUNDS {
        wire.clear();
        let _ = client.poll_transmit(&mut wire);
        let mut at = 0;
        while at < wire.len() {
            at += server.handle_input(now, &wire[at..]);
            let unread = server.read_chunk().len();
            server.consume(unread);
        }
        wire.clear();
        let _ = server.poll_transmit(&mut wire);
        let mut at = 0;
        while at < wire.len() {
            at += client.handle_input(now, &wire[at..]);
            let unread = client.read_chunk().len();
            client.consume(unread);
        }
        if server.is_write_closed() && !server.wants_transmit() && !client_eof {
            client_eof = true;
            client.handle_eof(now);
        }
        if client.is_write_closed() && !client.wants_transmit() && !server_eof {
            server_eof = true;
            server.handle_eof(now);
        }
        for (channel, done) in [
            (&mut *server, &mut server_done),
            (&mut *client, &mut client_done),
        ] {
            while let Some(event) = channel.poll_event() {
                match event {
                    DataEvent::Finished(report) => *done = Some(report),
                    DataEvent::Failed(error) => panic!("data channel failed: {error}"),
                    _ => {}
                }
            }
        }
        if let (Some(server), Some(client)) = (&server_done, &client_done) {
            return (server.clone(), client.clone());
        }
    }
    panic!("the data connection does not settle");
}

/// One 0-byte `RETR` round trip on a logged-in pair: `EPSV`, `RETR`, the data connection, 226.
fn retrieve_empty(pair: &mut Pair) {
    let now = pair.now;
    let op = pair.client.submit(
        now,
        Operation::Retrieve {
            path: "/empty.bin".to_owned(),
            offset: None,
        },
    );
    pair.drive();
    let (client_request, mut client_channel) =
        pair.take_client_channel(op).expect("client data channel");
    let (id, mut server_channel) = pair.server_channel.take().expect("server data channel");
    let (server_report, client_report) = pump_data(now, &mut server_channel, &mut client_channel);
    pair.server
        .complete(now, id, Outcome::TransferFinished(server_report));
    pair.client.complete(
        now,
        client_request,
        ClientOutcome::DataFinished(Ok(client_report)),
    );
    pair.drive();
    match pair.take_completed(op) {
        Some(Ok(Output::Transfer(report))) => {
            assert!(report.resumed, "data handshake did not resume");
            assert!(report.clean_close);
            assert_eq!(report.bytes, 0);
            assert_eq!(report.reply.code.get(), 226);
        }
        other => panic!("RETR: {other:?}, client events {:?}", pair.client_events),
    }
    pair.client_events.clear();
}

/// Moves TLS records between two raw rustls connections until both are quiet (handshake, TLS 1.3 tickets,
/// close_notify).
fn raw_exchange(server: &mut rustls::ServerConnection, client: &mut rustls::ClientConnection) {
    let mut wire = Vec::new();
    for _ in 0..MAX_ROUNDS {
        if !(server.wants_write() || client.wants_write()) {
            return;
        }
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("write_tls");
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).expect("read_tls");
            server.process_new_packets().expect("server TLS");
        }
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).expect("write_tls");
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("read_tls");
            client.process_new_packets().expect("client TLS");
        }
    }
    panic!("raw TLS does not settle");
}

/// One raw rustls handshake to quiet; `close` then exchanges close_notify both ways, as a data connection does.
fn raw_handshake(
    server_config: &Arc<rustls::ServerConfig>,
    client_config: &Arc<rustls::ClientConfig>,
    close: bool,
) -> Option<HandshakeKind> {
    let mut server = rustls::ServerConnection::new(server_config.clone()).expect("server");
    let mut client =
        rustls::ClientConnection::new(client_config.clone(), localhost()).expect("client");
    raw_exchange(&mut server, &mut client);
    assert!(!server.is_handshaking() && !client.is_handshaking());
    if close {
        server.send_close_notify();
        client.send_close_notify();
        raw_exchange(&mut server, &mut client);
    }
    server.handshake_kind()
}

fn control(c: &mut Criterion) {
    let pki = Pki::generate(ftps_benches::KeyKind::Ecdsa).expect("certificate");
    let mut group = c.benchmark_group("control_auth_tls_login");
    group.throughput(Throughput::Elements(1));
    for (label, suite) in suites() {
        let server_config = SessionConfig {
            tls: Some(pki.server_config(suite)),
            ..SessionConfig::default()
        };
        let client_tls = pki.client_config(suite);
        // Each session gets a private resumption store, so every control handshake is a full one.
        group.bench_function(format!("ours/{label}"), |b| {
            b.iter(|| connect_and_login(&server_config, &client_tls))
        });

        let raw_server = pki.server_config(suite);
        let mut raw_client = (*pki.client_config(suite)).clone();
        raw_client.resumption = rustls::client::Resumption::disabled();
        let raw_client = Arc::new(raw_client);
        assert_eq!(
            raw_handshake(&raw_server, &raw_client, false),
            Some(HandshakeKind::Full)
        );
        group.bench_function(format!("raw_rustls_full_handshake/{label}"), |b| {
            b.iter(|| raw_handshake(&raw_server, &raw_client, false))
        });
    }
    group.finish();
}

fn data(c: &mut Criterion) {
    let pki = Pki::generate(ftps_benches::KeyKind::Ecdsa).expect("certificate");
    let mut group = c.benchmark_group("data_resumed_handshake");
    group.throughput(Throughput::Elements(1));
    for (label, suite) in suites() {
        let server_config = SessionConfig {
            tls: Some(pki.server_config(suite)),
            ..SessionConfig::default()
        };
        let mut pair = connect_and_login(&server_config, &pki.client_config(suite));
        // One untimed round trip: proves the transfer resumes before the clock starts.
        retrieve_empty(&mut pair);
        group.bench_function(format!("ours_retr_0_bytes/{label}"), |b| {
            b.iter(|| retrieve_empty(&mut pair))
        });

        // The ceiling: the server's cache and the client's store shared by every connection, as a control
        // session's are by its data connections.
        let raw_server = pki.server_config(suite);
        let raw_client = pki.client_config(suite);
        assert_eq!(
            raw_handshake(&raw_server, &raw_client, true),
            Some(HandshakeKind::Full)
        );
        assert_eq!(
            raw_handshake(&raw_server, &raw_client, true),
            Some(HandshakeKind::Resumed)
        );
        group.bench_function(format!("raw_rustls_resumed_handshake/{label}"), |b| {
            b.iter(|| {
                let kind = raw_handshake(&raw_server, &raw_client, true);
                assert_eq!(kind, Some(HandshakeKind::Resumed));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, control, data);
criterion_main!(benches);
