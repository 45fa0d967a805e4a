//! Backups and restores that must not take a store over (issue 26, item 1): a backup made by
//! another identity (an attacker who added the victim's public key as a recipient) is refused
//! before anything is shown; a restore compares values, not version numbers; and a change of
//! recipients, policy, sinks or hooks is named and refused unless accepted by its own flag.

use std::path::{Path, PathBuf};

use keyd_tests::{TempDir, keyctl, ok, run};

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn public_key_of(home: &Path) -> String {
    let text = std::fs::read_to_string(home.join("identity.txt")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("# public key: "))
        .unwrap()
        .to_owned()
}

fn generation(home: &Path) -> u64 {
    std::fs::read_to_string(home.join("store.generation"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A policy of stack `app` delivering to `out`; `rekey` is an extra line for FERNET_KEY.
fn policy(dir: &TempDir, name: &str, out: &Path, rekey: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!(
            "[stack]\nname = \"app\"\n\n[sinks.files]\ndir = \"{}\"\n\n\
             [secrets.DB_PASSWORD]\nkind = \"password\"\n\n\
             [secrets.FERNET_KEY]\nkind = \"fernet\"\n{rekey}\n",
            out.display()
        ),
    )
    .unwrap();
    path
}

/// The victim's home, and a backup forged by an attacker's home that added the victim's
/// public key as a recipient and rotated past the victim's generation (as in the issue).
struct Forgery {
    dir: TempDir,
    victim: PathBuf,
    attacker: PathBuf,
    forged: PathBuf,
}

fn forgery(tag: &str) -> Forgery {
    let dir = TempDir::new(tag);
    let (victim, attacker) = (dir.join("victim"), dir.join("attacker"));
    let victim_policy = policy(&dir, "victim.toml", &dir.join("victim-out"), "");
    ok(keyctl(&victim)
        .args(["quickstart", "--policy"])
        .arg(&victim_policy));
    for _ in 0..3 {
        ok(keyctl(&victim).args(["rotate", "DB_PASSWORD"]));
    }
    let hook = dir.join("attacker-hook.sh");
    std::fs::write(&hook, "#!/bin/sh\ntouch \"$0.ran\"\n").unwrap();
    let attacker_policy = policy(
        &dir,
        "attacker.toml",
        &dir.join("attacker-out"),
        &format!("rekey = {{ command = [\"{}\"] }}", hook.display()),
    );
    ok(keyctl(&attacker).arg("init"));
    ok(keyctl(&attacker).args(["recipients", "add", &public_key_of(&victim)]));
    ok(keyctl(&attacker)
        .args(["quickstart", "--policy"])
        .arg(&attacker_policy));
    while generation(&attacker) <= generation(&victim) {
        ok(keyctl(&attacker).args(["rotate", "DB_PASSWORD"]));
    }
    let forged = dir.join("forged.age");
    ok(keyctl(&attacker).args(["backup", "--out"]).arg(&forged));
    Forgery {
        dir,
        victim,
        attacker,
        forged,
    }
}

#[test]
fn a_backup_made_by_another_identity_is_refused_before_anything_is_shown() {
    let f = forgery("backup-forged");
    let store = std::fs::read(f.victim.join("store.age")).unwrap();
    for dry_run in [true, false] {
        let mut cmd = keyctl(&f.victim);
        cmd.arg("restore");
        if dry_run {
            cmd.arg("--dry-run");
        }
        let out = run(cmd.arg(&f.forged));
        let err = stderr_of(&out);
        assert_eq!(
            out.status.code(),
            Some(4),
            "dry run {dry_run}: {err}{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            out.stdout.is_empty(),
            "dry run {dry_run}: shown before it was authenticated:\n{}",
            text(out.stdout)
        );
        assert!(
            err.contains("forged.age") && err.contains("not made with this home's identity"),
            "{err}"
        );
        assert!(err.contains("--accept-foreign-backup"), "{err}");
        assert_eq!(std::fs::read(f.victim.join("store.age")).unwrap(), store);
    }
    // The victim's own backup is restored as before.
    let own = f.dir.join("own.age");
    ok(keyctl(&f.victim).args(["backup", "--out"]).arg(&own));
    let said = text(ok(keyctl(&f.victim).arg("restore").arg(&own)));
    assert!(said.contains("Restored"), "{said}");
    // The attacker's home, which made the forged backup, restores it as its own.
    ok(keyctl(&f.attacker)
        .args(["restore", "--dry-run"])
        .arg(&f.forged));
}

#[test]
fn a_value_that_differs_at_the_same_version_is_shown_by_a_restore() {
    let dir = TempDir::new("backup-same-version");
    let (a, b) = (dir.join("a"), dir.join("b"));
    let p = policy(&dir, "p.toml", &dir.join("out"), "");
    ok(keyctl(&a).args(["quickstart", "--policy"]).arg(&p));
    // A second home with the same identity and policy: the same versions, other values
    // (delivered where A's were, once those are moved aside).
    std::fs::rename(dir.join("out"), dir.join("out-a")).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::copy(a.join("identity.txt"), b.join("identity.txt")).unwrap();
    ok(keyctl(&b).args(["quickstart", "--policy"]).arg(&p));
    let backup = dir.join("b.age");
    ok(keyctl(&b).args(["backup", "--out"]).arg(&backup));
    let dry = text(ok(keyctl(&a)
        .args(["restore", "--dry-run", "--accept-rollback"])
        .arg(&backup)));
    assert!(
        dry.contains("app/DB_PASSWORD v1") && dry.contains("app/FERNET_KEY v1"),
        "{dry}"
    );
    assert!(dry.contains("different value at the same version"), "{dry}");
    assert!(dry.contains("0 secrets the same"), "{dry}");
    // Nothing else differs, so nothing else needs accepting.
    ok(keyctl(&a)
        .args(["restore", "--accept-rollback"])
        .arg(&backup));
    assert_eq!(
        ok(keyctl(&a).args(["show", "DB_PASSWORD"])),
        ok(keyctl(&b).args(["show", "DB_PASSWORD"]))
    );
}

#[test]
fn a_restore_that_changes_recipients_policy_sinks_or_hooks_needs_each_accepted() {
    let f = forgery("backup-changes");
    let attacker_key = public_key_of(&f.attacker);
    let dry = text(ok(keyctl(&f.victim)
        .args(["restore", "--dry-run", "--accept-foreign-backup"])
        .arg(&f.forged)));
    for expected in [
        "recipients",
        attacker_key.as_str(),
        "policy",
        "sinks",
        "attacker-out",
        "hooks",
        "attacker-hook.sh",
        "app/DB_PASSWORD",
        "app/FERNET_KEY",
    ] {
        assert!(dry.contains(expected), "{expected} not in:\n{dry}");
    }
    let store = std::fs::read(f.victim.join("store.age")).unwrap();
    let mut flags = vec!["--accept-foreign-backup"];
    for (flag, names) in [
        ("--accept-recipients", "recipients"),
        ("--accept-policy", "policy"),
        ("--accept-sinks", "sinks"),
        ("--accept-hooks", "hooks"),
    ] {
        let out = run(keyctl(&f.victim).arg("restore").args(&flags).arg(&f.forged));
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {err}");
        assert!(
            err.contains(names) && err.contains(flag),
            "{flags:?}: {err}"
        );
        assert_eq!(std::fs::read(f.victim.join("store.age")).unwrap(), store);
        flags.push(flag);
    }
    let said = text(ok(keyctl(&f.victim)
        .arg("restore")
        .args(&flags)
        .arg(&f.forged)));
    assert!(said.contains("Restored"), "{said}");
}

#[test]
fn ssh_and_passphrase_homes_restore_their_own_backups_and_refuse_anothers() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = TempDir::new("backup-ssh-passphrase");
    let (a, c, p) = (dir.join("a"), dir.join("c"), dir.join("p"));
    let policy_file = policy(&dir, "p.toml", &dir.join("out"), "");
    ok(keyctl(&a)
        .args(["quickstart", "--policy"])
        .arg(&policy_file));
    // c holds a's store through an SSH key added as a recipient (issue 11's second operator).
    std::fs::create_dir_all(&c).unwrap();
    let ssh_key = dir.join("id_ed25519");
    ok(std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&ssh_key));
    let ssh_pub = std::fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
    ok(keyctl(&a).args(["recipients", "add", ssh_pub.trim()]));
    std::fs::copy(&ssh_key, c.join("identity.txt")).unwrap();
    for f in ["store.age", "store.generation"] {
        std::fs::copy(a.join(f), c.join(f)).unwrap();
    }
    let by_c = dir.join("c.age");
    ok(keyctl(&c).args(["backup", "--out"]).arg(&by_c));
    let said = text(ok(keyctl(&c).args(["restore", "--dry-run"]).arg(&by_c)));
    assert!(said.contains("made with this home's identity"), "{said}");
    ok(keyctl(&c).arg("restore").arg(&by_c));
    // a opens c's backup, but c's key made its MAC: refused unless accepted.
    let out = run(keyctl(&a).args(["restore", "--dry-run"]).arg(&by_c));
    assert_eq!(out.status.code(), Some(4), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("its MAC was made with another identity"));
    let said = text(ok(keyctl(&a)
        .args(["restore", "--dry-run", "--accept-foreign-backup"])
        .arg(&by_c)));
    assert!(
        said.contains("NOT shown to be made with this home's identity"),
        "{said}"
    );

    // A passphrase home: only the passphrase opens its backups, which is their proof.
    let phrase = dir.join("phrase");
    std::fs::write(&phrase, "correct horse battery\n").unwrap();
    std::fs::set_permissions(&phrase, std::fs::Permissions::from_mode(0o600)).unwrap();
    let with = |home: &Path| {
        let mut cmd = keyctl(home);
        cmd.env("KEYD_PASSPHRASE_FILE", &phrase);
        cmd
    };
    ok(with(&p).args(["init", "--passphrase"]));
    ok(with(&p)
        .args(["quickstart", "--policy"])
        .arg(&policy_file)
        .arg("--out")
        .arg(dir.join("p-out")));
    let by_p = dir.join("p.age");
    ok(with(&p).args(["backup", "--out"]).arg(&by_p));
    let said = text(ok(with(&p).args(["restore", "--dry-run"]).arg(&by_p)));
    assert!(said.contains("made with this home's passphrase"), "{said}");
}
