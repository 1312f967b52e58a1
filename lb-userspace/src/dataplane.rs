//! The kernel half as userspace sees it: loads the XDP programs, attaches them, and writes the
//! maps from a `Config`.
//!
//! `apply` is staged: every table is computed before the first map write, and each VIP's new
//! Maglev table is written to the VIP's inactive ring half and made live by one write of the VIP
//! entry, so no packet ever sees a half-written table.

mod addr;
mod decap;
mod error;
mod gateway;
mod maps;
mod rings;

pub use addr::{flow_key, vip_key};
pub use decap::Decap;
pub use error::DataplaneError;
pub use gateway::{BackendStatus, Dataplane, FlowInfo, Options};
pub use rings::expected_shares;
