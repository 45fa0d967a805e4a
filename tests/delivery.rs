//! Delivery passes touch only what changed: the store's ledger (what each sink wrote: inode,
//! size, times, mode, owner, digest) lets a no-change `apply` leave every delivered file
//! unopened, and a rotation write and read only the files of the secrets it changed. The
//! kernel is the witness: inotify watches on the output directory, its data directory and
//! each delivered file see every open. Files removed, edited, replaced or re-permissioned by
//! hand are still found and restored. The directory changes as one set: a reader never sees
//! two files of one pair from two versions. Whatever stands at an output path (a FIFO, a
//! symlink) is not followed, and a world-writable directory is refused.

use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;

use keyd_tests::{TempDir, keyctl, ok, quickstart};
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};

/// How many password secrets the test stack has (besides a template, a certificate with its
/// key, and the env file).
const SECRETS: usize = 40;

fn write_policy(path: &Path) {
    // The env file carries every value but the PEM ones (they hold newlines).
    let include: Vec<String> = (1..=SECRETS)
        .map(|i| format!("\"P{i:02}\""))
        .chain(["\"DB_URL\"".to_owned()])
        .collect();
    let mut text = format!(
        "[stack]\nname = \"ledger\"\n\n[sinks.envfile]\npath = \"stack.env\"\ninclude = [{}]\n\n\
         [secrets.DB_URL]\nkind = \"template\"\ntemplate = \"postgres://app:{{P01}}@db/app\"\n\n\
         [secrets.WEB]\nkind = \"tls\"\nkey = \"WEB_KEY\"\ncn = \"web\"\n",
        include.join(", ")
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
    quickstart(&home, &policy, &out);
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

/// The names of the entries of `dir`, and of the files of its subdirectories (the files sink's
/// data directory), that were opened, written, created, removed or had their metadata changed
/// while `action` ran, as the kernel reported them. Directories themselves (listing them,
/// syncing them) do not count: only entries in them.
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
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            inotify::add_watch(&fd, e.path(), mask).unwrap();
        }
    }
    action();
    read_names(&fd)
}

/// The names inotify reported on `fd`, until none is left.
fn read_names(fd: &rustix::fd::OwnedFd) -> BTreeSet<String> {
    let mut buf = [MaybeUninit::<u8>::uninit(); 64 * 1024];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut names = BTreeSet::new();
    loop {
        match reader.next() {
            Ok(event) => {
                assert!(
                    !event.events().contains(ReadFlags::QUEUE_OVERFLOW),
                    "inotify queue overflowed: events were lost"
                );
                // A directory opened or read (listed) is not an entry touched.
                let listed = event.events().contains(ReadFlags::ISDIR)
                    && (event.events() - ReadFlags::ISDIR)
                        .difference(ReadFlags::OPEN | ReadFlags::ACCESS)
                        .is_empty();
                if let Some(name) = event.file_name()
                    && !listed
                {
                    names.insert(name.to_string_lossy().into_owned());
                }
            }
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => panic!("reading inotify events: {e}"),
        }
    }
    names
}

/// The delivered files (what each output's symlink names), by output name: inode of each.
fn inodes(out: &Path) -> std::collections::BTreeMap<String, u64> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| !name.starts_with('.'))
        .map(|name| {
            let ino = std::fs::metadata(out.join(&name)).unwrap().ino();
            (name, ino)
        })
        .collect()
}

/// The delivered files that were opened, read or written while `action` ran: each file an
/// output's symlink names is watched by inode, so an open through a hard link counts.
fn delivered_files_opened_during(out: &Path, action: impl FnOnce()) -> BTreeSet<String> {
    let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).unwrap();
    let mask = WatchFlags::OPEN | WatchFlags::ACCESS | WatchFlags::MODIFY;
    let mut by_watch = std::collections::HashMap::new();
    for name in inodes(out).into_keys() {
        let wd = inotify::add_watch(&fd, out.join(&name), mask).unwrap();
        by_watch.insert(wd, name);
    }
    action();
    let mut buf = [MaybeUninit::<u8>::uninit(); 64 * 1024];
    let mut reader = inotify::Reader::new(&fd, &mut buf);
    let mut names = BTreeSet::new();
    loop {
        match reader.next() {
            Ok(event) => {
                assert!(!event.events().contains(ReadFlags::QUEUE_OVERFLOW));
                if let Some(name) = by_watch.get(&event.wd()) {
                    names.insert(name.clone());
                }
            }
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => panic!("reading inotify events: {e}"),
        }
    }
    names
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

    // P01 feeds DB_URL: both are written anew; every other file is the same inode, and no
    // other delivered file is opened.
    let rotate = |name: &str, expected: &BTreeSet<String>| {
        let inodes_before = inodes(&s.out);
        let opened = delivered_files_opened_during(&s.out, || {
            ok(keyctl(&s.home).arg("rotate").arg(name));
        });
        assert!(opened.is_subset(expected), "opened: {opened:?}");
        let inodes_after = inodes(&s.out);
        assert_eq!(
            inodes_before.keys().collect::<Vec<_>>(),
            inodes_after.keys().collect::<Vec<_>>()
        );
        inodes_after
            .into_iter()
            .filter(|(name, ino)| inodes_before[name] != *ino)
            .map(|(name, _)| name)
            .collect::<BTreeSet<String>>()
    };
    let expected: BTreeSet<String> = ["P01", "DB_URL"].map(String::from).into();
    assert_eq!(rotate("P01", &expected), expected);
    let after = std::fs::read_to_string(s.out.join("P01")).unwrap();
    assert_ne!(after, before);
    assert_eq!(
        std::fs::read_to_string(s.out.join("DB_URL")).unwrap(),
        format!("postgres://app:{after}@db/app")
    );

    // A secret nothing derives from: only its own file.
    let expected: BTreeSet<String> = ["P17"].map(String::from).into();
    assert_eq!(rotate("P17", &expected), expected);

    // A certificate and its key: both, through their set, and nothing else.
    let expected: BTreeSet<String> = ["WEB", "WEB_KEY"].map(String::from).into();
    assert_eq!(rotate("WEB", &expected), expected);
    assert_eq!(
        std::fs::read_link(s.out.join("WEB_KEY")).unwrap(),
        Path::new("..keyd/@WEB/WEB_KEY")
    );

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

/// Review finding (issue 10): each file was replaced atomically but a set was not, so a reader
/// of a certificate and its key (or a login and its password) could see one from before a
/// rotation and one from after. The reader here reads A, then B, then A again and trusts the
/// pair only when A did not change meanwhile; it must never catch the directory holding A and
/// B of two different versions.
#[test]
fn a_reader_never_sees_a_pair_of_files_from_two_rotations() {
    use std::collections::HashSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use keyd::policy::FilesSpec;
    use keyd::secret::{SecretString, Value};
    use keyd::sinks::{Delivery, FilesSink, Pass, Sink as _};
    use keyd::store::{Ledger, SinkRecords, SwarmLedger};

    const ROTATIONS: u64 = 200;
    let tmp = TempDir::new("atomic-set");
    let dir = tmp.join("out");
    let sink = FilesSink::new(FilesSpec::in_dir(dir.clone()));
    let pair = |v: u64| {
        ["cert.pem", "key.pem"].map(|name| Delivery {
            secret: "tls".into(),
            name: name.into(),
            version: v,
            value: Value::Secret(SecretString::new(format!("{v}:{name}"))),
        })
    };
    let (mut ledger, mut swarm) = (Ledger::new(), SwarmLedger::default());
    let mut records = SinkRecords {
        ledger: &mut ledger,
        swarm: &mut swarm,
    };
    sink.deliver(&pair(1), Pass::Full, &mut records).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let (mixed, pairs, errors) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let reader = {
        let (dir, stop) = (dir.clone(), stop.clone());
        let (mixed, pairs, errors) = (mixed.clone(), pairs.clone(), errors.clone());
        std::thread::spawn(move || {
            let version = |text: &str| text.split(':').next().unwrap().to_owned();
            let read = |name: &str| std::fs::read_to_string(dir.join(name));
            while !stop.load(Ordering::SeqCst) {
                let (Ok(a), Ok(b), Ok(again)) =
                    (read("cert.pem"), read("key.pem"), read("cert.pem"))
                else {
                    errors.fetch_add(1, Ordering::SeqCst);
                    continue;
                };
                if a == again {
                    pairs.fetch_add(1, Ordering::SeqCst);
                    if version(&a) != version(&b) {
                        mixed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        })
    };
    while pairs.load(Ordering::SeqCst) < 10 {
        std::thread::yield_now();
    }
    let changed: HashSet<String> = ["cert.pem", "key.pem"].map(String::from).into();
    for v in 2..=ROTATIONS + 1 {
        sink.deliver(&pair(v), Pass::Only(&changed), &mut records)
            .unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    eprintln!(
        "{} consistent reads, {} failed reads during {ROTATIONS} rotations",
        pairs.load(Ordering::SeqCst),
        errors.load(Ordering::SeqCst)
    );
    assert_eq!(
        mixed.load(Ordering::SeqCst),
        0,
        "a reader saw cert.pem and key.pem of two different versions"
    );
    let last = ROTATIONS + 1;
    assert_eq!(
        std::fs::read_to_string(dir.join("key.pem")).unwrap(),
        format!("{last}:key.pem")
    );
}

/// Review finding (issue 10, low): a FIFO placed where a delivered file belongs made the
/// delivery pass open it for reading and block forever.
#[test]
fn a_fifo_at_an_output_path_does_not_hang_delivery() {
    let s = stack("fifo");
    let p01 = s.shown("P01");
    std::fs::remove_file(s.out.join("P01")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        s.out.join("P01"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let out = keyd_tests::run_within(
        keyctl(&s.home)
            .arg("apply")
            .arg("--policy")
            .arg(&s.policy)
            .arg("--out")
            .arg(&s.out),
        std::time::Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(s.out.join("P01")).unwrap(), p01);
}

/// Review finding (issue 10, low): a symlink placed where a delivered file belongs was
/// followed: a file elsewhere holding the right bytes was taken as the delivered file, and the
/// output kept pointing out of the directory.
#[test]
fn a_symlink_at_an_output_path_is_not_followed() {
    let s = stack("symlink");
    let outside = TempDir::new("symlink-outside");
    let same = outside.join("same");
    let other = outside.join("other");
    std::fs::write(&same, s.shown("P01")).unwrap();
    std::fs::set_permissions(&same, std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::write(&other, "not a secret").unwrap();
    for (name, target) in [("P01", &same), ("P02", &other)] {
        std::fs::remove_file(s.out.join(name)).unwrap();
        std::os::unix::fs::symlink(target, s.out.join(name)).unwrap();
    }
    s.apply();
    assert_eq!(std::fs::read_to_string(&other).unwrap(), "not a secret");
    let dir = std::fs::canonicalize(&s.out).unwrap();
    for name in ["P01", "P02"] {
        let resolved = std::fs::canonicalize(s.out.join(name)).unwrap();
        assert!(
            resolved.starts_with(&dir),
            "{name} still resolves outside the directory: {}",
            resolved.display()
        );
        assert_eq!(
            std::fs::read_to_string(s.out.join(name)).unwrap(),
            s.shown(name)
        );
    }
}

/// Review finding (issue 10, low): a directory every user can write to (even a sticky one,
/// like /tmp) let anyone plant files where keyd delivers; it is refused, naming the fix.
#[test]
fn a_world_writable_output_directory_is_refused() {
    for mode in [0o777, 0o1777] {
        let s = stack(&format!("world-{mode:o}"));
        std::fs::set_permissions(&s.out, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = keyd_tests::run(
            keyctl(&s.home)
                .arg("apply")
                .arg("--policy")
                .arg(&s.policy)
                .arg("--out")
                .arg(&s.out),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mode {mode:o} accepted: {stderr}");
        assert!(
            stderr.contains(&s.out.display().to_string()) && stderr.contains("chmod go-w"),
            "{stderr}"
        );
    }
}

/// Review finding (issue 26, low): `..keyd` and the set directories were chmod/chowned by path
/// in an output directory its group could write to, so a group member could swap a symlink
/// in between the mkdir and the chmod and have keyd chmod a directory anywhere. A directory
/// its group (or anyone) can write is refused, before anything in it changes, naming the fix.
#[test]
fn a_group_writable_output_directory_is_refused() {
    for mode in [0o770, 0o775, 0o2770] {
        let s = stack(&format!("group-{mode:o}"));
        std::fs::set_permissions(&s.out, std::fs::Permissions::from_mode(mode)).unwrap();
        let before = keyd_tests::snapshot(&s.out);
        let out = keyd_tests::run(
            keyctl(&s.home)
                .arg("apply")
                .arg("--policy")
                .arg(&s.policy)
                .arg("--out")
                .arg(&s.out),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mode {mode:o} accepted: {stderr}");
        assert!(
            stderr.contains(&s.out.display().to_string()) && stderr.contains("chmod go-w"),
            "{stderr}"
        );
        assert_eq!(
            keyd_tests::snapshot(&s.out),
            before,
            "mode {mode:o}: changed"
        );
    }
}

/// A `..keyd` made group-writable (by hand, or by an older keyd in such a directory) lets the
/// group swap the set directories inside it: refused too.
#[test]
fn a_group_writable_keyd_directory_is_refused() {
    let s = stack("group-own");
    let own = s.out.join("..keyd");
    std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o775)).unwrap();
    let out = keyd_tests::run(
        keyctl(&s.home)
            .arg("apply")
            .arg("--policy")
            .arg(&s.policy)
            .arg("--out")
            .arg(&s.out),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(stderr.contains(&own.display().to_string()), "{stderr}");
}

/// The names `out` shows (no dot entries), each with the inode of the file it leads to.
fn shown_inodes(out: &Path) -> Vec<(String, u64)> {
    inodes(out).into_iter().collect()
}

/// Checks that every name of `before` is now `..keyd/NAME@1` leading to the same inode (taken
/// over, not rewritten), mode 0400, holding what the store shows; that the apply that took
/// them over reported nothing written; and that the apply after it touches nothing.
fn assert_taken_over(s: &Stack, before: &[(String, u64)], report: &serde_json::Value) {
    for (name, ino) in before {
        let path = s.out.join(name);
        // The certificate and its key go through their secret's set.
        let link = if name.starts_with("WEB") {
            Path::new("..keyd/@WEB").join(name)
        } else {
            Path::new("..keyd").join(format!("{name}@1"))
        };
        assert_eq!(std::fs::read_link(&path).unwrap(), link);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.ino(), *ino, "{name} was rewritten, not linked");
        assert_eq!(meta.mode() & 0o777, 0o400);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), s.shown(name));
    }
    assert!(!report.to_string().contains("\"written\":[\""), "{report}");
    let touched = files_touched_during(&s.out, || {
        s.apply();
    });
    assert!(touched.is_empty(), "{touched:?}");
}

#[test]
fn plain_files_an_older_keyd_wrote_become_symlinks_without_a_rewrite() {
    let s = stack("migrate");
    // The layout before data directories: each output a plain file in the directory.
    for (name, _) in shown_inodes(&s.out) {
        let file = std::fs::canonicalize(s.out.join(&name)).unwrap();
        std::fs::rename(file, s.out.join(&name)).unwrap();
    }
    std::fs::remove_dir_all(s.out.join("..keyd")).unwrap();
    let before = shown_inodes(&s.out);
    assert_eq!(before.len(), SECRETS + 3);
    let report = s.apply();
    assert_taken_over(&s, &before, &report);
}

/// Whether the output directory or its `..keyd` was listed (read as a directory) while
/// `action` ran, as the kernel reported it.
fn listed_during(out: &Path, action: impl FnOnce()) -> bool {
    let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).unwrap();
    for dir in [out.to_owned(), out.join("..keyd")] {
        inotify::add_watch(&fd, &dir, WatchFlags::ACCESS).unwrap();
    }
    action();
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(&fd, &mut buf);
    let mut listed = false;
    loop {
        match reader.next() {
            // An event with no name is about the watched directory itself.
            Ok(event) => listed |= event.file_name().is_none(),
            Err(rustix::io::Errno::AGAIN) => return listed,
            Err(e) => panic!("reading inotify events: {e}"),
        }
    }
}

#[test]
fn a_no_change_apply_does_not_list_directories_a_pass_left_tidy_and_finds_what_came_since() {
    // Directories of 1,000 files: large enough that each pass records them as tidy, waiting
    // for the clock's next tick if it must, and that a no-change apply writes that record.
    let tmp = TempDir::new("tidy");
    let (home, out, policy) = (tmp.join("home"), tmp.join("out"), tmp.join("big.toml"));
    let mut text = String::from("[stack]\nname = \"big\"\n");
    for i in 1..=1000 {
        text.push_str(&format!("\n[secrets.P{i:04}]\nkind = \"password\"\n"));
    }
    std::fs::write(&policy, text).unwrap();
    let pass = |command: &str| {
        ok(keyctl(&home)
            .arg(command)
            .arg("--policy")
            .arg(&policy)
            .arg("--out")
            .arg(&out));
    };
    pass("quickstart");
    let apply = || pass("apply");
    assert!(
        !listed_during(&out, apply),
        "a no-change apply listed directories nothing had changed since the last pass"
    );
    // Something put into `..keyd` alone, then into the output directory alone: each is seen
    // (its directory changed) and cleaned up.
    let own = out.join("..keyd");
    std::fs::write(own.join("P0001@9"), "stale").unwrap();
    assert!(listed_during(&out, apply));
    assert!(!own.join("P0001@9").exists(), "a stale generation was left");
    std::os::unix::fs::symlink("..keyd/P0001@9", out.join(".P0001.keyd-tmp")).unwrap();
    assert!(listed_during(&out, apply));
    assert!(
        std::fs::symlink_metadata(out.join(".P0001.keyd-tmp")).is_err(),
        "a temp symlink was left"
    );
    // A rotation leaves them tidy too.
    ok(keyctl(&home).args(["rotate", "P0002"]));
    assert!(
        !listed_during(&out, apply),
        "the apply after a rotation listed them"
    );
    let shown = ok(keyctl(&home).args(["show", "P0002"]));
    assert_eq!(std::fs::read(out.join("P0002")).unwrap(), shown);
}

#[test]
fn leftovers_of_a_cut_off_delivery_are_removed_by_the_next_apply() {
    let s = stack("leftovers");
    let own = s.out.join("..keyd");
    let entries = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    };
    let shown = entries(&own);
    // Generations written but never shown (a pass cut off before its swap), and temp symlinks
    // of a pass cut off before its rename.
    std::fs::write(own.join("P01@9"), "stale").unwrap();
    std::fs::create_dir(own.join("@tls@4")).unwrap();
    std::fs::write(own.join("@tls@4").join("tls.key"), "stale").unwrap();
    std::os::unix::fs::symlink("@tls@4", own.join(".@tls.keyd-tmp")).unwrap();
    std::os::unix::fs::symlink("..keyd/P01@9", s.out.join(".P01.keyd-tmp")).unwrap();
    s.apply();
    let left: Vec<String> = entries(&s.out)
        .into_iter()
        .filter(|n| n.starts_with('.'))
        .collect();
    assert_eq!(left, ["..keyd"]);
    assert_eq!(entries(&own), shown);
    assert_eq!(
        std::fs::read_to_string(s.out.join("P01")).unwrap(),
        s.shown("P01")
    );
}

#[test]
fn a_generation_file_a_cut_off_pass_left_where_the_next_one_goes_is_replaced() {
    let s = stack("next-generation-left");
    let own = s.out.join("..keyd");
    assert_eq!(
        std::fs::read_link(s.out.join("P01")).unwrap(),
        Path::new("..keyd/P01@1")
    );
    // A pass cut off after writing generation 2 and before showing it: the file is there,
    // with another value and another mode.
    std::fs::write(own.join("P01@2"), "stale").unwrap();
    std::fs::set_permissions(own.join("P01@2"), std::fs::Permissions::from_mode(0o644)).unwrap();
    ok(keyctl(&s.home).args(["rotate", "P01"]));
    assert_eq!(
        std::fs::read_link(s.out.join("P01")).unwrap(),
        Path::new("..keyd/P01@2")
    );
    let now = std::fs::read_to_string(s.out.join("P01")).unwrap();
    assert_ne!(now, "stale");
    assert_eq!(now, s.shown("P01"));
    let mode = std::fs::metadata(own.join("P01@2")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o400);
    // The ledger recorded the file as written: a no-change apply opens nothing.
    let touched = files_touched_during(&s.out, || {
        s.apply();
    });
    assert!(touched.is_empty(), "{touched:?}");
}

#[test]
fn a_restrictive_umask_does_not_narrow_the_modes_the_policy_asks_for() {
    let tmp = TempDir::new("umask");
    // Two directories to make: the output directory and its parent.
    let (home, out, policy) = (
        tmp.join("home"),
        tmp.join("run").join("secrets"),
        tmp.join("stack.toml"),
    );
    std::fs::write(
        &policy,
        "[stack]\nname = \"umask\"\n\n[sinks.files]\nmode = \"0440\"\ndir_mode = \"0750\"\n\n\
         [secrets.P1]\nkind = \"password\"\n\n[secrets.WEB]\nkind = \"tls\"\nkey = \"WEB_KEY\"\ncn = \"web\"\n",
    )
    .unwrap();
    // A service manager's UMask=0077, as keyd's daemon often runs.
    let keyctl = keyd_tests::binary("keyctl");
    ok(std::process::Command::new("sh")
        .args(["-c", "umask 077 && exec \"$@\"", "sh"])
        .arg(&keyctl)
        .arg("--home")
        .arg(&home)
        .args(["quickstart", "--policy"])
        .arg(&policy)
        .arg("--out")
        .arg(&out)
        .env_remove("KEYD_HOME")
        .env_remove("KEYD_SOCKET"));
    // Octal text, so that a failure reads as modes.
    let mode = |p: &Path| format!("{:o}", std::fs::metadata(p).unwrap().mode() & 0o7777);
    assert_eq!(mode(&out), "750", "the output directory");
    assert_eq!(mode(&tmp.join("run")), "750", "the parent keyd made for it");
    assert_eq!(mode(&out.join("..keyd")), "750", "keyd's directory in it");
    for name in ["P1", "WEB", "WEB_KEY"] {
        assert_eq!(mode(&out.join(name)), "440", "{name}");
    }
}
