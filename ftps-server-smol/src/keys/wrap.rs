//! One user's wrapped data key on disk: the file name and the 76 bytes inside.
//!
//! ```text
//! "FTPSDK01"   8 bytes  format label and version
//! fingerprint  8 bytes  of the KEK that wrapped the key (Kek::fingerprint)
//! nonce       12 bytes  random, fresh for every wrapping
//! sealed      48 bytes  AES-256-GCM(KEK, nonce, data key, aad) = 32 bytes of key + 16 of tag
//! aad = label || fingerprint || user name (UTF-8)
//! ```
//!
//! The user name in the AAD binds the file to its user: renamed to another user's name, it fails to open instead
//! of giving that user a key. The fingerprint tells "wrapped under another KEK" apart from "damaged".

use std::io;
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::kek::{hex, invalid, random_bytes, Kek};

const LABEL: &[u8; 8] = b"FTPSDK01";
const LEN: usize = 8 + 8 + 12 + 32 + 16;
/// The file name's suffix.
pub(crate) const SUFFIX: &str = ".key";
/// Longest user name (in bytes) that fits a file name: two hex digits a byte plus the suffix within the 255 bytes
/// most file systems allow.
const MAX_USER_LEN: usize = 120;

/// A wrapped data key as read from its file: which KEK wrapped it, and the rest of the bytes.
pub(crate) struct Wrapped {
    bytes: [u8; LEN],
}

impl Wrapped {
    /// Checks the length and the label (anything else is damage, whatever the KEK).
    pub(crate) fn parse(bytes: &[u8], path: &Path) -> io::Result<Self> {
        let bytes: [u8; LEN] = bytes
            .try_into()
            .ok()
            .filter(|b: &[u8; LEN]| &b[..8] == LABEL)
            .ok_or_else(|| {
                invalid(format!(
                    "key file {} is damaged (not a wrapped data key: {} bytes, expected {LEN} starting \
                     with {}); restore it from a backup",
                    path.display(),
                    bytes.len(),
                    String::from_utf8_lossy(LABEL)
                ))
            })?;
        Ok(Self { bytes })
    }

    /// The fingerprint of the KEK this key was wrapped under.
    pub(crate) fn fingerprint(&self) -> [u8; 8] {
        let mut fingerprint = [0u8; 8];
        fingerprint.copy_from_slice(&self.bytes[8..16]);
        fingerprint
    }

    /// Unwraps with `kek`, which must be the one whose fingerprint the file names.
    pub(crate) fn open(&self, kek: &Kek, user: &str, path: &Path) -> io::Result<[u8; 32]> {
        let key = aead_key(kek);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&self.bytes[16..28]);
        let mut sealed = self.bytes[28..].to_vec();
        let plain = key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&self.fingerprint(), user)),
                &mut sealed,
            )
            .map_err(|_| {
                invalid(format!(
                    "key file {} of user {user:?} fails its integrity check under the right KEK: it was \
                     altered, or copied from another user's name; restore it from a backup",
                    path.display()
                ))
            })?;
        let mut data_key = [0u8; 32];
        data_key.copy_from_slice(plain);
        Ok(data_key)
    }
}

/// Wraps `data_key` for `user` under `kek` with a fresh random nonce: the bytes of a key file.
pub(crate) fn seal(kek: &Kek, user: &str, data_key: &[u8; 32]) -> io::Result<Vec<u8>> {
    let fingerprint = kek.fingerprint();
    let nonce: [u8; 12] = random_bytes()?;
    let mut sealed = data_key.to_vec();
    aead_key(kek)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(&fingerprint, user)),
            &mut sealed,
        )
        .map_err(|_| io::Error::other("AES-256-GCM sealing failed"))?;
    let mut bytes = Vec::with_capacity(LEN);
    bytes.extend_from_slice(LABEL);
    bytes.extend_from_slice(&fingerprint);
    bytes.extend_from_slice(&nonce);
    bytes.extend_from_slice(&sealed);
    Ok(bytes)
}

fn aead_key(kek: &Kek) -> LessSafeKey {
    // A 32-byte key is always a valid AES-256 key; ring refuses only other lengths.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek.bytes()).unwrap_or_else(|_| unreachable!()))
}

fn aad(fingerprint: &[u8; 8], user: &str) -> Vec<u8> {
    [&LABEL[..], fingerprint, user.as_bytes()].concat()
}

/// The key file of `user` in `dir`: the name's bytes in hex (any user name, including `..` or `/`, is a safe
/// file name this way) plus `.key`.
pub(crate) fn key_path(dir: &Path, user: &str) -> io::Result<PathBuf> {
    if user.is_empty() || user.len() > MAX_USER_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "user name {user:?}: encrypted storage needs 1 to {MAX_USER_LEN} bytes (it names the key file)"
            ),
        ));
    }
    Ok(dir.join(format!("{}{SUFFIX}", hex(user.as_bytes()))))
}

/// The user a key file name belongs to (`None`: not a key file's name).
pub(crate) fn user_of(file_name: &str) -> Option<String> {
    let stem = file_name.strip_suffix(SUFFIX)?;
    if stem.is_empty() || stem.len() % 2 != 0 || !stem.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..stem.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&stem[i..i + 2], 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_bindings() {
        let kek = Kek::generate().unwrap();
        let key: [u8; 32] = random_bytes().unwrap();
        let path = Path::new("k");
        let bytes = seal(&kek, "alice", &key).unwrap();
        assert_eq!(bytes.len(), LEN);
        let wrapped = Wrapped::parse(&bytes, path).unwrap();
        assert_eq!(wrapped.fingerprint(), kek.fingerprint());
        assert_eq!(wrapped.open(&kek, "alice", path).unwrap(), key);
        let err = wrapped.open(&kek, "bob", path).unwrap_err().to_string();
        assert!(err.contains("another user"), "{err}");
        assert!(Wrapped::parse(&bytes[1..], path).is_err());
        assert_ne!(seal(&kek, "alice", &key).unwrap(), bytes, "nonce reused");
    }

    #[test]
    fn file_names_round_trip_and_are_safe() {
        let dir = Path::new("/k");
        for user in ["alice", "../etc", "a/b", "ünï", "x y"] {
            let path = key_path(dir, user).unwrap();
            assert_eq!(path.parent(), Some(dir));
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(user_of(name).as_deref(), Some(user));
        }
        assert!(key_path(dir, "").is_err());
        assert!(key_path(dir, &"a".repeat(121)).is_err());
        assert_eq!(user_of(".x.key.tmp"), None);
        assert_eq!(user_of("zz.key"), None);
    }
}
