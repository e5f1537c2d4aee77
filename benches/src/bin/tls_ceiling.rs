//! `tls-ceiling`: the throughput ceiling for FTPS bulk transfers on this machine.
//!
//! A raw rustls stream (ring provider) over TCP on 127.0.0.1 moves N bytes in one direction, with the buffer
//! sizes an FTPS data connection uses (256 KiB application writes and reads), and no FTP at all. `cargo xtask
//! bench` divides every FTPS row's throughput by this number, measured in the same run.
//!
//! ```text
//! tls-ceiling [--bytes N] [--direction download|upload] [--buffer BYTES] [--suite NAME] [--tls12]
//!             [--source FILE] [--sink FILE] [--sink-sync]
//! ```
//!
//! With `--source` the sender reads its bytes from FILE (from the start, `--bytes` of them, in `--buffer` reads)
//! instead of repeating one buffer; with `--sink` the receiver writes what it gets to FILE (created or
//! truncated, plaintext as rustls hands it over, in `--buffer` units), and `--sink-sync` adds an fsync before the
//! clock stops. Together they make the ceiling do the file I/O an FTPS row does (a RETR reads a file on the
//! server and `ftps get` writes and fsyncs one on the client), so the ratio compares like with like.
//!
//! `download` means the server sends (RETR), `upload` that the client sends (STOR). The default suite is
//! TLS13_AES_128_GCM_SHA256 (TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 with `--tls12`). The result is one line of
//! JSON on stdout. The clock starts after the handshake, at the first application write, and stops when the
//! receiver has read every byte and the sender's close_notify.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};

type Result<T = ()> = std::result::Result<T, String>;

/// Which side of the TLS connection sends the bytes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Direction {
    /// The server sends (an FTP RETR).
    Download,
    /// The client sends (an FTP STOR).
    Upload,
}

/// What one run measures.
#[derive(Debug)]
struct Options {
    bytes: u64,
    direction: Direction,
    buffer: usize,
    suite: Option<String>,
    tls12: bool,
    /// Gives up (and fails) after this long, so a wedged run cannot hang a benchmark script.
    timeout: Duration,
    /// The sender reads its bytes from this file.
    source: Option<PathBuf>,
    /// The receiver writes its bytes to this file.
    sink: Option<PathBuf>,
    /// The receiver fsyncs the sink before the clock stops.
    sink_sync: bool,
}

const USAGE: &str =
    "usage: tls-ceiling [--bytes N] [--direction download|upload] [--buffer BYTES] \
                     [--suite NAME] [--tls12] [--timeout SECONDS] [--source FILE] [--sink FILE] [--sink-sync]";

fn parse_size(text: &str) -> Result<u64> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => text.split_at(at),
        None => (text, ""),
    };
    let n: u64 = digits.parse().map_err(|_| format!("not a size: {text}"))?;
    let unit = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KIB" => 1 << 10,
        "M" | "MIB" => 1 << 20,
        "G" | "GIB" => 1 << 30,
        _ => return Err(format!("unknown size unit in {text}")),
    };
    n.checked_mul(unit)
        .ok_or_else(|| format!("size too large: {text}"))
}

fn parse_args(args: &[String]) -> Result<Options> {
    let mut options = Options {
        bytes: 1 << 30,
        direction: Direction::Download,
        buffer: 256 * 1024,
        suite: None,
        tls12: false,
        timeout: Duration::from_secs(600),
        source: None,
        sink: None,
        sink_sync: false,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--bytes" => options.bytes = parse_size(value()?)?,
            "--buffer" => {
                let size = parse_size(value()?)?;
                options.buffer = usize::try_from(size)
                    .ok()
                    .filter(|&b| b > 0)
                    .ok_or("--buffer must be positive")?;
            }
            "--direction" => {
                options.direction = match value()?.as_str() {
                    "download" | "down" | "retr" => Direction::Download,
                    "upload" | "up" | "stor" => Direction::Upload,
                    other => return Err(format!("unknown direction {other}\n{USAGE}")),
                }
            }
            "--suite" => options.suite = Some(value()?.clone()),
            "--tls12" => options.tls12 = true,
            "--source" => options.source = Some(PathBuf::from(value()?)),
            "--sink" => options.sink = Some(PathBuf::from(value()?)),
            "--sink-sync" => options.sink_sync = true,
            "--timeout" => {
                let secs: u64 = value()?
                    .parse()
                    .map_err(|_| "--timeout takes whole seconds".to_string())?;
                options.timeout = Duration::from_secs(secs);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if options.sink_sync && options.sink.is_none() {
        return Err(format!("--sink-sync needs --sink\n{USAGE}"));
    }
    Ok(options)
}

/// The ring provider cut down to the one suite this run measures.
fn provider(options: &Options) -> Result<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    let wanted = match (&options.suite, options.tls12) {
        (Some(name), _) => name.to_ascii_uppercase(),
        (None, false) => "TLS13_AES_128_GCM_SHA256".to_string(),
        (None, true) => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".to_string(),
    };
    let names: Vec<String> = provider
        .cipher_suites
        .iter()
        .map(|s| format!("{:?}", s.suite()))
        .collect();
    provider
        .cipher_suites
        .retain(|s| format!("{:?}", s.suite()) == wanted);
    if provider.cipher_suites.is_empty() {
        return Err(format!(
            "unknown cipher suite {wanted}; known: {}",
            names.join(", ")
        ));
    }
    Ok(provider)
}

fn configs(options: &Options) -> Result<(Arc<ServerConfig>, Arc<ClientConfig>)> {
    let provider = Arc::new(provider(options)?);
    let versions: &[&rustls::SupportedProtocolVersion] = if options.tls12 {
        &[&rustls::version::TLS12]
    } else {
        rustls::ALL_VERSIONS
    };
    let key = rcgen::KeyPair::generate().map_err(|e| format!("key pair: {e}"))?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .and_then(|params| params.self_signed(&key))
        .map_err(|e| format!("certificate: {e}"))?;
    let cert_der: CertificateDer<'static> = cert.der().clone();
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));

    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("server protocol versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key_der)
        .map_err(|e| format!("server certificate: {e}"))?;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert_der)
        .map_err(|e| format!("trust anchor: {e}"))?;
    let client = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("client protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((Arc::new(server), Arc::new(client)))
}

/// Bytes to send: not all zeros, so nothing along the way can take a shortcut.
fn payload(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            // xorshift64: cheap, deterministic, good enough to defeat any compression.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Where the sender's bytes come from.
enum Source {
    /// One buffer, sent again and again.
    Repeat(Vec<u8>),
    /// A file, read in buffer-sized reads into `buffer`.
    File { file: File, buffer: Vec<u8> },
}

impl Source {
    fn open(path: Option<&Path>, buffer_len: usize) -> Result<Self> {
        Ok(match path {
            None => Source::Repeat(payload(buffer_len)),
            Some(path) => Source::File {
                file: File::open(path).map_err(|e| format!("{}: {e}", path.display()))?,
                buffer: vec![0; buffer_len],
            },
        })
    }
}

/// Writes `total` bytes in buffer-sized application writes (read from the source file, when there is one).
fn send<S: Read + Write>(stream: &mut S, total: u64, source: &mut Source) -> Result<Instant> {
    let started = Instant::now();
    let mut left = total;
    while left > 0 {
        let part = match source {
            Source::Repeat(buffer) => {
                let chunk = usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
                buffer.get(..chunk).unwrap_or(buffer)
            }
            Source::File { file, buffer } => {
                let want = usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
                let want = buffer.get_mut(..want).ok_or("buffer")?;
                let n = file.read(want).map_err(|e| format!("source: {e}"))?;
                if n == 0 {
                    return Err(format!("source ended {left} bytes early"));
                }
                want.get(..n).ok_or("short read")?
            }
        };
        stream.write_all(part).map_err(|e| format!("send: {e}"))?;
        left -= part.len() as u64;
    }
    stream.flush().map_err(|e| format!("send flush: {e}"))?;
    Ok(started)
}

/// Where the receiver's bytes go.
struct Sink {
    file: Option<File>,
    sync: bool,
}

impl Sink {
    fn create(path: Option<&Path>, sync: bool) -> Result<Self> {
        let file = path
            .map(|p| File::create(p).map_err(|e| format!("{}: {e}", p.display())))
            .transpose()?;
        Ok(Sink { file, sync })
    }

    fn write(&mut self, bytes: &[u8]) -> Result {
        match self.file.as_mut() {
            Some(file) => file.write_all(bytes).map_err(|e| format!("sink: {e}")),
            None => Ok(()),
        }
    }

    fn finish(self) -> Result {
        match (self.file, self.sync) {
            (Some(file), true) => file.sync_all().map_err(|e| format!("sink fsync: {e}")),
            _ => Ok(()),
        }
    }
}

/// Reads until close_notify, counting bytes (and writing them to the sink).
fn receive<S: Read>(stream: &mut S, buffer: &mut [u8], sink: &mut Sink) -> Result<u64> {
    let mut got = 0u64;
    loop {
        match stream.read(buffer) {
            Ok(0) => return Ok(got),
            Ok(n) => {
                got += n as u64;
                sink.write(buffer.get(..n).unwrap_or(&[]))?;
            }
            Err(e) => return Err(format!("receive after {got} bytes: {e}")),
        }
    }
}

fn measure(options: &Options) -> Result<(f64, String, String)> {
    let (server_config, client_config) = configs(options)?;
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| format!("bind: {e}"))?;
    let direction = options.direction;
    let total = options.bytes;
    let buffer_len = options.buffer;
    let timeout = options.timeout;
    // The files are opened before the clock starts (an FTPS row opens them before its data connection, too).
    let source = Source::open(options.source.as_deref(), buffer_len)?;
    let sink = Sink::create(options.sink.as_deref(), options.sink_sync)?;
    let (mut server_source, mut server_sink, mut client_source, mut client_sink) = match direction {
        Direction::Download => (Some(source), None, None, Some(sink)),
        Direction::Upload => (None, Some(sink), Some(source), None),
    };

    // The server thread: accept one connection, send or receive, report (start, end, bytes).
    let server = std::thread::spawn(move || -> Result<(Option<Instant>, Instant, u64)> {
        let (tcp, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
        tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
        tcp.set_read_timeout(Some(timeout))
            .map_err(|e| format!("timeout: {e}"))?;
        tcp.set_write_timeout(Some(timeout))
            .map_err(|e| format!("timeout: {e}"))?;
        let conn = ServerConnection::new(server_config).map_err(|e| format!("server: {e}"))?;
        let mut tls = StreamOwned::new(conn, tcp);
        match direction {
            Direction::Download => {
                let mut source = server_source.take().ok_or("no source")?;
                let started = send(&mut tls, total, &mut source)?;
                tls.conn.send_close_notify();
                tls.flush().map_err(|e| format!("close_notify: {e}"))?;
                // Wait for the client's close_notify, so the clock covers delivery, not just buffering.
                let mut rest = vec![0u8; 4096];
                let _ = receive(&mut tls, &mut rest, &mut Sink::create(None, false)?)?;
                Ok((Some(started), Instant::now(), total))
            }
            Direction::Upload => {
                let mut sink = server_sink.take().ok_or("no sink")?;
                let mut buf = vec![0u8; buffer_len];
                let got = receive(&mut tls, &mut buf, &mut sink)?;
                sink.finish()?;
                let ended = Instant::now();
                tls.conn.send_close_notify();
                let _ = tls.flush();
                Ok((None, ended, got))
            }
        }
    });

    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| format!("nodelay: {e}"))?;
    tcp.set_read_timeout(Some(timeout))
        .map_err(|e| format!("timeout: {e}"))?;
    tcp.set_write_timeout(Some(timeout))
        .map_err(|e| format!("timeout: {e}"))?;
    let name = ServerName::try_from("localhost").map_err(|e| format!("server name: {e}"))?;
    let conn = ClientConnection::new(client_config, name).map_err(|e| format!("client: {e}"))?;
    let mut tls = StreamOwned::new(conn, tcp);
    // Finish the handshake before the clock starts: the ceiling is for bulk bytes.
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let version = tls
        .conn
        .protocol_version()
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let suite = tls
        .conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()))
        .unwrap_or_default();

    let (client_started, client_ended, client_got) = match direction {
        Direction::Download => {
            let mut sink = client_sink.take().ok_or("no sink")?;
            let mut buf = vec![0u8; buffer_len];
            let got = receive(&mut tls, &mut buf, &mut sink)?;
            sink.finish()?;
            let ended = Instant::now();
            tls.conn.send_close_notify();
            let _ = tls.flush();
            (None, ended, got)
        }
        Direction::Upload => {
            let mut source = client_source.take().ok_or("no source")?;
            let started = send(&mut tls, total, &mut source)?;
            tls.conn.send_close_notify();
            tls.flush().map_err(|e| format!("close_notify: {e}"))?;
            let mut rest = vec![0u8; 4096];
            let _ = receive(&mut tls, &mut rest, &mut Sink::create(None, false)?)?;
            (Some(started), Instant::now(), total)
        }
    };
    let (server_started, server_ended, server_got) = server
        .join()
        .map_err(|_| "server thread panicked".to_string())??;

    let (started, ended, got) = match direction {
        Direction::Download => (server_started, client_ended, client_got),
        Direction::Upload => (client_started, server_ended, server_got),
    };
    let _ = (client_started, server_started, client_got, server_got);
    let started = started.ok_or("no start time")?;
    if got != total {
        return Err(format!("received {got} of {total} bytes"));
    }
    let seconds = ended.saturating_duration_since(started).as_secs_f64();
    Ok((seconds, version, suite))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_args(&args) {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match measure(&options) {
        Ok((seconds, version, suite)) => {
            let mb_per_s = if seconds > 0.0 {
                options.bytes as f64 / 1e6 / seconds
            } else {
                0.0
            };
            let direction = match options.direction {
                Direction::Download => "download",
                Direction::Upload => "upload",
            };
            println!(
                "{{\"bytes\":{},\"direction\":\"{direction}\",\"buffer\":{},\"version\":\"{version}\",\
                 \"suite\":\"{suite}\",\"seconds\":{seconds:.6},\"mb_per_s\":{mb_per_s:.1}}}",
                options.bytes, options.buffer
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tls-ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("4k").unwrap(), 4096);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn moves_every_byte_both_ways() {
        for direction in [Direction::Download, Direction::Upload] {
            let mut options = parse_args(&[]).unwrap();
            options.bytes = 3 * 1024 * 1024 + 17;
            options.direction = direction;
            let (_, version, suite) = measure(&options).unwrap();
            assert_eq!(version, "TLSv1_3");
            assert_eq!(suite, "TLS13_AES_128_GCM_SHA256");
        }
    }

    #[test]
    fn file_source_and_sink_carry_the_file_both_ways() {
        let dir = std::env::temp_dir().join(format!("tls-ceiling-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("source.bin");
        let data: Vec<u8> = (0..(1024 * 1024 + 333))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        std::fs::write(&source, &data).unwrap();
        for direction in ["download", "upload"] {
            let sink = dir.join(format!("sink-{direction}.bin"));
            let args: Vec<String> = [
                "--bytes",
                &data.len().to_string(),
                "--buffer",
                "65536",
                "--direction",
                direction,
                "--source",
                source.to_str().unwrap(),
                "--sink",
                sink.to_str().unwrap(),
                "--sink-sync",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            measure(&parse_args(&args).unwrap()).unwrap();
            assert!(std::fs::read(&sink).unwrap() == data, "{direction}");
        }
        // A source shorter than --bytes is an error, not a short measurement.
        let mut options =
            parse_args(&["--source".to_string(), source.display().to_string()]).unwrap();
        options.bytes = data.len() as u64 + 1;
        assert!(measure(&options).is_err());
        assert!(parse_args(&["--sink-sync".to_string()]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls12_flag_picks_tls12() {
        let mut options = parse_args(&["--tls12".to_string()]).unwrap();
        options.bytes = 1024 * 1024;
        let (_, version, suite) = measure(&options).unwrap();
        assert_eq!(version, "TLSv1_2");
        assert_eq!(suite, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
    }
}
