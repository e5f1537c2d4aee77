//! Storage backends: where the files an FTP client sees actually live.
//!
//! The engine speaks in *virtual absolute paths* (`/`, `/a/b`: normalised, never above `/`) and hands
//! them to a [`Storage`] as `&str`. A backend maps them onto whatever it stores, and must stay confined
//! to its root whatever the path says (a raw `..`, a NUL, a symlink pointing outside).
//!
//! The trait is runtime-neutral: futures are boxed [`Send`] futures, file bodies are futures-lite
//! [`AsyncRead`] / [`AsyncWrite`] objects, so the same backend works under smol, async-std or any
//! executor. Errors are a typed [`StorageError`] whose [`StorageErrorKind`] the engine maps to reply
//! codes; this module knows no reply codes.
//!
//! Three backends ship with the crate: [`LocalStorage`] (a directory on the local filesystem, confined
//! with capability-based `openat` semantics), [`S3Storage`] (an S3-compatible bucket) and [`MemoryStorage`]
//! (tests and embedding).

pub mod encrypted;
mod local;
mod memory;
pub mod s3;
mod timeview;
mod versioned;
mod view;

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::SystemTime;

use futures_lite::{AsyncRead, AsyncWrite};

pub use encrypted::{decrypt_file, encrypt_file, DataKey, Encrypted};
pub use local::LocalStorage;
pub use memory::MemoryStorage;
pub use s3::{S3Options, S3Storage};
pub use timeview::{parse_view_time, version_name, TimeViews, AT_DIR, VERSIONS_DIR};
pub use versioned::{Clock, Versioned, VersionsOptions};
pub use view::{ReadOnly, Subtree};

/// A boxed, `Send` future, the return type of every [`Storage`] and [`Upload`] method (so both traits
/// stay object-safe and usable as `Arc<dyn Storage>`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The I/O unit for file bodies: large enough that bulk transfers are not bounded by syscall or
/// thread-hop overhead (DESIGN.md "Frontends": 64 KiB+).
pub const FILE_BUFFER_SIZE: usize = 256 * 1024;

/// The name reserved for the server's own folder of upload temporary files, at the top of a
/// [`LocalStorage`] root. A path with a component of this name is refused everywhere (no client can list,
/// open, rename, delete or create it), and listings never show it, so a partial upload cannot be read or
/// moved, and everything in that folder is the server's own.
pub const RESERVED_NAME: &str = ".ftps-tmp";

/// Prefix of the temporary files that atomic uploads write (in the [`RESERVED_NAME`] folder) before
/// `commit()` renames them.
pub const TEMP_FILE_PREFIX: &str = "upload.";

/// Suffix of the temporary files that atomic uploads write before `commit()` renames them.
pub const TEMP_FILE_SUFFIX: &str = ".tmp";

/// What kind of object a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (only reported by listings; opening follows it, within the root).
    Symlink,
    /// Anything else (device, socket, FIFO).
    Other,
}

/// What a client may learn about a file or directory (SIZE, MDTM, MLST, LIST).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// File, directory, ...
    pub kind: FileKind,
    /// Size in bytes (directories: whatever the backend reports, often the block size).
    pub size: u64,
    /// Last modification time, when the backend knows it.
    pub modified: Option<SystemTime>,
    /// Unix permission bits (`0o755`, without the file-type bits), when the backend has them.
    pub mode: Option<u32>,
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The entry's name within its directory (no `/`). Non-UTF-8 names are converted lossily.
    pub name: String,
    /// The entry's metadata (symlinks are reported as [`FileKind::Symlink`], not followed).
    pub metadata: Metadata,
}

/// A file opened for reading: the body positioned at the requested offset, and the file's total size.
pub struct ReadHandle {
    /// The file body from the requested offset to its end.
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    /// The file's total size in bytes when it was opened (not the remaining length).
    pub size: u64,
}

impl fmt::Debug for ReadHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadHandle")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// How [`Storage::open_write`] treats an existing file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// STOR / STOU: write a new version atomically. The data goes to a temporary file in the same
    /// directory and replaces the target only on [`Upload::commit`]; an interrupted or aborted
    /// upload never clobbers an existing file.
    Create,
    /// STOU: like `Create`, but only when nothing has the name yet ([`StorageErrorKind::AlreadyExists`]
    /// otherwise), checked by an exclusive create, never by a separate lookup that could race. The name is
    /// held by an empty file until [`Upload::commit`] fills it atomically; an abort removes it again.
    CreateNew,
    /// APPE: append to the file, creating it if absent (RFC 959 section 4.1.3). Appended data is
    /// written in place: an interrupted append keeps what arrived.
    Append,
    /// REST n + STOR: resume an interrupted upload. The documented exception to atomicity: the file
    /// (which must exist) is truncated to `n` bytes and written in place from there, because the
    /// point of resuming is to keep the bytes already there (RFC 3659 section 5).
    Resume(u64),
}

/// A file being written. It is an [`AsyncWrite`]; the caller ends it with exactly one of
/// [`commit`](Upload::commit) (the transfer completed: make it visible) or [`abort`](Upload::abort)
/// (it did not). Dropping an upload without either behaves like `abort`, best effort.
pub trait Upload: AsyncWrite + Send + Unpin {
    /// Flushes everything written and makes the upload final (for [`WriteMode::Create`], renames
    /// the temporary file over the target). Returns the number of bytes written through this upload.
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<u64, StorageError>>;

    /// Abandons the upload: for [`WriteMode::Create`] the temporary file is removed and the target is
    /// untouched; for `Append` / `Resume` the bytes already written stay.
    fn abort(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// The storage seen by FTP sessions. Object-safe: use it as `Arc<dyn Storage>`.
///
/// Every path is a virtual absolute path as produced by the engine. Implementations must refuse
/// (with [`StorageErrorKind::InvalidName`] or [`StorageErrorKind::PermissionDenied`]) anything that
/// would leave their root, even if the engine has a bug.
pub trait Storage: Send + Sync {
    /// Metadata of `path`, following symlinks (within the root).
    fn metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Metadata, StorageError>>;

    /// The entries of directory `path` (without `.` and `..`), in no particular order.
    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>>;

    /// Opens regular file `path` for reading from byte `offset` (REST). An offset past the end
    /// yields an empty body.
    fn open_read<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>>;

    /// Opens `path` for writing; see [`WriteMode`] for each mode's atomicity.
    fn open_write<'a>(
        &'a self,
        path: &'a str,
        mode: WriteMode,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>>;

    /// Creates directory `path` (its parent must exist).
    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Removes the empty directory `path`.
    fn rmdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Deletes the file `path` (not a directory).
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Renames `from` to `to` with POSIX `rename` semantics (an existing file at `to` is replaced).
    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Sets the modification time of `path` (MFMT).
    fn set_modified<'a>(
        &'a self,
        path: &'a str,
        modified: SystemTime,
    ) -> BoxFuture<'a, Result<(), StorageError>>;

    /// Sets the Unix permission bits of `path` (`SITE CHMOD`); only the low 12 bits are used.
    fn set_mode<'a>(&'a self, path: &'a str, mode: u32) -> BoxFuture<'a, Result<(), StorageError>>;

    // History: what the read-only time views (`/@at/<TIME>/`, `/@versions/`, see [`TimeViews`]) need. A
    // storage that keeps versions ([`Versioned`], or a backend with native versioning) answers them; the
    // defaults say "unsupported".

    /// Metadata of `path` as it was at `at` (`NotFound` if nothing had that name then).
    fn metadata_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        let _ = (path, at);
        unsupported()
    }

    /// The entries of directory `path` as it was at `at`; `modified` is when each entry's content became
    /// current.
    fn list_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        let _ = (path, at);
        unsupported()
    }

    /// Opens file `path` as it was at `at`, from byte `offset`.
    fn open_read_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        let _ = (path, at, offset);
        unsupported()
    }

    /// Every kept version of file `path`, oldest first, the current content last (if the file exists).
    fn versions<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionInfo>, StorageError>> {
        let _ = path;
        unsupported()
    }

    /// Opens version `id` (from [`versions`](Self::versions)) of file `path` from byte `offset`.
    fn open_version<'a>(
        &'a self,
        path: &'a str,
        id: u64,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        let _ = (path, id, offset);
        unsupported()
    }

    // Kept objects: what a versioning layer ([`Versioned`]) needs from the backend below it. A backend keeps
    // a file's content under an id, out of the tree clients see.

    /// Keeps the current content of regular file `path` as object `id`, leaving the file in place. With
    /// `copy` false the backend may share the content with the live file (a hard link: O(1)), so the caller
    /// must then only ever *replace* or *remove* the live file, never write into it; with `copy` true the
    /// object is an independent copy (for appends and resumed uploads, which write in place). Returns the
    /// file's metadata.
    fn keep<'a>(
        &'a self,
        path: &'a str,
        id: u64,
        copy: bool,
    ) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        let _ = (path, id, copy);
        unsupported()
    }

    /// Opens kept object `id` from byte `offset`.
    fn open_kept<'a>(
        &'a self,
        id: u64,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        let _ = (id, offset);
        unsupported()
    }

    /// Whether kept object `id` exists (crash recovery asks).
    fn has_kept(&self, id: u64) -> BoxFuture<'_, Result<bool, StorageError>> {
        let _ = id;
        unsupported()
    }

    /// Whether kept object `id` still *is* the live file at `path` (shares its storage: a link made by
    /// [`keep`](Self::keep) and not yet followed by the change it was made for). Crash recovery asks, to tell
    /// a change that happened from one that did not. Default: `false`.
    fn kept_is_live<'a>(
        &'a self,
        path: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        let _ = (path, id);
        Box::pin(async { Ok(false) })
    }

    /// Removes kept object `id` (missing is not an error).
    fn remove_kept(&self, id: u64) -> BoxFuture<'_, Result<(), StorageError>> {
        let _ = id;
        unsupported()
    }
}

/// One version of a file in a storage that keeps history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// The version's id, for [`Storage::open_version`] (0 is the current content).
    pub id: u64,
    /// When this content became current.
    pub since: SystemTime,
    /// When it stopped being current (`None`: it is the current content).
    pub until: Option<SystemTime>,
    /// Its size in bytes.
    pub size: u64,
}

fn unsupported<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, StorageError>> {
    Box::pin(async {
        Err(StorageError::new(
            StorageErrorKind::Unsupported,
            "this storage keeps no history",
        ))
    })
}

/// Why a storage operation failed, as a kind the engine can map to a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageErrorKind {
    /// The path (or its parent) does not exist.
    NotFound,
    /// The operation is not allowed (filesystem permissions, read-only filesystem, escape attempt).
    PermissionDenied,
    /// The target exists already (MKD of an existing directory).
    AlreadyExists,
    /// A path component, or the target of a directory operation, is not a directory.
    NotADirectory,
    /// The target is a directory where a file was expected.
    IsADirectory,
    /// No space left on the device (`ENOSPC`).
    DiskFull,
    /// The user's disk quota is exhausted (`EDQUOT`).
    QuotaExceeded,
    /// The name is not acceptable to this backend (`..`, NUL, `\`, the reserved name).
    InvalidName,
    /// A path component is longer than [`MAX_NAME_LEN`] bytes or the path longer than [`MAX_PATH_LEN`]
    /// (`ENAMETOOLONG`).
    NameTooLong,
    /// The directory to remove is not empty (`ENOTEMPTY`).
    NotEmpty,
    /// The upload check refused the file (`[hooks] upload_check`); it was not stored.
    Rejected,
    /// The path is in a read-only view (`/@at/...`, `/@versions/...`): the past cannot be changed.
    ReadOnlyView,
    /// A view path names a time that cannot be read (`/@at/yesterday/`).
    InvalidTime,
    /// The storage does not offer this: history on a backend that keeps none, `MFMT` on object storage (whose
    /// objects have no settable time).
    Unsupported,
    /// Anything else (I/O error, directory not empty, ...).
    Other,
}

/// A failed storage operation: a kind for the engine, and a message for logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct StorageError {
    kind: StorageErrorKind,
    message: String,
}

impl StorageError {
    /// An error of `kind` with a message for logs (never sent to the client verbatim by this crate).
    pub fn new(kind: StorageErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The kind of failure.
    #[must_use]
    pub fn kind(&self) -> StorageErrorKind {
        self.kind
    }

    /// The log message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// Linux `ENAMETOOLONG`.
#[cfg(target_os = "linux")]
const ENAMETOOLONG_LINUX: i32 = 36;
/// Linux `ENOTEMPTY`.
#[cfg(target_os = "linux")]
const ENOTEMPTY_LINUX: i32 = 39;

/// The longest name (one path component) accepted, in bytes: `NAME_MAX` of Linux filesystems.
pub const MAX_NAME_LEN: usize = 255;
/// The longest virtual path accepted, in bytes: `PATH_MAX` of Linux.
pub const MAX_PATH_LEN: usize = 4096;

/// Maps an [`io::ErrorKind`] (which std derives from the OS error code) to a storage error kind.
/// `ENOSPC` -> [`StorageErrorKind::DiskFull`], `EDQUOT` -> [`StorageErrorKind::QuotaExceeded`],
/// `EROFS` -> `PermissionDenied`, `ENAMETOOLONG` -> `NameTooLong`, `ENOTEMPTY` -> `NotEmpty`.
#[must_use]
pub fn error_kind_of(error: &io::Error) -> StorageErrorKind {
    match error.kind() {
        io::ErrorKind::NotFound => StorageErrorKind::NotFound,
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
            StorageErrorKind::PermissionDenied
        }
        io::ErrorKind::AlreadyExists => StorageErrorKind::AlreadyExists,
        io::ErrorKind::NotADirectory => StorageErrorKind::NotADirectory,
        io::ErrorKind::IsADirectory => StorageErrorKind::IsADirectory,
        io::ErrorKind::StorageFull => StorageErrorKind::DiskFull,
        io::ErrorKind::QuotaExceeded => StorageErrorKind::QuotaExceeded,
        io::ErrorKind::DirectoryNotEmpty => StorageErrorKind::NotEmpty,
        io::ErrorKind::Unsupported => StorageErrorKind::Unsupported,
        // `io::ErrorKind::InvalidFilename` is newer than the MSRV: match ENAMETOOLONG directly.
        #[cfg(target_os = "linux")]
        _ if error.raw_os_error() == Some(ENAMETOOLONG_LINUX) => StorageErrorKind::NameTooLong,
        #[cfg(target_os = "linux")]
        _ if error.raw_os_error() == Some(ENOTEMPTY_LINUX) => StorageErrorKind::NotEmpty,
        _ => StorageErrorKind::Other,
    }
}

impl From<io::Error> for StorageError {
    /// Classifies an I/O error, e.g. one returned by an [`Upload`]'s `poll_write` when the disk fills.
    fn from(error: io::Error) -> Self {
        Self::new(error_kind_of(&error), error.to_string())
    }
}

impl From<StorageError> for io::Error {
    fn from(error: StorageError) -> Self {
        let kind = match error.kind {
            StorageErrorKind::NotFound => io::ErrorKind::NotFound,
            StorageErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
            StorageErrorKind::AlreadyExists => io::ErrorKind::AlreadyExists,
            StorageErrorKind::NotADirectory => io::ErrorKind::NotADirectory,
            StorageErrorKind::IsADirectory => io::ErrorKind::IsADirectory,
            StorageErrorKind::DiskFull => io::ErrorKind::StorageFull,
            StorageErrorKind::QuotaExceeded => io::ErrorKind::QuotaExceeded,
            StorageErrorKind::InvalidName => io::ErrorKind::InvalidInput,
            StorageErrorKind::NameTooLong => io::ErrorKind::InvalidInput,
            StorageErrorKind::NotEmpty => io::ErrorKind::DirectoryNotEmpty,
            StorageErrorKind::Rejected => io::ErrorKind::PermissionDenied,
            StorageErrorKind::ReadOnlyView => io::ErrorKind::ReadOnlyFilesystem,
            StorageErrorKind::InvalidTime => io::ErrorKind::InvalidInput,
            StorageErrorKind::Unsupported => io::ErrorKind::Unsupported,
            StorageErrorKind::Other => io::ErrorKind::Other,
        };
        io::Error::new(kind, error.message)
    }
}

/// Splits a virtual path into its components, refusing anything that could name something outside
/// the root or that this crate does not accept in names: `..`, NUL, `\`. Empty and `.` components are
/// skipped, so `/`, `//` and `/.` all name the root (an empty vector).
pub(crate) fn components(path: &str) -> Result<Vec<&str>, StorageError> {
    if path.len() > MAX_PATH_LEN {
        return Err(name_too_long(path));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid_name(path, "`..` component")),
            _ if part.contains('\0') => return Err(invalid_name(path, "NUL byte")),
            // A backslash is a separator to Windows clients and a name byte to Unix: refuse the
            // ambiguity rather than guess.
            _ if part.contains('\\') => return Err(invalid_name(path, "backslash")),
            // The server's temporary files live there: invisible and out of reach for every client.
            RESERVED_NAME => return Err(invalid_name(path, "reserved name")),
            _ if part.len() > MAX_NAME_LEN => return Err(name_too_long(path)),
            _ => parts.push(part),
        }
    }
    Ok(parts)
}

fn name_too_long(path: &str) -> StorageError {
    let shown: String = path.chars().take(64).collect();
    StorageError::new(
        StorageErrorKind::NameTooLong,
        format!("refused path {shown:?}...: name too long"),
    )
}

fn invalid_name(path: &str, why: &str) -> StorageError {
    StorageError::new(
        StorageErrorKind::InvalidName,
        format!("refused path {path:?}: {why}"),
    )
}

/// Whether `name` is exactly the shape of this crate's upload temp files, `upload.<16 hex digits>.tmp`.
/// Start-up cleanup removes only such files, and only inside the [`RESERVED_NAME`] folder.
#[must_use]
pub fn is_temp_file_name(name: &str) -> bool {
    name.strip_prefix(TEMP_FILE_PREFIX)
        .and_then(|rest| rest.strip_suffix(TEMP_FILE_SUFFIX))
        .is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A fresh temporary file name: `upload.<16 hex digits>.tmp`.
pub(crate) fn temp_file_name() -> String {
    let random = random_u64();
    format!("{TEMP_FILE_PREFIX}{random:016x}{TEMP_FILE_SUFFIX}")
}

/// 64 random bits, for names that must not be guessed or collide (exclusive creates still check).
pub(crate) fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        // No OS randomness: fall back to time and a counter; create_new still prevents collisions.
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_of_normal_paths() {
        assert_eq!(components("/").unwrap(), Vec::<&str>::new());
        assert_eq!(components("/a/b").unwrap(), vec!["a", "b"]);
        assert_eq!(components("//a/./b/").unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn components_refuse_escapes_and_odd_bytes() {
        for bad in [
            "/../etc/passwd",
            "/a/../../b",
            "..",
            "/a\0b",
            "/a\\..\\b",
            "/a\\b",
        ] {
            let err = components(bad).unwrap_err();
            assert_eq!(err.kind(), StorageErrorKind::InvalidName, "{bad:?}");
        }
    }

    #[test]
    fn io_error_mapping_uses_os_codes() {
        // Linux errno values: ENOSPC 28, EDQUOT 122, EROFS 30, ENOENT 2, EACCES 13, EEXIST 17,
        // ENOTDIR 20, EISDIR 21, ENAMETOOLONG 36, ENOTEMPTY 39.
        #[cfg(target_os = "linux")]
        for (code, kind) in [
            (28, StorageErrorKind::DiskFull),
            (122, StorageErrorKind::QuotaExceeded),
            (30, StorageErrorKind::PermissionDenied),
            (2, StorageErrorKind::NotFound),
            (13, StorageErrorKind::PermissionDenied),
            (17, StorageErrorKind::AlreadyExists),
            (20, StorageErrorKind::NotADirectory),
            (21, StorageErrorKind::IsADirectory),
            (36, StorageErrorKind::NameTooLong),
            (39, StorageErrorKind::NotEmpty),
        ] {
            let err = StorageError::from(io::Error::from_raw_os_error(code));
            assert_eq!(err.kind(), kind, "errno {code}");
        }
        let err = StorageError::from(io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!(err.kind(), StorageErrorKind::DiskFull);
    }

    #[test]
    fn storage_error_round_trips_through_io_error() {
        let err = StorageError::new(StorageErrorKind::QuotaExceeded, "quota");
        let io_err = io::Error::from(err.clone());
        assert_eq!(StorageError::from(io_err).kind(), err.kind());
    }

    #[test]
    fn temp_names_are_recognisable_and_distinct() {
        let a = temp_file_name();
        let b = temp_file_name();
        assert!(is_temp_file_name(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(
            a.len(),
            TEMP_FILE_PREFIX.len() + 16 + TEMP_FILE_SUFFIX.len()
        );
        assert!(!is_temp_file_name("upload..tmp"));
        assert!(!is_temp_file_name("upload.mine.tmp"));
        assert!(!is_temp_file_name("report.tmp"));
        // The pattern of earlier versions names an ordinary user file now.
        assert!(!is_temp_file_name(".ftps-upload.0123456789abcdef.tmp"));
    }

    #[test]
    fn the_reserved_name_is_refused_at_any_depth() {
        for bad in [
            "/.ftps-tmp",
            "/.ftps-tmp/x",
            "/a/.ftps-tmp",
            "/a/./.ftps-tmp/",
        ] {
            let err = components(bad).unwrap_err();
            assert_eq!(err.kind(), StorageErrorKind::InvalidName, "{bad:?}");
        }
        assert!(components("/.ftps-tmp2").is_ok());
        let long = format!("/{}", "x".repeat(MAX_NAME_LEN + 1));
        assert_eq!(
            components(&long).unwrap_err().kind(),
            StorageErrorKind::NameTooLong
        );
        assert!(components(&format!("/{}", "x".repeat(MAX_NAME_LEN))).is_ok());
        let deep = "/abc".repeat(MAX_PATH_LEN / 4 + 1);
        assert_eq!(
            components(&deep).unwrap_err().kind(),
            StorageErrorKind::NameTooLong
        );
        assert!(components("/.ftps-upload.mine.tmp").is_ok());
    }
}
