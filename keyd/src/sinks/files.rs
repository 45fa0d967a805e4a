//! The files sink: one file per output in a directory (default `/run/secrets`), exact value with
//! no added newline, mode 0400 by default, replaced by temp file + fsync + rename inside the same
//! directory so consumers that mount the directory see each change whole. Owns the reload hook
//! run after a delivery changed something.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Delivery, DeliveryReport, Pass, Sink, SinkError, digest, ledger_says_current, stamp};
use crate::policy::{FilesSpec, ReloadHook, Signal};
use crate::secret::same_bytes;
use crate::store::Ledger;

const SINK: &str = "files";
/// Passes over at most this many outputs fsync each file; larger ones use one syncfs.
const FSYNC_EACH_UP_TO: usize = 64;

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

impl FilesSink {
    /// The sink `spec` describes.
    pub fn new(spec: FilesSpec) -> Self {
        FilesSink { spec }
    }

    /// Whether `path` already holds exactly `value` with the configured mode and owner (read).
    fn is_current(&self, path: &Path, value: &[u8]) -> bool {
        let Ok(mut f) = File::open(path) else {
            return false;
        };
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

    /// Writes one output's temp file, not yet in place, made durable here when `fsync`.
    /// Returns its path.
    fn write_temp(&self, name: &str, value: &[u8], fsync: bool) -> Result<PathBuf, SinkError> {
        let (dir, mode) = (&self.spec.dir, self.spec.mode);
        let tmp = dir.join(format!(".{name}.keyd-tmp"));
        let create = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&tmp)
        };
        let mut f = match create() {
            // Left by a cut-off delivery; only keyd writes these, under the store lock.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&tmp);
                create()
            }
            other => other,
        }
        .map_err(io(&tmp))?;
        let written = f
            .write_all(value)
            .and_then(|()| f.set_permissions(fs::Permissions::from_mode(mode)))
            .and_then(|()| {
                if self.spec.uid.is_some() || self.spec.gid.is_some() {
                    std::os::unix::fs::fchown(&f, self.spec.uid, self.spec.gid)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| if fsync { f.sync_all() } else { Ok(()) });
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io(&tmp)(e));
        }
        Ok(tmp)
    }

    /// Removes temp files of a delivery cut off by a crash (only keyd writes them, under the
    /// store lock).
    fn remove_leftovers(&self) {
        for entry in fs::read_dir(&self.spec.dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".keyd-tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

impl Sink for FilesSink {
    fn kind(&self) -> &'static str {
        SINK
    }

    fn check(&self, _deliveries: &[Delivery]) -> Result<(), SinkError> {
        // Any byte string can be a file; names were checked by the policy.
        Ok(())
    }

    fn deliver(
        &self,
        deliveries: &[Delivery],
        pass: Pass<'_>,
        ledger: &mut Ledger,
    ) -> Result<DeliveryReport, SinkError> {
        let dir = &self.spec.dir;
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(self.spec.dir_mode)
                .create(dir)
                .map_err(io(dir))?;
        }
        if matches!(pass, Pass::Full) {
            self.remove_leftovers();
        }
        let mut report = DeliveryReport {
            sink: SINK.into(),
            location: dir.clone(),
            ..Default::default()
        };
        // A few outputs (a rotation) are made durable one fsync each; a large batch (a first
        // quickstart: 10,000 fsyncs took seconds) by one syncfs of the filesystem, below.
        let batch = deliveries.iter().filter(|d| pass.includes(&d.name)).count() > FSYNC_EACH_UP_TO;
        // Outputs to write, with their temp files and digests.
        let mut pending: Vec<(PathBuf, PathBuf, String, String)> = Vec::new();
        let mut verified: Vec<(PathBuf, String, String)> = Vec::new();
        for d in deliveries.iter().filter(|d| pass.includes(&d.name)) {
            let path = dir.join(&d.name);
            let key = ledger_key(&d.name);
            let value = d.value.expose().as_bytes();
            let digest = digest(value);
            if ledger_says_current(&path, ledger.get(&key), &digest) {
                report.unchanged.push(d.name.clone());
            } else if self.is_current(&path, value) {
                report.unchanged.push(d.name.clone());
                verified.push((path, key, digest));
            } else {
                let tmp = self.write_temp(&d.name, value, !batch).inspect_err(|_| {
                    for (tmp, ..) in &pending {
                        let _ = fs::remove_file(tmp);
                    }
                })?;
                report.written.push(d.name.clone());
                pending.push((tmp, path, key, digest));
            }
        }
        if !pending.is_empty() {
            // Every temp file is durable before any rename shows it.
            let dir_file = File::open(dir).map_err(io(dir))?;
            if batch {
                rustix::fs::syncfs(&dir_file).map_err(|e| io(dir)(e.into()))?;
            }
            for (tmp, path, key, digest) in pending {
                fs::rename(&tmp, &path).map_err(io(&path))?;
                verified.push((path, key, digest));
            }
            dir_file.sync_all().map_err(io(dir))?;
        }
        for (path, key, digest) in verified {
            match fs::symlink_metadata(&path) {
                Ok(meta) => ledger.insert(key, stamp(&meta, digest)),
                Err(_) => ledger.remove(&key),
            };
        }
        if !report.written.is_empty()
            && let Some(hook) = &self.spec.reload
        {
            run_reload_hook(hook)?;
        }
        Ok(report)
    }

    fn retire(&self, _name: &str, _version: u64, _ledger: &mut Ledger) -> Result<(), SinkError> {
        // One file per output, replaced in place: once a newer version is delivered nothing of
        // a retired one remains here.
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

/// Runs a files sink's reload hook after a delivery changed something. The command gets no
/// secret: not in argv, not in its environment (keyd's own environment holds none).
fn run_reload_hook(hook: &ReloadHook) -> Result<(), SinkError> {
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
