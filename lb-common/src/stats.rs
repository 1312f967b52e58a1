//! Reasons a packet was forwarded, passed or dropped: one per-CPU counter each.
//!
//! Nothing leaves `sluice_xdp` without one of these counters saying why.

/// Index into the `sluice_counters_v1` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Encapsulated and sent back out the ingress interface.
    Tx = 0,
    /// Encapsulated and redirected to another interface.
    Redirect,
    /// Encapsulated and passed to the stack because the next hop's neighbour is not resolved.
    PassNoNeigh,
    /// Not addressed to a VIP.
    PassNotVip,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    PassNotIp,
    /// IPv4 or IPv6 fragment: ports unknown, so never steered.
    PassFragment,
    /// Truncated or malformed Ethernet/VLAN header.
    PassBadL2,
    /// Truncated or malformed IPv4/IPv6 header (IHL < 5, lying length, too many ext headers).
    PassBadL3,
    /// Truncated TCP/UDP header.
    PassBadL4,
    /// L4 protocol sluice does not steer (e.g. SCTP, ICMP echo).
    PassOtherL4,
    /// ICMP error whose quoted packet is not a VIP flow, or is truncated.
    PassIcmpNotVip,
    /// Conntrack lookups that found / did not find the flow.
    ConntrackHit,
    ConntrackMiss,
    /// New flows recorded in conntrack (TCP SYN, or first UDP datagram).
    FlowCreated,
    /// Conntrack insert failed (map full of non-evictable entries, should not happen with LRU).
    FlowInsertFailed,
    /// ICMP errors about a VIP flow, steered to that flow's backend.
    IcmpSteered,
    /// VIP has no backend that is up.
    DropNoBackend,
    /// Growing the packet for the tunnel header failed.
    DropEncap,
    /// No route to the backend (FIB lookup failed for a reason other than a missing neighbour).
    DropNoRoute,
    /// Packet with a VIP destination but an edge VIP (passed to the local stack).
    PassEdge,
    /// Encapsulated packet larger than the egress MTU.
    DropMtu,
    /// Packet of a flow refused by its VIP's PROXY or client policy (the per-VIP outcome
    /// counters say which rule).
    DropProxy,
    /// Map state inconsistent (ring points to a missing backend), or a packet rewrite that
    /// its own bounds checks made impossible failed halfway; packet dropped.
    DropInternal,
    /// SYN to an edge VIP while the node is `closed`, answered with a TCP RST built in the
    /// kernel and sent back out the ingress interface.
    TxRstClosed,
    /// SYN to an edge VIP while the node is `closed` that could not be trimmed into a RST
    /// (the frame could not shrink); passed to the stack, which refuses it itself once the
    /// listener is closed. Every SYN the parser accepts is otherwise answered, IPv4 options
    /// and IPv6 extension headers included.
    PassEdgeClosed,
    /// Encapsulated packet sent with the backend's cached next hop (no route lookup).
    NextHopCached,
    /// Encapsulated packet whose backend had no cached next hop (not resolved yet, or the
    /// neighbour is not reachable): `bpf_fib_lookup` chose the way, as it would without the cache.
    NextHopFib,
}

impl Counter {
    /// Number of counters; size of the counters map.
    pub const COUNT: u32 = Counter::NextHopFib as u32 + 1;

    pub const ALL: [Counter; Counter::COUNT as usize] = [
        Counter::Tx,
        Counter::Redirect,
        Counter::PassNoNeigh,
        Counter::PassNotVip,
        Counter::PassNotIp,
        Counter::PassFragment,
        Counter::PassBadL2,
        Counter::PassBadL3,
        Counter::PassBadL4,
        Counter::PassOtherL4,
        Counter::PassIcmpNotVip,
        Counter::ConntrackHit,
        Counter::ConntrackMiss,
        Counter::FlowCreated,
        Counter::FlowInsertFailed,
        Counter::IcmpSteered,
        Counter::DropNoBackend,
        Counter::DropEncap,
        Counter::DropNoRoute,
        Counter::PassEdge,
        Counter::DropMtu,
        Counter::DropProxy,
        Counter::DropInternal,
        Counter::TxRstClosed,
        Counter::PassEdgeClosed,
        Counter::NextHopCached,
        Counter::NextHopFib,
    ];

    /// Whether `sluice_xdp` drops the packet for this reason (all others pass it to the stack,
    /// or are not final verdicts).
    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Counter::DropNoBackend
                | Counter::DropEncap
                | Counter::DropNoRoute
                | Counter::DropMtu
                | Counter::DropProxy
                | Counter::DropInternal
        )
    }

    /// Stable `snake_case` name for metrics and CLI output.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Tx => "tx",
            Counter::Redirect => "redirect",
            Counter::PassNoNeigh => "pass_no_neigh",
            Counter::PassNotVip => "pass_not_vip",
            Counter::PassNotIp => "pass_not_ip",
            Counter::PassFragment => "pass_fragment",
            Counter::PassBadL2 => "pass_bad_l2",
            Counter::PassBadL3 => "pass_bad_l3",
            Counter::PassBadL4 => "pass_bad_l4",
            Counter::PassOtherL4 => "pass_other_l4",
            Counter::PassIcmpNotVip => "pass_icmp_not_vip",
            Counter::ConntrackHit => "conntrack_hit",
            Counter::ConntrackMiss => "conntrack_miss",
            Counter::FlowCreated => "flow_created",
            Counter::FlowInsertFailed => "flow_insert_failed",
            Counter::IcmpSteered => "icmp_steered",
            Counter::DropNoBackend => "drop_no_backend",
            Counter::DropEncap => "drop_encap",
            Counter::DropNoRoute => "drop_no_route",
            Counter::PassEdge => "pass_edge",
            Counter::DropMtu => "drop_mtu",
            Counter::DropProxy => "drop_proxy",
            Counter::DropInternal => "drop_internal",
            Counter::TxRstClosed => "tx_rst_closed",
            Counter::PassEdgeClosed => "pass_edge_closed",
            Counter::NextHopCached => "next_hop_cached",
            Counter::NextHopFib => "next_hop_fib",
        }
    }
}

/// Counters of `sluice_decap`, index into `sluice_decap_counters_v1`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapCounter {
    /// Outer header stripped, inner packet passed up.
    Decapsulated = 0,
    /// Not a tunnel packet: passed unchanged.
    PassNotTunnel,
    /// Tunnel packet whose inner destination is not a local VIP: passed unchanged.
    PassNotLocalVip,
    /// Truncated or malformed: passed unchanged (the stack drops it).
    PassMalformed,
    /// Shrinking the packet failed.
    DropAdjust,
}

impl DecapCounter {
    pub const COUNT: u32 = DecapCounter::DropAdjust as u32 + 1;
    pub const ALL: [DecapCounter; DecapCounter::COUNT as usize] = [
        DecapCounter::Decapsulated,
        DecapCounter::PassNotTunnel,
        DecapCounter::PassNotLocalVip,
        DecapCounter::PassMalformed,
        DecapCounter::DropAdjust,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            DecapCounter::Decapsulated => "decapsulated",
            DecapCounter::PassNotTunnel => "pass_not_tunnel",
            DecapCounter::PassNotLocalVip => "pass_not_local_vip",
            DecapCounter::PassMalformed => "pass_malformed",
            DecapCounter::DropAdjust => "drop_adjust",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Counter;

    #[test]
    fn all_lists_every_counter_at_its_index_once() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i, "{c:?} out of place in Counter::ALL");
        }
    }

    #[test]
    fn names_are_unique_and_say_their_kind() {
        for (i, a) in Counter::ALL.iter().enumerate() {
            for b in &Counter::ALL[i + 1..] {
                assert_ne!(a.name(), b.name(), "{a:?} and {b:?} share a name");
            }
            // Userspace sorts counters into drops, passes and events by these.
            assert_eq!(a.is_drop(), a.name().starts_with("drop_"), "{a:?}");
        }
        assert_eq!(Counter::TxRstClosed.name(), "tx_rst_closed");
        assert_eq!(Counter::PassEdgeClosed.name(), "pass_edge_closed");
    }
}
