//! Bulk data-channel throughput: an in-memory pair of `DataChannel`s (server role sending, client role
//! receiving, real rustls, no sockets) next to raw rustls connections moving the same bytes the same way.
//!
//! Both sides: 64 KiB plaintext writes, ciphertext handed over in whatever the sender produced, the receiver
//! borrowing plaintext chunks without copying. Handshakes are set up outside the timed routine.

use std::hint::black_box;
use std::io::{BufRead, Write};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ftps_benches::{bulk_suites, localhost, Pki};
use ftps_proto::data::{
    DataChannel, DataEvent, DataOptions, DataProtection, DataTls, ResumptionPolicy,
};

const TOTAL: usize = 64 * 1024 * 1024;
const WRITE: usize = 64 * 1024;
/// The same send bound for both: `DataOptions::default().send_buffer_limit`.
const SEND_LIMIT: usize = 256 * 1024;

fn established_pair(pki: &Pki, suite: rustls::SupportedCipherSuite) -> (DataChannel, DataChannel) {
    let now = Instant::now();
    let server = DataTls::Server {
        config: pki.server_config(suite),
        resumption: ResumptionPolicy::Off,
    };
    let client = DataTls::Client {
        config: pki.client_config(suite),
        server_name: localhost(),
    };
    let mut server =
        DataChannel::new(now, DataProtection::Tls(server), DataOptions::default()).expect("server");
    let mut client =
        DataChannel::new(now, DataProtection::Tls(client), DataOptions::default()).expect("client");
    let mut wire = Vec::new();
    let mut done = 0;
    while done < 2 {
        wire.clear();
        let _ = client.poll_transmit(&mut wire);
        assert_eq!(server.handle_input(now, &wire), wire.len());
        wire.clear();
        let _ = server.poll_transmit(&mut wire);
        assert_eq!(client.handle_input(now, &wire), wire.len());
        for ch in [&mut server, &mut client] {
            while let Some(event) = ch.poll_event() {
                assert!(
                    matches!(event, DataEvent::HandshakeComplete(_)),
                    "{event:?}"
                );
                done += 1;
            }
        }
    }
    (server, client)
}

fn ours(mut pair: (DataChannel, DataChannel)) -> usize {
    let (server, client) = (&mut pair.0, &mut pair.1);
    let now = Instant::now();
    let data = vec![0x5a_u8; WRITE];
    let mut wire = Vec::with_capacity(SEND_LIMIT * 2);
    let (mut sent, mut received) = (0, 0);
    while received < TOTAL {
        while sent < TOTAL {
            let n = server.write(&data[..WRITE.min(TOTAL - sent)]);
            if n == 0 {
                break;
            }
            sent += n;
        }
        wire.clear();
        let _ = server.poll_transmit(&mut wire);
        let mut at = 0;
        while at < wire.len() {
            at += client.handle_input(now, &wire[at..]);
            loop {
                let chunk = client.read_chunk();
                if chunk.is_empty() {
                    break;
                }
                let n = chunk.len();
                black_box(chunk);
                received += n;
                client.consume(n);
            }
        }
    }
    received
}

fn raw_pair(
    pki: &Pki,
    suite: rustls::SupportedCipherSuite,
) -> (rustls::ServerConnection, rustls::ClientConnection) {
    let mut server = rustls::ServerConnection::new(pki.server_config(suite)).expect("server");
    let mut client =
        rustls::ClientConnection::new(pki.client_config(suite), localhost()).expect("client");
    server.set_buffer_limit(Some(SEND_LIMIT));
    let mut wire = Vec::new();
    while server.is_handshaking()
        || client.is_handshaking()
        || server.wants_write()
        || client.wants_write()
    {
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("write_tls");
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).expect("read_tls");
            server.process_new_packets().expect("server handshake");
        }
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).expect("write_tls");
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("read_tls");
            client.process_new_packets().expect("client handshake");
        }
    }
    (server, client)
}

fn raw(mut pair: (rustls::ServerConnection, rustls::ClientConnection)) -> usize {
    let (server, client) = (&mut pair.0, &mut pair.1);
    let data = vec![0x5a_u8; WRITE];
    let mut wire = Vec::with_capacity(SEND_LIMIT * 2);
    let (mut sent, mut received) = (0, 0);
    while received < TOTAL {
        while sent < TOTAL {
            let n = server
                .writer()
                .write(&data[..WRITE.min(TOTAL - sent)])
                .expect("write");
            if n == 0 {
                break;
            }
            sent += n;
        }
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).expect("write_tls");
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            // Err: the plaintext buffer is full; read it out below, then go on.
            if client.read_tls(&mut rd).is_ok() {
                client.process_new_packets().expect("process");
            }
            let mut reader = client.reader();
            loop {
                let n = match reader.fill_buf() {
                    Ok(chunk) if !chunk.is_empty() => {
                        black_box(chunk);
                        chunk.len()
                    }
                    _ => break,
                };
                received += n;
                reader.consume(n);
            }
        }
    }
    received
}

fn bulk(c: &mut Criterion) {
    let mut group = c.benchmark_group("data_channel_64MiB");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(10);
    for (label, suite, kind) in bulk_suites() {
        let Some(pki) = Pki::generate(kind) else {
            eprintln!("skipped: {label} needs the openssl command to generate an RSA key");
            continue;
        };
        group.bench_function(format!("ours/{label}"), |b| {
            b.iter_batched(
                || established_pair(&pki, suite),
                ours,
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("raw_rustls/{label}"), |b| {
            b.iter_batched(|| raw_pair(&pki, suite), raw, BatchSize::PerIteration)
        });
    }
    group.finish();
}

criterion_group!(benches, bulk);
criterion_main!(benches);
