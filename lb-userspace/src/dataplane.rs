//! The kernel half as userspace sees it: loads the XDP programs, attaches and pins them, and
//! writes the maps from a `Config`.
//!
//! `apply` is staged: every table is computed and written to its VIP's inactive ring half
//! before anything live changes, and each VIP goes live with one write of its entry, so no
//! packet ever sees a half-written table. The live writes are undone if one fails.

mod addr;
mod commit;
mod conntrack;
mod decap;
mod error;
mod gateway;
pub mod kernel_log;
mod maps;
mod next_hop;
mod node;
mod pins;
mod plan;
mod queries;
pub mod resolver;
mod rings;
mod sys;
mod writes;

pub use addr::{flow_key, vip_key};
pub use conntrack::{flow_info, now_ns, Conntrack, FlowLabels};
pub use decap::Decap;
pub use error::DataplaneError;
pub use gateway::{BackendStatus, Dataplane, FlowInfo, Options};
pub use next_hop::{Cached as CachedNextHop, Hop};
pub use node::NodeSwitch;
pub use rings::expected_shares;
