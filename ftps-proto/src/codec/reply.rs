//! FTP replies (RFC 959 section 4.2): single- and multi-line, parsing and formatting.
//!
//! [`Reply::encode`] writes replies; [`ReplyParser`] reads them incrementally from a byte stream, tolerating what
//! real servers send. The structured helpers (`Reply::pasv` / [`Reply::parse_pasv`] and friends) format and parse
//! the texts of the replies whose text carries data: 227, 229, 257, 211 FEAT and 213 SIZE / MDTM.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::features::Features;
use super::time::Timeval;

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
    /// 554 Requested action not taken: invalid REST parameter (RFC 3659 section 5.4).
    INVALID_REST_PARAMETER = 554;
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

    /// 4yz: transient negative completion (RFC 959 section 4.2). The error condition is temporary: the same
    /// command may succeed if tried again (e.g. 421, 425, 426, 450, 451, 452).
    pub const fn is_transient_negative(self) -> bool {
        self.0 / 100 == 4
    }

    /// 5yz: permanent negative completion (RFC 959 section 4.2). Repeating the same command will fail the same
    /// way (e.g. 530, 550, 553).
    pub const fn is_permanent_negative(self) -> bool {
        self.0 / 100 == 5
    }
}

impl fmt::Display for ReplyCode {
    /// The three digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.0)
    }
}

/// One complete reply: a code and one or more lines of text.
///
/// `lines[0]` is the text after `NNN-` / `NNN ` on the first line; further entries are the continuation lines
/// of a multi-line reply, the last one being the text of the `NNN ` terminator line. Texts never contain CR or LF
/// when they come from [`ReplyParser`]; when building a reply, a text containing CR or LF is sent as several lines.
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

    /// A multi-line reply (a single line when `lines` has one entry; one empty line when it has none).
    pub fn multiline(code: ReplyCode, lines: Vec<String>) -> Self {
        let lines = if lines.is_empty() {
            vec![String::new()]
        } else {
            lines
        };
        Self { code, lines }
    }

    /// The text of the first line (the only one of a single-line reply).
    pub fn text(&self) -> &str {
        self.lines.first().map_or("", String::as_str)
    }

    /// Appends the wire form, CRLF-terminated, to `out`.
    ///
    /// One line is written as `NNN text`; several as `NNN-first`, the continuation lines, and `NNN last` (RFC 959
    /// section 4.2). A continuation line starting with three digits gets one leading space, so that a reader can
    /// never take it for the terminator. Texts are split at CR and LF: no bare CR or LF is ever sent inside a line.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut wire = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_wire(&mut wire, "\r\n", true);
        out.extend_from_slice(wire.as_bytes());
    }

    /// The wire form as bytes, CRLF-terminated.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// The logical lines as they go on the wire: texts split at CR/LF, at least one.
    fn wire_texts(&self) -> Vec<&str> {
        let mut texts: Vec<&str> = self
            .lines
            .iter()
            .flat_map(|line| split_line_breaks(line))
            .collect();
        if texts.is_empty() {
            texts.push("");
        }
        texts
    }

    fn write_wire(&self, w: &mut impl fmt::Write, eol: &str, final_eol: bool) -> fmt::Result {
        let texts = self.wire_texts();
        let last = texts.len().saturating_sub(1);
        for (i, text) in texts.iter().enumerate() {
            if i == 0 && last > 0 {
                write!(w, "{}-{}", self.code, text)?;
            } else if i == last {
                write!(w, "{} {}", self.code, text)?;
            } else if continuation_needs_escape(text) {
                write!(w, " {text}")?;
            } else {
                w.write_str(text)?;
            }
            if i < last || final_eol {
                w.write_str(eol)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Reply {
    /// The wire form with lines separated by `\n` and no final line break, for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_wire(f, "\n", false)
    }
}

/// Splits a text at CR, LF and CRLF, ignoring one trailing line break.
fn split_line_breaks(text: &str) -> impl Iterator<Item = &str> {
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .or_else(|| text.strip_suffix('\r'))
        .unwrap_or(text);
    text.split('\n')
        .map(|piece| piece.strip_suffix('\r').unwrap_or(piece))
        .flat_map(|piece| piece.split('\r'))
}

/// RFC 959 section 4.2: a continuation line must not look like a terminator. Any line starting with three digits
/// is escaped with a leading space, which is stricter than needed but keeps every reader safe, including those
/// that end a reply on any `DDD ` line.
fn continuation_needs_escape(text: &str) -> bool {
    text.as_bytes()
        .get(..3)
        .is_some_and(|d| d.iter().all(u8::is_ascii_digit))
}

/// Why the reply stream could not be read. The client treats every one as fatal: the stream is out of step.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    /// The first line of a reply is not `DDD` followed by `-`, a space or the line end, with DDD in 100..=599.
    #[error("malformed reply line: {line:?}")]
    Malformed {
        /// The start of the offending line (lossily decoded, at most 80 characters), for diagnostics.
        line: String,
    },
    /// A line exceeded [`ReplyLimits::max_line_len`].
    #[error("reply line too long")]
    LineTooLong,
    /// A reply exceeded [`ReplyLimits::max_reply_len`] bytes.
    #[error("reply too long")]
    ReplyTooLong,
    /// A reply exceeded [`ReplyLimits::max_lines`] lines.
    #[error("reply has too many lines")]
    TooManyLines,
}

/// Bounds that keep a misbehaving server from making [`ReplyParser`] buffer without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplyLimits {
    /// Maximum bytes in one line, line terminator excluded. Default 4096.
    pub max_line_len: usize,
    /// Maximum bytes in one reply, line terminators included. Default 1 MiB.
    pub max_reply_len: usize,
    /// Maximum lines in one reply. Default 10 000.
    pub max_lines: usize,
}

impl Default for ReplyLimits {
    fn default() -> Self {
        Self {
            max_line_len: 4096,
            max_reply_len: 1 << 20,
            max_lines: 10_000,
        }
    }
}

/// A multi-line reply whose terminator has not arrived yet.
#[derive(Debug)]
struct PendingReply {
    code: ReplyCode,
    lines: Vec<String>,
    wire_len: usize,
}

/// Reads replies from the control-channel byte stream, whatever the chunking.
///
/// Tolerates what real servers send: CRLF or bare LF, continuation lines starting with spaces, digits or another
/// code, a terminator without text (`226` alone), trailing whitespace, and text that is not UTF-8 (decoded
/// lossily: the code is what matters). Only a line starting with the reply's own code followed by a space or the
/// line end terminates a multi-line reply (RFC 959 section 4.2).
///
/// Errors are sticky: once [`decode`](Self::decode) returned an error, every later call returns it again and
/// consumes nothing.
#[derive(Debug)]
pub struct ReplyParser {
    limits: ReplyLimits,
    /// The current, unfinished line.
    line: Vec<u8>,
    pending: Option<PendingReply>,
    error: Option<ReplyError>,
}

impl Default for ReplyParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplyParser {
    /// A parser with the default [`ReplyLimits`].
    pub fn new() -> Self {
        Self::with_limits(ReplyLimits::default())
    }

    /// A parser with the given limits.
    pub fn with_limits(limits: ReplyLimits) -> Self {
        Self {
            limits,
            line: Vec::new(),
            pending: None,
            error: None,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> ReplyLimits {
        self.limits
    }

    /// Consumes bytes up to and including the last line of the next complete reply.
    ///
    /// Returns how many bytes of `input` were consumed and, when a reply ended within them, that reply or the
    /// error that makes the stream unreadable. At most one reply is returned per call and bytes after its last
    /// line are left unconsumed, so a client can stop at `234` (AUTH TLS accepted, RFC 4217 section 4) with the
    /// rest still in hand: those bytes belong to TLS.
    #[must_use = "the consumed count and the reply must be handled"]
    pub fn decode(&mut self, input: &[u8]) -> (usize, Option<Result<Reply, ReplyError>>) {
        if let Some(error) = &self.error {
            return (0, Some(Err(error.clone())));
        }
        // One extra byte for the CR of a CRLF, which is not part of the line.
        let max_raw_line = self.limits.max_line_len.saturating_add(1);
        let mut consumed = 0;
        while let Some(rest) = input.get(consumed..).filter(|rest| !rest.is_empty()) {
            let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
                consumed += rest.len();
                let buffered = self.line.len().saturating_add(rest.len());
                // Past the limit only by a CR that may yet turn out to end the line.
                let only_cr_over = buffered == max_raw_line && rest.last() == Some(&b'\r');
                if buffered > self.limits.max_line_len && !only_cr_over {
                    return self.fail(consumed, ReplyError::LineTooLong);
                }
                self.line.extend_from_slice(rest);
                return (consumed, None);
            };
            consumed += lf + 1;
            if self.line.len().saturating_add(lf) > max_raw_line {
                return self.fail(consumed, ReplyError::LineTooLong);
            }
            self.line
                .extend_from_slice(rest.get(..lf).unwrap_or_default());
            let wire_len = self.line.len() + 1;
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            if line.len() > self.limits.max_line_len {
                return self.fail(consumed, ReplyError::LineTooLong);
            }
            match self.handle_line(&line, wire_len) {
                Ok(Some(reply)) => return (consumed, Some(Ok(reply))),
                Ok(None) => {
                    // Keep the allocation for the next line.
                    line.clear();
                    self.line = line;
                }
                Err(error) => return self.fail(consumed, error),
            }
        }
        (consumed, None)
    }

    /// Bytes consumed but not yet returned as a reply: the lines of an unfinished reply and a partial line.
    /// Zero between replies, so a non-zero value at end of stream means a truncated reply.
    pub fn buffered_len(&self) -> usize {
        self.line.len() + self.pending.as_ref().map_or(0, |p| p.wire_len)
    }

    fn fail(
        &mut self,
        consumed: usize,
        error: ReplyError,
    ) -> (usize, Option<Result<Reply, ReplyError>>) {
        self.error = Some(error.clone());
        self.pending = None;
        self.line = Vec::new();
        (consumed, Some(Err(error)))
    }

    fn handle_line(&mut self, line: &[u8], wire_len: usize) -> Result<Option<Reply>, ReplyError> {
        let Some(mut pending) = self.pending.take() else {
            let (code, more, text) =
                parse_first_line(line).ok_or_else(|| ReplyError::Malformed {
                    line: String::from_utf8_lossy(line).chars().take(80).collect(),
                })?;
            if wire_len > self.limits.max_reply_len {
                return Err(ReplyError::ReplyTooLong);
            }
            if !more {
                return Ok(Some(Reply {
                    code,
                    lines: vec![text],
                }));
            }
            if self.limits.max_lines < 2 {
                return Err(ReplyError::TooManyLines);
            }
            self.pending = Some(PendingReply {
                code,
                lines: vec![text],
                wire_len,
            });
            return Ok(None);
        };
        pending.wire_len = pending.wire_len.saturating_add(wire_len);
        if pending.wire_len > self.limits.max_reply_len {
            return Err(ReplyError::ReplyTooLong);
        }
        if pending.lines.len() >= self.limits.max_lines {
            return Err(ReplyError::TooManyLines);
        }
        if let Some(text) = terminator_text(line, pending.code) {
            pending.lines.push(text);
            return Ok(Some(Reply {
                code: pending.code,
                lines: pending.lines,
            }));
        }
        // A line that would not terminate but would still be the last allowed one cannot lead anywhere.
        if pending.lines.len() + 1 >= self.limits.max_lines {
            return Err(ReplyError::TooManyLines);
        }
        pending.lines.push(decode_text(line));
        self.pending = Some(pending);
        Ok(None)
    }
}

/// The three-digit code at the start of `line`, when there is one in 100..=599.
fn leading_code(line: &[u8]) -> Option<ReplyCode> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits
        .iter()
        .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0'));
    ReplyCode::new(value)
}

/// `DDD-text`, `DDD text` or `DDD`: the code, whether more lines follow, and the text.
fn parse_first_line(line: &[u8]) -> Option<(ReplyCode, bool, String)> {
    let code = leading_code(line)?;
    match line.get(3) {
        None => Some((code, false, String::new())),
        Some(b'-') => Some((code, true, decode_text(line.get(4..).unwrap_or_default()))),
        Some(b' ') => Some((code, false, decode_text(line.get(4..).unwrap_or_default()))),
        Some(_) => None,
    }
}

/// The text of `line` when it terminates a multi-line reply with `code`: `DDD text` or `DDD` alone.
fn terminator_text(line: &[u8], code: ReplyCode) -> Option<String> {
    if leading_code(line)? != code {
        return None;
    }
    match line.get(3) {
        None => Some(String::new()),
        Some(b' ') => Some(decode_text(line.get(4..).unwrap_or_default())),
        Some(_) => None,
    }
}

/// Lossy UTF-8; a stray CR (one not ending the line) becomes a space, so texts never contain CR.
fn decode_text(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.contains('\r') {
        text.replace('\r', " ")
    } else {
        text.into_owned()
    }
}

// --- structured replies ---

impl Reply {
    /// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).` (RFC 959 section 4.1.2).
    pub fn pasv(addr: SocketAddrV4) -> Self {
        let [h1, h2, h3, h4] = addr.ip().octets();
        let [p1, p2] = addr.port().to_be_bytes();
        Self::new(
            ReplyCode::ENTERING_PASSIVE_MODE,
            format!("Entering Passive Mode ({h1},{h2},{h3},{h4},{p1},{p2})."),
        )
    }

    /// The address of a 227 reply: the first six comma-separated numbers 0..=255 in its text, whatever surrounds
    /// them (servers write `(h1,...,p2)`, `=h1,...,p2`, with or without a final dot, sometimes with spaces).
    pub fn parse_pasv(&self) -> Option<SocketAddrV4> {
        if self.code != ReplyCode::ENTERING_PASSIVE_MODE {
            return None;
        }
        self.lines.iter().find_map(|line| scan_pasv_numbers(line))
    }

    /// `229 Entering Extended Passive Mode (|||port|)` (RFC 2428 section 3).
    pub fn epsv(port: u16) -> Self {
        Self::new(
            ReplyCode::ENTERING_EXTENDED_PASSIVE_MODE,
            format!("Entering Extended Passive Mode (|||{port}|)"),
        )
    }

    /// The port of a 229 reply: `(<d><d><d>port<d>)` with any delimiter `<d>` (RFC 2428 section 3), parentheses
    /// optional. Port 0 is refused.
    pub fn parse_epsv(&self) -> Option<u16> {
        if self.code != ReplyCode::ENTERING_EXTENDED_PASSIVE_MODE {
            return None;
        }
        self.lines.iter().find_map(|line| scan_epsv_port(line))
    }

    /// `257 "path" comment`, doubling every `"` in the path (RFC 959 appendix II). The comment is left out when
    /// empty. The path must not contain CR or LF, which cannot be sent on a control line.
    pub fn pathname(path: &str, comment: &str) -> Self {
        let quoted = path.replace('"', "\"\"");
        let text = if comment.is_empty() {
            format!("\"{quoted}\"")
        } else {
            format!("\"{quoted}\" {comment}")
        };
        Self::new(ReplyCode::PATHNAME_CREATED, text)
    }

    /// The path of a 257 reply: the first quoted string of its first line, with `""` undoubled.
    pub fn parse_pathname(&self) -> Option<String> {
        if self.code != ReplyCode::PATHNAME_CREATED {
            return None;
        }
        let (_, after_quote) = self.text().split_once('"')?;
        let mut path = String::new();
        let mut chars = after_quote.chars();
        while let Some(c) = chars.next() {
            if c == '"' {
                if chars.as_str().starts_with('"') {
                    chars.next();
                } else {
                    return Some(path);
                }
            }
            path.push(c);
        }
        // No closing quote: not a pathname reply we can trust.
        None
    }

    /// The 211 reply to `FEAT` (RFC 2389 section 3.2): `211-Extensions supported:`, one line per feature with a
    /// single leading space, `211 End`. With no features, the single line `211 No features`.
    pub fn feat(features: &Features) -> Self {
        if features.is_empty() {
            return Self::new(ReplyCode::SYSTEM_STATUS, "No features");
        }
        let mut lines = Vec::with_capacity(features.len() + 2);
        lines.push("Extensions supported:".to_string());
        lines.extend(features.to_lines());
        lines.push("End".to_string());
        Self::multiline(ReplyCode::SYSTEM_STATUS, lines)
    }

    /// The features of a 211 reply to `FEAT`: the lines between the first and the last. A single-line 211 lists
    /// none.
    pub fn parse_feat(&self) -> Option<Features> {
        if self.code != ReplyCode::SYSTEM_STATUS {
            return None;
        }
        let inner = self
            .lines
            .get(1..self.lines.len().saturating_sub(1))
            .unwrap_or_default();
        Some(Features::from_lines(inner.iter().map(String::as_str)))
    }

    /// `213 <size>`, the reply to `SIZE` (RFC 3659 section 4.2).
    pub fn file_size(size: u64) -> Self {
        Self::new(ReplyCode::FILE_STATUS, size.to_string())
    }

    /// The size in a 213 reply to `SIZE`.
    pub fn parse_file_size(&self) -> Option<u64> {
        if self.code != ReplyCode::FILE_STATUS {
            return None;
        }
        let digits = self.text().trim();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// `213 YYYYMMDDHHMMSS[.sss]`, the reply to `MDTM` (RFC 3659 section 3.2: the text is exactly the time).
    pub fn modification_time(time: Timeval) -> Self {
        Self::new(ReplyCode::FILE_STATUS, time.to_string())
    }

    /// The time in a 213 reply to `MDTM`. Surrounding whitespace is tolerated.
    pub fn parse_modification_time(&self) -> Option<Timeval> {
        if self.code != ReplyCode::FILE_STATUS {
            return None;
        }
        Timeval::parse(self.text().trim())
    }
}

/// Finds the first run of six comma-separated numbers 0..=255 in `text` (spaces allowed around commas).
fn scan_pasv_numbers(text: &str) -> Option<SocketAddrV4> {
    let bytes = text.as_bytes();
    let mut start = 0;
    while start < bytes.len() {
        let at_number_start = bytes.get(start).is_some_and(u8::is_ascii_digit)
            && (start == 0 || !bytes.get(start - 1).is_some_and(u8::is_ascii_digit));
        if at_number_start {
            if let Some(n) = six_numbers(bytes.get(start..).unwrap_or_default()) {
                let ip = Ipv4Addr::new(n[0], n[1], n[2], n[3]);
                return Some(SocketAddrV4::new(ip, u16::from_be_bytes([n[4], n[5]])));
            }
        }
        start += 1;
    }
    None
}

/// Six numbers 0..=255 separated by commas at the start of `bytes`.
fn six_numbers(bytes: &[u8]) -> Option<[u8; 6]> {
    let mut numbers = [0u8; 6];
    let mut pos = 0;
    for (i, slot) in numbers.iter_mut().enumerate() {
        if i > 0 {
            pos = skip_spaces(bytes, pos);
            if bytes.get(pos) != Some(&b',') {
                return None;
            }
            pos = skip_spaces(bytes, pos + 1);
        }
        let len = bytes
            .get(pos..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if len == 0 || len > 3 {
            return None;
        }
        let digits = std::str::from_utf8(bytes.get(pos..pos + len)?).ok()?;
        *slot = digits.parse().ok()?;
        pos += len;
    }
    Some(numbers)
}

fn skip_spaces(bytes: &[u8], mut pos: usize) -> usize {
    while bytes.get(pos) == Some(&b' ') {
        pos += 1;
    }
    pos
}

/// Finds `<d><d><d>port<d>` in `text`, `<d>` being any printable non-digit character (RFC 2428 section 3).
fn scan_epsv_port(text: &str) -> Option<u16> {
    let bytes = text.as_bytes();
    (0..bytes.len()).find_map(|start| {
        let rest = bytes.get(start..)?;
        let (&d, rest) = rest.split_first()?;
        if !d.is_ascii_graphic() || d.is_ascii_digit() {
            return None;
        }
        let rest = rest.strip_prefix(&[d, d])?;
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || len > 5 || rest.get(len) != Some(&d) {
            return None;
        }
        let port: u16 = std::str::from_utf8(rest.get(..len)?).ok()?.parse().ok()?;
        (port != 0).then_some(port)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::Feature;
    use proptest::prelude::*;

    fn code(n: u16) -> ReplyCode {
        ReplyCode::new(n).unwrap()
    }

    fn lines(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn negative_replies_are_transient_or_permanent_by_first_digit() {
        for n in [421, 425, 426, 450, 451, 452, 499] {
            assert!(code(n).is_transient_negative(), "{n}");
            assert!(!code(n).is_permanent_negative(), "{n}");
        }
        for n in [500, 530, 550, 553, 599] {
            assert!(code(n).is_permanent_negative(), "{n}");
            assert!(!code(n).is_transient_negative(), "{n}");
        }
        for n in [150, 226, 350] {
            assert!(!code(n).is_transient_negative() && !code(n).is_permanent_negative());
        }
    }

    /// Feeds `chunks` in order, collecting every reply or error, and checks each call's consumption.
    fn decode_chunks<'a>(
        parser: &mut ReplyParser,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Vec<Result<Reply, ReplyError>> {
        let mut out = Vec::new();
        for chunk in chunks {
            let mut rest = chunk;
            loop {
                let (consumed, result) = parser.decode(rest);
                assert!(consumed <= rest.len());
                rest = &rest[consumed..];
                match result {
                    Some(Err(e)) => {
                        out.push(Err(e));
                        return out;
                    }
                    Some(Ok(reply)) => out.push(Ok(reply)),
                    None => {
                        assert!(rest.is_empty(), "no reply yet but input left");
                        break;
                    }
                }
                if rest.is_empty() {
                    break;
                }
            }
        }
        out
    }

    fn decode_whole(bytes: &[u8]) -> Vec<Result<Reply, ReplyError>> {
        decode_chunks(&mut ReplyParser::new(), [bytes])
    }

    fn parse_one(text: &str) -> Reply {
        let mut results = decode_whole(text.as_bytes());
        assert_eq!(results.len(), 1, "{results:?}");
        results.remove(0).unwrap()
    }

    #[test]
    fn encodes_single_and_multi_line_replies() {
        assert_eq!(
            Reply::new(ReplyCode::COMMAND_OK, "OK").to_bytes(),
            b"200 OK\r\n"
        );
        assert_eq!(
            Reply::new(ReplyCode::CLOSING_DATA_CONNECTION, "").to_bytes(),
            b"226 \r\n"
        );
        let reply = Reply::multiline(
            ReplyCode::SYSTEM_STATUS,
            lines(&["Features:", " UTF8", "211 not the end", "123", "End"]),
        );
        assert_eq!(
            reply.to_bytes(),
            b"211-Features:\r\n UTF8\r\n 211 not the end\r\n 123\r\n211 End\r\n"
        );
        assert_eq!(
            reply.to_string(),
            "211-Features:\n UTF8\n 211 not the end\n 123\n211 End"
        );
        assert_eq!(
            Reply::multiline(ReplyCode::COMMAND_OK, vec![]).lines,
            vec![String::new()]
        );
        assert_eq!(ReplyCode::COMMAND_OK.to_string(), "200");
    }

    #[test]
    fn encode_splits_texts_at_line_breaks() {
        let reply = Reply::new(ReplyCode::SERVICE_READY, "Welcome\r\nto\nthe\rserver\n");
        assert_eq!(
            reply.to_bytes(),
            b"220-Welcome\r\nto\r\nthe\r\n220 server\r\n"
        );
        let reply = Reply::multiline(ReplyCode::HELP_MESSAGE, lines(&["a\n214 b", "c"]));
        assert_eq!(reply.to_bytes(), b"214-a\r\n 214 b\r\n214 c\r\n");
    }

    #[test]
    fn parses_single_and_multi_line_replies() {
        assert_eq!(
            parse_one("220 Welcome\r\n"),
            Reply::new(code(220), "Welcome")
        );
        assert_eq!(parse_one("226\r\n"), Reply::new(code(226), ""));
        assert_eq!(parse_one("226 \n"), Reply::new(code(226), ""));
        assert_eq!(parse_one("230 ok  \r\n"), Reply::new(code(230), "ok  "));
        let text = "211-Features:\n EPRT\n211-still going\n230 other code\n150-dash\n  spaces\n2111 x\n211\n";
        assert_eq!(
            parse_one(text),
            Reply::multiline(
                code(211),
                lines(&[
                    "Features:",
                    " EPRT",
                    "211-still going",
                    "230 other code",
                    "150-dash",
                    "  spaces",
                    "2111 x",
                    ""
                ])
            )
        );
    }

    #[test]
    fn lossy_decodes_invalid_utf8_and_stray_cr() {
        let results = decode_whole(b"550 bad \xff name\r\r\n");
        assert_eq!(
            results,
            vec![Ok(Reply::new(code(550), "bad \u{fffd} name "))]
        );
    }

    #[test]
    fn stops_after_each_reply_leaving_the_rest() {
        let mut parser = ReplyParser::new();
        let input = b"234 AUTH TLS OK.\r\n\x16\x03\x01\x00";
        let (consumed, reply) = parser.decode(input);
        assert_eq!(consumed, 18);
        assert_eq!(
            reply,
            Some(Ok(Reply::new(ReplyCode::AUTH_OK, "AUTH TLS OK.")))
        );
        assert_eq!(parser.buffered_len(), 0);

        let mut parser = ReplyParser::new();
        let (consumed, reply) = parser.decode(b"150 go\r\n226 done\r\n");
        assert_eq!(
            (consumed, reply),
            (8, Some(Ok(Reply::new(code(150), "go"))))
        );
    }

    #[test]
    fn buffered_len_counts_unfinished_reply() {
        let mut parser = ReplyParser::new();
        assert_eq!(parser.decode(b"211-a\r\n b\r\n21"), (13, None));
        assert_eq!(parser.buffered_len(), 13);
        assert_eq!(parser.decode(b"1 end\r\n").0, 7);
        assert_eq!(parser.buffered_len(), 0);
    }

    #[test]
    fn malformed_first_lines_are_errors() {
        for line in [
            "abc\r\n",
            "099 low\r\n",
            "600 high\r\n",
            "2200 x\r\n",
            "22\r\n",
            "\r\n",
            " 220 x\r\n",
            "220x\r\n",
        ] {
            let results = decode_whole(line.as_bytes());
            assert!(
                matches!(results.as_slice(), [Err(ReplyError::Malformed { .. })]),
                "{line:?}: {results:?}"
            );
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut parser = ReplyParser::new();
        let (consumed, result) = parser.decode(b"xyz\r\n200 ok\r\n");
        assert_eq!(consumed, 5);
        assert_eq!(
            result,
            Some(Err(ReplyError::Malformed { line: "xyz".into() }))
        );
        assert_eq!(
            parser.decode(b"200 ok\r\n"),
            (0, Some(Err(ReplyError::Malformed { line: "xyz".into() })))
        );
    }

    #[test]
    fn limits_are_enforced() {
        let mut limits = ReplyLimits {
            max_line_len: 10,
            max_lines: 3,
            max_reply_len: 40,
        };
        // A line of exactly the limit is fine, CR aside; one more byte is not, even before its end arrives.
        let mut parser = ReplyParser::with_limits(limits);
        assert_eq!(
            decode_chunks(&mut parser, [&b"200 456789\r\n"[..]]),
            vec![Ok(Reply::new(code(200), "456789"))]
        );
        let mut parser = ReplyParser::with_limits(limits);
        assert_eq!(
            decode_chunks(&mut parser, [&b"200 4567890"[..]]),
            vec![Err(ReplyError::LineTooLong)]
        );
        let mut parser = ReplyParser::with_limits(limits);
        assert_eq!(
            decode_chunks(&mut parser, [&b"200 4567890\n"[..]]),
            vec![Err(ReplyError::LineTooLong)]
        );
        // Three lines are fine; a fourth is not.
        let mut parser = ReplyParser::with_limits(limits);
        assert_eq!(
            decode_chunks(&mut parser, [&b"211-a\r\nb\r\n211 c\r\n"[..]]).len(),
            1
        );
        let mut parser = ReplyParser::with_limits(limits);
        assert_eq!(
            decode_chunks(&mut parser, [&b"211-a\r\nb\r\nc\r\n211 d\r\n"[..]]),
            vec![Err(ReplyError::TooManyLines)]
        );
        // Total size.
        limits.max_lines = 100;
        let mut parser = ReplyParser::with_limits(limits);
        let long = b"211-aaaaaa\r\nbbbbbbbbbb\r\ncccccccccc\r\n211 d\r\n";
        assert_eq!(
            decode_chunks(&mut parser, [&long[..]]),
            vec![Err(ReplyError::ReplyTooLong)]
        );
    }

    #[test]
    fn pasv_replies_from_real_servers() {
        let addr = |a: [u8; 4], port: u16| Some(SocketAddrV4::new(Ipv4Addr::from(a), port));
        let cases = [
            // vsftpd
            (
                "227 Entering Passive Mode (127,0,0,1,156,64).\r\n",
                addr([127, 0, 0, 1], 156 * 256 + 64),
            ),
            // ProFTPD
            (
                "227 Entering Passive Mode (192,168,1,10,117,48).\r\n",
                addr([192, 168, 1, 10], 117 * 256 + 48),
            ),
            // Pure-FTPd
            (
                "227 Entering Passive Mode (127,0,0,1,117,50)\r\n",
                addr([127, 0, 0, 1], 117 * 256 + 50),
            ),
            // FileZilla Server
            (
                "227 Entering Passive Mode (127,0,0,1,195,80)\r\n",
                addr([127, 0, 0, 1], 195 * 256 + 80),
            ),
            // IIS
            (
                "227 Entering Passive Mode (10,0,0,5,195,149).\r\n",
                addr([10, 0, 0, 5], 195 * 256 + 149),
            ),
            ("227 =127,0,0,1,4,1\r\n", addr([127, 0, 0, 1], 1025)),
            (
                "227 Entering Passive Mode 127,0,0,1,4,1\r\n",
                addr([127, 0, 0, 1], 1025),
            ),
            (
                "227 Entering Passive Mode ( 127, 0, 0, 1, 4, 1 )\r\n",
                addr([127, 0, 0, 1], 1025),
            ),
            ("227 Mode 3 (127,0,0,1,4,1)\r\n", addr([127, 0, 0, 1], 1025)),
            (
                "227 x (1234,0,0,1,4,1) (1,2,3,4,5,6)\r\n",
                addr([1, 2, 3, 4], 5 * 256 + 6),
            ),
            ("227 Entering Passive Mode (127,0,0,256,4,1)\r\n", None),
            ("227 Entering Passive Mode (127,0,0,1,4)\r\n", None),
            ("200 Entering Passive Mode (127,0,0,1,4,1)\r\n", None),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_one(line).parse_pasv(), expected, "{line}");
        }
        let reply = Reply::pasv(SocketAddrV4::new(Ipv4Addr::new(10, 1, 2, 3), 50_000));
        assert_eq!(
            reply.to_bytes(),
            b"227 Entering Passive Mode (10,1,2,3,195,80).\r\n"
        );
    }

    #[test]
    fn epsv_replies() {
        let cases = [
            (
                "229 Entering Extended Passive Mode (|||6446|)\r\n",
                Some(6446),
            ),
            (
                "229 Entering Extended Passive Mode (!!!6446!)\r\n",
                Some(6446),
            ),
            ("229 Extended Passive mode OK (|||50000|)\r\n", Some(50000)),
            ("229 |||21|\r\n", Some(21)),
            ("229 Entering Extended Passive Mode (|||0|)\r\n", None),
            ("229 Entering Extended Passive Mode (|||70000|)\r\n", None),
            ("229 Entering Extended Passive Mode (||6446|)\r\n", None),
            ("227 Entering Extended Passive Mode (|||6446|)\r\n", None),
        ];
        for (line, expected) in cases {
            assert_eq!(parse_one(line).parse_epsv(), expected, "{line}");
        }
        assert_eq!(
            Reply::epsv(6446).to_bytes(),
            b"229 Entering Extended Passive Mode (|||6446|)\r\n"
        );
    }

    #[test]
    fn pathname_replies() {
        let reply = parse_one("257 \"/home/user\" is the current directory\r\n");
        assert_eq!(reply.parse_pathname().as_deref(), Some("/home/user"));
        let reply = parse_one("257 \"/a \"\"quoted\"\" dir\" created\r\n");
        assert_eq!(reply.parse_pathname().as_deref(), Some("/a \"quoted\" dir"));
        assert_eq!(
            parse_one("257 \"\"\r\n").parse_pathname().as_deref(),
            Some("")
        );
        assert_eq!(parse_one("257 \"/unterminated\r\n").parse_pathname(), None);
        assert_eq!(parse_one("257 no quotes\r\n").parse_pathname(), None);
        let reply = Reply::pathname("/say \"hi\"", "created");
        assert_eq!(reply.to_bytes(), b"257 \"/say \"\"hi\"\"\" created\r\n");
        assert_eq!(Reply::pathname("/", "").to_bytes(), b"257 \"/\"\r\n");
    }

    #[test]
    fn size_and_mdtm_replies() {
        assert_eq!(
            parse_one("213 123456789012\r\n").parse_file_size(),
            Some(123_456_789_012)
        );
        assert_eq!(parse_one("213 12 \r\n").parse_file_size(), Some(12));
        assert_eq!(parse_one("213 -1\r\n").parse_file_size(), None);
        assert_eq!(
            parse_one("213 18446744073709551616\r\n").parse_file_size(),
            None
        );
        assert_eq!(parse_one("550 12\r\n").parse_file_size(), None);
        assert_eq!(Reply::file_size(42).to_bytes(), b"213 42\r\n");

        let time = Timeval::new(2020, 2, 29, 23, 59, 60, Some(5)).unwrap();
        assert_eq!(
            Reply::modification_time(time).to_bytes(),
            b"213 20200229235960.005\r\n"
        );
        assert_eq!(
            parse_one("213 20200229235960.005\r\n").parse_modification_time(),
            Some(time)
        );
        let time = Timeval::new(2021, 1, 2, 3, 4, 5, None).unwrap();
        assert_eq!(
            parse_one("213 20210102030405\r\n").parse_modification_time(),
            Some(time)
        );
        assert_eq!(
            parse_one("213 20210230030405\r\n").parse_modification_time(),
            None
        );
        assert_eq!(
            parse_one("213 2021010203040\r\n").parse_modification_time(),
            None
        );
    }

    const VSFTPD_FEAT: &str =
        "211-Features:\r\n AUTH SSL\r\n AUTH TLS\r\n EPRT\r\n EPSV\r\n MDTM\r\n PASV\r\n \
        PBSZ\r\n PROT\r\n REST STREAM\r\n SIZE\r\n TVFS\r\n UTF8\r\n211 End\r\n";
    const PROFTPD_FEAT: &str = "211-Features:\r\n AUTH TLS\r\n CCC\r\n CLNT\r\n EPRT\r\n EPSV\r\n HOST\r\n \
        LANG en-US.UTF-8*;en-US\r\n MDTM\r\n MFF modify;UNIX.group;UNIX.mode;\r\n MFMT\r\n \
        MLST modify*;perm*;size*;type*;unique*;UNIX.group*;UNIX.groupname*;UNIX.mode*;UNIX.owner*;UNIX.ownername*;\r\n \
        PBSZ\r\n PROT\r\n REST STREAM\r\n SIZE\r\n SSCN\r\n TVFS\r\n211 End\r\n";
    const PUREFTPD_FEAT: &str = "211-Extensions supported:\r\n UTF8\r\n EPRT\r\n IDLE\r\n MDTM\r\n SIZE\r\n \
        MFMT\r\n REST STREAM\r\n MLST type*;size*;sizd*;modify*;UNIX.mode*;UNIX.uid*;UNIX.gid*;unique*;\r\n MLSD\r\n \
        PERM\r\n AUTH TLS\r\n PBSZ\r\n PROT\r\n TVFS\r\n ESTA\r\n PASV\r\n EPSV\r\n ESTP\r\n211 End.\r\n";

    #[test]
    fn feat_replies_from_real_servers() {
        let vsftpd = parse_one(VSFTPD_FEAT).parse_feat().unwrap();
        assert_eq!(vsftpd.len(), 12);
        assert_eq!(vsftpd.params("AUTH"), Some("SSL"));
        assert_eq!(
            vsftpd.params_all("auth").collect::<Vec<_>>(),
            vec!["SSL", "TLS"]
        );
        assert!(vsftpd.has_auth("tls"));
        assert!(vsftpd.has("UTF8") && vsftpd.has("rest") && !vsftpd.has("MLST"));
        assert_eq!(vsftpd.params("REST"), Some("STREAM"));
        assert_eq!(vsftpd.params("SIZE"), None);

        let proftpd = parse_one(PROFTPD_FEAT).parse_feat().unwrap();
        assert_eq!(proftpd.len(), 17);
        assert_eq!(proftpd.params("LANG"), Some("en-US.UTF-8*;en-US"));
        assert!(proftpd.has("SSCN") && proftpd.has_auth("TLS") && !proftpd.has_auth("SSL"));
        let facts: Vec<_> = proftpd.mlst_facts().collect();
        assert_eq!(facts.len(), 10);
        assert_eq!(facts[0], ("modify", true));
        assert_eq!(facts[9], ("UNIX.ownername", true));

        let pure = parse_one(PUREFTPD_FEAT).parse_feat().unwrap();
        assert_eq!(pure.len(), 18);
        assert_eq!(
            pure.iter().next().unwrap(),
            &Feature {
                name: "UTF8".into(),
                params: None
            }
        );
        assert_eq!(
            pure.params("mlst"),
            Some("type*;size*;sizd*;modify*;UNIX.mode*;UNIX.uid*;UNIX.gid*;unique*;")
        );
        assert_eq!(
            pure.mlst_facts().take(2).collect::<Vec<_>>(),
            vec![("type", true), ("size", true)]
        );

        assert_eq!(
            parse_one("211 No features\r\n").parse_feat(),
            Some(Features::new())
        );
        assert_eq!(parse_one("500 FEAT?\r\n").parse_feat(), None);
        // Lower-case names and a repeated `211-` prefix are tolerated.
        let odd = parse_one("211-Features\r\n211-mdtm\r\n\r\n size \r\n211 End\r\n")
            .parse_feat()
            .unwrap();
        assert_eq!(
            odd.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            vec!["MDTM", "SIZE"]
        );
        // Only an unindented prefix is stripped, so re-formatting is stable.
        let odd = parse_one("211-Features\r\n 211-X\r\n211 End\r\n")
            .parse_feat()
            .unwrap();
        assert_eq!(
            odd.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            vec!["211-X"]
        );
        assert_eq!(Reply::feat(&odd).parse_feat(), Some(odd));
    }

    #[test]
    fn feat_formats_per_rfc2389() {
        let mut features = Features::new();
        features.push("mlst", Some("type*;size*;modify*;"));
        features.push("AUTH", Some("TLS"));
        features.push("UTF8", None);
        features.push("REST", Some("  "));
        assert_eq!(
            Reply::feat(&features).to_bytes(),
            b"211-Extensions supported:\r\n MLST type*;size*;modify*;\r\n AUTH TLS\r\n UTF8\r\n REST\r\n211 End\r\n"
        );
        assert_eq!(
            Reply::feat(&Features::new()).to_bytes(),
            b"211 No features\r\n"
        );
    }

    fn arb_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[ -~]{0,30}",
            "[0-9]{3}[ -]?[a-z ]{0,5}",
            "[0-9 \\-a-zé\u{fffd}]{0,12}",
        ]
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        (100u16..=599, prop::collection::vec(arb_text(), 1..6))
            .prop_map(|(n, lines)| Reply::multiline(code(n), lines))
    }

    /// What the parser gives back for `reply`: continuation lines the encoder escaped keep their leading space.
    fn normalised(reply: &Reply) -> Reply {
        let last = reply.lines.len() - 1;
        let lines = reply
            .lines
            .iter()
            .enumerate()
            .map(|(i, line)| {
                if i > 0 && i < last && continuation_needs_escape(line) {
                    format!(" {line}")
                } else {
                    line.clone()
                }
            })
            .collect();
        Reply {
            code: reply.code,
            lines,
        }
    }

    proptest! {
        #[test]
        fn encode_then_parse_is_identity_after_escaping(replies in prop::collection::vec(arb_reply(), 1..5)) {
            let mut wire = Vec::new();
            for reply in &replies {
                reply.encode(&mut wire);
            }
            let expected: Vec<_> = replies.iter().map(|r| Ok(normalised(r))).collect();
            prop_assert_eq!(decode_whole(&wire), expected);
        }

        #[test]
        fn chunking_does_not_change_replies(
            replies in prop::collection::vec(arb_reply(), 1..5),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            bare_lf in any::<bool>(),
        ) {
            let mut wire = Vec::new();
            for reply in &replies {
                reply.encode(&mut wire);
            }
            if bare_lf {
                wire.retain(|&b| b != b'\r');
            }
            let whole = decode_whole(&wire);
            prop_assert_eq!(whole.len(), replies.len());
            let bytewise = decode_chunks(&mut ReplyParser::new(), wire.chunks(1));
            prop_assert_eq!(&bytewise, &whole);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut start = 0;
            for p in points.into_iter().chain([wire.len()]) {
                chunks.push(&wire[start..p]);
                start = p;
            }
            let split = decode_chunks(&mut ReplyParser::new(), chunks);
            prop_assert_eq!(&split, &whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), small in any::<bool>()) {
            let mut limits = ReplyLimits::default();
            if small {
                limits.max_line_len = 8;
                limits.max_lines = 3;
                limits.max_reply_len = 30;
            }
            let mut parser = ReplyParser::with_limits(limits);
            for reply in decode_chunks(&mut parser, bytes.chunks(7)).into_iter().flatten() {
                prop_assert!(!reply.lines.is_empty());
                prop_assert!(reply.lines.iter().all(|l| !l.contains(['\r', '\n'])));
                let _ = (reply.parse_pasv(), reply.parse_epsv(), reply.parse_pathname(), reply.parse_feat());
                let _ = (reply.parse_file_size(), reply.parse_modification_time());
            }
        }

        #[test]
        fn structured_parsers_never_panic_on_any_text(n in 100u16..=599, text in "\\PC{0,40}") {
            for c in [n, 211, 213, 227, 229, 257] {
                let reply = Reply::multiline(code(c), vec![text.clone(), text.clone(), text.clone()]);
                let _ = (reply.parse_pasv(), reply.parse_epsv(), reply.parse_pathname(), reply.parse_feat());
                let _ = (reply.parse_file_size(), reply.parse_modification_time());
            }
        }

        #[test]
        fn structured_round_trips(
            ip in any::<[u8; 4]>(), port in any::<u16>(), epsv_port in 1u16.., size in any::<u64>(),
            path in "[^\r\n]{0,30}", comment in "[ -~]{0,20}",
        ) {
            let addr = SocketAddrV4::new(Ipv4Addr::from(ip), port);
            prop_assert_eq!(parse_one(&String::from_utf8(Reply::pasv(addr).to_bytes()).unwrap()).parse_pasv(), Some(addr));
            prop_assert_eq!(Reply::epsv(epsv_port).parse_epsv(), Some(epsv_port));
            prop_assert_eq!(Reply::file_size(size).parse_file_size(), Some(size));
            prop_assert_eq!(Reply::pathname(&path, &comment).parse_pathname(), Some(path));
        }

        #[test]
        fn mdtm_round_trips(
            year in 0u16..=9999, month in 1u8..=12, day in 1u8..=28, hour in 0u8..24, minute in 0u8..60,
            second in 0u8..=60, ms in proptest::option::of(0u16..1000),
        ) {
            let time = Timeval::new(year, month, day, hour, minute, second, ms).unwrap();
            let wire = Reply::modification_time(time).to_bytes();
            let reply = parse_one(std::str::from_utf8(&wire).unwrap());
            prop_assert_eq!(reply.parse_modification_time(), Some(time));
        }

        #[test]
        fn features_round_trip(entries in prop::collection::vec(("[A-Z][A-Z0-9]{0,6}", proptest::option::of("[!-~][ -~]{0,15}[!-~]")), 0..8)) {
            let mut features = Features::new();
            for (name, params) in &entries {
                features.push(name, params.as_deref());
            }
            let wire = Reply::feat(&features).to_bytes();
            let reply = parse_one(std::str::from_utf8(&wire).unwrap());
            prop_assert_eq!(reply.parse_feat(), Some(features));
        }
    }
}
