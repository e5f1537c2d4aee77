//! Translation between this crate's storage types and the engine's request/outcome types, in one place.
//!
//! The engine picks reply codes from what happened ([`ftps_proto::server::StorageError`]); this module only says
//! what happened, in the engine's words.

use ftps_proto::codec::Timeval;
use ftps_proto::server::{self as engine, FileInfo};

use ftps_proto::path::VirtualPath;

use crate::storage::{FileKind, Metadata, Storage, StorageError, StorageErrorKind};

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
        StorageErrorKind::NameTooLong => engine::StorageError::NameTooLong,
        StorageErrorKind::NotEmpty => engine::StorageError::NotEmpty,
        _ => engine::StorageError::Other(error.message().to_owned()),
    }
}

/// A storage failure as the engine's [`engine::Outcome`].
pub(crate) fn failed(error: &StorageError) -> engine::Outcome {
    engine::Outcome::Failed(engine::Failure::Storage(engine_storage_error(error)))
}

/// `MFMT`: sets the time, then reads it back, so the reply says the time the file really has (a filesystem
/// clamps what it cannot store: ext4 keeps nothing before 1901-12-13).
pub(crate) async fn set_modified(
    storage: &dyn Storage,
    path: &VirtualPath,
    time: Timeval,
) -> engine::Outcome {
    if let Err(e) = storage
        .set_modified(path.as_str(), time.to_system_time())
        .await
    {
        return failed(&e);
    }
    match storage.metadata(path.as_str()).await {
        Ok(meta) => engine::Outcome::Metadata(file_info(path.file_name().unwrap_or("/"), &meta)),
        Err(_) => engine::Outcome::Done,
    }
}

/// A listing with the wall-clock time, so `LIST` can show recent files' time of day.
pub(crate) fn listing_now(entries: Vec<FileInfo>) -> engine::Outcome {
    match Timeval::from_system_time(std::time::SystemTime::now()) {
        Some(now) => engine::Outcome::ListingAt { entries, now },
        None => engine::Outcome::Listing(entries),
    }
}

/// File status with the wall-clock time, so `LIST file` can show a recent file's time of day.
pub(crate) fn metadata_now(info: FileInfo) -> engine::Outcome {
    match Timeval::from_system_time(std::time::SystemTime::now()) {
        Some(now) => engine::Outcome::MetadataAt { info, now },
        None => engine::Outcome::Metadata(info),
    }
}

/// File metadata as the engine lists it.
pub(crate) fn file_info(name: &str, metadata: &Metadata) -> FileInfo {
    let kind = match metadata.kind {
        FileKind::Directory => engine::FileKind::Dir,
        FileKind::Symlink => engine::FileKind::Symlink,
        _ => engine::FileKind::File,
    };
    let mut info = FileInfo::new(name, kind, metadata.size);
    info.modified = metadata.modified.and_then(Timeval::from_system_time);
    info.mode = metadata.mode;
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_kinds_map_to_engine_kinds() {
        let e = StorageError::new(StorageErrorKind::DiskFull, "x");
        assert_eq!(engine_storage_error(&e), engine::StorageError::DiskFull);
        let e = StorageError::new(StorageErrorKind::AlreadyExists, "x");
        assert_eq!(engine_storage_error(&e), engine::StorageError::Exists);
        let e = StorageError::new(StorageErrorKind::NameTooLong, "x");
        assert_eq!(engine_storage_error(&e), engine::StorageError::NameTooLong);
        let e = StorageError::new(StorageErrorKind::NotEmpty, "x");
        assert_eq!(engine_storage_error(&e), engine::StorageError::NotEmpty);
    }
}
