//! Stand-in for `server::run`, which the lead writes (session.rs, listener.rs, server.rs) on top of
//! the engine's `ServerSession` / `DataChannel`. Delete this file and call `server::run` from
//! `main` when that lands.

use ftps_server_smol::startup::ServerParts;

/// Logs that the server loop does not exist yet and returns, so the binary builds and runs.
pub(crate) fn run(parts: ServerParts) -> Result<(), String> {
    tracing::warn!(
        listeners = parts.config.listeners.len(),
        root = %parts.config.root.display(),
        "server loop not built yet"
    );
    Ok(())
}
