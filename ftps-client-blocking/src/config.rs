//! How a [`Client`](crate::Client) connects: security, trust, timeouts per phase, data connection mode.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ftps_proto::client::{ClientSessionConfig, DataConnectionMode, Security, Trace};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::RootCertStore;

use crate::error::{Error, Result};

/// Which TLS versions the client offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TlsVersions {
    /// TLS 1.3 and TLS 1.2 (the default).
    #[default]
    Tls12And13,
    /// TLS 1.2 only (e.g. to test or reach a server whose TLS 1.3 is broken).
    Tls12Only,
    /// TLS 1.3 only.
    Tls13Only,
}

/// Settings for [`Client::connect`](crate::Client::connect). Start from [`ClientConfig::new`] (explicit FTPS,
/// certificates verified against the system's roots) and chain the setters.
///
/// Timeouts, one per phase:
/// - `connect_timeout`: each TCP connect (control and passive data connections) and accepting an active one;
/// - `reply_timeout`: each control reply, and each write to the control socket;
/// - `data_timeout`: the longest a data connection may stay silent (no byte read or written) mid-transfer;
/// - `data_handshake_timeout`: a data connection's TLS handshake, from the server's 1xx reply;
/// - `shutdown_timeout`: after an upload, how long to wait for the server's close_notify / EOF;
/// - `abort_timeout`: how long the replies that settle an `ABOR` may take.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub(crate) security: Security,
    pub(crate) data_mode: DataConnectionMode,
    pub(crate) server_name: Option<String>,
    pub(crate) ca_files: Vec<PathBuf>,
    pub(crate) system_roots: Option<bool>,
    pub(crate) accept_invalid_certs: bool,
    pub(crate) tls_versions: TlsVersions,
    pub(crate) tls_config: Option<Arc<rustls::ClientConfig>>,
    pub(crate) connect_timeout: Duration,
    pub(crate) reply_timeout: Duration,
    pub(crate) data_timeout: Duration,
    pub(crate) data_handshake_timeout: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) abort_timeout: Duration,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) allow_clear_data: bool,
    pub(crate) trust_pasv_address: bool,
    pub(crate) clear_command_channel: bool,
    pub(crate) require_close_notify: bool,
    pub(crate) trace: Option<TraceSink>,
}

/// Where [`ClientConfig::trace`] sends the protocol trace.
#[derive(Clone)]
pub(crate) struct TraceSink(pub(crate) Arc<dyn Fn(&Trace) + Send + Sync>);

impl std::fmt::Debug for TraceSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TraceSink")
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl ClientConfig {
    /// Explicit FTPS (`AUTH TLS`), `PROT P` data connections, passive mode, certificates verified against the
    /// system's trust roots, TLS 1.2 and 1.3.
    pub fn new() -> Self {
        Self {
            security: Security::Explicit {
                allow_auth_ssl: false,
            },
            data_mode: DataConnectionMode::Passive,
            server_name: None,
            ca_files: Vec::new(),
            system_roots: None,
            accept_invalid_certs: false,
            tls_versions: TlsVersions::default(),
            tls_config: None,
            connect_timeout: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(30),
            data_timeout: Duration::from_secs(60),
            data_handshake_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(5),
            abort_timeout: Duration::from_secs(10),
            keepalive: None,
            allow_clear_data: false,
            trust_pasv_address: false,
            clear_command_channel: false,
            require_close_notify: true,
            trace: None,
        }
    }

    /// Implicit FTPS: TLS from the first byte (usually port 990).
    pub fn implicit(mut self) -> Self {
        self.security = Security::Implicit;
        self
    }

    /// Plain FTP: nothing is encrypted, passwords included. Only where that is acceptable.
    pub fn plain(mut self) -> Self {
        self.security = Security::Plain;
        self.allow_clear_data = true;
        self
    }

    /// Passive (the default) or active data connections.
    pub fn data_mode(mut self, mode: DataConnectionMode) -> Self {
        self.data_mode = mode;
        self
    }

    /// The name the server's certificate must match, instead of the host string given to
    /// [`Client::connect`](crate::Client::connect) (or the IP address for
    /// [`Client::connect_addr`](crate::Client::connect_addr)).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Trusts the CA certificates in a PEM file. Once any is given, the system's roots are no longer used unless
    /// [`ClientConfig::system_roots`] turns them back on.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_files.push(path.into());
        self
    }

    /// Whether to trust the system's roots (default: yes, unless CA files are given).
    pub fn system_roots(mut self, on: bool) -> Self {
        self.system_roots = Some(on);
        self
    }

    /// **DANGER**: accept any server certificate, for any name, self-signed or expired. The handshake signatures
    /// are still checked, but anyone on the path can impersonate the server. Off by default.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.accept_invalid_certs = accept;
        self
    }

    /// Which TLS versions to offer.
    pub fn tls_versions(mut self, versions: TlsVersions) -> Self {
        self.tls_versions = versions;
        self
    }

    /// Uses this rustls config as is, instead of one built from the trust and version settings. The session
    /// still gives its clone a private resumption store.
    pub fn rustls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls_config = Some(config);
        self
    }

    /// Timeout of each TCP connect (and of accepting an active-mode data connection).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout of each control reply.
    pub fn reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }

    /// How long a data connection may stay silent mid-transfer.
    pub fn data_timeout(mut self, timeout: Duration) -> Self {
        self.data_timeout = timeout;
        self
    }

    /// Timeout of a data connection's TLS handshake.
    pub fn data_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.data_handshake_timeout = timeout;
        self
    }

    /// After an upload, how long to wait for the server to close the data connection.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// How long the replies settling an `ABOR` may take.
    pub fn abort_timeout(mut self, timeout: Duration) -> Self {
        self.abort_timeout = timeout;
        self
    }

    /// Send `NOOP` from [`Client::keepalive_if_idle`](crate::Client::keepalive_if_idle) when the control
    /// connection has been idle this long. Off by default.
    pub fn keepalive(mut self, interval: Option<Duration>) -> Self {
        self.keepalive = interval;
        self
    }

    /// Go on with clear data connections when the server refuses `PROT P` (default: fail).
    pub fn allow_clear_data(mut self, allow: bool) -> Self {
        self.allow_clear_data = allow;
        self
    }

    /// Connect to the address in a `227` reply instead of the control peer's (default: no).
    pub fn trust_pasv_address(mut self, trust: bool) -> Self {
        self.trust_pasv_address = trust;
        self
    }

    /// Send `CCC` after login: the control connection goes back to plaintext, data stays protected.
    pub fn clear_command_channel(mut self, clear: bool) -> Self {
        self.clear_command_channel = clear;
        self
    }

    /// Treat a download without close_notify as truncated (default: yes).
    pub fn require_close_notify(mut self, require: bool) -> Self {
        self.require_close_notify = require;
        self
    }

    /// Calls `sink` with each line of the protocol exchange: every command (`PASS` masked), every reply, and
    /// what TLS negotiated on the control connection and on each data connection, including whether it resumed
    /// the control session (the evidence that `PROT P` was in force). `Trace`'s `Display` is the log line.
    ///
    /// ```
    /// let config = ftps_client_blocking::ClientConfig::new().trace(|line| eprintln!("{line}"));
    /// # drop(config);
    /// ```
    pub fn trace(mut self, sink: impl Fn(&Trace) + Send + Sync + 'static) -> Self {
        self.trace = Some(TraceSink(Arc::new(sink)));
        self
    }

    /// The engine's settings, with the rustls config built from the trust settings.
    pub(crate) fn session_config(&self) -> Result<ClientSessionConfig> {
        let mut session = match self.security {
            Security::Plain => ClientSessionConfig::plain(),
            Security::Implicit => ClientSessionConfig::implicit(self.rustls_client_config()?),
            _ => {
                let mut config = ClientSessionConfig::new(self.rustls_client_config()?);
                config.security = self.security;
                config
            }
        };
        session.data_mode = self.data_mode;
        session.allow_clear_data = self.allow_clear_data;
        session.trust_pasv_address = self.trust_pasv_address;
        session.clear_command_channel = self.clear_command_channel;
        session.require_close_notify = self.require_close_notify;
        session.trace = self.trace.is_some();
        session.reply_timeout = self.reply_timeout;
        session.data_handshake_timeout = self.data_handshake_timeout;
        session.abort_timeout = self.abort_timeout;
        Ok(session)
    }

    /// The name to verify the certificate against: the override, else `host`.
    pub(crate) fn server_name_for(&self, host: &str) -> Result<ServerName<'static>> {
        let name = self.server_name.as_deref().unwrap_or(host);
        // A bracketed IPv6 literal ("[::1]") names an address.
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_string())
            .map_err(|e| Error::TlsConfig(format!("server name {name:?}: {e}")))
    }

    pub(crate) fn rustls_client_config(&self) -> Result<Arc<rustls::ClientConfig>> {
        if let Some(config) = &self.tls_config {
            return Ok(config.clone());
        }
        let provider = Arc::new(ftps_proto::tls_provider());
        let versions: &[&'static rustls::SupportedProtocolVersion] = match self.tls_versions {
            TlsVersions::Tls12And13 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersions::Tls12Only => &[&rustls::version::TLS12],
            TlsVersions::Tls13Only => &[&rustls::version::TLS13],
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| Error::TlsConfig(e.to_string()))?;
        let config = if self.accept_invalid_certs {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ftps_proto::AcceptAnyServerCert::new(
                    &provider,
                )))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(self.root_store()?)
                .with_no_client_auth()
        };
        Ok(Arc::new(config))
    }

    fn root_store(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        for path in &self.ca_files {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::TlsConfig(format!("{}: {e}", path.display())))?;
            let mut found = 0;
            for cert in certs {
                let cert =
                    cert.map_err(|e| Error::TlsConfig(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::TlsConfig(format!("{}: {e}", path.display())))?;
                found += 1;
            }
            if found == 0 {
                return Err(Error::TlsConfig(format!(
                    "{}: no PEM certificate found",
                    path.display()
                )));
            }
        }
        if self.system_roots.unwrap_or(self.ca_files.is_empty()) {
            // Unreadable individual system certificates are skipped, as every TLS client does.
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 && self.ca_files.is_empty() {
                let why = native
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_string(), ToString::to_string);
                return Err(Error::TlsConfig(format!("no system trust roots: {why}")));
            }
        }
        if roots.is_empty() {
            return Err(Error::TlsConfig("no trust roots".to_string()));
        }
        Ok(roots)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_ca_file_is_a_config_error() {
        let config = ClientConfig::new().ca_file("/nonexistent/ca.pem");
        let err = config.session_config().unwrap_err();
        assert!(matches!(err, Error::TlsConfig(ref why) if why.contains("/nonexistent/ca.pem")));
    }

    #[test]
    fn a_pem_file_without_certificates_is_refused() {
        let path = std::env::temp_dir().join(format!("ftps-empty-{}.pem", std::process::id()));
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = ClientConfig::new()
            .ca_file(&path)
            .session_config()
            .unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(err, Error::TlsConfig(ref why) if why.contains("no PEM certificate")));
    }

    #[test]
    fn server_name_prefers_the_override_and_reads_ip_literals() {
        let config = ClientConfig::new();
        assert_eq!(
            config.server_name_for("[::1]").unwrap(),
            ServerName::try_from("::1").unwrap()
        );
        let config = config.server_name("ftp.example.com");
        assert_eq!(
            config.server_name_for("127.0.0.1").unwrap(),
            ServerName::try_from("ftp.example.com").unwrap()
        );
    }

    #[test]
    fn plain_needs_no_tls_and_timeouts_reach_the_engine() {
        let config = ClientConfig::new()
            .plain()
            .reply_timeout(Duration::from_secs(7))
            .abort_timeout(Duration::from_secs(3));
        let session = config.session_config().unwrap();
        assert_eq!(session.security, Security::Plain);
        assert!(session.tls.is_none());
        assert_eq!(session.reply_timeout, Duration::from_secs(7));
        assert_eq!(session.abort_timeout, Duration::from_secs(3));
    }

    #[test]
    fn danger_mode_builds_without_roots() {
        let session = ClientConfig::new()
            .system_roots(false)
            .danger_accept_invalid_certs(true)
            .tls_versions(TlsVersions::Tls12Only)
            .session_config()
            .unwrap();
        assert!(session.tls.is_some());
    }

    #[test]
    fn offers_aes128_gcm_first() {
        let config = ClientConfig::new()
            .danger_accept_invalid_certs(true)
            .rustls_client_config()
            .unwrap();
        let suite = config.crypto_provider().cipher_suites[0].suite();
        assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    }
}
