//! Events: what users did (logins, transfers, file changes), delivered to webhooks (`[[webhooks]]`, a signed JSON
//! POST each) and commands (`[[event_commands]]`, the JSON on standard input), at least once and in order.
//!
//! A session hands each event to [`Events::emit`], which appends it to every interested sink's queue file under
//! `<state_dir>/events/` and returns: one buffered write, no network, so delivery never blocks a session. A thread
//! per sink sends the queue in order, retrying a failed delivery with exponential backoff, and records how far
//! it got; after a restart (or `kill -9`: the appended lines are in the page cache) it continues from there. An
//! event may so be delivered twice (a crash between delivery and the record), never lost: receivers deduplicate
//! by `id`.

mod digest;
mod http;
mod queue;
mod sink;

use std::io;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub(crate) use digest::{DigestSlot, HashingUpload};
pub use sink::Sink;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A user logged in.
    Login,
    /// A login was refused.
    LoginFailed,
    /// A logged-in session ended.
    Logout,
    /// A file was uploaded (`status` says whether it completed).
    Upload,
    /// A file was downloaded.
    Download,
    /// A file was deleted.
    Delete,
    /// A file or directory was renamed (`path` → `target`).
    Rename,
    /// A directory was created.
    Mkdir,
    /// A directory was removed.
    Rmdir,
    /// An upload was refused by the upload check.
    UploadRejected,
}

/// One event, as every sink receives it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Unique: receivers deduplicate redeliveries with it.
    pub id: String,
    /// What happened.
    pub event: EventKind,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// The user, once known.
    pub user: Option<String>,
    /// The client's address (behind a load balancer, the one its PROXY header named).
    pub peer: IpAddr,
    /// The file or directory.
    pub path: Option<String>,
    /// A rename's new name.
    pub target: Option<String>,
    /// Bytes moved (transfers).
    pub size: Option<u64>,
    /// SHA-256 of the bytes received, hex (uploads, when computed).
    pub sha256: Option<String>,
    /// Always `ftps`.
    pub protocol: &'static str,
    /// The control connection's TLS version (`1.2`, `1.3`), if it had TLS.
    pub tls_version: Option<&'static str>,
    /// Whether a transfer's data connection resumed the control connection's TLS session.
    pub data_tls_resumed: Option<bool>,
    /// `ok` or `failed`.
    pub status: &'static str,
    /// The final reply code of a transfer.
    pub reply_code: Option<u16>,
}

impl EventRecord {
    /// A record of `event` now, by `peer`; the optional fields are empty.
    pub fn new(event: EventKind, peer: IpAddr) -> Self {
        Self {
            id: new_id(),
            event,
            time: rfc3339(SystemTime::now()),
            user: None,
            peer,
            path: None,
            target: None,
            size: None,
            sha256: None,
            protocol: "ftps",
            tls_version: None,
            data_tls_resumed: None,
            status: "ok",
            reply_code: None,
        }
    }
}

/// A TLS version as events name it.
pub fn tls_version_label(version: rustls::ProtocolVersion) -> &'static str {
    match version {
        rustls::ProtocolVersion::TLSv1_2 => "1.2",
        rustls::ProtocolVersion::TLSv1_3 => "1.3",
        _ => "other",
    }
}

/// 128 random bits, hex: unique without coordination between instances or restarts.
fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // No randomness: time and a counter are still unique within this process.
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bytes[..8].copy_from_slice(&(nanos as u64).to_be_bytes());
        bytes[8..].copy_from_slice(&n.to_be_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `2026-12-06T17:45:03.123Z`: the engine's [`Timeval`](ftps_proto::codec::Timeval) does the calendar.
fn rfc3339(time: SystemTime) -> String {
    match ftps_proto::codec::Timeval::from_system_time(time) {
        Some(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year,
            t.month,
            t.day,
            t.hour,
            t.minute,
            t.second,
            t.millisecond.unwrap_or(0)
        ),
        // Outside years 0..=9999: a clock this wrong still gets a stamp.
        None => "1970-01-01T00:00:00.000Z".to_owned(),
    }
}

/// Every sink of a server; cheap to share.
#[derive(Default)]
pub struct Events {
    sinks: Vec<Arc<Sink>>,
}

impl Events {
    /// Opens every sink's queue under `state_dir/events` and starts its delivery thread.
    ///
    /// # Errors
    /// When a queue file cannot be opened or created.
    pub fn start(state_dir: &Path, sinks: Vec<sink::SinkConfig>) -> io::Result<Self> {
        let dir = state_dir.join("events");
        let mut started = Vec::new();
        for config in sinks {
            started.push(Sink::start(&dir, config)?);
        }
        Ok(Self { sinks: started })
    }

    /// Whether any sink is configured (sessions skip building records otherwise).
    pub fn is_active(&self) -> bool {
        !self.sinks.is_empty()
    }

    /// Queues `record` for every sink that wants its kind. Never waits for the network.
    pub fn emit(&self, record: &EventRecord) {
        if self.sinks.is_empty() {
            return;
        }
        let line = match serde_json::to_string(record) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "event not serialised");
                return;
            }
        };
        for sink in &self.sinks {
            if sink.wants(record.event) {
                sink.push(&line);
            }
        }
    }

    /// Events queued and not yet delivered, over all sinks (for tests and shutdown).
    pub fn pending(&self) -> u64 {
        self.sinks.iter().map(|s| s.pending()).sum()
    }
}

pub use sink::{EventCommandConfig, SinkConfig, SinkTarget, WebhookConfig};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + std::time::Duration::from_millis(1_795_000_000_123);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40.123Z"); // date -u -d @1795000000
        let leap = UNIX_EPOCH + std::time::Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(&rfc3339(leap)[..10], "2000-02-29");
    }

    #[test]
    fn records_serialise_with_snake_case_kinds() {
        let mut r = EventRecord::new(EventKind::UploadRejected, "192.0.2.1".parse().unwrap());
        r.path = Some("/in/\"x\".bin".into());
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"event\":\"upload_rejected\""), "{json}");
        assert!(json.contains("\"protocol\":\"ftps\""), "{json}");
        assert!(json.contains(r#""path":"/in/\"x\".bin""#), "{json}");
        assert_eq!(r.id.len(), 32);
        assert_ne!(r.id, EventRecord::new(EventKind::Login, r.peer).id);
    }
}
