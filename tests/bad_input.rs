//! Bad input is refused with a specific message and position, and refusal changes nothing:
//! a table of broken policies, a wrong identity, a truncated store, a missing identity.

use std::path::Path;

use keyd_tests::{TempDir, keyctl, ok, run, snapshot};

const GOOD: &str = r#"[stack]
name = "shop"

[secrets.DB_PASSWORD]
kind = "password"

[secrets.FERNET]
kind = "fernet"
"#;

/// (what is broken, policy text, expected "line:column: message" fragment)
const BROKEN: &[(&str, &str, &str)] = &[
    (
        "unknown kind",
        "[stack]\nname = \"shop\"\n\n[secrets.DB_PASSWORD]\nkind = \"fernt\"\n",
        ":5:8: unknown kind \"fernt\" (expected one of password, token, fernet, rsa, tls, literal, template)",
    ),
    (
        "bad duration",
        "[stack]\nname = \"shop\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\nrotate = \"90x\"\n",
        ":6:10: `rotate` in secret \"DB_PASSWORD\": bad duration \"90x\": unknown unit 'x'",
    ),
    (
        "template cycle",
        "[stack]\nname = \"shop\"\n\n[secrets.A]\nkind = \"template\"\ntemplate = \"{B}\"\n\n[secrets.B]\nkind = \"template\"\ntemplate = \"x{A}\"\n",
        ":6:12: template cycle: A -> B -> A",
    ),
    (
        "unknown reference",
        "[stack]\nname = \"shop\"\n\n[secrets.URL]\nkind = \"template\"\ntemplate = \"postgres://app:{DB_PASWORD|url}@db/app\"\n",
        ":6:28: template of \"URL\" refers to unknown name {DB_PASWORD}",
    ),
    (
        "weak length",
        "[stack]\nname = \"shop\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\nlength = 8\n",
        ":6:10: password length 8 is weak (expected at least 12, or allow_weak = true)",
    ),
    (
        "duplicate name (TOML)",
        "[stack]\nname = \"shop\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\n\n[secrets.DB_PASSWORD]\nkind = \"token\"\n",
        ":7:10: invalid TOML: duplicate key `DB_PASSWORD` (expected each key once in its table)",
    ),
    (
        "plain http webhook to another host",
        "[stack]\nname = \"shop\"\n\n[notify]\nwebhook = \"http://hooks.example.com/keyd\"\nsecret_file = \"/k\"\n\n[secrets.A]\nkind = \"fernet\"\n",
        ":5:11: webhook \"http://hooks.example.com/keyd\" is plain http:// to a host that is not this machine",
    ),
    (
        "misspelt notify event",
        "[stack]\nname = \"shop\"\n\n[notify]\nwebhook = \"https://hooks.example.com/keyd\"\nsecret_file = \"/k\"\nevents = [\"retierd\"]\n\n[secrets.A]\nkind = \"fernet\"\n",
        ":7:10: unknown event \"retierd\" in [notify] events: did you mean `retired`? (expected rotated, retired, failed, rekey_owed, expiring or reload_failed)",
    ),
    (
        "notify without a signing key",
        "[stack]\nname = \"shop\"\n\n[notify]\nwebhok = \"https://hooks.example.com/keyd\"\n\n[secrets.A]\nkind = \"fernet\"\n",
        ":4:2: [notify] has no `webhook`",
    ),
    (
        "misspelt field",
        "[stack]\nname = \"shop\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\nlenght = 24\n",
        ":6:1: unknown field `lenght` in secret \"DB_PASSWORD\": did you mean `length`? (expected for kind \"password\": ",
    ),
    (
        "misspelt reference",
        "[stack]\nname = \"shop\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\n\n[secrets.URL]\nkind = \"template\"\ntemplate = \"postgres://app:{DB_PASWORD|url}@db/app\"\n",
        ":9:28: template of \"URL\" refers to unknown name {DB_PASWORD}: did you mean {DB_PASSWORD}?",
    ),
    (
        "password rotated without a target",
        "[stack]\nname = \"shop\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\nrotate = \"90d\"\n",
        ":6:10: password \"DB_PASSWORD\" rotates every 90d but has no `target`",
    ),
    (
        "duplicate name (companion)",
        "[stack]\nname = \"shop\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\n\n[secrets.JWT_KEY]\nkind = \"rsa\"\npublic = \"DB_PASSWORD\"\n",
        ":9:10: duplicate name \"DB_PASSWORD\" as the `public` of \"JWT_KEY\": already declared on line 4",
    ),
    (
        "bad TOML",
        "[stack]\nname = \"shop\"\n\n[secrets.DB_PASSWORD\nkind = \"password\"\n",
        ":4:21: invalid TOML: unclosed table, expected `]`",
    ),
    (
        "field of another kind",
        "[stack]\nname = \"shop\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\nbits = 4096\n",
        ":6:1: unknown field `bits` in secret \"DB_PASSWORD\" (expected for kind \"password\": kind, description, rotate, grace, rekey, length, alphabet, allow_weak, target, standalone)",
    ),
    (
        "grace not shorter than rotate",
        "[stack]\nname = \"shop\"\n\n[secrets.FERNET]\nkind = \"fernet\"\nrotate = \"1d\"\ngrace = \"2d\"\n",
        ":7:9: grace 2d is not shorter than rotate 1d",
    ),
    (
        "target role not an identifier",
        "[stack]\nname = \"shop\"\n\n[targets.db]\ntype = \"postgres\"\nurl = \"postgres://admin@127.0.0.1/db\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\ntarget = { name = \"db\", role = \"App-User\" }\n",
        ":10:32: role \"App-User\" is not a valid PostgreSQL identifier here",
    ),
    (
        "unknown target",
        "[stack]\nname = \"shop\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\ntarget = { name = \"db\", role = \"app\" }\n",
        ":6:19: unknown target \"db\" (expected one of: none declared)",
    ),
    (
        "password in a target url",
        "[stack]\nname = \"shop\"\n\n[targets.db]\ntype = \"postgres\"\nurl = \"postgres://admin:hunter2@127.0.0.1/db\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\n",
        ":6:7: target \"db\": the url holds a password",
    ),
    (
        "no stack",
        "[secrets.DB_PASSWORD]\nkind = \"password\"\n",
        ":1:1: the policy has no [stack] table",
    ),
];

fn apply(home: &Path, policy: &Path, out: &Path) -> std::process::Output {
    run(keyctl(home)
        .arg("apply")
        .arg("--policy")
        .arg(policy)
        .arg("--out")
        .arg(out))
}

/// Writes the good policy into `tmp` and quickstarts it into `home` and `out`: the state each
/// test then tries to damage. Returns the policy's path.
fn provision(tmp: &TempDir, home: &Path, out: &Path) -> std::path::PathBuf {
    let good = tmp.join("good.toml");
    std::fs::write(&good, GOOD).unwrap();
    ok(keyctl(home)
        .arg("quickstart")
        .arg("--policy")
        .arg(&good)
        .arg("--out")
        .arg(out));
    good
}

#[test]
fn broken_policies_give_their_specific_error_and_change_nothing() {
    let tmp = TempDir::new("broken");
    let (home, out) = (tmp.join("home"), tmp.join("out"));
    let good = provision(&tmp, &home, &out);
    let before = (snapshot(&home), snapshot(&out));

    for (what, text, expected) in BROKEN {
        let policy = tmp.join("broken.toml");
        std::fs::write(&policy, text).unwrap();
        for cmd in ["apply", "quickstart"] {
            let result = run(keyctl(&home)
                .arg(cmd)
                .arg("--policy")
                .arg(&policy)
                .arg("--out")
                .arg(&out));
            let stderr = String::from_utf8_lossy(&result.stderr);
            assert_eq!(result.status.code(), Some(3), "{what} ({cmd}): {stderr}");
            assert!(
                stderr.contains(&format!("{}{expected}", policy.display())),
                "{what} ({cmd}): expected {expected:?} in:\n{stderr}"
            );
            assert!(
                stderr.contains("hint: fix the lines above"),
                "{what}: {stderr}"
            );
            assert_eq!(
                (snapshot(&home), snapshot(&out)),
                before,
                "{what} ({cmd}) changed the store or sinks"
            );
        }
        let check = run(keyctl(&home).arg("policy").arg("check").arg(&policy));
        assert_eq!(check.status.code(), Some(3), "{what}");
    }
    // The good policy still applies cleanly afterwards.
    assert_eq!(apply(&home, &good, &out).status.code(), Some(0));
}

#[test]
fn a_store_opened_with_another_identity_is_refused_and_left_alone() {
    let tmp = TempDir::new("wrong-identity");
    let (home, other, out) = (tmp.join("home"), tmp.join("other"), tmp.join("out"));
    let good = provision(&tmp, &home, &out);
    ok(keyctl(&other).arg("init"));
    std::fs::copy(other.join("identity.txt"), home.join("identity.txt")).unwrap();
    let store_before = std::fs::read(home.join("store.age")).unwrap();

    for args in [vec!["list"], vec!["show", "DB_PASSWORD"]] {
        let r = run(keyctl(&home).args(&args));
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(4), "{args:?}: {stderr}");
        assert!(
            stderr.contains("was not encrypted to the identity"),
            "{stderr}"
        );
        assert!(stderr.contains("the store was not modified"), "{stderr}");
    }
    let r = apply(&home, &good, &out);
    assert_eq!(r.status.code(), Some(4));
    assert_eq!(std::fs::read(home.join("store.age")).unwrap(), store_before);
}

#[test]
fn a_truncated_store_is_reported_and_never_overwritten() {
    let tmp = TempDir::new("truncated");
    let (home, out) = (tmp.join("home"), tmp.join("out"));
    let good = provision(&tmp, &home, &out);
    let full = std::fs::read(home.join("store.age")).unwrap();
    for cut in [full.len() - 1, full.len() / 2, 20] {
        std::fs::write(home.join("store.age"), &full[..cut]).unwrap();
        for r in [run(keyctl(&home).arg("list")), apply(&home, &good, &out)] {
            let stderr = String::from_utf8_lossy(&r.stderr);
            assert_eq!(r.status.code(), Some(4), "cut at {cut}: {stderr}");
            assert!(stderr.contains("cannot be read"), "{stderr}");
            assert!(
                stderr.contains("restore store.age from a backup"),
                "{stderr}"
            );
        }
        assert_eq!(
            std::fs::read(home.join("store.age")).unwrap(),
            &full[..cut],
            "overwritten"
        );
    }
}

#[test]
fn a_store_whose_identity_is_gone_is_not_given_a_new_one() {
    let tmp = TempDir::new("no-identity");
    let (home, out) = (tmp.join("home"), tmp.join("out"));
    let good = provision(&tmp, &home, &out);
    std::fs::remove_file(home.join("identity.txt")).unwrap();
    for cmd in ["init", "quickstart"] {
        let mut c = keyctl(&home);
        c.arg(cmd);
        if cmd == "quickstart" {
            c.arg("--policy").arg(&good);
        }
        let r = run(&mut c);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(4), "{cmd}: {stderr}");
        assert!(
            stderr.contains("identity") && stderr.contains("missing"),
            "{stderr}"
        );
        assert!(
            !home.join("identity.txt").exists(),
            "{cmd} made a new identity beside the store"
        );
    }
}

#[test]
fn swarm_added_by_the_flag_refuses_a_name_swarm_cannot_hold_before_anything_is_made() {
    let tmp = TempDir::new("swarm-flag-name");
    let long = "A".repeat(50);
    let policy = tmp.join("p.toml");
    std::fs::write(
        &policy,
        format!("[stack]\nname = \"s\"\n\n[secrets.{long}]\nkind = \"token\"\n"),
    )
    .unwrap();
    // Without a [sinks.swarm] the policy itself is fine...
    ok(keyctl(&tmp.join("home"))
        .args(["policy", "check"])
        .arg(&policy));
    // ...but not for Swarm: refused before the home, the store or the engine is touched.
    let out = run(keyctl(&tmp.join("home"))
        .args(["quickstart", "--swarm", "--policy"])
        .arg(&policy)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot name a secret \"{long}\": it is 50 characters long"
        )),
        "{stderr}"
    );
    assert!(!tmp.join("home").exists(), "nothing was made");
}

/// `show` and `history` decode only the versions of the secret they print: another secret's
/// damaged record does not stop them, and the printed one's is a store error naming it,
/// without its text, not a panic.
#[test]
fn show_reads_past_another_secrets_damaged_versions_and_names_its_own() {
    let tmp = TempDir::new("show-damaged");
    let home = tmp.join("home");
    ok(keyctl(&home).arg("init"));
    let text = r#"{"format":1,"stacks":{"app":{"policy_path":"p.toml","policy_source":"",
        "applied_at":1,"sinks":{},"secrets":{
        "BAD":{"kind":"password","outputs":[{"name":"BAD","part":"main"}],"versions":[{"number":"hunter2"}]},
        "OK":{"kind":"password","outputs":[{"name":"OK","part":"main"}],"versions":[{"number":1,
          "label":"current","created":1,"promoted":1,"params":"length=32 alphabet=alphanumeric",
          "material":{"type":"text","value":"the-ok-value"}}]}}}}}"#;
    let mut data: keyd::store::StoreData = serde_json::from_str(text).unwrap();
    let store = keyd::store::Home::new(&home);
    store.lock().unwrap().save(&mut data).unwrap();

    assert_eq!(ok(keyctl(&home).args(["show", "OK"])), b"the-ok-value");
    ok(keyctl(&home).args(["history", "OK"]));
    for command in ["show", "history"] {
        let out = run(keyctl(&home).args([command, "BAD"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command} BAD succeeded");
        assert!(
            stderr.contains("versions of app/BAD do not decode"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("hunter2") && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

#[test]
fn a_newline_in_the_files_dir_is_refused_by_policy_check_and_keyctl_compose() {
    // The review's exploit: the newline's lines came out of `keyctl compose` as YAML keys.
    let tmp = TempDir::new("dir-newline");
    let policy = tmp.join("p.toml");
    std::fs::write(
        &policy,
        "[stack]\nname = \"s\"\n[sinks.files]\ndir = \"/run/secrets\\n    privileged: true\\n    pid: host\"\n[secrets.A]\nkind = \"token\"\n",
    )
    .unwrap();
    let expected = format!(
        "{}:4:7: `dir` in [sinks.files] holds the control character '\\n' (expected a path without newlines, tabs or other control characters)",
        policy.display()
    );
    let check = run(keyctl(&tmp.join("home"))
        .args(["policy", "check"])
        .arg(&policy));
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
    let compose = run(keyctl(&tmp.join("home"))
        .args(["compose", "--policy"])
        .arg(&policy));
    let stderr = String::from_utf8_lossy(&compose.stderr);
    assert_eq!(compose.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&compose.stdout), "");
}

#[test]
fn keyctl_compose_quotes_the_policys_paths_so_they_add_no_yaml_keys_or_compose_variables() {
    let tmp = TempDir::new("compose-quoting");
    // A file name may hold anything but '/' and NUL; the parser allows a dir anything but
    // control characters. Neither may change the block's structure or meet compose's `$`.
    let name = "p\n    privileged: true\n#$HOME: ${X}.toml";
    let dir = "/run/a: b #c ${X} $HOME 'q' \"d\" [e] {f} \\g";
    let policy = tmp.join(name);
    std::fs::write(
        &policy,
        format!(
            "[stack]\nname = \"s\"\n[sinks.files]\ndir = {}\n[secrets.A]\nkind = \"token\"\n",
            serde_json::to_string(dir).unwrap()
        ),
    )
    .unwrap();
    let image = "${KEYD_IMAGE:-keyd:local}";
    let doc = keyd_tests::compose::compose_block_as_read(&policy, image, tmp.path());
    let keys = |v: &serde_json::Value| -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&doc), ["services", "volumes"]);
    assert_eq!(keys(&doc["services"]), ["keyd"]);
    let keyd = &doc["services"]["keyd"];
    for injected in ["privileged", "pid"] {
        assert!(keyd.get(injected).is_none(), "{injected} in {keyd}");
    }
    // The image is the operator's own argument: compose may interpolate it, as asked.
    assert_eq!(keyd["image"], image);
    let mounts = keyd["volumes"].as_array().unwrap();
    let mount = |source: &str| {
        mounts
            .iter()
            .find(|m| m["source"] == source)
            .unwrap_or_else(|| panic!("no mount of {source} in {mounts:?}"))
    };
    assert_eq!(
        mount(&format!("./{name}"))["target"],
        "/etc/keyd/policy.toml"
    );
    assert_eq!(mount("secrets")["target"], dir);
    assert_eq!(mount("keyd-home")["target"], "/var/lib/keyd");
}

/// Every command that takes `--json`, found by walking `keyctl --help` (so a new one cannot be
/// left out), with the arguments that make it fail in a home that does not exist.
fn json_commands() -> Vec<Vec<String>> {
    fn commands(help: &str) -> Vec<String> {
        help.lines()
            .skip_while(|l| *l != "Commands:")
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            // A command's line is indented by two spaces; wrapped help text by more.
            .filter_map(|l| l.strip_prefix("  ").filter(|l| !l.starts_with(' ')))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .map(str::to_owned)
            .collect()
    }
    let help = |path: &[String]| {
        let out = ok(keyctl(Path::new("unused")).args(path).arg("--help"));
        String::from_utf8(out).unwrap()
    };
    let mut found = Vec::new();
    let mut todo: Vec<Vec<String>> = commands(&help(&[])).into_iter().map(|c| vec![c]).collect();
    while let Some(path) = todo.pop() {
        let text = help(&path);
        let sub = commands(&text);
        if sub.is_empty() {
            if text.lines().any(|l| l.trim_start().starts_with("--json")) {
                found.push(path);
            }
        } else {
            todo.extend(sub.into_iter().map(|c| [path.clone(), vec![c]].concat()));
        }
    }
    found.sort();
    found
}

#[test]
fn a_failure_under_json_is_a_json_object_on_stderr_for_every_json_command() {
    let tmp = TempDir::new("json-errors");
    let policy = tmp.join("good.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let policy = policy.to_str().unwrap();
    let nohome = tmp.join("nohome");
    // The arguments after the command's name that make it fail (None: it fails as it is).
    let failing = |path: &str| -> Vec<&str> {
        match path {
            "apply" | "quickstart" => vec!["--policy", "missing.toml"],
            "history" | "rotate" | "retire" | "plan rotate" | "plan retire" => vec!["DB_PASSWORD"],
            "import" => vec!["--policy", policy, "source"],
            "backup" => vec!["--out", "backup.age"],
            "restore" => vec!["backup.age"],
            "recipients add" | "recipients remove" => vec!["age1nosuchrecipient"],
            "store copy" => vec!["--to", "swarm:other"],
            "list" | "status" | "check" | "recipients list" | "store info" | "swarm env" => {
                vec![]
            }
            other => panic!("keyctl {other} takes --json: give it failing arguments here"),
        }
    };
    let mut cases: Vec<(String, Vec<String>)> = json_commands()
        .into_iter()
        .map(|path| {
            let name = path.join(" ");
            let mut args = path;
            args.extend(failing(&name).into_iter().map(str::to_owned));
            args.push("--json".into());
            (name, args)
        })
        .collect();
    assert!(cases.len() >= 17, "found only {cases:?}");
    // A command line clap refuses, with --json in it.
    cases.push((
        "a bad command line".into(),
        vec!["list".into(), "--json".into(), "--no-such-flag".into()],
    ));
    for (name, args) in cases {
        // `store info` answers in any home: without one at all, it fails too.
        let mut cmd = if name == "store info" {
            let mut cmd = std::process::Command::new(keyd_tests::binary("keyctl"));
            cmd.env_remove("KEYD_HOME")
                .env_remove("HOME")
                .env_remove("XDG_DATA_HOME");
            cmd
        } else {
            keyctl(&nohome)
        };
        let out = run(cmd.current_dir(tmp.path()).args(&args));
        let code = out.status.code().unwrap();
        assert_ne!(code, 0, "keyctl {name} did not fail");
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(
            stdout.trim().is_empty() || serde_json::from_str::<serde_json::Value>(&stdout).is_ok(),
            "keyctl {name} --json: stdout is not JSON: {stdout}"
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        let objects: Vec<serde_json::Value> = stderr
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("keyctl {name} --json: stderr line {l:?}: {e}"))
            })
            .collect();
        if name == "check" {
            // A monitoring check's verdict is its JSON report and its exit code.
            assert!(objects.is_empty() && !stdout.is_empty(), "{stderr}");
            continue;
        }
        let error = objects
            .last()
            .unwrap_or_else(|| panic!("keyctl {name} --json: nothing on stderr"));
        assert_eq!(error["level"], "error", "keyctl {name}: {error}");
        assert_eq!(error["exit_code"], code, "keyctl {name}: {error}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "keyctl {name}: {error}"
        );
        assert!(
            error.get("hint").is_some(),
            "keyctl {name}: no hint field: {error}"
        );
    }
}

#[test]
fn a_warning_under_json_is_a_json_object_on_stderr_and_stdout_stays_one_document() {
    let tmp = TempDir::new("json-warning");
    let policy = tmp.join("good.toml");
    std::fs::write(&policy, GOOD).unwrap();
    let out = run(keyctl(&tmp.join("home"))
        .args(["quickstart", "--reinit", "--json", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(tmp.join("out")));
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("stdout is one JSON document");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.is_empty(), "--reinit warns");
    for line in stderr.lines() {
        let warning: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("stderr line {line:?}: {e}"));
        assert_eq!(warning["level"], "warning", "{warning}");
    }
}
