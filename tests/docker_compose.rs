//! keyd as a compose sidecar, with the real docker-compose: the stack in `examples/compose`
//! comes up with keyd healthy before the app starts, the app reads every secret from the shared
//! tmpfs volume, and a rotation made through keyd reaches the running app without a restart.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use keyd_tests::docker::{DockerTest, docker_ok, wait_until};
use keyd_tests::{run_within, workspace};

/// `docker-compose -p PROJECT args…` in `dir`, with the images the test built.
fn compose(dir: &Path, project: &str, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new("docker-compose");
    cmd.current_dir(dir).arg("-p").arg(project).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_within(&mut cmd, Duration::from_secs(180))
}

fn text(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Brings the project down (containers, network, volumes) even when the test fails.
struct Down<'a>(&'a Path, &'a str);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = compose(self.0, self.1, &[], &["down", "-v", "--timeout", "2"]);
    }
}

#[test]
fn a_compose_sidecar_delivers_every_secret_and_a_rotation_reaches_the_running_app() {
    let mut t = DockerTest::new("cmp");
    let keyd_image = t.keyd_image();
    let app_image = t.consumer_image();
    let dir = t.dir.join("project");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["docker-compose.yml", "policy.toml"] {
        std::fs::copy(workspace().join("examples/compose").join(f), dir.join(f)).unwrap();
    }
    let compose_file = std::fs::read_to_string(dir.join("docker-compose.yml")).unwrap();
    assert!(
        !compose_file.contains("PASSWORD="),
        "no value in the compose file"
    );
    let project = t.id.clone();
    let env = [
        ("KEYD_IMAGE", keyd_image.as_str()),
        ("APP_IMAGE", app_image.as_str()),
    ];
    let _down = Down(&dir, &project);
    text(
        &compose(&dir, &project, &env, &["up", "-d"]),
        "docker-compose up",
    );

    // compose started the app only after keyd's healthcheck passed: every value is there.
    let exec = |service: &str, cmd: &[&str]| {
        let mut args = vec!["exec", "-T", service];
        args.extend_from_slice(cmd);
        text(
            &compose(&dir, &project, &env, &args),
            &format!("exec {cmd:?}"),
        )
    };
    let health = docker_ok(&[
        "inspect",
        "--format",
        "{{.State.Health.Status}}",
        &format!("{project}_keyd_1"),
    ]);
    assert_eq!(health, "healthy");
    // keyd did all that with no capabilities, no way to gain any, a read-only root filesystem
    // and not as root.
    let keyd_config = docker_ok(&[
        "inspect",
        "--format",
        "{{json .HostConfig.CapDrop}} {{json .HostConfig.CapAdd}} {{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.SecurityOpt}} {{.Config.User}}",
        &format!("{project}_keyd_1"),
    ]);
    assert_eq!(
        keyd_config, r#"["ALL"] null true ["no-new-privileges:true"] 65532:65532"#,
        "the sidecar's CapDrop, CapAdd, ReadonlyRootfs, SecurityOpt and User"
    );
    for name in ["DB_PASSWORD", "SECRET_KEY", "FERNET_KEYS"] {
        let stored = exec("keyd", &["keyctl", "show", name]);
        assert!(!stored.is_empty());
        assert_eq!(
            exec("app", &["cat", &format!("/run/secrets/{name}")]),
            stored
        );
    }
    let app_container = docker_ok(&[
        "inspect",
        "--format",
        "{{.Id}}",
        &format!("{project}_app_1"),
    ]);

    // A rotation through the running keyd reaches the running app.
    let before = exec("keyd", &["keyctl", "show", "DB_PASSWORD"]);
    exec("keyd", &["keyctl", "rotate", "DB_PASSWORD"]);
    let after = exec("keyd", &["keyctl", "show", "DB_PASSWORD"]);
    assert_ne!(before, after);
    wait_until(
        "the app to read the new DB_PASSWORD",
        Duration::from_secs(30),
        || (exec("app", &["cat", "/run/secrets/DB_PASSWORD"]) == after).then_some(()),
        || "the old value".into(),
    );
    assert_eq!(
        docker_ok(&[
            "inspect",
            "--format",
            "{{.Id}}",
            &format!("{project}_app_1")
        ]),
        app_container,
        "the app was not restarted"
    );
    // keyd's store stays encrypted on its volume; the values only on the tmpfs volume.
    let listing = exec("keyd", &["keyctl", "status"]);
    assert!(listing.contains("DB_PASSWORD"), "{listing}");
}

#[test]
fn keyctl_compose_prints_the_sidecar_block_of_the_example_and_compose_accepts_it() {
    let t = DockerTest::new("cmpblk");
    let policy = workspace().join("examples/compose/policy.toml");
    let block = String::from_utf8(keyd_tests::ok(
        Command::new(keyd_tests::binary("keyctl"))
            .args([
                "compose",
                "--image",
                "${KEYD_IMAGE:-keyd:local}",
                "--policy",
            ])
            .arg(&policy),
    ))
    .unwrap();
    // The example is this block plus an app: they cannot drift apart.
    let example =
        std::fs::read_to_string(workspace().join("examples/compose/docker-compose.yml")).unwrap();
    let start = block.find("\nservices:\n").unwrap() + "\nservices:\n".len();
    let service = &block[start..block.find("\nvolumes:").unwrap()];
    let volumes = &block[block.find("volumes:\n  # keyd's").unwrap()..];
    assert!(
        example.contains(service),
        "the example's keyd service differs from:\n{service}"
    );
    assert!(
        example.contains(volumes),
        "the example's volumes differ from:\n{volumes}"
    );

    // The block, with a consumer added as its comment says, is a valid compose file.
    let dir = t.dir.join("blk");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&policy, dir.join("policy.toml")).unwrap();
    let app = "  app:\n    image: busybox\n    volumes:\n      - secrets:/run/secrets:ro\n    depends_on:\n      keyd:\n        condition: service_healthy\n";
    let file = block.replacen("\nvolumes:", &format!("{app}\nvolumes:"), 1);
    std::fs::write(dir.join("docker-compose.yml"), file).unwrap();
    text(
        &compose(&dir, &t.id, &[], &["config", "--quiet"]),
        "docker-compose config",
    );

    // A policy without a files sink is refused with the fix.
    let bare = dir.join("bare.toml");
    std::fs::write(
        &bare,
        "[stack]\nname = \"b\"\n[secrets.A]\nkind = \"token\"\n",
    )
    .unwrap();
    let out = keyd_tests::run(
        Command::new(keyd_tests::binary("keyctl"))
            .args(["compose", "--policy"])
            .arg(&bare),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no [sinks.files]"));
}

#[test]
fn keyctl_compose_gives_the_sidecar_no_capabilities_unless_the_policy_chowns_to_another_uid() {
    // No engine needed: the block as docker-compose reads it.
    let tmp = keyd_tests::TempDir::new("cmpcaps");
    let block = |files: &str| {
        let policy = tmp.join("policy.toml");
        std::fs::write(
            &policy,
            format!("[stack]\nname = \"s\"\n[sinks.files]\n{files}[secrets.A]\nkind = \"token\"\n"),
        )
        .unwrap();
        let doc = keyd_tests::compose::compose_block_as_read(&policy, "keyd:local", tmp.path());
        doc["services"]["keyd"].clone()
    };
    for files in ["", "uid = 65532\ngid = 65532\nmode = \"0440\"\n"] {
        let keyd = block(files);
        assert_eq!(keyd["user"], "65532:65532", "{files}");
        assert_eq!(keyd["cap_drop"], serde_json::json!(["ALL"]), "{files}");
        assert_eq!(keyd.get("cap_add"), None, "{files}");
        assert_eq!(keyd["read_only"], true, "{files}");
        assert_eq!(
            keyd["security_opt"],
            serde_json::json!(["no-new-privileges:true"]),
            "{files}"
        );
    }
    // Files given to another uid or gid: chown needs root and CAP_CHOWN (Docker gives a
    // non-root user no effective capabilities), replacing them later DAC_OVERRIDE and FOWNER.
    for files in ["uid = 1000\n", "gid = 1000\nmode = \"0440\"\n"] {
        let keyd = block(files);
        assert_eq!(keyd["user"], "0:0", "{files}");
        assert_eq!(keyd["cap_drop"], serde_json::json!(["ALL"]), "{files}");
        assert_eq!(
            keyd["cap_add"],
            serde_json::json!(["CHOWN", "DAC_OVERRIDE", "FOWNER"]),
            "{files}"
        );
        assert_eq!(keyd["read_only"], true, "{files}");
        assert_eq!(
            keyd["security_opt"],
            serde_json::json!(["no-new-privileges:true"]),
            "{files}"
        );
    }
}
