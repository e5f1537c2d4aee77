//! Many files, every client: each real client moves files the way its users do, against our server on its
//! default policy (TLS on control and data, `PROT P`, every data connection must resume a TLS session of the
//! user's), with TLS 1.3 and with TLS 1.2 (the server offers only the one; the client negotiates it).
//!
//! Per client and TLS version, in one session or invocation where the client can: [`FILES`] small files up (as
//! a glob, a mirror, `rclone copy` with its default concurrency, a loop) and back down, an 8 MiB file up and
//! down, a listing, a rename, a delete, and resuming where the client can. Every byte is compared; a refused
//! data connection (522) or a truncation (426) fails the client's command and so the test. Our own `ftps` CLI
//! has the same test in `ftps-client-blocking/tests/cli_own_server.rs`.
//!
//! What a client cannot do is left out and said here: wget only downloads; rclone resumes nothing over FTP, so
//! its "resume" is a ranged read (`rclone cat --offset`, a `REST`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ftps_proto::data::ResumptionPolicy;
use ftps_testkit::{
    client_script, peer, php_with_ftp, rclone_current, rclone_debian, run_within, TempDir,
};

use super::{random_bytes, TestServer, Tls, PASSWORD, USER};

/// Small files per direction.
const FILES: usize = 1000;
/// The bulk file.
const BIG: usize = 8 * 1024 * 1024;
/// Where the first half of a resumed transfer stops.
const PART: usize = 3 * 1024 * 1024 + 11;
/// The longest one client command may take (1000 files take seconds; this only stops a hang).
const LIMIT: Duration = Duration::from_secs(300);

/// What every client moves: `small/` with [`FILES`] files (`f0001.bin` is empty, the others up to 8 KiB),
/// `big.bin` ([`BIG`] bytes) and `part.bin` (its first [`PART`] bytes).
struct Payload {
    dir: TempDir,
    small: PathBuf,
    big: PathBuf,
    part: PathBuf,
}

impl Payload {
    fn new() -> Self {
        let dir = TempDir::new("clients-payload");
        let small = dir.path().join("small");
        std::fs::create_dir(&small).unwrap();
        for i in 1..=FILES {
            let len = if i == 1 { 0 } else { (i * 37) % 8192 + 1 };
            std::fs::write(small.join(name(i)), random_bytes(len, i as u64)).unwrap();
        }
        let big_data = random_bytes(BIG, 99);
        let (big, part) = (dir.path().join("big.bin"), dir.path().join("part.bin"));
        std::fs::write(&big, &big_data).unwrap();
        std::fs::write(&part, &big_data[..PART]).unwrap();
        Self {
            dir,
            small,
            big,
            part,
        }
    }

    /// A fresh local directory for downloads.
    fn local(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::create_dir_all(&path).unwrap();
        path
    }
}

fn name(i: usize) -> String {
    format!("f{i:04}.bin")
}

/// Asserts that `actual` holds exactly the files of `expected`, byte for byte (`ignore`d names aside).
fn assert_same_files(expected: &Path, actual: &Path, ignore: &[&str]) {
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !ignore.contains(&n.as_str()))
            .collect();
        names.sort();
        names
    };
    let (want, got) = (names(expected), names(actual));
    assert_eq!(
        want.len(),
        got.len(),
        "{} has {} files, {} has {}",
        expected.display(),
        want.len(),
        actual.display(),
        got.len()
    );
    assert_eq!(want, got);
    for name in &want {
        assert!(
            std::fs::read(expected.join(name)).unwrap()
                == std::fs::read(actual.join(name)).unwrap(),
            "{name} differs in {}",
            actual.display()
        );
    }
}

fn assert_same_file(expected: &Path, actual: &Path) {
    let (want, got) = (
        std::fs::read(expected).unwrap(),
        std::fs::read(actual).unwrap(),
    );
    assert!(
        want == got,
        "{} ({} bytes) differs from {} ({} bytes)",
        actual.display(),
        got.len(),
        expected.display(),
        want.len()
    );
}

/// Runs a client command to success within [`LIMIT`]; its output.
fn ok(what: &str, command: &mut Command) -> Output {
    let output = run_within(command, LIMIT);
    assert!(
        output.status.success(),
        "{what} failed ({}): {command:?}\nstdout: {}\nstderr: {}",
        output.status,
        tail(&output.stdout),
        tail(&output.stderr)
    );
    output
}

/// The end of a long output, for failure messages.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.len().saturating_sub(4000);
    let start = (start..text.len())
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0);
    text[start..].to_string()
}

/// The server side after a client's rename of `f0002.bin` and delete of `f0003.bin` in `up/`.
fn assert_renamed_and_deleted(server: &TestServer) {
    let up = server.root.path().join("up");
    assert!(!up.join(name(2)).exists() && up.join("renamed.bin").exists());
    assert!(!up.join(name(3)).exists());
}

// ----- curl -----

fn curl(bin: &Path, server: &TestServer, tls: Tls) -> Command {
    let mut command = super::curl(bin, server, tls);
    command.args(["--max-time", "300"]);
    command
}

fn curl_many_files(tls: Tls) {
    let Some(bin) = peer("curl") else { return };
    let server = TestServer::start(tls, ResumptionPolicy::Required);
    let p = Payload::new();
    // Up: one invocation, one session, the files as a brace glob.
    let names: Vec<String> = (1..=FILES).map(name).collect();
    let glob = format!("{}/{{{}}}", p.small.display(), names.join(","));
    ok(
        "curl upload",
        curl(&bin, &server, tls)
            .arg("--ftp-create-dirs")
            .args(["-T", &glob])
            .arg(server.url("up/")),
    );
    assert_same_files(&p.small, &server.root.path().join("up"), &[]);
    // Down: a range glob.
    let down = p.local("down");
    ok(
        "curl download",
        curl(&bin, &server, tls)
            .arg(server.url(&format!("up/f[0001-{FILES:04}].bin")))
            .arg("-o")
            .arg(down.join("f#1.bin")),
    );
    assert_same_files(&p.small, &down, &[]);
    // 8 MiB both ways.
    ok(
        "curl big upload",
        curl(&bin, &server, tls)
            .arg("-T")
            .arg(&p.big)
            .arg(server.url("big.bin")),
    );
    assert_same_file(&p.big, &server.root.path().join("big.bin"));
    let big_down = p.dir.path().join("big.down");
    ok(
        "curl big download",
        curl(&bin, &server, tls)
            .arg(server.url("big.bin"))
            .arg("-o")
            .arg(&big_down),
    );
    assert_same_file(&p.big, &big_down);
    // LIST and NLST.
    let list = ok("curl LIST", curl(&bin, &server, tls).arg(server.url("up/")));
    assert_eq!(String::from_utf8_lossy(&list.stdout).lines().count(), FILES);
    let nlst = ok(
        "curl NLST",
        curl(&bin, &server, tls).arg("-l").arg(server.url("up/")),
    );
    assert!(String::from_utf8_lossy(&nlst.stdout).contains(&name(FILES)));
    // Rename and delete.
    ok(
        "curl rename and delete",
        curl(&bin, &server, tls)
            .args(["-Q", &format!("RNFR up/{}", name(2))])
            .args(["-Q", "RNTO up/renamed.bin"])
            .args(["-Q", &format!("DELE up/{}", name(3))])
            .arg(server.url("")),
    );
    assert_renamed_and_deleted(&server);
    // Resume a download (REST) and an upload (SIZE, then APPE of the rest).
    let resumed = p.dir.path().join("resumed.down");
    std::fs::copy(&p.part, &resumed).unwrap();
    ok(
        "curl resumed download",
        curl(&bin, &server, tls)
            .args(["-C", "-"])
            .arg(server.url("big.bin"))
            .arg("-o")
            .arg(&resumed),
    );
    assert_same_file(&p.big, &resumed);
    ok(
        "curl partial upload",
        curl(&bin, &server, tls)
            .arg("-T")
            .arg(&p.part)
            .arg(server.url("resumed.bin")),
    );
    ok(
        "curl resumed upload",
        curl(&bin, &server, tls)
            .args(["-C", "-", "-T"])
            .arg(&p.big)
            .arg(server.url("resumed.bin")),
    );
    assert_same_file(&p.big, &server.root.path().join("resumed.bin"));
}

#[test]
fn curl_many_files_tls13() {
    curl_many_files(Tls::V13);
}

#[test]
fn curl_many_files_tls12() {
    curl_many_files(Tls::V12);
}

// ----- lftp (GnuTLS: resumes every data connection with the control connection's session) -----

/// Runs lftp `commands` in one session; any failed command fails the run, with one try per command.
fn lftp(bin: &Path, server: &TestServer, commands: &str) -> Command {
    let script = format!(
        "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 60; \
         set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ssl:ca-file \"{}\"; \
         open -u \"{USER},{PASSWORD}\" ftp://localhost:{}; {commands}",
        server.cert_file.display(),
        server.addr.port()
    );
    let mut command = Command::new(bin);
    command.args(["-c", &script]);
    command
}

fn lftp_many_files(tls: Tls) {
    let Some(bin) = peer("lftp") else { return };
    let server = TestServer::start(tls, ResumptionPolicy::Required);
    let p = Payload::new();
    let down = p.local("down");
    let big_down = p.dir.path().join("big.down");
    let listing = p.dir.path().join("listing.txt");
    let resumed = p.dir.path().join("resumed.down");
    std::fs::copy(&p.part, &resumed).unwrap();
    ok(
        "lftp session",
        &mut lftp(
            &bin,
            &server,
            &format!(
                "mirror -R \"{small}\" up; mirror up \"{down}\"; \
                 put \"{big}\" -o big.bin; get big.bin -o \"{big_down}\"; \
                 cls -1 up > \"{listing}\"; \
                 mv up/{two} up/renamed.bin; rm up/{three}; \
                 get -c big.bin -o \"{resumed}\"; \
                 put \"{part}\" -o resumed.bin; put -c \"{big}\" -o resumed.bin",
                small = p.small.display(),
                down = down.join("up").display(),
                big = p.big.display(),
                big_down = big_down.display(),
                listing = listing.display(),
                two = name(2),
                three = name(3),
                resumed = resumed.display(),
                part = p.part.display(),
            ),
        ),
    );
    assert_same_files(&p.small, &down.join("up"), &[]);
    assert_same_file(&p.big, &big_down);
    let listed = std::fs::read_to_string(&listing).unwrap();
    assert_eq!(listed.lines().count(), FILES, "{listed}");
    assert_renamed_and_deleted(&server);
    assert_same_file(&p.big, &resumed);
    assert_same_file(&p.big, &server.root.path().join("resumed.bin"));
    // What was mirrored up before the rename and delete.
    assert_eq!(
        std::fs::read_dir(server.root.path().join("up"))
            .unwrap()
            .count(),
        FILES - 1
    );
}

#[test]
fn lftp_many_files_tls13() {
    lftp_many_files(Tls::V13);
}

#[test]
fn lftp_many_files_tls12() {
    lftp_many_files(Tls::V12);
}

// ----- wget (downloads only; closes a download with a bare FIN after our close_notify) -----

fn wget(bin: &Path, server: &TestServer) -> Command {
    let mut command = Command::new(bin);
    command
        .args(["-q", "--tries=1", "--timeout=60"])
        .arg(format!("--ca-certificate={}", server.cert_file.display()))
        .args(["--ftp-user", USER, "--ftp-password", PASSWORD]);
    command
}

fn wget_url(server: &TestServer, path: &str) -> String {
    format!("ftps://localhost:{}/{path}", server.addr.port())
}

fn wget_many_files(tls: Tls) {
    let Some(bin) = peer("wget") else { return };
    let server = TestServer::start(tls, ResumptionPolicy::Required);
    let p = Payload::new();
    // wget cannot upload: the files are put in place on the server's side.
    let up = server.root.path().join("up");
    std::fs::create_dir(&up).unwrap();
    for i in 1..=FILES {
        std::fs::copy(p.small.join(name(i)), up.join(name(i))).unwrap();
    }
    std::fs::copy(&p.big, server.root.path().join("big.bin")).unwrap();
    // Recursive: the listing (LIST, kept as .listing), then every file, one session.
    let down = p.local("down");
    ok(
        "wget -r",
        wget(&bin, &server)
            .args(["-r", "-np", "-nH", "--no-remove-listing", "-P"])
            .arg(&down)
            .arg(wget_url(&server, "up/")),
    );
    assert_same_files(&p.small, &down.join("up"), &[".listing"]);
    let listing = std::fs::read_to_string(down.join("up/.listing")).unwrap();
    assert!(listing.contains(&name(FILES)), "{listing}");
    // 8 MiB, then the same resumed from a partial file (REST).
    let big_down = p.local("big");
    ok(
        "wget big",
        wget(&bin, &server)
            .arg("-P")
            .arg(&big_down)
            .arg(wget_url(&server, "big.bin")),
    );
    assert_same_file(&p.big, &big_down.join("big.bin"));
    let resumed = p.local("resumed");
    std::fs::copy(&p.part, resumed.join("big.bin")).unwrap();
    ok(
        "wget -c",
        wget(&bin, &server)
            .args(["-c", "-P"])
            .arg(&resumed)
            .arg(wget_url(&server, "big.bin")),
    );
    assert_same_file(&p.big, &resumed.join("big.bin"));
}

#[test]
fn wget_many_files_tls13() {
    wget_many_files(Tls::V13);
}

#[test]
fn wget_many_files_tls12() {
    wget_many_files(Tls::V12);
}

// ----- rclone (Go crypto/tls: TLS 1.2 resumes only with tickets, one ticket cache shared by every control
// connection, upload connections never read) -----

fn rclone_config(bin: &Path, server: &TestServer, dir: &Path) -> PathBuf {
    let obscured = ok(
        "rclone obscure",
        Command::new(bin).args(["obscure", PASSWORD]),
    );
    let config = dir.join("rclone.conf");
    std::fs::write(
        &config,
        format!(
            "[ours]\ntype = ftp\nhost = 127.0.0.1\nport = {}\nuser = {USER}\npass = {}\n\
             explicit_tls = true\nno_check_certificate = true\n",
            server.addr.port(),
            String::from_utf8_lossy(&obscured.stdout).trim()
        ),
    )
    .unwrap();
    config
}

/// rclone with one try per operation: a refused data connection must fail the command, not be retried away.
fn rclone(bin: &Path, config: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("--config")
        .arg(config)
        .args(["--retries", "1", "--low-level-retries", "1"]);
    command
}

fn rclone_many_files(bin: Option<PathBuf>, tls: Tls) {
    let Some(bin) = bin else { return };
    let server = TestServer::start(tls, ResumptionPolicy::Required);
    let p = Payload::new();
    let config = rclone_config(&bin, &server, p.dir.path());
    // `copy` with its default concurrency (4 transfers, 8 checkers: several control connections at once).
    ok(
        "rclone copy up",
        rclone(&bin, &config)
            .arg("copy")
            .arg(&p.small)
            .arg("ours:up"),
    );
    assert_same_files(&p.small, &server.root.path().join("up"), &[]);
    let down = p.local("down");
    ok(
        "rclone copy down",
        rclone(&bin, &config).args(["copy", "ours:up"]).arg(&down),
    );
    assert_same_files(&p.small, &down, &[]);
    ok(
        "rclone copyto up",
        rclone(&bin, &config)
            .arg("copyto")
            .arg(&p.big)
            .arg("ours:big.bin"),
    );
    assert_same_file(&p.big, &server.root.path().join("big.bin"));
    let big_down = p.dir.path().join("big.down");
    ok(
        "rclone copyto down",
        rclone(&bin, &config)
            .args(["copyto", "ours:big.bin"])
            .arg(&big_down),
    );
    assert_same_file(&p.big, &big_down);
    let listed = ok("rclone lsf", rclone(&bin, &config).args(["lsf", "ours:up"]));
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        FILES
    );
    ok(
        "rclone moveto",
        rclone(&bin, &config).args([
            "moveto",
            &format!("ours:up/{}", name(2)),
            "ours:up/renamed.bin",
        ]),
    );
    ok(
        "rclone deletefile",
        rclone(&bin, &config).args(["deletefile", &format!("ours:up/{}", name(3))]),
    );
    assert_renamed_and_deleted(&server);
    // rclone resumes nothing over FTP; a ranged read is its REST.
    let tail = ok(
        "rclone cat --offset",
        rclone(&bin, &config).args(["cat", "--offset", &PART.to_string(), "ours:big.bin"]),
    );
    assert!(tail.stdout == std::fs::read(&p.big).unwrap()[PART..]);
}

#[test]
fn rclone_debian_many_files_tls13() {
    rclone_many_files(rclone_debian(), Tls::V13);
}

#[test]
fn rclone_debian_many_files_tls12() {
    rclone_many_files(rclone_debian(), Tls::V12);
}

#[test]
fn rclone_current_many_files_tls13() {
    rclone_many_files(rclone_current(), Tls::V13);
}

#[test]
fn rclone_current_many_files_tls12() {
    rclone_many_files(rclone_current(), Tls::V12);
}

// ----- PHP's ftp extension and Python's ftplib (OpenSSL; one driver language, testkit/clients/) -----

/// Runs a driver (`command` up to its first step) through the steps both drivers share, everything in one
/// session, and checks what arrived where.
fn driver_many_files(what: &str, tls: Tls, command: impl FnOnce(&TestServer) -> Command) {
    let server = TestServer::start(tls, ResumptionPolicy::Required);
    let p = Payload::new();
    let (down, big_down) = (p.local("down"), p.dir.path().join("big.down"));
    let resumed = p.dir.path().join("resumed.down");
    std::fs::copy(&p.part, &resumed).unwrap();
    let steps: Vec<String> = vec![
        "mkd:up".into(),
        format!("putdir:{}:up", p.small.display()),
        format!("getdir:up:{}", down.display()),
        format!("put:{}:big.bin", p.big.display()),
        format!("get:big.bin:{}", big_down.display()),
        "nlst:up".into(),
        "list:up".into(),
        format!("rename:up/{}:up/renamed.bin", name(2)),
        format!("del:up/{}", name(3)),
        format!("put:{}:resumed.bin", p.part.display()),
        format!("resume-put:{}:resumed.bin", p.big.display()),
        format!("resume-get:big.bin:{}", resumed.display()),
    ];
    let output = ok(what, command(&server).args(steps));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("putdir {FILES}")) && stdout.contains(&format!("getdir {FILES}")),
        "{}",
        tail(&output.stdout)
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("nlst ")).count(),
        FILES
    );
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("list ")).count(),
        FILES
    );
    assert_same_files(&p.small, &down, &[]);
    assert_same_file(&p.big, &big_down);
    assert_renamed_and_deleted(&server);
    assert_same_file(&p.big, &server.root.path().join("resumed.bin"));
    assert_same_file(&p.big, &resumed);
}

/// PHP cannot choose its TLS version: the server offers only the one under test.
fn php_many_files(tls: Tls) {
    let Some(php) = php_with_ftp() else { return };
    driver_many_files("php", tls, |server| {
        let mut command = Command::new(php);
        command.arg(client_script("php_ftp.php")).args([
            "127.0.0.1",
            &server.addr.port().to_string(),
            USER,
            PASSWORD,
        ]);
        command
    });
}

#[test]
fn php_many_files_tls13() {
    php_many_files(Tls::V13);
}

#[test]
fn php_many_files_tls12() {
    php_many_files(Tls::V12);
}

fn ftplib_many_files(tls: Tls) {
    let Some(python) = peer("python3") else {
        return;
    };
    driver_many_files("ftplib", tls, |server| {
        let mut command = Command::new(python);
        command.arg(client_script("ftplib_client.py"));
        if tls == Tls::V12 {
            command.arg("--tls12");
        }
        command
            .args(["localhost", &server.addr.port().to_string(), USER, PASSWORD])
            .arg(&server.cert_file);
        command
    });
}

#[test]
fn ftplib_many_files_tls13() {
    ftplib_many_files(Tls::V13);
}

#[test]
fn ftplib_many_files_tls12() {
    ftplib_many_files(Tls::V12);
}
