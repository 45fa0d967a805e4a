//! Rotation with overlap, through the real binaries: Fernet lists checked with Python's
//! cryptography, JWKS rollover checked with openssl-signed JWTs, crash safety by SIGKILL at
//! every step boundary and at random times, and concurrent rotations.

use std::io::{BufRead, BufReader, Write as _};

use base64::Engine as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use keyd_tests::{TempDir, keyctl, keyd, ok, pipe, python, quickstart, run};

const POLICY: &str = r#"[stack]
name = "app"

[secrets.FERNET_KEY]
kind = "fernet"
keep = 2
deliver = "list"

[secrets.DB_PASSWORD]
kind = "password"

[secrets.DB_URL]
kind = "template"
template = "postgres://app:{DB_PASSWORD|url}@db/app"

[secrets.JWT_KEY]
kind = "rsa"
bits = 2048
public = "JWT_PUBLIC"
jwks = "JWT_JWKS"

[secrets."cert.pem"]
kind = "tls"
key = "key.pem"
cn = "localhost"
"#;

struct Stack {
    tmp: TempDir,
}

impl Stack {
    fn new(tag: &str) -> Stack {
        let tmp = TempDir::new(tag);
        std::fs::write(tmp.join("app.toml"), POLICY).unwrap();
        quickstart(&tmp.join("home"), &tmp.join("app.toml"), &tmp.join("out"));
        Stack { tmp }
    }
    fn home(&self) -> std::path::PathBuf {
        self.tmp.join("home")
    }
    fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.tmp.join("out").join(name)).unwrap()
    }
    fn keyctl(&self) -> Command {
        keyctl(&self.home())
    }
    fn history(&self, name: &str) -> serde_json::Value {
        serde_json::from_slice(&ok(self.keyctl().args(["history", name, "--json"]))).unwrap()
    }
}

const PY_FERNET: &str = r#"
import sys
from cryptography.fernet import Fernet, MultiFernet, InvalidToken
cmd, keys, arg = sys.argv[1], sys.argv[2], sys.argv[3]
multi = MultiFernet([Fernet(k.encode()) for k in keys.split(",")])
if cmd == "encrypt":
    print(multi.encrypt(arg.encode()).decode())
else:
    try:
        print(multi.decrypt(arg.encode()).decode())
    except InvalidToken:
        print("INVALID")
"#;

#[test]
fn fernet_rotation_keeps_old_tokens_readable_until_retire() {
    let s = Stack::new("rot-fernet");
    let old_key = s.file("FERNET_KEY");
    assert!(!old_key.contains(','));
    let old_token = python(PY_FERNET, &["encrypt", &old_key, "stored connection"])
        .trim()
        .to_owned();

    let out = String::from_utf8(ok(s.keyctl().args(["rotate", "FERNET_KEY"]))).unwrap();
    assert!(out.contains("rotated v1 -> v2"), "{out}");
    let list = s.file("FERNET_KEY");
    let (new_key, rest) = list.split_once(',').expect("new,old");
    assert_eq!(rest, old_key, "the list is new,old");
    // Old tokens open with the delivered list (MultiFernet, as Airflow reads it) …
    assert_eq!(
        python(PY_FERNET, &["decrypt", &list, &old_token]).trim(),
        "stored connection"
    );
    // … and new tokens are made with the new key only.
    let new_token = python(PY_FERNET, &["encrypt", &list, "new secret"])
        .trim()
        .to_owned();
    assert_eq!(
        python(PY_FERNET, &["decrypt", new_key, &new_token]).trim(),
        "new secret"
    );
    assert_eq!(
        python(PY_FERNET, &["decrypt", &old_key, &new_token]).trim(),
        "INVALID"
    );

    ok(s.keyctl().args(["retire", "FERNET_KEY"]));
    assert_eq!(
        s.file("FERNET_KEY"),
        new_key,
        "after retire the list is the new key alone"
    );
    assert_eq!(
        python(PY_FERNET, &["decrypt", &s.file("FERNET_KEY"), &old_token]).trim(),
        "INVALID"
    );
    assert_eq!(
        python(PY_FERNET, &["decrypt", &s.file("FERNET_KEY"), &new_token]).trim(),
        "new secret"
    );
    let versions = s.history("FERNET_KEY")["versions"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["label"], serde_json::Value::Null);
    assert_eq!(versions[1]["label"], "current");
}

#[test]
fn rotating_a_kind_rotates_every_secret_of_it_and_templates_follow() {
    let s = Stack::new("rot-kind");
    let url_before = s.file("DB_URL");
    let out = String::from_utf8(ok(s.keyctl().args(["rotate", "password", "--json"]))).unwrap();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["outcomes"].as_array().unwrap().len(), 1);
    assert_eq!(report["outcomes"][0]["name"], "DB_PASSWORD");
    let password = s.file("DB_PASSWORD");
    assert_eq!(
        s.file("DB_URL"),
        format!("postgres://app:{password}@db/app")
    );
    assert_ne!(s.file("DB_URL"), url_before);
    assert!(!out.contains(&password), "the report leaked the value");
    // Literals and templates are not rotated.
    let refused = run(s.keyctl().args(["rotate", "DB_URL"]));
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("follow the policy"));
}

/// A rotation reads the first stack's policy beside the store, and any other stack's from the
/// loaded store when it needs it: a secret of the second stack rotates under its own policy
/// (its template follows), and the first stack is left alone.
#[test]
fn a_secret_of_a_second_stack_rotates_under_its_own_policy() {
    let tmp = TempDir::new("rot-two-stacks");
    let home = tmp.join("home");
    let stacks = [
        ("alpha", "[secrets.DB_PASSWORD]\nkind = \"password\"\n"),
        (
            "web",
            "[secrets.DB_PASSWORD]\nkind = \"password\"\n\n[secrets.DB_URL]\nkind = \"template\"\ntemplate = \"postgres://web:{DB_PASSWORD}@db/web\"\n",
        ),
    ];
    for (stack, secrets) in stacks {
        let policy = tmp.join(format!("{stack}.toml"));
        std::fs::write(&policy, format!("[stack]\nname = \"{stack}\"\n\n{secrets}")).unwrap();
        quickstart(&home, &policy, &tmp.join(stack));
    }
    let read =
        |stack: &str, name: &str| std::fs::read_to_string(tmp.join(stack).join(name)).unwrap();
    let (alpha_before, web_before) = (read("alpha", "DB_PASSWORD"), read("web", "DB_PASSWORD"));
    ok(keyctl(&home).args(["rotate", "web/DB_PASSWORD"]));
    let web_after = read("web", "DB_PASSWORD");
    assert_ne!(
        web_after, web_before,
        "the second stack's password was not rotated"
    );
    assert_eq!(
        read("web", "DB_URL"),
        format!("postgres://web:{web_after}@db/web")
    );
    assert_eq!(read("alpha", "DB_PASSWORD"), alpha_before);
}

const PY_JWKS_VERIFY: &str = r#"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
jwks = json.load(open(sys.argv[1]))
b = lambda s: base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
for k in jwks["keys"]:
    c = json.dumps({"e": k["e"], "kty": "RSA", "n": k["n"]}, separators=(",", ":"), sort_keys=True)
    assert base64.urlsafe_b64encode(hashlib.sha256(c.encode()).digest()).decode().rstrip("=") == k["kid"]
head, body, sig = sys.argv[2].split(".")
kid = json.loads(b(head))["kid"]
match = [k for k in jwks["keys"] if k["kid"] == kid]
if not match:
    print("NO-KEY"); sys.exit(0)
k = match[0]
key = rsa.RSAPublicNumbers(int.from_bytes(b(k["e"]), "big"), int.from_bytes(b(k["n"]), "big")).public_key()
key.verify(b(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
print("VERIFIED", len(jwks["keys"]))
"#;

/// Verifies `jwt` (Python's cryptography) against the JWKS delivered now, found by its kid:
/// "VERIFIED n" with n keys in the JWKS, or "NO-KEY".
fn verify_with_jwks(s: &Stack, jwt: &str) -> String {
    let path = s.tmp.join("jwks.json");
    std::fs::write(&path, s.file("JWT_JWKS")).unwrap();
    python(PY_JWKS_VERIFY, &[path.to_str().unwrap(), jwt])
        .trim()
        .to_owned()
}

fn jwt_signed_with(dir: &Path, private_pem: &str, kid: &str) -> String {
    let b64 = |s: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let header = b64(format!(r#"{{"alg":"RS256","typ":"JWT","kid":"{kid}"}}"#).as_bytes());
    let payload = b64(br#"{"sub":"user","aud":"flowapi_server"}"#);
    std::fs::write(dir.join("signing.pem"), private_pem).unwrap();
    let input = format!("{header}.{payload}");
    let sig = pipe(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-sign",
            dir.join("signing.pem").to_str().unwrap(),
        ],
        input.as_bytes(),
    );
    format!("{input}.{}", b64(&sig))
}

fn kid_of(jwks: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(jwks).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn jwks_holds_both_keys_during_overlap_and_drops_the_old_one_at_retire() {
    let s = Stack::new("rot-jwks");
    let old_kids = kid_of(&s.file("JWT_JWKS"));
    assert_eq!(old_kids.len(), 1);
    let old_jwt = jwt_signed_with(s.tmp.path(), &s.file("JWT_KEY"), &old_kids[0]);
    assert_eq!(verify_with_jwks(&s, &old_jwt), "VERIFIED 1");

    ok(s.keyctl().args(["rotate", "rsa"]));
    let kids = kid_of(&s.file("JWT_JWKS"));
    assert_eq!(kids.len(), 2, "both keys are published during the overlap");
    assert_eq!(kids[1], old_kids[0]);
    // A token signed with the old key still verifies against the JWKS.
    assert_eq!(verify_with_jwks(&s, &old_jwt), "VERIFIED 2");
    // The private key and public PEM switched; the new kid is the new public key's thumbprint.
    let new_jwt = jwt_signed_with(s.tmp.path(), &s.file("JWT_KEY"), &kids[0]);
    assert_eq!(verify_with_jwks(&s, &new_jwt), "VERIFIED 2");
    let derived = pipe(
        "openssl",
        &["pkey", "-pubout"],
        s.file("JWT_KEY").as_bytes(),
    );
    assert_eq!(String::from_utf8(derived).unwrap(), s.file("JWT_PUBLIC"));

    ok(s.keyctl().args(["retire", "JWT_KEY"]));
    assert_eq!(kid_of(&s.file("JWT_JWKS")), vec![kids[0].clone()]);
    assert_eq!(verify_with_jwks(&s, &old_jwt), "NO-KEY");
    assert_eq!(verify_with_jwks(&s, &new_jwt), "VERIFIED 1");
}

fn spawn_rotate(s: &Stack, selector: &str, pause: Option<&str>) -> Child {
    let mut cmd = s.keyctl();
    cmd.args(["rotate", selector])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(p) = pause {
        cmd.env("KEYD_PAUSE_AFTER", p);
    }
    cmd.spawn().unwrap()
}

/// Waits until the child announces its pause on stderr.
fn wait_for_pause(child: &mut Child, point: &str) {
    let stderr = child.stderr.as_mut().unwrap();
    let mut line = String::new();
    BufReader::new(stderr).read_line(&mut line).unwrap();
    assert_eq!(
        line.trim(),
        format!("keyd: paused after {point}"),
        "the process did not reach {point}"
    );
}

const STEPS: [&str; 6] = ["create", "set", "test", "deliver", "promote", "finish"];

/// After a crash and a restart: one new version, consistent labels, files equal to the store,
/// and an audit log that walks the steps in order.
fn check_consistent(s: &Stack, name: &str, outputs: &[&str], expect_new: Option<bool>) {
    let history = s.history(name);
    let versions = history["versions"].as_array().unwrap();
    let labels: Vec<&str> = versions
        .iter()
        .map(|v| v["label"].as_str().unwrap_or("-"))
        .collect();
    match versions.len() {
        1 => {
            assert_ne!(expect_new, Some(true), "the rotation was lost");
            assert_eq!(labels, ["current"]);
        }
        2 => {
            assert_ne!(expect_new, Some(false));
            assert_eq!(labels, ["previous", "current"], "{history}");
        }
        n => panic!("{n} versions: more than one rotation happened: {history}"),
    }
    let status: serde_json::Value =
        serde_json::from_slice(&ok(s.keyctl().args(["status", "--json"]))).unwrap();
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .all(|st| st["rotation"].is_null()),
        "a rotation is still in flight: {status}"
    );
    for out in outputs {
        let shown = ok(s.keyctl().arg("show").arg(out));
        assert_eq!(
            shown,
            std::fs::read(s.tmp.join("out").join(out)).unwrap(),
            "{out} differs from the store"
        );
    }
    // No temp file, and no generation of a cut-off delivery, is left behind: `..keyd` holds
    // exactly what the names show.
    let out_dir = s.tmp.join("out");
    let mut shown = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(&out_dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(!name.contains("keyd-tmp"), "{name} left behind");
        if let Ok(target) = std::fs::read_link(out_dir.join(&name)) {
            let entry = target
                .strip_prefix("..keyd")
                .unwrap()
                .iter()
                .next()
                .unwrap();
            let entry = entry.to_str().unwrap().to_owned();
            if let Ok(set) = std::fs::read_link(out_dir.join("..keyd").join(&entry)) {
                shown.insert(set.to_str().unwrap().to_owned());
            }
            shown.insert(entry);
        }
    }
    let own: std::collections::BTreeSet<String> = std::fs::read_dir(out_dir.join("..keyd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(own, shown, "generations of cut-off deliveries left behind");
    // The audit log's steps for version 2 are in order, created once, finished once, last.
    let audit = std::fs::read_to_string(s.home().join("audit.log")).unwrap_or_default();
    let steps: Vec<usize> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["secret"] == name && e["version"] == 2)
        .map(|e| {
            STEPS
                .iter()
                .position(|s| *s == e["step"].as_str().unwrap())
                .unwrap_or_else(|| panic!("unknown step in {e}"))
        })
        .collect();
    if versions.len() == 2 {
        assert!(
            steps.windows(2).all(|w| w[0] <= w[1]),
            "audit steps out of order: {steps:?}\n{audit}"
        );
        assert_eq!(steps.iter().filter(|&&i| i == 0).count(), 1, "{audit}");
        assert_eq!(
            steps.last(),
            Some(&5),
            "the rotation did not finish in the audit log:\n{audit}"
        );
    }
}

#[test]
fn a_rotation_killed_at_any_step_boundary_resumes_to_exactly_one_new_version() {
    let points = [
        "create",
        "set",
        "test",
        "deliver-persisted",
        "deliver",
        "promote-persisted",
        "promote",
    ];
    let cases: [(&str, &[&str]); 3] = [
        ("FERNET_KEY", &["FERNET_KEY"]),
        ("JWT_KEY", &["JWT_KEY", "JWT_PUBLIC", "JWT_JWKS"]),
        ("DB_PASSWORD", &["DB_PASSWORD", "DB_URL"]),
    ];
    for (name, outputs) in cases {
        for point in points {
            let s = Stack::new(&format!("crash-{point}"));
            let mut child = spawn_rotate(&s, name, Some(point));
            wait_for_pause(&mut child, point);
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            // The next start finishes the rotation: the daemon's one-shot mode.
            ok(keyd(&s.home()).arg("--once"));
            check_consistent(&s, name, outputs, Some(true));
        }
    }
}

#[test]
fn a_kill_between_the_store_write_and_the_audit_write_loses_no_audit_line() {
    // Every store write of a rotation, in turn: the process is killed after the write and
    // before its audit lines reach the log. The next start must still log each step once.
    let cases: [(&str, &[&str]); 3] = [
        ("FERNET_KEY", &["FERNET_KEY"]),
        ("JWT_KEY", &["JWT_KEY", "JWT_PUBLIC", "JWT_JWKS"]),
        ("DB_PASSWORD", &["DB_PASSWORD", "DB_URL"]),
    ];
    for (name, outputs) in cases {
        let mut killed = 0;
        for n in 1.. {
            let point = format!("store-written-{n}");
            let s = Stack::new(&format!("audit-{point}"));
            let mut child = spawn_rotate(&s, name, Some(&point));
            let mut line = String::new();
            BufReader::new(child.stderr.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            if line.is_empty() {
                // Finished without an nth write: every write was covered.
                assert!(child.wait().unwrap().success());
                break;
            }
            assert_eq!(line.trim(), format!("keyd: paused after {point}"));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            killed += 1;
            ok(keyd(&s.home()).arg("--once"));
            check_consistent(&s, name, outputs, Some(true));
        }
        assert!(killed >= 2, "{name}: only {killed} store writes were cut");
    }
}

#[test]
fn rotations_killed_at_random_times_never_leave_a_half_state() {
    // Bounded: 12 runs, each killed within its first 0-150 ms.
    let mut seed: u64 = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    for run_no in 0..12 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = std::time::Duration::from_millis(seed % 150);
        let s = Stack::new(&format!("crash-random-{run_no}"));
        let mut child = spawn_rotate(&s, "JWT_KEY", None);
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().unwrap();
        ok(keyd(&s.home()).arg("--once"));
        check_consistent(&s, "JWT_KEY", &["JWT_KEY", "JWT_PUBLIC", "JWT_JWKS"], None);
    }
}

/// Whether some process is blocked waiting for a lock (`/proc/locks` shows ` -> ` lines).
fn someone_waits_for_a_lock() -> bool {
    std::fs::read_to_string("/proc/locks")
        .unwrap_or_default()
        .contains("->")
}

#[test]
fn two_rotations_at_once_make_one_rotation() {
    let s = Stack::new("rot-concurrent");
    // The first rotation holds the store lock, paused right after creating its version …
    let mut first = spawn_rotate(&s, "FERNET_KEY", Some("create"));
    wait_for_pause(&mut first, "create");
    // … while a second one starts and queues behind the lock.
    let second = s
        .keyctl()
        .args(["rotate", "FERNET_KEY", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut waited = 0;
    while !someone_waits_for_a_lock() {
        waited += 1;
        assert!(waited < 500, "the second rotation never queued on the lock");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    first.stdin.take().unwrap().write_all(b"\n").unwrap();
    assert!(first.wait().unwrap().success());
    let second = second.wait_with_output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(
        report["outcomes"][0]["result"], "already_rotated",
        "{report}"
    );
    assert_eq!(report["outcomes"][0]["to_version"], 2);
    assert_eq!(
        s.history("FERNET_KEY")["versions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn overlap_starts_at_the_deliver_step_and_private_keys_switch_only_at_promote() {
    let s = Stack::new("rot-deliver-step");
    let (old_fernet, old_private, old_password) = (
        s.file("FERNET_KEY"),
        s.file("JWT_KEY"),
        s.file("DB_PASSWORD"),
    );
    for (selector, check) in [
        (
            "FERNET_KEY",
            Box::new(|s: &Stack| {
                let list = s.file("FERNET_KEY");
                assert!(
                    list.ends_with(&format!(",{old_fernet}")),
                    "the list leads with the new key from deliver on: {list}"
                );
            }) as Box<dyn Fn(&Stack)>,
        ),
        (
            "JWT_KEY",
            Box::new(|s: &Stack| {
                assert_eq!(
                    kid_of(&s.file("JWT_JWKS")).len(),
                    2,
                    "the new key is published at deliver"
                );
                assert_eq!(
                    s.file("JWT_KEY"),
                    old_private,
                    "the private key must not switch before promote"
                );
            }),
        ),
        (
            "DB_PASSWORD",
            Box::new(|s: &Stack| {
                let password = s.file("DB_PASSWORD");
                assert_ne!(password, old_password, "a password is delivered at deliver");
                assert_eq!(
                    s.file("DB_URL"),
                    format!("postgres://app:{password}@db/app"),
                    "templates follow at deliver"
                );
            }),
        ),
    ] {
        let mut child = spawn_rotate(&s, selector, Some("deliver"));
        wait_for_pause(&mut child, "deliver");
        check(&s);
        child.stdin.take().unwrap().write_all(b"\n").unwrap();
        assert!(child.wait().unwrap().success());
    }
    assert_ne!(s.file("JWT_KEY"), old_private, "switched at promote");
}

#[test]
fn reload_hooks_run_after_a_delivery_changed_files() {
    let tmp = TempDir::new("reload");
    // A process to signal, and a command that leaves a mark.
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    std::fs::write(tmp.join("app.pid"), sleeper.id().to_string()).unwrap();
    let marker = tmp.join("reloaded");
    for (hook, signal) in [
        (
            format!(
                r#"reload = {{ signal = "TERM", pid_file = "{}" }}"#,
                tmp.join("app.pid").display()
            ),
            true,
        ),
        (
            format!(
                r#"reload = {{ command = ["touch", "{}"] }}"#,
                marker.display()
            ),
            false,
        ),
    ] {
        let home = tmp.join(if signal {
            "home-signal"
        } else {
            "home-command"
        });
        let policy = format!(
            "[stack]\nname = \"hooks\"\n\n[sinks.files]\ndir = \"{}\"\n{hook}\n\n[secrets.KEY]\nkind = \"fernet\"\n",
            home.join("out").display()
        );
        std::fs::write(tmp.join("hooks.toml"), policy).unwrap();
        ok(keyctl(&home)
            .arg("quickstart")
            .arg("--policy")
            .arg(tmp.join("hooks.toml")));
        if signal {
            // SIGTERM ends the sleeper: the hook ran after the first delivery.
            let status = sleeper.wait().unwrap();
            use std::os::unix::process::ExitStatusExt as _;
            assert_eq!(status.signal(), Some(15), "{status}");
        } else {
            assert!(marker.exists());
            std::fs::remove_file(&marker).unwrap();
            // A run that changes nothing does not reload; a rotation does.
            ok(keyctl(&home)
                .arg("quickstart")
                .arg("--policy")
                .arg(tmp.join("hooks.toml")));
            assert!(!marker.exists(), "reloaded although nothing changed");
            ok(keyctl(&home).args(["rotate", "KEY"]));
            assert!(marker.exists(), "not reloaded after a rotation");
        }
    }
    // Reaped above when the hook worked; never left running when it did not.
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

#[test]
fn tls_rotation_replaces_certificate_and_key_together() {
    let s = Stack::new("rot-tls");
    let (old_cert, old_key) = (s.file("cert.pem"), s.file("key.pem"));
    ok(s.keyctl().args(["rotate", "tls"]));
    let (cert, key) = (s.file("cert.pem"), s.file("key.pem"));
    assert_ne!(cert, old_cert);
    assert_ne!(key, old_key);
    // The delivered pair matches (openssl), and the certificate still says what the policy says.
    std::fs::write(s.tmp.join("c.pem"), &cert).unwrap();
    let cert_pub = ok(Command::new("openssl")
        .args(["x509", "-noout", "-pubkey", "-in"])
        .arg(s.tmp.join("c.pem")));
    let key_pub = pipe("openssl", &["pkey", "-pubout"], key.as_bytes());
    assert_eq!(cert_pub, key_pub);
    let text = String::from_utf8(ok(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(s.tmp.join("c.pem"))))
    .unwrap();
    assert!(
        text.contains("CN = localhost") || text.contains("CN=localhost"),
        "{text}"
    );
}

#[test]
fn a_reload_command_that_hangs_is_killed_after_its_timeout_and_reported() {
    let tmp = TempDir::new("reload-hang");
    // The command records its pid, then sleeps far longer than its timeout.
    let pid_file = tmp.join("hook.pid");
    let policy = format!(
        "[stack]\nname = \"hang\"\n\n[sinks.files]\ndir = \"{}\"\nreload = {{ command = [\"sh\", \"-c\", \"echo $$ > {}; exec sleep 60\"], timeout = \"1s\" }}\n\n[secrets.KEY]\nkind = \"fernet\"\n",
        tmp.join("out").display(),
        pid_file.display()
    );
    std::fs::write(tmp.join("hang.toml"), policy).unwrap();
    let mut child = keyctl(&tmp.join("home"))
        .arg("quickstart")
        .arg("--policy")
        .arg(tmp.join("hang.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let finished = child.try_wait().unwrap().is_some();
    if !finished {
        child.kill().unwrap();
    }
    // Checked (and, if it still runs, stopped) before reading keyctl's stderr, which it holds.
    let hook_pid = std::fs::read_to_string(&pid_file).unwrap();
    let hook_alive = Path::new(&format!("/proc/{}", hook_pid.trim())).exists();
    if hook_alive {
        let _ = Command::new("kill").arg(hook_pid.trim()).status();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        finished,
        "keyctl still waited for the reload command: {stderr}"
    );
    assert!(!out.status.success());
    assert!(
        stderr.contains("reload command") && stderr.contains("timed out after 1s"),
        "{stderr}"
    );
    assert!(!hook_alive, "the reload command was left running");
}

/// An RSA rotation delivers in two passes (the JWKS with both keys first, then the private
/// key): `rotate --json` names the files sink once, with every output written there; so does
/// `rotate --all`, which adds up one report per kind.
#[test]
fn rotate_json_names_each_sink_once_with_everything_written_there() {
    let s = Stack::new("one-sink-entry");
    for args in [
        &["rotate", "JWT_KEY", "--json"][..],
        &["rotate", "--all", "--json"],
    ] {
        let report: serde_json::Value = serde_json::from_slice(&ok(s.keyctl().args(args))).unwrap();
        let deliveries = report["deliveries"].as_array().unwrap();
        assert_eq!(deliveries.len(), 1, "{args:?}: {report:#}");
        let written: Vec<&str> = deliveries[0]["written"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        for name in ["JWT_KEY", "JWT_PUBLIC", "JWT_JWKS"] {
            assert_eq!(
                written.iter().filter(|n| **n == name).count(),
                1,
                "{args:?}: {report:#}"
            );
        }
        let unchanged = deliveries[0]["unchanged"].as_array().unwrap();
        assert!(
            unchanged
                .iter()
                .all(|n| !written.contains(&n.as_str().unwrap())),
            "{args:?}: written and unchanged: {report:#}"
        );
    }
}
