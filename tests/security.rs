//! Findings of a security review, each reproduced by the test named after it: what an attacker
//! or an accident could do with keyd before the fix, and what keyd does now.

use std::path::Path;

use keyd::clock::Clock as _;
use std::process::Command;

use keyd_tests::{TempDir, TestClock, binary, keyctl, ok, run};

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
    quickstart_beside_a_sleeper_after(home, policy, "")
}

/// [`quickstart_beside_a_sleeper`], running the shell commands `prepare` first, with the
/// sleeper's pid in `$S`.
fn quickstart_beside_a_sleeper_after(
    home: &Path,
    policy: &Path,
    prepare: &str,
) -> (bool, String, bool) {
    let script = r#"sleep 30 & S=$!
eval "$PREPARE"
"$KEYCTL" --home "$HOME_DIR" quickstart --policy "$POLICY" 2>"$ERR"; RC=$?
sleep 0.2
if kill -0 $S 2>/dev/null; then echo "rc=$RC sleeper=alive"; kill $S; else echo "rc=$RC sleeper=killed"; fi"#;
    let err = home.with_extension("stderr");
    let out = run(Command::new("unshare")
        .args(["--fork", "--pid", "--mount-proc", "sh", "-c", script])
        .env("KEYCTL", binary("keyctl"))
        .env("HOME_DIR", home)
        .env("POLICY", policy)
        .env("ERR", &err)
        .env("PREPARE", prepare));
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
        let _ = std::fs::remove_dir_all(tmp.join("out")); // each run is a new stack
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

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A policy of literals `V0, V1, …` holding `values`, all delivered to an env file.
fn envfile_policy(tmp: &TempDir, file: &str, values: &[&str]) -> std::path::PathBuf {
    let mut text = format!(
        "[stack]\nname = \"env\"\n\n[sinks.envfile]\npath = \"{}\"\n",
        tmp.join("stack.env").display()
    );
    for (i, v) in values.iter().enumerate() {
        text.push_str(&format!(
            "\n[secrets.V{i}]\nkind = \"literal\"\nvalue = {}\n",
            toml_string(v)
        ));
    }
    let path = tmp.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn envfile_values_round_trip_through_docker_compose_and_python_dotenv_or_are_refused() {
    let tmp = TempDir::new("sec-envfile");
    // Each special character alone, first, last and inside a value, and the combinations
    // that broke out of single quotes.
    let mut candidates: Vec<String> = Vec::new();
    for c in ["\\", "'", "\"", "$", "#", " ", "=", "\n", "\t", "é"] {
        candidates.extend([c.into(), format!("a{c}"), format!("{c}a"), format!("a{c}b")]);
    }
    candidates.extend(
        [
            "x\\' B=evil",
            "${HOME}",
            "$HOME",
            "a #b",
            "  lead and trail  ",
            "plain-._~:/+=@%^,",
            "say \"hi\"",
        ]
        .map(String::from),
    );
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for (i, value) in candidates.iter().enumerate() {
        let policy = envfile_policy(&tmp, &format!("one{i}.toml"), &[value]);
        let out = run(keyctl(&tmp.join("home-check"))
            .args(["policy", "check"])
            .arg(&policy));
        if out.status.success() {
            accepted.push(value.as_str());
        } else {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("[sinks.envfile] cannot carry"),
                "{value:?} refused for another reason: {stderr}"
            );
            refused.push(value.as_str());
        }
    }
    // What cannot round-trip through both parsers is refused; what can is accepted.
    for must_refuse in ["a\\", "\\", "a'b", "${HOME}", "a\nb", "a\tb", "x\\' B=evil"] {
        assert!(refused.contains(&must_refuse), "{must_refuse:?} accepted");
    }
    for must_accept in [
        "a b",
        "a#b",
        "#",
        "a=b",
        "say \"hi\"",
        "é",
        "  lead and trail  ",
    ] {
        assert!(accepted.contains(&must_accept), "{must_accept:?} refused");
    }

    // Every accepted value, delivered in one file, reads back unchanged through the real
    // docker-compose (v1, which parses with python-dotenv) and through python-dotenv itself.
    let policy = envfile_policy(&tmp, "all.toml", &accepted);
    ok(keyctl(&tmp.join("home"))
        .args(["quickstart", "--policy"])
        .arg(&policy));
    let mut compose =
        String::from("version: \"3.7\"\nservices:\n  app:\n    image: busybox\n    environment:\n");
    for i in 0..accepted.len() {
        compose.push_str(&format!("      V{i}: ${{V{i}}}\n"));
    }
    std::fs::write(tmp.join("docker-compose.yml"), compose).unwrap();
    let config = ok(Command::new("docker-compose")
        .arg("--project-directory")
        .arg(tmp.path())
        .arg("-f")
        .arg(tmp.join("docker-compose.yml"))
        .arg("--env-file")
        .arg(tmp.join("stack.env"))
        .arg("config"));
    let read_back = |script: &str, stdin: &[u8]| -> serde_json::Value {
        let out = keyd_tests::pipe("/usr/bin/python3", &["-c", script], stdin);
        serde_json::from_slice(&out).unwrap()
    };
    let from_compose = read_back(
        "import json, sys, yaml; print(json.dumps(yaml.safe_load(sys.stdin)['services']['app']['environment']))",
        &config,
    );
    let from_dotenv = read_back(
        &format!(
            "import json, dotenv; print(json.dumps(dict(dotenv.dotenv_values({:?}))))",
            tmp.join("stack.env").display().to_string()
        ),
        b"",
    );
    for (i, value) in accepted.iter().enumerate() {
        let key = format!("V{i}");
        assert_eq!(
            from_compose[&key], **value,
            "docker-compose read {key} differently"
        );
        assert_eq!(
            from_dotenv[&key], **value,
            "python-dotenv read {key} differently"
        );
    }
}

#[test]
fn a_password_alphabet_the_envfile_cannot_carry_is_refused_by_policy_check() {
    let tmp = TempDir::new("sec-alphabet");
    let path = tmp.join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[stack]\nname = \"a\"\n\n[sinks.envfile]\npath = \"{}\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\nalphabet = \"ascii-printable\"\n",
            tmp.join("a.env").display()
        ),
    )
    .unwrap();
    let out = run(keyctl(&tmp.join("home"))
        .args(["policy", "check"])
        .arg(&path));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:7:10: \"DB_PASSWORD\" can hold",
            path.display()
        )),
        "{stderr}"
    );
}

#[test]
fn one_sink_that_cannot_deliver_does_not_stop_the_others() {
    let tmp = TempDir::new("sec-sinks");
    // The files sink's directory is taken by a regular file: it cannot deliver.
    std::fs::write(tmp.join("out"), "not a directory").unwrap();
    let path = policy(
        &tmp,
        &format!(
            "\n[sinks.envfile]\npath = \"{}\"",
            tmp.join("a.env").display()
        ),
    );
    let out = run(keyctl(&tmp.join("home"))
        .args(["quickstart", "--policy"])
        .arg(&path));
    assert!(
        !out.status.success(),
        "the files sink's failure is reported"
    );
    let env = std::fs::read_to_string(tmp.join("a.env")).expect("the env file was delivered");
    assert!(env.contains("KEY="), "{env}");
    // Fixed, the next run delivers the same value to the files sink.
    std::fs::remove_file(tmp.join("out")).unwrap();
    ok(keyctl(&tmp.join("home"))
        .args(["apply", "--policy"])
        .arg(&path));
    let key = std::fs::read_to_string(tmp.join("out/KEY")).unwrap();
    assert!(env.contains(&format!("KEY={key}")), "{env} vs {key}");
}

/// Quickstart of the one-secret policy into `tmp/out`, returning the delivered key.
fn quickstart_key(tmp: &TempDir, home: &Path, extra: &[&str]) -> std::process::Output {
    let path = policy(tmp, "");
    run(keyctl(home)
        .args(["quickstart", "--policy"])
        .arg(&path)
        .args(extra))
}

#[test]
fn a_deleted_store_is_not_silently_replaced_by_new_values() {
    let tmp = TempDir::new("sec-lost");
    let home = tmp.join("home");
    assert!(quickstart_key(&tmp, &home, &[]).status.success());
    let key = std::fs::read(tmp.join("out/KEY")).unwrap();
    ok(keyctl(&home).args(["rotate", "KEY"])); // the audit log now holds this home's history
    let key = std::fs::read(tmp.join("out/KEY")).unwrap_or(key);
    std::fs::remove_file(home.join("store.age")).unwrap();
    let out = quickstart_key(&tmp, &home, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("store.age is missing") && stderr.contains("--reinit"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(tmp.join("out/KEY")).unwrap(),
        key,
        "the delivered key was replaced"
    );
    assert!(!home.join("store.age").exists());
    // Starting over is possible, on purpose.
    let out = quickstart_key(&tmp, &home, &["--reinit"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(std::fs::read(tmp.join("out/KEY")).unwrap(), key);
}

#[test]
fn a_deleted_home_does_not_replace_the_files_it_delivered() {
    let tmp = TempDir::new("sec-lost-home");
    assert!(
        quickstart_key(&tmp, &tmp.join("home"), &[])
            .status
            .success()
    );
    let key = std::fs::read(tmp.join("out/KEY")).unwrap();
    std::fs::remove_dir_all(tmp.join("home")).unwrap();
    let out = quickstart_key(&tmp, &tmp.join("home"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("outputs already exist")
            && stderr.contains(&tmp.join("out/KEY").display().to_string()),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(tmp.join("out/KEY")).unwrap(),
        key,
        "the delivered key was replaced"
    );
}

#[test]
fn an_older_store_put_back_in_place_is_refused_unless_accepted() {
    let tmp = TempDir::new("sec-rollback");
    let home = tmp.join("home");
    assert!(quickstart_key(&tmp, &home, &[]).status.success());
    let old_store = std::fs::read(home.join("store.age")).unwrap();
    ok(keyctl(&home).args(["rotate", "KEY"]));
    std::fs::write(home.join("store.age"), &old_store).unwrap();
    let out = run(keyctl(&home).args(["show", "KEY"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("older copy was put back") && stderr.contains("--accept-rollback"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
    // On purpose: accepted once, then used as usual.
    let out = quickstart_key(&tmp, &home, &["--accept-rollback"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(keyctl(&home).args(["show", "KEY"]));
}

#[test]
fn an_identity_readable_by_other_users_is_refused_with_the_chmod_to_run() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = TempDir::new("sec-identity");
    let home = tmp.join("home");
    assert!(quickstart_key(&tmp, &home, &[]).status.success());
    let identity = home.join("identity.txt");
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = run(keyctl(&home).args(["show", "KEY"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "mode {mode:o}: {stderr}");
        assert!(
            stderr.contains(&format!("chmod 600 {}", identity.display())),
            "{stderr}"
        );
        assert!(out.stdout.is_empty(), "a value was shown");
    }
    std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(keyctl(&home).args(["show", "KEY"]));
}

#[test]
fn keyd_never_removes_a_file_that_is_not_a_socket_at_its_socket_path() {
    let tmp = TempDir::new("sec-socket");
    let home = tmp.join("home");
    assert!(quickstart_key(&tmp, &home, &[]).status.success());
    let precious = tmp.join("precious.txt");
    std::fs::write(&precious, "not a socket").unwrap();
    let mut child = keyd_tests::keyd(&home)
        .arg("--socket")
        .arg(&precious)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("keyd started on a path that is not a socket");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "not a socket");
}

#[test]
fn a_refused_request_line_cannot_forge_lines_in_the_daemon_log() {
    use std::io::BufRead as _;
    let tmp = TempDir::new("sec-loginject");
    let home = tmp.join("home");
    assert!(quickstart_key(&tmp, &home, &[]).status.success());
    // A socket other users can reach, so a uid keyd does not allow gets as far as the log.
    let dir = tmp.join("sock");
    std::fs::create_dir(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.join("keyd.sock");
    let mut daemon = keyd_tests::keyd(&home)
        .arg("--socket")
        .arg(&socket)
        .args(["--socket-mode", "0666"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = std::io::BufReader::new(daemon.stderr.take().unwrap());
    let mut line = String::new();
    log.read_line(&mut line).unwrap();
    assert!(line.starts_with("keyd: ready"), "{line}");
    // As nobody: a request line carrying a carriage return and a terminal escape.
    let script = "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b'GET /v1/status\\rkeyd:forged\\x1b[2J HTTP/1.1\\r\\nHost: k\\r\\n\\r\\n'); s.recv(4096)";
    let client = run(Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", script])
        .arg(&socket));
    let _ = daemon.kill();
    let _ = daemon.wait();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut log, &mut rest).unwrap();
    assert!(
        client.status.success(),
        "{}",
        String::from_utf8_lossy(&client.stderr)
    );
    assert!(
        rest.contains("refused"),
        "the refusal was not logged: {rest:?}"
    );
    assert!(
        !rest.contains('\r') && !rest.contains('\x1b'),
        "raw control characters reached the log: {rest:?}"
    );
}

#[test]
fn a_fernet_rotation_that_would_push_out_an_unretired_key_is_refused_unless_forced() {
    let tmp = TempDir::new("sec-fernet-keep");
    let home = tmp.join("home");
    let path = tmp.join("f.toml");
    std::fs::write(
        &path,
        format!(
            "[stack]\nname = \"f\"\n\n[sinks.files]\ndir = \"{}\"\n\n[secrets.FERNET_KEY]\nkind = \"fernet\"\nkeep = 2\n",
            tmp.join("out").display()
        ),
    )
    .unwrap();
    ok(keyctl(&home).args(["quickstart", "--policy"]).arg(&path));
    let first = std::fs::read_to_string(tmp.join("out/FERNET_KEY")).unwrap();
    ok(keyctl(&home).args(["rotate", "FERNET_KEY"]));
    let list = std::fs::read_to_string(tmp.join("out/FERNET_KEY")).unwrap();
    assert!(list.ends_with(&first), "overlap: {list:?}");
    // The first key is still live: another rotation would drop it from the list.
    let out = run(keyctl(&home).args(["rotate", "FERNET_KEY"]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rotated over an unretired key");
    assert!(
        stderr.contains("push out v1") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(tmp.join("out/FERNET_KEY")).unwrap(),
        list
    );
    // After retire, or with --force, rotation goes on.
    ok(keyctl(&home).args(["retire", "FERNET_KEY"]));
    ok(keyctl(&home).args(["rotate", "FERNET_KEY"]));
    ok(keyctl(&home).args(["rotate", "FERNET_KEY", "--force"]));
}

#[test]
fn a_reader_racing_a_store_write_never_mistakes_it_for_a_rollback() {
    let tmp = TempDir::new("sec-gen-race");
    let home = keyd::store::Home::new(tmp.join("home"));
    home.init().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (home, stop) = (home.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Err(e) = home.peek() {
                    return Err(format!("after {reads} reads: {e}"));
                }
                reads += 1;
            }
            Ok(reads)
        })
    };
    for _ in 0..200 {
        let lock = home.lock().unwrap();
        let mut data = lock.load().unwrap();
        lock.save(&mut data).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = reader.join().unwrap().unwrap();
    assert!(reads > 0);
}

#[test]
fn one_secrets_error_in_a_scheduled_pass_does_not_stop_the_others() {
    let redis = keyd_tests::servers::Redis::start("sched-error", true);
    let tmp = TempDir::new("sec-sched-error");
    let admin = tmp.join("redis-admin");
    std::fs::write(&admin, &redis.admin_password).unwrap();
    let path = tmp.join("p.toml");
    std::fs::write(
        &path,
        format!(
            "[stack]\nname = \"s\"\n\n[sinks.files]\ndir = \"{out}\"\n\n[targets.cache]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{port}\"\nuser = \"default\"\npassword_file = \"{admin}\"\n\n\
             [secrets.A_REDIS]\nkind = \"password\"\nrotate = \"30d\"\ntarget = {{ name = \"cache\", user = \"app\", acl = \"~app:* +@all\", mode = \"acl\" }}\n\n\
             [secrets.B_TOKEN]\nkind = \"token\"\nrotate = \"30d\"\n",
            out = tmp.join("out").display(),
            port = redis.port,
            admin = admin.display()
        ),
    )
    .unwrap();
    ok(keyctl(&tmp.join("home"))
        .args(["quickstart", "--policy"])
        .arg(&path));
    ok(keyctl(&tmp.join("home")).args(["rotate", "A_REDIS"])); // an overlap to retire
    // A's target can no longer be reached (its admin password file is gone): A's retire fails
    // before anything is saved; B's rotation still happens.
    std::fs::remove_file(&admin).unwrap();
    let home = keyd::store::Home::new(tmp.join("home"));
    let clock = TestClock::at(keyd::clock::unix_now() + 31 * 86_400);
    let (report, next) = keyd::ops::run_due(&home, &clock, "test").expect("the pass went on");
    let result = |name: &str| {
        report
            .outcomes
            .iter()
            .find(|o| o.name == name)
            .map(|o| (o.result, o.message.clone()))
    };
    let (a, message) = result("A_REDIS").expect("A reported");
    assert_eq!(a, keyd::rotation::OutcomeKind::Failed);
    assert!(message.unwrap().contains("password_file"));
    assert_eq!(
        result("B_TOKEN").map(|r| r.0),
        Some(keyd::rotation::OutcomeKind::Rotated)
    );
    assert!(
        next.unwrap() >= clock.now() + 60,
        "retried later, not at once"
    );
}

#[test]
fn a_failed_reload_hook_is_retried_with_backoff_and_shown_in_status() {
    let tmp = TempDir::new("sec-reload-retry");
    let home = tmp.join("home");
    let (fail, reloaded) = (tmp.join("fail"), tmp.join("reloaded"));
    let script = tmp.join("reload.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ -e {} ] && exit 7\ntouch {}\n",
            fail.display(),
            reloaded.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = policy(
        &tmp,
        &format!(r#"reload = {{ command = ["{}"] }}"#, script.display()),
    );
    std::fs::write(&fail, "").unwrap();
    // The files are delivered; the failed reload is reported and remembered.
    let out = run(keyctl(&home).args(["quickstart", "--policy"]).arg(&path));
    assert!(!out.status.success());
    assert!(tmp.join("out/KEY").exists());
    let owed = |home: &Path| {
        let status: serde_json::Value =
            serde_json::from_slice(&ok(keyctl(home).args(["status", "--json"]))).unwrap();
        status[0]["reload_owed"].clone()
    };
    let first = owed(&home);
    assert_eq!(first["attempts"], 1, "{first}");
    assert!(
        first["last_error"].as_str().unwrap().contains("exited"),
        "{first}"
    );
    // A pass that changes nothing still runs the owed hook (and counts the failure).
    assert!(
        !run(keyctl(&home).args(["apply", "--policy"]).arg(&path))
            .status
            .success()
    );
    let second = owed(&home);
    assert_eq!(second["attempts"], 2, "{second}");
    assert!(second["retry_at"].as_i64().unwrap() > first["retry_at"].as_i64().unwrap());
    // The daemon's pass retries once the backoff has passed; success clears the debt.
    std::fs::remove_file(&fail).unwrap();
    let store = keyd::store::Home::new(&home);
    let clock = TestClock::at(second["retry_at"].as_i64().unwrap());
    keyd::ops::run_due(&store, &clock, "test").unwrap();
    assert!(reloaded.exists(), "the hook was not run again");
    assert!(owed(&home).is_null());
}

#[test]
fn a_files_mode_changed_in_the_policy_is_applied_to_files_already_delivered() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = TempDir::new("sec-mode-change");
    let home = tmp.join("home");
    assert!(quickstart_key(&tmp, &home, &[]).status.success());
    let mode = || {
        std::fs::metadata(tmp.join("out/KEY"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(), 0o400);
    let key = std::fs::read(tmp.join("out/KEY")).unwrap();
    let path = policy(&tmp, "mode = \"0440\"");
    ok(keyctl(&home).args(["apply", "--policy"]).arg(&path));
    assert_eq!(mode(), 0o440, "the policy's new mode was not applied");
    assert_eq!(
        std::fs::read(tmp.join("out/KEY")).unwrap(),
        key,
        "the value changed"
    );
}

#[test]
fn a_reload_pid_file_owned_by_another_user_or_reached_through_a_link_signals_nothing() {
    let tmp = TempDir::new("sec-pid-owner");
    let pid_file = tmp.join("app.pid");
    let policy = policy(
        &tmp,
        &format!(
            r#"reload = {{ signal = "TERM", pid_file = "{}" }}"#,
            pid_file.display()
        ),
    );
    // Whoever can write the pid file picks the process keyd signals: a file of another uid
    // naming a live process, and a link to a file of root's naming one, are both refused.
    let real = tmp.join("real.pid");
    let cases = [
        format!("echo $S > '{0}'; chown 65534 '{0}'", pid_file.display()),
        format!(
            "echo $S > '{}'; ln -s '{}' '{}'",
            real.display(),
            real.display(),
            pid_file.display()
        ),
    ];
    for (i, prepare) in cases.iter().enumerate() {
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_dir_all(tmp.join("out"));
        let home = tmp.join(format!("home{i}"));
        let (success, stderr, sleeper_alive) =
            quickstart_beside_a_sleeper_after(&home, &policy, prepare);
        assert!(sleeper_alive, "{prepare}: the sleeper was signalled");
        assert!(!success, "{prepare}: accepted");
        assert!(
            stderr.contains(&pid_file.display().to_string()),
            "{prepare}: the error does not name the file: {stderr}"
        );
    }
}

#[test]
fn a_fifo_at_the_env_file_path_does_not_hang_apply() {
    let tmp = TempDir::new("sec-env-fifo");
    let home = tmp.join("home");
    let policy = envfile_policy(&tmp, "p.toml", &["one", "two"]);
    ok(keyctl(&home).arg("quickstart").arg("--policy").arg(&policy));
    let env = tmp.join("stack.env");
    std::fs::remove_file(&env).unwrap();
    ok(Command::new("mkfifo").arg(&env));
    let out = keyd_tests::run_within(
        keyctl(&home).arg("apply").arg("--policy").arg(&policy),
        std::time::Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta = std::fs::symlink_metadata(&env).unwrap();
    assert!(meta.is_file(), "the FIFO was left in place");
    let text = std::fs::read_to_string(&env).unwrap();
    assert!(text.contains("V0=one\nV1=two\n"), "{text}");
}

#[test]
fn a_link_at_the_env_file_path_is_replaced_not_followed() {
    let tmp = TempDir::new("sec-env-link");
    let home = tmp.join("home");
    let policy = envfile_policy(&tmp, "p.toml", &["one"]);
    ok(keyctl(&home).arg("quickstart").arg("--policy").arg(&policy));
    let env = tmp.join("stack.env");
    // Elsewhere, a file holding just what keyd would write, with the mode it would give.
    let elsewhere = tmp.join("elsewhere.env");
    std::fs::rename(&env, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &env).unwrap();
    ok(keyctl(&home).arg("apply").arg("--policy").arg(&policy));
    assert!(
        std::fs::symlink_metadata(&env).unwrap().is_file(),
        "the link at the env file path was read through and kept"
    );
}

/// A policy of one password, `DB_PASSWORD`, for imports.
fn import_policy(tmp: &TempDir) -> std::path::PathBuf {
    let path = tmp.join("import.toml");
    std::fs::write(
        &path,
        "[stack]\nname = \"imp\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\n",
    )
    .unwrap();
    path
}

const OUTSIDE_VALUE: &str = "a-value-kept-outside-the-import-directory-1234";

#[test]
fn an_import_directory_link_to_a_file_outside_it_is_not_followed() {
    let tmp = TempDir::new("sec-import-link");
    let home = tmp.join("home");
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    // As `ln -s /etc/shadow DIR/DB_PASSWORD` did: a file the importer can read, elsewhere.
    std::fs::write(tmp.join("shadow"), OUTSIDE_VALUE).unwrap();
    std::os::unix::fs::symlink(tmp.join("shadow"), src.join("DB_PASSWORD")).unwrap();
    let out = run(keyctl(&home)
        .args(["import", "--policy"])
        .arg(import_policy(&tmp))
        .arg(&src));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the link out was followed");
    assert!(
        stderr.contains("DB_PASSWORD") && stderr.contains("outside"),
        "{stderr}"
    );
    let shown = run(keyctl(&home).args(["show", "DB_PASSWORD"]));
    assert!(!String::from_utf8_lossy(&shown.stdout).contains(OUTSIDE_VALUE));
}

#[test]
fn an_import_file_owned_by_another_user_is_refused() {
    let tmp = TempDir::new("sec-import-owner");
    let home = tmp.join("home");
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("DB_PASSWORD"), OUTSIDE_VALUE).unwrap();
    ok(Command::new("chown")
        .arg("65534")
        .arg(src.join("DB_PASSWORD")));
    let out = run(keyctl(&home)
        .args(["import", "--policy"])
        .arg(import_policy(&tmp))
        .arg(&src));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a file of uid 65534 was imported");
    assert!(
        stderr.contains("DB_PASSWORD") && stderr.contains("65534"),
        "{stderr}"
    );
}

#[test]
fn a_kubernetes_style_secret_directory_is_imported_through_its_links() {
    let tmp = TempDir::new("sec-import-k8s");
    let home = tmp.join("home");
    let src = tmp.join("src");
    // DB_PASSWORD -> ..data/DB_PASSWORD, ..data -> ..2026_01_01_00_00_00.1 (relative, inside).
    let generation = src.join("..2026_01_01_00_00_00.1");
    std::fs::create_dir_all(&generation).unwrap();
    std::fs::write(generation.join("DB_PASSWORD"), OUTSIDE_VALUE).unwrap();
    std::os::unix::fs::symlink("..2026_01_01_00_00_00.1", src.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/DB_PASSWORD", src.join("DB_PASSWORD")).unwrap();
    ok(keyctl(&home)
        .args(["import", "--policy"])
        .arg(import_policy(&tmp))
        .arg(&src));
    let shown = ok(keyctl(&home).args(["show", "DB_PASSWORD"]));
    assert!(String::from_utf8_lossy(&shown).contains(OUTSIDE_VALUE));
}

#[test]
fn a_fifo_named_as_an_import_source_is_refused_not_waited_on() {
    let tmp = TempDir::new("sec-import-fifo");
    let home = tmp.join("home");
    for (from, name) in [("env", "values.env"), ("compose", "docker-compose.yml")] {
        let fifo = tmp.join(name);
        ok(Command::new("mkfifo").arg(&fifo));
        let out = keyd_tests::run_within(
            keyctl(&home)
                .args(["import", "--from", from, "--policy"])
                .arg(import_policy(&tmp))
                .arg(&fifo),
            std::time::Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--from {from}: {stderr}");
        assert!(
            stderr.contains(name) && stderr.contains("not a regular file"),
            "--from {from}: {stderr}"
        );
    }
}
