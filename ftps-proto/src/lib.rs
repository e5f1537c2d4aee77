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
//! - [`ascii`]: the `TYPE A` line-end converters the data channel uses.
//!
//! # The drive loop
//!
//! Every state machine here has getters, `handle_*` inputs (`handle_input(now, bytes) -> consumed`,
//! `handle_eof(now)`, `handle_timeout(now)`), mutators (`complete`, `submit`, `write`...) and `#[must_use]`
//! `poll_*` outputs. A frontend keeps one contract:
//!
//! 1. After **every** input or mutation, drain the outputs until there are none: send what `poll_transmit`
//!    gives, start every request, handle every event, and note `poll_timeout()`. A server session gives all
//!    of them through one call, [`server::ServerSession::poll_output`], looped until it says
//!    [`server::Output::Wait`]: a loop over it cannot forget one.
//! 2. Then wait for the earliest of: socket readiness, a finished request, or `poll_timeout()`; feed it in.
//! 3. Time enters only as `now: Instant` arguments. `handle_timeout` clears or reschedules every expired timer,
//!    so the same deadline is never returned twice.
//!
//! # Writing a server frontend
//!
//! A frontend owns sockets (the control connection, passive listeners, data connections), one timer per
//! session, tasks, and the storage and user backends. It owns nothing else: no reply code, command verb or
//! protocol rule, since every one of them is in this crate (the data-peer check of RFC 2577, `TYPE A`, `STOU`
//! names, `LIST file`, aborts, when the preliminary reply may go out). `ftps-server-smol`'s
//! `examples/tokio_server.rs` follows this text in under 350 lines.
//!
//! **The control connection**, one [`server::ServerSession`] per accepted socket (set `TCP_NODELAY`: a reply
//! must not wait for the peer's delayed ACK):
//!
//! ```text
//! loop {
//!     offer held-back input again: handle_input(now, unread) -> taken   (it takes less while its queue is full)
//!     loop over poll_output(&mut buf):
//!         Transmit(n)               -> write buf to the control socket
//!         Event(event)              -> log it (commands, replies, logins, one record per transfer)
//!         Work(Request)             -> start it, answer exactly once with complete(now, id, ..)
//!         Work(Notice)              -> act on it, never answer it
//!         Wait(deadline)            -> leave the loop
//!     is_closed()                   -> close the socket, stop the session's tasks
//!     wait for the earliest of:
//!         control socket readable   -> handle_input(now, bytes), or handle_eof(now)
//!         a request's work is done  -> complete(now, id, outcome)
//!         a channel's DataReady     -> data_ready(now, ready)
//!         the deadline              -> handle_timeout(now)
//! }
//! ```
//!
//! The requests ([`server::RequestKind`]): `Authenticate` (check the password, answer `LoggedIn`/`Denied`),
//! storage work (`Metadata`, `List`, `OpenRead`, `OpenWrite`, `MakeDir`, `Rename`...; keep an opened file under
//! its request id), `OpenPassive` (bind a listener, answer its address), `AcceptData`/`ConnectData` (accept or
//! connect one data connection, answer `DataConnected { peer }`: the engine checks the peer and asks again when
//! it refuses it), and `DriveData` (below). An FTP error is an answer (`Outcome::Failed` with what happened),
//! never an error of the frontend's. The notices ([`server::Notice`]): `ReleaseData` (close the listener and
//! any data connection without a transfer), `ReleaseFile` (drop an opened file; abort an upload),
//! `RunTransfer` (hand the file to the data channel it names), `AbortTransfer` (stop that data channel's task).
//!
//! **A data connection**, one task per `DriveData { channel }` with the socket just reported (`TCP_NODELAY`
//! too). The [`data::DataChannel`] runs its TLS handshake at once, before the transfer command:
//!
//! ```text
//! loop {
//!     payload:  sending:   channel.write(file bytes) while can_write(); finish(now) at the end of the file
//!               receiving: read_chunk() -> write it to the upload, consume(n)
//!     loop over poll_output(&mut buf):
//!         Transmit(n)               -> write buf to the data socket
//!         ShutdownWrite             -> shut down the socket's write half (in the clear the FIN ends the file)
//!         TransferReady(ready)      -> hand `ready` to the control loop, which calls data_ready(now, ready)
//!         Event(Finished(report))   -> commit an upload only if report.clean_close, else abort it;
//!                                      answer DriveData with Outcome::TransferFinished(report)
//!         Event(Failed(error))      -> answer DriveData with Outcome::Failed(Failure::from(&error))
//!         Event(_)                  -> log it
//!         Wait(deadline)            -> leave the loop
//!     wait for the earliest of:
//!         socket readable           -> handle_input(now, bytes) (keep what it did not take), or handle_eof(now)
//!         RunTransfer's file        -> start_transfer(now, plan.flow(), plan.data_type), then move payload
//!         poll_timeout()            -> handle_timeout(now); a silent socket fails the transfer (426)
//! }
//! ```
//!
//! The channel converts `TYPE A`, drops what a client writes during a download, sends and expects
//! close_notify, enforces the resumption policy, says when the transfer may be announced (`TransferReady`, a
//! [`data::DataReady`] that already names its request) and when the write half must close (`ShutdownWrite`);
//! [`data::DataOutput`] is exhaustive, so a frontend that forgets either does not compile. The frontend only
//! moves bytes and answers.
//!
//! A plain-FTP server session driven entirely in memory:
//!
//! ```
//! use std::time::Instant;
//! use ftps_proto::server::{Output, ServerSession, SessionConfig};
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
//! // Drain everything, one output at a time.
//! wire.clear();
//! loop {
//!     match session.poll_output(&mut wire) {
//!         Output::Transmit(_) => {}     // the bytes are in `wire`: send them
//!         Output::Event(_event) => {}   // log it
//!         Output::Work(_work) => {}     // answer a Request with complete(); act on a Notice
//!         Output::Wait(_deadline) => break,
//!     }
//! }
//! assert_eq!(wire, b"200 NOOP ok\r\n221 Goodbye\r\n");
//! assert!(session.is_closed());
//! ```
//!
//! The module docs of [`server`], [`client`] and [`data`] describe each machine's requests, events and orderings.

pub mod ascii;
pub mod client;
pub mod codec;
mod control_channel;
pub mod data;
pub mod path;
mod request_id;
pub mod server;
mod tls;

pub use request_id::ReqId;
pub use tls::provider as tls_provider;
pub use tls::AcceptAnyServerCert;
pub use tls::TlsInfo;

#[cfg(test)]
mod pair;
#[cfg(test)]
mod test_support;
