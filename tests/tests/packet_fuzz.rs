//! Randomised frames through `sluice_xdp` with `BPF_PROG_TEST_RUN`: mutations of valid
//! fixtures (every truncation, flipped and overwritten bytes, extreme length fields, appended
//! garbage) and random bytes, at least 100k frames, from a seed printed at the start
//! (`SLUICE_FUZZ_SEED=<n>` replays a run; `SLUICE_FUZZ_FRAMES=<n>` changes its size).
//!
//! Invariants, whatever the frame:
//! - the verdict is PASS, DROP, TX or REDIRECT, never ABORTED or anything else;
//! - a frame sent on (TX/REDIRECT) is a tunnel frame towards one of the configured backends,
//!   never the input echoed or rewritten toward anyone else;
//! - every frame is counted under exactly one verdict reason: the `pass_*` counters grow by the
//!   number of PASS verdicts, the `drop_*` ones by the DROPs, `tx`/`tx_rst_closed` by the TXs
//!   and `redirect` by the REDIRECTs — so the counters add up to the frames sent.
//!
//! Needs root (namespaces, BPF).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_userspace::dataplane::Options;
use sluice_tests::packet_builder::{
    ethernet, ethernet_vlan, ext_header, icmp4, tcp, udp, Ipv4, Ipv6, Mac, ETH_P_8021Q, ETH_P_IP,
    ETH_P_IPV6, IPPROTO_DSTOPTS, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_PSH, TCP_SYN,
};
use sluice_tests::packet_check::{action_name, tunnel_destination, XDP_DROP, XDP_PASS};
use sluice_tests::packet_env::{
    test_run, PacketEnv, GW0, GW0_MAC, NEIGH0_V4, NEIGH0_V6, NEIGH1_V4, NEIGH1_V6,
};
use sluice_tests::require_root;

const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
const CLIENT_MAC: Mac = [0x02, 0, 0, 0, 0x00, 0xc7];
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x10);
const EDGE4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 10);
const DEFAULT_FRAMES: usize = 100_000;

fn config() -> String {
    format!(
        r#"interfaces = ["gw0"]
[encap]
source_v4 = "198.19.255.0/24"
source_v6 = "2001:db8:ffff::/96"
[[vip]]
name = "web4"
address = "{VIP4}:80"
table_size = 251
backend = [{{ address = "{NEIGH0_V4}" }}, {{ address = "{NEIGH1_V4}" }}]
[[vip]]
name = "dns4"
address = "{VIP4}:53"
protocol = "udp"
table_size = 251
backend = [{{ address = "{NEIGH0_V4}" }}, {{ address = "{NEIGH1_V4}" }}]
[[vip]]
name = "proxy4"
address = "{VIP4}:81"
table_size = 251
proxy_protocol = "required"
trusted_proxies = ["198.18.0.0/24"]
backend = [{{ address = "{NEIGH0_V4}" }}, {{ address = "{NEIGH1_V4}" }}]
[[vip]]
name = "web6"
address = "[{VIP6}]:80"
table_size = 251
backend = [{{ address = "{NEIGH0_V6}" }}, {{ address = "{NEIGH1_V6}" }}]
[[vip]]
name = "dns6"
address = "[{VIP6}]:53"
protocol = "udp"
table_size = 251
backend = [{{ address = "{NEIGH0_V6}" }}, {{ address = "{NEIGH1_V6}" }}]
[[edge]]
name = "edge4"
address = "{EDGE4}:443"
pool = "web4"
"#
    )
}

/// splitmix64: small, seedable, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

fn eth(ethertype: u16, ip: &[u8]) -> Vec<u8> {
    ethernet(GW0_MAC, CLIENT_MAC, ethertype, ip)
}

fn tcp4(dst: Ipv4Addr, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let seg = tcp(CLIENT4.into(), dst.into(), 40_000, dport, flags, payload);
    Ipv4::new(IPPROTO_TCP, CLIENT4, dst).packet(&seg)
}

/// A PROXY v2 header (TCP4) naming `client`, then a request line.
fn proxy_v2(client: Ipv4Addr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client.octets());
    h.extend_from_slice(&VIP4.octets());
    h.extend_from_slice(&50_000u16.to_be_bytes());
    h.extend_from_slice(&81u16.to_be_bytes());
    h.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    h
}

/// Valid frames of every class the program distinguishes.
fn fixtures() -> Vec<Vec<u8>> {
    let (c4, v4, c6, v6) = (
        IpAddr::V4(CLIENT4),
        IpAddr::V4(VIP4),
        IpAddr::V6(CLIENT6),
        IpAddr::V6(VIP6),
    );
    let tcp6 = |flags, payload: &[u8]| {
        Ipv6::new(IPPROTO_TCP, CLIENT6, VIP6).packet(&tcp(c6, v6, 40_000, 80, flags, payload))
    };
    let reply = tcp(v4, c4, 80, 40_000, TCP_ACK, b"");
    let quoted = Ipv4::new(IPPROTO_TCP, VIP4, CLIENT4).packet(&reply)[..28].to_vec();
    let router = Ipv4Addr::new(198, 18, 0, 254);
    let too_big =
        Ipv4::new(IPPROTO_ICMP, router, VIP4).packet(&icmp4(3, 4, [0, 0, 5, 0xdc], &quoted));
    let ext = {
        let mut p = ext_header(IPPROTO_DSTOPTS, IPPROTO_UDP, 8);
        p.extend_from_slice(&udp(c6, v6, 40_001, 53, b"query"));
        Ipv6::new(IPPROTO_DSTOPTS, CLIENT6, VIP6).packet(&p)
    };
    vec![
        eth(ETH_P_IP, &tcp4(VIP4, 80, TCP_SYN, b"")),
        eth(ETH_P_IP, &tcp4(VIP4, 80, TCP_ACK | TCP_PSH, &[0x61; 64])),
        eth(
            ETH_P_IP,
            &Ipv4::new(IPPROTO_UDP, CLIENT4, VIP4).packet(&udp(c4, v4, 40_000, 53, b"query")),
        ),
        eth(
            ETH_P_IP,
            &Ipv4::new(IPPROTO_TCP, CLIENT4, VIP4)
                .options(&[0x01, 0x01, 0x01, 0x00])
                .packet(&tcp(c4, v4, 40_002, 80, TCP_SYN, b"")),
        ),
        ethernet_vlan(
            GW0_MAC,
            CLIENT_MAC,
            &[(ETH_P_8021Q, 7)],
            ETH_P_IP,
            &tcp4(VIP4, 80, TCP_ACK, b"x"),
        ),
        eth(ETH_P_IPV6, &tcp6(TCP_SYN, b"")),
        eth(ETH_P_IPV6, &tcp6(TCP_ACK, &[0x62; 64])),
        eth(ETH_P_IPV6, &ext),
        eth(ETH_P_IP, &too_big),
        eth(ETH_P_IP, &tcp4(VIP4, 81, TCP_SYN, b"")),
        eth(
            ETH_P_IP,
            &tcp4(
                VIP4,
                81,
                TCP_ACK | TCP_PSH,
                &proxy_v2(Ipv4Addr::new(203, 0, 113, 5)),
            ),
        ),
        eth(ETH_P_IP, &tcp4(EDGE4, 443, TCP_SYN, b"")),
        eth(
            ETH_P_IP,
            &tcp4(Ipv4Addr::new(198, 51, 100, 1), 80, TCP_ACK, b""),
        ),
    ]
}

/// One mutation of `base`, or random bytes.
fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut f = base.to_vec();
    match rng.below(7) {
        0 => f.truncate(rng.below(f.len() + 1)),
        1 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(f.len());
                f[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            // Header bytes: Ethernet, VLAN, IP, extension headers, L4.
            for _ in 0..=rng.below(3) {
                let i = rng.below(f.len().min(96));
                f[i] = rng.byte();
            }
        }
        3 => {
            // A 16-bit field (a length, a port, an ethertype) set to an extreme.
            let i = rng.below(f.len().saturating_sub(1).min(94));
            let len = u16::try_from(f.len()).unwrap_or(u16::MAX);
            let v = [0, 1, 0xffff, len, len.wrapping_sub(14), len.wrapping_add(1)][rng.below(6)];
            f[i..i + 2].copy_from_slice(&v.to_be_bytes());
        }
        4 => {
            let extra = rng.below(64);
            f.extend((0..extra).map(|_| rng.byte()));
        }
        5 => {
            // The IP header kept, the rest random.
            let keep = rng.below(f.len().min(60));
            for b in &mut f[keep..] {
                *b = rng.byte();
            }
        }
        _ => {
            f = (0..rng.below(200)).map(|_| rng.byte()).collect();
            if f.len() >= 14 && rng.below(2) == 0 {
                f[12..14].copy_from_slice(&[0x08, 0x00]);
            }
        }
    }
    f
}

/// Verdicts seen and the checks that failed.
#[derive(Default)]
struct Tally {
    verdicts: BTreeMap<u32, u64>,
    failures: Vec<String>,
}

fn class(counter: &str) -> Option<u32> {
    if counter == "tx" || counter == "tx_rst_closed" {
        Some(XDP_TX)
    } else if counter == "redirect" {
        Some(XDP_REDIRECT)
    } else if counter.starts_with("pass_") {
        Some(XDP_PASS)
    } else if counter.starts_with("drop_") {
        Some(XDP_DROP)
    } else {
        None
    }
}

#[test]
fn random_frames_keep_every_invariant() {
    require_root();
    let seed: u64 = std::env::var("SLUICE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005e_ed51_u64);
    let frames: usize = std::env::var("SLUICE_FUZZ_FRAMES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_FRAMES);
    eprintln!("packet fuzz: seed {seed}, {frames} random frames (SLUICE_FUZZ_SEED replays)");
    let env = PacketEnv::new("slpfz", &Options::unpinned(1 << 16, 16 * 251), &config())
        .expect("packet environment");
    let backends: [IpAddr; 4] = [
        NEIGH0_V4.into(),
        NEIGH1_V4.into(),
        NEIGH0_V6.into(),
        NEIGH1_V6.into(),
    ];
    let before = env.counters().expect("counters");
    let prog = env.dp.program().expect("program");
    let ifindex = env.ifindex(GW0);
    let bases = fixtures();
    let tally = env
        .ns()
        .exec(|| {
            let mut t = Tally::default();
            let mut rng = Rng(seed);
            let judge = |t: &mut Tally, what: &str, frame: &[u8]| {
                let (action, out) = match test_run(prog, frame, ifindex) {
                    Ok(r) => r,
                    Err(e) => {
                        // The kernel refuses frames shorter than an Ethernet header before
                        // the program runs (not counted as one of the frames sent).
                        if frame.len() < 14 {
                            return;
                        }
                        t.failures.push(format!("{what}: test run failed: {e:#}"));
                        return;
                    }
                };
                *t.verdicts.entry(action).or_default() += 1;
                let ok = match action {
                    XDP_PASS | XDP_DROP => true,
                    XDP_TX | XDP_REDIRECT => {
                        tunnel_destination(&out).is_some_and(|d| backends.contains(&d))
                    }
                    _ => false,
                };
                if !ok && t.failures.len() < 20 {
                    t.failures.push(format!(
                        "{what}: {} with output {:02x?}\n  input {:02x?}",
                        action_name(action),
                        &out[..out.len().min(64)],
                        frame
                    ));
                }
            };
            // Every truncation of every fixture, then the random mutations.
            for (i, base) in bases.iter().enumerate() {
                for len in 14..=base.len() {
                    judge(&mut t, &format!("fixture {i} cut to {len}"), &base[..len]);
                }
            }
            let fixed: u64 = t.verdicts.values().sum();
            let mut n = 0;
            while t.verdicts.values().sum::<u64>() - fixed < frames as u64 {
                let base = &bases[rng.below(bases.len())];
                let frame = mutate(&mut rng, base);
                judge(&mut t, &format!("frame {n} (seed {seed})"), &frame);
                n += 1;
            }
            t
        })
        .expect("namespace");
    assert!(
        tally.failures.is_empty(),
        "{} invariant failures:\n{}",
        tally.failures.len(),
        tally.failures.join("\n")
    );
    eprintln!(
        "packet fuzz: verdicts {:?}",
        tally
            .verdicts
            .iter()
            .map(|(a, n)| (action_name(*a), *n))
            .collect::<Vec<_>>()
    );
    let after = env.counters().expect("counters");
    let mut counted: BTreeMap<u32, u64> = BTreeMap::new();
    for (name, value) in &after {
        if let Some(verdict) = class(name) {
            *counted.entry(verdict).or_default() += value - before.get(name).copied().unwrap_or(0);
        }
    }
    for verdict in [XDP_PASS, XDP_DROP, XDP_TX, XDP_REDIRECT] {
        assert_eq!(
            counted.get(&verdict).copied().unwrap_or(0),
            tally.verdicts.get(&verdict).copied().unwrap_or(0),
            "{} frames vs their reason counters (seed {seed}); verdicts {:?}, counters {:?}",
            action_name(verdict),
            tally.verdicts,
            after
        );
    }
    // The mutations must reach deep paths, not only the parser's refusals.
    for verdict in [XDP_PASS, XDP_DROP, XDP_TX] {
        assert!(
            tally.verdicts.get(&verdict).copied().unwrap_or(0) > 0,
            "no {} verdict in {:?}",
            action_name(verdict),
            tally.verdicts
        );
    }
}
