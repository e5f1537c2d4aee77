//! `ftps-load`: the load driver behind `cargo xtask load`.
//!
//! Two modes, both against a server on loopback:
//!
//! - **transfers** (default): `--clients N` concurrent sessions, each doing `--rounds R` of upload, download
//!   and listing over `PROT P` (the server requires the data connections to resume the control session's TLS).
//!   Every byte is checked: the SHA-256 of what was uploaded must equal the SHA-256 of what comes back, the
//!   listing must show the file with its size, and every data connection must report a resumed TLS session.
//! - **idle** (`--idle N`): opens N logged-in TLS control sessions, prints `holding N`, and keeps them open
//!   until a line (or EOF) arrives on stdin, so the caller can read the server's memory meanwhile.
//!
//! Threads: the blocking client needs a thread while it talks, not while a session sits idle. Transfer mode
//! runs one thread per client (200 by default) with a small stack; idle mode logs sessions in from a pool of
//! `--threads` threads and parks the connected clients in a vector, so 5,000 idle sessions cost 5,000 sockets
//! and no extra threads.
//!
//! Output, one fact per line on stdout (parsed by xtask): `sessions N`, `transfers N`, `bytes N`, `errors N`,
//! `error TEXT` (the first few), `op NAME COUNT P50_US P99_US MAX_US`, `elapsed_s SECONDS`, and in idle mode
//! `holding N` before the wait. The exit status is non-zero when any error occurred.

use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ftps_client_blocking::{Client, ClientConfig};
use sha2::{Digest, Sha256};

/// Stack of each driver thread: the client's TLS and engine state live on the heap; 512 KiB leaves room for
/// rustls handshakes while 200 threads still reserve only 100 MiB of address space (and touch far less).
const THREAD_STACK: usize = 512 * 1024;

/// Payload is generated and hashed in pieces of this size.
const CHUNK: usize = 64 * 1024;

/// At most this many error texts are printed (the count is always exact).
const ERROR_LINES: usize = 20;

struct Options {
    addr: SocketAddr,
    ca: PathBuf,
    user: String,
    password: String,
    clients: usize,
    rounds: usize,
    size: u64,
    idle: Option<usize>,
    threads: usize,
    deadline: Duration,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut addr = None;
    let mut ca = None;
    let mut options = Options {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        ca: PathBuf::new(),
        user: String::new(),
        password: String::new(),
        clients: 200,
        rounds: 3,
        size: 256 * 1024,
        idle: None,
        threads: 16,
        deadline: Duration::from_secs(120),
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |text: String| {
            text.parse::<u64>()
                .map_err(|_| format!("{flag}: not a number: {text}"))
        };
        match flag.as_str() {
            "--addr" => {
                let text = value()?;
                addr = Some(
                    text.parse::<SocketAddr>()
                        .map_err(|e| format!("--addr {text}: {e}"))?,
                );
            }
            "--ca" => ca = Some(PathBuf::from(value()?)),
            "--user" => options.user = value()?,
            "--password" => options.password = value()?,
            "--clients" => options.clients = number(value()?)? as usize,
            "--rounds" => options.rounds = number(value()?)? as usize,
            "--size" => options.size = number(value()?)?,
            "--idle" => options.idle = Some(number(value()?)? as usize),
            "--threads" => options.threads = (number(value()?)? as usize).max(1),
            "--deadline" => options.deadline = Duration::from_secs(number(value()?)?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let addr = addr.ok_or("--addr is required")?;
    if !addr.ip().is_loopback() {
        return Err(format!("{addr}: the load driver only talks to loopback"));
    }
    options.addr = addr;
    options.ca = ca.ok_or("--ca is required")?;
    Ok(options)
}

/// Everything the threads report.
#[derive(Default)]
struct Tally {
    sessions: AtomicU64,
    transfers: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    error_texts: Mutex<Vec<String>>,
    /// Microseconds per operation, by operation name.
    latencies: Mutex<Vec<(&'static str, u64)>>,
}

impl Tally {
    fn error(&self, text: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut texts) = self.error_texts.lock() {
            if texts.len() < ERROR_LINES {
                texts.push(text);
            }
        }
    }

    fn record(&self, op: &'static str, elapsed: Duration) {
        if let Ok(mut all) = self.latencies.lock() {
            all.push((op, u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)));
        }
    }

    fn print(&self, elapsed: Duration) {
        println!("sessions {}", self.sessions.load(Ordering::Relaxed));
        println!("transfers {}", self.transfers.load(Ordering::Relaxed));
        println!("bytes {}", self.bytes.load(Ordering::Relaxed));
        println!("errors {}", self.errors.load(Ordering::Relaxed));
        if let Ok(texts) = self.error_texts.lock() {
            for text in texts.iter() {
                println!("error {}", text.replace('\n', " "));
            }
        }
        let mut all = self
            .latencies
            .lock()
            .map(|all| all.clone())
            .unwrap_or_default();
        all.sort_unstable();
        let mut start = 0;
        while start < all.len() {
            let op = all[start].0;
            let end = start + all[start..].partition_point(|(name, _)| *name == op);
            let micros: Vec<u64> = all[start..end].iter().map(|(_, us)| *us).collect();
            println!(
                "op {op} {} {} {} {}",
                micros.len(),
                percentile(&micros, 50),
                percentile(&micros, 99),
                micros.last().copied().unwrap_or(0)
            );
            start = end;
        }
        println!("elapsed_s {:.3}", elapsed.as_secs_f64());
    }
}

/// The nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Deterministic payload (xorshift64*), so no file needs staging and every byte can be hashed.
struct Payload {
    state: u64,
    left: u64,
}

impl Payload {
    fn new(seed: u64, len: u64) -> Self {
        Self {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            left: len,
        }
    }

    /// Fills the front of `buf` with the next bytes; returns how many (0 at the end).
    fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let word = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        self.left -= n as u64;
        n
    }
}

fn client_config(options: &Options) -> ClientConfig {
    ClientConfig::new()
        .ca_file(options.ca.clone())
        .system_roots(false)
        .server_name("localhost")
        .connect_timeout(Duration::from_secs(30))
        .reply_timeout(Duration::from_secs(60))
}

/// Connects, upgrades to TLS and logs in.
fn open_session(options: &Options, tally: &Tally) -> Result<Client, String> {
    let started = Instant::now();
    let mut client = Client::connect_addr(options.addr, client_config(options))
        .map_err(|e| format!("connect: {e}"))?;
    client
        .login(&options.user, &options.password)
        .map_err(|e| format!("login: {e}"))?;
    tally.record("login", started.elapsed());
    tally.sessions.fetch_add(1, Ordering::Relaxed);
    Ok(client)
}

/// One client of the transfer mode: its own directory, `rounds` of upload, download and listing.
fn run_client(index: usize, options: &Options, tally: &Tally, deadline: Instant) {
    let mut client = match open_session(options, tally) {
        Ok(client) => client,
        Err(e) => return tally.error(format!("client {index}: {e}")),
    };
    let dir = format!("/c{index}");
    if let Err(e) = client.mkdir(&dir) {
        return tally.error(format!("client {index}: mkdir {dir}: {e}"));
    }
    for round in 0..options.rounds {
        if Instant::now() >= deadline {
            tally.error(format!(
                "client {index}: deadline reached before round {round}"
            ));
            break;
        }
        let path = format!("{dir}/r{round}.bin");
        if let Err(e) = one_round(&mut client, index, round, &path, options.size, tally) {
            tally.error(format!("client {index} round {round}: {e}"));
            if client.is_closed() {
                return;
            }
        }
    }
    if let Err(e) = client.quit() {
        tally.error(format!("client {index}: quit: {e}"));
    }
}

fn one_round(
    client: &mut Client,
    index: usize,
    round: usize,
    path: &str,
    size: u64,
    tally: &Tally,
) -> Result<(), String> {
    // Upload generated bytes, hashing them on the way out.
    let started = Instant::now();
    let mut payload = Payload::new(((index as u64) << 32) | round as u64, size);
    let mut sent = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut upload = client.stor(path).map_err(|e| format!("STOR {path}: {e}"))?;
    loop {
        let n = payload.fill(&mut buf);
        if n == 0 {
            break;
        }
        sent.update(&buf[..n]);
        upload
            .write_all(&buf[..n])
            .map_err(|e| format!("STOR {path}: write: {e}"))?;
    }
    let report = upload
        .finish()
        .map_err(|e| format!("STOR {path}: finish: {e}"))?;
    tally.record("stor", started.elapsed());
    check_report("STOR", path, report.bytes, report.tls_resumed, size)?;
    tally.transfers.fetch_add(1, Ordering::Relaxed);
    tally.bytes.fetch_add(report.bytes, Ordering::Relaxed);

    // Download it again and compare digests.
    let started = Instant::now();
    let mut received = Sha256::new();
    let mut download = client
        .retr(path, 0)
        .map_err(|e| format!("RETR {path}: {e}"))?;
    let mut got = 0u64;
    loop {
        let n = download
            .read(&mut buf)
            .map_err(|e| format!("RETR {path}: read: {e}"))?;
        if n == 0 {
            break;
        }
        got += n as u64;
        received.update(&buf[..n]);
    }
    let report = download
        .finish()
        .map_err(|e| format!("RETR {path}: finish: {e}"))?;
    tally.record("retr", started.elapsed());
    check_report("RETR", path, got, report.tls_resumed, size)?;
    if sent.finalize() != received.finalize() {
        return Err(format!(
            "RETR {path}: SHA-256 of the download differs from the upload"
        ));
    }
    tally.transfers.fetch_add(1, Ordering::Relaxed);
    tally.bytes.fetch_add(got, Ordering::Relaxed);

    // The listing must show the file with its size.
    let started = Instant::now();
    let dir = path.rsplit_once('/').map_or("/", |(dir, _)| dir);
    let entries = client
        .list(Some(dir))
        .map_err(|e| format!("LIST {dir}: {e}"))?;
    tally.record("list", started.elapsed());
    let name = path.rsplit('/').next().unwrap_or(path);
    match entries.iter().find(|entry| entry.name == name) {
        Some(entry) if entry.size == Some(size) => Ok(()),
        Some(entry) => Err(format!(
            "LIST {dir}: {name} has size {:?}, uploaded {size}",
            entry.size
        )),
        None => Err(format!("LIST {dir}: {name} missing")),
    }
}

fn check_report(
    what: &str,
    path: &str,
    bytes: u64,
    resumed: bool,
    size: u64,
) -> Result<(), String> {
    if bytes != size {
        return Err(format!(
            "{what} {path}: moved {bytes} bytes, expected {size}"
        ));
    }
    if !resumed {
        return Err(format!(
            "{what} {path}: data connection did not resume the control session's TLS"
        ));
    }
    Ok(())
}

fn spawn_small<F: FnOnce() + Send + 'static>(f: F) -> Result<thread::JoinHandle<()>, String> {
    thread::Builder::new()
        .stack_size(THREAD_STACK)
        .spawn(f)
        .map_err(|e| format!("cannot start a thread: {e}"))
}

fn transfers(options: Arc<Options>, tally: Arc<Tally>) -> Result<(), String> {
    let deadline = Instant::now() + options.deadline;
    let mut threads = Vec::with_capacity(options.clients);
    for index in 0..options.clients {
        let (options, tally) = (Arc::clone(&options), Arc::clone(&tally));
        threads.push(spawn_small(move || {
            run_client(index, &options, &tally, deadline)
        })?);
    }
    for thread in threads {
        if thread.join().is_err() {
            tally.error("a client thread panicked".into());
        }
    }
    Ok(())
}

fn idle(options: Arc<Options>, tally: Arc<Tally>, count: usize) -> Result<(), String> {
    let deadline = Instant::now() + options.deadline;
    let next = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let mut threads = Vec::new();
    for _ in 0..options.threads.min(count.max(1)) {
        let (options, tally) = (Arc::clone(&options), Arc::clone(&tally));
        let (next, held) = (Arc::clone(&next), Arc::clone(&held));
        threads.push(spawn_small(move || {
            while next.fetch_add(1, Ordering::Relaxed) < count {
                if Instant::now() >= deadline {
                    tally.error("deadline reached while opening idle sessions".into());
                    return;
                }
                match open_session(&options, &tally) {
                    Ok(client) => {
                        if let Ok(mut held) = held.lock() {
                            held.push(client);
                        }
                    }
                    Err(e) => tally.error(e),
                }
            }
        })?);
    }
    for thread in threads {
        if thread.join().is_err() {
            tally.error("a login thread panicked".into());
        }
    }
    let held_now = held.lock().map(|h| h.len()).unwrap_or(0);
    println!("holding {held_now}");
    let _ = std::io::stdout().flush();
    // The caller measures the server now, then releases us with a line or by closing stdin.
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    // Every held session must still be alive: ask each for a NOOP before letting go.
    let clients = held
        .lock()
        .map(|mut h| std::mem::take(&mut *h))
        .unwrap_or_default();
    for mut client in clients {
        if let Err(e) = client.noop() {
            tally.error(format!("idle session lost: {e}"));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => Arc::new(options),
        Err(e) => {
            eprintln!("ftps-load: {e}");
            return ExitCode::from(2);
        }
    };
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let result = match options.idle {
        Some(count) => idle(Arc::clone(&options), Arc::clone(&tally), count),
        None => transfers(Arc::clone(&options), Arc::clone(&tally)),
    };
    if let Err(e) = result {
        tally.error(e);
    }
    tally.print(started.elapsed());
    if tally.errors.load(Ordering::Relaxed) == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
