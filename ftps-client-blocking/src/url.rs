//! FTP URLs as the `ftps` command line takes them.
//!
//! Grammar (RFC 1738 §3.1/§3.2 with the RFC 3986 authority rules):
//!
//! ```text
//! scheme "://" [ user [ ":" password ] "@" ] host [ ":" port ] [ "/" path ]
//! ```
//!
//! * `ftps://`  explicit FTPS (`AUTH TLS`, RFC 4217 §4), default port 21;
//! * `ftpsi://` implicit FTPS (TLS from the first byte), default port 990;
//! * `ftp://`   plain FTP, accepted only through [`FtpUrl::parse_allow_plain`],
//!   because it sends the password in clear.
//!
//! User, password and path are percent-decoded (RFC 3986 §2.1) and must decode to UTF-8
//! (RFC 2640 §2.2 pathnames). A decoded CR, LF or NUL is refused: those would let a URL
//! smuggle a second command onto the control connection (RFC 959 §4.1.3 ends every command
//! at CRLF).
//!
//! The path is everything after the `/` that ends the authority, decoded, so `%2F` and `/`
//! both become `/`. As in RFC 1738 §3.2.2 a path is relative to the login directory unless
//! it starts with `/`, which is written `%2F` (`ftps://host/%2Fetc/motd` is `/etc/motd`).
//! Queries and fragments have no meaning for FTP and are refused; `;type=` is not
//! interpreted (transfers are always binary).
//!
//! # Why not the `url` crate
//!
//! Issue 19 asked to replace this parser with the `url` crate (WHATWG) unless a measurement
//! or a real gap says otherwise. Both do (url 2.5.9, measured 2026-12 on this module's test
//! inputs and in the `ftps` binary):
//!
//! * `ftp` is a WHATWG special scheme and `ftps`/`ftpsi` are not, so one host reads two
//!   ways: `ftp://1.2/` is `1.0.0.2` but `ftps://1.2/` is `1.2`; `ftp://Bücher.example` goes
//!   to punycode but `ftps://` percent-encodes it (`B%C3%BCcher.example`, no DNS name);
//!   `ftp://a.1/` is refused; `\` separates paths in `ftp://` only; `ftp://h:21` forgets
//!   the written port, so [`FtpUrl::explicit_port`] could not report it.
//! * Dot segments are resolved: `ftps://h/a/../b` and `a/%2e%2e/b` become `/b`, another file
//!   than the one written, and format-then-parse stops being the identity (the proptest).
//! * Tab, CR and LF are deleted silently (`ftps://h/a<TAB>b` is `/ab`), where we refuse them.
//! * It accepts `ftps://`, `ftps:///x`, `ftps://@h`, `ftps://:pw@h`, port 0, and hosts such
//!   as `h!$&` or `ho%20st`; it leaves `%2` and `%FF` undecoded; and its one "invalid IPv6
//!   address" for both `[::1` and `[::1]x` is too coarse for [`UrlError`].
//!
//! So every check here would stay (escapes, UTF-8, control characters, host, port,
//! userinfo) plus a scan of the raw input for what it deletes; it would replace only the
//! split into scheme, userinfo, host, port and path, about 80 of the ~510 non-test lines.
//! It would cost 28 crates (idna with ICU4X normalizer and property data), a clean build of
//! 91-101 s CPU in dev (deps at opt-level 3, as here) and 25-28 s in release (indicatif: 15
//! and 8 s), 191 s CPU to add to this workspace (re-unified `syn` and `smallvec` features
//! also rebuild syn, the derive crates, clap and ftps-proto), and +292 KiB in the stripped
//! dev `ftps` (5,068,408 to 5,367,688 bytes) for one `Url::parse` call.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// How the control connection is secured, as chosen by the URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `ftps://`: plain TCP first, then `AUTH TLS` (RFC 4217 §4). Default port 21.
    Ftps,
    /// `ftpsi://`: TLS from the first byte ("implicit FTPS"). Default port 990.
    FtpsImplicit,
    /// `ftp://`: no TLS at all. Only parsed when the caller opts in.
    Ftp,
}

impl Scheme {
    /// The scheme name as written in a URL, without `://`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ftps => "ftps",
            Scheme::FtpsImplicit => "ftpsi",
            Scheme::Ftp => "ftp",
        }
    }

    /// The port used when the URL names none.
    #[must_use]
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Ftps | Scheme::Ftp => 21,
            Scheme::FtpsImplicit => 990,
        }
    }

    /// Whether the control connection uses TLS.
    #[must_use]
    pub fn is_tls(self) -> bool {
        !matches!(self, Scheme::Ftp)
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not an acceptable FTP URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// No `scheme://` prefix.
    MissingScheme,
    /// A scheme other than `ftps`, `ftpsi` or `ftp`.
    UnsupportedScheme(String),
    /// `ftp://` without the caller's opt-in to plain FTP.
    PlainNotAllowed,
    /// The host is empty.
    EmptyHost,
    /// The host contains characters a host name cannot have.
    InvalidHost(String),
    /// A `[...]` literal that is not an IPv6 address, or a missing `]`.
    InvalidIpv6(String),
    /// The port is not a number in 1..=65535.
    InvalidPort(String),
    /// `@` with an empty user name before it.
    EmptyUser,
    /// A `%` not followed by two hex digits.
    InvalidPercentEncoding,
    /// Percent-decoding produced bytes that are not UTF-8.
    NotUtf8,
    /// A control character (CR, LF, NUL, ...) in user, password or path.
    ControlCharacter,
    /// A `?` query or `#` fragment, which FTP URLs do not have.
    QueryOrFragment,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UrlError::MissingScheme => {
                f.write_str("missing scheme (expected ftps://, ftpsi:// or ftp://)")
            }
            UrlError::UnsupportedScheme(s) => {
                write!(f, "unsupported scheme {s:?} (expected ftps, ftpsi or ftp)")
            }
            UrlError::PlainNotAllowed => {
                f.write_str("plain ftp:// sends the password in clear; pass --plain to allow it")
            }
            UrlError::EmptyHost => f.write_str("empty host"),
            UrlError::InvalidHost(h) => write!(f, "invalid host {h:?}"),
            UrlError::InvalidIpv6(h) => write!(f, "invalid IPv6 literal {h:?}"),
            UrlError::InvalidPort(p) => write!(f, "invalid port {p:?} (expected 1-65535)"),
            UrlError::EmptyUser => f.write_str("empty user name before '@'"),
            UrlError::InvalidPercentEncoding => {
                f.write_str("invalid percent-escape ('%' must be followed by two hex digits)")
            }
            UrlError::NotUtf8 => f.write_str("percent-escapes do not decode to UTF-8"),
            UrlError::ControlCharacter => {
                f.write_str("control character (CR, LF, NUL, ...) in user, password or path")
            }
            UrlError::QueryOrFragment => {
                f.write_str("'?' and '#' must be percent-encoded in FTP URLs (%3F, %23)")
            }
        }
    }
}

impl std::error::Error for UrlError {}

/// A parsed `ftps://`, `ftpsi://` or `ftp://` URL.
///
/// [`Display`](fmt::Display) never shows the password; [`FtpUrl::to_string_with_password`]
/// does, for the rare caller that must.
#[derive(Clone, PartialEq, Eq)]
pub struct FtpUrl {
    scheme: Scheme,
    user: Option<String>,
    password: Option<String>,
    /// Host name or IP address; IPv6 without the brackets.
    host: String,
    /// The port as written, `None` when the URL names none.
    port: Option<u16>,
    path: String,
}

impl FtpUrl {
    /// Parses an `ftps://` or `ftpsi://` URL; `ftp://` is refused with
    /// [`UrlError::PlainNotAllowed`].
    pub fn parse(input: &str) -> Result<FtpUrl, UrlError> {
        let url = FtpUrl::parse_allow_plain(input)?;
        if url.scheme == Scheme::Ftp {
            return Err(UrlError::PlainNotAllowed);
        }
        Ok(url)
    }

    /// Parses an `ftps://`, `ftpsi://` or `ftp://` URL.
    pub fn parse_allow_plain(input: &str) -> Result<FtpUrl, UrlError> {
        let (scheme_str, rest) = input.split_once("://").ok_or(UrlError::MissingScheme)?;
        // RFC 3986 §3.1: schemes are case-insensitive.
        let scheme = match scheme_str.to_ascii_lowercase().as_str() {
            "ftps" => Scheme::Ftps,
            "ftpsi" => Scheme::FtpsImplicit,
            "ftp" => Scheme::Ftp,
            _ => return Err(UrlError::UnsupportedScheme(scheme_str.to_owned())),
        };
        let (authority, raw_path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash + 1..]),
            None => (rest, ""),
        };
        if raw_path.contains(['?', '#']) || authority.contains(['?', '#']) {
            return Err(UrlError::QueryOrFragment);
        }
        // The last '@' ends the userinfo: a literal '@' in a password is common enough in
        // hand-typed URLs to tolerate; a host never contains one.
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                if user.is_empty() {
                    return Err(UrlError::EmptyUser);
                }
                (Some(decode(user)?), password.map(decode).transpose()?)
            }
        };
        let (host, port) = parse_host_port(hostport)?;
        let path = decode(raw_path)?;
        Ok(FtpUrl {
            scheme,
            user,
            password,
            host,
            port,
            path,
        })
    }

    /// Builds a URL from parts. The host is validated as the parser would; user, password
    /// and path are taken as decoded text and checked for control characters.
    pub fn new(
        scheme: Scheme,
        user: Option<String>,
        password: Option<String>,
        host: &str,
        port: Option<u16>,
        path: String,
    ) -> Result<FtpUrl, UrlError> {
        let host = if host.contains(':') {
            parse_ipv6(host)?
        } else {
            validate_host_name(host)?;
            host.to_owned()
        };
        if port == Some(0) {
            return Err(UrlError::InvalidPort("0".to_owned()));
        }
        if user.as_deref() == Some("") {
            return Err(UrlError::EmptyUser);
        }
        for text in [user.as_deref(), password.as_deref(), Some(path.as_str())]
            .into_iter()
            .flatten()
        {
            check_no_controls(text)?;
        }
        if password.is_some() && user.is_none() {
            return Err(UrlError::EmptyUser);
        }
        Ok(FtpUrl {
            scheme,
            user,
            password,
            host,
            port,
            path,
        })
    }

    /// The scheme, which decides how the connection is secured.
    #[must_use]
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// Returns this URL with another scheme (e.g. `--implicit` turns `ftps` into `ftpsi`).
    /// A port given in the URL is kept; otherwise the new scheme's default applies.
    #[must_use]
    pub fn with_scheme(mut self, scheme: Scheme) -> FtpUrl {
        self.scheme = scheme;
        self
    }

    /// The decoded user name, if the URL has one.
    #[must_use]
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The decoded password, if the URL has one (`user:@host` has an empty one).
    #[must_use]
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The host: a name, an IPv4 address, or an IPv6 address without brackets. Suitable
    /// for `(host, port)` in [`std::net::ToSocketAddrs`].
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port to connect to: the URL's, or the scheme's default.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port.unwrap_or_else(|| self.scheme.default_port())
    }

    /// The port as written in the URL, `None` when it names none.
    #[must_use]
    pub fn explicit_port(&self) -> Option<u16> {
        self.port
    }

    /// The decoded path: relative to the login directory unless it starts with `/`.
    /// Empty for the login directory itself.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Returns this URL with another decoded path.
    pub fn with_path(mut self, path: String) -> Result<FtpUrl, UrlError> {
        check_no_controls(&path)?;
        self.path = path;
        Ok(self)
    }

    /// The last non-empty path segment (a file name), if any, and only if it is usable as a
    /// local file name: not `.` or `..`.
    #[must_use]
    pub fn file_name(&self) -> Option<&str> {
        let name = self.path.rsplit('/').find(|s| !s.is_empty())?;
        (name != "." && name != "..").then_some(name)
    }

    /// Formats the URL including the password, percent-encoded. Parsing the result gives
    /// back an equal `FtpUrl`. Do not log it.
    #[must_use]
    pub fn to_string_with_password(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, true);
        out
    }

    fn write(&self, out: &mut String, with_password: bool) {
        out.push_str(self.scheme.as_str());
        out.push_str("://");
        if let Some(user) = &self.user {
            encode_into(out, user, false);
            if let Some(password) = self.password.as_deref().filter(|_| with_password) {
                out.push(':');
                encode_into(out, password, false);
            }
            out.push('@');
        }
        if self.host.contains(':') {
            out.push('[');
            out.push_str(&self.host);
            out.push(']');
        } else {
            out.push_str(&self.host);
        }
        if let Some(port) = self.port {
            out.push(':');
            out.push_str(&port.to_string());
        }
        if !self.path.is_empty() {
            out.push('/');
            // A leading '/' would read back as an empty first segment; RFC 1738 §3.2.2
            // spells an absolute path with %2F.
            let rest = match self.path.strip_prefix('/') {
                Some(rest) => {
                    out.push_str("%2F");
                    rest
                }
                None => &self.path,
            };
            encode_into(out, rest, true);
        }
    }
}

impl fmt::Display for FtpUrl {
    /// Formats the URL without the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write(&mut out, false);
        f.write_str(&out)
    }
}

impl fmt::Debug for FtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpUrl")
            .field("scheme", &self.scheme)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .finish()
    }
}

impl FromStr for FtpUrl {
    type Err = UrlError;

    /// Same as [`FtpUrl::parse`]: plain `ftp://` is refused.
    fn from_str(s: &str) -> Result<FtpUrl, UrlError> {
        FtpUrl::parse(s)
    }
}

fn parse_host_port(hostport: &str) -> Result<(String, Option<u16>), UrlError> {
    let (host, port_str) = if let Some(bracketed) = hostport.strip_prefix('[') {
        let close = bracketed
            .find(']')
            .ok_or_else(|| UrlError::InvalidIpv6(hostport.to_owned()))?;
        let host = parse_ipv6(&bracketed[..close])?;
        let after = &bracketed[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(UrlError::InvalidHost(hostport.to_owned())),
        };
        (host, port)
    } else {
        let (host, port) = match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        validate_host_name(host)?;
        (host.to_owned(), port)
    };
    // RFC 3986 §3.2.3: an empty port ("host:") means the default.
    let port = match port_str {
        None | Some("") => None,
        Some(p) => Some(parse_port(p)?),
    };
    Ok((host, port))
}

fn parse_port(p: &str) -> Result<u16, UrlError> {
    if !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UrlError::InvalidPort(p.to_owned()));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(UrlError::InvalidPort(p.to_owned())),
        Ok(port) => Ok(port),
    }
}

fn parse_ipv6(text: &str) -> Result<String, UrlError> {
    // Zone ids (RFC 6874) are not supported: they only make sense for link-local peers.
    let addr: Ipv6Addr = text
        .parse()
        .map_err(|_| UrlError::InvalidIpv6(text.to_owned()))?;
    Ok(addr.to_string())
}

/// RFC 3986 §3.2.2 reg-name, restricted to what DNS names and IPv4 literals use.
fn validate_host_name(host: &str) -> Result<(), UrlError> {
    if host.is_empty() {
        return Err(UrlError::EmptyHost);
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    {
        return Err(UrlError::InvalidHost(host.to_owned()));
    }
    Ok(())
}

fn check_no_controls(text: &str) -> Result<(), UrlError> {
    if text.chars().any(char::is_control) {
        return Err(UrlError::ControlCharacter);
    }
    Ok(())
}

/// Percent-decodes `text` (RFC 3986 §2.1) into UTF-8, refusing control characters.
fn decode(text: &str) -> Result<String, UrlError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hi = bytes.get(i + 1).and_then(|&c| hex_value(c));
            let lo = bytes.get(i + 2).and_then(|&c| hex_value(c));
            match (hi, lo) {
                (Some(hi), Some(lo)) => out.push((hi << 4) | lo),
                _ => return Err(UrlError::InvalidPercentEncoding),
            }
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).map_err(|_| UrlError::NotUtf8)?;
    check_no_controls(&decoded)?;
    Ok(decoded)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes everything except RFC 3986 unreserved characters (and `/` in paths).
fn encode_into(out: &mut String, text: &str, keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    fn parse(s: &str) -> FtpUrl {
        FtpUrl::parse_allow_plain(s).unwrap()
    }

    #[test]
    fn minimal_explicit() {
        let url = parse("ftps://example.com");
        assert_eq!(url.scheme(), Scheme::Ftps);
        assert_eq!(url.host(), "example.com");
        assert_eq!(url.port(), 21);
        assert_eq!(url.explicit_port(), None);
        assert_eq!(url.user(), None);
        assert_eq!(url.password(), None);
        assert_eq!(url.path(), "");
    }

    #[test]
    fn full_url() {
        let url = parse("ftps://alice:s3cret@files.example.com:2121/pub/readme.txt");
        assert_eq!(url.user(), Some("alice"));
        assert_eq!(url.password(), Some("s3cret"));
        assert_eq!(url.host(), "files.example.com");
        assert_eq!(url.port(), 2121);
        assert_eq!(url.path(), "pub/readme.txt");
        assert_eq!(url.file_name(), Some("readme.txt"));
    }

    #[test]
    fn implicit_default_port_is_990() {
        let url = parse("ftpsi://h");
        assert_eq!(url.scheme(), Scheme::FtpsImplicit);
        assert_eq!(url.port(), 990);
        assert_eq!(parse("ftpsi://h:21").port(), 21);
    }

    #[test]
    fn with_scheme_keeps_explicit_port_only() {
        let url = parse("ftps://h/x").with_scheme(Scheme::FtpsImplicit);
        assert_eq!(url.port(), 990);
        let url = parse("ftps://h:2121/x").with_scheme(Scheme::FtpsImplicit);
        assert_eq!(url.port(), 2121);
    }

    #[test]
    fn scheme_is_case_insensitive() {
        assert_eq!(parse("FTPS://h").scheme(), Scheme::Ftps);
        assert_eq!(parse("FtpSi://h").scheme(), Scheme::FtpsImplicit);
    }

    #[test]
    fn plain_ftp_needs_opt_in() {
        assert_eq!(FtpUrl::parse("ftp://h/x"), Err(UrlError::PlainNotAllowed));
        assert_eq!("ftp://h".parse::<FtpUrl>(), Err(UrlError::PlainNotAllowed));
        let url = FtpUrl::parse_allow_plain("ftp://h/x").unwrap();
        assert_eq!(url.scheme(), Scheme::Ftp);
        assert!(!url.scheme().is_tls());
        assert_eq!(url.port(), 21);
    }

    #[test]
    fn bad_schemes() {
        assert_eq!(FtpUrl::parse("example.com/x"), Err(UrlError::MissingScheme));
        assert_eq!(
            FtpUrl::parse("http://h/"),
            Err(UrlError::UnsupportedScheme("http".to_owned()))
        );
        assert_eq!(
            FtpUrl::parse("sftp://h/"),
            Err(UrlError::UnsupportedScheme("sftp".to_owned()))
        );
    }

    #[test]
    fn ipv6_literals() {
        let url = parse("ftps://[::1]:2121/x");
        assert_eq!(url.host(), "::1");
        assert_eq!(url.port(), 2121);
        assert_eq!(url.path(), "x");
        let url = parse("ftps://u@[2001:db8::1]");
        assert_eq!(url.host(), "2001:db8::1");
        assert_eq!(url.port(), 21);
        assert_eq!(url.to_string(), "ftps://u@[2001:db8::1]");
        assert_eq!(
            parse("ftps://[::1]:2121/x").to_string(),
            "ftps://[::1]:2121/x"
        );
        // Normalised form.
        assert_eq!(parse("ftps://[2001:DB8:0::1]").host(), "2001:db8::1");
    }

    #[test]
    fn bad_ipv6() {
        assert_eq!(
            FtpUrl::parse("ftps://[::1/x"),
            Err(UrlError::InvalidIpv6("[::1".to_owned()))
        );
        assert_eq!(
            FtpUrl::parse("ftps://[zz::1]/"),
            Err(UrlError::InvalidIpv6("zz::1".to_owned()))
        );
        assert_eq!(
            FtpUrl::parse("ftps://[::1]x/"),
            Err(UrlError::InvalidHost("[::1]x".to_owned()))
        );
        assert_eq!(
            FtpUrl::parse("ftps://[fe80::1%25eth0]/"),
            Err(UrlError::InvalidIpv6("fe80::1%25eth0".to_owned()))
        );
        // An unbracketed IPv6 address is read as host:port and fails.
        assert!(FtpUrl::parse("ftps://::1/").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse("ftps://h:/x").explicit_port(), None);
        assert_eq!(parse("ftps://h:65535").port(), 65535);
        assert_eq!(
            FtpUrl::parse("ftps://h:0"),
            Err(UrlError::InvalidPort("0".to_owned()))
        );
        assert_eq!(
            FtpUrl::parse("ftps://h:65536"),
            Err(UrlError::InvalidPort("65536".to_owned()))
        );
        assert_eq!(
            FtpUrl::parse("ftps://h:+21"),
            Err(UrlError::InvalidPort("+21".to_owned()))
        );
        assert_eq!(
            FtpUrl::parse("ftps://h:ftp"),
            Err(UrlError::InvalidPort("ftp".to_owned()))
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(FtpUrl::parse("ftps://"), Err(UrlError::EmptyHost));
        assert_eq!(FtpUrl::parse("ftps:///x"), Err(UrlError::EmptyHost));
        assert_eq!(FtpUrl::parse("ftps://u@:21/x"), Err(UrlError::EmptyHost));
        assert_eq!(
            FtpUrl::parse("ftps://ho st/"),
            Err(UrlError::InvalidHost("ho st".to_owned()))
        );
        assert_eq!(parse("ftps://192.0.2.7:2121").host(), "192.0.2.7");
    }

    #[test]
    fn userinfo() {
        let url = parse("ftps://alice@h");
        assert_eq!(url.user(), Some("alice"));
        assert_eq!(url.password(), None);
        let url = parse("ftps://alice:@h");
        assert_eq!(url.password(), Some(""));
        let url = parse("ftps://al%40ce:p%3Aw%2Fd%25@h");
        assert_eq!(url.user(), Some("al@ce"));
        assert_eq!(url.password(), Some("p:w/d%"));
        // A raw '@' in the password: the last '@' ends the userinfo.
        let url = parse("ftps://alice:p@ss@h/x");
        assert_eq!(url.password(), Some("p@ss"));
        assert_eq!(url.host(), "h");
        // A ':' in the password after the first one belongs to the password.
        assert_eq!(parse("ftps://a:b:c@h").password(), Some("b:c"));
        assert_eq!(FtpUrl::parse("ftps://@h"), Err(UrlError::EmptyUser));
        assert_eq!(FtpUrl::parse("ftps://:pw@h"), Err(UrlError::EmptyUser));
    }

    #[test]
    fn paths() {
        assert_eq!(parse("ftps://h/").path(), "");
        assert_eq!(parse("ftps://h/a/b/").path(), "a/b/");
        assert_eq!(parse("ftps://h/%2Fetc/motd").path(), "/etc/motd");
        assert_eq!(parse("ftps://h//etc").path(), "/etc");
        assert_eq!(parse("ftps://h/a%2fb").path(), "a/b");
        assert_eq!(parse("ftps://h/my%20file.txt").path(), "my file.txt");
        assert_eq!(parse("ftps://h/caf%C3%A9").path(), "café");
        // Raw UTF-8 and spaces, as typed on a command line, are accepted.
        assert_eq!(parse("ftps://h/café ok").path(), "café ok");
        assert_eq!(parse("ftps://h/a;type=i").path(), "a;type=i");
    }

    #[test]
    fn bad_escapes() {
        assert_eq!(
            FtpUrl::parse("ftps://h/a%2"),
            Err(UrlError::InvalidPercentEncoding)
        );
        assert_eq!(
            FtpUrl::parse("ftps://h/a%zz"),
            Err(UrlError::InvalidPercentEncoding)
        );
        assert_eq!(
            FtpUrl::parse("ftps://u%G1@h/"),
            Err(UrlError::InvalidPercentEncoding)
        );
        assert_eq!(FtpUrl::parse("ftps://h/%FF%FE"), Err(UrlError::NotUtf8));
        assert_eq!(FtpUrl::parse("ftps://h/%C3"), Err(UrlError::NotUtf8));
    }

    #[test]
    fn command_injection_is_refused() {
        assert_eq!(
            FtpUrl::parse("ftps://h/x%0D%0ADELE%20y"),
            Err(UrlError::ControlCharacter)
        );
        assert_eq!(
            FtpUrl::parse("ftps://u:p%0A@h/"),
            Err(UrlError::ControlCharacter)
        );
        assert_eq!(
            FtpUrl::parse("ftps://h/a%00"),
            Err(UrlError::ControlCharacter)
        );
        assert_eq!(
            FtpUrl::parse("ftps://h/a\tb"),
            Err(UrlError::ControlCharacter)
        );
    }

    #[test]
    fn query_and_fragment_are_refused() {
        assert_eq!(
            FtpUrl::parse("ftps://h/a?b"),
            Err(UrlError::QueryOrFragment)
        );
        assert_eq!(
            FtpUrl::parse("ftps://h/a#b"),
            Err(UrlError::QueryOrFragment)
        );
        assert_eq!(FtpUrl::parse("ftps://h?x"), Err(UrlError::QueryOrFragment));
        assert_eq!(parse("ftps://h/a%3Fb%23").path(), "a?b#");
    }

    #[test]
    fn display_hides_password() {
        let url = parse("ftps://alice:s3cret@h:2121/%2Fa%20b");
        assert_eq!(url.to_string(), "ftps://alice@h:2121/%2Fa%20b");
        assert_eq!(
            url.to_string_with_password(),
            "ftps://alice:s3cret@h:2121/%2Fa%20b"
        );
        let debug = format!("{url:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
    }

    #[test]
    fn file_name() {
        assert_eq!(parse("ftps://h/a/b.txt").file_name(), Some("b.txt"));
        assert_eq!(parse("ftps://h/a/dir/").file_name(), Some("dir"));
        assert_eq!(parse("ftps://h/").file_name(), None);
        assert_eq!(parse("ftps://h/a/..").file_name(), None);
        assert_eq!(parse("ftps://h/.").file_name(), None);
    }

    #[test]
    fn new_validates() {
        let url = FtpUrl::new(
            Scheme::Ftps,
            Some("u".into()),
            None,
            "::1",
            Some(2121),
            "/x".into(),
        )
        .unwrap();
        assert_eq!(url.to_string(), "ftps://u@[::1]:2121/%2Fx");
        assert_eq!(
            FtpUrl::new(Scheme::Ftps, None, None, "h", Some(0), String::new()),
            Err(UrlError::InvalidPort("0".to_owned()))
        );
        assert_eq!(
            FtpUrl::new(Scheme::Ftps, None, None, "h", None, "a\r\n".into()),
            Err(UrlError::ControlCharacter)
        );
        assert_eq!(
            FtpUrl::new(
                Scheme::Ftps,
                None,
                Some("p".into()),
                "h",
                None,
                String::new()
            ),
            Err(UrlError::EmptyUser)
        );
    }

    mod roundtrip {
        use super::super::*;
        use proptest::prelude::*;

        fn scheme() -> impl Strategy<Value = Scheme> {
            prop_oneof![
                Just(Scheme::Ftps),
                Just(Scheme::FtpsImplicit),
                Just(Scheme::Ftp)
            ]
        }

        fn host() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z0-9][a-z0-9.-]{0,20}",
                any::<std::net::Ipv4Addr>().prop_map(|a| a.to_string()),
                any::<std::net::Ipv6Addr>().prop_map(|a| a.to_string()),
            ]
        }

        /// Any text without control characters, including '%', '/', '@', ':' and non-ASCII.
        fn text() -> impl Strategy<Value = String> {
            "[^\\p{Cc}]{0,16}"
        }

        proptest::proptest! {
            #[test]
            fn format_then_parse_is_identity(
                scheme in scheme(),
                userinfo in proptest::option::of((text().prop_filter("non-empty", |u| !u.is_empty()),
                                                  proptest::option::of(text()))),
                host in host(),
                port in proptest::option::of(1u16..),
                path in text(),
            ) {
                let (user, password) = match userinfo {
                    Some((u, p)) => (Some(u), p),
                    None => (None, None),
                };
                let url = FtpUrl::new(scheme, user, password, &host, port, path).unwrap();
                let text = url.to_string_with_password();
                let parsed = FtpUrl::parse_allow_plain(&text).unwrap();
                prop_assert_eq!(&parsed, &url);
                // Display drops only the password.
                let shown = FtpUrl::parse_allow_plain(&url.to_string()).unwrap();
                prop_assert_eq!(shown.password(), None);
                prop_assert_eq!(shown.path(), url.path());
            }

            #[test]
            fn parse_never_panics(input in "\\PC{0,40}") {
                let _ = FtpUrl::parse_allow_plain(&input);
                let _ = FtpUrl::parse_allow_plain(&format!("ftps://{input}"));
            }
        }
    }
}
