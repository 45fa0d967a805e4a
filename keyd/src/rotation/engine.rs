//! The engine: one locked session on the store. It owns the loaded store, the policies parsed
//! from it, the audit log and the report, and gives the steps their record access through one
//! [`SecretKey`] per secret: a look-up that misses is a typed error, never a panic. Writing
//! the store with its audit lines, and a failure no journal records, are here too.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::audit::{self, AuditLog};
use super::hooks::pause_point;
use super::report::{Outcome, OutcomeKind, RotationReport};
use crate::clock::Clock;
use crate::deliver;
use crate::derive::{Change, derive};
use crate::error::Error;
use crate::policy::Policy;
use crate::store::{
    AuditLine, LockedStore, LookupError, SecretRecord, StackRecord, StoreData, StoredPolicy,
};

/// One secret of the store: its stack and its name, resolved once by the caller and handed
/// to every step, which looks its record up through it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SecretKey {
    stack: String,
    name: String,
}

impl SecretKey {
    /// The secret `name` of `stack`.
    pub(crate) fn new(stack: &str, name: &str) -> Self {
        SecretKey {
            stack: stack.to_owned(),
            name: name.to_owned(),
        }
    }

    /// Its stack.
    pub(crate) fn stack(&self) -> &str {
        &self.stack
    }

    /// Its name in the stack.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Its record in `data`.
    pub(crate) fn record<'d>(&self, data: &'d StoreData) -> Result<&'d SecretRecord, LookupError> {
        data.stacks
            .get(&self.stack)
            .and_then(|s| s.secrets.get(&self.name))
            .ok_or_else(|| LookupError::NotFound(self.to_string()))
    }

    /// Its record in `data`, to change.
    pub(crate) fn record_mut<'d>(
        &self,
        data: &'d mut StoreData,
    ) -> Result<&'d mut SecretRecord, LookupError> {
        data.stacks
            .get_mut(&self.stack)
            .and_then(|s| s.secrets.get_mut(&self.name))
            .ok_or_else(|| LookupError::NotFound(self.to_string()))
    }
}

impl fmt::Display for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.stack, self.name)
    }
}

/// The record of `stack` in `data`.
pub(super) fn stack_of<'d>(
    data: &'d StoreData,
    stack: &str,
) -> Result<&'d StackRecord, LookupError> {
    data.stacks
        .get(stack)
        .ok_or_else(|| LookupError::NotFound(stack.to_owned()))
}

/// The record of `stack` in `data`, to change.
pub(super) fn stack_mut<'d>(
    data: &'d mut StoreData,
    stack: &str,
) -> Result<&'d mut StackRecord, LookupError> {
    data.stacks
        .get_mut(stack)
        .ok_or_else(|| LookupError::NotFound(stack.to_owned()))
}

/// The policy of `stack`, parsed from `data` when first asked for and kept in `policies`. A
/// function of the two fields, not a method, so that the store can be changed while the
/// policy it returns is read.
pub(super) fn cached_policy<'p>(
    policies: &'p mut HashMap<String, Policy>,
    data: &StoreData,
    stack: &str,
) -> Result<&'p Policy, Error> {
    if !policies.contains_key(stack) {
        let record = data
            .stacks
            .get(stack)
            .ok_or_else(|| LookupError::NotFound(stack.to_owned()))?;
        let policy = Policy::parse(&record.policy_path, record.policy_source.clone())?;
        policies.insert(stack.to_owned(), policy);
    }
    policies
        .get(stack)
        .ok_or_else(|| LookupError::NotFound(stack.to_owned()).into())
}

/// The policy the store pre-read (its first stack's), parsed beside the store's own parse: a
/// policy that does not parse, and every other stack's, is left to [`cached_policy`], which
/// parses it from the loaded store when it is needed (and reports the error there).
fn parse_stored(found: Option<StoredPolicy>) -> HashMap<String, Policy> {
    found
        .and_then(|p| Some((p.stack, Policy::parse(&p.path, p.source).ok()?)))
        .into_iter()
        .collect()
}

/// One locked session on the store: the rotation engine.
pub(crate) struct Engine<'a> {
    pub(super) lock: &'a LockedStore,
    pub(crate) data: StoreData,
    pub(super) clock: &'a dyn Clock,
    pub(super) by: String,
    pub(super) audit: AuditLog,
    pub(super) policies: HashMap<String, Policy>,
    pub(crate) report: RotationReport,
    /// Steps done in memory only of a secret's version (create, set and test of a rotation
    /// without a target; test of any other), logged and marked by the next store write, which
    /// makes them durable.
    pub(super) unsaved: Option<(SecretKey, u64, &'static [&'static str])>,
    /// The version this engine's create step made, of which secret: no target can have its
    /// value before this engine's first set, so that set needs no probe.
    pub(super) created: Option<(SecretKey, u64)>,
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
    /// policy is parsed on a second core while the store itself is parsed, not later, one
    /// after the other; another stack's is parsed from the loaded store when it is first
    /// needed.
    pub(crate) fn with_policies(
        lock: &'a LockedStore,
        clock: &'a dyn Clock,
        by: &str,
    ) -> Result<Self, Error> {
        let (data, policies) = lock.load_with_first_policy(parse_stored)?;
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
            created: None,
        }
    }

    /// The record of `key`.
    pub(super) fn record(&self, key: &SecretKey) -> Result<&SecretRecord, LookupError> {
        key.record(&self.data)
    }

    /// The record of `key`, to change.
    pub(super) fn record_mut(&mut self, key: &SecretKey) -> Result<&mut SecretRecord, LookupError> {
        key.record_mut(&mut self.data)
    }

    /// The policy of `stack` (see [`cached_policy`]).
    pub(super) fn policy(&mut self, stack: &str) -> Result<&Policy, Error> {
        cached_policy(&mut self.policies, &self.data, stack)
    }

    /// Writes the store; then logs the steps that were done in memory only, now durable.
    pub(super) fn save(&mut self) -> Result<(), Error> {
        self.save_logged(Vec::new())
    }

    /// Writes the store with `lines` owed in it (after those of the steps done in memory
    /// only), then appends them to the audit log: each line is durable exactly when the state
    /// it records is (`audit.rs`).
    pub(super) fn save_logged(&mut self, lines: Vec<AuditLine>) -> Result<(), Error> {
        let unsaved = self.unsaved.take();
        let mut owed = Vec::new();
        if let Some((key, number, steps)) = &unsaved {
            for step in *steps {
                owed.push(self.line(key, *number, step, "ok", None));
            }
        }
        owed.extend(lines);
        if let Err(e) = audit::save_logged(&self.audit, self.lock, &mut self.data, owed) {
            self.unsaved = unsaved;
            return Err(e.into());
        }
        if let Some((_, _, steps)) = unsaved {
            for step in steps {
                pause_point(step);
            }
        }
        Ok(())
    }

    /// Goes back to the store as last written (after a failure or a panic): lines it still
    /// owes are already in the log, or are appended now.
    pub(super) fn reload(&mut self) -> Result<(), Error> {
        self.data = self.lock.load()?;
        self.audit.settle_owed(&mut self.data);
        self.unsaved = None;
        self.created = None;
        Ok(())
    }

    /// An audit line of this engine's about version `version` of `key`, now.
    pub(super) fn line(
        &self,
        key: &SecretKey,
        version: u64,
        step: &str,
        outcome: &str,
        error: Option<&str>,
    ) -> AuditLine {
        AuditLine {
            time: crate::clock::format_time(self.clock.now()),
            stack: key.stack.clone(),
            secret: key.name.clone(),
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
    pub(super) fn log_now(&self, line: AuditLine) {
        self.audit.write_all(&[line]);
    }

    /// Re-derives templates of the stack of `key` from what is delivered now, and returns the
    /// outputs whose values may have changed: those of `key` and of every template that
    /// changed. Persisting is the caller's.
    pub(super) fn rederive(&mut self, key: &SecretKey) -> Result<HashSet<String>, Error> {
        let now = self.clock.now();
        let policy = cached_policy(&mut self.policies, &self.data, key.stack())?;
        let record = stack_mut(&mut self.data, key.stack())?;
        let changes = derive(policy, &mut record.secrets, now);
        let changed = changes
            .into_iter()
            .filter(|(_, c)| *c != Change::Unchanged)
            .map(|(n, _)| n)
            .chain(std::iter::once(key.name.clone()));
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
        let record = stack_mut(&mut self.data, stack)?;
        let reports = deliver::deliver(record, changed, self.clock.now())?;
        for r in reports.into_iter().filter(|r| !r.written.is_empty()) {
            self.report.add_delivery(r);
        }
        Ok(())
    }

    /// Reports what happened to `key`, whose current version was `from`.
    pub(crate) fn outcome(
        &mut self,
        key: &SecretKey,
        from: u64,
        result: OutcomeKind,
        message: Option<String>,
    ) -> Result<(), Error> {
        let record = self.record(key)?;
        let step = record.rotation.as_ref().map(|r| r.step);
        let to = record
            .rotation
            .as_ref()
            .map(|r| r.pending)
            .or_else(|| record.current().map(|v| v.number))
            .unwrap_or(0);
        let outcome = Outcome {
            stack: key.stack.clone(),
            name: key.name.clone(),
            kind: record.kind,
            from_version: from,
            to_version: to,
            result,
            step,
            message,
        };
        self.report.outcomes.push(outcome);
        Ok(())
    }

    /// Reports a failure of `key` that no rotation journal records (it happened before
    /// anything was saved), after reloading the store as last saved so that nothing half done
    /// in memory is written by later work.
    pub(crate) fn fail_unjournaled(
        &mut self,
        key: &SecretKey,
        from: u64,
        step: &str,
        message: &str,
    ) -> Result<(), Error> {
        self.reload()?;
        self.report_unjournaled(key, from, step, message)
    }

    /// The audit line and outcome of a failure no journal records (the version is the one
    /// `step` would have made or acted on).
    pub(super) fn report_unjournaled(
        &mut self,
        key: &SecretKey,
        from: u64,
        step: &str,
        message: &str,
    ) -> Result<(), Error> {
        let version = match step {
            "create" => self.record(key)?.next_number(),
            _ => from,
        };
        self.log_now(self.line(key, version, step, "failed", Some(message)));
        self.outcome(key, from, OutcomeKind::Failed, Some(message.to_owned()))
    }

    /// Turns a panic caught in the work on `key` into a failed rotation, so one secret's bug
    /// cannot stop the others. Memory may have been left half-changed, so the engine goes back
    /// to the store as last written (every step is persisted before it acts, and every step
    /// is idempotent). A rotation in flight there keeps the error in its journal and is
    /// retried after the usual backoff; one that never reached the store (a panic in create,
    /// or in a target-less rotation before its first write) is only logged and reported, as a
    /// failure of `step` (`create`, `retire`). Returns whether the failure was journaled. The
    /// panic's own message goes to keyd's log through the panic hook, not into the journal or
    /// the audit log, which must hold no values.
    pub(crate) fn contain_panic(&mut self, key: &SecretKey, step: &str) -> Result<bool, Error> {
        self.reload()?;
        let record = self.record(key)?;
        let from = record.current().map_or(0, |v| v.number);
        match &record.rotation {
            Some(r) => {
                let message = format!(
                    "internal error: keyd panicked during the {} step (details in keyd's log); the rotation will be retried",
                    r.step
                );
                self.fail_step(key, from, message)?;
                Ok(true)
            }
            None => {
                let message =
                    "internal error: keyd panicked (details in keyd's log); nothing was changed";
                self.report_unjournaled(key, from, step, message)?;
                Ok(false)
            }
        }
    }
}
