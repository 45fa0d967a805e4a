//! A `.env` file as `docker compose --env-file` reads it (compose v2's dotenv rules): comments,
//! `export`, `NAME=value` unquoted (an inline comment after a space is dropped, the value
//! trimmed), `'single'` (literal, may span lines), `"double"` (escapes `\n \r \t \\ \" \$`, may
//! span lines). Unquoted and double-quoted values interpolate `$NAME`, `${NAME}`,
//! `${NAME:-default}` and `${NAME-default}` from bindings above them in the same file; keyd
//! never reads its own environment for a value, so an unknown name is an error naming the line.
//! A name without `=` (compose takes it from the environment) carries no value and is skipped.
//! (`fuzzing::dotenv` is another reader: python-dotenv's rules, for checking what the envfile
//! sink writes; it sits at the top of the layers, where nothing else may call it.)

use std::collections::HashMap;
use std::path::Path;

use super::{SourceError, SourceValue};
use crate::secret::SecretString;

/// Every binding of the `.env` file `path` holding `text`, in file order.
pub fn parse(path: &Path, text: &SecretString) -> Result<Vec<SourceValue>, SourceError> {
    let mut reader = Reader {
        path,
        text: text.expose_secret(),
        pos: 0,
        line: 1,
    };
    let mut values: Vec<SourceValue> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    while let Some((name, line, value)) = reader.binding(&values, &index)? {
        let value = SourceValue {
            name: name.clone(),
            origin: format!("{}:{line}", path.display()),
            value,
        };
        // A later binding of the same name wins, as in compose.
        match index.get(&name) {
            Some(&i) => values[i] = value,
            None => {
                index.insert(name, values.len());
                values.push(value);
            }
        }
    }
    Ok(values)
}

struct Reader<'a> {
    path: &'a Path,
    text: &'a str,
    pos: usize,
    line: usize,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

impl Reader<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn error(&self, line: usize, message: impl Into<String>) -> SourceError {
        SourceError::Syntax {
            path: self.path.to_owned(),
            line,
            message: message.into(),
        }
    }

    fn bump(&mut self, c: char) {
        self.pos += c.len_utf8();
        if c == '\n' {
            self.line += 1;
        }
    }

    /// Skips spaces and tabs on the current line.
    fn skip_blank(&mut self) {
        while let Some(c) = self
            .rest()
            .chars()
            .next()
            .filter(|c| *c == ' ' || *c == '\t')
        {
            self.bump(c);
        }
    }

    /// Skips to the start of the next line.
    fn skip_line(&mut self) {
        match self.rest().find('\n') {
            Some(n) => {
                self.pos += n + 1;
                self.line += 1;
            }
            None => self.pos = self.text.len(),
        }
    }

    /// The next binding: name, line, value. `None` at the end.
    fn binding(
        &mut self,
        values: &[SourceValue],
        index: &HashMap<String, usize>,
    ) -> Result<Option<(String, usize, SecretString)>, SourceError> {
        loop {
            // Blank lines and comments.
            while let Some(c) = self.rest().chars().next().filter(|c| c.is_whitespace()) {
                self.bump(c);
            }
            if self.rest().is_empty() {
                return Ok(None);
            }
            if self.rest().starts_with('#') {
                self.skip_line();
                continue;
            }
            let line = self.line;
            if let Some(after) = self.rest().strip_prefix("export")
                && after.starts_with([' ', '\t'])
            {
                self.pos += "export".len();
                self.skip_blank();
            }
            let name_len = self
                .rest()
                .char_indices()
                .find(|&(i, c)| {
                    if i == 0 {
                        !is_name_start(c)
                    } else {
                        !is_name(c)
                    }
                })
                .map_or(self.rest().len(), |(i, _)| i);
            if name_len == 0 {
                return Err(self.error(
                    line,
                    "expected NAME=value (a name starts with a letter or _)",
                ));
            }
            let name = self.rest()[..name_len].to_owned();
            self.pos += name_len;
            self.skip_blank();
            match self.rest().chars().next() {
                Some('=') => self.pos += 1,
                None | Some('\n' | '\r' | '#') => {
                    // No value here: compose would take it from its environment.
                    self.skip_line();
                    continue;
                }
                Some(_) => {
                    return Err(self.error(line, format!("expected = after {name}")));
                }
            }
            self.skip_blank();
            let lookup = |n: &str| index.get(n).map(|&i| values[i].value.expose_secret());
            let value = match self.rest().chars().next() {
                Some('\'') => {
                    self.pos += 1;
                    let end = self.rest().find('\'').ok_or_else(|| {
                        self.error(line, format!("{name}: the single quote is never closed"))
                    })?;
                    let raw = &self.rest()[..end];
                    let value = SecretString::new(raw.to_owned());
                    self.line += raw.matches('\n').count();
                    self.pos += end + 1;
                    self.trailing(line, &name)?;
                    value
                }
                Some('"') => {
                    self.pos += 1;
                    let mut out = String::new();
                    let mut closed = false;
                    while let Some(c) = self.rest().chars().next() {
                        self.bump(c);
                        match c {
                            '"' => {
                                closed = true;
                                break;
                            }
                            '\\' => {
                                let Some(e) = self.rest().chars().next() else {
                                    break;
                                };
                                self.bump(e);
                                match e {
                                    'n' => out.push('\n'),
                                    'r' => out.push('\r'),
                                    't' => out.push('\t'),
                                    '\\' | '"' | '$' => out.push(e),
                                    other => {
                                        out.push('\\');
                                        out.push(other);
                                    }
                                }
                            }
                            '$' => self.variable(line, &name, &mut out, &lookup)?,
                            other => out.push(other),
                        }
                    }
                    if !closed {
                        return Err(
                            self.error(line, format!("{name}: the double quote is never closed"))
                        );
                    }
                    self.trailing(line, &name)?;
                    SecretString::new(out)
                }
                _ => {
                    let end = self.rest().find('\n').unwrap_or(self.rest().len());
                    let raw = &self.rest()[..end];
                    // An inline comment starts at a # after a space.
                    let cut = raw
                        .char_indices()
                        .find(|&(i, c)| c == '#' && i > 0 && raw[..i].ends_with([' ', '\t']))
                        .map_or(raw.len(), |(i, _)| i);
                    let raw = raw[..cut].trim_end_matches([' ', '\t', '\r']);
                    let mut out = String::new();
                    let mut sub = Reader {
                        path: self.path,
                        text: raw,
                        pos: 0,
                        line,
                    };
                    while let Some(c) = sub.rest().chars().next() {
                        sub.bump(c);
                        if c == '$' {
                            sub.variable(line, &name, &mut out, &lookup)?;
                        } else {
                            out.push(c);
                        }
                    }
                    self.pos += end;
                    SecretString::new(out)
                }
            };
            return Ok(Some((name, line, value)));
        }
    }

    /// After a closing quote: only blanks and a comment may follow on the line.
    fn trailing(&mut self, line: usize, name: &str) -> Result<(), SourceError> {
        self.skip_blank();
        match self.rest().chars().next() {
            None | Some('\n' | '\r' | '#') => {
                self.skip_line();
                Ok(())
            }
            Some(_) => Err(self.error(
                line,
                format!("{name}: unexpected text after the closing quote (expected the end of the line or a # comment)"),
            )),
        }
    }

    /// After a `$`: `NAME`, `{NAME}`, `{NAME:-default}`, `{NAME-default}`; or a lone `$`.
    fn variable<'v>(
        &mut self,
        line: usize,
        name: &str,
        out: &mut String,
        lookup: &impl Fn(&str) -> Option<&'v str>,
    ) -> Result<(), SourceError> {
        let braced = self.rest().starts_with('{');
        if braced {
            self.pos += 1;
        }
        let len = self
            .rest()
            .char_indices()
            .find(|&(i, c)| {
                if i == 0 {
                    !is_name_start(c)
                } else {
                    !(c.is_ascii_alphanumeric() || c == '_')
                }
            })
            .map_or(self.rest().len(), |(i, _)| i);
        if len == 0 {
            if braced {
                return Err(self.error(line, format!("{name}: expected a variable name after ${{")));
            }
            out.push('$');
            return Ok(());
        }
        let var = self.rest()[..len].to_owned();
        self.pos += len;
        let mut default = None;
        if braced {
            let end = self.rest().find('}').ok_or_else(|| {
                self.error(line, format!("{name}: ${{{var} is never closed with }}"))
            })?;
            let inner = &self.rest()[..end];
            if let Some(d) = inner.strip_prefix(":-").or_else(|| inner.strip_prefix('-')) {
                default = Some(d.to_owned());
            } else if !inner.is_empty() {
                return Err(self.error(
                    line,
                    format!("{name}: unsupported ${{{var}{inner}}} (expected ${{NAME}}, ${{NAME:-default}} or ${{NAME-default}})"),
                ));
            }
            self.pos += end + 1;
        }
        match (lookup(&var), default) {
            (Some(v), _) => out.push_str(v),
            (None, Some(d)) => out.push_str(&d),
            (None, None) => {
                return Err(self.error(
                    line,
                    format!("{name}: ${var} is not set above it in this file (keyd does not read values from its environment; quote the value with ' to keep a literal $)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(text: &str) -> Vec<(String, String, String)> {
        parse(Path::new("t.env"), &SecretString::new(text.into()))
            .unwrap()
            .into_iter()
            .map(|v| (v.name, v.origin, v.value.expose_secret().to_owned()))
            .collect()
    }

    #[test]
    fn reads_compose_syntax_with_lines() {
        let got = values(
            "# comment\nA=plain value # note\nexport B='lit $A\nsecond'\nC=\"x\\ny${A}\"\n\nD=${B:-d}$A\nE\nF=a#b\n",
        );
        let want = [
            ("A", "t.env:2", "plain value"),
            ("B", "t.env:3", "lit $A\nsecond"),
            ("C", "t.env:5", "x\nyplain value"),
            ("D", "t.env:7", "lit $A\nsecondplain value"),
            ("F", "t.env:9", "a#b"),
        ];
        assert_eq!(got.len(), want.len(), "{got:?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2.as_str()), w);
        }
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse(
            Path::new("t.env"),
            &SecretString::new("A=1\nB=\"open\nC=2\n".into()),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.env:2: B: the double quote is never closed"
        );
        let err = parse(
            Path::new("t.env"),
            &SecretString::new("A=1\n\nB=$NOPE\n".into()),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("t.env:3: B: $NOPE is not set"),
            "{err}"
        );
    }
}
