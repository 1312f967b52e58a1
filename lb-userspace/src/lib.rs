//! sluice's userspace: configuration, the dataplane (XDP programs and their maps), the daemon
//! and the CLI.
//!
//! Everything here is safe Rust except [`ffi`]: the bpf(2) map commands aya does not wrap and
//! glibc's `mallopt`. `unsafe_code` is denied everywhere else (`deny`, not `forbid`, so that
//! one module can allow it).
//!
//! Errors: a `thiserror` enum per module. A variant with a cause prints it in its message
//! (`"binding the admin socket {path}: {error}"`) and does not also return it from `source()`
//! (no `#[source]`, no `#[from]`, no field named `source`); a variant that only wraps another
//! error is `#[error(transparent)]`. So a chain printed whole (`{:#}` at the top, `%error` in a
//! log line, the admin socket's answer) names every cause exactly once.
#![deny(unsafe_code)]

pub mod admin;
mod allocator;
pub mod bgp;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod edge;
#[allow(unsafe_code)]
mod ffi;
pub mod health;
pub mod management;
pub mod metrics;
pub mod observe;
pub mod sd_notify;
pub mod shutdown;
#[cfg(test)]
mod test_support;

#[cfg(test)]
mod errors_print_once;
#[cfg(test)]
pub(crate) mod test_log;

/// The XDP programs (`sluice_xdp`, `sluice_decap`), built by build.rs for the BPF target.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice"));
/// Trivial XDP programs that benchmarks measure sluice against.
pub static BASELINE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline"));
