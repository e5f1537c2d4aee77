//! Virtual paths: what the engine calls a file.
//!
//! A [`VirtualPath`] is absolute, normalised (no `.`, `..` or empty segments, no trailing `/` except the root) and
//! never above `/`: `..` at the root stays at the root, as with `cd ..` in `/` on Unix. The storage backend maps
//! virtual paths to real ones (DESIGN.md "Paths"); the engine never sees a real path. A NUL byte is refused
//! because no storage backend can represent it (RFC 959 section 3.1.1 forbids it in pathnames too).

use std::fmt;

/// An absolute, normalised path in the session's virtual file tree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VirtualPath(String);

/// Why a pathname argument cannot name a virtual path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// The pathname contains a NUL byte.
    #[error("pathname contains a NUL byte")]
    Nul,
    /// A `..` would go above `/` (only from [`VirtualPath::resolve_within`]).
    #[error("pathname goes above the root")]
    AboveRoot,
}

impl VirtualPath {
    /// The root, `/`.
    pub fn root() -> Self {
        Self("/".to_owned())
    }

    /// Parses an absolute pathname (a relative one is taken relative to `/`).
    pub fn new(path: &str) -> Result<Self, PathError> {
        Self::root().resolve(path)
    }

    /// Resolves `path` relative to `self` (the current directory): an absolute `path` replaces it, `.` and empty
    /// segments are dropped, `..` goes up one level but never above `/`. An empty `path` is `self`.
    pub fn resolve(&self, path: &str) -> Result<Self, PathError> {
        self.resolve_with(path, false)
    }

    /// Like [`resolve`](Self::resolve), but a `..` that would go above `/` is an error
    /// ([`PathError::AboveRoot`]) instead of staying at `/`: for a file argument, where such a path can
    /// only be an attempt to name something outside (`RETR ../../etc/passwd`).
    pub fn resolve_within(&self, path: &str) -> Result<Self, PathError> {
        self.resolve_with(path, true)
    }

    fn resolve_with(&self, path: &str, strict: bool) -> Result<Self, PathError> {
        if path.contains('\0') {
            return Err(PathError::Nul);
        }
        let mut segments: Vec<&str> = if path.starts_with('/') {
            Vec::new()
        } else {
            self.segments().collect()
        };
        for segment in path.split('/') {
            match segment {
                "" | "." => {}
                ".." => {
                    if segments.pop().is_none() && strict {
                        return Err(PathError::AboveRoot);
                    }
                }
                name => segments.push(name),
            }
        }
        let mut joined = String::with_capacity(path.len() + self.0.len() + 1);
        for segment in &segments {
            joined.push('/');
            joined.push_str(segment);
        }
        if joined.is_empty() {
            joined.push('/');
        }
        Ok(Self(joined))
    }

    /// The path as a string, starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is `/`.
    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    /// The segments below the root, in order (none for `/`).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|s| !s.is_empty())
    }

    /// The last segment, `None` for `/`.
    pub fn file_name(&self) -> Option<&str> {
        self.segments().last()
    }

    /// The directory containing this path; `/` for `/` (as `..` clamps there).
    pub fn parent(&self) -> Self {
        match self.0.rfind('/') {
            Some(0) | None => Self::root(),
            Some(at) => Self(self.0.get(..at).unwrap_or("/").to_owned()),
        }
    }

    /// `child` appended as one more segment, when it is a plain name (no `/`, NUL, `.` or `..`).
    pub fn join_name(&self, child: &str) -> Option<Self> {
        if child.is_empty() || child == "." || child == ".." || child.contains(['/', '\0']) {
            return None;
        }
        let mut joined = self.0.clone();
        if !self.is_root() {
            joined.push('/');
        }
        joined.push_str(child);
        Some(Self(joined))
    }

    /// Whether `self` is `other` or below it.
    pub fn starts_with(&self, other: &VirtualPath) -> bool {
        other.is_root()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.as_bytes().get(other.0.len()) == Some(&b'/'))
    }

    /// The path as `257` replies quote it (RFC 959 Appendix II): each `"` doubled.
    pub fn quoted(&self) -> String {
        self.0.replace('"', "\"\"")
    }
}

impl fmt::Display for VirtualPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for VirtualPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(s: &str) -> VirtualPath {
        VirtualPath::new(s).unwrap()
    }

    #[test]
    fn normalises() {
        assert_eq!(p("/").as_str(), "/");
        assert_eq!(p("").as_str(), "/");
        assert_eq!(p("//a///b/").as_str(), "/a/b");
        assert_eq!(p("/a/./b/../c").as_str(), "/a/c");
        assert_eq!(p("a/b").as_str(), "/a/b");
    }

    #[test]
    fn dotdot_clamps_at_root() {
        assert_eq!(p("/..").as_str(), "/");
        assert_eq!(p("/../../etc/passwd").as_str(), "/etc/passwd");
        assert_eq!(p("/a/../../..").as_str(), "/");
    }

    #[test]
    fn resolves_relative_to_cwd() {
        let cwd = p("/home/u");
        assert_eq!(cwd.resolve("x").unwrap().as_str(), "/home/u/x");
        assert_eq!(cwd.resolve("../v/./y").unwrap().as_str(), "/home/v/y");
        assert_eq!(cwd.resolve("/abs").unwrap().as_str(), "/abs");
        assert_eq!(cwd.resolve("").unwrap(), cwd);
        assert_eq!(cwd.resolve("../../../..").unwrap().as_str(), "/");
    }

    #[test]
    fn rejects_nul() {
        assert_eq!(VirtualPath::new("/a\0b"), Err(PathError::Nul));
        assert_eq!(p("/a").resolve("\0"), Err(PathError::Nul));
    }

    #[test]
    fn parent_name_join_quote() {
        assert_eq!(p("/a/b").parent().as_str(), "/a");
        assert_eq!(p("/a").parent().as_str(), "/");
        assert_eq!(p("/").parent().as_str(), "/");
        assert_eq!(p("/a/b").file_name(), Some("b"));
        assert_eq!(p("/").file_name(), None);
        assert_eq!(p("/a").join_name("c").unwrap().as_str(), "/a/c");
        assert_eq!(p("/").join_name("c").unwrap().as_str(), "/c");
        assert_eq!(p("/").join_name(".."), None);
        assert_eq!(p("/").join_name("x/y"), None);
        assert_eq!(p("/say \"hi\"").quoted(), "/say \"\"hi\"\"");
        assert!(p("/a/b").starts_with(&p("/a")));
        assert!(!p("/ab").starts_with(&p("/a")));
        assert!(p("/ab").starts_with(&p("/")));
    }

    proptest::proptest! {
        #[test]
        fn always_normalised(cwd in "[a-z./]{0,12}", input in "[a-z./]{0,24}") {
            let base = VirtualPath::new(&cwd).unwrap();
            let out = base.resolve(&input).unwrap();
            let s = out.as_str();
            proptest::prop_assert!(s.starts_with('/'));
            proptest::prop_assert!(s == "/" || !s.ends_with('/'));
            proptest::prop_assert!(!s.contains("//"));
            proptest::prop_assert!(out.segments().all(|seg| seg != "." && seg != ".."));
            // Normalisation is idempotent.
            proptest::prop_assert_eq!(VirtualPath::new(s).unwrap(), out.clone());
        }
    }

    #[test]
    fn resolve_within_refuses_going_above_the_root() {
        let cwd = VirtualPath::new("/a").unwrap();
        assert_eq!(cwd.resolve_within("../b").unwrap().as_str(), "/b");
        assert_eq!(cwd.resolve_within("x/../../b").unwrap().as_str(), "/b");
        for bad in ["../../etc/passwd", "/../x", "../../.."] {
            assert_eq!(cwd.resolve_within(bad), Err(PathError::AboveRoot), "{bad}");
        }
        assert_eq!(
            cwd.resolve("../../etc/passwd").unwrap().as_str(),
            "/etc/passwd"
        );
    }
}
