#![no_main]
//! Drives a `ServerSession` with a script (see `script.rs`): client bytes at arbitrary splits, EOF, time passing,
//! and the frontend's answers to its requests, draining every output after each step (the drive-loop contract).
//!
//! The first byte picks the configuration; the rest is the script. `ACTION` parameters: byte 0 picks a pending
//! request, bytes 1.. decode (`arbitrary`) into the outcome to answer it with.
//!
//! Invariants: no panic; no frontend text (error, file name, SITE reply) starts a reply line of its own; after `handle_timeout(now)` no deadline at or before `now`; request ids never repeat and
//! each is answered at most once; once closed, the session stays closed, issues no request that needs an answer,
//! and its error (if any) never changes.
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use ftps_proto::codec::Timeval;
use ftps_proto::data::DataReport;
use ftps_proto::path::VirtualPath;
use ftps_proto::server::{
    Failure, FileInfo, FileKind, LoginGrant, Notice, Outcome, ReqId, ResumptionPolicy,
    ServerSession, SessionConfig, SessionError, Source, StorageError, Work,
};
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod script;
use script::{Op, Script};

/// A server TLS config, made once: lets `AUTH TLS`, `PBSZ`/`PROT P` and implicit FTPS be reached. The fuzzer
/// cannot complete a handshake (the server's randomness is not scripted), so TLS bytes end in a handshake error.
fn tls_config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .unwrap();
            Arc::new(config)
        })
        .clone()
}

fn config(variant: u8) -> SessionConfig {
    let plain = SessionConfig {
        require_tls_control: false,
        require_tls_data: false,
        ..Default::default()
    };
    match variant % 4 {
        0 => plain,
        // Permissive, with short timers and a short line limit, so timers and limits are reached.
        1 => SessionConfig {
            allow_anonymous: true,
            allow_ccc: true,
            allow_site_to_site: true,
            passive_public_ipv4: Some(Ipv4Addr::new(203, 0, 113, 9)),
            data_resumption: ResumptionPolicy::Off,
            idle_timeout: Duration::from_secs(3),
            login_timeout: Duration::from_secs(2),
            data_accept_timeout: Duration::from_millis(500),
            failed_login_delay: Duration::ZERO,
            max_failed_logins: 1,
            max_line_len: 40,
            preliminary_reply_wait: Duration::from_millis(300),
            ..plain
        },
        // Explicit FTPS offered but not required: AUTH TLS switches, PROT P builds TLS data channels.
        2 => SessionConfig {
            tls: Some(tls_config()),
            allow_ccc: true,
            data_resumption: ResumptionPolicy::Preferred,
            preliminary_reply_wait: Duration::from_millis(300),
            ..plain
        },
        // Implicit FTPS with the secure defaults: everything the client sends goes to rustls.
        _ => SessionConfig {
            tls: Some(tls_config()),
            implicit_tls: true,
            ..Default::default()
        },
    }
}

#[derive(Arbitrary, Debug)]
enum FailureSeed {
    NotFound,
    PermissionDenied,
    Exists,
    NotADirectory,
    DiskFull,
    QuotaExceeded,
    Other,
    DataConnection,
    DataTls,
    ResumptionRefused,
    Truncated,
    Aborted,
    Unsupported,
}

impl FailureSeed {
    fn build(self) -> Failure {
        use StorageError as S;
        match self {
            Self::NotFound => Failure::Storage(S::NotFound),
            Self::PermissionDenied => Failure::Storage(S::PermissionDenied),
            Self::Exists => Failure::Storage(S::Exists),
            Self::NotADirectory => Failure::Storage(S::NotADirectory),
            Self::DiskFull => Failure::Storage(S::DiskFull),
            Self::QuotaExceeded => Failure::Storage(S::QuotaExceeded),
            Self::Other => Failure::Storage(S::Other("backend\r\n500 injected".to_owned())),
            Self::DataConnection => Failure::DataConnection,
            Self::DataTls => Failure::DataTls,
            Self::ResumptionRefused => Failure::ResumptionRefused,
            Self::Truncated => Failure::Truncated,
            Self::Aborted => Failure::Aborted,
            Self::Unsupported => Failure::Unsupported,
        }
    }
}

/// Names a backend might return, including ones a listing must not let through unescaped.
const NAMES: [&str; 8] = [
    "a.txt",
    "dir",
    "with space",
    "crlf\r\n226 injected",
    "",
    "..",
    "caf\u{e9}",
    "x;type=dir;",
];

#[derive(Arbitrary, Debug)]
struct FileSeed {
    name: u8,
    dir: bool,
    size: u32,
    modified: bool,
    mode: Option<u16>,
}

impl FileSeed {
    fn build(self) -> FileInfo {
        let kind = if self.dir {
            FileKind::Dir
        } else if self.size % 7 == 3 {
            FileKind::Symlink
        } else {
            FileKind::File
        };
        let mut info = FileInfo::new(
            NAMES[usize::from(self.name) % NAMES.len()],
            kind,
            u64::from(self.size),
        );
        info.modified = self.modified.then_some(Timeval {
            year: 2024,
            month: 2,
            day: 29,
            hour: 23,
            minute: 59,
            second: 60,
            millisecond: Some(999),
        });
        info.mode = self.mode.map(u32::from);
        info.owner = self.modified.then(|| "own er".to_owned());
        info
    }
}

#[derive(Arbitrary, Debug)]
enum OutcomeSeed {
    Done,
    Denied,
    LoggedIn,
    LoggedInNarrowed,
    NeedAccount,
    PassiveListening(u16),
    DataConnected(u16),
    /// A passive data connection from another host: the engine refuses it (RFC 2577).
    ForeignDataConnected(u16),
    Metadata(FileSeed),
    Listing(Vec<FileSeed>),
    Opened { size: Option<u32>, unique: bool },
    SiteReply,
    TransferFinished { clean: bool, bytes: u16 },
    Failed(FailureSeed),
}

impl OutcomeSeed {
    fn build(self, ipv6: bool) -> Outcome {
        let ip: std::net::IpAddr = if ipv6 {
            "::1".parse().unwrap()
        } else {
            Ipv4Addr::LOCALHOST.into()
        };
        match self {
            Self::Done => Outcome::Done,
            Self::Denied => Outcome::Denied,
            Self::LoggedIn => Outcome::LoggedIn(LoginGrant::default()),
            Self::LoggedInNarrowed => {
                let mut grant = LoginGrant {
                    home: VirtualPath::new("/home/u").unwrap(),
                    ..LoginGrant::default()
                };
                grant.policy.require_tls_data = true;
                grant.policy.deny_ccc = true;
                grant.policy.idle_timeout = Some(Duration::from_millis(100));
                Outcome::LoggedIn(grant)
            }
            Self::NeedAccount => Outcome::NeedAccount,
            Self::PassiveListening(port) => Outcome::PassiveListening(SocketAddr::new(ip, port)),
            Self::DataConnected(port) => Outcome::DataConnected {
                peer: SocketAddr::new(ip, port),
            },
            Self::ForeignDataConnected(port) => Outcome::DataConnected {
                peer: SocketAddr::new(Ipv4Addr::new(203, 0, 113, 9).into(), port),
            },
            Self::Metadata(file) => Outcome::Metadata(file.build()),
            Self::Listing(files) => {
                Outcome::Listing(files.into_iter().take(8).map(FileSeed::build).collect())
            }
            Self::Opened { size, unique } => Outcome::Opened {
                size: size.map(u64::from),
                path: if unique {
                    VirtualPath::new("/up/unique.1").unwrap()
                } else {
                    VirtualPath::root()
                },
            },
            Self::SiteReply => {
                Outcome::SiteReply(vec!["one".to_owned(), "two\r\n200 x".to_owned()])
            }
            Self::TransferFinished { clean, bytes } => {
                let mut report = DataReport::default();
                report.clean_close = clean;
                report.peer_close_notify = clean;
                report.bytes_sent = u64::from(bytes);
                Outcome::TransferFinished(report)
            }
            Self::Failed(failure) => Outcome::Failed(failure.build()),
        }
    }
}

/// Whether `bytes` hold a line that starts with one of the reply codes the harness smuggles into frontend texts.
///
/// Looks only where a line starts (after each `\n`), comparing byte by byte: a slice comparison at every offset
/// was a `memcmp` per byte of output, each one intercepted by libFuzzer (the harness's own search filled its
/// comparison tables and took an eighth of the target's time).
fn has_injected_line(bytes: &[u8]) -> bool {
    const MARKERS: [&[u8]; 3] = [b"500 injected", b"226 injected", b"200 x"];
    bytes
        .split(|&b| b == b'\n')
        .skip(1)
        .any(|line| MARKERS.iter().any(|marker| starts_with(line, marker)))
}

/// `line.starts_with(prefix)` without a `memcmp` call (see [`has_injected_line`]).
fn starts_with(line: &[u8], prefix: &[u8]) -> bool {
    line.len() >= prefix.len() && line.iter().zip(prefix).all(|(a, b)| a == b)
}

struct Harness {
    session: ServerSession,
    now: Instant,
    ipv6: bool,
    /// Requests that need an answer, in the order issued.
    pending: Vec<ReqId>,
    /// The `DriveData` ids `RunTransfer` named, for `data_ready`.
    transfers: Vec<ReqId>,
    last_id: Option<u64>,
    closed: bool,
    /// The error at close, compared (not formatted) after every later step.
    error: Option<SessionError>,
    wire: Vec<u8>,
    /// Events are formatted (their `Debug` is engine code too) into this one buffer.
    text: String,
}

impl Harness {
    /// Drains every output until all are empty, checking the invariants.
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            self.wire.clear();
            progressed |= self.session.poll_transmit(&mut self.wire) > 0;
            // Texts from the frontend carry CRLF + a reply code (`FailureSeed::Other`, `NAMES`, `SiteReply`):
            // none may start a reply line of its own. (TLS ciphertext is random bytes: not checked.)
            assert!(
                self.session.tls_active() || !has_injected_line(&self.wire),
                "reply injected: {:?}",
                String::from_utf8_lossy(&self.wire)
            );
            if script::tracing() && !self.wire.is_empty() {
                eprintln!("<- {:?}", String::from_utf8_lossy(&self.wire));
            }
            while let Some(work) = self.session.poll_work() {
                progressed = true;
                match work {
                    Work::Request(request) => {
                        let id = request.id.get();
                        if script::tracing() {
                            eprintln!("   request {id}: {:?}", request.kind);
                        }
                        assert!(
                            self.last_id.is_none_or(|last| id > last),
                            "request id reused"
                        );
                        self.last_id = Some(id);
                        assert!(!self.closed, "request after close: {request:?}");
                        self.pending.push(request.id);
                    }
                    Work::Notice(notice) => {
                        if script::tracing() {
                            eprintln!("   notice: {notice:?}");
                        }
                        if let Notice::RunTransfer { plan, data } = &notice {
                            if let Source::Bytes(listing) = &plan.source {
                                assert!(!has_injected_line(listing), "listing line injected");
                            }
                            self.transfers.push(*data);
                        }
                    }
                }
            }
            while let Some(event) = self.session.poll_event() {
                progressed = true;
                // Formatted only when tracing: `Debug` of every event was a tenth of the time, for derived impls
                // (the one hand-written one, `Command`'s, is the `command` target's).
                if script::tracing() {
                    eprintln!("   {event:?}");
                }
            }
            if !progressed {
                break;
            }
        }
        if self.closed {
            assert!(self.session.is_closed(), "a closed session reopened");
            assert_eq!(
                self.session.error(),
                self.error.as_ref(),
                "error changed after close"
            );
        }
        if self.session.is_closed() && !self.closed {
            self.closed = true;
            self.error = self.session.error().cloned();
            if let Some(error) = &self.error {
                self.text.clear();
                write!(self.text, "{error}").unwrap();
            }
        }
    }

    fn input(&mut self, mut bytes: &[u8]) {
        if script::tracing() {
            eprintln!("-> {:?}", String::from_utf8_lossy(bytes));
        }
        while !bytes.is_empty() {
            let taken = self.session.handle_input(self.now, bytes);
            assert!(taken <= bytes.len());
            bytes = &bytes[taken..];
            self.drain();
            if taken == 0 {
                // Backpressure: the queue is full until a request is answered; the rest is dropped here.
                break;
            }
        }
    }

    fn timeout(&mut self) {
        self.session.handle_timeout(self.now);
        self.drain();
        if let Some(deadline) = self.session.poll_timeout() {
            assert!(
                deadline > self.now,
                "deadline {deadline:?} not after now {:?}",
                self.now
            );
        }
    }

    fn action(&mut self, params: &[u8]) {
        let (&pick, rest) = params.split_first().unwrap();
        let Ok(outcome) = OutcomeSeed::arbitrary(&mut Unstructured::new(rest)) else {
            return;
        };
        // A few values of `pick` mean `data_ready` for a transfer instead of an answer.
        if pick >= 0xF0 {
            if let Some(&id) = self.transfers.get(usize::from(pick - 0xF0)) {
                self.session.data_ready(self.now, ftps_proto::data::DataReady::new(id));
                self.drain();
            }
            return;
        }
        if self.pending.is_empty() {
            return;
        }
        let id = self.pending.remove(usize::from(pick) % self.pending.len());
        self.session
            .complete(self.now, id, outcome.build(self.ipv6));
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&variant, rest)) = data.split_first() else {
        return;
    };
    let ipv6 = variant & 0x10 != 0;
    let (peer, local): (SocketAddr, SocketAddr) = if ipv6 {
        (
            "[2001:db8::7]:50000".parse().unwrap(),
            "[2001:db8::1]:21".parse().unwrap(),
        )
    } else {
        (
            "192.0.2.7:50000".parse().unwrap(),
            "192.0.2.1:21".parse().unwrap(),
        )
    };
    let now = Instant::now();
    let mut h = Harness {
        session: ServerSession::new(config(variant), peer, local, now),
        now,
        ipv6,
        pending: Vec::new(),
        transfers: Vec::new(),
        last_id: None,
        closed: false,
        error: None,
        wire: Vec::new(),
        text: String::new(),
    };
    h.drain();
    for op in Script::new(rest) {
        match op {
            Op::Input(bytes) => h.input(bytes),
            Op::Eof => {
                h.session.handle_eof(h.now);
                h.drain();
            }
            Op::Advance(ms) => {
                h.now += Duration::from_millis(u64::from(ms));
                h.timeout();
            }
            Op::Deadline => {
                if let Some(deadline) = h.session.poll_timeout() {
                    h.now = h.now.max(deadline);
                }
                h.timeout();
            }
            Op::Action(params) => h.action(&params),
        }
    }
});
