//! Config errors that point at `file:line:col`, a key path such as
//! `service[1].real[0].weight`, and a reason a human understands.

use hashbrown::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

/// One problem found in a config, located as precisely as the source allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as given to [`crate::config::schema::Config::parse`].
    pub file: String,
    /// 1-based line and column (in characters), when the source text is known.
    pub pos: Option<(u32, u32)>,
    /// Key path, e.g. `service[0].scheduler`; empty for syntax errors.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some((line, col)) = self.pos {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.reason)
    }
}

/// Why a config could not be loaded, validated or turned into a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// One or more problems, sorted by position; Display shows one per line.
    #[error("{}", join(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The individual problems (empty for I/O errors).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Invalid(d) => d,
        }
    }
}

fn join(diags: &[Diagnostic]) -> String {
    let mut out = String::new();
    for (i, d) in diags.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&d.to_string());
    }
    out
}

/// Where a config came from: its file name, its text and the byte span of
/// every key path that was read. Used only to place diagnostics; it takes no
/// part in equality (two configs with the same content are equal).
#[derive(Clone, Debug)]
pub struct Origin {
    file: String,
    text: Arc<str>,
    line_starts: Arc<[usize]>,
    spans: Arc<Spans>,
}

/// The recorded spans: appended while reading (a path's hash and its span,
/// no string kept), indexed by hash only when a diagnostic needs a position.
/// A large config records hundreds of thousands of paths and usually needs
/// none of them; shared by the clones of a config.
#[derive(Clone, Debug, Default)]
struct Spans {
    list: Vec<(u64, Range<usize>)>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Hash -> position in `list` of its last record.
    index: std::sync::OnceLock<HashMap<u64, usize>>,
}

impl Spans {
    fn hash(&self, path: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(path)
    }

    fn get(&self, path: &str) -> Option<&Range<usize>> {
        let index = self.index.get_or_init(|| {
            let mut m = HashMap::with_capacity(self.list.len());
            for (i, (h, _)) in self.list.iter().enumerate() {
                m.insert(*h, i);
            }
            m
        });
        let i = *index.get(&self.hash(path))?;
        self.list.get(i).map(|(_, r)| r)
    }
}

impl Default for Origin {
    fn default() -> Self {
        Origin::new("<config>", "")
    }
}

impl PartialEq for Origin {
    fn eq(&self, _: &Origin) -> bool {
        true
    }
}

impl Origin {
    /// An origin for `text` read from `file`, with no spans yet.
    pub fn new(file: &str, text: &str) -> Origin {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Origin {
            file: file.to_string(),
            text: Arc::from(text),
            line_starts: Arc::from(starts),
            spans: Arc::default(),
        }
    }

    /// The file name diagnostics carry.
    pub fn file(&self) -> &str {
        &self.file
    }

    pub(crate) fn record(&mut self, path: &str, span: Range<usize>) {
        let spans = Arc::make_mut(&mut self.spans);
        let h = spans.hash(path);
        spans.list.push((h, span));
        // A path recorded after a lookup: index again at the next one.
        spans.index.take();
    }

    /// 1-based (line, column) of a byte offset; the column counts characters.
    pub fn line_col(&self, offset: usize) -> Option<(u32, u32)> {
        if self.text.is_empty() && offset == 0 && self.spans.list.is_empty() {
            return None;
        }
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map(|s| s.chars().count())
            .unwrap_or(offset - start);
        Some((line as u32 + 1, col as u32 + 1))
    }

    /// The span recorded for `path`, or for its nearest recorded parent
    /// (`a[1].b` -> `a[1]` -> `a`).
    pub fn span_of(&self, path: &str) -> Option<Range<usize>> {
        let mut p = path;
        loop {
            if let Some(s) = self.spans.get(p) {
                return Some(s.clone());
            }
            let cut = p.rfind(['.', '['])?;
            p = p.get(..cut)?;
        }
    }

    /// A diagnostic at the recorded position of `path`.
    pub fn diag(&self, path: &str, reason: impl Into<String>) -> Diagnostic {
        let pos = self.span_of(path).and_then(|s| self.line_col(s.start));
        Diagnostic {
            file: self.file.clone(),
            pos,
            key: path.to_string(),
            reason: reason.into(),
        }
    }

    /// A diagnostic at a byte offset (syntax errors).
    pub fn diag_at(&self, offset: usize, key: &str, reason: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            pos: self.line_col(offset),
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// Sort diagnostics by position (unplaced ones last) and wrap them.
pub(crate) fn invalid(mut diags: Vec<Diagnostic>) -> ConfigError {
    diags.sort_by_key(|d| d.pos.unwrap_or((u32::MAX, u32::MAX)));
    diags.dedup();
    ConfigError::Invalid(diags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_chars() {
        let o = Origin::new("f.toml", "a = 1\nné = \"x\"\n");
        assert_eq!(o.line_col(0), Some((1, 1)));
        assert_eq!(o.line_col(6), Some((2, 1)));
        // "né" is 3 bytes; the `=` after it is the 4th character.
        assert_eq!(o.line_col(10), Some((2, 4)));
    }

    #[test]
    fn span_falls_back_to_parent() {
        let mut o = Origin::new("f.toml", "x\ny\nz\n");
        o.record("service[1]", 2..3);
        let d = o.diag("service[1].real[0].weight", "bad");
        assert_eq!(d.pos, Some((2, 1)));
        assert_eq!(d.to_string(), "f.toml:2:1: service[1].real[0].weight: bad");
        let none = Origin::default().diag("director.interfaces", "empty");
        assert_eq!(none.to_string(), "<config>: director.interfaces: empty");
    }
}
