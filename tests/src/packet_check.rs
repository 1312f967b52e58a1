//! Checks shared by the `BPF_PROG_TEST_RUN` tables (`packets`, `proxy_packets`): XDP action
//! names, counter deltas, the tunnel frame a steered packet must come out as, and the report
//! that lists every failing row.

use std::collections::BTreeMap;
use std::net::IpAddr;

use lb_common::flow_hash::encap_hash;
use lb_common::{Counter, FlowKey, FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

use crate::packet_builder::{checksum_ok, diff, ip_tos, Mac, Tunnel, IPPROTO_TCP};
use crate::packet_env::{next_hop, tunnel_source, NextHop, MTU};

pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub fn action_name(a: u32) -> &'static str {
    match a {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "?",
    }
}

/// The counters that changed between two snapshots, by how much.
pub fn deltas(
    before: &BTreeMap<&'static str, u64>,
    after: &BTreeMap<&'static str, u64>,
) -> BTreeMap<&'static str, i128> {
    after
        .iter()
        .map(|(k, v)| {
            (
                *k,
                i128::from(*v) - i128::from(before.get(k).copied().unwrap_or(0)),
            )
        })
        .filter(|(_, d)| *d != 0)
        .collect()
}

/// Each name once per occurrence: the deltas a packet counted under these names must show.
pub fn expected_deltas(
    names: impl IntoIterator<Item = &'static str>,
) -> BTreeMap<&'static str, i128> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n).or_insert(0) += 1;
    }
    m
}

/// An address's bytes in wire order.
pub fn octets(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The conntrack key of the flow `client:cport` → `vip:vport` over `proto` (`IPPROTO_TCP` or
/// `IPPROTO_UDP`), built the documented way: wire-order address bytes into `FlowKey::new`.
pub fn flow_key(proto: u8, client: IpAddr, cport: u16, vip: IpAddr, vport: u16) -> FlowKey {
    let family = if client.is_ipv4() {
        FAMILY_V4
    } else {
        FAMILY_V6
    };
    let proto = if proto == IPPROTO_TCP {
        PROTO_TCP
    } else {
        PROTO_UDP
    };
    FlowKey::new(family, proto, &octets(client), cport, &octets(vip), vport)
}

/// "action X, want Y" when the verdict is not the expected one.
pub fn action_mismatch(got: u32, want: u32) -> Option<String> {
    (got != want).then(|| format!("action {}, want {}", action_name(got), action_name(want)))
}

/// "counter deltas …, want …" when the counters did not move exactly as expected.
pub fn counters_mismatch(
    got: &BTreeMap<&'static str, i128>,
    want: &BTreeMap<&'static str, i128>,
) -> Option<String> {
    (got != want).then(|| format!("counter deltas {got:?}, want {want:?}"))
}

/// A row's result from the problems found with it: passed when there are none.
pub fn row_result(errors: &[String]) -> Result<(), String> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Prints one line per row and panics listing all failures.
pub fn report<N: std::fmt::Display>(table: &str, results: &[(N, Result<(), String>)]) {
    let failed: Vec<String> = results
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("  {name}: {e}")))
        .collect();
    for (name, r) in results {
        eprintln!("{} {name}", if r.is_ok() { "ok  " } else { "FAIL" });
    }
    assert!(
        failed.is_empty(),
        "{} of {} {table} rows failed:\n{}",
        failed.len(),
        results.len(),
        failed.join("\n")
    );
}

/// The outer destination of a tunnel frame (IPv4 or IPv6 outer header), if `out` is one.
pub fn tunnel_destination(out: &[u8]) -> Option<IpAddr> {
    match out.get(12..14) {
        Some([0x08, 0x00]) => Some(IpAddr::V4(
            <[u8; 4]>::try_from(out.get(30..34)?).ok()?.into(),
        )),
        Some([0x86, 0xdd]) => Some(IpAddr::V6(
            <[u8; 16]>::try_from(out.get(38..54)?).ok()?.into(),
        )),
        _ => None,
    }
}

/// Checks that `sluice_xdp` handled `frame` (received on `ingress`, carrying the IP packet
/// `inner` of flow `key`) as the spec says for a packet steered to `backend`: the action the
/// namespace's tables imply and, exactly, the tunnel frame towards it. Returns the verdict
/// counter the packet must have counted and the differences found.
#[allow(clippy::too_many_arguments)]
pub fn check_forward(
    frame: &[u8],
    ingress: &str,
    key: &FlowKey,
    inner: &[u8],
    backend: IpAddr,
    action: u32,
    out: &[u8],
) -> (Counter, Vec<String>) {
    let hash = encap_hash(key);
    let outer_len = if backend.is_ipv6() { 40 } else { 20 } + inner.len();
    let mac = |b: &[u8]| <Mac>::try_from(b).unwrap_or_default();
    let orig = (mac(&frame[0..6]), mac(&frame[6..12]));
    let (want_action, verdict, (dst_mac, src_mac)) = match next_hop(backend) {
        NextHop::NoRoute => (XDP_DROP, Counter::DropNoRoute, orig),
        _ if outer_len > MTU => (XDP_DROP, Counter::DropMtu, orig),
        NextHop::NoNeigh { .. } => (XDP_PASS, Counter::PassNoNeigh, orig),
        NextHop::Via {
            egress,
            dst_mac,
            src_mac,
        } if egress == ingress => (XDP_TX, Counter::Tx, (dst_mac, src_mac)),
        NextHop::Via {
            dst_mac, src_mac, ..
        } => (XDP_REDIRECT, Counter::Redirect, (dst_mac, src_mac)),
    };
    let tunnel = Tunnel {
        dst_mac,
        src_mac,
        src: tunnel_source(backend.is_ipv6(), hash),
        dst: backend,
        tos: ip_tos(inner),
        flow_label: hash & 0xf_ffff,
    };
    let want = tunnel.frame(inner);
    let mut errors = Vec::new();
    errors.extend(action_mismatch(action, want_action));
    if out != want.as_slice() {
        errors.push(format!(
            "to {backend}: output differs: {}",
            diff(out, &want)
        ));
    }
    if backend.is_ipv4() && !out.get(14..34).is_some_and(checksum_ok) {
        errors.push("outer IPv4 header checksum does not verify".into());
    }
    (verdict, errors)
}
