//! sluice's userspace: configuration, the dataplane (XDP programs and their maps), the daemon
//! and the CLI.
//!
//! Everything here is safe Rust except `dataplane::maps`, the thin layer over aya's map calls.
#![deny(unsafe_code)]

pub mod admin;
mod allocator;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod edge;
pub mod error_chain;
pub mod health;
pub mod management;
pub mod metrics;
pub mod observe;
pub mod shutdown;
#[cfg(test)]
mod test_support;

/// The XDP programs (`sluice_xdp`, `sluice_decap`), built by build.rs for the BPF target.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sluice"));
/// Trivial XDP programs that benchmarks measure sluice against.
pub static BASELINE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline"));
