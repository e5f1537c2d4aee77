//! The encrypting writer and the [`Upload`] built on it. The writer serves the storage layer (over an inner
//! upload) and the offline [`encrypt_file`](super::encrypt_file) (over a std writer behind `AssertAsync`).

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::AsyncWrite;

use super::format::{FileCipher, HEADER_LEN, SEGMENT_CIPHER_LEN, SEGMENT_SIZE};
use crate::storage::{BoxFuture, StorageError, Upload};

/// Cuts the plaintext written into segments and writes the sealed file to `inner`.
///
/// A full segment is sealed only when the next byte arrives or the stream finishes, because only then is it
/// known whether it is the final one. The header and segment 0 leave in one write, every later segment in
/// one write of 64 KiB + tag; flushing does not cut a segment short.
pub(crate) struct EncryptWriter<W> {
    inner: W,
    cipher: FileCipher,
    /// Header (first segment only) then the segment's plaintext, sealed in place, then its tag.
    buf: Box<[u8]>,
    /// Where the current segment's plaintext starts in `buf`: after the header for segment 0, else 0.
    base: usize,
    /// Plaintext bytes at `buf[base..]`.
    len: usize,
    /// Sealed bytes `buf[out..out_end]` still to write to `inner`.
    out: usize,
    out_end: usize,
    counter: u64,
    final_sealed: bool,
}

impl<W: AsyncWrite + Unpin> EncryptWriter<W> {
    pub(crate) fn new(inner: W, cipher: FileCipher) -> Self {
        let mut buf = vec![0; HEADER_LEN + SEGMENT_CIPHER_LEN].into_boxed_slice();
        buf[..HEADER_LEN].copy_from_slice(cipher.header());
        Self {
            inner,
            cipher,
            buf,
            base: HEADER_LEN,
            len: 0,
            out: 0,
            out_end: 0,
            counter: 0,
            final_sealed: false,
        }
    }

    /// The inner writer, once [`poll_finish`](Self::poll_finish) completed (or to abort it).
    pub(crate) fn into_inner(self) -> W {
        self.inner
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out < self.out_end {
            match Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.out..self.out_end]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Seals the buffered segment; the drain then writes it out (with the header, for segment 0).
    fn seal(&mut self, last: bool) -> io::Result<()> {
        let sealed = self
            .cipher
            .seal(self.counter, last, &mut self.buf[self.base..], self.len)?;
        self.counter += 1;
        self.out = 0;
        self.out_end = self.base + sealed;
        self.base = 0;
        self.len = 0;
        Ok(())
    }

    /// Seals the final segment and writes and flushes everything; afterwards nothing more may be written.
    pub(crate) fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.final_sealed {
            match self.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            self.seal(true)?;
            self.final_sealed = true;
        }
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for EncryptWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.final_sealed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "encrypted stream already finished",
            )));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match this.poll_drain(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other.map(|r| r.map(|()| 0)),
            }
            if this.len == SEGMENT_SIZE {
                // More data follows a full segment: it is not the final one.
                this.seal(false)?;
                continue;
            }
            let n = (SEGMENT_SIZE - this.len).min(data.len());
            let at = this.base + this.len;
            this.buf[at..at + n].copy_from_slice(&data[..n]);
            this.len += n;
            return Poll::Ready(Ok(n));
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_finish(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_close(cx),
            other => other,
        }
    }
}

/// An upload through an [`Encrypted`](super::Encrypted) storage: always a new inner file (inner `Create` or
/// `CreateNew`), so every file has its own salt and no (key, nonce) pair is ever sealed twice.
pub(crate) struct EncryptedUpload {
    writer: Option<EncryptWriter<Box<dyn Upload>>>,
    /// Plaintext bytes the client wrote (not the copied prefix of an append).
    written: u64,
    /// `Append` / `Resume`: an interrupted transfer keeps what arrived, so abort finishes and commits.
    keep_on_abort: bool,
}

impl EncryptedUpload {
    pub(crate) fn new(writer: EncryptWriter<Box<dyn Upload>>, keep_on_abort: bool) -> Self {
        Self {
            writer: Some(writer),
            written: 0,
            keep_on_abort,
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "upload already finished")
}

impl AsyncWrite for EncryptedUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(writer) = self.writer.as_mut() else {
            return Poll::Ready(Err(gone()));
        };
        let result = Pin::new(writer).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = result {
            self.written += n as u64;
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.writer.as_mut() {
            Some(w) => Pin::new(w).poll_flush(cx),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing must not seal the final segment: only commit (or abort) decides the stream is complete.
        self.poll_flush(cx)
    }
}

/// Seals the final segment and commits the inner upload; aborts it if the stream cannot be finished.
async fn finish(mut writer: EncryptWriter<Box<dyn Upload>>) -> Result<u64, StorageError> {
    match poll_fn(|cx| writer.poll_finish(cx)).await {
        Ok(()) => writer.into_inner().commit().await,
        Err(e) => {
            writer.into_inner().abort().await;
            Err(e.into())
        }
    }
}

impl Upload for EncryptedUpload {
    fn commit(mut self: Box<Self>) -> BoxFuture<'static, Result<u64, StorageError>> {
        let writer = self.writer.take();
        let written = self.written;
        Box::pin(async move {
            let writer = writer.ok_or_else(|| StorageError::from(gone()))?;
            finish(writer).await.map(|_| written)
        })
    }

    fn abort(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        let writer = self.writer.take();
        let keep = self.keep_on_abort;
        Box::pin(async move {
            match writer {
                Some(writer) if keep => {
                    let _ = finish(writer).await;
                }
                Some(writer) => writer.into_inner().abort().await,
                None => {}
            }
        })
    }
}
