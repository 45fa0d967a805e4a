//! The directory's layout: the entries keyd names in `..keyd` (`NAME@N`, `@SECRET`,
//! `@SECRET@N`), what a visible name shows (`Shown`, read without following it), where a
//! kept file lies (`Source`), and the moves every change is made of: write a file, make a
//! directory, point a name or a set link with one rename, remove.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use zeroize::Zeroizing;

use super::{FilesSink, OWN, SINK, TMP_SUFFIX, io};
use crate::secret::same_bytes;
use crate::sinks::SinkError;

/// The entry in `..keyd` of generation `n` of output `name`'s own file (`NAME@4`).
pub(super) fn file_entry(name: &str, n: u64) -> String {
    let mut entry = String::new();
    file_entry_in(&mut entry, name, n);
    entry
}

/// [`file_entry`] written into `buf` (emptied first).
pub(super) fn file_entry_in<'b>(buf: &'b mut String, name: &str, n: u64) -> &'b str {
    buf.clear();
    std::fmt::Write::write_fmt(buf, format_args!("{name}@{n}")).expect("a String takes any text");
    buf
}

/// The entry in `..keyd` of secret `secret`'s set link (`@web`).
pub(super) fn set_link(secret: &str) -> String {
    format!("@{secret}")
}

/// The entry in `..keyd` of generation `n` of secret `secret`'s set (`@web@2`).
pub(super) fn set_entry(secret: &str, n: u64) -> String {
    format!("@{secret}@{n}")
}

/// The generation in `entry` when it is exactly `PREFIX@N` (N digits, no sign or padding).
pub(super) fn generation_of(entry: &str, prefix: &str) -> Option<u64> {
    let digits = entry.strip_prefix(prefix)?.strip_prefix('@')?;
    let n: u64 = digits.parse().ok()?;
    (digits == n.to_string()).then_some(n)
}

/// What a visible name `DIR/NAME` shows now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Shown {
    /// `..keyd/NAME@N`: its own file, generation N.
    Own(u64),
    /// `..keyd/@SECRET/NAME`: a member of its secret's set.
    Member,
    /// A regular file, put there by hand or by another tool (taken over).
    File,
    /// Nothing.
    Missing,
    /// Something to replace: another symlink, a FIFO, a socket, a device.
    Replace,
}

/// Where an output's current file is, when there is one to keep. Its path is made only when
/// a pass needs it, so a pass that only checks its outputs builds no path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Source {
    /// `..keyd/NAME@N`.
    Own(u64),
    /// `..keyd/@SECRET@N/NAME`.
    Member(u64),
    /// `DIR/NAME`, a regular file.
    File,
}

impl Source {
    /// The file's path, for output `name` of `secret` delivered into `dir` (`own` its `..keyd`).
    pub(super) fn path(self, dir: &Path, own: &Path, secret: &str, name: &str) -> PathBuf {
        match self {
            Source::Own(n) => own.join(file_entry(name, n)),
            Source::Member(n) => own.join(set_entry(secret, n)).join(name),
            Source::File => dir.join(name),
        }
    }
}

impl FilesSink {
    /// Whether the file at `path` holds exactly `value` with the configured mode and owner.
    /// Opens without following a symlink and without blocking (a FIFO), and reads only a
    /// regular file.
    pub(super) fn is_current(&self, path: &Path, value: &[u8]) -> bool {
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
    pub(super) fn write_file(
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

    /// Refuses an output directory its group or every user may write to, and a `..keyd` in it
    /// they may write to: they could plant a symlink, a FIFO or a file of their own where
    /// consumers read secrets, or swap a symlink in for a directory keyd sets up (a sticky bit
    /// does not help: the planted entry is theirs to keep). Only the owner (keyd's user, or
    /// root) can then change an entry in either. A directory not made yet is checked once made.
    pub(super) fn refuse_shared_writable(&self) -> Result<(), SinkError> {
        let dir = &self.spec.dir;
        let own = self.own();
        for (path, meta) in [(dir, fs::metadata(dir)), (&own, fs::symlink_metadata(&own))] {
            match meta {
                Ok(meta) if meta.is_dir() && meta.mode() & 0o022 != 0 => {
                    return Err(SinkError::SharedWritable {
                        sink: SINK,
                        path: path.clone(),
                        mode: meta.mode() & 0o7777,
                    });
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Makes the output directory and the parents it lacks, each with `dir_mode` whatever the
    /// umask (a service manager's `UMask=0077` would leave them to keyd's user alone). Each is
    /// made and opened relative to its parent's fd, never through a symlink, so a name swapped
    /// meanwhile cannot redirect the chmod. Returns whether this call made the output directory
    /// itself: then nothing is in it but what this pass puts there (one another process made
    /// meanwhile is not this pass's to assume empty).
    pub(super) fn make_out_dir(&self) -> Result<bool, SinkError> {
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
    /// directory, as files did when they lay in it. Made with `mkdirat` relative to its
    /// parent's fd (`..keyd` opened with `O_NOFOLLOW`), then opened with `O_NOFOLLOW` and set
    /// up through that fd (`fchmod`, `fchown`): a symlink swapped in at any of these names
    /// fails the pass instead of redirecting the mode or owner change.
    pub(super) fn make_dir(&self, path: &Path) -> Result<(), SinkError> {
        let dir = &self.spec.dir;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let relative = path
            .strip_prefix(dir)
            .ok()
            .filter(|r| r.components().count() >= 1)
            .ok_or_else(|| io(path)(std::io::Error::other("not inside the output directory")))?;
        // The output directory is the operator's path (a symlink there is theirs); everything
        // below it is keyd's and is never followed.
        let mut parent =
            rustix::fs::open(dir, flags, Mode::empty()).map_err(|e| io(dir)(e.into()))?;
        let dir_meta = rustix::fs::fstat(&parent).map_err(|e| io(dir)(e.into()))?;
        let mut components = relative.components().peekable();
        let mut at = dir.clone();
        while let Some(component) = components.next() {
            let name = component.as_os_str();
            at.push(name);
            if components.peek().is_some() {
                parent = rustix::fs::openat(&parent, name, flags | OFlags::NOFOLLOW, Mode::empty())
                    .map_err(|e| io(&at)(e.into()))?;
                continue;
            }
            rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                .map_err(|e| io(&at)(e.into()))?;
            let made = rustix::fs::openat(&parent, name, flags | OFlags::NOFOLLOW, Mode::empty())
                .map_err(|e| io(&at)(e.into()))?;
            // Another directory renamed in between the mkdir and the open is not keyd's.
            let st = rustix::fs::fstat(&made).map_err(|e| io(&at)(e.into()))?;
            if st.st_uid != rustix::process::geteuid().as_raw() {
                return Err(io(&at)(std::io::Error::other(
                    "the directory keyd made here was replaced by another user's",
                )));
            }
            rustix::fs::fchmod(&made, Mode::from_raw_mode(dir_meta.st_mode & 0o777))
                .map_err(|e| io(&at)(e.into()))?;
            if st.st_gid != dir_meta.st_gid {
                // Best effort: only root or a member of that group may change it.
                let _ = rustix::fs::fchown(
                    &made,
                    None,
                    Some(rustix::fs::Gid::from_raw(dir_meta.st_gid)),
                );
            }
        }
        Ok(())
    }

    /// What `DIR/NAME` shows now, for an output of `secret` (`readlinkat`, then `fstatat` for
    /// what is not a symlink, both relative to `dir`, the directory's fd: nothing there is
    /// opened).
    pub(super) fn shown(
        &self,
        dir: &OwnedFd,
        name: &str,
        secret: &str,
    ) -> Result<Shown, SinkError> {
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
    pub(super) fn show(
        &self,
        name: &str,
        target: &Path,
        nothing_there: bool,
    ) -> Result<(), SinkError> {
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
    pub(super) fn swap_set(&self, secret: &str, n: u64) -> Result<(), SinkError> {
        let own = self.own();
        let link = set_link(secret);
        let tmp = own.join(format!(".{link}{TMP_SUFFIX}"));
        replace_with_symlink(&tmp, &own.join(&link), Path::new(&set_entry(secret, n)))
    }
}

/// What a symlink target read at `DIR/NAME` is, for an output of `secret` (`None`: any
/// secret's set).
pub(super) fn classify(target: &Path, name: &str, secret: Option<&str>) -> Shown {
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
    Shown::Replace
}

/// Puts the symlink `target` at `path` by one rename of a temp symlink at `tmp`.
pub(super) fn replace_with_symlink(
    tmp: &Path,
    path: &Path,
    target: &Path,
) -> Result<(), SinkError> {
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
pub(super) fn remove_if_there(path: &Path, tree: bool) -> Result<(), SinkError> {
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

pub(super) fn fsync(dir: &Path) -> Result<(), SinkError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn generations_are_exact_decimal_numbers_after_the_name() {
        assert_eq!(generation_of("P01@7", "P01"), Some(7));
        assert_eq!(generation_of("@web@12", "@web"), Some(12));
        for entry in [
            "P01@07", "P01@+7", "P01@", "P01@7x", "P017", "P0@7", "P01@@7",
        ] {
            assert_eq!(generation_of(entry, "P01"), None, "{entry}");
        }
    }

    #[test]
    pub(super) fn only_an_output_directory_this_pass_made_counts_as_fresh() {
        let scratch = crate::scratch::Scratch::new();
        let out = scratch.path().join("run").join("secrets");
        let sink = FilesSink::new(crate::policy::FilesSpec {
            dir: out.clone(),
            mode: 0o400,
            dir_mode: 0o700,
            uid: None,
            gid: None,
            reload: None,
        });
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

    /// Review finding (issue 26, low): `..keyd` and the set directories were made and
    /// chmodded by path, following a symlink swapped in at `..keyd` or at the set's name.
    #[test]
    pub(super) fn a_symlink_at_keyds_directories_never_redirects_their_mkdir_or_chmod() {
        let scratch = crate::scratch::Scratch::new();
        let (out, outside) = (scratch.path().join("out"), scratch.path().join("outside"));
        fs::create_dir(&out).unwrap();
        fs::set_permissions(&out, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(&outside).unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).unwrap();
        let sink = FilesSink::new(crate::policy::FilesSpec {
            dir: out.clone(),
            mode: 0o400,
            dir_mode: 0o755,
            uid: None,
            gid: None,
            reload: None,
        });
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        // `..keyd` swapped for a link to a directory elsewhere: a set is not made through it.
        std::os::unix::fs::symlink(&outside, out.join(OWN)).unwrap();
        assert!(sink.make_dir(&out.join(OWN).join("@web@2")).is_err());
        assert!(!outside.join("@web@2").exists(), "made through the link");
        // A link at the name being made: refused, the directory it names left as it was.
        assert!(sink.make_dir(&out.join(OWN)).is_err());
        fs::remove_file(out.join(OWN)).unwrap();
        sink.make_dir(&out.join(OWN)).unwrap();
        assert_eq!(mode(&out.join(OWN)), 0o755);
        std::os::unix::fs::symlink(&outside, out.join(OWN).join("@web@2")).unwrap();
        assert!(sink.make_dir(&out.join(OWN).join("@web@2")).is_err());
        assert_eq!(mode(&outside), 0o700, "the directory outside was chmodded");
        fs::remove_file(out.join(OWN).join("@web@2")).unwrap();
        sink.make_dir(&out.join(OWN).join("@web@2")).unwrap();
        assert_eq!(mode(&out.join(OWN).join("@web@2")), 0o755);
    }

    #[test]
    pub(super) fn a_symlink_target_is_ours_only_in_the_exact_shape_keyd_writes() {
        let c = |t: &str, name: &str, secret: Option<&str>| classify(Path::new(t), name, secret);
        assert_eq!(c("..keyd/P01@3", "P01", Some("P01")), Shown::Own(3));
        assert_eq!(
            c("..keyd/@web/tls.key", "tls.key", Some("web")),
            Shown::Member
        );
        assert_eq!(c("..keyd/@web/tls.key", "tls.key", None), Shown::Member);
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

    #[test]
    pub(super) fn file_and_set_entries_cannot_meet() {
        // Names start with a letter or digit: `NAME@N` never starts with '@'.
        assert_eq!(file_entry("web", 2), "web@2");
        assert_eq!(set_entry("web", 2), "@web@2");
        assert_eq!(set_link("web"), "@web");
    }
}
