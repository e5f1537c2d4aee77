//! The one seam between the engine and rustls.
//!
//! Everything the engine does with TLS goes through [`TlsConn`], a thin wrapper over the rustls 0.23 buffered
//! API (`read_tls`, `process_new_packets`, `reader`, `writer`, `write_tls`, `send_close_notify`). Only config types
//! (`Arc<rustls::ServerConfig>`, `Arc<rustls::ClientConfig>`) cross the crate's public API, so a later rustls API
//! change touches this file alone.

use std::io::{self, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::server::StoresServerSessions;

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

/// A per-control-session clone of the server's TLS config whose resumption state is private to that session.
///
/// Data connections of the session use this config, so a resumed data handshake
/// (`handshake_kind() == Resumed`) can only come from a session issued on *this* control connection: this works
/// for TLS 1.2 (session ids) and 1.3 (stateful tickets) alike, unlike `set_resumption_data`, which rustls carries
/// for TLS 1.3 only. Tickets stay valid for the whole control session, so a client never runs out of them.
pub(crate) fn session_bound_config(base: &Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    let mut config = (**base).clone();
    config.session_storage = Arc::new(PrivateSessionCache::default());
    // Stateless tickets would be accepted by every session sharing the ticketer: disable them, so TLS 1.3 uses
    // stateful tickets kept in the private cache.
    config.ticketer = Arc::new(NoTickets);
    config.send_tls13_tickets = config.send_tls13_tickets.max(2);
    Arc::new(config)
}

/// The data connections' config of a control session: the same private session cache, and fresh TLS 1.3
/// tickets on every data connection.
///
/// OpenSSL clients (curl, Python) treat a TLS 1.3 session as single-use: after resuming with it they mark it
/// non-resumable, so the next data connection can only resume with a ticket received since. They pick tickets up
/// from downloads, and from uploads when the ticket arrives before their one read before closing (curl). Tickets
/// also stay valid for the whole control session (see `PrivateSessionCache::take`) for clients that reuse them.
pub(crate) fn data_connection_config(
    control: &Arc<rustls::ServerConfig>,
) -> Arc<rustls::ServerConfig> {
    let mut config = (**control).clone();
    config.send_tls13_tickets = DATA_TICKETS;
    Arc::new(config)
}

/// TLS 1.3 tickets sent on each data connection.
const DATA_TICKETS: usize = 2;

/// A small bounded session store owned by one control session.
#[derive(Debug, Default)]
struct PrivateSessionCache {
    entries: std::sync::Mutex<std::collections::VecDeque<(Vec<u8>, Vec<u8>)>>,
}

impl PrivateSessionCache {
    /// Two tickets per data connection, kept for the last few dozen connections; old ones fall out first.
    const CAPACITY: usize = 64;
}

impl StoresServerSessions for PrivateSessionCache {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        entries.retain(|(k, _)| *k != key);
        if entries.len() == Self::CAPACITY {
            entries.pop_front();
        }
        entries.push_back((key, value));
        true
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        let entries = self.entries.lock().ok()?;
        entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }

    /// rustls takes TLS 1.3 tickets as single-use; here they stay valid for the whole control session.
    ///
    /// FTP clients such as curl resume every data connection with the ticket of the control connection and
    /// never read the fresh tickets sent on short upload connections, so single-use tickets make the Nth
    /// upload fail (vsftpd's `522 session reuse required` after a few uploads with TLS 1.3). Reuse within one
    /// control session keeps the binding intact: only this session's client holds these tickets, and without
    /// early data (never enabled here) resumption is not replayable (RFC 8446 section 8 concerns 0-RTT).
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// A ticketer that never issues stateless tickets, so TLS 1.3 resumption goes through the private cache.
#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }
    fn lifetime(&self) -> u32 {
        0
    }
    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }
    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// A per-control-connection clone of the client's TLS config with its own resumption store.
///
/// The client's data connections use this config, so they can resume the session of *this* control connection
/// (which a server with a session-bound policy requires), and tickets are never shared between connections. The
/// store is rustls' in-memory one; TLS 1.2 resumption uses session ids or tickets (rustls' default).
pub(crate) fn connection_bound_client_config(
    base: &Arc<rustls::ClientConfig>,
) -> Arc<rustls::ClientConfig> {
    let mut config = (**base).clone();
    config.resumption = rustls::client::Resumption::in_memory_sessions(CLIENT_SESSIONS);
    Arc::new(config)
}

/// Server names one control connection's store remembers: a control connection talks to one server, so a few.
const CLIENT_SESSIONS: usize = 8;

/// The crypto provider both frontends build their TLS configs from: rustls' `ring` provider with the AES-128-GCM
/// suites ahead of AES-256-GCM.
///
/// rustls lists AES-256-GCM first. AES-128-GCM is as strong as anything a peer could attack today, takes four
/// fewer AES rounds per block, and its TLS 1.3 suite hashes with SHA-256, which x86 CPUs run in hardware (SHA-NI)
/// while SHA-384 runs in software: that is most of the cost of a resumed data-channel handshake's key schedule.
/// Go and BoringSSL order them the same way. The set of suites is unchanged, only the preference.
///
/// ```
/// let provider = ftps_proto::tls_provider();
/// assert_eq!(
///     provider.cipher_suites[0].suite(),
///     rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
/// );
/// ```
#[must_use]
pub fn provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort keeps rustls' order otherwise (TLS 1.3 before 1.2, ECDSA before RSA, ChaCha20 last).
    provider.cipher_suites.sort_by_key(|suite| {
        let tls12 = matches!(suite, rustls::SupportedCipherSuite::Tls12(_));
        (tls12, !is_aes128_gcm(suite.suite()))
    });
    provider
}

fn is_aes128_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as Cs;
    matches!(
        suite,
        Cs::TLS13_AES_128_GCM_SHA256
            | Cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | Cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestPki;

    /// Every control session holds two clones of the server config (its own and its data connections'): they
    /// must stay shallow, sharing the certificate chain, key and crypto provider with the base rather than
    /// copying them, so an idle session pays for two small structs and its private cache, not for its certificate.
    #[test]
    fn per_session_configs_share_the_certificate_and_provider() {
        let base = TestPki::new().server_config(rustls::DEFAULT_VERSIONS);
        let control = session_bound_config(&base);
        let data = data_connection_config(&control);
        for config in [&control, &data] {
            assert!(Arc::ptr_eq(&base.cert_resolver, &config.cert_resolver));
            assert!(Arc::ptr_eq(
                base.crypto_provider(),
                config.crypto_provider()
            ));
            assert!(Arc::ptr_eq(
                &base.cert_compression_cache,
                &config.cert_compression_cache
            ));
        }
        // Both session configs share one private cache, distinct from the base's.
        assert!(Arc::ptr_eq(&control.session_storage, &data.session_storage));
        assert!(!Arc::ptr_eq(
            &base.session_storage,
            &control.session_storage
        ));
        // The struct each clone allocates (240 bytes with rustls 0.23.46), plus its small vectors.
        let size = std::mem::size_of::<rustls::ServerConfig>();
        assert!(size <= 1024, "rustls::ServerConfig is {size} bytes");
        println!("rustls::ServerConfig: {size} bytes");
    }

    #[test]
    fn the_provider_prefers_aes128_gcm_and_keeps_every_suite() {
        use rustls::CipherSuite as Cs;
        let ours: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let ring: Vec<_> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut sorted = (ours.clone(), ring);
        sorted.0.sort_by_key(|s| u16::from(*s));
        sorted.1.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted.0, sorted.1, "same suites, only reordered");
        let tls13: Vec<_> = ours
            .iter()
            .take_while(|s| format!("{s:?}").starts_with("TLS13"))
            .collect();
        assert_eq!(tls13[0], &Cs::TLS13_AES_128_GCM_SHA256);
        assert_eq!(
            tls13.len(),
            3,
            "TLS 1.3 suites stay ahead of TLS 1.2: {ours:?}"
        );
        let tls12 = &ours[tls13.len()..];
        assert_eq!(tls12[0], Cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
        assert_eq!(tls12[1], Cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256);
    }
}
