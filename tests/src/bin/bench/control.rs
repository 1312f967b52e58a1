//! `cargo xtask bench control`: the control plane of the real daemon with conntrack full.
//!
//! The daemon runs as in production (release build, pinned, attached to `gw0` of a namespace).
//! Conntrack is filled to its 1,048,576 entries through the daemon's own pinned program with
//! `BPF_PROG_TEST_RUN` SYNs. The map keeps one LRU list per CPU, each with its share of the
//! entries, so the test-run thread is pinned to each CPU in turn and sends that CPU its share.
//! Then, with the table full: `/health/ready` latency, `/metrics` and `sluice backends`
//! latency, the daemon's CPU over an idle period, and SIGTERM → first 503 from readiness
//! while scrapes and `backends` run.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context as _, Result};
use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use lb_userspace::admin::{client, protocol::BackendRow, protocol::Request};
use sluice_tests::{
    daemon::{pin_dir, Daemon, Scrape, Scratch},
    http1::{get_closing, Reply},
    packet_env::{setup_namespace, test_run_repeat, GW0},
    NetNs,
};

use crate::xdp::paths::{frame, SYN, XDP_REDIRECT, XDP_TX};

const INSTANCE: &str = "slbctl";
const ENTRIES: u32 = 1 << 20;
const MANAGEMENT: &str = "198.18.10.1:9480";
const IDLE_PERIOD: Duration = Duration::from_secs(20);
const PROBES: usize = 500;
const SCRAPES: usize = 50;

fn config(dir: &Path) -> String {
    format!(
        r#"instance = "{INSTANCE}"
interfaces = ["gw0"]
conntrack_entries = {ENTRIES}
shutdown_delay = "5s"
shutdown_timeout = "1s"
[management]
address = "{MANAGEMENT}"
[admin]
socket = "{}"
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
"#,
        Daemon::socket_in(dir).display()
    )
}

pub fn run() -> Result<()> {
    let ns = setup_namespace(INSTANCE)?;
    let scratch = Scratch::create(INSTANCE)?;
    let mut daemon = Daemon::start(&ns, scratch.path(), INSTANCE, &config(scratch.path()))?;
    let management: SocketAddr = MANAGEMENT.parse()?;
    let socket = Daemon::socket_in(scratch.path());

    let started = Instant::now();
    let sent = fill(&ns)?;
    let fill_time = started.elapsed();
    let filled = Instant::now();
    // The counts come from the paced background walk: wait for the first walk that ended
    // after the fill (a walk that ran during it saw part of the table).
    let walk = loop {
        let text = get_body(&ns, management, "/metrics")?;
        ensure!(
            text.contains("sluice_conntrack_walk_age_seconds"),
            "/metrics has no sluice_conntrack_walk_age_seconds (an older sluice binary?)"
        );
        let scrape = Scrape::parse(&text)?;
        let age = scrape.value("sluice_conntrack_walk_age_seconds", &[]);
        if age < filled.elapsed().as_secs_f64() {
            break (
                scrape.value("sluice_conntrack_entries", &[]),
                scrape.value("sluice_conntrack_walk_duration_seconds", &[]),
            );
        }
        ensure!(
            filled.elapsed() < Duration::from_mins(10),
            "no conntrack walk ended within 10 minutes of the fill"
        );
        thread::sleep(Duration::from_millis(200));
    };
    // A walk just ended: the daemon's CPU from here to the end of the next one is one whole
    // cycle of the paced walk, the daemon otherwise idle.
    let pid = daemon.pid().context("sluice is not running")?;
    let cycle_start = (cpu_ticks(pid)?, Instant::now());
    let mut last_age = walk_age(&ns, management)?;
    loop {
        // Every 2 s: each scrape costs the daemon a little CPU too.
        thread::sleep(Duration::from_secs(2));
        let age = walk_age(&ns, management)?;
        // Ages only grow between walks: a smaller one is a new walk's.
        if age < last_age {
            break;
        }
        last_age = age;
        ensure!(
            cycle_start.1.elapsed() < Duration::from_mins(15),
            "no second walk within 15 minutes"
        );
    }
    let cycle = cycle_start.1.elapsed();
    let cycle_cpu = ticks_to_share(cpu_ticks(pid)? - cycle_start.0, cycle);
    let live: u64 = backends(&socket)?.iter().map(|r| r.flows).sum();
    println!(
        "conntrack: {sent} SYNs test-run in {:.1}s over {} CPUs (max_entries {ENTRIES}); the \
         first walk that ended after the fill, {:.1}s later, counted {} live entries in {:.0} ms; \
         `backends` sums {live} live flows",
        fill_time.as_secs_f64(),
        online_cpus(),
        filled.elapsed().as_secs_f64(),
        walk.0,
        walk.1 * 1000.0
    );
    ensure!(
        live >= u64::from(ENTRIES) * 9 / 10,
        "conntrack holds only {live} entries after the fill"
    );

    let probe = timed(PROBES, || get(&ns, management, "/health/ready").map(drop))?;
    report("/health/ready", &probe);
    let live_probe = timed(PROBES, || get(&ns, management, "/health/live").map(drop))?;
    report("/health/live", &live_probe);
    let scrape = timed(SCRAPES, || get(&ns, management, "/metrics").map(drop))?;
    report("/metrics", &scrape);
    let admin = timed(SCRAPES, || backends(&socket).map(drop))?;
    report("sluice backends", &admin);

    println!(
        "idle daemon CPU over one whole walk cycle ({:.0}s, from the end of one walk to the end \
         of the next, one 1M-entry walk included): {:.2} % of a core",
        cycle.as_secs_f64(),
        cycle_cpu * 100.0
    );
    let cpu = cpu_share(pid, IDLE_PERIOD)?;
    println!(
        "idle daemon CPU over {}s (right after the probes): {:.2} % of a core",
        IDLE_PERIOD.as_secs(),
        cpu * 100.0
    );

    let to_503 = sigterm_to_503(&ns, &daemon, management, &socket)?;
    println!(
        "SIGTERM -> first 503 on /health/ready (scrapes and `backends` running): {}",
        ms(to_503)
    );
    let _ = daemon.wait_exit(Duration::from_secs(15));
    drop(daemon);
    Ok(())
}

fn online_cpus() -> usize {
    thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// Sends each CPU its share of `ENTRIES` distinct SYNs through the daemon's program, from a
/// thread pinned to that CPU. Returns how many SYNs were forwarded.
fn fill(ns: &NetNs) -> Result<u64> {
    let prog = Xdp::from_pin(
        pin_dir(INSTANCE).join("sluice_xdp"),
        XdpAttachType::Interface,
    )
    .context("opening the daemon's pinned sluice_xdp")?;
    let cpus = online_cpus();
    let share = ENTRIES as usize / cpus;
    let vip = IpAddr::V4(Ipv4Addr::new(198, 19, 0, 10));
    ns.exec(|| -> Result<u64> {
        let ifindex = nix::net::if_::if_nametoindex(GW0).context("ifindex of gw0")?;
        let mut sent = 0u64;
        for cpu in 0..cpus {
            pin_to(cpu)?;
            for i in 0..share {
                let n = cpu * share + i;
                // 50,000 ports per client address, clients from 10.0.0.0 up.
                let client = Ipv4Addr::from(0x0a00_0000 + u32::try_from(n / 50_000)?);
                let port = 1024 + u16::try_from(n % 50_000)?;
                let (action, _, _) = test_run_repeat(
                    &prog,
                    &frame(IpAddr::V4(client), vip, port, 80, SYN, &[]),
                    ifindex,
                    1,
                )?;
                ensure!(
                    action == XDP_TX || action == XDP_REDIRECT,
                    "SYN {n}: XDP action {action}, not forwarded"
                );
                sent += 1;
            }
        }
        Ok(sent)
    })?
}

fn pin_to(cpu: usize) -> Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("pinning the test-run thread to CPU {cpu}"))
}

fn backends(socket: &Path) -> Result<Vec<BackendRow>> {
    let response = client::request(socket, &Request::Backends, Duration::from_mins(1))?;
    ensure!(response.ok, "backends: {:?}", response.error);
    Ok(serde_json::from_value(response.data.unwrap_or_default())?)
}

/// `GET path` inside the namespace on a new connection: the status code.
fn get(ns: &NetNs, addr: SocketAddr, path: &str) -> Result<u16> {
    ns.exec(|| get_here(addr, path))?
}

/// `GET path` inside the namespace: the body of a 200.
fn get_body(ns: &NetNs, addr: SocketAddr, path: &str) -> Result<String> {
    let reply = ns.exec(|| get_here_reply(addr, path))??;
    ensure!(reply.status == 200, "{path}: {}", reply.status);
    Ok(reply.body)
}

fn get_here(addr: SocketAddr, path: &str) -> Result<u16> {
    Ok(get_here_reply(addr, path)?.status)
}

fn get_here_reply(addr: SocketAddr, path: &str) -> Result<Reply> {
    get_closing(addr, path, &[], Duration::from_secs(30))
}

/// Runs `f` `n` times; the latencies, sorted.
fn timed(n: usize, mut f: impl FnMut() -> Result<()>) -> Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        out.push(t.elapsed());
    }
    out.sort();
    Ok(out)
}

fn report(what: &str, sorted: &[Duration]) {
    let at = |q: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a short list"
        )]
        let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
        sorted[i]
    };
    println!(
        "{what:<16} n={:<4} p50 {:>9}  p99 {:>9}  max {:>9}",
        sorted.len(),
        ms(at(0.5)),
        ms(at(0.99)),
        ms(at(1.0))
    );
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// The age of the daemon's last conntrack walk, from `/metrics`.
fn walk_age(ns: &NetNs, management: SocketAddr) -> Result<f64> {
    let text = get_body(ns, management, "/metrics")?;
    Ok(Scrape::parse(&text)?.value("sluice_conntrack_walk_age_seconds", &[]))
}

/// User + system CPU time of process `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may contain spaces) end with ')'.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

/// `ticks` of CPU time over `period` as a share of one core.
fn ticks_to_share(ticks: u64, period: Duration) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[expect(clippy::cast_precision_loss, reason = "tick counts")]
    let share = ticks as f64 / hz as f64 / period.as_secs_f64();
    share
}

/// The share of one core process `pid` used over `period` (user + system time).
fn cpu_share(pid: u32, period: Duration) -> Result<f64> {
    let before = cpu_ticks(pid)?;
    let t = Instant::now();
    thread::sleep(period);
    Ok(ticks_to_share(cpu_ticks(pid)? - before, t.elapsed()))
}

/// Polls readiness every millisecond while scrapes and `backends` run, sends SIGTERM, and
/// returns the time until the first 503.
fn sigterm_to_503(
    ns: &NetNs,
    daemon: &Daemon,
    management: SocketAddr,
    socket: &Path,
) -> Result<Duration> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..2 {
        let stop = Arc::clone(&stop);
        load.push(ns.enter(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = get_here(management, "/metrics");
            }
        })?);
    }
    {
        let stop = Arc::clone(&stop);
        let socket = socket.to_path_buf();
        load.push(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = backends(&socket);
            }
        }));
    }
    // Let the load get going, then signal while it runs.
    thread::sleep(Duration::from_millis(300));
    let poller = ns.enter(move || -> Result<Instant> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if get_here(management, "/health/ready")? == 503 {
                return Ok(Instant::now());
            }
            thread::sleep(Duration::from_millis(1));
        }
        bail!("readiness never answered 503")
    })?;
    thread::sleep(Duration::from_millis(100));
    let sent = Instant::now();
    daemon.signal(libc::SIGTERM)?;
    let first_503 = poller
        .join()
        .map_err(|_| anyhow::anyhow!("the readiness poller panicked"))??;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let _ = t.join();
    }
    Ok(first_503.saturating_duration_since(sent))
}
