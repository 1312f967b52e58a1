//! What the daemon reads back from the kernel: counters and traffic (conntrack walks are in
//! `conntrack`).

use std::{collections::HashMap, net::IpAddr};

use lb_common::{names, proxy::ProxyOutcome, Counter, FlowKey, TrafficStats, VipStats, MAX_VIPS};

use super::{
    gateway::{BackendStatus, Dataplane},
    maps::{per_cpu_sum, per_cpu_values},
    DataplaneError,
};

impl Dataplane {
    pub fn counters(&self) -> Result<Vec<(Counter, u64)>, DataplaneError> {
        let vips = self.vip_totals()?;
        Counter::ALL
            .iter()
            .map(|&c| Ok((c, self.global(c)? + per_vip(&vips, c))))
            .collect()
    }

    pub fn counter(&self, c: Counter) -> Result<u64, DataplaneError> {
        let vips = if counted_per_vip(c) {
            self.vip_totals()?
        } else {
            VipStats::default()
        };
        Ok(self.global(c)? + per_vip(&vips, c))
    }

    fn global(&self, c: Counter) -> Result<u64, DataplaneError> {
        per_cpu_sum(&self.counters, c as u32, names::COUNTERS)
    }

    /// Every VIP slot's counters summed, used or not: a removed VIP's counts stay part of the
    /// totals, which only ever grow.
    fn vip_totals(&self) -> Result<VipStats, DataplaneError> {
        let mut t = VipStats::default();
        for i in 0..MAX_VIPS {
            for s in per_cpu_values(&self.vip_stats, i, names::VIP_STATS)? {
                t.conntrack_hit += s.conntrack_hit;
                t.conntrack_miss += s.conntrack_miss;
                t.flow_created += s.flow_created;
                t.flow_insert_failed += s.flow_insert_failed;
                t.tx += s.tx;
                t.redirect += s.redirect;
                t.next_hop_cached += s.next_hop_cached;
                t.next_hop_fib += s.next_hop_fib;
            }
        }
        Ok(t)
    }

    /// Backends of every VIP with their state and traffic.
    pub fn backends(&self) -> Result<Vec<BackendStatus>, DataplaneError> {
        let mut out = Vec::new();
        for v in self.state.vips.values() {
            for b in &v.backends {
                out.push(BackendStatus {
                    vip: v.config.name.clone(),
                    address: b.address,
                    weight: b.weight,
                    state: b.state,
                    id: b.id,
                    next_hop: self.next_hop(b.id),
                    traffic: sum_traffic(&per_cpu_values(
                        &self.backend_stats,
                        b.id,
                        names::BACKEND_STATS,
                    )?),
                });
            }
        }
        Ok(out)
    }

    /// The state a backend has in the kernel map, if the VIP has it.
    pub fn backend_state(&self, vip: &str, backend: IpAddr) -> Option<u8> {
        self.state.backend(vip, backend).map(|b| b.state)
    }

    fn vip_index(&self, vip: &str) -> Result<u32, DataplaneError> {
        self.state
            .vips
            .get(vip)
            .map(|v| v.index)
            .ok_or_else(|| DataplaneError::UnknownVip(vip.into()))
    }

    /// An edge listener's index; it has one when it listens on a specific address.
    fn edge_index(&self, edge: &str) -> Result<u32, DataplaneError> {
        self.state
            .edges
            .get(edge)
            .map(|e| e.index)
            .ok_or_else(|| DataplaneError::UnknownVip(edge.into()))
    }

    pub fn vip_traffic(&self, vip: &str) -> Result<TrafficStats, DataplaneError> {
        self.traffic_at(self.vip_index(vip)?)
    }

    /// Packets the kernel passed to an edge listener, and its new connections (SYNs).
    pub fn edge_traffic(&self, edge: &str) -> Result<TrafficStats, DataplaneError> {
        self.traffic_at(self.edge_index(edge)?)
    }

    fn traffic_at(&self, index: u32) -> Result<TrafficStats, DataplaneError> {
        let per_cpu = per_cpu_values(&self.vip_stats, index, names::VIP_STATS)?;
        Ok(sum_traffic(
            &per_cpu.iter().map(|s| s.traffic).collect::<Vec<_>>(),
        ))
    }

    /// Each PROXY/client policy outcome's count for a VIP.
    pub fn proxy_outcomes(&self, vip: &str) -> Result<Vec<(ProxyOutcome, u64)>, DataplaneError> {
        self.outcomes_at(self.vip_index(vip)?)
    }

    /// Each PROXY policy outcome's count for an edge listener's connections.
    pub fn edge_proxy_outcomes(
        &self,
        edge: &str,
    ) -> Result<Vec<(ProxyOutcome, u64)>, DataplaneError> {
        self.outcomes_at(self.edge_index(edge)?)
    }

    fn outcomes_at(&self, index: u32) -> Result<Vec<(ProxyOutcome, u64)>, DataplaneError> {
        ProxyOutcome::ALL
            .iter()
            .map(|&o| {
                let n = per_cpu_sum(&self.proxy_stats, o.stats_index(index), names::PROXY_STATS)?;
                Ok((o, n))
            })
            .collect()
    }

    /// The backend conntrack holds for a flow, if any.
    pub fn flow_backend(&self, key: &FlowKey) -> Option<u32> {
        self.conntrack.get(key, 0).ok().map(|e| e.backend)
    }

    /// The VIP's live Maglev table as backend addresses (only backends taking new flows), for
    /// the edge listeners that share its pool.
    pub fn pool_table(&self, vip: &str) -> Option<Vec<IpAddr>> {
        let v = self.state.vips.get(vip)?;
        let addresses: HashMap<u32, IpAddr> =
            v.backends.iter().map(|b| (b.id, b.address)).collect();
        Some(
            v.table
                .iter()
                .filter_map(|id| addresses.get(id).copied())
                .collect(),
        )
    }

    /// The backends of `vip` that are up or draining (a session may stay on them).
    pub fn pool_sessions(&self, vip: &str) -> Vec<IpAddr> {
        self.state.vips.get(vip).map_or_else(Vec::new, |v| {
            v.backends
                .iter()
                .filter(|b| b.state != lb_common::BACKEND_DOWN)
                .map(|b| b.address)
                .collect()
        })
    }

    /// Every backend of the VIP named `vip`, whatever its state (empty for an unknown VIP).
    pub fn pool_members(&self, vip: &str) -> Vec<IpAddr> {
        self.state
            .vips
            .get(vip)
            .map_or_else(Vec::new, |v| v.backends.iter().map(|b| b.address).collect())
    }

    /// Kernel id of a backend (what conntrack entries and `flow_backend` name).
    pub fn backend_id(&self, vip: &str, backend: IpAddr) -> Option<u32> {
        self.state.backend(vip, backend).map(|b| b.id)
    }
}

/// Whether `sluice_xdp` counts `c` in the per-VIP stats rather than the counters map.
fn counted_per_vip(c: Counter) -> bool {
    matches!(
        c,
        Counter::ConntrackHit
            | Counter::ConntrackMiss
            | Counter::FlowCreated
            | Counter::FlowInsertFailed
            | Counter::Tx
            | Counter::Redirect
            | Counter::NextHopCached
            | Counter::NextHopFib
    )
}

/// `c`'s share in the summed per-VIP stats (0 for counters kept only in the counters map).
fn per_vip(vips: &VipStats, c: Counter) -> u64 {
    match c {
        Counter::ConntrackHit => vips.conntrack_hit,
        Counter::ConntrackMiss => vips.conntrack_miss,
        Counter::FlowCreated => vips.flow_created,
        Counter::FlowInsertFailed => vips.flow_insert_failed,
        Counter::Tx => vips.tx,
        Counter::Redirect => vips.redirect,
        Counter::NextHopCached => vips.next_hop_cached,
        Counter::NextHopFib => vips.next_hop_fib,
        _ => 0,
    }
}

fn sum_traffic(per_cpu: &[TrafficStats]) -> TrafficStats {
    per_cpu
        .iter()
        .fold(TrafficStats::default(), |a, s| TrafficStats {
            packets: a.packets + s.packets,
            bytes: a.bytes + s.bytes,
            new_flows: a.new_flows + s.new_flows,
        })
}
