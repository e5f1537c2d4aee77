//! [`ReadBuffer`]: bytes read from a socket that the engine has not taken yet.

/// Bytes read from a socket, `buf[start..end]` not yet taken by the engine (a state machine takes less than it is
/// offered only under backpressure; the rest is offered again after its outputs are drained).
#[derive(Debug)]
pub(crate) struct ReadBuffer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// How far `buf` may grow while reads fill it.
    max: usize,
}

impl ReadBuffer {
    /// A buffer of `initial` bytes that doubles, while reads fill it, up to `max`.
    pub(crate) fn new(initial: usize, max: usize) -> Self {
        Self {
            buf: vec![0; initial.min(max)].into_boxed_slice(),
            start: 0,
            end: 0,
            max,
        }
    }

    /// The bytes read and not taken yet.
    pub(crate) fn unread(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// The engine took the first `n` unread bytes.
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
    }

    /// Room for the next read, after moving the unread bytes to the front when the end is reached. `None` when
    /// unread bytes fill the buffer: reading into no room returns 0, which would look like EOF.
    pub(crate) fn space(&mut self) -> Option<&mut [u8]> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        self.buf.get_mut(self.end..).filter(|free| !free.is_empty())
    }

    /// `n` bytes were read into [`ReadBuffer::space`]; a read that filled the buffer grows it.
    pub(crate) fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
        if self.end == self.buf.len() && self.buf.len() < self.max {
            // Growing keeps the unread bytes where `start..end` points.
            let mut grown = std::mem::take(&mut self.buf).into_vec();
            grown.resize((grown.len() * 2).min(self.max), 0);
            self.buf = grown.into_boxed_slice();
        }
    }

    /// The whole buffer as scratch space, for reads whose bytes are discarded.
    pub(crate) fn scratch(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_bytes_survive_compaction_and_growth() {
        let mut buffer = ReadBuffer::new(4, 8);
        buffer.space().unwrap_or_default().copy_from_slice(b"abcd");
        buffer.filled(4);
        // The read filled it: it grew to 8, the bytes stayed.
        assert_eq!(buffer.unread(), b"abcd");
        buffer.consume(3);
        let space = buffer.space().unwrap_or_default();
        assert_eq!(space.len(), 4);
        space.copy_from_slice(b"efgh");
        buffer.filled(4);
        assert_eq!(buffer.unread(), b"defgh");
        // At the end (and at its maximum): the unread bytes move to the front.
        assert_eq!(buffer.space().map(|s| s.len()), Some(3));
        assert_eq!(buffer.unread(), b"defgh");
        buffer.consume(5);
        assert_eq!(buffer.space().map(|s| s.len()), Some(8));
        // Full of unread bytes: no room, rather than a read that looks like EOF.
        buffer.filled(8);
        assert!(buffer.space().is_none());
    }
}
