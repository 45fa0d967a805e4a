//! Recovery: who can open the store (`keyctl recipients add|list|remove`), and `keyctl backup`.
//! A backup is the store itself (every stack, secret, version, journal and the recipient list,
//! not the identity) encrypted to the same recipients, with the MAC that shows which identity
//! made it; `restore.rs` puts one back.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::Error;
use crate::store::{Home, canonical_recipient, parse_recipient};

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
    // Only whether it opens matters here (this home wrote it: its MAC is this home's).
    let opened = lock.read_backup(&trial, true);
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
