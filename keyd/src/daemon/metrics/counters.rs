//! What the daemon counts while it runs, for `/metrics`: rotation outcomes, failed rotation
//! steps, the plugin's requests and how long its `GetSecret` answers took. Atomics only: the
//! scheduler, the API and the plugin add to them on the runtime thread or the blocking pool
//! without a lock, and a scrape reads them without stopping anyone. They count from the start
//! of this process (Prometheus' counters may reset; `rate` and `increase` allow for it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::rotation::{OutcomeKind, RotationReport};
use crate::store::Step;

/// Every outcome a report can carry, in the order they are shown, with its label value.
pub(super) const RESULTS: [(OutcomeKind, &str); 8] = [
    (OutcomeKind::Rotated, "rotated"),
    (OutcomeKind::Resumed, "resumed"),
    (OutcomeKind::AlreadyRotated, "already_rotated"),
    (OutcomeKind::Waiting, "waiting"),
    (OutcomeKind::Failed, "failed"),
    (OutcomeKind::Retired, "retired"),
    (OutcomeKind::NothingToRetire, "nothing_to_retire"),
    (OutcomeKind::RekeyFailed, "rekey_failed"),
];

/// Every step a rotation can fail at, with its label value; `rekey` is the rekey hook, which
/// fails after the rotation itself is done.
pub(super) const STEPS: [&str; 6] = ["set", "test", "deliver", "promote", "finish", "rekey"];

/// How a `GetSecret` request ended, with its label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PluginResult {
    /// A value was served.
    Served,
    /// The request was understood and refused (another stack's secret, no such secret).
    Refused,
    /// The request could not be read, or the store could not.
    Failed,
}

pub(super) const PLUGIN_RESULTS: [&str; 3] = ["served", "refused", "failed"];

/// The upper bounds (seconds) of the `GetSecret` latency histogram's buckets: from a cached
/// view's answer (well under a millisecond) to a store decrypted at 10,000 secrets.
pub(super) const BUCKETS: [f64; 12] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The daemon's counters. Cheap to update: one atomic add each.
#[derive(Debug, Default)]
pub struct Counters {
    rotations: [AtomicU64; RESULTS.len()],
    step_failures: [AtomicU64; STEPS.len()],
    plugin_requests: [AtomicU64; PLUGIN_RESULTS.len()],
    /// Per bucket, not cumulative (summed when rendered); the last one is beyond every bound.
    get_secret_buckets: [AtomicU64; BUCKETS.len() + 1],
    get_secret_micros: AtomicU64,
}

/// A copy of the counters at one moment, for rendering.
#[derive(Clone, Debug, Default)]
pub(super) struct Snapshot {
    pub rotations: [u64; RESULTS.len()],
    pub step_failures: [u64; STEPS.len()],
    pub plugin_requests: [u64; PLUGIN_RESULTS.len()],
    /// Cumulative counts, one per bound in [`BUCKETS`], then `+Inf` (the count).
    pub get_secret_cumulative: [u64; BUCKETS.len() + 1],
    pub get_secret_seconds: f64,
}

impl Counters {
    /// Counts every outcome in `report`, and the step each failed rotation stopped at.
    pub fn count_report(&self, report: &RotationReport) {
        for outcome in &report.outcomes {
            if let Some(i) = RESULTS.iter().position(|(k, _)| *k == outcome.result) {
                self.rotations[i].fetch_add(1, Ordering::Relaxed);
            }
            let step = match (outcome.result, outcome.step) {
                (OutcomeKind::Failed, Some(step)) => Some(step_label(step)),
                (OutcomeKind::RekeyFailed, _) => Some("rekey"),
                _ => None,
            };
            if let Some(i) = step.and_then(|s| STEPS.iter().position(|l| *l == s)) {
                self.step_failures[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Counts one `GetSecret` request that ended as `result` after `took`.
    pub fn count_get_secret(&self, result: PluginResult, took: Duration) {
        let i = match result {
            PluginResult::Served => 0,
            PluginResult::Refused => 1,
            PluginResult::Failed => 2,
        };
        self.plugin_requests[i].fetch_add(1, Ordering::Relaxed);
        let seconds = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        self.get_secret_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.get_secret_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counters now. Each is read once; counters added to meanwhile may be a count apart,
    /// which Prometheus' next scrape makes up.
    pub(super) fn snapshot(&self) -> Snapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut snapshot = Snapshot {
            rotations: std::array::from_fn(|i| load(&self.rotations[i])),
            step_failures: std::array::from_fn(|i| load(&self.step_failures[i])),
            plugin_requests: std::array::from_fn(|i| load(&self.plugin_requests[i])),
            get_secret_seconds: load(&self.get_secret_micros) as f64 / 1e6,
            ..Snapshot::default()
        };
        let mut total = 0;
        for (i, bucket) in self.get_secret_buckets.iter().enumerate() {
            total += load(bucket);
            snapshot.get_secret_cumulative[i] = total;
        }
        snapshot
    }
}

/// A step's label value (`set`, `test`, …).
pub(super) fn step_label(step: Step) -> &'static str {
    match step {
        Step::Set => "set",
        Step::Test => "test",
        Step::Deliver => "deliver",
        Step::Promote => "promote",
        Step::Finish => "finish",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative_and_counts_every_request() {
        let counters = Counters::default();
        counters.count_get_secret(PluginResult::Served, Duration::from_micros(100));
        counters.count_get_secret(PluginResult::Served, Duration::from_millis(3));
        counters.count_get_secret(PluginResult::Refused, Duration::from_secs(10));
        let s = counters.snapshot();
        assert_eq!(s.plugin_requests, [2, 1, 0]);
        assert_eq!(s.get_secret_cumulative[0], 1);
        assert_eq!(s.get_secret_cumulative[3], 2);
        assert_eq!(s.get_secret_cumulative[BUCKETS.len() - 1], 2);
        assert_eq!(s.get_secret_cumulative[BUCKETS.len()], 3);
        assert!((s.get_secret_seconds - 10.0031).abs() < 1e-9);
    }
}
