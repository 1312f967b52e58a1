//! Header parsing: Ethernet (+ up to two VLAN tags), IPv4 (with options), IPv6 (bounded walk of
//! extension headers), TCP and UDP. The result is the flow key the rest of the program works on.
//!
//! Anything sluice cannot steer safely is reported as the counter saying why; the caller passes
//! such packets to the stack, which applies its own checks.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    Counter, FlowKey, FAMILY_V4, FAMILY_V6, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

use crate::{
    headers::{addr4, addr6, ETH_LEN, ETH_P_IP, ETH_P_IPV6, IPV4_LEN, IPV6_LEN},
    icmp,
    maps::SCRATCH,
    packet::{len, ptr_at, read, read_u16_be},
    parsed::Parsed,
};

const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
/// IPv6 extension headers followed before giving up (RFC 8200 recommends few, attackers send many).
const MAX_EXT_HEADERS: usize = 4;

/// A TCP/UDP segment's flags and payload.
struct L4 {
    tcp_flags: u8,
    tcp_seq: u32,
    payload_off: usize,
}

#[inline(always)]
const fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// Offset of the L3 header and its ethertype.
#[inline(always)]
pub fn l2(ctx: &XdpContext) -> Result<(usize, u16), Counter> {
    let mut proto = read_u16_be(ctx, 12).map_err(|_| Counter::PassBadL2)?;
    let mut off = ETH_LEN;
    // Two tags at most (802.1ad outer + 802.1Q inner), unrolled for the verifier.
    if is_vlan(proto) {
        proto = read_u16_be(ctx, off + 2).map_err(|_| Counter::PassBadL2)?;
        off += 4;
        if is_vlan(proto) {
            proto = read_u16_be(ctx, off + 2).map_err(|_| Counter::PassBadL2)?;
            off += 4;
            if is_vlan(proto) {
                return Err(Counter::PassBadL2);
            }
        }
    }
    Ok((off, proto))
}

/// Parses the packet into this CPU's scratch slot: kept off the 512-byte stack, which the
/// steering path fills.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<&'static Parsed, Counter> {
    let out = SCRATCH.get_ptr_mut(0).ok_or(Counter::DropInternal)?;
    // SAFETY: a per-CPU slot that only this program run uses until it returns. The parsers
    // fill it field by field (building a `Parsed` and copying it in cost a copy per packet).
    let out = unsafe { &mut *out };
    let (l3_off, ethertype) = l2(ctx)?;
    match ethertype {
        ETH_P_IP => ipv4(ctx, l3_off, out),
        ETH_P_IPV6 => ipv6(ctx, l3_off, out),
        _ => Err(Counter::PassNotIp),
    }?;
    Ok(out)
}

/// Stores the key in the scratch slot. Volatile, so LLVM keeps the word stores: merged, its
/// zero words become a `memset` call, a byte loop in BPF, on every packet.
#[inline(always)]
fn set_key(out: &mut Parsed, key: FlowKey) {
    // SAFETY: `out.key` is a valid, aligned field.
    unsafe { core::ptr::write_volatile(&raw mut out.key, key) };
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize, out: &mut Parsed) -> Result<(), Counter> {
    let h: [u8; IPV4_LEN] = read(ctx, l3).map_err(|_| Counter::PassBadL3)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < IPV4_LEN {
        return Err(Counter::PassBadL3);
    }
    let ip_len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    // A total length below the header or beyond the frame is a lie; the options must be there.
    if ip_len < ihl || l3 + ip_len > len(ctx) || ptr_at::<[u8; 2]>(ctx, l3 + ihl - 2).is_err() {
        return Err(Counter::PassBadL3);
    }
    if u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return Err(Counter::PassFragment);
    }
    let ip = Ip {
        l3,
        ip_len,
        l4: l3 + ihl,
        tos: h[1],
    };
    segment(ctx, out, &ip, h[9] == PROTO_ICMP, icmp::quoted_v4, || {
        FlowKey {
            src_be: addr4([h[12], h[13], h[14], h[15]]),
            dst_be: addr4([h[16], h[17], h[18], h[19]]),
            sport_be: 0,
            dport_be: 0,
            proto: h[9],
            family: FAMILY_V4,
            _pad: [0, 0],
        }
    })
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize, out: &mut Parsed) -> Result<(), Counter> {
    let h: [u8; IPV6_LEN] = read(ctx, l3).map_err(|_| Counter::PassBadL3)?;
    if h[0] >> 4 != 6 {
        return Err(Counter::PassBadL3);
    }
    let ip_len = IPV6_LEN + usize::from(u16::from_be_bytes([h[4], h[5]]));
    if l3 + ip_len > len(ctx) {
        return Err(Counter::PassBadL3);
    }
    let end = l3 + ip_len;
    let mut nh = h[6];
    let mut l4 = l3 + IPV6_LEN;
    for _ in 0..MAX_EXT_HEADERS {
        let step = match nh {
            // Hop-by-hop, routing, destination options: length in 8-octet units, not counting
            // the first 8.
            0 | 43 | 60 => {
                let e: [u8; 2] = read(ctx, l4).map_err(|_| Counter::PassBadL3)?;
                nh = e[0];
                (usize::from(e[1]) + 1) * 8
            }
            // Authentication header: length in 4-octet units, minus 2.
            51 => {
                let e: [u8; 2] = read(ctx, l4).map_err(|_| Counter::PassBadL3)?;
                nh = e[0];
                (usize::from(e[1]) + 2) * 4
            }
            44 => return Err(Counter::PassFragment),
            _ => break,
        };
        l4 += step;
        if l4 > end {
            return Err(Counter::PassBadL3);
        }
    }
    if matches!(nh, 0 | 43 | 44 | 51 | 60) {
        // More extension headers than we follow.
        return Err(Counter::PassBadL3);
    }
    let ip = Ip {
        l3,
        ip_len,
        l4,
        tos: (h[0] << 4) | (h[1] >> 4),
    };
    segment(ctx, out, &ip, nh == PROTO_ICMPV6, icmp::quoted_v6, || {
        FlowKey {
            src_be: addr6(&h, 8),
            dst_be: addr6(&h, 24),
            sport_be: 0,
            dport_be: 0,
            proto: nh,
            family: FAMILY_V6,
            _pad: [0, 0],
        }
    })
}

/// Where an IP header put the rest of the packet, as the IPv4 and IPv6 parsers found it.
struct Ip {
    l3: usize,
    /// Header(s) plus payload.
    ip_len: usize,
    /// Where the L4 header (or the ICMP message) starts.
    l4: usize,
    tos: u8,
}

/// The end both IP parsers share: the flow key (an ICMP error's is the quoted flow's, which
/// `quoted` reads; otherwise `key`'s with the ports filled in) and the segment's fields.
#[inline(always)]
fn segment(
    ctx: &XdpContext,
    out: &mut Parsed,
    ip: &Ip,
    icmp_error: bool,
    quoted: impl FnOnce(&XdpContext, usize, usize) -> Result<FlowKey, Counter>,
    key: impl FnOnce() -> FlowKey,
) -> Result<(), Counter> {
    let end = ip.l3 + ip.ip_len;
    out.icmp_error = icmp_error;
    let seg = if icmp_error {
        set_key(out, quoted(ctx, ip.l4, end)?);
        L4 {
            tcp_flags: 0,
            tcp_seq: 0,
            payload_off: end,
        }
    } else {
        set_key(out, key());
        ports(ctx, &mut out.key, ip.l4, end)?
    };
    out.l3_off = ip.l3;
    out.ip_len = ip.ip_len;
    out.tos = ip.tos;
    out.tcp_flags = seg.tcp_flags;
    out.tcp_seq = seg.tcp_seq;
    out.payload_off = seg.payload_off;
    out.payload_len = end - seg.payload_off;
    Ok(())
}

/// Fills the ports of a TCP or UDP key; returns the TCP flags (0 for UDP) and where the payload
/// starts.
#[inline(always)]
fn ports(ctx: &XdpContext, key: &mut FlowKey, l4: usize, end: usize) -> Result<L4, Counter> {
    let hdr_len = match key.proto {
        PROTO_TCP => 20,
        PROTO_UDP => 8,
        _ => return Err(Counter::PassOtherL4),
    };
    // The L4 header must be inside the IP packet, not only inside the frame.
    if l4 + hdr_len > end {
        return Err(Counter::PassBadL4);
    }
    let p: [u16; 2] = read(ctx, l4).map_err(|_| Counter::PassBadL4)?;
    key.sport_be = p[0];
    key.dport_be = p[1];
    if key.proto != PROTO_TCP {
        return Ok(L4 {
            tcp_flags: 0,
            tcp_seq: 0,
            payload_off: l4 + hdr_len,
        });
    }
    let seq: [u8; 4] = read(ctx, l4 + 4).map_err(|_| Counter::PassBadL4)?;
    let b: [u8; 2] = read(ctx, l4 + 12).map_err(|_| Counter::PassBadL4)?;
    // Data offset: options included, in 32-bit words.
    let doff = usize::from(b[0] >> 4) * 4;
    if doff < hdr_len || l4 + doff > end {
        return Err(Counter::PassBadL4);
    }
    Ok(L4 {
        tcp_flags: b[1],
        tcp_seq: u32::from_be_bytes(seq),
        payload_off: l4 + doff,
    })
}
