//! `keyctl quickstart` and `apply` on the shipped policies, through the real binary: every
//! declared name delivered with the right mode, a second run changing nothing, `show` equal to
//! the delivered file, no plaintext value anywhere in the home, and concurrent runs.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use keyd::policy::{Kind, Policy};
use keyd_tests::{TempDir, contains, keyctl, ok, quickstart, run, snapshot, workspace};

/// The shipped policies delivered whole below; `alphakraken` has a test of its own, since its
/// env file sits beside the policy (a run here would write into the repository).
const POLICIES: [&str; 3] = ["flowkit", "cornflow", "airflow-celery"];

fn policy_path(name: &str) -> std::path::PathBuf {
    workspace().join("policies").join(format!("{name}.toml"))
}

/// Every policy the repository ships (`policies/*.toml`) and every example's policy passes
/// `keyctl policy check`: no bundled schedule rotates a password no server is told of.
#[test]
fn every_bundled_policy_passes_policy_check() {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(workspace().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    for example in std::fs::read_dir(workspace().join("examples")).unwrap() {
        let policy = example.unwrap().path().join("policy.toml");
        if policy.exists() {
            files.push(policy);
        }
    }
    assert!(files.len() >= POLICIES.len() + 2, "{files:?}");
    let tmp = TempDir::new("check-bundled");
    for file in files {
        let out = run(keyctl(&tmp.join("home"))
            .args(["policy", "check"])
            .arg(&file));
        assert!(
            out.status.success(),
            "{}:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_shipped_policy_is_delivered_whole_and_a_second_run_changes_nothing() {
    for name in POLICIES {
        let tmp = TempDir::new(&format!("qs-{name}"));
        let (home, out) = (tmp.join("home"), tmp.join("secrets"));
        let policy = Policy::load(&policy_path(name)).unwrap();
        let first = quickstart(&home, &policy_path(name), &out);
        assert!(first.contains("Created keyd home"), "{first}");
        assert!(first.contains("Next steps"), "{first}");

        // Every declared name (secrets and companions) is a file, mode 0400, not empty, shown
        // as a relative symlink into `..keyd`: its own file (`NAME@1`), or, for a secret of
        // several outputs, through the set that changes them together (`@SECRET/NAME`).
        let outputs = policy.outputs();
        let mut listed: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with(".."))
            .collect();
        for o in &outputs {
            let n = &o.name;
            let link = std::fs::read_link(out.join(n)).unwrap();
            let together = outputs.iter().filter(|x| x.secret == o.secret).count() > 1;
            let expected = if together {
                Path::new("..keyd").join(format!("@{}", o.secret)).join(n)
            } else {
                Path::new("..keyd").join(format!("{n}@1"))
            };
            assert_eq!(link, expected, "{name}/{n}");
        }
        listed.sort();
        let mut expected: Vec<String> = outputs.iter().map(|o| o.name.clone()).collect();
        expected.sort();
        assert_eq!(listed, expected, "{name}: delivered files");
        for o in &outputs {
            let meta = std::fs::metadata(out.join(&o.name)).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o7777,
                0o400,
                "{name}/{}",
                o.name
            );
            assert!(meta.len() > 0, "{name}/{} is empty", o.name);
            // `show` prints exactly the delivered bytes.
            let shown = ok(keyctl(&home).arg("show").arg(format!("{name}/{}", o.name)));
            assert_eq!(
                shown,
                std::fs::read(out.join(&o.name)).unwrap(),
                "{name}/{}",
                o.name
            );
        }

        // Second run: no value, file or store byte changes, and it says so.
        let before = snapshot(&tmp.join("home"));
        let inodes: Vec<(u64, i64)> = outputs
            .iter()
            .map(|o| {
                let m = std::fs::metadata(out.join(&o.name)).unwrap();
                (m.ino(), m.mtime_nsec())
            })
            .collect();
        let files_before = snapshot(&out);
        let second = quickstart(&home, &policy_path(name), &out);
        assert!(second.contains("No value changed"), "{second}");
        assert!(second.contains(": 0 created, 0 updated, "), "{second}");
        assert_eq!(
            snapshot(&tmp.join("home")),
            before,
            "{name}: the store was rewritten"
        );
        assert_eq!(snapshot(&out), files_before);
        let inodes_after: Vec<(u64, i64)> = outputs
            .iter()
            .map(|o| {
                let m = std::fs::metadata(out.join(&o.name)).unwrap();
                (m.ino(), m.mtime_nsec())
            })
            .collect();
        assert_eq!(inodes, inodes_after, "{name}: files were replaced");
    }
}

#[test]
fn no_secret_value_is_stored_or_left_in_plaintext_in_the_home() {
    let tmp = TempDir::new("qs-plaintext");
    let (home, out) = (tmp.join("home"), tmp.join("secrets"));
    quickstart(&home, &policy_path("flowkit"), &out);
    let policy = Policy::load(&policy_path("flowkit")).unwrap();
    let home_files = snapshot(&home);
    assert!(home_files.iter().any(|(p, _, _)| p.ends_with("store.age")));
    let mut checked = 0;
    for spec in &policy.secrets {
        if spec.kind.kind() == Kind::Literal {
            continue; // literal values are written in the policy itself
        }
        for o in spec.outputs() {
            let value = std::fs::read(out.join(&o.name)).unwrap();
            // Public halves are not secret; everything else must not appear, nor any long
            // line of it (PEM bodies are compared line by line).
            if o.name.contains("PUBLIC") || o.name.contains("JWKS") || o.name.starts_with("cert-") {
                continue;
            }
            let pieces: Vec<&[u8]> = value
                .split(|&b| b == b'\n')
                .filter(|l| l.len() >= 16 && !l.starts_with(b"-----"))
                .collect();
            let needles: Vec<&[u8]> = if pieces.is_empty() {
                vec![&value[..]]
            } else {
                pieces
            };
            for (path, mode, bytes) in &home_files {
                assert_eq!(mode & 0o077, 0, "{} is readable by others", path.display());
                for needle in &needles {
                    assert!(
                        !contains(bytes, needle),
                        "{} holds {} in plaintext",
                        path.display(),
                        o.name
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} values checked");
    let identity = std::fs::read_to_string(home.join("identity.txt")).unwrap();
    assert!(identity.contains("AGE-SECRET-KEY-1"));
    assert_eq!(
        std::fs::metadata(home.join("identity.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn two_quickstarts_at_once_on_one_home_both_finish_with_one_store_and_no_lost_secret() {
    for round in 0..3 {
        let tmp = TempDir::new(&format!("qs-concurrent-{round}"));
        let (home, out) = (tmp.join("home"), tmp.join("secrets"));
        let spawn = |policy: &str| {
            keyctl(&home)
                .arg("quickstart")
                .arg("--policy")
                .arg(policy_path(policy))
                .arg("--out")
                .arg(out.join(policy))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        // Same stack twice, and a second stack, all racing on one fresh home.
        let children = [
            spawn("airflow-celery"),
            spawn("airflow-celery"),
            spawn("cornflow"),
        ];
        for child in children {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        let list: serde_json::Value =
            serde_json::from_slice(&ok(keyctl(&home).args(["list", "--json"]))).unwrap();
        let items = list.as_array().unwrap();
        let expected = ["airflow-celery", "cornflow"]
            .iter()
            .map(|p| Policy::load(&policy_path(p)).unwrap().secrets.len())
            .sum::<usize>();
        assert_eq!(items.len(), expected);
        for item in items {
            assert_eq!(item["version"], 1, "{item}: a value was generated twice");
            assert_eq!(item["versions"], 1, "{item}");
        }
        for o in Policy::load(&policy_path("airflow-celery"))
            .unwrap()
            .outputs()
        {
            let shown = ok(keyctl(&home)
                .arg("show")
                .arg(format!("airflow-celery/{}", o.name)));
            assert_eq!(
                shown,
                std::fs::read(out.join("airflow-celery").join(&o.name)).unwrap()
            );
        }
    }
}

#[test]
fn apply_adds_new_secrets_and_never_regenerates_existing_ones() {
    let tmp = TempDir::new("apply");
    let (home, out) = (tmp.join("home"), tmp.join("out"));
    let policy = tmp.join("stack.toml");
    std::fs::write(&policy, "[stack]\nname = \"demo\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\n\n[secrets.DB_URL]\nkind = \"template\"\ntemplate = \"postgres://app:{DB_PASSWORD|url}@db/app\"\n").unwrap();

    // apply needs an initialised home.
    let uninit = run(keyctl(&home)
        .arg("apply")
        .arg("--policy")
        .arg(&policy)
        .arg("--out")
        .arg(&out));
    assert_eq!(uninit.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&uninit.stderr).contains("quickstart"));
    ok(keyctl(&home).arg("init"));
    ok(keyctl(&home)
        .arg("apply")
        .arg("--policy")
        .arg(&policy)
        .arg("--out")
        .arg(&out));
    let password = std::fs::read_to_string(out.join("DB_PASSWORD")).unwrap();
    assert_eq!(password.len(), 24);
    assert_eq!(
        std::fs::read_to_string(out.join("DB_URL")).unwrap(),
        format!("postgres://app:{password}@db/app")
    );

    // A changed policy: longer password asked for, a new token, the template text changed.
    std::fs::write(&policy, "[stack]\nname = \"demo\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\nlength = 32\n\n[secrets.DB_URL]\nkind = \"template\"\ntemplate = \"postgresql://app:{DB_PASSWORD|url}@db:5432/app\"\n\n[secrets.SESSION_KEY]\nkind = \"token\"\n").unwrap();
    let report: serde_json::Value = serde_json::from_slice(&ok(keyctl(&home)
        .arg("apply")
        .arg("--policy")
        .arg(&policy)
        .arg("--out")
        .arg(&out)
        .arg("--json")))
    .unwrap();
    let change = |n: &str| {
        report["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .unwrap()["change"]
            .clone()
    };
    assert_eq!(change("DB_PASSWORD"), "unchanged");
    assert_eq!(change("DB_URL"), "updated");
    assert_eq!(change("SESSION_KEY"), "created");
    assert!(
        report["notes"][0]
            .as_str()
            .unwrap()
            .contains("keyctl rotate DB_PASSWORD"),
        "{report}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("DB_PASSWORD")).unwrap(),
        password,
        "regenerated"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("DB_URL")).unwrap(),
        format!("postgresql://app:{password}@db:5432/app")
    );
    let history: serde_json::Value =
        serde_json::from_slice(&ok(keyctl(&home).args(["history", "DB_URL", "--json"]))).unwrap();
    let versions = history["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["label"], serde_json::Value::Null);
    assert_eq!(versions[1]["label"], "current");
    // Old versions stay readable.
    assert_eq!(
        String::from_utf8(ok(keyctl(&home).args(["show", "DB_URL", "--version", "1"]))).unwrap(),
        format!("postgres://app:{password}@db/app")
    );
    let missing = run(keyctl(&home).args(["show", "DB_URL", "--version", "7"]));
    assert_eq!(missing.status.code(), Some(5));
}

#[test]
fn envfile_sink_writes_compose_safe_values_and_refuses_the_rest_before_writing_anything() {
    let tmp = TempDir::new("envfile");
    let home = tmp.join("home");
    let policy = tmp.join("env.toml");
    let base = "[stack]\nname = \"env\"\n\n[sinks.envfile]\npath = \"stack.env\"\n\n[secrets.API_TOKEN]\nkind = \"token\"\nencoding = \"base64\"\n\n[secrets.ADMIN_PASSWORD]\nkind = \"password\"\nalphabet = \"abcdefghijklmnopqrstuvwxyz0123456789#@!\"\n\n[secrets.FERNET_KEY]\nkind = \"fernet\"\n";
    std::fs::write(&policy, base).unwrap();
    ok(keyctl(&home).arg("quickstart").arg("--policy").arg(&policy));
    let env = std::fs::read_to_string(tmp.join("stack.env")).unwrap();
    assert_eq!(
        std::fs::metadata(tmp.join("stack.env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // Parse it the way compose does for these forms: NAME=value or NAME='literal'.
    for name in ["API_TOKEN", "ADMIN_PASSWORD", "FERNET_KEY"] {
        let line = env
            .lines()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap();
        let raw = &line[name.len() + 1..];
        let value = raw
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .unwrap_or(raw);
        assert_eq!(
            value.as_bytes(),
            ok(keyctl(&home).arg("show").arg(name)),
            "{name}"
        );
        if value.contains(['#', '!']) {
            assert!(raw.starts_with('\''), "{name}: # and ! must be quoted");
        }
    }

    // A PEM key cannot go into an env file: the policy is refused, nothing written, store
    // untouched.
    std::fs::write(
        &policy,
        format!(
            "{base}\n[secrets.TLS_CERT]\nkind = \"tls\"\nkey = \"TLS_KEY\"\ncn = \"localhost\"\n"
        ),
    )
    .unwrap();
    let before = (
        snapshot(&home),
        std::fs::read(tmp.join("stack.env")).unwrap(),
    );
    let refused = run(keyctl(&home).arg("apply").arg("--policy").arg(&policy));
    assert_eq!(refused.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("TLS_CERT") && stderr.contains("include"),
        "{stderr}"
    );
    assert_eq!(
        (
            snapshot(&home),
            std::fs::read(tmp.join("stack.env")).unwrap()
        ),
        before
    );
    assert!(
        !contains(&refused.stderr, b"BEGIN"),
        "the value leaked into the error"
    );
}

#[test]
fn one_store_holds_several_stacks_and_an_ambiguous_name_asks_for_its_stack() {
    let tmp = TempDir::new("stacks");
    let home = tmp.join("home");
    for stack in ["blue", "green"] {
        let policy = tmp.join(format!("{stack}.toml"));
        std::fs::write(
            &policy,
            format!("[stack]\nname = \"{stack}\"\n\n[secrets.SECRET_KEY]\nkind = \"token\"\n"),
        )
        .unwrap();
        quickstart(&home, &policy, &tmp.join(stack));
    }
    let ambiguous = run(keyctl(&home).args(["show", "SECRET_KEY"]));
    assert_eq!(ambiguous.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&ambiguous.stderr);
    assert!(
        stderr.contains("exists in stacks blue, green; name one as STACK/SECRET_KEY"),
        "{stderr}"
    );
    for stack in ["blue", "green"] {
        let shown = ok(keyctl(&home).arg("show").arg(format!("{stack}/SECRET_KEY")));
        assert_eq!(
            shown,
            std::fs::read(tmp.join(stack).join("SECRET_KEY")).unwrap()
        );
    }
    assert_ne!(
        std::fs::read(tmp.join("blue/SECRET_KEY")).unwrap(),
        std::fs::read(tmp.join("green/SECRET_KEY")).unwrap()
    );
}

/// A policy of stack `demo` whose `[sinks.files]` delivers to `dir`, with a password and a
/// template of it (and `extra` appended).
fn demo_policy(path: &Path, dir: &Path, extra: &str) {
    std::fs::write(
        path,
        format!(
            "[stack]\nname = \"demo\"\n\n[sinks.files]\ndir = \"{}\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\n\n[secrets.DB_URL]\nkind = \"template\"\ntemplate = \"postgres://app:{{DB_PASSWORD|url}}@db/app\"\n{extra}",
            dir.display()
        ),
    )
    .unwrap();
}

/// After `quickstart --out DIR`, an `apply` without `--out` would deliver to the policy's own
/// directory, leaving DIR (which the consumers mount) stale from then on: refused, naming both
/// directories, with nothing written anywhere. `--out NEW` moves deliberately: NEW gets every
/// file, keyd's files leave DIR (a file of the user's stays), and rotations follow to NEW.
#[test]
fn apply_without_out_refuses_to_move_delivery_away_from_the_last_directory() {
    let tmp = TempDir::new("moved-delivery");
    let (home, out, policy_dir) = (tmp.join("home"), tmp.join("out"), tmp.join("policy-dir"));
    let policy = tmp.join("demo.toml");
    demo_policy(&policy, &policy_dir, "");
    quickstart(&home, &policy, &out);
    let password = std::fs::read(out.join("DB_PASSWORD")).unwrap();
    std::fs::write(out.join("NOTES.txt"), "mine").unwrap();
    let store = std::fs::read(home.join("store.age")).unwrap();

    for command in ["apply", "quickstart"] {
        let refused = run(keyctl(&home).arg(command).arg("--policy").arg(&policy));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{command}: {stderr}");
        assert!(
            stderr.contains(&out.display().to_string())
                && stderr.contains(&policy_dir.display().to_string()),
            "{command}: the refusal does not name both directories: {stderr}"
        );
        assert!(stderr.contains("--out"), "{command}: no hint: {stderr}");
        assert!(
            !policy_dir.exists(),
            "{command} delivered to the policy's dir"
        );
        assert_eq!(
            std::fs::read(home.join("store.age")).unwrap(),
            store,
            "{command}: the refused command rewrote the store"
        );
    }
    // The same directory again is no move.
    ok(keyctl(&home)
        .arg("apply")
        .arg("--policy")
        .arg(&policy)
        .arg("--out")
        .arg(&out));

    // A deliberate move: the new directory has every value, the old one none of keyd's files.
    let new = tmp.join("new");
    ok(keyctl(&home)
        .arg("apply")
        .arg("--policy")
        .arg(&policy)
        .arg("--out")
        .arg(&new));
    assert_eq!(std::fs::read(new.join("DB_PASSWORD")).unwrap(), password);
    assert!(new.join("DB_URL").exists());
    let left: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        ["NOTES.txt"],
        "keyd's files were left in the old directory"
    );

    // From now on the store knows the new place: a rotation goes there, and an apply without
    // --out is refused again, naming it.
    ok(keyctl(&home).args(["rotate", "DB_PASSWORD"]));
    assert_ne!(std::fs::read(new.join("DB_PASSWORD")).unwrap(), password);
    assert!(!out.join("DB_PASSWORD").exists());
    let refused = run(keyctl(&home).arg("apply").arg("--policy").arg(&policy));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&new.display().to_string()),
        "the refusal does not name the directory moved to: {stderr}"
    );
}

/// `keyctl status --json` without the ages, which move with the clock (a second boundary
/// may fall between two reads of an unchanged store).
fn status_without_ages(home: &Path) -> String {
    String::from_utf8_lossy(&ok(keyctl(home).args(["status", "--json"])))
        .lines()
        .filter(|l| !l.trim_start().starts_with("\"age_seconds\""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A refused command persists nothing: `quickstart --swarm` (and `apply --swarm` of a policy
/// that gained a secret) with no swarm manager to deliver to is refused, and leaves the store
/// byte for byte as it was: no swarm sink recorded for later rotations to fail at, no new
/// secret, nothing delivered.
#[test]
fn a_command_refused_for_want_of_a_swarm_leaves_the_store_unchanged() {
    let tmp = TempDir::new("refused-swarm");
    let (home, out) = (tmp.join("home"), tmp.join("out"));
    let policy = tmp.join("demo.toml");
    demo_policy(&policy, &out, "");
    quickstart(&home, &policy, &out);
    let store = std::fs::read(home.join("store.age")).unwrap();
    let status = status_without_ages(&home);
    let files = snapshot(&out);
    // An engine that is not there: unreachable, so certainly no swarm manager.
    let docker_host = format!("unix://{}", tmp.join("no-docker.sock").display());

    for (command, extra) in [
        ("quickstart", ""),
        ("apply", ""),
        ("apply", "\n[secrets.SESSION_KEY]\nkind = \"token\"\n"),
    ] {
        demo_policy(&policy, &out, extra);
        let refused = run(keyctl(&home)
            .arg(command)
            .arg("--policy")
            .arg(&policy)
            .arg("--out")
            .arg(&out)
            .arg("--swarm")
            .env("DOCKER_HOST", &docker_host));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success(), "{command} --swarm succeeded");
        assert!(
            std::fs::read(home.join("store.age")).unwrap() == store,
            "{command} --swarm{}: refused ({stderr}), but the store changed",
            if extra.is_empty() {
                ""
            } else {
                " (a new secret)"
            }
        );
        assert_eq!(status_without_ages(&home), status);
        assert_eq!(snapshot(&out), files, "{command} --swarm delivered files");
    }
    // Nothing is owed: a rotation still goes through, to the files.
    demo_policy(&policy, &out, "");
    ok(keyctl(&home)
        .args(["rotate", "DB_PASSWORD"])
        .env("DOCKER_HOST", &docker_host));
}

/// The commands under "Next steps", pasted into a shell in the same directory (with `NAME`
/// filled in), each run and its stdout returned. `HOME` is an empty directory there, so a
/// command that lost `--home` finds no store and fails.
fn run_next_steps(tmp: &TempDir, printed: &str, name: &str) -> Vec<(String, Vec<u8>)> {
    let bin = tmp.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let _ = std::os::unix::fs::symlink(keyd_tests::binary("keyctl"), bin.join("keyctl"));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let steps: Vec<String> = printed
        .lines()
        .skip_while(|l| *l != "Next steps:")
        // A command runs from `keyctl ` to the end of the line, or to a gap before its prose.
        .filter_map(|l| l.find("keyctl ").map(|at| &l[at..]))
        .map(|command| command.split("  ").next().unwrap())
        .map(|command| command.replace(" NAME", &format!(" {name}")))
        .collect();
    assert!(!steps.is_empty(), "no command under Next steps:\n{printed}");
    let empty_home = tmp.join("empty-home");
    std::fs::create_dir_all(&empty_home).unwrap();
    steps
        .into_iter()
        .map(|line| {
            let out = run(std::process::Command::new("sh")
                .arg("-c")
                .arg(&line)
                .current_dir(tmp.path())
                .env("PATH", &path)
                .env("HOME", &empty_home)
                .env_remove("XDG_DATA_HOME")
                .env_remove("KEYD_HOME")
                .env_remove("KEYD_SOCKET")
                .env_remove("KEYD_STORE"));
            assert!(
                out.status.success(),
                "the next step `{line}` failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            (line, out.stdout)
        })
        .collect()
}

/// The next steps quickstart and import print carry the `--home` and `--out` the user gave
/// (quoted for the shell): pasted, they act on the same home and deliver to the same directory,
/// where without them they would open the default home, or deliver to the policy's directory.
#[test]
fn next_steps_carry_the_home_and_out_the_user_gave() {
    let tmp = TempDir::new("next-steps");
    demo_policy(&tmp.join("demo.toml"), &tmp.join("policy-dir"), "");
    let printed = ok(keyctl(Path::new("a home/h")).current_dir(tmp.path()).args([
        "quickstart",
        "--policy",
        "demo.toml",
        "--out",
        "out",
    ]));
    let printed = String::from_utf8(printed).unwrap();
    let delivered = std::fs::read(tmp.join("out/DB_PASSWORD")).unwrap();
    let ran = run_next_steps(&tmp, &printed, "DB_PASSWORD");
    assert_eq!(ran.len(), 3, "{printed}");
    let (_, shown) = ran.iter().find(|(l, _)| l.contains(" show ")).unwrap();
    assert_eq!(*shown, delivered);
    assert!(!tmp.join("policy-dir").exists(), "the apply moved delivery");

    // Import from the delivered files into another home, to another directory.
    let printed = ok(keyctl(Path::new("other home"))
        .current_dir(tmp.path())
        .args(["import", "--policy", "demo.toml", "--out", "out2", "out"]));
    let printed = String::from_utf8(printed).unwrap();
    run_next_steps(&tmp, &printed, "DB_PASSWORD");
    assert_eq!(
        std::fs::read(tmp.join("out2/DB_PASSWORD")).unwrap(),
        delivered
    );
    assert!(
        !tmp.join("policy-dir").exists(),
        "the apply delivered elsewhere"
    );
}

/// A re-run that changes nothing says so in two lines, without the table of every secret
/// again; and no column is headed FINGERPRINT where no row can have one (text values have no
/// fingerprint: it would let anyone holding the summary test guesses).
#[test]
fn a_rerun_that_changes_nothing_prints_no_table_and_no_fingerprint_column_stays_empty() {
    let tmp = TempDir::new("quiet-rerun");
    let (home, out) = (tmp.join("home"), tmp.join("out"));
    let policy = tmp.join("demo.toml");
    demo_policy(&policy, &out, "");
    let first = quickstart(&home, &policy, &out);
    assert!(first.contains("  NAME "), "{first}");
    assert!(!first.contains("FINGERPRINT"), "{first}");
    assert!(first.lines().all(|l| l == l.trim_end()), "{first:?}");
    let again = quickstart(&home, &policy, &out);
    assert_eq!(
        again,
        "Stack demo: 2 secrets: 0 created, 0 updated, 2 unchanged\n\
         No value changed: every secret already existed and every delivered file was up to date.\n"
    );
    let history = String::from_utf8(ok(keyctl(&home).args(["history", "DB_PASSWORD"]))).unwrap();
    assert!(!history.contains("FINGERPRINT"), "{history}");
}

/// `keyctl show` prints exactly the delivered bytes into a pipe, but on a terminal ends the
/// value with a newline so the shell's next prompt does not run into it.
#[test]
fn show_on_a_terminal_ends_the_value_with_a_newline_and_adds_none_to_a_pipe() {
    let tmp = TempDir::new("show-tty");
    let (home, out) = (tmp.join("home"), tmp.join("out"));
    let policy = tmp.join("demo.toml");
    demo_policy(&policy, &out, "");
    quickstart(&home, &policy, &out);
    let delivered = std::fs::read(out.join("DB_PASSWORD")).unwrap();
    assert!(!delivered.ends_with(b"\n"));
    let piped = ok(keyctl(&home).args(["show", "DB_PASSWORD"]));
    assert_eq!(piped, delivered);
    // Python's pty runs keyctl on a terminal and copies what it printed to our pipe (the
    // terminal turns "\n" into "\r\n").
    let script = "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)";
    let on_terminal = ok(std::process::Command::new("python3")
        .args(["-c", script])
        .arg(keyd_tests::binary("keyctl"))
        .arg("--home")
        .arg(&home)
        .args(["show", "DB_PASSWORD"])
        .stdin(std::process::Stdio::null()));
    assert_eq!(on_terminal, [&delivered[..], b"\r\n"].concat());
}

/// AlphaKraken's guide forbids `\ # @ $` in its passwords: quickstart of its policy (copied
/// beside a temporary checkout, whose `envs/secrets.env` it writes) delivers each of its four
/// passwords to the env file compose reads, none holding a forbidden character, in several
/// stores so that the alphabet, not luck, decides.
#[test]
fn alphakraken_passwords_reach_its_env_file_without_a_character_its_guide_forbids() {
    let names = [
        "AIRFLOW_PASSWORD",
        "MONGO_PASSWORD",
        "MONGO_INITDB_ROOT_PASSWORD",
        "POSTGRES_PASSWORD",
    ];
    for round in 0..8 {
        let tmp = TempDir::new(&format!("alphakraken-{round}"));
        std::fs::create_dir(tmp.join("envs")).unwrap();
        let policy = tmp.join("alphakraken.toml");
        std::fs::copy(policy_path("alphakraken"), &policy).unwrap();
        quickstart(&tmp.join("home"), &policy, &tmp.join("secrets"));
        let env = std::fs::read_to_string(tmp.join("envs/secrets.env")).unwrap();
        for name in names {
            let file = std::fs::read_to_string(tmp.join("secrets").join(name)).unwrap();
            assert!(
                env.lines().any(|l| l == format!("{name}={file}")),
                "{name} is in the env file as delivered: {env}"
            );
            for bad in ['\\', '#', '@', '$', '\'', '"'] {
                assert!(!file.contains(bad), "{name} holds {bad:?}");
            }
        }
    }
}

/// An imported certificate already inside its `renew_before` window is named by `apply`, with
/// what renews it: otherwise the user learns of it when a consumer sees it expire.
#[test]
fn an_imported_certificate_inside_its_renew_before_window_is_named_by_apply_and_renewed_by_keyd() {
    let tmp = TempDir::new("renewnote");
    let src = tmp.join("src");
    std::fs::create_dir(&src).unwrap();
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=db.example", "-keyout"])
        .arg(src.join("CERT_KEY"))
        .arg("-out")
        .arg(src.join("CERT"))
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    std::fs::write(
        tmp.join("app.toml"),
        "[stack]\nname = \"app\"\n\n[secrets.CERT]\nkind = \"tls\"\nkey = \"CERT_KEY\"\ncn = \"db.example\"\ndays = 30\n",
    )
    .unwrap();
    let home = tmp.join("home");
    ok(keyctl(&home)
        .args(["import", "--policy"])
        .arg(tmp.join("app.toml"))
        .arg(&src));
    let out = run(keyctl(&home)
        .args(["apply", "--policy"])
        .arg(tmp.join("app.toml"))
        .arg("--out")
        .arg(tmp.join("out")));
    assert!(out.status.success(), "{out:?}");
    let shown =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        shown.contains("CERT: its certificate (v1) ends in 4")
            && shown.contains("inside renew_before (10 days)")
            && shown.contains("keyctl rotate CERT"),
        "{shown}"
    );

    // The daemon's pass renews it at once (the certificate a policy could not ask for: one
    // made inside its own window would be renewed in a loop, so `renew_before` < `days`).
    ok(keyd_tests::keyd(&home).arg("--once"));
    let store = keyd::store::Home::new(&home).peek().unwrap();
    let cert = store.stacks["app"].secrets["CERT"].current().unwrap();
    assert_eq!(cert.number, 2, "renewed");
    let keyd::material::Material::Tls(tls) = &cert.material else {
        panic!("not a certificate");
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(tls.not_after - now > 29 * 86_400, "a 30-day certificate");
}
