//! What `/metrics` says about each secret and stack, taken from one generation of the store:
//! versions, when each was made current, next rotation, certificate expiry, journals that
//! failed, owed hooks, and the targets the policies name. Names, numbers and times only: a
//! value never reaches these types.
//!
//! Facts are computed once per version of the store (the key [`State`] uses for its status
//! cache) on the blocking pool, through [`State::read`], and kept until the store changes:
//! a scrape of an unchanged store decrypts nothing. Ages are not facts: they are the time
//! since `since`, worked out when rendered.

use std::sync::Arc;

use super::super::{State, StoreKey};
use crate::error::Error;
use crate::material::Material;
use crate::policy::{Kind, Policy};
use crate::rotation::schedule::next_due;
use crate::store::{Step, StoreData};

/// One secret, as `keyctl list` shows it (removed secrets are left out).
#[derive(Clone, Debug)]
pub struct SecretFacts {
    /// The stack.
    pub stack: String,
    /// The secret.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The current version.
    pub version: Option<u64>,
    /// When the current version was made current (Unix seconds).
    pub since: Option<i64>,
    /// When its next rotation is due (Unix seconds), when the policy schedules one.
    pub next_rotation: Option<i64>,
    /// A `tls` secret's current certificate's end (Unix seconds).
    pub not_after: Option<i64>,
    /// The step a rotation in flight failed at and will retry.
    pub failed_step: Option<Step>,
    /// Whether a rekey hook is owed (the previous version is kept until it succeeds).
    pub rekey_owed: bool,
}

/// One stack.
#[derive(Clone, Debug)]
pub struct StackFacts {
    /// The stack.
    pub stack: String,
    /// Whether its files sink's reload hook failed and is owed.
    pub reload_owed: bool,
    /// Its policy's targets: name and, where it is reached over TCP, host and port.
    pub targets: Vec<(String, Option<(String, u16)>)>,
}

/// Everything `/metrics` reads from one version of the store.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The store's generation.
    pub generation: u64,
    /// Every secret, by stack then name.
    pub secrets: Vec<SecretFacts>,
    /// Every stack.
    pub stacks: Vec<StackFacts>,
}

impl Facts {
    /// The facts of `data`.
    pub fn of(data: &StoreData) -> Facts {
        let mut facts = Facts {
            generation: data.generation,
            ..Facts::default()
        };
        for (stack, record) in &data.stacks {
            let policy = Policy::parse(&record.policy_path, record.policy_source.clone()).ok();
            facts.stacks.push(StackFacts {
                stack: stack.clone(),
                reload_owed: record.reload_owed.is_some(),
                targets: policy
                    .as_ref()
                    .map(|p| {
                        p.targets
                            .iter()
                            .map(|t| (t.name.clone(), crate::targets::probe::address(t)))
                            .collect()
                    })
                    .unwrap_or_default(),
            });
            for (name, secret) in record.secrets.iter().filter(|(_, s)| !s.removed) {
                let current = secret.current();
                let spec = policy.as_ref().and_then(|p| p.secret(name));
                facts.secrets.push(SecretFacts {
                    stack: stack.clone(),
                    name: name.clone(),
                    kind: secret.kind,
                    version: current.map(|v| v.number),
                    since: current.map(|v| v.promoted.unwrap_or(v.created)),
                    next_rotation: spec
                        .zip(current)
                        .and_then(|(spec, current)| next_due(spec, current)),
                    not_after: current.and_then(|v| match &v.material {
                        Material::Tls(cert) => Some(cert.not_after),
                        _ => None,
                    }),
                    failed_step: secret
                        .rotation
                        .as_ref()
                        .filter(|r| r.last_error.is_some())
                        .map(|r| r.step),
                    rekey_owed: secret.rekey.is_some(),
                });
            }
        }
        facts
    }
}

/// The facts of the store's last version seen, and that version.
#[derive(Default)]
pub struct FactsCache(std::sync::Mutex<Option<(StoreKey, Arc<Facts>)>>);

impl State {
    /// The facts of the store as it is now: computed from a lock-free `peek` when the store
    /// changed since the last call, else the cached ones. The cache's lock is held while
    /// computing, so scrapes that arrive together decrypt the store once. Blocks: run it
    /// through [`State::read`].
    pub fn metric_facts(&self) -> Result<Arc<Facts>, Error> {
        let mut cache = self
            .metrics
            .facts
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = match self.store_key() {
            Ok(key) => key,
            // A remote store's engine briefly away: the last facts read are the newest this
            // keyd knows (as for the plugin's view); keyd_store_generation says which.
            Err(e @ crate::store::StoreError::Remote { .. }) => {
                return cache.as_ref().map(|(_, f)| f.clone()).ok_or(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        if let Some((_, facts)) = cache.as_ref().filter(|(k, _)| *k == key) {
            return Ok(facts.clone());
        }
        // Keyed by what was seen before reading: a write in between makes the next call read
        // again, never keep older facts.
        let facts = Arc::new(Facts::of(&self.home.peek()?));
        *cache = Some((key, facts.clone()));
        Ok(facts)
    }
}
