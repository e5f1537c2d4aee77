//! Session tickets only a control session (or, by choice, its user's other logins) can open.
//!
//! Every control session gets its own random ticket key. Its control connection and its data connections issue
//! stateless tickets sealed with that key (AES-128-GCM), for TLS 1.3 and, unlike rustls' stateful cache, for
//! TLS 1.2 too. A data connection that resumes therefore proves it holds a session this server issued under that
//! key. Being stateless, a ticket stays valid for the whole control session however often it is used: nothing is
//! evicted, so clients that resume every data connection with the control connection's session (GnuTLS/lftp,
//! Python's ftplib) never run out, and Go's TLS 1.2 client, which resumes only with tickets, resumes at all.
//!
//! # Tickets of another session of the same user
//!
//! Go's `crypto/tls` keeps one ticket cache per host for all of a program's connections (rclone's FTP backend
//! shares it between its control connections): a data connection offers whichever connection's ticket arrived
//! last, and after one failed resumption Go drops the cached ticket, so every later data connection of every
//! control connection does a full handshake and is refused. Under [`ResumptionScope::User`] a data connection
//! may therefore resume a ticket of another control session of this server ([`SessionKeyring`]) when that
//! session is, or was when it ended, logged in as the same user from the same address. A ticket of a session that
//! is still logging in (Go caches a new control connection's ticket right after its handshake, before `PASS`) is
//! neither accepted nor refused: the data connection's answer to the ClientHello waits until that login
//! succeeds or fails ([`BindingState::Pending`]). Under [`ResumptionScope::Session`] only the session's own
//! tickets are accepted.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, NONCE_LEN};
use rustls::crypto::SecureRandom;

/// Which earlier TLS sessions a data connection may resume when resumption is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResumptionScope {
    /// Only a session issued on this control connection (its own handshake or one of its data connections).
    Session,
    /// Also a session issued to another control connection of this server that is, or was when it ended, logged
    /// in as the same user from the same IP address (the default). Clients that keep one ticket cache per host
    /// for all their connections (Go's `crypto/tls`, so rclone) offer another connection's ticket; they still
    /// hold a session only this user's logins received.
    #[default]
    User,
}

/// TLS 1.3 allows no longer ticket lifetime (RFC 8446 section 4.6.1); clients stop offering a ticket after it.
/// The key lives as long as its control session, so the lifetime, not the key, bounds a ticket's use.
const TICKET_LIFETIME_SECS: u32 = 7 * 24 * 60 * 60;

/// Ticket layout: key id, nonce, then the sealed session value with its tag.
const KEY_ID_LEN: usize = 8;
const KEY_LEN: usize = 16;

/// Keys of sessions that ended logged in, kept so their tickets still resume their user's other sessions:
/// a shared client cache may hold one long after its connection closed. About 600 bytes each.
const RETIRED_KEYS: usize = 1024;

type KeyId = [u8; KEY_ID_LEN];

/// Who a control session's tickets belong to once it is logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    user: String,
    ip: IpAddr,
}

/// One control session's ticket key.
struct KeyMaterial {
    id: KeyId,
    key: LessSafeKey,
    /// Set at login, cleared at `REIN`: whom this session's tickets vouch for under [`ResumptionScope::User`].
    owner: Mutex<Option<Owner>>,
    /// The session has ended: its owner will not change any more.
    ended: AtomicBool,
}

impl KeyMaterial {
    fn owner(&self) -> Option<Owner> {
        self.owner.lock().ok()?.clone()
    }
}

/// The ticket keys of one server's control sessions, found by key id. Cheap to clone; clones share the keys.
///
/// Every [`SessionConfig`](crate::server::SessionConfig) carries one; sessions built from clones of one config
/// share it, which is what lets [`ResumptionScope::User`] find another session's key. A session's key is
/// registered when its TLS starts and leaves when the session is dropped, unless it was logged in: then it is
/// kept among the most recent 1024 ended logins.
#[derive(Clone, Default)]
pub struct SessionKeyring {
    inner: Arc<Mutex<KeyringInner>>,
}

#[derive(Default)]
struct KeyringInner {
    live: HashMap<KeyId, Weak<KeyMaterial>>,
    retired: HashMap<KeyId, Arc<KeyMaterial>>,
    /// Retirement order, oldest first.
    retired_order: VecDeque<KeyId>,
}

impl fmt::Debug for SessionKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (live, retired) = self.counts();
        f.debug_struct("SessionKeyring")
            .field("live", &live)
            .field("retired", &retired)
            .finish()
    }
}

impl SessionKeyring {
    /// How many keys it holds: of live sessions, and of ended logins kept for their tickets.
    pub fn counts(&self) -> (usize, usize) {
        self.inner
            .lock()
            .map(|k| (k.live.len(), k.retired.len()))
            .unwrap_or((0, 0))
    }

    fn insert(&self, material: &Arc<KeyMaterial>) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.live.insert(material.id, Arc::downgrade(material));
        }
    }

    /// The session of `material` ended: forget its key, or keep it when it was logged in.
    fn retire(&self, material: &Arc<KeyMaterial>) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        inner.live.remove(&material.id);
        if material.owner().is_none() {
            return;
        }
        if inner.retired_order.len() == RETIRED_KEYS {
            if let Some(oldest) = inner.retired_order.pop_front() {
                inner.retired.remove(&oldest);
            }
        }
        inner.retired_order.push_back(material.id);
        inner.retired.insert(material.id, Arc::clone(material));
    }

    fn find(&self, id: &KeyId) -> Option<Arc<KeyMaterial>> {
        let inner = self.inner.lock().ok()?;
        inner
            .live
            .get(id)
            .and_then(Weak::upgrade)
            .or_else(|| inner.retired.get(id).cloned())
    }
}

/// A control session's ticket key, registered in its server's [`SessionKeyring`] until dropped.
pub(crate) struct SessionTicketKey {
    material: Arc<KeyMaterial>,
    keyring: SessionKeyring,
}

impl SessionTicketKey {
    /// A fresh random key, registered in `keyring`. `None` only when the random source fails.
    pub(crate) fn new(keyring: &SessionKeyring, random: &dyn SecureRandom) -> Option<Self> {
        let mut id = [0u8; KEY_ID_LEN];
        let mut key = [0u8; KEY_LEN];
        random.fill(&mut id).ok()?;
        random.fill(&mut key).ok()?;
        let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &key).ok()?);
        let material = Arc::new(KeyMaterial {
            id,
            key,
            owner: Mutex::new(None),
            ended: AtomicBool::new(false),
        });
        keyring.insert(&material);
        Some(Self {
            material,
            keyring: keyring.clone(),
        })
    }

    /// Records who is logged in on the session (`None` after `REIN`).
    pub(crate) fn set_owner(&self, login: Option<(&str, IpAddr)>) {
        if let Ok(mut owner) = self.material.owner.lock() {
            *owner = login.map(|(user, ip)| Owner {
                user: user.to_owned(),
                ip: ip.to_canonical(),
            });
        }
    }

    /// The ticketer of the control connection: it opens only this session's own tickets (a new control
    /// connection has none yet, so its handshake is always full).
    pub(crate) fn control_ticketer(
        &self,
        random: &'static dyn SecureRandom,
    ) -> Arc<dyn rustls::server::ProducesTickets> {
        Arc::new(SessionTicketer {
            sealer: self.sealer(random),
            scope: ResumptionScope::Session,
            used: None,
            issues: true,
        })
    }

    /// A ticketer for one data connection, and the record of which ticket it opened.
    ///
    /// With `issues` false it opens tickets but issues none, which for TLS 1.2 means a resumed handshake brings
    /// no new ticket (rustls opens a TLS 1.2 ticket whether or not its ticketer is enabled). That is what OpenSSL
    /// and Go servers do, and what PHP needs: when a resumed TLS 1.2 handshake brings a new ticket, an OpenSSL
    /// client with a client-side session cache marks the session it resumed as used up, but tells the
    /// application nothing of the new one (no new-session callback on a resumption), so PHP's next data
    /// connection had no session left to offer. Our tickets never expire within a session: the old one serves.
    pub(crate) fn data_ticketer(
        &self,
        scope: ResumptionScope,
        random: &'static dyn SecureRandom,
        issues: bool,
    ) -> (Arc<dyn rustls::server::ProducesTickets>, ConnectionBinding) {
        let binding = ConnectionBinding {
            mine: Arc::clone(&self.material),
            used: Arc::new(Mutex::new(None)),
        };
        let ticketer = SessionTicketer {
            sealer: self.sealer(random),
            scope,
            used: Some(Arc::clone(&binding.used)),
            issues,
        };
        (Arc::new(ticketer), binding)
    }

    fn sealer(&self, random: &'static dyn SecureRandom) -> Sealer {
        Sealer {
            material: Arc::clone(&self.material),
            keyring: self.keyring.clone(),
            random,
        }
    }
}

impl Drop for SessionTicketKey {
    fn drop(&mut self) {
        self.material.ended.store(true, Ordering::Release);
        self.keyring.retire(&self.material);
    }
}

/// Whether a data connection's resumed session may be trusted, as far as its ticket tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BindingState {
    /// Its own session's ticket, a same-user session's, or no ticket (a full handshake, or a TLS 1.2 session id
    /// from the session's private cache): the resumption policy decides.
    Confirmed,
    /// The ticket of another session that is still logging in: answer the ClientHello only once it has.
    Pending,
    /// The ticket of another session that ended, or logged in as someone else, before logging in as this
    /// session's user from its address.
    Refused,
}

/// Which ticket one data connection's handshake opened, for [`BindingState`].
#[derive(Clone)]
pub(crate) struct ConnectionBinding {
    mine: Arc<KeyMaterial>,
    used: Arc<Mutex<Option<Arc<KeyMaterial>>>>,
}

impl fmt::Debug for ConnectionBinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionBinding")
            .field("state", &self.state())
            .finish()
    }
}

impl ConnectionBinding {
    /// The state now: a pending one changes when the other session logs in or ends.
    pub(crate) fn state(&self) -> BindingState {
        let Some(used) = self.used.lock().ok().and_then(|u| u.clone()) else {
            return BindingState::Confirmed;
        };
        if used.id == self.mine.id {
            return BindingState::Confirmed;
        }
        match (used.owner(), self.mine.owner()) {
            (Some(theirs), Some(mine)) if theirs == mine => BindingState::Confirmed,
            (None, Some(_)) if !used.ended.load(Ordering::Acquire) => BindingState::Pending,
            _ => BindingState::Refused,
        }
    }
}

/// Seals with one session's key; finds the key of any session of the same server.
struct Sealer {
    material: Arc<KeyMaterial>,
    keyring: SessionKeyring,
    random: &'static dyn SecureRandom,
}

/// Seals tickets with one session's key and opens the tickets its scope accepts.
struct SessionTicketer {
    sealer: Sealer,
    scope: ResumptionScope,
    /// A data connection's record of the key that opened its ticket.
    used: Option<Arc<Mutex<Option<Arc<KeyMaterial>>>>>,
    /// Whether it issues tickets (`enabled`); it opens them either way.
    issues: bool,
}

impl fmt::Debug for SessionTicketer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionTicketer")
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

impl SessionTicketer {
    /// The key that sealed a ticket with this id, if this connection may use it (perhaps once a login ends).
    fn key_for(&self, id: &KeyId) -> Option<Arc<KeyMaterial>> {
        let mine = &self.sealer.material;
        if *id == mine.id {
            return Some(Arc::clone(mine));
        }
        if self.scope != ResumptionScope::User {
            return None;
        }
        let other = self.sealer.keyring.find(id)?;
        // Refused at once when the other session logged in as someone else, or ended without logging in; a
        // session still logging in is decided later (`BindingState::Pending`).
        let me = mine.owner()?;
        match other.owner() {
            Some(theirs) if theirs != me => None,
            None if other.ended.load(Ordering::Acquire) => None,
            _ => Some(other),
        }
    }
}

impl rustls::server::ProducesTickets for SessionTicketer {
    fn enabled(&self) -> bool {
        self.issues
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let material = &self.sealer.material;
        let mut nonce = [0u8; NONCE_LEN];
        self.sealer.random.fill(&mut nonce).ok()?;
        let header = KEY_ID_LEN + NONCE_LEN;
        let mut ticket = Vec::with_capacity(header + plain.len() + AES_128_GCM.tag_len());
        ticket.extend_from_slice(&material.id);
        ticket.extend_from_slice(&nonce);
        ticket.extend_from_slice(plain);
        let tag = material
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(material.id),
                ticket.get_mut(header..)?,
            )
            .ok()?;
        ticket.extend_from_slice(tag.as_ref());
        Some(ticket)
    }

    fn decrypt(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let id: KeyId = ticket.get(..KEY_ID_LEN)?.try_into().ok()?;
        let nonce = ticket.get(KEY_ID_LEN..KEY_ID_LEN + NONCE_LEN)?;
        let sealed = ticket.get(KEY_ID_LEN + NONCE_LEN..)?;
        let material = self.key_for(&id)?;
        let mut buffer = sealed.to_vec();
        let plain_len = material
            .key
            .open_in_place(
                Nonce::try_assume_unique_for_key(nonce).ok()?,
                Aad::from(id),
                &mut buffer,
            )
            .ok()?
            .len();
        buffer.truncate(plain_len);
        if let Some(used) = &self.used {
            if let Ok(mut used) = used.lock() {
                *used = Some(material);
            }
        }
        Some(buffer)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn random() -> &'static dyn SecureRandom {
        rustls::crypto::ring::default_provider().secure_random
    }

    fn key(keyring: &SessionKeyring) -> SessionTicketKey {
        SessionTicketKey::new(keyring, random()).unwrap()
    }

    const ALICE: Option<(&str, IpAddr)> =
        Some(("alice", IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)));

    /// A ticket sealed by `issuer`'s control connection.
    fn ticket_of(issuer: &SessionTicketKey) -> Vec<u8> {
        issuer
            .control_ticketer(random())
            .encrypt(b"session value")
            .unwrap()
    }

    /// What a data connection of `session` makes of `ticket`: whether it opens, and the binding then.
    fn offer(
        session: &SessionTicketKey,
        scope: ResumptionScope,
        ticket: &[u8],
    ) -> (bool, BindingState, ConnectionBinding) {
        let (ticketer, binding) = session.data_ticketer(scope, random(), true);
        let opened = ticketer.decrypt(ticket).is_some();
        let state = binding.state();
        (opened, state, binding)
    }

    #[test]
    fn a_ticket_opens_again_and_again_for_its_own_session() {
        let keyring = SessionKeyring::default();
        let mine = key(&keyring);
        let ticket = ticket_of(&mine);
        for _ in 0..1000 {
            let (opened, state, _) = offer(&mine, ResumptionScope::Session, &ticket);
            assert!(opened);
            assert_eq!(state, BindingState::Confirmed);
        }
        // The session value is not readable in the ticket.
        assert!(!ticket.windows(7).any(|w| w == b"session"));
    }

    #[test]
    fn tampered_or_short_tickets_do_not_open() {
        let keyring = SessionKeyring::default();
        let mine = key(&keyring);
        let ticketer = mine.control_ticketer(random());
        let ticket = ticket_of(&mine);
        for at in 0..ticket.len() {
            let mut bad = ticket.clone();
            bad[at] ^= 1;
            assert!(ticketer.decrypt(&bad).is_none(), "flipped byte {at}");
        }
        for len in 0..ticket.len() {
            assert!(ticketer.decrypt(&ticket[..len]).is_none(), "length {len}");
        }
    }

    #[test]
    fn another_sessions_ticket_needs_the_same_user_and_address_under_user_scope() {
        let keyring = SessionKeyring::default();
        let (a, b) = (key(&keyring), key(&keyring));
        let ticket = ticket_of(&a);
        b.set_owner(ALICE);
        // a is still logging in: opened, but pending.
        let (opened, state, pending) = offer(&b, ResumptionScope::User, &ticket);
        assert!(opened);
        assert_eq!(state, BindingState::Pending);
        a.set_owner(ALICE);
        assert_eq!(pending.state(), BindingState::Confirmed);
        assert_eq!(
            offer(&b, ResumptionScope::User, &ticket).1,
            BindingState::Confirmed
        );
        // Never under session scope.
        assert!(!offer(&b, ResumptionScope::Session, &ticket).0);
        // Another user, or the same user from another address: refused at once.
        b.set_owner(Some(("bob", IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))));
        assert!(!offer(&b, ResumptionScope::User, &ticket).0);
        b.set_owner(Some(("alice", "127.0.0.2".parse().unwrap())));
        assert!(!offer(&b, ResumptionScope::User, &ticket).0);
        // IPv4-mapped IPv6 is the same host.
        b.set_owner(Some(("alice", "::ffff:127.0.0.1".parse().unwrap())));
        assert!(offer(&b, ResumptionScope::User, &ticket).0);
        // A session that is not logged in accepts no other session's ticket.
        b.set_owner(None);
        assert!(!offer(&b, ResumptionScope::User, &ticket).0);
    }

    #[test]
    fn a_pending_ticket_is_refused_when_its_session_logs_in_as_someone_else_or_ends() {
        let keyring = SessionKeyring::default();
        let b = key(&keyring);
        b.set_owner(ALICE);
        let mallory = key(&keyring);
        let (_, state, binding) = offer(&b, ResumptionScope::User, &ticket_of(&mallory));
        assert_eq!(state, BindingState::Pending);
        mallory.set_owner(Some(("mallory", IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))));
        assert_eq!(binding.state(), BindingState::Refused);

        let quitter = key(&keyring);
        let ticket = ticket_of(&quitter);
        let (_, state, binding) = offer(&b, ResumptionScope::User, &ticket);
        assert_eq!(state, BindingState::Pending);
        drop(quitter);
        assert_eq!(binding.state(), BindingState::Refused);
        assert!(
            !offer(&b, ResumptionScope::User, &ticket).0,
            "forgotten with its session"
        );
    }

    #[test]
    fn a_logged_in_sessions_key_outlives_it_for_its_users_other_sessions() {
        let keyring = SessionKeyring::default();
        let (a, b) = (key(&keyring), key(&keyring));
        a.set_owner(ALICE);
        b.set_owner(ALICE);
        let ticket = ticket_of(&a);
        drop(a);
        assert_eq!(keyring.counts(), (1, 1));
        let (opened, state, _) = offer(&b, ResumptionScope::User, &ticket);
        assert!(opened);
        assert_eq!(state, BindingState::Confirmed);
        // Bounded: the oldest retired keys go first.
        for _ in 0..RETIRED_KEYS {
            let k = key(&keyring);
            k.set_owner(ALICE);
        }
        assert_eq!(keyring.counts(), (1, RETIRED_KEYS));
        assert!(!offer(&b, ResumptionScope::User, &ticket).0);
    }

    #[test]
    fn another_server_cannot_open_a_ticket() {
        let (ours, theirs) = (SessionKeyring::default(), SessionKeyring::default());
        let a = key(&ours);
        a.set_owner(ALICE);
        let b = key(&theirs);
        b.set_owner(ALICE);
        assert!(!offer(&b, ResumptionScope::User, &ticket_of(&a)).0);
    }

    proptest::proptest! {
        /// A ticket is peer input: arbitrary bytes, or a real ticket with its id kept and the rest arbitrary,
        /// never open (and never panic).
        #[test]
        fn arbitrary_tickets_never_open(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let keyring = SessionKeyring::default();
            let mine = key(&keyring);
            mine.set_owner(ALICE);
            let (ticketer, binding) = mine.data_ticketer(ResumptionScope::User, random(), true);
            proptest::prop_assert!(ticketer.decrypt(&bytes).is_none());
            let mut forged = ticket_of(&mine)[..KEY_ID_LEN].to_vec();
            forged.extend_from_slice(&bytes);
            proptest::prop_assert!(ticketer.decrypt(&forged).is_none());
            proptest::prop_assert_eq!(binding.state(), BindingState::Confirmed);
        }
    }

    #[test]
    fn the_lifetime_is_the_longest_tls13_allows() {
        let keyring = SessionKeyring::default();
        let t = key(&keyring).control_ticketer(random());
        assert_eq!(t.lifetime(), 604_800);
        assert!(t.enabled());
    }
}
