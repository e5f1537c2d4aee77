//! `cargo xtask bench`: end-to-end FTPS throughput, as a Markdown table and JSON in `target/bench/`.
//!
//! ```text
//! cargo xtask bench [--peers] [--size BYTES|64M|1G] [--files N] [--rounds N] [--dir DIR] [--smoke]
//!                    [--many-only] [--clients NAME,NAME]
//! cargo xtask bench s3 [SIZE_MIB] [FILES]
//! ```
//!
//! `bench s3` is issue 18's object-storage comparison, `benches/s3_e2e.sh`: our server on the S3 backend against
//! `rclone` straight to the same S3 server (moto on loopback), in one run, as ratios; the table is also saved to
//! `target/bench/s3-e2e.txt`.
//!
//! Every file a row touches (the bulk file, the small files, the servers' homes, the ceiling's sink) lives in
//! one data directory, by default on the tmpfs `/dev/shm` when it has room (see [`data_dir`]): the rows then
//! measure FTPS, TLS and the servers' file handling, not this machine's shared disk. Results, configurations and
//! unpacked peers stay in `target/bench/`.
//!
//! One run measures, round after round (rounds interleaved, so a noisy neighbour hurts every row alike), and
//! reports medians:
//! - the ceiling: `tls-ceiling`, raw rustls over TCP loopback with the same 256 KiB buffers, no FTP, doing the
//!   file I/O an FTPS row does (the sender reads the bulk file; on upload the receiver writes it to a file, on
//!   download it throws it away as both clients do), and the same without files ("memory only", for reference);
//! - a bulk download (RETR) and upload (STOR) of `--size` bytes with PROT P, and `--files` uploads of 4 KiB in
//!   one session, for each pair: our client and curl, each against our server and each peer server (vsftpd,
//!   ProFTPD, Pure-FTPd; see [`crate::peers`]); with TLS 1.3 and TLS 1.2;
//! - the many-file rows (see [`crate::many`]): `--files` files up and down in one invocation of each client
//!   people use (ours, curl, lftp, wget, Debian's and PyPI's rclone, PHP, Python's ftplib), against our server,
//!   vsftpd and pyftpdlib, with TLS 1.3 and TLS 1.2, in files/s; a section of their own in the results.
//!   `--many-only` runs only these (and a 1 MiB bulk file unless `--size` says otherwise); `--clients
//!   ftps,lftp` keeps the many-file rows whose client name starts with one of the names.
//!
//! Every row is printed, measured or not: a pair whose program is not built yet, a peer that is missing and a
//! transfer that failed each say so, with the reason. Each measured row also shows its ratio to the ceiling with
//! file I/O (same TLS version and direction; AES-128-GCM everywhere, since curl is told to use it too).
//!
//! The run fails when a row of ours fails: any row against our server, and a row of our client against a peer
//! where curl succeeded against the same peer in the same way (a peer that fails both is a finding about the
//! peer, reported in the table); in the many-file rows, any client that fails against our server.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::many;
use crate::peers::{self, ChildGuard, Peer, PeerStatus};
use crate::Result;

/// The bulk transfer buffer size every row shares (the ceiling's application write size).
const BUFFER: u64 = 256 * 1024;
/// The small-file size.
pub(crate) const SMALL_FILE: u64 = 4096;

struct Options {
    peers: bool,
    size: u64,
    files: u32,
    rounds: u32,
    smoke: bool,
    /// Only the many-file rows.
    many_only: bool,
    /// `--clients`: the many-file rows of these clients only (name prefixes); empty: every client.
    clients: Vec<String>,
    /// Where the files go (`--dir`); `None` chooses (see [`data_dir`]).
    dir: Option<PathBuf>,
}

const USAGE: &str =
    "usage: cargo xtask bench [--peers] [--size BYTES|64M|1G] [--files N] [--rounds N] \
                     [--dir DIR] [--smoke] [--many-only] [--clients NAME,NAME]";

fn parse_size(text: &str) -> Result<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().map_err(|_| format!("not a size: {text}"))?;
    let unit: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        _ => return Err(format!("unknown unit in {text}")),
    };
    n.checked_mul(unit)
        .filter(|&b| b > 0)
        .ok_or_else(|| format!("bad size: {text}"))
}

fn parse_args(args: &[String]) -> Result<Options> {
    let (mut size, mut files, mut rounds) = (None, None, None);
    let mut options = Options {
        peers: false,
        size: 1 << 30,
        files: 1000,
        rounds: 3,
        smoke: false,
        many_only: false,
        clients: Vec::new(),
        dir: None,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--peers" => options.peers = true,
            "--smoke" => options.smoke = true,
            "--many-only" => options.many_only = true,
            "--size" => size = Some(parse_size(value()?)?),
            "--dir" => options.dir = Some(PathBuf::from(value()?)),
            "--clients" => {
                options.clients = value()?.split(',').map(str::to_owned).collect();
            }
            "--files" => {
                files = Some(
                    value()?
                        .parse::<u32>()
                        .ok()
                        .filter(|&n| n > 0 && n <= 99_999)
                        .ok_or("--files takes 1..=99999")?,
                )
            }
            "--rounds" => {
                rounds = Some(
                    value()?
                        .parse::<u32>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or("--rounds takes a positive number")?,
                )
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if options.smoke {
        // Small enough for CI to finish in well under a minute after the build.
        (options.size, options.files, options.rounds) = (8 << 20, 20, 1);
    }
    if options.many_only {
        // The bulk rows do not run; the bulk file only has to exist for the servers' curl check.
        options.size = 1 << 20;
    }
    options.size = size.unwrap_or(options.size);
    options.files = files.unwrap_or(options.files);
    options.rounds = rounds.unwrap_or(options.rounds);
    Ok(options)
}

/// The TLS version a row is pinned to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Tls {
    V13,
    V12,
}

impl Tls {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Tls::V13 => "1.3",
            Tls::V12 => "1.2",
        }
    }
}

/// What a row moves.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Transfer {
    /// RETR of the bulk file (server sends).
    Download,
    /// STOR of the bulk file (client sends).
    Upload,
    /// `files` STORs of 4 KiB in one control session.
    ManySmall,
}

impl Transfer {
    fn label(self) -> &'static str {
        match self {
            Transfer::Download => "download",
            Transfer::Upload => "upload",
            Transfer::ManySmall => "upload many",
        }
    }
}

/// Where to log in: host, port and the user.
struct Endpoint {
    addr: SocketAddr,
    user: String,
    password: String,
}

impl Endpoint {
    fn url(&self, path: &str) -> String {
        format!("ftp://{}/{path}", self.addr)
    }
}

/// The files a round uses.
pub(crate) struct Workload {
    /// The bulk file, random bytes, `size` long.
    bulk: PathBuf,
    size: u64,
    /// `files` files of 4 KiB named `f<N>.bin` (see [`small_index`]).
    pub(crate) small_dir: PathBuf,
    pub(crate) files: u32,
    /// A scratch directory for captured output.
    pub(crate) scratch: PathBuf,
    /// Where the servers' homes go (`ours`, `vsftpd`, ...).
    homes: PathBuf,
    /// Where the files live, for the report (e.g. `/dev/shm/ftps-rs-bench (tmpfs)`).
    place: String,
}

/// A program that can drive FTPS transfers: curl, or our `ftps` client once it exists.
///
/// A client that is not usable says why (`unavailable`), and its rows say so in the table.
trait Client {
    fn name(&self) -> String;
    /// `None` when the client can be used; otherwise why not (e.g. `not built yet`).
    fn unavailable(&self) -> Option<String>;
    /// Runs one transfer; returns the seconds it took (the whole client run, login included).
    fn transfer(
        &self,
        to: &Endpoint,
        tls: Tls,
        transfer: Transfer,
        work: &Workload,
        remote: &str,
    ) -> Result<f64>;
}

struct Curl;

impl Curl {
    fn base(to: &Endpoint, tls: Tls) -> Command {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--ssl-reqd", "-k", "--connect-timeout", "10"])
            .arg("-u")
            .arg(format!("{}:{}", to.user, to.password));
        // AES-128-GCM like the ceiling, so the ratio measures FTP and the implementation, not the cipher.
        match tls {
            Tls::V13 => cmd.args(["--tlsv1.3", "--tls13-ciphers", "TLS_AES_128_GCM_SHA256"]),
            Tls::V12 => cmd.args([
                "--tlsv1.2",
                "--tls-max",
                "1.2",
                "--ciphers",
                "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256",
            ]),
        };
        cmd
    }
}

fn timeout_for(transfer: Transfer, work: &Workload) -> Duration {
    // Generous (2 MB/s, 0.5 s a file) yet bounded: a wedged peer fails its row instead of hanging the bench.
    Duration::from_secs(match transfer {
        Transfer::Download | Transfer::Upload => 30 + work.size / 2_000_000,
        Transfer::ManySmall => 30 + u64::from(work.files) / 2,
    })
}

pub(crate) fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(2);
    lines.get(start..).unwrap_or(&[]).join(" | ")
}

impl Client for Curl {
    fn name(&self) -> String {
        peers::output_of(Command::new("curl").arg("--version"))
            .and_then(|v| v.split_whitespace().nth(1).map(|v| format!("curl {v}")))
            .unwrap_or_else(|| "curl".into())
    }

    fn unavailable(&self) -> Option<String> {
        (!crate::have("curl")).then(|| "curl not installed".into())
    }

    fn transfer(
        &self,
        to: &Endpoint,
        tls: Tls,
        transfer: Transfer,
        work: &Workload,
        remote: &str,
    ) -> Result<f64> {
        let mut cmd = Curl::base(to, tls);
        match transfer {
            Transfer::Download => {
                cmd.args(["-o", "/dev/null", "-w", "%{size_download}"])
                    .arg(to.url(remote));
            }
            Transfer::Upload => {
                cmd.arg("-T").arg(&work.bulk).arg(to.url(remote));
            }
            Transfer::ManySmall => {
                // One curl run, one control connection: curl reuses it for every globbed upload.
                let last = work.files.saturating_sub(1);
                let glob = format!(
                    "{}/f[{}-{}].bin",
                    work.small_dir.display(),
                    small_index(0),
                    small_index(last)
                );
                cmd.arg("-T").arg(glob).arg(to.url(&format!("{remote}/")));
            }
        }
        let done =
            peers::run_bounded("curl", &mut cmd, timeout_for(transfer, work), &work.scratch)?;
        if !done.success {
            return Err(format!("curl {}: {}", done.status, one_line(&done.stderr)));
        }
        if transfer == Transfer::Download {
            let got: u64 = done.stdout.trim().parse().unwrap_or(0);
            if got != work.size {
                return Err(format!("downloaded {got} of {} bytes", work.size));
            }
        }
        Ok(done.elapsed.as_secs_f64())
    }
}

/// Our `ftps` command-line client (crate ftps-client-blocking), doing what curl does in its rows: a download
/// streamed to standard output and thrown away, an upload of the bulk file, and the small files uploaded in one
/// session (`put FILE... URL/`).
struct OurClient {
    program: PathBuf,
}

impl Client for OurClient {
    fn name(&self) -> String {
        "ftps (ours)".into()
    }

    fn unavailable(&self) -> Option<String> {
        probe(&self.program)
    }

    fn transfer(
        &self,
        to: &Endpoint,
        tls: Tls,
        transfer: Transfer,
        work: &Workload,
        remote: &str,
    ) -> Result<f64> {
        let mut cmd = Command::new(&self.program);
        // The password comes from the environment (never the command line), as a script would pass it.
        cmd.args(["--insecure", "--quiet"])
            .env("FTPS_PASSWORD", &to.password);
        if tls == Tls::V12 {
            cmd.arg("--tls12");
        }
        let url = |path: &str| format!("ftps://{}@{}/{path}", to.user, to.addr);
        let mut stdout = peers::Stdout::Capture;
        match transfer {
            // To standard output and thrown away, like curl's `-o /dev/null` (`ftps get` exits non-zero on a
            // short or truncated download, so the exit status checks it).
            Transfer::Download => {
                cmd.arg("get").arg(url(remote)).arg("-");
                stdout = peers::Stdout::Discard;
            }
            Transfer::Upload => {
                cmd.arg("put").arg(&work.bulk).arg(url(remote));
            }
            // One session for all files, like curl's glob.
            Transfer::ManySmall => {
                cmd.arg("put");
                for i in 0..work.files {
                    cmd.arg(work.small_dir.join(format!("f{}.bin", small_index(i))));
                }
                cmd.arg(url(&format!("{remote}/")));
            }
        };
        let timeout = timeout_for(transfer, work);
        let done = peers::run_bounded_with("ftps", &mut cmd, timeout, &work.scratch, stdout)?;
        if !done.success {
            return Err(format!("ftps {}: {}", done.status, one_line(&done.stderr)));
        }
        Ok(done.elapsed.as_secs_f64())
    }
}

/// `None` when `program` exists and answers `--help`; otherwise why it cannot be used yet.
pub(crate) fn probe(program: &Path) -> Option<String> {
    if !program.is_file() {
        return Some("not built yet".into());
    }
    let works = Command::new(program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!works).then(|| "not built yet (`--help` fails)".into())
}

/// A server under test.
enum Server {
    /// Our `ftps-server`, running.
    Ours { _child: ChildGuard, home: PathBuf },
    /// A peer, running.
    Peer(Peer),
    /// Not there, with the reason.
    Missing { name: String, reason: String },
}

impl Server {
    fn name(&self) -> String {
        match self {
            Server::Ours { .. } => "ftps-server (ours)".into(),
            Server::Peer(peer) => peer.name.clone(),
            Server::Missing { name, .. } => name.clone(),
        }
    }

    fn endpoint(&self, ours_addr: SocketAddr) -> Option<Endpoint> {
        let addr = match self {
            Server::Ours { .. } => ours_addr,
            Server::Peer(peer) => peer.addr,
            Server::Missing { .. } => return None,
        };
        Some(Endpoint {
            addr,
            user: peers::USER.into(),
            password: peers::PASSWORD.into(),
        })
    }

    fn home(&self) -> Option<&Path> {
        match self {
            Server::Ours { home, .. } => Some(home),
            Server::Peer(peer) => Some(&peer.home),
            Server::Missing { .. } => None,
        }
    }

    fn notes(&self) -> String {
        match self {
            Server::Peer(peer) => peer.notes.clone(),
            _ => String::new(),
        }
    }
}

/// Starts our server on loopback with its own certificate, or says why it cannot run yet.
///
/// Like [`OurClient`], the flags are the harness's guess at the server's interface, kept in this one place.
fn start_our_server(
    program: &Path,
    bench_dir: &Path,
    homes: &Path,
) -> Result<(Server, SocketAddr)> {
    if let Some(reason) = probe(program) {
        return Err(reason);
    }
    let dir = bench_dir.join("ours");
    let home = homes.join("ours");
    let _ = fs::remove_dir_all(&home);
    // The configuration, certificate and state live in `dir`, the files in `home` (on the data directory).
    for path in [&dir, &home] {
        fs::create_dir_all(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let (cert, key, _) = peers::certificate(&dir)?;
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Our server takes its settings from a config file and its users from a users file (argon2id hashes).
    let passive = 52000 + port % 5000;
    let config = dir.join("ftps-server.toml");
    let users = dir.join("users.toml");
    let _ = fs::remove_file(&users);
    let text = format!(
        "root = {root:?}\nstate_dir = {state:?}\nusers_file = {users:?}\n\n\
         [[listener]]\naddress = \"{addr}\"\nmode = \"explicit\"\npassive_ports = \"{passive}-{last}\"\n\n\
         [tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n\n\
         [limits]\nmax_sessions_per_ip = 64\n\n[log]\nprotocol = false\ntransfers = false\n",
        root = home.display().to_string(),
        state = dir.join("state").display().to_string(),
        users = users.display().to_string(),
        last = passive + 200,
        cert = cert.display().to_string(),
        key = key.display().to_string(),
    );
    fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    let added = Command::new(program)
        .arg("--config")
        .arg(&config)
        .args(["user", "add", peers::USER])
        .env("FTPS_PASSWORD", peers::PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("ftps-server user add: {e}"))?;
    if !added.status.success() {
        return Err(format!(
            "ftps-server user add failed: {}",
            one_line(&String::from_utf8_lossy(&added.stderr))
        ));
    }
    let log = dir.join("server.log");
    let log_file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = ChildGuard::spawn(
        "ftps-server",
        Command::new(program)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file),
    )?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.exited() {
            return Err(format!(
                "ftps-server exited at start ({status}): {}",
                peers::tail(&log)
            ));
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(format!("ftps-server did not listen on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((
        Server::Ours {
            _child: child,
            home,
        },
        addr,
    ))
}

/// Why a row has no number.
#[derive(Clone, Debug)]
enum Gap {
    /// A program of ours is not usable yet.
    NotBuilt(String),
    /// A peer or tool is missing.
    Missing(String),
    /// It ran and failed.
    Failed(String),
}

impl Gap {
    /// The same reason for a many-file row.
    fn for_many(self) -> many::Gap {
        match self {
            Gap::NotBuilt(why) => many::Gap::NotBuilt(why),
            Gap::Missing(why) => many::Gap::Missing(why),
            Gap::Failed(why) => many::Gap::Failed(why),
        }
    }
}

/// One line of the table.
struct Row {
    server: String,
    client: String,
    tls: Tls,
    transfer: Transfer,
    /// Index into the server list; `None` for the ceiling.
    server_index: Option<usize>,
    /// For a ceiling row: whether it does the file I/O (the ceiling ratios use) or moves memory only.
    ceiling_files: bool,
    /// Index into the client list; `None` for the ceiling.
    client_index: Option<usize>,
    /// Seconds per round.
    seconds: Vec<f64>,
    gap: Option<Gap>,
    notes: Vec<String>,
}

impl Row {
    fn bytes(&self, work: &Workload) -> u64 {
        match self.transfer {
            Transfer::ManySmall => u64::from(work.files) * SMALL_FILE,
            _ => work.size,
        }
    }

    fn median_seconds(&self) -> Option<f64> {
        median(&self.seconds)
    }

    fn mb_per_s(&self, work: &Workload) -> Option<f64> {
        let s = self.median_seconds()?;
        (s > 0.0).then(|| self.bytes(work) as f64 / 1e6 / s)
    }

    fn files_per_s(&self, work: &Workload) -> Option<f64> {
        let s = self.median_seconds()?;
        (self.transfer == Transfer::ManySmall && s > 0.0).then(|| f64::from(work.files) / s)
    }
}

pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => sorted.get(n / 2).copied(),
        _ => Some((sorted.get(n / 2 - 1)? + sorted.get(n / 2)?) / 2.0),
    }
}

pub(crate) fn small_index(i: u32) -> String {
    format!("{i:05}")
}

/// Writes `len` pseudo-random bytes (xorshift64: no compression anywhere can shortcut them).
fn write_random(path: &Path, len: u64, seed: u64) -> Result {
    let mut file = fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut state = seed | 1;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let bytes = state.to_le_bytes();
            word.copy_from_slice(bytes.get(..word.len()).unwrap_or(&bytes));
        }
        let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
        file.write_all(chunk.get(..n).unwrap_or(&chunk))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}

/// The default data directory when `/dev/shm` cannot hold the run.
const DISK_DATA_DIR: &str = "data";

/// The filesystem type `path` is on, from `/proc/mounts` (the longest mount point that contains it).
fn filesystem_type(path: &Path) -> Option<String> {
    let mounts = fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point)
                .then(|| (point.len(), kind.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, kind)| kind)
}

/// Free bytes on the filesystem of `path` (`df`), when it can tell.
fn free_bytes(path: &Path) -> Option<u64> {
    let text = peers::output_of(Command::new("df").args(["-B1", "--output=avail"]).arg(path))?;
    text.lines().nth(1)?.trim().parse().ok()
}

/// Where the run's files go, and whether the run should remove them at the end.
///
/// `--dir` wins. Otherwise `/dev/shm/ftps-rs-bench` when `/dev/shm` is a tmpfs with room for three bulk files
/// (the bulk file, an upload and the ceiling's sink; downloads are hard links), else `target/bench/data`.
/// Why not the disk by default: on this project's machines the disk is shared with other builds, and the
/// filesystem is ext4 without a journal, whose inode allocator scans every inode deleted in the last minutes
/// before it creates a file (`recently_deleted` in `find_inode_bit`): with the bench's own churn of thousands
/// of small files that was 45% of our server's CPU in the small-file rows, a cost of the disk's history, not of
/// any server.
fn data_dir(options: &Options, bench_dir: &Path) -> (PathBuf, bool) {
    if let Some(dir) = &options.dir {
        return (dir.clone(), false);
    }
    let shm = Path::new("/dev/shm");
    let needed = 3 * options.size + u64::from(options.files) * SMALL_FILE * 4 + (256 << 20);
    let tmpfs = filesystem_type(shm).as_deref() == Some("tmpfs");
    if tmpfs && free_bytes(shm).is_some_and(|free| free >= needed) {
        (shm.join("ftps-rs-bench"), true)
    } else {
        (bench_dir.join(DISK_DATA_DIR), false)
    }
}

fn workload(data: &Path, options: &Options) -> Result<Workload> {
    fs::create_dir_all(data).map_err(|e| format!("{}: {e}", data.display()))?;
    let bulk = data.join(format!("bulk-{}.bin", options.size));
    if fs::metadata(&bulk).map(|m| m.len()).ok() != Some(options.size) {
        // Bulk files of other sizes are not needed any more: a GiB each adds up.
        if let Ok(entries) = fs::read_dir(data) {
            for entry in entries.filter_map(|e| e.ok()) {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("bulk-") && name.ends_with(".bin") {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        eprintln!(
            "bench: writing {} random bytes to {}",
            options.size,
            bulk.display()
        );
        write_random(&bulk, options.size, 0x5EED_F00D)?;
    }
    let small_dir = data.join(format!("small-{}", options.files));
    let last = small_dir.join(format!("f{}.bin", small_index(options.files - 1)));
    if !last.is_file() {
        fs::create_dir_all(&small_dir).map_err(|e| format!("{}: {e}", small_dir.display()))?;
        for i in 0..options.files {
            let path = small_dir.join(format!("f{}.bin", small_index(i)));
            write_random(&path, SMALL_FILE, u64::from(i) + 1)?;
        }
    }
    let scratch = data.join("scratch");
    fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let homes = data.join("homes");
    fs::create_dir_all(&homes).map_err(|e| format!("{}: {e}", homes.display()))?;
    let place = match filesystem_type(data) {
        Some(kind) => format!("{} ({kind})", data.display()),
        None => data.display().to_string(),
    };
    Ok(Workload {
        bulk,
        size: options.size,
        small_dir,
        files: options.files,
        scratch,
        homes,
        place,
    })
}

/// Whether the workspace declares binary `bin` in `package` (so `cargo build --bin` will not fail on it).
fn declares_bin(metadata: &str, bin: &str) -> bool {
    metadata.contains(&format!("\"crate_types\":[\"bin\"],\"name\":\"{bin}\""))
}

/// One release build of everything the bench runs.
fn build(release_dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let metadata = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(crate::root())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut cmd = crate::cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "ftps-benches",
        "--bin",
        "tls-ceiling",
    ]);
    for (package, bin) in [
        ("ftps-server-smol", "ftps-server"),
        ("ftps-client-blocking", "ftps"),
    ] {
        if declares_bin(&metadata, bin) {
            cmd.args(["-p", package, "--bin", bin]);
        } else {
            eprintln!(
                "bench: {package} has no `{bin}` binary yet: its rows will say `not built yet`"
            );
        }
    }
    crate::run("cargo build --release (bench binaries)", &mut cmd)?;
    Ok((
        release_dir.join("tls-ceiling"),
        release_dir.join("ftps-server"),
        release_dir.join("ftps"),
    ))
}

/// Runs `tls-ceiling` once; returns seconds.
fn ceiling_once(
    program: &Path,
    tls: Tls,
    transfer: Transfer,
    files: bool,
    work: &Workload,
) -> Result<(f64, String)> {
    let mut cmd = Command::new(program);
    cmd.arg("--bytes")
        .arg(work.size.to_string())
        .arg("--buffer")
        .arg(BUFFER.to_string())
        .arg("--direction")
        .arg(if transfer == Transfer::Download {
            "download"
        } else {
            "upload"
        });
    if tls == Tls::V12 {
        cmd.arg("--tls12");
    }
    let sink = work.scratch.join("ceiling-sink.bin");
    if files {
        // The file I/O of the FTPS rows: the sender reads the bulk file; on upload the receiver (a server)
        // writes it to a file, on download the receiver (curl, `ftps get -`) throws it away.
        cmd.arg("--source").arg(&work.bulk);
        if transfer == Transfer::Upload {
            cmd.arg("--sink").arg(&sink);
        }
    }
    let done = peers::run_bounded(
        "tls-ceiling",
        &mut cmd,
        timeout_for(transfer, work),
        &work.scratch,
    )?;
    if !done.success {
        return Err(format!(
            "tls-ceiling {}: {}",
            done.status,
            one_line(&done.stderr)
        ));
    }
    let _ = fs::remove_file(&sink);
    let seconds = json_number(&done.stdout, "seconds").ok_or("tls-ceiling: no seconds")?;
    let suite = json_string(&done.stdout, "suite").unwrap_or_default();
    Ok((seconds, suite))
}

fn json_number(text: &str, key: &str) -> Option<f64> {
    let start = text.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = text.get(start..)?;
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest.get(..end)?.trim().parse().ok()
}

fn json_string(text: &str, key: &str) -> Option<String> {
    let start = text.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let rest = text.get(start..)?;
    rest.get(..rest.find('"')?).map(str::to_owned)
}

/// Checks a curl login and upload against a fresh server before any timing; returns what TLS curl got.
fn verify_with_curl(to: &Endpoint, home: &Path, work: &Workload) -> Result<String> {
    let probe = work.small_dir.join(format!("f{}.bin", small_index(0)));
    // Any TLS version here: the question is whether the peer works at all.
    let mut cmd_any = Command::new("curl");
    cmd_any
        .args([
            "-v",
            "-sS",
            "--ssl-reqd",
            "-k",
            "--connect-timeout",
            "10",
            "-u",
        ])
        .arg(format!("{}:{}", to.user, to.password))
        .arg("-T")
        .arg(&probe)
        .arg(to.url("verify.bin"));
    let done = peers::run_bounded(
        "curl (verify)",
        &mut cmd_any,
        Duration::from_secs(30),
        &work.scratch,
    )?;
    if !done.success {
        return Err(format!("curl check failed: {}", one_line(&done.stderr)));
    }
    let uploaded = fs::read(home.join("verify.bin")).unwrap_or_default();
    let expected = fs::read(&probe).unwrap_or_default();
    if uploaded != expected {
        return Err("curl check: the uploaded file differs".into());
    }
    let tls = done
        .stderr
        .lines()
        .find_map(|l| {
            l.split_once("SSL connection using ")
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    Ok(tls)
}

/// Places the bulk file in the server's home as `down.bin` (a hard link: no copy of a GiB per peer).
fn stage_download(home: &Path, work: &Workload) -> Result {
    let target = home.join("down.bin");
    let _ = fs::remove_file(&target);
    if fs::hard_link(&work.bulk, &target).is_err() {
        fs::copy(&work.bulk, &target).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

/// A directory for one round's small uploads, owned by the bench user where there is one.
fn stage_small_dir(home: &Path, name: &str, server: &Server) -> Result {
    let dir = home.join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if matches!(server, Server::Peer(_)) {
        peers::chown_to_user(&dir)?;
    }
    Ok(())
}

/// Runs one round of one row; returns the seconds, or why it failed.
fn measure(
    row: &Row,
    round: u32,
    servers: &[Server],
    clients: &[Box<dyn Client>],
    ours_addr: SocketAddr,
    work: &Workload,
) -> Result<f64> {
    let (Some(si), Some(ci)) = (row.server_index, row.client_index) else {
        return Err("no server or client".into());
    };
    let server = servers.get(si).ok_or("no such server")?;
    let client = clients.get(ci).ok_or("no such client")?;
    let to = server.endpoint(ours_addr).ok_or("server missing")?;
    let home = server.home().ok_or("server missing")?;
    match row.transfer {
        Transfer::Download => client.transfer(&to, row.tls, row.transfer, work, "down.bin"),
        Transfer::Upload => {
            let seconds = client.transfer(&to, row.tls, row.transfer, work, "up.bin")?;
            let got = fs::metadata(home.join("up.bin"))
                .map(|m| m.len())
                .unwrap_or(0);
            let _ = fs::remove_file(home.join("up.bin"));
            if got != work.size {
                return Err(format!("the server stored {got} of {} bytes", work.size));
            }
            Ok(seconds)
        }
        Transfer::ManySmall => {
            let name = format!("small-{}-{}-r{round}", row.tls.label(), ci);
            stage_small_dir(home, &name, server)?;
            let result = client.transfer(&to, row.tls, row.transfer, work, &name);
            let arrived = fs::read_dir(home.join(&name))
                .map(|d| d.count())
                .unwrap_or(0);
            let _ = fs::remove_dir_all(home.join(&name));
            let seconds =
                result.map_err(|e| format!("{e} ({arrived} of {} files arrived)", work.files))?;
            if arrived != work.files as usize {
                return Err(format!("{arrived} of {} files arrived", work.files));
            }
            Ok(seconds)
        }
    }
}

/// `cargo xtask bench s3 [SIZE_MIB] [FILES]`: runs `benches/s3_e2e.sh`, prints its table and keeps a copy.
fn run_s3(args: &[String]) -> Result {
    if args.len() > 2 || args.iter().any(|a| a.parse::<u32>().is_err()) {
        return Err("usage: cargo xtask bench s3 [SIZE_MIB] [FILES]".into());
    }
    let root = crate::root();
    let output = Command::new("bash")
        .arg(root.join("benches/s3_e2e.sh"))
        .args(args)
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("bash benches/s3_e2e.sh: {e}"))?;
    let table = String::from_utf8_lossy(&output.stdout);
    print!("{table}");
    if !output.status.success() {
        return Err(format!("benches/s3_e2e.sh failed ({})", output.status));
    }
    let bench_dir = root.join("target").join("bench");
    fs::create_dir_all(&bench_dir).map_err(|e| format!("{}: {e}", bench_dir.display()))?;
    let saved = bench_dir.join("s3-e2e.txt");
    fs::write(&saved, table.as_bytes()).map_err(|e| format!("{}: {e}", saved.display()))?;
    eprintln!("bench: table saved to {}", saved.display());
    Ok(())
}

/// `cargo xtask bench`.
pub(crate) fn run(args: &[String]) -> Result {
    if let Some(("s3", rest)) = args.split_first().map(|(a, r)| (a.as_str(), r)) {
        return run_s3(rest);
    }
    let options = parse_args(args)?;
    let target = crate::root().join("target");
    let bench_dir = target.join("bench");
    fs::create_dir_all(&bench_dir).map_err(|e| format!("{}: {e}", bench_dir.display()))?;
    let (ceiling, server_bin, client_bin) = build(&target.join("release"))?;
    let (data, remove_data) = data_dir(&options, &bench_dir);
    let work = workload(&data, &options)?;
    eprintln!("bench: files in {}", work.place);

    // Servers: ours first, then the peers.
    let ours_addr_fallback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut ours_addr = ours_addr_fallback;
    let mut servers = Vec::new();
    match start_our_server(&server_bin, &bench_dir, &work.homes) {
        Ok((server, addr)) => {
            ours_addr = addr;
            servers.push(server);
        }
        Err(reason) => servers.push(Server::Missing {
            name: "ftps-server (ours)".into(),
            reason,
        }),
    }
    // Always asked for, so a peer that cannot run (not root, not installed) still gets its rows and reason.
    for status in peers::start_all(&bench_dir, &work.homes, options.peers) {
        servers.push(match status {
            PeerStatus::Ready(peer) => Server::Peer(peer),
            PeerStatus::Unavailable { name, reason } => Server::Missing { name, reason },
        });
    }

    let our_client_bin = client_bin.clone();
    let clients: Vec<Box<dyn Client>> = vec![
        Box::new(OurClient {
            program: client_bin,
        }),
        Box::new(Curl),
    ];
    let client_names: Vec<String> = clients.iter().map(|c| c.name()).collect();

    // Verify every server with curl before any timing; a server that fails is reported, not measured.
    let mut server_gap: Vec<Option<Gap>> = Vec::new();
    for server in &servers {
        let (gap, checked_tls) = match server {
            Server::Missing { name, reason } if name.contains("ours") => {
                (Some(Gap::NotBuilt(reason.clone())), String::new())
            }
            Server::Missing { reason, .. } => (Some(Gap::Missing(reason.clone())), String::new()),
            _ => {
                let home = server.home().unwrap_or(Path::new("/nonexistent"));
                let checked = stage_download(home, &work).and_then(|()| {
                    let to = server.endpoint(ours_addr).ok_or("no endpoint")?;
                    verify_with_curl(&to, home, &work)
                });
                match checked {
                    Ok(tls) => (None, tls),
                    Err(e) => (Some(Gap::Failed(e)), String::new()),
                }
            }
        };
        if let Some(gap) = &gap {
            eprintln!("bench: {}: {gap:?}", server.name());
        }
        if !checked_tls.is_empty() {
            eprintln!(
                "bench: {}: curl check passed ({checked_tls})",
                server.name()
            );
        }
        server_gap.push(gap);
    }

    // The many-file rows: ours and vsftpd as started above, and pyftpdlib, a peer of these rows only.
    let mut targets = Vec::new();
    for (si, server) in servers.iter().enumerate() {
        let name = server.name();
        if !name.contains("(ours)") && !name.starts_with("vsftpd") {
            continue;
        }
        targets.push(many::Target {
            addr: server.endpoint(ours_addr).map(|e| e.addr),
            home: server.home().map(Path::to_path_buf).unwrap_or_default(),
            ours: name.contains("(ours)"),
            chown: matches!(server, Server::Peer(_)),
            tls_log: None,
            notes: server.notes(),
            gap: server_gap.get(si).cloned().flatten().map(Gap::for_many),
            name,
        });
    }
    let pyftpdlib = match peers::start_pyftpdlib(&bench_dir, &work.homes, options.peers) {
        PeerStatus::Ready(peer) => {
            let to = Endpoint {
                addr: peer.addr,
                user: peers::USER.into(),
                password: peers::PASSWORD.into(),
            };
            let gap = match verify_with_curl(&to, &peer.home, &work) {
                Ok(tls) => {
                    eprintln!("bench: {}: curl check passed ({tls})", peer.name);
                    None
                }
                Err(e) => {
                    eprintln!("bench: {}: {e}", peer.name);
                    Some(many::Gap::Failed(e))
                }
            };
            targets.push(many::Target {
                name: peer.name.clone(),
                addr: Some(peer.addr),
                home: peer.home.clone(),
                ours: false,
                chown: false,
                tls_log: peer.tls_log.clone(),
                notes: peer.notes.clone(),
                gap,
            });
            Some(peer)
        }
        PeerStatus::Unavailable { name, reason } => {
            targets.push(many::Target {
                name,
                addr: None,
                home: PathBuf::new(),
                ours: false,
                chown: false,
                tls_log: None,
                notes: String::new(),
                gap: Some(many::Gap::Missing(reason)),
            });
            None
        }
    };
    let curl_name = Curl.name();
    let mut many_clients = many::clients(&our_client_bin, curl_name);
    if !options.clients.is_empty() {
        many_clients.retain(|c| {
            options
                .clients
                .iter()
                .any(|n| c.name.starts_with(n.as_str()))
        });
    }
    let mut many = many::Plan::new(targets, many_clients, &work, &bench_dir.join("many"))?;

    // The rows, in table order.
    let mut rows = Vec::new();
    for (files, server) in [
        (true, "raw rustls + file I/O (ceiling)"),
        (false, "raw rustls, memory only"),
    ] {
        for tls in [Tls::V13, Tls::V12] {
            for transfer in [Transfer::Download, Transfer::Upload] {
                rows.push(Row {
                    server: server.into(),
                    client: "raw rustls".into(),
                    tls,
                    transfer,
                    server_index: None,
                    ceiling_files: files,
                    client_index: None,
                    seconds: Vec::new(),
                    gap: None,
                    notes: Vec::new(),
                });
            }
        }
    }
    for (si, server) in servers.iter().enumerate() {
        for (ci, client) in clients.iter().enumerate() {
            for tls in [Tls::V13, Tls::V12] {
                for transfer in [Transfer::Download, Transfer::Upload, Transfer::ManySmall] {
                    let gap = server_gap
                        .get(si)
                        .cloned()
                        .flatten()
                        .or_else(|| client.unavailable().map(Gap::NotBuilt));
                    let mut notes = Vec::new();
                    let server_notes = server.notes();
                    if !server_notes.is_empty() {
                        notes.push(server_notes);
                    }
                    rows.push(Row {
                        server: server.name(),
                        client: client_names.get(ci).cloned().unwrap_or_default(),
                        tls,
                        transfer,
                        server_index: Some(si),
                        ceiling_files: false,
                        client_index: Some(ci),
                        seconds: Vec::new(),
                        gap,
                        notes,
                    });
                }
            }
        }
    }

    if options.many_only {
        rows.clear();
    }

    // Rounds are interleaved: every row once per round.
    for round in 0..options.rounds {
        eprintln!("bench: round {} of {}", round + 1, options.rounds);
        for row in rows.iter_mut() {
            if row.gap.is_some() {
                continue;
            }
            let result = if row.server_index.is_none() {
                ceiling_once(&ceiling, row.tls, row.transfer, row.ceiling_files, &work).map(
                    |(s, suite)| {
                        if round == 0 {
                            row.notes.push(suite);
                        }
                        s
                    },
                )
            } else {
                measure(row, round, &servers, &clients, ours_addr, &work)
            };
            match result {
                Ok(seconds) => row.seconds.push(seconds),
                Err(e) => {
                    eprintln!(
                        "bench: {} / {} / TLS {} / {}: {e}",
                        row.server,
                        row.client,
                        row.tls.label(),
                        row.transfer.label()
                    );
                    row.gap = Some(Gap::Failed(e));
                }
            }
        }
        let started = std::time::Instant::now();
        many.round(round, &work);
        eprintln!(
            "bench: many-file rows, round {}: {:.0}s",
            round + 1,
            started.elapsed().as_secs_f64()
        );
    }
    drop(servers);
    drop(pyftpdlib);
    if remove_data {
        // The default data directory is in memory: give it back.
        let _ = fs::remove_dir_all(&data);
    }

    let machine = machine();
    let markdown =
        markdown(&rows, &work, &options, &machine) + &many.markdown(options.rounds, options.smoke);
    let json = json(&rows, &work, &options, &machine, &many.json(options.rounds));
    print!("{markdown}");
    let md_path = bench_dir.join("results.md");
    let json_path = bench_dir.join("results.json");
    fs::write(&md_path, &markdown).map_err(|e| format!("{}: {e}", md_path.display()))?;
    fs::write(&json_path, &json).map_err(|e| format!("{}: {e}", json_path.display()))?;
    eprintln!(
        "bench: wrote {} and {}",
        md_path.display(),
        json_path.display()
    );
    // Peers may fail (that is a finding, reported in the table); a row of ours that fails is a broken build.
    let ours_failed: Vec<String> = rows
        .iter()
        .filter(|row| is_ours_to_answer_for(&rows, row))
        .filter_map(|row| {
            row.gap.as_ref().map(|gap| {
                format!(
                    "{} / {} / {:?}: {gap:?}",
                    row.server, row.client, row.transfer
                )
            })
        })
        .chain(many.ours_failed())
        .collect();
    if !ours_failed.is_empty() {
        return Err(format!(
            "rows of ours failed:\n  {}",
            ours_failed.join("\n  ")
        ));
    }
    Ok(())
}

/// Whether a failed `row` is our fault: every row against our server, and our client against a peer where curl
/// did the same transfer against the same peer without failing (a missing peer is never our fault).
fn is_ours_to_answer_for(rows: &[Row], row: &Row) -> bool {
    if row.server.contains("(ours)") {
        return true;
    }
    if !row.client.contains("(ours)") || matches!(row.gap, Some(Gap::Missing(_))) {
        return false;
    }
    rows.iter().any(|other| {
        other.server_index == row.server_index
            && other.client_index != row.client_index
            && other.tls == row.tls
            && other.transfer == row.transfer
            && other.gap.is_none()
    })
}

struct Machine {
    date: String,
    uname: String,
    nproc: String,
    cpu: String,
}

fn machine() -> Machine {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    Machine {
        date: peers::output_of(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))
            .unwrap_or_default(),
        uname: peers::output_of(Command::new("uname").arg("-a")).unwrap_or_default(),
        nproc: peers::output_of(&mut Command::new("nproc")).unwrap_or_default(),
        cpu,
    }
}

fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

fn size_label(row: &Row, work: &Workload) -> String {
    match row.transfer {
        Transfer::ManySmall => format!("{} × 4 KiB", work.files),
        _ => human_size(work.size),
    }
}

/// The ceiling a row is compared with: same TLS version; bulk direction (small files: upload).
fn ceiling_for<'a>(rows: &'a [Row], row: &Row) -> Option<&'a Row> {
    let direction = match row.transfer {
        Transfer::Download => Transfer::Download,
        _ => Transfer::Upload,
    };
    rows.iter().find(|r| {
        r.server_index.is_none() && r.ceiling_files && r.tls == row.tls && r.transfer == direction
    })
}

fn ratio(rows: &[Row], row: &Row, work: &Workload) -> Option<f64> {
    let mine = row.mb_per_s(work)?;
    let ceiling = ceiling_for(rows, row)?.mb_per_s(work)?;
    (ceiling > 0.0).then(|| mine / ceiling)
}

fn gap_text(gap: &Gap) -> String {
    match gap {
        Gap::NotBuilt(why) => format!("**{why}**"),
        Gap::Missing(why) => format!("**missing**: {why}"),
        Gap::Failed(why) => format!("**failed**: {why}"),
    }
}

fn markdown(rows: &[Row], work: &Workload, options: &Options, machine: &Machine) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# cargo xtask bench\n");
    let _ = writeln!(
        out,
        "{} · {} · {} cores · {}\n",
        machine.date, machine.cpu, machine.nproc, machine.uname
    );
    let _ = writeln!(
        out,
        "Bulk {} in {} KiB buffers, {} × 4 KiB in one session, {} round(s), medians{}. PROT P everywhere; \
         curl pinned to AES-128-GCM like the ceiling; ratio = row MB/s ÷ ceiling MB/s (same TLS version and \
         direction; many small files against the upload ceiling). The ceiling is raw rustls over TCP loopback \
         doing the rows' file I/O (sender reads the bulk file; receiver writes a file on upload, discards on \
         download), clock from after the handshake; FTPS rows also include process start and login. Both clients \
         download to /dev/null (curl `-o /dev/null`, `ftps get URL -`) and upload the small files in one session \
         (curl's glob, `ftps put FILE... URL/`). Files and server homes in {}.\n",
        human_size(work.size),
        BUFFER / 1024,
        work.files,
        options.rounds,
        if options.smoke { " (smoke run)" } else { "" },
        work.place,
    );
    let _ = writeln!(
        out,
        "| server | client | TLS | direction | size | MB/s (median) | files/s | ratio to ceiling | rounds | notes |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---:|---:|---:|---:|---|");
    if rows.is_empty() {
        let _ = writeln!(
            out,
            "| (`--many-only`: no bulk or ceiling rows in this run) |||||||||"
        );
    }
    for row in rows {
        let mb = row
            .mb_per_s(work)
            .map(|v| format!("{v:.1}"))
            .unwrap_or_else(|| "—".into());
        let files = row
            .files_per_s(work)
            .map(|v| format!("{v:.0}"))
            .unwrap_or_else(|| {
                if row.transfer == Transfer::ManySmall {
                    "—".into()
                } else {
                    String::new()
                }
            });
        let ratio = ratio(rows, row, work)
            .map(|v| format!("{v:.2}"))
            .unwrap_or_else(|| "—".into());
        let mut notes = row.notes.clone();
        if let Some(gap) = &row.gap {
            notes.insert(0, gap_text(gap));
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {mb} | {files} | {ratio} | {} | {} |",
            row.server,
            row.client,
            row.tls.label(),
            row.transfer.label(),
            size_label(row, work),
            row.seconds.len(),
            notes.join("; ").replace('|', "/"),
        );
    }
    out
}

pub(crate) fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub(crate) fn json_number_or_null(value: Option<f64>, decimals: usize) -> String {
    value
        .filter(|v| v.is_finite())
        .map(|v| format!("{v:.decimals$}"))
        .unwrap_or_else(|| "null".into())
}

/// `results.json`; `many` is the many-file rows' object ([`many::Plan::json`]).
fn json(rows: &[Row], work: &Workload, options: &Options, machine: &Machine, many: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{{");
    let _ = writeln!(out, "  \"date\": {},", json_escape(&machine.date));
    let _ = writeln!(
        out,
        "  \"machine\": {{\"uname\": {}, \"nproc\": {}, \"cpu\": {}}},",
        json_escape(&machine.uname),
        json_escape(&machine.nproc),
        json_escape(&machine.cpu)
    );
    let _ = writeln!(
        out,
        "  \"options\": {{\"size\": {}, \"files\": {}, \"file_size\": {SMALL_FILE}, \"rounds\": {}, \
         \"buffer\": {BUFFER}, \"smoke\": {}, \"peers\": {}, \"files_in\": {}}},",
        work.size,
        work.files,
        options.rounds,
        options.smoke,
        options.peers,
        json_escape(&work.place)
    );
    let _ = writeln!(out, "  \"rows\": [");
    for (i, row) in rows.iter().enumerate() {
        let (status, reason) = match &row.gap {
            None => ("measured", String::new()),
            Some(Gap::NotBuilt(why)) => ("not_built", why.clone()),
            Some(Gap::Missing(why)) => ("missing", why.clone()),
            Some(Gap::Failed(why)) => ("failed", why.clone()),
        };
        let seconds: Vec<String> = row.seconds.iter().map(|s| format!("{s:.6}")).collect();
        let _ = write!(
            out,
            "    {{\"server\": {}, \"client\": {}, \"tls\": {}, \"direction\": {}, \"bytes\": {}, \
             \"status\": {}, \"reason\": {}, \"seconds\": [{}], \"mb_per_s\": {}, \"files_per_s\": {}, \
             \"ratio_to_ceiling\": {}, \"notes\": {}}}",
            json_escape(&row.server),
            json_escape(&row.client),
            json_escape(row.tls.label()),
            json_escape(row.transfer.label()),
            row.bytes(work),
            json_escape(status),
            json_escape(&reason),
            seconds.join(", "),
            json_number_or_null(row.mb_per_s(work), 1),
            json_number_or_null(row.files_per_s(work), 1),
            json_number_or_null(ratio(rows, row, work), 3),
            json_escape(&row.notes.join("; ")),
        );
        let _ = writeln!(out, "{}", if i + 1 < rows.len() { "," } else { "" });
    }
    let _ = writeln!(out, "  ],\n  \"many_files\": {many}\n}}");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("256m").unwrap(), 256 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("0").is_err());
        assert!(parse_size("1T").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn smoke_sets_small_defaults_and_flags_still_win() {
        let o = parse_args(&strings(&["--smoke"])).unwrap();
        assert_eq!((o.size, o.files, o.rounds), (8 << 20, 20, 1));
        let o = parse_args(&strings(&["--rounds", "2", "--smoke", "--size", "1M"])).unwrap();
        assert_eq!((o.size, o.files, o.rounds), (1 << 20, 20, 2));
        let o = parse_args(&[]).unwrap();
        assert_eq!(
            (o.size, o.files, o.rounds, o.peers),
            (1 << 30, 1000, 3, false)
        );
        let o = parse_args(&strings(&["--dir", "/tmp/x"])).unwrap();
        assert_eq!(o.dir.as_deref(), Some(Path::new("/tmp/x")));
        assert!(parse_args(&strings(&["--dir"])).is_err());
        let o = parse_args(&strings(&["--many-only", "--files", "50"])).unwrap();
        assert_eq!((o.many_only, o.size, o.files), (true, 1 << 20, 50));
        let o = parse_args(&strings(&["--many-only", "--size", "2M"])).unwrap();
        assert_eq!(o.size, 2 << 20);
        assert!(parse_args(&strings(&["--rounds", "0"])).is_err());
        assert!(parse_args(&strings(&["--bogus"])).is_err());
    }

    #[test]
    fn a_given_dir_is_used_and_kept() {
        let options = parse_args(&strings(&["--dir", "/tmp/ftps-bench-x"])).unwrap();
        let (dir, remove) = data_dir(&options, Path::new("/nonexistent/target/bench"));
        assert_eq!(
            (dir.as_path(), remove),
            (Path::new("/tmp/ftps-bench-x"), false)
        );
        // Every Linux path is on some mount.
        assert!(filesystem_type(Path::new("/")).is_some());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_escape("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }

    #[test]
    fn reads_the_ceiling_line() {
        let line = "{\"bytes\":8,\"direction\":\"upload\",\"suite\":\"TLS13_AES_128_GCM_SHA256\",\
                    \"seconds\":0.250000,\"mb_per_s\":1.0}";
        assert_eq!(json_number(line, "seconds"), Some(0.25));
        assert_eq!(
            json_string(line, "suite").as_deref(),
            Some("TLS13_AES_128_GCM_SHA256")
        );
    }

    #[test]
    fn finds_declared_binaries_in_cargo_metadata() {
        let metadata = "{\"kind\":[\"bin\"],\"crate_types\":[\"bin\"],\"name\":\"ftps-server\",\"src_path\":\"x\"}";
        assert!(declares_bin(metadata, "ftps-server"));
        assert!(!declares_bin(metadata, "ftps"));
    }

    fn row(server: &str, si: usize, client: &str, ci: usize, gap: Option<Gap>) -> Row {
        Row {
            server: server.into(),
            client: client.into(),
            tls: Tls::V13,
            transfer: Transfer::Upload,
            server_index: Some(si),
            ceiling_files: false,
            client_index: Some(ci),
            seconds: Vec::new(),
            gap,
            notes: Vec::new(),
        }
    }

    #[test]
    fn our_client_fails_the_run_against_a_peer_only_where_curl_succeeded() {
        let failed = || Some(Gap::Failed("x".into()));
        // curl also failed against this peer: a finding about the peer.
        let rows = vec![
            row("vsftpd", 1, "ftps (ours)", 0, failed()),
            row("vsftpd", 1, "curl", 1, failed()),
        ];
        assert!(!is_ours_to_answer_for(&rows, &rows[0]));
        // curl succeeded: our client's failure is ours.
        let rows = vec![
            row("vsftpd", 1, "ftps (ours)", 0, failed()),
            row("vsftpd", 1, "curl", 1, None),
        ];
        assert!(is_ours_to_answer_for(&rows, &rows[0]));
        assert!(!is_ours_to_answer_for(&rows, &rows[1]));
        // Anything against our server is ours; a missing peer never is.
        let rows = vec![row("ftps-server (ours)", 0, "curl", 1, failed())];
        assert!(is_ours_to_answer_for(&rows, &rows[0]));
        let rows = vec![
            row(
                "ProFTPD",
                2,
                "ftps (ours)",
                0,
                Some(Gap::Missing("m".into())),
            ),
            row("ProFTPD", 2, "curl", 1, None),
        ];
        assert!(!is_ours_to_answer_for(&rows, &rows[0]));
    }

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human_size(1 << 30), "1 GiB");
        assert_eq!(human_size(8 << 20), "8 MiB");
        assert_eq!(human_size(1000), "1000 B");
    }
}
