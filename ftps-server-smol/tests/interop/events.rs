//! Events reach a real webhook receiver (Python's `http.server`, checking every signature) and an event command,
//! at least once, in order, through failures and a `kill -9` of the server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use ftps_testkit::{peer, KillOnDrop, TempDir};

use crate::{run, PASSWORD, USER};

const SECRET: &str = "webhook-secret-5d1e";

/// Starts the receiver; returns it and its port.
fn receiver(python: &Path, fail_first: u32, out: &Path) -> (KillOnDrop, u16) {
    let (child, lines) = ftps_testkit::spawn_with_stdout_lines(
        Command::new(python)
            .arg(ftps_testkit::client_script("webhook_receiver.py"))
            .args([SECRET, &fail_first.to_string()])
            .arg(out),
    );
    let port = first_port(&lines, "listening on ");
    (child, port)
}

/// The port in the first line that contains `prefix`, read right after it.
fn first_port(lines: &Receiver<String>, prefix: &str) -> u16 {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no line with {prefix:?}"));
        if let Some((_, rest)) = line.split_once(prefix) {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            return digits
                .parse()
                .unwrap_or_else(|_| panic!("no port in {line:?}"));
        }
    }
}

/// Writes the server's config in `dir` (its `state_dir` is `dir/state`) and adds the test user.
pub(crate) fn configure(dir: &Path, config: &str) {
    std::fs::write(dir.join("server.toml"), config).unwrap();
    crate::add_test_user(&dir.join("state/users.toml"));
}

/// curl as the test user with `password`, over explicit TLS, not checking the generated certificate.
pub(crate) fn curl_as(curl_bin: &Path, password: &str) -> Command {
    let mut command = Command::new(curl_bin);
    command
        .args(["-sS", "--ssl-reqd", "--insecure", "--max-time", "30"])
        .args(["-u", &format!("{USER}:{password}")]);
    command
}

/// Starts the server on a port it picks (a port chosen beforehand may be taken by another test meanwhile).
pub(crate) fn start_server(dir: &Path) -> (KillOnDrop, u16) {
    ftps_testkit::start_ftps_server(
        Command::new(env!("CARGO_BIN_EXE_ftps-server"))
            .arg("--config")
            .arg(dir.join("server.toml"))
            .args(["--listen", "127.0.0.1:0"])
            .stderr(Stdio::null()),
        Duration::from_secs(20),
    )
}

/// The accepted events, parsed; waits until at least `count` are there.
fn events(out: &Path, count: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if events.len() >= count || Instant::now() > deadline {
            return events;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kinds(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn webhooks_and_commands_get_every_event_once_in_order_across_failures_and_kill_9() {
    let (Some(curl_bin), Some(python)) = (peer("curl"), peer("python3")) else {
        return;
    };
    let dir = TempDir::new("events");
    let hooked = dir.path().join("hooked.jsonl");
    let commanded = dir.path().join("commanded.jsonl");
    let (receiver_process, hook_port) = receiver(&python, 3, &hooked);
    let config = format!(
        "root = {root:?}\nstate_dir = {state:?}\n\n\
         [[webhooks]]\nurl = \"http://127.0.0.1:{hook_port}/ftps\"\nsecret = \"{SECRET}\"\n\n\
         [[event_commands]]\ncommand = [\"sh\", \"-c\", \"cat >> {commanded}\"]\nevents = [\"upload\", \"delete\"]\n",
        root = dir.path().join("root"),
        state = dir.path().join("state"),
        commanded = commanded.display(),
    );
    configure(dir.path(), &config);
    let (server, port) = start_server(dir.path());

    let url = |path: &str| format!("ftp://127.0.0.1:{port}/{path}");
    let curl = |password: &str| curl_as(&curl_bin, password);
    let local = TempDir::new("events-local");
    let file = local.path().join("report.csv");
    std::fs::write(&file, b"a,b\n1,2\n").unwrap();
    // Session 1: upload, make a directory, rename into it. Session 2: download, delete, remove the directory.
    run(curl(PASSWORD).arg("-T").arg(&file).arg(url("")).args([
        "-Q",
        "-MKD in",
        "-Q",
        "-RNFR report.csv",
        "-Q",
        "-RNTO in/report.csv",
    ]));
    run(curl(PASSWORD)
        .arg("-o")
        .arg(local.path().join("back.csv"))
        .arg(url("in/report.csv"))
        .args(["-Q", "-DELE /in/report.csv", "-Q", "-RMD /in"]));
    assert!(!curl("wrong")
        .arg(url(""))
        .output()
        .unwrap()
        .status
        .success());

    let expected = [
        "login",
        "upload",
        "mkdir",
        "rename",
        "logout",
        "login",
        "download",
        "delete",
        "rmdir",
        "logout",
        "login_failed",
    ];
    let got = events(&hooked, expected.len());
    assert_eq!(kinds(&got), expected, "{got:#?}");
    let mut ids: Vec<&str> = got.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), expected.len(), "an event was delivered twice");
    let upload = &got[1];
    assert_eq!(upload["path"], "/report.csv");
    assert_eq!(upload["size"], 8);
    assert_eq!(upload["user"], USER);
    assert_eq!(upload["peer"], "127.0.0.1");
    assert_eq!(upload["protocol"], "ftps");
    assert_eq!(upload["tls_version"], "1.3");
    assert_eq!(upload["data_tls_resumed"], true);
    assert_eq!(upload["status"], "ok");
    let sha256sum = Command::new("sha256sum").arg(&file).output().unwrap();
    let expected_digest = String::from_utf8_lossy(&sha256sum.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert_eq!(upload["sha256"], expected_digest.as_str());
    assert!(got[6]["sha256"].is_null(), "a download has no digest");
    assert_eq!(got[3]["target"], "/in/report.csv");
    assert_eq!(got[10]["status"], "failed");
    // The command sink got only its kinds.
    assert_eq!(kinds(&events(&commanded, 2)), ["upload", "delete"]);

    // The receiver goes away; an upload's events wait in the queue; the server is killed; both come back: the
    // events are delivered after the restart.
    drop(receiver_process);
    run(curl(PASSWORD).arg("-T").arg(&file).arg(url("again.csv")));
    // The session's logout is queued once the server has seen curl's QUIT through.
    let queue: PathBuf = std::fs::read_dir(dir.path().join("state/events"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "jsonl")
                && p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("webhook")
        })
        .expect("the webhook's queue file");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&queue)
        .unwrap_or_default()
        .matches("\"event\":\"logout\"")
        .count()
        < 3
    {
        assert!(
            Instant::now() < deadline,
            "the third logout was never queued"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server); // SIGKILL
    std::fs::remove_file(&hooked).unwrap();
    // A new receiver on the same port (the URL is in the config), failing nothing.
    let restarted = restart_receiver(&python, hook_port, &hooked);
    let _server = start_server(dir.path());
    let got = events(&hooked, 3);
    assert_eq!(kinds(&got), ["login", "upload", "logout"], "{got:#?}");
    assert_eq!(got[1]["path"], "/again.csv");
    drop(restarted);
}

/// A receiver on a given port: the first one's, so the configured URL still points at it.
fn restart_receiver(python: &Path, port: u16, out: &Path) -> KillOnDrop {
    let (child, lines) = ftps_testkit::spawn_with_stdout_lines(
        Command::new(python)
            .arg(ftps_testkit::client_script("webhook_receiver.py"))
            .args([SECRET, "0"])
            .arg(out)
            .arg(port.to_string()),
    );
    assert_eq!(first_port(&lines, "listening on "), port);
    child
}

/// The EICAR anti-virus test file: harmless, and every scanner's "this is a virus".
const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// `[hooks] upload_check`: a scanner script that refuses the EICAR string. A clean upload is stored; the EICAR
/// one gets a 550, never appears (an existing file of that name keeps its content), lands in quarantine, and
/// makes an `upload_rejected` event.
#[test]
fn the_upload_check_keeps_rejected_files_out_and_says_so() {
    let (Some(curl_bin), Some(python)) = (peer("curl"), peer("python3")) else {
        return;
    };
    let dir = TempDir::new("upload-check");
    let hooked = dir.path().join("hooked.jsonl");
    let (_receiver, hook_port) = receiver(&python, 0, &hooked);
    let root = dir.path().join("root");
    let quarantine = dir.path().join("quarantine");
    let config = format!(
        "root = {root:?}\nstate_dir = {state:?}\n\n\
         [hooks]\nupload_check = [\"sh\", \"-c\", \"! grep -q EICAR-STANDARD-ANTIVIRUS-TEST-FILE \\\"$1\\\"\", \"scan\", \"{{path}}\"]\n\
         quarantine = {quarantine:?}\n\n\
         [[webhooks]]\nurl = \"http://127.0.0.1:{hook_port}/\"\nsecret = \"{SECRET}\"\n\
         events = [\"upload\", \"upload_rejected\"]\n",
        state = dir.path().join("state"),
    );
    configure(dir.path(), &config);
    let (_server, port) = start_server(dir.path());
    let url = |path: &str| format!("ftp://127.0.0.1:{port}/{path}");
    let curl = || curl_as(&curl_bin, PASSWORD);
    let local = TempDir::new("upload-check-local");
    let clean = local.path().join("clean.txt");
    std::fs::write(&clean, b"quarterly numbers\n").unwrap();
    let infected = local.path().join("infected.txt");
    std::fs::write(&infected, EICAR).unwrap();

    run(curl().arg("-T").arg(&clean).arg(url("report.txt")));
    assert_eq!(
        std::fs::read(root.join("report.txt")).unwrap(),
        b"quarterly numbers\n"
    );
    // Over an existing file, and under a new name: both refused with 550, neither stored.
    for name in ["report.txt", "new.txt"] {
        let refused = curl()
            .arg("-T")
            .arg(&infected)
            .arg(url(name))
            .output()
            .unwrap();
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("550"), "{stderr}");
    }
    assert_eq!(
        std::fs::read(root.join("report.txt")).unwrap(),
        b"quarterly numbers\n"
    );
    assert!(!root.join("new.txt").exists());
    let quarantined: Vec<Vec<u8>> = std::fs::read_dir(&quarantine)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert_eq!(quarantined, vec![EICAR.to_vec(), EICAR.to_vec()]);
    assert!(
        std::fs::read_dir(dir.path().join("state/spool"))
            .unwrap()
            .next()
            .is_none(),
        "the spool keeps nothing"
    );

    let got = events(&hooked, 3);
    assert_eq!(
        kinds(&got),
        ["upload", "upload_rejected", "upload_rejected"],
        "{got:#?}"
    );
    assert_eq!(got[1]["path"], "/report.txt");
    assert_eq!(got[1]["status"], "failed");
    assert_eq!(got[1]["reply_code"], 550);
}
