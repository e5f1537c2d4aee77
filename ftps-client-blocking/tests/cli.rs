//! Runs the `ftps` binary: help, usage errors and exit codes, and every command end to end against a real
//! vsftpd (skipped, printing `skipped: ...`, where vsftpd is missing or this is not root) and a real pyftpdlib
//! (skipped where python3 cannot import it). `FTPS_INTEROP=require` turns a skip into a failure.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;

use ftps_testkit::{
    json_query, pattern, Pyftpdlib, TempDir, TestCert, Vsftpd, PYFTPDLIB_PASSWORD, PYFTPDLIB_USER,
    VSFTPD_PASSWORD, VSFTPD_USER,
};

fn ftps(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ftps"))
        .args(args)
        .env_remove("FTPS_PASSWORD")
        .output()
        .unwrap()
}

#[test]
fn help_lists_every_subcommand_and_exit_code() {
    let out = ftps(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for command in [
        "ls", "get", "put", "cat", "stat", "rm", "mkdir", "rmdir", "mv", "mirror", "fxp",
    ] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{command} missing from:\n{help}"
        );
    }
    for code in [
        "0  success",
        "1  usage error",
        "2  connection",
        "3  login refused",
        "4  remote file error",
        "5  transfer failed",
        "6  local I/O error",
        "7  the server refused to protect data connections",
    ] {
        assert!(help.contains(code), "{code:?} missing from:\n{help}");
    }
}

#[test]
fn bad_url_exits_1_with_one_line() {
    let out = ftps(&["ls", "http://example.com/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        "ftps: bad URL http://example.com/: unsupported scheme \"http\" (expected ftps, ftpsi or ftp)\n"
    );
}

#[test]
fn unknown_option_exits_1_with_one_line() {
    let out = ftps(&["--bogus", "ls", "ftps://h/"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("ftps: unexpected argument '--bogus'"),
        "{err}"
    );
}

#[test]
fn missing_argument_is_named_on_the_one_line() {
    let out = ftps(&["get"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        "ftps: the following required arguments were not provided: <URL> (see 'ftps --help')\n"
    );
}

#[test]
fn missing_password_without_terminal_exits_1() {
    // Stdin and stderr are pipes here, so there is no one to prompt.
    let out = ftps(&["ls", "ftps://alice@h/"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("ftps: no password: put it in the URL or set FTPS_PASSWORD"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn refused_connection_exits_2() {
    let port = ftps_testkit::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_ftps"))
        .args([
            "get",
            &format!("ftps://alice@127.0.0.1:{port}/f"),
            "--timeout",
            "5",
        ])
        .env("FTPS_PASSWORD", "pw")
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.starts_with(&format!("ftps: connect to 127.0.0.1:{port}: ")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

// ----- end to end against vsftpd (skipped where it is not installed, or not root) -----

/// A running server (vsftpd or pyftpdlib), a scratch directory holding its CA file, and the way to run `ftps`
/// on it.
struct Site {
    /// Kept only to stop the server when the site is dropped.
    _server: Box<dyn std::any::Any>,
    addr: std::net::SocketAddr,
    /// What the server serves.
    home: PathBuf,
    user: &'static str,
    password: &'static str,
    scratch: TempDir,
    ca: PathBuf,
}

impl Site {
    /// A vsftpd site, or `None` (skipped).
    fn start() -> Option<Self> {
        let server = Vsftpd::start()?;
        let (addr, home, cert_pem) = (
            server.addr,
            server.home.clone(),
            server.cert.cert_pem.clone(),
        );
        Some(Self::new(
            Box::new(server),
            addr,
            home,
            &cert_pem,
            VSFTPD_USER,
            VSFTPD_PASSWORD,
        ))
    }

    /// A pyftpdlib site, or `None` (skipped).
    fn pyftpdlib() -> Option<Self> {
        let server = Pyftpdlib::start()?;
        let (addr, home, cert_pem) = (
            server.addr,
            server.home.clone(),
            server.cert.cert_pem.clone(),
        );
        Some(Self::new(
            Box::new(server),
            addr,
            home,
            &cert_pem,
            PYFTPDLIB_USER,
            PYFTPDLIB_PASSWORD,
        ))
    }

    fn new(
        server: Box<dyn std::any::Any>,
        addr: std::net::SocketAddr,
        home: PathBuf,
        cert_pem: &str,
        user: &'static str,
        password: &'static str,
    ) -> Self {
        let scratch = TempDir::new("cli");
        let ca = scratch.path().join("ca.pem");
        std::fs::write(&ca, cert_pem).unwrap();
        Self {
            _server: server,
            addr,
            home,
            user,
            password,
            scratch,
            ca,
        }
    }

    /// `ftps://USER@127.0.0.1:PORT/path` (the password goes through FTPS_PASSWORD).
    fn url(&self, path: &str) -> String {
        format!("ftps://{}@127.0.0.1:{}/{path}", self.user, self.addr.port())
    }

    /// Runs `ftps --ca-file CA ARGS` in the scratch directory with the right password.
    fn ftps(&self, args: &[&str]) -> Output {
        self.ftps_with_password(self.password, args)
    }

    fn ftps_with_password(&self, password: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ftps"))
            .arg("--ca-file")
            .arg(&self.ca)
            .args(["--timeout", "20"])
            .args(args)
            .current_dir(self.scratch.path())
            .env("FTPS_PASSWORD", password)
            .output()
            .unwrap()
    }

    fn local(&self, name: &str) -> PathBuf {
        self.scratch.path().join(name)
    }

    fn remote(&self, name: &str) -> PathBuf {
        self.home.join(name)
    }

    /// Makes a file written by the test (as root) writable by the FTP user, like its home.
    fn give_to_server_user(&self, path: &Path) {
        use std::os::unix::fs::MetadataExt;
        let home = std::fs::metadata(&self.home).unwrap();
        std::os::unix::fs::chown(path, Some(home.uid()), Some(home.gid())).unwrap();
    }

    /// Names in the scratch directory that look like leftover partial downloads.
    fn partial_files(&self) -> Vec<String> {
        std::fs::read_dir(self.scratch.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".part"))
            .collect()
    }
}

/// Asserts exit code 0 and returns stdout.
fn succeeds(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts the exit code and a one-line stderr; returns it.
fn fails(out: Output, code: i32) -> String {
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn vsftpd_file_commands() {
    let Some(site) = Site::start() else {
        return;
    };
    let content = pattern(300_000, 7);
    std::fs::write(site.local("a.bin"), &content).unwrap();

    // put, seen on the server's disk
    let out = succeeds(site.ftps(&["put", "a.bin", &site.url("a.bin")]));
    assert!(out.is_empty(), "{out}");
    assert_eq!(std::fs::read(site.remote("a.bin")).unwrap(), content);

    // ls shows it: type, size, time, name
    let listing = succeeds(site.ftps(&["ls", &site.url("")]));
    let line = listing
        .lines()
        .find(|l| l.ends_with(" a.bin"))
        .unwrap_or_else(|| panic!("a.bin missing from:\n{listing}"));
    let columns: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(columns.len(), 5, "{line}");
    assert_eq!(columns[0], "-");
    assert_eq!(columns[1], "300000");

    // get it back, byte-identical, without leaving a partial file
    succeeds(site.ftps(&["get", &site.url("a.bin"), "copy.bin"]));
    assert_eq!(std::fs::read(site.local("copy.bin")).unwrap(), content);
    // the default local name is the remote one
    std::fs::remove_file(site.local("a.bin")).unwrap();
    succeeds(site.ftps(&["-q", "get", &site.url("a.bin")]));
    assert_eq!(std::fs::read(site.local("a.bin")).unwrap(), content);
    assert!(
        site.partial_files().is_empty(),
        "{:?}",
        site.partial_files()
    );

    // get -c continues a partial file: its (deliberately wrong) first bytes stay, so only the
    // rest was transferred (REST)
    std::fs::write(site.local("partial.bin"), vec![0u8; 100_000]).unwrap();
    succeeds(site.ftps(&["get", "-c", &site.url("a.bin"), "partial.bin"]));
    let resumed = std::fs::read(site.local("partial.bin")).unwrap();
    assert_eq!(resumed.len(), content.len());
    assert!(resumed[..100_000].iter().all(|&b| b == 0));
    assert_eq!(resumed[100_000..], content[100_000..]);
    // ... and a complete file is left alone
    succeeds(site.ftps(&["get", "-c", &site.url("a.bin"), "partial.bin"]));
    assert_eq!(std::fs::read(site.local("partial.bin")).unwrap(), resumed);

    // put -c appends the rest of a partial remote file
    std::fs::write(site.remote("up.bin"), &content[..123_456]).unwrap();
    site.give_to_server_user(&site.remote("up.bin"));
    succeeds(site.ftps(&["put", "-c", "copy.bin", &site.url("up.bin")]));
    assert_eq!(std::fs::read(site.remote("up.bin")).unwrap(), content);

    // mkdir, mv into it, rm
    succeeds(site.ftps(&["mkdir", &site.url("newdir")]));
    assert!(site.remote("newdir").is_dir());
    succeeds(site.ftps(&["mv", &site.url("a.bin"), "newdir/b.bin"]));
    assert!(!site.remote("a.bin").exists());
    assert_eq!(std::fs::read(site.remote("newdir/b.bin")).unwrap(), content);
    succeeds(site.ftps(&["rm", &site.url("newdir/b.bin")]));
    assert!(!site.remote("newdir/b.bin").exists());
    let listing = succeeds(site.ftps(&["ls", &site.url("newdir")]));
    assert_eq!(listing, "");
}

#[test]
fn vsftpd_errors_map_to_exit_codes() {
    let Some(site) = Site::start() else {
        return;
    };
    // a missing remote file: 4, and no local file, partial or final
    let err = fails(site.ftps(&["get", &site.url("nope.bin")]), 4);
    assert!(
        err.starts_with("ftps: get nope.bin: server refused: 550 "),
        "{err}"
    );
    assert!(!site.local("nope.bin").exists());
    assert!(
        site.partial_files().is_empty(),
        "{:?}",
        site.partial_files()
    );
    let err = fails(site.ftps(&["rm", &site.url("nope.bin")]), 4);
    assert!(
        err.starts_with("ftps: rm nope.bin: server refused: 550 "),
        "{err}"
    );

    // a missing local file: 6, before connecting
    let err = fails(site.ftps(&["put", "missing.bin", &site.url("x")]), 6);
    assert!(err.starts_with("ftps: missing.bin: "), "{err}");

    // a wrong password: 3
    let err = fails(site.ftps_with_password("wrong", &["ls", &site.url("")]), 3);
    assert!(
        err.starts_with(&format!(
            "ftps: login as {VSFTPD_USER}: login refused: 530 "
        )),
        "{err}"
    );

    // the test certificate is not trusted without --ca-file: 2; --insecure skips the check
    let url = site.url("");
    let untrusted = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ftps"))
            .args(extra)
            .args(["ls", &url])
            .env("FTPS_PASSWORD", VSFTPD_PASSWORD)
            .output()
            .unwrap()
    };
    let err = fails(untrusted(&[]), 2);
    assert!(err.starts_with("ftps: TLS: "), "{err}");
    succeeds(untrusted(&["--insecure"]));
}

/// Creates `root` with a small tree: three files in three levels.
fn small_tree(root: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let files = vec![
        ("a.txt", b"top\n".to_vec()),
        ("sub/b.txt", pattern(5_000, 1)),
        ("sub/deeper/c.bin", pattern(70_000, 2)),
    ];
    for (path, content) in &files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    files
}

#[test]
fn vsftpd_mirror_upload_then_download() {
    let Some(site) = Site::start() else {
        return;
    };
    let files = small_tree(&site.local("src"));

    let out = succeeds(site.ftps(&["mirror", "--upload", "src", &site.url("site")]));
    assert_eq!(
        out,
        "mirror: 3 transferred (73.2 KiB), 0 skipped, 2 directories created\n"
    );
    for (path, content) in &files {
        let remote = site.remote("site").join(path);
        assert_eq!(&std::fs::read(&remote).unwrap(), content, "{path}");
    }
    // a second run finds everything up to date
    let out = succeeds(site.ftps(&["mirror", "--upload", "src", &site.url("site")]));
    assert_eq!(
        out,
        "mirror: 0 transferred (0 B), 3 skipped, 0 directories created\n"
    );
    // a changed file is sent again, and only it
    std::fs::write(site.local("src/sub/b.txt"), b"changed").unwrap();
    let out = succeeds(site.ftps(&["mirror", "src", &site.url("site")]));
    assert_eq!(
        out,
        "mirror: 1 transferred (7 B), 2 skipped, 0 directories created\n"
    );
    assert_eq!(
        std::fs::read(site.remote("site/sub/b.txt")).unwrap(),
        b"changed"
    );

    // download into a fresh directory, then again: nothing to do
    let out = succeeds(site.ftps(&["mirror", "--download", &site.url("site"), "dst"]));
    assert_eq!(
        out,
        "mirror: 3 transferred (68.4 KiB), 0 skipped, 2 directories created\n"
    );
    for (path, _) in &files {
        let remote = std::fs::read(site.remote("site").join(path)).unwrap();
        assert_eq!(std::fs::read(site.local("dst").join(path)).unwrap(), remote);
        // the download carries the server's time (LIST: to the minute)
        let remote_time = std::fs::metadata(site.remote("site").join(path))
            .unwrap()
            .modified()
            .unwrap();
        let local_time = std::fs::metadata(site.local("dst").join(path))
            .unwrap()
            .modified()
            .unwrap();
        let skew = remote_time
            .duration_since(local_time)
            .unwrap_or_else(|e| e.duration());
        assert!(skew < Duration::from_secs(61), "{path}: {skew:?}");
    }
    let out = succeeds(site.ftps(&["mirror", "--download", &site.url("site"), "dst"]));
    assert_eq!(
        out,
        "mirror: 0 transferred (0 B), 3 skipped, 0 directories created\n"
    );
    assert!(site.partial_files().is_empty());
}

/// `ftps fxp` between two vsftpd (which allow PROT C data here): neither offers SSCN or CPSV, so the default
/// (PROT P required) fails with exit 5 before any transfer, and `--clear` copies the file server to server.
/// Each server gets its password from its own variable.
/// The push-and-restore features against vsftpd (require_ssl_reuse): `--parallel` mirror both ways with
/// `--delete`, `-v` showing every data connection resumed, `--json`, `stat`, `cat` and `rmdir`.
#[test]
fn vsftpd_parallel_mirror_trace_json_stat_and_rmdir() {
    let Some(site) = Site::start() else {
        return;
    };
    let files = small_tree(&site.local("src"));
    let out = succeeds(site.ftps(&[
        "--parallel",
        "3",
        "mirror",
        "--upload",
        "src",
        &site.url("site"),
    ]));
    assert!(out.starts_with("mirror: 3 transferred"), "{out}");
    for (path, content) in &files {
        assert_eq!(
            &std::fs::read(site.remote("site").join(path)).unwrap(),
            content,
            "{path}"
        );
    }
    // An extra file on the server goes with --delete; the download side mirrors it back, in parallel.
    std::fs::write(site.local("extra.txt"), b"extra").unwrap();
    succeeds(site.ftps(&["put", "extra.txt", &site.url("site/extra.txt")]));
    let out = succeeds(site.ftps(&["mirror", "--upload", "--delete", "src", &site.url("site")]));
    assert!(out.contains(", 1 deleted"), "{out}");
    assert!(!site.remote("site/extra.txt").exists());
    succeeds(site.ftps(&[
        "-q",
        "--parallel",
        "3",
        "mirror",
        "--download",
        &site.url("site"),
        "dst",
    ]));
    for (path, content) in &files {
        assert_eq!(
            &std::fs::read(site.local("dst").join(path)).unwrap(),
            content,
            "{path}"
        );
    }

    // -v: vsftpd requires reuse, and every data connection says it resumed.
    let (first, content) = &files[0];
    let remote = format!("site/{first}");
    let out = site.ftps(&["-v", "-q", "cat", &site.url(&remote)]);
    assert_eq!(out.status.code(), Some(0));
    assert!(&out.stdout == content);
    let trace = String::from_utf8_lossy(&out.stderr);
    assert!(
        trace.contains("> PROT P") && trace.contains("> PASS ****"),
        "{trace}"
    );
    assert!(
        trace
            .lines()
            .any(|l| l.contains("* data connection: TLS") && l.contains(", resumed, ")),
        "{trace}"
    );
    assert!(!trace.contains(VSFTPD_PASSWORD), "{trace}");

    let out = succeeds(site.ftps(&["stat", &site.url(&remote)]));
    assert!(
        out.starts_with(&format!("size: {}\nmodify: ", content.len())),
        "{out}"
    );
    let out = succeeds(site.ftps(&["--json", "ls", &site.url("site")]));
    assert!(
        out.starts_with('[') && out.contains("\"type\":\"dir\""),
        "{out}"
    );

    succeeds(site.ftps(&["mkdir", &site.url("gone")]));
    succeeds(site.ftps(&["rmdir", &site.url("gone")]));
    assert!(!site.remote("gone").exists());
}

#[test]
fn vsftpd_fxp_between_two_servers() {
    let Some(source) = Vsftpd::start_with("force_local_data_ssl=NO\n") else {
        return;
    };
    let Some(destination) = Vsftpd::start_with("force_local_data_ssl=NO\n") else {
        return;
    };
    let scratch = TempDir::new("cli-fxp");
    let ca = scratch.path().join("ca.pem");
    std::fs::write(
        &ca,
        format!("{}{}", source.cert.cert_pem, destination.cert.cert_pem),
    )
    .unwrap();
    let data = pattern(700_000, 9);
    std::fs::write(source.home.join("src.bin"), &data).unwrap();
    let url = |server: &Vsftpd, path: &str| {
        format!(
            "ftps://{VSFTPD_USER}@127.0.0.1:{}/{path}",
            server.addr.port()
        )
    };
    let fxp = |extra: &[&str], dst: &str| {
        Command::new(env!("CARGO_BIN_EXE_ftps"))
            .arg("--ca-file")
            .arg(&ca)
            .args(["--timeout", "20", "fxp"])
            .args(extra)
            .arg(url(&source, "src.bin"))
            .arg(url(&destination, dst))
            .env_remove("FTPS_PASSWORD")
            .env("FTPS_PASSWORD_SRC", VSFTPD_PASSWORD)
            .env("FTPS_PASSWORD_DST", VSFTPD_PASSWORD)
            .output()
            .unwrap()
    };

    let err = fails(fxp(&[], "copy.bin"), 5);
    assert!(err.contains("SSCN or CPSV"), "{err}");
    assert!(!destination.home.join("copy.bin").exists());

    let out = fxp(&["--clear"], "");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(stderr.contains("PROT C"), "{stderr}");
    // A destination URL ending in '/' keeps the source's name.
    assert_eq!(
        std::fs::read(destination.home.join("src.bin")).unwrap(),
        data
    );
}

/// A TLS server config for the scripted servers below, on a fresh self-signed certificate.
fn scripted_tls() -> Arc<rustls::ServerConfig> {
    Arc::new(TestCert::generate().server_config())
}

/// `ftps --insecure --timeout SECONDS ls URL` with a password in the environment.
fn ls_insecure(url: &str, timeout: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ftps"))
        .args(["--insecure", "--timeout", timeout, "ls", url])
        .env("FTPS_PASSWORD", "pw")
        .output()
        .unwrap()
}

/// A server that accepts AUTH TLS and the login but refuses `PBSZ`/`PROT` (as some hosted servers do): the
/// failure is its own exit code (7) and says so, not "login refused" (3), which sent users to their password.
#[test]
fn refused_data_protection_exits_7_and_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = scripted_tls();
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.write_all(b"220 scripted\r\n").unwrap();
        let mut line = String::new();
        BufReader::new(&mut tcp).read_line(&mut line).unwrap();
        assert!(line.starts_with("AUTH TLS"), "{line}");
        tcp.write_all(b"234 go\r\n").unwrap();
        let conn = rustls::ServerConnection::new(tls).unwrap();
        let mut stream = BufReader::new(rustls::StreamOwned::new(conn, tcp));
        loop {
            let mut line = String::new();
            if stream.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let reply: &[u8] = match line.split_whitespace().next().unwrap_or("") {
                "USER" => b"331 password\r\n",
                "PASS" => b"230 in\r\n",
                "PBSZ" | "PROT" => b"534 data protection not available\r\n",
                "QUIT" => b"221 bye\r\n",
                _ => b"502 not here\r\n",
            };
            let out = stream.get_mut();
            out.write_all(reply).unwrap();
            out.flush().unwrap();
        }
    });
    let out = ls_insecure(&format!("ftps://alice@{addr}/"), "10");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(err.contains("will not protect the data channel"), "{err}");
    assert!(err.contains("534"), "{err}");
    assert!(!err.contains("login refused"), "{err}");
    let _ = server.join();
}

/// An `ftps://` (explicit) URL pointed at an implicit FTPS port: no greeting comes, the port answers TLS, and
/// the error says to use `ftpsi://` instead of only "timed out: greeting".
#[test]
fn an_implicit_port_behind_an_explicit_url_is_named() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = scripted_tls();
    std::thread::spawn(move || {
        // The client's connection (silent: it waits for a greeting), then its probe, which gets a handshake.
        for tcp in listener.incoming().take(2) {
            let Ok(mut tcp) = tcp else { return };
            let tls = Arc::clone(&tls);
            std::thread::spawn(move || {
                tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut conn = rustls::ServerConnection::new(tls).unwrap();
                let _ = conn.complete_io(&mut tcp);
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    let out = ls_insecure(&format!("ftps://alice@{addr}/"), "1");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("ftpsi://"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

// ----- end to end against pyftpdlib (skipped where python3 cannot import it) -----

/// `cat` streams a file to stdout, `stat` prints SIZE and MDTM, `rmdir` removes an empty directory and refuses a
/// full one with 4, against pyftpdlib.
#[test]
fn pyftpdlib_cat_stat_and_rmdir() {
    let Some(site) = Site::pyftpdlib() else {
        return;
    };
    let content = pattern(200_000, 11);
    std::fs::write(site.remote("f.bin"), &content).unwrap();
    let out = site.ftps(&["-q", "cat", &site.url("f.bin")]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout == content, "cat: stdout differs from the file");
    assert!(out.stderr.is_empty(), "{out:?}");
    let err = fails(site.ftps(&["cat", &site.url("nope.bin")]), 4);
    assert!(
        err.starts_with("ftps: get nope.bin: server refused: 550"),
        "{err}"
    );

    let file = std::fs::File::options()
        .write(true)
        .open(site.remote("f.bin"))
        .unwrap();
    file.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .unwrap();
    let out = succeeds(site.ftps(&["stat", &site.url("f.bin")]));
    assert_eq!(out, "size: 200000\nmodify: 2023-11-14T22:13:20Z\n");
    let err = fails(site.ftps(&["stat", &site.url("nope.bin")]), 4);
    assert!(
        err.starts_with("ftps: stat nope.bin: server refused: 550"),
        "{err}"
    );

    succeeds(site.ftps(&["mkdir", &site.url("empty")]));
    assert!(site.remote("empty").is_dir());
    succeeds(site.ftps(&["rmdir", &site.url("empty")]));
    assert!(!site.remote("empty").exists());
    std::fs::create_dir_all(site.remote("full/inner")).unwrap();
    let err = fails(site.ftps(&["rmdir", &site.url("full")]), 4);
    assert!(
        err.starts_with("ftps: rmdir full: server refused: 550"),
        "{err}"
    );
    assert!(site.remote("full/inner").is_dir());
}

/// Asserts that `root` holds exactly `files` (path, content), nothing more.
fn assert_tree(root: &Path, files: &[(&str, Vec<u8>)]) {
    for (path, content) in files {
        assert_eq!(&std::fs::read(root.join(path)).unwrap(), content, "{path}");
    }
    let mut found = 0;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found += 1;
            }
        }
    }
    assert_eq!(found, files.len(), "extra files under {}", root.display());
}

/// `mirror --delete --dry-run` prints the plan and changes nothing; `--parallel 4 mirror --delete` then makes
/// the destination equal the source in both directions, against pyftpdlib (MLSD, MFMT).
#[test]
fn pyftpdlib_parallel_mirror_with_delete_and_dry_run() {
    let Some(site) = Site::pyftpdlib() else {
        return;
    };
    let files = small_tree(&site.local("src"));
    std::fs::create_dir_all(site.remote("site/old")).unwrap();
    std::fs::write(site.remote("site/extra.txt"), b"extra").unwrap();
    std::fs::write(site.remote("site/old/x.bin"), b"x").unwrap();

    let plan = succeeds(site.ftps(&[
        "mirror",
        "--upload",
        "--delete",
        "--dry-run",
        "src",
        &site.url("site"),
    ]));
    assert_eq!(
        plan,
        "mkdir sub\nmkdir sub/deeper\ntransfer a.txt (missing)\ntransfer sub/b.txt (missing)\n\
         transfer sub/deeper/c.bin (missing)\ndelete extra.txt\ndelete old/x.bin\ndelete old\n\
         mirror (dry run): 3 to transfer (73.2 KiB), 0 skipped, 2 directories to create, 3 to delete\n"
    );
    assert!(
        site.remote("site/old/x.bin").exists(),
        "a dry run changed the server"
    );
    assert!(
        !site.remote("site/a.txt").exists(),
        "a dry run changed the server"
    );

    let mirror = |direction: &'static str, from: String, to: String| {
        let out = site.ftps(&[
            "--parallel",
            "4",
            "mirror",
            direction,
            "--delete",
            &from,
            &to,
        ]);
        succeeds(out)
    };
    let out = mirror("--upload", "src".into(), site.url("site"));
    assert_eq!(
        out,
        "mirror: 3 transferred (73.2 KiB), 0 skipped, 2 directories created, 3 deleted\n"
    );
    assert_tree(&site.remote("site"), &files);
    assert!(!site.remote("site/old").exists());
    // The copies carry the source's times (MFMT): nothing to do the second time.
    let out = mirror("--upload", "src".into(), site.url("site"));
    assert_eq!(
        out,
        "mirror: 0 transferred (0 B), 3 skipped, 0 directories created, 0 deleted\n"
    );

    // Download into a directory with a stale file and directory: they go.
    std::fs::create_dir_all(site.local("dst/stale")).unwrap();
    std::fs::write(site.local("dst/stale/s.bin"), b"s").unwrap();
    let out = mirror("--download", site.url("site"), "dst".into());
    assert_eq!(
        out,
        "mirror: 3 transferred (73.2 KiB), 0 skipped, 2 directories created, 2 deleted\n"
    );
    assert_tree(&site.local("dst"), &files);
    assert!(!site.local("dst/stale").exists());
    assert!(site.partial_files().is_empty());
}

/// `--parallel 4 put` of several files and `--parallel 4 get`, with `--json` summaries, and `--json ls`, against
/// pyftpdlib. Without a terminal, progress is one summary line per file on stderr: no bar.
#[test]
fn pyftpdlib_parallel_put_get_and_json() {
    let Some(site) = Site::pyftpdlib() else {
        return;
    };
    let names: Vec<String> = (1..=12).map(|i| format!("f{i:02}.bin")).collect();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(site.local(name), pattern(1000 * i + 1, i as u32)).unwrap();
    }
    succeeds(site.ftps(&["mkdir", &site.url("in")]));
    let dest = site.url("in/");
    let mut args = vec!["--parallel", "4", "--json", "put"];
    args.extend(names.iter().map(String::as_str));
    args.push(&dest);
    let out = site.ftps(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    // One summary line per file, in whatever order the sessions finished; no redraws.
    assert_eq!(stderr.lines().count(), names.len(), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
    for name in &names {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with(&format!("in/{name}: "))),
            "{name} missing from:\n{stderr}"
        );
        assert_eq!(
            std::fs::read(site.remote("in").join(name)).unwrap(),
            std::fs::read(site.local(name)).unwrap(),
            "{name}"
        );
    }
    assert_eq!(
        json_query(
            &out.stdout,
            "(doc['ok'], len(doc['files']), sum(f['bytes'] for f in doc['files']), \
             all(f['tls'].startswith('TLSv1_') for f in doc['files']))"
        ),
        format!(
            "(True, 12, {}, True)",
            (0..12).map(|i| 1000 * i + 1).sum::<usize>()
        )
    );

    let out = succeeds(site.ftps(&["--json", "ls", &site.url("in/")]));
    assert_eq!(
        json_query(
            out.as_bytes(),
            "sorted((e['name'], e['type'], e['size']) for e in doc if e['type'] == 'file')[:2]"
        ),
        "[('f01.bin', 'file', 1), ('f02.bin', 'file', 1001)]"
    );
    assert_eq!(json_query(out.as_bytes(), "len(doc)"), "12");

    let out = site.ftps(&[
        "-q",
        "--parallel",
        "4",
        "--json",
        "get",
        &site.url("in/f12.bin"),
        "copy.bin",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        json_query(
            &out.stdout,
            "[(f['path'], f['bytes']) for f in doc['files']]"
        ),
        "[('in/f12.bin', 11001)]"
    );
    assert_eq!(
        std::fs::read(site.local("copy.bin")).unwrap(),
        std::fs::read(site.local("f12.bin")).unwrap()
    );
}
