//! keyd across nodes, against the real Docker engine (one node standing in for several): a
//! store that has no record of a stack never takes over the Swarm secrets another store
//! published for it (a rescheduled keyd with an empty volume used to fork the secrets), and a
//! planted secret with forged keyd labels is refused, not passed over.

use std::process::Command;

use keyd_tests::docker::{DockerTest, docker_ok};
use keyd_tests::{TempDir, keyctl, keyd, ok, run};

/// A stack of one password delivered only to Swarm, its secret names prefixed with the test's
/// id, and a home that quickstarted it.
struct Published {
    t: DockerTest,
    home: TempDir,
    policy: std::path::PathBuf,
    stack: String,
}

impl Published {
    fn new(tag: &str) -> Published {
        let mut t = DockerTest::new(tag);
        t.swarm();
        let stack = t.id.clone();
        let home = TempDir::new("store-home");
        let policy = t.dir.join("p.toml");
        std::fs::write(
            &policy,
            format!(
                "[stack]\nname = \"{stack}\"\n\n[sinks.swarm]\nprefix = \"{stack}_\"\nnames_env = \"names.env\"\n\n\
                 [secrets.FERNET_KEY]\nkind = \"fernet\"\n"
            ),
        )
        .unwrap();
        ok(keyctl(home.path())
            .args(["quickstart", "--policy"])
            .arg(&policy));
        Published {
            t,
            home,
            policy,
            stack,
        }
    }

    /// A second home holding only a copy of the first one's identity: a keyd task that Swarm
    /// rescheduled onto a node whose volume is empty.
    fn second_home(&self) -> TempDir {
        let other = TempDir::new("store-other");
        let identity = other.join("identity.txt");
        std::fs::copy(self.home.join("identity.txt"), &identity).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
        other
    }

    fn names_env(&self) -> String {
        std::fs::read_to_string(self.t.dir.join("names.env")).unwrap_or_default()
    }
}

fn stderr_of(cmd: &mut Command) -> (Option<i32>, String) {
    let out = run(cmd);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_keyd_with_an_empty_store_refuses_the_swarm_secrets_another_store_published() {
    let p = Published::new("lost");
    let before = p.t.secrets();
    assert_eq!(before, vec![format!("{}_FERNET_KEY", p.stack)]);
    let names_before = p.names_env();
    let other = p.second_home();

    // keyctl quickstart from the second home: refused, nothing published.
    let (code, stderr) = stderr_of(
        keyctl(other.path())
            .args(["quickstart", "--policy"])
            .arg(&p.policy),
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("Swarm secret {}_FERNET_KEY", p.stack)),
        "{stderr}"
    );
    // keyd --apply --once, as a rescheduled keyd task starts: refused too (it exited 0 and
    // published FERNET_KEY_v1 with a new key, rewriting names_env).
    let (code, stderr) = stderr_of(
        keyd(other.path())
            .arg("--apply")
            .arg(&p.policy)
            .arg("--once"),
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert_eq!(p.t.secrets(), before, "nothing was published");
    assert_eq!(p.names_env(), names_before, "names_env is unchanged");
}

#[test]
fn a_planted_secret_with_forged_keyd_labels_is_refused_not_passed_over() {
    let p = Published::new("forge");
    // What a rotation to version 2 would publish, made first by someone else with keyd's
    // labels and a digest keyd never made.
    let planted = format!("{}_FERNET_KEY_v2", p.stack);
    let labels = [
        "keyd.managed=true".to_owned(),
        format!("keyd.stack={}", p.stack),
        "keyd.secret=FERNET_KEY".to_owned(),
        "keyd.output=FERNET_KEY".to_owned(),
        "keyd.version=2".to_owned(),
        "keyd.digest=0000".to_owned(),
        p.t.label(),
    ];
    let value = p.t.dir.join("planted");
    std::fs::write(&value, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa=").unwrap();
    let mut args = vec!["secret".to_owned(), "create".to_owned()];
    for l in &labels {
        args.extend(["--label".to_owned(), l.clone()]);
    }
    args.extend([planted.clone(), value.display().to_string()]);
    docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    let (code, stderr) = stderr_of(keyctl(p.home.path()).args(["rotate", "FERNET_KEY"]));
    assert_ne!(code, Some(0), "{stderr}");
    let status = String::from_utf8(ok(keyctl(p.home.path()).args(["status", "--json"]))).unwrap();
    assert!(
        status.contains(&planted) && status.contains("never published it"),
        "{status}"
    );
    // Nothing published past it (it used to take FERNET_KEY_v2_2).
    let mut expected = vec![format!("{}_FERNET_KEY", p.stack), planted];
    expected.sort();
    assert_eq!(p.t.secrets(), expected);
}
