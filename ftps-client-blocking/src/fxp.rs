//! Site-to-site transfers (FXP): one [`Client`] has two servers copy a file between themselves, the bytes going
//! from server to server without passing through this machine.
//!
//! Every protocol decision (which server listens, which is the TLS client, the commands and the address given
//! to the other server) is the engine's [`SiteToSitePlan`]; this module runs its operations on the right
//! control connection and keeps both transfer commands in flight at once.
//!
//! **Protection.** [`SiteToSiteProtection`] says what to do when neither server offers a way to make one of them
//! the TLS client (`SSCN` or `CPSV` in its `FEAT`): fail (the default), or fall back to `PROT C` on both when the
//! caller explicitly allows clear data.
//!
//! **Server policy.** A server that follows RFC 2577 section 3 refuses `PORT` to an address other than its
//! client's, and (ours) passive connections from one: both servers must allow site-to-site transfers for the
//! logged-in user (`allow_site_to_site` / the per-user `site_to_site` in `ftps-server`).

use std::thread;

use ftps_proto::client::{bytes_in_reply, OpError, Output, SiteToSitePlan};
use ftps_proto::codec::Reply;

pub use ftps_proto::client::{Side, SiteToSiteOptions, SiteToSiteProtection, TlsClientMethod};

use crate::client::Client;
use crate::error::{Error, Result};

/// What a site-to-site transfer did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SiteToSiteReport {
    /// Whether the data connection was protected (`PROT P`).
    pub private: bool,
    /// The server that acted as TLS client and how, under `PROT P`.
    pub tls_client: Option<(Side, TlsClientMethod)>,
    /// The server that listened (`PASV`/`CPSV`); the other one connected (`PORT`).
    pub passive: Side,
    /// The source's final reply to `RETR`.
    pub source_reply: Reply,
    /// The destination's final reply to `STOR`.
    pub destination_reply: Reply,
    /// The source file's size before the copy (`SIZE`), when the source offers it.
    pub source_size: Option<u64>,
    /// The byte count in the source's final reply text (`... (1234 bytes)`), when it gives one.
    pub source_bytes: Option<u64>,
    /// The destination file's size afterwards (`SIZE`), when the destination offers it.
    pub destination_size: Option<u64>,
}

impl Client {
    /// Copies `source_path` on this client's server to `destination_path` on `destination`'s server, server to
    /// server (FXP); see the [module docs](crate::fxp). Both clients must be logged in.
    ///
    /// # Errors
    /// [`Error::Protocol`] when `protection` cannot be met (no `SSCN`/`CPSV` on either server, or a plain
    /// control connection under `RequirePrivate`); [`Error::Refused`] when a server refuses a step (a `504` to
    /// `PORT` usually means it does not allow site-to-site transfers); any other error of either session.
    pub fn site_to_site(
        &mut self,
        source_path: &str,
        destination: &mut Client,
        destination_path: &str,
        protection: SiteToSiteProtection,
    ) -> Result<SiteToSiteReport> {
        self.site_to_site_with(
            source_path,
            destination,
            destination_path,
            SiteToSiteOptions::new(protection),
        )
    }

    /// [`Client::site_to_site`] with the TLS client role's method or side chosen by the caller.
    ///
    /// # Errors
    /// As [`Client::site_to_site`]; a forced method or side that the server does not offer counts as "not
    /// possible" for the protection.
    pub fn site_to_site_with(
        &mut self,
        source_path: &str,
        destination: &mut Client,
        destination_path: &str,
        options: SiteToSiteOptions,
    ) -> Result<SiteToSiteReport> {
        let plan =
            SiteToSitePlan::new(&self.control.session, &destination.control.session, options)
                .map_err(|e| Error::Protocol(e.to_string()))?;
        let source_size = match plan.source_size(source_path) {
            Some(op) => {
                let result = self.run_op(op)?;
                SiteToSitePlan::source_size_result(result).map_err(Error::from)?
            }
            None => None,
        };
        let (source_reply, destination_reply) =
            copy(self, source_path, destination, destination_path, &plan)?;
        let destination_size = match plan.destination_size(destination_path) {
            Some(op) => match destination.run(op) {
                Ok(Output::Size(size)) => Some(size),
                _ => None,
            },
            None => None,
        };
        Ok(SiteToSiteReport {
            private: plan.is_private(),
            tls_client: plan.tls_client(),
            passive: plan.passive_side(),
            source_size,
            source_bytes: bytes_in_reply(&source_reply),
            source_reply,
            destination_reply,
            destination_size,
        })
    }
}

/// The two control connections of a copy, addressed by side.
struct Pair<'a> {
    source: &'a mut Client,
    destination: &'a mut Client,
}

impl Pair<'_> {
    fn client(&mut self, side: Side) -> &mut Client {
        match side {
            Side::Source => self.source,
            Side::Destination => self.destination,
        }
    }
}

/// Runs the plan's operations, each on the server it names; returns the final replies of (source, destination).
fn copy(
    source: &mut Client,
    source_path: &str,
    destination: &mut Client,
    destination_path: &str,
    plan: &SiteToSitePlan,
) -> Result<(Reply, Reply)> {
    let mut pair = Pair {
        source,
        destination,
    };
    let result = (|| {
        for (side, op) in plan.setup() {
            pair.client(side).run(op)?;
        }
        let passive = pair.client(plan.passive_side());
        let output = passive.run(plan.passive())?;
        let port = plan.port(output, &passive.control.session)?;
        pair.client(plan.passive_side().other())
            .run(port)
            .map_err(|e| match e {
                Error::Refused { code, text } => Error::Refused {
                    code,
                    text: format!(
                        "{text} (the other server's address was refused: does this server allow \
                         site-to-site transfers?)"
                    ),
                },
                e => e,
            })?;
        let (retr, stor) = plan.transfers(source_path, destination_path);
        // Both commands must be on the wire before either server can finish: one thread per control
        // connection. Each side's wait is bounded by its server's data-connection timeout and reply timeout.
        let (source_result, destination_result) = thread::scope(|scope| {
            let destination = &mut *pair.destination;
            let destination_thread = scope.spawn(move || destination.run(stor));
            let source_result = pair.source.run(retr);
            let destination_result = destination_thread
                .join()
                .unwrap_or_else(|_| Err(Error::Protocol("transfer thread panicked".to_string())));
            (source_result, destination_result)
        });
        Ok((
            final_reply(source_result)?,
            final_reply(destination_result)?,
        ))
    })();
    if let Some((side, op)) = plan.teardown() {
        // Back to the normal role for the session's own transfers; this does not undo a finished copy.
        let _ = pair.client(side).run(op);
    }
    result
}

/// The final reply of one side's transfer.
fn final_reply(result: Result<Output>) -> Result<Reply> {
    match result? {
        Output::Done(reply) => Ok(reply),
        other => Err(Error::from(OpError::MalformedReply(format!(
            "unexpected answer {other:?}"
        )))),
    }
}
