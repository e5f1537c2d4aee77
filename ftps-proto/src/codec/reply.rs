//! FTP replies (RFC 959 section 4.2): single- and multi-line, parsing and formatting.

/// A three-digit reply code, 100..=599.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyCode(u16);

macro_rules! reply_codes {
    ($($(#[$doc:meta])* $name:ident = $value:literal;)*) => {
        impl ReplyCode {
            $($(#[$doc])* pub const $name: ReplyCode = ReplyCode($value);)*
        }
    };
}

reply_codes! {
    /// 110 Restart marker reply.
    RESTART_MARKER = 110;
    /// 120 Service ready in nnn minutes.
    SERVICE_READY_SOON = 120;
    /// 125 Data connection already open; transfer starting.
    DATA_CONNECTION_ALREADY_OPEN = 125;
    /// 150 File status okay; about to open data connection.
    FILE_STATUS_OK = 150;
    /// 200 Command okay.
    COMMAND_OK = 200;
    /// 202 Command not implemented, superfluous at this site.
    SUPERFLUOUS = 202;
    /// 211 System status, or system help reply (also FEAT).
    SYSTEM_STATUS = 211;
    /// 212 Directory status.
    DIRECTORY_STATUS = 212;
    /// 213 File status (also SIZE, MDTM).
    FILE_STATUS = 213;
    /// 214 Help message.
    HELP_MESSAGE = 214;
    /// 215 NAME system type.
    SYSTEM_TYPE = 215;
    /// 220 Service ready for new user.
    SERVICE_READY = 220;
    /// 221 Service closing control connection.
    CLOSING = 221;
    /// 225 Data connection open; no transfer in progress.
    DATA_CONNECTION_OPEN = 225;
    /// 226 Closing data connection; requested file action successful.
    CLOSING_DATA_CONNECTION = 226;
    /// 227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).
    ENTERING_PASSIVE_MODE = 227;
    /// 229 Entering Extended Passive Mode (|||port|) (RFC 2428).
    ENTERING_EXTENDED_PASSIVE_MODE = 229;
    /// 230 User logged in, proceed.
    LOGGED_IN = 230;
    /// 232 User logged in, authorized by security data exchange (RFC 2228).
    LOGGED_IN_SECURITY = 232;
    /// 234 Security data exchange complete (RFC 2228: AUTH accepted).
    AUTH_OK = 234;
    /// 250 Requested file action okay, completed.
    FILE_ACTION_OK = 250;
    /// 257 "PATHNAME" created.
    PATHNAME_CREATED = 257;
    /// 331 User name okay, need password.
    NEED_PASSWORD = 331;
    /// 332 Need account for login.
    NEED_ACCOUNT = 332;
    /// 334 Requested security mechanism is ok (RFC 2228).
    SECURITY_MECHANISM_OK = 334;
    /// 350 Requested file action pending further information.
    FILE_ACTION_PENDING = 350;
    /// 421 Service not available, closing control connection.
    SERVICE_NOT_AVAILABLE = 421;
    /// 425 Can't open data connection.
    CANT_OPEN_DATA_CONNECTION = 425;
    /// 426 Connection closed; transfer aborted.
    TRANSFER_ABORTED = 426;
    /// 431 Need some unavailable resource to process security (RFC 2228).
    NEED_SECURITY_RESOURCE = 431;
    /// 450 Requested file action not taken (file unavailable, e.g. busy).
    FILE_UNAVAILABLE = 450;
    /// 451 Requested action aborted: local error in processing.
    LOCAL_ERROR = 451;
    /// 452 Requested action not taken: insufficient storage space.
    INSUFFICIENT_STORAGE = 452;
    /// 500 Syntax error, command unrecognized.
    SYNTAX_ERROR = 500;
    /// 501 Syntax error in parameters or arguments.
    SYNTAX_ERROR_ARGUMENTS = 501;
    /// 502 Command not implemented.
    NOT_IMPLEMENTED = 502;
    /// 503 Bad sequence of commands.
    BAD_SEQUENCE = 503;
    /// 504 Command not implemented for that parameter.
    NOT_IMPLEMENTED_FOR_PARAMETER = 504;
    /// 521 Data connection cannot be opened with this PROT setting (RFC 4217 section 9).
    DATA_PROTECTION_REQUIRED = 521;
    /// 522 Network protocol not supported (RFC 2428), also used for data-channel TLS failures.
    NETWORK_PROTOCOL_NOT_SUPPORTED = 522;
    /// 530 Not logged in.
    NOT_LOGGED_IN = 530;
    /// 532 Need account for storing files.
    NEED_ACCOUNT_FOR_STORING = 532;
    /// 533 Command protection level denied for policy reasons (RFC 2228).
    PROTECTION_LEVEL_DENIED = 533;
    /// 534 Request denied for policy reasons (RFC 2228).
    DENIED_FOR_POLICY = 534;
    /// 535 Failed security check (RFC 2228).
    SECURITY_CHECK_FAILED = 535;
    /// 536 Requested PROT level not supported by mechanism (RFC 2228).
    PROT_LEVEL_NOT_SUPPORTED = 536;
    /// 550 Requested action not taken: file unavailable (not found, no access).
    FILE_NOT_AVAILABLE = 550;
    /// 551 Requested action aborted: page type unknown.
    PAGE_TYPE_UNKNOWN = 551;
    /// 552 Requested file action aborted: exceeded storage allocation (quota).
    EXCEEDED_STORAGE_ALLOCATION = 552;
    /// 553 Requested action not taken: file name not allowed.
    FILE_NAME_NOT_ALLOWED = 553;
}

impl ReplyCode {
    /// A reply code from its number, when it is in 100..=599.
    pub const fn new(code: u16) -> Option<Self> {
        if code >= 100 && code <= 599 {
            Some(Self(code))
        } else {
            None
        }
    }

    /// The numeric value.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// 1xx: positive preliminary; another reply follows.
    pub const fn is_preliminary(self) -> bool {
        self.0 / 100 == 1
    }

    /// 2xx: positive completion.
    pub const fn is_completion(self) -> bool {
        self.0 / 100 == 2
    }

    /// 3xx: positive intermediate; the command sequence goes on.
    pub const fn is_intermediate(self) -> bool {
        self.0 / 100 == 3
    }

    /// 4xx or 5xx: the command failed.
    pub const fn is_negative(self) -> bool {
        self.0 >= 400
    }
}

/// One complete reply: a code and one or more lines of text.
///
/// `lines[0]` is the text after `NNN-` / `NNN ` on the first line; further entries are the continuation lines
/// of a multi-line reply, the last one being the text of the `NNN ` terminator line. Texts never contain CR or LF.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The reply code.
    pub code: ReplyCode,
    /// The text lines, at least one (possibly empty).
    pub lines: Vec<String>,
}

impl Reply {
    /// A single-line reply.
    pub fn new(code: ReplyCode, text: impl Into<String>) -> Self {
        Self {
            code,
            lines: vec![text.into()],
        }
    }

    /// A multi-line reply (a single line when `lines` has one entry).
    pub fn multiline(code: ReplyCode, lines: Vec<String>) -> Self {
        let _ = (code, lines);
        todo!("codec helper")
    }

    /// Appends the wire form, CRLF-terminated, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let _ = out;
        todo!("codec helper")
    }
}
