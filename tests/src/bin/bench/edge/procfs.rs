//! What `/proc` says about the processes under test and the machine: CPU time of a process tree
//! (every thread of every process), its resident memory, and the whole machine's busy time, from
//! which the bench tells how much CPU something other than the measured processes took.

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use anyhow::{Context as _, Result};

/// One process as `/proc/<pid>/stat` and `status` describe it.
struct Proc {
    ppid: u32,
    /// utime + stime in clock ticks, summed by the kernel over all the process's threads.
    ticks: u64,
    rss_kb: u64,
}

fn processes() -> Result<HashMap<u32, Proc>> {
    let mut all = HashMap::new();
    // `/proc` lists thread-group leaders only, so every process appears once.
    for entry in fs::read_dir("/proc").context("listing /proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue; // exited meanwhile
        };
        // Fields after the command name, which may hold spaces and parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15, rss (pages) 24.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        if let (Some(ppid), Some(u), Some(s), Some(rss)) =
            (field(4), field(14), field(15), field(24))
        {
            all.insert(
                pid,
                Proc {
                    ppid: u32::try_from(ppid).unwrap_or(0),
                    ticks: u + s,
                    rss_kb: rss * page_kb(),
                },
            );
        }
    }
    Ok(all)
}

fn page_kb() -> u64 {
    // SAFETY: sysconf has no preconditions.
    u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).map_or(4, |b| b / 1024)
}

fn ticks_to_duration(ticks: u64) -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    Duration::from_micros(ticks * 1_000_000 / hz.max(1))
}

/// The pids of `root` and all its descendants.
fn tree(all: &HashMap<u32, Proc>, root: u32) -> impl Iterator<Item = &Proc> {
    all.iter().filter_map(move |(&pid, p)| {
        let mut cur = pid;
        loop {
            if cur == root {
                return Some(p);
            }
            match all.get(&cur) {
                Some(q) if q.ppid != 0 && q.ppid != cur => cur = q.ppid,
                _ => return None,
            }
        }
    })
}

/// User + system CPU time of `root` and all its descendants, all threads included.
pub fn tree_cpu(root: u32) -> Result<Duration> {
    let all = processes()?;
    Ok(ticks_to_duration(tree(&all, root).map(|p| p.ticks).sum()))
}

/// Resident memory of `root` and all its descendants, in KiB (shared pages counted once per
/// process, as `ps` and an operator's dashboard add them up).
pub fn tree_rss_kb(root: u32) -> Result<u64> {
    let all = processes()?;
    Ok(tree(&all, root).map(|p| p.rss_kb).sum())
}

/// User + system CPU time of this process alone (its threads, not its children).
pub fn self_cpu() -> Result<Duration> {
    let all = processes()?;
    let me = std::process::id();
    Ok(ticks_to_duration(all.get(&me).map_or(0, |p| p.ticks)))
}

/// The machine's busy CPU time so far (`cpu` line of `/proc/stat`).
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    busy: u64,
}

impl MachineCpu {
    pub fn read() -> Result<Self> {
        let stat = fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("no `cpu` line in /proc/stat")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
        // already inside user. Busy is what processes ran (user, nice, system) plus what the
        // hypervisor took (steal). Not irq and softirq: this kernel accounts them apart from
        // any process, and during a run they are mostly the run's own packets (veth delivers
        // them in softirq), 0.3-0.5 CPU that would read as other load on an idle machine.
        let get = |i: usize| v.get(i).copied().unwrap_or(0);
        Ok(Self {
            busy: get(0) + get(1) + get(2) + get(7),
        })
    }

    /// Busy CPU time between `earlier` and `self`.
    pub fn busy_since(self, earlier: Self) -> Duration {
        ticks_to_duration(self.busy.saturating_sub(earlier.busy))
    }
}
