//! What the management port and the metrics read from the daemon: one snapshot per request,
//! taken under one hold of the daemon's lock (the probes' lighter view takes none), so a
//! scrape never mixes two states.

use std::net::IpAddr;

use crate::admin::protocol::{BackendRow, Stats, Status};
use crate::edge::stats::EdgeCounts;

/// Implemented by the daemon; the management server only reads through it.
pub trait Observe: Send + Sync + 'static {
    /// Everything `/metrics` and `/health/*` need, taken at one moment. An error (e.g. a map
    /// read failed) makes `/metrics` answer 500 and readiness DOWN with the reason.
    fn snapshot(&self) -> Result<Snapshot, String>;

    /// What `/health/*` needs: the status, backend states and phase. The daemon answers it
    /// from state it keeps at hand, never from the kernel maps, so a probe costs the same
    /// with an empty or a full conntrack table and never waits for a walk or a lock.
    fn health(&self) -> Result<Snapshot, String> {
        self.snapshot()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub status: Status,
    pub backends: Vec<BackendRow>,
    pub stats: Stats,
    /// Health transitions per backend since the daemon started.
    pub health_transitions: Vec<HealthTransitions>,
    /// What each configured edge listener counted, in configuration order.
    pub edges: Vec<EdgeCounts>,
    /// The first config was applied to the maps.
    pub maps_written: bool,
    /// `sluice_xdp` is attached to every configured interface.
    pub attached: bool,
    /// Graceful shutdown has begun.
    pub shutting_down: bool,
    /// The conntrack walk the live-flow counts come from; `None` before the first one.
    pub conntrack: Option<ConntrackWalk>,
    /// Next-hop neighbours the daemon asked the kernel to resolve (no entry, failed or stale)
    /// since it started.
    pub neighbour_resolves: u64,
}

/// The last walk of conntrack (live flows per backend are as of its end).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConntrackWalk {
    /// Live entries it counted.
    pub entries: u64,
    /// How long it took.
    pub took_seconds: f64,
    /// How long ago it ended.
    pub age_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthTransitions {
    pub vip: String,
    pub backend: IpAddr,
    pub to_healthy: u64,
    pub to_unhealthy: u64,
}
