//! The swarm store: a keyd store kept in the swarm's Raft log as Swarm configs, so every
//! manager reads the same generations and keyd keeps no state on any node.
//!
//! Generation G of store NAME is:
//! - parts `keyd-store-NAME-gG-NONCE-I`, the encrypted store (the bytes of `store.age`) cut
//!   below the engine's config size limit, labelled `keyd.store.part-of=<head name>` and
//!   `keyd.store.part=I`;
//! - then its head `keyd-store-NAME-gG`, a few bytes, labelled `keyd.store.head=NAME` with the
//!   generation, the nonce, the number of parts, the size and the keyed digest.
//!
//! The head is created last and its name is the generation's: the engine creates a name once,
//! so of two writers of generation G exactly one commits (the other removes its parts and
//! reports [`StoreError::Conflict`]); a reader who finds a head finds its parts. The last
//! [`KEEP_GENERATIONS`] are kept; a commit removes older ones.
//!
//! The scheduler's lease is `keyd-lease-NAME-tT` (T the term), labelled with its holder and
//! the time it lapses: a holder renews by creating the next term, so taking and renewing are
//! the same compare-and-swap.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{ConfigInfo, DockerError, Engine};
use crate::store::{Blob, RemoteStore, StoreError};

/// Generations kept (the newest and the ones before it): enough for a reader that loaded an
/// older one to finish, and for `docker config ls` to show recent history.
pub const KEEP_GENERATIONS: u64 = 10;

/// How long each call to the engine may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The swarm store NAME on the engine `DOCKER_HOST` names.
pub struct SwarmStore {
    name: String,
    /// Connected on first use, and again after a failure (the engine restarted).
    engine: Mutex<Option<Engine>>,
    /// The last generation read, kept encrypted: a reader whose generation did not change
    /// reads no part again, and while the engine cannot be reached the last one read is
    /// still served ([`SwarmStore::read`]).
    last: Mutex<Option<Cached>>,
    /// The heads this process last listed, and those it committed since: what a commit
    /// prunes, so it need not list them again.
    seen: Mutex<Vec<Head>>,
}

struct Cached {
    generation: u64,
    bytes: Vec<u8>,
    digest: String,
}

impl std::fmt::Debug for SwarmStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SwarmStore({})", self.name)
    }
}

/// A generation's head, from its labels.
#[derive(Clone, Debug)]
struct Head {
    name: String,
    generation: u64,
    nonce: String,
    parts: usize,
    size: usize,
    digest: String,
}

impl Head {
    fn from_config(c: &ConfigInfo) -> Option<Head> {
        let label = |k: &str| c.labels.get(k).cloned();
        Some(Head {
            name: c.name.clone(),
            generation: label("keyd.store.generation")?.parse().ok()?,
            nonce: label("keyd.store.nonce")?,
            parts: label("keyd.store.parts")?.parse().ok()?,
            size: label("keyd.store.size")?.parse().ok()?,
            digest: label("keyd.store.digest")?,
        })
    }
}

/// A lease term, from its labels.
struct Lease {
    name: String,
    term: u64,
    holder: String,
    until: u64,
}

impl SwarmStore {
    /// The store `name` (see `StoreLocation`); nothing is asked of the engine yet.
    pub fn new(name: &str) -> SwarmStore {
        SwarmStore {
            name: name.to_owned(),
            engine: Mutex::new(None),
            last: Mutex::new(None),
            seen: Mutex::new(Vec::new()),
        }
    }

    fn head_name(&self, generation: u64) -> String {
        format!("keyd-store-{}-g{generation}", self.name)
    }

    /// Runs `f` on the engine, connecting first when needed; a failed call drops the
    /// connection, so the next call connects again.
    fn with_engine<T>(
        &self,
        f: impl FnOnce(&Engine) -> Result<T, DockerError>,
    ) -> Result<T, StoreError> {
        let mut engine = self.engine.lock().unwrap_or_else(|e| e.into_inner());
        if engine.is_none() {
            // No separate "is this a manager" call (`/info` is the engine's slowest answer):
            // on a node that is not one, the first config call fails with the engine's
            // "This node is not a swarm manager" message.
            *engine = Some(Engine::connect(CALL_TIMEOUT).map_err(|e| self.error(e))?);
        }
        let result = f(engine.as_ref().expect("connected above"));
        if result.is_err() {
            *engine = None;
        }
        result.map_err(|e| self.error(e))
    }

    fn error(&self, e: DockerError) -> StoreError {
        StoreError::Remote {
            store: self.describe(),
            message: e.to_string(),
        }
    }

    fn corrupt(&self, message: String) -> StoreError {
        StoreError::Remote {
            store: self.describe(),
            message,
        }
    }

    fn heads(&self, engine: &Engine) -> Result<Vec<Head>, DockerError> {
        let mut heads: Vec<Head> = engine
            .configs_labelled("keyd.store.head", &self.name)?
            .iter()
            .filter_map(Head::from_config)
            .collect();
        heads.sort_by_key(|h| h.generation);
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = heads.clone();
        Ok(heads)
    }

    fn leases(&self, engine: &Engine) -> Result<Vec<Lease>, DockerError> {
        let mut leases: Vec<Lease> = engine
            .configs_labelled("keyd.store.lease", &self.name)?
            .into_iter()
            .filter_map(|c| {
                Some(Lease {
                    term: c.labels.get("keyd.store.term")?.parse().ok()?,
                    holder: c.labels.get("keyd.store.holder")?.clone(),
                    until: c.labels.get("keyd.store.until")?.parse().ok()?,
                    name: c.name,
                })
            })
            .collect();
        leases.sort_by_key(|l| l.term);
        Ok(leases)
    }

    /// Puts the `parts` listed for `head` together, checking their number and size.
    fn assemble(&self, head: &Head, parts: Vec<ConfigInfo>) -> Result<Vec<u8>, StoreError> {
        let mut ordered: Vec<Option<Vec<u8>>> = vec![None; head.parts];
        for part in parts {
            let index: Option<usize> = part
                .labels
                .get("keyd.store.part")
                .and_then(|i| i.parse().ok());
            let nonce = part.labels.get("keyd.store.nonce");
            match index {
                Some(i) if i < head.parts && nonce == Some(&head.nonce) => {
                    ordered[i] = Some(part.data);
                }
                _ => {}
            }
        }
        let mut bytes = Vec::with_capacity(head.size);
        for (i, part) in ordered.into_iter().enumerate() {
            let part = part.ok_or_else(|| {
                self.corrupt(format!(
                    "generation {} is missing part {i} of {}",
                    head.generation, head.parts
                ))
            })?;
            bytes.extend_from_slice(&part);
        }
        if bytes.len() != head.size {
            return Err(self.corrupt(format!(
                "generation {} holds {} bytes, its head says {}",
                head.generation,
                bytes.len(),
                head.size
            )));
        }
        Ok(bytes)
    }

    /// Removes the generations in `old`, each head first and then its parts (named from the
    /// head's labels, so no part's data is listed). When `sweep`, also lists every part and
    /// removes those no kept head claims below `committing` (left by a writer that died
    /// between its parts and its head): that costs a listing of every part with its data, so
    /// it is done every [`KEEP_GENERATIONS`]th generation only. Parts of `committing` and
    /// above may be a writer's commit in flight, and are never swept.
    fn prune(
        &self,
        engine: &Engine,
        old: &[Head],
        committing: u64,
        sweep: bool,
    ) -> Result<(), DockerError> {
        for head in old {
            engine.delete_config(&head.name)?;
            for i in 0..head.parts {
                engine.delete_config(&format!("{}-{}-{i}", head.name, head.nonce))?;
            }
        }
        if !sweep {
            return Ok(());
        }
        let keep_from = committing.saturating_sub(KEEP_GENERATIONS - 1);
        let heads = self.heads(engine)?;
        for head in heads.iter().filter(|h| h.generation < keep_from) {
            engine.delete_config(&head.name)?;
        }
        let kept: HashMap<&str, &Head> = heads
            .iter()
            .filter(|h| h.generation >= keep_from)
            .map(|h| (h.name.as_str(), h))
            .collect();
        for part in engine.configs_labelled("keyd.store", &self.name)? {
            let Some(of) = part.labels.get("keyd.store.part-of") else {
                continue;
            };
            let generation: u64 = part
                .labels
                .get("keyd.store.generation")
                .and_then(|g| g.parse().ok())
                .unwrap_or(u64::MAX);
            let claimed = kept
                .get(of.as_str())
                .is_some_and(|h| part.labels.get("keyd.store.nonce") == Some(&h.nonce));
            if !claimed && generation < committing {
                engine.delete_config(&part.name)?;
            }
        }
        Ok(())
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn labels(pairs: &[(&str, String)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

impl RemoteStore for SwarmStore {
    fn describe(&self) -> String {
        format!("swarm:{}", self.name)
    }

    fn newest(&self) -> Result<Option<u64>, StoreError> {
        self.with_engine(|engine| Ok(self.heads(engine)?.last().map(|h| h.generation)))
    }

    fn read(&self) -> Result<Option<Blob>, StoreError> {
        let found = self.with_engine(|engine| Ok(self.heads(engine)?.pop()));
        let head = match found {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(None),
            // The engine is briefly away: the last generation read is still the newest this
            // process knows, and serving it beats failing every read meanwhile.
            Err(e) => {
                let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
                return match last.as_ref() {
                    Some(c) => Ok(Some(Blob {
                        generation: c.generation,
                        bytes: c.bytes.clone(),
                        digest: c.digest.clone(),
                    })),
                    None => Err(e),
                };
            }
        };
        {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = last.as_ref().filter(|c| c.generation == head.generation) {
                return Ok(Some(Blob {
                    generation: c.generation,
                    bytes: c.bytes.clone(),
                    digest: c.digest.clone(),
                }));
            }
        }
        let parts =
            self.with_engine(|engine| engine.configs_labelled("keyd.store.part-of", &head.name))?;
        let bytes = self.assemble(&head, parts)?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Cached {
            generation: head.generation,
            bytes: bytes.clone(),
            digest: head.digest.clone(),
        });
        Ok(Some(Blob {
            generation: head.generation,
            bytes,
            digest: head.digest,
        }))
    }

    fn commit(&self, generation: u64, bytes: &[u8], digest: &str) -> Result<(), StoreError> {
        let head_name = self.head_name(generation);
        let mut random = [0u8; 4];
        crate::secret::fill_random(&mut random);
        let nonce = crate::secret::hex(&random);
        let chunks: Vec<&[u8]> = bytes.chunks(super::MAX_CONFIG_BYTES).collect();
        let common = [
            ("keyd.store", self.name.clone()),
            ("keyd.store.generation", generation.to_string()),
            ("keyd.store.nonce", nonce.clone()),
        ];
        // Generations this commit makes too old to keep, whether it wins or loses (a loser
        // lost to a writer of the same generation). Removing them is housekeeping, done on a
        // connection of its own while the parts are written, and the commit stands whatever
        // it meets.
        let old: Vec<Head> = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|h| h.generation + KEEP_GENERATIONS <= generation)
            .cloned()
            .collect();
        let sweep = generation.is_multiple_of(KEEP_GENERATIONS);
        let committed = std::thread::scope(|scope| {
            if !old.is_empty() || sweep {
                scope.spawn(|| {
                    let pruned = Engine::connect(CALL_TIMEOUT)
                        .and_then(|engine| self.prune(&engine, &old, generation, sweep));
                    if pruned.is_ok() {
                        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                        seen.retain(|h| h.generation + KEEP_GENERATIONS > generation);
                    }
                });
            }
            self.with_engine(|engine| {
                let mut created = Vec::new();
                let mut write_parts = || -> Result<bool, DockerError> {
                    for (i, chunk) in chunks.iter().enumerate() {
                        let name = format!("{head_name}-{nonce}-{i}");
                        let mut l = labels(&common);
                        l.extend(labels(&[
                            ("keyd.store.part-of", head_name.clone()),
                            ("keyd.store.part", i.to_string()),
                        ]));
                        if engine.create_config(&name, l, chunk)?.is_none() {
                            return Ok(false);
                        }
                        created.push(name);
                    }
                    let mut l = labels(&common);
                    l.extend(labels(&[
                        ("keyd.store.head", self.name.clone()),
                        ("keyd.store.parts", chunks.len().to_string()),
                        ("keyd.store.size", bytes.len().to_string()),
                        ("keyd.store.digest", digest.to_owned()),
                    ]));
                    let head = format!("keyd store {} generation {generation}\n", self.name);
                    Ok(engine
                        .create_config(&head_name, l, head.as_bytes())?
                        .is_some())
                };
                let committed = write_parts();
                if !matches!(committed, Ok(true)) {
                    for name in &created {
                        let _ = engine.delete_config(name);
                    }
                }
                committed
            })
        })?;
        if !committed {
            return Err(StoreError::Conflict {
                store: self.describe(),
                generation,
            });
        }
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Head {
                name: head_name,
                generation,
                nonce,
                parts: chunks.len(),
                size: bytes.len(),
                digest: digest.to_owned(),
            });
        Ok(())
    }

    fn hold_lease(&self, holder: &str, ttl: Duration) -> Result<bool, StoreError> {
        self.with_engine(|engine| {
            let leases = self.leases(engine)?;
            let now = now_unix();
            let current = leases.last();
            let take = match current {
                None => true,
                // Held: renewed once half of it is gone.
                Some(l) if l.holder == holder => l.until < now + ttl.as_secs() / 2,
                Some(l) => l.until < now,
            };
            if !take {
                return Ok(current.is_some_and(|l| l.holder == holder));
            }
            let term = current.map_or(1, |l| l.term + 1);
            let name = format!("keyd-lease-{}-t{term}", self.name);
            let l = labels(&[
                ("keyd.store", self.name.clone()),
                ("keyd.store.lease", self.name.clone()),
                ("keyd.store.term", term.to_string()),
                ("keyd.store.holder", holder.to_owned()),
                ("keyd.store.until", (now + ttl.as_secs()).to_string()),
            ]);
            let won = engine
                .create_config(&name, l, b"keyd scheduler lease\n")?
                .is_some();
            if won {
                for old in leases.iter().filter(|l| l.term < term) {
                    let _ = engine.delete_config(&old.name);
                }
            }
            Ok(won)
        })
    }

    fn clear(&self) -> Result<(), StoreError> {
        self.with_engine(|engine| {
            // Heads first: a reader meanwhile sees fewer generations, never a head whose
            // parts are gone.
            for head in self.heads(engine)? {
                engine.delete_config(&head.name)?;
            }
            for config in engine.configs_labelled("keyd.store", &self.name)? {
                engine.delete_config(&config.name)?;
            }
            Ok(())
        })?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }
}
