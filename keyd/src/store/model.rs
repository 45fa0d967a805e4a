//! What the store holds: per stack, the policy and sinks as last applied, and per secret every
//! version with its number, label and timestamps. Versions are numbered from 1 and never reused.
//! What the sinks recorded of their writes is in `ledger.rs`; one version is in `versions.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::material::{Material, rsa};
use crate::policy::{FernetDelivery, Kind, KindSpec, Part, SecretSpec, Sinks};
use crate::secret::{SecretString, Value};

use super::ledger::{Ledger, SinkRecords, SwarmLedger};
use super::versions::{Label, VersionRecord, Versions};

/// The store format this build writes.
pub const FORMAT: u32 = 1;

/// Everything in the store. Not `Clone`: it holds key material.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoreData {
    /// Format version.
    pub format: u32,
    /// How many times this store was written; also kept in `store.generation` beside it, so
    /// an older copy put back in place is noticed.
    #[serde(default)]
    pub generation: u64,
    /// Stacks by name.
    pub stacks: BTreeMap<String, StackRecord>,
    /// The age recipients the store is encrypted to besides the home's own identity
    /// (`keyctl recipients`): X25519 (`age1…`) or SSH public keys. Kept inside the encrypted
    /// store, so writing the home is not enough to add one (docs/security.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Audit lines saved with the state they describe and not known to be in the audit log
    /// yet: appended right after the save, and by the next rotation engine if a kill came
    /// between the two (those the log does not already end with). Empty almost always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audit_owed: Vec<AuditLine>,
    /// The length of the audit log just before `audit_owed` was appended to it: where those
    /// lines are, if they were written (lines logged later, without a store write, follow).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audit_at: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One line of the audit log (`<home>/audit.log`): a rotation step or an import, its
/// outcome and who asked. Never a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLine {
    /// RFC 3339 UTC.
    pub time: String,
    /// The stack.
    pub stack: String,
    /// The secret.
    pub secret: String,
    /// The version the step acted on.
    pub version: u64,
    /// `create`, `set`, `test`, `deliver`, `promote`, `finish`, `retire`, `rekey`, `import`.
    pub step: String,
    /// `ok`, `waiting`, `failed`, `resumed`.
    pub outcome: String,
    /// Who asked.
    pub by: String,
    /// Why it failed (no values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Random, unique per line: how a line owed by the store is recognised in the log.
    pub id: String,
}

impl StoreData {
    /// Decodes every secret's versions now (a load that reads the whole store), so a damaged
    /// record is reported as such instead of failing where it is first used. Names the
    /// secret and a position, never the text.
    pub(super) fn decode_versions(&mut self) -> Result<(), String> {
        for (stack, record) in &mut self.stacks {
            for (name, secret) in &mut record.secrets {
                secret
                    .versions
                    .decode_now()
                    .map_err(|e| versions_error(stack, name, &e))?;
            }
        }
        Ok(())
    }

    /// Decodes the versions of one secret (`Some((stack, name))`) or of all of them now, after
    /// a load that left them to their first read (a rotation's): a damaged record becomes an
    /// error naming it here, before work that is not contained per secret reads it.
    pub(super) fn check_versions(&self, only: Option<(&str, &str)>) -> Result<(), String> {
        for (stack, record) in &self.stacks {
            for (name, secret) in &record.secrets {
                if only.is_none_or(|o| o == (stack.as_str(), name.as_str())) {
                    secret
                        .versions
                        .try_decode()
                        .map_err(|e| versions_error(stack, name, &e))?;
                }
            }
        }
        Ok(())
    }
}

/// Why the versions of `stack/name` do not decode: the position only, never the text.
fn versions_error(stack: &str, name: &str, e: &serde_json::Error) -> String {
    format!(
        "decrypted, but the versions of {stack}/{name} do not decode (line {}, column {} of the record)",
        e.line(),
        e.column()
    )
}

impl Default for StoreData {
    fn default() -> Self {
        Self {
            format: FORMAT,
            generation: 0,
            stacks: BTreeMap::new(),
            recipients: Vec::new(),
            audit_owed: Vec::new(),
            audit_at: 0,
        }
    }
}

/// One stack as last applied.
#[derive(Debug, Serialize, Deserialize)]
pub struct StackRecord {
    /// The policy file it came from.
    pub policy_path: PathBuf,
    /// The policy text as applied (rotation re-reads it from here).
    pub policy_source: String,
    /// When it was last applied (Unix seconds).
    pub applied_at: i64,
    /// The sinks values are delivered to, with `--out` applied.
    pub sinks: Sinks,
    /// Secrets by name.
    pub secrets: BTreeMap<String, SecretRecord>,
    /// What the sinks last wrote, so a delivery pass can tell an output is current from its
    /// metadata without opening it.
    #[serde(default, skip_serializing_if = "Ledger::is_empty")]
    pub ledger: Ledger,
    /// What the Swarm sink published.
    #[serde(default, skip_serializing_if = "SwarmLedger::is_empty")]
    pub swarm: SwarmLedger,
    /// The files sink's reload hook failed after a delivery changed files: it is run again by
    /// every delivery pass, and by the daemon once `retry_at` has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload_owed: Option<ReloadOwed>,
    /// The directory a files sink last delivered this stack to. An apply or import that would
    /// deliver elsewhere is refused unless `--out` names the new place (consumers mount the
    /// old one); a pass that delivers to the new place removes keyd's files from the old.
    /// Stores written before it was kept have none: [`StackRecord::last_files_dir`] falls
    /// back to the sinks as last applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files_delivered_to: Option<PathBuf>,
}

/// A reload hook that has not succeeded since the files it announces were written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadOwed {
    /// Failed runs so far.
    pub attempts: u32,
    /// The last failure (no values).
    pub last_error: String,
    /// When the daemon runs it again (Unix seconds).
    pub retry_at: i64,
}

impl StackRecord {
    /// The directory this stack's files were last delivered to, as far as the store knows.
    pub fn last_files_dir(&self) -> Option<&std::path::Path> {
        self.files_delivered_to
            .as_deref()
            .or_else(|| self.sinks.files().map(|f| f.dir.as_path()))
    }

    /// The sinks' records of this stack.
    pub fn sink_records(&mut self) -> SinkRecords<'_> {
        SinkRecords {
            ledger: &mut self.ledger,
            swarm: &mut self.swarm,
        }
    }
}

/// One secret's history.
#[derive(Debug, Serialize, Deserialize)]
pub struct SecretRecord {
    /// Its kind.
    pub kind: Kind,
    /// The names it is delivered under, its own first.
    pub outputs: Vec<OutputRecord>,
    /// For fernet secrets delivered as a list: how many keys the list holds at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fernet_list_keep: Option<usize>,
    /// Every version, oldest first.
    pub versions: Versions,
    /// The rotation in flight, if any: the journal a restarted process resumes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<Rotation>,
    /// A rekey hook still owed for the current version: retire waits until it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rekey: Option<RekeyOwed>,
    /// Declared by an earlier policy but not the one last applied: kept, not delivered.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
}

/// A rekey hook that has not succeeded yet for `version` (the version a rotation promoted).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyOwed {
    /// The version the data must be re-encrypted to.
    pub version: u64,
    /// Failed runs so far.
    pub attempts: u32,
    /// The last failure (exit status or timeout; never output or values).
    pub last_error: Option<String>,
    /// When the next run is due after a failure (Unix seconds).
    pub retry_at: Option<i64>,
}

/// The step a rotation in flight is about to perform. Persisted (fsynced) before the step
/// acts, so a restarted process repeats exactly that step; every step is idempotent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Make the target accept the pending value (probe first: skip if it already works).
    Set,
    /// Prove the pending value works.
    Test,
    /// Publish the pending value to sinks (fernet lists, JWKS, passwords, certificates).
    Deliver,
    /// Make pending current and current previous (after `publish_ahead` for RSA keys).
    Promote,
    /// Labels are switched: deliver the promoted state, then close the journal.
    Finish,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Set => "set",
            Step::Test => "test",
            Step::Deliver => "deliver",
            Step::Promote => "promote",
            Step::Finish => "finish",
        })
    }
}

/// A rotation in flight (the "create" step is done: the pending version exists).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Rotation {
    /// The pending version's number.
    pub pending: u64,
    /// The next step to perform.
    pub step: Step,
    /// When the rotation started (Unix seconds).
    pub started: i64,
    /// When the pending value was delivered (for `publish_ahead`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<i64>,
    /// Who asked (`keyctl uid=…`, `keyd schedule`, `api uid=…`).
    pub by: String,
    /// Failed attempts at the current step.
    #[serde(default)]
    pub attempts: u32,
    /// The last failure, without values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Not retried before this time (backoff after a failure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<i64>,
}

/// A delivered name and the part of the material it carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The name.
    pub name: String,
    /// The part.
    pub part: Part,
}

impl SecretRecord {
    /// The record of `spec` as the policy declares it now, continuing `previous` (its versions
    /// and any rotation in flight are moved over). The flag says whether what the policy
    /// decides (outputs, fernet list length, removal) differs from `previous`.
    pub fn for_spec(spec: &SecretSpec, previous: Option<SecretRecord>) -> (SecretRecord, bool) {
        let fresh = previous.is_none();
        let mut record = previous.unwrap_or_else(|| SecretRecord {
            kind: spec.kind.kind(),
            outputs: Vec::new(),
            fernet_list_keep: None,
            versions: Versions::default(),
            rotation: None,
            rekey: None,
            removed: false,
        });
        let changed = record.follow_spec(spec) || fresh;
        (record, changed)
    }

    /// [`SecretRecord::for_spec`] on this record in place: what the policy decides now, with
    /// versions and any rotation in flight kept. Returns whether that differs from before.
    pub fn follow_spec(&mut self, spec: &SecretSpec) -> bool {
        let fernet_list_keep = match spec.kind {
            KindSpec::Fernet {
                keep,
                deliver: FernetDelivery::List,
            } => Some(keep),
            _ => None,
        };
        let same_outputs = self.outputs.len() == spec.output_parts().count()
            && self
                .outputs
                .iter()
                .zip(spec.output_parts())
                .all(|(r, (name, part))| r.name == name && r.part == part);
        let changed = !same_outputs || self.fernet_list_keep != fernet_list_keep || self.removed;
        if !same_outputs {
            self.outputs = spec
                .output_parts()
                .map(|(name, part)| OutputRecord {
                    name: name.to_owned(),
                    part,
                })
                .collect();
        }
        self.kind = spec.kind.kind();
        self.fernet_list_keep = fernet_list_keep;
        if spec.rekey.is_none() {
            self.rekey = None;
        }
        self.removed = false;
        changed
    }

    /// The version labelled `label`.
    pub fn labelled(&self, label: Label) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.label == Some(label))
    }

    /// The current version.
    pub fn current(&self) -> Option<&VersionRecord> {
        self.labelled(Label::Current)
    }

    /// Version `number`.
    pub fn version(&self, number: u64) -> Option<&VersionRecord> {
        self.versions.iter().find(|v| v.number == number)
    }

    /// The number the next version gets.
    pub fn next_number(&self) -> u64 {
        self.versions.iter().map(|v| v.number).max().unwrap_or(0) + 1
    }

    /// The pending version, once its rotation has passed the deliver step.
    pub fn delivered_pending(&self) -> Option<&VersionRecord> {
        let rotation = self.rotation.as_ref().filter(|r| r.step >= Step::Promote)?;
        self.version(rotation.pending)
    }

    /// Versions consumers still accept, newest first: a delivered pending version, the current
    /// one, then older versions not yet retired (the previous one, and for fernet lists with
    /// `keep` above 2, older keys still inside the list).
    pub fn live_versions(&self) -> Vec<&VersionRecord> {
        let pending = self.delivered_pending().map(|v| v.number);
        let mut live: Vec<&VersionRecord> = self
            .versions
            .iter()
            .filter(|v| match v.label {
                Some(Label::Pending) => Some(v.number) == pending,
                Some(_) => true,
                None => v.retired.is_none(),
            })
            .collect();
        live.sort_by_key(|v| std::cmp::Reverse(v.number));
        live
    }

    /// The part of the secret delivered under an output, as consumers see it now.
    ///
    /// From a rotation's deliver step on, consumers get the pending value where overlap allows
    /// it: fernet lists lead with it (`new,old`, at most `keep` keys), a JWKS holds it beside
    /// the current and previous public keys (published before anything signs with it), and
    /// passwords, tokens, primary fernet keys and certificates switch to it. An RSA private key
    /// and its public PEM switch only at promote.
    ///
    /// Returns the newest version number the value carries, and the value.
    pub fn delivered(&self, part: Part) -> Option<(u64, Value)> {
        // A first version made through a target has no current one until its promote.
        let current = self.current().or_else(|| self.delivered_pending())?;
        let newest = self.delivered_pending().unwrap_or(current);
        let of = |v: &VersionRecord| Some((v.number, Self::version_value(v, part)?));
        match (part, &current.material) {
            (Part::Login, _) => of(newest),
            (Part::Main, Material::Text { .. }) => match self.fernet_list_keep {
                Some(keep) => {
                    let live = self.live_versions();
                    let keys: Vec<&str> = live
                        .iter()
                        .filter_map(|v| match &v.material {
                            Material::Text { value } => Some(value.expose_secret()),
                            _ => None,
                        })
                        .take(keep)
                        .collect();
                    let list = SecretString::new(keys.join(","));
                    Some((live.first()?.number, Value::Secret(list)))
                }
                None => of(newest),
            },
            (Part::Main | Part::PublicPem, Material::Rsa(_)) => of(current),
            (Part::Jwks, Material::Rsa(_)) => {
                let live = self.live_versions();
                let jwks = rsa::jwks(live.iter().filter_map(|v| match &v.material {
                    Material::Rsa(pair) => Some(&pair.jwk),
                    _ => None,
                }));
                Some((live.first()?.number, Value::Public(jwks)))
            }
            (Part::Main | Part::TlsKey, Material::Tls(_)) => of(newest),
            _ => None,
        }
    }

    /// The part of one version's material under an output, as that version alone has it.
    pub fn version_value(version: &VersionRecord, part: Part) -> Option<Value> {
        match (part, &version.material) {
            (Part::Main, Material::Text { value }) => Some(Value::Secret(value.duplicate())),
            (Part::Main, Material::Rsa(pair)) => Some(Value::Secret(pair.private_pem.duplicate())),
            (Part::PublicPem, Material::Rsa(pair)) => Some(Value::Public(pair.public_pem.clone())),
            (Part::Jwks, Material::Rsa(pair)) => Some(Value::Public(rsa::jwks([&pair.jwk]))),
            (Part::Main, Material::Tls(cert)) => Some(Value::Public(cert.cert_pem.clone())),
            (Part::TlsKey, Material::Tls(cert)) => Some(Value::Secret(cert.key_pem.duplicate())),
            (Part::Login, _) => version.login.clone().map(Value::Public),
            _ => None,
        }
    }
}

impl StoreData {
    /// Finds the secret delivered under `selector`: `NAME` (any stack; must be unambiguous) or
    /// `stack/NAME`. Returns the stack, the secret and the output.
    pub fn find_output(
        &self,
        selector: &str,
    ) -> Result<(&str, &str, &SecretRecord, &OutputRecord), LookupError> {
        let (stack_filter, name) = match selector.split_once('/') {
            Some((stack, name)) => (Some(stack), name),
            None => (None, selector),
        };
        let mut found = Vec::new();
        for (stack_name, stack) in &self.stacks {
            if stack_filter.is_some_and(|s| s != stack_name) {
                continue;
            }
            for (secret_name, record) in &stack.secrets {
                if let Some(output) = record.outputs.iter().find(|o| o.name == name) {
                    found.push((stack_name.as_str(), secret_name.as_str(), record, output));
                }
            }
        }
        match found.len() {
            0 => Err(LookupError::NotFound(selector.to_owned())),
            1 => Ok(found.remove(0)),
            _ => Err(LookupError::Ambiguous {
                name: name.to_owned(),
                stacks: found.iter().map(|f| f.0.to_owned()).collect(),
            }),
        }
    }
}

/// Why a name did not resolve.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// No stack delivers that name.
    #[error("no secret named {0:?} in the store")]
    NotFound(String),
    /// Several stacks do.
    #[error("{name:?} exists in stacks {}; name one as STACK/{name}", stacks.join(", "))]
    Ambiguous {
        /// The name.
        name: String,
        /// The stacks that have it.
        stacks: Vec<String>,
    },
}
