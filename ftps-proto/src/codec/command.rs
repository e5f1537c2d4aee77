//! Typed FTP commands: what a client sends on the control channel.
//!
//! [`Command`] covers RFC 959, the RFC 775 `X*` aliases, RFC 2228, 2389, 2428, 3659, 2640, 7151, `MFMT` and the
//! site-to-site TLS commands `SSCN` / `CPSV`. Parsing is [`parse_command`]; formatting is [`Command`]'s
//! `Display` (the wire form without CRLF). Format-then-parse is the identity on values.
//!
//! Pathnames and other free text are UTF-8 (RFC 2640). A line whose argument is not valid UTF-8 is refused with
//! 501 ([`CommandErrorKind::NotUtf8`]) rather than guessed at: the engine never works with a path it cannot show
//! back to the user exactly.

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};

use super::time::Timeval;

/// One command line, parsed.
///
/// `Debug` and [`Command::masked`] hide the argument of `PASS` so that logging a command never leaks a password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Command {
    // --- RFC 959 access control (section 4.1.1) ---
    /// `USER name`
    User(String),
    /// `PASS password`
    Pass(String),
    /// `ACCT account`
    Acct(String),
    /// `CWD path` (also `XCWD`, RFC 775)
    Cwd(String),
    /// `CDUP` (also `XCUP`)
    Cdup,
    /// `SMNT path`
    Smnt(String),
    /// `REIN`
    Rein,
    /// `QUIT`
    Quit,

    // --- RFC 959 transfer parameters (4.1.2) ---
    /// `PORT h1,h2,h3,h4,p1,p2`
    Port(SocketAddrV4),
    /// `PASV`
    Pasv,
    /// `TYPE A|E [N|T|C]`, `TYPE I`, `TYPE L n`
    Type(RepresentationType),
    /// `STRU F|R|P`
    Stru(FileStructure),
    /// `MODE S|B|C|Z`
    Mode(TransferMode),

    // --- RFC 959 service commands (4.1.3) ---
    /// `RETR path`
    Retr(String),
    /// `STOR path`
    Stor(String),
    /// `STOU [path]` (the argument is a common extension: a name hint)
    Stou(Option<String>),
    /// `APPE path`
    Appe(String),
    /// `ALLO n [R m]`
    Allo {
        /// Bytes (or logical units) to reserve.
        size: u64,
        /// Maximum record or page size, when given.
        record_size: Option<u64>,
    },
    /// `REST offset`: a byte offset for the next transfer (RFC 3659 section 5, `REST STREAM`).
    Rest(u64),
    /// `RNFR path`
    Rnfr(String),
    /// `RNTO path`
    Rnto(String),
    /// `ABOR`
    Abor,
    /// `DELE path`
    Dele(String),
    /// `RMD path` (also `XRMD`)
    Rmd(String),
    /// `MKD path` (also `XMKD`)
    Mkd(String),
    /// `PWD` (also `XPWD`)
    Pwd,
    /// `LIST [path-or-options]`
    List(Option<String>),
    /// `NLST [path-or-options]`
    Nlst(Option<String>),
    /// `SITE text`: the raw text after the verb; see [`super::SiteCommand`].
    Site(String),
    /// `SYST`
    Syst,
    /// `STAT [path]`
    Stat(Option<String>),
    /// `HELP [topic]`
    Help(Option<String>),
    /// `NOOP`
    Noop,

    // --- RFC 2228 security extensions ---
    /// `AUTH mechanism`
    Auth(AuthMechanism),
    /// `ADAT base64`
    Adat(String),
    /// `PROT C|S|E|P`
    Prot(ProtectionLevel),
    /// `PBSZ n` (RFC 4217 section 8: always 0 for TLS)
    Pbsz(u32),
    /// `CCC`
    Ccc,
    /// `MIC base64`
    Mic(String),
    /// `CONF base64`
    Conf(String),
    /// `ENC base64`
    Enc(String),

    // --- RFC 2389 ---
    /// `FEAT`
    Feat,
    /// `OPTS name [value]`
    Opts {
        /// Command name the options are for, upper-cased (e.g. `UTF8`, `MLST`).
        name: String,
        /// Everything after the name, when present.
        value: Option<String>,
    },

    // --- RFC 2428 ---
    /// `EPRT |net-prt|net-addr|tcp-port|`
    Eprt(SocketAddr),
    /// `EPSV`, `EPSV ALL`, `EPSV net-prt`
    Epsv(EpsvArgument),

    // --- RFC 3659 ---
    /// `MDTM path`
    Mdtm(String),
    /// `SIZE path`
    Size(String),
    /// `MLST [path]`
    Mlst(Option<String>),
    /// `MLSD [path]`
    Mlsd(Option<String>),

    // --- RFC 2640 ---
    /// `LANG [tag]`
    Lang(Option<String>),

    // --- RFC 7151 ---
    /// `HOST name`
    Host(String),

    // --- widely implemented extensions ---
    /// `MFMT time path` (draft-somers-ftp-mfxx): set a file's modification time.
    Mfmt {
        /// New modification time (UTC).
        time: Timeval,
        /// File to change.
        path: String,
    },
    /// `SSCN [ON|OFF]`: the TLS role on site-to-site data connections; `None` queries it.
    Sscn(Option<bool>),
    /// `CPSV`: `PASV` where this server takes the TLS client role on the data connection.
    Cpsv,

    /// A verb this codec does not know. The server answers 500; the session goes on.
    Unknown {
        /// The verb, upper-cased.
        verb: String,
        /// The argument, when present.
        argument: Option<String>,
    },
}

/// `TYPE` argument (RFC 959 section 3.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RepresentationType {
    /// `A [N|T|C]`
    Ascii(FormatControl),
    /// `E [N|T|C]`
    Ebcdic(FormatControl),
    /// `I`
    Image,
    /// `L n`: local byte size
    Local(u8),
}

/// Vertical format control for `TYPE A` / `TYPE E` (RFC 959 section 3.1.1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FormatControl {
    /// `N`, the default.
    #[default]
    NonPrint,
    /// `T`
    Telnet,
    /// `C`
    Asa,
}

/// `STRU` argument (RFC 959 section 3.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileStructure {
    /// `F`
    File,
    /// `R`
    Record,
    /// `P`
    Page,
}

/// `MODE` argument (RFC 959 section 3.4; `Z` is the common deflate extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferMode {
    /// `S`
    Stream,
    /// `B`
    Block,
    /// `C`
    Compressed,
    /// `Z`
    Deflate,
}

/// `AUTH` mechanism (RFC 2228, RFC 4217 section 4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthMechanism {
    /// `TLS`
    Tls,
    /// `SSL` (historic; servers treat it like `TLS` with an implied `PROT P`)
    Ssl,
    /// `TLS-C` (historic synonym of `TLS`)
    TlsC,
    /// `TLS-P` (historic: `TLS` with an implied `PROT P`)
    TlsP,
    /// Any other mechanism name, upper-cased (e.g. `GSSAPI`).
    Other(String),
}

/// `PROT` level (RFC 2228 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtectionLevel {
    /// `C`: no protection.
    Clear,
    /// `S`: integrity only.
    Safe,
    /// `E`: confidentiality only.
    Confidential,
    /// `P`: integrity and confidentiality; with TLS, a TLS data connection.
    Private,
}

/// `EPSV` argument (RFC 2428 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EpsvArgument {
    /// No argument: the protocol of the control connection.
    Default,
    /// `ALL`: from now on only `EPSV` may set up data connections.
    All,
    /// A network protocol number (1 = IPv4, 2 = IPv6; others are answered with 522).
    Protocol(u16),
}

/// Why a command line could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// The verb, upper-cased, when one could be read.
    pub verb: Option<String>,
    /// What was wrong.
    pub kind: CommandErrorKind,
}

/// The kinds of [`CommandError`], each mapping to one reply code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CommandErrorKind {
    /// An empty line or one without a verb: 500.
    Empty,
    /// A known verb with a malformed, missing or superfluous argument: 501.
    Syntax,
    /// Bytes that are not UTF-8 where text is expected (RFC 2640): 501.
    NotUtf8,
    /// `EPRT` with a network protocol other than 1 or 2: 522 (RFC 2428 section 2).
    UnsupportedNetworkProtocol,
}

/// Parses one command line (without its line terminator; Telnet IAC sequences already removed by
/// [`LineFramer`](super::LineFramer)).
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let _ = line;
    todo!("codec helper")
}

impl fmt::Display for Command {
    /// The wire form, without CRLF.
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!("codec helper")
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, _f: &mut fmt::Formatter<'_>) -> fmt::Result {
        todo!("codec helper")
    }
}

impl Command {
    /// The verb as sent on the wire, upper-case (`Cwd` is `CWD`, `Unknown` its own verb).
    pub fn verb(&self) -> &str {
        todo!("codec helper")
    }

    /// The wire form with any password replaced by `****`, for logs.
    pub fn masked(&self) -> impl fmt::Display + '_ {
        todo!("codec helper") as String
    }
}

impl CommandError {
    /// The reply code a server answers this error with (500, 501 or 522).
    pub fn reply_code(&self) -> super::ReplyCode {
        todo!("codec helper")
    }
}
