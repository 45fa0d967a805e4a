//! `keyd --log-format json`: every line keyd writes on stderr is one JSON object with time,
//! level and message, a secret's work carries the audit log's fields, and no value is in it.

use keyd::store::Home;
use keyd_tests::{TempDir, keyctl, keyd, ok, run};

#[test]
fn keyd_with_json_logs_writes_one_object_a_line_with_the_audit_fields_and_no_value() {
    let tmp = TempDir::new("logjson");
    let policy = tmp.join("app.toml");
    std::fs::write(
        &policy,
        "[stack]\nname = \"app\"\n\n[secrets.TICK]\nkind = \"token\"\nrotate = \"2s\"\ngrace = \"1s\"\n",
    )
    .unwrap();
    let home = tmp.join("home");
    ok(keyctl(&home)
        .arg("quickstart")
        .arg("--policy")
        .arg(&policy)
        .arg("--out")
        .arg(tmp.join("out")));
    std::thread::sleep(std::time::Duration::from_millis(2_100));

    let out = run(keyd(&home).args(["--once", "--log-format", "json"]));
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    for line in &lines {
        for key in ["time", "level", "msg"] {
            assert!(line[key].is_string(), "{key} missing: {line}");
        }
    }
    let rotated = lines
        .iter()
        .find(|l| l["outcome"] == "rotated")
        .unwrap_or_else(|| panic!("no rotation line in:\n{stderr}"));
    assert_eq!(rotated["stack"], "app");
    assert_eq!(rotated["secret"], "TICK");
    assert_eq!(rotated["version"], 2);
    assert_eq!(rotated["level"], "info");
    assert_eq!(rotated["by"], "keyd once");
    let promoted = lines
        .iter()
        .find(|l| l["msg"] == "rotation step" && l["step"] == "promote")
        .unwrap_or_else(|| panic!("no promote step line in:\n{stderr}"));
    assert_eq!(promoted["secret"], "TICK");
    assert_eq!(promoted["outcome"], "ok");

    let store = Home::new(&home).peek().unwrap();
    for v in &store.stacks["app"].secrets["TICK"].versions {
        let value = keyd::store::SecretRecord::version_value(v, keyd::policy::Part::Main).unwrap();
        assert!(!stderr.contains(value.expose()), "a value is in the log");
    }
}

#[test]
fn an_unknown_log_format_is_a_bad_argument_naming_the_formats() {
    let tmp = TempDir::new("logbad");
    let out = run(keyd(&tmp.join("home")).args(["--once", "--log-format", "xml"]));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("text") && stderr.contains("json"),
        "{stderr}"
    );
}
