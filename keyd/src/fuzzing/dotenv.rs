//! A reference reader for env files, following python-dotenv's parser (`parser.py` and
//! `variables.py` of python-dotenv 1.x, the reader of compose v1) for what the envfile sink
//! writes: comment lines, `NAME=value` unquoted and `NAME='value'`, where python-dotenv
//! unescapes `\\` and `\'` and expands `${NAME}` and `${NAME:-default}` even inside single
//! quotes. It exists to check the sink's quoting (the `envfile_round_trip` fuzz target and the
//! property tests), not to read env files in keyd. Double-quoted values, which keyd never
//! writes, are an error here rather than a second model to keep right.

/// Every binding of `text` in file order, as python-dotenv's `dotenv_values` gives them: the
/// name and its value after unescaping and interpolation (`None` for a name without `=`).
/// Variables resolve from the bindings above them only, not from the process environment; an
/// unknown one becomes its default or nothing. A line python-dotenv could not parse (it warns
/// and skips it) is an error naming its 1-based line.
pub fn parse(text: &str) -> Result<Vec<(String, Option<String>)>, String> {
    let mut reader = Reader { text, pos: 0 };
    let mut bindings: Vec<(String, Option<String>)> = Vec::new();
    while let Some(binding) = reader.binding()? {
        if let (Some(name), value) = binding {
            let value = value.map(|v| interpolate(&v, &bindings));
            bindings.push((name, value));
        }
    }
    Ok(bindings)
}

/// Python's `str.isspace`, which `\s` in python-dotenv's patterns means.
fn space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// `[^\S\r\n]`: a space that does not end a line.
fn inline_space(c: char) -> bool {
    space(c) && c != '\r' && c != '\n'
}

struct Reader<'a> {
    text: &'a str,
    pos: usize,
}

impl Reader<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    /// Skips the longest run of characters matching `f`; returns how many bytes.
    fn skip(&mut self, f: impl Fn(char) -> bool) -> usize {
        let n = self.rest().find(|c| !f(c)).unwrap_or(self.rest().len());
        self.pos += n;
        n
    }

    fn error(&self, what: &str) -> String {
        let line = self.text[..self.pos].matches('\n').count() + 1;
        format!("line {line}: {what}")
    }

    /// `parse_binding`: `None` at the end of the text, else the key (`None` for a comment)
    /// and the raw value.
    #[allow(clippy::type_complexity)] // python-dotenv's Binding, as a tuple
    fn binding(&mut self) -> Result<Option<(Option<String>, Option<String>)>, String> {
        self.skip(space);
        if self.rest().is_empty() {
            return Ok(None);
        }
        // `(?:export[^\S\r\n]+)?`
        if let Some(after) = self.rest().strip_prefix("export") {
            let spaces = after.find(|c| !inline_space(c)).unwrap_or(after.len());
            if spaces > 0 {
                self.pos += "export".len() + spaces;
            }
        }
        let key = self.key()?;
        self.skip(inline_space);
        let value = if self.peek() == Some('=') {
            self.pos += 1;
            self.skip(inline_space);
            Some(self.value()?)
        } else {
            None
        };
        // `(?:[^\S\r\n]*#[^\r\n]*)?`
        let start = self.pos;
        self.skip(inline_space);
        if self.peek() == Some('#') {
            self.skip(|c| c != '\r' && c != '\n');
        } else {
            self.pos = start;
        }
        // `[^\S\r\n]*(?:\r\n|\n|\r|$)`
        self.skip(inline_space);
        let rest = self.rest();
        if rest.starts_with("\r\n") {
            self.pos += 2;
        } else if rest.starts_with(['\n', '\r']) {
            self.pos += 1;
        } else if !rest.is_empty() {
            return Err(self.error("text after the value"));
        }
        Ok(Some((key, value)))
    }

    /// `parse_key`: `None` for a comment, `'([^']+)'` or `([^=\#\s]+)`.
    fn key(&mut self) -> Result<Option<String>, String> {
        match self.peek() {
            Some('#') => Ok(None),
            Some('\'') => {
                let body = &self.rest()[1..];
                match body.find('\'') {
                    Some(end) if end > 0 => {
                        let key = body[..end].to_owned();
                        self.pos += end + 2;
                        Ok(Some(key))
                    }
                    _ => Err(self.error("an unterminated quoted key")),
                }
            }
            _ => {
                let start = self.pos;
                if self.skip(|c| c != '=' && c != '#' && !space(c)) == 0 {
                    return Err(self.error("no key"));
                }
                Ok(Some(self.text[start..self.pos].to_owned()))
            }
        }
    }

    /// `parse_value`.
    fn value(&mut self) -> Result<String, String> {
        match self.peek() {
            Some('\'') => self.single_quoted(),
            Some('"') => Err(self.error("a double-quoted value (not modelled)")),
            None | Some('\n' | '\r') => Ok(String::new()),
            Some(_) => {
                // `([^\r\n]*)`, then `re.sub(r"\s+#.*", "", value).rstrip()`.
                let start = self.pos;
                self.skip(|c| c != '\r' && c != '\n');
                let mut value = &self.text[start..self.pos];
                let mut in_space = None;
                for (i, c) in value.char_indices() {
                    if space(c) {
                        in_space.get_or_insert(i);
                    } else if c == '#' && in_space.is_some() {
                        value = &value[..in_space.unwrap_or(i)];
                        break;
                    } else {
                        in_space = None;
                    }
                }
                Ok(value.trim_end_matches(space).to_owned())
            }
        }
    }

    /// `'((?:\\'|[^'])*)'` with Python's backtracking, then `\\` and `\'` unescaped.
    fn single_quoted(&mut self) -> Result<String, String> {
        let bytes = self.text.as_bytes();
        let start = self.pos + 1;
        let mut i = start;
        let mut last_escape = None;
        let end = loop {
            match bytes.get(i) {
                Some(b'\\') if bytes.get(i + 1) == Some(&b'\'') => {
                    last_escape = Some(i);
                    i += 2;
                }
                Some(b'\'') => break i,
                Some(_) => i += 1,
                // No closing quote: the regex backtracks to its last `\'`, reads the `\` as
                // an ordinary character and closes at that quote.
                None => match last_escape {
                    Some(at) => break at + 1,
                    None => return Err(self.error("an unterminated single-quoted value")),
                },
            }
        };
        let body = &self.text[start..end];
        self.pos = end + 1;
        let mut value = String::with_capacity(body.len());
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, chars.peek()) {
                ('\\', Some(&next @ ('\\' | '\''))) => {
                    value.push(next);
                    chars.next();
                }
                _ => value.push(c),
            }
        }
        Ok(value)
    }
}

/// `\$\{(?P<name>[^\}:]*)(?::-(?P<default>[^\}]*))?\}`, each match replaced by the value of
/// `name` among `bindings` (the last one wins), else by `default`, else by nothing.
fn interpolate(value: &str, bindings: &[(String, Option<String>)]) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find("${") {
        let after = &rest[at + 2..];
        let name_end = after.find(['}', ':']).unwrap_or(after.len());
        let name = &after[..name_end];
        let tail = &after[name_end..];
        let (default, used) = if tail.starts_with('}') {
            (None, name_end + 1)
        } else if let Some(d) = tail.strip_prefix(":-")
            && let Some(close) = d.find('}')
        {
            (Some(&d[..close]), name_end + 2 + close + 1)
        } else {
            // No match starting here: keep the text up to the `$` and look again after it.
            out.push_str(&rest[..=at]);
            rest = &rest[at + 1..];
            continue;
        };
        out.push_str(&rest[..at]);
        let known = bindings.iter().rev().find(|(n, _)| n == name);
        match known {
            Some((_, value)) => out.push_str(value.as_deref().unwrap_or("")),
            None => out.push_str(default.unwrap_or("")),
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn values(text: &str) -> Vec<(String, Option<String>)> {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn one(text: &str) -> String {
        let parsed = values(text);
        assert_eq!(parsed.len(), 1, "{text:?}: {parsed:?}");
        parsed[0].1.clone().expect("a value")
    }

    /// Cases checked against python-dotenv 1.2's `dotenv_values(stream=io.StringIO(text))`
    /// (the reader also agreed with it on 20,000 random files of `=`, quotes, backslashes,
    /// `${…}`, `#`, `export` and line ends, double-quoted values apart).
    #[test]
    fn the_reference_reader_agrees_with_python_dotenv() {
        assert_eq!(one("A=b"), "b");
        assert_eq!(one("A=b c  # note\n"), "b c");
        assert_eq!(one("A=b#c"), "b#c");
        assert_eq!(one("  export A = b  \r\n"), "b");
        assert_eq!(one("A="), "");
        assert_eq!(one("A='b \" # c'"), "b \" # c");
        assert_eq!(one(r"A='b\\c\'d'"), r"b\c'd");
        assert_eq!(one(r"A='b\n'"), r"b\n");
        assert_eq!(one("A='a\nb'"), "a\nb");
        assert_eq!(one(r"A='b\'"), r"b\");
        assert_eq!(one("A='${HOME:-x}y'"), "xy");
        assert_eq!(one("A=$x ${ {y}"), "$x ");
        assert_eq!(one("A=${:-d}${B:x}"), "d${B:x}");
        assert_eq!(one("A=a$b${c"), "a$b${c");
        assert_eq!(one("'A'=b"), "b");
        assert_eq!(
            values("# c\nA=1\nB='${A}2'\nC\n"),
            [
                ("A".into(), Some("1".into())),
                ("B".into(), Some("12".into())),
                ("C".into(), None)
            ]
        );
        // A value ending in a backslash runs into the next line, which then fails to parse.
        assert!(parse("A='x\\'\nB='y'\n").is_err());
        for bad in ["A='b", "A='b'c", "A=\"b\"", "=b"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
