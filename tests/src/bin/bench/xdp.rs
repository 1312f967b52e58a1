//! `cargo xtask bench xdp`: nanoseconds per packet of `sluice_xdp` by path, beside a trivial
//! `XDP_PASS` program measured the same way in the same run, plus live-frame forwarding
//! rates through a veth pair. [`report`] prints it and explains how to read it.

mod live;
mod machine;
mod measure;
pub mod paths;
mod report;

use anyhow::{Context as _, Result};
use aya::{programs::Xdp, Ebpf, EbpfLoader};
use lb_common::maps::DEFAULT_RING_SIZE;
use lb_userspace::{dataplane::Options, shutdown::NodeState, BASELINE_OBJECT};
use sluice_tests::packet_env::{test_run_repeat, PacketEnv, GW0};

use measure::{Bench, Pass};

/// Namespace of this bench (other benches and tests use other names).
const NAMESPACE: &str = "slxdpbench";
/// Duration pass: rounds × sampled runs per chunk = 100,000 runs per path (as the independent
/// harness did). Stats pass: fewer, a mean needs fewer runs than a p90.
const ROUNDS: usize = 20;
const CHUNK: usize = 5_000;
const STATS_ROUNDS: usize = 10;
const STATS_CHUNK: usize = 3_000;
/// Conntrack entries: the daemon's default, enough for every new flow of both passes without
/// an eviction.
const CONNTRACK: u32 = 1 << 20;
/// Repeats of the `repeat` cross-check.
const REPEAT: u32 = 5_000_000;

/// What to run: by default every path, both passes, the cross-checks and live frames.
/// `bench xdp --only NAME [--rounds N] [--conntrack N]` runs the paths whose name contains `NAME` (and the
/// baseline) for `N` duration rounds (default 20), prints their table and nothing else: a
/// long run of one path for `perf record -e cpu-clock`, which then attributes the path's time
/// to the program and to the kernel functions it calls (this machine has no hardware counters
/// for `bpftool prog profile`). `--conntrack` sizes the conntrack map (default [`CONNTRACK`]):
/// a small one fills up, so new flows then evict, as on a gateway in steady state.
struct Args {
    only: Option<String>,
    rounds: usize,
    conntrack: u32,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut args = Args {
            only: None,
            rounds: ROUNDS,
            conntrack: CONNTRACK,
        };
        let mut it = std::env::args().skip(2);
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match a.as_str() {
                "--only" => args.only = Some(value()?),
                "--rounds" => args.rounds = value()?.parse().context("--rounds")?,
                "--conntrack" => args.conntrack = value()?.parse().context("--conntrack")?,
                other => {
                    anyhow::bail!("bench xdp: unknown argument {other:?} (--only NAME, --rounds N, --conntrack N)")
                }
            }
        }
        Ok(args)
    }
}

/// Loads the trivial programs' object with `names` loaded.
fn baseline(names: &[&str]) -> Result<Ebpf> {
    let mut ebpf = EbpfLoader::new()
        .load(BASELINE_OBJECT)
        .context("loading the baseline object")?;
    for name in names {
        let p: &mut Xdp = ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?;
        p.load().with_context(|| format!("loading {name}"))?;
    }
    Ok(ebpf)
}

fn xdp<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    Ok(ebpf
        .program(name)
        .with_context(|| format!("{name} missing"))?
        .try_into()?)
}

pub fn run() -> Result<()> {
    let args = Args::parse()?;
    let cpus = machine::cpus();
    let load_start = machine::load_1min()?;
    let stats_sysctl = machine::stats_sysctl()?;
    let ring = paths::VIPS * 2 * DEFAULT_RING_SIZE;
    let mut env = PacketEnv::new(
        NAMESPACE,
        &Options::unpinned(args.conntrack, ring),
        paths::CONFIG,
    )?;
    // Only the edge row is affected: a closed node refuses SYNs to edge VIPs, L4 VIPs forward.
    env.dp.set_node_state(NodeState::Closed)?;
    for cmd in paths::live_next_hop() {
        env.ns().ip(&cmd.split_whitespace().collect::<Vec<_>>())?;
    }
    // Next hops as the daemon keeps them (`sluice run` resolves them over rtnetlink), once
    // the live backend has its route and neighbour: forwarded packets take the cached next
    // hop, not a route lookup each.
    let resolved = env.resolve_next_hops()?;
    anyhow::ensure!(resolved > 0, "no backend got a next hop");
    let env = env;
    let trivial = baseline(&["baseline_pass", "baseline_tx"])?;
    let mut sinks = baseline(&["baseline_tx"])?;
    let sink: &mut Xdp = sinks
        .program_mut("baseline_tx")
        .context("baseline_tx missing")?
        .try_into()?;
    let bench = Bench {
        env: &env,
        baseline: xdp(&trivial, "baseline_pass")?,
        sluice: env.dp.program()?,
        ifindex: env.ifindex(GW0),
    };
    let tx = xdp(&trivial, "baseline_tx")?;

    // Everything below runs on one thread inside the namespace (test runs name its ifindex,
    // and the program's next-hop lookups use its tables), pinned to one CPU.
    let results = env.ns().exec(|| -> Result<report::Results> {
        let cpu = machine::pin_to_last_cpu()?;
        let mut paths = paths::paths();
        if let Some(only) = &args.only {
            paths.retain(|p| p.prog == paths::Prog::Baseline || p.name.contains(only.as_str()));
        }
        bench.prepare(&paths)?;
        let base_cnt = bench.baseline.info()?.run_count();
        let durations = measure::pass(&bench, &mut paths, Pass::Duration, args.rounds, CHUNK)?;
        // bpf_stats counts only while someone has it on: a grown count means this pass
        // paid for it.
        let stats_leak = bench.baseline.info()?.run_count() != base_cnt;
        if args.only.is_some() {
            return Ok(report::Results {
                cpu,
                cpus,
                kernel: machine::kernel(),
                load_start,
                load_end: machine::load_1min()?,
                stats_sysctl,
                stats_leak,
                stats: paths.iter().map(|_| measure::Tally::default()).collect(),
                paths,
                durations,
                rounds: args.rounds,
                repeat: None,
                live: None,
            });
        }
        let stats = {
            let _on =
                aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
            measure::pass(&bench, &mut paths, Pass::Stats, STATS_ROUNDS, STATS_CHUNK)?
        };
        let repeat = repeat_cross_check(&bench)?;
        let live = {
            let _sinks = live::Sinks::attach(sink)?;
            live::run(&env, bench.sluice, tx, bench.ifindex)?
        };
        Ok(report::Results {
            cpu,
            cpus,
            kernel: machine::kernel(),
            load_start,
            load_end: machine::load_1min()?,
            stats_sysctl,
            stats_leak,
            paths,
            durations,
            rounds: args.rounds,
            stats,
            repeat: Some(repeat),
            live: Some(live),
        })
    })??;
    report::print(&results);
    Ok(())
}

/// The trivial program and the non-VIP pass with `repeat` in one syscall: the program cost
/// without the per-run timer overhead of the one-run-per-syscall method (valid only for
/// programs that leave the frame alone, so not for forwarding paths).
fn repeat_cross_check(bench: &Bench<'_>) -> Result<[f64; 2]> {
    let base = test_run_repeat(
        bench.baseline,
        &paths::baseline_frame(),
        bench.ifindex,
        REPEAT,
    )?;
    let not_vip = lb_common::Counter::PassNotVip;
    let before = bench.env.counter(not_vip)?;
    let pass = test_run_repeat(bench.sluice, &paths::non_vip_frame(), bench.ifindex, REPEAT)?;
    let grew = bench.env.counter(not_vip)? - before;
    anyhow::ensure!(
        grew == u64::from(REPEAT),
        "non-VIP repeat: {} grew by {grew}, not {REPEAT}",
        not_vip.name()
    );
    #[expect(clippy::cast_precision_loss, reason = "ns per run")]
    Ok([base.2.as_nanos() as f64, pass.2.as_nanos() as f64])
}
