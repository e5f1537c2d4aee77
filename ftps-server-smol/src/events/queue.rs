//! A durable FIFO of event lines for one sink: an append-only file of JSON lines and, beside it, the byte offset
//! up to which lines were delivered.
//!
//! Appending is one `write` of a whole line to a file opened with `O_APPEND`, so a process killed at any moment
//! leaves whole lines (a power cut may leave a torn last line, which opening drops). The offset is replaced by a
//! rename, so it is either the old or the new one: at worst the last line is delivered again.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Once everything is delivered and the file is this large, it is emptied.
const COMPACT_AT: u64 = 1 << 20;

/// The longest line read back (events are a few hundred bytes; a longer line is a damaged file).
const MAX_LINE: u64 = 1 << 20;

/// The delivered offset is written at most this often, and this long after the last delivery when the queue goes
/// quiet (a write and a rename per event were a fifth of the delivery thread's system calls); a crash then
/// repeats at most this much.
const OFFSET_EVERY: Duration = Duration::from_millis(200);

pub(crate) struct Queue {
    path: PathBuf,
    offset_path: PathBuf,
    state: Mutex<State>,
    more: Condvar,
    /// The delivery thread's reader and the offset it is at: kept open between lines (an open, a seek and a
    /// close per event were most of the delivery thread's system calls). Only the delivery thread reads.
    reader: Mutex<Option<(BufReader<File>, u64)>>,
}

struct State {
    appender: File,
    /// Bytes in the file.
    len: u64,
    /// Bytes delivered.
    delivered: u64,
    /// Lines not yet delivered.
    pending: u64,
    /// When the offset file was last written.
    offset_written: Instant,
    /// `delivered` moved since the offset file was written.
    offset_dirty: bool,
}

impl Queue {
    /// Opens (or creates) the queue `name` in `dir`.
    pub(crate) fn open(dir: &Path, name: &str) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.jsonl"));
        let offset_path = dir.join(format!("{name}.offset"));
        let mut appender = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)?;
        let mut contents = Vec::new();
        appender.read_to_end(&mut contents)?;
        // A torn last line (power cut mid-write) is dropped: it was never acknowledged to anyone.
        let whole = contents
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        if whole < contents.len() {
            appender.set_len(whole as u64)?;
            contents.truncate(whole);
        }
        let len = contents.len() as u64;
        let delivered = fs::read_to_string(&offset_path)
            .ok()
            .and_then(|text| text.trim().parse::<u64>().ok())
            .unwrap_or(0)
            .min(len);
        // An offset inside a line (a file emptied without its offset: see `acknowledge`) restarts at that line.
        let delivered = contents[..delivered as usize]
            .iter()
            .rposition(|b| *b == b'\n')
            .map_or(0, |i| i as u64 + 1);
        let pending = contents[delivered as usize..]
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64;
        Ok(Self {
            path,
            offset_path,
            state: Mutex::new(State {
                appender,
                len,
                delivered,
                pending,
                // The first acknowledgement is written at once.
                offset_written: Instant::now()
                    .checked_sub(OFFSET_EVERY)
                    .unwrap_or_else(Instant::now),
                offset_dirty: false,
            }),
            more: Condvar::new(),
            reader: Mutex::new(None),
        })
    }

    /// Appends one line (no newline inside).
    pub(crate) fn push(&self, line: &str) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        let mut state = self.lock();
        state.appender.write_all(&bytes)?;
        state.len += bytes.len() as u64;
        state.pending += 1;
        self.more.notify_all();
        Ok(())
    }

    /// The oldest undelivered line and the offset just after it, waiting up to `wait` for one.
    pub(crate) fn next(&self, wait: Duration) -> io::Result<Option<(String, u64)>> {
        let mut state = self.lock();
        if state.delivered >= state.len && state.offset_dirty {
            // Caught up with an offset not yet written: give the next event a moment, and record the offset
            // when none comes, so a quiet queue's file is at most OFFSET_EVERY behind.
            state = self.wait_for_more(state, wait.min(OFFSET_EVERY));
            if state.delivered >= state.len {
                self.write_offset(&mut state)?;
            }
        }
        if state.delivered >= state.len {
            state = self.wait_for_more(state, wait);
            if state.delivered >= state.len {
                return Ok(None);
            }
        }
        let (start, len) = (state.delivered, state.len);
        drop(state);
        let mut reader = self
            .reader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut current = match reader.take() {
            Some((current, at)) if at == start => current,
            // First use, or the file was emptied: open it at the line.
            _ => {
                let mut file = File::open(&self.path)?;
                file.seek(SeekFrom::Start(start))?;
                BufReader::new(file)
            }
        };
        let mut line = String::new();
        // Never past what was appended whole: the file only grows, so what the buffer holds beyond is a
        // prefix of what will be there.
        let n = (&mut current)
            .take((len - start).min(MAX_LINE))
            .read_line(&mut line)?;
        if !line.ends_with('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: damaged line at byte {start}", self.path.display()),
            ));
        }
        line.pop();
        let end = start + n as u64;
        *reader = Some((current, end));
        Ok(Some((line, end)))
    }

    fn wait_for_more<'a>(
        &self,
        state: std::sync::MutexGuard<'a, State>,
        wait: Duration,
    ) -> std::sync::MutexGuard<'a, State> {
        match self.more.wait_timeout(state, wait) {
            Ok((state, _)) => state,
            Err(poisoned) => poisoned.into_inner().0,
        }
    }

    /// Writes the delivered offset now if it moved since it was last written: before the delivery thread waits
    /// out a failure, so a crash during an outage repeats nothing already delivered.
    pub(crate) fn record_offset(&self) -> io::Result<()> {
        let mut state = self.lock();
        if state.offset_dirty {
            self.write_offset(&mut state)?;
        }
        Ok(())
    }

    /// Replaces the offset file with the delivered offset.
    fn write_offset(&self, state: &mut State) -> io::Result<()> {
        state.offset_written = Instant::now();
        state.offset_dirty = false;
        let tmp = self.offset_path.with_extension("offset.tmp");
        fs::write(&tmp, state.delivered.to_string())?;
        fs::rename(&tmp, &self.offset_path)
    }

    /// Records that everything before `end` was delivered.
    pub(crate) fn acknowledge(&self, end: u64) -> io::Result<()> {
        let mut state = self.lock();
        if end <= state.delivered {
            return Ok(());
        }
        state.delivered = end.min(state.len);
        state.pending = state.pending.saturating_sub(1);
        let caught_up = state.delivered == state.len;
        if caught_up && state.len >= COMPACT_AT {
            // Empty the file first: a crash before the offset is rewritten leaves an offset past the end,
            // which opening clamps to zero.
            state.appender.set_len(0)?;
            state.len = 0;
            state.delivered = 0;
        } else if state.offset_written.elapsed() < OFFSET_EVERY {
            // `next` writes it once the queue has been quiet for a moment.
            state.offset_dirty = true;
            return Ok(());
        }
        self.write_offset(&mut state)
    }

    /// Lines not yet delivered.
    pub(crate) fn pending(&self) -> u64 {
        self.lock().pending
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_come_back_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), "q").unwrap();
        assert_eq!(q.next(Duration::ZERO).unwrap(), None);
        q.push("one").unwrap();
        q.push("two").unwrap();
        let (line, end) = q.next(Duration::ZERO).unwrap().unwrap();
        assert_eq!(line, "one");
        q.acknowledge(end).unwrap();
        assert_eq!(q.pending(), 1);
        drop(q);
        // A restart continues after the delivered line; a torn line at the end is dropped.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("q.jsonl"))
            .unwrap();
        file.write_all(b"{\"torn").unwrap();
        let q = Queue::open(dir.path(), "q").unwrap();
        assert_eq!(q.pending(), 1);
        let (line, end) = q.next(Duration::ZERO).unwrap().unwrap();
        assert_eq!(line, "two");
        q.acknowledge(end).unwrap();
        assert_eq!(q.next(Duration::ZERO).unwrap(), None);
        q.push("three").unwrap();
        assert_eq!(q.next(Duration::ZERO).unwrap().unwrap().0, "three");
    }

    #[test]
    fn a_quiet_queue_records_its_offset_soon_after_the_last_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), "q").unwrap();
        for line in ["a", "b", "c"] {
            q.push(line).unwrap();
        }
        // Delivered in a burst: the first acknowledgement is written, the others wait.
        for _ in 0..3 {
            let (_, end) = q.next(Duration::ZERO).unwrap().unwrap();
            q.acknowledge(end).unwrap();
        }
        assert_eq!(
            fs::read_to_string(dir.path().join("q.offset")).unwrap(),
            "2"
        );
        // The delivery thread's next wait finds nothing new and records where it is.
        assert_eq!(q.next(Duration::from_millis(300)).unwrap(), None);
        assert_eq!(
            fs::read_to_string(dir.path().join("q.offset")).unwrap(),
            "6"
        );
        drop(q);
        let q = Queue::open(dir.path(), "q").unwrap();
        assert_eq!(q.pending(), 0);
    }

    #[test]
    fn a_delivered_file_is_emptied_once_large() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path(), "q").unwrap();
        let line = "x".repeat(1000);
        for _ in 0..1100 {
            q.push(&line).unwrap();
        }
        while let Some((_, end)) = q.next(Duration::ZERO).unwrap() {
            q.acknowledge(end).unwrap();
        }
        assert_eq!(fs::metadata(dir.path().join("q.jsonl")).unwrap().len(), 0);
        q.push("after").unwrap();
        drop(q);
        let q = Queue::open(dir.path(), "q").unwrap();
        assert_eq!(q.next(Duration::ZERO).unwrap().unwrap().0, "after");
    }
}
