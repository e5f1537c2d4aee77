//! TLS record framing (RFC 8446 section 5.1: a 5-byte header, then the length it names), for the moments a
//! session must hand rustls exactly one record: around `CCC` (RFC 4217 section 12.3), where the bytes after the
//! peer's close_notify are plaintext and must not be swallowed by TLS.

/// The first TLS record of `input` (5-byte header, RFC 8446 section 5.1), or nothing while it is incomplete.
pub(crate) fn first_tls_record(input: &[u8]) -> &[u8] {
    let len = match input.get(3..5) {
        Some(&[hi, lo]) => 5 + usize::from(u16::from_be_bytes([hi, lo])),
        _ => return &[],
    };
    input.get(..len).unwrap_or(&[])
}

/// Whether `byte`, the first a peer sent, starts a TLS handshake or alert record (content types 22 and 21, RFC
/// 8446 section 5.1), as a TLS server's answer to a ClientHello does.
pub(crate) fn starts_handshake_or_alert(byte: u8) -> bool {
    matches!(byte, 21 | 22)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_record_is_cut_out_whole() {
        // A 3-byte alert record, then plaintext.
        let stream = b"\x15\x03\x03\x00\x03abc221 bye\r\n";
        assert_eq!(first_tls_record(stream), b"\x15\x03\x03\x00\x03abc");
        assert_eq!(first_tls_record(&stream[..6]), b"");
    }

    #[test]
    fn a_tls_answer_is_told_from_an_ftp_greeting() {
        assert!(starts_handshake_or_alert(0x16) && starts_handshake_or_alert(0x15));
        assert!(!starts_handshake_or_alert(b'2') && !starts_handshake_or_alert(0x17));
    }
}
