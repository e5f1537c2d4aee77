#![no_main]
//! Drives a plain-FTP `ClientSession` with a script (see `script.rs`): server bytes at arbitrary splits, EOF,
//! time passing, and the caller's side (submitted operations, aborts, and answers to the session's requests by
//! id: connected, listening, listing bytes, data channel results, setup failures, including stale and repeated
//! ids), draining every output after each step (the drive-loop contract).
//!
//! The first byte picks the configuration; the rest is the script. `ACTION` parameters decode (`arbitrary`)
//! into a [`Call`].
//!
//! Invariants: no panic; after `handle_timeout(now)` no deadline at or before `now`; every `Completed` names a
//! submitted operation, once; every request names a submitted operation and none comes after the end; no argument smuggles a second command onto the wire; the session error is sticky; after `Failed`/`Closed` nothing goes on the wire and
//! every new operation completes at once with an error.
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use ftps_proto::client::{
    ClientSession, ClientSessionConfig, Credentials, DataConnectError, DataConnectionMode, Event,
    OpId, Operation, Outcome, ReqId, SessionError,
};
use ftps_proto::codec::{parse_command, Timeval};
use ftps_proto::data::{DataError, DataReport};
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod script;
use script::{Op, Script};

/// Paths a caller might pass, including ones that must not smuggle a second command onto the wire.
const PATHS: [&str; 8] = [
    "/",
    "a.txt",
    "dir/sub dir",
    "",
    "evil\r\nDELE x",
    "caf\u{e9}",
    "\u{ff}iac",
    "..",
];

/// Lines for `Operation::Raw`; the transfer and protocol-switch ones must be refused.
const RAW: [&[u8]; 8] = [
    b"SYST",
    b"STAT",
    b"HELP SITE",
    b"SITE CHMOD 755 a",
    b"RETR x",
    b"AUTH TLS",
    b"QUIT",
    b"OPTS MLST size;",
];

#[derive(Arbitrary, Debug)]
enum OpSeed {
    Login { account: bool },
    Pwd,
    Cwd(u8),
    Cdup,
    Mkdir(u8),
    Rmdir(u8),
    Delete(u8),
    Rename(u8, u8),
    Size(u8),
    Mdtm(u8),
    SetModified(u8),
    List(Option<u8>),
    NameList(Option<u8>),
    Retrieve { path: u8, offset: Option<u16> },
    Store(u8),
    Append(u8),
    StoreAt(u8, u16),
    StoreUnique(Option<u8>),
    Raw(u8),
    Noop,
    Quit,
}

fn path(i: u8) -> String {
    PATHS[usize::from(i) % PATHS.len()].to_owned()
}

impl OpSeed {
    fn build(self) -> Operation {
        match self {
            Self::Login { account } => Operation::Login(Credentials {
                account: account.then(|| "acct".to_owned()),
                ..Credentials::new("alice", "secret")
            }),
            Self::Pwd => Operation::Pwd,
            Self::Cwd(p) => Operation::Cwd(path(p)),
            Self::Cdup => Operation::Cdup,
            Self::Mkdir(p) => Operation::Mkdir(path(p)),
            Self::Rmdir(p) => Operation::Rmdir(path(p)),
            Self::Delete(p) => Operation::Delete(path(p)),
            Self::Rename(a, b) => Operation::Rename {
                from: path(a),
                to: path(b),
            },
            Self::Size(p) => Operation::Size(path(p)),
            Self::Mdtm(p) => Operation::Mdtm(path(p)),
            Self::SetModified(p) => Operation::SetModified {
                path: path(p),
                time: Timeval {
                    year: 2024,
                    month: 3,
                    day: 1,
                    hour: 12,
                    minute: 0,
                    second: 0,
                    millisecond: None,
                },
            },
            Self::List(p) => Operation::List(p.map(path)),
            Self::NameList(p) => Operation::NameList(p.map(path)),
            Self::Retrieve { path: p, offset } => Operation::Retrieve {
                path: path(p),
                offset: offset.map(u64::from),
            },
            Self::Store(p) => Operation::Store(path(p)),
            Self::Append(p) => Operation::Append(path(p)),
            Self::StoreAt(p, offset) => Operation::StoreAt {
                path: path(p),
                offset: u64::from(offset),
            },
            Self::StoreUnique(p) => Operation::StoreUnique(p.map(path)),
            Self::Raw(i) => match parse_command(RAW[usize::from(i) % RAW.len()]) {
                Ok(command) => Operation::Raw(command),
                Err(_) => Operation::Noop,
            },
            Self::Noop => Operation::Noop,
            Self::Quit => Operation::Quit,
        }
    }
}

/// What the caller does besides feeding server bytes. `Abort`'s operand picks among the submitted operations;
/// the answers' first operand picks among the requests seen so far (answered ones too: a repeated or misfitting
/// answer must be ignored).
#[derive(Arbitrary, Debug)]
enum Call {
    Submit(OpSeed),
    Abort(u8),
    Listening(u8, u16),
    ListingData(u8, u8),
    DataFinished {
        request: u8,
        ok: bool,
        clean: bool,
        bytes: u8,
    },
    SetToday(u8),
    Connected(u8),
    ConnectFailed(u8),
}

/// Listing bytes a data channel might deliver.
const LISTINGS: [&[u8]; 4] = [
    b"-rw-r--r--   1 ftp ftp  42 Mar  1 12:00 a.txt\r\ndrwxr-xr-x 2 ftp ftp 4096 Jan  1  2020 dir\r\n",
    b"type=file;size=42;modify=20240301120000; a.txt\r\ntype=dir; dir\r\n",
    b"a.txt\r\ndir\r\n",
    b"\xff\xfe garbage without newline",
];

struct Harness {
    session: ClientSession,
    now: Instant,
    submitted: Vec<OpId>,
    /// Every request id seen, in order.
    requests: Vec<ReqId>,
    completed: BTreeSet<u64>,
    ended: bool,
    /// The error when the session ended, compared (not formatted) after every later step.
    error: Option<SessionError>,
    wire: Vec<u8>,
    /// Events are formatted (their `Debug` is engine code too) into this one buffer.
    text: String,
}

/// Whether `wire` holds `\r\nDELE x\r\n`: the second half of `PATHS`' "evil\r\nDELE x" as a command line.
///
/// Compares only after each `\r\n`, byte by byte: a slice comparison at every offset was a `memcmp` per byte of
/// output, each one intercepted by libFuzzer (the harness's own search filled its comparison tables).
fn has_injected_command(wire: &[u8]) -> bool {
    const LINE: &[u8] = b"DELE x\r\n";
    (1..wire.len()).any(|at| {
        wire[at] == b'\n'
            && wire[at - 1] == b'\r'
            && wire.len() - at > LINE.len()
            && wire[at + 1..].iter().zip(LINE).all(|(a, b)| a == b)
    })
}

impl Harness {
    fn drain(&mut self) {
        loop {
            let mut progressed = false;
            self.wire.clear();
            let n = self.session.poll_transmit(&mut self.wire);
            assert_eq!(n, self.wire.len());
            progressed |= n > 0;
            // `PATHS` holds "evil\r\nDELE x": a caller's argument must never become a second command line.
            assert!(
                !has_injected_command(&self.wire),
                "command injected: {:?}",
                String::from_utf8_lossy(&self.wire)
            );
            if script::tracing() && !self.wire.is_empty() {
                eprintln!("<- {:?}", String::from_utf8_lossy(&self.wire));
            }
            assert!(!(self.ended && n > 0), "bytes sent after the session ended");
            while let Some(request) = self.session.poll_request() {
                progressed = true;
                if script::tracing() {
                    eprintln!("   {request:?}");
                }
                assert!(!self.ended, "request after the session ended");
                assert!(self.submitted.contains(&request.op), "request for an unknown op");
                self.requests.push(request.id);
            }
            while let Some(event) = self.session.poll_event() {
                progressed = true;
                match event {
                    Event::Completed { op, result } => {
                        // Formatted only when tracing, as in `server_session`.
                        if script::tracing() {
                            eprintln!("   {result:?}");
                        }
                        assert!(self.submitted.contains(&op), "completed an unknown op");
                        assert!(self.completed.insert(op.get()), "op completed twice");
                    }
                    Event::Failed(_) | Event::Closed => {
                        assert!(!self.ended, "session ended twice");
                        self.ended = true;
                        self.error = self.session.error().cloned();
                        if let Some(error) = &self.error {
                            self.text.clear();
                            write!(self.text, "{error}").unwrap();
                        }
                    }
                    other => {
                        // Formatted only when tracing, as in `server_session`.
                        if script::tracing() {
                            eprintln!("   {other:?}");
                        }
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        if self.ended {
            assert!(self.session.is_closed() || self.session.error().is_some());
            assert_eq!(self.session.error(), self.error.as_ref(), "error changed");
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
                break;
            }
        }
    }

    fn timeout(&mut self) {
        self.session.handle_timeout(self.now);
        self.drain();
        if let Some(deadline) = self.session.poll_timeout() {
            assert!(deadline > self.now, "deadline not after now");
        }
    }

    fn pick(&self, i: u8) -> Option<OpId> {
        if self.submitted.is_empty() {
            return None;
        }
        Some(self.submitted[usize::from(i) % self.submitted.len()])
    }

    fn pick_request(&self, i: u8) -> Option<ReqId> {
        if self.requests.is_empty() {
            return None;
        }
        Some(self.requests[usize::from(i) % self.requests.len()])
    }

    /// Answers request `i` (see [`Call`]) with `outcome`.
    fn answer(&mut self, i: u8, outcome: Outcome) {
        if let Some(id) = self.pick_request(i) {
            self.session.complete(self.now, id, outcome);
        }
    }

    fn call(&mut self, params: &[u8]) {
        let Ok(call) = Call::arbitrary(&mut Unstructured::new(params)) else {
            return;
        };
        match call {
            Call::Submit(seed) => {
                let op = self.session.submit(self.now, seed.build());
                self.submitted.push(op);
                self.drain();
                if self.ended {
                    assert!(
                        self.completed.contains(&op.get()),
                        "op after the end pending"
                    );
                }
            }
            Call::Abort(i) => {
                if let Some(op) = self.pick(i) {
                    let _ = self.session.abort(self.now, op);
                }
            }
            Call::Listening(i, port) => {
                let addr = SocketAddr::from(([192, 0, 2, 9], port));
                self.answer(i, Outcome::Listening(addr));
            }
            Call::ListingData(i, which) => {
                let bytes = LISTINGS[usize::from(which) % LISTINGS.len()].to_vec();
                let data = Ok(DataReport::default());
                self.answer(i, Outcome::ListingReceived { data, bytes });
            }
            Call::DataFinished {
                request,
                ok,
                clean,
                bytes,
            } => {
                let result = if ok {
                    let mut report = DataReport::default();
                    report.clean_close = clean;
                    report.bytes_received = u64::from(bytes);
                    report.bytes_sent = u64::from(bytes);
                    Ok(report)
                } else if clean {
                    Err(DataError::HandshakeTimeout)
                } else {
                    Err(DataError::EofDuringHandshake)
                };
                self.answer(request, Outcome::DataFinished(result));
            }
            Call::Connected(i) => self.answer(i, Outcome::DataConnected),
            Call::ConnectFailed(i) => {
                let failure = DataConnectError::Accept {
                    reason: "refused".to_owned(),
                };
                self.answer(i, Outcome::DataConnectFailed(failure));
            }
            Call::SetToday(day) => self.session.set_today(Timeval {
                year: 2024,
                month: 1 + day % 12,
                day: 1 + day % 28,
                hour: 0,
                minute: 0,
                second: 0,
                millisecond: None,
            }),
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&variant, rest)) = data.split_first() else {
        return;
    };
    let mut config = ClientSessionConfig::plain();
    if variant & 1 != 0 {
        config.data_mode = DataConnectionMode::Active;
    }
    config.trust_pasv_address = variant & 2 != 0;
    config.require_close_notify = variant & 4 != 0;
    if variant & 8 != 0 {
        config.reply_timeout = Duration::from_millis(500);
        config.abort_timeout = Duration::from_millis(200);
        config.max_listing_bytes = 64;
    }
    let peer: SocketAddr = "192.0.2.1:21".parse().unwrap();
    let now = Instant::now();
    let server_name = "ftp.example.com".try_into().unwrap();
    let Ok(session) = ClientSession::new(config, server_name, peer, now) else {
        panic!("a plain session always builds");
    };
    let mut h = Harness {
        session,
        now,
        submitted: Vec::new(),
        requests: Vec::new(),
        completed: BTreeSet::new(),
        ended: false,
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
            Op::Action(params) => h.call(&params),
        }
    }
});
