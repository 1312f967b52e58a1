//! Builders for test frames: Ethernet (with VLAN tags), IPv4 (with options), IPv6 (with
//! extension headers), TCP, UDP, ICMP and `ICMPv6`, plus the tunnel frame sluice is expected to
//! emit. Everything is written from the RFCs, not from sluice's code, so a test comparing the
//! program's output with these bytes checks the program against an independent model.
//!
//! Checksums are real (internet checksum, with the pseudo headers for TCP, UDP and `ICMPv6`),
//! so the frames are what a real host would send.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A MAC address.
pub type Mac = [u8; 6];

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_NONE: u8 = 59;
pub const IPPROTO_DSTOPTS: u8 = 60;
pub const IPPROTO_SCTP: u8 = 132;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// IPv4 "more fragments" flag and "don't fragment" flag in the flags/offset word.
pub const IP_MF: u16 = 0x2000;
pub const IP_DF: u16 = 0x4000;

/// Ones' complement sum of `data` as big-endian 16-bit words (odd length padded with zero),
/// folded to 16 bits, starting from `initial` (RFC 1071).
pub fn ones_complement_sum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = u64::from(initial);
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop above folded the sum into 16 bits.
    u16::try_from(sum).unwrap_or(u16::MAX)
}

/// The internet checksum of `data`: the ones' complement of the ones' complement sum.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(0, data)
}

/// Whether `data`, checksum field included, verifies (its ones' complement sum is 0xffff).
pub fn checksum_ok(data: &[u8]) -> bool {
    ones_complement_sum(0, data) == 0xffff
}

fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.push(0);
            p.push(proto);
            p.extend_from_slice(&u16_len(len).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => panic!("pseudo header of mixed families {src} / {dst}"),
    }
    p
}

/// Checksum of an L4 segment including the pseudo header; `segment` has a zero checksum field.
fn l4_checksum(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8]) -> u16 {
    let pseudo = pseudo_header(src, dst, proto, segment.len());
    let partial = ones_complement_sum(0, &pseudo);
    !ones_complement_sum(u32::from(partial), segment)
}

fn u16_len(len: usize) -> u16 {
    u16::try_from(len).expect("length fits 16 bits")
}

/// An Ethernet frame (no FCS, no padding).
pub fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    ethernet_vlan(dst, src, &[], ethertype, payload)
}

/// An Ethernet frame with VLAN tags, outermost first: each tag is `(tpid, tci)`.
pub fn ethernet_vlan(
    dst: Mac,
    src: Mac,
    tags: &[(u16, u16)],
    ethertype: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 4 * tags.len() + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    for &(tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// `frame` padded with zeros to the 60-byte Ethernet minimum (without FCS).
pub fn pad_to_min(mut frame: Vec<u8>) -> Vec<u8> {
    if frame.len() < 60 {
        frame.resize(60, 0);
    }
    frame
}

/// An ARP request (`who-has target tell sender`) as an Ethernet payload.
pub fn arp_request(sender_mac: Mac, sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    a.extend_from_slice(&ETH_P_IP.to_be_bytes());
    a.extend_from_slice(&[6, 4]);
    a.extend_from_slice(&1u16.to_be_bytes()); // request
    a.extend_from_slice(&sender_mac);
    a.extend_from_slice(&sender.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&target.octets());
    a
}

/// An IPv4 header; `packet` computes total length and header checksum.
#[derive(Debug, Clone)]
pub struct Ipv4 {
    pub tos: u8,
    pub id: u16,
    /// Flags and fragment offset (in 8-byte units), e.g. `IP_DF` or `IP_MF | 3`.
    pub frag: u16,
    pub ttl: u8,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Options, a multiple of 4 bytes, at most 40.
    pub options: Vec<u8>,
}

impl Ipv4 {
    pub fn new(proto: u8, src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self {
            tos: 0,
            id: 0x1234,
            frag: IP_DF,
            ttl: 64,
            proto,
            src,
            dst,
            options: Vec::new(),
        }
    }

    pub fn tos(mut self, tos: u8) -> Self {
        self.tos = tos;
        self
    }

    pub fn frag(mut self, frag: u16) -> Self {
        self.frag = frag;
        self
    }

    pub fn id(mut self, id: u16) -> Self {
        self.id = id;
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Self {
        self.ttl = ttl;
        self
    }

    /// Options padded with end-of-list bytes to a multiple of 4.
    pub fn options(mut self, options: &[u8]) -> Self {
        self.options = options.to_vec();
        while !self.options.len().is_multiple_of(4) {
            self.options.push(0);
        }
        assert!(self.options.len() <= 40, "at most 40 bytes of IPv4 options");
        self
    }

    /// The header (with checksum) for a payload of `payload_len` bytes.
    pub fn header(&self, payload_len: usize) -> Vec<u8> {
        let hlen = 20 + self.options.len();
        let ihl = u8::try_from(hlen / 4).expect("IHL fits");
        let mut h = Vec::with_capacity(hlen);
        h.push(0x40 | ihl);
        h.push(self.tos);
        h.extend_from_slice(&u16_len(hlen + payload_len).to_be_bytes());
        h.extend_from_slice(&self.id.to_be_bytes());
        h.extend_from_slice(&self.frag.to_be_bytes());
        h.push(self.ttl);
        h.push(self.proto);
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h.extend_from_slice(&self.options);
        let c = internet_checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    /// Header plus payload.
    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut p = self.header(payload.len());
        p.extend_from_slice(payload);
        p
    }
}

/// An IPv6 header; `packet` computes the payload length. Extension headers are part of the
/// payload (see [`ext_header`] and [`fragment_header`]); `next_header` names the first one.
#[derive(Debug, Clone)]
pub struct Ipv6 {
    pub traffic_class: u8,
    pub flow_label: u32,
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
}

impl Ipv6 {
    pub fn new(next_header: u8, src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self {
            traffic_class: 0,
            flow_label: 0x1_2345,
            next_header,
            hop_limit: 64,
            src,
            dst,
        }
    }

    pub fn traffic_class(mut self, tc: u8) -> Self {
        self.traffic_class = tc;
        self
    }

    pub fn flow_label(mut self, label: u32) -> Self {
        self.flow_label = label & 0xf_ffff;
        self
    }

    pub fn header(&self, payload_len: usize) -> Vec<u8> {
        let mut h = Vec::with_capacity(40);
        let vtf =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0xf_ffff);
        h.extend_from_slice(&vtf.to_be_bytes());
        h.extend_from_slice(&u16_len(payload_len).to_be_bytes());
        h.push(self.next_header);
        h.push(self.hop_limit);
        h.extend_from_slice(&self.src.octets());
        h.extend_from_slice(&self.dst.octets());
        h
    }

    pub fn packet(&self, payload: &[u8]) -> Vec<u8> {
        let mut p = self.header(payload.len());
        p.extend_from_slice(payload);
        p
    }
}

/// A hop-by-hop or destination options header of `len` bytes (a multiple of 8, >= 8) filled
/// with a `PadN` option, or a routing header (type 0 layout, no segments left) when `kind` is
/// `IPPROTO_ROUTING`. `next` is the header that follows.
pub fn ext_header(kind: u8, next: u8, len: usize) -> Vec<u8> {
    assert!(
        len >= 8 && len.is_multiple_of(8) && len <= 2048,
        "extension header length {len}"
    );
    let mut e = vec![0u8; len];
    e[0] = next;
    e[1] = u8::try_from(len / 8 - 1).expect("length fits");
    if kind == IPPROTO_ROUTING {
        e[2] = 4; // routing type (SRH); segments left 0, so it is skipped as-is
        e[3] = 0;
    } else {
        // PadN covering the rest of the header.
        e[2] = 1;
        e[3] = u8::try_from(len - 4).expect("padding fits");
    }
    e
}

/// An IPv6 fragment header: `offset` in 8-byte units, `more` fragments flag.
pub fn fragment_header(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(8);
    f.push(next);
    f.push(0);
    f.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f
}

/// A TCP segment (20-byte header, no options) with a valid checksum for `src` -> `dst`.
/// Initial sequence number of every flow [`tcp`] builds.
pub const ISN: u32 = 0x0100_0000;

/// A segment of a flow whose SYN had sequence number [`ISN`]: the SYN carries `ISN`, every
/// other segment `ISN + 1`, i.e. starts the stream (PROXY v2 policing judges the segment that
/// starts the stream; use [`tcp_seq`] for later data).
pub fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let seq = if flags & TCP_SYN != 0 { ISN } else { ISN + 1 };
    tcp_seq(src, dst, sport, dport, flags, seq, 0, payload)
}

/// A [`tcp`] segment from `src` to `dst` in its IPv4 or IPv6 packet, in an Ethernet frame from
/// `src_mac` to `dst_mac`: what a client sends a gateway.
///
/// # Panics
/// When `src` and `dst` are of different families.
#[allow(clippy::too_many_arguments)]
pub fn tcp_frame(
    dst_mac: Mac,
    src_mac: Mac,
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let seg = tcp(src, dst, sport, dport, flags, payload);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ethernet(
            dst_mac,
            src_mac,
            ETH_P_IP,
            &Ipv4::new(IPPROTO_TCP, s, d).packet(&seg),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => ethernet(
            dst_mac,
            src_mac,
            ETH_P_IPV6,
            &Ipv6::new(IPPROTO_TCP, s, d).packet(&seg),
        ),
        _ => panic!("{src} -> {dst}: one family per packet"),
    }
}

/// Like [`tcp`] with explicit sequence and acknowledgement numbers.
#[allow(clippy::too_many_arguments)]
pub fn tcp_seq(
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    payload: &[u8],
) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push(5 << 4);
    t.push(flags);
    t.extend_from_slice(&64240u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    t.extend_from_slice(payload);
    let c = l4_checksum(src, dst, IPPROTO_TCP, &t);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

/// A UDP datagram with a valid checksum.
pub fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&u16_len(8 + payload.len()).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    let mut c = l4_checksum(src, dst, IPPROTO_UDP, &u);
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
    u
}

/// An `ICMPv4` message: type, code, the 4 "rest of header" bytes and the body.
pub fn icmp4(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + body.len());
    m.extend_from_slice(&[ty, code, 0, 0]);
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = internet_checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// An `ICMPv6` message with its pseudo-header checksum.
pub fn icmp6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ty: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut m = Vec::with_capacity(8 + body.len());
    m.extend_from_slice(&[ty, code, 0, 0]);
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = l4_checksum(IpAddr::V6(src), IpAddr::V6(dst), IPPROTO_ICMPV6, &m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// The outer (tunnel) header sluice is specified to write, and the frame around it.
#[derive(Debug, Clone)]
pub struct Tunnel {
    /// Ethernet destination and source of the emitted frame.
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// Outer source and destination (same family).
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Inner DSCP/ECN byte (IPv4 TOS or IPv6 traffic class), copied to the outer header.
    pub tos: u8,
    /// IPv6 outer only: the flow label.
    pub flow_label: u32,
}

/// Hop limit / TTL of the outer header.
pub const OUTER_TTL: u8 = 64;

impl Tunnel {
    /// The whole frame: Ethernet + outer IP + `inner` (an IPv4 or IPv6 packet, no padding).
    pub fn frame(&self, inner: &[u8]) -> Vec<u8> {
        let inner_proto = match inner.first().map(|b| b >> 4) {
            Some(4) => IPPROTO_IPIP,
            Some(6) => IPPROTO_IPV6,
            other => panic!("inner packet of IP version {other:?}"),
        };
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let outer = Ipv4 {
                    tos: self.tos,
                    id: 0,
                    frag: 0,
                    ttl: OUTER_TTL,
                    proto: inner_proto,
                    src,
                    dst,
                    options: Vec::new(),
                };
                ethernet(self.dst_mac, self.src_mac, ETH_P_IP, &outer.packet(inner))
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let outer = Ipv6 {
                    traffic_class: self.tos,
                    flow_label: self.flow_label & 0xf_ffff,
                    next_header: inner_proto,
                    hop_limit: OUTER_TTL,
                    src,
                    dst,
                };
                ethernet(self.dst_mac, self.src_mac, ETH_P_IPV6, &outer.packet(inner))
            }
            _ => panic!("tunnel endpoints of mixed families"),
        }
    }
}

/// The DSCP/ECN byte of an IPv4 or IPv6 packet.
pub fn ip_tos(packet: &[u8]) -> u8 {
    match packet[0] >> 4 {
        4 => packet[1],
        6 => (packet[0] << 4) | (packet[1] >> 4),
        v => panic!("IP version {v}"),
    }
}

/// Hex dump of `a` and `b` side by side from the first difference, for failure messages.
pub fn diff(a: &[u8], b: &[u8]) -> String {
    let first = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let show = |s: &[u8]| {
        let start = first.saturating_sub(first % 16);
        let end = (start + 48).min(s.len());
        s.get(start..end)
            .unwrap_or(&[])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "lengths {} vs {}, first difference at byte {first}; from byte {}:\n   got {}\n  want {}",
        a.len(),
        b.len(),
        first - first % 16,
        show(a),
        show(b)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2 (folded).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(0, &data), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn checksum_known_ipv4_header() {
        // The classic example header (Wikipedia "IPv4 header checksum"): checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(internet_checksum(&h), 0xb861);
        h[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(checksum_ok(&h));
    }

    #[test]
    fn checksum_odd_length() {
        assert_eq!(ones_complement_sum(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }

    #[test]
    fn builders_produce_valid_checksums() {
        let (s, d) = (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(198, 19, 0, 10));
        let seg = tcp(s.into(), d.into(), 40000, 80, TCP_SYN, b"");
        let pkt = Ipv4::new(IPPROTO_TCP, s, d)
            .options(&[1, 1, 1, 1])
            .packet(&seg);
        assert_eq!(pkt[0], 0x46);
        assert!(checksum_ok(&pkt[..24]));
        let mut pseudo = pseudo_header(s.into(), d.into(), IPPROTO_TCP, seg.len());
        pseudo.extend_from_slice(&seg);
        assert!(checksum_ok(&pseudo));

        let (s6, d6) = (
            "2001:db8::2".parse().unwrap(),
            "2001:db8:ff::10".parse().unwrap(),
        );
        let msg = icmp6(s6, d6, 128, 0, [0, 1, 0, 1], b"ping");
        let mut pseudo = pseudo_header(IpAddr::V6(s6), IpAddr::V6(d6), IPPROTO_ICMPV6, msg.len());
        pseudo.extend_from_slice(&msg);
        assert!(checksum_ok(&pseudo));
    }

    #[test]
    fn tunnel_frame_layout() {
        let inner = Ipv4::new(
            IPPROTO_UDP,
            Ipv4Addr::new(1, 2, 3, 4),
            Ipv4Addr::new(5, 6, 7, 8),
        )
        .tos(0xb8)
        .packet(&[0; 8]);
        let t = Tunnel {
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            src: IpAddr::V4(Ipv4Addr::new(198, 19, 255, 7)),
            dst: IpAddr::V4(Ipv4Addr::new(198, 18, 10, 2)),
            tos: ip_tos(&inner),
            flow_label: 0,
        };
        let f = t.frame(&inner);
        assert_eq!(f.len(), 14 + 20 + inner.len());
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(&f[14..20], &[0x45, 0xb8, 0, 48, 0, 0]);
        assert_eq!(f[14 + 8], 64);
        assert_eq!(f[14 + 9], IPPROTO_IPIP);
        assert!(checksum_ok(&f[14..34]));
        assert_eq!(&f[34..], &inner[..]);
        let v6 =
            Ipv6::new(IPPROTO_NONE, Ipv6Addr::LOCALHOST, Ipv6Addr::LOCALHOST).traffic_class(0xa5);
        assert_eq!(ip_tos(&v6.packet(&[])), 0xa5);
    }
}
