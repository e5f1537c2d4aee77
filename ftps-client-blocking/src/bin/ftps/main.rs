//! `ftps`: the command-line FTPS client.
//!
//! Parses the arguments, resolves URL and password, then hands over to [`run::run`].
//! Every failure is reported as one line `ftps: ...` on stderr with the exit code
//! documented in `ftps --help` (see [`crate::cli::ErrorKind`]), except the
//! few that need no report ([`crate::cli::CliError::silent`]: the reader of
//! `ftps get URL -` closed the pipe), which only set the exit code.

mod cli;
mod json;
mod mirror;
mod progress;
mod run;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use crate::cli::{Cli, CliError};
use clap::Parser;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return clap_exit(&e),
    };
    // A non-UTF-8 value is treated as absent rather than guessed at.
    let result = cli
        .resolve_with_env(&mut |name| std::env::var(name).ok(), &mut prompt_password)
        .and_then(run::run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

/// Asks on the controlling terminal without echo; fails when there is none.
fn prompt_password(prompt: &str) -> std::io::Result<String> {
    if !std::io::stderr().is_terminal() && !std::io::stdin().is_terminal() {
        // No one to ask: fail fast instead of waiting on a terminal a script never sees.
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "stdin and stderr are not terminals",
        ));
    }
    rpassword::prompt_password(prompt)
}

fn report(error: &CliError) -> ExitCode {
    if error.is_reported() {
        let _ = writeln!(std::io::stderr().lock(), "ftps: {error}");
    }
    ExitCode::from(error.exit_code())
}

/// `--help` and `--version` go to stdout with code 0; every other clap error becomes one
/// line on stderr with exit code 1 (clap's own default would be 2, our "connection error").
fn clap_exit(error: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = error.print();
            ExitCode::from(1)
        }
        _ => {
            let rendered = error.render().to_string();
            let mut lines = rendered.lines().filter(|l| !l.trim().is_empty());
            let first = lines.next().unwrap_or("invalid arguments");
            let mut line = first.strip_prefix("error: ").unwrap_or(first).to_owned();
            // "the following required arguments were not provided:" lists them on the
            // indented lines below; keep them on the one line.
            if line.ends_with(':') {
                for item in lines.take_while(|l| l.starts_with(' ')) {
                    line.push(' ');
                    line.push_str(item.trim());
                }
            }
            report(&CliError::usage(format!("{line} (see 'ftps --help')")))
        }
    }
}
