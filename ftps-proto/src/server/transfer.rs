//! Data-channel glue: building a session's [`DataChannel`] and mapping how a request ended to a reply.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::ServerName;

use super::request::{Failure, StorageError};
use crate::codec::ReplyCode;
use crate::data::{DataChannel, DataError, DataOptions, DataProtection, DataTls, ResumptionPolicy};
use crate::tls::ConnectionBinding;

/// How one transfer's data connection is protected, as the session decided.
pub(crate) enum DataRole {
    /// `PROT C`.
    Clear,
    /// The normal case: TLS server with the session-bound config.
    TlsServer {
        config: Arc<rustls::ServerConfig>,
        resumption: ResumptionPolicy,
        /// Which session's ticket the handshake opens (the config's ticketer records it).
        binding: ConnectionBinding,
    },
    /// Site-to-site (`SSCN ON` / `CPSV`): TLS client towards the other server at `peer`.
    TlsClient {
        config: Arc<rustls::ClientConfig>,
        peer: IpAddr,
    },
}

/// The data channel for one data connection in the role the session chose.
pub(crate) fn build_channel(now: Instant, role: DataRole) -> Result<DataChannel, DataError> {
    let mut binding = None;
    let protection = match role {
        DataRole::TlsServer {
            config,
            resumption,
            binding: b,
        } => {
            binding = Some(b);
            DataProtection::Tls(DataTls::Server { config, resumption })
        }
        // The other server is known by address only: the name is its IP (rustls sends no SNI for an IP), and
        // the frontend's site-to-site config does not verify it (see `SessionConfig::site_to_site_tls`).
        DataRole::TlsClient { config, peer } => DataProtection::Tls(DataTls::Client {
            config,
            server_name: ServerName::IpAddress(peer.into()),
        }),
        DataRole::Clear => DataProtection::Clear,
    };
    let mut channel = DataChannel::new(now, protection, DataOptions::default())?;
    if let Some(binding) = binding {
        channel.bind(binding);
    }
    Ok(channel)
}

impl From<&DataError> for Failure {
    /// How a failed data channel is reported back: so frontends never pick reply codes themselves.
    fn from(error: &DataError) -> Self {
        match error {
            DataError::SessionReuseRequired => Failure::ResumptionRefused,
            _ => Failure::DataTls,
        }
    }
}

/// The reply for a failed request (RFC 959 section 4.2, RFC 4217 section 10 for 522).
pub(crate) fn failure_reply(failure: &Failure) -> (ReplyCode, &'static str) {
    match failure {
        Failure::Storage(e) => storage_reply(e),
        Failure::DataConnection => (
            ReplyCode::CANT_OPEN_DATA_CONNECTION,
            "Can't open data connection",
        ),
        Failure::DataTls => (
            ReplyCode::NETWORK_PROTOCOL_NOT_SUPPORTED,
            "TLS negotiation failed on data connection",
        ),
        Failure::ResumptionRefused => (
            ReplyCode::NETWORK_PROTOCOL_NOT_SUPPORTED,
            "Data connection must resume the control connection's TLS session",
        ),
        Failure::Truncated => (
            ReplyCode::TRANSFER_ABORTED,
            "Connection closed; transfer aborted",
        ),
        Failure::Aborted => (ReplyCode::TRANSFER_ABORTED, "Transfer aborted"),
        Failure::Unsupported => (ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER, "Not supported"),
    }
}

/// The reply for a storage error.
pub(crate) fn storage_reply(error: &StorageError) -> (ReplyCode, &'static str) {
    match error {
        StorageError::NotFound => (ReplyCode::FILE_NOT_AVAILABLE, "No such file or directory"),
        StorageError::PermissionDenied => (ReplyCode::FILE_NOT_AVAILABLE, "Permission denied"),
        StorageError::Exists => (ReplyCode::FILE_NOT_AVAILABLE, "File exists"),
        StorageError::NotADirectory => (ReplyCode::FILE_NOT_AVAILABLE, "Not a directory"),
        StorageError::DiskFull => (
            ReplyCode::INSUFFICIENT_STORAGE,
            "Insufficient storage space",
        ),
        StorageError::QuotaExceeded => (ReplyCode::EXCEEDED_STORAGE_ALLOCATION, "Quota exceeded"),
        StorageError::NameTooLong => (ReplyCode::FILE_NAME_NOT_ALLOWED, "File name too long"),
        StorageError::NotEmpty => (ReplyCode::FILE_NOT_AVAILABLE, "Directory not empty"),
        StorageError::Rejected => (
            ReplyCode::FILE_NOT_AVAILABLE,
            "Upload rejected by the server's check; file not stored",
        ),
        StorageError::ReadOnlyView => (
            ReplyCode::FILE_NOT_AVAILABLE,
            "Read-only view: files of the past cannot be changed",
        ),
        StorageError::InvalidViewTime => (
            ReplyCode::SYNTAX_ERROR_ARGUMENTS,
            "Invalid time in path: use RFC 3339 (2026-11-23T10:00:00Z) or a date (2026-11-23)",
        ),
        StorageError::Other(_) => (ReplyCode::LOCAL_ERROR, "Local error in processing"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The time views' refusals: a write in the past is 550 and says why; a TIME that does not parse is the
    /// argument's fault (501).
    #[test]
    fn view_errors_have_their_own_replies() {
        let (code, text) = storage_reply(&StorageError::ReadOnlyView);
        assert_eq!(code, ReplyCode::FILE_NOT_AVAILABLE);
        assert!(text.starts_with("Read-only view"), "{text}");
        let (code, text) = storage_reply(&StorageError::InvalidViewTime);
        assert_eq!(code, ReplyCode::SYNTAX_ERROR_ARGUMENTS);
        assert!(text.contains("RFC 3339"), "{text}");
    }
}
