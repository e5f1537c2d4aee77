//! Transfer progress: a one-line bar on a terminal, a summary line at the end.
//!
//! Time enters as `now: Instant` arguments so the reporter can be tested without a clock.
//! Output goes to any [`Write`]; [`Progress::stderr`] picks stderr and decides the mode:
//! nothing with `--quiet`, bar and summary on a terminal, only the summary otherwise (a log
//! file full of `\r` redraws helps nobody).

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

/// Minimum time between two redraws of the bar (at most ~10 per second).
pub(crate) const REDRAW_INTERVAL: Duration = Duration::from_millis(100);

/// Time constant of the rate smoothing: a sample's weight halves about every 2 s.
const RATE_TIME_CONSTANT: f64 = 3.0;

/// Width of the bar itself, in characters.
const BAR_WIDTH: usize = 20;

/// Longest label shown in the bar; longer labels keep their end (the file name).
const LABEL_WIDTH: usize = 24;

/// What the reporter prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Nothing at all (`--quiet`).
    Silent,
    /// Only the final summary line.
    SummaryOnly,
    /// A redrawn one-line bar and the summary line.
    Bar,
}

/// Progress reporter for one transfer.
#[derive(Debug)]
pub(crate) struct Progress<W: Write> {
    out: W,
    mode: Mode,
    label: String,
    total: Option<u64>,
    started: Instant,
    bytes: u64,
    /// Bytes present before this run (a resumed transfer), excluded from rates.
    resumed_from: u64,
    /// Smoothed rate in bytes per second; `None` until the first sample.
    rate: Option<f64>,
    last_sample: (Instant, u64),
    last_draw: Option<Instant>,
    finished: bool,
}

impl Progress<io::Stderr> {
    /// A reporter on stderr: silent when `quiet`, a bar when stderr is a terminal, else only
    /// the summary.
    #[must_use]
    pub(crate) fn stderr(label: &str, total: Option<u64>, now: Instant, quiet: bool) -> Self {
        let err = io::stderr();
        let mode = if quiet {
            Mode::Silent
        } else if err.is_terminal() {
            Mode::Bar
        } else {
            Mode::SummaryOnly
        };
        Progress::new(err, mode, label, total, now)
    }

    /// [`Progress::stderr`] for one of several files moving at once (`--parallel`): never a bar,
    /// since the bars of concurrent transfers would draw over each other; the summary line
    /// unless `quiet`.
    #[must_use]
    pub(crate) fn stderr_concurrent(
        label: &str,
        total: Option<u64>,
        now: Instant,
        quiet: bool,
    ) -> Self {
        let mode = if quiet {
            Mode::Silent
        } else {
            Mode::SummaryOnly
        };
        Progress::new(io::stderr(), mode, label, total, now)
    }
}

impl<W: Write> Progress<W> {
    /// A reporter writing to `out`. `total` is the expected size when known (SIZE, or the
    /// local file size for uploads); `start` is when the transfer began.
    #[must_use]
    pub(crate) fn new(out: W, mode: Mode, label: &str, total: Option<u64>, start: Instant) -> Self {
        Progress {
            out,
            mode,
            label: label.to_owned(),
            total,
            started: start,
            bytes: 0,
            resumed_from: 0,
            rate: None,
            last_sample: (start, 0),
            last_draw: None,
            finished: false,
        }
    }

    /// Starts counting from `bytes` already present (a resumed transfer); those bytes do
    /// not count towards the rate.
    pub(crate) fn set_resumed_from(&mut self, bytes: u64) {
        self.bytes = bytes;
        self.resumed_from = bytes;
        self.last_sample.1 = bytes;
    }

    /// Records that `bytes` bytes in total have been transferred by `now`, and redraws the
    /// bar if the last redraw is at least [`REDRAW_INTERVAL`] old. Write errors on the
    /// progress output are ignored: they must not fail the transfer.
    pub(crate) fn update(&mut self, now: Instant, bytes: u64) {
        self.bytes = bytes;
        if self.finished || self.mode != Mode::Bar {
            return;
        }
        let due = self
            .last_draw
            .is_none_or(|last| now.saturating_duration_since(last) >= REDRAW_INTERVAL);
        if !due {
            return;
        }
        self.sample(now);
        self.last_draw = Some(now);
        let line = self.bar_line();
        // "\r" back to column 0, ESC[K clears what a longer previous line left behind.
        let _ = write!(self.out, "\r{line}\x1b[K");
        let _ = self.out.flush();
    }

    /// Folds the bytes since the last sample into the smoothed rate.
    fn sample(&mut self, now: Instant) {
        let (then, then_bytes) = self.last_sample;
        let dt = now.saturating_duration_since(then).as_secs_f64();
        if dt <= 0.0 {
            return;
        }
        let instant_rate = self.bytes.saturating_sub(then_bytes) as f64 / dt;
        // Exponential moving average weighted by elapsed time, so uneven sample spacing
        // does not skew it.
        let alpha = 1.0 - (-dt / RATE_TIME_CONSTANT).exp();
        self.rate = Some(match self.rate {
            None => instant_rate,
            Some(old) => old + alpha * (instant_rate - old),
        });
        self.last_sample = (now, self.bytes);
    }

    /// The smoothed rate in bytes per second, once known.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Bytes transferred so far.
    #[must_use]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Estimated time left, when the total and a non-zero rate are known.
    #[must_use]
    pub(crate) fn eta(&self) -> Option<Duration> {
        let total = self.total?;
        let rate = self.rate.filter(|r| *r > 0.0)?;
        let left = total.saturating_sub(self.bytes) as f64 / rate;
        Duration::try_from_secs_f64(left).ok()
    }

    /// The bar as drawn, without the terminal control sequences.
    #[must_use]
    pub(crate) fn bar_line(&self) -> String {
        let label = truncate_label(&self.label);
        let rate = self.rate.map_or_else(|| "-".to_owned(), format_rate);
        match self.total {
            Some(total) => {
                let fraction = if total == 0 {
                    1.0
                } else {
                    (self.bytes as f64 / total as f64).min(1.0)
                };
                // Truncating: the bar is full only when the transfer is.
                let filled = ((fraction * BAR_WIDTH as f64) as usize).min(BAR_WIDTH);
                let eta = self.eta().map_or_else(|| "--:--".to_owned(), format_eta);
                format!(
                    "{label} [{}{}] {:>3}% {}/{} {rate} ETA {eta}",
                    "#".repeat(filled),
                    " ".repeat(BAR_WIDTH - filled),
                    (fraction * 100.0) as u32,
                    format_bytes(self.bytes),
                    format_bytes(total),
                )
            }
            None => format!("{label} {} {rate}", format_bytes(self.bytes)),
        }
    }

    /// The summary line for a transfer that ended at `now`.
    #[must_use]
    pub(crate) fn summary_line(&self, now: Instant, ok: bool) -> String {
        let elapsed = now.saturating_duration_since(self.started);
        let secs = elapsed.as_secs_f64();
        let average = if secs > 0.0 {
            format_rate(self.bytes.saturating_sub(self.resumed_from) as f64 / secs)
        } else {
            "-".to_owned()
        };
        let verdict = if ok { "" } else { " (FAILED)" };
        format!(
            "{}: {} in {} ({average}){verdict}",
            self.label,
            format_bytes(self.bytes),
            format_duration(elapsed),
        )
    }

    /// Ends the report: clears the bar and prints the summary line (unless silent). Later
    /// calls to `update` and `finish` do nothing.
    pub(crate) fn finish(&mut self, now: Instant, ok: bool) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.mode == Mode::Silent {
            return;
        }
        if self.mode == Mode::Bar && self.last_draw.is_some() {
            let _ = write!(self.out, "\r\x1b[K");
        }
        let line = self.summary_line(now, ok);
        let _ = writeln!(self.out, "{line}");
        let _ = self.out.flush();
    }

    /// The output, for tests and callers that collect it.
    #[cfg(test)]
    pub(crate) fn into_inner(self) -> W {
        self.out
    }
}

fn truncate_label(label: &str) -> String {
    let count = label.chars().count();
    if count <= LABEL_WIDTH {
        return label.to_owned();
    }
    let tail: String = label.chars().skip(count - (LABEL_WIDTH - 1)).collect();
    format!("…{tail}")
}

/// Formats a byte count with binary units: `512 B`, `1.5 KiB`, `10.0 MiB`.
#[must_use]
pub(crate) fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        // Switch before the one-decimal rendering would show "1024.0".
        if value < 1023.95 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// Formats a rate in bytes per second: `0 B/s`, `1.5 MiB/s`. Negative or non-finite
/// rates show as `-`.
#[must_use]
pub(crate) fn format_rate(bytes_per_second: f64) -> String {
    if !bytes_per_second.is_finite() || bytes_per_second < 0.0 {
        return "-".to_owned();
    }
    // Saturating float-to-int conversion: absurd rates show as the largest unit.
    format!("{}/s", format_bytes(bytes_per_second.round() as u64))
}

/// Formats a time left as `m:ss` or `h:mm:ss`; over 99 hours as `>99h`.
#[must_use]
pub(crate) fn format_eta(left: Duration) -> String {
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    if secs >= 100 * 3600 {
        return ">99h".to_owned();
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Formats an elapsed time for the summary: `0.25 s`, `12.3 s`, else as [`format_eta`].
fn format_duration(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.2} s")
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        format_eta(elapsed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn output(p: Progress<Vec<u8>>) -> String {
        String::from_utf8(p.into_inner()).unwrap()
    }

    #[test]
    fn bytes() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1024), "1.0 KiB");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(MIB - 1), "1.0 MiB");
        assert_eq!(format_bytes(10 * MIB), "10.0 MiB");
        assert_eq!(format_bytes(3 * 1024 * MIB / 2), "1.5 GiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn rates() {
        assert_eq!(format_rate(0.0), "0 B/s");
        assert_eq!(format_rate(999.6), "1000 B/s");
        assert_eq!(format_rate(1.5 * MIB as f64), "1.5 MiB/s");
        assert_eq!(format_rate(-1.0), "-");
        assert_eq!(format_rate(f64::NAN), "-");
        assert_eq!(format_rate(f64::INFINITY), "-");
        assert_eq!(format_rate(1e300), "16.0 EiB/s");
    }

    #[test]
    fn etas() {
        assert_eq!(format_eta(Duration::ZERO), "0:00");
        assert_eq!(format_eta(Duration::from_millis(100)), "0:01");
        assert_eq!(format_eta(Duration::from_secs(65)), "1:05");
        assert_eq!(format_eta(Duration::from_secs(3723)), "1:02:03");
        assert_eq!(
            format_eta(Duration::from_secs(99 * 3600 + 3599)),
            "99:59:59"
        );
        assert_eq!(format_eta(Duration::from_secs(100 * 3600)), ">99h");
    }

    #[test]
    fn bar_redraws_at_most_every_100ms() {
        let t0 = Instant::now();
        let mut p = Progress::new(Vec::new(), Mode::Bar, "f", Some(1000), t0);
        p.update(t0 + Duration::from_millis(50), 100);
        p.update(t0 + Duration::from_millis(60), 200); // too soon
        p.update(t0 + Duration::from_millis(149), 300); // too soon
        p.update(t0 + Duration::from_millis(150), 400);
        let out = output(p);
        assert_eq!(out.matches('\r').count(), 2, "{out:?}");
    }

    #[test]
    fn bar_contents() {
        let t0 = Instant::now();
        let mut p = Progress::new(Vec::new(), Mode::Bar, "file.bin", Some(4 * MIB), t0);
        p.update(t0 + Duration::from_secs(1), MIB);
        assert_eq!(p.rate(), Some(MIB as f64));
        assert_eq!(p.eta(), Some(Duration::from_secs(3)));
        assert_eq!(
            p.bar_line(),
            "file.bin [#####               ]  25% 1.0 MiB/4.0 MiB 1.0 MiB/s ETA 0:03"
        );
        let out = output(p);
        assert_eq!(
            out,
            "\rfile.bin [#####               ]  25% 1.0 MiB/4.0 MiB 1.0 MiB/s ETA 0:03\x1b[K"
        );
    }

    #[test]
    fn bar_without_total() {
        let t0 = Instant::now();
        let mut p = Progress::new(Vec::new(), Mode::Bar, "f", None, t0);
        assert_eq!(p.bar_line(), "f 0 B -");
        p.update(t0 + Duration::from_secs(2), 2048);
        assert_eq!(p.bar_line(), "f 2.0 KiB 1.0 KiB/s");
        assert_eq!(p.eta(), None);
    }

    #[test]
    fn rate_is_smoothed() {
        let t0 = Instant::now();
        let mut p = Progress::new(Vec::new(), Mode::Bar, "f", None, t0);
        p.update(t0 + Duration::from_secs(1), 1000);
        assert_eq!(p.rate(), Some(1000.0));
        // A stall for one second: the rate drops, but not to zero.
        p.update(t0 + Duration::from_secs(2), 1000);
        let rate = p.rate().unwrap();
        let expected = 1000.0 * (-1.0f64 / RATE_TIME_CONSTANT).exp();
        assert!((rate - expected).abs() < 1e-9, "{rate} vs {expected}");
        assert!(rate > 500.0 && rate < 1000.0, "{rate}");
    }

    #[test]
    fn overshoot_and_zero_total_do_not_panic() {
        let t0 = Instant::now();
        let mut p = Progress::new(Vec::new(), Mode::Bar, "f", Some(10), t0);
        p.update(t0 + Duration::from_secs(1), 20);
        assert!(p.bar_line().contains("[####################] 100%"));
        assert_eq!(p.eta(), Some(Duration::ZERO));
        let mut p = Progress::new(Vec::new(), Mode::Bar, "f", Some(0), t0);
        p.update(t0, 0);
        assert!(p.bar_line().contains("100%"));
    }

    #[test]
    fn summary_and_finish() {
        let t0 = Instant::now();
        let mut p = Progress::new(Vec::new(), Mode::Bar, "f", Some(2 * MIB), t0);
        p.update(t0 + Duration::from_millis(500), MIB);
        p.update(t0 + Duration::from_secs(2), 2 * MIB);
        p.finish(t0 + Duration::from_secs(2), true);
        p.finish(t0 + Duration::from_secs(3), true); // no second summary
        p.update(t0 + Duration::from_secs(4), 3 * MIB); // no redraw after finish
        let out = output(p);
        assert!(
            out.ends_with("\r\x1b[Kf: 2.0 MiB in 2.00 s (1.0 MiB/s)\n"),
            "{out:?}"
        );
        assert_eq!(out.matches('\n').count(), 1);
    }

    #[test]
    fn summary_only_mode_has_no_redraws() {
        let t0 = Instant::now();
        let mut p = Progress::new(Vec::new(), Mode::SummaryOnly, "up", Some(100), t0);
        p.update(t0 + Duration::from_secs(1), 50);
        p.finish(t0 + Duration::from_secs(20), false);
        assert_eq!(output(p), "up: 50 B in 20.0 s (3 B/s) (FAILED)\n");
    }

    #[test]
    fn silent_mode_prints_nothing() {
        let t0 = Instant::now();
        let mut p = Progress::new(Vec::new(), Mode::Silent, "f", Some(100), t0);
        p.update(t0 + Duration::from_secs(1), 50);
        p.finish(t0 + Duration::from_secs(2), true);
        assert_eq!(output(p), "");
    }

    #[test]
    fn resumed_bytes_do_not_count_towards_rate() {
        let t0 = Instant::now();
        let mut p = Progress::new(Vec::new(), Mode::Bar, "f", Some(3000), t0);
        p.set_resumed_from(2000);
        p.update(t0 + Duration::from_secs(1), 2500);
        assert_eq!(p.rate(), Some(500.0));
        assert_eq!(p.eta(), Some(Duration::from_secs(1)));
        assert_eq!(
            p.summary_line(t0 + Duration::from_secs(2), true),
            "f: 2.4 KiB in 2.00 s (250 B/s)"
        );
    }

    #[test]
    fn long_labels_keep_their_end() {
        let label = "a/very/long/directory/name/and/file.bin";
        let shown = truncate_label(label);
        assert_eq!(shown.chars().count(), LABEL_WIDTH);
        assert_eq!(shown, "…ctory/name/and/file.bin");
        assert_eq!(truncate_label("short"), "short");
    }
}
