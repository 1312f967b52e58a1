//! The few syscalls the dataplane needs that std does not wrap: mounting bpffs, and the clock
//! `bpf_ktime_get_ns` reads.

use std::{ffi::CString, io, os::unix::ffi::OsStrExt as _, path::Path};

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Mounts bpffs at `path` unless one is already there (systemd mounts it on most hosts; a bare
/// container or test VM may not). `true` when it had to mount one.
pub fn ensure_mounted(path: &Path) -> io::Result<bool> {
    std::fs::create_dir_all(path)?;
    if is_bpffs(path)? {
        return Ok(false);
    }
    let target = c_path(path)?;
    let fstype = c"bpf";
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call; `data` may
    // be null for bpffs.
    #[allow(unsafe_code)]
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(true)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let p = c_path(path)?;
    // SAFETY: `statfs` is plain old data, so all-zero is a valid value for the kernel to fill.
    #[allow(unsafe_code)]
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `p` is a valid NUL-terminated path and `st` a valid, writable statfs.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::statfs(p.as_ptr(), &raw mut st) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between libcs"
    )]
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock conntrack timestamps (`bpf_ktime_get_ns`) use.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    #[allow(unsafe_code)]
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts);
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}
