//! The one seam between the engine and rustls.
//!
//! Everything the engine does with TLS goes through [`TlsConn`], a thin wrapper over the rustls 0.23 buffered
//! API (`read_tls`, `process_new_packets`, `reader`, `writer`, `write_tls`, `send_close_notify`). Only config types
//! (`Arc<rustls::ServerConfig>`, `Arc<rustls::ClientConfig>`) cross the crate's public API, so a later rustls API
//! change touches this module alone.
//!
//! - [`binding`]: the per-session configs that bind data-connection TLS to its control session;
//! - [`tickets`]: the per-session ticket keys behind that binding;
//! - [`provider`]: the crypto provider the frontends build their configs from;
//! - [`record`]: TLS record framing, for feeding rustls one record at a time around `CCC`;
//! - [`unverified`]: the one verifier that accepts any server certificate, and the site-to-site config.

mod binding;
mod provider;
mod record;
mod tickets;
mod unverified;

use std::io::{self, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;

#[cfg(test)]
pub(crate) use binding::session_bound_config;
pub(crate) use binding::{connection_bound_client_config, ConnectionTickets, SessionTls};
pub use provider::provider;
pub(crate) use record::{first_tls_record, starts_handshake_or_alert};
pub(crate) use tickets::{BindingState, ConnectionBinding};
pub use tickets::{ResumptionScope, SessionKeyring};
pub use unverified::{site_to_site_client_config, AcceptAnyServerCert};

/// What a finished handshake negotiated, for events and transfer reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// Negotiated protocol version, e.g. `TLSv1_3`.
    pub version: rustls::ProtocolVersion,
    /// Negotiated cipher suite.
    pub cipher_suite: rustls::CipherSuite,
    /// Whether the handshake resumed an earlier session (abbreviated handshake).
    pub resumed: bool,
}

/// How reading plaintext ended, when it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadState {
    /// More plaintext may come.
    Open,
    /// The peer sent close_notify: a clean end of the stream.
    CleanClose,
    /// The transport ended without close_notify: possibly a truncation.
    Truncated,
}

/// A TLS connection in either role, driven with bytes in and bytes out.
pub(crate) struct TlsConn {
    conn: rustls::Connection,
    /// The transport ended (`handle_eof`): no more ciphertext will come.
    transport_eof: bool,
    /// The peer's close_notify was processed (rustls `IoState::peer_has_closed`).
    peer_closed: bool,
    /// Set by [`TlsConn::refuse`]: rustls' queued output is never sent; only `refusal` (once).
    refused: bool,
    refusal: Option<[u8; 7]>,
}

/// How far the handshake got in deciding between a full and a resumed handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeDecision {
    /// Not known yet (no ClientHello/ServerHello processed, or only a HelloRetryRequest so far).
    Undecided,
    /// A full handshake: no earlier session was resumed.
    Full,
    /// An abbreviated handshake resuming an earlier session.
    Resumed,
}

impl TlsConn {
    /// A server-side connection that will accept the client's handshake.
    pub(crate) fn server(config: Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: rustls::ServerConnection::new(config)?.into(),
            transport_eof: false,
            peer_closed: false,
            refused: false,
            refusal: None,
        })
    }

    /// A client-side connection; its first flight is ready in [`TlsConn::write_tls_into`] at once.
    pub(crate) fn client(
        config: Arc<rustls::ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: rustls::ClientConnection::new(config, server_name)?.into(),
            transport_eof: false,
            peer_closed: false,
            refused: false,
            refusal: None,
        })
    }

    /// Bounds the plaintext buffered for sending (and so the ciphertext queued after encryption).
    pub(crate) fn set_send_buffer_limit(&mut self, limit: Option<usize>) {
        self.conn.set_buffer_limit(limit);
    }

    /// Feeds ciphertext from the transport and processes it.
    ///
    /// Returns how many bytes were taken: fewer than `input.len()` when rustls' received-plaintext buffer is full
    /// (the caller must first read plaintext out, then offer the rest again) or after the peer's close_notify
    /// (nothing after it is read). A fatal TLS error is returned; the alert that tells the peer is then queued for
    /// [`TlsConn::write_tls_into`].
    pub(crate) fn read_tls(&mut self, mut input: &[u8]) -> Result<usize, rustls::Error> {
        let total = input.len();
        if self.refused {
            return Ok(total);
        }
        // Not `wants_read()`: it also says no while handshake output is queued, which would make progress depend
        // on the order the caller drains things. rustls' own `read_tls` enforces the plaintext bound.
        while !input.is_empty() {
            match self.conn.read_tls(&mut input) {
                // Only after close_notify (rustls reads nothing more) or a record buffer with no room.
                Ok(0) => break,
                Ok(_) => {
                    let state = self.conn.process_new_packets()?;
                    self.peer_closed |= state.peer_has_closed();
                }
                // rustls refuses more input while its plaintext buffer is full: backpressure, not an error.
                Err(e) if e.kind() == io::ErrorKind::Other => break,
                // The record buffer overflowed (an oversized handshake message): the peer's fault, and fatal.
                Err(e) => return Err(rustls::Error::General(e.to_string())),
            }
        }
        Ok(total - input.len())
    }

    /// Tells TLS that the transport delivered EOF: no more ciphertext will come.
    pub(crate) fn handle_eof(&mut self) -> Result<(), rustls::Error> {
        if !self.transport_eof {
            self.transport_eof = true;
            let mut empty: &[u8] = &[];
            // Best effort: reading 0 bytes is how rustls learns of EOF, but it refuses while its plaintext buffer
            // is full. `read_state` relies on our own flag, so a refusal here changes nothing.
            let _ = self.conn.read_tls(&mut empty);
        }
        Ok(())
    }

    /// Whether the transport has delivered EOF.
    pub(crate) fn transport_eof(&self) -> bool {
        self.transport_eof
    }

    /// Whether the peer's close_notify has been processed (plaintext before it may still be buffered).
    pub(crate) fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Borrows the next run of received plaintext, without copying. Empty when none is buffered.
    pub(crate) fn plaintext_chunk(&mut self) -> &[u8] {
        self.conn.reader().into_first_chunk().unwrap_or(&[])
    }

    /// Marks `n` bytes of the chunk from [`TlsConn::plaintext_chunk`] as used.
    /// `n` is clamped to the chunk's length (rustls asserts on more).
    pub(crate) fn consume_plaintext(&mut self, n: usize) -> usize {
        let n = n.min(self.plaintext_chunk().len());
        io::BufRead::consume(&mut self.conn.reader(), n);
        n
    }

    /// How the plaintext stream stands: `Open` while plaintext is buffered or more may come.
    pub(crate) fn read_state(&mut self) -> ReadState {
        if !self.plaintext_chunk().is_empty() {
            ReadState::Open
        } else if self.peer_closed {
            ReadState::CleanClose
        } else if self.transport_eof {
            ReadState::Truncated
        } else {
            ReadState::Open
        }
    }

    /// Queues plaintext for sending, up to the send buffer limit. Returns how many bytes were taken.
    pub(crate) fn write_plaintext(&mut self, data: &[u8]) -> usize {
        self.conn.writer().write(data).unwrap_or(0)
    }

    /// Queues a close_notify alert; no plaintext can be written after it.
    pub(crate) fn send_close_notify(&mut self) {
        self.conn.send_close_notify();
    }

    /// Abandons the handshake: from now on only a fatal `access_denied` alert is sent (once), never what rustls
    /// queued (e.g. the ServerHello flight), and input is discarded.
    ///
    /// Only valid before this end has sent any encrypted record, i.e. for a server as soon as the ClientHello is
    /// processed: a plaintext alert record is then what RFC 8446 §6 / RFC 5246 §7.2 expect.
    pub(crate) fn refuse(&mut self) {
        if !self.refused {
            self.refused = true;
            // Record header (alert, legacy version 3.3, length 2), then level fatal (2), access_denied (49).
            self.refusal = Some([21, 3, 3, 0, 2, 2, 49]);
        }
    }

    /// Whether ciphertext is waiting for [`TlsConn::write_tls_into`].
    pub(crate) fn wants_write(&self) -> bool {
        if self.refused {
            return self.refusal.is_some();
        }
        self.conn.wants_write()
    }

    /// Appends all pending ciphertext to `out`. Returns the number of bytes appended.
    pub(crate) fn write_tls_into(&mut self, out: &mut Vec<u8>) -> usize {
        if self.refused {
            return match self.refusal.take() {
                Some(alert) => {
                    out.extend_from_slice(&alert);
                    alert.len()
                }
                None => 0,
            };
        }
        let mut n = 0;
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k,
            }
        }
        n
    }

    /// Whether the handshake is still in progress.
    pub(crate) fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether the handshake is (or will be) full or resumed, as soon as rustls has decided.
    pub(crate) fn handshake_decision(&self) -> HandshakeDecision {
        match self.conn.handshake_kind() {
            Some(rustls::HandshakeKind::Resumed) => HandshakeDecision::Resumed,
            Some(rustls::HandshakeKind::Full) => HandshakeDecision::Full,
            // After a HelloRetryRequest the second ClientHello may still resume.
            Some(_) if self.conn.is_handshaking() => HandshakeDecision::Undecided,
            Some(_) => HandshakeDecision::Full,
            None => HandshakeDecision::Undecided,
        }
    }

    /// What the handshake negotiated, once it has finished.
    pub(crate) fn info(&self) -> Option<TlsInfo> {
        if self.conn.is_handshaking() {
            return None;
        }
        Some(TlsInfo {
            version: self.conn.protocol_version()?,
            cipher_suite: self.conn.negotiated_cipher_suite()?.suite(),
            resumed: self.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        })
    }

    /// The peer's certificate chain, when it sent one.
    pub(crate) fn peer_certificates(
        &self,
    ) -> Option<&[rustls::pki_types::CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }
}
