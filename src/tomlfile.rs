//! TOML files deserialized into typed specs, with every bad key and value reported at once, each as a
//! located [`Diagnostic`]. serde stops at the first error, so after each one the offending key is taken
//! out of the parsed document and deserialization runs again, until it succeeds or cannot go on.

use crate::diag::Diagnostic;
use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;
use std::path::Path;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Enough for any real file; bounds the work a pathological one can cause.
const MAX_DIAGNOSTICS: usize = 50;

/// One step of a path into the document.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

fn joined(path: &[Seg]) -> String {
    let names: Vec<String> = path
        .iter()
        .map(|s| match s {
            Seg::Key(k) => k.clone(),
            Seg::Index(i) => i.to_string(),
        })
        .collect();
    names.join(".")
}

/// Deserialize `text` (the contents of `file`) into `T`, or every problem found.
///
/// After each error the offending value is taken out and deserialization runs again: an unknown key
/// or bad value is removed; an error inside an array removes the whole array (so later indices are not
/// shifted); a missing key removes the table that lacks it. An error about something that only broke
/// because opsd took a piece out of it (a table that became empty, a key it removed and now misses) is
/// not reported. Stops when the document deserializes, or a key is missing at the top level (by then
/// serde has visited every other key).
pub fn parse<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Vec<Diagnostic>> {
    let mut root = DeTable::parse(text).map_err(|e| vec![diagnostic(file, text, &[], &e)])?;
    let mut diags: Vec<Diagnostic> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    for _ in 0..MAX_DIAGNOSTICS * 4 {
        if diags.len() >= MAX_DIAGNOSTICS {
            break;
        }
        let err = match serde_path_to_error::deserialize::<_, T>(toml::Deserializer::from(root.clone())) {
            Ok(v) if diags.is_empty() && removed.is_empty() => return Ok(v),
            Ok(_) => break,
            Err(e) => e,
        };
        let path: Vec<Seg> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                Segment::Map { key } => Some(Seg::Key(key.clone())),
                Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                Segment::Seq { index } => Some(Seg::Index(*index)),
                Segment::Unknown => None,
            })
            .collect();
        let names: Vec<String> = path.iter().map(|s| joined(std::slice::from_ref(s))).collect();
        let d = diagnostic(file, text, &names, err.inner());
        let altered = removed.iter().any(|r| *r == d.field || r.starts_with(&format!("{}.", d.field)));
        if !altered {
            diags.push(d);
        }
        let missing = err.inner().message().starts_with("missing field");
        let target: Vec<Seg> = if missing {
            path
        } else {
            match path.iter().position(|s| matches!(s, Seg::Index(_))) {
                Some(i) => path[..i].to_vec(),
                None => path,
            }
        };
        if target.is_empty() || !remove(root.get_mut(), &target) {
            break;
        }
        removed.push(joined(&target));
    }
    if diags.is_empty() {
        // Only reachable if an error could not be attributed; never claim a bad file is good.
        diags
            .push(Diagnostic::file(file, "the file could not be read as a valid spec; check it against the reference"));
    }
    diags.sort_by_key(|d| (d.line, d.col));
    Err(diags)
}

/// Take the value at `path` (keys only) out of the document; false when there is nothing to remove.
fn remove(table: &mut DeTable<'_>, path: &[Seg]) -> bool {
    let Some((Seg::Key(first), rest)) = path.split_first() else { return false };
    if rest.is_empty() {
        return table.remove(first.as_str()).is_some();
    }
    match table.get_mut(first.as_str()).map(Spanned::get_mut) {
        Some(DeValue::Table(t)) => remove(t, rest),
        _ => false,
    }
}

fn diagnostic(file: &Path, text: &str, path: &[String], e: &toml::de::Error) -> Diagnostic {
    let offset = e.span().map(|s| s.start).unwrap_or(0);
    let msg = e.message().trim().to_string();
    let joined = path.join(".");
    // serde names an unknown or missing key in its message; make the field that key.
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        if let Some((key, expected)) = rest.split_once('`') {
            let expected = expected.trim_start_matches(',').trim();
            let message = format!("unknown key ({expected}); remove it or fix its spelling");
            return Diagnostic::at(file, text, offset, join_key(&joined, key), message);
        }
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let key = rest.split('`').next().unwrap_or_default();
        let message = format!("`{key}` is required but missing; add it");
        return Diagnostic::at(file, text, offset, join_key(&joined, key), message);
    }
    let field = if joined.is_empty() { "-" } else { joined.as_str() };
    Diagnostic::at(file, text, offset, field, msg)
}

/// `path.key`, unless the path already ends with the key (serde_path_to_error includes it for unknown keys).
fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() || path == key {
        key.to_string()
    } else if path.ends_with(&format!(".{key}")) {
        path.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Spec {
        name: String,
        #[serde(default)]
        size: u32,
        inner: Inner,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        on: bool,
        list: Vec<u8>,
    }

    fn errors(text: &str) -> Vec<String> {
        parse::<Spec>(Path::new("f.toml"), text)
            .unwrap_err()
            .into_iter()
            .map(|d| format!("{}:{} {}", d.line, d.col, d.field))
            .collect()
    }

    #[test]
    fn every_bad_key_and_value_is_reported() {
        let text = "name = \"a\"\nsize = \"big\"\ncolour = 1\n[inner]\non = 3\nlist = [1, 2]\nextra = true\n";
        assert_eq!(errors(text), ["2:8 size", "3:1 colour", "5:6 inner.on", "7:1 inner.extra"]);
    }

    #[test]
    fn a_removed_required_key_is_not_reported_twice() {
        assert_eq!(errors("name = 5\n[inner]\nlist = [1]\n"), ["1:8 name"]);
        assert_eq!(errors("name = \"a\"\n[inner]\nlist = [1, \"x\"]\n"), ["3:12 inner.list.1"]);
    }

    #[test]
    fn errors_after_a_missing_or_broken_required_key_are_still_found() {
        // `inner` sorts before `name`: its loss must not hide the bad `name` and `size`.
        assert_eq!(
            errors("name = 5\nsize = \"x\"\n[inner]\nlist = \"no\"\n"),
            ["1:8 name", "2:8 size", "4:8 inner.list"]
        );
        assert_eq!(errors("name = \"a\"\nsize = \"x\"\n[inner]\non = true\n"), ["2:8 size", "3:1 inner.list"]);
    }

    #[test]
    fn array_errors_keep_their_indices_and_add_nothing() {
        assert_eq!(errors("name = \"a\"\n[inner]\nlist = [\"x\", 1, \"y\"]\n"), ["3:9 inner.list.0"]);
    }

    #[test]
    fn syntax_errors_stop_at_the_first() {
        assert_eq!(errors("name = \n"), ["1:8 -"]);
    }

    #[test]
    fn good_text_parses() {
        let s: Spec = parse(Path::new("f.toml"), "name = \"a\"\n[inner]\nlist = []\n").unwrap();
        assert_eq!(s.name, "a");
    }
}
