//! Rotation: one crash-safe state machine for every kind. create → set → test → deliver →
//! promote, then retire after the grace period. The rotation in flight is a journal in the
//! store (`SecretRecord::rotation`), persisted before each step acts; every step is idempotent,
//! and every resume begins by re-delivering the persisted state, so a process killed anywhere
//! finishes exactly one rotation on its next start and never loses the current value.

mod audit;
pub mod schedule;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use audit::{AuditLog, line_id, save_logged};

use crate::clock::{Clock, backoff, unix_now};
use crate::deliver;
use crate::derive::{Change, derive};
use crate::error::Error;
use crate::material::{Material, fernet};
use crate::policy::{AdminPassword, Kind, KindSpec, Policy, SecretTarget, TargetKind};
use crate::secret::SecretString;
use crate::sinks::DeliveryReport;
use crate::store::SecretRecord;
use crate::store::{
    AuditLine, Label, LockedStore, RekeyOwed, Rotation, Step, StoreData, VersionRecord,
};
use crate::targets::postgres::PostgresTarget;
use crate::targets::redis::RedisTarget;
use crate::targets::{Credential, Target};

/// The grace period of a secret whose policy sets none.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);

/// What happened to one secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Outcome {
    /// The stack.
    pub stack: String,
    /// The secret.
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// Current version before.
    pub from_version: u64,
    /// Current version after (the pending one while a rotation waits or failed).
    pub to_version: u64,
    /// What happened.
    pub result: OutcomeKind,
    /// The step a rotation stopped at, if it did not finish.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<Step>,
    /// Details (an error without values, when a rotation will continue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Kinds of outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A new version was made and promoted.
    Rotated,
    /// A rotation in flight (left by a stopped process) was finished.
    Resumed,
    /// Another process rotated it while this one waited for the lock: no second rotation.
    AlreadyRotated,
    /// Delivered and waiting for `publish_ahead` before promote.
    Waiting,
    /// A step failed; the rotation stays at that step and will be retried.
    Failed,
    /// The previous version was retired.
    Retired,
    /// Nothing to retire.
    NothingToRetire,
    /// The rekey hook failed: the new version is in place, the previous one stays until the
    /// hook succeeds (retried with backoff).
    RekeyFailed,
}

/// What a rotation, retire or scheduler pass did.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RotationReport {
    /// One entry per secret acted on.
    pub outcomes: Vec<Outcome>,
    /// Deliveries made.
    pub deliveries: Vec<DeliveryReport>,
}

/// Where a process stops on purpose (`KEYD_PAUSE_AFTER=create,set,…`): a testing aid that
/// lets the crash tests SIGKILL the process exactly at a step boundary, and the concurrency
/// tests hold a rotation while another process queues behind it. It announces the pause on
/// stderr, then waits for a line (or end of input) on stdin. Compiled only with the
/// `test-hooks` feature (which the workspace's test crate turns on): a release build ignores
/// the variable.
#[cfg(feature = "test-hooks")]
fn pause_point(point: &str) {
    if let Ok(points) = std::env::var("KEYD_PAUSE_AFTER")
        && points.split(',').any(|p| p == point)
    {
        eprintln!("keyd: paused after {point}");
        let _ = std::io::stdin().read_line(&mut String::new());
    }
}

#[cfg(not(feature = "test-hooks"))]
fn pause_point(_point: &str) {}

/// Panics on purpose while delivering a step of the secret named by `KEYD_PANIC_IN`, after the
/// step was persisted: a testing aid for the containment of a panic in one secret's work.
/// Compiled only with the `test-hooks` feature, like [`pause_point`].
#[cfg(feature = "test-hooks")]
fn panic_point(name: &str) {
    if std::env::var("KEYD_PANIC_IN").is_ok_and(|n| n == name) {
        panic!("KEYD_PANIC_IN={name}: a panic on purpose while delivering");
    }
}

#[cfg(not(feature = "test-hooks"))]
fn panic_point(_name: &str) {}

/// The policy of the first stack a decrypted store holds (its JSON text), parsed, beside the
/// store's own parse: a policy that does not parse, and every other stack's, is left to
/// [`Engine::policy`], which parses it from the loaded store when it is needed (and reports
/// the error there).
fn stored_policies(found: Option<(String, std::path::PathBuf, String)>) -> HashMap<String, Policy> {
    found
        .and_then(|(stack, path, source)| Some((stack, Policy::parse(&path, source).ok()?)))
        .into_iter()
        .collect()
}

/// The name, policy path and policy text of the first stack in a store's JSON text. keyd
/// writes them first in each stack, so reading stops there rather than going through the
/// whole store (megabytes at 10,000 secrets); in any other order they are still found.
fn first_policy(text: &[u8]) -> Option<(String, std::path::PathBuf, String)> {
    use serde::de::{DeserializeSeed, Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};

    type Found = Option<(String, std::path::PathBuf, String)>;
    const STOP: &str = "found";

    /// The store's top level: `stacks`, the others skipped.
    struct Top<'a>(&'a mut Found);
    /// The stacks: the first one's name.
    struct Stacks<'a>(&'a mut Found);
    /// One stack: its policy path and text, then stop.
    struct Stack<'a>(&'a mut Found, String);

    impl<'de> DeserializeSeed<'de> for Top<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Top<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a keyd store")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                if key == "stacks" {
                    map.next_value_seed(Stacks(&mut *self.0))?;
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Stacks<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Stacks<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the stacks of a keyd store")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            if let Some(name) = map.next_key::<String>()? {
                map.next_value_seed(Stack(self.0, name))?;
            }
            Ok(())
        }
    }
    impl<'de> DeserializeSeed<'de> for Stack<'_> {
        type Value = ();
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Stack<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a stack of a keyd store")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let (mut path, mut source) = (None, None);
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    "policy_path" => path = Some(map.next_value()?),
                    "policy_source" => source = Some(map.next_value()?),
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                if path.is_some() && source.is_some() {
                    *self.0 = path.zip(source).map(|(p, s)| (self.1, p, s));
                    // Everything needed is read: the rest of the store is not.
                    return Err(A::Error::custom(STOP));
                }
            }
            Ok(())
        }
    }

    let mut found = None;
    let mut de = serde_json::Deserializer::from_slice(text);
    // Stops with the STOP error once the first stack's policy is read.
    let _ = Top(&mut found).deserialize(&mut de);
    found
}

/// One locked session on the store: the rotation engine.
pub(crate) struct Engine<'a> {
    lock: &'a LockedStore,
    pub(crate) data: StoreData,
    clock: &'a dyn Clock,
    by: String,
    audit: AuditLog,
    policies: HashMap<String, Policy>,
    pub(crate) report: RotationReport,
    /// Steps done in memory only (a rotation without a target: create, set, test), logged
    /// and marked by the next store write, which makes them durable.
    unsaved: Option<(String, String, u64)>,
}

impl<'a> Engine<'a> {
    pub(crate) fn new(
        lock: &'a LockedStore,
        clock: &'a dyn Clock,
        by: &str,
    ) -> Result<Self, Error> {
        let data = lock.load()?;
        Ok(Self::with_data(lock, data, clock, by))
    }

    /// [`Engine::new`] for work that will need the policies (rotations): the first stack's
    /// policy is parsed from the store's text on a second core while the store itself is
    /// parsed (at 10,000 secrets each is about a third of a rotation), not later, one after the
    /// other; another stack's is parsed from the loaded store when it is first needed.
    pub(crate) fn with_policies(
        lock: &'a LockedStore,
        clock: &'a dyn Clock,
        by: &str,
    ) -> Result<Self, Error> {
        let (data, policies) = lock.load_with(first_policy, stored_policies)?;
        let mut engine = Self::with_data(lock, data, clock, by);
        engine.policies = policies;
        Ok(engine)
    }

    /// An engine on `data`, which the caller loaded under `lock` (and may have changed).
    /// Audit lines the store still owes (a process killed between its store write and its log
    /// write) are appended first, unless the log holds them where they were written.
    pub(crate) fn with_data(
        lock: &'a LockedStore,
        mut data: StoreData,
        clock: &'a dyn Clock,
        by: &str,
    ) -> Self {
        let audit = AuditLog::new(lock.home().dir().join("audit.log"));
        audit.settle_owed(&mut data);
        Engine {
            audit,
            lock,
            data,
            clock,
            by: by.to_owned(),
            policies: HashMap::new(),
            report: RotationReport::default(),
            unsaved: None,
        }
    }

    /// The record of `stack/name` (the caller resolved both from the store it holds).
    fn record_mut(&mut self, stack: &str, name: &str) -> &mut SecretRecord {
        self.data
            .stacks
            .get_mut(stack)
            .and_then(|s| s.secrets.get_mut(name))
            .expect("the secret was resolved from this store")
    }

    fn policy(&mut self, stack: &str) -> Result<&Policy, Error> {
        if !self.policies.contains_key(stack) {
            let record = &self.data.stacks[stack];
            let policy = Policy::parse(&record.policy_path, record.policy_source.clone())?;
            self.policies.insert(stack.to_owned(), policy);
        }
        Ok(&self.policies[stack])
    }

    /// Writes the store; then logs the steps that were done in memory only, now durable.
    fn save(&mut self) -> Result<(), Error> {
        self.save_logged(Vec::new())
    }

    /// Writes the store with `lines` owed in it (after those of the steps done in memory
    /// only), then appends them to the audit log: each line is durable exactly when the state
    /// it records is (`audit.rs`).
    fn save_logged(&mut self, lines: Vec<AuditLine>) -> Result<(), Error> {
        let unsaved = self.unsaved.take();
        let mut owed = Vec::new();
        if let Some((stack, name, number)) = &unsaved {
            for step in ["create", "set", "test"] {
                owed.push(self.line(stack, name, *number, step, "ok", None));
            }
        }
        owed.extend(lines);
        if let Err(e) = audit::save_logged(&self.audit, self.lock, &mut self.data, owed) {
            self.unsaved = unsaved;
            return Err(e.into());
        }
        if unsaved.is_some() {
            for step in ["create", "set", "test"] {
                pause_point(step);
            }
        }
        Ok(())
    }

    /// Goes back to the store as last written (after a failure or a panic): lines it still
    /// owes are already in the log, or are appended now.
    fn reload(&mut self) -> Result<(), Error> {
        self.data = self.lock.load()?;
        self.audit.settle_owed(&mut self.data);
        self.unsaved = None;
        Ok(())
    }

    /// An audit line of this engine's, now.
    fn line(
        &self,
        stack: &str,
        secret: &str,
        version: u64,
        step: &str,
        outcome: &str,
        error: Option<&str>,
    ) -> AuditLine {
        AuditLine {
            time: crate::clock::format_time(self.clock.now()),
            stack: stack.to_owned(),
            secret: secret.to_owned(),
            version,
            step: step.to_owned(),
            outcome: outcome.to_owned(),
            by: self.by.clone(),
            error: error.map(str::to_owned),
            id: audit::line_id(),
        }
    }

    /// Appends an audit line of something the store does not record (a resume, a failure
    /// before anything was saved, a delivery made after its step was saved).
    fn log_now(&self, line: AuditLine) {
        self.audit.write_all(&[line]);
    }

    /// Re-derives templates of `stack` from what is delivered now, and returns the outputs
    /// whose values may have changed: those of `name` and of every template that changed.
    /// Persisting is the caller's.
    fn rederive(&mut self, stack: &str, name: &str) -> Result<HashSet<String>, Error> {
        let now = self.clock.now();
        self.policy(stack)?;
        // Disjoint fields: the cached policy is read while the store's records change.
        let record = self.data.stacks.get_mut(stack).expect("stack exists");
        let changes = derive(&self.policies[stack], &mut record.secrets, now);
        let changed = changes
            .into_iter()
            .filter(|(_, c)| *c != Change::Unchanged)
            .map(|(n, _)| n)
            .chain(std::iter::once(name.to_owned()));
        Ok(changed
            .filter_map(|n| record.secrets.get(&n))
            .flat_map(|r| r.outputs.iter().map(|o| o.name.clone()))
            .collect())
    }

    /// Delivers the persisted state of `stack`: every output (`changed = None`, unchanged
    /// files are left alone), or only the outputs a step changed.
    pub(crate) fn deliver(
        &mut self,
        stack: &str,
        changed: Option<&HashSet<String>>,
    ) -> Result<(), Error> {
        let record = self.data.stacks.get_mut(stack).expect("stack exists");
        let reports = deliver::deliver(record, changed, self.clock.now())?;
        for r in reports.into_iter().filter(|r| !r.written.is_empty()) {
            self.report.deliveries.push(r);
        }
        Ok(())
    }

    pub(crate) fn outcome(
        &mut self,
        stack: &str,
        name: &str,
        from: u64,
        result: OutcomeKind,
        message: Option<String>,
    ) {
        let record = &self.data.stacks[stack].secrets[name];
        let step = record.rotation.as_ref().map(|r| r.step);
        let to = record
            .rotation
            .as_ref()
            .map(|r| r.pending)
            .or_else(|| record.current().map(|v| v.number))
            .unwrap_or(0);
        self.report.outcomes.push(Outcome {
            stack: stack.to_owned(),
            name: name.to_owned(),
            kind: record.kind,
            from_version: from,
            to_version: to,
            result,
            step,
            message,
        });
    }

    /// Starts a rotation of `stack/name`: the create step. The pending version is persisted
    /// before anything else happens. A fernet list already holding `keep` live keys is
    /// refused unless `force`: the new key would push out one that was never retired, which
    /// data may still be encrypted with.
    pub(crate) fn start(&mut self, stack: &str, name: &str, force: bool) -> Result<(), Error> {
        let now = self.clock.now();
        let record = &self.data.stacks[stack].secrets[name];
        if let Some(keep) = record.fernet_list_keep
            && !force
        {
            let live = record.live_versions();
            if live.len() >= keep
                && let Some(oldest) = live.last()
            {
                return Err(Error::NotRotatable {
                    name: name.to_owned(),
                    reason: format!(
                        "its list already holds {keep} keys (keep = {keep}), so a new key would push out v{}, which was never retired and may still be needed to decrypt. Re-encrypt and run `keyctl retire {name}` first, raise `keep`, or rotate with --force",
                        oldest.number
                    ),
                });
            }
        }
        let spec = self
            .policy(stack)?
            .secret(name)
            .ok_or_else(|| Error::NotRotatable {
                name: name.to_owned(),
                reason: "it is no longer in the stack's policy".into(),
            })?
            .clone();
        if !spec.kind.kind().is_random() {
            return Err(Error::NotRotatable {
                name: name.to_owned(),
                reason: format!(
                    "{} values follow the policy: edit it and run `keyctl apply`",
                    spec.kind.kind()
                ),
            });
        }
        let material = spec.kind.generate()?;
        let by = self.by.clone();
        let record = self.record_mut(stack, name);
        let number = record.next_number();
        let target = self.target_for(stack, name)?;
        let login = match &target {
            Some(target) => {
                let current = self.data.stacks[stack].secrets[name]
                    .current()
                    .and_then(|v| v.login.clone());
                target.next_login(current.as_deref())
            }
            None => None,
        };
        let record = self.record_mut(stack, name);
        record.versions.push(VersionRecord {
            number,
            label: Some(Label::Pending),
            created: now,
            promoted: None,
            retired: None,
            params: spec.kind.params_text(),
            login,
            material,
        });
        record.rotation = Some(Rotation {
            pending: number,
            step: Step::Set,
            started: now,
            delivered_at: None,
            by,
            attempts: 0,
            last_error: None,
            retry_at: None,
        });
        // Without a target, set does nothing and test is a computation: both run in memory,
        // and the deliver step's write (which persists the pending value before any sink sees
        // it) is the rotation's first, so it costs two store writes fewer. A crash before that
        // write loses only a version nobody saw; the create, set and test lines are logged
        // once it is durable.
        let early = target.is_none() && {
            let record = &self.data.stacks[stack].secrets[name];
            let pending = record.version(number).expect("just pushed");
            prove(&pending.material, record.current().map(|v| &v.material)).is_ok()
        };
        if early {
            self.set_step(stack, name, Step::Deliver);
            self.unsaved = Some((stack.to_owned(), name.to_owned(), number));
            return Ok(());
        }
        let line = self.line(stack, name, number, "create", "ok", None);
        self.save_logged(vec![line])?;
        pause_point("create");
        Ok(())
    }

    /// Runs the rotation in flight of `stack/name` as far as it can go now.
    pub(crate) fn advance(
        &mut self,
        stack: &str,
        name: &str,
        from: u64,
        resumed: bool,
    ) -> Result<(), Error> {
        // A resumed rotation first re-delivers what was persisted: the step that was cut off
        // may have persisted a state its delivery never reached.
        if resumed {
            // Logged as the step it resumes, so the log reads as one walk through the steps.
            if let Some(r) = self.data.stacks[stack].secrets[name].rotation.clone() {
                self.log_now(self.line(
                    stack,
                    name,
                    r.pending,
                    &r.step.to_string(),
                    "resumed",
                    None,
                ));
            }
            self.deliver(stack, None)?;
        }
        loop {
            let record = &self.data.stacks[stack].secrets[name];
            let Some(rotation) = record.rotation.clone() else {
                let kind = if resumed {
                    OutcomeKind::Resumed
                } else {
                    OutcomeKind::Rotated
                };
                self.outcome(stack, name, from, kind, None);
                return Ok(());
            };
            let result = match rotation.step {
                Step::Set => self.step_set(stack, name, &rotation),
                Step::Test => self.step_test(stack, name, &rotation),
                Step::Deliver => self.step_deliver(stack, name, &rotation),
                Step::Promote => match self.step_promote(stack, name, &rotation)? {
                    true => Ok(()),
                    false => {
                        self.outcome(
                            stack,
                            name,
                            from,
                            OutcomeKind::Waiting,
                            Some("delivered; waiting for publish_ahead before promote".into()),
                        );
                        return Ok(());
                    }
                },
                Step::Finish => self.step_finish(stack, name, &rotation),
            };
            if let Err(e) = result {
                return self.fail_step(stack, name, from, e.to_string());
            }
        }
    }

    /// Records that the step in flight of `stack/name` failed with `message` (no values): the
    /// journal keeps the error and a retry time (persisted), then the audit line and outcome.
    fn fail_step(
        &mut self,
        stack: &str,
        name: &str,
        from: u64,
        message: String,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let record = self.record_mut(stack, name);
        let r = record.rotation.as_mut().expect("in flight");
        r.attempts += 1;
        r.last_error = Some(message.clone());
        r.retry_at = Some(now + backoff(r.attempts));
        let (pending, step) = (r.pending, r.step);
        let line = self.line(
            stack,
            name,
            pending,
            &step.to_string(),
            "failed",
            Some(&message),
        );
        self.save_logged(vec![line])?;
        self.outcome(stack, name, from, OutcomeKind::Failed, Some(message));
        Ok(())
    }

    /// Turns a panic caught in the work on `stack/name` into a failed rotation, so one
    /// secret's bug cannot stop the others. Memory may have been left half-changed, so the
    /// engine goes back to the store as last written (every step is persisted before it acts,
    /// and every step is idempotent). A rotation in flight there keeps the error in its
    /// journal and is retried after the usual backoff; one that never reached the store (a
    /// panic in create, or in a target-less rotation before its first write) is only logged
    /// and reported, as a failure of `step` (`create`, `retire`). Returns whether the failure
    /// was journaled. The panic's own message goes
    /// to keyd's log through the panic hook, not into the journal or the audit log, which
    /// must hold no values.
    /// Reports a failure of `stack/name` that no rotation journal records (it happened before
    /// anything was saved), after reloading the store as last saved so that nothing half done
    /// in memory is written by later work.
    pub(crate) fn fail_unjournaled(
        &mut self,
        stack: &str,
        name: &str,
        from: u64,
        step: &str,
        message: &str,
    ) -> Result<(), Error> {
        self.reload()?;
        self.report_unjournaled(stack, name, from, step, message);
        Ok(())
    }

    /// The audit line and outcome of a failure no journal records (the version is the one
    /// `step` would have made or acted on).
    fn report_unjournaled(
        &mut self,
        stack: &str,
        name: &str,
        from: u64,
        step: &str,
        message: &str,
    ) {
        let version = match step {
            "create" => self.data.stacks[stack].secrets[name].next_number(),
            _ => from,
        };
        self.log_now(self.line(stack, name, version, step, "failed", Some(message)));
        self.outcome(
            stack,
            name,
            from,
            OutcomeKind::Failed,
            Some(message.to_owned()),
        );
    }

    pub(crate) fn contain_panic(
        &mut self,
        stack: &str,
        name: &str,
        step: &str,
    ) -> Result<bool, Error> {
        self.reload()?;
        let record = &self.data.stacks[stack].secrets[name];
        let from = record.current().map_or(0, |v| v.number);
        match &record.rotation {
            Some(r) => {
                let message = format!(
                    "internal error: keyd panicked during the {} step (details in keyd's log); the rotation will be retried",
                    r.step
                );
                self.fail_step(stack, name, from, message)?;
                Ok(true)
            }
            None => {
                let message =
                    "internal error: keyd panicked (details in keyd's log); nothing was changed";
                self.report_unjournaled(stack, name, from, step, message);
                Ok(false)
            }
        }
    }

    fn set_step(&mut self, stack: &str, name: &str, step: Step) {
        let now = self.clock.now();
        let r = self
            .data
            .stacks
            .get_mut(stack)
            .and_then(|s| s.secrets.get_mut(name))
            .and_then(|s| s.rotation.as_mut())
            .expect("in flight");
        r.step = step;
        r.attempts = 0;
        r.last_error = None;
        r.retry_at = None;
        if step == Step::Promote {
            r.delivered_at = Some(now);
        }
    }

    /// Records a finished step: the journal moves to `next` (persisted), then the audit line.
    fn complete(
        &mut self,
        stack: &str,
        name: &str,
        pending: u64,
        done: &str,
        next: Step,
    ) -> Result<(), Error> {
        self.set_step(stack, name, next);
        let line = self.line(stack, name, pending, done, "ok", None);
        self.save_logged(vec![line])?;
        pause_point(done);
        Ok(())
    }

    fn step_set(&mut self, stack: &str, name: &str, rotation: &Rotation) -> Result<(), Error> {
        if let Some(target) = self.target_for(stack, name)? {
            // A first version made by apply has no login yet: it takes the target's first one.
            let record = self.record_mut(stack, name);
            let has_current = record.current().is_some();
            if let Some(v) = record
                .versions
                .iter_mut()
                .find(|v| v.number == rotation.pending)
                && v.login.is_none()
                && !has_current
            {
                v.login = target.next_login(None);
            }
            let record = &self.data.stacks[stack].secrets[name];
            let pending = record.version(rotation.pending).expect("pending version");
            let pending_cred = credential(pending).ok_or_else(|| Error::NotRotatable {
                name: name.to_owned(),
                reason: "a target needs a text value".into(),
            })?;
            // Probe first: after a crash between set and the journal, the target already has it.
            if !target.accepts(&pending_cred)? {
                let current = record.current().and_then(credential);
                target.set(&pending_cred, current.as_ref())?;
            }
        }
        self.complete(stack, name, rotation.pending, "set", Step::Test)
    }

    fn step_test(&mut self, stack: &str, name: &str, rotation: &Rotation) -> Result<(), Error> {
        let record = &self.data.stacks[stack].secrets[name];
        let pending = record
            .version(rotation.pending)
            .expect("pending version exists");
        prove(&pending.material, record.current().map(|v| &v.material)).map_err(|reason| {
            Error::TestFailed {
                name: name.to_owned(),
                reason,
            }
        })?;
        if let Some(target) = self.target_for(stack, name)?
            && let Some(cred) = self.data.stacks[stack].secrets[name]
                .version(rotation.pending)
                .and_then(credential)
        {
            target.test(&cred)?;
        }
        self.complete(stack, name, rotation.pending, "test", Step::Deliver)
    }

    /// Records a step that changes what consumers see: the journal moves to `next` and templates
    /// are re-derived in one persisted write, and only then are sinks written. A crash between
    /// the two is repaired by the re-delivery every resume begins with.
    fn publish(
        &mut self,
        stack: &str,
        name: &str,
        pending: u64,
        done: &str,
        next: Step,
    ) -> Result<(), Error> {
        self.set_step(stack, name, next);
        let changed = self.rederive(stack, name)?;
        self.persist_and_deliver(stack, name, pending, done, &changed)
    }

    /// The second half of [`Engine::publish`]: one store write, then the sinks.
    fn persist_and_deliver(
        &mut self,
        stack: &str,
        name: &str,
        pending: u64,
        done: &str,
        changed: &HashSet<String>,
    ) -> Result<(), Error> {
        self.save()?;
        pause_point(&format!("{done}-persisted"));
        panic_point(name);
        self.deliver(stack, Some(changed))?;
        self.log_now(self.line(stack, name, pending, done, "ok", None));
        pause_point(done);
        Ok(())
    }

    /// What the outputs of `stack/name` deliver now.
    fn delivered_now(&self, stack: &str, name: &str) -> Vec<crate::sinks::Delivery> {
        deliver::deliveries_of(&self.data.stacks[stack], |n| n == name)
    }

    fn step_deliver(&mut self, stack: &str, name: &str, rotation: &Rotation) -> Result<(), Error> {
        // The pending value becomes visible to sinks (see SecretRecord::delivered) once the
        // step is Promote; templates using it are re-derived in the same write.
        self.publish(stack, name, rotation.pending, "deliver", Step::Promote)
    }

    /// Promotes when `publish_ahead` has passed; `false` while waiting.
    fn step_promote(
        &mut self,
        stack: &str,
        name: &str,
        rotation: &Rotation,
    ) -> Result<bool, Error> {
        let now = self.clock.now();
        let ahead = match &self.policy(stack)?.secret(name).map(|s| &s.kind) {
            Some(KindSpec::Rsa { publish_ahead, .. }) => *publish_ahead,
            _ => None,
        };
        if let (Some(ahead), Some(at)) = (ahead, rotation.delivered_at)
            && now < at + ahead.as_secs() as i64
        {
            return Ok(false);
        }
        let keeps_older = self.data.stacks[stack].secrets[name]
            .fernet_list_keep
            .is_some_and(|keep| keep > 2);
        // The previous version stops being live here (the rotation before this one was never
        // retired): the target forgets it first, as `retire` would, so that no value the store
        // calls retired still logs in. A crash after this repeats an idempotent retire.
        if !keeps_older {
            self.retire_at_target(stack, name, rotation.pending, |v| {
                v.label == Some(Label::Previous)
            })?;
        }
        let before = self.delivered_now(stack, name);
        let record = self.record_mut(stack, name);
        for v in record.versions.iter_mut() {
            match v.label {
                Some(Label::Previous) => {
                    v.label = None;
                    if !keeps_older {
                        v.retired = Some(now);
                    }
                }
                Some(Label::Current) => v.label = Some(Label::Previous),
                Some(Label::Pending) if v.number == rotation.pending => {
                    v.label = Some(Label::Current);
                    v.promoted = Some(now);
                }
                _ => {}
            }
        }
        self.set_step(stack, name, Step::Finish);
        let changed = self.rederive(stack, name)?;
        let own: HashSet<String> = self.data.stacks[stack].secrets[name]
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .collect();
        let after = self.delivered_now(stack, name);
        if changed == own && deliver::same_deliveries(&before, &after) {
            // Consumers see nothing new at promote (a password, a token or a certificate
            // switched at deliver, and no template changed): promote and finish are one store
            // write, and no sink is looked at. A crash before it repeats the promote.
            let pending = rotation.pending;
            self.close(stack, name, pending)?;
            let lines = vec![
                self.line(stack, name, pending, "promote", "ok", None),
                self.line(stack, name, pending, "finish", "ok", None),
            ];
            self.save_logged(lines)?;
            pause_point("promote-persisted");
            pause_point("promote");
            return Ok(true);
        }
        self.persist_and_deliver(stack, name, rotation.pending, "promote", &changed)?;
        Ok(true)
    }

    /// Closes the journal once the promoted state is delivered.
    fn step_finish(&mut self, stack: &str, name: &str, rotation: &Rotation) -> Result<(), Error> {
        self.close(stack, name, rotation.pending)?;
        let line = self.line(stack, name, rotation.pending, "finish", "ok", None);
        self.save_logged(vec![line])?;
        Ok(())
    }

    /// Ends the rotation of `stack/name` in memory: the journal closed, and a rekey owed for
    /// `pending` where the policy asks for one.
    fn close(&mut self, stack: &str, name: &str, pending: u64) -> Result<(), Error> {
        let has_rekey = self
            .policy(stack)?
            .secret(name)
            .is_some_and(|s| s.rekey.is_some());
        let record = self.record_mut(stack, name);
        record.rotation = None;
        // The data must be re-encrypted to the new value before the old one may go.
        if has_rekey {
            record.rekey = Some(RekeyOwed {
                version: pending,
                attempts: 0,
                last_error: None,
                retry_at: None,
            });
        }
        Ok(())
    }

    /// Runs the rekey hook `stack/name` still owes, if any: with every value the stack delivers
    /// now in its environment (the new one among them; never in argv). Success clears the
    /// debt; a failure is recorded with a retry time (backoff) and shown in status. Returns
    /// whether nothing is owed any more.
    pub(crate) fn rekey(&mut self, stack: &str, name: &str) -> Result<bool, Error> {
        let Some(owed) = self.data.stacks[stack].secrets[name].rekey.clone() else {
            return Ok(true);
        };
        let Some(hook) = self
            .policy(stack)?
            .secret(name)
            .and_then(|s| s.rekey.clone())
        else {
            self.record_mut(stack, name).rekey = None; // the policy no longer asks for it
            self.save()?;
            return Ok(true);
        };
        let env: Vec<(String, SecretString)> = deliver::stack_deliveries(&self.data.stacks[stack])
            .into_iter()
            .filter(|d| crate::policy::EnvFileSpec::is_variable_name(&d.name))
            .map(|d| (d.name, d.value.into_secret()))
            .collect();
        let failure = match crate::command::run_with_timeout(
            &hook.argv[0],
            &hook.argv[1..],
            &env,
            hook.timeout,
        ) {
            Ok(Some(status)) if status.success() => None,
            Ok(Some(status)) => Some(format!(
                "rekey command {:?} exited with {status}",
                hook.argv[0]
            )),
            Ok(None) => Some(format!(
                "rekey command {:?} timed out after {} and was killed",
                hook.argv[0],
                crate::policy::duration::format(hook.timeout)
            )),
            Err(e) => Some(format!(
                "rekey command {:?} could not run: {e}",
                hook.argv[0]
            )),
        };
        drop(env);
        let now = self.clock.now();
        let record = self.record_mut(stack, name);
        let Some(message) = failure else {
            record.rekey = None;
            let line = self.line(stack, name, owed.version, "rekey", "ok", None);
            self.save_logged(vec![line])?;
            return Ok(true);
        };
        let attempts = owed.attempts + 1;
        record.rekey = Some(RekeyOwed {
            attempts,
            last_error: Some(message.clone()),
            retry_at: Some(now + backoff(attempts)),
            ..owed
        });
        let line = self.line(stack, name, owed.version, "rekey", "failed", Some(&message));
        self.save_logged(vec![line])?;
        self.outcome(
            stack,
            name,
            owed.version,
            OutcomeKind::RekeyFailed,
            Some(message),
        );
        Ok(false)
    }

    /// Runs a full delivery pass of `stack` to retry its files sink's reload hook, and saves
    /// what happened (a success clears `reload_owed`; a failure moves its retry time on).
    pub(crate) fn retry_reload(&mut self, stack: &str) -> Result<(), Error> {
        let delivered = self.deliver(stack, None);
        self.save()?;
        delivered
    }

    /// Runs the rekey hook right after a rotation of `stack/name` finished (a failure is
    /// recorded, not returned: the rotation itself succeeded, and retire waits).
    pub(crate) fn rekey_if_finished(&mut self, stack: &str, name: &str) -> Result<(), Error> {
        if self.data.stacks[stack].secrets[name].rotation.is_none() {
            self.rekey(stack, name)?;
        }
        Ok(())
    }

    /// Ends the overlap of `stack/name` now: the previous version (and any older key still in
    /// a fernet list) stops being delivered. Waits for the secret's rekey hook: while it has
    /// not succeeded, it is run (again) first, and retire is refused if it still fails.
    pub(crate) fn retire(&mut self, stack: &str, name: &str) -> Result<(), Error> {
        if !self.rekey(stack, name)? {
            let message = self.data.stacks[stack].secrets[name]
                .rekey
                .as_ref()
                .and_then(|r| r.last_error.clone())
                .unwrap_or_default();
            return Err(Error::RekeyPending {
                name: name.to_owned(),
                message,
            });
        }
        let now = self.clock.now();
        let record = &self.data.stacks[stack].secrets[name];
        let from = record.current().map_or(0, |v| v.number);
        let to_retire: Vec<u64> = record
            .versions
            .iter()
            .filter(|v| {
                let older_live = v.label.is_none() && v.retired.is_none() && v.number < from;
                v.label == Some(Label::Previous) || older_live
            })
            .map(|v| v.number)
            .collect();
        // The target forgets old values first: a crash after this repeats an idempotent retire.
        self.retire_at_target(stack, name, from, |v| to_retire.contains(&v.number))?;
        let record = self.record_mut(stack, name);
        let mut retired = Vec::new();
        for v in record
            .versions
            .iter_mut()
            .filter(|v| to_retire.contains(&v.number))
        {
            v.label = None;
            v.retired = Some(now);
            retired.push(v.number);
        }
        if retired.is_empty() {
            self.outcome(stack, name, from, OutcomeKind::NothingToRetire, None);
            return Ok(());
        }
        let changed = self.rederive(stack, name)?;
        self.save()?;
        let record = self.data.stacks.get_mut(stack).expect("stack exists");
        deliver::retire(record, name, &retired)?;
        self.deliver(stack, Some(&changed))?;
        for v in &retired {
            self.log_now(self.line(stack, name, *v, "retire", "ok", None));
        }
        self.outcome(
            stack,
            name,
            from,
            OutcomeKind::Retired,
            Some(format!("retired version(s) {retired:?}")),
        );
        Ok(())
    }
}

impl Engine<'_> {
    /// Makes the target of `stack/name` (if it has one) stop accepting the versions `which`
    /// selects, keeping version `keep` working.
    fn retire_at_target(
        &mut self,
        stack: &str,
        name: &str,
        keep: u64,
        which: impl Fn(&VersionRecord) -> bool,
    ) -> Result<(), Error> {
        let Some(target) = self.target_for(stack, name)? else {
            return Ok(());
        };
        let record = &self.data.stacks[stack].secrets[name];
        let Some(current) = record.version(keep).and_then(credential) else {
            return Ok(());
        };
        for old in record
            .versions
            .iter()
            .filter(|v| v.number != keep && which(v))
        {
            if let Some(old) = credential(old) {
                target.retire(&old, &current)?;
            }
        }
        Ok(())
    }

    /// The target a secret's values must reach, with its admin password resolved now (from the
    /// store's current value of `password_secret`, which may itself have been rotated).
    pub(crate) fn target_for(
        &mut self,
        stack: &str,
        name: &str,
    ) -> Result<Option<Box<dyn Target>>, Error> {
        self.policy(stack)?;
        // Disjoint fields: the cached policy and the store are both only read from here on.
        let policy = &self.policies[stack];
        let Some(secret_target) = policy.secret(name).and_then(|s| s.target.clone()) else {
            return Ok(None);
        };
        let spec = policy
            .target(secret_target.target())
            .expect("the policy checked target names");
        let admin_password = match &spec.password {
            AdminPassword::None => None,
            AdminPassword::Secret(output) => {
                let (_, owner, record, out) =
                    self.data.find_output(&format!("{stack}/{output}"))?;
                let current = record.current().or_else(|| record.delivered_pending());
                // A target whose admin password is the secret being set for the first time has
                // no password yet (e.g. a fresh Redis whose requirepass keyd sets).
                if current.is_none() && owner == name {
                    return Ok(Some(build_target(policy, name, None)?));
                }
                Some(
                    current
                        .and_then(|v| SecretRecord::version_value(v, out.part))
                        .map(crate::secret::Value::into_secret)
                        .ok_or_else(|| Error::NotRotatable {
                            name: name.to_owned(),
                            reason: format!(
                                "the admin password {output} of target {} has no value yet",
                                spec.name
                            ),
                        })?,
                )
            }
            AdminPassword::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| crate::targets::TargetError {
                        target: spec.name.clone(),
                        message: format!("cannot read password_file {}: {e}", path.display()),
                    })?;
                Some(SecretString::new(text.trim().to_owned()))
            }
        };
        Ok(Some(build_target(policy, name, admin_password)?))
    }
}

/// Builds the target of secret `name` of `policy` with a resolved admin password.
fn build_target(
    policy: &Policy,
    name: &str,
    admin_password: Option<SecretString>,
) -> Result<Box<dyn Target>, Error> {
    let secret_target = policy
        .secret(name)
        .and_then(|s| s.target.clone())
        .expect("checked by the caller");
    let spec = policy
        .target(secret_target.target())
        .expect("the policy checked target names");
    let target: Box<dyn Target> = match (&spec.kind, secret_target) {
        (
            TargetKind::Postgres,
            SecretTarget::Postgres {
                role,
                strategy,
                group,
                ..
            },
        ) => Box::new(PostgresTarget::new(
            &spec.name,
            &spec.url,
            admin_password.as_ref(),
            &role,
            strategy,
            &group,
            spec.timeout,
            spec.allow_insecure_auth,
        )?),
        (
            TargetKind::Redis {
                user: admin_user,
                replicas,
            },
            SecretTarget::Redis {
                user, acl, mode, ..
            },
        ) => Box::new(RedisTarget {
            name: spec.name.clone(),
            url: spec.url.clone(),
            admin_user: admin_user.clone(),
            admin_password,
            user,
            acl,
            mode,
            replicas: replicas.clone(),
            timeout: spec.timeout,
            allow_insecure_auth: spec.allow_insecure_auth,
        }),
        _ => {
            unreachable!("the policy checked that a secret's target fields match the target's type")
        }
    };
    Ok(target)
}

/// A version's login and password, for a target.
fn credential(version: &VersionRecord) -> Option<Credential<'_>> {
    match &version.material {
        Material::Text { value } => Some(Credential {
            login: version.login.as_deref(),
            password: value,
        }),
        _ => None,
    }
}

/// The test step: proves a pending value works before anyone depends on it.
fn prove(pending: &Material, current: Option<&Material>) -> Result<(), String> {
    match pending {
        Material::Text { value } => {
            if value.is_empty() {
                return Err("the pending value is empty".into());
            }
            // A Fernet key must encrypt, and decrypt inside the list that will be delivered.
            if let Ok(key) = fernet::FernetKey::parse(value.expose_secret())
                && value.len() == 44
            {
                let token = key.encrypt(b"keyd rotation test", unix_now() as u64);
                let mut list = vec![key];
                if let Some(Material::Text { value }) = current {
                    list.extend(fernet::FernetKey::parse(value.expose_secret()));
                }
                fernet::decrypt_with_any(&list, &token).map_err(|e| e.to_string())?;
            }
            Ok(())
        }
        Material::Rsa(pair) => crate::material::rsa::prove(pair),
        Material::Tls(cert) => crate::material::tls::prove(cert),
    }
}

/// Grace period of a secret (policy value or [`DEFAULT_GRACE`]).
pub(crate) fn grace_of(policy: &Policy, name: &str) -> Duration {
    policy
        .secret(name)
        .and_then(|s| s.grace)
        .unwrap_or(DEFAULT_GRACE)
}

#[cfg(test)]
mod tests {
    use super::first_policy;

    #[test]
    fn the_first_stacks_policy_is_read_without_reading_the_rest_of_the_store() {
        // What follows the policy is not JSON: reading on would fail.
        let text = br#"{"format":1,"generation":2,"stacks":{"web":{"policy_path":"p/web.toml","policy_source":"[stack]\nname = \"web\"\n","applied_at":1,"secrets":{ not JSON"#;
        let (stack, path, source) = first_policy(text).expect("the policy is found");
        assert_eq!(stack, "web");
        assert_eq!(path, std::path::Path::new("p/web.toml"));
        assert_eq!(source, "[stack]\nname = \"web\"\n");
    }

    #[test]
    fn a_policy_written_after_the_rest_of_its_stack_is_still_found() {
        let text = br#"{"audit_at":3,"stacks":{"a":{"secrets":{"X":{"kind":"password","versions":[]}},"ledger":{},"policy_source":"S","policy_path":"a.toml"},"b":{"policy_path":"b.toml","policy_source":"T"}},"format":1}"#;
        let found = first_policy(text).expect("the policy is found");
        assert_eq!(found, ("a".into(), "a.toml".into(), "S".into()));
        assert_eq!(first_policy(br#"{"format":1,"stacks":{}}"#), None);
        assert_eq!(first_policy(b"not a store"), None);
    }
}
