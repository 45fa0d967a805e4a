//! The top-level `secrets:` of a compose file: each secret's name and its `file:`, resolved
//! relative to the compose file. Not a YAML parser: it reads the one shape compose files give
//! this key (a block mapping of names, each a block or flow mapping of plain or quoted
//! scalars), which is all `import` needs, without a YAML dependency. Anything else inside
//! `secrets:` (anchors, multi-line scalars) is an error naming the line; the rest of the file
//! is not looked at. Secrets declared `external` or from `environment` have no file and are
//! skipped.

use std::path::{Path, PathBuf};

use super::SourceError;

/// A secret being read: its name, line, indentation, and its `file:` with that line.
type Entry = (String, usize, usize, Option<(String, usize)>);

/// `(name, file, line)` of each file-backed secret under the top-level `secrets:`.
pub fn secrets(
    path: &Path,
    text: &crate::secret::SecretString,
) -> Result<Vec<(String, PathBuf, usize)>, SourceError> {
    let base = path.parent().unwrap_or(Path::new("."));
    let error = |line: usize, message: String| SourceError::Syntax {
        path: path.to_owned(),
        line,
        message,
    };
    let mut found = Vec::new();
    let mut in_secrets = false;
    let mut current: Option<Entry> = None;
    let mut child_indent: Option<usize> = None;
    let mut finish = |current: &mut Option<Entry>| {
        if let Some((name, _, _, Some((file, line)))) = current.take() {
            found.push((name, base.join(file), line));
        }
    };
    for (i, raw) in text.expose_secret().lines().enumerate() {
        let line = i + 1;
        let content = strip_comment(raw).trim_end();
        if content.trim().is_empty() || content.trim() == "---" {
            continue;
        }
        let indent = content.len() - content.trim_start().len();
        if indent == 0 {
            finish(&mut current);
            in_secrets = content == "secrets:";
            if content.starts_with("secrets:") && !in_secrets {
                return Err(error(
                    line,
                    "expected `secrets:` followed by one name per line (a flow mapping here is not supported)".into(),
                ));
            }
            child_indent = None;
            continue;
        }
        if !in_secrets {
            continue;
        }
        let body = content.trim_start();
        let child = *child_indent.get_or_insert(indent);
        if indent < child {
            return Err(error(
                line,
                "inconsistent indentation under `secrets:`".into(),
            ));
        }
        if indent == child {
            finish(&mut current);
            let (key, rest) = split_key(body).ok_or_else(|| {
                error(
                    line,
                    "expected `NAME:` (a secret of the compose file)".into(),
                )
            })?;
            let name = unquote(key).map_err(|m| error(line, m))?;
            let mut file = None;
            if let Some(flow) = rest.strip_prefix('{') {
                let flow = flow.strip_suffix('}').ok_or_else(|| {
                    error(
                        line,
                        format!("{name}: the flow mapping is not closed on this line"),
                    )
                })?;
                for pair in flow.split(',').filter(|p| !p.trim().is_empty()) {
                    let (k, v) = split_key(pair.trim())
                        .ok_or_else(|| error(line, format!("{name}: expected key: value")))?;
                    if k == "file" {
                        file = Some((unquote(v).map_err(|m| error(line, m))?, line));
                    }
                }
            } else if !rest.is_empty() {
                return Err(error(
                    line,
                    format!("{name}: expected a mapping with `file:` under it"),
                ));
            }
            current = Some((name, line, indent, file));
            continue;
        }
        let Some(entry) = current.as_mut() else {
            return Err(error(
                line,
                "expected a secret name under `secrets:`".into(),
            ));
        };
        let (key, value) = split_key(body)
            .ok_or_else(|| error(line, format!("{}: expected key: value", entry.0)))?;
        if key == "file" {
            if value.is_empty() || value.starts_with(['|', '>', '&', '*']) {
                return Err(error(
                    line,
                    format!("{}: expected the path on the same line as `file:`", entry.0),
                ));
            }
            entry.3 = Some((unquote(value).map_err(|m| error(line, m))?, line));
        }
    }
    finish(&mut current);
    Ok(found)
}

/// The line without a `#` comment (outside quotes, after a space or at the start).
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i == 0 || line[..i].ends_with([' ', '\t']) => return &line[..i],
            _ => {}
        }
    }
    line
}

/// `key: rest` (rest trimmed; empty when the value is on the next lines).
fn split_key(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    let (key, rest) = if let Some(q) = text.chars().next().filter(|c| *c == '"' || *c == '\'') {
        let end = text[1..].find(q)? + 2;
        (&text[..end], text[end..].trim_start().strip_prefix(':')?)
    } else {
        let i = text
            .find(": ")
            .or_else(|| text.strip_suffix(':').map(|t| t.len()))?;
        (&text[..i], &text[i + 1..])
    };
    Some((key.trim(), rest.trim()))
}

fn unquote(text: &str) -> Result<String, String> {
    let text = text.trim();
    for q in ['"', '\''] {
        if let Some(inner) = text.strip_prefix(q) {
            return inner
                .strip_suffix(q)
                .map(str::to_owned)
                .ok_or_else(|| format!("the quote in {text:?} is not closed"));
        }
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretString;

    #[test]
    fn reads_block_and_flow_secrets() {
        let text = "services:\n  app:\n    secrets: [a]\nsecrets:\n  # db\n  db_password:\n    file: ./secrets/db.txt  # here\n  \"api-key\": { file: 'keys/api' }\n  ext:\n    external: true\nvolumes:\n  data:\n";
        let got = secrets(
            Path::new("/srv/stack/compose.yml"),
            &SecretString::new(text.into()),
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                (
                    "db_password".into(),
                    PathBuf::from("/srv/stack/./secrets/db.txt"),
                    7
                ),
                ("api-key".into(), PathBuf::from("/srv/stack/keys/api"), 8),
            ]
        );
    }

    #[test]
    fn names_the_line_of_what_it_cannot_read() {
        let text = "secrets:\n  a:\n    file: |\n      x\n";
        let err = secrets(Path::new("c.yml"), &SecretString::new(text.into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "c.yml:3: a: expected the path on the same line as `file:`"
        );
    }
}
