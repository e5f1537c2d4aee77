//! One data connection on a blocking `TcpStream`: pumping a [`DataChannel`] over it.
//!
//! Bulk bytes move in 256 KiB units through buffers allocated once per transfer. Uploads read their data
//! connection to its end after `finish`, so the server's close_notify and TLS 1.3 session tickets are processed
//! (bounded by the shutdown timeout).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use ftps_proto::client::Direction;
use ftps_proto::data::{DataChannel, DataError, DataEvent, DataOutput, DataReport};

use crate::config::ClientConfig;
use crate::error::{Error, Result};
use crate::read_buffer::ReadBuffer;

/// Socket reads and writes of bulk data move in units of this size.
pub(crate) const BULK: usize = 256 * 1024;
/// A data connection's first read buffer; it doubles up to its direction's maximum while reads fill it.
const INITIAL_INPUT: usize = 16 * 1024;
/// How long to wait for the server's FIN once the TLS close exchange is done (see
/// [`DataConn::await_server_fin`]); it normally follows within microseconds.
const FIN_WAIT: Duration = Duration::from_millis(100);

/// One data connection: its socket, its channel and the buffers of the whole transfer.
#[derive(Debug)]
pub(crate) struct DataConn {
    stream: TcpStream,
    pub(crate) channel: Box<DataChannel>,
    /// Received bytes not yet taken by the channel.
    input: ReadBuffer,
    output: Vec<u8>,
    eof: bool,
    /// The channel's `Finished` / `Failed`.
    outcome: Option<std::result::Result<DataReport, DataError>>,
    /// A local failure (socket error, idle timeout) to surface instead of the engine's view of it.
    pub(crate) failure: Option<Error>,
    idle_timeout: Duration,
    shutdown_timeout: Duration,
    read_timeout: Option<Duration>,
}

impl DataConn {
    pub(crate) fn new(
        stream: TcpStream,
        channel: Box<DataChannel>,
        direction: Direction,
        config: &ClientConfig,
    ) -> Result<Self> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(config.data_timeout))?;
        // Downloads read in bulk; uploads only read the handshake and the close. Both start small and grow
        // when reads fill the buffer: a fresh 256 KiB zeroed buffer per transfer (and a 272 KiB output
        // buffer) cost a quarter of the client's CPU time uploading 4 KiB files, in page faults and memset.
        let max_input = match direction {
            Direction::Download => BULK,
            _ => 32 * 1024,
        };
        Ok(Self {
            stream,
            channel,
            input: ReadBuffer::new(INITIAL_INPUT, max_input),
            output: Vec::new(),
            eof: false,
            outcome: None,
            failure: None,
            idle_timeout: config.data_timeout,
            shutdown_timeout: config.shutdown_timeout,
            read_timeout: None,
        })
    }

    /// Runs the TLS handshake (nothing in the clear).
    pub(crate) fn handshake(&mut self) -> Result<()> {
        while self.channel.is_handshaking() {
            self.flush()?;
            if self.feed() == 0 {
                self.fill(self.idle_timeout)?;
            }
        }
        self.flush()?;
        match (&self.outcome, self.channel.error()) {
            (Some(Err(e)), _) | (_, Some(e)) => Err(Error::Data(e.clone())),
            _ => Ok(()),
        }
    }

    /// What to tell the engine about the data side. A channel that never ended is reported as cut.
    pub(crate) fn take_outcome(&mut self) -> std::result::Result<DataReport, DataError> {
        if self.outcome.is_none() {
            self.channel.handle_eof(Instant::now());
            self.collect_events();
        }
        self.outcome.take().unwrap_or_else(|| {
            Err(self
                .channel
                .error()
                .cloned()
                .unwrap_or(DataError::EofDuringHandshake))
        })
    }

    /// The local failure, if one happened.
    pub(crate) fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }

    /// The channel's one drain until it waits: sends what it produced, shuts the write half when it says so (in
    /// the clear the FIN is the end of an upload, RFC 959 section 3.4.1), and collects its end.
    pub(crate) fn flush(&mut self) -> Result<()> {
        loop {
            self.output.clear();
            match self.channel.poll_output(&mut self.output) {
                DataOutput::Transmit(_) => {
                    if let Err(e) = self.stream.write_all(&self.output) {
                        let e = if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                            Error::Timeout("data connection idle")
                        } else {
                            Error::Io(e)
                        };
                        return Err(self.broken(e));
                    }
                }
                DataOutput::ShutdownWrite => {
                    let _ = self.stream.shutdown(Shutdown::Write);
                }
                // Only a server session's channel says this.
                DataOutput::TransferReady(_) => {}
                DataOutput::Event(DataEvent::Finished(report)) => self.outcome = Some(Ok(report)),
                DataOutput::Event(DataEvent::Failed(e)) => self.outcome = Some(Err(e)),
                DataOutput::Event(_) => {}
                DataOutput::Wait(_) => return Ok(()),
            }
        }
    }

    /// Collects the channel's end without sending anything (mid-read, or after the socket broke); what it has to
    /// send, and its write-half shutdown, still come from the next [`DataConn::flush`].
    fn collect_events(&mut self) {
        while let Some(event) = self.channel.poll_event() {
            match event {
                DataEvent::Finished(report) => self.outcome = Some(Ok(report)),
                DataEvent::Failed(e) => self.outcome = Some(Err(e)),
                _ => {}
            }
        }
    }

    /// Offers buffered input to the channel; returns how much it took.
    fn feed(&mut self) -> usize {
        if self.input.unread().is_empty() {
            return 0;
        }
        let taken = self
            .channel
            .handle_input(Instant::now(), self.input.unread());
        self.input.consume(taken);
        self.collect_events();
        taken
    }

    /// Reads once from the socket, waiting at most `limit` (or the channel's handshake deadline).
    fn fill(&mut self, limit: Duration) -> Result<()> {
        let now = Instant::now();
        let wait = match self.channel.poll_timeout() {
            Some(deadline) if deadline <= now => {
                self.channel.handle_timeout(now);
                self.collect_events();
                return Ok(());
            }
            Some(deadline) => (deadline - now).min(limit),
            None => limit,
        };
        let wait = Some(wait.max(Duration::from_millis(1)));
        if self.read_timeout != wait {
            self.stream.set_read_timeout(wait)?;
            self.read_timeout = wait;
        }
        // A full buffer the channel does not take from would read as a false EOF.
        let Some(free) = self.input.space() else {
            return Err(self.note(Error::Protocol("data input stalled".to_string())));
        };
        match self.stream.read(free) {
            Ok(0) => {
                self.eof = true;
                self.channel.handle_eof(Instant::now());
                self.collect_events();
                Ok(())
            }
            Ok(n) => {
                self.input.filled(n);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let now = Instant::now();
                if self.channel.poll_timeout().is_some_and(|d| d <= now) {
                    self.channel.handle_timeout(now);
                    self.collect_events();
                    return Ok(());
                }
                Err(Error::Timeout("data connection idle"))
            }
            Err(e) => Err(self.broken(Error::Io(e))),
        }
    }

    /// The transport failed: the channel sees the end of it, and the failure is kept for the caller.
    fn broken(&mut self, error: Error) -> Error {
        self.eof = true;
        if self.outcome.is_none() {
            self.channel.handle_eof(Instant::now());
            self.collect_events();
        }
        let copy = match &error {
            Error::Io(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
            Error::Timeout(what) => Error::Timeout(what),
            other => Error::Protocol(other.to_string()),
        };
        self.failure.get_or_insert(copy);
        error
    }

    /// Reads received plaintext into `buf`; 0 at the end of the stream.
    pub(crate) fn read_plain(&mut self, buf: &mut [u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let chunk = self.channel.read_chunk();
            if !chunk.is_empty() {
                let n = chunk.len().min(buf.len());
                if let (Some(to), Some(from)) = (buf.get_mut(..n), chunk.get(..n)) {
                    to.copy_from_slice(from);
                }
                self.channel.consume(n);
                return Ok(n);
            }
            if self.channel.is_read_closed().is_some() || self.outcome.is_some() {
                // Sends our close_notify in answer to the server's.
                self.flush()?;
                return Ok(0);
            }
            if self.feed() > 0 {
                continue;
            }
            if self.eof {
                return Ok(0);
            }
            self.flush()?;
            let idle = self.idle_timeout;
            self.fill(idle).map_err(|e| self.note(e))?;
        }
    }

    /// Hands each run of received plaintext to `sink` without copying, until the stream ends.
    pub(crate) fn drain(&mut self, mut sink: impl FnMut(&[u8])) -> Result<()> {
        loop {
            let chunk = self.channel.read_chunk();
            if !chunk.is_empty() {
                let n = chunk.len();
                sink(chunk);
                self.channel.consume(n);
                continue;
            }
            if self.channel.is_read_closed().is_some() || self.outcome.is_some() {
                return self.flush();
            }
            if self.feed() > 0 {
                continue;
            }
            if self.eof {
                return Ok(());
            }
            self.flush()?;
            let idle = self.idle_timeout;
            self.fill(idle).map_err(|e| self.note(e))?;
        }
    }

    /// Queues plaintext for sending; sends a bulk unit whenever the send buffer is full.
    pub(crate) fn write_plain(&mut self, buf: &[u8]) -> Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.channel.write(buf);
            if n > 0 {
                return Ok(n);
            }
            if !self.channel.can_write() {
                return Err(self.note(Error::Protocol(
                    "the data connection no longer takes data".to_string(),
                )));
            }
            self.flush()?;
        }
    }

    /// Ends an upload: close_notify (TLS) and FIN, then read until the server closes, within the shutdown timeout.
    pub(crate) fn close_upload(&mut self) -> Result<()> {
        self.channel.finish(Instant::now());
        self.flush()?;
        let deadline = Instant::now() + self.shutdown_timeout;
        while self.outcome.is_none() {
            let stray = self.channel.read_chunk().len();
            if stray > 0 {
                self.channel.consume(stray);
                continue;
            }
            if self.feed() > 0 {
                continue;
            }
            self.flush()?;
            let now = Instant::now();
            if self.eof || self.outcome.is_some() || now >= deadline {
                break;
            }
            match self.fill(deadline - now) {
                Ok(()) => {}
                // The server did not close in time: the upload is still judged by its final reply.
                Err(Error::Timeout(_)) => break,
                Err(e) => return Err(e),
            }
        }
        self.await_server_fin();
        Ok(())
    }

    /// Ends a download: read (and discard) whatever is left, then answer the server's close_notify.
    pub(crate) fn close_download(&mut self) -> Result<()> {
        self.drain(|_| {})?;
        self.flush()?;
        self.await_server_fin();
        Ok(())
    }

    /// After the TLS close exchange, waits (at most [`FIN_WAIT`]) for the server's FIN, so the socket is closed
    /// after the server closed its side rather than a few microseconds before.
    ///
    /// The server sends its FIN right behind its close_notify. When our `close()` ran while that FIN was
    /// arriving (a few microseconds apart on loopback), tcpdump showed the FIN left unacknowledged until the
    /// server retransmitted it as a tail-loss probe about 200 ms later. vsftpd closes data sockets with
    /// `SO_LINGER`, so it waits for that acknowledgement before its 226: with 1000 × 4 KiB uploads in one
    /// session (TLS 1.3) a run took 8-11 s; waiting for the FIN first, 1.4 s.
    /// Whatever arrives after close_notify is not data (TLS forbids it) and is discarded; a read error here
    /// only ends the wait, as the transfer's outcome is already settled.
    fn await_server_fin(&mut self) {
        let deadline = Instant::now() + FIN_WAIT;
        while !self.eof {
            let now = Instant::now();
            if now >= deadline || self.stream.set_read_timeout(Some(deadline - now)).is_err() {
                break;
            }
            self.read_timeout = Some(deadline - now);
            let scratch = self.input.scratch();
            if scratch.is_empty() {
                break;
            }
            match self.stream.read(scratch) {
                Ok(0) => self.eof = true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    /// Keeps a copy of a local failure so `finish` reports it.
    pub(crate) fn note(&mut self, error: Error) -> Error {
        if self.failure.is_none() {
            self.failure = Some(match &error {
                Error::Io(e) => Error::Io(io::Error::new(e.kind(), e.to_string())),
                Error::Timeout(what) => Error::Timeout(what),
                other => Error::Protocol(other.to_string()),
            });
        }
        error
    }
}

pub(crate) fn to_io(error: Error) -> io::Error {
    match error {
        Error::Io(e) => e,
        Error::Timeout(_) => io::Error::new(ErrorKind::TimedOut, error.to_string()),
        other => io::Error::other(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests may unwrap

    use std::net::TcpListener;
    use std::sync::Arc;

    use ftps_proto::data::{DataOptions, DataProtection, DataTls};
    use ftps_testkit::TestCert;

    use super::*;

    /// The TLS server end of one upload: reads until the client's close_notify and FIN, answers the
    /// close_notify, then sends two stray bytes `fin_delay` apart before its own FIN. A client that closed its
    /// socket before the server's FIN answers the first byte with a reset, which fails the second write.
    fn lingering_server(
        listener: TcpListener,
        cert: &TestCert,
        fin_delay: Duration,
    ) -> std::thread::JoinHandle<(Vec<u8>, io::Result<usize>)> {
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_der.clone().into());
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(ftps_proto::tls_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert.cert_der.clone().into()], key)
                .unwrap();
        std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            // Without it Nagle holds the close_notify back behind the tickets until the client's delayed ACK.
            tcp.set_nodelay(true).unwrap();
            let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut received = Vec::new();
            tls.read_to_end(&mut received).unwrap();
            tls.conn.send_close_notify();
            tls.flush().unwrap();
            // The client's FIN follows its close_notify: read up to it, so only a reset can end a later read.
            let mut tcp = tls.sock;
            let mut rest = [0; 16];
            while tcp.read(&mut rest).unwrap() > 0 {}
            std::thread::sleep(fin_delay);
            let _ = tcp.write_all(&[0]);
            std::thread::sleep(fin_delay);
            let second = tcp.write(&[0]);
            let _ = tcp.shutdown(Shutdown::Write);
            (received, second)
        })
    }

    #[test]
    fn an_upload_closes_its_socket_only_after_the_servers_fin() {
        let cert = TestCert::generate();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.cert_der.clone().into()).unwrap();
        let client_config = Arc::new(
            rustls::ClientConfig::builder_with_provider(Arc::new(ftps_proto::tls_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        for round in 0..4 {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let server = lingering_server(listener, &cert, Duration::from_millis(10));
            let client_tls = DataTls::Client {
                config: Arc::clone(&client_config),
                server_name: "localhost".try_into().unwrap(),
            };
            let channel = DataChannel::new(
                Instant::now(),
                DataProtection::Tls(client_tls),
                DataOptions::default(),
            )
            .unwrap();
            let stream = TcpStream::connect(addr).unwrap();
            let config = ClientConfig::new();
            let mut conn =
                DataConn::new(stream, Box::new(channel), Direction::Upload, &config).unwrap();
            conn.handshake().unwrap();
            let body = ftps_testkit::pattern(4096, round);
            let mut at = 0;
            while at < body.len() {
                at += conn.write_plain(&body[at..]).unwrap();
            }
            conn.close_upload().unwrap();
            assert!(conn.take_outcome().unwrap().clean_close);
            drop(conn);

            let (received, second_write) = server.join().unwrap();
            assert_eq!(received, body);
            // No reset for the first stray byte: the socket was still open, waiting for the server's FIN.
            assert_eq!(second_write.map_err(|e| e.kind()), Ok(1), "round {round}");
        }
    }
}
