//! The parsed packet: what `parse` finds and every later stage reads. Its own module so the
//! maps (`SCRATCH` holds one per CPU) and the parsers depend on it, not on each other.

use lb_common::FlowKey;

/// A packet sluice may steer.
pub struct Parsed {
    /// Offset of the IP header (after Ethernet and VLAN tags).
    pub l3_off: usize,
    /// IP total length: header(s) plus payload, without Ethernet padding.
    pub ip_len: usize,
    /// The flow as the client sent it (for ICMP errors: the flow the quoted packet belongs to).
    pub key: FlowKey,
    /// DSCP/ECN byte, copied to the outer header.
    pub tos: u8,
    pub tcp_flags: u8,
    /// TCP sequence number (0 for UDP and ICMP errors).
    pub tcp_seq: u32,
    /// Where the TCP/UDP payload starts and how long it is (0 for ICMP errors).
    pub payload_off: usize,
    pub payload_len: usize,
    /// The key came from an ICMP error's quoted packet.
    pub icmp_error: bool,
}
