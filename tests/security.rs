//! Findings of a security review, each reproduced by the test named after it: what an attacker
//! or an accident could do with keyd before the fix, and what keyd does now.

use std::path::Path;
use std::process::Command;

use keyd_tests::{TempDir, binary, keyctl, ok, run};

/// A one-secret policy delivering to `out`, with a files sink `extra` line (e.g. a reload hook).
fn policy(tmp: &TempDir, extra: &str) -> std::path::PathBuf {
    let path = tmp.join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[stack]\nname = \"sec\"\n\n[sinks.files]\ndir = \"{}\"\n{extra}\n\n[secrets.KEY]\nkind = \"fernet\"\n",
            tmp.join("out").display()
        ),
    )
    .unwrap();
    path
}

/// Runs `keyctl quickstart` inside a new PID namespace next to a `sleep` started in the same
/// process group, so that a signal sent to "every process" or to "my process group" can reach
/// nothing outside the test. Returns keyctl's exit success, its stderr, and whether the
/// sleeper survived.
fn quickstart_beside_a_sleeper(home: &Path, policy: &Path) -> (bool, String, bool) {
    let script = r#"sleep 30 & S=$!
"$KEYCTL" --home "$HOME_DIR" quickstart --policy "$POLICY" 2>"$ERR"; RC=$?
sleep 0.2
if kill -0 $S 2>/dev/null; then echo "rc=$RC sleeper=alive"; kill $S; else echo "rc=$RC sleeper=killed"; fi"#;
    let err = home.with_extension("stderr");
    let out = run(Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc", "sh", "-c", script])
        .env("KEYCTL", binary("keyctl"))
        .env("HOME_DIR", home)
        .env("POLICY", policy)
        .env("ERR", &err));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains("rc="),
        "unshare (util-linux, run as root) is needed to sandbox this test: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    (
        text.contains("rc=0 "),
        stderr,
        text.contains("sleeper=alive"),
    )
}

#[test]
fn a_reload_pid_file_holding_minus_one_zero_or_a_group_signals_no_other_process() {
    let tmp = TempDir::new("sec-pid");
    let pid_file = tmp.join("app.pid");
    let policy = policy(
        &tmp,
        &format!(
            r#"reload = {{ signal = "TERM", pid_file = "{}" }}"#,
            pid_file.display()
        ),
    );
    // -1: every process keyd may signal; 0 and negative numbers: process groups; 1: init; a
    // pid no process has: a stale file. Each is refused with the file named, and no one is hit.
    for (i, text) in ["-1", "0", "-2", "1", "4000000", "12abc", ""]
        .into_iter()
        .enumerate()
    {
        std::fs::write(&pid_file, format!("{text}\n")).unwrap();
        let home = tmp.join(format!("home{i}"));
        let (success, stderr, sleeper_alive) = quickstart_beside_a_sleeper(&home, &policy);
        assert!(sleeper_alive, "pid file {text:?} signalled another process");
        assert!(!success, "pid file {text:?} accepted");
        assert!(
            stderr.contains(&pid_file.display().to_string()),
            "pid file {text:?}: the error does not name the file: {stderr}"
        );
    }
}
