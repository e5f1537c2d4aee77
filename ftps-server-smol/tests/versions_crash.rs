//! Versioned storage survives `kill -9` (issue 16, DESIGN.md "Nothing lost is a commit protocol"): the real
//! `ftps-server --versions` binary is killed in the middle of an upload storm (overwrites, deletes and renames
//! over existing files from several sessions), restarted, and its history must read consistently: every version
//! of every file is a complete upload, versions are in the order they were uploaded, the current one is the live
//! file, and the view of now is the live tree.

#![allow(clippy::unwrap_used)] // test set-up: a failure is the test failing

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ftps_client_blocking::{Client, ClientConfig};
use ftps_testkit::{KillOnDrop, TempDir};

const USER: &str = "storm";
const PASSWORD: &str = "pw-versions-crash";
const WAIT: Duration = Duration::from_secs(20);
const THREADS: usize = 3;
const FILES: usize = 8;

/// `ftps-server --versions` serving `dir/root` with its state in `dir/state`, on a port it picks.
fn start_binary(dir: &Path) -> (KillOnDrop, u16) {
    let passive = 30000 + (std::process::id() % 2000) as u16 * 10;
    ftps_testkit::start_ftps_server(
        Command::new(env!("CARGO_BIN_EXE_ftps-server"))
            .arg("--root")
            .arg(dir.join("root"))
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(["--listen", "127.0.0.1:0"])
            .args(["--passive-ports", &format!("{passive}-{}", passive + 9)])
            .arg("--versions")
            .stderr(Stdio::null()),
        WAIT,
    )
}

fn client(port: u16) -> io::Result<Client> {
    let config = ClientConfig::new()
        .danger_accept_invalid_certs(true)
        .reply_timeout(Duration::from_secs(5))
        .data_timeout(Duration::from_secs(5))
        .abort_timeout(Duration::from_secs(1));
    let mut client = Client::connect("127.0.0.1", port, config).map_err(io::Error::other)?;
    client.login(USER, PASSWORD).map_err(io::Error::other)?;
    Ok(client)
}

/// The content of upload `round` of file `file` by thread `thread`: its own header, then a length that varies,
/// so a truncated or mixed file never passes as another upload.
fn content(thread: usize, file: usize, round: usize) -> Vec<u8> {
    let header = format!("thread {thread} file {file} round {round}\n");
    header
        .repeat(1 + (round * 37 + file * 11) % 3000)
        .into_bytes()
}

/// Which upload `bytes` is, if it is exactly one.
fn which(bytes: &[u8]) -> Option<(usize, usize, usize)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let first = text.lines().next()?;
    let mut words = first.split(' ');
    let mut field = |name: &str| -> Option<usize> {
        (words.next()? == name).then_some(())?;
        words.next()?.parse().ok()
    };
    let (t, f, r) = (field("thread")?, field("file")?, field("round")?);
    (content(t, f, r) == bytes).then_some((t, f, r))
}

fn put(client: &mut Client, path: &str, bytes: &[u8]) -> Result<(), String> {
    let mut up = client.stor(path).map_err(|e| e.to_string())?;
    up.write_all(bytes).map_err(|e| e.to_string())?;
    up.finish().map_err(|e| e.to_string())?;
    Ok(())
}

fn get(client: &mut Client, path: &str) -> Vec<u8> {
    let mut down = client.retr(path, 0).unwrap();
    let mut out = Vec::new();
    down.read_to_end(&mut out).unwrap();
    down.finish().unwrap();
    out
}

/// One storm session: round after round, each file overwritten (STOR), every third round one deleted (DELE) and
/// one replaced by a rename over it (RNFR/RNTO), until the server dies.
fn storm(port: u16, thread: usize, stop: &AtomicBool, rounds: &AtomicUsize) {
    let Ok(mut c) = client(port) else { return };
    for round in 1.. {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        for file in 0..FILES {
            let path = format!("storm/t{thread}f{file}");
            let result = if round % 3 == 0 && file == round % FILES {
                c.delete(&path).map_err(|e| e.to_string())
            } else if round % 3 == 1 && file == (round + 1) % FILES {
                let tmp = format!("storm/t{thread}f{file}.new");
                put(&mut c, &tmp, &content(thread, file, round))
                    .and_then(|()| c.rename(&tmp, &path).map_err(|e| e.to_string()))
            } else {
                put(&mut c, &path, &content(thread, file, round))
            };
            if result.is_err() {
                return; // the server was killed
            }
        }
        rounds.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn history_reads_consistently_after_kill_9_mid_upload_storm() {
    let dir = TempDir::new("versions-kill");
    std::fs::create_dir_all(dir.path().join("root")).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_ftps-server"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["user", "add", USER, "--home", "/"])
        .env("FTPS_PASSWORD", PASSWORD)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let (mut server, port) = start_binary(dir.path());
    client(port).unwrap().mkdir("storm").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, rounds) = (Arc::clone(&stop), Arc::clone(&rounds));
            std::thread::spawn(move || storm(port, t, &stop, &rounds))
        })
        .collect();
    // Kill once a few rounds are in, in the middle of whatever runs then.
    let started = Instant::now();
    while rounds.load(Ordering::SeqCst) < 3 * THREADS && started.elapsed() < Duration::from_secs(60)
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(37));
    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        rounds.load(Ordering::SeqCst) >= 3 * THREADS,
        "the storm never got going"
    );

    let (server, port) = start_binary(dir.path());
    let mut c = client(port).unwrap();
    let mut versions_seen = 0;
    for thread in 0..THREADS {
        for file in 0..FILES {
            let path = format!("storm/t{thread}f{file}");
            let names = c
                .nlst(Some(&format!("@versions/{path}")))
                .unwrap_or_default();
            let mut last_round = 0;
            let mut seen = Vec::new();
            for (k, name) in names.iter().enumerate() {
                let name = name.rsplit('/').next().unwrap();
                let bytes = get(&mut c, &format!("@versions/{path}/{name}"));
                let (t, f, r) = which(&bytes)
                    .unwrap_or_else(|| panic!("{path} version {name}: not one complete upload"));
                assert_eq!((t, f), (thread, file), "{path} version {name}");
                seen.push((name.to_owned(), r));
                assert!(r > last_round, "{path}: versions out of order: {seen:?}");
                last_round = r;
                if name.ends_with("-current") {
                    assert_eq!(k, names.len() - 1, "{names:?}");
                    assert_eq!(bytes, get(&mut c, &path));
                }
                versions_seen += 1;
            }
        }
    }
    eprintln!(
        "killed after {} rounds; {versions_seen} versions read back",
        rounds.load(Ordering::SeqCst)
    );
    assert!(versions_seen > THREADS * FILES, "{versions_seen} versions");
    // The view of now is the live tree.
    let mut live = c.nlst(Some("storm")).unwrap();
    let mut now = c.nlst(Some("@at/2100-01-01/storm")).unwrap();
    let base = |v: &mut Vec<String>| {
        for n in v.iter_mut() {
            *n = n.rsplit('/').next().unwrap().to_owned();
        }
        v.sort();
    };
    base(&mut live);
    base(&mut now);
    assert_eq!(live, now);
    for name in &live {
        assert_eq!(
            get(&mut c, &format!("storm/{name}")),
            get(&mut c, &format!("@at/2100-01-01/storm/{name}")),
            "{name}"
        );
    }
    drop(server);
}
