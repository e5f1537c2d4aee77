//! The crypto provider both frontends build their TLS configs from.

/// The crypto provider both frontends build their TLS configs from: rustls' `ring` provider with the AES-128-GCM
/// suites ahead of AES-256-GCM.
///
/// rustls lists AES-256-GCM first. AES-128-GCM is as strong as anything a peer could attack today, takes four
/// fewer AES rounds per block, and its TLS 1.3 suite hashes with SHA-256, which x86 CPUs run in hardware (SHA-NI)
/// while SHA-384 runs in software: that is most of the cost of a resumed data-channel handshake's key schedule.
/// Go and BoringSSL order them the same way. The set of suites is unchanged, only the preference.
///
/// ```
/// let provider = ftps_proto::tls_provider();
/// assert_eq!(
///     provider.cipher_suites[0].suite(),
///     rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
/// );
/// ```
#[must_use]
pub fn provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    // A stable sort keeps rustls' order otherwise (TLS 1.3 before 1.2, ECDSA before RSA, ChaCha20 last).
    provider.cipher_suites.sort_by_key(|suite| {
        let tls12 = matches!(suite, rustls::SupportedCipherSuite::Tls12(_));
        (tls12, !is_aes128_gcm(suite.suite()))
    });
    provider
}

fn is_aes128_gcm(suite: rustls::CipherSuite) -> bool {
    use rustls::CipherSuite as Cs;
    matches!(
        suite,
        Cs::TLS13_AES_128_GCM_SHA256
            | Cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | Cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_prefers_aes128_gcm_and_keeps_every_suite() {
        use rustls::CipherSuite as Cs;
        let ours: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let ring: Vec<_> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut sorted = (ours.clone(), ring);
        sorted.0.sort_by_key(|s| u16::from(*s));
        sorted.1.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted.0, sorted.1, "same suites, only reordered");
        let tls13: Vec<_> = ours
            .iter()
            .take_while(|s| format!("{s:?}").starts_with("TLS13"))
            .collect();
        assert_eq!(tls13[0], &Cs::TLS13_AES_128_GCM_SHA256);
        assert_eq!(
            tls13.len(),
            3,
            "TLS 1.3 suites stay ahead of TLS 1.2: {ours:?}"
        );
        let tls12 = &ours[tls13.len()..];
        assert_eq!(tls12[0], Cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256);
        assert_eq!(tls12[1], Cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256);
    }
}
