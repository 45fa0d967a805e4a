//! What a restore would change in the store in place: each secret's values, compared by keyed
//! digest (a version number says nothing of the value a backup holds under it), and apart
//! from them every change of who can open the store (recipients), of the policy text, of where
//! values go (sinks), of what keyd runs (reload and rekey hooks) and of which outside systems
//! it changes (targets). Names, versions and settings only, never a value.

use std::collections::{BTreeMap, BTreeSet};

use aws_lc_rs::hmac;
use serde::Serialize;

use crate::material::Material;
use crate::policy::{AdminPassword, Policy, ReloadHook, SecretTarget, SinkSpec, TargetKind};
use crate::store::{StackRecord, StoreData, canonical_recipient};

/// A change, besides values, that a restore makes only when told to accept it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Who the store is encrypted to: a recipient added opens every later store.
    Recipients,
    /// The policy text of a stack, or a stack added or dropped.
    Policy,
    /// Where values are delivered.
    Sinks,
    /// The commands and signals keyd runs or sends (reload hooks, rekey hooks).
    Hooks,
    /// The outside systems whose passwords keyd changes.
    Targets,
}

impl Change {
    /// Every change, in the order they are shown.
    pub const ALL: [Change; 5] = [
        Change::Recipients,
        Change::Policy,
        Change::Sinks,
        Change::Hooks,
        Change::Targets,
    ];

    /// Its name in reports (and in keyctl's `--accept-NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Change::Recipients => "recipients",
            Change::Policy => "policy",
            Change::Sinks => "sinks",
            Change::Hooks => "hooks",
            Change::Targets => "targets",
        }
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a backup differs from the store in place.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StoreDiff {
    /// The generation of the store in place (0: none).
    pub current_generation: u64,
    /// The backup's generation.
    pub backup_generation: u64,
    /// Whether a readable store is in place (without one, nothing is compared but listed).
    pub store_in_place: bool,
    /// `stack/NAME vN` only in the backup.
    pub only_in_backup: Vec<String>,
    /// `stack/NAME vN` only in the store in place.
    pub only_in_store: Vec<String>,
    /// `stack/NAME: vA -> vB` (store in place -> backup) where the current versions differ.
    pub changed: Vec<String>,
    /// `stack/NAME vN`: a version both hold, with another value in the backup.
    pub value_differs: Vec<String>,
    /// Secrets with the same current version and the same values in both.
    pub same: usize,
    /// `+ RECIPIENT` (added by the backup) and `- RECIPIENT` (dropped).
    pub recipients: Vec<String>,
    /// Stacks whose policy differs, or that one side only has.
    pub policy: Vec<String>,
    /// Sinks added, dropped or changed.
    pub sinks: Vec<String>,
    /// Reload and rekey hooks added, dropped or changed.
    pub hooks: Vec<String>,
    /// Targets (and secrets' targets) added, dropped or changed.
    pub targets: Vec<String>,
}

impl StoreDiff {
    /// The lines of one kind of change.
    pub fn of(&self, change: Change) -> &[String] {
        match change {
            Change::Recipients => &self.recipients,
            Change::Policy => &self.policy,
            Change::Sinks => &self.sinks,
            Change::Hooks => &self.hooks,
            Change::Targets => &self.targets,
        }
    }

    /// The kinds of change this restore makes, besides values.
    pub fn changes(&self) -> Vec<Change> {
        Change::ALL
            .into_iter()
            .filter(|c| !self.of(*c).is_empty())
            .collect()
    }
}

/// Compares a backup with the store in place (`None`: there is none, or it cannot be read).
/// `own` is the recipient of this home's identity, which both are encrypted to.
pub fn diff(current: Option<&StoreData>, backup: &StoreData, own: Option<&str>) -> StoreDiff {
    let empty = StoreData::default();
    let ours = current.unwrap_or(&empty);
    let mut d = StoreDiff {
        current_generation: current.map_or(0, |c| c.generation),
        backup_generation: backup.generation,
        store_in_place: current.is_some(),
        ..StoreDiff::default()
    };
    let digests = ValueDigests::new();
    compare_values(&mut d, ours, backup, &digests);
    d.recipients = compare_recipients(ours, backup, own);
    let stacks: BTreeSet<&String> = ours.stacks.keys().chain(backup.stacks.keys()).collect();
    for stack in stacks {
        let (a, b) = (ours.stacks.get(stack), backup.stacks.get(stack));
        if let Some(line) = compare_policy_text(stack, a, b) {
            d.policy.push(line);
        }
        d.sinks.extend(compare(stack, &sinks_of(a), &sinks_of(b)));
        let (pa, pb) = (
            settings_of(stack, a, &digests),
            settings_of(stack, b, &digests),
        );
        d.hooks.extend(compare(stack, &pa.hooks, &pb.hooks));
        d.targets.extend(compare(stack, &pa.targets, &pb.targets));
    }
    d
}

/// Keyed digests of values: the key is random and lives as long as one comparison, so a
/// digest tells nothing outside it (not even to someone holding a guess of the value).
struct ValueDigests(hmac::Key);

impl ValueDigests {
    fn new() -> Self {
        let mut key = zeroize::Zeroizing::new([0u8; 32]);
        crate::secret::fill_random(&mut key[..]);
        ValueDigests(hmac::Key::new(hmac::HMAC_SHA256, &key[..]))
    }

    /// A short tag of text that may hold a password (a target's URL options): tells two texts
    /// apart within this comparison and nothing about the text.
    fn tag_of(&self, text: &str) -> String {
        crate::secret::hex(&hmac::sign(&self.0, text.as_bytes()).as_ref()[..4])
    }

    /// The digest of every part of a version's material (the store's own serialisation of it,
    /// written straight into the MAC: no copy of the value is made).
    fn of(&self, material: &Material) -> [u8; 32] {
        // Not reached (the sink never fails); if it were, this digest matches no other
        // value's, so the version shows as differing.
        crate::secret::hmac_json(&self.0, material).unwrap_or([0xff; 32])
    }
}

/// One secret's current version number and the digest of each of its versions' values.
struct SecretValues {
    current: u64,
    versions: BTreeMap<u64, [u8; 32]>,
}

fn values_of(data: &StoreData, digests: &ValueDigests) -> BTreeMap<String, SecretValues> {
    data.stacks
        .iter()
        .flat_map(|(stack, rec)| {
            rec.secrets.iter().map(move |(n, s)| {
                let current = s
                    .current()
                    .map(|v| v.number)
                    .unwrap_or_else(|| s.next_number() - 1);
                let versions = s
                    .versions
                    .iter()
                    .map(|v| (v.number, digests.of(&v.material)))
                    .collect();
                (format!("{stack}/{n}"), SecretValues { current, versions })
            })
        })
        .collect()
}

fn compare_values(d: &mut StoreDiff, ours: &StoreData, backup: &StoreData, digests: &ValueDigests) {
    let (ours, theirs) = (values_of(ours, digests), values_of(backup, digests));
    for (name, t) in &theirs {
        let Some(o) = ours.get(name) else {
            d.only_in_backup.push(format!("{name} v{}", t.current));
            continue;
        };
        let differing: Vec<u64> = t
            .versions
            .iter()
            .filter(|(n, digest)| o.versions.get(n).is_some_and(|mine| mine != *digest))
            .map(|(n, _)| *n)
            .collect();
        if o.current != t.current {
            d.changed
                .push(format!("{name}: v{} -> v{}", o.current, t.current));
        } else if differing.is_empty() {
            d.same += 1;
        }
        d.value_differs
            .extend(differing.iter().map(|n| format!("{name} v{n}")));
    }
    for (name, o) in &ours {
        if !theirs.contains_key(name) {
            d.only_in_store.push(format!("{name} v{}", o.current));
        }
    }
}

/// Every recipient a store is written to: this home's own, then its list (as `store` writes).
fn recipients_of(data: &StoreData, own: Option<&str>) -> BTreeSet<String> {
    own.map(str::to_owned)
        .into_iter()
        .chain(data.recipients.iter().map(|r| canonical_recipient(r)))
        .collect()
}

fn compare_recipients(ours: &StoreData, backup: &StoreData, own: Option<&str>) -> Vec<String> {
    let (a, b) = (recipients_of(ours, own), recipients_of(backup, own));
    b.difference(&a)
        .map(|r| format!("+ {r}"))
        .chain(a.difference(&b).map(|r| format!("- {r}")))
        .collect()
}

fn compare_policy_text(
    stack: &str,
    a: Option<&StackRecord>,
    b: Option<&StackRecord>,
) -> Option<String> {
    match (a, b) {
        (None, Some(b)) => Some(format!(
            "{stack}: only in the backup ({})",
            b.policy_path.display()
        )),
        (Some(a), None) => Some(format!(
            "{stack}: only in the store in place, dropped by the restore ({})",
            a.policy_path.display()
        )),
        (Some(a), Some(b)) if a.policy_path != b.policy_path => Some(format!(
            "{stack}: the policy file {} -> {}",
            a.policy_path.display(),
            b.policy_path.display()
        )),
        (Some(a), Some(b)) if a.policy_source != b.policy_source => Some(format!(
            "{stack}: the text of {} differs",
            b.policy_path.display()
        )),
        _ => None,
    }
}

/// Lines for what differs between two descriptions of the same things (by what they are).
fn compare(
    stack: &str,
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) -> Vec<String> {
    let keys: BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    keys.into_iter()
        .filter_map(|k| match (ours.get(k), theirs.get(k)) {
            (None, Some(t)) => Some(format!("{stack} {k}: {t} (only in the backup)")),
            (Some(o), None) => Some(format!(
                "{stack} {k}: {o} (only in the store in place, dropped)"
            )),
            (Some(o), Some(t)) if o != t => Some(format!("{stack} {k}: {o} -> {t}")),
            _ => None,
        })
        .collect()
}

/// A stack's sinks by kind, each described by its settings (reload hooks are hooks, apart).
fn sinks_of(stack: Option<&StackRecord>) -> BTreeMap<String, String> {
    let Some(stack) = stack else {
        return BTreeMap::new();
    };
    stack
        .sinks
        .iter()
        .map(|spec| {
            let described = match spec {
                SinkSpec::Files(f) => format!(
                    "dir {}, mode {:04o}, dir mode {:04o}, uid {}, gid {}",
                    f.dir.display(),
                    f.mode,
                    f.dir_mode,
                    f.uid.map_or("-".into(), |u| u.to_string()),
                    f.gid.map_or("-".into(), |g| g.to_string()),
                ),
                SinkSpec::EnvFile(e) => format!(
                    "{}, mode {:04o}, include {}",
                    e.path.display(),
                    e.mode,
                    e.include
                        .as_ref()
                        .map_or("every output".into(), |i| i.join(" "))
                ),
                // Settings that do not say where values go are compared through Debug.
                SinkSpec::Swarm(s) => format!("prefix {:?}, {s:?}", s.prefix),
                SinkSpec::Plugin(p) => format!("driver {:?}, {p:?}", p.driver),
            };
            (format!("{} sink", spec.kind_name()), described)
        })
        .collect()
}

/// A stack's hooks and targets, described, by where they are declared.
#[derive(Default)]
struct Settings {
    hooks: BTreeMap<String, String>,
    targets: BTreeMap<String, String>,
}

fn settings_of(stack_name: &str, stack: Option<&StackRecord>, digests: &ValueDigests) -> Settings {
    let mut s = Settings::default();
    let Some(stack) = stack else {
        return s;
    };
    for spec in stack.sinks.iter() {
        if let SinkSpec::Files(f) = spec
            && let Some(reload) = &f.reload
        {
            s.hooks
                .insert("files sink reload".into(), describe_reload(reload));
        }
    }
    // Rekey hooks and targets are read from the policy text, as rotation reads them.
    match Policy::parse(&stack.policy_path, stack.policy_source.clone()) {
        Ok(policy) => {
            for secret in &policy.secrets {
                if let Some(hook) = &secret.rekey {
                    s.hooks.insert(
                        format!("{} rekey", secret.name),
                        format!("command {:?} (timeout {:?})", hook.argv, hook.timeout),
                    );
                }
                if let Some(target) = &secret.target {
                    s.targets
                        .insert(secret.name.clone(), describe_secret_target(target));
                }
            }
            for target in &policy.targets {
                s.targets.insert(
                    format!("target {}", target.name),
                    describe_target(target, digests),
                );
            }
        }
        Err(_) => {
            // Tagged with the text, so two texts that do not parse are told apart.
            let unread = format!(
                "the policy text of {stack_name} (#{}) does not parse: its hooks and targets cannot be told",
                digests.tag_of(&stack.policy_source)
            );
            s.hooks.insert("policy".into(), unread.clone());
            s.targets.insert("policy".into(), unread);
        }
    }
    s
}

fn describe_reload(hook: &ReloadHook) -> String {
    match hook {
        ReloadHook::Signal { signal, pid_file } => format!(
            "signal {} to the pid in {}",
            signal.as_str(),
            pid_file.display()
        ),
        ReloadHook::Command { argv, timeout } => {
            format!("command {argv:?} (timeout {timeout:?})")
        }
    }
}

fn describe_target(t: &crate::policy::TargetSpec, digests: &ValueDigests) -> String {
    let kind = match &t.kind {
        TargetKind::Postgres { pgbouncer: None } => "postgres".to_owned(),
        TargetKind::Postgres {
            pgbouncer: Some(pool),
        } => format!("postgres (roles also to pgbouncer {pool})"),
        TargetKind::Pgbouncer { auth_file } => {
            format!("pgbouncer (auth_file {})", auth_file.display())
        }
        TargetKind::Mysql => "mysql".to_owned(),
        TargetKind::Rabbitmq { amqp } => {
            format!(
                "rabbitmq (logins tested at {})",
                amqp.split('?').next().unwrap_or_default()
            )
        }
        TargetKind::Redis { user, replicas } => {
            format!("redis as {user} (replicas {})", replicas.join(" "))
        }
    };
    let password = match &t.password {
        AdminPassword::None => "none".to_owned(),
        AdminPassword::Secret(s) => format!("secret {s}"),
        AdminPassword::File(p) => format!("file {}", p.display()),
    };
    // The URL without its query, which could carry a password.
    let url = t.url.split('?').next().unwrap_or_default();
    format!(
        "{kind} {url}, admin password from {password}, timeout {:?}{}{}",
        t.timeout,
        if t.allow_insecure_auth {
            ", insecure authentication allowed"
        } else {
            ""
        },
        if url.len() == t.url.len() {
            String::new()
        } else {
            format!(", options #{}", digests.tag_of(&t.url))
        }
    )
}

fn describe_secret_target(t: &SecretTarget) -> String {
    match t {
        SecretTarget::Postgres {
            target,
            role,
            strategy,
            user_secret,
            group,
        } => format!(
            "target {target}, role {role} ({strategy:?}, group {group}{})",
            user_secret
                .as_ref()
                .map_or(String::new(), |u| format!(", login in {u}"))
        ),
        SecretTarget::Mysql {
            target,
            user,
            hosts,
            strategy,
            user_secret,
        } => format!(
            "target {target}, user {user} at {} ({strategy:?}{})",
            hosts.join(" "),
            user_secret
                .as_ref()
                .map_or(String::new(), |u| format!(", login in {u}"))
        ),
        SecretTarget::Rabbitmq {
            target,
            user,
            vhost,
            strategy,
            user_secret,
        } => format!(
            "target {target}, user {user} on vhost {vhost} ({strategy:?}{})",
            user_secret
                .as_ref()
                .map_or(String::new(), |u| format!(", login in {u}"))
        ),
        SecretTarget::Redis {
            target,
            user,
            acl,
            mode,
        } => format!("target {target}, user {user} ({mode:?}, acl {acl:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of stack `app` with `policy` as its policy text and DB_PASSWORD at version 1
    /// holding `value`.
    fn store(policy: &str, value: &str) -> StoreData {
        let text = serde_json::json!({
            "format": 1,
            "generation": 3,
            "stacks": {"app": {
                "policy_path": "app.toml",
                "policy_source": policy,
                "applied_at": 1,
                "sinks": {"files": null, "envfile": null},
                "secrets": {"DB_PASSWORD": {
                    "kind": "password",
                    "outputs": [{"name": "DB_PASSWORD", "part": "main"}],
                    "versions": [{"number": 1, "label": "current", "created": 1,
                        "params": "", "material": {"type": "text", "value": value}}]
                }}
            }}
        });
        serde_json::from_value(text).unwrap()
    }

    const POLICY: &str = "[stack]\nname = \"app\"\n\n\
        [targets.db]\ntype = \"postgres\"\nurl = \"postgres://admin@127.0.0.1:5432/app\"\n\n\
        [secrets.DB_PASSWORD]\nkind = \"password\"\n\
        target = { name = \"db\", role = \"app\" }\n";

    #[test]
    fn a_target_moved_to_another_server_and_a_value_at_the_same_version_are_both_told() {
        let ours = store(POLICY, "hunter2-ours");
        let moved = POLICY
            .replace("127.0.0.1:5432", "attacker.example:5432")
            .replace("role = \"app\"", "role = \"postgres\"");
        let theirs = store(&moved, "hunter2-theirs");
        let d = diff(Some(&ours), &theirs, None);
        assert_eq!(d.value_differs, ["app/DB_PASSWORD v1"]);
        assert!(d.changed.is_empty() && d.same == 0, "{d:?}");
        assert_eq!(d.changes(), [Change::Policy, Change::Targets], "{d:?}");
        let targets = d.targets.join("\n");
        assert!(
            targets.contains("target db: postgres postgres://admin@127.0.0.1:5432/app")
                && targets.contains("-> postgres postgres://admin@attacker.example:5432/app"),
            "{targets}"
        );
        assert!(targets.contains("role app") && targets.contains("role postgres"));
        assert!(!format!("{d:?}").contains("hunter2"), "{d:?}");

        // The same store: nothing differs.
        let same = diff(Some(&ours), &store(POLICY, "hunter2-ours"), None);
        assert_eq!(same.same, 1);
        assert!(same.value_differs.is_empty() && same.changes().is_empty());
    }

    #[test]
    fn a_target_url_query_is_compared_but_never_shown() {
        let with = |q: &str| POLICY.replace("5432/app", &format!("5432/app?{q}"));
        let ours = store(&with("application_name=hunter2a"), "v");
        let theirs = store(&with("application_name=hunter2b"), "v");
        let d = diff(Some(&ours), &theirs, None);
        assert_eq!(d.targets.len(), 1, "{d:?}");
        assert!(d.targets[0].contains("options #"), "{d:?}");
        assert!(!format!("{d:?}").contains("hunter2"), "{d:?}");
    }

    #[test]
    fn policy_texts_that_do_not_parse_count_as_changed_hooks_and_targets() {
        let ours = store("[stack]\nname = 1\n", "v");
        let theirs = store("[stack]\nname = 2\n", "v");
        let d = diff(Some(&ours), &theirs, None);
        assert_eq!(
            d.changes(),
            [Change::Policy, Change::Hooks, Change::Targets],
            "{d:?}"
        );
    }

    #[test]
    fn recipients_added_and_dropped_are_told_apart_from_this_homes_own() {
        let mut ours = store(POLICY, "v");
        let mut theirs = store(POLICY, "v");
        ours.recipients = vec!["age1own".into(), "ssh-ed25519 AAAAkept comment".into()];
        theirs.recipients = vec!["ssh-ed25519 AAAAkept".into(), "age1attacker".into()];
        let d = diff(Some(&ours), &theirs, Some("age1own"));
        assert_eq!(d.recipients, ["+ age1attacker"]);
        assert_eq!(d.changes(), [Change::Recipients]);
    }
}
