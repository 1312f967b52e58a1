//! `sluice_decap`: on a backend, strips the IPIP / IP6IP6 header of packets whose inner
//! destination is a VIP this host serves, and passes the inner packet up the stack. For hosts
//! without the ipip / `ip6_tunnel` modules, and cheaper than them.
//!
//! Only untagged frames are handled: stripping would otherwise change which VLAN device the
//! kernel delivers the packet to.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_head, programs::XdpContext};
use lb_common::{DecapCounter, DecapKey, FAMILY_V4, FAMILY_V6, PROTO_IPIP, PROTO_IPV6_IN_IP};

use crate::{
    headers::{addr4, addr6, ETH_LEN, ETH_P_IP, ETH_P_IPV6, IPV4_LEN, IPV6_LEN},
    log,
    maps::DECAP_VIPS,
    packet::{read, read_u16_be, write},
    stats::count_decap,
};

pub fn run(ctx: &XdpContext) -> Result<u32, ()> {
    match strip(ctx) {
        Ok(()) => {
            count_decap(DecapCounter::Decapsulated);
            Ok(xdp_action::XDP_PASS)
        }
        Err(DecapCounter::DropAdjust) => {
            count_decap(DecapCounter::DropAdjust);
            log::decap_dropped(ctx, DecapCounter::DropAdjust);
            Ok(xdp_action::XDP_DROP)
        }
        Err(c) => {
            count_decap(c);
            Ok(xdp_action::XDP_PASS)
        }
    }
}

#[inline(always)]
fn strip(ctx: &XdpContext) -> Result<(), DecapCounter> {
    let bad = |_| DecapCounter::PassMalformed;
    let (outer_len, inner_proto) = match read_u16_be(ctx, 12).map_err(bad)? {
        ETH_P_IP => {
            let h: [u8; IPV4_LEN] = read(ctx, ETH_LEN).map_err(bad)?;
            if !matches!(h[9], PROTO_IPIP | PROTO_IPV6_IN_IP) {
                return Err(DecapCounter::PassNotTunnel);
            }
            let ihl = usize::from(h[0] & 0x0f) * 4;
            // Outer fragments cannot be stripped one by one; the stack drops them.
            if h[0] >> 4 != 4 || ihl < IPV4_LEN || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
                return Err(DecapCounter::PassMalformed);
            }
            (ihl, h[9])
        }
        ETH_P_IPV6 => {
            let h: [u8; 8] = read(ctx, ETH_LEN).map_err(bad)?;
            if !matches!(h[6], PROTO_IPIP | PROTO_IPV6_IN_IP) {
                return Err(DecapCounter::PassNotTunnel);
            }
            if h[0] >> 4 != 6 {
                return Err(DecapCounter::PassMalformed);
            }
            (IPV6_LEN, h[6])
        }
        _ => return Err(DecapCounter::PassNotTunnel),
    };
    let inner = ETH_LEN + outer_len;
    let (key, ethertype) = if inner_proto == PROTO_IPIP {
        let h: [u8; IPV4_LEN] = read(ctx, inner).map_err(bad)?;
        if h[0] >> 4 != 4 {
            return Err(DecapCounter::PassMalformed);
        }
        let a = addr4([h[16], h[17], h[18], h[19]]);
        (
            DecapKey {
                addr_be: a,
                family: FAMILY_V4,
                _pad: [0; 3],
            },
            ETH_P_IP,
        )
    } else {
        let h: [u8; IPV6_LEN] = read(ctx, inner).map_err(bad)?;
        if h[0] >> 4 != 6 {
            return Err(DecapCounter::PassMalformed);
        }
        (
            DecapKey {
                addr_be: addr6(&h, 24),
                family: FAMILY_V6,
                _pad: [0; 3],
            },
            ETH_P_IPV6,
        )
    };
    // SAFETY: lookup only; the value is not read.
    if unsafe { DECAP_VIPS.get(&key) }.is_none() {
        return Err(DecapCounter::PassNotLocalVip);
    }
    // Move the Ethernet header next to the inner packet, then drop the outer header.
    let macs: [u8; 12] = read(ctx, 0).map_err(bad)?;
    write(ctx, outer_len, macs).map_err(bad)?;
    write(ctx, outer_len + 12, ethertype.to_be()).map_err(bad)?;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        reason = "<= 60"
    )]
    // SAFETY: shrinking by the outer header, which the reads above proved is in the packet.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer_len as i32) } != 0 {
        return Err(DecapCounter::DropAdjust);
    }
    Ok(())
}
