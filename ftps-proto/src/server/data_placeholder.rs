//! Temporary stand-ins for the data-channel branch's types, until it is merged. Deleted at the merge.
#![allow(missing_docs)]

use std::sync::Arc;

/// How a data connection's TLS handshake must relate to the control session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResumptionPolicy {
    #[default]
    Required,
    Preferred,
    Off,
}

/// What a finished data connection reports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataReport {
    pub bytes: u64,
    pub clean_close: bool,
    pub resumed: bool,
    pub tls: Option<crate::TlsInfo>,
}

/// A data channel.
#[derive(Debug)]
pub struct DataChannel {
    pub tls: Option<(Arc<rustls::ServerConfig>, ResumptionPolicy)>,
}

impl DataChannel {
    pub fn plain() -> Self {
        Self { tls: None }
    }
    pub fn server(
        config: Arc<rustls::ServerConfig>,
        policy: ResumptionPolicy,
    ) -> Result<Self, rustls::Error> {
        Ok(Self {
            tls: Some((config, policy)),
        })
    }
}
