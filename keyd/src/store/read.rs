//! Reading a store: where its encrypted bytes come from (the home's file, a backup, or a
//! remote store's generation), age decryption checked chunk by chunk, and the JSON parsed with
//! only the kind and position of an error told (the text holds values). A store that cannot be
//! read is reported and left exactly as it is.

use std::fs;
use std::io::Read as _;
use std::path::Path;

use zeroize::Zeroizing;

use super::backup::{MacReader, MacVerdict};
use super::error::StoreError;
use super::file::{HomeIdentity, io_at, read_identity};
use super::model::{FORMAT, StoreData};

/// What the MAC of a backup read by [`open_backup`] said.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupAuthor {
    /// Its MAC shows this home's identity made it.
    ThisIdentity,
    /// A passphrase home's backup: only the passphrase opens it, so a holder of it made it.
    ThisPassphrase,
    /// Not shown to be this home's, and accepted as such (`--accept-foreign-backup`).
    Unverified,
}

/// Where a load reads the encrypted store from.
#[derive(Clone, Copy)]
pub(super) enum Source<'a> {
    /// A file (the home's `store.age`, a backup).
    File(&'a Path),
    /// Bytes a remote store gave; `name` (`swarm:NAME`) stands for the store in errors.
    Blob {
        /// The store's name.
        name: &'a Path,
        /// The encrypted store.
        bytes: &'a [u8],
    },
}

impl<'a> Source<'a> {
    /// What errors call the store.
    pub(super) fn name(&self) -> &'a Path {
        match self {
            Source::File(path) => path,
            Source::Blob { name, .. } => name,
        }
    }

    fn ciphertext(&self) -> Result<std::borrow::Cow<'a, [u8]>, StoreError> {
        match self {
            Source::File(path) => fs::read(path)
                .map(std::borrow::Cow::Owned)
                .map_err(io_at(path)),
            Source::Blob { bytes, .. } => Ok(std::borrow::Cow::Borrowed(bytes)),
        }
    }
}

pub(super) fn read_store(identity_path: &Path, source: Source) -> Result<StoreData, StoreError> {
    read_store_as(identity_path, source, Decode::Whole)
}

/// [`read_store`] with the secrets' versions decoded where first used ([`super::Versions`]):
/// for a reader of one secret.
pub(super) fn read_store_lazily(
    identity_path: &Path,
    source: Source,
) -> Result<StoreData, StoreError> {
    read_store_as(identity_path, source, Decode::Lazily)
}

fn read_store_as(
    identity_path: &Path,
    source: Source,
    decode: Decode,
) -> Result<StoreData, StoreError> {
    let identity = read_identity(identity_path)?;
    let store_path = source.name();
    let ciphertext = source.ciphertext()?;
    let text = decrypt_text(&identity, identity_path, store_path, &ciphertext)?;
    drop(ciphertext);
    parse_store(store_path, &text, decode)
}

/// [`read_store`], with `beside` run on a second thread while this one decrypts and parses
/// (for work that needs one part of a large store, such as its first policy): `find` looks
/// for that part in the text decrypted so far (at 64 KiB, then each time it has doubled), and
/// `beside` starts with what it found as soon as it is found, or with what `find` makes of the
/// whole text. What `find` reads is authenticated (age checks each 64 KiB chunk before it
/// releases it); an error later in the payload is the load's error all the same. The
/// secrets' versions are decoded where first used ([`super::Versions`]): for work on a few
/// secrets of a large store.
pub(super) fn read_store_with<F: Send, T: Send>(
    identity_path: &Path,
    source: Source,
    find: impl Fn(&[u8]) -> Option<F> + Sync,
    beside: impl FnOnce(Option<F>) -> T + Send,
) -> Result<(StoreData, T), StoreError> {
    const FIRST_LOOK: usize = 64 * 1024;
    let identity = read_identity(identity_path)?;
    let store_path = source.name();
    let ciphertext = source.ciphertext()?;
    let mut reader = decrypt_reader(&identity, identity_path, store_path, &ciphertext)?;
    let truncated = || truncated(store_path);
    // The plaintext is shorter than the ciphertext: this buffer never grows (no copy of it
    // is left behind by a reallocation) and is zeroized when dropped.
    let mut text = Zeroizing::new(vec![0u8; ciphertext.len()]);
    std::thread::scope(|s| {
        let mut beside = Some(beside);
        let mut aside = None;
        let (mut len, mut look_at) = (0, FIRST_LOOK);
        loop {
            if len == text.len() {
                // Only the end of the stream (checked as final) can be left.
                let mut more = [0u8; 1];
                if reader.read(&mut more).map_err(|_| truncated())? != 0 {
                    return Err(truncated());
                }
                break;
            }
            let n = reader.read(&mut text[len..]).map_err(|_| truncated())?;
            if n == 0 {
                break;
            }
            len += n;
            if aside.is_none() && len >= look_at {
                look_at = len.saturating_mul(2);
                if let Some(found) = find(&text[..len]) {
                    let work = beside.take().expect("started once");
                    aside = Some(s.spawn(move || work(Some(found))));
                }
            }
        }
        drop(reader);
        let text = &text[..len];
        let aside = aside.unwrap_or_else(|| {
            let work = beside.take().expect("started once");
            let find = &find;
            s.spawn(move || work(find(text)))
        });
        let parsed = parse_store(store_path, text, Decode::Lazily);
        let aside = aside
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        Ok((parsed?, aside))
    })
}

/// Decrypts a backup read from `path`, checks who made it (`backup.rs`) and only then parses
/// it. A backup this home's identity did not make is refused ([`StoreError::ForeignBackup`])
/// unless `accept_foreign`.
pub(super) fn open_backup(
    identity: &HomeIdentity,
    identity_path: &Path,
    path: &Path,
    ciphertext: &[u8],
    accept_foreign: bool,
) -> Result<(StoreData, BackupAuthor), StoreError> {
    let Some(key) = identity.backup_key() else {
        let text = decrypt_text(identity, identity_path, path, ciphertext)?;
        return Ok((
            parse_store(path, &text, Decode::Whole)?,
            BackupAuthor::ThisPassphrase,
        ));
    };
    let (text, verdict) = identity.with_dyn(|unwrap| {
        let reader = MacReader::new(unwrap);
        let mut plain = decrypt_reader_with(&reader, false, identity_path, path, ciphertext)?;
        let mut text = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
        plain.read_to_end(&mut text).map_err(|_| truncated(path))?;
        let verdict = reader.verdict(&key, &text);
        Ok::<_, StoreError>((text, verdict))
    })?;
    let author = match verdict {
        MacVerdict::Valid => BackupAuthor::ThisIdentity,
        _ if accept_foreign => BackupAuthor::Unverified,
        MacVerdict::Missing => {
            return Err(StoreError::ForeignBackup {
                path: path.to_owned(),
                reason: "it carries no keyd MAC (made by another home or tool, or by a keyd from before backups carried one)",
            });
        }
        MacVerdict::Wrong => {
            return Err(StoreError::ForeignBackup {
                path: path.to_owned(),
                reason: "its MAC was made with another identity",
            });
        }
    };
    Ok((parse_store(path, &text, Decode::Whole)?, author))
}

/// The decrypted text of a store read from `store_path`, in a zeroizing buffer.
pub(super) fn decrypt_text(
    identity: &HomeIdentity,
    identity_path: &Path,
    store_path: &Path,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let mut reader = decrypt_reader(identity, identity_path, store_path, ciphertext)?;
    let mut plaintext = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
    reader
        .read_to_end(&mut plaintext)
        .map_err(|_| truncated(store_path))?;
    Ok(plaintext)
}

/// The error of a store whose payload fails age's checks while it is read.
fn truncated(store_path: &Path) -> StoreError {
    StoreError::Corrupt {
        path: store_path.to_owned(),
        reason: "the encrypted payload is truncated or was altered".into(),
    }
}

/// A reader of the plaintext of a store read from `store_path` (age checks each chunk before
/// it gives it out, and the end of the stream when it is reached).
fn decrypt_reader<'c>(
    identity: &HomeIdentity,
    identity_path: &Path,
    store_path: &Path,
    ciphertext: &'c [u8],
) -> Result<impl std::io::Read + 'c, StoreError> {
    identity.with_dyn(|unwrap| {
        decrypt_reader_with(
            unwrap,
            identity.is_passphrase(),
            identity_path,
            store_path,
            ciphertext,
        )
    })
}

/// [`decrypt_reader`] with the header's stanzas unwrapped by `unwrap` (the home's identity as
/// age takes it, or a [`MacReader`] around it); `passphrase`: whether it is a passphrase's.
fn decrypt_reader_with<'c>(
    unwrap: &dyn age::Identity,
    passphrase: bool,
    identity_path: &Path,
    store_path: &Path,
    ciphertext: &'c [u8],
) -> Result<age::stream::StreamReader<&'c [u8]>, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: store_path.to_owned(),
        reason,
    };
    let decryptor = age::Decryptor::new(ciphertext).map_err(|e| match e {
        age::DecryptError::Io(_)
        | age::DecryptError::InvalidHeader
        | age::DecryptError::UnknownFormat => {
            corrupt("not an age file, or its header is truncated".into())
        }
        other => corrupt(other.to_string()),
    })?;
    decryptor
        .decrypt(std::iter::once(unwrap))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys
            | age::DecryptError::DecryptionFailed
            | age::DecryptError::KeyDecryptionFailed
                if passphrase =>
            {
                StoreError::WrongPassphrase {
                    store: store_path.to_owned(),
                }
            }
            age::DecryptError::ExcessiveWork { required, .. } => StoreError::WorkFactorTooHigh {
                store: store_path.to_owned(),
                required,
                max: super::passphrase::MAX_WORK_FACTOR,
            },
            age::DecryptError::NoMatchingKeys => StoreError::WrongIdentity {
                identity: identity_path.to_owned(),
                store: store_path.to_owned(),
            },
            other => corrupt(other.to_string()),
        })
}

/// How much of a store a load decodes up front.
#[derive(Clone, Copy)]
pub(super) enum Decode {
    /// Everything: a damaged record is an error of the load.
    Whole,
    /// All but the secrets' versions, decoded where first used (a rotation's load, which
    /// reads the versions of the secrets it works on, or `keyctl show`'s; see `versions.rs`).
    Lazily,
}

/// Parses the decrypted text of the store read from `store_path`.
pub(super) fn parse_store(
    store_path: &Path,
    text: &[u8],
    decode: Decode,
) -> Result<StoreData, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        path: store_path.to_owned(),
        reason,
    };
    // Checked as UTF-8 once here, so the parser does not check each string again.
    let text = std::str::from_utf8(text).map_err(|e| {
        corrupt(format!(
            "decrypted, but the contents are not a keyd store: not UTF-8 at byte {}",
            e.valid_up_to()
        ))
    })?;
    let mut data: StoreData = serde_json::from_str(text).map_err(|e| {
        // serde_json's own message can quote the input it met (`invalid type: string "…"`,
        // `unknown variant …`), and the input here holds values: only the kind of error and
        // its position are told.
        let what = match e.classify() {
            serde_json::error::Category::Data => "JSON, but not in the shape of a keyd store",
            serde_json::error::Category::Eof => "truncated",
            serde_json::error::Category::Syntax | serde_json::error::Category::Io => "not JSON",
        };
        corrupt(format!(
            "decrypted, but the contents are not a keyd store: {what} at line {}, column {}",
            e.line(),
            e.column()
        ))
    })?;
    if data.format > FORMAT {
        return Err(StoreError::NewerFormat {
            path: store_path.to_owned(),
            found: data.format,
        });
    }
    if let Decode::Whole = decode {
        data.decode_versions().map_err(corrupt)?;
    }
    Ok(data)
}
