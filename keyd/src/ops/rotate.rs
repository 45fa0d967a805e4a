//! `keyctl rotate`, `keyctl retire` and the daemon's re-delivery: select secrets by name or
//! kind, then drive the rotation engine under the store lock.

use crate::clock::Clock;
use crate::error::Error;
use crate::policy::{Kind, Policy};
use crate::rotation::schedule::{Action, plan, unreadable_policies};
use crate::rotation::{Engine, OutcomeKind, RotationReport, SecretKey};
use crate::store::{Home, LookupError, StoreData};

/// Runs `work` on the secret `key`, containing a panic in it (see `Engine::contain_panic`;
/// `step` names the work when no rotation was in flight): the secret's rotation fails, the
/// caller goes on with the others. Returns `Ok(false)` for a panic whose failure could not be
/// journaled.
fn contained(
    engine: &mut Engine<'_>,
    key: &SecretKey,
    step: &str,
    work: impl FnOnce(&mut Engine<'_>) -> Result<(), Error>,
) -> Result<bool, Error> {
    // AssertUnwindSafe: after a panic the engine's memory is not used; `contain_panic`
    // reloads the store.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(engine))) {
        Ok(result) => result.map(|()| true),
        Err(_) => engine.contain_panic(key, step),
    }
}

/// Who is acting, for the audit log: the program and the caller's uid and pid.
pub fn actor(program: &str) -> String {
    format!(
        "{program} uid={} pid={}",
        rustix::process::getuid().as_raw(),
        std::process::id()
    )
}

/// The secrets a selector names: a secret or companion name (`NAME`, `STACK/NAME`), or a kind
/// (`fernet`, `STACK/fernet`) for every secret of that kind.
pub fn select(data: &StoreData, selector: &str) -> Result<Vec<(String, String)>, Error> {
    let (stack_filter, rest) = match selector.split_once('/') {
        Some((s, r)) => (Some(s), r),
        None => (None, selector),
    };
    if let Some(kind) = Kind::ALL.into_iter().find(|k| k.as_str() == rest) {
        let found: Vec<(String, String)> = data
            .stacks
            .iter()
            .filter(|(s, _)| stack_filter.is_none_or(|f| f == s.as_str()))
            .flat_map(|(s, rec)| {
                rec.secrets
                    .iter()
                    .filter(|(_, r)| r.kind == kind && !r.removed)
                    .map(move |(n, _)| (s.clone(), n.clone()))
            })
            .collect();
        if found.is_empty() {
            return Err(LookupError::NotFound(selector.to_owned()).into());
        }
        return Ok(found);
    }
    let (stack, secret, _, _) = data.find_output(selector)?;
    Ok(vec![(stack.to_owned(), secret.to_owned())])
}

/// What a person typing `keyctl rotate SELECTOR` should confirm first, one sentence each
/// (none: nothing to ask): a kind, which rotates every secret of it at once, and each password
/// with no `target` that is not `standalone`, whose new value keyd cannot set on the server
/// that checks it. Reads the store; changes nothing.
pub fn rotate_cautions(home: &Home, selector: &str) -> Result<Vec<String>, Error> {
    let data = home.lock_shared()?.load_for(selector)?;
    let selected = select(&data, selector)?;
    let mut cautions = Vec::new();
    let last = selector.rsplit('/').next().unwrap_or(selector);
    if Kind::ALL.into_iter().any(|k| k.as_str() == last) {
        let names: Vec<String> = selected.iter().map(|(s, n)| format!("{s}/{n}")).collect();
        cautions.push(format!(
            "{selector} is a kind: {} secrets rotate at once ({})",
            names.len(),
            names.join(", ")
        ));
    }
    for (stack_name, name) in &selected {
        let stack = &data.stacks[stack_name];
        if stack.secrets[name].kind != Kind::Password {
            continue;
        }
        let policy = Policy::parse(&stack.policy_path, stack.policy_source.clone()).ok();
        if policy
            .as_ref()
            .and_then(|p| p.secret(name))
            .is_some_and(|spec| spec.target.is_none() && !spec.standalone)
        {
            cautions.push(format!(
                "{stack_name}/{name} is a password with no target: keyd does not set the new value on the server that checks it, so whatever logs in with it fails until that server has it"
            ));
        }
    }
    Ok(cautions)
}

/// Rotates every secret `selector` names (see [`select`]); resumes a rotation in flight instead
/// of starting a second one, and does nothing for a secret another process rotated while this
/// one waited for the lock. `force` rotates a fernet list that would drop an unretired key.
pub fn rotate(
    home: &Home,
    selector: &str,
    force: bool,
    clock: &dyn Clock,
    by: &str,
) -> Result<RotationReport, Error> {
    // What the caller saw before waiting for the lock, if it had to wait.
    let (lock, seen) = home.lock_seen()?;
    let mut engine = Engine::with_policies(&lock, clock, by)?;
    let selected = select(&engine.data, selector)?;
    // Read lazily: the selected secrets' versions are checked before they are read here.
    for (stack, name) in &selected {
        lock.check_versions(&engine.data, Some((stack, name)))?;
    }
    for (stack, name) in &selected {
        let key = SecretKey::new(stack, name);
        let record = key.record(&engine.data)?;
        let from = record.current().map_or(0, |v| v.number);
        if record.rotation.is_some() {
            contained(&mut engine, &key, "create", |e| e.advance(&key, from, true))?;
            continue;
        }
        let seen_version = seen
            .as_ref()
            .and_then(|d| d.stacks.get(stack))
            .and_then(|s| s.secrets.get(name))
            .map(|r| (r.current().map(|v| v.number), r.rotation.is_some()));
        if seen_version.is_some_and(|(v, in_flight)| in_flight || v != Some(from)) {
            engine.outcome(
                &key,
                from,
                OutcomeKind::AlreadyRotated,
                Some("rotated by another process while this one waited".into()),
            )?;
            continue;
        }
        contained(&mut engine, &key, "create", |e| {
            e.start(&key, force)?;
            e.advance(&key, from, false)?;
            e.rekey_if_finished(&key)
        })?;
    }
    Ok(engine.report)
}

/// Re-delivers every stack's persisted state (files already right are left alone).
pub fn deliver_all(home: &Home, clock: &dyn Clock, by: &str) -> Result<RotationReport, Error> {
    let lock = home.lock()?;
    let mut engine = Engine::new(&lock, clock, by)?;
    let stacks: Vec<String> = engine.data.stacks.keys().cloned().collect();
    for stack in stacks {
        engine.deliver(&stack, None)?;
    }
    Ok(engine.report)
}

/// Ends the overlap of the secret `name` now (see `Engine::retire`).
pub fn retire(
    home: &Home,
    name: &str,
    clock: &dyn Clock,
    by: &str,
) -> Result<RotationReport, Error> {
    let lock = home.lock()?;
    let mut engine = Engine::new(&lock, clock, by)?;
    let (stack, secret, record, _) = engine.data.find_output(name)?;
    let key = SecretKey::new(stack, secret);
    if record.rotation.is_some() {
        let from = record.current().map_or(0, |v| v.number);
        engine.advance(&key, from, true)?;
    }
    engine.retire(&key)?;
    Ok(engine.report)
}

/// Does everything due now under the store lock (resumes first), and returns what it did and
/// when to run again.
pub fn run_due(
    home: &Home,
    clock: &dyn Clock,
    by: &str,
) -> Result<(RotationReport, Option<i64>), Error> {
    let lock = home.lock()?;
    let mut engine = Engine::with_policies(&lock, clock, by)?;
    // The plan reads every secret's versions: a damaged one is the pass's error, as in a
    // whole load, not a panic.
    lock.check_versions(&engine.data, None)?;
    let (actions, _) = plan(&engine.data, clock.now());
    // Reload hooks that failed before, once their retry time has come (a failure is recorded
    // in the stack and shown in status; it never stops the rotations below).
    let owed: Vec<String> = engine
        .data
        .stacks
        .iter()
        .filter(|(_, s)| {
            s.reload_owed
                .as_ref()
                .is_some_and(|o| o.retry_at <= clock.now())
        })
        .map(|(name, _)| name.clone())
        .collect();
    for stack in owed {
        let _ = engine.retry_reload(&stack);
    }
    let mut unjournaled = false;
    for action in &actions {
        let (Action::Resume { stack, name }
        | Action::Rotate { stack, name }
        | Action::Rekey { stack, name }
        | Action::Retire { stack, name }) = action;
        let key = SecretKey::new(stack, name);
        let from = key.record(&engine.data)?.current().map_or(0, |v| v.number);
        let step = match action {
            Action::Retire { .. } => "retire",
            Action::Rekey { .. } => "rekey",
            _ => "create",
        };
        let journaled = contained(&mut engine, &key, step, |e| match action {
            Action::Resume { .. } => {
                e.advance(&key, from, true)?;
                e.rekey_if_finished(&key)
            }
            Action::Rotate { .. } => {
                // Refused (a fernet key that would be pushed out unretired): reported, and the
                // other secrets' work goes on.
                if let Err(refused) = e.start(&key, false) {
                    return e.outcome(&key, from, OutcomeKind::Failed, Some(refused.to_string()));
                }
                e.advance(&key, from, false)?;
                e.rekey_if_finished(&key)
            }
            // A failed rekey is recorded with its retry time; the plan waits for it.
            Action::Rekey { .. } => e.rekey(&key).map(drop),
            Action::Retire { .. } => match e.retire(&key) {
                Err(Error::RekeyPending { .. }) => Ok(()),
                other => other,
            },
        });
        // One secret's error (an unreadable password_file, say) never stops the others: it
        // is reported for that secret, and the pass goes on from the store as last saved.
        let journaled = match journaled {
            Ok(journaled) => journaled,
            Err(error) => {
                engine.fail_unjournaled(&key, from, step, &error.to_string())?;
                false
            }
        };
        unjournaled |= !journaled;
    }
    // A failed step leaves a retry time; the next plan accounts for it.
    let now = clock.now();
    let (still_due, mut next) = plan(&engine.data, now);
    // Work that fell due while this pass ran (a grace period or an interval shorter than the
    // pass) is due now: the plan lists it as due, not among its later times, so without this
    // the scheduler would sleep past it until the next unrelated wake-up. Work this pass tried
    // that is still due made no progress (a refused rotation): it waits, as before, for the
    // next wake-up or for the minute below.
    if still_due.iter().any(|action| !actions.contains(action)) {
        next = Some(now);
    }
    if unjournaled {
        // Nothing in the store says to wait: the same work is due again at once. A minute
        // keeps a failure that repeats from running the scheduler hot.
        let later = now + 60;
        next = Some(next.map_or(later, |n| n.max(later)));
    }
    let mut report = engine.report;
    report.unscheduled = unreadable_policies(&engine.data);
    debug_assert!(
        report
            .outcomes
            .iter()
            .all(|o| o.result != OutcomeKind::AlreadyRotated)
    );
    Ok((report, next))
}
