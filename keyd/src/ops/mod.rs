//! User operations: what `keyctl` commands and the daemon's API call. Each takes the store lock,
//! does its work through the layers below (reconcile, the rotation engine, delivery), and
//! returns a report with no values in it.

mod apply;
mod rotate;

pub use apply::{ApplyOptions, ApplyReport, SecretSummary, apply, resolve_sinks};
pub use rotate::{actor, deliver_all, retire, rotate, run_due, select};
