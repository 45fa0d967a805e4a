//! Helpers for the tests that drive the real Docker engine (the test binaries named `docker_*`,
//! which nextest runs one at a time in the `docker` test group: swarms, secrets and plugin
//! sockets are machine-wide). Each test takes a [`DockerTest`]: it gives unique names, labels
//! what the test makes with `keyd.test=<id>`, builds the local images the test needs (there is
//! no registry), joins or initialises a swarm, and on drop removes everything it made (services,
//! containers, secrets, configs, networks, volumes, images; by label, or by the id in their
//! name) and leaves the swarm if it initialised it.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::{TempDir, run_within};

/// How long one `docker` command may take before the test fails.
const DOCKER_LIMIT: Duration = Duration::from_secs(180);

/// Runs `docker args…` (bounded by a timeout).
pub fn docker(args: &[&str]) -> Output {
    run_within(Command::new("docker").args(args), DOCKER_LIMIT)
}

/// Runs `docker args…`, which must succeed; returns stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed with {}:\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Calls `check` every 250 ms until it returns `Some`, failing the test after `limit` with
/// `what` and the last state `describe` gives.
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
    describe: impl Fn() -> String,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; last seen:\n{}",
            describe()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// One test's Docker resources.
pub struct DockerTest {
    /// A short id unique to this test run: part of every name, the value of `keyd.test`.
    pub id: String,
    /// A scratch directory (build contexts, bind mounts), removed on drop.
    pub dir: TempDir,
    made_swarm: bool,
    images: Vec<String>,
    /// Held until this test has removed what it made (fields drop after `Drop::drop`).
    _one_at_a_time: MachineLock,
}

/// Who holds the machine-wide lock in this process: a thread and how many `DockerTest`s it
/// has open (a test may make a second one while the first lives), with the locked file.
struct LockState {
    owner: Option<std::thread::ThreadId>,
    depth: usize,
    file: Option<std::fs::File>,
}

static LOCK: std::sync::Mutex<LockState> = std::sync::Mutex::new(LockState {
    owner: None,
    depth: 0,
    file: None,
});
static LOCK_FREED: std::sync::Condvar = std::sync::Condvar::new();

/// An exclusive lock on a machine-wide file: Docker tests never overlap, whether nextest runs
/// them as processes (its `docker` group does the same) or `cargo test` runs a binary's tests
/// on threads. A thread that holds it may take it again (flock alone would block on itself).
struct MachineLock;

impl MachineLock {
    fn take() -> MachineLock {
        let me = std::thread::current().id();
        let mut state = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        while state.owner.is_some_and(|o| o != me) {
            state = LOCK_FREED.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        if state.owner.is_none() {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(std::env::temp_dir().join("keyd-docker-tests.lock"))
                .expect("the Docker tests' lock file");
            file.lock().expect("waiting for the other Docker tests");
            state.file = Some(file);
            state.owner = Some(me);
        }
        state.depth += 1;
        MachineLock
    }
}

impl Drop for MachineLock {
    fn drop(&mut self) {
        let mut state = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        state.depth -= 1;
        if state.depth == 0 {
            state.file = None;
            state.owner = None;
            LOCK_FREED.notify_all();
        }
    }
}

impl DockerTest {
    /// A new test id; fails the test when the Docker engine does not answer.
    pub fn new(tag: &str) -> DockerTest {
        let lock = MachineLock::take();
        let out = docker(&["version", "--format", "{{.Server.APIVersion}}"]);
        assert!(
            out.status.success(),
            "the Docker engine does not answer (these tests need it; `.ci/run` runs on a machine with one): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let id = format!(
            "{tag}{:x}",
            (nanos ^ u128::from(std::process::id())) & 0xff_ffff
        );
        DockerTest {
            dir: TempDir::new(&id),
            id,
            made_swarm: false,
            images: Vec::new(),
            _one_at_a_time: lock,
        }
    }

    /// `base-<id>`: a name no other test uses.
    pub fn name(&self, base: &str) -> String {
        format!("{base}-{}", self.id)
    }

    /// The label every resource of this test carries.
    pub fn label(&self) -> String {
        format!("keyd.test={}", self.id)
    }

    /// Makes sure this node is a swarm manager: initialises a swarm on loopback when there is
    /// none (and leaves it again on drop).
    pub fn swarm(&mut self) {
        let state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        if state != "active" {
            docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
            self.made_swarm = true;
        }
    }

    /// Whether this node is in a swarm now.
    pub fn in_swarm(&self) -> bool {
        docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]) == "active"
    }

    /// Leaves the swarm on drop (one the code under test initialised).
    pub fn leave_swarm_on_drop(&mut self) {
        self.made_swarm = true;
    }

    /// Builds an image from a Dockerfile and files copied into its context, tagged
    /// `<repo>:<id>`, labelled, and removed on drop. Returns the tag.
    pub fn build_image(&mut self, repo: &str, dockerfile: &str, files: &[(&Path, &str)]) -> String {
        let context = self.dir.join(format!("build-{repo}"));
        std::fs::create_dir_all(&context).unwrap();
        for (from, to) in files {
            let dest = context.join(to);
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(from, &dest)
                .unwrap_or_else(|e| panic!("copying {} into the image: {e}", from.display()));
        }
        std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
        let tag = format!("{repo}:{}", self.id);
        docker_ok(&[
            "build",
            "--quiet",
            "--label",
            &self.label(),
            "-t",
            &tag,
            context.to_str().unwrap(),
        ]);
        self.images.push(tag.clone());
        tag
    }

    /// A consumer image: nothing but Debian's busybox-static, its applets installed in /bin.
    pub fn consumer_image(&mut self) -> String {
        let tag = format!("keyd-test-consumer:{}", self.id);
        let script = crate::workspace().join("docker/build-image.sh");
        let out = run_within(
            Command::new("bash").arg(&script).args(["--consumer", &tag]),
            DOCKER_LIMIT,
        );
        assert!(
            out.status.success(),
            "docker/build-image.sh --consumer failed (it needs Debian's busybox-static):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.images.push(tag.clone());
        tag
    }

    /// The keyd image, built by `docker/build-image.sh` from the binaries under test (tagged
    /// `keyd-test:<id>`, removed on drop).
    pub fn keyd_image(&mut self) -> String {
        let tag = format!("keyd-test:{}", self.id);
        let script = crate::workspace().join("docker/build-image.sh");
        let out = run_within(
            Command::new("bash")
                .arg(&script)
                .args([&tag, "debug"])
                .env("KEYD_BIN", crate::binary("keyd"))
                .env("KEYCTL_BIN", crate::binary("keyctl")),
            DOCKER_LIMIT,
        );
        assert!(
            out.status.success(),
            "docker/build-image.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.images.push(tag.clone());
        tag
    }

    /// Names of the swarm secrets whose name contains this test's id, sorted.
    pub fn secrets(&self) -> Vec<String> {
        let mut names: Vec<String> = docker_ok(&["secret", "ls", "--format", "{{.Name}}"])
            .lines()
            .filter(|n| n.contains(&self.id))
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    /// Removes what `list` prints (`ID NAME` lines): every line when `list` filters by this
    /// test's label, else the lines whose name holds this test's id.
    fn remove_all(&self, list: &[&str], remove: &[&str]) {
        let by_label = list.iter().any(|a| a.starts_with("label="));
        let out = docker(list);
        let text = String::from_utf8_lossy(&out.stdout);
        let ids: Vec<&str> = text
            .lines()
            .filter_map(|l| {
                let (id, name) = l.split_once(' ').unwrap_or((l, ""));
                (by_label || name.contains(&self.id)).then_some(id)
            })
            .filter(|id| !id.is_empty())
            .collect();
        if !ids.is_empty() {
            let mut args = remove.to_vec();
            args.extend(ids);
            let _ = docker(&args);
        }
    }
}

impl Drop for DockerTest {
    fn drop(&mut self) {
        let label = format!("label={}", self.label());
        // Services first (their tasks hold secrets and networks), by label or by name.
        for filter in [
            vec![
                "service",
                "ls",
                "--filter",
                &label,
                "--format",
                "{{.ID}} {{.Name}}",
            ],
            vec!["service", "ls", "--format", "{{.ID}} {{.Name}}"],
        ] {
            self.remove_all(&filter, &["service", "rm"]);
        }
        self.remove_all(
            &["ps", "-a", "--format", "{{.ID}} {{.Names}}"],
            &["rm", "-f", "-v"],
        );
        self.remove_all(
            &["ps", "-a", "--filter", &label, "--format", "{{.ID}} x"],
            &["rm", "-f", "-v"],
        );
        // A removed service's containers take a moment to go; secrets and networks they used
        // cannot be removed before.
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            let left = docker(&["ps", "-a", "-q", "--filter", &label]);
            let named = docker(&["ps", "-a", "--format", "{{.Names}}"]);
            let named = String::from_utf8_lossy(&named.stdout).contains(&self.id);
            if left.stdout.is_empty() && !named {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        self.remove_all(
            &["secret", "ls", "--format", "{{.ID}} {{.Name}}"],
            &["secret", "rm"],
        );
        self.remove_all(
            &["config", "ls", "--format", "{{.ID}} {{.Name}}"],
            &["config", "rm"],
        );
        self.remove_all(
            &["network", "ls", "--format", "{{.ID}} {{.Name}}"],
            &["network", "rm"],
        );
        self.remove_all(
            &["volume", "ls", "--format", "{{.Name}} {{.Name}}"],
            &["volume", "rm", "-f"],
        );
        for image in &self.images {
            let _ = docker(&["image", "rm", "-f", image]);
        }
        if self.made_swarm {
            let _ = docker(&["swarm", "leave", "--force"]);
        }
    }
}
