//! Recovery: who can open the store (`keyctl recipients add|list|remove`), and `keyctl backup`
//! / `keyctl restore`. A backup is the store itself (every stack, secret, version, journal and
//! the recipient list, not the identity) encrypted to the same recipients; a restore checks it
//! opens and is consistent, shows what differs (names and versions only), and refuses a
//! generation older than the newest this home has seen unless told to accept the rollback.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::store::{Home, Label, StoreData, StoreError, canonical_recipient, parse_recipient};

/// One recipient the store is encrypted to.
#[derive(Clone, Debug, Serialize)]
pub struct RecipientEntry {
    /// `age1…` or `ssh-ed25519 AAAA…` (without the comment).
    pub recipient: String,
    /// Whether it is the home's own identity (it cannot be removed).
    pub own: bool,
}

/// What `recipients add` or `remove` did.
#[derive(Clone, Debug, Serialize)]
pub struct RecipientChange {
    /// The recipient added or removed.
    pub recipient: String,
    /// Whether the store was rewritten (adding one already there changes nothing).
    pub changed: bool,
    /// Every recipient now.
    pub recipients: Vec<RecipientEntry>,
    /// For a removal: every secret (`stack/NAME`) the removed holder could read until now;
    /// they may have kept copies, so rotate them.
    pub readable: Vec<String>,
}

fn entries(own: Option<&str>, all: Vec<String>) -> Vec<RecipientEntry> {
    all.into_iter()
        .map(|r| RecipientEntry {
            own: Some(r.as_str()) == own,
            recipient: r,
        })
        .collect()
}

/// Every recipient the store is encrypted to, the home's own first.
pub fn list_recipients(home: &Home) -> Result<Vec<RecipientEntry>, Error> {
    let lock = home.lock_shared()?;
    let data = lock.load()?;
    let own = lock.own_recipient()?;
    Ok(entries(own.as_deref(), lock.recipients_of(&data)?))
}

/// Adds a recipient and re-encrypts the store to every recipient.
pub fn add_recipient(home: &Home, text: &str) -> Result<RecipientChange, Error> {
    parse_recipient(text).map_err(|e| Error::Recipient(format!("{:?}: {e}", text.trim())))?;
    let recipient = canonical_recipient(text);
    let lock = home.lock()?;
    if lock.is_passphrase() {
        return Err(Error::Recipient(
            "this store is encrypted with a passphrase, which age does not combine with recipients: move it to a home made by `keyctl init` (keyctl backup, then restore there) to share it".into(),
        ));
    }
    let mut data = lock.load()?;
    let own = lock.own_recipient()?;
    let present = lock.recipients_of(&data)?.contains(&recipient);
    if !present {
        // The list names every recipient, this home's own too: a home opened by another
        // recipient's identity writes the store to the list alone.
        if let Some(own) = &own
            && !data.recipients.contains(own)
        {
            data.recipients.insert(0, own.clone());
        }
        data.recipients.push(recipient.clone());
        lock.save(&mut data)?;
    }
    Ok(RecipientChange {
        recipient,
        changed: !present,
        recipients: entries(own.as_deref(), lock.recipients_of(&data)?),
        readable: Vec::new(),
    })
}

/// Removes a recipient: the store is re-encrypted without it (a store written before stays
/// readable to it: anything it could read, it may have kept). Refuses to remove the home's own
/// identity, or the last recipient this home's identity opens.
pub fn remove_recipient(home: &Home, text: &str) -> Result<RecipientChange, Error> {
    let recipient = canonical_recipient(text);
    let lock = home.lock()?;
    let mut data = lock.load()?;
    let own = lock.own_recipient()?;
    if own.as_deref() == Some(recipient.as_str()) {
        return Err(Error::Recipient(format!(
            "{recipient} is this home's own identity ({}): removing it would lock this home out",
            home.identity_path().display()
        )));
    }
    let before = data.recipients.len();
    data.recipients
        .retain(|r| canonical_recipient(r) != recipient);
    if data.recipients.len() == before {
        return Err(Error::Recipient(format!(
            "{recipient} is not a recipient of this store (`keyctl recipients list` shows them)"
        )));
    }
    // The home must still open what is written: try it on a copy first (an SSH identity's
    // recipient is known only from the list).
    let trial = home.dir().join(".store.recipients-trial");
    lock.backup(&data, &trial)?;
    let opened = lock.read_backup(&trial);
    let _ = std::fs::remove_file(&trial);
    if opened.is_err() {
        return Err(Error::Recipient(format!(
            "{recipient} is the recipient of this home's identity ({}): removing it would lock this home out",
            home.identity_path().display()
        )));
    }
    lock.save(&mut data)?;
    let readable = data
        .stacks
        .iter()
        .flat_map(|(stack, rec)| rec.secrets.keys().map(move |n| format!("{stack}/{n}")))
        .collect();
    Ok(RecipientChange {
        recipient,
        changed: true,
        recipients: entries(own.as_deref(), lock.recipients_of(&data)?),
        readable,
    })
}

/// What a backup holds.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    /// The file written.
    pub path: PathBuf,
    /// The store's generation.
    pub generation: u64,
    /// Secrets in it.
    pub secrets: usize,
    /// Recipients it is encrypted to.
    pub recipients: Vec<String>,
}

/// Writes the store of `home` to `out`, encrypted to its recipients (atomically, 0600).
pub fn backup(home: &Home, out: &Path) -> Result<BackupReport, Error> {
    let lock = home.lock_shared()?;
    let data = lock.load()?;
    lock.backup(&data, out)?;
    Ok(BackupReport {
        path: out.to_owned(),
        generation: data.generation,
        secrets: data.stacks.values().map(|s| s.secrets.len()).sum(),
        recipients: lock.recipients_of(&data)?,
    })
}

/// Opens a backup with the home's identity and checks that it is a consistent store.
pub fn read_backup(home: &Home, path: &Path) -> Result<StoreData, Error> {
    if !home.is_initialised() {
        return Err(StoreError::NotInitialised {
            home: home.dir().to_owned(),
        }
        .into());
    }
    let lock = home.lock_shared()?;
    let data = lock.read_backup(path)?;
    check_consistent(&data).map_err(|reason| Error::InconsistentBackup {
        path: path.to_owned(),
        reason,
    })?;
    Ok(data)
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

/// How a backup differs from the store in place (names and versions only).
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreDiff {
    /// The generation of the store in place (0: none).
    pub current_generation: u64,
    /// The backup's generation.
    pub backup_generation: u64,
    /// `stack/NAME vN` only in the backup.
    pub only_in_backup: Vec<String>,
    /// `stack/NAME vN` only in the store in place.
    pub only_in_store: Vec<String>,
    /// `stack/NAME: vA -> vB` (store in place -> backup) where the current versions differ.
    pub changed: Vec<String>,
    /// Secrets with the same current version in both.
    pub same: usize,
}

fn current_versions(data: &StoreData) -> BTreeMap<String, u64> {
    data.stacks
        .iter()
        .flat_map(|(stack, rec)| {
            rec.secrets.iter().map(move |(n, s)| {
                let v = s
                    .current()
                    .map(|v| v.number)
                    .unwrap_or_else(|| s.next_number() - 1);
                (format!("{stack}/{n}"), v)
            })
        })
        .collect()
}

/// Compares a backup with the store in place (`None`: there is none).
pub fn diff(current: Option<&StoreData>, backup: &StoreData) -> StoreDiff {
    let theirs = current_versions(backup);
    let ours = current.map(current_versions).unwrap_or_default();
    let mut d = StoreDiff {
        current_generation: current.map_or(0, |c| c.generation),
        backup_generation: backup.generation,
        ..StoreDiff::default()
    };
    for (name, v) in &theirs {
        match ours.get(name) {
            None => d.only_in_backup.push(format!("{name} v{v}")),
            Some(o) if o == v => d.same += 1,
            Some(o) => d.changed.push(format!("{name}: v{o} -> v{v}")),
        }
    }
    for (name, v) in &ours {
        if !theirs.contains_key(name) {
            d.only_in_store.push(format!("{name} v{v}"));
        }
    }
    d
}

/// What `keyctl restore` found and did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    /// The backup.
    pub path: PathBuf,
    /// How it differs from the store in place.
    pub diff: StoreDiff,
    /// Whether the store was replaced.
    pub written: bool,
}

/// Restores the backup at `path` into `home` (whose identity must open it). `dry_run` only
/// reports. A backup older than the newest generation this home has seen is refused
/// ([`StoreError::RolledBack`]) unless `accept_rollback`.
pub fn restore(
    home: &Home,
    path: &Path,
    accept_rollback: bool,
    dry_run: bool,
) -> Result<RestoreReport, Error> {
    let mut data = read_backup(home, path)?;
    let lock = home.lock()?;
    let current = if home.store_path().exists() {
        // A store in place that cannot be read is what a restore is for: compared as empty.
        lock.load().ok()
    } else {
        None
    };
    let diff = diff(current.as_ref(), &data);
    if dry_run {
        return Ok(RestoreReport {
            path: path.to_owned(),
            diff,
            written: false,
        });
    }
    lock.restore(&mut data, path, accept_rollback)?;
    Ok(RestoreReport {
        path: path.to_owned(),
        diff,
        written: true,
    })
}
