//! Turns policy text into a [`Policy`], collecting every problem with its position. Works on
//! toml's spanned document tree so each message can point at the key or value at fault.
//!
//! This module owns the entry point ([`parse`]) and the walk over the document (`[stack]`, the
//! top-level keys, each section handed to its part). The parts below it: `fields` reads one
//! table's typed values, `kinds` checks one secret and its kind's fields, `targets` the
//! `[targets.*]` tables and a secret's `target`, `sinks` the `[sinks.*]` tables,
//! `cross_checks` what needs the whole policy (names, template references and cycles, what
//! each sink can carry), and `problems` the problems found and their positions.

mod cross_checks;
mod fields;
mod kinds;
mod mysql_target;
mod notify;
mod pgbouncer_target;
mod problems;
mod rabbitmq_target;
mod sinks;
mod targets;

use std::path::Path;

use toml::de::{DeTable, DeValue};

use self::cross_checks::{
    check_declared_names, check_envfile_values, check_names_and_references, check_swarm_names,
};
use self::fields::Fields;
use self::kinds::check_secret;
use self::notify::check_notify;
use self::problems::{Checker, LineIndex, invalid, top_level_key_at};
use self::sinks::check_sinks;
use self::targets::check_targets;
use super::{NotifySpec, Policy, PolicyError, SecretSpec, SinkSpec, Sinks, TargetSpec};

pub(super) fn parse(path: &Path, source: String) -> Result<Policy, PolicyError> {
    let mut c = Checker {
        problems: Vec::new(),
    };
    let checked = match DeTable::parse(&source) {
        Ok(doc) => check_document(&mut c, path, &source, doc.get_ref()),
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            let message = e.message().trim();
            // toml reports the duplicate key's span but not its name: name it from the text.
            let key = e
                .span()
                .and_then(|s| source.get(s))
                .map(str::trim)
                .filter(|k| message == "duplicate key" && !k.is_empty());
            match key {
                Some(key) => c.err(
                    at,
                    format!(
                        "invalid TOML: duplicate key `{key}` (expected each key once in its table)"
                    ),
                ),
                None => c.err(at, format!("invalid TOML: {message}")),
            }
            None
        }
    };
    if !c.problems.is_empty() {
        return Err(invalid(path, &source, c.problems));
    }
    let Checked {
        stack,
        description,
        sinks,
        secrets,
        targets,
        notify,
    } = checked.expect("no problems means a policy");
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
        notify,
    })
}

/// A policy's parts once every check passed.
struct Checked {
    stack: String,
    description: Option<String>,
    sinks: Sinks,
    secrets: Vec<SecretSpec>,
    targets: Vec<TargetSpec>,
    notify: Option<NotifySpec>,
}

fn check_document(c: &mut Checker, path: &Path, src: &str, doc: &DeTable<'_>) -> Option<Checked> {
    let top = Fields::new("the policy", doc);
    top.only(
        c,
        &["stack", "sinks", "targets", "secrets", "notify"],
        "[stack], [sinks.*], [targets.*], [secrets.*] or [notify]",
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
                        top_level_key_at(doc, "stack"),
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
    let mut sinks = match top.get("sinks").map(|e| (e, e.value.get_ref())) {
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

    let notify = match top.get("notify").map(|e| (e, e.value.get_ref())) {
        Some((e, DeValue::Table(t))) => check_notify(c, base, e.key_at, t),
        Some((e, _)) => {
            top.wrong_type(c, e, "a table ([notify] with webhook and secret_file)");
            None
        }
        None => None,
    };

    let lines = LineIndex::new(src);
    let mut drafts = Vec::new();
    match top.get("secrets").map(|e| (e, e.value.get_ref())) {
        Some((_, DeValue::Table(t))) => {
            // Drafts are large: room for all of them at once, so none is moved by a regrowth.
            drafts.reserve_exact(t.len());
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
    check_declared_names(c, doc, &targets, &sinks, &drafts);
    if let Some(env) = sinks.envfile()
        && c.problems.is_empty()
    {
        check_envfile_values(c, env, &drafts);
    }
    if let Some(swarm) = sinks.swarm() {
        check_swarm_names(c, swarm, &drafts);
        let mut swarm = swarm.clone();
        swarm.stack = stack.clone().unwrap_or_default();
        sinks.set(SinkSpec::Swarm(swarm));
    }
    if let Some(plugin) = sinks.plugin() {
        let mut plugin = plugin.clone();
        plugin.stack = stack.clone().unwrap_or_default();
        sinks.set(SinkSpec::Plugin(plugin));
    }
    let secrets = drafts.into_iter().map(|d| d.spec).collect();
    Some(Checked {
        stack: stack?,
        description,
        sinks,
        secrets,
        targets,
        notify,
    })
}

/// Shared by the parts' unit tests: policies read from `p.toml`.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use crate::policy::Policy;

    /// The policy `src` gives; panics with every problem if it is refused.
    pub(super) fn policy(src: &str) -> Policy {
        super::parse(Path::new("p.toml"), src.to_string())
            .unwrap_or_else(|e| panic!("expected a valid policy, got:\n{e}"))
    }

    /// Every problem of `src` as `PolicyError` shows them (`p.toml:LINE:COL: message` lines).
    pub(super) fn err_text(src: &str) -> String {
        match super::parse(Path::new("p.toml"), src.to_string()) {
            Ok(_) => panic!("expected problems in:\n{src}"),
            Err(e) => e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{err_text, policy};
    use super::*;
    use crate::policy::{Kind, KindSpec};

    #[test]
    fn minimal_policy_keeps_order_lines_and_lookups() {
        let p = policy(
            r#"[stack]
name = "shop-1"
description = "the shop"

[secrets.DB_PASSWORD]
kind = "password"

[secrets.FERNET]
kind = "fernet"
"#,
        );
        assert_eq!(p.stack, "shop-1");
        assert_eq!(p.description.as_deref(), Some("the shop"));
        assert!(p.sinks.is_empty());
        assert!(p.targets.is_empty());
        let names: Vec<&str> = p.secrets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["DB_PASSWORD", "FERNET"]);
        assert_eq!(p.secrets[0].line, 5);
        assert_eq!(p.secrets[1].line, 8);
        assert_eq!(p.secret("FERNET").unwrap().kind.kind(), Kind::Fernet);
        assert!(p.secret("NOPE").is_none());
        assert_eq!(p.path, Path::new("p.toml"));
        assert!(p.source.starts_with("[stack]\n"));
    }

    #[test]
    fn invalid_toml_is_reported_at_the_parser_position() {
        assert_eq!(
            err_text("[stack]\nname = \"s\"\n\n[secrets.A\nkind = \"password\"\n"),
            "p.toml:4:11: invalid TOML: unclosed table, expected `]`"
        );
    }

    #[test]
    fn a_duplicate_key_error_names_the_key() {
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[secrets.DB_PASSWORD]\nkind = \"password\"\n[secrets.DB_PASSWORD]\nkind = \"token\"\n"
            ),
            "p.toml:5:10: invalid TOML: duplicate key `DB_PASSWORD` (expected each key once in its table)"
        );
        assert_eq!(
            err_text("[stack]\nname = \"s\"\nname = \"t\"\n"),
            "p.toml:3:1: invalid TOML: duplicate key `name` (expected each key once in its table)"
        );
    }

    #[test]
    fn missing_stack_and_missing_secrets() {
        assert_eq!(
            err_text("[secrets.A]\nkind = \"password\"\n"),
            "p.toml:1:1: the policy has no [stack] table (expected [stack] with name = \"mystack\")"
        );
        assert_eq!(
            err_text("[stack]\nname = \"s\"\n"),
            "p.toml:1:1: the policy declares no secrets (expected [secrets.NAME] tables)"
        );
        assert_eq!(
            err_text(""),
            "p.toml:1:1: the policy has no [stack] table (expected [stack] with name = \"mystack\")\n\
             p.toml:1:1: the policy declares no secrets (expected [secrets.NAME] tables)"
        );
    }

    #[test]
    fn stack_without_a_name() {
        assert_eq!(
            err_text("[stack]\ndescription = \"x\"\n[secrets.A]\nkind = \"fernet\"\n"),
            "p.toml:1:2: [stack] has no `name` (expected name = \"mystack\")"
        );
    }

    #[test]
    fn bad_stack_names() {
        let msg = "is not valid (expected up to 40 lowercase letters, digits, '-' or '_', starting with a letter or digit)";
        for (name, col) in [("My Stack", 8), ("-shop", 8), ("", 8)] {
            let src = format!("[stack]\nname = {name:?}\n[secrets.A]\nkind = \"fernet\"\n");
            assert_eq!(
                err_text(&src),
                format!("p.toml:2:{col}: stack name {name:?} {msg}")
            );
        }
        let long = "a".repeat(41);
        let src = format!("[stack]\nname = \"{long}\"\n[secrets.A]\nkind = \"fernet\"\n");
        assert_eq!(
            err_text(&src),
            format!("p.toml:2:8: stack name \"{long}\" {msg}")
        );
        let ok = "a".repeat(40);
        let src = format!("[stack]\nname = \"{ok}\"\n[secrets.A]\nkind = \"fernet\"\n");
        assert_eq!(policy(&src).stack, ok);
    }

    #[test]
    fn unknown_top_level_key_and_unknown_stack_field() {
        assert_eq!(
            err_text(
                "version = 2\n[stack]\nname = \"s\"\nowner = \"me\"\n[secrets.A]\nkind = \"fernet\"\n"
            ),
            "p.toml:1:1: unknown field `version` in the policy (expected [stack], [sinks.*], [targets.*], [secrets.*] or [notify])\n\
             p.toml:4:1: unknown field `owner` in [stack] (expected name or description)"
        );
    }

    #[test]
    fn wrong_types_at_the_top() {
        assert_eq!(
            err_text("stack = \"s\"\nsecrets = 3\nsinks = []\ntargets = true\n"),
            "p.toml:1:9: `stack` in the policy must be a table ([stack]) (found string)\n\
             p.toml:2:11: `secrets` in the policy must be a table of secrets ([secrets.NAME]) (found integer)\n\
             p.toml:3:9: `sinks` in the policy must be a table ([sinks.files], [sinks.envfile]) (found array)\n\
             p.toml:4:11: `targets` in the policy must be a table of targets ([targets.NAME]) (found boolean)"
        );
        assert_eq!(
            err_text("[stack]\nname = 5\ndescription = [\"x\"]\n[secrets]\nA = \"password\"\n"),
            "p.toml:2:8: `name` in [stack] must be a string (found integer)\n\
             p.toml:3:15: `description` in [stack] must be a string (found array)\n\
             p.toml:5:5: secret \"A\" must be a table ([secrets.A] with a kind) (found string)"
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // "é" and "€" are 2 and 3 bytes: the column after them is still one per character.
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[secrets]\nA = { description = \"é€\", kind = \"passwrd\" }\n"
            ),
            "p.toml:4:34: unknown kind \"passwrd\" (expected one of password, token, fernet, rsa, tls, literal, template)"
        );
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[secrets.U]\nkind = \"template\"\ntemplate = \"€€ {X}\"\n"
            ),
            "p.toml:5:16: template of \"U\" refers to unknown name {X} (expected a secret or companion name declared in this policy)"
        );
    }

    #[test]
    fn problems_come_in_source_order() {
        // Sinks and targets are checked before secrets, but reported where they are written.
        assert_eq!(
            err_text(
                r#"[stack]
name = "Shop"

[secrets.A]
kind = "password"
length = 5000

[targets.db]
type = "mongodb"

[sinks.files]
mode = "0666"
"#
            ),
            "p.toml:2:8: stack name \"Shop\" is not valid (expected up to 40 lowercase letters, digits, '-' or '_', starting with a letter or digit)\n\
             p.toml:6:10: `length` = 5000 in secret \"A\" is out of range (expected 1 to 4096)\n\
             p.toml:9:8: unknown target type \"mongodb\" (expected \"postgres\", \"pgbouncer\", \"mysql\", \"rabbitmq\" or \"redis\")\n\
             p.toml:12:8: `mode` 0666 lets group or others write secrets (expected a mode without write bits for them, e.g. \"0400\")"
        );
    }

    #[test]
    fn ten_thousand_passwords() {
        let mut src = String::from("[stack]\nname = \"big\"\n");
        for i in 1..=10_000 {
            src.push_str(&format!(
                "\n[secrets.P{i:05}]\nkind = \"password\"\nlength = 32\n"
            ));
        }
        let p = policy(&src);
        assert_eq!(p.secrets.len(), 10_000);
        let last = &p.secrets[9_999];
        assert_eq!(last.name, "P10000");
        // Two stack lines, then four lines per secret with its header on the second.
        assert_eq!(last.line, 2 + 4 * 9_999 + 2);
        assert_eq!(p.secret("P10000").unwrap().line, last.line);
        assert!(matches!(last.kind, KindSpec::Password { length: 32, .. }));
    }
}
