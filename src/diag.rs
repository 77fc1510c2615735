//! Diagnostics for bad input: `file:line:col: field: what is wrong; what to do`.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found in a file, located as precisely as the parser allows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    /// Dotted path of the offending key (`run.timeout`), or `-` when the whole file is at fault.
    pub field: String,
    pub message: String,
}

impl Diagnostic {
    pub fn at(file: &Path, text: &str, offset: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        let (line, col) = line_col(text, offset);
        Diagnostic { file: file.to_path_buf(), line, col, field: field.into(), message: message.into() }
    }

    /// A problem with a field, located at the field's key in `text` when it can be found.
    pub fn field(file: &Path, text: &str, field: &str, message: impl Into<String>) -> Self {
        let offset = find_key(text, field).unwrap_or(0);
        Self::at(file, text, offset, field, message)
    }

    /// A problem with the file as a whole (unreadable, missing).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic { file: file.to_path_buf(), line: 1, col: 1, field: "-".into(), message: message.into() }
    }
}

/// Print diagnostics to stderr, one a line.
pub fn print_diags(diags: &[Diagnostic]) {
    for d in diags {
        eprintln!("{d}");
    }
}

/// A setting that parsed but is not valid with the others (`min_capacity` above `max_capacity`):
/// what a config section's `check` returns. `key` is relative to the section (`""` for the
/// section itself); the config locates it in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

impl Invalid {
    pub fn new(key: &'static str, message: impl Into<String>) -> Invalid {
        Invalid { key, message: message.into() }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}: {}", self.file.display(), self.line, self.col, self.field, self.message)
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Best-effort location of a dotted key (`ssh.identity_file`) in a TOML text: the line that sets its last
/// segment inside the table named by the others, or the table header itself.
pub fn find_key(text: &str, dotted: &str) -> Option<usize> {
    let (table, key) = match dotted.rsplit_once('.') {
        Some((t, k)) => (t, k),
        None => ("", dotted),
    };
    let mut current = String::new();
    let mut header_at = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some(rest) = trimmed.strip_prefix('[') {
            current = rest.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_string();
            if current == table || current == dotted {
                header_at.get_or_insert(offset + indent);
            }
        } else if current == table {
            let name = trimmed.split(['=', ' ', '\t']).next().unwrap_or("").trim_matches('"');
            if name == key {
                return Some(offset + indent);
            }
        }
        offset += line.len();
    }
    header_at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 9), (2, 4));
        assert_eq!(line_col(t, 999), (3, 1));
    }

    #[test]
    fn find_key_respects_tables() {
        let t = "user = \"x\"\n[ssh]\nport = 22\nuser = \"y\"\n[run]\n";
        assert_eq!(line_col(t, find_key(t, "ssh.user").unwrap()), (4, 1));
        assert_eq!(line_col(t, find_key(t, "user").unwrap()), (1, 1));
        assert_eq!(line_col(t, find_key(t, "run.timeout").unwrap()), (5, 1));
        assert_eq!(find_key(t, "target.tags"), None);
    }
}
