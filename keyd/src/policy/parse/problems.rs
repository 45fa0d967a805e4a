//! The problems the parser finds and where they are: [`Checker`] collects them by byte offset,
//! [`LineIndex`] turns an offset into the line and column a message shows, and
//! [`offset_in_string`] points inside a string value (at a template's `{NAME}`).

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
    fn offsets_inside_strings() {
        let src = r#"t = "ab{X}" u = 'a\{X}' v = """{X}""" w = "\n{X}""#;
        let at = |needle: &str| src.find(needle).unwrap();
        assert_eq!(offset_in_string(src, at("\"ab"), 2), at("{X}\" u"));
        assert_eq!(offset_in_string(src, at("'a"), 2), at("{X}' v"));
        assert_eq!(offset_in_string(src, at("\"\"\""), 0), at("{X}\"\"\""));
        assert_eq!(offset_in_string(src, at("\"\\n"), 1), at("\"\\n"));
    }
}
