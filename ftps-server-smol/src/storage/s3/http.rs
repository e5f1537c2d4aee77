//! A small HTTP/1.1 client for the S3 backend: just what presigned S3 requests need, on async-io sockets, so it
//! runs under smol or any other executor (no tokio).
//!
//! - keep-alive: idle connections go back to a per-client pool (bounded count and age) once a response body was
//!   read to its end; a request that fails on a reused connection before any response byte is retried once on a
//!   fresh one (the peer may have closed it while idle);
//! - request bodies are byte slices with `Content-Length`; response bodies come with `Content-Length`, chunked, or
//!   until close, and are read whole (bounded) or streamed;
//! - the response head is bounded ([`MAX_HEAD`]), every connect, write and read has a timeout;
//! - `http://`, or `https://` with rustls (the server's own TLS library) over the same sockets.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::Timer;
use futures_lite::io::BufReader;
use futures_lite::{future, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use smol::net::TcpStream;

/// The largest response head (status line and headers) accepted.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Idle connections kept for reuse.
const MAX_IDLE: usize = 16;
/// An idle connection older than this is closed rather than reused (servers close theirs after 5-60 s).
const MAX_IDLE_AGE: Duration = Duration::from_secs(20);
/// Read size of the socket buffer.
const READ_BUFFER: usize = 64 * 1024;

/// An HTTP method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    Get,
    Head,
    Put,
    Post,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Put => "PUT",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }
}

/// One request: method, the target (path and query), extra headers and a body.
pub(super) struct Request<'a> {
    pub(super) method: Method,
    /// Path and query as sent on the request line (`/bucket/key?X-Amz-...`).
    pub(super) target: &'a str,
    pub(super) headers: &'a [(&'a str, &'a str)],
    pub(super) body: &'a [u8],
}

/// A response head and its body.
pub(super) struct Response {
    pub(super) status: u16,
    headers: Vec<(String, String)>,
    pub(super) body: Body,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A socket to the endpoint, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_close(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
        }
    }
}

/// TLS towards an `https://` endpoint: the client configuration and the name to verify.
pub(super) struct Tls {
    pub(super) config: Arc<rustls::ClientConfig>,
    pub(super) name: rustls::pki_types::ServerName<'static>,
}

/// A connection to the endpoint.
struct Conn {
    io: BufReader<Stream>,
    idle_since: Instant,
}

/// The client: one endpoint, a pool of idle connections.
pub(super) struct Client {
    addr: String,
    host_header: String,
    timeout: Duration,
    tls: Option<Tls>,
    idle: Mutex<VecDeque<Conn>>,
}

impl Client {
    /// A client for `host:port`, sending `host_header` as `Host` (it must be the one the requests were signed for).
    /// `tls`: for an `https://` endpoint.
    pub(super) fn new(
        addr: String,
        host_header: String,
        timeout: Duration,
        tls: Option<Tls>,
    ) -> Arc<Self> {
        Arc::new(Self {
            addr,
            host_header,
            timeout,
            tls,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    fn take_idle(&self) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(conn) = idle.pop_back() {
            if conn.idle_since.elapsed() < MAX_IDLE_AGE {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() >= MAX_IDLE {
            idle.pop_front();
        }
        idle.push_back(conn);
    }

    async fn connect(&self) -> io::Result<Conn> {
        let stream = timed(self.timeout, "connect", async {
            let addrs: Vec<SocketAddr> = smol::net::resolve(self.addr.as_str()).await?;
            let mut last = io::Error::new(io::ErrorKind::NotFound, "endpoint resolves to nothing");
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => last = e,
                }
            }
            Err(last)
        })
        .await?;
        stream.set_nodelay(true)?;
        let stream = match &self.tls {
            None => Stream::Plain(stream),
            Some(tls) => {
                let connector = futures_rustls::TlsConnector::from(Arc::clone(&tls.config));
                let handshake = connector.connect(tls.name.clone(), stream);
                Stream::Tls(Box::new(
                    timed(self.timeout, "TLS handshake", handshake).await?,
                ))
            }
        };
        Ok(Conn {
            io: BufReader::with_capacity(READ_BUFFER, stream),
            idle_since: Instant::now(),
        })
    }

    /// Sends `request` and reads the response head; the body is left to the caller ([`Body::bytes`],
    /// [`Body::into_reader`]).
    ///
    /// # Errors
    /// Connection, timeout and protocol errors (a malformed or oversized head).
    pub(super) async fn send(self: &Arc<Self>, request: &Request<'_>) -> io::Result<Response> {
        if let Some(conn) = self.take_idle() {
            match self.exchange(conn, request).await {
                Ok(response) => return Ok(response),
                // Only errors before any response byte are worth a second try; anything else is the caller's.
                Err(Exchange::BeforeResponse(_)) => {}
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
        let conn = self.connect().await?;
        self.exchange(conn, request).await.map_err(|e| match e {
            Exchange::BeforeResponse(e) | Exchange::Failed(e) => e,
        })
    }

    async fn exchange(
        self: &Arc<Self>,
        mut conn: Conn,
        request: &Request<'_>,
    ) -> Result<Response, Exchange> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            request.method.as_str(),
            request.target,
            self.host_header,
            request.body.len()
        );
        for (name, value) in request.headers {
            // Header values come from our own code, but never let one carry a line break.
            if value.contains(['\r', '\n']) || name.contains(['\r', '\n', ':']) {
                return Err(Exchange::Failed(invalid("header with a line break")));
            }
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let write = async {
            let stream = conn.io.get_mut();
            stream.write_all(head.as_bytes()).await?;
            if !request.body.is_empty() {
                stream.write_all(request.body).await?;
            }
            stream.flush().await
        };
        timed(self.timeout, "write", write)
            .await
            .map_err(Exchange::BeforeResponse)?;
        let (status, headers) = timed(self.timeout, "response", read_head(&mut conn.io))
            .await
            .map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Exchange::BeforeResponse(e)
                } else {
                    Exchange::Failed(e)
                }
            })?;
        let find = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let close = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let framing = if request.method == Method::Head || status == 204 || status == 304 {
            Framing::Length(0)
        } else if find("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            Framing::Chunked {
                left: 0,
                done: false,
            }
        } else if let Some(len) = find("content-length") {
            let len = len
                .trim()
                .parse::<u64>()
                .map_err(|_| Exchange::Failed(invalid("bad Content-Length")))?;
            Framing::Length(len)
        } else {
            Framing::UntilClose
        };
        let reusable = !close && !matches!(framing, Framing::UntilClose);
        Ok(Response {
            status,
            headers,
            body: Body {
                conn: Some(conn),
                framing,
                reusable,
                client: Arc::clone(self),
                timeout: self.timeout,
            },
        })
    }
}

/// Where a failed exchange stopped: before any response byte (a stale pooled connection) or later.
enum Exchange {
    BeforeResponse(io::Error),
    Failed(io::Error),
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("HTTP: {what}"))
}

/// `future`, or a `TimedOut` error after `limit`.
async fn timed<T>(
    limit: Duration,
    what: &str,
    future: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    future::or(future, async {
        Timer::after(limit).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("HTTP {what} timed out after {limit:?}"),
        ))
    })
    .await
}

/// Reads one CRLF-terminated line of at most `budget` bytes (the budget shrinks by what was read).
async fn read_line(io: &mut BufReader<Stream>, budget: &mut usize) -> io::Result<String> {
    let mut line = Vec::new();
    loop {
        let available = io.fill_buf().await?;
        if available.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "HTTP: connection closed",
            ));
        }
        let (take, found) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        if take > *budget {
            return Err(invalid("response head too large"));
        }
        *budget -= take;
        line.extend_from_slice(&available[..take]);
        io.consume(take);
        if found {
            while line.last().is_some_and(|&b| b == b'\n' || b == b'\r') {
                line.pop();
            }
            return String::from_utf8(line).map_err(|_| invalid("non-UTF-8 head"));
        }
    }
}

/// Reads a status line and headers (skipping `100 Continue` heads).
async fn read_head(io: &mut BufReader<Stream>) -> io::Result<(u16, Vec<(String, String)>)> {
    let mut budget = MAX_HEAD;
    loop {
        let status_line = read_line(io, &mut budget).await?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(invalid("not an HTTP/1.x response"));
        }
        let status = parts
            .next()
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| (100..1000).contains(s))
            .ok_or_else(|| invalid("bad status line"))?;
        let mut headers = Vec::new();
        loop {
            let line = read_line(io, &mut budget).await?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(invalid("header line without a colon"));
            };
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        if (100..200).contains(&status) {
            continue;
        }
        return Ok((status, headers));
    }
}

/// How the end of a body is known.
#[derive(Clone, Copy, Debug)]
enum Framing {
    /// `Content-Length`: bytes left.
    Length(u64),
    /// Chunked: bytes left in the current chunk, whether the last chunk was seen.
    Chunked { left: u64, done: bool },
    /// Neither: the body ends when the server closes.
    UntilClose,
}

/// A response body, read from its connection; the connection goes back to the pool when the body was read to its
/// end and may be reused.
pub(super) struct Body {
    conn: Option<Conn>,
    framing: Framing,
    reusable: bool,
    client: Arc<Client>,
    timeout: Duration,
}

impl Body {
    /// The next piece of the body, at most `max` bytes; empty at its end.
    /// The next piece of the body, at most `max` bytes, read into `buf`, whose allocation is reused: bulk data
    /// moves without an allocation per piece (measured on a 1 GiB download from moto: no change within the
    /// noise, so the download gap lies elsewhere). Empty at the end.
    async fn next_chunk(&mut self, max: usize, mut buf: Vec<u8>) -> io::Result<Vec<u8>> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Vec::new());
        };
        let io = &mut conn.io;
        let want = match &mut self.framing {
            Framing::Length(0) | Framing::Chunked { done: true, .. } => 0,
            Framing::Length(left) => usize::try_from(*left).unwrap_or(usize::MAX).min(max),
            Framing::Chunked { left, done } => {
                if *left == 0 {
                    let mut budget = MAX_HEAD;
                    let line = timed(self.timeout, "chunk", read_line(io, &mut budget)).await?;
                    let size = line.split(';').next().unwrap_or_default().trim();
                    *left = u64::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
                    if *left == 0 {
                        // Trailers, then the blank line that ends the body.
                        loop {
                            let line =
                                timed(self.timeout, "chunk", read_line(io, &mut budget)).await?;
                            if line.is_empty() {
                                break;
                            }
                        }
                        *done = true;
                    }
                }
                usize::try_from(*left).unwrap_or(usize::MAX).min(max)
            }
            Framing::UntilClose => max,
        };
        if want == 0 {
            self.finish();
            buf.clear();
            return Ok(buf);
        }
        // Zero-fills only what the buffer never held.
        buf.resize(want, 0);
        let n = timed(self.timeout, "body", io.read(&mut buf)).await?;
        buf.truncate(n);
        match &mut self.framing {
            Framing::Length(left) => {
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "HTTP: body shorter than its Content-Length",
                    ));
                }
                *left -= n as u64;
            }
            Framing::Chunked { left, .. } => {
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "HTTP: chunked body cut short",
                    ));
                }
                *left -= n as u64;
                if *left == 0 {
                    let mut budget = 2;
                    let crlf = timed(self.timeout, "chunk", read_line(io, &mut budget)).await?;
                    if !crlf.is_empty() {
                        return Err(invalid("chunk without its CRLF"));
                    }
                }
            }
            Framing::UntilClose => {
                if n == 0 {
                    self.conn = None;
                }
            }
        }
        Ok(buf)
    }

    /// The body is complete: give the connection back when it can carry another request.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.reusable {
                self.client.give_back(conn);
            }
        }
    }

    /// The whole body, at most `limit` bytes (more is an error: a listing or an error document is small).
    ///
    /// # Errors
    /// I/O errors, or a body over `limit`.
    pub(super) async fn bytes(mut self, limit: usize) -> io::Result<Vec<u8>> {
        let mut all = Vec::new();
        loop {
            let chunk = self.next_chunk(READ_BUFFER, Vec::new()).await?;
            if chunk.is_empty() {
                return Ok(all);
            }
            if all.len() + chunk.len() > limit {
                return Err(invalid("response body too large"));
            }
            all.extend_from_slice(&chunk);
        }
    }

    /// Reads and drops the rest of a small body, so the connection can be reused; closes it otherwise.
    pub(super) async fn discard(self) {
        let _ = self.bytes(MAX_HEAD).await;
    }

    /// The body as an [`AsyncRead`], for streaming a download.
    pub(super) fn into_reader(self) -> BodyReader {
        BodyReader {
            state: ReaderState::Idle(Box::new(self)),
            pending: Vec::new(),
            pos: 0,
        }
    }
}

type ChunkFuture = Pin<Box<dyn Future<Output = (Box<Body>, io::Result<Vec<u8>>)> + Send>>;

enum ReaderState {
    Idle(Box<Body>),
    Reading(ChunkFuture),
    Done,
}

/// A response body as an [`AsyncRead`]: each read that finds its buffer empty fetches the next piece.
pub(super) struct BodyReader {
    state: ReaderState,
    pending: Vec<u8>,
    pos: usize,
}

impl AsyncRead for BodyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if this.pos < this.pending.len() {
                let n = buf.len().min(this.pending.len() - this.pos);
                buf[..n].copy_from_slice(&this.pending[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(n));
            }
            match std::mem::replace(&mut this.state, ReaderState::Done) {
                ReaderState::Done => return Poll::Ready(Ok(0)),
                ReaderState::Idle(mut body) => {
                    // The consumed piece's buffer carries the next one.
                    let buf = std::mem::take(&mut this.pending);
                    this.pos = 0;
                    this.state = ReaderState::Reading(Box::pin(async move {
                        let chunk = body.next_chunk(crate::storage::FILE_BUFFER_SIZE, buf).await;
                        (body, chunk)
                    }));
                }
                ReaderState::Reading(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Pending => {
                        this.state = ReaderState::Reading(fut);
                        return Poll::Pending;
                    }
                    Poll::Ready((body, Ok(chunk))) => {
                        if chunk.is_empty() {
                            return Poll::Ready(Ok(0));
                        }
                        this.pending = chunk;
                        this.pos = 0;
                        this.state = ReaderState::Idle(body);
                    }
                    Poll::Ready((_, Err(e))) => return Poll::Ready(Err(e)),
                },
            }
        }
    }
}
