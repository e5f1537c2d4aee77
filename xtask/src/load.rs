//! `cargo xtask load`: many concurrent FTPS sessions against our server on loopback (issue 7, "Load held").
//!
//! Builds `ftps-server` and the `ftps-load` driver in release, then runs two phases, each against a freshly
//! started server (so the idle phase's "before" is not flattered by memory a previous phase freed):
//!
//! 1. **transfers**: `--clients` concurrent clients (default 200), each doing `--rounds` of upload, download
//!    and listing over `PROT P` under the server's default policy (data connections must resume the control
//!    session's TLS). The driver checks every byte by SHA-256. Peak server RSS is the child's `VmHWM`.
//! 2. **idle**: `--idle` logged-in TLS control sessions (anonymous login, so no password KDF runs), held open
//!    while xtask reads the server's `VmRSS` and CPU time; memory per idle session is
//!    `(RSS with sessions - RSS before) / sessions`, CPU per login is the server's `utime + stime` over the
//!    logins divided by their number (TCP accept, TLS handshake, `AUTH TLS`/`USER`/`PASS`/`PBSZ`/`PROT`).
//!
//! `--idle N` alone runs only the idle phase. `--smoke` is the CI size (20 clients, 200 idle sessions, a few
//! seconds). Errors fail the task; performance targets are reported, never asserted. Results go to
//! `target/load/results.{md,json}`. Everything listens on 127.0.0.1, and each phase is bounded in time: the
//! driver and the server are killed when it runs out.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::Result;

/// User of the transfer phase (argon2id hash in the users file, as in production).
const USER: &str = "load";
const PASSWORD: &str = "load-password";

/// The target for memory per idle logged-in TLS session (reported, not asserted).
const IDLE_TARGET_KIB: f64 = 32.0;
/// The target for server CPU per login without the KDF (reported, not asserted).
const LOGIN_CPU_TARGET_MS: f64 = 1.0;

struct Options {
    clients: usize,
    rounds: usize,
    size: u64,
    idle: usize,
    transfers: bool,
    smoke: bool,
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        clients: 200,
        rounds: 3,
        size: 256 * 1024,
        idle: 1000,
        transfers: true,
        smoke: false,
    };
    if args.iter().any(|a| a == "--smoke") {
        options.clients = 20;
        options.rounds = 2;
        options.size = 64 * 1024;
        options.idle = 200;
        options.smoke = true;
    }
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let mut number = || -> Result<u64> {
            let text = iter.next().ok_or_else(|| format!("{flag} needs a value"))?;
            text.parse()
                .map_err(|_| format!("{flag}: not a number: {text}"))
        };
        match flag.as_str() {
            "--smoke" => {}
            "--clients" => options.clients = number()? as usize,
            "--rounds" => options.rounds = number()? as usize,
            "--size" => options.size = number()?,
            "--idle" => {
                options.idle = number()? as usize;
                options.transfers = false;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(options)
}

/// A child process killed and reaped on drop, so nothing outlives the task.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// Memory and CPU of a process, from /proc.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    rss_kib: u64,
    hwm_kib: u64,
    cpu_ticks: u64,
}

fn sample(pid: u32) -> Result<Sample> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 (proc(5)).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Sample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        cpu_ticks: ticks(11) + ticks(12),
    })
}

fn clock_ticks_per_second() -> u64 {
    crate::peers::output_of(Command::new("getconf").arg("CLK_TCK"))
        .and_then(|t| t.parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// An ECDSA P-256 certificate for localhost (the cheap handshake signature a busy server would pick).
fn certificate(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // An end-entity certificate that is its own trust anchor: webpki refuses a CA used as end entity.
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("openssl: {e}"))?;
    if !status.success() {
        return Err(format!("openssl req failed ({status})"));
    }
    Ok((cert, key))
}

/// Where one run keeps its files.
struct Setup {
    dir: PathBuf,
    server: PathBuf,
    driver: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    users: PathBuf,
}

fn build() -> Result<(PathBuf, PathBuf)> {
    let mut cmd = crate::cargo();
    cmd.args([
        "build",
        "--release",
        "-p",
        "ftps-benches",
        "--bin",
        "ftps-load",
    ])
    .args(["-p", "ftps-server-smol", "--bin", "ftps-server"]);
    crate::run("cargo build --release (load binaries)", &mut cmd)?;
    let release = crate::root().join("target").join("release");
    Ok((release.join("ftps-server"), release.join("ftps-load")))
}

fn prepare(dir: &Path) -> Result<Setup> {
    let (server, driver) = build()?;
    fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (cert, key) = certificate(dir)?;
    let users = dir.join("users.toml");
    let _ = fs::remove_file(&users);
    let setup = Setup {
        dir: dir.to_path_buf(),
        server,
        driver,
        cert,
        key,
        users,
    };
    // The users file is written through the server's own command (argon2id hash of the password).
    let config = write_config(&setup, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), 10)?;
    let added = Command::new(&setup.server)
        .arg("--config")
        .arg(&config)
        .args(["user", "add", USER])
        .env("FTPS_PASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("ftps-server user add: {e}"))?;
    if !added.status.success() {
        return Err(format!(
            "ftps-server user add failed: {}",
            String::from_utf8_lossy(&added.stderr).trim()
        ));
    }
    Ok(setup)
}

fn write_config(setup: &Setup, addr: SocketAddr, max_sessions: usize) -> Result<PathBuf> {
    let root = setup.dir.join("root");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
    let passive = 40000 + addr.port() % 10000;
    let config = setup.dir.join("ftps-server.toml");
    let text = format!(
        "root = {root:?}\nstate_dir = {state:?}\nusers_file = {users:?}\n\n\
         [[listener]]\naddress = \"{addr}\"\nmode = \"explicit\"\npassive_ports = \"{passive}-{last}\"\n\n\
         [tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n\n\
         [anonymous]\nenabled = true\n\n\
         [limits]\nmax_sessions = {max_sessions}\nmax_sessions_per_ip = {max_sessions}\n\
         idle_timeout = 600\nlogin_timeout = 120\n\n\
         [log]\nprotocol = false\ntransfers = false\n",
        root = root.display().to_string(),
        state = setup.dir.join("state").display().to_string(),
        users = setup.users.display().to_string(),
        last = passive + 1000,
        cert = setup.cert.display().to_string(),
        key = setup.key.display().to_string(),
    );
    fs::write(&config, text).map_err(|e| format!("{}: {e}", config.display()))?;
    Ok(config)
}

/// Starts the server on a free loopback port; returns it once it accepts connections.
fn start_server(setup: &Setup, max_sessions: usize) -> Result<(Guard, SocketAddr)> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let config = write_config(setup, addr, max_sessions)?;
    let log = setup.dir.join("server.log");
    let log_file = fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let child = Command::new(&setup.server)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("ftps-server: cannot start: {e}"))?;
    let mut server = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = server.0.try_wait() {
            return Err(format!(
                "ftps-server exited at start ({status}); see {}",
                log.display()
            ));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            // Let the probe connection's session end before anything is measured.
            std::thread::sleep(Duration::from_millis(200));
            return Ok((server, addr));
        }
        if Instant::now() >= deadline {
            return Err(format!("ftps-server did not listen on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What the driver printed.
#[derive(Default, Debug)]
struct DriverReport {
    sessions: u64,
    transfers: u64,
    bytes: u64,
    errors: u64,
    error_texts: Vec<String>,
    /// name, count, p50 µs, p99 µs, max µs
    ops: Vec<(String, u64, u64, u64, u64)>,
    elapsed_s: f64,
    held: u64,
}

impl DriverReport {
    fn take(&mut self, line: &str) {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let number = || rest.trim().parse::<u64>().unwrap_or(0);
        match key {
            "sessions" => self.sessions = number(),
            "transfers" => self.transfers = number(),
            "bytes" => self.bytes = number(),
            "errors" => self.errors = number(),
            "holding" => self.held = number(),
            "error" => self.error_texts.push(rest.to_string()),
            "elapsed_s" => self.elapsed_s = rest.trim().parse().unwrap_or(0.0),
            "op" => {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                if let [name, numbers @ ..] = parts.as_slice() {
                    let n: Vec<u64> = numbers.iter().map(|x| x.parse().unwrap_or(0)).collect();
                    if let [count, p50, p99, max] = n.as_slice() {
                        self.ops.push((name.to_string(), *count, *p50, *p99, *max));
                    }
                }
            }
            _ => {}
        }
    }
}

/// Reads the driver's stdout on a thread, so the caller can wait with a deadline.
fn lines_of(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout)
            .lines()
            .map_while(std::io::Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn driver_command(setup: &Setup, addr: SocketAddr, user: &str, password: &str) -> Command {
    let mut cmd = Command::new(&setup.driver);
    cmd.arg("--addr")
        .arg(addr.to_string())
        .arg("--ca")
        .arg(&setup.cert)
        .args(["--user", user, "--password", password])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    cmd
}

/// Collects driver lines until it closes stdout or `deadline` passes; `on_line` sees each line first.
fn collect(
    rx: &mpsc::Receiver<String>,
    report: &mut DriverReport,
    deadline: Instant,
    mut stop_at: impl FnMut(&str) -> bool,
) -> Result<bool> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("the load driver ran out of time".into());
        }
        match rx.recv_timeout(left) {
            Ok(line) => {
                report.take(&line);
                if stop_at(&line) {
                    return Ok(true);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err("the load driver ran out of time".into())
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(false),
        }
    }
}

struct TransferPhase {
    report: DriverReport,
    peak_rss_kib: u64,
    rss_before_kib: u64,
    driver_ok: bool,
}

fn transfer_phase(setup: &Setup, options: &Options) -> Result<TransferPhase> {
    let (server, addr) = start_server(setup, options.clients + 64)?;
    let before = sample(server.pid())?;
    let budget = if options.smoke { 60 } else { 300 };
    let mut cmd = driver_command(setup, addr, USER, PASSWORD);
    cmd.args(["--clients", &options.clients.to_string()])
        .args(["--rounds", &options.rounds.to_string()])
        .args(["--size", &options.size.to_string()])
        .args(["--deadline", &(budget - 10).to_string()])
        .stdin(Stdio::null());
    eprintln!(
        "==> load: {} clients x {} rounds of STOR/RETR/LIST of {} bytes",
        options.clients, options.rounds, options.size
    );
    let mut driver = Guard(cmd.spawn().map_err(|e| format!("ftps-load: {e}"))?);
    let rx = lines_of(driver.0.stdout.take().ok_or("driver stdout")?);
    let mut report = DriverReport::default();
    collect(
        &rx,
        &mut report,
        Instant::now() + Duration::from_secs(budget),
        |_| false,
    )?;
    let driver_ok = driver.0.wait().map(|s| s.success()).unwrap_or(false);
    let after = sample(server.pid())?;
    Ok(TransferPhase {
        report,
        peak_rss_kib: after.hwm_kib,
        rss_before_kib: before.rss_kib,
        driver_ok,
    })
}

struct IdlePhase {
    report: DriverReport,
    rss_before_kib: u64,
    rss_holding_kib: u64,
    peak_rss_kib: u64,
    cpu_ms: f64,
    driver_ok: bool,
}

fn idle_phase(setup: &Setup, options: &Options) -> Result<IdlePhase> {
    let (server, addr) = start_server(setup, options.idle + 64)?;
    let before = sample(server.pid())?;
    // About 1 ms of wall time per login on 2 busy cores, plus slack.
    let budget = 60 + options.idle as u64 / 20;
    let mut cmd = driver_command(setup, addr, "anonymous", "load@example.com");
    cmd.args(["--idle", &options.idle.to_string()])
        .args(["--threads", "8"])
        .args(["--deadline", &(budget - 10).to_string()])
        .stdin(Stdio::piped());
    eprintln!(
        "==> load: holding {} idle logged-in TLS sessions",
        options.idle
    );
    let mut driver = Guard(cmd.spawn().map_err(|e| format!("ftps-load: {e}"))?);
    let rx = lines_of(driver.0.stdout.take().ok_or("driver stdout")?);
    let mut report = DriverReport::default();
    let deadline = Instant::now() + Duration::from_secs(budget);
    let holding = collect(&rx, &mut report, deadline, |line| {
        line.starts_with("holding ")
    })?;
    if !holding {
        return Err("the load driver ended before holding its sessions".into());
    }
    // CPU right away (the logins are done); memory after the last replies have been flushed and freed.
    let cpu_after = sample(server.pid())?.cpu_ticks;
    std::thread::sleep(Duration::from_millis(500));
    let holding_sample = sample(server.pid())?;
    if let Some(mut stdin) = driver.0.stdin.take() {
        let _ = stdin.write_all(b"release\n");
    }
    collect(&rx, &mut report, deadline, |_| false)?;
    let driver_ok = driver.0.wait().map(|s| s.success()).unwrap_or(false);
    let ticks = cpu_after.saturating_sub(before.cpu_ticks) as f64;
    Ok(IdlePhase {
        rss_before_kib: before.rss_kib,
        rss_holding_kib: holding_sample.rss_kib,
        peak_rss_kib: holding_sample.hwm_kib,
        cpu_ms: ticks * 1000.0 / clock_ticks_per_second() as f64,
        report,
        driver_ok,
    })
}

impl IdlePhase {
    fn per_session_kib(&self) -> Option<f64> {
        (self.report.held > 0).then(|| {
            self.rss_holding_kib.saturating_sub(self.rss_before_kib) as f64
                / self.report.held as f64
        })
    }

    fn cpu_per_login_ms(&self) -> Option<f64> {
        (self.report.sessions > 0).then(|| self.cpu_ms / self.report.sessions as f64)
    }
}

fn machine() -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let nproc = crate::peers::output_of(&mut Command::new("nproc")).unwrap_or_default();
    format!("{cpu}, {nproc} cores")
}

fn date() -> String {
    crate::peers::output_of(Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]))
        .unwrap_or_default()
}

fn json_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(value: Option<f64>) -> String {
    value.map_or_else(|| "null".into(), |v| format!("{v:.3}"))
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn ops_json(report: &DriverReport) -> String {
    let ops: Vec<String> = report
        .ops
        .iter()
        .map(|(name, count, p50, p99, max)| {
            format!(
                "{}: {{\"count\": {count}, \"p50_ms\": {:.3}, \"p99_ms\": {:.3}, \"max_ms\": {:.3}}}",
                json_escape(name),
                ms(*p50),
                ms(*p99),
                ms(*max)
            )
        })
        .collect();
    format!("{{{}}}", ops.join(", "))
}

fn errors_json(report: &DriverReport) -> String {
    let texts: Vec<String> = report.error_texts.iter().map(|t| json_escape(t)).collect();
    format!("[{}]", texts.join(", "))
}

fn write_results(
    dir: &Path,
    options: &Options,
    transfers: Option<&TransferPhase>,
    idle: &IdlePhase,
) -> Result<String> {
    let (machine, date) = (machine(), date());
    let mut md = format!("## Load ({date}, {machine})\n\n");
    let mut json = format!(
        "{{\n  \"date\": {},\n  \"machine\": {},\n  \"smoke\": {},\n",
        json_escape(&date),
        json_escape(&machine),
        options.smoke
    );
    if let Some(t) = transfers {
        let r = &t.report;
        md.push_str(&format!(
            "Transfers: {} concurrent clients x {} rounds of STOR + RETR + LIST of {} bytes each, PROT P, \
             data TLS resumption required, SHA-256 checked.\n\n\
             | sessions | transfers | bytes | errors | wall time | server RSS before | peak server RSS (VmHWM) |\n\
             |---:|---:|---:|---:|---:|---:|---:|\n\
             | {} | {} | {} | {} | {:.1} s | {:.1} MiB | {:.1} MiB |\n\n\
             | operation | count | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n",
            options.clients,
            options.rounds,
            options.size,
            r.sessions,
            r.transfers,
            r.bytes,
            r.errors,
            r.elapsed_s,
            t.rss_before_kib as f64 / 1024.0,
            t.peak_rss_kib as f64 / 1024.0,
        ));
        for (name, count, p50, p99, max) in &r.ops {
            md.push_str(&format!(
                "| {name} | {count} | {:.1} ms | {:.1} ms | {:.1} ms |\n",
                ms(*p50),
                ms(*p99),
                ms(*max)
            ));
        }
        md.push('\n');
        json.push_str(&format!(
            "  \"transfers\": {{\"clients\": {}, \"rounds\": {}, \"size\": {}, \"sessions\": {}, \
             \"transfers\": {}, \"bytes\": {}, \"errors\": {}, \"error_texts\": {}, \"elapsed_s\": {:.3}, \
             \"server_rss_before_kib\": {}, \"server_peak_rss_kib\": {}, \"ops\": {}}},\n",
            options.clients,
            options.rounds,
            options.size,
            r.sessions,
            r.transfers,
            r.bytes,
            r.errors,
            errors_json(r),
            r.elapsed_s,
            t.rss_before_kib,
            t.peak_rss_kib,
            ops_json(r)
        ));
    }
    let r = &idle.report;
    let per_session = idle.per_session_kib();
    let cpu_per_login = idle.cpu_per_login_ms();
    let login = r.ops.iter().find(|op| op.0 == "login");
    md.push_str(&format!(
        "Idle: {} logged-in TLS control sessions held (anonymous login: no password KDF).\n\n\
         | sessions held | errors | server RSS before | server RSS holding | RSS per idle session | \
         server CPU per login | login p50 / p99 |\n|---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {:.1} MiB | {:.1} MiB | {} | {} | {} |\n\n\
         Targets (reported, not asserted): at most {IDLE_TARGET_KIB} KiB per idle session, under \
         {LOGIN_CPU_TARGET_MS} ms of server CPU per login.\n",
        options.idle,
        r.held,
        r.errors,
        idle.rss_before_kib as f64 / 1024.0,
        idle.rss_holding_kib as f64 / 1024.0,
        per_session.map_or("n/a".into(), |k| format!("{k:.1} KiB")),
        cpu_per_login.map_or("n/a".into(), |c| format!("{c:.3} ms")),
        login.map_or("n/a".into(), |l| format!("{:.1} / {:.1} ms", ms(l.2), ms(l.3))),
    ));
    json.push_str(&format!(
        "  \"idle\": {{\"requested\": {}, \"held\": {}, \"errors\": {}, \"error_texts\": {}, \
         \"server_rss_before_kib\": {}, \"server_rss_holding_kib\": {}, \"server_peak_rss_kib\": {}, \
         \"rss_per_session_kib\": {}, \"server_cpu_ms\": {:.1}, \"cpu_per_login_ms\": {}, \
         \"target_kib_per_session\": {IDLE_TARGET_KIB}, \"target_cpu_per_login_ms\": {LOGIN_CPU_TARGET_MS}, \
         \"ops\": {}}}\n}}\n",
        options.idle,
        r.held,
        r.errors,
        errors_json(r),
        idle.rss_before_kib,
        idle.rss_holding_kib,
        idle.peak_rss_kib,
        json_opt(per_session),
        idle.cpu_ms,
        json_opt(cpu_per_login),
        ops_json(r)
    ));
    for (name, text) in [("results.md", &md), ("results.json", &json)] {
        let path = dir.join(name);
        fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(md)
}

pub(crate) fn run(args: &[String]) -> Result {
    let options = parse_args(args)?;
    let dir = crate::root().join("target").join("load");
    let setup = prepare(&dir)?;
    let transfers = if options.transfers {
        Some(transfer_phase(&setup, &options)?)
    } else {
        None
    };
    let idle = idle_phase(&setup, &options)?;
    let md = write_results(&dir, &options, transfers.as_ref(), &idle)?;
    println!("{md}");
    eprintln!(
        "load: results in {}",
        dir.join("results.{md,json}").display()
    );

    let mut failures = Vec::new();
    if let Some(t) = &transfers {
        let expected = (options.clients * options.rounds * 2) as u64;
        if t.report.errors > 0 || !t.driver_ok || t.report.transfers != expected {
            failures.push(format!(
                "transfers: {} errors, {} of {expected} transfers{}",
                t.report.errors,
                t.report.transfers,
                t.report
                    .error_texts
                    .first()
                    .map(|e| format!(" (first: {e})"))
                    .unwrap_or_default()
            ));
        }
    }
    if idle.report.errors > 0 || !idle.driver_ok || idle.report.held != options.idle as u64 {
        failures.push(format!(
            "idle: {} errors, {} of {} sessions held{}",
            idle.report.errors,
            idle.report.held,
            options.idle,
            idle.report
                .error_texts
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        ));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn smoke_and_idle_flags() {
        let smoke = parse_args(&strings(&["--smoke", "--clients", "5"])).unwrap();
        assert_eq!((smoke.clients, smoke.idle, smoke.transfers), (5, 200, true));
        let idle = parse_args(&strings(&["--idle", "5000"])).unwrap();
        assert_eq!(
            (idle.idle, idle.transfers, idle.clients),
            (5000, false, 200)
        );
        assert!(parse_args(&strings(&["--clients"])).is_err());
        assert!(parse_args(&strings(&["--bogus"])).is_err());
    }

    #[test]
    fn reads_the_driver_lines() {
        let mut report = DriverReport::default();
        for line in [
            "sessions 3",
            "transfers 12",
            "errors 1",
            "error client 2: RETR /c2/r0.bin: SHA-256 differs",
            "op stor 6 7100 18000 24900",
            "op list 6 5000 14100",
            "holding 3",
            "elapsed_s 1.5",
        ] {
            report.take(line);
        }
        assert_eq!(
            (report.sessions, report.transfers, report.errors),
            (3, 12, 1)
        );
        assert_eq!(report.held, 3);
        assert_eq!(report.error_texts.len(), 1);
        // A malformed op line is dropped rather than reported with made-up numbers.
        assert_eq!(
            report.ops,
            vec![("stor".to_string(), 6, 7100, 18000, 24900)]
        );
        assert!((report.elapsed_s - 1.5).abs() < 1e-9);
    }

    #[test]
    fn reads_rss_and_cpu_of_this_process() {
        let now = sample(std::process::id()).unwrap();
        assert!(now.rss_kib > 0 && now.hwm_kib >= now.rss_kib);
    }
}
