//! `TYPE A` line-end conversion (RFC 959 section 3.1.1.1): the wire uses CRLF, the local files LF.
//!
//! Both converters are streaming: they keep the one byte of state a line end split across two chunks needs, and
//! append to a caller-owned buffer so a transfer reuses one allocation. A [`DataChannel`](crate::data::DataChannel)
//! of [`DataType::Ascii`](crate::data::DataType::Ascii) runs them itself; frontends need not.

/// Local (LF) to network (CRLF): every LF not already preceded by CR becomes CRLF, so files that already use
/// CRLF are not doubled to CR CR LF.
#[derive(Debug, Default, Clone)]
pub struct ToNetwork {
    last_was_cr: bool,
}

impl ToNetwork {
    /// A converter at the start of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the network form of `input` to `out`.
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 16);
        for &byte in input {
            if byte == b'\n' && !self.last_was_cr {
                out.push(b'\r');
            }
            out.push(byte);
            self.last_was_cr = byte == b'\r';
        }
    }
}

/// Network (CRLF) to local (LF): each CRLF becomes LF; a CR not followed by LF is kept.
#[derive(Debug, Default, Clone)]
pub struct FromNetwork {
    pending_cr: bool,
}

impl FromNetwork {
    /// A converter at the start of a file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the local form of `input` to `out`. A trailing CR is held until the next call or [`Self::finish`].
    pub fn convert(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len());
        for &byte in input {
            if self.pending_cr {
                self.pending_cr = false;
                if byte != b'\n' {
                    out.push(b'\r');
                }
            }
            if byte == b'\r' {
                self.pending_cr = true;
            } else {
                out.push(byte);
            }
        }
    }

    /// Whether a CR is held, waiting to see whether an LF follows.
    pub fn holds_cr(&self) -> bool {
        self.pending_cr
    }

    /// Appends what is still held (a final lone CR) at the end of the stream.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.pending_cr) {
            out.push(b'\r');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn to_network(chunks: &[&[u8]]) -> Vec<u8> {
        let mut c = ToNetwork::new();
        let mut out = Vec::new();
        for chunk in chunks {
            c.convert(chunk, &mut out);
        }
        out
    }

    fn from_network(chunks: &[&[u8]]) -> Vec<u8> {
        let mut c = FromNetwork::new();
        let mut out = Vec::new();
        for chunk in chunks {
            c.convert(chunk, &mut out);
        }
        c.finish(&mut out);
        out
    }

    #[test]
    fn lf_becomes_crlf_and_crlf_stays() {
        assert_eq!(to_network(&[b"a\nb\r\nc\n"]), b"a\r\nb\r\nc\r\n");
        assert_eq!(to_network(&[b"a\r", b"\nb\n"]), b"a\r\nb\r\n");
    }

    #[test]
    fn crlf_becomes_lf_across_chunks_and_lone_cr_is_kept() {
        assert_eq!(from_network(&[b"a\r\nb\r", b"\nc\rd\r"]), b"a\nb\nc\rd\r");
    }

    proptest! {
        #[test]
        fn network_round_trip_of_lf_text(text in "[a-z\n]{0,200}", split in 0usize..200) {
            let bytes = text.as_bytes();
            let at = split.min(bytes.len());
            let wire = to_network(&[&bytes[..at], &bytes[at..]]);
            prop_assert!(!wire.windows(2).any(|w| w[0] != b'\r' && w[1] == b'\n'));
            let wire_at = split.min(wire.len());
            prop_assert_eq!(from_network(&[&wire[..wire_at], &wire[wire_at..]]), bytes);
        }
    }
}
