//! The durable outbox, `<home>/notify-outbox.json` (mode 0600, replaced atomically on every
//! change): one entry per event and receiver, kept across restarts until the receiver took it
//! or it is older than [`MAX_AGE`]. Bounded: beyond [`MAX_ENTRIES`] the oldest entries are
//! dropped, so a receiver down for long cannot fill the disk. It holds URLs and the path of the
//! signing key's file, never the key, and never a secret's value (events carry none).
//!
//! Every method that touches the file blocks (`open`, `save`): the daemon calls them off its
//! runtime thread.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Event;
use crate::policy::Webhook;
use crate::regular_file::{Owner, open_regular, read_at_most};

/// The outbox's file name in the home.
pub const OUTBOX_FILE: &str = "notify-outbox.json";
/// How long an undelivered event is kept (seconds): a day.
pub const MAX_AGE: i64 = 24 * 3600;
/// The most entries kept; the oldest go first.
pub const MAX_ENTRIES: usize = 2000;
/// The largest outbox file read (entries are well under 2 KiB each).
const MAX_FILE: u64 = 8 << 20;

/// One event for one receiver.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutboxEntry {
    /// The receiver.
    pub webhook: Webhook,
    /// The file of the key the body is signed with, read when it is sent.
    pub secret_file: PathBuf,
    /// The event.
    pub event: Event,
    /// When it was added (Unix seconds).
    pub created: i64,
    /// Failed deliveries so far.
    pub attempts: u32,
    /// When it is sent next (Unix seconds).
    pub next_at: i64,
    /// Why the last delivery failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl OutboxEntry {
    /// An entry for `event` to `webhook`, due at once.
    pub fn new(webhook: Webhook, secret_file: PathBuf, event: Event, now: i64) -> OutboxEntry {
        OutboxEntry {
            webhook,
            secret_file,
            event,
            created: now,
            attempts: 0,
            next_at: now,
            last_error: None,
        }
    }

    fn same(&self, other: &OutboxEntry) -> bool {
        self.event.id == other.event.id && self.webhook == other.webhook
    }
}

#[derive(Default, Serialize, Deserialize)]
struct OutboxFile {
    entries: Vec<OutboxEntry>,
}

/// Why the outbox could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("notify outbox {}: {message}", path.display())]
pub struct OutboxError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

/// The events waiting to be delivered, as in the file after the last [`Outbox::save`].
#[derive(Debug)]
pub struct Outbox {
    path: PathBuf,
    entries: Vec<OutboxEntry>,
}

/// Seconds before the next try after `attempts` failures: 5 s doubling, at most 15 minutes.
pub fn backoff(attempts: u32) -> i64 {
    (5i64 << attempts.clamp(1, 10).saturating_sub(1)).min(900)
}

impl Outbox {
    /// The outbox of the home `dir`: its entries when the file exists, none otherwise.
    /// Blocks.
    pub fn open(dir: &Path) -> Result<Outbox, OutboxError> {
        let path = dir.join(OUTBOX_FILE);
        let err = |message: String| OutboxError {
            path: path.clone(),
            message,
        };
        let entries = match open_regular(&path, Owner::KeydOrRoot) {
            Ok((file, _)) => {
                let bytes = read_at_most(file, MAX_FILE).map_err(|e| err(e.to_string()))?;
                serde_json::from_slice::<OutboxFile>(&bytes)
                    .map_err(|e| err(format!("does not parse: {e}")))?
                    .entries
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        Ok(Outbox { path, entries })
    }

    /// An empty outbox at the home `dir` (its file is replaced on the next save).
    pub fn empty(dir: &Path) -> Outbox {
        Outbox {
            path: dir.join(OUTBOX_FILE),
            entries: Vec::new(),
        }
    }

    /// The entries waiting.
    pub fn entries(&self) -> &[OutboxEntry] {
        &self.entries
    }

    /// Adds `entries`; then drops what is too old or beyond the bound. Returns how many were
    /// dropped.
    pub fn add(&mut self, entries: Vec<OutboxEntry>, now: i64) -> usize {
        self.entries.extend(entries);
        self.prune(now)
    }

    /// Drops entries older than [`MAX_AGE`] and, beyond [`MAX_ENTRIES`], the oldest. Returns how
    /// many were dropped.
    pub fn prune(&mut self, now: i64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| now - e.created <= MAX_AGE);
        if self.entries.len() > MAX_ENTRIES {
            // Entries are added in time order, and kept in it.
            let excess = self.entries.len() - MAX_ENTRIES;
            self.entries.drain(..excess);
        }
        before - self.entries.len()
    }

    /// Makes every entry due now: after a restart the outbox is sent at once, whatever backoff
    /// the stopped process had reached.
    pub fn all_due(&mut self, now: i64) {
        for e in &mut self.entries {
            e.next_at = e.next_at.min(now);
        }
    }

    /// The entries due at `now`, oldest first.
    pub fn due(&self, now: i64) -> Vec<OutboxEntry> {
        self.entries
            .iter()
            .filter(|e| e.next_at <= now)
            .cloned()
            .collect()
    }

    /// When the next entry is due.
    pub fn next_due(&self) -> Option<i64> {
        self.entries.iter().map(|e| e.next_at).min()
    }

    /// Removes `entry`: its receiver took it.
    pub fn delivered(&mut self, entry: &OutboxEntry) {
        self.entries.retain(|e| !e.same(entry));
    }

    /// Records a failed delivery of `entry` at `now`: tried again after [`backoff`].
    pub fn failed(&mut self, entry: &OutboxEntry, now: i64, error: &str) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.same(entry)) {
            e.attempts = e.attempts.saturating_add(1);
            e.next_at = now + backoff(e.attempts);
            e.last_error = Some(error.to_owned());
        }
    }

    /// Writes the outbox: temp file, fsync, rename, fsync the directory; mode 0600. Blocks.
    pub fn save(&self) -> Result<(), OutboxError> {
        let file = OutboxFile {
            entries: self.entries.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| OutboxError {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        crate::store::write_atomic(&self.path, &bytes, 0o600).map_err(|e| OutboxError {
            path: self.path.clone(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::notify::EventKind;
    use crate::scratch::Scratch;

    fn entry(name: &str, at: i64) -> OutboxEntry {
        OutboxEntry::new(
            Webhook::parse("http://127.0.0.1:9/h").unwrap(),
            PathBuf::from("/k"),
            Event::new(EventKind::Rotated, "app", name, 2, at, "v1 -> v2"),
            at,
        )
    }

    #[test]
    fn entries_survive_a_reopen_until_delivered_and_the_file_is_0600() {
        let dir = Scratch::new();
        let mut outbox = Outbox::open(dir.path()).unwrap();
        assert!(outbox.entries().is_empty());
        assert_eq!(outbox.add(vec![entry("A", 100), entry("B", 100)], 100), 0);
        outbox.save().unwrap();
        let mode = std::fs::metadata(dir.path().join(OUTBOX_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut again = Outbox::open(dir.path()).unwrap();
        assert_eq!(again.entries().len(), 2);
        let due = again.due(100);
        again.failed(&due[0], 100, "connection refused");
        assert_eq!(again.entries()[0].attempts, 1);
        assert_eq!(again.next_due(), Some(100), "B is still due");
        again.delivered(&due[1]);
        assert_eq!(again.next_due(), Some(105));
        assert!(again.due(104).is_empty());
        again.all_due(101);
        assert_eq!(again.due(101).len(), 1);
    }

    #[test]
    fn old_entries_and_entries_beyond_the_bound_are_dropped_oldest_first() {
        let dir = Scratch::new();
        let mut outbox = Outbox::empty(dir.path());
        outbox.add(vec![entry("OLD", 0)], 0);
        assert_eq!(outbox.add(vec![entry("NEW", MAX_AGE + 1)], MAX_AGE + 1), 1);
        assert_eq!(outbox.entries()[0].event.name, "NEW");
        let many = (0..MAX_ENTRIES).map(|i| entry(&format!("S{i}"), MAX_AGE + 2));
        assert_eq!(outbox.add(many.collect(), MAX_AGE + 2), 1);
        assert_eq!(outbox.entries().len(), MAX_ENTRIES);
        assert_eq!(outbox.entries()[0].event.name, "S0");
    }

    #[test]
    fn backoff_doubles_from_five_seconds_to_a_quarter_hour() {
        assert_eq!(
            (1..=10).map(backoff).collect::<Vec<_>>(),
            [5, 10, 20, 40, 80, 160, 320, 640, 900, 900]
        );
    }
}
