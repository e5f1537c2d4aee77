//! Site-to-site transfers (FXP): one [`Client`] has two servers copy a file between themselves, the bytes going
//! from server to server without passing through this machine.
//!
//! The client sends `PASV` (or `CPSV`) to one server, gives the address from its 227 reply to the other with
//! `PORT`, then `RETR` on the source and `STOR` on the destination at once, and waits for both final replies.
//!
//! **Protection.** With `PROT P` both servers speak TLS on their data connection, so exactly one of them must be
//! the TLS client: the one told `SSCN ON` (the "TLS for 3rd party transfers" convention of FileZilla Server,
//! glftpd and DrFTPD), or the one that got `CPSV` instead of `PASV`. [`SiteToSiteProtection`] says what to do
//! when neither server offers `SSCN` or `CPSV` in its `FEAT`: fail (the default), or fall back to `PROT C` on
//! both when the caller explicitly allows clear data.
//!
//! **Server policy.** A server that follows RFC 2577 section 3 refuses `PORT` to an address other than its
//! client's, and (ours) passive connections from one: both servers must allow site-to-site transfers for the
//! logged-in user (`allow_site_to_site` / the per-user `site_to_site` in `ftps-server`).

use std::net::{SocketAddr, SocketAddrV4};
use std::thread;

use ftps_proto::client::{Operation, Output, SiteToSiteCommand};
use ftps_proto::codec::Reply;

use crate::client::Client;
use crate::error::{Error, Result};

/// How a site-to-site transfer protects its data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SiteToSiteProtection {
    /// `PROT P` on both servers, one of them the TLS client via `SSCN` (preferred) or `CPSV`; fail with
    /// [`Error::Protocol`] when neither server offers them, or a control connection is not TLS.
    #[default]
    RequirePrivate,
    /// `PROT P` as for [`SiteToSiteProtection::RequirePrivate`] when possible, otherwise `PROT C` on both: the
    /// file crosses the network in the clear. Only when the caller chose it.
    AllowClear,
    /// `PROT C` on both servers.
    Clear,
}

/// Everything [`Client::site_to_site_with`] can be told; `Default` is what [`Client::site_to_site`] does with
/// [`SiteToSiteProtection::RequirePrivate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SiteToSiteOptions {
    /// Data-connection protection.
    pub protection: SiteToSiteProtection,
    /// Use only this way of assigning the TLS client role (when that server offers it); `None` tries `SSCN`,
    /// then `CPSV`.
    pub method: Option<TlsClientMethod>,
    /// Make this server the TLS client (and the passive side); `None` prefers the source.
    pub tls_client: Option<Side>,
}

impl SiteToSiteOptions {
    /// Options with this protection and automatic role choice.
    pub fn new(protection: SiteToSiteProtection) -> Self {
        Self {
            protection,
            ..Self::default()
        }
    }

    /// Only this method (see [`SiteToSiteOptions::method`]).
    pub fn method(mut self, method: TlsClientMethod) -> Self {
        self.method = Some(method);
        self
    }

    /// This server as TLS client (see [`SiteToSiteOptions::tls_client`]).
    pub fn tls_client(mut self, side: Side) -> Self {
        self.tls_client = Some(side);
        self
    }
}

/// Which of the two servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The server the file is read from (`RETR`).
    Source,
    /// The server the file is written to (`STOR`).
    Destination,
}

/// How the TLS client role on the data connection was assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsClientMethod {
    /// `SSCN ON` on that server (switched off again afterwards), which then took the passive side with `PASV`.
    Sscn,
    /// `CPSV` instead of `PASV` on that server.
    Cpsv,
}

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

/// The plan: who listens, who is TLS client.
struct Plan {
    private: bool,
    tls_client: Option<(Side, TlsClientMethod)>,
    passive: Side,
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
        let plan = self.site_to_site_plan(destination, options)?;
        // A missing source file is the common failure, and once both transfer commands are out, the destination
        // would wait for a data connection until a timeout: ask first where the server offers SIZE.
        let source_size = if self.features().is_some_and(|f| f.size) {
            match self.size(source_path) {
                Ok(size) => Some(size),
                Err(e @ Error::Refused { code: 550, .. }) => return Err(e),
                Err(_) => None,
            }
        } else {
            None
        };
        let (source_reply, destination_reply) =
            copy(self, source_path, destination, destination_path, &plan)?;
        let destination_size = if destination.features().is_some_and(|f| f.size) {
            destination.size(destination_path).ok()
        } else {
            None
        };
        Ok(SiteToSiteReport {
            private: plan.private,
            tls_client: plan.tls_client,
            passive: plan.passive,
            source_size,
            source_bytes: bytes_in_reply(&source_reply),
            source_reply,
            destination_reply,
            destination_size,
        })
    }

    /// Who listens and who is TLS client, from both servers' `FEAT` and `protection`.
    fn site_to_site_plan(&self, destination: &Client, options: SiteToSiteOptions) -> Result<Plan> {
        let protection = options.protection;
        let clear = Plan {
            private: false,
            tls_client: None,
            passive: Side::Source,
        };
        if protection == SiteToSiteProtection::Clear {
            return Ok(clear);
        }
        let both_tls = self.tls_info().is_some() && destination.tls_info().is_some();
        let offers = |client: &Client, verb: &str| {
            client.features().is_some_and(|f| {
                f.lines.iter().any(|line| {
                    line.split_whitespace()
                        .next()
                        .is_some_and(|w| w.eq_ignore_ascii_case(verb))
                })
            })
        };
        // SSCN first (both conventions agree on it), then CPSV; the TLS client is also the passive side.
        let choice = [
            (Side::Source, TlsClientMethod::Sscn, "SSCN"),
            (Side::Destination, TlsClientMethod::Sscn, "SSCN"),
            (Side::Source, TlsClientMethod::Cpsv, "CPSV"),
            (Side::Destination, TlsClientMethod::Cpsv, "CPSV"),
        ]
        .into_iter()
        .filter(|(side, method, _)| {
            options.method.is_none_or(|m| m == *method)
                && options.tls_client.is_none_or(|s| s == *side)
        })
        .find(|(side, _, verb)| match side {
            Side::Source => offers(self, verb),
            Side::Destination => offers(destination, verb),
        });
        match (both_tls, choice) {
            (true, Some((side, method, _))) => Ok(Plan {
                private: true,
                tls_client: Some((side, method)),
                passive: side,
            }),
            _ if protection == SiteToSiteProtection::AllowClear => Ok(clear),
            (false, _) => Err(Error::Protocol(
                "site-to-site with PROT P needs TLS control connections to both servers".to_string(),
            )),
            (true, None) => Err(Error::Protocol(
                "site-to-site with PROT P needs SSCN or CPSV on one of the servers, and neither offers them \
                 (FEAT); allow clear data to copy with PROT C"
                    .to_string(),
            )),
        }
    }
}

/// Runs the copy as planned: `SSCN ON` (and `OFF` after), `PASV`/`CPSV` on the passive side, `PORT` on the
/// other, then `RETR` and `STOR` at once. Returns the final replies of (source, destination).
fn copy(
    source: &mut Client,
    source_path: &str,
    destination: &mut Client,
    destination_path: &str,
    plan: &Plan,
) -> Result<(Reply, Reply)> {
    let sscn = matches!(plan.tls_client, Some((_, TlsClientMethod::Sscn)));
    let cpsv = matches!(plan.tls_client, Some((_, TlsClientMethod::Cpsv)));
    for client in [&mut *source, &mut *destination] {
        // A plain control connection has no PROT to set: its data connections are clear anyway.
        if client.tls_info().is_some() {
            client.run(Operation::SetDataProtection(plan.private))?;
        }
    }
    let (passive, active) = match plan.passive {
        Side::Source => (&mut *source, &mut *destination),
        Side::Destination => (&mut *destination, &mut *source),
    };
    if sscn {
        passive.run(Operation::SiteToSiteTlsClient(true))?;
    }
    let result = (|| {
        let addr = match passive.run(Operation::SiteToSitePassive { tls_client: cpsv })? {
            Output::PassiveAddress(addr) => announced(addr, passive)?,
            other => return Err(Error::Protocol(format!("unexpected answer {other:?}"))),
        };
        active
            .run(Operation::SiteToSitePort(addr))
            .map_err(|e| match e {
                Error::Refused { code, text } => Error::Refused {
                    code,
                    text: format!(
                        "{text} (PORT to the other server refused: does it allow site-to-site transfers?)"
                    ),
                },
                e => e,
            })?;
        Ok(())
    })();
    let result = result.and_then(|()| {
        let retr =
            Operation::SiteToSiteTransfer(SiteToSiteCommand::Retrieve(source_path.to_string()));
        let stor =
            Operation::SiteToSiteTransfer(SiteToSiteCommand::Store(destination_path.to_string()));
        // Both commands must be on the wire before either server can finish: one thread per control
        // connection. Each side's wait is bounded by its server's data-connection timeout and reply timeout.
        let (source_result, destination_result) = thread::scope(|scope| {
            let destination_thread = scope.spawn(|| destination.run(stor));
            let source_result = source.run(retr);
            let destination_result = destination_thread
                .join()
                .unwrap_or_else(|_| Err(Error::Protocol("transfer thread panicked".to_string())));
            (source_result, destination_result)
        });
        Ok((
            final_reply(source_result)?,
            final_reply(destination_result)?,
        ))
    });
    if sscn {
        // Back to the normal role for the session's own transfers; this does not undo a finished copy.
        let passive = match plan.passive {
            Side::Source => source,
            Side::Destination => destination,
        };
        let _ = passive.run(Operation::SiteToSiteTlsClient(false));
    }
    result
}

/// The final reply of one side's transfer.
fn final_reply(result: Result<Output>) -> Result<Reply> {
    match result? {
        Output::Done(reply) => Ok(reply),
        other => Err(Error::Protocol(format!("unexpected answer {other:?}"))),
    }
}

/// The address to give the other server: the 227 address as sent, except that an unspecified one (`0.0.0.0`,
/// some servers behind NAT) means the control connection's peer.
fn announced(addr: SocketAddrV4, passive: &Client) -> Result<SocketAddr> {
    if addr.ip().is_unspecified() {
        return Ok(SocketAddr::new(passive.peer_addr()?.ip(), addr.port()));
    }
    Ok(SocketAddr::V4(addr))
}

/// A byte count in a final reply's text, as many servers write it: `226 ... (1234 bytes)` or `... 1234 bytes`.
fn bytes_in_reply(reply: &Reply) -> Option<u64> {
    reply.lines.iter().find_map(|line| {
        let words: Vec<&str> = line
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',' || c == '.')
            .filter(|w| !w.is_empty())
            .collect();
        words.windows(2).find_map(|pair| match pair {
            [number, unit] if unit.eq_ignore_ascii_case("bytes") => number.parse().ok(),
            _ => None,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftps_proto::codec::ReplyCode;

    #[test]
    fn byte_counts_are_read_from_common_226_texts() {
        let reply = |text: &str| Reply::new(ReplyCode::CLOSING_DATA_CONNECTION, text);
        assert_eq!(
            bytes_in_reply(&reply("Transfer complete (1234 bytes)")),
            Some(1234)
        );
        assert_eq!(bytes_in_reply(&reply("OK, received 99 bytes.")), Some(99));
        assert_eq!(bytes_in_reply(&reply("Transfer complete")), None);
        assert_eq!(bytes_in_reply(&reply("bytes 12")), None);
    }
}
