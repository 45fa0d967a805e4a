//! User operations: what `keyctl` commands and the daemon's API call. Each takes the store lock,
//! does its work through the layers below (reconcile, the rotation engine, delivery), and
//! returns a report with no values in it; `query` holds the read-only ones.
//!
//! Every function here blocks (store locks, decryption, hooks, and the private Tokio runtimes
//! of the PostgreSQL target and the Docker client): call it from a plain thread or through
//! `tokio::task::spawn_blocking`, never on a runtime thread (there a nested `block_on` panics,
//! and a store read holds up every other task of that runtime).

mod apply;
mod import;
pub mod query;
mod recover;
mod restore;
mod rotate;
mod store_diff;

pub use apply::{ApplyOptions, ApplyReport, SecretSummary, apply, apply_file, resolve_sinks};
pub use import::{ImportEntry, ImportOptions, ImportReport, Verdict, env_name, import};
pub use recover::{
    BackupReport, RecipientChange, RecipientEntry, add_recipient, backup, list_recipients,
    remove_recipient,
};
pub use restore::{RestoreOptions, RestoreReport, read_backup, restore};
pub use rotate::{actor, deliver_all, retire, rotate, run_due, select};
pub use store_diff::{Change, StoreDiff, diff};
