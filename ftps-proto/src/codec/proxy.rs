//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2): a load balancer that accepts a
//! connection opens its own to the server and sends this header first, naming the client's address. A server
//! behind it reads the header (only from proxies it trusts) and uses that address for everything it decides
//! about the client: logs, limits, the lockout, and which data connections belong to the session.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's signature: twelve bytes no text protocol starts with.
pub const PROXY_V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 header, `\r\n` included (the specification's bound).
pub const PROXY_V1_MAX: usize = 107;

/// Version 2's fixed part: signature, version and command, family, length.
const V2_FIXED: usize = 16;

/// What a PROXY header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The proxied connection: the client's address and the address it connected to.
    Proxied {
        /// The client.
        source: SocketAddr,
        /// Where the client connected (the proxy's listening address).
        destination: SocketAddr,
    },
    /// The proxy speaks for itself (v2 `LOCAL`, e.g. a health check) or cannot say (v1 `UNKNOWN`, v2 `UNSPEC` or
    /// a Unix socket): the connection's own addresses apply.
    Local,
}

/// The result of reading a header from the first bytes of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyParse {
    /// More bytes are needed. `total` is the header's whole length once it is known (version 2, after its fixed
    /// part): a reader may read exactly that many bytes.
    Incomplete {
        /// The whole header's length, when known.
        total: Option<usize>,
    },
    /// A header of `len` bytes; what follows it belongs to the proxied protocol.
    Complete {
        /// What it says.
        header: ProxyHeader,
        /// Its length in bytes.
        len: usize,
    },
    /// Not a valid PROXY header: the connection must be closed.
    Invalid(&'static str),
}

/// Reads a PROXY header (version 1 or 2) from the start of `input`.
///
/// ```
/// use ftps_proto::codec::{parse_proxy_header, ProxyHeader, ProxyParse};
///
/// let input = b"PROXY TCP4 192.0.2.7 198.51.100.1 50123 21\r\nUSER";
/// let ProxyParse::Complete { header, len } = parse_proxy_header(input) else { panic!() };
/// assert_eq!(len, input.len() - 4);
/// assert_eq!(
///     header,
///     ProxyHeader::Proxied {
///         source: "192.0.2.7:50123".parse().unwrap(),
///         destination: "198.51.100.1:21".parse().unwrap(),
///     }
/// );
/// assert_eq!(parse_proxy_header(b"PROXY TCP4 19"), ProxyParse::Incomplete { total: None });
/// assert!(matches!(parse_proxy_header(b"USER alice\r\n"), ProxyParse::Invalid(_)));
/// ```
pub fn parse_proxy_header(input: &[u8]) -> ProxyParse {
    const V1_PREFIX: &[u8] = b"PROXY ";
    let prefix_of = |full: &[u8]| input.len() < full.len() && full.starts_with(input);
    if input.starts_with(&PROXY_V2_SIGNATURE) {
        parse_v2(input)
    } else if input.starts_with(V1_PREFIX) {
        parse_v1(input)
    } else if prefix_of(&PROXY_V2_SIGNATURE) || prefix_of(V1_PREFIX) {
        ProxyParse::Incomplete { total: None }
    } else {
        ProxyParse::Invalid("no PROXY protocol header")
    }
}

/// `PROXY TCP4|TCP6 SRC DST SPORT DPORT\r\n` or `PROXY UNKNOWN ...\r\n`.
fn parse_v1(input: &[u8]) -> ProxyParse {
    let window = &input[..input.len().min(PROXY_V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if input.len() >= PROXY_V1_MAX {
            ProxyParse::Invalid("PROXY v1 header longer than 107 bytes")
        } else {
            ProxyParse::Incomplete { total: None }
        };
    };
    let len = end + 2;
    let Ok(line) = std::str::from_utf8(&input[..end]) else {
        return ProxyParse::Invalid("PROXY v1 header is not ASCII");
    };
    let mut fields = line.split(' ').skip(1);
    let family = fields.next().unwrap_or("");
    if family == "UNKNOWN" {
        // The specification: the rest of the line is ignored, and the connection's addresses apply.
        return ProxyParse::Complete {
            header: ProxyHeader::Local,
            len,
        };
    }
    let (Some(source), Some(destination), Some(source_port), Some(destination_port), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return ProxyParse::Invalid("PROXY v1 header needs four fields after the family");
    };
    let ip = |text: &str| -> Option<IpAddr> {
        match family {
            "TCP4" => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
            "TCP6" => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
            _ => None,
        }
    };
    // Ports are decimal without sign or leading zeros ("0" alone is allowed).
    let port = |text: &str| -> Option<u16> {
        let canonical = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        canonical.then(|| text.parse().ok()).flatten()
    };
    match (
        ip(source),
        ip(destination),
        port(source_port),
        port(destination_port),
    ) {
        (Some(s), Some(d), Some(sp), Some(dp)) => ProxyParse::Complete {
            header: ProxyHeader::Proxied {
                source: SocketAddr::new(s, sp),
                destination: SocketAddr::new(d, dp),
            },
            len,
        },
        _ if family != "TCP4" && family != "TCP6" => {
            ProxyParse::Invalid("PROXY v1 family is not TCP4, TCP6 or UNKNOWN")
        }
        _ => ProxyParse::Invalid("PROXY v1 address or port is malformed"),
    }
}

/// The binary version 2 header.
fn parse_v2(input: &[u8]) -> ProxyParse {
    if input.len() < V2_FIXED {
        return ProxyParse::Incomplete { total: None };
    }
    let (version_command, family, length) = (
        input[12],
        input[13],
        usize::from(u16::from_be_bytes([input[14], input[15]])),
    );
    let total = V2_FIXED + length;
    if version_command >> 4 != 2 {
        return ProxyParse::Invalid("PROXY v2 header with another version");
    }
    let local = match version_command & 0x0F {
        0 => true,
        1 => false,
        _ => return ProxyParse::Invalid("PROXY v2 command is neither LOCAL nor PROXY"),
    };
    if input.len() < total {
        return ProxyParse::Incomplete { total: Some(total) };
    }
    let body = &input[V2_FIXED..total];
    // TLVs after the addresses carry optional details; none changes who the client is.
    let header = match (local, family >> 4, family & 0x0F) {
        (true, _, _) => ProxyHeader::Local,
        // TCP (STREAM) over IPv4, then over IPv6; UDP makes no sense for FTP.
        (false, 1, 1) if body.len() >= 12 => ProxyHeader::Proxied {
            source: SocketAddr::new(ipv4(&body[0..4]), port(&body[8..10])),
            destination: SocketAddr::new(ipv4(&body[4..8]), port(&body[10..12])),
        },
        (false, 2, 1) if body.len() >= 36 => ProxyHeader::Proxied {
            source: SocketAddr::new(ipv6(&body[0..16]), port(&body[32..34])),
            destination: SocketAddr::new(ipv6(&body[16..32]), port(&body[34..36])),
        },
        (false, 1 | 2, 1) => return ProxyParse::Invalid("PROXY v2 addresses are cut short"),
        // UNSPEC or a Unix socket: nothing to say about an IP client.
        (false, 0 | 3, _) => ProxyHeader::Local,
        _ => return ProxyParse::Invalid("PROXY v2 family is not TCP over IPv4 or IPv6"),
    };
    ProxyParse::Complete { header, len: total }
}

fn ipv4(bytes: &[u8]) -> IpAddr {
    let mut octets = [0u8; 4];
    octets.copy_from_slice(bytes);
    IpAddr::from(octets)
}

fn ipv6(bytes: &[u8]) -> IpAddr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(bytes);
    IpAddr::from(octets)
}

fn port(bytes: &[u8]) -> u16 {
    u16::from_be_bytes([bytes[0], bytes[1]])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = PROXY_V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: source.parse().unwrap(),
            destination: destination.parse().unwrap(),
        }
    }

    #[test]
    fn version_1() {
        let line = b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 21\r\n";
        assert_eq!(
            parse_proxy_header(line),
            ProxyParse::Complete {
                header: proxied("[2001:db8::1]:4000", "[2001:db8::2]:21"),
                len: line.len()
            }
        );
        assert_eq!(
            parse_proxy_header(b"PROXY UNKNOWN whatever follows\r\nX"),
            ProxyParse::Complete {
                header: ProxyHeader::Local,
                len: 32
            }
        );
        for bad in [
            &b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2 3\r\n"[..],
            b"PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 65536 2\r\n",
            b"PROXY TCP4 2001:db8::1 192.0.2.2 1 2\r\n",
            b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n",
            b"PROXY TCP4 192.0.2.1 192.0.2.2 +1 2\r\n",
            b"PROXY TCP4 192.0.2.1  192.0.2.2 1 2\r\n",
        ] {
            assert!(
                matches!(parse_proxy_header(bad), ProxyParse::Invalid(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 100]].concat();
        assert!(matches!(parse_proxy_header(&long), ProxyParse::Invalid(_)));
        assert_eq!(
            parse_proxy_header(&long[..90]),
            ProxyParse::Incomplete { total: None }
        );
    }

    #[test]
    fn version_2() {
        let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1];
        body.extend_from_slice(&50123u16.to_be_bytes());
        body.extend_from_slice(&21u16.to_be_bytes());
        // A TLV (unique id) after the addresses is skipped.
        body.extend_from_slice(&[0x05, 0x00, 0x02, b'i', b'd']);
        let header = v2(1, 0x11, &body);
        assert_eq!(
            parse_proxy_header(&[header.as_slice(), b"AUTH TLS\r\n"].concat()),
            ProxyParse::Complete {
                header: proxied("192.0.2.7:50123", "198.51.100.1:21"),
                len: header.len()
            }
        );
        assert_eq!(
            parse_proxy_header(&header[..20]),
            ProxyParse::Incomplete {
                total: Some(header.len())
            }
        );
        assert_eq!(
            parse_proxy_header(&header[..7]),
            ProxyParse::Incomplete { total: None }
        );
        let mut body6 = Vec::new();
        body6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body6.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        body6.extend_from_slice(&[0x0F, 0xA0, 0x00, 0x15]);
        assert_eq!(
            parse_proxy_header(&v2(1, 0x21, &body6)),
            ProxyParse::Complete {
                header: proxied("[2001:db8::1]:4000", "[2001:db8::2]:21"),
                len: 16 + 36
            }
        );
        // LOCAL (a health check) and UNSPEC: the connection's own addresses apply.
        assert!(matches!(
            parse_proxy_header(&v2(0, 0x00, &[])),
            ProxyParse::Complete {
                header: ProxyHeader::Local,
                len: 16
            }
        ));
        assert!(matches!(
            parse_proxy_header(&v2(1, 0x00, &[])),
            ProxyParse::Complete {
                header: ProxyHeader::Local,
                ..
            }
        ));
        for bad in [
            v2(2, 0x11, &body),
            v2(1, 0x12, &body),
            v2(1, 0x11, &body[..11]),
            v2(1, 0x41, &body),
            {
                let mut wrong_version = v2(1, 0x11, &body);
                wrong_version[12] = 0x11;
                wrong_version
            },
        ] {
            assert!(
                matches!(parse_proxy_header(&bad), ProxyParse::Invalid(_)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn ftp_and_tls_first_bytes_are_not_headers() {
        for first in [
            &b"USER alice\r\n"[..],
            b"\x16\x03\x01\x02\x00",
            b"PROX\r\n",
            b"\r\n\r\nQUIT",
        ] {
            assert!(matches!(parse_proxy_header(first), ProxyParse::Invalid(_)));
        }
    }

    proptest! {
        /// Any v1 address pair reads back; any prefix of a header is incomplete, never invalid.
        #[test]
        fn v1_round_trip(a in any::<[u8; 4]>(), b in any::<[u8; 4]>(), sp in any::<u16>(), dp in any::<u16>()) {
            let (s, d) = (Ipv4Addr::from(a), Ipv4Addr::from(b));
            let line = format!("PROXY TCP4 {s} {d} {sp} {dp}\r\n");
            let expected = ProxyParse::Complete {
                header: ProxyHeader::Proxied {
                    source: SocketAddr::new(s.into(), sp),
                    destination: SocketAddr::new(d.into(), dp),
                },
                len: line.len(),
            };
            prop_assert_eq!(parse_proxy_header(line.as_bytes()), expected);
            for cut in 0..line.len() {
                let incomplete = matches!(parse_proxy_header(&line.as_bytes()[..cut]), ProxyParse::Incomplete { .. });
                prop_assert!(incomplete);
            }
        }

        /// Arbitrary bytes never panic, and a complete header never claims more bytes than it was given.
        #[test]
        fn arbitrary_bytes(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let ProxyParse::Complete { len, .. } = parse_proxy_header(&input) {
                prop_assert!(len <= input.len());
            }
        }
    }
}
