//! [`S3Storage`]: files in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW, Garage, moto).
//!
//! Requests are SigV4-presigned by `rusty-s3` (sans-IO: it only builds URLs and parses XML) and sent by the small
//! HTTP/1.1 client in `http.rs` on async-io sockets, so the backend needs no tokio and works under any executor.
//!
//! How the FTP view maps onto keys (under the configured `prefix`):
//! - a file `/a/b` is the object `prefix + "a/b"`; a directory is a key prefix `a/`, which exists when any key
//!   starts with it; `MKD` writes an empty marker object `a/` so that an empty directory exists too;
//! - `STOR` streams into a multipart upload (parts of [`S3Options::part_size`], at most [`MAX_PARTS_IN_FLIGHT`] in
//!   flight, so memory per upload is bounded) that `commit` completes: the object appears only then, and an abort
//!   removes the parts and leaves the previous object. A file smaller than one part is one `PutObject` at commit.
//!   `APPE` and `REST`+`STOR` write a new object whose first bytes are streamed from the old one (same atomicity);
//! - `RETR` is a `GetObject`, with `Range` for a `REST` offset; `SIZE`/`MDTM` come from `HeadObject`;
//! - `LIST`/`NLST`/`MLSD` come from `ListObjectsV2` with delimiter `/`, every page;
//! - `RNFR`/`RNTO` of a file is `CopyObject` (a multipart `UploadPartCopy` above
//!   [`S3Options::multipart_copy_threshold`]) then `DeleteObject`; of a directory, a copy of every key under it,
//!   then the deletes (`rename.rs`: bounded by [`S3Options::max_rename_keys`], not atomic);
//! - `MFMT` and `SITE CHMOD` are unsupported (objects have no settable time or mode);
//! - the history methods behind `/@at/<TIME>/` and `/@versions/` come from the bucket's versioning (`versions.rs`).
//!
//! Files: this one maps FTP operations onto keys; `requests.rs` sends the requests (with retries) and reads their
//! answers; `upload.rs` is the multipart writer; `rename.rs` the copies and renames; `versions.rs` the history.
//!
//! Throttling (`503 SlowDown`, `429`) and server errors (5xx) and lost connections are retried inside with
//! exponential backoff, [`MAX_ATTEMPTS`] attempts in all; what remains becomes a [`StorageError`]. `https://`
//! endpoints use rustls with the system's trust roots and an optional extra CA file.

mod http;
mod listing;
mod rename;
mod requests;
mod upload;
mod versions;

/// Parses `xml` as a `ListObjectsV2` page and as a `ListObjectVersions` page, as the backend does; the number of
/// entries of each, or `None` where the document is refused. For the fuzz target `s3_listings` (S3's bytes are a
/// peer's bytes); not API.
#[doc(hidden)]
#[must_use]
pub fn fuzz_listing_pages(xml: &str) -> [Option<usize>; 2] {
    [
        listing::parse_objects(xml)
            .ok()
            .map(|page| page.objects.len() + page.prefixes.len()),
        listing::parse_versions(xml)
            .ok()
            .map(|page| page.versions.len() + page.prefixes.len()),
    ]
}

use self::requests::{
    acceptable_name, dir_metadata, file_metadata, parse_iso8601, status_error, tls_config,
    xml_field,
};
use self::upload::S3Upload;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use self::http::{Client, Method};
use super::{
    components, BoxFuture, DirEntry, FileKind, Metadata, ReadHandle, Storage, StorageError,
    StorageErrorKind, Upload, VersionInfo, WriteMode, RESERVED_NAME,
};

/// Parts of one upload sent at the same time; with the part being filled, memory per upload is at most
/// `(MAX_PARTS_IN_FLIGHT + 1) * part_size`.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;
/// Attempts of one request when the server throttles or fails (1 + retries).
pub const MAX_ATTEMPTS: u32 = 6;
/// The smallest part size S3 accepts (but for the last part).
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;
/// How long a presigned URL is valid: long enough for a slow part upload and its retries.
const URL_EXPIRY: Duration = Duration::from_secs(3600);
/// S3's limit on parts per multipart upload.
const MAX_PARTS: u16 = 10_000;
/// The largest object `CopyObject` copies in one request (S3's limit); larger ones are copied in parts.
pub const MAX_COPY_SIZE: u64 = 5 * 1024 * 1024 * 1024;
/// Longest object key S3 accepts, in bytes.
const MAX_KEY_LEN: usize = 1024;
/// Limit for XML response bodies (a page of 1,000 keys is ~300 KB).
const MAX_XML_BODY: usize = 16 * 1024 * 1024;

/// Characters escaped in `x-amz-copy-source` (unreserved ones and `/` stay).
const COPY_SOURCE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Options {
    /// Endpoint URL, `http://host:port` or `https://host`.
    pub endpoint: String,
    /// For `https`: PEM certificates to trust besides the system's roots (a private CA); `None`: the system's only.
    pub ca_file: Option<std::path::PathBuf>,
    /// Bucket name.
    pub bucket: String,
    /// Region used in signatures (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Key prefix under which the FTP root lives (`""`: the whole bucket; `"ftp"` and `"ftp/"` are the same).
    pub prefix: String,
    /// Path-style URLs (`endpoint/bucket/key`) instead of virtual-host style (`bucket.endpoint/key`).
    pub path_style: bool,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials, if any.
    pub session_token: Option<String>,
    /// Size of multipart upload parts, at least [`MIN_PART_SIZE`].
    pub part_size: usize,
    /// Timeout of each connect, request write and response read.
    pub timeout: Duration,
    /// First retry delay; each retry doubles it (capped at 32 times this).
    pub retry_base_delay: Duration,
    /// Objects larger than this are renamed with a multipart copy (`UploadPartCopy`) rather than one
    /// `CopyObject`; at most [`MAX_COPY_SIZE`]. Also the size of each copied part.
    pub multipart_copy_threshold: u64,
    /// A directory rename copies every key under it: refused above this many keys (a rename is not atomic, and
    /// a client waits for its reply meanwhile).
    pub max_rename_keys: usize,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            ca_file: None,
            bucket: String::new(),
            region: "us-east-1".to_owned(),
            prefix: String::new(),
            path_style: false,
            access_key_id: String::new(),
            secret_access_key: String::new(),
            session_token: None,
            part_size: 8 * 1024 * 1024,
            timeout: Duration::from_secs(60),
            retry_base_delay: Duration::from_millis(100),
            multipart_copy_threshold: 1024 * 1024 * 1024,
            max_rename_keys: 10_000,
        }
    }
}

/// A storage in an S3-compatible bucket; see the [module docs](self) for how FTP maps onto it. Clones share the
/// connection pool.
#[derive(Clone)]
pub struct S3Storage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for S3Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Storage")
            .field("bucket", &self.inner.bucket.name())
            .field("base_url", &self.inner.bucket.base_url().as_str())
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner {
    bucket: Bucket,
    credentials: Credentials,
    http: Arc<Client>,
    /// Key prefix of the root: empty or ending in `/`.
    prefix: String,
    part_size: usize,
    retry_base_delay: Duration,
    multipart_copy_threshold: u64,
    max_rename_keys: usize,
    /// Directories a listing showed to exist lately, by key prefix: an upload into one skips the parent's
    /// listing for [`RECENT_DIR_TTL`] (a thousand uploads into one folder cost a thousand listings before).
    recent_dirs: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How long a directory seen to exist is taken for granted by uploads into it. Another instance may remove it
/// meanwhile; an upload then recreates the prefix, as object storage allows. This instance's own `RMD` and
/// renames forget every entry at once.
const RECENT_DIR_TTL: Duration = Duration::from_secs(2);

/// At most this many directories are remembered (beyond, the memory is cleared).
const RECENT_DIRS: usize = 1024;

fn err(kind: StorageErrorKind, message: impl Into<String>) -> StorageError {
    StorageError::new(kind, message)
}

fn other(message: impl Into<String>) -> StorageError {
    err(StorageErrorKind::Other, message)
}

fn unsupported(what: &str) -> StorageError {
    err(
        StorageErrorKind::Unsupported,
        format!("{what} is not supported on object storage"),
    )
}

impl S3Storage {
    /// A storage for the bucket `options` names. Makes no request (see [`S3Storage::check`]).
    ///
    /// # Errors
    /// When the endpoint is not a valid `http://` URL, the bucket name is empty, or the part size is below
    /// [`MIN_PART_SIZE`].
    pub fn new(options: &S3Options) -> Result<Self, StorageError> {
        let endpoint = url::Url::parse(&options.endpoint)
            .map_err(|e| other(format!("S3 endpoint {:?}: {e}", options.endpoint)))?;
        if !matches!(endpoint.scheme(), "http" | "https") {
            return Err(other(format!(
                "S3 endpoint {:?}: http:// or https:// expected",
                options.endpoint
            )));
        }
        if options.bucket.is_empty() {
            return Err(other("S3 bucket name is empty"));
        }
        if options.part_size < MIN_PART_SIZE {
            return Err(other(format!(
                "S3 part size {} is below the minimum {MIN_PART_SIZE}",
                options.part_size
            )));
        }
        let style = if options.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(
            endpoint,
            style,
            options.bucket.clone(),
            options.region.clone(),
        )
        .map_err(|e| other(format!("S3 bucket: {e}")))?;
        let base = bucket.base_url();
        let host = base
            .host_str()
            .ok_or_else(|| other("S3 endpoint has no host"))?;
        let port = base.port_or_known_default().unwrap_or(80);
        // The Host header must be the one rusty-s3 signed: host, plus the port unless it is the default.
        let host_header = match base.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let addr = format!(
            "{}:{port}",
            host.trim_start_matches('[').trim_end_matches(']')
        );
        let addr = if host.starts_with('[') {
            format!(
                "[{}]:{port}",
                host.trim_start_matches('[').trim_end_matches(']')
            )
        } else {
            addr
        };
        let tls = match base.scheme() {
            "https" => {
                let name = rustls::pki_types::ServerName::try_from(
                    host.trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                )
                .map_err(|e| other(format!("S3 endpoint host {host:?}: {e}")))?;
                Some(http::Tls {
                    config: tls_config(options.ca_file.as_deref())?,
                    name,
                })
            }
            _ => None,
        };
        let credentials = match &options.session_token {
            Some(token) => Credentials::new_with_token(
                options.access_key_id.clone(),
                options.secret_access_key.clone(),
                token.clone(),
            ),
            None => Credentials::new(
                options.access_key_id.clone(),
                options.secret_access_key.clone(),
            ),
        };
        let prefix = options.prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(Self {
            inner: Arc::new(Inner {
                bucket,
                credentials,
                http: Client::new(addr, host_header, options.timeout, tls),
                prefix,
                part_size: options.part_size,
                retry_base_delay: options.retry_base_delay,
                multipart_copy_threshold: options
                    .multipart_copy_threshold
                    .clamp(MIN_PART_SIZE as u64, MAX_COPY_SIZE),
                max_rename_keys: options.max_rename_keys,
                recent_dirs: std::sync::Mutex::default(),
            }),
        })
    }

    /// Checks that the bucket can be listed with these credentials (one `ListObjectsV2` of a single key), so a
    /// wrong endpoint, bucket or key shows at start-up rather than at the first login.
    ///
    /// # Errors
    /// The failure, in words for the operator.
    pub async fn check(&self) -> Result<(), StorageError> {
        self.inner
            .list_page(&self.inner.prefix, false, None, 1)
            .await
            .map(|_| ())
    }

    /// Creates the bucket (tests and first-time setup); an existing bucket owned by us is fine.
    ///
    /// # Errors
    /// When the server refuses.
    pub async fn create_bucket(&self) -> Result<(), StorageError> {
        let inner = &self.inner;
        let url = inner
            .bucket
            .create_bucket(&inner.credentials)
            .sign(URL_EXPIRY);
        let response = inner.call(Method::Put, &url, &[], b"").await?;
        match response.status {
            200 | 409 => {
                response.body.discard().await;
                Ok(())
            }
            status => Err(status_error(status, response, "CreateBucket").await),
        }
    }

    /// The object key of a virtual path, and its parts (empty for the root).
    fn key<'p>(&self, path: &'p str) -> Result<(String, Vec<&'p str>), StorageError> {
        let parts = components(path)?;
        let key = format!("{}{}", self.inner.prefix, parts.join("/"));
        // Room for the trailing `/` of a directory marker.
        if key.len() + 1 > MAX_KEY_LEN {
            return Err(err(
                StorageErrorKind::NameTooLong,
                "object key longer than 1024 bytes",
            ));
        }
        Ok((key, parts))
    }

    /// The key prefix of the directory `parts` (the root's is the configured prefix).
    fn dir_prefix(&self, parts: &[&str]) -> String {
        if parts.is_empty() {
            self.inner.prefix.clone()
        } else {
            format!("{}{}/", self.inner.prefix, parts.join("/"))
        }
    }

    /// Whether directory `parts` exists: the root always, another when a key starts with its prefix.
    async fn dir_exists(&self, parts: &[&str]) -> Result<bool, StorageError> {
        if parts.is_empty() {
            return Ok(true);
        }
        let page = self
            .inner
            .list_page(&self.dir_prefix(parts), false, None, 1)
            .await?;
        Ok(!page.objects.is_empty() || !page.prefixes.is_empty())
    }

    /// The parent of `parts` must be an existing directory (one seen lately counts: see [`RECENT_DIR_TTL`]).
    async fn check_parent(&self, parts: &[&str]) -> Result<(), StorageError> {
        let Some((_, parent)) = parts.split_last() else {
            return Err(err(
                StorageErrorKind::PermissionDenied,
                "the root cannot be replaced",
            ));
        };
        let prefix = self.dir_prefix(parent);
        let fresh = |seen: &std::time::Instant| seen.elapsed() < RECENT_DIR_TTL;
        if let Ok(recent) = self.inner.recent_dirs.lock() {
            if recent.get(&prefix).is_some_and(fresh) {
                return Ok(());
            }
        }
        if self.dir_exists(parent).await? {
            if let Ok(mut recent) = self.inner.recent_dirs.lock() {
                if recent.len() >= RECENT_DIRS {
                    recent.clear();
                }
                recent.insert(prefix, std::time::Instant::now());
            }
            Ok(())
        } else {
            Err(err(
                StorageErrorKind::NotFound,
                "parent directory not found",
            ))
        }
    }

    /// Forgets every directory seen lately (this instance removes or renames one).
    fn forget_recent_dirs(&self) {
        if let Ok(mut recent) = self.inner.recent_dirs.lock() {
            recent.clear();
        }
    }

    /// What `key` names, from one listing in the usual case (a `HeadObject` and a listing before): the object's
    /// size if there is one, and whether a directory of that name exists (`key/` among the common prefixes).
    /// S3 lists in byte order, so `key` comes before `key/`; pages are followed only while neither was passed.
    async fn entry_at(&self, key: &str) -> Result<(Option<u64>, bool), StorageError> {
        let dir = format!("{key}/");
        let mut object = None;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .inner
                .list_page(key, true, token.as_deref(), 1000)
                .await?;
            let mut passed = false;
            for content in &page.objects {
                if content.key == key {
                    object = Some(content.size);
                }
                passed |= content.key.as_str() > dir.as_str();
            }
            for common in &page.prefixes {
                if *common == dir {
                    return Ok((object, true));
                }
                passed |= common.as_str() > dir.as_str();
            }
            match page.next_token {
                Some(next) if !passed => token = Some(next),
                _ => return Ok((object, false)),
            }
        }
    }

    /// Writes the marker of directory `parts` unless it is the root, so that it stays when its last entry goes.
    async fn keep_dir(&self, parts: &[&str]) -> Result<(), StorageError> {
        if parts.is_empty() {
            return Ok(());
        }
        self.inner.put(&self.dir_prefix(parts), b"").await
    }

    async fn do_metadata(&self, path: &str) -> Result<Metadata, StorageError> {
        let (key, parts) = self.key(path)?;
        if parts.is_empty() {
            return Ok(dir_metadata(None));
        }
        if let Some(head) = self.inner.head(&key).await? {
            return Ok(file_metadata(head.size, head.modified));
        }
        if self.dir_exists(&parts).await? {
            return Ok(dir_metadata(None));
        }
        Err(err(StorageErrorKind::NotFound, "no such file or directory"))
    }

    async fn do_list(&self, path: &str) -> Result<Vec<DirEntry>, StorageError> {
        let (key, parts) = self.key(path)?;
        let prefix = self.dir_prefix(&parts);
        let mut entries = Vec::new();
        let mut seen_any = false;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .inner
                .list_page(&prefix, true, token.as_deref(), 1000)
                .await?;
            seen_any |= !page.objects.is_empty() || !page.prefixes.is_empty();
            for object in &page.objects {
                let Some(name) = object.key.strip_prefix(&prefix) else {
                    continue;
                };
                // The directory's own marker is not an entry.
                if !acceptable_name(name) {
                    continue;
                }
                entries.push(DirEntry {
                    name: name.to_owned(),
                    metadata: file_metadata(object.size, object.modified),
                });
            }
            for common in &page.prefixes {
                let Some(name) = common
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.strip_suffix('/'))
                else {
                    continue;
                };
                if !acceptable_name(name) {
                    continue;
                }
                entries.push(DirEntry {
                    name: name.to_owned(),
                    metadata: dir_metadata(None),
                });
            }
            match page.next_token {
                Some(next) => token = Some(next),
                _ => break,
            }
        }
        if !seen_any && !parts.is_empty() {
            return Err(if self.inner.head(&key).await?.is_some() {
                err(StorageErrorKind::NotADirectory, "not a directory")
            } else {
                err(StorageErrorKind::NotFound, "no such directory")
            });
        }
        Ok(entries)
    }

    async fn do_open_read(&self, path: &str, offset: u64) -> Result<ReadHandle, StorageError> {
        let (key, parts) = self.key(path)?;
        if parts.is_empty() {
            return Err(err(
                StorageErrorKind::IsADirectory,
                "the root is a directory",
            ));
        }
        match self.inner.get(&key, offset, None).await? {
            Some(handle) => Ok(handle),
            None if self.dir_exists(&parts).await? => {
                Err(err(StorageErrorKind::IsADirectory, "is a directory"))
            }
            None => Err(err(StorageErrorKind::NotFound, "no such file")),
        }
    }

    async fn do_open_write(
        &self,
        path: &str,
        mode: WriteMode,
    ) -> Result<Box<dyn Upload>, StorageError> {
        let (key, parts) = self.key(path)?;
        if parts.is_empty() {
            return Err(err(
                StorageErrorKind::IsADirectory,
                "the root is a directory",
            ));
        }
        self.check_parent(&parts).await?;
        let (existing, is_dir) = self.entry_at(&key).await?;
        if existing.is_none() && is_dir {
            return Err(err(StorageErrorKind::IsADirectory, "is a directory"));
        }
        // Bytes of the old object that the new one starts with (APPE, REST + STOR).
        let keep = match (mode, existing) {
            (WriteMode::CreateNew, Some(_)) => {
                return Err(err(StorageErrorKind::AlreadyExists, "the name is taken"));
            }
            (WriteMode::Resume(_), None) => {
                return Err(err(StorageErrorKind::NotFound, "no file to resume"));
            }
            (WriteMode::Resume(offset), Some(size)) if offset > size => {
                return Err(other("resume offset past the end of the file"));
            }
            (WriteMode::Resume(offset), Some(_)) => offset,
            (WriteMode::Append, Some(size)) => size,
            _ => 0,
        };
        let mut upload = Box::new(S3Upload::new(Arc::clone(&self.inner), key.clone()));
        if keep > 0 {
            // Objects cannot change in place: the new one starts with a copy of the old bytes, streamed through
            // the upload (bounded memory); the old object stays until commit.
            let handle = self
                .inner
                .get(&key, 0, Some(keep))
                .await?
                .ok_or_else(|| err(StorageErrorKind::NotFound, "the file went away"))?;
            let copied = futures_lite::io::copy(handle.reader, &mut *upload).await;
            match copied {
                Ok(n) if n == keep => {}
                Ok(_) => {
                    upload.abort_now().await;
                    return Err(other("the old object was shorter than expected"));
                }
                Err(e) => {
                    upload.abort_now().await;
                    return Err(e.into());
                }
            }
            upload.written = 0;
        }
        Ok(upload)
    }

    async fn do_mkdir(&self, path: &str) -> Result<(), StorageError> {
        let (key, parts) = self.key(path)?;
        if parts.is_empty()
            || self.inner.head(&key).await?.is_some()
            || self.dir_exists(&parts).await?
        {
            return Err(err(StorageErrorKind::AlreadyExists, "exists"));
        }
        self.check_parent(&parts).await?;
        self.keep_dir(&parts).await
    }

    async fn do_rmdir(&self, path: &str) -> Result<(), StorageError> {
        self.forget_recent_dirs();
        let (key, parts) = self.key(path)?;
        if parts.is_empty() {
            return Err(err(
                StorageErrorKind::PermissionDenied,
                "the root cannot be removed",
            ));
        }
        let prefix = self.dir_prefix(&parts);
        let page = self.inner.list_page(&prefix, false, None, 2).await?;
        if page.objects.is_empty() {
            return Err(if self.inner.head(&key).await?.is_some() {
                err(StorageErrorKind::NotADirectory, "not a directory")
            } else {
                err(StorageErrorKind::NotFound, "no such directory")
            });
        }
        if page.objects.iter().any(|object| object.key != prefix) {
            return Err(err(StorageErrorKind::NotEmpty, "directory not empty"));
        }
        self.inner.delete(&prefix).await?;
        self.keep_dir(parts.split_last().map_or(&[][..], |(_, p)| p))
            .await
    }

    async fn do_delete(&self, path: &str) -> Result<(), StorageError> {
        let (key, parts) = self.key(path)?;
        if parts.is_empty() {
            return Err(err(
                StorageErrorKind::IsADirectory,
                "the root is a directory",
            ));
        }
        if self.inner.head(&key).await?.is_none() {
            return Err(if self.dir_exists(&parts).await? {
                err(StorageErrorKind::IsADirectory, "is a directory")
            } else {
                err(StorageErrorKind::NotFound, "no such file")
            });
        }
        self.inner.delete(&key).await?;
        self.keep_dir(parts.split_last().map_or(&[][..], |(_, p)| p))
            .await
    }
}

impl Storage for S3Storage {
    fn metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        Box::pin(self.do_metadata(path))
    }

    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        Box::pin(self.do_list(path))
    }

    fn open_read<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        Box::pin(self.do_open_read(path, offset))
    }

    fn open_write<'a>(
        &'a self,
        path: &'a str,
        mode: WriteMode,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        Box::pin(self.do_open_write(path, mode))
    }

    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.do_mkdir(path))
    }

    fn rmdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.do_rmdir(path))
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.do_delete(path))
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(self.do_rename(from, to))
    }

    fn metadata_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        Box::pin(self.do_metadata_at(path, at))
    }

    fn list_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        Box::pin(self.do_list_at(path, at))
    }

    fn open_read_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        Box::pin(self.do_open_read_at(path, at, offset))
    }

    fn versions<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionInfo>, StorageError>> {
        Box::pin(self.do_versions(path))
    }

    fn open_version<'a>(
        &'a self,
        path: &'a str,
        id: u64,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        Box::pin(self.do_open_version(path, id, offset))
    }

    fn set_modified<'a>(
        &'a self,
        _path: &'a str,
        _modified: SystemTime,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Err(unsupported("setting a modification time")) })
    }

    fn set_mode<'a>(
        &'a self,
        _path: &'a str,
        _mode: u32,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async { Err(unsupported("setting permissions")) })
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_versions;
