//! Faults survived: cut and abandoned uploads, what each reply says on a real disk, STOU, invisible uploads in
//! progress, released listeners, full disks, and our client's reports of downloads the server failed or cut.

use super::*;
use crate::attacks::command_with;

/// STOR over TLS up to the point where the upload's temp file exists and holds data.
pub(crate) fn start_tls_upload(
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
