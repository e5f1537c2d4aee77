//! The tokio example (`examples/tokio_server.rs`) serves curl and our own client: listings, downloads, uploads,
//! directory and file changes, resumed transfers and 100 transfers in one session, over TLS 1.3 and TLS 1.2 with
//! data connections bound to their control session. The engine runs unchanged on a runtime the server crate
//! itself does not use.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Kills the example when the test ends, passed or not.
struct Example {
    child: Child,
    addr: String,
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` with a deadline, killing it when the deadline passes.
fn wait_bounded(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {limit:?}");
            }
        }
    }
    child.wait_with_output().unwrap()
}

/// Starts the example on a free port serving `root`, and reads its address from the first line of its stdout.
fn start_example(root: &Path) -> Example {
    let example = ftps_testkit::build_example(env!("CARGO"), "ftps-server-smol", "tokio_server");
    let mut child = Command::new(example)
        .arg("0")
        .arg(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    // The example's log, shown with the test's output when the test fails.
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("example: {line}");
        }
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let mut example = Example {
        child,
        addr: String::new(),
    };
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the example printed nothing within 30 s");
    example.addr = first
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    example
}

/// Runs curl against the example as `user`, requiring TLS, with `tls` and `extra` arguments.
fn run_curl(curl: &Path, user: &str, tls: &[&str], url: &str, extra: &[&str]) -> Output {
    let child = Command::new(curl)
        .args([
            "--silent",
            "--show-error",
            "--ssl-reqd",
            "--insecure",
            "--user",
            user,
        ])
        .args(["--connect-timeout", "5", "--max-time", "20"])
        .args(tls)
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, Duration::from_secs(30), "curl")
}

/// [`run_curl`] as `demo`, which must succeed; returns what curl wrote to stdout.
fn curl(curl: &Path, tls: &[&str], url: &str, extra: &[&str]) -> Vec<u8> {
    let output = run_curl(curl, "demo:demo", tls, url, extra);
    assert!(
        output.status.success(),
        "curl {tls:?} {extra:?} {url} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// A directory with `hello.txt` and `notes/a.md` to serve.
fn served_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("hello.txt"),
        b"Hello from ftps-rs on tokio!\n",
    )
    .unwrap();
    std::fs::create_dir(root.path().join("notes")).unwrap();
    std::fs::write(root.path().join("notes/a.md"), b"# a\n").unwrap();
    root
}

#[test]
fn curl_lists_downloads_uploads_and_changes_files_over_tls13_and_tls12() {
    let Some(curl_path) = ftps_testkit::peer("curl") else {
        return;
    };
    let root = served_root();
    let example = start_example(root.path());
    let base = format!("ftp://{}", example.addr);
    let local = tempfile::tempdir().unwrap();
    let upload = local.path().join("up.bin");
    std::fs::write(
        &upload,
        (0..=255u8).cycle().take(100_000).collect::<Vec<u8>>(),
    )
    .unwrap();

    for (tls, name) in [
        (&["--tlsv1.3"][..], "v13"),
        (&["--tlsv1.2", "--tls-max", "1.2"][..], "v12"),
    ] {
        // LIST (EPSV) and NLST (PASV): the engine formats the lines from the storage's metadata.
        let listing = String::from_utf8(curl(&curl_path, tls, &format!("{base}/"), &[])).unwrap();
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with('d') && l.ends_with(" notes")),
            "{listing}"
        );
        assert!(
            listing.lines().any(|l| l.ends_with(" hello.txt")),
            "{listing}"
        );
        let names = curl(
            &curl_path,
            tls,
            &format!("{base}/notes/"),
            &["--list-only", "--disable-epsv"],
        );
        assert_eq!(names, b"a.md\n", "{tls:?}");
        // RETR, and STOR into a directory curl creates (MKD).
        let hello = curl(&curl_path, tls, &format!("{base}/hello.txt"), &[]);
        assert_eq!(hello, b"Hello from ftps-rs on tokio!\n", "{tls:?}");
        let target = format!("{base}/{name}/up.bin");
        let upload_arg = upload.to_str().unwrap();
        curl(
            &curl_path,
            tls,
            &target,
            &["--ftp-create-dirs", "-T", upload_arg],
        );
        assert_eq!(
            std::fs::read(root.path().join(name).join("up.bin")).unwrap(),
            std::fs::read(&upload).unwrap()
        );
        // RNFR/RNTO and DELE.
        let rename_from = format!("RNFR {name}/up.bin");
        let rename_to = format!("RNTO {name}/renamed.bin");
        curl(
            &curl_path,
            tls,
            &format!("{base}/"),
            &[
                "-Q",
                &rename_from,
                "-Q",
                &rename_to,
                "-Q",
                "DELE hello.txt",
                "--list-only",
            ],
        );
        assert!(root.path().join(name).join("renamed.bin").is_file());
        assert!(!root.path().join(name).join("up.bin").exists());
        std::fs::write(
            root.path().join("hello.txt"),
            b"Hello from ftps-rs on tokio!\n",
        )
        .unwrap();
    }

    // A missing file is an FTP error (550): curl exit 78. A wrong password is refused (530): curl exit 67.
    let missing = run_curl(
        &curl_path,
        "demo:demo",
        &[],
        &format!("{base}/nope.txt"),
        &[],
    );
    assert_eq!(missing.status.code(), Some(78));
    let denied = run_curl(
        &curl_path,
        "demo:wrong",
        &[],
        &format!("{base}/hello.txt"),
        &[],
    );
    assert_eq!(denied.status.code(), Some(67));
}

/// 50 uploads then 50 downloads on one control connection: every data connection resumes that session's TLS
/// session (the engine refuses any other), and the passive-reply pacing keeps curl off its 1 s stall path.
#[test]
fn fifty_uploads_and_fifty_downloads_in_one_curl_session() {
    let Some(curl_path) = ftps_testkit::peer("curl") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let example = start_example(root.path());
    let local = tempfile::tempdir().unwrap();
    let names: Vec<String> = (1..=50).map(|i| format!("f{i:02}.bin")).collect();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(local.path().join(name), vec![i as u8; 1000 + i]).unwrap();
    }
    let glob = format!("{}/{{{}}}", local.path().display(), names.join(","));
    let down = local.path().join("down");
    let output = Command::new(&curl_path)
        .args([
            "--silent",
            "--show-error",
            "--ssl-reqd",
            "--insecure",
            "--tlsv1.3",
            "--user",
            "demo:demo",
        ])
        .args(["--max-time", "60", "--ftp-create-dirs", "-T", &glob])
        .arg(format!("ftp://{}/up/", example.addr))
        .args([
            "--next",
            "--ssl-reqd",
            "--insecure",
            "--tlsv1.3",
            "--user",
            "demo:demo",
            "--create-dirs",
        ])
        .arg(format!("ftp://{}/up/f[01-50].bin", example.addr))
        .arg("-o")
        .arg(down.join("f#1.bin"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for name in &names {
        let sent = std::fs::read(local.path().join(name)).unwrap();
        assert_eq!(
            std::fs::read(root.path().join("up").join(name)).unwrap(),
            sent,
            "{name}"
        );
        assert_eq!(std::fs::read(down.join(name)).unwrap(), sent, "{name}");
    }
}

/// `REST` + `RETR` and `SIZE` + `APPE`: curl's `-C -` both ways.
#[test]
fn curl_resumes_a_download_and_an_upload() {
    let Some(curl_path) = ftps_testkit::peer("curl") else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let example = start_example(root.path());
    let base = format!("ftp://{}", example.addr);
    let local = tempfile::tempdir().unwrap();
    let whole: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.path().join("big.bin"), &whole).unwrap();
    let partial = local.path().join("big.part");
    std::fs::write(&partial, &whole[..100_000]).unwrap();
    curl(
        &curl_path,
        &[],
        &format!("{base}/big.bin"),
        &["-C", "-", "-o", partial.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(&partial).unwrap(), whole);

    std::fs::write(root.path().join("up.bin"), &whole[..123_456]).unwrap();
    let source = local.path().join("up.bin");
    std::fs::write(&source, &whole).unwrap();
    curl(
        &curl_path,
        &[],
        &format!("{base}/up.bin"),
        &["-C", "-", "-T", source.to_str().unwrap()],
    );
    assert_eq!(std::fs::read(root.path().join("up.bin")).unwrap(), whole);
}

/// Our own blocking client against the tokio server: the same engine on both ends, over real sockets.
#[test]
fn our_blocking_client_uploads_lists_downloads_renames_and_deletes() {
    let root = served_root();
    let example = start_example(root.path());
    let port = example.addr.rsplit(':').next().unwrap().parse().unwrap();
    let config = ftps_client_blocking::ClientConfig::new()
        .danger_accept_invalid_certs(true)
        .reply_timeout(Duration::from_secs(10))
        .data_timeout(Duration::from_secs(10));
    let mut client = ftps_client_blocking::Client::connect("127.0.0.1", port, config).unwrap();
    client.login("demo", "demo").unwrap();
    client.mkdir("made").unwrap();
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
    let mut upload = client.stor("made/p.bin").unwrap();
    upload.write_all(&payload).unwrap();
    upload.finish().unwrap();
    let names = client.nlst(Some("made")).unwrap();
    assert_eq!(names, vec!["p.bin".to_owned()]);
    let mut download = client.retr("made/p.bin", 0).unwrap();
    let mut got = Vec::new();
    download.read_to_end(&mut got).unwrap();
    download.finish().unwrap();
    assert_eq!(got, payload);
    client.rename("made/p.bin", "made/q.bin").unwrap();
    client.delete("hello.txt").unwrap();
    assert!(root.path().join("made/q.bin").is_file());
    assert!(!root.path().join("hello.txt").exists());
}
