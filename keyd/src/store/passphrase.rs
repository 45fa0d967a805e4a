//! The passphrase of a passphrase home (`keyctl init --passphrase`): the store is encrypted with
//! age's scrypt mode, and `identity.txt` holds a marker instead of a key. The passphrase comes
//! from the file named by `KEYD_PASSPHRASE_FILE` (for scripts and the daemon; mode 0600 like an
//! identity), else from the terminal with echo off, never from argv or the environment itself.
//! It is asked once per process and kept in memory (not zeroized before exit).

use std::io::{BufRead as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::OnceLock;

use age::secrecy::{ExposeSecret as _, SecretString};
use zeroize::Zeroizing;

use super::StoreError;

/// The least scrypt work factor (`log_n`) a store is written with, whatever the machine's
/// measure: a write that shares its core with busy processes measures a lower one.
pub(super) const MIN_WORK_FACTOR: u8 = 18;
/// The greatest work factor a store is read with (4 GiB of memory at `log_n` 22), fixed so
/// that a store written on an idle machine opens on a busy one, and a forged header cannot
/// ask for more.
pub(super) const MAX_WORK_FACTOR: u8 = 22;

/// The line `identity.txt` holds in a passphrase home.
pub(super) const MARKER: &str = "KEYD-PASSPHRASE-STORE";
/// The environment variable naming a file that holds the passphrase.
pub const ENV: &str = "KEYD_PASSPHRASE_FILE";

/// The passphrase once had: asked for once per process, kept for the store writes to come (a
/// static is never dropped; core dumps are off, see `secret::forbid_core_dumps`).
static CACHED: OnceLock<SecretString> = OnceLock::new();

/// The text of `identity.txt` in a passphrase home.
pub(super) fn identity_text() -> String {
    format!(
        "# keyd: the store beside this file is encrypted with a passphrase (age scrypt); no key is here.\n\
         # The passphrase is read from the file named by {ENV}, or from the terminal.\n{MARKER}\n"
    )
}

fn needed(identity: &Path, reason: String) -> StoreError {
    StoreError::PassphraseNeeded {
        identity: identity.to_owned(),
        reason,
    }
}

/// The passphrase: from `KEYD_PASSPHRASE_FILE`, or asked on the terminal (twice when
/// `confirm`, for a new store).
pub(super) fn get(identity: &Path, confirm: bool) -> Result<SecretString, StoreError> {
    if let Some(p) = CACHED.get() {
        return Ok(SecretString::from(p.expose_secret().to_owned()));
    }
    let text = match std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        Some(file) => from_file(identity, Path::new(&file))?,
        None => from_terminal(identity, confirm)?,
    };
    if text.is_empty() {
        return Err(needed(identity, "the passphrase is empty".into()));
    }
    let _ = CACHED.set(SecretString::from(text.to_string()));
    Ok(SecretString::from(text.to_string()))
}

/// Whether a passphrase can be had without a terminal (what the daemon needs).
pub fn from_environment_available() -> bool {
    std::env::var_os(ENV).is_some_and(|v| !v.is_empty())
}

fn from_file(identity: &Path, file: &Path) -> Result<Zeroizing<String>, StoreError> {
    let io = |source| StoreError::Io {
        path: file.to_owned(),
        source,
    };
    let meta = std::fs::metadata(file).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::IdentityExposed {
            path: file.to_owned(),
            mode,
        });
    }
    super::permissions::check_owner(file, &meta)?;
    let mut text = Zeroizing::new(std::fs::read_to_string(file).map_err(io)?);
    let keep = text.trim_end_matches(['\n', '\r']).len();
    text.truncate(keep);
    if text.is_empty() {
        return Err(needed(identity, format!("{} is empty", file.display())));
    }
    Ok(text)
}

fn from_terminal(identity: &Path, confirm: bool) -> Result<Zeroizing<String>, StoreError> {
    let no_terminal = |_| {
        needed(
            identity,
            format!("no terminal to ask on, and {ENV} is not set"),
        )
    };
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(no_terminal)?;
    let first = ask(&tty, "keyd store passphrase: ").map_err(no_terminal)?;
    if confirm {
        let again = ask(&tty, "again, to confirm: ").map_err(no_terminal)?;
        if !crate::secret::same_bytes(first.as_bytes(), again.as_bytes()) {
            return Err(needed(identity, "the two passphrases differ".into()));
        }
    }
    Ok(first)
}

/// Asks on the terminal with echo off, restoring the terminal's settings afterwards.
fn ask(tty: &std::fs::File, prompt: &str) -> std::io::Result<Zeroizing<String>> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let saved = tcgetattr(tty)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    // Echo off before the prompt, so nothing typed after it is ever echoed.
    tcsetattr(tty, OptionalActions::Now, &quiet)?;
    let mut line = Zeroizing::new(String::new());
    let read = (&*tty)
        .write_all(prompt.as_bytes())
        .and_then(|()| std::io::BufReader::new(tty).read_line(&mut line));
    tcsetattr(tty, OptionalActions::Now, &saved)?;
    read?;
    let keep = line.trim_end_matches(['\n', '\r']).len();
    line.truncate(keep);
    Ok(line)
}

/// Encrypts with the passphrase: age's scrypt recipient at about a second's work on this
/// machine, never below [`MIN_WORK_FACTOR`] (a busy machine measures less) nor above
/// [`MAX_WORK_FACTOR`] (what a read accepts).
pub(super) fn recipient(passphrase: &SecretString) -> age::scrypt::Recipient {
    let mut recipient =
        age::scrypt::Recipient::new(SecretString::from(passphrase.expose_secret().to_owned()));
    recipient.set_work_factor(measured_work_factor().clamp(MIN_WORK_FACTOR, MAX_WORK_FACTOR));
    recipient
}

/// Decrypts with the passphrase, accepting work factors up to [`MAX_WORK_FACTOR`] whatever
/// the machine's load (age's own bound follows its measure of the moment).
pub(super) fn identity(passphrase: &SecretString) -> age::scrypt::Identity {
    let mut identity =
        age::scrypt::Identity::new(SecretString::from(passphrase.expose_secret().to_owned()));
    identity.set_max_work_factor(MAX_WORK_FACTOR);
    identity
}

/// The scrypt work factor that takes about a second here now, measured as age does: time
/// `log_n` 10 and double until a second. 0 when the clock cannot measure it (the floor
/// applies).
fn measured_work_factor() -> u8 {
    let Ok(params) = scrypt::Params::new(10, 8, 1, 32) else {
        return 0;
    };
    let mut out = [0u8; 32];
    let start = std::time::Instant::now();
    if scrypt::scrypt(b"", b"", &params, &mut out).is_err() {
        return 0;
    }
    let mut took = start.elapsed();
    if took.is_zero() {
        return 0;
    }
    let mut log_n = 10;
    while took < std::time::Duration::from_secs(1) && log_n < MAX_WORK_FACTOR {
        log_n += 1;
        took *= 2;
    }
    log_n
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// Runs `f` while busy threads (four per core) compete with it for the CPU: a machine
    /// under load, as when a write shares its core with a build.
    fn while_busy<T>(f: impl FnOnce() -> T) -> T {
        let stop = Arc::new(AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let busy: Vec<_> = (0..4 * cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                })
            })
            .collect();
        let out = f();
        stop.store(true, Ordering::Relaxed);
        for thread in busy {
            thread.join().unwrap();
        }
        out
    }

    fn encrypt(recipient: &age::scrypt::Recipient) -> Vec<u8> {
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
                .unwrap();
        let mut out = Vec::new();
        let mut writer = encryptor.wrap_output(&mut out).unwrap();
        writer.write_all(b"{}").unwrap();
        writer.finish().unwrap();
        out
    }

    /// The `log_n` of the scrypt stanza (`-> scrypt SALT LOG_N`) in an age file's header.
    fn header_log_n(file: &[u8]) -> u8 {
        let head = String::from_utf8_lossy(&file[..file.len().min(200)]).into_owned();
        let stanza = head
            .lines()
            .find(|l| l.starts_with("-> scrypt "))
            .expect("an scrypt stanza");
        stanza.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// `file` with the scrypt stanza's `log_n` replaced by `log_n`.
    fn with_log_n(file: &[u8], log_n: u8) -> Vec<u8> {
        let old = header_log_n(file);
        let at = file.windows(10).position(|w| w == b"-> scrypt ").unwrap();
        let end = at + file[at..].iter().position(|&b| b == b'\n').unwrap();
        let digits = old.to_string().len();
        [
            &file[..end - digits],
            log_n.to_string().as_bytes(),
            &file[end..],
        ]
        .concat()
    }

    #[test]
    fn a_passphrase_store_written_on_a_busy_machine_keeps_a_work_factor_of_at_least_18() {
        let passphrase = SecretString::from("correct horse battery staple".to_owned());
        let recipient = while_busy(|| recipient(&passphrase));
        let log_n = header_log_n(&encrypt(&recipient));
        assert!(log_n >= 18, "written with scrypt log_n {log_n}");
    }

    #[test]
    fn a_store_written_on_an_idle_machine_is_read_on_a_busy_one() {
        let passphrase = SecretString::from("correct horse battery staple".to_owned());
        let mut cheap = recipient(&passphrase);
        cheap.set_work_factor(2);
        // log_n 19 as a header says it (the MAC then fails, after the work is done): what an
        // idle machine writes, read by one whose own measure is far lower.
        let file = with_log_n(&encrypt(&cheap), 19);
        let identity = while_busy(|| identity(&passphrase));
        let result = age::Decryptor::new(&file[..])
            .unwrap()
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .map(|_| ());
        assert!(
            !matches!(result, Err(age::DecryptError::ExcessiveWork { .. })),
            "refused as excessive work: {:?}",
            result.err().map(|e| e.to_string())
        );
        // Above the fixed cap: refused before any work.
        let file = with_log_n(&encrypt(&cheap), MAX_WORK_FACTOR + 1);
        let result = age::Decryptor::new(&file[..])
            .unwrap()
            .decrypt(std::iter::once(&identity as &dyn age::Identity))
            .map(|_| ());
        assert!(
            matches!(result, Err(age::DecryptError::ExcessiveWork { required, .. }) if required == MAX_WORK_FACTOR + 1)
        );
    }
}
