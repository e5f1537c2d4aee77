//! Site-to-site transfers (FXP): the protocol decisions of having two servers copy a file between themselves.
//!
//! One client logs in to both servers, tells one to listen (`PASV`, or `CPSV`), gives its address to the other
//! with `PORT`, then sends `RETR` to the source and `STOR` to the destination at once. [`SiteToSitePlan`] decides
//! every command of that exchange from the two sessions' state; the frontend only runs each [`Operation`] on the
//! session the plan names and keeps both transfer commands in flight together.
//!
//! **Protection.** Under `PROT P` both servers speak TLS on their data connection, so exactly one of them must be
//! the TLS client: the one told `SSCN ON` (the "TLS for 3rd party transfers" convention of FileZilla Server,
//! glftpd and DrFTPD), or the one given `CPSV` instead of `PASV`. The TLS client is also the passive side.
//!
//! **Server policy.** A server that follows RFC 2577 section 3 refuses `PORT` to an address other than its
//! client's: both servers must allow site-to-site transfers for the logged-in user.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

use crate::codec::Reply;

use super::op::{OpError, Operation, Output, SiteToSiteCommand};
use super::ClientSession;

/// How a site-to-site transfer protects its data connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SiteToSiteProtection {
    /// `PROT P` on both servers, one of them the TLS client via `SSCN` (preferred) or `CPSV`; the plan fails
    /// when neither server offers them, or a control connection is not TLS.
    #[default]
    RequirePrivate,
    /// `PROT P` as for [`SiteToSiteProtection::RequirePrivate`] when possible, otherwise `PROT C` on both: the
    /// file crosses the network in the clear. Only when the caller chose it.
    AllowClear,
    /// `PROT C` on both servers.
    Clear,
}

/// What a site-to-site plan is asked for; `Default` requires `PROT P` and chooses the TLS client itself.
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

impl Side {
    /// The other server.
    pub fn other(self) -> Side {
        match self {
            Side::Source => Side::Destination,
            Side::Destination => Side::Source,
        }
    }
}

/// How the TLS client role on the data connection is assigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsClientMethod {
    /// `SSCN ON` on that server (switched off again afterwards), which then takes the passive side with `PASV`.
    Sscn,
    /// `CPSV` instead of `PASV` on that server.
    Cpsv,
}

impl TlsClientMethod {
    /// The `FEAT` name a server announces this method with.
    fn feature(self) -> &'static str {
        match self {
            TlsClientMethod::Sscn => "SSCN",
            TlsClientMethod::Cpsv => "CPSV",
        }
    }
}

/// Why no plan meets the requested protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SiteToSiteError {
    /// `PROT P` was required but a control connection is plain FTP.
    #[error("site-to-site with PROT P needs TLS control connections to both servers")]
    PlainControl,
    /// `PROT P` was required but neither server offers `SSCN` or `CPSV` (as allowed by the options).
    #[error(
        "site-to-site with PROT P needs SSCN or CPSV on one of the servers, and neither offers them (FEAT); \
         allow clear data to copy with PROT C"
    )]
    NoTlsClientMethod,
}

/// Every command of one site-to-site copy, decided from both sessions' TLS state and features.
///
/// Run, in order: [`SiteToSitePlan::source_size`] (optional, see [`SiteToSitePlan::source_size_result`]),
/// each of [`SiteToSitePlan::setup`], [`SiteToSitePlan::passive`] on the passive side,
/// [`SiteToSitePlan::port`] on the other, both [`SiteToSitePlan::transfers`] *at once* (neither server finishes
/// before the other's command arrived), then [`SiteToSitePlan::teardown`] whatever happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteToSitePlan {
    private: bool,
    tls_client: Option<(Side, TlsClientMethod)>,
    passive: Side,
    /// Whether each control connection is TLS (only those get `PROT`): source, destination.
    tls: [bool; 2],
    /// Whether each server offers `SIZE`: source, destination.
    size: [bool; 2],
}

impl SiteToSitePlan {
    /// The plan for copying from `source`'s server to `destination`'s, both logged in.
    pub fn new(
        source: &ClientSession,
        destination: &ClientSession,
        options: SiteToSiteOptions,
    ) -> Result<Self, SiteToSiteError> {
        let sessions = [source, destination];
        let tls = sessions.map(|s| s.tls_info().is_some());
        let size = sessions.map(|s| s.features().is_some_and(|f| f.size));
        let clear = Self {
            private: false,
            tls_client: None,
            passive: Side::Source,
            tls,
            size,
        };
        if options.protection == SiteToSiteProtection::Clear {
            return Ok(clear);
        }
        let offers = |side: Side, method: TlsClientMethod| {
            sessions[side as usize]
                .features()
                .is_some_and(|f| f.advertised.has(method.feature()))
        };
        // SSCN first (both conventions agree on it), then CPSV; the TLS client is also the passive side.
        let choice = [
            (Side::Source, TlsClientMethod::Sscn),
            (Side::Destination, TlsClientMethod::Sscn),
            (Side::Source, TlsClientMethod::Cpsv),
            (Side::Destination, TlsClientMethod::Cpsv),
        ]
        .into_iter()
        .filter(|(side, method)| {
            options.method.is_none_or(|m| m == *method)
                && options.tls_client.is_none_or(|s| s == *side)
        })
        .find(|(side, method)| offers(*side, *method));
        match (tls == [true, true], choice) {
            (true, Some((side, method))) => Ok(Self {
                private: true,
                tls_client: Some((side, method)),
                passive: side,
                ..clear
            }),
            _ if options.protection == SiteToSiteProtection::AllowClear => Ok(clear),
            (false, _) => Err(SiteToSiteError::PlainControl),
            (true, None) => Err(SiteToSiteError::NoTlsClientMethod),
        }
    }

    // ----- getters -----

    /// Whether the data connection is protected (`PROT P`).
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// The server that acts as TLS client and how, under `PROT P`.
    pub fn tls_client(&self) -> Option<(Side, TlsClientMethod)> {
        self.tls_client
    }

    /// The server that listens (`PASV` / `CPSV`); the other one connects (`PORT`).
    pub fn passive_side(&self) -> Side {
        self.passive
    }

    // ----- the operations, in order -----

    /// `SIZE` on the source, when it offers it: a missing source file is the common failure, and once both
    /// transfer commands are out the destination would wait for a data connection until a timeout.
    pub fn source_size(&self, path: &str) -> Option<Operation> {
        self.size[0].then(|| Operation::Size(path.to_string()))
    }

    /// What the source's answer to [`SiteToSitePlan::source_size`] means: its size, nothing known (a server
    /// whose `SIZE` does not work), or an error that stops the copy (550, RFC 959: the file is unavailable;
    /// or a failed session).
    pub fn source_size_result(result: Result<Output, OpError>) -> Result<Option<u64>, OpError> {
        match result {
            Ok(Output::Size(size)) => Ok(Some(size)),
            Err(OpError::Refused(reply))
                if reply.code == crate::codec::ReplyCode::FILE_NOT_AVAILABLE =>
            {
                Err(OpError::Refused(reply))
            }
            Err(e @ OpError::Session(_)) => Err(e),
            _ => Ok(None),
        }
    }

    /// The operations before the passive request, in order, with the server each runs on: `PROT P` / `PROT C`
    /// on each TLS control connection (a plain one has clear data connections anyway), then `SSCN ON` on the
    /// passive side when that is the method.
    pub fn setup(&self) -> Vec<(Side, Operation)> {
        let mut ops: Vec<(Side, Operation)> = [Side::Source, Side::Destination]
            .into_iter()
            .filter(|side| self.tls[*side as usize])
            .map(|side| (side, Operation::SetDataProtection(self.private)))
            .collect();
        if let Some((side, TlsClientMethod::Sscn)) = self.tls_client {
            ops.push((side, Operation::SiteToSiteTlsClient(true)));
        }
        ops
    }

    /// The passive request (`PASV`, or `CPSV`), for [`SiteToSitePlan::passive_side`]; it produces
    /// [`Output::PassiveAddress`].
    pub fn passive(&self) -> Operation {
        Operation::SiteToSitePassive {
            tls_client: matches!(self.tls_client, Some((_, TlsClientMethod::Cpsv))),
        }
    }

    /// `PORT` for the other side, naming the passive server's address: the 227 address as sent (it is given to
    /// another server, so the usual "use the control peer's address" rule does not apply), except that an
    /// unspecified one (`0.0.0.0`, some servers behind NAT) means the passive server's control peer.
    ///
    /// `passive_output` is the passive side's result; `passive_session` its session.
    pub fn port(
        &self,
        passive_output: Output,
        passive_session: &ClientSession,
    ) -> Result<Operation, OpError> {
        match passive_output {
            Output::PassiveAddress(addr) => Ok(Operation::SiteToSitePort(announced(
                addr,
                passive_session.peer().ip(),
            ))),
            other => Err(OpError::MalformedReply(format!(
                "passive request answered with {other:?}"
            ))),
        }
    }

    /// The transfer commands: (source `RETR`, destination `STOR`). Send both before waiting for either.
    pub fn transfers(&self, source_path: &str, destination_path: &str) -> (Operation, Operation) {
        (
            Operation::SiteToSiteTransfer(SiteToSiteCommand::Retrieve(source_path.to_string())),
            Operation::SiteToSiteTransfer(SiteToSiteCommand::Store(destination_path.to_string())),
        )
    }

    /// What to run after the copy, succeeded or not: `SSCN OFF` on the side that got `SSCN ON`, so the session's
    /// own transfers take the normal TLS role again.
    pub fn teardown(&self) -> Option<(Side, Operation)> {
        match self.tls_client {
            Some((side, TlsClientMethod::Sscn)) => {
                Some((side, Operation::SiteToSiteTlsClient(false)))
            }
            _ => None,
        }
    }

    /// `SIZE` on the destination after the copy, when it offers it.
    pub fn destination_size(&self, path: &str) -> Option<Operation> {
        self.size[1].then(|| Operation::Size(path.to_string()))
    }
}

/// The address to give the other server: the 227 address as sent, or the control peer for `0.0.0.0`.
fn announced(addr: SocketAddrV4, control_peer: IpAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        return SocketAddr::new(control_peer, addr.port());
    }
    SocketAddr::V4(addr)
}

/// A byte count in a final reply's text, as many servers write it: `226 ... (1234 bytes)` or `... 1234 bytes`.
pub fn bytes_in_reply(reply: &Reply) -> Option<u64> {
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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::ReplyCode;

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

    #[test]
    fn an_unspecified_passive_address_means_the_control_peer() {
        let peer: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            announced("0.0.0.0:2121".parse().unwrap(), peer),
            "198.51.100.7:2121".parse().unwrap()
        );
        assert_eq!(
            announced("192.0.2.9:2121".parse().unwrap(), peer),
            "192.0.2.9:2121".parse().unwrap()
        );
    }

    #[test]
    fn only_an_unavailable_source_file_stops_the_copy() {
        let refused = |code| {
            Err(OpError::Refused(Reply::new(
                ReplyCode::new(code).unwrap(),
                "no",
            )))
        };
        assert_eq!(
            SiteToSitePlan::source_size_result(Ok(Output::Size(7))),
            Ok(Some(7))
        );
        assert!(SiteToSitePlan::source_size_result(refused(550)).is_err());
        assert_eq!(SiteToSitePlan::source_size_result(refused(502)), Ok(None));
        assert_eq!(SiteToSitePlan::source_size_result(refused(451)), Ok(None));
    }
}
