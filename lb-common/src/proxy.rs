//! PROXY protocol (v1 text, v2 binary): the wire constants and the verdicts the kernel and
//! userspace share.
//!
//! `sluice_xdp` judges the first payload segment of a flow with its own bounds-checked reads and
//! records one [`ProxyOutcome`] per flow. The userspace parser (`parse`, feature `user`) reads
//! whole headers, TLVs included, for the edge listener; [`parse::segment_verdict`] is its twin of
//! the kernel's judgement, and a differential test holds the two to the same answers.

#[cfg(feature = "user")]
pub mod parse;

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = [
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
];
/// What every v1 header starts with.
pub const V1_PREFIX: [u8; 6] = *b"PROXY ";
/// Signature, version/command, family/protocol and the 16-bit length of what follows.
pub const V2_FIXED_LEN: usize = 16;
pub const V2_VERSION: u8 = 2;
pub const V2_CMD_LOCAL: u8 = 0;
pub const V2_CMD_PROXY: u8 = 1;
/// Family (high nibble) and transport (low nibble) byte values.
pub const V2_FAM_UNSPEC: u8 = 0x00;
pub const V2_FAM_TCP4: u8 = 0x11;
pub const V2_FAM_UDP4: u8 = 0x12;
pub const V2_FAM_TCP6: u8 = 0x21;
pub const V2_FAM_UDP6: u8 = 0x22;
pub const V2_FAM_UNIX_STREAM: u8 = 0x31;
pub const V2_FAM_UNIX_DGRAM: u8 = 0x32;
/// Address block sizes: two addresses and two ports.
pub const V2_ADDR_LEN_INET: usize = 12;
pub const V2_ADDR_LEN_INET6: usize = 36;
pub const V2_ADDR_LEN_UNIX: usize = 216;

/// `FlowEntry::proxy_state`: where a flow stands with its VIP's PROXY and client policy.
/// No policy applies (PROXY off, no client lists).
pub const FLOW_UNPOLICED: u8 = 0;
/// Recorded on the SYN; the verdict comes with the first payload segment.
pub const FLOW_AWAIT_HEADER: u8 = 1;
pub const FLOW_ALLOWED: u8 = 2;
/// Every packet of the flow is dropped, retransmissions included.
pub const FLOW_REFUSED: u8 = 3;

/// What the policy decided for one flow; counted per VIP and kept in the flow's conntrack entry.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProxyOutcome {
    /// Trusted sender, PROXY command: the real client is recorded.
    Accepted = 0,
    /// Trusted sender, LOCAL command (the upstream's own health check): no client recorded.
    Local,
    /// No header, allowed under `optional`; the TCP peer is the client.
    Absent,
    /// Conntrack had no entry for a mid-stream segment without a header (evicted, or the SYN
    /// went to another gateway): steered without a verdict. Under `required` only from a
    /// trusted proxy; anyone else's is `Missing`. Nothing is recorded for such segments, so
    /// untracked ones are counted segment by segment, not per flow.
    Midstream,
    /// No header under `required`.
    Missing,
    /// A header (v1, v2 or the start of one) from a sender outside `trusted_proxies`.
    Untrusted,
    /// v2 signature with a version other than 2.
    BadVersion,
    /// v2 command other than LOCAL or PROXY.
    BadCommand,
    /// PROXY command with a family other than TCP over IPv4 or IPv6 (UNSPEC, UDP, UNIX).
    BadFamily,
    /// The length field is shorter than the family's address block.
    ShortAddress,
    /// The header does not fit in the first segment (senders write it in one).
    Truncated,
    /// A v1 text header: the kernel cannot record its client, so it never reaches a backend.
    V1,
    /// The client (real or, without a header, the TCP peer) is refused by `deny_clients` or
    /// not in `allow_clients`.
    ClientDenied,
    /// A segment whose payload starts before the stream's first byte: the backend's TCP would
    /// trim the overlap and could find a header behind it. No real sender does this.
    Overlap,
}

impl ProxyOutcome {
    pub const COUNT: u32 = ProxyOutcome::Overlap as u32 + 1;

    pub const ALL: [ProxyOutcome; ProxyOutcome::COUNT as usize] = [
        ProxyOutcome::Accepted,
        ProxyOutcome::Local,
        ProxyOutcome::Absent,
        ProxyOutcome::Midstream,
        ProxyOutcome::Missing,
        ProxyOutcome::Untrusted,
        ProxyOutcome::BadVersion,
        ProxyOutcome::BadCommand,
        ProxyOutcome::BadFamily,
        ProxyOutcome::ShortAddress,
        ProxyOutcome::Truncated,
        ProxyOutcome::V1,
        ProxyOutcome::ClientDenied,
        ProxyOutcome::Overlap,
    ];

    /// Whether the flow is dropped.
    pub const fn refuses(self) -> bool {
        !matches!(
            self,
            ProxyOutcome::Accepted
                | ProxyOutcome::Local
                | ProxyOutcome::Absent
                | ProxyOutcome::Midstream
        )
    }

    /// Stable `snake_case` name for metrics and CLI output.
    pub const fn name(self) -> &'static str {
        match self {
            ProxyOutcome::Accepted => "accepted",
            ProxyOutcome::Local => "local",
            ProxyOutcome::Absent => "absent",
            ProxyOutcome::Midstream => "midstream",
            ProxyOutcome::Missing => "missing",
            ProxyOutcome::Untrusted => "untrusted",
            ProxyOutcome::BadVersion => "bad_version",
            ProxyOutcome::BadCommand => "bad_command",
            ProxyOutcome::BadFamily => "bad_family",
            ProxyOutcome::ShortAddress => "short_address",
            ProxyOutcome::Truncated => "truncated",
            ProxyOutcome::V1 => "v1",
            ProxyOutcome::ClientDenied => "client_denied",
            ProxyOutcome::Overlap => "overlap",
        }
    }

    /// The outcome stored as `FlowEntry::proxy_outcome`, if it is one.
    pub const fn from_u8(v: u8) -> Option<ProxyOutcome> {
        if (v as u32) < ProxyOutcome::COUNT {
            Some(ProxyOutcome::ALL[v as usize])
        } else {
            None
        }
    }

    /// Index into the per-VIP outcome counters (`sluice_proxy_stats_v1`).
    #[inline(always)]
    pub const fn stats_index(self, vip_index: u32) -> u32 {
        vip_index * ProxyOutcome::COUNT + self as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_and_have_unique_names() {
        for (i, o) in ProxyOutcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i);
            assert_eq!(ProxyOutcome::from_u8(u8::try_from(i).unwrap()), Some(*o));
        }
        assert_eq!(
            ProxyOutcome::from_u8(u8::try_from(ProxyOutcome::COUNT).unwrap()),
            None
        );
        let mut names: [&str; ProxyOutcome::COUNT as usize] =
            ProxyOutcome::ALL.map(ProxyOutcome::name);
        names.sort_unstable();
        assert!(names.windows(2).all(|w| w[0] != w[1]));
    }
}
