//! What the files sink keeps in the stack's ledger: one stamp per output (`files:NAME`), which
//! vouches for a file without opening it, and a record of both directories as a pass that
//! left them tidy saw them (`DIR_KEYS`), so a full pass with nothing to clean up skips listing
//! them.

use std::fs;
use std::path::{Path, PathBuf};

use super::FilesSink;
use crate::sinks::{same_metadata, stamp};
use crate::store::{Digest, Ledger, Stamp};

/// Ledger keys of the output directory and of `..keyd` as the last pass that left them tidy
/// (nothing for a clean-up to remove) saw them. Output names never start with '.', so these
/// never meet an output's key.
pub(super) const DIR_KEYS: [&str; 2] = ["files:.", "files:..keyd"];
/// Directories whose ledger holds at least this many entries (about one per file) are large:
/// a pass waits for the clock's next tick, if need be, to record them as tidy (a listing costs
/// more than the wait), and a no-change pass records them even though that writes the store.
pub(super) const TIDY_WAIT_FROM: usize = 1000;
/// The longest such a wait may be (a coarse clock ticks every 1 to 10 ms).
const MAX_TIDY_WAIT_NS: i64 = 20_000_000;

pub(super) fn ledger_key(name: &str) -> String {
    let mut key = String::new();
    ledger_key_in(&mut key, name);
    key
}

/// [`ledger_key`] written into `buf` (emptied first; a loop over many outputs reuses one).
pub(super) fn ledger_key_in<'b>(buf: &'b mut String, name: &str) -> &'b str {
    buf.clear();
    buf.push_str("files:");
    buf.push_str(name);
    buf
}

impl FilesSink {
    /// Whether a file recorded as `recorded` has the mode and owner the policy asks for now.
    pub(super) fn wants(&self, recorded: &Stamp) -> bool {
        recorded.mode == self.spec.mode
            && self.spec.uid.is_none_or(|u| u == recorded.uid)
            && self.spec.gid.is_none_or(|g| g == recorded.gid)
    }

    /// The output directory and `..keyd`, in the order of [`DIR_KEYS`].
    pub(super) fn dirs(&self) -> [PathBuf; 2] {
        [self.spec.dir.clone(), self.own()]
    }

    /// Whether both directories are as a pass that left them tidy recorded them: same inodes,
    /// and no entry added, removed or renamed since (either would have changed its mtime and
    /// ctime). Then a full pass has nothing to clean up, and skips listing them.
    pub(super) fn dirs_as_recorded(&self, ledger: &Ledger) -> bool {
        self.dir_stamps().is_some_and(|stamps| {
            DIR_KEYS
                .iter()
                .zip(&stamps)
                .all(|(key, now)| ledger.get(*key).is_some_and(|r| same_metadata(now, r)))
        })
    }

    /// The stamps of both directories now (`lstat`: a symlink is not a directory here), in the
    /// order of [`DIR_KEYS`].
    pub(super) fn dir_stamps(&self) -> Option<Vec<Stamp>> {
        self.dirs()
            .iter()
            .map(|path| {
                let meta = fs::symlink_metadata(path).ok().filter(|m| m.is_dir())?;
                Some(stamp(&meta, Digest::default()))
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
    pub(super) fn record_dirs(&self, ledger: &mut Ledger, wait: bool) {
        use rustix::time::{ClockId, clock_gettime};
        let coarse_now = || {
            let now = clock_gettime(ClockId::RealtimeCoarse);
            crate::sinks::nanos(now.tv_sec, now.tv_nsec)
        };
        let Some(stamps) = self.dir_stamps().filter(|_| stamped_here(&self.spec.dir)) else {
            return forget_dirs(ledger);
        };
        // The time after which a later change shows: the newest change, plus what the file
        // system may have cut off its times. (A change while this waits makes the record
        // differ from the directory, so the next full pass lists it: still safe.)
        let changed = |s: &Stamp| {
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
}

/// Whether `dir` is on a file system this kernel stamps with its own clock: tmpfs, ramfs,
/// ext2/3/4, XFS, Btrfs, F2FS or overlayfs. On any other (NFS, 9p, FUSE: times from another
/// machine or process) directories are never recorded as tidy, and every full pass lists them.
// `f_type`'s type differs by platform: the cast is needed on some, not all.
#[allow(clippy::unnecessary_cast)]
pub(super) fn stamped_here(dir: &Path) -> bool {
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
pub(super) fn truncation_margin(ns: i64) -> i64 {
    let mut unit = 1;
    while unit < 1_000_000_000 && ns % (unit * 10) == 0 {
        unit *= 10;
    }
    2 * unit
}

/// Drops the record of tidy directories: the next full pass lists them.
pub(super) fn forget_dirs(ledger: &mut Ledger) {
    for key in DIR_KEYS {
        ledger.remove(key);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    pub(super) fn a_time_a_file_system_may_have_cut_gets_twice_its_unit_as_margin() {
        use super::truncation_margin as m;
        assert_eq!(m(1_796_032_833_342_456_382), 2); // nanoseconds
        assert_eq!(m(1_796_032_833_342_456_000), 2_000); // microseconds
        assert_eq!(m(1_796_032_833_340_000_000), 20_000_000); // 10 ms (exFAT)
        assert_eq!(m(1_796_032_833_000_000_000), 2_000_000_000); // whole seconds
        assert_eq!(m(1_796_032_830_000_000_000), 2_000_000_000); // never more than 2 s
        assert_eq!(m(0), 2_000_000_000);
    }
}
