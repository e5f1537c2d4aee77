//! The blocking client against a real vsftpd on loopback (explicit FTPS, `require_ssl_reuse=YES`,
//! `force_local_data_ssl=YES`), with TLS 1.3 and with the client capped to TLS 1.2. Certificates are verified:
//! the testkit's run-time certificate is trusted through the CA-file option.
//!
//! Skips (printing `skipped: ...`) where vsftpd is missing or this is not root, unless `FTPS_INTEROP=require`.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ftps_client_blocking::{
    Client, ClientConfig, DataConnectionMode, EntryKind, Error, TlsVersions,
};
use ftps_testkit::{pattern, TempDir, Vsftpd, VSFTPD_PASSWORD, VSFTPD_USER};

const TLS13: TlsVersions = TlsVersions::Tls13Only;
const TLS12: TlsVersions = TlsVersions::Tls12Only;

/// A running vsftpd, a scratch directory holding its CA file, and a client config that trusts it.
struct Setup {
    server: Vsftpd,
    scratch: TempDir,
    config: ClientConfig,
}

impl Setup {
    fn start(versions: TlsVersions) -> Option<Self> {
        let server = Vsftpd::start()?;
        let scratch = TempDir::new("client-blocking");
        let ca = scratch.path().join("ca.pem");
        std::fs::write(&ca, &server.cert.cert_pem).unwrap();
        let config = ClientConfig::new()
            .ca_file(&ca)
            .tls_versions(versions)
            .reply_timeout(Duration::from_secs(20));
        Some(Self {
            server,
            scratch,
            config,
        })
    }

    fn client(&self) -> Client {
        let mut client = Client::connect_addr(self.server.addr, self.config.clone()).unwrap();
        client.login(VSFTPD_USER, VSFTPD_PASSWORD).unwrap();
        client
    }

    /// A file in the server's home (what the logged-in user sees as its root).
    fn remote(&self, name: &str) -> PathBuf {
        self.server.home.join(name)
    }

    fn local(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }
}

fn upload(client: &mut Client, path: &str, content: &[u8]) -> ftps_client_blocking::TransferReport {
    let mut guard = client.stor(path).unwrap();
    guard.write_all(content).unwrap();
    guard.finish().unwrap()
}

fn download(client: &mut Client, path: &str, offset: u64) -> Vec<u8> {
    let mut guard = client.retr(path, offset).unwrap();
    let mut content = Vec::new();
    guard.read_to_end(&mut content).unwrap();
    let report = guard.finish().unwrap();
    assert_eq!(report.bytes, content.len() as u64);
    assert!(report.tls_resumed && report.clean_close, "{report:?}");
    content
}

fn directory_operations(versions: TlsVersions) {
    let Some(setup) = Setup::start(versions) else {
        return;
    };
    let mut client = setup.client();
    let tls = client.tls_info().unwrap();
    let expected = match versions {
        TLS12 => rustls::ProtocolVersion::TLSv1_2,
        _ => rustls::ProtocolVersion::TLSv1_3,
    };
    assert_eq!(tls.version, expected);
    assert!(!client.features().unwrap().mlsd, "vsftpd offers no MLSD");

    // No chroot: the session starts in the user's home, by its absolute path.
    let home = client.pwd().unwrap();
    assert_eq!(PathBuf::from(&home), setup.server.home);
    assert_eq!(client.mkdir("sub").unwrap(), format!("{home}/sub"));
    client.cwd("sub").unwrap();
    assert_eq!(client.pwd().unwrap(), format!("{home}/sub"));
    let report = upload(&mut client, "a.txt", b"hello, vsftpd\n");
    assert_eq!(report.bytes, 14);
    assert!(report.tls_resumed, "{report:?}");
    assert_eq!(report.reply.code.get(), 226);
    assert_eq!(report.tls.as_ref().unwrap().version, expected);
    client.cdup().unwrap();
    assert_eq!(client.pwd().unwrap(), home);

    // LIST (vsftpd has no MLSD), parsed by the engine.
    let entries = client.list(Some("sub")).unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].name, "a.txt");
    assert_eq!(entries[0].kind, EntryKind::File);
    assert_eq!(entries[0].size, Some(14));
    let root = client.list(None).unwrap();
    assert!(root
        .iter()
        .any(|e| e.name == "sub" && e.kind == EntryKind::Dir));
    assert_eq!(
        client.nlst(Some("sub")).unwrap(),
        vec!["sub/a.txt".to_string()]
    );
    // An empty directory: vsftpd still opens a data connection.
    client.mkdir("empty").unwrap();
    assert!(client.list(Some("empty")).unwrap().is_empty());

    assert_eq!(client.size("sub/a.txt").unwrap(), 14);
    let modified = client.mdtm("sub/a.txt").unwrap();
    let age = modified.elapsed().unwrap_or_default();
    assert!(age < Duration::from_secs(120), "mtime {modified:?}");

    client.rename("sub/a.txt", "b.txt").unwrap();
    assert_eq!(
        std::fs::read(setup.remote("b.txt")).unwrap(),
        b"hello, vsftpd\n"
    );
    let missing = client.size("sub/a.txt").unwrap_err();
    assert_eq!(missing.reply_code(), Some(550), "{missing}");
    assert!(missing.is_session_usable());
    client.delete("b.txt").unwrap();
    assert!(!setup.remote("b.txt").exists());
    client.rmdir("sub").unwrap();
    client.rmdir("empty").unwrap();
    assert!(!setup.remote("sub").exists());
    let refused = client.rmdir("sub").unwrap_err();
    assert!(
        matches!(refused, Error::Refused { code: 550, .. }),
        "{refused}"
    );
    client.noop().unwrap();
    // vsftpd has no MFMT: a refusal, and the session goes on.
    let refused = client
        .set_mtime("b.txt", std::time::SystemTime::now())
        .unwrap_err();
    assert!(refused.is_session_usable(), "{refused}");
    client.quit().unwrap();

    // Keepalive: off unless configured; with a zero interval the idle session always sends NOOP.
    let mut client = setup.client();
    assert!(!client.keepalive_if_idle().unwrap());
    let mut client = Client::connect_addr(
        setup.server.addr,
        setup.config.clone().keepalive(Some(Duration::ZERO)),
    )
    .unwrap();
    client.login(VSFTPD_USER, VSFTPD_PASSWORD).unwrap();
    assert!(client.keepalive_if_idle().unwrap());
    client.quit().unwrap();
}

#[test]
fn directory_operations_tls13() {
    directory_operations(TLS13);
}

#[test]
fn directory_operations_tls12() {
    directory_operations(TLS12);
}

fn many_small_uploads(versions: TlsVersions) {
    let Some(setup) = Setup::start(versions) else {
        return;
    };
    let mut client = setup.client();
    let started = Instant::now();
    for i in 0..200u32 {
        let content = format!("file {i}\n").repeat(1 + i as usize % 7);
        let report = upload(&mut client, &format!("small-{i}.txt"), content.as_bytes());
        assert_eq!(report.bytes, content.len() as u64);
        assert!(report.tls_resumed, "upload {i} did not resume: {report:?}");
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{versions:?}: 200 small uploads in {elapsed:?} ({:.0} files/s)",
        200.0 / elapsed.as_secs_f64()
    );
    for i in [0u32, 99, 199] {
        let expected = format!("file {i}\n").repeat(1 + i as usize % 7);
        assert_eq!(
            std::fs::read(setup.remote(&format!("small-{i}.txt"))).unwrap(),
            expected.as_bytes()
        );
    }
    assert_eq!(client.nlst(None).unwrap().len(), 200);
    client.quit().unwrap();
}

#[test]
fn two_hundred_small_uploads_resume_tls13() {
    many_small_uploads(TLS13);
}

#[test]
fn two_hundred_small_uploads_resume_tls12() {
    many_small_uploads(TLS12);
}

fn large_transfers(versions: TlsVersions) {
    let Some(setup) = Setup::start(versions) else {
        return;
    };
    let mut client = setup.client();
    let content = pattern(64 << 20, 64);

    let started = Instant::now();
    let mut guard = client.stor("big.bin").unwrap();
    for chunk in content.chunks(1 << 20) {
        guard.write_all(chunk).unwrap();
    }
    let report = guard.finish().unwrap();
    let up = started.elapsed();
    assert_eq!(report.bytes, content.len() as u64);
    assert!(report.tls_resumed, "{report:?}");
    let stored = std::fs::read(setup.remote("big.bin")).unwrap();
    assert!(stored == content, "uploaded content differs");
    drop(stored);

    let started = Instant::now();
    let mut guard = client.retr("big.bin", 0).unwrap();
    let mut received = Vec::with_capacity(content.len());
    let mut last_progress = 0;
    guard.on_progress(|n| last_progress = n);
    guard.read_to_end(&mut received).unwrap();
    let report = guard.finish().unwrap();
    let down = started.elapsed();
    assert_eq!(last_progress, content.len() as u64);
    assert_eq!(report.bytes, content.len() as u64);
    assert!(report.tls_resumed && report.clean_close, "{report:?}");
    assert!(received == content, "downloaded content differs");

    let mib = 64.0;
    eprintln!(
        "{versions:?}: 64 MiB upload {up:?} ({:.0} MiB/s), download {down:?} ({:.0} MiB/s)",
        mib / up.as_secs_f64(),
        mib / down.as_secs_f64()
    );
    client.quit().unwrap();
}

#[test]
fn large_upload_and_download_tls13() {
    large_transfers(TLS13);
}

#[test]
fn large_upload_and_download_tls12() {
    large_transfers(TLS12);
}

fn resume_and_abort(versions: TlsVersions) {
    let Some(setup) = Setup::start(versions) else {
        return;
    };
    let mut client = setup.client();
    let home = client.pwd().unwrap();
    let content = pattern(3 << 20, 7);

    // REST get: the local file holds a prefix.
    std::fs::write(setup.remote("r.bin"), &content).unwrap();
    let local = setup.local("r.bin");
    std::fs::write(&local, &content[..1_000_000]).unwrap();
    let mut seen = 0;
    let report = client
        .get_with_progress("r.bin", &local, true, |n| seen = n)
        .unwrap()
        .unwrap();
    assert_eq!(report.bytes, content.len() as u64 - 1_000_000);
    assert_eq!(seen, content.len() as u64);
    assert!(std::fs::read(&local).unwrap() == content);
    // Same size on both ends: nothing to do.
    assert!(client.get("r.bin", &local, true).unwrap().is_none());
    // A plain download at an offset.
    assert!(download(&mut client, "r.bin", 3_000_000) == content[3_000_000..]);

    // APPE put: the server holds a prefix.
    // (Uploaded, so the server's user owns it.)
    upload(&mut client, "p.bin", &content[..1_234_567]);
    let report = client.put(&local, "p.bin", true).unwrap().unwrap();
    assert_eq!(report.bytes, content.len() as u64 - 1_234_567);
    assert!(std::fs::read(setup.remote("p.bin")).unwrap() == content);
    assert!(client.put(&local, "p.bin", true).unwrap().is_none());
    // Without resume: the whole file.
    let report = client.put(&local, "q.bin", false).unwrap().unwrap();
    assert_eq!(report.bytes, content.len() as u64);

    // REST + STOR overwrites from the offset on.
    let mut guard = client.stor_at("q.bin", 10).unwrap();
    guard.write_all(b"0123456789").unwrap();
    guard.finish().unwrap();
    let stored = std::fs::read(setup.remote("q.bin")).unwrap();
    assert_eq!(&stored[..10], &content[..10]);
    assert_eq!(&stored[10..20], b"0123456789");
    assert_eq!(stored.len(), content.len());

    // ABOR in the middle of a download of a file too large to fit in socket buffers.
    std::fs::write(setup.remote("huge.bin"), pattern(48 << 20, 9)).unwrap();
    let mut guard = client.retr("huge.bin", 0).unwrap();
    let mut buf = vec![0; 1 << 20];
    guard.read_exact(&mut buf).unwrap();
    guard.abort().unwrap();
    assert_eq!(client.pwd().unwrap(), home);
    client.noop().unwrap();

    // Dropping a guard aborts quietly; the next call settles it.
    let mut guard = client.retr("huge.bin", 0).unwrap();
    guard.read_exact(&mut buf).unwrap();
    drop(guard);
    assert_eq!(client.pwd().unwrap(), home);
    assert!(download(&mut client, "r.bin", 0) == content);
    client.quit().unwrap();
}

#[test]
fn resume_and_abort_tls13() {
    resume_and_abort(TLS13);
}

#[test]
fn resume_and_abort_tls12() {
    resume_and_abort(TLS12);
}

#[test]
fn active_mode_transfers() {
    let Some(mut setup) = Setup::start(TLS13) else {
        return;
    };
    setup.config = setup.config.clone().data_mode(DataConnectionMode::Active);
    let mut client = setup.client();
    let content = pattern(700_000, 3);
    let report = upload(&mut client, "act.bin", &content);
    assert!(report.tls_resumed, "{report:?}");
    assert!(download(&mut client, "act.bin", 0) == content);
    assert_eq!(client.list(None).unwrap().len(), 1);
    client.quit().unwrap();
}

#[test]
fn certificates_are_verified() {
    let Some(setup) = Setup::start(TLS13) else {
        return;
    };
    // The system's roots do not know the test certificate.
    let err = Client::connect_addr(setup.server.addr, ClientConfig::new()).unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err}");
    // The trusted certificate, but for another name.
    let err = Client::connect_addr(
        setup.server.addr,
        setup.config.clone().server_name("ftp.example.com"),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err}");
    // By host name, which the certificate names.
    let mut client =
        Client::connect("localhost", setup.server.addr.port(), setup.config.clone()).unwrap();
    client.login(VSFTPD_USER, VSFTPD_PASSWORD).unwrap();
    client.quit().unwrap();
    // The loud opt-out accepts an unknown certificate, and data connections still work.
    let mut client = Client::connect_addr(
        setup.server.addr,
        ClientConfig::new()
            .system_roots(false)
            .danger_accept_invalid_certs(true),
    )
    .unwrap();
    client.login(VSFTPD_USER, VSFTPD_PASSWORD).unwrap();
    assert!(client.list(None).unwrap().is_empty());
    // A wrong password is a login refusal, and the session goes on.
    let err = Client::connect_addr(setup.server.addr, setup.config.clone())
        .unwrap()
        .login(VSFTPD_USER, "wrong")
        .unwrap_err();
    assert!(
        matches!(err, Error::LoginRefused { code: 530, .. }),
        "{err}"
    );
    client.quit().unwrap();
}

#[test]
fn a_silent_server_times_out_the_greeting() {
    // Needs no vsftpd: a listener that accepts and never speaks.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = std::thread::spawn(move || listener.accept().map(|(stream, _)| stream));
    let started = Instant::now();
    let err = Client::connect_addr(
        addr,
        ClientConfig::new()
            .danger_accept_invalid_certs(true)
            .system_roots(false)
            .reply_timeout(Duration::from_millis(300)),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Timeout("greeting")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.to_string(), "timed out: greeting");
    drop(holder.join().unwrap());
}

#[test]
fn a_refused_connection_is_a_connect_error() {
    let port = ftps_testkit::free_port();
    let err = Client::connect_addr(("127.0.0.1", port), ClientConfig::new().plain()).unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}

/// `examples/tokio_client.rs` (the engine driven on tokio) against vsftpd, which requires every data connection
/// to reuse the control connection's TLS session (`require_ssl_reuse`): put, list and get, byte for byte.
#[test]
fn the_tokio_client_example_puts_lists_and_gets_with_resumption() {
    let Some(setup) = Setup::start(TLS13) else {
        return;
    };
    let example =
        ftps_testkit::build_example(env!("CARGO"), "ftps-client-blocking", "tokio_client");
    let data = pattern(700_001, 41);
    let local = setup.local("tokio.bin");
    std::fs::write(&local, &data).unwrap();
    let mut command = std::process::Command::new(example);
    command
        .arg("127.0.0.1")
        .arg(setup.server.addr.port().to_string())
        .args([VSFTPD_USER, VSFTPD_PASSWORD])
        .arg(&local)
        .arg(setup.scratch.path().join("ca.pem"));
    let out = ftps_testkit::run_within(&mut command, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(setup.remote("tokio.bin")).unwrap() == data);
    assert!(std::fs::read(setup.local("tokio.bin.back")).unwrap() == data);
    for line in [
        "put tokio.bin: 700001 bytes, data TLS resumed",
        "get tokio.bin: 700001 bytes, data TLS resumed",
    ] {
        assert!(stdout.contains(line), "{stdout}");
    }
    assert!(stdout.contains("listed tokio.bin 700001"), "{stdout}");
}
