//! `--json` output: `ls` entries and the summary of `get`, `put` and `mirror`.
//!
//! Written by hand: a few flat objects with strings, numbers and booleans do not need a
//! serialization framework, only correct string escaping (RFC 8259 section 7).

use std::fmt::Write as _;

use ftps_client_blocking::{Entry, EntryKind, TransferReport};

/// What one transfer moved, for the summary.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FileRecord {
    path: String,
    /// `None`: nothing needed moving (a resume found the file complete).
    moved: Option<Moved>,
}

#[derive(Debug, Clone, PartialEq)]
struct Moved {
    bytes: u64,
    seconds: f64,
    /// The data connection's TLS version (`TLSv1_3`), `None` in the clear.
    tls: Option<String>,
    resumed: bool,
}

impl FileRecord {
    pub(crate) fn new(path: &str, report: Option<&TransferReport>) -> Self {
        FileRecord {
            path: path.to_owned(),
            moved: report.map(|r| Moved {
                bytes: r.bytes,
                seconds: r.elapsed.as_secs_f64(),
                tls: r.tls.as_ref().map(|t| format!("{:?}", t.version)),
                resumed: r.tls_resumed,
            }),
        }
    }
}

/// `{"ok":BOOL,"files":[{"path":..,"bytes":..,"seconds":..,"tls":..,"resumed":..},..]}`, the
/// files in the order they finished; a file that needed nothing has `"bytes":0,"skipped":true`.
pub(crate) fn summary(ok: bool, records: &[FileRecord]) -> String {
    let mut out = format!("{{\"ok\":{ok},\"files\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"path\":");
        string(&mut out, &record.path);
        match &record.moved {
            Some(m) => {
                let _ = write!(
                    out,
                    ",\"bytes\":{},\"seconds\":{:.6},\"tls\":",
                    m.bytes, m.seconds
                );
                match &m.tls {
                    Some(tls) => string(&mut out, tls),
                    None => out.push_str("null"),
                }
                let _ = write!(out, ",\"resumed\":{}}}", m.resumed);
            }
            None => out.push_str(",\"bytes\":0,\"skipped\":true}"),
        }
    }
    out.push_str("]}");
    out
}

/// The entries of a listing as an array of `{"name","type","size","modify"}` objects (`type`:
/// file, dir, link or other; `size` and `modify` null when the server did not say; `modify` as
/// `YYYY-MM-DDTHH:MM:SSZ`). `.` and `..` are left out, as in the text listing.
pub(crate) fn listing(entries: &[Entry]) -> String {
    let mut out = String::from("[");
    let mut first = true;
    for entry in entries {
        let kind = match &entry.kind {
            EntryKind::CurrentDir | EntryKind::ParentDir => continue,
            EntryKind::File => "file",
            EntryKind::Dir => "dir",
            EntryKind::Link(_) => "link",
            _ => "other",
        };
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str("{\"name\":");
        string(&mut out, &entry.name);
        let _ = write!(out, ",\"type\":\"{kind}\",\"size\":");
        match entry.size {
            Some(size) => {
                let _ = write!(out, "{size}");
            }
            None => out.push_str("null"),
        }
        out.push_str(",\"modify\":");
        match &entry.modified {
            Some(t) => {
                let _ = write!(
                    out,
                    "\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z\"",
                    t.year, t.month, t.day, t.hour, t.minute, t.second
                );
            }
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push(']');
    out
}

/// Appends `text` as a JSON string: quotes, backslashes and control characters escaped.
fn string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut out = String::new();
        string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
    }

    #[test]
    fn a_skipped_file_says_so() {
        let records = [FileRecord::new("x/y", None)];
        assert_eq!(
            summary(false, &records),
            r#"{"ok":false,"files":[{"path":"x/y","bytes":0,"skipped":true}]}"#
        );
    }
}
