//! Typed reads of one TOML table for the parser: its entries in source order with their
//! positions, and strings, integers, booleans, lists, ranges, file modes and durations, each
//! reporting a wrong type or value at the value's position; and the rule for secret names.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::problems::{Checker, closest};
use crate::policy::{LoginStrategy, duration};

/// One key = value of a table, with spans.
pub(super) struct Entry<'t, 'i> {
    pub(super) key: &'t str,
    pub(super) key_at: usize,
    pub(super) value: &'t Spanned<DeValue<'i>>,
}

/// A table's entries in source order, and what the table is called in messages.
pub(super) struct Fields<'t, 'i> {
    what: String,
    pub(super) entries: Vec<Entry<'t, 'i>>,
}

impl<'t, 'i> Fields<'t, 'i> {
    pub(super) fn new(what: impl Into<String>, table: &'t DeTable<'i>) -> Self {
        let mut entries: Vec<Entry<'t, 'i>> = table
            .iter()
            .map(|(k, v)| Entry {
                key: k.get_ref().as_ref(),
                key_at: k.span().start,
                value: v,
            })
            .collect();
        entries.sort_by_key(|e| e.key_at);
        Fields {
            what: what.into(),
            entries,
        }
    }

    pub(super) fn get(&self, key: &str) -> Option<&Entry<'t, 'i>> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Reports every key not in `allowed`; `expected` describes what is allowed.
    pub(super) fn only(&self, c: &mut Checker, allowed: &[&str], expected: &str) {
        self.only_with(c, &[allowed], || expected.to_owned());
    }

    /// Reports every key in none of the `allowed` lists, with the allowed one it is closest
    /// to; `expected` (made only for a report) describes what is allowed.
    pub(super) fn only_with(
        &self,
        c: &mut Checker,
        allowed: &[&[&str]],
        expected: impl FnOnce() -> String,
    ) {
        let mut expected = Some(expected);
        let mut text = String::new();
        let known = |key: &str| allowed.iter().any(|names| names.contains(&key));
        for e in self.entries.iter().filter(|e| !known(e.key)) {
            if let Some(make) = expected.take() {
                text = make();
            }
            let guess = closest(
                e.key,
                allowed.iter().flat_map(|names| names.iter().copied()),
            )
            .map_or_else(String::new, |name| format!(": did you mean `{name}`?"));
            c.err(
                e.key_at,
                format!(
                    "unknown field `{}` in {}{guess} (expected {text})",
                    e.key, self.what
                ),
            );
        }
    }

    pub(super) fn wrong_type(&self, c: &mut Checker, e: &Entry<'_, '_>, expected: &str) {
        c.err(
            e.value.span().start,
            format!(
                "`{}` in {} must be {expected} (found {})",
                e.key,
                self.what,
                e.value.get_ref().type_str()
            ),
        );
    }

    pub(super) fn str(&self, c: &mut Checker, key: &str) -> Option<(String, usize)> {
        let e = self.get(key)?;
        match e.value.get_ref() {
            DeValue::String(s) => Some((s.to_string(), e.value.span().start)),
            _ => {
                self.wrong_type(c, e, "a string");
                None
            }
        }
    }

    /// A string naming a path. Control characters are refused: paths are written into other
    /// formats (`keyctl compose` puts them in YAML; messages and logs print them one to a
    /// line), where a newline starts a new key or line, and no real path needs one.
    pub(super) fn path(&self, c: &mut Checker, key: &str) -> Option<(String, usize)> {
        let (path, at) = self.str(c, key)?;
        if let Some(bad) = path.chars().find(|ch| ch.is_control()) {
            c.err(
                at,
                format!(
                    "`{key}` in {} holds the control character {bad:?} (expected a path without newlines, tabs or other control characters)",
                    self.what
                ),
            );
            return None;
        }
        Some((path, at))
    }

    pub(super) fn int(&self, c: &mut Checker, key: &str) -> Option<(i64, usize)> {
        let e = self.get(key)?;
        match e.value.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some((n, e.value.span().start)),
                Err(_) => {
                    c.err(e.value.span().start, format!("`{key}` is out of range"));
                    None
                }
            },
            _ => {
                self.wrong_type(c, e, "an integer");
                None
            }
        }
    }

    pub(super) fn bool(&self, c: &mut Checker, key: &str) -> Option<bool> {
        let e = self.get(key)?;
        match e.value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(c, e, "true or false");
                None
            }
        }
    }

    pub(super) fn str_list(&self, c: &mut Checker, key: &str) -> Option<(Vec<String>, usize)> {
        let e = self.get(key)?;
        let DeValue::Array(items) = e.value.get_ref() else {
            self.wrong_type(c, e, "a list of strings");
            return None;
        };
        let mut out = Vec::new();
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => out.push(s.to_string()),
                other => c.err(
                    item.span().start,
                    format!(
                        "`{key}` in {} must list strings (found {})",
                        self.what,
                        other.type_str()
                    ),
                ),
            }
        }
        Some((out, e.value.span().start))
    }

    /// An integer within `range`, or `default` when absent.
    pub(super) fn int_in(
        &self,
        c: &mut Checker,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
    ) -> (i64, usize) {
        match self.int(c, key) {
            Some((n, at)) if range.contains(&n) => (n, at),
            Some((n, at)) => {
                c.err(
                    at,
                    format!(
                        "`{key}` = {n} in {} is out of range (expected {} to {})",
                        self.what,
                        range.start(),
                        range.end()
                    ),
                );
                (default, at)
            }
            None => (default, 0),
        }
    }

    /// A file mode: an octal string ("0400") or an octal integer (0o400).
    pub(super) fn mode(&self, c: &mut Checker, key: &str, default: u32) -> u32 {
        let Some(e) = self.get(key) else {
            return default;
        };
        let at = e.value.span().start;
        let mode = match e.value.get_ref() {
            DeValue::String(s) => u32::from_str_radix(s, 8).ok(),
            DeValue::Integer(i) if i.radix() == 8 => u32::from_str_radix(i.as_str(), 8).ok(),
            _ => None,
        };
        match mode {
            Some(m) if m <= 0o777 && m & 0o022 == 0 => m,
            Some(m) if m <= 0o777 => {
                c.err(at, format!("`{key}` {m:04o} lets group or others write secrets (expected a mode without write bits for them, e.g. \"0400\")"));
                default
            }
            _ => {
                c.err(
                    at,
                    format!(
                        "`{key}` in {} must be an octal mode like \"0400\" or 0o400",
                        self.what
                    ),
                );
                default
            }
        }
    }

    pub(super) fn duration(
        &self,
        c: &mut Checker,
        key: &str,
    ) -> Option<(std::time::Duration, usize)> {
        let (text, at) = self.str(c, key)?;
        match duration::parse(&text) {
            Ok(d) => Some((d, at)),
            Err(message) => {
                c.err(at, format!("`{key}` in {}: {message}", self.what));
                None
            }
        }
    }
}

/// Checks a secret or companion name; the rules keep it a safe file name, Swarm secret name
/// (with room for the `_v<version>` suffix) and, usually, an env var name.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 60 {
        return Err(format!("name {name:?} must be 1 to 60 characters long"));
    }
    if name.starts_with('.') {
        return Err(format!("name {name:?} must not start with '.'"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {name:?} contains {bad:?} (expected letters, digits, '.', '_' or '-')"
        ));
    }
    Ok(())
}

/// The `user` a secret's target must name (MySQL, RabbitMQ), checked by `valid`; `None`, with
/// the error given, when it is missing. An invalid one is reported as `what` (e.g. "RabbitMQ
/// user") followed by `expected`, and still returned, so the other fields are checked too.
pub(super) fn required_user(
    c: &mut Checker,
    f: &Fields<'_, '_>,
    name: &str,
    e: &Entry<'_, '_>,
    (what, valid, expected): (&str, fn(&str) -> bool, &str),
) -> Option<String> {
    let Some((user, user_at)) = f.str(c, "user") else {
        c.err(
            e.value.span().start,
            format!("the target of {name:?} has no `user`"),
        );
        return None;
    };
    if !valid(&user) {
        c.err(
            user_at,
            format!("{what} {user:?} is not valid here ({expected})"),
        );
    }
    Some(user)
}

/// The `strategy` and `user_secret` of a secret's target (PostgreSQL, MySQL, RabbitMQ): the
/// alternating strategy delivers the login in use under `user_secret`, so it needs one.
pub(super) fn login_strategy(
    c: &mut Checker,
    f: &Fields<'_, '_>,
    name: &str,
    e: &Entry<'_, '_>,
) -> (LoginStrategy, Option<String>) {
    let strategy = match f.str(c, "strategy") {
        None => LoginStrategy::Single,
        Some((s, _)) if s == "single" => LoginStrategy::Single,
        Some((s, _)) if s == "alternating" => LoginStrategy::Alternating,
        Some((s, at)) => {
            c.err(
                at,
                format!("unknown strategy {s:?} (expected \"single\" or \"alternating\")"),
            );
            LoginStrategy::Single
        }
    };
    let user_secret = f.str(c, "user_secret").map(|(u, at)| {
        if let Err(m) = check_name(&u) {
            c.err(at, format!("`user_secret`: {m}"));
        }
        u
    });
    if strategy == LoginStrategy::Alternating && user_secret.is_none() {
        c.err(e.value.span().start, format!("the alternating strategy of {name:?} needs user_secret = \"NAME\" (the login in use is delivered under it)"));
    }
    (strategy, user_secret)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Runs `read` on the fields of table `[t]` written as `src`; returns what it read and the
    /// problems (byte offset, message) it reported.
    fn read<T>(
        src: &str,
        read: impl FnOnce(&mut Checker, &Fields<'_, '_>) -> T,
    ) -> (T, Vec<(usize, String)>) {
        let doc = DeTable::parse(src).expect("valid TOML");
        let f = Fields::new("[t]", doc.get_ref());
        let mut c = Checker {
            problems: Vec::new(),
        };
        let out = read(&mut c, &f);
        (out, c.problems)
    }

    #[test]
    fn entries_come_in_source_order_and_unknown_keys_are_reported() {
        let ((keys, at), problems) = read("zeta = 1\nalpha = 2\nmid = 3\n", |c, f| {
            f.only(c, &["zeta", "alpha"], "zeta or alpha");
            let keys: Vec<&str> = f.entries.iter().map(|e| e.key).collect();
            let at: Vec<usize> = f.entries.iter().map(|e| e.key_at).collect();
            (keys.join(","), at)
        });
        assert_eq!(keys, "zeta,alpha,mid");
        assert_eq!(at, [0, 9, 19]);
        assert_eq!(
            problems,
            [(
                19,
                "unknown field `mid` in [t] (expected zeta or alpha)".to_string()
            )]
        );
    }

    #[test]
    fn a_misspelt_field_is_answered_with_the_field_it_is_closest_to() {
        let (_, problems) = read("lenght = 1\nalpah = 2\nxyz = 3\n", |c, f| {
            f.only(c, &["length", "alpha"], "length or alpha");
        });
        let messages: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(
            messages,
            [
                "unknown field `lenght` in [t]: did you mean `length`? (expected length or alpha)",
                "unknown field `alpah` in [t]: did you mean `alpha`? (expected length or alpha)",
                "unknown field `xyz` in [t] (expected length or alpha)",
            ]
        );
    }

    #[test]
    fn typed_values_with_their_positions() {
        let src = "s = \"x\"\nh = 0x1F\no = 0o17\nu = 1_000\nb = true\nl = [\"a\", \"b\"]\n";
        let (out, problems) = read(src, |c, f| {
            (
                f.str(c, "s"),
                f.int(c, "h"),
                f.int(c, "o"),
                f.int(c, "u"),
                f.bool(c, "b"),
                f.str_list(c, "l"),
                f.str(c, "absent"),
            )
        });
        assert_eq!(problems, []);
        let (s, h, o, u, b, l, absent) = out;
        assert_eq!(s, Some(("x".into(), 4)));
        assert_eq!(h, Some((31, 12)));
        assert_eq!(o, Some((15, 21)));
        assert_eq!(u, Some((1000, 30)));
        assert_eq!(b, Some(true));
        assert_eq!(l, Some((vec!["a".into(), "b".into()], 49)));
        assert_eq!(absent, None);
    }

    #[test]
    fn wrong_types_and_out_of_range_integers() {
        let src = "s = 1\ni = \"1\"\nb = 0\nl = [\"a\", 2]\nbig = 99999999999999999999\n";
        let (out, problems) = read(src, |c, f| {
            (
                f.str(c, "s"),
                f.int(c, "i"),
                f.bool(c, "b"),
                f.str_list(c, "l"),
                f.int(c, "big"),
            )
        });
        let at = |needle: &str| src.find(needle).unwrap();
        assert_eq!(out.3, Some((vec!["a".into()], at("[\"a\""))));
        let messages: Vec<(usize, &str)> =
            problems.iter().map(|(at, m)| (*at, m.as_str())).collect();
        assert_eq!(
            messages,
            [
                (at("1\n"), "`s` in [t] must be a string (found integer)"),
                (at("\"1\""), "`i` in [t] must be an integer (found string)"),
                (
                    at("0\n"),
                    "`b` in [t] must be true or false (found integer)"
                ),
                (at("2]"), "`l` in [t] must list strings (found integer)"),
                (at("999"), "`big` is out of range"),
            ]
        );
    }

    #[test]
    fn ranges_and_defaults() {
        let (out, problems) = read("n = 5\nm = 50\nw = \"x\"\n", |c, f| {
            (
                f.int_in(c, "n", 1..=10, 7),
                f.int_in(c, "m", 1..=10, 7),
                f.int_in(c, "absent", 1..=10, 7),
                f.int_in(c, "w", 1..=10, 7),
            )
        });
        assert_eq!(out, ((5, 4), (7, 10), (7, 0), (7, 0)));
        assert_eq!(
            problems,
            [
                (
                    10,
                    "`m` = 50 in [t] is out of range (expected 1 to 10)".to_string()
                ),
                (
                    17,
                    "`w` in [t] must be an integer (found string)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn modes() {
        let src = "a = \"0400\"\nb = 0o750\nc = \"640\"\nd = 400\ne = \"0620\"\nf = 0o1777\n";
        let (out, problems) = read(src, |c, f| {
            [
                f.mode(c, "a", 1),
                f.mode(c, "b", 1),
                f.mode(c, "c", 1),
                f.mode(c, "d", 1),
                f.mode(c, "e", 1),
                f.mode(c, "f", 1),
                f.mode(c, "absent", 0o600),
            ]
        });
        assert_eq!(out, [0o400, 0o750, 0o640, 1, 1, 1, 0o600]);
        let at = |needle: &str| src.find(needle).unwrap();
        assert_eq!(
            problems,
            [
                (at("400\n"), "`d` in [t] must be an octal mode like \"0400\" or 0o400".to_string()),
                (at("\"0620"), "`e` 0620 lets group or others write secrets (expected a mode without write bits for them, e.g. \"0400\")".to_string()),
                (at("0o1777"), "`f` in [t] must be an octal mode like \"0400\" or 0o400".to_string()),
            ]
        );
    }

    #[test]
    fn durations() {
        let (out, problems) = read("r = \"1d12h\"\ng = \"12\"\n", |c, f| {
            (f.duration(c, "r"), f.duration(c, "g"))
        });
        assert_eq!(out, (Some((Duration::from_secs(36 * 3600), 4)), None));
        assert_eq!(
            problems,
            [(16, "`g` in [t]: bad duration \"12\": 12 has no unit (expected a whole number followed by s, m, h, d or w, e.g. \"90d\" or \"1d12h\")".to_string())]
        );
    }
}
