//! The library's error: one enum that wraps each layer's typed error and adds the few failures
//! of the operations themselves. Messages name files, lines and secrets, never values.

use crate::{docker, material, policy, sinks, sources, store, targets};

/// Every error the library returns. Messages name files, lines and secrets, never values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy is invalid or unreadable.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// The store cannot be opened, read or written.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// An import source could not be read.
    #[error(transparent)]
    Source(#[from] sources::SourceError),
    /// A recipient could not be added or removed.
    #[error("{0}")]
    Recipient(String),
    /// A backup is not a consistent store.
    #[error("the backup {path} is not a consistent store: {reason}")]
    InconsistentBackup {
        /// The backup.
        path: std::path::PathBuf,
        /// What is wrong (names and versions only).
        reason: String,
    },
    /// A restore would change what the store in place holds besides values (recipients,
    /// policy, sinks, hooks, targets), and that kind of change was not accepted.
    #[error("the backup {} would change the store's {}: nothing was restored{what}", path.display(), changes.join(", "))]
    RestoreRefused {
        /// The backup.
        path: std::path::PathBuf,
        /// The kinds of change not accepted (`recipients`, `policy`, `sinks`, `hooks`,
        /// `targets`).
        changes: Vec<&'static str>,
        /// One line per kind: what changes (names and settings, never values).
        what: String,
    },
    /// A sink refused or failed.
    #[error(transparent)]
    Sink(#[from] sinks::SinkError),
    /// The Docker engine refused or failed (outside a delivery: `--init-swarm`).
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    /// A name did not resolve.
    #[error(transparent)]
    Lookup(#[from] store::LookupError),
    /// Key material could not be made.
    #[error(transparent)]
    Material(#[from] material::MaterialError),
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
    /// Retire waits for a rekey hook that has not succeeded.
    #[error(
        "{name}: the previous version is kept until the rekey hook succeeds ({message}); it is retried with backoff (`keyctl status` shows when)"
    )]
    RekeyPending {
        /// The secret.
        name: String,
        /// The hook's last failure.
        message: String,
    },
    /// A stack new to the store would overwrite outputs that already exist.
    #[error(
        "stack {stack} is not in the store, but its outputs already exist ({paths}): new values would replace them, and lose whatever they encrypt or log in to"
    )]
    WouldReplace {
        /// The stack.
        stack: String,
        /// The outputs found (a few, then a count).
        paths: String,
    },
    /// `keyctl store copy` found a store at its destination.
    #[error("{store} already holds a store")]
    StoreNotEmpty {
        /// The destination.
        store: String,
    },
    /// A stack's files would be delivered to another directory than the one they were last
    /// delivered to, and no `--out` asked for the move.
    #[error(
        "stack {stack} was last delivered to {}, and this would deliver it to {}: the files consumers read in {} would stop changing",
        from.display(),
        to.display(),
        from.display()
    )]
    DeliveryMoved {
        /// The stack.
        stack: String,
        /// Where its files were last delivered.
        from: std::path::PathBuf,
        /// Where this command would deliver them.
        to: std::path::PathBuf,
    },
    /// An operation panicked: a bug in keyd. Its message (which could name anything) goes to
    /// keyd's log through the panic hook, not here.
    #[error("internal error: {operation} panicked (details in keyd's log)")]
    Panicked {
        /// What was running.
        operation: &'static str,
    },
    /// A socket could not be served: another keyd answers on it, something else is at its
    /// path, or it could not be bound.
    #[error("{path}: {source}")]
    Socket {
        /// The socket's path.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A TCP listener (`--metrics`) could not be bound: the port is taken, the address is
    /// not this host's, or binding it needs a right keyd lacks.
    #[error("cannot serve {option} on {address}: {source}")]
    Listen {
        /// The option that asked for it.
        option: &'static str,
        /// The address.
        address: std::net::SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// The daemon's async runtime could not be started (threads, epoll, timers).
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// A version that does not exist was asked for.
    #[error("{name} has no version {version}")]
    NoSuchVersion {
        /// The output name.
        name: String,
        /// The version asked for.
        version: u64,
    },
}
