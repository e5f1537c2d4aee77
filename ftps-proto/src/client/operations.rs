//! Operations: the queue, each operation's plan of commands, and the replies to its non-transfer commands.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use crate::codec::{Command, EpsvArgument, ProtectionLevel, Reply, RepresentationType};

use super::{
    ClientSession, DataConnectionMode, Event, OpError, Operation, Output, Phase, RequestKind,
    Running, ServerFeatures, SessionError, SiteToSiteCommand, Step, TransferState,
};

impl ClientSession {
    /// Starts the next queued operation when the connection is free.
    pub(super) fn pump(&mut self, now: Instant) {
        while self.phase == Phase::Ready
            && self.current.is_none()
            && self.awaiting.is_none()
            && self.error.is_none()
        {
            let Some((id, op)) = self.queue.pop_front() else {
                return;
            };
            let plan = self.plan(&op);
            self.current = Some(Running {
                id,
                op,
                plan,
                features: ServerFeatures::default(),
                transfer: TransferState::default(),
            });
            self.advance(now);
        }
    }

    /// The commands an operation starts with.
    pub(super) fn plan(&self, op: &Operation) -> VecDeque<Step> {
        let mut plan = VecDeque::new();
        match op {
            Operation::Login(_) => plan.push_back(Step::User),
            Operation::Rename { .. } => plan.extend([Step::Rnfr, Step::Rnto]),
            Operation::Quit => plan.push_back(Step::Quit),
            Operation::SetDataProtection(true)
                if self.tls_config.is_some() && !self.protection_settled =>
            {
                plan.extend([Step::Pbsz, Step::Single]);
            }
            Operation::SiteToSiteTransfer(_) => {
                if !self.type_image {
                    plan.push_back(Step::Type);
                }
                plan.push_back(Step::Transfer);
            }
            op if op.is_transfer() => {
                if self.tls_config.is_some() && !self.protection_settled {
                    plan.extend([Step::Pbsz, Step::Prot]);
                }
                if !self.type_image {
                    plan.push_back(Step::Type);
                }
                match self.config.data_mode {
                    DataConnectionMode::Passive if self.epsv_refused => plan.push_back(Step::Pasv),
                    DataConnectionMode::Passive => plan.push_back(Step::Epsv),
                    DataConnectionMode::Active => plan.extend([Step::Listen, Step::Eprt]),
                }
                if let Operation::Retrieve {
                    offset: Some(_), ..
                }
                | Operation::StoreAt { .. } = op
                {
                    plan.push_back(Step::Rest);
                }
                plan.push_back(Step::Transfer);
            }
            _ => plan.push_back(Step::Single),
        }
        plan
    }

    /// Sends the next command of the current operation, or completes it when none is left.
    pub(super) fn advance(&mut self, now: Instant) {
        let Some(running) = self.current.as_mut() else {
            return;
        };
        if running.transfer.abort_requested {
            self.finish_aborted();
            self.pump(now);
            return;
        }
        let running_id = running.id;
        let Some(step) = running.plan.pop_front() else {
            let result = self.output_without_reply();
            self.finish_op(result);
            self.pump(now);
            return;
        };
        let command = match self.command_for(step) {
            Ok(Some(command)) => command,
            Ok(None) => {
                // Active mode: waiting for the frontend's listener.
                let id = self.request(running_id, RequestKind::Listen);
                if let Some(running) = self.current.as_mut() {
                    running.transfer.awaiting_listen = true;
                    running.transfer.setup_request = Some(id);
                }
                return;
            }
            Err(e) => {
                self.finish_op(Err(e));
                self.pump(now);
                return;
            }
        };
        // A caller's argument with a line break would put a second command on the wire (RFC 959 section 4.1:
        // one command per line); refuse what does not go out as exactly this one line.
        if !command.is_encodable() {
            self.finish_op(Err(OpError::InvalidOperation(
                "argument cannot be sent as one command line",
            )));
            self.pump(now);
            return;
        }
        self.send(now, &command, step);
    }

    /// The command a step sends; `None` for a step that waits for the frontend.
    pub(super) fn command_for(&mut self, step: Step) -> Result<Option<Command>, OpError> {
        let Some(running) = self.current.as_mut() else {
            return Err(OpError::InvalidOperation("no operation running"));
        };
        let features = self.features.clone().unwrap_or_default();
        let command = match (step, &running.op) {
            (Step::User, Operation::Login(c)) => Command::User(c.user.clone()),
            (Step::Pass, Operation::Login(c)) => Command::Pass(c.password.clone()),
            (Step::Acct, Operation::Login(c)) => match &c.account {
                Some(account) => Command::Acct(account.clone()),
                None => {
                    return Err(OpError::InvalidOperation(
                        "the server asks for an account (332)",
                    ))
                }
            },
            (Step::Pbsz, _) => Command::Pbsz(0),
            (Step::Prot, _) => Command::Prot(ProtectionLevel::Private),
            (Step::Ccc, _) => Command::Ccc,
            (Step::Feat, _) => Command::Feat,
            (Step::OptsUtf8, _) => Command::Opts {
                name: "UTF8".to_string(),
                value: Some("ON".to_string()),
            },
            (Step::Type, _) => Command::Type(RepresentationType::Image),
            (Step::Rnfr, Operation::Rename { from, .. }) => Command::Rnfr(from.clone()),
            (Step::Rnto, Operation::Rename { to, .. }) => Command::Rnto(to.clone()),
            (Step::Epsv, _) => Command::Epsv(EpsvArgument::Default),
            (Step::Pasv, _) => Command::Pasv,
            // Not a command: the frontend binds first.
            (Step::Listen, _) => return Ok(None),
            (Step::Eprt, _) => match self.data_addr {
                Some(addr) if self.eprt_refused => match addr {
                    SocketAddr::V4(v4) => Command::Port(v4),
                    SocketAddr::V6(_) => {
                        return Err(OpError::InvalidOperation("server refused EPRT for IPv6"))
                    }
                },
                Some(addr) => Command::Eprt(addr),
                None => return Err(OpError::InvalidOperation("no listening address")),
            },
            (Step::Port, _) => match self.data_addr {
                Some(SocketAddr::V4(v4)) => Command::Port(v4),
                _ => {
                    return Err(OpError::InvalidOperation(
                        "PORT needs an IPv4 listening address",
                    ))
                }
            },
            (
                Step::Rest,
                Operation::Retrieve {
                    offset: Some(offset),
                    ..
                }
                | Operation::StoreAt { offset, .. },
            ) => Command::Rest(*offset),
            (Step::Transfer, op) => match op {
                Operation::List(path) if features.mlsd => Command::Mlsd(path.clone()),
                Operation::List(path) => {
                    running.transfer.used_list = true;
                    Command::List(path.clone())
                }
                Operation::NameList(path) => Command::Nlst(path.clone()),
                Operation::Retrieve { path, .. } => Command::Retr(path.clone()),
                Operation::Store(path) | Operation::StoreAt { path, .. } => {
                    Command::Stor(path.clone())
                }
                Operation::Append(path) => Command::Appe(path.clone()),
                Operation::StoreUnique(hint) => Command::Stou(hint.clone()),
                Operation::SiteToSiteTransfer(SiteToSiteCommand::Retrieve(path)) => {
                    Command::Retr(path.clone())
                }
                Operation::SiteToSiteTransfer(SiteToSiteCommand::Store(path)) => {
                    Command::Stor(path.clone())
                }
                _ => return Err(OpError::InvalidOperation("not a transfer")),
            },
            (Step::Single, op) => match op {
                Operation::Pwd => Command::Pwd,
                Operation::Cwd(p) => Command::Cwd(p.clone()),
                Operation::Cdup => Command::Cdup,
                Operation::Mkdir(p) => Command::Mkd(p.clone()),
                Operation::Rmdir(p) => Command::Rmd(p.clone()),
                Operation::Delete(p) => Command::Dele(p.clone()),
                Operation::Size(p) => Command::Size(p.clone()),
                Operation::Mdtm(p) => Command::Mdtm(p.clone()),
                Operation::SetModified { path, time } => Command::Mfmt {
                    time: *time,
                    path: path.clone(),
                },
                Operation::Raw(c) => c.clone(),
                Operation::Noop => Command::Noop,
                Operation::SetDataProtection(true) => Command::Prot(ProtectionLevel::Private),
                Operation::SetDataProtection(false) => Command::Prot(ProtectionLevel::Clear),
                Operation::SiteToSiteTlsClient(on) => Command::Sscn(Some(*on)),
                Operation::SiteToSitePassive { tls_client: true } => Command::Cpsv,
                Operation::SiteToSitePassive { tls_client: false } => Command::Pasv,
                Operation::SiteToSitePort(SocketAddr::V4(v4)) => Command::Port(*v4),
                Operation::SiteToSitePort(addr) => Command::Eprt(*addr),
                _ => {
                    return Err(OpError::InvalidOperation(
                        "no single command for this operation",
                    ))
                }
            },
            (Step::Quit, _) => Command::Quit,
            _ => return Err(OpError::InvalidOperation("step does not fit the operation")),
        };
        Ok(Some(command))
    }

    /// The result of an operation whose plan ran out (login after `TYPE I`).
    pub(super) fn output_without_reply(&mut self) -> Result<Output, OpError> {
        match self.current.as_ref() {
            Some(running) if matches!(running.op, Operation::Login(_)) => {
                Ok(Output::LoggedIn(running.features.clone()))
            }
            _ => Err(OpError::InvalidOperation(
                "operation ended without a result",
            )),
        }
    }

    /// Ends the current transfer after `ABOR` (or before any command went out).
    pub(super) fn finish_aborted(&mut self) {
        let error = match self.current.as_mut() {
            Some(running) => running.transfer.abort_error(),
            None => OpError::Aborted,
        };
        self.finish_op(Err(error));
    }

    /// Ends the current operation with `result`.
    pub(super) fn finish_op(&mut self, result: Result<Output, OpError>) {
        self.data_addr = None;
        if let Some(running) = self.current.take() {
            self.complete_op(running.id, result);
        }
    }

    /// The final reply to a non-transfer command of the current operation.
    pub(super) fn on_op_reply(&mut self, now: Instant, step: Step, reply: Reply) {
        let code = reply.code.get();
        let Some(running) = self.current.as_mut() else {
            // A reply for a command nobody runs cannot happen (awaiting is only set by running ops).
            self.events.push_back(Event::UnsolicitedReply(reply));
            return;
        };
        if running.transfer.abort_requested {
            self.finish_aborted();
            self.pump(now);
            return;
        }
        match step {
            Step::User | Step::Pass | Step::Acct => match code {
                230 | 202 | 232 => self.logged_in(),
                331 if step == Step::User => running.plan.push_front(Step::Pass),
                332 if step != Step::Acct => running.plan.push_front(Step::Acct),
                _ => return self.refuse(now, reply),
            },
            Step::Pbsz | Step::Prot => {
                if reply.code.is_completion() {
                    if step == Step::Prot {
                        self.data_private = true;
                        self.protection_settled = true;
                    }
                } else if self.config.allow_clear_data {
                    // RFC 4217 section 9: data connections stay in the clear; the caller opted in.
                    running.plan.retain(|s| *s != Step::Prot);
                    self.data_private = false;
                    self.protection_settled = true;
                } else {
                    self.fail(SessionError::DataProtectionRefused(reply));
                    return;
                }
            }
            // CCC refused: the control connection simply stays protected.
            Step::Ccc if reply.code.is_completion() => {
                self.clear_command_channel(now);
                // The next command goes out in plaintext, after the server's close_notify.
                return;
            }
            Step::Ccc => self.control.abandon_clear(),
            Step::Feat => {
                let features = parse_features(&reply);
                if features.utf8 {
                    running.plan.push_front(Step::OptsUtf8);
                }
                running.features = features.clone();
                self.features = Some(features);
            }
            // Servers that always speak UTF-8 answer 202 or 5xx: either way the session goes on.
            Step::OptsUtf8 => {}
            Step::Type => {
                if reply.code.is_completion() {
                    self.type_image = true;
                } else {
                    return self.refuse(now, reply);
                }
            }
            // RFC 959 section 4.1.3: RNFR and REST are answered with 350 when the next command may follow.
            Step::Rnfr | Step::Rest if code != 350 => return self.refuse(now, reply),
            Step::Rnfr | Step::Rest => {}
            Step::Epsv => {
                if code == 229 {
                    match reply.parse_epsv() {
                        Some(port) => {
                            self.open_data_connection(SocketAddr::new(self.peer.ip(), port))
                        }
                        None => return self.malformed(now, "229 without a port"),
                    }
                } else if reply.code.is_permanent_negative() {
                    // RFC 2428 section 3: a server without EPSV; fall back to PASV for the rest of the session.
                    self.epsv_refused = true;
                    running.plan.push_front(Step::Pasv);
                } else {
                    return self.refuse(now, reply);
                }
            }
            Step::Pasv => {
                if code != 227 {
                    return self.refuse(now, reply);
                }
                match reply.parse_pasv() {
                    Some(addr) => {
                        let addr = if self.config.trust_pasv_address {
                            SocketAddr::V4(addr)
                        } else {
                            // The 227 address is ignored by default: the server is where the control
                            // connection goes (defeats FTP bounce and broken NAT rewriting).
                            SocketAddr::new(self.peer.ip(), addr.port())
                        };
                        self.open_data_connection(addr);
                    }
                    None => return self.malformed(now, "227 without an address"),
                }
            }
            Step::Eprt | Step::Port if reply.code.is_completion() => {}
            // RFC 2428 section 2: a server without EPRT; fall back to PORT (IPv4 only) for the session.
            Step::Eprt
                if reply.code.is_permanent_negative()
                    && !self.eprt_refused
                    && matches!(self.data_addr, Some(SocketAddr::V4(_))) =>
            {
                self.eprt_refused = true;
                running.plan.push_front(Step::Port);
            }
            Step::Eprt | Step::Port => return self.refuse(now, reply),
            Step::Single | Step::Rnto => {
                if let Operation::Raw(Command::Type(t)) = &running.op {
                    if reply.code.is_completion() {
                        self.type_image = *t == RepresentationType::Image;
                    }
                }
                if let Operation::SetDataProtection(private) = running.op {
                    if reply.code.is_completion() {
                        self.data_private = private;
                        self.protection_settled = true;
                    }
                }
                let result = single_output(&running.op, reply);
                self.finish_op(result);
                self.pump(now);
                return;
            }
            // Handled before: greeting, auth, quit, transfer, abort, listen.
            _ => {}
        }
        self.advance(now);
    }

    pub(super) fn logged_in(&mut self) {
        let tls = self.tls_config.is_some();
        let ccc = self.config.clear_command_channel && self.control.is_tls();
        let settled = self.protection_settled;
        let Some(running) = self.current.as_mut() else {
            return;
        };
        running.plan.clear();
        if tls && !settled {
            running.plan.extend([Step::Pbsz, Step::Prot]);
        }
        if ccc {
            running.plan.push_back(Step::Ccc);
        }
        running.plan.extend([Step::Feat, Step::Type]);
    }

    /// The operation failed with a negative reply; the session goes on.
    pub(super) fn refuse(&mut self, now: Instant, reply: Reply) {
        self.finish_op(Err(OpError::Refused(reply)));
        self.pump(now);
    }

    pub(super) fn malformed(&mut self, now: Instant, why: &str) {
        self.finish_op(Err(OpError::MalformedReply(why.to_string())));
        self.pump(now);
    }
}

/// Why a raw command is refused: it would need a data connection or switch protocols.
pub(super) fn raw_refusal(command: &Command) -> Option<&'static str> {
    match command {
        Command::Retr(_)
        | Command::Stor(_)
        | Command::Stou(_)
        | Command::Appe(_)
        | Command::List(_)
        | Command::Nlst(_)
        | Command::Mlsd(_) => Some("transfer commands need the typed transfer operations"),
        Command::Auth(_) | Command::Ccc | Command::Rein | Command::Prot(_) | Command::Pbsz(_) => {
            Some("security state is managed by the session")
        }
        Command::Abor => Some("use ClientSession::abort"),
        Command::Quit => Some("use Operation::Quit"),
        Command::Pasv | Command::Epsv(_) | Command::Port(_) | Command::Eprt(_) | Command::Cpsv => {
            Some("data connections are managed by the session")
        }
        _ => None,
    }
}

/// The output of a one-command operation from its final reply.
pub(super) fn single_output(op: &Operation, reply: Reply) -> Result<Output, OpError> {
    let code = reply.code.get();
    match op {
        Operation::Raw(_) => Ok(Output::Done(reply)),
        _ if !reply.code.is_completion() => Err(OpError::Refused(reply)),
        Operation::Pwd | Operation::Mkdir(_) if code == 257 => match reply.parse_pathname() {
            Some(path) => Ok(Output::Directory(path)),
            None => Err(OpError::MalformedReply(
                "257 without a quoted path".to_string(),
            )),
        },
        Operation::Pwd => Err(OpError::MalformedReply(
            "PWD answered without 257".to_string(),
        )),
        Operation::Mkdir(path) => Ok(Output::Directory(path.clone())),
        Operation::SiteToSitePassive { .. } => match reply.parse_pasv() {
            Some(addr) => Ok(Output::PassiveAddress(addr)),
            None => Err(OpError::MalformedReply(
                "227 without an address".to_string(),
            )),
        },
        Operation::Size(_) => match reply.parse_file_size() {
            Some(size) => Ok(Output::Size(size)),
            _ => Err(OpError::MalformedReply(
                "SIZE answered without a size".to_string(),
            )),
        },
        Operation::Mdtm(_) => match reply.parse_modification_time() {
            Some(time) => Ok(Output::Modified(time)),
            _ => Err(OpError::MalformedReply(
                "MDTM answered without a time-val".to_string(),
            )),
        },
        _ => Ok(Output::Done(reply)),
    }
}

/// What the session uses of a `FEAT` reply (RFC 2389 section 3.2); a server without `FEAT` offers nothing.
pub(super) fn parse_features(reply: &Reply) -> ServerFeatures {
    let Some(features) = reply.parse_feat() else {
        return ServerFeatures::default();
    };
    let rest_stream = features
        .params_all("REST")
        .any(|p| p.trim().eq_ignore_ascii_case("STREAM"));
    ServerFeatures {
        mlsd: features.has("MLST") || features.has("MLSD"),
        size: features.has("SIZE"),
        mdtm: features.has("MDTM"),
        mfmt: features.has("MFMT"),
        rest_stream,
        utf8: features.has("UTF8"),
        epsv: features.has("EPSV"),
        advertised: features,
    }
}
