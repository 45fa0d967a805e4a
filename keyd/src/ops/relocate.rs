//! Moving a store between backends (`keyctl store copy --to`) and saying where a store is
//! (`keyctl store info`): the file store and the swarm store hold the same encrypted bytes, so a
//! copy is one load and one commit.

use serde::Serialize;

use crate::error::Error;
use crate::store::{Home, StoreError};

/// What `keyctl store info` tells.
#[derive(Clone, Debug, Serialize)]
pub struct StoreInfo {
    /// `file` or `swarm`.
    pub backend: String,
    /// Where: the file's path, or `swarm:NAME`.
    pub location: String,
    /// The newest generation, when it could be read.
    pub generation: Option<u64>,
    /// Whether the store answered (the file could be read, or the engine answered).
    pub reachable: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
}

/// Where `home`'s store is, its newest generation and whether it answers. Decrypts nothing.
pub fn store_info(home: &Home) -> StoreInfo {
    let backend = match home.remote() {
        None => "file".to_owned(),
        Some(remote) => remote
            .describe()
            .split(':')
            .next()
            .unwrap_or_default()
            .to_owned(),
    };
    let newest = match home.remote() {
        Some(remote) => remote.newest(),
        None => home
            .lock_shared()
            .and_then(|lock| lock.newest_generation().map(Some)),
    };
    let (generation, error) = match newest {
        Ok(generation) => (generation, None),
        Err(e) => (None, Some(e.to_string())),
    };
    StoreInfo {
        backend,
        location: home.store_name().display().to_string(),
        reachable: error.is_none(),
        generation,
        error,
    }
}

/// What `keyctl store copy` did.
#[derive(Clone, Debug, Serialize)]
pub struct CopyReport {
    /// The store copied.
    pub from: String,
    /// Where to.
    pub to: String,
    /// The generation written there.
    pub generation: u64,
    /// How many stacks and secrets went.
    pub stacks: usize,
    /// How many secrets.
    pub secrets: usize,
}

/// Copies `from`'s store to `to`'s (the same identity opens both). A destination that holds a
/// store is refused unless `force`, which replaces it. The source is not changed.
pub fn copy_store(from: &Home, to: &Home, force: bool) -> Result<CopyReport, Error> {
    // The source's lock is let go before the destination's is taken: both are usually the
    // same home, whose one lock file cannot be held shared and taken exclusive at once.
    let mut data = from.lock_shared()?.load()?;
    let target = to.lock()?;
    if to.store_exists()? {
        if !force {
            return Err(Error::StoreNotEmpty {
                store: to.store_name().display().to_string(),
            });
        }
        if let Some(remote) = to.remote() {
            // The copy continues the replaced store's numbering: readers look for the
            // generation after the newest they saw (`RemoteStore::read`).
            let newest = remote.newest()?.unwrap_or(0);
            remote.clear()?;
            data.generation = data.generation.max(newest);
        }
    }
    if !to.identity_path().exists() {
        return Err(StoreError::NotInitialised {
            home: to.dir().to_owned(),
        }
        .into());
    }
    target.save(&mut data)?;
    Ok(CopyReport {
        from: from.store_name().display().to_string(),
        to: to.store_name().display().to_string(),
        generation: data.generation,
        stacks: data.stacks.len(),
        secrets: data.stacks.values().map(|s| s.secrets.len()).sum(),
    })
}
