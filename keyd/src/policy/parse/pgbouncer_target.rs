//! PgBouncer in a policy: the `[targets.NAME]` table of `type = "pgbouncer"` (its admin console
//! and its `auth_file`), a postgres target's `pgbouncer = "NAME"` naming one, and the checks
//! that tie the two together. A pgbouncer target takes no secrets of its own: the roles it
//! holds are those of the postgres targets that name it.

use std::path::PathBuf;

use super::fields::Fields;
use super::problems::{Checker, closest};
use crate::policy::{TargetKind, TargetSpec};

/// The fields of a pgbouncer target (`common` are those every target has).
pub(super) fn check_kind(
    c: &mut Checker,
    f: &Fields<'_, '_>,
    common: &[&str],
    at: usize,
) -> TargetKind {
    f.only(
        c,
        &[common, &["auth_file"]].concat(),
        "for type \"pgbouncer\": type, url, auth_file, password_secret, password_file, timeout, allow_insecure_auth",
    );
    let auth_file = match f.path(c, "auth_file") {
        Some((path, _)) => PathBuf::from(path),
        None => {
            c.err(at, "a pgbouncer target needs auth_file = \"PATH\" (the userlist.txt PgBouncer reads, e.g. \"/etc/pgbouncer/userlist.txt\")");
            PathBuf::new()
        }
    };
    TargetKind::Pgbouncer { auth_file }
}

/// The fields of a postgres target: `pgbouncer`, the name of a pgbouncer target and where it
/// was written, checked by [`check_pools`] once every target is read.
pub(super) fn check_postgres(
    c: &mut Checker,
    f: &Fields<'_, '_>,
    common: &[&str],
) -> (TargetKind, Option<(String, usize)>) {
    f.only(
        c,
        &[common, &["pgbouncer"]].concat(),
        "for type \"postgres\": type, url, password_secret, password_file, timeout, allow_insecure_auth, pgbouncer",
    );
    let pool = f.str(c, "pgbouncer");
    let kind = TargetKind::Postgres {
        pgbouncer: pool.as_ref().map(|(name, _)| name.clone()),
    };
    (kind, pool)
}

/// Every `pgbouncer = "NAME"` (the name and where it was written) names a pgbouncer target.
pub(super) fn check_pools(c: &mut Checker, targets: &[TargetSpec], named: &[(String, usize)]) {
    let pools: Vec<&str> = targets
        .iter()
        .filter(|t| matches!(t.kind, TargetKind::Pgbouncer { .. }))
        .map(|t| t.name.as_str())
        .collect();
    for (name, at) in named {
        if pools.contains(&name.as_str()) {
            continue;
        }
        let message = if targets.iter().any(|t| &t.name == name) {
            format!("`pgbouncer = {name:?}` names a target that is not of type \"pgbouncer\"")
        } else {
            let guess = closest(name, pools.iter().copied())
                .map_or_else(String::new, |g| format!(": did you mean {g:?}?"));
            let known = if pools.is_empty() {
                "none declared".to_owned()
            } else {
                pools.join(", ")
            };
            format!("unknown pgbouncer target {name:?}{guess} (expected one of: {known})")
        };
        c.err(*at, message);
    }
}

/// The error for a secret whose `target` names pgbouncer target `name`.
pub(super) fn no_secrets(name: &str, target: &str) -> String {
    format!(
        "the target of {name:?} is pgbouncer target {target:?}, which takes no secrets (expected the postgres target behind it, whose pgbouncer = {target:?} writes each role it sets to the pool's auth_file)"
    )
}

#[cfg(test)]
mod tests {
    use super::super::testing::{err_text, policy};
    use crate::policy::{AdminPassword, TargetKind};

    /// A pgbouncer target `pool` (lines 3 to 7) with `pool_extra` after its fields, a postgres
    /// target `db` (lines 8 to 11, then `db_extra`), and a password of role `app` at `db`.
    fn with_pool(pool_extra: &str, db_extra: &str) -> String {
        format!(
            "[stack]\nname = \"s\"\n[targets.pool]\ntype = \"pgbouncer\"\nurl = \"postgres://admin@pgbouncer:6432/pgbouncer\"\nauth_file = \"/etc/pgbouncer/userlist.txt\"\npassword_file = \"/run/secrets/PGBOUNCER_ADMIN_PASSWORD\"\n{pool_extra}[targets.db]\ntype = \"postgres\"\nurl = \"postgres://admin@db:5432/app\"\n{db_extra}[secrets.A]\nkind = \"password\"\ntarget = {{ name = \"db\", role = \"app\" }}\n"
        )
    }

    #[test]
    fn a_postgres_target_writes_its_roles_to_a_pgbouncer_target() {
        let p = policy(&with_pool("", "pgbouncer = \"pool\"\n"));
        assert_eq!(
            p.targets[0].kind,
            TargetKind::Pgbouncer {
                auth_file: "/etc/pgbouncer/userlist.txt".into()
            }
        );
        assert_eq!(
            p.targets[0].password,
            AdminPassword::File("/run/secrets/PGBOUNCER_ADMIN_PASSWORD".into())
        );
        assert_eq!(
            p.targets[1].kind,
            TargetKind::Postgres {
                pgbouncer: Some("pool".into())
            }
        );
        let p = policy(&with_pool("", ""));
        assert_eq!(p.targets[1].kind, TargetKind::Postgres { pgbouncer: None });
    }

    #[test]
    fn pgbouncer_targets_with_problems() {
        assert_eq!(
            err_text(&with_pool("", "pgbouncer = \"pol\"\n")),
            "p.toml:11:13: unknown pgbouncer target \"pol\": did you mean \"pool\"? (expected one of: pool)"
        );
        assert_eq!(
            err_text(&with_pool("", "pgbouncer = \"elsewhere\"\n")),
            "p.toml:11:13: unknown pgbouncer target \"elsewhere\" (expected one of: pool)"
        );
        assert_eq!(
            err_text(&with_pool("", "pgbouncer = \"db\"\n")),
            "p.toml:11:13: `pgbouncer = \"db\"` names a target that is not of type \"pgbouncer\""
        );
        assert_eq!(
            err_text(&with_pool("auth_fil = \"/x\"\n", "")),
            "p.toml:8:1: unknown field `auth_fil` in target \"pool\": did you mean `auth_file`? (expected for type \"pgbouncer\": type, url, auth_file, password_secret, password_file, timeout, allow_insecure_auth)"
        );
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[targets.pool]\ntype = \"pgbouncer\"\nurl = \"redis://pgbouncer:6432/pgbouncer\"\n[secrets.A]\nkind = \"password\"\ntarget = { name = \"pool\", role = \"app\" }\n"
            ),
            "p.toml:4:8: a pgbouncer target needs auth_file = \"PATH\" (the userlist.txt PgBouncer reads, e.g. \"/etc/pgbouncer/userlist.txt\")\n\
             p.toml:5:7: target \"pool\": url \"redis://pgbouncer:6432/pgbouncer\" has the wrong scheme (expected postgres://…, mysql://…, redis://… or rediss://… to match its type)\n\
             p.toml:8:19: the target of \"A\" is pgbouncer target \"pool\", which takes no secrets (expected the postgres target behind it, whose pgbouncer = \"pool\" writes each role it sets to the pool's auth_file)"
        );
    }
}
