//! Transfers: the data connection's requests and their answers, the data channel, the transfer command's replies
//! and settling an `ABOR`.

use std::net::SocketAddr;
use std::time::Instant;

use crate::codec::{Command, Reply, Timeval};
use crate::data::{
    DataChannel, DataError, DataFlow, DataOptions, DataProtection, DataReport, DataTls,
};

use super::{
    AbortState, ClientSession, DataConnectError, Direction, Event, OpError, OpId, Operation,
    Output, Payload, ReqId, Request, RequestKind, SessionError, Step, Trace, TransferReport,
    MAX_ABORT_REPLIES,
};

impl ClientSession {
    /// Active mode: the frontend listens for the current transfer's data connection on `addr`.
    pub(super) fn listening(&mut self, now: Instant, addr: SocketAddr) {
        if self.error.is_some() || self.awaiting.is_some() {
            return;
        }
        let Some(running) = self.current.as_mut().filter(|r| r.transfer.awaiting_listen) else {
            return;
        };
        running.transfer.awaiting_listen = false;
        self.data_addr = Some(addr);
        self.advance(now);
    }

    /// The current transfer's data channel finished or failed.
    pub(super) fn data_finished(&mut self, now: Instant, result: Result<DataReport, DataError>) {
        let Some(running) = self.current.as_mut().filter(|r| r.op.is_transfer()) else {
            return;
        };
        if running.transfer.data_ended() {
            return;
        }
        if self.config.trace {
            if let Ok(report) = &result {
                self.events.push_back(Event::Trace(Trace::DataConnection {
                    tls: report.tls.clone(),
                    bytes: report.bytes_received + report.bytes_sent,
                }));
            }
        }
        running.transfer.data = Some(result);
        if running.transfer.abort_requested {
            return;
        }
        if running.transfer.final_reply.is_some() {
            self.complete_transfer(now);
        } else if self.awaiting == Some(Step::Transfer) {
            // The data side is done: the final reply is due now.
            self.reply_deadline = Some(now + self.config.reply_timeout);
        }
    }

    /// The frontend could not set up the current transfer's data connection. A connect failure is not a TLS
    /// failure: the operation completes with [`OpError::DataConnect`]. The transfer command, when it is out, is
    /// aborted (`ABOR`, so the server stops waiting for the connection); the session goes on.
    pub(super) fn data_connect_failed(&mut self, now: Instant, error: DataConnectError) {
        let Some(running) = self.current.as_mut().filter(|r| r.op.is_transfer()) else {
            return;
        };
        if running.transfer.data_ended() {
            return;
        }
        running.transfer.connect_failure = Some(error);
        if running.transfer.awaiting_listen {
            // Nothing is on the wire for this transfer yet.
            running.transfer.awaiting_listen = false;
            self.finish_aborted();
            self.pump(now);
            return;
        }
        let op = running.id;
        self.abort(now, op);
    }

    /// Queues a request for the frontend.
    pub(super) fn request(&mut self, op: OpId, kind: RequestKind) -> ReqId {
        let id = ReqId(self.next_request);
        self.next_request += 1;
        self.requests.push_back(Request { id, op, kind });
        id
    }

    pub(super) fn open_data_connection(&mut self, addr: SocketAddr) {
        self.data_addr = Some(addr);
        let Some(op) = self.current.as_ref().map(|r| r.id) else {
            return;
        };
        let id = self.request(op, RequestKind::ConnectData { addr });
        if let Some(running) = self.current.as_mut() {
            running.transfer.setup_request = Some(id);
        }
    }

    /// 1xx to the transfer command: hand the frontend its data channel once the connection is set up.
    pub(super) fn on_transfer_started(&mut self, now: Instant) {
        let Some(running) = self.current.as_mut() else {
            return;
        };
        if running.transfer.preliminary {
            // A second 1xx (e.g. 125 after 150) changes nothing.
            return;
        }
        running.transfer.preliminary = true;
        if matches!(running.op, Operation::SiteToSiteTransfer(_)) {
            // The data connection runs between two servers: nothing to hand out, and no deadline while they
            // copy (the final reply comes when they are done).
            self.reply_deadline = None;
            return;
        }
        if running.transfer.setup_request.is_some() {
            // Still connecting: the channel goes out with the answer.
            return;
        }
        self.drive_data(now);
    }

    /// Hands the frontend the current transfer's data channel ([`RequestKind::DriveData`]), its handshake timed
    /// from `now`.
    pub(super) fn drive_data(&mut self, now: Instant) {
        let Some(running) = self.current.as_ref() else {
            return;
        };
        let op = running.id;
        let direction = if running.op.is_upload() {
            Direction::Upload
        } else {
            Direction::Download
        };
        let payload = match running.op {
            Operation::List(_) | Operation::NameList(_) => Payload::Listing {
                max_bytes: self.config.max_listing_bytes,
            },
            _ => Payload::File,
        };
        if running.transfer.data_ended() || running.transfer.drive_request.is_some() {
            // The data connection already failed (keep waiting for the final reply), or is handed out.
            return;
        }
        // The transfer may run for a long time: no reply deadline until the data side finishes.
        self.reply_deadline = None;
        // rustls takes the ticket when the channel's ClientHello is built: look before.
        let without_ticket = self.data_private
            && self
                .tls_info()
                .is_some_and(|tls| tls.version == rustls::ProtocolVersion::TLSv1_3)
            && self.tickets.as_ref().is_some_and(|t| !t.has_tls13_ticket());
        if let Some(running) = self.current.as_mut() {
            running.transfer.without_ticket = without_ticket;
        }
        let channel = match self.data_channel(now, direction) {
            Ok(channel) => channel,
            Err(e) => {
                if let Some(running) = self.current.as_mut() {
                    running.transfer.data = Some(Err(e));
                }
                self.reply_deadline = Some(now + self.config.reply_timeout);
                return;
            }
        };
        let kind = RequestKind::DriveData {
            channel: Box::new(channel),
            direction,
            payload,
        };
        let id = self.request(op, kind);
        if let Some(running) = self.current.as_mut() {
            running.transfer.drive_request = Some(id);
        }
    }

    /// A data channel for the current transfer, its handshake timed from `now` (the 1xx reply). TLS client role
    /// (RFC 4217 section 10) with this session's private resumption store, so it resumes the control session.
    pub(super) fn data_channel(
        &self,
        now: Instant,
        direction: Direction,
    ) -> Result<DataChannel, DataError> {
        let protection = match (&self.tls_config, self.data_private) {
            (Some(config), true) => DataProtection::Tls(DataTls::Client {
                config: config.clone(),
                server_name: self.server_name.clone(),
            }),
            _ => DataProtection::Clear,
        };
        let options = DataOptions {
            flow: match direction {
                Direction::Upload => DataFlow::Send,
                Direction::Download => DataFlow::Receive,
            },
            handshake_timeout: self.config.data_handshake_timeout,
            ..DataOptions::default()
        };
        DataChannel::new(now, protection, options)
    }

    /// The final reply to the transfer command.
    pub(super) fn on_transfer_reply(&mut self, now: Instant, reply: Reply) {
        let Some(running) = self.current.as_mut() else {
            self.events.push_back(Event::UnsolicitedReply(reply));
            return;
        };
        if !reply.code.is_completion() {
            // 425/426/450/451/5xx: the transfer failed; the frontend drops the data channel.
            if running.transfer.without_ticket {
                self.finish_op(Err(OpError::ResumptionExhausted(reply)));
                self.pump(now);
                return;
            }
            return self.refuse(now, reply);
        }
        if matches!(running.op, Operation::SiteToSiteTransfer(_)) {
            self.finish_op(Ok(Output::Done(reply)));
            self.pump(now);
            return;
        }
        let preliminary = running.transfer.preliminary;
        running.transfer.final_reply = Some(reply);
        if !preliminary || running.transfer.data_ended() {
            // 226 without 150 (an empty listing, some servers): no data channel was handed out.
            self.complete_transfer(now);
        }
    }

    /// Both the final reply and the data report are in (or no data connection was used).
    pub(super) fn complete_transfer(&mut self, now: Instant) {
        let require_close_notify = self.config.require_close_notify && self.data_private;
        let Some(mut running) = self.current.take() else {
            return;
        };
        self.data_addr = None;
        let t = &mut running.transfer;
        let Some(reply) = t.final_reply.take() else {
            self.current = Some(running);
            return;
        };
        if let Some(e) = t.connect_failure.take() {
            self.complete_op(running.id, Err(OpError::DataConnect(e)));
            self.pump(now);
            return;
        }
        let report = match t.data.take() {
            Some(Ok(report)) => report,
            Some(Err(e)) => {
                self.complete_op(running.id, Err(OpError::Data(e)));
                self.pump(now);
                return;
            }
            None => DataReport::default(),
        };
        let download = !running.op.is_upload();
        let clean_close = report.clean_close || !t.preliminary;
        let result = if download && t.preliminary && require_close_notify && !report.clean_close {
            Err(OpError::Truncated)
        } else if t.listing_overflow {
            Err(OpError::ListingTooLarge)
        } else {
            match &running.op {
                Operation::List(_) => Ok(Output::Listing(parse_listing(
                    &t.listing,
                    t.used_list,
                    self.today,
                ))),
                Operation::NameList(_) => Ok(Output::Names(parse_names(&t.listing))),
                _ => Ok(Output::Transfer(TransferReport {
                    bytes: if download {
                        report.bytes_received
                    } else {
                        report.bytes_sent
                    },
                    resumed: report.tls.as_ref().is_some_and(|tls| tls.resumed),
                    clean_close,
                    tls: report.tls.clone(),
                    reply,
                })),
            }
        };
        self.complete_op(running.id, result);
        self.pump(now);
    }

    /// Replies while settling an `ABOR`.
    pub(super) fn on_abort_reply(&mut self, now: Instant, state: AbortState, reply: Reply) {
        let code = reply.code.get();
        if reply.code.is_preliminary() {
            // A late 150 for the aborted transfer: the final reply still follows.
            return;
        }
        let absorbed = match self.current.as_mut() {
            Some(running) => {
                running.transfer.abort_replies = running.transfer.abort_replies.saturating_add(1);
                running.transfer.abort_replies
            }
            None => MAX_ABORT_REPLIES,
        };
        if absorbed > MAX_ABORT_REPLIES {
            self.fail(SessionError::AbortUnresolved);
            return;
        }
        let next = match state {
            AbortState::AwaitTransferReply if reply.code.is_negative() => {
                Some(AbortState::AwaitAborReply)
            }
            // 226/225 alone: either the transfer's reply (ABOR's follows) or ABOR's only reply. Fence it.
            AbortState::AwaitTransferReply => Some(AbortState::Fence),
            AbortState::AwaitAborReply => None,
            AbortState::Fence if code == 200 => None,
            AbortState::Fence => Some(AbortState::Fence),
        };
        match next {
            Some(AbortState::Fence) if state != AbortState::Fence => {
                self.send(now, &Command::Noop, Step::Abort(AbortState::Fence));
                self.reply_deadline = Some(now + self.config.abort_timeout);
            }
            Some(next) => self.awaiting = Some(Step::Abort(next)),
            None => {
                self.awaiting = None;
                self.reply_deadline = None;
                self.finish_aborted();
                self.pump(now);
            }
        }
    }
}

pub(super) fn parse_listing(
    bytes: &[u8],
    list_format: bool,
    today: Timeval,
) -> Vec<crate::codec::Entry> {
    let text = String::from_utf8_lossy(bytes);
    if list_format {
        crate::codec::parse_list(&text, today)
    } else {
        crate::codec::parse_mlsd(&text)
    }
}

pub(super) fn parse_names(bytes: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}
