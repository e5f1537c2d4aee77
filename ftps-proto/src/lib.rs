//! Sans-IO FTPS protocol engine.
//!
//! Bytes in, bytes and events out: no sockets, threads, clocks, files or async. See the repository's
//! `DESIGN.md` for the drive-loop contract every frontend keeps.

pub mod ascii;
pub mod client;
pub mod codec;
pub mod data;
pub mod path;
pub mod server;
mod tls;

pub use tls::TlsInfo;

#[cfg(test)]
mod pair;
#[cfg(test)]
mod test_support;
