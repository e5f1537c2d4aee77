//! The decrypting reader: ciphertext segments in, verified plaintext out. Used by the storage layer (async
//! inner bodies) and by the offline [`decrypt_file`](super::decrypt_file) (a std reader behind
//! `AssertAsync`): one implementation for both.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncBufRead, AsyncRead, AsyncReadExt};

use super::format::{invalid, FileCipher, HEADER_LEN, SEGMENT_CIPHER_LEN, TAG_LEN};

/// Reads and returns the header at the start of `reader`.
pub(crate) async fn read_header<R: AsyncRead + Unpin>(
    reader: &mut R,
    what: &str,
) -> io::Result<[u8; HEADER_LEN]> {
    let mut header = [0; HEADER_LEN];
    match reader.read_exact(&mut header).await {
        Ok(()) => Ok(header),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(invalid(
            what,
            "not an encrypted file (shorter than the header)",
        )),
        Err(e) => Err(e),
    }
}

/// Decrypts segments from `inner`, which is positioned at the start of segment `counter`.
///
/// Which segment is the last is learnt by reading one byte past a full segment (STREAM's lookahead), so
/// the reader needs no size and notices bytes appended after the final segment. A segment's plaintext is
/// released only after its tag verified; the buffer is allocated once, segments are opened in place.
pub(crate) struct DecryptReader<R> {
    inner: R,
    cipher: FileCipher,
    /// A full sealed segment plus one lookahead byte.
    buf: Box<[u8]>,
    /// Ciphertext bytes in `buf` for the segment being read.
    have: usize,
    /// The lookahead byte: the first byte of the next segment, saved before that segment's buffer space is
    /// reused (the current plaintext occupies it until consumed).
    carry: Option<u8>,
    /// Verified plaintext `buf[pos..end]` not yet handed out.
    pos: usize,
    end: usize,
    counter: u64,
    /// Plaintext bytes to drop from the first segment (REST inside a segment).
    skip: usize,
    done: bool,
    /// A segment failed to verify: every later read fails too, never a clean end of file.
    failed: bool,
    /// Names the file in errors.
    what: String,
}

impl<R: AsyncRead + Unpin> DecryptReader<R> {
    /// A reader of segment `counter` onwards, dropping the first `skip` plaintext bytes.
    pub(crate) fn new(inner: R, cipher: FileCipher, counter: u64, skip: usize, what: &str) -> Self {
        Self {
            inner,
            cipher,
            buf: vec![0; SEGMENT_CIPHER_LEN + 1].into_boxed_slice(),
            have: 0,
            carry: None,
            pos: 0,
            end: 0,
            counter,
            skip,
            done: false,
            failed: false,
            what: what.to_owned(),
        }
    }

    /// Reads and verifies the next segment into `buf[pos..end]`.
    fn poll_segment(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(byte) = self.carry.take() {
            self.buf[0] = byte;
            self.have = 1;
        }
        let mut eof = false;
        while self.have < self.buf.len() {
            match Pin::new(&mut self.inner).poll_read(cx, &mut self.buf[self.have..]) {
                Poll::Ready(Ok(0)) => {
                    eof = true;
                    break;
                }
                Poll::Ready(Ok(n)) => self.have += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        let last = eof;
        let sealed = if last { self.have } else { SEGMENT_CIPHER_LEN };
        if sealed < TAG_LEN {
            self.failed = true;
            return Poll::Ready(Err(invalid(
                &self.what,
                format_args!(
                    "truncated (segment {} is missing or cut short)",
                    self.counter
                ),
            )));
        }
        if !last {
            self.carry = Some(self.buf[SEGMENT_CIPHER_LEN]);
        }
        self.have = 0;
        let opened = self
            .cipher
            .open(self.counter, last, &mut self.buf[..sealed], &self.what);
        let plain = match opened {
            Ok(plain) => plain,
            Err(e) => {
                self.failed = true;
                return Poll::Ready(Err(e));
            }
        };
        self.counter += 1;
        self.pos = self.skip.min(plain);
        self.end = plain;
        self.skip = 0;
        self.done = last;
        Poll::Ready(Ok(()))
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for DecryptReader<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.failed {
            return Poll::Ready(Err(invalid(
                &this.what,
                "an earlier segment failed to verify",
            )));
        }
        // A segment may hold nothing to hand out (REST to its end, an empty final segment): keep going.
        while this.pos == this.end && !this.done {
            match this.poll_segment(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(&this.buf[this.pos..this.end]))
    }

    fn consume(mut self: Pin<&mut Self>, amt: usize) {
        self.pos = (self.pos + amt).min(self.end);
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for DecryptReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(data)) => {
                let n = data.len().min(out.len());
                out[..n].copy_from_slice(&data[..n]);
                n
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        self.consume(n);
        Poll::Ready(Ok(n))
    }
}
