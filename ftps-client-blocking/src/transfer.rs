//! The streaming transfer guards ([`RetrGuard`], [`StorGuard`]) and whole-file `get` / `put`.
//!
//! A transfer completes only when the engine says so: the data side finished (close_notify / EOF) *and* the
//! final reply arrived, in either order.
//!
//! Dropping a guard without [`RetrGuard::finish`] / [`StorGuard::finish`] aborts the transfer quietly: the data
//! connection is closed and `ABOR` is sent; the next call on the [`Client`] first settles that abort.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use ftps_proto::client::{OpId, Operation, Output};
use ftps_proto::codec::Reply;
use ftps_proto::TlsInfo;

use crate::client::{Client, Started};
use crate::data_conn::{to_io, DataConn, BULK};
use crate::error::{Error, Result};

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransferReport {
    /// Payload bytes moved over the data connection.
    pub bytes: u64,
    /// Whether the data connection's TLS session resumed the control connection's (servers such as vsftpd with
    /// `require_ssl_reuse` insist on it).
    pub tls_resumed: bool,
    /// Whether the data connection ended with close_notify (TLS) or a clean EOF.
    pub clean_close: bool,
    /// What the data connection's TLS negotiated; `None` in the clear.
    pub tls: Option<TlsInfo>,
    /// The server's final reply.
    pub reply: Reply,
    /// From the transfer command to its final reply.
    pub elapsed: Duration,
}

impl TransferReport {
    fn from_output(output: Output, started: Instant) -> Result<Self> {
        match output {
            Output::Transfer(t) => Ok(Self {
                bytes: t.bytes,
                tls_resumed: t.resumed,
                clean_close: t.clean_close,
                tls: t.tls,
                reply: t.reply,
                elapsed: started.elapsed(),
            }),
            other => Err(Error::Protocol(format!(
                "unexpected transfer result {other:?}"
            ))),
        }
    }
}

impl Client {
    /// Starts downloading `path` from byte `offset` (`REST`, when non-zero). Read the returned guard to its end,
    /// then call [`RetrGuard::finish`].
    pub fn retr(&mut self, path: &str, offset: u64) -> Result<RetrGuard<'_>> {
        let op = Operation::Retrieve {
            path: path.to_string(),
            offset: (offset > 0).then_some(offset),
        };
        let started = self.start_transfer(op)?;
        Ok(RetrGuard::new(self, started))
    }

    /// Starts uploading to `path` (`STOR`, replacing it). Write the content, then call [`StorGuard::finish`].
    pub fn stor(&mut self, path: &str) -> Result<StorGuard<'_>> {
        let started = self.start_transfer(Operation::Store(path.to_string()))?;
        Ok(StorGuard::new(self, started))
    }

    /// Starts appending to `path` (`APPE`).
    pub fn appe(&mut self, path: &str) -> Result<StorGuard<'_>> {
        let started = self.start_transfer(Operation::Append(path.to_string()))?;
        Ok(StorGuard::new(self, started))
    }

    /// Starts overwriting `path` from byte `offset` on (`REST` + `STOR`): write the file's bytes from `offset`.
    pub fn stor_at(&mut self, path: &str, offset: u64) -> Result<StorGuard<'_>> {
        let started = self.start_transfer(Operation::StoreAt {
            path: path.to_string(),
            offset,
        })?;
        Ok(StorGuard::new(self, started))
    }

    /// Downloads `remote` to `local`. With `resume`, an existing shorter local file is continued with `REST`
    /// (nothing is transferred when the sizes already match: `Ok(None)`). See [`Client::get_with_progress`].
    pub fn get(
        &mut self,
        remote: &str,
        local: &Path,
        resume: bool,
    ) -> Result<Option<TransferReport>> {
        self.get_with_progress(remote, local, resume, |_| {})
    }

    /// [`Client::get`], calling `progress` with the local file's length after each chunk.
    pub fn get_with_progress(
        &mut self,
        remote: &str,
        local: &Path,
        resume: bool,
        progress: impl FnMut(u64),
    ) -> Result<Option<TransferReport>> {
        get(self, remote, local, resume, progress)
    }

    /// Uploads `local` to `remote`. With `resume`, a shorter remote file is continued with `APPE` (nothing is
    /// transferred when the sizes already match: `Ok(None)`). See [`Client::put_with_progress`].
    pub fn put(
        &mut self,
        local: &Path,
        remote: &str,
        resume: bool,
    ) -> Result<Option<TransferReport>> {
        self.put_with_progress(local, remote, resume, |_| {})
    }

    /// [`Client::put`], calling `progress` with the bytes of the remote file so far after each chunk.
    pub fn put_with_progress(
        &mut self,
        local: &Path,
        remote: &str,
        resume: bool,
        progress: impl FnMut(u64),
    ) -> Result<Option<TransferReport>> {
        put(self, local, remote, resume, progress)
    }
}

/// The running part of a guard.
#[derive(Debug)]
enum GuardState {
    /// The data connection is up.
    Running(OpId, Box<DataConn>),
    /// The transfer ended without a data connection; `finish` returns this.
    Ended(Output),
    /// `finish` or `abort` ran.
    Done,
}

/// A download in progress ([`Client::retr`]): `Read` it to the end, then call [`RetrGuard::finish`].
///
/// Dropping it without `finish` aborts the transfer (see the [module docs](self)).
pub struct RetrGuard<'c> {
    client: &'c mut Client,
    state: GuardState,
    started: Instant,
    progress: Option<Box<dyn FnMut(u64) + 'c>>,
}

impl std::fmt::Debug for RetrGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetrGuard")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<'c> RetrGuard<'c> {
    pub(crate) fn new(client: &'c mut Client, started: Started) -> Self {
        Self {
            client,
            state: match started {
                Started::Data(op, conn) => GuardState::Running(op, conn),
                Started::Done(output) => GuardState::Ended(output),
            },
            started: Instant::now(),
            progress: None,
        }
    }

    /// Calls `progress` with the bytes received so far after each read.
    pub fn on_progress(&mut self, progress: impl FnMut(u64) + 'c) {
        self.progress = Some(Box::new(progress));
    }

    /// Payload bytes received so far.
    pub fn bytes(&self) -> u64 {
        match &self.state {
            GuardState::Running(_, conn) => conn.channel.bytes_received(),
            _ => 0,
        }
    }

    /// Writes the rest of the download into `out` without an intermediate copy; returns the bytes written.
    pub fn copy_to(&mut self, out: &mut impl Write) -> Result<u64> {
        let GuardState::Running(_, conn) = &mut self.state else {
            return Ok(0);
        };
        let mut written = 0u64;
        let mut failure = None;
        let progress = &mut self.progress;
        conn.drain(|chunk| {
            if failure.is_some() {
                return;
            }
            match out.write_all(chunk) {
                Ok(()) => {
                    written += chunk.len() as u64;
                    if let Some(progress) = progress.as_mut() {
                        progress(written);
                    }
                }
                Err(e) => failure = Some(e),
            }
        })?;
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(written),
        }
    }

    /// Ends the download: reads what is left (discarding it), answers the server's close_notify, and waits for
    /// the final reply. Fails with [`Error::Truncated`] when the server cut the TLS stream without close_notify.
    pub fn finish(mut self) -> Result<TransferReport> {
        match std::mem::replace(&mut self.state, GuardState::Done) {
            GuardState::Running(op, mut conn) => {
                let drained = conn.close_download();
                let failure = conn.take_failure();
                let outcome = conn.take_outcome();
                drop(conn);
                if let Some(failure) = failure.or(drained.err()) {
                    let _ = self.client.abort_transfer(op);
                    return Err(failure);
                }
                let output = self.client.finish_data(op, outcome)?;
                TransferReport::from_output(output, self.started)
            }
            GuardState::Ended(output) => TransferReport::from_output(output, self.started),
            GuardState::Done => Err(Error::Protocol("transfer already finished".to_string())),
        }
    }

    /// Aborts the download (`ABOR`) and waits until the server settled it; the session goes on.
    pub fn abort(mut self) -> Result<()> {
        match std::mem::replace(&mut self.state, GuardState::Done) {
            GuardState::Running(op, conn) => {
                // Closing the socket first makes the server's send fail, so it answers ABOR promptly even when
                // it does not read the control connection during a transfer.
                drop(conn);
                self.client.abort_transfer(op)
            }
            _ => Ok(()),
        }
    }
}

impl Read for RetrGuard<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let GuardState::Running(_, conn) = &mut self.state else {
            return Ok(0);
        };
        let n = conn.read_plain(buf).map_err(to_io)?;
        if n > 0 {
            let so_far = conn.channel.bytes_received();
            if let Some(progress) = self.progress.as_mut() {
                progress(so_far);
            }
        }
        Ok(n)
    }
}

impl Drop for RetrGuard<'_> {
    fn drop(&mut self) {
        if let GuardState::Running(op, conn) = std::mem::replace(&mut self.state, GuardState::Done)
        {
            drop(conn);
            self.client.abort_quietly(op);
        }
    }
}

/// An upload in progress ([`Client::stor`], [`Client::appe`], [`Client::stor_at`]): `Write` the content, then call
/// [`StorGuard::finish`].
///
/// Dropping it without `finish` aborts the transfer (see the [module docs](self)); the server may keep a partial
/// file.
pub struct StorGuard<'c> {
    client: &'c mut Client,
    state: GuardState,
    started: Instant,
    progress: Option<Box<dyn FnMut(u64) + 'c>>,
}

impl std::fmt::Debug for StorGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorGuard")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<'c> StorGuard<'c> {
    pub(crate) fn new(client: &'c mut Client, started: Started) -> Self {
        Self {
            client,
            state: match started {
                Started::Data(op, conn) => GuardState::Running(op, conn),
                Started::Done(output) => GuardState::Ended(output),
            },
            started: Instant::now(),
            progress: None,
        }
    }

    /// Calls `progress` with the bytes taken so far after each write.
    pub fn on_progress(&mut self, progress: impl FnMut(u64) + 'c) {
        self.progress = Some(Box::new(progress));
    }

    /// Payload bytes taken so far.
    pub fn bytes(&self) -> u64 {
        match &self.state {
            GuardState::Running(_, conn) => conn.channel.bytes_sent(),
            _ => 0,
        }
    }

    /// Ends the upload: sends the rest and close_notify, reads the data connection until the server closes it
    /// (so its close_notify and TLS tickets are processed, within the shutdown timeout), then waits for the final
    /// reply.
    pub fn finish(mut self) -> Result<TransferReport> {
        match std::mem::replace(&mut self.state, GuardState::Done) {
            GuardState::Running(op, mut conn) => {
                let closed = if conn.failure.is_some() {
                    Ok(())
                } else {
                    conn.close_upload()
                };
                let failure = conn.take_failure().or(closed.err());
                let outcome = conn.take_outcome();
                drop(conn);
                if let Some(failure) = failure {
                    // The server's verdict (e.g. 552 disk full) explains a broken upload best.
                    return match self.client.finish_data(op, outcome) {
                        Err(reply) if reply.reply_code().is_some() => Err(reply),
                        _ => Err(failure),
                    };
                }
                let output = self.client.finish_data(op, outcome)?;
                TransferReport::from_output(output, self.started)
            }
            GuardState::Ended(output) => TransferReport::from_output(output, self.started),
            GuardState::Done => Err(Error::Protocol("transfer already finished".to_string())),
        }
    }

    /// Aborts the upload (`ABOR`) and waits until the server settled it; the session goes on.
    pub fn abort(mut self) -> Result<()> {
        match std::mem::replace(&mut self.state, GuardState::Done) {
            GuardState::Running(op, conn) => {
                drop(conn);
                self.client.abort_transfer(op)
            }
            _ => Ok(()),
        }
    }
}

impl Write for StorGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let GuardState::Running(_, conn) = &mut self.state else {
            return Err(io::Error::other("the transfer has ended"));
        };
        let n = conn.write_plain(buf).map_err(to_io)?;
        let so_far = conn.channel.bytes_sent();
        if let Some(progress) = self.progress.as_mut() {
            progress(so_far);
        }
        Ok(n)
    }

    /// Sends what is buffered (it is also sent in 256 KiB units as the buffer fills).
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.state {
            GuardState::Running(_, conn) => conn.flush().map_err(|e| to_io(conn.note(e))),
            _ => Ok(()),
        }
    }
}

impl Drop for StorGuard<'_> {
    fn drop(&mut self) {
        if let GuardState::Running(op, conn) = std::mem::replace(&mut self.state, GuardState::Done)
        {
            drop(conn);
            self.client.abort_quietly(op);
        }
    }
}

/// [`Client::get_with_progress`].
pub(crate) fn get(
    client: &mut Client,
    remote: &str,
    local: &Path,
    resume: bool,
    mut progress: impl FnMut(u64),
) -> Result<Option<TransferReport>> {
    let have = if resume {
        std::fs::metadata(local).map_or(0, |m| m.len())
    } else {
        0
    };
    let mut offset = 0;
    if have > 0 {
        match client.size(remote) {
            Ok(size) if size == have => return Ok(None),
            // The local file is longer than the remote one: it is not a prefix, start over.
            Ok(size) if size < have => offset = 0,
            Ok(_) => offset = have,
            // No SIZE: try REST anyway; the server refuses it if it cannot.
            Err(e) if e.is_session_usable() => offset = have,
            Err(e) => return Err(e),
        }
    }
    let file = if offset > 0 {
        OpenOptions::new().append(true).open(local)?
    } else {
        File::create(local)?
    };
    let mut file = BufWriter::with_capacity(BULK, file);
    let mut guard = client.retr(remote, offset)?;
    guard.on_progress(move |n| progress(offset + n));
    guard.copy_to(&mut file)?;
    let report = guard.finish()?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    // A device or FIFO destination (`/dev/null`, a pipe) has nothing to sync, and fsync fails there (EINVAL).
    if file.metadata()?.is_file() {
        file.sync_all()?;
    }
    Ok(Some(report))
}

/// [`Client::put_with_progress`].
pub(crate) fn put(
    client: &mut Client,
    local: &Path,
    remote: &str,
    resume: bool,
    mut progress: impl FnMut(u64),
) -> Result<Option<TransferReport>> {
    let mut file = File::open(local)?;
    let local_len = file.metadata()?.len();
    let mut offset = 0;
    if resume {
        match client.size(remote) {
            Ok(size) if size == local_len => return Ok(None),
            Ok(size) if size < local_len => offset = size,
            // Longer remotely, or missing (550): upload it whole.
            Ok(_) => {}
            Err(e) if e.is_session_usable() => {}
            Err(e) => return Err(e),
        }
    }
    file.seek(SeekFrom::Start(offset))?;
    let mut guard = if offset > 0 {
        client.appe(remote)?
    } else {
        client.stor(remote)?
    };
    guard.on_progress(move |n| progress(offset + n));
    // No bigger than the file (plus the byte that finds its end): small files need no 256 KiB of zeroed pages.
    let remaining = usize::try_from(local_len.saturating_sub(offset)).unwrap_or(BULK);
    let mut buf = vec![0; remaining.saturating_add(1).min(BULK)];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        guard
            .write_all(buf.get(..n).unwrap_or(&[]))
            .map_err(Error::from)?;
    }
    guard.finish().map(Some)
}
