//! `cargo xtask bench maglev`: time to build one VIP's Maglev table (M = 65537) for N = 10, 100
//! and 1000 equal-weight backends, and the share of slots that change owner when one of the N
//! leaves.
//!
//! Goals (issue 14): a build takes at most 2 ms at N = 100 and 20 ms at N = 1000, and removing
//! one backend moves at most 1/N + 1% of the slots. Criterion reports the build times with its
//! confidence intervals; the closing summary puts each median next to its goal. The disruption
//! bound is also asserted, without timing, by the unit test
//! `maglev::tests::removing_a_backend_moves_few_slots`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use lb_common::maglev::{populate, MaglevBackend, MaglevScratch};

/// The daemon's default table size.
const M: usize = 65_537;
const SIZES: [usize; 3] = [10, 100, 1000];

/// Identities as the daemon builds them: IPv4 octets, then the port in network order.
fn identities(n: usize) -> Vec<[u8; 6]> {
    (0..n)
        .map(|i| {
            let [hi, lo] = u16::try_from(i).expect("N < 65536").to_be_bytes();
            [10, 1, hi, lo, 0x1f, 0x90]
        })
        .collect()
}

fn backends(ids: &[[u8; 6]]) -> Vec<MaglevBackend<'_>> {
    ids.iter()
        .zip(0..)
        .map(|(id, value)| MaglevBackend {
            identity: id,
            weight: 1,
            value,
        })
        .collect()
}

/// One table build, with the caller-provided buffers the daemon also reuses.
fn build(b: &[MaglevBackend<'_>], table: &mut [u32], scratch: &mut [MaglevScratch]) {
    populate(b, 0, table, scratch).expect("a valid configuration");
}

fn bench_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("maglev_build_m65537");
    for n in SIZES {
        let ids = identities(n);
        let b = backends(&ids);
        let mut table = vec![0u32; M];
        let mut scratch = vec![MaglevScratch::default(); n];
        group.bench_with_input(BenchmarkId::from_parameter(n), &b, |bencher, b| {
            bencher.iter(|| build(black_box(b), &mut table, &mut scratch));
        });
    }
    group.finish();
}

/// Share of the M slots whose owner changes when backend `removed` leaves.
fn moved_share(all: &[MaglevBackend<'_>], removed: usize) -> f64 {
    let mut before = vec![0u32; M];
    let mut after = vec![0u32; M];
    let mut scratch = vec![MaglevScratch::default(); all.len()];
    build(all, &mut before, &mut scratch);
    let mut rest = all.to_vec();
    rest.remove(removed);
    build(&rest, &mut after, &mut scratch);
    let moved = before.iter().zip(&after).filter(|(a, b)| a != b).count();
    #[expect(clippy::cast_precision_loss, reason = "counts below 2^17")]
    let share = moved as f64 / M as f64;
    share
}

/// Median wall time of `runs` builds, for the summary next to the goals.
fn median_build(n: usize, runs: usize) -> Duration {
    let ids = identities(n);
    let b = backends(&ids);
    let mut table = vec![0u32; M];
    let mut scratch = vec![MaglevScratch::default(); n];
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            build(black_box(&b), &mut table, &mut scratch);
            t.elapsed()
        })
        .collect();
    times.sort_unstable();
    times[runs / 2]
}

fn summary() {
    println!("\nMaglev summary, M = {M}, equal weights (goals from issue 14):");
    println!(
        "{:>6} {:>14} {:>10} {:>26} {:>10}",
        "N", "build median", "goal", "slots moved, one leaves", "bound"
    );
    for n in SIZES {
        let t = median_build(n, 101);
        let goal = match n {
            100 => Some(Duration::from_millis(2)),
            1000 => Some(Duration::from_millis(20)),
            _ => None,
        };
        // Every backend leaving once is N builds; ten spread over the list show the spread.
        let step = (n / 10).max(1);
        let shares: Vec<f64> = (0..n)
            .step_by(step)
            .map(|r| moved_share(&backends(&identities(n)), r))
            .collect();
        let worst = shares.iter().copied().fold(0.0, f64::max);
        #[expect(clippy::cast_precision_loss, reason = "N is small")]
        let bound = 1.0 / n as f64 + 0.01;
        println!(
            "{n:>6} {:>11.3} ms {:>10} {:>13.4}% worst of {:<3} {:>9.4}% {}",
            t.as_secs_f64() * 1e3,
            goal.map_or_else(|| "-".to_owned(), |g| format!("≤ {} ms", g.as_millis())),
            worst * 100.0,
            shares.len(),
            bound * 100.0,
            match goal {
                Some(g) if t > g => "BUILD OVER GOAL",
                _ if worst > bound => "MOVED OVER BOUND",
                _ => "ok",
            }
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_build(&mut c);
    c.final_summary();
    summary();
}
