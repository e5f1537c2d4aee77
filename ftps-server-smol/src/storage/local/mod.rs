//! [`LocalStorage`]: a directory of the local filesystem, confined with cap-std.

use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use blocking::{unblock, Unblock};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, Permissions, PermissionsExt};
use futures_lite::AsyncRead;

use super::{
    components, is_temp_file_name, temp_file_name, BoxFuture, DirEntry, FileKind, Metadata,
    ReadHandle, Storage, StorageError, StorageErrorKind, Upload, WriteMode, FILE_BUFFER_SIZE,
    RESERVED_NAME,
};

/// A file opened for reading: read whole when small, else streamed from a blocking thread.
enum Body {
    Small(Vec<u8>),
    Large(std::fs::File),
}

/// Permission bits `SITE CHMOD` may set: no setuid, setgid or sticky bit from a remote client.
const SETTABLE_MODE_BITS: u32 = 0o777;

/// Files under a local directory, confined to it.
///
/// Every path is resolved relative to an open handle on the root directory with cap-std, which uses
/// `openat2(RESOLVE_BENEATH)` where the kernel has it and a checked component-by-component walk
/// otherwise: `..`, absolute symlinks and symlinks that point outside the root fail instead of
/// escaping, with no check-then-use race. On top of that, virtual paths with `..`, NUL or `\`
/// components are refused before any system call.
///
/// Atomic uploads ([`WriteMode::Create`]) are written in the folder [`RESERVED_NAME`] at the top of the
/// root (created on the first such upload, mode `0700`), on the same filesystem so the commit is a
/// rename. No client path reaches that folder and listings hide it, so a partial upload can be neither
/// read nor moved, and [`cleanup_temp_files`](Self::cleanup_temp_files) touches nothing a client wrote.
///
/// Blocking filesystem calls run on the `blocking` thread pool, never on the async executor; file
/// bodies move through [`FILE_BUFFER_SIZE`] buffers.
#[derive(Clone, Debug)]
pub struct LocalStorage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: Dir,
    /// The folder of upload temporary files, shared with subdir storages of the same root.
    temp: Arc<TempFolder>,
    sync_on_commit: bool,
}

impl Inner {
    fn temp_dir(&self) -> io::Result<Arc<Dir>> {
        self.temp.get_or_create()
    }
}

/// The [`RESERVED_NAME`] folder of a root, created on the first atomic upload (a root nobody uploads to,
/// such as a read-only share, never gets one).
#[derive(Debug)]
struct TempFolder {
    /// The top root the folder lives in.
    top: Dir,
    dir: Mutex<Option<Arc<Dir>>>,
}

impl TempFolder {
    fn new(root: &Dir) -> io::Result<Self> {
        Ok(Self {
            top: root.try_clone()?,
            dir: Mutex::new(None),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Dir>>> {
        self.dir
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The folder, created (mode `0700`) if missing.
    fn get_or_create(&self) -> io::Result<Arc<Dir>> {
        let mut dir = self.lock();
        if let Some(dir) = dir.as_ref() {
            return Ok(Arc::clone(dir));
        }
        let mut builder = cap_std::fs::DirBuilder::new();
        cap_std::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match self.top.create_dir_with(RESERVED_NAME, &builder) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        let opened = Arc::new(self.open_existing()?);
        *dir = Some(Arc::clone(&opened));
        Ok(opened)
    }

    /// The folder if it exists (start-up cleanup creates nothing).
    fn existing(&self) -> io::Result<Option<Arc<Dir>>> {
        if let Some(dir) = self.lock().as_ref() {
            return Ok(Some(Arc::clone(dir)));
        }
        match self.open_existing() {
            Ok(dir) => Ok(Some(Arc::new(dir))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Opens the folder: a real directory, not a symlink to some other folder of the root.
    fn open_existing(&self) -> io::Result<Dir> {
        if self.top.symlink_metadata(RESERVED_NAME)?.is_dir() {
            self.top.open_dir(RESERVED_NAME)
        } else {
            Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{RESERVED_NAME} is not a directory: atomic uploads are refused here"),
            ))
        }
    }
}

impl LocalStorage {
    /// Opens the directory `root` (which must exist) as a storage root. Blocking; call at startup or
    /// login.
    ///
    /// # Errors
    /// When `root` cannot be opened as a directory.
    pub fn open(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = Dir::open_ambient_dir(root, ambient_authority())?;
        let temp = Arc::new(TempFolder::new(&root)?);
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                temp,
                sync_on_commit: false,
            }),
        })
    }

    /// Whether [`Upload::commit`] makes a new file durable before the transfer is reported complete
    /// (default: off here; the server's `[storage] fsync` decides for the binary): the file is synced
    /// before the rename and its directory after it, so a completed upload survives a power loss or
    /// kernel crash. See the README for the measured cost.
    #[must_use]
    pub fn with_sync_on_commit(mut self, sync_on_commit: bool) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.sync_on_commit = sync_on_commit;
            return self;
        }
        let root = match self.inner.root.try_clone() {
            Ok(root) => root,
            // Keep the old settings rather than fail a builder call; cloning a fd only fails
            // when the process is out of descriptors.
            Err(_) => return self,
        };
        Self {
            inner: Arc::new(Inner {
                root,
                temp: Arc::clone(&self.inner.temp),
                sync_on_commit,
            }),
        }
    }

    /// Whether commits are made durable (see [`with_sync_on_commit`](Self::with_sync_on_commit)).
    #[must_use]
    pub fn sync_on_commit(&self) -> bool {
        self.inner.sync_on_commit
    }

    /// A storage rooted at the existing directory `path` (a virtual path) of this one, e.g. a user's
    /// home. The new root is opened through this root, so it cannot escape it either.
    ///
    /// # Errors
    /// When `path` is refused, missing or not a directory.
    pub async fn open_subdir(&self, path: &str) -> Result<Self, StorageError> {
        let rel = relative(path)?;
        let inner = Arc::clone(&self.inner);
        unblock(move || {
            let root = inner.root.open_dir(&rel)?;
            // Uploads below keep using the top root's folder: nothing new appears in the tree.
            Ok(Self {
                inner: Arc::new(Inner {
                    root,
                    temp: Arc::clone(&inner.temp),
                    sync_on_commit: inner.sync_on_commit,
                }),
            })
        })
        .await
    }

    /// Removes leftover upload temporary files (from a crash or kill) last modified before `older_than`:
    /// only files named the way this crate names them ([`super::is_temp_file_name`]), and only in this
    /// root's [`RESERVED_NAME`] folder, where no client can put anything. A client's own file elsewhere
    /// is never touched, whatever its name. The server calls it once at start with its start time, so
    /// uploads in progress in this process are never touched. Returns how many files were removed.
    ///
    /// # Errors
    /// When the folder exists but cannot be read.
    pub async fn cleanup_temp_files(&self, older_than: SystemTime) -> Result<usize, StorageError> {
        let inner = Arc::clone(&self.inner);
        unblock(move || {
            let Some(temp) = inner.temp.existing()? else {
                return Ok(0);
            };
            let mut removed = 0;
            for entry in temp.entries()?.flatten() {
                let name = entry.file_name();
                let ours = name.to_str().is_some_and(is_temp_file_name);
                let Ok(meta) = entry.metadata() else {
                    continue;
                };
                let stale = meta
                    .modified()
                    .is_ok_and(|t| t.into_std() < older_than);
                if ours && meta.is_file() && stale && temp.remove_file(&name).is_ok() {
                    tracing::info!(name = %name.to_string_lossy(), "removed stale upload temp file");
                    removed += 1;
                }
            }
            Ok(removed)
        })
        .await
    }

    /// Runs `op` with the root on the blocking pool, mapping its I/O error.
    fn run<T, F>(&self, op: F) -> BoxFuture<'static, Result<T, StorageError>>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> io::Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            unblock(move || op(&inner))
                .await
                .map_err(StorageError::from)
        })
    }
}

/// The path relative to the root handle for a virtual path (`.` for the root itself).
fn relative(path: &str) -> Result<PathBuf, StorageError> {
    let parts = components(path)?;
    if parts.is_empty() {
        return Ok(PathBuf::from("."));
    }
    Ok(parts.iter().collect())
}

/// The parent directory and the final name of a virtual path that must not be the root.
fn split_parent(path: &str) -> Result<(PathBuf, String), StorageError> {
    let mut parts = components(path)?;
    let Some(name) = parts.pop() else {
        return Err(StorageError::new(
            StorageErrorKind::IsADirectory,
            "the root directory cannot be written",
        ));
    };
    let parent = if parts.is_empty() {
        PathBuf::from(".")
    } else {
        parts.iter().collect()
    };
    Ok((parent, name.to_owned()))
}

fn convert_metadata(meta: &cap_std::fs::Metadata) -> Metadata {
    let file_type = meta.file_type();
    let kind = if file_type.is_file() {
        FileKind::File
    } else if file_type.is_dir() {
        FileKind::Directory
    } else if file_type.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    };
    Metadata {
        kind,
        size: meta.len(),
        modified: meta.modified().ok().map(|t| t.into_std()),
        mode: Some(meta.permissions().mode() & 0o7777),
    }
}

impl Storage for LocalStorage {
    fn metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        let rel = match relative(path) {
            Ok(rel) => rel,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        self.run(move |inner| inner.root.metadata(&rel).map(|m| convert_metadata(&m)))
    }

    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        let rel = match relative(path) {
            Ok(rel) => rel,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        self.run(move |inner| {
            let mut out = Vec::new();
            for entry in inner.root.read_dir(&rel)? {
                let entry = entry?;
                let name = entry.file_name();
                if name == RESERVED_NAME {
                    continue; // the server's upload temp files: never shown
                }
                let Ok(lstat) = entry.metadata() else {
                    continue; // removed while listing
                };
                // Symlinks are shown as what they point to when that is inside the root, and as
                // symlinks otherwise (the target stays unreachable either way).
                let meta = if lstat.file_type().is_symlink() {
                    inner.root.metadata(rel.join(&name)).unwrap_or(lstat)
                } else {
                    lstat
                };
                out.push(DirEntry {
                    name: name.to_string_lossy().into_owned(),
                    metadata: convert_metadata(&meta),
                });
            }
            Ok(out)
        })
    }

    fn open_read<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        let rel = match relative(path) {
            Ok(rel) => rel,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let (file, size) = unblock(move || {
                // Check the kind before opening: opening a FIFO for reading would block a pool
                // thread until some writer appears.
                let before = inner.root.metadata(&rel)?;
                if before.is_dir() {
                    return Err(is_a_directory());
                }
                if !before.is_file() {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "not a regular file",
                    ));
                }
                let file = inner.root.open(&rel)?;
                let meta = file.metadata()?;
                if !meta.is_file() {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        "not a regular file",
                    ));
                }
                let mut file = file.into_std();
                // Past the end is an empty body (the engine answers 554): no seek the kernel refuses
                // (lseek(2) fails beyond the filesystem's largest file, and a REST can say 2^63 - 1).
                file.seek(SeekFrom::Start(offset.min(meta.len())))?;
                // A small file (most of a many-small-files restore) is read in this same blocking job: one
                // thread hop per download instead of two, and no 256 KiB pipe for 4 KiB of data.
                let left = meta.len().saturating_sub(offset);
                let body = if left <= FILE_BUFFER_SIZE as u64 {
                    let mut bytes = Vec::with_capacity(left as usize);
                    io::Read::read_to_end(&mut file, &mut bytes)?;
                    Body::Small(bytes)
                } else {
                    Body::Large(file)
                };
                Ok((body, meta.len()))
            })
            .await?;
            let reader: Box<dyn AsyncRead + Send + Unpin> = match file {
                Body::Small(bytes) => Box::new(futures_lite::io::Cursor::new(bytes)),
                Body::Large(file) => Box::new(Unblock::with_capacity(FILE_BUFFER_SIZE, file)),
            };
            Ok(ReadHandle { reader, size })
        })
    }

    fn open_write<'a>(
        &'a self,
        path: &'a str,
        mode: WriteMode,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        let split = split_parent(path);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let (parent, name) = split?;
            let target = parent.join(&name);
            let task_inner = Arc::clone(&inner);
            let (file, finish) = unblock(move || open_for_write(&task_inner, target, mode)).await?;
            let upload: Box<dyn Upload> = Box::new(LocalUpload::new(file, finish, inner));
            Ok(upload)
        })
    }

    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        let split = split_parent(path);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let (parent, name) = split?;
            unblock(move || inner.root.create_dir(parent.join(name)))
                .await
                .map_err(StorageError::from)
        })
    }

    fn rmdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        let split = split_parent(path);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let (parent, name) = split?;
            unblock(move || inner.root.remove_dir(parent.join(name)))
                .await
                .map_err(StorageError::from)
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        let split = split_parent(path);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let (parent, name) = split?;
            unblock(move || {
                let target = parent.join(name);
                // unlink(2) of a directory reports EISDIR on Linux but EPERM elsewhere.
                if inner.root.symlink_metadata(&target)?.is_dir() {
                    return Err(is_a_directory());
                }
                inner.root.remove_file(target)
            })
            .await
            .map_err(StorageError::from)
        })
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        let from = split_parent(from);
        let to = split_parent(to);
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let (from_parent, from_name) = from?;
            let (to_parent, to_name) = to?;
            unblock(move || {
                inner.root.rename(
                    from_parent.join(from_name),
                    &inner.root,
                    to_parent.join(to_name),
                )
            })
            .await
            .map_err(StorageError::from)
        })
    }

    fn set_modified<'a>(
        &'a self,
        path: &'a str,
        modified: SystemTime,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        let rel = match relative(path) {
            Ok(rel) => rel,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        self.run(move |inner| {
            if !inner.root.metadata(&rel)?.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "only regular files have a settable modification time here",
                ));
            }
            // futimens(2) on a read-only descriptor: the owner may set explicit times.
            inner.root.open(&rel)?.into_std().set_modified(modified)
        })
    }

    fn set_mode<'a>(&'a self, path: &'a str, mode: u32) -> BoxFuture<'a, Result<(), StorageError>> {
        let rel = match relative(path) {
            Ok(rel) => rel,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        self.run(move |inner| {
            inner
                .root
                .set_permissions(&rel, Permissions::from_mode(mode & SETTABLE_MODE_BITS))
        })
    }

    fn keep<'a>(
        &'a self,
        path: &'a str,
        id: u64,
        copy: bool,
    ) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        let rel = match relative(path) {
            Ok(rel) => rel,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        self.run(move |inner| {
            let meta = inner.root.symlink_metadata(&rel)?;
            if !meta.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "only regular files are kept as versions",
                ));
            }
            let store = kept_dir(inner)?;
            let name = kept_name(id);
            if copy {
                inner.root.copy(&rel, &store, &name)?;
            } else {
                // Same filesystem (the reserved folder is inside the root): O(1), and the live file is then
                // replaced or removed by one rename or unlink, so readers never see it missing.
                inner.root.hard_link(&rel, &store, &name)?;
            }
            if inner.sync_on_commit {
                // The kept name must be durable before the change that removes the live one.
                if copy {
                    store.open(&name)?.into_std().sync_all()?;
                }
                store.open(".")?.into_std().sync_all()?;
            }
            Ok(convert_metadata(&meta))
        })
    }

    fn open_kept<'a>(
        &'a self,
        id: u64,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let (body, size) = unblock(move || {
                let store = kept_dir(&inner)?;
                let file = store.open(kept_name(id))?;
                let size = file.metadata()?.len();
                let mut file = file.into_std();
                file.seek(SeekFrom::Start(offset.min(size)))?;
                Ok::<_, io::Error>((file, size))
            })
            .await?;
            let reader: Box<dyn AsyncRead + Send + Unpin> =
                Box::new(Unblock::with_capacity(FILE_BUFFER_SIZE, body));
            Ok(ReadHandle { reader, size })
        })
    }

    fn has_kept(&self, id: u64) -> BoxFuture<'_, Result<bool, StorageError>> {
        self.run(
            move |inner| match kept_dir(inner)?.symlink_metadata(kept_name(id)) {
                Ok(meta) => Ok(meta.is_file()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(e),
            },
        )
    }

    fn kept_is_live<'a>(
        &'a self,
        path: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        let rel = match relative(path) {
            Ok(rel) => rel,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        self.run(move |inner| {
            use cap_std::fs::MetadataExt;
            let kept = kept_dir(inner)?.symlink_metadata(kept_name(id))?;
            Ok(match inner.root.symlink_metadata(&rel) {
                Ok(live) => live.dev() == kept.dev() && live.ino() == kept.ino(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(e),
            })
        })
    }

    fn remove_kept(&self, id: u64) -> BoxFuture<'_, Result<(), StorageError>> {
        self.run(
            move |inner| match kept_dir(inner)?.remove_file(kept_name(id)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        )
    }
}

/// The folder of kept versions, `versions` in the reserved folder (created on first use): inside the root, so
/// on its filesystem, and out of every client's reach.
fn kept_dir(inner: &Inner) -> io::Result<Dir> {
    let temp = inner.temp_dir()?;
    match temp.create_dir(KEPT_DIR) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    temp.open_dir(KEPT_DIR)
}

/// The folder name of kept versions inside the reserved folder (the history log lives there too).
const KEPT_DIR: &str = "versions";

fn kept_name(id: u64) -> String {
    format!("{id:016x}")
}

impl LocalStorage {
    /// Where this root's history log belongs: next to the kept versions, in the reserved folder (created).
    ///
    /// # Errors
    /// When the folder cannot be created or opened.
    pub fn history_log_path(root: &Path) -> io::Result<PathBuf> {
        let dir = root.join(RESERVED_NAME).join(KEPT_DIR);
        // Like the upload folder: the server's own, 0700.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&dir)?;
        Ok(dir.join("history.log"))
    }
}

mod upload;

use self::upload::{is_a_directory, open_for_write, LocalUpload};

#[cfg(test)]
mod tests;
