//! Which CPUs each role of a comparison runs on — the gateway (nginx or Strait: the same set
//! for both), the echo backend and the load generators — and the `taskset` commands that put
//! them there. On a machine with CPUs to spare the roles get CPUs of their own, so a gateway's
//! rate is bounded by its own CPUs, as the targets assume; on two or three CPUs they
//! must share. Pure: the commands are built here and run by the caller.

use std::fmt;
use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

/// A non-empty set of CPUs, as `taskset -c` takes it: `0`, `0-3`, `0,2-3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSet(Vec<usize>);

impl CpuSet {
    /// Parses a `taskset -c` list; every CPU must be below `cpus` (this machine's count).
    pub fn parse(text: &str, cpus: usize) -> Result<CpuSet> {
        let mut ids = Vec::new();
        for part in text.split(',') {
            let part = part.trim();
            let number = |s: &str| {
                s.trim().parse::<usize>().map_err(|_| {
                    anyhow::anyhow!("{s:?} in the CPU list {text:?} is not a CPU number")
                })
            };
            let (from, to) = match part.split_once('-') {
                Some((from, to)) => (number(from)?, number(to)?),
                None => (number(part)?, number(part)?),
            };
            if from > to {
                bail!("the CPU range {part:?} in {text:?} runs backwards");
            }
            if to >= cpus {
                bail!(
                    "CPU {to} in {text:?} does not exist here: this machine has CPUs 0-{}",
                    cpus.saturating_sub(1)
                );
            }
            ids.extend(from..=to);
        }
        Ok(CpuSet::of(ids))
    }

    /// CPUs `from..to` (at least one).
    fn span(from: usize, to: usize) -> CpuSet {
        CpuSet::of((from..to.max(from + 1)).collect())
    }

    fn of(mut ids: Vec<usize>) -> CpuSet {
        ids.sort_unstable();
        ids.dedup();
        CpuSet(ids)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn overlaps(&self, other: &CpuSet) -> bool {
        self.0.iter().any(|id| other.0.contains(id))
    }
}

/// The compact `taskset -c` form: `0-3,6`.
impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &id in &self.0 {
            match runs.last_mut() {
                Some((_, end)) if *end + 1 == id => *end = id,
                _ => runs.push((id, id)),
            }
        }
        let text: Vec<String> = runs
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        f.write_str(&text.join(","))
    }
}

/// The three roles of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Gateway,
    Backend,
    Load,
}

/// Each role's CPUs (`None`: not pinned, any of the machine's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The machine's CPUs.
    pub cpus: usize,
    pub gateway: Option<CpuSet>,
    pub backend: Option<CpuSet>,
    pub load: Option<CpuSet>,
}

impl Layout {
    /// Nothing pinned.
    pub fn unpinned(cpus: usize) -> Layout {
        Layout {
            cpus,
            gateway: None,
            backend: None,
            load: None,
        }
    }

    /// The default for `cpus` CPUs. From four up, each role gets CPUs of its own: half for the
    /// gateway (a proxied unit costs it about what the load generator and the echo together
    /// spend), a quarter for the echo, the rest for the load generators. On two or three the
    /// load generators take the last CPU and the servers share them all; on one nothing is
    /// pinned.
    pub fn default_for(cpus: usize) -> Layout {
        let mut layout = Layout::unpinned(cpus);
        if cpus >= 4 {
            let gateway = cpus / 2;
            let backend = gateway + (cpus / 4).max(1);
            layout.gateway = Some(CpuSet::span(0, gateway));
            layout.backend = Some(CpuSet::span(gateway, backend));
            layout.load = Some(CpuSet::span(backend, cpus));
        } else if cpus >= 2 {
            layout.load = Some(CpuSet::span(cpus - 1, cpus));
        }
        layout
    }

    pub fn get(&self, role: Role) -> Option<&CpuSet> {
        match role {
            Role::Gateway => self.gateway.as_ref(),
            Role::Backend => self.backend.as_ref(),
            Role::Load => self.load.as_ref(),
        }
    }

    /// How many CPUs `role` may run on (its workers: one per CPU).
    pub fn cpus_of(&self, role: Role) -> usize {
        self.get(role).map_or(self.cpus, CpuSet::len)
    }

    /// Threads for wrk and h2load: one per load-generator CPU, at most one per connection.
    pub fn load_threads(&self, conns: usize) -> usize {
        self.cpus_of(Role::Load).clamp(1, conns.max(1))
    }

    pub fn is_pinned(&self) -> bool {
        self.gateway.is_some() || self.backend.is_some() || self.load.is_some()
    }

    /// The roles grouped by the CPUs they run on, each group with its CPU count: a group per
    /// distinct set when every role is pinned and any two sets are equal or disjoint; else
    /// one group of all the machine's CPUs (the roles share them).
    pub fn groups(&self) -> Vec<(usize, Vec<Role>)> {
        let roles = [Role::Gateway, Role::Backend, Role::Load];
        let sets: Option<Vec<&CpuSet>> = roles.iter().map(|&r| self.get(r)).collect();
        let separable = sets.as_ref().is_some_and(|sets| {
            sets.iter()
                .all(|a| sets.iter().all(|b| a == b || !a.overlaps(b)))
        });
        let Some(sets) = sets.filter(|_| separable) else {
            return vec![(self.cpus, roles.to_vec())];
        };
        let mut groups: Vec<(&CpuSet, Vec<Role>)> = Vec::new();
        for (set, role) in sets.into_iter().zip(roles) {
            match groups.iter_mut().find(|(s, _)| *s == set) {
                Some((_, members)) => members.push(role),
                None => groups.push((set, vec![role])),
            }
        }
        groups
            .into_iter()
            .map(|(set, members)| (set.len(), members))
            .collect()
    }

    /// `program` started on `role`'s CPUs (through `taskset`, which keeps the process id).
    pub fn command(&self, role: Role, program: &Path, taskset: Option<&Path>) -> Command {
        match (self.get(role), taskset) {
            (Some(set), Some(taskset)) => {
                let mut cmd = Command::new(taskset);
                cmd.arg("-c").arg(set.to_string()).arg(program);
                cmd
            }
            _ => Command::new(program),
        }
    }

    /// Where each role runs, in one clause each, for the report and the start-up line.
    pub fn describe(&self) -> String {
        let place = |role: Role| match self.get(role) {
            Some(set) => format!("CPU {set} ({} of {})", set.len(), self.cpus),
            None => format!("any of the {} CPUs", self.cpus),
        };
        format!(
            "gateway {}, echo backend {}, load generators {}",
            place(Role::Gateway),
            place(Role::Backend),
            place(Role::Load)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_as_taskset_reads_them() {
        let set = CpuSet::parse("6, 0-2,2", 8).unwrap();
        assert_eq!(set, CpuSet(vec![0, 1, 2, 6]));
        assert_eq!(set.to_string(), "0-2,6");
        assert_eq!(CpuSet::parse("3", 4).unwrap().to_string(), "3");
        for bad in ["", "a", "1-", "3-1", "4", "0-4", "-1"] {
            assert!(CpuSet::parse(bad, 4).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_default_gives_roles_cpus_of_their_own_from_four_up() {
        let show = |cpus| {
            let l = Layout::default_for(cpus);
            [l.gateway, l.backend, l.load].map(|s| s.map(|s| s.to_string()))
        };
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(show(1), [None, None, None]);
        assert_eq!(show(2), [None, None, some("1")]);
        assert_eq!(show(3), [None, None, some("2")]);
        assert_eq!(show(4), [some("0-1"), some("2"), some("3")]);
        assert_eq!(show(6), [some("0-2"), some("3"), some("4-5")]);
        assert_eq!(show(8), [some("0-3"), some("4-5"), some("6-7")]);
        assert_eq!(show(64), [some("0-31"), some("32-47"), some("48-63")]);
        for cpus in 1..=64 {
            let l = Layout::default_for(cpus);
            let groups = l.groups();
            let total: usize = groups.iter().map(|(n, _)| n).sum();
            assert_eq!(total, cpus, "{cpus} CPUs: {groups:?}");
        }
    }

    #[test]
    fn roles_sharing_cpus_form_one_group() {
        let set = |s: &str| Some(CpuSet::parse(s, 4).unwrap());
        let mut l = Layout::unpinned(4);
        assert_eq!(
            l.groups(),
            vec![(4, vec![Role::Gateway, Role::Backend, Role::Load])]
        );
        (l.gateway, l.backend, l.load) = (set("0"), set("1-3"), set("1-3"));
        assert_eq!(
            l.groups(),
            vec![
                (1, vec![Role::Gateway]),
                (3, vec![Role::Backend, Role::Load])
            ]
        );
        assert_eq!(l.cpus_of(Role::Gateway), 1);
        // Overlapping but different sets cannot be told apart: all share.
        l.load = set("2-3");
        assert_eq!(l.groups().len(), 1);
        l.load = None;
        assert_eq!(
            l.groups(),
            vec![(4, vec![Role::Gateway, Role::Backend, Role::Load])]
        );
        assert_eq!(l.cpus_of(Role::Load), 4);
    }

    #[test]
    fn commands_go_through_taskset_only_when_pinned() {
        let l = Layout::default_for(4);
        let taskset = Path::new("/usr/bin/taskset");
        let cmd = l.command(Role::Gateway, Path::new("/bin/strait"), Some(taskset));
        assert_eq!(cmd.get_program(), taskset);
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["-c", "0-1", "/bin/strait"]);
        let cmd = l.command(Role::Gateway, Path::new("/bin/strait"), None);
        assert_eq!(cmd.get_program(), "/bin/strait");
        let cmd = Layout::unpinned(4).command(Role::Load, Path::new("/bin/wrk"), Some(taskset));
        assert_eq!(cmd.get_program(), "/bin/wrk");
    }
}
