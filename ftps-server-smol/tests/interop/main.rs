//! Interop: real clients against ftps-server on loopback, with TLS 1.2 and 1.3, `PROT P` and data-channel
//! resumption required (the default policy). The many-file matrix of every client is in [`clients`].
//!
//! Each test skips with `skipped: <peer> not installed` when its client is missing, and fails instead under
//! `FTPS_INTEROP=require` (CI).

#![allow(clippy::unwrap_used)] // test set-up: a failure is the test failing

mod balancer;
mod clients;
mod encryption;
mod events;
mod s3;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use ftps_proto::data::ResumptionPolicy;
use ftps_proto::server::SessionConfig;
use ftps_server_smol::auth::{
    AuthOutcome, AuthenticatedUser, Authenticator, LoginAttempt, Permission, UserHome,
};
use ftps_server_smol::server::{ListenerOptions, Server};
use ftps_server_smol::storage::{BoxFuture, LocalStorage, S3Options, S3Storage};
use ftps_testkit::{peer, Moto, TempDir, TestCert, Vsftpd, VSFTPD_PASSWORD, VSFTPD_USER};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

/// One fixed user: enough to exercise the protocol.
struct OneUser;

impl Authenticator for OneUser {
    fn authenticate(&self, attempt: LoginAttempt) -> BoxFuture<'_, AuthOutcome> {
        Box::pin(async move {
            if attempt.user == USER && attempt.password == PASSWORD {
                AuthOutcome::Accepted(AuthenticatedUser {
                    name: USER.into(),
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

/// Which TLS versions the server offers.
#[derive(Clone, Copy, PartialEq)]
enum Tls {
    V12,
    V13,
}

/// Our server on a loopback port, serving a temporary directory, running on a background thread.
struct TestServer {
    addr: SocketAddr,
    root: TempDir,
    cert_file: PathBuf,
    _certs: TempDir,
    server: Server,
}

impl TestServer {
    fn start(tls: Tls, resumption: ResumptionPolicy) -> Self {
        Self::start_with(
            tls,
            SessionConfig {
                data_resumption: resumption,
                ..SessionConfig::default()
            },
            "127.0.0.1",
        )
    }

    /// A server with this engine policy, listening on `bind_ip` (a loopback address).
    fn start_with(tls: Tls, config: SessionConfig, bind_ip: &str) -> Self {
        log_to_stderr_when_asked();
        let root = TempDir::new("server-root");
        let certs = TempDir::new("server-certs");
        let cert = TestCert::generate();
        let (cert_file, _key_file) = cert.write_to(certs.path());
        let versions: &[&rustls::SupportedProtocolVersion] = match tls {
            Tls::V12 => &[&rustls::version::TLS12],
            Tls::V13 => &[&rustls::version::TLS13],
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_der.clone().into());
        let tls_config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.cert_der.clone().into()], key)
            .unwrap();
        let server = Server::builder()
            .storage(Arc::new(LocalStorage::open(root.path()).unwrap()))
            .authenticator(Arc::new(OneUser))
            .tls(Arc::new(tls_config))
            .session_config(SessionConfig {
                preliminary_reply_wait: ftps_server_smol::server::PRELIMINARY_REPLY_WAIT,
                ..config
            })
            .build();
        let listener = std::net::TcpListener::bind((bind_ip, 0)).unwrap();
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
            root,
            cert_file,
            _certs: certs,
            server,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("ftp://{}/{path}", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

/// `FTPS_TEST_LOG=info` (any `RUST_LOG`-style filter) writes the servers' logs to stderr: the protocol log of a
/// failing client is the first thing to read.
fn log_to_stderr_when_asked() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    if let Ok(filter) = std::env::var("FTPS_TEST_LOG") {
        ONCE.call_once(|| {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        });
    }
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    // xorshift: reproducible, incompressible enough for transfer tests.
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Adds the test user (read-write, home `/`) to the users file `users` with `ftps-server user add`.
fn add_test_user(users: &Path) {
    let state = users.with_extension("admin-state");
    let added = Command::new(env!("CARGO_BIN_EXE_ftps-server"))
        .args(["user", "add", USER, "--home", "/", "--users-file"])
        .arg(users)
        .arg("--state-dir")
        .arg(&state)
        .env("FTPS_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
}

/// A new bucket `name` on `moto` (path-style addressing, moto's credentials): its options and the backend on it.
fn moto_bucket(moto: &Moto, name: &str) -> (S3Options, S3Storage) {
    let options = S3Options {
        endpoint: moto.endpoint(),
        bucket: name.to_owned(),
        path_style: true,
        access_key_id: Moto::ACCESS_KEY.to_owned(),
        secret_access_key: Moto::SECRET_KEY.to_owned(),
        ..S3Options::default()
    };
    let bucket = S3Storage::new(&options).unwrap();
    futures_lite::future::block_on(bucket.create_bucket()).unwrap();
    (options, bucket)
}

/// The whole of the object under `path` in `bucket`, or `None` when there is none.
fn s3_object(bucket: &S3Storage, path: &str) -> Option<Vec<u8>> {
    use ftps_server_smol::storage::Storage;
    use futures_lite::AsyncReadExt;
    futures_lite::future::block_on(async {
        let mut handle = Storage::open_read(bucket, path, 0).await.ok()?;
        let mut data = Vec::new();
        handle.reader.read_to_end(&mut data).await.unwrap();
        Some(data)
    })
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("run client");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// curl with TLS required on control and data, verifying our certificate.
fn curl(curl: &Path, server: &TestServer, tls: Tls) -> Command {
    let mut command = Command::new(curl);
    command
        .args(["-sS", "--ssl-reqd", "--max-time", "60", "--cacert"])
        .arg(&server.cert_file)
        .args(["-u", &format!("{USER}:{PASSWORD}")]);
    if tls == Tls::V12 {
        command.args(["--tls-max", "1.2"]);
    }
    command
}

fn curl_round_trip(tls: Tls) {
    let Some(curl_bin) = peer("curl") else {
        return;
    };
    let server = TestServer::start(tls, ResumptionPolicy::Required);
    let local = TempDir::new("curl-local");
    let file = local.path().join("payload.bin");
    let data = random_bytes(3 * 1024 * 1024 + 17, 1);
    std::fs::write(&file, &data).unwrap();

    // Upload, then download it back byte for byte (the data connection must resume the control session).
    run(curl(&curl_bin, &server, tls)
        .arg("-T")
        .arg(&file)
        .arg(server.url("")));
    assert_eq!(
        std::fs::read(server.root.path().join("payload.bin")).unwrap(),
        data
    );
    let down = local.path().join("down.bin");
    run(curl(&curl_bin, &server, tls)
        .arg("-o")
        .arg(&down)
        .arg(server.url("payload.bin")));
    assert_eq!(std::fs::read(&down).unwrap(), data);

    // Listing (LIST).
    let listing = run(curl(&curl_bin, &server, tls).arg(server.url("")));
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(text.contains("payload.bin"), "listing: {text}");

    // Several uploads in one session: every data connection resumes. With TLS 1.3, curl (OpenSSL) needs a fresh
    // ticket per data connection and reads an upload connection only once, just before closing it: the server
    // holds the 150 until the data handshake is done and its tickets are sent (`preliminary_reply_wait`).
    let uploads = 20;
    let mut several = curl(&curl_bin, &server, tls);
    for i in 0..uploads {
        let name = local.path().join(format!("small{i}.txt"));
        std::fs::write(&name, format!("file {i}\n")).unwrap();
        several.arg("-T").arg(&name).arg(server.url(""));
    }
    if uploads > 0 {
        run(&mut several);
    }
    for i in 0..uploads {
        let got =
            std::fs::read_to_string(server.root.path().join(format!("small{i}.txt"))).unwrap();
        assert_eq!(got, format!("file {i}\n"));
    }

    // Several downloads in one session, each resuming the control session.
    let mut downloads = curl(&curl_bin, &server, tls);
    for i in 0..20 {
        downloads
            .arg("-o")
            .arg(local.path().join(format!("copy{i}.bin")))
            .arg(server.url("payload.bin"));
    }
    run(&mut downloads);
    for i in 0..20 {
        assert_eq!(
            std::fs::read(local.path().join(format!("copy{i}.bin"))).unwrap(),
            data
        );
    }

    // Resume a download with `-C -` (REST).
    let partial = local.path().join("partial.bin");
    std::fs::write(&partial, &data[..1_000_000]).unwrap();
    run(curl(&curl_bin, &server, tls)
        .args(["-C", "-", "-o"])
        .arg(&partial)
        .arg(server.url("payload.bin")));
    assert_eq!(std::fs::read(&partial).unwrap(), data);

    // Resume an upload with `-C -` (SIZE, then APPE).
    std::fs::write(server.root.path().join("append.bin"), &data[..500_000]).unwrap();
    run(curl(&curl_bin, &server, tls)
        .args(["-C", "-", "-T"])
        .arg(&file)
        .arg(server.url("append.bin")));
    assert_eq!(
        std::fs::read(server.root.path().join("append.bin")).unwrap(),
        data
    );
}

#[test]
fn curl_tls13() {
    curl_round_trip(Tls::V13);
}

#[test]
fn curl_tls12() {
    curl_round_trip(Tls::V12);
}

fn ftplib_script() -> PathBuf {
    ftps_testkit::client_script("ftplib_client.py")
}

fn ftplib(python: &Path, server: &TestServer, flags: &[&str], steps: &[String]) -> Output {
    let mut command = Command::new(python);
    command
        .arg(ftplib_script())
        .args(flags)
        .args(["localhost", &server.addr.port().to_string(), USER, PASSWORD])
        .arg(&server.cert_file)
        .args(steps)
        .env("PYTHONUNBUFFERED", "1");
    command.output().expect("run python")
}

fn ftplib_round_trip(tls: Tls) {
    let Some(python) = peer("python3") else {
        return;
    };
    let server = TestServer::start(tls, ResumptionPolicy::Required);
    let local = TempDir::new("ftplib-local");
    let up = local.path().join("up.bin");
    let down = local.path().join("down.bin");
    let data = random_bytes(2 * 1024 * 1024 + 5, 2);
    std::fs::write(&up, &data).unwrap();
    let flags: &[&str] = if tls == Tls::V12 { &["--tls12"] } else { &[] };
    let steps = [
        format!("put:{}:py.bin", up.display()),
        format!("get:py.bin:{}", down.display()),
        // SIZE before any listing: a listing switches ftplib to TYPE A, where SIZE is refused (as ProFTPD does).
        "size:py.bin".to_string(),
        "list".to_string(),
        "mlsd".to_string(),
    ];
    let output = ftplib(&python, &server, flags, &steps);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "ftplib failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read(&down).unwrap(), data);
    assert!(stdout.contains("mlsd py.bin file 2097157"), "{stdout}");
    assert!(stdout.contains("size 2097157"), "{stdout}");
}

#[test]
fn ftplib_reusing_session_tls13() {
    ftplib_round_trip(Tls::V13);
}

#[test]
fn ftplib_reusing_session_tls12() {
    ftplib_round_trip(Tls::V12);
}

/// Stock `ftplib.FTP_TLS` opens data connections with fresh TLS sessions: refused under the default policy
/// (that is the point of it), and served when the operator turns the resumption requirement off.
#[test]
fn stock_ftplib_needs_resumption_off() {
    let Some(python) = peer("python3") else {
        return;
    };
    let strict = TestServer::start(Tls::V13, ResumptionPolicy::Required);
    let refused = ftplib(&python, &strict, &["--stock"], &["list".to_string()]);
    assert!(
        !refused.status.success(),
        "stock ftplib must be refused under Required"
    );
    // The data handshake is refused with a TLS access_denied alert (then 522 on the control connection).
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("522") || stderr.contains("ACCESS_DENIED"),
        "expected a refused data handshake: {stderr}"
    );

    let lenient = TestServer::start(Tls::V13, ResumptionPolicy::Off);
    let local = TempDir::new("stock-local");
    let up = local.path().join("up.txt");
    std::fs::write(&up, b"stock ftplib works\n").unwrap();
    let steps = [
        format!("put:{}:stock.txt", up.display()),
        "list".to_string(),
    ];
    let output = ftplib(&python, &lenient, &["--stock"], &steps);
    assert!(
        output.status.success(),
        "stock ftplib under Off failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // ftplib calls unwrap() after STOR: it only succeeds when the server answered close_notify.
    assert_eq!(
        std::fs::read(lenient.root.path().join("stock.txt")).unwrap(),
        b"stock ftplib works\n"
    );
    std::thread::sleep(Duration::from_millis(10));
}

/// Our own client (ftps-client-blocking) against our server: the same engine on both ends, over real sockets.
fn own_client_round_trip(tls: Tls) {
    use std::io::{Read, Write};
    let server = TestServer::start(tls, ResumptionPolicy::Required);
    let versions = match tls {
        Tls::V12 => ftps_client_blocking::TlsVersions::Tls12Only,
        Tls::V13 => ftps_client_blocking::TlsVersions::Tls13Only,
    };
    let config = ftps_client_blocking::ClientConfig::new()
        .ca_file(&server.cert_file)
        .tls_versions(versions);
    let mut client =
        ftps_client_blocking::Client::connect("localhost", server.addr.port(), config).unwrap();
    client.login(USER, PASSWORD).unwrap();

    let data = random_bytes(4 * 1024 * 1024 + 3, 3);
    let mut upload = client.stor("big.bin").unwrap();
    upload.write_all(&data).unwrap();
    let report = upload.finish().unwrap();
    assert!(report.tls_resumed && report.clean_close, "{report:?}");
    assert_eq!(
        std::fs::read(server.root.path().join("big.bin")).unwrap(),
        data
    );

    let mut download = client.retr("big.bin", 0).unwrap();
    let mut back = Vec::new();
    download.read_to_end(&mut back).unwrap();
    let report = download.finish().unwrap();
    assert!(report.tls_resumed && report.clean_close, "{report:?}");
    assert_eq!(back, data);

    // Many small uploads in one session: every data connection resumes this control session.
    for i in 0..100 {
        let mut upload = client.stor(&format!("small{i}.txt")).unwrap();
        upload
            .write_all(format!("small file {i}\n").as_bytes())
            .unwrap();
        let report = upload.finish().unwrap();
        assert!(report.tls_resumed, "upload {i} did not resume: {report:?}");
    }
    let names: Vec<String> = client
        .list(None)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.iter().any(|n| n == "small99.txt") && names.iter().any(|n| n == "big.bin"));
    assert_eq!(client.size("big.bin").unwrap(), data.len() as u64);
    client.quit().unwrap();
}

#[test]
fn own_client_tls13() {
    own_client_round_trip(Tls::V13);
}

#[test]
fn own_client_tls12() {
    own_client_round_trip(Tls::V12);
}

/// `examples/custom_storage.rs` (a library embedding with its own `Storage`) serves curl: the drop box lists
/// README.txt and inbox, serves README.txt byte for byte, takes uploads into /inbox and refuses them elsewhere.
#[test]
fn custom_storage_example_serves_curl() {
    let Some(curl_bin) = peer("curl") else {
        return;
    };
    // Built now so it is never stale (`cargo test --test interop` does not build examples).
    let binary = ftps_testkit::build_example(env!("CARGO"), "ftps-server-smol", "custom_storage");

    // Port 0: the example prints the address it got as its first line.
    let (_example, lines) = ftps_testkit::spawn_with_stdout_lines(
        Command::new(&binary)
            .arg("0")
            .stderr(std::process::Stdio::null()),
    );
    let first = lines
        .recv_timeout(Duration::from_secs(30))
        .expect("the example printed nothing within 30 s");
    let addr = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();

    // The example's self-signed certificate is new on every run: -k.
    let example_curl = || {
        let mut command = Command::new(&curl_bin);
        command.args([
            "-sS",
            "--ssl-reqd",
            "-k",
            "--max-time",
            "30",
            "-u",
            "demo:demo",
        ]);
        command
    };

    let listing = run(example_curl().arg(format!("ftp://{addr}/")));
    let names: Vec<String> = String::from_utf8(listing.stdout)
        .unwrap()
        .lines()
        .map(|line| line.rsplit(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["README.txt", "inbox"]);

    let readme = run(example_curl().arg(format!("ftp://{addr}/README.txt")));
    assert_eq!(
        readme.stdout,
        b"Welcome to the drop box.\nUpload your files into /inbox; they cannot be read back.\n"
    );

    let local = TempDir::new("drop-box-local");
    let file = local.path().join("report.bin");
    std::fs::write(&file, random_bytes(100_000, 4)).unwrap();
    run(example_curl()
        .arg("-T")
        .arg(&file)
        .arg(format!("ftp://{addr}/inbox/")));
    let inbox = run(example_curl().arg(format!("ftp://{addr}/inbox/")));
    let inbox = String::from_utf8(inbox.stdout).unwrap();
    assert_eq!(inbox.lines().count(), 1, "{inbox}");
    assert!(inbox.contains(" 100000 "), "{inbox}");
    assert!(inbox.trim_end().ends_with(" report.bin"), "{inbox}");

    // Outside /inbox the backend refuses the upload; curl reports the refused STOR (exit 25).
    let refused = example_curl()
        .arg("-T")
        .arg(&file)
        .arg(format!("ftp://{addr}/"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(25), "{refused:?}");
    // And the inbox is write-only: the upload cannot be read back.
    let read_back = example_curl()
        .arg(format!("ftp://{addr}/inbox/report.bin"))
        .output()
        .unwrap();
    assert!(!read_back.status.success(), "{read_back:?}");
    assert!(read_back.stdout.is_empty());
}

/// Implicit FTPS (TLS from the first byte): curl with an `ftps://` URL uploads, lists and downloads, verifying
/// the certificate, with TLS 1.3 and with TLS 1.2.
#[test]
fn implicit_ftps_with_curl() {
    let Some(curl_bin) = peer("curl") else {
        return;
    };
    for (tls, seed) in [(Tls::V13, 5), (Tls::V12, 6)] {
        let server = start_implicit(tls);
        let url = |path: &str| format!("ftps://{}/{path}", server.addr);
        let local = TempDir::new("implicit-local");
        let file = local.path().join("implicit.bin");
        let data = random_bytes(1024 * 1024 + 3, seed);
        std::fs::write(&file, &data).unwrap();

        run(curl(&curl_bin, &server, tls)
            .arg("-T")
            .arg(&file)
            .arg(url("")));
        assert_eq!(
            std::fs::read(server.root.path().join("implicit.bin")).unwrap(),
            data
        );

        let listing = run(curl(&curl_bin, &server, tls).arg(url("")));
        let text = String::from_utf8(listing.stdout).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.trim_end().ends_with(" implicit.bin"), "{text}");

        let down = local.path().join("down.bin");
        run(curl(&curl_bin, &server, tls)
            .arg("-o")
            .arg(&down)
            .arg(url("implicit.bin")));
        assert_eq!(std::fs::read(&down).unwrap(), data);
    }
}

/// [`TestServer::start`], but its `addr` is a second listener of the same server, in implicit FTPS mode (the
/// explicit listener of `start` stays up unused; `shutdown` on drop stops both).
fn start_implicit(tls: Tls) -> TestServer {
    let mut server = TestServer::start(tls, ResumptionPolicy::Required);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    server.addr = listener.local_addr().unwrap();
    let serving = server.server.clone();
    std::thread::spawn(move || {
        smol::block_on(async move {
            let listener = smol::net::TcpListener::try_from(listener).unwrap();
            let options = ListenerOptions {
                implicit: true,
                ..ListenerOptions::default()
            };
            serving.serve(listener, options).await
        })
    });
    server
}

// ----- site-to-site (FXP) -----
//
// The two servers listen on different loopback addresses (127.0.0.2 and 127.0.0.1), so that for the server
// connecting out (PORT) the other server is a third party, as in a real FXP between two hosts: without the
// site-to-site opt-in it refuses that PORT (RFC 2577 section 3), and with it the other server's full TLS
// handshake is accepted without resumption (it cannot resume our control session). The passive side is the
// TLS client (SSCN ON or CPSV) on 127.0.0.2.

/// A server allowing site-to-site transfers, on `bind_ip`.
fn fxp_server(bind_ip: &str) -> TestServer {
    TestServer::start_with(
        Tls::V13,
        SessionConfig {
            allow_site_to_site: true,
            ..SessionConfig::default()
        },
        bind_ip,
    )
}

/// Our client, logged in to `server` (the certificate names localhost and 127.0.0.1).
fn fxp_client(server: &TestServer) -> ftps_client_blocking::Client {
    let config = ftps_client_blocking::ClientConfig::new()
        .ca_file(&server.cert_file)
        .server_name("localhost")
        .reply_timeout(Duration::from_secs(20));
    let mut client = ftps_client_blocking::Client::connect_addr(server.addr, config).unwrap();
    client.login(USER, PASSWORD).unwrap();
    client
}

#[test]
fn site_to_site_prot_p_via_sscn_and_via_cpsv() {
    use ftps_client_blocking::fxp::{
        Side, SiteToSiteOptions, SiteToSiteProtection, TlsClientMethod,
    };
    let far = fxp_server("127.0.0.2");
    let near = fxp_server("127.0.0.1");
    let data = random_bytes(3 * 1024 * 1024 + 17, 11);
    std::fs::write(far.root.path().join("src.bin"), &data).unwrap();
    let mut far_client = fxp_client(&far);
    let mut near_client = fxp_client(&near);
    assert!(far_client.features().unwrap().advertised.has("SSCN"));

    // far -> near: SSCN on the source (far), which listens; near connects to it.
    let report = far_client
        .site_to_site(
            "src.bin",
            &mut near_client,
            "copy.bin",
            SiteToSiteProtection::RequirePrivate,
        )
        .unwrap();
    assert!(report.private);
    assert_eq!(
        report.tls_client,
        Some((Side::Source, TlsClientMethod::Sscn))
    );
    assert_eq!(report.passive, Side::Source);
    assert_eq!(report.destination_reply.code.get(), 226);
    assert_eq!(report.destination_size, Some(data.len() as u64));
    assert_eq!(
        std::fs::read(near.root.path().join("copy.bin")).unwrap(),
        data
    );

    // near -> far with CPSV on the destination (far): the other direction and the other method.
    let options = SiteToSiteOptions::new(SiteToSiteProtection::RequirePrivate)
        .method(TlsClientMethod::Cpsv)
        .tls_client(Side::Destination);
    let report = near_client
        .site_to_site_with("copy.bin", &mut far_client, "back.bin", options)
        .unwrap();
    assert_eq!(
        report.tls_client,
        Some((Side::Destination, TlsClientMethod::Cpsv))
    );
    assert_eq!(
        std::fs::read(far.root.path().join("back.bin")).unwrap(),
        data
    );

    // Both sessions still work for ordinary transfers afterwards (SSCN was switched off again).
    assert_eq!(far_client.size("back.bin").unwrap(), data.len() as u64);
    let mut download = far_client.retr("src.bin", 0).unwrap();
    let mut back = Vec::new();
    std::io::Read::read_to_end(&mut download, &mut back).unwrap();
    assert!(download.finish().unwrap().tls_resumed);
    assert_eq!(back, data);
    far_client.quit().unwrap();
    near_client.quit().unwrap();
}

#[test]
fn site_to_site_is_refused_without_the_opt_in() {
    use ftps_client_blocking::fxp::SiteToSiteProtection;
    let far = fxp_server("127.0.0.2");
    // The default policy: no PORT to a third party, no SSCN/CPSV in FEAT.
    let near = TestServer::start(Tls::V13, ResumptionPolicy::Required);
    std::fs::write(far.root.path().join("src.bin"), b"never copied").unwrap();
    let mut far_client = fxp_client(&far);
    let mut near_client = fxp_client(&near);
    let advertised = &near_client.features().unwrap().advertised;
    assert!(!advertised.has("SSCN") && !advertised.has("CPSV"));
    let error = far_client
        .site_to_site(
            "src.bin",
            &mut near_client,
            "copy.bin",
            SiteToSiteProtection::RequirePrivate,
        )
        .unwrap_err();
    assert_eq!(error.reply_code(), Some(504), "{error}");
    assert!(error.to_string().contains("site-to-site"), "{error}");
    // A missing source fails at once (550 to SIZE), before any data connection is set up.
    let started = std::time::Instant::now();
    let error = far_client
        .site_to_site(
            "missing.bin",
            &mut near_client,
            "copy.bin",
            SiteToSiteProtection::RequirePrivate,
        )
        .unwrap_err();
    assert_eq!(error.reply_code(), Some(550), "{error}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!near.root.path().join("copy.bin").exists());
    // Both sessions go on.
    far_client.noop().unwrap();
    near_client.noop().unwrap();
}

/// Our client logged in to vsftpd, trusting its certificate (written into `scratch`).
fn vsftpd_client(server: &Vsftpd, scratch: &TempDir) -> ftps_client_blocking::Client {
    let ca = scratch.path().join("vsftpd-ca.pem");
    std::fs::write(&ca, &server.cert.cert_pem).unwrap();
    let config = ftps_client_blocking::ClientConfig::new()
        .ca_file(&ca)
        .server_name("localhost")
        .reply_timeout(Duration::from_secs(20));
    let mut client = ftps_client_blocking::Client::connect_addr(server.addr, config).unwrap();
    client.login(VSFTPD_USER, VSFTPD_PASSWORD).unwrap();
    client
}

/// vsftpd offers neither SSCN nor CPSV: with a source that does not either, `PROT P` is refused by the client
/// before anything is sent; a server that does offer SSCN still cannot make vsftpd (`require_ssl_reuse`) accept
/// its data connection, and that failure is reported, not hung on (vsftpd closes that control session; our
/// server, the sender, saw a clean TLS close and says 226: only the receiver knows the data was refused).
#[test]
fn site_to_site_prot_p_with_vsftpd_fails_clearly() {
    use ftps_client_blocking::fxp::SiteToSiteProtection;
    let Some(vsftpd) = Vsftpd::start() else {
        return;
    };
    let scratch = TempDir::new("fxp-vsftpd");
    let ours = TestServer::start(Tls::V13, ResumptionPolicy::Required);
    std::fs::write(ours.root.path().join("src.bin"), b"payload").unwrap();
    let mut source = fxp_client(&ours);
    let mut destination = vsftpd_client(&vsftpd, &scratch);
    let error = source
        .site_to_site(
            "src.bin",
            &mut destination,
            "copy.bin",
            SiteToSiteProtection::RequirePrivate,
        )
        .unwrap_err();
    assert!(
        matches!(error, ftps_client_blocking::Error::Protocol(ref text) if text.contains("SSCN or CPSV")),
        "{error}"
    );

    let with_sscn = fxp_server("127.0.0.1");
    std::fs::write(with_sscn.root.path().join("src.bin"), b"payload").unwrap();
    let mut source = fxp_client(&with_sscn);
    let started = std::time::Instant::now();
    let error = source
        .site_to_site(
            "src.bin",
            &mut destination,
            "copy.bin",
            SiteToSiteProtection::RequirePrivate,
        )
        .unwrap_err();
    // vsftpd refuses the handshake (522; it also ends that control session), rather than hanging.
    assert_eq!(error.reply_code(), Some(522), "{error}");
    assert!(started.elapsed() < Duration::from_secs(20), "{error}");
    source.noop().unwrap();
}

/// The explicit clear-data choice between our server and vsftpd (configured to allow `PROT C` data): `PROT C`
/// on both, the file copied byte for byte. vsftpd needs no `port_promiscuous` here: on loopback our server has
/// the client's IP.
#[test]
fn site_to_site_clear_between_our_server_and_vsftpd() {
    use ftps_client_blocking::fxp::SiteToSiteProtection;
    let Some(vsftpd) = Vsftpd::start_with("force_local_data_ssl=NO\n") else {
        return;
    };
    let scratch = TempDir::new("fxp-vsftpd-clear");
    let ours = TestServer::start_with(
        Tls::V13,
        SessionConfig {
            allow_site_to_site: true,
            require_tls_data: false,
            ..SessionConfig::default()
        },
        "127.0.0.1",
    );
    let data = random_bytes(1024 * 1024 + 5, 23);
    std::fs::write(ours.root.path().join("src.bin"), &data).unwrap();
    let mut ours_client = fxp_client(&ours);
    let mut vsftpd_client = vsftpd_client(&vsftpd, &scratch);
    let report = ours_client
        .site_to_site(
            "src.bin",
            &mut vsftpd_client,
            "copy.bin",
            SiteToSiteProtection::Clear,
        )
        .unwrap();
    assert!(!report.private && report.tls_client.is_none());
    assert_eq!(std::fs::read(vsftpd.home.join("copy.bin")).unwrap(), data);
    // And back, vsftpd as the source.
    let report = vsftpd_client
        .site_to_site(
            "copy.bin",
            &mut ours_client,
            "back.bin",
            SiteToSiteProtection::Clear,
        )
        .unwrap();
    assert_eq!(report.destination_size, Some(data.len() as u64));
    assert_eq!(
        std::fs::read(ours.root.path().join("back.bin")).unwrap(),
        data
    );
}

/// `PROT C` chosen explicitly between two of our servers (both allow clear data): the sender's TCP FIN ends the
/// file, the receiver's EOF ends the transfer.
#[test]
fn site_to_site_clear_between_our_servers() {
    use ftps_client_blocking::fxp::SiteToSiteProtection;
    let config = SessionConfig {
        allow_site_to_site: true,
        require_tls_data: false,
        ..SessionConfig::default()
    };
    let far = TestServer::start_with(Tls::V12, config.clone(), "127.0.0.2");
    let near = TestServer::start_with(Tls::V12, config, "127.0.0.1");
    let data = random_bytes(2 * 1024 * 1024 + 1, 31);
    std::fs::write(far.root.path().join("src.bin"), &data).unwrap();
    let mut far_client = fxp_client(&far);
    let mut near_client = fxp_client(&near);
    let report = far_client
        .site_to_site(
            "src.bin",
            &mut near_client,
            "copy.bin",
            SiteToSiteProtection::Clear,
        )
        .unwrap();
    assert!(!report.private && report.tls_client.is_none());
    assert_eq!(
        std::fs::read(near.root.path().join("copy.bin")).unwrap(),
        data
    );
}

// ----- metrics -----

/// `ftps-server --metrics ADDR` serves Prometheus text at `/metrics`: curl moves files, a wrong password and a
/// missing file fail, and the scrape counts each; Python's `prometheus_client` parser reads the whole page (the
/// format Prometheus itself accepts).
#[test]
fn metrics_endpoint_counts_what_curl_did() {
    let (Some(curl_bin), Some(python)) = (peer("curl"), peer("python3")) else {
        return;
    };
    let parser_present = Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .status()
        .is_ok_and(|s| s.success());
    if !parser_present {
        ftps_testkit::skip::<()>("prometheus_client (PyPI) not installed");
        return;
    }
    let dir = TempDir::new("metrics");
    let state = dir.path().join("state");
    let added = Command::new(env!("CARGO_BIN_EXE_ftps-server"))
        .arg("--state-dir")
        .arg(&state)
        .args(["user", "add", USER, "--home", "/"])
        .env("FTPS_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    // Port 0 for both: the server says which ports it got (a port picked beforehand may be taken meanwhile by
    // another test's connection).
    let (_server, lines) = ftps_testkit::spawn_with_stdout_lines(
        Command::new(env!("CARGO_BIN_EXE_ftps-server"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state-dir")
            .arg(&state)
            .args(["--listen", "127.0.0.1:0", "--metrics", "127.0.0.1:0"])
            .stderr(std::process::Stdio::null()),
    );
    let (mut port, mut metrics_port) = (0, 0);
    let mut announced = String::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(10)) {
        announced.push_str(&line);
        announced.push('\n');
        let after = |prefix: &str| {
            line.split_once(prefix)
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|digits| digits.parse::<u16>().ok())
        };
        if let Some(p) = after("listening on 127.0.0.1:") {
            port = p;
        }
        if let Some(p) = after("metrics on http://127.0.0.1:") {
            metrics_port = p;
            break;
        }
    }
    assert!(port != 0 && metrics_port != 0, "{announced}");
    assert!(ftps_testkit::wait_for_listener(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10)
    ));

    let url = |path: &str| format!("ftp://127.0.0.1:{port}/{path}");
    let curl = |password: &str| {
        let mut command = Command::new(&curl_bin);
        command
            .args(["-sS", "--ssl-reqd", "--insecure", "--max-time", "60"])
            .args(["-u", &format!("{USER}:{password}")]);
        command
    };
    let local = TempDir::new("metrics-local");
    let mut upload = curl(PASSWORD);
    for i in 0..3 {
        let file = local.path().join(format!("f{i}.bin"));
        std::fs::write(&file, random_bytes(1000 + i, i as u64)).unwrap();
        upload.arg("-T").arg(&file).arg(url(""));
    }
    run(&mut upload);
    run(curl(PASSWORD).arg("-o").arg("/dev/null").arg(url("f2.bin")));
    let missing = curl(PASSWORD).arg(url("missing.bin")).output().unwrap();
    assert!(!missing.status.success());
    let refused = curl("wrong password").arg(url("")).output().unwrap();
    assert!(!refused.status.success());

    let scrape = |path: &str| {
        Command::new(&curl_bin)
            .args(["-sS", "--max-time", "10", "-w", "\n%{http_code}"])
            .arg(format!("http://127.0.0.1:{metrics_port}{path}"))
            .output()
            .unwrap()
    };
    let page = String::from_utf8(scrape("/metrics").stdout).unwrap();
    let (text, status) = page.rsplit_once('\n').unwrap();
    assert_eq!(status, "200", "{page}");
    let value = |sample: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
            .parse()
            .unwrap()
    };
    assert_eq!(value("ftps_logins_total{result=\"ok\"}"), 3);
    assert_eq!(value("ftps_logins_total{result=\"failed\"}"), 1);
    assert_eq!(
        value("ftps_transfers_total{direction=\"upload\",result=\"ok\"}"),
        3
    );
    assert_eq!(
        value("ftps_transfer_bytes_total{direction=\"upload\"}"),
        1000 + 1001 + 1002
    );
    assert!(value("ftps_transfer_bytes_total{direction=\"download\"}") >= 1002);
    assert_eq!(value("ftps_control_tls_total{version=\"1.3\"}"), 4);
    // Every data connection resumed its control session (the default policy requires it).
    assert!(value("ftps_data_tls_total{version=\"1.3\",resumed=\"true\"}") >= 4);
    assert_eq!(
        value("ftps_data_tls_total{version=\"1.3\",resumed=\"false\"}"),
        0
    );
    assert_eq!(value("ftps_data_resumption_refused_total"), 0);
    // curl asks SIZE before RETR: the missing file fails there.
    assert!(
        value("ftps_storage_errors_total{op=\"metadata\"}")
            + value("ftps_storage_errors_total{op=\"open_read\"}")
            >= 1
    );
    assert!(value("ftps_storage_seconds_count{op=\"open_write\"}") >= 3);
    assert!(value("ftps_replies_total{class=\"5xx\"}") >= 2);
    // Four curl sessions and the test's own check that the port listens.
    assert_eq!(value("ftps_sessions_opened_total"), 5);

    // The page is what Prometheus reads: every family parses, with the types announced.
    let check = Command::new(&python)
        .args([
            "-c",
            "import sys\nfrom prometheus_client.parser import text_string_to_metric_families\n\
             families = {f.name: f.type for f in text_string_to_metric_families(sys.stdin.read())}\n\
             assert families['ftps_storage_seconds'] == 'histogram', families\n\
             assert families['ftps_sessions'] == 'gauge', families\n\
             print(len(families))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = check.stdin.as_ref().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "prometheus_client rejects the page: {}",
        String::from_utf8_lossy(&checked.stderr)
    );
    eprintln!(
        "metrics: {} families parsed",
        String::from_utf8_lossy(&checked.stdout).trim()
    );

    let other = String::from_utf8(scrape("/").stdout).unwrap();
    assert!(other.ends_with("\n404"), "{other}");
}
