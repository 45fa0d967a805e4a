//! keyd generates, stores, rotates and delivers the key material container stacks need:
//! Fernet keys, RSA JWT signing pairs, TLS certificates, passwords and tokens, and values
//! derived from them. This crate is the library behind the `keyd` daemon and `keyctl`.
//!
//! Modules, top to bottom; each imports only modules below it (docs/architecture.md):
//!
//! - [`fuzzing`]: harnesses for the fuzz targets and the corpus tests (nothing else uses it).
//! - [`daemon`]: the keyd daemon: scheduler and local API on a Unix socket.
//! - [`wire`]: the API's requests and answers, shared by the daemon and keyctl.
//! - [`ops`]: user operations: quickstart/apply, rotate, retire, re-deliver.
//! - `reconcile`: policy against store: what an apply creates, derives and records.
//! - [`rotation`]: the crash-safe rotation state machine, its audit log and scheduler.
//! - [`deliver`]: one delivery pass: a stack's values to its sinks.
//! - [`derive`]: literals and templates computed from other values.
//! - [`Error`]: the library's error, wrapping each layer's.
//! - [`sinks`]: files and envfile sinks, built from the policy's `SinkSpec`s.
//! - [`targets`]: the `Target` trait and the PostgreSQL and Redis targets.
//! - [`store`]: the age-encrypted, versioned store under the keyd home.
//! - [`policy`]: the declarative policy of a stack, with file:line:col errors.
//! - [`sources`]: values a stack already has (directory, `.env`, compose file), for import.
//! - [`material`]: one generator per kind.
//! - [`log`]: keyd's log lines on stderr, text or JSON.
//! - [`secret`]: zeroizing secret types whose `Debug` prints nothing; [`clock`]: time;
//!   `command`: hook commands run with a timeout; `regular_file`: files at paths others may
//!   control, opened without following a link or blocking, read within a bound.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod clock;
mod command;
pub mod daemon;
pub mod deliver;
pub mod derive;
pub mod docker;
mod error;
pub mod fuzzing;
pub mod log;
pub mod material;
pub mod notify;
pub mod ops;
pub mod policy;
mod reconcile;
mod regular_file;
pub mod rotation;
#[cfg(test)]
mod scratch;
pub mod secret;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod targets;
pub mod wire;

pub use error::Error;
pub use ops::{ApplyOptions, ApplyReport, SecretSummary, apply};
