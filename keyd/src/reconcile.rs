//! Policy against store: what `quickstart` and `apply` must create, re-derive and record for a
//! stack. Pure of I/O: it takes the stack as stored and returns the stack as it must be stored
//! next; the caller persists and delivers. Existing random values are never regenerated here;
//! that is what rotation is for.

use std::collections::HashMap;

use crate::derive::{Change, derive};
use crate::error::Error;
use crate::material::race::{self, race};
use crate::material::{Material, MaterialError};
use crate::policy::{KindSpec, Policy, SecretSpec, Sinks};
use crate::store::{Label, Rotation, SecretRecord, StackRecord, Step, VersionRecord};

/// A stack as it must be stored after an apply, and what changed.
pub struct Reconciled<'p> {
    /// The policy reconciled.
    policy: &'p Policy,
    /// The new record.
    pub stack: StackRecord,
    /// What happened to each secret of the policy, in policy order (`None`: a derived value
    /// that was not re-derived).
    pub changes: Vec<Option<Change>>,
    /// Things the user should know (changed parameters, secrets no longer in the policy).
    pub notes: Vec<String>,
    /// Whether the store must be written: a value, the policy or what it decides changed.
    pub store_changed: bool,
}

impl Reconciled<'_> {
    /// Whether any secret's value was created or changed.
    pub fn any_change(&self) -> bool {
        self.changes
            .iter()
            .any(|c| c.is_some_and(|c| c != Change::Unchanged))
    }

    /// What happened to the secret `name` of the policy, if it was looked at.
    pub fn change(&self, name: &str) -> Option<Change> {
        self.changes[self.policy.position(name)?]
    }
}

/// Generates every spec's value: the slow ones (RSA) raced on every core
/// ([`crate::material::race`]), the others here meanwhile.
fn generate_all<'p>(
    specs: &[&'p SecretSpec],
) -> Result<Vec<(&'p SecretSpec, Material)>, MaterialError> {
    let (slow, fast): (Vec<&SecretSpec>, Vec<&SecretSpec>) =
        specs.iter().partition(|s| s.kind.is_slow());
    let kinds: Vec<KindSpec> = slow.iter().map(|s| s.kind.clone()).collect();
    std::thread::scope(|scope| {
        let raced = (!kinds.is_empty())
            .then(|| scope.spawn(|| race(&kinds, race::cores(), |k: KindSpec| k.generate())));
        let mut done = Vec::with_capacity(specs.len());
        for s in fast {
            done.push((s, s.kind.generate()?));
        }
        if let Some(raced) = raced {
            let materials = raced
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (s, material) in slow.into_iter().zip(materials) {
                done.push((s, material?));
            }
        }
        Ok(done)
    })
}

/// Reconciles `policy` (delivering to `sinks`) with `old`, the stack as stored, at `now`.
pub fn reconcile<'p>(
    policy: &'p Policy,
    sinks: Sinks,
    old: Option<StackRecord>,
    now: i64,
) -> Result<Reconciled<'p>, Error> {
    // One look at each spec's record: its kind, whether it has a value, and how many of the
    // stored records the policy still declares.
    let mut missing: Vec<&SecretSpec> = Vec::new();
    let mut declared = 0;
    for spec in &policy.secrets {
        let rec = old.as_ref().and_then(|s| s.secrets.get(&spec.name));
        if let Some(rec) = rec {
            declared += 1;
            if rec.kind != spec.kind.kind() {
                return Err(Error::KindChanged {
                    stack: policy.stack.clone(),
                    name: spec.name.clone(),
                    stored: rec.kind,
                    declared: spec.kind.kind(),
                });
            }
        }
        // Random values that do not exist yet.
        if spec.kind.kind().is_random()
            && rec.is_none_or(|r| r.current().is_none() && r.rotation.is_none())
        {
            missing.push(spec);
        }
    }
    let mut store_changed = old.as_ref().is_none_or(|o| {
        o.sinks != sinks || o.policy_source != policy.source || o.policy_path != policy.path
    });
    // The stored records are updated in place (a no-change apply of 10,000 secrets moves no
    // record); those the policy no longer declares are set aside while templates derive.
    let files_delivered_to = old
        .as_ref()
        .and_then(|o| o.last_files_dir())
        .map(ToOwned::to_owned);
    let (mut secrets, ledger, swarm, reload_owed) = old.map_or_else(Default::default, |o| {
        (o.secrets, o.ledger, o.swarm, o.reload_owed)
    });
    // Policy names are unique: when it declares as many stored records as there are, it
    // declares them all.
    let gone: Vec<String> = if declared == secrets.len() {
        Vec::new()
    } else {
        secrets
            .keys()
            .filter(|name| policy.secret(name).is_none())
            .cloned()
            .collect()
    };
    let gone: Vec<(String, SecretRecord)> = gone
        .into_iter()
        .filter_map(|name| secrets.remove_entry(&name))
        .collect();
    let mut notes = Vec::new();

    let mut generated: HashMap<&str, Material> = generate_all(&missing)?
        .into_iter()
        .map(|(s, m)| (s.name.as_str(), m))
        .collect();

    let mut changes: Vec<Option<Change>> = vec![None; policy.secrets.len()];
    let mut params = String::new();
    for (i, spec) in policy.secrets.iter().enumerate() {
        if !spec.kind.kind().is_random() {
            // Literals and templates keep their stored records (versions continue); derive
            // below decides whether they change.
            if let Some(record) = secrets.get(&spec.name) {
                store_changed |= record.removed;
            }
            continue;
        }
        let record = match secrets.get_mut(&spec.name) {
            Some(record) => {
                store_changed |= record.follow_spec(spec);
                record
            }
            None => {
                store_changed = true;
                secrets
                    .entry(spec.name.clone())
                    .or_insert(SecretRecord::for_spec(spec, None).0)
            }
        };
        params.clear();
        spec.kind.write_params(&mut params);
        let material = (!generated.is_empty())
            .then(|| generated.remove(spec.name.as_str()))
            .flatten();
        let change = match material {
            Some(material) if spec.target.is_some() => {
                // A value with a target is not current until the target accepts it: it starts
                // as a rotation from nothing (set, test, deliver, promote run after the save).
                let number = record.next_number();
                let mut version =
                    VersionRecord::current_from(number, now, params.clone(), material);
                version.label = Some(Label::Pending);
                version.promoted = None;
                record.versions.push(version);
                record.rotation = Some(Rotation {
                    pending: number,
                    step: Step::Set,
                    started: now,
                    delivered_at: None,
                    by: "keyctl apply".into(),
                    attempts: 0,
                    last_error: None,
                    retry_at: None,
                });
                Change::Created
            }
            Some(material) => {
                let number = record.next_number();
                record.versions.push(VersionRecord::current_from(
                    number,
                    now,
                    params.clone(),
                    material,
                ));
                Change::Created
            }
            None => {
                // A first version still in flight at its target has no current one: the
                // rotation engine resumes it.
                if let Some(current) = record.current()
                    && current.params != params
                {
                    notes.push(format!(
                        "{}: the policy now says {params:?} but version {} was made with {:?}; values are never regenerated by apply: run `keyctl rotate {}` to make a value with the new parameters",
                        spec.name, current.number, current.params, spec.name
                    ));
                }
                Change::Unchanged
            }
        };
        changes[i] = Some(change);
    }
    // A derived secret whose record is new or whose outputs changed changes the store too.
    for (name, change) in derive(policy, &mut secrets, now) {
        if let Some(i) = policy.position(&name) {
            changes[i] = Some(change);
        }
    }

    // Secrets the store has but the policy no longer declares are kept, not delivered.
    for (name, mut record) in gone {
        notes.push(format!(
            "{name}: in the store but no longer in the policy; kept (versions are never deleted) and not delivered"
        ));
        store_changed |= !record.removed;
        record.removed = true;
        secrets.insert(name, record);
    }

    let stack = StackRecord {
        policy_path: policy.path.clone(),
        policy_source: policy.source.clone(),
        applied_at: now,
        sinks,
        secrets,
        ledger,
        swarm,
        reload_owed,
        files_delivered_to,
    };
    let mut reconciled = Reconciled {
        policy,
        stack,
        changes,
        notes,
        store_changed,
    };
    // A value created or changed (a derived one too: new, or re-rendered) changes the store.
    reconciled.store_changed |= reconciled.any_change();
    Ok(reconciled)
}
