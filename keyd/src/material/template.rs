//! `template`: a string rendered from other values of the same stack, e.g.
//! `postgres://flowetl:{FLOWETL_POSTGRES_PASSWORD|url}@flowetl_db:5432/flowetl`.
//! `{NAME}` inserts a value, `{NAME|url}` percent-encodes it, `{{` and `}}` are literal braces.

use crate::secret::SecretString;

/// One piece of a parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text copied as is.
    Text(String),
    /// A reference to another value.
    Ref {
        /// The name referred to.
        name: String,
        /// Whether to percent-encode the value.
        url: bool,
        /// Byte offset of the `{` in the template text.
        offset: usize,
    },
}

/// A template that failed to parse: what was wrong and where (byte offset in the template).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateSyntaxError {
    /// Byte offset in the template text.
    pub offset: usize,
    /// What was wrong.
    pub message: String,
}

/// Parses a template into pieces.
pub fn parse(text: &str) -> Result<Vec<Piece>, TemplateSyntaxError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                chars.next();
                literal.push('}');
            }
            '}' => {
                return Err(TemplateSyntaxError {
                    offset: i,
                    message: "unmatched '}' (write '}}' for a literal brace)".into(),
                });
            }
            '{' => {
                let Some(len) = text[i + 1..].find('}') else {
                    return Err(TemplateSyntaxError {
                        offset: i,
                        message: "unclosed '{' (expected {NAME} or {NAME|url}; write '{{' for a literal brace)".into(),
                    });
                };
                let inner = &text[i + 1..i + 1 + len];
                let (name, url) = match inner.split_once('|') {
                    None => (inner, false),
                    Some((name, "url")) => (name, true),
                    Some((_, filter)) => {
                        return Err(TemplateSyntaxError {
                            offset: i,
                            message: format!("unknown filter {filter:?} (expected |url)"),
                        });
                    }
                };
                let name = name.trim();
                if name.is_empty() || name.contains('{') {
                    return Err(TemplateSyntaxError {
                        offset: i,
                        message: format!(
                            "bad placeholder {{{inner}}} (expected {{NAME}} or {{NAME|url}})"
                        ),
                    });
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Ref {
                    name: name.to_owned(),
                    url,
                    offset: i,
                });
                while chars.peek().is_some_and(|&(j, _)| j <= i + 1 + len) {
                    chars.next();
                }
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        pieces.push(Piece::Text(literal));
    }
    Ok(pieces)
}

/// The names a parsed template refers to.
pub fn references(pieces: &[Piece]) -> impl Iterator<Item = &str> {
    pieces.iter().filter_map(|p| match p {
        Piece::Ref { name, .. } => Some(name.as_str()),
        Piece::Text(_) => None,
    })
}

/// Renders `pieces`, looking values up with `lookup` (the policy checked every name exists).
pub fn render<'a>(
    pieces: &[Piece],
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Option<SecretString> {
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(text),
            Piece::Ref { name, url, .. } => {
                let value = lookup(name)?;
                if *url {
                    percent_encode_into(value, &mut out);
                } else {
                    out.push_str(value);
                }
            }
        }
    }
    Some(SecretString::new(out))
}

/// RFC 3986 percent-encoding: every byte but the unreserved `A-Z a-z 0-9 - . _ ~`.
fn percent_encode_into(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_with_url_encoding_and_escaped_braces() {
        let pieces = parse("postgres://u:{P|url}@db/{{x}} {P}").unwrap();
        let value = SecretString::new("a@b:c/d#e f".into());
        let out = render(&pieces, |n| (n == "P").then_some(value.expose_secret())).unwrap();
        assert_eq!(
            out.expose_secret(),
            "postgres://u:a%40b%3Ac%2Fd%23e%20f@db/{x} a@b:c/d#e f"
        );
    }

    #[test]
    fn syntax_errors_point_at_the_brace() {
        assert_eq!(parse("ab{C").unwrap_err().offset, 2);
        assert!(
            parse("{C|base64}")
                .unwrap_err()
                .message
                .contains("unknown filter")
        );
        assert!(parse("x}").unwrap_err().message.contains("unmatched"));
        assert!(parse("{}").unwrap_err().message.contains("bad placeholder"));
    }

    #[test]
    fn references_are_listed() {
        let pieces = parse("{A}-{B|url}").unwrap();
        assert_eq!(references(&pieces).collect::<Vec<_>>(), ["A", "B"]);
    }
}
