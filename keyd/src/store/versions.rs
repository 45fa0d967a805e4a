//! One version of a secret (`VersionRecord`, with its `Label`), and a secret's versions as the
//! store holds them (`Versions`), decoded only when used: a rotation of one secret decodes
//! that secret's versions, not all of them, and a save writes every untouched list back as
//! the text it was read from. (Justified by bench/scale.py's rotate and show one secret at
//! 10,000 secrets: docs/benchmarks.md.)
//!
//! The rule that keeps this honest: the stored text is kept only while nothing could have
//! changed the list. Reading decodes it (once) and keeps the text; the first mutable access
//! (`DerefMut`) drops the text, so the next save serialises the list as it is then. There is
//! no other way to change a list, so a save never writes stale text.
//!
//! Only a rotation's load leaves lists undecoded; every other load decodes them all at once
//! (a damaged record is an error of the load) and keeps only the decoded lists.

use std::ops::{Deref, DerefMut};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use zeroize::Zeroize as _;

use crate::material::Material;

/// The role of a version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// Made by a rotation in flight, not yet promoted.
    Pending,
    /// The value in use.
    Current,
    /// The value before current, still accepted during the grace period.
    Previous,
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Label::Pending => "pending",
            Label::Current => "current",
            Label::Previous => "previous",
        })
    }
}

/// One generated value.
#[derive(Debug, Serialize, Deserialize)]
pub struct VersionRecord {
    /// 1, 2, 3, … never reused.
    pub number: u64,
    /// Its role; `None` once retired.
    pub label: Option<Label>,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// When it became current.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted: Option<i64>,
    /// When it stopped being accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<i64>,
    /// The generation parameters, as text (no secret): used to notice a changed policy.
    pub params: String,
    /// The login this password belongs to, where a target has several (PostgreSQL
    /// alternating roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    /// The value(s).
    pub material: Material,
}

impl VersionRecord {
    /// A version that is current from `now` on.
    pub fn current_from(number: u64, now: i64, params: String, material: Material) -> Self {
        VersionRecord {
            number,
            label: Some(Label::Current),
            created: now,
            promoted: Some(now),
            retired: None,
            params,
            login: None,
            material,
        }
    }
}

/// Every version of one secret, oldest first (a `Vec<VersionRecord>` through `Deref`).
pub struct Versions {
    /// The JSON text read from the store, while it still says exactly what `decoded` holds
    /// (or will hold). Zeroized when dropped.
    raw: Option<Box<RawValue>>,
    /// The versions, once decoded (or made here). At least one of the two is set.
    decoded: OnceLock<Vec<VersionRecord>>,
}

impl Versions {
    /// Decodes the stored text now (if not done yet) and lets it go, reporting an error
    /// instead of the panic a later read would raise: how a load of the whole store checks
    /// every record up front (and then holds each list once, as decoded values).
    pub(super) fn decode_now(&mut self) -> Result<(), serde_json::Error> {
        self.try_decode()?;
        wipe(self.raw.take());
        Ok(())
    }

    /// Decodes the stored text now (if not done yet), keeping it: an error here instead of a
    /// panic at the first read.
    pub(super) fn try_decode(&self) -> Result<(), serde_json::Error> {
        if self.decoded.get().is_none() {
            let raw = self.raw.as_deref().expect("versions are stored or decoded");
            let _ = self.decoded.set(serde_json::from_str(raw.get())?);
        }
        Ok(())
    }

    /// Whether the list is still the stored text, undecoded (for tests).
    #[cfg(test)]
    fn is_undecoded(&self) -> bool {
        self.decoded.get().is_none()
    }
}

/// Decodes stored text. A store is authenticated by age and checked in full by every load but
/// a rotation's (which reads only the secrets it works on), so text that does not decode here
/// is a damaged store or a bug: a panic, contained per secret like any other, naming the
/// position only (never the text, which holds values).
fn decode(raw: &RawValue) -> Vec<VersionRecord> {
    serde_json::from_str(raw.get()).unwrap_or_else(|e| {
        panic!(
            "a secret's stored versions do not decode (line {}, column {} of the record): the store is damaged or was written by an incompatible keyd",
            e.line(),
            e.column()
        )
    })
}

fn wipe(raw: Option<Box<RawValue>>) {
    if let Some(raw) = raw {
        let mut text: Box<str> = raw.into();
        text.zeroize();
    }
}

impl Deref for Versions {
    type Target = Vec<VersionRecord>;

    fn deref(&self) -> &Vec<VersionRecord> {
        self.decoded
            .get_or_init(|| decode(self.raw.as_deref().expect("versions are stored or decoded")))
    }
}

impl DerefMut for Versions {
    fn deref_mut(&mut self) -> &mut Vec<VersionRecord> {
        let _ = Deref::deref(self);
        // From here on the list may change: the stored text no longer speaks for it.
        wipe(self.raw.take());
        self.decoded.get_mut().expect("decoded above")
    }
}

impl<'a> IntoIterator for &'a Versions {
    type Item = &'a VersionRecord;
    type IntoIter = std::slice::Iter<'a, VersionRecord>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl From<Vec<VersionRecord>> for Versions {
    fn from(versions: Vec<VersionRecord>) -> Self {
        Versions {
            raw: None,
            decoded: OnceLock::from(versions),
        }
    }
}

impl Default for Versions {
    fn default() -> Self {
        Vec::new().into()
    }
}

impl Drop for Versions {
    fn drop(&mut self) {
        wipe(self.raw.take());
    }
}

/// Redacted like the versions themselves; text not decoded yet is not shown at all.
impl std::fmt::Debug for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.decoded.get() {
            Some(v) => v.fmt(f),
            None => f.write_str("Versions(not decoded)"),
        }
    }
}

impl Serialize for Versions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match (&self.raw, self.decoded.get()) {
            (Some(raw), _) => raw.serialize(s),
            (None, Some(decoded)) => decoded.serialize(s),
            (None, None) => unreachable!("versions are stored or decoded"),
        }
    }
}

impl<'de> Deserialize<'de> for Versions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Versions {
            raw: Some(Box::<RawValue>::deserialize(d)?),
            decoded: OnceLock::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::material::Material;
    use crate::secret::SecretString;

    fn stored(value: &str) -> String {
        format!(
            r#"[{{"number":1,"label":"current","created":5,"params":"p","material":{{"type":"text","value":"{value}"}}}}]"#
        )
    }

    #[test]
    fn untouched_versions_are_written_back_as_read() {
        // Odd spacing and key order survive: the text is not re-serialised.
        let text = stored("s3cret").replace(",\"created\"", " ,  \"created\"");
        let v: Versions = serde_json::from_str(&text).unwrap();
        assert!(v.is_undecoded());
        assert_eq!(serde_json::to_string(&v).unwrap(), text);
        // Reading decodes but keeps the text.
        assert_eq!(v.len(), 1);
        assert!(!v.is_undecoded());
        assert_eq!(serde_json::to_string(&v).unwrap(), text);
    }

    #[test]
    fn a_mutable_access_makes_the_next_save_write_the_list_as_it_is_then() {
        let mut v: Versions = serde_json::from_str(&stored("old")).unwrap();
        v.push(VersionRecord::current_from(
            2,
            9,
            "p".into(),
            Material::Text {
                value: SecretString::new("new".into()),
            },
        ));
        let saved = serde_json::to_string(&v).unwrap();
        let back: Versions = serde_json::from_str(&saved).unwrap();
        assert_eq!(back.iter().map(|v| v.number).collect::<Vec<_>>(), [1, 2]);
        // Even a mutable access that changes nothing drops the text (the odd spacing goes).
        let spaced = stored("x").replace(",\"created\"", " , \"created\"");
        let mut v: Versions = serde_json::from_str(&spaced).unwrap();
        let _ = &mut *v;
        assert_eq!(serde_json::to_string(&v).unwrap(), stored("x"));
    }

    #[test]
    fn decode_now_reports_what_a_read_would_panic_on_without_quoting_the_text() {
        let mut v: Versions =
            serde_json::from_str(r#"[{"number":"s3cret-value","label":null}]"#).unwrap();
        assert!(v.decode_now().is_err());
        let mut v: Versions = serde_json::from_str(&stored("x")).unwrap();
        v.decode_now().unwrap();
        assert!(v.raw.is_none(), "the text is let go once decoded");
        let v: Versions = serde_json::from_str(r#"[{"number":"s3cret-value"}]"#).unwrap();
        let panic = std::panic::catch_unwind(|| v.len()).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("do not decode"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn debug_never_shows_undecoded_text() {
        let v: Versions = serde_json::from_str(&stored("s3cret")).unwrap();
        assert_eq!(format!("{v:?}"), "Versions(not decoded)");
        let _ = v.len();
        assert!(!format!("{v:?}").contains("s3cret"));
    }
}
