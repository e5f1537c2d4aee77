//! The control connection's transport inside [`ServerSession`]: the TLS upgrade, and turning received bytes
//! (plain, TLS, plain again after `CCC`) into command lines.

use super::*; // the session's own types and imports, one level up

impl ServerSession {
    pub(super) fn start_tls(&mut self) -> Result<(), SessionError> {
        if self.session_tls.is_none() {
            let base = self.base.tls.as_ref().ok_or(SessionError::NoTlsConfig)?;
            let tls = SessionTls::new(
                base,
                &self.base.session_keys,
                self.base.data_resumption_scope,
            )
            .ok_or(SessionError::Tls(rustls::Error::FailedToGetRandomBytes))?;
            if let Login::LoggedIn { user } = &self.login {
                tls.set_owner(Some((user, self.peer.ip())));
            }
            self.session_tls = Some(tls);
        }
        let config = self
            .session_tls
            .as_ref()
            .map(|tls| Arc::clone(&tls.control))
            .ok_or(SessionError::NoTlsConfig)?;
        let conn = TlsConn::server(config).map_err(SessionError::Tls)?;
        self.control = Control::Tls(Box::new(conn));
        self.tls_reported = false;
        self.close_notify_sent = false;
        Ok(())
    }

    pub(super) fn fail(&mut self, error: SessionError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
        self.abort_everything();
        self.close(CloseReason::Error);
    }

    pub(super) fn close(&mut self, reason: CloseReason) {
        if !self.closed {
            self.closed = true;
            self.inbound.clear();
            self.queue.clear();
            self.timers = Timers::default();
            self.events.push_back(Event::Closed(reason));
        }
    }

    /// Stops whatever data work is under way (the session is ending).
    pub(super) fn abort_everything(&mut self) {
        if let Some(t) = self.transfer.take() {
            match t.stage {
                Stage::Running(id) => {
                    self.push_notice(Notice::AbortTransfer { data: id });
                }
                Stage::Preparing(id) => self.abandoned.push(id),
                Stage::AwaitingData => {}
            }
            if let Some(file) = t.file {
                if !matches!(t.stage, Stage::Running(_)) {
                    self.push_notice(Notice::ReleaseFile { file });
                }
            }
        }
        self.release_data();
    }

    /// Parses and runs as much input as the state allows.
    pub(super) fn pump(&mut self) {
        loop {
            self.run_queue();
            if self.closed {
                self.inbound.clear();
                return;
            }
            if self.switch_held || self.queue.len() >= MAX_QUEUED {
                return;
            }
            let progressed = match &mut self.control {
                Control::Plain => {
                    if self.inbound.is_empty() {
                        false
                    } else {
                        let (n, line) = self.framer.decode(&self.inbound);
                        let line = line.map(|l| l.map(<[u8]>::to_vec));
                        self.inbound.drain(..n.min(self.inbound.len()));
                        if let Some(line) = line {
                            self.on_line(line);
                        }
                        n > 0
                    }
                }
                Control::Tls(tls) => {
                    let mut progressed = false;
                    // rustls reads nothing while its handshake output waits: move that output out first.
                    let _ = tls.write_tls_into(&mut self.wire_out);
                    if !self.inbound.is_empty() {
                        // RFC 4217 section 12.3: after CCC, cleartext follows the client's close_notify in the
                        // same stream; feed whole records one at a time so rustls never swallows it.
                        let input = if self.ccc_awaiting_peer {
                            crate::tls::first_tls_record(&self.inbound)
                        } else {
                            &self.inbound[..]
                        };
                        match tls.read_tls(input) {
                            Ok(n) => {
                                self.inbound.drain(..n.min(self.inbound.len()));
                                progressed |= n > 0;
                            }
                            Err(e) => {
                                self.fail(SessionError::Tls(e));
                                return;
                            }
                        }
                    }
                    if !self.tls_reported {
                        if let Some(info) = tls.info() {
                            self.tls_reported = true;
                            self.control_tls_version = Some(info.version);
                            self.events.push_back(Event::TlsEstablished(info));
                        }
                    }
                    let chunk = tls.plaintext_chunk();
                    if chunk.is_empty() {
                        match tls.read_state() {
                            ReadState::Open => {}
                            ReadState::CleanClose if self.ccc_awaiting_peer => {
                                // RFC 4217 section 12.3: after both close_notify alerts the control connection
                                // continues in cleartext; what follows the alert is plaintext.
                                let mut rest = Vec::new();
                                let _ = tls.write_tls_into(&mut self.wire_out);
                                rest.append(&mut self.inbound);
                                self.control = Control::Plain;
                                self.ccc_awaiting_peer = false;
                                self.inbound = rest;
                                self.events.push_back(Event::TlsCleared);
                                progressed = true;
                            }
                            ReadState::CleanClose | ReadState::Truncated => {
                                // The client ended TLS (close_notify, or EOF without it): the session is over.
                                self.abort_everything();
                                self.close(CloseReason::PeerClosed);
                                return;
                            }
                        }
                    } else {
                        let (n, line) = self.framer.decode(chunk);
                        let line = line.map(|l| l.map(<[u8]>::to_vec));
                        tls.consume_plaintext(n);
                        if let Some(line) = line {
                            self.on_line(line);
                        }
                        progressed |= n > 0;
                    }
                    progressed
                }
            };
            if !progressed {
                return;
            }
        }
    }
}
