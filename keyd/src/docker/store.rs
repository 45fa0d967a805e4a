//! The swarm store: a keyd store kept in the swarm's Raft log as Swarm configs, so every
//! manager reads the same generations and keyd keeps no state on any node.
//!
//! Generation G of store NAME is its head `keyd-store-NAME-gG`, labelled `keyd.store.head=NAME`
//! with the generation, the nonce, the number of parts, the size and the keyed digest, and:
//! - for a store of at most [`INLINE_MAX_BYTES`], nothing else: the head's data is the encrypted
//!   store (the bytes of `store.age`), and its number of parts is 0;
//! - for a larger one, parts `keyd-store-NAME-gG-NONCE-I` created before the head, the
//!   encrypted store cut below the engine's config size limit, labelled
//!   `keyd.store.part-of=<head name>` and `keyd.store.part=I`.
//!
//! The head is created last and its name is the generation's: the engine creates a name once,
//! so of two writers of generation G exactly one commits (the other removes its parts and
//! reports [`StoreError::Conflict`]); a reader who finds a head finds its parts. The last
//! [`KEEP_GENERATIONS`] (or one fewer) are kept; commits remove older ones.
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

/// The largest store kept inside its head. Each config created is one Raft proposal, which
/// is most of a small store's commit time (bench/store.py: FlowKit's rotation 23 ms with a
/// part and a head per commit); a listing of the heads returns every kept head's data, so
/// this bounds what each read lists to [`KEEP_GENERATIONS`] times it.
pub const INLINE_MAX_BYTES: usize = 64 * 1024;

/// How long each call to the engine may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The swarm store NAME on the engine `DOCKER_HOST` names.
pub struct SwarmStore {
    name: String,
    /// Connected on first use, and again after a failure (the engine restarted).
    engine: Mutex<Option<Engine>>,
    /// The last generation read or committed, kept encrypted: a reader whose generation did
    /// not change reads no data again, the next look-up starts from it
    /// ([`SwarmStore::newest_head`]), and while the engine cannot be reached it is still served
    /// ([`SwarmStore::read`]).
    last: Mutex<Option<Cached>>,
    /// The pruning a commit started, which runs on beside the caller's work; dropping the
    /// store waits for it, so a command does not exit halfway through one.
    pruning: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Every generation up to this one was removed by this process's pruning
    /// ([`SwarmStore::commit`]).
    pruned_through: Mutex<u64>,
}

struct Cached {
    generation: u64,
    bytes: Vec<u8>,
    digest: String,
}

impl Drop for SwarmStore {
    fn drop(&mut self) {
        self.wait_for_pruning();
    }
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
    /// The encrypted store, when the head holds it (`parts` is 0).
    inline: Option<Vec<u8>>,
}

/// What a look-up of the newest generation found.
enum Newest {
    /// None: the store is empty.
    Empty,
    /// The generation this process holds in [`SwarmStore::last`].
    Cached(u64),
    /// Another one.
    Head(Head),
}

impl Head {
    fn from_config(c: ConfigInfo) -> Option<Head> {
        let label = |k: &str| c.labels.get(k).cloned();
        let parts = label("keyd.store.parts")?.parse().ok()?;
        Some(Head {
            generation: label("keyd.store.generation")?.parse().ok()?,
            nonce: label("keyd.store.nonce")?,
            size: label("keyd.store.size")?.parse().ok()?,
            digest: label("keyd.store.digest")?,
            parts,
            inline: (parts == 0).then_some(c.data),
            name: c.name,
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
            pruning: Mutex::new(None),
            pruned_through: Mutex::new(0),
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
            .into_iter()
            .filter_map(Head::from_config)
            .collect();
        heads.sort_by_key(|h| h.generation);
        Ok(heads)
    }

    /// `config` as a head of this store, if it is one.
    fn head_of(&self, config: Option<ConfigInfo>) -> Option<Head> {
        config
            .filter(|c| c.labels.get("keyd.store.head") == Some(&self.name))
            .and_then(Head::from_config)
    }

    fn cached_generation(&self) -> Option<u64> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.as_ref().map(|c| c.generation)
    }

    /// The newest generation, looked up from `known` (0 for none) or the cached one, whichever
    /// is newer. Generations go up one at a time and are never reused (a commit is the one
    /// after the generation its writer loaded; a copy over a store continues its numbering),
    /// so when `known + 1` has no head and `known` has one, `known` is the newest: two look-ups
    /// by name, both in flight at once, instead of a listing that carries every kept head's
    /// data. The cached generation needs no second look-up: only a newer generation's commit
    /// prunes its head.
    fn newest_head(&self, engine: &Engine, known: u64) -> Result<Newest, DockerError> {
        let cached = self.cached_generation();
        let from = known.max(cached.unwrap_or(0));
        if from > 0 && cached == Some(from) {
            if engine.config_named(&self.head_name(from + 1))?.is_none() {
                return Ok(Newest::Cached(from));
            }
        } else if from > 0 {
            let (next, at) =
                engine.configs_named(&self.head_name(from + 1), &self.head_name(from))?;
            if next.is_none()
                && let Some(head) = self.head_of(at)
            {
                return Ok(Newest::Head(head));
            }
        }
        Ok(match self.heads(engine)?.pop() {
            Some(head) if cached == Some(head.generation) => Newest::Cached(head.generation),
            Some(head) => Newest::Head(head),
            None => Newest::Empty,
        })
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

    /// Puts the `parts` listed for `head` together, checking that none is missing (the
    /// caller checks the size, as for a store held in its head).
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
        Ok(bytes)
    }

    /// Waits for the pruning the last commit started, if any.
    fn wait_for_pruning(&self) {
        let running = self
            .pruning
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(running) = running {
            let _ = running.join();
        }
    }

    /// Removes the generations `old` (both looked up at once), each head first and then its
    /// parts (named from the head's labels, so no part's data is listed). When `sweep`, also lists every head and part and
    /// removes the heads older than the generations kept and the parts no kept head claims
    /// below `committing` (left by a writer that died between its parts and its head, or by a
    /// pruning cut short): that costs a listing of every part and head with its data, so it is
    /// done every [`KEEP_GENERATIONS`]th generation only. Parts of `committing` and above may
    /// be a writer's commit in flight, and are never swept. Runs beside the commit, on a
    /// connection of its own ([`SwarmStore::pruning`]).
    fn prune(
        &self,
        engine: &Engine,
        old: Option<(u64, u64)>,
        committing: u64,
        sweep: bool,
    ) -> Result<(), DockerError> {
        if let Some((a, b)) = old {
            let (at_a, at_b) = engine.configs_named(&self.head_name(a), &self.head_name(b))?;
            for head in [self.head_of(at_a), self.head_of(at_b)]
                .into_iter()
                .flatten()
            {
                engine.delete_config(&head.name)?;
                for i in 0..head.parts {
                    engine.delete_config(&format!("{}-{}-{i}", head.name, head.nonce))?;
                }
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
        let store = format!("keyd.store={}", self.name);
        for part in engine.configs_with_labels(&[store.as_str(), "keyd.store.part-of"])? {
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
        self.with_engine(|engine| {
            Ok(match self.newest_head(engine, 0)? {
                Newest::Empty => None,
                Newest::Cached(generation) => Some(generation),
                Newest::Head(head) => Some(head.generation),
            })
        })
    }

    fn read(&self, known: u64) -> Result<Option<Blob>, StoreError> {
        let cached = || {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            last.as_ref().map(|c| Blob {
                generation: c.generation,
                bytes: c.bytes.clone(),
                digest: c.digest.clone(),
            })
        };
        let mut head = match self.with_engine(|engine| self.newest_head(engine, known)) {
            Ok(Newest::Head(head)) => head,
            Ok(Newest::Cached(_)) => return Ok(cached()),
            Ok(Newest::Empty) => return Ok(None),
            // The engine is briefly away: the last generation read is still the newest this
            // process knows, and serving it beats failing every read meanwhile.
            Err(e) => return cached().map(Some).ok_or(e),
        };
        let bytes = match head.inline.take() {
            Some(bytes) => bytes,
            None => {
                let parts = self.with_engine(|engine| {
                    engine.configs_labelled("keyd.store.part-of", &head.name)
                })?;
                self.assemble(&head, parts)?
            }
        };
        if bytes.len() != head.size {
            return Err(self.corrupt(format!(
                "generation {} holds {} bytes, its head says {}",
                head.generation,
                bytes.len(),
                head.size
            )));
        }
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
        let inline = bytes.len() <= INLINE_MAX_BYTES;
        let chunks: Vec<&[u8]> = if inline {
            Vec::new()
        } else {
            bytes.chunks(super::MAX_CONFIG_BYTES).collect()
        };
        let common = [
            ("keyd.store", self.name.clone()),
            ("keyd.store.generation", generation.to_string()),
            ("keyd.store.nonce", nonce.clone()),
        ];
        // The generations this commit makes too old to keep, whether it wins or loses (a loser
        // lost to a writer of the same generation), removed two at a time: G−K, and G−K+1,
        // which this process's next commit would make too old, unless it removed them already.
        // So of a rotation's two commits only the first prunes, beside that commit and the
        // deliveries after it, and the second (whose pruning would hold up the command's exit)
        // none; K−1 or K generations stay. Removing them is housekeeping, done on a thread and
        // connection of its own; the commit stands whatever it meets.
        let old = {
            let mut through = self
                .pruned_through
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let first = generation.saturating_sub(KEEP_GENERATIONS);
            (first > *through).then(|| {
                *through = first + 1;
                (first, first + 1)
            })
        };
        let sweep = generation.is_multiple_of(KEEP_GENERATIONS);
        if old.is_some() || sweep {
            let mut pruning = self.pruning.lock().unwrap_or_else(|e| e.into_inner());
            // One pruning at a time, in commit order: each waits for the one before it.
            let before = pruning.take();
            let pruner = SwarmStore::new(&self.name);
            // The commit's own connection negotiated the API version: the pruner's asks nothing
            // before its first call.
            let another = self
                .engine
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(Engine::another);
            *pruning = Some(std::thread::spawn(move || {
                if let Some(before) = before {
                    let _ = before.join();
                }
                let engine = match another {
                    Some(Ok(engine)) => Ok(engine),
                    _ => Engine::connect(CALL_TIMEOUT),
                };
                let _ = engine.and_then(|engine| pruner.prune(&engine, old, generation, sweep));
            }));
        }
        let committed = self.with_engine(|engine| {
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
                let text = format!("keyd store {} generation {generation}\n", self.name);
                let data = if inline { bytes } else { text.as_bytes() };
                Ok(engine.create_config(&head_name, l, data)?.is_some())
            };
            let committed = write_parts();
            if !matches!(committed, Ok(true)) {
                for name in &created {
                    let _ = engine.delete_config(name);
                }
            }
            committed
        })?;
        if !committed {
            return Err(StoreError::Conflict {
                store: self.describe(),
                generation,
            });
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Cached {
            generation,
            bytes: bytes.to_vec(),
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
