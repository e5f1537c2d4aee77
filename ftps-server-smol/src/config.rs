//! Server configuration, read from TOML. Every field has a default, so an empty file (or none) is a
//! valid configuration; `ftps-server.example.toml` lists every option with its default.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A configuration that cannot be used, with what is wrong in words for the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown / mistyped fields.
    #[error("invalid configuration{}: {message}", path.as_ref().map(|p| format!(" in {}", p.display())).unwrap_or_default())]
    Parse {
        /// The file, if any.
        path: Option<PathBuf>,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Whether a listener speaks explicit FTPS (plain FTP, then `AUTH TLS`, RFC 4217) or implicit FTPS
/// (TLS from the first byte, the legacy port-990 style).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenMode {
    /// Plain control connection upgraded with `AUTH TLS`.
    Explicit,
    /// TLS handshake immediately on connect.
    Implicit,
}

/// An inclusive range of TCP ports for passive data connections, written `"50000-50100"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    /// First port (inclusive, non-zero).
    pub first: u16,
    /// Last port (inclusive, `>= first`).
    pub last: u16,
}

impl PortRange {
    /// How many ports the range holds.
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.last.saturating_sub(self.first)) + 1
    }

    /// Always false: a valid range holds at least one port (kept for clippy's `len_without_is_empty`).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (s.trim(), s.trim()),
        };
        let parse = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("passive port range {s:?}: {p:?} is not a port number"))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if first == 0 {
            return Err(format!("passive port range {s:?}: port 0 is not a port"));
        }
        if last < first {
            return Err(format!("passive port range {s:?} is inverted or empty"));
        }
        Ok(Self { first, last })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One listening socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port to listen on (port 0 picks a free port: tests only).
    pub address: SocketAddr,
    /// Explicit or implicit FTPS.
    pub mode: ListenMode,
    /// Ports for passive data connections (PASV / EPSV).
    pub passive_ports: PortRange,
    /// Address announced in PASV replies when the server is behind NAT: an IP or a host name,
    /// resolved once at start ([`ListenerConfig::resolve_public_address`]). Unset: the control
    /// connection's local address.
    pub passive_public_address: Option<String>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([127, 0, 0, 1], 2121)),
            mode: ListenMode::Explicit,
            passive_ports: PortRange {
                first: 50000,
                last: 50100,
            },
            passive_public_address: None,
        }
    }
}

impl ListenerConfig {
    /// Resolves `passive_public_address` (blocking DNS; call at start). An IP is taken as is; a host
    /// name resolves to its first address of the listener's family, else its first address.
    ///
    /// # Errors
    /// When the name does not resolve.
    pub fn resolve_public_address(&self) -> Result<Option<IpAddr>, ConfigError> {
        let Some(host) = self.passive_public_address.as_deref() else {
            return Ok(None);
        };
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Some(ip));
        }
        let addrs: Vec<IpAddr> = (host, 0)
            .to_socket_addrs()
            .map_err(|e| ConfigError::Invalid(format!("passive_public_address {host:?}: {e}")))?
            .map(|a| a.ip())
            .collect();
        let same_family = addrs
            .iter()
            .find(|ip| ip.is_ipv4() == self.address.is_ipv4());
        same_family
            .or(addrs.first())
            .copied()
            .map(Some)
            .ok_or_else(|| {
                ConfigError::Invalid(format!("passive_public_address {host:?} has no address"))
            })
    }
}

/// A TLS version, for `[tls] min_version` and `max_version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "1.2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "1.3")]
    Tls13,
}

/// Whether clients are asked for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientCertificates {
    /// Not asked.
    Off,
    /// Asked; verified against `client_ca_file` when sent, but optional.
    Request,
    /// Required and verified against `client_ca_file`.
    Require,
}

/// TLS settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain. Unset: a self-signed certificate generated in `state_dir`.
    pub cert_file: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). Required with `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Lowest TLS version.
    pub min_version: TlsVersion,
    /// Highest TLS version ("1.2" for peers that must be served TLS 1.2, and to measure it).
    pub max_version: TlsVersion,
    /// Client certificate policy.
    pub client_certificates: ClientCertificates,
    /// PEM bundle of CAs that sign client certificates; required unless `client_certificates = "off"`.
    pub client_ca_file: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            min_version: TlsVersion::Tls12,
            max_version: TlsVersion::Tls13,
            client_certificates: ClientCertificates::Off,
            client_ca_file: None,
        }
    }
}

/// Anonymous (`anonymous` / `ftp` user) access: always read-only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnonymousConfig {
    /// Allow anonymous logins.
    pub enabled: bool,
    /// Directory served to anonymous users. Unset: the server's `root`.
    pub root: Option<PathBuf>,
}

/// Which TLS sessions a data connection may resume when resumption is required.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResumptionScope {
    /// A session of any control connection logged in as the same user from the same address (the default:
    /// Go clients such as rclone share one ticket cache between their control connections).
    User,
    /// Only this control connection's own sessions.
    Session,
}

/// Whether data connections must resume the control connection's TLS session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataResumption {
    /// Refuse a data connection that did not resume this control session (stops data-connection
    /// theft; the DESIGN.md default).
    Required,
    /// Accept a full handshake, but log it.
    Preferred,
    /// Do not check.
    Off,
}

/// Protocol policy knobs, passed to the engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Refuse USER before AUTH TLS (RFC 4217 section 4).
    pub require_tls_control: bool,
    /// Refuse transfers unless `PROT P`.
    pub require_tls_data: bool,
    /// Data-connection TLS session binding.
    pub data_resumption: DataResumption,
    /// Whose sessions a data connection may resume under `data_resumption = "required"`.
    pub data_resumption_scope: ResumptionScope,
    /// Allow CCC (clear command channel, RFC 4217 section 6).
    pub allow_ccc: bool,
    /// Allow PORT/EPRT to an address other than the client's and PASV from another address
    /// (site-to-site / FXP; off prevents FTP bounce attacks, RFC 2577), for every user; a user's
    /// `site_to_site` in the users file overrides it either way. Ports below 1024 stay refused. With
    /// TLS, such sessions also offer `SSCN` and `CPSV` (this server as TLS client on the data
    /// connection, without verifying the other server's certificate: see
    /// `ftps_proto::server::site_to_site_client_config`).
    pub allow_site_to_site: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            require_tls_control: true,
            require_tls_data: true,
            data_resumption: DataResumption::Required,
            data_resumption_scope: ResumptionScope::User,
            allow_ccc: false,
            allow_site_to_site: false,
        }
    }
}

/// Resource limits. Times are in seconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Concurrent control connections in total.
    pub max_sessions: usize,
    /// Concurrent control connections from one IP address.
    pub max_sessions_per_ip: usize,
    /// Seconds a logged-in session may stay idle between commands.
    pub idle_timeout: u64,
    /// Seconds from connect to successful login.
    pub login_timeout: u64,
    /// Seconds from connect to the first command (`AUTH TLS` for a client that follows the default policy):
    /// a connection that says nothing holds a session slot this long, not the whole `login_timeout`.
    pub auth_timeout: u64,
    /// Seconds a data connection may make no progress.
    pub data_timeout: u64,
    /// Failed logins from one IP within `lockout_window` before it is locked out.
    pub max_failed_logins: u32,
    /// Seconds over which failed logins are counted.
    pub lockout_window: u64,
    /// Seconds an IP stays locked out.
    pub lockout_period: u64,
    /// Most IPs the lockout tracker remembers (bounded memory under a spray of addresses).
    pub lockout_table_size: usize,
    /// Longest command line accepted, in bytes.
    pub max_line_len: usize,
    /// Microseconds to wait before answering `PASV`/`EPSV` (0: at once); see
    /// [`ftps_proto::server::SessionConfig::passive_reply_pacing`] for why the default is not 0.
    pub passive_reply_pacing_us: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_sessions: 512,
            max_sessions_per_ip: 16,
            idle_timeout: 300,
            login_timeout: 30,
            // Clients send their first command within a round trip of the greeting (milliseconds; a second on
            // the worst satellite links); 10 s leaves room for a stalled network while 512 silent connections
            // free the default `max_sessions` three times faster than the login timeout did.
            auth_timeout: 10,
            data_timeout: 60,
            max_failed_logins: 5,
            lockout_window: 300,
            lockout_period: 900,
            lockout_table_size: 10_000,
            max_line_len: 4096,
            passive_reply_pacing_us: ftps_proto::server::SessionConfig::default()
                .passive_reply_pacing
                .as_micros() as u64,
        }
    }
}

impl LimitsConfig {
    /// `idle_timeout` as a duration.
    #[must_use]
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout)
    }

    /// `login_timeout` as a duration.
    #[must_use]
    pub fn login_timeout(&self) -> Duration {
        Duration::from_secs(self.login_timeout)
    }

    /// `auth_timeout` as a duration.
    #[must_use]
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_secs(self.auth_timeout)
    }

    /// `data_timeout` as a duration.
    #[must_use]
    pub fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.data_timeout)
    }

    /// `lockout_window` as a duration.
    #[must_use]
    pub fn lockout_window(&self) -> Duration {
        Duration::from_secs(self.lockout_window)
    }

    /// `lockout_period` as a duration.
    #[must_use]
    pub fn lockout_period(&self) -> Duration {
        Duration::from_secs(self.lockout_period)
    }

    /// `passive_reply_pacing_us` as a duration.
    #[must_use]
    pub fn passive_reply_pacing(&self) -> Duration {
        Duration::from_micros(self.passive_reply_pacing_us)
    }
}

/// Where files live: the local `root` (default) or an S3-compatible bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum StorageBackend {
    /// The directory `root` on the local filesystem.
    #[default]
    Local,
    /// An S3-compatible bucket (`endpoint`, `bucket`, `region`, `prefix`, `path_style`, credentials).
    S3,
}

/// Where files live and how uploads reach them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `"local"` (the directory `root`) or `"s3"` (a bucket; the keys below).
    pub backend: StorageBackend,
    /// Make every completed upload durable before its `226`: fsync the file, rename it into place,
    /// fsync its directory. On by default (a backup target must not lose an acknowledged file to a
    /// power cut or kernel crash); the measured cost is in the README. Local backend only.
    pub fsync: bool,
    /// S3: endpoint URL, `http://host:port` or `https://host`.
    pub endpoint: Option<String>,
    /// S3 over https: PEM certificates to trust besides the system's roots (a private CA).
    pub ca_file: Option<PathBuf>,
    /// S3: bucket name.
    pub bucket: Option<String>,
    /// S3: region used in signatures.
    pub region: String,
    /// S3: key prefix of the FTP root (`""`: the whole bucket). Users' homes are sub-prefixes below it.
    pub prefix: String,
    /// S3: path-style URLs (`endpoint/bucket/key`), for servers without virtual-host addressing (MinIO, moto,
    /// most self-hosted ones). Off: `bucket.endpoint/key`, as AWS prefers.
    pub path_style: bool,
    /// S3: access key id; unset: the `AWS_ACCESS_KEY_ID` environment variable.
    pub access_key_id: Option<String>,
    /// S3: secret access key; unset: `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<String>,
    /// S3: size of multipart upload parts in MiB (5 to 512); memory per upload is at most three parts.
    pub part_size_mib: u32,
}

impl std::fmt::Debug for StorageConfig {
    // The secret never goes to a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("backend", &self.backend)
            .field("fsync", &self.fsync)
            .field("endpoint", &self.endpoint)
            .field("ca_file", &self.ca_file)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<hidden>"),
            )
            .field("part_size_mib", &self.part_size_mib)
            .finish()
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::Local,
            fsync: true,
            endpoint: None,
            ca_file: None,
            bucket: None,
            region: "us-east-1".to_owned(),
            prefix: String::new(),
            path_style: false,
            access_key_id: None,
            secret_access_key: None,
            part_size_mib: 8,
        }
    }
}

impl StorageConfig {
    /// The S3 backend's options, with credentials from the config or else the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, and `AWS_SESSION_TOKEN` when set).
    ///
    /// # Errors
    /// When the endpoint, the bucket or the credentials are missing.
    pub fn s3_options(&self) -> Result<crate::storage::S3Options, ConfigError> {
        let invalid = |m: &str| ConfigError::Invalid(format!("[storage] backend = \"s3\": {m}"));
        let endpoint = self
            .endpoint
            .clone()
            .ok_or_else(|| invalid("endpoint is required"))?;
        let bucket = self
            .bucket
            .clone()
            .ok_or_else(|| invalid("bucket is required"))?;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let access_key_id = self
            .access_key_id
            .clone()
            .or_else(|| env("AWS_ACCESS_KEY_ID"))
            .ok_or_else(|| invalid("access_key_id or AWS_ACCESS_KEY_ID is required"))?;
        let secret_access_key = self
            .secret_access_key
            .clone()
            .or_else(|| env("AWS_SECRET_ACCESS_KEY"))
            .ok_or_else(|| invalid("secret_access_key or AWS_SECRET_ACCESS_KEY is required"))?;
        if !(5..=512).contains(&self.part_size_mib) {
            return Err(invalid("part_size_mib must be 5 to 512"));
        }
        Ok(crate::storage::S3Options {
            endpoint,
            ca_file: self.ca_file.clone(),
            bucket,
            region: self.region.clone(),
            prefix: self.prefix.clone(),
            path_style: self.path_style,
            access_key_id,
            secret_access_key,
            // A session token only makes sense with the environment's keys.
            session_token: self
                .access_key_id
                .is_none()
                .then(|| env("AWS_SESSION_TOKEN"))
                .flatten(),
            part_size: self.part_size_mib as usize * 1024 * 1024,
            ..crate::storage::S3Options::default()
        })
    }
}

/// Versioned storage: history kept on every overwrite, delete and rename, served read-only as `/@at/<TIME>/` and
/// `/@versions/` (README "Restore from any point in time").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VersionsConfig {
    /// Keep versions and serve the time views (`ftps-server --versions` sets it too). Off by default.
    pub enabled: bool,
    /// How long a version is kept after it stopped being current: `<n>` plus `s`, `m`, `h`, `d` or `w`
    /// (`"90d"`), or `"forever"`.
    pub keep: String,
    /// At most this many versions per file, the oldest pruned first; 0: no cap.
    pub max_per_file: usize,
    /// Seconds between pruning rounds.
    pub prune_interval: u64,
    /// At most this many versions removed per round (bounds the pruner's I/O).
    pub prune_batch: usize,
}

impl Default for VersionsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            keep: "90d".into(),
            max_per_file: 100,
            prune_interval: 600,
            prune_batch: 1000,
        }
    }
}

impl VersionsConfig {
    /// `keep` as a duration (`None`: forever).
    ///
    /// # Errors
    /// When `keep` is not `<n><s|m|h|d|w>` or `forever`.
    pub fn keep_duration(&self) -> Result<Option<Duration>, ConfigError> {
        let keep = self.keep.trim();
        if keep == "forever" {
            return Ok(None);
        }
        let bad = || {
            ConfigError::Invalid(format!(
                "[versions] keep {keep:?}: use a number and s, m, h, d or w (\"90d\"), or \"forever\""
            ))
        };
        let unit = match keep.chars().last() {
            Some('s') => 1,
            Some('m') => 60,
            Some('h') => 3600,
            Some('d') => 86_400,
            Some('w') => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = keep[..keep.len() - 1].parse().map_err(|_| bad())?;
        n.checked_mul(unit)
            .map(|s| Some(Duration::from_secs(s)))
            .ok_or_else(bad)
    }
}

/// What is logged beyond the defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Log every command and reply (passwords masked).
    pub protocol: bool,
    /// Log one line per completed or failed transfer.
    pub transfers: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            protocol: false,
            transfers: true,
        }
    }
}

/// The PROXY protocol, behind a load balancer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// Load balancers (addresses or CIDR networks): their connections, control and data, must start with a PROXY
    /// header (v1 or v2) naming the client, whose address is then used for logs, limits, the lockout and the
    /// data-connection peer check. Empty: no proxies.
    pub trusted: Vec<crate::proxy::Cidr>,
    /// Refuse every connection that does not come from a trusted proxy.
    pub required: bool,
}

/// The Prometheus endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve the metrics in the Prometheus text format at `http://ADDR/metrics` (unset: no endpoint). Plain HTTP
    /// without authentication: bind it to loopback or a monitoring network.
    pub listen: Option<SocketAddr>,
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening sockets (`[[listener]]` tables).
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Directory served to users (created at start if missing).
    pub root: PathBuf,
    /// TOML users file. Unset: `<state_dir>/users.toml`, created with one generated user.
    pub users_file: Option<PathBuf>,
    /// Anonymous access.
    pub anonymous: AnonymousConfig,
    /// Protocol policy.
    pub policy: PolicyConfig,
    /// Resource limits.
    pub limits: LimitsConfig,
    /// Directory for server state: generated certificate and key, generated users file.
    pub state_dir: PathBuf,
    /// How uploads reach the disk.
    pub storage: StorageConfig,
    /// Versioned storage and time views.
    pub versions: VersionsConfig,
    /// Logging switches.
    pub log: LogConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// The PROXY protocol.
    pub proxy_protocol: ProxyProtocolConfig,
    /// Webhooks that receive events (`[[webhooks]]` tables).
    pub webhooks: Vec<crate::events::WebhookConfig>,
    /// Commands run for events (`[[event_commands]]` tables).
    pub event_commands: Vec<crate::events::EventCommandConfig>,
    /// The upload check.
    pub hooks: crate::upload_check::HooksConfig,
    /// Encryption at rest: the KEK source (see [`crate::keys`]).
    pub encryption: crate::keys::EncryptionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listeners: vec![ListenerConfig::default()],
            tls: TlsConfig::default(),
            root: PathBuf::from("./ftp-root"),
            users_file: None,
            anonymous: AnonymousConfig::default(),
            policy: PolicyConfig::default(),
            limits: LimitsConfig::default(),
            state_dir: PathBuf::from("./.ftps-server"),
            storage: StorageConfig::default(),
            versions: VersionsConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            proxy_protocol: ProxyProtocolConfig::default(),
            webhooks: Vec::new(),
            event_commands: Vec::new(),
            hooks: crate::upload_check::HooksConfig::default(),
            encryption: crate::keys::EncryptionConfig::default(),
        }
    }
}

impl Config {
    /// Parses TOML text (no validation; see [`Config::validate`]).
    ///
    /// # Errors
    /// On malformed TOML, unknown fields or values of the wrong type.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: None,
            message: e.to_string(),
        })
    }

    /// Reads and parses a TOML file (no validation).
    ///
    /// # Errors
    /// When the file cannot be read or parsed.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: Some(path.to_owned()),
            message: e.to_string(),
        })
    }

    /// The users file in effect: `users_file`, or `<state_dir>/users.toml`.
    #[must_use]
    pub fn users_file_path(&self) -> PathBuf {
        self.users_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("users.toml"))
    }

    /// Checks values and cross-field consistency, and that configured files exist. Directories that
    /// the server creates (`root`, `state_dir`) may be missing.
    ///
    /// # Errors
    /// The first problem found, in words.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        self.versions.keep_duration()?;
        self.encryption.validate()?;
        if self.listeners.is_empty() {
            return invalid("at least one [[listener]] is required".into());
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let PortRange { first, last } = l.passive_ports;
            if first == 0 || last < first {
                return invalid(format!(
                    "listener {i} ({}): passive_ports {first}-{last} is empty, inverted or uses port 0",
                    l.address
                ));
            }
            if l.passive_public_address
                .as_deref()
                .is_some_and(str::is_empty)
            {
                return invalid(format!(
                    "listener {i} ({}): passive_public_address is empty",
                    l.address
                ));
            }
        }
        for (i, a) in self.listeners.iter().enumerate() {
            if a.address.port() != 0
                && self
                    .listeners
                    .iter()
                    .skip(i + 1)
                    .any(|b| b.address == a.address)
            {
                return invalid(format!("listener address {} is listed twice", a.address));
            }
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return invalid("tls.cert_file and tls.key_file go together".into());
            }
            (Some(cert), Some(key)) => {
                require_file("tls.cert_file", cert)?;
                require_file("tls.key_file", key)?;
            }
            (None, None) => {}
        }
        if self.tls.max_version < self.tls.min_version {
            return invalid("tls.max_version is below tls.min_version".into());
        }
        match (self.tls.client_certificates, &self.tls.client_ca_file) {
            (ClientCertificates::Off, _) => {}
            (_, None) => {
                return invalid(
                    "tls.client_ca_file is required when tls.client_certificates is not \"off\""
                        .into(),
                );
            }
            (_, Some(ca)) => require_file("tls.client_ca_file", ca)?,
        }
        if let Some(users) = &self.users_file {
            require_file("users_file", users)?;
        }
        if self.storage.backend == StorageBackend::S3 {
            let options = self.storage.s3_options()?;
            crate::storage::S3Storage::new(&options)
                .map_err(|e| ConfigError::Invalid(format!("[storage]: {}", e.message())))?;
        }
        if let Some(root) = &self.anonymous.root {
            if self.anonymous.enabled && !root.is_dir() {
                return invalid(format!(
                    "anonymous.root {} is not a directory",
                    root.display()
                ));
            }
        }
        let l = &self.limits;
        for (name, value) in [
            ("limits.max_sessions", l.max_sessions as u64),
            ("limits.max_sessions_per_ip", l.max_sessions_per_ip as u64),
            ("limits.idle_timeout", l.idle_timeout),
            ("limits.login_timeout", l.login_timeout),
            ("limits.auth_timeout", l.auth_timeout),
            ("limits.data_timeout", l.data_timeout),
            ("limits.max_failed_logins", u64::from(l.max_failed_logins)),
            ("limits.lockout_window", l.lockout_window),
            ("limits.lockout_table_size", l.lockout_table_size as u64),
        ] {
            if value == 0 {
                return invalid(format!("{name} must be greater than 0"));
            }
        }
        if l.max_sessions_per_ip > l.max_sessions {
            return invalid("limits.max_sessions_per_ip exceeds limits.max_sessions".into());
        }
        // RFC 959 section 4.1.3 lines plus a long UTF-8 path (RFC 2640) fit easily in 512 bytes.
        if l.max_line_len < 512 {
            return invalid("limits.max_line_len must be at least 512".into());
        }
        // A pause, not a timeout: anything near human scale is a mistake.
        if l.passive_reply_pacing_us > 100_000 {
            return invalid("limits.passive_reply_pacing_us must be at most 100000 (0.1 s)".into());
        }
        Ok(())
    }
}

fn require_file(what: &str, path: &Path) -> Result<(), ConfigError> {
    if path.is_file() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{what} {} does not exist or is not a file",
            path.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../ftps-server.example.toml");

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn storage_fsync_is_on_by_default_and_can_be_turned_off() {
        assert!(Config::default().storage.fsync);
        let config = Config::from_toml("[storage]\nfsync = false\n").unwrap();
        assert!(!config.storage.fsync);
        assert!(Config::from_toml("[storage]\nfsync = \"yes\"\n").is_err());
    }

    #[test]
    fn s3_storage_needs_endpoint_bucket_and_credentials() {
        let config = Config::from_toml(
            "[storage]\nbackend = \"s3\"\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"b\"\n\
             prefix = \"ftp\"\npath_style = true\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n",
        )
        .unwrap();
        assert_eq!(config.storage.backend, StorageBackend::S3);
        let options = config.storage.s3_options().unwrap();
        assert_eq!(
            (
                options.bucket.as_str(),
                options.prefix.as_str(),
                options.path_style
            ),
            ("b", "ftp", true)
        );
        assert_eq!(options.part_size, 8 * 1024 * 1024);
        assert!(
            !format!("{:?}", config.storage).contains("\"s\""),
            "secret in Debug"
        );
        let mut missing = config.clone();
        missing.storage.bucket = None;
        assert!(missing.storage.s3_options().is_err());
        let mut https = config.clone();
        https.storage.endpoint = Some("ftp://x".into());
        assert!(matches!(https.validate(), Err(ConfigError::Invalid(_))));
        let mut small = config;
        small.storage.part_size_mib = 4;
        assert!(small.storage.s3_options().is_err());
        assert!(Config::from_toml("[storage]\nbackend = \"gcs\"\n").is_err());
    }

    #[test]
    fn metrics_endpoint_is_off_by_default_and_takes_an_address() {
        assert_eq!(Config::default().metrics.listen, None);
        let config = Config::from_toml("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert!(Config::from_toml("[metrics]\nlisten = \"localhost\"\n").is_err());
    }

    #[test]
    fn example_file_lists_the_defaults() {
        let example = Config::from_toml(EXAMPLE).unwrap();
        assert_eq!(example, Config::default());
    }

    #[test]
    fn example_file_mentions_every_option() {
        let mut full = Config {
            users_file: Some("users.toml".into()),
            ..Config::default()
        };
        full.tls.cert_file = Some("c".into());
        full.tls.key_file = Some("k".into());
        full.tls.client_ca_file = Some("ca".into());
        full.anonymous.root = Some("anon".into());
        full.listeners[0].passive_public_address = Some("ftp.example.com".into());
        let value = toml::Value::try_from(&full).unwrap();
        let mut missing = Vec::new();
        collect_keys(&value, "", &mut missing);
        missing.retain(|key| !EXAMPLE.contains(key.rsplit('.').next().unwrap_or(key)));
        assert!(missing.is_empty(), "not in the example file: {missing:?}");
    }

    fn collect_keys(value: &toml::Value, prefix: &str, out: &mut Vec<String>) {
        match value {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.push(key.clone());
                    collect_keys(v, &key, out);
                }
            }
            toml::Value::Array(a) => {
                for v in a {
                    collect_keys(v, prefix, out);
                }
            }
            _ => {}
        }
    }

    #[test]
    fn parses_a_full_config() {
        let config = Config::from_toml(
            r#"
            root = "/srv/ftp"
            [[listener]]
            address = "0.0.0.0:21"
            passive_ports = "40000-40009"
            passive_public_address = "203.0.113.7"
            [[listener]]
            address = "[::]:990"
            mode = "implicit"
            [tls]
            min_version = "1.3"
            client_certificates = "require"
            [policy]
            data_resumption = "preferred"
            data_resumption_scope = "session"
            allow_ccc = true
            [limits]
            idle_timeout = 60
            "#,
        )
        .unwrap();
        assert_eq!(config.root, PathBuf::from("/srv/ftp"));
        assert_eq!(config.listeners.len(), 2);
        assert_eq!(
            config.listeners[0].passive_ports,
            PortRange {
                first: 40000,
                last: 40009
            }
        );
        assert_eq!(config.listeners[0].passive_ports.len(), 10);
        assert_eq!(
            config.listeners[0].resolve_public_address().unwrap(),
            Some("203.0.113.7".parse().unwrap())
        );
        assert_eq!(config.listeners[1].mode, ListenMode::Implicit);
        assert_eq!(config.listeners[1].passive_ports.first, 50000);
        assert_eq!(config.tls.min_version, TlsVersion::Tls13);
        assert_eq!(config.policy.data_resumption, DataResumption::Preferred);
        assert_eq!(
            config.policy.data_resumption_scope,
            ResumptionScope::Session
        );
        assert!(config.policy.allow_ccc && config.policy.require_tls_data);
        assert_eq!(config.limits.idle_timeout(), Duration::from_secs(60));
        assert_eq!(config.limits.login_timeout, 30);
        // Missing CA file for client certificates.
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("client_ca_file"), "{err}");
    }

    #[test]
    fn parse_errors_are_clear() {
        let err = Config::from_toml("[[listener]]\npassive_ports = \"50100-50000\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("inverted"), "{err}");
        let err = Config::from_toml("[[listener]]\npassive_ports = \"0-10\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("port 0"), "{err}");
        let err = Config::from_toml("rooot = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rooot"), "{err}");
        let err = Config::from_toml("[tls]\nmin_version = \"1.1\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("1.1"), "{err}");
    }

    #[test]
    fn validation_errors() {
        let check = |f: &dyn Fn(&mut Config), needle: &str| {
            let mut c = Config::default();
            f(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        };
        check(&|c| c.listeners.clear(), "at least one");
        check(
            &|c| c.listeners[0].passive_ports = PortRange { first: 10, last: 9 },
            "inverted",
        );
        check(
            &|c| c.listeners[0].passive_ports = PortRange { first: 0, last: 9 },
            "port 0",
        );
        check(&|c| c.listeners.push(ListenerConfig::default()), "twice");
        check(&|c| c.tls.cert_file = Some("x".into()), "go together");
        check(
            &|c| {
                c.tls.cert_file = Some("/nonexistent/cert.pem".into());
                c.tls.key_file = Some("/nonexistent/key.pem".into());
            },
            "cert.pem",
        );
        check(
            &|c| c.users_file = Some("/nonexistent/users.toml".into()),
            "users_file",
        );
        check(&|c| c.limits.idle_timeout = 0, "idle_timeout");
        check(
            &|c| c.limits.max_sessions_per_ip = 1000,
            "max_sessions_per_ip",
        );
        check(&|c| c.limits.max_line_len = 10, "max_line_len");
        check(
            &|c| c.limits.passive_reply_pacing_us = 2_000_000,
            "passive_reply_pacing_us",
        );
    }

    #[test]
    fn port_range_forms() {
        assert_eq!(
            "2000".parse::<PortRange>().unwrap(),
            PortRange {
                first: 2000,
                last: 2000
            }
        );
        assert_eq!(" 1 - 2 ".parse::<PortRange>().unwrap().to_string(), "1-2");
        assert!("70000-70001".parse::<PortRange>().is_err());
        assert!("a-b".parse::<PortRange>().is_err());
    }
}
