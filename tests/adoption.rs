//! Adoption and recovery (issue 11), through the real `keyctl`: importing what FlowKit's own
//! quickstart script made (openssl, Python's Fernet), `.env` and compose sources with bad values
//! refused and nothing written, several recipients (X25519 and an SSH ed25519 key), backup and
//! restore with the rollback check.

use std::path::Path;

use keyd_tests::{TempDir, keyctl, keyd, ok, python, run, workspace};

/// A small policy with one secret of each kind an import checks.
const POLICY: &str = r#"[stack]
name = "app"

[secrets.FERNET_KEY]
kind = "fernet"

[secrets.JWT_KEY]
kind = "rsa"
bits = 2048
public = "JWT_PUBLIC"

[secrets."tls.crt"]
kind = "tls"
key = "tls.key"
cn = "app.local"

[secrets.DB_PASSWORD]
kind = "password"
length = 24

[secrets.DB_URL]
kind = "template"
template = "postgresql://app:{DB_PASSWORD|url}@db/app"
"#;

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Values for [`POLICY`] made with keyctl gen: (fernet, rsa private, rsa public, cert, key).
struct Values {
    fernet: String,
    rsa: String,
    rsa_public: String,
    cert: String,
    key: String,
    other_key: String,
}

fn values(dir: &TempDir) -> Values {
    let gen_home = dir.join("gen-home");
    let fernet = text(ok(keyctl(&gen_home).args(["gen", "fernet"])));
    let public = dir.join("jwt.pub");
    let rsa = text(ok(keyctl(&gen_home)
        .args(["gen", "rsa", "--bits", "2048", "--public-out"])
        .arg(&public)));
    let tls = |n: &str| {
        let key = dir.join(format!("{n}.key"));
        let cert = text(ok(keyctl(&gen_home)
            .args(["gen", "tls", "--cn", "app.local", "--key-out"])
            .arg(&key)));
        (cert, std::fs::read_to_string(key).unwrap())
    };
    let (cert, key) = tls("a");
    let (_, other_key) = tls("b");
    Values {
        fernet,
        rsa,
        rsa_public: std::fs::read_to_string(public).unwrap(),
        cert,
        key,
        other_key,
    }
}

fn env_file(v: &Values, fernet: &str, rsa: &str, key: &str) -> String {
    format!(
        "# app secrets\nFERNET_KEY={}\nJWT_KEY=\"{rsa}\"\nJWT_PUBLIC=\"{}\"\nTLS_CRT=\"{}\"\nTLS_KEY=\"{key}\"\nDB_PASSWORD=correcthorsebatterystaple1\nDB_URL=postgresql://app:${{DB_PASSWORD}}@db/app\n",
        fernet.trim(),
        v.rsa_public,
        v.cert
    )
}

fn line_of(text: &str, prefix: &str) -> usize {
    text.lines().position(|l| l.starts_with(prefix)).unwrap() + 1
}

#[test]
fn flowkit_quickstart_output_is_adopted_byte_for_byte_and_rotates() {
    let dir = TempDir::new("adopt-flowkit");
    let src = dir.join("secrets");
    ok(std::process::Command::new("bash")
        .arg(workspace().join("bench/flowkit-openssl.sh"))
        .arg(&src));
    // Made before the import, with the values the script made.
    let fernet_token = python(
        "import sys\nfrom cryptography.fernet import Fernet\nprint(Fernet(open(sys.argv[1],'rb').read().strip()).encrypt(b'flowauth row').decode())",
        &[src.join("FLOWAUTH_FERNET_KEY").to_str().unwrap()],
    );
    let jwt = python(
        "import base64,json,sys\nfrom cryptography.hazmat.primitives import hashes, serialization\nfrom cryptography.hazmat.primitives.asymmetric import padding\nk=serialization.load_pem_private_key(open(sys.argv[1],'rb').read(),None)\nb=lambda d: base64.urlsafe_b64encode(d).rstrip(b'=').decode()\nh=b(json.dumps({'alg':'RS256','typ':'JWT'}).encode())\np=b(json.dumps({'sub':'alice','aud':'flowapi_server'}).encode())\ns=k.sign((h+'.'+p).encode(),padding.PKCS1v15(),hashes.SHA256())\nprint(h+'.'+p+'.'+b(s))",
        &[src.join("PRIVATE_JWT_SIGNING_KEY").to_str().unwrap()],
    );
    let home = dir.join("home");
    let out = dir.join("out");
    let policy = workspace().join("policies/flowkit.toml");

    let dry = text(ok(keyctl(&home)
        .args(["import", "--dry-run", "--policy"])
        .arg(&policy)
        .arg(&src)));
    assert!(dry.contains("Nothing written (--dry-run)"), "{dry}");
    assert!(!home.join("store.age").exists(), "a dry run wrote a store");

    let report = text(ok(keyctl(&home)
        .args(["import", "--json", "--policy"])
        .arg(&policy)
        .arg(&src)));
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["written"], true);
    let source_files: Vec<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(source_files.len(), 23, "{source_files:?}");
    assert_eq!(
        report["unmapped"].as_array().unwrap().len(),
        0,
        "every file the script made maps to an output: {report}"
    );
    for entry in report["secrets"].as_array().unwrap() {
        let verdict = entry["verdict"].as_str().unwrap();
        assert!(verdict != "refused", "{entry}");
    }
    // No value in the audit log, nor in the report.
    let audit = std::fs::read_to_string(home.join("audit.log")).unwrap();
    assert!(audit.contains("\"step\":\"import\""), "{audit}");
    for f in &source_files {
        let value = std::fs::read_to_string(src.join(f)).unwrap();
        let value = value.trim();
        if value.len() >= 16 {
            assert!(!audit.contains(value), "{f} is in the audit log");
            assert!(!report.to_string().contains(value), "{f} is in the report");
        }
    }

    ok(keyctl(&home)
        .args(["apply", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(&out));
    for f in &source_files {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(src.join(f)).unwrap(),
            "{f} is not delivered byte for byte"
        );
    }
    let decrypt = "import sys\nfrom cryptography.fernet import Fernet, MultiFernet\nkeys=open(sys.argv[1]).read().strip().split(',')\nprint(MultiFernet([Fernet(k.strip()) for k in keys]).decrypt(sys.argv[2].encode()).decode())";
    let fernet_out = out.join("FLOWAUTH_FERNET_KEY");
    assert_eq!(
        python(
            decrypt,
            &[fernet_out.to_str().unwrap(), fernet_token.trim()]
        )
        .trim(),
        "flowauth row"
    );
    let verify = "import base64,json,sys\nfrom cryptography.hazmat.primitives import hashes\nfrom cryptography.hazmat.primitives.asymmetric import padding, rsa\nb=lambda s: base64.urlsafe_b64decode(s+'='*(-len(s)%4))\nh,p,s=sys.argv[2].split('.')\nfor jwk in json.load(open(sys.argv[1]))['keys']:\n  k=rsa.RSAPublicNumbers(int.from_bytes(b(jwk['e']),'big'),int.from_bytes(b(jwk['n']),'big')).public_key()\n  try:\n    k.verify(b(s),(h+'.'+p).encode(),padding.PKCS1v15(),hashes.SHA256()); print('verified', jwk['kid']); break\n  except Exception: pass\nelse:\n  sys.exit('no key verifies')";
    let jwks = out.join("JWT_SIGNING_JWKS");
    assert!(python(verify, &[jwks.to_str().unwrap(), jwt.trim()]).starts_with("verified"));

    // The next rotation works like any other: new values, the old ones still accepted.
    for name in [
        "PRIVATE_JWT_SIGNING_KEY",
        "AIRFLOW__CORE__FERNET_KEY",
        "FLOWAUTH_DB_PASSWORD",
        "cert-flowkit.pem",
    ] {
        let rotated = text(ok(keyctl(&home).args(["rotate", name])));
        assert!(rotated.contains("rotated v1 -> v2"), "{rotated}");
    }
    assert_ne!(
        std::fs::read(out.join("FLOWAUTH_DB_PASSWORD")).unwrap(),
        std::fs::read(src.join("FLOWAUTH_DB_PASSWORD")).unwrap()
    );
    let jwks_text = std::fs::read_to_string(&jwks).unwrap();
    let jwks_doc: serde_json::Value = serde_json::from_str(&jwks_text).unwrap();
    assert_eq!(jwks_doc["keys"].as_array().unwrap().len(), 2, "{jwks_text}");
    assert!(python(verify, &[jwks.to_str().unwrap(), jwt.trim()]).starts_with("verified"));
    let airflow_token = python(
        "import sys\nfrom cryptography.fernet import Fernet\nprint(Fernet(open(sys.argv[1],'rb').read().strip()).encrypt(b'airflow conn').decode())",
        &[src.join("AIRFLOW__CORE__FERNET_KEY").to_str().unwrap()],
    );
    let list = out.join("AIRFLOW__CORE__FERNET_KEY");
    assert_eq!(
        python(decrypt, &[list.to_str().unwrap(), airflow_token.trim()]).trim(),
        "airflow conn"
    );
}

#[test]
fn a_dotenv_is_imported_and_each_bad_value_is_refused_with_its_line() {
    let dir = TempDir::new("adopt-env");
    let v = values(&dir);
    let policy = dir.join("app.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let home = dir.join("home");
    ok(keyctl(&home).arg("init"));
    let store_before = std::fs::read(home.join("store.age")).unwrap();

    let bad_cases = [
        (
            "short Fernet key",
            env_file(&v, "c2hvcnQta2V5", &v.rsa, &v.key),
            "FERNET_KEY=",
            "FERNET_KEY: not a Fernet key: it decodes to 9 bytes",
        ),
        (
            "public key where the private key belongs",
            env_file(&v, &v.fernet, &v.rsa_public, &v.key),
            "JWT_KEY=",
            "JWT_KEY: holds a public key",
        ),
        (
            "certificate and key that do not match",
            env_file(&v, &v.fernet, &v.rsa, &v.other_key),
            "TLS_CRT=",
            "certificate and key do not match",
        ),
        (
            "template that renders differently",
            env_file(&v, &v.fernet, &v.rsa, &v.key).replace("@db/app", "@db2/app"),
            "DB_URL=",
            "DB_URL: the source holds another value than the policy derives",
        ),
    ];
    for (what, env, line_prefix, message) in bad_cases {
        let path = dir.join(".env");
        std::fs::write(&path, &env).unwrap();
        let out = run(keyctl(&home)
            .args(["import", "--policy"])
            .arg(&policy)
            .arg(&path));
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        let at = format!("{}:{}", path.display(), line_of(&env, line_prefix));
        assert!(err.contains(&at), "{what}: expected {at} in:\n{err}");
        assert!(
            err.contains(message),
            "{what}: expected {message:?} in:\n{err}"
        );
        assert!(err.contains("nothing written"), "{what}: {err}");
        assert_eq!(
            std::fs::read(home.join("store.age")).unwrap(),
            store_before,
            "{what}: the store changed"
        );
        for secret in [&v.fernet, &v.rsa, &v.key] {
            let first = secret.lines().nth(1).unwrap_or(secret);
            assert!(
                !err.contains(first.trim()),
                "{what}: a value is in the error"
            );
        }
    }

    // The good file: every value imported, the template re-derived and equal.
    let path = dir.join(".env");
    std::fs::write(&path, env_file(&v, &v.fernet, &v.rsa, &v.key)).unwrap();
    let out = text(ok(keyctl(&home)
        .args(["import", "--json", "--policy"])
        .arg(&policy)
        .arg(&path)));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let verdicts: Vec<(&str, &str)> = report["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["secret"].as_str().unwrap(),
                e["verdict"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("FERNET_KEY", "ok"),
            ("JWT_KEY", "ok"),
            ("tls.crt", "ok"),
            ("DB_PASSWORD", "ok"),
            ("DB_URL", "matches")
        ]
    );
    let show = |name: &str| text(ok(keyctl(&home).args(["show", name])));
    assert_eq!(show("FERNET_KEY"), v.fernet.trim());
    assert_eq!(show("JWT_KEY"), v.rsa);
    assert_eq!(show("JWT_PUBLIC"), v.rsa_public);
    assert_eq!(show("tls.key"), v.key);
    assert_eq!(
        show("DB_URL"),
        "postgresql://app:correcthorsebatterystaple1@db/app"
    );

    // Imported again: refused (already in the store), unless --replace.
    let store_before = std::fs::read(home.join("store.age")).unwrap();
    let again = run(keyctl(&home)
        .args(["import", "--policy"])
        .arg(&policy)
        .arg(&path));
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr_of(&again).contains("the store already holds a value"),
        "{}",
        stderr_of(&again)
    );
    assert_eq!(std::fs::read(home.join("store.age")).unwrap(), store_before);
    let replaced = text(ok(keyctl(&home)
        .args(["import", "--replace", "--json", "--policy"])
        .arg(&policy)
        .arg(&path)));
    assert!(replaced.contains("\"version\": 2"), "{replaced}");
}

#[test]
fn a_compose_file_is_imported_and_a_mismatched_pair_is_refused_by_name() {
    let dir = TempDir::new("adopt-compose");
    let v = values(&dir);
    let policy = dir.join("app.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let stack = dir.join("stack");
    std::fs::create_dir_all(stack.join(".secrets")).unwrap();
    for (name, value) in [
        ("fernet", v.fernet.as_str()),
        ("jwt", v.rsa.as_str()),
        ("jwt.pub", v.rsa_public.as_str()),
        ("tls.crt", v.cert.as_str()),
        ("tls.key", v.other_key.as_str()),
        ("db", "correcthorsebatterystaple1"),
    ] {
        std::fs::write(stack.join(".secrets").join(name), value).unwrap();
    }
    let compose = "services:\n  app:\n    image: app\n    secrets: [FERNET_KEY]\n\nsecrets:\n  FERNET_KEY:\n    file: ./.secrets/fernet\n  JWT_KEY:\n    file: ./.secrets/jwt\n  JWT_PUBLIC: { file: ./.secrets/jwt.pub }\n  tls.crt:\n    file: ./.secrets/tls.crt\n  tls.key:\n    file: \"./.secrets/tls.key\"   # the key\n  DB_PASSWORD:\n    file: ./.secrets/db\n  registry_token:\n    external: true\n";
    let path = stack.join("compose.yml");
    std::fs::write(&path, compose).unwrap();
    let home = dir.join("home");

    let out = run(keyctl(&home)
        .args(["import", "--policy"])
        .arg(&policy)
        .arg(&path));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let at = format!("{}:{}", path.display(), line_of(compose, "  tls.crt:") + 1);
    assert!(err.contains(&at), "expected {at} in:\n{err}");
    assert!(
        err.contains("tls.crt: certificate and key do not match"),
        "{err}"
    );
    assert!(
        !home.join("store.age").exists(),
        "a refused import wrote a store"
    );

    std::fs::write(stack.join(".secrets/tls.key"), &v.key).unwrap();
    let report = text(ok(keyctl(&home)
        .args(["import", "--policy"])
        .arg(&policy)
        .arg(&path)));
    assert!(report.contains("Imported 4 secrets"), "{report}");
    assert_eq!(text(ok(keyctl(&home).args(["show", "tls.key"]))), v.key);
    assert_eq!(
        text(ok(keyctl(&home).args(["show", "DB_PASSWORD"]))),
        "correcthorsebatterystaple1"
    );
}

/// Copies the store of `from` (and its generation) into the home `to`.
fn copy_store(from: &Path, to: &Path) {
    for f in ["store.age", "store.generation"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
}

fn public_key_of(home: &Path) -> String {
    let text = std::fs::read_to_string(home.join("identity.txt")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_owned()
}

#[test]
fn each_recipient_alone_opens_the_store_and_a_removed_one_cannot() {
    let dir = TempDir::new("adopt-recipients");
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c"));
    let policy = workspace().join("tests/cmd/identity.in/good.toml");
    ok(keyctl(&a)
        .args(["quickstart", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(dir.join("out")));
    ok(keyctl(&b).arg("init"));
    let b_key = public_key_of(&b);
    let added = text(ok(keyctl(&a).args(["recipients", "add", &b_key])));
    assert!(added.contains("2 recipients"), "{added}");
    let list = text(ok(keyctl(&a).args(["recipients", "list"])));
    assert!(
        list.contains(&b_key) && list.contains("(this home's identity)"),
        "{list}"
    );

    // An SSH ed25519 key as a third recipient, and as the identity of a home.
    std::fs::create_dir_all(&c).unwrap();
    let ssh_key = dir.join("id_ed25519");
    ok(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ops@example", "-f"])
        .arg(&ssh_key));
    let ssh_pub = std::fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
    ok(keyctl(&a).args(["recipients", "add", ssh_pub.trim()]));
    std::fs::copy(&ssh_key, c.join("identity.txt")).unwrap();

    let listed = text(ok(keyctl(&a).args(["list"])));
    let show_a = ok(keyctl(&a).args(["show", "DB_PASSWORD"]));
    for other in [&b, &c] {
        copy_store(&a, other);
        assert_eq!(text(ok(keyctl(other).arg("list"))), listed);
        assert_eq!(ok(keyctl(other).args(["show", "DB_PASSWORD"])), show_a);
    }
    // The SSH-identity home writes too: the store stays open to every recipient.
    ok(keyctl(&c).args(["rotate", "DB_PASSWORD"]));
    copy_store(&c, &a);
    assert_ne!(ok(keyctl(&a).args(["show", "DB_PASSWORD"])), show_a);

    // Remove b: it names what b could read, and b cannot open the new store.
    let removed = text(ok(keyctl(&a).args(["recipients", "remove", &b_key])));
    assert!(removed.contains("DB_PASSWORD"), "{removed}");
    assert!(removed.contains("keyctl rotate --all"), "{removed}");
    copy_store(&a, &b);
    let denied = run(keyctl(&b).arg("list"));
    assert_eq!(denied.status.code(), Some(4), "{}", stderr_of(&denied));
    assert!(stderr_of(&denied).contains("was not encrypted to the identity"));
    copy_store(&a, &c);
    ok(keyctl(&c).arg("list"));

    // The home's own identity cannot be removed.
    let own = public_key_of(&a);
    let refused = run(keyctl(&a).args(["recipients", "remove", &own]));
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr_of(&refused).contains("lock this home out"));
    // Neither can the SSH key from the home it opens.
    let refused = run(keyctl(&c).args(["recipients", "remove", ssh_pub.trim()]));
    assert_eq!(refused.status.code(), Some(1), "{}", stderr_of(&refused));
    assert!(stderr_of(&refused).contains("lock this home out"));

    // An ssh-rsa key works the same way.
    let rsa_key = dir.join("id_rsa");
    ok(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
        .arg(&rsa_key));
    let rsa_pub = std::fs::read_to_string(rsa_key.with_extension("pub")).unwrap();
    ok(keyctl(&a).args(["recipients", "add", rsa_pub.trim()]));
    let d = dir.join("d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(&rsa_key, d.join("identity.txt")).unwrap();
    copy_store(&a, &d);
    assert_eq!(
        text(ok(keyctl(&d).arg("list"))),
        text(ok(keyctl(&a).arg("list")))
    );

    // rotate --all rotates every random secret.
    let all = text(ok(keyctl(&a).args(["rotate", "--all"])));
    assert!(
        all.contains("DB_PASSWORD") && all.contains("rotated"),
        "{all}"
    );
}

#[test]
fn backup_delete_restore_gives_the_same_store_and_an_older_backup_is_refused() {
    let dir = TempDir::new("adopt-backup");
    let home = dir.join("home");
    let policy = workspace().join("tests/cmd/identity.in/good.toml");
    ok(keyctl(&home)
        .args(["quickstart", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(dir.join("out")));
    let old_backup = dir.join("old.age");
    ok(keyctl(&home).args(["backup", "--out"]).arg(&old_backup));
    ok(keyctl(&home).args(["rotate", "DB_PASSWORD"]));
    let backup = dir.join("backup.age");
    let said = text(ok(keyctl(&home).args(["backup", "--out"]).arg(&backup)));
    assert!(said.contains("mode 0600"), "{said}");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let names = ["DB_PASSWORD", "DB_URL"];
    let shown: Vec<Vec<u8>> = names
        .iter()
        .map(|n| ok(keyctl(&home).args(["show", n])))
        .collect();
    let listed = ok(keyctl(&home).arg("list"));
    let history = ok(keyctl(&home).args(["history", "DB_PASSWORD"]));

    // The home is lost; the identity was kept apart (a backup holds none).
    let identity = std::fs::read(home.join("identity.txt")).unwrap();
    std::fs::remove_dir_all(&home).unwrap();
    let refused = run(keyctl(&home).arg("restore").arg(&backup));
    assert_eq!(refused.status.code(), Some(4));
    assert!(stderr_of(&refused).contains("a backup holds no identity"));
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(home.join("identity.txt"), identity).unwrap();
    std::fs::set_permissions(
        home.join("identity.txt"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let restored = text(ok(keyctl(&home).arg("restore").arg(&backup)));
    assert!(restored.contains("only in the backup"), "{restored}");
    for (n, before) in names.iter().zip(&shown) {
        assert_eq!(&ok(keyctl(&home).args(["show", n])), before, "{n}");
    }
    assert_eq!(ok(keyctl(&home).arg("list")), listed);
    assert_eq!(ok(keyctl(&home).args(["history", "DB_PASSWORD"])), history);

    // The older backup: refused, store untouched; then restored on purpose.
    let store = std::fs::read(home.join("store.age")).unwrap();
    let older = run(keyctl(&home).arg("restore").arg(&old_backup));
    assert_eq!(older.status.code(), Some(4), "{}", stderr_of(&older));
    assert!(
        stderr_of(&older).contains("--accept-rollback"),
        "{}",
        stderr_of(&older)
    );
    assert_eq!(std::fs::read(home.join("store.age")).unwrap(), store);
    let dry = text(ok(keyctl(&home)
        .args(["restore", "--dry-run", "--accept-rollback"])
        .arg(&old_backup)));
    assert!(dry.contains("DB_PASSWORD: v2 -> v1"), "{dry}");
    ok(keyctl(&home)
        .args(["restore", "--accept-rollback"])
        .arg(&old_backup));
    assert_ne!(ok(keyctl(&home).args(["show", "DB_PASSWORD"])), shown[0]);

    // A backup that is not a store is refused by name.
    let junk = dir.join("junk.age");
    std::fs::write(&junk, b"not age").unwrap();
    let bad = run(keyctl(&home).arg("restore").arg(&junk));
    assert_eq!(bad.status.code(), Some(4));
    assert!(stderr_of(&bad).contains("junk.age"), "{}", stderr_of(&bad));
}

#[test]
fn a_restored_store_does_not_replay_its_old_homes_audit_lines() {
    let dir = TempDir::new("adopt-restore-audit");
    let (old_home, home) = (dir.join("old"), dir.join("new"));
    let policy = workspace().join("tests/cmd/identity.in/good.toml");
    ok(keyctl(&old_home)
        .args(["quickstart", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(dir.join("out")));
    // The store at rest still holds the lines of its last write (version 2's last steps).
    ok(keyctl(&old_home).args(["rotate", "DB_PASSWORD"]));
    let backup = dir.join("backup.age");
    ok(keyctl(&old_home).args(["backup", "--out"]).arg(&backup));
    // A new home with the same identity: the backup restored, then a rotation there.
    std::fs::create_dir_all(&home).unwrap();
    std::fs::copy(old_home.join("identity.txt"), home.join("identity.txt")).unwrap();
    ok(keyctl(&home).arg("restore").arg(&backup));
    ok(keyctl(&home).args(["rotate", "DB_PASSWORD"]));
    let log = std::fs::read_to_string(home.join("audit.log")).unwrap();
    let versions: Vec<u64> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert!(!versions.is_empty(), "{log}");
    assert!(
        versions.iter().all(|&v| v == 3),
        "the old home's lines were replayed:\n{log}"
    );
}

#[test]
fn completions_and_the_manual_page_are_generated() {
    let dir = TempDir::new("adopt-completions");
    for shell in ["bash", "zsh", "fish"] {
        let script = text(ok(keyctl(&dir.join("h")).args(["completions", shell])));
        assert!(
            script.contains("recipients") && script.contains("import"),
            "{shell}"
        );
    }
    let man = text(ok(keyctl(&dir.join("h")).arg("man")));
    assert!(
        man.starts_with(".ie") || man.contains(".TH keyctl"),
        "{man}"
    );
}

#[test]
fn a_wrong_passphrase_is_a_clear_error_and_leaves_the_store_untouched() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("adopt-passphrase");
    let home = dir.join("home");
    let secret_file = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let good = secret_file("good", "correct horse battery\n");
    let bad = secret_file("bad", "correct horse batterz\n");
    let with = |file: &Path| {
        let mut cmd = keyctl(&home);
        cmd.env("KEYD_PASSPHRASE_FILE", file);
        cmd
    };
    ok(with(&good).args(["init", "--passphrase"]));
    let identity = std::fs::read_to_string(home.join("identity.txt")).unwrap();
    assert!(!identity.contains("AGE-SECRET-KEY"), "{identity}");
    let policy = workspace().join("tests/cmd/identity.in/good.toml");
    ok(with(&good)
        .args(["quickstart", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(dir.join("out")));
    let value = ok(with(&good).args(["show", "DB_PASSWORD"]));
    let store = std::fs::read(home.join("store.age")).unwrap();
    assert!(String::from_utf8_lossy(&store).contains("scrypt"));

    for args in [&["list"][..], &["rotate", "DB_PASSWORD"]] {
        let out = run(with(&bad).args(args));
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        let err = stderr_of(&out);
        assert!(
            err.contains("the passphrase does not open the store"),
            "{err}"
        );
        assert!(err.contains("the store was not modified"), "{err}");
        assert_eq!(std::fs::read(home.join("store.age")).unwrap(), store);
    }
    // Without a terminal or a passphrase file: refused, and keyd will not start.
    let out = run(keyctl(&home)
        .arg("list")
        .env_remove("KEYD_PASSPHRASE_FILE")
        .stdin(std::process::Stdio::null()));
    assert_eq!(out.status.code(), Some(4));
    let daemon = run(keyd_tests::keyd(&home)
        .arg("--once")
        .env_remove("KEYD_PASSPHRASE_FILE"));
    assert_eq!(daemon.status.code(), Some(4));
    assert!(
        stderr_of(&daemon).contains("KEYD_PASSPHRASE_FILE"),
        "{}",
        stderr_of(&daemon)
    );
    assert_eq!(ok(with(&good).args(["show", "DB_PASSWORD"])), value);
    // keyd starts with the file (and only reads it).
    ok(keyd_tests::keyd(&home)
        .arg("--once")
        .env("KEYD_PASSPHRASE_FILE", &good));
    // The passphrase file must be private, like an identity.
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o644)).unwrap();
    let exposed = run(with(&good).arg("list"));
    assert_eq!(exposed.status.code(), Some(4));
}

#[test]
fn a_passphrase_store_asking_for_too_much_scrypt_work_is_not_called_corrupt() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("adopt-work-factor");
    let home = dir.join("home");
    let passphrase = dir.join("passphrase");
    std::fs::write(&passphrase, "correct horse battery\n").unwrap();
    std::fs::set_permissions(&passphrase, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with = || {
        let mut cmd = keyctl(&home);
        cmd.env("KEYD_PASSPHRASE_FILE", &passphrase);
        cmd
    };
    ok(with().args(["init", "--passphrase"]));
    // The header's scrypt stanza (`-> scrypt SALT LOG_N`) asks for 2^30: far above what keyd
    // reads with, on any machine, busy or not.
    let store = std::fs::read(home.join("store.age")).unwrap();
    let at = store.windows(10).position(|w| w == b"-> scrypt ").unwrap();
    let end = at + store[at..].iter().position(|&b| b == b'\n').unwrap();
    let space = at + store[at..end].iter().rposition(|&b| b == b' ').unwrap();
    let forged = [&store[..=space], b"30", &store[end..]].concat();
    std::fs::write(home.join("store.age"), &forged).unwrap();
    let out = run(with().arg("list"));
    assert_eq!(out.status.code(), Some(4));
    let err = stderr_of(&out);
    assert!(
        err.contains("scrypt work factor 30") && !err.contains("restore store.age from a backup"),
        "{err}"
    );
    assert_eq!(std::fs::read(home.join("store.age")).unwrap(), forged);
}

#[test]
fn source_values_and_import_reports_show_no_value_in_debug_or_json() {
    let dir = TempDir::new("adopt-redaction");
    let v = values(&dir);
    let policy_path = dir.join("app.toml");
    std::fs::write(&policy_path, POLICY).unwrap();
    let env = dir.join("values.env");
    std::fs::write(&env, env_file(&v, &v.fernet, &v.rsa, &v.key)).unwrap();
    let read = keyd::sources::read(&env, keyd::sources::SourceKind::Env).unwrap();
    let policy = keyd::policy::Policy::load(&policy_path).unwrap();
    let report = keyd::ops::import(
        &keyd::store::Home::new(dir.join("home")),
        &policy,
        &keyd::ops::ImportOptions {
            source: env.clone(),
            kind: None,
            out: None,
            dry_run: false,
            replace: false,
            by: "test".into(),
        },
    )
    .unwrap();
    assert!(report.written);
    let shown = format!(
        "{read:?}\n{report:?}\n{}",
        serde_json::to_string(&report).unwrap()
    );
    let body = |pem: &str| pem.lines().nth(1).unwrap().to_owned();
    for secret in [
        v.fernet.trim().to_owned(),
        body(&v.rsa),
        body(&v.key),
        "correcthorsebatterystaple1".to_owned(),
    ] {
        assert!(!shown.contains(&secret), "a value is shown:\n{shown}");
    }
    // Nor in any file of the home but the encrypted store.
    for (path, _, bytes) in keyd_tests::snapshot(&dir.join("home")) {
        if path.ends_with("store.age") {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("correcthorsebatterystaple1"),
            "{}",
            path.display()
        );
        assert!(!text.contains(v.fernet.trim()), "{}", path.display());
    }
}

/// Runs `argv` on a pseudo-terminal, answering each passphrase prompt (a line ending in `:`)
/// with the next of `answers`.
fn on_terminal(argv: &[&str], answers: &[&str]) -> (i32, String) {
    keyd_tests::on_terminal(argv, answers, ":")
}

#[test]
fn the_passphrase_is_asked_on_the_terminal_without_echo() {
    let dir = TempDir::new("adopt-tty");
    let home = dir.join("home");
    let keyctl = keyd_tests::binary("keyctl");
    let (keyctl, home_arg) = (keyctl.to_str().unwrap(), home.to_str().unwrap());
    let (code, shown) = on_terminal(
        &[keyctl, "--home", home_arg, "init", "--passphrase"],
        &["first horse staple", "other horse staple"],
    );
    assert_eq!(code, 4, "{shown}");
    assert!(shown.contains("the two passphrases differ"), "{shown}");
    assert!(!home.join("identity.txt").exists());
    let (code, shown) = on_terminal(
        &[keyctl, "--home", home_arg, "init", "--passphrase"],
        &["tty horse staple", "tty horse staple"],
    );
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("again, to confirm:"), "{shown}");
    assert!(
        !shown.contains("tty horse"),
        "the passphrase was echoed:\n{shown}"
    );
    let (code, shown) = on_terminal(&[keyctl, "--home", home_arg, "list"], &["tty horse staple"]);
    assert_eq!(code, 0, "{shown}");
    assert!(shown.contains("The store is empty"), "{shown}");
    let (code, shown) = on_terminal(&[keyctl, "--home", home_arg, "list"], &["tty horse stable"]);
    assert_eq!(code, 4, "{shown}");
    assert!(
        shown.contains("the passphrase does not open the store"),
        "{shown}"
    );
}

#[test]
fn a_backup_named_without_a_directory_is_written_to_the_current_one() {
    let dir = TempDir::new("adopt-backup-here");
    let home = dir.join("home");
    ok(keyctl(&home)
        .args(["quickstart", "--policy"])
        .arg(workspace().join("tests/cmd/identity.in/good.toml"))
        .arg("--out")
        .arg(dir.join("out")));
    let out = run(keyctl(&home)
        .current_dir(dir.path())
        .args(["backup", "--out", "here.age"]));
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(dir.join("here.age").is_file());
    ok(keyctl(&home)
        .args(["restore", "--dry-run"])
        .arg(dir.join("here.age")));
}

/// `keyctl man` is one page that stands alone: it names every command (a leaf, with its full
/// name) instead of pointing at pages such as keyctl-init(1) that nothing installs.
#[test]
fn the_manual_page_lists_every_command_and_refers_to_no_page_that_does_not_exist() {
    let dir = TempDir::new("man-page");
    let man = text(ok(keyctl(&dir.join("h")).arg("man")));
    // The one other page it names is keyd's, which `keyd --man` prints.
    assert!(
        !man.replace("\\fBkeyd\\fR(1)", "").contains("(1)"),
        "refers to another page:\n{man}"
    );
    assert!(man.contains("\\fBkeyd\\fR(1)"), "{man}");
    for command in ["keyctl init", "keyctl gen fernet", "keyctl policy check"] {
        let entry = format!("\\fB{}\\fR", command.replace('-', "\\-"));
        assert!(man.contains(&entry), "{command} is not listed:\n{man}");
    }
    assert!(man.contains(".SH \"EXIT STATUS\"\n.nf\n"), "{man}");
}

/// keyd has a manual page too, made from the definitions `keyd --help` shows; it needs no home.
#[test]
fn keyd_prints_its_manual_page() {
    let dir = TempDir::new("keyd-man");
    let man = text(ok(keyd(&dir.join("no-home")).arg("--man")));
    assert!(man.contains(".TH keyd 1"), "{man}");
    for flag in ["docker\\-plugin", "store", "allow\\-uid"] {
        assert!(
            man.contains(&format!("\\-\\-{flag}")),
            "--{flag} is missing:\n{man}"
        );
    }
}
