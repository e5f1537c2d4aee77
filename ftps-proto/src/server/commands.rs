//! Running commands: the dispatch of [`ServerSession`] for each parsed command and the commands that need no
//! data connection (login, TLS and protection, features, `SITE`, status).

use super::*; // the session's own types and imports, one level up

impl ServerSession {
    pub(super) fn on_line(&mut self, line: Result<Vec<u8>, FrameError>) {
        // A client that speaks has passed the auth timeout; the login timeout goes on.
        self.timers.auth = None;
        if let Some(idle) = self.timers.idle.as_mut() {
            *idle = self.now + self.policy.idle_timeout;
        }
        let parsed = match line {
            Ok(line) => parse_command(&line).map_err(|e| {
                self.events
                    .push_back(Event::Command(e.verb.clone().unwrap_or_default()));
                e.reply_code()
            }),
            Err(FrameError::LineTooLong) => {
                self.events
                    .push_back(Event::Command("<line too long>".to_owned()));
                Err(ReplyCode::SYNTAX_ERROR)
            }
        };
        if let Ok(cmd) = &parsed {
            self.events
                .push_back(Event::Command(cmd.masked().to_string()));
        }
        if self.transfer.is_some() {
            if let Ok(cmd @ (Command::Abor | Command::Stat(None))) = &parsed {
                let cmd = cmd.clone();
                self.urgent(cmd);
                return;
            }
        }
        if matches!(parsed, Ok(Command::Auth(_))) && !self.control.is_tls() {
            self.switch_held = true;
        }
        self.queue.push_back(parsed);
    }

    pub(super) fn busy(&self) -> bool {
        self.pending.is_some() || self.transfer.is_some() || self.timers.reply_delay.is_some()
    }

    pub(super) fn run_queue(&mut self) {
        while !self.closed && !self.busy() {
            let Some(next) = self.queue.pop_front() else {
                return;
            };
            match next {
                Ok(cmd) => self.execute(cmd),
                Err(code) => {
                    self.rnfr = None;
                    let text = if code == ReplyCode::SYNTAX_ERROR {
                        "Syntax error"
                    } else {
                        "Bad argument"
                    };
                    self.reply(code, text);
                }
            }
        }
    }

    /// `ABOR` and `STAT` during a transfer.
    pub(super) fn urgent(&mut self, cmd: Command) {
        match cmd {
            Command::Abor => self.abort_transfer(),
            _ => {
                let mut lines = self.status_lines();
                if let Some(t) = &self.transfer {
                    lines.insert(1, format!(" Transfer in progress: {}", t.path));
                }
                self.reply_lines(ReplyCode::SYSTEM_STATUS, lines);
            }
        }
    }

    pub(super) fn abort_transfer(&mut self) {
        let Some(t) = self.transfer.as_mut() else {
            return;
        };
        match t.stage {
            Stage::Running(id) => {
                // The frontend closes the data connection when it sees the notice, without answering: 426 for
                // the transfer and 226 for ABOR now (RFC 959 section 4.1.3), and a late answer is ignored.
                t.aborted = true;
                self.push_notice(Notice::AbortTransfer { data: id });
                self.abandoned.push(id);
                self.on_transfer_done(Outcome::Failed(Failure::Aborted));
            }
            Stage::Preparing(id) => {
                self.abandoned.push(id);
                self.fail_transfer_before_run(Failure::Aborted, "Transfer aborted");
                self.reply(ReplyCode::CLOSING_DATA_CONNECTION, "ABOR successful");
            }
            Stage::AwaitingData => {
                self.fail_transfer_before_run(Failure::Aborted, "Transfer aborted");
                self.reply(ReplyCode::CLOSING_DATA_CONNECTION, "ABOR successful");
            }
        }
    }

    pub(super) fn logged_in(&self) -> bool {
        matches!(self.login, Login::LoggedIn { .. })
    }

    /// Resolves the argument of a command that names a plain file (`RETR`, `STOR`, `SIZE`, `DELE`, ...):
    /// a trailing `/` names a directory, so it is refused (550) rather than dropped, and a `..` above `/`
    /// is refused (553) rather than clamped. The reply is sent when `None` is returned.
    pub(super) fn resolve_file(&mut self, path: &str) -> Option<VirtualPath> {
        if path.len() > 1 && path.ends_with('/') {
            self.reply(ReplyCode::FILE_NOT_AVAILABLE, "Not a plain file");
            return None;
        }
        match self.cwd.resolve_within(path) {
            Ok(p) => Some(p),
            Err(_) => {
                self.reply(ReplyCode::FILE_NAME_NOT_ALLOWED, "File name not allowed");
                None
            }
        }
    }

    pub(super) fn resolve(&mut self, path: &str) -> Option<VirtualPath> {
        match self.cwd.resolve(path) {
            Ok(p) => Some(p),
            Err(_) => {
                self.reply(ReplyCode::FILE_NAME_NOT_ALLOWED, "File name not allowed");
                None
            }
        }
    }

    /// Runs one command: the login gate, then the handler of its concern. Every command ends a pending
    /// `RNFR`, which only the `RNTO` right after it may use (RFC 959 section 4.1.3).
    pub(super) fn execute(&mut self, cmd: Command) {
        let rnfr = self.rnfr.take();
        if let Command::Auth(_) = cmd {
            self.switch_held = false;
        }
        if !allowed_before_login(&cmd) && !self.logged_in() {
            self.reply(ReplyCode::NOT_LOGGED_IN, "Please login with USER and PASS");
            return;
        }
        // Each handler runs the commands of its concern and hands any other back.
        let Some(cmd) = self.run_login_and_security(cmd) else {
            return;
        };
        let Some(cmd) = self.run_informational(cmd) else {
            return;
        };
        let Some(cmd) = self.run_navigation(cmd) else {
            return;
        };
        let Some(cmd) = self.run_file_command(cmd, rnfr) else {
            return;
        };
        let Some(cmd) = self.run_transfer_parameter(cmd) else {
            return;
        };
        let Some(cmd) = self.run_data_setup(cmd) else {
            return;
        };
        let Some(cmd) = self.run_transfer_command(cmd) else {
            return;
        };
        match cmd {
            Command::Unknown { .. } => self.reply(ReplyCode::SYNTAX_ERROR, "Unknown command"),
            _ => self.reply(ReplyCode::NOT_IMPLEMENTED, "Command not implemented"),
        }
    }

    /// Login, TLS and protection (RFC 959 section 4.1.1, RFC 4217, RFC 7151 `HOST`).
    fn run_login_and_security(&mut self, cmd: Command) -> Option<Command> {
        match cmd {
            Command::User(user) => self.cmd_user(user),
            Command::Pass(password) => self.cmd_pass(password),
            Command::Acct(account) => self.cmd_acct(account),
            Command::Host(host) => self.cmd_host(host),
            Command::Auth(mech) => self.cmd_auth(mech),
            Command::Pbsz(_) => {
                // RFC 4217 section 8: PBSZ follows a completed AUTH; 0 is the only size for TLS.
                if !self.tls_active() {
                    self.reply(ReplyCode::BAD_SEQUENCE, "PBSZ needs AUTH TLS first");
                } else {
                    self.pbsz = true;
                    self.reply(ReplyCode::COMMAND_OK, "PBSZ=0");
                }
            }
            Command::Prot(level) => self.cmd_prot(level),
            Command::Ccc => self.cmd_ccc(),
            Command::Rein => self.cmd_rein(),
            Command::Quit => {
                self.reply(ReplyCode::CLOSING, "Goodbye");
                self.abort_everything();
                self.close(CloseReason::Quit);
            }
            other => return Some(other),
        }
        None
    }

    /// Commands that only tell: `NOOP`, `SYST`, `FEAT`/`OPTS` (RFC 2389), `HELP`, `STAT`, `SITE`.
    fn run_informational(&mut self, cmd: Command) -> Option<Command> {
        match cmd {
            Command::Noop => self.reply(ReplyCode::COMMAND_OK, "NOOP ok"),
            Command::Syst => self.reply(ReplyCode::SYSTEM_TYPE, "UNIX Type: L8"),
            Command::Feat => self.cmd_feat(),
            Command::Opts { name, value } => self.cmd_opts(&name, value.as_deref()),
            Command::Help(topic) => self.cmd_help(topic.as_deref()),
            Command::Stat(None) => {
                let lines = self.status_lines();
                self.reply_lines(ReplyCode::SYSTEM_STATUS, lines);
            }
            Command::Stat(Some(arg)) => {
                if let Some(path) = self.resolve(&arg) {
                    self.request(
                        Pending::StatList { path: path.clone() },
                        RequestKind::List {
                            path,
                            format: ListFormat::Unix,
                        },
                    );
                }
            }
            Command::Site(text) => self.cmd_site(&text),
            other => return Some(other),
        }
        None
    }

    /// The working directory and directories: `PWD`, `CWD`, `CDUP`, `MKD`, `RMD`.
    fn run_navigation(&mut self, cmd: Command) -> Option<Command> {
        match cmd {
            Command::Pwd => {
                let text = format!("\"{}\" is the current directory", self.cwd.quoted());
                self.reply(ReplyCode::PATHNAME_CREATED, text);
            }
            Command::Cwd(arg) => {
                if let Some(path) = self.resolve(&arg) {
                    self.request(
                        Pending::Cwd { path: path.clone() },
                        RequestKind::Metadata { path },
                    );
                }
            }
            Command::Cdup => {
                self.cwd = self.cwd.parent();
                self.reply(ReplyCode::FILE_ACTION_OK, "Directory changed");
            }
            Command::Mkd(arg) => {
                if let Some(path) = self.resolve(&arg) {
                    let text = format!("\"{}\" created", path.quoted());
                    let pending = Pending::Simple {
                        code: ReplyCode::PATHNAME_CREATED,
                        text,
                    };
                    self.request(pending, RequestKind::MakeDir { path });
                }
            }
            Command::Rmd(arg) => match self.resolve(&arg) {
                // `RMD .` or `RMD /` at the top: the user's root (a home directory, for a chrooted user).
                Some(path) if path.is_root() => self.reply(
                    ReplyCode::FILE_NOT_AVAILABLE,
                    "The root directory cannot be removed",
                ),
                Some(path) => {
                    let pending = Pending::Simple {
                        code: ReplyCode::FILE_ACTION_OK,
                        text: "Directory removed".to_owned(),
                    };
                    self.request(pending, RequestKind::RemoveDir { path });
                }
                None => {}
            },
            other => return Some(other),
        }
        None
    }

    /// Files without a data connection: `DELE`, `RNFR`/`RNTO`, and the facts `SIZE`, `MDTM`, `MFMT`, `MLST`
    /// (RFC 3659).
    fn run_file_command(&mut self, cmd: Command, rnfr: Option<VirtualPath>) -> Option<Command> {
        match cmd {
            Command::Dele(arg) => {
                if let Some(path) = self.resolve_file(&arg) {
                    let pending = Pending::Simple {
                        code: ReplyCode::FILE_ACTION_OK,
                        text: "File deleted".to_owned(),
                    };
                    self.request(pending, RequestKind::Delete { path });
                }
            }
            Command::Rnfr(arg) => {
                if let Some(path) = self.resolve(&arg) {
                    self.request(
                        Pending::Rnfr { path: path.clone() },
                        RequestKind::Metadata { path },
                    );
                }
            }
            Command::Rnto(arg) => self.cmd_rnto(rnfr, &arg),
            Command::Size(arg) => {
                if self.ascii {
                    // RFC 3659 section 4: SIZE is the size *as transferred* in the current TYPE; computing the
                    // ASCII size means reading the file, so we refuse like vsftpd and ProFTPD do.
                    self.reply(
                        ReplyCode::FILE_NOT_AVAILABLE,
                        "SIZE not allowed in ASCII mode",
                    );
                } else if let Some(path) = self.resolve_file(&arg) {
                    self.request(Pending::Size, RequestKind::Metadata { path });
                }
            }
            Command::Mdtm(arg) => {
                if let Some(path) = self.resolve_file(&arg) {
                    self.request(Pending::Mdtm, RequestKind::Metadata { path });
                }
            }
            Command::Mfmt { time, path } => {
                if let Some(path) = self.resolve_file(&path) {
                    let pending = Pending::Mfmt {
                        path: path.clone(),
                        time,
                    };
                    self.request(pending, RequestKind::SetModified { path, time });
                }
            }
            Command::Mlst(arg) => {
                if let Some(path) = self.resolve(arg.as_deref().unwrap_or("")) {
                    self.request(
                        Pending::Mlst { path: path.clone() },
                        RequestKind::Metadata { path },
                    );
                }
            }
            other => return Some(other),
        }
        None
    }

    /// `RNTO`, right after an accepted `RNFR` (RFC 959 section 4.1.3).
    fn cmd_rnto(&mut self, rnfr: Option<VirtualPath>, arg: &str) {
        let Some(from) = rnfr else {
            self.reply(ReplyCode::BAD_SEQUENCE, "RNFR required first");
            return;
        };
        let Some(to) = self.resolve(arg) else {
            return;
        };
        if from.is_root() || to.is_root() {
            self.reply(
                ReplyCode::FILE_NOT_AVAILABLE,
                "The root directory cannot be renamed",
            );
        } else if to.as_str().starts_with(&format!("{from}/")) {
            self.reply(
                ReplyCode::FILE_NOT_AVAILABLE,
                "A directory cannot be moved into itself",
            );
        } else {
            let pending = Pending::Simple {
                code: ReplyCode::FILE_ACTION_OK,
                text: "Renamed".to_owned(),
            };
            self.request(pending, RequestKind::Rename { from, to });
        }
    }

    /// How the next transfer is shaped: `TYPE`, `MODE`, `STRU`, `ALLO`, `REST` (RFC 959 section 4.1.2, RFC 3659
    /// section 5 for `REST STREAM`).
    fn run_transfer_parameter(&mut self, cmd: Command) -> Option<Command> {
        match cmd {
            Command::Type(t) => self.cmd_type(t),
            Command::Mode(TransferMode::Stream) => {
                self.reply(ReplyCode::COMMAND_OK, "Mode set to S")
            }
            Command::Mode(_) => self.reply(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Only MODE S is supported",
            ),
            Command::Stru(FileStructure::File) => {
                self.reply(ReplyCode::COMMAND_OK, "Structure set to F")
            }
            Command::Stru(_) => self.reply(
                ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                "Only STRU F is supported",
            ),
            Command::Allo { .. } => self.reply(ReplyCode::SUPERFLUOUS, "ALLO not needed"),
            // A position no file can have (lseek(2) takes an i64): refused now, not as a failed RETR later.
            Command::Rest(offset) if i64::try_from(offset).is_err() => {
                self.reply(
                    ReplyCode::SYNTAX_ERROR_ARGUMENTS,
                    "Restart position out of range",
                );
            }
            Command::Rest(offset) => {
                self.rest = offset;
                self.reply(
                    ReplyCode::FILE_ACTION_PENDING,
                    format!("Restarting at {offset}"),
                );
            }
            other => return Some(other),
        }
        None
    }

    /// `TYPE` (RFC 959 section 3.1.1): ASCII non-print and image (or `L 8`) only.
    fn cmd_type(&mut self, t: RepresentationType) {
        let (ok, ascii) = match t {
            RepresentationType::Ascii(FormatControl::NonPrint) => (true, true),
            RepresentationType::Image | RepresentationType::Local(8) => (true, false),
            _ => (false, self.ascii),
        };
        self.ascii = ascii;
        if ok {
            let text = if ascii {
                "Switching to ASCII mode"
            } else {
                "Switching to Binary mode"
            };
            self.reply(ReplyCode::COMMAND_OK, text);
        } else {
            self.reply(ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER, "Unsupported TYPE");
        }
    }

    /// The data connection: passive (`PASV`, `EPSV`, RFC 2428), active (`PORT`, `EPRT`), site-to-site TLS
    /// (`SSCN`, `CPSV`), and `ABOR` with no transfer running.
    fn run_data_setup(&mut self, cmd: Command) -> Option<Command> {
        match cmd {
            Command::Abor => {
                // No transfer (RFC 959 section 4.1.3): close any pending data connection, answer 226.
                self.release_data();
                self.reply(ReplyCode::CLOSING_DATA_CONNECTION, "No transfer to abort");
            }
            Command::Pasv => self.cmd_passive(false),
            Command::Sscn(mode) => self.cmd_sscn(mode),
            Command::Cpsv => {
                if self.site_to_site_tls_offered() {
                    self.cmd_passive(false);
                    self.data.cpsv = true;
                } else {
                    self.reply(
                        ReplyCode::NOT_IMPLEMENTED,
                        "CPSV not available: site-to-site transfers are not enabled",
                    );
                }
            }
            Command::Epsv(EpsvArgument::Default) => self.cmd_passive(true),
            Command::Epsv(EpsvArgument::All) => {
                // RFC 2428 section 4: from now on only EPSV sets up data connections.
                self.epsv_all = true;
                self.reply(ReplyCode::COMMAND_OK, "EPSV ALL ok");
            }
            Command::Epsv(EpsvArgument::Protocol(p)) => {
                // RFC 2428 section 3: 1 is IPv4, 2 is IPv6; only the control connection's family is offered.
                let want = if self.local.is_ipv6() { 2 } else { 1 };
                if p == want {
                    self.cmd_passive(true);
                } else {
                    self.reply(
                        ReplyCode::NETWORK_PROTOCOL_NOT_SUPPORTED,
                        format!("Network protocol not supported, use ({want})"),
                    );
                }
            }
            Command::Port(addr) => self.cmd_active(SocketAddr::V4(addr)),
            Command::Eprt(addr) => self.cmd_active(addr),
            other => return Some(other),
        }
        None
    }

    /// The commands that move bytes over the data connection.
    fn run_transfer_command(&mut self, cmd: Command) -> Option<Command> {
        let (arg, kind) = match cmd {
            Command::Retr(arg) => (Some(arg), TransferKind::Retr),
            Command::Stor(arg) => (Some(arg), TransferKind::Write(WriteMode::Create)),
            Command::Appe(arg) => (Some(arg), TransferKind::Write(WriteMode::Append)),
            Command::Stou(arg) => (arg, TransferKind::Write(WriteMode::Unique)),
            Command::List(arg) => (arg, TransferKind::List(ListFormat::Unix)),
            Command::Nlst(arg) => (arg, TransferKind::List(ListFormat::Names)),
            Command::Mlsd(arg) => (arg, TransferKind::List(ListFormat::Mlsd)),
            other => return Some(other),
        };
        self.cmd_transfer(arg, kind);
        None
    }

    pub(super) fn cmd_user(&mut self, user: String) {
        if self.logged_in() {
            self.reply(ReplyCode::BAD_SEQUENCE, "Already logged in");
            return;
        }
        if self.policy.require_tls_control && !self.tls_active() {
            // RFC 4217 section 6: a server may refuse an unprotected login; 530 is what clients display.
            self.reply(ReplyCode::NOT_LOGGED_IN, "TLS required: use AUTH TLS first");
            return;
        }
        let anonymous = user.eq_ignore_ascii_case("anonymous") || user.eq_ignore_ascii_case("ftp");
        if anonymous && !self.policy.allow_anonymous {
            self.login = Login::None;
            self.reply(ReplyCode::NOT_LOGGED_IN, "Anonymous login not allowed");
            return;
        }
        let user = if anonymous {
            "anonymous".to_owned()
        } else {
            user
        };
        self.login = Login::User { user, anonymous };
        let text = if anonymous {
            "Guest login ok, send your e-mail address as password"
        } else {
            "Password required"
        };
        self.reply(ReplyCode::NEED_PASSWORD, text);
    }

    pub(super) fn cmd_pass(&mut self, password: String) {
        if self.logged_in() {
            self.reply(ReplyCode::SUPERFLUOUS, "Already logged in");
            return;
        }
        if self.policy.require_tls_control && !self.tls_active() {
            self.reply(ReplyCode::NOT_LOGGED_IN, "TLS required: use AUTH TLS first");
            return;
        }
        let Login::User { user, anonymous } = std::mem::replace(&mut self.login, Login::None)
        else {
            self.reply(ReplyCode::BAD_SEQUENCE, "Login with USER first");
            return;
        };
        self.authenticate(user, password, None, anonymous);
    }

    pub(super) fn cmd_acct(&mut self, account: String) {
        match std::mem::replace(&mut self.login, Login::None) {
            Login::NeedAccount {
                user,
                password,
                anonymous,
            } => self.authenticate(user, password, Some(account), anonymous),
            Login::LoggedIn { user } => {
                self.login = Login::LoggedIn { user };
                self.reply(ReplyCode::SUPERFLUOUS, "ACCT not needed");
            }
            other => {
                self.login = other;
                self.reply(ReplyCode::BAD_SEQUENCE, "Login with USER and PASS first");
            }
        }
    }

    pub(super) fn authenticate(
        &mut self,
        user: String,
        password: String,
        account: Option<String>,
        anonymous: bool,
    ) {
        let client_cert = self
            .control
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned();
        let kind = RequestKind::Authenticate {
            user: user.clone(),
            password: password.clone(),
            account,
            anonymous,
            host: self.host.clone(),
            client_cert,
        };
        // Keep the password only as long as an ACCT may need it again.
        self.request(
            Pending::Auth {
                user: user.clone(),
                anonymous,
            },
            kind,
        );
        self.login = Login::NeedAccount {
            user,
            password,
            anonymous,
        };
    }

    pub(super) fn cmd_host(&mut self, host: String) {
        if !matches!(self.login, Login::None) {
            // RFC 7151 section 3: HOST comes before USER.
            self.reply(ReplyCode::BAD_SEQUENCE, "HOST must come before login");
        } else {
            self.request(
                Pending::Host { host: host.clone() },
                RequestKind::SelectHost { host },
            );
        }
    }

    pub(super) fn cmd_auth(&mut self, mech: AuthMechanism) {
        if self.tls_active() {
            self.reply(ReplyCode::BAD_SEQUENCE, "TLS already active");
            return;
        }
        if self.base.tls.is_none() {
            self.reply(ReplyCode::NOT_IMPLEMENTED, "TLS not available");
            return;
        }
        let implies_prot_p = match mech {
            AuthMechanism::Tls | AuthMechanism::TlsC => false,
            AuthMechanism::Ssl | AuthMechanism::TlsP => true,
            _ => {
                self.reply(
                    ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                    "Unsupported AUTH mechanism",
                );
                return;
            }
        };
        self.reply(ReplyCode::AUTH_OK, "AUTH TLS successful");
        if let Err(e) = self.start_tls() {
            self.fail(e);
            return;
        }
        if implies_prot_p {
            self.pbsz = true;
            self.prot_private = true;
        }
    }

    pub(super) fn cmd_prot(&mut self, level: ProtectionLevel) {
        if !self.tls_active() || !self.pbsz {
            self.reply(ReplyCode::BAD_SEQUENCE, "PBSZ required first");
            return;
        }
        match level {
            ProtectionLevel::Private => {
                self.prot_private = true;
                self.reply(ReplyCode::COMMAND_OK, "Protection set to Private");
            }
            ProtectionLevel::Clear if self.policy.require_tls_data => {
                self.reply(ReplyCode::DENIED_FOR_POLICY, "PROT C not allowed by policy");
            }
            ProtectionLevel::Clear => {
                self.prot_private = false;
                self.reply(ReplyCode::COMMAND_OK, "Protection set to Clear");
            }
            ProtectionLevel::Safe | ProtectionLevel::Confidential => {
                self.reply(
                    ReplyCode::PROT_LEVEL_NOT_SUPPORTED,
                    "PROT level not supported",
                );
            }
        }
    }

    pub(super) fn cmd_ccc(&mut self) {
        if !self.policy.allow_ccc {
            self.reply(ReplyCode::DENIED_FOR_POLICY, "CCC not allowed");
        } else if !self.tls_active() {
            self.reply(ReplyCode::BAD_SEQUENCE, "TLS not active");
        } else {
            self.reply(ReplyCode::COMMAND_OK, "Control connection cleared");
            // RFC 4217 section 12.3: our close_notify follows the 200, and the client's returns the connection
            // to cleartext.
            self.control.begin_clear();
        }
    }

    pub(super) fn cmd_rein(&mut self) {
        // RFC 959 section 4.1.1: flush user and transfer parameters; TLS stays (RFC 4217 has no REIN rule).
        self.release_data();
        self.login = Login::None;
        if let Some(tls) = &self.session_tls {
            tls.set_owner(None);
        }
        self.policy = self.base.clone();
        self.host = None;
        self.ascii = true;
        self.rest = 0;
        self.rnfr = None;
        self.epsv_all = false;
        self.sscn_client = false;
        self.facts = FactSet::default();
        self.cwd = VirtualPath::root();
        self.timers.login = Some(self.now + self.base.login_timeout);
        self.reply(ReplyCode::SERVICE_READY, "Service ready for new user");
    }

    pub(super) fn cmd_feat(&mut self) {
        let mut lines = vec!["Features:".to_owned()];
        if self.base.tls.is_some() {
            lines.extend([
                " AUTH TLS".to_owned(),
                " PBSZ".to_owned(),
                " PROT".to_owned(),
            ]);
            if self.policy.allow_ccc {
                lines.push(" CCC".to_owned());
            }
        }
        if self.site_to_site_tls_offered() {
            lines.extend([" CPSV".to_owned(), " SSCN".to_owned()]);
        }
        for f in ["EPRT", "EPSV", "HOST", "MDTM", "MFMT"] {
            lines.push(format!(" {f}"));
        }
        lines.push(format!(" MLST {}", self.facts.feat()));
        for f in ["REST STREAM", "SIZE", "TVFS", "UTF8"] {
            lines.push(format!(" {f}"));
        }
        lines.push("End".to_owned());
        self.reply_lines(ReplyCode::SYSTEM_STATUS, lines);
    }

    pub(super) fn cmd_opts(&mut self, name: &str, value: Option<&str>) {
        if name.eq_ignore_ascii_case("UTF8") {
            if value.is_some_and(|v| v.trim().eq_ignore_ascii_case("ON")) {
                self.reply(ReplyCode::COMMAND_OK, "UTF8 mode always on");
            } else {
                self.reply(
                    ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER,
                    "Only OPTS UTF8 ON is supported",
                );
            }
        } else if name.eq_ignore_ascii_case("MLST") {
            let accepted = self.facts.select(value.unwrap_or(""));
            self.reply(ReplyCode::COMMAND_OK, format!("MLST OPTS {accepted}"));
        } else {
            self.reply(ReplyCode::SYNTAX_ERROR_ARGUMENTS, "Unknown option");
        }
    }

    pub(super) fn cmd_help(&mut self, topic: Option<&str>) {
        if let Some(topic) = topic {
            self.reply(
                ReplyCode::HELP_MESSAGE,
                format!("No detailed help for {}", topic.to_ascii_uppercase()),
            );
            return;
        }
        let lines = vec![
            "The following commands are recognized:".to_owned(),
            " ABOR ACCT ALLO APPE AUTH CCC CDUP CWD DELE EPRT EPSV FEAT HELP HOST LIST MDTM MFMT MKD MLSD MLST".to_owned(),
            " MODE NLST NOOP OPTS PASS PASV PBSZ PORT PROT PWD QUIT REIN REST RETR RMD RNFR RNTO SITE SIZE STAT".to_owned(),
            " STOR STOU STRU SYST TYPE USER XCUP XCWD XMKD XPWD XRMD".to_owned(),
            "Help OK".to_owned(),
        ];
        self.reply_lines(ReplyCode::HELP_MESSAGE, lines);
    }

    pub(super) fn cmd_site(&mut self, text: &str) {
        let mut words = text.trim().splitn(2, ' ');
        let sub = words.next().unwrap_or("").to_ascii_uppercase();
        let rest = words.next().map(str::trim).filter(|r| !r.is_empty());
        match sub.as_str() {
            "HELP" => self.reply(ReplyCode::HELP_MESSAGE, "SITE commands: CHMOD HELP"),
            "CHMOD" => {
                let mut args = rest.unwrap_or("").splitn(2, ' ');
                let mode = args
                    .next()
                    .and_then(|m| u32::from_str_radix(m, 8).ok())
                    .filter(|m| *m <= 0o7777);
                match (mode, args.next().map(str::trim).filter(|p| !p.is_empty())) {
                    (Some(mode), Some(path)) => {
                        if let Some(path) = self.resolve(path) {
                            let pending = Pending::Simple {
                                code: ReplyCode::COMMAND_OK,
                                text: "SITE CHMOD command ok".to_owned(),
                            };
                            self.request(pending, RequestKind::Chmod { path, mode });
                        }
                    }
                    _ => self.reply(
                        ReplyCode::SYNTAX_ERROR_ARGUMENTS,
                        "Usage: SITE CHMOD mode path",
                    ),
                }
            }
            "" => self.reply(ReplyCode::SYNTAX_ERROR_ARGUMENTS, "SITE needs a command"),
            _ => {
                let kind = RequestKind::SiteCustom {
                    command: sub,
                    argument: rest.map(str::to_owned),
                };
                self.request(Pending::Site, kind);
            }
        }
    }

    pub(super) fn status_lines(&self) -> Vec<String> {
        let mut lines = vec![
            "FTP server status:".to_owned(),
            format!(" Connected to {}", self.peer.ip()),
        ];
        match &self.login {
            Login::LoggedIn { user } => lines.push(format!(" Logged in as {user}")),
            _ => lines.push(" Not logged in".to_owned()),
        }
        lines.push(format!(
            " TYPE: {}",
            if self.ascii { "ASCII" } else { "BINARY" }
        ));
        lines.push(format!(
            " Control connection: {}; data protection: {}",
            if self.tls_active() { "TLS" } else { "plain" },
            if self.prot_private {
                "Private"
            } else {
                "Clear"
            }
        ));
        lines.push("End of status".to_owned());
        lines
    }
}

/// Commands allowed before login (RFC 959 section 5.4 lists what needs it; RFC 4217 section 4 the TLS ones).
fn allowed_before_login(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::User(_)
            | Command::Pass(_)
            | Command::Acct(_)
            | Command::Auth(_)
            | Command::Pbsz(_)
            | Command::Prot(_)
            | Command::Ccc
            | Command::Feat
            | Command::Syst
            | Command::Help(_)
            | Command::Noop
            | Command::Quit
            | Command::Opts { .. }
            | Command::Host(_)
            | Command::Rein
            | Command::Stat(None)
            | Command::Unknown { .. }
    )
}
