//! FTPS servers to measure against, on loopback: vsftpd, ProFTPD (mod_tls) and Pure-FTPd, and pyftpdlib for the
//! many-file rows (a Python script of ours around it, see [`start_pyftpdlib`]).
//!
//! Debian's vsftpd, proftpd-core and pure-ftpd packages conflict with each other, so vsftpd is installed with
//! apt-get (it is also what the interop tests use) and the other two are unpacked with `apt-get download` +
//! `dpkg -x` into `target/bench/peers/root/`, with the libraries they miss, and run with `LD_LIBRARY_PATH`.
//!
//! Every peer: 127.0.0.1 only, a certificate generated at run time with `openssl req`, the local user
//! [`USER`], TLS required on the control and data connections, a passive port range on loopback, run in the
//! foreground as a child process that is killed on drop. A peer that cannot be found, installed or started is
//! returned as [`PeerStatus::Unavailable`] with the reason, so the report shows it.

use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

/// The local user every peer serves (created with useradd when missing; root only).
pub(crate) const USER: &str = "ftpsrs-bench";
/// Its password.
pub(crate) const PASSWORD: &str = "ftpsrs-bench-password";

/// A child process killed (and reaped) on drop, so no peer outlives the bench, even on panic.
pub(crate) struct ChildGuard {
    child: Child,
    what: String,
}

impl ChildGuard {
    /// Starts `cmd` (whose stdin the caller sets; null when it does not care).
    pub(crate) fn spawn(what: &str, cmd: &mut Command) -> Result<Self> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("{what}: cannot start: {e}"))?;
        Ok(Self {
            child,
            what: what.to_string(),
        })
    }

    /// `Some(status)` once the child has exited.
    pub(crate) fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    /// Waits for the child up to `timeout`; kills it when the time is up.
    pub(crate) fn wait(mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(format!(
                        "{}: killed after the {}s timeout",
                        self.what,
                        timeout.as_secs()
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("{}: {e}", self.what)),
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished bounded command did.
pub(crate) struct Finished {
    pub(crate) success: bool,
    pub(crate) status: String,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) elapsed: Duration,
}

/// What becomes of a bounded command's standard output.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Stdout {
    /// Captured and returned in [`Finished::stdout`].
    Capture,
    /// Thrown away (`/dev/null`): a download streamed to stdout, like curl's `-o /dev/null`.
    Discard,
}

/// Runs `cmd` to completion with a timeout, capturing its output through files (no pipe can fill up).
pub(crate) fn run_bounded(
    what: &str,
    cmd: &mut Command,
    timeout: Duration,
    scratch: &Path,
) -> Result<Finished> {
    run_bounded_with(what, cmd, timeout, scratch, Stdout::Capture)
}

/// [`run_bounded`], choosing what happens to standard output.
pub(crate) fn run_bounded_with(
    what: &str,
    cmd: &mut Command,
    timeout: Duration,
    scratch: &Path,
    stdout: Stdout,
) -> Result<Finished> {
    let out_path = scratch.join(".last-stdout");
    let err_path = scratch.join(".last-stderr");
    let out = match stdout {
        Stdout::Capture => fs::File::create(&out_path)
            .map(Stdio::from)
            .map_err(|e| format!("{}: {e}", out_path.display()))?,
        Stdout::Discard => {
            let _ = fs::remove_file(&out_path);
            Stdio::null()
        }
    };
    let err = fs::File::create(&err_path).map_err(|e| format!("{}: {e}", err_path.display()))?;
    let started = Instant::now();
    let child = ChildGuard::spawn(what, cmd.stdin(Stdio::null()).stdout(out).stderr(err))?;
    let status = child.wait(timeout)?;
    let elapsed = started.elapsed();
    Ok(Finished {
        success: status.success(),
        status: status.to_string(),
        stdout: fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed,
    })
}

/// A quick command's trimmed stdout, or `None` when it fails.
pub(crate) fn output_of(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A running peer server.
pub(crate) struct Peer {
    /// Display name, with the version when known.
    pub(crate) name: String,
    /// The control address on 127.0.0.1.
    pub(crate) addr: SocketAddr,
    /// The directory the user lands in after login: uploads appear here.
    pub(crate) home: PathBuf,
    /// What the table should say about this peer's setup.
    pub(crate) notes: String,
    /// Where the peer writes one line per TLS connection (`control|data VERSION REUSED`), when it can.
    pub(crate) tls_log: Option<PathBuf>,
    _child: ChildGuard,
}

/// A peer, or why it is not there.
pub(crate) enum PeerStatus {
    Ready(Peer),
    Unavailable { name: String, reason: String },
}

/// Everything the peers share: the certificate, the user, the unpacked packages.
struct Setup {
    dir: PathBuf,
    /// The directory under which each peer gets its fresh home.
    homes: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// cert + key in one file (Pure-FTPd's format).
    combined: PathBuf,
    uid: String,
    gid: String,
    install: bool,
}

/// Starts one peer from the shared setup.
type Starter = fn(&Setup) -> Result<Peer>;

/// Finds (and with `install`, installs or unpacks) vsftpd, ProFTPD and Pure-FTPd, and starts each on loopback.
pub(crate) fn start_all(bench_dir: &Path, homes: &Path, install: bool) -> Vec<PeerStatus> {
    let names = ["vsftpd", "ProFTPD", "Pure-FTPd"];
    let setup = match prepare(bench_dir, homes, install) {
        Ok(setup) => setup,
        Err(reason) => {
            return names
                .iter()
                .map(|name| PeerStatus::Unavailable {
                    name: name.to_string(),
                    reason: reason.clone(),
                })
                .collect();
        }
    };
    let starters: [(&str, Starter); 3] = [
        ("vsftpd", start_vsftpd),
        ("ProFTPD", start_proftpd),
        ("Pure-FTPd", start_pureftpd),
    ];
    starters
        .iter()
        .map(|(name, start)| match start(&setup) {
            Ok(peer) => PeerStatus::Ready(peer),
            Err(reason) => {
                eprintln!("bench: {name} unavailable: {reason}");
                PeerStatus::Unavailable {
                    name: name.to_string(),
                    reason,
                }
            }
        })
        .collect()
}

fn prepare(bench_dir: &Path, homes: &Path, install: bool) -> Result<Setup> {
    if !crate::is_root() {
        return Err("needs root (a local login user and a server that switches to it)".into());
    }
    let dir = bench_dir.join("peers");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (cert, key, combined) = certificate(&dir)?;
    ensure_user()?;
    let uid = output_of(Command::new("id").args(["-u", USER])).ok_or("id -u failed")?;
    let gid = output_of(Command::new("id").args(["-g", USER])).ok_or("id -g failed")?;
    Ok(Setup {
        dir,
        homes: homes.to_path_buf(),
        cert,
        key,
        combined,
        uid,
        gid,
        install,
    })
}

/// A fresh self-signed RSA certificate for localhost / 127.0.0.1 (never committed: target/ is ignored).
pub(crate) fn certificate(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
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
    let combined = dir.join("combined.pem");
    let both = [
        fs::read(&key).map_err(|e| format!("{}: {e}", key.display()))?,
        fs::read(&cert).map_err(|e| format!("{}: {e}", cert.display()))?,
    ]
    .concat();
    fs::write(&combined, both).map_err(|e| format!("{}: {e}", combined.display()))?;
    Ok((cert, key, combined))
}

fn ensure_user() -> Result {
    let exists = crate::succeeds(Command::new("id").arg(USER));
    if !exists {
        let status = Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", USER])
            .status()
            .map_err(|e| format!("useradd: {e}"))?;
        if !status.success() {
            return Err(format!("useradd {USER} failed ({status})"));
        }
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("chpasswd: {e}"))?;
    if let Some(mut stdin) = chpasswd.stdin.take() {
        stdin
            .write_all(format!("{USER}:{PASSWORD}\n").as_bytes())
            .map_err(|e| format!("chpasswd: {e}"))?;
    }
    match chpasswd.wait() {
        Ok(s) if s.success() => Ok(()),
        other => Err(format!("chpasswd {USER} failed ({other:?})")),
    }
}

/// A fresh directory for `peer` under the bench's homes, owned by the user.
fn fresh_home(setup: &Setup, peer: &str) -> Result<PathBuf> {
    let home = setup.homes.join(peer);
    let _ = fs::remove_dir_all(&home);
    fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
    chown(setup, &home)?;
    Ok(home)
}

/// Gives `path` to the bench user.
pub(crate) fn chown_to_user(path: &Path) -> Result {
    let status = Command::new("chown")
        .args(["-R", &format!("{USER}:{USER}")])
        .arg(path)
        .status()
        .map_err(|e| format!("chown: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("chown {} failed", path.display()))
    }
}

fn chown(_setup: &Setup, path: &Path) -> Result {
    chown_to_user(path)
}

fn free_port() -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// A passive port range of 100 ports, different per peer so a slow TIME_WAIT cannot collide.
fn passive_range(control: u16) -> (u16, u16) {
    let base = 30000 + (control % 300) * 100;
    (base, base + 99)
}

/// Waits for the listener; fails with the server's log tail when it exits or never listens.
fn wait_listening(name: &str, child: &mut ChildGuard, addr: SocketAddr, log: &Path) -> Result {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.exited() {
            return Err(format!("{name} exited at start ({status}): {}", tail(log)));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{name} did not listen on {addr}: {}", tail(log)))
}

/// The last few lines of a log, on one line, for a failure reason.
pub(crate) fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(3);
    lines.get(start..).unwrap_or(&[]).join(" | ")
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn apt_install(package: &str) -> Result {
    let status = Command::new("apt-get")
        .args(["-qq", "install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("apt-get: {e}"))?;
    if status.success() {
        return Ok(());
    }
    // A stale package list is the usual reason; one update, one more try.
    let _ = Command::new("apt-get")
        .args(["-qq", "update"])
        .stdout(Stdio::null())
        .status();
    let status = Command::new("apt-get")
        .args(["-qq", "install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("apt-get: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("apt-get install {package} failed ({status})"))
    }
}

/// Unpacks Debian packages (without installing them) into `target/bench/peers/root/`.
///
/// Packages already installed on the system are skipped: their files are where the loader looks anyway.
fn unpack(setup: &Setup, packages: &[&str]) -> Result<PathBuf> {
    let root = setup.dir.join("root");
    let debs = setup.dir.join("debs");
    fs::create_dir_all(&debs).map_err(|e| format!("{}: {e}", debs.display()))?;
    for package in packages {
        let marker = root.join(format!(".unpacked-{package}"));
        if marker.exists() {
            continue;
        }
        let installed = output_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
            .is_some_and(|s| s.ends_with(" installed"));
        if installed {
            continue;
        }
        if !setup.install {
            return Err(format!("{package} is not unpacked (run with --peers)"));
        }
        let found_deb = |debs: &Path| {
            fs::read_dir(debs).ok().and_then(|entries| {
                entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&format!("{package}_")))
                })
            })
        };
        let deb = match found_deb(&debs) {
            Some(deb) => deb,
            None => {
                let mut ok = run_quiet(
                    Command::new("apt-get")
                        .args(["-qq", "download", package])
                        .current_dir(&debs),
                );
                if !ok {
                    let _ = Command::new("apt-get")
                        .args(["-qq", "update"])
                        .stdout(Stdio::null())
                        .status();
                    ok = run_quiet(
                        Command::new("apt-get")
                            .args(["-qq", "download", package])
                            .current_dir(&debs),
                    );
                }
                if !ok {
                    return Err(format!("apt-get download {package} failed"));
                }
                found_deb(&debs).ok_or(format!("apt-get download {package}: no .deb"))?
            }
        };
        if !run_quiet(Command::new("dpkg").arg("-x").arg(&deb).arg(&root)) {
            return Err(format!("dpkg -x {} failed", deb.display()));
        }
        let _ = fs::write(&marker, "");
    }
    Ok(root)
}

/// The upstream version of an unpacked package, from its .deb, as " 1.0.50" (empty when unknown).
fn deb_version(setup: &Setup, package: &str) -> String {
    fs::read_dir(setup.dir.join("debs"))
        .ok()
        .and_then(|entries| {
            entries.filter_map(|e| e.ok()).find_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let rest = name.strip_prefix(&format!("{package}_"))?;
                rest.split(['-', '+', '_']).next().map(|v| format!(" {v}"))
            })
        })
        .unwrap_or_default()
}

fn run_quiet(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn library_path(root: &Path) -> String {
    root.join("usr/lib/x86_64-linux-gnu").display().to_string()
}

/// `ldd` says which shared libraries the unpacked binary still misses: reported instead of a cryptic exit.
fn missing_libraries(binary: &Path, root: &Path) -> Option<String> {
    let out = Command::new("ldd")
        .arg(binary)
        .env("LD_LIBRARY_PATH", library_path(root))
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let missing: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("not found"))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    (!missing.is_empty()).then(|| missing.join(", "))
}

fn start_vsftpd(setup: &Setup) -> Result<Peer> {
    let program = match find_program("vsftpd") {
        Some(p) => p,
        None if setup.install => {
            apt_install("vsftpd")?;
            find_program("vsftpd").ok_or("vsftpd installed but not found")?
        }
        None => return Err("not installed (run with --peers to install it)".into()),
    };
    let version = output_of(Command::new("dpkg-query").args(["-W", "-f=${Version}", "vsftpd"]))
        .map(|v| format!(" {}", v.split(['-', '+']).next().unwrap_or(&v)))
        .unwrap_or_default();
    let dir = setup.dir.join("vsftpd");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::create_dir_all("/var/run/vsftpd/empty").map_err(|e| format!("secure_chroot_dir: {e}"))?;
    let home = fresh_home(setup, "vsftpd")?;
    let port = free_port()?;
    let (pasv_min, pasv_max) = passive_range(port);
    let log = dir.join("vsftpd.log");
    let conf = format!(
        "listen=YES\nlisten_address=127.0.0.1\nlisten_port={port}\nbackground=NO\nanonymous_enable=NO\n\
         local_enable=YES\nwrite_enable=YES\nlocal_umask=022\nlocal_root={home}\npasv_enable=YES\n\
         pasv_min_port={pasv_min}\npasv_max_port={pasv_max}\npasv_address=127.0.0.1\nssl_enable=YES\n\
         rsa_cert_file={cert}\nrsa_private_key_file={key}\nforce_local_data_ssl=YES\n\
         force_local_logins_ssl=YES\nrequire_ssl_reuse=YES\nssl_ciphers=HIGH\nseccomp_sandbox=NO\nxferlog_enable=NO\n\
         vsftpd_log_file={log}\ndual_log_enable=NO\nsecure_chroot_dir=/var/run/vsftpd/empty\n\
         pam_service_name=vsftpd\nmax_per_ip=0\nmax_clients=0\nidle_session_timeout=120\n\
         data_connection_timeout=120\n",
        home = home.display(),
        cert = setup.cert.display(),
        key = setup.key.display(),
        log = log.display(),
    );
    let conf_file = dir.join("vsftpd.conf");
    fs::write(&conf_file, conf).map_err(|e| format!("{}: {e}", conf_file.display()))?;
    let stderr_log = dir.join("stderr.log");
    let stderr = fs::File::create(&stderr_log).map_err(|e| e.to_string())?;
    // vsftpd writes its start-up errors ("500 OOPS: ...") to file descriptor 0: give it the log there too.
    let stdin = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&stderr_log)
        .map_err(|e| e.to_string())?;
    let mut child = ChildGuard::spawn(
        "vsftpd",
        Command::new(program)
            .arg(&conf_file)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(stderr),
    )?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_listening("vsftpd", &mut child, addr, &stderr_log)?;
    Ok(Peer {
        name: format!("vsftpd{version}"),
        addr,
        home,
        notes: "require_ssl_reuse=YES".into(),
        tls_log: None,
        _child: child,
    })
}

fn start_proftpd(setup: &Setup) -> Result<Peer> {
    let root = unpack(
        setup,
        &[
            "proftpd-core",
            "proftpd-mod-crypto",
            "libhiredis0.14",
            "libmemcached11",
            "libmemcachedutil2",
            "libhashkit2",
            "libpcre2-posix3",
            "libsodium23",
        ],
    )?;
    let program = root.join("usr/sbin/proftpd");
    if !program.is_file() {
        return Err(format!("{} missing after unpacking", program.display()));
    }
    let modules = root.join("usr/lib/proftpd");
    if !modules.join("mod_tls.so").is_file() {
        return Err("mod_tls.so missing (proftpd-mod-crypto)".into());
    }
    if let Some(missing) = missing_libraries(&program, &root) {
        return Err(format!("proftpd misses shared libraries: {missing}"));
    }
    let dir = setup.dir.join("proftpd");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let home = fresh_home(setup, "proftpd")?;
    let hash = output_of(Command::new("openssl").args(["passwd", "-6", PASSWORD]))
        .ok_or("openssl passwd failed")?;
    let passwd = dir.join("passwd");
    fs::write(
        &passwd,
        format!(
            "{USER}:{hash}:{uid}:{gid}::{home}:/bin/sh\n",
            uid = setup.uid,
            gid = setup.gid,
            home = home.display()
        ),
    )
    .map_err(|e| format!("{}: {e}", passwd.display()))?;
    let group = dir.join("group");
    fs::write(&group, format!("{USER}:x:{}:\n", setup.gid))
        .map_err(|e| format!("{}: {e}", group.display()))?;
    // proftpd refuses an auth file that others can write.
    let _ = Command::new("chmod")
        .arg("600")
        .arg(&passwd)
        .arg(&group)
        .status();
    let port = free_port()?;
    let (pasv_min, pasv_max) = passive_range(port);
    let log = dir.join("proftpd.log");
    let conf = format!(
        "ServerType standalone\nServerName \"ftps-rs bench\"\nServerIdent off\nDefaultServer on\n\
         UseIPv6 off\nDefaultAddress 127.0.0.1\nSocketBindTight on\nPort {port}\nUser nobody\nGroup nogroup\n\
         Umask 022\nMaxInstances 30\nPidFile {dir}/proftpd.pid\nScoreboardFile {dir}/proftpd.scoreboard\n\
         DelayTable none\nWtmpLog off\nUseReverseDNS off\nSystemLog {log}\nTransferLog none\n\
         ModulePath {modules}\nLoadModule mod_tls.c\n\
         <IfModule mod_ctrls.c>\nControlsEngine off\n</IfModule>\n\
         <IfModule mod_auth_pam.c>\nAuthPAM off\n</IfModule>\n\
         AuthOrder mod_auth_file.c\nAuthUserFile {passwd}\nAuthGroupFile {group}\nRequireValidShell off\n\
         PassivePorts {pasv_min} {pasv_max}\nAllowOverwrite on\nTimeoutIdle 120\nTimeoutNoTransfer 120\n\
         TLSEngine on\nTLSRequired on\nTLSProtocol TLSv1.2 TLSv1.3\nTLSRSACertificateFile {cert}\n\
         TLSRSACertificateKeyFile {key}\nTLSVerifyClient off\nTLSLog {dir}/tls.log\n\
         <Directory />\nAllowOverwrite on\n</Directory>\n",
        dir = dir.display(),
        log = log.display(),
        modules = modules.display(),
        passwd = passwd.display(),
        group = group.display(),
        cert = setup.cert.display(),
        key = setup.key.display(),
    );
    let conf_file = dir.join("proftpd.conf");
    fs::write(&conf_file, conf).map_err(|e| format!("{}: {e}", conf_file.display()))?;
    let check = run_bounded(
        "proftpd -t",
        Command::new(&program)
            .arg("-t")
            .arg("-c")
            .arg(&conf_file)
            .env("LD_LIBRARY_PATH", library_path(&root)),
        Duration::from_secs(20),
        &dir,
    )?;
    if !check.success {
        return Err(format!(
            "proftpd -t rejects the config: {}",
            check.stderr.lines().last().unwrap_or("")
        ));
    }
    let version = output_of(
        Command::new(&program)
            .arg("-v")
            .env("LD_LIBRARY_PATH", library_path(&root)),
    )
    .and_then(|v| v.split_whitespace().last().map(|s| format!(" {s}")))
    .unwrap_or_default();
    let stderr_log = dir.join("stderr.log");
    let stderr = fs::File::create(&stderr_log).map_err(|e| e.to_string())?;
    let mut child = ChildGuard::spawn(
        "proftpd",
        Command::new(&program)
            .arg("--nodaemon")
            .stdin(Stdio::null())
            .arg("-c")
            .arg(&conf_file)
            .env("LD_LIBRARY_PATH", library_path(&root))
            .stdout(Stdio::null())
            .stderr(stderr),
    )?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_listening("proftpd", &mut child, addr, &stderr_log)?;
    Ok(Peer {
        name: format!("ProFTPD{version} (mod_tls)"),
        addr,
        home,
        notes: "unpacked with dpkg -x; TLS session reuse required (default)".into(),
        tls_log: None,
        _child: child,
    })
}

fn start_pureftpd(setup: &Setup) -> Result<Peer> {
    let root = unpack(setup, &["pure-ftpd", "libsodium23"])?;
    let program = root.join("usr/sbin/pure-ftpd");
    if !program.is_file() {
        return Err(format!("{} missing after unpacking", program.display()));
    }
    if let Some(missing) = missing_libraries(&program, &root) {
        return Err(format!("pure-ftpd misses shared libraries: {missing}"));
    }
    let dir = setup.dir.join("pure-ftpd");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let home = fresh_home(setup, "pure-ftpd")?;
    // With `-l unix` the user lands in its system home; point that at the fresh directory.
    let status = Command::new("usermod")
        .args(["-d"])
        .arg(&home)
        .arg(USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("usermod: {e}"))?;
    if !status.success() {
        return Err(format!("usermod -d failed ({status})"));
    }
    let port = free_port()?;
    let (pasv_min, pasv_max) = passive_range(port);
    let stderr_log = dir.join("stderr.log");
    let stderr = fs::File::create(&stderr_log).map_err(|e| e.to_string())?;
    let mut child = ChildGuard::spawn(
        "pure-ftpd",
        Command::new(&program)
            .arg(format!("--bind=127.0.0.1,{port}"))
            .arg(format!("--passiveportrange={pasv_min}:{pasv_max}"))
            .arg("--forcepassiveip=127.0.0.1")
            .arg("--login=unix")
            .arg("--noanonymous")
            .arg("--dontresolve")
            .arg("--minuid=100")
            .arg("--maxclientsnumber=50")
            .arg("--maxidletime=2")
            // 3: cleartext control and data connections are both refused.
            .arg("--tls=3")
            .arg(format!("--certfile={}", setup.combined.display()))
            .arg("--verboselog")
            .stdin(Stdio::null())
            .env("LD_LIBRARY_PATH", library_path(&root))
            .stdout(Stdio::null())
            .stderr(stderr),
    )?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_listening("pure-ftpd", &mut child, addr, &stderr_log)?;
    Ok(Peer {
        name: format!("Pure-FTPd{}", deb_version(setup, "pure-ftpd")),
        addr,
        home,
        notes: "unpacked with dpkg -x; --tls=3".into(),
        tls_log: None,
        _child: child,
    })
}

/// The pyftpdlib server the bench runs (written to `target/bench/peers/pyftpdlib/pyftpd.py`).
///
/// TLS is required on control and data connections (`tls_control_required`, `tls_data_required`), but
/// pyftpdlib has no way to require that a data connection resumes the control session: it accepts any.
/// Logging stays at warnings (a line per command would measure the log). The one line per TLS connection in
/// `TLS_LOG` is how the bench checks the TLS version a client really negotiated and how often its data
/// connections resumed a session.
const PYFTPD: &str = r#""""pyftpdlib for `cargo xtask bench`: explicit FTPS on loopback, TLS required everywhere.

Usage: pyftpd.py HOST PORT PASV_MIN PASV_MAX USER PASSWORD HOME CERT KEY TLS_LOG
TLS_LOG gets one line per TLS connection: "control|data VERSION REUSED" (REUSED: 1 when the handshake resumed
a session, 0 when not, -1 when pyOpenSSL cannot tell).
"""

import logging
import sys

from OpenSSL import SSL
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.log import config_logging
from pyftpdlib.servers import FTPServer

host, port, pasv_min, pasv_max, user, password, home, cert, key, tls_log = sys.argv[1:]
log = open(tls_log, "a", buffering=1)


def record(kind, conn):
    try:
        reused = SSL._lib.SSL_session_reused(conn._ssl)
    except Exception:  # a private pyOpenSSL API: gone in some version
        reused = -1
    log.write("%s %s %d\n" % (kind, conn.get_protocol_version_name(), reused))


class DTP(TLS_DTPHandler):
    def handle_ssl_established(self):
        record("data", self.socket)
        super().handle_ssl_established()


class Handler(TLS_FTPHandler):
    dtp_handler = DTP
    tls_control_required = True
    tls_data_required = True
    passive_ports = list(range(int(pasv_min), int(pasv_max) + 1))
    banner = "pyftpdlib (ftps-rs bench)"

    def handle_ssl_established(self):
        record("control", self.socket)
        super().handle_ssl_established()


context = SSL.Context(SSL.TLS_SERVER_METHOD)
context.use_certificate_chain_file(cert)
context.use_privatekey_file(key)
context.set_options(SSL.OP_NO_SSLv2 | SSL.OP_NO_SSLv3 | SSL.OP_NO_COMPRESSION)
context.set_min_proto_version(SSL.TLS1_2_VERSION)
Handler.ssl_context = context
authorizer = DummyAuthorizer()
authorizer.add_user(user, password, home, perm="elradfmwMT")
Handler.authorizer = authorizer
config_logging(level=logging.WARNING)
FTPServer((host, int(port)), Handler).serve_forever()
"#;

/// The Python packages pyftpdlib needs (pip names); `cargo xtask setup` installs them.
pub(crate) const PYFTPDLIB_PACKAGES: [&str; 2] = ["pyftpdlib", "pyopenssl"];

/// The version of pyftpdlib importable by `python3`, with pyOpenSSL beside it; `None` when either is missing.
fn pyftpdlib_version() -> Option<String> {
    output_of(
        Command::new("python3").args(["-c", "import OpenSSL, pyftpdlib; print(pyftpdlib.__ver__)"]),
    )
}

/// Starts pyftpdlib (as the current user: its users are its own, not the system's) on loopback.
///
/// Unlike the other peers it needs no root: it serves a fresh home under `homes` with a fresh certificate.
/// With `install`, a missing pyftpdlib or pyOpenSSL is installed with pip first (root only, like apt).
pub(crate) fn start_pyftpdlib(bench_dir: &Path, homes: &Path, install: bool) -> PeerStatus {
    let name = "pyftpdlib";
    match try_start_pyftpdlib(bench_dir, homes, install) {
        Ok(peer) => PeerStatus::Ready(peer),
        Err(reason) => {
            eprintln!("bench: {name} unavailable: {reason}");
            PeerStatus::Unavailable {
                name: name.into(),
                reason,
            }
        }
    }
}

fn try_start_pyftpdlib(bench_dir: &Path, homes: &Path, install: bool) -> Result<Peer> {
    if !crate::have("python3") {
        return Err("python3 not installed".into());
    }
    let version = match pyftpdlib_version() {
        Some(v) => v,
        None if install && crate::is_root() => {
            crate::pip_install(&PYFTPDLIB_PACKAGES)?;
            pyftpdlib_version().ok_or("pip installed pyftpdlib, but python3 cannot import it")?
        }
        None => {
            return Err(
                "python3 cannot import pyftpdlib and OpenSSL (pip install pyftpdlib \
                        pyopenssl, or run with --peers as root)"
                    .into(),
            )
        }
    };
    let dir = bench_dir.join("peers").join("pyftpdlib");
    fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (cert, key, _) = certificate(&dir)?;
    let script = dir.join("pyftpd.py");
    fs::write(&script, PYFTPD).map_err(|e| format!("{}: {e}", script.display()))?;
    let home = homes.join("pyftpdlib");
    let _ = fs::remove_dir_all(&home);
    fs::create_dir_all(&home).map_err(|e| format!("{}: {e}", home.display()))?;
    let tls_log = dir.join("tls.log");
    fs::write(&tls_log, "").map_err(|e| format!("{}: {e}", tls_log.display()))?;
    let port = free_port()?;
    let (pasv_min, pasv_max) = passive_range(port);
    let stderr_log = dir.join("stderr.log");
    let stderr = fs::File::create(&stderr_log).map_err(|e| e.to_string())?;
    let mut child = ChildGuard::spawn(
        "pyftpdlib",
        Command::new("python3")
            .arg(&script)
            .args(["127.0.0.1", &port.to_string()])
            .args([pasv_min.to_string(), pasv_max.to_string()])
            .args([USER, PASSWORD])
            .arg(&home)
            .arg(&cert)
            .arg(&key)
            .arg(&tls_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr),
    )?;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_listening("pyftpdlib", &mut child, addr, &stderr_log)?;
    Ok(Peer {
        name: format!("pyftpdlib {version}"),
        addr,
        home,
        notes: "TLS required on control and data; does not enforce session reuse (cannot)".into(),
        tls_log: Some(tls_log),
        _child: child,
    })
}
