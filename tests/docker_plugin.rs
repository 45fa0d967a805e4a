//! keyd as Docker's secret-provider plugin (`keyd --docker-plugin`), against the real engine:
//! a service mounting a driver-backed Swarm secret reads keyd's value, and after a rotation a
//! new task reads the new one; an unknown secret fails the task (keyd's reason in its log: the
//! engine does not pass a driver's message on); a peer that is not root is refused; and the
//! protocol's answers over the real socket, exactly as Docker reads them.
//! Every test uses a plugin socket of its own under /run/docker/plugins and removes it.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use keyd_tests::docker::{DockerTest, docker, docker_ok, wait_until};
use keyd_tests::{TempDir, http_exchange as exchange, keyctl, keyd, ok};

const POLICY: &str = r#"[stack]
name = "app"

[secrets.DB_PASSWORD]
kind = "password"

[secrets.JWT_KEY]
kind = "rsa"
bits = 2048
jwks = "JWT_JWKS"
"#;

/// A keyd home with the policy above applied; the files sink writes to `<dir>/out`.
fn home(dir: &Path) -> PathBuf {
    home_with(dir, "")
}

/// [`home`] with more policy text (`[sinks.plugin]`).
fn home_with(dir: &Path, extra: &str) -> PathBuf {
    std::fs::write(dir.join("app.toml"), format!("{POLICY}{extra}")).unwrap();
    let home = dir.join("home");
    ok(keyctl(&home)
        .arg("quickstart")
        .arg("--policy")
        .arg(dir.join("app.toml"))
        .arg("--out")
        .arg(dir.join("out")));
    home
}

/// A keyd serving the plugin socket `/run/docker/plugins/<name>.sock` for stack `app`; killed
/// and its socket removed on drop.
struct Plugin {
    child: Child,
    name: String,
    socket: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Plugin {
    fn start(home: &Path, name: &str, extra: &[&str]) -> Plugin {
        let socket = PathBuf::from(format!("/run/docker/plugins/{name}.sock"));
        let mut child = keyd(home)
            .arg("--socket")
            .arg(home.join("keyd.sock"))
            .arg("--docker-plugin")
            .arg(&socket)
            .args(["--plugin-stack", "app"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        for _ in 0..2 {
            let mut line = String::new();
            stderr.read_line(&mut line).unwrap();
            log.lock().unwrap().push(line);
        }
        assert!(
            log.lock().unwrap()[1].contains("secret-provider plugin on"),
            "{:?}",
            log.lock().unwrap()
        );
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Plugin {
            child,
            name: name.to_owned(),
            socket,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn get_secret(socket: &Path, request: &serde_json::Value) -> serde_json::Value {
    let (status, content_type, body) = exchange(
        socket,
        "POST",
        "/SecretProvider.GetSecret",
        &request.to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "application/vnd.docker.plugins.v1.2+json");
    serde_json::from_str(&body).unwrap()
}

fn decode(answer: &serde_json::Value) -> String {
    let value = answer["Value"].as_str().unwrap();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn the_plugin_protocol_answers_as_docker_reads_it_and_nothing_else() {
    let tmp = TempDir::new("plugin-protocol");
    let home = home(tmp.path());
    let name = format!("keyd-proto-{}", std::process::id());
    let plugin = Plugin::start(&home, &name, &[]);
    let s = &plugin.socket;
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(s).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (status, content_type, body) = exchange(s, "POST", "/Plugin.Activate", "");
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/vnd.docker.plugins.v1.2+json");
    assert_eq!(body, r#"{"Implements":["secretprovider"]}"#);

    // The fields swarmkit sends; the output is chosen by its delivered name.
    let password = std::fs::read_to_string(tmp.join("out/DB_PASSWORD")).unwrap();
    let request = |secret: &str, labels: BTreeMap<&str, &str>| {
        keyd_tests::get_secret_request(secret, serde_json::json!(labels))
    };
    let answer = get_secret(s, &request("DB_PASSWORD", BTreeMap::new()));
    assert_eq!(decode(&answer), password);
    assert_eq!(answer["Err"], "");
    assert_eq!(answer["DoNotReuse"], false);
    let answer = get_secret(
        s,
        &request(
            "jwks-for-web",
            BTreeMap::from([("keyd.secret", "app/JWT_JWKS"), ("keyd.reuse", "false")]),
        ),
    );
    assert_eq!(
        decode(&answer),
        std::fs::read_to_string(tmp.join("out/JWT_JWKS")).unwrap()
    );
    assert_eq!(answer["DoNotReuse"], true);
    let answer = get_secret(
        s,
        &request(
            "x",
            BTreeMap::from([("keyd.secret", "DB_PASSWORD"), ("keyd.stack", "app")]),
        ),
    );
    assert_eq!(decode(&answer), password);

    // Refusals: an Err with keyd's message and no value.
    for (secret, labels, message) in [
        ("NOPE", BTreeMap::new(), "no secret named \"NOPE\""),
        (
            "x",
            BTreeMap::from([("keyd.secret", "other/DB_PASSWORD")]),
            "names stack \"other\", but the service (namespace \"app\") is served stack \"app\" only",
        ),
        (
            "x",
            BTreeMap::from([("keyd.secret", "app/DB_PASSWORD"), ("keyd.reuse", "maybe")]),
            "expected true or false",
        ),
    ] {
        let answer = get_secret(s, &request(secret, labels));
        assert_eq!(answer["Value"], "", "{answer}");
        assert!(
            answer["Err"].as_str().unwrap().contains(message),
            "{answer}"
        );
    }

    // Protocol errors: Docker's client reads {"Err": …} from a non-200 answer.
    let (status, _, body) = exchange(s, "POST", "/SecretProvider.GetSecret", "not json");
    assert_eq!(status, 400);
    assert!(
        body.contains("\"Err\":\"malformed GetSecret body"),
        "{body}"
    );
    // The plugin socket has only the plugin's routes, the API socket none of them.
    let (status, _, body) = exchange(s, "GET", "/v1/status", "");
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = exchange(s, "GET", "/Plugin.Activate", "");
    assert_eq!(status, 405, "{body}");
    let (status, _, _) = exchange(
        &home.join("keyd.sock"),
        "POST",
        "/SecretProvider.GetSecret",
        &request("DB_PASSWORD", BTreeMap::new()).to_string(),
    );
    assert_eq!(status, 404);

    // Names in the log, never a value.
    let log = plugin.log();
    assert!(log.contains("served app/DB_PASSWORD v1"), "{log}");
    assert!(!log.contains(password.trim()), "the value is in keyd's log");
}

#[test]
fn a_peer_that_is_not_root_is_refused_on_the_plugin_socket() {
    let tmp = TempDir::new("plugin-peer");
    let home = home(tmp.path());
    let name = format!("keyd-peer-{}", std::process::id());
    let plugin = Plugin::start(&home, &name, &[]);
    // perl from /usr/bin: a client any uid can run.
    let script = "use IO::Socket::UNIX; my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die \"connect: $!\\n\"; print $s \"POST /SecretProvider.GetSecret HTTP/1.1\\r\\nContent-Length: 28\\r\\n\\r\\n{\\\"SecretName\\\":\\\"DB_PASSWORD\\\"}\"; my $b = ''; while (sysread($s, $b, 4096, length $b)) {} print $b;";
    let as_nobody = |socket: &Path| {
        Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "/usr/bin/perl",
                "-e",
                script,
            ])
            .arg(socket)
            .output()
            .unwrap()
    };
    // The socket is 0600 root's (in a 0700 directory): nobody cannot even connect.
    let refused = as_nobody(&plugin.socket);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("connect: Permission denied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Made reachable by mistake (a link in an open directory, the socket's mode widened), the
    // peer rule still refuses: 403, no value.
    let open = tmp.join("open");
    std::fs::create_dir(&open).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
    let served = keyd(&home)
        .arg("--socket")
        .arg(open.join("api.sock"))
        .arg("--docker-plugin")
        .arg(open.join("plugin.sock"))
        .args(["--plugin-stack", "app"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut served = Kill(served);
    let mut stderr = BufReader::new(served.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    stderr.read_line(&mut line).unwrap();
    std::fs::set_permissions(
        open.join("plugin.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let refused = as_nobody(&open.join("plugin.sock"));
    let text = String::from_utf8_lossy(&refused.stdout);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.contains("uid 65534 is not allowed to use this socket (see keyd --plugin-allow-uid)"),
        "{text}"
    );
    let password = std::fs::read_to_string(tmp.join("out/DB_PASSWORD")).unwrap();
    assert!(!text.contains(password.trim()));
    drop(plugin);
}

/// Creates the Swarm secret `name` served by the secret driver `driver` from the store's
/// `keyd_secret` (`STACK/NAME`), labelled for this test, with `labels` besides.
fn driver_secret(t: &DockerTest, driver: &str, name: &str, keyd_secret: &str, labels: &[&str]) {
    let (test, secret) = (t.label(), format!("keyd.secret={keyd_secret}"));
    let mut args = vec!["secret", "create", "--driver", driver, "--label", &test];
    args.extend(["--label", secret.as_str()]);
    for label in labels {
        args.extend(["--label", label]);
    }
    args.push(name);
    docker_ok(&args);
}

/// A service of the consumer image that copies `/run/secrets/<target>` into `out` (a new host
/// directory, `seen` in the test's, bind-mounted at /out), then waits. Labelled as a service of
/// the Docker stack `app` (what `docker stack deploy` sets), the namespace the plugin serves
/// stack `app` to. Returns the service's name and `out`.
fn consumer_service(
    t: &DockerTest,
    image: &str,
    secret: &str,
    target: &str,
) -> (String, std::path::PathBuf) {
    let out = t.dir.join("seen");
    std::fs::create_dir(&out).unwrap();
    let service = t.name("consumer");
    docker_ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "--label",
        &t.label(),
        "--label",
        "com.docker.stack.namespace=app",
        "--container-label",
        &t.label(),
        "--restart-condition",
        "none",
        "--secret",
        &format!("source={secret},target={target}"),
        "--mount",
        &format!("type=bind,src={},dst=/out", out.display()),
        image,
        "/bin/sh",
        "-c",
        &format!(
            "cp /run/secrets/{target} /out/{target}.tmp && mv /out/{target}.tmp /out/{target}; sleep 600"
        ),
    ]);
    (service, out)
}

/// `docker service ps --no-trunc` of `service`: each task's state and error.
fn tasks(service: &str) -> String {
    let out = docker(&[
        "service",
        "ps",
        "--no-trunc",
        "--format",
        "{{.Name}} {{.CurrentState}} {{.Error}}",
        service,
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_service_reads_a_driver_backed_secret_from_keyd() {
    let mut t = DockerTest::new("plg");
    t.swarm();
    let image = t.consumer_image();
    // The policy names the plugin: a rotation restarts the tasks of the services using it.
    let home = home_with(
        t.dir.path(),
        &format!(
            "\n[sinks.plugin]\ndriver = \"{}\"\nupdate_timeout = \"90s\"\n",
            t.name("keyd")
        ),
    );
    let plugin = Plugin::start(&home, &t.name("keyd"), &[]);
    let secret = t.name("db-password");
    driver_secret(
        &t,
        &plugin.name,
        &secret,
        "app/DB_PASSWORD",
        &["keyd.reuse=false"],
    );
    let (service, out) = consumer_service(&t, &image, &secret, "db_password");
    let seen = wait_until(
        "the consumer to copy its secret",
        Duration::from_secs(90),
        || std::fs::read_to_string(out.join("db_password")).ok(),
        || format!("{}\nkeyd:\n{}", tasks(&service), plugin.log()),
    );
    let stored = std::fs::read_to_string(t.dir.join("out/DB_PASSWORD")).unwrap();
    assert_eq!(seen, stored);
    assert!(plugin.log().contains("served app/DB_PASSWORD v1"));

    // Rotated through keyd: the plugin sink bumps the service's ForceUpdate and waits for its
    // new task, which asks the plugin again and sees the new value.
    std::fs::remove_file(out.join("db_password")).unwrap();
    let force_before = docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.TaskTemplate.ForceUpdate}}",
        &service,
    ]);
    ok(keyctl(&home)
        .arg("--socket")
        .arg(home.join("keyd.sock"))
        .args(["rotate", "DB_PASSWORD"]));
    let rotated = std::fs::read_to_string(t.dir.join("out/DB_PASSWORD")).unwrap();
    assert_ne!(rotated, stored);
    let force_after = docker_ok(&[
        "service",
        "inspect",
        "--format",
        "{{.Spec.TaskTemplate.ForceUpdate}}",
        &service,
    ]);
    assert_ne!(force_before, force_after, "keyd bumped ForceUpdate");
    let seen = wait_until(
        "the new task to copy its secret",
        Duration::from_secs(90),
        || std::fs::read_to_string(out.join("db_password")).ok(),
        || format!("{}\nkeyd:\n{}", tasks(&service), plugin.log()),
    );
    assert_eq!(seen, rotated);
    assert!(!plugin.log().contains(rotated.trim()));
}

#[test]
fn an_unknown_secret_fails_the_task_and_keyd_logs_why() {
    let mut t = DockerTest::new("plgx");
    t.swarm();
    let image = t.consumer_image();
    let home = home(t.dir.path());
    let plugin = Plugin::start(&home, &t.name("keyd"), &[]);
    let secret = t.name("missing");
    driver_secret(&t, &plugin.name, &secret, "app/NO_SUCH_SECRET", &[]);
    let (service, out) = consumer_service(&t, &image, &secret, "missing");
    // Engine 20.10 (swarmkit's dispatcher) logs a driver's Err at debug level and sends the
    // task without the secret: the task fails with "secret … not found", not keyd's words.
    // keyd's message is in keyd's log, naming the Swarm secret and the task.
    let error = wait_until(
        "the task to fail without the secret",
        Duration::from_secs(90),
        || {
            let tasks = tasks(&service);
            (tasks.contains("Failed") || tasks.contains("Rejected")).then_some(tasks)
        },
        || format!("{}\nkeyd:\n{}", tasks(&service), plugin.log()),
    );
    assert!(error.contains("unable to get secret"), "{error}");
    let log = wait_until(
        "keyd to log its refusal",
        Duration::from_secs(10),
        || {
            let log = plugin.log();
            log.contains(&format!(
                "refused Swarm secret {secret} to task {service}.1."
            ))
            .then_some(log)
        },
        || plugin.log(),
    );
    assert!(
        log.contains("no secret named \\\"NO_SUCH_SECRET\\\" in stack \\\"app\\\""),
        "{log}"
    );
    assert!(
        !out.join("missing").exists(),
        "the consumer ran with a value"
    );
}

/// A managed plugin (`docker plugin create`), disabled and removed on drop.
struct ManagedPlugin(String);

impl Drop for ManagedPlugin {
    fn drop(&mut self) {
        let _ = docker(&["plugin", "disable", "--force", &self.0]);
        let _ = docker(&["plugin", "rm", "--force", &self.0]);
    }
}

#[test]
fn keyd_packaged_as_a_managed_plugin_serves_a_service() {
    let mut t = DockerTest::new("mplg");
    t.swarm();
    let consumer = t.consumer_image();
    let home = home(t.dir.path());
    // The rootfs: keyd and the libraries ldd lists, FROM scratch.
    let keyd_binary = keyd_tests::binary("keyd");
    let ldd = ok(Command::new("ldd").arg(&keyd_binary));
    let libraries: Vec<PathBuf> = String::from_utf8(ldd)
        .unwrap()
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    let mut files = vec![(keyd_binary.clone(), "keyd".to_owned())];
    for library in &libraries {
        files.push((
            std::fs::canonicalize(library).unwrap(),
            library.to_str().unwrap().trim_start_matches('/').to_owned(),
        ));
    }
    let files: Vec<(&Path, &str)> = files
        .iter()
        .map(|(p, n)| (p.as_path(), n.as_str()))
        .collect();
    let image = t.build_image(
        "keyd-test-plugin-rootfs",
        "FROM scratch\nCOPY . /\n",
        &files,
    );
    let plugin_dir = t.dir.join("plugin");
    let rootfs = plugin_dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    let container = docker_ok(&["create", "--label", &t.label(), &image, "/keyd"]);
    let export = t.dir.join("rootfs.tar");
    docker_ok(&["export", "-o", export.to_str().unwrap(), &container]);
    docker_ok(&["rm", &container]);
    ok(Command::new("tar")
        .arg("-xf")
        .arg(&export)
        .arg("-C")
        .arg(&rootfs));
    for dir in ["data", "run/keyd", "run/docker/plugins", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir)).unwrap();
    }
    let config = serde_json::json!({
        "description": "keyd: Docker secret provider",
        "documentation": "docs/plugin.md",
        "entrypoint": ["/keyd", "--home", "/data", "--socket", "/run/keyd/api.sock",
                       "--docker-plugin", "/run/docker/plugins/keyd.sock", "--plugin-stack", "app"],
        "interface": {"types": ["docker.secretprovider/1.0"], "socket": "keyd.sock"},
        "network": {"type": "none"},
        "mounts": [{"name": "home", "description": "the keyd home", "source": home,
                    "destination": "/data", "type": "bind", "options": ["rbind", "rw"],
                    "settable": ["source"]}],
        "linux": {"capabilities": []},
    });
    std::fs::write(plugin_dir.join("config.json"), config.to_string()).unwrap();
    let name = format!("keyd-test-managed:{}", t.id);
    let plugin = ManagedPlugin(name.clone());
    docker_ok(&["plugin", "create", &name, plugin_dir.to_str().unwrap()]);
    docker_ok(&["plugin", "enable", &name]);
    let secret = t.name("managed-db");
    driver_secret(&t, &name, &secret, "app/DB_PASSWORD", &[]);
    let (service, out) = consumer_service(&t, &consumer, &secret, "db_password");
    let seen = wait_until(
        "the consumer to copy the managed plugin's secret",
        Duration::from_secs(90),
        || std::fs::read_to_string(out.join("db_password")).ok(),
        || tasks(&service),
    );
    assert_eq!(
        seen,
        std::fs::read_to_string(t.dir.join("out/DB_PASSWORD")).unwrap()
    );
    // The plugin goes before the services and secrets that use it are removed: remove those
    // first (the DockerTest's drop then finds nothing left of them).
    docker_ok(&["service", "rm", &service]);
    wait_until(
        "the consumer's containers to go",
        Duration::from_secs(60),
        || {
            docker_ok(&[
                "ps",
                "-a",
                "-q",
                "--filter",
                &format!("label={}", t.label()),
            ])
            .is_empty()
            .then_some(())
        },
        || docker_ok(&["ps", "-a"]),
    );
    docker_ok(&["secret", "rm", &secret]);
    drop(plugin);
}
