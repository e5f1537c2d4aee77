//! TLS towards a server whose certificate is deliberately not verified.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// A certificate verifier that accepts any chain for any name, while still checking the handshake
/// signatures against the presented key (so the peer does hold the key of the certificate it sent).
///
/// **It gives up authentication of the server.** Two uses are legitimate: a server in the site-to-site
/// TLS client role ([`site_to_site_client_config`]), and a user who opts out explicitly (the blocking
/// client's `ClientConfig::danger_accept_invalid_certs`, `ftps --insecure`) to reach a test server.
#[derive(Debug)]
pub struct AcceptAnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyServerCert {
    /// Checks handshake signatures with `provider`'s algorithms.
    pub fn new(provider: &CryptoProvider) -> Self {
        Self {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The TLS client config for site-to-site (FXP) data connections, on which a server is the TLS *client*
/// after `SSCN ON` or on a `CPSV` connection ([`crate::server::SessionConfig::site_to_site_tls`]), with
/// the given versions (the frontends pass TLS 1.3 and 1.2; rustls has nothing older).
///
/// **It does not verify the other server's certificate**, by design and for this use only: the peer is
/// another FTP server known only by the address a client gave (no host name to check, and FTP servers
/// rarely hold publicly trusted certificates), which is what FileZilla Server, glftpd and DrFTPD do too.
/// The transfer's trust comes from the two control connections, each authenticated by the client that
/// arranged the copy; the data connection's TLS keeps the bytes private on the wire. No session is
/// resumed towards the other server (each data connection is a full handshake), and no client
/// certificate is presented.
pub fn site_to_site_client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(super::provider());
    let verifier = Arc::new(AcceptAnyServerCert::new(&provider));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // Each data connection stands alone: nothing to resume between different peer servers.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
}
