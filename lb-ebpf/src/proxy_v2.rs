//! PROXY protocol v2 and client policy: who may send a header, what a header says, and which
//! clients a VIP refuses.
//!
//! A VIP with a PROXY policy records its TCP flows on the SYN as awaiting their header, with the
//! sequence number where the stream starts. The segment that starts there decides the flow, and
//! the verdict stays in the conntrack entry, so later segments cost no more than the lookup
//! (plus, on a PROXY VIP's payload segments, one of the PROXY flow map, which holds where the
//! stream starts and the real client). A
//! segment that starts there again (a retransmission, possibly with other bytes) is judged
//! again and can only make the verdict stricter; one that starts before it is refused, since the
//! backend's TCP would trim the overlap. So what the backend reads first is what was judged.
//!
//! The first segment must hold the whole header: the kernel cannot wait for more bytes, and
//! senders (HAProxy, cloud NLBs) write it in one segment. A segment that starts like a header
//! but ends before it does is refused as truncated under `optional` too, or a sender could slip
//! a forged header past the check by splitting it.
//!
//! Every length is checked against the segment before it is used; TLVs are never read, only
//! skipped as part of the header's length (userspace reads them).

use aya_ebpf::{maps::lpm_trie::Key, programs::XdpContext};
use lb_common::{
    proxy::{
        ProxyOutcome, FLOW_ALLOWED, FLOW_AWAIT_HEADER, FLOW_REFUSED, FLOW_UNPOLICED, V1_PREFIX,
        V2_ADDR_LEN_INET, V2_ADDR_LEN_INET6, V2_CMD_LOCAL, V2_CMD_PROXY, V2_FAM_TCP4, V2_FAM_TCP6,
        V2_FIXED_LEN, V2_SIGNATURE, V2_VERSION,
    },
    AddrBe, CidrData, Counter, FlowEntry, ProxyFlow, VipEntry, CIDR_SCOPE_BITS, FAMILY_V4,
    FAMILY_V6, FLOW_FLAG_PROXY, LIST_ALLOW_CLIENTS, LIST_DENY_CLIENTS, LIST_TRUSTED_PROXIES,
    PROXY_OFF, PROXY_REQUIRED, VIP_FLAG_ACCEPT_V1, VIP_FLAG_ALLOW_CLIENTS, VIP_FLAG_DENY_CLIENTS,
};

use crate::{
    headers::{addr4, addr6, TCP_SYN},
    maps::{CIDRS, PROXY_FLOWS},
    packet::read,
    parsed::Parsed,
    stats::count_outcome,
};

/// A real client named by a PROXY header.
#[derive(Clone, Copy)]
struct Client {
    addr_be: AddrBe,
    port_be: u16,
    family: u8,
}

#[derive(Clone, Copy)]
struct Verdict {
    outcome: ProxyOutcome,
    client: Option<Client>,
}

impl Verdict {
    #[inline(always)]
    const fn just(outcome: ProxyOutcome) -> Verdict {
        Verdict {
            outcome,
            client: None,
        }
    }
}

/// What the start of a first segment looks like.
enum Head {
    Absent,
    V1,
    /// The v2 signature, or a prefix of it, in a segment too short for the fixed header.
    V2Truncated,
    V2([u8; V2_FIXED_LEN]),
}

/// Whether the VIP has any policy, so its flows must be tracked to be judged.
#[inline(always)]
pub const fn policed(vip: &VipEntry) -> bool {
    vip.proxy_policy != PROXY_OFF
        || vip.flags & (VIP_FLAG_ALLOW_CLIENTS | VIP_FLAG_DENY_CLIENTS) != 0
}

/// Fills a new flow's policy fields, and for a PROXY VIP records the flow in the PROXY flow
/// map (before the caller records it in conntrack, so a flow flagged there has its record).
/// Returns `false` when the flow is refused already: a denied direct client, or a SYN that
/// carries a bad header (TCP Fast Open).
#[inline(always)]
pub fn opening(ctx: &XdpContext, p: &Parsed, vip: &VipEntry, e: &mut FlowEntry) -> bool {
    if !policed(vip) {
        e.proxy_state = FLOW_UNPOLICED;
        return true;
    }
    if vip.proxy_policy == PROXY_OFF {
        // Client lists only: the direct client is judged now, once.
        let v = judge(ctx, p, vip);
        record(e, None, vip, v);
        return !v.outcome.refuses();
    }
    let mut pf = core::mem::MaybeUninit::<ProxyFlow>::uninit();
    // Volatile, so LLVM keeps the stores: merged, the zero words become a `memset` call (a
    // byte loop in BPF).
    // SAFETY: `pf` is valid for writes of a `ProxyFlow`.
    unsafe {
        core::ptr::write_volatile(
            pf.as_mut_ptr(),
            ProxyFlow {
                client_be: [0, 0, 0, 0],
                client_port_be: 0,
                client_family: 0,
                _pad: 0,
                // A SYN's payload (TCP Fast Open) starts right after the SYN's own sequence
                // number.
                data_seq: p.tcp_seq.wrapping_add(1),
            },
        );
    }
    // SAFETY: initialised just above.
    let pf = unsafe { pf.assume_init_mut() };
    let allowed = if p.payload_len == 0 {
        e.proxy_state = FLOW_AWAIT_HEADER;
        true
    } else {
        let v = judge(ctx, p, vip);
        record(e, Some(&mut *pf), vip, v);
        !v.outcome.refuses()
    };
    if PROXY_FLOWS.insert(&p.key, pf, 0).is_ok() {
        e.flags |= FLOW_FLAG_PROXY;
    }
    allowed
}

/// Polices a packet of a recorded flow: the segment that starts the stream decides an awaiting
/// flow and is judged again whenever it comes back; every packet of a refused flow is dropped.
/// `Ok(false)`: the flow has lost its PROXY record, police the packet as `untracked` (the
/// caller does, so that code is inlined once).
#[inline(always)]
pub fn established(
    ctx: &XdpContext,
    p: &Parsed,
    vip: &VipEntry,
    e: *mut FlowEntry,
) -> Result<bool, Counter> {
    // SAFETY: `e` points at a conntrack value found for this packet (see `lookup::backend`). A
    // concurrent eviction at worst loses a verdict, and the next segment is then policed as
    // untracked.
    let (state, flags) = unsafe { ((*e).proxy_state, (*e).flags) };
    if state == FLOW_REFUSED {
        return Err(Counter::DropProxy);
    }
    let judged = state == FLOW_AWAIT_HEADER || state == FLOW_ALLOWED;
    if !judged || vip.proxy_policy == PROXY_OFF || p.payload_len == 0 || p.icmp_error {
        return Ok(true);
    }
    // Where the stream starts is in the PROXY flow map. A flow without a record there (evicted
    // from that smaller map, or opened before the VIP had a PROXY policy) is policed as one
    // conntrack does not know.
    let pf = if flags & FLOW_FLAG_PROXY != 0 {
        PROXY_FLOWS.get_ptr_mut(&p.key)
    } else {
        None
    };
    let Some(pf) = pf else {
        return Ok(false);
    };
    // SAFETY: a valid value pointer of the LRU map, at worst recycled by a concurrent eviction
    // (as `e`).
    let data_seq = unsafe { (*pf).data_seq };
    let seq = if p.tcp_flags & TCP_SYN != 0 {
        p.tcp_seq.wrapping_add(1)
    } else {
        p.tcp_seq
    };
    // Payload bytes that lie before the stream's first byte.
    let before = data_seq.wrapping_sub(seq);
    let v = if before == 0 {
        judge(ctx, p, vip)
    } else if (before as usize) < p.payload_len {
        Verdict::just(ProxyOutcome::Overlap)
    } else {
        // Later data (ahead of a lost first segment, or after it), or an old duplicate: the
        // backend cannot read it before the stream's start, which is judged when it comes.
        return Ok(true);
    };
    // A verdict already given is only ever tightened: an identical retransmission counts once.
    if state == FLOW_AWAIT_HEADER || v.outcome.refuses() {
        // SAFETY: as above.
        record(unsafe { &mut *e }, Some(unsafe { &mut *pf }), vip, v);
    }
    if v.outcome.refuses() {
        Err(Counter::DropProxy)
    } else {
        Ok(true)
    }
}

/// Polices a packet conntrack does not know and does not record (mid-stream, after eviction or
/// from another gateway's flow). A header is judged as on a first segment, so a forged one never
/// gets through by skipping the SYN. Payload without one is let through as mid-stream data,
/// except under `required` from a sender outside `trusted_proxies`: such a sender's flows are
/// all refused at their first segment, and letting its data through here would let a client
/// that got its entry evicted place a header where the backend's stream starts (TCP trims
/// bytes before the expected sequence number, which the gateway does not track).
#[inline(always)]
pub fn untracked(ctx: &XdpContext, p: &Parsed, vip: &VipEntry) -> Result<(), Counter> {
    if !policed(vip) {
        return Ok(());
    }
    let outcome = if vip.proxy_policy == PROXY_OFF {
        direct(p, vip)
    } else if p.payload_len == 0 || p.icmp_error {
        return Ok(());
    } else {
        match judge(ctx, p, vip).outcome {
            ProxyOutcome::Absent => ProxyOutcome::Midstream,
            ProxyOutcome::Missing
                if in_list(vip, LIST_TRUSTED_PROXIES, p.key.family, p.key.src_be) =>
            {
                ProxyOutcome::Midstream
            }
            o => o,
        }
    };
    count_outcome(vip.index, outcome);
    if outcome.refuses() {
        Err(Counter::DropProxy)
    } else {
        Ok(())
    }
}

/// Stores a verdict: the state in conntrack, the real client (if the header named one) in the
/// flow's PROXY record.
#[inline(always)]
fn record(e: &mut FlowEntry, pf: Option<&mut ProxyFlow>, vip: &VipEntry, v: Verdict) {
    count_outcome(vip.index, v.outcome);
    e.proxy_state = if v.outcome.refuses() {
        FLOW_REFUSED
    } else {
        FLOW_ALLOWED
    };
    e.proxy_outcome = v.outcome as u8;
    if let (Some(c), Some(pf)) = (v.client, pf) {
        pf.client_be = c.addr_be;
        pf.client_port_be = c.port_be;
        pf.client_family = c.family;
    }
}

/// Without a PROXY policy the TCP peer (or UDP sender) is the client.
#[inline(always)]
fn direct(p: &Parsed, vip: &VipEntry) -> ProxyOutcome {
    if client_allowed(vip, p.key.family, p.key.src_be) {
        ProxyOutcome::Absent
    } else {
        ProxyOutcome::ClientDenied
    }
}

/// The verdict on a first payload segment.
#[inline(always)]
fn judge(ctx: &XdpContext, p: &Parsed, vip: &VipEntry) -> Verdict {
    if vip.proxy_policy == PROXY_OFF {
        return Verdict::just(direct(p, vip));
    }
    // A read that fails after the length checks means the payload sits beyond the parser's
    // offset limit: refuse rather than guess.
    let Ok(head) = head(ctx, p.payload_off, p.payload_len) else {
        return Verdict::just(ProxyOutcome::Truncated);
    };
    if matches!(head, Head::Absent) {
        return Verdict::just(if vip.proxy_policy == PROXY_REQUIRED {
            ProxyOutcome::Missing
        } else {
            direct(p, vip)
        });
    }
    if !in_list(vip, LIST_TRUSTED_PROXIES, p.key.family, p.key.src_be) {
        return Verdict::just(ProxyOutcome::Untrusted);
    }
    match head {
        Head::V2(h) => v2(ctx, p, vip, &h),
        Head::V1 if vip.flags & VIP_FLAG_ACCEPT_V1 != 0 => Verdict::just(ProxyOutcome::Accepted),
        Head::V1 => Verdict::just(ProxyOutcome::V1),
        Head::V2Truncated | Head::Absent => Verdict::just(ProxyOutcome::Truncated),
    }
}

/// Signature words as the packet holds them in memory.
const fn sig_word(i: usize) -> u32 {
    u32::from_ne_bytes([
        V2_SIGNATURE[i],
        V2_SIGNATURE[i + 1],
        V2_SIGNATURE[i + 2],
        V2_SIGNATURE[i + 3],
    ])
}

#[inline(always)]
fn head(ctx: &XdpContext, off: usize, len: usize) -> Result<Head, ()> {
    if len >= V2_FIXED_LEN {
        // Whole words, compared as integers: an array `==` could become a `memcmp` call, which
        // BPF does not have.
        let w: [u32; 4] = read(ctx, off)?;
        if w[0] == sig_word(0) && w[1] == sig_word(4) && w[2] == sig_word(8) {
            let h: [u8; V2_FIXED_LEN] = read(ctx, off)?;
            return Ok(Head::V2(h));
        }
        let b: [u8; 6] = read(ctx, off)?;
        let v1 = b[0] == V1_PREFIX[0]
            && b[1] == V1_PREFIX[1]
            && b[2] == V1_PREFIX[2]
            && b[3] == V1_PREFIX[3]
            && b[4] == V1_PREFIX[4]
            && b[5] == V1_PREFIX[5];
        return Ok(if v1 { Head::V1 } else { Head::Absent });
    }
    // A short first segment: compare what there is, byte by byte, with both signatures.
    let (mut v2, mut v1) = (true, true);
    for i in 0..V2_FIXED_LEN - 1 {
        if i >= len {
            break;
        }
        // Two-byte reads ending at the wanted byte (see `packet::ptr_at`); the byte before the
        // payload is the TCP header's last.
        let b = read::<[u8; 2]>(ctx, off + i - 1)?[1];
        v2 &= i >= V2_SIGNATURE.len() || b == V2_SIGNATURE[i];
        v1 &= i >= V1_PREFIX.len() || b == V1_PREFIX[i];
    }
    Ok(if v2 {
        Head::V2Truncated
    } else if v1 {
        Head::V1
    } else {
        Head::Absent
    })
}

/// A v2 header from a trusted sender: version, command, family and lengths, then the client.
#[inline(always)]
fn v2(ctx: &XdpContext, p: &Parsed, vip: &VipEntry, h: &[u8; V2_FIXED_LEN]) -> Verdict {
    if h[12] >> 4 != V2_VERSION {
        return Verdict::just(ProxyOutcome::BadVersion);
    }
    let command = h[12] & 0x0f;
    if command != V2_CMD_LOCAL && command != V2_CMD_PROXY {
        return Verdict::just(ProxyOutcome::BadCommand);
    }
    let len = usize::from(u16::from_be_bytes([h[14], h[15]]));
    // LOCAL ignores the address block, whatever its family (the spec says receivers must).
    if command == V2_CMD_PROXY {
        let need = match h[13] {
            V2_FAM_TCP4 => V2_ADDR_LEN_INET,
            V2_FAM_TCP6 => V2_ADDR_LEN_INET6,
            _ => return Verdict::just(ProxyOutcome::BadFamily),
        };
        if len < need {
            return Verdict::just(ProxyOutcome::ShortAddress);
        }
    }
    if V2_FIXED_LEN + len > p.payload_len {
        return Verdict::just(ProxyOutcome::Truncated);
    }
    if command == V2_CMD_LOCAL {
        return Verdict::just(ProxyOutcome::Local);
    }
    let at = p.payload_off + V2_FIXED_LEN;
    let client = if h[13] == V2_FAM_TCP4 {
        let Ok(a) = read::<[u8; V2_ADDR_LEN_INET]>(ctx, at) else {
            return Verdict::just(ProxyOutcome::Truncated);
        };
        Client {
            addr_be: addr4([a[0], a[1], a[2], a[3]]),
            port_be: u16::from_ne_bytes([a[8], a[9]]),
            family: FAMILY_V4,
        }
    } else {
        let Ok(a) = read::<[u8; V2_ADDR_LEN_INET6]>(ctx, at) else {
            return Verdict::just(ProxyOutcome::Truncated);
        };
        Client {
            addr_be: addr6(&a, 0),
            port_be: u16::from_ne_bytes([a[32], a[33]]),
            family: FAMILY_V6,
        }
    };
    let outcome = if client_allowed(vip, client.family, client.addr_be) {
        ProxyOutcome::Accepted
    } else {
        ProxyOutcome::ClientDenied
    };
    Verdict {
        outcome,
        client: Some(client),
    }
}

/// `deny_clients` wins over `allow_clients`; with an allow list, anyone outside it is refused.
#[inline(always)]
fn client_allowed(vip: &VipEntry, family: u8, addr_be: AddrBe) -> bool {
    if vip.flags & VIP_FLAG_DENY_CLIENTS != 0 && in_list(vip, LIST_DENY_CLIENTS, family, addr_be) {
        return false;
    }
    vip.flags & VIP_FLAG_ALLOW_CLIENTS == 0 || in_list(vip, LIST_ALLOW_CLIENTS, family, addr_be)
}

#[inline(always)]
fn in_list(vip: &VipEntry, list: u8, family: u8, addr_be: AddrBe) -> bool {
    let key = Key::new(
        CIDR_SCOPE_BITS + 128,
        CidrData {
            // VIP indexes are below MAX_VIPS (256).
            vip_index: vip.index as u16,
            list,
            family,
            addr_be,
        },
    );
    // IPv4 addresses fill word 0 only; the zero words after them lie beyond any IPv4 prefix.
    CIDRS.get(&key).is_some()
}
