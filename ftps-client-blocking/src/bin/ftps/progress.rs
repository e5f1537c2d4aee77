//! Transfer progress on stderr, drawn by `indicatif`.
//!
//! A single transfer gets one bar. A run over several files (`put` of many files, `mirror`,
//! with or without `--parallel`) gets a [`Total`] line (files done of all, bytes, rate, ETA)
//! above one line per transfer in flight, one per session. Every transfer ends with a summary
//! line, printed above the bars while they are drawn.
//!
//! [`Mode`] decides what appears: nothing with `--quiet`; bars and summary lines when stderr
//! is a terminal; only the summary lines otherwise (a log file full of redraws helps nobody).

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Redraws per second, at most: enough to look live, few enough to cost nothing.
const REDRAW_HZ: u8 = 10;

/// Longest label shown in a bar; longer labels keep their end (the file name).
const LABEL_WIDTH: usize = 24;

/// One transfer of known size.
const FILE_TEMPLATE: &str =
    "{msg} [{bar:20}] {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}";

/// One transfer of unknown size (the server did not answer SIZE): no bar, no ETA.
const FILE_TEMPLATE_UNSIZED: &str = "{msg} {binary_bytes} {binary_bytes_per_sec}";

/// The total of a run over several files; `{msg}` is "done/all files".
const TOTAL_TEMPLATE: &str =
    "total [{bar:20}] {msg}, {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}";

/// Bar characters: filled, to do. ASCII, as the hand-drawn bar had, for any terminal font.
const BAR_CHARS: &str = "# ";

/// What the reporter prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Nothing at all (`--quiet`).
    Silent,
    /// Only the summary line of each transfer.
    SummaryOnly,
    /// Bars, and the summary lines above them.
    Bar,
}

impl Mode {
    /// The mode for stderr: silent when `quiet`, bars when stderr is a terminal, else only
    /// the summary lines.
    #[must_use]
    pub(crate) fn for_stderr(quiet: bool) -> Mode {
        if quiet {
            Mode::Silent
        } else if io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::SummaryOnly
        }
    }
}

/// A bar style from one of the templates above. They are constants, checked by a test; the
/// fallback only keeps a template mistake from ever failing a transfer.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars(BAR_CHARS)
}

/// A bar of `total` bytes (`None`: unknown), labelled with the end of `label`.
fn file_bar(label: &str, total: Option<u64>, target: ProgressDrawTarget) -> ProgressBar {
    let template = if total.is_some() {
        FILE_TEMPLATE
    } else {
        FILE_TEMPLATE_UNSIZED
    };
    ProgressBar::with_draw_target(total, target)
        .with_style(style(template))
        .with_message(truncate_label(label))
}

/// The total of a run over several files: one line above those of the transfers in flight
/// (drawn only in [`Mode::Bar`]; it counts in every mode).
#[derive(Debug)]
pub(crate) struct Total {
    mode: Mode,
    /// Draws the total line and the file lines together; `None` unless [`Mode::Bar`].
    lines: Option<MultiProgress>,
    /// Position: bytes moved by all transfers; length: bytes to move; message: files done.
    bar: ProgressBar,
    files: usize,
    files_done: AtomicU64,
}

impl Total {
    /// The total of `files` files adding up to `bytes`, shown on stderr as `mode` says.
    #[must_use]
    pub(crate) fn new(mode: Mode, files: usize, bytes: u64) -> Total {
        let target = if mode == Mode::Bar {
            ProgressDrawTarget::stderr_with_hz(REDRAW_HZ)
        } else {
            ProgressDrawTarget::hidden()
        };
        Total::with_target(mode, files, bytes, target)
    }

    fn with_target(mode: Mode, files: usize, bytes: u64, target: ProgressDrawTarget) -> Total {
        let lines = (mode == Mode::Bar).then(|| MultiProgress::with_draw_target(target));
        let bar = ProgressBar::hidden()
            .with_style(style(TOTAL_TEMPLATE))
            .with_message(format!("0/{files} files"));
        bar.set_length(bytes);
        let bar = match &lines {
            // Drawn at once, so the total is the first line before any file's.
            Some(lines) => {
                let bar = lines.add(bar);
                bar.tick();
                bar
            }
            None => bar,
        };
        Total {
            mode,
            lines,
            bar,
            files,
            files_done: AtomicU64::new(0),
        }
    }

    /// A reporter for one file of the run, drawn under the total line.
    #[must_use]
    pub(crate) fn file(&self, label: &str, total: Option<u64>) -> Progress<'_> {
        let bar = self
            .lines
            .as_ref()
            .map(|lines| lines.add(file_bar(label, total, ProgressDrawTarget::hidden())));
        Progress {
            mode: self.mode,
            label: label.to_owned(),
            started: Instant::now(),
            bytes: 0,
            resumed_from: 0,
            bar,
            total: Some(self),
            counted: 0,
            finished: false,
        }
    }

    /// Bytes moved so far by all transfers of the run.
    #[cfg(test)]
    fn bytes(&self) -> u64 {
        self.bar.position()
    }

    /// "done/all files".
    #[cfg(test)]
    fn files_message(&self) -> String {
        self.bar.message()
    }

    fn add_bytes(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// Takes back bytes of a failed try (a retry counts them again).
    fn remove_bytes(&self, bytes: u64) {
        self.bar
            .set_position(self.bar.position().saturating_sub(bytes));
    }

    fn file_done(&self) {
        let done = self.files_done.fetch_add(1, Ordering::Relaxed) + 1;
        self.bar.set_message(format!("{done}/{} files", self.files));
    }

    /// Prints `line` above the bars, or on stderr when none are drawn (whatever the mode:
    /// errors and warnings go through here too).
    pub(crate) fn print(&self, line: &str) {
        match &self.lines {
            Some(lines) => {
                let _ = lines.println(line);
            }
            None => print_line(line),
        }
    }

    /// Ends the run's display: the bars go, the summary lines stay.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
        if let Some(lines) = &self.lines {
            let _ = lines.clear();
        }
    }
}

/// Progress reporter for one transfer: a bar (its own, or a line under a [`Total`]) while it
/// runs, a summary line when it ends.
#[derive(Debug)]
pub(crate) struct Progress<'a> {
    mode: Mode,
    label: String,
    started: Instant,
    bytes: u64,
    /// Bytes present before this run (a resumed transfer), excluded from rates.
    resumed_from: u64,
    bar: Option<ProgressBar>,
    total: Option<&'a Total>,
    /// What this transfer has added to the total so far.
    counted: u64,
    finished: bool,
}

impl Progress<'static> {
    /// A reporter for a transfer on its own: a bar on stderr in [`Mode::Bar`]. `total` is the
    /// expected size when known (SIZE, or the local file size for uploads).
    #[must_use]
    pub(crate) fn new(mode: Mode, label: &str, total: Option<u64>) -> Self {
        let bar = (mode == Mode::Bar)
            .then(|| file_bar(label, total, ProgressDrawTarget::stderr_with_hz(REDRAW_HZ)));
        Progress {
            mode,
            label: label.to_owned(),
            started: Instant::now(),
            bytes: 0,
            resumed_from: 0,
            bar,
            total: None,
            counted: 0,
            finished: false,
        }
    }
}

impl Progress<'_> {
    /// Starts counting from `bytes` already present (a resumed transfer); those bytes do
    /// not count towards the rate.
    pub(crate) fn set_resumed_from(&mut self, bytes: u64) {
        self.resumed_from = bytes;
        self.update(bytes);
        if let Some(bar) = &self.bar {
            // The estimator takes in the jump, then forgets the time before it.
            bar.tick();
            bar.reset_eta();
        }
    }

    /// Records that `bytes` bytes in total have been transferred; the bar redraws itself at
    /// most [`REDRAW_HZ`] times a second.
    pub(crate) fn update(&mut self, bytes: u64) {
        if self.finished {
            return;
        }
        self.bytes = bytes;
        if let Some(bar) = &self.bar {
            bar.set_position(bytes);
        }
        if let Some(total) = self.total {
            // A transfer that starts over (a retry from zero) reports fewer bytes.
            if bytes >= self.counted {
                total.add_bytes(bytes - self.counted);
            } else {
                total.remove_bytes(self.counted - bytes);
            }
            self.counted = bytes;
        }
    }

    /// Bytes transferred so far.
    #[must_use]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
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

    /// Ends the report: removes the bar and prints the summary line (unless silent). Later
    /// calls to `update` and `finish` do nothing.
    pub(crate) fn finish(&mut self, ok: bool) {
        self.end(ok, true);
    }

    /// Ends the report without a summary line (a transfer that failed before it moved a
    /// byte: the error line says it all).
    pub(crate) fn abandon(&mut self) {
        self.end(false, false);
    }

    fn end(&mut self, ok: bool, summary: bool) {
        if self.finished {
            return;
        }
        self.finished = true;
        let line = self.summary_line(Instant::now(), ok);
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
            if let Some(lines) = self.total.and_then(|t| t.lines.as_ref()) {
                lines.remove(&bar);
            }
        }
        if let Some(total) = self.total {
            if ok {
                total.file_done();
            } else {
                // A retry of this file counts its bytes again.
                total.remove_bytes(self.counted);
            }
        }
        if !summary || self.mode == Mode::Silent {
            return;
        }
        match self.total {
            Some(total) => total.print(&line),
            None => print_line(&line),
        }
    }
}

/// Writes one line to stderr. Errors are ignored: progress output must not fail a transfer.
fn print_line(line: &str) {
    let _ = writeln!(io::stderr().lock(), "{line}");
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
fn format_rate(bytes_per_second: f64) -> String {
    if !bytes_per_second.is_finite() || bytes_per_second < 0.0 {
        return "-".to_owned();
    }
    // Saturating float-to-int conversion: absurd rates show as the largest unit.
    format!("{}/s", format_bytes(bytes_per_second.round() as u64))
}

/// Formats an elapsed time for the summary: `0.25 s`, `12.3 s`, `1:05`, `1:02:03`.
fn format_duration(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 10.0 {
        format!("{secs:.2} s")
    } else if secs < 60.0 {
        format!("{secs:.1} s")
    } else {
        let secs = elapsed.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            format!("{h}:{m:02}:{s:02}")
        } else {
            format!("{m}:{s:02}")
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

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
    fn durations() {
        assert_eq!(format_duration(Duration::from_millis(250)), "0.25 s");
        assert_eq!(format_duration(Duration::from_millis(12_340)), "12.3 s");
        assert_eq!(format_duration(Duration::from_secs(65)), "1:05");
        assert_eq!(format_duration(Duration::from_secs(3723)), "1:02:03");
    }

    #[test]
    fn templates_parse() {
        for template in [FILE_TEMPLATE, FILE_TEMPLATE_UNSIZED, TOTAL_TEMPLATE] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn summary_lines() {
        let mut p = Progress::new(Mode::SummaryOnly, "up", Some(100));
        p.update(50);
        let t0 = p.started;
        assert_eq!(
            p.summary_line(t0 + Duration::from_secs(20), false),
            "up: 50 B in 20.0 s (3 B/s) (FAILED)"
        );
        let mut p = Progress::new(Mode::SummaryOnly, "f", Some(2 * MIB));
        p.update(2 * MIB);
        let t0 = p.started;
        assert_eq!(
            p.summary_line(t0 + Duration::from_secs(2), true),
            "f: 2.0 MiB in 2.00 s (1.0 MiB/s)"
        );
        assert_eq!(p.summary_line(t0, true), "f: 2.0 MiB in 0.00 s (-)");
    }

    #[test]
    fn resumed_bytes_do_not_count_towards_rate() {
        let mut p = Progress::new(Mode::Silent, "f", Some(3000));
        p.set_resumed_from(2000);
        p.update(2500);
        let t0 = p.started;
        assert_eq!(
            p.summary_line(t0 + Duration::from_secs(2), true),
            "f: 2.4 KiB in 2.00 s (250 B/s)"
        );
    }

    #[test]
    fn nothing_moves_after_finish() {
        let mut p = Progress::new(Mode::Silent, "f", Some(10));
        p.update(5);
        p.finish(true);
        p.update(9);
        p.finish(false);
        assert_eq!(p.bytes(), 5);
    }

    #[test]
    fn total_counts_bytes_and_files_of_concurrent_transfers() {
        let total = Total::with_target(Mode::Bar, 3, 300, ProgressDrawTarget::hidden());
        assert_eq!(total.files_message(), "0/3 files");
        let mut a = total.file("a", Some(100));
        let mut b = total.file("b", Some(100));
        a.update(60);
        b.update(30);
        a.update(100);
        assert_eq!(total.bytes(), 130);
        a.finish(true);
        assert_eq!(total.files_message(), "1/3 files");
        // A failed try takes its bytes back: its retry counts them again.
        b.finish(false);
        assert_eq!(total.bytes(), 100);
        assert_eq!(total.files_message(), "1/3 files");
        let mut retry = total.file("b", Some(100));
        retry.set_resumed_from(30);
        retry.update(100);
        retry.finish(true);
        let mut c = total.file("c", Some(100));
        c.update(100);
        c.abandon();
        assert_eq!(total.bytes(), 200);
        assert_eq!(total.files_message(), "2/3 files");
        total.finish();
    }

    #[test]
    fn a_transfer_that_starts_over_gives_back_its_bytes() {
        let total = Total::new(Mode::Silent, 1, 100);
        let mut p = total.file("f", Some(100));
        p.update(80);
        p.update(20);
        assert_eq!(total.bytes(), 20);
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
