//! Directory listings: MLSD/MLST facts (RFC 3659 section 7) and `LIST` lines (Unix `ls -l` and DOS/IIS forms).
//!
//! One [`Entry`] type serves both: [`parse_fact_line`] / [`format_fact_line`] for machine listings and
//! [`parse_list_line`] / [`format_unix_list_line`] for `LIST`, whose format no RFC defines. Parsers return `None`
//! for lines they cannot read (such as `total 12`); they never panic.

use std::fmt::Write as _;

use super::time::Timeval;

/// One directory entry, from an MLSD/MLST fact line or a `LIST` line.
///
/// Build one with [`Entry::new`] and set the fields that are known; a field is `None` when the listing did not
/// say. MLSD facts this type has no field for are kept in [`other_facts`](Self::other_facts).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The name as listed (for MLST, often a full path). May contain spaces and `;`.
    pub name: String,
    /// What the entry is (`type` fact).
    pub kind: EntryKind,
    /// Size in bytes (`size`, or `sizd` for directories).
    pub size: Option<u64>,
    /// Last modification time, UTC (`modify`).
    pub modified: Option<Timeval>,
    /// RFC 3659 section 7.5.5 permission letters such as `adfrw` (`perm`).
    pub perm: Option<String>,
    /// A server-unique id of the file (`unique`).
    pub unique: Option<String>,
    /// Unix permission bits, e.g. `0o755` (`unix.mode`, or the `rwx` columns of a Unix `LIST` line).
    pub unix_mode: Option<u32>,
    /// Owner name as listed (`unix.owner`, or the owner column of `LIST`; may be numeric).
    pub owner: Option<String>,
    /// Group name as listed (`unix.group`, or the group column of `LIST`; may be numeric).
    pub group: Option<String>,
    /// Numeric user id (`unix.uid`).
    pub uid: Option<u32>,
    /// Numeric group id (`unix.gid`).
    pub gid: Option<u32>,
    /// Every other fact, and known facts whose value could not be read, as `(name, value)` in listing order.
    pub other_facts: Vec<(String, String)>,
}

/// What a directory entry is (RFC 3659 section 7.5.1).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EntryKind {
    /// `type=file`; `-` in `LIST`.
    File,
    /// `type=dir`; `d` in `LIST`.
    Dir,
    /// `type=cdir`: the listed directory itself; `.` in `LIST`.
    CurrentDir,
    /// `type=pdir`: its parent; `..` in `LIST`.
    ParentDir,
    /// A symbolic link, with its target when known: `type=OS.unix=slink:/target`; `l` and `name -> target` in
    /// `LIST`.
    Link(Option<String>),
    /// Any other `type` value, as sent (e.g. `OS.unix=chr` for a character device in `LIST`).
    Other(String),
    /// The listing did not say (no `type` fact).
    Unknown,
}

impl Entry {
    /// An entry with only a name and a kind.
    pub fn new(name: impl Into<String>, kind: EntryKind) -> Self {
        Self {
            name: name.into(),
            kind,
            size: None,
            modified: None,
            perm: None,
            unique: None,
            unix_mode: None,
            owner: None,
            group: None,
            uid: None,
            gid: None,
            other_facts: Vec::new(),
        }
    }

    /// Whether this is a directory, including `cdir` and `pdir`.
    pub fn is_dir(&self) -> bool {
        matches!(
            self.kind,
            EntryKind::Dir | EntryKind::CurrentDir | EntryKind::ParentDir
        )
    }

    /// Records one fact (name case-insensitive, RFC 3659 section 7.1); unreadable or unknown ones go to
    /// `other_facts`.
    fn apply_fact(&mut self, name: &str, value: &str) {
        let known = match name.to_ascii_lowercase().as_str() {
            "type" => {
                self.kind = parse_type_fact(value);
                true
            }
            "size" | "sizd" => set(&mut self.size, parse_decimal(value)),
            "modify" => set(&mut self.modified, Timeval::parse(value)),
            "perm" => set(&mut self.perm, Some(value.to_string())),
            "unique" => set(&mut self.unique, Some(value.to_string())),
            "unix.mode" => set(&mut self.unix_mode, parse_octal(value)),
            "unix.owner" => set(&mut self.owner, Some(value.to_string())),
            "unix.group" => set(&mut self.group, Some(value.to_string())),
            "unix.uid" => set(&mut self.uid, parse_decimal(value)),
            "unix.gid" => set(&mut self.gid, parse_decimal(value)),
            _ => false,
        };
        if !known {
            self.other_facts.push((name.to_string(), value.to_string()));
        }
    }
}

fn set<T>(field: &mut Option<T>, value: Option<T>) -> bool {
    match value {
        Some(value) => {
            *field = Some(value);
            true
        }
        None => false,
    }
}

fn parse_decimal<T: std::str::FromStr>(value: &str) -> Option<T> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn parse_octal(value: &str) -> Option<u32> {
    if value.is_empty() || !value.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(value, 8).ok()
}

const SLINK_PREFIXES: [&str; 2] = ["os.unix=slink", "os.unix=symlink"];

fn parse_type_fact(value: &str) -> EntryKind {
    let lower = value.to_ascii_lowercase();
    match lower.as_str() {
        "file" => return EntryKind::File,
        "dir" => return EntryKind::Dir,
        "cdir" => return EntryKind::CurrentDir,
        "pdir" => return EntryKind::ParentDir,
        _ => {}
    }
    for prefix in SLINK_PREFIXES {
        if lower.starts_with(prefix) {
            // ASCII lower-casing keeps byte offsets, so the target keeps its case.
            let rest = value.get(prefix.len()..).unwrap_or_default();
            if rest.is_empty() {
                return EntryKind::Link(None);
            }
            if let Some(target) = rest.strip_prefix(':') {
                return EntryKind::Link(Some(target.to_string()));
            }
        }
    }
    EntryKind::Other(value.to_string())
}

/// Strips one trailing CRLF or LF.
fn strip_line_end(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// Parses one MLSD line or MLST entry line: `fact=value;fact=value; name` (RFC 3659 section 7.2).
///
/// Facts end at the first space (fact values cannot contain one); exactly one space separates them from the name,
/// which may itself contain spaces and `;`. A final `;` missing before the space is tolerated. A trailing CRLF or
/// LF is ignored; a name that still contains CR or LF is refused. For an MLST reply line, strip its leading space
/// first.
pub fn parse_fact_line(line: &str) -> Option<Entry> {
    let line = strip_line_end(line);
    let (facts, name) = line.split_once(' ')?;
    // A CR or LF left in the name after the line end is not a name (RFC 2640 section 3.1 pads a CR in a pathname
    // with NUL), and [`format_fact_line`] could not write it back.
    if name.is_empty() || name.contains(['\r', '\n']) {
        return None;
    }
    let mut entry = Entry::new(name, EntryKind::Unknown);
    for fact in facts.split(';').filter(|f| !f.is_empty()) {
        let (fact_name, value) = fact.split_once('=')?;
        if fact_name.is_empty() {
            return None;
        }
        entry.apply_fact(fact_name, value);
    }
    Some(entry)
}

/// Whether `value` can be written as a fact value: no `;`, no whitespace, no control characters.
fn fact_value_ok(value: &str) -> bool {
    !value
        .chars()
        .any(|c| c == ';' || c.is_whitespace() || c.is_control())
}

/// Formats an entry as an MLSD line (without CRLF): `type=file;size=12;modify=...; name` (RFC 3659 section 7.2).
///
/// [`parse_fact_line`] reads the result back to an equal entry. Facts whose value cannot be written (it contains
/// `;`, whitespace or control characters) are left out, as is a link target that cannot; the name must not contain
/// CR or LF.
pub fn format_fact_line(entry: &Entry) -> String {
    let mut line = String::new();
    let mut fact = |name: &str, value: &str| {
        if fact_value_ok(value) {
            // Writing into a String cannot fail.
            let _ = write!(line, "{name}={value};");
        }
    };
    match &entry.kind {
        EntryKind::File => fact("type", "file"),
        EntryKind::Dir => fact("type", "dir"),
        EntryKind::CurrentDir => fact("type", "cdir"),
        EntryKind::ParentDir => fact("type", "pdir"),
        EntryKind::Link(Some(target)) if fact_value_ok(target) => {
            fact("type", &format!("OS.unix=slink:{target}"))
        }
        EntryKind::Link(_) => fact("type", "OS.unix=slink"),
        EntryKind::Other(value) => fact("type", value),
        EntryKind::Unknown => {}
    }
    if let Some(size) = entry.size {
        fact(
            if entry.is_dir() { "sizd" } else { "size" },
            &size.to_string(),
        );
    }
    if let Some(modified) = &entry.modified {
        fact("modify", &modified.to_string());
    }
    if let Some(perm) = &entry.perm {
        fact("perm", perm);
    }
    if let Some(unique) = &entry.unique {
        fact("unique", unique);
    }
    if let Some(mode) = entry.unix_mode {
        fact("UNIX.mode", &format!("{mode:04o}"));
    }
    if let Some(owner) = &entry.owner {
        fact("UNIX.owner", owner);
    }
    if let Some(group) = &entry.group {
        fact("UNIX.group", group);
    }
    if let Some(uid) = entry.uid {
        fact("UNIX.uid", &uid.to_string());
    }
    if let Some(gid) = entry.gid {
        fact("UNIX.gid", &gid.to_string());
    }
    for (name, value) in &entry.other_facts {
        if !name.is_empty() && !name.contains('=') && fact_value_ok(name) {
            fact(name, value);
        }
    }
    line.push(' ');
    line.push_str(&entry.name);
    line
}

/// Parses a whole MLSD listing (lines separated by CRLF or LF), skipping lines that are not fact lines.
pub fn parse_mlsd(listing: &str) -> Vec<Entry> {
    listing.lines().filter_map(parse_fact_line).collect()
}

/// Parses a whole `LIST` listing, skipping lines that are not entries (such as `total 12`).
/// See [`parse_list_line`] for `now`.
pub fn parse_list(listing: &str, now: Timeval) -> Vec<Entry> {
    listing
        .lines()
        .filter_map(|line| parse_list_line(line, now))
        .collect()
}

/// Parses one `LIST` line in the Unix `ls -l` form (vsftpd, ProFTPD, Pure-FTPd and most others) or the DOS/IIS
/// form (`01-02-20  03:04PM  <DIR>  name`).
///
/// `now` is the current time (UTC) as the caller knows it: Unix listings give recent dates without a year
/// (`Jan 01 12:00`), meaning the latest such date not after `now` (a day of slack allows for time zones).
/// The engine reads no clock. Returns `None` for lines that are not entries, such as `total 12`.
pub fn parse_list_line(line: &str, now: Timeval) -> Option<Entry> {
    let line = strip_line_end(line);
    let entry = parse_unix_line(line, now).or_else(|| parse_dos_line(line))?;
    // As in [`parse_fact_line`]: a CR or LF left in the name (or link target) after the line end is not part of
    // it (RFC 2640 section 3.1 pads a CR in a pathname with NUL), and [`format_unix_list_line`] could not write it
    // back: a name ending in CR would lose it as the next reader's line end.
    let stray = |text: &str| text.contains(['\r', '\n']);
    if stray(&entry.name) || matches!(&entry.kind, EntryKind::Link(Some(target)) if stray(target)) {
        return None;
    }
    Some(entry)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A token and the byte offset just past it.
struct Token<'a> {
    text: &'a str,
    end: usize,
}

/// The first `max` whitespace-separated tokens of `line`.
fn tokens(line: &str, max: usize) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line
        .char_indices()
        .chain(std::iter::once((line.len(), ' ')))
    {
        let blank = c == ' ' || c == '\t';
        match (start, blank) {
            (None, false) => start = Some(i),
            (Some(s), true) => {
                out.push(Token {
                    text: line.get(s..i).unwrap_or_default(),
                    end: i,
                });
                start = None;
                if out.len() == max {
                    break;
                }
            }
            _ => {}
        }
    }
    out
}

fn month_number(token: &str) -> Option<u8> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(token))
        .and_then(|i| u8::try_from(i + 1).ok())
}

fn all_digits(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit())
}

/// `HH:MM` as (hour, minute).
fn parse_hh_mm(token: &str) -> Option<(u8, u8)> {
    let (h, m) = token.split_once(':')?;
    if h.len() > 2 || m.len() != 2 {
        return None;
    }
    let (hour, minute) = (parse_decimal::<u8>(h)?, parse_decimal::<u8>(m)?);
    (hour < 24 && minute < 60).then_some((hour, minute))
}

/// The Unix `ls -l` family:
/// `drwxr-xr-x    2 1000     1000         4096 Jan 01 12:00 name`, with a year (`Jan 01  2020`) for old dates,
/// `name -> target` for links, `major, minor` instead of the size for devices, and the group column optional.
fn parse_unix_line(line: &str, now: Timeval) -> Option<Entry> {
    let toks = tokens(line, 10);
    let perms = toks.first()?.text.as_bytes();
    let type_char = *perms.first()?;
    let mode_chars = perms.get(1..10)?;
    if !b"-dlcbpsD".contains(&type_char) || !mode_chars.iter().all(|c| b"rwxsStTlL-".contains(c)) {
        return None;
    }
    // The date: month, day, time-or-year, preceded by the size (or a device's minor number).
    let month_index = (3..toks.len().saturating_sub(2)).find(|&i| {
        toks.get(i).and_then(|t| month_number(t.text)).is_some()
            && toks
                .get(i + 1)
                .is_some_and(|t| parse_decimal::<u8>(t.text).is_some_and(|d| (1..=31).contains(&d)))
            && toks.get(i + 2).is_some_and(|t| {
                parse_hh_mm(t.text).is_some() || (t.text.len() == 4 && all_digits(t.text))
            })
            && toks
                .get(i - 1)
                .is_some_and(|t| all_digits(t.text) || is_device_numbers(t.text))
    })?;
    let month = month_number(toks.get(month_index)?.text)?;
    let day: u8 = parse_decimal(toks.get(month_index + 1)?.text)?;
    let time_or_year = toks.get(month_index + 2)?;
    let modified = match parse_hh_mm(time_or_year.text) {
        Some((hour, minute)) => {
            make_timeval(infer_year(month, day, &now), month, day, hour, minute)
        }
        None => make_timeval(parse_decimal(time_or_year.text)?, month, day, 0, 0),
    };

    // Size, or `major, minor` / `major,minor` for devices (no size then).
    let size_token = toks.get(month_index - 1)?.text;
    // Only device files list `major, minor` where the size goes.
    let is_device = matches!(type_char, b'c' | b'b');
    let (size, size_start) = if is_device && is_device_numbers(size_token) {
        (None, month_index - 1)
    } else if is_device
        && toks
            .get(month_index - 2)
            .is_some_and(|t| is_device_major(t.text))
    {
        (None, month_index - 2)
    } else {
        (Some(parse_decimal::<u64>(size_token)?), month_index - 1)
    };
    // Between the permissions and the size: link count, owner, and the group when present.
    let columns: Vec<&str> = toks
        .get(1..size_start)
        .unwrap_or_default()
        .iter()
        .map(|t| t.text)
        .collect();
    let (owner, group) = match columns.as_slice() {
        [_links, owner, group @ ..] => {
            let group = if group.is_empty() {
                None
            } else {
                Some(group.join(" "))
            };
            (Some((*owner).to_string()), group)
        }
        _ => (None, None),
    };

    // The name follows the date after exactly one space: further spaces belong to the name.
    let rest = line.get(time_or_year.end..)?;
    let name = rest.strip_prefix([' ', '\t'])?;
    if name.is_empty() {
        return None;
    }
    let (name, kind) = match type_char {
        b'd' if name == "." => (name, EntryKind::CurrentDir),
        b'd' if name == ".." => (name, EntryKind::ParentDir),
        b'd' => (name, EntryKind::Dir),
        b'-' => (name, EntryKind::File),
        b'l' => match name.split_once(" -> ") {
            Some((name, target)) => (name, EntryKind::Link(Some(target.to_string()))),
            None => (name, EntryKind::Link(None)),
        },
        other => (name, EntryKind::Other(unix_special_type(other).to_string())),
    };
    let mut entry = Entry::new(name, kind);
    entry.size = size;
    entry.modified = modified;
    entry.unix_mode = Some(unix_mode_bits(mode_chars));
    entry.owner = owner;
    entry.group = group;
    Some(entry)
}

/// `4,64` (a device's major and minor numbers in one token).
fn is_device_numbers(token: &str) -> bool {
    token
        .split_once(',')
        .is_some_and(|(major, minor)| all_digits(major) && all_digits(minor))
}

/// `4,` (a device's major number, the minor following as its own token).
fn is_device_major(token: &str) -> bool {
    token.strip_suffix(',').is_some_and(all_digits)
}

/// `type` values for the special files of a Unix `LIST` line, by type character.
const UNIX_SPECIAL_TYPES: [(u8, &str); 5] = [
    (b'c', "OS.unix=chr"),
    (b'b', "OS.unix=blk"),
    (b'p', "OS.unix=fifo"),
    (b's', "OS.unix=socket"),
    (b'D', "OS.unix=door"),
];

fn unix_special_type(type_char: u8) -> &'static str {
    UNIX_SPECIAL_TYPES
        .iter()
        .find(|(c, _)| *c == type_char)
        .map_or("OS.unix=unknown", |(_, t)| t)
}

/// The permission bits of the nine `rwx` columns, with setuid/setgid/sticky.
fn unix_mode_bits(chars: &[u8]) -> u32 {
    let mut mode = 0;
    for (i, &c) in chars.iter().enumerate().take(9) {
        let bit = 1u32 << (8 - i);
        let (set_bit, special) = match (i, c) {
            (_, b'r' | b'w' | b'x') => (true, false),
            (2 | 5, b's') | (8, b't') => (true, true),
            (2 | 5, b'S') | (8, b'T') => (false, true),
            _ => (false, false),
        };
        if set_bit {
            mode |= bit;
        }
        if special {
            mode |= match i {
                2 => 0o4000,
                5 => 0o2000,
                _ => 0o1000,
            };
        }
    }
    mode
}

fn unix_mode_string(mode: u32) -> String {
    let mut out = String::with_capacity(9);
    for i in 0..9 {
        let set = mode & (1 << (8 - i)) != 0;
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        out.push(match (i % 3, set, special) {
            (0, true, _) => 'r',
            (1, true, _) => 'w',
            (2, true, false) => 'x',
            (2, true, true) => {
                if i == 8 {
                    't'
                } else {
                    's'
                }
            }
            (2, false, true) => {
                if i == 8 {
                    'T'
                } else {
                    'S'
                }
            }
            _ => '-',
        });
    }
    out
}

/// The DOS/IIS form: `01-02-20  03:04PM       <DIR>          name` or `01-02-2020  15:04  1234 name`.
fn parse_dos_line(line: &str) -> Option<Entry> {
    let toks = tokens(line, 4);
    let mut date = toks.first()?.text.split(['-', '/']);
    let (month, day, year) = (date.next()?, date.next()?, date.next()?);
    if date.next().is_some() {
        return None;
    }
    let month: u8 = parse_decimal(month)?;
    let day: u8 = parse_decimal(day)?;
    let year: u16 = match year.len() {
        2 => {
            let yy: u16 = parse_decimal(year)?;
            if yy < 70 {
                2000 + yy
            } else {
                1900 + yy
            }
        }
        4 => parse_decimal(year)?,
        _ => return None,
    };
    // The time, with AM/PM attached or as its own token.
    let mut index = 1;
    let time = toks.get(index)?.text;
    let upper = time.to_ascii_uppercase();
    let (clock, meridiem) = if let Some(clock) = upper.strip_suffix("AM") {
        (clock.to_string(), Some(false))
    } else if let Some(clock) = upper.strip_suffix("PM") {
        (clock.to_string(), Some(true))
    } else {
        match toks.get(index + 1).map(|t| t.text.to_ascii_uppercase()) {
            Some(m) if m == "AM" || m == "PM" => {
                index += 1;
                (upper.clone(), Some(m == "PM"))
            }
            _ => (upper.clone(), None),
        }
    };
    let (mut hour, minute) = parse_hh_mm(&clock)?;
    if let Some(pm) = meridiem {
        if !(1..=12).contains(&hour) {
            return None;
        }
        hour = match (hour, pm) {
            (12, false) => 0,
            (12, true) => 12,
            (h, true) => h + 12,
            (h, false) => h,
        };
    }
    index += 1;
    let size_or_dir = toks.get(index)?;
    let (kind, size) = match size_or_dir.text.to_ascii_uppercase().as_str() {
        "<DIR>" => (EntryKind::Dir, None),
        "<JUNCTION>" | "<SYMLINK>" | "<SYMLINKD>" => (EntryKind::Link(None), None),
        text => (
            EntryKind::File,
            Some(parse_decimal::<u64>(&text.replace(',', ""))?),
        ),
    };
    let name = line.get(size_or_dir.end..)?.trim_start_matches([' ', '\t']);
    if name.is_empty() {
        return None;
    }
    let kind = match (kind, name) {
        (EntryKind::Dir, ".") => EntryKind::CurrentDir,
        (EntryKind::Dir, "..") => EntryKind::ParentDir,
        (kind, _) => kind,
    };
    let mut entry = Entry::new(name, kind);
    entry.size = size;
    entry.modified = make_timeval(year, month, day, hour, minute);
    Some(entry)
}

/// Formats an entry as a Unix `ls -l` style `LIST` line (without CRLF), as servers send them:
/// `-rw-r--r--    1 ftp      ftp            12 Jan 01 12:00 name`.
///
/// A modification time within the six months before `now` is written `Mon DD HH:MM`, an older (or future) one
/// `Mon DD  YYYY`, like `ls`. [`parse_list_line`] with the same `now` reads back the name, kind (directories
/// `.`/`..` aside), size, minute-precision time, mode, owner and group. Missing values default to mode `0644`
/// (`0755` for directories), owner and group `ftp`, size 0 and 1970-01-01. Whitespace in owner or group becomes
/// `_`; the name must not contain CR or LF, nor a link's name ` -> `.
pub fn format_unix_list_line(entry: &Entry, now: Timeval) -> String {
    let type_char = match &entry.kind {
        EntryKind::Dir | EntryKind::CurrentDir | EntryKind::ParentDir => 'd',
        EntryKind::Link(_) => 'l',
        EntryKind::Other(t) => UNIX_SPECIAL_TYPES
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(t))
            .map_or('-', |(c, _)| char::from(*c)),
        EntryKind::File | EntryKind::Unknown => '-',
    };
    let default_mode = match type_char {
        'd' => 0o755,
        'l' => 0o777,
        _ => 0o644,
    };
    let mode = unix_mode_string(entry.unix_mode.unwrap_or(default_mode));
    let links = if type_char == 'd' { 2 } else { 1 };
    let owner = list_column(entry.owner.as_deref());
    let group = list_column(entry.group.as_deref());
    let size = entry.size.unwrap_or(0);
    let epoch = Timeval::UNIX_EPOCH;
    let modified = entry.modified.unwrap_or(epoch);
    let month = MONTHS
        .get(usize::from(modified.month.max(1) - 1))
        .copied()
        .unwrap_or("Jan");
    let when = if is_recent(&modified, &now) {
        format!("{:02}:{:02}", modified.hour, modified.minute)
    } else {
        // Four digits always (` 0202`, not `  202`): `ls` pads the same way and the parser expects it.
        format!(" {:04}", modified.year)
    };
    let mut line = format!(
        "{type_char}{mode} {links:>4} {owner:<8} {group:<8} {size:>12} {month} {:02} {when} ",
        modified.day
    );
    line.push_str(&entry.name);
    if let EntryKind::Link(Some(target)) = &entry.kind {
        line.push_str(" -> ");
        line.push_str(target);
    }
    line
}

fn list_column(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v
            .chars()
            .map(|c| {
                if c.is_whitespace() || c.is_control() {
                    '_'
                } else {
                    c
                }
            })
            .collect(),
        _ => "ftp".to_string(),
    }
}

/// Whether `ls` would show `time` with a clock rather than a year: within six months before `now`, and dated so
/// that [`infer_year`] gives its year back.
fn is_recent(time: &Timeval, now: &Timeval) -> bool {
    let days = days_from_civil(i64::from(time.year), time.month, time.day);
    let now_days = days_from_civil(i64::from(now.year), now.month, now.day);
    days > now_days - 183 && infer_year(time.month, time.day, now) == time.year
}

/// The year of a year-less `Mon DD` date: `now`'s year, unless that puts it more than a day after `now`.
fn infer_year(month: u8, day: u8, now: &Timeval) -> u16 {
    let now_days = days_from_civil(i64::from(now.year), now.month, now.day);
    if days_from_civil(i64::from(now.year), month, day) > now_days + 1 {
        now.year.saturating_sub(1)
    } else {
        now.year
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// A whole-minute time, when the date exists.
fn make_timeval(year: u16, month: u8, day: u8, hour: u8, minute: u8) -> Option<Timeval> {
    Timeval::new(year, month, day, hour, minute, 0, None)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tv(year: u16, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> Timeval {
        Timeval::new(year, month, day, hour, minute, second, None).unwrap()
    }

    const NOW: Timeval = Timeval {
        year: 2024,
        month: 3,
        day: 1,
        hour: 12,
        minute: 0,
        second: 0,
        millisecond: None,
    };

    #[test]
    fn mlsd_lines_from_proftpd() {
        let line = "modify=20240101120000;perm=adfr;size=12;type=file;unique=FD00U3;UNIX.group=1000;\
                    UNIX.groupname=user;UNIX.mode=0644;UNIX.owner=1000;UNIX.ownername=user; hello world.txt\r\n";
        let entry = parse_fact_line(line).unwrap();
        let mut expected = Entry::new("hello world.txt", EntryKind::File);
        expected.size = Some(12);
        expected.modified = Some(tv(2024, 1, 1, 12, 0, 0));
        expected.perm = Some("adfr".into());
        expected.unique = Some("FD00U3".into());
        expected.unix_mode = Some(0o644);
        expected.owner = Some("1000".into());
        expected.group = Some("1000".into());
        expected.other_facts = vec![
            ("UNIX.groupname".into(), "user".into()),
            ("UNIX.ownername".into(), "user".into()),
        ];
        assert_eq!(entry, expected);

        let cdir = parse_fact_line("modify=20240101120000;perm=flcdmpe;type=cdir;unique=FD00U2; .")
            .unwrap();
        assert_eq!(cdir.kind, EntryKind::CurrentDir);
        assert_eq!(cdir.name, ".");
        let pdir = parse_fact_line("type=pdir;perm=el; ..").unwrap();
        assert_eq!(pdir.kind, EntryKind::ParentDir);
    }

    #[test]
    fn mlsd_lines_from_pureftpd() {
        let text = "type=cdir;sizd=4096;modify=20240101120000;UNIX.mode=0755;UNIX.uid=1000;UNIX.gid=1000;unique=803g2; .\r\n\
                    type=file;size=12;modify=20240101120000.5;UNIX.mode=0644;UNIX.uid=1000;UNIX.gid=1000;unique=803g3; a;b c\r\n\
                    type=OS.unix=slink:/etc/hosts;size=10;modify=20240101120000;UNIX.mode=0777; hosts\r\n\
                    type=Dir;modify=20240101120000;UNIX.mode=02755; sub\r\n";
        let entries = parse_mlsd(text);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].kind, EntryKind::CurrentDir);
        assert_eq!(entries[0].size, Some(4096));
        assert_eq!((entries[0].uid, entries[0].gid), (Some(1000), Some(1000)));
        assert_eq!(entries[1].name, "a;b c");
        assert_eq!(entries[1].unique.as_deref(), Some("803g3"));
        assert_eq!(entries[1].modified.unwrap().millisecond, Some(500));
        assert_eq!(entries[2].kind, EntryKind::Link(Some("/etc/hosts".into())));
        assert_eq!(entries[3].kind, EntryKind::Dir);
        assert_eq!(entries[3].unix_mode, Some(0o2755));
        assert!(entries.iter().all(|e| e.other_facts.is_empty()));
    }

    #[test]
    fn fact_line_edge_cases() {
        // No facts at all; a leading space in the name is kept; a missing final `;` is tolerated.
        assert_eq!(
            parse_fact_line(" name").unwrap(),
            Entry::new("name", EntryKind::Unknown)
        );
        assert_eq!(
            parse_fact_line("type=file;  spaced").unwrap().name,
            " spaced"
        );
        assert_eq!(
            parse_fact_line("type=file name").unwrap().kind,
            EntryKind::File
        );
        // Unreadable known facts are kept as they were.
        let entry = parse_fact_line("Size=big;MODIFY=2024;type=OS.unix=symlink; x").unwrap();
        assert_eq!(entry.kind, EntryKind::Link(None));
        assert_eq!(
            entry.other_facts,
            vec![
                ("Size".into(), "big".into()),
                ("MODIFY".into(), "2024".into())
            ]
        );
        assert_eq!(
            parse_fact_line("type=OS.unix=blkdev; sda").unwrap().kind,
            EntryKind::Other("OS.unix=blkdev".into())
        );
        for bad in [
            "",
            "type=file;",
            "type=file; ",
            "nofact; name",
            "=x; name",
            "total 12",
            // Found by the `listing` fuzz target: the name "\r" parsed, but its formatted line did not.
            "x=; \r\r",
            "type=file; a\rb",
            "type=file; a\nb",
        ] {
            assert_eq!(parse_fact_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_fact_lines() {
        let mut entry = Entry::new("my file;1", EntryKind::File);
        entry.size = Some(12);
        entry.modified = Some(tv(2024, 1, 2, 3, 4, 5));
        entry.perm = Some("adfrw".into());
        entry.unix_mode = Some(0o644);
        entry.other_facts = vec![
            ("media-type".into(), "text/plain".into()),
            ("bad".into(), "a b".into()),
        ];
        assert_eq!(
            format_fact_line(&entry),
            "type=file;size=12;modify=20240102030405;perm=adfrw;UNIX.mode=0644;media-type=text/plain; my file;1"
        );
        let mut dir = Entry::new("d", EntryKind::Dir);
        dir.size = Some(4096);
        assert_eq!(format_fact_line(&dir), "type=dir;sizd=4096; d");
        let link = Entry::new("l", EntryKind::Link(Some("bad;target".into())));
        assert_eq!(format_fact_line(&link), "type=OS.unix=slink; l");
        assert_eq!(format_fact_line(&Entry::new("n", EntryKind::Unknown)), " n");
    }

    #[test]
    fn list_lines_from_vsftpd() {
        let entry = parse_list_line(
            "drwxr-xr-x    2 1000     1000         4096 Jan 01 12:00 name with spaces",
            NOW,
        )
        .unwrap();
        let mut expected = Entry::new("name with spaces", EntryKind::Dir);
        expected.size = Some(4096);
        expected.modified = Some(tv(2024, 1, 1, 12, 0, 0));
        expected.unix_mode = Some(0o755);
        expected.owner = Some("1000".into());
        expected.group = Some("1000".into());
        assert_eq!(entry, expected);

        let old = parse_list_line(
            "-rw-r--r--    1 ftp      ftp            12 Mar 15  2020 old.txt\r\n",
            NOW,
        )
        .unwrap();
        assert_eq!(
            (old.kind, old.size, old.modified),
            (EntryKind::File, Some(12), Some(tv(2020, 3, 15, 0, 0, 0)))
        );

        let link = parse_list_line(
            "lrwxrwxrwx    1 0        0               7 Feb 02 10:00 link -> target dir",
            NOW,
        )
        .unwrap();
        assert_eq!(link.name, "link");
        assert_eq!(link.kind, EntryKind::Link(Some("target dir".into())));
        assert_eq!(link.unix_mode, Some(0o777));
    }

    #[test]
    fn list_lines_from_proftpd_and_pureftpd() {
        let listing = "total 24\r\n\
            drwxr-xr-x   2 user     group        4096 Jun  5 09:07 .\r\n\
            drwxr-xr-x   3 user     group        4096 Jun  5 09:07 ..\r\n\
            -rw-r--r--   1 user     group        1234 Jun  5  2023 file.txt\r\n\
            -rwsr-sr-t   1 root     root        51234 Nov 30 23:59 setuid\r\n\
            crw-rw-rw-   1 root     root       1,   3 Jan  1  2020 null\r\n\
            brw-rw----   1 root     disk          8,0 Jan  1  2020 sda\r\n\
            -rw-r--r--   1 owner          512 Feb 29 12:00 nogroup\r\n\
            -rw-r--r--+  1 user     group           0 Jan 01 00:00  leading space\r\n";
        let entries = parse_list(listing, NOW);
        assert_eq!(entries.len(), 8);
        assert_eq!(entries[0].kind, EntryKind::CurrentDir);
        assert_eq!(entries[1].kind, EntryKind::ParentDir);
        // June is after March 2024, so a year-less June date is in 2023.
        assert_eq!(entries[0].modified, Some(tv(2023, 6, 5, 9, 7, 0)));
        assert_eq!(entries[2].modified, Some(tv(2023, 6, 5, 0, 0, 0)));
        assert_eq!(entries[3].unix_mode, Some(0o7755));
        assert_eq!(entries[3].modified, Some(tv(2023, 11, 30, 23, 59, 0)));
        assert_eq!(
            (entries[4].kind.clone(), entries[4].size),
            (EntryKind::Other("OS.unix=chr".into()), None)
        );
        assert_eq!(entries[4].name, "null");
        assert_eq!(
            (entries[5].kind.clone(), entries[5].size),
            (EntryKind::Other("OS.unix=blk".into()), None)
        );
        assert_eq!(entries[5].group.as_deref(), Some("disk"));
        assert_eq!(
            (entries[6].owner.as_deref(), entries[6].group.as_deref()),
            (Some("owner"), None)
        );
        assert_eq!(entries[6].modified, Some(tv(2024, 2, 29, 12, 0, 0)));
        assert_eq!(entries[7].name, " leading space");
    }

    #[test]
    fn device_numbers_only_for_device_files() {
        let entry = parse_list_line("-rw-r--r-- 1 o 4, 12 Jan 01 12:00 x", NOW).unwrap();
        assert_eq!((entry.size, entry.group.as_deref()), (Some(12), Some("4,")));
        assert_eq!(
            parse_list_line("-rw-r--r-- 1 o g 4,12 Jan 01 12:00 x", NOW),
            None
        );
    }

    #[test]
    fn year_inference_uses_now() {
        let year_of = |date: &str| {
            let line = format!("-rw-r--r-- 1 a b 1 {date} f");
            parse_list_line(&line, NOW).unwrap().modified.unwrap().year
        };
        assert_eq!(year_of("Dec 31 12:00"), 2023);
        assert_eq!(year_of("Mar 01 12:00"), 2024);
        assert_eq!(year_of("Mar 02 12:00"), 2024);
        assert_eq!(year_of("Mar 03 12:00"), 2023);
    }

    #[test]
    fn list_lines_from_iis() {
        let entry = parse_list_line("01-02-20  03:04PM       <DIR>          name", NOW).unwrap();
        let mut expected = Entry::new("name", EntryKind::Dir);
        expected.modified = Some(tv(2020, 1, 2, 15, 4, 0));
        assert_eq!(entry, expected);
        let entry = parse_list_line("01-02-2020  15:04  1234 name with spaces\r\n", NOW).unwrap();
        assert_eq!(entry.name, "name with spaces");
        assert_eq!((entry.kind, entry.size), (EntryKind::File, Some(1234)));
        let entry = parse_list_line("12-31-99  12:00AM             1,234 a.txt", NOW).unwrap();
        assert_eq!(
            (entry.size, entry.modified),
            (Some(1234), Some(tv(1999, 12, 31, 0, 0, 0)))
        );
        let entry = parse_list_line("07-04-21  12:30 PM  <DIR>  x", NOW).unwrap();
        assert_eq!(entry.modified, Some(tv(2021, 7, 4, 12, 30, 0)));
        for bad in [
            "total 12",
            "",
            "01-02-20  13:04PM  <DIR>  x",
            "01-02-20  03:04PM  <DIR>",
            "d?????????  x",
        ] {
            assert_eq!(parse_list_line(bad, NOW), None, "{bad:?}");
        }
    }

    /// Found by the `listing` fuzz target (`fuzz/corpus/listing/crash-bfb077a4`): a name ending in CR parsed, but
    /// its formatted line read back without the CR. CR or LF left in a name or link target refuses the line, as
    /// `parse_fact_line` does.
    #[test]
    fn list_lines_with_cr_or_lf_in_the_name_are_refused() {
        for bad in [
            "01-02-20  03:04PM  12 a\r\r",
            "01-02-20  03:04PM  12 a\r\r\n",
            "01-02-20  03:04PM  12 a\rb",
            "01-02-20  03:04PM  12 a\n\n",
            "-rw-r--r--   1 user     group        12 Jan  1  2020 a\r\r\n",
            "lrwxrwxrwx   1 user     group         1 Jan  1  2020 l -> t\r\r\n",
        ] {
            assert_eq!(parse_list_line(bad, NOW), None, "{bad:?}");
        }
        // One line end is still stripped, and the name round-trips.
        let entry = parse_list_line("01-02-20  03:04PM  12 a\r\n", NOW).unwrap();
        assert_eq!(entry.name, "a");
        let formatted = format_unix_list_line(&entry, NOW);
        assert_eq!(parse_list_line(&formatted, NOW).unwrap().name, "a");
    }

    #[test]
    fn formats_unix_list_lines() {
        let mut entry = Entry::new("notes.txt", EntryKind::File);
        entry.size = Some(1234);
        entry.modified = Some(tv(2024, 2, 10, 8, 5, 59));
        entry.owner = Some("alice".into());
        entry.group = Some("staff".into());
        assert_eq!(
            format_unix_list_line(&entry, NOW),
            "-rw-r--r--    1 alice    staff            1234 Feb 10 08:05 notes.txt"
        );
        entry.modified = Some(tv(2023, 3, 3, 8, 5, 0));
        assert_eq!(
            format_unix_list_line(&entry, NOW),
            "-rw-r--r--    1 alice    staff            1234 Mar 03  2023 notes.txt"
        );
        let mut link = Entry::new("l", EntryKind::Link(Some("/t".into())));
        link.owner = Some("a b".into());
        assert_eq!(
            format_unix_list_line(&link, NOW),
            "lrwxrwxrwx    1 a_b      ftp                 0 Jan 01  1970 l -> /t"
        );
        let mut dir = Entry::new("d", EntryKind::Dir);
        dir.unix_mode = Some(0o1777);
        assert!(format_unix_list_line(&dir, NOW).starts_with("drwxrwxrwt    2 "));
    }

    fn arb_timeval() -> impl Strategy<Value = Timeval> {
        (
            1970u16..2100,
            1u8..=12,
            1u8..=28,
            0u8..24,
            0u8..60,
            0u8..60,
            proptest::option::of(0u16..1000),
        )
            .prop_map(|(y, mo, d, h, mi, s, ms)| Timeval::new(y, mo, d, h, mi, s, ms).unwrap())
    }

    fn fact_value() -> impl Strategy<Value = String> {
        "[!-:<-~]{0,12}"
    }

    fn arb_kind() -> impl Strategy<Value = EntryKind> {
        prop_oneof![
            Just(EntryKind::File),
            Just(EntryKind::Dir),
            Just(EntryKind::CurrentDir),
            Just(EntryKind::ParentDir),
            Just(EntryKind::Unknown),
            proptest::option::of(fact_value()).prop_map(EntryKind::Link),
            "x\\.[a-z]{1,8}".prop_map(EntryKind::Other),
        ]
    }

    prop_compose! {
        fn arb_entry()(
            name in "[^\r\n]{1,20}",
            kind in arb_kind(),
            size in proptest::option::of(any::<u64>()),
            modified in proptest::option::of(arb_timeval()),
            perm in proptest::option::of("[acdeflmprw]{0,6}"),
            unique in proptest::option::of(fact_value()),
            unix_mode in proptest::option::of(0u32..0o10000),
            owner in proptest::option::of(fact_value()),
            group in proptest::option::of(fact_value()),
            uid in proptest::option::of(any::<u32>()),
            gid in proptest::option::of(any::<u32>()),
            other_facts in prop::collection::vec(("x\\.[a-zA-Z.]{1,8}", fact_value()), 0..3),
        ) -> Entry {
            let mut entry = Entry::new(name, kind);
            entry.size = size;
            entry.modified = modified;
            entry.perm = perm;
            entry.unique = unique;
            entry.unix_mode = unix_mode;
            entry.owner = owner;
            entry.group = group;
            entry.uid = uid;
            entry.gid = gid;
            entry.other_facts = other_facts;
            entry
        }
    }

    proptest! {
        #[test]
        fn fact_lines_round_trip(entry in arb_entry()) {
            let line = format_fact_line(&entry);
            prop_assert_eq!(parse_fact_line(&line), Some(entry));
        }

        #[test]
        fn unix_list_lines_round_trip(
            name in "[^\r\n ][^\r\n]{0,20}", kind in arb_kind(), size in any::<u64>(),
            modified in arb_timeval(), mode in 0u32..0o10000, owner in "[a-z0-9]{1,10}",
            group in proptest::option::of("[a-z0-9]{1,10}"), now in arb_timeval(),
        ) {
            prop_assume!(name != "." && name != ".." && !name.contains(" -> "));
            let kind = match kind {
                EntryKind::CurrentDir | EntryKind::ParentDir => EntryKind::Dir,
                EntryKind::Other(_) | EntryKind::Unknown => EntryKind::File,
                EntryKind::Link(Some(t)) if t.is_empty() => EntryKind::Link(None),
                kind => kind,
            };
            let mut entry = Entry::new(name.clone(), kind.clone());
            entry.size = Some(size);
            entry.modified = Some(modified);
            entry.unix_mode = Some(mode);
            entry.owner = Some(owner.clone());
            entry.group = group.clone();
            let line = format_unix_list_line(&entry, now);
            let parsed = parse_list_line(&line, now).unwrap();
            prop_assert_eq!(parsed.name, name);
            prop_assert_eq!(parsed.kind, kind);
            prop_assert_eq!(parsed.size, Some(size));
            prop_assert_eq!(parsed.unix_mode, Some(mode));
            prop_assert_eq!(parsed.owner, Some(owner));
            prop_assert_eq!(parsed.group, Some(group.unwrap_or_else(|| "ftp".into())));
            let got = parsed.modified.unwrap();
            prop_assert_eq!((got.year, got.month, got.day), (modified.year, modified.month, modified.day));
            if is_recent(&modified, &now) {
                prop_assert_eq!((got.hour, got.minute), (modified.hour, modified.minute));
            }
        }

        #[test]
        fn parsers_never_panic(line in "\\PC{0,80}", bytes in prop::collection::vec(any::<u8>(), 0..80), now in arb_timeval()) {
            let _ = parse_fact_line(&line);
            let _ = parse_list_line(&line, now);
            let lossy = String::from_utf8_lossy(&bytes);
            let _ = parse_fact_line(&lossy);
            let _ = parse_list_line(&lossy, now);
        }

        #[test]
        fn list_like_lines_never_panic(
            perms in "[-dlcbps][rwxsStT-]{9}[+@.]?",
            cols in prop::collection::vec("[0-9a-zA-Z,]{1,6}", 0..6),
            tail in "[ 0-9A-Za-z:,>-]{0,30}",
            now in arb_timeval(),
        ) {
            let line = format!("{perms} {} {tail}", cols.join(" "));
            let _ = parse_list_line(&line, now);
        }
    }
}

#[cfg(test)]
mod year_padding_regression {
    use super::*;

    /// Found by the `listing` fuzz target: a year below 1000 was written as `  202` and did not parse back.
    #[test]
    fn old_years_keep_four_digits_and_round_trip() {
        let now = Timeval::new(2026, 11, 23, 12, 0, 0, None).unwrap();
        let line = "drwxr-xr-x    2 tp 4 Jan 01  0202 a 12:00 name";
        let entry = parse_list_line(line, now).unwrap();
        let formatted = format_unix_list_line(&entry, now);
        assert!(formatted.contains(" 0202 "), "{formatted}");
        let again = parse_list_line(&formatted, now).unwrap();
        assert_eq!(again.name, entry.name);
        assert_eq!(again.modified, entry.modified);
    }
}
