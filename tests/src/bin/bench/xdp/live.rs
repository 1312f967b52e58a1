//! Live-frame mode: forwarded packets per second through a veth pair.
//!
//! `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES` runs a program on `FRAMES` copies of
//! a frame as if `gw0` had received them, and really sends what it returns `XDP_TX` for: out
//! of `gw0`, into its veth peer `peer0`. `sluice_xdp` forwards an established IPv4 flow (to
//! [`LIVE_BACKEND`](super::paths::LIVE_BACKEND), whose next hop is on `gw0`, so its verdict is
//! `XDP_TX` too), and the trivial `baseline_tx` bounces the same frame unchanged: the
//! forwarding ceiling of the pair. Both run in the same rounds, alternating.
//!
//! A veth only accepts XDP frames when its peer runs XDP, so `peer0` and `peer1` get a sink:
//! `baseline_tx` again, which sends each frame back towards `gw0`, where the kernel drops it
//! (no XDP program and no GRO there, so no receive queue for XDP frames). The receive side
//! thus costs one trivial XDP run per frame and no network stack, for both programs alike.
//!
//! Rates are counted on the sending side (frames / wall time of the syscall, the kernel's
//! own time per frame beside it). Delivery is checked on the receiving side: `peer0`'s
//! received-packet counter must grow by the frames sent. `sluice_xdp`'s own counters prove
//! that every frame was forwarded as an established flow.

use std::time::Instant;

use anyhow::{ensure, Context as _, Result};
use aya::programs::{Xdp, XdpMode};
use lb_common::Counter;
use sluice_tests::packet_env::{test_run, test_run_live, PacketEnv};

use super::paths::{live_flow, XDP_TX};

/// Frames per live run, runs per program, and frames per kernel batch (the default, the
/// size of a NAPI poll).
pub const FRAMES: u32 = 1_000_000;
pub const ROUNDS: usize = 5;
pub const BATCH: u32 = 64;

/// One program's live-frame results.
#[derive(Debug, Default)]
pub struct LiveRow {
    pub name: &'static str,
    /// Frames per second of wall time, each round.
    pub pps: Vec<f64>,
    /// Frames per second the sending thread spent on a CPU, each round: what the rate would
    /// be with the CPU to itself (wall time also holds other processes' turns on a busy
    /// machine).
    pub pps_on_cpu: Vec<f64>,
    /// The kernel's ns per frame of each round (sending included).
    pub ns: Vec<f64>,
    pub sent: u64,
    /// Frames `peer0` received.
    pub delivered: u64,
    /// What the program's counters say (sluice only).
    pub proof: String,
}

/// The sinks on the peers; detached when dropped (before the namespace goes).
pub struct Sinks<'a> {
    prog: &'a mut Xdp,
    links: Vec<aya::programs::xdp::XdpLinkId>,
}

impl<'a> Sinks<'a> {
    /// Attaches `prog` (the trivial `XDP_TX` program) to both peers, in the calling thread's
    /// namespace.
    pub fn attach(prog: &'a mut Xdp) -> Result<Self> {
        let mut links = Vec::new();
        for dev in ["peer0", "peer1"] {
            links.push(
                prog.attach(dev, XdpMode::Driver)
                    .with_context(|| format!("attaching the sink to {dev}"))?,
            );
        }
        Ok(Sinks { prog, links })
    }
}

impl Drop for Sinks<'_> {
    fn drop(&mut self) {
        for l in self.links.drain(..) {
            // Best effort: the namespace's deletion removes the veths (and the links) anyway.
            let _ = self.prog.detach(l);
        }
    }
}

/// `dev`'s received packets, from `ip -s -j link` in the bench namespace.
fn rx_packets(env: &PacketEnv, dev: &str) -> Result<u64> {
    let out = env.ns().ip(&["-s", "-j", "link", "show", "dev", dev])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing ip -j link")?;
    v[0]["stats64"]["rx"]["packets"]
        .as_u64()
        .with_context(|| format!("no rx packet count for {dev} in {out}"))
}

/// Nanoseconds the calling thread has spent on a CPU (the scheduler's own account, which
/// includes the softirqs that ran in its context).
fn on_cpu_ns() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .context("reading /proc/thread-self/schedstat")?;
    s.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .context("parsing /proc/thread-self/schedstat")
}

/// Runs both programs `ROUNDS` times each, alternating. Call from a thread inside the bench
/// namespace (the ingress ifindex and the next hops are the namespace's).
pub fn run(env: &PacketEnv, sluice: &Xdp, trivial: &Xdp, ifindex: u32) -> Result<[LiveRow; 2]> {
    let (syn, data) = live_flow();
    let (action, _) = test_run(sluice, &syn, ifindex).context("live flow SYN")?;
    ensure!(
        action == XDP_TX,
        "live flow SYN: action {action}, expected XDP_TX (its backend's next hop is on gw0)"
    );
    let mut rows = [
        LiveRow {
            name: "IPv4 established (sluice_xdp)",
            ..LiveRow::default()
        },
        LiveRow {
            name: "trivial XDP_TX (baseline_tx)",
            ..LiveRow::default()
        },
    ];
    // Warm both up: page pools, the veth rings, the flow's cache lines.
    for p in [sluice, trivial] {
        test_run_live(p, &data, ifindex, FRAMES / 10, BATCH)?;
    }
    let counters = || -> Result<[u64; 2]> {
        Ok([
            env.counter(Counter::ConntrackHit)?,
            env.counter(Counter::Tx)?,
        ])
    };
    let mut grew = [0u64; 2];
    for round in 0..ROUNDS {
        for k in 0..2 {
            let i = (k + round) % 2;
            let prog = if i == 0 { sluice } else { trivial };
            let rx = rx_packets(env, "peer0")?;
            let before = counters()?;
            let cpu = on_cpu_ns()?;
            let t = Instant::now();
            let per_frame = test_run_live(prog, &data, ifindex, FRAMES, BATCH)?;
            let wall = t.elapsed();
            let cpu = on_cpu_ns()? - cpu;
            let after = counters()?;
            let delivered = rx_packets(env, "peer0")? - rx;
            let row = &mut rows[i];
            row.pps.push(f64::from(FRAMES) / wall.as_secs_f64());
            #[expect(clippy::cast_precision_loss, reason = "ns of one run")]
            row.pps_on_cpu.push(f64::from(FRAMES) * 1e9 / cpu as f64);
            #[expect(clippy::cast_precision_loss, reason = "ns per frame")]
            row.ns.push(per_frame.as_nanos() as f64);
            row.sent += u64::from(FRAMES);
            row.delivered += delivered;
            if i == 0 {
                for (g, (a, b)) in grew.iter_mut().zip(after.iter().zip(before)) {
                    *g += a - b;
                }
            }
        }
    }
    let sent = rows[0].sent;
    ensure!(
        grew == [sent, sent],
        "live: {} +{} and {} +{} over {sent} frames: not every frame was forwarded as an \
         established flow",
        Counter::ConntrackHit.name(),
        grew[0],
        Counter::Tx.name(),
        grew[1]
    );
    rows[0].proof = format!(
        "{} +{}, {} +{}",
        Counter::ConntrackHit.name(),
        grew[0],
        Counter::Tx.name(),
        grew[1]
    );
    Ok(rows)
}
