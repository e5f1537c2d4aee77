//! The byte format shared by the session and data-channel targets: a text-friendly script of operations.
//!
//! Why not `Vec<Op>` straight from `arbitrary`: its encoding (4-byte enum tags, lengths taken from the end of the
//! input) turns a plain FTP transcript into noise, so realistic seed files would be useless. Here a transcript
//! *is* a valid script: bytes below `0xF0` are peer input, cut into chunks at every `\n` and at every control
//! byte, and bytes `0xF0..=0xFF` are operations. The structured parts of an operation (which request to answer,
//! with what) are decoded by `#[derive(Arbitrary)]` types from a fixed-size parameter block, so they never eat
//! into the rest of the script.

/// Ends the current text chunk (an arbitrary split point); does nothing else.
pub const SPLIT: u8 = 0xF3;
/// The peer's EOF.
pub const EOF: u8 = 0xF0;
/// Time passes by the next two bytes (little-endian milliseconds), then `handle_timeout(now)`.
pub const ADVANCE: u8 = 0xF1;
/// A target-specific action; its parameters are the next [`PARAMS`] bytes.
pub const ACTION: u8 = 0xF2;
/// Raw input: the next byte is a length `n`, then `n` bytes fed as they are (any value, e.g. IAC `0xFF`, TLS).
pub const RAW: u8 = 0xF4;
/// Jump to the engine's own deadline (`poll_timeout()`), then `handle_timeout(now)`.
pub const DEADLINE: u8 = 0xF5;

/// Size of an [`Op::Action`] parameter block (zero-padded when the input ends early).
pub const PARAMS: usize = 12;

/// One scripted step.
#[derive(Debug)]
pub enum Op<'a> {
    /// Bytes from the peer, to offer whole (the engine may take fewer).
    Input(&'a [u8]),
    /// The peer closed its sending side.
    Eof,
    /// Advance the clock by this many milliseconds and handle timers.
    Advance(u16),
    /// Advance the clock to the engine's next deadline and handle timers.
    Deadline,
    /// A target-specific action with its parameter block.
    Action([u8; PARAMS]),
}

/// Decodes `data` into its operations, in order; every byte sequence is a valid script.
pub struct Script<'a> {
    rest: &'a [u8],
}

impl<'a> Script<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }
}

impl<'a> Iterator for Script<'a> {
    type Item = Op<'a>;

    fn next(&mut self) -> Option<Op<'a>> {
        loop {
            let &first = self.rest.first()?;
            if first < 0xF0 {
                let end = self
                    .rest
                    .iter()
                    .position(|&b| b == b'\n' || b >= 0xF0)
                    .map_or(self.rest.len(), |at| {
                        at + usize::from(self.rest[at] == b'\n')
                    });
                return Some(Op::Input(self.take(end)));
            }
            self.take(1);
            return Some(match first {
                EOF => Op::Eof,
                ADVANCE => {
                    let b = self.take(2);
                    let lo = b.first().copied().unwrap_or(0);
                    let hi = b.get(1).copied().unwrap_or(0);
                    Op::Advance(u16::from_le_bytes([lo, hi]))
                }
                ACTION => {
                    let mut params = [0; PARAMS];
                    let b = self.take(PARAMS);
                    params[..b.len()].copy_from_slice(b);
                    Op::Action(params)
                }
                RAW => {
                    let n = self.take(1).first().copied().unwrap_or(0);
                    Op::Input(self.take(usize::from(n)))
                }
                DEADLINE => Op::Deadline,
                // SPLIT and the unassigned bytes only end the text chunk.
                _ => continue,
            });
        }
    }
}

/// Whether `FUZZ_TRACE` is set: the targets then print what they send and receive, for checking seed files by
/// hand (`FUZZ_TRACE=1 cargo fuzz run TARGET corpus/TARGET/FILE`).
pub fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}
