//! The at-rest format's constants, size arithmetic and segment sealing: pure functions and one cipher
//! object, no I/O (the layout is described in the [parent module](super)).

use std::io;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

use super::DataKey;

/// The first 8 bytes of every encrypted file; the last byte is the format version.
pub const MAGIC: [u8; 8] = *b"FTPSENC\x01";
/// Plaintext bytes per segment (every segment but the last holds exactly this many).
pub const SEGMENT_SIZE: usize = 64 * 1024;
/// The AES-256-GCM tag that follows each segment's ciphertext.
pub const TAG_LEN: usize = 16;
/// The random per-file salt in the header.
pub const SALT_LEN: usize = 32;
/// Header: magic (8), segment size (u32 big-endian, 4), salt (32).
pub const HEADER_LEN: usize = MAGIC.len() + 4 + SALT_LEN;
/// Bytes a full segment takes on disk.
pub const SEGMENT_CIPHER_LEN: usize = SEGMENT_SIZE + TAG_LEN;
/// Segment counters are 32 bits: at most 2^32 segments per file.
pub const MAX_SEGMENTS: u64 = 1 << 32;
/// The largest plaintext the format holds: 2^32 segments of 64 KiB (256 TiB).
pub const MAX_PLAINTEXT_LEN: u64 = MAX_SEGMENTS * SEGMENT_SIZE as u64;
/// HKDF `info` for the per-file key: names the format and its version, so no other use of the data key
/// can derive the same file key.
pub const HKDF_INFO: &[u8] = b"ftps-rs FTPSENC v1 file key";

const S: u64 = SEGMENT_SIZE as u64;
const SC: u64 = SEGMENT_CIPHER_LEN as u64;
const H: u64 = HEADER_LEN as u64;
const T: u64 = TAG_LEN as u64;

/// How many segments a plaintext of `plain` bytes is cut into: at least one (an empty file has one empty
/// final segment), and the final segment is never empty otherwise.
#[must_use]
pub fn segment_count(plain: u64) -> u64 {
    plain.div_ceil(S).max(1)
}

/// The size on disk of a plaintext of `plain` bytes; `None` past [`MAX_PLAINTEXT_LEN`].
#[must_use]
pub fn ciphertext_len(plain: u64) -> Option<u64> {
    if plain > MAX_PLAINTEXT_LEN {
        return None;
    }
    Some(H + plain + segment_count(plain) * T)
}

/// The plaintext size of a well-formed encrypted file of `cipher` bytes; `None` when no plaintext
/// encrypts to that size (shorter than a header and one tag, a final segment shorter than a tag, an empty
/// final segment after a full one, more than 2^32 segments).
#[must_use]
pub fn plaintext_len(cipher: u64) -> Option<u64> {
    let body = cipher.checked_sub(H)?;
    let segments = body.div_ceil(SC).max(1);
    let last = body - (segments - 1) * SC;
    if last < T || (last == T && segments > 1) || segments > MAX_SEGMENTS {
        return None;
    }
    Some(body - segments * T)
}

/// Where a plaintext offset lies in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentPos {
    /// The segment holding the offset (its counter).
    pub index: u64,
    /// The offset's position inside that segment's plaintext.
    pub skip: usize,
    /// Where that segment starts in the ciphertext file.
    pub cipher_offset: u64,
}

/// The segment that holds plaintext byte `offset`, for REST: reading starts at `cipher_offset`.
#[must_use]
pub fn locate(offset: u64) -> SegmentPos {
    let index = offset / S;
    SegmentPos {
        index,
        // The remainder is below SEGMENT_SIZE, so it fits.
        skip: usize::try_from(offset % S).unwrap_or(0),
        cipher_offset: H.saturating_add(index.saturating_mul(SC)),
    }
}

/// An `InvalidData` error about an encrypted file.
pub(crate) fn invalid(what: &str, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("encrypted file {what}: {why}"),
    )
}

/// One file's key and header: seals or opens its segments in place.
pub(crate) struct FileCipher {
    key: LessSafeKey,
    /// The whole header is the AAD of every segment, so any change to it (magic, size field, salt) fails
    /// every segment, not only the ones whose key it changes.
    header: [u8; HEADER_LEN],
}

impl FileCipher {
    /// A cipher for a new file: a fresh random salt, so a new key and nonces never used before.
    pub(crate) fn new(key: &DataKey) -> io::Result<Self> {
        let mut header = [0; HEADER_LEN];
        header[..MAGIC.len()].copy_from_slice(&MAGIC);
        header[MAGIC.len()..MAGIC.len() + 4].copy_from_slice(&(SEGMENT_SIZE as u32).to_be_bytes());
        SystemRandom::new()
            .fill(&mut header[MAGIC.len() + 4..])
            .map_err(|_| io::Error::other("no OS randomness for an encryption salt"))?;
        Self::with_header(key, header)
    }

    /// The cipher of an existing file, from its header; refuses anything but this format version.
    pub(crate) fn from_header(
        key: &DataKey,
        header: [u8; HEADER_LEN],
        what: &str,
    ) -> io::Result<Self> {
        if header[..MAGIC.len()] != MAGIC {
            return Err(invalid(what, "not an encrypted file (bad magic)"));
        }
        let mut size = [0; 4];
        size.copy_from_slice(&header[MAGIC.len()..MAGIC.len() + 4]);
        if u32::from_be_bytes(size) != SEGMENT_SIZE as u32 {
            return Err(invalid(what, "unsupported segment size in header"));
        }
        Self::with_header(key, header)
    }

    fn with_header(key: &DataKey, header: [u8; HEADER_LEN]) -> io::Result<Self> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, &header[MAGIC.len() + 4..]);
        let prk = salt.extract(key.as_bytes());
        let okm = prk
            .expand(&[HKDF_INFO], &aead::AES_256_GCM)
            .map_err(|_| io::Error::other("HKDF expand failed"))?;
        Ok(Self {
            key: LessSafeKey::new(UnboundKey::from(okm)),
            header,
        })
    }

    /// The file's header bytes.
    pub(crate) fn header(&self) -> &[u8; HEADER_LEN] {
        &self.header
    }

    /// Seals plaintext `buf[..len]` as segment `counter` in place and writes the tag after it; returns the
    /// sealed length (`len + TAG_LEN`). `buf` must hold `len + TAG_LEN` bytes.
    pub(crate) fn seal(
        &self,
        counter: u64,
        last: bool,
        buf: &mut [u8],
        len: usize,
    ) -> io::Result<usize> {
        let nonce = nonce(counter, last).ok_or_else(too_large)?;
        let (data, rest) = buf.split_at_mut(len);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&self.header[..]), data)
            .map_err(|_| io::Error::other("AES-GCM seal failed"))?;
        rest.get_mut(..TAG_LEN)
            .ok_or_else(|| io::Error::other("segment buffer too small for the tag"))?
            .copy_from_slice(tag.as_ref());
        Ok(len + TAG_LEN)
    }

    /// Opens sealed segment `counter` in `buf` (ciphertext and tag) in place; returns the plaintext length
    /// (the plaintext is `buf[..len]`). Fails, releasing nothing, when the segment does not verify.
    pub(crate) fn open(
        &self,
        counter: u64,
        last: bool,
        buf: &mut [u8],
        what: &str,
    ) -> io::Result<usize> {
        let nonce = nonce(counter, last).ok_or_else(too_large)?;
        match self
            .key
            .open_in_place(nonce, Aad::from(&self.header[..]), buf)
        {
            Ok(plain) => Ok(plain.len()),
            Err(_) => Err(invalid(
                what,
                format_args!(
                    "segment {counter}{} failed authentication (changed, truncated, extended, \
                     reordered, or not encrypted with this user's key)",
                    if last { " (final)" } else { "" }
                ),
            )),
        }
    }
}

/// STREAM nonce: 7 zero bytes, the segment counter (u32 big-endian), the last-segment flag.
fn nonce(counter: u64, last: bool) -> Option<Nonce> {
    let counter = u32::try_from(counter).ok()?;
    let mut bytes = [0; aead::NONCE_LEN];
    bytes[7..11].copy_from_slice(&counter.to_be_bytes());
    bytes[11] = u8::from(last);
    Some(Nonce::assume_unique_for_key(bytes))
}

fn too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        "file exceeds the encrypted format's 2^32 segments (256 TiB)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sizes_at_segment_boundaries() {
        assert_eq!(ciphertext_len(0), Some(H + T));
        assert_eq!(ciphertext_len(1), Some(H + 1 + T));
        assert_eq!(ciphertext_len(S), Some(H + S + T));
        assert_eq!(ciphertext_len(S + 1), Some(H + S + 1 + 2 * T));
        assert_eq!(ciphertext_len(MAX_PLAINTEXT_LEN + 1), None);
        assert_eq!(plaintext_len(0), None);
        assert_eq!(plaintext_len(H + T - 1), None);
        assert_eq!(plaintext_len(H + T), Some(0));
        // A full segment then an empty final one is never written.
        assert_eq!(plaintext_len(H + SC + T), None);
        // A final segment shorter than a tag.
        assert_eq!(plaintext_len(H + SC + 5), None);
        assert_eq!(
            plaintext_len(ciphertext_len(MAX_PLAINTEXT_LEN).unwrap()),
            Some(MAX_PLAINTEXT_LEN)
        );
        assert_eq!(
            plaintext_len(ciphertext_len(MAX_PLAINTEXT_LEN).unwrap() + 1),
            None
        );
        assert_eq!(locate(0).cipher_offset, H);
        assert_eq!(locate(S - 1).index, 0);
        let pos = locate(S + 7);
        assert_eq!((pos.index, pos.skip, pos.cipher_offset), (1, 7, H + SC));
    }

    #[test]
    fn counter_overflow_is_a_clear_error() {
        let cipher = FileCipher::new(&DataKey::from_bytes([7; 32])).unwrap();
        let mut buf = [0u8; TAG_LEN + 1];
        let err = cipher.seal(MAX_SEGMENTS, true, &mut buf, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
        assert!(cipher.seal(MAX_SEGMENTS - 1, true, &mut buf, 1).is_ok());
    }

    proptest! {
        #[test]
        fn size_math_round_trips(plain in 0..MAX_PLAINTEXT_LEN) {
            let cipher = ciphertext_len(plain).unwrap();
            prop_assert_eq!(plaintext_len(cipher), Some(plain));
        }

        #[test]
        fn every_valid_cipher_size_has_one_plaintext(cipher in 0u64..(1 << 50)) {
            if let Some(plain) = plaintext_len(cipher) {
                prop_assert_eq!(ciphertext_len(plain), Some(cipher));
            }
        }

        #[test]
        fn small_sizes_round_trip(plain in 0u64..(4 * S)) {
            let cipher = ciphertext_len(plain).unwrap();
            prop_assert_eq!(plaintext_len(cipher), Some(plain));
            let pos = locate(plain);
            prop_assert_eq!(pos.index * S + pos.skip as u64, plain);
        }
    }
}
