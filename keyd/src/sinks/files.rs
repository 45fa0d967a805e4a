//! The files sink: one file per output in a directory (default `/run/secrets`), exact value with
//! no added newline, mode 0400 by default, replaced by temp file + fsync + rename inside the same
//! directory so consumers that mount the directory see each change whole.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::Zeroizing;

use super::{Delivery, DeliveryReport, Sink, SinkError, same_bytes};
use crate::policy::FilesSpec;

const SINK: &str = "files";

impl Sink for FilesSpec {
    fn check(&self, _deliveries: &[Delivery]) -> Result<(), SinkError> {
        // Any byte string can be a file; names were checked by the policy.
        Ok(())
    }

    fn deliver(&self, deliveries: &[Delivery]) -> Result<DeliveryReport, SinkError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SinkError::Io {
                sink: SINK,
                path,
                source,
            }
        };
        if !self.dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(self.dir_mode)
                .create(&self.dir)
                .map_err(io(&self.dir))?;
        }
        // Temp files of a delivery cut off by a crash (only keyd writes them, under the lock).
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.ends_with(".keyd-tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        let mut report = DeliveryReport {
            sink: SINK.into(),
            location: self.dir.clone(),
            ..Default::default()
        };
        for d in deliveries {
            let path = self.dir.join(&d.name);
            if self.is_current(&path, d.value.expose_secret().as_bytes()) {
                report.unchanged.push(d.name.clone());
                continue;
            }
            let tmp = self.dir.join(format!(".{}.keyd-tmp", d.name));
            let _ = fs::remove_file(&tmp);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(self.mode)
                .open(&tmp)
                .map_err(io(&tmp))?;
            let written = f
                .write_all(d.value.expose_secret().as_bytes())
                .and_then(|()| f.set_permissions(fs::Permissions::from_mode(self.mode)))
                .and_then(|()| {
                    if self.uid.is_some() || self.gid.is_some() {
                        std::os::unix::fs::fchown(&f, self.uid, self.gid)
                    } else {
                        Ok(())
                    }
                })
                .and_then(|()| f.sync_all());
            if let Err(e) = written {
                let _ = fs::remove_file(&tmp);
                return Err(io(&tmp)(e));
            }
            fs::rename(&tmp, &path).map_err(io(&path))?;
            report.written.push(d.name.clone());
        }
        if !report.written.is_empty() {
            File::open(&self.dir)
                .and_then(|dir| dir.sync_all())
                .map_err(io(&self.dir))?;
        }
        Ok(report)
    }
}

impl FilesSpec {
    /// Whether `path` already holds exactly `value` with the configured mode and owner.
    fn is_current(&self, path: &Path, value: &[u8]) -> bool {
        let Ok(mut f) = File::open(path) else {
            return false;
        };
        let Ok(meta) = f.metadata() else { return false };
        if !meta.is_file()
            || meta.mode() & 0o7777 != self.mode
            || self.uid.is_some_and(|u| u != meta.uid())
            || self.gid.is_some_and(|g| g != meta.gid())
            || meta.len() != value.len() as u64
        {
            return false;
        }
        let mut existing = Zeroizing::new(Vec::with_capacity(value.len()));
        f.read_to_end(&mut existing).is_ok() && same_bytes(&existing, value)
    }
}
