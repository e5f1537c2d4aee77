//! Hardening (issue 7): attacks refused and faults survived, against the real server on loopback.
//!
//! Every test here starts its own server (library or, for the crash test, the `ftps-server` binary) on
//! 127.0.0.1, speaks raw FTP (and TLS through rustls) where the exact bytes matter, and bounds every wait: reads
//! have timeouts and every "eventually" is a poll with a deadline. "Another IP" is real: loopback owns all of
//! 127.0.0.0/8, so a socket bound to 127.0.0.2 before connecting is a different peer to the server.
//! The README's "Security" section maps each guarantee to the test here (or elsewhere) that proves it.

#![allow(clippy::unwrap_used)] // test set-up: a failure is the test failing

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use ftps_proto::server::{ResumptionScope, SessionConfig};
use ftps_server_smol::auth::{
    AuthOutcome, AuthenticatedUser, Authenticator, LoginAttempt, LoginThrottle, Permission,
    UserHome,
};
use ftps_server_smol::server::{Limits, ListenerOptions, Server, ServerStats};
use ftps_server_smol::storage::{
    BoxFuture, DirEntry, LocalStorage, MemoryStorage, Metadata, ReadHandle, Storage, StorageError,
    Upload, WriteMode, RESERVED_NAME,
};
use ftps_testkit::{peer, TempDir, TestCert};
use rustls::pki_types::ServerName;

#[path = "hardening/keys.rs"]
mod keys;

const USER: &str = "alice";
/// A second user, for the tests of another user's TLS session.
const OTHER_USER: &str = "bob";
/// Unique enough to search the captured log for it.
const PASSWORD: &str = "pw-hardening-7f3a9c61";
/// Every wait in this file is bounded by this (or less).
const WAIT: Duration = Duration::from_secs(10);
const SECOND_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

// ---------------------------------------------------------------------------------------------------------------
// Log capture: one subscriber for the whole test binary, everything down to TRACE, into memory.

static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        LOG.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .try_init();
    });
}

fn captured_log() -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()).into_owned()
}

/// Where the captured log ends now: [`captured_log_since`] gives what a test logged from here on.
fn log_mark() -> usize {
    LOG.lock().unwrap().len()
}

/// The captured log from `mark` on. Client ports are reused across the tests of this binary, so a test that looks
/// for its session's peer address reads only what was logged since it started.
fn captured_log_since(mark: usize) -> String {
    String::from_utf8_lossy(&LOG.lock().unwrap()[mark..]).into_owned()
}

// ---------------------------------------------------------------------------------------------------------------
// The server under test.

/// Alice (and, for the tests of another user's TLS session, bob), with one fixed password; counts how often
/// the authenticator was asked.
struct OneUser {
    attempts: Arc<AtomicUsize>,
}

impl Authenticator for OneUser {
    fn authenticate(&self, attempt: LoginAttempt) -> BoxFuture<'_, AuthOutcome> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if (attempt.user == USER || attempt.user == OTHER_USER) && attempt.password == PASSWORD
            {
                AuthOutcome::Accepted(AuthenticatedUser {
                    name: attempt.user.clone(),
                    home: UserHome::Virtual("/".into()),
                    permission: Permission::ReadWrite,
                    require_tls: None,
                    site_to_site: None,
                })
            } else {
                AuthOutcome::Denied
            }
        })
    }
}

/// What a test changes from the defaults.
struct Setup {
    /// TLS offered (and, with the default `SessionConfig`, required).
    tls: bool,
    session: SessionConfig,
    limits: Limits,
    throttle: Option<Arc<LoginThrottle>>,
    /// Default: `LocalStorage` on `TestServer::root`.
    storage: Option<Arc<dyn Storage>>,
    /// Mount a 1 MiB tmpfs on the root first (root only).
    tmpfs_root: bool,
}

impl Setup {
    /// The default policy: TLS required on control and data, data resumption required.
    fn tls() -> Self {
        Self {
            tls: true,
            session: SessionConfig::default(),
            limits: Limits::default(),
            throttle: None,
            storage: None,
            tmpfs_root: false,
        }
    }

    /// Plain FTP: for guarantees that do not depend on TLS, tested with exact bytes.
    fn plain() -> Self {
        Self {
            tls: false,
            session: SessionConfig {
                require_tls_control: false,
                require_tls_data: false,
                ..SessionConfig::default()
            },
            ..Self::tls()
        }
    }
}

struct TestServer {
    addr: SocketAddr,
    /// Parent of `root`: holds files that must stay out of reach.
    base: TempDir,
    root: PathBuf,
    server: Server,
    cert: TestCert,
    attempts: Arc<AtomicUsize>,
    tmpfs: bool,
}

impl TestServer {
    fn start(setup: Setup) -> Self {
        capture_logs();
        let base = TempDir::new("hardening");
        let root = base.path().join("root");
        std::fs::create_dir(&root).unwrap();
        if setup.tmpfs_root {
            run_ok(
                Command::new("mount")
                    .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
                    .arg(&root),
            );
        }
        let cert = TestCert::generate();
        let attempts = Arc::new(AtomicUsize::new(0));
        let storage = setup
            .storage
            .unwrap_or_else(|| Arc::new(LocalStorage::open(&root).unwrap()));
        let mut builder = Server::builder()
            .storage(storage)
            .authenticator(Arc::new(OneUser {
                attempts: Arc::clone(&attempts),
            }))
            .session_config(setup.session)
            .limits(setup.limits);
        if setup.tls {
            builder = builder.tls(server_tls(&cert));
        }
        if let Some(throttle) = setup.throttle {
            builder = builder.login_throttle(throttle);
        }
        let server = builder.build();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = server.clone();
        std::thread::spawn(move || {
            smol::block_on(async move {
                let listener = smol::net::TcpListener::try_from(listener).unwrap();
                serving.serve(listener, ListenerOptions::default()).await
            })
        });
        Self {
            addr,
            base,
            root,
            server,
            cert,
            attempts,
            tmpfs: setup.tmpfs_root,
        }
    }

    fn stats(&self) -> ServerStats {
        self.server.stats()
    }

    /// Waits until the server holds no session and no passive listener.
    fn assert_released(&self) {
        let idle = ServerStats::default();
        let released = wait_until(WAIT, || self.stats() == idle);
        assert!(released, "still held after {WAIT:?}: {:?}", self.stats());
    }

    fn client_tls(&self) -> Arc<rustls::ClientConfig> {
        client_tls(&self.cert)
    }

    /// Upload temporary files left in the root.
    fn temp_files(&self) -> Vec<String> {
        temp_files(&self.root)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.shutdown();
        if self.tmpfs {
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_tls(cert: &TestCert) -> Arc<rustls::ServerConfig> {
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_der.clone().into());
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert_der.clone().into()], key)
            .unwrap(),
    )
}

/// A client config trusting `cert`. Connections made with the same `Arc` share one resumption store, like one
/// FTPS client session; a second call gives a stranger.
fn client_tls(cert: &TestCert) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert_der.clone().into()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The upload temporary files of the storage root `dir` (in its reserved folder).
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir.join(RESERVED_NAME))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn run_ok(command: &mut Command) {
    let status = command.status().unwrap();
    assert!(status.success(), "{command:?}: {status}");
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// A raw FTP client: exact bytes on the control connection, TLS through rustls after AUTH TLS.

enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// The server side, for the fake server below.
    ServerTls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
            Self::ServerTls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
            Self::ServerTls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
            Self::ServerTls(s) => s.flush(),
        }
    }
}

struct Control {
    conn: Conn,
    tcp: TcpStream,
}

/// A TCP connection from `source` (port chosen by the OS), with 5 s read and write timeouts.
fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
    socket.connect_timeout(&addr.into(), WAIT).unwrap();
    with_timeouts(socket.into())
}

fn with_timeouts(tcp: TcpStream) -> TcpStream {
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = tcp.set_nodelay(true);
    tcp
}

impl Control {
    fn connect(addr: SocketAddr) -> Self {
        Self::over(with_timeouts(
            TcpStream::connect_timeout(&addr, WAIT).unwrap(),
        ))
    }

    fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> Self {
        Self::over(connect_from(source.into(), addr))
    }

    fn over(tcp: TcpStream) -> Self {
        Self {
            conn: Conn::Plain(tcp.try_clone().unwrap()),
            tcp,
        }
    }

    /// One line without its line end; `None` at EOF or on an error (a timeout included).
    fn line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match self.conn.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break,
                Ok(1) => line.push(byte[0]),
                _ => return None,
            }
        }
        let text = String::from_utf8_lossy(&line);
        Some(text.trim_end_matches('\r').to_owned())
    }

    /// The final line of the next reply (`"NNN text"`); `""` when the connection ended first.
    fn reply(&mut self) -> String {
        while let Some(line) = self.line() {
            let b = line.as_bytes();
            if b.len() >= 4 && b[..3].iter().all(u8::is_ascii_digit) && b[3] == b' ' {
                return line;
            }
        }
        String::new()
    }

    fn send(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).unwrap();
        self.conn.flush().unwrap();
    }

    fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    fn login(&mut self) {
        self.login_as(USER);
    }

    fn login_as(&mut self, user: &str) {
        assert!(self.cmd(&format!("USER {user}")).starts_with("331"));
        let reply = self.cmd(&format!("PASS {PASSWORD}"));
        assert!(reply.starts_with("230"), "{reply}");
    }

    fn auth_tls(&mut self, config: &Arc<rustls::ClientConfig>) {
        let reply = self.cmd("AUTH TLS");
        assert!(reply.starts_with("234"), "{reply}");
        let conn = rustls::ClientConnection::new(Arc::clone(config), server_name()).unwrap();
        self.conn = Conn::Tls(Box::new(rustls::StreamOwned::new(
            conn,
            self.tcp.try_clone().unwrap(),
        )));
    }

    /// AUTH TLS, login, PBSZ 0, PROT P, TYPE I.
    fn tls_login(&mut self, config: &Arc<rustls::ClientConfig>) {
        self.tls_login_as(config, USER);
    }

    fn tls_login_as(&mut self, config: &Arc<rustls::ClientConfig>, user: &str) {
        assert!(self.reply().starts_with("220"));
        self.auth_tls(config);
        self.login_as(user);
        assert!(self.cmd("PBSZ 0").starts_with("200"));
        assert!(self.cmd("PROT P").starts_with("200"));
        assert!(self.cmd("TYPE I").starts_with("200"));
    }

    fn plain_login(&mut self) {
        assert!(self.reply().starts_with("220"));
        self.login();
        assert!(self.cmd("TYPE I").starts_with("200"));
    }

    /// EPSV: the data address (the control peer's IP, the announced port).
    fn epsv(&mut self) -> SocketAddr {
        let reply = self.cmd("EPSV");
        let port = reply
            .split("|||")
            .nth(1)
            .and_then(|rest| rest.split('|').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("not a 229 reply: {reply}"));
        SocketAddr::new(self.tcp.peer_addr().unwrap().ip(), port)
    }

    /// Whether the server closes this connection within `timeout` (reading and discarding until EOF).
    fn closed_within(&mut self, timeout: Duration) -> bool {
        let _ = self.tcp.set_read_timeout(Some(timeout));
        let deadline = Instant::now() + timeout;
        let mut sink = [0u8; 4096];
        while Instant::now() < deadline {
            match self.tcp.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
        false
    }

    /// Closes the TCP connection without a goodbye (no QUIT, no close_notify).
    fn vanish(self) {
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").unwrap()
}

/// A TLS data connection, handshake done (or failed: the error is returned with the stream).
fn tls_data(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> (
    rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    io::Result<()>,
) {
    let tcp = with_timeouts(TcpStream::connect_timeout(&addr, WAIT).unwrap());
    let conn = rustls::ClientConnection::new(Arc::clone(config), server_name()).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    let mut handshake = Ok(());
    while stream.conn.is_handshaking() && handshake.is_ok() {
        handshake = stream.conn.complete_io(&mut stream.sock).map(|_| ());
    }
    (stream, handshake)
}

/// Resident memory of this process (server and clients together), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

// ===============================================================================================================
// Attacks refused.

/// RFC 2577 section 3: PORT/EPRT to a third host or to a privileged port is refused before any connection.
#[test]
fn bounce_port_to_another_address_or_privileged_port_is_refused_without_connecting() {
    let server = TestServer::start(Setup::plain());
    // A would-be victim on another loopback address: it must never see a connection.
    let victim = std::net::TcpListener::bind((SECOND_IP, 0)).unwrap();
    victim.set_nonblocking(true).unwrap();
    let port = victim.local_addr().unwrap().port();
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let (hi, lo) = (port >> 8, port & 0xff);
    assert!(ctl
        .cmd(&format!("PORT 127,0,0,2,{hi},{lo}"))
        .starts_with("504"));
    assert!(ctl
        .cmd(&format!("EPRT |1|127.0.0.2|{port}|"))
        .starts_with("504"));
    // The control peer itself, but a privileged port (an SMTP or FTP server on the same host).
    assert!(ctl.cmd("PORT 127,0,0,1,0,25").starts_with("504"));
    assert!(ctl.cmd("EPRT |1|127.0.0.1|21|").starts_with("504"));
    // A transfer now has no data address to go to.
    let reply = ctl.cmd("LIST");
    assert!(
        !reply.starts_with('1') && !reply.starts_with('2'),
        "{reply}"
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        victim.accept().map(|_| ()).unwrap_err().kind(),
        io::ErrorKind::WouldBlock,
        "the server connected to the bounce target"
    );
}

/// RFC 2577 section 3 (PASV hijack): a foreign IP's connection to the passive port is dropped, and the
/// listener keeps waiting for the control peer, who then gets the listing.
#[test]
fn pasv_connection_from_another_ip_is_dropped_and_the_client_still_connects() {
    let server = TestServer::start(Setup::plain());
    std::fs::write(server.root.join("visible.txt"), b"x").unwrap();
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let data = ctl.epsv();
    ctl.send(b"LIST\r\n");
    let mut thief = connect_from(SECOND_IP.into(), data);
    let mut stolen = Vec::new();
    let started = Instant::now();
    let _ = thief.read_to_end(&mut stolen); // EOF or reset, not the 5 s read timeout
    assert!(stolen.is_empty(), "a foreign peer got data: {stolen:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the foreign connection was not closed"
    );
    let mut own = with_timeouts(TcpStream::connect_timeout(&data, WAIT).unwrap());
    let mut listing = String::new();
    own.read_to_string(&mut listing).unwrap();
    drop(own); // a client closes its end after the EOF; the server waits for it before 226
    assert!(listing.contains("visible.txt"), "{listing}");
    assert!(ctl.reply().starts_with('1')); // 125 or 150
    let reply = ctl.reply();
    assert!(reply.starts_with("226"), "{reply}");
}

/// With only foreign connections, the transfer fails at the accept timeout (425), nothing is sent.
#[test]
fn pasv_with_only_foreign_connections_ends_in_425_at_the_accept_timeout() {
    let mut setup = Setup::plain();
    setup.session.data_accept_timeout = Duration::from_secs(1);
    let server = TestServer::start(setup);
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let data = ctl.epsv();
    ctl.send(b"LIST\r\n");
    let started = Instant::now();
    for _ in 0..3 {
        let mut thief = connect_from(SECOND_IP.into(), data);
        let mut stolen = Vec::new();
        let _ = thief.read_to_end(&mut stolen);
        assert!(stolen.is_empty());
    }
    let reply = ctl.reply();
    assert!(reply.starts_with("425"), "{reply}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Under the default policy a data connection whose TLS session is not a resumption of this control session
/// (a thief who knows the port and comes from the right IP, e.g. behind the same NAT) is refused.
#[test]
fn tls_data_connection_not_resuming_this_session_is_refused() {
    let server = TestServer::start(Setup::tls());
    let config = server.client_tls();
    let mut ctl = Control::connect(server.addr);
    ctl.tls_login(&config);
    // The thief: right IP, right port, its own TLS session.
    let data = ctl.epsv();
    ctl.send(b"LIST\r\n");
    let stranger = server.client_tls();
    let (mut stream, _) = tls_data(data, &stranger);
    let mut stolen = Vec::new();
    let _ = stream.read_to_end(&mut stolen);
    assert!(stolen.is_empty(), "a foreign TLS session got data");
    let mut reply = ctl.reply();
    if reply.starts_with('1') {
        reply = ctl.reply();
    }
    assert!(reply.starts_with("522"), "{reply}");
    // The owner, resuming the control session, is served: the refusal above was about the session.
    let data = ctl.epsv();
    ctl.send(b"LIST\r\n");
    let (mut stream, handshake) = tls_data(data, &config);
    handshake.unwrap();
    let mut listing = Vec::new();
    stream.read_to_end(&mut listing).unwrap();
    stream.conn.send_close_notify(); // both ends send close_notify (DESIGN.md)
    stream.flush().unwrap();
    drop(stream);
    assert!(ctl.reply().starts_with('1')); // 125 or 150
    let reply = ctl.reply();
    assert!(reply.starts_with("226"), "{reply}");
}

/// A TLS 1.2-only client config trusting the test certificate (Go's TLS 1.2 resumes with tickets only).
fn client_tls12(cert: &TestCert) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert_der.clone().into()).unwrap();
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// `LIST` on `ctl` over a data connection whose TLS client uses `config` (so it offers the ticket that config's
/// store holds): the listing and the final reply, or no data and the refusal.
fn list_with(ctl: &mut Control, config: &Arc<rustls::ClientConfig>) -> (Vec<u8>, String) {
    command_with(ctl, config, "LIST")
}

/// `command` (a listing or `RETR`) on `ctl` over a data connection whose TLS client uses `config`: the bytes
/// received and the final reply, or no data and the refusal.
fn command_with(
    ctl: &mut Control,
    config: &Arc<rustls::ClientConfig>,
    command: &str,
) -> (Vec<u8>, String) {
    let data = ctl.epsv();
    ctl.send(format!("{command}\r\n").as_bytes());
    let (mut stream, handshake) = tls_data(data, config);
    let mut received = Vec::new();
    if handshake.is_ok() {
        let _ = stream.read_to_end(&mut received);
        stream.conn.send_close_notify();
        let _ = stream.flush();
    }
    drop(stream);
    let mut reply = ctl.reply();
    if reply.starts_with('1') {
        reply = ctl.reply();
    }
    (received, reply)
}

/// A data connection offering a ticket of *another user's* control session, from the same address, is refused
/// (522) and gets nothing: tickets vouch only for their user's logins.
#[test]
fn a_data_connection_with_another_users_ticket_is_refused() {
    let server = TestServer::start(Setup::tls());
    std::fs::write(server.root.join("secret.txt"), b"alice's").unwrap();
    let (alice_tls, bob_tls) = (server.client_tls(), server.client_tls());
    let mut alice = Control::connect(server.addr);
    alice.tls_login(&alice_tls);
    let mut bob = Control::connect(server.addr);
    bob.tls_login_as(&bob_tls, OTHER_USER);
    assert!(bob.cmd("NOOP").starts_with("200")); // bob's client has read its tickets
    let (stolen, reply) = list_with(&mut alice, &bob_tls);
    assert!(stolen.is_empty(), "bob's ticket got alice's listing");
    assert!(
        reply.starts_with("522") && reply.contains("resume"),
        "{reply}"
    );
    let (listing, reply) = list_with(&mut alice, &alice_tls);
    assert!(String::from_utf8_lossy(&listing).contains("secret.txt"));
    assert!(reply.starts_with("226"), "{reply}");
}

/// Go (rclone) keeps one ticket cache for all its control connections: a data connection offering a ticket of
/// another control session of the *same user and address* is served under the default scope, TLS 1.2 (tickets
/// only) and 1.3; `ResumptionScope::Session` refuses it.
#[test]
fn another_session_of_the_same_user_may_lend_its_ticket_unless_the_scope_is_one_session() {
    for scope in [ResumptionScope::User, ResumptionScope::Session] {
        let server = TestServer::start(Setup {
            session: SessionConfig {
                data_resumption_scope: scope,
                ..SessionConfig::default()
            },
            ..Setup::tls()
        });
        for tls12 in [false, true] {
            let config = |server: &TestServer| {
                if tls12 {
                    client_tls12(&server.cert)
                } else {
                    server.client_tls()
                }
            };
            let (one_tls, two_tls) = (config(&server), config(&server));
            let mut one = Control::connect(server.addr);
            one.tls_login(&one_tls);
            let mut two = Control::connect(server.addr);
            two.tls_login(&two_tls);
            assert!(two.cmd("NOOP").starts_with("200"));
            let (_, reply) = list_with(&mut one, &two_tls);
            let expected = if scope == ResumptionScope::User {
                "226"
            } else {
                "522"
            };
            assert!(
                reply.starts_with(expected),
                "{scope:?}, TLS 1.2 only: {tls12}: {reply}"
            );
        }
    }
}

/// A new control connection's ticket reaches a shared client cache before that connection has logged in: a
/// data connection offering it waits (no answer to its ClientHello) until the login is decided, then is served
/// when it was the same user and refused (522) when it was another.
#[test]
fn a_ticket_of_a_session_still_logging_in_waits_for_its_login() {
    let server = TestServer::start(Setup::tls());
    std::fs::write(server.root.join("listed.txt"), b"x").unwrap();
    for (login, expected) in [(USER, "226"), (OTHER_USER, "522")] {
        let (alice_tls, new_tls) = (server.client_tls(), server.client_tls());
        let mut alice = Control::connect(server.addr);
        alice.tls_login(&alice_tls);
        // The new connection: TLS up (its tickets read with the reply to FEAT), not logged in.
        let mut newcomer = Control::connect(server.addr);
        assert!(newcomer.reply().starts_with("220"));
        newcomer.auth_tls(&new_tls);
        assert!(newcomer.cmd("FEAT").starts_with("211"));
        let data = alice.epsv();
        alice.send(b"LIST\r\n");
        let handshake = std::thread::spawn(move || {
            let (mut stream, handshake) = tls_data(data, &new_tls);
            let mut listing = Vec::new();
            if handshake.is_ok() {
                let _ = stream.read_to_end(&mut listing);
                stream.conn.send_close_notify();
                let _ = stream.flush();
            }
            listing
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(!handshake.is_finished(), "answered before the login");
        newcomer.login_as(login);
        let listing = handshake.join().unwrap();
        let mut reply = alice.reply();
        if reply.starts_with('1') {
            reply = alice.reply();
        }
        assert!(reply.starts_with(expected), "{login}: {reply}");
        assert_eq!(listing.is_empty(), expected == "522", "{login}");
    }
}

/// CVE-2011-0411 class: commands pipelined after AUTH TLS in the same packet are never executed.
#[test]
fn commands_pipelined_after_auth_tls_are_never_executed() {
    let server = TestServer::start(Setup::tls());
    let mut ctl = Control::connect(server.addr);
    assert!(ctl.reply().starts_with("220"));
    ctl.send(format!("AUTH TLS\r\nUSER {USER}\r\nPASS {PASSWORD}\r\n").as_bytes());
    assert!(ctl.line().unwrap().starts_with("234"));
    // What follows is TLS (an alert: the "ClientHello" was plain text), never an FTP reply.
    let mut rest = Vec::new();
    let _ = ctl.tcp.read_to_end(&mut rest);
    let rest = String::from_utf8_lossy(&rest);
    assert!(!rest.contains("331") && !rest.contains("230"), "{rest}");
    assert_eq!(server.attempts.load(Ordering::SeqCst), 0);
    server.assert_released();
}

/// RFC 4217 section 4 / policy: no USER or PASS before TLS when TLS is required; the password is never checked.
#[test]
fn user_and_pass_before_tls_are_refused() {
    let server = TestServer::start(Setup::tls());
    let mut ctl = Control::connect(server.addr);
    assert!(ctl.reply().starts_with("220"));
    assert!(ctl.cmd(&format!("USER {USER}")).starts_with("530"));
    assert!(ctl.cmd(&format!("PASS {PASSWORD}")).starts_with("530"));
    assert_eq!(server.attempts.load(Ordering::SeqCst), 0);
}

/// Path escapes: `..`, absolute paths, backslashes, NUL, overlong components and symlinks out of the root all
/// fail, and nothing outside the root is read, listed, created, renamed or deleted.
#[test]
fn paths_cannot_escape_the_root() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start(Setup::plain());
    let outside = server.base.path();
    std::fs::write(outside.join("secret"), b"SECRET").unwrap();
    std::fs::create_dir(outside.join("secret-dir")).unwrap();
    symlink(outside.join("secret"), server.root.join("abs-link")).unwrap();
    symlink("../secret", server.root.join("rel-link")).unwrap();
    symlink("..", server.root.join("up")).unwrap();
    symlink(outside.join("secret-dir"), server.root.join("dir-link")).unwrap();
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let long = "x".repeat(300);
    for path in [
        "../secret",
        "/../secret",
        "../../../../../../etc/passwd",
        "..\\secret",
        "\\..\\secret",
        "abs-link",
        "rel-link",
        "up/secret",
        "dir-link/../secret",
        long.as_str(),
    ] {
        let reply = ctl.cmd(&format!("SIZE {path}"));
        assert!(!reply.starts_with('2'), "SIZE {path}: {reply}");
        let reply = ctl.cmd(&format!("MKD {path}-new"));
        assert!(!reply.starts_with('2') || !outside.join("secret-new").exists());
    }
    // NUL inside a path (RFC 959 paths are text; the codec refuses it).
    ctl.send(b"SIZE ../se\0cret\r\n");
    assert!(!ctl.reply().starts_with('2'));
    // Changing into an escaping link, then using relative names, stays inside.
    let reply = ctl.cmd("CWD up");
    assert!(!reply.starts_with('2') || !ctl.cmd("SIZE secret").starts_with('2'));
    let reply = ctl.cmd("CWD dir-link");
    assert!(!reply.starts_with('2') || !ctl.cmd("MKD planted").starts_with('2'));
    ctl.cmd("CWD /");
    // Mutations through the links.
    assert!(!ctl.cmd("DELE rel-link/../secret").starts_with('2'));
    assert!(!ctl.cmd("RMD ../secret-dir").starts_with('2'));
    if ctl.cmd("RNFR ../secret").starts_with('3') {
        assert!(!ctl.cmd("RNTO stolen").starts_with('2'));
    }
    assert!(!ctl.cmd("MKD dir-link/planted").starts_with('2'));
    assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"SECRET");
    assert!(!outside.join("secret-dir/planted").exists());
    assert!(!outside.join("secret-new").exists());
    assert!(!server.root.join("stolen").exists());
    // Opening through a link: the data connection carries nothing from outside.
    for path in ["abs-link", "rel-link", "up/secret"] {
        ctl.epsv();
        ctl.send(format!("RETR {path}\r\n").as_bytes());
        let reply = ctl.reply();
        assert!(!reply.starts_with('1'), "RETR {path}: {reply}");
    }
}

/// Check/use races: while a directory in the root is swapped again and again with a symlink to a directory
/// outside, SIZE and RETR of a file in it never reach the outside file (every open is relative to the root
/// directory handle, cap-std `openat` beneath the root, so there is no separate check to race).
#[test]
fn symlink_swap_races_cannot_escape_the_root() {
    use std::os::unix::fs::symlink;
    let server = TestServer::start(Setup::plain());
    let outside = server.base.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("f.txt"), b"OUTSIDE!").unwrap(); // 8 bytes
    std::fs::create_dir(server.root.join("d")).unwrap();
    std::fs::write(server.root.join("d/f.txt"), b"inside").unwrap(); // 6 bytes
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (root, outside, stop) = (server.root.clone(), outside.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) {
                std::fs::rename(root.join("d"), root.join("d.real")).unwrap();
                symlink(&outside, root.join("d")).unwrap();
                std::fs::remove_file(root.join("d")).unwrap();
                std::fs::rename(root.join("d.real"), root.join("d")).unwrap();
                swaps += 1;
            }
            swaps
        })
    };
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let (mut inside, mut refused) = (0, 0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        let reply = ctl.cmd("SIZE d/f.txt");
        assert_ne!(reply, "213 8", "SIZE reached the outside file");
        if reply == "213 6" {
            inside += 1;
        } else {
            refused += 1;
        }
        let data = ctl.epsv();
        let mut stream = with_timeouts(TcpStream::connect_timeout(&data, WAIT).unwrap());
        let reply = ctl.cmd("RETR d/f.txt");
        if reply.starts_with('1') {
            let mut body = Vec::new();
            let _ = stream.read_to_end(&mut body);
            drop(stream);
            assert_ne!(body, b"OUTSIDE!", "RETR read the outside file");
            assert!(!ctl.reply().is_empty());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("symlink swap race: {swaps} swaps; SIZE inside {inside}, refused {refused}");
    assert!(swaps > 10, "the race did not run");
}

/// Brute force: failed logins are delayed, an IP is locked out after N failures in the window, and the
/// lockout does not hit another IP; the password appears in no log line.
#[test]
fn failed_logins_are_delayed_and_lock_out_only_the_attacking_ip() {
    let mut setup = Setup::plain();
    setup.session.failed_login_delay = Duration::from_millis(300);
    setup.session.max_failed_logins = 10;
    setup.throttle = Some(Arc::new(LoginThrottle::new(
        3,
        Duration::from_secs(60),
        Duration::from_secs(60),
        100,
    )));
    let server = TestServer::start(setup);
    let mut attacker = Control::connect_from(SECOND_IP, server.addr);
    assert!(attacker.reply().starts_with("220"));
    for n in 0..3 {
        assert!(attacker.cmd(&format!("USER {USER}")).starts_with("331"));
        let started = Instant::now();
        let reply = attacker.cmd(&format!("PASS wrong-guess-{n}"));
        assert!(reply.starts_with("530"), "{reply}");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "not delayed"
        );
    }
    // Locked: even the right password is refused without asking the authenticator.
    assert!(attacker.cmd(&format!("USER {USER}")).starts_with("331"));
    assert!(attacker.cmd(&format!("PASS {PASSWORD}")).starts_with("530"));
    assert_eq!(server.attempts.load(Ordering::SeqCst), 3);
    let mut again = Control::connect_from(SECOND_IP, server.addr);
    let reply = again.reply();
    assert!(reply.starts_with("421"), "{reply}");
    // Everyone else still logs in.
    let mut user = Control::connect(server.addr);
    user.plain_login();
    let log = captured_log();
    assert!(log.contains("locked out"), "the log capture works");
    assert!(log.contains("> PASS"), "the protocol log is captured");
    for secret in [PASSWORD, "wrong-guess-0", "wrong-guess-1", "wrong-guess-2"] {
        assert!(!log.contains(secret), "{secret} appears in the log");
    }
}

// Resource exhaustion.

/// A line without CRLF is discarded at the limit, answered once, and the session goes on.
#[test]
fn a_line_without_crlf_is_bounded() {
    let mut setup = Setup::plain();
    setup.session.max_line_len = 512;
    let server = TestServer::start(setup);
    let mut ctl = Control::connect(server.addr);
    assert!(ctl.reply().starts_with("220"));
    ctl.send(&vec![b'A'; 1 << 20]);
    ctl.send(b"\r\nNOOP\r\n");
    let reply = ctl.reply();
    assert!(reply.starts_with("500"), "{reply}");
    assert!(ctl.reply().starts_with("200"));
}

/// Slow loris before login (a byte every 200 ms) hits the login timeout; a silent logged-in client the idle
/// timeout. Both get 421 and a close.
#[test]
fn slow_and_idle_clients_are_timed_out() {
    let mut setup = Setup::plain();
    setup.session.login_timeout = Duration::from_secs(1);
    setup.session.idle_timeout = Duration::from_secs(1);
    let server = TestServer::start(setup);
    let mut loris = Control::connect(server.addr);
    assert!(loris.reply().starts_with("220"));
    let mut drip = loris.tcp.try_clone().unwrap();
    let started = Instant::now();
    let dripping = std::thread::spawn(move || {
        for byte in b"USER alice-with-a-very-long-name" {
            if drip.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    let reply = loris.reply();
    assert!(reply.starts_with("421"), "{reply}");
    assert!(loris.closed_within(Duration::from_secs(3)));
    assert!(started.elapsed() < Duration::from_secs(4));
    dripping.join().unwrap();

    let mut idle = Control::connect(server.addr);
    idle.plain_login();
    let started = Instant::now();
    assert!(idle.reply().starts_with("421"));
    assert!(idle.closed_within(Duration::from_secs(3)));
    assert!(started.elapsed() < Duration::from_secs(4));
    server.assert_released();
}

/// Many idle sessions from one IP: with a per-IP cap of 5, 20 connections give 5 sessions and 15 refusals.
#[test]
fn the_per_ip_cap_holds_against_many_connections() {
    let mut setup = Setup::plain();
    setup.limits.max_sessions_per_ip = 5;
    let server = TestServer::start(setup);
    let mut open = Vec::new();
    let (mut admitted, mut refused) = (0, 0);
    for _ in 0..20 {
        let mut ctl = Control::connect(server.addr);
        let reply = ctl.reply();
        if reply.starts_with("220") {
            admitted += 1;
            open.push(ctl);
        } else {
            assert!(reply.starts_with("421"), "{reply}");
            assert!(ctl.closed_within(Duration::from_secs(3)));
            refused += 1;
        }
    }
    assert_eq!((admitted, refused), (5, 15));
    assert_eq!(server.stats().sessions, 5);
    // Another IP is not affected by this one's cap.
    let mut other = Control::connect_from(SECOND_IP, server.addr);
    assert!(other.reply().starts_with("220"));
    drop(other);
    drop(open);
    server.assert_released();
}

/// Opening passive listeners in a loop: one listener per session, whatever the count of PASV/EPSV.
#[test]
fn one_passive_listener_per_session() {
    let server = TestServer::start(Setup::plain());
    let mut first = Control::connect(server.addr);
    first.plain_login();
    for _ in 0..100 {
        first.epsv();
    }
    assert_eq!(server.stats().passive_listeners, 1);
    let mut second = Control::connect(server.addr);
    second.plain_login();
    for _ in 0..20 {
        assert!(second.cmd("PASV").starts_with("227"));
    }
    let stats = server.stats();
    assert_eq!((stats.sessions, stats.passive_listeners), (2, 2));
    first.vanish();
    second.vanish();
    server.assert_released();
}

/// A client that sends commands but never reads the replies: the server stops reading once its bounded queues
/// are full, its write times out, and the session is closed; memory stays flat meanwhile.
#[test]
fn a_client_that_never_reads_is_timed_out_with_bounded_memory() {
    let mut setup = Setup::plain();
    setup.limits.write_timeout = Duration::from_secs(1);
    let server = TestServer::start(setup);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&server.addr.into(), WAIT).unwrap();
    let mut ctl = Control::over(with_timeouts(socket.into()));
    ctl.plain_login();
    let rss_before = rss_kib();
    let _ = ctl.tcp.set_write_timeout(Some(Duration::from_millis(500)));
    let chunk = b"HELP\r\n".repeat(10_000);
    let started = Instant::now();
    let mut sent = 0usize;
    // Writes stop succeeding once the server stops reading; bounded by WAIT in any case.
    while started.elapsed() < WAIT {
        match ctl.tcp.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(
        started.elapsed() < WAIT,
        "the server kept reading {sent} bytes of commands nobody reads the replies to"
    );
    server.assert_released();
    let grown = rss_kib().saturating_sub(rss_before);
    eprintln!("never-reading client: {sent} bytes of HELP sent before the server stopped reading; RSS +{grown} KiB");
    assert!(grown < 64 * 1024, "memory grew by {grown} KiB");
}

// TLS.

/// No TLS 1.1 or 1.0 (SSL 3 is not even compiled into OpenSSL 3 clients): the server answers a protocol_version
/// alert. TLS 1.2 from the same client succeeds, so the refusal is the server's.
#[test]
fn tls_below_1_2_is_refused_openssl() {
    let Some(openssl) = peer("openssl") else {
        return;
    };
    let server = TestServer::start(Setup::tls());
    let attempt = |version: &str| -> (bool, String) {
        let mut child = Command::new(&openssl)
            .args([
                "s_client",
                "-connect",
                &server.addr.to_string(),
                "-starttls",
                "ftp",
            ])
            .args([
                "-servername",
                "localhost",
                version,
                "-cipher",
                "DEFAULT:@SECLEVEL=0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (ok, out) = wait_output(&mut child, WAIT);
        (ok, out)
    };
    for version in ["-tls1", "-tls1_1"] {
        let (ok, out) = attempt(version);
        assert!(!ok, "{version} was accepted:\n{out}");
        // rustls answers an offer without TLS 1.2+ with a handshake_failure alert (40).
        assert!(
            out.contains("SSL alert number") && out.contains("Cipher is (NONE)"),
            "{version}: not refused by the server:\n{out}"
        );
    }
    let (ok, out) = attempt("-tls1_2");
    assert!(ok && out.contains("TLSv1.2"), "TLS 1.2 failed:\n{out}");
}

/// No renegotiation (the TLS 1.2 renegotiation attacks, CVE-2009-3555 and client-initiated DoS): a client
/// that asks to renegotiate the control connection is refused by the server (rustls has no renegotiation).
#[test]
fn tls_renegotiation_is_refused_openssl() {
    let Some(openssl) = peer("openssl") else {
        return;
    };
    let mut setup = Setup::tls();
    setup.session.login_timeout = Duration::from_secs(2);
    let server = TestServer::start(setup);
    let mut child = Command::new(&openssl)
        .args([
            "s_client",
            "-connect",
            &server.addr.to_string(),
            "-starttls",
            "ftp",
        ])
        .args(["-servername", "localhost", "-tls1_2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // s_client's interactive command "R": renegotiate (TLS 1.2 only). stdin stays open (EOF would quit), so
    // s_client ends when the server closes: at the refusal, or at the latest at the login timeout.
    let _ = stdin.write_all(b"R\n");
    let _ = stdin.flush();
    let (_, out) = wait_output(&mut child, WAIT);
    drop(stdin);
    assert!(
        out.contains("RENEGOTIATING"),
        "no renegotiation attempted:\n{out}"
    );
    eprintln!("renegotiation attempt:\n{out}");
    assert!(
        out.contains("no renegotiation"),
        "renegotiation was not refused:\n{out}"
    );
}

/// Waits for a child up to `timeout` (killing it then): success and stdout + stderr.
fn wait_output(child: &mut Child, timeout: Duration) -> (bool, String) {
    let finished = wait_until(timeout, || child.try_wait().ok().flatten().is_some());
    if !finished {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut out);
    }
    (finished && status.success(), out)
}

/// A TLS handshake that stalls after AUTH TLS is ended by the login timeout.
#[test]
fn a_stalled_tls_handshake_times_out() {
    let mut setup = Setup::tls();
    setup.session.login_timeout = Duration::from_secs(1);
    let server = TestServer::start(setup);
    let mut ctl = Control::connect(server.addr);
    assert!(ctl.reply().starts_with("220"));
    assert!(ctl.cmd("AUTH TLS").starts_with("234"));
    let started = Instant::now();
    assert!(ctl.closed_within(Duration::from_secs(4)));
    assert!(started.elapsed() < Duration::from_secs(4));
    server.assert_released();
}

// ===============================================================================================================
// Faults survived.

/// STOR over TLS up to the point where the upload's temp file exists and holds data.
fn start_tls_upload(
    server: &TestServer,
    config: &Arc<rustls::ClientConfig>,
    name: &str,
) -> (
    Control,
    rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
) {
    let mut ctl = Control::connect(server.addr);
    ctl.tls_login(config);
    let data = ctl.epsv();
    ctl.send(format!("STOR {name}\r\n").as_bytes());
    let (mut stream, handshake) = tls_data(data, config);
    handshake.unwrap();
    stream.write_all(&random_bytes(1 << 20)).unwrap();
    stream.flush().unwrap();
    assert!(wait_until(WAIT, || !server.temp_files().is_empty()));
    (ctl, stream)
}

/// A TCP FIN without close_notify on an upload is a failed transfer (426), and the old file stays.
#[test]
fn truncated_tls_upload_is_426_and_keeps_the_previous_file() {
    let server = TestServer::start(Setup::tls());
    std::fs::write(server.root.join("f.bin"), b"previous version").unwrap();
    let config = server.client_tls();
    let (mut ctl, stream) = start_tls_upload(&server, &config, "f.bin");
    stream.sock.shutdown(Shutdown::Write).unwrap();
    let mut reply = ctl.reply();
    if reply.starts_with('1') {
        reply = ctl.reply();
    }
    assert!(reply.starts_with("426"), "{reply}");
    assert_eq!(
        std::fs::read(server.root.join("f.bin")).unwrap(),
        b"previous version"
    );
    assert!(wait_until(WAIT, || server.temp_files().is_empty()));
    // The session goes on.
    assert!(ctl.cmd("NOOP").starts_with("200"));
}

/// The client vanishes mid-STOR (control and data): previous version intact, no partial file anywhere.
#[test]
fn client_disconnect_mid_stor_keeps_the_previous_file() {
    let server = TestServer::start(Setup::tls());
    std::fs::write(server.root.join("f.bin"), b"previous version").unwrap();
    let config = server.client_tls();
    let (ctl, stream) = start_tls_upload(&server, &config, "f.bin");
    let _ = stream.sock.shutdown(Shutdown::Both);
    ctl.vanish();
    server.assert_released();
    assert!(wait_until(WAIT, || server.temp_files().is_empty()));
    assert_eq!(
        std::fs::read(server.root.join("f.bin")).unwrap(),
        b"previous version"
    );
    let names: Vec<_> = std::fs::read_dir(&server.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|name| name != RESERVED_NAME)
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("f.bin")]);
}

/// A listing command (`LIST`, `NLST`, `MLSD`) over a TLS data connection: the listing and the final reply.
fn listing_with(
    ctl: &mut Control,
    config: &Arc<rustls::ClientConfig>,
    command: &str,
) -> (String, String) {
    let (listing, reply) = command_with(ctl, config, command);
    (String::from_utf8_lossy(&listing).into_owned(), reply)
}

/// Clear replies on a real disk (issue 14): MFMT says the time the file really got, long names are "too long",
/// `RMD .` of a full directory and a move into itself are plain 550s, a trailing slash names a directory, an
/// escaping path is refused before the data connection, a restart point past the end is 554, and LIST shows a
/// fresh file's time of day.
#[test]
fn replies_say_what_happened_on_a_real_disk() {
    use std::os::unix::fs::MetadataExt;
    let server = TestServer::start(Setup::plain());
    std::fs::write(server.root.join("f"), b"twelve bytes").unwrap();
    std::fs::create_dir_all(server.root.join("d/sub")).unwrap();
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let reply = ctl.cmd("MFMT 19000101000000 f");
    let mtime = std::fs::metadata(server.root.join("f")).unwrap().mtime();
    let set = ftps_proto::codec::Timeval::from_unix_seconds(mtime).unwrap();
    let expected = format!(
        "213 Modify={:04}{:02}{:02}{:02}{:02}{:02}; /f",
        set.year, set.month, set.day, set.hour, set.minute, set.second
    );
    assert_eq!(reply, expected);
    let long = "n".repeat(256);
    assert_eq!(ctl.cmd(&format!("MKD {long}")), "553 File name too long");
    let longer = "m".repeat(4000);
    assert_eq!(ctl.cmd(&format!("MLST {longer}")), "553 File name too long");
    assert_eq!(ctl.cmd("SIZE f/"), "550 Not a plain file");
    assert_eq!(ctl.cmd("SIZE f"), "213 12");
    assert_eq!(
        ctl.cmd("RETR ../../etc/passwd"),
        "553 File name not allowed"
    );
    assert!(ctl.cmd("CWD d").starts_with("250"));
    assert_eq!(ctl.cmd("RMD ."), "550 Directory not empty");
    assert!(ctl.cmd("RNFR /d").starts_with("350"));
    assert_eq!(
        ctl.cmd("RNTO sub/d"),
        "550 A directory cannot be moved into itself"
    );
    assert!(ctl.cmd("CWD /").starts_with("250"));
    assert!(ctl.cmd("REST 9223372036854775807").starts_with("350"));
    ctl.epsv();
    assert_eq!(ctl.cmd("RETR f"), "554 Restart position beyond end of file");
    // A file written just now is listed with its time of day, like `ls -l`.
    std::fs::write(server.root.join("fresh"), b"x").unwrap();
    let data = ctl.epsv();
    ctl.send(b"LIST fresh\r\n");
    let mut stream = with_timeouts(TcpStream::connect_timeout(&data, WAIT).unwrap());
    let mut listing = String::new();
    stream.read_to_string(&mut listing).unwrap();
    drop(stream);
    let mut reply = ctl.reply();
    if reply.starts_with('1') {
        reply = ctl.reply();
    }
    assert!(reply.starts_with("226"), "{reply}");
    let date: Vec<&str> = listing.split_whitespace().skip(5).take(3).collect();
    assert_eq!(date.len(), 3, "{listing}");
    assert!(
        date[2].len() == 5 && date[2].as_bytes()[2] == b':',
        "{listing}"
    );
}

/// STOU without an argument in `/t4` creates a fresh name inside `/t4` (not `/t4.1` next to it), and the
/// preliminary reply names it (RFC 1123 section 4.1.2.9: `150 FILE: name`).
#[test]
fn stou_creates_its_file_in_the_current_directory_and_names_it() {
    let server = TestServer::start(Setup::plain());
    std::fs::create_dir(server.root.join("t4")).unwrap();
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    assert!(ctl.cmd("CWD t4").starts_with("250"));
    let mut names = Vec::new();
    for _ in 0..3 {
        let data = ctl.epsv();
        ctl.send(b"STOU\r\n");
        let mut stream = with_timeouts(TcpStream::connect_timeout(&data, WAIT).unwrap());
        let preliminary = ctl.reply();
        // RFC 1123 section 4.1.2.9: `125 FILE: pppp` or `150 FILE: pppp`, exactly.
        let name = preliminary
            .strip_prefix("150 FILE: ")
            .or_else(|| preliminary.strip_prefix("125 FILE: "))
            .unwrap_or_else(|| panic!("STOU: {preliminary}"))
            .to_owned();
        stream.write_all(b"unique bytes").unwrap();
        drop(stream);
        let reply = ctl.reply();
        assert!(reply.starts_with("226"), "{reply}");
        assert_eq!(
            std::fs::read(server.root.join("t4").join(&name)).unwrap(),
            b"unique bytes"
        );
        names.push(name);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 3, "{names:?}");
    let mut at_root: Vec<_> = std::fs::read_dir(&server.root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    at_root.sort();
    assert_eq!(at_root, vec![RESERVED_NAME.to_owned(), "t4".to_owned()]);
}

/// While an upload runs, its temporary file is in no listing, and no other session can read, rename, delete,
/// enter or create anything in the reserved folder (550); the upload then completes normally.
#[test]
fn an_upload_in_progress_is_invisible_and_out_of_reach() {
    let server = TestServer::start(Setup::tls());
    std::fs::create_dir(server.root.join("d")).unwrap();
    let config = server.client_tls();
    let (mut up_ctl, mut stream) = start_tls_upload(&server, &config, "d/f.bin");
    let temp = server.temp_files().pop().unwrap();
    let other = server.client_tls();
    let mut ctl = Control::connect(server.addr);
    ctl.tls_login(&other);
    for dir in ["/", "/d"] {
        assert!(ctl.cmd(&format!("CWD {dir}")).starts_with("250"));
        for command in ["LIST -a", "NLST -a", "MLSD"] {
            let (listing, reply) = listing_with(&mut ctl, &other, command);
            assert!(reply.starts_with("226"), "{command} in {dir}: {reply}");
            for hidden in [RESERVED_NAME, "upload.", "f.bin"] {
                assert!(!listing.contains(hidden), "{command} in {dir}: {listing}");
            }
        }
    }
    assert!(ctl.cmd("CWD /").starts_with("250"));
    let hidden = format!("{RESERVED_NAME}/{temp}");
    for command in [
        format!("SIZE {hidden}"),
        format!("MLST {hidden}"),
        format!("DELE {hidden}"),
        format!("RNFR {hidden}"),
        format!("CWD {RESERVED_NAME}"),
        format!("RMD {RESERVED_NAME}"),
        format!("MKD d/{RESERVED_NAME}"),
    ] {
        let reply = ctl.cmd(&command);
        assert!(reply.starts_with("550"), "{command}: {reply}");
    }
    ctl.epsv();
    let reply = ctl.cmd(&format!("RETR {hidden}"));
    assert!(reply.starts_with("550"), "RETR: {reply}");
    assert_eq!(server.temp_files(), vec![temp]);
    // The upload itself is untouched and completes.
    stream.conn.send_close_notify();
    stream.flush().unwrap();
    let _ = stream.sock.shutdown(Shutdown::Write);
    let mut reply = up_ctl.reply();
    if reply.starts_with('1') {
        reply = up_ctl.reply();
    }
    assert!(reply.starts_with("226"), "{reply}");
    assert_eq!(
        std::fs::metadata(server.root.join("d/f.bin"))
            .unwrap()
            .len(),
        1 << 20
    );
    assert!(server.temp_files().is_empty());
}

/// Disconnects at every stage release the session and its passive listener (the `Server::stats` gauge).
#[test]
fn disconnects_release_sessions_and_passive_listeners() {
    let server = TestServer::start(Setup::tls());
    std::fs::write(server.root.join("big.bin"), random_bytes(16 << 20)).unwrap();
    std::fs::create_dir(server.root.join("many")).unwrap();
    for i in 0..2000 {
        std::fs::write(server.root.join(format!("many/file-{i:05}")), b"").unwrap();
    }
    let config = server.client_tls();

    // Mid-RETR.
    let mut ctl = Control::connect(server.addr);
    ctl.tls_login(&config);
    let data = ctl.epsv();
    ctl.send(b"RETR big.bin\r\n");
    let (mut stream, handshake) = tls_data(data, &config);
    handshake.unwrap();
    let mut some = vec![0u8; 64 * 1024];
    stream.read_exact(&mut some).unwrap();
    let _ = stream.sock.shutdown(Shutdown::Both);
    ctl.vanish();
    server.assert_released();

    // Mid-LIST (2000 entries; the client reads the first KiB only).
    let mut ctl = Control::connect(server.addr);
    ctl.tls_login(&config);
    let data = ctl.epsv();
    ctl.send(b"LIST many\r\n");
    let (mut stream, handshake) = tls_data(data, &config);
    handshake.unwrap();
    let mut some = vec![0u8; 1024];
    stream.read_exact(&mut some).unwrap();
    let _ = stream.sock.shutdown(Shutdown::Both);
    ctl.vanish();
    server.assert_released();

    // During the control TLS handshake: half a ClientHello, then gone.
    let mut ctl = Control::connect(server.addr);
    assert!(ctl.reply().starts_with("220"));
    assert!(ctl.cmd("AUTH TLS").starts_with("234"));
    let mut hello = Vec::new();
    let mut client = rustls::ClientConnection::new(Arc::clone(&config), server_name()).unwrap();
    client.write_tls(&mut hello).unwrap();
    ctl.tcp.write_all(&hello[..hello.len() / 2]).unwrap();
    ctl.vanish();
    server.assert_released();

    // During the data TLS handshake.
    let mut ctl = Control::connect(server.addr);
    ctl.tls_login(&config);
    let data = ctl.epsv();
    ctl.send(b"RETR big.bin\r\n");
    let mut raw = TcpStream::connect_timeout(&data, WAIT).unwrap();
    raw.write_all(&hello[..hello.len() / 2]).unwrap();
    drop(raw);
    ctl.vanish();
    server.assert_released();

    // Between EPSV and the data connection, with and without the transfer command sent.
    for command in [None, Some("RETR big.bin")] {
        let mut ctl = Control::connect(server.addr);
        ctl.tls_login(&config);
        ctl.epsv();
        assert_eq!(server.stats().passive_listeners, 1, "the gauge counts");
        if let Some(command) = command {
            ctl.send(format!("{command}\r\n").as_bytes());
        }
        ctl.vanish();
        server.assert_released();
    }
}

/// A storage that fails after a few bytes: reads (a disk error mid-file) and writes (a full disk).
struct FailingStorage {
    inner: MemoryStorage,
}

/// Yields `left` bytes of zeros, then an I/O error.
struct FailingReader {
    left: usize,
}

impl futures_lite::AsyncRead for FailingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut [u8],
    ) -> std::task::Poll<io::Result<usize>> {
        if self.left == 0 {
            return std::task::Poll::Ready(Err(io::Error::other("disk read error")));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(0);
        self.left -= n;
        std::task::Poll::Ready(Ok(n))
    }
}

impl Storage for FailingStorage {
    fn metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        self.inner.metadata(path)
    }
    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        self.inner.list(path)
    }
    fn open_read<'a>(
        &'a self,
        _path: &'a str,
        _offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        Box::pin(async {
            Ok(ReadHandle {
                reader: Box::new(FailingReader { left: 256 * 1024 }),
                size: 1 << 20,
            })
        })
    }
    fn open_write<'a>(
        &'a self,
        path: &'a str,
        mode: WriteMode,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        self.inner.open_write(path, mode)
    }
    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.mkdir(path)
    }
    fn rmdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.rmdir(path)
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.delete(path)
    }
    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.rename(from, to)
    }
    fn set_modified<'a>(
        &'a self,
        path: &'a str,
        time: std::time::SystemTime,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.set_modified(path, time)
    }
    fn set_mode<'a>(&'a self, path: &'a str, mode: u32) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.set_mode(path, mode)
    }
}

/// Uploads `len` bytes over plain FTP to `name`; the final reply.
fn plain_upload(server: &TestServer, name: &str, len: usize) -> String {
    let mut ctl = Control::connect(server.addr);
    ctl.plain_login();
    let data = ctl.epsv();
    ctl.send(format!("STOR {name}\r\n").as_bytes());
    let mut stream = with_timeouts(TcpStream::connect_timeout(&data, WAIT).unwrap());
    let _ = stream.write_all(&random_bytes(len)); // the server may hang up early
    let _ = stream.shutdown(Shutdown::Write);
    let mut reply = ctl.reply();
    if reply.starts_with('1') {
        reply = ctl.reply();
    }
    reply
}

/// Disk full on a backend that fails writes: 452, and the previous file is untouched.
#[test]
fn disk_full_backend_gives_452_and_no_corrupt_file() {
    let memory = MemoryStorage::with_capacity(64 * 1024);
    memory
        .insert_file("/f.bin", b"previous version".to_vec())
        .unwrap();
    let storage = Arc::new(FailingStorage { inner: memory });
    let mut setup = Setup::plain();
    setup.storage = Some(Arc::clone(&storage) as Arc<dyn Storage>);
    let server = TestServer::start(setup);
    let reply = plain_upload(&server, "f.bin", 1 << 20);
    assert!(reply.starts_with("452"), "{reply}");
    assert_eq!(
        storage.inner.file_contents("/f.bin").unwrap(),
        b"previous version"
    );
    let reply = plain_upload(&server, "new.bin", 1 << 20);
    assert!(reply.starts_with("452"), "{reply}");
    assert!(storage.inner.file_contents("/new.bin").is_none());
}

/// Disk full for real: a 1 MiB tmpfs under `LocalStorage`. Needs root (mount); runs in CI, skips elsewhere.
#[test]
fn disk_full_tmpfs_gives_452_and_no_corrupt_file() {
    if !ftps_testkit::is_root() {
        assert!(
            std::env::var("CI").is_err(),
            "CI is set but not root: cannot mount the tmpfs"
        );
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    }
    let mut setup = Setup::plain();
    setup.tmpfs_root = true;
    let server = TestServer::start(setup);
    let previous = random_bytes(100 * 1024);
    std::fs::write(server.root.join("f.bin"), &previous).unwrap();
    let reply = plain_upload(&server, "f.bin", 2 << 20);
    assert!(reply.starts_with("452"), "{reply}");
    assert_eq!(std::fs::read(server.root.join("f.bin")).unwrap(), previous);
    assert!(wait_until(WAIT, || server.temp_files().is_empty()));
    assert!(!server.root.join("new.bin").exists());
}

/// A download the server cannot finish (its disk fails mid-file) is reported by our client as failed (the
/// server's 451), never as a complete file.
#[test]
fn our_client_reports_a_download_failed_by_the_server() {
    let storage = Arc::new(FailingStorage {
        inner: MemoryStorage::new(),
    });
    storage
        .inner
        .insert_file("/f.bin", vec![0u8; 1 << 20])
        .unwrap();
    let mut setup = Setup::tls();
    setup.storage = Some(storage);
    let server = TestServer::start(setup);
    let (_dir, ca_file) = {
        let dir = TempDir::new("hardening-ca");
        let (cert, _) = server.cert.write_to(dir.path());
        (dir, cert)
    };
    let config = ftps_client_blocking::ClientConfig::new()
        .ca_file(ca_file)
        .server_name("localhost")
        .reply_timeout(Duration::from_secs(5))
        .data_timeout(Duration::from_secs(5));
    let mut client =
        ftps_client_blocking::Client::connect("127.0.0.1", server.addr.port(), config).unwrap();
    client.login(USER, PASSWORD).unwrap();
    let mut download = client.retr("f.bin", 0).unwrap();
    let mut content = Vec::new();
    let read = download.read_to_end(&mut content);
    let result = read.map_err(|e| e.to_string()).and_then(|_| {
        download
            .finish()
            .map(|report| report.bytes)
            .map_err(|e| e.to_string())
    });
    assert!(
        result.is_err(),
        "a cut download was reported complete: {result:?}"
    );
    assert!(content.len() < 1 << 20);
    eprintln!("cut download: {} bytes, then {:?}", content.len(), result);
}

/// A lying FTPS server (or an attacker injecting a TCP FIN): the download's data connection ends without TLS
/// close_notify, yet the control connection says 226. Serves one session, one RETR of 1 MiB cut at 256 KiB.
fn truncating_server(cert: &TestCert) -> SocketAddr {
    let tls = server_tls(cert); // one config for control and data: the client's data handshake resumes
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let Ok((tcp, _)) = listener.accept() else {
            return;
        };
        let tcp = with_timeouts(tcp);
        let mut ctl = Control::over(tcp);
        ctl.send(b"220 fake\r\n");
        let mut passive: Option<std::net::TcpListener> = None;
        while let Some(line) = ctl.line() {
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            let reply = match verb.as_str() {
                "AUTH" => {
                    ctl.send(b"234 AUTH TLS ok\r\n");
                    let conn = rustls::ServerConnection::new(Arc::clone(&tls)).unwrap();
                    let sock = ctl.tcp.try_clone().unwrap();
                    ctl.conn = Conn::ServerTls(Box::new(rustls::StreamOwned::new(conn, sock)));
                    continue;
                }
                "USER" => "331 password".to_owned(),
                "PASS" => "230 ok".to_owned(),
                "PBSZ" => "200 PBSZ=0".to_owned(),
                "PROT" | "TYPE" | "MODE" | "STRU" | "OPTS" | "NOOP" => "200 ok".to_owned(),
                "PWD" => "257 \"/\"".to_owned(),
                "FEAT" => "211-Features:\r\n EPSV\r\n PBSZ\r\n PROT\r\n211 End".to_owned(),
                "EPSV" | "PASV" => {
                    let data = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                    let port = data.local_addr().unwrap().port();
                    passive = Some(data);
                    if verb == "EPSV" {
                        format!("229 Entering Extended Passive Mode (|||{port}|)")
                    } else {
                        format!(
                            "227 Entering Passive Mode (127,0,0,1,{},{})",
                            port >> 8,
                            port & 0xff
                        )
                    }
                }
                "RETR" => {
                    ctl.send(b"150 here it comes\r\n");
                    let Some(Ok((data, _))) = passive.take().map(|l| l.accept()) else {
                        return;
                    };
                    let conn = rustls::ServerConnection::new(Arc::clone(&tls)).unwrap();
                    let mut stream = rustls::StreamOwned::new(conn, with_timeouts(data));
                    let _ = stream.write_all(&vec![7u8; 256 * 1024]);
                    let _ = stream.flush();
                    // FIN without close_notify.
                    let _ = stream.sock.shutdown(Shutdown::Both);
                    "226 Transfer complete".to_owned()
                }
                "QUIT" => {
                    ctl.send(b"221 bye\r\n");
                    return;
                }
                _ => "502 not implemented".to_owned(),
            };
            ctl.send(format!("{reply}\r\n").as_bytes());
        }
    });
    addr
}

/// A download whose data connection ends without close_notify is reported as truncated by our client
/// (ftps-client-blocking) even when the server says 226: the TCP truncation attack does not produce a short
/// file that looks complete.
#[test]
fn our_client_reports_a_download_without_close_notify_as_truncated() {
    capture_logs();
    let cert = TestCert::generate();
    let addr = truncating_server(&cert);
    let dir = TempDir::new("hardening-ca");
    let (ca_file, _) = cert.write_to(dir.path());
    let config = ftps_client_blocking::ClientConfig::new()
        .ca_file(ca_file)
        .server_name("localhost")
        .reply_timeout(Duration::from_secs(5))
        .data_timeout(Duration::from_secs(5));
    let mut client =
        ftps_client_blocking::Client::connect("127.0.0.1", addr.port(), config).unwrap();
    client.login(USER, PASSWORD).unwrap();
    let mut download = client.retr("f.bin", 0).unwrap();
    let mut content = Vec::new();
    let read = download.read_to_end(&mut content);
    let result = match read {
        Err(e) => Err(e.to_string()),
        Ok(_) => download
            .finish()
            .map(|r| r.bytes)
            .map_err(|e| e.to_string()),
    };
    let error = result.expect_err("a download without close_notify was reported complete");
    eprintln!("download without close_notify: {error}");
    assert!(error.contains("truncated"), "{error}");
}

// The real binary, killed.

/// Runs `ftps-server` with a root and state dir in `dir`, listening on `port`; waits until it listens.
fn start_binary(dir: &Path, port: u16) -> Child {
    let passive = 20000 + (std::process::id() % 2000) as u16 * 10;
    let mut child = Command::new(env!("CARGO_BIN_EXE_ftps-server"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--passive-ports", &format!("{passive}-{}", passive + 9)])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = io::BufRead::lines(io::BufReader::new(stdout));
        while let Some(Ok(line)) = lines.next() {
            if line.contains("listening on") {
                let _ = tx.send(());
            }
        }
    });
    if rx.recv_timeout(WAIT).is_err() {
        let _ = child.kill();
        panic!("ftps-server did not start listening");
    }
    child
}

/// SIGKILL mid-STOR: the previous file is intact and not replaced by a partial one; the next start removes
/// the upload's temporary file.
#[test]
fn server_killed_mid_stor_keeps_the_previous_file_and_restart_cleans_temp_files() {
    let dir = TempDir::new("hardening-kill");
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("f.bin"), b"previous version").unwrap();
    let port = ftps_testkit::free_port();
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_ftps-server"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["user", "add", USER, "--home", "/"])
            .env("FTPS_PASSWORD", PASSWORD)
            .stdout(Stdio::null()),
    );
    let mut child = start_binary(dir.path(), port);
    let config = ftps_client_blocking::ClientConfig::new()
        .danger_accept_invalid_certs(true)
        .reply_timeout(Duration::from_secs(5))
        .data_timeout(Duration::from_secs(5))
        .abort_timeout(Duration::from_secs(1));
    let mut client = ftps_client_blocking::Client::connect("127.0.0.1", port, config).unwrap();
    client.login(USER, PASSWORD).unwrap();
    let mut upload = client.stor("f.bin").unwrap();
    upload.write_all(&random_bytes(4 << 20)).unwrap();
    upload.flush().unwrap();
    assert!(wait_until(WAIT, || !temp_files(&root).is_empty()));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(upload);
    drop(client);
    assert_eq!(
        std::fs::read(root.join("f.bin")).unwrap(),
        b"previous version"
    );
    let left = temp_files(&root);
    assert_eq!(left.len(), 1, "the killed upload's temp file: {left:?}");

    let mut child = start_binary(dir.path(), port);
    let cleaned = temp_files(&root).is_empty();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        cleaned,
        "temp files survived a restart: {:?}",
        temp_files(&root)
    );
    assert_eq!(
        std::fs::read(root.join("f.bin")).unwrap(),
        b"previous version"
    );
}

/// `[log] protocol` decides whether every command and reply is logged (`false` by default, as documented); the
/// transfer and session lines stay either way.
#[test]
fn the_protocol_log_follows_the_config() {
    for protocol in [false, true] {
        let dir = TempDir::new("protocol-log");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, format!("[log]\nprotocol = {protocol}\n")).unwrap();
        let stderr_path = dir.path().join("stderr");
        let port = ftps_testkit::free_port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ftps-server"))
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(ftps_testkit::wait_for_listener(addr, WAIT));
        let mut ctl = Control::connect(addr);
        assert!(ctl.reply().starts_with("220"));
        assert!(ctl.cmd("QUIT").starts_with("221"));
        assert!(wait_until(WAIT, || std::fs::read_to_string(&stderr_path)
            .unwrap()
            .contains("session closed")));
        child.kill().unwrap();
        child.wait().unwrap();
        let log = std::fs::read_to_string(&stderr_path).unwrap();
        assert_eq!(log.contains("ftps::protocol"), protocol, "{log}");
        assert!(log.contains("connected"), "{log}");
    }
}

// ===============================================================================================================
// Nothing lost, nothing hidden (issue 14).

/// The `session{id=.. peer=..}` spans of one log line, as `(id, peer)` pairs.
fn session_spans(line: &str) -> Vec<(String, String)> {
    let mut spans = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("session{") {
        rest = &rest[at + "session{".len()..];
        let body = &rest[..rest.find('}').unwrap_or(rest.len())];
        let field = |name: &str| {
            body.split(' ')
                .find_map(|kv| kv.strip_prefix(name))
                .unwrap_or("")
                .to_owned()
        };
        spans.push((field("id="), field("peer=")));
    }
    spans
}

/// A line's event field `peer=` (after the spans): the transfer line names its session's peer itself.
fn event_peer(line: &str) -> Option<&str> {
    let after = &line[line.find("ftps::transfer:")?..];
    let value = &after[after.find(" peer=")? + " peer=".len()..];
    value.split(' ').next()
}

/// Logs do not grow with the square of the sessions: with 200 sessions at once (some logging in and
/// downloading, from 8 threads), every line of a session carries exactly one `session{..}` span, its own, and
/// every transfer line names the session that transferred.
#[test]
fn every_log_line_names_exactly_its_own_session() {
    let mut setup = Setup::plain();
    setup.limits.max_sessions_per_ip = 400;
    let server = TestServer::start(setup);
    std::fs::write(server.root.join("small.bin"), random_bytes(100_000)).unwrap();
    let addr = server.addr;
    // An address of its own: no other test's session has these peer addresses.
    let source = Ipv4Addr::new(127, 0, 0, 14);
    let mark = log_mark();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut ctls: Vec<Control> = (0..25)
                    .map(|_| {
                        let mut ctl = Control::connect_from(source, addr);
                        assert!(ctl.reply().starts_with("220"));
                        ctl
                    })
                    .collect();
                let mut downloaders = Vec::new();
                for (i, ctl) in ctls.iter_mut().enumerate() {
                    if i % 5 != 0 {
                        continue;
                    }
                    ctl.login();
                    assert!(ctl.cmd("TYPE I").starts_with("200"));
                    let data = ctl.epsv();
                    ctl.send(b"RETR small.bin\r\n");
                    let mut stream = connect_from(source.into(), data);
                    let mut body = Vec::new();
                    stream.read_to_end(&mut body).unwrap();
                    assert_eq!(body.len(), 100_000);
                    drop(stream);
                    let mut reply = ctl.reply();
                    if reply.starts_with('1') {
                        reply = ctl.reply();
                    }
                    assert!(reply.starts_with("226"), "{reply}");
                    downloaders.push(ctl.tcp.local_addr().unwrap().to_string());
                }
                let peers: Vec<String> = ctls
                    .iter()
                    .map(|c| c.tcp.local_addr().unwrap().to_string())
                    .collect();
                for ctl in &mut ctls {
                    assert!(ctl.cmd("QUIT").starts_with("221"));
                }
                (peers, downloaders)
            })
        })
        .collect();
    let mut peers = std::collections::HashSet::new();
    let mut downloaders = std::collections::HashSet::new();
    for thread in threads {
        let (p, d) = thread.join().unwrap();
        peers.extend(p);
        downloaders.extend(d);
    }
    assert_eq!((peers.len(), downloaders.len()), (200, 40));
    server.assert_released();
    let log = captured_log_since(mark);
    let (mut lines, mut transfers) = (0, 0);
    let mut closed = std::collections::HashSet::new();
    for line in log.lines() {
        let spans = session_spans(line);
        // Any line with a span of this test's sessions: other tests' servers run in the same process.
        if !spans.iter().any(|(_, peer)| peers.contains(peer)) {
            continue;
        }
        lines += 1;
        assert_eq!(spans.len(), 1, "not exactly one session span: {line}");
        let peer = &spans[0].1;
        if line.contains("session closed") {
            closed.insert(peer.clone());
        }
        if let Some(named) = event_peer(line) {
            transfers += 1;
            assert_eq!(
                named, peer,
                "a transfer line in another session's span: {line}"
            );
            assert!(downloaders.contains(peer), "{line}");
        }
    }
    assert_eq!(
        closed.len(),
        200,
        "every session's close is logged in its span"
    );
    assert_eq!(transfers, 40, "one transfer line per download");
    eprintln!("{lines} log lines of 200 sessions, each with exactly its own session span");
}

/// The download connection of `RETR name` (TLS with `tls`), after 64 KiB and the 150: a socket with a small
/// receive buffer, so the server's writes block soon after the client stops reading.
fn start_stalled_download(
    ctl: &mut Control,
    name: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> Box<dyn Read> {
    let data = ctl.epsv();
    ctl.send(format!("RETR {name}\r\n").as_bytes());
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&data.into(), WAIT).unwrap();
    let tcp = with_timeouts(socket.into());
    let mut stream: Box<dyn Read> = match tls {
        Some(config) => {
            let conn = rustls::ClientConnection::new(Arc::clone(config), server_name()).unwrap();
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
        None => Box::new(tcp),
    };
    let mut some = vec![0u8; 64 * 1024];
    stream.read_exact(&mut some).unwrap();
    let reply = ctl.reply();
    assert!(reply.starts_with('1'), "{reply}");
    stream
}

/// A download whose client reads 64 KiB and stops is failed at the data timeout: 426, the transfer line
/// logged with its status, the file and the passive port released, the session goes on; a `QUIT` during such
/// a stall closes the session within the data timeout too. In the clear and with TLS (the default policy).
///
/// "At the data timeout", not a multiple of it: a write that was not woken for the whole timeout used to be
/// polled once more when its timer fired, and the few KiB the kernel then took (below its wake-up threshold)
/// counted as progress, so each timeout let a trickle through and started over (426 after 2 to 3 timeouts,
/// and never within 80 s with the default 60 s).
#[test]
fn a_stalled_download_fails_at_the_data_timeout() {
    for tls in [false, true] {
        let mut setup = if tls { Setup::tls() } else { Setup::plain() };
        setup.limits.data_idle_timeout = Duration::from_secs(2);
        let server = TestServer::start(setup);
        std::fs::write(server.root.join("stall.bin"), vec![0x5a; 64 << 20]).unwrap();
        let config = server.client_tls();
        let mut ctl = Control::connect(server.addr);
        if tls {
            ctl.tls_login(&config);
        } else {
            ctl.plain_login();
        }
        let tls = tls.then_some(&config);
        let peer = ctl.tcp.local_addr().unwrap().to_string();
        let mark = log_mark();
        let stalled = start_stalled_download(&mut ctl, "stall.bin", tls);
        let started = Instant::now();
        let _ = ctl.tcp.set_read_timeout(Some(WAIT));
        let reply = ctl.reply();
        let waited = started.elapsed();
        assert!(
            reply.starts_with("426"),
            "tls {}: {reply:?} after {waited:?}",
            tls.is_some()
        );
        assert!(waited < Duration::from_millis(3500), "426 after {waited:?}");
        let logged = wait_until(WAIT, || {
            captured_log_since(mark).lines().any(|line| {
                event_peer(line) == Some(peer.as_str())
                    && line.contains("direction=Download")
                    && line.contains("status=426")
            })
        });
        assert!(logged, "no transfer line for the stalled download");
        assert_eq!(server.stats().passive_listeners, 0);
        assert!(ctl.cmd("NOOP").starts_with("200"));
        drop(stalled);

        // QUIT while the download stalls: the session ends within the data timeout (and some slack).
        let stalled = start_stalled_download(&mut ctl, "stall.bin", tls);
        ctl.send(b"QUIT\r\n");
        let started = Instant::now();
        assert!(
            ctl.closed_within(Duration::from_secs(6)),
            "QUIT did not close the session"
        );
        let quit_closed = started.elapsed();
        assert!(
            quit_closed < Duration::from_millis(3500),
            "QUIT closed after {quit_closed:?}"
        );
        eprintln!(
            "stalled download (tls {}): 426 after {waited:?}; QUIT closed after {quit_closed:?}",
            tls.is_some(),
        );
        drop(stalled);
        server.assert_released();
    }
}

/// The lockout counts password checks before they run: 16 sessions from one address guessing at once get at
/// most `max_failed_logins` (5) passwords checked by the authenticator.
#[test]
fn parallel_password_guesses_are_counted_before_they_are_checked() {
    let mut setup = Setup::plain();
    setup.session.failed_login_delay = Duration::from_millis(500);
    setup.limits.max_sessions_per_ip = 16;
    setup.throttle = Some(Arc::new(LoginThrottle::new(
        5,
        Duration::from_secs(60),
        Duration::from_secs(60),
        100,
    )));
    let server = TestServer::start(setup);
    let attacker = Ipv4Addr::new(127, 0, 0, 3);
    let addr = server.addr;
    let barrier = Arc::new(std::sync::Barrier::new(16));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let mut ctl = Control::connect_from(attacker, addr);
                let greeting = ctl.reply();
                barrier.wait();
                if !greeting.starts_with("220") {
                    return;
                }
                for n in 0..3 {
                    if !ctl.cmd(&format!("USER {USER}")).starts_with("331") {
                        return;
                    }
                    if ctl.cmd(&format!("PASS wrong-{t}-{n}")).is_empty() {
                        return;
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let checked = server.attempts.load(Ordering::SeqCst);
    eprintln!("16 parallel sessions guessing: {checked} passwords checked (limit 5)");
    assert!((1..=5).contains(&checked), "{checked} passwords checked");
    // The address is locked now; another address still logs in.
    let mut user = Control::connect_from(SECOND_IP, server.addr);
    user.plain_login();
}

/// A failed upload's transfer line still says what happened on the data connection: the TLS version, that it
/// resumed, and the bytes received before the failure, whether the client cut the connection (a FIN without
/// close_notify) or stalled until the data timeout.
#[test]
fn a_failed_uploads_transfer_line_reports_tls_resumption_and_bytes() {
    let mut setup = Setup::tls();
    setup.limits.data_idle_timeout = Duration::from_secs(2);
    let server = TestServer::start(setup);
    let config = server.client_tls();
    for stall in [false, true] {
        let mark = log_mark();
        let (mut ctl, stream) = start_tls_upload(&server, &config, "cut.bin");
        let peer = ctl.tcp.local_addr().unwrap().to_string();
        if !stall {
            stream.sock.shutdown(Shutdown::Write).unwrap();
        }
        let _ = ctl.tcp.set_read_timeout(Some(WAIT));
        let mut reply = ctl.reply();
        if reply.starts_with('1') {
            reply = ctl.reply();
        }
        assert!(reply.starts_with("426"), "stall {stall}: {reply}");
        let mut line = None;
        assert!(wait_until(WAIT, || {
            line = captured_log_since(mark)
                .lines()
                .find(|l| event_peer(l) == Some(peer.as_str()))
                .map(str::to_owned);
            line.is_some()
        }));
        let line = line.unwrap();
        assert!(line.contains("status=426"), "{line}");
        assert!(line.contains("tls=Some(TLSv1_3)"), "{line}");
        assert!(line.contains("resumed=true"), "{line}");
        assert!(line.contains(&format!("bytes={}", 1 << 20)), "{line}");
        drop(stream);
    }
}

/// Silent connections cannot hold the server: one address gets at most `max_sessions_per_ip` slots; a
/// connection that sends no command is closed at the auth timeout (1 s here; the login timeout is 30 s); and a
/// full server makes room for a new connection by closing its oldest connection that has not spoken, so a client
/// from another address gets in at once even when silent connections hold every slot.
#[test]
fn silent_connections_are_closed_at_the_auth_timeout() {
    // The per-address cap: 20 silent connections, 5 admitted, and another address logs in at once.
    let mut setup = Setup::plain();
    setup.limits.max_sessions = 20;
    setup.limits.max_sessions_per_ip = 5;
    setup.session.login_timeout = Duration::from_secs(30);
    let server = TestServer::start(setup);
    let silent: Vec<_> = (0..20)
        .map(|_| TcpStream::connect_timeout(&server.addr, WAIT).unwrap())
        .collect();
    assert!(wait_until(WAIT, || server.stats().sessions == 5));
    let mut user = Control::connect_from(SECOND_IP, server.addr);
    user.plain_login();
    drop(user);
    drop(silent);
    server.assert_released();

    // The auth timeout: silent connections get 421 and a close after 1 s, long before the login timeout; a
    // client that spoke stays.
    let mut setup = Setup::plain();
    setup.session.login_timeout = Duration::from_secs(30);
    setup.session.auth_timeout = Duration::from_secs(1);
    let server = TestServer::start(setup);
    let mut user = Control::connect(server.addr);
    assert!(user.reply().starts_with("220"));
    assert!(user.cmd("NOOP").starts_with("200"));
    let started = Instant::now();
    let quiet: Vec<_> = (0..5).map(|_| Control::connect(server.addr)).collect();
    for mut ctl in quiet {
        assert!(ctl.reply().starts_with("220"));
        let reply = ctl.reply();
        assert!(reply.starts_with("421"), "{reply}");
        assert!(ctl.closed_within(Duration::from_secs(3)));
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert!(user.cmd("NOOP").starts_with("200"));
    user.login();
    drop(user);
    server.assert_released();

    // A full server (one address may hold every slot: per-address cap = global cap = 20, and no auth timeout
    // within the test) evicts its oldest silent connection for a newcomer from another address.
    let mut setup = Setup::plain();
    setup.limits.max_sessions = 20;
    setup.limits.max_sessions_per_ip = 20;
    setup.session.login_timeout = Duration::from_secs(30);
    setup.session.auth_timeout = Duration::from_secs(30);
    let server = TestServer::start(setup);
    let mut silent: Vec<_> = (0..20)
        .map(|_| {
            let mut ctl = Control::connect(server.addr);
            assert!(ctl.reply().starts_with("220"));
            ctl
        })
        .collect();
    assert_eq!(server.stats().sessions, 20);
    let started = Instant::now();
    let mut user = Control::connect_from(SECOND_IP, server.addr);
    let reply = user.reply();
    assert!(reply.starts_with("220"), "{reply}");
    user.login();
    let waited = started.elapsed();
    eprintln!(
        "20 silent connections filling the server: another address logged in after {waited:?}"
    );
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // The oldest silent connection was told why and closed; the others are still there.
    let reply = silent[0].reply();
    assert!(reply.starts_with("421"), "{reply}");
    assert!(silent.remove(0).closed_within(Duration::from_secs(3)));
    assert!(silent[0].cmd("NOOP").starts_with("200"));
    // Once everyone has spoken, a newcomer is refused again.
    for ctl in &mut silent {
        assert!(ctl.cmd("NOOP").starts_with("200"));
    }
    let mut late = Control::connect(server.addr);
    let reply = late.reply();
    assert!(reply.starts_with("421"), "{reply}");
}
