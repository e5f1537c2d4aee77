//! The history methods of [`S3Storage`] ([`Storage::list_at`] and friends, served as `/@at/<TIME>/` and
//! `/@versions/` by [`TimeViews`](crate::storage::TimeViews)) from the bucket's own versioning: `ListObjectVersions`
//! and `GetObject` / `HeadObject` with a `versionId`. The server keeps no history of its own: what the bucket keeps
//! is what the views show, and forgetting old versions is the bucket's lifecycle policy
//! (`NoncurrentVersionExpiration`), not the server's pruner.
//!
//! Semantics, matching [`Versioned`](crate::storage::Versioned):
//! - **A file at time t** is the newest version of its key whose `LastModified` is at or before t, unless that entry
//!   is a delete marker (then nothing had the name). "Newest" is S3's own order of the key's versions, so two
//!   versions within one timestamp tick still have an order. S3 dates a multipart upload from its *start*.
//! - **A directory at time t** exists when some key under its prefix (its `MKD` marker included) was a live object
//!   at t. Deciding it lists the prefix's versions until the first such key, so a folder that had files costs one
//!   request; one whose every file was deleted before t costs a listing of its whole history.
//! - **Version ids**: S3's are strings, the trait's are `u64`. The current content is 0 (as everywhere); any other
//!   version is a 63-bit hash of its S3 version id, resolved again by hashing the key's versions on open. Unlike an
//!   index in the history, a hash names the same version after the lifecycle policy expired older ones; two
//!   versions of one key sharing a hash (odds ~2^-63 per pair) would make the older unreachable by id, still
//!   reachable through `/@at/`.

use std::time::SystemTime;

use rusty_s3::S3Action;

use super::http::Method;
use super::listing::{parse_versions, Marker, ObjectVersion, VersionsPage};
use super::rename::{join_all, Step, BATCH_CONCURRENCY};
use super::{
    acceptable_name, dir_metadata, err, file_metadata, other, status_error, xml_field, Inner,
    S3Storage, MAX_XML_BODY, URL_EXPIRY,
};
use crate::storage::{DirEntry, Metadata, ReadHandle, StorageError, StorageErrorKind, VersionInfo};

/// The S3 XML namespace, for request bodies.
const S3_XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// The trait's id of S3 version `version_id`: a nonzero 63-bit FNV-1a hash (0 is the current content).
pub(super) fn version_number(version_id: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in version_id.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash >> 1).max(1)
}

/// The entry of `history` (oldest first) that was current at `at`: the last one dated at or before it, `None` when
/// there is none or it is a delete marker.
fn state_at(history: &[ObjectVersion], at: SystemTime) -> Option<&ObjectVersion> {
    history
        .iter()
        .rev()
        .find(|v| v.modified <= at)
        .filter(|v| !v.deleted)
}

/// Puts one key's entries oldest first: by date, the `IsLatest` one last among equals, else the reverse of the
/// listing's order (S3 lists newest first). The listing's order alone is not enough: some servers (moto) list every
/// version before every delete marker.
fn oldest_first(mut entries: Vec<ObjectVersion>) -> Vec<ObjectVersion> {
    entries.reverse();
    entries.sort_by(|a, b| a.modified.cmp(&b.modified).then(a.latest.cmp(&b.latest)));
    entries
}

/// A listing's entries by key, each key's in the listing's order.
type ByKey = std::collections::BTreeMap<String, Vec<ObjectVersion>>;

impl Inner {
    /// One page of `ListObjectVersions` under `prefix`, grouped by `/` when `delimited`.
    pub(super) async fn list_versions_page(
        &self,
        prefix: &str,
        delimited: bool,
        marker: Option<&Marker>,
        max_keys: usize,
    ) -> Result<VersionsPage, StorageError> {
        // rusty-s3 0.10 has no ListObjectVersions action: a GetObject of the bucket's own URL signs the same GET.
        let mut action = self.bucket.get_object(Some(&self.credentials), "");
        let query = action.query_mut();
        query.insert("versions", "");
        query.insert("prefix", prefix);
        query.insert("max-keys", max_keys.to_string());
        if delimited {
            query.insert("delimiter", "/");
        }
        // Keys come back URL-encoded (see `listing`).
        query.insert("encoding-type", "url");
        if let Some((key, version)) = marker {
            query.insert("key-marker", key.as_str());
            if let Some(version) = version {
                query.insert("version-id-marker", version.as_str());
            }
        }
        let url = action.sign(URL_EXPIRY);
        let response = self.call(Method::Get, &url, &[], b"").await?;
        if response.status != 200 {
            return Err(status_error(response.status, response, "ListObjectVersions").await);
        }
        let body = response.body.bytes(MAX_XML_BODY).await?;
        let text =
            std::str::from_utf8(&body).map_err(|_| other("S3 version listing is not UTF-8"))?;
        parse_versions(text)
    }
}

impl S3Storage {
    /// Checks that the bucket keeps versions (`GetBucketVersioning` says `Enabled`), which the time views need.
    ///
    /// # Errors
    /// When it does not, with the command that turns it on; or when the request fails.
    pub async fn check_versioning(&self) -> Result<(), StorageError> {
        let inner = &self.inner;
        let mut action = inner.bucket.get_object(Some(&inner.credentials), "");
        action.query_mut().insert("versioning", "");
        let url = action.sign(URL_EXPIRY);
        let response = inner.call(Method::Get, &url, &[], b"").await?;
        if response.status != 200 {
            return Err(status_error(response.status, response, "GetBucketVersioning").await);
        }
        let body = response.body.bytes(MAX_XML_BODY).await?;
        let text = String::from_utf8_lossy(&body);
        match xml_field(&text, "Status") {
            Some("Enabled") => Ok(()),
            status => Err(other(format!(
                "bucket {:?} does not keep versions (versioning {}); turn it on with `aws s3api \
                 put-bucket-versioning --bucket {} --versioning-configuration Status=Enabled`, or turn off [versions]",
                inner.bucket.name(),
                status.unwrap_or("never enabled"),
                inner.bucket.name(),
            ))),
        }
    }

    /// Turns on the bucket's versioning (`PutBucketVersioning`; tests and first-time setup, like
    /// [`create_bucket`](Self::create_bucket)).
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn enable_versioning(&self) -> Result<(), StorageError> {
        let inner = &self.inner;
        let mut action = inner.bucket.put_object(Some(&inner.credentials), "");
        action.query_mut().insert("versioning", "");
        let url = action.sign(URL_EXPIRY);
        let body = format!(
            "<VersioningConfiguration xmlns=\"{S3_XMLNS}\"><Status>Enabled</Status></VersioningConfiguration>"
        );
        let response = inner.call(Method::Put, &url, &[], body.as_bytes()).await?;
        match response.status {
            200 => {
                response.body.discard().await;
                Ok(())
            }
            status => Err(status_error(status, response, "PutBucketVersioning").await),
        }
    }

    /// Every version and delete marker of exactly `key`, oldest first. S3 lists `key` before every longer key that
    /// starts with it, so the listing stops at the first other key.
    async fn history(&self, key: &str) -> Result<Vec<ObjectVersion>, StorageError> {
        let mut out = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .inner
                .list_versions_page(key, false, marker.as_ref(), 1000)
                .await?;
            let mut passed = false;
            for version in page.versions {
                if version.key == key {
                    out.push(version);
                } else {
                    passed = true;
                }
            }
            match page.next {
                Some(next) if !passed => marker = Some(next),
                _ => break,
            }
        }
        Ok(oldest_first(out))
    }

    /// Whether some key under `prefix` was a live object at `at` (see the module docs). A key whose newest entry is
    /// content dated at or before `at` settles it at once (the usual case: one request); otherwise every entry
    /// under the prefix is read and each key's history decides.
    async fn live_under_at(&self, prefix: &str, at: SystemTime) -> Result<bool, StorageError> {
        let mut by_key = ByKey::new();
        let mut marker = None;
        loop {
            let page = self
                .inner
                .list_versions_page(prefix, false, marker.as_ref(), 1000)
                .await?;
            for version in page.versions {
                if version.latest && !version.deleted && version.modified <= at {
                    return Ok(true);
                }
                by_key.entry(version.key.clone()).or_default().push(version);
            }
            match page.next {
                Some(next) => marker = Some(next),
                None => break,
            }
        }
        Ok(by_key
            .into_values()
            .any(|entries| state_at(&oldest_first(entries), at).is_some()))
    }

    pub(super) async fn do_metadata_at(
        &self,
        path: &str,
        at: SystemTime,
    ) -> Result<Metadata, StorageError> {
        let (key, parts) = self.key(path)?;
        if parts.is_empty() {
            return Ok(dir_metadata(None));
        }
        if let Some(v) = state_at(&self.history(&key).await?, at) {
            return Ok(file_metadata(v.size, Some(v.modified)));
        }
        if self.live_under_at(&self.dir_prefix(&parts), at).await? {
            return Ok(dir_metadata(None));
        }
        Err(err(
            StorageErrorKind::NotFound,
            "nothing had that name then",
        ))
    }

    pub(super) async fn do_list_at(
        &self,
        path: &str,
        at: SystemTime,
    ) -> Result<Vec<DirEntry>, StorageError> {
        let (key, parts) = self.key(path)?;
        let prefix = self.dir_prefix(&parts);
        let mut entries = Vec::new();
        let mut subdirs = Vec::new();
        let mut live_any = false;
        let mut by_key = ByKey::new();
        let mut marker = None;
        loop {
            let page = self
                .inner
                .list_versions_page(&prefix, true, marker.as_ref(), 1000)
                .await?;
            for version in page.versions {
                by_key.entry(version.key.clone()).or_default().push(version);
            }
            subdirs.extend(page.prefixes);
            match page.next {
                Some(next) => marker = Some(next),
                None => break,
            }
        }
        for (key, history) in by_key {
            let Some(version) = state_at(&oldest_first(history), at).cloned() else {
                continue;
            };
            live_any = true;
            let Some(name) = key.strip_prefix(&prefix) else {
                continue;
            };
            // The directory's own marker is not an entry.
            if acceptable_name(name) {
                entries.push(DirEntry {
                    name: name.to_owned(),
                    metadata: file_metadata(version.size, Some(version.modified)),
                });
            }
        }
        subdirs.dedup();
        // A prefix lists while any version is under it; it was a directory at `at` only if something lived there.
        // One question per subdirectory, a few at a time.
        let subdirs: Vec<(String, String)> = subdirs
            .into_iter()
            .filter_map(|subdir| {
                let name = subdir.strip_prefix(&prefix)?.strip_suffix('/')?;
                acceptable_name(name).then(|| (name.to_owned(), subdir.clone()))
            })
            .collect();
        for chunk in subdirs.chunks(BATCH_CONCURRENCY) {
            let checks = chunk
                .iter()
                .map(|(_, subdir)| -> Step<'_, _> { Box::pin(self.live_under_at(subdir, at)) })
                .collect();
            for ((name, _), live) in chunk.iter().zip(join_all(checks).await) {
                if live? {
                    live_any = true;
                    entries.push(DirEntry {
                        name: name.clone(),
                        metadata: dir_metadata(None),
                    });
                }
            }
        }
        if !live_any && !parts.is_empty() {
            return Err(if state_at(&self.history(&key).await?, at).is_some() {
                err(StorageErrorKind::NotADirectory, "not a directory")
            } else {
                err(StorageErrorKind::NotFound, "no such directory then")
            });
        }
        Ok(entries)
    }

    pub(super) async fn do_open_read_at(
        &self,
        path: &str,
        at: SystemTime,
        offset: u64,
    ) -> Result<ReadHandle, StorageError> {
        let (key, parts) = self.key(path)?;
        if parts.is_empty() {
            return Err(err(
                StorageErrorKind::IsADirectory,
                "the root is a directory",
            ));
        }
        if let Some(v) = state_at(&self.history(&key).await?, at) {
            return self
                .inner
                .get_version(&key, Some(&v.version_id), offset, None)
                .await?
                .ok_or_else(|| err(StorageErrorKind::NotFound, "the version expired"));
        }
        Err(if self.live_under_at(&self.dir_prefix(&parts), at).await? {
            err(StorageErrorKind::IsADirectory, "is a directory")
        } else {
            err(StorageErrorKind::NotFound, "no such file then")
        })
    }

    pub(super) async fn do_versions(&self, path: &str) -> Result<Vec<VersionInfo>, StorageError> {
        let (key, parts) = self.key(path)?;
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        let history = self.history(&key).await?;
        let mut out = Vec::new();
        for (i, v) in history.iter().enumerate() {
            if v.deleted {
                continue;
            }
            let until = history.get(i + 1).map(|next| next.modified);
            out.push(VersionInfo {
                id: if until.is_none() {
                    0
                } else {
                    version_number(&v.version_id)
                },
                since: v.modified,
                until,
                size: v.size,
            });
        }
        Ok(out)
    }

    pub(super) async fn do_open_version(
        &self,
        path: &str,
        id: u64,
        offset: u64,
    ) -> Result<ReadHandle, StorageError> {
        let (key, parts) = self.key(path)?;
        let not_found = || err(StorageErrorKind::NotFound, "no such version");
        if parts.is_empty() {
            return Err(not_found());
        }
        let history = self.history(&key).await?;
        let found = if id == 0 {
            history.last().filter(|v| !v.deleted)
        } else {
            history
                .iter()
                .rev()
                .find(|v| !v.deleted && version_number(&v.version_id) == id)
        };
        let version = found.ok_or_else(not_found)?;
        self.inner
            .get_version(&key, Some(&version.version_id), offset, None)
            .await?
            .ok_or_else(not_found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_numbers_are_nonzero_and_distinct() {
        assert_ne!(version_number("a"), version_number("b"));
        assert_ne!(version_number(""), 0);
        assert_ne!(version_number("null"), 0);
    }
}
