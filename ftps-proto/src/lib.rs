//! A sans-IO FTPS protocol engine.
//!
//! Bytes in, bytes and events out: no sockets, threads, clocks, files or async. The same engine runs under smol
//! (`ftps-server-smol`), blocking `std::net` (`ftps-client-blocking`) and tokio (`ftps-server-smol`'s
//! `tokio_server` example).
//!
//! - [`codec`]: everything that crosses the control channel as typed values (commands, replies, listings).
//! - [`server::ServerSession`]: one server control connection: login, TLS upgrade (`AUTH TLS` or implicit),
//!   `PBSZ`/`PROT`/`CCC`, navigation, data-connection negotiation and transfers. Work that needs the outside
//!   world leaves as a [`server::Request`] with an id and comes back through `complete`.
//! - [`client::ClientSession`]: the client side, with a typed operation queue and an explicit reply model. Data
//!   connections leave it as a [`client::Request`] with an id (connect, listen, drive a channel), answered through
//!   `complete`; the site-to-site plan is [`client::SiteToSitePlan`].
//! - [`data::DataChannel`]: one data connection, owned and `Send`, so a transfer runs on its own task or thread
//!   and bulk bytes never pass through a control session. Its TLS is bound to its control session.
//! - [`ascii`]: `TYPE A` line-end conversion for frontends that move file bytes.
//!
//! # The drive loop
//!
//! Every state machine here has getters, `handle_*` inputs (`handle_input(now, bytes) -> consumed`,
//! `handle_eof(now)`, `handle_timeout(now)`), mutators (`complete`, `submit`, `write`...) and `#[must_use]`
//! `poll_*` outputs. A frontend keeps one contract:
//!
//! 1. After **every** input or mutation, drain every `poll_*` until it is empty: send what `poll_transmit`
//!    gives, start every request, handle every event, and note `poll_timeout()`.
//! 2. Then wait for the earliest of: socket readiness, a finished request, or `poll_timeout()`; feed it in.
//! 3. Time enters only as `now: Instant` arguments. `handle_timeout` clears or reschedules every expired timer,
//!    so the same deadline is never returned twice.
//!
//! A plain-FTP server session driven entirely in memory:
//!
//! ```
//! use std::time::Instant;
//! use ftps_proto::server::{ServerSession, SessionConfig};
//!
//! let config = SessionConfig { require_tls_control: false, require_tls_data: false, ..Default::default() };
//! let now = Instant::now();
//! let mut session = ServerSession::new(
//!     config,
//!     "192.0.2.7:50000".parse().unwrap(), // the client
//!     "192.0.2.1:21".parse().unwrap(),    // our end
//!     now,
//! );
//! let mut wire = Vec::new();
//! let _ = session.poll_transmit(&mut wire); // 220 greeting
//!
//! // Input: bytes as the socket delivered them, in any chunking.
//! let input = b"NOOP\r\nQUIT\r\n";
//! assert_eq!(session.handle_input(now, input), input.len());
//! // Drain everything.
//! wire.clear();
//! let _ = session.poll_transmit(&mut wire);
//! while let Some(_work) = session.poll_work() { /* answer a Request with complete(); act on a Notice */ }
//! while let Some(_event) = session.poll_event() { /* log it */ }
//! assert_eq!(wire, b"200 NOOP ok\r\n221 Goodbye\r\n");
//! assert!(session.is_closed());
//! ```
//!
//! The module docs of [`server`], [`client`] and [`data`] describe each machine's requests, events and orderings.

pub mod ascii;
pub mod client;
pub mod codec;
pub mod data;
pub mod path;
pub mod server;
mod tls;

pub use tls::provider as tls_provider;
pub use tls::TlsInfo;

#[cfg(test)]
mod pair;
#[cfg(test)]
mod test_support;
