//! keyd generates, stores, rotates and delivers the key material container stacks need:
//! Fernet keys, RSA JWT signing pairs, TLS certificates, passwords and tokens, and values
//! derived from them. This crate is the library behind the `keyd` daemon and `keyctl`.
//!
//! - [`policy`]: the declarative policy of a stack, with file:line:col errors.
//! - [`material`]: one generator per kind.
//! - [`store`]: the age-encrypted, versioned store under the keyd home.
//! - [`sinks`]: delivery to a directory of files or a compose env file.
//! - [`apply()`]: reconcile a policy with the store and deliver (quickstart, apply).
//! - [`rotation`]: the crash-safe rotation state machine, its audit log and scheduler.
//! - [`targets`]: the `Target` trait outside systems implement.
//! - [`daemon`]: the keyd daemon: scheduler and local API on a Unix socket.
//! - [`secret`]: zeroizing secret types whose `Debug` prints nothing.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod apply;
pub mod daemon;
pub mod material;
pub mod policy;
pub mod rotation;
pub mod secret;
pub mod sinks;
pub mod store;
pub mod targets;

pub use apply::{ApplyOptions, ApplyReport, Change, SecretSummary, apply, resolve_sinks};

/// Every error the library returns. Messages name files, lines and secrets, never values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy is invalid or unreadable.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// The store cannot be opened, read or written.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A sink refused or failed.
    #[error(transparent)]
    Sink(#[from] sinks::SinkError),
    /// A name did not resolve.
    #[error(transparent)]
    Lookup(#[from] store::LookupError),
    /// RSA generation failed.
    #[error(transparent)]
    Rsa(#[from] material::rsa::RsaError),
    /// Certificate generation failed.
    #[error(transparent)]
    Tls(#[from] material::tls::TlsError),
    /// A secret's kind differs between the store and the policy.
    #[error(
        "{stack}/{name} is a {stored} secret in the store but the policy declares it as {declared}"
    )]
    KindChanged {
        /// The stack.
        stack: String,
        /// The secret.
        name: String,
        /// Kind in the store.
        stored: policy::Kind,
        /// Kind in the policy.
        declared: policy::Kind,
    },
    /// A target refused or could not be reached.
    #[error(transparent)]
    Target(#[from] targets::TargetError),
    /// The secret cannot be rotated.
    #[error("{name} cannot be rotated: {reason}")]
    NotRotatable {
        /// The secret.
        name: String,
        /// Why.
        reason: String,
    },
    /// The test step refused the pending value.
    #[error("{name}: the new value failed its test: {reason}")]
    TestFailed {
        /// The secret.
        name: String,
        /// What failed (no values).
        reason: String,
    },
    /// A version that does not exist was asked for.
    #[error("{name} has no version {version}")]
    NoSuchVersion {
        /// The output name.
        name: String,
        /// The version asked for.
        version: u64,
    },
}
