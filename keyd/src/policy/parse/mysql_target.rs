//! The `target = { … }` of a password whose target is a MySQL or MariaDB server: the user,
//! the hosts its accounts are for, and the strategy.

use super::fields::{Entry, Fields, login_strategy, required_user};
use super::problems::Checker;
use crate::policy::SecretTarget;

/// Whether `name` is a MySQL user or host keyd accepts: 1 to `max` bytes of letters, digits,
/// `_ - .` and the characters of `extra`, so it needs no escaping inside quotes.
fn valid_mysql_name(name: &str, max: usize, extra: &str) -> bool {
    (1..=max).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c) || extra.contains(c))
}

/// A MySQL user name: at most 30 bytes, room for the `_b` of the alternating strategy within
/// MySQL's 32.
fn valid_mysql_user(name: &str) -> bool {
    valid_mysql_name(name, 30, "")
}

/// A MySQL account's host: a name, an address (IPv6 too), a pattern (`%`, `10.0.%`) or an
/// address with a netmask (`/`).
fn valid_mysql_host(name: &str) -> bool {
    valid_mysql_name(name, 255, "%:/")
}

/// Checks the fields of a MySQL secret target (entry `e` of secret `name`, naming `target`).
pub(super) fn check(
    c: &mut Checker,
    f: &Fields<'_, '_>,
    name: &str,
    e: &Entry<'_, '_>,
    target: String,
) -> Option<SecretTarget> {
    f.only(
        c,
        &["name", "user", "hosts", "strategy", "user_secret"],
        "for a mysql target: name, user, hosts, strategy, user_secret",
    );
    let user = required_user(
        c,
        f,
        name,
        e,
        (
            "MySQL user",
            valid_mysql_user,
            "expected letters, digits, '_', '-' or '.', at most 30 characters",
        ),
    )?;
    let hosts = match f.str_list(c, "hosts") {
        None => vec!["%".to_owned()],
        Some((hosts, at)) => {
            if hosts.is_empty() {
                c.err(at, "`hosts` is empty (expected at least one, e.g. [\"%\"])");
            }
            for (i, host) in hosts.iter().enumerate() {
                if !valid_mysql_host(host) || hosts[..i].contains(host) {
                    c.err(at, format!("MySQL host {host:?} is not valid here (expected a host name, an address or a pattern such as \"%\" or \"10.0.%\", each once)"));
                }
            }
            hosts
        }
    };
    let (strategy, user_secret) = login_strategy(c, f, name, e);
    Some(SecretTarget::Mysql {
        target,
        user,
        hosts,
        strategy,
        user_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{err_text, policy};
    use crate::policy::{AdminPassword, LoginStrategy, Part, SecretTarget, TargetKind};

    /// A mysql target `metadb` (lines 3 to 6), then secret A, a password on lines 7 and 8,
    /// whose `target = ` value starts at 9:10.
    fn with_mysql_target(target: &str) -> String {
        format!(
            "[stack]\nname = \"s\"\n[targets.metadb]\ntype = \"mysql\"\nurl = \"mysql://admin@db:3306/\"\npassword_file = \"/run/secrets/MYSQL_ADMIN_PASSWORD\"\n[secrets.A]\nkind = \"password\"\ntarget = {target}\n"
        )
    }

    #[test]
    fn a_mysql_target_and_its_secrets() {
        let p = policy(&with_mysql_target(
            "{ name = \"metadb\", user = \"airflow\", hosts = [\"localhost\", \"%\"], strategy = \"alternating\", user_secret = \"AIRFLOW_DB_USER\" }",
        ));
        assert_eq!(p.targets[0].kind, TargetKind::Mysql);
        assert_eq!(
            p.targets[0].password,
            AdminPassword::File("/run/secrets/MYSQL_ADMIN_PASSWORD".into())
        );
        assert_eq!(
            p.secret("A").unwrap().target,
            Some(SecretTarget::Mysql {
                target: "metadb".into(),
                user: "airflow".into(),
                hosts: vec!["localhost".into(), "%".into()],
                strategy: LoginStrategy::Alternating,
                user_secret: Some("AIRFLOW_DB_USER".into()),
            })
        );
        let login = p
            .outputs()
            .into_iter()
            .find(|o| o.name == "AIRFLOW_DB_USER");
        assert_eq!(login.map(|o| o.part), Some(Part::Login));
        let p = policy(&with_mysql_target(
            "{ name = \"metadb\", user = \"airflow\" }",
        ));
        assert!(matches!(
            &p.secret("A").unwrap().target,
            Some(SecretTarget::Mysql { hosts, strategy: LoginStrategy::Single, user_secret: None, .. }) if hosts == &["%"]
        ));
    }

    #[test]
    fn mysql_secret_targets_with_problems() {
        assert_eq!(
            err_text(&with_mysql_target("{ name = \"metadb\", role = \"x\" }")),
            "p.toml:9:10: the target of \"A\" has no `user`\n\
             p.toml:9:29: unknown field `role` in the target of \"A\" (expected for a mysql target: name, user, hosts, strategy, user_secret)"
        );
        assert_eq!(
            err_text(&with_mysql_target(
                "{ name = \"metadb\", user = \"air'flow\", hosts = [\"%\", \"a b\", \"%\"] }"
            )),
            "p.toml:9:36: MySQL user \"air'flow\" is not valid here (expected letters, digits, '_', '-' or '.', at most 30 characters)\n\
             p.toml:9:56: MySQL host \"a b\" is not valid here (expected a host name, an address or a pattern such as \"%\" or \"10.0.%\", each once)\n\
             p.toml:9:56: MySQL host \"%\" is not valid here (expected a host name, an address or a pattern such as \"%\" or \"10.0.%\", each once)"
        );
        assert_eq!(
            err_text(&with_mysql_target(
                "{ name = \"metadb\", user = \"airflow\", hosts = [], strategy = \"alternating\" }"
            )),
            "p.toml:9:10: the alternating strategy of \"A\" needs user_secret = \"NAME\" (the login in use is delivered under it)\n\
             p.toml:9:55: `hosts` is empty (expected at least one, e.g. [\"%\"])"
        );
        assert_eq!(
            err_text(&with_mysql_target(&format!(
                "{{ name = \"metadb\", user = \"{}\" }}",
                "a".repeat(31)
            ))),
            format!(
                "p.toml:9:36: MySQL user \"{}\" is not valid here (expected letters, digits, '_', '-' or '.', at most 30 characters)",
                "a".repeat(31)
            )
        );
    }

    #[test]
    fn a_mysql_target_takes_a_mysql_url_and_no_redis_fields() {
        assert_eq!(
            err_text(
                "[stack]\nname = \"s\"\n[targets.metadb]\ntype = \"mysql\"\nurl = \"postgres://admin@db/\"\nuser = \"x\"\n[secrets.F]\nkind = \"fernet\"\n"
            ),
            "p.toml:5:7: target \"metadb\": url \"postgres://admin@db/\" has the wrong scheme (expected postgres://…, mysql://…, redis://… or rediss://… to match its type)\n\
             p.toml:6:1: unknown field `user` in target \"metadb\" (expected for type \"mysql\": type, url, password_secret, password_file, timeout, allow_insecure_auth)"
        );
    }
}
