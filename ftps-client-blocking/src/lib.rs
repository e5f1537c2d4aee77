//! Blocking FTPS client on `std::net`, driving the sans-IO [`ftps_proto::client::ClientSession`].
//!
//! Thin by design (DESIGN.md "Frontends"): this crate owns sockets, timeouts and buffers; every reply code,
//! command verb and listing format lives in the engine.
//!
//! - [`Client`]: connect (explicit/implicit FTPS or plain), log in, typed operations, streaming transfers;
//! - [`ClientConfig`]: trust (system roots, CA files, or the loud [`ClientConfig::danger_accept_invalid_certs`]),
//!   TLS versions, data connection mode and a timeout per phase;
//! - [`RetrGuard`] / [`StorGuard`]: `Read` / `Write` transfer objects with an explicit `finish()`;
//! - [`SessionPool`]: several sessions working through a queue of files, or one large file in segments
//!   (`--parallel` in the CLI);
//! - [`Client::site_to_site`]: server-to-server copies (FXP), `PROT P` via `SSCN`/`CPSV` (see [`fxp`]);
//! - [`Error`]: one typed error.
//!
//! Certificates are verified by default; the crypto provider is rustls' `ring`.
//!
//! The `ftps` command-line client (`src/bin/ftps/`) is a user of this library like any other: its argument
//! parsing, mirror planning and progress bar are private to the binary.

mod client;
mod config;
mod data_conn;
mod error;
pub mod fxp;
pub mod parallel;
mod read_buffer;
pub mod transfer;

pub mod url;

pub use client::Client;
pub use config::{ClientConfig, TlsVersions};
pub use error::{Error, Result};
pub use ftps_proto::client::{Credentials, DataConnectionMode, ServerFeatures, Trace};
pub use ftps_proto::codec::{Entry, EntryKind, Timeval};
pub use fxp::{SiteToSiteOptions, SiteToSiteProtection, SiteToSiteReport};
pub use parallel::{SegmentedReport, SessionPool};
pub use transfer::{RetrGuard, StorGuard, TransferReport};
pub use url::{FtpUrl, Scheme, UrlError};
