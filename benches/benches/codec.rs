//! Control-channel codec throughput: command lines/s and reply lines/s, typical and worst case.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ftps_proto::codec::{parse_command, LineFramer};
use std::hint::black_box;

/// What a busy session sends: the usual mix of short commands and paths.
const TYPICAL_COMMANDS: &[&[u8]] = &[
    b"USER alice",
    b"PASS secret",
    b"TYPE I",
    b"EPSV",
    b"PASV",
    b"RETR /backups/2026/11/db-dump.tar.gz",
    b"STOR upload/report final.pdf",
    b"SIZE /backups/2026/11/db-dump.tar.gz",
    b"MDTM index.html",
    b"EPRT |2|::1|5282|",
    b"PORT 127,0,0,1,195,80",
    b"MLSD /var/www",
    b"REST 1048576",
    b"NOOP",
];

fn worst_case_command() -> Vec<u8> {
    // The longest line the framer accepts by default, as one long path: the parser's cost per byte.
    let mut line = b"STOR /".to_vec();
    line.resize(LineFramer::DEFAULT_MAX_LINE_LEN, b'a');
    line
}

fn commands(c: &mut Criterion) {
    let mut group = c.benchmark_group("command");
    group.throughput(Throughput::Elements(TYPICAL_COMMANDS.len() as u64));
    group.bench_function("parse/typical", |b| {
        b.iter(|| {
            for line in TYPICAL_COMMANDS {
                let _ = black_box(parse_command(black_box(line)));
            }
        })
    });
    let long = worst_case_command();
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse/4KiB-path", |b| {
        b.iter(|| black_box(parse_command(black_box(&long))))
    });

    // Framing plus parsing, as a session sees the stream: all lines in one buffer.
    let mut stream = Vec::new();
    for line in TYPICAL_COMMANDS {
        stream.extend_from_slice(line);
        stream.extend_from_slice(b"\r\n");
    }
    group.throughput(Throughput::Elements(TYPICAL_COMMANDS.len() as u64));
    group.bench_with_input(
        BenchmarkId::new("frame+parse", "typical"),
        &stream,
        |b, stream| {
            let mut framer = LineFramer::default();
            b.iter(|| {
                let mut input = &stream[..];
                while !input.is_empty() {
                    let (used, line) = framer.decode(input);
                    if let Some(Ok(line)) = line {
                        let _ = black_box(parse_command(line));
                    }
                    input = &input[used..];
                }
            })
        },
    );
    group.finish();
}

criterion_group!(benches, commands);
criterion_main!(benches);
