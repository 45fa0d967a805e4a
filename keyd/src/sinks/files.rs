//! The files sink: one file per output in a directory (default `/run/secrets`), exact value with
//! no added newline, mode 0400 by default, delivered as one atomic set. Owns the directory's
//! layout and the reload hook run after a delivery changed something.
//!
//! The layout is the one Kubernetes uses for secret volumes:
//!
//! ```text
//! DIR/NAME    -> ..data/NAME        one relative symlink per output, made once
//! DIR/..data  -> ..keyd-7           the current set, swapped by one rename
//! DIR/..keyd-7/NAME                 the files themselves (mode, owner, ledger stamps)
//! ```
//!
//! A delivery that changes anything builds the next data directory whole (unchanged files are
//! hard links into the previous one, so a rotation writes only what it changed), makes it
//! durable, and renames a temp symlink over `..data`: at every instant `DIR` shows one complete
//! set, old or new, so a certificate is never beside another version's key. The previous data
//! directory is removed after the swap. Symlinks are relative, so the directory still works
//! through a bind mount. Plain files an older keyd wrote are taken into the first data
//! directory (hard-linked when current) and each replaced by its symlink with one rename.
//! Nothing found at an output path is followed: symlinks are read as links, files are opened
//! with `O_NOFOLLOW | O_NONBLOCK`, and anything else is replaced, never opened.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use zeroize::Zeroizing;

use super::{Delivery, DeliveryReport, Pass, Sink, SinkError, digest, ledger_says_current, stamp};
use crate::policy::{FilesSpec, ReloadHook, Signal};
use crate::secret::same_bytes;
use crate::store::Books;

const SINK: &str = "files";
/// Passes writing at most this many files fsync each one; larger ones use one syncfs.
const FSYNC_EACH_UP_TO: usize = 64;
/// The symlink to the data directory holding the current set.
const DATA_LINK: &str = "..data";
/// Data directories are this prefix and a generation number (`..keyd-7`).
const GENERATION: &str = "..keyd-";
/// Temp symlinks end with this (`..data.keyd-tmp`, `.NAME.keyd-tmp`); so did the temp files
/// of keyd versions that renamed each file into place.
const TMP_SUFFIX: &str = ".keyd-tmp";

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
    format!("files:{name}")
}

/// The generation `..data` names, when it is a symlink keyd made to a directory that exists.
fn current_generation(dir: &Path) -> Option<u64> {
    let target = fs::read_link(dir.join(DATA_LINK)).ok()?;
    let target = target.to_str()?;
    let n: u64 = target.strip_prefix(GENERATION)?.parse().ok()?;
    let exact = target == format!("{GENERATION}{n}");
    (exact && fs::symlink_metadata(dir.join(target)).ok()?.is_dir()).then_some(n)
}

fn generation_dir(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{GENERATION}{n}"))
}

/// What a visible name `DIR/NAME` is now.
enum Visible {
    /// The symlink `NAME -> ..data/NAME`.
    Ours,
    /// A regular file: written by an older keyd, or put there by hand.
    File,
    /// Nothing, or something to replace (another symlink, a FIFO, a socket, a device).
    Replace,
}

/// What one output's delivery does.
enum Plan {
    /// The file in the current set is right: kept (hard-linked into a new set, if one is made).
    Keep,
    /// Written from the value.
    Write,
}

/// One output of a pass: its plan and the digest its ledger stamp gets, when its content is
/// known (`None`: the ledger entry is left as it is, so a full pass verifies it).
struct Output<'d> {
    delivery: &'d Delivery,
    plan: Plan,
    digest: Option<String>,
    /// Content verified by reading it while the ledger did not vouch for it: stamp it even
    /// when no new set is made.
    restamp: bool,
}

impl FilesSink {
    /// The sink `spec` describes.
    pub fn new(spec: FilesSpec) -> Self {
        FilesSink { spec }
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

    /// Writes one output's file into a data directory not yet shown, made durable here when
    /// `fsync`.
    fn write_file(&self, path: &Path, value: &[u8], fsync: bool) -> Result<(), SinkError> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.spec.mode)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(path)
            .map_err(io(path))?;
        f.write_all(value)
            .and_then(|()| f.set_permissions(fs::Permissions::from_mode(self.spec.mode)))
            .and_then(|()| {
                if self.spec.uid.is_some() || self.spec.gid.is_some() {
                    std::os::unix::fs::fchown(&f, self.spec.uid, self.spec.gid)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| if fsync { f.sync_all() } else { Ok(()) })
            .map_err(io(path))
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

    /// What `DIR/NAME` is now (`lstat` and `readlink` only: nothing there is opened).
    fn visible(&self, name: &str) -> Result<Visible, SinkError> {
        let path = self.spec.dir.join(name);
        let meta = match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Visible::Replace),
            other => other.map_err(io(&path))?,
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            let ours = fs::read_link(&path).is_ok_and(|t| t == Path::new(DATA_LINK).join(name));
            Ok(if ours {
                Visible::Ours
            } else {
                Visible::Replace
            })
        } else if kind.is_file() {
            Ok(Visible::File)
        } else if kind.is_dir() {
            Err(io(&path)(std::io::Error::other(
                "a directory stands where keyd delivers a file; remove it",
            )))
        } else {
            Ok(Visible::Replace)
        }
    }

    /// Makes `DIR/NAME` the symlink `..data/NAME`, replacing whatever is there with one rename
    /// (never following or opening it).
    fn link_visible(&self, name: &str) -> Result<(), SinkError> {
        let dir = &self.spec.dir;
        let (path, tmp) = (dir.join(name), dir.join(format!(".{name}{TMP_SUFFIX}")));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new(DATA_LINK).join(name), &tmp).map_err(io(&tmp))?;
        fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Removes what a delivery cut off by a crash left: temp symlinks and files, and data
    /// directories other than the current one (only keyd writes these, under the store lock).
    fn remove_leftovers(&self, current: Option<u64>) {
        let dir = &self.spec.dir;
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name.starts_with('.') && name.ends_with(TMP_SUFFIX) {
                let _ = fs::remove_file(&path);
            } else if name.starts_with(GENERATION)
                && current.is_none_or(|n| path != generation_dir(dir, n))
                && fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
            {
                let _ = fs::remove_dir_all(&path);
            }
        }
    }

    /// Builds data directory `new` from `outputs` (kept ones hard-linked from `source`) and
    /// `extra` (files of outputs no longer delivered, carried over while still shown), durable
    /// before it returns.
    fn build_set(
        &self,
        new: &Path,
        outputs: &[Output<'_>],
        source: &dyn Fn(&str) -> PathBuf,
        extra: &[String],
    ) -> Result<(), SinkError> {
        let dir = &self.spec.dir;
        let dir_meta = fs::metadata(dir).map_err(io(dir))?;
        // Left by a pass cut off before its swap: never shown, so safe to drop.
        if fs::symlink_metadata(new).is_ok() {
            fs::remove_dir_all(new).map_err(io(new))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(new)
            .map_err(io(new))?;
        // A few files (a rotation) are made durable one fsync each; many (a first quickstart:
        // 10,000 fsyncs took seconds) by one syncfs of the filesystem, below.
        let writes = outputs
            .iter()
            .filter(|o| matches!(o.plan, Plan::Write))
            .count();
        let batch = writes > FSYNC_EACH_UP_TO;
        for o in outputs {
            let name = &o.delivery.name;
            let path = new.join(name);
            match o.plan {
                Plan::Write => {
                    self.write_file(&path, o.delivery.value.expose().as_bytes(), !batch)?;
                }
                Plan::Keep => fs::hard_link(source(name), &path).map_err(io(&path))?,
            }
        }
        for name in extra {
            let path = new.join(name);
            fs::hard_link(source(name), &path).map_err(io(&path))?;
        }
        // Readers reach the files through this directory: it opens to whoever could open the
        // output directory, as the files did when they lay in it.
        fs::set_permissions(new, fs::Permissions::from_mode(dir_meta.mode() & 0o777))
            .map_err(io(new))?;
        if fs::metadata(new).is_ok_and(|m| m.gid() != dir_meta.gid()) {
            // Best effort: only root or a member of that group may change it.
            let _ = std::os::unix::fs::chown(new, None, Some(dir_meta.gid()));
        }
        let new_dir = File::open(new).map_err(io(new))?;
        if batch {
            rustix::fs::syncfs(&new_dir).map_err(|e| io(new)(e.into()))?;
        }
        new_dir.sync_all().map_err(io(new))?;
        // The new directory's entry is durable before the symlink that names it.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    }

    /// Points `..data` at generation `n` with one rename of a temp symlink.
    fn swap(&self, n: u64) -> Result<(), SinkError> {
        let dir = &self.spec.dir;
        let tmp = dir.join(format!("{DATA_LINK}{TMP_SUFFIX}"));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(format!("{GENERATION}{n}"), &tmp).map_err(io(&tmp))?;
        let data = dir.join(DATA_LINK);
        fs::rename(&tmp, &data).map_err(io(&data))
    }
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
        let dir = &self.spec.dir;
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(self.spec.dir_mode)
                .create(dir)
                .map_err(io(dir))?;
        }
        self.refuse_world_writable()?;
        let current = current_generation(dir);
        if matches!(pass, Pass::Full) {
            self.remove_leftovers(current);
        }
        // Where each output's file is now: in the current set, or where an older keyd wrote it.
        let current_dir = current.map(|n| generation_dir(dir, n));
        let source = |name: &str| current_dir.as_deref().unwrap_or(dir).join(name);
        let mut report = DeliveryReport {
            sink: SINK.into(),
            location: dir.clone(),
            ..Default::default()
        };
        let mut outputs = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let (path, key) = (source(&d.name), ledger_key(&d.name));
            let output = if pass.includes(&d.name) {
                let value = d.value.expose().as_bytes();
                let digest = digest(value);
                // A ledger entry vouches only for the mode and owner the policy asks for now.
                let recorded = ledger.get(&key).filter(|r| self.wants(r));
                let (plan, restamp) = if ledger_says_current(&path, recorded, &digest) {
                    (Plan::Keep, false)
                } else if self.is_current(&path, value) {
                    (Plan::Keep, true)
                } else {
                    (Plan::Write, false)
                };
                match plan {
                    Plan::Keep => report.unchanged.push(d.name.clone()),
                    Plan::Write => report.written.push(d.name.clone()),
                }
                Output {
                    delivery: d,
                    plan,
                    digest: Some(digest),
                    restamp,
                }
            } else if is_regular_file(&path) {
                // Not looked at in this pass: carried over as it is; its stamp follows only
                // if the ledger vouched for it.
                let recorded = ledger.get(&key);
                let vouched = recorded.filter(|r| ledger_says_current(&path, Some(r), &r.digest));
                Output {
                    delivery: d,
                    plan: Plan::Keep,
                    digest: vouched.map(|r| r.digest.clone()),
                    restamp: false,
                }
            } else {
                // Missing from the set (removed by hand): a new set holds every output.
                report.written.push(d.name.clone());
                Output {
                    delivery: d,
                    plan: Plan::Write,
                    digest: Some(digest(d.value.expose().as_bytes())),
                    restamp: false,
                }
            };
            outputs.push(output);
        }

        if outputs.is_empty() && current.is_none() {
            return Ok(report);
        }
        let migrating = current.is_none();
        let new_set = migrating || outputs.iter().any(|o| matches!(o.plan, Plan::Write));
        let mut shown_changed = false;
        let live = match current {
            Some(n) if !new_set => n,
            _ => {
                let n = current.map_or(1, |n| n + 1);
                let new = generation_dir(dir, n);
                // Files of outputs no longer delivered stay while their symlink is shown (a
                // secret removed from the policy keeps its last file, as it always did).
                let delivered: HashSet<&str> = deliveries.iter().map(|d| d.name.as_str()).collect();
                let extra: Vec<String> = current_dir
                    .as_deref()
                    .map(|old| {
                        fs::read_dir(old)
                            .into_iter()
                            .flatten()
                            .flatten()
                            .filter_map(|e| e.file_name().into_string().ok())
                            .filter(|name| !delivered.contains(name.as_str()))
                            .filter(|name| is_regular_file(&old.join(name)))
                            .filter(|name| matches!(self.visible(name), Ok(Visible::Ours)))
                            .collect()
                    })
                    .unwrap_or_default();
                self.build_set(&new, &outputs, &source, &extra)
                    .inspect_err(|_| {
                        // Never shown: dropped now rather than at the next full pass.
                        let _ = fs::remove_dir_all(&new);
                    })?;
                self.swap(n)?;
                shown_changed = true;
                n
            }
        };

        // Each output's visible name: the symlink into `..data`, whatever stood there before.
        for o in &outputs {
            let name = &o.delivery.name;
            if !(migrating || pass.includes(name)) {
                continue;
            }
            let before = self.visible(name)?;
            if matches!(before, Visible::Ours) {
                continue;
            }
            self.link_visible(name)?;
            shown_changed = true;
            // A current file an older keyd wrote becomes a symlink to the same inode: no
            // consumer sees a change. Anything else restored is.
            let migrated =
                current.is_none() && matches!((before, &o.plan), (Visible::File, Plan::Keep));
            if !migrated && !report.written.contains(name) {
                report.unchanged.retain(|n| n != name);
                report.written.push(name.clone());
            }
        }
        if shown_changed {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        if new_set && let Some(old) = &current_dir {
            fs::remove_dir_all(old).map_err(io(old))?;
        }

        // Stamps of the files as they are now (linking and unlinking changed their ctime).
        let live_dir = generation_dir(dir, live);
        for o in &outputs {
            let Some(digest) = &o.digest else { continue };
            if !(new_set || o.restamp) {
                continue;
            }
            let key = ledger_key(&o.delivery.name);
            match fs::symlink_metadata(live_dir.join(&o.delivery.name)) {
                Ok(meta) => ledger.insert(key, stamp(&meta, digest.clone())),
                Err(_) => ledger.remove(&key),
            };
        }
        // The reload hook is run by the delivery pass (deliver.rs), which also retries it.
        Ok(report)
    }

    fn retire(&self, _name: &str, _version: u64, _books: &mut Books<'_>) -> Result<(), SinkError> {
        // Each delivery replaces the whole set and removes the previous one: once a newer
        // version is delivered nothing of a retired one remains here.
        Ok(())
    }
}

/// The process a reload hook's pid file names: a positive pid above 1 (never 0, -1 or a
/// negative number, which `kill(2)` reads as a process group or every process; never init) of
/// a process that exists now.
fn read_pid_file(pid_file: &Path) -> std::io::Result<rustix::process::Pid> {
    let text = fs::read_to_string(pid_file)?;
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

/// Whether `path` is a regular file itself (`lstat`: a symlink to one is not).
fn is_regular_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
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
