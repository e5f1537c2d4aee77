//! The SHA-256 of an upload's bytes, computed as they are written, for the upload's event.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_lite::AsyncWrite;

use crate::storage::{BoxFuture, StorageError, Upload};

/// Where a session finds the digest of its last committed upload (one transfer runs at a time per session).
pub(crate) type DigestSlot = Arc<Mutex<Option<String>>>;

/// An [`Upload`] that hashes what passes through it and, once committed, leaves the hex digest in its slot.
pub(crate) struct HashingUpload {
    inner: Box<dyn Upload>,
    context: ring::digest::Context,
    slot: DigestSlot,
}

impl HashingUpload {
    pub(crate) fn new(inner: Box<dyn Upload>, slot: DigestSlot) -> Self {
        Self {
            inner,
            context: ring::digest::Context::new(&ring::digest::SHA256),
            slot,
        }
    }
}

impl AsyncWrite for HashingUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            // Only what the storage took: a short write's rest comes again.
            this.context.update(&buf[..n.min(buf.len())]);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

impl Upload for HashingUpload {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<u64, StorageError>> {
        let Self {
            inner,
            context,
            slot,
        } = *self;
        Box::pin(async move {
            let written = inner.commit().await?;
            let digest: String = context
                .finish()
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            if let Ok(mut slot) = slot.lock() {
                *slot = Some(digest);
            }
            Ok(written)
        })
    }

    fn abort(self: Box<Self>) -> BoxFuture<'static, ()> {
        self.inner.abort()
    }
}
