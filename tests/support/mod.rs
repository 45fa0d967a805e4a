//! Shared helpers for the workspace integration tests: locating the built binaries, temporary
//! directories, and running the independent implementations (openssl, Python's cryptography)
//! that keyd's output is checked against.

pub mod compose;
pub mod docker;
pub mod mariadb;
pub mod pgbouncer;
pub mod rabbitmq;
pub mod servers;
pub mod target_stack;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The binary the tests run for `name` (`keyctl` or `keyd`): the test crate's own build of it
/// (`keyctl-under-test`, `keyd-under-test`, the same `main.rs` with keyd's `test-hooks`
/// feature), which cargo builds before any integration test of this crate, so it is never
/// stale and never needs a separate `cargo build`. Release builds of the real binaries leave
/// the hooks out.
///
/// # Panics
/// For a name that is not one of the two binaries.
pub fn binary(name: &str) -> PathBuf {
    assert!(
        name == "keyctl" || name == "keyd",
        "no binary {name} under test"
    );
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    dir.join(format!("{name}-under-test"))
}

/// `keyd` with `--home home`.
pub fn keyd(home: &Path) -> Command {
    let mut cmd = Command::new(binary("keyd"));
    cmd.arg("--home")
        .arg(home)
        .env_remove("KEYD_HOME")
        .env_remove("KEYD_SOCKET")
        .env_remove("KEYD_STORE");
    cmd
}

/// `keyctl` with `--home home`.
pub fn keyctl(home: &Path) -> Command {
    let mut cmd = Command::new(binary("keyctl"));
    cmd.arg("--home")
        .arg(home)
        .env_remove("KEYD_HOME")
        .env_remove("KEYD_SOCKET")
        .env_remove("KEYD_STORE");
    cmd
}

/// Runs a command, returning its output; panics if it could not start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `argv` on a pseudo-terminal (Python's `pty`), answering each prompt that ends the
/// output so far with `prompt` by the next of `answers` (a line each); returns the exit code
/// and everything the terminal showed. keyd's variables are removed from its environment.
pub fn on_terminal(argv: &[&str], answers: &[&str], prompt: &str) -> (i32, String) {
    const SCRIPT: &str = r#"
import os, pty, sys
prompt = sys.argv[1].encode()
answers = [a.encode() + b"\n" for a in sys.argv[2].split(",") if a]
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[3], sys.argv[3:])
out = b""
while True:
    try:
        chunk = os.read(fd, 4096)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
    if out.rstrip().endswith(prompt) and answers:
        os.write(fd, answers.pop(0))
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let out = run_within(
        Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(prompt)
            .arg(answers.join(","))
            .args(argv)
            .env_remove("KEYD_HOME")
            .env_remove("KEYD_SOCKET")
            .env_remove("KEYD_STORE")
            .env_remove("KEYD_PASSPHRASE_FILE"),
        std::time::Duration::from_secs(60),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Runs a command, killing it when it has not finished within `limit`: a test of something
/// that could block forever (a FIFO opened for reading) fails instead of hanging the suite.
///
/// # Panics
/// When the command cannot start, or had to be killed.
pub fn run_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let started = std::time::Instant::now();
    while child.try_wait().expect("waiting for the child").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}: killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
        .wait_with_output()
        .expect("collecting the child's output")
}

/// `keyctl --home HOME quickstart --policy POLICY --out OUT`, which must succeed; its stdout.
pub fn quickstart(home: &Path, policy: &Path, out: &Path) -> String {
    let stdout = ok(keyctl(home)
        .arg("quickstart")
        .arg("--policy")
        .arg(policy)
        .arg("--out")
        .arg(out));
    String::from_utf8(stdout).unwrap()
}

/// Runs a command that must succeed; returns stdout.
pub fn ok(cmd: &mut Command) -> Vec<u8> {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs `program args…` with `stdin`, and returns stdout; panics with stderr on failure.
pub fn pipe(program: &str, args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Runs a Python 3 script that needs the `cryptography` package; `args` go to `sys.argv[1:]`.
///
/// # Panics
/// When Python or `cryptography` is missing (`.ci/run` installs them): a test that cannot
/// check against the independent implementation fails rather than passing unchecked.
pub fn python(script: &str, args: &[&str]) -> String {
    let out = run(Command::new("python3").arg("-c").arg(script).args(args));
    assert!(
        out.status.success(),
        "python3 failed (is `cryptography` installed? `.ci/run` installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new, empty directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "keyd-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The workspace root (for `policies/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Every regular file under `dir` with its bytes and mode, sorted by path: a snapshot to
/// compare before and after an operation that must change nothing.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                out.push((
                    p.clone(),
                    meta.permissions().mode() & 0o7777,
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// A clock a test sets by hand, for driving the scheduler (`keyd::ops::run_due`) through days
/// without sleeping.
pub struct TestClock(std::sync::atomic::AtomicI64);

impl TestClock {
    /// A clock reading `t` (Unix seconds).
    pub fn at(t: i64) -> TestClock {
        TestClock(std::sync::atomic::AtomicI64::new(t))
    }

    /// Sets the time to `t`.
    pub fn set(&self, t: i64) {
        self.0.store(t, std::sync::atomic::Ordering::SeqCst);
    }

    /// Moves the time on by `seconds`.
    pub fn advance(&self, seconds: i64) {
        self.0
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }
}

impl keyd::clock::Clock for TestClock {
    fn now(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Reads one HTTP/1.1 answer whose body has a Content-Length (the servers under test keep
/// connections alive, so reading to the end would wait): its status line and its body.
pub fn read_response(reader: &mut impl std::io::BufRead) -> (String, Vec<u8>) {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    (status_line, body)
}

/// One HTTP/1.1 request on a new connection to the unix socket `socket` (the API or the
/// plugin protocol, spoken as Docker does); returns status, content type and body.
pub fn http_exchange(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: plugin\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    std::io::Write::write_all(&mut s, request.as_bytes()).unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut s, &mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// The body of a plugin `GetSecret` request with the fields swarmkit sends, for secret
/// `secret` carrying `secret_labels`, asked for by service `web` of stack `app`.
pub fn get_secret_request(secret: &str, secret_labels: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "SecretName": secret,
        "SecretLabels": secret_labels,
        "ServiceID": "svcid",
        "ServiceName": "web",
        "ServiceLabels": {"com.docker.stack.namespace": "app"},
        "TaskID": "taskid",
        "TaskName": "web.1.taskid",
        "TaskImage": "consumer:latest",
        "NodeID": "nodeid",
        "ServiceEndpointSpec": {"Mode": 1},
    })
}
