//! Targets: outside systems that must accept a new value before consumers use it (a
//! PostgreSQL role, a Redis ACL user). The rotation state machine drives them through the
//! [`Target`] trait; implementations live in this module, one file each.

use crate::secret::SecretString;

/// Why a target refused or could not be reached. Messages name the target, never a value.
#[derive(Debug, thiserror::Error)]
#[error("target {target}: {message}")]
pub struct TargetError {
    /// The target's name in the policy.
    pub target: String,
    /// What failed.
    pub message: String,
}

/// An outside system whose credential keyd rotates.
///
/// The state machine calls `accepts` and `set` in the set step, `test` in the test step and
/// `retire` after the grace period, each possibly more than once: a process killed mid-step
/// repeats the step on restart. An implementor must therefore:
/// - make every call idempotent: `set` with a value already set, or `retire` of a value already
///   retired, succeeds and changes nothing;
/// - keep the current value working through `set` and `test`, unless the target cannot hold two
///   values at once (then document the window);
/// - in `test`, open a new session with the pending value, proving what consumers will do;
/// - never send a plaintext value where the target could log it, and never put one in an
///   error message.
pub trait Target {
    /// Whether `value` already works (a crash after `set` changed the target).
    fn accepts(&self, value: &SecretString) -> Result<bool, TargetError>;
    /// Makes the target accept `pending` (alongside `current` where it can).
    fn set(
        &self,
        pending: &SecretString,
        current: Option<&SecretString>,
    ) -> Result<(), TargetError>;
    /// Proves `pending` works from a new session.
    fn test(&self, pending: &SecretString) -> Result<(), TargetError>;
    /// Stops the target accepting `old`; `current` must keep working.
    fn retire(&self, old: &SecretString, current: &SecretString) -> Result<(), TargetError>;
}
