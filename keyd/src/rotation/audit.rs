//! The audit log: one JSON line per rotation step and outcome (time, stack, secret, version,
//! step, outcome, who asked), appended to `<home>/audit.log`. It never holds a value.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::Serialize;

/// One line of the audit log.
#[derive(Debug, Serialize)]
pub struct AuditEntry<'a> {
    /// RFC 3339 UTC.
    pub time: String,
    /// The stack.
    pub stack: &'a str,
    /// The secret.
    pub secret: &'a str,
    /// The version the step acted on.
    pub version: u64,
    /// `create`, `set`, `test`, `deliver`, `promote`, `retire`.
    pub step: &'a str,
    /// `ok`, `waiting`, `failed`, `resumed`.
    pub outcome: &'a str,
    /// Who asked.
    pub by: &'a str,
    /// Why it failed (no values).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// Appends to the audit log of a home.
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// The audit log at `path`.
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// Appends one entry and makes it durable. A log that cannot be written is reported on
    /// stderr and does not stop a rotation: the store, not the log, is the record.
    pub fn write(&self, entry: &AuditEntry<'_>) {
        self.write_all(std::slice::from_ref(entry));
    }

    /// Appends several entries with one write and one fsync (an import of thousands of
    /// secrets would otherwise spend seconds in fsync), as [`AuditLog::write`] does one.
    pub fn write_all(&self, entries: &[AuditEntry<'_>]) {
        let mut line = Vec::with_capacity(entries.len() * 160);
        for entry in entries {
            serde_json::to_writer(&mut line, entry).expect("an audit entry serialises");
            line.push(b'\n');
        }
        let written = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .and_then(|mut f| f.write_all(&line).and_then(|()| f.sync_data()));
        if let Err(e) = written {
            eprintln!(
                "keyd: cannot write the audit log {}: {e}",
                self.path.display()
            );
        }
    }
}
