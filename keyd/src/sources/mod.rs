//! Where `keyctl import` finds the values a stack already has: a directory of one file per
//! secret (`/run/secrets`, the output of a quickstart script), a `.env` file in compose's
//! syntax (`dotenv.rs`), or a compose file's top-level `secrets:` with `file:` entries
//! (`compose.rs`). Each reader returns named values in zeroizing types with where each came
//! from (file, and line where there is one), bounded in size; it never interprets a value.

mod compose;
mod dotenv;

use std::path::{Path, PathBuf};

use crate::secret::SecretString;

pub use dotenv::parse as parse_dotenv;

/// The largest value file read (a PEM chain is a few KiB).
pub const MAX_VALUE_BYTES: u64 = 1024 * 1024;
/// The largest `.env` or compose file read.
pub const MAX_SOURCE_BYTES: u64 = 64 * 1024 * 1024;

/// One value found in a source.
pub struct SourceValue {
    /// The name it has there (file name, variable, compose secret name).
    pub name: String,
    /// Where: `FILE` or `FILE:LINE`.
    pub origin: String,
    /// The value, as the consumer would read it.
    pub value: SecretString,
}

impl std::fmt::Debug for SourceValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceValue")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// What kind of source a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A directory: one file per secret.
    Dir,
    /// A `.env` file.
    Env,
    /// A compose file's `secrets:`.
    Compose,
}

/// Why a source could not be read. Messages name files and lines, never values.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// An I/O error on a path.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The text does not follow the format.
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A file is larger than a value or a source can be.
    #[error("{}: {size} bytes is larger than the {limit} bytes a {what} may have", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
        /// What it was read as.
        what: &'static str,
    },
}

impl SourceKind {
    /// Guesses the kind from the path: a directory, a compose file (`*.yml`, `*.yaml`), else a
    /// `.env` file.
    pub fn of(path: &Path) -> SourceKind {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if path.is_dir() {
            SourceKind::Dir
        } else if name.ends_with(".yml") || name.ends_with(".yaml") {
            SourceKind::Compose
        } else {
            SourceKind::Env
        }
    }
}

/// Reads every value of the source at `path`.
pub fn read(path: &Path, kind: SourceKind) -> Result<Vec<SourceValue>, SourceError> {
    match kind {
        SourceKind::Dir => read_dir(path),
        SourceKind::Env => {
            let text = read_text(path, MAX_SOURCE_BYTES, "source file")?;
            dotenv::parse(path, &text)
        }
        SourceKind::Compose => {
            let text = read_text(path, MAX_SOURCE_BYTES, "compose file")?;
            compose::secrets(path, &text)?
                .into_iter()
                .map(|(name, file, line)| {
                    let value = read_value(&file)?;
                    Ok(SourceValue {
                        name,
                        origin: format!("{}:{line} ({})", path.display(), file.display()),
                        value,
                    })
                })
                .collect()
        }
    }
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read_text(path: &Path, limit: u64, what: &'static str) -> Result<SecretString, SourceError> {
    use std::io::Read as _;
    // The path is the user's own choice (a link to a shared .env is followed), but only a
    // regular file is read: opened without blocking, a FIFO is refused instead of hanging the
    // import (and the store lock it holds).
    let flags =
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC;
    let file = rustix::fs::open(path, flags, rustix::fs::Mode::empty())
        .map(std::fs::File::from)
        .map_err(|e| io_at(path)(e.into()))?;
    let meta = file.metadata().map_err(io_at(path))?;
    if !meta.is_file() {
        return Err(io_at(path)(std::io::Error::other(
            "is not a regular file (a FIFO, device, socket or directory)",
        )));
    }
    let size = meta.len();
    if size > limit {
        return Err(too_large(path, size, limit, what));
    }
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(size as usize));
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_at(path))?;
    text_of(path, bytes)
}

fn too_large(path: &Path, size: u64, limit: u64, what: &'static str) -> SourceError {
    SourceError::TooLarge {
        path: path.to_owned(),
        size,
        limit,
        what,
    }
}

/// `bytes` read from `path` as text; bytes that are not UTF-8 are zeroised and refused.
fn text_of(
    path: &Path,
    mut bytes: zeroize::Zeroizing<Vec<u8>>,
) -> Result<SecretString, SourceError> {
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(SecretString::new(text)),
        Err(e) => {
            let mut raw = e.into_bytes();
            zeroize::Zeroize::zeroize(&mut raw);
            Err(SourceError::Io {
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "not UTF-8 text (keyd keeps text values: PEM, base64, passwords)",
                ),
            })
        }
    }
}

/// One value file, exactly as it is (a trailing newline included).
fn read_value(path: &Path) -> Result<SecretString, SourceError> {
    read_text(path, MAX_VALUE_BYTES, "value file")
}

/// A directory of one file per secret: each regular file (hidden files and subdirectories
/// skipped) is a value named after the file. A symlink is followed only where it stays inside
/// the directory, as `/run/secrets`, Kubernetes' `NAME -> ..data/NAME` and keyd's own files
/// sink lay them out; one leading out of it is an error, so a link planted in the directory
/// cannot import a file of another user's (`/etc/shadow`). Each file read must be owned by the
/// effective uid or root, and is opened without following a link or blocking.
fn read_dir(dir: &Path) -> Result<Vec<SourceValue>, SourceError> {
    let inside = std::fs::canonicalize(dir).map_err(io_at(dir))?;
    let mut values = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') {
            continue;
        }
        // A dangling link, a directory, a FIFO: not a value, skipped as before.
        let Ok(target) = std::fs::canonicalize(&path) else {
            continue;
        };
        if !target.is_file() {
            continue;
        }
        if !target.starts_with(&inside) {
            return Err(SourceError::Io {
                path,
                source: std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "links to {}, outside the directory imported: keyd follows only links that stay inside it (copy the file in to import it)",
                        target.display()
                    ),
                ),
            });
        }
        values.push(SourceValue {
            value: read_owned_value(&target, &path)?,
            origin: path.display().to_string(),
            name,
        });
    }
    values.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(values)
}

/// A value file of an import directory, at `real` (a path with no link in it): a regular file
/// owned by the effective uid or root, at most [`MAX_VALUE_BYTES`]. Errors name `shown`, the
/// entry of the directory that led there.
fn read_owned_value(real: &Path, shown: &Path) -> Result<SecretString, SourceError> {
    use crate::regular_file::{Owner, open_regular, read_at_most};
    let (file, meta) = open_regular(real, Owner::KeydOrRoot).map_err(io_at(shown))?;
    if meta.len() > MAX_VALUE_BYTES {
        return Err(too_large(shown, meta.len(), MAX_VALUE_BYTES, "value file"));
    }
    let bytes = read_at_most(file, MAX_VALUE_BYTES).map_err(io_at(shown))?;
    text_of(shown, bytes)
}
