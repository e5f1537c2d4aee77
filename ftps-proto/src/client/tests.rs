//! A scripted in-memory server with virtual time plays vsftpd-like reply sequences against [`ClientSession`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::Command;

use super::*;
use crate::data::{
    DataChannel, DataEvent, DataOptions, DataProtection, DataReport, DataTls, ResumptionPolicy,
};
use crate::test_support::{localhost, TestPki, TLS12, TLS13};
use crate::tls::{session_bound_config, TlsConn};

const PEER: &str = "192.0.2.10:21";

fn peer() -> SocketAddr {
    PEER.parse().unwrap()
}

/// The server side of the control connection, played by the test.
struct Script {
    now: Instant,
    client: ClientSession,
    /// The server's control TLS, once `AUTH TLS` was accepted (or from the start in implicit mode).
    tls: Option<TlsConn>,
    /// Per-session server config: its private session cache is what data connections resume.
    bound: Option<Arc<rustls::ServerConfig>>,
    /// Plaintext received from the client, not yet read as lines.
    inbox: Vec<u8>,
    events: Vec<Event>,
    /// Requests not answered by `exchange` (it answers `ConnectData` itself unless `manual_connect`).
    requests: Vec<Request>,
    /// Where `ConnectData` requests said to connect, in order.
    connects: Vec<SocketAddr>,
    /// Leave `ConnectData` requests to the test.
    manual_connect: bool,
    /// The last `DriveData` request taken with `take_channel`.
    drive: Option<ReqId>,
    /// The trace lines, when the config asks for them (kept apart from `events`).
    traces: Vec<String>,
}

impl Script {
    fn plain() -> Self {
        let now = Instant::now();
        let client =
            ClientSession::new(ClientSessionConfig::plain(), localhost(), peer(), now).unwrap();
        Self {
            now,
            client,
            tls: None,
            bound: None,
            inbox: Vec::new(),
            events: Vec::new(),
            requests: Vec::new(),
            connects: Vec::new(),
            manual_connect: false,
            drive: None,
            traces: Vec::new(),
        }
    }

    fn tls(
        pki: &TestPki,
        versions: &[&'static rustls::SupportedProtocolVersion],
        config: ClientSessionConfig,
    ) -> Self {
        let now = Instant::now();
        let implicit = config.security == Security::Implicit;
        let client = ClientSession::new(config, localhost(), peer(), now).unwrap();
        let bound = session_bound_config(&pki.server_config(versions));
        let mut script = Self {
            now,
            client,
            tls: None,
            bound: Some(bound),
            inbox: Vec::new(),
            events: Vec::new(),
            requests: Vec::new(),
            connects: Vec::new(),
            manual_connect: false,
            drive: None,
            traces: Vec::new(),
        };
        if implicit {
            script.start_tls();
        }
        script
    }

    fn start_tls(&mut self) {
        self.tls = Some(TlsConn::server(self.bound.clone().unwrap()).unwrap());
    }

    /// Moves bytes both ways until nothing moves; collects events.
    fn exchange(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            let mut wire = Vec::new();
            while self.client.poll_transmit(&mut wire) > 0 {}
            if !wire.is_empty() {
                moved = true;
                match self.tls.as_mut() {
                    Some(tls) => {
                        let n = tls.read_tls(&wire).unwrap();
                        assert_eq!(n, wire.len());
                        loop {
                            let chunk = tls.plaintext_chunk().to_vec();
                            if chunk.is_empty() {
                                break;
                            }
                            tls.consume_plaintext(chunk.len());
                            self.inbox.extend_from_slice(&chunk);
                        }
                    }
                    None => self.inbox.extend_from_slice(&wire),
                }
            }
            if let Some(tls) = self.tls.as_mut() {
                let mut out = Vec::new();
                tls.write_tls_into(&mut out);
                if !out.is_empty() {
                    moved = true;
                    feed_all(&mut self.client, self.now, &out);
                }
            }
            while let Some(request) = self.client.poll_request() {
                moved = true;
                match request.kind {
                    RequestKind::ConnectData { addr } if !self.manual_connect => {
                        self.connects.push(addr);
                        self.client
                            .complete(self.now, request.id, Outcome::DataConnected);
                    }
                    _ => self.requests.push(request),
                }
            }
            while let Some(e) = self.client.poll_event() {
                moved = true;
                match e {
                    Event::Trace(t) => self.traces.push(t.to_string()),
                    e => self.events.push(e),
                }
            }
            if !moved {
                return;
            }
        }
        panic!("exchange does not settle");
    }

    /// Answers `AUTH` with 234 and starts the server's TLS before the client's ClientHello is read.
    fn accept_auth(&mut self) {
        feed_all(
            &mut self.client,
            self.now,
            b"234 Proceed with negotiation.\r\n",
        );
        self.start_tls();
        self.exchange();
    }

    /// Sends raw reply bytes (over TLS when it is up).
    fn send(&mut self, text: &str) {
        match self.tls.as_mut() {
            Some(tls) => {
                tls.write_plaintext(text.as_bytes());
            }
            None => feed_all(&mut self.client, self.now, text.as_bytes()),
        }
        self.exchange();
    }

    /// The next command line the client sent.
    fn line(&mut self) -> String {
        self.exchange();
        let at = self
            .inbox
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| {
                panic!(
                    "no command sent; inbox {:?}",
                    String::from_utf8_lossy(&self.inbox)
                )
            });
        let line = String::from_utf8(self.inbox[..at].to_vec()).unwrap();
        self.inbox.drain(..at + 2);
        line
    }

    /// Expects `command`, answers `reply` (CRLF added per line).
    fn expect(&mut self, command: &str, reply: &str) {
        assert_eq!(self.line(), command);
        self.send(&crlf(reply));
    }

    fn no_command(&mut self) {
        self.exchange();
        assert!(
            self.inbox.is_empty(),
            "unexpected: {:?}",
            String::from_utf8_lossy(&self.inbox)
        );
    }

    /// Plays greeting, AUTH TLS, handshake and login (vsftpd-like).
    fn connect_and_login(&mut self, features: &str) {
        let explicit = matches!(self.client.config.security, Security::Explicit { .. });
        let tls = self.bound.is_some();
        if explicit {
            self.send("220 (vsFTPd 3.0.5)\r\n");
            assert_eq!(self.line(), "AUTH TLS");
            self.accept_auth();
        } else {
            self.send("220 (vsFTPd 3.0.5)\r\n");
        }
        assert!(matches!(self.events.remove(0), Event::Connected { .. }));
        let op = self
            .client
            .submit(self.now, Operation::Login(Credentials::new("alice", "pw")));
        self.expect("USER alice", "331 Please specify the password.");
        self.expect("PASS pw", "230 Login successful.");
        if tls {
            self.expect("PBSZ 0", "200 PBSZ set to 0.");
            self.expect("PROT P", "200 PROT now Private.");
        }
        self.expect("FEAT", features);
        if features.contains("UTF8") {
            self.expect("OPTS UTF8 ON", "200 Always in UTF8 mode.");
        }
        self.expect("TYPE I", "200 Switching to Binary mode.");
        let (id, result) = self.completed();
        assert_eq!(id, op);
        assert!(matches!(result, Ok(Output::LoggedIn(_))), "{result:?}");
    }

    /// The next Completed event (others before it are dropped).
    fn completed(&mut self) -> (OpId, Result<Output, OpError>) {
        self.exchange();
        while !self.events.is_empty() {
            if let Event::Completed { op, result } = self.events.remove(0) {
                return (op, result);
            }
        }
        panic!("no Completed event");
    }

    /// The next `DriveData` request (others before it are dropped); its id is kept for `data_finished`.
    fn take_channel(&mut self) -> (OpId, DataChannel, Direction) {
        self.exchange();
        while !self.requests.is_empty() {
            let request = self.requests.remove(0);
            if let RequestKind::DriveData {
                channel, direction, ..
            } = request.kind
            {
                self.drive = Some(request.id);
                return (request.op, *channel, direction);
            }
        }
        panic!("no DriveData request");
    }

    /// The next `Listen` request's id and operation.
    fn take_listen(&mut self) -> (ReqId, OpId) {
        self.exchange();
        while !self.requests.is_empty() {
            let request = self.requests.remove(0);
            if let RequestKind::Listen = request.kind {
                return (request.id, request.op);
            }
        }
        panic!("no Listen request");
    }

    /// Where the last `ConnectData` request said to connect.
    fn open_addr(&mut self) -> SocketAddr {
        self.exchange();
        *self.connects.last().expect("no ConnectData request")
    }

    /// Answers the channel taken last.
    fn data_finished(&mut self, result: Result<DataReport, DataError>) {
        let id = self.drive.expect("no channel taken");
        self.client
            .complete(self.now, id, Outcome::DataFinished(result));
    }

    /// Answers the listing channel taken last.
    fn listing_received(&mut self, bytes: Vec<u8>, data: Result<DataReport, DataError>) {
        let id = self.drive.expect("no channel taken");
        self.client
            .complete(self.now, id, Outcome::ListingReceived { data, bytes });
    }

    fn no_completion(&mut self) {
        self.exchange();
        assert!(
            !self
                .events
                .iter()
                .any(|e| matches!(e, Event::Completed { .. })),
            "{:?}",
            self.events
        );
    }
}

/// Offers `bytes` until all are consumed, draining the client's output in between (TLS backpressure).
fn feed_all(client: &mut ClientSession, now: Instant, mut bytes: &[u8]) {
    for _ in 0..100 {
        let n = client.handle_input(now, bytes);
        bytes = &bytes[n..];
        if bytes.is_empty() {
            return;
        }
        let mut sink = Vec::new();
        while client.poll_transmit(&mut sink) > 0 {}
        assert!(sink.is_empty() || client.control.is_tls(), "output lost");
    }
    panic!("input never consumed");
}

fn crlf(text: &str) -> String {
    text.lines().map(|l| format!("{l}\r\n")).collect()
}

const FEAT_MLSD: &str = "211-Features:\n EPSV\n MDTM\n MLST type*;size*;modify*;\n PASV\n REST STREAM\n SIZE\n UTF8\n211 End";
const FEAT_PLAIN: &str = "211-Features:\n EPSV\n MDTM\n PASV\n SIZE\n211 End";

/// Runs the server end of a data connection for `channel` and returns the client's report and received bytes.
///
/// The server sends `payload` (downloads); the client sends `upload`. Under TLS the server role requires that
/// the client resumed this control session's TLS session (vsftpd's `require_ssl_reuse`).
fn run_data(
    script: &Script,
    channel: DataChannel,
    payload: &[u8],
    upload: &[u8],
) -> (DataReport, Vec<u8>) {
    let protection = match script.bound.clone() {
        Some(config) if script.client.data_protected() => DataProtection::Tls(DataTls::Server {
            config,
            resumption: ResumptionPolicy::Required,
        }),
        _ => DataProtection::Clear,
    };
    let server = DataChannel::new(script.now, protection, DataOptions::default()).unwrap();
    pump_data(script.now, channel, server, payload, upload)
}

/// Pumps a client data channel against a server data channel until both finished.
fn pump_data(
    now: Instant,
    mut client: DataChannel,
    mut server: DataChannel,
    payload: &[u8],
    upload: &[u8],
) -> (DataReport, Vec<u8>) {
    let (mut sent, mut up, mut received, mut server_got) = (0, 0, Vec::new(), Vec::new());
    let (mut client_done, mut server_done): (Option<DataReport>, Option<DataReport>) = (None, None);
    let (mut client_eof, mut server_eof) = (false, false);
    for _ in 0..100_000 {
        if let (Some(report), Some(_)) = (&client_done, &server_done) {
            assert_eq!(server_got, upload);
            return (report.clone(), received);
        }
        sent += server.write(&payload[sent..]);
        if sent == payload.len()
            && !server.is_handshaking()
            && (upload.is_empty() || !payload.is_empty())
        {
            server.finish(now);
        }
        up += client.write(&upload[up..]);
        if up == upload.len() && !client.is_handshaking() && !upload.is_empty() {
            client.finish(now);
        }
        let mut wire = Vec::new();
        let _ = server.poll_transmit(&mut wire);
        let mut at = 0;
        while at < wire.len() {
            at += client.handle_input(now, &wire[at..]);
            let chunk = client.read_chunk().to_vec();
            client.consume(chunk.len());
            received.extend(chunk);
        }
        let chunk = client.read_chunk().to_vec();
        client.consume(chunk.len());
        received.extend(chunk);
        wire.clear();
        let _ = client.poll_transmit(&mut wire);
        let mut at = 0;
        while at < wire.len() {
            at += server.handle_input(now, &wire[at..]);
            let chunk = server.read_chunk().to_vec();
            server.consume(chunk.len());
            server_got.extend(chunk);
        }
        let chunk = server.read_chunk().to_vec();
        server.consume(chunk.len());
        server_got.extend(chunk);
        // TCP half-closes once a side's write half is done and everything was sent.
        if server.is_write_closed() && !server.wants_transmit() && !client_eof {
            client_eof = true;
            client.handle_eof(now);
        }
        if client.is_write_closed() && !client.wants_transmit() && !server_eof {
            server_eof = true;
            server.handle_eof(now);
        }
        while let Some(e) = client.poll_event() {
            match e {
                DataEvent::Finished(r) => client_done = Some(r),
                DataEvent::Failed(e) => panic!("client data: {e}"),
                _ => {}
            }
        }
        while let Some(e) = server.poll_event() {
            match e {
                DataEvent::Finished(r) => server_done = Some(r),
                DataEvent::Failed(e) => panic!("server data: {e}"),
                _ => {}
            }
        }
    }
    panic!("data connection does not finish");
}

// ----- connect and login -----

#[test]
fn plain_login_with_multiline_replies() {
    let mut s = Script::plain();
    s.send("220-Welcome\r\n220-to the test\r\n220 server\r\n");
    match s.events.remove(0) {
        Event::Connected { greeting, tls } => {
            assert_eq!(greeting.lines.len(), 3);
            assert_eq!(greeting.lines[0], "Welcome");
            assert_eq!(greeting.lines[2], "server");
            assert_eq!(tls, None);
        }
        e => panic!("{e:?}"),
    }
    let op = s
        .client
        .submit(s.now, Operation::Login(Credentials::new("u", "p")));
    s.expect("USER u", "331 pw");
    s.expect("PASS p", "230-Hi\n230 ok");
    s.expect("FEAT", FEAT_MLSD);
    s.expect("OPTS UTF8 ON", "200 ok");
    s.expect("TYPE I", "200 ok");
    let (id, result) = s.completed();
    assert_eq!(id, op);
    let Ok(Output::LoggedIn(f)) = result else {
        panic!("{result:?}")
    };
    assert!(f.mlsd && f.size && f.mdtm && f.rest_stream && f.utf8 && f.epsv && !f.mfmt);
    assert!(s.client.is_idle());
}

/// Found by the `client_session` fuzz target: a path with CRLF went out as two commands ("CWD evil", "DELE x").
#[test]
fn arguments_with_line_breaks_are_refused_not_sent() {
    let mut s = Script::plain();
    s.connect_and_login(FEAT_MLSD);
    let cwd = s
        .client
        .submit(s.now, Operation::Cwd("evil\r\nDELE x".into()));
    assert!(matches!(s.completed(), (id, Err(OpError::InvalidOperation(_))) if id == cwd));
    s.no_command();
    let login = s.client.submit(
        s.now,
        Operation::Login(Credentials::new("bob", "pw\nDELE x")),
    );
    s.expect("USER bob", "331 pw");
    assert!(matches!(s.completed(), (id, Err(OpError::InvalidOperation(_))) if id == login));
    s.no_command();
    // A lone CR is one line on the wire (RFC 2640 section 3.1 pathnames may hold it) and still goes out.
    let cr = s.client.submit(s.now, Operation::Cwd("a\rb".into()));
    s.expect("CWD a\rb", "250 ok");
    assert!(matches!(s.completed(), (id, Ok(Output::Done(_))) if id == cr));
    // The session goes on.
    let noop = s.client.submit(s.now, Operation::Noop);
    s.expect("NOOP", "200 ok");
    assert!(matches!(s.completed(), (id, Ok(Output::Done(_))) if id == noop));
}

#[test]
fn login_with_account_and_refused_password() {
    let mut s = Script::plain();
    s.send("220 hi\r\n");
    let creds = Credentials {
        user: "u".into(),
        password: "p".into(),
        account: Some("acc".into()),
    };
    let op = s.client.submit(s.now, Operation::Login(creds));
    s.expect("USER u", "331 pw");
    s.expect("PASS p", "332 account");
    s.expect("ACCT acc", "530 Login incorrect.");
    let (id, result) = s.completed();
    assert_eq!(id, op);
    assert!(matches!(result, Err(OpError::Refused(r)) if r.code.get() == 530));
    // The session goes on.
    let noop = s.client.submit(s.now, Operation::Noop);
    s.expect("NOOP", "200 NOOP ok.");
    assert!(matches!(s.completed(), (id, Ok(Output::Done(_))) if id == noop));
}

fn explicit_login(versions: &[&'static rustls::SupportedProtocolVersion]) {
    let pki = TestPki::new();
    let mut s = Script::tls(
        &pki,
        versions,
        ClientSessionConfig::new(pki.client_config(versions)),
    );
    s.connect_and_login(FEAT_MLSD);
    assert!(s.client.data_protected());
    let info = s.client.tls_info().unwrap();
    assert_eq!(info.version, versions[0].version);
    assert!(!info.resumed);
}

/// With `trace` on, the exchange is reported line by line, `PASS` masked, with the TLS of the control
/// connection and of each data connection (the evidence `ftps -v` shows that PROT P was in force).
#[test]
fn the_trace_shows_commands_replies_and_every_connections_tls() {
    let pki = TestPki::new();
    let versions = &[&rustls::version::TLS13];
    let mut config = ClientSessionConfig::new(pki.client_config(versions));
    config.trace = true;
    let mut s = Script::tls(&pki, versions, config);
    s.connect_and_login(FEAT_MLSD);
    let report = retrieve(&mut s, b"payload");
    assert!(report.resumed);
    let traces = s.traces.join("\n");
    for expected in [
        "< 220 (vsFTPd 3.0.5)",
        "> AUTH TLS",
        "* control connection: TLSv1_3 TLS13_",
        "> USER alice",
        "> PASS ****",
        "< 230 Login successful.",
        "> PROT P",
        "> RETR f",
        ", resumed, 7 bytes",
        "< 226 Transfer complete.",
    ] {
        assert!(
            traces.contains(expected),
            "{expected:?} missing from:\n{traces}"
        );
    }
    assert!(!traces.contains("pw"), "{traces}");
    // Off by default: nothing.
    let mut s = Script::tls(
        &pki,
        versions,
        ClientSessionConfig::new(pki.client_config(versions)),
    );
    s.connect_and_login(FEAT_MLSD);
    assert!(s.traces.is_empty());
}

#[test]
fn explicit_login_tls12() {
    explicit_login(TLS12);
}

#[test]
fn explicit_login_tls13() {
    explicit_login(TLS13);
}

#[test]
fn implicit_login_sends_pbsz_prot() {
    let pki = TestPki::new();
    let mut s = Script::tls(
        &pki,
        TLS13,
        ClientSessionConfig::implicit(pki.client_config(TLS13)),
    );
    s.connect_and_login(FEAT_PLAIN);
    assert!(s.client.data_protected());
}

#[test]
fn auth_switch_sends_bytes_after_234_to_tls_not_the_parser() {
    let pki = TestPki::new();
    let mut s = Script::tls(
        &pki,
        TLS13,
        ClientSessionConfig::new(pki.client_config(TLS13)),
    );
    s.send("220 hi\r\n");
    assert_eq!(s.line(), "AUTH TLS");
    // An injected "reply" after 234 in the same read (the STARTTLS injection class): it must reach TLS.
    feed_all(&mut s.client, s.now, b"234 go\r\n230 Login successful.\r\n");
    s.exchange();
    assert!(
        matches!(s.client.error(), Some(SessionError::Tls(_))),
        "{:?}",
        s.client.error()
    );
    assert!(!s
        .events
        .iter()
        .any(|e| matches!(e, Event::UnsolicitedReply(_) | Event::Connected { .. })));
    assert!(s
        .events
        .iter()
        .any(|e| matches!(e, Event::Failed(SessionError::Tls(_)))));
}

#[test]
fn auth_refused_fails_closed_and_auth_ssl_only_when_allowed() {
    let pki = TestPki::new();
    let mut s = Script::tls(
        &pki,
        TLS13,
        ClientSessionConfig::new(pki.client_config(TLS13)),
    );
    s.send("220 hi\r\n");
    s.expect("AUTH TLS", "504 Unknown AUTH type.");
    assert!(matches!(s.client.error(), Some(SessionError::AuthRefused(r)) if r.code.get() == 504));

    let mut config = ClientSessionConfig::new(pki.client_config(TLS13));
    config.security = Security::Explicit {
        allow_auth_ssl: true,
    };
    let mut s = Script::tls(&pki, TLS13, config);
    s.send("220 hi\r\n");
    s.expect("AUTH TLS", "504 Unknown AUTH type.");
    assert_eq!(s.line(), "AUTH SSL");
    s.accept_auth();
    assert!(matches!(
        s.events.remove(0),
        Event::Connected { tls: Some(_), .. }
    ));
}

#[test]
fn prot_p_refused_fails_closed() {
    let pki = TestPki::new();
    let mut s = Script::tls(
        &pki,
        TLS12,
        ClientSessionConfig::new(pki.client_config(TLS12)),
    );
    s.send("220 hi\r\n");
    assert_eq!(s.line(), "AUTH TLS");
    s.accept_auth();
    let op = s
        .client
        .submit(s.now, Operation::Login(Credentials::new("u", "p")));
    let queued = s.client.submit(s.now, Operation::Pwd);
    s.expect("USER u", "230 ok");
    s.expect("PBSZ 0", "200 ok");
    s.expect("PROT P", "536 PROT P not supported.");
    assert!(
        matches!(s.client.error(), Some(SessionError::DataProtectionRefused(r)) if r.code.get() == 536)
    );
    assert!(
        matches!(s.completed(), (id, Err(OpError::Session(SessionError::DataProtectionRefused(_)))) if id == op)
    );
    assert!(matches!(s.completed(), (id, Err(OpError::Session(_))) if id == queued));
    s.no_command();
}

#[test]
fn prot_p_refused_allowed_gives_clear_data() {
    let pki = TestPki::new();
    let mut config = ClientSessionConfig::new(pki.client_config(TLS12));
    config.allow_clear_data = true;
    let mut s = Script::tls(&pki, TLS12, config);
    s.send("220 hi\r\n");
    assert_eq!(s.line(), "AUTH TLS");
    s.accept_auth();
    let op = s
        .client
        .submit(s.now, Operation::Login(Credentials::new("u", "p")));
    s.expect("USER u", "230 ok");
    s.expect("PBSZ 0", "200 ok");
    s.expect("PROT P", "536 no");
    s.expect("FEAT", "500 no");
    s.expect("TYPE I", "200 ok");
    assert!(matches!(s.completed(), (id, Ok(Output::LoggedIn(_))) if id == op));
    assert!(!s.client.data_protected());
}

// ----- simple operations -----

#[test]
fn simple_operations_and_raw_and_quit() {
    let mut s = Script::plain();
    s.send("220 hi\r\n");
    let pwd = s.client.submit(s.now, Operation::Pwd);
    s.expect("PWD", "257 \"/home/a \"\"q\"\"\" is the current directory");
    assert_eq!(
        s.completed(),
        (pwd, Ok(Output::Directory("/home/a \"q\"".into())))
    );
    let mkd = s.client.submit(s.now, Operation::Mkdir("x".into()));
    s.expect("MKD x", "257 \"/x\" created");
    assert_eq!(s.completed(), (mkd, Ok(Output::Directory("/x".into()))));
    let size = s.client.submit(s.now, Operation::Size("f".into()));
    s.expect("SIZE f", "213 12345");
    assert_eq!(s.completed(), (size, Ok(Output::Size(12345))));
    let _mdtm = s.client.submit(s.now, Operation::Mdtm("f".into()));
    s.expect("MDTM f", "213 20240102030405");
    let (_, r) = s.completed();
    let Ok(Output::Modified(t)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        (t.year, t.month, t.day, t.hour, t.minute, t.second),
        (2024, 1, 2, 3, 4, 5)
    );
    let ren = s.client.submit(
        s.now,
        Operation::Rename {
            from: "a".into(),
            to: "b".into(),
        },
    );
    s.expect("RNFR a", "350 Ready for RNTO.");
    s.expect("RNTO b", "250 Rename successful.");
    assert!(matches!(s.completed(), (id, Ok(Output::Done(r))) if id == ren && r.code.get() == 250));
    let ren = s.client.submit(
        s.now,
        Operation::Rename {
            from: "a".into(),
            to: "b".into(),
        },
    );
    s.expect("RNFR a", "550 RNFR command failed.");
    assert!(
        matches!(s.completed(), (id, Err(OpError::Refused(r))) if id == ren && r.code.get() == 550)
    );
    let dele = s.client.submit(s.now, Operation::Delete("f".into()));
    s.expect("DELE f", "550 Delete operation failed.");
    assert!(matches!(s.completed(), (id, Err(OpError::Refused(_))) if id == dele));
    let raw = s.client.submit(s.now, Operation::Raw(Command::Syst));
    s.expect("SYST", "215 UNIX Type: L8");
    assert!(matches!(s.completed(), (id, Ok(Output::Done(r))) if id == raw && r.code.get() == 215));
    let bad = s
        .client
        .submit(s.now, Operation::Raw(Command::Retr("x".into())));
    assert!(matches!(s.completed(), (id, Err(OpError::InvalidOperation(_))) if id == bad));
    s.no_command();
    let quit = s.client.submit(s.now, Operation::Quit);
    s.expect("QUIT", "221 Goodbye.");
    assert!(matches!(s.completed(), (id, Ok(Output::Done(_))) if id == quit));
    assert!(s.client.is_closed());
    assert!(s.events.iter().any(|e| matches!(e, Event::Closed)));
    let late = s.client.submit(s.now, Operation::Noop);
    assert!(
        matches!(s.completed(), (id, Err(OpError::Session(SessionError::Closed))) if id == late)
    );
}

#[test]
fn unsolicited_reply_at_idle_is_an_event_and_421_fails() {
    let mut s = Script::plain();
    s.send("220 hi\r\n");
    s.send("200 stray\r\n");
    assert!(matches!(s.events.remove(0), Event::Connected { .. }));
    assert!(matches!(s.events.remove(0), Event::UnsolicitedReply(r) if r.code.get() == 200));
    assert!(s.client.error().is_none());
    let noop = s.client.submit(s.now, Operation::Noop);
    s.expect("NOOP", "200 ok");
    assert!(matches!(s.completed(), (id, Ok(_)) if id == noop));
    s.send("421 Timeout.\r\n");
    assert!(matches!(
        s.client.error(),
        Some(SessionError::ServiceClosing(_))
    ));
}

#[test]
fn preliminary_reply_to_a_simple_command_is_fatal_not_misread() {
    let mut s = Script::plain();
    s.send("220 hi\r\n");
    let op = s.client.submit(s.now, Operation::Cwd("d".into()));
    s.expect("CWD d", "150 what");
    assert!(matches!(
        s.client.error(),
        Some(SessionError::UnexpectedReply { .. })
    ));
    assert!(matches!(s.completed(), (id, Err(OpError::Session(_))) if id == op));
}

#[test]
fn multiline_reply_split_at_every_byte() {
    let greeting = "220-line one\r\n220-line 220 two\r\n 220 three\r\n220 end\r\n";
    let reply = "257-first\r\n257 \"/a b\" created\r\n";
    for split in 0..=greeting.len() {
        let mut s = Script::plain();
        assert_eq!(
            s.client.handle_input(s.now, &greeting.as_bytes()[..split]),
            split
        );
        assert_eq!(
            s.client.handle_input(s.now, &greeting.as_bytes()[split..]),
            greeting.len() - split
        );
        s.exchange();
        match s.events.remove(0) {
            Event::Connected { greeting, .. } => assert_eq!(greeting.lines.len(), 4),
            e => panic!("{e:?}"),
        }
        let op = s.client.submit(s.now, Operation::Mkdir("a b".into()));
        assert_eq!(s.line(), "MKD a b");
        for b in reply.as_bytes() {
            assert_eq!(s.client.handle_input(s.now, std::slice::from_ref(b)), 1);
        }
        let _ = op;
        // The 257 parse uses the first line: "first" has no quotes, so this is malformed — exactly once.
        let (_, r) = s.completed();
        assert!(matches!(r, Err(OpError::MalformedReply(_))), "{r:?}");
        assert!(s.client.is_idle());
    }
}

// ----- transfers -----

fn tls_session(versions: &[&'static rustls::SupportedProtocolVersion]) -> Script {
    let pki = TestPki::new();
    let mut s = Script::tls(
        &pki,
        versions,
        ClientSessionConfig::new(pki.client_config(versions)),
    );
    s.connect_and_login(FEAT_MLSD);
    s
}

fn plain_session(features: &str) -> Script {
    let mut s = Script::plain();
    s.connect_and_login(features);
    s
}

/// One `RETR` over EPSV: returns the client's transfer report.
fn retrieve(s: &mut Script, payload: &[u8]) -> TransferReport {
    let op = s.client.submit(
        s.now,
        Operation::Retrieve {
            path: "f".into(),
            offset: None,
        },
    );
    s.expect("EPSV", "229 Entering Extended Passive Mode (|||40001|)");
    assert_eq!(s.open_addr(), "192.0.2.10:40001".parse().unwrap());
    s.expect("RETR f", "150 Opening BINARY mode data connection for f.");
    let (id, channel, direction) = s.take_channel();
    assert_eq!((id, direction), (op, Direction::Download));
    let (report, received) = run_data(s, channel, payload, b"");
    assert_eq!(received, payload);
    s.data_finished(Ok(report));
    s.no_completion();
    s.send("226 Transfer complete.\r\n");
    let (id, result) = s.completed();
    assert_eq!(id, op);
    match result {
        Ok(Output::Transfer(report)) => report,
        r => panic!("{r:?}"),
    }
}

fn fifty_transfers_resume(versions: &[&'static rustls::SupportedProtocolVersion]) {
    let mut s = tls_session(versions);
    for i in 0..50 {
        let payload = vec![i as u8; 1000 + i];
        let report = retrieve(&mut s, &payload);
        assert_eq!(report.bytes, payload.len() as u64);
        assert!(report.resumed, "transfer {i} did not resume");
        assert!(report.clean_close);
        assert_eq!(report.tls.unwrap().version, versions[0].version);
        assert_eq!(report.reply.code.get(), 226);
    }
    assert!(s.client.is_idle());
}

#[test]
fn fifty_transfers_resume_tls12() {
    fifty_transfers_resume(TLS12);
}

#[test]
fn fifty_transfers_resume_tls13() {
    fifty_transfers_resume(TLS13);
}

#[test]
fn two_sessions_on_one_caller_config_do_not_share_tickets() {
    for versions in [TLS12, TLS13] {
        let pki = TestPki::new();
        let caller = pki.client_config(versions);
        // One server config shared by both control connections: it would resume a session offered by either.
        let shared = pki.server_config(versions);
        let mut sessions = Vec::new();
        for _ in 0..2 {
            let now = Instant::now();
            let client = ClientSession::new(
                ClientSessionConfig::new(caller.clone()),
                localhost(),
                peer(),
                now,
            )
            .unwrap();
            let mut s = Script {
                now,
                client,
                tls: None,
                bound: Some(shared.clone()),
                inbox: Vec::new(),
                events: Vec::new(),
                requests: Vec::new(),
                connects: Vec::new(),
                manual_connect: false,
                drive: None,
                traces: Vec::new(),
            };
            s.connect_and_login(FEAT_PLAIN);
            // Let TLS 1.3 tickets arrive at the client.
            let noop = s.client.submit(s.now, Operation::Noop);
            s.expect("NOOP", "200 NOOP ok.");
            assert!(matches!(s.completed(), (id, Ok(_)) if id == noop));
            sessions.push(s);
        }
        assert!(
            !sessions[1].client.tls_info().unwrap().resumed,
            "second session resumed the first's ticket"
        );
        // The check can fail: a connection through the first session's store does resume with this server.
        let mut first = sessions.remove(0);
        let report = retrieve(&mut first, b"x");
        assert!(report.resumed);
    }
}

/// A `RETR` whose data connection the server refuses with `reply` after 150, without running it.
fn refused_retrieve(s: &mut Script, reply: &str) -> Result<Output, OpError> {
    let op = s.client.submit(
        s.now,
        Operation::Retrieve {
            path: "f".into(),
            offset: None,
        },
    );
    s.expect("EPSV", "229 Entering Extended Passive Mode (|||40001|)");
    s.expect("RETR f", "150 Opening BINARY mode data connection for f.");
    let _ = s.take_channel();
    s.send(&crlf(reply));
    let (id, result) = s.completed();
    assert_eq!(id, op);
    result
}

/// ProFTPD under TLS 1.3: a data connection must resume the control session, and data connections issue no
/// tickets. rustls offers each ticket once, so once the control handshake's tickets are used the refusal says
/// why; under TLS 1.2 (sessions resume any number of times), or while a ticket was offered, a refusal is a refusal.
#[test]
fn a_refusal_once_the_tls13_tickets_are_used_up_says_so() {
    const PROFTPD_425: &str = "425 Unable to build data connection: Operation not permitted";
    for versions in [TLS13, TLS12] {
        let mut s = tls_session(versions);
        // Let the control connection's tickets arrive.
        let noop = s.client.submit(s.now, Operation::Noop);
        s.expect("NOOP", "200 NOOP ok.");
        assert!(matches!(s.completed(), (id, Ok(_)) if id == noop));
        let mut data = (**s.bound.as_ref().unwrap()).clone();
        data.send_tls13_tickets = 0;
        s.bound = Some(Arc::new(data));
        // Refused for another reason while a ticket was offered: a plain refusal.
        let result = refused_retrieve(&mut s, PROFTPD_425);
        assert!(matches!(result, Err(OpError::Refused(_))), "{result:?}");
        // The control handshake's second ticket.
        assert!(retrieve(&mut s, b"resumed").resumed);
        let result = refused_retrieve(&mut s, PROFTPD_425);
        if versions == TLS13 {
            match result {
                Err(OpError::ResumptionExhausted(reply)) => assert_eq!(reply.code.get(), 425),
                r => panic!("{r:?}"),
            }
        } else {
            assert!(matches!(result, Err(OpError::Refused(_))), "{result:?}");
            assert!(retrieve(&mut s, b"resumed again").resumed);
        }
        // The session goes on.
        let noop = s.client.submit(s.now, Operation::Noop);
        s.expect("NOOP", "200 ok");
        assert!(matches!(s.completed(), (id, Ok(_)) if id == noop));
    }
}

#[test]
fn download_with_offset_sends_rest() {
    let mut s = plain_session(FEAT_PLAIN);
    let op = s.client.submit(
        s.now,
        Operation::Retrieve {
            path: "f".into(),
            offset: Some(100),
        },
    );
    s.expect("EPSV", "229 ok (|||5000|)");
    s.expect("REST 100", "350 Restart position accepted (100).");
    s.expect("RETR f", "150 ok");
    let (_, channel, _) = s.take_channel();
    let (report, _) = run_data(&s, channel, b"rest", b"");
    s.send("226 ok\r\n");
    s.no_completion();
    s.data_finished(Ok(report));
    let (id, r) = s.completed();
    assert_eq!(id, op);
    assert!(matches!(r, Ok(Output::Transfer(t)) if t.bytes == 4 && !t.resumed && t.tls.is_none()));
}

#[test]
fn upload_at_offset_sends_rest_then_stor() {
    let mut s = plain_session(FEAT_PLAIN);
    let op = s.client.submit(
        s.now,
        Operation::StoreAt {
            path: "f".into(),
            offset: 4096,
        },
    );
    s.expect("EPSV", "229 ok (|||5000|)");
    s.expect("REST 4096", "350 Restart position accepted (4096).");
    s.expect("STOR f", "150 Ok to send data.");
    let (_, channel, direction) = s.take_channel();
    assert_eq!(direction, Direction::Upload);
    let (report, _) = run_data(&s, channel, b"", b"tail");
    s.data_finished(Ok(report));
    s.send("226 Transfer complete.\r\n");
    let (id, r) = s.completed();
    assert_eq!(id, op);
    assert!(
        matches!(r, Ok(Output::Transfer(ref t)) if t.bytes == 4),
        "{r:?}"
    );
}

#[test]
fn upload_at_offset_refused_rest_fails_without_stor() {
    let mut s = plain_session(FEAT_PLAIN);
    let op = s.client.submit(
        s.now,
        Operation::StoreAt {
            path: "f".into(),
            offset: 10,
        },
    );
    s.expect("EPSV", "229 ok (|||5000|)");
    let _ = s.open_addr();
    s.expect("REST 10", "502 REST not implemented.");
    let (id, r) = s.completed();
    assert_eq!(id, op);
    assert!(
        matches!(r, Err(OpError::Refused(ref reply)) if reply.code.get() == 502),
        "{r:?}"
    );
    assert!(s.client.is_idle());
}

#[test]
fn upload_zero_bytes_completes_handshake_and_close() {
    let mut s = tls_session(TLS13);
    let op = s.client.submit(s.now, Operation::Store("empty".into()));
    s.expect("EPSV", "229 (|||6000|)");
    s.expect("STOR empty", "150 Ok to send data.");
    let (_, mut channel, direction) = s.take_channel();
    assert_eq!(direction, Direction::Upload);
    // A 0-byte upload: the frontend finishes at once after the handshake; run_data does so.
    channel.finish(s.now);
    let (report, _) = run_data(&s, channel, b"", b"");
    assert!(report.tls.as_ref().unwrap().resumed);
    s.data_finished(Ok(report));
    s.send("226 Transfer complete.\r\n");
    let (id, r) = s.completed();
    assert_eq!(id, op);
    assert!(
        matches!(r, Ok(Output::Transfer(ref t)) if t.bytes == 0 && t.resumed && t.clean_close),
        "{r:?}"
    );
}

#[test]
fn final_reply_before_and_after_data_complete_exactly_once() {
    for reply_first in [true, false] {
        let mut s = tls_session(TLS12);
        let op = s.client.submit(
            s.now,
            Operation::Retrieve {
                path: "f".into(),
                offset: None,
            },
        );
        s.expect("EPSV", "229 (|||6000|)");
        s.expect("RETR f", "150 ok");
        let (_, channel, _) = s.take_channel();
        let (report, _) = run_data(&s, channel, b"data", b"");
        if reply_first {
            s.send("226 done\r\n");
            s.no_completion();
            s.data_finished(Ok(report.clone()));
        } else {
            s.data_finished(Ok(report.clone()));
            s.no_completion();
            s.send("226 done\r\n");
        }
        let (id, r) = s.completed();
        assert_eq!(id, op);
        assert!(
            matches!(r, Ok(Output::Transfer(ref t)) if t.bytes == 4),
            "{r:?}"
        );
        // A repeated report is ignored, a late reply is unsolicited: nothing completes twice.
        s.data_finished(Ok(report));
        s.exchange();
        assert!(!s
            .events
            .iter()
            .any(|e| matches!(e, Event::Completed { .. })));
        assert!(s.client.is_idle());
    }
}

#[test]
fn truncated_download_is_an_error() {
    let mut s = tls_session(TLS13);
    let op = s.client.submit(
        s.now,
        Operation::Retrieve {
            path: "f".into(),
            offset: None,
        },
    );
    s.expect("EPSV", "229 (|||6000|)");
    s.expect("RETR f", "150 ok");
    let _ = s.take_channel();
    let report = DataReport {
        bytes_received: 10,
        clean_close: false,
        ..DataReport::default()
    };
    s.data_finished(Ok(report));
    s.send("226 done\r\n");
    assert_eq!(s.completed(), (op, Err(OpError::Truncated)));
}

#[test]
fn epsv_refused_falls_back_to_pasv_for_the_session_and_ignores_the_227_address() {
    let mut s = plain_session(FEAT_PLAIN);
    let op = s.client.submit(s.now, Operation::NameList(None));
    s.expect("EPSV", "500 Unknown command.");
    s.expect("PASV", "227 Entering Passive Mode (10,0,0,5,156,64).");
    // 10.0.0.5 is ignored: the data connection goes to the control peer.
    assert_eq!(s.open_addr(), "192.0.2.10:40000".parse().unwrap());
    s.expect("NLST", "150 Here comes the directory listing.");
    let (_, channel, _) = s.take_channel();
    let (report, bytes) = run_data(&s, channel, b"a.txt\r\nb c.txt\r\n", b"");
    s.listing_received(bytes, Ok(report));
    s.send("226 Directory send OK.\r\n");
    assert_eq!(
        s.completed(),
        (
            op,
            Ok(Output::Names(vec!["a.txt".into(), "b c.txt".into()]))
        )
    );
    assert!(s.client.uses_pasv());
    // Sticky: the next transfer goes straight to PASV.
    let op = s.client.submit(s.now, Operation::NameList(None));
    s.expect("PASV", "227 Entering Passive Mode (10,0,0,5,156,65).");
    s.expect("NLST", "226 Nothing.");
    assert_eq!(s.completed(), (op, Ok(Output::Names(vec![]))));
}

#[test]
fn pasv_address_trusted_only_on_opt_in() {
    let mut config = ClientSessionConfig::plain();
    config.trust_pasv_address = true;
    let now = Instant::now();
    let mut s = Script::plain();
    s.client = ClientSession::new(config, localhost(), peer(), now).unwrap();
    s.connect_and_login(FEAT_PLAIN);
    let _ = s.client.submit(
        s.now,
        Operation::Retrieve {
            path: "f".into(),
            offset: None,
        },
    );
    s.expect("EPSV", "502 no");
    s.expect("PASV", "227 Entering Passive Mode (10,0,0,5,156,64).");
    assert_eq!(s.open_addr(), "10.0.0.5:40000".parse().unwrap());
}

#[test]
fn list_uses_mlsd_when_offered_else_list() {
    let mut s = plain_session(FEAT_MLSD);
    let op = s.client.submit(s.now, Operation::List(Some("/d".into())));
    s.expect("EPSV", "229 (|||6000|)");
    s.expect("MLSD /d", "150 ok");
    let (id, channel, _) = s.take_channel();
    assert_eq!(id, op);
    let listing = b"type=file;size=12;modify=20240102030405; a.txt\r\ntype=dir; sub\r\n";
    let (report, bytes) = run_data(&s, channel, listing, b"");
    s.listing_received(bytes, Ok(report));
    s.send("226 ok\r\n");
    let (_, r) = s.completed();
    let Ok(Output::Listing(entries)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["a.txt", "sub"]
    );
    assert_eq!(entries[0].size, Some(12));
    assert!(entries[1].is_dir());

    let mut s = plain_session(FEAT_PLAIN);
    let op = s.client.submit(s.now, Operation::List(None));
    s.expect("EPSV", "229 (|||6000|)");
    s.expect("LIST", "150 Here comes the directory listing.");
    let (id, channel, _) = s.take_channel();
    assert_eq!(id, op);
    let listing = b"-rw-r--r--    1 1000     1000           12 Jan 02  2024 a.txt\r\ndrwxr-xr-x    2 1000     1000         4096 Jan 02  2024 sub\r\n";
    let (report, bytes) = run_data(&s, channel, listing, b"");
    s.listing_received(bytes, Ok(report));
    s.send("226 Directory send OK.\r\n");
    let (_, r) = s.completed();
    let Ok(Output::Listing(entries)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["a.txt", "sub"]
    );
    assert_eq!(entries[0].size, Some(12));
    assert!(entries[1].is_dir());
}

#[test]
fn reply_226_without_150_completes_an_empty_listing() {
    let mut s = plain_session(FEAT_MLSD);
    let op = s.client.submit(s.now, Operation::List(None));
    s.expect("EPSV", "229 (|||6000|)");
    s.expect("MLSD", "226 Transfer done (but failed to open directory).");
    assert_eq!(s.completed(), (op, Ok(Output::Listing(vec![]))));
    assert!(s.client.is_idle());
}

#[test]
fn errors_after_150_fail_the_transfer_not_the_session() {
    for code in [
        "425 Failed to establish connection.",
        "426 Failure writing network stream.",
        "450 busy",
        "451 local error",
    ] {
        let mut s = plain_session(FEAT_PLAIN);
        let r = refused_retrieve(&mut s, code);
        assert!(
            matches!(r, Err(OpError::Refused(ref reply)) if reply.code.get().to_string() == code[..3]),
            "{r:?}"
        );
        // A late data report for the failed op is ignored; the session goes on.
        s.data_finished(Ok(DataReport::default()));
        let noop = s.client.submit(s.now, Operation::Noop);
        s.expect("NOOP", "200 ok");
        assert!(matches!(s.completed(), (id, Ok(_)) if id == noop));
    }
}

#[test]
fn active_mode_listens_and_sends_eprt_with_port_fallback() {
    let mut config = ClientSessionConfig::plain();
    config.data_mode = DataConnectionMode::Active;
    let mut s = Script::plain();
    s.client = ClientSession::new(config, localhost(), peer(), s.now).unwrap();
    s.connect_and_login(FEAT_PLAIN);
    let op = s.client.submit(
        s.now,
        Operation::Retrieve {
            path: "f".into(),
            offset: None,
        },
    );
    let (listen, id) = s.take_listen();
    assert_eq!(id, op);
    s.no_command();
    let bound = "198.51.100.7:50000".parse().unwrap();
    s.client.complete(s.now, listen, Outcome::Listening(bound));
    s.expect("EPRT |1|198.51.100.7|50000|", "500 no");
    s.expect("PORT 198,51,100,7,195,80", "200 PORT command successful.");
    s.expect("RETR f", "150 ok");
    let (_, channel, _) = s.take_channel();
    let (report, _) = run_data(&s, channel, b"abc", b"");
    s.data_finished(Ok(report));
    s.send("226 ok\r\n");
    assert!(matches!(s.completed(), (id, Ok(Output::Transfer(t))) if id == op && t.bytes == 3));
}

#[test]
fn a_data_connect_failure_aborts_the_transfer_and_is_not_a_tls_error() {
    // Passive: RETR is on the wire when the connect fails, so the session sends ABOR itself.
    let mut s = plain_session(FEAT_PLAIN);
    s.manual_connect = true;
    let op = s.client.submit(
        s.now,
        Operation::Retrieve {
            path: "f".into(),
            offset: None,
        },
    );
    s.expect("EPSV", "229 (|||6000|)");
    assert_eq!(s.line(), "RETR f");
    let connect = s.requests.remove(0);
    let RequestKind::ConnectData { addr } = connect.kind else {
        panic!("{connect:?}");
    };
    assert_eq!(connect.op, op);
    let failure = DataConnectError::Connect {
        addr,
        reason: "connection refused".into(),
    };
    let outcome = Outcome::DataConnectFailed(failure.clone());
    s.client.complete(s.now, connect.id, outcome);
    s.expect("ABOR", "425 Can't open data connection.");
    s.send("226 ABOR successful.\r\n");
    assert_eq!(s.completed(), (op, Err(OpError::DataConnect(failure))));
    let pwd = s.client.submit(s.now, Operation::Pwd);
    s.expect("PWD", "257 \"/\"");
    assert_eq!(s.completed(), (pwd, Ok(Output::Directory("/".into()))));

    // Active: no listener could be bound, so nothing was sent for the transfer.
    let mut config = ClientSessionConfig::plain();
    config.data_mode = DataConnectionMode::Active;
    let mut s = Script::plain();
    s.client = ClientSession::new(config, localhost(), peer(), s.now).unwrap();
    s.connect_and_login(FEAT_PLAIN);
    let op = s.client.submit(s.now, Operation::List(None));
    let (listen, _) = s.take_listen();
    let failure = DataConnectError::Listen {
        reason: "address in use".into(),
    };
    let outcome = Outcome::DataConnectFailed(failure.clone());
    s.client.complete(s.now, listen, outcome);
    assert_eq!(s.completed(), (op, Err(OpError::DataConnect(failure))));
    s.no_command();
}

#[test]
fn the_channel_waits_for_the_connect_answer_and_requests_are_answered_by_id() {
    let mut s = plain_session(FEAT_PLAIN);
    s.manual_connect = true;
    let op = s.client.submit(
        s.now,
        Operation::Retrieve {
            path: "f".into(),
            offset: None,
        },
    );
    s.expect("EPSV", "229 (|||6000|)");
    s.expect("RETR f", "150 ok");
    // The 1xx came first: no channel until the frontend says it connected.
    let connect = s.requests.remove(0);
    assert!(matches!(connect.kind, RequestKind::ConnectData { .. }));
    assert!(s.requests.is_empty(), "{:?}", s.requests);
    // An answer under another id, or one that does not fit the request, changes nothing.
    s.client.complete(s.now, ReqId(999), Outcome::DataConnected);
    let misfit = Outcome::DataFinished(Ok(DataReport::default()));
    s.client.complete(s.now, connect.id, misfit);
    s.exchange();
    assert!(s.requests.is_empty(), "{:?}", s.requests);
    s.client.complete(s.now, connect.id, Outcome::DataConnected);
    let (id, channel, _) = s.take_channel();
    assert_eq!(id, op);
    let (report, _) = run_data(&s, channel, b"abc", b"");
    s.send("226 ok\r\n");
    s.no_completion();
    s.data_finished(Ok(report));
    assert!(matches!(s.completed(), (id, Ok(Output::Transfer(t))) if id == op && t.bytes == 3));
    // A second answer to the same request is ignored.
    s.data_finished(Ok(DataReport::default()));
    s.no_completion();
}

// ----- ABOR -----

/// Starts a download and sends ABOR after the 150.
fn aborting() -> (Script, OpId) {
    let mut s = tls_session(TLS13);
    let op = s.client.submit(
        s.now,
        Operation::Retrieve {
            path: "big".into(),
            offset: None,
        },
    );
    s.expect("EPSV", "229 (|||6000|)");
    s.expect("RETR big", "150 ok");
    let _ = s.take_channel();
    assert!(s.client.abort(s.now, op));
    assert_eq!(s.line(), "ABOR");
    (s, op)
}

fn assert_usable_after_abort(s: &mut Script, op: OpId) {
    assert_eq!(s.completed(), (op, Err(OpError::Aborted)));
    let noop = s.client.submit(s.now, Operation::Pwd);
    s.expect("PWD", "257 \"/\"");
    assert_eq!(s.completed(), (noop, Ok(Output::Directory("/".into()))));
}

#[test]
fn abort_426_then_226() {
    let (mut s, op) = aborting();
    s.send("426 Failure writing network stream.\r\n");
    s.no_completion();
    s.send("226 ABOR successful.\r\n");
    assert_usable_after_abort(&mut s, op);
}

#[test]
fn abort_226_alone_is_fenced_with_noop() {
    let (mut s, op) = aborting();
    s.send("226 Transfer complete.\r\n");
    s.expect("NOOP", "200 NOOP ok.");
    assert_usable_after_abort(&mut s, op);
    // And when the second reply does come, it is absorbed before the fence.
    let (mut s, op) = aborting();
    s.send("226 Transfer complete.\r\n");
    assert_eq!(s.line(), "NOOP");
    s.send("226 ABOR successful.\r\n200 NOOP ok.\r\n");
    assert_usable_after_abort(&mut s, op);
}

#[test]
fn abort_225() {
    let (mut s, op) = aborting();
    s.send("225 No transfer to ABOR.\r\n");
    s.expect("NOOP", "200 NOOP ok.");
    assert_usable_after_abort(&mut s, op);
    // ABOR after the final reply arrived: a single 225 settles it.
    let mut s = tls_session(TLS13);
    let op = s.client.submit(
        s.now,
        Operation::Retrieve {
            path: "f".into(),
            offset: None,
        },
    );
    s.expect("EPSV", "229 (|||6000|)");
    s.expect("RETR f", "150 ok");
    s.send("226 done\r\n");
    assert!(s.client.abort(s.now, op));
    s.expect("ABOR", "225 No transfer to ABOR.");
    assert_usable_after_abort(&mut s, op);
}

#[test]
fn abort_silence_marks_the_session_unusable() {
    let (mut s, op) = aborting();
    let deadline = s.client.poll_timeout().unwrap();
    assert_eq!(deadline, s.now + Duration::from_secs(10));
    s.client.handle_timeout(deadline - Duration::from_millis(1));
    assert!(s.client.error().is_none());
    s.client.handle_timeout(deadline);
    assert_eq!(s.client.error(), Some(&SessionError::AbortUnresolved));
    assert_eq!(s.client.poll_timeout(), None);
    assert_eq!(
        s.completed(),
        (op, Err(OpError::Session(SessionError::AbortUnresolved)))
    );
}

// ----- timeouts and never-panic -----

#[test]
fn reply_timeout_is_fatal_and_never_returned_twice() {
    let mut s = Script::plain();
    let greeting_deadline = s.client.poll_timeout().unwrap();
    s.send("220 hi\r\n");
    assert_eq!(s.client.poll_timeout(), None);
    let later = s.now + Duration::from_secs(5);
    let op = s.client.submit(later, Operation::Noop);
    assert_eq!(s.line(), "NOOP");
    let deadline = s.client.poll_timeout().unwrap();
    assert_eq!(deadline, later + Duration::from_secs(30));
    assert!(deadline > greeting_deadline);
    s.client.handle_timeout(deadline);
    assert_eq!(s.client.error(), Some(&SessionError::Timeout("command")));
    assert_eq!(s.client.poll_timeout(), None);
    assert_eq!(
        s.completed(),
        (op, Err(OpError::Session(SessionError::Timeout("command"))))
    );
}

#[test]
fn eof_fails_pending_operations() {
    let mut s = Script::plain();
    s.send("220 hi\r\n");
    let op = s.client.submit(s.now, Operation::Pwd);
    s.client.handle_eof(s.now);
    assert_eq!(s.client.error(), Some(&SessionError::ConnectionClosed));
    assert_eq!(
        s.completed(),
        (op, Err(OpError::Session(SessionError::ConnectionClosed)))
    );
}

mod never_panic {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Input {
        Bytes(Vec<u8>),
        Reply(u16, bool),
        Eof,
        Timeout(u16),
        Submit(u8),
        Abort,
        DataDone,
    }

    fn input() -> impl Strategy<Value = Input> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Input::Bytes),
            (100u16..600, any::<bool>()).prop_map(|(c, m)| Input::Reply(c, m)),
            Just(Input::Eof),
            any::<u16>().prop_map(Input::Timeout),
            any::<u8>().prop_map(Input::Submit),
            Just(Input::Abort),
            Just(Input::DataDone),
        ]
    }

    fn op(n: u8) -> Operation {
        match n % 10 {
            0 => Operation::Login(Credentials::new("u", "p")),
            1 => Operation::List(None),
            2 => Operation::Retrieve {
                path: "f".into(),
                offset: Some(3),
            },
            3 => Operation::Store("f".into()),
            4 => Operation::Rename {
                from: "a".into(),
                to: "b".into(),
            },
            5 => Operation::Size("f".into()),
            6 => Operation::Mdtm("f".into()),
            7 => Operation::Pwd,
            8 => Operation::NameList(None),
            _ => Operation::Quit,
        }
    }

    proptest! {
        #[test]
        fn arbitrary_server_bytes_eof_and_timeouts_never_panic(
            active in any::<bool>(),
            inputs in proptest::collection::vec(input(), 0..60),
        ) {
            let start = Instant::now();
            let mut config = ClientSessionConfig::plain();
            if active {
                config.data_mode = DataConnectionMode::Active;
            }
            let mut client = ClientSession::new(config, localhost(), peer(), start).unwrap();
            let mut now = start;
            let mut submitted = Vec::new();
            let mut completed = Vec::new();
            let mut last_deadline = None;
            let mut pending: Vec<Request> = Vec::new();
            for input in inputs {
                match input {
                    Input::Bytes(b) => { let n = client.handle_input(now, &b); prop_assert!(n <= b.len()); }
                    Input::Reply(code, multi) => {
                        let text = if multi { format!("{code}-a\r\n x\r\n{code} b\r\n") } else { format!("{code} t\r\n") };
                        let _ = client.handle_input(now, text.as_bytes());
                    }
                    Input::Eof => client.handle_eof(now),
                    Input::Timeout(ms) => {
                        now += Duration::from_millis(u64::from(ms) * 100);
                        client.handle_timeout(now);
                        if let Some(d) = client.poll_timeout() {
                            prop_assert!(d > now, "handled deadline returned again");
                        }
                    }
                    Input::Submit(n) => submitted.push(client.submit(now, op(n))),
                    Input::Abort => { if let Some(op) = client.current_op() { let _ = client.abort(now, op); } }
                    Input::DataDone => {
                        // Every open request gets its natural answer.
                        while let Some(request) = pending.pop() {
                            let outcome = match request.kind {
                                RequestKind::ConnectData { .. } => Outcome::DataConnected,
                                RequestKind::Listen => Outcome::Listening("127.0.0.1:1".parse().unwrap()),
                                RequestKind::DriveData { payload: Payload::Listing { .. }, .. } => Outcome::ListingReceived {
                                    data: Ok(DataReport::default()),
                                    bytes: b"x\r\n".to_vec(),
                                },
                                _ => Outcome::DataFinished(Ok(DataReport::default())),
                            };
                            client.complete(now, request.id, outcome);
                        }
                    }
                }
                let mut sink = Vec::new();
                while client.poll_transmit(&mut sink) > 0 {}
                while let Some(request) = client.poll_request() { pending.push(request); }
                while let Some(e) = client.poll_event() {
                    if let Event::Completed { op, .. } = e { completed.push(op); }
                }
                last_deadline = client.poll_timeout().or(last_deadline);
            }
            // Every operation completes at most once.
            let mut sorted = completed.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), completed.len());
            prop_assert!(completed.iter().all(|c| submitted.contains(c)));
            let _ = last_deadline;
        }
    }
}

#[test]
fn ccc_returns_the_control_connection_to_plaintext_after_close_notify() {
    let pki = TestPki::new();
    let mut config = ClientSessionConfig::new(pki.client_config(TLS13));
    config.clear_command_channel = true;
    let mut s = Script::tls(&pki, TLS13, config);
    s.send("220 hi\r\n");
    assert_eq!(s.line(), "AUTH TLS");
    s.accept_auth();
    let op = s
        .client
        .submit(s.now, Operation::Login(Credentials::new("u", "p")));
    s.expect("USER u", "230 ok");
    s.expect("PBSZ 0", "200 ok");
    s.expect("PROT P", "200 ok");
    assert_eq!(s.line(), "CCC");
    // 200, the server's close_notify and the next plaintext reply-to-be in one read: the plaintext must not
    // be swallowed by TLS.
    let mut server = s.tls.take().unwrap();
    server.write_plaintext(b"200 CCC ok\r\n");
    server.send_close_notify();
    let mut wire = Vec::new();
    server.write_tls_into(&mut wire);
    wire.extend_from_slice(b"211 No features\r\n");
    feed_all(&mut s.client, s.now, &wire);
    let mut out = Vec::new();
    while s.client.poll_transmit(&mut out) > 0 {}
    // The client's close_notify (a TLS record), then FEAT in the clear; the 211 after the server's
    // close_notify answered it.
    let clear = b"FEAT\r\nTYPE I\r\n";
    assert!(out.ends_with(clear), "{:?}", String::from_utf8_lossy(&out));
    server.read_tls(&out[..out.len() - clear.len()]).unwrap();
    assert_eq!(server.read_state(), crate::tls::ReadState::CleanClose);
    s.send("200 ok\r\n");
    assert!(matches!(s.completed(), (id, Ok(Output::LoggedIn(_))) if id == op));
    assert!(s.client.tls_info().is_none());
    assert!(s.client.data_protected());
}

/// Regression (found by the Pair harness): around `CCC` TLS records are fed one at a time; a record split across
/// reads must be collected, not refused (taking 0 bytes stalled a frontend feeding what it had, byte by byte).
#[test]
fn ccc_records_split_across_reads_are_collected() {
    let pki = TestPki::new();
    let mut config = ClientSessionConfig::new(pki.client_config(TLS13));
    config.clear_command_channel = true;
    let mut s = Script::tls(&pki, TLS13, config);
    s.send("220 hi\r\n");
    assert_eq!(s.line(), "AUTH TLS");
    s.accept_auth();
    let op = s
        .client
        .submit(s.now, Operation::Login(Credentials::new("u", "p")));
    s.expect("USER u", "230 ok");
    s.expect("PBSZ 0", "200 ok");
    s.expect("PROT P", "200 ok");
    assert_eq!(s.line(), "CCC");
    let mut server = s.tls.take().unwrap();
    server.write_plaintext(b"200 CCC ok\r\n");
    server.send_close_notify();
    let mut wire = Vec::new();
    server.write_tls_into(&mut wire);
    wire.extend_from_slice(b"211 No features\r\n");
    for byte in &wire {
        assert_eq!(s.client.handle_input(s.now, std::slice::from_ref(byte)), 1);
    }
    let mut out = Vec::new();
    while s.client.poll_transmit(&mut out) > 0 {}
    let clear = b"FEAT\r\nTYPE I\r\n";
    assert!(out.ends_with(clear), "{:?}", String::from_utf8_lossy(&out));
    s.send("200 ok\r\n");
    assert!(matches!(s.completed(), (id, Ok(Output::LoggedIn(_))) if id == op));
    assert!(s.client.tls_info().is_none());
}

#[test]
fn site_to_site_operations_open_no_data_connection() {
    let pki = TestPki::new();
    let config = ClientSessionConfig::new(pki.client_config(TLS13));
    let mut s = Script::tls(&pki, TLS13, config);
    s.connect_and_login(FEAT_PLAIN);

    let sscn = s.client.submit(s.now, Operation::SiteToSiteTlsClient(true));
    s.expect("SSCN ON", "200 Client method");
    assert!(
        matches!(s.completed(), (id, Ok(Output::Done(r))) if id == sscn && r.code.get() == 200)
    );

    // The 227 address is reported as sent, not rewritten to the control peer: it goes to the other server.
    let pasv = s
        .client
        .submit(s.now, Operation::SiteToSitePassive { tls_client: true });
    s.expect("CPSV", "227 Entering Passive Mode (198,51,100,4,200,10)");
    let (id, result) = s.completed();
    assert_eq!(id, pasv);
    assert_eq!(
        result.unwrap(),
        Output::PassiveAddress("198.51.100.4:51210".parse().unwrap())
    );

    let port = s.client.submit(
        s.now,
        Operation::SiteToSitePort("198.51.100.4:51210".parse().unwrap()),
    );
    s.expect("PORT 198,51,100,4,200,10", "200 PORT command successful");
    assert!(matches!(s.completed(), (id, Ok(_)) if id == port));

    // The transfer: 150 hands out nothing, and no reply deadline runs while the servers copy.
    let retr = s.client.submit(
        s.now,
        Operation::SiteToSiteTransfer(SiteToSiteCommand::Retrieve("big.iso".into())),
    );
    s.expect("RETR big.iso", "150 Opening BINARY mode data connection");
    assert!(s.requests.is_empty(), "{:?}", s.requests);
    assert_eq!(s.client.poll_timeout(), None);
    s.now += Duration::from_secs(3600);
    s.send("226 Transfer complete (1234 bytes)\r\n");
    assert!(
        matches!(s.completed(), (id, Ok(Output::Done(r))) if id == retr && r.code.get() == 226)
    );

    // A refused transfer and a refused passive request are operation errors; the session goes on.
    let stor = s.client.submit(
        s.now,
        Operation::SiteToSiteTransfer(SiteToSiteCommand::Store("x".into())),
    );
    s.expect("STOR x", "425 Can't open data connection");
    assert!(matches!(s.completed(), (id, Err(OpError::Refused(_))) if id == stor));
    let cpsv = s
        .client
        .submit(s.now, Operation::SiteToSitePassive { tls_client: true });
    s.expect("CPSV", "500 Unknown command");
    assert!(matches!(s.completed(), (id, Err(OpError::Refused(_))) if id == cpsv));

    // PROT C for a clear site-to-site transfer, and back.
    let clear = s.client.submit(s.now, Operation::SetDataProtection(false));
    s.expect("PROT C", "200 Protection set to Clear");
    assert!(matches!(s.completed(), (id, Ok(_)) if id == clear));
    assert!(!s.client.data_protected());
    let private = s.client.submit(s.now, Operation::SetDataProtection(true));
    s.expect("PROT P", "200 Protection set to Private");
    assert!(matches!(s.completed(), (id, Ok(_)) if id == private));
    assert!(s.client.data_protected());
    assert!(s.client.error().is_none());
}

/// A logged-in TLS session whose server announces `features` (FEAT lines without the 211 frame).
fn tls_session_with(features: &str) -> Script {
    let pki = TestPki::new();
    let mut s = Script::tls(
        &pki,
        TLS13,
        ClientSessionConfig::new(pki.client_config(TLS13)),
    );
    s.connect_and_login(&format!("211-Features:\n{features}\n211 End"));
    s
}

#[test]
fn the_site_to_site_plan_is_decided_from_both_sessions() {
    let sscn = tls_session_with(" SIZE\n SSCN");
    let cpsv = tls_session_with(" CPSV");
    let neither = tls_session_with(" SIZE");
    let plain = plain_session(FEAT_PLAIN);
    let require = SiteToSiteOptions::default();

    // SSCN on the source first: it listens (PASV) and is the TLS client; PROT P on both, SSCN OFF after.
    let plan = SiteToSitePlan::new(&sscn.client, &neither.client, require).unwrap();
    assert!(plan.is_private());
    assert_eq!(
        plan.tls_client(),
        Some((Side::Source, TlsClientMethod::Sscn))
    );
    assert_eq!(
        plan.setup(),
        [
            (Side::Source, Operation::SetDataProtection(true)),
            (Side::Destination, Operation::SetDataProtection(true)),
            (Side::Source, Operation::SiteToSiteTlsClient(true)),
        ]
    );
    assert_eq!(
        plan.passive(),
        Operation::SiteToSitePassive { tls_client: false }
    );
    assert_eq!(
        plan.teardown(),
        Some((Side::Source, Operation::SiteToSiteTlsClient(false)))
    );
    assert_eq!(plan.source_size("f"), Some(Operation::Size("f".into())));
    assert_eq!(
        plan.destination_size("g"),
        Some(Operation::Size("g".into()))
    );

    // CPSV on the destination: it listens with CPSV; the source gets PORT to its address (0.0.0.0 means the
    // destination's control peer); no SSCN to undo.
    let plan = SiteToSitePlan::new(&neither.client, &cpsv.client, require).unwrap();
    assert_eq!(
        plan.tls_client(),
        Some((Side::Destination, TlsClientMethod::Cpsv))
    );
    assert_eq!(plan.passive_side(), Side::Destination);
    assert_eq!(
        plan.passive(),
        Operation::SiteToSitePassive { tls_client: true }
    );
    assert_eq!(plan.teardown(), None);
    assert_eq!(plan.destination_size("g"), None);
    let port = plan
        .port(
            Output::PassiveAddress("0.0.0.0:2121".parse().unwrap()),
            &cpsv.client,
        )
        .unwrap();
    assert_eq!(
        port,
        Operation::SiteToSitePort(SocketAddr::new(peer().ip(), 2121))
    );
    assert!(plan.port(Output::Size(1), &cpsv.client).is_err());

    // Options narrow the choice; what cannot be met is refused, or clear when the caller allows it.
    let forced = require.method(TlsClientMethod::Cpsv);
    assert_eq!(
        SiteToSitePlan::new(&sscn.client, &neither.client, forced),
        Err(SiteToSiteError::NoTlsClientMethod)
    );
    assert_eq!(
        SiteToSitePlan::new(&sscn.client, &plain.client, require),
        Err(SiteToSiteError::PlainControl)
    );
    let clear = SiteToSitePlan::new(
        &sscn.client,
        &plain.client,
        SiteToSiteOptions::new(SiteToSiteProtection::AllowClear),
    )
    .unwrap();
    assert!(!clear.is_private() && clear.tls_client().is_none());
    // PROT only where the control connection is TLS.
    assert_eq!(
        clear.setup(),
        [(Side::Source, Operation::SetDataProtection(false))]
    );
}

#[test]
fn a_missing_greeting_is_a_greeting_timeout() {
    let mut s = Script::plain();
    s.now += Duration::from_secs(3600);
    s.client.handle_timeout(s.now);
    let error = s.client.error().cloned().unwrap();
    assert!(error.is_greeting_timeout(), "{error}");
    assert!(!SessionError::Timeout("PWD").is_greeting_timeout());
}
