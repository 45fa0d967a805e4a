//! Unit tests' scratch directories.

use std::path::{Path, PathBuf};

/// A fresh directory under the system's temp dir, removed when dropped.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new() -> Self {
        let mut id = [0u8; 8];
        crate::secret::fill_random(&mut id);
        let dir = std::env::temp_dir().join(format!("keyd-unit-{}", crate::secret::hex(&id)));
        std::fs::create_dir(&dir).unwrap();
        Scratch(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
