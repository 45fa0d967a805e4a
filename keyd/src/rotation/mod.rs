//! Rotation: one crash-safe state machine for every kind. create → set → test → deliver →
//! promote, then retire after the grace period. The rotation in flight is a journal in the
//! store (`SecretRecord::rotation`), persisted before each step acts; every step is idempotent,
//! and every resume begins by re-delivering the persisted state, so a process killed anywhere
//! finishes exactly one rotation on its next start and never loses the current value.
//!
//! `engine.rs` holds the [`Engine`] and its record access (one [`SecretKey`] per secret),
//! `steps.rs` the steps and the journal writes between them, `retire.rs` rekey, retire and
//! reload retries, `target.rs` what is asked of targets, `hooks.rs` the test-only points,
//! `report.rs` what the caller is told, `audit.rs` the audit log and `schedule.rs` the pure
//! scheduler.

mod audit;
mod engine;
mod hooks;
mod report;
mod retire;
pub mod schedule;
mod steps;
mod target;

pub use audit::{AuditLog, line_id, save_logged};
pub(crate) use engine::{Engine, SecretKey};
pub use report::{Outcome, OutcomeKind, RotationReport};
pub use schedule::DEFAULT_GRACE;
