//! Data-connection TLS bound to its control session (DESIGN.md, "Data-channel TLS is bound to its control
//! session").
//!
//! Server side, each control session derives its own shallow clones of the server's TLS config
//! ([`SessionTls`]): both issue and accept only this session's tickets ([`super::tickets`]), so a data
//! connection whose handshake *resumed* proves it holds a session issued to this control session (or, under
//! [`ResumptionScope::User`], to another live login of the same user from the same address). A fresh handshake
//! on a data connection is then refused by the channel's [`ResumptionPolicy`](crate::data::ResumptionPolicy).
//! TLS 1.2 clients without ticket support resume by session id, from a small cache private to the session.
//!
//! Client side, each control connection gets its own resumption store ([`connection_bound_client_config`]).

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::ServerName;

use rustls::server::StoresServerSessions;

use super::tickets::{ConnectionBinding, ResumptionScope, SessionKeyring, SessionTicketKey};

/// TLS 1.3 tickets sent on the control connection after its handshake.
///
/// Clients that resume every data connection with the control connection's session need one; OpenSSL clients
/// use each once, and the second covers a client that opens its first data connection while it holds the first.
const CONTROL_TICKETS: usize = 2;

/// TLS 1.3 tickets sent on each data connection.
///
/// OpenSSL clients (curl, PHP) use a TLS 1.3 session once: each data connection needs one received since the
/// last. One is enough; clients that reuse tickets (GnuTLS, Go, Python's ftplib) need none.
const DATA_TICKETS: usize = 1;

/// One control session's TLS configs, bound to its ticket key.
pub(crate) struct SessionTls {
    /// The control connection's config.
    pub(crate) control: Arc<rustls::ServerConfig>,
    /// The template of the data connections' configs: the same ticket key and session-id cache, fewer tickets.
    data: rustls::ServerConfig,
    key: SessionTicketKey,
    scope: ResumptionScope,
}

impl SessionTls {
    /// The configs of a new control session, its key registered in `keyring`. `None` only when the crypto
    /// provider's random source fails.
    pub(crate) fn new(
        base: &Arc<rustls::ServerConfig>,
        keyring: &SessionKeyring,
        scope: ResumptionScope,
    ) -> Option<Self> {
        let random = base.crypto_provider().secure_random;
        let key = SessionTicketKey::new(keyring, random)?;
        let mut control = (**base).clone();
        // Our suite order, not the client's: curl and PHP (OpenSSL) list AES-256-GCM-SHA384 first, whose key
        // schedule hashes with SHA-384, which has no SHA-NI path; AES-128-GCM-SHA256 does (see
        // `tls::provider`). Measured with curl, 1000 downloads: SHA-512 blocks were 3.7 % of the server's CPU.
        control.ignore_client_order = true;
        control.ticketer = key.control_ticketer(random);
        control.session_storage = Arc::new(SessionIdCache::default());
        control.send_tls13_tickets = CONTROL_TICKETS;
        let mut data = control.clone();
        data.send_tls13_tickets = DATA_TICKETS;
        Some(Self {
            control: Arc::new(control),
            data,
            key,
            scope,
        })
    }

    /// The config of one data connection, and the record of whose ticket its handshake resumes.
    ///
    /// Each connection gets its own shallow clone (a few hundred bytes) so that its ticketer can record which
    /// session's key opened the ticket: [`ConnectionBinding::state`]. `control` is the version the control
    /// connection negotiated, which a client's data connections negotiate too: after TLS 1.2 the data
    /// connections issue no new tickets (see `SessionTicketKey::data_ticketer`); after TLS 1.3 each brings one.
    pub(crate) fn data_connection(
        &self,
        control: Option<rustls::ProtocolVersion>,
    ) -> (Arc<rustls::ServerConfig>, ConnectionBinding) {
        let mut config = self.data.clone();
        let issues = control != Some(rustls::ProtocolVersion::TLSv1_2);
        let (ticketer, binding) =
            self.key
                .data_ticketer(self.scope, config.crypto_provider().secure_random, issues);
        config.ticketer = ticketer;
        (Arc::new(config), binding)
    }

    /// Records the login (`None` after `REIN`): whom this session's tickets vouch for under
    /// [`ResumptionScope::User`].
    pub(crate) fn set_owner(&self, login: Option<(&str, IpAddr)>) {
        self.key.set_owner(login);
    }
}

/// A session-bound control config on its own, for tests that play a control session by hand.
#[cfg(test)]
pub(crate) fn session_bound_config(base: &Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    SessionTls::new(base, &SessionKeyring::default(), ResumptionScope::Session)
        .map(|tls| tls.control)
        .expect("random bytes")
}

/// TLS 1.2 sessions by session id, for clients that do not use tickets: private to one control session.
///
/// Only full handshakes add an entry (a resumed one keeps its session), and data connections that do not resume
/// are refused before the handshake completes, so in practice this holds the control connection's session.
#[derive(Debug, Default)]
struct SessionIdCache {
    entries: Mutex<VecDeque<(Vec<u8>, Vec<u8>)>>,
}

impl SessionIdCache {
    const CAPACITY: usize = 16;
}

impl StoresServerSessions for SessionIdCache {
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

    /// Only rustls' stateful TLS 1.3 tickets are taken, and this config issues stateless ones.
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key)
    }

    fn can_cache(&self) -> bool {
        true
    }
}

/// A per-control-connection clone of the client's TLS config with its own resumption store.
///
/// The client's data connections use this config, so they can resume the session of *this* control connection
/// (which a server with a session-bound policy requires), and tickets are never shared between connections. The
/// store is rustls' in-memory one, counted ([`ConnectionTickets`]); TLS 1.2 resumption uses session ids or tickets
/// (rustls' default).
pub(crate) fn connection_bound_client_config(
    base: &Arc<rustls::ClientConfig>,
) -> (Arc<rustls::ClientConfig>, Arc<ConnectionTickets>) {
    let mut config = (**base).clone();
    let tickets = Arc::new(ConnectionTickets {
        store: rustls::client::ClientSessionMemoryCache::new(CLIENT_SESSIONS),
        tls13: AtomicUsize::new(0),
    });
    config.resumption = rustls::client::Resumption::store(tickets.clone());
    (Arc::new(config), tickets)
}

/// One control connection's client-side resumption store, which knows how many unused TLS 1.3 tickets it holds.
///
/// rustls offers each TLS 1.3 ticket once (RFC 8446 appendix C.4) and cannot re-offer one, while OpenSSL clients
/// re-offer the control connection's session on every data connection. A server that accepts only its control
/// session on data connections and issues no tickets there (ProFTPD's `mod_tls` under TLS 1.3) therefore refuses
/// this client's data connections once the control handshake's tickets are used up. The count lets the session
/// say so ([`OpError::ResumptionExhausted`](crate::client::OpError::ResumptionExhausted)) instead of reporting an
/// unexplained 425.
#[derive(Debug)]
pub(crate) struct ConnectionTickets {
    store: rustls::client::ClientSessionMemoryCache,
    /// Unused TLS 1.3 tickets in `store`: at most rustls' eight per server, as the store keeps no more.
    tls13: AtomicUsize,
}

/// The TLS 1.3 tickets rustls' memory store keeps per server (the oldest are dropped beyond).
const TLS13_TICKETS_KEPT: usize = 8;

impl ConnectionTickets {
    /// Whether a TLS 1.3 ticket is left for the next connection's ClientHello.
    pub(crate) fn has_tls13_ticket(&self) -> bool {
        self.tls13.load(Ordering::Relaxed) > 0
    }
}

impl rustls::client::ClientSessionStore for ConnectionTickets {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: rustls::NamedGroup) {
        self.store.set_kx_hint(server_name, group);
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<rustls::NamedGroup> {
        self.store.kx_hint(server_name)
    }

    fn set_tls12_session(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls12ClientSessionValue,
    ) {
        self.store.set_tls12_session(server_name, value);
    }

    fn tls12_session(
        &self,
        server_name: &ServerName<'_>,
    ) -> Option<rustls::client::Tls12ClientSessionValue> {
        self.store.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.store.remove_tls12_session(server_name);
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: rustls::client::Tls13ClientSessionValue,
    ) {
        self.store.insert_tls13_ticket(server_name, value);
        let _ = self
            .tls13
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some((n + 1).min(TLS13_TICKETS_KEPT))
            });
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<rustls::client::Tls13ClientSessionValue> {
        let ticket = self.store.take_tls13_ticket(server_name);
        if ticket.is_some() {
            let _ = self
                .tls13
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
        }
        ticket
    }
}

/// Server names one control connection's store remembers: a control connection talks to one server, so a few.
const CLIENT_SESSIONS: usize = 8;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::test_support::TestPki;

    /// Every control session holds two clones of the server config (its own and its data connections'): they
    /// must stay shallow, sharing the certificate chain, key and crypto provider with the base rather than
    /// copying them, so an idle session pays for two small structs, its key and its cache, not its certificate.
    #[test]
    fn per_session_configs_share_the_certificate_and_provider() {
        let base = TestPki::new().server_config(rustls::DEFAULT_VERSIONS);
        let keyring = SessionKeyring::default();
        let tls = SessionTls::new(&base, &keyring, ResumptionScope::User).unwrap();
        let (data, _) = tls.data_connection(None);
        for config in [&tls.control, &data] {
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
        // Both session configs share one session-id cache, distinct from the base's.
        assert!(Arc::ptr_eq(
            &tls.control.session_storage,
            &data.session_storage
        ));
        assert!(!Arc::ptr_eq(
            &base.session_storage,
            &tls.control.session_storage
        ));
        assert!(tls.control.ticketer.enabled());
        assert_eq!(keyring.counts(), (1, 0));
        drop((tls, data));
        assert_eq!(keyring.counts(), (0, 0), "a session's key leaves with it");
        // The struct each clone allocates (240 bytes with rustls 0.23.46), plus its small vectors.
        let size = std::mem::size_of::<rustls::ServerConfig>();
        assert!(size <= 1024, "rustls::ServerConfig is {size} bytes");
    }
}
