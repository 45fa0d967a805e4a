//! The local API's requests and answers, one set of types for both ends: the daemon's routes
//! serialise them and keyctl's client reads them. No type here holds a secret value.

use serde::{Deserialize, Serialize};

use crate::ops::query::ListedSecret;
use crate::policy::Kind;

pub use crate::ops::query::{VersionEntry, Versions};
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

impl From<ListedSecret> for SecretEntry {
    fn from(listed: ListedSecret) -> Self {
        SecretEntry {
            stack: listed.stack,
            name: listed.name,
            kind: listed.kind,
            version: listed.version,
            outputs: listed.outputs,
        }
    }
}
