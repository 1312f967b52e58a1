//! ICMP and ICMPv6 errors about a VIP flow (packet too big, unreachable, time exceeded).
//!
//! With direct server return the backend sends from the VIP, so a router on the return path
//! reports errors to the VIP and they arrive at the gateway. The quoted packet is the backend's
//! reply (VIP -> client); reversing it gives the client's flow key, which leads to the same
//! backend as the flow itself. Without this, path MTU discovery breaks for every VIP flow.

use aya_ebpf::programs::XdpContext;
use lb_common::{Counter, FlowKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

use crate::{
    headers::{addr4, addr6, IPV4_LEN, IPV6_LEN},
    packet::read,
};

/// ICMP header (type, code, checksum, 4 bytes of rest) before the quoted packet.
const ICMP_LEN: usize = 8;

/// The reversed flow key of the packet quoted by an ICMPv4 error at `l4`.
#[inline(always)]
pub fn quoted_v4(ctx: &XdpContext, l4: usize, end: usize) -> Result<FlowKey, Counter> {
    let [t, _code]: [u8; 2] = read(ctx, l4).map_err(|_| Counter::PassBadL4)?;
    // Destination unreachable (incl. fragmentation needed), time exceeded, parameter problem.
    if !matches!(t, 3 | 11 | 12) {
        return Err(Counter::PassOtherL4);
    }
    let q = l4 + ICMP_LEN;
    let h: [u8; IPV4_LEN] = read(ctx, q).map_err(|_| Counter::PassIcmpNotVip)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || ihl < IPV4_LEN {
        return Err(Counter::PassIcmpNotVip);
    }
    let src = addr4([h[12], h[13], h[14], h[15]]);
    let dst = addr4([h[16], h[17], h[18], h[19]]);
    reversed(ctx, q + ihl, end, h[9], FAMILY_V4, src, dst)
}

/// The reversed flow key of the packet quoted by an ICMPv6 error at `l4`.
#[inline(always)]
pub fn quoted_v6(ctx: &XdpContext, l4: usize, end: usize) -> Result<FlowKey, Counter> {
    let [t, _code]: [u8; 2] = read(ctx, l4).map_err(|_| Counter::PassBadL4)?;
    // Destination unreachable, packet too big, time exceeded, parameter problem.
    if !matches!(t, 1..=4) {
        return Err(Counter::PassOtherL4);
    }
    let q = l4 + ICMP_LEN;
    let h: [u8; IPV6_LEN] = read(ctx, q).map_err(|_| Counter::PassIcmpNotVip)?;
    if h[0] >> 4 != 6 {
        return Err(Counter::PassIcmpNotVip);
    }
    reversed(
        ctx,
        q + IPV6_LEN,
        end,
        h[6],
        FAMILY_V6,
        addr6(&h, 8),
        addr6(&h, 24),
    )
}

#[inline(always)]
fn reversed(
    ctx: &XdpContext,
    ports_off: usize,
    end: usize,
    proto: u8,
    family: u8,
    quoted_src: [u32; 4],
    quoted_dst: [u32; 4],
) -> Result<FlowKey, Counter> {
    if !matches!(proto, PROTO_TCP | PROTO_UDP) || ports_off + 4 > end {
        return Err(Counter::PassIcmpNotVip);
    }
    let p: [u16; 2] = read(ctx, ports_off).map_err(|_| Counter::PassIcmpNotVip)?;
    Ok(FlowKey {
        src_be: quoted_dst,
        dst_be: quoted_src,
        sport_be: p[1],
        dport_be: p[0],
        proto,
        family,
        _pad: [0, 0],
    })
}
