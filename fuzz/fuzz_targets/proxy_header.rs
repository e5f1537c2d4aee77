#![no_main]
//! The PROXY protocol header parser sees the first bytes of a connection from a trusted load balancer. Every
//! prefix of the input must agree with the whole: a prefix of a complete header is incomplete (never invalid,
//! never a different header), a complete header never claims bytes it was not given, and version 2's announced
//! total is exactly what it then reads.
use ftps_proto::codec::{parse_proxy_header, ProxyParse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = parse_proxy_header(data);
    match whole {
        ProxyParse::Complete { len, .. } => {
            assert!(len <= data.len());
            // What follows the header does not change it.
            assert_eq!(parse_proxy_header(&data[..len]), whole);
            for cut in 0..len {
                let prefix = parse_proxy_header(&data[..cut]);
                assert!(
                    matches!(prefix, ProxyParse::Incomplete { total } if total.is_none_or(|t| t == len)),
                    "prefix {cut} of a {len}-byte header: {prefix:?}"
                );
            }
        }
        ProxyParse::Incomplete { total: Some(total) } => assert!(total > data.len()),
        ProxyParse::Incomplete { total: None } | ProxyParse::Invalid(_) => {}
    }
});
