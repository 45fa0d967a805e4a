//! Who may have written the files a home trusts: the identity must belong to the user keyd
//! runs as, and the home must be a directory only that user can write to.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use super::StoreError;

/// Refuses a file (the identity, the passphrase file) that the user keyd runs as does not
/// own: its owner could put another key there, or read this one.
pub(super) fn check_owner(path: &Path, meta: &Metadata) -> Result<(), StoreError> {
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(StoreError::IdentityNotOwned {
            path: path.to_owned(),
            owner: meta.uid(),
            euid,
        });
    }
    Ok(())
}

/// Refuses a home that group or others can write to: they could swap its store (or an
/// identity kept there) for their own.
pub(super) fn check_home(dir: &Path) -> Result<(), StoreError> {
    let meta = std::fs::metadata(dir).map_err(|source| StoreError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(StoreError::HomeWritable {
            home: dir.to_owned(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::super::Home;

    fn initialised(scratch: &crate::scratch::Scratch) -> Home {
        let home = Home::new(scratch.path().join("home"));
        home.lock().unwrap().init().unwrap();
        home
    }

    #[test]
    fn an_identity_owned_by_another_user_is_refused() {
        if !rustix::process::geteuid().is_root() {
            return; // only root can give a file away
        }
        let scratch = crate::scratch::Scratch::new();
        let home = initialised(&scratch);
        std::os::unix::fs::chown(home.identity_path(), Some(4242), None).unwrap();
        let Err(e) = home.lock_shared().and_then(|store| store.load()) else {
            panic!("an identity another user owns was used");
        };
        let text = e.to_string();
        assert!(text.contains("owned by uid 4242"), "{text}");
    }

    #[test]
    fn a_home_others_can_write_to_is_refused() {
        let scratch = crate::scratch::Scratch::new();
        let home = initialised(&scratch);
        for mode in [0o777, 0o770, 0o702] {
            std::fs::set_permissions(home.dir(), std::fs::Permissions::from_mode(mode)).unwrap();
            let e = home
                .lock_shared()
                .and_then(|store| store.load())
                .err()
                .unwrap_or_else(|| panic!("a home of mode {mode:04o} was used"));
            let text = e.to_string();
            assert!(
                text.contains(&format!("(mode {mode:04o})")) && text.contains("can be written by"),
                "{text}"
            );
        }
        std::fs::set_permissions(home.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
        home.lock_shared().unwrap().load().unwrap();
    }
}
