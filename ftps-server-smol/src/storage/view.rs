//! Views of a storage: a user's home as their `/` ([`Subtree`]) and read-only access ([`ReadOnly`]).
//!
//! Both wrap any `Arc<dyn Storage>`, so per-user roots and permissions work the same over every backend.

use std::sync::Arc;
use std::time::SystemTime;

use super::{
    BoxFuture, DirEntry, Metadata, ReadHandle, Storage, StorageError, StorageErrorKind, Upload,
    VersionInfo, WriteMode,
};

/// The part of a storage below `prefix`, seen as a whole storage: `/x` here is `prefix/x` there.
///
/// Paths from the engine are normalised and never above `/`, so prefixing cannot escape; the inner backend
/// still confines everything to its own root.
pub struct Subtree {
    inner: Arc<dyn Storage>,
    prefix: String,
}

impl Subtree {
    /// A view of `inner` rooted at the virtual absolute directory `prefix` (`/` gives the whole storage).
    pub fn new(inner: Arc<dyn Storage>, prefix: &str) -> Self {
        Self {
            inner,
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    fn map(&self, path: &str) -> String {
        if path == "/" && !self.prefix.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}{}", self.prefix, path)
        }
    }
}

impl Storage for Subtree {
    fn metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        Box::pin(async move { self.inner.metadata(&self.map(path)).await })
    }
    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        Box::pin(async move { self.inner.list(&self.map(path)).await })
    }
    fn open_read<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        Box::pin(async move { self.inner.open_read(&self.map(path), offset).await })
    }
    fn open_write<'a>(
        &'a self,
        path: &'a str,
        mode: WriteMode,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        Box::pin(async move { self.inner.open_write(&self.map(path), mode).await })
    }
    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.inner.mkdir(&self.map(path)).await })
    }
    fn rmdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.inner.rmdir(&self.map(path)).await })
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.inner.delete(&self.map(path)).await })
    }
    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.inner.rename(&self.map(from), &self.map(to)).await })
    }
    fn set_modified<'a>(
        &'a self,
        path: &'a str,
        time: SystemTime,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.inner.set_modified(&self.map(path), time).await })
    }
    fn set_mode<'a>(&'a self, path: &'a str, mode: u32) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move { self.inner.set_mode(&self.map(path), mode).await })
    }
    fn metadata_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        Box::pin(async move { self.inner.metadata_at(&self.map(path), at).await })
    }
    fn list_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        Box::pin(async move { self.inner.list_at(&self.map(path), at).await })
    }
    fn open_read_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        Box::pin(async move { self.inner.open_read_at(&self.map(path), at, offset).await })
    }
    fn versions<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionInfo>, StorageError>> {
        Box::pin(async move { self.inner.versions(&self.map(path)).await })
    }
    fn open_version<'a>(
        &'a self,
        path: &'a str,
        id: u64,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        Box::pin(async move { self.inner.open_version(&self.map(path), id, offset).await })
    }
}

/// A storage that refuses every change with [`StorageErrorKind::PermissionDenied`].
pub struct ReadOnly(pub Arc<dyn Storage>);

fn denied<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, StorageError>> {
    Box::pin(async {
        Err(StorageError::new(
            StorageErrorKind::PermissionDenied,
            "read-only access",
        ))
    })
}

impl Storage for ReadOnly {
    fn metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        self.0.metadata(path)
    }
    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        self.0.list(path)
    }
    fn open_read<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        self.0.open_read(path, offset)
    }
    fn open_write<'a>(
        &'a self,
        _path: &'a str,
        _mode: WriteMode,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        denied()
    }
    fn mkdir<'a>(&'a self, _path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        denied()
    }
    fn rmdir<'a>(&'a self, _path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        denied()
    }
    fn delete<'a>(&'a self, _path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        denied()
    }
    fn rename<'a>(
        &'a self,
        _from: &'a str,
        _to: &'a str,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        denied()
    }
    fn set_modified<'a>(
        &'a self,
        _path: &'a str,
        _time: SystemTime,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        denied()
    }
    fn set_mode<'a>(
        &'a self,
        _path: &'a str,
        _mode: u32,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        denied()
    }
    fn metadata_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        self.0.metadata_at(path, at)
    }
    fn list_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        self.0.list_at(path, at)
    }
    fn open_read_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        self.0.open_read_at(path, at, offset)
    }
    fn versions<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionInfo>, StorageError>> {
        self.0.versions(path)
    }
    fn open_version<'a>(
        &'a self,
        path: &'a str,
        id: u64,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        self.0.open_version(path, id, offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;
    use futures_lite::future::block_on;

    #[test]
    fn subtree_maps_paths_below_its_prefix() {
        let base: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        block_on(async {
            base.mkdir("/alice").await.unwrap();
            let home = Subtree::new(Arc::clone(&base), "/alice");
            home.mkdir("/docs").await.unwrap();
            assert!(base.metadata("/alice/docs").await.is_ok());
            assert_eq!(home.list("/").await.unwrap().len(), 1);
            assert!(base.metadata("/docs").await.is_err());
        });
    }

    #[test]
    fn read_only_refuses_changes_but_reads() {
        let base: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
        let ro = ReadOnly(Arc::clone(&base));
        block_on(async {
            base.mkdir("/d").await.unwrap();
            assert!(ro.metadata("/d").await.is_ok());
            let err = ro.mkdir("/e").await.unwrap_err();
            assert_eq!(err.kind(), StorageErrorKind::PermissionDenied);
            assert!(ro.open_write("/f", WriteMode::Create).await.is_err());
        });
    }
}
