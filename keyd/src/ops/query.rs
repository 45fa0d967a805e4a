//! The read-only queries: `list`, `show`, `history`, `versions`, `jwks` and `status`, one
//! implementation each for keyctl and the daemon's API. Each reads the store once ([`Read`]
//! says how) and returns names, versions and fingerprints; only `show` returns a value, and
//! `jwks` public data.

use serde::{Deserialize, Serialize};

use crate::clock::format_time;
use crate::error::Error;
use crate::material::rsa;
use crate::policy::{Kind, Part};
use crate::rotation::schedule::{self, SecretStatus};
use crate::secret::Value;
use crate::store::{Home, Label, SecretRecord, StoreData, StoreError};

/// How a query reads the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// Under the shared lock, waiting for a writer in progress to finish (keyctl).
    Locked,
    /// Without the lock ([`Home::peek`]): the store as before or after a write, never waiting
    /// behind a rotation that holds the lock (the daemon, whose own writes are serialised).
    Unlocked,
}

impl Read {
    fn load(self, home: &Home) -> Result<StoreData, StoreError> {
        match self {
            Read::Locked => home.lock_shared()?.load(),
            Read::Unlocked => home.peek(),
        }
    }

    /// Reads the store for a reader of the one secret `selector` names: under the lock only
    /// that secret's versions are decoded (see `LockedStore::load_for`).
    fn load_for(self, home: &Home, selector: &str) -> Result<StoreData, StoreError> {
        match self {
            Read::Locked => home.lock_shared()?.load_for(selector),
            Read::Unlocked => home.peek(),
        }
    }
}

/// One stored secret as `list` shows it (no value).
#[derive(Clone, Debug)]
pub struct ListedSecret {
    /// The stack.
    pub stack: String,
    /// The secret.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The current version's number.
    pub version: Option<u64>,
    /// When the current version was made (Unix time).
    pub created: Option<i64>,
    /// How many versions the store keeps.
    pub versions: usize,
    /// The names it is delivered under, its own first.
    pub outputs: Vec<String>,
    /// The current version's RSA kid or certificate SHA-256.
    pub fingerprint: Option<String>,
    /// Whether the policy no longer declares it (kept in the store, no longer delivered).
    pub removed: bool,
}

/// `GET /v1/secrets/STACK/NAME/versions`: a secret's kind and every version.
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

/// `keyctl history`: the secret an output name resolved to, and its versions.
#[derive(Clone, Debug)]
pub struct History {
    /// The stack.
    pub stack: String,
    /// The secret (its own name, also when a companion name was asked for).
    pub name: String,
    /// Its kind and versions.
    pub versions: Versions,
}

/// Every secret in the store, stack by stack, removed ones included (marked).
pub fn list(home: &Home, read: Read) -> Result<Vec<ListedSecret>, Error> {
    let data = read.load(home)?;
    let listed = data.stacks.iter().flat_map(|(stack, record)| {
        record.secrets.iter().map(move |(name, s)| {
            let current = s.current();
            ListedSecret {
                stack: stack.clone(),
                name: name.clone(),
                kind: s.kind,
                version: current.map(|v| v.number),
                created: current.map(|v| v.created),
                versions: s.versions.len(),
                outputs: s.outputs.iter().map(|o| o.name.clone()).collect(),
                fingerprint: current.and_then(|v| v.material.fingerprint()),
                removed: s.removed,
            }
        })
    });
    Ok(listed.collect())
}

/// The value delivered under the output `name` (`NAME` or `STACK/NAME`) now, or with
/// `version`, that version's own value. `Ok(None)` when there is none (no current version yet,
/// or a part that version does not have).
pub fn show(
    home: &Home,
    read: Read,
    name: &str,
    version: Option<u64>,
) -> Result<Option<Value>, Error> {
    let data = read.load_for(home, name)?;
    let (_, _, record, output) = data.find_output(name)?;
    Ok(match version {
        None => record.delivered(output.part).map(|(_, v)| v),
        Some(n) => {
            let v = record.version(n).ok_or_else(|| Error::NoSuchVersion {
                name: name.to_owned(),
                version: n,
            })?;
            SecretRecord::version_value(v, output.part)
        }
    })
}

/// The versions of the secret delivered under `name` (`NAME` or `STACK/NAME`), with the names
/// it resolved to.
pub fn history(home: &Home, read: Read, name: &str) -> Result<History, Error> {
    let data = read.load_for(home, name)?;
    let (stack, secret, record, _) = data.find_output(name)?;
    Ok(History {
        stack: stack.to_owned(),
        name: secret.to_owned(),
        versions: Versions::of(record),
    })
}

/// The versions of the secret delivered under `name` (`NAME` or `STACK/NAME`).
pub fn versions(home: &Home, read: Read, name: &str) -> Result<Versions, Error> {
    Ok(history(home, read, name)?.versions)
}

/// The JWKS delivered now for the RSA secret delivered under `name` (`NAME` or `STACK/NAME`):
/// every live public key (an empty set before a first version is delivered). `Ok(None)` when
/// that secret is not an RSA secret. A JWKS is public data.
pub fn jwks(home: &Home, read: Read, name: &str) -> Result<Option<String>, Error> {
    let data = read.load_for(home, name)?;
    let (_, _, record, _) = data.find_output(name)?;
    if record.kind != Kind::Rsa {
        return Ok(None);
    }
    Ok(Some(match record.delivered(Part::Jwks) {
        Some((_, jwks)) => jwks.expose().to_owned(),
        None => rsa::jwks([]),
    }))
}

/// The status of every secret the policies declare, at `now` (Unix time).
pub fn status(home: &Home, read: Read, now: i64) -> Result<Vec<SecretStatus>, Error> {
    Ok(schedule::status(&read.load(home)?, now))
}

/// One line of `keyctl swarm env`: the variable a stack file uses for an output's current
/// Swarm secret, and that secret's name.
#[derive(Clone, Debug, Serialize)]
pub struct SwarmName {
    /// The stack.
    pub stack: String,
    /// `KEYD_SWARM_<OUTPUT>`.
    pub variable: String,
    /// The current Swarm secret's name.
    pub name: String,
}

/// The current Swarm secret of every output published by the swarm sink, for `stack` or
/// every stack: what `names_env` holds, read from the store itself (so any host holding the
/// identity can print it, not only the one that wrote the file).
pub fn swarm_names(home: &Home, read: Read, stack: Option<&str>) -> Result<Vec<SwarmName>, Error> {
    let data = read.load(home)?;
    if let Some(wanted) = stack
        && !data.stacks.contains_key(wanted)
    {
        return Err(Error::Lookup(crate::store::LookupError::NotFound(format!(
            "{wanted}/"
        ))));
    }
    Ok(data
        .stacks
        .iter()
        .filter(|(name, _)| stack.is_none_or(|s| s == name.as_str()))
        .flat_map(|(name, record)| {
            record
                .swarm
                .outputs
                .iter()
                .map(move |(output, o)| SwarmName {
                    stack: name.clone(),
                    variable: crate::policy::SwarmSpec::variable(output),
                    name: o.current.clone(),
                })
        })
        .collect())
}
