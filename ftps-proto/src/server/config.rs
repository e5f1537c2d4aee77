//! Server policy: per server ([`SessionConfig`]) and narrowed per user after login ([`UserPolicy`]).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use crate::data::ResumptionPolicy;
use crate::tls::{ResumptionScope, SessionKeyring};

/// The policy one [`ServerSession`](super::ServerSession) runs under. Cheap to clone (the TLS config is shared).
///
/// **TLS versions.** The engine uses the `rustls::ServerConfig` it is given; the frontend builds it with
/// `with_protocol_versions(&[&TLS13, &TLS12])` (the rustls default), which already means TLS 1.2 minimum: rustls
/// has no SSLv3/TLS 1.0/1.1 at all.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The server's TLS config; `None` disables `AUTH TLS` (and implicit FTPS cannot start).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Implicit FTPS: TLS from the first byte (the greeting is sent inside TLS).
    pub implicit_tls: bool,
    /// Refuse `USER`/`PASS` before `AUTH TLS` with 530 (RFC 4217 section 6 lets a server insist on protection;
    /// 530 "not logged in" is the reply every common client shows).
    pub require_tls_control: bool,
    /// Refuse transfers under `PROT C` with 521 (RFC 4217 section 9); `PROT C` itself is answered 534.
    pub require_tls_data: bool,
    /// Whether data connections must resume this control session's TLS session.
    pub data_resumption: ResumptionPolicy,
    /// Which sessions a data connection may resume: this control connection's only, or (the default) any live
    /// control connection of the same user from the same address, for clients that share one TLS session cache
    /// between their connections (Go's `crypto/tls`, so rclone). See [`ResumptionScope`].
    pub data_resumption_scope: ResumptionScope,
    /// The ticket keys of the live sessions built from clones of this config, which
    /// [`ResumptionScope::User`] looks a sibling session's key up in. Keep one per server: clone the config for
    /// each session rather than building a new one.
    pub session_keys: SessionKeyring,
    /// Accept `USER anonymous` / `USER ftp`.
    pub allow_anonymous: bool,
    /// Accept `CCC` (RFC 4217 section 6: clear the control channel); 534 when off.
    pub allow_ccc: bool,
    /// Allow site-to-site transfers (FXP): `PORT`/`EPRT` to an IP other than the control peer's, and passive
    /// data connections from another IP. RFC 2577 section 3 says no by default; ports below 1024 stay refused
    /// either way.
    ///
    /// A data connection with a *third party* (an IP other than the control peer's, only possible with this
    /// on) cannot resume this control session's TLS session (the peer is another server, which has no session
    /// with us), so [`SessionConfig::data_resumption`] applies only to data connections with the control peer's
    /// own IP; third-party ones are accepted with a full handshake ([`ResumptionPolicy::Preferred`]).
    pub allow_site_to_site: bool,
    /// The TLS client config for data connections on which this server takes the TLS *client* role: after
    /// `SSCN ON`, and on `CPSV` data connections (the "TLS for 3rd party transfers" convention of FileZilla
    /// Server, glftpd and DrFTPD). `SSCN` and `CPSV` are offered (and listed in `FEAT`) only when this is set,
    /// [`SessionConfig::allow_site_to_site`] is on and the server has TLS.
    ///
    /// The peer of such a connection is another FTP server reached by address, not by name, so the frontend
    /// builds this config without certificate verification (the control connections carry the trust) and
    /// without resumption expectations.
    pub site_to_site_tls: Option<Arc<rustls::ClientConfig>>,
    /// The IPv4 address announced in 227 replies (behind NAT); `None` announces the listener's own address.
    pub passive_public_ipv4: Option<Ipv4Addr>,
    /// Close (421) after this long without a command, outside transfers.
    pub idle_timeout: Duration,
    /// Close (421) when not logged in this long after connecting.
    pub login_timeout: Duration,
    /// Close (421) when no command line arrives this long after connecting (in implicit FTPS, after the TLS
    /// handshake too): a connection that never speaks holds a session slot for this long, not the whole
    /// `login_timeout`. Any complete line stops it.
    pub auth_timeout: Duration,
    /// Answer 425 when no data connection arrives this long after a transfer command needs one.
    pub data_accept_timeout: Duration,
    /// Delay before answering a failed login with 530; commands meanwhile wait.
    pub failed_login_delay: Duration,
    /// A short wait before the `227`/`229` reply to `PASV`/`EPSV` (zero answers at once); commands meanwhile
    /// wait, and the passive port is already listening. curl 7.88 (Debian 12) stalls for its default 1 s
    /// before connecting the data port when that reply arrives within the call that sent the command (about
    /// 40 µs from this engine on loopback); 100 µs puts it on curl's normal path. Measured with 1,000-file
    /// curl sessions: no pacing, 588 of the first 600 downloads stalled; 50 µs, about one in 500; 100 µs, none
    /// in 5,000. An engine timer, so every frontend inherits it.
    pub passive_reply_pacing: Duration,
    /// Close (421) after this many failed logins in one session.
    pub max_failed_logins: u32,
    /// Text of the 220 greeting.
    pub greeting: String,
    /// Maximum control line length in bytes.
    pub max_line_len: usize,
    /// How long the preliminary reply (150/125) of a TLS upload may wait for the frontend's
    /// [`ServerSession::data_ready`](super::ServerSession::data_ready); zero (the default) sends it at once.
    ///
    /// Frontends that report readiness set this (the smol server uses a second). It lets the data connection's
    /// TLS handshake, and the TLS 1.3 tickets sent right after it, reach a client that started the handshake
    /// before the 150 (curl) ahead of the 150 itself: OpenSSL clients resume each data connection with a ticket
    /// received since the last one, and curl reads an upload connection only once, just before closing it. It
    /// also keeps a client that waits for the 150 (lftp, PHP, Go) from sending anything before the frontend has
    /// called [`DataChannel::start_transfer`](crate::data::DataChannel::start_transfer), which decides from what
    /// arrived whether the upload's tickets wait for the client's close_notify. Such a client is reported ready at
    /// once.
    pub preliminary_reply_wait: Duration,
    /// Seeds the random part of `STOU` names (see [`unique_candidate`](super::unique_candidate)). `None` (the
    /// default) draws a seed per session from the TLS provider's secure random; tests fix it so two runs of one
    /// script reply alike.
    pub unique_name_seed: Option<u64>,
}

impl Default for SessionConfig {
    /// Secure defaults: TLS required on control and data, resumption required, no anonymous, no CCC, no FXP.
    fn default() -> Self {
        Self {
            tls: None,
            implicit_tls: false,
            require_tls_control: true,
            require_tls_data: true,
            data_resumption: ResumptionPolicy::Required,
            data_resumption_scope: ResumptionScope::User,
            session_keys: SessionKeyring::default(),
            allow_anonymous: false,
            allow_ccc: false,
            allow_site_to_site: false,
            site_to_site_tls: None,
            passive_public_ipv4: None,
            idle_timeout: Duration::from_secs(300),
            login_timeout: Duration::from_secs(60),
            auth_timeout: Duration::from_secs(10),
            data_accept_timeout: Duration::from_secs(30),
            failed_login_delay: Duration::from_secs(1),
            passive_reply_pacing: Duration::from_micros(100),
            max_failed_logins: 3,
            greeting: "ftps-rs ready".to_owned(),
            max_line_len: crate::codec::LineFramer::DEFAULT_MAX_LINE_LEN,
            preliminary_reply_wait: Duration::ZERO,
            unique_name_seed: None,
        }
    }
}

/// A user's policy, applied after login. It narrows the server's [`SessionConfig`]: a `true` here tightens, a
/// `false` leaves the server's choice; timeouts take the shorter. The one exception is
/// [`UserPolicy::allow_site_to_site`], the per-user opt-in for site-to-site transfers, which the frontend grants
/// from its own (administrator's) configuration, never from anything the client sends.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserPolicy {
    /// Require TLS on data connections for this user.
    pub require_tls_data: bool,
    /// Refuse `CCC` for this user.
    pub deny_ccc: bool,
    /// Refuse site-to-site `PORT`/`EPRT` for this user.
    pub deny_site_to_site: bool,
    /// Allow site-to-site transfers (FXP) for this user even when the server's
    /// [`SessionConfig::allow_site_to_site`] is off: `PORT`/`EPRT` to another IP (never below port 1024), passive
    /// connections from another IP, and `SSCN`/`CPSV` when the server has a
    /// [`SessionConfig::site_to_site_tls`] config. `deny_site_to_site` wins over it.
    pub allow_site_to_site: bool,
    /// Require data-connection resumption for this user.
    pub require_resumption: bool,
    /// A shorter idle timeout for this user.
    pub idle_timeout: Option<Duration>,
}

impl SessionConfig {
    /// This config narrowed by `user`.
    pub fn narrowed(&self, user: &UserPolicy) -> Self {
        let mut out = self.clone();
        out.require_tls_data |= user.require_tls_data;
        out.allow_ccc &= !user.deny_ccc;
        out.allow_site_to_site =
            (out.allow_site_to_site || user.allow_site_to_site) && !user.deny_site_to_site;
        if user.require_resumption {
            out.data_resumption = ResumptionPolicy::Required;
        }
        if let Some(t) = user.idle_timeout {
            out.idle_timeout = out.idle_timeout.min(t);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_policy_only_narrows() {
        let mut server = SessionConfig {
            require_tls_data: false,
            allow_ccc: true,
            allow_site_to_site: true,
            data_resumption: ResumptionPolicy::Off,
            ..SessionConfig::default()
        };
        assert!(server.narrowed(&UserPolicy::default()).allow_ccc);
        let user = UserPolicy {
            require_tls_data: true,
            deny_ccc: true,
            deny_site_to_site: true,
            require_resumption: true,
            idle_timeout: Some(Duration::from_secs(10)),
            allow_site_to_site: true,
        };
        let n = server.narrowed(&user);
        assert!(n.require_tls_data && !n.allow_ccc && !n.allow_site_to_site);
        assert_eq!(n.data_resumption, ResumptionPolicy::Required);
        assert_eq!(n.idle_timeout, Duration::from_secs(10));
        // A longer user timeout does not widen.
        server.idle_timeout = Duration::from_secs(5);
        assert_eq!(server.narrowed(&user).idle_timeout, Duration::from_secs(5));
    }

    #[test]
    fn site_to_site_is_a_per_user_opt_in() {
        let server = SessionConfig::default();
        assert!(!server.narrowed(&UserPolicy::default()).allow_site_to_site);
        let fxp_user = UserPolicy {
            allow_site_to_site: true,
            ..UserPolicy::default()
        };
        assert!(server.narrowed(&fxp_user).allow_site_to_site);
        let denied = UserPolicy {
            deny_site_to_site: true,
            ..fxp_user
        };
        assert!(!server.narrowed(&denied).allow_site_to_site);
    }
}
