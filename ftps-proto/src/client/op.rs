//! Typed operations a caller submits, and what they produce.

use std::fmt;

use crate::codec::{Command, Entry, Features, Reply, Timeval};
use crate::TlsInfo;

/// Names one submitted operation; every operation ends in exactly one
/// [`Event::Completed`](super::Event::Completed) with its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub(crate) u64);

impl OpId {
    /// The number of this id, unique within its session (ids count up from 0).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// What to log in with. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `USER` argument.
    pub user: String,
    /// `PASS` argument, sent only when the server asks (331).
    pub password: String,
    /// `ACCT` argument, sent only when the server asks (332).
    pub account: Option<String>,
}

impl Credentials {
    /// A user name and password, no account.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
            account: None,
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"****")
            .field("account", &self.account.as_ref().map(|_| "****"))
            .finish()
    }
}

/// One thing the caller wants done; submitted with [`ClientSession::submit`](super::ClientSession::submit).
///
/// Operations run one after another, in submission order; each may send several commands (e.g. `Rename` is
/// `RNFR` + `RNTO`, a transfer is `EPSV` + `RETR`) but only one command is ever on the wire at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    /// `USER` / `PASS` / `ACCT` (230, 331, 332), then `PBSZ 0` + `PROT P` when TLS is on, `CCC` when configured,
    /// `FEAT`, `OPTS UTF8 ON` when offered and `TYPE I`. Produces [`Output::LoggedIn`].
    Login(Credentials),
    /// `PWD`: [`Output::Directory`].
    Pwd,
    /// `CWD path`: [`Output::Done`].
    Cwd(String),
    /// `CDUP`: [`Output::Done`].
    Cdup,
    /// `MKD path`: [`Output::Directory`] with the created directory (257).
    Mkdir(String),
    /// `RMD path`: [`Output::Done`].
    Rmdir(String),
    /// `DELE path`: [`Output::Done`].
    Delete(String),
    /// `RNFR from` then `RNTO to` (350 in between): [`Output::Done`].
    Rename {
        /// Existing path.
        from: String,
        /// New path.
        to: String,
    },
    /// `SIZE path` (RFC 3659 section 4): [`Output::Size`].
    Size(String),
    /// `MDTM path` (RFC 3659 section 3): [`Output::Modified`].
    Mdtm(String),
    /// `MFMT time path`: [`Output::Done`].
    SetModified {
        /// The file.
        path: String,
        /// Its new modification time (UTC).
        time: Timeval,
    },
    /// A directory listing: `MLSD` when the server offers it, `LIST` otherwise; [`Output::Listing`].
    List(Option<String>),
    /// `NLST`: [`Output::Names`].
    NameList(Option<String>),
    /// `RETR path`, after `REST offset` when an offset is given (RFC 3659 section 5): [`Output::Transfer`].
    Retrieve {
        /// The file.
        path: String,
        /// Start this many bytes into the file.
        offset: Option<u64>,
    },
    /// `STOR path`: [`Output::Transfer`].
    Store(String),
    /// `APPE path`: [`Output::Transfer`].
    Append(String),
    /// `REST offset` then `STOR path` (RFC 3659 section 5.3: the server writes from `offset` on, keeping the
    /// bytes before it): [`Output::Transfer`]. Send the file's bytes from `offset` on.
    StoreAt {
        /// The file.
        path: String,
        /// Where the server starts writing.
        offset: u64,
    },
    /// `STOU [hint]`: [`Output::Transfer`].
    StoreUnique(Option<String>),
    /// Any command without a data connection or protocol switch, answered with its final reply:
    /// [`Output::Done`]. Transfer commands, `AUTH`, `CCC`, `REIN`, `ABOR` and `QUIT` are refused with
    /// [`OpError::InvalidOperation`]; use the typed operations.
    Raw(Command),
    /// `NOOP`: [`Output::Done`].
    Noop,
    /// `PROT P` (`true`, after `PBSZ 0` if not sent yet) or `PROT C` (`false`) on a TLS session: sets the
    /// protection of the data connections that follow (RFC 4217 section 9). [`Output::Done`]; a refusal is
    /// [`OpError::Refused`] and leaves the protection as it was. For site-to-site transfers, which need the same
    /// protection on both servers.
    SetDataProtection(bool),
    /// `SSCN ON` (`true`) or `SSCN OFF`: this server takes the TLS client role on the data connections that
    /// follow, for a site-to-site transfer under `PROT P` ("200 Client method"). [`Output::Done`].
    SiteToSiteTlsClient(bool),
    /// `CPSV` (`tls_client`) or `PASV` for a site-to-site transfer: the server listens, and with `CPSV` takes the
    /// TLS client role on that connection. [`Output::PassiveAddress`] with the 227 address *as sent* (it is given
    /// to the other server, so the usual "use the control peer's IP" rule does not apply). No data connection is
    /// opened by this session.
    SiteToSitePassive {
        /// Send `CPSV` instead of `PASV`.
        tls_client: bool,
    },
    /// `PORT` (IPv4) or `EPRT` (IPv6) naming the *other* server's passive address, for a site-to-site transfer.
    /// The server must allow it (RFC 2577 section 3 makes it refuse by default). [`Output::Done`].
    SiteToSitePort(std::net::SocketAddr),
    /// `RETR` or `STOR` whose data connection goes to another server (set up with
    /// [`Operation::SiteToSitePassive`] / [`Operation::SiteToSitePort`]): the 1xx and final replies are tracked,
    /// no [`RequestKind::DriveData`](super::RequestKind::DriveData) is made and no data deadline runs while the
    /// servers copy. [`Output::Done`] with the final reply (226/250).
    SiteToSiteTransfer(SiteToSiteCommand),
    /// `QUIT` (221); the session is closed afterwards: [`Output::Done`].
    Quit,
}

/// The transfer command of one side of a site-to-site transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteToSiteCommand {
    /// `RETR path`: this server sends.
    Retrieve(String),
    /// `STOR path`: this server receives.
    Store(String),
}

impl Operation {
    /// Whether this operation needs a data connection.
    pub fn is_transfer(&self) -> bool {
        matches!(
            self,
            Self::List(_)
                | Self::NameList(_)
                | Self::Retrieve { .. }
                | Self::Store(_)
                | Self::Append(_)
                | Self::StoreAt { .. }
                | Self::StoreUnique(_)
        )
    }

    /// Whether the data connection carries bytes from the client to the server.
    pub fn is_upload(&self) -> bool {
        matches!(
            self,
            Self::Store(_) | Self::Append(_) | Self::StoreAt { .. } | Self::StoreUnique(_)
        )
    }
}

/// What the server's features (RFC 2389 `FEAT`) let this session use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerFeatures {
    /// `MLST` (so `MLSD`) is offered (RFC 3659 section 7).
    pub mlsd: bool,
    /// `SIZE` is offered.
    pub size: bool,
    /// `MDTM` is offered.
    pub mdtm: bool,
    /// `MFMT` is offered.
    pub mfmt: bool,
    /// `REST STREAM` is offered (RFC 3659 section 5).
    pub rest_stream: bool,
    /// `UTF8` is offered (RFC 2640); the session then sends `OPTS UTF8 ON`.
    pub utf8: bool,
    /// `EPSV` is offered (RFC 2428).
    pub epsv: bool,
    /// Everything the server announced, typed (names upper-cased, parameters trimmed, in order): what the
    /// fields above do not cover, e.g. `SSCN` / `CPSV` for site-to-site transfers.
    pub advertised: Features,
}

/// How a data transfer ended, once both the data connection and the final reply said so.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransferReport {
    /// Payload bytes moved over the data connection.
    pub bytes: u64,
    /// Whether the data connection's TLS handshake resumed this session's TLS session.
    pub resumed: bool,
    /// Whether the data connection ended with close_notify (or had nothing to close: 226 without 150).
    pub clean_close: bool,
    /// What the data connection's TLS negotiated, when it was protected.
    pub tls: Option<TlsInfo>,
    /// The final reply (226 or 250).
    pub reply: Reply,
}

/// The result of a successful operation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Logged in; the server's features as parsed from `FEAT`.
    LoggedIn(ServerFeatures),
    /// The operation's final, positive reply.
    Done(Reply),
    /// A directory (from `PWD` or `MKD`, RFC 959 section 7 / 257 quoting undone).
    Directory(String),
    /// A size in bytes (`SIZE`, 213).
    Size(u64),
    /// A modification time (`MDTM`, 213).
    Modified(Timeval),
    /// A parsed directory listing.
    Listing(Vec<Entry>),
    /// Names from `NLST`.
    Names(Vec<String>),
    /// A finished upload or download.
    Transfer(TransferReport),
    /// The 227 address of [`Operation::SiteToSitePassive`], as the server sent it.
    PassiveAddress(std::net::SocketAddrV4),
}

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The server answered with a negative (4xx/5xx) or unexpected reply. The session goes on.
    #[error("server refused: {} {}", .0.code.get(), .0.lines.first().map(String::as_str).unwrap_or(""))]
    Refused(Reply),
    /// The server refused a transfer whose data connection could not resume the control connection's TLS 1.3
    /// session: every TLS 1.3 ticket the server issued to this session was used, and rustls offers each ticket
    /// once (RFC 8446 appendix C.4). A server that accepts only the control session on data connections and
    /// issues no tickets there (ProFTPD's `mod_tls` under TLS 1.3) refuses from the third transfer on. TLS 1.2
    /// sessions resume any number of times, so a new session limited to TLS 1.2 works. This one goes on.
    #[error("server refused a data connection that could not resume the control connection's TLS 1.3 session (its tickets are used up; TLS 1.2 resumes without limit): {} {}", .0.code.get(), .0.lines.first().map(String::as_str).unwrap_or(""))]
    ResumptionExhausted(Reply),
    /// The operation cannot be submitted as given (e.g. a transfer command in [`Operation::Raw`]).
    #[error("invalid operation: {0}")]
    InvalidOperation(&'static str),
    /// The transfer was aborted with `ABOR`; the session goes on.
    #[error("transfer aborted")]
    Aborted,
    /// The data connection failed (including its TLS handshake timeout); the session goes on.
    #[error("data connection failed: {0}")]
    Data(crate::data::DataError),
    /// The data connection could not be set up (connect, listen or accept failed); the session goes on.
    #[error("data connection not opened: {0}")]
    DataConnect(super::DataConnectError),
    /// A download's data connection ended without close_notify: possibly truncated (RFC 4217 section 10.2).
    #[error("data connection closed without close_notify (possible truncation)")]
    Truncated,
    /// A listing exceeded the configured `max_listing_bytes`.
    #[error("listing too large")]
    ListingTooLarge,
    /// A reply could not be understood (e.g. a 227 without an address); the session goes on.
    #[error("malformed reply: {0}")]
    MalformedReply(String),
    /// The session failed; this operation never completed.
    #[error("session failed: {0}")]
    Session(#[from] super::SessionError),
}
