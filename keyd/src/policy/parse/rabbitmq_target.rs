//! RabbitMQ in a policy: the `[targets.NAME]` table of `type = "rabbitmq"` (its management
//! API's `url` and the `amqp` address logins are tested at) and a password's `target = { … }`
//! naming one (the user, its vhost and the strategy).

use super::fields::{Entry, Fields, login_strategy, required_user};
use super::problems::Checker;
use crate::policy::{SecretTarget, TargetKind};

/// Whether `name` is a RabbitMQ user keyd accepts: 1 to 100 bytes of letters, digits and
/// `_ - . @`, so it needs no care in a URL path segment beyond percent-encoding `@`, with room
/// for the `_b` of the alternating strategy.
fn valid_user(name: &str) -> bool {
    (1..=100).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c))
}

/// Whether `vhost` is a virtual host keyd can name: 1 to 255 bytes (an AMQP short string),
/// no control characters.
fn valid_vhost(vhost: &str) -> bool {
    (1..=255).contains(&vhost.len()) && !vhost.chars().any(char::is_control)
}

/// The fields of a rabbitmq target (`common` are those every target has); `at` is where its
/// type was written.
pub(super) fn check_kind(
    c: &mut Checker,
    f: &Fields<'_, '_>,
    common: &[&str],
    at: usize,
) -> TargetKind {
    f.only(
        c,
        &[common, &["amqp"]].concat(),
        "for type \"rabbitmq\": type, url, amqp, password_secret, password_file, timeout, allow_insecure_auth",
    );
    let amqp = match f.str(c, "amqp") {
        Some((amqp, amqp_at)) => {
            let authority = amqp
                .split("://")
                .nth(1)
                .unwrap_or("")
                .split(['/', '?'])
                .next()
                .unwrap_or("");
            if !(amqp.starts_with("amqp://") || amqp.starts_with("amqps://")) {
                c.err(amqp_at, format!("amqp {amqp:?} has the wrong scheme (expected amqp://HOST:PORT/ or amqps://HOST:PORT/)"));
            } else if authority.contains('@') {
                c.err(amqp_at, format!("amqp {amqp:?} names a user (expected amqp://HOST:PORT/: logins are tested as the secret's user, with its new password)"));
            }
            amqp
        }
        None => {
            c.err(at, "a rabbitmq target needs amqp = \"amqp://HOST:5672/\" (where keyd tests each new password with a real AMQP login)");
            String::new()
        }
    };
    TargetKind::Rabbitmq { amqp }
}

/// Whether `url` is a management API URL (`http://` or `https://`).
pub(super) fn scheme_ok(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Checks the fields of a RabbitMQ secret target (entry `e` of secret `name`, naming
/// `target`).
pub(super) fn check(
    c: &mut Checker,
    f: &Fields<'_, '_>,
    name: &str,
    e: &Entry<'_, '_>,
    target: String,
) -> Option<SecretTarget> {
    f.only(
        c,
        &["name", "user", "vhost", "strategy", "user_secret"],
        "for a rabbitmq target: name, user, vhost, strategy, user_secret",
    );
    let user = required_user(
        c,
        f,
        name,
        e,
        (
            "RabbitMQ user",
            valid_user,
            "expected letters, digits, '_', '-', '.' or '@', at most 100 characters",
        ),
    )?;
    let vhost = match f.str(c, "vhost") {
        None => "/".to_owned(),
        Some((vhost, at)) => {
            if !valid_vhost(&vhost) {
                c.err(at, format!("vhost {vhost:?} is not valid here (expected 1 to 255 characters, no control characters, e.g. \"/\")"));
            }
            vhost
        }
    };
    let (strategy, user_secret) = login_strategy(c, f, name, e);
    Some(SecretTarget::Rabbitmq {
        target,
        user,
        vhost,
        strategy,
        user_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{err_text, policy};
    use crate::policy::{AdminPassword, LoginStrategy, Part, SecretTarget, TargetKind};

    /// A rabbitmq target `broker` (lines 3 to 7, then `extra`), then secret A, a password,
    /// whose `target = ` value starts at 10:10 when `extra` is empty.
    fn with_broker(extra: &str, target: &str) -> String {
        format!(
            "[stack]\nname = \"s\"\n[targets.broker]\ntype = \"rabbitmq\"\nurl = \"http://admin@rabbit:15672\"\namqp = \"amqp://rabbit:5672/\"\npassword_file = \"/run/secrets/RABBITMQ_ADMIN_PASSWORD\"\n{extra}[secrets.A]\nkind = \"password\"\ntarget = {target}\n"
        )
    }

    #[test]
    fn a_rabbitmq_target_and_its_secrets() {
        let p = policy(&with_broker(
            "",
            "{ name = \"broker\", user = \"celery\", vhost = \"jobs\", strategy = \"alternating\", user_secret = \"BROKER_USER\" }",
        ));
        assert_eq!(
            p.targets[0].kind,
            TargetKind::Rabbitmq {
                amqp: "amqp://rabbit:5672/".into()
            }
        );
        assert_eq!(p.targets[0].url, "http://admin@rabbit:15672");
        assert_eq!(
            p.targets[0].password,
            AdminPassword::File("/run/secrets/RABBITMQ_ADMIN_PASSWORD".into())
        );
        assert_eq!(
            p.secret("A").unwrap().target,
            Some(SecretTarget::Rabbitmq {
                target: "broker".into(),
                user: "celery".into(),
                vhost: "jobs".into(),
                strategy: LoginStrategy::Alternating,
                user_secret: Some("BROKER_USER".into()),
            })
        );
        let login = p.outputs().into_iter().find(|o| o.name == "BROKER_USER");
        assert_eq!(login.map(|o| o.part), Some(Part::Login));
        let p = policy(&with_broker("", "{ name = \"broker\", user = \"celery\" }"));
        assert!(matches!(
            &p.secret("A").unwrap().target,
            Some(SecretTarget::Rabbitmq { vhost, strategy: LoginStrategy::Single, user_secret: None, .. }) if vhost == "/"
        ));
    }

    #[test]
    fn rabbitmq_secret_targets_with_problems() {
        assert_eq!(
            err_text(&with_broker("", "{ name = \"broker\", role = \"x\" }")),
            "p.toml:10:10: the target of \"A\" has no `user`\n\
             p.toml:10:29: unknown field `role` in the target of \"A\" (expected for a rabbitmq target: name, user, vhost, strategy, user_secret)"
        );
        assert_eq!(
            err_text(&with_broker(
                "",
                "{ name = \"broker\", user = \"cel ery\", vhost = \"\", vhots = \"/\" }"
            )),
            "p.toml:10:36: RabbitMQ user \"cel ery\" is not valid here (expected letters, digits, '_', '-', '.' or '@', at most 100 characters)\n\
             p.toml:10:55: vhost \"\" is not valid here (expected 1 to 255 characters, no control characters, e.g. \"/\")\n\
             p.toml:10:59: unknown field `vhots` in the target of \"A\": did you mean `vhost`? (expected for a rabbitmq target: name, user, vhost, strategy, user_secret)"
        );
        assert_eq!(
            err_text(&with_broker(
                "",
                "{ name = \"broker\", user = \"celery\", strategy = \"alternating\" }"
            )),
            "p.toml:10:10: the alternating strategy of \"A\" needs user_secret = \"NAME\" (the login in use is delivered under it)"
        );
    }

    #[test]
    fn rabbitmq_target_tables_with_problems() {
        let fernet = "[secrets.F]\nkind = \"fernet\"\n";
        assert_eq!(
            err_text(&format!(
                "[stack]\nname = \"s\"\n[targets.broker]\ntype = \"rabbitmq\"\nurl = \"amqp://admin@rabbit\"\namqps = \"amqps://rabbit/\"\n{fernet}"
            )),
            "p.toml:4:8: a rabbitmq target needs amqp = \"amqp://HOST:5672/\" (where keyd tests each new password with a real AMQP login)\n\
             p.toml:5:7: target \"broker\": url \"amqp://admin@rabbit\" has the wrong scheme (expected http://… or https://…: the management API)\n\
             p.toml:6:1: unknown field `amqps` in target \"broker\": did you mean `amqp`? (expected for type \"rabbitmq\": type, url, amqp, password_secret, password_file, timeout, allow_insecure_auth)"
        );
        assert_eq!(
            err_text(&format!(
                "[stack]\nname = \"s\"\n[targets.broker]\ntype = \"rabbitmq\"\nurl = \"http://admin:pw@rabbit\"\namqp = \"amqp://celery:pw@rabbit/\"\n{fernet}"
            )),
            "p.toml:5:7: target \"broker\": the url holds a password; put it in password_secret or password_file, not in the policy\n\
             p.toml:6:8: amqp \"amqp://celery:pw@rabbit/\" names a user (expected amqp://HOST:PORT/: logins are tested as the secret's user, with its new password)"
        );
        assert_eq!(
            err_text(&format!(
                "[stack]\nname = \"s\"\n[targets.broker]\ntype = \"rabitmq\"\n{fernet}"
            )),
            "p.toml:4:8: unknown target type \"rabitmq\": did you mean \"rabbitmq\"? (expected \"postgres\", \"pgbouncer\", \"mysql\", \"rabbitmq\" or \"redis\")"
        );
        assert_eq!(
            err_text(&format!(
                "[stack]\nname = \"s\"\n[targets.broker]\ntype = \"rabbitmq\"\nurl = \"http://admin@rabbit\"\namqp = \"http://rabbit/\"\n{fernet}"
            )),
            "p.toml:6:8: amqp \"http://rabbit/\" has the wrong scheme (expected amqp://HOST:PORT/ or amqps://HOST:PORT/)"
        );
    }
}
