use super::format::{FileCipher, SEGMENT_CIPHER_LEN};
use super::write::EncryptWriter;
use super::*;
use crate::storage::MemoryStorage;
use futures_lite::future::block_on;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use proptest::prelude::*;

const S: usize = SEGMENT_SIZE;
const H: usize = HEADER_LEN;

fn key(byte: u8) -> DataKey {
    DataKey::from_bytes([byte; 32])
}

/// Plaintext that never repeats at segment distance, so a swapped segment is a different plaintext.
fn body(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ (i >> 16) as u8)
        .collect()
}

struct Fixture {
    mem: MemoryStorage,
    enc: Encrypted,
}

fn fixture() -> Fixture {
    let mem = MemoryStorage::new();
    let enc = Encrypted::new(Arc::new(mem.clone()), key(1));
    Fixture { mem, enc }
}

async fn put(s: &dyn Storage, path: &str, mode: WriteMode, data: &[u8]) -> u64 {
    let mut up = s.open_write(path, mode).await.unwrap();
    // Odd-sized writes, so segment cuts never line up with the caller's chunks.
    for chunk in data.chunks(10_007) {
        up.write_all(chunk).await.unwrap();
    }
    up.close().await.unwrap();
    up.commit().await.unwrap()
}

/// Reads `path` from `offset`: the size, and what came out until the end or the first error.
async fn get(s: &dyn Storage, path: &str, offset: u64) -> (u64, Vec<u8>, Option<io::Error>) {
    let mut handle = match s.open_read(path, offset).await {
        Ok(h) => h,
        Err(e) => return (0, Vec::new(), Some(e.into())),
    };
    let mut out = Vec::new();
    let mut chunk = vec![0; 7_000];
    loop {
        match handle.reader.read(&mut chunk).await {
            Ok(0) => return (handle.size, out, None),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) => return (handle.size, out, Some(e)),
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn round_trips_at_segment_boundaries() {
    let f = fixture();
    block_on(async {
        for len in [0, 1, S - 1, S, S + 1, 3 * S, 3 * S + 5, 3 << 20] {
            let data = body(len);
            assert_eq!(
                put(&f.enc, "/f", WriteMode::Create, &data).await,
                len as u64
            );
            let raw = f.mem.file_contents("/f").unwrap();
            assert_eq!(Some(raw.len() as u64), ciphertext_len(len as u64), "{len}");
            assert_eq!(raw[..8], MAGIC);
            let (size, out, err) = get(&f.enc, "/f", 0).await;
            assert!(err.is_none(), "{len}: {err:?}");
            assert_eq!(size, len as u64);
            assert!(out == data, "{len}");
            assert_eq!(f.enc.metadata("/f").await.unwrap().size, len as u64);
            // The sync tools read the same bytes.
            let mut plain = Vec::new();
            assert_eq!(
                decrypt_file(&key(1), &raw[..], &mut plain).unwrap(),
                len as u64
            );
            assert!(plain == data);
        }
    });
}

#[test]
fn sync_decrypt_refuses_damage_and_the_wrong_key() {
    let data = body(S + 1);
    let mut raw = Vec::new();
    encrypt_file(&key(1), &data[..], &mut raw).unwrap();
    let mut out = Vec::new();
    let err = decrypt_file(&key(2), &raw[..], &mut out).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(out.is_empty());
    let cut = &raw[..H + SEGMENT_CIPHER_LEN];
    let err = decrypt_file(&key(1), cut, &mut out).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(
        out.is_empty(),
        "the non-final segment opened as the final one"
    );
}

#[test]
fn sync_encrypt_then_storage_read() {
    let f = fixture();
    let data = body(2 * S + 3);
    let mut raw = Vec::new();
    assert_eq!(
        encrypt_file(&key(1), &data[..], &mut raw).unwrap(),
        data.len() as u64
    );
    f.mem.insert_file("/g", raw).unwrap();
    block_on(async {
        let (size, out, err) = get(&f.enc, "/g", 0).await;
        assert!(err.is_none());
        assert_eq!(size, data.len() as u64);
        assert!(out == data);
    });
}

#[test]
fn rest_from_many_offsets() {
    let f = fixture();
    let len = 3 * S + 100;
    let data = body(len);
    block_on(async {
        put(&f.enc, "/f", WriteMode::Create, &data).await;
        let offsets = [
            0,
            1,
            S - 1,
            S,
            S + 1,
            2 * S,
            3 * S - 1,
            3 * S,
            3 * S + 99,
            len,
            len + 1,
            10 * S,
        ];
        for offset in offsets {
            let (size, out, err) = get(&f.enc, "/f", offset as u64).await;
            assert!(err.is_none(), "{offset}: {err:?}");
            assert_eq!(size, len as u64);
            assert!(out[..] == data[offset.min(len)..], "{offset}");
        }
        put(&f.enc, "/e", WriteMode::Create, b"").await;
        for offset in [0, 1, S as u64] {
            let (size, out, err) = get(&f.enc, "/e", offset).await;
            assert!(err.is_none() && out.is_empty() && size == 0);
        }
    });
}

/// Replaces the inner bytes of `/f`, reads it back, and checks it fails with `InvalidData` (at open or
/// while reading) having released only a true prefix of the plaintext, and none of the segment that failed.
async fn assert_tamper_fails(f: &Fixture, data: &[u8], raw: Vec<u8>, case: &str) {
    f.mem.insert_file("/t", raw).unwrap();
    let (_, out, err) = get(&f.enc, "/t", 0).await;
    let err = err.unwrap_or_else(|| panic!("{case}: no error"));
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::InvalidData | io::ErrorKind::Other
        ),
        "{case}: {err}"
    );
    assert!(
        err.to_string().contains("encrypted file /t"),
        "{case}: {err}"
    );
    assert!(out.len() % S == 0, "{case}: partial segment released");
    assert!(out[..] == data[..out.len()], "{case}: wrong bytes released");
}

#[test]
fn every_tamper_fails_before_releasing_bad_bytes() {
    let f = fixture();
    let data = body(3 * S + 100);
    block_on(async {
        put(&f.enc, "/f", WriteMode::Create, &data).await;
        put(&f.enc, "/other", WriteMode::Create, &data).await;
        let raw = f.mem.file_contents("/f").unwrap();
        let other = f.mem.file_contents("/other").unwrap();
        let seg = |i: usize| H + i * SEGMENT_CIPHER_LEN;
        // A flipped bit in the magic, size field, salt, first and last body bytes, and each tag.
        for at in [
            0,
            8,
            11,
            12,
            43,
            H,
            seg(1) - 1,
            seg(1),
            seg(2) + 5,
            raw.len() - 1,
        ] {
            let mut bad = raw.clone();
            bad[at] ^= 0x20;
            assert_tamper_fails(&f, &data, bad, &format!("flip at {at}")).await;
        }
        for cut in [raw.len() - 1, seg(3) + 20, seg(1) + 1, H + 3, 10] {
            assert_tamper_fails(&f, &data, raw[..cut].to_vec(), &format!("cut at {cut}")).await;
        }
        // Truncation at a segment boundary: what is left is well-formed but ends on a non-final segment.
        for cut in [seg(3), seg(2), seg(1)] {
            assert_tamper_fails(&f, &data, raw[..cut].to_vec(), &format!("boundary {cut}")).await;
        }
        for extra in [1, 16, 100, SEGMENT_CIPHER_LEN] {
            let mut bad = raw.clone();
            bad.extend(std::iter::repeat_n(0, extra));
            assert_tamper_fails(&f, &data, bad, &format!("{extra} bytes appended")).await;
        }
        let mut swapped = raw.clone();
        swapped[seg(0)..seg(1)].copy_from_slice(&raw[seg(1)..seg(2)]);
        swapped[seg(1)..seg(2)].copy_from_slice(&raw[seg(0)..seg(1)]);
        assert_tamper_fails(&f, &data, swapped, "segments reordered").await;
        let mut mixed = raw.clone();
        mixed[seg(1)..seg(2)].copy_from_slice(&other[seg(1)..seg(2)]);
        assert_tamper_fails(&f, &data, mixed, "segment from another file").await;
        let mut header = raw.clone();
        header[..H].copy_from_slice(&other[..H]);
        assert_tamper_fails(&f, &data, header, "header from another file").await;
        let mut foreign = Vec::new();
        encrypt_file(&key(2), &data[..], &mut foreign).unwrap();
        assert_tamper_fails(&f, &data, foreign, "another user's file").await;
        assert_tamper_fails(&f, &data, data.clone(), "plaintext file").await;
        assert_tamper_fails(&f, &data, b"hello".to_vec(), "short plaintext").await;
        // A listing shows impossible sizes as 0.
        f.mem.insert_file("/t", b"hello".to_vec()).unwrap();
        assert_eq!(f.enc.metadata("/t").await.unwrap().size, 0);
        // REST into a damaged segment fails too, without bytes.
        let mut bad = raw.clone();
        bad[seg(2) + 9] ^= 1;
        f.mem.insert_file("/t", bad).unwrap();
        let (_, out, err) = get(&f.enc, "/t", 2 * S as u64 + 7).await;
        assert!(out.is_empty() && err.is_some());
    });
}

#[test]
fn a_reader_that_failed_stays_failed() {
    let f = fixture();
    let data = body(2 * S);
    block_on(async {
        put(&f.enc, "/f", WriteMode::Create, &data).await;
        let mut raw = f.mem.file_contents("/f").unwrap();
        raw[H + 1] ^= 1;
        f.mem.insert_file("/f", raw).unwrap();
        let mut handle = f.enc.open_read("/f", 0).await.unwrap();
        let mut chunk = [0u8; 100];
        assert!(handle.reader.read(&mut chunk).await.is_err());
        let again = handle.reader.read(&mut chunk).await.unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::InvalidData);
    });
}

#[test]
fn append_and_resume_reencrypt_under_a_fresh_salt() {
    let f = fixture();
    let first = body(S + 10);
    block_on(async {
        put(&f.enc, "/f", WriteMode::Create, &first).await;
        let salt_before = f.mem.file_contents("/f").unwrap()[12..H].to_vec();
        assert_eq!(put(&f.enc, "/f", WriteMode::Append, b"tail").await, 4);
        let raw = f.mem.file_contents("/f").unwrap();
        assert_ne!(raw[12..H], salt_before[..], "append reused the salt");
        let mut want = first.clone();
        want.extend_from_slice(b"tail");
        assert!(get(&f.enc, "/f", 0).await.1 == want);

        // REST + STOR keeps the first n bytes.
        put(&f.enc, "/f", WriteMode::Resume(S as u64 - 2), b"XYZ").await;
        let mut want = first[..S - 2].to_vec();
        want.extend_from_slice(b"XYZ");
        assert!(get(&f.enc, "/f", 0).await.1 == want);
        // Past the end: refused (no terabyte of encrypted zeros for a REST), the file untouched.
        let before = f.mem.file_contents("/f");
        let err = f
            .enc
            .open_write("/f", WriteMode::Resume(S as u64 + 3))
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), StorageErrorKind::Other);
        assert!(err.message().contains("past the end"), "{err}");
        assert_eq!(f.mem.file_contents("/f"), before);
        // Exactly at the end is an append.
        put(&f.enc, "/f", WriteMode::Resume(S as u64 + 1), b"!").await;
        want.push(b'!');
        assert!(get(&f.enc, "/f", 0).await.1 == want);

        // APPE creates a missing file; REST + STOR of a missing file is NotFound.
        put(&f.enc, "/new", WriteMode::Append, b"abc").await;
        assert_eq!(get(&f.enc, "/new", 0).await.1, b"abc");
        let err = f
            .enc
            .open_write("/nope", WriteMode::Resume(1))
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), StorageErrorKind::NotFound);
    });
}

#[test]
fn interrupted_append_keeps_what_arrived_and_create_abort_keeps_nothing() {
    let f = fixture();
    block_on(async {
        put(&f.enc, "/f", WriteMode::Create, b"old").await;
        let mut up = f.enc.open_write("/f", WriteMode::Append).await.unwrap();
        up.write_all(b"+new").await.unwrap();
        up.abort().await;
        assert_eq!(get(&f.enc, "/f", 0).await.1, b"old+new");

        let mut up = f.enc.open_write("/f", WriteMode::Create).await.unwrap();
        up.write_all(&body(3 * S)).await.unwrap();
        up.abort().await;
        assert_eq!(get(&f.enc, "/f", 0).await.1, b"old+new");

        let mut up = f.enc.open_write("/n", WriteMode::CreateNew).await.unwrap();
        up.write_all(b"x").await.unwrap();
        up.abort().await;
        assert!(f.enc.metadata("/n").await.is_err());
        put(&f.enc, "/n", WriteMode::CreateNew, b"y").await;
        let err = f
            .enc
            .open_write("/n", WriteMode::CreateNew)
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), StorageErrorKind::AlreadyExists);
    });
}

#[test]
fn append_to_a_damaged_file_changes_nothing() {
    let f = fixture();
    block_on(async {
        f.mem
            .insert_file(
                "/f",
                b"not encrypted at all, long enough for a header and a tag......",
            )
            .unwrap();
        let before = f.mem.file_contents("/f");
        assert!(f.enc.open_write("/f", WriteMode::Append).await.is_err());
        assert_eq!(f.mem.file_contents("/f"), before);
    });
}

#[test]
fn listings_show_plaintext_sizes_and_the_inner_bytes_never_the_plaintext() {
    let f = fixture();
    let marker = b"PLAINTEXT-MARKER-0123456789".repeat(5_000);
    block_on(async {
        f.enc.mkdir("/d").await.unwrap();
        put(&f.enc, "/d/a", WriteMode::Create, &marker).await;
        put(&f.enc, "/d/b", WriteMode::Create, b"").await;
        let mut entries = f.enc.list("/d").await.unwrap();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(entries[0].metadata.size, marker.len() as u64);
        assert_eq!(entries[1].metadata.size, 0);
        assert_eq!(
            f.enc.metadata("/d").await.unwrap().kind,
            FileKind::Directory
        );
        let raw = f.mem.file_contents("/d/a").unwrap();
        assert!(!contains(&raw, b"PLAINTEXT-MARKER"));
        // Two files with the same plaintext share no ciphertext (different salts).
        put(&f.enc, "/d/c", WriteMode::Create, &marker).await;
        let raw_c = f.mem.file_contents("/d/c").unwrap();
        assert!(!contains(&raw_c, &raw[H..H + 32]));
        // Pass-through operations.
        f.enc.rename("/d/c", "/d/e").await.unwrap();
        assert!(get(&f.enc, "/d/e", 0).await.1 == marker);
        f.enc.delete("/d/e").await.unwrap();
        assert!(f.enc.metadata("/d/e").await.is_err());
    });
}

#[test]
fn data_key_debug_is_redacted() {
    assert_eq!(format!("{:?}", key(0xab)), "DataKey(<redacted>)");
}

#[test]
fn composes_with_versioned_over_a_local_directory() {
    use crate::storage::versioned::from_micros;
    use crate::storage::{Clock, LocalStorage, Versioned, VersionsOptions};
    use std::sync::atomic::{AtomicI64, Ordering};

    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(1_000));
    let c = Arc::clone(&now);
    let clock: Clock = Arc::new(move || from_micros(c.load(Ordering::SeqCst) * 1_000_000));
    let local: Arc<dyn Storage> = Arc::new(LocalStorage::open(dir.path()).unwrap());
    let log = LocalStorage::history_log_path(dir.path()).unwrap();
    let options = VersionsOptions {
        clock: Some(clock),
        ..VersionsOptions::default()
    };
    let versioned: Arc<dyn Storage> = Arc::new(Versioned::open(local, &log, options).unwrap());
    let enc = Encrypted::new(versioned, key(3));
    let v1 = b"VERSION-ONE-SECRET ".repeat(4_000);
    let v2 = b"VERSION-TWO-SECRET".repeat(10);
    block_on(async {
        put(&enc, "/f", WriteMode::Create, &v1).await;
        now.store(2_000, Ordering::SeqCst);
        put(&enc, "/f", WriteMode::Create, &v2).await;
        now.store(3_000, Ordering::SeqCst);
        put(&enc, "/f", WriteMode::Append, b"+").await;

        let versions = enc.versions("/f").await.unwrap();
        let mut sizes: Vec<u64> = versions.iter().map(|v| v.size).collect();
        sizes.sort_unstable();
        assert_eq!(
            sizes,
            [v2.len() as u64, v2.len() as u64 + 1, v1.len() as u64]
        );
        let old = versions.iter().find(|v| v.size == v1.len() as u64).unwrap();
        let mut h = enc.open_version("/f", old.id, 5).await.unwrap();
        assert_eq!(h.size, v1.len() as u64);
        let mut out = Vec::new();
        h.reader.read_to_end(&mut out).await.unwrap();
        assert!(out[..] == v1[5..]);

        let at = from_micros(1_500 * 1_000_000);
        assert_eq!(
            enc.metadata_at("/f", at).await.unwrap().size,
            v1.len() as u64
        );
        assert_eq!(
            enc.list_at("/", at).await.unwrap()[0].metadata.size,
            v1.len() as u64
        );
        let mut h = enc.open_read_at("/f", at, S as u64 + 1).await.unwrap();
        let mut out = Vec::new();
        h.reader.read_to_end(&mut out).await.unwrap();
        assert!(out[..] == v1[S + 1..]);
    });
    // Every file on disk, live or kept, is ciphertext.
    let mut files = 0;
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                assert!(!contains(&bytes, b"-SECRET"), "{}", path.display());
                files += usize::from(bytes.starts_with(&MAGIC));
            }
        }
    }
    assert_eq!(files, 3, "the live file and two kept versions");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn round_trip_at_random_sizes_and_offsets(
        len in 0usize..(3 * S + 50),
        offsets in proptest::collection::vec(0u64..(3 * S as u64 + 100), 1..4),
        write_chunk in 1usize..(2 * S),
    ) {
        let f = fixture();
        let data = body(len);
        block_on(async {
            let mut up = f.enc.open_write("/p", WriteMode::Create).await.unwrap();
            for chunk in data.chunks(write_chunk) {
                up.write_all(chunk).await.unwrap();
            }
            up.commit().await.unwrap();
            for offset in offsets {
                let (size, out, err) = get(&f.enc, "/p", offset).await;
                assert!(err.is_none());
                assert_eq!(size, len as u64);
                let start = usize::try_from(offset).unwrap().min(len);
                assert!(out[..] == data[start..]);
            }
        });
    }
}

/// An inner writer that records the size of every write.
struct Recorder {
    sizes: Vec<usize>,
    bytes: Vec<u8>,
}

impl futures_lite::AsyncWrite for Recorder {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.sizes.push(buf.len());
        self.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[test]
fn the_inner_store_gets_whole_segments_whatever_the_client_writes() {
    let recorder = Recorder {
        sizes: Vec::new(),
        bytes: Vec::new(),
    };
    let mut writer = EncryptWriter::new(recorder, FileCipher::new(&key(1)).unwrap());
    let data = body(3 * S + 5);
    block_on(async {
        for chunk in data.chunks(1_000) {
            writer.write_all(chunk).await.unwrap();
        }
        // A flush does not cut a segment short.
        writer.flush().await.unwrap();
        std::future::poll_fn(|cx| writer.poll_finish(cx))
            .await
            .unwrap();
    });
    let recorder = writer.into_inner();
    assert_eq!(
        recorder.sizes,
        [
            H + SEGMENT_CIPHER_LEN,
            SEGMENT_CIPHER_LEN,
            SEGMENT_CIPHER_LEN,
            5 + TAG_LEN
        ]
    );
    let mut out = Vec::new();
    decrypt_file(&key(1), &recorder.bytes[..], &mut out).unwrap();
    assert!(out == data);
}

#[test]
fn streams_over_a_local_directory() {
    // Past the local backend's 256 KiB in-memory head, its writes and reads go through a background thread
    // and return Pending: the writer's and reader's resumable states are exercised.
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn Storage> = Arc::new(crate::storage::LocalStorage::open(dir.path()).unwrap());
    let enc = Encrypted::new(local, key(4));
    let data = body((1 << 20) + 7);
    block_on(async {
        put(&enc, "/big", WriteMode::Create, &data).await;
        for offset in [0, 3 * S + 1, data.len() - 1] {
            let (size, out, err) = get(&enc, "/big", offset as u64).await;
            assert!(err.is_none(), "{err:?}");
            assert_eq!(size, data.len() as u64);
            assert!(out[..] == data[offset..]);
        }
        assert_eq!(put(&enc, "/big", WriteMode::Append, b"end").await, 3);
        assert_eq!(
            enc.metadata("/big").await.unwrap().size,
            data.len() as u64 + 3
        );
    });
    let raw = std::fs::read(dir.path().join("big")).unwrap();
    assert_eq!(
        Some(raw.len() as u64),
        ciphertext_len(data.len() as u64 + 3)
    );
}
