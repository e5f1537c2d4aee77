//! The control connection's transport, shared by [`ServerSession`](crate::server::ServerSession) and
//! [`ClientSession`](crate::client::ClientSession): plain, then TLS (`AUTH TLS`, RFC 4217 section 4, or implicit
//! from the first byte), then plain again after `CCC` (RFC 4217 section 6 and 12.3).
//!
//! It owns the bytes received and not yet decoded, the bytes queued for the socket and the TLS connection, and
//! turns received bytes into frames (command lines or replies) through the caller's framer. Protocol decisions
//! (which reply to send, when a closed stream is an error, when `CCC` is accepted) stay in the sessions: this type
//! only reports what happened on the wire.

use crate::codec::{FrameError, LineFramer, Reply, ReplyError, ReplyParser};
use crate::tls::{first_tls_record, ReadState, TlsConn, TlsInfo};

/// Received bytes held before decoding: a peer that sends faster than the session decodes is pushed back (the
/// caller offers the rest again) rather than buffered without bound.
const MAX_INBOUND: usize = 64 * 1024;

/// Splits decoded plaintext into frames: command lines (server) or replies (client).
pub(crate) trait Framer {
    /// One decoded unit, or why it was refused.
    type Frame;
    /// Consumes bytes up to the end of the next frame; returns how many and the frame when one ended.
    fn frame(&mut self, input: &[u8]) -> (usize, Option<Self::Frame>);
}

impl Framer for LineFramer {
    type Frame = Result<Vec<u8>, FrameError>;
    fn frame(&mut self, input: &[u8]) -> (usize, Option<Self::Frame>) {
        let (n, line) = self.decode(input);
        (n, line.map(|l| l.map(<[u8]>::to_vec)))
    }
}

impl Framer for ReplyParser {
    type Frame = Result<Reply, ReplyError>;
    fn frame(&mut self, input: &[u8]) -> (usize, Option<Self::Frame>) {
        self.decode(input)
    }
}

/// What the transport has for the session, one item at a time (see [`ControlChannel::poll_input`]).
#[derive(Debug)]
pub(crate) enum Received<F> {
    /// A complete frame from the framer.
    Frame(F),
    /// The TLS handshake finished (reported once per TLS connection).
    TlsEstablished(TlsInfo),
    /// After `CCC` both close_notify alerts went by: the connection is plaintext from the next byte on (RFC 4217
    /// section 12.3).
    TlsCleared,
    /// TLS ended outside a `CCC` shutdown: the peer's close_notify, or EOF without it. Reported once; the
    /// session decides what it means.
    TlsEnded,
    /// A fatal TLS error; the alert that tells the peer is queued. Reported once, then nothing more is read.
    TlsFailed(rustls::Error),
}

/// Where a `CCC` shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clearing {
    /// No `CCC` under way.
    Off,
    /// `CCC` is on the wire and unanswered: the reply and the peer's close_notify may share a read with the
    /// cleartext that follows, so TLS gets whole records one at a time from now on.
    Announced,
    /// `CCC` was accepted: our close_notify goes out after the queued plaintext, and the peer's close_notify
    /// returns the connection to plaintext.
    Closing,
}

/// The control connection's bytes in both directions, through TLS when it is up.
pub(crate) struct ControlChannel {
    tls: Option<Box<TlsConn>>,
    /// Received bytes not decoded yet (ciphertext while TLS is up).
    inbound: Vec<u8>,
    /// Bytes for the socket, ready as they are.
    wire_out: Vec<u8>,
    /// Plaintext waiting to be encrypted (TLS takes a bounded amount at a time).
    plain_out: Vec<u8>,
    clearing: Clearing,
    /// What is left to feed of the TLS record being handed to rustls one at a time (around `CCC`).
    record_left: usize,
    /// A close_notify is due once `plain_out` is flushed (`CCC` accepted, or the session closing).
    close_notify_due: bool,
    close_notify_sent: bool,
    tls_reported: bool,
    /// `TlsEnded` or `TlsFailed` was reported: the stream has nothing more to say.
    ended: bool,
}

impl ControlChannel {
    /// A plaintext control connection (TLS starts with [`ControlChannel::start_tls`]).
    pub(crate) fn plain() -> Self {
        Self {
            tls: None,
            inbound: Vec::new(),
            wire_out: Vec::new(),
            plain_out: Vec::new(),
            clearing: Clearing::Off,
            record_left: 0,
            close_notify_due: false,
            close_notify_sent: false,
            tls_reported: false,
            ended: false,
        }
    }

    // ----- getters -----

    /// Whether TLS protects the connection (handshake finished or under way).
    pub(crate) fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// What the TLS handshake negotiated, while TLS is up and once it finished.
    pub(crate) fn tls_info(&self) -> Option<TlsInfo> {
        self.tls.as_ref().and_then(|tls| tls.info())
    }

    /// The peer's TLS certificate chain, when it sent one.
    pub(crate) fn peer_certificates(
        &self,
    ) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.tls.as_ref().and_then(|tls| tls.peer_certificates())
    }

    /// Whether an accepted `CCC` waits for the peer's close_notify.
    pub(crate) fn is_clearing(&self) -> bool {
        self.clearing == Clearing::Closing
    }

    // ----- inputs -----

    /// Takes received bytes into the buffer, up to its bound; returns how many were taken.
    pub(crate) fn handle_input(&mut self, input: &[u8]) -> usize {
        let room = MAX_INBOUND.saturating_sub(self.inbound.len());
        let taken = input.len().min(room);
        self.inbound
            .extend_from_slice(input.get(..taken).unwrap_or_default());
        taken
    }

    /// The transport ended: TLS learns that no more ciphertext will come (plaintext before it still counts).
    pub(crate) fn handle_eof(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            // `handle_eof` only records the fact; an error here would end a stream that ends anyway.
            let _ = tls.handle_eof();
        }
    }

    /// The next thing the received bytes say, or `None` when more input is needed.
    pub(crate) fn poll_input<F: Framer>(&mut self, framer: &mut F) -> Option<Received<F::Frame>> {
        loop {
            let Some(tls) = self.tls.as_mut() else {
                if self.inbound.is_empty() {
                    return None;
                }
                let (n, frame) = framer.frame(&self.inbound);
                self.inbound.drain(..n.min(self.inbound.len()));
                match frame {
                    Some(frame) => return Some(Received::Frame(frame)),
                    None if n == 0 => return None,
                    None => continue,
                }
            };
            if self.ended {
                return None;
            }
            // rustls reads nothing while its handshake output waits: move that output out first.
            tls.write_tls_into(&mut self.wire_out);
            if !self.tls_reported {
                if let Some(info) = tls.info() {
                    self.tls_reported = true;
                    return Some(Received::TlsEstablished(info));
                }
            }
            let chunk = tls.plaintext_chunk();
            if !chunk.is_empty() {
                let (n, frame) = framer.frame(chunk);
                tls.consume_plaintext(n);
                match frame {
                    Some(frame) => return Some(Received::Frame(frame)),
                    None if n == 0 => return None,
                    None => continue,
                }
            }
            // No plaintext buffered: feed TLS more ciphertext. Around CCC whole records go in one at a time, so
            // rustls never swallows the cleartext that follows a close_notify in the same read (RFC 4217
            // section 12.3); the rest of a record split across reads waits in `inbound`.
            let input = if self.clearing == Clearing::Off {
                &self.inbound[..]
            } else {
                if self.record_left == 0 {
                    self.record_left = first_tls_record(&self.inbound).len();
                }
                self.inbound.get(..self.record_left).unwrap_or_default()
            };
            let fed = if input.is_empty() {
                0
            } else {
                match tls.read_tls(input) {
                    Ok(n) => n,
                    Err(e) => {
                        self.ended = true;
                        tls.write_tls_into(&mut self.wire_out);
                        return Some(Received::TlsFailed(e));
                    }
                }
            };
            self.inbound.drain(..fed.min(self.inbound.len()));
            self.record_left = self.record_left.saturating_sub(fed);
            if fed > 0 {
                continue;
            }
            return match tls.read_state() {
                ReadState::Open => None,
                ReadState::CleanClose if self.clearing == Clearing::Closing => {
                    self.clear();
                    Some(Received::TlsCleared)
                }
                ReadState::CleanClose | ReadState::Truncated => {
                    self.ended = true;
                    Some(Received::TlsEnded)
                }
            };
        }
    }

    // ----- mutators -----

    /// TLS starts: every byte received from now on (including those already buffered after the `AUTH` line or
    /// `234` reply, which belong to TLS and never to the parser, RFC 4217 section 4) goes to `tls`.
    pub(crate) fn start_tls(&mut self, tls: TlsConn) {
        self.tls = Some(Box::new(tls));
        self.clearing = Clearing::Off;
        self.record_left = 0;
        self.close_notify_due = false;
        self.close_notify_sent = false;
        self.tls_reported = false;
        self.ended = false;
    }

    /// Queues bytes for the peer (a command line or a reply), through TLS when it is up.
    pub(crate) fn queue(&mut self, bytes: &[u8]) {
        match self.tls {
            Some(_) => self.plain_out.extend_from_slice(bytes),
            None => self.wire_out.extend_from_slice(bytes),
        }
    }

    /// `CCC` went out: from now on TLS gets whole records, since its answer may be followed by cleartext.
    pub(crate) fn announce_clear(&mut self) {
        if self.tls.is_some() && self.clearing == Clearing::Off {
            self.clearing = Clearing::Announced;
        }
    }

    /// `CCC` was refused: TLS stays as it was.
    pub(crate) fn abandon_clear(&mut self) {
        if self.clearing == Clearing::Announced {
            self.clearing = Clearing::Off;
        }
    }

    /// `CCC` was accepted (RFC 4217 section 12.3): our close_notify follows the queued plaintext, and the peer's
    /// close_notify returns the connection to plaintext ([`Received::TlsCleared`]).
    pub(crate) fn begin_clear(&mut self) {
        if self.tls.is_some() {
            self.clearing = Clearing::Closing;
            self.close_notify_due = true;
        }
    }

    /// The session ends: nothing more is read, and TLS says goodbye after the queued plaintext.
    pub(crate) fn close(&mut self) {
        self.inbound.clear();
        self.close_notify_due = true;
    }

    /// Both close_notify alerts went by: plaintext from here on. Our close_notify goes out first if it has not
    /// yet (the peer's may arrive before the caller drained the output); what was queued after it goes out in
    /// the clear.
    fn clear(&mut self) {
        let mut out = Vec::new();
        self.flush_tls(&mut out);
        self.wire_out.append(&mut out);
        self.tls = None;
        self.wire_out.append(&mut self.plain_out);
        self.clearing = Clearing::Off;
        self.record_left = 0;
        self.close_notify_due = false;
    }

    // ----- outputs -----

    /// Appends the bytes for the socket to `out`; returns how many.
    pub(crate) fn poll_transmit(&mut self, out: &mut Vec<u8>) -> usize {
        let before = out.len();
        out.append(&mut self.wire_out);
        self.flush_tls(out);
        out.len() - before
    }

    /// Encrypts the queued plaintext, then the close_notify when one is due, into `out`.
    fn flush_tls(&mut self, out: &mut Vec<u8>) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        loop {
            let mut progressed = false;
            if !self.plain_out.is_empty() && !self.close_notify_sent {
                let n = tls.write_plaintext(&self.plain_out);
                self.plain_out.drain(..n.min(self.plain_out.len()));
                progressed |= n > 0;
            }
            if self.plain_out.is_empty() && self.close_notify_due && !self.close_notify_sent {
                tls.send_close_notify();
                self.close_notify_sent = true;
            }
            progressed |= tls.write_tls_into(out) > 0;
            if !progressed {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_lines_are_framed_one_at_a_time() {
        let mut channel = ControlChannel::plain();
        let mut framer = LineFramer::default();
        assert_eq!(channel.handle_input(b"NOOP\r\nQU"), 8);
        assert!(
            matches!(channel.poll_input(&mut framer), Some(Received::Frame(Ok(l))) if l == b"NOOP")
        );
        assert!(channel.poll_input(&mut framer).is_none());
        channel.handle_input(b"IT\r\n");
        assert!(
            matches!(channel.poll_input(&mut framer), Some(Received::Frame(Ok(l))) if l == b"QUIT")
        );
        channel.queue(b"221 bye\r\n");
        let mut out = Vec::new();
        assert_eq!(channel.poll_transmit(&mut out), 9);
        assert_eq!(out, b"221 bye\r\n");
    }

    #[test]
    fn input_beyond_the_bound_is_pushed_back() {
        let mut channel = ControlChannel::plain();
        let big = vec![b'a'; MAX_INBOUND + 10];
        assert_eq!(channel.handle_input(&big), MAX_INBOUND);
        assert_eq!(channel.handle_input(b"x"), 0);
    }
}
