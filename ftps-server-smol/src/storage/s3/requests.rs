//! The requests under every operation: sending with retries, `ListObjectsV2`, `HeadObject`, `GetObject`,
//! `PutObject`, `DeleteObject`, and the small helpers that read their answers.

use std::io;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusty_s3::S3Action;

use super::http::{Method, Request, Response};
use super::listing::{parse_objects, ObjectsPage};
use super::*;

/// The TLS client configuration for an `https` endpoint: the system's trust roots plus those of `ca_file`.
pub(super) fn tls_config(
    ca_file: Option<&std::path::Path>,
) -> Result<Arc<rustls::ClientConfig>, StorageError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable individual system certificates are skipped, as every TLS client does.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| other(format!("S3 ca_file {}: {e}", path.display())))?;
        for cert in certs {
            let cert = cert.map_err(|e| other(format!("S3 ca_file {}: {e}", path.display())))?;
            roots
                .add(cert)
                .map_err(|e| other(format!("S3 ca_file {}: {e}", path.display())))?;
        }
    }
    if roots.is_empty() {
        return Err(other(
            "https S3 endpoint, but no trust roots (system or ca_file)",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| other(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Whether a name from a listing can be shown as an entry: not empty (the directory's own marker), no `/` (keys
/// like `a//b`), nothing [`components`] would refuse.
pub(super) fn acceptable_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name != RESERVED_NAME
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= crate::storage::MAX_NAME_LEN
}

pub(super) fn file_metadata(size: u64, modified: Option<SystemTime>) -> Metadata {
    Metadata {
        kind: FileKind::File,
        size,
        modified,
        mode: None,
    }
}

pub(super) fn dir_metadata(modified: Option<SystemTime>) -> Metadata {
    Metadata {
        kind: FileKind::Directory,
        size: 0,
        modified,
        mode: None,
    }
}

/// `2026-12-06T17:38:26.000Z` (ListObjectsV2's `LastModified`).
pub(super) fn parse_iso8601(text: &str) -> Option<SystemTime> {
    text.parse::<jiff::Timestamp>().ok().map(SystemTime::from)
}

/// `Sun, 06 Dec 2026 17:38:26 GMT` (the `Last-Modified` header, RFC 9110 IMF-fixdate).
pub(super) fn parse_http_date(text: &str) -> Option<SystemTime> {
    let time = jiff::fmt::strtime::parse("%a, %d %b %Y %H:%M:%S GMT", text.trim()).ok()?;
    let civil = time.to_datetime().ok()?;
    civil
        .to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|zoned| SystemTime::from(zoned.timestamp()))
}

/// What `HeadObject` says of an object.
pub(super) struct Head {
    pub(super) size: u64,
    pub(super) modified: Option<SystemTime>,
}

/// Whether a status is worth another attempt: throttling and server-side failures.
pub(super) fn retryable(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// The text between `<tag>` and `</tag>`, first occurrence (error documents and small results).
pub(super) fn xml_field<'t>(text: &'t str, tag: &str) -> Option<&'t str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text.get(start..)?.find(&close)? + start;
    text.get(start..end)
}

/// A failed response as a storage error, with the S3 error code for the log.
pub(super) async fn status_error(status: u16, response: Response, what: &str) -> StorageError {
    let body = response.body.bytes(64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let code = xml_field(&text, "Code").unwrap_or("");
    let kind = match (status, code) {
        (404, _) => StorageErrorKind::NotFound,
        (403, _) => StorageErrorKind::PermissionDenied,
        (400, "EntityTooLarge") => StorageErrorKind::QuotaExceeded,
        (400, "KeyTooLongError") => StorageErrorKind::NameTooLong,
        _ => StorageErrorKind::Other,
    };
    err(kind, format!("S3 {what}: HTTP {status} {code}"))
}

impl Inner {
    /// Sends a request, retrying throttling, 5xx and connection failures with exponential backoff.
    pub(super) async fn call(
        &self,
        method: Method,
        url: &url::Url,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Response, StorageError> {
        let target = &url[url::Position::BeforePath..];
        let request = Request {
            method,
            target,
            headers,
            body,
        };
        let mut delay = self.retry_base_delay;
        let mut attempt = 1;
        loop {
            let last = attempt >= MAX_ATTEMPTS;
            match self.http.send(&request).await {
                Ok(response) if retryable(response.status) && !last => {
                    tracing::debug!(status = response.status, attempt, "S3 request retried");
                    response.body.discard().await;
                }
                Ok(response) => return Ok(response),
                // A TLS failure (an untrusted certificate) or a malformed response will not fix itself.
                Err(e) if last || e.kind() == io::ErrorKind::InvalidData => {
                    return Err(other(format!(
                        "S3 request failed after {attempt} attempts: {e}"
                    )));
                }
                Err(e) => tracing::debug!(error = %e, attempt, "S3 request retried"),
            }
            // Jitter in [delay/2, delay): many sessions throttled at once do not retry in lockstep.
            let jitter = crate::storage::random_u64() % (delay.as_millis().max(2) as u64 / 2);
            async_io::Timer::after(delay / 2 + Duration::from_millis(jitter)).await;
            delay = (delay * 2).min(self.retry_base_delay * 32);
            attempt += 1;
        }
    }

    pub(super) async fn list_page(
        &self,
        prefix: &str,
        delimited: bool,
        token: Option<&str>,
        max_keys: usize,
    ) -> Result<ObjectsPage, StorageError> {
        // rusty-s3 asks for URL-encoded keys (`encoding-type=url`); `listing` decodes them as S3 encodes them.
        let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
        action.with_prefix(prefix);
        if delimited {
            action.with_delimiter("/");
        }
        if let Some(token) = token {
            action.with_continuation_token(token);
        }
        action.with_max_keys(max_keys);
        let url = action.sign(URL_EXPIRY);
        let response = self.call(Method::Get, &url, &[], b"").await?;
        if response.status != 200 {
            return Err(status_error(response.status, response, "ListObjectsV2").await);
        }
        let body = response.body.bytes(MAX_XML_BODY).await?;
        let text = std::str::from_utf8(&body).map_err(|_| other("S3 listing is not UTF-8"))?;
        parse_objects(text)
    }

    pub(super) async fn head(&self, key: &str) -> Result<Option<Head>, StorageError> {
        self.head_version(key, None).await
    }

    /// `HeadObject` of `key`, of one version of it when `version` is given.
    pub(super) async fn head_version(
        &self,
        key: &str,
        version: Option<&str>,
    ) -> Result<Option<Head>, StorageError> {
        let mut action = self.bucket.head_object(Some(&self.credentials), key);
        if let Some(version) = version {
            action.query_mut().insert("versionId", version);
        }
        let url = action.sign(URL_EXPIRY);
        let response = self.call(Method::Head, &url, &[], b"").await?;
        match response.status {
            200 => {
                let size = response
                    .header("content-length")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .ok_or_else(|| other("S3 HeadObject without Content-Length"))?;
                let modified = response.header("last-modified").and_then(parse_http_date);
                response.body.discard().await;
                Ok(Some(Head { size, modified }))
            }
            404 => {
                response.body.discard().await;
                Ok(None)
            }
            status => Err(status_error(status, response, "HeadObject").await),
        }
    }

    /// Opens `key` from `offset`, `len` bytes at most (to the end when `None`); `None` when there is no object.
    pub(super) async fn get(
        &self,
        key: &str,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Option<ReadHandle>, StorageError> {
        self.get_version(key, None, offset, len).await
    }

    /// [`get`](Self::get) of one version of `key` when `version` is given.
    pub(super) async fn get_version(
        &self,
        key: &str,
        version: Option<&str>,
        offset: u64,
        len: Option<u64>,
    ) -> Result<Option<ReadHandle>, StorageError> {
        let mut action = self.bucket.get_object(Some(&self.credentials), key);
        if let Some(version) = version {
            action.query_mut().insert("versionId", version);
        }
        let url = action.sign(URL_EXPIRY);
        let range = match len {
            Some(len) => format!("bytes={offset}-{}", (offset + len).saturating_sub(1)),
            None => format!("bytes={offset}-"),
        };
        let headers: &[(&str, &str)] = if offset > 0 || len.is_some() {
            &[("Range", range.as_str())]
        } else {
            &[]
        };
        let response = self.call(Method::Get, &url, headers, b"").await?;
        match response.status {
            200 | 206 => {
                let length = response
                    .header("content-length")
                    .and_then(|v| v.trim().parse::<u64>().ok());
                // `Content-Range: bytes 10-99/100`: the total after the slash.
                let total = match response.status {
                    206 => response
                        .header("content-range")
                        .and_then(|v| v.rsplit('/').next())
                        .and_then(|v| v.trim().parse::<u64>().ok()),
                    _ => length,
                };
                let size = total.ok_or_else(|| other("S3 GetObject without a size"))?;
                if response.status == 200 && offset > 0 {
                    // A server that ignored the Range: not what REST asked for.
                    response.body.discard().await;
                    return Err(other("S3 GetObject ignored the Range header"));
                }
                Ok(Some(ReadHandle {
                    reader: Box::new(response.body.into_reader()),
                    size,
                }))
            }
            404 => {
                response.body.discard().await;
                Ok(None)
            }
            // The offset is at or past the end: an empty body (REST at the end of a file).
            416 => {
                response.body.discard().await;
                let Some(head) = self.head_version(key, version).await? else {
                    return Ok(None);
                };
                Ok(Some(ReadHandle {
                    reader: Box::new(futures_lite::io::empty()),
                    size: head.size,
                }))
            }
            status => Err(status_error(status, response, "GetObject").await),
        }
    }

    pub(super) async fn put(&self, key: &str, data: &[u8]) -> Result<(), StorageError> {
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(URL_EXPIRY);
        let response = self.call(Method::Put, &url, &[], data).await?;
        match response.status {
            200 => {
                response.body.discard().await;
                Ok(())
            }
            status => Err(status_error(status, response, "PutObject").await),
        }
    }

    pub(super) async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(URL_EXPIRY);
        let response = self.call(Method::Delete, &url, &[], b"").await?;
        match response.status {
            200 | 204 => {
                response.body.discard().await;
                Ok(())
            }
            status => Err(status_error(status, response, "DeleteObject").await),
        }
    }
}
