//! Blocking FTPS client on `std::net`, driving the sans-IO [`ftps_proto::client::ClientSession`].
//!
//! Thin by design (DESIGN.md "Frontends"): this crate owns sockets, timeouts and buffers; every reply code,
//! command verb and listing format lives in the engine.

mod config;
mod error;

pub use config::{ClientConfig, TlsVersions};
pub use error::{Error, Result};
