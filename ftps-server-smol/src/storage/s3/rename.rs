//! `RNFR`/`RNTO` on S3: a file is one server-side copy then a delete; a directory is a copy of every key under its
//! prefix, then the deletes.
//!
//! A directory rename is **not atomic** and is bounded ([`S3Options::max_rename_keys`](super::S3Options), 10,000
//! keys by default; above, it is refused before anything is copied). Every copy is made before the first delete,
//! so no object is ever lost: a failed copy removes the copies made so far (best effort) and leaves the source as
//! it was; a crash or failure after that point leaves both names for some keys (the new one complete, the old
//! one still there), which a second rename or a delete of the old folder finishes. Clients may see both folders
//! while it runs.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use futures_lite::future;

use super::http::Method;
use super::*;

/// Requests sent at the same time by a batch: a directory rename's copies and deletes, a past listing's
/// subdirectory checks.
pub(super) const BATCH_CONCURRENCY: usize = 8;

/// One request of a batch run by [`join_all`].
pub(super) type Step<'a, T = Result<(), StorageError>> =
    Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs `steps` all at once and returns each one's result, in order.
pub(super) async fn join_all<T>(steps: Vec<Step<'_, T>>) -> Vec<T> {
    let mut steps: Vec<Option<Step<'_, T>>> = steps.into_iter().map(Some).collect();
    let mut results: Vec<Option<T>> = steps.iter().map(|_| None).collect();
    future::poll_fn(|cx| {
        let mut pending = false;
        for (slot, result) in steps.iter_mut().zip(results.iter_mut()) {
            if let Some(step) = slot {
                match step.as_mut().poll(cx) {
                    Poll::Ready(done) => {
                        *result = Some(done);
                        *slot = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    // Every step finished (the poll above returns Ready only then), so no result is missing.
    results.into_iter().flatten().collect()
}

impl S3Storage {
    pub(super) async fn do_rename(&self, from: &str, to: &str) -> Result<(), StorageError> {
        self.forget_recent_dirs();
        let (from_key, from_parts) = self.key(from)?;
        let (to_key, to_parts) = self.key(to)?;
        if from_parts.is_empty() || to_parts.is_empty() {
            return Err(err(
                StorageErrorKind::PermissionDenied,
                "the root cannot be renamed",
            ));
        }
        let Some(head) = self.inner.head(&from_key).await? else {
            return if self.dir_exists(&from_parts).await? {
                self.rename_dir(&from_parts, &to_key, &to_parts).await
            } else {
                Err(err(StorageErrorKind::NotFound, "no such file"))
            };
        };
        if from_key == to_key {
            return Ok(());
        }
        self.check_parent(&to_parts).await?;
        if self.inner.head(&to_key).await?.is_none() && self.dir_exists(&to_parts).await? {
            return Err(err(
                StorageErrorKind::IsADirectory,
                "the target is a directory",
            ));
        }
        self.copy_object(&from_key, &to_key, head.size).await?;
        self.inner.delete(&from_key).await?;
        self.keep_dir(from_parts.split_last().map_or(&[][..], |(_, p)| p))
            .await
    }

    async fn copy_object(&self, from: &str, to: &str, size: u64) -> Result<(), StorageError> {
        if size > self.inner.multipart_copy_threshold {
            self.inner.copy_multipart(from, to, size).await
        } else {
            self.inner.copy(from, to).await
        }
    }

    /// Renames directory `from_parts` to `to_parts` (see the module docs).
    async fn rename_dir(
        &self,
        from_parts: &[&str],
        to_key: &str,
        to_parts: &[&str],
    ) -> Result<(), StorageError> {
        let from_prefix = self.dir_prefix(from_parts);
        let to_prefix = self.dir_prefix(to_parts);
        if from_prefix == to_prefix {
            return Ok(());
        }
        if to_prefix.starts_with(&from_prefix) {
            return Err(err(
                StorageErrorKind::InvalidName,
                "a directory cannot move into itself",
            ));
        }
        self.check_parent(to_parts).await?;
        if self.inner.head(to_key).await?.is_some() {
            return Err(err(StorageErrorKind::NotADirectory, "the target is a file"));
        }
        // POSIX: an empty directory (its marker alone) may be replaced, a non-empty one not.
        let target = self.inner.list_page(&to_prefix, false, None, 2).await?;
        if target.objects.iter().any(|o| o.key != to_prefix) || !target.prefixes.is_empty() {
            return Err(err(
                StorageErrorKind::NotEmpty,
                "the target directory is not empty",
            ));
        }

        let limit = self.inner.max_rename_keys;
        let mut keys: Vec<(String, u64)> = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .inner
                .list_page(&from_prefix, false, token.as_deref(), 1000)
                .await?;
            keys.extend(page.objects.into_iter().map(|o| (o.key, o.size)));
            if keys.len() > limit {
                return Err(other(format!(
                    "renaming a directory of more than {limit} objects is refused on object storage \
                     (each is copied); move its subdirectories one at a time"
                )));
            }
            match page.next_token {
                Some(next) => token = Some(next),
                _ => break,
            }
        }
        if keys.is_empty() {
            return Err(err(StorageErrorKind::NotFound, "no such directory"));
        }
        let mut targets = Vec::with_capacity(keys.len());
        for (key, _) in &keys {
            let rest = key.get(from_prefix.len()..).unwrap_or_default();
            let target = format!("{to_prefix}{rest}");
            if target.len() > MAX_KEY_LEN {
                return Err(err(
                    StorageErrorKind::NameTooLong,
                    "a renamed key would be longer than 1024 bytes",
                ));
            }
            targets.push(target);
        }

        // Every copy first: until the last one is made, the source is untouched.
        let mut copied = 0;
        for chunk in keys.chunks(BATCH_CONCURRENCY) {
            let steps = chunk
                .iter()
                .zip(&targets[copied..])
                .map(|((key, size), target)| -> Step<'_> {
                    Box::pin(self.copy_object(key, target, *size))
                })
                .collect();
            let failed = join_all(steps).await.into_iter().find_map(Result::err);
            copied += chunk.len();
            if let Some(e) = failed {
                // Remove what this rename made, so a failed rename leaves one folder, as it was.
                for target in &targets[..copied] {
                    let _ = self.inner.delete(target).await;
                }
                return Err(e);
            }
        }
        for chunk in keys.chunks(BATCH_CONCURRENCY) {
            let steps = chunk
                .iter()
                .map(|(key, _)| -> Step<'_> { Box::pin(self.inner.delete(key)) })
                .collect();
            if let Some(e) = join_all(steps).await.into_iter().find_map(Result::err) {
                return Err(e);
            }
        }
        self.forget_recent_dirs();
        self.keep_dir(from_parts.split_last().map_or(&[][..], |(_, p)| p))
            .await
    }
}

impl Inner {
    async fn copy(&self, from: &str, to: &str) -> Result<(), StorageError> {
        let source = self.copy_source(from);
        let mut action = self.bucket.put_object(Some(&self.credentials), to);
        // Signed with the request, as SigV4 wants every x-amz-* header signed.
        action
            .headers_mut()
            .insert("x-amz-copy-source", source.clone());
        let url = action.sign(URL_EXPIRY);
        let response = self
            .call(Method::Put, &url, &[("x-amz-copy-source", &source)], b"")
            .await?;
        if response.status != 200 {
            return Err(status_error(response.status, response, "CopyObject").await);
        }
        // CopyObject can fail after its 200: the error is then in the body.
        let body = response.body.bytes(MAX_XML_BODY).await?;
        let text = String::from_utf8_lossy(&body);
        if text.contains("<Error>") {
            let code = xml_field(&text, "Code").unwrap_or("");
            return Err(other(format!("S3 CopyObject: {code}")));
        }
        Ok(())
    }

    /// `x-amz-copy-source` for `key` of this bucket.
    fn copy_source(&self, key: &str) -> String {
        format!(
            "/{}/{}",
            self.bucket.name(),
            utf8_percent_encode(key, COPY_SOURCE)
        )
    }

    /// Copies a large object in parts of `multipart_copy_threshold` bytes (`UploadPartCopy`), all server-side;
    /// the target appears at the end, and a failure aborts the upload.
    async fn copy_multipart(
        self: &Arc<Self>,
        from: &str,
        to: &str,
        size: u64,
    ) -> Result<(), StorageError> {
        let id = Arc::clone(self).create_multipart(to.to_owned()).await?;
        let result = self.copy_parts(from, to, size, &id).await;
        if result.is_err() {
            self.abort_multipart(to, &id).await;
        }
        result
    }

    async fn copy_parts(
        &self,
        from: &str,
        to: &str,
        size: u64,
        id: &str,
    ) -> Result<(), StorageError> {
        let source = self.copy_source(from);
        let mut parts = Vec::new();
        let mut offset = 0;
        let mut number: u16 = 1;
        while offset < size {
            let end = offset
                .saturating_add(self.multipart_copy_threshold)
                .min(size)
                - 1;
            let range = format!("bytes={offset}-{end}");
            let mut action = self
                .bucket
                .upload_part(Some(&self.credentials), to, number, id);
            action
                .headers_mut()
                .insert("x-amz-copy-source", source.clone());
            action
                .headers_mut()
                .insert("x-amz-copy-source-range", range.clone());
            let url = action.sign(URL_EXPIRY);
            let headers = [
                ("x-amz-copy-source", source.as_str()),
                ("x-amz-copy-source-range", range.as_str()),
            ];
            let response = self.call(Method::Put, &url, &headers, b"").await?;
            if response.status != 200 {
                return Err(status_error(response.status, response, "UploadPartCopy").await);
            }
            let body = response.body.bytes(MAX_XML_BODY).await?;
            let text = String::from_utf8_lossy(&body);
            if text.contains("<Error>") {
                let code = xml_field(&text, "Code").unwrap_or("");
                return Err(other(format!("S3 UploadPartCopy: {code}")));
            }
            let etag = xml_field(&text, "ETag")
                .ok_or_else(|| other("S3 UploadPartCopy without an ETag"))?
                .replace("&quot;", "\"");
            parts.push((number, etag));
            offset = end + 1;
            number = number
                .checked_add(1)
                .filter(|n| *n <= MAX_PARTS)
                .ok_or_else(|| other("multipart copy needs more than 10,000 parts"))?;
        }
        self.complete_multipart(to, id, &parts).await
    }
}
