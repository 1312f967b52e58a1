//! The invariants each fuzz target checks, one module per target (`fuzz_targets/<name>.rs` is a
//! one-line caller). A crash input found by the fuzzer replays without libFuzzer through these
//! functions, and then becomes a unit test in the crate whose code failed.

pub mod client_cert;
pub mod config;
pub mod forwarded;
pub mod http_request;
pub mod maglev;
