//! Where a store's generations live. The file store (the default) is the home's `store.age`;
//! a [`RemoteStore`] keeps the same age-encrypted bytes somewhere several hosts can reach (the
//! swarm store, `docker::store`, in the swarm's Raft log). The rest of the library loads and
//! saves through [`super::Home`] and never knows which one it runs on.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::error::StoreError;

/// The environment variable naming the store when `--store` is not given.
pub const STORE_ENV: &str = "KEYD_STORE";

/// Which store a command works on, as `--store` (or [`STORE_ENV`]) names it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum StoreLocation {
    /// `file`: the home's `store.age`.
    #[default]
    File,
    /// `swarm:NAME`: generations kept as Swarm configs labelled `keyd.store=NAME`.
    Swarm(String),
}

impl StoreLocation {
    /// The location [`STORE_ENV`] names, else the file store.
    pub fn from_environment() -> Result<StoreLocation, String> {
        match std::env::var(STORE_ENV) {
            Ok(text) if !text.is_empty() => text
                .parse()
                .map_err(|e: String| format!("{STORE_ENV}: {e}")),
            _ => Ok(StoreLocation::File),
        }
    }
}

impl FromStr for StoreLocation {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if text == "file" {
            return Ok(StoreLocation::File);
        }
        let Some(name) = text.strip_prefix("swarm:") else {
            return Err(format!(
                "unknown store {text:?} (expected `file` or `swarm:NAME`)"
            ));
        };
        // The name goes into config names and label values: keep it to what both accept,
        // short enough that `keyd-store-NAME-g<generation>-<nonce>-<chunk>` stays under the
        // engine's 64-character limit on names.
        let valid = !name.is_empty()
            && name.len() <= 24
            && name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !valid {
            return Err(format!(
                "store name {name:?} is not valid (expected 1 to 24 of a-z, 0-9, - and _, \
                 starting with a letter or digit)"
            ));
        }
        Ok(StoreLocation::Swarm(name.to_owned()))
    }
}

impl fmt::Display for StoreLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreLocation::File => f.write_str("file"),
            StoreLocation::Swarm(name) => write!(f, "swarm:{name}"),
        }
    }
}

/// One committed generation of a store: the age-encrypted bytes, exactly as `store.age` holds
/// them.
pub struct Blob {
    /// The generation committed.
    pub generation: u64,
    /// The encrypted store.
    pub bytes: Vec<u8>,
    /// The keyed digest it was committed with (hex; see `file::store_digest`).
    pub digest: String,
}

/// A store kept outside the home. An implementor must:
///
/// - make [`RemoteStore::commit`] a compare-and-swap: of two commits of one generation, exactly
///   one succeeds and the other gets [`StoreError::Conflict`], whatever hosts they run on;
/// - make [`RemoteStore::read`] return the newest generation whose commit succeeded, whole
///   (never a part of one, never one whose commit failed);
/// - number generations up one at a time, never reusing a number, even across
///   [`RemoteStore::clear`] (callers that replace a store continue its numbering);
/// - time out every call to whatever it talks to, and name no value in an error;
/// - keep older generations only as long as it says ([`RemoteStore::describe`]).
pub trait RemoteStore: fmt::Debug + Send + Sync {
    /// `swarm:NAME`, for messages and `keyctl status`.
    fn describe(&self) -> String;

    /// The newest committed generation, cheaply (no store bytes are read), or `None` when
    /// the store is empty.
    fn newest(&self) -> Result<Option<u64>, StoreError>;

    /// The newest committed generation and its bytes, or `None` when the store is empty.
    /// `known` is the newest generation the caller has seen (0 for none): where to start
    /// looking, never a promise that it is still there.
    fn read(&self, known: u64) -> Result<Option<Blob>, StoreError>;

    /// Commits `bytes` as `generation`, with `digest` (a digest keyed from the identity, which
    /// [`RemoteStore::read`] gives back for the reader to check): [`StoreError::Conflict`]
    /// when another writer committed that generation first (nothing of this commit is then
    /// left behind).
    fn commit(&self, generation: u64, bytes: &[u8], digest: &str) -> Result<(), StoreError>;

    /// Takes or renews, for `ttl`, the lease that lets one process run the scheduler, and
    /// says whether `holder` holds it now. A lease not renewed within its `ttl` lapses and
    /// another may take it.
    fn hold_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError>;

    /// Removes every generation and lease of this store (`keyctl store copy --force`
    /// overwriting it, and tests).
    fn clear(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_locations_parse_and_print_back() {
        assert_eq!("file".parse(), Ok(StoreLocation::File));
        assert_eq!(
            "swarm:flowkit".parse(),
            Ok(StoreLocation::Swarm("flowkit".into()))
        );
        assert_eq!(StoreLocation::Swarm("a-1".into()).to_string(), "swarm:a-1");
        for bad in [
            "swarm:",
            "swarm:Upper",
            "swarm:-x",
            "swarm:a b",
            "vault:x",
            "swarm:aaaaaaaaaaaaaaaaaaaaaaaaa",
        ] {
            assert!(bad.parse::<StoreLocation>().is_err(), "{bad}");
        }
    }
}
