//! The `ftps` command line: clap definitions, resolution of URLs and credentials into an
//! [`Invocation`], and [`CliError`] with the exit codes scripts rely on.
//!
//! `main.rs` parses a [`Cli`], calls [`Cli::resolve_with_env`] and hands the
//! [`Invocation`] to the code that drives the client.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use ftps_client_blocking::SiteToSiteProtection;
use ftps_client_blocking::{FtpUrl, Scheme, UrlError};

/// Environment variable consulted for the password when the URL has none.
pub(crate) const PASSWORD_ENV: &str = "FTPS_PASSWORD";

/// `ftps fxp`: the source server's password when its URL has none (before [`PASSWORD_ENV`]).
pub(crate) const PASSWORD_ENV_SRC: &str = "FTPS_PASSWORD_SRC";

/// `ftps fxp`: the destination server's password when its URL has none (before [`PASSWORD_ENV`]).
pub(crate) const PASSWORD_ENV_DST: &str = "FTPS_PASSWORD_DST";

/// `get URL -`: the LOCAL name that means standard output.
pub(crate) const STDOUT_NAME: &str = "-";

/// User name sent when the URL names none (RFC 1635 anonymous FTP).
pub(crate) const ANONYMOUS_USER: &str = "anonymous";

/// Password sent for anonymous logins when neither the URL nor the environment gives one.
/// RFC 1635 §3 asks for an e-mail-like identification; this is the customary stand-in.
pub(crate) const ANONYMOUS_PASSWORD: &str = "anonymous@";

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  usage error (bad arguments, bad URL, no password available)
  2  connection or TLS error (DNS, TCP, certificate, timeout)
  3  login refused by the server
  4  remote file error (not found, permission denied)
  5  transfer failed or truncated
  6  local I/O error
  7  the server refused to protect data connections (PBSZ/PROT P) and clear data was not allowed

Password: taken from the URL, else the FTPS_PASSWORD environment variable, else asked on
the terminal without echo. Without a user in the URL the login is anonymous. For 'fxp',
FTPS_PASSWORD_SRC and FTPS_PASSWORD_DST come before FTPS_PASSWORD for each server.

URLs: ftps://[user[:password]@]host[:port][/path]  explicit FTPS (AUTH TLS), port 21
      ftpsi://...                                   implicit FTPS, port 990
      ftp://...                                     plain FTP, needs --plain
Percent-encode special characters; a path is relative to the login directory unless it
starts with %2F (ftps://host/%2Fetc/motd is /etc/motd).";

/// `ftps`: an FTPS client.
#[derive(Debug, Clone, Parser)]
#[command(name = "ftps", version, about = "FTPS client (explicit and implicit TLS)", after_help = EXIT_CODES_HELP)]
pub(crate) struct Cli {
    /// Connection and output options shared by every command.
    #[command(flatten)]
    pub(crate) options: GlobalOptions,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options before the command name.
#[derive(Debug, Clone, Args)]
pub(crate) struct GlobalOptions {
    /// Do not verify the server certificate (DANGEROUS: allows interception).
    #[arg(long, global = true)]
    pub(crate) insecure: bool,
    /// Use implicit TLS (as ftpsi://) for ftps:// URLs; default port becomes 990.
    #[arg(long, global = true, conflicts_with = "plain")]
    pub(crate) implicit: bool,
    /// Allow plain, unencrypted ftp:// URLs (the password travels in clear).
    #[arg(long, global = true)]
    pub(crate) plain: bool,
    /// Refuse TLS versions other than 1.2.
    #[arg(long, global = true)]
    pub(crate) tls12: bool,
    /// No progress bar and no summary; errors only.
    #[arg(long, short = 'q', global = true)]
    pub(crate) quiet: bool,
    /// Print the protocol exchange on stderr: every command (PASS masked) and reply, and the TLS
    /// version, cipher and resumption of the control connection and of every data connection.
    #[arg(long, short = 'v', global = true)]
    pub(crate) verbose: bool,
    /// Trust the CA certificates in this PEM file instead of the system roots.
    #[arg(long, value_name = "FILE", global = true)]
    pub(crate) ca_file: Option<PathBuf>,
    /// Active mode: the server connects to us (PORT/EPRT) instead of PASV/EPSV.
    #[arg(long, global = true)]
    pub(crate) active: bool,
    /// Give up on any network operation that makes no progress for SECS seconds.
    #[arg(long, value_name = "SECS", global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) timeout: Option<u64>,
    /// Transfer with N sessions at once (put of several files, mirror), each with its own
    /// control connection and TLS session.
    #[arg(long, value_name = "N", global = true, default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) parallel: u16,
    /// JSON on stdout: the entries of `ls`; for get, put and mirror a summary with every file's
    /// path, bytes, seconds and data-connection TLS (version, resumed).
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Try a file up to N more times after a transient failure (network, timeout, 4xx reply),
    /// waiting 0.5 s, doubling up to 8 s; a lost session is reopened, and the transfer continues
    /// from what the other side holds (REST for get; SIZE, then APPE for put).
    #[arg(long, value_name = "N", global = true, default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub(crate) retries: u32,
    /// Read the tree as it was at TIME (RFC 3339 such as 2026-11-23T10:00:00Z, or a date): ls, get,
    /// cat, stat and mirror --download read the server's read-only view /@at/TIME/ (ftps-server with
    /// versions on). The URL's path is then taken from the root of the login.
    #[arg(long, value_name = "TIME", global = true)]
    pub(crate) at: Option<String>,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub(crate) enum Command {
    /// List a remote directory.
    Ls {
        /// Remote directory (or file) URL.
        url: String,
    },
    /// Download a remote file (to standard output with LOCAL '-').
    Get {
        /// Remote file URL.
        url: String,
        /// Local file, or '-' for standard output (default: the remote file name in the
        /// current directory; write ./- for a file named '-').
        local: Option<PathBuf>,
        /// Resume a partial download (REST, RFC 3659 §5); not with '-'.
        #[arg(short = 'c', long = "continue")]
        resume: bool,
    },
    /// Upload local files, all in one session.
    Put {
        /// Local file(s).
        #[arg(value_name = "FILE", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Remote file URL (a URL ending in '/' keeps the local file name; with several
        /// FILEs it must end in '/').
        url: String,
        /// Resume partial uploads by appending the rest (SIZE + REST/APPE).
        #[arg(short = 'c', long = "continue")]
        resume: bool,
    },
    /// Write a remote file to standard output (the same as `get URL -`).
    Cat {
        /// Remote file URL.
        url: String,
    },
    /// Show a remote file's size and modification time (SIZE, MDTM).
    Stat {
        /// Remote file URL.
        url: String,
    },
    /// Delete a remote file.
    Rm {
        /// Remote file URL.
        url: String,
    },
    /// Create a remote directory.
    Mkdir {
        /// Remote directory URL.
        url: String,
    },
    /// Remove an empty remote directory.
    Rmdir {
        /// Remote directory URL.
        url: String,
    },
    /// Rename or move a remote file (RNFR/RNTO).
    Mv {
        /// Remote file URL.
        url: String,
        /// New path on the same server (relative to the login directory unless it starts with '/').
        new_path: String,
    },
    /// Mirror a directory tree (transfers new and changed files; deletes only with --delete).
    Mirror {
        /// Local directory -> remote URL.
        #[arg(long, conflicts_with = "download")]
        upload: bool,
        /// Remote URL -> local directory.
        #[arg(long)]
        download: bool,
        /// Also delete what exists only on the destination (files, then emptied directories).
        #[arg(long)]
        delete: bool,
        /// Print what would be created, transferred and deleted; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Source (a local directory or a URL).
        src: String,
        /// Destination (a URL or a local directory).
        dst: String,
    },
    /// Copy a file from one server to another, server to server (FXP; both must allow it).
    ///
    /// With TLS the data connection is protected (PROT P): one server must offer SSCN or CPSV,
    /// otherwise the copy fails unless --allow-clear is given.
    Fxp {
        /// Source file URL.
        src: String,
        /// Destination file URL (a URL ending in '/' keeps the source file name).
        dst: String,
        /// Fall back to an unprotected data connection (PROT C) when PROT P is not possible.
        #[arg(long, conflicts_with = "clear")]
        allow_clear: bool,
        /// Use an unprotected data connection (PROT C) on both servers.
        #[arg(long)]
        clear: bool,
    },
}

/// Which way `mirror` copies (the planner's type).
pub(crate) use crate::mirror::Direction as MirrorDirection;

/// A command with its URL parsed and its local names decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// List `dir`.
    List {
        /// Remote directory.
        dir: String,
    },
    /// Download `remote` into `local`.
    Get {
        /// Remote file.
        remote: String,
        /// Local file.
        local: PathBuf,
        /// Resume a partial local file.
        resume: bool,
    },
    /// Download `remote` to standard output (`get URL -`): no local file, no resume.
    GetToStdout {
        /// Remote file.
        remote: String,
    },
    /// Upload each local file to its remote file, in order, in one session.
    Put {
        /// (local file, remote file) pairs in the order given; never empty, no remote file twice.
        files: Vec<(PathBuf, String)>,
        /// Append to partial remote files.
        resume: bool,
    },
    /// Delete a remote file.
    Remove {
        /// Remote file.
        remote: String,
    },
    /// Create a remote directory.
    MakeDir {
        /// Remote directory.
        remote: String,
    },
    /// Remove an empty remote directory.
    RemoveDir {
        /// Remote directory.
        remote: String,
    },
    /// Print a remote file's size and modification time.
    Stat {
        /// Remote file.
        remote: String,
    },
    /// Rename `from` to `to`.
    Rename {
        /// Existing remote path.
        from: String,
        /// New remote path.
        to: String,
    },
    /// Mirror a tree.
    Mirror {
        /// Copy direction.
        direction: MirrorDirection,
        /// Local directory root.
        local: PathBuf,
        /// Remote directory root.
        remote: String,
        /// Delete what exists only on the destination.
        delete: bool,
        /// Plan only: print, change nothing.
        dry_run: bool,
    },
    /// Copy `remote` on this (source) server to another server (FXP).
    SiteToSite {
        /// Source file.
        remote: String,
        /// The destination server, its login and file.
        destination: Box<Destination>,
        /// Data-connection protection.
        protection: SiteToSiteProtection,
    },
}

/// The second server of `ftps fxp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    /// Where and how to connect.
    pub(crate) connection: ConnectionOptions,
    /// Credentials.
    pub(crate) login: Login,
    /// Destination file.
    pub(crate) remote: String,
}

/// How to reach and secure the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectionOptions {
    /// Host name or IP address (IPv6 without brackets).
    pub(crate) host: String,
    /// TCP port.
    pub(crate) port: u16,
    /// Explicit, implicit or no TLS.
    pub(crate) scheme: Scheme,
    /// Skip certificate verification.
    pub(crate) insecure: bool,
    /// Only TLS 1.2.
    pub(crate) tls12_only: bool,
    /// Extra trust anchors instead of the system roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// Active data connections.
    pub(crate) active: bool,
    /// Inactivity timeout.
    pub(crate) timeout: Option<Duration>,
    /// Trace the protocol exchange on stderr.
    pub(crate) verbose: bool,
}

/// User name and password. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Login {
    /// User name.
    pub(crate) user: String,
    /// Password.
    pub(crate) password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Everything the client needs to carry out one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    /// Where and how to connect.
    pub(crate) connection: ConnectionOptions,
    /// Credentials.
    pub(crate) login: Login,
    /// What to do once logged in.
    pub(crate) action: Action,
    /// Suppress progress output.
    pub(crate) quiet: bool,
    /// Sessions that transfer at once (1: the one logged-in session).
    pub(crate) parallel: usize,
    /// JSON on stdout: `ls` entries, and a summary of `get`, `put` and `mirror`.
    pub(crate) json: bool,
    /// Further tries of a file after a transient failure.
    pub(crate) retries: u32,
}

impl Cli {
    /// Resolves URLs, local names and credentials.
    ///
    /// `env_password` is the value of [`PASSWORD_ENV`]; `prompt` asks for a password on the
    /// terminal (called only when needed, with the prompt text) and fails when there is no
    /// terminal. Both are parameters so tests need neither an environment nor a terminal.
    #[cfg(test)]
    pub(crate) fn resolve(
        &self,
        env_password: Option<String>,
        prompt: &mut dyn FnMut(&str) -> io::Result<String>,
    ) -> Result<Invocation, CliError> {
        self.resolve_with_env(
            &mut |name| {
                (name == PASSWORD_ENV)
                    .then(|| env_password.clone())
                    .flatten()
            },
            prompt,
        )
    }

    /// Resolves URLs, local names and credentials, with every password variable looked up through `env` (the
    /// name in, its value out): [`PASSWORD_ENV`], and for `fxp` first [`PASSWORD_ENV_SRC`] / [`PASSWORD_ENV_DST`].
    pub(crate) fn resolve_with_env(
        &self,
        env: &mut dyn FnMut(&str) -> Option<String>,
        prompt: &mut dyn FnMut(&str) -> io::Result<String>,
    ) -> Result<Invocation, CliError> {
        if let Command::Fxp {
            src,
            dst,
            allow_clear,
            clear,
        } = &self.command
        {
            return self.resolve_fxp(src, dst, *allow_clear, *clear, env, prompt);
        }
        let (url, mut action) = self.resolve_action()?;
        if let Some(time) = &self.options.at {
            action = at_view(time, action)?;
        }
        let login = resolve_login(&url, env(PASSWORD_ENV), prompt)?;
        Ok(Invocation {
            connection: self.connection_options(&url),
            login,
            action,
            quiet: self.options.quiet,
            parallel: usize::from(self.options.parallel),
            json: self.options.json,
            retries: self.options.retries,
        })
    }

    /// How to connect to the server of `url` under the global options.
    fn connection_options(&self, url: &FtpUrl) -> ConnectionOptions {
        let options = &self.options;
        ConnectionOptions {
            host: url.host().to_owned(),
            port: url.port(),
            scheme: url.scheme(),
            insecure: options.insecure,
            tls12_only: options.tls12,
            ca_file: options.ca_file.clone(),
            active: options.active,
            timeout: options.timeout.map(Duration::from_secs),
            verbose: options.verbose,
        }
    }

    /// `fxp SRC DST`: two servers, each with its own password variable before the shared one.
    fn resolve_fxp(
        &self,
        src: &str,
        dst: &str,
        allow_clear: bool,
        clear: bool,
        env: &mut dyn FnMut(&str) -> Option<String>,
        prompt: &mut dyn FnMut(&str) -> io::Result<String>,
    ) -> Result<Invocation, CliError> {
        let src_url = self.parse_url(src)?;
        let dst_url = self.parse_url(dst)?;
        let remote = non_empty_path(&src_url)?;
        let mut dst_remote = dst_url.path().to_owned();
        // "fxp ftps://a/f ftps://b/dir/" keeps the name, like cp into a directory.
        if dst_remote.is_empty() || dst_remote.ends_with('/') {
            let name = src_url.file_name().ok_or_else(|| {
                CliError::usage(format!("cannot derive a file name from {src_url}"))
            })?;
            dst_remote.push_str(name);
        }
        let src_password = env(PASSWORD_ENV_SRC).or_else(|| env(PASSWORD_ENV));
        let login = resolve_login(&src_url, src_password, prompt)?;
        let dst_password = env(PASSWORD_ENV_DST).or_else(|| env(PASSWORD_ENV));
        let dst_login = resolve_login(&dst_url, dst_password, prompt)?;
        let protection = if clear {
            SiteToSiteProtection::Clear
        } else if allow_clear {
            SiteToSiteProtection::AllowClear
        } else {
            SiteToSiteProtection::RequirePrivate
        };
        Ok(Invocation {
            connection: self.connection_options(&src_url),
            login,
            action: Action::SiteToSite {
                remote,
                destination: Box::new(Destination {
                    connection: self.connection_options(&dst_url),
                    login: dst_login,
                    remote: dst_remote,
                }),
                protection,
            },
            quiet: self.options.quiet,
            parallel: 1,
            json: false,
            retries: 0,
        })
    }

    /// Parses a URL argument under the global options (`--plain`, `--implicit`).
    pub(crate) fn parse_url(&self, text: &str) -> Result<FtpUrl, CliError> {
        let parsed = if self.options.plain {
            FtpUrl::parse_allow_plain(text)
        } else {
            FtpUrl::parse(text)
        };
        let url = parsed.map_err(|e| url_error(text, &e))?;
        if self.options.implicit {
            return match url.scheme() {
                Scheme::Ftps | Scheme::FtpsImplicit => Ok(url.with_scheme(Scheme::FtpsImplicit)),
                Scheme::Ftp => Err(CliError::usage(
                    "--implicit needs an ftps:// or ftpsi:// URL, not ftp://",
                )),
            };
        }
        Ok(url)
    }

    fn resolve_action(&self) -> Result<(FtpUrl, Action), CliError> {
        Ok(match &self.command {
            Command::Ls { url } => {
                let url = self.parse_url(url)?;
                let dir = url.path().to_owned();
                (url, Action::List { dir })
            }
            Command::Get { url, local, resume }
                if local.as_deref() == Some(STDOUT_NAME.as_ref()) =>
            {
                if *resume {
                    return Err(CliError::usage(
                        "-c/--continue cannot resume standard output ('-')",
                    ));
                }
                let url = self.parse_url(url)?;
                let remote = non_empty_path(&url)?;
                (url, Action::GetToStdout { remote })
            }
            Command::Get { url, local, resume } => {
                let url = self.parse_url(url)?;
                let local = match local {
                    Some(local) => local.clone(),
                    None => PathBuf::from(url.file_name().ok_or_else(|| {
                        CliError::usage(format!(
                            "cannot derive a local file name from {url}; give LOCAL"
                        ))
                    })?),
                };
                let remote = url.path().to_owned();
                (
                    url,
                    Action::Get {
                        remote,
                        local,
                        resume: *resume,
                    },
                )
            }
            Command::Put { files, url, resume } => {
                let url = self.parse_url(url)?;
                let files = put_targets(files, &url)?;
                (
                    url,
                    Action::Put {
                        files,
                        resume: *resume,
                    },
                )
            }
            Command::Rm { url } => {
                let url = self.parse_url(url)?;
                let remote = non_empty_path(&url)?;
                (url, Action::Remove { remote })
            }
            Command::Mkdir { url } => {
                let url = self.parse_url(url)?;
                let remote = non_empty_path(&url)?;
                (url, Action::MakeDir { remote })
            }
            Command::Rmdir { url } => {
                let url = self.parse_url(url)?;
                let remote = non_empty_path(&url)?;
                (url, Action::RemoveDir { remote })
            }
            Command::Cat { url } => {
                let url = self.parse_url(url)?;
                let remote = non_empty_path(&url)?;
                (url, Action::GetToStdout { remote })
            }
            Command::Stat { url } => {
                let url = self.parse_url(url)?;
                let remote = non_empty_path(&url)?;
                (url, Action::Stat { remote })
            }
            Command::Mv { url, new_path } => {
                let url = self.parse_url(url)?;
                let from = non_empty_path(&url)?;
                if new_path.is_empty() || new_path.chars().any(char::is_control) {
                    return Err(CliError::usage(
                        "NEWPATH must be non-empty and free of control characters",
                    ));
                }
                (
                    url,
                    Action::Rename {
                        from,
                        to: new_path.clone(),
                    },
                )
            }
            Command::Mirror {
                upload,
                download,
                delete,
                dry_run,
                src,
                dst,
            } => {
                let src_is_url = src.contains("://");
                let dst_is_url = dst.contains("://");
                let direction = match (src_is_url, dst_is_url) {
                    (false, true) if !*download => MirrorDirection::Upload,
                    (true, false) if !*upload => MirrorDirection::Download,
                    (true, true) => {
                        return Err(CliError::usage(
                            "mirror copies between a local directory and a URL, not two URLs",
                        ))
                    }
                    (false, false) => {
                        return Err(CliError::usage("mirror needs a URL as SRC or DST"))
                    }
                    _ => {
                        return Err(CliError::usage(
                            "mirror --upload is LOCAL URL, --download is URL LOCAL",
                        ))
                    }
                };
                let (local, remote_text) = match direction {
                    MirrorDirection::Upload => (src, dst),
                    MirrorDirection::Download => (dst, src),
                };
                let url = self.parse_url(remote_text)?;
                let remote = url.path().to_owned();
                (
                    url,
                    Action::Mirror {
                        direction,
                        local: PathBuf::from(local),
                        remote,
                        delete: *delete,
                        dry_run: *dry_run,
                    },
                )
            }
            Command::Fxp { .. } => {
                return Err(CliError::usage("fxp is resolved with both of its URLs"))
            }
        })
    }
}

/// The path of `path` in the server's read-only view of the tree at `time`: `/@at/<time>/<path>`.
pub(crate) fn at_path(time: &str, path: &str) -> String {
    format!("/@at/{time}/{}", path.trim_start_matches('/'))
}

/// `--at TIME`: the same command on the view of the past; only reading commands have one.
fn at_view(time: &str, action: Action) -> Result<Action, CliError> {
    // The server parses TIME (and answers 501 to a bad one); refuse here only what would change the path.
    if time.is_empty() || time.contains('/') || time.chars().any(char::is_control) {
        return Err(CliError::usage(format!(
            "--at {time:?}: give an RFC 3339 time (2026-11-23T10:00:00Z) or a date (2026-11-23)"
        )));
    }
    Ok(match action {
        Action::List { dir } => Action::List {
            dir: at_path(time, &dir),
        },
        Action::Get {
            remote,
            local,
            resume,
        } => Action::Get {
            remote: at_path(time, &remote),
            local,
            resume,
        },
        Action::GetToStdout { remote } => Action::GetToStdout {
            remote: at_path(time, &remote),
        },
        Action::Stat { remote } => Action::Stat {
            remote: at_path(time, &remote),
        },
        Action::Mirror {
            direction: MirrorDirection::Download,
            local,
            remote,
            delete,
            dry_run,
        } => Action::Mirror {
            direction: MirrorDirection::Download,
            local,
            remote: at_path(time, &remote),
            delete,
            dry_run,
        },
        _ => {
            return Err(CliError::usage(
                "--at reads the past: only ls, get, cat, stat and mirror --download take it",
            ))
        }
    })
}

/// The remote file of each local file for `put FILE... URL`. "put f ftps://h/dir/" keeps the
/// local name, like cp into a directory; several files need such a directory URL, and two
/// files may not land on the same remote name.
fn put_targets(files: &[PathBuf], url: &FtpUrl) -> Result<Vec<(PathBuf, String)>, CliError> {
    let path = url.path();
    let into_dir = path.is_empty() || path.ends_with('/');
    if files.len() > 1 && !into_dir {
        return Err(CliError::usage(format!(
            "several FILEs need a directory URL ending in '/', not {url}"
        )));
    }
    let mut seen = HashSet::with_capacity(files.len());
    let mut targets = Vec::with_capacity(files.len());
    for local in files {
        let mut remote = path.to_owned();
        if into_dir {
            let name = local.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                CliError::usage(format!(
                    "cannot derive a remote file name from {}; name it in the URL",
                    local.display()
                ))
            })?;
            remote.push_str(name);
        }
        if !seen.insert(remote.clone()) {
            return Err(CliError::usage(format!(
                "two FILEs would both be uploaded as {remote}"
            )));
        }
        targets.push((local.clone(), remote));
    }
    Ok(targets)
}

fn non_empty_path(url: &FtpUrl) -> Result<String, CliError> {
    if url.path().is_empty() {
        return Err(CliError::usage(format!("{url} names no remote path")));
    }
    Ok(url.path().to_owned())
}

fn url_error(text: &str, error: &UrlError) -> CliError {
    // Never echo a URL that might hold a password: parse failed, so it cannot be redacted.
    let shown = if text.contains('@') { "URL" } else { text };
    CliError::usage(format!("bad URL {shown}: {error}"))
}

/// Password precedence: URL, then the environment, then the terminal prompt; anonymous
/// when the URL names no user.
fn resolve_login(
    url: &FtpUrl,
    env_password: Option<String>,
    prompt: &mut dyn FnMut(&str) -> io::Result<String>,
) -> Result<Login, CliError> {
    let Some(user) = url.user() else {
        return Ok(Login {
            user: ANONYMOUS_USER.to_owned(),
            password: url
                .password()
                .map(str::to_owned)
                .or(env_password)
                .unwrap_or_else(|| ANONYMOUS_PASSWORD.to_owned()),
        });
    };
    let password = match (url.password(), env_password) {
        (Some(p), _) => p.to_owned(),
        (None, Some(p)) => p,
        (None, None) => {
            let text = format!("Password for {user}@{}: ", url.host());
            prompt(&text).map_err(|e| {
                CliError::usage(format!(
                    "no password: put it in the URL or set {PASSWORD_ENV} (no terminal to ask: {e})"
                ))
            })?
        }
    };
    if password
        .chars()
        .any(|c| c == '\r' || c == '\n' || c == '\0')
    {
        return Err(CliError::usage("the password contains CR, LF or NUL"));
    }
    Ok(Login {
        user: user.to_owned(),
        password,
    })
}

/// The class of a failure, which decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub(crate) enum ErrorKind {
    /// Bad arguments, bad URL, no password available. Exit code 1.
    Usage,
    /// DNS, TCP, TLS handshake, certificate or timeout. Exit code 2.
    Connection,
    /// The server refused the login. Exit code 3.
    Login,
    /// The server refused a file operation (not found, permission). Exit code 4.
    Remote,
    /// A transfer failed or was truncated. Exit code 5.
    Transfer,
    /// Reading or writing a local file failed. Exit code 6.
    LocalIo,
    /// The server refused `PBSZ`/`PROT P` and clear data connections were not allowed. Exit code 7.
    Protection,
}

impl ErrorKind {
    /// The process exit code for this kind, as documented in `ftps --help`.
    #[must_use]
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage => 1,
            ErrorKind::Connection => 2,
            ErrorKind::Login => 3,
            ErrorKind::Remote => 4,
            ErrorKind::Transfer => 5,
            ErrorKind::LocalIo => 6,
            ErrorKind::Protection => 7,
        }
    }
}

/// A failure of an `ftps` command: a kind (the exit code) and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CliError {
    kind: ErrorKind,
    message: String,
    silent: bool,
}

impl CliError {
    /// Creates an error. Line breaks in `message` are replaced by spaces so the report
    /// stays on one line (a server reply may span several, RFC 959 §4.2).
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> CliError {
        let message: String = message.into();
        let message = if message.contains(['\r', '\n']) {
            message
                .split(['\r', '\n'])
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            message
        };
        CliError {
            kind,
            message,
            silent: false,
        }
    }

    /// An error that ends `ftps` with its exit code but without the `ftps: ...` line: for
    /// ends that are no news to the user, such as the reader of standard output going away
    /// (`ftps get URL - | head`).
    pub(crate) fn silent(kind: ErrorKind, message: impl Into<String>) -> CliError {
        CliError {
            silent: true,
            ..CliError::new(kind, message)
        }
    }

    /// Whether `ftps` reports this error on stderr (`false` for [`CliError::silent`]).
    #[must_use]
    pub(crate) fn is_reported(&self) -> bool {
        !self.silent
    }

    /// A usage error (exit code 1).
    pub(crate) fn usage(message: impl Into<String>) -> CliError {
        CliError::new(ErrorKind::Usage, message)
    }

    /// A local I/O error (exit code 6), with the path it concerns.
    pub(crate) fn local_io(path: &std::path::Path, error: &io::Error) -> CliError {
        CliError::new(ErrorKind::LocalIo, format!("{}: {error}", path.display()))
    }

    /// The class of failure.
    #[must_use]
    pub(crate) fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The exit code for this error.
    #[must_use]
    pub(crate) fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// The one-line message, without the `ftps: ` prefix.
    #[must_use]
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("ftps").chain(args.iter().copied())).unwrap()
    }

    fn no_prompt(_: &str) -> io::Result<String> {
        Err(io::Error::new(io::ErrorKind::NotFound, "no tty"))
    }

    fn resolve(args: &[&str]) -> Result<Invocation, CliError> {
        cli(args).resolve(None, &mut no_prompt)
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn at_reads_the_view_of_the_past() {
        let inv = resolve(&["get", "--at", "2026-11-23", "ftps://u:p@h/dir/f.bin"]).unwrap();
        assert_eq!(
            inv.action,
            Action::Get {
                remote: "/@at/2026-11-23/dir/f.bin".into(),
                local: PathBuf::from("f.bin"),
                resume: false
            }
        );
        let inv = resolve(&["--at", "2026-11-23T10:00Z", "ls", "ftps://u:p@h/"]).unwrap();
        assert_eq!(
            inv.action,
            Action::List {
                dir: "/@at/2026-11-23T10:00Z/".into()
            }
        );
        let inv = resolve(&["mirror", "--at", "2026-11-23", "ftps://u:p@h//d/", "out"]).unwrap();
        assert!(
            matches!(inv.action, Action::Mirror { ref remote, .. } if remote == "/@at/2026-11-23/d/")
        );
        for bad in [
            &["put", "--at", "2026-11-23", "x", "ftps://u:p@h/"][..],
            &["mirror", "--at", "2026-11-23", "in", "ftps://u:p@h/"][..],
            &["ls", "--at", "a/b", "ftps://u:p@h/"][..],
        ] {
            assert!(resolve(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn get_with_defaults() {
        let inv = resolve(&["get", "ftps://u:pw@h/dir/file.bin"]).unwrap();
        assert_eq!(
            inv.action,
            Action::Get {
                remote: "dir/file.bin".into(),
                local: PathBuf::from("file.bin"),
                resume: false
            }
        );
        assert_eq!(inv.connection.host, "h");
        assert_eq!(inv.connection.port, 21);
        assert_eq!(inv.connection.scheme, Scheme::Ftps);
        assert_eq!(
            inv.login,
            Login {
                user: "u".into(),
                password: "pw".into()
            }
        );
        assert!(!inv.quiet);
        assert_eq!(inv.connection.timeout, None);
    }

    #[test]
    fn global_options_anywhere() {
        let inv = resolve(&[
            "--insecure",
            "--tls12",
            "get",
            "-c",
            "ftps://u:p@h/f",
            "out",
            "--quiet",
            "--timeout",
            "7",
            "--ca-file",
            "ca.pem",
            "--active",
        ])
        .unwrap();
        assert!(inv.quiet);
        assert!(inv.connection.insecure);
        assert!(inv.connection.tls12_only);
        assert!(inv.connection.active);
        assert_eq!(inv.connection.timeout, Some(Duration::from_secs(7)));
        assert_eq!(inv.connection.ca_file, Some(PathBuf::from("ca.pem")));
        assert_eq!(
            inv.action,
            Action::Get {
                remote: "f".into(),
                local: PathBuf::from("out"),
                resume: true
            }
        );
    }

    #[test]
    fn get_without_file_name_is_usage_error() {
        let err = resolve(&["get", "ftps://u:p@h/"]).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.message(),
            "cannot derive a local file name from ftps://u@h; give LOCAL"
        );
    }

    #[test]
    fn put_into_directory_keeps_name() {
        let inv = resolve(&["put", "-c", "/tmp/x/a.txt", "ftps://u:p@h/up/"]).unwrap();
        assert_eq!(
            inv.action,
            Action::Put {
                files: vec![(PathBuf::from("/tmp/x/a.txt"), "up/a.txt".into())],
                resume: true
            }
        );
        let inv = resolve(&["put", "a.txt", "ftps://u:p@h/b.txt"]).unwrap();
        assert_eq!(
            inv.action,
            Action::Put {
                files: vec![(PathBuf::from("a.txt"), "b.txt".into())],
                resume: false
            }
        );
    }

    #[test]
    fn put_several_files_into_a_directory() {
        let inv = resolve(&[
            "put",
            "a.txt",
            "/tmp/b.bin",
            "../c",
            "ftps://u:p@h/up/",
            "-c",
        ])
        .unwrap();
        assert_eq!(
            inv.action,
            Action::Put {
                files: vec![
                    (PathBuf::from("a.txt"), "up/a.txt".into()),
                    (PathBuf::from("/tmp/b.bin"), "up/b.bin".into()),
                    (PathBuf::from("../c"), "up/c".into()),
                ],
                resume: true
            }
        );
        // The login directory is a directory too.
        let inv = resolve(&["put", "a", "b", "ftps://u:p@h/"]).unwrap();
        assert_eq!(
            inv.action,
            Action::Put {
                files: vec![
                    (PathBuf::from("a"), "a".into()),
                    (PathBuf::from("b"), "b".into())
                ],
                resume: false
            }
        );
        let inv = resolve(&["put", "a", "b", "ftps://u:p@h"]).unwrap();
        assert!(matches!(inv.action, Action::Put { files, .. } if files.len() == 2));
    }

    #[test]
    fn put_several_files_needs_a_directory_url() {
        let err = resolve(&["put", "a", "b", "ftps://u:secret@h/up/file"]).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.message(),
            "several FILEs need a directory URL ending in '/', not ftps://u@h/up/file"
        );
        // Two files with one name would overwrite each other.
        let err = resolve(&["put", "x/a", "y/a", "ftps://u:p@h/up/"]).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(err.message(), "two FILEs would both be uploaded as up/a");
        let err = resolve(&["put", "a", "..", "ftps://u:p@h/up/"]).unwrap_err();
        assert_eq!(
            err.message(),
            "cannot derive a remote file name from ..; name it in the URL"
        );
        // FILE and URL are both required.
        assert!(Cli::try_parse_from(["ftps", "put", "ftps://u:p@h/up/"]).is_err());
        assert!(Cli::try_parse_from(["ftps", "put"]).is_err());
    }

    #[test]
    fn get_to_standard_output() {
        let inv = resolve(&["get", "ftps://u:p@h/dir/file.bin", "-"]).unwrap();
        assert_eq!(
            inv.action,
            Action::GetToStdout {
                remote: "dir/file.bin".into()
            }
        );
        // Options may follow the '-'.
        let inv = resolve(&["get", "ftps://u:p@h/f", "-", "-q"]).unwrap();
        assert!(inv.quiet);
        assert_eq!(inv.action, Action::GetToStdout { remote: "f".into() });
        // A file named '-' is still reachable.
        let inv = resolve(&["get", "ftps://u:p@h/f", "./-"]).unwrap();
        assert_eq!(
            inv.action,
            Action::Get {
                remote: "f".into(),
                local: PathBuf::from("./-"),
                resume: false
            }
        );
    }

    #[test]
    fn get_to_standard_output_usage_errors() {
        for args in [
            ["get", "-c", "ftps://u:p@h/f", "-"],
            ["get", "ftps://u:p@h/f", "-", "--continue"],
        ] {
            let err = resolve(&args).unwrap_err();
            assert_eq!(err.exit_code(), 1);
            assert_eq!(
                err.message(),
                "-c/--continue cannot resume standard output ('-')"
            );
        }
        let err = resolve(&["get", "ftps://u:p@h/", "-"]).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(err.message(), "ftps://u@h names no remote path");
    }

    #[test]
    fn simple_commands() {
        assert_eq!(
            resolve(&["ls", "ftps://u:p@h"]).unwrap().action,
            Action::List { dir: String::new() }
        );
        assert_eq!(
            resolve(&["rm", "ftps://u:p@h/%2Fa%20b"]).unwrap().action,
            Action::Remove {
                remote: "/a b".into()
            }
        );
        assert_eq!(
            resolve(&["mkdir", "ftps://u:p@h/new"]).unwrap().action,
            Action::MakeDir {
                remote: "new".into()
            }
        );
        assert_eq!(
            resolve(&["mv", "ftps://u:p@h/a", "b/c"]).unwrap().action,
            Action::Rename {
                from: "a".into(),
                to: "b/c".into()
            }
        );
        assert_eq!(
            resolve(&["rm", "ftps://u:p@h/"]).unwrap_err().exit_code(),
            1
        );
    }

    #[test]
    fn mirror_direction() {
        let inv = resolve(&["mirror", "site", "ftps://u:p@h/www"]).unwrap();
        assert_eq!(
            inv.action,
            Action::Mirror {
                direction: MirrorDirection::Upload,
                local: PathBuf::from("site"),
                remote: "www".into(),
                delete: false,
                dry_run: false,
            }
        );
        let inv = resolve(&["mirror", "--download", "ftps://u:p@h/www", "site"]).unwrap();
        assert_eq!(
            inv.action,
            Action::Mirror {
                direction: MirrorDirection::Download,
                local: PathBuf::from("site"),
                remote: "www".into(),
                delete: false,
                dry_run: false,
            }
        );
        let err = resolve(&["mirror", "--upload", "ftps://u:p@h/www", "site"]).unwrap_err();
        assert_eq!(
            err.message(),
            "mirror --upload is LOCAL URL, --download is URL LOCAL"
        );
        assert_eq!(
            resolve(&["mirror", "a", "b"]).unwrap_err().message(),
            "mirror needs a URL as SRC or DST"
        );
        assert!(
            Cli::try_parse_from(["ftps", "mirror", "--upload", "--download", "a", "b"]).is_err()
        );
    }

    #[test]
    fn plain_and_implicit() {
        let err = resolve(&["ls", "ftp://h/"]).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.message(),
            "bad URL ftp://h/: plain ftp:// sends the password in clear; pass --plain to allow it"
        );
        let inv = resolve(&["--plain", "ls", "ftp://h/"]).unwrap();
        assert_eq!(inv.connection.scheme, Scheme::Ftp);
        let inv = resolve(&["--implicit", "ls", "ftps://h/"]).unwrap();
        assert_eq!(inv.connection.scheme, Scheme::FtpsImplicit);
        assert_eq!(inv.connection.port, 990);
        let inv = resolve(&["--implicit", "ls", "ftps://h:2990/"]).unwrap();
        assert_eq!(inv.connection.port, 2990);
        assert!(Cli::try_parse_from(["ftps", "--implicit", "--plain", "ls", "ftp://h"]).is_err());
        assert!(Cli::try_parse_from(["ftps", "--timeout", "0", "ls", "ftps://h"]).is_err());
    }

    #[test]
    fn bad_url_message_hides_userinfo() {
        let err = resolve(&["ls", "ftps://u:secret@h:99999/"]).unwrap_err();
        assert_eq!(
            err.message(),
            "bad URL URL: invalid port \"99999\" (expected 1-65535)"
        );
        assert!(!err.to_string().contains("secret"));
    }

    #[test]
    fn password_precedence() {
        let c = cli(&["ls", "ftps://u:url@h/"]);
        let inv = c.resolve(Some("env".into()), &mut no_prompt).unwrap();
        assert_eq!(inv.login.password, "url");

        let c = cli(&["ls", "ftps://u@h/"]);
        let mut asked = Vec::new();
        let mut prompt = |text: &str| {
            asked.push(text.to_owned());
            Ok("typed".to_owned())
        };
        let inv = c.resolve(Some("env".into()), &mut prompt).unwrap();
        assert_eq!(inv.login.password, "env");
        let inv = c.resolve(None, &mut prompt).unwrap();
        assert_eq!(inv.login.password, "typed");
        assert_eq!(asked, vec!["Password for u@h: ".to_owned()]);

        let err = c.resolve(None, &mut no_prompt).unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert_eq!(
            err.message(),
            "no password: put it in the URL or set FTPS_PASSWORD (no terminal to ask: no tty)"
        );
    }

    #[test]
    fn anonymous_without_user() {
        let inv = cli(&["ls", "ftps://h/"])
            .resolve(None, &mut no_prompt)
            .unwrap();
        assert_eq!(
            inv.login,
            Login {
                user: "anonymous".into(),
                password: "anonymous@".into()
            }
        );
    }

    #[test]
    fn password_with_line_break_is_refused() {
        let err = cli(&["ls", "ftps://u@h/"])
            .resolve(Some("a\nb".into()), &mut no_prompt)
            .unwrap_err();
        assert_eq!(err.message(), "the password contains CR, LF or NUL");
    }

    #[test]
    fn login_debug_redacts() {
        let login = Login {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{login:?}").contains("hunter2"));
    }

    #[test]
    fn exit_codes() {
        let codes: Vec<u8> = [
            ErrorKind::Usage,
            ErrorKind::Connection,
            ErrorKind::Login,
            ErrorKind::Remote,
            ErrorKind::Transfer,
            ErrorKind::LocalIo,
        ]
        .into_iter()
        .map(ErrorKind::exit_code)
        .collect();
        assert_eq!(codes, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn messages_are_one_line() {
        let err = CliError::new(ErrorKind::Remote, "550-No such file\r\n550 really\r\n");
        assert_eq!(err.message(), "550-No such file 550 really");
        let err = CliError::local_io(
            std::path::Path::new("/x"),
            &io::Error::new(io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(err.exit_code(), 6);
        assert_eq!(err.to_string(), "/x: gone");
        assert!(err.is_reported());
    }

    #[test]
    fn silent_errors_keep_kind_and_message() {
        let err = CliError::silent(ErrorKind::LocalIo, "stdout: Broken pipe");
        assert!(!err.is_reported());
        assert_eq!(err.exit_code(), 6);
        assert_eq!(err.message(), "stdout: Broken pipe");
    }

    #[test]
    fn fxp_takes_two_urls_and_a_password_variable_per_server() {
        let args = [
            "fxp",
            "ftps://a@src.example/dir/f.bin",
            "ftps://b@dst.example:2121/in/",
        ];
        let mut env = |name: &str| match name {
            PASSWORD_ENV_SRC => Some("src-pw".to_string()),
            PASSWORD_ENV => Some("shared-pw".to_string()),
            _ => None,
        };
        let inv = cli(&args)
            .resolve_with_env(&mut env, &mut no_prompt)
            .unwrap();
        assert_eq!(inv.connection.host, "src.example");
        assert_eq!(inv.login.password, "src-pw");
        let Action::SiteToSite {
            remote,
            destination,
            protection,
        } = inv.action
        else {
            panic!("not fxp");
        };
        assert_eq!(remote, "dir/f.bin");
        assert_eq!(protection, SiteToSiteProtection::RequirePrivate);
        assert_eq!(destination.connection.host, "dst.example");
        assert_eq!(destination.connection.port, 2121);
        assert_eq!(destination.login.user, "b");
        // No FTPS_PASSWORD_DST: the shared variable.
        assert_eq!(destination.login.password, "shared-pw");
        assert_eq!(destination.remote, "in/f.bin");

        let inv = cli(&["fxp", "--allow-clear", "ftps://a:x@h/f", "ftps://b:y@g/f2"])
            .resolve(None, &mut no_prompt)
            .unwrap();
        assert!(matches!(
            inv.action,
            Action::SiteToSite {
                protection: SiteToSiteProtection::AllowClear,
                ..
            }
        ));
        let err = cli(&["fxp", "ftps://a:x@h/", "ftps://b:y@g/f2"])
            .resolve(None, &mut no_prompt)
            .unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(Cli::try_parse_from([
            "ftps",
            "fxp",
            "--clear",
            "--allow-clear",
            "ftps://h/a",
            "ftps://g/b"
        ])
        .is_err());
    }
}
