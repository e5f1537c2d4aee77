//! Test-only helpers: certificates generated at run time (never committed) and matching rustls configs.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};

/// A self-signed certificate for `localhost`, with configs that trust it.
pub(crate) struct TestPki {
    pub(crate) cert: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TestPki {
    pub(crate) fn new() -> Self {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
        Self {
            cert: ck.cert.der().clone(),
            key_der: ck.key_pair.serialize_der(),
        }
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// A server config offering exactly `versions`.
    pub(crate) fn server_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ServerConfig> {
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], self.key())
            .expect("server cert");
        Arc::new(config)
    }

    /// A client config trusting this certificate, offering exactly `versions`, with its own resumption store.
    pub(crate) fn client_config(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).expect("root");
        let config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// A client config that accepts any server certificate: what a server in the site-to-site TLS client role uses.
pub(crate) fn no_verification_client_config(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    crate::tls::site_to_site_client_config(versions).expect("versions")
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(crate) fn localhost() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("name")
}

pub(crate) const TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
pub(crate) const TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// A simulated control connection after `AUTH TLS`: the server side uses a fresh session-bound clone of `base`,
/// the client side `client` (whose resumption store then holds this session). Returns the server's bound config,
/// which the session's data connections use.
pub(crate) fn control_session(
    base: &Arc<rustls::ServerConfig>,
    client: &Arc<rustls::ClientConfig>,
) -> Arc<rustls::ServerConfig> {
    let bound = crate::tls::session_bound_config(base);
    let mut server = crate::tls::TlsConn::server(bound.clone()).expect("server conn");
    let mut client = crate::tls::TlsConn::client(client.clone(), localhost()).expect("client conn");
    let mut wire = Vec::new();
    // Until quiet: TLS 1.3 tickets follow the handshake and must reach the client's store.
    for _ in 0..16 {
        wire.clear();
        let c = client.write_tls_into(&mut wire);
        assert_eq!(server.read_tls(&wire).expect("server read"), c);
        wire.clear();
        let s = server.write_tls_into(&mut wire);
        assert_eq!(client.read_tls(&wire).expect("client read"), s);
        if c == 0 && s == 0 && !client.is_handshaking() && !server.is_handshaking() {
            return bound;
        }
    }
    panic!("control handshake did not settle");
}
