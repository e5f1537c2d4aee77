//! The PROXY protocol behind a load balancer (`[proxy_protocol]`): which peers are proxies, and reading the
//! header they send first on control and data connections alike, so the client's own address is the one the
//! server uses for logs, limits, the lockout and the data-connection peer check.
//!
//! A connection from a trusted address must start with a header (version 1 or 2; the parser is
//! [`ftps_proto::codec::parse_proxy_header`]); one that does not is closed. A connection from any other address
//! is served as it is, its own address being the client's, unless `required` says only proxies may connect. Its
//! bytes are never read as a header: a client that sends one itself is talking FTP, and gets FTP's answer.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use ftps_proto::codec::{parse_proxy_header, ProxyHeader, ProxyParse, PROXY_V1_MAX};
use futures_lite::AsyncReadExt;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smol::net::TcpStream;

/// How long a trusted proxy may take to send its header (it sends it at once, with the connection).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Who may speak for clients.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProxyPolicy {
    /// Proxies: connections from these networks start with a PROXY header naming the client.
    pub trusted: Vec<Cidr>,
    /// Only trusted proxies may connect; any other connection is closed at once.
    pub required: bool,
}

/// What to do with a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Serve it as the client at this address (the connection's own, or the one its proxy named).
    Client(SocketAddr),
    /// Close it: an untrusted peer while `required`, or a proxy that sent no valid header in time.
    Refuse(&'static str),
}

impl ProxyPolicy {
    /// Whether the policy does anything.
    pub fn is_active(&self) -> bool {
        self.required || !self.trusted.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(ip))
    }

    /// Decides who `stream`, accepted from `peer`, is: for a trusted proxy this reads its header (exactly the
    /// header, nothing of the protocol after it) within [`HEADER_TIMEOUT`].
    pub async fn admit(&self, stream: &TcpStream, peer: SocketAddr) -> Admission {
        if !self.trusts(peer.ip()) {
            return if self.required {
                tracing::info!(%peer, "refused: not a trusted proxy ([proxy_protocol] required)");
                Admission::Refuse("not a trusted proxy, and [proxy_protocol] required is set")
            } else {
                Admission::Client(peer)
            };
        }
        let read = async { read_header(stream).await };
        let timeout = async {
            async_io::Timer::after(HEADER_TIMEOUT).await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no PROXY header in time",
            ))
        };
        match futures_lite::future::or(read, timeout).await {
            Ok(ProxyHeader::Proxied { source, .. }) => Admission::Client(source),
            // A health check, or a proxy that cannot say: the connection speaks for itself.
            Ok(ProxyHeader::Local) => Admission::Client(peer),
            // Connected and closed without a byte: the balancer's TCP health check.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::debug!(%peer, "proxy closed without a header (a health check)");
                Admission::Refuse("proxy closed without a header")
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "trusted proxy sent no valid PROXY header");
                Admission::Refuse("trusted proxy sent no valid PROXY header")
            }
        }
    }
}

/// Reads one PROXY header off `stream`, consuming exactly its bytes.
///
/// The bytes are peeked first and only the header's length is then read, so whatever the client sent right
/// behind it (an implicit-TLS ClientHello, a data connection's handshake) stays in the socket for the session.
async fn read_header(stream: &TcpStream) -> io::Result<ProxyHeader> {
    // v1 is at most 107 bytes; v2's fixed part and IPv6 addresses are 52. Longer v2 headers (TLVs) announce
    // their length in the first 16 bytes and are then read exactly.
    let mut peeked = [0u8; PROXY_V1_MAX + 25];
    let invalid = |why: &'static str| io::Error::new(io::ErrorKind::InvalidData, why);
    loop {
        let n = stream.peek(&mut peeked).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match parse_proxy_header(&peeked[..n]) {
            ProxyParse::Complete { header, len } => {
                let mut consumed = vec![0u8; len];
                // A handle on the same socket (async-net streams are shared handles).
                let mut reader = stream.clone();
                reader.read_exact(&mut consumed).await?;
                return Ok(header);
            }
            ProxyParse::Incomplete { total: Some(total) } => {
                let mut whole = vec![0u8; total];
                // A handle on the same socket (async-net streams are shared handles).
                let mut reader = stream.clone();
                reader.read_exact(&mut whole).await?;
                return match parse_proxy_header(&whole) {
                    ProxyParse::Complete { header, .. } => Ok(header),
                    ProxyParse::Invalid(why) => Err(invalid(why)),
                    ProxyParse::Incomplete { .. } => Err(invalid("PROXY v2 header length")),
                };
            }
            ProxyParse::Invalid(why) => return Err(invalid(why)),
            // Part of a v1 line: peek returns at once while bytes wait, so wait a little for the rest.
            ProxyParse::Incomplete { total: None } => {
                async_io::Timer::after(Duration::from_millis(2)).await;
            }
        }
    }
}

/// A network: an address and a prefix length (`10.0.0.0/8`, `2001:db8::/32`; a bare address is the one host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this network (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?}: not an IP address or CIDR network"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: prefix length must be 0 to {max}"))?,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert!(host.contains("127.0.0.1".parse().unwrap()));
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert!(!v6.contains("2001:db9::5".parse().unwrap()));
        assert_eq!(v6.to_string(), "2001:db8::/32");
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "example.com",
            "10.0.0.0/",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    fn pair() -> (std::net::TcpStream, TcpStream, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        (client, TcpStream::try_from(server).unwrap(), peer)
    }

    #[test]
    fn a_trusted_proxy_names_the_client_and_the_bytes_after_its_header_stay() {
        use std::io::Write;
        let policy = ProxyPolicy {
            trusted: vec!["127.0.0.1".parse().unwrap()],
            required: true,
        };
        let (mut client, server, peer) = pair();
        client
            .write_all(b"PROXY TCP4 192.0.2.9 127.0.0.1 40000 21\r\n\x16\x03\x01")
            .unwrap();
        smol::block_on(async {
            assert_eq!(
                policy.admit(&server, peer).await,
                Admission::Client("192.0.2.9:40000".parse().unwrap())
            );
            let mut rest = [0u8; 3];
            let mut reader = server.clone();
            reader.read_exact(&mut rest).await.unwrap();
            assert_eq!(&rest, b"\x16\x03\x01");
        });
        // A trusted peer that speaks FTP at once is no proxy.
        let (mut client, server, peer) = pair();
        client.write_all(b"USER alice\r\n").unwrap();
        smol::block_on(async {
            assert!(matches!(
                policy.admit(&server, peer).await,
                Admission::Refuse(_)
            ));
        });
        // Another address: refused while required, else served as itself without reading anything.
        let others = ProxyPolicy {
            trusted: vec!["10.0.0.0/8".parse().unwrap()],
            required: true,
        };
        let (_client, server, peer) = pair();
        smol::block_on(async {
            assert!(matches!(
                others.admit(&server, peer).await,
                Admission::Refuse(_)
            ));
            let optional = ProxyPolicy {
                required: false,
                ..others.clone()
            };
            assert_eq!(optional.admit(&server, peer).await, Admission::Client(peer));
        });
    }
}
