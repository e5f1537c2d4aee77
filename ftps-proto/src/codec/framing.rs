//! Control-channel line framing: CRLF (bare LF tolerated), a maximum line length and Telnet IAC handling.
//!
//! The control connection is a Telnet NVT stream (RFC 959 section 4.1.3, RFC 854). Clients use Telnet commands
//! mainly to interrupt a transfer: `ABOR` is sent as `IAC IP IAC DM ABOR CRLF` (the `DM` as TCP urgent data).
//! The framer removes every Telnet command, so the session only ever sees command text:
//!
//! - `IAC IAC` is a literal `0xFF` data byte;
//! - `IAC` + a command byte 240..=250 (`SE`, `NOP`, `DM`, `BRK`, `IP`, `AO`, `AYT`, `EC`, `EL`, `GA`, `SB`) is
//!   dropped;
//! - `IAC WILL|WONT|DO|DONT` (251..=254) + its option byte is dropped (the server never negotiates options);
//! - `IAC` followed by any other byte is dropped and that byte is processed as ordinary data, so a stray `IAC`
//!   can never swallow a line end.
//!
//! Every sequence may be split across `decode` calls. Lines end at LF; a CR directly before it is removed, and a
//! bare LF is accepted because real clients send it. A line whose content would exceed the maximum length is
//! discarded up to its LF and reported once, at that LF, as [`FrameError::LineTooLong`]; at most `max_line_len`
//! bytes are ever buffered, whatever the chunking. A peer that never sends LF is the idle timeout's business.

/// Where the framer is inside a Telnet sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Telnet {
    /// Ordinary data.
    Data,
    /// After `IAC`.
    Iac,
    /// After `IAC WILL|WONT|DO|DONT`: the next byte is an option code, dropped.
    Option,
}

/// Telnet "interpret as command" (RFC 854).
const IAC: u8 = 255;

/// Splits the control-channel byte stream into lines, whatever the chunking.
///
/// One internal buffer is reused for every line, so a long-lived session does not allocate per line.
#[derive(Debug)]
pub struct LineFramer {
    max_line_len: usize,
    /// Content of the current line so far (Telnet removed, trailing CR held back in `pending_cr`).
    line: Vec<u8>,
    /// A CR was read and not yet stored: it is dropped if LF follows, kept as data otherwise.
    pending_cr: bool,
    /// The current line exceeded `max_line_len`; bytes are dropped until its LF.
    discarding: bool,
    /// `line` holds a line returned by the previous `decode`; it is cleared on the next call.
    line_returned: bool,
    telnet: Telnet,
}

/// A framing problem; the session can answer it and go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FrameError {
    /// The line exceeded the maximum length; its bytes up to the next line end were discarded.
    LineTooLong,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::LineTooLong => f.write_str("Command line too long"),
        }
    }
}

impl std::error::Error for FrameError {}

impl Default for LineFramer {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MAX_LINE_LEN)
    }
}

impl LineFramer {
    /// The default maximum line length in bytes, terminator excluded.
    pub const DEFAULT_MAX_LINE_LEN: usize = 4096;

    /// A framer that refuses lines longer than `max_line_len` bytes.
    pub fn new(max_line_len: usize) -> Self {
        Self {
            max_line_len,
            line: Vec::new(),
            pending_cr: false,
            discarding: false,
            line_returned: false,
            telnet: Telnet::Data,
        }
    }

    /// The maximum line length in bytes, terminator excluded.
    pub fn max_line_len(&self) -> usize {
        self.max_line_len
    }

    /// Consumes bytes up to and including the end of the next complete line.
    ///
    /// Returns how many bytes of `input` were consumed and, when a line ended within them, that line (terminator
    /// and Telnet IAC sequences removed) or the reason it was discarded. Bytes after the line end are left
    /// unconsumed, so a caller can stop at a protocol switch (`AUTH TLS`) with the rest still in hand.
    #[must_use = "the consumed count and the line must be handled"]
    pub fn decode(&mut self, input: &[u8]) -> (usize, Option<Result<&[u8], FrameError>>) {
        if self.line_returned {
            self.line.clear();
            self.line_returned = false;
        }
        for (index, &byte) in input.iter().enumerate() {
            match self.telnet {
                Telnet::Data if byte == IAC => self.telnet = Telnet::Iac,
                Telnet::Data if byte == b'\n' => return self.decode_line_end(index),
                Telnet::Data => self.push_data(byte),
                Telnet::Iac => {
                    self.telnet = Telnet::Data;
                    match byte {
                        IAC => self.push_data(IAC),
                        240..=250 => {}
                        251..=254 => self.telnet = Telnet::Option,
                        // Not a Telnet command: drop the IAC, keep the byte as data (it may be the line end).
                        b'\n' => return self.decode_line_end(index),
                        _ => self.push_data(byte),
                    }
                }
                Telnet::Option => self.telnet = Telnet::Data,
            }
        }
        (input.len(), None)
    }

    /// The LF at `index` of the input ends the current line.
    fn decode_line_end(&mut self, index: usize) -> (usize, Option<Result<&[u8], FrameError>>) {
        let consumed = index + 1;
        self.pending_cr = false;
        if self.discarding {
            self.discarding = false;
            self.line.clear();
            return (consumed, Some(Err(FrameError::LineTooLong)));
        }
        self.line_returned = true;
        (consumed, Some(Ok(&self.line)))
    }

    /// Appends one data byte (not LF) to the current line, holding back a CR until we know whether LF follows.
    fn push_data(&mut self, byte: u8) {
        if self.pending_cr {
            self.pending_cr = false;
            self.store(b'\r');
        }
        if byte == b'\r' {
            self.pending_cr = true;
        } else {
            self.store(byte);
        }
    }

    /// Stores one content byte, switching to discarding when the line gets too long.
    fn store(&mut self, byte: u8) {
        if self.discarding {
            return;
        }
        if self.line.len() >= self.max_line_len {
            self.discarding = true;
            self.line.clear();
            return;
        }
        self.line.push(byte);
    }

    /// Bytes of an unfinished line currently buffered.
    pub fn buffered_len(&self) -> usize {
        if self.line_returned {
            0
        } else {
            self.line.len() + usize::from(self.pending_cr)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Frames = Vec<Result<Vec<u8>, FrameError>>;

    /// Feeds `chunks` in order, decoding every line, and returns the lines and the final buffered length.
    fn frame_chunks<'a>(max: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> (Frames, usize) {
        let mut framer = LineFramer::new(max);
        let mut frames = Vec::new();
        for mut chunk in chunks {
            while !chunk.is_empty() {
                let (consumed, frame) = framer.decode(chunk);
                assert!(consumed > 0 && consumed <= chunk.len());
                if let Some(frame) = frame {
                    frames.push(frame.map(<[u8]>::to_vec));
                    assert_eq!(chunk[consumed - 1], b'\n', "a line ends right after its LF");
                } else {
                    assert_eq!(consumed, chunk.len());
                }
                assert!(framer.buffered_len() <= max + 1);
                assert!(framer.line.len() <= max);
                chunk = &chunk[consumed..];
            }
        }
        (frames, framer.buffered_len())
    }

    fn frame_whole(max: usize, input: &[u8]) -> Frames {
        frame_chunks(max, [input]).0
    }

    fn ok(line: &[u8]) -> Result<Vec<u8>, FrameError> {
        Ok(line.to_vec())
    }

    #[test]
    fn crlf_and_bare_lf() {
        assert_eq!(
            frame_whole(100, b"USER a\r\nPASS b\nNOOP\r\n\r\n"),
            vec![ok(b"USER a"), ok(b"PASS b"), ok(b"NOOP"), ok(b"")]
        );
    }

    #[test]
    fn cr_not_before_lf_is_data() {
        assert_eq!(frame_whole(100, b"a\rb\r\r\n"), vec![ok(b"a\rb\r")]);
    }

    #[test]
    fn abort_with_telnet_ip_dm() {
        assert_eq!(
            frame_whole(100, b"\xff\xf4\xff\xf2ABOR\r\n"),
            vec![ok(b"ABOR")]
        );
    }

    #[test]
    fn telnet_sequences() {
        // IAC IAC is a literal 0xFF; IAC DO x and IAC WONT x vanish; IAC NOP vanishes.
        assert_eq!(
            frame_whole(100, b"S\xff\xffT\xff\xfd\x01O\xff\xfc\x03R\xff\xf1\r\n"),
            vec![ok(b"S\xffTOR")]
        );
        // A stray IAC before LF must not swallow the line end.
        assert_eq!(
            frame_whole(100, b"NOOP\xff\nQUIT\r\n"),
            vec![ok(b"NOOP"), ok(b"QUIT")]
        );
        // IAC + non-command: IAC dropped, byte kept.
        assert_eq!(frame_whole(100, b"A\xffBC\n"), vec![ok(b"ABC")]);
    }

    #[test]
    fn stops_right_after_the_line() {
        let mut framer = LineFramer::new(100);
        let input = b"AUTH TLS\r\n\x16\x03\x01";
        let (consumed, line) = framer.decode(input);
        assert_eq!(consumed, 10);
        assert_eq!(line, Some(Ok(&b"AUTH TLS"[..])));
        assert_eq!(framer.buffered_len(), 0);
        let (consumed, line) = framer.decode(b"NO");
        assert_eq!((consumed, line), (2, None));
        assert_eq!(framer.buffered_len(), 2);
        let (consumed, line) = framer.decode(b"OP\r");
        assert_eq!((consumed, line), (3, None));
        assert_eq!(framer.buffered_len(), 5);
        let (consumed, line) = framer.decode(b"\n");
        assert_eq!((consumed, line), (1, Some(Ok(&b"NOOP"[..]))));
    }

    #[test]
    fn overlong_line_reported_once_then_recovers() {
        assert_eq!(
            frame_whole(4, b"abcd\r\nabcde\r\nxy\n"),
            vec![ok(b"abcd"), Err(FrameError::LineTooLong), ok(b"xy")]
        );
        let long = [b'a'; 10_000];
        let mut framer = LineFramer::new(8);
        let (consumed, line) = framer.decode(&long);
        assert_eq!((consumed, line), (10_000, None));
        assert_eq!(framer.buffered_len(), 0);
        assert!(framer.line.capacity() <= 16);
        let (consumed, line) = framer.decode(b"aa\r\nok\r\n");
        assert_eq!((consumed, line), (4, Some(Err(FrameError::LineTooLong))));
        let (consumed, line) = framer.decode(b"ok\r\n");
        assert_eq!((consumed, line), (4, Some(Ok(&b"ok"[..]))));
    }

    #[test]
    fn exact_max_with_crlf_fits() {
        assert_eq!(frame_whole(3, b"abc\r\n"), vec![ok(b"abc")]);
        assert_eq!(frame_whole(3, b"ab\r\r\n"), vec![ok(b"ab\r")]);
        assert_eq!(
            frame_whole(3, b"abc\r\r\n"),
            vec![Err(FrameError::LineTooLong)]
        );
        assert_eq!(
            frame_whole(0, b"\r\na\n"),
            vec![ok(b""), Err(FrameError::LineTooLong)]
        );
    }

    /// An independent whole-input model of the framer: strip Telnet, split at LF, drop one CR, check the length.
    fn oracle(input: &[u8], max: usize) -> Frames {
        let mut data: Vec<Option<u8>> = Vec::new(); // `None` marks a line end
        let mut i = 0;
        while let Some(&b) = input.get(i) {
            match (b, input.get(i + 1)) {
                (IAC, Some(&IAC)) => {
                    data.push(Some(IAC));
                    i += 2;
                }
                (IAC, Some(240..=250)) => i += 2,
                (IAC, Some(251..=254)) => i += 3,
                (IAC, _) => i += 1,
                (b'\n', _) => {
                    data.push(None);
                    i += 1;
                }
                (b, _) => {
                    data.push(Some(b));
                    i += 1;
                }
            }
        }
        let mut frames = Vec::new();
        let mut line = Vec::new();
        for item in data {
            match item {
                Some(b) => line.push(b),
                None => {
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    frames.push(if line.len() > max {
                        Err(FrameError::LineTooLong)
                    } else {
                        Ok(line.clone())
                    });
                    line.clear();
                }
            }
        }
        frames
    }

    /// Bytes drawn mostly from the interesting ones: line ends, IAC and Telnet commands.
    fn arb_stream() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            4 => prop::sample::select(vec![b'a', b'B', b' ', b'\r', b'\n', 0xff, 0xf4, 0xf2, 0xfb, 0xfd, 0x01]),
            1 => any::<u8>(),
        ];
        let piece = prop_oneof![
            4 => prop::collection::vec(byte, 0..24),
            1 => (1usize..200).prop_map(|n| vec![b'x'; n]),
        ];
        prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn chunking_invariance(input in arb_stream(), max in 0usize..40, cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..10)) {
            let (whole, whole_buffered) = frame_chunks(max, [&input[..]]);
            let (bytewise, bytewise_buffered) = frame_chunks(max, input.chunks(1));
            let mut points: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
            points.push(0);
            points.push(input.len());
            points.sort_unstable();
            let pieces: Vec<&[u8]> = points.windows(2).map(|w| &input[w[0]..w[1]]).collect();
            let (split, split_buffered) = frame_chunks(max, pieces);
            prop_assert_eq!(&whole, &oracle(&input, max));
            prop_assert_eq!(&whole, &bytewise);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole_buffered, bytewise_buffered);
            prop_assert_eq!(whole_buffered, split_buffered);
            // Every input LF outside a Telnet option ends a line, so there are at most as many lines as LFs.
            prop_assert!(whole.len() <= input.iter().filter(|&&b| b == b'\n').count());
            for frame in whole.iter().flatten() {
                prop_assert!(frame.len() <= max);
                prop_assert!(!frame.contains(&b'\n'));
            }
        }
    }
}
