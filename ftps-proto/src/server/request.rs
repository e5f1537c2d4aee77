//! Work the engine hands to the frontend ([`Request`]) and the frontend's answers ([`Outcome`]).
//!
//! Every [`Request`] carries a [`ReqId`] and must be answered exactly once with
//! [`ServerSession::complete`](super::ServerSession::complete); a [`Notice`] is acted on and never answered. Both
//! leave the engine in one ordered queue of [`Work`]. An FTP negative reply is data, not an error: the frontend
//! reports *what happened* (a [`StorageError`], a [`Failure`]) and the engine picks the reply code, so no reply
//! code or verb ever appears in a frontend.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use super::config::UserPolicy;
use crate::codec::Timeval;
use crate::data::{DataChannel, DataFlow, DataReport, DataType};
use crate::path::VirtualPath;

pub use crate::request_id::ReqId;

/// One piece of work for the frontend.
#[derive(Debug)]
pub struct Request {
    /// Pass this to [`ServerSession::complete`](super::ServerSession::complete).
    pub id: ReqId,
    /// What to do.
    pub kind: RequestKind,
}

/// What a [`Request`] asks for.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestKind {
    /// Check credentials (`PASS`, or `ACCT` after [`Outcome::NeedAccount`]). *Answer required*:
    /// [`Outcome::LoggedIn`], [`Outcome::NeedAccount`] or [`Outcome::Denied`].
    Authenticate {
        /// The name from `USER`; `anonymous` for both `anonymous` and `ftp`.
        user: String,
        /// The password from `PASS` (for anonymous logins, by custom, an e-mail address).
        password: String,
        /// The account from `ACCT`, when the client sent one.
        account: Option<String>,
        /// Whether this is an anonymous login (only requested when the policy allows them).
        anonymous: bool,
        /// The virtual host chosen with `HOST` (RFC 7151), if any.
        host: Option<String>,
        /// The client's TLS certificate on the control connection, when it presented one.
        client_cert: Option<CertificateDer<'static>>,
    },
    /// `HOST name` (RFC 7151), before login. *Answer required*: [`Outcome::Done`] (220) or
    /// [`Outcome::Failed`] (504 for an unknown host).
    SelectHost {
        /// The host name as the client sent it.
        host: String,
    },
    /// Bind a passive listener from the configured port range on the control connection's local address family.
    /// *Answer required*: [`Outcome::PassiveListening`] or [`Outcome::Failed`] (425).
    ///
    /// Only one passive listener exists per session: the engine first sends [`Notice::ReleaseData`] for the
    /// previous one.
    OpenPassive {
        /// Whether to bind an IPv6 address (the control connection is IPv6).
        ipv6: bool,
    },
    /// Accept one data connection on the passive listener, closing any connection accepted for an earlier
    /// `AcceptData` that no [`RequestKind::DriveData`] took. *Answer required*: [`Outcome::DataConnected`] with
    /// the connection's peer, or [`Outcome::Failed`].
    ///
    /// **The engine checks the peer** (RFC 2577 section 3, "port stealing"): when it is the control peer (or
    /// site-to-site is allowed) a [`RequestKind::DriveData`] for that connection follows at once; otherwise a new
    /// `AcceptData` follows (close the refused connection, accept the next) and an
    /// [`Event::DataConnectionRefused`](super::Event::DataConnectionRefused) is logged. The engine bounds the
    /// wait with its data-accept timeout and then sends [`Notice::ReleaseData`].
    AcceptData,
    /// Connect to the client's data port (`PORT`/`EPRT`; the engine has already applied RFC 2577's checks).
    /// *Answer required*: [`Outcome::DataConnected`] or [`Outcome::Failed`] (425).
    ConnectData {
        /// The address the client asked for.
        addr: SocketAddr,
    },
    /// File status for `SIZE`, `MDTM`, `MLST`, `CWD` (is it a directory?), `STAT path`, `LIST file` and `RNFR`.
    /// *Answer required*: [`Outcome::Metadata`] (or [`Outcome::MetadataAt`]) or [`Outcome::Failed`].
    Metadata {
        /// The file.
        path: VirtualPath,
    },
    /// Open a file for reading (`RETR`), positioned at `offset`. *Answer required*: [`Outcome::Opened`] or
    /// [`Outcome::Failed`]. The frontend keeps the open file under this request's id until a
    /// [`Notice::RunTransfer`] names it or a [`Notice::ReleaseFile`] drops it.
    OpenRead {
        /// The file.
        path: VirtualPath,
        /// Where to start (`REST`).
        offset: u64,
    },
    /// Open a file for writing (`STOR`, `APPE`, `STOU`). *Answer required*: [`Outcome::Opened`] or
    /// [`Outcome::Failed`]. Kept like [`RequestKind::OpenRead`].
    OpenWrite {
        /// The file. For [`WriteMode::Unique`] the engine picks the names and tries the next one when the
        /// answer is [`StorageError::Exists`].
        path: VirtualPath,
        /// How to open it.
        mode: WriteMode,
        /// Where to start writing (`REST`; 0 truncates for [`WriteMode::Create`]).
        offset: u64,
    },
    /// List a directory for `LIST`, `NLST`, `MLSD`, `STAT path`. *Answer required*: [`Outcome::Listing`] or
    /// [`Outcome::Failed`]. The engine formats the lines (no FTP formats in frontends). When `path` is a file,
    /// answer [`StorageError::NotADirectory`]: the engine then asks for its [`RequestKind::Metadata`] and lists
    /// that one file where FTP wants it (`LIST`, `NLST`, `STAT`; not `MLSD`).
    List {
        /// The directory (or file).
        path: VirtualPath,
        /// What the lines will look like; frontends may use it to skip work (names only).
        format: ListFormat,
    },
    /// `MKD`. *Answer required*: [`Outcome::Done`] or [`Outcome::Failed`].
    MakeDir {
        /// The directory to create.
        path: VirtualPath,
    },
    /// `RMD`. *Answer required*: [`Outcome::Done`] or [`Outcome::Failed`].
    RemoveDir {
        /// The directory to remove.
        path: VirtualPath,
    },
    /// `DELE`. *Answer required*: [`Outcome::Done`] or [`Outcome::Failed`].
    Delete {
        /// The file to delete.
        path: VirtualPath,
    },
    /// `RNFR` + `RNTO`. *Answer required*: [`Outcome::Done`] or [`Outcome::Failed`].
    Rename {
        /// The old name.
        from: VirtualPath,
        /// The new name.
        to: VirtualPath,
    },
    /// `MFMT`. *Answer required*: [`Outcome::Done`] or [`Outcome::Failed`].
    SetModified {
        /// The file.
        path: VirtualPath,
        /// The new modification time (UTC).
        time: Timeval,
    },
    /// `SITE CHMOD mode path`. *Answer required*: [`Outcome::Done`] or [`Outcome::Failed`].
    Chmod {
        /// The file.
        path: VirtualPath,
        /// Permission bits (octal on the wire), at most `0o7777`.
        mode: u32,
    },
    /// A `SITE` command the engine does not know. *Answer required*: [`Outcome::SiteReply`] or
    /// [`Outcome::Failed`] ([`Failure::Unsupported`]: 504).
    SiteCustom {
        /// The sub-command, upper-cased.
        command: String,
        /// The rest of the line, when present.
        argument: Option<String>,
    },
    /// Drive `channel` with the data connection just reported by [`Outcome::DataConnected`], from now on, on its
    /// own task or thread. *Answer required*, once: [`Outcome::TransferFinished`] with the channel's report when
    /// the transfer it carries has ended, or [`Outcome::Failed`] as soon as it fails (even before its transfer;
    /// [`Outcome::TransferFailed`] when a transfer ran, so its record keeps the channel's report);
    /// not answered when a [`Notice::ReleaseData`] drops it first.
    ///
    /// The TLS handshake runs at once: curl sends its ClientHello as soon as it has connected and waits for the
    /// answer before it reads the control connection again, so a handshake left for the transfer command stalls
    /// it (measured: 200 ms a download). No payload moves until [`Notice::RunTransfer`] names this request:
    /// then call [`DataChannel::start_transfer`] with [`TransferPlan::flow`] and [`TransferPlan::data_type`] and
    /// copy the bytes between the channel
    /// and the source or sink the plan names. The engine replies 226 only after the answer, and only when the
    /// report shows a clean close.
    DriveData {
        /// The data channel, built by the engine for this session: plain, or TLS in the role the session chose
        /// (the server role binds the handshake to this session's tickets and applies its resumption policy).
        channel: Box<DataChannel>,
    },
}

/// Something the frontend acts on and never answers: it has no id, so there is nothing to pass to
/// [`ServerSession::complete`](super::ServerSession::complete).
#[derive(Debug)]
#[non_exhaustive]
pub enum Notice {
    /// Close the passive listener and any data connection whose [`RequestKind::DriveData`] has no transfer yet
    /// (stop driving it; it is not answered), and cancel a pending `AcceptData`/`ConnectData` (answering it is
    /// then optional).
    ReleaseData,
    /// Drop a file opened by `OpenRead`/`OpenWrite` that will not be transferred (the data connection failed,
    /// or `ABOR`).
    ReleaseFile {
        /// The id of the `OpenRead`/`OpenWrite` request.
        file: ReqId,
    },
    /// Move the payload of one transfer (`RETR`, `STOR`, `APPE`, `STOU`, `LIST`, `NLST`, `MLSD`) over the data
    /// channel of [`RequestKind::DriveData`] request `data`; the `DriveData` request's answer
    /// reports the end. Any passive listener is done with once its connection carries a transfer: close it (the
    /// next transfer needs a new `PASV`/`EPSV`).
    RunTransfer {
        /// The id of the `DriveData` request whose channel carries the transfer.
        data: ReqId,
        /// What to copy, in which direction.
        plan: TransferPlan,
    },
    /// Stop the running transfer (`ABOR`, or the session is ending): stop driving the channel of `DriveData`
    /// request `data` and close its connection at once; an upload is discarded, never committed;
    /// the engine has already replied for the transfer and ignores any answer to that `DriveData`.
    AbortTransfer {
        /// The id of the `DriveData` request.
        data: ReqId,
    },
}

/// The next thing the frontend must do, in the order the engine decided it: answer a [`Request`] (exactly once)
/// or act on a [`Notice`] (never answered). One queue keeps the order a frontend relies on: the
/// [`RequestKind::DriveData`] of a data connection always comes before the [`Notice::RunTransfer`] naming it.
#[derive(Debug)]
pub enum Work {
    /// Needs an answer with [`ServerSession::complete`](super::ServerSession::complete).
    Request(Request),
    /// Needs no answer.
    Notice(Notice),
}

/// How [`RequestKind::OpenWrite`] opens its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `STOR`: create or truncate (at `offset` when `REST` was given: keep the first `offset` bytes).
    Create,
    /// `APPE`: create or append at the end.
    Append,
    /// `STOU`: create exactly this file, exclusively: never overwrite, answer [`StorageError::Exists`] when
    /// it exists (the engine then tries another name). The preliminary reply names the file (`150 FILE: name`,
    /// RFC 1123 section 4.1.2.9).
    Unique,
}

/// The listing style a [`RequestKind::List`] will be formatted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    /// `LIST`: Unix `ls -l` lines.
    Unix,
    /// `MLSD`: RFC 3659 facts.
    Mlsd,
    /// `NLST`: names only.
    Names,
}

/// What a [`Notice::RunTransfer`] copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferPlan {
    /// The file or directory, for logs and the [`super::Event::TransferFinished`] record.
    pub path: VirtualPath,
    /// Direction and source.
    pub source: Source,
    /// `TYPE A` or `TYPE I`: pass it to [`DataChannel::start_transfer`], which converts line ends itself.
    pub data_type: DataType,
    /// The `REST` offset the file was opened at (already applied by the open; for information).
    pub offset: u64,
}

/// Where a transfer's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Send the file opened by the `OpenRead` request with this id (file -> channel).
    File(ReqId),
    /// Receive into the file opened by the `OpenWrite` request with this id (channel -> file).
    Upload(ReqId),
    /// Send these bytes (a listing the engine formatted).
    Bytes(Vec<u8>),
}

impl Source {
    /// Whether data flows from the client to the server.
    pub fn is_upload(&self) -> bool {
        matches!(self, Source::Upload(_))
    }
}

impl TransferPlan {
    /// Which way the payload moves, seen from the server: for [`DataChannel::start_transfer`].
    pub fn flow(&self) -> DataFlow {
        if self.source.is_upload() {
            DataFlow::Receive
        } else {
            DataFlow::Send
        }
    }
}

/// The frontend's answer to a [`Request`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Outcome {
    /// The request succeeded and has nothing to return.
    Done,
    /// Credentials accepted.
    LoggedIn(LoginGrant),
    /// `USER`/`PASS` fine, an account is needed (332); the client sends `ACCT`.
    NeedAccount,
    /// Credentials refused: 530 after the failed-login delay.
    Denied,
    /// The listener is bound at this local address.
    PassiveListening(SocketAddr),
    /// A data connection was established with this peer.
    DataConnected {
        /// The data connection's remote address.
        peer: SocketAddr,
    },
    /// File status.
    Metadata(FileInfo),
    /// File status with the wall-clock time (the engine reads no clock), so that `LIST file` and `STAT file`
    /// show a recent file's time of day as [`Outcome::ListingAt`] does; elsewhere the same as
    /// [`Outcome::Metadata`].
    MetadataAt {
        /// The file's status.
        info: FileInfo,
        /// The current time (UTC).
        now: Timeval,
    },
    /// The file is open.
    Opened {
        /// Its size (for reads), when known.
        size: Option<u64>,
        /// The path actually opened: the chosen name for [`WriteMode::Unique`].
        path: VirtualPath,
    },
    /// Directory entries, in the order to list them. `LIST` shows every date with its year; answer
    /// [`Outcome::ListingAt`] to give recent files their time of day, as `ls -l` does.
    Listing(Vec<FileInfo>),
    /// Directory entries, with the wall-clock time of the listing (the engine reads no clock): `LIST` shows
    /// `Mon dd HH:MM` for files modified within the six months before `now`, and `Mon dd  yyyy` otherwise
    /// (older, or in the future), like `ls -l`.
    ListingAt {
        /// The entries, in the order to list them.
        entries: Vec<FileInfo>,
        /// The current time (UTC, like every [`Timeval`] here).
        now: Timeval,
    },
    /// Text for a `SITE` command's 200 reply (one or more lines).
    SiteReply(Vec<String>),
    /// The data channel finished; the report says whether it closed cleanly.
    TransferFinished(DataReport),
    /// The transfer failed after its data connection was up: the reply is the failure's, and the transfer record
    /// keeps what the connection reported (TLS version, resumption, bytes moved before the failure).
    TransferFailed {
        /// Why it failed.
        failure: Failure,
        /// What the data connection did until then.
        report: DataReport,
    },
    /// The request failed.
    Failed(Failure),
}

/// What a successful login grants: where the user lives and how their policy narrows the server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginGrant {
    /// The initial working directory (virtual), usually `/` for a chrooted user.
    pub home: VirtualPath,
    /// Per-user policy; it can only narrow the server's.
    pub policy: UserPolicy,
}

impl Default for LoginGrant {
    fn default() -> Self {
        Self {
            home: VirtualPath::root(),
            policy: UserPolicy::default(),
        }
    }
}

/// Why a request failed, as the frontend saw it; the engine maps each to a reply code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// A storage backend error.
    Storage(StorageError),
    /// The data connection could not be established (425).
    DataConnection,
    /// The data connection's TLS handshake failed (522, RFC 4217 section 10).
    DataTls,
    /// The data connection did not resume this control session's TLS session, as the policy requires (522).
    ResumptionRefused,
    /// The data connection ended early: no close_notify, or a reset (426).
    Truncated,
    /// The transfer was stopped (`ABOR`; 426).
    Aborted,
    /// Not supported by this frontend, e.g. an unknown `SITE` command or `HOST` name (504).
    Unsupported,
}

/// Storage errors, mapped to replies as RFC 959 section 4.2 suggests.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageError {
    /// No such file or directory (550).
    NotFound,
    /// Access denied (550).
    PermissionDenied,
    /// The target exists (550).
    Exists,
    /// A directory was expected (550).
    NotADirectory,
    /// The disk is full (452).
    DiskFull,
    /// The user's quota is exhausted (552).
    QuotaExceeded,
    /// A name, or the whole path, is longer than the storage accepts (553).
    NameTooLong,
    /// The directory to remove still has entries (550).
    NotEmpty,
    /// The server's upload check refused the file (550); it was not stored.
    Rejected,
    /// The path is inside a read-only view of the storage, such as a view of its history (550, and the
    /// reply says the view is read-only so the user knows why the write failed).
    ReadOnlyView,
    /// The path names a view by a time the storage cannot read, such as `/@at/<TIME>/` with a malformed
    /// TIME (501: the argument is wrong, not the state of the storage).
    InvalidViewTime,
    /// Anything else (451); the text goes to the log, not to the client.
    Other(String),
}

/// What a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (listed as such by `LIST`; `MLSD` calls it `OS.unix=symlink`).
    Symlink,
}

/// Metadata of one file, as storage backends know it. The engine turns it into `LIST`, `MLSD`, `MLST`, `SIZE`
/// and `MDTM` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// The last path segment.
    pub name: String,
    /// File, directory or link.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, UTC.
    pub modified: Option<Timeval>,
    /// Unix permission bits (`0o755`), when known; also drive the RFC 3659 `perm` fact.
    pub mode: Option<u32>,
    /// A value that identifies the file within the file system (`unique` fact), e.g. `dev.inode` in hex.
    pub unique: Option<String>,
    /// Owner name for `LIST`.
    pub owner: Option<String>,
    /// Group name for `LIST`.
    pub group: Option<String>,
}

impl FileInfo {
    /// A minimal record: name, kind and size.
    pub fn new(name: impl Into<String>, kind: FileKind, size: u64) -> Self {
        Self {
            name: name.into(),
            kind,
            size,
            modified: None,
            mode: None,
            unique: None,
            owner: None,
            group: None,
        }
    }
}

/// How long a transfer took and how it ended, for [`super::Event::TransferFinished`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferRecord {
    /// The file or directory.
    pub path: VirtualPath,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Which way.
    pub direction: Direction,
    /// From the command's `now` to the completion's `now`.
    pub duration: Duration,
    /// The final reply code sent for it (226, 426, 522...).
    pub status: crate::codec::ReplyCode,
    /// The data connection's TLS, when it had any.
    pub tls: Option<crate::TlsInfo>,
    /// Why it failed, `None` when it completed (`status` is then 226 or 250).
    pub failure: Option<Failure>,
    /// A directory listing (`LIST`, `NLST`, `MLSD`), not a file.
    pub listing: bool,
}

/// A transfer's direction, from the server's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Server to client (`RETR`, listings).
    Download,
    /// Client to server (`STOR`, `APPE`, `STOU`).
    Upload,
}
