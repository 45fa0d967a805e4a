//! Reconciling a policy with the store (`keyctl quickstart` and `keyctl apply`): create every
//! secret that has no value yet, re-derive literals and templates, record the policy and its
//! sinks, persist, then deliver. Existing random values are never regenerated here; that is
//! what rotation is for.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::Serialize;

use crate::Error;
use crate::material::{self, Material};
use crate::policy::{FilesSpec, Kind, KindSpec, Policy, SecretSpec, SinkSpec, Sinks};
use crate::secret::SecretString;
use crate::sinks::{Delivery, DeliveryReport, Sink};
use crate::store::{
    Home, InitOutcome, Label, OutputRecord, SecretRecord, StackRecord, VersionRecord,
};

/// How to apply.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Deliver files here instead of the policy's `[sinks.files] dir`.
    pub out: Option<PathBuf>,
    /// Initialise the home first when it has no identity (`quickstart`).
    pub init: bool,
}

/// What an apply did, for the summary (no values in it).
#[derive(Clone, Debug, Serialize)]
pub struct ApplyReport {
    /// The stack.
    pub stack: String,
    /// The keyd home.
    pub home: PathBuf,
    /// Whether this run created the home's identity and store.
    pub initialised: bool,
    /// Each secret of the policy, in policy order.
    pub secrets: Vec<SecretSummary>,
    /// Each sink's delivery.
    pub deliveries: Vec<DeliveryReport>,
    /// Whether the store file was rewritten.
    pub store_written: bool,
    /// Things the user should know (changed parameters, secrets no longer in the policy).
    pub notes: Vec<String>,
    /// Secrets whose first version (or a resumed rotation) a target did not accept: they stay
    /// in flight with the error in `keyctl status`, and are not delivered.
    pub failed: Vec<String>,
}

impl ApplyReport {
    /// Whether any value was created or changed.
    pub fn changed_values(&self) -> bool {
        self.secrets.iter().any(|s| s.change != Change::Unchanged)
    }
}

/// One secret in the summary.
#[derive(Clone, Debug, Serialize)]
pub struct SecretSummary {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The current version.
    pub version: u64,
    /// What happened.
    pub change: Change,
    /// Names it is delivered under.
    pub outputs: Vec<String>,
    /// Key fingerprint (RSA kid, certificate SHA-256), if it has one.
    pub fingerprint: Option<String>,
}

/// What an apply did to a secret.
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

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The generation parameters of a spec, as text: stored with each version so a changed policy
/// can be noticed (and reported) without regenerating anything.
pub(crate) fn params_text(kind: &KindSpec) -> String {
    match kind {
        KindSpec::Password { length, alphabet } => format!("length={length} alphabet={alphabet}"),
        KindSpec::Token { bytes, encoding } => format!("bytes={bytes} encoding={encoding}"),
        KindSpec::Fernet { .. } => String::new(),
        KindSpec::Rsa { bits, .. } => format!("bits={bits}"),
        KindSpec::Tls { spec, .. } => format!(
            "cn={} sans={} days={} key_type={:?}",
            spec.cn,
            spec.sans.join(","),
            spec.days,
            spec.key_type
        ),
        KindSpec::Literal { .. } => String::new(),
        KindSpec::Template { text, .. } => text.clone(),
    }
}

/// Makes a new value for a random kind.
pub(crate) fn generate(kind: &KindSpec) -> Result<Material, Error> {
    let text = |value| Ok(Material::Text { value });
    match kind {
        KindSpec::Password { length, alphabet } => {
            text(material::password::generate(*length, alphabet))
        }
        KindSpec::Token { bytes, encoding } => text(material::token::generate(*bytes, *encoding)),
        KindSpec::Fernet { .. } => text(material::fernet::generate()),
        KindSpec::Rsa { bits, .. } => Ok(Material::Rsa(material::rsa::generate(*bits)?)),
        KindSpec::Tls { spec, .. } => Ok(Material::Tls(material::tls::generate(spec)?)),
        KindSpec::Literal { .. } | KindSpec::Template { .. } => {
            unreachable!("literals and templates are derived, not generated")
        }
    }
}

/// Whether generating this kind takes long enough to give it a thread of its own.
fn is_slow(kind: &KindSpec) -> bool {
    matches!(kind, KindSpec::Rsa { .. })
        || matches!(kind, KindSpec::Tls { spec, .. } if matches!(spec.key_type, material::tls::KeyType::Rsa(_)))
}

/// Generates every spec's value, the slow ones (RSA) in parallel threads.
fn generate_all<'p>(specs: &[&'p SecretSpec]) -> Result<Vec<(&'p SecretSpec, Material)>, Error> {
    std::thread::scope(|scope| {
        let slow: Vec<_> = specs
            .iter()
            .filter(|s| is_slow(&s.kind))
            .map(|&s| (s, scope.spawn(move || generate(&s.kind))))
            .collect();
        let mut done = Vec::with_capacity(specs.len());
        for &s in specs.iter().filter(|s| !is_slow(&s.kind)) {
            done.push((s, generate(&s.kind)?));
        }
        for (s, handle) in slow {
            let material = handle.join().expect("a key generation thread panicked")?;
            done.push((s, material));
        }
        Ok(done)
    })
}

/// The sinks to deliver to: the policy's, with `--out` replacing the files directory.
pub fn resolve_sinks(policy: &Policy, out: Option<&std::path::Path>) -> Sinks {
    let mut sinks = policy.sinks.clone();
    if let Some(out) = out {
        let dir = std::path::absolute(out).unwrap_or_else(|_| out.to_owned());
        sinks.set(SinkSpec::Files(match sinks.files() {
            Some(files) => FilesSpec {
                dir,
                ..files.clone()
            },
            None => FilesSpec::in_dir(dir),
        }));
    }
    sinks
}

fn new_version(number: u64, now: i64, params: String, material: Material) -> VersionRecord {
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

fn record_for(spec: &SecretSpec, previous: Option<&SecretRecord>) -> SecretRecord {
    SecretRecord {
        kind: spec.kind.kind(),
        outputs: spec
            .outputs()
            .into_iter()
            .map(|o| OutputRecord {
                name: o.name,
                part: o.part,
            })
            .collect(),
        fernet_list_keep: match spec.kind {
            KindSpec::Fernet {
                keep,
                deliver: crate::policy::FernetDelivery::List,
            } => Some(keep),
            _ => None,
        },
        versions: previous.map(|p| p.versions.clone()).unwrap_or_default(),
        rotation: previous.and_then(|p| p.rotation.clone()),
        removed: false,
    }
}

/// Reconciles `policy` with the store in `home` and delivers. See the module comment.
pub fn apply(home: &Home, policy: &Policy, options: &ApplyOptions) -> Result<ApplyReport, Error> {
    let sinks = resolve_sinks(policy, options.out.as_deref());
    let lock = home.lock()?;
    let initialised = options.init && lock.init()? == InitOutcome::Created;
    let mut data = lock.load()?;
    let now = unix_now();
    let old = data.stacks.get(&policy.stack);
    let mut notes = Vec::new();

    for spec in &policy.secrets {
        if let Some(rec) = old.and_then(|s| s.secrets.get(&spec.name))
            && rec.kind != spec.kind.kind()
        {
            return Err(Error::KindChanged {
                stack: policy.stack.clone(),
                name: spec.name.clone(),
                stored: rec.kind,
                declared: spec.kind.kind(),
            });
        }
    }

    // Random values that do not exist yet.
    let missing: Vec<&SecretSpec> = policy
        .secrets
        .iter()
        .filter(|s| s.kind.kind().is_random())
        .filter(|s| {
            old.and_then(|st| st.secrets.get(&s.name))
                .is_none_or(|r| r.current().is_none() && r.rotation.is_none())
        })
        .collect();
    let generated: HashMap<&str, Material> = generate_all(&missing)?
        .into_iter()
        .map(|(s, m)| (s.name.as_str(), m))
        .collect();

    let mut secrets = BTreeMap::new();
    let mut changes: HashMap<String, Change> = HashMap::new();
    for spec in policy.secrets.iter().filter(|s| s.kind.kind().is_random()) {
        let previous = old.and_then(|st| st.secrets.get(&spec.name));
        let mut record = record_for(spec, previous);
        let params = params_text(&spec.kind);
        match generated.get(spec.name.as_str()) {
            Some(material) if spec.target.is_some() => {
                // A value with a target is not current until the target accepts it: it starts
                // as a rotation from nothing (set, test, deliver, promote run after the save).
                let number = record.next_number();
                let mut version = new_version(number, now, params, material.clone());
                version.label = Some(Label::Pending);
                version.promoted = None;
                record.versions.push(version);
                record.rotation = Some(crate::store::Rotation {
                    pending: number,
                    step: crate::store::Step::Set,
                    started: now,
                    delivered_at: None,
                    by: "keyctl apply".into(),
                    attempts: 0,
                    last_error: None,
                    retry_at: None,
                });
                changes.insert(spec.name.clone(), Change::Created);
            }
            Some(material) => {
                let number = record.next_number();
                record
                    .versions
                    .push(new_version(number, now, params, material.clone()));
                changes.insert(spec.name.clone(), Change::Created);
            }
            None => {
                let Some(current) = record.current() else {
                    // A first version still in flight at its target: the engine resumes it.
                    changes.insert(spec.name.clone(), Change::Unchanged);
                    secrets.insert(spec.name.clone(), record);
                    continue;
                };
                if current.params != params {
                    notes.push(format!(
                        "{}: the policy now says {params:?} but version {} was made with {:?}; values are never regenerated by apply: run `keyctl rotate {}` to make a value with the new parameters",
                        spec.name, current.number, current.params, spec.name
                    ));
                }
                changes.insert(spec.name.clone(), Change::Unchanged);
            }
        }
        secrets.insert(spec.name.clone(), record);
    }

    // Literals and templates start from their stored records, so versions continue.
    for spec in policy.secrets.iter().filter(|s| !s.kind.kind().is_random()) {
        if let Some(record) = old.and_then(|st| st.secrets.get(&spec.name)) {
            secrets.insert(spec.name.clone(), record.clone());
        }
    }
    changes.extend(derive(policy, &mut secrets, now));

    // Secrets the store has but the policy no longer declares are kept, not delivered.
    if let Some(old) = old {
        for (name, record) in &old.secrets {
            if policy.secret(name).is_none() {
                notes.push(format!(
                    "{name}: in the store but no longer in the policy; kept (versions are never deleted) and not delivered"
                ));
                let mut kept = record.clone();
                kept.removed = true;
                secrets.insert(name.clone(), kept);
            }
        }
    }

    let new_stack = StackRecord {
        policy_path: policy.path.clone(),
        policy_source: policy.source.clone(),
        applied_at: now,
        sinks: sinks.clone(),
        secrets,
    };
    // Every sink checks every value before anything is written.
    let deliveries = stack_deliveries(&new_stack);
    check_sinks(&new_stack.sinks, &deliveries)?;
    if new_stack.sinks.is_empty() {
        notes.push("the policy has no sinks and no --out was given: values are in the store only (see `keyctl show`)".into());
    }

    let values_changed = changes.values().any(|c| *c != Change::Unchanged);
    let record_changed = old.is_none_or(|o| {
        o.sinks != sinks
            || o.policy_source != policy.source
            || o.policy_path != policy.path
            || o.secrets.len() != new_stack.secrets.len()
            || o.secrets.iter().any(|(n, r)| {
                new_stack.secrets.get(n).is_none_or(|s| {
                    s.outputs != r.outputs
                        || s.fernet_list_keep != r.fernet_list_keep
                        || s.removed != r.removed
                })
            })
    });
    let store_written = values_changed || record_changed;
    data.stacks.insert(policy.stack.clone(), new_stack);
    if store_written {
        // The store is the truth: persisted before any sink sees a new value, so a crash after
        // delivery never leaves a delivered value the store does not know.
        lock.save(&data)?;
    }
    let mut reports = deliver_stack(&data.stacks[&policy.stack], &deliveries)?;

    // Rotations in flight in this stack (first versions at their targets, or work a stopped
    // process left) run now, through the same state machine as `keyctl rotate`.
    let mut failed = Vec::new();
    let in_flight: Vec<String> = data.stacks[&policy.stack]
        .secrets
        .iter()
        .filter(|(_, r)| r.rotation.is_some() && !r.removed)
        .map(|(n, _)| n.clone())
        .collect();
    if !in_flight.is_empty() {
        let clock = crate::rotation::SystemClock;
        let mut engine = crate::rotation::Engine::new(&lock, &clock, "keyctl apply")?;
        for name in &in_flight {
            let from = engine.data.stacks[&policy.stack].secrets[name]
                .current()
                .map_or(0, |v| v.number);
            engine.advance(&policy.stack, name, from, false)?;
        }
        failed.extend(
            engine
                .report
                .outcomes
                .iter()
                .filter(|o| o.result == crate::rotation::OutcomeKind::Failed)
                .map(|o| o.name.clone()),
        );
        for o in &engine.report.outcomes {
            if let Some(message) = &o.message {
                notes.push(format!(
                    "{}: {:?} at step {}: {message}",
                    o.name,
                    o.result,
                    o.step.map_or("-".into(), |s| s.to_string())
                ));
            }
        }
        reports.append(&mut engine.report.deliveries);
        data = engine.data;
    }

    let stack = &data.stacks[&policy.stack];
    let summaries = policy
        .secrets
        .iter()
        // A template whose input is still at its target has no value yet: it is left out.
        .filter_map(|spec| {
            let record = stack.secrets.get(&spec.name)?;
            let pending = record
                .rotation
                .as_ref()
                .and_then(|r| record.version(r.pending));
            let current = record.current().or(pending)?;
            Some(SecretSummary {
                name: spec.name.clone(),
                kind: record.kind,
                version: current.number,
                change: changes
                    .get(spec.name.as_str())
                    .copied()
                    .unwrap_or(Change::Created),
                outputs: record.outputs.iter().map(|o| o.name.clone()).collect(),
                fingerprint: current.material.fingerprint(),
            })
        })
        .collect();
    drop(lock);
    Ok(ApplyReport {
        stack: policy.stack.clone(),
        home: home.dir().to_owned(),
        initialised,
        secrets: summaries,
        deliveries: reports,
        store_written,
        notes,
        failed,
    })
}

/// Re-derives every literal and template of `policy` from the values delivered now, in
/// dependency order: a new version where the value changed. Returns what happened to each.
pub(crate) fn derive(
    policy: &Policy,
    secrets: &mut BTreeMap<String, SecretRecord>,
    now: i64,
) -> HashMap<String, Change> {
    let mut values: HashMap<String, SecretString> = HashMap::new();
    for record in secrets.values() {
        for output in &record.outputs {
            if let Some(v) = record.delivered(output.part) {
                values.insert(output.name.clone(), v);
            }
        }
    }
    let mut changes = HashMap::new();
    let mut derived: Vec<&SecretSpec> = policy
        .secrets
        .iter()
        .filter(|s| !s.kind.kind().is_random())
        .collect();
    while !derived.is_empty() {
        let before = derived.len();
        let mut waiting = Vec::new();
        for spec in derived {
            let value = match &spec.kind {
                KindSpec::Literal { value } => Some(SecretString::new(value.clone())),
                KindSpec::Template { pieces, .. } => {
                    let inputs_ready =
                        material::template::references(pieces).all(|n| values.contains_key(n));
                    inputs_ready
                        .then(|| material::template::render(pieces, |n| values.get(n)))
                        .flatten()
                }
                _ => unreachable!("only literals and templates are derived"),
            };
            let Some(value) = value else {
                waiting.push(spec);
                continue;
            };
            let mut record = record_for(spec, secrets.get(&spec.name));
            let same = record.current().is_some_and(
                |v| matches!(&v.material, Material::Text { value: old } if old == &value),
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
                    value: value.clone(),
                };
                record
                    .versions
                    .push(new_version(number, now, params_text(&spec.kind), material));
                if existed {
                    Change::Updated
                } else {
                    Change::Created
                }
            };
            changes.insert(spec.name.clone(), change);
            values.insert(spec.name.clone(), value);
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

/// Every value a stack delivers now, by output name (secrets removed from the policy excluded).
pub(crate) fn stack_deliveries(stack: &StackRecord) -> Vec<Delivery> {
    stack
        .secrets
        .values()
        .filter(|r| !r.removed)
        .flat_map(|r| {
            r.outputs.iter().filter_map(|o| {
                Some(Delivery {
                    name: o.name.clone(),
                    value: r.delivered(o.part)?,
                })
            })
        })
        .collect()
}

fn sink_list(sinks: &Sinks) -> Vec<&dyn Sink> {
    sinks
        .iter()
        .map(|s| match s {
            SinkSpec::Files(f) => f as &dyn Sink,
            SinkSpec::EnvFile(e) => e as &dyn Sink,
        })
        .collect()
}

/// Has every sink check every value, writing nothing.
pub(crate) fn check_sinks(sinks: &Sinks, deliveries: &[Delivery]) -> Result<(), Error> {
    for sink in sink_list(sinks) {
        sink.check(deliveries)?;
    }
    Ok(())
}

/// Delivers `deliveries` to every sink of `stack` (checked first), then runs reload hooks for
/// sinks that changed something.
pub(crate) fn deliver_stack(
    stack: &StackRecord,
    deliveries: &[Delivery],
) -> Result<Vec<DeliveryReport>, Error> {
    check_sinks(&stack.sinks, deliveries)?;
    let mut reports = Vec::new();
    for sink in sink_list(&stack.sinks) {
        reports.push(sink.deliver(deliveries)?);
    }
    if let Some(files) = stack.sinks.files()
        && reports
            .iter()
            .any(|r| r.sink == "files" && !r.written.is_empty())
        && let Some(hook) = &files.reload
    {
        crate::sinks::run_reload_hook(hook)?;
    }
    Ok(reports)
}
