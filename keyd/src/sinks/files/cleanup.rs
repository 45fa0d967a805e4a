//! A full pass's clean-up of what no name shows: temp symlinks a cut-off pass left, older
//! layouts taken over (plain files, the whole-directory `..data` set), and `..keyd` entries
//! of earlier generations.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use super::layout::{
    Shown, classify, file_entry, fsync, generation_of, remove_if_there, replace_with_symlink,
    set_link,
};
use super::{FilesSink, LEGACY_LINK, LEGACY_SET, OWN, TMP_SUFFIX, io};
use crate::sinks::SinkError;

impl FilesSink {
    /// A full pass's clean-up: temp symlinks a crash left, names still shown through an older
    /// layout (outputs no longer delivered keep their last file, moved into `..keyd`), that
    /// layout's directories, and `..keyd` entries no name shows. `shown` holds the `..keyd`
    /// entries this pass's outputs show; `delivered`, their names. Returns whether the
    /// directories are tidy now (every removal done, no older layout left).
    pub(super) fn clean_up(
        &self,
        mut shown: HashSet<String>,
        delivered: &HashSet<&str>,
    ) -> Result<bool, SinkError> {
        let (dir, own) = (&self.spec.dir, self.own());
        // Something this meant to remove is still there (a removal refused).
        let mut left = false;
        let mut legacy_left = false;
        let mut relinked = false;
        // The older layout's data directories, removed once no name shows them.
        let mut legacy_sets = Vec::new();
        for entry in fs::read_dir(dir).map_err(io(dir))?.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            if name.starts_with('.') {
                if name.ends_with(TMP_SUFFIX) {
                    left |= fs::remove_file(&path).is_err();
                } else if name
                    .strip_prefix(LEGACY_SET)
                    .is_some_and(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_digit()))
                    && entry.file_type().is_ok_and(|t| t.is_dir())
                {
                    legacy_sets.push(path);
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
                Shown::Legacy => {
                    let file = dir.join(LEGACY_LINK).join(&name);
                    if fs::symlink_metadata(&file).is_ok_and(|m| m.is_file()) {
                        let entry = file_entry(&name, 1);
                        let new = own.join(&entry);
                        remove_if_there(&new, false)?;
                        fs::hard_link(&file, &new).map_err(io(&new))?;
                        let target = Path::new(OWN).join(&entry);
                        let tmp = dir.join(format!(".{name}{TMP_SUFFIX}"));
                        replace_with_symlink(&tmp, &path, &target)?;
                        shown.insert(entry);
                        relinked = true;
                    } else {
                        legacy_left = true;
                    }
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
        if relinked {
            fsync(&own)?;
            fsync(dir)?;
        }
        if !legacy_left {
            remove_if_there(&dir.join(LEGACY_LINK), false)?;
            for set in &legacy_sets {
                remove_if_there(set, true)?;
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
        Ok(!(left || legacy_left))
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
            Shown::Own(_) | Shown::Legacy => {}
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
