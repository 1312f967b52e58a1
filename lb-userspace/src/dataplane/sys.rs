//! The few system calls the dataplane needs beyond aya: mounting bpffs, the clock
//! `bpf_ktime_get_ns` reads (both through `nix`), and the bpf(2) map commands aya 0.14 does not
//! wrap (in [`crate::ffi`], the crate's one module with `unsafe`).

use std::{io, path::Path};

use nix::{
    mount::MsFlags,
    sys::statfs::{statfs, BPF_FS_MAGIC},
    time::{clock_gettime, ClockId},
};

pub use crate::ffi::{delete_batch, lookup, lookup_batch, BatchCursor};

/// Mounts bpffs at `path` unless one is already there (systemd mounts it on most hosts; a bare
/// container or test VM may not). `true` when it had to mount one.
pub fn ensure_mounted(path: &Path) -> io::Result<bool> {
    std::fs::create_dir_all(path)?;
    if statfs(path)?.filesystem_type() == BPF_FS_MAGIC {
        return Ok(false);
    }
    nix::mount::mount(
        Some("bpf"),
        path,
        Some("bpf"),
        MsFlags::empty(),
        None::<&str>,
    )?;
    Ok(true)
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock conntrack timestamps (`bpf_ktime_get_ns`) use.
pub fn monotonic_ns() -> u64 {
    // CLOCK_MONOTONIC exists on every Linux; a failure is impossible short of a broken libc,
    // and 0 (the boot) then makes every flow look old rather than panicking the daemon.
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |ts| {
        u64::try_from(ts.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec()).unwrap_or(0)
    })
}
