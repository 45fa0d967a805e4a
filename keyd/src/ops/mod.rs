//! User operations: what `keyctl` commands and the daemon's API call. Each takes the store lock,
//! does its work through the layers below (reconcile, the rotation engine, delivery), and
//! returns a report with no values in it.

mod apply;
mod import;
mod recover;
mod rotate;

pub use apply::{ApplyOptions, ApplyReport, SecretSummary, apply, apply_file, resolve_sinks};
pub use import::{ImportEntry, ImportOptions, ImportReport, Verdict, env_name, import};
pub use recover::{
    BackupReport, RecipientChange, RecipientEntry, RestoreReport, StoreDiff, add_recipient, backup,
    diff, list_recipients, read_backup, remove_recipient, restore,
};
pub use rotate::{actor, deliver_all, retire, rotate, run_due, select};
