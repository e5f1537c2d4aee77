//! [`TimeViews`]: the history of a storage as plain read-only paths, so every FTP client can restore from it.
//!
//! - `/@at/<TIME>/<path>`: the tree as it was at TIME (RFC 3339, offsets allowed, seconds optional, or a date
//!   `2026-11-23` meaning 00:00:00Z that day), from [`Storage::list_at`] and friends.
//! - `/@versions/<file>/`: one entry per version of `<file>`, named `<UTC time it became current>-v<id>` (the
//!   current content `-current`), so names sort by time; each can be downloaded.
//!
//! Every change inside either is refused with [`StorageErrorKind::ReadOnlyView`].

use std::sync::Arc;
use std::time::SystemTime;

use super::versioned::{from_micros, to_micros};
use super::{
    BoxFuture, DirEntry, FileKind, Metadata, ReadHandle, Storage, StorageError, StorageErrorKind,
    Upload, VersionInfo, WriteMode,
};

/// The top-level name of the point-in-time view, `/@at/<TIME>/`.
pub const AT_DIR: &str = "@at";
/// The top-level name of the per-file version lists, `/@versions/<file>/`.
pub const VERSIONS_DIR: &str = "@versions";

/// Serves `/@at/` and `/@versions/` from the history methods of the storage it wraps, and everything else from
/// the storage itself. Put it outermost (above a user's [`Subtree`](super::Subtree)), so the views are at each
/// user's root and show only that user's files.
pub struct TimeViews(pub Arc<dyn Storage>);

enum Route {
    Live,
    /// `/@at` itself.
    AtRoot,
    At(SystemTime, String),
    Versions(String),
}

fn route(path: &str) -> Result<Route, StorageError> {
    let mut parts = path.split('/').filter(|p| !p.is_empty() && *p != ".");
    match parts.next() {
        Some(AT_DIR) => {
            let Some(time) = parts.next() else {
                return Ok(Route::AtRoot);
            };
            let at = parse_view_time(time).ok_or_else(|| {
                StorageError::new(
                    StorageErrorKind::InvalidTime,
                    format!("{time:?} is not an RFC 3339 time or a date"),
                )
            })?;
            Ok(Route::At(at, rest(parts)))
        }
        Some(VERSIONS_DIR) => Ok(Route::Versions(rest(parts))),
        _ => Ok(Route::Live),
    }
}

fn rest<'a>(parts: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for p in parts {
        out.push('/');
        out.push_str(p);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn read_only<'a, T: Send + 'a>() -> BoxFuture<'a, Result<T, StorageError>> {
    Box::pin(async {
        Err(StorageError::new(
            StorageErrorKind::ReadOnlyView,
            "the time views are read-only",
        ))
    })
}

fn is_view(path: &str) -> Result<bool, StorageError> {
    Ok(!matches!(route(path)?, Route::Live))
}

fn dir(modified: Option<SystemTime>) -> Metadata {
    Metadata {
        kind: FileKind::Directory,
        size: 0,
        modified,
        mode: None,
    }
}

/// The name of a version in `/@versions/<file>/`: the UTC instant it became current, then its id.
#[must_use]
pub fn version_name(v: &VersionInfo) -> String {
    let micros = to_micros(v.since);
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let day = secs.rem_euclid(86_400);
    let stamp = format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}.{frac:06}Z",
        day / 3600,
        day / 60 % 60,
        day % 60
    );
    if v.id == 0 {
        format!("{stamp}-current")
    } else {
        format!("{stamp}-v{}", v.id)
    }
}

fn version_id(name: &str) -> Option<u64> {
    match name.rsplit_once('-')?.1 {
        "current" => Some(0),
        id => id.strip_prefix('v')?.parse().ok().filter(|id| *id != 0),
    }
}

fn version_meta(v: &VersionInfo) -> Metadata {
    Metadata {
        kind: FileKind::File,
        size: v.size,
        modified: Some(v.since),
        mode: None,
    }
}

impl TimeViews {
    fn inner(&self) -> &dyn Storage {
        &*self.0
    }

    /// `/@versions/<path>`: a folder of versions for a file with history, the live folder otherwise, or one
    /// version.
    async fn versions_metadata(&self, path: &str) -> Result<Metadata, StorageError> {
        if path == "/" {
            return Ok(dir(None));
        }
        let versions = self.inner().versions(path).await?;
        if let Some(last) = versions.last() {
            return Ok(dir(Some(last.since)));
        }
        if let Some((file, name)) = path.rsplit_once('/') {
            let file = if file.is_empty() { "/" } else { file };
            if let Some(id) = version_id(name) {
                let versions = self.inner().versions(file).await?;
                if let Some(v) = versions.iter().find(|v| v.id == id) {
                    return Ok(version_meta(v));
                }
            }
        }
        let meta = self.inner().metadata(path).await?;
        if meta.kind == FileKind::Directory {
            Ok(meta)
        } else {
            Err(StorageError::new(StorageErrorKind::NotFound, "no versions"))
        }
    }

    async fn versions_list(&self, path: &str) -> Result<Vec<DirEntry>, StorageError> {
        let versions = if path == "/" {
            Vec::new()
        } else {
            self.inner().versions(path).await?
        };
        if !versions.is_empty() {
            return Ok(versions
                .iter()
                .map(|v| DirEntry {
                    name: version_name(v),
                    metadata: version_meta(v),
                })
                .collect());
        }
        // A live folder: each file is a folder of its versions.
        let entries = self.inner().list(path).await?;
        Ok(entries
            .into_iter()
            .filter(|e| path != "/" || (e.name != AT_DIR && e.name != VERSIONS_DIR))
            .map(|e| DirEntry {
                name: e.name,
                metadata: dir(e.metadata.modified),
            })
            .collect())
    }

    async fn versions_open(&self, path: &str, offset: u64) -> Result<ReadHandle, StorageError> {
        let not_found = || StorageError::new(StorageErrorKind::NotFound, "no such version");
        let (file, name) = path.rsplit_once('/').ok_or_else(not_found)?;
        let id = version_id(name).ok_or_else(not_found)?;
        let file = if file.is_empty() { "/" } else { file };
        self.inner().open_version(file, id, offset).await
    }
}

impl Storage for TimeViews {
    fn metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        Box::pin(async move {
            match route(path)? {
                Route::Live => self.inner().metadata(path).await,
                Route::AtRoot => Ok(dir(None)),
                Route::At(at, p) => self.inner().metadata_at(&p, at).await,
                Route::Versions(p) => self.versions_metadata(&p).await,
            }
        })
    }

    fn list<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        Box::pin(async move {
            match route(path)? {
                Route::Live => self.inner().list(path).await,
                Route::AtRoot => Ok(Vec::new()),
                Route::At(at, p) => self.inner().list_at(&p, at).await,
                Route::Versions(p) => self.versions_list(&p).await,
            }
        })
    }

    fn open_read<'a>(
        &'a self,
        path: &'a str,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        Box::pin(async move {
            match route(path)? {
                Route::Live => self.inner().open_read(path, offset).await,
                Route::AtRoot => Err(StorageError::new(
                    StorageErrorKind::IsADirectory,
                    "is a directory",
                )),
                Route::At(at, p) => self.inner().open_read_at(&p, at, offset).await,
                Route::Versions(p) => self.versions_open(&p, offset).await,
            }
        })
    }

    fn open_write<'a>(
        &'a self,
        path: &'a str,
        mode: WriteMode,
    ) -> BoxFuture<'a, Result<Box<dyn Upload>, StorageError>> {
        match is_view(path) {
            Ok(false) => self.inner().open_write(path, mode),
            _ => read_only(),
        }
    }

    fn mkdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        match is_view(path) {
            Ok(false) => self.inner().mkdir(path),
            _ => read_only(),
        }
    }

    fn rmdir<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        match is_view(path) {
            Ok(false) => self.inner().rmdir(path),
            _ => read_only(),
        }
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        match is_view(path) {
            Ok(false) => self.inner().delete(path),
            _ => read_only(),
        }
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> BoxFuture<'a, Result<(), StorageError>> {
        match (is_view(from), is_view(to)) {
            (Ok(false), Ok(false)) => self.inner().rename(from, to),
            _ => read_only(),
        }
    }

    fn set_modified<'a>(
        &'a self,
        path: &'a str,
        modified: SystemTime,
    ) -> BoxFuture<'a, Result<(), StorageError>> {
        match is_view(path) {
            Ok(false) => self.inner().set_modified(path, modified),
            _ => read_only(),
        }
    }

    fn set_mode<'a>(&'a self, path: &'a str, mode: u32) -> BoxFuture<'a, Result<(), StorageError>> {
        match is_view(path) {
            Ok(false) => self.inner().set_mode(path, mode),
            _ => read_only(),
        }
    }

    fn metadata_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Metadata, StorageError>> {
        self.inner().metadata_at(path, at)
    }

    fn list_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<DirEntry>, StorageError>> {
        self.inner().list_at(path, at)
    }

    fn open_read_at<'a>(
        &'a self,
        path: &'a str,
        at: SystemTime,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        self.inner().open_read_at(path, at, offset)
    }

    fn versions<'a>(
        &'a self,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Vec<VersionInfo>, StorageError>> {
        self.inner().versions(path)
    }

    fn open_version<'a>(
        &'a self,
        path: &'a str,
        id: u64,
        offset: u64,
    ) -> BoxFuture<'a, Result<ReadHandle, StorageError>> {
        self.inner().open_version(path, id, offset)
    }
}

/// Parses the TIME of `/@at/<TIME>/`: RFC 3339 (`2026-11-23T10:00:00Z`, `2026-11-23T11:00+01:00`, fractions
/// allowed, seconds optional, `T` or `t`) or a date (`2026-11-23`, 00:00:00Z that day). An offset is required with
/// a time of day, so a TIME never depends on the server's time zone.
#[must_use]
pub fn parse_view_time(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) {
        return None;
    }
    let mut micros = days_from_civil(y, mo, d) * 86_400 * 1_000_000;
    if b.len() == 10 {
        return Some(from_micros(micros));
    }
    if !matches!(b[10], b'T' | b't') || b.len() < 17 || b[13] != b':' {
        return None;
    }
    let (h, mi) = (num(11..13)?, num(14..16)?);
    let mut i = 16;
    let mut sec = 0;
    let mut frac_micros = 0;
    if b.get(i) == Some(&b':') {
        sec = num(i + 1..i + 3)?;
        i += 3;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            let mut end = start;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            if end == start {
                return None;
            }
            let digits = &s[start..end.min(start + 6)];
            frac_micros = digits.parse::<i64>().ok()? * 10_i64.pow(6 - digits.len() as u32);
            i = end;
        }
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let offset_secs = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let v = oh * 3600 + om * 60;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return None,
    };
    // A leap second (`:60`) is the instant after `:59`.
    micros += ((h * 3600 + mi * 60 + sec - offset_secs) * 1_000_000) + frac_micros;
    Some(from_micros(micros))
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(t: SystemTime) -> i64 {
        to_micros(t) / 1_000_000
    }

    #[test]
    fn view_times_parse_rfc3339_and_dates() {
        let base = 1_795_392_000; // 2026-11-23T00:00:00Z
        assert_eq!(secs(parse_view_time("2026-11-23").unwrap()), base);
        assert_eq!(
            secs(parse_view_time("2026-11-23T10:00:00Z").unwrap()),
            base + 36_000
        );
        assert_eq!(
            secs(parse_view_time("2026-11-23T10:00Z").unwrap()),
            base + 36_000
        );
        assert_eq!(
            secs(parse_view_time("2026-11-23T11:00:00+01:00").unwrap()),
            base + 36_000
        );
        assert_eq!(
            secs(parse_view_time("2026-11-23t09:30-00:30").unwrap()),
            base + 36_000
        );
        assert_eq!(
            to_micros(parse_view_time("2026-11-23T10:00:00.25Z").unwrap()),
            (base + 36_000) * 1_000_000 + 250_000
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-11-23T10:00:00",
            "2026-11-23T25:00Z",
            "2026-11-23T10:00:00+0100",
            "2026-11-23T10:00:00Zjunk",
            "2026-11-23T10:00:00.Z",
            "２０２６-11-23",
        ] {
            assert!(parse_view_time(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn version_names_sort_by_time_and_round_trip() {
        let a = VersionInfo {
            id: 7,
            since: parse_view_time("2026-11-23T10:00:00.5Z").unwrap(),
            until: None,
            size: 1,
        };
        let b = VersionInfo {
            id: 0,
            since: parse_view_time("2026-11-24").unwrap(),
            until: None,
            size: 1,
        };
        assert_eq!(version_name(&a), "20261123T100000.500000Z-v7");
        assert!(version_name(&a) < version_name(&b));
        assert_eq!(version_id(&version_name(&a)), Some(7));
        assert_eq!(version_id(&version_name(&b)), Some(0));
        assert_eq!(version_id("x-v0"), None);
        assert_eq!(version_id("nothing"), None);
    }
}
