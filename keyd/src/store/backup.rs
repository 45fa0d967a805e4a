//! Who made a backup: the MAC a backup carries, keyed from the identity of the home that wrote
//! it, and its check when a backup is read.
//!
//! age gives no authorship: a home's recipient key is public, so anyone can make a file the
//! home's identity opens. A backup therefore carries, in its age header, one stanza
//! `-> keyd-backup-mac v1` whose body is HMAC-SHA256 over the backup's plaintext (the store's
//! JSON, exactly as encrypted), keyed by
//! `HMAC-SHA256(key = the identity's secret, message = "keyd backup mac v1")`: the X25519
//! identity's `AGE-SECRET-KEY-1…` text, or an SSH identity's key file text with its whitespace
//! removed. Only a holder of that secret can make it; age checks the plaintext is the one
//! encrypted (its payload is authenticated), and this check runs before the backup is parsed.
//!
//! Readers that do not know the stanza (an older keyd, `age -d`) skip it, as the age format
//! requires of unknown stanzas: the backup stays an ordinary age file.
//!
//! A passphrase home's backups carry no MAC: age refuses to combine its scrypt stanza with any
//! other, and none is needed, since only a holder of the passphrase can make a file the
//! passphrase opens.

use std::cell::RefCell;
use std::collections::HashSet;

use age_core::format::{FileKey, Stanza};
use aws_lc_rs::hmac;
use serde::Serialize;
use zeroize::Zeroizing;

/// The stanza's tag and its one argument (the version of this scheme).
const TAG: &str = "keyd-backup-mac";
const VERSION: &str = "v1";
/// Separates this key from any other use of the identity's secret.
const LABEL: &[u8] = b"keyd backup mac v1";

/// The MAC key of a home's backups: key material, zeroized when dropped, with no `Debug` and
/// no `Clone` (a copy is [`BackupKey::duplicate`]).
pub(super) struct BackupKey(Zeroizing<[u8; 32]>);

impl BackupKey {
    /// The key derived from an identity's secret text.
    pub(super) fn derive(secret: &[u8]) -> Self {
        let extracted = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), LABEL);
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(extracted.as_ref());
        BackupKey(key)
    }

    /// An explicit copy.
    pub(super) fn duplicate(&self) -> Self {
        BackupKey(Zeroizing::new(*self.0))
    }

    fn hmac_key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0[..])
    }

    /// The MAC of `data` as it will be serialised into the backup: the store's JSON goes
    /// straight into the MAC (no copy of the plaintext is kept). The serialisation is the
    /// one the backup's writer makes next (ordered maps and lists: the same bytes).
    pub(super) fn mac_of<T: Serialize + ?Sized>(&self, data: &T) -> std::io::Result<[u8; 32]> {
        crate::secret::hmac_json(&self.hmac_key(), data)
    }

    /// Whether `mac` is this key's MAC of `plaintext` (compared in constant time).
    fn verifies(&self, plaintext: &[u8], mac: &[u8]) -> bool {
        hmac::verify(&self.hmac_key(), plaintext, mac).is_ok()
    }
}

/// The recipient that adds the MAC stanza to a backup's header. It wraps no file key: the
/// file is opened by the real recipients' stanzas beside it.
pub(super) struct MacStanza(pub(super) [u8; 32]);

impl age::Recipient for MacStanza {
    fn wrap_file_key(
        &self,
        _file_key: &FileKey,
    ) -> Result<(Vec<Stanza>, HashSet<String>), age::EncryptError> {
        Ok((
            vec![Stanza {
                tag: TAG.to_owned(),
                args: vec![VERSION.to_owned()],
                body: self.0.to_vec(),
            }],
            // No label: combined with X25519 and SSH recipients, which have none either.
            HashSet::new(),
        ))
    }
}

/// An identity that opens the file as `inner` does and keeps the bodies of the MAC stanzas
/// it sees in the header.
pub(super) struct MacReader<'i> {
    inner: &'i dyn age::Identity,
    found: RefCell<Vec<Vec<u8>>>,
}

impl<'i> MacReader<'i> {
    pub(super) fn new(inner: &'i dyn age::Identity) -> Self {
        Self {
            inner,
            found: RefCell::new(Vec::new()),
        }
    }

    /// What the header's MAC says of `plaintext`, for a home whose backups `key` signs.
    pub(super) fn verdict(&self, key: &BackupKey, plaintext: &[u8]) -> MacVerdict {
        match self.found.borrow().as_slice() {
            [] => MacVerdict::Missing,
            [mac] if key.verifies(plaintext, mac) => MacVerdict::Valid,
            // Two stanzas are not something keyd writes: refused like a wrong one.
            _ => MacVerdict::Wrong,
        }
    }
}

impl age::Identity for MacReader<'_> {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, age::DecryptError>> {
        self.inner.unwrap_stanza(stanza)
    }

    fn unwrap_stanzas(&self, stanzas: &[Stanza]) -> Option<Result<FileKey, age::DecryptError>> {
        self.found.borrow_mut().extend(
            stanzas
                .iter()
                .filter(|s| s.tag == TAG)
                .map(|s| s.body.clone()),
        );
        self.inner.unwrap_stanzas(stanzas)
    }
}

/// What a backup's MAC says about who made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum MacVerdict {
    /// Made with this home's identity.
    Valid,
    /// No MAC: made by a keyd before backups carried one, or by another tool or home.
    Missing,
    /// A MAC this home's identity did not make.
    Wrong,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mac_of_serialised_data_is_the_mac_of_its_text_and_depends_on_the_key() {
        let data = serde_json::json!({"stacks": {"app": [1, 2, 3]}, "x": "y"});
        let text = serde_json::to_vec(&data).unwrap();
        let key = BackupKey::derive(b"AGE-SECRET-KEY-1ONE");
        let mac = key.mac_of(&data).unwrap();
        assert!(key.verifies(&text, &mac));
        assert!(!key.verifies(b"{}", &mac));
        assert!(!BackupKey::derive(b"AGE-SECRET-KEY-1TWO").verifies(&text, &mac));
    }
}
