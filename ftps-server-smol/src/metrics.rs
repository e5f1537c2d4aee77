//! Prometheus metrics: what the sessions did, counted with relaxed atomics as it happens, rendered in the text
//! exposition format (version 0.0.4) and served at `/metrics` on `[metrics] listen`.
//!
//! The counters come from the engine's events ([`Metrics::record`]) and from timing each storage request
//! ([`Metrics::storage_op`]), so every frontend of this crate counts the same things. Updating one is an atomic
//! add: no lock on any session's path.

use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ftps_proto::server::{Direction, Event, Failure, RequestKind};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use smol::net::{TcpListener, TcpStream};

/// Counters for one server; see the module docs.
#[derive(Debug, Default)]
pub struct Metrics {
    sessions_opened: AtomicU64,
    /// `[ok, failed]`.
    logins: [AtomicU64; 2],
    /// `[download, upload][ok, failed]`.
    transfers: [[AtomicU64; 2]; 2],
    /// `[download, upload]`.
    bytes: [AtomicU64; 2],
    /// Control connections by TLS version: `[1.2, 1.3, other]`.
    control_tls: [AtomicU64; 3],
    /// Data connections by TLS version `[1.2, 1.3, other]` and `[resumed, full handshake]`.
    data_tls: [[AtomicU64; 2]; 3],
    /// Data connections refused because they did not resume the control session (522).
    resumption_refused: AtomicU64,
    /// Passive data connections from a foreign address, refused (RFC 2577 "port stealing").
    foreign_data_refused: AtomicU64,
    /// Replies sent, by class `1xx` .. `5xx`.
    replies: [AtomicU64; 5],
    storage: [Latency; StorageOp::ALL.len()],
}

/// What a session holds right now, read when the metrics are rendered.
#[derive(Debug, Clone, Copy, Default)]
pub struct Gauges {
    /// Control connections open.
    pub sessions: usize,
    /// Passive listeners bound.
    pub passive_listeners: usize,
}

/// One storage operation's latency histogram and error count.
#[derive(Debug, Default)]
struct Latency {
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`].
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    errors: AtomicU64,
}

/// Upper bounds of the latency buckets, in seconds: a local disk answers in tens of microseconds, an object
/// store in tens of milliseconds, and anything past a few seconds is an outage.
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// The storage requests of the engine, as metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageOp {
    /// `SIZE`, `MDTM`, `MLST`, `CWD` checks.
    Metadata,
    /// Listings.
    List,
    /// Opening a file for `RETR`.
    OpenRead,
    /// Opening a file for `STOR`, `APPE`, `STOU`.
    OpenWrite,
    /// `MKD`.
    MakeDir,
    /// `RMD`.
    RemoveDir,
    /// `DELE`.
    Delete,
    /// `RNFR`/`RNTO`.
    Rename,
    /// `MFMT`.
    SetModified,
    /// `SITE CHMOD`.
    Chmod,
}

impl StorageOp {
    const ALL: [StorageOp; 10] = [
        StorageOp::Metadata,
        StorageOp::List,
        StorageOp::OpenRead,
        StorageOp::OpenWrite,
        StorageOp::MakeDir,
        StorageOp::RemoveDir,
        StorageOp::Delete,
        StorageOp::Rename,
        StorageOp::SetModified,
        StorageOp::Chmod,
    ];

    /// The operation a storage request performs; `None` for requests that are not storage operations.
    pub fn of(kind: &RequestKind) -> Option<StorageOp> {
        Some(match kind {
            RequestKind::Metadata { .. } => StorageOp::Metadata,
            RequestKind::List { .. } => StorageOp::List,
            RequestKind::OpenRead { .. } => StorageOp::OpenRead,
            RequestKind::OpenWrite { .. } => StorageOp::OpenWrite,
            RequestKind::MakeDir { .. } => StorageOp::MakeDir,
            RequestKind::RemoveDir { .. } => StorageOp::RemoveDir,
            RequestKind::Delete { .. } => StorageOp::Delete,
            RequestKind::Rename { .. } => StorageOp::Rename,
            RequestKind::SetModified { .. } => StorageOp::SetModified,
            RequestKind::Chmod { .. } => StorageOp::Chmod,
            _ => return None,
        })
    }

    fn label(self) -> &'static str {
        match self {
            StorageOp::Metadata => "metadata",
            StorageOp::List => "list",
            StorageOp::OpenRead => "open_read",
            StorageOp::OpenWrite => "open_write",
            StorageOp::MakeDir => "mkdir",
            StorageOp::RemoveDir => "rmdir",
            StorageOp::Delete => "delete",
            StorageOp::Rename => "rename",
            StorageOp::SetModified => "set_modified",
            StorageOp::Chmod => "chmod",
        }
    }
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// `[1.2, 1.3, other]` index of a TLS version.
fn version_index(version: rustls::ProtocolVersion) -> usize {
    match version {
        rustls::ProtocolVersion::TLSv1_2 => 0,
        rustls::ProtocolVersion::TLSv1_3 => 1,
        _ => 2,
    }
}

const VERSION_LABELS: [&str; 3] = ["1.2", "1.3", "other"];

impl Metrics {
    /// A session was admitted.
    pub fn session_opened(&self) {
        add(&self.sessions_opened, 1);
    }

    /// Counts what an engine event says happened.
    pub fn record(&self, event: &Event) {
        match event {
            Event::Reply(reply) => {
                let class = usize::from(reply.code.get() / 100).clamp(1, 5) - 1;
                add(&self.replies[class], 1);
            }
            Event::TlsEstablished(info) => add(&self.control_tls[version_index(info.version)], 1),
            Event::LoggedIn { .. } => add(&self.logins[0], 1),
            Event::LoginFailed { .. } => add(&self.logins[1], 1),
            Event::TransferFinished(record) => {
                let direction = match record.direction {
                    Direction::Download => 0,
                    Direction::Upload => 1,
                };
                add(
                    &self.transfers[direction][usize::from(record.failure.is_some())],
                    1,
                );
                add(&self.bytes[direction], record.bytes);
                if let Some(tls) = &record.tls {
                    let resumed = usize::from(!tls.resumed);
                    add(&self.data_tls[version_index(tls.version)][resumed], 1);
                }
                if record.failure == Some(Failure::ResumptionRefused) {
                    add(&self.resumption_refused, 1);
                }
            }
            Event::DataConnectionRefused { .. } => add(&self.foreign_data_refused, 1),
            _ => {}
        }
    }

    /// Counts one storage operation that took `elapsed` and failed or not.
    pub fn storage_op(&self, op: StorageOp, elapsed: Duration, failed: bool) {
        let Some(index) = StorageOp::ALL.iter().position(|o| *o == op) else {
            return;
        };
        let latency = &self.storage[index];
        let seconds = elapsed.as_secs_f64();
        for (bucket, bound) in latency.buckets.iter().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                add(bucket, 1);
            }
        }
        add(&latency.count, 1);
        add(
            &latency.sum_micros,
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
        );
        if failed {
            add(&latency.errors, 1);
        }
    }

    /// The metrics in the Prometheus text format, with `gauges` read by the caller.
    pub fn render(&self, gauges: Gauges) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed).to_string();
        let mut out = String::with_capacity(8192);
        family(
            &mut out,
            ("ftps_sessions", "gauge", "Control connections open."),
            [(String::new(), gauges.sessions.to_string())],
        );
        family(
            &mut out,
            (
                "ftps_passive_listeners",
                "gauge",
                "Passive data listeners bound.",
            ),
            [(String::new(), gauges.passive_listeners.to_string())],
        );
        family(
            &mut out,
            (
                "ftps_sessions_opened_total",
                "counter",
                "Control connections admitted.",
            ),
            [(String::new(), get(&self.sessions_opened))],
        );
        family(
            &mut out,
            ("ftps_logins_total", "counter", "Logins, by result."),
            ["ok", "failed"]
                .iter()
                .zip(&self.logins)
                .map(|(r, c)| (format!("{{result=\"{r}\"}}"), get(c))),
        );
        let directions = ["download", "upload"];
        family(
            &mut out,
            (
                "ftps_transfers_total",
                "counter",
                "Transfers (files and listings), by direction and result.",
            ),
            directions
                .iter()
                .zip(&self.transfers)
                .flat_map(|(d, counts)| {
                    ["ok", "failed"].iter().zip(counts).map(move |(r, c)| {
                        (format!("{{direction=\"{d}\",result=\"{r}\"}}"), get(c))
                    })
                }),
        );
        family(
            &mut out,
            (
                "ftps_transfer_bytes_total",
                "counter",
                "Payload bytes moved over data connections, by direction.",
            ),
            directions
                .iter()
                .zip(&self.bytes)
                .map(|(d, c)| (format!("{{direction=\"{d}\"}}"), get(c))),
        );
        family(
            &mut out,
            (
                "ftps_control_tls_total",
                "counter",
                "Control connection TLS handshakes, by version.",
            ),
            VERSION_LABELS
                .iter()
                .zip(&self.control_tls)
                .map(|(v, c)| (format!("{{version=\"{v}\"}}"), get(c))),
        );
        family(
            &mut out,
            (
                "ftps_data_tls_total",
                "counter",
                "Data connections that ended with TLS, by version and whether they resumed the control session.",
            ),
            VERSION_LABELS.iter().zip(&self.data_tls).flat_map(|(v, counts)| {
                ["true", "false"].iter().zip(counts).map(move |(r, c)| {
                    (format!("{{version=\"{v}\",resumed=\"{r}\"}}"), get(c))
                })
            }),
        );
        family(
            &mut out,
            (
                "ftps_data_resumption_refused_total",
                "counter",
                "Data connections refused because they did not resume the control connection's TLS session.",
            ),
            [(String::new(), get(&self.resumption_refused))],
        );
        family(
            &mut out,
            (
                "ftps_data_foreign_peer_refused_total",
                "counter",
                "Passive data connections from another address than the control connection's, refused.",
            ),
            [(String::new(), get(&self.foreign_data_refused))],
        );
        family(
            &mut out,
            ("ftps_replies_total", "counter", "Replies sent, by class."),
            self.replies
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("{{class=\"{}xx\"}}", i + 1), get(c))),
        );
        let ops = || {
            StorageOp::ALL
                .iter()
                .map(|op| op.label())
                .zip(&self.storage)
        };
        let mut histogram = String::new();
        let _ = writeln!(
            histogram,
            "# HELP ftps_storage_seconds Storage operation latency (opening a transfer's file, not its body), by operation.\n# TYPE ftps_storage_seconds histogram"
        );
        for (op, latency) in ops() {
            for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&latency.buckets) {
                let _ = writeln!(
                    histogram,
                    "ftps_storage_seconds_bucket{{op=\"{op}\",le=\"{bound}\"}} {}",
                    get(bucket)
                );
            }
            let count = get(&latency.count);
            let micros = latency.sum_micros.load(Ordering::Relaxed);
            let _ = writeln!(
                histogram,
                "ftps_storage_seconds_bucket{{op=\"{op}\",le=\"+Inf\"}} {count}\n\
                 ftps_storage_seconds_sum{{op=\"{op}\"}} {}.{:06}\n\
                 ftps_storage_seconds_count{{op=\"{op}\"}} {count}",
                micros / 1_000_000,
                micros % 1_000_000
            );
        }
        out.push_str(&histogram);
        family(
            &mut out,
            (
                "ftps_storage_errors_total",
                "counter",
                "Storage operations that failed, by operation.",
            ),
            ops().map(|(op, latency)| (format!("{{op=\"{op}\"}}"), get(&latency.errors))),
        );
        out
    }
}

/// Appends one metric family: its `HELP` and `TYPE` lines, then a sample per `(labels, value)`.
fn family(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    samples: impl IntoIterator<Item = (String, String)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The longest request head the endpoint reads; a scrape sends a few hundred bytes.
const MAX_REQUEST: usize = 8192;

/// How long a scraper may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `render()` at `GET /metrics` on `listener` (HTTP/1.x, one request per connection) until the future is
/// dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    render: impl Fn() -> String + Send + Sync + 'static,
) {
    let render = std::sync::Arc::new(render);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            async_io::Timer::after(Duration::from_millis(100)).await;
            continue;
        };
        let render = std::sync::Arc::clone(&render);
        smol::spawn(async move {
            let answer = async {
                let _ = respond(stream, &*render).await;
            };
            let timeout = async {
                async_io::Timer::after(REQUEST_TIMEOUT * 2).await;
            };
            futures_lite::future::or(answer, timeout).await;
        })
        .detach();
    }
}

/// Reads one request head and answers it.
async fn respond(
    mut stream: TcpStream,
    render: &(dyn Fn() -> String + Send + Sync),
) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > MAX_REQUEST {
            return write_response(&mut stream, "431 Request Header Fields Too Large", "").await;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&chunk[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    // Scrapers may add a query string (`/metrics?name[]=...`); the whole set is always sent.
    let path = target.split(|b| *b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => write_response(&mut stream, "200 OK", &render()).await,
        (b"GET", _) => write_response(&mut stream, "404 Not Found", "see /metrics\n").await,
        _ => write_response(&mut stream, "405 Method Not Allowed", "").await,
    }
}

async fn write_response(stream: &mut TcpStream, status: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.flush().await?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_render_in_order() {
        let m = Metrics::default();
        m.storage_op(StorageOp::List, Duration::from_micros(50), false);
        m.storage_op(StorageOp::List, Duration::from_millis(3), true);
        m.storage_op(StorageOp::List, Duration::from_secs(20), false);
        let text = m.render(Gauges::default());
        assert!(text.contains("ftps_storage_seconds_bucket{op=\"list\",le=\"0.0001\"} 1\n"));
        assert!(text.contains("ftps_storage_seconds_bucket{op=\"list\",le=\"0.005\"} 2\n"));
        assert!(text.contains("ftps_storage_seconds_bucket{op=\"list\",le=\"10\"} 2\n"));
        assert!(text.contains("ftps_storage_seconds_bucket{op=\"list\",le=\"+Inf\"} 3\n"));
        assert!(text.contains("ftps_storage_seconds_count{op=\"list\"} 3\n"));
        assert!(text.contains("ftps_storage_seconds_sum{op=\"list\"} 20.003050\n"));
        assert!(text.contains("ftps_storage_errors_total{op=\"list\"} 1\n"));
        // Each family's HELP and TYPE come once, before its samples.
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        let helps = text.lines().filter(|l| l.starts_with("# HELP ")).count();
        assert_eq!(types, helps);
        let position = |s: &str| text.find(s).unwrap();
        assert!(
            position("# TYPE ftps_storage_seconds histogram")
                < position("ftps_storage_seconds_bucket")
        );
    }
}
