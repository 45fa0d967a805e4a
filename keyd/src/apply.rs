//! Reconciling a policy with the store (`keyctl quickstart` and `keyctl apply`): create every
//! secret that has no value yet, re-derive literals and templates, record the policy and its
//! sinks, persist, then deliver. Existing random values are never regenerated here; that is
//! what rotation is for.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::Error;
use crate::material::{self, Material};
use crate::policy::{FilesSink, Kind, KindSpec, Policy, SecretSpec, Sinks};
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
fn params_text(kind: &KindSpec) -> String {
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
        sinks.files = Some(match sinks.files {
            Some(files) => FilesSink { dir, ..files },
            None => FilesSink::in_dir(dir),
        });
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
                .and_then(SecretRecord::current)
                .is_none()
        })
        .collect();
    let generated: HashMap<&str, Material> = generate_all(&missing)?
        .into_iter()
        .map(|(s, m)| (s.name.as_str(), m))
        .collect();

    let mut secrets = std::collections::BTreeMap::new();
    let mut changes: HashMap<&str, Change> = HashMap::new();
    for spec in policy.secrets.iter().filter(|s| s.kind.kind().is_random()) {
        let previous = old.and_then(|st| st.secrets.get(&spec.name));
        let mut record = record_for(spec, previous);
        let params = params_text(&spec.kind);
        match generated.get(spec.name.as_str()) {
            Some(material) => {
                let number = record.next_number();
                record
                    .versions
                    .push(new_version(number, now, params, material.clone()));
                changes.insert(&spec.name, Change::Created);
            }
            None => {
                let current = record
                    .current()
                    .expect("only secrets with a current version are kept");
                if current.params != params {
                    notes.push(format!(
                        "{}: the policy now says {params:?} but version {} was made with {:?}; values are never regenerated by apply: run `keyctl rotate {}` to make a value with the new parameters",
                        spec.name, current.number, current.params, spec.name
                    ));
                }
                changes.insert(&spec.name, Change::Unchanged);
            }
        }
        secrets.insert(spec.name.clone(), record);
    }

    // Literals and templates, in dependency order: they follow the policy and their inputs.
    let mut values: HashMap<String, SecretString> = HashMap::new();
    for record in secrets.values() {
        for output in &record.outputs {
            if let Some(v) = record.delivered(output.part) {
                values.insert(output.name.clone(), v);
            }
        }
    }
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
                    material::template::render(pieces, |n| values.get(n))
                }
                _ => unreachable!("random kinds were handled above"),
            };
            let Some(value) = value else {
                waiting.push(spec);
                continue;
            };
            let previous = old.and_then(|st| st.secrets.get(&spec.name));
            let mut record = record_for(spec, previous);
            let params = params_text(&spec.kind);
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
                record.versions.push(new_version(
                    number,
                    now,
                    params,
                    Material::Text {
                        value: value.clone(),
                    },
                ));
                if existed {
                    Change::Updated
                } else {
                    Change::Created
                }
            };
            changes.insert(&spec.name, change);
            values.insert(spec.name.clone(), value);
            secrets.insert(spec.name.clone(), record);
        }
        assert!(
            waiting.len() < before,
            "the policy's template graph was checked for cycles"
        );
        derived = waiting;
    }

    // Secrets the store has but the policy no longer declares are kept, not delivered.
    if let Some(old) = old {
        for (name, record) in &old.secrets {
            if policy.secret(name).is_none() {
                notes.push(format!(
                    "{name}: in the store but no longer in the policy; kept (versions are never deleted) and not delivered"
                ));
                secrets.insert(name.clone(), record.clone());
            }
        }
    }

    // Everything to deliver, checked by every sink before anything is written.
    let deliveries: Vec<Delivery> = policy
        .outputs()
        .into_iter()
        .map(|o| Delivery {
            value: secrets[&o.secret]
                .delivered(o.part)
                .expect("every declared secret has a current version"),
            name: o.name,
        })
        .collect();
    let sink_list: Vec<&dyn Sink> = [
        sinks.files.as_ref().map(|s| s as &dyn Sink),
        sinks.envfile.as_ref().map(|s| s as &dyn Sink),
    ]
    .into_iter()
    .flatten()
    .collect();
    for sink in &sink_list {
        sink.check(&deliveries)?;
    }
    if sink_list.is_empty() {
        notes.push("the policy has no sinks and no --out was given: values are in the store only (see `keyctl show`)".into());
    }

    let values_changed = changes.values().any(|c| *c != Change::Unchanged);
    let record_changed = old.is_none_or(|o| {
        o.sinks != sinks
            || o.policy_source != policy.source
            || o.policy_path != policy.path
            || o.secrets.len() != secrets.len()
            || o.secrets.iter().any(|(n, r)| {
                secrets.get(n).is_none_or(|s| {
                    s.outputs != r.outputs || s.fernet_list_keep != r.fernet_list_keep
                })
            })
    });
    let store_written = values_changed || record_changed;
    if store_written {
        data.stacks.insert(
            policy.stack.clone(),
            StackRecord {
                policy_path: policy.path.clone(),
                policy_source: policy.source.clone(),
                applied_at: now,
                sinks: sinks.clone(),
                secrets,
            },
        );
        // The store is the truth: persisted before any sink sees a new value, so a crash after
        // delivery never leaves a delivered value the store does not know.
        lock.save(&data)?;
    }

    let mut reports = Vec::new();
    for sink in &sink_list {
        reports.push(sink.deliver(&deliveries)?);
    }

    let stack = &data.stacks[&policy.stack];
    let summaries = policy
        .secrets
        .iter()
        .map(|spec| {
            let record = &stack.secrets[&spec.name];
            let current = record.current().expect("current version");
            SecretSummary {
                name: spec.name.clone(),
                kind: record.kind,
                version: current.number,
                change: changes[spec.name.as_str()],
                outputs: record.outputs.iter().map(|o| o.name.clone()).collect(),
                fingerprint: current.material.fingerprint(),
            }
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
    })
}
