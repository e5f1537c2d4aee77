//! The `ftps` binary against our own server (ftps-server-smol, embedded on a loopback port): `get URL -` to
//! standard output and `put FILE... URL/` in one session.
//!
//! The server keeps its default policy: TLS on control and data connections, and every data connection must
//! resume *this* control session's TLS session. A counting authenticator shows how many logins a command made.
//! Every wait is bounded: `ftps` runs with `--timeout`, and each run is killed if it outlives [`WAIT`].

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::{self, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use ftps_proto::server::SessionConfig;
use ftps_server_smol::auth::{
    AuthOutcome, AuthenticatedUser, Authenticator, LoginAttempt, Permission, UserHome,
};
use ftps_server_smol::server::{ListenerOptions, Server, PRELIMINARY_REPLY_WAIT};
use ftps_server_smol::storage::{
    BoxFuture, DirEntry, LocalStorage, Metadata, ReadHandle, Storage, StorageError, Upload,
    WriteMode,
};
use ftps_testkit::{json_query, pattern, TempDir, TestCert};

const USER: &str = "alice";
const PASSWORD: &str = "pw-cli-own-server";
/// The longest one `ftps` run may take before the test kills it and fails.
const WAIT: Duration = Duration::from_secs(60);
/// The file [`BrokenReads`] fails to read after [`BROKEN_AFTER`] bytes.
const BROKEN_FILE: &str = "broken.bin";
const BROKEN_AFTER: usize = 300 * 1024;

/// One user; counts the logins it accepted.
struct CountingUser {
    logins: Arc<AtomicUsize>,
}

impl Authenticator for CountingUser {
    fn authenticate(&self, attempt: LoginAttempt) -> BoxFuture<'_, AuthOutcome> {
        Box::pin(async move {
            if attempt.user == USER && attempt.password == PASSWORD {
                self.logins.fetch_add(1, Ordering::SeqCst);
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

/// A directory on disk, except that reading [`BROKEN_FILE`] fails after [`BROKEN_AFTER`] bytes (a disk error
/// in the middle of a download).
struct BrokenReads {
    inner: LocalStorage,
    /// Set when [`FLAKY_FILE`]'s first download broke off (the test's proxy then cuts the session).
    flaky_broke: Arc<std::sync::atomic::AtomicBool>,
    /// Whether [`FLAKY_FILE`] was read from its start once already.
    flaky_served: std::sync::atomic::AtomicBool,
}

/// The file whose first download from its start breaks off after [`FLAKY_AFTER`] bytes (later reads work).
const FLAKY_FILE: &str = "flaky.bin";
const FLAKY_AFTER: usize = 1024 * 1024;

/// The first `left` bytes of `inner`, then an I/O error (and `broke` set).
struct BreaksOff {
    inner: Box<dyn smol::io::AsyncRead + Send + Unpin>,
    left: usize,
    broke: Arc<std::sync::atomic::AtomicBool>,
}

impl smol::io::AsyncRead for BreaksOff {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.left == 0 {
            self.broke.store(true, Ordering::SeqCst);
            return Poll::Ready(Err(io::Error::other("disk read error")));
        }
        let want = buf.len().min(self.left);
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_read(cx, &mut buf[..want]) {
            Poll::Ready(Ok(n)) => {
                this.left -= n;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
}

/// [`BROKEN_AFTER`] bytes of zeros, then an I/O error.
struct FailingReader {
    left: usize,
}

impl smol::io::AsyncRead for FailingReader {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.left == 0 {
            return Poll::Ready(Err(io::Error::other("disk read error")));
        }
        let n = buf.len().min(self.left);
        buf[..n].fill(0);
        self.left -= n;
        Poll::Ready(Ok(n))
    }
}

impl Storage for BrokenReads {
    fn metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        self.inner.metadata(path)
    }
    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        self.inner.list(path)
    }
    fn open_read<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        if path.trim_start_matches('/').ends_with(FLAKY_FILE)
            && offset == 0
            && !self.flaky_served.swap(true, Ordering::SeqCst)
        {
            return Box::pin(async move {
                let handle = self.inner.open_read(path, offset).await?;
                Ok(ReadHandle {
                    reader: Box::new(BreaksOff {
                        inner: handle.reader,
                        left: FLAKY_AFTER,
                        broke: Arc::clone(&self.flaky_broke),
                    }),
                    size: handle.size,
                })
            });
        }
        if path.trim_start_matches('/') != BROKEN_FILE {
            return self.inner.open_read(path, offset);
        }
        Box::pin(async {
            Ok(ReadHandle {
                reader: Box::new(FailingReader { left: BROKEN_AFTER }),
                size: 4 * BROKEN_AFTER as u64,
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
        time: SystemTime,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.set_modified(path, time)
    }
    fn set_mode<'a>(&'a self, path: &'a str, mode: u32) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.set_mode(path, mode)
    }
}

/// Our server on 127.0.0.1 serving `root`, a scratch directory to run `ftps` in, and the CA file it needs.
struct Site {
    addr: SocketAddr,
    flaky_broke: Arc<std::sync::atomic::AtomicBool>,
    root: TempDir,
    scratch: TempDir,
    ca: PathBuf,
    logins: Arc<AtomicUsize>,
    server: Server,
}

impl Site {
    fn start() -> Self {
        let root = TempDir::new("cli-own-root");
        let scratch = TempDir::new("cli-own-scratch");
        let cert = TestCert::generate();
        let ca = scratch.path().join("ca.pem");
        std::fs::write(&ca, &cert.cert_pem).unwrap();
        let tls = cert.server_config();
        let logins = Arc::new(AtomicUsize::new(0));
        let flaky_broke = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = Server::builder()
            .storage(Arc::new(BrokenReads {
                inner: LocalStorage::open(root.path()).unwrap(),
                flaky_broke: Arc::clone(&flaky_broke),
                flaky_served: std::sync::atomic::AtomicBool::new(false),
            }))
            .authenticator(Arc::new(CountingUser {
                logins: Arc::clone(&logins),
            }))
            .tls(Arc::new(tls))
            .session_config(SessionConfig {
                preliminary_reply_wait: PRELIMINARY_REPLY_WAIT,
                ..SessionConfig::default()
            })
            .build();
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
            flaky_broke,
            root,
            scratch,
            ca,
            logins,
            server,
        }
    }

    /// `ftps://alice@127.0.0.1:PORT/path` (the password goes through FTPS_PASSWORD).
    fn url(&self, path: &str) -> String {
        format!("ftps://{USER}@{}/{path}", self.addr)
    }

    /// `ftps --ca-file CA --timeout 20 ARGS` in the scratch directory, with the password in the environment.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ftps"));
        command
            .arg("--ca-file")
            .arg(&self.ca)
            .args(["--timeout", "20"])
            .args(args)
            .current_dir(self.scratch.path())
            .env("FTPS_PASSWORD", PASSWORD)
            .stdin(Stdio::null());
        command
    }

    fn ftps(&self, args: &[&str]) -> Output {
        run_bounded(self.command(args))
    }

    fn logins(&self) -> usize {
        self.logins.load(Ordering::SeqCst)
    }

    fn local(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    fn remote(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Names in the scratch directory besides the CA file.
    fn scratch_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.scratch.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "ca.pem")
            .collect();
        names.sort();
        names
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.server.shutdown();
    }
}

/// Waits for `child` at most `limit`; kills it and fails the test past that.
fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ftps still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads a child's pipe to its end on a thread of its own.
fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        pipe.read_to_end(&mut bytes).unwrap();
        bytes
    })
}

/// Runs `command` to its end (bounded by [`WAIT`]), capturing stdout and stderr.
fn run_bounded(mut command: Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = collect(child.stdout.take().unwrap());
    let stderr = collect(child.stderr.take().unwrap());
    let status = wait_bounded(&mut child, WAIT);
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Asserts exit code `code`; returns stderr.
fn exits(out: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    stderr
}

#[test]
fn get_to_stdout_writes_the_file_and_nothing_else() {
    let site = Site::start();
    // Several 256 KiB writes and a partial one.
    let content = pattern(3 * 1024 * 1024 + 12_345, 1);
    std::fs::write(site.remote("big.bin"), &content).unwrap();

    let out = site.ftps(&["get", &site.url("big.bin"), "-"]);
    let stderr = exits(&out, 0);
    assert!(out.stdout == content, "stdout differs from the file");
    // The summary still goes to stderr, one line.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("big.bin: 3.0 MiB in "), "{stderr}");
    // No local file, temporary or final.
    assert_eq!(site.scratch_files(), Vec::<String>::new());

    let out = site.ftps(&["-q", "get", &site.url("big.bin"), "-"]);
    assert_eq!(exits(&out, 0), "");
    assert!(out.stdout == content, "stdout differs from the file (-q)");

    std::fs::write(site.remote("empty.bin"), b"").unwrap();
    let out = site.ftps(&["get", &site.url("empty.bin"), "-", "--quiet"]);
    assert_eq!(exits(&out, 0), "");
    assert!(out.stdout.is_empty());

    // A missing file: 4, nothing on stdout.
    let out = site.ftps(&["get", &site.url("nope.bin"), "-"]);
    let stderr = exits(&out, 4);
    assert!(
        stderr.starts_with("ftps: get nope.bin: server refused: 550 "),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(site.scratch_files(), Vec::<String>::new());
}

/// `-v` traces the exchange on stderr, the evidence a push service shows that PROT P was on: commands
/// (PASS masked), replies, and the TLS of the control and of each data connection, with its resumption.
#[test]
fn verbose_traces_commands_replies_and_every_connections_tls() {
    let site = Site::start();
    std::fs::write(site.remote("f.bin"), pattern(5000, 9)).unwrap();
    let out = site.ftps(&["-v", "get", &site.url("f.bin"), "f.bin"]);
    let stderr = exits(&out, 0);
    let host = site.addr.ip().to_string();
    for expected in [
        "< 220 ",
        "> AUTH TLS",
        "* control connection: TLSv1_3 TLS13_",
        "> USER alice",
        "> PASS ****",
        "> PBSZ 0",
        "> PROT P",
        "< 200 ",
        "> RETR f.bin",
        "* data connection: TLSv1_3 TLS13_",
        "< 226 ",
    ] {
        assert!(
            stderr.contains(&format!("{host}: {expected}")),
            "{expected:?} missing from:\n{stderr}"
        );
    }
    assert!(stderr.contains(", resumed, 5000 bytes\n"), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    assert_eq!(
        std::fs::read(site.local("f.bin")).unwrap(),
        pattern(5000, 9)
    );
}

/// `cat` streams a file to stdout, `stat` prints SIZE and MDTM, `rmdir` removes an empty directory and
/// refuses a full one with 4.
#[test]
fn cat_stat_and_rmdir() {
    let site = Site::start();
    let content = pattern(70_000, 4);
    std::fs::write(site.remote("f.bin"), &content).unwrap();
    let out = site.ftps(&["-q", "cat", &site.url("f.bin")]);
    exits(&out, 0);
    assert!(out.stdout == content);

    let file = std::fs::File::options()
        .write(true)
        .open(site.remote("f.bin"))
        .unwrap();
    file.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .unwrap();
    let out = site.ftps(&["stat", &site.url("f.bin")]);
    exits(&out, 0);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "size: 70000\nmodify: 2023-11-14T22:13:20Z\n"
    );
    let stderr = exits(&site.ftps(&["stat", &site.url("nope.bin")]), 4);
    assert!(
        stderr.starts_with("ftps: stat nope.bin: server refused: 550"),
        "{stderr}"
    );

    std::fs::create_dir_all(site.remote("full/inner")).unwrap();
    std::fs::create_dir(site.remote("empty")).unwrap();
    exits(&site.ftps(&["rmdir", &site.url("empty")]), 0);
    assert!(!site.remote("empty").exists());
    exits(&site.ftps(&["rmdir", &site.url("full")]), 4);
    assert!(site.remote("full/inner").exists());
}

/// `mirror --delete` removes what is only on the destination (files, then emptied directories), in both
/// directions; `--dry-run` prints the plan and changes nothing.
#[test]
fn mirror_delete_and_dry_run() {
    let site = Site::start();
    let src = site.local("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a.bin"), b"a").unwrap();
    std::fs::write(src.join("d/b.bin"), b"bb").unwrap();
    std::fs::create_dir_all(site.remote("www/old/deeper")).unwrap();
    std::fs::write(site.remote("www/extra.bin"), b"x").unwrap();
    std::fs::write(site.remote("www/old/deeper/x.bin"), b"x").unwrap();

    let out = site.ftps(&[
        "-q",
        "mirror",
        "--upload",
        "--delete",
        "--dry-run",
        "src",
        &site.url("www/"),
    ]);
    exits(&out, 0);
    let plan = String::from_utf8_lossy(&out.stdout).into_owned();
    let expected = "mkdir d\ntransfer a.bin (missing)\ntransfer d/b.bin (missing)\n\
                    delete extra.bin\ndelete old/deeper/x.bin\ndelete old/deeper\ndelete old\n\
                    mirror (dry run): 2 to transfer (3 B), 0 skipped, 1 directories to create, 4 to delete\n";
    assert_eq!(plan, expected);
    assert!(
        site.remote("www/old/deeper/x.bin").exists(),
        "a dry run changed the server"
    );
    assert!(
        !site.remote("www/a.bin").exists(),
        "a dry run changed the server"
    );

    let out = site.ftps(&["mirror", "--upload", "--delete", "src", &site.url("www/")]);
    exits(&out, 0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(", 4 deleted"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_same_tree(&src, &site.remote("www"));

    // Download direction: a local extra file and directory go.
    std::fs::create_dir_all(site.local("copy/stale")).unwrap();
    std::fs::write(site.local("copy/stale/s.bin"), b"s").unwrap();
    exits(
        &site.ftps(&[
            "-q",
            "mirror",
            "--download",
            "--delete",
            &site.url("www/"),
            "copy",
        ]),
        0,
    );
    assert_same_tree(&src, &site.local("copy"));
}

/// `--json`: `ls` prints the entries as a JSON array; `put`, `get` and `mirror` print a summary with each
/// file's bytes and its data connection's TLS version and resumption (valid JSON, checked with Python).
#[test]
fn json_listing_and_transfer_summaries() {
    let site = Site::start();
    std::fs::create_dir(site.remote("d")).unwrap();
    std::fs::write(site.remote("d/q\"uote.bin"), pattern(1234, 5)).unwrap();
    std::fs::create_dir(site.remote("d/sub")).unwrap();
    let out = site.ftps(&["--json", "ls", &site.url("d/")]);
    exits(&out, 0);
    assert_eq!(
        json_query(
            &out.stdout,
            "sorted((e['name'], e['type'], e['size']) for e in doc if e['type'] == 'file')"
        ),
        "[('q\"uote.bin', 'file', 1234)]"
    );
    assert_eq!(
        json_query(
            &out.stdout,
            "[e['type'] for e in doc if e['name'] == 'sub']"
        ),
        "['dir']"
    );

    std::fs::write(site.local("up.bin"), pattern(4321, 6)).unwrap();
    let out = site.ftps(&["-q", "--json", "put", "up.bin", &site.url("d/up.bin")]);
    exits(&out, 0);
    assert_eq!(
        json_query(
            &out.stdout,
            "(doc['ok'], [(f['path'], f['bytes'], f['tls'], f['resumed']) for f in doc['files']])"
        ),
        "(True, [('d/up.bin', 4321, 'TLSv1_3', True)])"
    );
    let out = site.ftps(&[
        "-q",
        "--json",
        "mirror",
        "--download",
        &site.url("d/"),
        "copy",
    ]);
    exits(&out, 0);
    assert_eq!(
        json_query(
            &out.stdout,
            "sorted((f['path'], f['bytes']) for f in doc['files'])"
        ),
        "[('q\"uote.bin', 1234), ('up.bin', 4321)]"
    );
    let out = site.ftps(&["-q", "--json", "get", &site.url("d/nope.bin"), "x.bin"]);
    exits(&out, 4);
    assert_eq!(
        json_query(&out.stdout, "(doc['ok'], doc['files'])"),
        "(False, [])"
    );
}

/// A TCP proxy to `to` whose first connection is cut (both ways) as soon as `cut` is set: a session lost in
/// the middle of a transfer. Later connections pass. Returns the proxy's address.
fn cutting_proxy(to: SocketAddr, cut: Arc<std::sync::atomic::AtomicBool>) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, client) in listener.incoming().enumerate() {
            let Ok(client) = client else { return };
            let Ok(server) = std::net::TcpStream::connect(to) else {
                return;
            };
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server.try_clone().unwrap(), client.try_clone().unwrap()),
            ] {
                std::thread::spawn(move || {
                    let _ = io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
            if n == 0 {
                let cut = Arc::clone(&cut);
                std::thread::spawn(move || {
                    let deadline = Instant::now() + WAIT;
                    while !cut.load(Ordering::SeqCst) && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
            }
        }
    });
    addr
}

/// `--retries`: a download that breaks off mid-file and loses its session (the proxy cuts the control
/// connection) is continued on a new session from the bytes already here (REST), not started over; without
/// `--retries` it fails with no file left behind.
#[test]
fn retries_reopen_the_session_and_continue_from_the_last_byte() {
    let site = Site::start();
    let content = pattern(5 * FLAKY_AFTER + 777, 11);
    std::fs::write(site.remote(FLAKY_FILE), &content).unwrap();
    let proxy = cutting_proxy(site.addr, Arc::clone(&site.flaky_broke));
    let url = format!("ftps://{USER}@{proxy}/{FLAKY_FILE}");

    let logins = site.logins();
    let out = site.ftps(&["-q", "--json", "--retries", "3", "get", &url, "got.bin"]);
    let stderr = exits(&out, 0);
    assert!(stderr.contains("(retry 1 of 3)"), "{stderr}");
    assert!(
        std::fs::read(site.local("got.bin")).unwrap() == content,
        "the file differs"
    );
    assert_eq!(site.logins() - logins, 2, "one new session after the cut");
    // The last try moved only what was missing.
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    let bytes: u64 = summary
        .split("\"bytes\":")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!(bytes < content.len() as u64, "{summary}");
    assert!(
        bytes + FLAKY_AFTER as u64 >= content.len() as u64,
        "{summary}"
    );
    assert_eq!(site.scratch_files(), vec!["got.bin".to_string()]);
}

/// Without `--retries`, the same break fails the run (5) and leaves nothing behind.
#[test]
fn without_retries_a_broken_download_fails_and_leaves_nothing() {
    let site = Site::start();
    std::fs::write(site.remote(FLAKY_FILE), pattern(3 * FLAKY_AFTER, 12)).unwrap();
    let out = site.ftps(&["-q", "get", &site.url(FLAKY_FILE), "got.bin"]);
    let stderr = exits(&out, 5);
    assert!(!stderr.contains("retry"), "{stderr}");
    assert_eq!(site.scratch_files(), Vec::<String>::new());
}

/// Reads a FIFO opened non-blocking until `done` is set and nothing more comes.
fn drain_fifo(mut pipe: std::fs::File, done: &std::sync::atomic::AtomicBool) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        let finished = done.load(Ordering::SeqCst);
        match pipe.read(&mut buf) {
            Ok(n) if n > 0 => bytes.extend_from_slice(&buf[..n]),
            // No writer (yet, or any more), or nothing to read right now.
            Ok(_) | Err(_) if finished => return bytes,
            _ => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// `get URL DEST` where DEST is a FIFO or a character device writes into it and never replaces it: the
/// temporary-file-and-rename of a regular download, run as root with `/dev/null`, once replaced the machine's
/// `/dev/null` with a regular file.
#[test]
fn get_into_a_fifo_or_a_device_writes_in_place() {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let site = Site::start();
    let content = pattern(700_000, 3);
    std::fs::write(site.remote("f.bin"), &content).unwrap();

    let fifo = site.local("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo failed");
    // The reader opens without waiting for a writer (O_NONBLOCK on Linux) and reads until ftps has exited
    // and the pipe is drained: bounded whatever ftps does to the FIFO.
    let pipe = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(0o4000)
        .open(&fifo)
        .unwrap();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || drain_fifo(pipe, &done))
    };
    let out = site.ftps(&["get", &site.url("f.bin"), fifo.to_str().unwrap()]);
    done.store(true, Ordering::SeqCst);
    exits(&out, 0);
    assert!(
        reader.join().unwrap() == content,
        "the FIFO's reader got other bytes"
    );
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());

    // A null device node of our own (mknod needs root, as the damage did).
    let null = site.local("null");
    if ftps_testkit::require_root("a device node (mknod)").is_some() {
        let made = Command::new("mknod")
            .arg(&null)
            .args(["c", "1", "3"])
            .status();
        assert!(made.is_ok_and(|s| s.success()), "mknod failed");
        let out = site.ftps(&["get", &site.url("f.bin"), null.to_str().unwrap()]);
        exits(&out, 0);
        assert!(std::fs::metadata(&null)
            .unwrap()
            .file_type()
            .is_char_device());
    }
    // No temporary file left beside them.
    let mut expected = vec!["pipe".to_string()];
    if null.exists() {
        expected.insert(0, "null".into());
    }
    assert_eq!(site.scratch_files(), expected);
}

#[test]
fn get_to_stdout_that_breaks_off_fails_with_5() {
    let site = Site::start();
    // The server's disk fails after BROKEN_AFTER bytes: what arrived may be on stdout, but the download is
    // not complete and must not pass for complete.
    let out = site.ftps(&["-q", "get", &site.url(BROKEN_FILE), "-"]);
    let stderr = exits(&out, 5);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("ftps: get {BROKEN_FILE}: ")),
        "{stderr}"
    );
    assert!(out.stdout.len() <= BROKEN_AFTER, "{}", out.stdout.len());
    assert!(out.stdout.iter().all(|&b| b == 0));
}

#[test]
fn get_to_stdout_usage_error_before_connecting() {
    let site = Site::start();
    std::fs::write(site.remote("f.bin"), b"data").unwrap();
    let out = site.ftps(&["get", "-c", &site.url("f.bin"), "-"]);
    let stderr = exits(&out, 1);
    assert_eq!(
        stderr,
        "ftps: -c/--continue cannot resume standard output ('-')\n"
    );
    assert!(out.stdout.is_empty());
    assert_eq!(site.logins(), 0);
}

/// `ftps get URL - | head -c 10`: the reader goes away; `ftps` stops downloading and exits 6 without a word.
#[test]
fn get_to_stdout_into_a_closed_pipe_ends_quietly() {
    let site = Site::start();
    // Far more than a pipe buffer (64 KiB) and our 256 KiB write unit: the write must hit the closed pipe.
    let content = pattern(8 * 1024 * 1024, 2);
    std::fs::write(site.remote("big.bin"), &content).unwrap();

    let mut child = site
        .command(&["get", &site.url("big.bin"), "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let mut stdout = child.stdout.take().unwrap();
    let mut head = [0u8; 10];
    stdout.read_exact(&mut head).unwrap();
    drop(stdout);
    let status = wait_bounded(&mut child, WAIT);
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    assert_eq!(head, content[..10]);
    assert_eq!(status.code(), Some(6), "stderr: {stderr}");
    assert_eq!(stderr, "", "no error line, no summary, no panic");
}

#[test]
fn put_several_files_in_one_session() {
    let site = Site::start();
    let files = [
        ("a.txt", b"hello\n".to_vec()),
        ("b.bin", pattern(1024 * 1024 + 3, 3)),
        ("c.bin", Vec::new()),
    ];
    for (name, content) in &files {
        std::fs::write(site.local(name), content).unwrap();
    }
    std::fs::create_dir(site.remote("up")).unwrap();

    let out = site.ftps(&["put", "a.txt", "b.bin", "c.bin", &site.url("up/")]);
    let stderr = exits(&out, 0);
    assert!(out.stdout.is_empty());
    // One summary line per file, in order.
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 3, "{stderr}");
    for (line, (name, _)) in lines.iter().zip(&files) {
        assert!(line.starts_with(&format!("up/{name}: ")), "{stderr}");
    }
    for (name, content) in &files {
        let remote = std::fs::read(site.remote("up").join(name)).unwrap();
        assert!(&remote == content, "up/{name} differs");
    }
    // One login for all three; the server's default policy also refused any data connection that did not
    // resume that session's TLS session.
    assert_eq!(site.logins(), 1);

    // -q: nothing at all on success; -c applies to each file (all complete: nothing to send).
    let out = site.ftps(&["-q", "put", "-c", "a.txt", "b.bin", &site.url("up/")]);
    assert_eq!(exits(&out, 0), "");
    assert!(out.stdout.is_empty());
    assert_eq!(site.logins(), 2);

    // -c continues each partial remote file.
    let partial = &files[1].1[..500_000];
    std::fs::write(site.remote("up/b.bin"), partial).unwrap();
    std::fs::write(site.remote("up/a.txt"), b"hel").unwrap();
    let out = site.ftps(&["-q", "put", "b.bin", "a.txt", &site.url("up/"), "-c"]);
    assert_eq!(exits(&out, 0), "");
    assert!(std::fs::read(site.remote("up/b.bin")).unwrap() == files[1].1);
    assert_eq!(std::fs::read(site.remote("up/a.txt")).unwrap(), b"hello\n");
    assert_eq!(site.logins(), 3);
}

#[test]
fn put_several_files_checks_before_connecting_and_stops_at_the_first_failure() {
    let site = Site::start();
    std::fs::write(site.local("a.txt"), b"a").unwrap();
    std::fs::write(site.local("b.txt"), b"b").unwrap();
    std::fs::write(site.local("c.txt"), b"c").unwrap();
    std::fs::create_dir(site.local("dir")).unwrap();
    std::fs::create_dir(site.remote("up")).unwrap();

    // Not a directory URL: usage error, no connection.
    let out = site.ftps(&["put", "a.txt", "b.txt", &site.url("up/x")]);
    let stderr = exits(&out, 1);
    assert!(
        stderr.starts_with("ftps: several FILEs need a directory URL ending in '/'"),
        "{stderr}"
    );
    // A missing or non-regular local file: 6 before connecting, nothing uploaded.
    for bad in ["missing.txt", "dir"] {
        let out = site.ftps(&["put", "a.txt", bad, "c.txt", &site.url("up/")]);
        let stderr = exits(&out, 6);
        assert!(stderr.starts_with(&format!("ftps: {bad}: ")), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    assert_eq!(site.logins(), 0);
    assert_eq!(std::fs::read_dir(site.remote("up")).unwrap().count(), 0);

    // The second upload is refused (a directory is in the way): exit 4, and the third is not tried.
    std::fs::create_dir(site.remote("up/b.txt")).unwrap();
    let out = site.ftps(&["-q", "put", "a.txt", "b.txt", "c.txt", &site.url("up/")]);
    let stderr = exits(&out, 4);
    assert!(stderr.starts_with("ftps: put up/b.txt: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(std::fs::read(site.remote("up/a.txt")).unwrap(), b"a");
    assert!(!site.remote("up/c.txt").exists());
    assert_eq!(site.logins(), 1);
}

/// Asserts that every file of `expected` is in `actual` with the same bytes, and nothing else is.
fn assert_same_tree(expected: &std::path::Path, actual: &std::path::Path) {
    let names = |dir: &std::path::Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(expected), names(actual), "{}", actual.display());
    for name in names(expected) {
        if expected.join(&name).is_dir() {
            assert_same_tree(&expected.join(&name), &actual.join(&name));
            continue;
        }
        assert!(
            std::fs::read(expected.join(&name)).unwrap()
                == std::fs::read(actual.join(&name)).unwrap(),
            "{name} differs"
        );
    }
}

/// `--parallel 4`: a mirror up and down and a put of several files run on four sessions (four logins, each
/// with its own control connection and TLS session), every file exactly once and byte for byte; a failing
/// file still fails the run with its code.
#[test]
fn parallel_sessions_mirror_and_put_every_file_once() {
    const FILES: usize = 300;
    let site = Site::start();
    let small = site.local("small");
    std::fs::create_dir_all(small.join("sub")).unwrap();
    for i in 1..=FILES {
        let dir = if i % 3 == 0 {
            small.join("sub")
        } else {
            small.clone()
        };
        std::fs::write(
            dir.join(format!("f{i:04}.bin")),
            pattern(i * 13 % 5000, i as u32),
        )
        .unwrap();
    }
    let logins = site.logins();
    exits(
        &site.ftps(&[
            "-q",
            "--parallel",
            "4",
            "mirror",
            "--upload",
            "small",
            &site.url("up/"),
        ]),
        0,
    );
    assert_same_tree(&small, &site.remote("up"));
    assert_eq!(site.logins() - logins, 4);
    exits(
        &site.ftps(&[
            "-q",
            "--parallel",
            "4",
            "mirror",
            "--download",
            &site.url("up/"),
            "down",
        ]),
        0,
    );
    assert_same_tree(&small, &site.local("down"));
    // Nothing changed: nothing transferred, one session is enough.
    let logins = site.logins();
    let out = site.ftps(&[
        "--parallel",
        "4",
        "mirror",
        "--upload",
        "small",
        &site.url("up/"),
    ]);
    exits(&out, 0);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("mirror: 0 transferred"));
    assert_eq!(site.logins() - logins, 1);

    // Files 1..=20 at the top level (every third one is in sub/).
    let names: Vec<String> = (1..=20)
        .filter(|i| i % 3 != 0)
        .map(|i| format!("small/f{i:04}.bin"))
        .collect();
    let names_only: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut args = vec!["-q", "--parallel", "3", "put"];
    args.extend(names_only.iter().copied());
    let dest = site.url("put/");
    exits(&site.ftps(&["mkdir", &site.url("put")]), 0);
    args.push(&dest);
    exits(&site.ftps(&args), 0);
    for name in &names_only {
        let file = std::path::Path::new(name).file_name().unwrap();
        assert_eq!(
            std::fs::read(site.remote("put").join(file)).unwrap(),
            std::fs::read(site.local(name)).unwrap()
        );
    }
    // A refused file (the directory does not exist) fails the run with 4, whatever the sessions.
    let mut args = vec!["-q", "--parallel", "3", "put"];
    args.extend(names_only.iter().copied());
    let missing = site.url("no-such-dir/");
    args.push(&missing);
    exits(&site.ftps(&args), 4);
}

/// `get --parallel 4` of one large file: segments read at once by four sessions (`REST` + `RETR`, `ABOR`
/// at each segment's end) land byte for byte; a file under two segments goes as one stream on one session;
/// the JSON summary counts the whole file.
#[test]
fn parallel_get_of_one_large_file_reads_segments_on_several_sessions() {
    let site = Site::start();
    // Five 8 MiB segments and a tail that is not a whole segment.
    let big = pattern(40 * 1024 * 1024 + 12_345, 40);
    std::fs::write(site.remote("big.bin"), &big).unwrap();
    let logins = site.logins();
    let out = site.ftps(&[
        "-q",
        "--json",
        "--parallel",
        "4",
        "get",
        &site.url("big.bin"),
        "big.bin",
    ]);
    exits(&out, 0);
    assert!(std::fs::read(site.local("big.bin")).unwrap() == big);
    assert_eq!(site.logins() - logins, 4);
    assert_eq!(
        json_query(&out.stdout, "[f['bytes'] for f in doc['files']]"),
        format!("[{}]", big.len())
    );
    assert_eq!(site.scratch_files(), ["big.bin"], "no partial file left");

    let small = pattern(3 * 1024 * 1024, 3);
    std::fs::write(site.remote("small.bin"), &small).unwrap();
    let logins = site.logins();
    exits(
        &site.ftps(&[
            "-q",
            "--parallel",
            "4",
            "get",
            &site.url("small.bin"),
            "small.bin",
        ]),
        0,
    );
    assert!(std::fs::read(site.local("small.bin")).unwrap() == small);
    assert_eq!(site.logins() - logins, 1);
    // A missing file is refused before any segment: exit 4, nothing left behind.
    exits(
        &site.ftps(&[
            "-q",
            "--parallel",
            "4",
            "get",
            &site.url("nope.bin"),
            "nope.bin",
        ]),
        4,
    );
    assert_eq!(site.scratch_files(), ["big.bin", "small.bin"]);
}

/// "Many files, every client", for our own `ftps`: 1000 small files mirrored up and back down, 8 MiB both ways,
/// a listing, a rename, a delete and both resumes, each command one session, with TLS 1.3 and with TLS 1.2
/// (`--tls12`), under the server's default policy. The same matrix for the other clients is in
/// `ftps-server-smol/tests/interop/clients.rs`.
#[test]
fn a_thousand_files_both_ways_and_every_operation_with_tls13_and_tls12() {
    const FILES: usize = 1000;
    let site = Site::start();
    let small = site.local("small");
    std::fs::create_dir(&small).unwrap();
    for i in 1..=FILES {
        let len = if i == 1 { 0 } else { (i * 37) % 8192 + 1 };
        std::fs::write(small.join(format!("f{i:04}.bin")), pattern(len, i as u32)).unwrap();
    }
    let big = pattern(8 * 1024 * 1024, 8);
    std::fs::write(site.local("big.bin"), &big).unwrap();
    for (tls, flags) in [("tls13", &[][..]), ("tls12", &["--tls12"][..])] {
        let ftps = |args: &[&str]| -> Output {
            let mut all: Vec<&str> = flags.to_vec();
            all.push("-q");
            all.extend_from_slice(args);
            site.ftps(&all)
        };
        let logins = site.logins();
        let up = format!("{tls}/");
        exits(&ftps(&["mkdir", &site.url(tls)]), 0);
        exits(&ftps(&["mirror", "--upload", "small", &site.url(&up)]), 0);
        assert_same_tree(&small, &site.remote(tls));
        let down = format!("down-{tls}");
        exits(&ftps(&["mirror", "--download", &site.url(&up), &down]), 0);
        assert_same_tree(&small, &site.local(&down));
        let big_remote = format!("{tls}-big.bin");
        exits(&ftps(&["put", "big.bin", &site.url(&big_remote)]), 0);
        assert!(std::fs::read(site.remote(&big_remote)).unwrap() == big);
        let big_local = format!("{tls}-big.down");
        exits(&ftps(&["get", &site.url(&big_remote), &big_local]), 0);
        assert!(std::fs::read(site.local(&big_local)).unwrap() == big);
        let listing = ftps(&["ls", &site.url(&up)]);
        exits(&listing, 0);
        assert_eq!(
            String::from_utf8_lossy(&listing.stdout).lines().count(),
            FILES
        );
        exits(
            &ftps(&[
                "mv",
                &site.url(&format!("{tls}/f0002.bin")),
                &format!("{tls}/renamed.bin"),
            ]),
            0,
        );
        exits(&ftps(&["rm", &site.url(&format!("{tls}/f0003.bin"))]), 0);
        assert!(site.remote(tls).join("renamed.bin").exists());
        assert!(!site.remote(tls).join("f0002.bin").exists());
        assert!(!site.remote(tls).join("f0003.bin").exists());
        // Resume a download (REST) and an upload (SIZE, then REST/APPE of the rest).
        std::fs::write(site.local(&big_local), &big[..3_000_011]).unwrap();
        exits(&ftps(&["get", "-c", &site.url(&big_remote), &big_local]), 0);
        assert!(std::fs::read(site.local(&big_local)).unwrap() == big);
        std::fs::write(site.remote(&big_remote), &big[..3_000_011]).unwrap();
        exits(&ftps(&["put", "-c", "big.bin", &site.url(&big_remote)]), 0);
        assert!(std::fs::read(site.remote(&big_remote)).unwrap() == big);
        // One login per command.
        assert_eq!(site.logins() - logins, 10, "{tls}");
    }
}

/// `examples/tokio_client.rs` (the engine driven on tokio) against our server, whose default policy refuses a
/// data connection that does not resume the control session: put, list and get, byte for byte, every data
/// connection resumed.
#[test]
fn the_tokio_client_example_puts_lists_and_gets_with_resumption() {
    let example =
        ftps_testkit::build_example(env!("CARGO"), "ftps-client-blocking", "tokio_client");
    let site = Site::start();
    let data = pattern(1_500_017, 31);
    let local = site.local("tokio.bin");
    std::fs::write(&local, &data).unwrap();
    let mut command = Command::new(example);
    command
        .arg("127.0.0.1")
        .arg(site.addr.port().to_string())
        .args([USER, PASSWORD])
        .arg(&local)
        .arg(&site.ca);
    let out = run_bounded(command);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(site.remote("tokio.bin")).unwrap() == data);
    assert!(std::fs::read(site.local("tokio.bin.back")).unwrap() == data);
    assert!(
        stdout.contains("put tokio.bin: 1500017 bytes, data TLS resumed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("get tokio.bin: 1500017 bytes, data TLS resumed"),
        "{stdout}"
    );
    assert!(stdout.contains("listed tokio.bin 1500017"), "{stdout}");
    assert_eq!(site.logins(), 1);
}
