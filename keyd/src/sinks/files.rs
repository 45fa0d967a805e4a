//! The files sink: one file per output in a directory (default `/run/secrets`), exact value with
//! no added newline, mode 0400 by default. Owns the directory's layout and the reload hook run
//! after a delivery changed something.
//!
//! Every file lives in keyd's own directory `..keyd`, under a generation number; the name a
//! consumer opens is a relative symlink into it. The outputs of one secret change together, and
//! a delivery touches only the secrets it changes:
//!
//! ```text
//! DIR/NAME         -> ..keyd/NAME@4      a secret with one output: its file, generation 4
//! DIR/tls.crt      -> ..keyd/@web/tls.crt   a secret with several outputs (a certificate
//! DIR/tls.key      -> ..keyd/@web/tls.key   and its key) is read through its set,
//! DIR/..keyd/@web  -> @web@2                which one rename swaps
//! DIR/..keyd/@web@2/tls.crt, tls.key
//! ```
//!
//! A new value is written to the next generation (a file, or a set directory holding every
//! output of the secret, unchanged ones hard-linked), made durable, and shown by renaming a
//! temp symlink over the output's name or over the secret's set link: at every instant a
//! consumer reads the old value or the new one whole, and never a certificate beside another
//! version's key. The previous generation is removed after the swap. Output names start with a
//! letter or digit, so `NAME@N` files never meet the `@SECRET` sets. Symlinks are relative, so
//! the directory still works through a bind mount.
//!
//! Older layouts are taken over by the first full pass without a rewrite: plain files (each
//! output a file in `DIR`), and the whole-directory set (`NAME -> ..data/NAME`,
//! `..data -> ..keyd-N`). A current file is hard-linked into `..keyd` and its name renamed to
//! the new symlink, so consumers see the same inode. Nothing found at an output path is
//! followed: names are read with `readlinkat`/`fstatat` relative to the directory, files are
//! opened with `O_NOFOLLOW | O_NONBLOCK`, and anything else is replaced, never opened.
//!
//! A full pass also lists both directories to remove what a cut-off pass left, unless both are
//! as a pass that left them tidy recorded them in the ledger (see `record_dirs`).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use zeroize::Zeroizing;

use super::{
    Delivery, DeliveryReport, Pass, Sink, SinkError, digest, ledger_says_current, ledger_vouches,
    same_metadata, stamp, stamp_at,
};
use crate::policy::{FilesSpec, ReloadHook, Signal};
use crate::secret::same_bytes;
use crate::store::Books;

const SINK: &str = "files";
/// Passes writing at most this many files fsync each one; larger ones use one syncfs.
const FSYNC_EACH_UP_TO: usize = 64;
/// keyd's directory inside the output directory: every delivered file is in it.
const OWN: &str = "..keyd";
/// Temp symlinks end with this (`.NAME.keyd-tmp`, `..keyd/.@web.keyd-tmp`); so did the temp
/// files of keyd versions that renamed each file into place.
const TMP_SUFFIX: &str = ".keyd-tmp";
/// The whole-directory set of older keyd versions: `NAME -> ..data/NAME`, `..data -> ..keyd-N`.
const LEGACY_LINK: &str = "..data";
/// The data directories of that layout (`..keyd-7`).
const LEGACY_SET: &str = "..keyd-";
/// Ledger keys of the output directory and of `..keyd` as the last pass that left them tidy
/// (nothing for a clean-up to remove) saw them. Output names never start with '.', so these
/// never meet an output's key.
const DIR_KEYS: [&str; 2] = ["files:.", "files:..keyd"];
/// Directories whose ledger holds at least this many entries (about one per file) are large:
/// a pass waits for the clock's next tick, if need be, to record them as tidy (a listing costs
/// more than the wait), and a no-change pass records them even though that writes the store.
const TIDY_WAIT_FROM: usize = 1000;
/// Passes looking at this many secrets or more share the looking between two threads.
const PLAN_ON_TWO_CORES_FROM: usize = 1000;
/// The longest such a wait may be (a coarse clock ticks every 1 to 10 ms).
const MAX_TIDY_WAIT_NS: i64 = 20_000_000;

/// Delivers into a directory, as `[sinks.files]` says.
#[derive(Debug)]
pub struct FilesSink {
    spec: FilesSpec,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError {
    let path = path.to_owned();
    move |source| SinkError::Io {
        sink: SINK,
        path,
        source,
    }
}

fn ledger_key(name: &str) -> String {
    let mut key = String::new();
    ledger_key_in(&mut key, name);
    key
}

/// [`ledger_key`] written into `buf` (emptied first; a loop over many outputs reuses one).
fn ledger_key_in<'b>(buf: &'b mut String, name: &str) -> &'b str {
    buf.clear();
    buf.push_str("files:");
    buf.push_str(name);
    buf
}

/// The entry in `..keyd` of generation `n` of output `name`'s own file (`NAME@4`).
fn file_entry(name: &str, n: u64) -> String {
    let mut entry = String::new();
    file_entry_in(&mut entry, name, n);
    entry
}

/// [`file_entry`] written into `buf` (emptied first).
fn file_entry_in<'b>(buf: &'b mut String, name: &str, n: u64) -> &'b str {
    buf.clear();
    std::fmt::Write::write_fmt(buf, format_args!("{name}@{n}")).expect("a String takes any text");
    buf
}

/// The entry in `..keyd` of secret `secret`'s set link (`@web`).
fn set_link(secret: &str) -> String {
    format!("@{secret}")
}

/// The entry in `..keyd` of generation `n` of secret `secret`'s set (`@web@2`).
fn set_entry(secret: &str, n: u64) -> String {
    format!("@{secret}@{n}")
}

/// The generation in `entry` when it is exactly `PREFIX@N` (N digits, no sign or padding).
fn generation_of(entry: &str, prefix: &str) -> Option<u64> {
    let digits = entry.strip_prefix(prefix)?.strip_prefix('@')?;
    let n: u64 = digits.parse().ok()?;
    (digits == n.to_string()).then_some(n)
}

/// What a visible name `DIR/NAME` shows now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shown {
    /// `..keyd/NAME@N`: its own file, generation N.
    Own(u64),
    /// `..keyd/@SECRET/NAME`: a member of its secret's set.
    Member,
    /// `..data/NAME`: the whole-directory set of an older keyd.
    Legacy,
    /// A regular file: written by an older keyd, or put there by hand.
    File,
    /// Nothing.
    Missing,
    /// Something to replace: another symlink, a FIFO, a socket, a device.
    Replace,
}

/// What one output's delivery does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plan {
    /// Its current file is right: kept (hard-linked into a new set, if one is made).
    Keep,
    /// Written from the value.
    Write,
}

/// Where an output's current file is, when there is one to keep (its path made only when a
/// pass needs it: a no-change pass over 10,000 outputs needs none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// `..keyd/NAME@N`.
    Own(u64),
    /// `..keyd/@SECRET@N/NAME`.
    Member(u64),
    /// `..data/NAME`.
    Legacy,
    /// `DIR/NAME`, a regular file.
    File,
}

impl Source {
    /// The file's path, for output `name` of `secret` delivered into `dir` (`own` its `..keyd`).
    fn path(self, dir: &Path, own: &Path, secret: &str, name: &str) -> PathBuf {
        match self {
            Source::Own(n) => own.join(file_entry(name, n)),
            Source::Member(n) => own.join(set_entry(secret, n)).join(name),
            Source::Legacy => dir.join(LEGACY_LINK).join(name),
            Source::File => dir.join(name),
        }
    }
}

/// One output of a secret a pass looks at.
struct Member<'d> {
    delivery: &'d Delivery,
    shown: Shown,
    /// Its current file, when there is one to keep.
    source: Option<Source>,
    plan: Plan,
    digest: crate::store::Digest,
    /// Content verified by reading it while the ledger did not vouch for it: stamp it even
    /// when no new generation is made.
    restamp: bool,
}

/// The outputs of one secret in a pass, and the generation a change makes.
struct Group<'d> {
    secret: &'d str,
    members: Vec<Member<'d>>,
    /// For a secret with several outputs: the generation its set link names now.
    set_now: Option<u64>,
    /// The generation this pass makes (a file or a set), if any.
    next: Option<u64>,
}

impl Group<'_> {
    fn single(&self) -> bool {
        self.members.len() == 1
    }

    /// Whether this group leaves nothing in `..keyd` that no name shows once its previous
    /// generation is removed (`remove_previous`): each output showed the group's own file (one
    /// output) or its set (several), a plain file (renamed over), or nothing. A secret that
    /// gained or lost outputs, or a name that showed something else, leaves work for a
    /// clean-up.
    fn leaves_nothing_behind(&self) -> bool {
        self.next.is_none()
            || self.members.iter().all(|m| match m.shown {
                Shown::Own(_) => self.single(),
                Shown::Member => !self.single() && self.set_now.is_some(),
                Shown::Missing | Shown::File => true,
                Shown::Legacy | Shown::Replace => false,
            })
    }

    /// For a secret with one output: the generation of its own file its name shows after
    /// this pass (`NAME -> ..keyd/NAME@N`).
    fn own_generation(&self) -> Option<u64> {
        if !self.single() {
            return None;
        }
        self.next.or(match self.members[0].shown {
            Shown::Own(n) => Some(n),
            _ => None,
        })
    }

    /// Where output `m`'s file is after this pass (`dir` the output directory, `own` its
    /// `..keyd`).
    fn live_path(&self, dir: &Path, own: &Path, m: &Member<'_>) -> Option<PathBuf> {
        let name = &m.delivery.name;
        match self.next {
            Some(n) if self.single() => Some(own.join(file_entry(name, n))),
            Some(n) => Some(own.join(set_entry(self.secret, n)).join(name)),
            None => m.source.map(|s| s.path(dir, own, self.secret, name)),
        }
    }

    /// The `..keyd` entries this group shows after this pass (kept by the clean-up).
    fn entries(&self, out: &mut HashSet<String>) {
        if self.single() {
            if let Some(n) = self.own_generation() {
                out.insert(file_entry(&self.members[0].delivery.name, n));
            }
        } else if let Some(n) = self.next.or(self.set_now) {
            out.insert(set_link(self.secret));
            out.insert(set_entry(self.secret, n));
        }
    }
}

impl FilesSink {
    /// The sink `spec` describes.
    pub fn new(spec: FilesSpec) -> Self {
        FilesSink { spec }
    }

    fn own(&self) -> PathBuf {
        self.spec.dir.join(OWN)
    }

    /// Whether a file recorded as `recorded` has the mode and owner the policy asks for now.
    fn wants(&self, recorded: &crate::store::Stamp) -> bool {
        recorded.mode == self.spec.mode
            && self.spec.uid.is_none_or(|u| u == recorded.uid)
            && self.spec.gid.is_none_or(|g| g == recorded.gid)
    }

    /// Whether the file at `path` holds exactly `value` with the configured mode and owner.
    /// Opens without following a symlink and without blocking (a FIFO), and reads only a
    /// regular file.
    fn is_current(&self, path: &Path, value: &[u8]) -> bool {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let Ok(fd) = rustix::fs::open(path, flags, Mode::empty()) else {
            return false;
        };
        let mut f = File::from(fd);
        let Ok(meta) = f.metadata() else { return false };
        if !meta.is_file()
            || meta.mode() & 0o7777 != self.spec.mode
            || self.spec.uid.is_some_and(|u| u != meta.uid())
            || self.spec.gid.is_some_and(|g| g != meta.gid())
            || meta.len() != value.len() as u64
        {
            return false;
        }
        let mut existing = Zeroizing::new(Vec::with_capacity(value.len()));
        f.read_to_end(&mut existing).is_ok() && same_bytes(&existing, value)
    }

    /// Writes one output's file where nothing shows it yet (whatever a cut-off pass left at
    /// `path` is replaced), made durable here when `fsync`. Returns the file's metadata once
    /// written: what the ledger records, with no second look at the path.
    fn write_file(
        &self,
        path: &Path,
        value: &[u8],
        fsync: bool,
    ) -> Result<fs::Metadata, SinkError> {
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.spec.mode)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(path)
        };
        let mut f = match create() {
            // Left by a pass cut off before its swap: never shown, so safe to replace.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                fs::remove_file(path).and_then(|()| create())
            }
            made => made,
        }
        .map_err(io(path))?;
        let owner = self.spec.uid.is_some() || self.spec.gid.is_some();
        let finish = |f: &mut File| -> std::io::Result<fs::Metadata> {
            f.write_all(value)?;
            let meta = f.metadata()?;
            // The umask may have taken bits the policy asks for: set the mode only then (a
            // chmod costs an inode update per file).
            let chmod = meta.mode() & 0o7777 != self.spec.mode;
            if chmod {
                f.set_permissions(fs::Permissions::from_mode(self.spec.mode))?;
            }
            if owner {
                std::os::unix::fs::fchown(&*f, self.spec.uid, self.spec.gid)?;
            }
            if fsync {
                f.sync_all()?;
            }
            if chmod || owner {
                f.metadata()
            } else {
                Ok(meta)
            }
        };
        finish(&mut f).map_err(io(path))
    }

    /// Refuses an output directory every user may write to: anyone could plant a symlink, a
    /// FIFO or a file of their own where consumers read secrets (a sticky bit does not help:
    /// the planted entry is theirs to keep). A directory not made yet is checked once made.
    fn refuse_world_writable(&self) -> Result<(), SinkError> {
        let dir = &self.spec.dir;
        match fs::metadata(dir) {
            Ok(meta) if meta.mode() & 0o002 != 0 => Err(SinkError::WorldWritable {
                sink: SINK,
                path: dir.clone(),
                mode: meta.mode() & 0o7777,
            }),
            _ => Ok(()),
        }
    }

    /// The output directory and `..keyd`, in the order of [`DIR_KEYS`].
    fn dirs(&self) -> [PathBuf; 2] {
        [self.spec.dir.clone(), self.own()]
    }

    /// Whether both directories are as a pass that left them tidy recorded them: same inodes,
    /// and no entry added, removed or renamed since (either would have changed its mtime and
    /// ctime). Then a full pass has nothing to clean up, and skips listing them.
    fn dirs_as_recorded(&self, ledger: &crate::store::Ledger) -> bool {
        self.dir_stamps().is_some_and(|stamps| {
            DIR_KEYS
                .iter()
                .zip(&stamps)
                .all(|(key, now)| ledger.get(*key).is_some_and(|r| same_metadata(now, r)))
        })
    }

    /// The stamps of both directories now (`lstat`: a symlink is not a directory here), in the
    /// order of [`DIR_KEYS`].
    fn dir_stamps(&self) -> Option<Vec<crate::store::Stamp>> {
        self.dirs()
            .iter()
            .map(|path| {
                let meta = fs::symlink_metadata(path).ok().filter(|m| m.is_dir())?;
                Some(stamp(&meta, crate::store::Digest::default()))
            })
            .collect()
    }

    /// Records both directories as tidy now, unless a later change could leave their times as
    /// they are: the kernel stamps a change with its coarse clock (or a finer one), so a
    /// directory last changed before the coarse clock's reading now shows any later change.
    /// On a file system that keeps whole seconds only, two seconds must have passed. A
    /// directory too new to tell is not recorded, and the next full pass lists it; with
    /// `wait` (directories large enough that a listing costs more), the clock's next tick (a
    /// few ms) is waited for instead.
    fn record_dirs(&self, ledger: &mut crate::store::Ledger, wait: bool) {
        use rustix::time::{ClockId, clock_gettime};
        let coarse_now = || {
            let now = clock_gettime(ClockId::RealtimeCoarse);
            super::nanos(now.tv_sec, now.tv_nsec)
        };
        let Some(stamps) = self.dir_stamps().filter(|_| stamped_here(&self.spec.dir)) else {
            return forget_dirs(ledger);
        };
        // The time after which a later change shows: the newest change, plus what the file
        // system may have cut off its times. (A change while this waits makes the record
        // differ from the directory, so the next full pass lists it: still safe.)
        let changed = |s: &crate::store::Stamp| {
            let margin = truncation_margin(s.mtime_ns).min(truncation_margin(s.ctime_ns));
            s.mtime_ns.max(s.ctime_ns).saturating_add(margin)
        };
        let newest = stamps.iter().map(changed).max().unwrap_or(i64::MAX);
        let mut now = coarse_now();
        if wait && newest >= now && newest - now <= MAX_TIDY_WAIT_NS {
            // The coarse clock ticks every few ms: look again every half millisecond.
            let give_up = std::time::Instant::now()
                + std::time::Duration::from_nanos((newest - now + MAX_TIDY_WAIT_NS).unsigned_abs());
            while newest >= now && std::time::Instant::now() < give_up {
                std::thread::sleep(std::time::Duration::from_micros(500));
                now = coarse_now();
            }
        }
        if newest < now {
            for (key, s) in DIR_KEYS.iter().zip(stamps) {
                ledger.insert((*key).to_owned(), s);
            }
        } else {
            forget_dirs(ledger);
        }
    }

    /// Makes the output directory and the parents it lacks, each with `dir_mode` whatever the
    /// umask (a service manager's `UMask=0077` would leave them to keyd's user alone). Each is
    /// made and opened relative to its parent's fd, never through a symlink, so a name swapped
    /// meanwhile cannot redirect the chmod. Returns whether this call made the output directory
    /// itself: then nothing is in it but what this pass puts there (one another process made
    /// meanwhile is not this pass's to assume empty).
    fn make_out_dir(&self) -> Result<bool, SinkError> {
        let dir = &self.spec.dir;
        let mut missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|p| !p.as_os_str().is_empty() && fs::symlink_metadata(p).is_err())
            .collect();
        missing.reverse();
        let Some(first) = missing.first() else {
            return Ok(false);
        };
        let base = match first.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mode = Mode::from_raw_mode(self.spec.dir_mode);
        let mut parent =
            rustix::fs::open(base, flags, Mode::empty()).map_err(|e| io(base)(e.into()))?;
        let mut made = false;
        for path in missing {
            let Some(name) = path.file_name() else {
                return Err(io(dir)(std::io::Error::other(
                    "its path goes up ('..') from a directory that does not exist: give it without '..'",
                )));
            };
            made = match rustix::fs::mkdirat(&parent, name, mode) {
                Ok(()) => true,
                Err(rustix::io::Errno::EXIST) => false,
                Err(e) => return Err(io(path)(e.into())),
            };
            let fd = rustix::fs::openat(&parent, name, flags | OFlags::NOFOLLOW, Mode::empty())
                .map_err(|e| io(path)(e.into()))?;
            if made {
                rustix::fs::fchmod(&fd, mode).map_err(|e| io(path)(e.into()))?;
            }
            parent = fd;
        }
        Ok(made)
    }

    /// Makes a directory of keyd's inside the output directory (`..keyd`, a set), empty.
    /// Readers reach the files through it: it opens to whoever could open the output
    /// directory, as files did when they lay in it.
    fn make_dir(&self, path: &Path) -> Result<(), SinkError> {
        let dir = &self.spec.dir;
        let dir_meta = fs::metadata(dir).map_err(io(dir))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(path)
            .map_err(io(path))?;
        fs::set_permissions(path, fs::Permissions::from_mode(dir_meta.mode() & 0o777))
            .map_err(io(path))?;
        if fs::metadata(path).is_ok_and(|m| m.gid() != dir_meta.gid()) {
            // Best effort: only root or a member of that group may change it.
            let _ = std::os::unix::fs::chown(path, None, Some(dir_meta.gid()));
        }
        Ok(())
    }

    /// What `DIR/NAME` shows now, for an output of `secret` (`readlinkat`, then `fstatat` for
    /// what is not a symlink, both relative to `dir`, the directory's fd: nothing there is
    /// opened).
    fn shown(&self, dir: &OwnedFd, name: &str, secret: &str) -> Result<Shown, SinkError> {
        let at = |e: std::io::Error| io(&self.spec.dir.join(name))(e);
        match rustix::fs::readlinkat(dir, name, Vec::new()) {
            Ok(target) => {
                let target = Path::new(std::ffi::OsStr::from_bytes(target.as_bytes()));
                Ok(classify(target, name, Some(secret)))
            }
            Err(rustix::io::Errno::NOENT) => Ok(Shown::Missing),
            Err(rustix::io::Errno::INVAL) => {
                let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| at(e.into()))?;
                match FileType::from_raw_mode(st.st_mode) {
                    FileType::RegularFile => Ok(Shown::File),
                    FileType::Directory => Err(at(std::io::Error::other(
                        "a directory stands where keyd delivers a file; remove it",
                    ))),
                    _ => Ok(Shown::Replace),
                }
            }
            Err(e) => Err(at(e.into())),
        }
    }

    /// Makes `DIR/NAME` the symlink `target`: created where nothing is, otherwise one rename of
    /// a temp symlink over whatever is there (never following or opening it).
    fn show(&self, name: &str, target: &Path, nothing_there: bool) -> Result<(), SinkError> {
        let path = self.spec.dir.join(name);
        if nothing_there {
            match std::os::unix::fs::symlink(target, &path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        let tmp = self.spec.dir.join(format!(".{name}{TMP_SUFFIX}"));
        replace_with_symlink(&tmp, &path, target)
    }

    /// Points secret `secret`'s set link at generation `n` with one rename.
    fn swap_set(&self, secret: &str, n: u64) -> Result<(), SinkError> {
        let own = self.own();
        let link = set_link(secret);
        let tmp = own.join(format!(".{link}{TMP_SUFFIX}"));
        replace_with_symlink(&tmp, &own.join(&link), Path::new(&set_entry(secret, n)))
    }

    /// Looks at one secret's outputs: what each shows, where its file is and whether it is
    /// right. Reads a file only when the ledger does not vouch for it.
    #[allow(clippy::too_many_arguments)] // `scratch` is a buffer the caller lends
    fn plan_group<'d>(
        &self,
        secret: &'d str,
        deliveries: &[&'d Delivery],
        ledger: &crate::store::Ledger,
        fds: &[OwnedFd; 2],
        fresh: bool,
        tidy: bool,
        scratch: &mut String,
    ) -> Result<Group<'d>, SinkError> {
        let (dir, own) = (&self.spec.dir, self.own());
        let single = deliveries.len() == 1;
        let set_now = if single || fresh {
            None
        } else {
            fs::read_link(own.join(set_link(secret)))
                .ok()
                .and_then(|t| generation_of(t.to_str()?, &set_link(secret)))
        };
        let mut members = Vec::with_capacity(deliveries.len());
        for &d in deliveries {
            let value = d.value.expose().as_bytes();
            let digest = digest(value);
            // A ledger entry vouches only for the mode and owner the policy asks for now.
            let recorded = ledger
                .get(ledger_key_in(scratch, &d.name))
                .filter(|r| self.wants(r) && r.digest == digest);
            // In directories as a tidy pass recorded them no name was replaced since: each
            // still shows the generation its stamp recorded, and is not read again.
            let recorded_shown = recorded.and_then(|r| r.shown).filter(|_| tidy && single);
            let shown = match recorded_shown {
                _ if fresh => Shown::Missing,
                Some(n) => Shown::Own(n),
                None => self.shown(&fds[0], &d.name, secret)?,
            };
            let source = match shown {
                Shown::Own(n) if single => Some(Source::Own(n)),
                Shown::Member if !single => set_now.map(Source::Member),
                Shown::Legacy => Some(Source::Legacy),
                Shown::File => Some(Source::File),
                _ => None,
            };
            let path = |s: Source| s.path(dir, &own, secret, &d.name);
            // Its own file is looked at relative to `..keyd`'s fd (no path walk per output), and
            // only when the ledger has a record to compare it with.
            let vouched = match source {
                _ if recorded.is_none() => false,
                Some(Source::Own(n)) => {
                    let now = stamp_at(&fds[1], file_entry_in(scratch, &d.name, n));
                    ledger_vouches(now.as_ref(), recorded, &digest)
                }
                Some(src) => ledger_says_current(&path(src), recorded, &digest),
                None => false,
            };
            // A stamp that does not say which generation the name shows (an older keyd's, or
            // one whose name was pointed elsewhere) is recorded anew.
            let shown_unrecorded = match shown {
                Shown::Own(n) if single => recorded.is_some_and(|r| r.shown != Some(n)),
                _ => false,
            };
            let (plan, restamp) = match source {
                Some(_) if vouched => (Plan::Keep, shown_unrecorded),
                Some(src) if self.is_current(&path(src), value) => (Plan::Keep, true),
                _ => (Plan::Write, false),
            };
            members.push(Member {
                delivery: d,
                shown,
                source,
                plan,
                digest,
                restamp,
            });
        }
        let in_place = |m: &Member<'_>| match m.shown {
            Shown::Own(_) => single,
            Shown::Member => !single,
            _ => false,
        };
        let settled = members
            .iter()
            .all(|m| m.plan == Plan::Keep && in_place(m) && m.source.is_some());
        let next = (!settled).then(|| {
            if single {
                match members[0].shown {
                    Shown::Own(n) => n + 1,
                    _ => 1,
                }
            } else {
                set_now.map_or(1, |n| n + 1)
            }
        });
        Ok(Group {
            secret,
            members,
            set_now,
            next,
        })
    }

    /// [`Self::plan_group`] of each secret in `part`, in order.
    fn plan_groups<'d>(
        &self,
        part: &[&(&'d str, Vec<&'d Delivery>)],
        ledger: &crate::store::Ledger,
        fds: &[OwnedFd; 2],
        fresh: bool,
        tidy: bool,
    ) -> Result<Vec<Group<'d>>, SinkError> {
        let mut scratch = String::new();
        part.iter()
            .map(|(secret, outputs)| {
                self.plan_group(secret, outputs, ledger, fds, fresh, tidy, &mut scratch)
            })
            .collect()
    }

    /// Writes group `g`'s next generation where nothing shows it yet (unchanged files are
    /// hard links to the current ones); durable once the caller syncs. Returns, member by
    /// member, the metadata of each file written (`None` for a hard link, whose ctime the
    /// removal of its previous name changes later).
    fn build(
        &self,
        g: &Group<'_>,
        fsync_each: bool,
    ) -> Result<Vec<Option<fs::Metadata>>, SinkError> {
        let Some(n) = g.next else {
            return Ok(Vec::new());
        };
        let own = self.own();
        let set_dir = (!g.single()).then(|| own.join(set_entry(g.secret, n)));
        if let Some(set_dir) = &set_dir {
            // Left by a pass cut off before its swap: never shown, so safe to drop.
            if fs::symlink_metadata(set_dir).is_ok() {
                fs::remove_dir_all(set_dir).map_err(io(set_dir))?;
            }
            self.make_dir(set_dir)?;
        }
        let mut written = Vec::with_capacity(g.members.len());
        for m in &g.members {
            let path = g
                .live_path(&self.spec.dir, &own, m)
                .expect("a new generation has a path");
            written.push(match (&m.plan, m.source) {
                (Plan::Keep, Some(src)) => {
                    if set_dir.is_none() {
                        // Left by a pass cut off before its swap: never shown.
                        remove_if_there(&path, false)?;
                    }
                    let src = src.path(&self.spec.dir, &own, g.secret, &m.delivery.name);
                    fs::hard_link(&src, &path).map_err(io(&path))?;
                    None
                }
                _ => Some(self.write_file(
                    &path,
                    m.delivery.value.expose().as_bytes(),
                    fsync_each,
                )?),
            });
        }
        if let Some(set_dir) = &set_dir
            && fsync_each
        {
            File::open(set_dir)
                .and_then(|d| d.sync_all())
                .map_err(io(set_dir))?;
        }
        Ok(written)
    }

    /// Shows group `g`'s new generation: the output's symlink (one output) or the set link
    /// and the members' symlinks into it. Returns whether `..keyd` itself changed.
    fn show_group(&self, g: &Group<'_>) -> Result<bool, SinkError> {
        let Some(n) = g.next else { return Ok(false) };
        if g.single() {
            let m = &g.members[0];
            let target = Path::new(OWN).join(file_entry(&m.delivery.name, n));
            self.show(&m.delivery.name, &target, m.shown == Shown::Missing)?;
            return Ok(false);
        }
        self.swap_set(g.secret, n)?;
        for m in g.members.iter().filter(|m| m.shown != Shown::Member) {
            let target = Path::new(OWN)
                .join(set_link(g.secret))
                .join(&m.delivery.name);
            self.show(&m.delivery.name, &target, m.shown == Shown::Missing)?;
        }
        Ok(true)
    }

    /// Removes the generation group `g` showed before this pass.
    fn remove_previous(&self, g: &Group<'_>) -> Result<(), SinkError> {
        if g.next.is_none() {
            return Ok(());
        }
        let own = self.own();
        if g.single() {
            if let Shown::Own(n) = g.members[0].shown {
                let old = own.join(file_entry(&g.members[0].delivery.name, n));
                remove_if_there(&old, false)?;
            }
        } else if let Some(n) = g.set_now {
            let old = own.join(set_entry(g.secret, n));
            remove_if_there(&old, true)?;
        }
        Ok(())
    }

    /// Removes group `g`'s new generation after a failure before it was shown.
    fn remove_unshown(&self, g: &Group<'_>) -> Result<(), SinkError> {
        let Some(n) = g.next else { return Ok(()) };
        let own = self.own();
        if g.single() {
            remove_if_there(&own.join(file_entry(&g.members[0].delivery.name, n)), false)
        } else {
            remove_if_there(&own.join(set_entry(g.secret, n)), true)
        }
    }

    /// A full pass's clean-up: temp symlinks a crash left, names still shown through an older
    /// layout (outputs no longer delivered keep their last file, moved into `..keyd`), that
    /// layout's directories, and `..keyd` entries no name shows. `shown` holds the `..keyd`
    /// entries this pass's outputs show; `delivered`, their names. Returns whether the
    /// directories are tidy now (every removal done, no older layout left).
    fn clean_up(
        &self,
        mut shown: HashSet<String>,
        delivered: &HashSet<&str>,
    ) -> Result<bool, SinkError> {
        let (dir, own) = (&self.spec.dir, self.own());
        // Something this meant to remove is still there (a removal refused).
        let mut left = false;
        let mut legacy_left = false;
        let mut relinked = false;
        // The older layout's data directories, removed once no name shows them.
        let mut legacy_sets = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            if name.starts_with('.') {
                if name.ends_with(TMP_SUFFIX) {
                    left |= fs::remove_file(&path).is_err();
                } else if name
                    .strip_prefix(LEGACY_SET)
                    .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
                    && entry.file_type().is_ok_and(|t| t.is_dir())
                {
                    legacy_sets.push(path);
                }
                continue;
            }
            if delivered.contains(name.as_str()) {
                continue;
            }
            // A name no longer delivered (or another stack's): keep what it shows.
            let Ok(target) = fs::read_link(&path) else {
                continue;
            };
            match classify(&target, &name, None) {
                Shown::Own(n) => {
                    shown.insert(file_entry(&name, n));
                }
                Shown::Legacy => {
                    let file = dir.join(LEGACY_LINK).join(&name);
                    if fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
                        let entry = file_entry(&name, 1);
                        let new = own.join(&entry);
                        remove_if_there(&new, false)?;
                        fs::hard_link(&file, &new).map_err(io(&new))?;
                        let target = Path::new(OWN).join(&entry);
                        let tmp = dir.join(format!(".{name}{TMP_SUFFIX}"));
                        replace_with_symlink(&tmp, &path, &target)?;
                        shown.insert(entry);
                        relinked = true;
                    } else {
                        legacy_left = true;
                    }
                }
                _ => {
                    // `..keyd/@SECRET/NAME`: the secret's set link and the set it names.
                    let Some(secret) = target
                        .strip_prefix(OWN)
                        .ok()
                        .and_then(|t| t.parent())
                        .and_then(Path::to_str)
                        .and_then(|s| s.strip_prefix('@'))
                    else {
                        continue;
                    };
                    let link = set_link(secret);
                    if let Some(set) = fs::read_link(own.join(&link))
                        .ok()
                        .and_then(|t| t.into_os_string().into_string().ok())
                    {
                        shown.insert(set);
                    }
                    shown.insert(link);
                }
            }
        }
        if relinked {
            fsync(&own)?;
            fsync(dir)?;
        }
        if !legacy_left {
            remove_if_there(&dir.join(LEGACY_LINK), false)?;
            for set in &legacy_sets {
                remove_if_there(set, true)?;
            }
        }
        for entry in fs::read_dir(&own).map_err(io(&own))?.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if shown.contains(&name) {
                continue;
            }
            let path = entry.path();
            let removed = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            left |= removed.is_err();
        }
        Ok(!(left || legacy_left))
    }
}

/// What a symlink target read at `DIR/NAME` is, for an output of `secret` (`None`: any
/// secret's set).
fn classify(target: &Path, name: &str, secret: Option<&str>) -> Shown {
    let Some(t) = target.to_str() else {
        return Shown::Replace;
    };
    if let Some(rest) = t.strip_prefix(OWN).and_then(|r| r.strip_prefix('/')) {
        if let Some(n) = generation_of(rest, name) {
            return Shown::Own(n);
        }
        if let Some((link, file)) = rest.split_once('/')
            && file == name
            && link.starts_with('@')
            && secret.is_none_or(|s| link[1..] == *s)
        {
            return Shown::Member;
        }
        return Shown::Replace;
    }
    if t.strip_prefix(LEGACY_LINK)
        .and_then(|r| r.strip_prefix('/'))
        .is_some_and(|r| r == name)
    {
        return Shown::Legacy;
    }
    Shown::Replace
}

/// Whether `dir` is on a file system this kernel stamps with its own clock: tmpfs, ramfs,
/// ext2/3/4, XFS, Btrfs, F2FS or overlayfs. On any other (NFS, 9p, FUSE: times from another
/// machine or process) directories are never recorded as tidy, and every full pass lists them.
// `f_type`'s type differs by platform: the cast is needed on some, not all.
#[allow(clippy::unnecessary_cast)]
fn stamped_here(dir: &Path) -> bool {
    const LOCAL: [i64; 7] = [
        0x0102_1994, // tmpfs
        0x8584_58f6, // ramfs
        0xef53,      // ext2, ext3, ext4
        0x5846_5342, // xfs
        0x9123_683e, // btrfs
        0xf2f5_2010, // f2fs
        0x794c_7630, // overlayfs
    ];
    rustix::fs::statfs(dir).is_ok_and(|fs| LOCAL.contains(&(fs.f_type as i64)))
}

/// How much later than `ns` a change may be and still get the same time on a file system
/// that keeps times coarser than nanoseconds: a time ending in k decimal zeros may have been
/// cut to 10^k ns (a whole-seconds file system: to 1 s), so twice that. Fine times rarely end
/// in many zeros, and then the margin is at most a few ms.
fn truncation_margin(ns: i64) -> i64 {
    let mut unit = 1;
    while unit < 1_000_000_000 && ns % (unit * 10) == 0 {
        unit *= 10;
    }
    2 * unit
}

/// Drops the record of tidy directories: the next full pass lists them.
fn forget_dirs(ledger: &mut crate::store::Ledger) {
    for key in DIR_KEYS {
        ledger.remove(key);
    }
}

/// Puts the symlink `target` at `path` by one rename of a temp symlink at `tmp`.
fn replace_with_symlink(tmp: &Path, path: &Path, target: &Path) -> Result<(), SinkError> {
    if let Err(e) = std::os::unix::fs::symlink(target, tmp) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(io(tmp)(e));
        }
        // Left by a pass cut off before its rename.
        fs::remove_file(tmp).map_err(io(tmp))?;
        std::os::unix::fs::symlink(target, tmp).map_err(io(tmp))?;
    }
    fs::rename(tmp, path).map_err(io(path))
}

/// Removes the file or symlink (`tree` false) or the directory tree at `path`; nothing there
/// is not an error.
fn remove_if_there(path: &Path, tree: bool) -> Result<(), SinkError> {
    let removed = if tree {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path)(e)),
        _ => Ok(()),
    }
}

fn fsync(dir: &Path) -> Result<(), SinkError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Sink for FilesSink {
    fn kind(&self) -> &'static str {
        SINK
    }

    fn check(&self, _deliveries: &[Delivery]) -> Result<(), SinkError> {
        // Any byte string can be a file; names were checked by the policy. The directory is
        // checked here too, so that refusing it leaves every sink untouched.
        self.refuse_world_writable()
    }

    fn deliver(
        &self,
        deliveries: &[Delivery],
        pass: Pass<'_>,
        books: &mut Books<'_>,
    ) -> Result<DeliveryReport, SinkError> {
        let ledger = &mut *books.ledger;
        let (dir, own) = (&self.spec.dir, self.own());
        // A directory this pass makes shows nothing yet: no name in it is looked up, and
        // nothing is left in it for a clean-up to list.
        let fresh = !dir.is_dir() && self.make_out_dir()?;
        self.refuse_world_writable()?;
        let mut report = DeliveryReport {
            sink: SINK.into(),
            location: dir.clone(),
            ..Default::default()
        };
        match fs::symlink_metadata(&own) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                // Not keyd's: a directory is needed here.
                fs::remove_file(&own).map_err(io(&own))?;
                self.make_dir(&own)?;
            }
            Err(_) => self.make_dir(&own)?,
        }
        // Names still shown through the whole-directory set of an older keyd: every output is
        // looked at, so the next pass can remove that set.
        let legacy = fs::symlink_metadata(dir.join(LEGACY_LINK)).is_ok();
        let full = matches!(pass, Pass::Full) || legacy;
        // Nothing added to or removed from either directory since a pass left them tidy.
        let tidy = !legacy && self.dirs_as_recorded(ledger);

        // The outputs of each secret, in delivery order.
        let mut order: Vec<(&str, Vec<&Delivery>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        // A stack's deliveries come sorted by secret: grouped as they come, without an index.
        let sorted = deliveries.is_sorted_by(|a, b| a.secret <= b.secret);
        for d in deliveries {
            if sorted {
                match order.last_mut() {
                    Some((secret, outputs)) if *secret == d.secret => outputs.push(d),
                    _ => order.push((d.secret.as_str(), vec![d])),
                }
                continue;
            }
            let i = *index.entry(d.secret.as_str()).or_insert_with(|| {
                order.push((d.secret.as_str(), Vec::new()));
                order.len() - 1
            });
            order[i].1.push(d);
        }
        // `..keyd` is never reached through a symlink (the output directory may be one).
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let [dir_fd, own_fd] =
            [(dir, flags), (&own, flags | OFlags::NOFOLLOW)].map(|(path, flags)| {
                rustix::fs::open(path, flags, Mode::empty()).map_err(|e| io(path)(e.into()))
            });
        let fds = [dir_fd?, own_fd?];
        let todo: Vec<&(&str, Vec<&Delivery>)> = order
            .iter()
            .filter(|(_, outputs)| full || outputs.iter().any(|d| pass.includes(&d.name)))
            .collect();
        let ledger_now: &crate::store::Ledger = ledger;
        let plan = |part| self.plan_groups(part, ledger_now, &fds, fresh, tidy);
        // Looking at each output is two system calls or more; many are looked at on two
        // cores (the lookups are independent, and the second core is idle by now).
        let groups = if todo.len() >= PLAN_ON_TWO_CORES_FROM {
            let (first, second) = todo.split_at(todo.len() / 2);
            let (first, second) = std::thread::scope(|s| {
                let second = s.spawn(|| plan(second));
                let first = plan(first);
                let second = second
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (first, second)
            });
            let mut groups = first?;
            groups.extend(second?);
            groups
        } else {
            plan(&todo)?
        };

        // New generations: written, then durable, then shown, then the previous ones removed.
        // A few files (a rotation) are made durable one fsync each; many (a first quickstart:
        // 10,000 fsyncs took seconds) by one syncfs of the filesystem.
        let writes: usize = groups
            .iter()
            .filter(|g| g.next.is_some())
            .map(|g| g.members.len())
            .sum();
        let mut written = Vec::with_capacity(groups.len());
        if writes > 0 {
            let fsync_each = writes <= FSYNC_EACH_UP_TO;
            for g in &groups {
                written.push(self.build(g, fsync_each).inspect_err(|_| {
                    // Never shown: dropped now rather than at the next full pass.
                    for g in &groups {
                        let _ = self.remove_unshown(g);
                    }
                })?);
            }
            if !fsync_each {
                let d = File::open(&own).map_err(io(&own))?;
                rustix::fs::syncfs(&d).map_err(|e| io(&own)(e.into()))?;
            }
            // The new entries are durable before the symlinks that name them.
            fsync(&own)?;
            let mut own_changed = false;
            for g in &groups {
                own_changed |= self.show_group(g)?;
            }
            if own_changed {
                fsync(&own)?;
            }
            fsync(dir)?;
            for g in &groups {
                self.remove_previous(g)?;
            }
        }

        // Before the stamps: removing an older layout's names changes the files' ctime. A
        // pass that wrote nothing into tidy directories has nothing to clean up.
        let mut tidy_now = (tidy || fresh) && groups.iter().all(Group::leaves_nothing_behind);
        if full && !fresh && !(writes == 0 && tidy) {
            let mut shown = HashSet::new();
            for g in &groups {
                g.entries(&mut shown);
            }
            let delivered: HashSet<&str> = deliveries.iter().map(|d| d.name.as_str()).collect();
            tidy_now = self.clean_up(shown, &delivered)?;
        }
        // What each output's file is now (a new file, or a hard link whose ctime changed).
        for (i, g) in groups.iter().enumerate() {
            for (j, m) in g.members.iter().enumerate() {
                let name = &m.delivery.name;
                if m.plan == Plan::Write {
                    report.written.push(name.clone());
                } else {
                    report.unchanged.push(name.clone());
                }
                if !(g.next.is_some() || m.restamp) {
                    continue;
                }
                let key = ledger_key(name);
                let meta = match written.get(i).and_then(|w| w.get(j)) {
                    Some(Some(meta)) => Some(meta.clone()),
                    _ => g
                        .live_path(dir, &own, m)
                        .and_then(|p| fs::symlink_metadata(p).ok()),
                };
                match meta {
                    Some(meta) => {
                        let mut stamp = stamp(&meta, m.digest);
                        stamp.shown = g.own_generation();
                        ledger.insert(key, stamp)
                    }
                    None => ledger.remove(&key),
                };
            }
        }
        // Tidy now: cleaned up by this full pass (every removal done), or tidy before a pass
        // each of whose secrets left nothing behind. Recorded last, the longest after the last
        // change, when this pass wrote (the ledger is saved anyway) or when directories this
        // large are worth one store write: a small stack's no-change apply leaves the store as
        // it was.
        let large = ledger.len() >= TIDY_WAIT_FROM;
        if tidy_now && (writes > 0 || (large && !tidy)) {
            self.record_dirs(ledger, large);
        } else if writes > 0 || !tidy_now {
            forget_dirs(ledger);
        }
        // The reload hook is run by the delivery pass (deliver.rs), which also retries it.
        Ok(report)
    }

    fn retire(&self, _name: &str, _version: u64, _books: &mut Books<'_>) -> Result<(), SinkError> {
        // Each delivery replaces a secret's file or set and removes the previous one: once a
        // newer version is delivered nothing of a retired one remains here.
        Ok(())
    }
}

/// The process a reload hook's pid file names: a positive pid above 1 (never 0, -1 or a
/// negative number, which `kill(2)` reads as a process group or every process; never init) of
/// a process that exists now. Whoever can write the file picks the process signalled, so it
/// must be a regular file (no link followed) owned by keyd's uid or root.
fn read_pid_file(pid_file: &Path) -> std::io::Result<rustix::process::Pid> {
    use crate::regular_file::{Owner, open_regular, read_at_most};
    let (file, _) = open_regular(pid_file, Owner::KeydOrRoot)?;
    let bytes = read_at_most(file, 64)?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let pid = text
        .parse::<u32>()
        .ok()
        .and_then(|n| i32::try_from(n).ok())
        .filter(|&n| n > 1)
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "holds {text:?}, not the process id of a running program (a number above 1)"
            ))
        })?;
    rustix::process::test_kill_process(pid).map_err(|e| {
        std::io::Error::other(format!(
            "names process {text}, which cannot be signalled ({}): is the pid file stale?",
            std::io::Error::from(e)
        ))
    })?;
    Ok(pid)
}

/// Runs a files sink's reload hook after a delivery changed something. The command gets no
/// secret: not in argv, not in its environment (keyd's own environment holds none).
pub fn run_reload_hook(hook: &ReloadHook) -> Result<(), SinkError> {
    let fail = |path: &Path, source: std::io::Error| SinkError::Io {
        sink: "files reload",
        path: path.to_owned(),
        source,
    };
    match hook {
        ReloadHook::Signal { signal, pid_file } => {
            let pid = read_pid_file(pid_file).map_err(|e| fail(pid_file, e))?;
            let sig = match signal {
                Signal::Hup => rustix::process::Signal::HUP,
                Signal::Usr1 => rustix::process::Signal::USR1,
                Signal::Usr2 => rustix::process::Signal::USR2,
                Signal::Int => rustix::process::Signal::INT,
                Signal::Term => rustix::process::Signal::TERM,
            };
            rustix::process::kill_process(pid, sig).map_err(|e| fail(pid_file, e.into()))
        }
        ReloadHook::Command { argv, timeout } => {
            let program = Path::new(&argv[0]);
            let status = crate::command::run_with_timeout(&argv[0], &argv[1..], &[], *timeout)
                .map_err(|e| fail(program, e))?;
            match status {
                Some(status) if status.success() => Ok(()),
                Some(status) => Err(fail(
                    program,
                    std::io::Error::other(format!("reload command exited with {status}")),
                )),
                None => Err(fail(
                    program,
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "reload command timed out after {} and was killed",
                            crate::policy::duration::format(*timeout)
                        ),
                    ),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_are_exact_decimal_numbers_after_the_name() {
        assert_eq!(generation_of("P01@7", "P01"), Some(7));
        assert_eq!(generation_of("@web@12", "@web"), Some(12));
        for entry in [
            "P01@07", "P01@+7", "P01@", "P01@7x", "P017", "P0@7", "P01@@7",
        ] {
            assert_eq!(generation_of(entry, "P01"), None, "{entry}");
        }
    }

    #[test]
    fn only_an_output_directory_this_pass_made_counts_as_fresh() {
        let scratch = crate::scratch::Scratch::new();
        let out = scratch.path().join("run").join("secrets");
        let (sink, _) = sink_and_ledger(&out, 0);
        assert!(sink.make_out_dir().unwrap(), "made now, with its parent");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!((mode(&out), mode(out.parent().unwrap())), (0o700, 0o700));
        // There already (as if another process made it meanwhile): not this pass's.
        assert!(!sink.make_out_dir().unwrap());
        fs::remove_dir(&out).unwrap();
        fs::create_dir(&out).unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(!sink.make_out_dir().unwrap());
        assert_eq!(
            mode(&out),
            0o755,
            "a directory keyd did not make keeps its mode"
        );
    }

    #[test]
    fn a_symlink_target_is_ours_only_in_the_exact_shape_keyd_writes() {
        let c = |t: &str, name: &str, secret: Option<&str>| classify(Path::new(t), name, secret);
        assert_eq!(c("..keyd/P01@3", "P01", Some("P01")), Shown::Own(3));
        assert_eq!(
            c("..keyd/@web/tls.key", "tls.key", Some("web")),
            Shown::Member
        );
        assert_eq!(c("..keyd/@web/tls.key", "tls.key", None), Shown::Member);
        assert_eq!(c("..data/P01", "P01", Some("P01")), Shown::Legacy);
        for (target, name) in [
            ("..keyd/@api/tls.key", "tls.key"),
            ("..keyd/@web/other", "tls.key"),
            ("..keyd/P02@3", "P01"),
            ("..keyd/P01@3/x", "P01"),
            ("/etc/passwd", "P01"),
            ("../out/..keyd/P01@3", "P01"),
            ("..data/../P01", "P01"),
            ("..keyd", "P01"),
        ] {
            assert_eq!(c(target, name, Some("web")), Shown::Replace, "{target}");
        }
    }

    /// A files sink on `dir` and a ledger already holding `filler` entries (so that the sink
    /// counts its directories as large or not).
    fn sink_and_ledger(dir: &Path, filler: usize) -> (FilesSink, crate::store::Ledger) {
        let sink = FilesSink::new(FilesSpec {
            dir: dir.to_owned(),
            mode: 0o400,
            dir_mode: 0o700,
            uid: None,
            gid: None,
            reload: None,
        });
        let ledger = (0..filler)
            .map(|i| {
                let stamp = crate::store::Stamp::default();
                (format!("filler:{i}"), stamp)
            })
            .collect();
        (sink, ledger)
    }

    fn output(secret: &str, name: &str, value: &str) -> Delivery {
        Delivery {
            secret: secret.into(),
            name: name.into(),
            version: 1,
            value: crate::secret::Value::Secret(crate::secret::SecretString::new(value.into())),
        }
    }

    fn pass(
        sink: &FilesSink,
        ledger: &mut crate::store::Ledger,
        deliveries: &[Delivery],
        pass: Pass<'_>,
    ) {
        let mut swarm = crate::store::SwarmLedger::default();
        let mut books = Books {
            ledger,
            swarm: &mut swarm,
        };
        sink.deliver(deliveries, pass, &mut books).unwrap();
    }

    #[test]
    fn a_secret_that_gains_an_output_in_a_rotation_leaves_its_old_file_to_the_next_clean_up() {
        let scratch = crate::scratch::Scratch::new();
        let out = scratch.path().join("out");
        let (sink, mut ledger) = sink_and_ledger(&out, TIDY_WAIT_FROM);
        pass(&sink, &mut ledger, &[output("S", "S", "one")], Pass::Full);
        assert!(
            DIR_KEYS.iter().all(|k| ledger.contains_key(*k)),
            "a first pass over large directories records them as tidy"
        );
        // The secret now has a companion (a key gained its public half): a set replaces its
        // own file, which the pass does not remove.
        let both = [output("S", "S", "two"), output("S", "S_PUB", "public")];
        let names: HashSet<String> = ["S".into(), "S_PUB".into()].into();
        pass(&sink, &mut ledger, &both, Pass::Only(&names));
        assert!(
            DIR_KEYS.iter().all(|k| !ledger.contains_key(*k)),
            "a pass that left a file behind recorded the directories as tidy"
        );
        assert!(out.join(OWN).join("S@1").exists());
        pass(&sink, &mut ledger, &both, Pass::Full);
        assert!(
            !out.join(OWN).join("S@1").exists(),
            "the next full pass did not remove the old file"
        );
        assert_eq!(fs::read_to_string(out.join("S")).unwrap(), "two");
        assert!(DIR_KEYS.iter().all(|k| ledger.contains_key(*k)));
    }

    #[test]
    fn a_time_a_file_system_may_have_cut_gets_twice_its_unit_as_margin() {
        use super::truncation_margin as m;
        assert_eq!(m(1_796_032_833_342_456_382), 2); // nanoseconds
        assert_eq!(m(1_796_032_833_342_456_000), 2_000); // microseconds
        assert_eq!(m(1_796_032_833_340_000_000), 20_000_000); // 10 ms (exFAT)
        assert_eq!(m(1_796_032_833_000_000_000), 2_000_000_000); // whole seconds
        assert_eq!(m(1_796_032_830_000_000_000), 2_000_000_000); // never more than 2 s
        assert_eq!(m(0), 2_000_000_000);
    }

    #[test]
    fn file_and_set_entries_cannot_meet() {
        // Names start with a letter or digit: `NAME@N` never starts with '@'.
        assert_eq!(file_entry("web", 2), "web@2");
        assert_eq!(set_entry("web", 2), "@web@2");
        assert_eq!(set_link("web"), "@web");
    }
}
