//! Several sessions to one server working together: many files at once, or one large file in segments.
//!
//! FTP moves one file per control connection at a time, so parallelism means several logged-in sessions,
//! each with its own control connection, TLS session and data connections. A [`SessionPool`] opens them
//! from a closure and shares a queue between them: every item runs on exactly one session, and a session
//! that cannot be opened leaves its share to the others.
//!
//! ```no_run
//! use ftps_client_blocking::{Client, ClientConfig, SessionPool};
//!
//! let open = || {
//!     let mut client = Client::connect("ftp.example.com", 21, ClientConfig::new())?;
//!     client.login("alice", "secret")?;
//!     Ok(client)
//! };
//! let mut first = open()?;
//! let pool = SessionPool::new(4, open);
//! let files = ["a.bin", "b.bin", "c.bin", "d.bin", "e.bin"];
//! pool.for_each(&mut first, &files, |client, name| {
//!     client.get(name, std::path::Path::new(name), false).map(drop)
//! }, |e| eprintln!("one session fewer: {e}"))?;
//! # Ok::<(), ftps_client_blocking::Error>(())
//! ```

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Client, Error, Result, RetrGuard, TransferReport};

/// The smallest segment of a segmented download: each segment costs a data connection and, unless it is
/// the last one, an `ABOR`, so segments much smaller than this would spend more on round trips than on
/// bytes.
pub const MIN_SEGMENT: u64 = 8 << 20;

/// How many segments per session a segmented download aims at: more than one, so a session that finishes
/// early takes another one instead of waiting for the slowest.
const SEGMENTS_PER_SESSION: u64 = 4;

/// Read size of a segment: a bulk buffer, reused for the whole segment.
const SEGMENT_BUFFER: usize = 256 << 10;

/// Up to `size` logged-in sessions to one server, opened on demand by `open`.
pub struct SessionPool<F> {
    open: F,
    size: usize,
}

impl<F> std::fmt::Debug for SessionPool<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPool")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// What a segmented download did ([`SessionPool::get_segmented`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentedReport {
    /// Bytes written, the remote file's size.
    pub bytes: u64,
    /// Segments the file was split into (1: it was downloaded as one stream).
    pub segments: usize,
    /// Sessions that took part, the caller's included.
    pub sessions: usize,
    /// Wall-clock time of the whole download.
    pub elapsed: Duration,
    /// The report of the stream that read the file's end, the one the server confirmed with its final
    /// reply (the others end with `ABOR`): its TLS facts stand for every segment's.
    pub last_segment: TransferReport,
}

impl SegmentedReport {
    /// The whole download as one [`TransferReport`]: every byte and the whole time, with the last
    /// segment's TLS facts and reply.
    pub fn as_transfer_report(&self) -> TransferReport {
        TransferReport {
            bytes: self.bytes,
            elapsed: self.elapsed,
            ..self.last_segment.clone()
        }
    }
}

impl<F> SessionPool<F>
where
    F: Fn() -> Result<Client> + Sync,
{
    /// A pool of at most `size` sessions (at least one: the caller's) opened by `open`, which connects
    /// and logs in.
    pub fn new(size: usize, open: F) -> Self {
        Self {
            open,
            size: size.max(1),
        }
    }

    /// The most sessions that work at once, the caller's included.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `work` on every item, each on exactly one session: on `first`, and on up to `size - 1`
    /// sessions opened here (closed with `QUIT` at the end). The first error from `work` stops the run:
    /// no session starts another item, and that error is returned once the items in progress are done.
    /// A session that cannot be opened is reported to `open_failed` and the others carry its share.
    pub fn for_each<T: Sync, E: Send>(
        &self,
        first: &mut Client,
        items: &[T],
        work: impl Fn(&mut Client, &T) -> Result<(), E> + Sync,
        open_failed: impl Fn(&Error) + Sync,
    ) -> Result<(), E> {
        let workers = self.size.min(items.len()).max(1);
        let next = AtomicUsize::new(0);
        let stop: Mutex<Option<E>> = Mutex::new(None);
        let drain = |client: &mut Client| loop {
            if stop.lock().map_or(true, |s| s.is_some()) {
                return;
            }
            let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else {
                return;
            };
            if let Err(error) = work(client, item) {
                if let Ok(mut stop) = stop.lock() {
                    stop.get_or_insert(error);
                }
                return;
            }
        };
        std::thread::scope(|scope| {
            for _ in 1..workers {
                scope.spawn(|| match (self.open)() {
                    Ok(mut client) => {
                        drain(&mut client);
                        if !client.is_closed() {
                            let _ = client.quit();
                        }
                    }
                    Err(error) => open_failed(&error),
                });
            }
            drain(first);
        });
        match stop.into_inner() {
            Ok(Some(error)) => Err(error),
            _ => Ok(()),
        }
    }

    /// Downloads `remote` into `local` (created or truncated) in segments read at once by the pool's
    /// sessions: each segment is a `REST` + `RETR` that stops at the segment's end with `ABOR`
    /// (RFC 959 4.1.3; RFC 3659 section 5 for `REST` in stream mode), and its bytes are written at
    /// their offset. `size` is the remote size when the caller already asked for it (`SIZE`, e.g. for a
    /// progress bar); `None` asks here. A file smaller than two [`MIN_SEGMENT`]s, or a pool of one, is
    /// downloaded as one stream on `first`.
    ///
    /// `progress` is called with the number of new bytes after each write, from any session's thread.
    /// A file whose size changes during the download fails with [`Error::SourceChanged`]; on any error
    /// `local` holds a partial file.
    pub fn get_segmented(
        &self,
        first: &mut Client,
        remote: &str,
        size: Option<u64>,
        local: &File,
        progress: impl Fn(u64) + Sync,
    ) -> Result<SegmentedReport> {
        let started = Instant::now();
        let total = match size {
            Some(size) => size,
            None => first.size(remote)?,
        };
        local.set_len(0)?;
        let plan = SegmentPlan::new(total, self.size);
        if plan.count() <= 1 {
            let last_segment = read_segment(first, remote, local, (0, total), true, &progress)?
                .ok_or_else(|| Error::Protocol("a whole-file read left no report".into()))?;
            return Ok(SegmentedReport {
                bytes: total,
                segments: 1,
                sessions: 1,
                elapsed: started.elapsed(),
                last_segment,
            });
        }
        // Sparse until written: every segment lands at its own offset.
        local.set_len(total)?;
        let indexes: Vec<u64> = (0..plan.count()).collect();
        let segments = usize::try_from(plan.count()).unwrap_or(usize::MAX);
        let not_opened = AtomicUsize::new(0);
        let last_segment = Mutex::new(None);
        self.for_each(
            first,
            &indexes,
            |client, &index| {
                let range = plan.range(index);
                let report =
                    read_segment(client, remote, local, range, range.1 == total, &progress)?;
                if let (Some(report), Ok(mut last)) = (report, last_segment.lock()) {
                    *last = Some(report);
                }
                Ok::<(), Error>(())
            },
            |_| {
                not_opened.fetch_add(1, Ordering::Relaxed);
            },
        )?;
        let last_segment = last_segment
            .into_inner()
            .ok()
            .flatten()
            .ok_or_else(|| Error::Protocol("the last segment left no report".into()))?;
        Ok(SegmentedReport {
            bytes: total,
            segments,
            sessions: self.size.min(segments) - not_opened.into_inner(),
            elapsed: started.elapsed(),
            last_segment,
        })
    }
}

/// How a file of `total` bytes is cut into segments: equal, whole MiB, at least [`MIN_SEGMENT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct SegmentPlan {
    total: u64,
    segment: u64,
}

impl SegmentPlan {
    fn new(total: u64, sessions: usize) -> Self {
        let sessions = u64::try_from(sessions).unwrap_or(u64::MAX).max(1);
        if sessions == 1 || total < 2 * MIN_SEGMENT {
            return Self {
                total,
                segment: total.max(1),
            };
        }
        let wanted = total.div_ceil(sessions.saturating_mul(SEGMENTS_PER_SESSION));
        let segment = wanted.max(MIN_SEGMENT).next_multiple_of(1 << 20);
        Self { total, segment }
    }

    /// Number of segments (an empty file is one empty segment).
    fn count(&self) -> u64 {
        self.total.div_ceil(self.segment).max(1)
    }

    /// Byte range `[start, end)` of segment `index`.
    fn range(&self, index: u64) -> (u64, u64) {
        let start = index.saturating_mul(self.segment).min(self.total);
        (start, start.saturating_add(self.segment).min(self.total))
    }
}

/// Downloads bytes `[start, end)` of `remote` into `local` at the same offsets. When `end` is the
/// file's size (`is_last`), the stream must end exactly there and its report is returned; otherwise the
/// rest of the stream belongs to other segments and is aborted.
fn read_segment(
    client: &mut Client,
    remote: &str,
    local: &File,
    (start, end): (u64, u64),
    is_last: bool,
    progress: &(impl Fn(u64) + Sync),
) -> Result<Option<TransferReport>> {
    let mut guard = client.retr(remote, start)?;
    let at = match copy_at(&mut guard, local, start, end, progress) {
        Ok(at) => at,
        Err(error) => return Err(error.settle(guard)),
    };
    if at == end && !is_last {
        return guard.abort().map(|()| None);
    }
    // One more byte after the size means the file grew since SIZE.
    let mut probe = [0u8; 1];
    let grew = match read_retrying(&mut guard, &mut probe) {
        Ok(n) => n > 0,
        Err(error) => return Err(CopyError::Read(error).settle(guard)),
    };
    if grew {
        return Err(Error::SourceChanged {
            expected: end,
            found: end + 1,
        });
    }
    let report = guard.finish()?;
    if at < end {
        // The stream ended before the range did: the file shrank since SIZE.
        return Err(Error::SourceChanged {
            expected: end,
            found: at,
        });
    }
    Ok(Some(report))
}

/// Why copying a segment stopped early.
enum CopyError {
    /// Reading the download failed; the guard knows the typed cause.
    Read(io::Error),
    /// Writing the local file failed.
    Write(io::Error),
}

impl CopyError {
    /// The error to report: for a failed read, the guard's own (truncation, the data connection's
    /// failure, the server's reply); a failed write aborts the download.
    fn settle(self, guard: RetrGuard<'_>) -> Error {
        match self {
            CopyError::Read(e) => guard.finish().err().unwrap_or(Error::Io(e)),
            CopyError::Write(e) => {
                drop(guard);
                Error::Io(e)
            }
        }
    }
}

/// Copies the download into `local` from offset `start` until `end` or the stream's end, whichever
/// comes first; returns the offset reached. Bytes past `end` in the last read are not written.
fn copy_at(
    guard: &mut RetrGuard<'_>,
    local: &File,
    start: u64,
    end: u64,
    progress: &(impl Fn(u64) + Sync),
) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; SEGMENT_BUFFER];
    let mut at = start;
    while at < end {
        let n = read_retrying(guard, &mut buf).map_err(CopyError::Read)?;
        if n == 0 {
            break;
        }
        let keep = usize::try_from(end - at).map_or(n, |left| n.min(left));
        local
            .write_all_at(buf.get(..keep).unwrap_or(&[]), at)
            .map_err(CopyError::Write)?;
        at += keep as u64;
        progress(keep as u64);
    }
    Ok(at)
}

fn read_retrying(guard: &mut RetrGuard<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match guard.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_and_single_sessions_are_one_segment() {
        assert_eq!(SegmentPlan::new(0, 4).count(), 1);
        assert_eq!(SegmentPlan::new(0, 4).range(0), (0, 0));
        assert_eq!(SegmentPlan::new(2 * MIN_SEGMENT - 1, 4).count(), 1);
        assert_eq!(SegmentPlan::new(1 << 30, 1).count(), 1);
        assert_eq!(SegmentPlan::new(1 << 30, 1).range(0), (0, 1 << 30));
    }

    #[test]
    fn segments_cover_the_file_exactly_once() {
        for (total, sessions) in [
            (2 * MIN_SEGMENT, 4),
            (1 << 30, 4),
            ((1 << 30) + 12_345, 3),
            (100 * MIN_SEGMENT + 1, 16),
        ] {
            let plan = SegmentPlan::new(total, sessions);
            assert!(plan.count() >= 2, "{total} {sessions}");
            let mut next = 0;
            for index in 0..plan.count() {
                let (start, end) = plan.range(index);
                assert_eq!(start, next);
                assert!(end > start);
                next = end;
            }
            assert_eq!(next, total);
        }
    }

    #[test]
    fn a_gigabyte_on_four_sessions_is_sixteen_segments() {
        let plan = SegmentPlan::new(1 << 30, 4);
        assert_eq!(plan.count(), 16);
        assert_eq!(plan.range(15), (15 << 26, 1 << 30));
    }
}
