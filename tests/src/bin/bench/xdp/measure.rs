//! The two measurement passes over every path, one `BPF_PROG_TEST_RUN` per run.
//!
//! - **duration**: the kernel's `duration` of each run (repeat = 1), `bpf_stats` off. Kept per
//!   run, so the report gives medians and p90s: a run that an interrupt or a preemption lands
//!   in (the test-run loop only disables migration) costs microseconds, which moves a mean a
//!   lot on a busy machine and a median not at all.
//! - **stats**: the same runs with `bpf_stats` on (`BPF_ENABLE_STATS`, held only for this pass):
//!   the program's own `run_time_ns / run_cnt`, timed by the kernel around the program alone.
//!   Enabling stats adds two clock reads to every run of every program, so this pass is never
//!   the one the durations come from.
//!
//! Both passes interleave: each round runs a chunk of every path in turn, the baseline
//! included, rotating the order, so a noisy stretch of time spreads over all paths instead of
//! landing on one.

use anyhow::{ensure, Context as _, Result};
use aya::programs::Xdp;
use sluice_tests::packet_env::{test_run_repeat, PacketEnv};

use super::paths::{Path, Prog, Setup};

/// Runs before each chunk that are not sampled: the first runs after switching paths find
/// the other path's data in the caches. They still count for the proofs.
pub const WARMUP: usize = 50;

/// The programs and where their test runs are received.
pub struct Bench<'a> {
    pub env: &'a PacketEnv,
    pub baseline: &'a Xdp,
    pub sluice: &'a Xdp,
    pub ifindex: u32,
}

impl Bench<'_> {
    pub fn prog(&self, p: Prog) -> &Xdp {
        match p {
            Prog::Baseline => self.baseline,
            Prog::Sluice => self.sluice,
        }
    }

    /// One run of `frame` on the path's program, checked against the path's actions.
    fn run(&self, path: &Path, frame: &[u8]) -> Result<u32> {
        let (action, _, d) = test_run_repeat(self.prog(path.prog), frame, self.ifindex, 1)?;
        ensure!(
            path.actions.contains(&action),
            "{}: XDP action {action}, expected one of {:?}",
            path.name,
            path.actions
        );
        Ok(u32::try_from(d.as_nanos()).unwrap_or(u32::MAX))
    }

    /// Runs each path's `prepare` frame once (an established flow's SYN).
    pub fn prepare(&self, paths: &[Path]) -> Result<()> {
        for p in paths {
            if let Some(f) = &p.prepare {
                self.run(p, f)
                    .with_context(|| format!("{}: preparing", p.name))?;
            }
        }
        Ok(())
    }
}

/// Which pass a chunk belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    Duration,
    Stats,
}

/// What one pass found for one path.
#[derive(Debug, Default)]
pub struct Tally {
    /// Sampled per-run durations (ns), warm-up runs left out.
    pub durations: Vec<u32>,
    /// Runs made, warm-up included.
    pub runs: u64,
    /// How much the path's proof grew over those runs.
    pub proof_grew: u64,
    /// `bpf_stats` deltas of the path's program over those runs (stats pass only).
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// `rounds` rounds of `chunk` sampled runs (plus [`WARMUP`]) of every path.
pub fn pass(
    bench: &Bench<'_>,
    paths: &mut [Path],
    which: Pass,
    rounds: usize,
    chunk: usize,
) -> Result<Vec<Tally>> {
    let mut tallies: Vec<Tally> = paths.iter().map(|_| Tally::default()).collect();
    for round in 0..rounds {
        for k in 0..paths.len() {
            let i = (k + round) % paths.len();
            run_chunk(bench, &mut paths[i], &mut tallies[i], which, chunk)
                .with_context(|| format!("{} ({which:?} pass)", paths[i].name))?;
        }
    }
    Ok(tallies)
}

fn run_chunk(
    bench: &Bench<'_>,
    path: &mut Path,
    tally: &mut Tally,
    which: Pass,
    chunk: usize,
) -> Result<()> {
    let runs = path.runs(WARMUP + chunk);
    // Setup frames (a PROXY flow's SYN) go first, so the stats window below holds only
    // measured runs of the program, unless the path wants each right before its run.
    let just_before = path.setup == Setup::JustBefore;
    if !just_before {
        for r in &runs {
            if let Some(s) = &r.setup {
                bench.run(path, s).context("setup frame")?;
            }
        }
    }
    let prog = bench.prog(path.prog);
    let proof_before = path.proof.read(bench.env)?;
    let info_before = (which == Pass::Stats && !just_before)
        .then(|| prog.info())
        .transpose()?;
    tally.durations.reserve(chunk);
    for (j, r) in runs.iter().enumerate() {
        if let (true, Some(s)) = (just_before, &r.setup) {
            bench.run(path, s).context("setup frame")?;
        }
        let ns = bench.run(path, &r.frame)?;
        if j >= WARMUP {
            tally.durations.push(ns);
        }
    }
    let n = u64::try_from(runs.len())?;
    if let Some(before) = info_before {
        let after = prog.info()?;
        let cnt = after.run_count() - before.run_count();
        ensure!(
            cnt == n,
            "bpf_stats run_cnt grew by {cnt} over {n} runs: something else ran the program"
        );
        tally.run_cnt += cnt;
        tally.run_time_ns += u64::try_from(
            after
                .run_time()
                .saturating_sub(before.run_time())
                .as_nanos(),
        )?;
    }
    let grew = match (proof_before, path.proof.read(bench.env)?) {
        (Some(b), Some(a)) => a - b,
        // Checked per run by `Bench::run`.
        _ => n,
    };
    ensure!(
        grew == n,
        "{} grew by {grew} over {n} runs",
        path.proof.name()
    );
    tally.runs += n;
    tally.proof_grew += grew;
    Ok(())
}

/// Order statistics of a set of per-run durations.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub median: f64,
    pub p90: f64,
    pub mean: f64,
    /// Runs over [`OUTLIER_NS`].
    pub outliers: usize,
}

/// A run this long had something else in it: an interrupt, the softirqs that the test-run
/// loop's `local_bh_enable` runs, or the host stalling the vCPU.
pub const OUTLIER_NS: u32 = 5_000;

impl Summary {
    /// # Panics
    /// On no samples.
    pub fn of(samples: &[u32]) -> Summary {
        assert!(!samples.is_empty(), "no samples");
        let mut s = samples.to_vec();
        s.sort_unstable();
        let at = |q: f64| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss,
                reason = "an index into a few 100k samples"
            )]
            let i = ((s.len() - 1) as f64 * q).round() as usize;
            f64::from(s[i])
        };
        #[expect(clippy::cast_precision_loss, reason = "sums far below 2^52")]
        let mean = s.iter().map(|&v| u64::from(v)).sum::<u64>() as f64 / s.len() as f64;
        Summary {
            median: at(0.5),
            p90: at(0.9),
            mean,
            outliers: s.iter().filter(|&&v| v > OUTLIER_NS).count(),
        }
    }
}

/// `bpf_stats` mean ns per run of a tally, if it has stats.
pub fn stats_ns(t: &Tally) -> Option<f64> {
    #[expect(clippy::cast_precision_loss, reason = "far below 2^52")]
    (t.run_cnt > 0).then(|| t.run_time_ns as f64 / t.run_cnt as f64)
}
