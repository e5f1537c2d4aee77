//! Planning for `ftps mirror`: which directories to create and which files to transfer.
//!
//! Pure: the caller walks the local tree ([`walk_local`]) and lists the remote one (MLSD,
//! RFC 3659 §7, or LIST), then [`plan`] compares the two as [`TreeEntry`] lists. Mirroring
//! never deletes: files only on the destination are reported as [`Plan::extraneous`].
//!
//! # When a file is up to date
//!
//! A file present on both sides is transferred when the sizes differ, or when the source is
//! newer than the destination by more than the tolerance. The tolerance is the larger of the
//! two sides' [`TimePrecision::tolerance`]: 1 s for local and MLSD/MDTM times (RFC 3659
//! §2.3, UTC, at least second precision), 60 s for LIST times (minute precision), one day
//! for LIST times of old files (date only). LIST times are in the server's local time zone;
//! the caller converts them, the tolerance does not absorb zone offsets.
//!
//! A destination that is *newer* is left alone: a server that ignores MFMT stamps an upload
//! with the time of the upload, and "different" instead of "older" would re-send every file
//! on every run. After a transfer the client should copy the source time to the
//! destination (MFMT for uploads, `File::set_modified` for downloads).
//!
//! With equal sizes and a time missing on either side, the file is skipped
//! ([`SkipReason::TimeUnknown`]): a size-only comparison, which is what a server without
//! MLSD or MDTM allows.
//!
//! # Names from the peer
//!
//! A remote listing is peer input. Paths that are absolute, contain `.`, `..` or empty
//! segments, a backslash or a control character are never planned (they could write outside
//! the local root on download); they are listed in [`Plan::rejected`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Whether an entry is a file or a directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// How precise an entry's modification time is, which sets the comparison tolerance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum TimePrecision {
    /// Local file system, MLSD `modify` fact or MDTM (RFC 3659): tolerance 1 s.
    Second,
    /// LIST with a time of day (`Jan  2 12:34`): tolerance 60 s.
    Minute,
    /// LIST with a year instead of a time (`Jan  2  2019`): tolerance 1 day.
    Day,
}

impl TimePrecision {
    /// The largest difference still counted as "the same time".
    #[must_use]
    pub(crate) fn tolerance(self) -> Duration {
        match self {
            TimePrecision::Second => Duration::from_secs(1),
            TimePrecision::Minute => Duration::from_secs(60),
            TimePrecision::Day => Duration::from_secs(24 * 3600),
        }
    }
}

/// One file or directory of a tree, relative to the tree's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeEntry {
    /// Path relative to the root, `/`-separated, without leading or trailing `/`.
    pub(crate) path: String,
    /// File or directory.
    pub(crate) kind: EntryKind,
    /// Size in bytes (ignored for directories).
    pub(crate) size: u64,
    /// Modification time, when known.
    pub(crate) mtime: Option<SystemTime>,
    /// Precision of `mtime`.
    pub(crate) precision: TimePrecision,
}

impl TreeEntry {
    /// A file entry.
    #[must_use]
    pub(crate) fn file(
        path: &str,
        size: u64,
        mtime: Option<SystemTime>,
        precision: TimePrecision,
    ) -> Self {
        TreeEntry {
            path: path.to_owned(),
            kind: EntryKind::File,
            size,
            mtime,
            precision,
        }
    }

    /// A directory entry.
    #[must_use]
    pub(crate) fn dir(path: &str) -> Self {
        TreeEntry {
            path: path.to_owned(),
            kind: EntryKind::Dir,
            size: 0,
            mtime: None,
            precision: TimePrecision::Second,
        }
    }
}

/// Which way a mirror copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Local tree to server.
    Upload,
    /// Server to local tree.
    Download,
}

/// Why a file is transferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransferReason {
    /// Not present on the destination.
    Missing,
    /// Present with another size.
    SizeDiffers,
    /// Same size, but the source is newer beyond the tolerance.
    SourceNewer,
}

/// Why a file is not transferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkipReason {
    /// Same size, times equal within the tolerance.
    UpToDate,
    /// Same size, destination newer beyond the tolerance.
    DestinationNewer,
    /// Same size, a time is missing on one side: compared by size only.
    TimeUnknown,
}

/// A file to copy from source to destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Transfer {
    /// Path relative to both roots.
    pub(crate) path: String,
    /// Source size in bytes.
    pub(crate) size: u64,
    /// Source modification time, to copy to the destination afterwards.
    pub(crate) mtime: Option<SystemTime>,
    /// Why it is transferred.
    pub(crate) reason: TransferReason,
}

/// A file left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skip {
    /// Path relative to both roots.
    pub(crate) path: String,
    /// Why it is left alone.
    pub(crate) reason: SkipReason,
}

/// What a mirror run will do. Every list is sorted by path; `create_dirs` lists parents
/// before children.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Which way the copy goes.
    pub(crate) direction: Direction,
    /// Directories to create on the destination, parents first.
    pub(crate) create_dirs: Vec<String>,
    /// Files to copy.
    pub(crate) transfers: Vec<Transfer>,
    /// Files already up to date.
    pub(crate) skipped: Vec<Skip>,
    /// Paths that are a file on one side and a directory on the other (and anything
    /// below such a path): left alone, to be reported.
    pub(crate) conflicts: Vec<String>,
    /// Source paths refused as unsafe (see the module docs).
    pub(crate) rejected: Vec<String>,
    /// Files and directories only on the destination (deleted only with `--delete`).
    pub(crate) extraneous: Vec<String>,
    /// `extraneous` in the order `--delete` removes it: files first, then directories, deepest
    /// first, so each directory is empty when its turn comes. Nothing below a file/directory
    /// conflict (those are left alone).
    pub(crate) deletions: Vec<(String, EntryKind)>,
}

impl Plan {
    /// Bytes the planned transfers will copy.
    #[must_use]
    #[cfg(test)]
    pub(crate) fn bytes_to_transfer(&self) -> u64 {
        self.transfers
            .iter()
            .fold(0u64, |sum, t| sum.saturating_add(t.size))
    }
}

/// Plans an upload (`local` to `remote`) or a download (`remote` to `local`).
#[must_use]
pub(crate) fn plan(direction: Direction, local: &[TreeEntry], remote: &[TreeEntry]) -> Plan {
    let (source, destination) = match direction {
        Direction::Upload => (local, remote),
        Direction::Download => (remote, local),
    };
    let mut rejected = BTreeSet::new();
    let source = index(source, &mut rejected);
    // Unsafe destination names are not ours to report: they simply match nothing.
    let destination = index(destination, &mut BTreeSet::new());

    let mut plan = Plan {
        direction,
        create_dirs: Vec::new(),
        transfers: Vec::new(),
        skipped: Vec::new(),
        conflicts: Vec::new(),
        rejected: rejected.into_iter().collect(),
        extraneous: Vec::new(),
        deletions: Vec::new(),
    };

    let mut conflicts = BTreeSet::new();
    let mut needed_dirs = BTreeSet::new();
    for (path, entry) in &source {
        if has_conflicting_ancestor(path, &source, &destination) {
            conflicts.insert((*path).to_owned());
            continue;
        }
        match (entry.kind, destination.get(path)) {
            (EntryKind::Dir, Some(d)) if d.kind == EntryKind::Dir => {}
            (EntryKind::Dir, None) => {
                needed_dirs.insert((*path).to_owned());
            }
            (EntryKind::File, Some(d)) if d.kind == EntryKind::File => {
                add_parents(path, &destination, &mut needed_dirs);
                match compare(entry, d) {
                    Ok(reason) => plan.transfers.push(transfer(entry, reason)),
                    Err(reason) => plan.skipped.push(Skip {
                        path: (*path).to_owned(),
                        reason,
                    }),
                }
            }
            (EntryKind::File, None) => {
                add_parents(path, &destination, &mut needed_dirs);
                plan.transfers
                    .push(transfer(entry, TransferReason::Missing));
            }
            (_, Some(_)) => {
                conflicts.insert((*path).to_owned());
            }
        }
    }
    plan.create_dirs = needed_dirs.into_iter().collect();
    plan.conflicts = conflicts.into_iter().collect();
    plan.extraneous = destination
        .keys()
        .filter(|p| !source.contains_key(*p))
        .map(|p| (*p).to_owned())
        .collect();
    let mut deletions: Vec<(String, EntryKind)> = plan
        .extraneous
        .iter()
        .filter(|p| !has_conflicting_ancestor(p, &source, &destination))
        .filter_map(|p| destination.get(p.as_str()).map(|e| (p.clone(), e.kind)))
        .collect();
    // Files (in path order) before directories; directories deepest first.
    deletions.sort_by_key(|(path, kind)| {
        let dir = *kind == EntryKind::Dir;
        let depth = if dir { path.matches('/').count() } else { 0 };
        (dir, std::cmp::Reverse(depth), path.clone())
    });
    plan.deletions = deletions;
    plan
}

fn transfer(entry: &TreeEntry, reason: TransferReason) -> Transfer {
    Transfer {
        path: entry.path.clone(),
        size: entry.size,
        mtime: entry.mtime,
        reason,
    }
}

/// Indexes entries by path, dropping unsafe paths into `rejected`; the first entry for a
/// path wins (a listing that repeats a name is not trusted to say which one is real).
fn index<'a>(
    entries: &'a [TreeEntry],
    rejected: &mut BTreeSet<String>,
) -> BTreeMap<&'a str, &'a TreeEntry> {
    let mut map = BTreeMap::new();
    for entry in entries {
        if is_safe_relative_path(&entry.path) {
            map.entry(entry.path.as_str()).or_insert(entry);
        } else {
            rejected.insert(entry.path.clone());
        }
    }
    map
}

/// True when a proper ancestor of `path` is a file on either side (so `path` cannot exist
/// as listed) or a file/directory clash.
fn has_conflicting_ancestor(
    path: &str,
    source: &BTreeMap<&str, &TreeEntry>,
    destination: &BTreeMap<&str, &TreeEntry>,
) -> bool {
    ancestors(path).any(|dir| {
        let is_file =
            |m: &BTreeMap<&str, &TreeEntry>| m.get(dir).is_some_and(|e| e.kind == EntryKind::File);
        is_file(source) || is_file(destination)
    })
}

/// Adds every ancestor directory of `path` that the destination lacks.
fn add_parents(
    path: &str,
    destination: &BTreeMap<&str, &TreeEntry>,
    needed: &mut BTreeSet<String>,
) {
    for dir in ancestors(path) {
        if !destination.contains_key(dir) {
            needed.insert(dir.to_owned());
        }
    }
}

/// Proper ancestors of a relative path: `a/b/c` gives `a`, `a/b`.
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// `Ok(reason)` to transfer, `Err(reason)` to skip; both entries are files of one path.
fn compare(source: &TreeEntry, destination: &TreeEntry) -> Result<TransferReason, SkipReason> {
    if source.size != destination.size {
        return Ok(TransferReason::SizeDiffers);
    }
    let (Some(src_time), Some(dst_time)) = (source.mtime, destination.mtime) else {
        return Err(SkipReason::TimeUnknown);
    };
    let tolerance = source.precision.max(destination.precision).tolerance();
    match src_time.duration_since(dst_time) {
        Ok(newer_by) if newer_by > tolerance => Ok(TransferReason::SourceNewer),
        Ok(_) => Err(SkipReason::UpToDate),
        Err(older) if older.duration() > tolerance => Err(SkipReason::DestinationNewer),
        Err(_) => Err(SkipReason::UpToDate),
    }
}

/// A relative path that stays inside its root on every platform we build for.
fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.contains(['\\', ':'])
        && !path.chars().any(char::is_control)
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// The result of walking a local tree.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct LocalWalk {
    /// Files and directories, sorted by path.
    pub(crate) entries: Vec<TreeEntry>,
    /// Symbolic links and special files, which are not followed or mirrored (a link could
    /// leave the tree or loop); relative paths, for a warning.
    pub(crate) not_mirrored: Vec<String>,
}

/// Walks the directory `root` with `std::fs` into relative [`TreeEntry`] values.
///
/// Fails on an I/O error, or with [`io::ErrorKind::InvalidData`] on a name that is not
/// UTF-8 (FTP paths are UTF-8, RFC 2640 §2.2).
pub(crate) fn walk_local(root: &Path) -> io::Result<LocalWalk> {
    let mut walk = LocalWalk::default();
    let mut pending: Vec<(PathBuf, String)> = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for item in fs::read_dir(&dir)? {
            let item = item?;
            let name = item.file_name();
            let name = name.to_str().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: file name is not UTF-8", item.path().display()),
                )
            })?;
            let relative = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            let meta = fs::symlink_metadata(item.path())?;
            if meta.is_dir() {
                walk.entries.push(TreeEntry::dir(&relative));
                pending.push((item.path(), relative));
            } else if meta.is_file() {
                walk.entries.push(TreeEntry::file(
                    &relative,
                    meta.len(),
                    meta.modified().ok(),
                    TimePrecision::Second,
                ));
            } else {
                walk.not_mirrored.push(relative);
            }
        }
    }
    walk.entries.sort_by(|a, b| a.path.cmp(&b.path));
    walk.not_mirrored.sort();
    Ok(walk)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    fn at(secs: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }

    fn file(path: &str, size: u64, secs: u64) -> TreeEntry {
        TreeEntry::file(path, size, at(secs), TimePrecision::Second)
    }

    fn paths(transfers: &[Transfer]) -> Vec<(&str, TransferReason)> {
        transfers
            .iter()
            .map(|t| (t.path.as_str(), t.reason))
            .collect()
    }

    fn skips(skips: &[Skip]) -> Vec<(&str, SkipReason)> {
        skips.iter().map(|s| (s.path.as_str(), s.reason)).collect()
    }

    #[test]
    fn upload_into_empty_remote() {
        let local = vec![
            TreeEntry::dir("a"),
            TreeEntry::dir("a/b"),
            file("a/b/c.txt", 3, 100),
            file("top.txt", 5, 100),
        ];
        let plan = plan(Direction::Upload, &local, &[]);
        assert_eq!(plan.create_dirs, vec!["a", "a/b"]);
        assert_eq!(
            paths(&plan.transfers),
            vec![
                ("a/b/c.txt", TransferReason::Missing),
                ("top.txt", TransferReason::Missing)
            ]
        );
        assert_eq!(plan.bytes_to_transfer(), 8);
        assert!(plan.skipped.is_empty() && plan.conflicts.is_empty());
        assert!(plan.rejected.is_empty() && plan.extraneous.is_empty());
    }

    #[test]
    fn implied_parent_directories_are_created() {
        // A listing without directory entries still gets its parents created.
        let remote = vec![file("x/y/z.bin", 1, 0)];
        let local = vec![TreeEntry::dir("x")];
        let plan = plan(Direction::Download, &local, &remote);
        assert_eq!(plan.create_dirs, vec!["x/y"]);
        assert_eq!(
            paths(&plan.transfers),
            vec![("x/y/z.bin", TransferReason::Missing)]
        );
    }

    #[test]
    fn second_precision_tolerance() {
        let local = vec![
            file("same", 10, 1000),
            file("within", 10, 1001),
            file("newer", 10, 1002),
            file("older", 10, 998),
            file("size", 11, 1000),
        ];
        let remote = vec![
            file("same", 10, 1000),
            file("within", 10, 1000),
            file("newer", 10, 1000),
            file("older", 10, 1000),
            file("size", 10, 1000),
        ];
        let plan = plan(Direction::Upload, &local, &remote);
        assert_eq!(
            paths(&plan.transfers),
            vec![
                ("newer", TransferReason::SourceNewer),
                ("size", TransferReason::SizeDiffers)
            ]
        );
        assert_eq!(
            skips(&plan.skipped),
            vec![
                ("older", SkipReason::DestinationNewer),
                ("same", SkipReason::UpToDate),
                ("within", SkipReason::UpToDate)
            ]
        );
    }

    #[test]
    fn list_minute_precision_tolerance() {
        // LIST shows 12:34, truncated; the local file is 12:34:59.
        let local = vec![file("f", 1, 45_299), file("g", 1, 45_301)];
        let remote = vec![
            TreeEntry::file("f", 1, at(45_240), TimePrecision::Minute),
            TreeEntry::file("g", 1, at(45_240), TimePrecision::Minute),
        ];
        let plan = plan(Direction::Upload, &local, &remote);
        assert_eq!(skips(&plan.skipped), vec![("f", SkipReason::UpToDate)]);
        assert_eq!(
            paths(&plan.transfers),
            vec![("g", TransferReason::SourceNewer)]
        );
    }

    #[test]
    fn list_day_precision_tolerance() {
        let remote = vec![TreeEntry::file("old", 1, at(86_400), TimePrecision::Day)];
        let local = vec![file("old", 1, 86_400 + 50_000)];
        let plan = plan(Direction::Download, &local, &remote);
        assert_eq!(skips(&plan.skipped), vec![("old", SkipReason::UpToDate)]);
    }

    #[test]
    fn unknown_time_compares_by_size() {
        let remote = vec![
            TreeEntry::file("same", 4, None, TimePrecision::Minute),
            TreeEntry::file("diff", 4, None, TimePrecision::Minute),
        ];
        let local = vec![file("same", 4, 10), file("diff", 5, 10)];
        let plan = plan(Direction::Download, &local, &remote);
        assert_eq!(
            skips(&plan.skipped),
            vec![("same", SkipReason::TimeUnknown)]
        );
        assert_eq!(
            paths(&plan.transfers),
            vec![("diff", TransferReason::SizeDiffers)]
        );
        assert_eq!(plan.transfers[0].size, 4);
        assert_eq!(plan.transfers[0].mtime, None);
    }

    #[test]
    fn download_direction_uses_remote_as_source() {
        let remote = vec![file("r", 2, 500), TreeEntry::dir("d")];
        let local = vec![file("l", 3, 500), file("r", 2, 100)];
        let plan = plan(Direction::Download, &local, &remote);
        assert_eq!(plan.direction, Direction::Download);
        assert_eq!(plan.create_dirs, vec!["d"]);
        assert_eq!(
            paths(&plan.transfers),
            vec![("r", TransferReason::SourceNewer)]
        );
        assert_eq!(plan.transfers[0].mtime, at(500));
        assert_eq!(plan.extraneous, vec!["l"]);
    }

    #[test]
    fn file_directory_conflicts() {
        let local = vec![
            TreeEntry::dir("a"),
            file("a/inner", 1, 0),
            file("b", 1, 0),
            TreeEntry::dir("ok"),
        ];
        let remote = vec![file("a", 9, 0), TreeEntry::dir("b"), TreeEntry::dir("ok")];
        let plan = plan(Direction::Upload, &local, &remote);
        assert_eq!(plan.conflicts, vec!["a", "a/inner", "b"]);
        assert!(plan.transfers.is_empty());
        assert!(plan.create_dirs.is_empty());
    }

    #[test]
    fn unsafe_remote_names_are_rejected() {
        let remote = vec![
            file("../../etc/passwd", 1, 0),
            file("/abs", 1, 0),
            file("a/./b", 1, 0),
            file("a//b", 1, 0),
            file("dir/", 1, 0),
            file("..", 1, 0),
            file("win\\evil", 1, 0),
            file("C:evil", 1, 0),
            file("line\nbreak", 1, 0),
            file("", 1, 0),
            file("good", 1, 0),
        ];
        let plan = plan(Direction::Download, &[], &remote);
        assert_eq!(
            paths(&plan.transfers),
            vec![("good", TransferReason::Missing)]
        );
        assert_eq!(plan.rejected.len(), 10);
        assert!(plan.rejected.contains(&"../../etc/passwd".to_owned()));
        assert!(plan.create_dirs.is_empty());
    }

    #[test]
    fn duplicate_names_first_wins() {
        let remote = vec![file("f", 1, 0), file("f", 2, 0)];
        let plan = plan(Direction::Download, &[], &remote);
        assert_eq!(plan.transfers.len(), 1);
        assert_eq!(plan.transfers[0].size, 1);
    }

    #[test]
    fn extraneous_files_are_never_deleted() {
        let local = vec![file("keep", 1, 0)];
        let remote = vec![
            file("keep", 1, 0),
            file("old", 1, 0),
            TreeEntry::dir("olddir"),
        ];
        let plan = plan(Direction::Upload, &local, &remote);
        assert_eq!(plan.extraneous, vec!["old", "olddir"]);
        assert!(plan.transfers.is_empty());
    }

    #[test]
    fn walk_local_tree() {
        let root = std::env::temp_dir().join(format!("ftps-mirror-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("sub/deeper")).unwrap();
        fs::write(root.join("a.txt"), b"hello").unwrap();
        fs::write(root.join("sub/deeper/b.bin"), [0u8; 42]).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("a.txt", root.join("link")).unwrap();

        let walk = walk_local(&root).unwrap();
        let summary: Vec<(&str, EntryKind, u64)> = walk
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e.kind, e.size))
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a.txt", EntryKind::File, 5),
                ("sub", EntryKind::Dir, 0),
                ("sub/deeper", EntryKind::Dir, 0),
                ("sub/deeper/b.bin", EntryKind::File, 42),
            ]
        );
        assert!(walk.entries[0].mtime.is_some());
        #[cfg(unix)]
        assert_eq!(walk.not_mirrored, vec!["link"]);

        // Uploading the same tree onto a copy of itself transfers nothing.
        let plan = plan(Direction::Upload, &walk.entries, &walk.entries);
        assert!(plan.transfers.is_empty() && plan.create_dirs.is_empty());
        assert_eq!(plan.skipped.len(), 2);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn walk_missing_root_fails() {
        let err = walk_local(Path::new("/nonexistent/ftps-mirror-root")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
