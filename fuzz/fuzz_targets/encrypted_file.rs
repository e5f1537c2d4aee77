#![no_main]
//! The at-rest format's decryptor reads files an attacker with access to the storage (a shared bucket, a stolen
//! disk put back) may have written. For any bytes: no panic; success only when the size is one the format can
//! produce, with exactly that many plaintext bytes out. And any plaintext round-trips through the encryptor.
use arbitrary::Arbitrary;
use ftps_server_smol::storage::encrypted::plaintext_len;
use ftps_server_smol::storage::{decrypt_file, encrypt_file, DataKey};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    /// Stored bytes as found on disk.
    Stored(&'a [u8]),
    /// A plaintext, encrypted and then read back, with one byte of the result changed at `flip`.
    RoundTrip { plaintext: &'a [u8], flip: Option<(u32, u8)> },
}

fuzz_target!(|input: Input| {
    let key = DataKey::from_bytes([7; 32]);
    match input {
        Input::Stored(stored) => {
            let mut out = Vec::new();
            if let Ok(n) = decrypt_file(&key, stored, &mut out) {
                assert_eq!(Some(n), plaintext_len(stored.len() as u64));
                assert_eq!(n, out.len() as u64);
            }
        }
        Input::RoundTrip { plaintext, flip } => {
            let mut stored = Vec::new();
            encrypt_file(&key, plaintext, &mut stored).unwrap();
            let changed = match flip {
                Some((at, mask)) if mask != 0 && !stored.is_empty() => {
                    let at = at as usize % stored.len();
                    stored[at] ^= mask;
                    true
                }
                _ => false,
            };
            let mut out = Vec::new();
            let result = decrypt_file(&key, &stored[..], &mut out);
            if changed {
                // A changed byte never decrypts, and nothing of the segment it is in comes out.
                assert!(result.is_err());
                assert!(plaintext.starts_with(&out));
            } else {
                assert_eq!(result.unwrap(), plaintext.len() as u64);
                assert_eq!(out, plaintext);
            }
        }
    }
});
