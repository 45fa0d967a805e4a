//! Rotating PostgreSQL roles behind a real PgBouncer (`pgbouncer = "pool"`), both started by the
//! test in temporary directories on free loopback ports (see `keyd_tests::pgbouncer`): what
//! quickstart delivers logs in through the pooler, the old password is refused there after a
//! single rotation, a reconnecting client sees no failed login through alternating rotations,
//! the lines of `auth_file` keyd did not write survive, a pooler that never answers times out
//! naming its target, and a process killed at any step resumes; over TLS to the pooler, a
//! rotation goes through with the certificate verified, and a certificate some other CA signed
//! is refused naming the pool. Logins are checked with `psql`, independent of keyd's own
//! client.

use std::path::Path;

use keyd_tests::pgbouncer::Pgbouncer;
use keyd_tests::servers::{Postgres, ServerCert, localhost_cert};
use keyd_tests::target_stack::{Setup, count_failures, output_within, silent_server};
use keyd_tests::{TempDir, keyctl, keyd, ok};

/// Lines of `auth_file` someone else wrote: a comment and another user's verifier.
const HAND_WRITTEN: &str =
    ";; the reporting user, set by hand\n\"reporter\" \"SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5\"\n";

/// A PostgreSQL server with a database `app`, and a PgBouncer in front of it.
fn servers(tag: &str) -> (Postgres, Pgbouncer) {
    let pg = Postgres::start(&format!("pgb-{tag}"));
    pg.admin_sql("CREATE DATABASE app");
    let pgb = Pgbouncer::start(tag, &pg, HAND_WRITTEN);
    (pg, pgb)
}

/// A stack `pooled`: postgres target `db` (database `app`) whose roles also go to pgbouncer
/// target `pool` at `pool_port`, and APP_PASSWORD of role `app` with `strategy` (the alternating
/// strategy delivers the login as APP_USER); APP_URL is a URL through the pooler with both.
fn pooled_policy(
    pg: &Postgres,
    pool_port: u16,
    auth_file: &Path,
    dir: &Path,
    pool_admin: &str,
    strategy: &str,
) -> String {
    std::fs::write(dir.join("pg-admin"), &pg.admin_password).unwrap();
    std::fs::write(dir.join("pgb-admin"), pool_admin).unwrap();
    let alternating = strategy == "alternating";
    format!(
        r#"[stack]
name = "pooled"

[targets.pool]
type = "pgbouncer"
url = "postgres://admin@127.0.0.1:{pool_port}/pgbouncer"
auth_file = "{auth_file}"
password_file = "{pgb_admin}"
timeout = "2s"

[targets.db]
type = "postgres"
url = "postgres://admin@127.0.0.1:{pg_port}/app"
password_file = "{pg_admin}"
pgbouncer = "pool"

[secrets.APP_PASSWORD]
kind = "password"
grace = "1h"
target = {{ name = "db", role = "app", strategy = "{strategy}"{user} }}

[secrets.APP_URL]
kind = "template"
template = "postgresql://{login}:{{APP_PASSWORD|url}}@127.0.0.1:{pool_port}/app"
"#,
        auth_file = auth_file.display(),
        pgb_admin = dir.join("pgb-admin").display(),
        pg_admin = dir.join("pg-admin").display(),
        pg_port = pg.port,
        user = if alternating {
            r#", user_secret = "APP_USER""#
        } else {
            ""
        },
        login = if alternating { "{APP_USER}" } else { "app" },
    )
}

/// A login through the pooler with the credentials of a delivered `postgresql://USER:PASSWORD@…`
/// URL (letters and digits: nothing to decode).
/// Servers `tag`, and a stack of [`pooled_policy`] with `strategy` in front of them (the
/// policy's directory is returned to be kept as long as the stack).
fn pooled(tag: &str, strategy: &str) -> (Postgres, Pgbouncer, TempDir, Setup) {
    let (pg, pgb) = servers(tag);
    let dir = TempDir::new(&format!("pgb-{tag}-policy"));
    let policy = pooled_policy(
        &pg,
        pgb.port,
        &pgb.auth_file(),
        dir.path(),
        &pgb.admin_password,
        strategy,
    );
    let s = Setup::new(&format!("pgb-{tag}"), &policy);
    (pg, pgb, dir, s)
}

fn login_from_url(pgb_port: u16, url: &str) -> bool {
    let rest = url.strip_prefix("postgresql://").unwrap();
    let (userinfo, _) = rest.split_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    let out =
        keyd_tests::pgbouncer::psql_to(pgb_port, user, password, "app", "SELECT current_user");
    out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == user
}

#[test]
fn pgbouncer_single_rotation_and_retire_refuse_the_old_password_through_the_pooler() {
    let (pg, pgb, _dir, s) = pooled("single", "single");
    s.quickstart_ok();
    let first = s.file("APP_PASSWORD");
    assert!(
        pgb.can_login("app", &first),
        "quickstart's password logs in through the pooler: {}",
        pgb.log()
    );
    assert!(pg.can_login("app", &first));
    let userlist = std::fs::read_to_string(pgb.auth_file()).unwrap();
    assert!(
        userlist.starts_with(&format!(
            "\"admin\" \"{}\"\n{HAND_WRITTEN}\"app\" \"SCRAM-SHA-256$4096:",
            pgb.admin_password
        )),
        "the lines keyd did not write are kept, the role's verifier added: {userlist}"
    );
    assert!(!userlist.contains(&first), "a verifier, never the password");
    let verifier = pg.admin_sql("SELECT rolpassword FROM pg_authid WHERE rolname = 'app'");
    assert!(
        userlist.contains(&format!("\"app\" \"{verifier}\"\n")),
        "the server's own verifier: {userlist}"
    );

    assert!(s.rotate("APP_PASSWORD").status.success());
    let second = s.file("APP_PASSWORD");
    assert_ne!(first, second);
    assert!(pgb.can_login("app", &second));
    assert!(
        !pgb.can_login("app", &first),
        "the old password is refused through the pooler"
    );
    s.retire("APP_PASSWORD");
    assert!(!pgb.can_login("app", &first));
    assert!(pgb.can_login("app", &second));
    let userlist = std::fs::read_to_string(pgb.auth_file()).unwrap();
    assert_eq!(
        userlist.matches("\"app\" ").count(),
        1,
        "one line for the role: {userlist}"
    );
    assert!(userlist.contains(HAND_WRITTEN));
    assert!(
        pg.log().contains("ALTER ROLE"),
        "the server logs every statement"
    );
    for password in [&first, &second] {
        assert!(
            !pg.log().contains(password.as_str()),
            "a password reached the server's log"
        );
        assert!(
            !pgb.log().contains(password.as_str()),
            "a password reached PgBouncer's log"
        );
    }
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(pgb.auth_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o644,
        "the file's mode is kept"
    );
}

#[test]
fn pgbouncer_alternating_rotations_have_zero_failed_logins_through_the_pooler() {
    let (_pg, pgb, _dir, s) = pooled("alt", "alternating");
    s.quickstart_ok();
    assert_eq!(s.file("APP_USER"), "app");
    let first = s.file("APP_PASSWORD");
    let url_file = s.tmp.join("out").join("APP_URL");
    let port = pgb.port;
    for round in 0..2 {
        let url = url_file.clone();
        let failures = count_failures(
            60,
            move || login_from_url(port, &std::fs::read_to_string(&url).unwrap()),
            || assert!(s.rotate("APP_PASSWORD").status.success()),
        );
        assert_eq!(
            failures, 0,
            "logins through the pooler failed during rotation {round}"
        );
        s.retire("APP_PASSWORD");
    }
    assert_eq!(s.file("APP_USER"), "app");
    assert!(login_from_url(port, &s.file("APP_URL")));
    assert!(
        !pgb.can_login("app", &first),
        "the retired password is refused through the pooler"
    );
    let userlist = std::fs::read_to_string(pgb.auth_file()).unwrap();
    assert!(userlist.contains(HAND_WRITTEN), "{userlist}");
    assert!(
        !userlist.contains("\"app_b\""),
        "retire removes the old login's line: {userlist}"
    );
}

#[test]
fn a_pgbouncer_that_never_answers_times_out_with_a_message_naming_it() {
    let pg = Postgres::start("pgb-silent");
    pg.admin_sql("CREATE DATABASE app");
    let dir = TempDir::new("pgb-silent-policy");
    let auth_file = dir.join("userlist.txt");
    std::fs::write(&auth_file, "\"admin\" \"x\"\n").unwrap();
    let s = Setup::new(
        "pgb-silent",
        &pooled_policy(&pg, silent_server(), &auth_file, dir.path(), "x", "single"),
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
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8(ok(keyctl(&s.home()).args(["status", "--json"]))).unwrap();
    assert!(
        status.contains("target pool: ") && status.contains("timed out after 2s"),
        "{status}"
    );
}

/// The number of versions of `name` in the store, and whether a rotation is in flight.
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

#[test]
fn a_pgbouncer_rotation_killed_at_any_step_resumes_to_one_new_version_that_logs_in() {
    let (_pg, pgb, _dir, s) = pooled("kill", "alternating");
    s.quickstart_ok();
    for (i, step) in ["create", "set", "test", "deliver", "promote"]
        .into_iter()
        .enumerate()
    {
        s.rotate_killed_after("APP_PASSWORD", step);
        assert!(
            pgb.can_login(&s.file("APP_USER"), &s.file("APP_PASSWORD")),
            "killed after {step}: the delivered login stopped working through the pooler"
        );
        ok(keyd(&s.home()).arg("--once"));
        assert_eq!(
            versions_and_in_flight(&s, "APP_PASSWORD"),
            (i + 2, false),
            "killed after {step}: one new version, no rotation left in flight"
        );
        assert!(
            pgb.can_login(&s.file("APP_USER"), &s.file("APP_PASSWORD")),
            "killed after {step}: the resumed version does not log in through the pooler"
        );
    }
}

#[test]
fn a_set_that_failed_after_the_server_changed_is_repeated_until_the_pool_has_it_too() {
    let (pg, pgb, _dir, s) = pooled("resume", "single");
    s.quickstart_ok();
    // A symbolic link where auth_file was: keyd refuses to follow it, after ALTER ROLE.
    let real = pgb.dir.join("userlist.real");
    std::fs::rename(pgb.auth_file(), &real).unwrap();
    std::os::unix::fs::symlink(&real, pgb.auth_file()).unwrap();
    assert!(!s.rotate("APP_PASSWORD").status.success());
    let status = String::from_utf8(ok(keyctl(&s.home()).args(["status", "--json"]))).unwrap();
    assert!(
        status.contains("target pool: cannot read auth_file") && status.contains("symbolic link"),
        "{status}"
    );
    std::fs::remove_file(pgb.auth_file()).unwrap();
    std::fs::rename(&real, pgb.auth_file()).unwrap();
    // The pending password logs in at the server but not through the pooler: the probe says
    // "not set yet", and the set step runs again.
    assert!(s.rotate("APP_PASSWORD").status.success(), "{}", pgb.log());
    let password = s.file("APP_PASSWORD");
    assert!(pgb.can_login("app", &password));
    assert!(pg.can_login("app", &password));
}

/// A PostgreSQL server with a database `app`, and a PgBouncer in front of it that takes
/// clients over TLS only, presenting `cert`.
fn servers_with_tls(tag: &str, cert: &str, key: &str) -> (Postgres, Pgbouncer) {
    let pg = Postgres::start(&format!("pgb-{tag}"));
    pg.admin_sql("CREATE DATABASE app");
    let pgb = Pgbouncer::start_with(
        tag,
        &pg,
        HAND_WRITTEN,
        Some(ServerCert {
            cert_pem: cert,
            key_pem: key,
        }),
    );
    (pg, pgb)
}

/// [`pooled_policy`] with the pool's console URL taking TLS with `ca` as its CA. PgBouncer
/// offers SCRAM without channel binding (SCRAM-SHA-256-PLUS), so the URL relaxes what keyd
/// otherwise requires over TLS; verify-full already ties the login to the pooler's certificate.
fn pooled_tls_policy(pg: &Postgres, pgb: &Pgbouncer, dir: &Path, ca: &Path) -> String {
    let policy = pooled_policy(
        pg,
        pgb.port,
        &pgb.auth_file(),
        dir,
        &pgb.admin_password,
        "alternating",
    );
    let console = format!("postgres://admin@127.0.0.1:{}/pgbouncer", pgb.port);
    assert!(policy.contains(&format!("url = \"{console}\"")));
    policy.replace(
        &format!("url = \"{console}\""),
        &format!(
            "url = \"{console}?sslmode=verify-full&sslrootcert={}&channel_binding=prefer\"",
            ca.display()
        ),
    )
}

#[test]
fn pgbouncer_over_tls_with_the_pools_ca_rotates_and_logs_in_through_the_pooler() {
    let (cert, key) = localhost_cert();
    let (pg, pgb) = servers_with_tls("tls", &cert, &key);
    let dir = TempDir::new("pgb-tls-policy");
    std::fs::write(dir.join("ca.pem"), &cert).unwrap();
    let s = Setup::new(
        "pgb-tls",
        &pooled_tls_policy(&pg, &pgb, dir.path(), &dir.join("ca.pem")),
    );
    s.quickstart_ok();
    let first = s.file("APP_PASSWORD");
    assert!(
        pgb.can_login("app", &first),
        "quickstart's password logs in through the pooler: {}",
        pgb.log()
    );
    let out = s.rotate("APP_PASSWORD");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.file("APP_USER"), "app_b");
    let second = s.file("APP_PASSWORD");
    assert_ne!(first, second);
    assert!(pgb.can_login("app_b", &second), "{}", pgb.log());
    assert!(
        login_from_url(pgb.port, &s.file("APP_URL")),
        "the delivered URL logs in through the pooler"
    );
    assert!(
        pgb.can_login("app", &first),
        "the old login works until retire"
    );
    s.retire("APP_PASSWORD");
    assert!(!pgb.can_login("app", &first));
    assert!(pgb.can_login("app_b", &second));
    // client_tls_sslmode = require: PgBouncer refuses clients without TLS, so keyd's RELOADs
    // and test logins, which went through, were over TLS.
    let plain = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &pgb.port.to_string()])
        .args(["-U", "app_b", "-d", "app", "-tAc", "SELECT 1"])
        .env("PGPASSWORD", &second)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "5")
        .output()
        .unwrap();
    assert!(!plain.status.success(), "a login without TLS went through");
    for password in [&first, &second] {
        assert!(!pgb.log().contains(password.as_str()));
    }
}

#[test]
fn a_pgbouncer_whose_certificate_another_ca_signed_is_refused_naming_the_pool() {
    let (cert, key) = localhost_cert();
    let (other_ca, _) = localhost_cert();
    let (pg, pgb) = servers_with_tls("tls-wrong-ca", &cert, &key);
    let dir = TempDir::new("pgb-tls-wrong-ca-policy");
    std::fs::write(dir.join("other-ca.pem"), &other_ca).unwrap();
    let s = Setup::new(
        "pgb-tls-wrong-ca",
        &pooled_tls_policy(&pg, &pgb, dir.path(), &dir.join("other-ca.pem")),
    );
    let out = s.quickstart();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = String::from_utf8(ok(keyctl(&s.home()).args(["status", "--json"]))).unwrap();
    assert!(
        status.contains("target pool: ") && status.contains("TLS certificate verification failed"),
        "{status}"
    );
    assert!(
        !s.tmp.join("out/APP_PASSWORD").exists(),
        "nothing is delivered before a login through the pooler proved it"
    );
}

#[test]
fn a_tls_pgbouncer_url_that_requires_channel_binding_is_refused_saying_what_to_set() {
    // keyd's default over TLS is channel_binding=require, which PgBouncer cannot offer: the
    // admin login stops before any password is sent, and the error names the setting.
    let (cert, key) = localhost_cert();
    let (pg, pgb) = servers_with_tls("tls-binding", &cert, &key);
    let dir = TempDir::new("pgb-tls-binding-policy");
    std::fs::write(dir.join("ca.pem"), &cert).unwrap();
    let policy = pooled_tls_policy(&pg, &pgb, dir.path(), &dir.join("ca.pem"))
        .replace("&channel_binding=prefer", "");
    let s = Setup::new("pgb-tls-binding", &policy);
    assert_eq!(s.quickstart().status.code(), Some(1));
    let status = String::from_utf8(ok(keyctl(&s.home()).args(["status", "--json"]))).unwrap();
    assert!(
        status.contains("target pool: ") && status.contains("channel_binding="),
        "{status}"
    );
    assert!(!s.tmp.join("out/APP_PASSWORD").exists());
}
