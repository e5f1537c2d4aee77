#![no_main]
//! The S3 backend's own parsers of `ListObjectsV2` pages (every folder listing) and `ListObjectVersions` pages
//! (the `/@at/` views on a versioned bucket): whatever the S3 server sends, each parse ends in a page or an error,
//! never a panic, a hang or an allocation beyond the input's size.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(xml) = std::str::from_utf8(data) {
        for entries in ftps_server_smol::storage::s3::fuzz_listing_pages(xml).into_iter().flatten() {
            // Every entry needs at least an element's worth of text.
            assert!(entries <= xml.len());
        }
    }
});
