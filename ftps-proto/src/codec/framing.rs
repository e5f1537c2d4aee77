//! Control-channel line framing: CRLF (bare LF tolerated), a maximum line length and Telnet IAC handling.

/// Splits the control-channel byte stream into lines, whatever the chunking.
#[derive(Debug)]
pub struct LineFramer {
    max_line_len: usize,
}

/// A framing problem; the session can answer it and go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The line exceeded the maximum length; its bytes up to the next line end were discarded.
    LineTooLong,
}

impl LineFramer {
    /// The default maximum line length in bytes, terminator excluded.
    pub const DEFAULT_MAX_LINE_LEN: usize = 4096;

    /// A framer that refuses lines longer than `max_line_len` bytes.
    pub fn new(max_line_len: usize) -> Self {
        Self { max_line_len }
    }

    /// Consumes bytes up to and including the end of the next complete line.
    ///
    /// Returns how many bytes of `input` were consumed and, when a line ended within them, that line (terminator
    /// and Telnet IAC sequences removed) or the reason it was discarded. Bytes after the line end are left
    /// unconsumed, so a caller can stop at a protocol switch (`AUTH TLS`) with the rest still in hand.
    pub fn decode(&mut self, input: &[u8]) -> (usize, Option<Result<&[u8], FrameError>>) {
        let _ = (input, self.max_line_len);
        todo!("codec helper")
    }

    /// Bytes of an unfinished line currently buffered.
    pub fn buffered_len(&self) -> usize {
        todo!("codec helper")
    }
}
