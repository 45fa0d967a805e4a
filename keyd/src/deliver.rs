//! One delivery pass: the values a stack delivers now (as [`Delivery`]s), checked by every sink
//! before any sink writes, then delivered. Sinks record what they wrote in the stack's ledger;
//! persisting it is the caller's (it rides along with the next store write).

use std::collections::HashSet;

use crate::sinks::{self, Delivery, DeliveryReport, Pass, SinkError};
use crate::store::StackRecord;

/// Every value a stack delivers now, by output name (secrets removed from the policy excluded).
pub fn stack_deliveries(stack: &StackRecord) -> Vec<Delivery> {
    stack
        .secrets
        .values()
        .filter(|r| !r.removed)
        .flat_map(|r| {
            r.outputs.iter().filter_map(|o| {
                let (version, value) = r.delivered(o.part)?;
                Some(Delivery {
                    name: o.name.clone(),
                    version,
                    value,
                })
            })
        })
        .collect()
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
) -> Result<Vec<DeliveryReport>, SinkError> {
    let deliveries = stack_deliveries(stack);
    deliver_values(stack, &deliveries, changed)
}

/// [`deliver`] with deliveries the caller already computed (and checked).
pub fn deliver_values(
    stack: &mut StackRecord,
    deliveries: &[Delivery],
    changed: Option<&HashSet<String>>,
) -> Result<Vec<DeliveryReport>, SinkError> {
    let sinks: Vec<_> = stack.sinks.iter().map(sinks::build).collect();
    for sink in &sinks {
        sink.check(deliveries)?;
    }
    let pass = changed.map_or(Pass::Full, Pass::Only);
    let mut reports = Vec::with_capacity(sinks.len());
    for sink in &sinks {
        reports.push(sink.deliver(deliveries, pass, &mut stack.ledger)?);
    }
    Ok(reports)
}

/// Tells every sink of `stack` that `versions` of secret `name` are retired.
pub fn retire(stack: &mut StackRecord, name: &str, versions: &[u64]) -> Result<(), SinkError> {
    let Some(record) = stack.secrets.get(name) else {
        return Ok(());
    };
    let outputs: Vec<String> = record.outputs.iter().map(|o| o.name.clone()).collect();
    for spec in stack.sinks.iter() {
        let sink = sinks::build(spec);
        for output in &outputs {
            for &v in versions {
                sink.retire(output, v, &mut stack.ledger)?;
            }
        }
    }
    Ok(())
}
