//! User operations: what `keyctl` commands and the daemon's API call. Each takes the store lock,
//! does its work through the layers below (reconcile, the rotation engine, delivery), and
//! returns a report with no values in it; `query` holds the read-only ones.
//!
//! Every function here blocks (store locks, decryption, hooks, and the private Tokio runtimes
//! of the PostgreSQL target and the Docker client): call it from a plain thread or through
//! `tokio::task::spawn_blocking`, never on a runtime thread (there a nested `block_on` panics,
//! and a store read holds up every other task of that runtime).

mod apply;
pub mod check;
mod import;
pub mod plan;
pub mod query;
mod recover;
mod relocate;
mod restore;
mod rotate;
mod store_diff;

pub use apply::{ApplyOptions, ApplyReport, SecretSummary, apply, apply_file, resolve_sinks};
pub use import::{ImportEntry, ImportOptions, ImportReport, Verdict, env_name, import};
pub use recover::{
    BackupReport, RecipientChange, RecipientEntry, add_recipient, backup, list_recipients,
    remove_recipient,
};
pub use relocate::{CopyReport, StoreInfo, copy_store, store_info};
pub use restore::{RestoreOptions, RestoreReport, read_backup, restore};
pub use rotate::{actor, deliver_all, retire, rotate, rotate_cautions, run_due, select};
pub use store_diff::{Change, StoreDiff, diff};

use std::path::PathBuf;
use std::sync::Arc;

use crate::store::{Home, StoreLocation};

/// The home at `dir`, its store where `location` says (`--store`): the home's `store.age`, or
/// the swarm store of that name on the engine `DOCKER_HOST` names. The identity is the home's
/// either way. Nothing is read or asked of the engine until the store is used.
pub fn home_at(dir: impl Into<PathBuf>, location: &StoreLocation) -> Home {
    let home = Home::new(dir);
    match location {
        StoreLocation::File => home,
        StoreLocation::Swarm(name) => {
            home.with_remote(Arc::new(crate::docker::store::SwarmStore::new(name)))
        }
    }
}
