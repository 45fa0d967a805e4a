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
    let mode = std::fs::metadata(file).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::IdentityExposed {
            path: file.to_owned(),
            mode,
        });
    }
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

/// Encrypts with the passphrase (age's scrypt recipient, its default work factor).
pub(super) fn recipient(passphrase: &SecretString) -> age::scrypt::Recipient {
    age::scrypt::Recipient::new(SecretString::from(passphrase.expose_secret().to_owned()))
}

/// Decrypts with the passphrase.
pub(super) fn identity(passphrase: &SecretString) -> age::scrypt::Identity {
    age::scrypt::Identity::new(SecretString::from(passphrase.expose_secret().to_owned()))
}
