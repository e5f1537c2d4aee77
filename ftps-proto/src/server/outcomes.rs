//! The frontend's answers to [`ServerSession`]'s requests that are not part of a transfer, turned into replies.

use super::*; // the session's own types and imports, one level up

impl ServerSession {
    pub(super) fn on_pending_outcome(&mut self, pending: Pending, outcome: Outcome) {
        // `STAT file` lists the file's own line, as `LIST file` does.
        if let (
            Pending::StatList { path },
            Outcome::Failed(Failure::Storage(StorageError::NotADirectory)),
        ) = (&pending, &outcome)
        {
            let path = path.clone();
            let request = RequestKind::Metadata { path: path.clone() };
            self.request(Pending::StatFile { path }, request);
            return;
        }
        let outcome = match (&pending, outcome) {
            (Pending::StatFile { path }, Outcome::MetadataAt { mut info, now }) => {
                info.name = path.file_name().unwrap_or("/").to_owned();
                self.stat_list(path, &[info], Some(&now));
                return;
            }
            (_, Outcome::MetadataAt { info, .. }) => Outcome::Metadata(info),
            (_, outcome) => outcome,
        };
        if let Outcome::Failed(f) = &outcome {
            if let Pending::Auth { .. } = pending {
                // Fall through to Denied handling below.
            } else {
                if let Pending::Passive { .. } = pending {
                    self.data.passive = false;
                }
                if let Pending::Host { .. } = pending {
                    self.reply(ReplyCode::NOT_IMPLEMENTED_FOR_PARAMETER, "Unknown host");
                    return;
                }
                let (code, text) = transfer::failure_reply(f);
                self.reply(code, text);
                return;
            }
        }
        match (pending, outcome) {
            (Pending::Auth { user, anonymous }, Outcome::LoggedIn(grant)) => {
                self.policy = self.base.narrowed(&grant.policy);
                self.cwd = grant.home;
                self.timers.login = None;
                if let Some(tls) = &self.session_tls {
                    tls.set_owner(Some((&user, self.peer.ip())));
                }
                self.login = Login::LoggedIn { user: user.clone() };
                self.reply(ReplyCode::LOGGED_IN, "Login successful");
                self.events.push_back(Event::LoggedIn { user, anonymous });
            }
            (Pending::Auth { .. }, Outcome::NeedAccount) => {
                self.reply(ReplyCode::NEED_ACCOUNT, "Need account for login");
            }
            (Pending::Auth { user, .. }, _) => {
                self.login = Login::None;
                self.failed_logins = self.failed_logins.saturating_add(1);
                self.events.push_back(Event::LoginFailed { user });
                let fatal = self.failed_logins >= self.base.max_failed_logins;
                self.delayed_reply = Some(if fatal {
                    (
                        ReplyCode::SERVICE_NOT_AVAILABLE,
                        "Too many failed logins, closing control connection".to_owned(),
                        true,
                    )
                } else {
                    (
                        ReplyCode::NOT_LOGGED_IN,
                        "Login incorrect".to_owned(),
                        false,
                    )
                });
                // The reply waits out the delay (slows password guessing); commands meanwhile queue.
                self.timers.reply_delay = Some(self.now + self.base.failed_login_delay);
            }
            (Pending::Host { host }, Outcome::Done) => {
                self.host = Some(host);
                self.reply(ReplyCode::SERVICE_READY, "Host accepted");
            }
            (Pending::Passive { extended }, Outcome::PassiveListening(addr)) => {
                if !self.data.passive {
                    return;
                }
                let text = if extended {
                    format!("Entering Extended Passive Mode (|||{}|)", addr.port())
                } else {
                    let ip = match (self.policy.passive_public_ipv4, addr.ip().to_canonical()) {
                        (Some(public), _) => public,
                        (None, IpAddr::V4(v4)) => v4,
                        (None, IpAddr::V6(_)) => {
                            self.release_data();
                            self.reply(
                                ReplyCode::CANT_OPEN_DATA_CONNECTION,
                                "PASV needs IPv4: use EPSV",
                            );
                            return;
                        }
                    };
                    let [a, b, c, d] = ip.octets();
                    let [p1, p2] = addr.port().to_be_bytes();
                    format!("Entering Passive Mode ({a},{b},{c},{d},{p1},{p2})")
                };
                let code = if extended {
                    ReplyCode::ENTERING_EXTENDED_PASSIVE_MODE
                } else {
                    ReplyCode::ENTERING_PASSIVE_MODE
                };
                // The port listens already (a client that connects at once is queued by the kernel); the
                // reply waits out the pacing (`SessionConfig::passive_reply_pacing`), commands meanwhile queue.
                let id = self.push_request(RequestKind::AcceptData);
                self.data.waiting = Some(id);
                let pacing = self.base.passive_reply_pacing;
                if pacing.is_zero() {
                    self.reply(code, text);
                } else {
                    self.delayed_reply = Some((code, text, false));
                    self.timers.reply_delay = Some(self.now + pacing);
                }
            }
            (Pending::Cwd { path }, Outcome::Metadata(info)) => {
                if info.kind == FileKind::File {
                    self.reply(ReplyCode::FILE_NOT_AVAILABLE, "Not a directory");
                } else {
                    self.cwd = path;
                    self.reply(ReplyCode::FILE_ACTION_OK, "Directory changed");
                }
            }
            (Pending::Size, Outcome::Metadata(info)) => {
                if info.kind == FileKind::Dir {
                    self.reply(ReplyCode::FILE_NOT_AVAILABLE, "Not a plain file");
                } else {
                    self.reply(ReplyCode::FILE_STATUS, info.size.to_string());
                }
            }
            (Pending::Mdtm, Outcome::Metadata(info)) => match &info.modified {
                Some(t) => self.reply(ReplyCode::FILE_STATUS, listing::timeval(t)),
                None => self.reply(ReplyCode::FILE_NOT_AVAILABLE, "Modification time unknown"),
            },
            (Pending::Mlst { path }, Outcome::Metadata(info)) => {
                // RFC 3659 section 7.2: one fact line, starting with a space, naming the path.
                let line = format!(" {}", listing::facts(&info, self.facts, path.as_str()));
                self.reply_lines(
                    ReplyCode::FILE_ACTION_OK,
                    vec![format!("Listing {path}"), line, "End".to_owned()],
                );
            }
            (Pending::Rnfr { path }, Outcome::Metadata(_)) => {
                self.rnfr = Some(path);
                self.reply(ReplyCode::FILE_ACTION_PENDING, "Ready for RNTO");
            }
            (Pending::StatList { path }, Outcome::Listing(entries)) => {
                self.stat_list(&path, &entries, None);
            }
            (Pending::StatList { path }, Outcome::ListingAt { entries, now }) => {
                self.stat_list(&path, &entries, Some(&now));
            }
            (Pending::StatFile { path }, Outcome::Metadata(mut info)) => {
                info.name = path.file_name().unwrap_or("/").to_owned();
                self.stat_list(&path, &[info], None);
            }
            (Pending::Simple { code, text }, Outcome::Done) => self.reply(code, text),
            (Pending::Mfmt { path, time }, Outcome::Done) => {
                let text = format!("Modify={}; {}", listing::timeval(&time), path);
                self.reply(ReplyCode::FILE_STATUS, text);
            }
            (Pending::Mfmt { path, time }, Outcome::Metadata(info)) => match info.modified {
                // Filesystems clamp what they cannot store (ext4: before 1901 or after 2446): say what is set.
                Some(set) => {
                    let text = format!("Modify={}; {}", listing::timeval(&set), path);
                    self.reply(ReplyCode::FILE_STATUS, text);
                }
                None => {
                    let text = format!("Modify={}; {}", listing::timeval(&time), path);
                    self.reply(ReplyCode::FILE_STATUS, text);
                }
            },
            (Pending::Site, Outcome::SiteReply(lines)) => {
                let mut lines: Vec<String> = lines
                    .into_iter()
                    .map(|l| l.replace(['\r', '\n'], " "))
                    .collect();
                if lines.is_empty() {
                    lines.push("OK".to_owned());
                }
                self.reply_lines(ReplyCode::COMMAND_OK, lines);
            }
            (Pending::Site, Outcome::Done) => self.reply(ReplyCode::COMMAND_OK, "OK"),
            (Pending::Passive { .. }, _) => {
                self.data.passive = false;
                self.reply(ReplyCode::LOCAL_ERROR, "Unexpected answer");
            }
            _ => self.reply(ReplyCode::LOCAL_ERROR, "Unexpected answer"),
        }
    }
}
