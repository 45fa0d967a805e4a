//! The local API's requests and answers, one set of types for both ends: the daemon's routes
//! serialise them and keyctl's client reads them. No type here holds a secret value.

use serde::{Deserialize, Serialize};

use crate::clock::format_time;
use crate::policy::Kind;
use crate::store::{Label, SecretRecord};

pub use crate::rotation::RotationReport;
pub use crate::rotation::schedule::SecretStatus;

/// `POST /v1/rotate`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateRequest {
    /// A secret or companion name (`NAME`, `STACK/NAME`) or a kind (`fernet`, `STACK/fernet`).
    pub selector: String,
    /// Rotate a fernet list even if that pushes out a key that was never retired.
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/retire`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetireRequest {
    /// The secret (`NAME` or `STACK/NAME`).
    pub name: String,
}

/// `GET /v1/health`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Health {
    /// Always true when the daemon answers.
    pub ok: bool,
    /// The daemon's version.
    pub version: String,
}

/// Any answer whose status is not 200.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// What went wrong (never a value).
    pub error: String,
}

/// One entry of `GET /v1/secrets`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretEntry {
    /// The stack.
    pub stack: String,
    /// The secret.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The current version.
    pub version: Option<u64>,
    /// The names it is delivered under.
    pub outputs: Vec<String>,
}

/// `GET /v1/secrets/STACK/NAME/versions`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Versions {
    /// The secret's kind.
    pub kind: Kind,
    /// Every version, oldest first.
    pub versions: Vec<VersionEntry>,
}

/// One version (no value).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VersionEntry {
    /// Its number.
    pub version: u64,
    /// Its label, none once retired.
    pub label: Option<Label>,
    /// When it was made (RFC 3339).
    pub created: String,
    /// When it became current.
    pub promoted: Option<String>,
    /// When it was retired.
    pub retired: Option<String>,
    /// RSA kid or certificate SHA-256.
    pub fingerprint: Option<String>,
    /// Whether it is the current version.
    pub current: bool,
}

impl Versions {
    /// The versions of `record`.
    pub fn of(record: &SecretRecord) -> Self {
        Versions {
            kind: record.kind,
            versions: record
                .versions
                .iter()
                .map(|v| VersionEntry {
                    version: v.number,
                    label: v.label,
                    created: format_time(v.created),
                    promoted: v.promoted.map(format_time),
                    retired: v.retired.map(format_time),
                    fingerprint: v.material.fingerprint(),
                    current: v.label == Some(Label::Current),
                })
                .collect(),
        }
    }
}
