//! The rotation's steps: `start` (create) and `advance`, which runs the journal's step until
//! the rotation finishes, waits or fails: set → test → deliver → promote → finish. The
//! journal writes come first, each beside the steps that use it: a step acts, then the
//! journal moves to the next step (in memory: [`Engine::journal_next_step`]) and is saved
//! with the step's audit line, and only then do sinks see what changed. Test, which changes
//! nothing, is saved with the deliver step's write.

use std::collections::HashSet;

use super::engine::{Engine, SecretKey, stack_of};
use super::hooks::{panic_point, pause_point};
use super::report::OutcomeKind;
use super::target::credential;
use crate::clock::{backoff, unix_now};
use crate::deliver;
use crate::error::Error;
use crate::material::{Material, fernet};
use crate::policy::KindSpec;
use crate::store::{Label, RekeyOwed, Rotation, SecretRecord, Step, VersionRecord};

/// Version `number` of `key`'s record, which its journal names.
fn journaled_version<'r>(
    record: &'r SecretRecord,
    key: &SecretKey,
    number: u64,
) -> Result<&'r VersionRecord, Error> {
    record.version(number).ok_or_else(|| Error::NoSuchVersion {
        name: key.to_string(),
        version: number,
    })
}

impl Engine<'_> {
    /// Starts a rotation of `key`: the create step. The pending version is persisted before
    /// anything else happens. A fernet list already holding `keep` live keys is refused
    /// unless `force`: the new key would push out one that was never retired, which data may
    /// still be encrypted with.
    pub(crate) fn start(&mut self, key: &SecretKey, force: bool) -> Result<(), Error> {
        let now = self.clock.now();
        let name = key.name();
        let record = self.record(key)?;
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
            .policy(key.stack())?
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
        let target = self.target_for(key)?;
        let record = self.record(key)?;
        let number = record.next_number();
        let login = match &target {
            Some(target) => {
                let current = record.current().and_then(|v| v.login.clone());
                target.next_login(current.as_deref())
            }
            None => None,
        };
        // Without a target, set does nothing and test is a computation: both run in memory,
        // and the deliver step's write (which persists the pending value before any sink sees
        // it) is the rotation's first, so it costs two store writes fewer. A crash before that
        // write loses only a version nobody saw; the create, set and test lines are logged
        // once it is durable.
        let early =
            target.is_none() && prove(&material, record.current().map(|v| &v.material)).is_ok();
        let record = self.record_mut(key)?;
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
            step: if early { Step::Deliver } else { Step::Set },
            started: now,
            delivered_at: None,
            by,
            attempts: 0,
            last_error: None,
            retry_at: None,
        });
        self.created = Some((key.clone(), number));
        if early {
            self.unsaved = Some((key.clone(), number, &["create", "set", "test"]));
            return Ok(());
        }
        let line = self.line(key, number, "create", "ok", None);
        self.save_logged(vec![line])?;
        pause_point("create");
        Ok(())
    }

    /// Runs the rotation in flight of `key` as far as it can go now.
    pub(crate) fn advance(
        &mut self,
        key: &SecretKey,
        from: u64,
        resumed: bool,
    ) -> Result<(), Error> {
        // A resumed rotation first re-delivers what was persisted: the step that was cut off
        // may have persisted a state its delivery never reached.
        if resumed {
            // Logged as the step it resumes, so the log reads as one walk through the steps.
            if let Some(r) = &self.record(key)?.rotation {
                let line = self.line(key, r.pending, &r.step.to_string(), "resumed", None);
                self.log_now(line);
            }
            self.deliver(key.stack(), None)?;
        }
        loop {
            let Some(rotation) = self.record(key)?.rotation.clone() else {
                let kind = if resumed {
                    OutcomeKind::Resumed
                } else {
                    OutcomeKind::Rotated
                };
                return self.outcome(key, from, kind, None);
            };
            let result = match rotation.step {
                Step::Set => self.run_set_step(key, &rotation),
                Step::Test => self.run_test_step(key, &rotation),
                Step::Deliver => self.run_deliver_step(key, &rotation),
                Step::Promote => match self.run_promote_step(key, &rotation)? {
                    true => Ok(()),
                    false => {
                        return self.outcome(
                            key,
                            from,
                            OutcomeKind::Waiting,
                            Some("delivered; waiting for publish_ahead before promote".into()),
                        );
                    }
                },
                Step::Finish => self.run_finish_step(key, &rotation),
            };
            if let Err(e) = result {
                return self.fail_step(key, from, e.to_string());
            }
        }
    }

    /// Records that the step in flight of `key` failed with `message` (no values): the
    /// journal keeps the error and a retry time (persisted), then the audit line and outcome.
    pub(super) fn fail_step(
        &mut self,
        key: &SecretKey,
        from: u64,
        message: String,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let Some(r) = self.record_mut(key)?.rotation.as_mut() else {
            // The step closed the journal in memory and then could not save that: the store
            // as last written still holds the journal, which takes the failure.
            self.reload()?;
            if self.record(key)?.rotation.is_none() {
                return self.report_unjournaled(key, from, "finish", &message);
            }
            return self.fail_step(key, from, message);
        };
        r.attempts += 1;
        r.last_error = Some(message.clone());
        r.retry_at = Some(now + backoff(r.attempts));
        let (pending, step) = (r.pending, r.step);
        let line = self.line(key, pending, &step.to_string(), "failed", Some(&message));
        self.save_logged(vec![line])?;
        self.outcome(key, from, OutcomeKind::Failed, Some(message))
    }

    /// The journal write: moves the journal of `key` to `next`, in memory, with no error or
    /// retry time; `rotation` is the journal as the step that is done read it (no step
    /// changes its journal before this). Saving it is the caller's.
    fn journal_next_step(
        &mut self,
        key: &SecretKey,
        rotation: &Rotation,
        next: Step,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        let delivered_at = match next {
            Step::Promote => Some(now),
            _ => rotation.delivered_at,
        };
        self.record_mut(key)?.rotation = Some(Rotation {
            step: next,
            attempts: 0,
            last_error: None,
            retry_at: None,
            delivered_at,
            pending: rotation.pending,
            started: rotation.started,
            by: rotation.by.clone(),
        });
        Ok(())
    }

    /// Records a finished step `done` that consumers do not see: the journal moves to `next`
    /// (persisted), then the audit line.
    fn save_step_done(
        &mut self,
        key: &SecretKey,
        rotation: &Rotation,
        done: &str,
        next: Step,
    ) -> Result<(), Error> {
        self.journal_next_step(key, rotation, next)?;
        let line = self.line(key, rotation.pending, done, "ok", None);
        self.save_logged(vec![line])?;
        pause_point(done);
        Ok(())
    }

    /// Records a finished step `done` that changes what consumers see: the journal moves to
    /// `next` and templates are re-derived in one persisted write, and only then are sinks
    /// written. A crash between the two is repaired by the re-delivery every resume begins
    /// with.
    fn save_step_published(
        &mut self,
        key: &SecretKey,
        rotation: &Rotation,
        done: &str,
        next: Step,
    ) -> Result<(), Error> {
        self.journal_next_step(key, rotation, next)?;
        let changed = self.rederive(key)?;
        self.save_then_deliver(key, rotation.pending, done, &changed)
    }

    /// The second half of [`Engine::save_step_published`]: one store write, then the sinks.
    fn save_then_deliver(
        &mut self,
        key: &SecretKey,
        pending: u64,
        done: &str,
        changed: &HashSet<String>,
    ) -> Result<(), Error> {
        self.save()?;
        pause_point(&format!("{done}-persisted"));
        panic_point(key.name());
        self.deliver(key.stack(), Some(changed))?;
        self.log_now(self.line(key, pending, done, "ok", None));
        pause_point(done);
        Ok(())
    }

    /// The set step: the target (if any) is given the pending value.
    fn run_set_step(&mut self, key: &SecretKey, rotation: &Rotation) -> Result<(), Error> {
        if let Some(target) = self.target_for(key)? {
            // A first version made by apply has no login yet: it takes the target's first one.
            let record = self.record_mut(key)?;
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
            let record = self.record(key)?;
            let pending = journaled_version(record, key, rotation.pending)?;
            let pending_cred = credential(pending).ok_or_else(|| Error::NotRotatable {
                name: key.name().to_owned(),
                reason: "a target needs a text value".into(),
            })?;
            // Probe first: after a crash between set and the journal, or a set that failed
            // after the target took it, the target already has it. A value this engine just
            // created, not yet set, cannot be there (one login attempt fewer).
            let fresh = rotation.attempts == 0
                && self.created.as_ref() == Some(&(key.clone(), rotation.pending));
            if fresh || !target.accepts(&pending_cred)? {
                let current = record.current().and_then(credential);
                target.set(&pending_cred, current.as_ref())?;
            }
        }
        self.save_step_done(key, rotation, "set", Step::Test)
    }

    /// The test step: the pending value is proved to work ([`prove`]), and at the target.
    fn run_test_step(&mut self, key: &SecretKey, rotation: &Rotation) -> Result<(), Error> {
        let record = self.record(key)?;
        let pending = journaled_version(record, key, rotation.pending)?;
        prove(&pending.material, record.current().map(|v| &v.material)).map_err(|reason| {
            Error::TestFailed {
                name: key.name().to_owned(),
                reason,
            }
        })?;
        if let Some(target) = self.target_for(key)?
            && let Some(cred) = self
                .record(key)?
                .version(rotation.pending)
                .and_then(credential)
        {
            target.test(&cred)?;
        }
        // Testing changes nothing, so the journal moves to deliver in memory only: the deliver
        // step's write, which comes next, persists both (one store write fewer). A crash
        // before it resumes at test, which runs again.
        self.journal_next_step(key, rotation, Step::Deliver)?;
        self.unsaved = Some((key.clone(), rotation.pending, &["test"]));
        Ok(())
    }

    /// The deliver step: the pending value becomes visible to sinks (see
    /// `SecretRecord::delivered`) once the step is Promote; templates using it are re-derived
    /// in the same write.
    fn run_deliver_step(&mut self, key: &SecretKey, rotation: &Rotation) -> Result<(), Error> {
        self.save_step_published(key, rotation, "deliver", Step::Promote)
    }

    /// What the outputs of `key` deliver now.
    fn delivered_now(&self, key: &SecretKey) -> Result<Vec<crate::sinks::Delivery>, Error> {
        let stack = stack_of(&self.data, key.stack())?;
        Ok(deliver::deliveries_of(stack, |n| n == key.name()))
    }

    /// The promote step, once `publish_ahead` has passed: the pending version becomes current
    /// and the current one previous. `false` while waiting.
    fn run_promote_step(&mut self, key: &SecretKey, rotation: &Rotation) -> Result<bool, Error> {
        let now = self.clock.now();
        let ahead = match &self
            .policy(key.stack())?
            .secret(key.name())
            .map(|s| &s.kind)
        {
            Some(KindSpec::Rsa { publish_ahead, .. }) => *publish_ahead,
            _ => None,
        };
        if let (Some(ahead), Some(at)) = (ahead, rotation.delivered_at)
            && now < at + ahead.as_secs() as i64
        {
            return Ok(false);
        }
        let keeps_older = self
            .record(key)?
            .fernet_list_keep
            .is_some_and(|keep| keep > 2);
        // The previous version stops being live here (the rotation before this one was never
        // retired): the target forgets it first, as `retire` would, so that no value the store
        // calls retired still logs in. A crash after this repeats an idempotent retire.
        if !keeps_older {
            self.retire_at_target(key, rotation.pending, |v| v.label == Some(Label::Previous))?;
        }
        let before = self.delivered_now(key)?;
        let record = self.record_mut(key)?;
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
        self.journal_next_step(key, rotation, Step::Finish)?;
        let changed = self.rederive(key)?;
        let own: HashSet<String> = self
            .record(key)?
            .outputs
            .iter()
            .map(|o| o.name.clone())
            .collect();
        let after = self.delivered_now(key)?;
        if changed == own && deliver::same_deliveries(&before, &after) {
            // Consumers see nothing new at promote (a password, a token or a certificate
            // switched at deliver, and no template changed): promote and finish are one store
            // write, and no sink is looked at. A crash before it repeats the promote.
            let pending = rotation.pending;
            self.close_journal(key, pending)?;
            let lines = vec![
                self.line(key, pending, "promote", "ok", None),
                self.line(key, pending, "finish", "ok", None),
            ];
            self.save_logged(lines)?;
            pause_point("promote-persisted");
            pause_point("promote");
            return Ok(true);
        }
        self.save_then_deliver(key, rotation.pending, "promote", &changed)?;
        Ok(true)
    }

    /// The finish step: closes the journal once the promoted state is delivered.
    fn run_finish_step(&mut self, key: &SecretKey, rotation: &Rotation) -> Result<(), Error> {
        self.close_journal(key, rotation.pending)?;
        let line = self.line(key, rotation.pending, "finish", "ok", None);
        self.save_logged(vec![line])?;
        Ok(())
    }

    /// Ends the rotation of `key` in memory: the journal closed, and a rekey owed for
    /// `pending` where the policy asks for one.
    fn close_journal(&mut self, key: &SecretKey, pending: u64) -> Result<(), Error> {
        let has_rekey = self
            .policy(key.stack())?
            .secret(key.name())
            .is_some_and(|s| s.rekey.is_some());
        let record = self.record_mut(key)?;
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
}

/// The test step's proof: a pending value works before anyone depends on it.
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
