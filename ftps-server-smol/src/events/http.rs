//! One HTTP/1.1 POST per event, on the sink's own thread, over a kept-alive connection: `http://` over TCP,
//! `https://` over rustls with the system's trust roots. Bounded everywhere: connect, write and read time out,
//! the response head is read up to 16 KiB and a body is skipped only when short and length-delimited.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The whole exchange's limit per step (connect, each read and write).
const TIMEOUT: Duration = Duration::from_secs(10);

/// The longest response head read.
const MAX_HEAD: u64 = 16 * 1024;

/// The longest response body skipped to keep a connection; a longer one closes it instead.
const MAX_BODY: u64 = 64 * 1024;

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

    /// A client that posts to this endpoint over one kept-alive connection.
    pub(crate) fn client(self) -> Client {
        Client {
            endpoint: self,
            conn: None,
        }
    }

    fn connect(&self) -> io::Result<Connection> {
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "host has no address"))?;
        let tcp = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        tcp.set_read_timeout(Some(TIMEOUT))?;
        tcp.set_write_timeout(Some(TIMEOUT))?;
        // Small requests answered by small responses: Nagle would hold the body behind the head.
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Stream> = if self.tls {
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let conn =
                rustls::ClientConnection::new(client_config()?, name).map_err(io::Error::other)?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        } else {
            Box::new(tcp)
        };
        Ok(BufReader::new(stream))
    }

    fn request_head(&self, headers: &[(&str, &str)], body_len: usize) -> String {
        let host_header = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n\
             Content-Length: {body_len}\r\nUser-Agent: ftps-server\r\n",
            self.path,
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        head
    }
}

/// A TCP or TLS stream to a receiver.
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

type Connection = BufReader<Box<dyn Stream>>;

/// Posts to one endpoint, keeping the connection open between events (HTTP/1.1 persistent connections,
/// RFC 9112 section 9.3): a new TCP and TLS handshake per event cost the receiver, on the same machine, more
/// CPU than the event itself.
pub(crate) struct Client {
    endpoint: Endpoint,
    conn: Option<Connection>,
}

impl Client {
    /// POSTs `body` with `headers`; returns the response's status code.
    ///
    /// A kept connection the receiver closed in the meantime fails on first use; the request is then sent
    /// once more on a new connection (at-least-once delivery allows the rare repeat).
    pub(crate) fn post(&mut self, headers: &[(&str, &str)], body: &[u8]) -> io::Result<u16> {
        let head = self.endpoint.request_head(headers, body.len());
        if let Some(mut conn) = self.conn.take() {
            if let Ok((status, reusable)) = exchange(&mut conn, &head, body) {
                if reusable {
                    self.conn = Some(conn);
                }
                return Ok(status);
            }
        }
        let mut conn = self.endpoint.connect()?;
        let (status, reusable) = exchange(&mut conn, &head, body)?;
        if reusable {
            self.conn = Some(conn);
        }
        Ok(status)
    }
}

/// Sends one request and reads its response; returns the status and whether the connection can carry the
/// next request (a length-delimited body that was read whole, no `Connection: close`).
fn exchange(conn: &mut Connection, head: &str, body: &[u8]) -> io::Result<(u16, bool)> {
    // One write for head and body: one segment, one system call.
    let mut request = Vec::with_capacity(head.len() + body.len());
    request.extend_from_slice(head.as_bytes());
    request.extend_from_slice(body);
    let stream = conn.get_mut();
    stream.write_all(&request)?;
    stream.flush()?;
    let mut line = String::new();
    let mut head_len = 0u64;
    let mut read_line = |conn: &mut Connection, line: &mut String| -> io::Result<()> {
        line.clear();
        let n = conn.by_ref().take(MAX_HEAD - head_len).read_line(line)?;
        head_len += n as u64;
        if n == 0 || !line.ends_with('\n') {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "response head cut short or too long",
            ));
        }
        Ok(())
    };
    // "HTTP/1.1 200 OK"
    read_line(conn, &mut line)?;
    let version_1_1 = line.starts_with("HTTP/1.1 ");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP/1.x response"))?;
    let mut length = None;
    let mut reusable = version_1_1;
    loop {
        read_line(conn, &mut line)?;
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        let Some((name, value)) = field.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse::<u64>().ok();
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            reusable = false;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked bodies are not worth parsing for a status: read none, reuse nothing.
            reusable = false;
        }
    }
    // 1xx, 204 and 304 have no body (RFC 9112 section 6.3); otherwise only a small, delimited body is skipped.
    let bodiless = status < 200 || status == 204 || status == 304;
    match length {
        _ if bodiless => {}
        Some(n) if n <= MAX_BODY => {
            let skipped = io::copy(&mut conn.by_ref().take(n), &mut io::sink())?;
            reusable &= skipped == n;
        }
        _ => reusable = false,
    }
    Ok((status, reusable))
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

    /// Serves `responses` on one listener: each accepted connection answers requests in turn until its
    /// response says `Connection: close`; returns the port and how many connections were accepted.
    fn receiver(responses: Vec<&'static str>) -> (u16, std::thread::JoinHandle<usize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let mut responses = responses.into_iter();
            let mut accepted = 0;
            'connections: while responses.len() > 0 {
                let (stream, _) = listener.accept().unwrap();
                accepted += 1;
                let mut reader = BufReader::new(stream);
                loop {
                    // Read one request: head, then its Content-Length body.
                    let mut length = 0;
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap() == 0 {
                            continue 'connections;
                        }
                        if let Some(v) = line.strip_prefix("Content-Length: ") {
                            length = v.trim().parse().unwrap();
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let Some(response) = responses.next() else {
                        break 'connections;
                    };
                    reader.get_mut().write_all(response.as_bytes()).unwrap();
                    if response.contains("close") {
                        continue 'connections;
                    }
                }
            }
            accepted
        });
        (port, handle)
    }

    #[test]
    fn one_connection_carries_every_event_while_the_receiver_keeps_it() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (port, receiver) = receiver(vec![ok, "HTTP/1.1 204 No Content\r\n\r\n", ok]);
        let mut client = Endpoint::parse(&format!("http://127.0.0.1:{port}/h"))
            .unwrap()
            .client();
        for expected in [200, 204, 200] {
            assert_eq!(client.post(&[], b"{}").unwrap(), expected);
        }
        drop(client);
        assert_eq!(receiver.join().unwrap(), 1);
    }

    #[test]
    fn a_closed_connection_is_replaced_without_losing_the_event() {
        let close = "HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let unframed = "HTTP/1.0 200 OK\r\n\r\n";
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let (port, receiver) = receiver(vec![close, unframed, ok, ok]);
        let mut client = Endpoint::parse(&format!("http://127.0.0.1:{port}/"))
            .unwrap()
            .client();
        assert_eq!(client.post(&[], b"1").unwrap(), 500);
        assert_eq!(client.post(&[], b"2").unwrap(), 200);
        assert_eq!(client.post(&[], b"3").unwrap(), 200);
        assert_eq!(client.post(&[], b"4").unwrap(), 200);
        drop(client);
        // close, then HTTP/1.0 (not reusable), then one connection for the last two.
        assert_eq!(receiver.join().unwrap(), 3);
    }

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
