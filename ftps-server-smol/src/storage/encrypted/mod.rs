//! [`Encrypted`]: a [`Storage`] layer that keeps every file encrypted at rest under a per-user data key, and
//! the file format it writes.
//!
//! # Format (version 1)
//!
//! STREAM (Hoang, Reyhanitabar, Rogaway, Vizár, "Online Authenticated-Encryption and its Nonce-Reuse
//! Misuse-Resistance", CRYPTO 2015) over AES-256-GCM: the file is cut into segments that are sealed
//! separately, so it can be written and read as a stream, and read from any segment (REST) without
//! decrypting what comes before. All integers are big-endian.
//!
//! ```text
//! offset  size  field
//! 0       8     magic "FTPSENC\x01" (the last byte is the format version)
//! 8       4     plaintext segment size, u32: 65536 (the only value version 1 accepts)
//! 12      32    salt: random, new for every file written
//! 44      ...   segments 0..n-1: AES-256-GCM ciphertext of the segment's plaintext, then its 16-byte tag
//! ```
//!
//! - **File key** = HKDF-SHA256 (RFC 5869) with salt = the 32-byte salt, IKM = the user's 32-byte data key,
//!   info = `"ftps-rs FTPSENC v1 file key"`, output 32 bytes: the AES-256-GCM key for this file only.
//! - **Segments**: every segment but the last holds exactly 65536 plaintext bytes (65552 on disk); the last
//!   holds 1..=65536 bytes, or 0 when the file is empty (an empty file is the header and one empty final
//!   segment: 60 bytes). A plaintext of `P` bytes has `n = max(1, ceil(P / 65536))` segments and
//!   `44 + P + 16 n` bytes on disk ([`ciphertext_len`], [`plaintext_len`]).
//! - **Nonce** of segment `i` (12 bytes): 7 zero bytes, `i` as u32, then 1 on the final segment and 0
//!   otherwise. At most 2^32 segments (256 TiB of plaintext); larger files are refused.
//! - **AAD** of every segment: the 44 header bytes, so a change anywhere in the header fails every segment.
//!
//! A decryptor reads the header, checks magic and segment size, derives the key, then reads 65552 bytes at a
//! time plus one byte of lookahead: a segment followed by more data is opened with flag 0, the segment that
//! ends the file with flag 1. Any tag failure is fatal; plaintext of a segment is released only after its
//! tag verified. This catches changed bytes, truncation anywhere (a cut at a segment boundary leaves a
//! non-final segment at the end, which does not open with flag 1), appended bytes, reordered segments,
//! segments from another file (another salt, so another key) and files of another user (another data key).
//! [`decrypt_file`] is that decryptor, for offline use (`ftps-server keys decrypt`).
//!
//! # Writes
//!
//! Every upload writes a **new** file with a new salt through the inner storage's `Create` (or `CreateNew`),
//! so the inner layer's atomicity holds and no (key, nonce) pair is ever used for two plaintexts. `APPE` and
//! `REST`+`STOR` therefore cannot write in place: the upload first decrypts and re-encrypts the existing
//! plaintext (all of it for `Append`, the first `n` bytes for `Resume(n)`) into the new file, then streams the new bytes; commit replaces the file atomically. That
//! costs O(existing size) local work per append (about 1 s per GiB: `benches/encryption.rs` measured 2.3 GiB/s
//! decrypting and 1.6 GiB/s encrypting on one core), the price of never
//! reusing a nonce: re-sealing the last segment in place would seal different plaintext under the same key
//! and nonce, which breaks GCM's confidentiality and authenticity. To keep [`WriteMode`]'s promise that an
//! interrupted append keeps what arrived, [`Upload::abort`] of an append or resume finishes the stream and
//! commits; dropping one without commit or abort cannot run that async work and leaves the old file.
//! `Resume(n)` past the end of the file is refused ([`StorageErrorKind::Other`]): the local backend makes a
//! sparse hole there for free, but here every byte of the hole would be encrypted and written, so a
//! `REST 1000000000000` would turn into a terabyte of zeros.
//!
//! Listings and metadata report plaintext sizes; a file whose size no plaintext encrypts to is listed with
//! size 0 and fails to open.

mod format;
mod read;
mod write;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::SystemTime;

use futures_lite::future::block_on;
use futures_lite::io::AssertAsync;
use futures_lite::{AsyncBufReadExt, AsyncWriteExt};

pub use format::{
    ciphertext_len, locate, plaintext_len, segment_count, SegmentPos, HEADER_LEN, HKDF_INFO, MAGIC,
    MAX_PLAINTEXT_LEN, MAX_SEGMENTS, SALT_LEN, SEGMENT_CIPHER_LEN, SEGMENT_SIZE, TAG_LEN,
};

use self::format::FileCipher;
use self::read::{read_header, DecryptReader};
use self::write::{EncryptWriter, EncryptedUpload};
use super::{
    BoxFuture, DirEntry, FileKind, Metadata, ReadHandle, Storage, StorageError, StorageErrorKind,
    Upload, VersionInfo, WriteMode,
};

/// The body type of inner and outer read handles.
type InnerReader = Box<dyn futures_lite::AsyncRead + Send + Unpin>;

/// A user's 32-byte data key: the input of every file key of that user. The bytes are overwritten when the
/// value is dropped (best effort: a moved value may leave copies the compiler made) and never printed.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl DataKey {
    /// The key with these bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

/// Overwrites key bytes with zeros, for the `Drop` of every key type (data keys here, KEKs in `keys`).
pub(crate) fn wipe(key: &mut [u8; 32]) {
    *key = [0; 32];
    // Keeps the store above from being removed as dead: the zeroed bytes are "used".
    std::hint::black_box(key);
}

/// Encrypts plaintext `input` into `output` in the format above, with a new salt; returns the plaintext
/// length. For tests and tools: the storage layer writes through the same code.
pub fn encrypt_file(key: &DataKey, mut input: impl Read, output: impl Write) -> io::Result<u64> {
    let mut writer = EncryptWriter::new(AssertAsync::new(output), FileCipher::new(key)?);
    let mut chunk = vec![0; SEGMENT_SIZE];
    let mut total = 0u64;
    block_on(async {
        loop {
            let n = match input.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            writer.write_all(&chunk[..n]).await?;
            total += n as u64;
        }
        std::future::poll_fn(|cx| writer.poll_finish(cx)).await?;
        Ok(total)
    })
}

/// Decrypts an encrypted file from `input` into `output`; returns the plaintext length. Verifies every
/// segment before writing its plaintext, but on an error `output` already holds the verified segments
/// before the bad one: discard it. The same code as the storage layer's reads.
pub fn decrypt_file(key: &DataKey, input: impl Read, mut output: impl Write) -> io::Result<u64> {
    block_on(async {
        let mut input = AssertAsync::new(input);
        let header = read_header(&mut input, "input").await?;
        let cipher = FileCipher::from_header(key, header, "input")?;
        let mut reader = DecryptReader::new(input, cipher, 0, 0, "input");
        let mut total = 0u64;
        loop {
            let data = reader.fill_buf().await?;
            if data.is_empty() {
                return Ok(total);
            }
            output.write_all(data)?;
            let n = data.len();
            total += n as u64;
            reader.consume(n);
        }
    })
}

/// A storage whose files are encrypted at rest with one user's [`DataKey`]; directories, names, times and
/// modes are not encrypted. Sits above the user's storage (a backend, a [`Subtree`](super::Subtree), or
/// [`Versioned`](super::Versioned), whose versions then stay encrypted) and below
/// [`ReadOnly`](super::ReadOnly) and [`TimeViews`](super::TimeViews).
pub struct Encrypted {
    inner: Arc<dyn Storage>,
    key: DataKey,
}

impl fmt::Debug for Encrypted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encrypted").finish_non_exhaustive()
    }
}

/// A storage error for a file that cannot be opened for decryption. The format's own errors already name
/// the file; others (inner I/O) get the path and keep their kind.
fn damaged(path: &str, error: &io::Error) -> StorageError {
    if error.kind() == io::ErrorKind::InvalidData {
        StorageError::new(StorageErrorKind::Other, error.to_string())
    } else {
        StorageError::from(io::Error::new(error.kind(), format!("{path}: {error}")))
    }
}

/// Plaintext sizes for file metadata; directories and links are untouched.
fn plain_metadata(mut metadata: Metadata) -> Metadata {
    if metadata.kind == FileKind::File {
        metadata.size = plaintext_len(metadata.size).unwrap_or(0);
    }
    metadata
}

fn plain_entries(entries: Vec<DirEntry>) -> Vec<DirEntry> {
    entries
        .into_iter()
        .map(|e| DirEntry {
            name: e.name,
            metadata: plain_metadata(e.metadata),
        })
        .collect()
}

impl Encrypted {
    /// Encrypts everything written to `inner` with `key`, and decrypts what is read.
    #[must_use]
    pub fn new(inner: Arc<dyn Storage>, key: DataKey) -> Self {
        Self { inner, key }
    }

    /// Opens a ciphertext through `open` (the inner `open_read`, `open_read_at` or `open_version`, given a
    /// ciphertext offset) for plaintext reading from `offset`: the header from the start, then the
    /// segment holding `offset`, never the bytes before it.
    async fn open_plain<'a, F>(
        &self,
        path: &str,
        offset: u64,
        open: F,
    ) -> Result<(Option<DecryptReader<InnerReader>>, u64), StorageError>
    where
        F: Fn(u64) -> BoxFuture<'a, Result<ReadHandle, StorageError>>,
    {
        let mut first = open(0).await?;
        let cipher_size = first.size;
        let size = plaintext_len(cipher_size).ok_or_else(|| {
            let why = format!("{cipher_size} bytes is not the size of an encrypted file");
            damaged(path, &format::invalid(path, why))
        })?;
        let header = read_header(&mut first.reader, path)
            .await
            .map_err(|e| damaged(path, &e))?;
        let cipher =
            FileCipher::from_header(&self.key, header, path).map_err(|e| damaged(path, &e))?;
        if offset >= size && size > 0 {
            return Ok((None, size));
        }
        // An empty file still has its one segment to verify, whatever the offset.
        let pos = locate(offset.min(size));
        let reader = if pos.index == 0 {
            first.reader
        } else {
            drop(first);
            let at = open(pos.cipher_offset).await?;
            if at.size != cipher_size {
                return Err(StorageError::new(
                    StorageErrorKind::Other,
                    format!("{path}: the file changed while it was opened"),
                ));
            }
            at.reader
        };
        let reader = DecryptReader::new(reader, cipher, pos.index, pos.skip, path);
        Ok((Some(reader), size))
    }

    /// [`open_plain`](Self::open_plain) as a [`ReadHandle`].
    async fn open_handle<'a, F>(
        &self,
        path: &str,
        offset: u64,
        open: F,
    ) -> Result<ReadHandle, StorageError>
    where
        F: Fn(u64) -> BoxFuture<'a, Result<ReadHandle, StorageError>>,
    {
        let (reader, size) = self.open_plain(path, offset, open).await?;
        let reader: InnerReader = match reader {
            Some(reader) => Box::new(reader),
            None => Box::new(futures_lite::io::empty()),
        };
        Ok(ReadHandle { reader, size })
    }

    async fn write(&self, path: &str, mode: WriteMode) -> Result<Box<dyn Upload>, StorageError> {
        let (inner_mode, keep) = match mode {
            WriteMode::Create | WriteMode::CreateNew => (mode, None),
            WriteMode::Append => (WriteMode::Create, Some(u64::MAX)),
            WriteMode::Resume(n) => (WriteMode::Create, Some(n)),
        };
        // Open the old content before the new file, so a failure to read it changes nothing.
        let existing = match keep {
            None => None,
            Some(limit) => {
                let opened = self
                    .open_plain(path, 0, |at| self.inner.open_read(path, at))
                    .await;
                match opened {
                    Ok((_, size)) if mode != WriteMode::Append && limit > size => {
                        return Err(StorageError::new(
                            StorageErrorKind::Other,
                            format!(
                                "{path}: cannot resume at {limit}, past the end ({size} bytes)"
                            ),
                        ));
                    }
                    Ok((reader, _)) => reader,
                    Err(e)
                        if e.kind() == StorageErrorKind::NotFound && mode == WriteMode::Append =>
                    {
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let cipher = FileCipher::new(&self.key)?;
        let inner = self.inner.open_write(path, inner_mode).await?;
        let mut writer = EncryptWriter::new(inner, cipher);
        if let (Some(old), Some(limit)) = (existing, keep) {
            if let Err(e) = copy_prefix(old, limit, &mut writer).await {
                writer.into_inner().abort().await;
                return Err(damaged(path, &e));
            }
        }
        Ok(Box::new(EncryptedUpload::new(writer, keep.is_some())))
    }
}

/// Re-encrypts the first `limit` plaintext bytes of `reader` into `writer` (`u64::MAX`: all of them).
async fn copy_prefix(
    mut reader: DecryptReader<InnerReader>,
    limit: u64,
    writer: &mut EncryptWriter<Box<dyn Upload>>,
) -> io::Result<()> {
    // The decrypted segments are copied straight from the reader's buffer: no buffer of our own.
    let mut left = limit;
    while left > 0 {
        let data = reader.fill_buf().await?;
        if data.is_empty() {
            break;
        }
        let n = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        writer.write_all(&data[..n]).await?;
        reader.consume(n);
        left -= n as u64;
    }
    Ok(())
}

impl Storage for Encrypted {
    fn metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        Box::pin(async move { self.inner.metadata(path).await.map(plain_metadata) })
    }
    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        Box::pin(async move { self.inner.list(path).await.map(plain_entries) })
    }
    fn open_read<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        Box::pin(self.open_handle(path, offset, move |at| self.inner.open_read(path, at)))
    }
    fn open_write<'a>(
        &'a self,
        path: &'a str,
        mode: WriteMode,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        Box::pin(self.write(path, mode))
    }
    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.mkdir(path)
    }
    fn rmdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.rmdir(path)
    }
    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.delete(path)
    }
    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        // The file key depends on the salt only, not the name: a renamed file still opens.
        self.inner.rename(from, to)
    }
    fn set_modified<'a>(
        &'a self,
        path: &'a str,
        modified: SystemTime,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.set_modified(path, modified)
    }
    fn set_mode<'a>(&'a self, path: &'a str, mode: u32) -> BoxFuture<'a, Result<(), StorageError>> {
        self.inner.set_mode(path, mode)
    }
    fn metadata_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        Box::pin(async move { self.inner.metadata_at(path, at).await.map(plain_metadata) })
    }
    fn list_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        Box::pin(async move { self.inner.list_at(path, at).await.map(plain_entries) })
    }
    fn open_read_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        Box::pin(self.open_handle(path, offset, move |o| self.inner.open_read_at(path, at, o)))
    }
    fn versions<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionInfo>, StorageError>> {
        Box::pin(async move {
            let versions = self.inner.versions(path).await?;
            Ok(versions
                .into_iter()
                .map(|v| VersionInfo {
                    size: plaintext_len(v.size).unwrap_or(0),
                    ..v
                })
                .collect())
        })
    }
    fn open_version<'a>(
        &'a self,
        path: &'a str,
        id: u64,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        Box::pin(self.open_handle(path, offset, move |o| self.inner.open_version(path, id, o)))
    }

    // The kept-object methods (`keep`, `open_kept`, ...) stay at the trait's "unsupported": they serve
    // `Versioned` from the layer *below* it, and this layer sits above it, so versions are kept as the
    // ciphertext files they already are and nothing here needs to keep objects.
}
