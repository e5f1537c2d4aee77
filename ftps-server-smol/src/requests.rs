//! Answers the engine's storage requests from any [`Storage`], for every frontend of this crate, whatever
//! its runtime (the smol server, the tokio example).
//!
//! The engine picks reply codes from what happened ([`ftps_proto::server::StorageError`]); this module only says
//! what happened, in the engine's words.

use ftps_proto::codec::Timeval;
use ftps_proto::path::VirtualPath;
use ftps_proto::server::{self as engine, FileInfo, Outcome, RequestKind};

use crate::storage::{
    self, FileKind, Metadata, ReadHandle, Storage, StorageError, StorageErrorKind, Upload,
};

/// A file opened for a transfer; keep it under its request's id until a
/// [`Notice::RunTransfer`](ftps_proto::server::Notice::RunTransfer) names it or a
/// [`Notice::ReleaseFile`](ftps_proto::server::Notice::ReleaseFile) drops it (abort an upload then).
pub enum OpenFile {
    /// For `RETR`.
    Read(ReadHandle),
    /// For `STOR`, `APPE`, `STOU`: commit it only after the channel reported a clean close.
    Write(Box<dyn Upload>),
}

/// What answering a storage request produced.
pub enum Answer {
    /// Pass it to [`ServerSession::complete`](ftps_proto::server::ServerSession::complete).
    Outcome(Outcome),
    /// A file was opened: keep it, and pass the outcome to `complete`.
    Opened(OpenFile, Outcome),
}

/// Whether [`answer`] answers `kind` (metadata, listings, opens, directory and file changes).
pub fn is_storage_request(kind: &RequestKind) -> bool {
    matches!(
        kind,
        RequestKind::Metadata { .. }
            | RequestKind::List { .. }
            | RequestKind::OpenRead { .. }
            | RequestKind::OpenWrite { .. }
            | RequestKind::MakeDir { .. }
            | RequestKind::RemoveDir { .. }
            | RequestKind::Delete { .. }
            | RequestKind::Rename { .. }
            | RequestKind::SetModified { .. }
            | RequestKind::Chmod { .. }
    )
}

/// Answers a storage request from `storage`; any other request is answered
/// [`Failure::Unsupported`](engine::Failure::Unsupported) (see [`is_storage_request`]).
pub async fn answer(storage: &dyn Storage, kind: RequestKind) -> Answer {
    let outcome = match kind {
        RequestKind::Metadata { path } => match storage.metadata(path.as_str()).await {
            Ok(meta) => metadata_now(file_info(path.file_name().unwrap_or("/"), &meta)),
            Err(e) => failed(&e),
        },
        RequestKind::List { path, .. } => match storage.list(path.as_str()).await {
            Ok(entries) => listing_now(
                entries
                    .iter()
                    .map(|entry| file_info(&entry.name, &entry.metadata))
                    .collect(),
            ),
            Err(e) => failed(&e),
        },
        RequestKind::OpenRead { path, offset } => {
            return match storage.open_read(path.as_str(), offset).await {
                Ok(handle) => {
                    let size = Some(handle.size);
                    Answer::Opened(OpenFile::Read(handle), Outcome::Opened { size, path })
                }
                Err(e) => Answer::Outcome(failed(&e)),
            };
        }
        RequestKind::OpenWrite { path, mode, offset } => {
            let mode = match mode {
                engine::WriteMode::Unique => storage::WriteMode::CreateNew,
                engine::WriteMode::Append => storage::WriteMode::Append,
                _ if offset > 0 => storage::WriteMode::Resume(offset),
                _ => storage::WriteMode::Create,
            };
            return match storage.open_write(path.as_str(), mode).await {
                Ok(upload) => {
                    let outcome = Outcome::Opened { size: None, path };
                    Answer::Opened(OpenFile::Write(upload), outcome)
                }
                Err(e) => Answer::Outcome(failed(&e)),
            };
        }
        RequestKind::MakeDir { path } => done_or_failed(storage.mkdir(path.as_str()).await),
        RequestKind::RemoveDir { path } => done_or_failed(storage.rmdir(path.as_str()).await),
        RequestKind::Delete { path } => done_or_failed(storage.delete(path.as_str()).await),
        RequestKind::Rename { from, to } => {
            done_or_failed(storage.rename(from.as_str(), to.as_str()).await)
        }
        RequestKind::SetModified { path, time } => set_modified(storage, &path, time).await,
        RequestKind::Chmod { path, mode } => {
            done_or_failed(storage.set_mode(path.as_str(), mode).await)
        }
        _ => Outcome::Failed(engine::Failure::Unsupported),
    };
    Answer::Outcome(outcome)
}

fn done_or_failed(result: Result<(), StorageError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Done,
        Err(e) => failed(&e),
    }
}

/// The engine's name for a storage failure.
pub fn engine_storage_error(error: &StorageError) -> engine::StorageError {
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
        StorageErrorKind::Rejected => engine::StorageError::Rejected,
        StorageErrorKind::ReadOnlyView => engine::StorageError::ReadOnlyView,
        StorageErrorKind::InvalidTime => engine::StorageError::InvalidViewTime,
        StorageErrorKind::Unsupported => engine::StorageError::PermissionDenied,
        _ => engine::StorageError::Other(error.message().to_owned()),
    }
}

/// A storage failure as the engine's [`engine::Outcome`].
fn failed(error: &StorageError) -> engine::Outcome {
    if error.kind() == StorageErrorKind::Unsupported {
        // "504 Not supported" says more than a 451 local error: the command cannot work on this backend.
        return engine::Outcome::Failed(engine::Failure::Unsupported);
    }
    engine::Outcome::Failed(engine::Failure::Storage(engine_storage_error(error)))
}

/// `MFMT`: sets the time, then reads it back, so the reply says the time the file really has (a filesystem
/// clamps what it cannot store: ext4 keeps nothing before 1901-12-13).
async fn set_modified(storage: &dyn Storage, path: &VirtualPath, time: Timeval) -> engine::Outcome {
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
fn listing_now(entries: Vec<FileInfo>) -> engine::Outcome {
    match Timeval::from_system_time(std::time::SystemTime::now()) {
        Some(now) => engine::Outcome::ListingAt { entries, now },
        None => engine::Outcome::Listing(entries),
    }
}

/// File status with the wall-clock time, so `LIST file` can show a recent file's time of day.
fn metadata_now(info: FileInfo) -> engine::Outcome {
    match Timeval::from_system_time(std::time::SystemTime::now()) {
        Some(now) => engine::Outcome::MetadataAt { info, now },
        None => engine::Outcome::Metadata(info),
    }
}

/// File metadata as the engine lists it.
fn file_info(name: &str, metadata: &Metadata) -> FileInfo {
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
        // A backend that cannot do something at all (MFMT on S3) says so with 504, not a 451 local error.
        let e = StorageError::new(StorageErrorKind::Unsupported, "x");
        assert!(matches!(
            failed(&e),
            engine::Outcome::Failed(engine::Failure::Unsupported)
        ));
    }
}
