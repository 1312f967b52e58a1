//! What the machine is doing while the bench runs, and pinning the bench to one CPU.

use anyhow::{Context as _, Result};
use nix::{sched::CpuSet, unistd::Pid};

/// A 1-minute load average above this, on the 2-core machines here, means another process
/// competes for the bench's CPU: p90s widen and means drift, medians and nets of one run
/// still compare.
pub const BUSY_LOAD: f64 = 1.0;

/// The 1-minute load average.
pub fn load_1min() -> Result<f64> {
    let s = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("parsing /proc/loadavg")
}

/// `kernel.bpf_stats_enabled`: 1 when someone turned `bpf_stats` on for everyone (then every
/// program run pays for two clock reads, durations included).
pub fn stats_sysctl() -> Result<bool> {
    let s = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .context("reading kernel.bpf_stats_enabled")?;
    Ok(s.trim() != "0")
}

/// The kernel release, for the header.
pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".into(), |s| s.trim().to_owned())
}

/// Pins the calling thread to the last CPU it may run on and returns that CPU. Every run then
/// uses the same CPU's caches and per-CPU map slots (conntrack's LRU lists are per CPU), and
/// never migrates halfway through a pass. The last CPU rather than CPU 0, which takes more of
/// the interrupts.
pub fn pin_to_last_cpu() -> Result<usize> {
    let me = Pid::from_raw(0);
    let allowed = nix::sched::sched_getaffinity(me).context("sched_getaffinity")?;
    let cpu = (0..CpuSet::count())
        .rev()
        .find(|&c| allowed.is_set(c).unwrap_or(false))
        .context("no CPU in the affinity mask")?;
    let mut set = CpuSet::new();
    set.set(cpu).context("CPU set")?;
    nix::sched::sched_setaffinity(me, &set).context("sched_setaffinity")?;
    Ok(cpu)
}

/// Online CPUs.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}
