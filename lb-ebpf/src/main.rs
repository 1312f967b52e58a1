//! sluice's XDP programs: `sluice_xdp` for gateways, `sluice_decap` for backends.
#![no_std]
#![no_main]

mod csum;
mod decap;
mod edge;
mod encap;
mod fib;
mod headers;
mod icmp;
mod log;
mod lookup;
mod maps;
mod packet;
mod parse;
mod parsed;
mod proxy_v2;
mod rst;
mod stats;
mod xdp;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};

/// Gateway program: steers packets for L4 VIPs to their backend (see `xdp.rs`).
#[xdp]
pub fn sluice_xdp(ctx: XdpContext) -> u32 {
    xdp::run(&ctx)
}

/// Backend program: strips the tunnel header of packets for local VIPs (see `decap.rs`).
#[xdp]
pub fn sluice_decap(ctx: XdpContext) -> u32 {
    decap::run(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // Unreachable in a verified program: the verifier rejects any path that could get here.
    loop {}
}

/// `bpf_fib_lookup` is GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
