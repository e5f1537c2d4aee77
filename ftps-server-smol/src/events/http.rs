//! One HTTP/1.1 POST per event, on the sink's own thread: `http://` over TCP, `https://` over rustls with the
//! system's trust roots. Bounded everywhere: connect, write and read time out, and only the status line and
//! headers are read back.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The whole exchange's limit per step (connect, each read and write).
const TIMEOUT: Duration = Duration::from_secs(10);

/// The longest response head read.
const MAX_HEAD: u64 = 16 * 1024;

/// Where a webhook posts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Endpoint {
    /// `http://host[:port]/path` or `https://...`; IPv6 hosts in brackets.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!(
                "{url:?}: a webhook URL starts with http:// or https://"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(format!(
                "{url:?}: credentials in the URL are not supported (use the secret)"
            ));
        }
        let default = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                None if after.is_empty() => default,
                None => return Err(format!("{url:?}: bad host")),
            };
            (host.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, p)) => (
                    host.to_owned(),
                    p.parse().map_err(|_| format!("{url:?}: bad port"))?,
                ),
                None => (authority.to_owned(), default),
            }
        };
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if host.is_empty() || !printable(&host) || !printable(path) {
            return Err(format!("{url:?}: bad host or path"));
        }
        Ok(Self {
            tls,
            host,
            port,
            path: path.to_owned(),
        })
    }

    /// POSTs `body` with `headers`; returns the response's status code.
    pub(crate) fn post(&self, headers: &[(&str, &str)], body: &[u8]) -> io::Result<u16> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "host has no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        tcp.set_read_timeout(Some(TIMEOUT))?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        let host_header = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut request = format!(
            "POST {} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\nUser-Agent: ftps-server\r\n",
            self.path,
            body.len()
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        if self.tls {
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let conn =
                rustls::ClientConnection::new(client_config()?, name).map_err(io::Error::other)?;
            exchange(rustls::StreamOwned::new(conn, tcp), &request, body)
        } else {
            exchange(tcp, &request, body)
        }
    }
}

fn exchange(mut stream: impl Read + Write, head: &str, body: &[u8]) -> io::Result<u16> {
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut status = String::new();
    BufReader::new(stream.take(MAX_HEAD)).read_line(&mut status)?;
    // "HTTP/1.1 200 OK"
    status
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| status.starts_with("HTTP/1."))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/1.x response"))
}

/// The TLS client config of every webhook: the system's roots, built once.
fn client_config() -> io::Result<Arc<rustls::ClientConfig>> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system trust roots for https webhooks".to_owned());
            }
            let provider = Arc::new(ftps_proto::tls_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(io::Error::other)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let e = Endpoint::parse("https://hooks.example.com/ftps?x=1").unwrap();
        assert_eq!(
            (e.tls, e.host.as_str(), e.port, e.path.as_str()),
            (true, "hooks.example.com", 443, "/ftps?x=1")
        );
        let e = Endpoint::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((e.port, e.path.as_str()), (8080, "/"));
        let e = Endpoint::parse("http://[::1]:9000/h").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 9000));
        for bad in [
            "ftp://x/",
            "http://user:pw@host/",
            "http://host:99999/",
            "http:///x",
            "http://ho st/",
            "http://[::1/",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
