//! The server's side of the control connection's transport (`crate::control_channel`): which TLS config the
//! upgrade uses, what each transport event means for the session, and how the session ends.

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
        self.control.start_tls(conn);
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
            // Nothing more is read; TLS says goodbye (close_notify) after the replies already queued.
            self.control.close();
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
                return;
            }
            if self.switch_held || self.queue.len() >= MAX_QUEUED {
                return;
            }
            match self.control.poll_input(&mut self.framer) {
                None => return,
                Some(Received::Frame(line)) => self.on_line(line),
                Some(Received::TlsEstablished(info)) => {
                    self.control_tls_version = Some(info.version);
                    self.events.push_back(Event::TlsEstablished(info));
                }
                Some(Received::TlsCleared) => self.events.push_back(Event::TlsCleared),
                Some(Received::TlsFailed(e)) => {
                    self.fail(SessionError::Tls(e));
                    return;
                }
                Some(Received::TlsEnded) => {
                    // The client ended TLS (close_notify, or EOF without it) outside CCC: the session is over.
                    self.abort_everything();
                    self.close(CloseReason::PeerClosed);
                    return;
                }
            }
        }
    }
}
