//! Types and pure logic shared by sluice's XDP programs and its userspace daemon.
//!
//! Every map key and value is one `#[repr(C)]` `Copy` type with explicit padding and a
//! compile-time size check, so the kernel and userspace can never disagree on a layout.
//! Fields that hold network byte order say so in their name (`_be`).
#![no_std]
// The kernel side needs these small helpers inlined: BPF-to-BPF calls cost verifier
// complexity and stack.
#![allow(clippy::inline_always)]
// Explicit padding fields are part of every map layout and must be public to build values.
#![allow(clippy::pub_underscore_fields)]

pub mod flow_hash;
pub mod maglev;
pub mod maps;
pub mod proxy;
pub mod stats;

pub use maps::*;
pub use stats::*;
