//! Sinks deliver values to consumers: one file per output in a directory ([`FilesSink`]), or
//! a compose env file ([`EnvFileSink`]). The policy declares them as data (`SinkSpec`);
//! [`build`] turns that into the sink that acts on it. A sink is given [`Delivery`]s and
//! records what it wrote in the stack's [`Ledger`], so a later pass can tell an output is
//! current without opening it.

mod driver;
mod envfile;
mod files;
pub mod plugin;
mod swarm;

use std::collections::HashSet;
use std::path::PathBuf;

pub use driver::PluginSink;
pub use envfile::EnvFileSink;
pub use files::{FilesSink, remove_delivered, run_reload_hook, same_directory};
pub use swarm::SwarmSink;

use crate::policy::SinkSpec;
use crate::secret::Value;
use crate::store::{Digest, SinkRecords, Stamp};

/// One named value to deliver.
#[derive(Debug)]
pub struct Delivery {
    /// The secret the output belongs to.
    pub secret: String,
    /// The output name (file name, variable name).
    pub name: String,
    /// The newest version the value carries (a fernet list or JWKS holds older ones too).
    pub version: u64,
    /// The value: key material, or public data a sink may show.
    pub value: Value,
}

/// Which outputs a delivery pass looks at.
#[derive(Clone, Copy, Debug)]
pub enum Pass<'a> {
    /// Every output: check each against the ledger, restore anything changed by hand, clean up
    /// what a cut-off pass left (a files sink skips that while its directories are as a pass
    /// left them tidy).
    Full,
    /// Only these outputs changed (a rotation step): the others are not looked at. A sink that
    /// keeps every value in one file (envfile) still renders the whole file.
    Only(&'a HashSet<String>),
}

impl Pass<'_> {
    /// Whether output `name` is looked at in this pass.
    pub fn includes(&self, name: &str) -> bool {
        match self {
            Pass::Full => true,
            Pass::Only(names) => names.contains(name),
        }
    }
}

/// What a sink did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryReport {
    /// What the sink is (`files`, `envfile`).
    pub sink: String,
    /// Where it delivered.
    pub location: PathBuf,
    /// Outputs whose content or mode changed.
    pub written: Vec<String>,
    /// Outputs already up to date.
    pub unchanged: Vec<String>,
}

impl DeliveryReport {
    /// Adds what one delivery pass did to `reports`, into the entry of the same sink and place
    /// when there is one: an apply and the rotations it resumes, or a rotation's passes (an RSA
    /// key's JWKS before its private key), each deliver there, and the user sees each place
    /// once, with every output written there and the rest as unchanged.
    pub fn merge_into(reports: &mut Vec<DeliveryReport>, pass: DeliveryReport) {
        let Some(entry) = reports
            .iter_mut()
            .find(|d| d.sink == pass.sink && d.location == pass.location)
        else {
            reports.push(pass);
            return;
        };
        for name in pass.written {
            if !entry.written.contains(&name) {
                entry.written.push(name);
            }
        }
        for name in pass.unchanged {
            if !entry.unchanged.contains(&name) {
                entry.unchanged.push(name);
            }
        }
        let written = &entry.written;
        entry.unchanged.retain(|n| !written.contains(n));
    }
}

/// Why a delivery was refused or failed. Never carries a value.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A value cannot be represented safely in this sink.
    #[error("{sink} {}: cannot deliver {name:?}: {reason}", location.display())]
    Unsafe {
        /// The sink.
        sink: &'static str,
        /// Where.
        location: PathBuf,
        /// The output.
        name: String,
        /// Why (no value bytes).
        reason: String,
    },
    /// Several sinks or values failed (each delivered what it could).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<SinkError>),
    /// The output directory (or keyd's `..keyd` in it) is writable by its group or every user
    /// (sticky or not), so they could put a file, FIFO or symlink where the sink delivers, or
    /// swap one in for a directory keyd is about to set up.
    #[error(
        "{sink} {}: the directory is writable by its group or others (mode {mode:04o}), so they could put a file or symlink where keyd delivers one; refusing to deliver there",
        path.display()
    )]
    SharedWritable {
        /// The sink.
        sink: &'static str,
        /// The directory.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The Docker engine refused or failed.
    #[error("swarm {}: {source}", location.display())]
    Docker {
        /// The engine's address.
        location: PathBuf,
        /// What went wrong.
        source: crate::docker::DockerError,
    },
    /// The operating system refused.
    #[error("{sink} {}: {source}", path.display())]
    Io {
        /// The sink.
        sink: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A place values are delivered to.
///
/// An implementor must:
/// - refuse, in `check`, every value it could not deliver exactly, before anything is written,
///   so that a refused delivery leaves nothing half done;
/// - in `deliver`, replace its outputs atomically: a consumer reads the old value or the new
///   one, never a half-written or empty file, and the outputs of one secret (a certificate
///   and its key, a login and its password: [`Delivery::secret`]) change together, so no
///   instant shows one of them new beside another old; leave outputs whose content is already right
///   untouched (no rewrite, so re-running changes nothing), make the result durable before
///   returning, and record in the ledger what it wrote, under keys only it uses;
/// - never follow, or open in a way that can block, whatever stands where an output goes (a
///   symlink, a FIFO): inspect it with `lstat` and replace it, or refuse with an error;
/// - trust a ledger entry only while the output's metadata still matches it, so an output
///   removed or altered by hand is restored by the next full pass;
/// - refuse, in `ready`, a place it cannot deliver to at all, before a command persists
///   anything;
/// - in `retire`, remove only what this sink published for that version of that output, and
///   nothing that a newer version still needs; retiring twice is not an error;
/// - never write a value anywhere but its destination: not to logs, errors or argv; only a
///   [`Value::Public`] may be shown.
pub trait Sink {
    /// The sink's name in policies and reports (`files`, `envfile`).
    fn kind(&self) -> &'static str;
    /// Refuses values this sink cannot deliver, writing nothing.
    fn check(&self, deliveries: &[Delivery]) -> Result<(), SinkError>;
    /// Refuses, writing nothing, when no delivery could start: the place it delivers to is
    /// not there for it (an engine that is no swarm manager). A command asks before it
    /// persists anything, so that such a refusal changes nothing; a sink with nothing to ask
    /// answers `Ok` (a files directory that cannot be made is a delivery failure, which does
    /// not stop the other sinks).
    fn ready(&self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Delivers the outputs of `pass` from `deliveries`, which holds every output (a files sink,
    /// which never looks past a pass, is given only the secrets a `Pass::Only` names).
    fn deliver(
        &self,
        deliveries: &[Delivery],
        pass: Pass<'_>,
        records: &mut SinkRecords<'_>,
    ) -> Result<DeliveryReport, SinkError>;
    /// Removes what this sink published for `version` of output `name`, once that version is
    /// retired. The default removes nothing, which is right for a sink whose every delivery
    /// replaces what the one before left (the files sink replaces a secret's file or set and
    /// removes the previous one; the env file is rewritten whole) and for one that publishes
    /// nothing per version (the plugin serves from the store).
    fn retire(
        &self,
        name: &str,
        version: u64,
        records: &mut SinkRecords<'_>,
    ) -> Result<(), SinkError> {
        let _ = (name, version, records);
        Ok(())
    }
}

/// The sink a policy's settings describe.
pub fn build(spec: &SinkSpec) -> Box<dyn Sink> {
    match spec {
        SinkSpec::Files(s) => Box::new(FilesSink::new(s.clone())),
        SinkSpec::EnvFile(s) => Box::new(EnvFileSink::new(s.clone())),
        SinkSpec::Swarm(s) => Box::new(SwarmSink::new(s.clone())),
        SinkSpec::Plugin(p) => Box::new(PluginSink::new(p.clone())),
    }
}

/// The first 128 bits of SHA-256 of `bytes`: enough to tell what was written from what must
/// be written now (nothing adversarial hangs on it: the ledger is inside the store).
fn digest(bytes: &[u8]) -> Digest {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut first = [0u8; 16];
    first.copy_from_slice(&d.as_ref()[..16]);
    Digest::new(first)
}

/// The stamp of the file `meta` describes, holding content with `digest`.
fn stamp(meta: &std::fs::Metadata, digest: Digest) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: nanos(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: nanos(meta.ctime(), meta.ctime_nsec()),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        digest,
        shown: None,
    }
}

/// Seconds and nanoseconds as nanoseconds, saturating (i64 holds years 1677 to 2262).
fn nanos(secs: i64, nsecs: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsecs)
}

/// Whether the file at `path` is, by its metadata alone, the one recorded in `recorded`, and
/// `recorded` holds `digest`. Reads no content.
fn ledger_says_current(path: &std::path::Path, recorded: Option<&Stamp>, digest: &Digest) -> bool {
    if recorded.is_none_or(|r| r.digest != *digest) {
        return false; // nothing to compare with: no need to look at the file
    }
    let now = std::fs::symlink_metadata(path)
        .ok()
        .filter(std::fs::Metadata::is_file)
        .map(|meta| stamp(&meta, Digest::default()));
    ledger_vouches(now.as_ref(), recorded, digest)
}

/// Whether `now`, the stamp of a regular file as found, is the one `recorded`, and `recorded`
/// holds `digest`.
fn ledger_vouches(now: Option<&Stamp>, recorded: Option<&Stamp>, digest: &Digest) -> bool {
    matches!((now, recorded), (Some(n), Some(r)) if r.digest == *digest && same_metadata(n, r))
}

/// The stamp (digest empty) of the regular file `name` in the directory `dir`, found with one
/// `fstatat` that does not follow a symlink; `None` for anything else or nothing.
// The field types of `stat` differ by platform: the casts are needed on some, not all.
#[allow(clippy::unnecessary_cast)]
fn stamp_at(dir: impl rustix::fd::AsFd, name: &str) -> Option<Stamp> {
    let st = rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).ok()?;
    let mode = st.st_mode as u32;
    (rustix::fs::FileType::from_raw_mode(mode) == rustix::fs::FileType::RegularFile).then(|| {
        Stamp {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            size: st.st_size as u64,
            mtime_ns: nanos(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: nanos(st.st_ctime as i64, st.st_ctime_nsec as i64),
            mode: mode & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            digest: Digest::default(),
            shown: None,
        }
    })
}

/// Whether two stamps describe the same inode with the same size, times, mode and owner
/// (their digests aside).
fn same_metadata(a: &Stamp, b: &Stamp) -> bool {
    (
        a.dev, a.ino, a.size, a.mtime_ns, a.ctime_ns, a.mode, a.uid, a.gid,
    ) == (
        b.dev, b.ino, b.size, b.mtime_ns, b.ctime_ns, b.mode, b.uid, b.gid,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn digest_is_the_first_128_bits_of_sha256_in_hex() {
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(
            super::digest(b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223"
        );
    }
}
