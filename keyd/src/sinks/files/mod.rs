//! The files sink: one file per output in a directory (default `/run/secrets`), exact value with
//! no added newline, mode 0400 by default. Owns the directory's layout and the reload hook run
//! after a delivery changed something.
//!
//! Every file lives in keyd's own directory `..keyd`, under a generation number; the name a
//! consumer opens is a relative symlink into it. The outputs of one secret change together, and
//! a delivery touches only the secrets it changes:
//!
//! ```text
//! DIR/NAME         -> ..keyd/NAME@4      a secret with one output: its file, generation 4
//! DIR/tls.crt      -> ..keyd/@web/tls.crt   a secret with several outputs (a certificate
//! DIR/tls.key      -> ..keyd/@web/tls.key   and its key) is read through its set,
//! DIR/..keyd/@web  -> @web@2                which one rename swaps
//! DIR/..keyd/@web@2/tls.crt, tls.key
//! ```
//!
//! A new value is written to the next generation (a file, or a set directory holding every
//! output of the secret, unchanged ones hard-linked), made durable, and shown by renaming a
//! temp symlink over the output's name or over the secret's set link: at every instant a
//! consumer reads the old value or the new one whole, and never a certificate beside another
//! version's key. The previous generation is removed after the swap. Output names start with a
//! letter or digit, so `NAME@N` files never meet the `@SECRET` sets. Symlinks are relative, so
//! the directory still works through a bind mount.
//!
//! Older layouts are taken over by the first full pass without a rewrite: plain files (each
//! output a file in `DIR`), and the whole-directory set (`NAME -> ..data/NAME`,
//! `..data -> ..keyd-N`). A current file is hard-linked into `..keyd` and its name renamed to
//! the new symlink, so consumers see the same inode. Nothing found at an output path is
//! followed: names are read with `readlinkat`/`fstatat` relative to the directory, files are
//! opened with `O_NOFOLLOW | O_NONBLOCK`, and anything else is replaced, never opened.
//!
//! A full pass also lists both directories to remove what a cut-off pass left, unless both are
//! as a pass that left them tidy recorded them in the ledger (see `record_dirs`).
//!
//! The parts: `layout.rs` the names and the moves on disk, `ledger.rs` the stamps and the
//! record of tidy directories, `plan.rs` what a pass finds and decides, `generation.rs` a
//! secret's next generation written and shown, `cleanup.rs` what no name shows (older layouts
//! taken over), `deliver.rs` the pass itself, `reload.rs` the reload hook.

mod cleanup;
mod deliver;
mod generation;
mod layout;
mod ledger;
mod plan;
mod reload;

use std::path::{Path, PathBuf};

pub use cleanup::remove_delivered;
pub use reload::run_reload_hook;

use super::SinkError;
use crate::policy::FilesSpec;

const SINK: &str = "files";
/// keyd's directory inside the output directory: every delivered file is in it.
const OWN: &str = "..keyd";
/// Temp symlinks end with this (`.NAME.keyd-tmp`, `..keyd/.@web.keyd-tmp`): whatever bears it
/// in the output directory is left by a pass cut off before its rename, and a full pass
/// removes it.
const TMP_SUFFIX: &str = ".keyd-tmp";

/// Delivers into a directory, as `[sinks.files]` says.
#[derive(Debug)]
pub struct FilesSink {
    spec: FilesSpec,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError {
    let path = path.to_owned();
    move |source| SinkError::Io {
        sink: SINK,
        path,
        source,
    }
}

/// Whether `a` and `b` name the same directory: the same absolute path, or, when both exist,
/// the same inode (one reached through a symlink or a bind mount is no move).
pub fn same_directory(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    if absolute(a) == absolute(b) {
        return true;
    }
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

impl FilesSink {
    /// The sink `spec` describes.
    pub fn new(spec: FilesSpec) -> Self {
        FilesSink { spec }
    }

    fn own(&self) -> PathBuf {
        self.spec.dir.join(OWN)
    }
}
