//! Values computed from other values: literals (from the policy text) and templates (rendered
//! from what is delivered now, e.g. a connection URL holding a password). A derived secret gets
//! a new version whenever its rendered value changes.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::material::{Material, template};
use crate::policy::{KindSpec, Policy, SecretSpec};
use crate::secret::{SecretString, Value};
use crate::store::{SecretRecord, VersionRecord};

/// What a reconcile or derivation did to a secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// It had no value; version 1 was made.
    Created,
    /// A literal or template whose policy text or inputs changed: a new version.
    Updated,
    /// Nothing changed.
    Unchanged,
}

/// Re-derives every literal and template of `policy` from the values delivered now, in
/// dependency order: a new version where the value changed. Returns what happened to each.
pub fn derive(
    policy: &Policy,
    secrets: &mut BTreeMap<String, SecretRecord>,
    now: i64,
) -> HashMap<String, Change> {
    let mut derived: Vec<&SecretSpec> = policy
        .secrets
        .iter()
        .filter(|s| !s.kind.kind().is_random())
        .collect();
    // Only the values templates name are read (a store of 10,000 passwords and one URL reads
    // one password's versions, not all of them).
    let wanted: HashSet<&str> = derived
        .iter()
        .filter_map(|s| match &s.kind {
            KindSpec::Template { pieces, .. } => Some(template::references(pieces)),
            _ => None,
        })
        .flatten()
        .collect();
    let mut values: HashMap<String, Value> = HashMap::new();
    for record in secrets.values() {
        for output in record
            .outputs
            .iter()
            .filter(|o| wanted.contains(o.name.as_str()))
        {
            if let Some((_, v)) = record.delivered(output.part) {
                values.insert(output.name.clone(), v);
            }
        }
    }
    let mut changes = HashMap::new();
    while !derived.is_empty() {
        let before = derived.len();
        let mut waiting = Vec::new();
        for spec in derived {
            let value = match &spec.kind {
                KindSpec::Literal { value } => Some(SecretString::new(value.clone())),
                KindSpec::Template { pieces, .. } => {
                    let inputs_ready = template::references(pieces).all(|n| values.contains_key(n));
                    inputs_ready
                        .then(|| template::render(pieces, |n| values.get(n).map(Value::expose)))
                        .flatten()
                }
                _ => unreachable!("only literals and templates are derived"),
            };
            let Some(value) = value else {
                waiting.push(spec);
                continue;
            };
            let (mut record, _) = SecretRecord::for_spec(spec, secrets.remove(&spec.name));
            let same = record.current().is_some_and(
                |v| matches!(&v.material, Material::Text { value: old } if old.ct_eq(&value)),
            );
            let change = if same {
                Change::Unchanged
            } else {
                let existed = record.current().is_some();
                for v in record.versions.iter_mut().filter(|v| v.label.is_some()) {
                    v.label = None;
                    v.retired = Some(now);
                }
                let number = record.next_number();
                let material = Material::Text {
                    value: value.duplicate(),
                };
                record.versions.push(VersionRecord::current_from(
                    number,
                    now,
                    spec.kind.params_text(),
                    material,
                ));
                if existed {
                    Change::Updated
                } else {
                    Change::Created
                }
            };
            changes.insert(spec.name.clone(), change);
            values.insert(spec.name.clone(), Value::Secret(value));
            secrets.insert(spec.name.clone(), record);
        }
        // No progress: the remaining templates wait for an input not delivered yet (a first
        // version still at its target); they are rendered once it is. (Cycles were refused
        // by the policy check.)
        if waiting.len() == before {
            break;
        }
        derived = waiting;
    }
    changes
}
