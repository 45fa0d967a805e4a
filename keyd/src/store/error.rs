//! The store's error: why the store could not be opened, read or written.

use std::path::PathBuf;

use super::model::FORMAT;

/// Why the store could not be opened, read or written. Messages name files, never values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No identity in the home.
    #[error("no keyd home at {} (no identity.txt)", home.display())]
    NotInitialised {
        /// The home directory.
        home: PathBuf,
    },
    /// A store exists but its identity is gone: it cannot be decrypted, and a new identity
    /// would not help.
    #[error("the store {} exists but its identity {} is missing", store.display(), identity.display())]
    IdentityMissing {
        /// Where the identity should be.
        identity: PathBuf,
        /// The store.
        store: PathBuf,
    },
    /// The identity file holds no usable age X25519 identity.
    #[error("{} holds no valid age identity (expected a line starting with AGE-SECRET-KEY-1)", path.display())]
    BadIdentity {
        /// The identity file.
        path: PathBuf,
    },
    /// The identity file can be read by users other than its owner.
    #[error("{} is readable by other users (mode {mode:04o}): anyone who can read it can decrypt the store", path.display())]
    IdentityExposed {
        /// The identity file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The identity file belongs to another user, who could replace the key.
    #[error("{} is owned by uid {owner}, not by uid {euid} keyd runs as: its owner could replace the key the store is opened with", path.display())]
    IdentityNotOwned {
        /// The identity file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The effective uid of this process.
        euid: u32,
    },
    /// Users other than the home's owner can write to the home.
    #[error("the keyd home {} can be written by other users (mode {mode:04o}): they could replace its store or its identity", home.display())]
    HomeWritable {
        /// The home directory.
        home: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A passphrase store's header asks for more scrypt work than keyd reads with.
    #[error("the store {} asks for scrypt work factor {required} (2^{required}), above the {max} keyd reads passphrase stores with: keyd writes them with at most {max}", store.display())]
    WorkFactorTooHigh {
        /// The store.
        store: PathBuf,
        /// The work factor its header names.
        required: u8,
        /// The greatest one keyd reads.
        max: u8,
    },
    /// The home is a passphrase home and no passphrase could be had.
    #[error("{} marks a passphrase store, and no passphrase could be read: {reason}", identity.display())]
    PassphraseNeeded {
        /// The identity file (the marker).
        identity: PathBuf,
        /// Why not.
        reason: String,
    },
    /// The passphrase does not open the store.
    #[error("the passphrase does not open the store {}", store.display())]
    WrongPassphrase {
        /// The store.
        store: PathBuf,
    },
    /// The store was encrypted to another identity.
    #[error("the store {} was not encrypted to the identity in {}", store.display(), identity.display())]
    WrongIdentity {
        /// The identity tried.
        identity: PathBuf,
        /// The store.
        store: PathBuf,
    },
    /// The store is truncated, altered, or not a keyd store.
    #[error("the store {} cannot be read: {reason}", path.display())]
    Corrupt {
        /// The store.
        path: PathBuf,
        /// What failed (no contents).
        reason: String,
    },
    /// The store was written by a newer keyd.
    #[error("the store {} has format {found}; this keyd reads format {FORMAT}", path.display())]
    NewerFormat {
        /// The store.
        path: PathBuf,
        /// The format found.
        found: u32,
    },
    /// The home shows that a store existed, but `store.age` is gone: making a new one would
    /// replace every secret a running stack depends on.
    #[error("the store {} is missing, but {evidence} shows this home had one", store.display())]
    StoreLost {
        /// Where the store should be.
        store: PathBuf,
        /// What shows it existed.
        evidence: String,
    },
    /// The store is older than the last one written here: a backup or an old copy was put back.
    #[error("the store {} is generation {found}, older than generation {expected} written here last (store.generation): an older copy was put back in place", path.display())]
    RolledBack {
        /// The store.
        path: PathBuf,
        /// The generation inside it.
        found: u64,
        /// The generation recorded beside it.
        expected: u64,
    },
    /// A remote store (the swarm store) could not be reached or read.
    #[error("the store {store}: {message}")]
    Remote {
        /// The store (`swarm:NAME`).
        store: String,
        /// What failed (no contents).
        message: String,
    },
    /// A remote store holds no generation yet.
    #[error("the store {store} holds no generation yet")]
    RemoteEmpty {
        /// The store (`swarm:NAME`).
        store: String,
    },
    /// Another writer committed this generation first: nothing of this commit was kept.
    #[error(
        "another keyd committed generation {generation} of the store {store} first: this change was not committed, and nothing that depends on it was done"
    )]
    Conflict {
        /// The store.
        store: String,
        /// The generation both tried to commit.
        generation: u64,
    },
    /// A backup whose MAC does not show this home's identity made it (`store/backup.rs`):
    /// anyone can encrypt a file to a home's public recipient key.
    #[error("the backup {} was not made with this home's identity: {reason}", path.display())]
    ForeignBackup {
        /// The backup.
        path: PathBuf,
        /// What its MAC said.
        reason: &'static str,
    },
    /// An operating system error on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}
