//! After a rotation: the rekey hook a secret owes (run, and retried with backoff), the end of
//! the overlap (`retire`: the previous version stops being delivered, once the hook
//! succeeded), and the retry of a stack's failed reload hook.

use std::collections::HashSet;

use super::engine::{Engine, SecretKey, stack_mut, stack_of};
use super::report::OutcomeKind;
use crate::clock::backoff;
use crate::deliver;
use crate::error::Error;
use crate::material::template::references;
use crate::policy::KindSpec;
use crate::secret::SecretString;
use crate::store::{Label, RekeyOwed};

impl Engine<'_> {
    /// Runs the rekey hook `key` still owes, if any: with every value the stack delivers now
    /// in its environment (the new one among them; never in argv). Success clears the debt; a
    /// failure is recorded with a retry time (backoff) and shown in status. Returns whether
    /// nothing is owed any more.
    pub(crate) fn rekey(&mut self, key: &SecretKey) -> Result<bool, Error> {
        let Some(owed) = self.record(key)?.rekey.clone() else {
            return Ok(true);
        };
        let Some(hook) = self
            .policy(key.stack())?
            .secret(key.name())
            .and_then(|s| s.rekey.clone())
        else {
            self.record_mut(key)?.rekey = None; // the policy no longer asks for it
            self.save()?;
            return Ok(true);
        };
        let stack = stack_of(&self.data, key.stack())?;
        let env: Vec<(String, SecretString)> = deliver::stack_deliveries(stack)
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
        let record = self.record_mut(key)?;
        let Some(message) = failure else {
            record.rekey = None;
            let line = self.line(key, owed.version, "rekey", "ok", None);
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
        let line = self.line(key, owed.version, "rekey", "failed", Some(&message));
        self.save_logged(vec![line])?;
        self.outcome(key, owed.version, OutcomeKind::RekeyFailed, Some(message))?;
        Ok(false)
    }

    /// Runs a full delivery pass of `stack` to retry its files sink's reload hook, and saves
    /// what happened (a success clears `reload_owed`; a failure moves its retry time on).
    pub(crate) fn retry_reload(&mut self, stack: &str) -> Result<(), Error> {
        let delivered = self.deliver(stack, None);
        self.save()?;
        delivered
    }

    /// Runs the rekey hook right after a rotation of `key` finished (a failure is recorded,
    /// not returned: the rotation itself succeeded, and retire waits).
    pub(crate) fn rekey_if_finished(&mut self, key: &SecretKey) -> Result<(), Error> {
        if self.record(key)?.rotation.is_none() {
            self.rekey(key)?;
        }
        Ok(())
    }

    /// The derived secrets (templates) of `key`'s stack whose value holds `key`'s, directly or
    /// through another template.
    fn derived_from(&mut self, key: &SecretKey) -> Result<Vec<String>, Error> {
        let outputs: Vec<String> = self
            .record(key)?
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .collect();
        let policy = self.policy(key.stack())?;
        // Names (secrets and their outputs) whose value holds `key`'s.
        let mut holding: HashSet<String> = outputs.into_iter().collect();
        holding.insert(key.name().to_owned());
        let mut derived = Vec::new();
        loop {
            let before = derived.len();
            for spec in &policy.secrets {
                let KindSpec::Template { pieces, .. } = &spec.kind else {
                    continue;
                };
                if derived.contains(&spec.name)
                    || !references(pieces).any(|name| holding.contains(name))
                {
                    continue;
                }
                holding.insert(spec.name.clone());
                holding.extend(spec.output_parts().map(|(name, _)| name.to_owned()));
                derived.push(spec.name.clone());
            }
            if derived.len() == before {
                return Ok(derived);
            }
        }
    }

    /// Ends the overlap of `key` now: the previous version (and any older key still in a
    /// fernet list) stops being delivered. Waits for the secret's rekey hook: while it has not
    /// succeeded, it is run (again) first, and retire is refused if it still fails.
    pub(crate) fn retire(&mut self, key: &SecretKey) -> Result<(), Error> {
        if !self.rekey(key)? {
            let message = self
                .record(key)?
                .rekey
                .as_ref()
                .and_then(|r| r.last_error.clone())
                .unwrap_or_default();
            return Err(Error::RekeyPending {
                name: key.name().to_owned(),
                message,
            });
        }
        let now = self.clock.now();
        let record = self.record(key)?;
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
        self.retire_at_target(key, from, |v| to_retire.contains(&v.number))?;
        let record = self.record_mut(key)?;
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
            return self.outcome(key, from, OutcomeKind::NothingToRetire, None);
        }
        let changed = self.rederive(key)?;
        self.save()?;
        deliver::retire(
            stack_mut(&mut self.data, key.stack())?,
            key.name(),
            &retired,
        )?;
        // The values derived from this secret were re-derived when it rotated, their old
        // versions retired in the store at once (they held the old value): what the sinks
        // published of those versions goes now, with the versions of the input they held
        // (a Swarm secret still used by a service stays until the next retire).
        for derived in self.derived_from(key)? {
            let stack = stack_mut(&mut self.data, key.stack())?;
            let versions: Vec<u64> = stack.secrets.get(&derived).map_or_else(Vec::new, |r| {
                r.versions
                    .iter()
                    .filter(|v| v.retired.is_some())
                    .map(|v| v.number)
                    .collect()
            });
            deliver::retire(stack, &derived, &versions)?;
        }
        self.deliver(key.stack(), Some(&changed))?;
        for v in &retired {
            self.log_now(self.line(key, *v, "retire", "ok", None));
        }
        self.outcome(
            key,
            from,
            OutcomeKind::Retired,
            Some(format!("retired version(s) {retired:?}")),
        )
    }
}
