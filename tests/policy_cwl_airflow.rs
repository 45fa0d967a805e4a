//! The bundled `policies/cwl-airflow.toml` end to end, against a real MariaDB and a real
//! RabbitMQ started by the test (see `keyd_tests::mariadb` and `keyd_tests::rabbitmq`). The
//! policy is the bundled file with only its target addresses pointed at the test servers, so a
//! change that breaks the bundled policy breaks this test. The servers are set up as the
//! CWL-Airflow guide sets them up (`airflow`@`localhost` and `airflow`@`%` with all privileges
//! on `airflow`), their admin passwords adopted with `keyctl import` as an operator would; then
//! quickstart, rotations and retire. The delivered URLs are checked with clients independent
//! of keyd: the `mariadb` client, and an AMQP 0-9-1 handshake written in Python.

use std::process::Command;

use keyd_tests::mariadb::{Mariadb, mariadb_query};
use keyd_tests::rabbitmq::Rabbitmq;
use keyd_tests::target_stack::Setup;
use keyd_tests::{keyctl, ok, workspace};

/// The bundled policy with `from` replaced by `to` for each pair; each `from` must occur
/// exactly once, so a bundled policy that moved on fails here rather than going untested.
fn rewritten(policy: &str, pairs: &[(&str, String)]) -> String {
    let mut out = policy.to_owned();
    for (from, to) in pairs {
        assert_eq!(
            out.matches(from).count(),
            1,
            "policies/cwl-airflow.toml no longer has {from} once"
        );
        out = out.replace(from, to);
    }
    out
}

/// A password the policy's admin secrets could have made: 32 letters and digits.
fn admin_password(seed: &str) -> String {
    let mut out: String = format!("{seed}{}", std::process::id())
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    while out.len() < 32 {
        out.push('x');
    }
    out.truncate(32);
    out
}

/// The user and password of a delivered URL `SCHEME://USER:PASSWORD@REST`, checking that it
/// still says `scheme` and `rest` as the bundled template does.
fn credentials(url: &str, scheme: &str, rest: &str) -> (String, String) {
    let after = url
        .strip_prefix(scheme)
        .unwrap_or_else(|| panic!("{url:?} does not start with {scheme}"));
    let (userinfo, host) = after.rsplit_once('@').unwrap();
    assert_eq!(host, rest, "{url:?}");
    let (user, password) = userinfo.split_once(':').unwrap();
    // Letters and digits (the policy's alphabet): nothing to percent-decode.
    assert!(
        user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && password.chars().all(|c| c.is_ascii_alphanumeric()),
        "{url:?}"
    );
    (user.to_owned(), password.to_owned())
}

/// Whether the delivered `sql_alchemy_conn` logs in to MariaDB (over TCP, so as
/// `USER`@`%`) and may use database `airflow`, with the `mariadb` client.
fn metadb_url_logs_in(db: &Mariadb, url: &str) -> bool {
    let (user, password) = credentials(url, "mysql+mysqldb://", "mysql:3306/airflow");
    mariadb_query(
        db.port,
        &user,
        &password,
        "USE airflow; SELECT CURRENT_USER(), COUNT(*) FROM dag",
    )
    .is_some_and(|answer| answer == format!("{user}@%\t1"))
}

/// A client's AMQP 0-9-1 login (what kombu does first), independent of keyd's: the protocol
/// header, Start-Ok with PLAIN, Tune-Ok, Open of the virtual host. Prints `open-ok`, or
/// `refused CODE`, or `closed`. The credentials come through the environment.
const AMQP_LOGIN: &str = r#"
import os, socket, struct, sys
s = socket.create_connection(("127.0.0.1", int(os.environ["AMQP_PORT"])), timeout=10)
def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            print("closed"); sys.exit(0)
        b += c
    return b
def method():
    while True:
        kind, _, size = struct.unpack(">BHI", recv(7))
        p = recv(size + 1)[:-1]
        if kind == 1:
            return struct.unpack(">HH", p[:4]), p[4:]
def send(m, args):
    p = struct.pack(">HH", 10, m) + args
    s.sendall(struct.pack(">BHI", 1, 0, len(p)) + p + b"\xce")
def short(x):
    x = x.encode(); return bytes([len(x)]) + x
def long(x):
    return struct.pack(">I", len(x)) + x
s.sendall(b"AMQP\x00\x00\x09\x01")
m, a = method()
assert m == (10, 10), m
assert b"PLAIN" in a
props = short("capabilities") + b"F" + long(short("authentication_failure_close") + b"t\x01")
plain = b"\0" + os.environ["AMQP_USER"].encode() + b"\0" + os.environ["AMQP_PASSWORD"].encode()
send(11, long(props) + short("PLAIN") + long(plain) + short("en_US"))
m, a = method()
if m == (10, 50):
    print("refused", struct.unpack(">H", a[:2])[0]); sys.exit(0)
assert m == (10, 30), m
send(31, a[:6] + b"\0\0")
send(40, short(os.environ["AMQP_VHOST"]) + short("") + b"\0")
m, a = method()
print("open-ok" if m == (10, 41) else "refused %d" % struct.unpack(">H", a[:2])[0])
"#;

/// What [`AMQP_LOGIN`] says for the delivered `broker_url` (vhost `/`, written `//`).
fn broker_url_login(node: &Rabbitmq, url: &str) -> String {
    let (user, password) = credentials(url, "amqp://", "rabbitmq:5672//");
    let out = Command::new("python3")
        .args(["-c", AMQP_LOGIN])
        .env("AMQP_PORT", node.amqp_port.to_string())
        .env("AMQP_USER", &user)
        .env("AMQP_PASSWORD", &password)
        .env("AMQP_VHOST", "/")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_bundled_cwl_airflow_policy_sets_rotates_and_retires_on_real_mariadb_and_rabbitmq() {
    let db = Mariadb::start("cwl-airflow");
    let node = Rabbitmq::start("cwl-airflow");
    let (root_password, rabbit_password) = (admin_password("mysqlroot"), admin_password("rabbit"));
    // The servers as the guide leaves them, with the admin logins the policy names.
    db.root_sql(&format!(
        "SET SESSION sql_log_off = 1; \
         CREATE OR REPLACE USER 'root'@'127.0.0.1' IDENTIFIED BY '{root_password}'; \
         GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION; \
         CREATE DATABASE airflow; CREATE TABLE airflow.dag (dag_id VARCHAR(250) PRIMARY KEY); \
         INSERT INTO airflow.dag VALUES ('cwl'); \
         CREATE USER 'airflow'@'localhost' IDENTIFIED BY 'airflow'; \
         CREATE USER 'airflow'@'%' IDENTIFIED BY 'airflow'; \
         GRANT ALL PRIVILEGES ON airflow.* TO 'airflow'@'localhost'; \
         GRANT ALL PRIVILEGES ON airflow.* TO 'airflow'@'%'"
    ));
    node.api(
        "PUT",
        "/api/users/admin",
        Some(
            &serde_json::json!({ "password": rabbit_password, "tags": "administrator" })
                .to_string(),
        ),
    );

    let bundled = std::fs::read_to_string(workspace().join("policies/cwl-airflow.toml")).unwrap();
    let policy = rewritten(
        &bundled,
        &[
            (
                "\"mysql://root@mysql:3306/\"",
                format!("\"mysql://root@127.0.0.1:{}/\"", db.port),
            ),
            (
                "\"http://admin@rabbitmq:15672\"",
                format!("\"http://admin@127.0.0.1:{}\"", node.http_port),
            ),
            (
                "\"amqp://rabbitmq:5672/\"",
                format!("\"amqp://127.0.0.1:{}/\"", node.amqp_port),
            ),
        ],
    );
    let s = Setup::new("cwl-airflow", &policy);
    let admins = s.tmp.join("admins.env");
    std::fs::write(
        &admins,
        format!("MYSQL_ROOT_PASSWORD={root_password}\nRABBITMQ_ADMIN_PASSWORD={rabbit_password}\n"),
    )
    .unwrap();
    ok(keyctl(&s.home())
        .args(["import", "--policy"])
        .arg(s.tmp.join("policy.toml"))
        .arg(&admins));
    s.quickstart_ok();

    let (conn, broker) = (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__CELERY__BROKER_URL",
    );
    let (first_conn, first_broker) = (s.file(conn), s.file(broker));
    assert_eq!(
        (s.file("AIRFLOW_DB_USER"), s.file("BROKER_USER")),
        ("airflow".into(), "celery".into())
    );
    assert!(
        metadb_url_logs_in(&db, &first_conn),
        "quickstart's sql_alchemy_conn does not log in"
    );
    let db_password = s.file("AIRFLOW_DB_PASSWORD");
    assert!(
        db.can_login_on_socket("airflow", &db_password),
        "'airflow'@'localhost' has the new password too"
    );
    assert!(!db.can_login_on_socket("airflow", "airflow"));
    assert_eq!(broker_url_login(&node, &first_broker), "open-ok");

    for secret in ["AIRFLOW_DB_PASSWORD", "BROKER_PASSWORD"] {
        let out = s.rotate(secret);
        assert!(
            out.status.success(),
            "rotate {secret}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (second_conn, second_broker) = (s.file(conn), s.file(broker));
    assert_eq!(
        (s.file("AIRFLOW_DB_USER"), s.file("BROKER_USER")),
        ("airflow_b".into(), "celery_b".into())
    );
    assert!(
        metadb_url_logs_in(&db, &second_conn),
        "the rotated sql_alchemy_conn does not log in (airflow_b lacks the grants?)"
    );
    assert!(db.can_login_on_socket("airflow_b", &s.file("AIRFLOW_DB_PASSWORD")));
    assert_eq!(broker_url_login(&node, &second_broker), "open-ok");
    // Alternating: workers still holding the old URLs log in until retire.
    assert!(metadb_url_logs_in(&db, &first_conn));
    assert!(db.can_login_on_socket("airflow", &db_password));
    assert_eq!(broker_url_login(&node, &first_broker), "open-ok");

    for secret in ["AIRFLOW_DB_PASSWORD", "BROKER_PASSWORD"] {
        s.retire(secret);
    }
    assert!(!metadb_url_logs_in(&db, &first_conn));
    assert!(!db.can_login_on_socket("airflow", &db_password));
    assert_eq!(broker_url_login(&node, &first_broker), "refused 403");
    assert!(metadb_url_logs_in(&db, &second_conn));
    assert_eq!(broker_url_login(&node, &second_broker), "open-ok");

    // The next rotation moves back to the first accounts, with new passwords.
    for secret in ["AIRFLOW_DB_PASSWORD", "BROKER_PASSWORD"] {
        assert!(s.rotate(secret).status.success());
    }
    let (third_conn, third_broker) = (s.file(conn), s.file(broker));
    assert_ne!(third_conn, first_conn);
    assert!(metadb_url_logs_in(&db, &third_conn));
    assert_eq!(broker_url_login(&node, &third_broker), "open-ok");

    let (general_log, node_log) = (db.general_log(), node.log());
    assert!(
        general_log.contains("IDENTIFIED WITH mysql_native_password AS '*"),
        "the general log is on and shows the hashes keyd sent"
    );
    for url in [
        &first_conn,
        &second_conn,
        &third_conn,
        &first_broker,
        &second_broker,
        &third_broker,
    ] {
        let (_, password) = url
            .rsplit_once('@')
            .and_then(|(userinfo, _)| userinfo.rsplit_once(':'))
            .unwrap();
        assert!(
            !general_log.contains(password) && !node_log.contains(password),
            "a password reached a server's log"
        );
    }
}
