//! Which stack's values keyd's Docker secret-provider plugin hands a service: only those of
//! the stack mapped to the service's `com.docker.stack.namespace` (`--plugin-stack
//! STACK[=NAMESPACE]`), whatever the Swarm secret's labels say (whoever creates a secret sets
//! them), and nothing to a service in no stack unless `--plugin-allow-unstacked` names the one
//! stack such services may read. GetSecret requests are sent to a real keyd over its plugin
//! socket exactly as swarmkit sends them; no Docker engine is needed.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use keyd_tests::{TempDir, keyctl, keyd, ok};

/// A home holding two stacks, `stacka` (`A_DB_PASSWORD`) and `stackb` (`B_DB_PASSWORD`, and a
/// `SHARED` that `stacka` has too), each delivered to `<dir>/out-<stack>`.
fn two_stacks(tmp: &TempDir) -> PathBuf {
    let home = tmp.join("home");
    for (stack, own) in [("stacka", "A_DB_PASSWORD"), ("stackb", "B_DB_PASSWORD")] {
        let policy = tmp.join(format!("{stack}.toml"));
        std::fs::write(
            &policy,
            format!(
                "[stack]\nname = \"{stack}\"\n\n[secrets.{own}]\nkind = \"password\"\n\n\
                 [secrets.SHARED]\nkind = \"token\"\n"
            ),
        )
        .unwrap();
        ok(keyctl(&home)
            .arg("quickstart")
            .arg("--policy")
            .arg(&policy)
            .arg("--out")
            .arg(tmp.join(format!("out-{stack}"))));
    }
    home
}

/// A keyd serving its plugin socket with `flags`; killed on drop.
struct Plugin {
    child: Child,
    socket: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Plugin {
    fn start(tmp: &TempDir, home: &Path, flags: &[&str]) -> Plugin {
        let socket = tmp.join("plugin.sock");
        let _ = std::fs::remove_file(&socket);
        let mut child = keyd(home)
            .arg("--socket")
            .arg(tmp.join("api.sock"))
            .arg("--docker-plugin")
            .arg(&socket)
            .args(flags)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        loop {
            let mut line = String::new();
            let read = stderr.read_line(&mut line).unwrap();
            assert!(
                read > 0,
                "keyd {flags:?} stopped before serving its plugin socket: {:?}",
                log.lock().unwrap()
            );
            let ready = line.contains("secret-provider plugin on");
            log.lock().unwrap().push(line);
            if ready {
                break;
            }
        }
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        Plugin { child, socket, log }
    }

    /// `GetSecret` for the Swarm secret `secret` with `labels`, from a service with
    /// `service_labels` (`None`: the field left out, as for a service with no labels).
    fn get_secret(
        &self,
        secret: &str,
        labels: &[(&str, &str)],
        service_labels: Option<&[(&str, &str)]>,
    ) -> serde_json::Value {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
                .collect::<serde_json::Map<_, _>>()
        };
        let mut request = serde_json::json!({
            "SecretName": secret,
            "SecretLabels": map(labels),
            "ServiceID": "svcid",
            "ServiceName": "web",
            "TaskID": "taskid",
            "TaskName": "web.1.taskid",
            "NodeID": "nodeid",
        });
        if let Some(service_labels) = service_labels {
            request["ServiceLabels"] = map(service_labels).into();
        }
        let (status, _, body) = keyd_tests::http_exchange(
            &self.socket,
            "POST",
            "/SecretProvider.GetSecret",
            &request.to_string(),
        );
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("")
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value an answer carries (`None`: refused, then `Err` says why and no value is there).
fn value(answer: &serde_json::Value) -> Option<String> {
    let err = answer["Err"].as_str().unwrap();
    let value = answer["Value"].as_str().unwrap();
    if err.is_empty() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .unwrap();
        Some(String::from_utf8(bytes).unwrap())
    } else {
        assert_eq!(value, "", "a refusal carried a value: {answer}");
        None
    }
}

fn delivered(tmp: &TempDir, stack: &str, name: &str) -> String {
    std::fs::read_to_string(tmp.join(format!("out-{stack}/{name}"))).unwrap()
}

const NAMESPACE: &str = "com.docker.stack.namespace";

/// Review finding (issue 26, medium): GetSecret decided by the Swarm secret's labels, which
/// whoever creates the secret sets. A service of stack A that named `stackb/B_DB_PASSWORD`
/// got stack B's value; a service in no stack got it by its bare name; a bare name found only
/// in another stack was served from there. Now a service reads only its own stack.
#[test]
fn a_service_is_served_only_the_stack_of_its_own_namespace() {
    let tmp = TempDir::new("plugin-own-stack");
    let home = two_stacks(&tmp);
    let plugin = Plugin::start(
        &tmp,
        &home,
        &["--plugin-stack", "stacka", "--plugin-stack", "stackb"],
    );
    let in_a: &[(&str, &str)] = &[(NAMESPACE, "stacka")];
    let b_password = delivered(&tmp, "stackb", "B_DB_PASSWORD");

    // Its own stack's values, named or not.
    let a_password = delivered(&tmp, "stacka", "A_DB_PASSWORD");
    for labels in [
        vec![],
        vec![("keyd.secret", "stacka/A_DB_PASSWORD")],
        vec![("keyd.stack", "stacka")],
    ] {
        let answer = plugin.get_secret("A_DB_PASSWORD", &labels, Some(in_a));
        assert_eq!(
            value(&answer).as_deref(),
            Some(a_password.as_str()),
            "{labels:?}"
        );
    }
    // Stack B's value, asked for by a service of stack A in every way the labels allow.
    for (secret, labels) in [
        ("x", vec![("keyd.secret", "stackb/B_DB_PASSWORD")]),
        ("B_DB_PASSWORD", vec![("keyd.stack", "stackb")]),
        ("B_DB_PASSWORD", vec![]),
        ("SHARED", vec![("keyd.stack", "stackb")]),
    ] {
        let answer = plugin.get_secret(secret, &labels, Some(in_a));
        assert_eq!(value(&answer), None, "{secret} {labels:?}: {answer}");
    }
    let answer = plugin.get_secret("x", &[("keyd.secret", "stackb/B_DB_PASSWORD")], Some(in_a));
    let err = answer["Err"].as_str().unwrap();
    assert!(
        err.contains("stack \"stackb\"") && err.contains("namespace \"stacka\""),
        "{err}"
    );

    // A name both stacks have is its own stack's, never ambiguous.
    let answer = plugin.get_secret("SHARED", &[], Some(in_a));
    assert_eq!(value(&answer), Some(delivered(&tmp, "stacka", "SHARED")));

    // A service in no stack (no labels, or none naming a namespace) gets nothing at all.
    let other_labels: &[(&str, &str)] = &[("team", "b")];
    for service_labels in [None, Some(&[][..]), Some(other_labels)] {
        for (secret, labels) in [
            ("B_DB_PASSWORD", vec![]),
            ("x", vec![("keyd.secret", "stackb/B_DB_PASSWORD")]),
            ("A_DB_PASSWORD", vec![("keyd.stack", "stacka")]),
        ] {
            let answer = plugin.get_secret(secret, &labels, service_labels);
            assert_eq!(
                value(&answer),
                None,
                "{service_labels:?} {secret}: {answer}"
            );
        }
    }
    let answer = plugin.get_secret("B_DB_PASSWORD", &[], None);
    assert!(
        answer["Err"]
            .as_str()
            .unwrap()
            .contains("--plugin-allow-unstacked"),
        "{answer}"
    );
    // A namespace no --plugin-stack maps gets nothing either.
    let answer = plugin.get_secret("B_DB_PASSWORD", &[], Some(&[(NAMESPACE, "stackc")]));
    assert_eq!(value(&answer), None, "{answer}");

    let log = plugin.log();
    assert!(!log.contains(b_password.trim()), "a value is in keyd's log");
    assert!(!log.contains(a_password.trim()), "a value is in keyd's log");
}

/// `--plugin-stack STACK=NAMESPACE` serves STACK to the services of NAMESPACE only (not to a
/// namespace named like the stack), and `--plugin-allow-unstacked STACK` serves services in
/// no stack that one stack's values, and no other's.
#[test]
fn a_namespace_maps_to_one_stack_and_unstacked_services_only_where_allowed() {
    let tmp = TempDir::new("plugin-namespaces");
    let home = two_stacks(&tmp);
    let plugin = Plugin::start(
        &tmp,
        &home,
        &[
            "--plugin-stack",
            "stacka",
            "--plugin-stack",
            "stackb=prod_b",
            "--plugin-allow-unstacked",
            "stacka",
        ],
    );
    let b_password = delivered(&tmp, "stackb", "B_DB_PASSWORD");
    let answer = plugin.get_secret("B_DB_PASSWORD", &[], Some(&[(NAMESPACE, "prod_b")]));
    assert_eq!(value(&answer), Some(b_password));
    let answer = plugin.get_secret("B_DB_PASSWORD", &[], Some(&[(NAMESPACE, "stackb")]));
    assert_eq!(value(&answer), None, "{answer}");
    let answer = plugin.get_secret("SHARED", &[], Some(&[(NAMESPACE, "prod_b")]));
    assert_eq!(value(&answer), Some(delivered(&tmp, "stackb", "SHARED")));

    let a_password = delivered(&tmp, "stacka", "A_DB_PASSWORD");
    let answer = plugin.get_secret("A_DB_PASSWORD", &[], None);
    assert_eq!(value(&answer), Some(a_password));
    let answer = plugin.get_secret("SHARED", &[], Some(&[]));
    assert_eq!(value(&answer), Some(delivered(&tmp, "stacka", "SHARED")));
    for (secret, labels) in [
        ("B_DB_PASSWORD", vec![]),
        ("x", vec![("keyd.secret", "stackb/B_DB_PASSWORD")]),
    ] {
        let answer = plugin.get_secret(secret, &labels, None);
        assert_eq!(value(&answer), None, "{secret} {labels:?}: {answer}");
    }
    drop(plugin);

    // A namespace given to two stacks, or a stack given twice, is refused at start.
    for flags in [
        &[
            "--plugin-stack",
            "stacka=shared",
            "--plugin-stack",
            "stackb=shared",
        ][..],
        &["--plugin-stack", "stacka", "--plugin-stack", "stacka=other"][..],
        &["--plugin-stack", "stacka=", "--plugin-stack", "stackb"][..],
    ] {
        let out = keyd_tests::run_within(
            keyd(&home)
                .arg("--socket")
                .arg(tmp.join("api.sock"))
                .arg("--docker-plugin")
                .arg(tmp.join("plugin.sock"))
                .args(flags),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains("--plugin-stack"), "{flags:?}: {stderr}");
    }
}
