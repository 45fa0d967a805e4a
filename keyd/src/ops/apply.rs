//! `keyctl quickstart` and `keyctl apply`: reconcile a policy with the store, persist, deliver,
//! then run any rotation in flight in the stack (first versions at their targets).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::clock::{SystemClock, unix_now};
use crate::deliver;
use crate::derive::Change;
use crate::docker::Engine as DockerEngine;
use crate::error::Error;
use crate::policy::{FilesSpec, Kind, Policy, SinkSpec, Sinks, SwarmSpec};
use crate::reconcile::reconcile;
use crate::rotation::{Engine, OutcomeKind, SecretKey};
use crate::sinks::{Delivery, DeliveryReport};
use crate::store::{Home, InitOutcome, LockedStore, SecretRecord, StackRecord, StoreData};

/// How to apply.
#[derive(Clone, Debug, Default)]
pub struct ApplyOptions {
    /// Deliver files here instead of the policy's `[sinks.files] dir`.
    pub out: Option<PathBuf>,
    /// Initialise the home first when it has no identity (`quickstart`).
    pub init: bool,
    /// Start over although the home had a store that is gone, or the outputs of a stack the
    /// store does not know already exist (they are replaced by new values).
    pub reinit: bool,
    /// Use the store in place although it is older than the last one written here.
    pub accept_rollback: bool,
    /// Deliver to Docker Swarm secrets too (`[sinks.swarm]` with its defaults, when the policy
    /// has none; the current names go to `<stack>.swarm.env` beside the policy).
    pub swarm: bool,
    /// Make this node a swarm manager first when it is not (`docker swarm init`).
    pub init_swarm: bool,
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

/// A note for each certificate already inside its `renew_before` window (an imported one,
/// or one made long ago): the daemon renews it at its next pass, but a user applying the
/// policy should know before a consumer sees it expire.
fn renewals_due(policy: &Policy, stack: &crate::store::StackRecord, now: i64) -> Vec<String> {
    let mut notes = Vec::new();
    for spec in &policy.secrets {
        let crate::policy::KindSpec::Tls { renew_before, .. } = &spec.kind else {
            continue;
        };
        let Some(current) = stack.secrets.get(&spec.name).and_then(|r| r.current()) else {
            continue;
        };
        let crate::material::Material::Tls(cert) = &current.material else {
            continue;
        };
        if now < cert.not_after - renew_before.as_secs() as i64 {
            continue;
        }
        let left = cert.not_after - now;
        let when = if left > 0 {
            format!("ends in {} h", left / 3600)
        } else {
            format!("ended {} h ago", -left / 3600)
        };
        notes.push(format!(
            "{}: its certificate (v{}) {when}, inside renew_before ({} days): the daemon renews it at its next pass, or run `keyctl rotate {}`",
            spec.name,
            current.number,
            renew_before.as_secs() / 86_400,
            spec.name
        ));
    }
    notes
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
    /// The target that must accept its values, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// One report per sink: a pass and the rotations after it may each have delivered to the same
/// sink; the user sees what ended up written, and what was already right.
fn merge_deliveries(reports: Vec<DeliveryReport>) -> Vec<DeliveryReport> {
    let mut merged = Vec::new();
    for r in reports {
        DeliveryReport::merge_into(&mut merged, r);
    }
    merged
}

/// The sinks to deliver to: the policy's, with `--out` replacing the files directory, and
/// with `swarm`, a Swarm sink when the policy has none.
pub fn resolve_sinks(policy: &Policy, out: Option<&Path>, swarm: bool) -> Sinks {
    let mut sinks = policy.sinks.clone();
    if swarm && sinks.swarm().is_none() {
        let mut spec = SwarmSpec::for_stack(&policy.stack);
        let dir = policy.path.parent().unwrap_or(Path::new("."));
        let names = dir.join(format!("{}.swarm.env", policy.stack));
        spec.names_env = Some(std::path::absolute(&names).unwrap_or(names));
        sinks.set(SinkSpec::Swarm(spec));
    }
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

/// A stack the store does not know, whose outputs already exist: values delivered by a store
/// that was lost (or by a script before keyd). New values would replace them, and with them
/// every database row encrypted with the old Fernet key; refused.
fn refuse_to_replace_existing_outputs(policy: &Policy, sinks: &Sinks) -> Result<(), Error> {
    let mut found = Vec::new();
    for spec in sinks.iter() {
        match spec {
            SinkSpec::Files(f) => {
                // Names are looked up relative to the directory (no path walk per output);
                // a directory that is not there holds nothing.
                let flags = rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC;
                let Ok(dir) = rustix::fs::open(&f.dir, flags, rustix::fs::Mode::empty()) else {
                    continue;
                };
                found.extend(
                    policy
                        .outputs()
                        .into_iter()
                        .filter(|o| {
                            rustix::fs::statat(
                                &dir,
                                o.name.as_str(),
                                rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                            )
                            .is_ok()
                        })
                        .map(|o| f.dir.join(o.name)),
                );
            }
            SinkSpec::EnvFile(e) => {
                if e.path.symlink_metadata().is_ok() {
                    found.push(e.path.clone());
                }
            }
            // Secrets keyd published for this stack, from a store that is not this one: a new
            // store would publish other values beside them and repoint the services. (A secret
            // keyd did not make is never replaced either: the sink refuses its name.)
            SinkSpec::Swarm(swarm) => {
                let engine = DockerEngine::connect(swarm.timeout)?;
                engine.require_manager()?;
                found.extend(
                    engine
                        .secrets_labelled("keyd.stack", &swarm.stack)?
                        .into_iter()
                        .filter(|s| {
                            s.labels.get("keyd.managed").map(String::as_str) == Some("true")
                        })
                        .map(|s| PathBuf::from(format!("Swarm secret {}", s.name))),
                );
            }
            SinkSpec::Plugin(_) => {}
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = found
        .iter()
        .take(3)
        .map(|p| p.display().to_string())
        .collect();
    Err(Error::WouldReplace {
        stack: policy.stack.clone(),
        paths: format!(
            "{}{}",
            shown.join(", "),
            if found.len() > 3 {
                format!(" and {} more", found.len() - 3)
            } else {
                String::new()
            }
        ),
    })
}

/// Refuses to deliver the files of `old` (a stack the store knows) anywhere but where they
/// were last delivered, unless `--out` was given (`out_given`): consumers mount that
/// directory, and would keep reading its values while rotations go elsewhere. A move asked
/// for is followed by the delivery pass, which removes keyd's files from the old directory.
pub(super) fn refuse_to_move_files_unasked(
    stack: &str,
    old: &StackRecord,
    sinks: &Sinks,
    out_given: bool,
) -> Result<(), Error> {
    let (Some(from), Some(to)) = (old.last_files_dir(), sinks.files().map(|f| &f.dir)) else {
        return Ok(());
    };
    if out_given || crate::sinks::same_directory(from, to) {
        return Ok(());
    }
    Err(Error::DeliveryMoved {
        stack: stack.to_owned(),
        from: from.to_owned(),
        to: to.clone(),
    })
}

/// Reconciles `policy` with the store in `home` and delivers. See the module comment.
pub fn apply(home: &Home, policy: &Policy, options: &ApplyOptions) -> Result<ApplyReport, Error> {
    apply_loaded(home, policy, options, None).map(|(report, _)| report)
}

/// [`apply`] of the policy file at `path`. On a home that exists the policy is parsed on a
/// second core while the store is locked and loaded, because on a large stack each is a large
/// share of a no-change apply (bench/scale.py); a policy error still comes first, before the
/// store's.
pub fn apply_file(home: &Home, path: &Path, options: &ApplyOptions) -> Result<ApplyReport, Error> {
    let plain = !(options.init || options.reinit || options.accept_rollback);
    let (policy, loaded) = std::thread::scope(|s| {
        let parsing = s.spawn(|| Policy::load(path));
        let loaded = plain.then(|| -> Result<_, Error> {
            let lock = home.lock()?;
            let data = lock.load()?;
            Ok((lock, data))
        });
        let policy = parsing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (policy, loaded)
    });
    let policy = policy?;
    let (report, leftovers) = apply_loaded(home, &policy, options, loaded.transpose()?)?;
    // What the pass worked on is freed on two cores: the store's records (the values zeroized
    // as they go) on one, the policy (parsed on the other core, so from another malloc arena)
    // here, because on a large stack freeing both is a measurable share of an apply
    // (bench/scale.py).
    std::thread::scope(|s| {
        let Leftovers { secrets, rest } = leftovers;
        s.spawn(move || drop(secrets));
        drop(rest);
        drop(policy);
    });
    Ok(report)
}

/// What an apply worked on and no longer needs, for its caller to free (see [`apply_file`]).
struct Leftovers {
    /// The stacks' secret records (with their values).
    secrets: Vec<BTreeMap<String, SecretRecord>>,
    /// The rest.
    rest: (StoreData, Vec<Delivery>),
}

/// [`apply`] on the store `loaded` holds (locked and loaded by the caller), or on one it
/// locks and loads itself. Returns the report, and what is left to free.
fn apply_loaded(
    home: &Home,
    policy: &Policy,
    options: &ApplyOptions,
    loaded: Option<(LockedStore, StoreData)>,
) -> Result<(ApplyReport, Leftovers), Error> {
    let sinks = resolve_sinks(policy, options.out.as_deref(), options.swarm);
    // `policy check` saw the names of a policy's own [sinks.swarm]; one added by --swarm is
    // checked here, before anything is made.
    if let Some(swarm) = sinks.swarm() {
        let problems: Vec<String> = policy
            .outputs()
            .iter()
            .filter_map(|o| swarm.name_problem(&o.name))
            .collect();
        if !problems.is_empty() {
            return Err(Error::Policy(crate::policy::PolicyError::Unusable {
                path: policy.path.clone(),
                message: problems.join("; "),
            }));
        }
    }
    if options.init_swarm {
        let engine = DockerEngine::connect(SwarmSpec::DEFAULT_TIMEOUT)?;
        engine.init_swarm(None)?;
    }
    // A refused command persists nothing: whatever can refuse is asked before the home is
    // initialised or the store written. Every sink must be there to deliver to (a swarm
    // manager)...
    deliver::ready(&sinks)?;
    // ...and a home about to be made must not be made for a stack whose outputs exist.
    // (A home with an identity but no store is left to `init_or_reinit`, which names the
    // store that is missing.)
    let fresh_home = loaded.is_none()
        && options.init
        && !home.store_path().exists()
        && !home.identity_path().exists();
    if fresh_home && !options.reinit {
        refuse_to_replace_existing_outputs(policy, &sinks)?;
    }
    let (lock, mut data, initialised) = match loaded {
        Some((lock, data)) => (lock, data, false),
        None => {
            let lock = home.lock()?;
            let initialised =
                options.init && lock.init_or_reinit(options.reinit)? == InitOutcome::Created;
            if options.accept_rollback {
                lock.accept_rollback()?;
            }
            let data = lock.load()?;
            (lock, data, initialised)
        }
    };
    let now = unix_now();
    let old = data.stacks.remove(&policy.stack);
    match &old {
        Some(old) => {
            refuse_to_move_files_unasked(&policy.stack, old, &sinks, options.out.is_some())?;
        }
        None if !options.reinit => refuse_to_replace_existing_outputs(policy, &sinks)?,
        None => {}
    }
    let mut plan = reconcile(policy, sinks, old, now)?;
    let mut notes = std::mem::take(&mut plan.notes);
    // Every sink checks every value this run makes before anything is written. Values the
    // store already holds are not checked here: one a sink cannot carry (an older policy let
    // it in) is reported by the delivery below without blocking the others.
    let deliveries = deliver::stack_deliveries(&plan.stack);
    let fresh = if plan.any_change() {
        deliver::deliveries_of(&plan.stack, |name| {
            plan.change(name).is_some_and(|c| c != Change::Unchanged)
        })
    } else {
        Vec::new()
    };
    // Checked with nothing fresh too: a sink also checks where it delivers.
    deliver::check(&plan.stack, &fresh)?;
    drop(fresh);
    if plan.stack.sinks.is_empty() {
        notes.push("the policy has no sinks and no --out was given: values are in the store only (see `keyctl show`)".into());
    }
    let store_written = plan.store_changed;
    if store_written {
        // The store is the truth: persisted before any sink sees a new value, so a crash after
        // delivery never leaves a delivered value the store does not know.
        data.stacks.insert(policy.stack.clone(), plan.stack);
        lock.save(&mut data)?;
    } else {
        data.stacks.insert(policy.stack.clone(), plan.stack);
    }
    let stack = data.stacks.get_mut(&policy.stack).expect("just inserted");
    // The files' ledger notes its own changes, so whether it changed is known without a copy
    // of it to compare against.
    stack.ledger.take_changed();
    let before = (
        stack.swarm.outputs.clone(),
        stack.reload_owed.clone(),
        stack.swarm.served.clone(),
        stack.files_delivered_to.clone(),
    );
    let delivered = deliver::deliver_values(stack, &deliveries, None, now);
    // What the sinks recorded (and a reload hook still owed, and where the files went) is
    // kept even when nothing else changed or the delivery failed, so the next pass can trust
    // it without opening files.
    let ledger_changed = stack.ledger.take_changed()
        || (&stack.swarm.outputs, &stack.reload_owed) != (&before.0, &before.1)
        || stack.swarm.served != before.2
        || stack.files_delivered_to != before.3;
    if let Err(e) = delivered {
        if ledger_changed {
            lock.save(&mut data)?;
        }
        return Err(e.into());
    }
    let mut reports = delivered.expect("the error returned above");

    // Rotations in flight in this stack (first versions at their targets, or work a stopped
    // process left) run now, through the same state machine as `keyctl rotate`.
    let mut failed = Vec::new();
    let in_flight: Vec<String> = stack
        .secrets
        .iter()
        .filter(|(_, r)| r.rotation.is_some() && !r.removed)
        .map(|(n, _)| n.clone())
        .collect();
    let data = if in_flight.is_empty() {
        if ledger_changed {
            lock.save(&mut data)?;
        }
        data
    } else {
        let clock = SystemClock;
        let mut engine = Engine::with_data(&lock, data, &clock, "keyctl apply");
        for name in &in_flight {
            let key = SecretKey::new(&policy.stack, name);
            let from = key.record(&engine.data)?.current().map_or(0, |v| v.number);
            engine.advance(&key, from, false)?;
        }
        failed.extend(
            engine
                .report
                .outcomes
                .iter()
                .filter(|o| o.result == OutcomeKind::Failed)
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
        engine.data
    };

    let stack = &data.stacks[&policy.stack];
    let summaries = policy
        .secrets
        .iter()
        .zip(&plan.changes)
        // A template whose input is still at its target has no value yet: it is left out.
        .filter_map(|(spec, change)| {
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
                change: change.unwrap_or(Change::Created),
                outputs: record.outputs.iter().map(|o| o.name.clone()).collect(),
                fingerprint: current.material.fingerprint(),
                target: spec.target.as_ref().map(|t| t.target().to_owned()),
            })
        })
        .collect();
    notes.extend(renewals_due(policy, stack, now));
    drop(lock);
    let report = ApplyReport {
        stack: policy.stack.clone(),
        home: home.dir().to_owned(),
        initialised,
        secrets: summaries,
        deliveries: merge_deliveries(reports),
        store_written,
        notes,
        failed,
    };
    let mut data = data;
    let leftovers = Leftovers {
        secrets: data
            .stacks
            .values_mut()
            .map(|s| std::mem::take(&mut s.secrets))
            .collect(),
        rest: (data, deliveries),
    };
    Ok((report, leftovers))
}
