//! The problems the parser finds and where they are: [`Checker`] collects them by byte offset,
//! [`LineIndex`] turns an offset into the line and column a message shows, and
//! [`offset_in_string`] points inside a string value (at a template's `{NAME}`), and
//! [`closest`] finds the name a misspelt one was probably meant to be.

use std::path::Path;

use toml::de::DeTable;

use crate::policy::{PolicyError, Problem};

/// Problems found so far, by byte offset.
pub(super) struct Checker {
    pub(super) problems: Vec<(usize, String)>,
}

/// Byte offsets of line starts, so a span's start turns into a line and column by binary
/// search: placing every problem costs a logarithm each, not a scan of the text before it.
pub(super) struct LineIndex<'s> {
    pub(super) src: &'s str,
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    pub(super) fn new(src: &'s str) -> Self {
        let starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { src, starts }
    }

    /// The 1-based line of byte offset `at`.
    pub(super) fn line(&self, at: usize) -> usize {
        self.starts
            .partition_point(|&s| s <= at.min(self.src.len()))
    }

    /// The 1-based line and column (in characters) of byte offset `at`.
    pub(super) fn position(&self, at: usize) -> (usize, usize) {
        let at = at.min(self.src.len());
        let line = self.starts.partition_point(|&s| s <= at);
        let start = self.starts[line - 1];
        let column = self.src.get(start..at).map_or(0, |t| t.chars().count()) + 1;
        (line, column)
    }
}

impl Checker {
    pub(super) fn err(&mut self, at: usize, message: impl Into<String>) {
        self.problems.push((at, message.into()));
    }
}

/// Where in the source the character at `offset` of a string value starts, when that can be
/// known (no escapes before it); otherwise the value's start.
pub(super) fn offset_in_string(src: &str, value_at: usize, offset: usize) -> usize {
    let raw = &src[value_at..];
    let multi_line = raw.starts_with("\"\"\"") || raw.starts_with("'''");
    let mut start = if multi_line { 3 } else { 1 };
    // TOML drops a newline right after the opening quotes of a multi-line string.
    if multi_line {
        start += [("\r\n", 2), ("\n", 1)]
            .iter()
            .find(|(nl, _)| raw[3..].starts_with(nl))
            .map_or(0, |(_, n)| *n);
    }
    let body = &raw[start..];
    // The offset counts characters of the value as TOML read it; it is a byte offset in the
    // source only while no escape comes before it (and never inside a character).
    match body.get(..offset) {
        Some(before) if raw.starts_with('\'') || !before.contains('\\') => {
            value_at + start + offset
        }
        _ => value_at,
    }
}

/// The candidate `word` was most likely meant as: the nearest by edits (an insertion, a
/// deletion, a change, or two neighbours swapped), if at most one edit in three characters;
/// of equals, the first in sort order, so the guess does not depend on iteration order. `None` when nothing is that close, so a guess is never a stretch.
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let len = word.chars().count();
    candidates
        .into_iter()
        // Edits are at least the difference in length: candidates too long or too short to
        // qualify are skipped before the quadratic count, so a huge name costs little.
        .filter(|c| len.abs_diff(c.chars().count()) * 3 <= len.max(c.chars().count()))
        .map(|c| (edits(word, c), c))
        .filter(|&(d, c)| d > 0 && d * 3 <= len.max(c.chars().count()))
        .min_by_key(|&(d, c)| (d, c))
        .map(|(_, c)| c)
}

/// The optimal-string-alignment distance between `a` and `b`, in characters.
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // Three rows: the one two back is needed for a swap of neighbours.
    let mut before: Vec<usize> = vec![0; b.len() + 1];
    let mut last: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let change = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (last[j] + 1).min(row[j - 1] + 1).min(last[j - 1] + change);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(before[j - 2] + 1);
            }
        }
        before = std::mem::replace(&mut last, row);
    }
    last[b.len()]
}

/// The problems of `found` (byte offset, message) as the error the user sees: in source
/// order, each with its line and column.
pub(super) fn invalid(path: &Path, src: &str, mut found: Vec<(usize, String)>) -> PolicyError {
    found.sort_by_key(|(at, _)| *at);
    let lines = LineIndex::new(src);
    let problems = found
        .into_iter()
        .map(|(at, message)| {
            let (line, column) = lines.position(at);
            Problem {
                line,
                column,
                message,
            }
        })
        .collect();
    PolicyError::Invalid {
        path: path.to_owned(),
        problems,
    }
}

/// Where the top-level key `key` is written, for a problem that belongs to a whole section;
/// the file's start if it is not.
pub(super) fn top_level_key_at(doc: &DeTable<'_>, key: &str) -> usize {
    doc.iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map_or(0, |(k, _)| k.span().start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_positions() {
        let src = "ab\né€x\n\nz";
        let lines = LineIndex::new(src);
        assert_eq!(lines.position(0), (1, 1));
        assert_eq!(lines.position(2), (1, 3));
        assert_eq!(lines.position(3), (2, 1));
        assert_eq!(lines.position(8), (2, 3)); // the `x`, after 2 + 3 bytes
        assert_eq!(lines.position(10), (3, 1));
        assert_eq!(lines.position(11), (4, 1));
        assert_eq!(lines.position(99), (4, 2)); // past the end: the end
    }

    #[test]
    fn closest_names() {
        assert_eq!(edits("lenght", "length"), 1);
        assert_eq!(edits("DB_PASWORD", "DB_PASSWORD"), 1);
        assert_eq!(edits("", "abc"), 3);
        assert_eq!(edits("kitten", "sitting"), 3);
        let fields = ["length", "alphabet", "allow_weak", "target"];
        assert_eq!(closest("lenght", fields), Some("length"));
        assert_eq!(closest("alphabt", fields), Some("alphabet"));
        assert_eq!(closest("targte", fields), Some("target"));
        // One edit in a one-letter name is a different name, not a typo.
        assert_eq!(closest("X", ["U"]), None);
        assert_eq!(closest("bits", fields), None);
        assert_eq!(closest("length", fields), None);
    }

    #[test]
    fn offsets_inside_strings() {
        let src = r#"t = "ab{X}" u = 'a\{X}' v = """{X}""" w = "\n{X}""#;
        let at = |needle: &str| src.find(needle).unwrap();
        assert_eq!(offset_in_string(src, at("\"ab"), 2), at("{X}\" u"));
        assert_eq!(offset_in_string(src, at("'a"), 2), at("{X}' v"));
        assert_eq!(offset_in_string(src, at("\"\"\""), 0), at("{X}\"\"\""));
        assert_eq!(offset_in_string(src, at("\"\\n"), 1), at("\"\\n"));
    }
}
