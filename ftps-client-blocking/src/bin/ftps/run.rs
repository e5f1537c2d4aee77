//! The part of `ftps` that drives the client. Everything before this point (arguments, URL,
//! password) is resolved by `ftps.rs`.
//!
//! Thin (DESIGN.md "Frontends"): every command verb and reply code stays in the library; the
//! only thing read from an error here is [`Error::reply_code`] and its variant, to pick the
//! exit code.

use std::fs;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cli::{
    Action, CliError, ConnectionOptions, Destination, ErrorKind, Invocation, Login, MirrorDirection,
};
use crate::json;
use crate::mirror::{self, LocalWalk, Plan, TimePrecision, TransferReason, TreeEntry};
use crate::progress::{format_bytes, Mode as ProgressMode, Progress, Total};
use ftps_client_blocking::{
    Client, ClientConfig, DataConnectionMode, Entry, EntryKind, Error, RetrGuard, Scheme,
    SessionPool, SiteToSiteProtection, Timeval, TlsVersions, TransferReport,
};

/// Deepest remote directory level `mirror` descends into: a listing is peer input, and a server
/// that invents directories forever must not keep us listing forever.
const MAX_REMOTE_DEPTH: usize = 64;

/// LIST times older than this are shown with a year instead of a clock (like `ls`), so they
/// are only good to the day.
const LIST_CLOCK_WINDOW: Duration = Duration::from_secs(180 * 24 * 3600);

/// Carries out `invocation`; the error's kind picks the exit code.
pub(crate) fn run(invocation: Invocation) -> Result<(), CliError> {
    let Invocation {
        connection,
        login,
        action,
        quiet,
        parallel,
        json,
        retries,
    } = invocation;
    // Local problems are found before the network is touched: no login for a missing file.
    let local_tree = check_local(&action).map_err(|f| f.error)?;
    let sessions = Sessions {
        connection: &connection,
        login: &login,
        parallel,
        quiet,
        json,
        retries,
        records: Mutex::new(Vec::new()),
        total: OnceLock::new(),
        tls12_fallback: AtomicBool::new(false),
    };
    let mut client = sessions.open().map_err(|f| f.error)?;
    let outcome = perform(&mut client, &action, local_tree, &sessions);
    if json
        && matches!(
            action,
            Action::Get { .. } | Action::Put { .. } | Action::Mirror { .. }
        )
    {
        let records = sessions.records.into_inner().unwrap_or_default();
        let _ = writeln!(io::stdout(), "{}", json::summary(outcome.is_ok(), &records));
    }
    let session_usable = match &outcome {
        Ok(()) => true,
        Err(failure) => failure.session_usable,
    };
    // Say goodbye when the session can carry it; whether QUIT works changes nothing now.
    if session_usable && !client.is_closed() {
        let _ = client.quit();
    }
    outcome.map_err(|f| f.error)
}

/// A failed step: the error to report and whether the control connection is still usable.
#[derive(Debug)]
struct Failure {
    error: CliError,
    session_usable: bool,
    /// Worth another try (`--retries`): the network or a transient (4xx) reply, not a refusal.
    transient: bool,
    /// A TLS 1.2 session may succeed where this TLS 1.3 one cannot ([`Error::ResumptionExhausted`]).
    needs_tls12: bool,
}

/// What the client was doing when an error happened; with the error it decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// TCP, TLS handshake, greeting.
    Connect,
    /// USER/PASS and the session setup after it.
    Login,
    /// A file operation without data connection (delete, rename, mkdir, SIZE) or a listing.
    FileOp,
    /// A download or upload.
    Transfer,
}

impl Failure {
    /// A client error, classified by phase.
    fn client(phase: Phase, context: &str, error: &Error) -> Failure {
        let mut message = if context.is_empty() {
            error.to_string()
        } else {
            format!("{context}: {error}")
        };
        if let Error::ImplicitTlsPort { .. } = error {
            message.push_str("; use an ftpsi:// URL");
        }
        Failure {
            error: CliError::new(error_kind(phase, error), message),
            session_usable: error.is_session_usable(),
            transient: is_transient(error),
            needs_tls12: matches!(error, Error::ResumptionExhausted { .. }),
        }
    }

    /// A local I/O error concerning `path`.
    fn local(path: &Path, error: &io::Error) -> Failure {
        Failure {
            error: CliError::local_io(path, error),
            session_usable: true,
            transient: false,
            needs_tls12: false,
        }
    }
}

/// The exit-code class of `error` seen in `phase`.
fn error_kind(phase: Phase, error: &Error) -> ErrorKind {
    if let Error::ProtectionRefused { .. } = error {
        // Not the login's fault: the server will not encrypt data connections.
        return ErrorKind::Protection;
    }
    if error.reply_code().is_some() {
        return match phase {
            // AUTH TLS refused: the connection cannot be secured.
            Phase::Connect => ErrorKind::Connection,
            Phase::Login => ErrorKind::Login,
            Phase::FileOp => ErrorKind::Remote,
            // RFC 959 §4.2.1: 5yz is permanent (no such file, permission denied), 4yz
            // transient (no data connection, transfer aborted, local error on the server).
            Phase::Transfer if error.is_permanent_refusal() => ErrorKind::Remote,
            Phase::Transfer => ErrorKind::Transfer,
        };
    }
    match error {
        Error::Connect { .. } | Error::TlsConfig(_) | Error::Tls(_) => ErrorKind::Connection,
        Error::Truncated | Error::Aborted | Error::Data(_) => ErrorKind::Transfer,
        // Only transfers touch local files; a socket error is the network's.
        Error::Io(e) if phase == Phase::Transfer && !is_network_error(e) => ErrorKind::LocalIo,
        _ if phase == Phase::Transfer => ErrorKind::Transfer,
        _ => ErrorKind::Connection,
    }
}

/// Whether `error` may go away if the same thing is tried again: the network (connect refused
/// or reset, timeouts, a closed or cut connection, a data connection that failed or was
/// truncated) or a 4yz reply (RFC 959 section 4.2: "transient negative completion", e.g. 421,
/// 425, 426, 450, 451). 5yz refusals, TLS and certificate errors, and local errors are not.
fn is_transient(error: &Error) -> bool {
    match error {
        Error::Refused { .. } | Error::LoginRefused { .. } => error.is_transient_refusal(),
        Error::Connect { source, .. } => source.kind() != io::ErrorKind::InvalidInput,
        Error::Timeout(_)
        | Error::Closed(_)
        | Error::Truncated
        | Error::Data(_)
        | Error::DataConnect(_) => true,
        Error::Io(e) => is_network_error(e) || e.kind() == io::ErrorKind::UnexpectedEof,
        _ => false,
    }
}

/// Whether an I/O error comes from a socket rather than a file.
fn is_network_error(error: &io::Error) -> bool {
    use io::ErrorKind as K;
    matches!(
        error.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::AddrInUse
            | K::AddrNotAvailable
            | K::BrokenPipe
            | K::TimedOut
            | K::WouldBlock
            | K::UnexpectedEof
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
    )
}

/// Checks the local side of `action` before connecting; for `mirror` this walks the local tree.
fn check_local(action: &Action) -> Result<Option<LocalWalk>, Failure> {
    match action {
        Action::Put { files, .. } => {
            for (local, _) in files {
                check_upload_source(local)?;
            }
            Ok(None)
        }
        Action::Mirror {
            direction, local, ..
        } => match mirror::walk_local(local) {
            Ok(walk) => Ok(Some(walk)),
            // A download creates its destination.
            Err(e)
                if *direction == MirrorDirection::Download
                    && e.kind() == io::ErrorKind::NotFound =>
            {
                Ok(Some(LocalWalk::default()))
            }
            Err(e) => Err(Failure::local(local, &e)),
        },
        _ => Ok(None),
    }
}

/// An upload's source must be a regular file we can open for reading.
fn check_upload_source(local: &Path) -> Result<(), Failure> {
    let meta = fs::metadata(local).map_err(|e| Failure::local(local, &e))?;
    if !meta.is_file() {
        let e = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file");
        return Err(Failure::local(local, &e));
    }
    fs::File::open(local).map_err(|e| Failure::local(local, &e))?;
    Ok(())
}

/// The library configuration for the command-line options.
fn client_config(options: &ConnectionOptions) -> ClientConfig {
    let mut config = match options.scheme {
        Scheme::Ftps => ClientConfig::new(),
        Scheme::FtpsImplicit => ClientConfig::new().implicit(),
        Scheme::Ftp => ClientConfig::new().plain(),
    };
    if options.insecure {
        config = config.danger_accept_invalid_certs(true);
    }
    if let Some(ca_file) = &options.ca_file {
        config = config.ca_file(ca_file);
    }
    if options.tls12_only {
        config = config.tls_versions(TlsVersions::Tls12Only);
    }
    if options.active {
        config = config.data_mode(DataConnectionMode::Active);
    }
    if let Some(timeout) = options.timeout {
        // "No progress for SECS seconds", whichever phase it is in.
        config = config
            .connect_timeout(timeout)
            .reply_timeout(timeout)
            .data_timeout(timeout)
            .data_handshake_timeout(timeout);
    }
    if options.verbose {
        // Each line names its server: `fxp` talks to two.
        let host = options.host.clone();
        config = config.trace(move |line| {
            for part in line.to_string().lines() {
                eprintln!("{host}: {part}");
            }
        });
    }
    config
}

fn connect(options: &ConnectionOptions) -> Result<Client, Failure> {
    Client::connect(&options.host, options.port, client_config(options))
        .map_err(|e| Failure::client(Phase::Connect, "", &e))
}

/// Runs the logged-in part of `action`.
/// How to open sessions for one run, and how many may transfer at once.
struct Sessions<'a> {
    connection: &'a ConnectionOptions,
    login: &'a Login,
    /// Sessions that transfer at once (`--parallel`), the first one included.
    parallel: usize,
    quiet: bool,
    /// `--json`: listings and a summary of the files moved, as JSON on stdout.
    json: bool,
    /// `--retries N`: further tries of a file after a transient failure.
    retries: u32,
    /// What each transfer moved, for the `--json` summary.
    records: Mutex<Vec<json::FileRecord>>,
    /// The progress total of a run over several files (`put` of many, `mirror`).
    total: OnceLock<Total>,
    /// The server refused a data connection for want of a TLS 1.3 ticket: sessions opened from now on are TLS 1.2.
    tls12_fallback: AtomicBool,
}

/// How long to wait before retry number `n` (1-based): 0.5 s, doubling, at most 8 s.
fn retry_delay(n: u32) -> Duration {
    Duration::from_millis(500u64.saturating_mul(1 << n.saturating_sub(1).min(4)))
}

impl Sessions<'_> {
    /// Notes a finished transfer of `path` for the `--json` summary (`None`: nothing to move).
    fn record(&self, path: &str, report: Option<&TransferReport>) {
        if !self.json {
            return;
        }
        if let Ok(mut records) = self.records.lock() {
            records.push(json::FileRecord::new(path, report));
        }
    }

    /// The library configuration of the next session: the options', limited to TLS 1.2 after a fallback.
    fn config(&self) -> ClientConfig {
        let config = client_config(self.connection);
        if self.tls12_fallback.load(Ordering::Relaxed) {
            config.tls_versions(TlsVersions::Tls12Only)
        } else {
            config
        }
    }

    /// A new session, connected and logged in.
    fn open(&self) -> Result<Client, Failure> {
        let mut client =
            Client::connect(&self.connection.host, self.connection.port, self.config())
                .map_err(|e| Failure::client(Phase::Connect, "", &e))?;
        if let Err(e) = client.login(&self.login.user, &self.login.password) {
            let context = format!("login as {}", self.login.user);
            return Err(Failure::client(Phase::Login, &context, &e));
        }
        Ok(client)
    }

    /// Runs `attempt` until it succeeds, fails for good, or `--retries` are used up. Before each
    /// retry it waits (0.5 s, doubling, at most 8 s) and, when the session did not survive,
    /// opens a new one in `client`. `attempt` learns whether it is a retry: it then continues
    /// from what the other side holds instead of starting over.
    fn with_retries<T>(
        &self,
        client: &mut Client,
        mut attempt: impl FnMut(&mut Client, bool) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let mut tries = 0;
        let mut retry = false;
        loop {
            let failure = match self.resuming(client, |client| attempt(client, retry)) {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let mut failure = failure;
            loop {
                if !failure.transient || tries >= self.retries {
                    return Err(failure);
                }
                tries += 1;
                self.say(&format!(
                    "ftps: {} (retry {tries} of {})",
                    failure.error, self.retries
                ));
                std::thread::sleep(retry_delay(tries));
                if failure.session_usable && !client.is_closed() {
                    break;
                }
                match self.open() {
                    Ok(fresh) => {
                        *client = fresh;
                        break;
                    }
                    // The server is not back yet: that costs a try too.
                    Err(next) => failure = next,
                }
            }
            retry = true;
        }
    }

    /// Runs `op`. When the server refused its data connection because this session's TLS 1.3 tickets are used
    /// up ([`Error::ResumptionExhausted`]; ProFTPD from the third transfer of a session), every session opened
    /// from now on is TLS 1.2, which resumes without limit: `client` is replaced by one and `op` runs again.
    /// Not a retry: the server will refuse this session every time, and a new one always succeeds.
    fn resuming<T>(
        &self,
        client: &mut Client,
        mut op: impl FnMut(&mut Client) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        match op(client) {
            Err(failure) if failure.needs_tls12 && !self.connection.tls12_only => {
                if !self.tls12_fallback.swap(true, Ordering::Relaxed) {
                    self.say(&format!(
                        "ftps: {} accepts data connections only with the control connection's TLS session and issues no more TLS 1.3 tickets; going on with TLS 1.2",
                        self.connection.host
                    ));
                }
                *client = self.open()?;
                op(client)
            }
            other => other,
        }
    }

    /// A progress report for one file: a line under the run's total when it has one
    /// ([`Sessions::show_total`]), else a bar of its own.
    fn progress(&self, label: &str, total: Option<u64>) -> Progress<'_> {
        match self.total.get() {
            Some(run_total) => run_total.file(label, total),
            None => Progress::new(ProgressMode::for_stderr(self.quiet), label, total),
        }
    }

    /// Shows a total (files, bytes, rate, ETA) above the lines of the transfers in flight when
    /// the run moves more than one file; single transfers keep a bar of their own.
    fn show_total(&self, sizes: impl Iterator<Item = u64>) {
        let (files, bytes) = sizes.fold((0, 0u64), |(n, sum), size| {
            (n + 1, sum.saturating_add(size))
        });
        if files > 1 {
            let mode = ProgressMode::for_stderr(self.quiet);
            let _ = self.total.set(Total::new(mode, files, bytes));
        }
    }

    /// Prints `line` on stderr, above the progress lines while they are drawn.
    fn say(&self, line: &str) {
        match self.total.get() {
            Some(total) => total.print(line),
            None => {
                let _ = writeln!(io::stderr().lock(), "{line}");
            }
        }
    }

    /// Removes the total's line (the per-file summary lines stay).
    fn end_total(&self) {
        if let Some(total) = self.total.get() {
            total.finish();
        }
    }

    /// The sessions of `--parallel N`: connected and logged in like the first one.
    fn pool(&self) -> SessionPool<impl Fn() -> Result<Client, Error> + Sync + '_> {
        SessionPool::new(self.parallel, || {
            let mut client =
                Client::connect(&self.connection.host, self.connection.port, self.config())?;
            client.login(&self.login.user, &self.login.password)?;
            Ok(client)
        })
    }

    /// Runs `work` on every item: on `first` alone, or with `--parallel N` on up to N sessions
    /// at once (`first` and N-1 opened here), each item on exactly one of them. A failure goes
    /// to `failed`, which either lets the run go on (`Ok`) or ends it: then no session starts
    /// another item and that failure is returned. A session that could not be opened is
    /// reported and the others carry its share.
    fn for_each<T: Sync>(
        &self,
        first: &mut Client,
        items: &[T],
        work: impl Fn(&mut Client, &T) -> Result<(), Failure> + Sync,
        failed: impl Fn(Failure) -> Result<(), Failure> + Sync,
    ) -> Result<(), Failure> {
        self.pool().for_each(
            first,
            items,
            |client, item| work(client, item).or_else(&failed),
            |error| {
                self.say(&format!(
                    "ftps: an extra session: {error} (going on with fewer)"
                ))
            },
        )
    }
}

fn perform(
    client: &mut Client,
    action: &Action,
    local_tree: Option<LocalWalk>,
    sessions: &Sessions<'_>,
) -> Result<(), Failure> {
    let quiet = sessions.quiet;
    match action {
        Action::List { dir } => {
            sessions.resuming(client, |client| list(client, dir, sessions.json))
        }
        Action::Get {
            remote,
            local,
            resume,
        } => {
            let segmented = sessions.parallel > 1 && !*resume && !is_special_file(local);
            let report = sessions.with_retries(client, |client, retry| {
                if segmented {
                    get_segmented(client, remote, local, sessions)
                } else {
                    get(client, remote, local, *resume, retry, quiet)
                }
            });
            if report.is_err() {
                discard_partial(local);
            }
            let report = report?;
            sessions.record(remote, report.as_ref());
            Ok(())
        }
        Action::GetToStdout { remote } => {
            sessions.resuming(client, |client| get_to_stdout(client, remote, quiet))
        }
        // One session for every file; the first failure ends the run with its exit code.
        Action::Put { files, resume } => {
            sessions.show_total(
                files
                    .iter()
                    .map(|(local, _)| fs::metadata(local).map_or(0, |m| m.len())),
            );
            let result = sessions.for_each(
                client,
                files,
                |client, (local, remote)| {
                    // A retry continues the upload (SIZE, then APPE of the rest; nothing when
                    // the server already has it all), so a completed file is never sent twice.
                    let report = sessions.with_retries(client, |client, retry| {
                        put(client, local, remote, *resume || retry, sessions)
                    })?;
                    sessions.record(remote, report.as_ref());
                    Ok(())
                },
                Err,
            );
            sessions.end_total();
            result
        }
        Action::Remove { remote } => client
            .delete(remote)
            .map_err(|e| Failure::client(Phase::FileOp, &format!("rm {remote}"), &e)),
        Action::MakeDir { remote } => client
            .mkdir(remote)
            .map(drop)
            .map_err(|e| Failure::client(Phase::FileOp, &format!("mkdir {remote}"), &e)),
        Action::RemoveDir { remote } => client
            .rmdir(remote)
            .map_err(|e| Failure::client(Phase::FileOp, &format!("rmdir {remote}"), &e)),
        Action::Stat { remote } => stat(client, remote),
        Action::Rename { from, to } => client
            .rename(from, to)
            .map_err(|e| Failure::client(Phase::FileOp, &format!("mv {from} {to}"), &e)),
        Action::Mirror {
            direction,
            local,
            remote,
            delete,
            dry_run,
        } => {
            let local_tree = local_tree.unwrap_or_default();
            let options = MirrorOptions {
                delete: *delete,
                dry_run: *dry_run,
            };
            mirror(
                client,
                *direction,
                local,
                remote,
                &local_tree,
                sessions,
                options,
            )
        }
        Action::SiteToSite {
            remote,
            destination,
            protection,
        } => site_to_site(client, remote, destination, *protection, quiet),
    }
}

// ----- stat -----

/// `stat`: `size: N` (SIZE) and `modify: YYYY-MM-DDTHH:MM:SSZ` (MDTM) on stdout. A server that
/// answers only one of them shows that one; the run fails with the SIZE refusal when neither.
fn stat(client: &mut Client, remote: &str) -> Result<(), Failure> {
    let context = format!("stat {remote}");
    let size = client.size(remote);
    if let Err(e) = &size {
        if !e.is_session_usable() {
            return Err(Failure::client(Phase::FileOp, &context, e));
        }
    }
    let modified = client.mdtm_timeval(remote);
    let mut out = String::new();
    if let Ok(size) = &size {
        out.push_str(&format!("size: {size}\n"));
    }
    if let Ok(t) = &modified {
        out.push_str(&format!(
            "modify: {:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z\n",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        ));
    }
    match size {
        Err(e) if modified.is_err() => Err(Failure::client(Phase::FileOp, &context, &e)),
        _ => io::stdout()
            .write_all(out.as_bytes())
            .map_err(|e| Failure::local(Path::new("stdout"), &e)),
    }
}

// ----- ls -----

fn list(client: &mut Client, dir: &str, as_json: bool) -> Result<(), Failure> {
    let entries = client
        .list(non_empty(dir))
        .map_err(|e| Failure::client(Phase::FileOp, &format!("ls {}", shown(dir)), &e))?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if as_json {
        return writeln!(out, "{}", json::listing(&entries))
            .map_err(|e| Failure::local(Path::new("stdout"), &e));
    }
    for entry in &entries {
        if matches!(entry.kind, EntryKind::CurrentDir | EntryKind::ParentDir) {
            continue;
        }
        writeln!(out, "{}", format_entry(entry))
            .map_err(|e| Failure::local(Path::new("stdout"), &e))?;
    }
    out.flush()
        .map_err(|e| Failure::local(Path::new("stdout"), &e))
}

/// One `ls` line: type, size, modification time (UTC), name.
fn format_entry(entry: &Entry) -> String {
    let kind = match &entry.kind {
        EntryKind::File => '-',
        EntryKind::Dir | EntryKind::CurrentDir | EntryKind::ParentDir => 'd',
        EntryKind::Link(_) => 'l',
        _ => '?',
    };
    let size = entry
        .size
        .map_or_else(|| "-".to_owned(), |size| size.to_string());
    let time = entry.modified.map_or_else(
        || "-".to_owned(),
        |t| {
            format!(
                "{:04}-{:02}-{:02} {:02}:{:02}",
                t.year, t.month, t.day, t.hour, t.minute
            )
        },
    );
    let mut line = format!("{kind} {size:>12} {time:<16} {}", printable(&entry.name));
    if let EntryKind::Link(Some(target)) = &entry.kind {
        line.push_str(" -> ");
        line.push_str(&printable(target));
    }
    line
}

/// A peer-supplied name made safe for a terminal: control characters (escape sequences) become `?`.
fn printable(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn non_empty(path: &str) -> Option<&str> {
    (!path.is_empty()).then_some(path)
}

/// A remote path for messages: the login directory has no name of its own.
fn shown(path: &str) -> &str {
    if path.is_empty() {
        "."
    } else {
        path
    }
}

// ----- get / put -----

/// The remote size for the progress bar, when the server tells; a refusal here is not an
/// error (the transfer itself reports a missing file).
fn remote_size(client: &mut Client, remote: &str, context: &str) -> Result<Option<u64>, Failure> {
    match client.size(remote) {
        Ok(size) => Ok(Some(size)),
        Err(e) if e.is_session_usable() => Ok(None),
        Err(e) => Err(Failure::client(Phase::FileOp, context, &e)),
    }
}

fn get(
    client: &mut Client,
    remote: &str,
    local: &Path,
    resume: bool,
    retry: bool,
    quiet: bool,
) -> Result<Option<TransferReport>, Failure> {
    let context = format!("get {remote}");
    let total = remote_size(client, remote, &context)?;
    let mode = ProgressMode::for_stderr(quiet);
    let mut progress = Progress::new(mode, &local.display().to_string(), total);
    if resume {
        let have = fs::metadata(local).map_or(0, |m| m.len());
        // A longer local file is not a prefix: the library starts over.
        if total.is_none_or(|total| have <= total) {
            progress.set_resumed_from(have);
        }
        let result = client.get_with_progress(remote, local, true, |bytes| {
            progress.update(bytes);
        });
        end_progress(&mut progress, result.is_ok(), have);
        return result.map_err(|e| Failure::client(Phase::Transfer, &context, &e));
    }
    download_fresh(client, remote, local, None, &mut progress, &context, retry)
}

/// `get --parallel N`: one file in segments read at once by N sessions ([`SessionPool::get_segmented`];
/// a file under two segments goes as one stream), into a temporary file renamed into place. A
/// retry starts over: the segments of a failed try are not a prefix that `REST` could continue.
fn get_segmented(
    client: &mut Client,
    remote: &str,
    local: &Path,
    sessions: &Sessions<'_>,
) -> Result<Option<TransferReport>, Failure> {
    let context = format!("get {remote}");
    let total = remote_size(client, remote, &context)?;
    // One file: one bar, whichever session moved the bytes.
    let label = local.display().to_string();
    let progress = Mutex::new(Progress::new(
        ProgressMode::for_stderr(sessions.quiet),
        &label,
        total,
    ));
    let partial = partial_path(local);
    let result = fs::File::create(&partial)
        .map_err(|e| Failure::local(&partial, &e))
        .and_then(|file| {
            let report = sessions
                .pool()
                .get_segmented(client, remote, total, &file, |bytes| {
                    if let Ok(mut progress) = progress.lock() {
                        let done = progress.bytes() + bytes;
                        progress.update(done);
                    }
                })
                .map_err(|e| Failure::client(Phase::Transfer, &context, &e))?;
            file.sync_all().map_err(|e| Failure::local(&partial, &e))?;
            fs::rename(&partial, local).map_err(|e| Failure::local(local, &e))?;
            Ok(Some(report.as_transfer_report()))
        });
    if let Ok(mut progress) = progress.lock() {
        end_progress(&mut progress, result.is_ok(), 0);
    }
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// `get URL -`: streams `remote` to standard output in [`COPY_UNIT`] writes, then verifies the
/// download is complete ([`RetrGuard::finish`]: close_notify and the final reply), so a cut
/// stream still fails with exit code 5 although its bytes were written.
///
/// When the reader of standard output goes away (`| head`), the transfer is aborted and `ftps`
/// ends with exit code 6 (the download did not complete) but without an error line: that end
/// is no news to whoever closed the pipe. Other write errors are reported as usual.
fn get_to_stdout(client: &mut Client, remote: &str, quiet: bool) -> Result<(), Failure> {
    let context = format!("get {remote}");
    let total = remote_size(client, remote, &context)?;
    let mut progress = stdout_progress(remote, total, quiet);
    let mut guard = client
        .retr(remote, 0)
        .map_err(|e| Failure::client(Phase::Transfer, &context, &e))?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let mut buf = vec![0; COPY_UNIT];
    let copied = loop {
        let filled = match fill(&mut guard, &mut buf, &mut progress) {
            Ok(filled) => filled,
            // The guard kept the cause; finish() reports it with its type.
            Err(e) => break Err(StreamError::Download(e)),
        };
        let Some(chunk) = buf.get(..filled).filter(|c| !c.is_empty()) else {
            break out.flush().map_err(StreamError::Stdout);
        };
        if let Err(e) = out.write_all(chunk) {
            break Err(StreamError::Stdout(e));
        }
    };
    let result = match copied {
        Ok(()) => guard
            .finish()
            .map(drop)
            .map_err(|e| Failure::client(Phase::Transfer, &context, &e)),
        Err(StreamError::Download(read_error)) => Err(match guard.finish() {
            Err(e) => Failure::client(Phase::Transfer, &context, &e),
            // Not expected: the guard's read failed but it found nothing wrong at the end.
            Ok(_) => Failure {
                error: CliError::new(ErrorKind::Transfer, format!("{context}: {read_error}")),
                session_usable: true,
                transient: false,
                needs_tls12: false,
            },
        }),
        Err(StreamError::Stdout(write_error)) => {
            let session_usable = guard.abort().is_ok();
            let error = CliError::local_io(Path::new("stdout"), &write_error);
            if write_error.kind() == io::ErrorKind::BrokenPipe {
                // Quiet all the way: no error line, and no "(FAILED)" summary either.
                let error = CliError::silent(error.kind(), error.message());
                return Err(Failure {
                    error,
                    session_usable,
                    transient: false,
                    needs_tls12: false,
                });
            }
            Err(Failure {
                error,
                session_usable,
                transient: false,
                needs_tls12: false,
            })
        }
    };
    end_progress(&mut progress, result.is_ok(), 0);
    result
}

/// The report of `get URL -`: as [`ProgressMode::for_stderr`], but never a bar when standard output
/// is a terminal too, where it would be drawn over the file's text (curl does the same).
fn stdout_progress(label: &str, total: Option<u64>, quiet: bool) -> Progress<'_> {
    let mode = if quiet {
        ProgressMode::Silent
    } else if io::stderr().is_terminal() && !io::stdout().is_terminal() {
        ProgressMode::Bar
    } else {
        ProgressMode::SummaryOnly
    };
    Progress::new(mode, label, total)
}

/// Size of one write to standard output: few system calls, as in the library's file copies.
const COPY_UNIT: usize = 256 * 1024;

/// Why streaming to standard output stopped early.
enum StreamError {
    /// Reading the download failed (the data connection; the guard keeps the typed cause).
    Download(io::Error),
    /// Writing standard output failed.
    Stdout(io::Error),
}

/// Reads the download until `buf` is full or the stream ends, keeping `progress` current;
/// returns how much was read.
fn fill(
    guard: &mut RetrGuard<'_>,
    buf: &mut [u8],
    progress: &mut Progress<'_>,
) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(free) = buf.get_mut(filled..).filter(|f| !f.is_empty()) {
        match guard.read(free) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                progress.update(RetrGuard::bytes(guard));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Downloads `remote` into a temporary file next to `local` and renames it into place, so an
/// interrupted download never leaves a partial file under the final name. Sets the file's
/// modification time to `mtime` when given.
///
/// An existing `local` that is not a regular file (`/dev/null`, a FIFO, a socket, a terminal) is
/// written in place instead: renaming over it would replace the device or pipe with a regular
/// file (run as root, `ftps get URL /dev/null` once replaced the machine's `/dev/null`).
fn download_fresh(
    client: &mut Client,
    remote: &str,
    local: &Path,
    mtime: Option<SystemTime>,
    progress: &mut Progress<'_>,
    context: &str,
    continue_partial: bool,
) -> Result<Option<TransferReport>, Failure> {
    if is_special_file(local) {
        let result = client
            .get_with_progress(remote, local, false, |bytes| {
                progress.update(bytes);
            })
            .map_err(|e| Failure::client(Phase::Transfer, context, &e));
        end_progress(progress, result.is_ok(), 0);
        return result;
    }
    let partial = partial_path(local);
    // A retry continues what the failed try left in the partial file (REST).
    let result = client.get_with_progress(remote, &partial, continue_partial, |bytes| {
        progress.update(bytes);
    });
    let result = result
        .map_err(|e| Failure::client(Phase::Transfer, context, &e))
        .and_then(|report| {
            if let Some(mtime) = mtime {
                set_local_mtime(&partial, mtime)?;
            }
            fs::rename(&partial, local).map_err(|e| Failure::local(local, &e))?;
            Ok(report)
        });
    end_progress(progress, result.is_ok(), 0);
    // A transient failure keeps the partial file for a retry; the caller discards it when the
    // retries are used up (`discard_partial`).
    if result.as_ref().is_err_and(|f| !f.transient) {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// Removes what failed tries of a download of `local` left behind.
fn discard_partial(local: &Path) {
    let _ = fs::remove_file(partial_path(local));
}

/// Ends a progress report. A transfer that failed before moving a byte past `start` gets no
/// summary line: the error line says it all.
fn end_progress(progress: &mut Progress<'_>, ok: bool, start: u64) {
    if ok || progress.bytes() > start {
        progress.finish(ok);
    } else {
        progress.abandon();
    }
}

/// Whether `path` exists (following symbolic links) and is neither a regular file nor a
/// directory: a device, FIFO or socket that a download writes into rather than replaces.
fn is_special_file(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| !m.is_file() && !m.is_dir())
}

/// `dir/.name.ftps-PID.part` for `dir/name`: hidden, and private to this process.
fn partial_path(local: &Path) -> PathBuf {
    let name = local
        .file_name()
        .map_or_else(|| "download".into(), |n| n.to_string_lossy());
    local.with_file_name(format!(".{name}.ftps-{}.part", std::process::id()))
}

fn set_local_mtime(path: &Path, mtime: SystemTime) -> Result<(), Failure> {
    fs::File::options()
        .write(true)
        .open(path)
        .and_then(|file| file.set_modified(mtime))
        .map_err(|e| Failure::local(path, &e))
}

fn put(
    client: &mut Client,
    local: &Path,
    remote: &str,
    resume: bool,
    sessions: &Sessions<'_>,
) -> Result<Option<TransferReport>, Failure> {
    let context = format!("put {remote}");
    let total = fs::metadata(local)
        .map_err(|e| Failure::local(local, &e))?
        .len();
    let mut progress = sessions.progress(remote, Some(total));
    let result = client.put_with_progress(local, remote, resume, |bytes| {
        progress.update(bytes);
    });
    end_progress(&mut progress, result.is_ok(), 0);
    result.map_err(|e| Failure::client(Phase::Transfer, &context, &e))
}

// ----- fxp -----

/// `fxp`: logs in to the destination too and has the servers copy the file between them.
fn site_to_site(
    source: &mut Client,
    remote: &str,
    destination: &Destination,
    protection: SiteToSiteProtection,
    quiet: bool,
) -> Result<(), Failure> {
    let mut target = connect(&destination.connection)?;
    let login = &destination.login;
    if let Err(e) = target.login(&login.user, &login.password) {
        let context = format!("login as {} on {}", login.user, destination.connection.host);
        return Err(Failure::client(Phase::Login, &context, &e));
    }
    let context = format!("fxp {remote} -> {}", destination.remote);
    let result = source.site_to_site(remote, &mut target, &destination.remote, protection);
    if !target.is_closed() {
        let _ = target.quit();
    }
    let report = result.map_err(|e| Failure::client(Phase::Transfer, &context, &e))?;
    if !quiet {
        let protection = match report.tls_client {
            Some((side, method)) => format!("PROT P, {side:?} is TLS client via {method:?}"),
            None => "PROT C (unprotected data)".to_string(),
        };
        let size = report
            .destination_size
            .or(report.source_bytes)
            .map(|n| format!(", {}", format_bytes(n)))
            .unwrap_or_default();
        let _ = writeln!(
            io::stderr().lock(),
            "{} -> {}: copied server to server ({protection}{size})",
            shown(remote),
            shown(&destination.remote)
        );
    }
    Ok(())
}

// ----- mirror -----

/// `root/relative` on the server; the empty root is the login directory.
fn remote_join(root: &str, relative: &str) -> String {
    if root.is_empty() {
        relative.to_owned()
    } else if relative.is_empty() {
        root.to_owned()
    } else if root.ends_with('/') {
        format!("{root}{relative}")
    } else {
        format!("{root}/{relative}")
    }
}

/// A listing time as a `SystemTime`.
fn system_time(time: &Timeval) -> SystemTime {
    let millis = time.to_unix_millis();
    let magnitude = Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

/// How precise a listing time is: MLSD gives seconds (RFC 3659 §2.3); a LIST line gives
/// minutes, or only the day for dates outside the `ls` clock window.
fn listing_precision(mlsd: bool, time: SystemTime, now: SystemTime) -> TimePrecision {
    if mlsd {
        return TimePrecision::Second;
    }
    match now.duration_since(time) {
        Ok(age) if age < LIST_CLOCK_WINDOW => TimePrecision::Minute,
        // A date in the near future (clock skew) is still shown with a clock.
        Err(ahead) if ahead.duration() < Duration::from_secs(24 * 3600) => TimePrecision::Minute,
        _ => TimePrecision::Day,
    }
}

/// Lists the remote tree under `root` (files and directories; links are not followed).
/// `Ok(None)` when the server refuses to list `root` itself and `missing_root_ok`.
fn walk_remote(
    client: &mut Client,
    root: &str,
    missing_root_ok: bool,
    sessions: &Sessions<'_>,
) -> Result<Option<Vec<TreeEntry>>, Failure> {
    let mlsd = client.features().is_some_and(|f| f.mlsd);
    let now = SystemTime::now();
    let mut tree = Vec::new();
    let mut pending = vec![(String::new(), 0usize)];
    while let Some((relative, depth)) = pending.pop() {
        let dir = remote_join(root, &relative);
        let listing = sessions.resuming(client, |client| match client.list(non_empty(&dir)) {
            Ok(listing) => Ok(Some(listing)),
            Err(e)
                if missing_root_ok
                    && relative.is_empty()
                    && e.reply_code().is_some()
                    && !matches!(e, Error::ResumptionExhausted { .. }) =>
            {
                Ok(None)
            }
            Err(e) => {
                let context = format!("ls {}", shown(&dir));
                Err(Failure::client(Phase::FileOp, &context, &e))
            }
        })?;
        let Some(listing) = listing else {
            return Ok(None);
        };
        for entry in listing {
            // Names are single path segments; anything else is not ours to follow.
            if entry.name.is_empty()
                || entry.name == "."
                || entry.name == ".."
                || entry.name.contains('/')
            {
                continue;
            }
            let path = remote_join(&relative, &entry.name);
            match entry.kind {
                EntryKind::Dir => {
                    tree.push(TreeEntry::dir(&path));
                    if depth < MAX_REMOTE_DEPTH {
                        pending.push((path, depth + 1));
                    }
                }
                EntryKind::File => {
                    let mtime = entry.modified.as_ref().map(system_time);
                    let precision =
                        mtime.map_or(TimePrecision::Second, |t| listing_precision(mlsd, t, now));
                    let size = entry.size.unwrap_or(0);
                    tree.push(TreeEntry::file(&path, size, mtime, precision));
                }
                // Links could leave the tree or loop; specials are not files.
                _ => {}
            }
        }
    }
    tree.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Some(tree))
}

/// Counts for the summary line.
/// `mirror --delete` and `--dry-run`.
#[derive(Debug, Clone, Copy)]
struct MirrorOptions {
    delete: bool,
    dry_run: bool,
}

#[derive(Debug, Default)]
struct MirrorTotals {
    deleted: usize,
    transferred: usize,
    bytes: u64,
    failed: usize,
    first_failure: Option<ErrorKind>,
}

impl MirrorTotals {
    /// Records a per-file failure: reported now, the run goes on while the session is usable.
    fn failed(&mut self, failure: Failure, sessions: &Sessions<'_>) -> Result<(), Failure> {
        if !failure.session_usable {
            return Err(failure);
        }
        sessions.say(&format!("ftps: {}", failure.error));
        self.failed += 1;
        self.first_failure.get_or_insert(failure.error.kind());
        Ok(())
    }
}

fn mirror(
    client: &mut Client,
    direction: MirrorDirection,
    local_root: &Path,
    remote_root: &str,
    local_tree: &LocalWalk,
    sessions: &Sessions<'_>,
    options: MirrorOptions,
) -> Result<(), Failure> {
    let quiet = sessions.quiet;
    let upload = direction == MirrorDirection::Upload;
    let remote_tree = walk_remote(client, remote_root, upload, sessions)?;
    let remote_missing = remote_tree.as_ref().is_none_or(Vec::is_empty);
    let remote_tree = remote_tree.unwrap_or_default();
    let plan = mirror::plan(direction, &local_tree.entries, &remote_tree);
    if !quiet {
        warn_about(&plan, local_tree);
    }
    if options.dry_run {
        return print_plan(&plan, options.delete);
    }
    match direction {
        MirrorDirection::Upload => {
            // A server may list a missing directory as empty: make sure the root exists. A
            // refusal usually means it does; if not, the transfers below say so.
            if remote_missing && !remote_root.is_empty() {
                if let Err(e) = client.mkdir(remote_root) {
                    if !e.is_session_usable() {
                        let context = format!("mkdir {remote_root}");
                        return Err(Failure::client(Phase::FileOp, &context, &e));
                    }
                }
            }
        }
        MirrorDirection::Download => {
            fs::create_dir_all(local_root).map_err(|e| Failure::local(local_root, &e))?;
        }
    }
    let mut totals = MirrorTotals::default();
    for dir in &plan.create_dirs {
        let created = match direction {
            MirrorDirection::Upload => {
                let path = remote_join(remote_root, dir);
                client
                    .mkdir(&path)
                    .map(drop)
                    .map_err(|e| Failure::client(Phase::FileOp, &format!("mkdir {path}"), &e))
            }
            MirrorDirection::Download => {
                let path = local_root.join(dir);
                fs::create_dir_all(&path).map_err(|e| Failure::local(&path, &e))
            }
        };
        if let Err(failure) = created {
            totals.failed(failure, sessions)?;
        }
    }
    let totals = Mutex::new(totals);
    sessions.show_total(plan.transfers.iter().map(|t| t.size));
    // Each file on one session; a failure that leaves its session usable is reported and the
    // run goes on, any other ends it.
    let transferred = sessions.for_each(
        client,
        &plan.transfers,
        |client, transfer| {
            let remote = remote_join(remote_root, &transfer.path);
            let local = local_root.join(&transfer.path);
            let report = sessions.with_retries(client, |client, retry| {
                let mut progress = sessions.progress(&transfer.path, Some(transfer.size));
                match direction {
                    MirrorDirection::Upload => upload_with_mtime(
                        client,
                        &local,
                        &remote,
                        transfer.mtime,
                        &mut progress,
                        retry,
                    ),
                    MirrorDirection::Download => download_with_mtime(
                        client,
                        &remote,
                        &local,
                        transfer.mtime,
                        &mut progress,
                        retry,
                    ),
                }
            });
            if report.is_err() && direction == MirrorDirection::Download {
                discard_partial(&local);
            }
            let report = report?;
            sessions.record(&transfer.path, report.as_ref());
            if let Ok(mut totals) = totals.lock() {
                totals.transferred += 1;
                let moved = report.as_ref().map_or(0, |r| r.bytes);
                totals.bytes = totals.bytes.saturating_add(moved);
            }
            Ok(())
        },
        |failure| match totals.lock() {
            Ok(mut totals) => totals.failed(failure, sessions),
            Err(_) => Err(failure),
        },
    );
    sessions.end_total();
    transferred?;
    let mut totals = totals.into_inner().unwrap_or_default();
    if options.delete {
        for (path, kind) in &plan.deletions {
            let deleted = match direction {
                MirrorDirection::Upload => {
                    let remote = remote_join(remote_root, path);
                    let result = if *kind == mirror::EntryKind::Dir {
                        client.rmdir(&remote)
                    } else {
                        client.delete(&remote)
                    };
                    result.map_err(|e| {
                        Failure::client(Phase::FileOp, &format!("delete {remote}"), &e)
                    })
                }
                MirrorDirection::Download => {
                    let local = local_root.join(path);
                    let result = if *kind == mirror::EntryKind::Dir {
                        fs::remove_dir(&local)
                    } else {
                        fs::remove_file(&local)
                    };
                    result.map_err(|e| Failure::local(&local, &e))
                }
            };
            match deleted {
                Ok(()) => totals.deleted += 1,
                Err(failure) => totals.failed(failure, sessions)?,
            }
        }
    }
    if !quiet {
        let mut summary = format!(
            "mirror: {} transferred ({}), {} skipped, {} directories created",
            totals.transferred,
            format_bytes(totals.bytes),
            plan.skipped.len(),
            plan.create_dirs.len(),
        );
        if options.delete {
            summary.push_str(&format!(", {} deleted", totals.deleted));
        }
        if totals.failed > 0 {
            summary.push_str(&format!(", {} failed", totals.failed));
        }
        if !options.delete && !plan.extraneous.is_empty() {
            summary.push_str(&format!(
                "; {} only on the destination (not deleted)",
                plan.extraneous.len()
            ));
        }
        if !sessions.json {
            let _ = writeln!(io::stdout(), "{summary}");
        }
    }
    match totals.first_failure {
        None => Ok(()),
        Some(kind) => Err(Failure {
            error: CliError::new(
                kind,
                format!(
                    "mirror: {} of {} operations failed",
                    totals.failed,
                    plan.create_dirs.len()
                        + plan.transfers.len()
                        + if options.delete {
                            plan.deletions.len()
                        } else {
                            0
                        }
                ),
            ),
            session_usable: true,
            transient: false,
            needs_tls12: false,
        }),
    }
}

/// Uploads one file and copies its modification time to the server when it offers MFMT; a
/// refused MFMT is not a failure (the next run then sees a newer destination and skips it).
fn upload_with_mtime(
    client: &mut Client,
    local: &Path,
    remote: &str,
    mtime: Option<SystemTime>,
    progress: &mut Progress<'_>,
    retry: bool,
) -> Result<Option<TransferReport>, Failure> {
    let result = client.put_with_progress(local, remote, retry, |bytes| {
        progress.update(bytes);
    });
    end_progress(progress, result.is_ok(), 0);
    let report =
        result.map_err(|e| Failure::client(Phase::Transfer, &format!("put {remote}"), &e))?;
    let mfmt = client.features().is_some_and(|f| f.mfmt);
    if let (true, Some(mtime)) = (mfmt, mtime) {
        if let Err(e) = client.set_mtime(remote, mtime) {
            if !e.is_session_usable() {
                return Err(Failure::client(Phase::FileOp, remote, &e));
            }
        }
    }
    Ok(report)
}

/// Downloads one file and gives it the remote modification time: MDTM's, to the second, when
/// the server offers it, else the listing's.
fn download_with_mtime(
    client: &mut Client,
    remote: &str,
    local: &Path,
    listed: Option<SystemTime>,
    progress: &mut Progress<'_>,
    retry: bool,
) -> Result<Option<TransferReport>, Failure> {
    let mut mtime = listed;
    if client.features().is_some_and(|f| f.mdtm) {
        match client.mdtm(remote) {
            Ok(exact) => mtime = Some(exact),
            Err(e) if e.is_session_usable() => {}
            Err(e) => return Err(Failure::client(Phase::FileOp, remote, &e)),
        }
    }
    download_fresh(
        client,
        remote,
        local,
        mtime,
        progress,
        &format!("get {remote}"),
        retry,
    )
}

/// `mirror --dry-run`: what the run would do, one line each on stdout (`mkdir`, `transfer`
/// with its reason, `delete` with `--delete`), then a summary. Nothing is changed.
fn print_plan(plan: &Plan, delete: bool) -> Result<(), Failure> {
    let mut out = String::new();
    for dir in &plan.create_dirs {
        out.push_str(&format!("mkdir {}\n", printable(dir)));
    }
    for transfer in &plan.transfers {
        let why = match transfer.reason {
            TransferReason::Missing => "missing",
            TransferReason::SizeDiffers => "size differs",
            TransferReason::SourceNewer => "source newer",
        };
        out.push_str(&format!("transfer {} ({why})\n", printable(&transfer.path)));
    }
    if delete {
        for (path, _) in &plan.deletions {
            out.push_str(&format!("delete {}\n", printable(path)));
        }
    }
    let bytes = plan
        .transfers
        .iter()
        .fold(0u64, |sum, t| sum.saturating_add(t.size));
    out.push_str(&format!(
        "mirror (dry run): {} to transfer ({}), {} skipped, {} directories to create",
        plan.transfers.len(),
        format_bytes(bytes),
        plan.skipped.len(),
        plan.create_dirs.len()
    ));
    if delete {
        out.push_str(&format!(", {} to delete", plan.deletions.len()));
    } else if !plan.extraneous.is_empty() {
        out.push_str(&format!(
            "; {} only on the destination (not deleted)",
            plan.extraneous.len()
        ));
    }
    out.push('\n');
    io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| Failure::local(Path::new("stdout"), &e))
}

/// Warnings about what a mirror run leaves alone.
fn warn_about(plan: &Plan, local_tree: &LocalWalk) {
    let mut err = io::stderr().lock();
    for path in &plan.conflicts {
        let _ = writeln!(
            err,
            "ftps: warning: {}: a file on one side, a directory on the other; left alone",
            printable(path)
        );
    }
    for path in &plan.rejected {
        let _ = writeln!(
            err,
            "ftps: warning: {}: unsafe name, not mirrored",
            printable(path)
        );
    }
    if plan.direction == MirrorDirection::Upload {
        for path in &local_tree.not_mirrored {
            let _ = writeln!(
                err,
                "ftps: warning: {}: not a regular file or directory, not mirrored",
                printable(path)
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn refused(code: u16) -> Error {
        Error::Refused {
            code,
            text: "text".into(),
        }
    }

    #[test]
    fn exit_codes_by_error_and_phase() {
        let kind = |phase, error: Error| error_kind(phase, &error).exit_code();
        // refusals: by phase, and 5xx vs 4xx during transfers
        assert_eq!(kind(Phase::Connect, refused(534)), 2);
        assert_eq!(
            kind(
                Phase::Login,
                Error::LoginRefused {
                    code: 530,
                    text: "no".into()
                }
            ),
            3
        );
        assert_eq!(kind(Phase::FileOp, refused(550)), 4);
        assert_eq!(kind(Phase::FileOp, refused(450)), 4);
        assert_eq!(kind(Phase::Transfer, refused(550)), 4);
        assert_eq!(kind(Phase::Transfer, refused(426)), 5);
        // connection and TLS
        let refused_tcp = io::Error::from(io::ErrorKind::ConnectionRefused);
        let connect = Error::Connect {
            addr: "h:21".into(),
            source: refused_tcp,
        };
        assert_eq!(kind(Phase::Connect, connect), 2);
        assert_eq!(kind(Phase::Connect, Error::TlsConfig("x".into())), 2);
        assert_eq!(kind(Phase::Login, Error::Timeout("reply")), 2);
        assert_eq!(kind(Phase::FileOp, Error::Closed("gone".into())), 2);
        // transfers: broken, truncated, or a local file
        assert_eq!(kind(Phase::Transfer, Error::Truncated), 5);
        assert_eq!(kind(Phase::Transfer, Error::Aborted), 5);
        assert_eq!(kind(Phase::Transfer, Error::Timeout("data")), 5);
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(kind(Phase::Transfer, Error::Io(reset)), 5);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(kind(Phase::Transfer, Error::Io(denied)), 6);
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        assert_eq!(kind(Phase::Connect, Error::Io(denied)), 2);
    }

    #[test]
    fn failure_message_and_usability() {
        let failure = Failure::client(Phase::FileOp, "rm x", &refused(550));
        assert_eq!(failure.error.message(), "rm x: server refused: 550 text");
        assert!(failure.session_usable);
        let failure = Failure::client(Phase::Connect, "", &Error::Timeout("greeting"));
        assert_eq!(failure.error.message(), "timed out: greeting");
        assert!(!failure.session_usable);
        let addr = "127.0.0.1:990".parse().unwrap();
        let failure = Failure::client(Phase::Connect, "", &Error::ImplicitTlsPort { addr });
        assert!(failure.error.message().ends_with("; use an ftpsi:// URL"));
        assert_eq!(failure.error.kind().exit_code(), 2);
        let refused = Error::ProtectionRefused {
            code: 534,
            text: "no".into(),
        };
        let failure = Failure::client(Phase::Login, "", &refused);
        assert_eq!(failure.error.kind().exit_code(), 7);
        assert!(failure
            .error
            .message()
            .contains("will not protect the data channel"));
    }

    #[test]
    fn remote_paths_join() {
        assert_eq!(remote_join("", "a/b"), "a/b");
        assert_eq!(remote_join("www", ""), "www");
        assert_eq!(remote_join("www", "a"), "www/a");
        assert_eq!(remote_join("/", "a"), "/a");
        assert_eq!(remote_join("www/", "a"), "www/a");
    }

    #[test]
    fn ls_lines() {
        let mut file = Entry::new("report.csv", EntryKind::File);
        file.size = Some(1234);
        file.modified = Timeval::new(2024, 3, 5, 7, 9, 11, None);
        assert_eq!(
            format_entry(&file),
            "-         1234 2024-03-05 07:09 report.csv"
        );
        let dir = Entry::new("pub", EntryKind::Dir);
        assert_eq!(format_entry(&dir), "d            - -                pub");
        let link = Entry::new("l\x1b[2J", EntryKind::Link(Some("t\n".into())));
        assert_eq!(
            format_entry(&link),
            "l            - -                l?[2J -> t?"
        );
    }

    #[test]
    fn list_time_precision() {
        let now = UNIX_EPOCH + Duration::from_secs(400 * 24 * 3600);
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(
            listing_precision(true, now - 300 * day, now),
            TimePrecision::Second
        );
        assert_eq!(
            listing_precision(false, now - 10 * day, now),
            TimePrecision::Minute
        );
        assert_eq!(
            listing_precision(false, now + Duration::from_secs(60), now),
            TimePrecision::Minute
        );
        assert_eq!(
            listing_precision(false, now - 300 * day, now),
            TimePrecision::Day
        );
        assert_eq!(
            listing_precision(false, now + 2 * day, now),
            TimePrecision::Day
        );
    }

    #[test]
    fn timeval_to_system_time() {
        let t = Timeval::from_unix_seconds(86_400 + 61).unwrap();
        assert_eq!(system_time(&t), UNIX_EPOCH + Duration::from_secs(86_461));
    }

    #[test]
    fn partial_download_name_is_hidden_next_to_the_target() {
        let partial = partial_path(Path::new("/tmp/dir/file.bin"));
        assert_eq!(partial.parent(), Some(Path::new("/tmp/dir")));
        assert_eq!(
            partial.file_name().unwrap().to_str().unwrap(),
            format!(".file.bin.ftps-{}.part", std::process::id())
        );
    }
}
