//! `STOR` on S3: [`S3Upload`] streams into a multipart upload (parts of the configured size, at most
//! [`MAX_PARTS_IN_FLIGHT`] in flight) that `commit` completes, or one `PutObject` for a file under one part.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{future, AsyncWrite};
use rusty_s3::actions::CreateMultipartUpload;
use rusty_s3::S3Action;

use super::http::Method;
use super::*;

impl Inner {
    pub(super) async fn create_multipart(
        self: Arc<Self>,
        key: String,
    ) -> Result<String, StorageError> {
        let url = self
            .bucket
            .create_multipart_upload(Some(&self.credentials), &key)
            .sign(URL_EXPIRY);
        let response = self.call(Method::Post, &url, &[], b"").await?;
        if response.status != 200 {
            return Err(status_error(response.status, response, "CreateMultipartUpload").await);
        }
        let body = response.body.bytes(MAX_XML_BODY).await?;
        let text = std::str::from_utf8(&body).map_err(|_| other("S3 reply is not UTF-8"))?;
        let parsed = CreateMultipartUpload::parse_response(text)
            .map_err(|e| other(format!("S3 CreateMultipartUpload: {e}")))?;
        Ok(parsed.upload_id().to_owned())
    }

    pub(super) async fn upload_part(
        self: Arc<Self>,
        key: String,
        upload_id: Arc<str>,
        number: u16,
        data: Vec<u8>,
    ) -> Result<(u16, String), StorageError> {
        let url = self
            .bucket
            .upload_part(Some(&self.credentials), &key, number, &upload_id)
            .sign(URL_EXPIRY);
        let response = self.call(Method::Put, &url, &[], &data).await?;
        if response.status != 200 {
            return Err(status_error(response.status, response, "UploadPart").await);
        }
        let etag = response
            .header("etag")
            .ok_or_else(|| other("S3 UploadPart without an ETag"))?
            .to_owned();
        response.body.discard().await;
        Ok((number, etag))
    }

    pub(super) async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[(u16, String)],
    ) -> Result<(), StorageError> {
        let action = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            upload_id,
            parts.iter().map(|(_, etag)| etag.as_str()),
        );
        let url = action.sign(URL_EXPIRY);
        let body = action.body();
        let response = self.call(Method::Post, &url, &[], body.as_bytes()).await?;
        if response.status != 200 {
            return Err(status_error(response.status, response, "CompleteMultipartUpload").await);
        }
        // Like CopyObject, the failure can come after a 200.
        let body = response.body.bytes(MAX_XML_BODY).await?;
        let text = String::from_utf8_lossy(&body);
        if text.contains("<Error>") {
            let code = xml_field(&text, "Code").unwrap_or("");
            return Err(other(format!("S3 CompleteMultipartUpload: {code}")));
        }
        Ok(())
    }

    pub(super) async fn abort_multipart(&self, key: &str, upload_id: &str) {
        let url = self
            .bucket
            .abort_multipart_upload(Some(&self.credentials), key, upload_id)
            .sign(URL_EXPIRY);
        match self.call(Method::Delete, &url, &[], b"").await {
            Ok(response) if response.status == 204 || response.status == 200 => {
                response.body.discard().await;
            }
            Ok(response) => {
                let e = status_error(response.status, response, "AbortMultipartUpload").await;
                tracing::warn!(key, error = %e, "cannot abort a multipart upload; its parts stay until a lifecycle rule removes them");
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "cannot abort a multipart upload; its parts stay until a lifecycle rule removes them");
            }
        }
    }
}

type PartFuture = BoxFuture<'static, Result<(u16, String), StorageError>>;

/// An upload in progress: the part being filled, parts in flight, and the multipart upload once one was needed.
pub(super) struct S3Upload {
    inner: Arc<Inner>,
    key: String,
    buffer: Vec<u8>,
    /// `CreateMultipartUpload` in flight (started when the first part is full).
    creating: Option<BoxFuture<'static, Result<String, StorageError>>>,
    upload_id: Option<Arc<str>>,
    next_part: u16,
    in_flight: Vec<PartFuture>,
    done_parts: Vec<(u16, String)>,
    /// Bytes written through this upload (what commit reports).
    pub(super) written: u64,
    failed: Option<StorageError>,
    /// Committed or aborted: nothing left to clean up on drop.
    finished: bool,
}

impl S3Upload {
    pub(super) fn new(inner: Arc<Inner>, key: String) -> Self {
        Self {
            inner,
            key,
            buffer: Vec::new(),
            creating: None,
            upload_id: None,
            next_part: 1,
            in_flight: Vec::new(),
            done_parts: Vec::new(),
            written: 0,
            failed: None,
            finished: false,
        }
    }

    /// Polls every part in flight, keeping the finished ones' ETags; the first failure sticks.
    fn poll_parts(&mut self, cx: &mut Context<'_>) {
        let mut i = 0;
        while i < self.in_flight.len() {
            match self.in_flight[i].as_mut().poll(cx) {
                Poll::Pending => i += 1,
                Poll::Ready(result) => {
                    drop(self.in_flight.swap_remove(i));
                    match result {
                        Ok(part) => self.done_parts.push(part),
                        Err(e) => {
                            if self.failed.is_none() {
                                self.failed = Some(e);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Makes sure the multipart upload exists (creating it if needed).
    fn poll_upload_id(&mut self, cx: &mut Context<'_>) -> Poll<Result<Arc<str>, StorageError>> {
        if let Some(id) = &self.upload_id {
            return Poll::Ready(Ok(Arc::clone(id)));
        }
        let creating = self.creating.get_or_insert_with(|| {
            Box::pin(Arc::clone(&self.inner).create_multipart(self.key.clone()))
        });
        match creating.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                self.creating = None;
                let id: Arc<str> = Arc::from(result?);
                self.upload_id = Some(Arc::clone(&id));
                Poll::Ready(Ok(id))
            }
        }
    }

    /// Sends the buffered part once the upload exists and a slot is free.
    fn poll_send_part(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StorageError>> {
        let id = match self.poll_upload_id(cx) {
            Poll::Ready(Ok(id)) => id,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        self.poll_parts(cx);
        if let Some(e) = &self.failed {
            return Poll::Ready(Err(e.clone()));
        }
        if self.in_flight.len() >= MAX_PARTS_IN_FLIGHT {
            return Poll::Pending;
        }
        if self.next_part > MAX_PARTS {
            return Poll::Ready(Err(err(
                StorageErrorKind::QuotaExceeded,
                "file larger than 10,000 parts (raise part_size_mib)",
            )));
        }
        let data = std::mem::take(&mut self.buffer);
        let number = self.next_part;
        self.next_part += 1;
        let mut part: PartFuture =
            Box::pin(Arc::clone(&self.inner).upload_part(self.key.clone(), id, number, data));
        // Start it now, so its waker is registered.
        match part.as_mut().poll(cx) {
            Poll::Ready(Ok(done)) => self.done_parts.push(done),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => self.in_flight.push(part),
        }
        Poll::Ready(Ok(()))
    }

    /// Waits for every part in flight.
    async fn drain(&mut self) -> Result<(), StorageError> {
        future::poll_fn(|cx| {
            self.poll_parts(cx);
            if self.in_flight.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn finish_commit(&mut self) -> Result<(), StorageError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if self.upload_id.is_none() && self.creating.is_none() {
            // Smaller than one part: a single PUT.
            let data = std::mem::take(&mut self.buffer);
            return self.inner.put(&self.key, &data).await;
        }
        if !self.buffer.is_empty() || self.next_part == 1 {
            future::poll_fn(|cx| self.poll_send_part(cx)).await?;
        }
        self.drain().await?;
        let id = self
            .upload_id
            .clone()
            .ok_or_else(|| other("multipart upload without an id"))?;
        self.done_parts.sort_by_key(|(number, _)| *number);
        self.inner
            .complete_multipart(&self.key, &id, &self.done_parts)
            .await
    }

    /// Cancels the parts in flight and the multipart upload, if any; the previous object stays.
    pub(super) async fn abort_now(&mut self) {
        self.finished = true;
        self.in_flight.clear();
        if let Some(creating) = self.creating.take() {
            if let Ok(id) = creating.await {
                self.upload_id = Some(Arc::from(id));
            }
        }
        if let Some(id) = self.upload_id.take() {
            self.inner.abort_multipart(&self.key, &id).await;
        }
    }
}

impl AsyncWrite for S3Upload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            this.poll_parts(cx);
            if let Some(e) = &this.failed {
                return Poll::Ready(Err(e.clone().into()));
            }
            let room = this.inner.part_size - this.buffer.len();
            if room > 0 {
                if this.buffer.capacity() == 0 {
                    this.buffer.reserve_exact(this.inner.part_size);
                }
                let n = room.min(data.len());
                this.buffer.extend_from_slice(&data[..n]);
                this.written += n as u64;
                return Poll::Ready(Ok(n));
            }
            match this.poll_send_part(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => this.failed = Some(e),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Parts go out as they fill; a flush only keeps the ones in flight moving.
        self.poll_parts(cx);
        match &self.failed {
            Some(e) => Poll::Ready(Err(e.clone().into())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl Upload for S3Upload {
    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, StorageError>> {
        Box::pin(async move {
            match self.finish_commit().await {
                Ok(()) => {
                    self.finished = true;
                    Ok(self.written)
                }
                Err(e) => {
                    self.abort_now().await;
                    Err(e)
                }
            }
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move { self.abort_now().await })
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Dropped without commit or abort: abort in the background, best effort.
        let inner = Arc::clone(&self.inner);
        let key = std::mem::take(&mut self.key);
        let id = self.upload_id.take();
        let creating = self.creating.take();
        if id.is_none() && creating.is_none() {
            return;
        }
        smol::spawn(async move {
            let id = match (id, creating) {
                (Some(id), _) => id.to_string(),
                (None, Some(creating)) => match creating.await {
                    Ok(id) => id,
                    Err(_) => return,
                },
                (None, None) => return,
            };
            inner.abort_multipart(&key, &id).await;
        })
        .detach();
    }
}
