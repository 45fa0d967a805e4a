//! What the sinks of a stack recorded of what they wrote, kept in the store beside the
//! values: the files' ledger (`Ledger`: a `Stamp` per output, each with its content's
//! `Digest`), the Swarm ledger (`SwarmLedger`: the Swarm secrets published per output), and
//! `SinkRecords`, the two as a sink is given them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::SecretString;

/// What sinks wrote, by a key each sink chooses (`files:NAME`, `envfile`): a map read through
/// `Deref`, written only through [`Ledger::insert`] and [`Ledger::remove`], which note whether
/// they changed it, so a pass can tell whether its records need saving without a copy of them
/// from before (a copy would cost as much as the ledger: one entry per delivered file).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ledger {
    entries: BTreeMap<String, Stamp>,
    /// Whether an insert or remove changed an entry since the last [`Ledger::take_changed`]
    /// (never stored).
    #[serde(skip)]
    changed: bool,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `stamp` under `key`.
    pub fn insert(&mut self, key: String, stamp: Stamp) {
        match self.entries.get_mut(key.as_str()) {
            Some(old) if *old == stamp => {}
            Some(old) => {
                *old = stamp;
                self.changed = true;
            }
            None => {
                self.entries.insert(key, stamp);
                self.changed = true;
            }
        }
    }

    /// Removes the entry under `key`, if any.
    pub fn remove(&mut self, key: &str) {
        self.changed |= self.entries.remove(key).is_some();
    }

    /// Whether it has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether an entry changed since the last call, and starts over.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}

impl FromIterator<(String, Stamp)> for Ledger {
    fn from_iter<I: IntoIterator<Item = (String, Stamp)>>(entries: I) -> Self {
        Ledger {
            entries: entries.into_iter().collect(),
            changed: false,
        }
    }
}

impl std::ops::Deref for Ledger {
    type Target = BTreeMap<String, Stamp>;
    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

/// Ledgers are equal when their entries are (whatever each noted as changed).
impl PartialEq for Ledger {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

/// What the sinks of one stack have recorded, as a sink is given it: the files' ledger and
/// the Swarm sink's record.
pub struct SinkRecords<'a> {
    /// Files written (files and envfile sinks).
    pub ledger: &'a mut Ledger,
    /// Swarm secrets published.
    pub swarm: &'a mut SwarmLedger,
}

/// The Swarm secrets keyd published for a stack, by output name. Swarm secrets are immutable:
/// every new value of an output is a new secret (`NAME`, then `NAME_v<version>`), and the old
/// ones are removed once nothing uses them.
#[derive(Debug, Serialize, Deserialize)]
pub struct SwarmLedger {
    /// The key of the keyed digest each secret carries in its `keyd.digest` label, so keyd
    /// recognises a secret it made (after a crash, before this record was saved) without a
    /// plain hash of the value where every Docker user can read it. Empty until first used.
    #[serde(with = "crate::secret::stored", default = "empty_secret")]
    pub key: SecretString,
    /// By output name.
    pub outputs: BTreeMap<String, SwarmOutput>,
    /// The plugin sink: the keyed digest of each output's value when the services using it
    /// last fetched it (a change restarts their tasks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub served: BTreeMap<String, String>,
}

fn empty_secret() -> SecretString {
    SecretString::new(String::new())
}

impl Default for SwarmLedger {
    fn default() -> Self {
        SwarmLedger {
            key: empty_secret(),
            outputs: BTreeMap::new(),
            served: BTreeMap::new(),
        }
    }
}

impl SwarmLedger {
    /// Whether nothing was ever published.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty() && self.served.is_empty()
    }
}

/// One output's Swarm secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmOutput {
    /// The name of the secret holding the output's value now.
    pub current: String,
    /// Every secret published for it and not removed yet, oldest first.
    pub published: Vec<SwarmSecret>,
}

/// One Swarm secret keyd made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmSecret {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: String,
    /// The newest version its value carries.
    pub version: u64,
    /// The keyed digest of its value (also its `keyd.digest` label).
    pub digest: String,
}

/// What a sink knows of an output it wrote: the file's identity and metadata right after the
/// write, and a SHA-256 of the content (inside the encrypted store, beside the values
/// themselves). An output whose metadata still matches holds exactly what was written; any
/// change by hand (edit, chmod, chown, replace, delete) changes one of these. Stored as a JSON
/// array in field order (one per delivered file, so it is kept short); `shown` is a tenth
/// element when known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Device and inode.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since 1970 (saturating: an i64 holds years 1677 to 2262).
    pub mtime_ns: i64,
    /// Status change time, nanoseconds (changed by every write, chmod, chown or rename).
    pub ctime_ns: i64,
    /// Mode bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// SHA-256 of the content (its first 128 bits).
    pub digest: Digest,
    /// For an output with a file of its own (files sink): the generation its name showed when
    /// this was recorded (`NAME -> ..keyd/NAME@N`). Trusted only while the directory is as a
    /// pass that left it tidy recorded it (no name replaced since).
    pub shown: Option<u64>,
}

/// The first 128 bits of the SHA-256 of what a sink wrote, stored as 32 hex digits (inline, no
/// allocation: a ledger holds one per delivered file). Unknown (stored as `""`) for a stamp of
/// a directory, and for a digest in any other form (all 256 bits, say): that
/// matches no content, so the file is read once and stamped anew.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest(Option<[u8; 16]>);

impl Digest {
    /// The digest whose bytes are `bytes`.
    pub fn new(bytes: [u8; 16]) -> Self {
        Digest(Some(bytes))
    }

    /// As stored: 32 lowercase hex digits, or nothing when unknown.
    pub fn hex(&self) -> String {
        self.0.map_or_else(String::new, |b| crate::secret::hex(&b))
    }

    /// Read as stored (see the type's comment for anything but 32 hex digits).
    pub fn parse(text: &str) -> Self {
        let digit = |c: u8| char::from(c).to_digit(16);
        let mut bytes = [0u8; 16];
        if text.len() != 32 {
            return Digest(None);
        }
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => *byte = (hi * 16 + lo) as u8,
                _ => return Digest(None),
            }
        }
        Digest(Some(bytes))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = [0u8; 32];
        match self.0 {
            Some(bytes) => s.serialize_str(crate::secret::hex_into(&bytes, &mut text)),
            None => s.serialize_str(""),
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Digest;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a digest in hex")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Digest, E> {
                Ok(Digest::parse(text))
            }
        }
        d.deserialize_str(Text)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Stamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of 9 or 10 stamp fields")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Stamp, A::Error> {
                let mut n = 0;
                let mut next = || {
                    n += 1;
                    n
                };
                macro_rules! field {
                    () => {{
                        let i = next();
                        seq.next_element()?
                            .ok_or_else(|| serde::de::Error::invalid_length(i - 1, &self))?
                    }};
                }
                Ok(Stamp {
                    dev: field!(),
                    ino: field!(),
                    size: field!(),
                    mtime_ns: field!(),
                    ctime_ns: field!(),
                    mode: field!(),
                    uid: field!(),
                    gid: field!(),
                    digest: field!(),
                    shown: seq.next_element()?,
                })
            }
        }
        d.deserialize_seq(Fields)
    }
}

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple as _;
        let mut t = s.serialize_tuple(9 + usize::from(self.shown.is_some()))?;
        t.serialize_element(&self.dev)?;
        t.serialize_element(&self.ino)?;
        t.serialize_element(&self.size)?;
        t.serialize_element(&self.mtime_ns)?;
        t.serialize_element(&self.ctime_ns)?;
        t.serialize_element(&self.mode)?;
        t.serialize_element(&self.uid)?;
        t.serialize_element(&self.gid)?;
        t.serialize_element(&self.digest)?;
        if let Some(n) = self.shown {
            t.serialize_element(&n)?;
        }
        t.end()
    }
}

#[cfg(test)]
mod tests {
    use super::{Digest, Ledger, Stamp};

    #[test]
    fn a_stamp_reads_with_or_without_the_generation_its_name_showed() {
        const D: &str = "ba7816bf8f01cfea414140de5dae2223";
        let older: Stamp = serde_json::from_str(&format!(r#"[1,2,3,4,5,256,0,0,"{D}"]"#)).unwrap();
        assert_eq!((older.ino, older.mode, older.shown), (2, 256, None));
        assert_eq!(
            serde_json::to_string(&older).unwrap(),
            format!(r#"[1,2,3,4,5,256,0,0,"{D}"]"#)
        );
        let newer: Stamp =
            serde_json::from_str(&format!(r#"[1,2,3,4,5,256,0,0,"{D}",7]"#)).unwrap();
        assert_eq!(newer.shown, Some(7));
        assert_eq!(
            serde_json::to_string(&newer).unwrap(),
            format!(r#"[1,2,3,4,5,256,0,0,"{D}",7]"#)
        );
        let err = serde_json::from_str::<Stamp>(r#"[1,2,3,4,5,256,0,0]"#).unwrap_err();
        assert!(err.to_string().contains("invalid length 8"), "{err}");
    }

    #[test]
    fn the_ledger_notes_a_change_only_when_an_entry_differs() {
        let stamp = |ino| Stamp {
            ino,
            ..Default::default()
        };
        let mut ledger = Ledger::new();
        ledger.insert("files:A".into(), stamp(1));
        assert!(ledger.take_changed(), "a new entry");
        assert!(!ledger.take_changed(), "taken");
        ledger.insert("files:A".into(), stamp(1));
        ledger.remove("files:B");
        assert!(
            !ledger.take_changed(),
            "the same stamp again, nothing to remove"
        );
        ledger.insert("files:A".into(), stamp(2));
        assert!(ledger.take_changed(), "another stamp");
        ledger.remove("files:A");
        assert!(ledger.take_changed() && ledger.is_empty(), "removed");
        // Stored as the map alone (what it noted is not).
        let ledger: Ledger = [("files:A".to_owned(), stamp(3))].into_iter().collect();
        let text = serde_json::to_string(&ledger).unwrap();
        assert!(text.starts_with(r#"{"files:A":[0,3,"#), "{text}");
        assert_eq!(serde_json::from_str::<Ledger>(&text).unwrap(), ledger);
    }

    #[test]
    fn a_digest_in_another_form_than_32_hex_digits_reads_as_unknown_and_matches_nothing() {
        let d = Digest::parse("BA7816BF8F01CFEA414140DE5DAE2223");
        assert_eq!(d.hex(), "ba7816bf8f01cfea414140de5dae2223");
        // All 256 bits, empty (a directory's stamp), or not hex: unknown,
        // equal to no digest of any content, and stored as "".
        let full = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        for text in [full, "", "zz7816bf8f01cfea414140de5dae2223", "é"] {
            let unknown = Digest::parse(text);
            assert_eq!(unknown, Digest::default(), "{text}");
            assert_ne!(unknown, d);
            assert_eq!(serde_json::to_string(&unknown).unwrap(), r#""""#);
        }
    }
}
