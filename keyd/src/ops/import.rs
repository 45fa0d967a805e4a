//! `keyctl import`: adopt the values a stack already has as version 1 of its secrets, the policy
//! deciding each one's kind. Every value is read and checked against its kind before anything
//! is written (Fernet keys, RSA keys and their public halves, certificates and keys, literals
//! and templates re-derived and compared; passwords and tokens that do not match the policy
//! are kept with a warning naming the next rotation as the fix). A run that refuses any value
//! writes nothing; a run that imports writes the store once. Nothing is delivered here: the
//! next `keyctl apply` (or the daemon) does, with the secrets the source did not have.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::clock::{format_time, unix_now};
use crate::derive::derive;
use crate::error::Error;
use crate::material::{Material, adopt};
use crate::policy::{Kind, KindSpec, Part, Policy, SecretSpec};
use crate::rotation::{AuditLog, line_id, save_logged};
use crate::secret::SecretString;
use crate::sources::{self, SourceKind, SourceValue};
use crate::store::{AuditLine, Home, SecretRecord, StackRecord, StoreData, VersionRecord};

use super::apply::{refuse_to_move_files_unasked, resolve_sinks};

/// What to import, and how.
#[derive(Clone, Debug)]
pub struct ImportOptions {
    /// A directory, a `.env` file or a compose file.
    pub source: PathBuf,
    /// Its kind; guessed from the path when `None`.
    pub kind: Option<SourceKind>,
    /// Deliver files here (recorded in the store for the next apply), as `apply --out`.
    pub out: Option<PathBuf>,
    /// Check and report; write nothing.
    pub dry_run: bool,
    /// Replace secrets the store already holds (the imported value becomes their next version).
    pub replace: bool,
    /// Who asked, for the audit log.
    pub by: String,
}

/// The verdict on one secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Imported (or will be, in a dry run) as it is.
    Ok,
    /// Imported, but it does not match what the policy would make: the next rotation fixes it.
    Warning,
    /// A literal or template the source holds, equal to what the policy derives.
    Matches,
    /// Refused: the whole import is.
    Refused,
    /// The source has no value for it: the next `keyctl apply` generates or derives it.
    Missing,
}

/// One secret of the policy in the import.
#[derive(Clone, Debug, Serialize)]
pub struct ImportEntry {
    /// The secret.
    pub secret: String,
    /// Its kind.
    pub kind: Kind,
    /// Where each of its values came from: `NAME <- FILE[:LINE]`.
    pub sources: Vec<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// Why it was refused, or what is worth knowing (no values).
    pub messages: Vec<String>,
    /// What does not match the policy but is kept (the next rotation fixes it).
    pub warnings: Vec<String>,
    /// The version the value becomes (0 when not imported).
    pub version: u64,
}

/// What an import found and did (no values).
#[derive(Clone, Debug, Serialize)]
pub struct ImportReport {
    /// The stack.
    pub stack: String,
    /// The source.
    pub source: PathBuf,
    /// What it was read as.
    pub source_kind: SourceKind,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Whether the store was written.
    pub written: bool,
    /// Each secret of the policy, in policy order.
    pub secrets: Vec<ImportEntry>,
    /// Names in the source that no output of the policy has (left alone).
    pub unmapped: Vec<String>,
}

impl ImportReport {
    /// The refused entries.
    pub fn refused(&self) -> impl Iterator<Item = &ImportEntry> {
        self.secrets
            .iter()
            .filter(|e| e.verdict == Verdict::Refused)
    }

    /// How many secrets get (or got) a value from the source.
    pub fn imported(&self) -> usize {
        self.secrets
            .iter()
            .filter(|e| matches!(e.verdict, Verdict::Ok | Verdict::Warning))
            .count()
    }
}

/// The name under which a delivered output is looked up in a source as an environment
/// variable: upper case, every character that a variable name cannot hold as `_`
/// (`cert-flowkit.pem` → `CERT_FLOWKIT_PEM`).
pub fn env_name(output: &str) -> String {
    output
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The source's values, by the names a policy output can match.
struct Found {
    values: Vec<SourceValue>,
    by_name: HashMap<String, usize>,
    used: Vec<bool>,
}

impl Found {
    fn new(values: Vec<SourceValue>) -> Self {
        let mut by_name = HashMap::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            by_name.insert(v.name.clone(), i);
        }
        let used = vec![false; values.len()];
        Found {
            values,
            by_name,
            used,
        }
    }

    /// The value for an output: by its own name, else by its environment variable name.
    fn take(&mut self, output: &str) -> Option<&SourceValue> {
        let i = *self
            .by_name
            .get(output)
            .or_else(|| self.by_name.get(&env_name(output)))?;
        self.used[i] = true;
        Some(&self.values[i])
    }
}

/// A value checked against its kind, ready to become a version.
struct Adopted {
    material: Material,
    warned: bool,
}

/// Checks the values the source has for `spec`. `Ok(None)`: the source has none.
fn adopt_spec(spec: &SecretSpec, found: &mut Found, entry: &mut ImportEntry) -> Option<Adopted> {
    let mut value_of = |name: &str, entry: &mut ImportEntry| -> Option<(SecretString, String)> {
        let v = found.take(name)?;
        entry.sources.push(format!("{name} <- {}", v.origin));
        Some((v.value.duplicate(), v.origin.clone()))
    };
    let outputs = spec.outputs();
    let main = value_of(&spec.name, entry);
    let refuse = |entry: &mut ImportEntry, origin: &str, what: String| {
        entry.verdict = Verdict::Refused;
        entry
            .messages
            .push(format!("{origin}: {}: {what}", spec.name));
    };
    let text = |value: SecretString| Material::Text { value };
    match &spec.kind {
        KindSpec::Literal { .. } | KindSpec::Template { .. } => {
            // Compared once derived (see `import`); kept for that.
            if let Some((value, origin)) = main {
                entry.messages.push(origin);
                return Some(Adopted {
                    material: text(value),
                    warned: false,
                });
            }
            None
        }
        KindSpec::Fernet { .. } => {
            let (value, origin) = main?;
            match adopt::fernet(&value) {
                Ok(()) => Some(Adopted {
                    material: text(value),
                    warned: false,
                }),
                Err(e) => {
                    refuse(entry, &origin, e);
                    None
                }
            }
        }
        KindSpec::Password { length, alphabet } => {
            let (value, origin) = main?;
            let warnings = adopt::password(&value, *length, alphabet);
            warn(entry, &origin, &spec.name, &warnings);
            Some(Adopted {
                material: text(value),
                warned: !warnings.is_empty(),
            })
        }
        KindSpec::Token { bytes, encoding } => {
            let (value, origin) = main?;
            let warnings = adopt::token(&value, *bytes, *encoding);
            warn(entry, &origin, &spec.name, &warnings);
            Some(Adopted {
                material: text(value),
                warned: !warnings.is_empty(),
            })
        }
        KindSpec::Rsa { bits, .. } => {
            let companions: Vec<_> = outputs[1..]
                .iter()
                .filter_map(|o| value_of(&o.name, entry).map(|v| (o.part, o.name.clone(), v)))
                .collect();
            let Some((value, origin)) = main else {
                if let Some((_, name, (_, origin))) = companions.first() {
                    refuse(
                        entry,
                        origin,
                        format!(
                            "{name} is in the source but the private key is not: import both or neither"
                        ),
                    );
                }
                return None;
            };
            let (mut pair, warnings) = match adopt::rsa(&value, *bits) {
                Ok(adopted) => adopted,
                Err(e) => {
                    refuse(entry, &origin, e);
                    return None;
                }
            };
            warn(entry, &origin, &spec.name, &warnings);
            for (part, name, (companion, origin)) in companions {
                let checked = match part {
                    Part::PublicPem => adopt::rsa_public(&mut pair, companion.expose_secret()),
                    Part::Jwks => adopt::rsa_jwks(&pair, companion.expose_secret()),
                    _ => Ok(()),
                };
                if let Err(e) = checked {
                    entry.verdict = Verdict::Refused;
                    entry.messages.push(format!("{origin}: {name}: {e}"));
                }
            }
            Some(Adopted {
                material: Material::Rsa(pair),
                warned: !warnings.is_empty(),
            })
        }
        KindSpec::Tls { key, .. } => {
            let key_value = value_of(key, entry);
            let ((cert, origin), (key_value, key_origin)) = match (main, key_value) {
                (None, None) => return None,
                (Some(c), Some(k)) => (c, k),
                (Some((_, origin)), None) => {
                    refuse(
                        entry,
                        &origin,
                        format!(
                            "the certificate is in the source but its key {key} is not: import both or neither"
                        ),
                    );
                    return None;
                }
                (None, Some((_, origin))) => {
                    refuse(
                        entry,
                        &origin,
                        format!(
                            "the key {key} is in the source but the certificate is not: import both or neither"
                        ),
                    );
                    return None;
                }
            };
            match adopt::tls(cert.expose_secret(), &key_value) {
                Ok(c) => Some(Adopted {
                    material: Material::Tls(c),
                    warned: false,
                }),
                Err(e) => {
                    refuse(entry, &format!("{origin} + {key_origin}"), e);
                    None
                }
            }
        }
    }
}

fn warn(entry: &mut ImportEntry, _origin: &str, name: &str, warnings: &[String]) {
    if warnings.is_empty() {
        return;
    }
    if entry.verdict == Verdict::Ok {
        entry.verdict = Verdict::Warning;
    }
    for w in warnings {
        entry.warnings.push(format!(
            "{w}: kept; the next rotation (`keyctl rotate {name}`) makes one the policy describes"
        ));
    }
}

/// Imports the values of `options.source` for `policy` into the store of `home`. See the
/// module comment. A refused value is reported with `written = false` and no change anywhere.
pub fn import(
    home: &Home,
    policy: &Policy,
    options: &ImportOptions,
) -> Result<ImportReport, Error> {
    let kind = options
        .kind
        .unwrap_or_else(|| SourceKind::of(&options.source));
    let values = sources::read(&options.source, kind)?;
    let mut found = Found::new(values);

    // The store as it is. An uninitialised home is an empty store, initialised only when
    // there is something to write (a refused import leaves no trace).
    let lock = match (home.is_initialised(), options.dry_run) {
        (false, _) => None,
        (true, true) => Some(home.lock_shared()?),
        (true, false) => Some(home.lock()?),
    };
    let mut data = match &lock {
        Some(lock) => lock.load()?,
        None => StoreData::default(),
    };
    let now = unix_now();
    let old = data.stacks.remove(&policy.stack);
    // A stack delivered to Swarm with `--swarm` stays so.
    let to_swarm = old.as_ref().is_some_and(|o| o.sinks.swarm().is_some());
    let sinks = resolve_sinks(policy, options.out.as_deref(), to_swarm);
    // The sinks recorded here are where the next apply or rotation delivers.
    if let Some(old) = &old {
        refuse_to_move_files_unasked(&policy.stack, old, &sinks, options.out.is_some())?;
    }
    let files_delivered_to = old
        .as_ref()
        .and_then(|o| o.last_files_dir())
        .map(ToOwned::to_owned);
    let (mut secrets, ledger, swarm, reload_owed) = old.map_or_else(Default::default, |o| {
        (o.secrets, o.ledger, o.swarm, o.reload_owed)
    });

    let mut entries = Vec::with_capacity(policy.secrets.len());
    let mut derived_sources: HashMap<String, (String, SecretString)> = HashMap::new();
    for spec in &policy.secrets {
        let mut entry = ImportEntry {
            secret: spec.name.clone(),
            kind: spec.kind.kind(),
            sources: Vec::new(),
            verdict: Verdict::Ok,
            messages: Vec::new(),
            warnings: Vec::new(),
            version: 0,
        };
        let adopted = adopt_spec(spec, &mut found, &mut entry);
        let previous = secrets.get(&spec.name);
        if let Some(rec) = previous
            && rec.kind != spec.kind.kind()
        {
            entry.verdict = Verdict::Refused;
            entry.messages.push(format!(
                "{}: the store holds it as a {} secret but the policy declares {}",
                spec.name,
                rec.kind,
                spec.kind.kind()
            ));
        }
        let Some(adopted) = adopted else {
            if entry.verdict != Verdict::Refused {
                entry.verdict = Verdict::Missing;
                entry.messages.push(if spec.kind.kind().is_random() {
                    "not in the source: the next `keyctl apply` generates it".into()
                } else {
                    "not in the source: the next `keyctl apply` derives it".into()
                });
            }
            entries.push(entry);
            continue;
        };
        if !spec.kind.kind().is_random() {
            // Literals and templates: compared with what the policy derives, below.
            entry.verdict = Verdict::Matches;
            let origin = entry.messages.pop().unwrap_or_default();
            if let Material::Text { value } = adopted.material {
                derived_sources.insert(spec.name.clone(), (origin, value));
            }
            entries.push(entry);
            continue;
        }
        if entry.verdict == Verdict::Refused {
            entries.push(entry);
            continue;
        }
        let exists = previous.is_some_and(|r| r.current().is_some() || r.rotation.is_some());
        if exists && !options.replace {
            entry.verdict = Verdict::Refused;
            entry.messages.push(format!(
                "{}: the store already holds a value (imports never overwrite one; --replace makes the imported value its next version)",
                spec.name
            ));
            entries.push(entry);
            continue;
        }
        let (mut record, _) = SecretRecord::for_spec(spec, secrets.remove(&spec.name));
        if record.rotation.is_some() {
            entry.verdict = Verdict::Refused;
            entry.messages.push(format!(
                "{}: a rotation is in flight; let it finish (`keyctl rotate {}`) before replacing the value",
                spec.name, spec.name
            ));
            secrets.insert(spec.name.clone(), record);
            entries.push(entry);
            continue;
        }
        for v in record.versions.iter_mut().filter(|v| v.label.is_some()) {
            v.label = None;
            v.retired = Some(now);
        }
        let number = record.next_number();
        let params = if adopted.warned {
            format!("imported at {}", format_time(now))
        } else {
            spec.kind.params_text()
        };
        record.versions.push(VersionRecord::current_from(
            number,
            now,
            params,
            adopted.material,
        ));
        entry.version = number;
        secrets.insert(spec.name.clone(), record);
        entries.push(entry);
    }

    // Literals and templates from the imported values, compared with what the source held.
    let changes = derive(policy, &mut secrets, now);
    for entry in entries.iter_mut() {
        let Some((origin, source)) = derived_sources.get(&entry.secret) else {
            continue;
        };
        let rendered = secrets
            .get(&entry.secret)
            .filter(|_| changes.contains_key(&entry.secret))
            .and_then(|r| r.current())
            .and_then(|v| match &v.material {
                Material::Text { value } => Some(value),
                _ => None,
            });
        match rendered {
            Some(value) if trimmed_eq(value, source) => {}
            Some(_) => {
                entry.verdict = Verdict::Refused;
                entry.messages.push(format!(
                    "{origin}: {}: the source holds another value than the policy derives ({}); fix the policy or the source, so consumers keep what they have",
                    entry.secret,
                    match entry.kind {
                        Kind::Literal => "its literal",
                        _ => "its template, from the imported inputs",
                    }
                ));
            }
            None => {
                entry.verdict = Verdict::Warning;
                entry.warnings.push(format!(
                    "{}: not compared: its inputs are not in the source or the store; the next `keyctl apply` renders it",
                    entry.secret
                ));
            }
        }
    }

    let unmapped = found
        .values
        .iter()
        .zip(&found.used)
        .filter(|(_, used)| !**used)
        .map(|(v, _)| v.name.clone())
        .collect();
    let mut report = ImportReport {
        stack: policy.stack.clone(),
        source: options.source.clone(),
        source_kind: kind,
        dry_run: options.dry_run,
        written: false,
        secrets: entries,
        unmapped,
    };
    if options.dry_run || report.refused().next().is_some() || report.imported() == 0 {
        return Ok(report);
    }
    let lock = match lock {
        Some(lock) => lock,
        None => {
            let lock = home.lock()?;
            lock.init_or_reinit(false)?;
            let fresh = lock.load()?;
            data.generation = fresh.generation;
            data.recipients = fresh.recipients;
            lock
        }
    };
    data.stacks.insert(
        policy.stack.clone(),
        StackRecord {
            policy_path: policy.path.clone(),
            policy_source: policy.source.clone(),
            applied_at: now,
            sinks,
            secrets,
            ledger,
            swarm,
            reload_owed,
            files_delivered_to,
        },
    );
    let audit = AuditLog::new(home.dir().join("audit.log"));
    let time = format_time(now);
    let lines: Vec<AuditLine> = report
        .secrets
        .iter()
        .filter(|e| e.version > 0)
        .map(|e| AuditLine {
            time: time.clone(),
            stack: policy.stack.clone(),
            secret: e.secret.clone(),
            version: e.version,
            step: "import".into(),
            outcome: "ok".into(),
            by: options.by.clone(),
            error: None,
            id: line_id(),
        })
        .collect();
    save_logged(&audit, &lock, &mut data, lines)?;
    report.written = true;
    Ok(report)
}

/// Equal once surrounding whitespace is dropped (consumers strip it).
fn trimmed_eq(a: &SecretString, b: &SecretString) -> bool {
    crate::secret::same_bytes(
        a.expose_secret().trim().as_bytes(),
        b.expose_secret().trim().as_bytes(),
    )
}
