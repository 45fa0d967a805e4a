//! Re-key before retire: a rotation runs the secret's `rekey` command (values in its
//! environment, never in argv), and retire waits until that command succeeded. Data encrypted
//! with the old Fernet key is checked with Python's cryptography, as Airflow's
//! `rotate-fernet-key` would leave it.

use std::process::Command;

use keyd_tests::{TempDir, TestClock, keyctl, ok, python, run};

/// The re-encryption a consumer does (Airflow's `rotate-fernet-key`): every token rewritten
/// with the first key of the list in `FERNET_KEY`.
const REKEY_PY: &str = r#"import os
from cryptography.fernet import Fernet, MultiFernet
keys = os.environ["FERNET_KEY"].split(",")
assert len(keys) == 2, "the hook sees the overlap list"
path = os.path.join(os.environ["REKEY_DIR"], "token")
with open(path, "rb") as f:
    token = f.read()
with open(path, "wb") as f:
    f.write(MultiFernet([Fernet(k) for k in keys]).rotate(token))
"#;

#[test]
fn retire_waits_for_the_rekey_hook_so_data_encrypted_with_the_old_key_stays_readable() {
    let tmp = TempDir::new("rekey");
    let home = tmp.join("home");
    std::fs::write(tmp.join("rekey.py"), REKEY_PY).unwrap();
    std::fs::write(
        tmp.join("rekey.sh"),
        "#!/bin/sh\n[ -e \"$REKEY_DIR/fail\" ] && { echo refused >&2; exit 3; }\nexec python3 \"$REKEY_DIR/rekey.py\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(tmp.join("rekey.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = tmp.join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "[stack]\nname = \"air\"\n\n[sinks.files]\ndir = \"{}\"\n\n[secrets.FERNET_KEY]\nkind = \"fernet\"\nkeep = 2\nrekey = {{ command = [\"{}\"], timeout = \"1m\" }}\n",
            tmp.join("out").display(),
            tmp.join("rekey.sh").display()
        ),
    )
    .unwrap();
    let keyctl = || {
        let mut c = keyctl(&home);
        c.env("REKEY_DIR", tmp.path());
        c
    };
    ok(keyctl().args(["quickstart", "--policy"]).arg(&policy));
    let read_key = || std::fs::read_to_string(tmp.join("out/FERNET_KEY")).unwrap();
    // A row encrypted with the first key.
    let encrypt = "import sys\nfrom cryptography.fernet import Fernet\nopen(sys.argv[2], 'wb').write(Fernet(sys.argv[1]).encrypt(b'row'))";
    let token = tmp.join("token");
    python(encrypt, &[&read_key(), &token.display().to_string()]);
    let decrypts = |keys: &str| {
        let script = "import sys\nfrom cryptography.fernet import Fernet, MultiFernet\nprint(MultiFernet([Fernet(k) for k in sys.argv[1].split(',')]).decrypt(open(sys.argv[2], 'rb').read()).decode())";
        run(Command::new("python3")
            .args(["-c", script, keys])
            .arg(&token))
        .status
        .success()
    };

    // The hook fails: the new key is in place, keyctl says the hook failed (exit 1), the debt
    // shows in status, and retire waits.
    std::fs::write(tmp.join("fail"), "").unwrap();
    let rotated = run(keyctl().args(["rotate", "FERNET_KEY"]));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&rotated.stdout),
        String::from_utf8_lossy(&rotated.stderr),
    );
    assert_eq!(rotated.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("rotated v1 -> v2"), "{stdout}");
    assert!(
        stderr.contains("rekey hook failed for FERNET_KEY"),
        "{stderr}"
    );
    let status = String::from_utf8(ok(keyctl().args(["status", "--json"]))).unwrap();
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let owed = &status[0]["rekey"];
    assert_eq!(owed["version"], 2, "{status}");
    assert_eq!(owed["attempts"], 1, "{status}");
    assert!(
        owed["last_error"].as_str().unwrap().contains("exited"),
        "{status}"
    );
    let refused = run(keyctl().args(["retire", "FERNET_KEY"]));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "retired before the rekey succeeded"
    );
    assert!(stderr.contains("rekey hook"), "{stderr}");
    assert_eq!(
        read_key().split(',').count(),
        2,
        "the old key is still delivered"
    );

    // Fixed: the retire runs the hook first, then drops the old key; the row still decrypts.
    std::fs::remove_file(tmp.join("fail")).unwrap();
    ok(keyctl().args(["retire", "FERNET_KEY"]));
    let new_key = read_key();
    assert_eq!(new_key.split(',').count(), 1);
    assert!(
        decrypts(&new_key),
        "the row was not re-encrypted to the new key"
    );
    let status = String::from_utf8(ok(keyctl().args(["status", "--json"]))).unwrap();
    assert!(!status.contains("\"rekey\""), "{status}");
    // The audit log records the hook's runs, without values.
    let audit = std::fs::read_to_string(home.join("audit.log")).unwrap();
    assert!(audit.contains("\"step\":\"rekey\""), "{audit}");
    assert!(!audit.contains(&new_key));
}

#[test]
fn the_scheduler_retries_a_failed_rekey_with_backoff_and_retires_only_after_it_succeeded() {
    use keyd::clock::Clock as _;
    use keyd::store::Home;
    let tmp = TempDir::new("rekey-sched");
    let script = tmp.join("rekey.sh");
    let fail = tmp.join("fail");
    std::fs::write(
        &script,
        format!("#!/bin/sh\n[ -e {} ] && exit 3\nexit 0\n", fail.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy = tmp.join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "[stack]\nname = \"s\"\n\n[sinks.files]\ndir = \"{}\"\n\n[secrets.K]\nkind = \"fernet\"\nrotate = \"30d\"\ngrace = \"1d\"\nrekey = {{ command = [\"{}\"] }}\n",
            tmp.join("out").display(),
            script.display()
        ),
    )
    .unwrap();
    ok(keyctl(&tmp.join("home"))
        .args(["quickstart", "--policy"])
        .arg(&policy));
    let home = Home::new(tmp.join("home"));
    let t0 = home.peek().unwrap().stacks["s"].secrets["K"]
        .current()
        .unwrap()
        .created;
    let clock = TestClock::at(t0 + 31 * 86_400);
    let owed = || home.peek().unwrap().stacks["s"].secrets["K"].rekey.clone();
    let live = || {
        home.peek().unwrap().stacks["s"].secrets["K"]
            .live_versions()
            .len()
    };

    std::fs::write(&fail, "").unwrap();
    keyd::ops::run_due(&home, &clock, "test").unwrap();
    let first = owed().expect("a rekey is owed after the rotation");
    assert_eq!((first.version, first.attempts), (2, 1));
    let retry_at = first.retry_at.unwrap();
    assert!(retry_at > clock.now(), "retried with backoff, not at once");
    // Grace is over, but the retire waits; the retry runs when due and fails again.
    clock.advance(2 * 86_400);
    keyd::ops::run_due(&home, &clock, "test").unwrap();
    assert_eq!(owed().unwrap().attempts, 2);
    assert_eq!(live(), 2, "retired before the rekey succeeded");
    // Fixed: the next due retry succeeds, then the retire happens.
    std::fs::remove_file(&fail).unwrap();
    clock.advance(86_400);
    keyd::ops::run_due(&home, &clock, "test").unwrap();
    assert_eq!(owed(), None);
    keyd::ops::run_due(&home, &clock, "test").unwrap();
    assert_eq!(live(), 1, "retired once the rekey succeeded");
}
