//! Listing text: `LIST` (Unix `ls -l`), `NLST` (names) and `MLSD`/`MLST` facts (RFC 3659 section 7), formatted
//! by the engine from [`FileInfo`] so that frontends contain no FTP formats.

use std::fmt::Write;

use super::request::{FileInfo, FileKind, ListFormat};
use crate::codec::Timeval;

/// The MLST facts this server supports, in FEAT order (RFC 3659 section 7.8).
pub(crate) const FACTS: [&str; 6] = ["type", "size", "modify", "perm", "unique", "unix.mode"];

/// Which facts `MLST`/`MLSD` show (`OPTS MLST`), one flag per entry of [`FACTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FactSet(pub(crate) [bool; 6]);

impl Default for FactSet {
    /// The default set, marked `*` in FEAT: all but `unix.mode`.
    fn default() -> Self {
        Self([true, true, true, true, true, false])
    }
}

impl FactSet {
    /// The FEAT `MLST` parameter: every fact, `*` on the selected ones.
    pub(crate) fn feat(&self) -> String {
        let mut out = String::new();
        for (name, on) in FACTS.iter().zip(self.0) {
            out.push_str(name);
            if on {
                out.push('*');
            }
            out.push(';');
        }
        out
    }

    /// Applies `OPTS MLST a;b;`: unknown names are ignored (RFC 3659 section 7.9); returns the accepted list.
    pub(crate) fn select(&mut self, list: &str) -> String {
        let mut next = [false; 6];
        let mut accepted = String::new();
        for wanted in list.split(';').map(str::trim).filter(|f| !f.is_empty()) {
            if let Some(i) = FACTS.iter().position(|f| f.eq_ignore_ascii_case(wanted)) {
                if let Some(slot) = next.get_mut(i) {
                    if !*slot {
                        *slot = true;
                        let _ = write!(accepted, "{};", FACTS.get(i).copied().unwrap_or(""));
                    }
                }
            }
        }
        self.0 = next;
        accepted
    }
}

/// RFC 3659 time-val, to the second.
pub(crate) fn timeval(t: &Timeval) -> String {
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// Unix permission bits, defaulting by kind when unknown.
fn mode_of(info: &FileInfo) -> u32 {
    info.mode.unwrap_or(match info.kind {
        FileKind::Dir => 0o755,
        FileKind::File => 0o644,
        FileKind::Symlink => 0o777,
    }) & 0o7777
}

/// The RFC 3659 `perm` fact (section 7.5.5), from the owner bits.
fn perm(info: &FileInfo) -> String {
    let mode = mode_of(info);
    let (r, w, x) = (mode & 0o400 != 0, mode & 0o200 != 0, mode & 0o100 != 0);
    let mut out = String::new();
    match info.kind {
        FileKind::Dir => {
            if w {
                out.push_str("cdfmp");
            }
            if x {
                out.push('e');
            }
            if r {
                out.push('l');
            }
        }
        FileKind::File | FileKind::Symlink => {
            if w {
                out.push_str("adfw");
            }
            if r {
                out.push('r');
            }
        }
    }
    out
}

/// One fact line without the leading space: `type=file;size=3; name`.
pub(crate) fn facts(info: &FileInfo, set: FactSet, name: &str) -> String {
    let mut out = String::new();
    let [ty, size, modify, perm_on, unique, unix_mode] = set.0;
    if ty {
        let kind = match info.kind {
            FileKind::Dir => "dir",
            FileKind::File => "file",
            FileKind::Symlink => "OS.unix=symlink",
        };
        let _ = write!(out, "type={kind};");
    }
    if size {
        let _ = write!(out, "size={};", info.size);
    }
    if modify {
        if let Some(t) = &info.modified {
            let _ = write!(out, "modify={};", timeval(t));
        }
    }
    if perm_on {
        let _ = write!(out, "perm={};", perm(info));
    }
    if unique {
        if let Some(u) = info
            .unique
            .as_deref()
            .filter(|u| !u.contains([';', ' ', '\r', '\n']))
        {
            let _ = write!(out, "unique={u};");
        }
    }
    if unix_mode {
        let _ = write!(out, "unix.mode=0{:o};", mode_of(info));
    }
    out.push(' ');
    out.push_str(name);
    out
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Half a Gregorian year in seconds: what `ls -l` (GNU coreutils) calls recent.
const SIX_MONTHS_SECONDS: i64 = 31_556_952 / 2;

/// One `ls -l` line without line end. The date is `Mon dd HH:MM` when the file was modified within the six
/// months up to `now`, and `Mon dd  yyyy` when it is older, in the future, or `now` is unknown (the engine
/// reads no clock: the frontend passes it with the listing).
pub(crate) fn unix_line(info: &FileInfo, now: Option<&Timeval>) -> String {
    let mode = mode_of(info);
    let kind = match info.kind {
        FileKind::Dir => 'd',
        FileKind::File => '-',
        FileKind::Symlink => 'l',
    };
    let mut bits = String::with_capacity(9);
    for shift in [6u32, 3, 0] {
        let b = (mode >> shift) & 7;
        bits.push(if b & 4 != 0 { 'r' } else { '-' });
        bits.push(if b & 2 != 0 { 'w' } else { '-' });
        bits.push(if b & 1 != 0 { 'x' } else { '-' });
    }
    let date = match &info.modified {
        Some(t) => {
            let month = MONTHS
                .get(usize::from(t.month.saturating_sub(1)))
                .copied()
                .unwrap_or("Jan");
            let age = now.map(|now| now.to_unix_seconds() - t.to_unix_seconds());
            if age.is_some_and(|age| (0..=SIX_MONTHS_SECONDS).contains(&age)) {
                format!("{month} {:>2} {:02}:{:02}", t.day, t.hour, t.minute)
            } else {
                format!("{month} {:>2}  {:04}", t.day, t.year)
            }
        }
        None => "Jan  1  1970".to_owned(),
    };
    format!(
        "{kind}{bits} 1 {} {} {:>12} {date} {}",
        info.owner.as_deref().unwrap_or("ftp"),
        info.group.as_deref().unwrap_or("ftp"),
        info.size,
        info.name
    )
}

/// The data-connection bytes of a listing, CRLF-terminated lines (RFC 959: listings travel as `TYPE A`).
pub(crate) fn render(
    entries: &[FileInfo],
    format: ListFormat,
    set: FactSet,
    now: Option<&Timeval>,
) -> Vec<u8> {
    let mut out = String::new();
    for entry in entries {
        // A name with a line break would forge listing lines; skip it rather than mangle it.
        if entry.name.contains(['\r', '\n']) {
            continue;
        }
        match format {
            ListFormat::Unix => out.push_str(&unix_line(entry, now)),
            ListFormat::Mlsd => out.push_str(&facts(entry, set, &entry.name)),
            ListFormat::Names => out.push_str(&entry.name),
        }
        out.push_str("\r\n");
    }
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_at(t: &str) -> FileInfo {
        let mut info = FileInfo::new("f", FileKind::File, 3);
        info.modified = Timeval::parse(t);
        info
    }

    fn date_of(line: &str) -> &str {
        // `-rw-r--r-- 1 ftp ftp            3 Dec  6 06:06 f`: the 12 characters before the name.
        line.get(line.len() - 2 - 12..line.len() - 2).unwrap_or("")
    }

    #[test]
    fn recent_files_show_the_time_of_day_older_and_future_ones_the_year() {
        let now = Timeval::parse("20261206111500").unwrap();
        for (modified, date) in [
            ("20261206060600", "Dec  6 06:06"), // minutes old
            ("20261206111500", "Dec  6 11:15"), // this very second
            ("20260701000000", "Jul  1 00:00"), // five months
            ("20260601000000", "Jun  1  2026"), // more than six months
            ("20251206060600", "Dec  6  2025"), // a year
            ("20261207000000", "Dec  7  2026"), // the future
        ] {
            let line = unix_line(&file_at(modified), Some(&now));
            assert_eq!(date_of(&line), date, "{modified}: {line}");
        }
        // Without a clock: always the year.
        let line = unix_line(&file_at("20261206060600"), None);
        assert_eq!(date_of(&line), "Dec  6  2026", "{line}");
    }
}
