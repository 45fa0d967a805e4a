//! Targets: the `[targets.NAME]` tables (PostgreSQL, MySQL, RabbitMQ and Redis servers keyd logs into) and a
//! password's `target = { … }`, which names one of them and says how its values reach it.

use std::path::PathBuf;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::fields::{Entry, Fields, login_strategy};
use super::pgbouncer_target;
use super::problems::{Checker, closest};
use super::rabbitmq_target;
use crate::policy::duration;
use crate::policy::{AdminPassword, RedisMode, SecretTarget, TargetKind, TargetSpec};

/// The target types, as written in `type = "…"`.
const TYPE_NAMES: [&str; 5] = ["postgres", "pgbouncer", "mysql", "rabbitmq", "redis"];
/// [`TYPE_NAMES`] as messages list them.
const TYPES: &str = "\"postgres\", \"pgbouncer\", \"mysql\", \"rabbitmq\" or \"redis\"";

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

/// Whether the url's query has a `password` parameter (libpq and redis clients take one), its
/// name compared without case and after percent-decoding, as a client would read it.
fn query_names_password(url: &str) -> bool {
    let Some((_, query)) = url.split_once('?') else {
        return false;
    };
    let query = query.split('#').next().unwrap_or("");
    query.split('&').any(|pair| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        percent_decoded(name).is_some_and(|n| n.eq_ignore_ascii_case(b"password"))
    })
}

/// `text` with its `%XX` escapes decoded; `None` for a malformed escape.
fn percent_decoded(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Checks the `[targets.NAME]` tables; a target with a problem in its type or url is left out.
pub(super) fn check_targets(c: &mut Checker, table: &DeTable<'_>) -> Vec<TargetSpec> {
    let mut out = Vec::new();
    let mut pools_named = Vec::new();
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
                format!("target {:?} has no `type` (expected {TYPES})", e.key),
            );
            continue;
        };
        let common = [
            "type",
            "url",
            "password_secret",
            "password_file",
            "timeout",
            "allow_insecure_auth",
        ];
        let kind = match kind.as_str() {
            "postgres" => {
                let (kind, pool) = pgbouncer_target::check_postgres(c, &f, &common);
                pools_named.extend(pool);
                kind
            }
            "pgbouncer" => pgbouncer_target::check_kind(c, &f, &common, kind_at),
            "rabbitmq" => rabbitmq_target::check_kind(c, &f, &common, kind_at),
            "mysql" => {
                f.only(
                    c,
                    &common,
                    "for type \"mysql\": type, url, password_secret, password_file, timeout, allow_insecure_auth",
                );
                TargetKind::Mysql
            }
            "redis" => {
                f.only(
                    c,
                    &[&common[..], &["user", "replicas"]].concat(),
                    "for type \"redis\": type, url, user, password_secret, password_file, replicas, timeout, allow_insecure_auth",
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
                    format!(
                        "unknown target type {other:?}{} (expected {TYPES})",
                        closest(other, TYPE_NAMES.iter().copied())
                            .map_or_else(String::new, |g| format!(": did you mean {g:?}?"))
                    ),
                );
                continue;
            }
        };
        let Some((url, url_at)) = f.str(c, "url") else {
            c.err(e.key_at, format!("target {:?} has no `url`", e.key));
            continue;
        };
        let scheme_ok = match kind {
            TargetKind::Postgres { .. } | TargetKind::Pgbouncer { .. } => {
                url.starts_with("postgres://") || url.starts_with("postgresql://")
            }
            TargetKind::Mysql => url.starts_with("mysql://"),
            TargetKind::Rabbitmq { .. } => rabbitmq_target::scheme_ok(&url),
            TargetKind::Redis { .. } => url.starts_with("redis://") || url.starts_with("rediss://"),
        };
        if !scheme_ok && matches!(kind, TargetKind::Rabbitmq { .. }) {
            c.err(url_at, format!("target {:?}: url {url:?} has the wrong scheme (expected http://… or https://…: the management API)", e.key));
        } else if !scheme_ok {
            c.err(url_at, format!("target {:?}: url {url:?} has the wrong scheme (expected postgres://…, mysql://…, redis://… or rediss://… to match its type)", e.key));
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
            || query_names_password(&url)
        {
            c.err(url_at, format!("target {:?}: the url holds a password; put it in password_secret or password_file, not in the policy", e.key));
        }
        let password = match (f.str(c, "password_secret"), f.path(c, "password_file")) {
            (Some(_), Some((_, at))) => {
                c.err(at, "give password_secret or password_file, not both");
                AdminPassword::None
            }
            (Some((name, _)), None) => AdminPassword::Secret(name),
            (None, Some((path, _))) => AdminPassword::File(PathBuf::from(path)),
            (None, None) => AdminPassword::None,
        };
        let timeout = f
            .duration(c, "timeout")
            .map_or(TargetSpec::DEFAULT_TIMEOUT, |(t, _)| t);
        let allow_insecure_auth = f.bool(c, "allow_insecure_auth").unwrap_or(false);
        out.push(TargetSpec {
            name: e.key.to_owned(),
            kind,
            url,
            password,
            timeout,
            allow_insecure_auth,
        });
    }
    pgbouncer_target::check_pools(c, &out, &pools_named);
    out
}

/// Checks the `target = { … }` (entry `e`) of secret `name` against the declared targets.
pub(super) fn check_secret_target(
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
        TargetKind::Pgbouncer { .. } => {
            c.err(target_at, pgbouncer_target::no_secrets(name, &target));
            None
        }
        TargetKind::Postgres { .. } => {
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
            let (strategy, user_secret) = login_strategy(c, &f, name, e);
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
        TargetKind::Mysql => super::mysql_target::check(c, &f, name, e, target),
        TargetKind::Rabbitmq { .. } => rabbitmq_target::check(c, &f, name, e, target),
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

/// A password rotated on a schedule must reach what checks it: a `target` keyd changes
/// first, or `standalone = true`, the policy's word that nothing outside keyd checks it.
/// Otherwise each rotation hands consumers a password their server was never told of: an
/// outage on a timer. Returns whether the password is marked standalone.
pub(super) fn check_schedule_reaches_server(
    c: &mut Checker,
    f: &Fields<'_, '_>,
    name: &str,
    rotate: Option<(Duration, usize)>,
) -> bool {
    let standalone = f.bool(c, "standalone").unwrap_or(false);
    let has_target = f.get("target").is_some();
    if standalone
        && has_target
        && let Some(e) = f.get("standalone")
    {
        c.err(e.key_at, format!("secret {name:?} has both standalone = true and a `target` (expected one: the target when a server checks this password, standalone = true when nothing outside keyd does)"));
    }
    if let Some((every, at)) = rotate
        && !standalone
        && !has_target
    {
        c.err(at, format!("password {name:?} rotates every {} but has no `target`: each rotation would give its consumers a password that no server was told of (expected a target = {{ name = \"…\", … }} so keyd changes the server first, no `rotate` (rotate by hand once the server has the new password), or standalone = true if nothing outside keyd checks this password)", duration::format(every)));
    }
    standalone
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::super::testing::{err_text, policy};
    use super::*;
    use crate::policy::{LoginStrategy, Part};

    /// A postgres target `db` and a redis target `cache` (lines 3 to 8), then secret A, a
    /// password on lines 9 and 10, whose `target = ` value starts at 11:10.
    fn with_target(target: &str) -> String {
        format!(
            "[stack]\nname = \"s\"\n[targets.db]\ntype = \"postgres\"\nurl = \"postgres://admin@db/app\"\n[targets.cache]\ntype = \"redis\"\nurl = \"redis://cache:6379\"\n[secrets.A]\nkind = \"password\"\ntarget = {target}\n"
        )
    }

    /// Target `db` (name at 3:10) with `body` from line 4 on, then a fernet secret.
    fn target_table(body: &str) -> String {
        format!("[stack]\nname = \"s\"\n[targets.db]\n{body}[secrets.F]\nkind = \"fernet\"\n")
    }

    #[test]
    fn targets_and_secret_targets() {
        let p = policy(
            r#"[stack]
name = "s"
[targets.db]
type = "postgres"
url = "postgresql://admin@127.0.0.1/app"
password_secret = "DB_ADMIN"
allow_insecure_auth = true
[targets.cache]
type = "redis"
url = "redis://127.0.0.1:6379"
user = "keyd"
replicas = ["redis://replica:6379"]
password_file = "/run/secrets/redis_admin"
timeout = "1m30s"
[secrets.DB_ADMIN]
kind = "password"
[secrets.APP]
kind = "password"
target = { name = "db", role = "app" }
[secrets.APP2]
kind = "password"
target = { name = "db", role = "app2", strategy = "alternating", user_secret = "APP2_USER", group = "apps" }
[secrets.CACHE]
kind = "password"
target = { name = "cache", user = "worker", acl = "~jobs:* +@all" }
[secrets.CACHE_DEFAULT]
kind = "password"
target = { name = "cache", mode = "requirepass" }
"#,
        );
        assert_eq!(
            p.targets,
            [
                TargetSpec {
                    name: "db".into(),
                    kind: TargetKind::Postgres { pgbouncer: None },
                    url: "postgresql://admin@127.0.0.1/app".into(),
                    password: AdminPassword::Secret("DB_ADMIN".into()),
                    timeout: TargetSpec::DEFAULT_TIMEOUT,
                    allow_insecure_auth: true,
                },
                TargetSpec {
                    name: "cache".into(),
                    kind: TargetKind::Redis {
                        user: "keyd".into(),
                        replicas: vec!["redis://replica:6379".into()],
                    },
                    url: "redis://127.0.0.1:6379".into(),
                    password: AdminPassword::File(PathBuf::from("/run/secrets/redis_admin")),
                    timeout: std::time::Duration::from_secs(90),
                    allow_insecure_auth: false,
                },
            ]
        );
        let target = |name: &str| p.secret(name).unwrap().target.clone();
        assert_eq!(target("DB_ADMIN"), None);
        assert_eq!(
            target("APP"),
            Some(SecretTarget::Postgres {
                target: "db".into(),
                role: "app".into(),
                strategy: LoginStrategy::Single,
                user_secret: None,
                group: "app_group".into(),
            })
        );
        assert_eq!(
            target("APP2"),
            Some(SecretTarget::Postgres {
                target: "db".into(),
                role: "app2".into(),
                strategy: LoginStrategy::Alternating,
                user_secret: Some("APP2_USER".into()),
                group: "apps".into(),
            })
        );
        let login = p.outputs().into_iter().find(|o| o.name == "APP2_USER");
        assert_eq!(
            login.map(|o| (o.secret, o.part)),
            Some(("APP2".into(), Part::Login))
        );
        assert_eq!(
            target("CACHE"),
            Some(SecretTarget::Redis {
                target: "cache".into(),
                user: "worker".into(),
                acl: "~jobs:* +@all".into(),
                mode: RedisMode::Acl,
            })
        );
        assert_eq!(
            target("CACHE_DEFAULT"),
            Some(SecretTarget::Redis {
                target: "cache".into(),
                user: "default".into(),
                acl: "~* &* +@all".into(),
                mode: RedisMode::Requirepass,
            })
        );
    }

    #[test]
    fn target_tables_type_and_url() {
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[targets]\ndb = \"postgres://db\"\n[secrets.F]\nkind = \"fernet\"\n"
            ),
            "p.toml:4:6: target \"db\" must be a table ([targets.db])"
        );
        assert_eq!(
            err_text(&target_table("url = \"postgres://db\"\n")),
            "p.toml:3:10: target \"db\" has no `type` (expected \"postgres\", \"pgbouncer\", \"mysql\", \"rabbitmq\" or \"redis\")"
        );
        assert_eq!(
            err_text(&target_table("type = \"mongodb\"\n")),
            "p.toml:4:8: unknown target type \"mongodb\" (expected \"postgres\", \"pgbouncer\", \"mysql\", \"rabbitmq\" or \"redis\")"
        );
        assert_eq!(
            err_text(&target_table("type = \"postgres\"\n")),
            "p.toml:3:10: target \"db\" has no `url`"
        );
        assert_eq!(
            err_text(&target_table("type = \"postgres\"\nurl = \"redis://db\"\n")),
            "p.toml:5:7: target \"db\": url \"redis://db\" has the wrong scheme (expected postgres://…, mysql://…, redis://… or rediss://… to match its type)"
        );
        assert_eq!(
            err_text(&target_table(
                "type = \"redis\"\nurl = \"redis://u:hunter2@cache/0\"\n"
            )),
            "p.toml:5:7: target \"db\": the url holds a password; put it in password_secret or password_file, not in the policy"
        );
    }

    #[test]
    fn a_password_in_the_url_query_is_refused_like_one_in_the_userinfo() {
        for url in [
            "postgres://admin@db/app?password=hunter2",
            "postgres://admin@db/app?sslmode=require&PASSWORD=hunter2",
            "postgres://admin@db/app?sslmode=require&pass%77ord=hunter2",
            "redis://cache:6379/0?password=hunter2",
        ] {
            let kind = if url.starts_with("redis") {
                "redis"
            } else {
                "postgres"
            };
            assert_eq!(
                err_text(&target_table(&format!(
                    "type = \"{kind}\"\nurl = \"{url}\"\n"
                ))),
                "p.toml:5:7: target \"db\": the url holds a password; put it in password_secret or password_file, not in the policy",
                "{url}"
            );
        }
    }

    #[test]
    fn target_fields_and_admin_password() {
        assert_eq!(
            err_text(&target_table(
                "type = \"postgres\"\nurl = \"postgres://db\"\nuser = \"admin\"\npassword_secret = \"F\"\npassword_file = \"/p\"\n"
            )),
            "p.toml:6:1: unknown field `user` in target \"db\" (expected for type \"postgres\": type, url, password_secret, password_file, timeout, allow_insecure_auth, pgbouncer)\n\
             p.toml:8:17: give password_secret or password_file, not both"
        );
        // An admin password must be a value of this policy; reported at the first [targets.*].
        assert_eq!(
            err_text(&target_table(
                "type = \"postgres\"\nurl = \"postgres://db\"\npassword_secret = \"ADMIN\"\n"
            )),
            "p.toml:3:2: target \"db\": password_secret \"ADMIN\" is not declared in this policy"
        );
        assert_eq!(
            err_text(&target_table(
                "type = \"redis\"\nurl = \"redis://db\"\nreplicas = \"redis://r\"\n"
            )),
            "p.toml:6:12: `replicas` in target \"db\" must be a list of strings (found string)"
        );
    }

    #[test]
    fn secret_target_shape_and_name() {
        assert_eq!(
            err_text(&with_target("\"db\"")),
            "p.toml:11:10: `target` must be an inline table, e.g. target = { name = \"db\", role = \"app\" }"
        );
        assert_eq!(
            err_text(&with_target("{ role = \"app\" }")),
            "p.toml:11:10: the target of \"A\" has no `name` (expected one of the [targets.*] tables)"
        );
        assert_eq!(
            err_text(&with_target("{ name = \"dbx\", role = \"app\" }")),
            "p.toml:11:19: unknown target \"dbx\" (expected one of: db, cache)"
        );
    }

    #[test]
    fn postgres_secret_targets() {
        assert_eq!(
            err_text(&with_target("{ name = \"db\" }")),
            "p.toml:11:10: the target of \"A\" has no `role`"
        );
        assert_eq!(
            err_text(&with_target(
                "{ name = \"db\", role = \"1app\", acl = \"x\" }"
            )),
            "p.toml:11:32: role \"1app\" is not a valid PostgreSQL identifier here (expected lowercase letters, digits and '_', starting with a letter or '_', at most 59 characters)\n\
             p.toml:11:40: unknown field `acl` in the target of \"A\" (expected for a postgres target: name, role, strategy, user_secret, group)"
        );
        assert_eq!(
            err_text(&with_target(
                "{ name = \"db\", role = \"app\", strategy = \"rotate\" }"
            )),
            "p.toml:11:50: unknown strategy \"rotate\" (expected \"single\" or \"alternating\")"
        );
        assert_eq!(
            err_text(&with_target(
                "{ name = \"db\", role = \"app\", strategy = \"alternating\" }"
            )),
            "p.toml:11:10: the alternating strategy of \"A\" needs user_secret = \"NAME\" (the login in use is delivered under it)"
        );
        assert_eq!(
            err_text(&with_target(
                "{ name = \"db\", role = \"app\", user_secret = \"a b\", group = \"Apps\" }"
            )),
            "p.toml:11:53: `user_secret`: name \"a b\" contains ' ' (expected letters, digits, '.', '_' or '-')\n\
             p.toml:11:68: group \"Apps\" is not a valid PostgreSQL identifier here"
        );
    }

    #[test]
    fn redis_secret_targets() {
        assert_eq!(
            err_text(&with_target(
                "{ name = \"cache\", mode = \"cluster\", role = \"x\" }"
            )),
            "p.toml:11:35: unknown mode \"cluster\" (expected \"acl\" or \"requirepass\")\n\
             p.toml:11:46: unknown field `role` in the target of \"A\" (expected for a redis target: name, user, acl, mode)"
        );
        assert_eq!(
            err_text(&with_target("{ name = \"cache\", user = \"two words\" }")),
            "p.toml:11:35: Redis user \"two words\" must be a single word"
        );
        assert_eq!(
            err_text(&with_target(
                "{ name = \"cache\", user = \"app\", mode = \"requirepass\" }"
            )),
            "p.toml:11:10: mode = \"requirepass\" sets the default user's password: leave `user` out"
        );
    }

    /// Secret A, a password (name at 3:10) with `body` from line 5 on.
    fn password(body: &str) -> String {
        format!("[stack]\nname = \"s\"\n[secrets.A]\nkind = \"password\"\n{body}")
    }

    #[test]
    fn a_password_rotated_on_a_schedule_without_a_target_is_refused_by_policy_check() {
        assert_eq!(
            err_text(&password("rotate = \"90d\"\ngrace = \"1d\"\n")),
            "p.toml:5:10: password \"A\" rotates every 90d but has no `target`: each rotation would give its consumers a password that no server was told of (expected a target = { name = \"…\", … } so keyd changes the server first, no `rotate` (rotate by hand once the server has the new password), or standalone = true if nothing outside keyd checks this password)"
        );
        // `standalone = false` says nothing more than leaving it out.
        assert!(
            err_text(&password("rotate = \"90d\"\nstandalone = false\n"))
                .starts_with("p.toml:5:10: password \"A\" rotates every 90d but has no `target`")
        );
    }

    #[test]
    fn a_password_nothing_outside_checks_may_rotate_when_marked_standalone() {
        let p = policy(&password("rotate = \"90d\"\nstandalone = true\n"));
        assert!(p.secrets[0].standalone);
        assert_eq!(p.secrets[0].rotate, Some(Duration::from_secs(90 * 86_400)));
        // Without a schedule, or with a target, no marker is needed.
        assert!(!policy(&password("")).secrets[0].standalone);
        let p = policy(&with_target(
            "{ name = \"db\", role = \"app\" }\nrotate = \"90d\"",
        ));
        assert!(p.secrets[0].rotate.is_some() && p.secrets[0].target.is_some());
    }

    #[test]
    fn a_standalone_password_with_a_target_is_refused() {
        assert_eq!(
            err_text(&with_target(
                "{ name = \"db\", role = \"app\" }\nstandalone = true"
            )),
            "p.toml:12:1: secret \"A\" has both standalone = true and a `target` (expected one: the target when a server checks this password, standalone = true when nothing outside keyd does)"
        );
        assert_eq!(
            err_text(&password("standalone = \"yes\"\n")),
            "p.toml:5:14: `standalone` in secret \"A\" must be true or false (found string)"
        );
    }

    #[test]
    fn role_names() {
        for ok in ["app", "_app", "app_2", &"a".repeat(59)] {
            assert!(valid_role(ok), "{ok}");
        }
        for bad in [
            "",
            "App",
            "2app",
            "app-user",
            "app user",
            "rôle",
            &"a".repeat(60),
        ] {
            assert!(!valid_role(bad), "{bad}");
        }
    }
}
