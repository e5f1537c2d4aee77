//! The feature list of a `FEAT` reply (RFC 2389 section 3).

/// One feature line of a `FEAT` reply: a name and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Feature {
    /// The feature name, upper-cased (RFC 2389 section 3.2: names are case-insensitive), e.g. `MLST`, `AUTH`.
    pub name: String,
    /// Everything after the name, trimmed, when present: `TLS` for `AUTH TLS`, `type*;size*;` for `MLST`.
    pub params: Option<String>,
}

/// The features a server announces in its `FEAT` reply, in the order it lists them.
///
/// A name may appear more than once (vsftpd lists `AUTH SSL` and `AUTH TLS` on separate lines).
/// Format with [`Reply::feat`](super::Reply::feat), parse with [`Reply::parse_feat`](super::Reply::parse_feat).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Features {
    entries: Vec<Feature>,
}

impl Features {
    /// An empty list.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a feature. The name is upper-cased; empty or blank parameters count as none.
    ///
    /// The name must be one word and neither may contain CR or LF, or the formatted list reads back differently.
    pub fn push(&mut self, name: &str, params: Option<&str>) {
        let params = params
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        self.entries.push(Feature {
            name: name.to_ascii_uppercase(),
            params,
        });
    }

    /// Whether `name` is announced (case-insensitive).
    pub fn has(&self, name: &str) -> bool {
        self.entries
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The parameters of the first `name` line that has any (`params("AUTH")` is `Some("TLS")` for `AUTH TLS`).
    pub fn params(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .find_map(|f| f.params.as_deref())
    }

    /// The parameters of every `name` line that has any, in order.
    pub fn params_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |f| f.name.eq_ignore_ascii_case(name))
            .filter_map(|f| f.params.as_deref())
    }

    /// Whether `AUTH` lists `mechanism` (case-insensitive), e.g. `TLS`.
    pub fn has_auth(&self, mechanism: &str) -> bool {
        self.params_all("AUTH").any(|p| {
            p.split_whitespace()
                .any(|m| m.eq_ignore_ascii_case(mechanism))
        })
    }

    /// The facts listed by `MLST` (RFC 3659 section 7.8): each name with whether it is enabled (`*`).
    pub fn mlst_facts(&self) -> impl Iterator<Item = (&str, bool)> {
        self.params("MLST")
            .unwrap_or("")
            .split(';')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(|f| match f.strip_suffix('*') {
                Some(name) => (name, true),
                None => (f, false),
            })
    }

    /// The features, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Feature> {
        self.entries.iter()
    }

    /// Number of feature lines.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no feature is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parses the feature lines of a `FEAT` reply (without the first and last lines). Leading and trailing
    /// whitespace is ignored, as is a `211-` prefix some servers repeat at the start of every line; blank lines
    /// are skipped.
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut features = Self::new();
        for line in lines {
            // Feature lines start with a space (RFC 2389 section 3.2); a line without one may carry the prefix.
            let line = if line.starts_with(char::is_whitespace) {
                line.trim()
            } else {
                line.strip_prefix("211-").unwrap_or(line).trim()
            };
            if line.is_empty() {
                continue;
            }
            let (name, params) = match line.split_once(char::is_whitespace) {
                Some((name, params)) => (name, Some(params)),
                None => (line, None),
            };
            features.push(name, params);
        }
        features
    }

    /// The feature lines as RFC 2389 section 3.2 writes them: one space, the name, and a space and the
    /// parameters when present.
    pub fn to_lines(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|f| match &f.params {
                Some(params) => format!(" {} {}", f.name, params),
                None => format!(" {}", f.name),
            })
            .collect()
    }
}

impl<'a> IntoIterator for &'a Features {
    type Item = &'a Feature;
    type IntoIter = std::slice::Iter<'a, Feature>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}
