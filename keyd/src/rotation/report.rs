//! What the engine tells its caller: one [`Outcome`] per secret acted on, and the deliveries
//! made, gathered in a [`RotationReport`].

use serde::{Deserialize, Serialize};

use crate::policy::Kind;
use crate::sinks::DeliveryReport;
use crate::store::Step;

impl OutcomeKind {
    /// The outcome in words, as a log line says it: `rotated`, `nothing to retire`, ….
    pub fn as_words(self) -> &'static str {
        match self {
            OutcomeKind::Rotated => "rotated",
            OutcomeKind::Resumed => "resumed and rotated",
            OutcomeKind::AlreadyRotated => "already rotated by another process",
            OutcomeKind::Waiting => "delivered, waiting to promote",
            OutcomeKind::Failed => "rotation failed",
            OutcomeKind::Retired => "overlap ended",
            OutcomeKind::NothingToRetire => "nothing to retire",
            OutcomeKind::RekeyFailed => "rekey hook failed",
        }
    }
}

impl AsRef<RotationReport> for RotationReport {
    fn as_ref(&self) -> &RotationReport {
        self
    }
}

impl RotationReport {
    /// Adds what one delivery pass did (see [`DeliveryReport::merge_into`]).
    pub fn add_delivery(&mut self, pass: DeliveryReport) {
        DeliveryReport::merge_into(&mut self.deliveries, pass);
    }
}

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
    /// A scheduler pass: stacks left out because the policy stored with them no longer
    /// parses (as this keyd reads it), each with why; nothing of theirs is scheduled until a
    /// `keyctl apply` stores a policy that does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unscheduled: Vec<String>,
}
