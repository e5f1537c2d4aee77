#![no_main]
//! Feeds the data to a `ReplyParser` in chunks whose sizes come from the data itself, checks that chunking does not
//! change the replies, and runs every reply through the structured helpers.
use ftps_proto::codec::{Reply, ReplyError, ReplyLimits, ReplyParser};
use libfuzzer_sys::fuzz_target;

fn decode_all(parser: &mut ReplyParser, chunks: &[&[u8]]) -> Vec<Result<Reply, ReplyError>> {
    let mut out = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
        loop {
            let (consumed, result) = parser.decode(rest);
            assert!(consumed <= rest.len());
            rest = &rest[consumed..];
            match result {
                Some(Err(e)) => {
                    out.push(Err(e));
                    return out;
                }
                Some(Ok(reply)) => out.push(Ok(reply)),
                None => {
                    assert!(rest.is_empty());
                    break;
                }
            }
            if rest.is_empty() {
                break;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the limits and a chunk size; the rest is the stream.
    let Some((&control, stream)) = data.split_first() else {
        return;
    };
    let mut limits = ReplyLimits::default();
    if control & 1 != 0 {
        limits.max_line_len = 16;
        limits.max_lines = 4;
        limits.max_reply_len = 64;
    }
    let step = usize::from(control >> 1).max(1);

    let whole = decode_all(&mut ReplyParser::with_limits(limits), &[stream]);
    let chunks: Vec<&[u8]> = stream.chunks(step).collect();
    let split = decode_all(&mut ReplyParser::with_limits(limits), &chunks);
    assert_eq!(whole, split);

    for reply in whole.iter().flatten() {
        assert!(!reply.lines.is_empty());
        let _ = reply.parse_pasv();
        let _ = reply.parse_epsv();
        let _ = reply.parse_pathname();
        let _ = reply.parse_file_size();
        let _ = reply.parse_modification_time();
        if let Some(features) = reply.parse_feat() {
            let _ = features.has("MLST");
            let _ = features.mlst_facts().count();
            // FEAT lists re-format and re-parse to the same features.
            let again = Reply::feat(&features).parse_feat();
            assert_eq!(again.as_ref(), Some(&features));
        }
        // Encoding a parsed reply and parsing it again gives a reply with the same code.
        let wire = reply.to_bytes();
        // Escaping and lossy decoding (one byte to three) can lengthen lines: allow for it.
        let mut roomy = limits;
        roomy.max_line_len = limits.max_line_len * 3 + 8;
        roomy.max_reply_len = limits.max_reply_len * 4;
        let reparsed = decode_all(&mut ReplyParser::with_limits(roomy), &[&wire]);
        assert!(matches!(reparsed.as_slice(), [Ok(r)] if r.code == reply.code));
    }
});
