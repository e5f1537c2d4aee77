//! The part of `ftps` that drives the client: the seam where the blocking `Client` is wired
//! in. Everything before this point (arguments, URL, password) is resolved by `ftps.rs`.

use ftps_client_blocking::cli::{Cli, CliError, ErrorKind, Invocation};

/// Carries out `invocation` and reports the outcome; the error's kind picks the exit code.
///
/// Progress for transfers: `ftps_client_blocking::progress::Progress::stderr` (silent when
/// `invocation.quiet`). Mirror planning: `ftps_client_blocking::mirror`.
pub(crate) fn run(cli: Cli, invocation: Invocation) -> Result<(), CliError> {
    // ===== PLACEHOLDER: the lead replaces this body once `Client` exists. =====
    let _ = (cli, invocation);
    Err(CliError::new(
        ErrorKind::Connection,
        "client engine not wired yet",
    ))
    // ===== END PLACEHOLDER =====
}
