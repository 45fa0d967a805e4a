//! Driving a stack whose passwords have targets, as the target tests do: a policy in a
//! temporary directory and keyctl's commands on it, a client that keeps logging in while a
//! rotation runs (counting failures), the check that exactly the live versions log in, and a
//! server that accepts connections and never answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::{TempDir, keyctl, ok, run};

/// A policy in a temporary directory, with keyctl's home and the files sink's output beside it.
pub struct Setup {
    /// The directory: `policy.toml`, `home/`, `out/`.
    pub tmp: TempDir,
}

impl Setup {
    /// Writes `policy` into a new directory tagged `tag`.
    pub fn new(tag: &str, policy: &str) -> Setup {
        let tmp = TempDir::new(tag);
        std::fs::write(tmp.join("policy.toml"), policy).unwrap();
        Setup { tmp }
    }
    /// keyctl's home.
    pub fn home(&self) -> std::path::PathBuf {
        self.tmp.join("home")
    }
    /// `keyctl quickstart` of the policy into `out/`.
    pub fn quickstart(&self) -> std::process::Output {
        run(keyctl(&self.home())
            .arg("quickstart")
            .arg("--policy")
            .arg(self.tmp.join("policy.toml"))
            .arg("--out")
            .arg(self.tmp.join("out")))
    }
    /// Quickstart that must succeed (its stderr is shown when it does not).
    pub fn quickstart_ok(&self) {
        let out = self.quickstart();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    /// The delivered file `name`.
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.tmp.join("out").join(name)).unwrap()
    }
    /// `keyctl rotate name`.
    pub fn rotate(&self, name: &str) -> std::process::Output {
        run(keyctl(&self.home()).args(["rotate", name]))
    }
    /// `keyctl rotate name`, stopped at `step` (`KEYD_PAUSE_AFTER`) and killed there with
    /// SIGKILL.
    pub fn rotate_killed_after(&self, name: &str, step: &str) {
        let mut child = keyctl(&self.home())
            .args(["rotate", name])
            .env("KEYD_PAUSE_AFTER", step)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stderr.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), format!("keyd: paused after {step}"));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    /// `keyctl retire name`, which must succeed.
    pub fn retire(&self, name: &str) {
        ok(keyctl(&self.home()).args(["retire", name]));
    }
}

/// Runs `attempts` logins in a thread, each reading the delivered credentials afresh, while
/// `during` runs; returns how many failed.
pub fn count_failures(
    attempts: usize,
    login: impl Fn() -> bool + Send + 'static,
    during: impl FnOnce(),
) -> usize {
    let started = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (s, st) = (started.clone(), stop.clone());
    let client = std::thread::spawn(move || {
        let mut failures = 0;
        for i in 0..attempts {
            if !login() {
                failures += 1;
            }
            s.store(i + 1, Ordering::SeqCst);
            if st.load(Ordering::SeqCst) && i > attempts / 2 {
                break;
            }
        }
        failures
    });
    while started.load(Ordering::SeqCst) < 10 {
        std::thread::yield_now();
    }
    during();
    // Keep logging in for a while after the rotation too.
    let after = started.load(Ordering::SeqCst) + 20;
    while started.load(Ordering::SeqCst) < after.min(attempts) && !client.is_finished() {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::SeqCst);
    client.join().unwrap()
}

/// Checks that exactly the versions the store calls live (not retired) log in, after each
/// step of `steps` (`rotate` or `retire`); `login(value, version)` tries one.
pub fn only_live_versions_log_in(
    s: &Setup,
    name: &str,
    steps: &[&str],
    login: impl Fn(&str) -> bool,
) {
    let mut done = Vec::new();
    for step in steps {
        match *step {
            "rotate" => assert!(s.rotate(name).status.success(), "rotate after {done:?}"),
            _ => s.retire(name),
        }
        done.push(*step);
        let history: serde_json::Value =
            serde_json::from_slice(&ok(keyctl(&s.home()).args(["history", name, "--json"])))
                .unwrap();
        for v in history["versions"].as_array().unwrap() {
            let number = v["version"].as_u64().unwrap().to_string();
            let value = ok(keyctl(&s.home()).args(["show", name, "--version", &number]));
            let live = v["retired"].is_null();
            assert_eq!(
                login(std::str::from_utf8(&value).unwrap()),
                live,
                "after {done:?}: version {number} (live: {live}) {} log in",
                if live { "cannot" } else { "can still" }
            );
        }
    }
}

/// A TCP listener on loopback that accepts connections and never answers (nor closes them).
pub fn silent_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

/// Runs `cmd`, failing the test when it has not finished within `limit`.
pub fn output_within(
    cmd: &mut std::process::Command,
    limit: std::time::Duration,
) -> std::process::Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} still ran after {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Quickstart of a policy whose target `silent` (of `target_type`, at a server that never
/// answers, `timeout = "1s"`) must accept DB_PASSWORD; returns keyctl status --json after it.
pub fn quickstart_against_a_silent_server(target_type: &str, secret_target: &str) -> String {
    let port = silent_server();
    let (user, path) = match target_type {
        "postgres" => ("admin@", "/postgres"),
        "mysql" => ("admin@", "/"),
        _ => ("", ""),
    };
    let s = Setup::new(
        &format!("silent-{target_type}"),
        &format!(
            "[stack]\nname = \"silent\"\n\n[targets.silent]\ntype = \"{target_type}\"\nurl = \"{target_type}://{user}127.0.0.1:{port}{path}\"\ntimeout = \"1s\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\ntarget = {{ name = \"silent\"{secret_target} }}\n"
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
    assert!(
        stderr.contains("a target did not accept DB_PASSWORD"),
        "{stderr}"
    );
    String::from_utf8(ok(keyctl(&s.home()).args(["status", "--json"]))).unwrap()
}
