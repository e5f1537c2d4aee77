//! [`LocalStorage`]: a directory of the local filesystem, confined with cap-std.

use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use blocking::{unblock, Unblock};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions, Permissions, PermissionsExt};
use futures_lite::{AsyncRead, AsyncWrite, AsyncWriteExt};

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

/// Makes a rename into `target`'s directory durable: fsync of that directory (the file itself was
/// synced before the rename).
fn sync_parent(root: &Dir, target: &Path) -> io::Result<()> {
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // `open_dir` gives an `O_PATH` descriptor, which fsync(2) refuses (EBADF): open it for reading.
    root.open(parent)?.into_std().sync_all()
}

fn is_a_directory() -> io::Error {
    io::Error::new(io::ErrorKind::IsADirectory, "is a directory")
}

/// How a [`LocalUpload`] ends.
#[derive(Debug)]
enum Finish {
    /// Atomic create: rename `temp` (a name in the reserved folder) over `target` on commit, remove
    /// `temp` otherwise; for [`WriteMode::CreateNew`], `holder` is the inode of the empty file that holds
    /// the name, removed on abort if it is still that file.
    Rename {
        temp: PathBuf,
        target: PathBuf,
        holder: Option<u64>,
    },
    /// Append / resume: the data is already in place.
    InPlace,
}

fn open_for_write(
    inner: &Inner,
    target: PathBuf,
    mode: WriteMode,
) -> io::Result<(std::fs::File, Finish)> {
    let existing = match inner.root.metadata(&target) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    if existing.as_ref().is_some_and(|m| m.is_dir()) {
        return Err(is_a_directory());
    }
    match mode {
        WriteMode::Create | WriteMode::CreateNew => {
            let temp_dir = inner.temp_dir()?;
            let holder = if mode == WriteMode::CreateNew {
                let file = inner
                    .root
                    .open_with(&target, OpenOptions::new().write(true).create_new(true))?;
                Some(std::os::unix::fs::MetadataExt::ino(
                    &file.into_std().metadata()?,
                ))
            } else {
                None
            };
            let temp = PathBuf::from(temp_file_name());
            let file = temp_dir
                .open_with(&temp, OpenOptions::new().write(true).create_new(true))?
                .into_std();
            // A new version keeps the permissions of the file it replaces.
            if let Some(meta) = existing {
                let mode = meta.permissions().mode() & 0o7777;
                let std_perms = std::os::unix::fs::PermissionsExt::from_mode(mode);
                if let Err(e) = file.set_permissions(std_perms) {
                    drop(file);
                    let _ = temp_dir.remove_file(&temp);
                    return Err(e);
                }
            }
            Ok((
                file,
                Finish::Rename {
                    temp,
                    target,
                    holder,
                },
            ))
        }
        WriteMode::Append => {
            let file = inner
                .root
                .open_with(&target, OpenOptions::new().append(true).create(true))?
                .into_std();
            Ok((file, Finish::InPlace))
        }
        WriteMode::Resume(offset) => {
            let mut file = inner
                .root
                .open_with(&target, OpenOptions::new().write(true))?
                .into_std();
            file.set_len(offset)?;
            file.seek(SeekFrom::Start(offset))?;
            Ok((file, Finish::InPlace))
        }
    }
}

/// An upload to a [`LocalStorage`].
///
/// The first [`FILE_BUFFER_SIZE`] bytes are kept in memory. A body that fits (most files of a many-small-files
/// workload) is then written, closed and renamed by one blocking-pool job at commit: each job is a round trip
/// to another thread, and with a background writer a 4 KiB upload took four (open, write, drain, rename)
/// instead of two. A longer body hands the file and the buffered head to a background writer and streams.
struct LocalUpload {
    /// Bytes not yet given to the file: everything so far while buffering; the part of the head the
    /// background writer has not taken yet while streaming.
    head: Vec<u8>,
    /// How much of `head` the background writer already took.
    head_sent: usize,
    /// The file while buffering; `None` once streaming, committed or aborted.
    file: Option<std::fs::File>,
    /// The background writer once streaming; `None` before, and once commit or abort took it.
    writer: Option<Unblock<std::fs::File>>,
    written: u64,
    /// `None` once the upload was committed or cleaned up.
    finish: Option<Finish>,
    inner: Arc<Inner>,
}

fn finished() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "upload already finished")
}

impl LocalUpload {
    fn new(file: std::fs::File, finish: Finish, inner: Arc<Inner>) -> Self {
        Self {
            head: Vec::new(),
            head_sent: 0,
            file: Some(file),
            writer: None,
            written: 0,
            finish: Some(finish),
            inner,
        }
    }

    /// Hands what is left of the head to the background writer.
    fn poll_send_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(writer) = self.writer.as_mut() else {
            return Poll::Ready(Err(finished()));
        };
        while self.head_sent < self.head.len() {
            let rest = self.head.get(self.head_sent..).unwrap_or_default();
            match Pin::new(&mut *writer).poll_write(cx, rest) {
                // A failed background write (see `poll_write`): flushing returns its own error.
                Poll::Ready(Ok(0)) => {
                    return match Pin::new(writer).poll_flush(cx) {
                        Poll::Ready(Ok(())) => Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                        other => other,
                    }
                }
                Poll::Ready(Ok(n)) => self.head_sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.head = Vec::new();
        self.head_sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for LocalUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.writer.is_none() {
            if this.file.is_none() {
                return Poll::Ready(Err(finished()));
            }
            if this.head.len() + buf.len() <= FILE_BUFFER_SIZE {
                this.head.extend_from_slice(buf);
                this.written += buf.len() as u64;
                return Poll::Ready(Ok(buf.len()));
            }
            // Too long to buffer: stream from here on.
            this.writer = this
                .file
                .take()
                .map(|file| Unblock::with_capacity(FILE_BUFFER_SIZE, file));
        }
        match this.poll_send_head(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
        let Some(writer) = this.writer.as_mut() else {
            return Poll::Ready(Err(finished()));
        };
        let result = Pin::new(&mut *writer).poll_write(cx, buf);
        match result {
            // `Unblock` reports a failed background write as a closed pipe: `Ok(0)`, which `write_all` turns
            // into `WriteZero` (answered 451). Flushing returns the write's own error, so a full disk is ENOSPC
            // and answered 452 (RFC 959 "insufficient storage space").
            Poll::Ready(Ok(0)) if !buf.is_empty() => match Pin::new(writer).poll_flush(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => Poll::Ready(Ok(0)),
                Poll::Pending => Poll::Pending,
            },
            Poll::Ready(Ok(n)) => {
                this.written += n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.writer.is_none() {
            // Buffering: the head goes to the file at commit.
            return Poll::Ready(if this.file.is_some() {
                Ok(())
            } else {
                Err(finished())
            });
        }
        match this.poll_send_head(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match this.writer.as_mut() {
            Some(writer) => Pin::new(writer).poll_flush(cx),
            None => Poll::Ready(Err(finished())),
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.writer.is_none() {
            return Poll::Ready(Ok(()));
        }
        match this.poll_send_head(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        match this.writer.as_mut() {
            Some(writer) => Pin::new(writer).poll_close(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl LocalUpload {
    async fn finish_commit(&mut self) -> io::Result<u64> {
        let (file, head) = if self.writer.is_some() {
            // `Unblock::into_inner` swallows write errors: flush first (the head too) so ENOSPC surfaces here.
            self.flush().await?;
            let writer = self.writer.take().ok_or_else(finished)?;
            (writer.into_inner().await, Vec::new())
        } else {
            let file = self.file.take().ok_or_else(finished)?;
            (file, std::mem::take(&mut self.head))
        };
        let sync = self.inner.sync_on_commit;
        let finish = self.finish.take();
        let inner = Arc::clone(&self.inner);
        // One job: the buffered head (a whole small file), the optional fsync, and the rename.
        unblock(move || {
            let mut file = file;
            let written = io::Write::write_all(&mut file, &head);
            let synced = written.and_then(|()| if sync { file.sync_all() } else { Ok(()) });
            drop(file);
            match finish {
                Some(Finish::Rename { temp, target, .. }) => {
                    let temp_dir = inner.temp_dir()?;
                    let renamed = synced
                        .and_then(|()| temp_dir.rename(&temp, &inner.root, &target))
                        .and_then(|()| {
                            if sync {
                                sync_parent(&inner.root, &target)
                            } else {
                                Ok(())
                            }
                        });
                    if renamed.is_err() {
                        let _ = temp_dir.remove_file(&temp);
                    }
                    renamed
                }
                Some(Finish::InPlace) | None => synced,
            }
        })
        .await?;
        Ok(self.written)
    }

    async fn finish_abort(&mut self) {
        if let Some(writer) = self.writer.take() {
            // Let in-flight writes land (append/resume keep them), ignoring errors.
            let file = writer.into_inner().await;
            drop(file);
        }
        if let Some(job) = self.discard_job() {
            let _ = unblock(job).await;
        }
    }

    /// The blocking-pool work that ends an upload without a commit (`None` when there is none): a new file's
    /// temp file is removed; an append or resume keeps what arrived, so a buffered head is written.
    fn discard_job(&mut self) -> Option<impl FnOnce() -> io::Result<()> + Send + 'static> {
        let finish = self.finish.take()?;
        let file = self.file.take();
        let head = std::mem::take(&mut self.head);
        if matches!(finish, Finish::InPlace) && (file.is_none() || head.is_empty()) {
            return None;
        }
        let inner = Arc::clone(&self.inner);
        Some(move || match (finish, file) {
            (
                Finish::Rename {
                    temp,
                    target,
                    holder,
                },
                file,
            ) => {
                drop(file);
                if let Some(ino) = holder {
                    // Only the empty file this upload created: never what someone put there since.
                    let ours = inner.root.symlink_metadata(&target).is_ok_and(|m| {
                        m.is_file() && m.len() == 0 && cap_std::fs::MetadataExt::ino(&m) == ino
                    });
                    if ours {
                        let _ = inner.root.remove_file(&target);
                    }
                }
                inner.temp_dir()?.remove_file(temp)
            }
            (Finish::InPlace, Some(mut file)) => io::Write::write_all(&mut file, &head),
            (Finish::InPlace, None) => Ok(()),
        })
    }
}

impl Upload for LocalUpload {
    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, StorageError>> {
        Box::pin(async move {
            match self.finish_commit().await {
                Ok(written) => Ok(written),
                Err(e) => {
                    self.finish_abort().await;
                    Err(StorageError::from(e))
                }
            }
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.finish_abort().await })
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // Dropped mid-transfer (task cancelled): the same end as `abort`, off the executor and not awaited.
        if let Some(job) = self.discard_job() {
            unblock(job).detach();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::AsyncReadExt;

    fn setup() -> (tempfile::TempDir, LocalStorage) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        let storage = LocalStorage::open(dir.path().join("root")).unwrap();
        (dir, storage)
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// What is in the root on disk, apart from the reserved folder.
    fn root_names(dir: &tempfile::TempDir) -> Vec<String> {
        let mut names = names_in(&dir.path().join("root"));
        names.retain(|n| n != RESERVED_NAME);
        names
    }

    /// The upload temp files on disk.
    fn temp_names(dir: &tempfile::TempDir) -> Vec<String> {
        names_in(&dir.path().join("root").join(RESERVED_NAME))
    }

    async fn write_all(storage: &LocalStorage, path: &str, mode: WriteMode, data: &[u8]) -> u64 {
        let mut up = storage.open_write(path, mode).await.unwrap();
        up.write_all(data).await.unwrap();
        up.commit().await.unwrap()
    }

    async fn read_all(storage: &LocalStorage, path: &str, offset: u64) -> (Vec<u8>, u64) {
        let mut handle = storage.open_read(path, offset).await.unwrap();
        let mut out = Vec::new();
        handle.reader.read_to_end(&mut out).await.unwrap();
        (out, handle.size)
    }

    #[test]
    fn create_commit_then_read_at_offset() {
        let (_dir, s) = setup();
        block_on(async {
            assert_eq!(
                write_all(&s, "/a.txt", WriteMode::Create, b"hello world").await,
                11
            );
            assert_eq!(
                read_all(&s, "/a.txt", 0).await,
                (b"hello world".to_vec(), 11)
            );
            assert_eq!(read_all(&s, "/a.txt", 6).await, (b"world".to_vec(), 11));
            assert_eq!(read_all(&s, "/a.txt", 100).await, (Vec::new(), 11));
            assert_eq!(
                read_all(&s, "/a.txt", i64::MAX as u64).await,
                (Vec::new(), 11)
            );
            let meta = s.metadata("/a.txt").await.unwrap();
            assert_eq!((meta.kind, meta.size), (FileKind::File, 11));
        });
    }

    #[test]
    fn large_body_round_trips() {
        let (_dir, s) = setup();
        let data: Vec<u8> = (0..(3 * FILE_BUFFER_SIZE + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        block_on(async {
            let n = write_all(&s, "/big", WriteMode::Create, &data).await;
            assert_eq!(n, data.len() as u64);
            assert_eq!(read_all(&s, "/big", 0).await.0, data);
        });
    }

    #[test]
    fn aborted_create_leaves_old_file_and_no_temp() {
        let (dir, s) = setup();
        block_on(async {
            write_all(&s, "/f", WriteMode::Create, b"old").await;
            let mut up = s.open_write("/f", WriteMode::Create).await.unwrap();
            up.write_all(b"new partial").await.unwrap();
            up.flush().await.unwrap();
            // The temp file exists while the upload runs, in the reserved folder only, and the
            // target is still the old one.
            assert_eq!(root_names(&dir), vec!["f".to_owned()]);
            let temps = temp_names(&dir);
            assert!(
                temps.len() == 1 && is_temp_file_name(&temps[0]),
                "{temps:?}"
            );
            assert_eq!(read_all(&s, "/f", 0).await.0, b"old");
            up.abort().await;
            assert_eq!(root_names(&dir), vec!["f".to_owned()]);
            assert!(temp_names(&dir).is_empty());
            assert_eq!(read_all(&s, "/f", 0).await.0, b"old");
        });
    }

    #[test]
    fn dropped_create_removes_temp_eventually() {
        let (dir, s) = setup();
        block_on(async {
            let mut up = s.open_write("/g", WriteMode::Create).await.unwrap();
            up.write_all(b"x").await.unwrap();
            drop(up);
            for _ in 0..200 {
                if temp_names(&dir).is_empty() {
                    assert!(root_names(&dir).is_empty());
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            panic!("temp file left: {:?}", temp_names(&dir));
        });
    }

    #[test]
    fn create_replaces_and_keeps_mode() {
        let (dir, s) = setup();
        block_on(async {
            write_all(&s, "/f", WriteMode::Create, b"one").await;
            s.set_mode("/f", 0o640).await.unwrap();
            write_all(&s, "/f", WriteMode::Create, b"two!").await;
            assert_eq!(read_all(&s, "/f", 0).await.0, b"two!");
            assert_eq!(s.metadata("/f").await.unwrap().mode, Some(0o640));
            assert_eq!(root_names(&dir), vec!["f".to_owned()]);
        });
    }

    #[test]
    fn create_new_takes_only_a_free_name_and_an_abort_frees_it() {
        let (dir, s) = setup();
        block_on(async {
            write_all(&s, "/f", WriteMode::Create, b"old").await;
            let err = s
                .open_write("/f", WriteMode::CreateNew)
                .await
                .err()
                .unwrap();
            assert_eq!(err.kind(), StorageErrorKind::AlreadyExists);
            assert_eq!(read_all(&s, "/f", 0).await.0, b"old");
            // The name is held (empty) while the upload runs, and freed by an abort.
            let mut up = s.open_write("/g", WriteMode::CreateNew).await.unwrap();
            up.write_all(b"partial").await.unwrap();
            assert_eq!(s.metadata("/g").await.unwrap().size, 0);
            up.abort().await;
            assert_eq!(
                s.metadata("/g").await.unwrap_err().kind(),
                StorageErrorKind::NotFound
            );
            assert_eq!(write_all(&s, "/g", WriteMode::CreateNew, b"whole").await, 5);
            assert_eq!(read_all(&s, "/g", 0).await.0, b"whole");
        });
        assert!(temp_names(&dir).is_empty());
    }

    #[test]
    fn append_and_resume_write_in_place() {
        let (_dir, s) = setup();
        block_on(async {
            write_all(&s, "/f", WriteMode::Append, b"abc").await;
            write_all(&s, "/f", WriteMode::Append, b"def").await;
            assert_eq!(read_all(&s, "/f", 0).await.0, b"abcdef");
            write_all(&s, "/f", WriteMode::Resume(4), b"XYZW").await;
            assert_eq!(read_all(&s, "/f", 0).await.0, b"abcdXYZW");
            // An aborted append keeps what arrived.
            let mut up = s.open_write("/f", WriteMode::Append).await.unwrap();
            up.write_all(b"!!").await.unwrap();
            up.abort().await;
            assert_eq!(read_all(&s, "/f", 0).await.0, b"abcdXYZW!!");
            let err = s
                .open_write("/missing", WriteMode::Resume(3))
                .await
                .err()
                .unwrap();
            assert_eq!(err.kind(), StorageErrorKind::NotFound);
        });
    }

    #[test]
    fn bodies_around_the_buffered_head_round_trip() {
        let (_dir, s) = setup();
        block_on(async {
            // All in the head; exactly the head; one byte more (streams, the head first); written in pieces.
            for len in [
                0,
                1,
                FILE_BUFFER_SIZE - 1,
                FILE_BUFFER_SIZE,
                FILE_BUFFER_SIZE + 1,
            ] {
                let data: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
                let mut up = s.open_write("/b", WriteMode::Create).await.unwrap();
                for piece in data.chunks(7_777) {
                    up.write_all(piece).await.unwrap();
                }
                assert_eq!(up.commit().await.unwrap(), len as u64);
                assert_eq!(read_all(&s, "/b", 0).await.0, data, "length {len}");
            }
        });
    }

    #[test]
    fn a_dropped_append_still_lands_what_arrived() {
        let (dir, s) = setup();
        block_on(async {
            write_all(&s, "/f", WriteMode::Append, b"abc").await;
            let mut up = s.open_write("/f", WriteMode::Append).await.unwrap();
            up.write_all(b"def").await.unwrap();
            // The transfer task was cancelled: no commit, no abort.
            drop(up);
        });
        let path = dir.path().join("root/f");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::fs::read(&path).unwrap() != b"abcdef" {
            assert!(
                std::time::Instant::now() < deadline,
                "the buffered bytes never landed"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn directories_and_listing() {
        let (_dir, s) = setup();
        block_on(async {
            s.mkdir("/d").await.unwrap();
            assert_eq!(
                s.mkdir("/d").await.unwrap_err().kind(),
                StorageErrorKind::AlreadyExists
            );
            assert_eq!(
                s.mkdir("/x/y").await.unwrap_err().kind(),
                StorageErrorKind::NotFound
            );
            write_all(&s, "/d/f", WriteMode::Create, b"12345").await;
            let mut list = s.list("/d").await.unwrap();
            assert_eq!(list.len(), 1);
            let entry = list.remove(0);
            assert_eq!((entry.name.as_str(), entry.metadata.size), ("f", 5));
            assert_eq!(entry.metadata.kind, FileKind::File);
            let root = s.list("/").await.unwrap();
            assert_eq!(root.len(), 1);
            assert_eq!(root[0].metadata.kind, FileKind::Directory);
            assert_eq!(
                s.rmdir("/d").await.unwrap_err().kind(),
                StorageErrorKind::NotEmpty
            );
            assert_eq!(
                s.delete("/d").await.unwrap_err().kind(),
                StorageErrorKind::IsADirectory
            );
            assert_eq!(
                s.open_read("/d", 0).await.err().unwrap().kind(),
                StorageErrorKind::IsADirectory
            );
            assert_eq!(
                s.open_write("/d", WriteMode::Create)
                    .await
                    .err()
                    .unwrap()
                    .kind(),
                StorageErrorKind::IsADirectory
            );
            s.rename("/d/f", "/g").await.unwrap();
            s.delete("/g").await.unwrap();
            s.rmdir("/d").await.unwrap();
            assert!(s.list("/").await.unwrap().is_empty());
            assert_eq!(
                s.metadata("/g").await.unwrap_err().kind(),
                StorageErrorKind::NotFound
            );
        });
    }

    #[test]
    fn set_modified_and_mode() {
        let (_dir, s) = setup();
        block_on(async {
            write_all(&s, "/f", WriteMode::Create, b"x").await;
            let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
            s.set_modified("/f", when).await.unwrap();
            assert_eq!(s.metadata("/f").await.unwrap().modified, Some(when));
            // setuid and sticky bits from a client are dropped.
            s.set_mode("/f", 0o4755).await.unwrap();
            assert_eq!(s.metadata("/f").await.unwrap().mode, Some(0o755));
        });
    }

    #[test]
    fn escapes_are_refused() {
        let (dir, s) = setup();
        std::fs::write(dir.path().join("secret"), b"outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), dir.path().join("root/abs-link"))
            .unwrap();
        std::os::unix::fs::symlink("../secret", dir.path().join("root/rel-link")).unwrap();
        std::os::unix::fs::symlink("..", dir.path().join("root/up")).unwrap();
        block_on(async {
            for path in ["/../secret", "/a/../../secret", "/sec\0ret", "/..\\secret"] {
                let err = s.open_read(path, 0).await.err().unwrap();
                assert_eq!(err.kind(), StorageErrorKind::InvalidName, "{path:?}");
            }
            for path in ["/abs-link", "/rel-link", "/up/secret"] {
                let err = s.open_read(path, 0).await.err().unwrap();
                assert_eq!(
                    err.kind(),
                    StorageErrorKind::PermissionDenied,
                    "{path:?}: {err}"
                );
                let err = s.open_write(path, WriteMode::Create).await.err().unwrap();
                assert_ne!(err.kind(), StorageErrorKind::NotFound, "{path:?}");
            }
            let err = s
                .open_write("/up/secret", WriteMode::Append)
                .await
                .err()
                .unwrap();
            assert_eq!(err.kind(), StorageErrorKind::PermissionDenied);
            // An absolute-looking virtual path is still relative to the root.
            assert_eq!(
                s.open_read(&format!("/{}", dir.path().join("secret").display()), 0)
                    .await
                    .err()
                    .unwrap()
                    .kind(),
                StorageErrorKind::NotFound
            );
            // Listing shows the escaping links as symlinks without following them.
            let list = s.list("/").await.unwrap();
            assert!(list.iter().all(|e| e.metadata.kind == FileKind::Symlink));
        });
        assert_eq!(
            std::fs::read(dir.path().join("secret")).unwrap(),
            b"outside"
        );
    }

    #[test]
    fn subdir_is_confined() {
        let (dir, s) = setup();
        block_on(async {
            s.mkdir("/home").await.unwrap();
            write_all(&s, "/top", WriteMode::Create, b"t").await;
            let home = s.open_subdir("/home").await.unwrap();
            write_all(&home, "/inside", WriteMode::Create, b"i").await;
            assert!(dir.path().join("root/home/inside").exists());
            assert_eq!(
                home.metadata("/top").await.unwrap_err().kind(),
                StorageErrorKind::NotFound
            );
            assert_eq!(
                home.open_read("/../top", 0).await.err().unwrap().kind(),
                StorageErrorKind::InvalidName
            );
        });
    }

    #[test]
    fn cleanup_removes_only_old_temp_files_of_the_reserved_folder() {
        let (dir, s) = setup();
        let root = dir.path().join("root");
        let reserved = root.join(RESERVED_NAME);
        std::fs::create_dir(&reserved).unwrap();
        // A crash leftover, something else that is not ours, and users' files named like temp files
        // (the pattern of earlier versions, and today's) outside the reserved folder.
        std::fs::write(reserved.join("upload.0123456789abcdef.tmp"), b"x").unwrap();
        std::fs::write(reserved.join("notes"), b"x").unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join(".ftps-upload.mine.tmp"), b"user").unwrap();
        std::fs::write(root.join("sub/.ftps-upload.0123456789abcdef.tmp"), b"user").unwrap();
        std::fs::write(root.join("upload.fedcba9876543210.tmp"), b"user").unwrap();
        block_on(async {
            // Files modified after the cut-off are uploads of this process: kept.
            let past = SystemTime::now() - std::time::Duration::from_secs(3600);
            assert_eq!(s.cleanup_temp_files(past).await.unwrap(), 0);
            let future = SystemTime::now() + std::time::Duration::from_secs(3600);
            assert_eq!(s.cleanup_temp_files(future).await.unwrap(), 1);
        });
        assert_eq!(temp_names(&dir), vec!["notes".to_owned()]);
        assert_eq!(
            root_names(&dir),
            vec![
                ".ftps-upload.mine.tmp".to_owned(),
                "sub".to_owned(),
                "upload.fedcba9876543210.tmp".to_owned()
            ]
        );
    }

    #[test]
    fn a_users_file_named_like_a_temp_file_survives_a_restart() {
        let (dir, s) = setup();
        block_on(async {
            let n = write_all(&s, "/.ftps-upload.mine.tmp", WriteMode::Create, b"mine").await;
            assert_eq!(n, 4);
        });
        // A restart: the storage opened again and cleaned up with a start time after the upload.
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        let again = LocalStorage::open(dir.path().join("root")).unwrap();
        block_on(async {
            assert_eq!(again.cleanup_temp_files(later).await.unwrap(), 0);
            assert_eq!(
                read_all(&again, "/.ftps-upload.mine.tmp", 0).await.0,
                b"mine"
            );
        });
    }

    #[test]
    fn the_reserved_folder_is_hidden_and_out_of_reach() {
        let (dir, s) = setup();
        block_on(async {
            s.mkdir("/d").await.unwrap();
            let mut up = s.open_write("/d/partial", WriteMode::Create).await.unwrap();
            up.write_all(b"half").await.unwrap();
            up.flush().await.unwrap();
            let temp = temp_names(&dir).pop().expect("a temp file while uploading");
            // Nothing in any listing but the directory, and no file under its final name yet.
            let names: Vec<String> = s
                .list("/")
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(names, vec!["d".to_owned()]);
            assert!(s.list("/d").await.unwrap().is_empty());
            let hidden = format!("/{RESERVED_NAME}/{temp}");
            let refused = |r: Result<(), StorageError>| {
                assert_eq!(r.unwrap_err().kind(), StorageErrorKind::InvalidName);
            };
            refused(s.open_read(&hidden, 0).await.map(drop));
            refused(s.metadata(&hidden).await.map(drop));
            refused(s.metadata(&format!("/{RESERVED_NAME}")).await.map(drop));
            refused(s.list(&format!("/{RESERVED_NAME}")).await.map(drop));
            refused(s.rename(&hidden, "/stolen").await);
            refused(s.delete(&hidden).await);
            refused(s.rmdir(&format!("/{RESERVED_NAME}")).await);
            refused(s.mkdir(&format!("/d/{RESERVED_NAME}")).await);
            refused(s.open_write(&hidden, WriteMode::Append).await.map(drop));
            assert_eq!(up.commit().await.unwrap(), 4);
            assert_eq!(read_all(&s, "/d/partial", 0).await.0, b"half");
            assert!(temp_names(&dir).is_empty());
        });
    }

    #[test]
    fn the_reserved_folder_appears_with_the_first_atomic_upload_only() {
        let (dir, s) = setup();
        let reserved = dir.path().join("root").join(RESERVED_NAME);
        block_on(async {
            assert_eq!(s.cleanup_temp_files(SystemTime::now()).await.unwrap(), 0);
            s.mkdir("/d").await.unwrap();
            write_all(&s, "/d/a", WriteMode::Append, b"in place").await;
            assert!(!reserved.exists());
            write_all(&s, "/d/f", WriteMode::Create, b"atomic").await;
        });
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&reserved).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn a_subdir_storage_keeps_its_temp_files_in_the_top_folder() {
        let (dir, s) = setup();
        block_on(async {
            s.mkdir("/home").await.unwrap();
            let home = s.open_subdir("/home").await.unwrap();
            let mut up = home.open_write("/f", WriteMode::Create).await.unwrap();
            up.write_all(b"x").await.unwrap();
            assert_eq!(temp_names(&dir).len(), 1);
            assert_eq!(
                names_in(&dir.path().join("root/home")),
                Vec::<String>::new()
            );
            up.commit().await.unwrap();
        });
        assert_eq!(
            names_in(&dir.path().join("root/home")),
            vec!["f".to_owned()]
        );
    }

    #[test]
    fn commit_with_sync_on_lands_the_file() {
        let (dir, s) = setup();
        let s = s.with_sync_on_commit(true);
        block_on(async {
            s.mkdir("/d").await.unwrap();
            write_all(&s, "/d/f", WriteMode::Create, b"synced").await;
            write_all(&s, "/top", WriteMode::Create, b"synced").await;
        });
        assert_eq!(
            std::fs::read(dir.path().join("root/d/f")).unwrap(),
            b"synced"
        );
        assert_eq!(
            std::fs::read(dir.path().join("root/top")).unwrap(),
            b"synced"
        );
        assert!(temp_names(&dir).is_empty());
    }

    /// The cost of `[storage] fsync`, on the disk that holds `FTPS_FSYNC_DIR` (default: the system temp
    /// directory; use a real disk, not tmpfs). Not a test: run it by hand, in one run, and compare ratios:
    /// `FTPS_FSYNC_DIR=/var/tmp cargo test -p ftps-server-smol --lib fsync_cost -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement, run by hand"]
    fn fsync_cost() {
        let base =
            std::env::var_os("FTPS_FSYNC_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let small = vec![7u8; 4096];
        let big = vec![9u8; 64 << 20];
        for round in 0..2 {
            for sync in [false, true] {
                let dir = tempfile::tempdir_in(&base).unwrap();
                let s = LocalStorage::open(dir.path())
                    .unwrap()
                    .with_sync_on_commit(sync);
                block_on(async {
                    let start = std::time::Instant::now();
                    for i in 0..1000 {
                        write_all(&s, &format!("/f{i}"), WriteMode::Create, &small).await;
                    }
                    let many = start.elapsed();
                    let start = std::time::Instant::now();
                    write_all(&s, "/big", WriteMode::Create, &big).await;
                    let one = start.elapsed();
                    eprintln!(
                        "round {round} fsync={sync}: 1000 x 4 KiB {many:?} ({:.0} files/s), 64 MiB {one:?} ({:.0} MB/s)",
                        1000.0 / many.as_secs_f64(),
                        64.0 * 1.048_576 / one.as_secs_f64()
                    );
                });
            }
        }
    }
}
