//! The history a [`Versioned`](super::Versioned) storage keeps: the in-memory index of versions, and the
//! append-only log it is rebuilt from at start (line format, checksums, settling interrupted changes, compaction).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

use super::from_micros;
use crate::storage::{FileKind, Metadata, Storage};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    File,
    Dir,
}

/// One kept version: content `id` (files) was current at its path from `since` until `until`.
#[derive(Clone, Debug)]
pub(super) struct Rec {
    pub(super) id: u64,
    pub(super) kind: Kind,
    pub(super) since: i64,
    pub(super) until: i64,
    pub(super) size: u64,
}

impl Rec {
    pub(super) fn covers(&self, t: i64) -> bool {
        self.since <= t && t < self.until
    }

    pub(super) fn metadata(&self) -> Metadata {
        Metadata {
            kind: match self.kind {
                Kind::File => FileKind::File,
                Kind::Dir => FileKind::Directory,
            },
            size: self.size,
            modified: Some(from_micros(self.since)),
            mode: None,
        }
    }
}

#[derive(Default)]
pub(super) struct Index {
    /// Versions per path, in the order they ended.
    pub(super) versions: BTreeMap<String, Vec<Rec>>,
    /// When the current content of a path became current (absent: before history, use its mtime).
    pub(super) since: HashMap<String, i64>,
    pub(super) next_id: u64,
    pub(super) next_tx: u64,
}

impl Index {
    pub(super) fn covering(&self, path: &str, t: i64) -> Option<&Rec> {
        self.versions.get(path)?.iter().find(|r| r.covers(t))
    }

    pub(super) fn add(&mut self, path: &str, rec: Rec) {
        let list = self.versions.entry(path.to_owned()).or_default();
        let at = list.partition_point(|r| r.until <= rec.until);
        list.insert(at, rec);
    }

    /// The keys below directory `dir` (`/` or `/a`), in order.
    pub(super) fn below<'a>(
        &'a self,
        dir: &str,
    ) -> impl Iterator<Item = (&'a String, &'a Vec<Rec>)> + 'a {
        let prefix = if dir == "/" {
            "/".to_owned()
        } else {
            format!("{dir}/")
        };
        self.versions
            .range(prefix.clone()..)
            .take_while(move |(k, _)| k.starts_with(&prefix))
    }

    pub(super) fn has_descendant_at(&self, dir: &str, t: i64) -> bool {
        self.below(dir)
            .any(|(_, recs)| recs.iter().any(|r| r.covers(t)))
    }
}

/// One change's records, written before the change happens.
pub(super) struct Tx {
    pub(super) id: u64,
    pub(super) versions: Vec<(String, Rec)>,
    pub(super) since: Vec<(String, i64)>,
}

/// The append-only history log.
pub(super) struct Log {
    pub(super) file: File,
}

impl Log {
    pub(super) fn append(&mut self, lines: &[String], sync: bool) -> io::Result<()> {
        let mut buf = String::new();
        for line in lines {
            buf.push_str(line);
            buf.push('\t');
            buf.push_str(&format!("{:08x}", checksum(line.as_bytes())));
            buf.push('\n');
        }
        // One write per batch: a kill between two writes leaves whole lines, and the loader drops a torn tail.
        self.file.write_all(buf.as_bytes())?;
        if sync {
            self.file.sync_data()?;
        }
        Ok(())
    }
}

/// FNV-1a, enough to tell a torn or garbled line from a written one.
pub(super) fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

pub(super) fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\t' => out.push_str("%09"),
            '\n' => out.push_str("%0A"),
            '\r' => out.push_str("%0D"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn unescape(field: &str) -> String {
    field
        .replace("%09", "\t")
        .replace("%0A", "\n")
        .replace("%0D", "\r")
        .replace("%25", "%")
}

pub(super) fn v_line(tx: u64, path: &str, r: &Rec) -> String {
    let kind = if r.kind == Kind::File { "F" } else { "D" };
    format!(
        "V\t{tx}\t{}\t{kind}\t{}\t{}\t{}\t{}",
        r.id,
        r.since,
        r.until,
        r.size,
        escape(path)
    )
}

pub(super) fn s_line(tx: u64, path: &str, since: i64) -> String {
    format!("S\t{tx}\t{since}\t{}", escape(path))
}

/// A parsed log line.
pub(super) enum Line {
    V(u64, String, Rec),
    S(u64, String, i64),
    C(u64),
    X(u64),
    D(u64),
}

pub(super) fn parse_line(raw: &str) -> Option<Line> {
    let (body, sum) = raw.rsplit_once('\t')?;
    if u32::from_str_radix(sum, 16).ok()? != checksum(body.as_bytes()) {
        return None;
    }
    let f: Vec<&str> = body.split('\t').collect();
    match (f.first().copied()?, f.len()) {
        ("V", 8) => {
            let kind = match f[3] {
                "F" => Kind::File,
                "D" => Kind::Dir,
                _ => return None,
            };
            let rec = Rec {
                id: f[2].parse().ok()?,
                kind,
                since: f[4].parse().ok()?,
                until: f[5].parse().ok()?,
                size: f[6].parse().ok()?,
            };
            Some(Line::V(f[1].parse().ok()?, unescape(f[7]), rec))
        }
        ("S", 4) => Some(Line::S(
            f[1].parse().ok()?,
            unescape(f[3]),
            f[2].parse().ok()?,
        )),
        ("C", 2) => Some(Line::C(f[1].parse().ok()?)),
        ("X", 2) => Some(Line::X(f[1].parse().ok()?)),
        ("D", 2) => Some(Line::D(f[1].parse().ok()?)),
        _ => None,
    }
}

/// Reads the log into an index, settling interrupted transactions, and rewrites it compacted.
pub(super) async fn load(inner: &dyn Storage, log_path: &Path) -> io::Result<Index> {
    let mut lines = Vec::new();
    match File::open(log_path) {
        Ok(file) => {
            for raw in io::BufReader::new(file).lines() {
                let Ok(raw) = raw else { break };
                // A torn or garbled line ends what can be trusted: a kill mid-write only tears the tail.
                let Some(line) = parse_line(&raw) else { break };
                lines.push(line);
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut committed: HashSet<u64> = HashSet::from([0]);
    let mut aborted: HashSet<u64> = HashSet::new();
    let mut removed: HashSet<u64> = HashSet::new();
    let mut objects: HashMap<u64, Vec<(String, u64)>> = HashMap::new();
    let mut index = Index::default();
    for line in &lines {
        match line {
            Line::C(tx) => {
                committed.insert(*tx);
            }
            Line::X(tx) => {
                aborted.insert(*tx);
            }
            Line::D(id) => {
                removed.insert(*id);
            }
            Line::V(tx, path, r) => {
                index.next_tx = index.next_tx.max(*tx);
                index.next_id = index.next_id.max(r.id);
                if r.kind == Kind::File {
                    objects.entry(*tx).or_default().push((path.clone(), r.id));
                }
            }
            Line::S(tx, _, _) => index.next_tx = index.next_tx.max(*tx),
        }
    }
    // Transactions a crash interrupted: kept when all their objects exist and the change happened, else undone.
    let mut dropped: HashSet<u64> = aborted.clone();
    for (tx, ids) in &objects {
        if committed.contains(tx) || aborted.contains(tx) {
            continue;
        }
        let mut all = true;
        let mut unchanged = true;
        for (path, id) in ids {
            if !inner.has_kept(*id).await.unwrap_or(false) {
                all = false;
            } else if !inner.kept_is_live(path, *id).await.unwrap_or(false) {
                unchanged = false;
            }
        }
        // Every object still the live file: the change never happened (a kept copy of the current content
        // would list it twice in /@versions).
        if all && !unchanged {
            tracing::info!(tx, "history: an interrupted change kept its versions");
        } else {
            tracing::info!(tx, "history: an interrupted change was undone");
            dropped.insert(*tx);
        }
    }
    for tx in &dropped {
        for (_, id) in objects.get(tx).into_iter().flatten() {
            let _ = inner.remove_kept(*id).await;
        }
    }
    for id in &removed {
        let _ = inner.remove_kept(*id).await;
    }
    for line in lines {
        match line {
            Line::V(tx, path, rec)
                if !(dropped.contains(&tx)
                    || rec.kind == Kind::File && removed.contains(&rec.id)) =>
            {
                index.add(&path, rec);
            }
            Line::S(tx, path, since) if !dropped.contains(&tx) => {
                index.since.insert(path, since);
            }
            _ => {}
        }
    }
    compact(&index, log_path)?;
    Ok(index)
}

/// Rewrites the log as the index says (all committed), atomically.
pub(super) fn compact(index: &Index, log_path: &Path) -> io::Result<()> {
    let tmp: PathBuf = log_path.with_extension("log.new");
    let mut lines = Vec::new();
    for (path, recs) in &index.versions {
        for r in recs {
            lines.push(v_line(0, path, r));
        }
    }
    let mut since: Vec<_> = index.since.iter().collect();
    since.sort();
    for (path, s) in since {
        lines.push(s_line(0, path, *s));
    }
    let mut log = Log {
        file: File::create(&tmp)?,
    };
    log.append(&lines, true)?;
    std::fs::rename(&tmp, log_path)?;
    if let Some(dir) = log_path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}
