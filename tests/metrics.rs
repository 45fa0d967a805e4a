//! `keyd --metrics`: the exposition is valid Prometheus text (`promtool check metrics`) and
//! holds no value; rotations and plugin requests are counted; a real Prometheus (Debian's)
//! scrapes it and answers a query for a secret's version; the alert rules pass their unit tests
//! (`promtool test rules`); a probe marks a reachable target up, and a rotation that fails at
//! it shows; and an address that cannot be served is a clear error, exit 6.

use std::io::{BufRead, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyd_tests::servers::{Redis, free_port};
use keyd_tests::{TempDir, keyctl, keyd, ok, workspace};

const POLICY: &str = r#"[stack]
name = "app"

[secrets.FERNET_KEY]
kind = "fernet"
rotate = "30d"
grace = "1d"

[secrets.DB_PASSWORD]
kind = "password"
rotate = "90d"
standalone = true

[secrets.WEB_CERT]
kind = "tls"
cn = "localhost"
days = 30
key = "WEB_KEY"
"#;

/// Fails the test with the package to install when `program` is not on PATH: nothing here is
/// skipped silently.
fn require(program: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{program} is not installed: tests/run installs Debian's `prometheus` package"
    );
}

/// A quickstart of `policy` in a new temp dir: the dir, the home and the output directory.
fn setup(tag: &str, policy: &str) -> (TempDir, PathBuf, PathBuf) {
    let tmp = TempDir::new(tag);
    std::fs::write(tmp.join("app.toml"), policy).unwrap();
    let (home, out) = (tmp.join("home"), tmp.join("out"));
    ok(keyctl(&home)
        .arg("quickstart")
        .arg("--policy")
        .arg(tmp.join("app.toml"))
        .arg("--out")
        .arg(&out));
    (tmp, home, out)
}

/// A keyd serving its API socket in the home and `/metrics` on a free loopback port (and
/// whatever `extra` arguments ask for).
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(home: &Path, extra: &[&str]) -> Daemon {
        let port = free_port();
        let mut child = keyd(home)
            .arg("--metrics")
            .arg(format!("127.0.0.1:{port}"))
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        loop {
            let line = lines
                .next()
                .expect("keyd ended before serving the metrics")
                .unwrap();
            if line.starts_with("keyd: metrics on") {
                assert_eq!(
                    line,
                    format!("keyd: metrics on http://127.0.0.1:{port}/metrics")
                );
                break;
            }
        }
        // Keeps reading, so keyd never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Daemon { child, port }
    }

    fn metrics(&self) -> (u16, String, String) {
        http_get(self.port, "/metrics")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:`port` with `Connection: close`: status, content type and body
/// (de-chunked when the answer was chunked).
fn http_get(port: u16, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    let body = if header("transfer-encoding") == "chunked" {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let (size, after) = rest.split_once("\r\n").unwrap();
            let size = usize::from_str_radix(size, 16).unwrap();
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    (status, header("content-type"), body)
}

/// Every value keyd delivered to `out` (one file per output; entries that are not files
/// are not read).
fn delivered_values(out: &Path) -> Vec<String> {
    std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|v| !v.trim().is_empty())
        .collect()
}

#[test]
fn the_metrics_are_valid_prometheus_text_and_hold_no_value() {
    require("promtool");
    let (tmp, home, out) = setup("metrics-text", POLICY);
    let plugin = tmp.join("plugin.sock");
    let daemon = Daemon::start(
        &home,
        &[
            "--docker-plugin",
            plugin.to_str().unwrap(),
            "--plugin-stack",
            "app",
        ],
    );
    let (status, content_type, body) = daemon.metrics();
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    for line in [
        "keyd_build_info{version=\"",
        "keyd_secret_version{stack=\"app\",name=\"FERNET_KEY\",kind=\"fernet\"} 1\n",
        "keyd_secret_age_seconds{stack=\"app\",name=\"DB_PASSWORD\",kind=\"password\"} ",
        "keyd_secret_next_rotation_timestamp_seconds{stack=\"app\",name=\"FERNET_KEY\",kind=\"fernet\"} ",
        "keyd_certificate_expiry_timestamp_seconds{stack=\"app\",name=\"WEB_CERT\",kind=\"tls\"} ",
        "keyd_rotation_failed{stack=\"app\",name=\"FERNET_KEY\",kind=\"fernet\"} 0\n",
        "keyd_rekey_owed{stack=\"app\",name=\"FERNET_KEY\",kind=\"fernet\"} 0\n",
        "keyd_reload_owed{stack=\"app\"} 0\n",
        "keyd_rotations_total{result=\"rotated\"} 0\n",
        "keyd_rotation_step_failures_total{step=\"set\"} 0\n",
        "keyd_plugin_requests_total{result=\"served\"} 0\n",
        "keyd_plugin_get_secret_duration_seconds_bucket{le=\"+Inf\"} 0\n",
        "keyd_store_generation ",
    ] {
        assert!(body.contains(line), "no {line:?} in\n{body}");
    }
    // The certificate's expiry is the one openssl reads from the delivered certificate.
    let cert = std::fs::read(out.join("WEB_CERT")).unwrap();
    let end = keyd_tests::pipe(
        "openssl",
        &["x509", "-noout", "-enddate", "-dateopt", "iso_8601"],
        &cert,
    );
    let end = String::from_utf8(end).unwrap();
    let expiry = body
        .lines()
        .find(|l| l.starts_with("keyd_certificate_expiry_timestamp_seconds{"))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .to_owned();
    let from_openssl = keyd_tests::pipe(
        "date",
        &[
            "-u",
            "-d",
            end.trim().trim_start_matches("notAfter="),
            "+%s",
        ],
        b"",
    );
    assert_eq!(String::from_utf8(from_openssl).unwrap().trim(), expiry);

    // promtool reads the exposition on stdin.
    let exposition = tmp.join("metrics.txt");
    std::fs::write(&exposition, &body).unwrap();
    let checked = keyd_tests::run(
        Command::new("sh")
            .arg("-c")
            .arg("promtool check metrics")
            .stdin(std::fs::File::open(&exposition).unwrap()),
    );
    assert!(
        checked.status.success() && checked.stdout.is_empty() && checked.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let values = delivered_values(&out);
    assert!(values.len() >= 4, "{values:?}");
    for value in values {
        for line in value
            .lines()
            .filter(|l| l.len() >= 8 && !l.starts_with("-----"))
        {
            assert!(!body.contains(line), "a delivered value is in /metrics");
        }
    }

    // A rotation through the daemon's API is counted, and the new version shows at once (the
    // store changed, so the facts are read again).
    ok(keyctl(&home).args(["rotate", "FERNET_KEY"]));
    let (_, _, body) = daemon.metrics();
    assert!(
        body.contains("keyd_secret_version{stack=\"app\",name=\"FERNET_KEY\",kind=\"fernet\"} 2\n"),
        "{body}"
    );
    assert!(
        body.contains("keyd_rotations_total{result=\"rotated\"} 1\n"),
        "{body}"
    );

    // The plugin's requests are counted by result, and timed.
    let ask = |labels: serde_json::Value| {
        let body = keyd_tests::get_secret_request("db_password", labels).to_string();
        keyd_tests::http_exchange(&plugin, "POST", "/SecretProvider.GetSecret", &body)
    };
    assert!(
        ask(serde_json::json!({"keyd.secret": "app/DB_PASSWORD"}))
            .2
            .contains("\"Err\":\"\"")
    );
    assert!(
        !ask(serde_json::json!({"keyd.secret": "other/NOPE"}))
            .2
            .contains("\"Err\":\"\"")
    );
    let (_, _, body) = daemon.metrics();
    for line in [
        "keyd_plugin_requests_total{result=\"served\"} 1\n",
        "keyd_plugin_requests_total{result=\"refused\"} 1\n",
        "keyd_plugin_get_secret_duration_seconds_count 2\n",
        "keyd_plugin_get_secret_duration_seconds_bucket{le=\"+Inf\"} 2\n",
    ] {
        assert!(body.contains(line), "no {line:?} in\n{body}");
    }

    // Only GET /metrics is served, and the API is not; the API's limits hold on TCP too.
    assert_eq!(http_get(daemon.port, "/v1/status").0, 404);
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let long = "x".repeat(20 * 1024);
    // The server answers 431 and closes once it has read MAX_HEAD bytes; the close resets the
    // connection while the rest of the head is still being written, so the write may fail
    // (EPIPE, ECONNRESET). The answer sent before the reset is still read.
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nX-Long: {long}\r\n\r\n"
    );
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "POST /metrics HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405 "), "{answer}");
}

/// A Prometheus server scraping 127.0.0.1:`target` every second, on a free port, with its
/// storage in `dir`; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
}

impl Prometheus {
    fn start(dir: &Path, target: u16) -> Prometheus {
        let port = free_port();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: keyd\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .unwrap();
        Prometheus { child, port }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_keyd_and_answers_a_query_for_a_version() {
    require("prometheus");
    let (tmp, home, _out) = setup("metrics-prom", POLICY);
    let daemon = Daemon::start(&home, &[]);
    let prometheus = Prometheus::start(tmp.path(), daemon.port);
    let query = "/api/v1/query?query=keyd_secret_version%7Bname%3D%22FERNET_KEY%22%7D";
    let deadline = Instant::now() + Duration::from_secs(60);
    let answer = loop {
        let answer = TcpStream::connect(("127.0.0.1", prometheus.port))
            .ok()
            .map(|_| http_get(prometheus.port, query));
        if let Some((200, _, body)) = &answer {
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            if json["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                break json;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus returned no keyd_secret_version within 60 s: {answer:?}\n{}",
            std::fs::read_to_string(tmp.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let result = &answer["data"]["result"][0];
    assert_eq!(result["metric"]["stack"], "app");
    assert_eq!(result["metric"]["kind"], "fernet");
    assert_eq!(result["metric"]["job"], "keyd");
    assert_eq!(result["value"][1], "1");
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    require("promtool");
    let dir = workspace().join("examples/prometheus");
    ok(Command::new("promtool")
        .args(["check", "rules", "keyd-alerts.yml"])
        .current_dir(&dir));
    ok(Command::new("promtool")
        .args(["check", "config", "prometheus.yml"])
        .current_dir(&dir));
    ok(Command::new("promtool")
        .args(["test", "rules", "keyd-alerts.test.yml"])
        .current_dir(&dir));
}

#[test]
fn a_reachable_target_is_up_and_a_rotation_that_fails_at_it_shows() {
    let redis = Redis::start("metrics-up", true);
    let tmp = TempDir::new("metrics-up-policy");
    std::fs::write(tmp.join("redis-admin"), &redis.admin_password).unwrap();
    let policy = format!(
        "[stack]\nname = \"cache\"\n\n[targets.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\nuser = \"default\"\npassword_file = \"{admin}\"\n\n[secrets.REDIS_PASSWORD]\nkind = \"password\"\ngrace = \"1h\"\ntarget = {{ name = \"cache\", user = \"app\", acl = \"~app:* +@all\" }}\n",
        port = redis.port,
        admin = tmp.join("redis-admin").display()
    );
    let (_setup, home, _out) = setup("metrics-up", &policy);
    let daemon = Daemon::start(&home, &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, body) = daemon.metrics();
        if body.contains("keyd_target_up{stack=\"cache\",target=\"cache\"} 1\n") {
            break;
        }
        assert!(Instant::now() < deadline, "the target is not up:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // With the server gone, a rotation fails at its set step: the journal says so (a gauge
    // read from the store) and the daemon counts it.
    drop(redis);
    let rotated = keyd_tests::run(keyctl(&home).args(["rotate", "REDIS_PASSWORD"]));
    assert!(!rotated.status.success());
    let (_, _, body) = daemon.metrics();
    for line in [
        "keyd_rotation_failed{stack=\"cache\",name=\"REDIS_PASSWORD\",kind=\"password\"} 1\n",
        "keyd_rotation_failed_step_info{stack=\"cache\",name=\"REDIS_PASSWORD\",kind=\"password\",step=\"set\"} 1\n",
        "keyd_rotations_total{result=\"failed\"} 1\n",
        "keyd_rotation_step_failures_total{step=\"set\"} 1\n",
    ] {
        assert!(body.contains(line), "no {line:?} in\n{body}");
    }
}

#[test]
fn an_address_that_cannot_be_served_is_a_clear_error() {
    let (_tmp, home, _out) = setup("metrics-bind", POLICY);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = keyd_tests::run_within(
        keyd(&home)
            .arg("--metrics")
            .arg(format!("127.0.0.1:{port}")),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "keyd: cannot serve --metrics on 127.0.0.1:{port}: Address already in use"
        )),
        "{stderr}"
    );
    // The socket is not left behind: a keyd that could not start serves nothing.
    assert!(!home.join("keyd.sock").exists());

    let out = keyd_tests::run(keyd(&home).args(["--metrics", "localhost"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid value 'localhost' for '--metrics <IP:PORT>'"),
        "{stderr}"
    );
}
