#![no_main]
//! Drives a `DataChannel` with a script (see `script.rs`): peer bytes at arbitrary splits, EOF, time passing, and
//! the caller's reads, writes and `finish`, draining `poll_transmit` and `poll_event` after each step.
//!
//! The first byte picks the mode: clear, or TLS in the server role (one rcgen certificate, made once) under each
//! resumption policy; a close_notify grace; small buffers. `ACTION` parameters decode (`arbitrary`) into a [`Call`].
//!
//! Invariants: no panic; the error is sticky and matches the one `Failed` event; at most one of
//! `Finished`/`Failed` and nothing after it; `handle_input` takes at most what it is given (everything once
//! failed); after `handle_timeout(now)` no deadline at or before `now`; in the clear the consumed bytes are
//! exactly a prefix of the bytes taken; `bytes_received` counts what was consumed.
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use ftps_proto::data::{
    DataChannel, DataError, DataEvent, DataOptions, DataProtection, DataTls, ResumptionPolicy,
};
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod script;
use script::{Op, Script};

fn tls_config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .unwrap();
            Arc::new(config)
        })
        .clone()
}

#[derive(Arbitrary, Debug)]
enum Call {
    /// Consume up to this many bytes of the current chunk.
    Read(u16),
    /// Read out everything buffered.
    ReadAll,
    /// Write this many bytes of payload.
    Write(u16),
    Finish,
}

struct Harness {
    channel: DataChannel,
    now: Instant,
    clear: bool,
    /// Clear mode: every byte `handle_input` took before EOF; each read is checked against it.
    taken: Vec<u8>,
    consumed_len: u64,
    /// The first error, compared (not formatted) after every later step.
    error: Option<DataError>,
    terminal: bool,
    /// The script delivered EOF: later input is not part of the stream.
    eof: bool,
    handshakes: u32,
    read_closed: u32,
    wire: Vec<u8>,
    /// Events and the error are formatted (their `Debug`/`Display` are engine code too) into this one buffer.
    text: String,
}

/// The payload of every `Write` (the largest is `u16::MAX` bytes).
static PAYLOAD: [u8; u16::MAX as usize] = [b'x'; u16::MAX as usize];

impl Harness {
    fn drain(&mut self) {
        loop {
            self.wire.clear();
            let n = self.channel.poll_transmit(&mut self.wire);
            assert_eq!(n, self.wire.len());
            let mut progressed = n > 0;
            if script::tracing() && !self.wire.is_empty() {
                eprintln!("<- {:?}", String::from_utf8_lossy(&self.wire));
            }
            while let Some(event) = self.channel.poll_event() {
                progressed = true;
                assert!(!self.terminal, "event after the end: {event:?}");
                match event {
                    DataEvent::HandshakeComplete(_) => {
                        assert!(!self.clear, "handshake event in the clear");
                        self.handshakes += 1;
                        assert_eq!(self.handshakes, 1);
                    }
                    DataEvent::ReadClosed { .. } => {
                        self.read_closed += 1;
                        assert_eq!(self.read_closed, 1);
                    }
                    DataEvent::Failed(e) => {
                        self.terminal = true;
                        assert_eq!(self.channel.error(), Some(&e));
                    }
                    DataEvent::Finished(report) => {
                        self.terminal = true;
                        assert!(self.channel.error().is_none());
                        assert_eq!(report.bytes_received, self.consumed_len);
                    }
                    other => {
                        // Formatted only when tracing, as in `server_session`.
                        if script::tracing() {
                            eprintln!("   {other:?}");
                        }
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        if self.error.is_some() {
            assert_eq!(
                self.channel.error(),
                self.error.as_ref(),
                "the error is not sticky"
            );
        } else if let Some(error) = self.channel.error() {
            self.text.clear();
            write!(self.text, "{error}").unwrap();
            self.error = Some(error.clone());
        }
        assert_eq!(self.channel.bytes_received(), self.consumed_len);
        if self.channel.is_closed() {
            assert!(self.terminal, "closed without Finished or Failed");
        }
    }

    fn read(&mut self, max: usize) {
        let chunk = self.channel.read_chunk();
        let n = chunk.len().min(max);
        if self.clear {
            // The bytes consumed so far are exactly a prefix of the bytes taken: check each read where it lands
            // (once per byte) rather than the whole prefix after every step (quadratic in the input).
            let at = usize::try_from(self.consumed_len).unwrap();
            let expected = self.taken.get(at..at + n);
            assert!(
                expected.is_some_and(|e| e.iter().zip(&chunk[..n]).all(|(a, b)| a == b)),
                "clear bytes changed"
            );
        }
        let before = self.channel.bytes_received();
        self.channel.consume(n);
        self.consumed_len += self.channel.bytes_received() - before;
        assert_eq!(self.channel.bytes_received() - before, n as u64);
    }

    fn read_all(&mut self) {
        for _ in 0..64 {
            if self.channel.read_chunk().is_empty() {
                break;
            }
            self.read(usize::MAX);
        }
    }

    fn input(&mut self, mut bytes: &[u8]) {
        if script::tracing() {
            eprintln!("-> {:?}", String::from_utf8_lossy(bytes));
        }
        let failed = self.channel.error().is_some();
        let eof = self.eof;
        while !bytes.is_empty() {
            let taken = self.channel.handle_input(self.now, bytes);
            assert!(taken <= bytes.len());
            if failed {
                assert_eq!(
                    taken,
                    bytes.len(),
                    "a failed channel must discard its input"
                );
            }
            if self.clear && !eof {
                self.taken.extend_from_slice(&bytes[..taken]);
            }
            bytes = &bytes[taken..];
            self.drain();
            if taken == 0 {
                // Backpressure: read out what is buffered, then offer the rest once more.
                self.read_all();
                self.drain();
                let taken = self.channel.handle_input(self.now, bytes);
                if self.clear && !eof {
                    self.taken.extend_from_slice(&bytes[..taken]);
                }
                bytes = &bytes[taken..];
                self.drain();
                if taken == 0 {
                    break;
                }
            }
        }
    }

    fn timeout(&mut self) {
        self.channel.handle_timeout(self.now);
        self.drain();
        if let Some(deadline) = self.channel.poll_timeout() {
            assert!(deadline > self.now, "deadline not after now");
        }
    }

    fn call(&mut self, params: &[u8]) {
        let Ok(call) = Call::arbitrary(&mut Unstructured::new(params)) else {
            return;
        };
        match call {
            Call::Read(max) => self.read(usize::from(max)),
            Call::ReadAll => self.read_all(),
            Call::Write(len) => {
                // A slice of one static buffer: a fresh `vec!` of up to 64 KiB per call was an allocation and a
                // memset per write.
                let payload = &PAYLOAD[..usize::from(len)];
                let could = self.channel.can_write();
                let taken = self.channel.write(payload);
                assert!(taken <= payload.len());
                assert!(could || taken == 0, "wrote while it could not");
            }
            Call::Finish => self.channel.finish(self.now),
        }
        self.drain();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&variant, rest)) = data.split_first() else {
        return;
    };
    let protection = match variant % 4 {
        0 => DataProtection::Clear,
        mode => DataProtection::Tls(DataTls::Server {
            config: tls_config(),
            resumption: [
                ResumptionPolicy::Required,
                ResumptionPolicy::Preferred,
                ResumptionPolicy::Off,
            ][usize::from(mode - 1)],
        }),
    };
    let mut options = DataOptions::default();
    options.handshake_timeout = Duration::from_secs(2);
    if variant & 4 != 0 {
        options.close_notify_grace = Some(Duration::from_millis(100));
    }
    if variant & 8 != 0 {
        options.send_buffer_limit = 64;
        options.receive_buffer_limit = 32;
    }
    let now = Instant::now();
    let channel = DataChannel::new(now, protection, options).unwrap();
    let mut h = Harness {
        channel,
        now,
        clear: variant % 4 == 0,
        taken: Vec::new(),
        consumed_len: 0,
        error: None,
        terminal: false,
        eof: false,
        handshakes: 0,
        read_closed: 0,
        wire: Vec::new(),
        text: String::new(),
    };
    h.drain();
    for op in Script::new(rest) {
        match op {
            Op::Input(bytes) => h.input(bytes),
            Op::Eof => {
                h.eof = true;
                h.channel.handle_eof(h.now);
                h.drain();
            }
            Op::Advance(ms) => {
                h.now += Duration::from_millis(u64::from(ms));
                h.timeout();
            }
            Op::Deadline => {
                if let Some(deadline) = h.channel.poll_timeout() {
                    h.now = h.now.max(deadline);
                }
                h.timeout();
            }
            Op::Action(params) => h.call(&params),
        }
    }
});
