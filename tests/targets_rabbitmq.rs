//! Rotating real RabbitMQ users, each node started by the test in a temporary directory on
//! free loopback ports (see `keyd_tests::rabbitmq`): what quickstart delivers logs in, a
//! single rotation and retire leave only the new password working, a reconnecting client sees
//! no failed login through alternating rotations, the second login gets the tags and the
//! vhost permissions of the first, a rotation killed at any step resumes to one new version
//! that logs in, the node's log holds no password, and a broker that never answers times out
//! naming the target. Logins are checked with `rabbitmqctl
//! authenticate_user`, independent of keyd's AMQP client.

use std::time::Duration;

use keyd::policy::LoginStrategy;
use keyd::secret::SecretString;
use keyd::targets::rabbitmq::RabbitmqTarget;
use keyd::targets::{Credential, Target};
use keyd_tests::rabbitmq::Rabbitmq;
use keyd_tests::servers::{ServerCert, localhost_cert};
use keyd_tests::target_stack::{Setup, count_failures, output_within, silent_server};
use keyd_tests::{keyctl, keyd, ok};

/// A stack `jobs` with a rabbitmq target `broker` on `node` (admin password from a file in
/// the setup's directory, written by [`setup`]) and BROKER_PASSWORD of user `celery` on
/// `vhost` with `strategy`; the alternating strategy delivers the login as BROKER_USER.
fn broker_policy(
    node: &Rabbitmq,
    admin_file: &std::path::Path,
    vhost: &str,
    strategy: &str,
) -> String {
    let user = if strategy == "alternating" {
        r#", user_secret = "BROKER_USER""#
    } else {
        ""
    };
    format!(
        r#"[stack]
name = "jobs"

[targets.broker]
type = "rabbitmq"
url = "http://admin@127.0.0.1:{http}"
amqp = "amqp://127.0.0.1:{amqp}/"
password_file = "{admin}"

[secrets.BROKER_PASSWORD]
kind = "password"
grace = "1h"
target = {{ name = "broker", user = "celery", vhost = "{vhost}", strategy = "{strategy}"{user} }}
"#,
        http = node.http_port,
        amqp = node.amqp_port,
        admin = admin_file.display(),
    )
}

/// A setup for `node` with the policy of [`broker_policy`].
fn setup(node: &Rabbitmq, tag: &str, vhost: &str, strategy: &str) -> Setup {
    let admin = node.dir.join("keyd-admin-password");
    std::fs::write(&admin, &node.admin_password).unwrap();
    Setup::new(tag, &broker_policy(node, &admin, vhost, strategy))
}

/// How many versions `name` has, and whether a rotation is in flight.
fn versions_and_in_flight(s: &Setup, name: &str) -> (usize, bool) {
    let history: serde_json::Value =
        serde_json::from_slice(&ok(keyctl(&s.home()).args(["history", name, "--json"]))).unwrap();
    let status: serde_json::Value =
        serde_json::from_slice(&ok(keyctl(&s.home()).args(["status", "--json"]))).unwrap();
    let in_flight = status
        .as_array()
        .unwrap()
        .iter()
        .any(|st| !st["rotation"].is_null());
    (history["versions"].as_array().unwrap().len(), in_flight)
}

/// The permissions of `user` on `vhost` as `rabbitmqctl` lists them (configure, write, read).
fn permissions(node: &Rabbitmq, vhost: &str, user: &str) -> String {
    let listed = node
        .ctl(&["-q", "list_user_permissions", user])
        .unwrap_or_default();
    listed
        .lines()
        .find(|l| l.split('\t').next() == Some(vhost))
        .unwrap_or_default()
        .to_owned()
}

/// The tags of `user`, as `rabbitmqctl list_users` shows them.
fn tags(node: &Rabbitmq, user: &str) -> String {
    node.ctl(&["-q", "list_users"])
        .unwrap_or_default()
        .lines()
        .find(|l| l.split('\t').next() == Some(user))
        .and_then(|l| l.split_once('\t'))
        .map(|(_, t)| t.to_owned())
        .unwrap_or_default()
}

#[test]
fn rabbitmq_single_quickstart_rotate_and_retire_leave_only_the_new_password() {
    let node = Rabbitmq::start("single");
    let s = setup(&node, "rabbitmq-single", "/", "single");
    s.quickstart_ok();
    let first = s.file("BROKER_PASSWORD");
    assert!(node.can_login("celery", &first), "the created user logs in");
    assert_eq!(
        permissions(&node, "/", "celery"),
        "/\t.*\t.*\t.*",
        "a user keyd creates may use its vhost"
    );

    let out = s.rotate("BROKER_PASSWORD");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second = s.file("BROKER_PASSWORD");
    assert_ne!(first, second);
    assert!(node.can_login("celery", &second));
    assert!(
        !node.can_login("celery", &first),
        "single: the old password is replaced"
    );
    s.retire("BROKER_PASSWORD");
    assert!(
        node.can_login("celery", &second),
        "retire keeps the current one"
    );
    assert!(!node.can_login("celery", &first));

    keyds_client_tells_refusals_apart(&node, &first, &second);

    let log = node.log();
    assert!(
        log.contains("celery"),
        "the log shows keyd's logins:\n{log}"
    );
    for value in [&first, &second] {
        assert!(
            !log.contains(value.as_str()),
            "a password is in RabbitMQ's log"
        );
    }
}

/// The one user's credential with `password`.
fn credential(password: &SecretString) -> Credential<'_> {
    Credential {
        login: None,
        password,
    }
}

/// The target `broker` on `node` for user `celery` on `vhost`, logged in as `admin` with
/// `admin_password`.
fn target(node: &Rabbitmq, admin_password: &str, vhost: &str) -> RabbitmqTarget {
    RabbitmqTarget::new(
        "broker",
        &format!("http://admin@127.0.0.1:{}", node.http_port),
        Some(SecretString::new(admin_password.to_owned())),
        &format!("amqp://127.0.0.1:{}/", node.amqp_port),
        "celery",
        vhost,
        LoginStrategy::Single,
        Duration::from_secs(5),
        false,
    )
    .unwrap()
}

/// keyd's own AMQP client accepts `good` for `celery` on `/` and refuses `bad` (403
/// ACCESS_REFUSED) and a vhost the user may not use (530 NOT_ALLOWED); a wrong admin
/// password fails naming the target and not the password.
fn keyds_client_tells_refusals_apart(node: &Rabbitmq, bad: &str, good: &str) {
    let (bad, good) = (
        SecretString::new(bad.to_owned()),
        SecretString::new(good.to_owned()),
    );
    let t = target(node, &node.admin_password, "/");
    assert!(t.accepts(&credential(&good)).unwrap());
    assert!(!t.accepts(&credential(&bad)).unwrap());
    let e = t.test(&credential(&bad)).unwrap_err().to_string();
    assert!(e.contains("403 ACCESS_REFUSED"), "{e}");
    node.api("PUT", "/api/vhosts/elsewhere", None);
    let t = target(node, &node.admin_password, "elsewhere");
    assert!(!t.accepts(&credential(&good)).unwrap());
    let e = t.test(&credential(&good)).unwrap_err().to_string();
    assert!(e.contains("530 NOT_ALLOWED"), "{e}");
    let t = target(node, "not-the-admin-password", "/");
    let e = t.set(&credential(&good), None).unwrap_err().to_string();
    assert!(
        e.starts_with("target broker: management API GET /api/users/celery answered HTTP 401"),
        "{e}"
    );
    assert!(!e.contains("not-the-admin-password") && !e.contains(good.expose_secret()));
}

#[test]
fn rabbitmq_alternating_has_zero_failed_logins_and_copies_tags_and_permissions() {
    let node = Rabbitmq::start("alt");
    // What an operator set up before keyd: a vhost, and the user keyd takes over on it.
    node.api("PUT", "/api/vhosts/jobs", None);
    node.api(
        "PUT",
        "/api/users/celery",
        Some(r#"{"password":"set-by-the-operator","tags":"monitoring,management"}"#),
    );
    node.api(
        "PUT",
        "/api/permissions/jobs/celery",
        Some(r#"{"configure":"^celery\\.","write":".*","read":"^tasks"}"#),
    );
    let s = setup(&node, "rabbitmq-alt", "jobs", "alternating");
    s.quickstart_ok();
    assert_eq!(s.file("BROKER_USER"), "celery");
    let first = s.file("BROKER_PASSWORD");
    assert!(node.can_login("celery", &first));
    assert!(!node.can_login("celery", "set-by-the-operator"));
    assert_eq!(
        tags(&node, "celery"),
        "[monitoring, management]",
        "tags are kept"
    );

    let dir = s.tmp.path().to_path_buf();
    let node = std::sync::Arc::new(node);
    let client = node.clone();
    let failures = count_failures(
        30,
        move || {
            // The user and password files, as a client that reconnects reads them.
            let read = |n: &str| std::fs::read_to_string(dir.join("out").join(n)).unwrap();
            let (user, password) = (read("BROKER_USER"), read("BROKER_PASSWORD"));
            client.can_login(&user, &password)
        },
        || {
            let out = s.rotate("BROKER_PASSWORD");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        },
    );
    assert_eq!(failures, 0, "logins failed during an alternating rotation");
    assert_eq!(s.file("BROKER_USER"), "celery_b");
    let second = s.file("BROKER_PASSWORD");
    assert!(node.can_login("celery_b", &second));
    assert_eq!(tags(&node, "celery_b"), tags(&node, "celery"));
    assert_eq!(
        permissions(&node, "jobs", "celery_b"),
        "jobs\t^celery\\.\t.*\t^tasks",
        "the new login has the permissions of the one in use"
    );
    assert!(
        node.can_login("celery", &first),
        "the old login works during the overlap"
    );
    s.retire("BROKER_PASSWORD");
    assert!(
        !node.can_login("celery", &first),
        "retire ends the old login"
    );
    assert!(node.can_login("celery_b", &second));

    // The next rotation gives the retired login a new password, and back.
    let out = s.rotate("BROKER_PASSWORD");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.file("BROKER_USER"), "celery");
    assert!(node.can_login("celery", &s.file("BROKER_PASSWORD")));

    // A rotation killed at any step resumes to one new version whose login works.
    for (i, step) in ["create", "set", "test", "deliver", "promote"]
        .into_iter()
        .enumerate()
    {
        s.rotate_killed_after("BROKER_PASSWORD", step);
        let (user, password) = (s.file("BROKER_USER"), s.file("BROKER_PASSWORD"));
        assert!(
            node.can_login(&user, &password),
            "killed after {step}: the delivered login stopped working"
        );
        ok(keyd(&s.home()).arg("--once"));
        assert_eq!(
            versions_and_in_flight(&s, "BROKER_PASSWORD"),
            (i + 4, false),
            "killed after {step}: one new version, no rotation left in flight"
        );
        let (user, password) = (s.file("BROKER_USER"), s.file("BROKER_PASSWORD"));
        assert!(
            node.can_login(&user, &password),
            "killed after {step}: the resumed version does not log in"
        );
    }
    let log = node.log();
    for value in [&first, &second] {
        assert!(
            !log.contains(value.as_str()),
            "a password is in RabbitMQ's log"
        );
    }
}

#[test]
fn rabbitmq_over_https_and_amqps_with_the_urls_ca() {
    let (cert, key) = localhost_cert();
    let node = Rabbitmq::start_with(
        "tls",
        Some(ServerCert {
            cert_pem: &cert,
            key_pem: &key,
        }),
    );
    let (amqps, https) = node.tls_ports.unwrap();
    let s = setup(&node, "rabbitmq-tls", "/", "single");
    let ca = s.tmp.join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    let policy = std::fs::read_to_string(s.tmp.join("policy.toml"))
        .unwrap()
        .replace(
            &format!("http://admin@127.0.0.1:{}", node.http_port),
            &format!("https://admin@localhost:{https}/?ca={}", ca.display()),
        )
        .replace(
            &format!("amqp://127.0.0.1:{}/", node.amqp_port),
            &format!("amqps://localhost:{amqps}/?ca={}", ca.display()),
        );
    assert!(policy.contains("https://") && policy.contains("amqps://"));
    std::fs::write(s.tmp.join("policy.toml"), policy).unwrap();
    s.quickstart_ok();
    let first = s.file("BROKER_PASSWORD");
    assert!(node.can_login("celery", &first));
    let out = s.rotate("BROKER_PASSWORD");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(node.can_login("celery", &s.file("BROKER_PASSWORD")));
    assert!(!node.can_login("celery", &first));

    // Another CA: the certificate is refused before any password is sent.
    let other_ca = s.tmp.join("other-ca.pem");
    std::fs::write(&other_ca, localhost_cert().0).unwrap();
    let t = RabbitmqTarget::new(
        "broker",
        &format!("https://admin@localhost:{https}/?ca={}", other_ca.display()),
        Some(SecretString::new(node.admin_password.clone())),
        &format!("amqps://localhost:{amqps}/?ca={}", other_ca.display()),
        "celery",
        "/",
        LoginStrategy::Single,
        Duration::from_secs(5),
        false,
    )
    .unwrap();
    let password = SecretString::new(first.clone());
    for e in [
        t.set(&credential(&password), None).unwrap_err(),
        t.accepts(&credential(&password)).unwrap_err(),
    ] {
        let e = e.to_string();
        assert!(
            e.starts_with("target broker: ") && e.contains("TLS certificate verification failed"),
            "{e}"
        );
    }
}

#[test]
fn rabbitmq_a_broker_that_never_answers_times_out_naming_the_target() {
    let port = silent_server();
    let s = Setup::new(
        "rabbitmq-silent",
        &format!(
            "[stack]\nname = \"silent\"\n\n[targets.broker]\ntype = \"rabbitmq\"\nurl = \"http://admin@127.0.0.1:{port}\"\namqp = \"amqp://127.0.0.1:{port}/\"\ntimeout = \"1s\"\n\n[secrets.BROKER_PASSWORD]\nkind = \"password\"\ntarget = {{ name = \"broker\", user = \"celery\" }}\n"
        ),
    );
    let out = output_within(
        keyctl(&s.home())
            .arg("quickstart")
            .arg("--policy")
            .arg(s.tmp.join("policy.toml"))
            .arg("--out")
            .arg(s.tmp.join("out")),
        std::time::Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let status = String::from_utf8(ok(keyctl(&s.home()).args(["status", "--json"]))).unwrap();
    assert!(
        status.contains("target broker: ") && status.contains("timed out after 1s"),
        "{status}"
    );
}
