//! Map keys, values and names shared by the kernel and userspace.

/// Address family tags stored in keys (not the `AF_*` values, which differ between systems).
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;
/// IP protocol numbers of the tunnel headers sluice writes and strips.
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_IPV6_IN_IP: u8 = 41;

/// Capacity of the VIP, backend and stats maps; userspace rejects configs beyond these.
pub const MAX_VIPS: u32 = 256;
pub const MAX_BACKENDS: u32 = 4096;
/// Default capacity of the conntrack LRU (flows across all VIPs).
pub const CONNTRACK_ENTRIES: u32 = 1 << 20;
/// Default Maglev table size; prime, as Maglev requires.
pub const DEFAULT_RING_SIZE: u32 = 65537;
/// Ring slots reserved per VIP by default: two tables (double buffering) of the default size.
pub const DEFAULT_RING_SLOTS: u32 = 2 * DEFAULT_RING_SIZE * 8;
/// How many following ring slots are probed when the chosen backend is not `up`.
pub const RING_PROBES: u32 = 8;
/// Marks an empty ring slot (a VIP with no usable backend).
pub const NO_BACKEND: u32 = u32::MAX;

/// Pinned map and program names; versioned so a later layout can coexist with this one.
pub mod names {
    pub const VIPS: &str = "sluice_vips_v1";
    pub const BACKENDS: &str = "sluice_backends_v1";
    pub const NEXT_HOPS: &str = "sluice_next_hops_v1";
    pub const NEXT_HOP_LIVE: &str = "sluice_next_hop_live_v1";
    pub const RINGS: &str = "sluice_rings_v1";
    /// v3: the 24-byte `FlowEntry` (v2 held the PROXY fields too, 56 bytes).
    pub const CONNTRACK: &str = "sluice_conntrack_v3";
    pub const PROXY_FLOWS: &str = "sluice_proxy_flows_v1";
    /// Pins of earlier layouts that a daemon adopting an old pinned set removes once its own
    /// program runs (it never opens them: their values have another layout).
    pub const RETIRED: &[&str] = &["sluice_conntrack_v1", "sluice_conntrack_v2"];
    pub const SETTINGS: &str = "sluice_settings_v1";
    /// v2: `VipStats` (v1 held `TrafficStats` only).
    pub const VIP_STATS: &str = "sluice_vip_stats_v2";
    pub const BACKEND_STATS: &str = "sluice_backend_stats_v1";
    pub const COUNTERS: &str = "sluice_counters_v1";
    pub const DECAP_VIPS: &str = "sluice_decap_vips_v1";
    pub const DECAP_COUNTERS: &str = "sluice_decap_counters_v1";
    pub const CIDRS: &str = "sluice_cidrs_v1";
    pub const PROXY_STATS: &str = "sluice_proxy_stats_v1";
    pub const NODE: &str = "sluice_node_v1";
    pub const PROG_XDP: &str = "sluice_xdp";
    pub const PROG_DECAP: &str = "sluice_decap";
}

macro_rules! assert_size {
    ($t:ty, $n:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $n);
    };
}

macro_rules! pod {
    ($($t:ty),*) => {
        $(
            // SAFETY: #[repr(C)], Copy, only integer fields, no implicit padding (sizes asserted).
            #[cfg(feature = "user")]
            unsafe impl aya::Pod for $t {}
        )*
    };
}

/// An IPv4 or IPv6 address as four network-order words; IPv4 uses word 0 only, the rest is zero.
pub type AddrBe = [u32; 4];

/// Key of the VIP map: the destination a client connects to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr_be: AddrBe,
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
}
assert_size!(VipKey, 20);

/// How a VIP's traffic is handled.
pub const VIP_KIND_L4: u8 = 0;
pub const VIP_KIND_EDGE: u8 = 1;

/// Which packet fields choose the backend.
pub const HASH_FIVE_TUPLE: u8 = 0;
pub const HASH_SOURCE_IP: u8 = 1;

/// PROXY protocol v2 policy of a TCP VIP (see `proxy`).
pub const PROXY_OFF: u8 = 0;
pub const PROXY_OPTIONAL: u8 = 1;
pub const PROXY_REQUIRED: u8 = 2;

/// Value of the VIP map. Userspace replaces the whole entry in one update to switch rings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipEntry {
    /// Index into the per-VIP stats map (`< MAX_VIPS`).
    pub index: u32,
    /// First slot of the live Maglev table in the ring map.
    pub ring_offset: u32,
    /// Size `M` of the live table (prime).
    pub ring_size: u32,
    pub kind: u8,
    pub hash_key: u8,
    pub proxy_policy: u8,
    /// `VIP_FLAG_*` bits.
    pub flags: u8,
}
assert_size!(VipEntry, 16);

/// The VIP has `allow_clients`: a client outside them is refused.
pub const VIP_FLAG_ALLOW_CLIENTS: u8 = 1;
/// The VIP has `deny_clients`.
pub const VIP_FLAG_DENY_CLIENTS: u8 = 2;
/// A PROXY v1 line from a trusted proxy is accepted (edge VIPs, whose listener reads it; the
/// kernel cannot parse the text, so no real client is recorded for such a flow).
pub const VIP_FLAG_ACCEPT_V1: u8 = 4;

/// Backend states as stored in the backend map.
pub const BACKEND_UP: u8 = 0;
pub const BACKEND_DRAINING: u8 = 1;
pub const BACKEND_DOWN: u8 = 2;

/// Value of the backend array, indexed by backend id (`< MAX_BACKENDS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendEntry {
    /// Tunnel destination.
    pub addr_be: AddrBe,
    pub family: u8,
    pub state: u8,
    /// Index of the VIP this backend id belongs to. The kernel ignores it; a restarted daemon
    /// reads it to give each configured backend its old id back, so surviving conntrack
    /// entries keep pointing at the right backend.
    pub vip_index: u16,
}
assert_size!(BackendEntry, 20);

/// Key of the conntrack map: the flow as the client sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src_be: AddrBe,
    pub dst_be: AddrBe,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
assert_size!(FlowKey, 40);

/// Value of the conntrack map: what every flow needs, 24 bytes (Katran's is 16). What only a
/// PROXY VIP's flows need lives in the PROXY flow map ([`ProxyFlow`]), so a million flows cost
/// the kernel about 128 MB here instead of 160 MB (see README, "Memory").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEntry {
    pub backend: u32,
    /// Index of the VIP (or edge VIP), `< MAX_VIPS`, so one byte holds it.
    pub vip_index: u8,
    /// `FLOW_FLAG_*` bits.
    pub flags: u8,
    /// `proxy::FLOW_*`: whether the flow is policed, awaiting its header, allowed or refused.
    /// Kept here, not in the PROXY map: a refused flow is dropped by this one lookup, and a
    /// client-list VIP without PROXY needs nothing else.
    pub proxy_state: u8,
    /// The `ProxyOutcome` that decided the flow (meaningful once allowed or refused).
    pub proxy_outcome: u8,
    /// `bpf_ktime_get_coarse_ns` (`CLOCK_MONOTONIC` at jiffy granularity, so up to one tick
    /// behind `clock_gettime(CLOCK_MONOTONIC)`) when the flow was recorded, and when a packet
    /// last hit it.
    pub created_ns: u64,
    pub last_seen_ns: u64,
}
assert_size!(FlowEntry, 24);
const _: () = assert!(MAX_VIPS <= 256, "FlowEntry::vip_index is one byte");

/// The flow has a record in the PROXY flow map (its VIP had a PROXY policy when it opened).
pub const FLOW_FLAG_PROXY: u8 = 1;

/// Value of the PROXY flow map (same key as conntrack): what a flow of a VIP with
/// `proxy_protocol` set needs beyond its conntrack entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyFlow {
    /// Real client from a PROXY v2 header; `client_family` is 0 when there is none.
    pub client_be: AddrBe,
    pub client_port_be: u16,
    pub client_family: u8,
    pub _pad: u8,
    /// TCP sequence number of the stream's first byte (the SYN's plus one): a PROXY header is
    /// judged on the segment that starts there, wherever retransmissions put it.
    pub data_seq: u32,
}
assert_size!(ProxyFlow, 24);

/// Global settings, one entry at index 0 of the settings array.
///
/// The outer source address of an encapsulated packet is `base | (flow_hash & host_mask)`, so
/// different flows get different outer sources and backends spread decapsulation over RSS queues.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub src4_base_be: u32,
    pub src4_host_mask_be: u32,
    pub src6_base_be: AddrBe,
    /// Applied to the last word of the IPv6 source only.
    pub src6_host_mask_be: u32,
    pub _pad: u32,
}
assert_size!(Settings, 32);

/// Node states as stored in the node map: the gateway's own lifecycle, which graceful shutdown
/// walks in this order.
///
/// `serving` and `draining` treat traffic alike (during `draining` only readiness says the node
/// is going away); once `closed`, every new connection to an edge VIP is refused with a TCP RST
/// (see [`NodeEntry::closed_reply`] for who builds it), so clients fail over at once instead of
/// retransmitting their SYN into a listener that no longer accepts. L4 VIPs are not affected:
/// their backends keep serving after this node's daemon is gone.
pub const NODE_SERVING: u8 = 0;
pub const NODE_DRAINING: u8 = 1;
pub const NODE_CLOSED: u8 = 2;

/// A closed node's RST is built by `sluice_xdp` and sent back with `XDP_TX`.
pub const CLOSED_REPLY_XDP: u8 = 0;
/// A closed node passes SYNs to the kernel, whose TCP stack answers with a RST because the
/// listener is closed: for interfaces where an `XDP_TX` frame may be lost (a veth in native
/// mode delivers it only if its peer runs an XDP program too).
pub const CLOSED_REPLY_KERNEL: u8 = 1;

/// Value of the node array, one entry at index 0 (`NODE_*` state).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeEntry {
    pub state: u8,
    /// `CLOSED_REPLY_*`: who answers a closed node's SYNs (0, the default, is XDP).
    pub closed_reply: u8,
    pub _pad: [u8; 2],
}
assert_size!(NodeEntry, 4);

/// Key of the decap map on a backend: a VIP address the host serves (family + address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DecapKey {
    pub addr_be: AddrBe,
    pub family: u8,
    pub _pad: [u8; 3],
}
assert_size!(DecapKey, 20);

/// Which CIDR list of a VIP an entry of the CIDR map belongs to.
pub const LIST_TRUSTED_PROXIES: u8 = 1;
pub const LIST_ALLOW_CLIENTS: u8 = 2;
pub const LIST_DENY_CLIENTS: u8 = 3;
/// Capacity of the CIDR map (all lists of all VIPs); userspace rejects configs beyond it.
pub const MAX_CIDRS: u32 = 16384;
/// Bits of `CidrData` before the address: VIP index, list and family must match exactly.
pub const CIDR_SCOPE_BITS: u32 = 32;

/// Data of a key of the CIDR map, an LPM trie (after the trie key's prefix length, which is
/// `CIDR_SCOPE_BITS` + the CIDR's own prefix length). One trie holds every list of every VIP;
/// the scope in front keeps them apart.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CidrData {
    pub vip_index: u16,
    pub list: u8,
    pub family: u8,
    pub addr_be: AddrBe,
}
assert_size!(CidrData, 20);

/// Per-VIP and per-backend traffic counters (per-CPU; userspace sums them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}
assert_size!(TrafficStats, 24);

/// Value of the per-VIP stats map (per-CPU; userspace sums them): the VIP's traffic and its
/// share of the conntrack, forwarding and next-hop counters, so a forwarded packet updates one
/// per-CPU slot for all of them.
/// The `Counter`s of the same names are the global counter plus these summed over every VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VipStats {
    pub traffic: TrafficStats,
    pub conntrack_hit: u64,
    pub conntrack_miss: u64,
    pub flow_created: u64,
    pub flow_insert_failed: u64,
    /// Forwarded packets by how they left and how their next hop was found.
    pub tx: u64,
    pub redirect: u64,
    pub next_hop_cached: u64,
    pub next_hop_fib: u64,
}
assert_size!(VipStats, 88);

pod!(
    VipKey,
    VipEntry,
    BackendEntry,
    FlowKey,
    FlowEntry,
    ProxyFlow,
    Settings,
    NodeEntry,
    DecapKey,
    TrafficStats,
    VipStats,
    CidrData
);

/// A backend's cached next hop: what `bpf_fib_lookup` would answer for its tunnel destination,
/// kept current by userspace from the kernel's route and neighbour tables.
///
/// Two slots per backend (`2 × id + half`) in `sluice_next_hops_v1`; `sluice_next_hop_live_v1`
/// says which one is live ([`NEXT_HOP_NONE`], [`NEXT_HOP_HALF0`] or [`NEXT_HOP_HALF1`]).
/// Userspace writes the idle slot whole and then flips the 4-byte selector, so a packet never
/// reads a half-written entry (a map update of a larger value is a plain copy, not atomic).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NextHop {
    /// Egress interface: `XDP_TX` when it is the ingress interface, `bpf_redirect` otherwise.
    pub ifindex: u32,
    /// Destination MAC then source MAC, as they go into the Ethernet header.
    pub macs: [u8; 12],
    /// Largest outer packet (L3 length) the route takes; a larger one is dropped and counted
    /// as `drop_mtu`, as the route lookup's own MTU check would.
    pub mtu: u32,
    /// Bumped by userspace on every write, so a change can be seen from outside.
    pub generation: u32,
}
assert_size!(NextHop, 24);

/// `sluice_next_hop_live_v1` values: no usable next hop (the kernel looks the route up itself),
/// or which of the backend's two slots is live.
pub const NEXT_HOP_NONE: u32 = 0;
pub const NEXT_HOP_HALF0: u32 = 1;
pub const NEXT_HOP_HALF1: u32 = 2;

pod!(NextHop);
