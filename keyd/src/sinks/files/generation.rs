//! A secret's new generation: written beside the one its names show (unchanged files
//! hard-linked), shown by one rename of its symlink or set link, and the previous one removed;
//! or, after a failure before it was shown, removed itself.

use std::fs::{self, File};
use std::path::Path;

use super::layout::{Shown, file_entry, remove_if_there, set_entry, set_link};
use super::plan::{Group, Plan};
use super::{FilesSink, OWN, io};
use crate::sinks::SinkError;

impl FilesSink {
    /// Writes group `g`'s next generation where nothing shows it yet (unchanged files are
    /// hard links to the current ones); durable once the caller syncs. Returns, member by
    /// member, the metadata of each file written (`None` for a hard link, whose ctime the
    /// removal of its previous name changes later).
    pub(super) fn build(
        &self,
        g: &Group<'_>,
        fsync_each: bool,
    ) -> Result<Vec<Option<fs::Metadata>>, SinkError> {
        let Some(n) = g.next else {
            return Ok(Vec::new());
        };
        let own = self.own();
        let set_dir = (!g.single()).then(|| own.join(set_entry(g.secret, n)));
        if let Some(set_dir) = &set_dir {
            // Left by a pass cut off before its swap: never shown, so safe to drop.
            if fs::symlink_metadata(set_dir).is_ok() {
                fs::remove_dir_all(set_dir).map_err(io(set_dir))?;
            }
            self.make_dir(set_dir)?;
        }
        let mut written = Vec::with_capacity(g.members.len());
        for m in &g.members {
            let path = g
                .live_path(&self.spec.dir, &own, m)
                .expect("a new generation has a path");
            written.push(match (&m.plan, m.source) {
                (Plan::Keep, Some(src)) => {
                    if set_dir.is_none() {
                        // Left by a pass cut off before its swap: never shown.
                        remove_if_there(&path, false)?;
                    }
                    let src = src.path(&self.spec.dir, &own, g.secret, &m.delivery.name);
                    fs::hard_link(&src, &path).map_err(io(&path))?;
                    None
                }
                _ => Some(self.write_file(
                    &path,
                    m.delivery.value.expose().as_bytes(),
                    fsync_each,
                )?),
            });
        }
        if let Some(set_dir) = &set_dir
            && fsync_each
        {
            File::open(set_dir)
                .and_then(|d| d.sync_all())
                .map_err(io(set_dir))?;
        }
        Ok(written)
    }

    /// Shows group `g`'s new generation: the output's symlink (one output) or the set link
    /// and the members' symlinks into it. Returns whether `..keyd` itself changed.
    pub(super) fn show_group(&self, g: &Group<'_>) -> Result<bool, SinkError> {
        let Some(n) = g.next else { return Ok(false) };
        if g.single() {
            let m = &g.members[0];
            let target = Path::new(OWN).join(file_entry(&m.delivery.name, n));
            self.show(&m.delivery.name, &target, m.shown == Shown::Missing)?;
            return Ok(false);
        }
        self.swap_set(g.secret, n)?;
        for m in g.members.iter().filter(|m| m.shown != Shown::Member) {
            let target = Path::new(OWN)
                .join(set_link(g.secret))
                .join(&m.delivery.name);
            self.show(&m.delivery.name, &target, m.shown == Shown::Missing)?;
        }
        Ok(true)
    }

    /// Removes the generation group `g` showed before this pass.
    pub(super) fn remove_previous(&self, g: &Group<'_>) -> Result<(), SinkError> {
        if g.next.is_none() {
            return Ok(());
        }
        let own = self.own();
        if g.single() {
            if let Shown::Own(n) = g.members[0].shown {
                let old = own.join(file_entry(&g.members[0].delivery.name, n));
                remove_if_there(&old, false)?;
            }
        } else if let Some(n) = g.set_now {
            let old = own.join(set_entry(g.secret, n));
            remove_if_there(&old, true)?;
        }
        Ok(())
    }

    /// Removes group `g`'s new generation after a failure before it was shown.
    pub(super) fn remove_unshown(&self, g: &Group<'_>) -> Result<(), SinkError> {
        let Some(n) = g.next else { return Ok(()) };
        let own = self.own();
        if g.single() {
            remove_if_there(&own.join(file_entry(&g.members[0].delivery.name, n)), false)
        } else {
            remove_if_there(&own.join(set_entry(g.secret, n)), true)
        }
    }
}
