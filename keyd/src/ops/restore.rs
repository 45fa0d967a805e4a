//! `keyctl restore`: puts a backup back as the store. Before anything is shown or written, the
//! backup must open with this home's identity and carry the MAC that shows this identity made
//! it (`store/backup.rs`), unless a foreign backup is accepted; it must be a consistent store
//! and not older than the newest generation this home has seen, unless the rollback is
//! accepted. What differs is reported (`store_diff.rs`), and a change of recipients, policy,
//! sinks, hooks or targets is made only when that kind of change is accepted.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::store_diff::{Change, StoreDiff, diff};
use crate::error::Error;
use crate::store::{BackupAuthor, Home, Label, StoreData, StoreError, parse_recipient};

/// What a restore is told to accept, and whether it only reports.
#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Restore although the backup is older than the newest generation this home has seen.
    pub accept_rollback: bool,
    /// Restore although the backup's MAC does not show this home's identity made it.
    pub accept_foreign_backup: bool,
    /// The changes besides values that may be made (see [`Change`]).
    pub accept: Vec<Change>,
    /// Only report.
    pub dry_run: bool,
}

/// Opens a backup with the home's identity, checks who made it (before anything else is
/// read from it) and that it is a consistent store.
pub fn read_backup(
    home: &Home,
    path: &Path,
    accept_foreign: bool,
) -> Result<(StoreData, BackupAuthor), Error> {
    if !home.is_initialised() {
        return Err(StoreError::NotInitialised {
            home: home.dir().to_owned(),
        }
        .into());
    }
    let lock = home.lock_shared()?;
    let (data, author) = lock.read_backup(path, accept_foreign)?;
    check_consistent(&data).map_err(|reason| Error::InconsistentBackup {
        path: path.to_owned(),
        reason,
    })?;
    Ok((data, author))
}

/// Every secret has distinct version numbers, at most one version per label, and a rotation in
/// flight names a version it has; every recipient parses.
fn check_consistent(data: &StoreData) -> Result<(), String> {
    for (stack, rec) in &data.stacks {
        for (name, secret) in &rec.secrets {
            let mut numbers: Vec<u64> = secret.versions.iter().map(|v| v.number).collect();
            numbers.sort_unstable();
            if numbers.windows(2).any(|w| w[0] == w[1]) {
                return Err(format!("{stack}/{name} has two versions with one number"));
            }
            for label in [Label::Pending, Label::Current, Label::Previous] {
                if secret
                    .versions
                    .iter()
                    .filter(|v| v.label == Some(label))
                    .count()
                    > 1
                {
                    return Err(format!("{stack}/{name} has two {label} versions"));
                }
            }
            if let Some(r) = &secret.rotation
                && secret.version(r.pending).is_none()
            {
                return Err(format!(
                    "{stack}/{name}: its rotation in flight names version {}, which it does not have",
                    r.pending
                ));
            }
        }
    }
    for r in &data.recipients {
        parse_recipient(r).map_err(|e| format!("a recipient does not parse: {e}"))?;
    }
    Ok(())
}

/// What `keyctl restore` found and did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    /// The backup.
    pub path: PathBuf,
    /// Who made it, as far as its MAC tells.
    pub author: BackupAuthor,
    /// How it differs from the store in place.
    pub diff: StoreDiff,
    /// The changes besides values it makes that were not accepted: a restore refuses them.
    /// Empty when no store is in place (nothing is replaced).
    pub unaccepted: Vec<Change>,
    /// Whether the store was replaced.
    pub written: bool,
}

/// Restores the backup at `path` into `home` (whose identity must open it): see the module's
/// comment for what is refused unless `options` accepts it. A dry run reports what a restore
/// would do and what it would refuse, and writes nothing.
pub fn restore(home: &Home, path: &Path, options: &RestoreOptions) -> Result<RestoreReport, Error> {
    let (mut data, author) = read_backup(home, path, options.accept_foreign_backup)?;
    let lock = home.lock()?;
    let current = if home.store_exists()? {
        // A store in place that cannot be read is what a restore is for: compared as empty.
        lock.load().ok()
    } else {
        None
    };
    let diff = diff(current.as_ref(), &data, lock.own_recipient()?.as_deref());
    // With no store in place nothing is replaced, so there is nothing to accept: the MAC is
    // what stands between this home and another's backup then.
    let unaccepted: Vec<Change> = if diff.store_in_place {
        diff.changes()
            .into_iter()
            .filter(|c| !options.accept.contains(c))
            .collect()
    } else {
        Vec::new()
    };
    let report = RestoreReport {
        path: path.to_owned(),
        author,
        diff,
        unaccepted,
        written: false,
    };
    if options.dry_run {
        return Ok(report);
    }
    if !report.unaccepted.is_empty() {
        return Err(Error::RestoreRefused {
            path: path.to_owned(),
            what: report
                .unaccepted
                .iter()
                .map(|c| format!("\n  {c}: {}", report.diff.of(*c).join("; ")))
                .collect(),
            changes: report.unaccepted.iter().map(|c| c.name()).collect(),
        });
    }
    lock.restore(&mut data, path, options.accept_rollback)?;
    Ok(RestoreReport {
        written: true,
        ..report
    })
}
