//! Reading a file at a path someone else may have put something at (an env file sink's output,
//! a reload hook's pid file, a file of an import directory): a symlink as the last component is
//! never followed, a FIFO or device is never blocked on, only a regular file is read, and only
//! up to a bound the caller gives. Callers that need to know who wrote the file ask for its
//! owner to be keyd's effective uid or root.

use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use zeroize::Zeroizing;

/// Whose file is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    /// Anyone's.
    Any,
    /// keyd's effective uid's, or root's: a file no other user can have written.
    KeydOrRoot,
}

/// Opens `path` for reading: `O_NOFOLLOW` (a symlink at `path` is an error of its own, not the
/// `ELOOP` of the open), `O_NONBLOCK` (a FIFO opens at once and is then refused), and the file
/// is accepted only when `fstat` says it is a regular file of an accepted `owner`. Errors say
/// what was found; the caller adds the path.
pub(crate) fn open_regular(path: &Path, owner: Owner) -> std::io::Result<(File, Metadata)> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
        if e == rustix::io::Errno::LOOP {
            std::io::Error::other("is a symbolic link, which keyd does not follow here")
        } else {
            e.into()
        }
    })?;
    let file = File::from(fd);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "is not a regular file (a FIFO, device, socket or directory)",
        ));
    }
    let euid = rustix::process::geteuid().as_raw();
    if owner == Owner::KeydOrRoot && meta.uid() != euid && meta.uid() != 0 {
        return Err(std::io::Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "is owned by uid {}, neither this process's uid {euid} nor root: another user may have written it",
                meta.uid()
            ),
        ));
    }
    Ok((file, meta))
}

/// The whole of `file`, which must hold at most `limit` bytes (one more is read to tell).
pub(crate) fn read_at_most(file: File, limit: u64) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let expected = file.metadata().map_or(0, |m| m.len()).min(limit);
    let mut bytes = Zeroizing::new(Vec::with_capacity(expected as usize + 1));
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            format!("is larger than the {limit} bytes expected"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

    #[test]
    fn only_a_regular_file_is_opened_and_its_read_is_bounded() {
        let dir = Scratch::new();
        let file = dir.path().join("f");
        std::fs::write(&file, b"12345").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();

        let (f, _) = open_regular(&file, Owner::KeydOrRoot).unwrap();
        assert_eq!(&*read_at_most(f, 5).unwrap(), b"12345");
        let (f, _) = open_regular(&file, Owner::Any).unwrap();
        let e = read_at_most(f, 4).unwrap_err();
        assert!(e.to_string().contains("larger than the 4 bytes"), "{e}");
        let e = open_regular(&link, Owner::Any).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        let e = open_regular(&fifo, Owner::Any).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        let e = open_regular(dir.path(), Owner::Any).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
