//! A closed node refuses new edge connections with a TCP RST built here, so a client fails over
//! to another gateway at once instead of retransmitting its SYN for seconds.
//!
//! The SYN is rewritten in place into the reply a TCP stack gives a SYN to a closed port
//! (RFC 9293 3.10.7.1; Linux's `tcp_v4_send_reset` does the same): MACs swapped (VLAN tags
//! kept), a fresh IP header (IPv4: IHL 5, DF, id 0, TTL 64; IPv6: hop limit 64, no extension
//! headers) and a bare 20-byte TCP header with RST|ACK, sequence 0 and an acknowledgement
//! covering the SYN, its FIN if any and its payload (TCP Fast Open data). Everything the reply
//! needs is in `Parsed` already, so the headers are written from offset `l3_off` whatever
//! options or extension headers the SYN carried, and the frame is trimmed to end right after
//! them. No flow is recorded and no PROXY policy is judged: the connection ends here.
//!
//! The headers are written straight into the packet, not built on the stack first: the
//! steering path already uses most of the 512-byte BPF stack.

use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use lb_common::{Counter, CLOSED_REPLY_XDP, FAMILY_V6, NODE_CLOSED, PROTO_TCP};

use crate::{
    csum,
    headers::{IPV4_LEN, IPV6_LEN, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    maps::NODE,
    packet::{len, ptr_at, read, write},
    parsed::Parsed,
    stats::count,
};

const TCP_LEN: usize = 20;
const TTL: u8 = 64;
/// IPv4 flags word with only "don't fragment" set.
const IP_DF: u16 = 0x4000;

/// Whether the packet opens a connection that a closed node must refuse here: a SYN without
/// ACK (never a RST, which is not answered) while the node map says `closed` and that the RST
/// is built in XDP (otherwise the SYN goes on to the kernel, which refuses it itself).
#[inline(always)]
pub fn refuses(p: &Parsed) -> bool {
    !p.icmp_error
        && p.key.proto == PROTO_TCP
        && p.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) == TCP_SYN
        && NODE
            .get(0)
            .is_some_and(|n| n.state == NODE_CLOSED && n.closed_reply == CLOSED_REPLY_XDP)
}

/// Turns the SYN into its RST and sends it back out the ingress interface.
#[inline(always)]
pub fn reply(ctx: &XdpContext, p: &Parsed) -> Result<u32, Counter> {
    let v6 = p.key.family == FAMILY_V6;
    let reply_len = p.l3_off + if v6 { IPV6_LEN } else { IPV4_LEN } + TCP_LEN;
    let macs: [u8; 12] = read(ctx, 0).map_err(|_| Counter::PassEdgeClosed)?;
    // `black_box` keeps this scalar arithmetic, as in `encap`.
    let frame_len = core::hint::black_box(len(ctx));
    // The parser proved the IP and TCP headers lie inside the frame, so this cannot underflow;
    // checked anyway before anything is changed, so the SYN is still intact if it did.
    let Some(trim) = frame_len.checked_sub(reply_len) else {
        return Err(Counter::PassEdgeClosed);
    };
    if trim > 0 {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_possible_wrap,
            reason = "< 64 KiB"
        )]
        // SAFETY: shrinking by bytes beyond the reply's headers, which nothing reads again.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(trim as i32)) } != 0 {
            return Err(Counter::PassEdgeClosed);
        }
    }
    // From here the SYN is gone: a failure cannot pass it on any more.
    let fail = |_| Counter::DropInternal;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    write(ctx, 0, swapped).map_err(fail)?;
    let fin = u32::from(p.tcp_flags & TCP_FIN != 0);
    #[expect(clippy::cast_possible_truncation, reason = "< 64 KiB")]
    let ack = p
        .tcp_seq
        .wrapping_add(1 + fin)
        .wrapping_add(p.payload_len as u32);
    let pseudo = csum::add_addr(csum::add_addr(0, &p.key.src_be), &p.key.dst_be)
        + u32::from(PROTO_TCP)
        + TCP_LEN as u32;
    if v6 {
        let h = ptr_at::<[u8; IPV6_LEN + TCP_LEN]>(ctx, p.l3_off).map_err(fail)?;
        // SAFETY: `ptr_at` checked that the bytes lie inside the (writable) packet, and no
        // other reference to them exists while this one lives.
        let h = unsafe { &mut *h };
        h[..4].copy_from_slice(&(6u32 << 28).to_be_bytes());
        h[4..6].copy_from_slice(&(TCP_LEN as u16).to_be_bytes());
        h[6] = PROTO_TCP;
        h[7] = TTL;
        put_addr(h, 8, &p.key.dst_be);
        put_addr(h, 24, &p.key.src_be);
        tcp(h, IPV6_LEN, p, ack, pseudo);
    } else {
        let h = ptr_at::<[u8; IPV4_LEN + TCP_LEN]>(ctx, p.l3_off).map_err(fail)?;
        // SAFETY: as above.
        let h = unsafe { &mut *h };
        h[0] = 0x45;
        h[1] = 0;
        h[2..4].copy_from_slice(&((IPV4_LEN + TCP_LEN) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&[0, 0]);
        h[6..8].copy_from_slice(&IP_DF.to_be_bytes());
        h[8] = TTL;
        h[9] = PROTO_TCP;
        h[10..12].copy_from_slice(&[0, 0]);
        h[12..16].copy_from_slice(&p.key.dst_be[0].to_ne_bytes());
        h[16..20].copy_from_slice(&p.key.src_be[0].to_ne_bytes());
        let c = csum::finish(csum::add_range(0, h, 0, IPV4_LEN));
        h[10..12].copy_from_slice(&c.to_be_bytes());
        tcp(h, IPV4_LEN, p, ack, pseudo);
    }
    count(Counter::TxRstClosed);
    Ok(xdp_action::XDP_TX)
}

/// Writes the RST's TCP header at `at` in `h`, checksum included (`pseudo`: the unfolded sum
/// of the pseudo-header).
#[inline(always)]
fn tcp<const N: usize>(h: &mut [u8; N], at: usize, p: &Parsed, ack: u32, pseudo: u32) {
    h[at..at + 2].copy_from_slice(&p.key.dport_be.to_ne_bytes());
    h[at + 2..at + 4].copy_from_slice(&p.key.sport_be.to_ne_bytes());
    // Sequence 0: the SYN had no ACK to take one from (RFC 9293, 3.10.7.1).
    h[at + 4..at + 8].copy_from_slice(&[0; 4]);
    h[at + 8..at + 12].copy_from_slice(&ack.to_be_bytes());
    // Data offset 5 words, no options.
    h[at + 12] = 5 << 4;
    h[at + 13] = TCP_RST | TCP_ACK;
    // Window 0, and checksum and urgent pointer 0 until the checksum is known.
    h[at + 14..at + TCP_LEN].copy_from_slice(&[0; 6]);
    let c = csum::finish(csum::add_range(pseudo, h, at, at + TCP_LEN));
    h[at + 16..at + 18].copy_from_slice(&c.to_be_bytes());
}

#[inline(always)]
fn put_addr<const N: usize>(h: &mut [u8; N], at: usize, a: &[u32; 4]) {
    for (i, w) in a.iter().enumerate() {
        h[at + i * 4..at + i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
}
