//! One data connection: an owned engine [`DataChannel`] driven over its data socket, on its own task, from the
//! moment the connection is up until its transfer ends.
//!
//! Bulk bytes never pass through the control session: file bodies go between the storage backend and the
//! channel here, in [`FILE_BUFFER_SIZE`] units with buffers allocated once per transfer. The channel decides
//! everything FTPS (TLS, resumption policy, close_notify); this module only moves bytes and waits.

use std::time::{Duration, Instant};

use ftps_proto::data::{
    DataChannel, DataEvent, DataFlow, DataOutput, DataReady, DataReport, DataType,
};
use ftps_proto::server::Failure;
use futures_lite::{future, AsyncRead, AsyncReadExt, AsyncWriteExt};
use smol::channel::Receiver;
use smol::net::TcpStream;

use crate::requests::engine_storage_error;
use crate::storage::{Upload, FILE_BUFFER_SIZE};
use crate::timing::{strictly_within, within};

/// Socket reads in this unit at most: several TLS records per read.
const NET_READ_SIZE: usize = 64 * 1024;
/// The read buffer starts this small and doubles while reads fill it: a download reads only a handshake and a
/// close_notify, and a many-small-files session paid for zeroing 64 KiB per file (2 % of the server's CPU).
const NET_READ_INITIAL: usize = 4 * 1024;

/// What a transfer sends or receives.
pub(crate) enum Body {
    /// A file to send (RETR), and its size from the open (what is left of it after `REST` may be less).
    Read(Box<dyn AsyncRead + Send + Unpin>, u64),
    /// Bytes to send (a listing the engine formatted).
    Bytes(Vec<u8>),
    /// A file to receive into (STOR, APPE, STOU); committed only after a clean close.
    Write(Box<dyn Upload>),
}

/// Carries the channel's [`DataReady`] to the control session's task (`ServerSession::data_ready`), once.
pub(crate) type OnReady = Box<dyn FnOnce(DataReady) + Send>;

/// The transfer command's part, sent to a running data connection (`RunTransfer`).
pub(crate) struct Start {
    pub(crate) body: Body,
    /// `TYPE A` or `I`: the channel converts line ends itself.
    pub(crate) data_type: DataType,
    pub(crate) flow: DataFlow,
    /// Runs when the engine may send its preliminary reply (`ServerSession::data_ready`).
    pub(crate) on_ready: OnReady,
}

/// Drives one data connection: its TLS handshake at once, then the transfer `start` brings; returns the
/// channel's report, or why it failed (possibly before any transfer: a refused handshake).
///
/// Before the transfer nothing times out here but the channel's own deadlines: the control session governs the
/// wait, and drops this task when it releases the connection. Afterwards `idle` bounds every wait on the socket
/// or the file. `on_ready` runs when the channel says [`DataOutput::TransferReady`], after what it sent before (TLS
/// 1.3 tickets) has been written.
pub(crate) async fn run(
    mut channel: Box<DataChannel>,
    socket: TcpStream,
    idle: Duration,
    start: Receiver<Start>,
) -> Result<DataReport, Failed> {
    let mut pump = Pump {
        socket,
        idle,
        net_in: vec![0; NET_READ_INITIAL],
        pending: 0..0,
        out: Vec::new(),
        on_ready: None,
        eof: false,
        receiving: false,
    };
    let Some(start) = pump.until_start(&mut channel, &start).await? else {
        // The session let the connection go without a transfer.
        return Err(Failed::Before(Failure::DataConnection));
    };
    // Whether the client spoke before the transfer command decides when an upload's tickets go out (see
    // `DataChannel::start_transfer`): take what already arrived first. A client that waits for the 150 cannot
    // have sent anything yet, since the engine holds an upload's 150 until `on_ready` below.
    pump.take_arrived(&mut channel).await?;
    channel.start_transfer(Instant::now(), start.flow, start.data_type);
    pump.on_ready = Some(start.on_ready);
    pump.receiving = matches!(start.body, Body::Write(_));
    let result = match start.body {
        Body::Write(upload) => pump.receive(&mut channel, upload).await,
        Body::Read(reader, size) => pump.send(&mut channel, reader, size).await,
        Body::Bytes(bytes) => {
            let size = bytes.len() as u64;
            pump.send(&mut channel, Box::new(&bytes[..]), size).await
        }
    };
    // A transfer that ran and failed still reports what its connection did (TLS version, resumption, bytes):
    // the transfer line of a truncated upload said `tls=None resumed=false bytes=0` after a resumed handshake.
    result.map_err(|failure| Failed::During(failure, channel.report()))
}

/// Why [`run`] failed: before a transfer ran on the connection, or during one (with what the connection did).
pub(crate) enum Failed {
    Before(Failure),
    During(Failure, DataReport),
}

impl From<Failure> for Failed {
    fn from(failure: Failure) -> Self {
        Self::Before(failure)
    }
}

struct Pump {
    socket: TcpStream,
    idle: Duration,
    net_in: Vec<u8>,
    /// Bytes of `net_in` read from the socket that the channel has not taken yet (it takes less than offered
    /// while its received plaintext waits to be drained).
    pending: std::ops::Range<usize>,
    out: Vec<u8>,
    on_ready: Option<OnReady>,
    /// The socket delivered EOF (told to the channel).
    eof: bool,
    /// The transfer receives a file (an upload).
    receiving: bool,
}

/// What woke the wait for the transfer command.
enum Before {
    Start(Option<Start>),
    Read(std::io::Result<usize>),
    Timer,
}

impl Pump {
    /// Runs the handshake (the client may start it as soon as it has connected) until the transfer command's
    /// part arrives; `None` when the session dropped the sender.
    async fn until_start(
        &mut self,
        channel: &mut DataChannel,
        start: &Receiver<Start>,
    ) -> Result<Option<Start>, Failure> {
        loop {
            match self.drain(channel).await? {
                None => {}
                // Failed (its alert is sent), or ended before any transfer ran on it.
                Some(done) => {
                    self.drain(channel).await?;
                    return Err(done.err().unwrap_or(Failure::DataConnection));
                }
            }
            // Offer what the channel could not take before; it takes nothing more while it waits for the transfer.
            if !self.pending.is_empty() {
                let took = channel.handle_input(Instant::now(), &self.net_in[self.pending.clone()]);
                self.pending.start += took;
                if took > 0 {
                    continue;
                }
            }
            let can_read = self.pending.is_empty() && !self.eof;
            let deadline = channel.poll_timeout();
            let woke = {
                let (socket, net_in) = (&mut self.socket, &mut self.net_in);
                let read = async {
                    if can_read {
                        Before::Read(socket.read(net_in).await)
                    } else {
                        future::pending().await
                    }
                };
                let timer = async {
                    match deadline {
                        Some(at) => async_io::Timer::at(at).await,
                        None => future::pending().await,
                    };
                    Before::Timer
                };
                let start = async { Before::Start(start.recv().await.ok()) };
                future::or(start, future::or(read, timer)).await
            };
            let now = Instant::now();
            match woke {
                Before::Start(start) => return Ok(start),
                // A reset counts as an EOF: the channel tells a clean close from a truncation.
                Before::Read(Ok(0)) | Before::Read(Err(_)) => {
                    self.eof = true;
                    channel.handle_eof(now);
                }
                Before::Read(Ok(n)) => {
                    self.quick_ack(channel);
                    let took = channel.handle_input(now, &self.net_in[..n]);
                    self.pending = took..n;
                    self.grow_if_filled(n);
                }
                Before::Timer => channel.handle_timeout(now),
            }
        }
    }

    /// Feeds the channel whatever the socket already holds, without waiting.
    async fn take_arrived(&mut self, channel: &mut DataChannel) -> Result<(), Failure> {
        while self.pending.is_empty() && !self.eof {
            match future::poll_once(self.socket.read(&mut self.net_in)).await {
                None => break,
                Some(Ok(0)) | Some(Err(_)) => {
                    self.eof = true;
                    channel.handle_eof(Instant::now());
                }
                Some(Ok(n)) => {
                    self.quick_ack(channel);
                    let took = channel.handle_input(Instant::now(), &self.net_in[..n]);
                    self.pending = took..n;
                    self.grow_if_filled(n);
                }
            }
            if let Some(done) = self.drain(channel).await? {
                // Failed (or ended) before its transfer started.
                return Err(done.err().unwrap_or(Failure::DataConnection));
            }
        }
        Ok(())
    }

    /// File (or bytes) to the client.
    async fn send<'a>(
        &mut self,
        channel: &mut DataChannel,
        mut source: Box<dyn AsyncRead + Send + Unpin + 'a>,
        size: u64,
    ) -> Result<DataReport, Failure> {
        // Sized to the file (plus one byte, so the first read also sees the end): a 4 KiB file does not zero
        // a 256 KiB buffer.
        let buf_len = usize::try_from(size.saturating_add(1))
            .unwrap_or(FILE_BUFFER_SIZE)
            .min(FILE_BUFFER_SIZE);
        let mut file_buf = vec![0u8; buf_len];
        let (mut at, mut end) = (0, 0);
        let mut source_done = false;
        loop {
            if !source_done && !channel.is_handshaking() && channel.error().is_none() {
                while channel.can_write() {
                    if at == end {
                        let n = timed(self.idle, source.read(&mut file_buf))
                            .await?
                            .map_err(|e| {
                                Failure::Storage(engine_storage_error(
                                    &crate::storage::StorageError::from(e),
                                ))
                            })?;
                        if n == 0 {
                            source_done = true;
                            channel.finish(Instant::now());
                            break;
                        }
                        (at, end) = (0, n);
                    }
                    let took = channel.write(&file_buf[at..end]);
                    if took == 0 {
                        break;
                    }
                    at += took;
                    // Send as we go: the channel's send buffer is bounded.
                    if let Some(done) = self.drain(channel).await? {
                        return self.conclude(channel, done).await;
                    }
                }
            }
            if let Some(done) = self.drain(channel).await? {
                return self.conclude(channel, done).await;
            }
            // Input matters while handshaking and once everything is sent (the peer's close_notify).
            if channel.is_handshaking() || source_done || channel.error().is_some() {
                self.pump_input(channel).await?;
            }
        }
    }

    /// Client to file.
    async fn receive(
        &mut self,
        channel: &mut DataChannel,
        mut upload: Box<dyn Upload>,
    ) -> Result<DataReport, Failure> {
        let result = loop {
            if let Err(e) = drain_plaintext(channel, &mut upload).await {
                break Err(e);
            }
            match self.drain(channel).await {
                Err(e) => break Err(e),
                Ok(Some(done)) => break self.conclude(channel, done).await,
                Ok(None) => {}
            }
            if let Err(e) = self.pump_input(channel).await {
                break Err(e);
            }
        };
        match result {
            Ok(report) if report.clean_close => {
                upload
                    .commit()
                    .await
                    .map_err(|e| Failure::Storage(engine_storage_error(&e)))?;
                Ok(report)
            }
            // Not clean: possibly truncated. Never make a partial upload visible (DESIGN.md "close_notify").
            Ok(report) => {
                upload.abort().await;
                Ok(report)
            }
            Err(failure) => {
                upload.abort().await;
                Err(failure)
            }
        }
    }

    /// Sends what the channel still has after its last event: a clean transfer is complete whether or not
    /// the client still takes it (our close_notify, an upload's tickets: a client that closed at once resets).
    async fn conclude(
        &mut self,
        channel: &mut DataChannel,
        done: Result<DataReport, Failure>,
    ) -> Result<DataReport, Failure> {
        let flushed = self.drain(channel).await;
        match done {
            Ok(report) if report.clean_close => Ok(report),
            done => done.and_then(|report| flushed.map(|_| report)),
        }
    }

    /// The channel's one drain ([`DataChannel::poll_output`]) until it waits: sends its bytes, shuts the write
    /// half when it says so, passes its readiness on; returns how the channel ended, once it has.
    async fn drain(
        &mut self,
        channel: &mut DataChannel,
    ) -> Result<Option<Result<DataReport, Failure>>, Failure> {
        loop {
            self.out.clear();
            match channel.poll_output(&mut self.out) {
                DataOutput::Transmit(_) => self.write_out().await?,
                DataOutput::ShutdownWrite => {
                    let _ = self.socket.shutdown(std::net::Shutdown::Write);
                }
                DataOutput::TransferReady(ready) => {
                    if let Some(on_ready) = self.on_ready.take() {
                        on_ready(ready);
                    }
                }
                DataOutput::Event(DataEvent::Finished(report)) => return Ok(Some(Ok(report))),
                DataOutput::Event(DataEvent::Failed(error)) => {
                    return Ok(Some(Err(Failure::from(&error))))
                }
                DataOutput::Event(_) => {}
                DataOutput::Wait(_) => return Ok(None),
            }
        }
    }

    /// Writes `out` to the socket.
    async fn write_out(&mut self) -> Result<(), Failure> {
        // Each write that takes bytes is progress; `idle` without one fails the transfer (426). Strictly: a
        // write that needed the timer's own poll to take anything made no progress (see `strictly_within`).
        let mut at = 0;
        while at < self.out.len() {
            let write = self.socket.write(&self.out[at..]);
            match strictly_within(self.idle, write).await {
                Some(Ok(n)) if n > 0 => at += n,
                _ => return Err(Failure::Truncated),
            }
        }
        Ok(())
    }

    /// Acknowledges what was just read at once instead of after the delayed-ACK timer (about 40 ms).
    ///
    /// Clients that leave Nagle's algorithm on for data sockets (PHP's ftp extension, Python's ftplib, lftp)
    /// write a TLS record in two segments (the handshake's ChangeCipherSpec then Finished, an upload's last bytes
    /// then close_notify) and hold the second until the first is acknowledged. Having just sent its own flight,
    /// Linux delays that ACK, so each such file waited about 40 ms (measured with tcpdump: 44 ms per PHP upload,
    /// 2.5 ms with this). `TCP_QUICKACK` is not sticky, hence once per read.
    /// Only while the handshake runs and when receiving a file: after a download's handshake the client sends
    /// one close_notify, which waits for nothing.
    fn quick_ack(&self, channel: &DataChannel) {
        #[cfg(target_os = "linux")]
        if self.receiving || channel.is_handshaking() {
            let _ = socket2::SockRef::from(&self.socket).set_tcp_quickack(true);
        }
    }

    /// Feeds the channel: the bytes still pending from the last socket read, or else the next read (waiting at
    /// most until the channel's deadline or the idle timeout). The caller drains plaintext between calls.
    async fn pump_input(&mut self, channel: &mut DataChannel) -> Result<(), Failure> {
        if self.pending.is_empty() {
            // The channel's own deadline (the TLS handshake), else the idle timeout.
            let limit = channel.poll_timeout().map_or(self.idle, |at| {
                at.saturating_duration_since(Instant::now()).min(self.idle)
            });
            if self.eof {
                // Nothing more will come: only the channel's deadline or the idle timeout can end the wait.
                let now = Instant::now();
                match channel.poll_timeout() {
                    Some(at) => {
                        if at > now {
                            async_io::Timer::at(at).await;
                        }
                        channel.handle_timeout(Instant::now());
                    }
                    None => return Err(Failure::Truncated),
                }
                return Ok(());
            }
            match within(limit, self.socket.read(&mut self.net_in)).await {
                // A reset counts as an EOF: the channel tells a clean close from a truncation.
                Some(Ok(0)) | Some(Err(_)) => {
                    self.eof = true;
                    channel.handle_eof(Instant::now());
                    return Ok(());
                }
                Some(Ok(n)) => {
                    self.quick_ack(channel);
                    self.pending = 0..n;
                }
                None => {
                    let now = Instant::now();
                    if channel.poll_timeout().is_some_and(|t| t <= now) {
                        channel.handle_timeout(now);
                        return Ok(());
                    }
                    // Nothing from the client for the whole idle timeout.
                    return Err(Failure::Truncated);
                }
            }
        }
        let took = channel.handle_input(Instant::now(), &self.net_in[self.pending.clone()]);
        self.pending.start += took;
        if self.pending.is_empty() {
            let filled = self.pending.end;
            self.grow_if_filled(filled);
        }
        Ok(())
    }

    /// Doubles the read buffer (up to [`NET_READ_SIZE`]) after a read of `n` bytes filled it. Only called with
    /// nothing pending in it, so growing moves no unread bytes.
    fn grow_if_filled(&mut self, n: usize) {
        if n == self.net_in.len() && n < NET_READ_SIZE && self.pending.is_empty() {
            self.net_in.resize((n * 2).min(NET_READ_SIZE), 0);
        }
    }
}

/// Runs `f`, giving up after `idle`.
async fn timed<T>(idle: Duration, f: impl std::future::Future<Output = T>) -> Result<T, Failure> {
    within(idle, f).await.ok_or(Failure::Truncated)
}

/// Moves received plaintext (already converted for `TYPE A` by the channel) into the upload.
async fn drain_plaintext(
    channel: &mut DataChannel,
    upload: &mut Box<dyn Upload>,
) -> Result<(), Failure> {
    loop {
        let chunk = channel.read_chunk();
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len();
        upload
            .write_all(chunk)
            .await
            .map_err(|e| Failure::Storage(engine_storage_error(&e.into())))?;
        channel.consume(n);
    }
}
