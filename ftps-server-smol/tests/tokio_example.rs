//! The tokio example (`examples/tokio_minimal.rs`) serves a login, a listing and a download to curl, with TLS 1.3
//! and TLS 1.2: the engine runs unchanged on a runtime the server crate itself does not use.
#![allow(clippy::unwrap_used)] // tests may unwrap

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
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

/// The example binary, built now so it is never stale: `cargo test --test tokio_example` alone does not build
/// examples.
fn example_binary() -> PathBuf {
    // This test runs from target/<profile>/deps; examples land in target/<profile>/examples.
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned();
    let profile_dir = deps.parent().unwrap().to_owned();
    let mut build = Command::new(env!("CARGO"));
    build.current_dir(env!("CARGO_MANIFEST_DIR")).args([
        "build",
        "--quiet",
        "-p",
        "ftps-server-smol",
        "--example",
        "tokio_minimal",
    ]);
    // Cargo gives this test process its package's variables (CARGO_PKG_VERSION_MAJOR, ...); build scripts such
    // as ring's watch some of them, so passing them on would rebuild half the tree on every run.
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
    let child = build
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = wait_bounded(
        child,
        Duration::from_secs(600),
        "cargo build --example tokio_minimal",
    );
    assert!(
        output.status.success(),
        "building the example failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = profile_dir.join("examples").join("tokio_minimal");
    assert!(
        binary.is_file(),
        "no example binary at {}",
        binary.display()
    );
    binary
}

/// Starts the example on a free port and reads its address from the first line of its stdout.
fn start_example() -> Example {
    let mut child = Command::new(example_binary())
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

#[test]
fn curl_lists_and_downloads_over_tls13_and_tls12() {
    let Some(curl_path) = ftps_testkit::peer("curl") else {
        return;
    };
    let example = start_example();
    let base = format!("ftp://{}", example.addr);

    for tls in [&["--tlsv1.3"][..], &["--tlsv1.2", "--tls-max", "1.2"][..]] {
        // LIST: one `ls -l` line per file, formatted by the engine from the example's FileInfo.
        let listing = String::from_utf8(curl(&curl_path, tls, &format!("{base}/"), &[])).unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 3, "{tls:?}: {listing:?}");
        for (line, name) in lines.iter().zip(["hello.txt", "notes.md", "empty.bin"]) {
            assert!(line.ends_with(&format!(" {name}")), "{tls:?}: {line:?}");
        }

        // NLST: exactly the names (curl turns the ASCII-mode CRLFs into local line ends).
        let names = curl(&curl_path, tls, &format!("{base}/"), &["--list-only"]);
        assert_eq!(names, b"hello.txt\nnotes.md\nempty.bin\n", "{tls:?}");

        // RETR: the exact bytes, binary mode.
        let hello = curl(&curl_path, tls, &format!("{base}/hello.txt"), &[]);
        assert_eq!(hello, b"Hello from ftps-rs on tokio!\n", "{tls:?}");
        let empty = curl(&curl_path, tls, &format!("{base}/empty.bin"), &[]);
        assert_eq!(empty, b"", "{tls:?}");
    }

    // A missing file is an FTP error (550), which curl reports as "remote file not found" (exit 78).
    let missing = run_curl(
        &curl_path,
        "demo:demo",
        &[],
        &format!("{base}/nope.txt"),
        &[],
    );
    assert_eq!(missing.status.code(), Some(78));
    // A wrong password is refused (530 after the engine's delay; curl exit 67, "login denied").
    let denied = run_curl(
        &curl_path,
        "demo:wrong",
        &[],
        &format!("{base}/hello.txt"),
        &[],
    );
    assert_eq!(denied.status.code(), Some(67));
}
