//! Swarm secrets of derived values against the real Docker engine: a template of a rotated
//! password gets a new Swarm secret with every rotation, and retiring the password removes
//! the template's old secrets with its own once no service uses them (each of them holds a
//! retired password). Cleans up what it made (see `keyd_tests::docker`).

use keyd_tests::docker::DockerTest;
use keyd_tests::{TempDir, keyctl, ok};

#[test]
fn retiring_a_password_removes_the_swarm_secrets_of_its_templates_old_versions() {
    let mut t = DockerTest::new("tplret");
    t.swarm();
    let stack = t.id.clone();
    let home = TempDir::new("tplret-home");
    let policy = t.dir.join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "[stack]\nname = \"{stack}\"\n\n[sinks.swarm]\nprefix = \"{stack}_\"\n\n\
             [secrets.DB_PASSWORD]\nkind = \"password\"\n\n\
             [secrets.DB_URL]\nkind = \"template\"\ntemplate = \"postgres://app:{{DB_PASSWORD|url}}@db/app\"\n"
        ),
    )
    .unwrap();
    let keyctl = || keyctl(home.path());
    ok(keyctl()
        .args(["quickstart", "--swarm", "--policy"])
        .arg(&policy));
    let name = |output: &str, suffix: &str| format!("{stack}_{output}{suffix}");
    assert_eq!(
        t.secrets(),
        vec![name("DB_PASSWORD", ""), name("DB_URL", "")]
    );
    for version in [2, 3] {
        ok(keyctl().args(["rotate", "DB_PASSWORD"]));
        ok(keyctl().args(["retire", "DB_PASSWORD"]));
        let suffix = format!("_v{version}");
        assert_eq!(
            t.secrets(),
            vec![name("DB_PASSWORD", &suffix), name("DB_URL", &suffix)],
            "after rotation {version} and retire, a Swarm secret holding a retired password is left"
        );
    }
}
