//! A PgBouncer in front of a PostgreSQL target (`pgbouncer = "pool"`): PgBouncer with
//! `auth_file` checks client passwords against its own copy of each role's verifier, so every
//! verifier keyd sets at the server is written there too.
//!
//! The line written is the verifier keyd computed for PostgreSQL, byte for byte: PgBouncer's
//! SCRAM pass-through then logs in to the server with the keys the client proved, which only
//! works when both hold the same salt and iteration count. The file is rewritten atomically
//! (a temporary file in its directory, fsync, rename, fsync of the directory) with its mode and
//! owner; every line keyd does not replace is kept as it was, comments and other users too.
//! Then `RELOAD` goes through the admin console (the target's `url`, simple query protocol),
//! and a login is tested through the pooler (the console's host and port, the PostgreSQL
//! target's database) before the rotation goes on.
//!
//! keyd does not lock the file against other writers: an edit someone makes between keyd's
//! read and its rename is lost. The store's lock serialises keyd's own writers.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::TargetError;
use super::pg_client::PgClient;
use crate::regular_file::{Owner, open_regular, read_at_most};
use crate::secret::SecretString;

/// The largest `auth_file` keyd reads.
const MAX_AUTH_FILE: u64 = 16 << 20;

/// A PgBouncer's admin console and the `auth_file` it reads.
pub struct PgbouncerPool {
    /// The admin console (its name is the pgbouncer target's).
    console: PgClient,
    /// The `auth_file`.
    auth_file: PathBuf,
}

/// `value` quoted for `auth_file`: in double quotes, a double quote doubled.
fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('"', "\"\""))
}

/// The user a line of `auth_file` is for: its first quoted field, unquoted (`""` is `"`).
/// `None` for lines PgBouncer skips (blank, `;` comments) or cannot read.
fn line_user(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix('"')?;
    let mut user = String::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '"' {
            user.push(c);
        } else if chars.peek() == Some(&'"') {
            chars.next();
            user.push('"');
        } else {
            return Some(user);
        }
    }
    None
}

/// `text` with the lines of `user` replaced by `line` (at the first one's place, or appended),
/// or removed when `line` is `None`; every other line as it was.
fn replace_user_line(text: &str, user: &str, line: Option<&str>) -> String {
    let mut out = String::with_capacity(text.len() + line.map_or(0, str::len) + 1);
    let mut placed = line.is_none();
    for l in text.split_inclusive('\n') {
        if line_user(l).as_deref() != Some(user) {
            out.push_str(l);
        } else if !placed {
            out.push_str(line.unwrap_or_default());
            out.push('\n');
            placed = true;
        }
    }
    if !placed {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(line.unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Replaces `path` with `text`: a temporary file in the same directory with `path`'s mode and
/// owner, fsync, rename over `path`, fsync of the directory. Readers see the old file or the
/// new one.
fn write_atomic(path: &Path, text: &str, meta: &std::fs::Metadata) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.keyd-tmp"));
    let _ = std::fs::remove_file(&tmp); // left by a crash; the store's lock guards it
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if (file.metadata()?.uid(), file.metadata()?.gid()) != (meta.uid(), meta.gid()) {
            rustix::fs::fchown(
                &file,
                Some(rustix::fs::Uid::from_raw(meta.uid())),
                Some(rustix::fs::Gid::from_raw(meta.gid())),
            )
            .map_err(|e| {
                std::io::Error::other(format!(
                    "cannot give the new file the owner {}:{}: {e}",
                    meta.uid(),
                    meta.gid()
                ))
            })?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

impl PgbouncerPool {
    /// The pool of pgbouncer target `name`: its admin console at `url` (no password in it),
    /// logged into with `admin_password`, and its `auth_file`; each call takes at most
    /// `timeout`.
    pub fn new(
        name: &str,
        url: &str,
        admin_password: Option<&SecretString>,
        auth_file: &Path,
        timeout: Duration,
        allow_insecure_auth: bool,
    ) -> Result<Self, TargetError> {
        Ok(PgbouncerPool {
            console: PgClient::new(name, url, admin_password, timeout, allow_insecure_auth)?,
            auth_file: auth_file.to_owned(),
        })
    }

    /// The pgbouncer target's name.
    pub(crate) fn name(&self) -> &str {
        &self.console.name
    }

    /// Makes `user`'s line of `auth_file` hold `verifier`, then reloads PgBouncer.
    pub(crate) fn set(&self, user: &str, verifier: &str) -> Result<(), TargetError> {
        let line = format!("{} {}", quote(user), quote(verifier));
        self.rewrite(user, Some(&line))?;
        self.reload()
    }

    /// Removes `user`'s line from `auth_file`, then reloads PgBouncer.
    pub(crate) fn remove(&self, user: &str) -> Result<(), TargetError> {
        self.rewrite(user, None)?;
        self.reload()
    }

    /// Whether `user` logs in with `password` through the pooler, to `dbname` (default: the
    /// user's name, as PostgreSQL's).
    pub(crate) fn try_login(
        &self,
        user: &str,
        password: &SecretString,
        dbname: Option<&str>,
    ) -> Result<bool, TargetError> {
        self.console
            .try_login(user, password, Some(dbname.unwrap_or(user)))
            .map_err(|e| {
                self.console
                    .fail(format!("through the pooler: {}", e.message))
            })
    }

    /// Rewrites `auth_file` with `user`'s lines replaced by `line` (removed for `None`),
    /// unless it already reads so.
    fn rewrite(&self, user: &str, line: Option<&str>) -> Result<(), TargetError> {
        let path = &self.auth_file;
        let fail = |what: &str, e: std::io::Error| {
            self.console
                .fail(format!("cannot {what} auth_file {}: {e}", path.display()))
        };
        let (file, meta) = open_regular(path, Owner::Any).map_err(|e| fail("read", e))?;
        let bytes = read_at_most(file, MAX_AUTH_FILE).map_err(|e| fail("read", e))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| fail("read", std::io::Error::other("it is not UTF-8")))?;
        let new = zeroize::Zeroizing::new(replace_user_line(text, user, line));
        if new.as_str() == text {
            return Ok(());
        }
        write_atomic(path, &new, &meta).map_err(|e| fail("write", e))
    }

    /// Sends `RELOAD` through the admin console: PgBouncer reads `auth_file` again.
    fn reload(&self) -> Result<(), TargetError> {
        let session = self.console.admin_session()?;
        session
            .call(session.client().simple_query("RELOAD"))
            .map(drop)
            .map_err(|e| {
                self.console
                    .fail(format!("RELOAD failed: {}", self.console.describe(&e)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_file_lines_are_read_as_pgbouncer_reads_them() {
        assert_eq!(line_user("\"app\" \"SCRAM-SHA-256$x\""), Some("app".into()));
        assert_eq!(line_user("  \"a\"\"b\" \"p\""), Some("a\"b".into()));
        assert_eq!(line_user(";\"app\" \"p\""), None);
        assert_eq!(line_user(""), None);
        assert_eq!(line_user("\"unterminated"), None);
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(line_user(&quote("we\"ird")), Some("we\"ird".into()));
    }

    #[test]
    fn only_the_users_own_line_changes() {
        let text =
            ";; written by hand\n\"admin\" \"secret\"\n\"app\" \"old\"\n  \"app_b\" \"other\"\n";
        assert_eq!(
            replace_user_line(text, "app", Some("\"app\" \"new\"")),
            ";; written by hand\n\"admin\" \"secret\"\n\"app\" \"new\"\n  \"app_b\" \"other\"\n"
        );
        assert_eq!(
            replace_user_line(text, "app_b", None),
            ";; written by hand\n\"admin\" \"secret\"\n\"app\" \"old\"\n"
        );
        assert_eq!(
            replace_user_line("\"admin\" \"secret\"", "app", Some("\"app\" \"new\"")),
            "\"admin\" \"secret\"\n\"app\" \"new\"\n",
            "appended after a last line without a newline"
        );
        assert_eq!(
            replace_user_line(
                "\"app\" \"1\"\n\"app\" \"2\"\n",
                "app",
                Some("\"app\" \"3\"")
            ),
            "\"app\" \"3\"\n",
            "a duplicate line of the user goes too"
        );
        assert_eq!(replace_user_line("", "app", None), "");
    }

    #[test]
    fn the_rewrite_keeps_the_files_mode() {
        let dir = std::env::temp_dir().join(format!("keyd-pgb-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("userlist.txt");
        std::fs::write(&path, "\"admin\" \"secret\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        write_atomic(&path, "\"admin\" \"secret\"\n\"app\" \"v\"\n", &meta).unwrap();
        let after = std::fs::metadata(&path).unwrap();
        assert_eq!(after.mode() & 0o7777, 0o640);
        assert_ne!(after.ino(), meta.ino(), "renamed into place");
        assert!(
            std::fs::read_dir(&dir).unwrap().count() == 1,
            "no temp file left"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
