//! `cargo xtask bench xdp`: nanoseconds per packet of `sluice_xdp` by path, measured with
//! `BPF_PROG_TEST_RUN` beside a trivial `XDP_PASS` program in the same run.
//!
//! Paths that rewrite the packet (every steered path) cannot use `repeat > 1`: the kernel would
//! run the program again on its own encapsulated output. So every path is measured the same way,
//! one run per syscall with the kernel's own timing of that run, averaged over many runs, and
//! each path proves it ran as intended: the counter of that path grew by exactly the number of
//! runs. Pass-only paths are also measured with `repeat` as a cross-check of the method.
//!
//! `cargo xtask bench edge`: the edge listener beside nginx and haproxy, see [`edge`].
//!
//! `cargo xtask bench control`: the daemon's probes, scrapes, idle CPU and SIGTERM with
//! conntrack full, see [`control`].

mod control;
mod edge;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::ExitCode,
    time::Duration,
};

use anyhow::{ensure, Context as _, Result};
use aya::{programs::Xdp, EbpfLoader};
use lb_common::{proxy::ProxyOutcome, Counter};
use lb_userspace::{
    dataplane::{NodeState, Options},
    BASELINE_OBJECT,
};
use sluice_tests::{
    is_root,
    packet_builder::{ethernet, tcp, Ipv4, Ipv6, ETH_P_IP, ETH_P_IPV6, IPPROTO_TCP},
    packet_env::{test_run_repeat, PacketEnv, GW0, GW0_MAC},
};

const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0c, 0x01];
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
const VIP4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 10);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x10);
const EDGE4: Ipv4Addr = Ipv4Addr::new(198, 19, 1, 10);
/// XDP actions (uapi `enum xdp_action`).
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
/// Runs per path (one syscall each) and repeats for the cross-check.
const RUNS: u32 = 100_000;
const REPEAT: u32 = 5_000_000;
const WARMUP: usize = 1000;

const CONFIG: &str = r#"
interfaces = ["gw0"]
[encap]
source_v4 = "198.19.255.0/24"
source_v6 = "2001:db8:ffff::/96"
[[vip]]
name = "web4"
address = "198.19.0.10:80"
[[vip.backend]]
address = "198.18.10.2"
[[vip.backend]]
address = "198.18.11.2"
[[vip]]
name = "proxy4"
address = "198.19.0.10:81"
proxy_protocol = "required"
trusted_proxies = ["198.18.0.0/16"]
[[vip.backend]]
address = "198.18.10.2"
[[vip.backend]]
address = "198.18.11.2"
[[vip]]
name = "web6"
address = "[2001:db8:ff::10]:80"
[[vip.backend]]
address = "2001:db8:a::2"
[[vip.backend]]
address = "2001:db8:b::2"
[[edge]]
name = "edge4"
address = "198.19.1.10:443"
pool = "web4"
"#;

fn frame(src: IpAddr, dst: IpAddr, sport: u16, flags: u8) -> Vec<u8> {
    frame_to(src, dst, sport, 80, flags, &[0u8; 64])
}

fn frame_to(
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
            GW0_MAC,
            CLIENT_MAC,
            ETH_P_IP,
            &Ipv4::new(IPPROTO_TCP, s, d).packet(&seg),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => ethernet(
            GW0_MAC,
            CLIENT_MAC,
            ETH_P_IPV6,
            &Ipv6::new(IPPROTO_TCP, s, d).packet(&seg),
        ),
        _ => unreachable!("one family per frame"),
    }
}

/// A measured path: mean ns per run and the proof that each run took it.
struct Measured {
    name: &'static str,
    ns: f64,
    proof: String,
}

/// Mean kernel time per run over `frames` (one run each), in ns; checks the action of each.
fn per_run(prog: &Xdp, ifindex: u32, frames: &[Vec<u8>], action: &[u32]) -> Result<f64> {
    let mut total = Duration::ZERO;
    for f in frames {
        let (got, _, d) = test_run_repeat(prog, f, ifindex, 1)?;
        ensure!(
            action.contains(&got),
            "unexpected XDP action {got} (wanted one of {action:?})"
        );
        total += d;
    }
    #[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
    Ok(total.as_nanos() as f64 / frames.len() as f64)
}

fn xdp_bench() -> Result<Vec<Measured>> {
    let options = Options::unpinned(1 << 19, 6 * 65537);
    let mut env = PacketEnv::new("slbench", &options, CONFIG)?;
    // Next hops as the daemon keeps them (`sluice run` resolves them over rtnetlink): forwarded
    // packets take the cached next hop, not a route lookup each.
    env.resolve_next_hops()?;
    // Only the edge row is affected: a closed node refuses SYNs to edge VIPs, L4 VIPs forward.
    env.dp.set_node_state(NodeState::Closed)?;
    let env = env;
    let mut baseline = EbpfLoader::new()
        .load(BASELINE_OBJECT)
        .context("loading baseline")?;
    let base: &mut Xdp = baseline
        .program_mut("baseline_pass")
        .context("baseline_pass missing")?
        .try_into()?;
    base.load()?;
    let prog = env.dp.program()?;
    let ifindex = env.ifindex(GW0);
    let (c4, v4, c6, v6) = (
        IpAddr::V4(CLIENT4),
        IpAddr::V4(VIP4),
        IpAddr::V6(CLIENT6),
        IpAddr::V6(VIP6),
    );
    let forwarded = [XDP_TX, XDP_REDIRECT];
    let pass = [XDP_PASS];
    let n = RUNS as usize + WARMUP;
    let other = IpAddr::V4(Ipv4Addr::new(198, 18, 99, 1));
    let sports =
        |base: u16| (0..n).map(move |i| base.wrapping_add(u16::try_from(i % 60_000).unwrap_or(0)));
    let one = |src, dst, flags| vec![frame(src, dst, 40_000, flags); n];

    let measure = |name: &'static str,
                   frames: Vec<Vec<u8>>,
                   action: &[u32],
                   counter: Counter|
     -> Result<Measured> {
        ns_in(&env, || -> Result<Measured> {
            // Warm up caches on frames of their own (a new-flow frame is new only once).
            let (warm, frames) = frames.split_at(WARMUP);
            per_run(prog, ifindex, warm, action)?;
            let before = env.counter(counter)?;
            let ns = per_run(prog, ifindex, frames, action)?;
            let grew = env.counter(counter)? - before;
            ensure!(
                grew == u64::from(RUNS),
                "{name}: {} grew by {grew}, not {RUNS}",
                counter.name()
            );
            Ok(Measured {
                name,
                ns,
                proof: format!("{} +{grew}", counter.name()),
            })
        })
    };
    let mut out = Vec::new();
    let ns = ns_in(&env, || per_run(base, ifindex, &one(c4, v4, ACK), &pass))?;
    out.push(Measured {
        name: "baseline XDP_PASS",
        ns,
        proof: "action PASS ×RUNS".into(),
    });
    out.push(measure(
        "non-VIP pass",
        one(c4, other, ACK),
        &pass,
        Counter::PassNotVip,
    )?);
    // New flows: distinct source ports and clients, so every SYN misses and is recorded.
    let new4: Vec<_> = sports(1024)
        .enumerate()
        .map(|(i, p)| {
            frame(
                IpAddr::V4(Ipv4Addr::from(
                    u32::from(CLIENT4) + u32::try_from(i / 60_000).unwrap_or(0),
                )),
                v4,
                p,
                SYN,
            )
        })
        .collect();
    out.push(measure(
        "IPv4 new flow (SYN)",
        new4,
        &forwarded,
        Counter::FlowCreated,
    )?);
    ns_in(&env, || {
        test_run_repeat(prog, &frame(c4, v4, 40_000, SYN), ifindex, 1)
    })?;
    out.push(measure(
        "IPv4 established",
        one(c4, v4, ACK),
        &forwarded,
        Counter::ConntrackHit,
    )?);
    let new6: Vec<_> = sports(1024)
        .enumerate()
        .map(|(i, p)| {
            frame(
                IpAddr::V6(Ipv6Addr::from(u128::from(CLIENT6) + (i / 60_000) as u128)),
                v6,
                p,
                SYN,
            )
        })
        .collect();
    out.push(measure(
        "IPv6 new flow (SYN)",
        new6,
        &forwarded,
        Counter::FlowCreated,
    )?);
    ns_in(&env, || {
        test_run_repeat(prog, &frame(c6, v6, 40_000, SYN), ifindex, 1)
    })?;
    out.push(measure(
        "IPv6 established",
        one(c6, v6, ACK),
        &forwarded,
        Counter::ConntrackHit,
    )?);
    out.push(ns_in(&env, || proxy_first_segment(&env, prog, ifindex))?);
    // Each run gets the SYN afresh (one syscall per run), so rewriting it into the RST is fine.
    out.push(measure(
        "edge SYN refused (RST)",
        vec![frame_to(c4, IpAddr::V4(EDGE4), 40_000, 443, SYN, &[]); n],
        &[XDP_TX],
        Counter::TxRstClosed,
    )?);
    // Cross-check with repeat: valid only for paths that leave the packet alone.
    let rep = |p: &Xdp, f: Vec<u8>| ns_in(&env, || test_run_repeat(p, &f, ifindex, REPEAT));
    let (_, _, d) = rep(base, frame(c4, v4, 40_000, ACK))?;
    out.push(Measured {
        name: "baseline XDP_PASS, repeat",
        ns: nanos(d),
        proof: format!("repeat {REPEAT}"),
    });
    let before = env.counter(Counter::PassNotVip)?;
    let (_, _, d) = rep(prog, frame(c4, other, 40_000, ACK))?;
    let grew = env.counter(Counter::PassNotVip)? - before;
    ensure!(
        grew == u64::from(REPEAT),
        "non-VIP repeat: pass_not_vip grew by {grew}"
    );
    out.push(Measured {
        name: "non-VIP pass, repeat",
        ns: nanos(d),
        proof: format!("pass_not_vip +{grew}"),
    });
    Ok(out)
}

/// A PROXY v2 header from a trusted upstream naming `client`, then 64 bytes of request.
fn proxy_payload(client: Ipv4Addr, port: u16) -> Vec<u8> {
    let mut h = vec![
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0, 12,
    ];
    h.extend_from_slice(&client.octets());
    h.extend_from_slice(&VIP4.octets());
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&81u16.to_be_bytes());
    h.extend_from_slice(&[0u8; 64]);
    h
}

/// The first payload segment of flows awaiting their header: each flow's SYN runs first,
/// unmeasured, and the proof is the VIP's `accepted` outcome growing once per measured run.
fn proxy_first_segment(env: &PacketEnv, prog: &Xdp, ifindex: u32) -> Result<Measured> {
    let accepted = || -> Result<u64> {
        Ok(env
            .dp
            .proxy_outcomes("proxy4")?
            .into_iter()
            .find(|(o, _)| *o == ProxyOutcome::Accepted)
            .map_or(0, |(_, n)| n))
    };
    let flow = |i: usize| {
        let client = IpAddr::V4(Ipv4Addr::from(
            u32::from(CLIENT4) + u32::try_from(i / 60_000).unwrap_or(0),
        ));
        let port = 1024 + u16::try_from(i % 60_000).unwrap_or(0);
        let syn = frame_to(client, IpAddr::V4(VIP4), port, 81, SYN, &[]);
        let data = frame_to(
            client,
            IpAddr::V4(VIP4),
            port,
            81,
            ACK | PSH,
            &proxy_payload(Ipv4Addr::new(198, 51, 100, 7), port),
        );
        (syn, data)
    };
    let forwarded = [XDP_TX, XDP_REDIRECT];
    let mut total = Duration::ZERO;
    let mut before = 0;
    for i in 0..RUNS as usize + WARMUP {
        if i == WARMUP {
            before = accepted()?;
            total = Duration::ZERO;
        }
        let (syn, data) = flow(i);
        let (got, _, _) = test_run_repeat(prog, &syn, ifindex, 1)?;
        ensure!(forwarded.contains(&got), "proxy SYN: action {got}");
        let (got, _, d) = test_run_repeat(prog, &data, ifindex, 1)?;
        ensure!(forwarded.contains(&got), "proxy header: action {got}");
        total += d;
    }
    let grew = accepted()? - before;
    ensure!(
        grew == u64::from(RUNS),
        "PROXY first segment: accepted grew by {grew}, not {RUNS}"
    );
    Ok(Measured {
        name: "PROXY v2 first segment",
        ns: nanos(total) / f64::from(RUNS),
        proof: format!("proxy4 accepted +{grew}"),
    })
}

fn nanos(d: Duration) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "nanoseconds per packet")]
    let ns = d.as_nanos() as f64;
    ns
}

/// Test runs that name an ifindex must happen inside the namespace that owns it.
fn ns_in<T: Send>(env: &PacketEnv, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    env.ns().exec(f)?
}

fn main() -> ExitCode {
    let what: Vec<String> = std::env::args().skip(1).collect();
    let mode = what.first().map(String::as_str);
    if !matches!(mode, Some("xdp" | "edge" | "control")) {
        eprintln!("usage: bench xdp|edge|control");
        return ExitCode::from(2);
    }
    if !is_root() {
        eprintln!("bench needs root (BPF and network namespaces)");
        return ExitCode::FAILURE;
    }
    if mode == Some("control") {
        return match control::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if mode == Some("edge") {
        return match edge::run() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match xdp_bench() {
        Ok(rows) => {
            let base = rows[0].ns;
            let base_rep = rows
                .iter()
                .find(|r| r.name == "baseline XDP_PASS, repeat")
                .map_or(base, |r| r.ns);
            println!("{:<28} {:>9} {:>8}  proof", "path", "ns/pkt", "× base");
            for r in &rows {
                let b = if r.name.ends_with("repeat") {
                    base_rep
                } else {
                    base
                };
                println!(
                    "{:<28} {:>9.1} {:>8.2}  {}",
                    r.name,
                    r.ns,
                    r.ns / b,
                    r.proof
                );
            }
            println!("(one run per syscall, kernel-timed, {RUNS} runs per path; ratios against the baseline measured the same way)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
