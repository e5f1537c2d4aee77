//! The control connection: TLS (`AUTH TLS`, implicit, `CCC`), sending commands, and routing each reply to the
//! command that awaits it; how the session ends (`QUIT`, failure).

use std::time::Instant;

use crate::codec::{AuthMechanism, Command, Reply};
use crate::control_channel::Received;
use crate::tls::TlsConn;

use super::{
    ClientSession, Event, OpError, OpId, Output, Phase, Security, SessionError, Step, Trace,
};

impl ClientSession {
    pub(super) fn start_tls(&mut self) -> Result<(), SessionError> {
        let Some(config) = self.tls_config.clone() else {
            return Err(SessionError::Config(
                "TLS requested without a rustls::ClientConfig",
            ));
        };
        let tls = TlsConn::client(config, self.server_name.clone()).map_err(SessionError::Tls)?;
        self.control.start_tls(tls);
        Ok(())
    }

    /// Runs what the control connection received: replies in order, and the transport's own events.
    pub(super) fn read_control(&mut self, now: Instant) {
        while self.error.is_none() && self.phase != Phase::Closed {
            let Some(received) = self.control.poll_input(&mut self.replies) else {
                return;
            };
            match received {
                Received::Frame(Ok(reply)) => self.on_reply(now, reply),
                Received::Frame(Err(e)) => self.fail(e.into()),
                Received::TlsEstablished(_) => {
                    // Implicit FTPS reports TLS with the greeting; explicit FTPS goes on after its handshake.
                    if self.phase == Phase::Handshake {
                        self.on_control_tls_ready(now);
                    }
                }
                Received::TlsCleared => {
                    // RFC 4217 section 12.3: the server's close_notify after CCC; plaintext from the next byte.
                    self.reply_deadline = None;
                    self.advance(now);
                }
                // After QUIT the server may end TLS before its EOF; anywhere else the session is cut off.
                Received::TlsEnded if self.awaiting == Some(Step::Quit) => {}
                Received::TlsEnded => self.fail(SessionError::ConnectionClosed),
                Received::TlsFailed(e) => self.fail(SessionError::Tls(e)),
            }
        }
    }

    pub(super) fn on_control_tls_ready(&mut self, now: Instant) {
        self.phase = Phase::Ready;
        self.reply_deadline = None;
        let tls = self.tls_info();
        if let Some(tls) = &tls {
            self.trace(|| Trace::ControlTls(tls.clone()));
        }
        if let Some(greeting) = self.greeting.take() {
            self.events.push_back(Event::Connected { greeting, tls });
        }
        self.pump(now);
    }

    /// Queues a trace entry when tracing is on; `entry` is built only then.
    pub(super) fn trace(&mut self, entry: impl FnOnce() -> Trace) {
        if self.config.trace {
            self.events.push_back(Event::Trace(entry()));
        }
    }

    /// Queues one command line for the control connection and records what it waits for.
    pub(super) fn send(&mut self, now: Instant, command: &Command, step: Step) {
        self.trace(|| Trace::sent(command));
        let line = format!("{command}\r\n");
        self.control.queue(line.as_bytes());
        if step == Step::Ccc {
            // Its 200 and the server's close_notify may share a read with the cleartext after them.
            self.control.announce_clear();
        }
        self.awaiting = Some(step);
        self.reply_deadline = Some(now + self.config.reply_timeout);
    }

    /// Every reply goes through here, in order.
    pub(super) fn on_reply(&mut self, now: Instant, reply: Reply) {
        self.trace(|| Trace::Received(reply.clone()));
        if reply.code.get() == 421 {
            // RFC 959 section 4.2: 421 may answer any command and means the server is closing.
            self.fail(SessionError::ServiceClosing(reply));
            return;
        }
        let Some(step) = self.awaiting else {
            self.events.push_back(Event::UnsolicitedReply(reply));
            return;
        };
        if let Step::Abort(state) = step {
            self.on_abort_reply(now, state, reply);
            return;
        }
        if reply.code.is_preliminary() {
            match step {
                // 120: "ready in nnn minutes"; the 220 follows.
                Step::Greeting => {}
                Step::Transfer => self.on_transfer_started(now),
                _ => self.fail(SessionError::UnexpectedReply {
                    reply,
                    to: step.verb(),
                }),
            }
            return;
        }
        self.awaiting = None;
        self.reply_deadline = None;
        match step {
            Step::Greeting => self.on_greeting(now, reply),
            Step::Auth { ssl } => self.on_auth(now, ssl, reply),
            Step::Quit => self.close_after_quit(Some(reply)),
            Step::Transfer => self.on_transfer_reply(now, reply),
            _ => self.on_op_reply(now, step, reply),
        }
    }

    pub(super) fn on_greeting(&mut self, now: Instant, reply: Reply) {
        if reply.code.get() != 220 {
            self.fail(SessionError::GreetingRefused(reply));
            return;
        }
        match self.config.security {
            Security::Explicit { .. } => {
                self.greeting = Some(reply);
                self.phase = Phase::Auth;
                self.send(
                    now,
                    &Command::Auth(AuthMechanism::Tls),
                    Step::Auth { ssl: false },
                );
            }
            Security::Implicit | Security::Plain => {
                self.phase = Phase::Ready;
                let tls = self.tls_info();
                self.events.push_back(Event::Connected {
                    greeting: reply,
                    tls,
                });
                self.pump(now);
            }
        }
    }

    pub(super) fn on_auth(&mut self, now: Instant, ssl: bool, reply: Reply) {
        let allow_ssl = matches!(
            self.config.security,
            Security::Explicit {
                allow_auth_ssl: true
            }
        );
        match reply.code.get() {
            // RFC 4217 section 4: 234 and the TLS handshake starts; the bytes after the reply belong to TLS.
            234 => {
                if let Err(e) = self.start_tls() {
                    self.fail(e);
                    return;
                }
                self.phase = Phase::Handshake;
                self.reply_deadline = Some(now + self.config.reply_timeout);
            }
            _ if !ssl && allow_ssl && reply.code.is_negative() => {
                self.send(
                    now,
                    &Command::Auth(AuthMechanism::Ssl),
                    Step::Auth { ssl: true },
                );
            }
            _ => self.fail(SessionError::AuthRefused(reply)),
        }
    }

    pub(super) fn close_after_quit(&mut self, reply: Option<Reply>) {
        self.reply_deadline = None;
        self.awaiting = None;
        self.control.close();
        if let Some(running) = self.current.take() {
            let result = match reply {
                Some(reply) if reply.code.is_completion() => Ok(Output::Done(reply)),
                Some(reply) => Err(OpError::Refused(reply)),
                None => Err(OpError::Session(SessionError::ConnectionClosed)),
            };
            self.complete_op(running.id, result);
        }
        self.phase = Phase::Closed;
        while let Some((id, _)) = self.queue.pop_front() {
            self.complete_op(id, Err(OpError::Session(SessionError::Closed)));
        }
        self.events.push_back(Event::Closed);
    }

    /// Fails the session for good: every pending operation completes with the error.
    pub(super) fn fail(&mut self, error: SessionError) {
        if self.error.is_some() {
            return;
        }
        self.error = Some(error.clone());
        self.phase = Phase::Closed;
        self.awaiting = None;
        self.reply_deadline = None;
        if let Some(running) = self.current.take() {
            self.complete_op(running.id, Err(OpError::Session(error.clone())));
        }
        while let Some((id, _)) = self.queue.pop_front() {
            self.complete_op(id, Err(OpError::Session(error.clone())));
        }
        self.events.push_back(Event::Failed(error));
    }

    pub(super) fn complete_op(&mut self, op: OpId, result: Result<Output, OpError>) {
        self.events.push_back(Event::Completed { op, result });
    }

    /// RFC 4217 section 12.3: after 200 to `CCC` both ends close TLS and the control connection goes on in the
    /// clear. The session sends its close_notify at once and keeps reading TLS records until the server's
    /// close_notify; commands wait until then.
    pub(super) fn clear_command_channel(&mut self, now: Instant) {
        if self.control.is_tls() {
            self.control.begin_clear();
            self.reply_deadline = Some(now + self.config.reply_timeout);
        }
    }
}
