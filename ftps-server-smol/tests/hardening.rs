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
use ftps_testkit::{peer, KillOnDrop, TempDir, TestCert};
use rustls::pki_types::ServerName;

#[path = "hardening/attacks.rs"]
mod attacks;
#[path = "hardening/exhaustion.rs"]
mod exhaustion;
#[path = "hardening/faults.rs"]
mod faults;
#[path = "hardening/keys.rs"]
mod keys;
#[path = "hardening/killed.rs"]
mod killed;
#[path = "hardening/nothing_lost.rs"]
mod nothing_lost;
#[path = "hardening/tls.rs"]
mod tls;

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
