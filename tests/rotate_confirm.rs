//! `keyctl rotate` typed on a terminal asks before it rotates a whole kind or a password with
//! no target (keyd cannot set its new value on the server that checks it: on a real stack that
//! is an outage); `--yes`, and any caller without a terminal (scripts, cron), are never asked.

use std::path::Path;

use keyd::store::Home;
use keyd_tests::{TempDir, keyctl, ok};

const POLICY: &str = r#"[stack]
name = "app"

[secrets.DB_PASSWORD]
kind = "password"

[secrets.API_PASSWORD]
kind = "password"
standalone = true

[secrets.SESSION]
kind = "token"
"#;

/// Runs `argv` on a pseudo-terminal, answering each `[y/N]` prompt with the next of `answers`.
fn on_terminal(argv: &[&str], answers: &[&str]) -> (i32, String) {
    keyd_tests::on_terminal(argv, answers, "[y/N]")
}

fn version(home: &Path, name: &str) -> u64 {
    Home::new(home).peek().unwrap().stacks["app"].secrets[name]
        .current()
        .unwrap()
        .number
}

#[test]
fn a_rotate_on_a_terminal_asks_before_a_kind_or_a_password_with_no_target_and_no_changes_nothing() {
    let tmp = TempDir::new("confirm");
    std::fs::write(tmp.join("app.toml"), POLICY).unwrap();
    let home = tmp.join("home");
    ok(keyctl(&home)
        .args(["quickstart", "--policy"])
        .arg(tmp.join("app.toml"))
        .arg("--out")
        .arg(tmp.join("out")));
    let keyctl = keyd_tests::binary("keyctl");
    let (keyctl, home_arg) = (keyctl.to_str().unwrap(), home.to_str().unwrap());
    let rotate = |args: &[&str], answers: &[&str]| {
        let mut argv = vec![keyctl, "--home", home_arg, "rotate"];
        argv.extend_from_slice(args);
        on_terminal(&argv, answers)
    };

    // A password no server is told of: asked, and a no changes nothing.
    let (code, shown) = rotate(&["DB_PASSWORD"], &["n"]);
    assert_eq!(code, 1, "{shown}");
    assert!(
        shown.contains("app/DB_PASSWORD is a password with no target"),
        "{shown}"
    );
    assert!(shown.contains("not rotated: not confirmed"), "{shown}");
    assert_eq!(version(&home, "DB_PASSWORD"), 1);

    // A whole kind: asked once, naming every secret and the password without a target.
    let (code, shown) = rotate(&["password"], &["y"]);
    assert_eq!(code, 0, "{shown}");
    assert!(
        shown.contains("password is a kind: 2 secrets rotate at once"),
        "{shown}"
    );
    assert_eq!(shown.matches("[y/N]").count(), 1, "{shown}");
    assert_eq!(
        (
            version(&home, "DB_PASSWORD"),
            version(&home, "API_PASSWORD")
        ),
        (2, 2)
    );

    // Nothing to ask: a token, a standalone password, --yes.
    for args in [
        &["SESSION"][..],
        &["API_PASSWORD"],
        &["--yes", "DB_PASSWORD"],
    ] {
        let (code, shown) = rotate(args, &[]);
        assert_eq!(code, 0, "{args:?}: {shown}");
        assert!(!shown.contains("[y/N]"), "{args:?} asked: {shown}");
    }
    assert_eq!(version(&home, "DB_PASSWORD"), 3);

    // No terminal (a script, cron): never asked, as before.
    ok(keyctl_cmd(&home).args(["rotate", "DB_PASSWORD"]));
    assert_eq!(version(&home, "DB_PASSWORD"), 4);
}

fn keyctl_cmd(home: &Path) -> std::process::Command {
    let mut cmd = keyctl(home);
    cmd.stdin(std::process::Stdio::null());
    cmd
}
