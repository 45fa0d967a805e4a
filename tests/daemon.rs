//! The keyd daemon: scheduling driven by a controlled clock (no sleeping on real intervals),
//! the local API's answers, refusal of uids that are not allowed, malformed requests, and no
//! secret value in any log, audit line or API answer.

use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use keyd::ops::run_due;
use keyd::store::Home;
use keyd_tests::{TempDir, TestClock, keyctl, keyd, ok};

const POLICY: &str = r#"[stack]
name = "app"

[secrets.FERNET_KEY]
kind = "fernet"
rotate = "30d"
grace = "1d"

[secrets.DB_PASSWORD]
kind = "password"
rotate = "90d"
grace = "2h"
standalone = true

[secrets.JWT_KEY]
kind = "rsa"
bits = 2048
jwks = "JWT_JWKS"
rotate = "180d"
grace = "2d"
publish_ahead = "1h"
"#;

fn setup(tag: &str) -> (TempDir, PathBuf, PathBuf) {
    setup_with(tag, POLICY)
}

/// A quickstart of `policy` in a new temp dir: the dir, the home and the output directory.
fn setup_with(tag: &str, policy: &str) -> (TempDir, PathBuf, PathBuf) {
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

const DAY: i64 = 86_400;

#[test]
fn the_scheduler_rotates_and_retires_on_time_under_a_controlled_clock() {
    let (_tmp, home, out) = setup("sched");
    let home = Home::new(home);
    let t0 = home.peek().unwrap().stacks["app"].secrets["FERNET_KEY"]
        .current()
        .unwrap()
        .created;
    let clock = TestClock::at(t0 + 10 * DAY);
    let fernet = || std::fs::read_to_string(out.join("FERNET_KEY")).unwrap();
    let first_key = fernet();

    // Day 10: nothing is due; the next wake-up is the fernet rotation at day 30.
    let (report, next) = run_due(&home, &clock, "test").unwrap();
    assert!(report.outcomes.is_empty());
    assert_eq!(next, Some(t0 + 30 * DAY));

    // Day 30: the fernet key rotates; the list is new,old; retire is planned a day later.
    clock.set(t0 + 30 * DAY);
    let (report, next) = run_due(&home, &clock, "test").unwrap();
    assert_eq!(report.outcomes.len(), 1, "{report:?}");
    assert_eq!(report.outcomes[0].name, "FERNET_KEY");
    assert!(fernet().ends_with(&format!(",{first_key}")));
    assert_eq!(next, Some(t0 + 31 * DAY));

    // One second before the grace ends nothing happens; at the end the overlap closes.
    clock.set(t0 + 31 * DAY - 1);
    assert!(
        run_due(&home, &clock, "test")
            .unwrap()
            .0
            .outcomes
            .is_empty()
    );
    clock.set(t0 + 31 * DAY);
    let (report, next) = run_due(&home, &clock, "test").unwrap();
    assert_eq!(
        report.outcomes[0].result,
        keyd::rotation::OutcomeKind::Retired
    );
    assert!(!fernet().contains(','));
    assert_eq!(
        next,
        Some(t0 + 60 * DAY),
        "the next fernet rotation, 30 days after promote"
    );

    // Day 180: the JWT key is published first and promoted only after publish_ahead (1h).
    clock.set(t0 + 180 * DAY);
    let (report, next) = run_due(&home, &clock, "test").unwrap();
    let jwt = report
        .outcomes
        .iter()
        .find(|o| o.name == "JWT_KEY")
        .unwrap();
    assert_eq!(jwt.result, keyd::rotation::OutcomeKind::Waiting);
    let jwks: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("JWT_JWKS")).unwrap()).unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "published ahead");
    let private_before = std::fs::read(out.join("JWT_KEY")).unwrap();
    assert!(next.unwrap() <= t0 + 180 * DAY + 3600);
    clock.set(t0 + 180 * DAY + 3600);
    let (report, _) = run_due(&home, &clock, "test").unwrap();
    let jwt = report
        .outcomes
        .iter()
        .find(|o| o.name == "JWT_KEY")
        .unwrap();
    assert_eq!(jwt.result, keyd::rotation::OutcomeKind::Resumed);
    assert_ne!(
        std::fs::read(out.join("JWT_KEY")).unwrap(),
        private_before,
        "the private key switches at promote"
    );
}

/// A clock on a machine slower than the policy's intervals: every reading is ten seconds after
/// the one before, so whatever a pass does, the grace and interval of the secret it rotates have
/// passed by the time it ends.
struct CrawlingClock(std::sync::atomic::AtomicI64);

impl keyd::clock::Clock for CrawlingClock {
    fn now(&self) -> i64 {
        self.0.fetch_add(10, std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn work_that_falls_due_while_a_pass_runs_is_scheduled_at_once_not_after_the_next_wake_up() {
    // CI once saw keyd rotate a 2 s secret, retire its old version, then sleep 28 s until an
    // unrelated retry: the pass had outlasted the 2 s interval, and the plan after the pass
    // listed the rotation as due, which the scheduler's next wake-up did not count.
    let (_tmp, home, _) = setup_with(
        "due-during-pass",
        "[stack]\nname = \"app\"\n\n[secrets.FAST]\nkind = \"token\"\nrotate = \"2s\"\ngrace = \"1s\"\n\n[secrets.SLOW]\nkind = \"token\"\nrotate = \"1d\"\n",
    );
    let home = Home::new(home);
    let t0 = home.peek().unwrap().stacks["app"].secrets["FAST"]
        .current()
        .unwrap()
        .created;
    let clock = CrawlingClock(std::sync::atomic::AtomicI64::new(t0 + 2));
    let (report, next) = run_due(&home, &clock, "test").unwrap();
    assert_eq!(
        report
            .outcomes
            .iter()
            .map(|o| o.name.as_str())
            .collect::<Vec<_>>(),
        ["FAST"],
        "{report:?}"
    );
    // By the end of the pass FAST's old version is past its grace and FAST is past its
    // interval: the next pass is due now, not at SLOW's rotation a day later.
    let end = clock.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        next.is_some_and(|t| t <= end),
        "next wake-up {next:?}, the pass ended at {end} (SLOW is due at {})",
        t0 + 86_400
    );
    // And the wake-up finds that work: the retire and the next rotation.
    let (report, _) = run_due(&home, &clock, "test").unwrap();
    let results: Vec<_> = report.outcomes.iter().map(|o| o.result).collect();
    assert!(
        results.contains(&keyd::rotation::OutcomeKind::Retired)
            && results.contains(&keyd::rotation::OutcomeKind::Rotated),
        "{report:?}"
    );
}

struct Daemon {
    child: Child,
    socket: PathBuf,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Daemon {
    fn start(home: &Path, socket: Option<&Path>, extra: &[&str]) -> Daemon {
        let socket = socket.map_or_else(|| home.join("keyd.sock"), Path::to_owned);
        let mut child = keyd(home)
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Ready when it says so (bounded wait).
        let ready = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("keyd did not start");
        assert!(ready.starts_with("keyd: ready on"), "{ready}");
        Daemon {
            child,
            socket,
            stderr: rx,
        }
    }

    fn logs(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP exchange; returns status and body (read by Content-Length: the server keeps
/// connections alive).
fn raw(socket: &Path, request: &[u8]) -> (u16, String) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    s.write_all(request).unwrap();
    let (status_line, body) = keyd_tests::read_response(&mut BufReader::new(s));
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    (status, String::from_utf8(body).unwrap())
}

fn call(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut stream = keyd::daemon::client::connect(socket).unwrap();
    let (status, body) =
        keyd::daemon::client::call(&mut stream, socket, method, path, body.as_ref()).unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[test]
fn the_api_answers_refuses_and_never_serves_or_logs_a_value() {
    let (tmp, home, out) = setup("api");
    // The socket sits outside the (0700) home so another uid can reach it; its mode lets it
    // connect, and SO_PEERCRED must still refuse it.
    let sock_dir = tmp.join("sock");
    std::fs::create_dir(&sock_dir).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = Daemon::start(
        &home,
        Some(&sock_dir.join("keyd.sock")),
        &["--socket-mode", "0666"],
    );
    let s = &daemon.socket;
    let mut answers = String::new();

    let (status, health) = call(s, "GET", "/v1/health", None);
    assert_eq!((status, health["ok"].as_bool()), (200, Some(true)));
    let (status, list) = call(s, "GET", "/v1/secrets", None);
    assert_eq!(status, 200);
    assert_eq!(list.as_array().unwrap().len(), 3);
    answers.push_str(&list.to_string());
    let (_, st) = call(s, "GET", "/v1/status", None);
    assert_eq!(st.as_array().unwrap().len(), 3);
    answers.push_str(&st.to_string());
    let (status, versions) = call(s, "GET", "/v1/secrets/app/FERNET_KEY/versions", None);
    assert_eq!(status, 200);
    assert_eq!(versions["versions"][0]["label"], "current");
    let (status, jwks) = call(s, "GET", "/v1/jwks/app/JWT_KEY", None);
    assert_eq!(status, 200);
    assert_eq!(jwks["keys"][0]["kty"], "RSA");
    assert_eq!(
        jwks.to_string(),
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(out.join("JWT_JWKS")).unwrap()
        )
        .unwrap()
        .to_string()
    );

    // Rotate through the API, then through keyctl (which finds the daemon's socket).
    let old_key = std::fs::read_to_string(out.join("FERNET_KEY")).unwrap();
    let (status, report) = call(
        s,
        "POST",
        "/v1/rotate",
        Some(serde_json::json!({"selector": "FERNET_KEY"})),
    );
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["outcomes"][0]["result"], "rotated");
    answers.push_str(&report.to_string());
    assert!(
        std::fs::read_to_string(out.join("FERNET_KEY"))
            .unwrap()
            .ends_with(&old_key)
    );
    let printed = String::from_utf8(ok(keyctl(&home).arg("--socket").arg(s).args([
        "rotate",
        "DB_PASSWORD",
        "--json",
    ])))
    .unwrap();
    answers.push_str(&printed);
    let audit = std::fs::read_to_string(home.join("audit.log")).unwrap();
    assert!(
        audit.lines().last().unwrap().contains("keyd api uid=0"),
        "keyctl went through the daemon: {audit}"
    );
    let printed_status = String::from_utf8(ok(keyctl(&home)
        .arg("--socket")
        .arg(s)
        .args(["status", "--json"])))
    .unwrap();
    answers.push_str(&printed_status);

    // Malformed and wrong requests get a 4xx with a message.
    let cases: [(&[u8], u16, &str); 8] = [
        (
            b"POST /v1/rotate HTTP/1.1\r\nContent-Length: 8\r\n\r\nnot json",
            400,
            "malformed JSON",
        ),
        (
            b"POST /v1/rotate HTTP/1.1\r\nContent-Length: 14\r\n\r\n{\"selectr\":\"x\"}",
            400,
            "unknown field",
        ),
        (
            b"POST /v1/rotate HTTP/1.1\r\nContent-Length: 21\r\n\r\n{\"selector\":\"NOPE_X\"}",
            404,
            "no secret named",
        ),
        (b"GET /v1/rotate HTTP/1.1\r\n\r\n", 405, "not allowed"),
        (b"GET /v2/anything HTTP/1.1\r\n\r\n", 404, "no route"),
        // An unparseable head is answered by hyper itself: a bare 400, no message.
        (b"HELLO\r\n\r\n", 400, ""),
        (
            b"POST /v1/rotate HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            413,
            "larger than",
        ),
        (
            b"POST /v1/rotate HTTP/1.1\r\nContent-Length: 21\r\n\r\n{\"selector\":\"DB_URL\"}",
            404,
            "no secret named",
        ),
    ];
    for (request, expected, message) in cases {
        let (status, body) = raw(s, request);
        assert_eq!(
            status,
            expected,
            "{}: {body}",
            String::from_utf8_lossy(request)
        );
        assert!(
            body.contains(message),
            "{}: {body}",
            String::from_utf8_lossy(request)
        );
    }

    // A uid that is not allowed is refused, though the socket's mode lets it connect.
    // perl from /usr/bin: a client any uid can run.
    let script = "use IO::Socket::UNIX; my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die \"connect: $!\"; print $s \"GET /v1/status HTTP/1.1\\r\\n\\r\\n\"; my $b = ''; while (sysread($s, $b, 4096, length $b)) {} print $b;";
    let refused = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/perl",
            "-e",
            script,
        ])
        .arg(s)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(
        text.starts_with("HTTP/1.1 403"),
        "{text}{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(text.contains("uid 65534 is not allowed"), "{text}");

    // SIGHUP re-plans without stopping.
    Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(call(s, "GET", "/v1/health", None).0, 200);

    // No value anywhere: daemon log, audit log, API answers.
    // The log reader thread may lag under load: wait (bounded) for the refusal line.
    let mut logs = String::new();
    for _ in 0..100 {
        logs.push_str(&daemon.logs());
        logs.push('\n');
        if logs.contains("refused GET /v1/status from uid 65534") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        logs.contains("refused GET /v1/status from uid 65534"),
        "{logs}"
    );
    let audit = std::fs::read_to_string(home.join("audit.log")).unwrap();
    let store = Home::new(&home).peek().unwrap();
    for record in store.stacks["app"].secrets.values() {
        for v in &record.versions {
            for part in [keyd::policy::Part::Main] {
                let Some(value) = keyd::store::SecretRecord::version_value(v, part) else {
                    continue;
                };
                let needle = value
                    .expose()
                    .lines()
                    .find(|l| !l.starts_with("-----"))
                    .unwrap()
                    .to_owned();
                for (what, text) in [
                    ("daemon log", &logs),
                    ("audit log", &audit),
                    ("API answers", &answers),
                ] {
                    assert!(!text.contains(&needle), "a value appears in the {what}");
                }
            }
        }
    }
    drop(tmp);
}

#[test]
fn sigterm_stops_the_daemon_cleanly_and_removes_its_socket() {
    let (_tmp, home, _out) = setup("term");
    let mut daemon = Daemon::start(&home, None, &[]);
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&daemon.socket)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // A second daemon on the same socket refuses to start.
    let second = keyd(&home).output().unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already serving"));
    Command::new("kill")
        .args(["-TERM", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!daemon.socket.exists());
    // Every line the daemon wrote, to the end of its stderr (the reader thread may still be
    // passing the last ones on when wait() returns; the pipe closed with the process).
    let lines: Vec<String> = daemon.stderr.iter().collect();
    assert!(
        lines.iter().any(|l| l.contains("keyd: stopped")),
        "{lines:?}"
    );
}

#[test]
fn a_second_keyd_on_a_taken_socket_exits_6_not_4_as_if_the_store_could_not_be_opened() {
    let (_tmp, home, _out) = setup("taken");
    let _first = Daemon::start(&home, None, &[]);
    let second = keyd(&home).output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("another keyd is already serving"),
        "{stderr}"
    );
    // Refused before any start-up work: the error is all it says.
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// Polls `check` every 100 ms for at most `limit`; true once it holds.
fn eventually(limit: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    check()
}

#[test]
fn a_panic_while_rotating_one_secret_fails_that_rotation_and_the_daemon_rotates_the_others() {
    // Two secrets on short schedules (real time: the daemon runs with the system clock).
    let (_tmp, home, _) = setup_with(
        "panic",
        "[stack]\nname = \"app\"\n\n[secrets.DOOMED]\nkind = \"token\"\nrotate = \"2s\"\ngrace = \"1s\"\n\n[secrets.HEALTHY]\nkind = \"token\"\nrotate = \"2s\"\ngrace = \"1s\"\n",
    );
    let mut command = keyd(&home);
    command
        .arg("--socket")
        .arg(home.join("keyd.sock"))
        .env("KEYD_PANIC_IN", "DOOMED")
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut daemon = Daemon {
        child,
        socket: home.join("keyd.sock"),
        stderr: rx,
    };
    let store = Home::new(&home);
    let version = |name: &str| {
        store.peek().unwrap().stacks["app"].secrets[name]
            .current()
            .map_or(0, |v| v.number)
    };
    // HEALTHY goes on rotating (v1 → v3 takes two rotations) while DOOMED's rotation failed.
    let went_on = eventually(std::time::Duration::from_secs(30), || {
        version("HEALTHY") >= 3
            && store.peek().unwrap().stacks["app"].secrets["DOOMED"]
                .rotation
                .as_ref()
                .is_some_and(|r| r.last_error.is_some())
    });
    let logs = daemon.logs();
    assert!(
        went_on,
        "HEALTHY at v{}, DOOMED {:?}; keyd alive: {}; log:\n{logs}",
        version("HEALTHY"),
        store.peek().unwrap().stacks["app"].secrets["DOOMED"].rotation,
        daemon.child.try_wait().unwrap().is_none()
    );
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "keyd exited:\n{logs}"
    );
    assert_eq!(
        call(&daemon.socket, "GET", "/v1/health", None).0,
        200,
        "the API still answers"
    );
    // The failure is visible in keyctl status and in the audit log.
    let status = String::from_utf8(ok(keyctl(&home)
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["status", "--json"])))
    .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let doomed = status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "DOOMED")
        .unwrap();
    let error = doomed["rotation"]["last_error"].as_str().unwrap();
    assert!(error.contains("internal error"), "{error}");
    let audit = std::fs::read_to_string(home.join("audit.log")).unwrap();
    assert!(
        audit.lines().any(|l| l.contains("\"secret\":\"DOOMED\"")
            && l.contains("\"outcome\":\"failed\"")
            && l.contains("internal error")),
        "{audit}"
    );
    let _ = daemon.child.kill();
}

/// The soft core file size limit of a running process, from /proc/PID/limits.
fn core_limit(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap()
        .to_owned();
    line.split_whitespace().nth(4).unwrap().to_owned()
}

#[test]
fn keyd_and_keyctl_turn_off_core_dumps_so_a_crash_cannot_write_secrets_to_disk() {
    // Children inherit this process's limit: allow core dumps here, as a shell may.
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let hard = getrlimit(Resource::Core).maximum;
    setrlimit(
        Resource::Core,
        Rlimit {
            current: hard.or(Some(1 << 30)),
            maximum: hard,
        },
    )
    .unwrap();
    assert_ne!(core_limit(std::process::id()), "0");
    let (_tmp, home, _out) = setup("core");
    let daemon = Daemon::start(&home, None, &[]);
    assert_eq!(core_limit(daemon.child.id()), "0", "keyd");
    drop(daemon);
    // keyctl, held at a pause point while it has the store open.
    let mut child = keyctl(&home)
        .args(["rotate", "FERNET_KEY"])
        .env("KEYD_PAUSE_AFTER", "create,set,deliver")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("keyd: paused after"), "{line}");
    let limit = core_limit(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(limit, "0", "keyctl");
}

/// How many times the store file was opened while `action` ran (the kernel's inotify count).
fn store_opens_during(home: &Path, action: impl FnOnce()) -> usize {
    use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
    let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).unwrap();
    inotify::add_watch(&fd, home.join("store.age"), WatchFlags::OPEN).unwrap();
    action();
    let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
    let mut reader = inotify::Reader::new(&fd, &mut buf);
    let mut opens = 0;
    loop {
        match reader.next() {
            Ok(event) if event.events().contains(ReadFlags::OPEN) => opens += 1,
            Ok(_) => {}
            Err(rustix::io::Errno::AGAIN) => return opens,
            Err(e) => panic!("reading inotify events: {e}"),
        }
    }
}

#[test]
fn status_answers_from_a_cached_view_until_the_store_changes() {
    let (_tmp, home, _out) = setup("status-cache");
    let daemon = Daemon::start(&home, None, &[]);
    let status = || call(&daemon.socket, "GET", "/v1/status", None).1;
    let version = |s: &serde_json::Value, name: &str| {
        s.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap()["version"]
            .clone()
    };
    assert_eq!(version(&status(), "DB_PASSWORD"), 1);
    // keyd's first scheduler pass reads the store just after it says it is ready: wait until
    // it has (no open for 300 ms), so that only status calls are counted below.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while store_opens_during(&home, || {
        std::thread::sleep(std::time::Duration::from_millis(300))
    }) > 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "keyd kept opening its store while idle"
        );
    }
    // Asked again, the daemon answers without opening (and decrypting) the store.
    let opens = store_opens_during(&home, || {
        for _ in 0..5 {
            status();
        }
    });
    assert_eq!(opens, 0, "a status call read the store");
    // Changed behind the daemon's back (keyctl without the daemon): the next answer is new.
    ok(keyctl(&home)
        .args(["rotate", "DB_PASSWORD", "--socket"])
        .arg(home.join("no-daemon.sock")));
    assert_eq!(version(&status(), "DB_PASSWORD"), 2);
}

#[test]
fn a_stack_whose_stored_policy_no_longer_parses_is_named_in_keyds_log_not_skipped_silently() {
    let tmp = TempDir::new("daemon-unparsable-policy");
    let policy = tmp.join("app.toml");
    std::fs::write(
        &policy,
        "[stack]\nname = \"app\"\n\n[secrets.SESSION_KEY]\nkind = \"token\"\nrotate = \"1d\"\n",
    )
    .unwrap();
    let home = tmp.join("home");
    ok(keyctl(&home)
        .args(["quickstart", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(tmp.join("out")));
    // A store whose policy this keyd reads differently from the one that stored it (an older
    // keyd accepted what this one refuses).
    let store = keyd::store::Home::new(&home);
    let lock = store.lock().unwrap();
    let mut data = lock.load().unwrap();
    data.stacks.get_mut("app").unwrap().policy_source =
        "[stack]\nname = \"app\"\n\n[secrets.SESSION_KEY]\nkind = \"tokn\"\n".into();
    lock.save(&mut data).unwrap();
    drop(lock);
    let out = keyd_tests::run(keyd(&home).arg("--once"));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("not scheduling \"app: ") || log.contains("not scheduling app: "),
        "keyd said nothing of the stack it does not schedule: {log}"
    );
}

#[test]
fn a_certificate_is_renewed_when_it_enters_its_renew_before_window_not_when_it_expires() {
    let (_tmp, home, out) = setup_with(
        "renew-before",
        "[stack]\nname = \"app\"\n\n[secrets.CERT]\nkind = \"tls\"\nkey = \"CERT_KEY\"\n\
         cn = \"db.example\"\ndays = 30\nrenew_before = \"10d\"\n",
    );
    let home = Home::new(home);
    let t0 = home.peek().unwrap().stacks["app"].secrets["CERT"]
        .current()
        .unwrap()
        .created;
    let first = std::fs::read_to_string(out.join("CERT")).unwrap();

    // Day 19: nothing is due; the next wake-up is 10 days before the 30-day certificate ends.
    let clock = TestClock::at(t0 + 19 * DAY);
    let (report, next) = run_due(&home, &clock, "test").unwrap();
    assert!(report.outcomes.is_empty(), "{report:?}");
    let next = next.expect("the renewal is scheduled");
    assert!(
        (t0 + 20 * DAY - 2..=t0 + 20 * DAY + 2).contains(&next),
        "next wake-up {next}, expected about {}",
        t0 + 20 * DAY
    );

    // Inside the window: a new certificate, delivered.
    clock.set(t0 + 20 * DAY + 5);
    let (report, _) = run_due(&home, &clock, "test").unwrap();
    assert_eq!(report.outcomes.len(), 1, "{report:?}");
    assert_eq!(report.outcomes[0].name, "CERT");
    assert_eq!(report.outcomes[0].to_version, 2);
    assert_ne!(std::fs::read_to_string(out.join("CERT")).unwrap(), first);
}

/// `keyctl check`'s line and exit code.
fn check(home: &Path) -> (Option<i32>, String) {
    let out = keyd_tests::run(keyctl(home).arg("check"));
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn keyctl_check_exits_as_a_monitoring_plugin_does_for_each_state() {
    let tmp = TempDir::new("check-states");
    // No store: unknown.
    let (code, line) = check(&tmp.join("none"));
    assert_eq!(
        (code, line.starts_with("KEYD UNKNOWN")),
        (Some(3), true),
        "{line}"
    );

    // A fresh stack: ok.
    let (_t, home, _out) = setup_with(
        "check-ok",
        "[stack]\nname = \"app\"\n\n[secrets.SESSION_KEY]\nkind = \"token\"\n",
    );
    assert_eq!(
        check(&home),
        (Some(0), "KEYD OK: 1 secrets, nothing owed\n".into())
    );
    // A keyd socket nobody answers on: critical.
    std::fs::write(home.join("keyd.sock"), "").unwrap();
    let (code, line) = check(&home);
    assert_eq!(code, Some(2), "{line}");
    assert!(line.contains("no keyd answers"), "{line}");
    std::fs::remove_file(home.join("keyd.sock")).unwrap();

    // A rekey hook that fails: warning.
    let (_t, home, _out) = setup_with(
        "check-rekey",
        "[stack]\nname = \"app\"\n\n[secrets.FERNET_KEY]\nkind = \"fernet\"\n\
         rekey = { command = [\"false\"], timeout = \"10s\" }\n",
    );
    let _ = keyd_tests::run(keyctl(&home).args(["rotate", "FERNET_KEY"]));
    let (code, line) = check(&home);
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.contains("app/FERNET_KEY: the rekey hook for v2 is owed"),
        "{line}"
    );

    // A rotation that failed at its target (a Redis nobody listens for): critical.
    let port = keyd_tests::servers::free_port();
    std::fs::write(tmp.join("admin"), "admin-password").unwrap();
    let policy = tmp.join("dead.toml");
    std::fs::write(
        &policy,
        format!(
            "[stack]\nname = \"dead\"\n\n[targets.cache]\ntype = \"redis\"\n\
             url = \"redis://127.0.0.1:{port}\"\nuser = \"default\"\npassword_file = \"{}\"\n\
             timeout = \"2s\"\n\n[secrets.REDIS_PASSWORD]\nkind = \"password\"\n\
             target = {{ name = \"cache\", user = \"app\", acl = \"~app:* +@all\", mode = \"acl\" }}\n",
            tmp.join("admin").display()
        ),
    )
    .unwrap();
    let home = tmp.join("dead-home");
    let _ = keyd_tests::run(keyctl(&home).args(["quickstart", "--policy"]).arg(&policy));
    let (code, line) = check(&home);
    assert_eq!(code, Some(2), "{line}");
    assert!(
        line.contains("dead/REDIS_PASSWORD: the rotation to v1 failed at its set step"),
        "{line}"
    );
}

#[test]
fn keyctl_check_warns_of_a_certificate_near_its_end_and_is_critical_once_it_expired() {
    let (_tmp, home, _out) = setup_with(
        "check-cert",
        "[stack]\nname = \"app\"\n\n[secrets.CERT]\nkind = \"tls\"\nkey = \"CERT_KEY\"\n\
         cn = \"db.example\"\ndays = 30\n",
    );
    let home = Home::new(home);
    let t0 = home.peek().unwrap().stacks["app"].secrets["CERT"]
        .current()
        .unwrap()
        .created;
    use keyd::ops::check::{Severity, check};
    assert_eq!(check(&home, t0 + DAY).severity, Severity::Ok);
    let near = check(&home, t0 + 20 * DAY);
    assert_eq!(near.severity, Severity::Warning, "{near:?}");
    assert!(
        near.findings
            .iter()
            .any(|f| f.what.starts_with("its certificate expires in")),
        "{near:?}"
    );
    let expired = check(&home, t0 + 31 * DAY);
    assert_eq!(expired.severity, Severity::Critical, "{expired:?}");
    assert!(expired.findings[0].what.contains("expired"), "{expired:?}");
}

/// keyd logs one line per rotation and retire it does, asked through its API or due on its
/// schedule: stack/name, what happened, the versions and who asked; never a value. keyctl says
/// when the daemon did the work.
#[test]
fn keyd_logs_each_rotation_and_retire_it_does_and_keyctl_says_it_went_through_keyd() {
    let (_tmp, home, _out) = setup_with(
        "logs",
        "[stack]\nname = \"app\"\n\n[secrets.HAND]\nkind = \"fernet\"\n\n[secrets.TICK]\nkind = \"token\"\nrotate = \"3s\"\ngrace = \"1s\"\n",
    );
    let daemon = Daemon::start(&home, None, &[]);
    let socket = daemon.socket.display().to_string();
    let rotated = String::from_utf8(ok(keyctl(&home).args(["rotate", "HAND"]))).unwrap();
    assert!(
        rotated.contains(&format!("(through keyd at {socket})")),
        "{rotated}"
    );
    let retired = ok(keyctl(&home).args(["retire", "HAND", "--json"]));
    let retired: serde_json::Value = serde_json::from_slice(&retired).unwrap();
    assert_eq!(retired["through_keyd"], socket.as_str(), "{retired}");
    let status = String::from_utf8(ok(keyctl(&home).arg("status"))).unwrap();
    assert!(
        status.contains(&format!("(from keyd at {socket})")),
        "{status}"
    );

    let uid = rustix::process::getuid().as_raw();
    let expected = [
        format!("keyd: app/HAND: rotated v1 -> v2 (keyd api uid={uid})"),
        format!("keyd: app/HAND: overlap ended at v2: retired version(s) [1] (keyd api uid={uid})"),
        "keyd: app/TICK: rotated v1 -> v2 (keyd schedule)".to_owned(),
    ];
    let mut logs = Vec::new();
    let all_there = eventually(std::time::Duration::from_secs(30), || {
        logs.extend(daemon.stderr.try_iter());
        expected.iter().all(|e| logs.contains(e))
    });
    assert!(
        all_there,
        "expected {expected:#?}\nin the log:\n{}",
        logs.join("\n")
    );

    // Names and versions only.
    let store = Home::new(&home).peek().unwrap();
    let log = logs.join("\n");
    for record in store.stacks["app"].secrets.values() {
        for v in &record.versions {
            let value =
                keyd::store::SecretRecord::version_value(v, keyd::policy::Part::Main).unwrap();
            assert!(!log.contains(value.expose()), "a value is in the log");
        }
    }
}
