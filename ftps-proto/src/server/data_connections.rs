//! Data connections and transfers of [`ServerSession`]: `PASV`/`EPSV`/`PORT`, the data channel handed to the
//! frontend, the transfer commands from their request to their final reply.

use super::*; // the session's own types and imports, one level up

impl ServerSession {
    pub(super) fn release_data(&mut self) {
        let had = self.data.passive
            || self.data.waiting.is_some()
            || self.data.connected.is_some()
            || self.data.channel.is_some();
        if let Some(id) = self.data.waiting.take() {
            self.abandoned.push(id);
        }
        self.data = Data::default();
        self.timers.data_accept = None;
        if had {
            self.push_notice(Notice::ReleaseData);
        }
    }

    pub(super) fn cmd_passive(&mut self, extended: bool) {
        if self.epsv_all && !extended {
            self.reply(ReplyCode::BAD_SEQUENCE, "Only EPSV allowed after EPSV ALL");
            return;
        }
        let ipv6 = self.local.ip().to_canonical().is_ipv6();
        if ipv6 && !extended {
            self.reply(
                ReplyCode::CANT_OPEN_DATA_CONNECTION,
                "PASV needs IPv4: use EPSV",
            );
            return;
        }
        self.release_data();
        self.data.passive = true;
        self.request(
            Pending::Passive { extended },
            RequestKind::OpenPassive { ipv6 },
        );
    }

    /// `SSCN [ON|OFF]`: the data-connection TLS role for the connections opened after it, active or passive.
    /// The replies follow FileZilla Server and glftpd: "200 Client method" / "200 Server method".
    pub(super) fn cmd_sscn(&mut self, mode: Option<bool>) {
        if !self.site_to_site_tls_offered() {
            self.reply(
                ReplyCode::NOT_IMPLEMENTED,
                "SSCN not available: site-to-site transfers are not enabled",
            );
            return;
        }
        if let Some(on) = mode {
            self.sscn_client = on;
        }
        let text = if self.sscn_client {
            "Client method"
        } else {
            "Server method"
        };
        self.reply(ReplyCode::COMMAND_OK, text);
    }

    pub(super) fn cmd_active(&mut self, addr: SocketAddr) {
        if self.epsv_all {
            self.reply(ReplyCode::BAD_SEQUENCE, "Only EPSV allowed after EPSV ALL");
            return;
        }
        // RFC 2577 section 3: no bounce to a third host, no privileged ports.
        if !self.policy.allow_site_to_site && !same_ip(addr.ip(), self.peer.ip()) {
            self.reply(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Data connection must go to the control peer",
            );
            return;
        }
        if addr.port() < 1024 {
            self.reply(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Privileged data port refused",
            );
            return;
        }
        self.release_data();
        self.data.active = Some(addr);
        self.reply(ReplyCode::COMMAND_OK, "PORT command successful");
    }

    pub(super) fn on_data_outcome(&mut self, outcome: Outcome) {
        match outcome {
            // RFC 2577 section 3 ("port stealing"): a passive connection from another host is dropped and the
            // next one awaited, within the same data-accept timeout; the frontend need not know the rule.
            Outcome::DataConnected { peer }
                if self.data.passive && !self.data_peer_allowed(peer.ip()) =>
            {
                self.events.push_back(Event::DataConnectionRefused { peer });
                let id = self.push_request(RequestKind::AcceptData);
                self.data.waiting = Some(id);
            }
            Outcome::DataConnected { peer } => {
                self.data.connected = Some(peer);
                self.start_data_channel();
                if matches!(
                    self.transfer.as_ref().map(|t| &t.stage),
                    Some(Stage::AwaitingData)
                ) {
                    self.run_transfer(ReplyCode::FILE_STATUS_OK);
                }
            }
            _ => {
                self.data.passive = false;
                if matches!(
                    self.transfer.as_ref().map(|t| &t.stage),
                    Some(Stage::AwaitingData)
                ) {
                    self.fail_transfer_before_run(
                        Failure::DataConnection,
                        "Can't open data connection",
                    );
                }
            }
        }
    }

    // ----- transfers -----

    pub(super) fn cmd_transfer(&mut self, arg: Option<String>, kind: TransferKind) {
        let offset = std::mem::take(&mut self.rest);
        let raw = arg.as_deref().unwrap_or("");
        // LIST/NLST options such as `-la` are not paths (a common ls-ism): ignore them.
        let raw = match kind {
            TransferKind::List(_) => strip_ls_options(raw),
            _ => raw,
        };
        // The path first: a name that can never be served is refused as such, whatever the data connection.
        let resolved = match kind {
            TransferKind::List(_) => self.resolve(raw),
            // STOU alone: a fresh name in the current directory (RFC 959 section 4.1.3).
            TransferKind::Write(WriteMode::Unique) if raw.is_empty() => {
                self.cwd.join_name(STOU_DEFAULT_NAME)
            }
            _ if raw.is_empty() => {
                self.reply(ReplyCode::SYNTAX_ERROR_ARGUMENTS, "Path required");
                return;
            }
            _ => self.resolve_file(raw),
        };
        let Some(path) = resolved else {
            return;
        };
        if !self.data.passive && self.data.active.is_none() {
            self.reply(
                ReplyCode::CANT_OPEN_DATA_CONNECTION,
                "Use PORT, PASV or EPSV first",
            );
            return;
        }
        if self.policy.require_tls_data && !self.prot_private {
            // RFC 4217 section 9: 521 when the data connection must be protected.
            self.reply(
                ReplyCode::DATA_PROTECTION_REQUIRED,
                "Data connections must be protected: use PROT P",
            );
            return;
        }
        let unique = match kind {
            TransferKind::Write(WriteMode::Unique) => Some((path.clone(), 0)),
            _ => None,
        };
        let path = match &unique {
            Some((hint, _)) => match unique_candidate(hint, 0, next_random(&mut self.unique_names))
            {
                Some(first) => first,
                None => {
                    self.reply(ReplyCode::FILE_NAME_NOT_ALLOWED, "File name not allowed");
                    return;
                }
            },
            None => path,
        };
        let (direction, request, format, write_mode, offset) = match kind {
            TransferKind::Retr => (
                Direction::Download,
                RequestKind::OpenRead {
                    path: path.clone(),
                    offset,
                },
                None,
                None,
                offset,
            ),
            TransferKind::Write(mode) => {
                let offset = if mode == WriteMode::Unique { 0 } else { offset };
                (
                    Direction::Upload,
                    RequestKind::OpenWrite {
                        path: path.clone(),
                        mode,
                        offset,
                    },
                    None,
                    Some(mode),
                    offset,
                )
            }
            TransferKind::List(format) => (
                Direction::Download,
                RequestKind::List {
                    path: path.clone(),
                    format,
                },
                Some(format),
                None,
                0,
            ),
        };
        let id = self.push_request(request);
        self.transfer = Some(Transfer {
            started: self.now,
            path,
            direction,
            stage: Stage::Preparing(id),
            source: None,
            format,
            write_mode,
            offset,
            aborted: false,
            file: None,
            resumption_required: false,
            unique,
            single_file: false,
        });
    }

    pub(super) fn on_prepared(&mut self, id: ReqId, outcome: Outcome) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        match outcome {
            // RFC 3659 section 5.4: a restart point past the end of the file is an invalid REST parameter.
            Outcome::Opened {
                size: Some(size), ..
            } if t.direction == Direction::Download && t.offset > size => {
                self.transfer = None;
                self.push_notice(Notice::ReleaseFile { file: id });
                self.reply(
                    ReplyCode::INVALID_REST_PARAMETER,
                    "Restart position beyond end of file",
                );
                return;
            }
            Outcome::Opened { path, .. } => {
                t.file = Some(id);
                if t.write_mode == Some(WriteMode::Unique) {
                    t.path = path;
                }
                t.source = Some(if t.direction == Direction::Upload {
                    Source::Upload(id)
                } else {
                    Source::File(id)
                });
            }
            // `STOU`: the name was taken meanwhile; try the next candidate.
            Outcome::Failed(Failure::Storage(StorageError::Exists))
                if t.unique
                    .as_ref()
                    .is_some_and(|(_, n)| n + 1 < STOU_ATTEMPTS) =>
            {
                let Some((hint, attempt)) = t.unique.as_mut() else {
                    return;
                };
                *attempt += 1;
                let Some(path) =
                    unique_candidate(hint, *attempt, next_random(&mut self.unique_names))
                else {
                    self.transfer = None;
                    self.reply(ReplyCode::FILE_NAME_NOT_ALLOWED, "File name not allowed");
                    return;
                };
                t.path = path.clone();
                let request = RequestKind::OpenWrite {
                    path,
                    mode: WriteMode::Unique,
                    offset: 0,
                };
                let id = self.push_request(request);
                if let Some(t) = self.transfer.as_mut() {
                    t.stage = Stage::Preparing(id);
                }
                return;
            }
            // `LIST file` / `NLST file` (as `ls` does): the file's own line. `MLSD` is for directories only
            // (RFC 3659 section 7.1), so it keeps the error.
            Outcome::Failed(Failure::Storage(StorageError::NotADirectory))
                if !t.single_file && t.format.is_some_and(|f| f != ListFormat::Mlsd) =>
            {
                t.single_file = true;
                let request = RequestKind::Metadata {
                    path: t.path.clone(),
                };
                let id = self.push_request(request);
                if let Some(t) = self.transfer.as_mut() {
                    t.stage = Stage::Preparing(id);
                }
                return;
            }
            Outcome::Metadata(_) | Outcome::MetadataAt { .. } if !t.single_file => {
                self.transfer = None;
                self.reply(ReplyCode::LOCAL_ERROR, "Unexpected answer");
                return;
            }
            Outcome::Metadata(mut info) => {
                info.name = t.path.file_name().unwrap_or("/").to_owned();
                let format = t.format.unwrap_or(ListFormat::Unix);
                t.source = Some(Source::Bytes(listing::render(
                    &[info],
                    format,
                    self.facts,
                    None,
                )));
            }
            Outcome::MetadataAt { mut info, now } => {
                info.name = t.path.file_name().unwrap_or("/").to_owned();
                let format = t.format.unwrap_or(ListFormat::Unix);
                let bytes = listing::render(&[info], format, self.facts, Some(&now));
                t.source = Some(Source::Bytes(bytes));
            }
            Outcome::Listing(entries) => {
                let format = t.format.unwrap_or(ListFormat::Unix);
                let bytes = listing::render(&entries, format, self.facts, None);
                t.source = Some(Source::Bytes(bytes));
            }
            Outcome::ListingAt { entries, now } => {
                let format = t.format.unwrap_or(ListFormat::Unix);
                let bytes = listing::render(&entries, format, self.facts, Some(&now));
                t.source = Some(Source::Bytes(bytes));
            }
            Outcome::Failed(f) => {
                let (code, text) = transfer::failure_reply(&f);
                self.transfer = None;
                self.reply(code, text);
                return;
            }
            _ => {
                self.transfer = None;
                self.reply(ReplyCode::LOCAL_ERROR, "Unexpected answer");
                return;
            }
        }
        t.stage = Stage::AwaitingData;
        if self.data.connected.is_some() {
            self.run_transfer(ReplyCode::DATA_CONNECTION_ALREADY_OPEN);
            return;
        }
        if self.data.waiting.is_none() {
            if let Some(addr) = self.data.active {
                let id = self.push_request(RequestKind::ConnectData { addr });
                self.data.waiting = Some(id);
            }
        }
        self.timers.data_accept = Some(self.now + self.policy.data_accept_timeout);
    }

    /// The data connection is up: build its channel and hand it to the frontend at once, so a client that
    /// starts its TLS handshake as soon as it has connected (curl) gets its answer without waiting for the
    /// transfer command (see [`RequestKind::DriveData`]).
    pub(super) fn start_data_channel(&mut self) {
        let role = self.data_tls_role();
        self.data.resumption_required = matches!(
            role,
            transfer::DataRole::TlsServer {
                resumption: ResumptionPolicy::Required,
                ..
            }
        );
        match transfer::build_channel(self.now, role) {
            Ok(mut channel) => {
                // The channel knows its request, so its `DataReady` names it without the frontend's help.
                let id = self.next_id();
                channel.await_transfer(id);
                self.work.push_back(Work::Request(Request {
                    id,
                    kind: RequestKind::DriveData {
                        channel: Box::new(channel),
                    },
                }));
                self.data.channel = Some(id);
            }
            Err(_) => self.data.failed = Some(Failure::DataTls),
        }
    }

    /// The data channel ended before a transfer ran on it: the next transfer command gets why.
    pub(super) fn on_data_channel_ended(&mut self, outcome: Outcome) {
        self.data.channel = None;
        self.data.failed = Some(match outcome {
            Outcome::Failed(failure) | Outcome::TransferFailed { failure, .. } => failure,
            _ => Failure::DataConnection,
        });
    }

    /// The data connection is there: preliminary reply, then the transfer runs on its channel.
    pub(super) fn run_transfer(&mut self, code: ReplyCode) {
        self.timers.data_accept = None;
        if let Some(failure) = self.data.failed.take() {
            let (_, text) = transfer::failure_reply(&failure);
            self.fail_transfer_before_run(failure, text);
            return;
        }
        let Some(data) = self.data.channel else {
            self.fail_transfer_before_run(Failure::DataConnection, "Can't open data connection");
            return;
        };
        let resumption_required = self.data.resumption_required;
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        let Some(source) = t.source.take() else {
            return;
        };
        t.resumption_required = resumption_required;
        let plan = TransferPlan {
            path: t.path.clone(),
            source,
            data_type: if self.ascii {
                DataType::Ascii
            } else {
                DataType::Binary
            },
            offset: t.offset,
        };
        let text = match (&plan.source, code) {
            // RFC 1123 section 4.1.2.9: STOU's preliminary reply says which name the server chose.
            _ if t.write_mode == Some(WriteMode::Unique) => {
                format!("FILE: {}", plan.path.file_name().unwrap_or_default())
            }
            (_, c) if c == ReplyCode::DATA_CONNECTION_ALREADY_OPEN => {
                "Data connection already open; transfer starting".to_owned()
            }
            (Source::Bytes(_), _) => "Here comes the directory listing".to_owned(),
            _ => "Opening data connection".to_owned(),
        };
        // The data connection now belongs to the transfer; the next one needs a new PASV/PORT.
        self.data = Data::default();
        // Only uploads: a client reads a download's data connection anyway (and gets its tickets there).
        let wait = self.policy.preliminary_reply_wait;
        if self.prot_private && !wait.is_zero() && plan.source.is_upload() {
            self.held_preliminary = Some((code, text));
            self.timers.preliminary = Some(self.now + wait);
        } else {
            self.reply(code, text);
        }
        self.push_notice(Notice::RunTransfer { data, plan });
        if let Some(t) = self.transfer.as_mut() {
            t.stage = Stage::Running(data);
        }
    }

    /// The TLS role of the data connection about to run: none under `PROT C`; the TLS client after `SSCN ON`
    /// or `CPSV`; otherwise the TLS server with the session-bound config. The resumption rule applies only when
    /// the data peer is the control peer's IP: a third party (site-to-site, allowed only by the opt-in) is
    /// another server that cannot hold our control session (see [`SessionConfig::allow_site_to_site`]).
    pub(super) fn data_tls_role(&self) -> transfer::DataRole {
        if !self.prot_private {
            return transfer::DataRole::Clear;
        }
        let peer = self.data.connected.unwrap_or(self.peer);
        if self.sscn_client || self.data.cpsv {
            return match &self.base.site_to_site_tls {
                Some(config) => transfer::DataRole::TlsClient {
                    config: Arc::clone(config),
                    peer: peer.ip(),
                },
                None => transfer::DataRole::Clear,
            };
        }
        let version = self.control_tls_version;
        let Some((config, binding)) = self
            .session_tls
            .as_ref()
            .map(|tls| tls.data_connection(version))
        else {
            return transfer::DataRole::Clear;
        };
        let resumption = if same_ip(peer.ip(), self.peer.ip()) {
            self.policy.data_resumption
        } else {
            match self.policy.data_resumption {
                ResumptionPolicy::Required => ResumptionPolicy::Preferred,
                other => other,
            }
        };
        transfer::DataRole::TlsServer {
            config,
            resumption,
            binding,
        }
    }

    /// Sends the held preliminary reply, if any.
    pub(super) fn release_preliminary(&mut self) {
        self.timers.preliminary = None;
        if let Some((code, text)) = self.held_preliminary.take() {
            self.reply(code, text);
        }
    }

    /// Ends a transfer that never reached `RunTransfer`: release its file and data connection, reply with
    /// `failure`'s code and `text`.
    pub(super) fn fail_transfer_before_run(&mut self, failure: Failure, text: &str) {
        let (code, _) = transfer::failure_reply(&failure);
        if let Some(t) = self.transfer.take() {
            if let Some(file) = t.file {
                self.push_notice(Notice::ReleaseFile { file });
            }
            self.record(&t, 0, code, None, Some(failure));
        }
        self.release_data();
        self.reply(code, text);
    }

    pub(super) fn on_transfer_done(&mut self, outcome: Outcome) {
        let Some(t) = self.transfer.take() else {
            return;
        };
        let resumption_required = t.resumption_required;
        let aborted = |f: Failure| if t.aborted { Failure::Aborted } else { f };
        let (failure, bytes, tls) = match outcome {
            Outcome::TransferFinished(report) => {
                let bytes = report.bytes_sent.saturating_add(report.bytes_received);
                let resumed = report.tls.as_ref().is_some_and(|t| t.resumed);
                let failure = if t.aborted {
                    Some(Failure::Aborted)
                } else if resumption_required && !resumed {
                    // The channel enforces this itself; checking again keeps a 226 from ever vouching for it.
                    Some(Failure::ResumptionRefused)
                } else if report.clean_close {
                    None
                } else {
                    Some(Failure::Truncated)
                };
                (failure, bytes, report.tls)
            }
            Outcome::Failed(f) => (Some(aborted(f)), 0, None),
            // The data connection did its part (or some of it) and the transfer still failed: the reply is the
            // failure's, the record keeps what the connection did.
            Outcome::TransferFailed { failure, report } => {
                let bytes = report.bytes_sent.saturating_add(report.bytes_received);
                (Some(aborted(failure)), bytes, report.tls)
            }
            _ => (
                Some(Failure::Storage(StorageError::Other(
                    "unexpected answer".into(),
                ))),
                0,
                None,
            ),
        };
        let (code, text) = match &failure {
            Some(f) => transfer::failure_reply(f),
            None => (ReplyCode::CLOSING_DATA_CONNECTION, "Transfer complete"),
        };
        // A held preliminary reply still precedes a success; a failure alone is a complete answer (RFC 959
        // section 5.4 allows 4xx/5xx without 1xx), so it is dropped then.
        if code.is_completion() {
            self.release_preliminary();
        } else {
            self.held_preliminary = None;
            self.timers.preliminary = None;
        }
        self.reply(code, text);
        if t.aborted {
            // RFC 959 section 4.1.3: 426 for the aborted transfer, then 226 for ABOR itself.
            self.reply(ReplyCode::CLOSING_DATA_CONNECTION, "ABOR successful");
        }
        self.record(&t, bytes, code, tls, failure);
        if self.shutdown_pending {
            self.say_shutdown();
            return;
        }
        if let Some(idle) = self.timers.idle.as_mut() {
            *idle = self.now + self.policy.idle_timeout;
        }
    }

    pub(super) fn record(
        &mut self,
        t: &Transfer,
        bytes: u64,
        status: ReplyCode,
        tls: Option<TlsInfo>,
        failure: Option<Failure>,
    ) {
        self.events
            .push_back(Event::TransferFinished(TransferRecord {
                path: t.path.clone(),
                bytes,
                direction: t.direction,
                duration: self.now.saturating_duration_since(t.started),
                status,
                tls,
                failure,
                listing: t.format.is_some(),
            }));
    }
}
