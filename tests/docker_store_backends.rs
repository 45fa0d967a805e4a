//! The swarm store (`--store swarm:NAME`) against the real engine, one node standing in for
//! several managers: homes that hold only the identity see one store; rotations racing from two
//! homes, and from two daemons, leave one linear history and a target whose password is the
//! store's; a store too large for one config is kept in parts and read whole; a keyd killed at
//! any step of a rotation is finished by another home with nothing made twice; and two plugin
//! processes serve a rotation made through either within a second.

use std::io::{BufRead as _, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keyd_tests::docker::{DockerTest, docker_ok};
use keyd_tests::servers::Redis;
use keyd_tests::{TempDir, keyctl, keyd, ok, run};

/// A swarm store named after the test, and homes that open it.
struct SwarmStore {
    t: DockerTest,
    store: String,
    first: TempDir,
}

impl SwarmStore {
    fn new(tag: &str) -> SwarmStore {
        let mut t = DockerTest::new(tag);
        t.swarm();
        let store = format!("swarm:{}", t.id);
        SwarmStore {
            t,
            store,
            first: TempDir::new("swarm-store-home"),
        }
    }

    /// keyctl on `home`, on this store.
    fn keyctl(&self, home: &Path) -> Command {
        let mut cmd = keyctl(home);
        cmd.env("KEYD_STORE", &self.store);
        cmd
    }

    /// Quickstarts `policy` from the first home (files into `out` when given), then makes a
    /// second home holding only its identity; returns both homes.
    fn two_homes(&self, policy: &Path, out: Option<&str>) -> (PathBuf, TempDir) {
        let a = self.first.path().to_owned();
        let mut quickstart = self.keyctl(&a);
        quickstart.args(["quickstart", "--policy"]).arg(policy);
        if let Some(out) = out {
            quickstart.arg("--out").arg(self.t.dir.join(out));
        }
        ok(&mut quickstart);
        (a, self.other_home())
    }

    /// A home holding only a copy of the first home's identity (a keyd task on another node).
    fn other_home(&self) -> TempDir {
        let other = TempDir::new("swarm-store-other");
        let identity = other.join("identity.txt");
        std::fs::copy(self.first.join("identity.txt"), &identity).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&identity, std::fs::Permissions::from_mode(0o600)).unwrap();
        other
    }

    /// `keyctl history NAME --json`'s version numbers and the current one.
    fn versions(&self, home: &Path, name: &str) -> (Vec<u64>, u64) {
        let out = ok(self.keyctl(home).args(["history", name, "--json"]));
        let history: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let versions = history["versions"].as_array().unwrap();
        let numbers = versions
            .iter()
            .map(|v| v["version"].as_u64().unwrap())
            .collect();
        let current = versions
            .iter()
            .find(|v| v["label"] == "current")
            .map(|v| v["version"].as_u64().unwrap())
            .unwrap();
        (numbers, current)
    }

    fn show(&self, home: &Path, name: &str, version: u64) -> String {
        String::from_utf8(ok(self.keyctl(home).args([
            "show",
            name,
            "--version",
            &version.to_string(),
        ])))
        .unwrap()
    }

    /// The names of the store's heads, one per generation, as the engine lists them.
    fn heads(&self) -> Vec<String> {
        docker_ok(&[
            "config",
            "ls",
            "--filter",
            &format!("label=keyd.store.head={}", self.t.id),
            "--format",
            "{{.Name}}",
        ])
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// The store's generations as the engine lists them (head configs).
    fn generations(&self) -> usize {
        self.heads().len()
    }

    /// Each head's number of parts (its `keyd.store.parts` label), oldest first.
    fn head_parts(&self) -> Vec<usize> {
        let mut heads: Vec<(u64, usize)> = self
            .heads()
            .iter()
            .map(|name| {
                let labels = docker_ok(&[
                    "config",
                    "inspect",
                    "--format",
                    "{{index .Spec.Labels \"keyd.store.generation\"}} \
                 {{index .Spec.Labels \"keyd.store.parts\"}}",
                    name,
                ]);
                let (g, p) = labels.trim().split_once(' ').unwrap();
                (g.parse().unwrap(), p.parse().unwrap())
            })
            .collect();
        heads.sort();
        heads.into_iter().map(|(_, parts)| parts).collect()
    }

    /// How many parts (the configs holding a generation's data) the store has.
    fn parts(&self) -> usize {
        docker_ok(&[
            "config",
            "ls",
            "--filter",
            &format!("label=keyd.store={}", self.t.id),
            "--filter",
            "label=keyd.store.part-of",
            "--format",
            "{{.Name}}",
        ])
        .lines()
        .count()
    }
}

/// One linear history: versions 1..=n, each once.
fn assert_linear(numbers: &[u64]) {
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(numbers, expected, "the history forked or skipped a number");
}

fn redis_policy(dir: &Path, redis: &Redis) -> PathBuf {
    std::fs::write(dir.join("redis-admin"), &redis.admin_password).unwrap();
    let policy = dir.join("race.toml");
    std::fs::write(
        &policy,
        format!(
            r#"[stack]
name = "race"

[targets.cache]
type = "redis"
url = "redis://127.0.0.1:{port}"
user = "default"
password_file = "{admin}"

[secrets.REDIS_PASSWORD]
kind = "password"
grace = "1h"
target = {{ name = "cache", user = "app", acl = "~app:* +@all", mode = "acl" }}
"#,
            port = redis.port,
            admin = dir.join("redis-admin").display(),
        ),
    )
    .unwrap();
    policy
}

#[test]
fn two_homes_holding_one_identity_see_one_swarm_store_and_racing_rotations_never_fork_it() {
    let s = SwarmStore::new("sr");
    let redis = Redis::start("swarm-race", true);
    let policy = redis_policy(s.t.dir.path(), &redis);
    let (a, b) = s.two_homes(&policy, Some("out-a"));
    // The second home has no store of its own: it reads the one in the swarm.
    let (numbers, current) = s.versions(b.path(), "REDIS_PASSWORD");
    assert_eq!((numbers, current), (vec![1], 1));
    assert!(redis.can_login("app", &s.show(b.path(), "REDIS_PASSWORD", 1)));

    let mut conflicts = 0;
    for round in 0..3 {
        let spawn = |home: &Path| {
            s.keyctl(home)
                .args(["rotate", "REDIS_PASSWORD"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        };
        let racers = [spawn(&a), spawn(b.path())];
        let results: Vec<(bool, String)> = racers
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().unwrap();
                (
                    out.status.success(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            })
            .collect();
        assert!(
            results.iter().any(|(done, _)| *done),
            "round {round}: neither rotation went through: {results:?}"
        );
        for (done, stderr) in &results {
            if !done && stderr.contains("committed generation") {
                conflicts += 1;
            }
        }
        // One history seen alike from both homes; the target holds the store's password.
        let (numbers, current) = s.versions(&a, "REDIS_PASSWORD");
        assert_linear(&numbers);
        assert_eq!(
            s.versions(b.path(), "REDIS_PASSWORD"),
            (numbers.clone(), current)
        );
        let value = s.show(b.path(), "REDIS_PASSWORD", current);
        assert!(
            redis.can_login("app", &value),
            "round {round}: the target lost the store's password"
        );
        // After retire, no older password logs in.
        ok(s.keyctl(b.path()).args(["retire", "REDIS_PASSWORD"]));
        for old in numbers.iter().filter(|&&n| n < current) {
            let old_value = s.show(&a, "REDIS_PASSWORD", *old);
            assert!(
                !redis.can_login("app", &old_value),
                "round {round}: retired v{old} still logs in"
            );
        }
        assert!(redis.can_login("app", &value));
    }
    eprintln!("commit conflicts seen: {conflicts}");
    assert!(s.generations() <= 10, "old generations were not pruned");
    // A small store lives in its heads, one config a generation: no part was made, by the
    // winners or by a racer that lost.
    assert_eq!(s.parts(), 0, "a small store was cut into parts");
    assert_eq!(s.head_parts(), vec![0; s.generations()]);
}

#[test]
fn a_store_larger_than_one_config_is_kept_in_parts_and_read_whole_from_another_home() {
    let s = SwarmStore::new("sl");
    // Encrypted, more than the engine takes in one config (1,023,999 bytes).
    let mut text = String::from("[stack]\nname = \"big\"\n");
    for i in 0..7000 {
        text.push_str(&format!("\n[secrets.P{i:04}]\nkind = \"password\"\n"));
    }
    let policy = s.t.dir.join("big.toml");
    std::fs::write(&policy, text).unwrap();
    let (a, b) = s.two_homes(&policy, None);
    // The newest generation holds the 7,000 secrets (quickstart's first may be smaller).
    let per_generation = *s.head_parts().last().unwrap();
    assert!(per_generation >= 2, "{per_generation} parts");
    assert_eq!(s.parts(), s.head_parts().iter().sum::<usize>());

    // Two homes rotate at once: whoever loses leaves no part behind.
    let racers: Vec<Child> = [a.as_path(), b.path()]
        .into_iter()
        .map(|home| {
            s.keyctl(home)
                .args(["rotate", "P1234"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut racer in racers {
        racer.wait().unwrap();
    }
    let (numbers, current) = s.versions(b.path(), "P1234");
    assert_linear(&numbers);
    assert!(current >= 2, "no rotation went through");
    assert_eq!(*s.head_parts().last().unwrap(), per_generation);
    assert_eq!(
        s.show(b.path(), "P1234", current),
        s.show(&a, "P1234", current)
    );
    assert_eq!(
        s.parts(),
        s.head_parts().iter().sum::<usize>(),
        "parts left behind"
    );
}

/// A keyd daemon on the store, its stderr gathered.
struct Daemon {
    child: Child,
    socket: PathBuf,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Daemon {
    fn start(s: &SwarmStore, home: &Path, plugin: Option<&Path>) -> Daemon {
        let socket = home.join("keyd.sock");
        let mut cmd = keyd(home);
        cmd.env("KEYD_STORE", &s.store)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(p) = plugin {
            cmd.arg("--docker-plugin")
                .arg(p)
                .args(["--plugin-stack", "app"]);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut l = lines.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let d = Daemon { child, socket, log };
        d.wait_for("ready on", Duration::from_secs(30));
        d
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn wait_for(&self, what: &str, limit: Duration) {
        let started = Instant::now();
        while !self.log().contains(what) {
            assert!(
                started.elapsed() < limit,
                "keyd did not say {what:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_daemons_on_one_swarm_store_schedule_by_one_lease_and_their_rotations_stay_linear() {
    let s = SwarmStore::new("sd");
    let policy = s.t.dir.join("app.toml");
    std::fs::write(
        &policy,
        "[stack]\nname = \"app\"\n\n[secrets.SESSION_KEY]\nkind = \"token\"\n",
    )
    .unwrap();
    let (a, b) = s.two_homes(&policy, Some("out"));
    let first = Daemon::start(&s, &a, None);
    first.wait_for("holding the scheduler lease", Duration::from_secs(20));
    let second = Daemon::start(&s, b.path(), None);
    // The second one serves, and does not schedule while the first renews its lease.
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !second.log().contains("holding the scheduler lease"),
        "two keyd schedule at once:\n{}",
        second.log()
    );

    // Rotations through both daemons' APIs at once: one linear history.
    for _ in 0..3 {
        let through = |d: &Daemon, home: &Path| {
            s.keyctl(home)
                .arg("--socket")
                .arg(&d.socket)
                .args(["rotate", "SESSION_KEY"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        };
        let racers = [through(&first, &a), through(&second, b.path())];
        for mut c in racers {
            c.wait().unwrap();
        }
    }
    let (numbers, _) = s.versions(&a, "SESSION_KEY");
    assert!(numbers.len() >= 4, "{numbers:?}");
    assert_linear(&numbers);

    // The lease holder stops: the other takes the lease over once it lapses.
    drop(first);
    second.wait_for("holding the scheduler lease", Duration::from_secs(30));
}

/// The steps a rotation of a secret with no target and no grace passes (it ends at promote).
const STEPS: [&str; 5] = ["create", "set", "test", "deliver", "promote"];

#[test]
fn a_keyd_killed_at_each_step_on_the_swarm_store_is_finished_by_another_home_with_nothing_made_twice()
 {
    let s = SwarmStore::new("sk");
    let stack = s.t.id.clone();
    let policy = s.t.dir.join("p.toml");
    std::fs::write(
        &policy,
        format!(
            "[stack]\nname = \"{stack}\"\n\n[sinks.swarm]\nprefix = \"{stack}_\"\n\n\
             [secrets.FERNET_KEY]\nkind = \"fernet\"\nkeep = 10\n"
        ),
    )
    .unwrap();
    let (a, b) = s.two_homes(&policy, None);
    for (i, step) in STEPS.iter().enumerate() {
        let mut child = s
            .keyctl(&a)
            .args(["rotate", "FERNET_KEY"])
            .env("KEYD_PAUSE_AFTER", step)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        stderr.read_line(&mut line).unwrap();
        if line.trim() != format!("keyd: paused after {step}") {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            panic!("the rotation did not pause after {step}: {line}{rest}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Another home (a new task on another node) finishes what the killed one started.
        let once = run(keyd(b.path()).env("KEYD_STORE", &s.store).arg("--once"));
        assert!(
            once.status.success(),
            "after a kill at {step}: {}",
            String::from_utf8_lossy(&once.stderr)
        );
        let (numbers, current) = s.versions(b.path(), "FERNET_KEY");
        assert_linear(&numbers);
        assert_eq!(
            current,
            i as u64 + 2,
            "after a kill at {step}: one new version, finished"
        );
        // One Swarm secret per version: nothing published twice, none lost.
        let secrets = docker_ok(&[
            "secret",
            "ls",
            "--filter",
            &format!("label=keyd.stack={stack}"),
            "--format",
            "{{.Name}}",
        ]);
        let mut names: Vec<&str> = secrets.lines().collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            numbers.len(),
            "after a kill at {step}: {names:?}"
        );
    }
}

/// One GetSecret on a plugin socket; the value served.
fn get_secret(socket: &Path, name: &str) -> String {
    let body = keyd_tests::get_secret_request(name, serde_json::json!({})).to_string();
    let (status, _, body) =
        keyd_tests::http_exchange(socket, "POST", "/SecretProvider.GetSecret", &body);
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(answer["Value"].as_str().unwrap_or_default())
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn two_plugins_on_one_swarm_store_serve_a_rotation_made_through_either_within_a_second() {
    let s = SwarmStore::new("sp");
    let policy = s.t.dir.join("app.toml");
    std::fs::write(
        &policy,
        "[stack]\nname = \"app\"\n\n[secrets.DB_PASSWORD]\nkind = \"password\"\n",
    )
    .unwrap();
    let (a, b) = s.two_homes(&policy, Some("out"));
    // Sockets outside /run/docker/plugins: the engine does not discover them; the test speaks
    // the plugin protocol itself.
    let (pa, pb) = (s.t.dir.join("a-plugin.sock"), s.t.dir.join("b-plugin.sock"));
    let first = Daemon::start(&s, &a, Some(&pa));
    let second = Daemon::start(&s, b.path(), Some(&pb));
    let v1 = s.show(&a, "DB_PASSWORD", 1);
    assert_eq!(get_secret(&pa, "DB_PASSWORD"), v1);
    assert_eq!(get_secret(&pb, "DB_PASSWORD"), v1);

    let mut worst = Duration::ZERO;
    for (through, other, home) in [(&first, &pb, a.as_path()), (&second, &pa, b.path())] {
        ok(s.keyctl(home).arg("--socket").arg(&through.socket).args([
            "rotate",
            "DB_PASSWORD",
            "--force",
        ]));
        let committed = Instant::now();
        let (_, current) = s.versions(home, "DB_PASSWORD");
        let value = s.show(home, "DB_PASSWORD", current);
        loop {
            if get_secret(other, "DB_PASSWORD") == value {
                break;
            }
            assert!(
                committed.elapsed() < Duration::from_secs(10),
                "the other plugin never served v{current}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        worst = worst.max(committed.elapsed());
    }
    eprintln!("propagation to the other plugin: at most {worst:?}");
    // Measured, not timed: bench/store.py reports the figure. This bounds only a broken watch.
    assert!(worst < Duration::from_secs(5), "{worst:?}");
    assert!(!first.log().contains(&v1) && !second.log().contains(&v1));
}
