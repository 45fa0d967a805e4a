//! Writing a store: the home's identity and the store's recipients, age encryption with JSON
//! inside (serialised through `pipe.rs`) to a file or to bytes for a remote store, the keyed
//! digest of a remote generation, and the atomic write (temp file, fsync, rename, fsync the
//! directory). Reading is `read.rs`.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use age::secrecy::ExposeSecret as _;
use zeroize::Zeroizing;

use super::backup::{BackupKey, MacStanza};
use super::error::StoreError;
use super::model::StoreData;
use super::pipe::serialize_through_pipe;

pub(super) fn io_at(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The text of a new identity file, as `age-keygen` writes it.
pub(super) fn identity_file_text(identity: &age::x25519::Identity) -> Zeroizing<String> {
    let created = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Zeroizing::new(format!(
        "# created: {created}\n# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    ))
}

/// The identity a home opens its store with: an age X25519 key (`AGE-SECRET-KEY-1…`, made by
/// `keyctl init`) or an unencrypted OpenSSH private key (`ssh-ed25519`, `ssh-rsa`) put there by
/// an operator who holds the store through `keyctl recipients add`.
/// Or, in a passphrase home, the passphrase (age's scrypt mode; see `passphrase.rs`).
pub(super) enum HomeIdentity {
    X25519(age::x25519::Identity),
    /// With the key of its backups' MAC, derived from the key file's text when it was read.
    Ssh(age::ssh::Identity, BackupKey),
    Passphrase(age::secrecy::SecretString),
}

impl HomeIdentity {
    /// Runs `f` with the identity as age takes it.
    pub(super) fn with_dyn<T>(&self, f: impl FnOnce(&dyn age::Identity) -> T) -> T {
        match self {
            HomeIdentity::X25519(i) => f(i),
            HomeIdentity::Ssh(i, _) => f(i),
            HomeIdentity::Passphrase(p) => f(&super::passphrase::identity(p)),
        }
    }

    /// Whether this is a passphrase home.
    pub(super) fn is_passphrase(&self) -> bool {
        matches!(self, HomeIdentity::Passphrase(_))
    }

    /// The recipient this identity opens, when it can be derived from the identity alone (an
    /// SSH identity's public key is in the store's recipient list instead).
    pub(super) fn own_recipient(&self) -> Option<String> {
        match self {
            HomeIdentity::X25519(i) => Some(i.to_public().to_string()),
            HomeIdentity::Ssh(..) | HomeIdentity::Passphrase(_) => None,
        }
    }

    /// The key of the MAC this home's backups carry (`backup.rs`); none for a passphrase
    /// home, whose backups only the passphrase opens.
    pub(super) fn backup_key(&self) -> Option<BackupKey> {
        match self {
            HomeIdentity::X25519(i) => {
                Some(BackupKey::derive(i.to_string().expose_secret().as_bytes()))
            }
            HomeIdentity::Ssh(_, key) => Some(key.duplicate()),
            HomeIdentity::Passphrase(_) => None,
        }
    }
}

/// A digest of an encrypted store keyed from the identity that opens it (HMAC-SHA256, the
/// key derived from the identity's secret under a label of its own): a remote store's
/// generation carries it, so one planted by someone without the identity (who can encrypt to
/// the store's public recipient all the same) is refused before it is decrypted.
pub(super) fn store_digest(
    identity: &HomeIdentity,
    identity_path: &Path,
    bytes: &[u8],
) -> Result<String, StoreError> {
    use aws_lc_rs::hmac;
    let material: Zeroizing<Vec<u8>> = match identity {
        HomeIdentity::X25519(i) => {
            Zeroizing::new(i.to_string().expose_secret().as_bytes().to_vec())
        }
        HomeIdentity::Passphrase(p) => Zeroizing::new(p.expose_secret().as_bytes().to_vec()),
        HomeIdentity::Ssh(..) => {
            Zeroizing::new(fs::read(identity_path).map_err(io_at(identity_path))?)
        }
    };
    let derive = hmac::Key::new(hmac::HMAC_SHA256, b"keyd remote store digest v1");
    let key = hmac::sign(&derive, &material);
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key.as_ref()), bytes);
    Ok(crate::secret::hex(tag.as_ref()))
}

/// Writes a new identity file: created (never replaced) with mode 0600, made durable.
pub(super) fn write_new_identity(path: &Path, text: &[u8]) -> Result<(), StoreError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))?;
    f.write_all(text)
        .and_then(|()| f.sync_all())
        .map_err(io_at(path))
}

pub(super) fn read_identity(path: &Path) -> Result<HomeIdentity, StoreError> {
    let mut text = Zeroizing::new(String::new());
    let mut file = File::open(path).map_err(io_at(path))?;
    // Like ssh with a private key: an identity others can read is refused, not used.
    let meta = file.metadata().map_err(io_at(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::IdentityExposed {
            path: path.to_owned(),
            mode,
        });
    }
    super::permissions::check_owner(path, &meta)?;
    file.read_to_string(&mut text).map_err(io_at(path))?;
    let bad = || StoreError::BadIdentity {
        path: path.to_owned(),
    };
    if text.lines().any(|l| l.trim() == super::passphrase::MARKER) {
        return super::passphrase::get(path, false).map(HomeIdentity::Passphrase);
    }
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return match age::ssh::Identity::from_buffer(text.as_bytes(), None) {
            Ok(age::ssh::Identity::Unencrypted(key)) => {
                // The key file's text without its whitespace: the same key file, copied or
                // re-indented, keys the same MAC.
                let secret: Zeroizing<Vec<u8>> =
                    Zeroizing::new(text.bytes().filter(|b| !b.is_ascii_whitespace()).collect());
                Ok(HomeIdentity::Ssh(
                    age::ssh::Identity::Unencrypted(key),
                    BackupKey::derive(&secret),
                ))
            }
            Ok(age::ssh::Identity::Encrypted(_)) => Err(StoreError::Corrupt {
                path: path.to_owned(),
                reason: "the SSH key is protected by a passphrase, which keyd cannot ask for: \
                         use an unencrypted copy kept as safely as identity.txt"
                    .into(),
            }),
            _ => Err(bad()),
        };
    }
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .and_then(|l| l.parse().ok())
        .map(HomeIdentity::X25519)
        .ok_or_else(bad)
}

/// An age recipient from its text: an X25519 key (`age1…`) or an SSH public key line
/// (`ssh-ed25519 AAAA… comment`, `ssh-rsa AAAA…`), as in an `authorized_keys` file.
pub fn parse_recipient(text: &str) -> Result<Box<dyn age::Recipient + Send>, String> {
    let text = text.trim();
    if text.starts_with("age1") {
        return text
            .parse::<age::x25519::Recipient>()
            .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>)
            .map_err(|e| format!("not an age X25519 recipient: {e}"));
    }
    text.parse::<age::ssh::Recipient>()
        .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>)
        .map_err(|_| {
            "expected an age X25519 recipient (age1…) or an SSH public key (ssh-ed25519 AAAA… or ssh-rsa AAAA…)"
                .to_owned()
        })
}

/// The canonical text of a recipient, to compare and store: an SSH key without its comment.
pub fn canonical_recipient(text: &str) -> String {
    let mut words = text.split_whitespace();
    match (words.next(), words.next()) {
        (Some(kind), Some(key)) if kind.starts_with("ssh-") => format!("{kind} {key}"),
        (Some(one), _) => one.to_owned(),
        _ => String::new(),
    }
}

/// Every recipient the store is encrypted to: the home identity's own (when it has one) and
/// the store's list (`keyctl recipients`), without repeats.
pub(super) fn store_recipients(identity: &HomeIdentity, data: &StoreData) -> Vec<String> {
    let mut all: Vec<String> = identity.own_recipient().into_iter().collect();
    for r in &data.recipients {
        let r = canonical_recipient(r);
        if !all.contains(&r) {
            all.push(r);
        }
    }
    all
}

/// Encrypts the store to the home's identity and the store's recipients, streaming: the JSON
/// goes through zeroized buffers (`pipe.rs`) into age's encryptor and from there straight
/// into the temp file, so neither a plaintext copy of the whole store nor its ciphertext is
/// ever held in memory.
pub(super) fn write_store(
    identity_path: &Path,
    store_path: &Path,
    data: &StoreData,
) -> Result<(), StoreError> {
    let identity = read_identity(identity_path)?;
    write_for(&identity, store_path, data)
}

/// Writes `data` at `path` encrypted as `identity`'s home does: to its recipients, or with
/// its passphrase.
pub(super) fn write_for(
    identity: &HomeIdentity,
    path: &Path,
    data: &StoreData,
) -> Result<(), StoreError> {
    write_with(path, encryptor_for(identity, path, data)?, data)
}

/// `data` encrypted as [`write_for`] writes it, in memory (for a remote store, whose commit
/// takes the bytes; `name` is the store's, for errors).
pub(super) fn encrypt_for(
    identity: &HomeIdentity,
    name: &Path,
    data: &StoreData,
) -> Result<Vec<u8>, StoreError> {
    let encryptor = encryptor_for(identity, name, data)?;
    let io = io_at(name);
    let inner = serialize_through_pipe(encryptor.wrap_output(Vec::new()).map_err(&io)?, data)
        .map_err(&io)?;
    inner.finish().map_err(io)
}

/// The encryptor for a store `identity`'s home writes (`path` names it in errors).
fn encryptor_for(
    identity: &HomeIdentity,
    path: &Path,
    data: &StoreData,
) -> Result<age::Encryptor, StoreError> {
    if let HomeIdentity::Passphrase(p) = identity {
        if !data.recipients.is_empty() {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                reason: "a passphrase store cannot also have recipients (age encrypts to a passphrase alone)".into(),
            });
        }
        let recipient = super::passphrase::recipient(p);
        return Ok(age::Encryptor::with_recipients(std::iter::once(
            &recipient as &dyn age::Recipient,
        ))
        .expect("one scrypt recipient is always accepted"));
    }
    encryptor_to(path, &store_recipients(identity, data), None)
}

/// Writes `data` as a backup at `path`: as [`write_for`] does, with the MAC of `identity`'s
/// backups in the header (`backup.rs`; none for a passphrase home).
pub(super) fn write_backup(
    identity: &HomeIdentity,
    path: &Path,
    data: &StoreData,
) -> Result<(), StoreError> {
    let Some(key) = identity.backup_key() else {
        return write_for(identity, path, data);
    };
    let mac = key.mac_of(data).map_err(io_at(path))?;
    let recipients = store_recipients(identity, data);
    let encryptor = encryptor_to(path, &recipients, Some(&MacStanza(mac)))?;
    write_with(path, encryptor, data)
}

/// Writes `data` encrypted to `recipients` at `path`, atomically, mode 0600.
#[cfg(test)]
pub(super) fn write_encrypted(
    path: &Path,
    recipients: &[String],
    data: &StoreData,
) -> Result<(), StoreError> {
    write_with(path, encryptor_to(path, recipients, None)?, data)
}

/// The encryptor to `recipients`, with `beside`'s stanzas (a backup's MAC) in the header too
/// (`path` names the store in errors).
fn encryptor_to(
    path: &Path,
    recipients: &[String],
    beside: Option<&dyn age::Recipient>,
) -> Result<age::Encryptor, StoreError> {
    let parsed: Vec<Box<dyn age::Recipient + Send>> = recipients
        .iter()
        .map(|r| parse_recipient(r))
        .collect::<Result<_, _>>()
        .map_err(|reason| StoreError::Corrupt {
            path: path.to_owned(),
            reason: format!("a recipient in the store's list is not valid: {reason}"),
        })?;
    if parsed.is_empty() {
        return Err(StoreError::Corrupt {
            path: path.to_owned(),
            reason: "no recipient to encrypt to (an SSH identity whose public key is not in the store's recipient list)".into(),
        });
    }
    Ok(age::Encryptor::with_recipients(
        parsed
            .iter()
            .map(|r| r.as_ref() as &dyn age::Recipient)
            .chain(beside),
    )
    .expect("X25519 and SSH recipients and the MAC stanza (no labels) can be mixed"))
}

fn write_with(path: &Path, encryptor: age::Encryptor, data: &StoreData) -> Result<(), StoreError> {
    write_atomic_with(path, 0o600, |file| {
        let inner = serialize_through_pipe(encryptor.wrap_output(file)?, data)?;
        inner.finish()?;
        Ok(())
    })
}

/// Writes `bytes` to `path` through a temp file in the same directory: fsync, rename over
/// `path`, fsync the directory. Readers see the old file or the new one, never a part.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    write_atomic_with(path, mode, |f| f.write_all(bytes))
}

/// [`write_atomic`] without its two fsyncs, for a small file that may be one write behind
/// after a crash: readers still see the old file or the new one, never a part (the rename is
/// atomic), but the new one may not survive a power cut.
pub(crate) fn replace_unsynced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    write_replacing(path, mode, false, |f| f.write_all(bytes))
}

/// [`write_atomic`] with the content written by `fill` into the temp file (unbuffered: fill
/// should write in large pieces). A failure removes the temp file and leaves `path` as it was.
fn write_atomic_with(
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    write_replacing(path, mode, true, fill)
}

/// Fills a temp file beside `path` and renames it over `path`; when `durable`, with the file
/// and then the directory fsynced.
fn write_replacing(
    path: &Path,
    mode: u32,
    durable: bool,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    // A bare file name's parent is "", which names no directory to fsync: it is ".".
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.keyd-tmp"));
    let _ = fs::remove_file(&tmp); // left by a crash; we hold the lock that guards it
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_at(&tmp))?;
    // Set the mode explicitly: the one given to open() is narrowed by the umask.
    let written = f
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))
        .and_then(|()| fill(&mut f))
        .and_then(|()| if durable { f.sync_all() } else { Ok(()) });
    if let Err(e) = written {
        drop(f);
        let _ = fs::remove_file(&tmp);
        return Err(io_at(&tmp)(e));
    }
    drop(f);
    fs::rename(&tmp, path).map_err(io_at(path))?;
    if durable { fsync_dir(dir) } else { Ok(()) }
}

/// Makes a rename or create in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

#[cfg(test)]
mod tests {
    use super::super::read::*;
    use super::*;

    /// A store whose secret `app/DB` has versions that do not decode (a number given as text
    /// holding a value).
    const DAMAGED: &str = r#"{"format":1,"generation":3,"stacks":{"app":{
        "policy_path":"p.toml","policy_source":"","applied_at":1,"sinks":{},
        "secrets":{"DB":{"kind":"password","outputs":[{"name":"DB","part":"main"}],
        "versions":[{"number":"hunter2-value"}]}}}}}"#;

    #[test]
    fn a_load_for_one_secret_reports_that_secrets_damage_and_no_other() {
        let scratch = crate::scratch::Scratch::new();
        let home = super::super::Home::new(scratch.path().join("home"));
        let lock = home.lock().unwrap();
        lock.init().unwrap();
        let damaged = DAMAGED.replace(
            r#""secrets":{"#,
            r#""secrets":{"OK":{"kind":"password","outputs":[{"name":"OK","part":"main"}],"versions":[]},"#,
        );
        let mut data = parse_store(Path::new("store.age"), damaged.as_bytes(), Decode::Lazily)
            .expect("the rest of the store decodes");
        lock.save(&mut data)
            .expect("untouched versions are written back as read");
        let err = lock.load().unwrap_err().to_string();
        assert!(err.contains("versions of app/DB do not decode"), "{err}");
        lock.load_for("OK")
            .expect("another secret's damage is not this one's");
        let err = lock.load_for("app/DB").unwrap_err().to_string();
        assert!(err.contains("versions of app/DB do not decode"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    /// The home of a saved store whose first stack's policy text is `policy_len` bytes.
    fn store_with_policy(
        scratch: &crate::scratch::Scratch,
        policy_len: usize,
    ) -> super::super::Home {
        let home = super::super::Home::new(scratch.path().join("home"));
        let lock = home.lock().unwrap();
        lock.init().unwrap();
        let text = format!(
            r#"{{"format":1,"generation":1,"stacks":{{"app":{{"policy_path":"p.toml","policy_source":"{}","applied_at":1,"sinks":{{}},"secrets":{{}}}}}}}}"#,
            "#".repeat(policy_len)
        );
        let mut data = parse_store(Path::new("store.age"), text.as_bytes(), Decode::Whole).unwrap();
        lock.save(&mut data).unwrap();
        home
    }

    #[test]
    fn the_part_a_load_looks_for_is_handed_over_before_the_whole_store_is_decrypted() {
        let scratch = crate::scratch::Scratch::new();
        let home = store_with_policy(&scratch, 100_000);
        // Pad the store past its policy: several 64 KiB chunks follow it.
        let lock = home.lock().unwrap();
        let mut data = lock.load().unwrap();
        let pad = format!("files:{}", "p".repeat(400_000));
        data.stacks
            .get_mut("app")
            .unwrap()
            .ledger
            .insert(pad.clone(), crate::store::Stamp::default());
        lock.save(&mut data).unwrap();
        let whole = decrypt_text(
            &read_identity(&home.identity_path()).unwrap(),
            &home.identity_path(),
            &home.store_path(),
            &fs::read(home.store_path()).unwrap(),
        )
        .unwrap()
        .len();
        let seen = std::sync::Mutex::new(Vec::new());
        let find = |text: &[u8]| {
            seen.lock().unwrap().push(text.len());
            let source = r#""policy_source":""#;
            let at = text
                .windows(source.len())
                .position(|w| w == source.as_bytes())?;
            let rest = &text[at + source.len()..];
            rest.iter().position(|&b| b == b'"')
        };
        let (loaded, found) = lock.load_with(find, |found| found).unwrap();
        assert_eq!(found, Some(100_000));
        assert!(loaded.stacks["app"].ledger.contains_key(&pad));
        let seen = seen.into_inner().unwrap();
        // Looked at 64 KiB and each doubling, and found before the end.
        assert!(seen.len() >= 2 && seen[0] >= 64 * 1024, "{seen:?}");
        assert!(*seen.last().unwrap() < whole, "{seen:?} of {whole}");
    }

    #[test]
    fn a_load_that_hands_a_part_over_still_fails_on_a_truncated_store() {
        let scratch = crate::scratch::Scratch::new();
        let home = store_with_policy(&scratch, 300_000);
        let bytes = fs::read(home.store_path()).unwrap();
        fs::write(home.store_path(), &bytes[..bytes.len() - 1000]).unwrap();
        let lock = home.lock().unwrap();
        let handed = std::sync::atomic::AtomicBool::new(false);
        let err = lock
            .load_with(
                |text: &[u8]| (text.len() >= 64 * 1024).then_some(()),
                |found| handed.store(found.is_some(), std::sync::atomic::Ordering::SeqCst),
            )
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("truncated or was altered"), "{err}");
        assert!(
            handed.into_inner(),
            "the part was handed over before the end was found cut"
        );
    }

    #[test]
    fn a_backup_opens_with_a_plain_age_identity_that_knows_nothing_of_its_mac() {
        let scratch = crate::scratch::Scratch::new();
        let home = store_with_policy(&scratch, 10);
        let lock = home.lock().unwrap();
        let data = lock.load().unwrap();
        let out = scratch.path().join("backup.age");
        lock.backup(&data, &out).unwrap();
        let bytes = fs::read(&out).unwrap();
        let stanza = b"\n-> keyd-backup-mac v1\n";
        assert!(bytes.windows(stanza.len()).any(|w| w == stanza));
        // What an older keyd, or `age -d`, does: the MAC stanza is skipped.
        let HomeIdentity::X25519(identity) = read_identity(&home.identity_path()).unwrap() else {
            panic!("an X25519 home");
        };
        let plain = age::decrypt(&identity, &bytes).unwrap();
        assert!(plain.starts_with(br#"{"format":1"#));
        // This home verifies it; a home with another identity does not.
        let (_, author) = lock.read_backup(&out, false).unwrap();
        assert_eq!(author, BackupAuthor::ThisIdentity);
        let other = age::x25519::Identity::generate();
        let err = open_backup(
            &HomeIdentity::X25519(other.clone()),
            Path::new("identity.txt"),
            &out,
            &bytes,
            false,
        )
        .map(|_| ())
        .unwrap_err();
        // The other identity is not a recipient: it cannot even open it.
        assert!(matches!(err, StoreError::WrongIdentity { .. }), "{err}");
        let foreign = scratch.path().join("foreign.age");
        write_encrypted(&foreign, &[other.to_public().to_string()], &data).unwrap();
        let err = open_backup(
            &HomeIdentity::X25519(other),
            Path::new("identity.txt"),
            &foreign,
            &fs::read(&foreign).unwrap(),
            false,
        )
        .map(|_| ())
        .unwrap_err()
        .to_string();
        assert!(err.contains("carries no keyd MAC"), "{err}");
    }

    #[test]
    fn a_whole_load_reports_damaged_versions_by_secret_without_the_text() {
        let err = parse_store(Path::new("store.age"), DAMAGED.as_bytes(), Decode::Whole)
            .unwrap_err()
            .to_string();
        assert!(err.contains("versions of app/DB do not decode"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn a_damaged_store_error_never_quotes_its_contents() {
        for damaged in [
            r#"{"format":1,"stacks":{"app":{"policy_path":"hunter2-path"}}}"#,
            r#"{"format":1,"stacks":{},"recipients":"hunter2-recipient"}"#,
            r#"{"format":"hunter2-format"}"#,
        ] {
            for decode in [Decode::Whole, Decode::Lazily] {
                let err = parse_store(Path::new("store.age"), damaged.as_bytes(), decode)
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("not a keyd store"), "{err}");
                assert!(!err.contains("hunter2"), "{err}");
            }
        }
    }

    #[test]
    fn a_store_that_is_not_utf8_is_an_error_naming_the_byte() {
        let text = b"{\"format\":1,\"stacks\":{\"hunter2\xff\":{}}}";
        let err = parse_store(Path::new("store.age"), text, Decode::Whole)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a keyd store: not UTF-8 at byte 30"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn after_a_lazy_load_damaged_versions_are_an_error_of_the_check_not_a_panic() {
        let data = parse_store(Path::new("store.age"), DAMAGED.as_bytes(), Decode::Lazily)
            .expect("the rest of the store decodes");
        for only in [Some(("app", "DB")), None] {
            let err = data.check_versions(only).unwrap_err();
            assert!(err.contains("versions of app/DB do not decode"), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        data.check_versions(Some(("app", "OTHER")))
            .expect("only the secret named is checked");
    }

    #[test]
    fn a_lazy_load_leaves_versions_to_where_they_are_read() {
        let data = parse_store(Path::new("store.age"), DAMAGED.as_bytes(), Decode::Lazily)
            .expect("the rest of the store decodes");
        let secret = &data.stacks["app"].secrets["DB"];
        assert_eq!(secret.outputs[0].name, "DB");
        // Written back untouched, as read.
        let again = serde_json::to_string(&secret.versions).unwrap();
        assert_eq!(again, r#"[{"number":"hunter2-value"}]"#);
    }
}
