//! The audit log: one JSON line per rotation step and outcome (time, stack, secret, version,
//! step, outcome, who asked, a line id), appended to `<home>/audit.log`. It never holds a value.
//!
//! A line is saved in the store together with the state it describes ([`save_logged`]) and
//! appended to the log right after, so a kill between the two writes cannot lose it: the next
//! rotation engine appends what the store still owes, unless the log holds it where it was to
//! be written ([`AuditLog::settle_owed`]). Each step is in the log once, whenever the process
//! died.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::store::{AuditLine, LockedStore, StoreData, StoreError};

/// Appends to the audit log of a home.
pub struct AuditLog {
    path: PathBuf,
}

/// A fresh line id: 64 random bits, hex.
pub fn line_id() -> String {
    let mut bytes = [0u8; 8];
    crate::secret::fill_random(&mut bytes);
    crate::secret::hex(&bytes)
}

/// Saves `data` under `lock` with `lines` owed in it, then appends them to `log`: the lines
/// are durable exactly when the state they describe is.
pub fn save_logged(
    log: &AuditLog,
    lock: &LockedStore,
    data: &mut StoreData,
    lines: Vec<AuditLine>,
) -> Result<(), StoreError> {
    // Lines an earlier process still owed (the store was loaded with them) go first.
    log.settle_owed(data);
    data.audit_at = log.size();
    data.audit_owed = lines;
    if let Err(e) = lock.save(data) {
        data.audit_owed.clear();
        return Err(e);
    }
    #[cfg(feature = "test-hooks")]
    {
        // `store-written-N`: after this process's Nth store write, before its log write.
        static WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        super::hooks::pause_point(&format!("store-written-{n}"));
    }
    // In the log from here on; the store forgets them with its next write (and until then,
    // `settle` finds them at `audit_at` and does not repeat them).
    log.write_all(&std::mem::take(&mut data.audit_owed));
    Ok(())
}

impl AuditLog {
    /// The audit log at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Appends lines with one write and one fsync (an import of thousands of secrets would
    /// otherwise spend seconds in fsync). A log that cannot be written is reported on stderr
    /// and does not stop a rotation: the store, not the log, is the record.
    pub fn write_all(&self, lines: &[AuditLine]) {
        if lines.is_empty() {
            return;
        }
        let mut text = Vec::with_capacity(lines.len() * 180);
        for line in lines {
            serde_json::to_writer(&mut text, line).expect("an audit line serialises");
            text.push(b'\n');
        }
        let written = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| {
                // A line cut off by a crash mid-write stays on a line of its own.
                if !ends_with_newline(&mut f)? {
                    text.insert(0, b'\n');
                }
                f.write_all(&text).and_then(|()| f.sync_data())
            });
        if let Err(e) = written {
            crate::log::error(format_args!(
                "cannot write the audit log {}: {e}",
                self.path.display()
            ));
        }
        for line in lines {
            let fields = serde_json::to_value(line).expect("an audit line serialises");
            let level = if line.outcome == "failed" {
                crate::log::Level::Error
            } else {
                crate::log::Level::Info
            };
            crate::log::record(level, "rotation step", fields);
        }
    }

    /// Settles the lines `data` owes (loaded with the store) and forgets them there: every
    /// engine starts with this, and it is what [`save_logged`] does first.
    pub fn settle_owed(&self, data: &mut StoreData) {
        self.settle(&std::mem::take(&mut data.audit_owed), data.audit_at);
    }

    /// The log's length now (0 when there is none yet).
    pub fn size(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Appends the lines a store still owes (`StoreData::audit_owed`: written right after its
    /// save, unless the process was killed in between) that the log does not hold. `at` is the
    /// log's length before they were appended, so they are looked for there and nowhere else.
    /// A log shorter than that was replaced (rotated away): they are appended.
    pub fn settle(&self, owed: &[AuditLine], at: u64) {
        if owed.is_empty() {
            return;
        }
        // The owed lines themselves, after a newline that ended a torn line.
        let budget = owed
            .iter()
            .map(|l| serde_json::to_vec(l).map_or(0, |v| v.len()) + 1)
            .sum::<usize>()
            + 1;
        let there = read_at(&self.path, at, budget).unwrap_or_default();
        let missing: Vec<AuditLine> = owed
            .iter()
            .filter(|l| !contains(&there, format!("\"id\":\"{}\"", l.id).as_bytes()))
            .cloned()
            .collect();
        self.write_all(&missing);
    }
}

/// Whether `f` is empty or ends with a newline.
fn ends_with_newline(f: &mut File) -> std::io::Result<bool> {
    if f.metadata()?.len() == 0 {
        return Ok(true);
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::End(-1))?;
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Up to `at_most` bytes of the file at `path` from offset `at` (empty if there is none).
fn read_at(path: &std::path::Path, at: u64, at_most: usize) -> std::io::Result<Vec<u8>> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    f.seek(SeekFrom::Start(at))?;
    let mut bytes = Vec::new();
    f.take(at_most as u64).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

    fn line(step: &str) -> AuditLine {
        AuditLine {
            time: "2026-11-30T00:00:00Z".into(),
            stack: "app".into(),
            secret: "DB".into(),
            version: 2,
            step: step.into(),
            outcome: "ok".into(),
            by: "test".into(),
            error: None,
            id: line_id(),
        }
    }

    fn steps(path: &std::path::Path) -> Vec<String> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<AuditLine>(l).unwrap().step)
            .collect()
    }

    #[test]
    fn settle_appends_only_owed_lines_the_log_does_not_hold() {
        let dir = Scratch::new();
        let path = dir.path().join("audit.log");
        let log = AuditLog::new(path.clone());
        let (create, deliver) = (line("create"), line("deliver"));
        // Written, then still owed by a store that was not written again: nothing repeated.
        let at = log.size();
        log.write_all(&[create.clone(), deliver.clone()]);
        log.settle(&[create.clone(), deliver.clone()], at);
        assert_eq!(steps(&path), ["create", "deliver"]);
        // Owed and never written (killed between the two writes): appended.
        let promote = line("promote");
        log.settle(std::slice::from_ref(&promote), log.size());
        assert_eq!(steps(&path), ["create", "deliver", "promote"]);
        // A log replaced since (rotated away, shorter than the offset): appended there.
        std::fs::write(&path, b"").unwrap();
        log.settle(&[promote], 1000);
        assert_eq!(steps(&path), ["promote"]);
    }

    #[test]
    fn settle_does_not_repeat_owed_lines_once_later_lines_follow_them() {
        // A store at rest still owes the lines of its last write (they are forgotten with the
        // next one); lines logged since without a store write (failures, resumes) follow them.
        let dir = Scratch::new();
        let path = dir.path().join("audit.log");
        let log = AuditLog::new(path.clone());
        let owed = [line("promote"), line("finish")];
        let at = log.size();
        log.write_all(&owed);
        for _ in 0..100 {
            log.write_all(&[line("create")]);
        }
        log.settle(&owed, at);
        assert_eq!(steps(&path).len(), 102);
    }

    #[test]
    fn settle_does_not_repeat_a_line_owed_before_a_long_one() {
        let dir = Scratch::new();
        let log = AuditLog::new(dir.path().join("audit.log"));
        let mut failed = line("set");
        failed.error = Some("the target said: ".to_owned() + &"x".repeat(8000));
        let owed = [line("set"), failed];
        let at = log.size();
        log.write_all(&owed);
        log.settle(&owed, at);
        assert_eq!(steps(&dir.path().join("audit.log")), ["set", "set"]);
    }

    #[test]
    fn a_line_cut_off_by_a_crash_does_not_swallow_the_next() {
        let dir = Scratch::new();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, b"{\"time\":\"2026-11-30T00:00:00Z\",\"sta").unwrap();
        AuditLog::new(path.clone()).write_all(&[line("finish")]);
        let text = std::fs::read_to_string(&path).unwrap();
        let last = text.lines().last().unwrap();
        assert_eq!(
            serde_json::from_str::<AuditLine>(last).unwrap().step,
            "finish"
        );
    }
}
