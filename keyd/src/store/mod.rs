//! The store: keyd's record of every secret and version, one age-encrypted file under the keyd
//! home, written atomically and serialised across processes by a lock. This module owns the home
//! layout and the open/lock/load/save cycle; `model` owns what is inside.

mod backend;
mod backup;
mod error;
mod file;
mod ledger;
mod model;
mod passphrase;
mod permissions;
mod pipe;
mod preread;
mod read;
mod versions;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use backend::{Blob, RemoteStore, STORE_ENV, StoreLocation};
pub use error::StoreError;
pub(crate) use file::write_atomic;
pub use file::{canonical_recipient, parse_recipient};
pub use ledger::{Digest, Ledger, SinkRecords, Stamp, SwarmLedger, SwarmOutput, SwarmSecret};
pub use model::{
    AuditLine, LookupError, OutputRecord, RekeyOwed, ReloadOwed, Rotation, SecretRecord,
    StackRecord, Step, StoreData,
};
pub use passphrase::ENV as PASSPHRASE_ENV;
pub(crate) use preread::StoredPolicy;
pub use read::BackupAuthor;
pub use versions::{Label, VersionRecord, Versions};

/// Names an identity file to use instead of the home's `identity.txt` (mode 0600 or 0400).
pub const IDENTITY_ENV: &str = "KEYD_IDENTITY_FILE";

/// The keyd home: `identity.txt` (the X25519 age identity, 0600), `store.age` (the store,
/// 0600) and `store.lock` (taken with `flock` by every process that reads or writes). With a
/// [`RemoteStore`] the store's generations live there instead of in `store.age`; the lock
/// then orders this host's processes, and the remote's compare-and-swap commit orders hosts.
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
    remote: Option<Arc<dyn RemoteStore>>,
}

/// What `init` found or did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitOutcome {
    /// A new identity and an empty store were written.
    Created,
    /// Both were already there.
    AlreadyInitialised,
}

impl Home {
    /// A home at `dir` (nothing is touched until used).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            remote: None,
        }
    }

    /// This home with its store kept in `remote` instead of `store.age`.
    pub fn with_remote(mut self, remote: Arc<dyn RemoteStore>) -> Self {
        self.remote = Some(remote);
        self
    }

    /// The remote store, when the store is not the home's file.
    pub fn remote(&self) -> Option<&Arc<dyn RemoteStore>> {
        self.remote.as_ref()
    }

    /// What messages call the store: `store.age`'s path, or `swarm:NAME`.
    pub fn store_name(&self) -> PathBuf {
        self.remote
            .as_ref()
            .map_or_else(|| self.store_path(), |r| PathBuf::from(r.describe()))
    }

    /// Whether the store holds a generation (for a remote store, asks it).
    pub fn store_exists(&self) -> Result<bool, StoreError> {
        match &self.remote {
            None => Ok(self.store_path().exists()),
            Some(remote) => Ok(remote.newest()?.is_some()),
        }
    }

    /// What changes whenever the store does, read without decrypting it (for caches of
    /// what was read from it): the file's identity and the generation recorded beside it,
    /// or a remote store's newest generation.
    pub fn store_version(&self) -> Result<String, StoreError> {
        use std::os::unix::fs::MetadataExt as _;
        if let Some(remote) = &self.remote {
            return Ok(format!("{:?}", remote.newest()?));
        }
        let path = self.store_path();
        let meta = fs::metadata(&path).map_err(|source| StoreError::Io { path, source })?;
        let generation = fs::read_to_string(self.generation_path()).unwrap_or_default();
        Ok(format!(
            "{} {} {} {} {}",
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec(),
            generation.trim()
        ))
    }

    /// Takes or renews the scheduler's lease for `holder` (see [`RemoteStore::hold_lease`]).
    /// A file store has no other host to share with: one keyd per home is ensured by its
    /// socket, so the lease is always held.
    pub fn hold_scheduler_lease(
        &self,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        match &self.remote {
            None => Ok(true),
            Some(remote) => remote.hold_lease(holder, ttl),
        }
    }

    /// The default home: `$XDG_DATA_HOME/keyd`, else `$HOME/.local/share/keyd`.
    pub fn default_dir() -> Option<PathBuf> {
        let nonempty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
        std::env::var_os("XDG_DATA_HOME")
            .and_then(nonempty)
            .map(|d| d.join("keyd"))
            .or_else(|| {
                std::env::var_os("HOME")
                    .and_then(nonempty)
                    .map(|h| h.join(".local/share/keyd"))
            })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The age identity file: `identity.txt` in the home, or the file [`IDENTITY_ENV`] names
    /// (keyd as a Swarm service reads its identity from a Swarm secret, so it is never in the
    /// image or on the volume).
    pub fn identity_path(&self) -> PathBuf {
        std::env::var_os(IDENTITY_ENV)
            .filter(|v| !v.is_empty())
            .map_or_else(|| self.dir.join("identity.txt"), PathBuf::from)
    }

    /// The encrypted store.
    pub fn store_path(&self) -> PathBuf {
        self.dir.join("store.age")
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("store.lock")
    }

    /// The generation of the last store written or read here (a decimal number): one file per
    /// store, so a home that uses a file store and a swarm store checks each against its own.
    pub(crate) fn generation_path(&self) -> PathBuf {
        match &self.remote {
            None => self.dir.join("store.generation"),
            Some(remote) => self.dir.join(format!(
                "{}.generation",
                remote.describe().replace(':', "-")
            )),
        }
    }

    /// The generation recorded beside the store; 0 when none is (a home from an older keyd).
    fn recorded_generation(&self) -> Result<u64, StoreError> {
        let path = self.generation_path();
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map_err(|_| StoreError::Corrupt {
                path,
                reason: format!("expected a generation number, found {:?}", text.trim()),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(source) => Err(StoreError::Io { path, source }),
        }
    }

    /// What in the home shows a store was written here: the generation file, or an audit log
    /// with rotations in it.
    fn store_evidence(&self) -> Option<String> {
        if self.generation_path().exists() {
            return Some(self.generation_path().display().to_string());
        }
        let audit = self.dir.join("audit.log");
        fs::metadata(&audit)
            .is_ok_and(|m| m.len() > 0)
            .then(|| audit.display().to_string())
    }

    /// Whether this is a passphrase home (`keyctl init --passphrase`): `identity.txt` holds
    /// the marker, not a key. Reads no passphrase.
    pub fn is_passphrase(&self) -> bool {
        fs::read_to_string(self.identity_path())
            .is_ok_and(|t| t.lines().any(|l| l.trim() == passphrase::MARKER))
    }

    /// Refuses a passphrase home when no passphrase file is given: for the daemon, which must
    /// never wait on a terminal.
    pub fn require_unattended(&self) -> Result<(), StoreError> {
        if self.is_passphrase() && !passphrase::from_environment_available() {
            return Err(StoreError::PassphraseNeeded {
                identity: self.identity_path(),
                reason: format!(
                    "keyd does not ask on a terminal: set {} to a file holding the passphrase (mode 0600)",
                    passphrase::ENV
                ),
            });
        }
        Ok(())
    }

    /// Creates a passphrase home: `identity.txt` with the marker and an empty store
    /// encrypted with the passphrase (asked twice on the terminal, or read from
    /// `KEYD_PASSPHRASE_FILE`).
    pub fn init_passphrase(&self) -> Result<InitOutcome, StoreError> {
        let lock = self.lock()?;
        match (self.identity_path().exists(), self.store_exists()?) {
            (true, true) if self.is_passphrase() => return Ok(InitOutcome::AlreadyInitialised),
            (true, _) => {
                return Err(StoreError::Corrupt {
                    path: self.identity_path(),
                    reason: "this home already has an identity; a passphrase home starts empty (choose another --home)".into(),
                });
            }
            (false, true) => {
                return Err(StoreError::IdentityMissing {
                    identity: self.identity_path(),
                    store: self.store_name(),
                });
            }
            (false, false) => {}
        }
        passphrase::get(&self.identity_path(), true)?;
        file::write_new_identity(
            &self.identity_path(),
            passphrase::identity_text().as_bytes(),
        )?;
        file::fsync_dir(self.dir())?;
        lock.save(&mut StoreData::default())?;
        Ok(InitOutcome::Created)
    }

    /// Whether an identity exists (the home was initialised).
    pub fn is_initialised(&self) -> bool {
        self.identity_path().exists()
    }

    /// Takes the exclusive lock, for a read-modify-write. Blocks while another process holds it.
    pub fn lock(&self) -> Result<LockedStore, StoreError> {
        self.open_lock(true)
    }

    /// Takes a shared lock, for reading: writers wait until readers are done.
    pub fn lock_shared(&self) -> Result<LockedStore, StoreError> {
        self.open_lock(false)
    }

    fn open_lock(&self, exclusive: bool) -> Result<LockedStore, StoreError> {
        let io = |source| StoreError::Io {
            path: self.dir.clone(),
            source,
        };
        if !self.dir.exists() {
            // A home with a remote store may hold nothing but the lock (its identity named by
            // KEYD_IDENTITY_FILE, as in a Swarm task): a reader makes it too.
            if !exclusive && self.remote.is_none() {
                return Err(StoreError::NotInitialised {
                    home: self.dir.clone(),
                });
            }
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(io)?;
        }
        let (lock, ()) =
            self.open_lock_with(|f| if exclusive { f.lock() } else { f.lock_shared() })?;
        Ok(lock)
    }

    /// Opens (creates) `store.lock` and calls `take` on it; the lock is whatever `take` took.
    fn open_lock_with<T>(
        &self,
        take: impl FnOnce(&fs::File) -> std::io::Result<T>,
    ) -> Result<(LockedStore, T), StoreError> {
        permissions::check_home(&self.dir)?;
        let io = |source| StoreError::Io {
            path: self.dir.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.lock_path())
            .map_err(io)?;
        let taken = take(&file).map_err(io)?;
        Ok((
            LockedStore {
                home: self.clone(),
                _lock: file,
            },
            taken,
        ))
    }

    /// Takes the exclusive lock, and if another process holds it, first reads the store as it
    /// is before waiting ([`Home::peek`]), so the caller can tell what changed meanwhile.
    /// `None` means the lock was free: nothing can have changed since the caller looked.
    pub fn lock_seen(&self) -> Result<(LockedStore, Option<StoreData>), StoreError> {
        if !self.dir.exists() {
            return Ok((self.lock()?, None));
        }
        let free = self.open_lock_with(|f| match f.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        })?;
        match free {
            (lock, true) => Ok((lock, None)),
            (busy, false) => {
                drop(busy);
                let seen = self.peek().ok();
                Ok((self.lock()?, seen))
            }
        }
    }

    /// Reads the store without any lock. Safe because every write replaces the file by rename:
    /// this sees the state before or after a write, never a mix. Used to notice that another
    /// process changed something while this one waited for the lock.
    pub fn peek(&self) -> Result<StoreData, StoreError> {
        load(self)
    }

    /// Creates the identity and an empty store when neither exists. Refuses to make a new
    /// identity beside an existing store: that store could never be opened again.
    pub fn init(&self) -> Result<InitOutcome, StoreError> {
        self.lock()?.init()
    }
}

/// The store with its lock held; dropping it releases the lock.
#[derive(Debug)]
pub struct LockedStore {
    home: Home,
    _lock: File,
}

impl LockedStore {
    /// The home this lock belongs to.
    pub fn home(&self) -> &Home {
        &self.home
    }

    /// See [`Home::init`]. A home whose store is gone while the home shows it had one is
    /// refused ([`StoreError::StoreLost`]) unless `reinit`.
    pub fn init_or_reinit(&self, reinit: bool) -> Result<InitOutcome, StoreError> {
        let lost = !reinit && self.home.identity_path().exists() && !self.home.store_exists()?;
        if let Some(evidence) = self.home.store_evidence().filter(|_| lost) {
            return Err(StoreError::StoreLost {
                store: self.home.store_name(),
                evidence,
            });
        }
        self.init()
    }

    /// See [`Home::init`].
    pub fn init(&self) -> Result<InitOutcome, StoreError> {
        let identity_path = self.home.identity_path();
        match (identity_path.exists(), self.home.store_exists()?) {
            (true, true) => return Ok(InitOutcome::AlreadyInitialised),
            (false, true) => {
                return Err(StoreError::IdentityMissing {
                    identity: identity_path,
                    store: self.home.store_name(),
                });
            }
            (true, false) => {
                // A home whose first write never happened (init_or_reinit refuses a lost
                // store): keep the identity, add the store.
                self.save(&mut StoreData::default())?;
                return Ok(InitOutcome::AlreadyInitialised);
            }
            (false, false) => {}
        }
        let identity = age::x25519::Identity::generate();
        let text = file::identity_file_text(&identity);
        file::write_new_identity(&identity_path, text.as_bytes())?;
        drop(text);
        file::fsync_dir(self.home.dir())?;
        self.save(&mut StoreData::default())?;
        Ok(InitOutcome::Created)
    }

    /// Decrypts and parses the store. Errors leave the file as it is.
    pub fn load(&self) -> Result<StoreData, StoreError> {
        load(&self.home)
    }

    /// [`LockedStore::load`] for a reader of the one secret `selector` names (`keyctl show`,
    /// `history`; see [`StoreData::find_output`]): only that secret's versions are decoded and
    /// checked here, so a damaged record of it is this load's error and another's is not. A
    /// selector that names no single secret is left to the caller's lookup.
    pub fn load_for(&self, selector: &str) -> Result<StoreData, StoreError> {
        let data = load_plain(&self.home, read::read_store_lazily)?;
        if let Ok((stack, secret, _, _)) = data.find_output(selector) {
            self.check_versions(&data, Some((stack, secret)))?;
        }
        Ok(data)
    }

    /// [`LockedStore::load`], with `beside` run on a second thread while this one decrypts
    /// and parses the store: `find` looks for the part `beside` needs in the store's text
    /// (JSON) decrypted so far, and `beside` starts as soon as it is found (or with what
    /// `find` makes of the whole text). For work on a few secrets (a rotation): each secret's
    /// versions are decoded when first read ([`Versions`]), and a damaged record shows up
    /// there, as a panic naming no value.
    pub fn load_with<F: Send, T: Send>(
        &self,
        find: impl Fn(&[u8]) -> Option<F> + Sync,
        beside: impl FnOnce(Option<F>) -> T + Send,
    ) -> Result<(StoreData, T), StoreError> {
        load_by(&self.home, |identity, source| {
            read::read_store_with(identity, source, find, beside)
        })
    }

    /// [`StoreData::check_versions`] on data this lock loaded: a damaged record is reported as
    /// the store's [`StoreError::Corrupt`].
    pub fn check_versions(
        &self,
        data: &StoreData,
        only: Option<(&str, &str)>,
    ) -> Result<(), StoreError> {
        data.check_versions(only)
            .map_err(|reason| StoreError::Corrupt {
                path: self.home.store_name(),
                reason,
            })
    }

    /// Accepts the store in place as the newest, although it is older than the last one
    /// written here (an old copy put back on purpose).
    pub fn accept_rollback(&self) -> Result<(), StoreError> {
        let generation = match &self.home.remote {
            None => {
                read::read_store(
                    &self.home.identity_path(),
                    read::Source::File(&self.home.store_path()),
                )?
                .generation
            }
            Some(remote) => remote.newest()?.unwrap_or(0),
        };
        self.record_generation(generation)
    }

    /// Encrypts and writes the store atomically (temp file, fsync, rename, fsync the
    /// directory) as the next generation, then records that generation beside it.
    ///
    /// On a remote store the next generation is the one after the generation `data` was
    /// loaded at, committed by compare-and-swap: when another writer committed it first this
    /// fails with [`StoreError::Conflict`] and nothing is written, so a step whose journal
    /// entry did not commit never acts.
    pub fn save(&self, data: &mut StoreData) -> Result<(), StoreError> {
        let Some(remote) = &self.home.remote else {
            data.generation = data.generation.max(self.home.recorded_generation()?) + 1;
            file::write_store(&self.home.identity_path(), &self.home.store_path(), data)?;
            // A crash before this leaves the store one generation ahead of the file: accepted.
            return self.record_generation(data.generation);
        };
        let identity = file::read_identity(&self.home.identity_path())?;
        let name = self.home.store_name();
        data.generation += 1;
        let committed = file::encrypt_for(&identity, &name, data).and_then(|bytes| {
            let digest = file::store_digest(&identity, &self.home.identity_path(), &bytes)?;
            remote.commit(data.generation, &bytes, &digest)
        });
        if let Err(e) = committed {
            data.generation -= 1;
            return Err(e);
        }
        self.record_generation(data.generation)
    }

    /// The recipient of the home's own identity (`age1…`), when it can be derived from it (an
    /// SSH identity's is in the store's list).
    pub fn own_recipient(&self) -> Result<Option<String>, StoreError> {
        Ok(file::read_identity(&self.home.identity_path())?.own_recipient())
    }

    /// Every recipient `data` is encrypted to when saved: the home's own, then the store's list.
    pub fn recipients_of(&self, data: &StoreData) -> Result<Vec<String>, StoreError> {
        let identity = file::read_identity(&self.home.identity_path())?;
        Ok(file::store_recipients(&identity, data))
    }

    /// Writes `data` as a backup at `out`: encrypted to the same recipients as the store,
    /// atomically, mode 0600, with the MAC that shows this home's identity made it
    /// (`backup.rs`). The identity is not in it.
    pub fn backup(&self, data: &StoreData, out: &Path) -> Result<(), StoreError> {
        file::write_backup(&file::read_identity(&self.home.identity_path())?, out, data)
    }

    /// Whether the home's store is encrypted with a passphrase.
    pub fn is_passphrase(&self) -> bool {
        self.home.is_passphrase()
    }

    /// Opens a backup with the home's identity and checks its MAC before parsing it: a backup
    /// this identity did not make is refused ([`StoreError::ForeignBackup`]) unless
    /// `accept_foreign`. Errors name the backup; nothing is written.
    pub fn read_backup(
        &self,
        path: &Path,
        accept_foreign: bool,
    ) -> Result<(StoreData, BackupAuthor), StoreError> {
        let identity = file::read_identity(&self.home.identity_path())?;
        let ciphertext = fs::read(path).map_err(|source| StoreError::Io {
            path: path.to_owned(),
            source,
        })?;
        read::open_backup(
            &identity,
            &self.home.identity_path(),
            path,
            &ciphertext,
            accept_foreign,
        )
    }

    /// The newest generation this home has seen: the one recorded beside the store, or the
    /// store's own when it is newer (0 for an empty home).
    pub fn newest_generation(&self) -> Result<u64, StoreError> {
        let recorded = self.home.recorded_generation()?;
        let in_place = match &self.home.remote {
            Some(remote) => remote.newest()?.unwrap_or(0),
            None if self.home.store_path().exists() => read::read_store(
                &self.home.identity_path(),
                read::Source::File(&self.home.store_path()),
            )
            .map(|d| d.generation)
            .unwrap_or(0),
            None => 0,
        };
        Ok(recorded.max(in_place))
    }

    /// Puts `data` (read from a backup at `from`) in place as the store's next generation.
    /// A backup older than the newest generation this home has seen is refused
    /// ([`StoreError::RolledBack`]) unless `accept_rollback`.
    pub fn restore(
        &self,
        data: &mut StoreData,
        from: &Path,
        accept_rollback: bool,
    ) -> Result<(), StoreError> {
        let expected = self.newest_generation()?;
        if data.generation < expected && !accept_rollback {
            return Err(StoreError::RolledBack {
                path: from.to_owned(),
                found: data.generation,
                expected,
            });
        }
        data.generation = data.generation.max(expected);
        // Audit lines the backup's store still owed belong to the log of the home it came
        // from (almost always already written there): not replayed into this one.
        data.audit_owed.clear();
        data.audit_at = 0;
        self.save(data)
    }

    fn record_generation(&self, generation: u64) -> Result<(), StoreError> {
        let (path, text) = (self.home.generation_path(), format!("{generation}\n"));
        match self.home.remote {
            // A remote store's generations are durable where it keeps them (the swarm's Raft
            // log); the record here guards against a rollback and says where the next read
            // starts, and one generation behind after a power cut is still both. Two fsyncs
            // fewer per commit (bench/store.py, FlowKit rotate on the swarm store).
            Some(_) => file::replace_unsynced(&path, text.as_bytes(), 0o600),
            None => write_atomic(&path, text.as_bytes(), 0o600),
        }
    }
}

fn load(home: &Home) -> Result<StoreData, StoreError> {
    load_plain(home, read::read_store)
}

/// [`load_by`] with `read` given the identity path and where the store is read from, nothing
/// beside.
fn load_plain(
    home: &Home,
    read: fn(&Path, read::Source) -> Result<StoreData, StoreError>,
) -> Result<StoreData, StoreError> {
    load_by(home, |identity, source| {
        read(identity, source).map(|data| (data, ()))
    })
    .map(|(data, ())| data)
}

/// Loads the store with `read` (given the identity path and where the store is), after the
/// checks that tell a missing home, a missing identity and an older copy put back. A remote
/// store's generation is checked against its keyed digest before it is decrypted.
fn load_by<T>(
    home: &Home,
    read: impl FnOnce(&Path, read::Source) -> Result<(StoreData, T), StoreError>,
) -> Result<(StoreData, T), StoreError> {
    if !home.identity_path().exists() {
        return Err(if home.store_exists().unwrap_or(false) {
            StoreError::IdentityMissing {
                identity: home.identity_path(),
                store: home.store_name(),
            }
        } else {
            StoreError::NotInitialised {
                home: home.dir.clone(),
            }
        });
    }
    // The recorded generation first: a writer renames the store into place before it records
    // the new generation, so a store read after this is never older than what was read here,
    // unless an older copy was put back.
    let expected = home.recorded_generation()?;
    let name = home.store_name();
    let (data, aside) = match &home.remote {
        None => read(
            &home.identity_path(),
            read::Source::File(&home.store_path()),
        )?,
        Some(remote) => {
            let blob = remote
                .read(expected)?
                .ok_or_else(|| StoreError::RemoteEmpty {
                    store: remote.describe(),
                })?;
            let identity = file::read_identity(&home.identity_path())?;
            let digest = file::store_digest(&identity, &home.identity_path(), &blob.bytes)?;
            if digest != blob.digest {
                return Err(StoreError::Corrupt {
                    path: name,
                    reason: format!(
                        "generation {} does not carry this identity's digest: it was not \
                         written by a holder of this identity, or was altered",
                        blob.generation
                    ),
                });
            }
            let source = read::Source::Blob {
                name: &name,
                bytes: &blob.bytes,
            };
            let (data, aside) = read(&home.identity_path(), source)?;
            if data.generation != blob.generation {
                return Err(StoreError::Corrupt {
                    path: name,
                    reason: format!(
                        "generation {} holds a store of generation {}",
                        blob.generation, data.generation
                    ),
                });
            }
            (data, aside)
        }
    };
    if data.generation < expected {
        return Err(StoreError::RolledBack {
            path: name,
            found: data.generation,
            expected,
        });
    }
    Ok((data, aside))
}
