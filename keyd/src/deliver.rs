//! One delivery pass: the values a stack delivers now (as [`Delivery`]s), checked by every sink
//! before any sink writes, then delivered. Sinks record what they wrote in the stack's ledger;
//! persisting it is the caller's (it rides along with the next store write).

use std::collections::HashSet;

use crate::policy::{SinkSpec, Sinks};
use crate::secret::Value;
use crate::sinks::{self, Delivery, DeliveryReport, Pass, SinkError};
use crate::store::{ReloadOwed, StackRecord};

/// Every value a stack delivers now, by output name (secrets removed from the policy excluded).
pub fn stack_deliveries(stack: &StackRecord) -> Vec<Delivery> {
    deliveries_of(stack, |_| true)
}

/// The values of the secrets `which` selects (by name) that a stack delivers now.
pub fn deliveries_of(stack: &StackRecord, which: impl Fn(&str) -> bool) -> Vec<Delivery> {
    stack
        .secrets
        .iter()
        .filter(|(name, r)| !r.removed && which(name))
        .flat_map(|(secret, r)| {
            r.outputs.iter().filter_map(|o| {
                let (version, value) = r.delivered(o.part)?;
                Some(Delivery {
                    secret: secret.clone(),
                    name: o.name.clone(),
                    version,
                    value,
                })
            })
        })
        .collect()
}

/// Whether `a` and `b` deliver the same values under the same names and versions (values
/// compared in constant time).
pub fn same_deliveries(a: &[Delivery], b: &[Delivery]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(a, b)| {
            (&a.secret, &a.name, a.version) == (&b.secret, &b.name, b.version)
                && matches!(a.value, Value::Public(_)) == matches!(b.value, Value::Public(_))
                && crate::secret::same_bytes(
                    a.value.expose().as_bytes(),
                    b.value.expose().as_bytes(),
                )
        })
}

/// Has every sink in `sinks` say whether a delivery could start at all, writing nothing
/// ([`crate::sinks::Sink::ready`]): asked before a command persists anything.
pub fn ready(sinks: &Sinks) -> Result<(), SinkError> {
    for spec in sinks.iter() {
        sinks::build(spec).ready()?;
    }
    Ok(())
}

/// Has every sink of `stack` check every value, writing nothing.
pub fn check(stack: &StackRecord, deliveries: &[Delivery]) -> Result<(), SinkError> {
    for spec in stack.sinks.iter() {
        sinks::build(spec).check(deliveries)?;
    }
    Ok(())
}

/// Delivers the persisted state of `stack` to its sinks (all checked first). With
/// `changed = Some(outputs)` only those outputs are looked at (a rotation step); `None` looks
/// at every output and restores anything changed by hand.
pub fn deliver(
    stack: &mut StackRecord,
    changed: Option<&HashSet<String>>,
    now: i64,
) -> Result<Vec<DeliveryReport>, SinkError> {
    // A files sink looks only at the secrets a pass changed; every other sink is given every
    // value (an env file is rendered whole).
    let deliveries = match changed {
        Some(changed) if stack.sinks.iter().all(|s| matches!(s, SinkSpec::Files(_))) => {
            let touched: HashSet<&str> = stack
                .secrets
                .iter()
                .filter(|(_, r)| r.outputs.iter().any(|o| changed.contains(&o.name)))
                .map(|(name, _)| name.as_str())
                .collect();
            deliveries_of(stack, |name| touched.contains(name))
        }
        _ => stack_deliveries(stack),
    };
    deliver_values(stack, &deliveries, changed, now)
}

/// [`deliver`] with deliveries the caller already computed.
///
/// One value's failure never blocks the others: a value a sink refuses is left out of that
/// sink's pass (the sink keeps delivering the rest), a sink that fails does not stop the next
/// one, and every failure is returned together once all sinks had their turn. The next pass
/// tries again.
///
/// A files sink's reload hook runs when the pass changed files, or when an earlier run of it
/// failed (`reload_owed`, with a retry time for the daemon, taken from `now`).
pub fn deliver_values(
    stack: &mut StackRecord,
    deliveries: &[Delivery],
    changed: Option<&HashSet<String>>,
    now: i64,
) -> Result<Vec<DeliveryReport>, SinkError> {
    let sinks: Vec<_> = stack.sinks.iter().map(sinks::build).collect();
    let pass = changed.map_or(Pass::Full, Pass::Only);
    let mut reports = Vec::with_capacity(sinks.len());
    let mut failures = Vec::new();
    for sink in &sinks {
        let delivered = if sink.check(deliveries).is_ok() {
            sink.deliver(deliveries, pass, &mut stack.sink_records())
        } else {
            // Find the values this sink refuses, one by one; deliver the others.
            let refused: HashSet<&str> = deliveries
                .iter()
                .filter_map(|d| {
                    let error = sink.check(std::slice::from_ref(d)).err()?;
                    failures.push(error);
                    Some(d.name.as_str())
                })
                .collect();
            let accepted: Vec<Delivery> = stack_deliveries(stack)
                .into_iter()
                .filter(|d| !refused.contains(d.name.as_str()))
                .collect();
            sink.deliver(&accepted, pass, &mut stack.sink_records())
        };
        match delivered {
            Ok(report) => {
                if let Err(e) = reload_if_needed(stack, &report, now) {
                    failures.push(e);
                }
                if let Err(e) = follow_files_move(stack, &report, pass) {
                    failures.push(e);
                }
                reports.push(report);
            }
            Err(e) => failures.push(e),
        }
    }
    match failures.len() {
        0 => Ok(reports),
        1 => Err(failures.remove(0)),
        _ => Err(SinkError::Several(failures)),
    }
}

/// Records where a files sink has just delivered `stack`. When that is another directory than
/// the last one (a move `--out` asked for: apply and import refuse any other), keyd's files of
/// this stack leave the old directory now that the new one holds every value; until they
/// have, the old directory stays recorded, so the next pass tries again. Only a full pass
/// vouches that the new directory holds every value: a rotation's pass records nothing.
fn follow_files_move(
    stack: &mut StackRecord,
    report: &DeliveryReport,
    pass: Pass<'_>,
) -> Result<(), SinkError> {
    if report.sink != "files" || !matches!(pass, Pass::Full) {
        return Ok(());
    }
    if let Some(old) = &stack.files_delivered_to
        && !sinks::same_directory(old, &report.location)
    {
        // Every name the stack ever delivered, those of secrets it no longer declares too.
        let names: Vec<&str> = stack
            .secrets
            .values()
            .flat_map(|r| r.outputs.iter().map(|o| o.name.as_str()))
            .collect();
        sinks::remove_delivered(old, &names)?;
    }
    stack.files_delivered_to = Some(report.location.clone());
    Ok(())
}

/// Runs the files sink's reload hook after `report` wrote something, or while an earlier run is
/// owed; records a failure (with backoff) in `stack.reload_owed`, and clears it on success.
fn reload_if_needed(
    stack: &mut StackRecord,
    report: &DeliveryReport,
    now: i64,
) -> Result<(), SinkError> {
    let Some(hook) = stack.sinks.files().and_then(|f| f.reload.clone()) else {
        stack.reload_owed = None;
        return Ok(());
    };
    if report.sink != "files" || (report.written.is_empty() && stack.reload_owed.is_none()) {
        return Ok(());
    }
    match sinks::run_reload_hook(&hook) {
        Ok(()) => {
            stack.reload_owed = None;
            Ok(())
        }
        Err(e) => {
            let attempts = stack.reload_owed.as_ref().map_or(0, |o| o.attempts) + 1;
            stack.reload_owed = Some(ReloadOwed {
                attempts,
                last_error: e.to_string(),
                retry_at: now + crate::clock::backoff(attempts),
            });
            Err(e)
        }
    }
}

/// Tells every sink of `stack` that `versions` of secret `name` are retired.
pub fn retire(stack: &mut StackRecord, name: &str, versions: &[u64]) -> Result<(), SinkError> {
    let Some(record) = stack.secrets.get(name) else {
        return Ok(());
    };
    let outputs: Vec<String> = record.outputs.iter().map(|o| o.name.clone()).collect();
    let built: Vec<_> = stack.sinks.iter().map(sinks::build).collect();
    for sink in built {
        for output in &outputs {
            for &v in versions {
                sink.retire(output, v, &mut stack.sink_records())?;
            }
        }
    }
    Ok(())
}
