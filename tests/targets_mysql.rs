//! Rotating real MariaDB accounts, each server installed and started by the test in a temporary
//! directory on a free loopback port (see `keyd_tests::mariadb`): what quickstart delivers logs
//! in, a reconnecting client sees no failed login through alternating rotations, retire refuses
//! old passwords, the server's general log (every statement it received) holds no password,
//! grants follow the login in use, and a process killed at any step resumes to one new version.
//! Logins are checked with the `mariadb` client, independent of keyd's own.

use std::path::Path;

use keyd_tests::mariadb::{Mariadb, mariadb_login, mariadb_query};
use keyd_tests::servers::{ServerCert, localhost_cert};
use keyd_tests::target_stack::{
    Setup, count_failures, only_live_versions_log_in, quickstart_against_a_silent_server,
};
use keyd_tests::{TempDir, keyctl, keyd, ok};

/// A stack `meta` with a mysql target `metadb` at `url` (admin password from a file in `dir`)
/// and the password AIRFLOW_DB_PASSWORD of user `airflow` with `strategy` at `hosts`; the
/// alternating strategy delivers the login as AIRFLOW_DB_USER. AIRFLOW_DB_URL is a template of
/// both, one file a client reads at once.
fn mysql_policy(db: &Mariadb, dir: &Path, url: &str, strategy: &str, hosts: &str) -> String {
    std::fs::write(dir.join("mysql-admin"), &db.admin_password).unwrap();
    let alternating = strategy == "alternating";
    format!(
        r#"[stack]
name = "meta"

[targets.metadb]
type = "mysql"
url = "{url}"
password_file = "{admin}"

[secrets.AIRFLOW_DB_PASSWORD]
kind = "password"
grace = "1h"
target = {{ name = "metadb", user = "airflow", hosts = {hosts}, strategy = "{strategy}"{user} }}

[secrets.AIRFLOW_DB_URL]
kind = "template"
template = "mysql://{login}:{{AIRFLOW_DB_PASSWORD|url}}@127.0.0.1:{port}/airflowdb"
"#,
        admin = dir.join("mysql-admin").display(),
        port = db.port,
        user = if alternating {
            r#", user_secret = "AIRFLOW_DB_USER""#
        } else {
            ""
        },
        login = if alternating {
            "{AIRFLOW_DB_USER}"
        } else {
            "airflow"
        },
    )
}

/// The admin URL of `db` over plain TCP on loopback.
fn plain_url(db: &Mariadb) -> String {
    format!("mysql://admin@127.0.0.1:{}/", db.port)
}

/// A login with the credentials of a delivered `mysql://USER:PASSWORD@host:port/db` URL (the
/// password URL-encoded: letters and digits here) that reads a table only the grants keyd
/// copies between the two logins allow.
fn login_from_url(port: u16, url: &str) -> bool {
    let rest = url.strip_prefix("mysql://").unwrap();
    let (userinfo, _) = rest.split_once('@').unwrap();
    let (user, password) = userinfo.split_once(':').unwrap();
    mariadb_query(port, user, password, "SELECT count(*) FROM airflowdb.dags").as_deref()
        == Some("2")
}

/// The grants of `user`@`%`, one line each, the grantee's name replaced by `U`.
fn grants_of(db: &Mariadb, user: &str) -> Vec<String> {
    let mut lines: Vec<String> = db
        .root_sql(&format!("SHOW GRANTS FOR '{user}'@'%'"))
        .lines()
        .map(|l| {
            let l = l.replace(&format!("`{user}`@"), "`U`@");
            // MariaDB shows the password hash on the USAGE line: not a grant.
            l.split(" IDENTIFIED BY").next().unwrap().to_owned()
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn mysql_alternating_has_zero_failed_logins_and_keeps_plaintext_out_of_the_general_log() {
    let db = Mariadb::start("alt");
    // What a DBA set up before keyd: a database, and grants to the account keyd takes over.
    db.root_sql(
        "CREATE DATABASE airflowdb; CREATE TABLE airflowdb.dags (id INT); \
         INSERT INTO airflowdb.dags VALUES (1), (2); \
         CREATE USER 'airflow'@'%' IDENTIFIED BY 'set-by-the-dba'; \
         GRANT SELECT, INSERT ON airflowdb.* TO 'airflow'@'%'",
    );
    let dir = TempDir::new("mysql-alt-policy");
    let s = Setup::new(
        "mysql-alt",
        &mysql_policy(
            &db,
            dir.path(),
            &plain_url(&db),
            "alternating",
            r#"["localhost", "%"]"#,
        ),
    );
    s.quickstart_ok();
    assert_eq!(s.file("AIRFLOW_DB_USER"), "airflow");
    let first = s.file("AIRFLOW_DB_PASSWORD");
    assert!(db.can_login("airflow", &first));
    assert!(
        db.can_login_on_socket("airflow", &first),
        "the account at every host of the policy was set"
    );
    assert!(!db.can_login("airflow", "set-by-the-dba"));

    let url_file = s.tmp.join("out").join("AIRFLOW_DB_URL");
    let port = db.port;
    let failures = count_failures(
        100,
        move || login_from_url(port, &std::fs::read_to_string(&url_file).unwrap()),
        || assert!(s.rotate("AIRFLOW_DB_PASSWORD").status.success()),
    );
    assert_eq!(failures, 0, "logins failed during an alternating rotation");
    assert_eq!(s.file("AIRFLOW_DB_USER"), "airflow_b");
    let second = s.file("AIRFLOW_DB_PASSWORD");
    assert!(db.can_login("airflow_b", &second));
    assert_eq!(
        grants_of(&db, "airflow_b"),
        grants_of(&db, "airflow"),
        "the new login has the grants of the one in use"
    );
    assert!(
        db.can_login("airflow", &first),
        "the old login works during the overlap"
    );
    s.retire("AIRFLOW_DB_PASSWORD");
    assert!(
        !db.can_login("airflow", &first),
        "retire locks the old login"
    );
    assert!(!db.can_login_on_socket("airflow", &first));
    assert!(db.can_login("airflow_b", &second));

    // A grant given to the login in use reaches the other at the next rotation, which goes
    // back to the first login (unlocked, with a new password).
    db.root_sql("GRANT UPDATE ON airflowdb.* TO 'airflow_b'@'%'");
    assert!(s.rotate("AIRFLOW_DB_PASSWORD").status.success());
    assert_eq!(s.file("AIRFLOW_DB_USER"), "airflow");
    let third = s.file("AIRFLOW_DB_PASSWORD");
    assert!(login_from_url(port, &s.file("AIRFLOW_DB_URL")));
    assert!(db.can_login_on_socket("airflow", &third));
    assert_eq!(grants_of(&db, "airflow"), grants_of(&db, "airflow_b"));
    assert!(
        grants_of(&db, "airflow")
            .iter()
            .any(|g| g.contains("UPDATE"))
    );

    // The server logged every statement: hashes went over the wire, never a password.
    let log = db.general_log();
    assert!(
        log.contains("IDENTIFIED WITH mysql_native_password AS '*"),
        "the general log is on and shows what keyd sent"
    );
    for password in [&first, &second, &third, &db.admin_password] {
        assert!(
            !log.contains(password.as_str()),
            "a plaintext password reached the general log"
        );
    }
}

#[test]
fn mysql_single_rotation_and_retire_refuse_the_old_password() {
    let db = Mariadb::start("single");
    db.root_sql("CREATE DATABASE airflowdb");
    let dir = TempDir::new("mysql-single-policy");
    let s = Setup::new(
        "mysql-single",
        &mysql_policy(&db, dir.path(), &plain_url(&db), "single", r#"["%"]"#),
    );
    s.quickstart_ok();
    let first = s.file("AIRFLOW_DB_PASSWORD");
    assert!(
        db.can_login("airflow", &first),
        "quickstart created the account"
    );
    assert!(s.rotate("AIRFLOW_DB_PASSWORD").status.success());
    let second = s.file("AIRFLOW_DB_PASSWORD");
    assert_ne!(first, second);
    assert!(db.can_login("airflow", &second));
    assert!(
        !db.can_login("airflow", &first),
        "one account, one password: the old one stops at set"
    );
    s.retire("AIRFLOW_DB_PASSWORD");
    assert!(!db.can_login("airflow", &first));
    assert!(db.can_login("airflow", &second));
    assert!(!db.general_log().contains(&second));
}

#[test]
fn rotate_rotate_retire_leaves_no_mysql_password_valid_that_the_store_calls_retired() {
    let db = Mariadb::start("alt-seq");
    let dir = TempDir::new("mysql-alt-seq-policy");
    let policy = mysql_policy(&db, dir.path(), &plain_url(&db), "alternating", r#"["%"]"#);
    let s = Setup::new("mysql-alt-seq", &policy);
    s.quickstart_ok();
    let steps = [
        "rotate", "rotate", "retire", "rotate", "rotate", "rotate", "retire",
    ];
    only_live_versions_log_in(&s, "AIRFLOW_DB_PASSWORD", &steps, |password| {
        ["airflow", "airflow_b"]
            .iter()
            .any(|u| mariadb_login(db.port, u, password))
    });
}

/// The number of versions of `name` in the store, and whether a rotation is in flight.
fn versions_and_in_flight(s: &Setup, name: &str) -> (usize, bool) {
    let history: serde_json::Value =
        serde_json::from_slice(&ok(keyctl(&s.home()).args(["history", name, "--json"]))).unwrap();
    let status = String::from_utf8(ok(keyctl(&s.home()).args(["status", "--json"]))).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let in_flight = status
        .as_array()
        .unwrap()
        .iter()
        .any(|st| !st["rotation"].is_null());
    (history["versions"].as_array().unwrap().len(), in_flight)
}

#[test]
fn a_mysql_rotation_killed_at_any_step_resumes_to_one_new_version_that_logs_in() {
    let db = Mariadb::start("kill");
    db.root_sql("CREATE DATABASE airflowdb");
    let dir = TempDir::new("mysql-kill-policy");
    let policy = mysql_policy(&db, dir.path(), &plain_url(&db), "alternating", r#"["%"]"#);
    let s = Setup::new("mysql-kill", &policy);
    s.quickstart_ok();
    for (i, step) in ["create", "set", "test", "deliver", "promote"]
        .into_iter()
        .enumerate()
    {
        s.rotate_killed_after("AIRFLOW_DB_PASSWORD", step);
        // What consumers hold still logs in, whatever the step.
        let (user, password) = (s.file("AIRFLOW_DB_USER"), s.file("AIRFLOW_DB_PASSWORD"));
        assert!(
            db.can_login(&user, &password),
            "killed after {step}: the delivered login stopped working"
        );
        ok(keyd(&s.home()).arg("--once"));
        assert_eq!(
            versions_and_in_flight(&s, "AIRFLOW_DB_PASSWORD"),
            (i + 2, false),
            "killed after {step}: one new version, no rotation left in flight"
        );
        let (user, password) = (s.file("AIRFLOW_DB_USER"), s.file("AIRFLOW_DB_PASSWORD"));
        assert!(
            db.can_login(&user, &password),
            "killed after {step}: the resumed version does not log in"
        );
    }
}

#[test]
fn a_mysql_target_that_never_answers_times_out_with_a_message_naming_it() {
    let status = quickstart_against_a_silent_server("mysql", ", user = \"app\"");
    assert!(
        status.contains("target silent: ") && status.contains("timed out after 1s"),
        "{status}"
    );
}

/// A MariaDB server presenting a certificate for localhost and 127.0.0.1, and that
/// certificate's PEM file (the CA clients trust).
fn tls_server(tag: &str, dir: &Path) -> (Mariadb, std::path::PathBuf) {
    let (cert, key) = localhost_cert();
    let db = Mariadb::start_with(
        tag,
        Some(ServerCert {
            cert_pem: &cert,
            key_pem: &key,
        }),
    );
    std::fs::write(dir.join("ca.pem"), &cert).unwrap();
    (db, dir.join("ca.pem"))
}

#[test]
fn a_mysql_target_with_ssl_mode_verify_identity_rotates_over_tls() {
    let dir = TempDir::new("mysql-tls-policy");
    let (db, ca) = tls_server("tls", dir.path());
    db.root_sql("CREATE DATABASE airflowdb");
    let url = format!(
        "mysql://admin@127.0.0.1:{}/?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        db.port,
        ca.display()
    );
    let s = Setup::new(
        "mysql-tls",
        &mysql_policy(&db, dir.path(), &url, "single", r#"["%"]"#),
    );
    s.quickstart_ok();
    assert!(s.rotate("AIRFLOW_DB_PASSWORD").status.success());
    assert!(db.can_login("airflow", &s.file("AIRFLOW_DB_PASSWORD")));
    // keyd's sessions (admin, probe, test) came over TLS, as the server saw them.
    let ssl: usize = db
        .root_sql("SHOW GLOBAL STATUS LIKE 'Ssl_accepts'")
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(ssl >= 4, "{ssl} TLS handshakes");
}

/// Quickstart of `s` fails, and `keyctl status` shows `error` (its password is not delivered).
fn quickstart_fails_with(s: &Setup, error: &str) {
    assert_eq!(s.quickstart().status.code(), Some(1));
    let status = String::from_utf8(ok(keyctl(&s.home()).args(["status", "--json"]))).unwrap();
    assert!(status.contains(error), "{status}");
    assert!(!s.tmp.join("out/AIRFLOW_DB_PASSWORD").exists());
}

#[test]
fn a_mysql_server_whose_certificate_the_ca_did_not_sign_is_refused() {
    let dir = TempDir::new("mysql-tls-bad-policy");
    let (db, _) = tls_server("tls-bad", dir.path());
    let (other_ca, _) = localhost_cert();
    std::fs::write(dir.path().join("other-ca.pem"), other_ca).unwrap();
    let url = format!(
        "mysql://admin@127.0.0.1:{}/?ssl-mode=VERIFY_CA&ssl-ca={}",
        db.port,
        dir.path().join("other-ca.pem").display()
    );
    let s = Setup::new(
        "mysql-tls-bad",
        &mysql_policy(&db, dir.path(), &url, "single", r#"["%"]"#),
    );
    quickstart_fails_with(
        &s,
        "target metadb: login failed: TLS certificate verification failed",
    );
    assert!(
        !db.general_log().contains("Connect\tadmin@"),
        "no login reached the server"
    );
}

#[test]
fn a_mysql_server_without_tls_is_refused_when_the_url_asks_for_it() {
    let db = Mariadb::start("no-tls");
    let dir = TempDir::new("mysql-no-tls-policy");
    let url = format!("mysql://admin@127.0.0.1:{}/?ssl-mode=REQUIRED", db.port);
    let s = Setup::new(
        "mysql-no-tls",
        &mysql_policy(&db, dir.path(), &url, "single", r#"["%"]"#),
    );
    quickstart_fails_with(
        &s,
        "target metadb: login failed: the server does not offer TLS",
    );
}
