//! IPIP / IP6IP6 (and 4in6 / 6in4) encapsulation toward the backend.
//!
//! The Ethernet header and any VLAN tags are replaced by a fresh Ethernet header and the outer IP
//! header; the inner packet is untouched. The outer source is taken from the configured prefix
//! by flow hash, so a backend's NIC spreads decapsulation across its RSS queues.

use aya_ebpf::{
    helpers::{bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{
    BackendEntry, Counter, Settings, FAMILY_V4, FAMILY_V6, PROTO_IPIP, PROTO_IPV6_IN_IP,
};

use crate::{
    csum,
    headers::{ETH_LEN, ETH_P_IP, ETH_P_IPV6, IPV4_LEN, IPV6_LEN},
    maps::SETTINGS,
    packet::{len, read, write},
    parsed::Parsed,
};

/// Hop limit of the outer header.
const OUTER_TTL: u8 = 64;

/// What the FIB lookup needs to know about the outer header.
pub struct Outer {
    pub family: u8,
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub tot_len: u16,
}

#[inline(always)]
pub fn encap(
    ctx: &XdpContext,
    p: &Parsed,
    backend: &BackendEntry,
    hash: u32,
) -> Result<Outer, Counter> {
    let settings: Settings = *SETTINGS.get(0).ok_or(Counter::DropInternal)?;
    let macs: [u8; 12] = read(ctx, 0).map_err(|_| Counter::DropEncap)?;
    let inner_proto = if p.key.family == FAMILY_V6 {
        PROTO_IPV6_IN_IP
    } else {
        PROTO_IPIP
    };
    let v6 = backend.family == FAMILY_V6;
    let outer_len = if v6 { IPV6_LEN } else { IPV4_LEN };
    let tot_len = outer_len + p.ip_len;
    if tot_len > usize::from(u16::MAX) {
        return Err(Counter::DropEncap);
    }
    // Ethernet padding (and any trailer) after the IP packet must not ride inside the tunnel:
    // it would make the frame longer than the outer header says and than the FIB's MTU check.
    // `black_box` keeps this scalar arithmetic: LLVM would otherwise fold it into pointer math
    // on a register the verifier cannot bound.
    let trailer = core::hint::black_box(len(ctx)) - (p.l3_off + p.ip_len);
    if trailer > 0 {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_possible_wrap,
            reason = "< 64 KiB"
        )]
        // SAFETY: shrinking by bytes the parser proved lie beyond the IP packet.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(trailer as i32)) } != 0 {
            return Err(Counter::DropEncap);
        }
    }
    // Ethernet + VLAN tags (l3_off bytes) become Ethernet + outer header; VLAN tags are dropped
    // because the FIB lookup picks the egress device, which is where the frame will leave.
    #[expect(
        clippy::cast_possible_wrap,
        clippy::cast_possible_truncation,
        reason = "both < 600"
    )]
    let grow = (ETH_LEN + outer_len) as i32 - p.l3_off as i32;
    // SAFETY: the helper checks the headroom itself; all packet pointers are re-derived below.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -grow) } != 0 {
        return Err(Counter::DropEncap);
    }
    let e = |_| Counter::DropEncap;
    write(ctx, 0, macs).map_err(e)?;
    #[expect(
        clippy::cast_possible_truncation,
        reason = "checked against u16::MAX above"
    )]
    let tot_len = tot_len as u16;
    if v6 {
        write(ctx, 12, ETH_P_IPV6.to_be()).map_err(e)?;
        let mut src = settings.src6_base_be;
        src[3] = (src[3] & !settings.src6_host_mask_be) | (hash & settings.src6_host_mask_be);
        let mut h = [0u8; IPV6_LEN];
        // Version 6, the inner traffic class, and the flow hash as flow label (ECMP/RSS input).
        let vtf = (6u32 << 28) | (u32::from(p.tos) << 20) | (hash & 0x000f_ffff);
        h[0..4].copy_from_slice(&vtf.to_be_bytes());
        h[4..6].copy_from_slice(&(tot_len - IPV6_LEN as u16).to_be_bytes());
        h[6] = inner_proto;
        h[7] = OUTER_TTL;
        put_addr(&mut h, 8, &src);
        put_addr(&mut h, 24, &backend.addr_be);
        write(ctx, ETH_LEN, h).map_err(e)?;
        Ok(Outer {
            family: FAMILY_V6,
            src,
            dst: backend.addr_be,
            tot_len,
        })
    } else {
        write(ctx, 12, ETH_P_IP.to_be()).map_err(e)?;
        let src = (settings.src4_base_be & !settings.src4_host_mask_be)
            | (hash & settings.src4_host_mask_be);
        let mut h = [0u8; IPV4_LEN];
        h[0] = 0x45;
        h[1] = p.tos;
        h[2..4].copy_from_slice(&tot_len.to_be_bytes());
        // id 0, no DF: the backend network's MTU must fit client MTU + 40 (see README).
        h[8] = OUTER_TTL;
        h[9] = inner_proto;
        h[12..16].copy_from_slice(&src.to_ne_bytes());
        h[16..20].copy_from_slice(&backend.addr_be[0].to_ne_bytes());
        let c = csum::ipv4_header(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        write(ctx, ETH_LEN, h).map_err(e)?;
        Ok(Outer {
            family: FAMILY_V4,
            src: [src, 0, 0, 0],
            dst: backend.addr_be,
            tot_len,
        })
    }
}

#[inline(always)]
fn put_addr(h: &mut [u8], at: usize, a: &[u32; 4]) {
    for (i, w) in a.iter().enumerate() {
        h[at + i * 4..at + i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
}
