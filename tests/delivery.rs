//! Delivery passes touch only what changed: the store's ledger (what each sink wrote: inode,
//! size, times, mode, owner, digest) lets a no-change `apply` leave every delivered file
//! unopened, and a rotation write and read only the files of the secrets it changed. The
//! kernel is the witness: an inotify watch on the output directory sees every open. Files
//! removed, edited, replaced or re-permissioned by hand are still found and restored.

use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use keyd_tests::{TempDir, keyctl, ok};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// How many password secrets the test stack has (besides one template and the env file).
const SECRETS: usize = 40;

fn write_policy(path: &Path) {
    let mut text = String::from(
        "[stack]\nname = \"ledger\"\n\n[sinks.envfile]\npath = \"stack.env\"\n\n\
         [secrets.DB_URL]\nkind = \"template\"\ntemplate = \"postgres://app:{P01}@db/app\"\n",
    );
    for i in 1..=SECRETS {
        text.push_str(&format!("\n[secrets.P{i:02}]\nkind = \"password\"\n"));
    }
    std::fs::write(path, text).unwrap();
}

struct Stack {
    _tmp: TempDir,
    home: std::path::PathBuf,
    policy: std::path::PathBuf,
    out: std::path::PathBuf,
}

fn stack(tag: &str) -> Stack {
    let tmp = TempDir::new(tag);
    let (home, out, policy) = (tmp.join("home"), tmp.join("out"), tmp.join("stack.toml"));
    write_policy(&policy);
    ok(keyctl(&home)
        .arg("quickstart")
        .arg("--policy")
        .arg(&policy)
        .arg("--out")
        .arg(&out));
    Stack {
        _tmp: tmp,
        home,
        policy,
        out,
    }
}

impl Stack {
    fn apply(&self) -> serde_json::Value {
        serde_json::from_slice(&ok(keyctl(&self.home)
            .arg("apply")
            .arg("--json")
            .arg("--policy")
            .arg(&self.policy)
            .arg("--out")
            .arg(&self.out)))
        .unwrap()
    }

    fn shown(&self, name: &str) -> String {
        String::from_utf8(ok(keyctl(&self.home).arg("show").arg(name))).unwrap()
    }
}

/// The names of the files in `dir` that were opened (or written, or had their metadata
/// changed) while `action` ran, as the kernel reported them. The directory itself (listing
/// it, syncing it) does not count: only files in it.
fn files_touched_during(dir: &Path, action: impl FnOnce()) -> BTreeSet<String> {
    let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).unwrap();
    let mask = WatchFlags::OPEN
        | WatchFlags::ACCESS
        | WatchFlags::MODIFY
        | WatchFlags::ATTRIB
        | WatchFlags::CREATE
        | WatchFlags::DELETE
        | WatchFlags::MOVED_TO;
    inotify::add_watch(&fd, dir, mask).unwrap();
    action();
    let mut buf = [MaybeUninit::<u8>::uninit(); 64 * 1024];
    let mut reader = inotify::Reader::new(&fd, &mut buf);
    let mut names = BTreeSet::new();
    loop {
        match reader.next() {
            Ok(event) => {
                assert!(
                    !event.events().contains(ReadFlags::QUEUE_OVERFLOW),
                    "inotify queue overflowed: events were lost"
                );
                if let Some(name) = event.file_name() {
                    names.insert(name.to_string_lossy().into_owned());
                }
            }
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => panic!("reading inotify events: {e}"),
        }
    }
    names
}

/// Drops a sink's temp files (`.NAME.keyd-…`) from a set of touched names, keeping what they
/// became: the published names.
fn published(names: &BTreeSet<String>) -> BTreeSet<String> {
    names
        .iter()
        .filter(|n| !n.starts_with('.'))
        .cloned()
        .collect()
}

#[test]
fn a_no_change_apply_opens_no_delivered_file() {
    let s = stack("ledger-apply");
    let report = std::cell::RefCell::new(serde_json::Value::Null);
    let touched = files_touched_during(&s.out, || *report.borrow_mut() = s.apply());
    assert!(
        touched.is_empty(),
        "a no-change apply touched delivered files: {touched:?}"
    );
    // The env file lives beside the policy, outside --out: watch it as well.
    let env_dir = s.policy.parent().unwrap();
    let touched = files_touched_during(env_dir, || {
        s.apply();
    });
    assert!(
        !touched.contains("stack.env"),
        "a no-change apply touched the env file: {touched:?}"
    );
    let report = report.into_inner();
    assert_eq!(report["store_written"], false, "{report}");
}

#[test]
fn a_rotation_writes_and_reads_only_the_files_of_the_secrets_it_changed() {
    let s = stack("ledger-rotate");
    let before = std::fs::read_to_string(s.out.join("P01")).unwrap();

    // P01 feeds DB_URL: both change, and nothing else in the directory is opened.
    let touched = files_touched_during(&s.out, || {
        ok(keyctl(&s.home).arg("rotate").arg("P01"));
    });
    let expected: BTreeSet<String> = ["P01", "DB_URL"].map(String::from).into();
    assert_eq!(published(&touched), expected, "all touched: {touched:?}");
    let after = std::fs::read_to_string(s.out.join("P01")).unwrap();
    assert_ne!(after, before);
    assert_eq!(
        std::fs::read_to_string(s.out.join("DB_URL")).unwrap(),
        format!("postgres://app:{after}@db/app")
    );

    // A secret nothing derives from: only its own file.
    let touched = files_touched_during(&s.out, || {
        ok(keyctl(&s.home).arg("rotate").arg("P17"));
    });
    let expected: BTreeSet<String> = ["P17"].map(String::from).into();
    assert_eq!(published(&touched), expected, "all touched: {touched:?}");

    // And the apply after a rotation is a no-change apply again.
    let touched = files_touched_during(&s.out, || {
        s.apply();
    });
    assert!(touched.is_empty(), "{touched:?}");
}

#[test]
fn files_removed_edited_replaced_or_chmodded_by_hand_are_restored_by_apply() {
    let s = stack("ledger-restore");
    let file = |n: &str| s.out.join(n);
    let value = |n: &str| std::fs::read_to_string(file(n)).unwrap();

    // Removed.
    std::fs::remove_file(file("P02")).unwrap();
    // Edited in place, same size, mode and mtime put back: the change time still tells.
    let p03 = value("P03");
    let mtime = std::fs::metadata(file("P03")).unwrap().modified().unwrap();
    std::fs::set_permissions(file("P03"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut f = std::fs::File::options()
        .write(true)
        .truncate(true)
        .open(file("P03"))
        .unwrap();
    std::io::Write::write_all(&mut f, "x".repeat(p03.len()).as_bytes()).unwrap();
    f.set_modified(mtime).unwrap();
    drop(f);
    std::fs::set_permissions(file("P03"), std::fs::Permissions::from_mode(0o400)).unwrap();
    // Replaced by another file with the same content (a new inode).
    let p04 = value("P04");
    std::fs::remove_file(file("P04")).unwrap();
    std::fs::write(file("P04"), &p04).unwrap();
    // Made readable by everyone.
    std::fs::set_permissions(file("P05"), std::fs::Permissions::from_mode(0o644)).unwrap();
    // The env file truncated.
    let env = s.policy.parent().unwrap().join("stack.env");
    let env_before = std::fs::read_to_string(&env).unwrap();
    std::fs::write(&env, "").unwrap();

    s.apply();
    for name in ["P02", "P03", "P04", "P05"] {
        assert_eq!(value(name), s.shown(name), "{name} not restored");
        let meta = std::fs::metadata(file(name)).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o400, "{name} mode not restored");
    }
    assert_eq!(value("P03"), p03);
    assert_eq!(std::fs::read_to_string(&env).unwrap(), env_before);

    // Restored and re-stamped: the next apply is a no-change apply.
    let touched = files_touched_during(&s.out, || {
        s.apply();
    });
    assert!(touched.is_empty(), "{touched:?}");
}
