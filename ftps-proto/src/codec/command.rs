//! Typed FTP commands: what a client sends on the control channel.
//!
//! [`Command`] covers RFC 959, the RFC 775 `X*` aliases, RFC 2228, 2389, 2428, 3659, 2640, 7151, `MFMT` and the
//! site-to-site TLS commands `SSCN` / `CPSV`. Parsing is [`parse_command`]; formatting is [`Command`]'s
//! `Display` (the wire form without CRLF). Format-then-parse is the identity on values.
//!
//! Pathnames and other free text are UTF-8 (RFC 2640). A line whose argument is not valid UTF-8 is refused with
//! 501 ([`CommandErrorKind::NotUtf8`]) rather than guessed at: the engine never works with a path it cannot show
//! back to the user exactly.
//!
//! # Line grammar and leniency
//!
//! - The verb is everything before the first space. It must be 1..=8 ASCII letters or digits (digits for
//!   extensions such as `XSHA1`); it is case-insensitive. Anything else (an empty line, a leading space, a
//!   non-ASCII or over-long token, stray TLS bytes) has no verb and is [`CommandErrorKind::Empty`] (500): it is
//!   not a command at all, unlike a well-formed verb we do not know, which is [`Command::Unknown`].
//! - The argument is the raw text after the single separating space. Pathnames and other free text keep every
//!   byte, including further spaces, leading or trailing (RFC 959 pathnames may contain them). A verb that
//!   requires one refuses an empty argument (501). An optional argument that is empty (`LIST ` with a trailing
//!   space) counts as absent.
//! - Keyword and number arguments (`TYPE`, `MODE`, `PORT`, `REST`, `AUTH`, ...) ignore surrounding spaces and are
//!   case-insensitive; numbers are plain decimal digits within the field's range.
//! - Verbs without argument tolerate trailing spaces (`PASV `, as sloppy clients send) but refuse any other
//!   text with 501 (`PWD x`), so a mistyped command is reported rather than half-executed.
//! - `PASS` without argument is an empty password (anonymous clients send it).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nom::branch::alt;
use nom::bytes::complete::tag_no_case;
use nom::character::complete::{char, digit1, space1};
use nom::combinator::{all_consuming, map, map_res, opt, value, verify};
use nom::sequence::preceded;
use nom::{IResult, Parser};

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
///
/// See the module documentation for the leniency rules. Unknown verbs are `Ok(Command::Unknown { .. })`, never
/// an error.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    let (verb_bytes, arg_bytes) = match line.iter().position(|&b| b == b' ') {
        Some(space) => {
            let (verb, rest) = line.split_at(space);
            (verb, Some(rest.get(1..).unwrap_or_default()))
        }
        None => (line, None),
    };
    let mut upper = [0u8; MAX_VERB_LEN];
    let verb = match upper.get_mut(..verb_bytes.len()) {
        Some(dst) if !verb_bytes.is_empty() && verb_bytes.iter().all(u8::is_ascii_alphanumeric) => {
            dst.copy_from_slice(verb_bytes);
            dst.make_ascii_uppercase();
            // ASCII by the check above, so this cannot fail.
            std::str::from_utf8(dst).map_err(|_| CommandError::empty())?
        }
        _ => return Err(CommandError::empty()),
    };
    let err = |kind| CommandError {
        verb: Some(verb.to_owned()),
        kind,
    };
    // A line break inside a line cannot come from the framer; refusing it keeps every parsed value one line on
    // the wire, so [`Command::is_encodable`] can vouch for what a client is about to send.
    if arg_bytes.is_some_and(|bytes| bytes.contains(&b'\n')) {
        return Err(err(CommandErrorKind::Syntax));
    }
    let arg = match arg_bytes {
        Some(bytes) => {
            Some(std::str::from_utf8(bytes).map_err(|_| err(CommandErrorKind::NotUtf8))?)
        }
        None => None,
    };
    parse_verb(verb, arg).map_err(err)
}

/// The longest verb accepted (RFC 959 verbs have 3 or 4 letters; extensions such as `XSHA256` have more).
const MAX_VERB_LEN: usize = 8;

/// Dispatches on the upper-cased verb.
fn parse_verb(verb: &str, arg: Option<&str>) -> Result<Command, CommandErrorKind> {
    use Command as C;
    let cmd = match verb {
        "USER" => C::User(required(arg)?.to_owned()),
        // `PASS` without argument is an empty password (RFC 959 requires one, but anonymous clients omit it).
        "PASS" => C::Pass(arg.unwrap_or_default().to_owned()),
        "ACCT" => C::Acct(required(arg)?.to_owned()),
        "CWD" | "XCWD" => C::Cwd(required(arg)?.to_owned()),
        "CDUP" | "XCUP" => no_arg(arg, C::Cdup)?,
        "SMNT" => C::Smnt(required(arg)?.to_owned()),
        "REIN" => no_arg(arg, C::Rein)?,
        "QUIT" => no_arg(arg, C::Quit)?,
        "PORT" => C::Port(typed(arg, host_port)?),
        "PASV" => no_arg(arg, C::Pasv)?,
        "TYPE" => C::Type(typed(arg, representation_type)?),
        "STRU" => C::Stru(letter(
            arg,
            &[
                ('F', FileStructure::File),
                ('R', FileStructure::Record),
                ('P', FileStructure::Page),
            ],
        )?),
        "MODE" => C::Mode(letter(
            arg,
            &[
                ('S', TransferMode::Stream),
                ('B', TransferMode::Block),
                ('C', TransferMode::Compressed),
                ('Z', TransferMode::Deflate),
            ],
        )?),
        "RETR" => C::Retr(required(arg)?.to_owned()),
        "STOR" => C::Stor(required(arg)?.to_owned()),
        "STOU" => C::Stou(optional(arg)),
        "APPE" => C::Appe(required(arg)?.to_owned()),
        "ALLO" => {
            let (size, record_size) = typed(arg, allocation)?;
            C::Allo { size, record_size }
        }
        "REST" => C::Rest(typed(arg, decimal::<u64>)?),
        "RNFR" => C::Rnfr(required(arg)?.to_owned()),
        "RNTO" => C::Rnto(required(arg)?.to_owned()),
        "ABOR" => no_arg(arg, C::Abor)?,
        "DELE" => C::Dele(required(arg)?.to_owned()),
        "RMD" | "XRMD" => C::Rmd(required(arg)?.to_owned()),
        "MKD" | "XMKD" => C::Mkd(required(arg)?.to_owned()),
        "PWD" | "XPWD" => no_arg(arg, C::Pwd)?,
        "LIST" => C::List(optional(arg)),
        "NLST" => C::Nlst(optional(arg)),
        "SITE" => C::Site(required(arg)?.to_owned()),
        "SYST" => no_arg(arg, C::Syst)?,
        "STAT" => C::Stat(optional(arg)),
        "HELP" => C::Help(optional(arg)),
        "NOOP" => no_arg(arg, C::Noop)?,
        "AUTH" => C::Auth(auth_mechanism(trimmed(arg)?)),
        "ADAT" => C::Adat(required(arg)?.to_owned()),
        "PROT" => C::Prot(letter(
            arg,
            &[
                ('C', ProtectionLevel::Clear),
                ('S', ProtectionLevel::Safe),
                ('E', ProtectionLevel::Confidential),
                ('P', ProtectionLevel::Private),
            ],
        )?),
        "PBSZ" => C::Pbsz(typed(arg, decimal::<u32>)?),
        "CCC" => no_arg(arg, C::Ccc)?,
        "MIC" => C::Mic(required(arg)?.to_owned()),
        "CONF" => C::Conf(required(arg)?.to_owned()),
        "ENC" => C::Enc(required(arg)?.to_owned()),
        "FEAT" => no_arg(arg, C::Feat)?,
        "OPTS" => {
            let text = required(arg)?;
            let (name, value) = match text.split_once(' ') {
                Some((name, value)) => (name, Some(value).filter(|v| !v.is_empty())),
                None => (text, None),
            };
            if name.is_empty() {
                return Err(CommandErrorKind::Syntax);
            }
            C::Opts {
                name: name.to_ascii_uppercase(),
                value: value.map(str::to_owned),
            }
        }
        "EPRT" => C::Eprt(extended_address(trimmed(arg)?)?),
        "EPSV" => C::Epsv(epsv_argument(arg)?),
        "MDTM" => C::Mdtm(required(arg)?.to_owned()),
        "SIZE" => C::Size(required(arg)?.to_owned()),
        "MLST" => C::Mlst(optional(arg)),
        "MLSD" => C::Mlsd(optional(arg)),
        "LANG" => C::Lang(optional(arg)),
        "HOST" => C::Host(required(arg)?.to_owned()),
        "MFMT" => {
            let (time, rest) =
                Timeval::parse_prefix(required(arg)?).ok_or(CommandErrorKind::Syntax)?;
            let path = rest
                .strip_prefix(' ')
                .filter(|p| !p.is_empty())
                .ok_or(CommandErrorKind::Syntax)?;
            C::Mfmt {
                time,
                path: path.to_owned(),
            }
        }
        "SSCN" => C::Sscn(
            match arg.map(|a| a.trim_matches(' ')).filter(|a| !a.is_empty()) {
                None => None,
                Some(a) if a.eq_ignore_ascii_case("ON") => Some(true),
                Some(a) if a.eq_ignore_ascii_case("OFF") => Some(false),
                Some(_) => return Err(CommandErrorKind::Syntax),
            },
        ),
        "CPSV" => no_arg(arg, C::Cpsv)?,
        _ => C::Unknown {
            verb: verb.to_owned(),
            argument: optional(arg),
        },
    };
    Ok(cmd)
}

/// A required free-text argument, kept exactly (spaces included); empty or absent is a syntax error.
fn required(arg: Option<&str>) -> Result<&str, CommandErrorKind> {
    arg.filter(|a| !a.is_empty())
        .ok_or(CommandErrorKind::Syntax)
}

/// An optional free-text argument, kept exactly; an empty one (`LIST ` with a trailing space) counts as absent.
fn optional(arg: Option<&str>) -> Option<String> {
    arg.filter(|a| !a.is_empty()).map(str::to_owned)
}

/// A verb without argument. Trailing spaces are tolerated (sloppy clients send `PASV `); any other text is a
/// syntax error rather than silently ignored.
fn no_arg(arg: Option<&str>, cmd: Command) -> Result<Command, CommandErrorKind> {
    match arg {
        Some(a) if a.bytes().any(|b| b != b' ') => Err(CommandErrorKind::Syntax),
        _ => Ok(cmd),
    }
}

/// A required keyword or number argument with surrounding spaces removed.
fn trimmed(arg: Option<&str>) -> Result<&str, CommandErrorKind> {
    arg.map(|a| a.trim_matches(' '))
        .filter(|a| !a.is_empty())
        .ok_or(CommandErrorKind::Syntax)
}

/// A required argument that `parser` must consume entirely (after trimming spaces).
fn typed<'a, O>(
    arg: Option<&'a str>,
    parser: impl Parser<&'a str, Output = O, Error = nom::error::Error<&'a str>>,
) -> Result<O, CommandErrorKind> {
    all_consuming(parser)
        .parse(trimmed(arg)?)
        .map(|(_, value)| value)
        .map_err(|_| CommandErrorKind::Syntax)
}

/// A single-letter code, case-insensitive (`TYPE`-style arguments: `MODE s`).
fn letter<T: Copy>(arg: Option<&str>, table: &[(char, T)]) -> Result<T, CommandErrorKind> {
    let text = trimmed(arg)?;
    let mut chars = text.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) => table
            .iter()
            .find(|(code, _)| code.eq_ignore_ascii_case(&c))
            .map(|&(_, value)| value)
            .ok_or(CommandErrorKind::Syntax),
        _ => Err(CommandErrorKind::Syntax),
    }
}

/// An unsigned decimal number (digits only: no sign, no spaces), checked against `T`'s range.
fn decimal<T: std::str::FromStr>(input: &str) -> IResult<&str, T> {
    map_res(digit1, str::parse::<T>).parse(input)
}

/// RFC 959 section 4.1.2 host-port: `h1,h2,h3,h4,p1,p2`, each 0..=255.
fn host_port(input: &str) -> IResult<&str, SocketAddrV4> {
    let byte = decimal::<u8>;
    map(
        (
            byte,
            preceded(char(','), byte),
            preceded(char(','), byte),
            preceded(char(','), byte),
            preceded(char(','), byte),
            preceded(char(','), byte),
        ),
        |(h1, h2, h3, h4, p1, p2)| {
            SocketAddrV4::new(Ipv4Addr::new(h1, h2, h3, h4), u16::from_be_bytes([p1, p2]))
        },
    )
    .parse(input)
}

/// `TYPE` argument (RFC 959 section 4.1.2): `A [N|T|C]`, `E [N|T|C]`, `I`, `L n`; codes case-insensitive.
fn representation_type(input: &str) -> IResult<&str, RepresentationType> {
    let format_control = || {
        opt(preceded(
            space1,
            alt((
                value(FormatControl::NonPrint, tag_no_case("N")),
                value(FormatControl::Telnet, tag_no_case("T")),
                value(FormatControl::Asa, tag_no_case("C")),
            )),
        ))
        .map(Option::unwrap_or_default)
    };
    alt((
        preceded(tag_no_case("A"), format_control()).map(RepresentationType::Ascii),
        preceded(tag_no_case("E"), format_control()).map(RepresentationType::Ebcdic),
        value(RepresentationType::Image, tag_no_case("I")),
        preceded(
            (tag_no_case("L"), space1),
            verify(decimal::<u8>, |&bits| bits > 0),
        )
        .map(RepresentationType::Local),
    ))
    .parse(input)
}

/// `ALLO n [R m]` (RFC 959 section 4.1.3).
fn allocation(input: &str) -> IResult<&str, (u64, Option<u64>)> {
    (
        decimal::<u64>,
        opt(preceded((space1, tag_no_case("R"), space1), decimal::<u64>)),
    )
        .parse(input)
}

/// `AUTH` mechanism names are case-insensitive (RFC 2228 section 3).
fn auth_mechanism(name: &str) -> AuthMechanism {
    const KNOWN: [(&str, AuthMechanism); 4] = [
        ("TLS", AuthMechanism::Tls),
        ("SSL", AuthMechanism::Ssl),
        ("TLS-C", AuthMechanism::TlsC),
        ("TLS-P", AuthMechanism::TlsP),
    ];
    KNOWN
        .into_iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map_or_else(
            || AuthMechanism::Other(name.to_ascii_uppercase()),
            |(_, mechanism)| mechanism,
        )
}

/// `EPRT <d><net-prt><d><net-addr><d><tcp-port><d>` (RFC 2428 section 2): the delimiter is any printable
/// ASCII character (33..=126) that does not occur in the fields.
fn extended_address(text: &str) -> Result<SocketAddr, CommandErrorKind> {
    let delimiter = text
        .chars()
        .next()
        .filter(|c| ('!'..='~').contains(c))
        .ok_or(CommandErrorKind::Syntax)?;
    let mut fields = text.split(delimiter);
    let (Some(""), Some(protocol), Some(address), Some(port), Some(""), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(CommandErrorKind::Syntax);
    };
    // The protocol is checked first: an unsupported one is answered 522 whatever its address looks like.
    let is_v6 = match protocol {
        "1" => false,
        "2" => true,
        // A well-formed protocol number we do not speak: 522, so the client can fall back (section 2).
        p if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(CommandErrorKind::UnsupportedNetworkProtocol)
        }
        _ => return Err(CommandErrorKind::Syntax),
    };
    let port = all_consuming(decimal::<u16>)
        .parse(port)
        .map_err(|_| CommandErrorKind::Syntax)?
        .1;
    if is_v6 {
        let ip: Ipv6Addr = address.parse().map_err(|_| CommandErrorKind::Syntax)?;
        Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
    } else {
        let ip: Ipv4Addr = address.parse().map_err(|_| CommandErrorKind::Syntax)?;
        Ok(SocketAddr::V4(SocketAddrV4::new(ip, port)))
    }
}

/// `EPSV [ALL | net-prt]` (RFC 2428 section 3).
fn epsv_argument(arg: Option<&str>) -> Result<EpsvArgument, CommandErrorKind> {
    match arg.map(|a| a.trim_matches(' ')).filter(|a| !a.is_empty()) {
        None => Ok(EpsvArgument::Default),
        Some(a) if a.eq_ignore_ascii_case("ALL") => Ok(EpsvArgument::All),
        Some(a) => typed(Some(a), decimal::<u16>).map(EpsvArgument::Protocol),
    }
}

impl CommandError {
    /// The error for a line without a verb.
    fn empty() -> Self {
        Self {
            verb: None,
            kind: CommandErrorKind::Empty,
        }
    }
}

/// Writes `VERB` or `VERB arg`.
fn write_optional(f: &mut fmt::Formatter<'_>, verb: &str, arg: Option<&str>) -> fmt::Result {
    match arg {
        Some(arg) => write!(f, "{verb} {arg}"),
        None => f.write_str(verb),
    }
}

impl fmt::Display for Command {
    /// The wire form, without CRLF.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Command as C;
        let verb = self.verb();
        match self {
            C::User(a)
            | C::Acct(a)
            | C::Cwd(a)
            | C::Smnt(a)
            | C::Retr(a)
            | C::Stor(a)
            | C::Appe(a)
            | C::Rnfr(a)
            | C::Rnto(a)
            | C::Dele(a)
            | C::Rmd(a)
            | C::Mkd(a)
            | C::Site(a)
            | C::Adat(a)
            | C::Mic(a)
            | C::Conf(a)
            | C::Enc(a)
            | C::Mdtm(a)
            | C::Size(a)
            | C::Host(a) => write!(f, "{verb} {a}"),
            C::Pass(a) => write_optional(f, verb, Some(a.as_str()).filter(|a| !a.is_empty())),
            C::Stou(a)
            | C::List(a)
            | C::Nlst(a)
            | C::Stat(a)
            | C::Help(a)
            | C::Mlst(a)
            | C::Mlsd(a)
            | C::Lang(a) => write_optional(f, verb, a.as_deref()),
            C::Cdup
            | C::Rein
            | C::Quit
            | C::Pasv
            | C::Abor
            | C::Pwd
            | C::Syst
            | C::Noop
            | C::Ccc
            | C::Feat
            | C::Cpsv => f.write_str(verb),
            C::Port(addr) => {
                let [h1, h2, h3, h4] = addr.ip().octets();
                let [p1, p2] = addr.port().to_be_bytes();
                write!(f, "{verb} {h1},{h2},{h3},{h4},{p1},{p2}")
            }
            C::Type(t) => {
                let fc = |fc: &FormatControl| match fc {
                    FormatControl::NonPrint => "",
                    FormatControl::Telnet => " T",
                    FormatControl::Asa => " C",
                };
                match t {
                    RepresentationType::Ascii(c) => write!(f, "{verb} A{}", fc(c)),
                    RepresentationType::Ebcdic(c) => write!(f, "{verb} E{}", fc(c)),
                    RepresentationType::Image => write!(f, "{verb} I"),
                    RepresentationType::Local(bits) => write!(f, "{verb} L {bits}"),
                }
            }
            C::Stru(s) => {
                let code = match s {
                    FileStructure::File => 'F',
                    FileStructure::Record => 'R',
                    FileStructure::Page => 'P',
                };
                write!(f, "{verb} {code}")
            }
            C::Mode(m) => {
                let code = match m {
                    TransferMode::Stream => 'S',
                    TransferMode::Block => 'B',
                    TransferMode::Compressed => 'C',
                    TransferMode::Deflate => 'Z',
                };
                write!(f, "{verb} {code}")
            }
            C::Allo {
                size,
                record_size: Some(record),
            } => write!(f, "{verb} {size} R {record}"),
            C::Allo {
                size,
                record_size: None,
            } => write!(f, "{verb} {size}"),
            C::Rest(offset) => write!(f, "{verb} {offset}"),
            C::Auth(m) => match m {
                AuthMechanism::Tls => write!(f, "{verb} TLS"),
                AuthMechanism::Ssl => write!(f, "{verb} SSL"),
                AuthMechanism::TlsC => write!(f, "{verb} TLS-C"),
                AuthMechanism::TlsP => write!(f, "{verb} TLS-P"),
                AuthMechanism::Other(name) => write!(f, "{verb} {name}"),
            },
            C::Prot(p) => {
                let code = match p {
                    ProtectionLevel::Clear => 'C',
                    ProtectionLevel::Safe => 'S',
                    ProtectionLevel::Confidential => 'E',
                    ProtectionLevel::Private => 'P',
                };
                write!(f, "{verb} {code}")
            }
            C::Pbsz(size) => write!(f, "{verb} {size}"),
            C::Opts { name, value } => match value {
                Some(value) => write!(f, "{verb} {name} {value}"),
                None => write!(f, "{verb} {name}"),
            },
            C::Eprt(SocketAddr::V4(addr)) => write!(f, "{verb} |1|{}|{}|", addr.ip(), addr.port()),
            C::Eprt(SocketAddr::V6(addr)) => write!(f, "{verb} |2|{}|{}|", addr.ip(), addr.port()),
            C::Epsv(EpsvArgument::Default) => f.write_str(verb),
            C::Epsv(EpsvArgument::All) => write!(f, "{verb} ALL"),
            C::Epsv(EpsvArgument::Protocol(p)) => write!(f, "{verb} {p}"),
            C::Mfmt { time, path } => write!(f, "{verb} {time} {path}"),
            C::Sscn(None) => f.write_str(verb),
            C::Sscn(Some(true)) => write!(f, "{verb} ON"),
            C::Sscn(Some(false)) => write!(f, "{verb} OFF"),
            C::Unknown { argument, .. } => write_optional(f, verb, argument.as_deref()),
        }
    }
}

impl fmt::Debug for Command {
    /// Like a derived `Debug`, except that `PASS` shows `Pass("****")`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Command as C;
        match self {
            C::User(a) => f.debug_tuple("User").field(a).finish(),
            C::Pass(_) => f.debug_tuple("Pass").field(&"****").finish(),
            C::Acct(a) => f.debug_tuple("Acct").field(a).finish(),
            C::Cwd(a) => f.debug_tuple("Cwd").field(a).finish(),
            C::Cdup => f.write_str("Cdup"),
            C::Smnt(a) => f.debug_tuple("Smnt").field(a).finish(),
            C::Rein => f.write_str("Rein"),
            C::Quit => f.write_str("Quit"),
            C::Port(a) => f.debug_tuple("Port").field(a).finish(),
            C::Pasv => f.write_str("Pasv"),
            C::Type(a) => f.debug_tuple("Type").field(a).finish(),
            C::Stru(a) => f.debug_tuple("Stru").field(a).finish(),
            C::Mode(a) => f.debug_tuple("Mode").field(a).finish(),
            C::Retr(a) => f.debug_tuple("Retr").field(a).finish(),
            C::Stor(a) => f.debug_tuple("Stor").field(a).finish(),
            C::Stou(a) => f.debug_tuple("Stou").field(a).finish(),
            C::Appe(a) => f.debug_tuple("Appe").field(a).finish(),
            C::Allo { size, record_size } => f
                .debug_struct("Allo")
                .field("size", size)
                .field("record_size", record_size)
                .finish(),
            C::Rest(a) => f.debug_tuple("Rest").field(a).finish(),
            C::Rnfr(a) => f.debug_tuple("Rnfr").field(a).finish(),
            C::Rnto(a) => f.debug_tuple("Rnto").field(a).finish(),
            C::Abor => f.write_str("Abor"),
            C::Dele(a) => f.debug_tuple("Dele").field(a).finish(),
            C::Rmd(a) => f.debug_tuple("Rmd").field(a).finish(),
            C::Mkd(a) => f.debug_tuple("Mkd").field(a).finish(),
            C::Pwd => f.write_str("Pwd"),
            C::List(a) => f.debug_tuple("List").field(a).finish(),
            C::Nlst(a) => f.debug_tuple("Nlst").field(a).finish(),
            C::Site(a) => f.debug_tuple("Site").field(a).finish(),
            C::Syst => f.write_str("Syst"),
            C::Stat(a) => f.debug_tuple("Stat").field(a).finish(),
            C::Help(a) => f.debug_tuple("Help").field(a).finish(),
            C::Noop => f.write_str("Noop"),
            C::Auth(a) => f.debug_tuple("Auth").field(a).finish(),
            C::Adat(a) => f.debug_tuple("Adat").field(a).finish(),
            C::Prot(a) => f.debug_tuple("Prot").field(a).finish(),
            C::Pbsz(a) => f.debug_tuple("Pbsz").field(a).finish(),
            C::Ccc => f.write_str("Ccc"),
            C::Mic(a) => f.debug_tuple("Mic").field(a).finish(),
            C::Conf(a) => f.debug_tuple("Conf").field(a).finish(),
            C::Enc(a) => f.debug_tuple("Enc").field(a).finish(),
            C::Feat => f.write_str("Feat"),
            C::Opts { name, value } => f
                .debug_struct("Opts")
                .field("name", name)
                .field("value", value)
                .finish(),
            C::Eprt(a) => f.debug_tuple("Eprt").field(a).finish(),
            C::Epsv(a) => f.debug_tuple("Epsv").field(a).finish(),
            C::Mdtm(a) => f.debug_tuple("Mdtm").field(a).finish(),
            C::Size(a) => f.debug_tuple("Size").field(a).finish(),
            C::Mlst(a) => f.debug_tuple("Mlst").field(a).finish(),
            C::Mlsd(a) => f.debug_tuple("Mlsd").field(a).finish(),
            C::Lang(a) => f.debug_tuple("Lang").field(a).finish(),
            C::Host(a) => f.debug_tuple("Host").field(a).finish(),
            C::Mfmt { time, path } => f
                .debug_struct("Mfmt")
                .field("time", time)
                .field("path", path)
                .finish(),
            C::Sscn(a) => f.debug_tuple("Sscn").field(a).finish(),
            C::Cpsv => f.write_str("Cpsv"),
            C::Unknown { verb, argument } => f
                .debug_struct("Unknown")
                .field("verb", verb)
                .field("argument", argument)
                .finish(),
        }
    }
}

/// A command formatted for logs: its wire form with the `PASS` argument replaced by `****`.
#[derive(Debug, Clone, Copy)]
pub struct MaskedCommand<'a>(&'a Command);

impl fmt::Display for MaskedCommand<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Command::Pass(_) => f.write_str("PASS ****"),
            other => other.fmt(f),
        }
    }
}

impl Command {
    /// The verb as sent on the wire, upper-case (`Cwd` is `CWD`, `Unknown` its own verb).
    pub fn verb(&self) -> &str {
        use Command as C;
        match self {
            C::User(_) => "USER",
            C::Pass(_) => "PASS",
            C::Acct(_) => "ACCT",
            C::Cwd(_) => "CWD",
            C::Cdup => "CDUP",
            C::Smnt(_) => "SMNT",
            C::Rein => "REIN",
            C::Quit => "QUIT",
            C::Port(_) => "PORT",
            C::Pasv => "PASV",
            C::Type(_) => "TYPE",
            C::Stru(_) => "STRU",
            C::Mode(_) => "MODE",
            C::Retr(_) => "RETR",
            C::Stor(_) => "STOR",
            C::Stou(_) => "STOU",
            C::Appe(_) => "APPE",
            C::Allo { .. } => "ALLO",
            C::Rest(_) => "REST",
            C::Rnfr(_) => "RNFR",
            C::Rnto(_) => "RNTO",
            C::Abor => "ABOR",
            C::Dele(_) => "DELE",
            C::Rmd(_) => "RMD",
            C::Mkd(_) => "MKD",
            C::Pwd => "PWD",
            C::List(_) => "LIST",
            C::Nlst(_) => "NLST",
            C::Site(_) => "SITE",
            C::Syst => "SYST",
            C::Stat(_) => "STAT",
            C::Help(_) => "HELP",
            C::Noop => "NOOP",
            C::Auth(_) => "AUTH",
            C::Adat(_) => "ADAT",
            C::Prot(_) => "PROT",
            C::Pbsz(_) => "PBSZ",
            C::Ccc => "CCC",
            C::Mic(_) => "MIC",
            C::Conf(_) => "CONF",
            C::Enc(_) => "ENC",
            C::Feat => "FEAT",
            C::Opts { .. } => "OPTS",
            C::Eprt(_) => "EPRT",
            C::Epsv(_) => "EPSV",
            C::Mdtm(_) => "MDTM",
            C::Size(_) => "SIZE",
            C::Mlst(_) => "MLST",
            C::Mlsd(_) => "MLSD",
            C::Lang(_) => "LANG",
            C::Host(_) => "HOST",
            C::Mfmt { .. } => "MFMT",
            C::Sscn(_) => "SSCN",
            C::Cpsv => "CPSV",
            C::Unknown { verb, .. } => verb,
        }
    }

    /// The wire form with any password replaced by `****`, for logs.
    pub fn masked(&self) -> MaskedCommand<'_> {
        MaskedCommand(self)
    }

    /// Whether this value can be sent as is: its wire form is one line that parses back to the same value.
    ///
    /// Values from [`parse_command`] always are. One built by hand may not be, e.g. a path containing LF (which
    /// would inject a second command) or an `Unknown` verb with a space; a client checks before sending.
    pub fn is_encodable(&self) -> bool {
        parse_command(self.to_string().as_bytes()).as_ref() == Ok(self)
    }
}

impl CommandError {
    /// The reply code a server answers this error with (500, 501 or 522).
    pub fn reply_code(&self) -> super::ReplyCode {
        match self.kind {
            CommandErrorKind::Empty => super::ReplyCode::SYNTAX_ERROR,
            CommandErrorKind::Syntax | CommandErrorKind::NotUtf8 => {
                super::ReplyCode::SYNTAX_ERROR_ARGUMENTS
            }
            CommandErrorKind::UnsupportedNetworkProtocol => {
                super::ReplyCode::NETWORK_PROTOCOL_NOT_SUPPORTED
            }
        }
    }
}

impl fmt::Display for CommandError {
    /// A short message suitable as the reply text.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.verb) {
            (CommandErrorKind::Empty, _) => f.write_str("Syntax error, command unrecognized"),
            (CommandErrorKind::Syntax, Some(verb)) => {
                write!(f, "Syntax error in parameters or arguments of {verb}")
            }
            (CommandErrorKind::Syntax, None) => {
                f.write_str("Syntax error in parameters or arguments")
            }
            (CommandErrorKind::NotUtf8, _) => f.write_str("Argument is not valid UTF-8"),
            // The wording and the (1,2) list are prescribed by RFC 2428 section 2.
            (CommandErrorKind::UnsupportedNetworkProtocol, _) => {
                f.write_str("Network protocol not supported, use (1,2)")
            }
        }
    }
}

impl std::error::Error for CommandError {}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::strategy::{BoxedStrategy, Union};

    fn parse(line: &str) -> Result<Command, CommandError> {
        parse_command(line.as_bytes())
    }

    fn kind(line: &[u8]) -> CommandErrorKind {
        parse_command(line).unwrap_err().kind
    }

    #[test]
    fn real_world_lines() {
        use Command as C;
        let v4 = |a, b, c, d, port| SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port);
        assert_eq!(
            parse("PORT 127,0,0,1,4,1"),
            Ok(C::Port(v4(127, 0, 0, 1, 1025)))
        );
        assert_eq!(
            parse("EPRT |2|::1|5282|"),
            Ok(C::Eprt("[::1]:5282".parse().unwrap()))
        );
        assert_eq!(
            parse("EPRT |1|132.235.1.2|6275|"),
            Ok(C::Eprt("132.235.1.2:6275".parse().unwrap()))
        );
        assert_eq!(
            parse("EPRT !1!10.0.0.1!21!"),
            Ok(C::Eprt("10.0.0.1:21".parse().unwrap()))
        );
        assert_eq!(
            parse("TYPE A N"),
            Ok(C::Type(RepresentationType::Ascii(FormatControl::NonPrint)))
        );
        assert_eq!(
            parse("TYPE A"),
            Ok(C::Type(RepresentationType::Ascii(FormatControl::NonPrint)))
        );
        assert_eq!(
            parse("TYPE E T"),
            Ok(C::Type(RepresentationType::Ebcdic(FormatControl::Telnet)))
        );
        assert_eq!(
            parse("type a c"),
            Ok(C::Type(RepresentationType::Ascii(FormatControl::Asa)))
        );
        assert_eq!(parse("type i"), Ok(C::Type(RepresentationType::Image)));
        assert_eq!(parse("TYPE I "), Ok(C::Type(RepresentationType::Image)));
        assert_eq!(parse("TYPE L 8"), Ok(C::Type(RepresentationType::Local(8))));
        assert_eq!(
            parse("MFMT 20200101120000 file name.txt"),
            Ok(C::Mfmt {
                time: Timeval::parse("20200101120000").unwrap(),
                path: "file name.txt".into()
            })
        );
        assert_eq!(
            parse("SITE CHMOD 755 a b"),
            Ok(C::Site("CHMOD 755 a b".into()))
        );
        assert_eq!(
            parse("OPTS UTF8 ON"),
            Ok(C::Opts {
                name: "UTF8".into(),
                value: Some("ON".into())
            })
        );
        assert_eq!(
            parse("opts mlst type;size;"),
            Ok(C::Opts {
                name: "MLST".into(),
                value: Some("type;size;".into())
            })
        );
        assert_eq!(
            parse("OPTS utf8"),
            Ok(C::Opts {
                name: "UTF8".into(),
                value: None
            })
        );
        assert_eq!(parse("AUTH tls"), Ok(C::Auth(AuthMechanism::Tls)));
        assert_eq!(parse("AUTH SSL"), Ok(C::Auth(AuthMechanism::Ssl)));
        assert_eq!(parse("AUTH tls-p"), Ok(C::Auth(AuthMechanism::TlsP)));
        assert_eq!(parse("AUTH TLS-C"), Ok(C::Auth(AuthMechanism::TlsC)));
        assert_eq!(
            parse("AUTH gssapi"),
            Ok(C::Auth(AuthMechanism::Other("GSSAPI".into())))
        );
        assert_eq!(parse("USER anonymous"), Ok(C::User("anonymous".into())));
        assert_eq!(
            parse("PASS secret word "),
            Ok(C::Pass("secret word ".into()))
        );
        assert_eq!(parse("PASS"), Ok(C::Pass(String::new())));
        assert_eq!(parse("PBSZ 0"), Ok(C::Pbsz(0)));
        assert_eq!(parse("PROT P"), Ok(C::Prot(ProtectionLevel::Private)));
        assert_eq!(parse("prot c"), Ok(C::Prot(ProtectionLevel::Clear)));
        assert_eq!(parse("MODE Z"), Ok(C::Mode(TransferMode::Deflate)));
        assert_eq!(parse("STRU r"), Ok(C::Stru(FileStructure::Record)));
        assert_eq!(parse("REST 18446744073709551615"), Ok(C::Rest(u64::MAX)));
        assert_eq!(
            parse("ALLO 1000"),
            Ok(C::Allo {
                size: 1000,
                record_size: None
            })
        );
        assert_eq!(
            parse("ALLO 1000 R 512"),
            Ok(C::Allo {
                size: 1000,
                record_size: Some(512)
            })
        );
        assert_eq!(parse("EPSV"), Ok(C::Epsv(EpsvArgument::Default)));
        assert_eq!(parse("EPSV all"), Ok(C::Epsv(EpsvArgument::All)));
        assert_eq!(parse("EPSV 2"), Ok(C::Epsv(EpsvArgument::Protocol(2))));
        assert_eq!(parse("SSCN"), Ok(C::Sscn(None)));
        assert_eq!(parse("SSCN on"), Ok(C::Sscn(Some(true))));
        assert_eq!(parse("SSCN OFF"), Ok(C::Sscn(Some(false))));
        assert_eq!(parse("CPSV"), Ok(C::Cpsv));
        assert_eq!(
            parse("HOST ftp.example.com"),
            Ok(C::Host("ftp.example.com".into()))
        );
        assert_eq!(parse("LANG"), Ok(C::Lang(None)));
        assert_eq!(parse("LANG fr"), Ok(C::Lang(Some("fr".into()))));
        assert_eq!(parse("MLSD"), Ok(C::Mlsd(None)));
        assert_eq!(parse("LIST -la"), Ok(C::List(Some("-la".into()))));
        assert_eq!(parse("LIST "), Ok(C::List(None)));
        assert_eq!(parse("NLST"), Ok(C::Nlst(None)));
        assert_eq!(parse("STOU"), Ok(C::Stou(None)));
        assert_eq!(parse("SIZE /a/b c"), Ok(C::Size("/a/b c".into())));
        assert_eq!(parse("FEAT"), Ok(C::Feat));
        assert_eq!(parse("PASV "), Ok(C::Pasv));
    }

    #[test]
    fn aliases_and_case() {
        assert_eq!(parse("XCWD /tmp"), Ok(Command::Cwd("/tmp".into())));
        assert_eq!(parse("xcup"), Ok(Command::Cdup));
        assert_eq!(parse("XMKD d"), Ok(Command::Mkd("d".into())));
        assert_eq!(parse("XRMD d"), Ok(Command::Rmd("d".into())));
        assert_eq!(parse("XPWD"), Ok(Command::Pwd));
        assert_eq!(parse("cWd x"), Ok(Command::Cwd("x".into())));
        assert_eq!(Command::Cwd("x".into()).to_string(), "CWD x");
    }

    #[test]
    fn paths_keep_spaces() {
        assert_eq!(parse("CWD  my dir "), Ok(Command::Cwd(" my dir ".into())));
        assert_eq!(parse("RETR a  b"), Ok(Command::Retr("a  b".into())));
        assert_eq!(
            parse("STOR ünïcødé.txt"),
            Ok(Command::Stor("ünïcødé.txt".into()))
        );
    }

    #[test]
    fn errors_and_codes() {
        use CommandErrorKind::*;
        assert_eq!(
            parse(""),
            Err(CommandError {
                verb: None,
                kind: Empty
            })
        );
        assert_eq!(kind(b" "), Empty);
        assert_eq!(kind(b" NOOP"), Empty);
        assert_eq!(kind(b"TOOLONGVERB x"), Empty);
        assert_eq!(kind(b"N-OP"), Empty);
        assert_eq!(kind(b"\x16\x03\x01\x02\x00"), Empty);
        assert_eq!(kind(b"\xff\xfe"), Empty);
        assert_eq!(
            parse("CWD"),
            Err(CommandError {
                verb: Some("CWD".into()),
                kind: Syntax
            })
        );
        assert_eq!(
            parse("cwd "),
            Err(CommandError {
                verb: Some("CWD".into()),
                kind: Syntax
            })
        );
        assert_eq!(kind(b"PWD x"), Syntax);
        assert_eq!(kind(b"QUIT now"), Syntax);
        assert_eq!(kind(b"USER"), Syntax);
        assert_eq!(kind(b"PORT 256,0,0,1,4,1"), Syntax);
        assert_eq!(kind(b"PORT 1,2,3,4,5"), Syntax);
        assert_eq!(kind(b"PORT 1,2,3,4,5,6,7"), Syntax);
        assert_eq!(kind(b"PORT -1,2,3,4,5,6"), Syntax);
        assert_eq!(kind(b"REST -1"), Syntax);
        assert_eq!(kind(b"REST 18446744073709551616"), Syntax);
        assert_eq!(kind(b"REST +5"), Syntax);
        assert_eq!(kind(b"PBSZ 4294967296"), Syntax);
        assert_eq!(kind(b"TYPE X"), Syntax);
        assert_eq!(kind(b"TYPE AN"), Syntax);
        assert_eq!(kind(b"TYPE I N"), Syntax);
        assert_eq!(kind(b"TYPE L 0"), Syntax);
        assert_eq!(kind(b"TYPE L"), Syntax);
        assert_eq!(kind(b"MODE SB"), Syntax);
        assert_eq!(kind(b"PROT X"), Syntax);
        assert_eq!(kind(b"AUTH"), Syntax);
        assert_eq!(kind(b"ALLO 10 R"), Syntax);
        assert_eq!(kind(b"EPSV 1x"), Syntax);
        assert_eq!(kind(b"SSCN maybe"), Syntax);
        assert_eq!(kind(b"MFMT 20200101120000"), Syntax);
        assert_eq!(kind(b"MFMT 20200101120000 "), Syntax);
        assert_eq!(kind(b"MFMT 20201301120000 f"), Syntax);
        assert_eq!(kind(b"MFMT 2020010112000 f"), Syntax);
        assert_eq!(kind(b"OPTS"), Syntax);
        assert_eq!(kind(b"OPTS  UTF8"), Syntax);
        assert_eq!(kind(b"SITE"), Syntax);
        assert_eq!(kind(b"EPRT |1|::1|21|"), Syntax);
        assert_eq!(kind(b"EPRT |2|1.2.3.4|21|"), Syntax);
        assert_eq!(kind(b"EPRT |1|1.2.3.4|65536|"), Syntax);
        assert_eq!(kind(b"EPRT |1|1.2.3.4|21"), Syntax);
        assert_eq!(kind(b"EPRT |1|1.2.3.4|21|x"), Syntax);
        assert_eq!(kind(b"EPRT  1 1.2.3.4 21 "), Syntax);
        assert_eq!(kind(b"EPRT |x|1.2.3.4|21|"), Syntax);
        assert_eq!(
            parse("EPRT |3|foo|21|"),
            Err(CommandError {
                verb: Some("EPRT".into()),
                kind: UnsupportedNetworkProtocol
            })
        );
        assert_eq!(kind(b"EPRT |99999999999|x|y|"), UnsupportedNetworkProtocol);
        assert_eq!(
            parse_command(b"CWD caf\xe9"),
            Err(CommandError {
                verb: Some("CWD".into()),
                kind: NotUtf8
            })
        );

        let code = |line: &[u8]| parse_command(line).unwrap_err().reply_code().get();
        assert_eq!(code(b""), 500);
        assert_eq!(code(b"CWD"), 501);
        assert_eq!(code(b"CWD \xff"), 501);
        assert_eq!(code(b"EPRT |7|a|1|"), 522);
        assert_eq!(
            parse("EPRT |7|a|1|").unwrap_err().to_string(),
            "Network protocol not supported, use (1,2)"
        );
        assert_eq!(
            parse("").unwrap_err().to_string(),
            "Syntax error, command unrecognized"
        );
        assert_eq!(
            parse("CWD").unwrap_err().to_string(),
            "Syntax error in parameters or arguments of CWD"
        );
    }

    #[test]
    fn line_breaks_are_refused_and_not_encodable() {
        assert_eq!(
            parse("CWD a\nDELE b"),
            Err(CommandError {
                verb: Some("CWD".into()),
                kind: CommandErrorKind::Syntax
            })
        );
        assert!(!Command::Cwd("a\r\nDELE b".into()).is_encodable());
        assert!(!Command::Unknown {
            verb: "A B".into(),
            argument: None
        }
        .is_encodable());
        assert!(!Command::Unknown {
            verb: "CWD".into(),
            argument: Some("x".into())
        }
        .is_encodable());
        assert!(!Command::Cwd(String::new()).is_encodable());
        assert!(Command::Cwd("a\rb ".into()).is_encodable());
        assert!(Command::Pass(String::new()).is_encodable());
    }

    #[test]
    fn unknown_verbs_are_not_errors() {
        assert_eq!(
            parse("xsha1 file"),
            Ok(Command::Unknown {
                verb: "XSHA1".into(),
                argument: Some("file".into())
            })
        );
        assert_eq!(
            parse("CLNT"),
            Ok(Command::Unknown {
                verb: "CLNT".into(),
                argument: None
            })
        );
        assert_eq!(
            Command::Unknown {
                verb: "CLNT".into(),
                argument: Some("x y".into())
            }
            .verb(),
            "CLNT"
        );
        assert_eq!(
            Command::Unknown {
                verb: "CLNT".into(),
                argument: Some("x y".into())
            }
            .to_string(),
            "CLNT x y"
        );
    }

    #[test]
    fn password_is_masked() {
        let pass = Command::Pass("hunter2".into());
        assert_eq!(format!("{pass:?}"), r#"Pass("****")"#);
        assert_eq!(pass.masked().to_string(), "PASS ****");
        assert_eq!(pass.to_string(), "PASS hunter2");
        assert_eq!(Command::User("bob".into()).masked().to_string(), "USER bob");
        assert_eq!(
            format!("{:?}", Command::User("bob".into())),
            r#"User("bob")"#
        );
        assert_eq!(format!("{:?}", Command::Quit), "Quit");
        assert_eq!(format!("{:?}", Command::Rest(5)), "Rest(5)");
    }

    #[test]
    fn display_wire_forms() {
        use Command as C;
        let cases: Vec<(Command, &str)> = vec![
            (
                C::Port(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 1025)),
                "PORT 127,0,0,1,4,1",
            ),
            (C::Eprt("[::1]:5282".parse().unwrap()), "EPRT |2|::1|5282|"),
            (
                C::Eprt("132.235.1.2:6275".parse().unwrap()),
                "EPRT |1|132.235.1.2|6275|",
            ),
            (
                C::Type(RepresentationType::Ascii(FormatControl::NonPrint)),
                "TYPE A",
            ),
            (
                C::Type(RepresentationType::Ebcdic(FormatControl::Asa)),
                "TYPE E C",
            ),
            (C::Type(RepresentationType::Local(8)), "TYPE L 8"),
            (
                C::Allo {
                    size: 1,
                    record_size: Some(2),
                },
                "ALLO 1 R 2",
            ),
            (C::Auth(AuthMechanism::TlsP), "AUTH TLS-P"),
            (
                C::Opts {
                    name: "UTF8".into(),
                    value: Some("ON".into()),
                },
                "OPTS UTF8 ON",
            ),
            (C::Epsv(EpsvArgument::All), "EPSV ALL"),
            (C::Sscn(Some(true)), "SSCN ON"),
            (
                C::Mfmt {
                    time: Timeval::parse("20200101120000.5").unwrap(),
                    path: "a b".into(),
                },
                "MFMT 20200101120000.500 a b",
            ),
            (C::Pass(String::new()), "PASS"),
            (C::List(None), "LIST"),
            (C::Mkd("x".into()), "MKD x"),
        ];
        for (cmd, wire) in cases {
            assert_eq!(cmd.to_string(), wire);
            assert_eq!(parse(wire), Ok(cmd));
        }
    }

    /// Text a path-like argument may hold: anything printable, spaces (leading and trailing) included.
    fn text() -> BoxedStrategy<String> {
        prop_oneof!["[ a-zA-Z0-9./_-]{1,12}", "\\PC{1,12}"].boxed()
    }

    fn opt_text() -> BoxedStrategy<Option<String>> {
        proptest::option::of(text()).boxed()
    }

    fn arb_timeval() -> BoxedStrategy<Timeval> {
        (
            0u16..=9999,
            1u8..=12,
            1u8..=31,
            0u8..=23,
            0u8..=59,
            0u8..=60,
            proptest::option::of(0u16..=999),
        )
            .prop_filter_map("day out of range", |(y, mo, d, h, mi, s, ms)| {
                Timeval::new(y, mo, d, h, mi, s, ms)
            })
            .boxed()
    }

    fn is_known_verb(verb: &str) -> bool {
        !matches!(parse_verb(verb, Some("x")), Ok(Command::Unknown { .. }))
    }

    /// Every `Command` variant, with values the parser can produce.
    fn arb_command() -> impl Strategy<Value = Command> {
        use Command as C;
        let path = |f: fn(String) -> Command| text().prop_map(f).boxed();
        let opt_path = |f: fn(Option<String>) -> Command| opt_text().prop_map(f).boxed();
        let unit = |c: Command| Just(c).boxed();
        let fc = prop_oneof![
            Just(FormatControl::NonPrint),
            Just(FormatControl::Telnet),
            Just(FormatControl::Asa)
        ];
        let rep = prop_oneof![
            fc.clone().prop_map(RepresentationType::Ascii),
            fc.prop_map(RepresentationType::Ebcdic),
            Just(RepresentationType::Image),
            (1u8..=255).prop_map(RepresentationType::Local),
        ];
        let socket_addr = prop_oneof![
            any::<SocketAddrV4>().prop_map(SocketAddr::V4),
            (any::<Ipv6Addr>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0))),
        ];
        let auth = prop_oneof![
            Just(AuthMechanism::Tls),
            Just(AuthMechanism::Ssl),
            Just(AuthMechanism::TlsC),
            Just(AuthMechanism::TlsP),
            "[A-Z0-9][A-Z0-9 _-]{0,8}[A-Z0-9]"
                .prop_filter("a known mechanism", |m| !["TLS", "SSL", "TLS-C", "TLS-P"]
                    .contains(&m.as_str()))
                .prop_map(AuthMechanism::Other),
        ];
        let variants: Vec<BoxedStrategy<Command>> = vec![
            path(C::User),
            proptest::option::of(text())
                .prop_map(|p| C::Pass(p.unwrap_or_default()))
                .boxed(),
            path(C::Acct),
            path(C::Cwd),
            unit(C::Cdup),
            path(C::Smnt),
            unit(C::Rein),
            unit(C::Quit),
            any::<SocketAddrV4>().prop_map(C::Port).boxed(),
            unit(C::Pasv),
            rep.prop_map(C::Type).boxed(),
            prop_oneof![
                Just(FileStructure::File),
                Just(FileStructure::Record),
                Just(FileStructure::Page)
            ]
            .prop_map(C::Stru)
            .boxed(),
            prop_oneof![
                Just(TransferMode::Stream),
                Just(TransferMode::Block),
                Just(TransferMode::Compressed),
                Just(TransferMode::Deflate)
            ]
            .prop_map(C::Mode)
            .boxed(),
            path(C::Retr),
            path(C::Stor),
            opt_path(C::Stou),
            path(C::Appe),
            (any::<u64>(), any::<Option<u64>>())
                .prop_map(|(size, record_size)| C::Allo { size, record_size })
                .boxed(),
            any::<u64>().prop_map(C::Rest).boxed(),
            path(C::Rnfr),
            path(C::Rnto),
            unit(C::Abor),
            path(C::Dele),
            path(C::Rmd),
            path(C::Mkd),
            unit(C::Pwd),
            opt_path(C::List),
            opt_path(C::Nlst),
            path(C::Site),
            unit(C::Syst),
            opt_path(C::Stat),
            opt_path(C::Help),
            unit(C::Noop),
            auth.prop_map(C::Auth).boxed(),
            path(C::Adat),
            prop_oneof![
                Just(ProtectionLevel::Clear),
                Just(ProtectionLevel::Safe),
                Just(ProtectionLevel::Confidential),
                Just(ProtectionLevel::Private)
            ]
            .prop_map(C::Prot)
            .boxed(),
            any::<u32>().prop_map(C::Pbsz).boxed(),
            unit(C::Ccc),
            path(C::Mic),
            path(C::Conf),
            path(C::Enc),
            unit(C::Feat),
            ("[^ \n]{1,8}", opt_text())
                .prop_map(|(name, value)| C::Opts {
                    name: name.to_ascii_uppercase(),
                    value,
                })
                .boxed(),
            socket_addr.prop_map(C::Eprt).boxed(),
            prop_oneof![
                Just(EpsvArgument::Default),
                Just(EpsvArgument::All),
                any::<u16>().prop_map(EpsvArgument::Protocol)
            ]
            .prop_map(C::Epsv)
            .boxed(),
            path(C::Mdtm),
            path(C::Size),
            opt_path(C::Mlst),
            opt_path(C::Mlsd),
            opt_path(C::Lang),
            path(C::Host),
            (arb_timeval(), text())
                .prop_map(|(time, path)| C::Mfmt { time, path })
                .boxed(),
            any::<Option<bool>>().prop_map(C::Sscn).boxed(),
            unit(C::Cpsv),
            ("[A-Za-z0-9]{1,8}", opt_text())
                .prop_map(|(verb, argument)| C::Unknown {
                    verb: verb.to_ascii_uppercase(),
                    argument,
                })
                .prop_filter("a known verb", |c| !is_known_verb(c.verb()))
                .boxed(),
        ];
        Union::new(variants)
    }

    /// Bytes shaped like command lines, often with a real verb, sometimes not UTF-8.
    fn arb_line() -> impl Strategy<Value = Vec<u8>> {
        let verb = prop_oneof![
            prop::sample::select(vec![
                "PORT", "EPRT", "TYPE", "MFMT", "OPTS", "AUTH", "ALLO", "REST", "EPSV", "SSCN",
                "PROT", "CWD", "PASS", "SITE", "PWD"
            ])
            .prop_map(String::from),
            "[A-Za-z]{0,9}",
        ];
        let arg = prop::collection::vec(
            prop_oneof![
                4 => prop::sample::select(b"0123456789,.|: ANIELRZTC-".to_vec()),
                1 => any::<u8>(),
            ],
            0..40,
        );
        (verb, prop::option::of(arg)).prop_map(|(verb, arg)| {
            let mut line = verb.into_bytes();
            if let Some(arg) = arg {
                line.push(b' ');
                line.extend(arg);
            }
            line
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn display_parse_is_identity(cmd in arb_command()) {
            let wire = cmd.to_string();
            prop_assert_eq!(parse(&wire), Ok(cmd.clone()));
            prop_assert!(cmd.is_encodable());
            prop_assert!(wire.starts_with(cmd.verb()));
            if !matches!(cmd, Command::Pass(_)) {
                prop_assert_eq!(cmd.masked().to_string(), wire);
            }
        }

        #[test]
        fn line_shaped_input_never_panics_and_round_trips(line in arb_line()) {
            if let Ok(cmd) = parse_command(&line) {
                prop_assert_eq!(parse(&cmd.to_string()), Ok(cmd));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(line in prop::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(cmd) = parse_command(&line) {
                prop_assert_eq!(parse(&cmd.to_string()), Ok(cmd));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn long_lines_never_panic(verb in "[A-Z]{1,4}", fill in any::<u8>(), len in 5_000usize..12_000) {
            let mut line = verb.into_bytes();
            line.push(b' ');
            line.resize(len, fill);
            let _ = parse_command(&line);
        }
    }
}
