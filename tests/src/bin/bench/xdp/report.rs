//! The printed report of `bench xdp`: a header saying how it was measured, one row per path,
//! the live-frame rates, and what separates these figures from other harnesses'.

use super::live::{self, LiveRow};
use super::machine::BUSY_LOAD;
use super::measure::{stats_ns, Summary, Tally, OUTLIER_NS, WARMUP};
use super::paths::{Goal, Path, Proof};
use super::{CHUNK, REPEAT, ROUNDS, STATS_CHUNK, STATS_ROUNDS};

/// Everything one run of the bench found.
pub struct Results {
    pub cpu: usize,
    pub cpus: usize,
    pub kernel: String,
    pub load_start: f64,
    pub load_end: f64,
    pub stats_sysctl: bool,
    /// The baseline's bpf_stats run count grew during the duration pass.
    pub stats_leak: bool,
    pub paths: Vec<Path>,
    pub durations: Vec<Tally>,
    pub stats: Vec<Tally>,
    /// ns per run with `repeat`: baseline, non-VIP pass.
    pub repeat: [f64; 2],
    pub live: [LiveRow; 2],
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn goal(g: Goal, net: f64, established_net: f64) -> String {
    match g {
        Goal::None => "-".into(),
        Goal::NetAtMost(max) => format!("≤ {max:.0} {}", if net <= max { "met" } else { "OVER" }),
        Goal::TimesEstablished(max) => {
            let r = net / established_net;
            format!(
                "≤ {max}× est: {r:.2}× {}",
                if r <= max { "met" } else { "OVER" }
            )
        }
    }
}

pub fn print(r: &Results) {
    let sum: Vec<Summary> = r
        .durations
        .iter()
        .map(|t| Summary::of(&t.durations))
        .collect();
    let stats: Vec<Option<f64>> = r.stats.iter().map(stats_ns).collect();
    let base = sum[0];
    let base_stats = stats[0].unwrap_or(0.0);
    let established = r
        .paths
        .iter()
        .position(|p| p.name == "IPv4 established")
        .map_or(0.0, |i| sum[i].median - base.median);

    println!(
        "sluice_xdp by path, BPF_PROG_TEST_RUN one run per syscall (repeat = 1), kernel {}",
        r.kernel
    );
    println!(
        "  duration pass: {} sampled runs per path in {ROUNDS} interleaved rounds (baseline in every \
         round, {WARMUP} warm-up runs per chunk not sampled), bpf_stats off",
        ROUNDS * CHUNK
    );
    println!(
        "  stats pass:    {} runs per path, {STATS_ROUNDS} rounds, bpf_stats on (BPF_ENABLE_STATS fd, this pass only)",
        STATS_ROUNDS * STATS_CHUNK
    );
    println!(
        "  bench thread pinned to CPU {} of {}; load average (1 min) {:.2} at start, {:.2} at end",
        r.cpu, r.cpus, r.load_start, r.load_end
    );
    if r.load_start.max(r.load_end) > BUSY_LOAD {
        println!(
            "  WARNING: load average above {BUSY_LOAD}: other processes share these {} CPUs; \
             p90s and means are inflated, medians and nets of this run still compare",
            r.cpus
        );
    }
    if r.stats_sysctl || r.stats_leak {
        println!(
            "  WARNING: bpf_stats were on during the duration pass (kernel.bpf_stats_enabled = {}, \
             or another process holds a BPF_ENABLE_STATS fd): every duration includes their two clock reads",
            u8::from(r.stats_sysctl)
        );
    }
    println!();
    println!(
        "{:<24} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7} {:>7}  {:<22} proof (grew by = runs)",
        "path", "median", "p90", "mean", "net", "× base", "stats", "s.net", "goal (net)"
    );
    for (i, p) in r.paths.iter().enumerate() {
        let s = sum[i];
        let net = s.median - base.median;
        let st = stats[i].unwrap_or(f64::NAN);
        let runs = r.durations[i].runs + r.stats[i].runs;
        let grew = r.durations[i].proof_grew + r.stats[i].proof_grew;
        let proof = match p.proof {
            Proof::Action => format!("XDP_PASS returned {runs} times"),
            other => format!("{} +{grew}", other.name()),
        };
        let (net_s, snet_s) = if i == 0 {
            ("-".to_owned(), "-".to_owned())
        } else {
            (format!("{net:.0}"), format!("{:.0}", st - base_stats))
        };
        println!(
            "{:<24} {:>7.0} {:>7.0} {:>7.1} {:>7} {:>7.2} {:>7.1} {:>7}  {:<22} {proof}",
            p.name,
            s.median,
            s.p90,
            s.mean,
            net_s,
            s.median / base.median,
            st,
            snet_s,
            goal(p.goal, net, established),
        );
    }
    let stats_on = Summary::of(&r.stats[0].durations);
    println!();
    println!(
        "cross-checks: with repeat = {REPEAT} in one syscall the baseline costs {:.1} ns per run, the non-VIP \
         pass {:.1} ({:.1} net); the baseline's duration median with bpf_stats on is {:.0} ns (off: {:.0})",
        r.repeat[0],
        r.repeat[1],
        r.repeat[1] - r.repeat[0],
        stats_on.median,
        base.median
    );
    print_live(&r.live);
    print_reading(r, &sum, base_stats);
}

/// How to read the table, with this run's own figures for each effect that separates it from
/// other harnesses (and from what this bench printed before it took medians).
fn print_reading(r: &Results, sum: &[Summary], base_stats: f64) {
    let base = sum[0];
    let est = r
        .paths
        .iter()
        .position(|p| p.name == "IPv4 established")
        .map_or(base, |i| sum[i]);
    let stats_on = Summary::of(&r.stats[0].durations);
    let loop_ns = base.median - r.repeat[0];
    let outliers: usize = sum.iter().map(|s| s.outliers).sum();
    let sampled: usize = r.durations.iter().map(|t| t.durations.len()).sum();
    println!();
    println!("Reading it:");
    println!(
        "  median, p90, mean: the kernel's `duration` of single runs, ns. The trivial program costs {:.1} ns \
         per run with repeat = {REPEAT} (cross-check above), so {loop_ns:.0} of its {:.0} ns median are the \
         test-run loop itself (two clock reads, bh disable/enable), which every path pays too.",
        r.repeat[0], base.median
    );
    println!(
        "  net = median - baseline median: the program's own cost, and what the goals of issue 14 are set on; \
         × base = median / baseline median (gross ratio, loop overhead included)."
    );
    println!(
        "  stats = bpf_stats run_time_ns / run_cnt: the program alone, plus one clock read (the baseline's \
         {base_stats:.1} ns is that read); s.net = stats - baseline stats. A mean, so it moves with \
         outliers where net does not."
    );
    println!(
        "  proof: each path's counter grew by exactly its runs (both passes, warm-up included); \
         live frames: sluice's counters and peer0's received count, per frame sent."
    );
    println!("Why other figures differ (an independent harness: 70 ns baseline, 490-530 ns IPv4 established \
              gross; this bench before: 109-131 and 680-721):");
    println!(
        "  - Means. This bench used to print means. A run that an interrupt, the softirqs run at the loop's \
         local_bh_enable, or a host vCPU stall lands in takes microseconds: here {outliers} of {sampled} runs \
         took over {} µs, and means exceed medians by {:.1} ns (baseline) and {:.1} ns (IPv4 established), \
         far more on a loaded machine. Medians and p90s are the figures now.",
        OUTLIER_NS / 1000,
        base.mean - base.median,
        est.mean - est.median
    );
    println!(
        "  - bpf_stats. Turned on (sysctl kernel.bpf_stats_enabled or a BPF_ENABLE_STATS fd, by anyone), they \
         add two clock reads to every run of every program: here the baseline's median was {:.0} ns with \
         them and {:.0} without. Durations come from a pass with them off (checked: {}), stats from their \
         own pass.",
        stats_on.median,
        base.median,
        if r.stats_leak || r.stats_sysctl {
            "NOT off, see the warning"
        } else {
            "the baseline's run count did not move"
        }
    );
    println!(
        "  - Gross figures include the loop overhead ({loop_ns:.0} ns here), which depends on the machine's \
         clock and CPU: compare nets, and ratios only within one run. The same method gives different \
         gross figures on another machine or hour (the load average above says how busy this one was)."
    );
    println!(
        "  - Frames: established flows are ACK + 64 B (as that harness); SYNs carry no payload. One CPU \
         (pinned), paths interleaved, {WARMUP} warm-up runs per chunk. Programs are test-run, not attached: \
         both are called the same way, so the call's cost cancels in net."
    );
}

fn print_live(rows: &[LiveRow; 2]) {
    println!();
    println!(
        "live frames (BPF_F_TEST_XDP_LIVE_FRAMES, ingress gw0, XDP_TX to its veth peer, batch {}): \
         median of {} rounds × {} frames, alternating",
        live::BATCH,
        live::ROUNDS,
        live::FRAMES
    );
    for row in rows {
        println!(
            "  {:<30} {:>6.2} Mpps  kernel {:>5.1} ns/frame  peer0 received {} of {}{}  {}",
            row.name,
            median(&row.pps) / 1e6,
            median(&row.ns),
            row.delivered,
            row.sent,
            if row.delivered == row.sent {
                ""
            } else {
                " (LOSS)"
            },
            row.proof
        );
    }
    println!(
        "  sluice_xdp forwards at {:.2}× the trivial XDP_TX program's rate ({:.0} ns more per frame)",
        median(&rows[0].pps) / median(&rows[1].pps),
        median(&rows[0].ns) - median(&rows[1].ns)
    );
}
