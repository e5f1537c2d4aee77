//! At-rest encryption throughput (issue 17): our format (STREAM over AES-256-GCM, 64 KiB segments, through
//! the same reader and writer the storage layer uses) against the same STREAM loop on raw ring AEADs,
//! AES-256-GCM and ChaCha20-Poly1305 (what `age` uses), measured in one run so the ratios hold on a noisy
//! machine.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ftps_server_smol::storage::{decrypt_file, encrypt_file, DataKey};
use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use std::hint::black_box;
use std::io;

const TOTAL: usize = 64 << 20;
const SEGMENT: usize = 64 * 1024;
const TAG: usize = 16;

fn plaintext() -> Vec<u8> {
    (0..TOTAL)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect()
}

fn nonce(counter: usize, last: bool) -> Nonce {
    let mut bytes = [0; 12];
    bytes[7..11].copy_from_slice(&(counter as u32).to_be_bytes());
    bytes[11] = u8::from(last);
    Nonce::assume_unique_for_key(bytes)
}

/// The bare STREAM loop on `alg`: copy a segment into a scratch buffer and seal it there (what the format
/// does), without headers, files or async.
fn raw_seal(key: &LessSafeKey, data: &[u8], scratch: &mut [u8], out: &mut Vec<u8>) {
    out.clear();
    let count = data.len().div_ceil(SEGMENT);
    for (i, chunk) in data.chunks(SEGMENT).enumerate() {
        let buf = &mut scratch[..chunk.len()];
        buf.copy_from_slice(chunk);
        let tag = key
            .seal_in_place_separate_tag(nonce(i, i + 1 == count), Aad::empty(), buf)
            .expect("seal");
        out.extend_from_slice(buf);
        out.extend_from_slice(tag.as_ref());
    }
}

fn raw_open(key: &LessSafeKey, sealed: &[u8], scratch: &mut [u8]) -> usize {
    let count = sealed.len().div_ceil(SEGMENT + TAG);
    let mut total = 0;
    for (i, chunk) in sealed.chunks(SEGMENT + TAG).enumerate() {
        let buf = &mut scratch[..chunk.len()];
        buf.copy_from_slice(chunk);
        let plain = key
            .open_in_place(nonce(i, i + 1 == count), Aad::empty(), buf)
            .expect("our own ciphertext opens");
        total += black_box(plain).len();
    }
    total
}

fn encryption(c: &mut Criterion) {
    let data = plaintext();
    let key = DataKey::from_bytes([7; 32]);
    let mut group = c.benchmark_group("encryption");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(10);

    let mut sealed = Vec::with_capacity(TOTAL + TOTAL / 1000 + 4096);
    group.bench_function("ours-aes256gcm/encrypt", |b| {
        b.iter(|| {
            sealed.clear();
            encrypt_file(&key, &data[..], &mut sealed).expect("encrypt")
        })
    });
    sealed.clear();
    encrypt_file(&key, &data[..], &mut sealed).expect("encrypt");
    group.bench_function("ours-aes256gcm/decrypt", |b| {
        b.iter(|| decrypt_file(&key, &sealed[..], io::sink()).expect("decrypt"))
    });

    let mut scratch = vec![0; SEGMENT + TAG];
    let mut out = Vec::with_capacity(TOTAL + TOTAL / 1000);
    for (name, alg) in [
        ("raw-aes256gcm", &aead::AES_256_GCM),
        ("raw-chacha20poly1305", &aead::CHACHA20_POLY1305),
    ] {
        let key = LessSafeKey::new(UnboundKey::new(alg, &[9; 32]).expect("a 32-byte key"));
        group.bench_function(format!("{name}/encrypt"), |b| {
            b.iter(|| raw_seal(&key, &data, &mut scratch, &mut out))
        });
        raw_seal(&key, &data, &mut scratch, &mut out);
        group.bench_function(format!("{name}/decrypt"), |b| {
            b.iter(|| raw_open(&key, &out, &mut scratch))
        });
    }
    group.finish();
}

criterion_group!(benches, encryption);
criterion_main!(benches);
