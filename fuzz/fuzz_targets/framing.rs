//! Feeds bytes through a `LineFramer` whole and at split points derived from the data: both must yield the
//! same lines, no line may exceed the limit, and every line must survive `parse_command`.
#![no_main]
use ftps_proto::codec::{parse_command, FrameError, LineFramer};
use libfuzzer_sys::fuzz_target;

/// Frames `chunks` in order and returns every line (or error).
fn frame<'a>(
    max: usize,
    chunks: impl Iterator<Item = &'a [u8]>,
) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut framer = LineFramer::new(max);
    let mut frames = Vec::new();
    for mut chunk in chunks {
        while !chunk.is_empty() {
            let (consumed, frame) = framer.decode(chunk);
            assert!(consumed > 0 && consumed <= chunk.len());
            if let Some(frame) = frame {
                if let Ok(line) = frame {
                    assert!(line.len() <= max);
                    let _ = parse_command(line);
                }
                frames.push(frame.map(<[u8]>::to_vec));
            }
            assert!(framer.buffered_len() <= max + 1);
            chunk = &chunk[consumed..];
        }
    }
    frames
}

fuzz_target!(|data: &[u8]| {
    // The first two bytes choose the line limit and the chunk size pattern; the rest is the stream.
    let (control, stream) = data.split_at(data.len().min(2));
    let max = usize::from(control.first().copied().unwrap_or(0)) + 1;
    let step = usize::from(control.get(1).copied().unwrap_or(1) % 16) + 1;
    let whole = frame(max, std::iter::once(stream));
    // Chunk lengths cycle through 1..=step, so splits land inside CRLF and IAC sequences alike.
    let mut chunks = Vec::new();
    let mut rest = stream;
    let mut len = 1;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(len.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
        len = len % step + 1;
    }
    assert_eq!(frame(max, chunks.into_iter()), whole);
});
