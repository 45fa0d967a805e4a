//! Which characters a delivered value can hold, known from the policy alone (before any value
//! exists), so a sink that cannot carry some characters refuses the policy at `policy check`
//! instead of failing at random on the first value that happens to hold one.

use std::collections::HashMap;

use super::outputs::{Output, Part};
use super::secrets::{KindSpec, SecretSpec};
use crate::material::template::Piece;
use crate::material::token::Encoding;

/// A set of characters: ASCII as a bit set, anything else listed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CharSet {
    ascii: u128,
    other: Vec<char>,
}

impl CharSet {
    /// The characters of `text`.
    pub fn of(text: &str) -> CharSet {
        let mut set = CharSet::default();
        set.add(text.chars());
        set
    }

    fn add(&mut self, chars: impl IntoIterator<Item = char>) {
        for c in chars {
            if c.is_ascii() {
                self.ascii |= 1 << (c as u32);
            } else if !self.other.contains(&c) {
                self.other.push(c);
            }
        }
    }

    fn union(&mut self, other: &CharSet) {
        self.ascii |= other.ascii;
        self.add(other.other.iter().copied());
    }

    /// The characters in ascending order.
    pub fn chars(&self) -> impl Iterator<Item = char> + '_ {
        (0u8..128)
            .filter(|&b| self.ascii & (1 << b) != 0)
            .map(char::from)
            .chain(self.other.iter().copied())
    }
}

/// `A-Z a-z 0-9` followed by `extra`.
fn alphanumeric_and(extra: &str) -> CharSet {
    let mut set = CharSet::default();
    set.add(('A'..='Z').chain('a'..='z').chain('0'..='9'));
    set.add(extra.chars());
    set
}

/// Every character some value of `output` can hold; `None` when the policy cannot tell
/// (a reference the policy does not resolve, or templates nested deeper than any real policy).
pub fn possible(outputs: &HashMap<&str, (&SecretSpec, Part)>, output: &str) -> Option<CharSet> {
    possible_at(outputs, output, 0)
}

fn possible_at(
    outputs: &HashMap<&str, (&SecretSpec, Part)>,
    output: &str,
    depth: usize,
) -> Option<CharSet> {
    let &(spec, part) = outputs.get(output)?;
    if depth > 32 {
        return None;
    }
    Some(match (&spec.kind, part) {
        (_, Part::Login) => {
            // Role names: lowercase identifiers, and the `_b` of the alternating strategy.
            CharSet::of("abcdefghijklmnopqrstuvwxyz0123456789_")
        }
        (KindSpec::Password { alphabet, .. }, _) => {
            let mut set = CharSet::default();
            set.add(alphabet.chars().into_iter().map(char::from));
            set
        }
        (KindSpec::Token { encoding, .. }, _) => match encoding {
            Encoding::Hex => CharSet::of("0123456789abcdef"),
            Encoding::Base64 => alphanumeric_and("+/="),
            Encoding::Base64url => alphanumeric_and("-_="),
        },
        // URL-safe base64 keys, several joined by commas while a list overlaps.
        (KindSpec::Fernet { .. }, _) => alphanumeric_and("-_=,"),
        // PEM (lines of base64 between BEGIN/END lines) and pretty-printed JSON.
        (KindSpec::Rsa { .. } | KindSpec::Tls { .. }, _) => alphanumeric_and("+/=- \n{}[]\":,_"),
        (KindSpec::Literal { value }, _) => CharSet::of(value),
        (KindSpec::Template { pieces, .. }, _) => {
            let mut set = CharSet::default();
            for piece in pieces {
                match piece {
                    Piece::Text(text) => set.add(text.chars()),
                    // RFC 3986 unreserved characters and %XX escapes.
                    Piece::Ref { url: true, .. } => {
                        set.union(&alphanumeric_and("-._~%"));
                    }
                    Piece::Ref { name, .. } => {
                        set.union(&possible_at(outputs, name, depth + 1)?);
                    }
                }
            }
            set
        }
    })
}

/// Every output of `secrets` by name, for [`possible`].
pub fn outputs_by_name<'a>(
    secrets: impl IntoIterator<Item = &'a SecretSpec>,
) -> HashMap<&'a str, (&'a SecretSpec, Part)> {
    let mut map = HashMap::new();
    for spec in secrets {
        for Output { part, .. } in spec.outputs() {
            let name = match part {
                Part::Main => Some(spec.name.as_str()),
                _ => companion_name(spec, part),
            };
            if let Some(name) = name {
                map.insert(name, (spec, part));
            }
        }
    }
    map
}

/// The name `spec` delivers `part` under, borrowed from the spec.
fn companion_name(spec: &SecretSpec, part: Part) -> Option<&str> {
    match (&spec.kind, part) {
        (KindSpec::Rsa { public, .. }, Part::PublicPem) => public.as_deref(),
        (KindSpec::Rsa { jwks, .. }, Part::Jwks) => jwks.as_deref(),
        (KindSpec::Tls { key, .. }, Part::TlsKey) => Some(key),
        (_, Part::Login) => spec
            .target
            .as_ref()
            .and_then(super::targets::SecretTarget::user_secret),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::Policy;

    fn chars_of(policy: &str, output: &str) -> Option<String> {
        let p = Policy::parse(Path::new("/p.toml"), policy.into()).unwrap();
        let outputs = outputs_by_name(&p.secrets);
        possible(&outputs, output).map(|set| set.chars().collect())
    }

    #[test]
    fn templates_take_their_text_and_what_each_reference_can_hold() {
        let policy = r#"[stack]
name = "s"
[secrets.P]
kind = "password"
alphabet = "ab$"
allow_weak = true
[secrets.U]
kind = "template"
template = "é-{P|url}"
[secrets.R]
kind = "template"
template = "x{P}"
[secrets.K]
kind = "tls"
key = "K_KEY"
cn = "a"
"#;
        assert_eq!(chars_of(policy, "P").unwrap(), "$ab");
        let url = chars_of(policy, "U").unwrap();
        assert!(
            url.contains('%') && url.contains('é') && !url.contains('$'),
            "{url}"
        );
        assert_eq!(chars_of(policy, "R").unwrap(), "$abx");
        assert!(chars_of(policy, "K_KEY").unwrap().contains('\n'));
        assert_eq!(chars_of(policy, "NOPE"), None);
    }
}
