//! Turns policy text into a [`Policy`], collecting every problem with its position. Works on
//! toml's spanned document tree so each message can point at the key or value at fault.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::duration;
use super::{
    AdminPassword, EnvFileSpec, FernetDelivery, FilesSpec, KindSpec, PgStrategy, Policy,
    PolicyError, Problem, RedisMode, ReloadHook, SecretSpec, SecretTarget, Signal, SinkSpec, Sinks,
    TargetKind, TargetSpec,
};
use crate::material::password::{self, Alphabet};
use crate::material::rsa;
use crate::material::template::{self, Piece};
use crate::material::tls::{self, KeyType, TlsSpec};
use crate::material::token::{self, Encoding};

const KINDS: &str = "password, token, fernet, rsa, tls, literal, template";
const COMMON_FIELDS: [&str; 4] = ["kind", "description", "rotate", "grace"];

/// Problems found so far, by byte offset.
struct Checker {
    problems: Vec<(usize, String)>,
}

/// Byte offsets of line starts, so a span's start turns into a line and column by binary
/// search instead of by scanning the text before it (which made parsing quadratic).
pub(super) struct LineIndex<'s> {
    src: &'s str,
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    pub(super) fn new(src: &'s str) -> Self {
        let starts = std::iter::once(0)
            .chain(src.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { src, starts }
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
    fn err(&mut self, at: usize, message: impl Into<String>) {
        self.problems.push((at, message.into()));
    }
}

/// One key = value of a table, with spans.
struct Entry<'t, 'i> {
    key: &'t str,
    key_at: usize,
    value: &'t Spanned<DeValue<'i>>,
}

/// A table's entries in source order, and what the table is called in messages.
struct Fields<'t, 'i> {
    what: String,
    entries: Vec<Entry<'t, 'i>>,
}

impl<'t, 'i> Fields<'t, 'i> {
    fn new(what: impl Into<String>, table: &'t DeTable<'i>) -> Self {
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

    fn get(&self, key: &str) -> Option<&Entry<'t, 'i>> {
        self.entries.iter().find(|e| e.key == key)
    }

    /// Reports every key not in `allowed`; `expected` describes what is allowed.
    fn only(&self, c: &mut Checker, allowed: &[&str], expected: &str) {
        for e in &self.entries {
            if !allowed.contains(&e.key) {
                c.err(
                    e.key_at,
                    format!(
                        "unknown field `{}` in {} (expected {expected})",
                        e.key, self.what
                    ),
                );
            }
        }
    }

    fn wrong_type(&self, c: &mut Checker, e: &Entry<'_, '_>, expected: &str) {
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

    fn str(&self, c: &mut Checker, key: &str) -> Option<(String, usize)> {
        let e = self.get(key)?;
        match e.value.get_ref() {
            DeValue::String(s) => Some((s.to_string(), e.value.span().start)),
            _ => {
                self.wrong_type(c, e, "a string");
                None
            }
        }
    }

    fn int(&self, c: &mut Checker, key: &str) -> Option<(i64, usize)> {
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

    fn bool(&self, c: &mut Checker, key: &str) -> Option<bool> {
        let e = self.get(key)?;
        match e.value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(c, e, "true or false");
                None
            }
        }
    }

    fn str_list(&self, c: &mut Checker, key: &str) -> Option<(Vec<String>, usize)> {
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
    fn int_in(
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
    fn mode(&self, c: &mut Checker, key: &str, default: u32) -> u32 {
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

    fn duration(&self, c: &mut Checker, key: &str) -> Option<(std::time::Duration, usize)> {
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
fn check_name(name: &str) -> Result<(), String> {
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

/// Where in the source the character at `offset` of a string value starts, when that can be
/// known (no escapes before it); otherwise the value's start.
fn offset_in_string(src: &str, value_at: usize, offset: usize) -> usize {
    let raw = &src[value_at..];
    let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
        3
    } else {
        1
    };
    let body = &raw[quote..];
    if raw.starts_with('\'') || !body[..offset.min(body.len())].contains('\\') {
        value_at + quote + offset
    } else {
        value_at
    }
}

struct Draft {
    spec: SecretSpec,
    at: usize,
    template_at: usize,
    /// Where each companion name (`public`, `jwks`, `key`) is written.
    companions_at: Vec<(String, &'static str, usize)>,
}

pub(super) fn parse(path: &Path, source: String) -> Result<Policy, PolicyError> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    let checked = match DeTable::parse(&source) {
        Ok(doc) => check_document(&mut c, path, &source, doc.get_ref()),
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            c.err(at, format!("invalid TOML: {}", e.message().trim()));
            None
        }
    };
    if !c.problems.is_empty() {
        return Err(invalid(path, &source, c.problems));
    }
    let (stack, description, sinks, secrets, targets) =
        checked.expect("no problems means a policy");
    Ok(Policy {
        path: path.to_owned(),
        source,
        stack,
        description,
        sinks,
        index: secrets
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i))
            .collect(),
        secrets,
        targets,
    })
}

fn invalid(path: &Path, src: &str, mut found: Vec<(usize, String)>) -> PolicyError {
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

type Checked = (
    String,
    Option<String>,
    Sinks,
    Vec<SecretSpec>,
    Vec<TargetSpec>,
);

fn check_document(c: &mut Checker, path: &Path, src: &str, doc: &DeTable<'_>) -> Option<Checked> {
    let top = Fields::new("the policy", doc);
    top.only(
        c,
        &["stack", "sinks", "targets", "secrets"],
        "[stack], [sinks.*], [targets.*] or [secrets.*]",
    );

    let mut stack = None;
    let mut description = None;
    match top.get("stack").map(|e| (e, e.value.get_ref())) {
        Some((_, DeValue::Table(t))) => {
            let f = Fields::new("[stack]", t);
            f.only(c, &["name", "description"], "name or description");
            match f.str(c, "name") {
                Some((name, at)) => {
                    let ok = name
                        .chars()
                        .next()
                        .is_some_and(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
                        && name.len() <= 40
                        && name.chars().all(|ch| {
                            ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_'
                        });
                    if ok {
                        stack = Some(name);
                    } else {
                        c.err(at, format!("stack name {name:?} is not valid (expected up to 40 lowercase letters, digits, '-' or '_', starting with a letter or digit)"));
                    }
                }
                None if f.get("name").is_none() => {
                    c.err(
                        t_start(doc, "stack"),
                        "[stack] has no `name` (expected name = \"mystack\")",
                    );
                }
                None => {}
            }
            description = f.str(c, "description").map(|(d, _)| d);
        }
        Some((e, _)) => top.wrong_type(c, e, "a table ([stack])"),
        None => c.err(
            0,
            "the policy has no [stack] table (expected [stack] with name = \"mystack\")",
        ),
    }

    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let sinks = match top.get("sinks").map(|e| (e, e.value.get_ref())) {
        Some((_, DeValue::Table(t))) => check_sinks(c, base, t),
        Some((e, _)) => {
            top.wrong_type(c, e, "a table ([sinks.files], [sinks.envfile])");
            Sinks::default()
        }
        None => Sinks::default(),
    };

    let targets = match top.get("targets").map(|e| (e, e.value.get_ref())) {
        Some((_, DeValue::Table(t))) => check_targets(c, t),
        Some((e, _)) => {
            top.wrong_type(c, e, "a table of targets ([targets.NAME])");
            Vec::new()
        }
        None => Vec::new(),
    };

    let lines = LineIndex::new(src);
    let mut drafts = Vec::new();
    match top.get("secrets").map(|e| (e, e.value.get_ref())) {
        Some((_, DeValue::Table(t))) => {
            for e in Fields::new("[secrets]", t).entries {
                match e.value.get_ref() {
                    DeValue::Table(st) => {
                        if let Some(d) = check_secret(c, &lines, e.key, e.key_at, st, &targets) {
                            drafts.push(d);
                        }
                    }
                    other => c.err(
                        e.value.span().start,
                        format!(
                            "secret {:?} must be a table ([secrets.{}] with a kind) (found {})",
                            e.key,
                            e.key,
                            other.type_str()
                        ),
                    ),
                }
            }
        }
        Some((e, _)) => top.wrong_type(c, e, "a table of secrets ([secrets.NAME])"),
        None => c.err(
            0,
            "the policy declares no secrets (expected [secrets.NAME] tables)",
        ),
    }
    check_names_and_references(c, src, &drafts);
    // An admin password named by a target must be a value this policy delivers.
    let outputs: Vec<String> = drafts
        .iter()
        .flat_map(|d| d.spec.outputs())
        .map(|o| o.name)
        .collect();
    for t in &targets {
        if let AdminPassword::Secret(name) = &t.password
            && !outputs.contains(name)
        {
            c.err(
                t_start(doc, "targets"),
                format!(
                    "target {:?}: password_secret {name:?} is not declared in this policy",
                    t.name
                ),
            );
        }
    }
    if let Some(env) = sinks.envfile()
        && let Some(include) = &env.include
    {
        let names: Vec<String> = drafts
            .iter()
            .flat_map(|d| d.spec.outputs())
            .map(|o| o.name)
            .collect();
        for name in include.iter().filter(|n| !names.contains(n)) {
            c.err(
                t_start(doc, "sinks"),
                format!(
                    "[sinks.envfile] include names {name:?}, which this policy does not declare"
                ),
            );
        }
    }
    let secrets = drafts.into_iter().map(|d| d.spec).collect();
    Some((stack?, description, sinks, secrets, targets))
}

fn t_start(doc: &DeTable<'_>, key: &str) -> usize {
    doc.iter()
        .find(|(k, _)| k.get_ref().as_ref() == key)
        .map_or(0, |(k, _)| k.span().start)
}

fn check_sinks(c: &mut Checker, base: &Path, table: &DeTable<'_>) -> Sinks {
    let f = Fields::new("[sinks]", table);
    f.only(c, &["files", "envfile"], "files or envfile");
    let mut sinks = Sinks::default();
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        let joined = if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        };
        std::path::absolute(&joined).unwrap_or(joined)
    };
    if let Some(e) = f.get("files") {
        match e.value.get_ref() {
            DeValue::Table(t) => {
                let s = Fields::new("[sinks.files]", t);
                s.only(
                    c,
                    &["dir", "mode", "dir_mode", "uid", "gid", "reload"],
                    "dir, mode, dir_mode, uid, gid or reload",
                );
                let dir = s
                    .str(c, "dir")
                    .map_or(PathBuf::from(FilesSpec::DEFAULT_DIR), |(d, _)| resolve(&d));
                let mut sink = FilesSpec::in_dir(dir);
                sink.mode = s.mode(c, "mode", 0o400);
                sink.dir_mode = s.mode(c, "dir_mode", 0o755);
                sink.uid = s
                    .get("uid")
                    .map(|_| s.int_in(c, "uid", 0..=i64::from(u32::MAX - 1), 0).0 as u32);
                sink.gid = s
                    .get("gid")
                    .map(|_| s.int_in(c, "gid", 0..=i64::from(u32::MAX - 1), 0).0 as u32);
                if let Some(e) = s.get("reload") {
                    sink.reload = check_reload(c, base, e);
                }
                sinks.set(SinkSpec::Files(sink));
            }
            _ => f.wrong_type(c, e, "a table ([sinks.files])"),
        }
    }
    if let Some(e) = f.get("envfile") {
        match e.value.get_ref() {
            DeValue::Table(t) => {
                let s = Fields::new("[sinks.envfile]", t);
                s.only(c, &["path", "mode", "include"], "path, mode or include");
                match s.str(c, "path") {
                    Some((p, _)) => sinks.set(SinkSpec::EnvFile(EnvFileSpec {
                        path: resolve(&p),
                        mode: s.mode(c, "mode", 0o600),
                        include: s.str_list(c, "include").map(|(l, _)| l),
                    })),
                    None if s.get("path").is_none() => c.err(
                        e.key_at,
                        "[sinks.envfile] has no `path` (expected path = \".env\")",
                    ),
                    None => {}
                }
            }
            _ => f.wrong_type(c, e, "a table ([sinks.envfile])"),
        }
    }
    sinks
}

/// Whether `name` is a PostgreSQL role name keyd accepts: a lowercase identifier that needs no
/// quoting, at most 59 bytes (room for the `_b` of the alternating strategy's second login).
fn valid_role(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 59
}

fn check_targets(c: &mut Checker, table: &DeTable<'_>) -> Vec<TargetSpec> {
    let mut out = Vec::new();
    for e in Fields::new("[targets]", table).entries {
        let DeValue::Table(t) = e.value.get_ref() else {
            c.err(
                e.value.span().start,
                format!("target {:?} must be a table ([targets.{}])", e.key, e.key),
            );
            continue;
        };
        let f = Fields::new(format!("target {:?}", e.key), t);
        let Some((kind, kind_at)) = f.str(c, "type") else {
            c.err(
                e.key_at,
                format!(
                    "target {:?} has no `type` (expected \"postgres\" or \"redis\")",
                    e.key
                ),
            );
            continue;
        };
        let common = ["type", "url", "password_secret", "password_file"];
        let kind = match kind.as_str() {
            "postgres" => {
                f.only(
                    c,
                    &common,
                    "for type \"postgres\": type, url, password_secret, password_file",
                );
                TargetKind::Postgres
            }
            "redis" => {
                f.only(
                    c,
                    &[&common[..], &["user", "replicas"]].concat(),
                    "for type \"redis\": type, url, user, password_secret, password_file, replicas",
                );
                TargetKind::Redis {
                    user: f
                        .str(c, "user")
                        .map_or_else(|| "default".to_owned(), |(u, _)| u),
                    replicas: f
                        .str_list(c, "replicas")
                        .map(|(r, _)| r)
                        .unwrap_or_default(),
                }
            }
            other => {
                c.err(
                    kind_at,
                    format!("unknown target type {other:?} (expected \"postgres\" or \"redis\")"),
                );
                continue;
            }
        };
        let Some((url, url_at)) = f.str(c, "url") else {
            c.err(e.key_at, format!("target {:?} has no `url`", e.key));
            continue;
        };
        let scheme_ok = match kind {
            TargetKind::Postgres => {
                url.starts_with("postgres://") || url.starts_with("postgresql://")
            }
            TargetKind::Redis { .. } => url.starts_with("redis://"),
        };
        if !scheme_ok {
            c.err(url_at, format!("target {:?}: url {url:?} has the wrong scheme (expected postgres://… or redis://… to match its type)", e.key));
        }
        let authority = url
            .split("://")
            .nth(1)
            .unwrap_or("")
            .split('/')
            .next()
            .unwrap_or("");
        if authority
            .rsplit_once('@')
            .is_some_and(|(userinfo, _)| userinfo.contains(':'))
        {
            c.err(url_at, format!("target {:?}: the url holds a password; put it in password_secret or password_file, not in the policy", e.key));
        }
        let password = match (f.str(c, "password_secret"), f.str(c, "password_file")) {
            (Some(_), Some((_, at))) => {
                c.err(at, "give password_secret or password_file, not both");
                AdminPassword::None
            }
            (Some((name, _)), None) => AdminPassword::Secret(name),
            (None, Some((path, _))) => AdminPassword::File(PathBuf::from(path)),
            (None, None) => AdminPassword::None,
        };
        out.push(TargetSpec {
            name: e.key.to_owned(),
            kind,
            url,
            password,
        });
    }
    out
}

fn check_secret_target(
    c: &mut Checker,
    name: &str,
    e: &Entry<'_, '_>,
    targets: &[TargetSpec],
) -> Option<SecretTarget> {
    let DeValue::Table(t) = e.value.get_ref() else {
        c.err(
            e.value.span().start,
            "`target` must be an inline table, e.g. target = { name = \"db\", role = \"app\" }",
        );
        return None;
    };
    let f = Fields::new(format!("the target of {name:?}"), t);
    let Some((target, target_at)) = f.str(c, "name") else {
        c.err(
            e.value.span().start,
            format!(
                "the target of {name:?} has no `name` (expected one of the [targets.*] tables)"
            ),
        );
        return None;
    };
    let Some(spec) = targets.iter().find(|t| t.name == target) else {
        let known: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        c.err(
            target_at,
            format!(
                "unknown target {target:?} (expected one of: {})",
                if known.is_empty() {
                    "none declared".into()
                } else {
                    known.join(", ")
                }
            ),
        );
        return None;
    };
    match &spec.kind {
        TargetKind::Postgres => {
            f.only(
                c,
                &["name", "role", "strategy", "user_secret", "group"],
                "for a postgres target: name, role, strategy, user_secret, group",
            );
            let Some((role, role_at)) = f.str(c, "role") else {
                c.err(
                    e.value.span().start,
                    format!("the target of {name:?} has no `role`"),
                );
                return None;
            };
            if !valid_role(&role) {
                c.err(role_at, format!("role {role:?} is not a valid PostgreSQL identifier here (expected lowercase letters, digits and '_', starting with a letter or '_', at most 59 characters)"));
            }
            let strategy = match f.str(c, "strategy") {
                None => PgStrategy::Single,
                Some((s, _)) if s == "single" => PgStrategy::Single,
                Some((s, _)) if s == "alternating" => PgStrategy::Alternating,
                Some((s, at)) => {
                    c.err(
                        at,
                        format!("unknown strategy {s:?} (expected \"single\" or \"alternating\")"),
                    );
                    PgStrategy::Single
                }
            };
            let user_secret = f.str(c, "user_secret").map(|(u, at)| {
                if let Err(m) = check_name(&u) {
                    c.err(at, format!("`user_secret`: {m}"));
                }
                u
            });
            if strategy == PgStrategy::Alternating && user_secret.is_none() {
                c.err(e.value.span().start, format!("the alternating strategy of {name:?} needs user_secret = \"NAME\" (the login in use is delivered under it)"));
            }
            let group = match f.str(c, "group") {
                Some((g, at)) => {
                    if !valid_role(&g) {
                        c.err(
                            at,
                            format!("group {g:?} is not a valid PostgreSQL identifier here"),
                        );
                    }
                    g
                }
                None => format!("{role}_group"),
            };
            Some(SecretTarget::Postgres {
                target,
                role,
                strategy,
                user_secret,
                group,
            })
        }
        TargetKind::Redis { .. } => {
            f.only(
                c,
                &["name", "user", "acl", "mode"],
                "for a redis target: name, user, acl, mode",
            );
            let mode = match f.str(c, "mode") {
                None => RedisMode::Acl,
                Some((m, _)) if m == "acl" => RedisMode::Acl,
                Some((m, _)) if m == "requirepass" => RedisMode::Requirepass,
                Some((m, at)) => {
                    c.err(
                        at,
                        format!("unknown mode {m:?} (expected \"acl\" or \"requirepass\")"),
                    );
                    RedisMode::Acl
                }
            };
            let user = f
                .str(c, "user")
                .map_or_else(|| "default".to_owned(), |(u, _)| u);
            if let Some((bad, at)) = f
                .str(c, "user")
                .filter(|(u, _)| u.is_empty() || u.contains(char::is_whitespace))
            {
                c.err(at, format!("Redis user {bad:?} must be a single word"));
            }
            if mode == RedisMode::Requirepass && user != "default" {
                c.err(
                    e.value.span().start,
                    "mode = \"requirepass\" sets the default user's password: leave `user` out",
                );
            }
            let acl = f
                .str(c, "acl")
                .map_or_else(|| "~* &* +@all".to_owned(), |(a, _)| a);
            Some(SecretTarget::Redis {
                target,
                user,
                acl,
                mode,
            })
        }
    }
}

const RELOAD_EXPECTED: &str = "reload = { signal = \"HUP\", pid_file = \"/run/app.pid\" } or reload = { command = [\"prog\", \"arg\"] }";

fn check_reload(c: &mut Checker, base: &Path, e: &Entry<'_, '_>) -> Option<ReloadHook> {
    let DeValue::Table(t) = e.value.get_ref() else {
        c.err(
            e.value.span().start,
            format!("`reload` must be a table ({RELOAD_EXPECTED})"),
        );
        return None;
    };
    let f = Fields::new("`reload` of [sinks.files]", t);
    f.only(
        c,
        &["signal", "pid_file", "command"],
        "signal and pid_file, or command",
    );
    match (
        f.str(c, "signal"),
        f.str(c, "pid_file"),
        f.str_list(c, "command"),
    ) {
        (Some((signal, s_at)), Some((pid_file, _)), None) => {
            let Some(signal) = Signal::parse(&signal) else {
                let names: Vec<&str> = Signal::ALL.iter().map(|s| s.as_str()).collect();
                c.err(
                    s_at,
                    format!(
                        "unknown signal {signal:?} (expected one of {})",
                        names.join(", ")
                    ),
                );
                return None;
            };
            let p = Path::new(&pid_file);
            let pid_file = if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            };
            Some(ReloadHook::Signal { signal, pid_file })
        }
        (None, None, Some((argv, _))) if !argv.is_empty() => Some(ReloadHook::Command { argv }),
        _ => {
            c.err(e.value.span().start, format!("`reload` needs either signal and pid_file, or a non-empty command ({RELOAD_EXPECTED})"));
            None
        }
    }
}

fn check_secret(
    c: &mut Checker,
    lines: &LineIndex<'_>,
    name: &str,
    at: usize,
    table: &DeTable<'_>,
    targets: &[TargetSpec],
) -> Option<Draft> {
    let f = Fields::new(format!("secret {name:?}"), table);
    if let Err(message) = check_name(name) {
        c.err(at, message);
    }
    let Some((kind, kind_at)) = f.str(c, "kind") else {
        if f.get("kind").is_none() {
            c.err(
                at,
                format!("secret {name:?} has no `kind` (expected one of {KINDS})"),
            );
        }
        return None;
    };
    let specific: &[&str] = match kind.as_str() {
        "password" => &["length", "alphabet", "allow_weak", "target"],
        "token" => &["bytes", "encoding", "allow_weak"],
        "fernet" => &["keep", "deliver"],
        "rsa" => &["bits", "public", "jwks", "publish_ahead"],
        "tls" => &["key", "cn", "sans", "days", "key_type", "bits"],
        "literal" => &["value"],
        "template" => &["template"],
        _ => {
            c.err(
                kind_at,
                format!("unknown kind {kind:?} (expected one of {KINDS})"),
            );
            return None;
        }
    };
    let allowed: Vec<&str> = COMMON_FIELDS.iter().chain(specific).copied().collect();
    f.only(
        c,
        &allowed,
        &format!("for kind {kind:?}: {}", allowed.join(", ")),
    );
    let rotate = f.duration(c, "rotate");
    let grace = f.duration(c, "grace");
    if let (Some((r, _)), Some((g, g_at))) = (rotate, grace)
        && g >= r
    {
        c.err(g_at, format!("grace {} is not shorter than rotate {} (expected the overlap to end before the next rotation)", duration::format(g), duration::format(r)));
    }
    let description = f.str(c, "description").map(|(d, _)| d);
    let target = f
        .get("target")
        .and_then(|e| check_secret_target(c, name, e, targets));
    let mut companions_at = Vec::new();
    let mut companion = |c: &mut Checker, key: &'static str| -> Option<String> {
        let (n, n_at) = f.str(c, key)?;
        if let Err(message) = check_name(&n) {
            c.err(n_at, format!("`{key}`: {message}"));
        }
        companions_at.push((n.clone(), key, n_at));
        Some(n)
    };
    let mut template_at = 0;
    let spec = match kind.as_str() {
        "password" => {
            let allow_weak = f.bool(c, "allow_weak").unwrap_or(false);
            let (length, len_at) = f.int_in(c, "length", 1..=4096, password::DEFAULT_LENGTH as i64);
            let alphabet = match f.str(c, "alphabet") {
                Some((a, a_at)) => Alphabet::parse(&a).unwrap_or_else(|m| {
                    c.err(a_at, m);
                    Alphabet::Alphanumeric
                }),
                None => Alphabet::Alphanumeric,
            };
            let length = length as usize;
            if !allow_weak {
                let bits = length as f64 * alphabet.bits_per_char();
                if length < password::MIN_LENGTH {
                    c.err(len_at.max(at), format!("password length {length} is weak (expected at least {}, or allow_weak = true)", password::MIN_LENGTH));
                } else if bits < 64.0 {
                    c.err(len_at.max(at), format!("{length} characters of alphabet {alphabet} give about {bits:.0} bits (expected at least 64, or allow_weak = true)"));
                }
            }
            KindSpec::Password { length, alphabet }
        }
        "token" => {
            let allow_weak = f.bool(c, "allow_weak").unwrap_or(false);
            let (bytes, bytes_at) = f.int_in(c, "bytes", 1..=4096, token::DEFAULT_BYTES as i64);
            if !allow_weak && (bytes as usize) < token::MIN_BYTES {
                c.err(bytes_at.max(at), format!("token of {bytes} bytes is weak (expected at least {}, or allow_weak = true)", token::MIN_BYTES));
            }
            let encoding = match f.str(c, "encoding") {
                Some((e, e_at)) => Encoding::parse(&e).unwrap_or_else(|| {
                    c.err(
                        e_at,
                        format!(
                            "unknown encoding {e:?} (expected one of {})",
                            Encoding::NAMES
                        ),
                    );
                    Encoding::Hex
                }),
                None => Encoding::Hex,
            };
            KindSpec::Token {
                bytes: bytes as usize,
                encoding,
            }
        }
        "fernet" => {
            let (keep, _) = f.int_in(c, "keep", 1..=16, 2);
            let deliver = match f.str(c, "deliver") {
                Some((d, _)) if d == "list" => FernetDelivery::List,
                Some((d, _)) if d == "primary" => FernetDelivery::Primary,
                Some((d, d_at)) => {
                    c.err(
                        d_at,
                        format!("unknown deliver {d:?} (expected \"list\" or \"primary\")"),
                    );
                    FernetDelivery::List
                }
                None => FernetDelivery::List,
            };
            KindSpec::Fernet {
                keep: keep as usize,
                deliver,
            }
        }
        "rsa" => KindSpec::Rsa {
            bits: rsa_bits(c, &f),
            public: companion(c, "public"),
            jwks: companion(c, "jwks"),
            publish_ahead: f.duration(c, "publish_ahead").map(|(d, _)| d),
        },
        "tls" => {
            let key = companion(c, "key");
            if f.get("key").is_none() {
                c.err(at, format!("tls secret {name:?} has no `key` (expected key = \"NAME\" for the private key file)"));
            }
            let cn = f.str(c, "cn").map(|(cn, _)| cn);
            if f.get("cn").is_none() {
                c.err(
                    at,
                    format!("tls secret {name:?} has no `cn` (expected cn = \"host.example\")"),
                );
            }
            let sans = f.str_list(c, "sans").map(|(s, _)| s);
            for (san, san_at) in sans.iter().flatten().zip(std::iter::repeat(
                f.get("sans").map_or(at, |e| e.value.span().start),
            )) {
                if san.parse::<std::net::IpAddr>().is_err() && !valid_dns_name(san) {
                    c.err(
                        san_at,
                        format!("SAN {san:?} is neither a DNS name nor an IP address"),
                    );
                }
            }
            let (days, _) = f.int_in(
                c,
                "days",
                1..=i64::from(tls::MAX_DAYS),
                i64::from(tls::DEFAULT_DAYS),
            );
            let key_type = match f.str(c, "key_type") {
                Some((t, _)) if t == "rsa" => KeyType::Rsa(rsa_bits(c, &f)),
                Some((t, _)) if t == "ecdsa-p256" => KeyType::EcdsaP256,
                Some((t, t_at)) => {
                    c.err(
                        t_at,
                        format!("unknown key_type {t:?} (expected \"ecdsa-p256\" or \"rsa\")"),
                    );
                    KeyType::EcdsaP256
                }
                None => KeyType::EcdsaP256,
            };
            if key_type == KeyType::EcdsaP256
                && let Some(e) = f.get("bits")
            {
                c.err(e.key_at, "`bits` applies only with key_type = \"rsa\"");
            }
            let cn = cn?;
            KindSpec::Tls {
                key: key?,
                spec: TlsSpec {
                    sans: sans.unwrap_or_else(|| vec![cn.clone()]),
                    cn,
                    days: days as u32,
                    key_type,
                },
            }
        }
        "literal" => {
            let Some((value, _)) = f.str(c, "value") else {
                if f.get("value").is_none() {
                    c.err(
                        at,
                        format!(
                            "literal secret {name:?} has no `value` (expected value = \"...\")"
                        ),
                    );
                }
                return None;
            };
            KindSpec::Literal { value }
        }
        "template" => {
            let Some((text, text_at)) = f.str(c, "template") else {
                if f.get("template").is_none() {
                    c.err(at, format!("template secret {name:?} has no `template` (expected template = \"...{{OTHER_SECRET}}...\")"));
                }
                return None;
            };
            template_at = text_at;
            match template::parse(&text) {
                Ok(pieces) => KindSpec::Template { text, pieces },
                Err(e) => {
                    c.err(
                        offset_in_string(lines.src, text_at, e.offset),
                        format!("template of {name:?}: {}", e.message),
                    );
                    return None;
                }
            }
        }
        _ => unreachable!("kinds were matched above"),
    };
    let (line, _) = lines.position(at);
    Some(Draft {
        spec: SecretSpec {
            name: name.to_owned(),
            kind: spec,
            rotate: rotate.map(|(d, _)| d),
            grace: grace.map(|(d, _)| d),
            description,
            target,
            line,
        },
        at,
        template_at,
        companions_at,
    })
}

fn rsa_bits(c: &mut Checker, f: &Fields<'_, '_>) -> usize {
    match f.int(c, "bits") {
        Some((b, _)) if rsa::SIZES.contains(&(b as usize)) => b as usize,
        Some((b, b_at)) => {
            c.err(
                b_at,
                format!("unsupported RSA key size {b} (expected 2048, 3072 or 4096)"),
            );
            rsa::DEFAULT_BITS
        }
        None => rsa::DEFAULT_BITS,
    }
}

fn valid_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        })
}

/// Every output name unique; every template reference known; no template cycles.
fn check_names_and_references(c: &mut Checker, src: &str, drafts: &[Draft]) {
    let mut owner: HashMap<String, (usize, usize)> = HashMap::new(); // output -> (draft, line)
    for (i, d) in drafts.iter().enumerate() {
        for out in d.spec.outputs() {
            let line = d.spec.line;
            if let Some((j, first_line)) = owner.get(&out.name) {
                let first = &drafts[*j].spec.name;
                let earlier = if *first == out.name {
                    String::new()
                } else {
                    format!(" (by secret {first:?})")
                };
                let (at, this) = match d.companions_at.iter().find(|(n, _, _)| *n == out.name) {
                    Some((_, key, at)) if out.part != crate::policy::Part::Main => {
                        (*at, format!(" as the `{key}` of {:?}", d.spec.name))
                    }
                    _ => (d.at, String::new()),
                };
                c.err(at, format!("duplicate name {:?}{this}: already declared on line {first_line}{earlier} (expected every secret and companion name to be unique in the stack)", out.name));
            } else {
                owner.insert(out.name, (i, line));
            }
        }
    }
    // Template references, then cycles over secret-to-secret edges.
    let mut edges: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, d) in drafts.iter().enumerate() {
        let KindSpec::Template { pieces, .. } = &d.spec.kind else {
            continue;
        };
        for piece in pieces {
            let Piece::Ref { name, offset, .. } = piece else {
                continue;
            };
            match owner.get(name) {
                Some((j, _)) => edges.entry(i).or_default().push(*j),
                None => c.err(
                    offset_in_string(src, d.template_at, *offset),
                    format!("template of {:?} refers to unknown name {{{name}}} (expected a secret or companion name declared in this policy)", d.spec.name),
                ),
            }
        }
    }
    let mut state = vec![0u8; drafts.len()]; // 0 new, 1 on the path, 2 done
    for start in edges.keys().copied().collect::<Vec<_>>() {
        let mut path = Vec::new();
        if let Some(cycle) = find_cycle(start, &edges, &mut state, &mut path) {
            let names: Vec<&str> = cycle
                .iter()
                .map(|&k| drafts[k].spec.name.as_str())
                .collect();
            let first = cycle[0];
            c.err(drafts[first].template_at.max(drafts[first].at), format!("template cycle: {} (expected templates to refer to values that do not depend on them)", names.join(" -> ")));
            break; // one cycle is enough to act on; the search state is not valid past it
        }
    }
}

fn find_cycle(
    node: usize,
    edges: &BTreeMap<usize, Vec<usize>>,
    state: &mut [u8],
    path: &mut Vec<usize>,
) -> Option<Vec<usize>> {
    match state[node] {
        2 => return None,
        1 => {
            let from = path.iter().position(|&n| n == node).expect("on the path");
            let mut cycle = path[from..].to_vec();
            cycle.push(node);
            return Some(cycle);
        }
        _ => {}
    }
    state[node] = 1;
    path.push(node);
    for &next in edges.get(&node).map(Vec::as_slice).unwrap_or(&[]) {
        if let Some(cycle) = find_cycle(next, edges, state, path) {
            return Some(cycle);
        }
    }
    path.pop();
    state[node] = 2;
    None
}
