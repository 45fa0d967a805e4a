//! What the store holds: per stack, the policy and sinks as last applied, and per secret every
//! version with its number, label and timestamps. Versions are numbered from 1 and never reused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::material::{Material, rsa};
use crate::policy::{FernetDelivery, Kind, KindSpec, Part, SecretSpec, Sinks};
use crate::secret::{SecretString, Value};

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

/// What sinks wrote, by a key each sink chooses (`files:NAME`, `envfile`): a map read through
/// `Deref`, written only through [`Ledger::insert`] and [`Ledger::remove`], which note whether
/// they changed it, so a pass can tell whether its records need saving without a copy of them
/// from before (10,000 entries at scale).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ledger {
    entries: BTreeMap<String, Stamp>,
    /// Whether an insert or remove changed an entry since the last [`Ledger::take_changed`]
    /// (never stored).
    #[serde(skip)]
    changed: bool,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `stamp` under `key`.
    pub fn insert(&mut self, key: String, stamp: Stamp) {
        match self.entries.get_mut(key.as_str()) {
            Some(old) if *old == stamp => {}
            Some(old) => {
                *old = stamp;
                self.changed = true;
            }
            None => {
                self.entries.insert(key, stamp);
                self.changed = true;
            }
        }
    }

    /// Removes the entry under `key`, if any.
    pub fn remove(&mut self, key: &str) {
        self.changed |= self.entries.remove(key).is_some();
    }

    /// Whether it has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether an entry changed since the last call, and starts over.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}

impl FromIterator<(String, Stamp)> for Ledger {
    fn from_iter<I: IntoIterator<Item = (String, Stamp)>>(entries: I) -> Self {
        Ledger {
            entries: entries.into_iter().collect(),
            changed: false,
        }
    }
}

impl std::ops::Deref for Ledger {
    type Target = BTreeMap<String, Stamp>;
    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

/// Ledgers are equal when their entries are (whatever each noted as changed).
impl PartialEq for Ledger {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

/// What the sinks of one stack have recorded, as a sink is given it: the files' ledger and
/// the Swarm sink's record.
pub struct Books<'a> {
    /// Files written (files and envfile sinks).
    pub ledger: &'a mut Ledger,
    /// Swarm secrets published.
    pub swarm: &'a mut SwarmLedger,
}

impl StackRecord {
    /// The sinks' records of this stack.
    pub fn books(&mut self) -> Books<'_> {
        Books {
            ledger: &mut self.ledger,
            swarm: &mut self.swarm,
        }
    }
}

/// The Swarm secrets keyd published for a stack, by output name. Swarm secrets are immutable:
/// every new value of an output is a new secret (`NAME`, then `NAME_v<version>`), and the old
/// ones are removed once nothing uses them.
#[derive(Debug, Serialize, Deserialize)]
pub struct SwarmLedger {
    /// The key of the keyed digest each secret carries in its `keyd.digest` label, so keyd
    /// recognises a secret it made (after a crash, before this record was saved) without a
    /// plain hash of the value where every Docker user can read it. Empty until first used.
    #[serde(with = "crate::secret::stored", default = "empty_secret")]
    pub key: SecretString,
    /// By output name.
    pub outputs: BTreeMap<String, SwarmOutput>,
    /// The plugin sink: the keyed digest of each output's value when the services using it
    /// last fetched it (a change restarts their tasks).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub served: BTreeMap<String, String>,
}

fn empty_secret() -> SecretString {
    SecretString::new(String::new())
}

impl Default for SwarmLedger {
    fn default() -> Self {
        SwarmLedger {
            key: empty_secret(),
            outputs: BTreeMap::new(),
            served: BTreeMap::new(),
        }
    }
}

impl SwarmLedger {
    /// Whether nothing was ever published.
    pub fn is_empty(&self) -> bool {
        self.outputs.is_empty() && self.served.is_empty()
    }
}

/// One output's Swarm secrets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmOutput {
    /// The name of the secret holding the output's value now.
    pub current: String,
    /// Every secret published for it and not removed yet, oldest first.
    pub published: Vec<SwarmSecret>,
}

/// One Swarm secret keyd made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmSecret {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: String,
    /// The newest version its value carries.
    pub version: u64,
    /// The keyed digest of its value (also its `keyd.digest` label).
    pub digest: String,
}

/// What a sink knows of an output it wrote: the file's identity and metadata right after the
/// write, and a SHA-256 of the content (inside the encrypted store, beside the values
/// themselves). An output whose metadata still matches holds exactly what was written; any
/// change by hand (edit, chmod, chown, replace, delete) changes one of these. Stored as a JSON
/// array in field order (one per delivered file, so it is kept short); `shown` is a tenth
/// element when known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    /// Device and inode.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since 1970 (saturating: an i64 holds years 1677 to 2262).
    pub mtime_ns: i64,
    /// Status change time, nanoseconds (changed by every write, chmod, chown or rename).
    pub ctime_ns: i64,
    /// Mode bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// SHA-256 of the content (its first 128 bits).
    pub digest: Digest,
    /// For an output with a file of its own (files sink): the generation its name showed when
    /// this was recorded (`NAME -> ..keyd/NAME@N`). Trusted only while the directory is as a
    /// pass that left it tidy recorded it (no name replaced since).
    pub shown: Option<u64>,
}

/// The first 128 bits of the SHA-256 of what a sink wrote, stored as 32 hex digits (inline, no
/// allocation: a ledger holds one per delivered file). Unknown (stored as `""`) for a stamp of
/// a directory, and for a digest in any other form (an early keyd stored all 256 bits): that
/// matches no content, so the file is read once and stamped anew.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Digest(Option<[u8; 16]>);

impl Digest {
    /// The digest whose bytes are `bytes`.
    pub fn new(bytes: [u8; 16]) -> Self {
        Digest(Some(bytes))
    }

    /// As stored: 32 lowercase hex digits, or nothing when unknown.
    pub fn hex(&self) -> String {
        self.0.map_or_else(String::new, |b| crate::secret::hex(&b))
    }

    /// Read as stored (see the type's comment for anything but 32 hex digits).
    pub fn parse(text: &str) -> Self {
        let digit = |c: u8| char::from(c).to_digit(16);
        let mut bytes = [0u8; 16];
        if text.len() != 32 {
            return Digest(None);
        }
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => *byte = (hi * 16 + lo) as u8,
                _ => return Digest(None),
            }
        }
        Digest(Some(bytes))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = [0u8; 32];
        match self.0 {
            Some(bytes) => s.serialize_str(crate::secret::hex_into(&bytes, &mut text)),
            None => s.serialize_str(""),
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Digest;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a digest in hex")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Digest, E> {
                Ok(Digest::parse(text))
            }
        }
        d.deserialize_str(Text)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Stamp;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of 9 or 10 stamp fields")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Stamp, A::Error> {
                let mut n = 0;
                let mut next = || {
                    n += 1;
                    n
                };
                macro_rules! field {
                    () => {{
                        let i = next();
                        seq.next_element()?
                            .ok_or_else(|| serde::de::Error::invalid_length(i - 1, &self))?
                    }};
                }
                Ok(Stamp {
                    dev: field!(),
                    ino: field!(),
                    size: field!(),
                    mtime_ns: field!(),
                    ctime_ns: field!(),
                    mode: field!(),
                    uid: field!(),
                    gid: field!(),
                    digest: field!(),
                    shown: seq.next_element()?,
                })
            }
        }
        d.deserialize_seq(Fields)
    }
}

impl Serialize for Stamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple as _;
        let mut t = s.serialize_tuple(9 + usize::from(self.shown.is_some()))?;
        t.serialize_element(&self.dev)?;
        t.serialize_element(&self.ino)?;
        t.serialize_element(&self.size)?;
        t.serialize_element(&self.mtime_ns)?;
        t.serialize_element(&self.ctime_ns)?;
        t.serialize_element(&self.mode)?;
        t.serialize_element(&self.uid)?;
        t.serialize_element(&self.gid)?;
        t.serialize_element(&self.digest)?;
        if let Some(n) = self.shown {
            t.serialize_element(&n)?;
        }
        t.end()
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

#[cfg(test)]
mod tests {
    use super::{Digest, Stamp};

    #[test]
    fn a_stamp_reads_with_or_without_the_generation_its_name_showed() {
        const D: &str = "ba7816bf8f01cfea414140de5dae2223";
        let older: Stamp = serde_json::from_str(&format!(r#"[1,2,3,4,5,256,0,0,"{D}"]"#)).unwrap();
        assert_eq!((older.ino, older.mode, older.shown), (2, 256, None));
        assert_eq!(
            serde_json::to_string(&older).unwrap(),
            format!(r#"[1,2,3,4,5,256,0,0,"{D}"]"#)
        );
        let newer: Stamp =
            serde_json::from_str(&format!(r#"[1,2,3,4,5,256,0,0,"{D}",7]"#)).unwrap();
        assert_eq!(newer.shown, Some(7));
        assert_eq!(
            serde_json::to_string(&newer).unwrap(),
            format!(r#"[1,2,3,4,5,256,0,0,"{D}",7]"#)
        );
        let err = serde_json::from_str::<Stamp>(r#"[1,2,3,4,5,256,0,0]"#).unwrap_err();
        assert!(err.to_string().contains("invalid length 8"), "{err}");
    }

    #[test]
    fn the_ledger_notes_a_change_only_when_an_entry_differs() {
        let stamp = |ino| Stamp {
            ino,
            ..Default::default()
        };
        let mut ledger = super::Ledger::new();
        ledger.insert("files:A".into(), stamp(1));
        assert!(ledger.take_changed(), "a new entry");
        assert!(!ledger.take_changed(), "taken");
        ledger.insert("files:A".into(), stamp(1));
        ledger.remove("files:B");
        assert!(
            !ledger.take_changed(),
            "the same stamp again, nothing to remove"
        );
        ledger.insert("files:A".into(), stamp(2));
        assert!(ledger.take_changed(), "another stamp");
        ledger.remove("files:A");
        assert!(ledger.take_changed() && ledger.is_empty(), "removed");
        // Stored as the map alone (what it noted is not).
        let ledger: super::Ledger = [("files:A".to_owned(), stamp(3))].into_iter().collect();
        let text = serde_json::to_string(&ledger).unwrap();
        assert!(text.starts_with(r#"{"files:A":[0,3,"#), "{text}");
        assert_eq!(
            serde_json::from_str::<super::Ledger>(&text).unwrap(),
            ledger
        );
    }

    #[test]
    fn a_digest_in_another_form_than_32_hex_digits_reads_as_unknown_and_matches_nothing() {
        let d = Digest::parse("BA7816BF8F01CFEA414140DE5DAE2223");
        assert_eq!(d.hex(), "ba7816bf8f01cfea414140de5dae2223");
        // All 256 bits (an early keyd's), empty (a directory's stamp), or not hex: unknown,
        // equal to no digest of any content, and stored as "".
        let full = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        for text in [full, "", "zz7816bf8f01cfea414140de5dae2223", "é"] {
            let unknown = Digest::parse(text);
            assert_eq!(unknown, Digest::default(), "{text}");
            assert_ne!(unknown, d);
            assert_eq!(serde_json::to_string(&unknown).unwrap(), r#""""#);
        }
    }
}
