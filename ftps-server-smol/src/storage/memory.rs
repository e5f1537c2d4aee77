//! [`MemoryStorage`]: an in-memory tree with the same semantics as the local backend.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures_lite::io::Cursor;
use futures_lite::AsyncWrite;

use super::{
    components, BoxFuture, DirEntry, FileKind, Metadata, ReadHandle, Storage, StorageError,
    StorageErrorKind, Upload, WriteMode,
};

const FILE_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o755;

/// An in-memory file tree for tests and embedding, with the semantics of [`super::LocalStorage`]:
/// atomic [`WriteMode::Create`] (invisible until commit), in-place append and resume, POSIX rename.
/// An optional capacity makes writes fail with `ENOSPC`-like errors, to exercise disk-full paths.
/// Clones share the same tree.
#[derive(Clone, Debug, Default)]
pub struct MemoryStorage {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    tree: Mutex<Tree>,
    /// Total file bytes the store may hold; `None` is unbounded.
    capacity: Option<u64>,
    /// Kept versions ([`Storage::keep`]): the same shared bytes as the file had (appends replace a file's
    /// bytes, never change them in place, so sharing is always safe).
    kept: Mutex<std::collections::HashMap<u64, Arc<Vec<u8>>>>,
}

#[derive(Debug)]
struct Tree {
    /// Canonical virtual path (`/`, `/a/b`) to node; `/` is always a directory.
    nodes: BTreeMap<String, Node>,
}

impl Default for Tree {
    fn default() -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert("/".to_owned(), Node::dir());
        Self { nodes }
    }
}

#[derive(Clone, Debug)]
struct Node {
    /// `Some` for a file, `None` for a directory.
    data: Option<Arc<Vec<u8>>>,
    modified: SystemTime,
    mode: u32,
}

impl Node {
    fn dir() -> Self {
        Self {
            data: None,
            modified: SystemTime::now(),
            mode: DIR_MODE,
        }
    }

    fn file(data: Vec<u8>, mode: u32) -> Self {
        Self {
            data: Some(Arc::new(data)),
            modified: SystemTime::now(),
            mode,
        }
    }

    fn metadata(&self) -> Metadata {
        Metadata {
            kind: if self.data.is_some() {
                FileKind::File
            } else {
                FileKind::Directory
            },
            size: self.data.as_ref().map_or(0, |d| d.len() as u64),
            modified: Some(self.modified),
            mode: Some(self.mode),
        }
    }
}

fn err(kind: StorageErrorKind, message: &str) -> StorageError {
    StorageError::new(kind, message)
}

/// Canonical key of a virtual path and of its parent (`None` for the root).
fn keys(path: &str) -> Result<(String, Option<String>), StorageError> {
    let parts = components(path)?;
    let key = format!("/{}", parts.join("/"));
    let parent = parts
        .split_last()
        .map(|(_, rest)| format!("/{}", rest.join("/")));
    Ok((key, parent))
}

fn child_prefix(key: &str) -> String {
    if key == "/" {
        "/".to_owned()
    } else {
        format!("{key}/")
    }
}

impl Tree {
    fn node(&self, key: &str) -> Result<&Node, StorageError> {
        self.nodes
            .get(key)
            .ok_or_else(|| err(StorageErrorKind::NotFound, "no such file or directory"))
    }

    /// Checks that the parent of a new entry exists and is a directory.
    fn check_parent(&self, parent: Option<&String>) -> Result<(), StorageError> {
        let Some(parent) = parent else {
            return Err(err(
                StorageErrorKind::PermissionDenied,
                "the root cannot be replaced",
            ));
        };
        if self.node(parent)?.data.is_some() {
            return Err(err(
                StorageErrorKind::NotADirectory,
                "parent is not a directory",
            ));
        }
        Ok(())
    }

    /// The direct children of directory `key`, with their names.
    fn children(&self, key: &str) -> Vec<(String, &Node)> {
        let prefix = child_prefix(key);
        self.nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, node)| {
                let name = k.get(prefix.len()..)?;
                (!name.is_empty() && !name.contains('/')).then(|| (name.to_owned(), node))
            })
            .collect()
    }

    fn has_children(&self, key: &str) -> bool {
        let prefix = child_prefix(key);
        self.nodes
            .range(prefix.clone()..)
            .next()
            .is_some_and(|(k, _)| k.starts_with(&prefix))
    }

    fn used_bytes(&self) -> u64 {
        self.nodes
            .values()
            .filter_map(|n| n.data.as_ref())
            .map(|d| d.len() as u64)
            .sum()
    }
}

impl MemoryStorage {
    /// An empty tree (just `/`), unbounded.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty tree whose files may hold at most `capacity` bytes in total; a write past it fails
    /// with [`io::ErrorKind::StorageFull`] (mapped to [`StorageErrorKind::DiskFull`]).
    #[must_use]
    pub fn with_capacity(capacity: u64) -> Self {
        Self {
            shared: Arc::new(Shared {
                tree: Mutex::default(),
                capacity: Some(capacity),
                kept: Mutex::default(),
            }),
        }
    }

    /// Creates or replaces file `path` with `data` at once (test setup), creating missing parents.
    ///
    /// # Errors
    /// When the path is refused or a parent is a file.
    pub fn insert_file(&self, path: &str, data: impl Into<Vec<u8>>) -> Result<(), StorageError> {
        let parts = components(path)?;
        let mut tree = self.lock();
        let mut key = String::new();
        for (i, part) in parts.iter().enumerate() {
            key.push('/');
            key.push_str(part);
            if i + 1 == parts.len() {
                break;
            }
            match tree.nodes.get(&key) {
                Some(node) if node.data.is_some() => {
                    return Err(err(StorageErrorKind::NotADirectory, "parent is a file"));
                }
                Some(_) => {}
                None => {
                    tree.nodes.insert(key.clone(), Node::dir());
                }
            }
        }
        if key.is_empty() {
            return Err(err(
                StorageErrorKind::IsADirectory,
                "the root is a directory",
            ));
        }
        tree.nodes.insert(key, Node::file(data.into(), FILE_MODE));
        Ok(())
    }

    /// The content of file `path`, if it is one (test inspection).
    #[must_use]
    pub fn file_contents(&self, path: &str) -> Option<Vec<u8>> {
        let (key, _) = keys(path).ok()?;
        let tree = self.lock();
        tree.nodes.get(&key)?.data.as_ref().map(|d| d.to_vec())
    }

    fn lock(&self) -> MutexGuard<'_, Tree> {
        // A panic while holding the lock cannot leave the map half-updated in a way that matters
        // for a test store: keep serving.
        self.shared
            .tree
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn ready<T: Send + 'static>(
        result: Result<T, StorageError>,
    ) -> BoxFuture<'static, Result<T, StorageError>> {
        Box::pin(async move { result })
    }

    fn do_open_write(&self, path: &str, mode: WriteMode) -> Result<Box<dyn Upload>, StorageError> {
        let (key, parent) = keys(path)?;
        let mut tree = self.lock();
        tree.check_parent(parent.as_ref())?;
        match tree.nodes.get(&key) {
            Some(_) if mode == WriteMode::CreateNew => {
                return Err(err(StorageErrorKind::AlreadyExists, "the name is taken"));
            }
            // The name is held by an empty file until the commit, as on disk.
            None if mode == WriteMode::CreateNew => {
                tree.nodes
                    .insert(key.clone(), Node::file(Vec::new(), FILE_MODE));
            }
            Some(node) if node.data.is_none() => {
                return Err(err(StorageErrorKind::IsADirectory, "is a directory"));
            }
            None if matches!(mode, WriteMode::Resume(_)) => {
                return Err(err(StorageErrorKind::NotFound, "no file to resume"));
            }
            _ => {}
        }
        // A new version replaces the old file: its bytes do not count against the new one.
        let replaced = match (mode, tree.nodes.get(&key).and_then(|n| n.data.as_ref())) {
            (WriteMode::Create, Some(old)) => old.len() as u64,
            _ => 0,
        };
        let base = tree.used_bytes().saturating_sub(replaced);
        drop(tree);
        Ok(Box::new(MemoryUpload {
            storage: self.clone(),
            key,
            mode,
            buffer: Vec::new(),
            base_used: base,
            done: false,
        }))
    }

    fn do_rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let (from_key, _) = keys(from)?;
        let (to_key, to_parent) = keys(to)?;
        let mut tree = self.lock();
        if from_key == "/" {
            return Err(err(
                StorageErrorKind::PermissionDenied,
                "the root cannot be renamed",
            ));
        }
        let from_is_dir = tree.node(&from_key)?.data.is_none();
        tree.check_parent(to_parent.as_ref())?;
        if from_key == to_key {
            return Ok(());
        }
        if from_is_dir && to_key.starts_with(&child_prefix(&from_key)) {
            return Err(err(
                StorageErrorKind::Other,
                "cannot move a directory into itself",
            ));
        }
        if let Some(existing) = tree.nodes.get(&to_key) {
            match (from_is_dir, existing.data.is_none()) {
                (false, true) => return Err(err(StorageErrorKind::IsADirectory, "is a directory")),
                (true, false) => {
                    return Err(err(StorageErrorKind::NotADirectory, "not a directory"));
                }
                (true, true) if tree.has_children(&to_key) => {
                    return Err(err(StorageErrorKind::NotEmpty, "directory not empty"));
                }
                _ => {}
            }
        }
        let from_prefix = child_prefix(&from_key);
        let moved: Vec<String> = tree
            .nodes
            .range(from_prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&from_prefix))
            .map(|(k, _)| k.clone())
            .collect();
        if let Some(node) = tree.nodes.remove(&from_key) {
            tree.nodes.insert(to_key.clone(), node);
        }
        let to_prefix = child_prefix(&to_key);
        for old in moved {
            if let Some(node) = tree.nodes.remove(&old) {
                let new = format!(
                    "{to_prefix}{}",
                    old.get(from_prefix.len()..).unwrap_or_default()
                );
                tree.nodes.insert(new, node);
            }
        }
        Ok(())
    }

    fn update(&self, path: &str, change: impl FnOnce(&mut Node)) -> Result<(), StorageError> {
        let (key, _) = keys(path)?;
        let mut tree = self.lock();
        let node = tree
            .nodes
            .get_mut(&key)
            .ok_or_else(|| err(StorageErrorKind::NotFound, "no such file or directory"))?;
        change(node);
        Ok(())
    }
}

impl Storage for MemoryStorage {
    fn metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        let result = keys(path).and_then(|(key, _)| Ok(self.lock().node(&key)?.metadata()));
        Self::ready(result)
    }

    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        let result = keys(path).and_then(|(key, _)| {
            let tree = self.lock();
            if tree.node(&key)?.data.is_some() {
                return Err(err(StorageErrorKind::NotADirectory, "not a directory"));
            }
            Ok(tree
                .children(&key)
                .into_iter()
                .map(|(name, node)| DirEntry {
                    name,
                    metadata: node.metadata(),
                })
                .collect())
        });
        Self::ready(result)
    }

    fn open_read<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        let result = keys(path).and_then(|(key, _)| {
            let tree = self.lock();
            let data = tree
                .node(&key)?
                .data
                .clone()
                .ok_or_else(|| err(StorageErrorKind::IsADirectory, "is a directory"))?;
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let rest = data.get(start..).unwrap_or_default().to_vec();
            Ok(ReadHandle {
                reader: Box::new(Cursor::new(rest)),
                size: data.len() as u64,
            })
        });
        Self::ready(result)
    }

    fn open_write<'a>(
        &'a self,
        path: &'a str,
        mode: WriteMode,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        Self::ready(self.do_open_write(path, mode))
    }

    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        let result = keys(path).and_then(|(key, parent)| {
            let mut tree = self.lock();
            if tree.nodes.contains_key(&key) {
                return Err(err(StorageErrorKind::AlreadyExists, "already exists"));
            }
            tree.check_parent(parent.as_ref())?;
            tree.nodes.insert(key, Node::dir());
            Ok(())
        });
        Self::ready(result)
    }

    fn rmdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        let result = keys(path).and_then(|(key, _)| {
            let mut tree = self.lock();
            if key == "/" {
                return Err(err(
                    StorageErrorKind::PermissionDenied,
                    "the root cannot be removed",
                ));
            }
            if tree.node(&key)?.data.is_some() {
                return Err(err(StorageErrorKind::NotADirectory, "not a directory"));
            }
            if tree.has_children(&key) {
                return Err(err(StorageErrorKind::NotEmpty, "directory not empty"));
            }
            tree.nodes.remove(&key);
            Ok(())
        });
        Self::ready(result)
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        let result = keys(path).and_then(|(key, _)| {
            let mut tree = self.lock();
            if tree.node(&key)?.data.is_none() {
                return Err(err(StorageErrorKind::IsADirectory, "is a directory"));
            }
            tree.nodes.remove(&key);
            Ok(())
        });
        Self::ready(result)
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Self::ready(self.do_rename(from, to))
    }

    fn set_modified<'a>(
        &'a self,
        path: &'a str,
        modified: SystemTime,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Self::ready(self.update(path, |node| node.modified = modified))
    }

    fn set_mode<'a>(&'a self, path: &'a str, mode: u32) -> BoxFuture<'a, Result<(), StorageError>> {
        Self::ready(self.update(path, |node| node.mode = mode & 0o777))
    }

    fn keep<'a>(
        &'a self,
        path: &'a str,
        id: u64,
        _copy: bool,
    ) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        let result = keys(path).and_then(|(key, _)| {
            let tree = self.lock();
            let node = tree.node(&key)?;
            let data = node
                .data
                .clone()
                .ok_or_else(|| err(StorageErrorKind::PermissionDenied, "only files are kept"))?;
            self.kept().insert(id, data);
            Ok(node.metadata())
        });
        Self::ready(result)
    }

    fn open_kept<'a>(
        &'a self,
        id: u64,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        let result = match self.kept().get(&id) {
            Some(data) => {
                let start = usize::try_from(offset)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                Ok(ReadHandle {
                    reader: Box::new(Cursor::new(data.get(start..).unwrap_or_default().to_vec())),
                    size: data.len() as u64,
                })
            }
            None => Err(err(StorageErrorKind::NotFound, "no such version")),
        };
        Self::ready(result)
    }

    fn has_kept(&self, id: u64) -> BoxFuture<'_, Result<bool, StorageError>> {
        Self::ready(Ok(self.kept().contains_key(&id)))
    }

    fn kept_is_live<'a>(
        &'a self,
        path: &'a str,
        id: u64,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        let live = keys(path)
            .ok()
            .and_then(|(key, _)| self.lock().node(&key).ok().and_then(|n| n.data.clone()));
        let same = match (live, self.kept().get(&id)) {
            (Some(live), Some(kept)) => Arc::ptr_eq(&live, kept),
            _ => false,
        };
        Self::ready(Ok(same))
    }

    fn remove_kept(&self, id: u64) -> BoxFuture<'_, Result<(), StorageError>> {
        self.kept().remove(&id);
        Self::ready(Ok(()))
    }
}

impl MemoryStorage {
    fn kept(&self) -> MutexGuard<'_, std::collections::HashMap<u64, Arc<Vec<u8>>>> {
        self.shared
            .kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// An upload to a [`MemoryStorage`]: buffered, applied on commit (and, for append / resume, on
/// abort too, matching the in-place semantics of the local backend).
struct MemoryUpload {
    storage: MemoryStorage,
    key: String,
    mode: WriteMode,
    buffer: Vec<u8>,
    /// Bytes in the store when the upload started, for the capacity check.
    base_used: u64,
    done: bool,
}

impl MemoryUpload {
    fn apply(&mut self) -> Result<u64, StorageError> {
        self.done = true;
        let written = self.buffer.len() as u64;
        let buffer = std::mem::take(&mut self.buffer);
        let mut tree = self.storage.lock();
        let old = tree.nodes.get(&self.key);
        if old.is_some_and(|n| n.data.is_none()) {
            return Err(err(StorageErrorKind::IsADirectory, "is a directory"));
        }
        let mode = old.map_or(FILE_MODE, |n| n.mode);
        let old_data = old.and_then(|n| n.data.clone());
        let data = match self.mode {
            WriteMode::Create | WriteMode::CreateNew => buffer,
            WriteMode::Append => {
                let mut data = old_data.map(|d| d.to_vec()).unwrap_or_default();
                data.extend_from_slice(&buffer);
                data
            }
            WriteMode::Resume(offset) => {
                let mut data = old_data.map(|d| d.to_vec()).unwrap_or_default();
                data.resize(usize::try_from(offset).unwrap_or(usize::MAX), 0);
                data.extend_from_slice(&buffer);
                data
            }
        };
        tree.nodes.insert(self.key.clone(), Node::file(data, mode));
        Ok(written)
    }
}

impl AsyncWrite for MemoryUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.done {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "upload already finished",
            )));
        }
        if let Some(capacity) = self.storage.shared.capacity {
            let after = self.base_used + self.buffer.len() as u64 + buf.len() as u64;
            if after > capacity {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "memory storage capacity exhausted",
                )));
            }
        }
        self.buffer.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Upload for MemoryUpload {
    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, StorageError>> {
        let result = if self.done {
            Err(err(StorageErrorKind::Other, "upload already finished"))
        } else {
            self.apply()
        };
        Box::pin(async move { result })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        self.finish_abort();
        Box::pin(async {})
    }
}

impl MemoryUpload {
    fn finish_abort(&mut self) {
        if self.done {
            return;
        }
        if self.mode == WriteMode::Create {
            self.done = true;
        } else if self.mode == WriteMode::CreateNew {
            self.done = true;
            let mut tree = self.storage.lock();
            if tree
                .nodes
                .get(&self.key)
                .is_some_and(|n| n.data.as_ref().is_some_and(|d| d.is_empty()))
            {
                tree.nodes.remove(&self.key);
            }
        } else {
            // In-place modes keep what arrived, like a real file.
            let _ = self.apply();
        }
    }
}

impl Drop for MemoryUpload {
    fn drop(&mut self) {
        self.finish_abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    async fn read_all(s: &MemoryStorage, path: &str, offset: u64) -> (Vec<u8>, u64) {
        let mut handle = s.open_read(path, offset).await.unwrap();
        let mut out = Vec::new();
        handle.reader.read_to_end(&mut out).await.unwrap();
        (out, handle.size)
    }

    #[test]
    fn create_is_atomic() {
        let s = MemoryStorage::new();
        s.insert_file("/f", b"old".to_vec()).unwrap();
        block_on(async {
            let mut up = s.open_write("/f", WriteMode::Create).await.unwrap();
            up.write_all(b"new").await.unwrap();
            assert_eq!(s.file_contents("/f").unwrap(), b"old");
            up.abort().await;
            assert_eq!(s.file_contents("/f").unwrap(), b"old");
            let mut up = s.open_write("/f", WriteMode::Create).await.unwrap();
            up.write_all(b"new").await.unwrap();
            drop(up);
            assert_eq!(s.file_contents("/f").unwrap(), b"old");
            let mut up = s.open_write("/f", WriteMode::Create).await.unwrap();
            up.write_all(b"newer").await.unwrap();
            assert_eq!(up.commit().await.unwrap(), 5);
            assert_eq!(read_all(&s, "/f", 2).await, (b"wer".to_vec(), 5));
        });
    }

    #[test]
    fn append_resume_and_abort_in_place() {
        let s = MemoryStorage::new();
        block_on(async {
            let mut up = s.open_write("/f", WriteMode::Append).await.unwrap();
            up.write_all(b"abc").await.unwrap();
            up.commit().await.unwrap();
            let mut up = s.open_write("/f", WriteMode::Append).await.unwrap();
            up.write_all(b"def").await.unwrap();
            up.abort().await;
            assert_eq!(s.file_contents("/f").unwrap(), b"abcdef");
            let mut up = s.open_write("/f", WriteMode::Resume(2)).await.unwrap();
            up.write_all(b"Z").await.unwrap();
            up.commit().await.unwrap();
            assert_eq!(s.file_contents("/f").unwrap(), b"abZ");
            let err = s
                .open_write("/nope", WriteMode::Resume(1))
                .await
                .err()
                .unwrap();
            assert_eq!(err.kind(), StorageErrorKind::NotFound);
        });
    }

    #[test]
    fn tree_operations() {
        let s = MemoryStorage::new();
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
            s.insert_file("/d/e/f", b"12".to_vec()).unwrap();
            s.insert_file("/dd", b"3".to_vec()).unwrap();
            let mut names: Vec<_> = s
                .list("/")
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            names.sort();
            assert_eq!(names, vec!["d", "dd"]);
            let list = s.list("/d").await.unwrap();
            assert_eq!(list.len(), 1);
            assert_eq!(
                (list[0].name.as_str(), list[0].metadata.kind),
                ("e", FileKind::Directory)
            );
            assert_eq!(
                s.rmdir("/d").await.unwrap_err().kind(),
                StorageErrorKind::NotEmpty
            );
            assert_eq!(
                s.delete("/d").await.unwrap_err().kind(),
                StorageErrorKind::IsADirectory
            );
            assert_eq!(
                s.list("/dd").await.unwrap_err().kind(),
                StorageErrorKind::NotADirectory
            );
            s.rename("/d", "/moved").await.unwrap();
            assert_eq!(s.file_contents("/moved/e/f").unwrap(), b"12");
            assert!(s.file_contents("/d/e/f").is_none());
            assert_eq!(
                s.rename("/moved", "/moved/e/x").await.unwrap_err().kind(),
                StorageErrorKind::Other
            );
            s.rename("/dd", "/moved/e/f").await.unwrap();
            assert_eq!(s.file_contents("/moved/e/f").unwrap(), b"3");
            s.delete("/moved/e/f").await.unwrap();
            s.rmdir("/moved/e").await.unwrap();
            let when = SystemTime::UNIX_EPOCH;
            s.set_modified("/moved", when).await.unwrap();
            s.set_mode("/moved", 0o4700).await.unwrap();
            let meta = s.metadata("/moved").await.unwrap();
            assert_eq!((meta.modified, meta.mode), (Some(when), Some(0o700)));
            assert_eq!(
                s.open_read("/../etc/passwd", 0).await.err().unwrap().kind(),
                StorageErrorKind::InvalidName
            );
        });
    }

    #[test]
    fn capacity_reports_disk_full() {
        let s = MemoryStorage::with_capacity(10);
        s.insert_file("/a", vec![0; 6]).unwrap();
        block_on(async {
            let mut up = s.open_write("/a", WriteMode::Append).await.unwrap();
            up.write_all(b"1234").await.unwrap();
            let e = up.write_all(b"5").await.unwrap_err();
            assert_eq!(StorageError::from(e).kind(), StorageErrorKind::DiskFull);
        });
    }
}
