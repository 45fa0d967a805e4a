//! The scheduler: what is due at a given time (resume a rotation in flight, rotate when
//! `rotate` has passed since the current version was promoted, retire when `grace` has passed),
//! and when to wake up next. Pure functions of the store and the time, so tests drive them with
//! a controlled clock instead of sleeping.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::{KindSpec, Policy};
use crate::store::{Label, StoreData};

/// The grace period of a secret whose policy sets none.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);

/// Grace period of a secret (policy value or [`DEFAULT_GRACE`]).
fn grace_of(policy: &Policy, name: &str) -> Duration {
    policy
        .secret(name)
        .and_then(|s| s.grace)
        .unwrap_or(DEFAULT_GRACE)
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Continue a rotation in flight.
    Resume {
        /// The stack.
        stack: String,
        /// The secret.
        name: String,
    },
    /// Start a scheduled rotation.
    Rotate {
        /// The stack.
        stack: String,
        /// The secret.
        name: String,
    },
    /// Run a rekey hook still owed (first run, or a retry whose backoff has passed).
    Rekey {
        /// The stack.
        stack: String,
        /// The secret.
        name: String,
    },
    /// End an overlap whose grace period has passed.
    Retire {
        /// The stack.
        stack: String,
        /// The secret.
        name: String,
    },
}

/// When the current version is next due to be replaced: `rotate` after it was promoted, or
/// for a certificate `renew_before` its expiry, whichever comes first.
pub(crate) fn next_due(
    spec: &crate::policy::SecretSpec,
    current: &crate::store::VersionRecord,
) -> Option<i64> {
    let since = current.promoted.unwrap_or(current.created);
    let by_interval = spec.rotate.map(|r| since + r.as_secs() as i64);
    let by_expiry = match (&spec.kind, &current.material) {
        (KindSpec::Tls { renew_before, .. }, crate::material::Material::Tls(cert)) => {
            Some(cert.not_after - renew_before.as_secs() as i64)
        }
        _ => None,
    };
    by_interval.into_iter().chain(by_expiry).min()
}

/// The stacks [`plan`] leaves out because their stored policy no longer parses, each as
/// `STACK: why`.
pub fn unreadable_policies(data: &StoreData) -> Vec<String> {
    data.stacks
        .iter()
        .filter_map(|(stack, record)| {
            Policy::parse(&record.policy_path, record.policy_source.clone())
                .err()
                .map(|e| format!("{stack}: {e}"))
        })
        .collect()
}

/// Everything due at `now`, and the earliest later time something becomes due.
pub fn plan(data: &StoreData, now: i64) -> (Vec<Action>, Option<i64>) {
    let mut due = Vec::new();
    let mut next: Option<i64> = None;
    let mut later = |t: i64| next = Some(next.map_or(t, |n| n.min(t)));
    for (stack, record) in &data.stacks {
        if let Some(owed) = &record.reload_owed {
            later(owed.retry_at.max(now));
        }
        let Ok(policy) = Policy::parse(&record.policy_path, record.policy_source.clone()) else {
            continue; // applied policies were valid; a newer keyd may read them differently
        };
        for (name, secret) in record.secrets.iter().filter(|(_, s)| !s.removed) {
            let Some(spec) = policy.secret(name) else {
                continue;
            };
            let (s, n) = (stack.clone(), name.clone());
            if let Some(rotation) = &secret.rotation {
                let ahead = match &spec.kind {
                    KindSpec::Rsa {
                        publish_ahead: Some(a),
                        ..
                    } => rotation.delivered_at.map(|d| d + a.as_secs() as i64),
                    _ => None,
                };
                let at = rotation
                    .retry_at
                    .into_iter()
                    .chain(ahead)
                    .max()
                    .unwrap_or(now);
                if at <= now {
                    due.push(Action::Resume { stack: s, name: n });
                } else {
                    later(at);
                }
                continue;
            }
            let Some(current) = secret.current() else {
                continue;
            };
            let since = current.promoted.unwrap_or(current.created);
            let has_older = secret.versions.iter().any(|v| {
                v.label == Some(Label::Previous) || (v.label.is_none() && v.retired.is_none())
            });
            // A rekey hook owed runs first, and holds the retire back until it succeeded.
            if let Some(owed) = &secret.rekey {
                let at = owed.retry_at.unwrap_or(now);
                if at <= now {
                    due.push(Action::Rekey {
                        stack: s.clone(),
                        name: n.clone(),
                    });
                } else {
                    later(at);
                }
            } else if has_older {
                let at = since + grace_of(&policy, name).as_secs() as i64;
                if at <= now {
                    due.push(Action::Retire {
                        stack: s.clone(),
                        name: n.clone(),
                    });
                } else {
                    later(at);
                }
            }
            // No new rotation while the last one's rekey is owed: it would have to drop a
            // value data may still be encrypted with.
            if let Some(at) = next_due(spec, current).filter(|_| secret.rekey.is_none()) {
                if at <= now {
                    due.push(Action::Rotate { stack: s, name: n });
                } else {
                    later(at);
                }
            }
        }
    }
    (due, next)
}

/// One secret's rotation status (no values).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SecretStatus {
    /// The stack.
    pub stack: String,
    /// The secret.
    pub name: String,
    /// Its kind.
    pub kind: crate::policy::Kind,
    /// Current version.
    pub version: Option<u64>,
    /// Seconds since the current version was promoted.
    pub age_seconds: Option<i64>,
    /// The previous version, while its overlap lasts.
    pub previous: Option<u64>,
    /// When the next scheduled rotation is due (RFC 3339), if the policy sets `rotate`.
    pub next_rotation: Option<String>,
    /// When the overlap ends (RFC 3339), while there is one.
    pub retire_at: Option<String>,
    /// The rotation in flight.
    pub rotation: Option<crate::store::Rotation>,
    /// The stack's files sink reload hook, failed and not yet run successfully since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_owed: Option<crate::store::ReloadOwed>,
    /// A rekey hook not yet succeeded (the retire waits for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey: Option<crate::store::RekeyOwed>,
    /// The Swarm secret each output is delivered as now, by output name (with a Swarm sink).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub swarm: BTreeMap<String, String>,
}

/// The status of every secret at `now`.
pub fn status(data: &StoreData, now: i64) -> Vec<SecretStatus> {
    let mut out = Vec::new();
    for (stack, record) in &data.stacks {
        let policy = Policy::parse(&record.policy_path, record.policy_source.clone()).ok();
        for (name, secret) in record.secrets.iter().filter(|(_, s)| !s.removed) {
            let current = secret.current();
            let since = current.map(|v| v.promoted.unwrap_or(v.created));
            let spec = policy.as_ref().and_then(|p| p.secret(name));
            let previous = secret.labelled(Label::Previous).map(|v| v.number);
            let grace = policy.as_ref().map(|p| grace_of(p, name));
            out.push(SecretStatus {
                stack: stack.clone(),
                name: name.clone(),
                kind: secret.kind,
                version: current.map(|v| v.number),
                age_seconds: since.map(|s| now - s),
                previous,
                next_rotation: spec
                    .zip(current)
                    .and_then(|(spec, current)| next_due(spec, current))
                    .map(crate::clock::format_time),
                retire_at: previous
                    .and(since)
                    .zip(grace)
                    .map(|(s, g)| crate::clock::format_time(s + g.as_secs() as i64)),
                rotation: secret.rotation.clone(),
                rekey: secret.rekey.clone(),
                reload_owed: record.reload_owed.clone(),
                swarm: secret
                    .outputs
                    .iter()
                    .filter_map(|o| {
                        let current = &record.swarm.outputs.get(&o.name)?.current;
                        Some((o.name.clone(), current.clone()))
                    })
                    .collect(),
            });
        }
    }
    out
}
