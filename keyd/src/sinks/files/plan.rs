//! Planning a pass: each secret's outputs looked at (what each name shows, where its current
//! file is, whether the ledger vouches for it or its content must be read), and the
//! generation a change makes ([`Group`]). [`FilesSink::plan`] is the entry point; how it
//! shares the looking between threads stays inside it.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use rustix::fd::OwnedFd;
use rustix::fs::{Mode, OFlags};

use super::layout::{Shown, Source, file_entry, file_entry_in, generation_of, set_entry, set_link};
use super::ledger::ledger_key_in;
use super::{FilesSink, io};
use crate::sinks::{
    Delivery, Pass, SinkError, digest, ledger_says_current, ledger_vouches, stamp_at,
};
use crate::store::Ledger;

/// Passes looking at this many secrets or more share the looking between two threads.
const PLAN_ON_TWO_CORES_FROM: usize = 1000;

/// What one output's delivery does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Plan {
    /// Its current file is right: kept (hard-linked into a new set, if one is made).
    Keep,
    /// Written from the value.
    Write,
}

/// One output of a secret a pass looks at.
pub(super) struct Member<'d> {
    pub(super) delivery: &'d Delivery,
    pub(super) shown: Shown,
    /// Its current file, when there is one to keep.
    pub(super) source: Option<Source>,
    pub(super) plan: Plan,
    pub(super) digest: crate::store::Digest,
    /// Content verified by reading it while the ledger did not vouch for it: stamp it even
    /// when no new generation is made.
    pub(super) restamp: bool,
}

/// The outputs of one secret in a pass, and the generation a change makes.
pub(super) struct Group<'d> {
    pub(super) secret: &'d str,
    pub(super) members: Vec<Member<'d>>,
    /// For a secret with several outputs: the generation its set link names now.
    pub(super) set_now: Option<u64>,
    /// The generation this pass makes (a file or a set), if any.
    pub(super) next: Option<u64>,
}

impl Group<'_> {
    pub(super) fn single(&self) -> bool {
        self.members.len() == 1
    }

    /// Whether this group leaves nothing in `..keyd` that no name shows once its previous
    /// generation is removed (`remove_previous`): each output showed the group's own file (one
    /// output) or its set (several), a plain file (renamed over), or nothing. A secret that
    /// gained or lost outputs, or a name that showed something else, leaves work for a
    /// clean-up.
    pub(super) fn leaves_nothing_behind(&self) -> bool {
        self.next.is_none()
            || self.members.iter().all(|m| match m.shown {
                Shown::Own(_) => self.single(),
                Shown::Member => !self.single() && self.set_now.is_some(),
                Shown::Missing | Shown::File => true,
                Shown::Replace => false,
            })
    }

    /// For a secret with one output: the generation of its own file its name shows after
    /// this pass (`NAME -> ..keyd/NAME@N`).
    pub(super) fn own_generation(&self) -> Option<u64> {
        if !self.single() {
            return None;
        }
        self.next.or(match self.members[0].shown {
            Shown::Own(n) => Some(n),
            _ => None,
        })
    }

    /// Where output `m`'s file is after this pass (`dir` the output directory, `own` its
    /// `..keyd`).
    pub(super) fn live_path(&self, dir: &Path, own: &Path, m: &Member<'_>) -> Option<PathBuf> {
        let name = &m.delivery.name;
        match self.next {
            Some(n) if self.single() => Some(own.join(file_entry(name, n))),
            Some(n) => Some(own.join(set_entry(self.secret, n)).join(name)),
            None => m.source.map(|s| s.path(dir, own, self.secret, name)),
        }
    }

    /// The `..keyd` entries this group shows after this pass (kept by the clean-up).
    pub(super) fn entries(&self, out: &mut HashSet<String>) {
        if self.single() {
            if let Some(n) = self.own_generation() {
                out.insert(file_entry(&self.members[0].delivery.name, n));
            }
        } else if let Some(n) = self.next.or(self.set_now) {
            out.insert(set_link(self.secret));
            out.insert(set_entry(self.secret, n));
        }
    }
}

impl FilesSink {
    /// Plans a pass: the outputs of each secret `pass` looks at (every secret when `full`),
    /// grouped in delivery order, each group's outputs looked at and its next generation
    /// chosen. `fresh`: the output directory was made by this pass (nothing in it is looked
    /// up); `tidy`: both directories are as a tidy pass recorded them.
    pub(super) fn plan<'d>(
        &self,
        deliveries: &'d [Delivery],
        pass: Pass<'_>,
        ledger: &Ledger,
        full: bool,
        fresh: bool,
        tidy: bool,
    ) -> Result<Vec<Group<'d>>, SinkError> {
        let (dir, own) = (&self.spec.dir, self.own());
        // The outputs of each secret, in delivery order.
        let mut order: Vec<(&str, Vec<&Delivery>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        // A stack's deliveries come sorted by secret: grouped as they come, without an index.
        let sorted = deliveries.is_sorted_by(|a, b| a.secret <= b.secret);
        for d in deliveries {
            if sorted {
                match order.last_mut() {
                    Some((secret, outputs)) if *secret == d.secret => outputs.push(d),
                    _ => order.push((d.secret.as_str(), vec![d])),
                }
                continue;
            }
            let i = *index.entry(d.secret.as_str()).or_insert_with(|| {
                order.push((d.secret.as_str(), Vec::new()));
                order.len() - 1
            });
            order[i].1.push(d);
        }
        // `..keyd` is never reached through a symlink (the output directory may be one).
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let [dir_fd, own_fd] =
            [(dir, flags), (&own, flags | OFlags::NOFOLLOW)].map(|(path, flags)| {
                rustix::fs::open(path, flags, Mode::empty()).map_err(|e| io(path)(e.into()))
            });
        let fds = [dir_fd?, own_fd?];
        let todo: Vec<&(&str, Vec<&Delivery>)> = order
            .iter()
            .filter(|(_, outputs)| full || outputs.iter().any(|d| pass.includes(&d.name)))
            .collect();
        let plan = |part| self.plan_groups(part, ledger, &fds, fresh, tidy);
        // Justified by bench/scale.py's no-change apply at 10,000 secrets (docs/benchmarks.md):
        // looking at an output is two system calls or more, the lookups are independent, and
        // the second core is idle while a pass plans, so many are shared between two threads.
        let groups = if todo.len() >= PLAN_ON_TWO_CORES_FROM {
            let (first, second) = todo.split_at(todo.len() / 2);
            let (first, second) = std::thread::scope(|s| {
                let second = s.spawn(|| plan(second));
                let first = plan(first);
                let second = second
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (first, second)
            });
            let mut groups = first?;
            groups.extend(second?);
            groups
        } else {
            plan(&todo)?
        };
        Ok(groups)
    }

    /// Looks at one secret's outputs: what each shows, where its file is and whether it is
    /// right. Reads a file only when the ledger does not vouch for it.
    #[allow(clippy::too_many_arguments)] // `scratch` is a buffer the caller lends
    fn plan_group<'d>(
        &self,
        secret: &'d str,
        deliveries: &[&'d Delivery],
        ledger: &crate::store::Ledger,
        fds: &[OwnedFd; 2],
        fresh: bool,
        tidy: bool,
        scratch: &mut String,
    ) -> Result<Group<'d>, SinkError> {
        let (dir, own) = (&self.spec.dir, self.own());
        let single = deliveries.len() == 1;
        let set_now = if single || fresh {
            None
        } else {
            fs::read_link(own.join(set_link(secret)))
                .ok()
                .and_then(|t| generation_of(t.to_str()?, &set_link(secret)))
        };
        let mut members = Vec::with_capacity(deliveries.len());
        for &d in deliveries {
            let value = d.value.expose().as_bytes();
            let digest = digest(value);
            // A ledger entry vouches only for the mode and owner the policy asks for now.
            let recorded = ledger
                .get(ledger_key_in(scratch, &d.name))
                .filter(|r| self.wants(r) && r.digest == digest);
            // In directories as a tidy pass recorded them no name was replaced since: each
            // still shows the generation its stamp recorded, and is not read again.
            let recorded_shown = recorded.and_then(|r| r.shown).filter(|_| tidy && single);
            let shown = match recorded_shown {
                _ if fresh => Shown::Missing,
                Some(n) => Shown::Own(n),
                None => self.shown(&fds[0], &d.name, secret)?,
            };
            let source = match shown {
                Shown::Own(n) if single => Some(Source::Own(n)),
                Shown::Member if !single => set_now.map(Source::Member),
                Shown::File => Some(Source::File),
                _ => None,
            };
            let path = |s: Source| s.path(dir, &own, secret, &d.name);
            // Its own file is looked at relative to `..keyd`'s fd (no path walk per output), and
            // only when the ledger has a record to compare it with.
            let vouched = match source {
                _ if recorded.is_none() => false,
                Some(Source::Own(n)) => {
                    let now = stamp_at(&fds[1], file_entry_in(scratch, &d.name, n));
                    ledger_vouches(now.as_ref(), recorded, &digest)
                }
                Some(src) => ledger_says_current(&path(src), recorded, &digest),
                None => false,
            };
            // A stamp that does not say which generation the name shows (an older keyd's, or
            // one whose name was pointed elsewhere) is recorded anew.
            let shown_unrecorded = match shown {
                Shown::Own(n) if single => recorded.is_some_and(|r| r.shown != Some(n)),
                _ => false,
            };
            let (plan, restamp) = match source {
                Some(_) if vouched => (Plan::Keep, shown_unrecorded),
                Some(src) if self.is_current(&path(src), value) => (Plan::Keep, true),
                _ => (Plan::Write, false),
            };
            members.push(Member {
                delivery: d,
                shown,
                source,
                plan,
                digest,
                restamp,
            });
        }
        let in_place = |m: &Member<'_>| match m.shown {
            Shown::Own(_) => single,
            Shown::Member => !single,
            _ => false,
        };
        let settled = members
            .iter()
            .all(|m| m.plan == Plan::Keep && in_place(m) && m.source.is_some());
        let next = (!settled).then(|| {
            if single {
                match members[0].shown {
                    Shown::Own(n) => n + 1,
                    _ => 1,
                }
            } else {
                set_now.map_or(1, |n| n + 1)
            }
        });
        Ok(Group {
            secret,
            members,
            set_now,
            next,
        })
    }

    /// [`Self::plan_group`] of each secret in `part`, in order.
    fn plan_groups<'d>(
        &self,
        part: &[&(&'d str, Vec<&'d Delivery>)],
        ledger: &crate::store::Ledger,
        fds: &[OwnedFd; 2],
        fresh: bool,
        tidy: bool,
    ) -> Result<Vec<Group<'d>>, SinkError> {
        let mut scratch = String::new();
        part.iter()
            .map(|(secret, outputs)| {
                self.plan_group(secret, outputs, ledger, fds, fresh, tidy, &mut scratch)
            })
            .collect()
    }
}
