//! The maps `sluice_xdp` and `sluice_decap` share with userspace. Names come from lb-common so
//! the loader and the pinned files can never disagree.

use crate::parsed::Parsed;
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use lb_common::{
    proxy::ProxyOutcome, BackendEntry, CidrData, Counter, DecapCounter, DecapKey, FlowEntry,
    FlowKey, NextHop, NodeEntry, ProxyFlow, Settings, TrafficStats, VipEntry, VipKey, VipStats,
    CONNTRACK_ENTRIES, DEFAULT_RING_SLOTS, MAX_BACKENDS, MAX_CIDRS, MAX_VIPS,
};

#[map(name = "sluice_vips_v1")]
pub static VIPS: HashMap<VipKey, VipEntry> = HashMap::with_max_entries(MAX_VIPS, 0);

#[map(name = "sluice_backends_v1")]
pub static BACKENDS: Array<BackendEntry> = Array::with_max_entries(MAX_BACKENDS, 0);

/// Each backend's cached next hop, two slots per backend id (see `NextHop`).
#[map(name = "sluice_next_hops_v1")]
pub static NEXT_HOPS: Array<NextHop> = Array::with_max_entries(2 * MAX_BACKENDS, 0);

/// Which of a backend's two next-hop slots is live (`NEXT_HOP_*`), indexed by backend id.
#[map(name = "sluice_next_hop_live_v1")]
pub static NEXT_HOP_LIVE: Array<u32> = Array::with_max_entries(MAX_BACKENDS, 0);

/// All VIPs' Maglev tables, two per VIP (live and staging), addressed by `VipEntry::ring_offset`.
/// Userspace may resize it at load time.
#[map(name = "sluice_rings_v1")]
pub static RINGS: Array<u32> = Array::with_max_entries(DEFAULT_RING_SLOTS, 0);

/// One LRU list for all CPUs (the kernel's default), not per-CPU lists
/// (`BPF_F_NO_COMMON_LRU`, as Katran has): a per-CPU list walks 4 of its oldest entries on
/// every insert, the common one 128 per batch of 128 inserts a CPU takes from it, which made a
/// new flow about 50 ns cheaper here (`cargo xtask bench xdp`, see README). The common list
/// also gives every CPU the whole capacity where per-CPU lists give each `max_entries / CPUs`,
/// so a CPU that RSS hands more flows evicts no sooner than the others. Its cost, the shared
/// list's lock, is taken once per 128 new flows per CPU.
#[map(name = "sluice_conntrack_v3")]
pub static CONNTRACK: LruHashMap<FlowKey, FlowEntry> =
    LruHashMap::with_max_entries(CONNTRACK_ENTRIES, 0);

/// What flows of a VIP with `proxy_protocol` set need beyond conntrack (`FLOW_FLAG_PROXY`).
/// Userspace sizes it to a quarter of conntrack; as an LRU it loses the records of the flows
/// idle longest first, and a flow whose record is gone is policed as untracked. One LRU list
/// for all CPUs, as conntrack.
#[map(name = "sluice_proxy_flows_v1")]
pub static PROXY_FLOWS: LruHashMap<FlowKey, ProxyFlow> =
    LruHashMap::with_max_entries(CONNTRACK_ENTRIES / 4, 0);

#[map(name = "sluice_settings_v1")]
pub static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// The node's state (`NODE_*`), one entry: a closed node refuses new edge connections.
#[map(name = "sluice_node_v1")]
pub static NODE: Array<NodeEntry> = Array::with_max_entries(1, 0);

#[map(name = "sluice_vip_stats_v2")]
pub static VIP_STATS: PerCpuArray<VipStats> = PerCpuArray::with_max_entries(MAX_VIPS, 0);

#[map(name = "sluice_backend_stats_v1")]
pub static BACKEND_STATS: PerCpuArray<TrafficStats> =
    PerCpuArray::with_max_entries(MAX_BACKENDS, 0);

#[map(name = "sluice_counters_v1")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Every VIP's `trusted_proxies`, `allow_clients` and `deny_clients` (see `CidrData`).
#[map(name = "sluice_cidrs_v1")]
pub static CIDRS: LpmTrie<CidrData, u8> = LpmTrie::with_max_entries(MAX_CIDRS, 0);

/// Per-VIP PROXY/client policy outcomes, `ProxyOutcome::stats_index`.
#[map(name = "sluice_proxy_stats_v1")]
pub static PROXY_STATS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(MAX_VIPS * ProxyOutcome::COUNT, 0);

/// Per-CPU room for the parsed packet (see `parse::parse`).
#[map(name = "sluice_scratch_v1")]
pub static SCRATCH: PerCpuArray<Parsed> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "sluice_decap_vips_v1")]
pub static DECAP_VIPS: HashMap<DecapKey, u32> = HashMap::with_max_entries(MAX_VIPS, 0);

#[map(name = "sluice_decap_counters_v1")]
pub static DECAP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DecapCounter::COUNT, 0);
