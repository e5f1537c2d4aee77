//! Translation between this crate's storage types and the engine's request/outcome types, in one place.
//!
//! The engine picks reply codes from what happened ([`ftps_proto::server::StorageError`]); this module only says
//! what happened, in the engine's words.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ftps_proto::codec::Timeval;
use ftps_proto::server::{self as engine, FileInfo};

use crate::storage::{FileKind, Metadata, StorageError, StorageErrorKind};

/// The engine's name for a storage failure.
pub(crate) fn engine_storage_error(error: &StorageError) -> engine::StorageError {
    match error.kind() {
        StorageErrorKind::NotFound => engine::StorageError::NotFound,
        // A directory where a file was expected, or a name the backend will not store: both "not allowed here".
        StorageErrorKind::PermissionDenied
        | StorageErrorKind::IsADirectory
        | StorageErrorKind::InvalidName => engine::StorageError::PermissionDenied,
        StorageErrorKind::AlreadyExists => engine::StorageError::Exists,
        StorageErrorKind::NotADirectory => engine::StorageError::NotADirectory,
        StorageErrorKind::DiskFull => engine::StorageError::DiskFull,
        StorageErrorKind::QuotaExceeded => engine::StorageError::QuotaExceeded,
        _ => engine::StorageError::Other(error.message().to_owned()),
    }
}

/// A storage failure as the engine's [`engine::Outcome`].
pub(crate) fn failed(error: &StorageError) -> engine::Outcome {
    engine::Outcome::Failed(engine::Failure::Storage(engine_storage_error(error)))
}

/// File metadata as the engine lists it.
pub(crate) fn file_info(name: &str, metadata: &Metadata) -> FileInfo {
    let kind = match metadata.kind {
        FileKind::Directory => engine::FileKind::Dir,
        FileKind::Symlink => engine::FileKind::Symlink,
        _ => engine::FileKind::File,
    };
    let mut info = FileInfo::new(name, kind, metadata.size);
    info.modified = metadata.modified.and_then(timeval_of);
    info.mode = metadata.mode;
    info
}

/// A `SystemTime` as an RFC 3659 time-val (UTC, milliseconds).
pub(crate) fn timeval_of(time: SystemTime) -> Option<Timeval> {
    let millis = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).ok()?,
        Err(before) => -i64::try_from(before.duration().as_millis()).ok()?,
    };
    Timeval::from_unix_millis(millis)
}

/// An RFC 3659 time-val as a `SystemTime`.
pub(crate) fn system_time_of(time: &Timeval) -> SystemTime {
    let millis = time.to_unix_millis();
    let magnitude = Duration::from_millis(millis.unsigned_abs());
    if millis >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_to_the_millisecond() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let tv = timeval_of(t).unwrap();
        assert_eq!(tv.to_string(), "20231114221320.123");
        assert_eq!(system_time_of(&tv), t);
    }

    #[test]
    fn storage_kinds_map_to_engine_kinds() {
        let e = StorageError::new(StorageErrorKind::DiskFull, "x");
        assert_eq!(engine_storage_error(&e), engine::StorageError::DiskFull);
        let e = StorageError::new(StorageErrorKind::AlreadyExists, "x");
        assert_eq!(engine_storage_error(&e), engine::StorageError::Exists);
    }
}
