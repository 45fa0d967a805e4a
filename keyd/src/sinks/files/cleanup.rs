//! A full pass's clean-up of what no name shows: temp symlinks a cut-off pass left, and
//! `..keyd` entries of earlier generations.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use super::layout::{Shown, classify, file_entry, fsync, generation_of, remove_if_there, set_link};
use super::{FilesSink, OWN, TMP_SUFFIX, io};
use crate::sinks::SinkError;

impl FilesSink {
    /// A full pass's clean-up: temp symlinks a crash left, and `..keyd` entries no name
    /// shows. `shown` holds the `..keyd` entries this pass's outputs show; `delivered`, their
    /// names. Returns whether the directories are tidy now (every removal done).
    pub(super) fn clean_up(
        &self,
        mut shown: HashSet<String>,
        delivered: &HashSet<&str>,
    ) -> Result<bool, SinkError> {
        let (dir, own) = (&self.spec.dir, self.own());
        // Something this meant to remove is still there (a removal refused).
        let mut left = false;
        for entry in fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            if name.starts_with('.') {
                if name.ends_with(TMP_SUFFIX) {
                    left |= fs::remove_file(&path).is_err();
                }
                continue;
            }
            if delivered.contains(name.as_str()) {
                continue;
            }
            // A name no longer delivered (or another stack's): keep what it shows.
            let Ok(target) = fs::read_link(&path) else {
                continue;
            };
            match classify(&target, &name, None) {
                Shown::Own(n) => {
                    shown.insert(file_entry(&name, n));
                }
                _ => {
                    // `..keyd/@SECRET/NAME`: the secret's set link and the set it names.
                    let Some(secret) = target
                        .strip_prefix(OWN)
                        .ok()
                        .and_then(|t| t.parent())
                        .and_then(Path::to_str)
                        .and_then(|s| s.strip_prefix('@'))
                    else {
                        continue;
                    };
                    let link = set_link(secret);
                    if let Some(set) = fs::read_link(own.join(&link))
                        .ok()
                        .and_then(|t| t.into_os_string().into_string().ok())
                    {
                        shown.insert(set);
                    }
                    shown.insert(link);
                }
            }
        }
        for entry in fs::read_dir(&own).map_err(io(&own))?.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if shown.contains(&name) {
                continue;
            }
            let path = entry.path();
            let removed = match entry.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                _ => fs::remove_file(&path),
            };
            left |= removed.is_err();
        }
        Ok(!left)
    }
}

/// Removes from `dir` what keyd delivered there under `names` (one stack's outputs), after the
/// stack moved to another directory: each name that is keyd's symlink (into `..keyd`, or the
/// older `..data`), the `..keyd` entries those names show (files of every generation, the
/// secret's set link and sets), temp symlinks of theirs, and `..keyd` once empty. Anything
/// else stays: plain files (they may be the user's) and other stacks' names. Nothing there is
/// followed: a name is read with `readlink`, and a tree removal does not follow symlinks.
pub fn remove_delivered(dir: &Path, names: &[&str]) -> Result<(), SinkError> {
    let own = dir.join(OWN);
    let mut sets = HashSet::new();
    let mut removed = false;
    for name in names {
        let path = dir.join(name);
        remove_if_there(&dir.join(format!(".{name}{TMP_SUFFIX}")), false)?;
        let Ok(target) = fs::read_link(&path) else {
            continue;
        };
        match classify(&target, name, None) {
            Shown::Own(_) => {}
            Shown::Member => {
                // `..keyd/@SECRET/NAME`, as `classify` checked.
                if let Some(secret) = target
                    .iter()
                    .nth(1)
                    .and_then(|c| c.to_str())
                    .and_then(|c| c.strip_prefix('@'))
                {
                    sets.insert(secret.to_owned());
                }
            }
            _ => continue,
        }
        remove_if_there(&path, false)?;
        removed = true;
    }
    if let Ok(entries) = fs::read_dir(&own) {
        for entry in entries.flatten() {
            let Ok(entry_name) = entry.file_name().into_string() else {
                continue;
            };
            let of_a_name = names
                .iter()
                .any(|n| generation_of(&entry_name, n).is_some());
            let of_a_set = sets.iter().any(|s| {
                let link = set_link(s);
                entry_name == link
                    || entry_name == format!(".{link}{TMP_SUFFIX}")
                    || generation_of(&entry_name, &link).is_some()
            });
            if of_a_name || of_a_set {
                let tree = entry.file_type().is_ok_and(|t| t.is_dir());
                remove_if_there(&entry.path(), tree)?;
            }
        }
        // Only an empty `..keyd` goes: another stack may deliver into this directory too.
        if fs::remove_dir(&own).is_err() {
            fsync(&own)?;
        }
    }
    if removed {
        fsync(dir)?;
    }
    Ok(())
}
