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
    let second = format!("{first}_v2");
    assert_eq!(s.secrets(), vec![first.clone(), second.clone()]);
    assert_eq!(
        service_secret(&service),
        format!("{second} db_password -r--------")
    );
    wait_seen(&seen, &v2, "the service's new task to read version 2");

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
    s.quickstart();
    let first = s.swarm_name("db_password");
    let (service, seen) = s.consumer(&first, "");
    wait_seen(
        &seen,
        &s.value("db_password"),
        "the service to read version 1",
    );

    let mut child = s
        .keyctl()
        .args(["rotate", "db_password"])
        .env("KEYD_PAUSE_AFTER", "deliver")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stderr.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    while !line.contains("paused after deliver") {
        line.clear();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stderr.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert!(!line.is_empty(), "keyctl ended before pausing");
    }
    child.kill().unwrap();
    child.wait().unwrap();

    // The next run finishes the rotation: one new secret, the service on it, nothing twice.
    ok(s.keyctl()
        .args(["apply", "--swarm", "--policy"])
        .arg(&s.policy));
    let second = format!("{first}_v2");
    assert_eq!(s.secrets(), vec![first.clone(), second.clone()]);
    assert_eq!(
        service_secret(&service),
        format!("{second} db_password -r--------")
    );
    wait_seen(
        &seen,
        &s.value("db_password"),
        "the service to read version 2",
    );
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
