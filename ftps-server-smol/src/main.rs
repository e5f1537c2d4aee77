//! `ftps-server`: the FTPS server binary.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ftps_server_smol::auth::{add_user, generate_password, set_password, Permission};
use ftps_server_smol::config::{Config, ListenMode, ListenerConfig, PortRange};
use ftps_server_smol::keys::{rotate, KekSource, Keyring, PENDING_MARKER};
use ftps_server_smol::startup::prepare;
use ftps_server_smol::storage::{decrypt_file, DataKey};
use tracing_subscriber::EnvFilter;

/// FTPS server (FTP over TLS, RFC 4217) built on the ftps-rs engine.
///
/// With no arguments: serves ./ftp-root (created) with explicit FTPS on 127.0.0.1:2121, keeps a
/// generated certificate and users file in ./.ftps-server, and prints the password of the
/// generated user `ftps` once, when the users file is first created.
#[derive(Debug, Parser)]
#[command(name = "ftps-server", version, about)]
struct Cli {
    /// TOML configuration file (see ftps-server.example.toml); command-line flags override it.
    #[arg(long, short = 'c', value_name = "FILE", global = true)]
    config: Option<PathBuf>,

    /// Listen for explicit FTPS (AUTH TLS) on ADDR; repeatable. Replaces the configured listeners.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<SocketAddr>,

    /// Listen for implicit FTPS (TLS from the first byte) on ADDR; repeatable. Replaces the
    /// configured listeners.
    #[arg(long, value_name = "ADDR")]
    implicit: Vec<SocketAddr>,

    /// Directory served to users (created if missing) [default: ./ftp-root].
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,

    /// Port range for passive data connections, e.g. 50000-50100, for every listener.
    #[arg(long, value_name = "A-B")]
    passive_ports: Option<PortRange>,

    /// Address announced in passive replies behind NAT (IP or host name), for every listener.
    #[arg(long, value_name = "HOST")]
    public_address: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (plain HTTP: bind it to loopback or a monitoring network).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Keep every overwritten, deleted or renamed file as a version and serve the read-only views
    /// /@at/TIME/ and /@versions/ (the config file: versions.enabled).
    #[arg(long)]
    versions: bool,

    /// Encrypt users' files at rest, each user's with a data key of its own wrapped by the KEK (the config
    /// file: encryption.enabled; default KEK file STATE_DIR/kek, generated on first start).
    #[arg(long)]
    encrypt: bool,

    /// Directory for the generated certificate and users file [default: ./.ftps-server].
    #[arg(long, value_name = "DIR", global = true)]
    state_dir: Option<PathBuf>,

    /// More logging: -v debug, -vv trace (RUST_LOG, when set, wins).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the users file.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage the keys of encryption at rest (the config file: encryption).
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Re-wrap every user's data key under a new KEK; file data is not touched. Safe to run while the
    /// server runs, and to run again after an interruption (it finishes the pending rotation).
    ///
    /// With the default kek_file, a new KEK is generated and replaces the file. With kek_command, name
    /// the new KEK's source and update the configuration afterwards as printed.
    Rotate {
        /// The new KEK comes from this file (64 hex characters, mode 0600).
        #[arg(long, value_name = "FILE", conflicts_with = "new_kek_command")]
        new_kek_file: Option<PathBuf>,
        /// The new KEK comes from this program and its arguments (no shell); must come last.
        #[arg(long, value_name = "PROG", num_args = 1.., allow_hyphen_values = true)]
        new_kek_command: Vec<String>,
    },
    /// Decrypt a stored file offline (a disaster, a migration) with the KEK and the keys folder, without the
    /// server: FILE as it lies in the storage (a live file or a kept version), the plaintext to OUT or stdout.
    /// Fails, writing nothing of a damaged segment, when the file was changed or belongs to another user.
    Decrypt {
        /// Whose data key encrypted the file (the user who uploaded it).
        #[arg(long, value_name = "NAME")]
        user: String,
        /// The stored, encrypted file.
        file: PathBuf,
        /// Where the plaintext goes [default: standard output].
        #[arg(long, short = 'o', value_name = "OUT")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user. The password comes from FTPS_PASSWORD, else is asked twice on the terminal,
    /// else is generated and printed.
    Add {
        /// User name.
        name: String,
        /// Home directory inside the server root, as a path from the root (e.g. /alice).
        #[arg(long, value_name = "DIR", default_value = "/")]
        home: String,
        /// Download-only user.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        file: UsersFileArg,
    },
    /// Change a user's password (same password sources as `add`).
    Passwd {
        /// User name.
        name: String,
        #[command(flatten)]
        file: UsersFileArg,
    },
}

#[derive(Debug, Args)]
struct UsersFileArg {
    /// Users file [default: the configuration's users_file, else STATE_DIR/users.toml].
    #[arg(long, value_name = "FILE")]
    users_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ftps-server: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` when set; else `info` (`-v` debug, `-vv` trace), without the protocol log of every command and
/// reply unless `[log] protocol = true`: at eight lines a file it was the bulk of a many-files session's log.
fn init_logging(verbose: u8, protocol: bool) {
    let level = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let default = if protocol {
        level.to_owned()
    } else {
        format!("{level},ftps::protocol=off")
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cli: Cli) -> Result<(), String> {
    let mut config = match &cli.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(state_dir) = &cli.state_dir {
        config.state_dir.clone_from(state_dir);
    }
    init_logging(cli.verbose, config.log.protocol);
    match cli.command {
        Some(Command::User(command)) => return user_command(&config, command),
        Some(Command::Keys(command)) => return keys_command(&config, command),
        None => {}
    }
    apply_overrides(&mut config, &cli);
    let parts = prepare(config).map_err(|e| e.to_string())?;
    if let Some(password) = &parts.generated_password {
        // stdout only, never the log: shown once, at the first start.
        let listen = parts
            .config
            .listeners
            .first()
            .map(|l| l.address.to_string())
            .unwrap_or_default();
        println!(
            "Created {} with user `{user}`, password: {password}\n\
             (shown once; change it with `ftps-server user passwd {user}`). Try:\n  \
             curl --ssl-reqd --insecure -u {user}:{password} ftp://{listen}/",
            parts.config.users_file_path().display(),
            user = ftps_server_smol::auth::DEFAULT_USER,
        );
    }
    ftps_server_smol::server::run(parts)
}

fn apply_overrides(config: &mut Config, cli: &Cli) {
    if !cli.listen.is_empty() || !cli.implicit.is_empty() {
        let template = config.listeners.first().cloned().unwrap_or_default();
        let explicit = cli.listen.iter().map(|a| (*a, ListenMode::Explicit));
        let implicit = cli.implicit.iter().map(|a| (*a, ListenMode::Implicit));
        config.listeners = explicit
            .chain(implicit)
            .map(|(address, mode)| ListenerConfig {
                address,
                mode,
                ..template.clone()
            })
            .collect();
    }
    if let Some(root) = &cli.root {
        config.root.clone_from(root);
    }
    if cli.metrics.is_some() {
        config.metrics.listen = cli.metrics;
    }
    if cli.versions {
        config.versions.enabled = true;
    }
    if cli.encrypt {
        config.encryption.enabled = true;
    }
    for listener in &mut config.listeners {
        if let Some(range) = cli.passive_ports {
            listener.passive_ports = range;
        }
        if let Some(host) = &cli.public_address {
            listener.passive_public_address = Some(host.clone());
        }
    }
}

fn user_command(config: &Config, command: UserCommand) -> Result<(), String> {
    let users_path = |file: &UsersFileArg| {
        file.users_file
            .clone()
            .unwrap_or_else(|| config.users_file_path())
    };
    match command {
        UserCommand::Add {
            name,
            home,
            read_only,
            file,
        } => {
            let path = users_path(&file);
            ensure_parent(&path)?;
            let (password, generated) = obtain_password(&name)?;
            let permission = if read_only {
                Permission::ReadOnly
            } else {
                Permission::ReadWrite
            };
            add_user(&path, &name, &password, &home, permission).map_err(|e| e.to_string())?;
            report(&path, &name, generated.then_some(password.as_str()));
        }
        UserCommand::Passwd { name, file } => {
            let path = users_path(&file);
            let (password, generated) = obtain_password(&name)?;
            set_password(&path, &name, &password).map_err(|e| e.to_string())?;
            report(&path, &name, generated.then_some(password.as_str()));
        }
    }
    Ok(())
}

fn keys_command(config: &Config, command: KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Rotate {
            new_kek_file,
            new_kek_command,
        } => {
            config.encryption.validate().map_err(|e| e.to_string())?;
            let new_source = match (new_kek_file, new_kek_command) {
                (Some(file), _) => Some(KekSource::KekFile(file)),
                (None, argv) if !argv.is_empty() => Some(KekSource::KekCommand(argv)),
                (None, _) => None,
            };
            let outcome = rotate(&config.encryption, &config.state_dir, new_source)
                .map_err(|e| format!("keys rotate: {e}"))?;
            let fingerprint: String = outcome
                .fingerprint
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            println!(
                "re-wrapped {} data key(s) ({} already under the new KEK); KEK fingerprint now {fingerprint}",
                outcome.rewrapped, outcome.already
            );
            match outcome.config_change {
                None => println!(
                    "the new KEK is in {}: back it up now (the old one opens nothing any more)",
                    outcome.source
                ),
                Some(line) => println!(
                    "now set in the [encryption] section of the configuration, replacing kek_file / kek_command:\n  \
                     {line}\nuntil then the server reads both KEKs ({} marks the rotation); back up the new KEK",
                    config.state_dir.join(PENDING_MARKER).display()
                ),
            }
            Ok(())
        }
        KeysCommand::Decrypt { user, file, output } => {
            config.encryption.validate().map_err(|e| e.to_string())?;
            let keyring = Keyring::from_config(&config.encryption, &config.state_dir)
                .map_err(|e| format!("keys: {e}"))?;
            let key = keyring
                .existing_data_key(&user)
                .map_err(|e| format!("keys: {e}"))?
                .ok_or_else(|| {
                    format!(
                        "keys: {user:?} has no data key in {}",
                        keyring.dir().display()
                    )
                })?;
            let input =
                std::fs::File::open(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let key = DataKey::from_bytes(key);
            let decrypted = match &output {
                // Into a temporary file first: a damaged file must not leave a plausible partial OUT behind.
                Some(out) => {
                    let mut partial = out.as_os_str().to_owned();
                    partial.push(".partial");
                    let partial = PathBuf::from(partial);
                    let writer = std::fs::File::create(&partial)
                        .map_err(|e| format!("{}: {e}", partial.display()))?;
                    let result = decrypt_file(&key, std::io::BufReader::new(input), writer);
                    match result {
                        Ok(n) => std::fs::rename(&partial, out)
                            .map(|()| n)
                            .map_err(|e| format!("{}: {e}", out.display())),
                        Err(e) => {
                            let _ = std::fs::remove_file(&partial);
                            Err(format!("{}: {e}", file.display()))
                        }
                    }
                }
                None => decrypt_file(
                    &key,
                    std::io::BufReader::new(input),
                    std::io::stdout().lock(),
                )
                .map_err(|e| format!("{}: {e}", file.display())),
            }?;
            eprintln!("decrypted {decrypted} bytes");
            Ok(())
        }
    }
}

fn ensure_parent(path: &Path) -> Result<(), String> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))
        }
        _ => Ok(()),
    }
}

fn report(path: &Path, name: &str, generated: Option<&str>) {
    match generated {
        Some(password) => println!("{}: user {name}, password: {password}", path.display()),
        None => println!("{}: user {name} updated", path.display()),
    }
}

/// The password from `FTPS_PASSWORD`, the terminal (asked twice), or generated; and whether it
/// was generated (so it must be shown).
fn obtain_password(name: &str) -> Result<(String, bool), String> {
    if let Ok(password) = std::env::var("FTPS_PASSWORD") {
        if password.is_empty() {
            return Err("FTPS_PASSWORD is empty".into());
        }
        return Ok((password, false));
    }
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {name}: "))
            .map_err(|e| e.to_string())?;
        if first.is_empty() {
            return Err("empty password".into());
        }
        let second = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
        if first != second {
            return Err("the passwords differ".into());
        }
        return Ok((first, false));
    }
    Ok((generate_password(), true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn overrides_replace_listeners_and_apply_ranges() {
        let cli = Cli::parse_from([
            "ftps-server",
            "--listen",
            "0.0.0.0:21",
            "--implicit",
            "[::]:990",
            "--passive-ports",
            "40000-40010",
            "--public-address",
            "ftp.example.com",
            "--root",
            "/srv",
        ]);
        let mut config = Config::default();
        apply_overrides(&mut config, &cli);
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(config.listeners[0].address, "0.0.0.0:21".parse().unwrap());
        assert_eq!(config.listeners[1].mode, ListenMode::Implicit);
        assert!(config
            .listeners
            .iter()
            .all(|l| l.passive_ports.to_string() == "40000-40010"
                && l.passive_public_address.as_deref() == Some("ftp.example.com")));
        assert_eq!(config.root, PathBuf::from("/srv"));
    }

    #[test]
    fn user_subcommands_parse() {
        let cli = Cli::parse_from([
            "ftps-server",
            "user",
            "add",
            "alice",
            "--read-only",
            "--home",
            "/a",
        ]);
        assert!(matches!(
            cli.command,
            Some(Command::User(UserCommand::Add { ref name, read_only: true, ref home, .. }))
                if name == "alice" && home == "/a"
        ));
        let cli = Cli::parse_from([
            "ftps-server",
            "user",
            "passwd",
            "bob",
            "--users-file",
            "u.toml",
        ]);
        assert!(matches!(
            cli.command,
            Some(Command::User(UserCommand::Passwd { .. }))
        ));
    }

    #[test]
    fn keys_rotate_takes_a_command_with_its_own_flags() {
        let cli = Cli::parse_from([
            "ftps-server",
            "keys",
            "rotate",
            "--new-kek-command",
            "kms",
            "get",
            "--key-id",
            "k2",
        ]);
        assert!(matches!(
            cli.command,
            Some(Command::Keys(KeysCommand::Rotate { ref new_kek_command, new_kek_file: None }))
                if new_kek_command == &["kms", "get", "--key-id", "k2"]
        ));
        let cli = Cli::parse_from(["ftps-server", "--encrypt"]);
        assert!(cli.encrypt);
        let cli = Cli::parse_from(["ftps-server", "keys", "rotate", "--new-kek-file", "k"]);
        assert!(matches!(
            cli.command,
            Some(Command::Keys(KeysCommand::Rotate {
                new_kek_file: Some(_),
                ..
            }))
        ));
    }
}
