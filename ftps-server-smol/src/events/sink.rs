//! One receiver of events (a webhook or a command), its durable queue and the thread that delivers it.

use std::io::{self, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::http::{Client, Endpoint};
use super::queue::Queue;
use super::EventKind;

/// The first wait after a failed delivery; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long an event command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a sink delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// `POST` the JSON with `X-Ftps-Signature: sha256=<hex HMAC-SHA256 of the body under secret>`; a 2xx answer
    /// means delivered.
    Webhook {
        /// `http://` or `https://` URL.
        url: String,
        /// The HMAC key the receiver checks the signature with.
        secret: String,
    },
    /// Run `argv` with the JSON on standard input and `FTPS_EVENT` set to the event's kind; exit status 0 means
    /// delivered.
    Command {
        /// Program and arguments (no shell).
        argv: Vec<String>,
    },
}

/// One sink: where, and which events (none listed: all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkConfig {
    /// Where.
    pub target: SinkTarget,
    /// Which kinds; empty means every kind.
    pub events: Vec<EventKind>,
}

/// Delivers one event line; `Err` says why it was not accepted.
type Deliver = Box<dyn FnMut(&str) -> Result<(), String> + Send>;

/// A started sink.
pub struct Sink {
    events: Vec<EventKind>,
    queue: Arc<Queue>,
    name: String,
}

/// Serialised form of the sinks' config, for `[[webhooks]]` and `[[event_commands]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL the events are posted to.
    pub url: String,
    /// Key of the `X-Ftps-Signature` HMAC (required: a receiver must be able to tell our events from others').
    pub secret: String,
    /// Event kinds to send; empty or absent: all.
    #[serde(default)]
    pub events: Vec<EventKind>,
}

/// `[[event_commands]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventCommandConfig {
    /// Program and arguments, run without a shell.
    pub command: Vec<String>,
    /// Event kinds to run it for; empty or absent: all.
    #[serde(default)]
    pub events: Vec<EventKind>,
}

impl Sink {
    /// Opens the sink's queue in `dir` and starts its delivery thread.
    pub(crate) fn start(dir: &Path, config: SinkConfig) -> io::Result<Arc<Self>> {
        let (name, deliver): (String, Deliver) = match &config.target {
            SinkTarget::Webhook { url, secret } => {
                let mut client = Endpoint::parse(url)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
                    .client();
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
                let deliver = move |line: &str| post(&mut client, &key, line);
                (format!("webhook-{}", short_hash(url)), Box::new(deliver))
            }
            SinkTarget::Command { argv } => {
                if argv.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "an event command needs a program",
                    ));
                }
                let argv = argv.clone();
                let name = format!("command-{}", short_hash(&argv.join("\0")));
                (name, Box::new(move |line: &str| run_command(&argv, line)))
            }
        };
        let queue = Arc::new(Queue::open(dir, &name)?);
        let sink = Arc::new(Self {
            events: config.events,
            queue: Arc::clone(&queue),
            name: name.clone(),
        });
        std::thread::Builder::new()
            .name(format!("events {name}"))
            .spawn(move || deliver_forever(&name, &queue, deliver))?;
        Ok(sink)
    }

    pub(crate) fn wants(&self, kind: EventKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }

    /// Appends to the queue; the delivery thread takes it from there.
    pub(crate) fn push(&self, line: &str) {
        if let Err(e) = self.queue.push(line) {
            tracing::error!(sink = %self.name, error = %e, "event not queued");
        }
    }

    pub(crate) fn pending(&self) -> u64 {
        self.queue.pending()
    }
}

/// Delivers the queue in order, each event until it is accepted.
fn deliver_forever(name: &str, queue: &Queue, mut deliver: Deliver) {
    loop {
        let (line, end) = match queue.next(Duration::from_secs(5)) {
            Ok(Some(next)) => next,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "event queue unreadable; delivery stopped");
                return;
            }
        };
        let mut backoff = FIRST_BACKOFF;
        let mut failures = 0u32;
        while let Err(e) = deliver(&line) {
            if failures == 0 {
                if let Err(e) = queue.record_offset() {
                    tracing::warn!(sink = %name, error = %e, "delivered events not recorded; they may be sent again");
                }
            }
            failures += 1;
            // Every failure of a short outage, then one line per minute or so of a long one.
            if failures <= 3 || backoff == MAX_BACKOFF {
                tracing::warn!(sink = %name, error = %e, failures, "event delivery failed; will retry");
            }
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        if let Err(e) = queue.acknowledge(end) {
            tracing::warn!(sink = %name, error = %e, "delivered event not recorded; it may be sent again");
        }
    }
}

fn post(client: &mut Client, key: &ring::hmac::Key, line: &str) -> Result<(), String> {
    let tag = ring::hmac::sign(key, line.as_bytes());
    let signature = format!("sha256={}", hex(tag.as_ref()));
    match client.post(&[("X-Ftps-Signature", &signature)], line.as_bytes()) {
        Ok(code) if (200..300).contains(&code) => Ok(()),
        Ok(code) => Err(format!("HTTP {code}")),
        Err(e) => Err(e.to_string()),
    }
}

fn run_command(argv: &[String], line: &str) -> Result<(), String> {
    let kind = serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|v| v.get("event").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .env("FTPS_EVENT", kind)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input still decides by its exit status.
        let _ = stdin.write_all(line.as_bytes());
        let _ = stdin.write_all(b"\n");
    }
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(format!("{}: {status}", argv[0])),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{}: timed out", argv[0]));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stable file name for a sink: the same URL or command finds its queue again after a restart.
fn short_hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    hex(&digest.as_ref()[..6])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_the_rfc_4231_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"Jefe");
        let tag = ring::hmac::sign(&key, b"what do ya want for nothing?");
        assert_eq!(
            hex(tag.as_ref()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_command_sink_gets_every_event_in_order_even_after_failures() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let tries = dir.path().join("tries");
        // Fails its first run, then appends each event to `out`.
        let script = format!(
            "if [ ! -e {t} ]; then touch {t}; exit 1; fi; cat >> {o}",
            t = tries.display(),
            o = out.display()
        );
        let sink = Sink::start(
            dir.path(),
            SinkConfig {
                target: SinkTarget::Command {
                    argv: vec!["sh".into(), "-c".into(), script],
                },
                events: vec![EventKind::Upload],
            },
        )
        .unwrap();
        assert!(sink.wants(EventKind::Upload) && !sink.wants(EventKind::Login));
        sink.push("{\"event\":\"upload\",\"n\":1}");
        sink.push("{\"event\":\"upload\",\"n\":2}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while sink.pending() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"event\":\"upload\",\"n\":1}\n{\"event\":\"upload\",\"n\":2}\n"
        );
    }
}
