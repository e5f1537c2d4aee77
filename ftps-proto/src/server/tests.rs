//! In-memory harness: a scripted client drives a `ServerSession` in virtual time, with requests fulfilled from
//! an in-memory file map, real rustls on the control channel and real `DataChannel`s on the data side.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::data::{DataChannel, DataEvent, DataOptions, DataProtection, DataTls};
use crate::test_support::{localhost, no_verification_client_config, TestPki, TLS12, TLS13};
use crate::tls::TlsConn;

const PEER: &str = "192.0.2.7:50000";
const LOCAL: &str = "192.0.2.1:21";

fn plain_config() -> SessionConfig {
    SessionConfig {
        require_tls_control: false,
        require_tls_data: false,
        allow_anonymous: true,
        ..SessionConfig::default()
    }
}

/// How the harness answers data-connection requests.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DataMode {
    /// `AcceptData`/`ConnectData` answered at once.
    Auto,
    /// Left unanswered (tests answer them, or let the timeout fire).
    Hold,
}

struct Harness {
    session: ServerSession,
    base: Instant,
    now: Instant,
    client_tls: Option<TlsConn>,
    client_config: Option<Arc<rustls::ClientConfig>>,
    /// The client config data connections use (normally `client_config`).
    data_client_config: Option<Arc<rustls::ClientConfig>>,
    received: Vec<u8>,
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
    open: BTreeMap<ReqId, String>,
    data_mode: DataMode,
    hold_transfers: bool,
    upload: Vec<u8>,
    /// Cut the upload without close_notify.
    truncate_upload: bool,
    held: Vec<Request>,
    /// `RunTransfer` notices held while `hold_transfers`: the `DriveData` id and the plan.
    held_transfers: Vec<(ReqId, TransferPlan)>,
    /// Data channels from `DriveData`, until their `RunTransfer`.
    channels: BTreeMap<ReqId, Box<DataChannel>>,
    received_data: Vec<u8>,
    log: Vec<String>,
    events: Vec<Event>,
    /// The address data connections come from (or go to).
    data_peer: SocketAddr,
    /// Site-to-site: the harness's data side is the TLS *server* with this config (the session is TLS client).
    data_peer_server: Option<Arc<rustls::ServerConfig>>,
    /// What a successful login grants.
    grant: LoginGrant,
}

impl Harness {
    /// A session under `config`, except that `PASV`/`EPSV` are answered at once: most tests are about
    /// something else; [`Harness::paced`] keeps the pacing (its own test).
    fn new(config: SessionConfig) -> Self {
        Self::paced(SessionConfig {
            passive_reply_pacing: Duration::ZERO,
            ..config
        })
    }

    fn paced(config: SessionConfig) -> Self {
        let base = Instant::now();
        let session =
            ServerSession::new(config, PEER.parse().unwrap(), LOCAL.parse().unwrap(), base);
        let mut files = BTreeMap::new();
        files.insert("/hello.txt".to_owned(), b"hello\nworld\n".to_vec());
        files.insert("/pub/a.bin".to_owned(), vec![7u8; 100_000]);
        let dirs = ["/", "/pub"].iter().map(|s| s.to_string()).collect();
        let mut h = Self {
            session,
            base,
            now: base,
            client_tls: None,
            client_config: None,
            data_client_config: None,
            received: Vec::new(),
            files,
            dirs,
            open: BTreeMap::new(),
            data_mode: DataMode::Auto,
            hold_transfers: false,
            upload: Vec::new(),
            truncate_upload: false,
            held: Vec::new(),
            held_transfers: Vec::new(),
            channels: BTreeMap::new(),
            received_data: Vec::new(),
            log: Vec::new(),
            events: Vec::new(),
            data_peer: "192.0.2.7:50001".parse().unwrap(),
            data_peer_server: None,
            grant: LoginGrant::default(),
        };
        h.drive();
        h
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Everything received since the last call, as text.
    fn take(&mut self) -> String {
        String::from_utf8(std::mem::take(&mut self.received)).unwrap()
    }

    fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes());
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        match &mut self.client_tls {
            Some(tls) => {
                assert_eq!(tls.write_plaintext(bytes), bytes.len());
            }
            None => {
                let n = self.session.handle_input(self.now, bytes);
                assert_eq!(n, bytes.len());
            }
        }
        self.drive();
    }

    /// Sends `line` and returns the replies it produced.
    fn cmd(&mut self, line: &str) -> String {
        self.take();
        self.send(&format!("{line}\r\n"));
        self.take()
    }

    fn timeout(&mut self) {
        self.session.handle_timeout(self.now);
        self.drive();
    }

    fn complete(&mut self, id: ReqId, outcome: Outcome) {
        self.session.complete(self.now, id, outcome);
        self.drive();
    }

    /// Drains the session until quiet, fulfilling requests.
    fn drive(&mut self) {
        for _ in 0..1000 {
            let mut progressed = false;
            let mut wire = Vec::new();
            if self.session.poll_transmit(&mut wire) > 0 {
                progressed = true;
                match &mut self.client_tls {
                    Some(tls) => {
                        let mut at = 0;
                        while at < wire.len() {
                            match tls.read_tls(&wire[at..]) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => at += n,
                            }
                            loop {
                                let chunk = tls.plaintext_chunk();
                                if chunk.is_empty() {
                                    break;
                                }
                                self.received.extend_from_slice(chunk);
                                let n = chunk.len();
                                tls.consume_plaintext(n);
                            }
                        }
                    }
                    None => self.received.extend_from_slice(&wire),
                }
            }
            if let Some(tls) = &mut self.client_tls {
                let mut out = Vec::new();
                if tls.write_tls_into(&mut out) > 0 && !self.session.is_closed() {
                    progressed = true;
                    let n = self.session.handle_input(self.now, &out);
                    assert_eq!(n, out.len());
                }
            }
            while let Some(e) = self.session.poll_event() {
                self.events.push(e);
            }
            while let Some(work) = self.session.poll_work() {
                progressed = true;
                match work {
                    Work::Request(req) => self.fulfil(req),
                    Work::Notice(notice) => self.act_on(notice),
                }
            }
            if !progressed {
                return;
            }
        }
        panic!("harness did not settle");
    }

    fn entry(&self, path: &str) -> Option<FileInfo> {
        let name = path.rsplit('/').next().unwrap_or("").to_owned();
        if self.dirs.contains(path) {
            return Some(FileInfo {
                mode: Some(0o755),
                ..FileInfo::new(name, FileKind::Dir, 0)
            });
        }
        self.files.get(path).map(|f| FileInfo {
            modified: crate::codec::Timeval::new(2024, 2, 29, 12, 34, 56, None),
            mode: Some(0o644),
            unique: Some("1a".to_owned()),
            ..FileInfo::new(name, FileKind::File, f.len() as u64)
        })
    }

    fn fulfil(&mut self, req: Request) {
        let id = req.id;
        self.log.push(request_name(&req.kind).to_owned());
        let outcome = match req.kind {
            RequestKind::Authenticate { user, password, .. } => {
                if password == "secret" || user == "anonymous" {
                    Outcome::LoggedIn(self.grant.clone())
                } else if password == "acct" {
                    Outcome::NeedAccount
                } else {
                    Outcome::Denied
                }
            }
            RequestKind::SelectHost { host } => {
                if host == "ftp.example.com" {
                    Outcome::Done
                } else {
                    Outcome::Failed(Failure::Unsupported)
                }
            }
            RequestKind::OpenPassive { ipv6 } => {
                let addr = if ipv6 {
                    "[2001:db8::1]:40000"
                } else {
                    "192.0.2.1:40000"
                };
                Outcome::PassiveListening(addr.parse().unwrap())
            }
            RequestKind::AcceptData | RequestKind::ConnectData { .. } => {
                if self.data_mode == DataMode::Hold {
                    self.held.push(Request {
                        id,
                        kind: RequestKind::AcceptData,
                    });
                    return;
                }
                Outcome::DataConnected {
                    peer: self.data_peer,
                }
            }
            RequestKind::Metadata { path } => match self.entry(path.as_str()) {
                Some(info) => Outcome::Metadata(info),
                None => Outcome::Failed(Failure::Storage(StorageError::NotFound)),
            },
            RequestKind::OpenRead { path, .. } => match self.files.get(path.as_str()) {
                Some(f) => {
                    self.open.insert(id, path.to_string());
                    Outcome::Opened {
                        size: Some(f.len() as u64),
                        path,
                    }
                }
                None => Outcome::Failed(Failure::Storage(StorageError::NotFound)),
            },
            RequestKind::OpenWrite { path, mode, .. } => {
                if mode == WriteMode::Unique && self.files.contains_key(path.as_str()) {
                    Outcome::Failed(Failure::Storage(StorageError::Exists))
                } else if path.as_str().contains("full") {
                    Outcome::Failed(Failure::Storage(StorageError::DiskFull))
                } else {
                    self.open.insert(id, path.to_string());
                    Outcome::Opened { size: None, path }
                }
            }
            RequestKind::List { path, .. } => {
                let dir = path.as_str();
                if self.files.contains_key(dir) {
                    // As a storage backend says it: the engine then asks for the file's metadata.
                    Outcome::Failed(Failure::Storage(StorageError::NotADirectory))
                } else if !self.dirs.contains(dir) {
                    Outcome::Failed(Failure::Storage(StorageError::NotFound))
                } else {
                    let prefix = if dir == "/" {
                        "/".to_owned()
                    } else {
                        format!("{dir}/")
                    };
                    let entries = self
                        .files
                        .keys()
                        .chain(self.dirs.iter())
                        .filter(|p| {
                            p.starts_with(&prefix)
                                && p.len() > prefix.len()
                                && !p[prefix.len()..].contains('/')
                        })
                        .cloned()
                        .collect::<Vec<_>>();
                    Outcome::Listing(entries.iter().filter_map(|p| self.entry(p)).collect())
                }
            }
            RequestKind::MakeDir { path } => {
                if self.dirs.insert(path.to_string()) {
                    Outcome::Done
                } else {
                    Outcome::Failed(Failure::Storage(StorageError::Exists))
                }
            }
            RequestKind::RemoveDir { path } => {
                if self.dirs.remove(path.as_str()) {
                    Outcome::Done
                } else {
                    Outcome::Failed(Failure::Storage(StorageError::NotFound))
                }
            }
            RequestKind::Delete { path } => match self.files.remove(path.as_str()) {
                Some(_) => Outcome::Done,
                None => Outcome::Failed(Failure::Storage(StorageError::NotFound)),
            },
            RequestKind::Rename { from, to } => match self.files.remove(from.as_str()) {
                Some(f) => {
                    self.files.insert(to.to_string(), f);
                    Outcome::Done
                }
                None => Outcome::Failed(Failure::Storage(StorageError::NotFound)),
            },
            // Like a frontend that reads the time back, from a filesystem that clamps like ext4.
            RequestKind::SetModified { path, time } if self.files.contains_key(path.as_str()) => {
                let mut info = self.entry(path.as_str()).unwrap();
                info.modified = Some(if time.year < 1902 {
                    crate::codec::Timeval::new(1901, 12, 13, 20, 45, 52, None).unwrap()
                } else {
                    time
                });
                Outcome::Metadata(info)
            }
            RequestKind::SetModified { path, .. } | RequestKind::Chmod { path, .. } => {
                if self.files.contains_key(path.as_str()) {
                    Outcome::Done
                } else {
                    Outcome::Failed(Failure::Storage(StorageError::NotFound))
                }
            }
            RequestKind::SiteCustom { command, .. } => {
                if command == "PING" {
                    Outcome::SiteReply(vec!["PONG".to_owned()])
                } else {
                    Outcome::Failed(Failure::Unsupported)
                }
            }
            RequestKind::DriveData { channel } => {
                self.channels.insert(id, channel);
                return;
            }
        };
        self.session.complete(self.now, id, outcome);
    }

    /// Acts on a notice; none is ever answered.
    fn act_on(&mut self, notice: Notice) {
        self.log.push(notice_name(&notice).to_owned());
        match notice {
            Notice::AbortTransfer { data } => self.held_transfers.retain(|(id, _)| *id != data),
            Notice::RunTransfer { data, plan } => {
                if self.hold_transfers {
                    self.held_transfers.push((data, plan));
                    return;
                }
                let channel = self.take_channel(data, &plan);
                let outcome = self.run_transfer(channel, plan);
                self.session.complete(self.now, data, outcome);
            }
            _ => {}
        }
    }

    /// The channel of `DriveData` request `data`, started for `plan`.
    fn take_channel(&mut self, data: ReqId, plan: &TransferPlan) -> DataChannel {
        let mut channel = self
            .channels
            .remove(&data)
            .expect("DriveData before RunTransfer");
        channel.start_transfer(self.now, plan.flow(), plan.data_type);
        *channel
    }

    /// Runs one transfer in memory between the server's channel and a client-role channel.
    fn run_transfer(&mut self, mut server: DataChannel, plan: TransferPlan) -> Outcome {
        let tls = server.tls_info().is_some() || self.session.prot_private;
        let protection = if let (true, Some(config)) = (tls, self.data_peer_server.clone()) {
            DataProtection::Tls(DataTls::Server {
                config,
                resumption: ResumptionPolicy::Off,
            })
        } else if tls {
            DataProtection::Tls(DataTls::Client {
                config: self.data_client_config.clone().unwrap(),
                server_name: localhost(),
            })
        } else {
            DataProtection::Clear
        };
        let mut client = DataChannel::new(self.now, protection, DataOptions::default()).unwrap();
        let (to_send, upload): (Vec<u8>, bool) = match &plan.source {
            Source::File(id) => (self.files[&self.open[id]].clone(), false),
            Source::Bytes(b) => (b.clone(), false),
            Source::Upload(_) => (self.upload.clone(), true),
        };
        // `TYPE A` is the server channel's job (`start_transfer`): the harness sends the file as it is.
        let (mut sent, mut got) = (0usize, Vec::new());
        let mut server_result = None;
        let (mut sender_eof_sent, mut receiver_eof_sent) = (false, false);
        for _ in 0..10_000 {
            let (sender, receiver) = if upload {
                (&mut client, &mut server)
            } else {
                (&mut server, &mut client)
            };
            if sent < to_send.len() {
                sent += sender.write(&to_send[sent..]);
            }
            if sent == to_send.len()
                && !sender.is_write_closed()
                && !(upload && self.truncate_upload)
            {
                sender.finish(self.now);
            }
            let mut wire = Vec::new();
            let _ = sender.poll_transmit(&mut wire);
            let mut at = 0;
            while at < wire.len() {
                let n = receiver.handle_input(self.now, &wire[at..]);
                at += n;
                let chunk = receiver.read_chunk();
                got.extend_from_slice(chunk);
                let n2 = chunk.len();
                receiver.consume(n2);
                if n == 0 && n2 == 0 {
                    break;
                }
            }
            let chunk = receiver.read_chunk();
            got.extend_from_slice(chunk);
            let n2 = chunk.len();
            receiver.consume(n2);
            // The TCP FIN follows the end of the stream (the only end marker in the clear).
            if sender.is_write_closed() && !sender_eof_sent && !(upload && self.truncate_upload) {
                sender_eof_sent = true;
                receiver.handle_eof(self.now);
                let chunk = receiver.read_chunk();
                got.extend_from_slice(chunk);
                let n2 = chunk.len();
                receiver.consume(n2);
            }
            let mut back = Vec::new();
            let _ = receiver.poll_transmit(&mut back);
            let _ = sender.handle_input(self.now, &back);
            if receiver.is_write_closed() && !receiver_eof_sent && back.is_empty() {
                receiver_eof_sent = true;
                sender.handle_eof(self.now);
            }
            if upload && self.truncate_upload && sent == to_send.len() {
                server.handle_eof(self.now);
            }
            while let Some(e) = server.poll_event() {
                match e {
                    DataEvent::Finished(r) => server_result = Some(Outcome::TransferFinished(r)),
                    DataEvent::Failed(e) => {
                        server_result = Some(Outcome::Failed(Failure::from(&e)))
                    }
                    _ => {}
                }
            }
            while client.poll_event().is_some() {}
            if let Some(r) = server_result.take() {
                if upload {
                    let id = match plan.source {
                        Source::Upload(id) => id,
                        _ => unreachable!(),
                    };
                    self.files.insert(self.open[&id].clone(), got);
                } else {
                    self.received_data = got;
                }
                return r;
            }
        }
        panic!("transfer did not finish");
    }
}

fn request_name(kind: &RequestKind) -> &'static str {
    match kind {
        RequestKind::Authenticate { .. } => "Authenticate",
        RequestKind::SelectHost { .. } => "SelectHost",
        RequestKind::OpenPassive { .. } => "OpenPassive",
        RequestKind::AcceptData => "AcceptData",
        RequestKind::ConnectData { .. } => "ConnectData",
        RequestKind::Metadata { .. } => "Metadata",
        RequestKind::OpenRead { .. } => "OpenRead",
        RequestKind::OpenWrite { .. } => "OpenWrite",
        RequestKind::List { .. } => "List",
        RequestKind::MakeDir { .. } => "MakeDir",
        RequestKind::RemoveDir { .. } => "RemoveDir",
        RequestKind::Delete { .. } => "Delete",
        RequestKind::Rename { .. } => "Rename",
        RequestKind::SetModified { .. } => "SetModified",
        RequestKind::Chmod { .. } => "Chmod",
        RequestKind::SiteCustom { .. } => "SiteCustom",
        RequestKind::DriveData { .. } => "DriveData",
    }
}

fn notice_name(notice: &Notice) -> &'static str {
    match notice {
        Notice::ReleaseData => "ReleaseData",
        Notice::ReleaseFile { .. } => "ReleaseFile",
        Notice::RunTransfer { .. } => "RunTransfer",
        Notice::AbortTransfer { .. } => "AbortTransfer",
    }
}

/// A plain session logged in as `user`.
fn logged_in() -> Harness {
    let mut h = Harness::new(plain_config());
    assert_eq!(h.cmd("USER user"), "331 Password required\r\n");
    assert_eq!(h.cmd("PASS secret"), "230 Login successful\r\n");
    h
}

/// A session over TLS (explicit), logged in, `PBSZ 0` + `PROT P`.
fn tls_session(
    versions: &[&'static rustls::SupportedProtocolVersion],
    config: SessionConfig,
) -> (Harness, TestPki) {
    let pki = TestPki::new();
    let config = SessionConfig {
        tls: Some(pki.server_config(versions)),
        ..config
    };
    let mut h = Harness::new(config);
    let client = pki.client_config(versions);
    h.auth_tls(client);
    (h, pki)
}

impl Harness {
    fn auth_tls(&mut self, client: Arc<rustls::ClientConfig>) {
        assert_eq!(self.cmd("AUTH TLS"), "234 AUTH TLS successful\r\n");
        self.client_tls = Some(TlsConn::client(client.clone(), localhost()).unwrap());
        self.client_config = Some(client.clone());
        self.data_client_config = Some(client);
        self.drive();
        assert!(self
            .events
            .iter()
            .any(|e| matches!(e, Event::TlsEstablished(_))));
    }

    fn login_tls(&mut self) {
        assert_eq!(self.cmd("PBSZ 0"), "200 PBSZ=0\r\n");
        assert_eq!(self.cmd("PROT P"), "200 Protection set to Private\r\n");
        assert_eq!(self.cmd("USER user"), "331 Password required\r\n");
        assert_eq!(self.cmd("PASS secret"), "230 Login successful\r\n");
    }
}

#[test]
fn greeting_syst_noop_quit() {
    let mut h = Harness::new(plain_config());
    assert_eq!(h.take(), "220 ftps-rs ready\r\n");
    assert_eq!(h.cmd("SYST"), "215 UNIX Type: L8\r\n");
    assert_eq!(h.cmd("NOOP"), "200 NOOP ok\r\n");
    assert_eq!(h.cmd("QUIT"), "221 Goodbye\r\n");
    assert!(h.session.is_closed());
    assert!(h.events.contains(&Event::Closed(CloseReason::Quit)));
    assert_eq!(h.session.poll_timeout(), None);
}

#[test]
fn feat_is_accurate() {
    let mut h = Harness::new(plain_config());
    h.take();
    assert_eq!(
        h.cmd("FEAT"),
        "211-Features:\r\n EPRT\r\n EPSV\r\n HOST\r\n MDTM\r\n MFMT\r\n MLST type*;size*;modify*;perm*;unique*;unix.mode;\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End\r\n"
    );
    let pki = TestPki::new();
    let mut h = Harness::new(SessionConfig {
        tls: Some(pki.server_config(TLS13)),
        allow_ccc: true,
        ..plain_config()
    });
    let feat = h.cmd("FEAT");
    assert!(
        feat.starts_with("211-Features:\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n CCC\r\n EPRT\r\n"),
        "{feat}"
    );
}

#[test]
fn opts_help_stat() {
    let mut h = logged_in();
    assert_eq!(h.cmd("OPTS UTF8 ON"), "200 UTF8 mode always on\r\n");
    assert_eq!(
        h.cmd("OPTS MLST size;type;bogus;"),
        "200 MLST OPTS size;type;\r\n"
    );
    assert!(h
        .cmd("FEAT")
        .contains(" MLST type*;size*;modify;perm;unique;unix.mode;\r\n"));
    assert!(h
        .cmd("HELP")
        .starts_with("214-The following commands are recognized:\r\n"));
    assert_eq!(h.cmd("HELP RETR"), "214 No detailed help for RETR\r\n");
    let stat = h.cmd("STAT");
    assert!(
        stat.starts_with(
            "211-FTP server status:\r\n Connected to 192.0.2.7\r\n Logged in as user\r\n"
        ),
        "{stat}"
    );
    assert!(stat.ends_with("211 End of status\r\n"));
    assert_eq!(h.cmd("STAT /pub"), format!("213-Status of /pub:\r\n -rw-r--r-- 1 ftp ftp       100000 Feb 29  2024 a.bin\r\n213 End of status\r\n"));
    assert_eq!(h.cmd("FOO"), "500 Unknown command\r\n");
}

#[test]
fn host_before_login_only() {
    let mut h = Harness::new(plain_config());
    assert_eq!(h.cmd("HOST nope.example.com"), "504 Unknown host\r\n");
    assert_eq!(h.cmd("HOST ftp.example.com"), "220 Host accepted\r\n");
    assert_eq!(h.cmd("USER user"), "331 Password required\r\n");
    assert_eq!(
        h.cmd("HOST ftp.example.com"),
        "503 HOST must come before login\r\n"
    );
}

#[test]
fn login_required_and_anonymous() {
    let mut h = Harness::new(plain_config());
    assert_eq!(h.cmd("PWD"), "530 Please login with USER and PASS\r\n");
    assert_eq!(h.cmd("PASS x"), "503 Login with USER first\r\n");
    assert_eq!(
        h.cmd("USER ftp"),
        "331 Guest login ok, send your e-mail address as password\r\n"
    );
    assert_eq!(h.cmd("PASS me@example.com"), "230 Login successful\r\n");
    assert!(h.events.contains(&Event::LoggedIn {
        user: "anonymous".to_owned(),
        anonymous: true
    }));
    let mut h = Harness::new(SessionConfig {
        allow_anonymous: false,
        ..plain_config()
    });
    assert_eq!(
        h.cmd("USER anonymous"),
        "530 Anonymous login not allowed\r\n"
    );
}

#[test]
fn acct_after_need_account() {
    let mut h = Harness::new(plain_config());
    h.cmd("USER u");
    assert_eq!(h.cmd("PASS acct"), "332 Need account for login\r\n");
    assert_eq!(h.cmd("ACCT a"), "332 Need account for login\r\n");
}

/// The passive reply waits out `passive_reply_pacing` (an engine timer, so every frontend has it): the port
/// listens at once, the 229 comes at the deadline, and a command sent meanwhile waits behind it.
#[test]
fn passive_replies_are_paced_by_an_engine_timer() {
    let pacing = Duration::from_micros(100);
    let mut h = Harness::paced(SessionConfig {
        passive_reply_pacing: pacing,
        ..plain_config()
    });
    h.cmd("USER alice");
    h.cmd("PASS secret");
    let start = h.now;
    assert_eq!(h.cmd("EPSV"), "", "the reply waits");
    assert_eq!(h.session.poll_timeout(), Some(start + pacing));
    assert_eq!(h.cmd("NOOP"), "", "a command waits behind the held reply");
    h.advance(pacing);
    h.timeout();
    let replies = h.take();
    assert!(
        replies.starts_with("229 Entering Extended Passive Mode (|||"),
        "{replies}"
    );
    assert!(
        replies.ends_with("200 NOOP ok\r\n") || replies.contains("\r\n200 "),
        "{replies}"
    );
    // Zero answers at once.
    let mut h = Harness::paced(SessionConfig {
        passive_reply_pacing: Duration::ZERO,
        ..plain_config()
    });
    h.cmd("USER alice");
    h.cmd("PASS secret");
    assert!(h.cmd("EPSV").starts_with("229 "));
}

#[test]
fn failed_login_delay_queues_commands_and_limits_attempts() {
    let mut h = Harness::new(plain_config());
    h.take();
    h.send("USER u\r\nPASS wrong\r\nNOOP\r\n");
    // 530 only after the delay; NOOP waits behind it.
    assert_eq!(h.take(), "331 Password required\r\n");
    let deadline = h.session.poll_timeout().unwrap();
    assert_eq!(deadline, h.now + Duration::from_secs(1));
    h.advance(Duration::from_millis(999));
    h.timeout();
    assert_eq!(h.take(), "");
    h.advance(Duration::from_millis(1));
    h.timeout();
    assert_eq!(h.take(), "530 Login incorrect\r\n200 NOOP ok\r\n");
    for _ in 0..1 {
        h.send("USER u\r\nPASS wrong\r\n");
        h.advance(Duration::from_secs(1));
        h.timeout();
    }
    assert_eq!(h.take(), "331 Password required\r\n530 Login incorrect\r\n");
    h.send("USER u\r\nPASS wrong\r\n");
    h.advance(Duration::from_secs(1));
    h.timeout();
    assert_eq!(
        h.take(),
        "331 Password required\r\n421 Too many failed logins, closing control connection\r\n"
    );
    assert!(h.session.is_closed());
}

#[test]
fn timers_fire_once_and_never_repeat_a_deadline() {
    let mut h = Harness::new(SessionConfig {
        login_timeout: Duration::from_secs(10),
        ..plain_config()
    });
    h.take();
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.base + Duration::from_secs(10))
    );
    h.advance(Duration::from_secs(5));
    h.timeout();
    // Nothing due: the same deadline stays.
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.base + Duration::from_secs(10))
    );
    h.advance(Duration::from_secs(5));
    h.timeout();
    assert_eq!(
        h.take(),
        "421 Login timeout, closing control connection\r\n"
    );
    assert_eq!(h.session.poll_timeout(), None);

    // Idle: reset by each command; after login the login timer is gone.
    let mut h = logged_in();
    let t0 = h.now;
    assert_eq!(
        h.session.poll_timeout(),
        Some(t0 + Duration::from_secs(300))
    );
    h.advance(Duration::from_secs(100));
    h.cmd("NOOP");
    let d = h.session.poll_timeout().unwrap();
    assert_eq!(d, t0 + Duration::from_secs(400));
    h.now = d;
    h.timeout();
    assert_eq!(h.take(), "421 Idle timeout, closing control connection\r\n");
    assert_eq!(h.session.poll_timeout(), None);
    h.timeout();
    assert_eq!(h.take(), "");
}

#[test]
fn auth_timeout_closes_a_silent_connection_and_any_line_stops_it() {
    let config = SessionConfig {
        auth_timeout: Duration::from_secs(2),
        login_timeout: Duration::from_secs(30),
        ..plain_config()
    };
    let mut h = Harness::new(config.clone());
    h.take();
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.base + Duration::from_secs(2))
    );
    h.advance(Duration::from_secs(2));
    h.timeout();
    assert_eq!(
        h.take(),
        "421 No command received, closing control connection\r\n"
    );
    assert!(h.session.is_closed());
    assert!(h.events.contains(&Event::Closed(CloseReason::AuthTimeout)));

    // Half a line does not count; a whole one (even unknown) does, and the login timeout goes on.
    let mut h = Harness::new(config);
    h.take();
    h.send("NO");
    h.advance(Duration::from_secs(1));
    h.send("OP\r\n");
    assert_eq!(
        h.session.poll_timeout(),
        Some(h.base + Duration::from_secs(30))
    );
    h.advance(Duration::from_secs(28));
    h.timeout();
    assert!(!h.session.is_closed());
    assert_eq!(h.take(), "200 NOOP ok\r\n");
    // A session that has spoken is not evicted.
    assert!(!h.session.awaits_first_command());
    h.session.evict(h.now);
    assert!(!h.session.is_closed());
}

#[test]
fn a_silent_session_can_be_evicted() {
    let mut h = Harness::new(plain_config());
    h.take();
    assert!(h.session.awaits_first_command());
    h.session.evict(h.now);
    h.drive();
    assert_eq!(
        h.take(),
        "421 Too many connections, closing one that sent no command\r\n"
    );
    assert!(h.session.is_closed());
    assert!(!h.session.awaits_first_command());
    assert!(h.events.contains(&Event::Closed(CloseReason::Evicted)));
}

#[test]
fn navigation() {
    let mut h = logged_in();
    assert_eq!(h.cmd("PWD"), "257 \"/\" is the current directory\r\n");
    assert_eq!(h.cmd("CWD pub"), "250 Directory changed\r\n");
    assert_eq!(h.cmd("XPWD"), "257 \"/pub\" is the current directory\r\n");
    assert_eq!(h.cmd("CWD a.bin"), "550 Not a directory\r\n");
    assert_eq!(h.cmd("CWD /nope"), "550 No such file or directory\r\n");
    assert_eq!(h.cmd("CDUP"), "250 Directory changed\r\n");
    assert_eq!(h.cmd("CDUP"), "250 Directory changed\r\n");
    assert_eq!(h.session.cwd().as_str(), "/");
    assert_eq!(
        h.cmd("MKD new \"dir\""),
        "257 \"/new \"\"dir\"\"\" created\r\n"
    );
    assert_eq!(h.cmd("MKD /pub"), "550 File exists\r\n");
    assert_eq!(h.cmd("RMD /pub"), "250 Directory removed\r\n");
    assert_eq!(h.cmd("DELE hello.txt"), "250 File deleted\r\n");
    assert_eq!(h.cmd("DELE hello.txt"), "550 No such file or directory\r\n");
}

#[test]
fn rename_sequence() {
    let mut h = logged_in();
    assert_eq!(h.cmd("RNTO x"), "503 RNFR required first\r\n");
    assert_eq!(h.cmd("RNFR hello.txt"), "350 Ready for RNTO\r\n");
    assert_eq!(h.cmd("RNTO bye.txt"), "250 Renamed\r\n");
    assert!(h.files.contains_key("/bye.txt"));
    assert_eq!(h.cmd("RNFR bye.txt"), "350 Ready for RNTO\r\n");
    h.cmd("NOOP");
    assert_eq!(h.cmd("RNTO z"), "503 RNFR required first\r\n");
    assert_eq!(h.cmd("RNFR nope"), "550 No such file or directory\r\n");
}

#[test]
fn size_mdtm_mfmt_mlst_site() {
    let mut h = logged_in();
    assert_eq!(
        h.cmd("SIZE hello.txt"),
        "550 SIZE not allowed in ASCII mode\r\n"
    );
    assert_eq!(h.cmd("TYPE I"), "200 Switching to Binary mode\r\n");
    assert_eq!(h.cmd("SIZE hello.txt"), "213 12\r\n");
    assert_eq!(h.cmd("SIZE pub"), "550 Not a plain file\r\n");
    assert_eq!(h.cmd("MDTM hello.txt"), "213 20240229123456\r\n");
    assert_eq!(
        h.cmd("MFMT 20200101000000 hello.txt"),
        "213 Modify=20200101000000; /hello.txt\r\n"
    );
    assert_eq!(
        h.cmd("MLST hello.txt"),
        "250-Listing /hello.txt\r\n type=file;size=12;modify=20240229123456;perm=adfwr;unique=1a; /hello.txt\r\n250 End\r\n"
    );
    assert_eq!(
        h.cmd("SITE CHMOD 600 hello.txt"),
        "200 SITE CHMOD command ok\r\n"
    );
    assert_eq!(
        h.cmd("SITE CHMOD 999 hello.txt"),
        "501 Usage: SITE CHMOD mode path\r\n"
    );
    assert_eq!(h.cmd("SITE HELP"), "214 SITE commands: CHMOD HELP\r\n");
    assert_eq!(h.cmd("SITE PING"), "200 PONG\r\n");
    assert_eq!(h.cmd("SITE NOPE"), "504 Not supported\r\n");
}

/// Replies that say what happened (issue 14): a trailing slash names a directory, the path is checked before
/// the data connection, the root cannot be removed, a directory cannot move into itself, a restart point past
/// the end is 554, and MFMT reports the time the file really got.
#[test]
fn odd_arguments_get_clear_replies() {
    let mut h = logged_in();
    h.cmd("TYPE I");
    assert_eq!(h.cmd("SIZE hello.txt/"), "550 Not a plain file\r\n");
    assert_eq!(h.cmd("MDTM hello.txt/"), "550 Not a plain file\r\n");
    assert_eq!(h.cmd("DELE hello.txt/"), "550 Not a plain file\r\n");
    assert!(h.files.contains_key("/hello.txt"));
    // No PASV yet: the path is refused first.
    assert_eq!(
        h.cmd("RETR ../../etc/passwd"),
        "553 File name not allowed\r\n"
    );
    assert_eq!(h.cmd("STOR ../x"), "553 File name not allowed\r\n");
    assert_eq!(h.cmd("RETR hello.txt/"), "550 Not a plain file\r\n");
    assert_eq!(
        h.cmd("RETR hello.txt"),
        "425 Use PORT, PASV or EPSV first\r\n"
    );
    assert_eq!(
        h.cmd("RMD ."),
        "550 The root directory cannot be removed\r\n"
    );
    assert_eq!(
        h.cmd("RMD /"),
        "550 The root directory cannot be removed\r\n"
    );
    assert_eq!(h.cmd("RNFR pub"), "350 Ready for RNTO\r\n");
    assert_eq!(
        h.cmd("RNTO pub/inner"),
        "550 A directory cannot be moved into itself\r\n"
    );
    assert_eq!(
        h.cmd("REST 9223372036854775808"),
        "501 Restart position out of range\r\n"
    );
    assert_eq!(
        h.cmd("REST 9223372036854775807"),
        "350 Restarting at 9223372036854775807\r\n"
    );
    h.cmd("PASV");
    assert_eq!(
        h.cmd("RETR hello.txt"),
        "554 Restart position beyond end of file\r\n"
    );
    assert!(h.log.contains(&"ReleaseFile".to_owned()));
    assert_eq!(h.cmd("REST 12"), "350 Restarting at 12\r\n");
    h.cmd("PASV");
    assert_eq!(
        h.cmd("RETR hello.txt"),
        "125 Data connection already open; transfer starting\r\n226 Transfer complete\r\n"
    );
    assert_eq!(
        h.cmd("MFMT 19000101000000 hello.txt"),
        "213 Modify=19011213204552; /hello.txt\r\n"
    );
}

/// The file name a `125 FILE: name` reply (then `226`) announces.
fn stou_name(replies: &str) -> String {
    let name = replies
        .strip_prefix("125 FILE: ")
        .and_then(|rest| rest.split_once("\r\n226 Transfer complete\r\n"))
        .map(|(name, _)| name.to_owned());
    name.unwrap_or_else(|| panic!("not a STOU success: {replies:?}"))
}

/// STOU creates its file in the current directory (not next to it), under a fresh name, and the preliminary
/// reply names it (RFC 1123 section 4.1.2.9); with an argument, that name while it is free.
#[test]
fn stou_creates_a_fresh_name_in_the_current_directory_and_names_it() {
    let mut h = logged_in();
    h.cmd("TYPE I");
    assert_eq!(h.cmd("CWD pub"), "250 Directory changed\r\n");
    h.upload = b"unique".to_vec();
    h.cmd("PASV");
    let replies = h.cmd("STOU");
    let name = stou_name(&replies);
    assert!(name.starts_with("stou.") && name.len() == 13, "{replies:?}");
    assert_eq!(h.files[&format!("/pub/{name}")], b"unique");
    h.cmd("PASV");
    assert_eq!(
        h.cmd("STOU report.txt"),
        "125 FILE: report.txt\r\n226 Transfer complete\r\n"
    );
    // The name is taken: the engine asks for the next candidate (the answer was `Exists`).
    h.cmd("PASV");
    let replies = h.cmd("STOU report.txt");
    let name = stou_name(&replies);
    assert!(
        name.starts_with("report.txt.") && name.len() == 19,
        "{replies:?}"
    );
    assert!(h.files.contains_key("/pub/report.txt"));
    assert!(h.files.contains_key(&format!("/pub/{name}")));
    assert!(!h.files.keys().any(|k| k.starts_with("/pub.")));
    // The naming rule itself.
    let hint = VirtualPath::root()
        .join_name("t4")
        .unwrap()
        .join_name(STOU_DEFAULT_NAME)
        .unwrap();
    assert_eq!(
        unique_candidate(&hint, 0, 0xab).unwrap().as_str(),
        "/t4/stou.000000ab"
    );
    let named = VirtualPath::root().join_name("a.txt").unwrap();
    assert_eq!(unique_candidate(&named, 0, 1).unwrap().as_str(), "/a.txt");
    assert_eq!(
        unique_candidate(&named, 3, 0xdeadbeef).unwrap().as_str(),
        "/a.txt.deadbeef"
    );
    assert_eq!(unique_candidate(&VirtualPath::root(), 0, 1), None);
}

#[test]
fn transfer_parameters() {
    let mut h = logged_in();
    assert_eq!(h.cmd("TYPE A N"), "200 Switching to ASCII mode\r\n");
    assert_eq!(h.cmd("TYPE L 8"), "200 Switching to Binary mode\r\n");
    assert_eq!(h.cmd("TYPE E"), "504 Unsupported TYPE\r\n");
    assert_eq!(h.cmd("MODE S"), "200 Mode set to S\r\n");
    assert_eq!(h.cmd("MODE B"), "504 Only MODE S is supported\r\n");
    assert_eq!(h.cmd("STRU F"), "200 Structure set to F\r\n");
    assert_eq!(h.cmd("STRU R"), "504 Only STRU F is supported\r\n");
    assert_eq!(h.cmd("ALLO 100"), "202 ALLO not needed\r\n");
    assert_eq!(h.cmd("REST 10"), "350 Restarting at 10\r\n");
    assert_eq!(
        h.cmd("RETR hello.txt"),
        "425 Use PORT, PASV or EPSV first\r\n"
    );
}

#[test]
fn passive_and_active_negotiation() {
    let mut h = logged_in();
    assert_eq!(
        h.cmd("PASV"),
        "227 Entering Passive Mode (192,0,2,1,156,64)\r\n"
    );
    assert_eq!(
        h.cmd("EPSV"),
        "229 Entering Extended Passive Mode (|||40000|)\r\n"
    );
    // The second passive command released the first listener.
    assert_eq!(h.log.iter().filter(|r| *r == "ReleaseData").count(), 1);
    assert_eq!(
        h.cmd("EPSV 2"),
        "522 Network protocol not supported, use (1)\r\n"
    );
    assert_eq!(
        h.cmd("PORT 192,0,2,7,200,10"),
        "200 PORT command successful\r\n"
    );
    assert_eq!(
        h.cmd("PORT 203,0,113,9,200,10"),
        "504 Data connection must go to the control peer\r\n"
    );
    assert_eq!(
        h.cmd("PORT 192,0,2,7,0,21"),
        "504 Privileged data port refused\r\n"
    );
    assert_eq!(
        h.cmd("EPRT |1|192.0.2.7|6000|"),
        "200 PORT command successful\r\n"
    );
    assert_eq!(h.cmd("EPSV ALL"), "200 EPSV ALL ok\r\n");
    assert_eq!(h.cmd("PASV"), "503 Only EPSV allowed after EPSV ALL\r\n");
    assert_eq!(
        h.cmd("PORT 192,0,2,7,200,10"),
        "503 Only EPSV allowed after EPSV ALL\r\n"
    );
    assert!(h.session.data_peer_allowed("192.0.2.7".parse().unwrap()));
    assert!(!h.session.data_peer_allowed("192.0.2.8".parse().unwrap()));

    // NAT: the public address in 227.
    let mut h = Harness::new(SessionConfig {
        passive_public_ipv4: Some("198.51.100.5".parse().unwrap()),
        ..plain_config()
    });
    h.cmd("USER u");
    h.cmd("PASS secret");
    assert_eq!(
        h.cmd("PASV"),
        "227 Entering Passive Mode (198,51,100,5,156,64)\r\n"
    );
    // Site-to-site allowed by policy.
    let mut h = Harness::new(SessionConfig {
        allow_site_to_site: true,
        ..plain_config()
    });
    h.cmd("USER u");
    h.cmd("PASS secret");
    assert_eq!(
        h.cmd("PORT 203,0,113,9,200,10"),
        "200 PORT command successful\r\n"
    );
}

#[test]
fn plain_retr_list_nlst_mlsd_stor() {
    let mut h = logged_in();
    h.cmd("PASV");
    assert_eq!(
        h.cmd("RETR hello.txt"),
        "125 Data connection already open; transfer starting\r\n226 Transfer complete\r\n"
    );
    assert_eq!(h.received_data, b"hello\r\nworld\r\n");
    h.cmd("TYPE I");
    h.data_mode = DataMode::Hold;
    h.cmd("PASV");
    assert_eq!(h.cmd("RETR hello.txt"), "");
    let accept = h.held.pop().unwrap();
    h.data_mode = DataMode::Auto;
    h.take();
    h.complete(
        accept.id,
        Outcome::DataConnected {
            peer: "192.0.2.7:1".parse().unwrap(),
        },
    );
    assert_eq!(
        h.take(),
        "150 Opening data connection\r\n226 Transfer complete\r\n"
    );
    assert_eq!(h.received_data, b"hello\nworld\n");

    h.cmd("PASV");
    assert_eq!(
        h.cmd("NLST"),
        "125 Data connection already open; transfer starting\r\n226 Transfer complete\r\n"
    );
    assert_eq!(h.received_data, b"hello.txt\r\npub\r\n");
    h.cmd("PASV");
    h.cmd("LIST -la /pub");
    assert_eq!(
        h.received_data,
        b"-rw-r--r-- 1 ftp ftp       100000 Feb 29  2024 a.bin\r\n"
    );
    h.cmd("PORT 192,0,2,7,200,10");
    assert_eq!(
        h.cmd("MLSD /pub"),
        "150 Here comes the directory listing\r\n226 Transfer complete\r\n"
    );
    assert!(h.log.contains(&"ConnectData".to_owned()));
    assert_eq!(
        h.received_data,
        b"type=file;size=100000;modify=20240229123456;perm=adfwr;unique=1a; a.bin\r\n"
    );

    h.upload = b"uploaded".to_vec();
    h.cmd("PASV");
    assert_eq!(
        h.cmd("STOR up.bin"),
        "125 Data connection already open; transfer starting\r\n226 Transfer complete\r\n"
    );
    assert_eq!(h.files["/up.bin"], b"uploaded");
    h.cmd("PASV");
    let replies = h.cmd("STOU");
    let name = stou_name(&replies);
    assert!(h.files.contains_key(&format!("/{name}")));
    let finished: Vec<_> = h
        .events
        .iter()
        .filter_map(|e| match e {
            Event::TransferFinished(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(finished.len(), 7);
    assert_eq!(finished[5].bytes, 8);
    assert_eq!(finished[5].direction, Direction::Upload);
    assert_eq!(finished[6].path.as_str(), format!("/{name}"));

    // Errors before any data connection.
    h.cmd("PASV");
    assert_eq!(h.cmd("RETR nope"), "550 No such file or directory\r\n");
    h.cmd("PASV");
    assert_eq!(h.cmd("STOR full.bin"), "452 Insufficient storage space\r\n");
}

#[test]
fn rest_applies_to_next_transfer_only() {
    let mut h = logged_in();
    h.cmd("TYPE I");
    h.cmd("REST 5");
    h.cmd("PASV");
    h.hold_transfers = true;
    h.cmd("RETR hello.txt");
    let (_, plan) = h.held_transfers.pop().unwrap();
    assert_eq!(plan.offset, 5);
    assert_eq!(plan.data_type, DataType::Binary);
}

#[test]
fn data_accept_timeout_gives_425() {
    let mut h = logged_in();
    h.data_mode = DataMode::Hold;
    h.cmd("PASV");
    assert_eq!(h.cmd("RETR hello.txt"), "");
    let d = h.session.poll_timeout().unwrap();
    assert_eq!(d, h.now + Duration::from_secs(30));
    h.now = d;
    h.timeout();
    assert_eq!(h.take(), "425 No data connection\r\n");
    assert!(h.log.contains(&"ReleaseFile".to_owned()));
    assert!(h
        .log
        .ends_with(&["ReleaseFile".to_owned(), "ReleaseData".to_owned()]));
    assert_ne!(h.session.poll_timeout(), Some(d));
    assert_eq!(h.cmd("NOOP"), "200 NOOP ok\r\n");
}

#[test]
fn abor_during_and_without_transfer() {
    let mut h = logged_in();
    h.cmd("PASV");
    assert_eq!(h.cmd("ABOR"), "226 No transfer to abort\r\n");
    assert_eq!(h.log.last().unwrap(), "ReleaseData");
    // ABOR after 150: 426 then 226.
    h.cmd("PASV");
    h.hold_transfers = true;
    assert_eq!(
        h.cmd("RETR hello.txt"),
        "125 Data connection already open; transfer starting\r\n"
    );
    // Other commands queue during the transfer; STAT answers at once.
    h.send("NOOP\r\n");
    assert_eq!(h.take(), "");
    assert!(h
        .cmd("STAT")
        .contains(" Transfer in progress: /hello.txt\r\n"));
    assert_eq!(
        h.cmd("ABOR"),
        "426 Transfer aborted\r\n226 ABOR successful\r\n200 NOOP ok\r\n"
    );
    // ABOR before 150 (waiting for the data connection).
    h.data_mode = DataMode::Hold;
    h.cmd("PASV");
    assert_eq!(h.cmd("RETR hello.txt"), "");
    assert_eq!(
        h.cmd("ABOR"),
        "426 Transfer aborted\r\n226 ABOR successful\r\n"
    );
}

#[test]
fn quit_during_transfer_waits_for_it() {
    let mut h = logged_in();
    h.cmd("PASV");
    h.hold_transfers = true;
    h.cmd("RETR hello.txt");
    assert_eq!(h.cmd("QUIT"), "");
    assert!(!h.session.is_closed());
    let (data, plan) = h.held_transfers.pop().unwrap();
    let id = data;
    h.hold_transfers = false;
    let channel = h.take_channel(data, &plan);
    let outcome = h.run_transfer(channel, plan);
    h.complete(id, outcome);
    assert_eq!(h.take(), "226 Transfer complete\r\n221 Goodbye\r\n");
    assert!(h.session.is_closed());
}

#[test]
fn a_failed_transfer_keeps_its_channel_report_in_the_record() {
    let mut h = logged_in();
    h.cmd("PASV");
    h.hold_transfers = true;
    h.cmd("RETR hello.txt");
    let (id, _) = h.held_transfers.pop().unwrap();
    h.events.clear();
    let report = DataReport {
        bytes_sent: 7,
        ..DataReport::default()
    };
    h.complete(
        id,
        Outcome::TransferFailed {
            failure: Failure::Truncated,
            report,
        },
    );
    assert_eq!(h.take(), "426 Connection closed; transfer aborted\r\n");
    let record = h
        .events
        .iter()
        .find_map(|e| match e {
            Event::TransferFinished(r) => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!((record.bytes, record.status.get()), (7, 426));
}

#[test]
fn truncated_upload_is_426() {
    let (mut h, _pki) = tls_session(TLS13, SessionConfig::default());
    h.login_tls();
    h.upload = vec![1u8; 5000];
    h.truncate_upload = true;
    h.cmd("TYPE I");
    h.cmd("PASV");
    assert_eq!(h.cmd("STOR t.bin"), "125 Data connection already open; transfer starting\r\n426 Connection closed; transfer aborted\r\n");
}

#[test]
fn tls_policy_replies() {
    let pki = TestPki::new();
    let mut h = Harness::new(SessionConfig {
        tls: Some(pki.server_config(TLS13)),
        ..SessionConfig::default()
    });
    h.take();
    assert_eq!(h.cmd("USER u"), "530 TLS required: use AUTH TLS first\r\n");
    assert_eq!(h.cmd("PASS u"), "530 TLS required: use AUTH TLS first\r\n");
    assert_eq!(h.cmd("PBSZ 0"), "503 PBSZ needs AUTH TLS first\r\n");
    assert_eq!(h.cmd("PROT P"), "503 PBSZ required first\r\n");
    assert_eq!(h.cmd("CCC"), "534 CCC not allowed\r\n");
    assert_eq!(h.cmd("AUTH GSSAPI"), "504 Unsupported AUTH mechanism\r\n");
    h.auth_tls(pki.client_config(TLS13));
    assert_eq!(h.cmd("AUTH TLS"), "503 TLS already active\r\n");
    assert_eq!(h.cmd("PROT P"), "503 PBSZ required first\r\n");
    assert_eq!(h.cmd("PBSZ 100"), "200 PBSZ=0\r\n");
    assert_eq!(h.cmd("PROT C"), "534 PROT C not allowed by policy\r\n");
    assert_eq!(h.cmd("PROT S"), "536 PROT level not supported\r\n");
    assert_eq!(h.cmd("USER u"), "331 Password required\r\n");
    assert_eq!(h.cmd("PASS secret"), "230 Login successful\r\n");
    h.cmd("PASV");
    assert_eq!(
        h.cmd("RETR hello.txt"),
        "521 Data connections must be protected: use PROT P\r\n"
    );

    // No TLS configured: AUTH is 502.
    let mut h = Harness::new(plain_config());
    assert_eq!(h.cmd("AUTH TLS"), "502 TLS not available\r\n");
}

#[test]
fn auth_tls_injection_is_not_executed() {
    let pki = TestPki::new();
    let mut h = Harness::new(SessionConfig {
        tls: Some(pki.server_config(TLS13)),
        ..plain_config()
    });
    h.take();
    h.send("AUTH TLS\r\nUSER x\r\n");
    // 234 in the clear, then only a TLS alert: `USER x` went to rustls.
    assert!(h
        .take()
        .starts_with("234 AUTH TLS successful\r\n\u{15}\u{3}"));
    assert!(h.session.is_closed());
    assert!(matches!(h.session.error(), Some(SessionError::Tls(_))));
    assert!(!h.log.iter().any(|r| r == "Authenticate"));
    assert!(!h
        .events
        .iter()
        .any(|e| matches!(e, Event::Reply(r) if r.code == ReplyCode::NEED_PASSWORD)));
}

#[test]
fn tls_transfers_resume_the_control_session() {
    for versions in [TLS12, TLS13] {
        let (mut h, _pki) = tls_session(versions, SessionConfig::default());
        h.login_tls();
        for _ in 0..3 {
            h.cmd("PASV");
            assert_eq!(
                h.cmd("RETR hello.txt"),
                "125 Data connection already open; transfer starting\r\n226 Transfer complete\r\n"
            );
            assert_eq!(h.received_data, b"hello\r\nworld\r\n");
        }
        let last = h
            .events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::TransferFinished(r) => Some(r.clone()),
                _ => None,
            })
            .unwrap();
        assert!(last.tls.as_ref().unwrap().resumed);
    }
}

#[test]
fn fresh_or_foreign_data_session_is_refused_with_522() {
    for versions in [TLS12, TLS13] {
        // Fresh client config: nothing to resume.
        let (mut h, pki) = tls_session(versions, SessionConfig::default());
        h.login_tls();
        h.data_client_config = Some(pki.client_config(versions));
        h.cmd("PASV");
        assert_eq!(
            h.cmd("RETR hello.txt"),
            "125 Data connection already open; transfer starting\r\n522 Data connection must resume the control connection's TLS session\r\n"
        );

        // Another control session's ticket (same server config, same client store) is refused too.
        let server = pki.server_config(versions);
        let client_a = pki.client_config(versions);
        let mut a = Harness::new(SessionConfig {
            tls: Some(server.clone()),
            ..SessionConfig::default()
        });
        a.auth_tls(client_a.clone());
        let mut b = Harness::new(SessionConfig {
            tls: Some(server),
            ..SessionConfig::default()
        });
        b.auth_tls(pki.client_config(versions));
        b.login_tls();
        b.data_client_config = Some(client_a);
        b.cmd("PASV");
        assert!(b
            .cmd("RETR hello.txt")
            .ends_with("522 Data connection must resume the control connection's TLS session\r\n"));

        // Preferred: accepted without resumption.
        let (mut h, pki) = tls_session(
            versions,
            SessionConfig {
                data_resumption: ResumptionPolicy::Preferred,
                ..SessionConfig::default()
            },
        );
        h.login_tls();
        h.data_client_config = Some(pki.client_config(versions));
        h.cmd("PASV");
        assert!(h
            .cmd("RETR hello.txt")
            .ends_with("226 Transfer complete\r\n"));
    }
}

#[test]
fn implicit_tls_greets_inside_tls() {
    let pki = TestPki::new();
    let config = SessionConfig {
        tls: Some(pki.server_config(TLS13)),
        implicit_tls: true,
        passive_reply_pacing: Duration::ZERO,
        ..SessionConfig::default()
    };
    let base = Instant::now();
    let mut session =
        ServerSession::new(config, PEER.parse().unwrap(), LOCAL.parse().unwrap(), base);
    let mut wire = Vec::new();
    // Nothing in the clear before the client's hello.
    assert_eq!(session.poll_transmit(&mut wire), 0);
    let mut h = Harness::new(plain_config());
    h.take();
    h.session = session;
    let client = pki.client_config(TLS13);
    h.client_tls = Some(TlsConn::client(client.clone(), localhost()).unwrap());
    h.data_client_config = Some(client);
    h.drive();
    assert_eq!(h.take(), "220 ftps-rs ready\r\n");
    assert_eq!(h.cmd("USER u"), "331 Password required\r\n");
    assert_eq!(h.cmd("PASS secret"), "230 Login successful\r\n");
    h.cmd("PASV");
    assert!(h
        .cmd("RETR hello.txt")
        .ends_with("226 Transfer complete\r\n"));
}

#[test]
fn rein_resets_login_keeps_tls() {
    let (mut h, _pki) = tls_session(TLS13, SessionConfig::default());
    h.login_tls();
    h.cmd("CWD pub");
    h.cmd("TYPE I");
    assert_eq!(h.cmd("REIN"), "220 Service ready for new user\r\n");
    assert!(h.session.tls_active());
    assert_eq!(h.session.user(), None);
    assert_eq!(h.cmd("PWD"), "530 Please login with USER and PASS\r\n");
    h.cmd("USER u");
    h.cmd("PASS secret");
    assert_eq!(h.cmd("PWD"), "257 \"/\" is the current directory\r\n");
}

#[test]
fn eof_closes() {
    let mut h = logged_in();
    h.session.handle_eof(h.now);
    assert!(h.session.is_closed());
    h.drive();
    assert!(h.events.contains(&Event::Closed(CloseReason::PeerClosed)));
}

/// The replies (and requests) for an input split at `cuts`.
///
/// `DriveData` follows the frontend's answer to `AcceptData`, which this harness gives as soon as it sees the
/// request: where it lands among the requests of later commands depends on whether they had arrived by then. It
/// is counted, not placed.
fn run_split(input: &[u8], cuts: &[usize]) -> (String, Vec<String>, usize) {
    let mut h = Harness::new(plain_config());
    let mut at = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    points.push(input.len());
    for p in points {
        if p > at {
            h.send_bytes(&input[at..p]);
            at = p;
        }
    }
    let drives = h.log.iter().filter(|r| *r == "DriveData").count();
    let others = h
        .log
        .iter()
        .filter(|r| *r != "DriveData")
        .cloned()
        .collect();
    (h.take(), others, drives)
}

const SCRIPT: &[u8] = b"USER u\r\nPASS secret\r\nTYPE I\r\nPWD\r\nCWD pub\r\nPASV\r\nLIST\r\nCDUP\nSIZE hello.txt\r\nMLST\r\nFOO bar\r\nQUIT\r\n";

#[test]
fn chunking_invariance() {
    let whole = run_split(SCRIPT, &[]);
    assert!(whole.0.ends_with("221 Goodbye\r\n"), "{}", whole.0);
    let bytewise: Vec<usize> = (0..SCRIPT.len()).collect();
    assert_eq!(run_split(SCRIPT, &bytewise), whole);
}

proptest::proptest! {
    #[test]
    fn chunking_invariance_random(cuts in proptest::collection::vec(0usize..200, 0..12)) {
        proptest::prop_assert_eq!(run_split(SCRIPT, &cuts), run_split(SCRIPT, &[]));
    }

    #[test]
    fn never_panics(steps in proptest::collection::vec((0u8..5, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40), 0u64..100), 0..30)) {
        let pki_less = SessionConfig { allow_ccc: true, ..plain_config() };
        let base = Instant::now();
        let mut s = ServerSession::new(pki_less, PEER.parse().unwrap(), LOCAL.parse().unwrap(), base);
        let mut now = base;
        let mut ids = Vec::new();
        let words: [&[u8]; 6] = [b"USER u\r\nPASS p\r\n", b"PASV\r\n", b"RETR x\r\n", b"ABOR\r\n", b"STAT\r\n", b"AUTH TLS\r\n"];
        for (kind, bytes, n) in steps {
            now += Duration::from_millis(n * 500);
            match kind {
                0 => { let _ = s.handle_input(now, &bytes); }
                1 => { let w = words[(n as usize) % words.len()]; let _ = s.handle_input(now, w); }
                2 => s.handle_timeout(now),
                3 => {
                    if let Some(id) = ids.get((n as usize) % ids.len().max(1)).copied() {
                        let outcome = match n % 6 {
                            0 => Outcome::Done,
                            1 => Outcome::Denied,
                            2 => Outcome::LoggedIn(LoginGrant::default()),
                            3 => Outcome::DataConnected { peer: "192.0.2.7:1".parse().unwrap() },
                            4 => Outcome::Failed(Failure::Truncated),
                            _ => Outcome::Opened { size: None, path: VirtualPath::root() },
                        };
                        s.complete(now, id, outcome);
                    }
                }
                _ => if n == 0 { s.handle_eof(now) },
            }
            let mut out = Vec::new();
            let _ = s.poll_transmit(&mut out);
            while let Some(w) = s.poll_work() { if let Work::Request(r) = w { ids.push(r.id); } }
            while s.poll_event().is_some() {}
            if let Some(t) = s.poll_timeout() { proptest::prop_assert!(t >= base); }
        }
    }
}

mod refusal_and_shutdown {
    use super::super::{CloseReason, Event, Refusal, ServerSession, SessionConfig};
    use std::net::SocketAddr;
    use std::time::Instant;

    fn plain() -> SessionConfig {
        SessionConfig {
            require_tls_control: false,
            require_tls_data: false,
            ..SessionConfig::default()
        }
    }

    fn addrs() -> (SocketAddr, SocketAddr) {
        (
            "192.0.2.7:50000".parse().unwrap(),
            "192.0.2.1:21".parse().unwrap(),
        )
    }

    #[test]
    fn a_refused_connection_gets_421_instead_of_the_greeting_and_closes() {
        let (peer, local) = addrs();
        let now = Instant::now();
        let mut session =
            ServerSession::refuse(plain(), peer, local, now, Refusal::TooManyFromAddress);
        let mut wire = Vec::new();
        let _ = session.poll_transmit(&mut wire);
        assert_eq!(wire, b"421 Too many connections from your address\r\n");
        assert!(session.is_closed());
        assert!(session.poll_work().is_none());
        let mut closed = None;
        while let Some(event) = session.poll_event() {
            if let Event::Closed(reason) = event {
                closed = Some(reason);
            }
        }
        assert_eq!(closed, Some(CloseReason::Refused));
        // Input after the refusal is ignored.
        let _ = session.handle_input(now, b"USER x\r\n");
        wire.clear();
        let _ = session.poll_transmit(&mut wire);
        assert!(wire.is_empty());
    }

    #[test]
    fn an_implicit_refusal_says_nothing_before_tls() {
        let (peer, local) = addrs();
        let config = SessionConfig {
            implicit_tls: true,
            ..plain()
        };
        let mut session =
            ServerSession::refuse(config, peer, local, Instant::now(), Refusal::ShuttingDown);
        let mut wire = Vec::new();
        let _ = session.poll_transmit(&mut wire);
        assert!(wire.is_empty());
        assert!(session.is_closed());
    }

    #[test]
    fn shutdown_of_an_idle_session_says_421_and_closes() {
        let (peer, local) = addrs();
        let now = Instant::now();
        let mut session = ServerSession::new(plain(), peer, local, now);
        let mut wire = Vec::new();
        let _ = session.poll_transmit(&mut wire);
        wire.clear();
        session.shutdown(now);
        let _ = session.poll_transmit(&mut wire);
        assert_eq!(wire, b"421 Server shutting down\r\n");
        assert!(session.is_closed());
    }
}

/// Regression (found by the Pair harness): after `CCC`, the client's close_notify and its first cleartext
/// command arriving in one read must not be swallowed by rustls (RFC 4217 section 12.3).
#[test]
fn ccc_cleartext_in_the_same_read_as_close_notify() {
    for versions in [TLS12, TLS13] {
        let config = SessionConfig {
            allow_ccc: true,
            ..SessionConfig::default()
        };
        let (mut h, _pki) = tls_session(versions, config);
        assert_eq!(h.cmd("CCC"), "200 Control connection cleared\r\n");
        let mut tls = h.client_tls.take().unwrap();
        tls.send_close_notify();
        let mut wire = Vec::new();
        let _ = tls.write_tls_into(&mut wire);
        wire.extend_from_slice(b"NOOP\r\n");
        assert_eq!(h.session.handle_input(h.now, &wire), wire.len());
        h.drive();
        assert!(h.events.contains(&Event::TlsCleared));
        assert_eq!(h.take(), "200 NOOP ok\r\n");
    }
}

impl Harness {
    /// Runs `transfer` with the transfer held, and tells whether the session's data channel speaks first (a TLS
    /// client's ClientHello) or waits (a TLS server). The held transfer is then aborted.
    fn held_channel_says_hello(&mut self, transfer: &str) -> bool {
        self.hold_transfers = true;
        self.cmd(transfer);
        let Some((data, plan)) = self.held_transfers.pop() else {
            panic!("no transfer held");
        };
        let id = data;
        let mut channel = self.take_channel(data, &plan);
        let mut hello = Vec::new();
        let spoke = channel.poll_transmit(&mut hello) > 0;
        self.complete(id, Outcome::Failed(Failure::Aborted));
        spoke
    }
}

/// A session with site-to-site transfers and `SSCN`/`CPSV` enabled, over TLS, logged in with `PROT P`.
fn site_to_site_session(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> (Harness, TestPki) {
    let (mut h, pki) = tls_session(
        versions,
        SessionConfig {
            allow_site_to_site: true,
            site_to_site_tls: Some(no_verification_client_config(versions)),
            ..SessionConfig::default()
        },
    );
    h.login_tls();
    (h, pki)
}

#[test]
fn sscn_and_cpsv_are_offered_only_with_the_opt_in() {
    // Default policy: neither in FEAT, both refused, PORT to a third host refused.
    let (mut h, _pki) = tls_session(TLS13, SessionConfig::default());
    h.login_tls();
    let feat = h.cmd("FEAT");
    assert!(!feat.contains("SSCN") && !feat.contains("CPSV"), "{feat}");
    assert!(h.cmd("SSCN ON").starts_with("502 "));
    assert!(h.cmd("CPSV").starts_with("502 "));
    assert_eq!(
        h.cmd("PORT 203,0,113,9,200,10"),
        "504 Data connection must go to the control peer\r\n"
    );
    // Site-to-site allowed but no TLS client config: PORT works, SSCN/CPSV are not offered.
    let (mut h, _pki) = tls_session(
        TLS13,
        SessionConfig {
            allow_site_to_site: true,
            ..SessionConfig::default()
        },
    );
    h.login_tls();
    assert!(!h.cmd("FEAT").contains("SSCN"));
    assert!(h.cmd("SSCN").starts_with("502 "));
    assert_eq!(
        h.cmd("PORT 203,0,113,9,200,10"),
        "200 PORT command successful\r\n"
    );
    // Still never to a privileged port.
    assert_eq!(
        h.cmd("PORT 203,0,113,9,0,21"),
        "504 Privileged data port refused\r\n"
    );
    // A user policy can take the opt-in away again.
    let narrowed = SessionConfig {
        allow_site_to_site: true,
        ..SessionConfig::default()
    }
    .narrowed(&UserPolicy {
        deny_site_to_site: true,
        ..UserPolicy::default()
    });
    assert!(!narrowed.allow_site_to_site);

    // Everything enabled: advertised, and SSCN reports and switches the mode.
    let (mut h, _pki) = site_to_site_session(TLS13);
    let feat = h.cmd("FEAT");
    assert!(feat.contains(" CPSV\r\n SSCN\r\n"), "{feat}");
    assert_eq!(h.cmd("SSCN"), "200 Server method\r\n");
    assert_eq!(h.cmd("SSCN ON"), "200 Client method\r\n");
    assert_eq!(h.cmd("SSCN"), "200 Client method\r\n");
    assert_eq!(h.cmd("SSCN OFF"), "200 Server method\r\n");
    // SSCN needs a login like every data-related command.
    let (mut h, _pki) = tls_session(
        TLS13,
        SessionConfig {
            allow_site_to_site: true,
            site_to_site_tls: Some(no_verification_client_config(TLS13)),
            ..SessionConfig::default()
        },
    );
    assert!(h.cmd("SSCN ON").starts_with("530 "));
}

#[test]
fn sscn_and_cpsv_make_the_server_the_data_tls_client() {
    for versions in [TLS12, TLS13] {
        // SSCN ON + PORT to the other server: this server connects and handshakes as TLS client.
        let (mut h, pki) = site_to_site_session(versions);
        h.data_peer = "203.0.113.9:51000".parse().unwrap();
        h.data_peer_server = Some(pki.server_config(versions));
        assert_eq!(h.cmd("SSCN ON"), "200 Client method\r\n");
        assert_eq!(
            h.cmd("PORT 203,0,113,9,199,56"),
            "200 PORT command successful\r\n"
        );
        assert_eq!(
            h.cmd("RETR hello.txt"),
            "150 Opening data connection\r\n226 Transfer complete\r\n",
            "{versions:?}"
        );
        assert_eq!(h.received_data, b"hello\r\nworld\r\n");
        // SSCN OFF: back to the TLS server role (the other server's ClientHello would now fail).
        assert_eq!(h.cmd("SSCN OFF"), "200 Server method\r\n");
        h.cmd("PORT 203,0,113,9,199,56");
        assert!(!h.held_channel_says_hello("RETR hello.txt"));

        // CPSV: passive, 227, and TLS client on that one connection only.
        let (mut h, pki) = site_to_site_session(versions);
        h.data_peer = "203.0.113.9:51000".parse().unwrap();
        h.data_peer_server = Some(pki.server_config(versions));
        assert_eq!(
            h.cmd("CPSV"),
            "227 Entering Passive Mode (192,0,2,1,156,64)\r\n"
        );
        h.upload = b"from the other server".to_vec();
        assert!(h
            .cmd("STOR copy.bin")
            .ends_with("226 Transfer complete\r\n"));
        assert_eq!(h.files["/copy.bin"], b"from the other server");
        h.cmd("CPSV");
        assert!(h.held_channel_says_hello("RETR hello.txt"));
        h.hold_transfers = false;
        h.cmd("PASV");
        assert!(!h.held_channel_says_hello("RETR hello.txt"));
    }
}

#[test]
fn third_party_data_connections_need_no_resumption_the_control_peer_still_does() {
    for versions in [TLS12, TLS13] {
        // This server is the TLS server; the data peer is another server with a fresh TLS client config.
        let (mut h, pki) = site_to_site_session(versions);
        h.data_client_config = Some(no_verification_client_config(versions));
        h.data_peer = "203.0.113.9:51000".parse().unwrap();
        h.cmd("PORT 203,0,113,9,199,56");
        assert!(h
            .cmd("RETR hello.txt")
            .ends_with("226 Transfer complete\r\n"));
        // The same fresh handshake from the control peer's own IP is still refused (RFC 4217 section 10).
        h.data_client_config = Some(pki.client_config(versions));
        h.data_peer = "192.0.2.7:50001".parse().unwrap();
        h.cmd("PASV");
        assert!(h
            .cmd("RETR hello.txt")
            .ends_with("522 Data connection must resume the control connection's TLS session\r\n"));
    }
}

#[test]
fn site_to_site_can_be_granted_to_one_user() {
    let pki = TestPki::new();
    let config = SessionConfig {
        tls: Some(pki.server_config(TLS13)),
        site_to_site_tls: Some(no_verification_client_config(TLS13)),
        ..SessionConfig::default()
    };
    // The server's policy is off: before login and for an ordinary user, nothing is offered.
    let mut h = Harness::new(config.clone());
    h.auth_tls(pki.client_config(TLS13));
    assert!(!h.cmd("FEAT").contains("SSCN"));
    h.login_tls();
    assert!(h.cmd("SSCN ON").starts_with("502 "));
    assert!(h.cmd("PORT 203,0,113,9,200,10").starts_with("504 "));
    assert!(!h.session.data_peer_allowed("203.0.113.9".parse().unwrap()));
    // A user granted site-to-site gets all of it, after login only.
    let mut h = Harness::new(config);
    h.grant.policy.allow_site_to_site = true;
    h.auth_tls(pki.client_config(TLS13));
    assert!(!h.session.data_peer_allowed("203.0.113.9".parse().unwrap()));
    h.login_tls();
    assert!(h.cmd("FEAT").contains(" SSCN\r\n"));
    assert_eq!(h.cmd("SSCN ON"), "200 Client method\r\n");
    assert_eq!(
        h.cmd("PORT 203,0,113,9,200,10"),
        "200 PORT command successful\r\n"
    );
    assert!(h.session.data_peer_allowed("203.0.113.9".parse().unwrap()));
}

/// RFC 2577 section 3: the engine, not the frontend, refuses a passive data connection from another host, and
/// asks for the next connection within the same accept timeout.
#[test]
fn the_engine_refuses_a_passive_data_connection_from_another_host() {
    let mut h = logged_in();
    h.cmd("TYPE I");
    h.data_mode = DataMode::Hold;
    h.cmd("PASV");
    assert_eq!(h.cmd("RETR hello.txt"), "");
    let accept = h.held.pop().unwrap();
    let stranger: std::net::SocketAddr = "203.0.113.9:40000".parse().unwrap();
    h.complete(accept.id, Outcome::DataConnected { peer: stranger });
    assert_eq!(
        h.take(),
        "",
        "no reply while the right client may still connect"
    );
    assert!(h
        .events
        .contains(&Event::DataConnectionRefused { peer: stranger }));
    let again = h.held.pop().expect("a new AcceptData");
    assert!(matches!(again.kind, RequestKind::AcceptData));
    assert_ne!(again.id, accept.id);
    h.data_mode = DataMode::Auto;
    h.complete(
        again.id,
        Outcome::DataConnected {
            peer: "192.0.2.7:40001".parse().unwrap(),
        },
    );
    assert_eq!(
        h.take(),
        "150 Opening data connection\r\n226 Transfer complete\r\n"
    );
    assert_eq!(h.received_data, b"hello\nworld\n");
}

/// `LIST file`, `NLST file` and `STAT file` describe that one file (as `ls` does); `MLSD file` is an error
/// (RFC 3659 section 7.1). The frontend only reports that the path is not a directory.
#[test]
fn listing_a_file_describes_that_file_in_the_engine() {
    let mut h = logged_in();
    h.cmd("PASV");
    h.cmd("LIST hello.txt");
    let line = String::from_utf8(h.received_data.clone()).unwrap();
    assert!(
        line.starts_with("-rw-r--r-- ") && line.ends_with(" hello.txt\r\n"),
        "{line:?}"
    );
    h.cmd("PASV");
    h.cmd("NLST hello.txt");
    assert_eq!(h.received_data, b"hello.txt\r\n");
    h.cmd("PASV");
    assert_eq!(h.cmd("MLSD hello.txt"), "550 Not a directory\r\n");
    let stat = h.cmd("STAT hello.txt");
    assert!(
        stat.starts_with("213-Status of /hello.txt:\r\n -rw-r--r-- "),
        "{stat:?}"
    );
    assert!(
        stat.ends_with(" hello.txt\r\n213 End of status\r\n"),
        "{stat:?}"
    );
}
