//! The Swarm sink against the real Docker engine: quickstart publishes Swarm secrets, a service
//! from a locally built image reads them, a rotation creates the next version and rolls the
//! service onto it, retire removes the old one, and re-running creates nothing. Faults: a
//! service update that fails leaves the service on the old secret; a rotation killed after its
//! deliver step is completed by the next run; bad names and an unreachable engine are clear
//! errors. Every test cleans up what it made (see `keyd_tests::docker`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use keyd_tests::docker::{DockerTest, docker, docker_ok, wait_until};
use keyd_tests::{TempDir, keyctl, ok, run};

/// A stack of one password delivered to Swarm (and nowhere else), its secret names prefixed
/// with the test's id.
struct SwarmStack {
    t: DockerTest,
    home: TempDir,
    policy: std::path::PathBuf,
    stack: String,
}

impl SwarmStack {
    fn new(tag: &str, extra_policy: &str) -> SwarmStack {
        let mut t = DockerTest::new(tag);
        t.swarm();
        let stack = t.id.clone();
        let home = TempDir::new("swarm-home");
        let policy = t.dir.join("p.toml");
        std::fs::write(
            &policy,
            format!(
                "[stack]\nname = \"{stack}\"\n\n[sinks.swarm]\nprefix = \"{stack}_\"\nnames_env = \"names.env\"\nupdate_timeout = \"90s\"\n\n\
                 [secrets.db_password]\nkind = \"password\"\nlength = 24\n{extra_policy}"
            ),
        )
        .unwrap();
        SwarmStack {
            t,
            home,
            policy,
            stack,
        }
    }

    fn keyctl(&self) -> Command {
        keyctl(self.home.path())
    }

    fn quickstart(&self) -> String {
        let out = ok(self
            .keyctl()
            .args(["quickstart", "--swarm", "--policy"])
            .arg(&self.policy));
        String::from_utf8(out).unwrap()
    }

    fn value(&self, name: &str) -> String {
        String::from_utf8(ok(self.keyctl().args(["show", name]))).unwrap()
    }

    fn swarm_name(&self, output: &str) -> String {
        format!("{}_{output}", self.stack)
    }

    /// Quickstart, then a consumer of the first `db_password` secret, once it has read
    /// version 1: the first secret's name, the service and its `seen` file.
    fn serving_version_1(&mut self) -> (String, String, std::path::PathBuf) {
        self.quickstart();
        let first = self.swarm_name("db_password");
        let (service, seen) = self.consumer(&first, "");
        wait_seen(
            &seen,
            &self.value("db_password"),
            "the service to read version 1",
        );
        (first, service, seen)
    }

    /// That the rotation of `db_password` is done: its second secret `FIRST_v2` published beside
    /// the first, `service` repointed to it, and the service reading version 2 in `seen`.
    /// Returns the second secret's name.
    fn serving_version_2(&self, first: &str, service: &str, seen: &Path) -> String {
        let second = format!("{first}_v2");
        assert_eq!(self.secrets(), vec![first.to_owned(), second.clone()]);
        assert_eq!(
            service_secret(service),
            format!("{second} db_password -r--------")
        );
        wait_seen(
            seen,
            &self.value("db_password"),
            "the service to read version 2",
        );
        second
    }

    /// A service of the consumer image that copies /run/secrets/db_password to `seen` in a
    /// bind-mounted directory every 200 ms, and runs `check` first (a shell test that ends the
    /// task when it fails).
    fn consumer(&mut self, secret: &str, check: &str) -> (String, std::path::PathBuf) {
        let image = self.t.consumer_image();
        let out = self.t.dir.join("out");
        std::fs::create_dir_all(&out).unwrap();
        let name = self.t.name("consumer");
        let script = format!(
            "{check}\nwhile true; do cat /run/secrets/db_password > /out/seen.tmp && mv /out/seen.tmp /out/seen; sleep 0.2; done"
        );
        docker_ok(&[
            "service",
            "create",
            "--detach",
            "--name",
            &name,
            "--label",
            &self.t.label(),
            "--secret",
            &format!("source={secret},target=db_password,mode=0400"),
            "--mount",
            &format!("type=bind,source={},target=/out", out.display()),
            "--restart-condition",
            "none",
            &image,
            "sh",
            "-c",
            &script,
        ]);
        (name, out.join("seen"))
    }

    fn secrets(&self) -> Vec<String> {
        self.t.secrets()
    }
}

fn service_secret(service: &str) -> String {
    docker_ok(&[
        "service",
        "inspect",
        service,
        "--format",
        "{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{.SecretName}} {{.File.Name}} {{.File.Mode}}{{end}}",
    ])
}

fn wait_seen(seen: &Path, value: &str, what: &str) {
    wait_until(
        what,
        Duration::from_secs(120),
        || (std::fs::read_to_string(seen).ok()? == value).then_some(()),
        || format!("{:?}", std::fs::read_to_string(seen).ok().map(|v| v.len())),
    );
}

#[test]
fn swarm_secrets_follow_quickstart_rotate_and_retire_into_a_running_service() {
    let mut s = SwarmStack::new("sw", "");
    let summary = s.quickstart();
    let first = s.swarm_name("db_password");
    assert!(
        summary.contains("swarm"),
        "the summary names the swarm sink:\n{summary}"
    );
    assert_eq!(s.secrets(), vec![first.clone()]);
    let labels = docker_ok(&[
        "secret",
        "inspect",
        &first,
        "--format",
        "{{json .Spec.Labels}}",
    ]);
    for label in [
        "\"keyd.managed\":\"true\"",
        &format!("\"keyd.stack\":\"{}\"", s.stack),
        "\"keyd.secret\":\"db_password\"",
        "\"keyd.version\":\"1\"",
    ] {
        assert!(labels.contains(label), "{label} missing from {labels}");
    }
    let v1 = s.value("db_password");
    let (service, seen) = s.consumer(&first, "");
    wait_seen(&seen, &v1, "the service to read version 1");

    // Rotate: a new secret, the service rolled onto it (target file and mode kept).
    ok(s.keyctl().args(["rotate", "db_password"]));
    let v2 = s.value("db_password");
    assert_ne!(v1, v2);
    let second = s.serving_version_2(&first, &service, &seen);

    // Status and the names file say which Swarm secret is current.
    let status = String::from_utf8(ok(s.keyctl().args(["status", "--json"]))).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        parsed.pointer("/0/swarm/db_password"),
        Some(&serde_json::Value::String(second.clone())),
        "{status}"
    );
    let names = std::fs::read_to_string(s.t.dir.join("names.env")).unwrap();
    assert!(
        names.contains(&format!("KEYD_SWARM_DB_PASSWORD={second}\n")),
        "{names}"
    );

    // Retire: the old secret is gone.
    ok(s.keyctl().args(["retire", "db_password"]));
    assert_eq!(s.secrets(), vec![second.clone()]);

    // Re-running creates nothing and touches no service.
    let version = docker_ok(&[
        "service",
        "inspect",
        &service,
        "--format",
        "{{.Version.Index}}",
    ]);
    s.quickstart();
    ok(s.keyctl()
        .args(["apply", "--swarm", "--policy"])
        .arg(&s.policy));
    assert_eq!(s.secrets(), vec![second]);
    assert_eq!(
        docker_ok(&[
            "service",
            "inspect",
            &service,
            "--format",
            "{{.Version.Index}}"
        ]),
        version
    );
    assert!(
        !summary.contains(&v1) && !status.contains(&v2),
        "no value is printed"
    );
}

#[test]
fn a_service_update_that_fails_fails_the_rotation_and_the_service_keeps_the_old_secret() {
    let mut s = SwarmStack::new("swfail", "");
    s.quickstart();
    let first = s.swarm_name("db_password");
    let v1 = s.value("db_password");
    // The first task records the value; any later task whose value differs exits at once.
    let (service, seen) = s.consumer(
        &first,
        "[ -f /out/first ] || cat /run/secrets/db_password > /out/first\ncmp -s /run/secrets/db_password /out/first || { echo 'consumer: refusing a new password'; exit 1; }",
    );
    wait_seen(&seen, &v1, "the service to read version 1");

    let out = run(s.keyctl().args(["rotate", "db_password"]));
    let stderr = String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the rotation must fail: {stderr}");
    assert!(
        stderr.contains(&format!("service {service}")) && stderr.contains("rolled back"),
        "the error names the service and what happened to it:\n{stderr}"
    );
    // The service is back on the old secret and its running task serves the old value.
    assert_eq!(
        service_secret(&service),
        format!("{first} db_password -r--------")
    );
    std::fs::remove_file(&seen).unwrap();
    wait_seen(&seen, &v1, "the rolled-back service to serve version 1");
    let status = String::from_utf8(ok(s.keyctl().args(["status", "--json"]))).unwrap();
    assert!(
        status.contains("rolled back"),
        "status keeps the error:\n{status}"
    );
}

#[test]
fn a_swarm_rotation_killed_after_its_deliver_step_is_completed_by_the_next_run() {
    let mut s = SwarmStack::new("swkill", "");
    let (first, service, seen) = s.serving_version_1();

    let mut child = s
        .keyctl()
        .args(["rotate", "db_password"])
        .env("KEYD_PAUSE_AFTER", "deliver")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    read_until(
        &mut std::io::BufReader::new(child.stderr.as_mut().unwrap()),
        "paused after deliver",
    );
    child.kill().unwrap();
    child.wait().unwrap();

    // The next run finishes the rotation: one new secret, the service on it, nothing twice.
    ok(s.keyctl()
        .args(["apply", "--swarm", "--policy"])
        .arg(&s.policy));
    let second = s.serving_version_2(&first, &service, &seen);
    ok(s.keyctl().args(["retire", "db_password"]));
    assert_eq!(s.secrets(), vec![second]);
}

#[test]
fn a_name_swarm_cannot_hold_is_a_policy_error_and_an_unreachable_engine_a_clear_one() {
    let s = SwarmStack::new(
        "swbad",
        &format!("\n[secrets.{}]\nkind = \"token\"\n", "x".repeat(50)),
    );
    let out = run(s.keyctl().args(["policy", "check"]).arg(&s.policy));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("p.toml:") && stderr.contains("Swarm allows 64"),
        "{stderr}"
    );

    let s = SwarmStack::new("swgone", "");
    let out = run(s
        .keyctl()
        .args(["quickstart", "--swarm", "--policy"])
        .arg(&s.policy)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cannot reach the Docker engine at unix:///nonexistent/docker.sock"),
        "{stderr}"
    );
    assert!(s.secrets().is_empty());
    // Nothing else is left half done: the next run with the engine back publishes.
    s.quickstart();
    assert_eq!(s.secrets(), vec![s.swarm_name("db_password")]);
    let _ = docker(&["version"]);
}

#[test]
fn init_swarm_makes_this_node_a_manager_when_it_is_not_one_and_changes_nothing_when_it_is() {
    let mut t = DockerTest::new("swinit");
    let was_in_swarm = t.in_swarm();
    let home = TempDir::new("swarm-init-home");
    let policy = t.dir.join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "[stack]\nname = \"{}\"\n\n[sinks.swarm]\nprefix = \"{}_\"\n\n[secrets.token]\nkind = \"token\"\n",
            t.id, t.id
        ),
    )
    .unwrap();
    if !was_in_swarm {
        // Without --init-swarm: a clear error that says how to fix it, and nothing published.
        let out = run(keyctl(home.path())
            .args(["quickstart", "--swarm", "--policy"])
            .arg(&policy));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("not a swarm manager") && stderr.contains("docker swarm init"),
            "{stderr}"
        );
    }
    let out = run(keyctl(home.path())
        .args(["quickstart", "--init-swarm", "--policy"])
        .arg(&policy));
    if !was_in_swarm && t.in_swarm() {
        t.leave_swarm_on_drop();
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.in_swarm());
    assert_eq!(t.secrets(), vec![format!("{}_token", t.id)]);
}

/// The id of the running container of swarm service `service` (the newest when two run during
/// an update).
fn running_container(service: &str) -> Option<String> {
    let out = docker(&[
        "ps",
        "-q",
        "--filter",
        &format!("label=com.docker.swarm.service.name={service}"),
        "--filter",
        "status=running",
    ]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .map(str::to_owned)
}

#[test]
fn keyd_as_a_swarm_service_rotates_through_docker_exec_into_the_app_stack() {
    let mut t = DockerTest::new("svc");
    t.swarm();
    let keyd_image = t.keyd_image();
    let app_image = t.consumer_image();
    let id = t.id.clone();
    // The examples, with this test's names.
    let dir = t.dir.join("swarm");
    std::fs::create_dir_all(&dir).unwrap();
    let example = keyd_tests::workspace().join("examples/swarm");
    for f in ["keyd-stack.yml", "app-stack.yml"] {
        std::fs::copy(example.join(f), dir.join(f)).unwrap();
    }
    let policy = std::fs::read_to_string(example.join("policy.toml"))
        .unwrap()
        .replace("name = \"example\"", &format!("name = \"{id}\""))
        .replace("prefix = \"example_\"", &format!("prefix = \"{id}_\""));
    std::fs::write(dir.join("policy.toml"), policy).unwrap();

    // The identity, made once outside the service and given to it as a Swarm secret.
    let id_home = TempDir::new("swarm-identity");
    ok(keyctl(id_home.path()).arg("init"));
    docker_ok(&[
        "secret",
        "create",
        "--label",
        &t.label(),
        &format!("{id}_identity"),
        id_home.join("identity.txt").to_str().unwrap(),
    ]);
    drop(id_home);
    let env = [
        ("KEYD_IMAGE", keyd_image.clone()),
        ("APP_IMAGE", app_image.clone()),
        ("KEYD_IDENTITY_SECRET", format!("{id}_identity")),
        ("KEYD_POLICY_CONFIG", format!("{id}_policy")),
        ("KEYD_STORE_NAME", id.clone()),
        ("DB_PASSWORD_SECRET", format!("{id}_db_password")),
        ("SESSION_KEY_SECRET", format!("{id}_session_key")),
    ];
    let deploy = |file: &str, stack: &str| {
        let mut cmd = Command::new("docker");
        cmd.current_dir(&dir).args([
            "stack",
            "deploy",
            "--resolve-image",
            "never",
            "-c",
            file,
            stack,
        ]);
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = keyd_tests::run_within(&mut cmd, Duration::from_secs(120));
        assert!(
            out.status.success(),
            "docker stack deploy -c {file} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (keyd_stack, app_stack) = (format!("{id}k"), format!("{id}a"));
    deploy("keyd-stack.yml", &keyd_stack);

    // keyd comes up healthy on its own, with the store made in the swarm and the secrets
    // published.
    let keyd_service = format!("{keyd_stack}_keyd");
    let healthy = |not: Option<&str>| {
        wait_until(
            "keyd's task to be healthy",
            Duration::from_secs(120),
            || {
                let c = running_container(&keyd_service)?;
                let health = docker_ok(&["inspect", "--format", "{{.State.Health.Status}}", &c]);
                (health == "healthy" && Some(c.as_str()) != not).then_some(c)
            },
            || docker_ok(&["service", "ps", "--no-trunc", &keyd_service]),
        )
    };
    let keyd = healthy(None);
    let published = vec![
        format!("{id}_db_password"),
        format!("{id}_identity"),
        format!("{id}_session_key"),
    ];
    assert_eq!(t.secrets(), published);
    let exec = |container: &str, args: &[&str]| {
        let mut all = vec!["exec", container];
        all.extend_from_slice(args);
        docker_ok(&all)
    };
    let listing = exec(&keyd, &["keyctl", "status"]);
    assert!(listing.contains("db_password"), "{listing}");
    assert!(listing.contains(&format!("swarm:{id}")), "{listing}");
    // The store is in the swarm's configs, and no volume of the stack holds state.
    let configs = docker_ok(&[
        "config",
        "ls",
        "--filter",
        &format!("label=keyd.store.head={id}"),
        "--format",
        "{{.Name}}",
    ]);
    assert!(configs.contains(&format!("keyd-store-{id}-g")), "{configs}");
    let volumes = docker_ok(&["volume", "ls", "--format", "{{.Name}}"]);
    assert!(!volumes.contains(&keyd_stack), "{volumes}");

    deploy("app-stack.yml", &app_stack);
    let app_service = format!("{app_stack}_app");
    let v1 = exec(&keyd, &["keyctl", "show", "db_password"]);
    wait_until(
        "the app to read db_password",
        Duration::from_secs(120),
        || {
            let c = running_container(&app_service)?;
            let seen = docker(&["exec", &c, "cat", "/run/secrets/db_password"]);
            (String::from_utf8_lossy(&seen.stdout) == v1).then_some(())
        },
        || docker_ok(&["service", "ps", "--no-trunc", &app_service]),
    );

    // Rotate through the keyd service: the app's new task reads the new value.
    exec(&keyd, &["keyctl", "rotate", "db_password"]);
    let v2 = exec(&keyd, &["keyctl", "show", "db_password"]);
    assert_ne!(v1, v2);
    wait_until(
        "the app's new task to read the new db_password",
        Duration::from_secs(120),
        || {
            let c = running_container(&app_service)?;
            let seen = docker(&["exec", &c, "cat", "/run/secrets/db_password"]);
            (String::from_utf8_lossy(&seen.stdout) == v2).then_some(())
        },
        || docker_ok(&["service", "ps", "--no-trunc", &app_service]),
    );
    let status = exec(&keyd, &["keyctl", "status", "--json"]);
    assert!(status.contains(&format!("{id}_db_password_v2")), "{status}");
    let history = exec(&keyd, &["keyctl", "history", "db_password", "--json"]);
    let secrets = t.secrets();

    // The task replaced (`service update --force`), then the service scaled to 0 and back: each
    // new task, on a node with nothing of the old one, carries on with the same versions and
    // creates no secret twice; the next rotation still reaches the app.
    docker_ok(&["service", "update", "--detach", "--force", &keyd_service]);
    let keyd = healthy(Some(&keyd));
    assert_eq!(exec(&keyd, &["keyctl", "show", "db_password"]), v2);
    assert_eq!(
        exec(&keyd, &["keyctl", "history", "db_password", "--json"]),
        history
    );
    docker_ok(&["service", "scale", "--detach", &format!("{keyd_service}=0")]);
    wait_until(
        "keyd's task to stop",
        Duration::from_secs(60),
        || running_container(&keyd_service).is_none().then_some(()),
        || docker_ok(&["service", "ps", &keyd_service]),
    );
    docker_ok(&["service", "scale", "--detach", &format!("{keyd_service}=1")]);
    let keyd = healthy(Some(&keyd));
    assert_eq!(exec(&keyd, &["keyctl", "show", "db_password"]), v2);
    assert_eq!(t.secrets(), secrets, "a new task created a secret again");
    exec(&keyd, &["keyctl", "rotate", "db_password"]);
    let v3 = exec(&keyd, &["keyctl", "show", "db_password"]);
    assert_ne!(v2, v3);
    wait_until(
        "the app's new task to read the third db_password",
        Duration::from_secs(120),
        || {
            let c = running_container(&app_service)?;
            let seen = docker(&["exec", &c, "cat", "/run/secrets/db_password"]);
            (String::from_utf8_lossy(&seen.stdout) == v3).then_some(())
        },
        || docker_ok(&["service", "ps", "--no-trunc", &app_service]),
    );

    for stack in [&app_stack, &keyd_stack] {
        let _ = docker(&["stack", "rm", stack]);
    }
}

/// Reads `child`'s stderr until a line containing `what`; fails if it ends first.
fn read_until(stderr: &mut impl std::io::BufRead, what: &str) -> String {
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "ended before {what:?}; said:\n{seen}"
        );
        seen.push_str(&line);
        if line.contains(what) {
            return seen;
        }
    }
}

#[test]
fn keyd_killed_mid_swarm_rotation_completes_it_when_it_starts_again() {
    let mut s = SwarmStack::new("swkeyd", "");
    let (first, service, seen) = s.serving_version_1();
    let socket = s.home.join("keyd.sock");
    let start = |pause: Option<&str>| {
        let mut cmd = keyd_tests::keyd(s.home.path());
        cmd.arg("--socket")
            .arg(&socket)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(p) = pause {
            cmd.env("KEYD_PAUSE_AFTER", p);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        read_until(&mut stderr, "ready on");
        (child, stderr)
    };

    // A rotation through the daemon, which is killed once the new version is created.
    let (mut daemon, mut stderr) = start(Some("create"));
    let mut client = s
        .keyctl()
        .arg("--socket")
        .arg(&socket)
        .args(["rotate", "db_password"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    read_until(&mut stderr, "paused after create");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let _ = client.wait();
    assert_eq!(s.secrets(), vec![first.clone()], "nothing published yet");

    // Started again, keyd finishes the rotation: one new secret, the service rolled onto it.
    let (mut daemon, _stderr) = start(None);
    s.serving_version_2(&first, &service, &seen);
    daemon.kill().unwrap();
    daemon.wait().unwrap();
}
