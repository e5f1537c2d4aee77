//! Control-channel codec throughput: command lines/s and reply lines/s, typical and worst case.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ftps_proto::codec::{parse_command, LineFramer, Reply, ReplyParser};
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

/// The single-line replies of a busy session, as a server sends them.
const TYPICAL_REPLIES: &[&[u8]] = &[
    b"226 Transfer complete\r\n",
    b"227 Entering Passive Mode (127,0,0,1,195,80).\r\n",
    b"150 Opening BINARY mode data connection for db-dump.tar.gz (1048576 bytes)\r\n",
    b"229 Entering Extended Passive Mode (|||50000|)\r\n",
    b"200 Switching to Binary mode.\r\n",
    b"213 1048576\r\n",
    b"350 Restart position accepted (1048576).\r\n",
    b"250 Directory successfully changed.\r\n",
];

/// A typical FEAT reply (RFC 2389 section 3.2), as vsftpd/ProFTPD send it.
const FEAT_REPLY: &[u8] = b"211-Features:\r\n AUTH TLS\r\n CCC\r\n EPRT\r\n EPSV\r\n HOST\r\n LANG en-US*\r\n \
MDTM\r\n MFMT\r\n MLST modify*;perm*;size*;type*;unique*;UNIX.group*;UNIX.mode*;UNIX.owner*;\r\n PASV\r\n \
PBSZ\r\n PROT\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End\r\n";

/// Decodes every reply in `stream`; returns how many there were (so the work cannot be optimised away).
fn decode_all(parser: &mut ReplyParser, stream: &[u8]) -> usize {
    let mut input = stream;
    let mut replies = 0;
    while !input.is_empty() {
        let (used, reply) = parser.decode(input);
        if let Some(reply) = reply {
            replies += usize::from(black_box(reply).is_ok());
        }
        if used == 0 {
            break;
        }
        input = &input[used..];
    }
    replies
}

/// One reply-parsing benchmark over `stream`, counted in reply lines.
fn bench_replies(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    stream: &[u8],
    replies: usize,
) {
    // A benchmark of a parser that rejects its input would measure the error path.
    assert_eq!(
        decode_all(&mut ReplyParser::new(), stream),
        replies,
        "{name}"
    );
    let lines = stream.iter().filter(|&&b| b == b'\n').count() as u64;
    group.throughput(Throughput::Elements(lines));
    group.bench_with_input(BenchmarkId::new("decode", name), stream, |b, stream| {
        let mut parser = ReplyParser::new();
        b.iter(|| black_box(decode_all(&mut parser, black_box(stream))))
    });
}

fn replies(c: &mut Criterion) {
    let mut group = c.benchmark_group("reply");

    let typical: Vec<u8> = TYPICAL_REPLIES.concat();
    bench_replies(&mut group, "typical", &typical, TYPICAL_REPLIES.len());
    bench_replies(&mut group, "feat", FEAT_REPLY, 1);

    // Worst cases within the default limits: one 4 KiB line, and 1000 lines of one multi-line reply.
    let mut long_line = b"550 ".to_vec();
    long_line.resize(4096, b'x');
    long_line.extend_from_slice(b"\r\n");
    bench_replies(&mut group, "4KiB-line", &long_line, 1);
    let mut many_lines = b"211-Status of /var/www:\r\n".to_vec();
    for i in 0..998 {
        let line = format!(" -rw-r--r--   1 www  www   4096 Nov 11 10:00 page-{i:04}.html\r\n");
        many_lines.extend_from_slice(line.as_bytes());
    }
    many_lines.extend_from_slice(b"211 End of status\r\n");
    bench_replies(&mut group, "1000-lines", &many_lines, 1);

    // The structured helper a client runs on every 227.
    let pasv = Reply::pasv("127.0.0.1:50000".parse().expect("a valid address"));
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_pasv", |b| {
        b.iter(|| black_box(black_box(&pasv).parse_pasv()))
    });
    group.finish();
}

criterion_group!(benches, commands, replies);
criterion_main!(benches);
