//! The files sink as a [`Sink`]: one delivery pass, from planning through the new
//! generations, the clean-up and the ledger's stamps.

use std::collections::HashSet;
use std::fs::{self, File};

use super::layout::fsync;
use super::ledger::{TIDY_WAIT_FROM, forget_dirs, ledger_key};
use super::plan::{Group, Plan};
use super::{FilesSink, SINK, io};
use crate::sinks::{Delivery, DeliveryReport, Pass, Sink, SinkError, stamp};
use crate::store::SinkRecords;

/// Passes writing at most this many files fsync each one; larger ones use one syncfs.
const FSYNC_EACH_UP_TO: usize = 64;

impl Sink for FilesSink {
    fn kind(&self) -> &'static str {
        SINK
    }

    fn check(&self, _deliveries: &[Delivery]) -> Result<(), SinkError> {
        // Any byte string can be a file; names were checked by the policy. The directory is
        // checked here too, so that refusing it leaves every sink untouched.
        self.refuse_shared_writable()
    }

    fn deliver(
        &self,
        deliveries: &[Delivery],
        pass: Pass<'_>,
        records: &mut SinkRecords<'_>,
    ) -> Result<DeliveryReport, SinkError> {
        let ledger = &mut *records.ledger;
        let (dir, own) = (&self.spec.dir, self.own());
        // A directory this pass makes shows nothing yet: no name in it is looked up, and
        // nothing is left in it for a clean-up to list.
        let fresh = !dir.is_dir() && self.make_out_dir()?;
        self.refuse_shared_writable()?;
        let mut report = DeliveryReport {
            sink: SINK.into(),
            location: dir.clone(),
            ..Default::default()
        };
        match fs::symlink_metadata(&own) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                // Not keyd's: a directory is needed here.
                fs::remove_file(&own).map_err(io(&own))?;
                self.make_dir(&own)?;
            }
            Err(_) => self.make_dir(&own)?,
        }
        let full = matches!(pass, Pass::Full);
        // Nothing added to or removed from either directory since a pass left them tidy.
        let tidy = self.dirs_as_recorded(ledger);

        let groups = self.plan(deliveries, pass, ledger, full, fresh, tidy)?;

        // New generations: written, then durable, then shown, then the previous ones removed.
        // A few files (a rotation) are made durable one fsync each; many by one syncfs of the
        // filesystem, since each fsync waits for its own flush of the disk.
        let writes: usize = groups
            .iter()
            .filter(|g| g.next.is_some())
            .map(|g| g.members.len())
            .sum();
        let mut written = Vec::with_capacity(groups.len());
        if writes > 0 {
            let fsync_each = writes <= FSYNC_EACH_UP_TO;
            for g in &groups {
                written.push(self.build(g, fsync_each).inspect_err(|_| {
                    // Never shown: dropped now rather than at the next full pass.
                    for g in &groups {
                        let _ = self.remove_unshown(g);
                    }
                })?);
            }
            if !fsync_each {
                let d = File::open(&own).map_err(io(&own))?;
                rustix::fs::syncfs(&d).map_err(|e| io(&own)(e.into()))?;
            }
            // The new entries are durable before the symlinks that name them.
            fsync(&own)?;
            let mut own_changed = false;
            for g in &groups {
                own_changed |= self.show_group(g)?;
            }
            if own_changed {
                fsync(&own)?;
            }
            fsync(dir)?;
            for g in &groups {
                self.remove_previous(g)?;
            }
        }

        // Before the stamps: removing an older layout's names changes the files' ctime. A
        // pass that wrote nothing into tidy directories has nothing to clean up.
        let mut tidy_now = (tidy || fresh) && groups.iter().all(Group::leaves_nothing_behind);
        if full && !fresh && !(writes == 0 && tidy) {
            let mut shown = HashSet::new();
            for g in &groups {
                g.entries(&mut shown);
            }
            let delivered: HashSet<&str> = deliveries.iter().map(|d| d.name.as_str()).collect();
            tidy_now = self.clean_up(shown, &delivered)?;
        }
        // What each output's file is now (a new file, or a hard link whose ctime changed).
        for (i, g) in groups.iter().enumerate() {
            for (j, m) in g.members.iter().enumerate() {
                let name = &m.delivery.name;
                if m.plan == Plan::Write {
                    report.written.push(name.clone());
                } else {
                    report.unchanged.push(name.clone());
                }
                if !(g.next.is_some() || m.restamp) {
                    continue;
                }
                let key = ledger_key(name);
                let meta = match written.get(i).and_then(|w| w.get(j)) {
                    Some(Some(meta)) => Some(meta.clone()),
                    _ => g
                        .live_path(dir, &own, m)
                        .and_then(|p| fs::symlink_metadata(p).ok()),
                };
                match meta {
                    Some(meta) => {
                        let mut stamp = stamp(&meta, m.digest);
                        stamp.shown = g.own_generation();
                        ledger.insert(key, stamp)
                    }
                    None => ledger.remove(&key),
                };
            }
        }
        // Tidy now: cleaned up by this full pass (every removal done), or tidy before a pass
        // each of whose secrets left nothing behind. Recorded last, the longest after the last
        // change, when this pass wrote (the ledger is saved anyway) or when directories this
        // large are worth one store write: a small stack's no-change apply leaves the store as
        // it was.
        let large = ledger.len() >= TIDY_WAIT_FROM;
        if tidy_now && (writes > 0 || (large && !tidy)) {
            self.record_dirs(ledger, large);
        } else if writes > 0 || !tidy_now {
            forget_dirs(ledger);
        }
        // The reload hook is run by the delivery pass (deliver.rs), which also retries it.
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::super::OWN;
    use super::super::ledger::DIR_KEYS;
    use super::*;
    use crate::policy::FilesSpec;
    use std::path::Path;

    /// A files sink on `dir` and a ledger already holding `filler` entries (so that the sink
    /// counts its directories as large or not).
    fn sink_and_ledger(dir: &Path, filler: usize) -> (FilesSink, crate::store::Ledger) {
        let sink = FilesSink::new(FilesSpec {
            dir: dir.to_owned(),
            mode: 0o400,
            dir_mode: 0o700,
            uid: None,
            gid: None,
            reload: None,
        });
        let ledger = (0..filler)
            .map(|i| {
                let stamp = crate::store::Stamp::default();
                (format!("filler:{i}"), stamp)
            })
            .collect();
        (sink, ledger)
    }

    fn output(secret: &str, name: &str, value: &str) -> Delivery {
        Delivery {
            secret: secret.into(),
            name: name.into(),
            version: 1,
            value: crate::secret::Value::Secret(crate::secret::SecretString::new(value.into())),
        }
    }

    fn pass(
        sink: &FilesSink,
        ledger: &mut crate::store::Ledger,
        deliveries: &[Delivery],
        pass: Pass<'_>,
    ) {
        let mut swarm = crate::store::SwarmLedger::default();
        let mut records = SinkRecords {
            ledger,
            swarm: &mut swarm,
        };
        sink.deliver(deliveries, pass, &mut records).unwrap();
    }

    #[test]
    fn a_secret_that_gains_an_output_in_a_rotation_leaves_its_old_file_to_the_next_clean_up() {
        let scratch = crate::scratch::Scratch::new();
        let out = scratch.path().join("out");
        let (sink, mut ledger) = sink_and_ledger(&out, TIDY_WAIT_FROM);
        pass(&sink, &mut ledger, &[output("S", "S", "one")], Pass::Full);
        assert!(
            DIR_KEYS.iter().all(|k| ledger.contains_key(*k)),
            "a first pass over large directories records them as tidy"
        );
        // The secret now has a companion (a key gained its public half): a set replaces its
        // own file, which the pass does not remove.
        let both = [output("S", "S", "two"), output("S", "S_PUB", "public")];
        let names: HashSet<String> = ["S".into(), "S_PUB".into()].into();
        pass(&sink, &mut ledger, &both, Pass::Only(&names));
        assert!(
            DIR_KEYS.iter().all(|k| !ledger.contains_key(*k)),
            "a pass that left a file behind recorded the directories as tidy"
        );
        assert!(out.join(OWN).join("S@1").exists());
        pass(&sink, &mut ledger, &both, Pass::Full);
        assert!(
            !out.join(OWN).join("S@1").exists(),
            "the next full pass did not remove the old file"
        );
        assert_eq!(fs::read_to_string(out.join("S")).unwrap(), "two");
        assert!(DIR_KEYS.iter().all(|k| ledger.contains_key(*k)));
    }
}
