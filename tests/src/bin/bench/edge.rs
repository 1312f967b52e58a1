//! `cargo xtask bench edge`: sluice's edge listener beside Debian's nginx and haproxy doing the
//! same job on the same machine, measured the way an operator would: wrk and h2load over mTLS.
//!
//! ```text
//!  slbe-client               slbe-gw                                     slbe-b0
//!  wrk, h2load (+ shim)  ──TLS──►  198.18.0.1:8443 sluice run (edge)
//!  rustls client              198.18.0.1:8444 nginx                ─HTTP─►  nginx :8080
//!  (handshakes, idle conns)   198.18.0.1:8445 haproxy              keep-alive   200 if cert header
//! ```
//!
//! The job (see [`fronts`]): TLS 1.3, client certificate required and verified, forwarded in
//! `X-SSL-Client-Cert`, `X-Forwarded-*` added, kept-alive backend connections. The client
//! certificate reaches wrk and h2load through an `LD_PRELOAD` shim ([`shim`]); the backend
//! answers 403 to a request without the certificate header, and a row with any non-2xx answer or
//! error shows them instead of ratios.
//!
//! Rows: HTTP/1.1 keep-alive with wrk and with `h2load --h1`, HTTP/2 with 1 and 10 streams per
//! connection (h2load), all over 50 connections; then full and resumed handshakes (one request
//! per new connection, from the bench's rustls client, which can switch resumption on and off
//! and count what resumed); last `auth-routes` (issue 17): sluice and nginx (haproxy sits it
//! out) on a second listener each with 20 routes, cookie-hash affinity and a forward-auth call
//! per request to the same oauth2-proxy-like auth service (see [`fronts`]), wrk over 50
//! connections. Inside each repetition every row runs the three edges back to back
//! (the order rotating between repetitions); each figure is the median over repetitions. Per
//! run: requests/s, the edge's CPU per request (its whole process tree, all threads, from
//! `/proc/<pid>/stat` before and after), p50/p99, the backend connections the edge opened
//! (the backend nginx's `stub_status` accepts) and held afterwards, and the CPU something else
//! on the machine took meanwhile (`/proc/stat` busy time less the edge, backend, load
//! generator and bench). Ratios are sluice's against the better of nginx and haproxy, and are
//! withheld when that other load went over [`OTHER_LOAD_LIMIT`] in any run of the row. Last,
//! each edge's resident memory idle and with `IDLE_CONNS` idle TLS connections open.
//!
//! Environment: `SLUICE_EDGE_BENCH_SECS` (per run, default 5), `SLUICE_EDGE_BENCH_REPS`
//! (default 3), `SLUICE_EDGE_BENCH_IDLE_CONNS` (default 10000, 0 skips), `SLUICE_EDGE_BENCH_ROWS`
//! (comma-separated row keys, default all), `SLUICE_EDGE_BENCH_PROFILE=<dir>` (afterwards, `perf
//! record -e cpu-clock -g` of sluice alone under the wrk and h2 rows; in `<dir>` a flat top
//! (`<row>.txt`, also printed) and the callers of each symbol (`<row>.callers.txt`)).

mod client;
mod fronts;
mod procfs;
mod shim;
mod tools;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use sluice_tests::{certs::TestPki, daemon::Scratch, Topology};

use client::Handshakes;
use fronts::{Backend, Front, SERVER_NAME};
use shim::Shim;

/// Namespaces are `slbe<pid>-*`, the scratch directory and the daemon instance
/// `bench-edge-<pid>`: several benches may run at once (on a machine shared by people tuning
/// the edge), and none may tear down another's.
const PREFIX: &str = "slbe";
const INSTANCE: &str = "bench-edge";
/// Connections of the keep-alive rows.
const KEEPALIVE_CONNS: usize = 50;
/// Clients of the handshake rows, each opening one connection after another.
const HANDSHAKE_CLIENTS: usize = 16;
/// CPU (in CPUs) that processes other than the edge, backend, load generator and bench may take
/// during a run before the row's ratios are withheld.
const OTHER_LOAD_LIMIT: f64 = 0.10;
/// How long opening the idle connections may take per edge.
const IDLE_LIMIT: Duration = Duration::from_secs(40);
/// File descriptors this process and the edges (which inherit it) may hold.
const NOFILE: u64 = 65_536;

/// p50 and p99 latency of one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Latency {
    pub p50: Duration,
    pub p99: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Row {
    WrkH1,
    H2loadH1,
    H2m1,
    H2m10,
    Full,
    Resumed,
    AuthRoutes,
}

const ROWS: [Row; 7] = [
    Row::WrkH1,
    Row::H2loadH1,
    Row::H2m1,
    Row::H2m10,
    Row::Full,
    Row::Resumed,
    Row::AuthRoutes,
];

impl Row {
    fn key(self) -> &'static str {
        match self {
            Row::WrkH1 => "wrk-h1",
            Row::H2loadH1 => "h2load-h1",
            Row::H2m1 => "h2-m1",
            Row::H2m10 => "h2-m10",
            Row::Full => "full",
            Row::Resumed => "resumed",
            Row::AuthRoutes => "auth-routes",
        }
    }

    fn title(self) -> String {
        let c = KEEPALIVE_CONNS;
        let h = HANDSHAKE_CLIENTS;
        match self {
            Row::WrkH1 => format!("HTTP/1.1, {c} keep-alive conns, wrk"),
            Row::H2loadH1 => format!("HTTP/1.1, {c} keep-alive conns, h2load --h1"),
            Row::H2m1 => format!("HTTP/2, {c} conns, 1 stream per conn, h2load -m1"),
            Row::H2m10 => format!("HTTP/2, {c} conns, 10 streams per conn, h2load -m10"),
            Row::Full => {
                format!("full TLS 1.3 handshakes (resumption off), 1 request per conn, {h} clients")
            }
            Row::Resumed => {
                format!("resumed TLS 1.3 handshakes (tickets), 1 request per conn, {h} clients")
            }
            Row::AuthRoutes => format!(
                "HTTP/1.1, {c} keep-alive conns, wrk: {} routes, cookie-hash affinity, a forward-auth \
                 call per request (no cache), request under the last route",
                fronts::AUTH_ROUTES
            ),
        }
    }

    fn is_handshake(self) -> bool {
        matches!(self, Row::Full | Row::Resumed)
    }

    /// The issues' bars for sluice against the better peer: req/s at least, CPU at most, p99
    /// at most. Issue 17 sets none for its row: it asks for the ratio.
    fn bars(self) -> (Option<f64>, Option<f64>, Option<f64>) {
        match self {
            Row::AuthRoutes => (None, None, None),
            r if r.is_handshake() => (None, Some(0.5), None),
            _ => (Some(1.15), Some(0.75), Some(1.0)),
        }
    }

    /// Whether `front` takes part: the forward-auth row needs a listener set up for it
    /// (haproxy has none).
    fn runs_on(self, front: &Front) -> bool {
        self != Row::AuthRoutes || front.auth_addr.is_some()
    }
}

struct Settings {
    secs: u64,
    reps: usize,
    idle_conns: usize,
    rows: Vec<Row>,
    profile: Option<PathBuf>,
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={v:?} is not a number")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Self> {
        let secs: u64 = env_num("SLUICE_EDGE_BENCH_SECS", 5)?;
        let reps: usize = env_num("SLUICE_EDGE_BENCH_REPS", 3)?;
        ensure!(secs >= 1, "SLUICE_EDGE_BENCH_SECS must be at least 1");
        ensure!(reps >= 1, "SLUICE_EDGE_BENCH_REPS must be at least 1");
        let rows = match std::env::var("SLUICE_EDGE_BENCH_ROWS") {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(|k| {
                    ROWS.into_iter()
                        .find(|r| r.key() == k.trim())
                        .with_context(|| {
                            format!(
                                "SLUICE_EDGE_BENCH_ROWS: unknown row {k:?} (rows: {})",
                                ROWS.map(Row::key).join(",")
                            )
                        })
                })
                .collect::<Result<Vec<_>>>()?,
            _ => ROWS.to_vec(),
        };
        Ok(Self {
            secs,
            reps,
            idle_conns: env_num("SLUICE_EDGE_BENCH_IDLE_CONNS", 10_000)?,
            rows,
            profile: std::env::var_os("SLUICE_EDGE_BENCH_PROFILE")
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        })
    }
}

/// One measured run of one edge on one row.
struct Sample {
    front: usize,
    row: Row,
    /// Requests (keep-alive rows) or connections (handshake rows) completed.
    requests: u64,
    elapsed: Duration,
    latency: Latency,
    edge_cpu: Duration,
    /// CPUs' worth of time other processes took during the run.
    other_load: f64,
    /// Backend connections the edge opened during the run, and held open after it.
    be_opened: u64,
    be_open: u64,
    errors: Vec<String>,
    /// Handshake rows: how many of `requests` resumed a session.
    resumed: Option<u64>,
}

impl Sample {
    fn rate(&self) -> f64 {
        count_f64(self.requests) / self.elapsed.as_secs_f64()
    }

    fn cpu_per_request_us(&self) -> f64 {
        if self.requests == 0 {
            return f64::NAN;
        }
        self.edge_cpu.as_secs_f64() * 1e6 / count_f64(self.requests)
    }
}

#[expect(clippy::cast_precision_loss, reason = "counts far below 2^52")]
fn count_f64(n: u64) -> f64 {
    n as f64
}

/// Everything a run needs.
struct Bench {
    topo: Topology,
    pki: TestPki,
    shim: Shim,
    backend: Backend,
    fronts: Vec<Front>,
    dir: PathBuf,
    threads: usize,
    settings: Settings,
}

pub fn run() -> Result<()> {
    let settings = Settings::from_env()?;
    raise_nofile(&settings)?;
    remove_dead_runs();
    let id = std::process::id();
    let instance = format!("{INSTANCE}-{id}");
    let topo = Topology::build(&format!("{PREFIX}{id}"), 1).context("build the namespaces")?;
    let client = topo.client();
    // The handshake rows open thousands of connections a second from one address; the client
    // closes each first, so its TIME_WAIT ports must be reusable.
    client.sysctl("net.ipv4.ip_local_port_range", "1024 65000")?;
    client.sysctl("net.ipv4.tcp_tw_reuse", "1")?;
    let scratch = Scratch::create(&instance)?;
    let dir = scratch.path().to_owned();
    let pki = TestPki::generate(&dir.join("pki"), &[SERVER_NAME])?;
    let shim = Shim::build(&dir.join("shim"), pki.client.chain(), pki.client.key())?;
    let backend = Backend::start(&topo, &dir)?;
    let fronts = vec![
        fronts::start_sluice(&topo, &dir, &pki, &instance)?,
        fronts::start_nginx(&topo, &dir, &pki)?,
        fronts::start_haproxy(&topo, &dir, &pki)?,
    ];
    for front in &fronts {
        fronts::wait_listening(client, front.addr).with_context(|| {
            format!(
                "{} did not start; {}:\n{}",
                front.name,
                front.log.display(),
                std::fs::read_to_string(&front.log).unwrap_or_default()
            )
        })?;
        client::check_front(client, front, &pki)?;
    }
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let bench = Bench {
        topo,
        pki,
        shim,
        backend,
        fronts,
        dir,
        threads,
        settings,
    };
    bench.run()
}

/// Removes what benches killed before they could clean up left behind: namespaces, pins and
/// scratch directories named after a process that no longer exists.
fn remove_dead_runs() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue; // a bench still running
        }
        eprintln!("removing namespace {name} left by an earlier bench (pid {pid})");
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let instance = format!("{INSTANCE}-{pid}");
        sluice_tests::daemon::remove_pins(&instance);
        let _ =
            std::fs::remove_dir_all(std::env::temp_dir().join(format!("sluice-test-{instance}")));
    }
}

/// Lets this process and its children (the edges) hold the idle connections: the limit goes
/// to [`NOFILE`], or, where even root may not pass the hard limit, up to that.
fn raise_nofile(settings: &Settings) -> Result<()> {
    let want = libc::rlimit {
        rlim_cur: NOFILE,
        rlim_max: NOFILE,
    };
    // SAFETY: a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const want) } != 0 {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `r` is valid for writes, then a valid rlimit.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut r) == 0 {
                r.rlim_cur = r.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &raw const r);
            }
        }
    }
    let limit = fronts::nofile_limit();
    ensure!(
        settings.idle_conns as u64 + 1000 <= limit,
        "{} idle connections need more file descriptors than RLIMIT_NOFILE allows ({limit}); \
         raise the hard limit or set SLUICE_EDGE_BENCH_IDLE_CONNS lower",
        settings.idle_conns
    );
    Ok(())
}

impl Bench {
    fn run(&self) -> Result<()> {
        let s = &self.settings;
        let names: Vec<&str> = self.fronts.iter().map(|f| f.name).collect();
        println!(
            "edge bench: {} on {} CPUs; {}s per run, {} repetitions, edges alternated in each \
             ({}); backend: Debian nginx `return 200` (403 without the certificate header)",
            names.join(", "),
            self.threads,
            s.secs,
            s.reps,
            self.rows_note()
        );
        let memory = if s.idle_conns > 0 {
            Some(self.memory()?)
        } else {
            None
        };
        // Unmeasured: first connections, backend pools, page faults.
        for front in &self.fronts {
            let run = tools::wrk(
                self.topo.client(),
                &self.shim,
                &url(front),
                KEEPALIVE_CONNS,
                self.threads,
                1,
                &self.dir,
            )?;
            ensure!(
                run.errors.is_empty() && run.requests > 0,
                "{}: warm-up with wrk failed: {:?}",
                front.name,
                run.errors
            );
            if s.rows.contains(&Row::AuthRoutes) && Row::AuthRoutes.runs_on(front) {
                self.check_auth(front)?;
            }
        }
        let mut samples = Vec::new();
        for rep in 0..s.reps {
            for &row in &s.rows {
                for i in 0..self.fronts.len() {
                    // Rotate who goes first, so no edge always follows the same one.
                    let f = (i + rep) % self.fronts.len();
                    if !row.runs_on(&self.fronts[f]) {
                        continue;
                    }
                    let sample = self.measure(f, row)?;
                    eprintln!(
                        "rep {} {:<9} {:<8} {:>9.0}/s cpu {:>7.1} µs p50 {:>6.2} p99 {:>6.2} ms \
                         be +{} ({} open) other {:>3.0}%{}{}",
                        rep + 1,
                        row.key(),
                        self.fronts[f].name,
                        sample.rate(),
                        sample.cpu_per_request_us(),
                        ms(sample.latency.p50),
                        ms(sample.latency.p99),
                        sample.be_opened,
                        sample.be_open,
                        sample.other_load * 100.0,
                        sample
                            .resumed
                            .map(|r| format!(
                                " resumed {:.0}%",
                                100.0 * count_f64(r) / count_f64(sample.requests.max(1))
                            ))
                            .unwrap_or_default(),
                        if sample.errors.is_empty() {
                            String::new()
                        } else {
                            format!(" ERRORS {:?}", sample.errors)
                        }
                    );
                    samples.push(sample);
                }
            }
        }
        print!("{}", self.table(&samples));
        if let Some(memory) = memory {
            print!("{}", self.memory_table(&memory));
        }
        if let Some(dir) = &s.profile {
            self.profile(dir)?;
        }
        Ok(())
    }

    /// Proves the forward-auth listener does the job (and warms it): with the session cookie
    /// every request is answered 2xx (the backend answers 403 unless the auth service's
    /// `X-Auth-Request-User` and the certificate header reached it); without it, none is.
    fn check_auth(&self, front: &Front) -> Result<()> {
        let url = auth_url(front)?;
        let (ns, shim, c, t, d) = (
            self.topo.client(),
            &self.shim,
            KEEPALIVE_CONNS,
            self.threads,
            &self.dir,
        );
        let with = tools::wrk_with(ns, shim, &url, &[fronts::AUTH_COOKIE], c, t, 1, d)?;
        ensure!(
            with.errors.is_empty() && with.requests > 0,
            "{}: forward-auth warm-up with the session cookie failed: {:?}",
            front.name,
            with.errors
        );
        let without = tools::wrk_with(ns, shim, &url, &["Cookie: sid=4f2a9c17"], c, t, 1, d)?;
        // wrk counts every answer in `requests` and the refused ones among its errors.
        let refused = without
            .errors
            .iter()
            .find_map(|e| e.strip_prefix("Non-2xx or 3xx responses:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        ensure!(
            without.requests > 0 && refused == without.requests,
            "{}: without a session cookie, {refused} of {} requests were refused",
            front.name,
            without.requests
        );
        Ok(())
    }

    fn rows_note(&self) -> String {
        self.settings
            .rows
            .iter()
            .map(|r| r.key())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// One run of edge `f` on `row`.
    fn measure(&self, f: usize, row: Row) -> Result<Sample> {
        let front = &self.fronts[f];
        let secs = self.settings.secs;
        let be_before = self.backend.conns(&self.topo)?;
        let machine = procfs::MachineCpu::read()?;
        let edge = procfs::tree_cpu(front.pid)?;
        let backend = procfs::tree_cpu(self.backend.pid)?;
        let me = procfs::self_cpu()?;
        let started = Instant::now();

        let ns = self.topo.client();
        let mut resumed = None;
        let (requests, elapsed, latency, errors, loadgen) = match row {
            Row::AuthRoutes => {
                let url = auth_url(front)?;
                let (c, t) = (KEEPALIVE_CONNS, self.threads);
                let cookie = [fronts::AUTH_COOKIE];
                let run = tools::wrk_with(ns, &self.shim, &url, &cookie, c, t, secs, &self.dir)?;
                (run.requests, run.elapsed, run.latency, run.errors, run.cpu)
            }
            Row::WrkH1 | Row::H2loadH1 | Row::H2m1 | Row::H2m10 => {
                let url = url(front);
                let c = KEEPALIVE_CONNS;
                let (t, dir, shim) = (self.threads, &self.dir, &self.shim);
                let run = match row {
                    Row::WrkH1 => tools::wrk(ns, shim, &url, c, t, secs, dir)?,
                    Row::H2loadH1 => tools::h2load(ns, shim, &url, c, t, 1, true, secs, dir)?,
                    Row::H2m1 => tools::h2load(ns, shim, &url, c, t, 1, false, secs, dir)?,
                    _ => tools::h2load(ns, shim, &url, c, t, 10, false, secs, dir)?,
                };
                (run.requests, run.elapsed, run.latency, run.errors, run.cpu)
            }
            Row::Full | Row::Resumed => {
                let kind = if row == Row::Full {
                    Handshakes::Full
                } else {
                    Handshakes::Resumed
                };
                // Fresh clients each run: tickets are kept per server name, which all three
                // edges share.
                let configs = (0..HANDSHAKE_CLIENTS)
                    .map(|_| client::config(&self.pki, true, kind == Handshakes::Resumed))
                    .collect::<Result<Vec<_>>>()?;
                let run = client::handshakes(ns, front.addr, configs, Duration::from_secs(secs))?;
                let mut errors = Vec::new();
                if run.errors > 0 {
                    errors.push(format!("{} connections failed", run.errors));
                }
                let full = run.connections - run.resumed;
                if kind == Handshakes::Full && run.resumed > 0 {
                    errors.push(format!("{} handshakes resumed", run.resumed));
                }
                // Every client's first handshake is full; all later ones must resume (1 %
                // slack for a ticket that expired or was refused).
                if kind == Handshakes::Resumed
                    && full > HANDSHAKE_CLIENTS as u64 + run.connections / 100
                {
                    errors.push(format!(
                        "only {} of {} handshakes resumed",
                        run.resumed, run.connections
                    ));
                }
                resumed = Some(run.resumed);
                (
                    run.connections,
                    run.elapsed,
                    run.latency,
                    errors,
                    Duration::ZERO,
                )
            }
        };

        let wall = started.elapsed();
        let busy = procfs::MachineCpu::read()?.busy_since(machine);
        let edge_cpu = procfs::tree_cpu(front.pid)?.saturating_sub(edge);
        let backend_cpu = procfs::tree_cpu(self.backend.pid)?.saturating_sub(backend);
        let me_cpu = procfs::self_cpu()?.saturating_sub(me);
        let be_after = self.backend.conns(&self.topo)?;
        let ours = edge_cpu + backend_cpu + me_cpu + loadgen;
        let other_load = busy.saturating_sub(ours).as_secs_f64() / wall.as_secs_f64();
        Ok(Sample {
            front: f,
            row,
            requests,
            elapsed,
            latency,
            edge_cpu,
            other_load,
            be_opened: be_after.accepted - be_before.accepted,
            be_open: be_after.open,
            errors,
            resumed,
        })
    }

    fn table(&self, samples: &[Sample]) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "\nmedians of {reps} repetitions (the edges alternated within each, order rotating)\n\
             \x20 µs/req, µs/conn: the edge's CPU (its process tree, all threads, user + system)\n\
             \x20 be new/open: backend connections the edge opened during the run / held after it\n\
             \x20 other: CPU taken meanwhile by other processes (user + system) and the hypervisor\n\
             \x20        (steal); ratios are withheld when it passes {limit:.0} % of one CPU in a run\n\
             \x20 ratios: sluice against the better of nginx and haproxy (higher rate, lower CPU\n\
             \x20         and p99), with the bars of issue 15\n",
            reps = self.settings.reps,
            limit = OTHER_LOAD_LIMIT * 100.0
        );
        for &row in &self.settings.rows {
            let unit = if row.is_handshake() { "conn" } else { "req" };
            let _ = writeln!(out, "\n{}", row.title());
            let _ = writeln!(
                out,
                "  {:<8} {:>10} {:>11} {:>8} {:>8} {:>11} {:>7}{}",
                "edge",
                format!("{unit}/s"),
                format!("µs/{unit}"),
                "p50 ms",
                "p99 ms",
                "be new/open",
                "other",
                if row.is_handshake() { "  resumed" } else { "" }
            );
            let mut medians = Vec::new();
            for (f, front) in self.fronts.iter().enumerate() {
                let mine: Vec<&Sample> = samples
                    .iter()
                    .filter(|s| s.front == f && s.row == row)
                    .collect();
                if !row.runs_on(front) {
                    medians.push(Medians::absent());
                    continue;
                }
                let m = |get: &dyn Fn(&Sample) -> f64| median(mine.iter().map(|s| get(s)));
                let med = Medians {
                    rate: m(&Sample::rate),
                    cpu: m(&Sample::cpu_per_request_us),
                    p50: m(&|s| ms(s.latency.p50)),
                    p99: m(&|s| ms(s.latency.p99)),
                    other_max: mine.iter().map(|s| s.other_load).fold(0.0, f64::max),
                    errors: mine.iter().flat_map(|s| s.errors.iter().cloned()).collect(),
                };
                let resumed = if row.is_handshake() {
                    format!(
                        "  {:>6.1}%",
                        m(&|s| 100.0 * count_f64(s.resumed.unwrap_or(0))
                            / count_f64(s.requests.max(1)))
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "  {:<8} {:>10} {:>11.1} {:>8.2} {:>8.2} {:>11} {:>6.0}%{}",
                    front.name,
                    thousands(med.rate),
                    med.cpu,
                    med.p50,
                    med.p99,
                    format!(
                        "{:.0}/{:.0}",
                        m(&|s| count_f64(s.be_opened)),
                        m(&|s| count_f64(s.be_open))
                    ),
                    med.other_max * 100.0,
                    resumed
                );
                medians.push(med);
            }
            let _ = writeln!(out, "  {}", self.verdict(row, &medians));
        }
        out
    }

    /// sluice's ratios against the better peer, or why there are none.
    fn verdict(&self, row: Row, m: &[Medians]) -> String {
        let Some(sluice) = self.fronts.iter().position(|f| f.name == "sluice") else {
            return String::new();
        };
        let errors: Vec<String> = self
            .fronts
            .iter()
            .zip(m)
            .filter(|(_, m)| !m.errors.is_empty())
            .map(|(f, m)| format!("{}: {}", f.name, m.errors.join("; ")))
            .collect();
        if !errors.is_empty() {
            return format!("no ratios: the row had errors: {}", errors.join(" | "));
        }
        let other = m.iter().map(|m| m.other_max).fold(0.0, f64::max);
        if other > OTHER_LOAD_LIMIT {
            return format!(
                "no ratios: other load reached {:.0} % of a CPU (limit {:.0} %)",
                other * 100.0,
                OTHER_LOAD_LIMIT * 100.0
            );
        }
        let peers: Vec<usize> = (0..m.len())
            .filter(|&i| i != sluice && row.runs_on(&self.fronts[i]))
            .collect();
        let best = |better: fn(f64, f64) -> bool, get: fn(&Medians) -> f64| {
            peers
                .iter()
                .copied()
                .reduce(|a, b| if better(get(&m[b]), get(&m[a])) { b } else { a })
                .unwrap_or(sluice)
        };
        let (rate_bar, cpu_bar, p99_bar) = row.bars();
        let ratio =
            |name: &str, get: fn(&Medians) -> f64, peer: usize, bar: Option<(f64, bool)>| {
                let r = get(&m[sluice]) / get(&m[peer]);
                let verdict = bar.map_or(String::new(), |(b, at_least)| {
                    let ok = if at_least { r >= b } else { r <= b };
                    format!(
                        ", bar {}{b:.2} {}",
                        if at_least { "≥ " } else { "≤ " },
                        if ok { "met" } else { "MISSED" }
                    )
                });
                format!("{name} {r:.2}× ({}{verdict})", self.fronts[peer].name)
            };
        let rate_peer = best(|a, b| a > b, |m| m.rate);
        let cpu_peer = best(|a, b| a < b, |m| m.cpu);
        let p99_peer = best(|a, b| a < b, |m| m.p99);
        format!(
            "sluice vs better peer: {}, {}, {}",
            ratio("rate", |m| m.rate, rate_peer, rate_bar.map(|b| (b, true))),
            ratio("CPU", |m| m.cpu, cpu_peer, cpu_bar.map(|b| (b, false))),
            ratio("p99", |m| m.p99, p99_peer, p99_bar.map(|b| (b, false))),
        )
    }

    /// Each edge's resident memory idle, and with `idle_conns` idle TLS connections open.
    fn memory(&self) -> Result<Vec<Memory>> {
        let mut out = Vec::new();
        for front in &self.fronts {
            let idle_kb = procfs::tree_rss_kb(front.pid)?;
            let pid = front.pid;
            let run = client::idle_connections(
                self.topo.client(),
                front.addr,
                client::config(&self.pki, true, false)?,
                self.settings.idle_conns,
                IDLE_LIMIT,
                move || procfs::tree_rss_kb(pid),
            )?;
            eprintln!(
                "memory {:<8} idle {} KiB, {} KiB with {} connections open ({} failed, {:.1}s)",
                front.name,
                idle_kb,
                run.rss_kb,
                run.opened,
                run.errors,
                run.took.as_secs_f64()
            );
            ensure!(
                run.opened > 0,
                "{}: no idle connection could be opened",
                front.name
            );
            out.push(Memory { idle_kb, run });
            // Let the edge see the closes before the next one is measured.
            std::thread::sleep(Duration::from_secs(1));
        }
        Ok(out)
    }

    fn memory_table(&self, memory: &[Memory]) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\nmemory: RSS of the edge's process tree after start (one request), then with idle \
             TLS 1.3 connections open (each after one request)"
        );
        let _ = writeln!(
            out,
            "  {:<8} {:>8} {:>10} {:>9} {:>8}",
            "edge", "idle MB", "conns open", "MB", "KB/conn"
        );
        let per_conn = |m: &Memory| {
            (count_f64(m.run.rss_kb) - count_f64(m.idle_kb)) * 1.024
                / count_f64(m.run.opened as u64)
        };
        let mb = |kb: u64| count_f64(kb) * 1024.0 / 1e6;
        for (front, m) in self.fronts.iter().zip(memory) {
            let _ = writeln!(
                out,
                "  {:<8} {:>8.1} {:>10} {:>9.1} {:>8.1}{}",
                front.name,
                mb(m.idle_kb),
                m.run.opened,
                mb(m.run.rss_kb),
                per_conn(m),
                if m.run.opened < self.settings.idle_conns {
                    format!(
                        "  (only {} of {} opened in {}s, {} failed)",
                        m.run.opened,
                        self.settings.idle_conns,
                        IDLE_LIMIT.as_secs(),
                        m.run.errors
                    )
                } else {
                    String::new()
                }
            );
        }
        if let Some(s) = self.fronts.iter().position(|f| f.name == "sluice") {
            let peers = || (0..memory.len()).filter(move |&i| i != s);
            let best_idle = peers().map(|i| memory[i].idle_kb).min().unwrap_or(1).max(1);
            let best_conn = peers()
                .map(|i| per_conn(&memory[i]))
                .fold(f64::INFINITY, f64::min);
            let _ =
                writeln!(
                out,
                "  sluice vs better peer: idle {:.2}×, per connection {:.2}× (bars: idle ≤ 20 MB \
                 {}, ≤ 50 KB per connection {})",
                count_f64(memory[s].idle_kb) / count_f64(best_idle),
                per_conn(&memory[s]) / best_conn,
                if mb(memory[s].idle_kb) <= 20.0 { "met" } else { "MISSED" },
                if per_conn(&memory[s]) <= 50.0 { "met" } else { "MISSED" },
            );
        }
        out
    }

    /// `perf record -e cpu-clock -g` of sluice alone under the wrk and h2 rows, a flat top of
    /// each in `dir`, printed too.
    fn profile(&self, dir: &std::path::Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let sluice = self
            .fronts
            .iter()
            .find(|f| f.name == "sluice")
            .context("no sluice edge to profile")?;
        let secs = self.settings.secs;
        for row in [Row::WrkH1, Row::H2m1, Row::H2m10] {
            let data = dir.join(format!("{}.perf.data", row.key()));
            let mut perf = Command::new("perf")
                .args(["record", "-q", "-e", "cpu-clock", "-g", "-p"])
                .arg(sluice.pid.to_string())
                .arg("-o")
                .arg(&data)
                .args(["--", "sleep"])
                .arg(secs.to_string())
                .spawn()
                .context("starting perf record (Debian package linux-perf)")?;
            let url = url(sluice);
            let (ns, shim, c, t, d) = (
                self.topo.client(),
                &self.shim,
                KEEPALIVE_CONNS,
                self.threads,
                &self.dir,
            );
            let run = match row {
                Row::WrkH1 => tools::wrk(ns, shim, &url, c, t, secs, d)?,
                Row::H2m1 => tools::h2load(ns, shim, &url, c, t, 1, false, secs, d)?,
                _ => tools::h2load(ns, shim, &url, c, t, 10, false, secs, d)?,
            };
            let status = perf.wait()?;
            if !status.success() {
                bail!("perf record failed: {status}");
            }
            let report = |args: &[&str]| -> Result<String> {
                let out = Command::new("perf")
                    .args(["report", "--no-children", "--sort", "symbol", "--stdio"])
                    .args(args)
                    .arg("-i")
                    .arg(&data)
                    .output()
                    .context("perf report")?;
                ensure!(
                    out.status.success(),
                    "perf report failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                Ok(String::from_utf8_lossy(&out.stdout).into_owned())
            };
            let flat = report(&["-g", "none"])?;
            // Lines end in padding and `-` placeholders for columns with no data here.
            let top: Vec<&str> = flat
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .map(|l| l.trim_end_matches([' ', '-']))
                .take(30)
                .collect();
            // With callers (kernel stacks are whole; sluice's own frames are partial: a
            // release build has no frame pointers).
            let graph = report(&["-g", "caller,0.5,callee", "--percent-limit", "1"])?;
            let summary = format!(
                "perf record -e cpu-clock -g of sluice under {} ({:.0} req/s while profiled); \
                 perf report --no-children --sort symbol, top {}:\n{}\n",
                row.title(),
                count_f64(run.requests) / run.elapsed.as_secs_f64(),
                top.len(),
                top.join("\n")
            );
            std::fs::write(dir.join(format!("{}.txt", row.key())), &summary)?;
            std::fs::write(dir.join(format!("{}.callers.txt", row.key())), graph)?;
            println!("\n{summary}");
        }
        Ok(())
    }
}

struct Medians {
    rate: f64,
    cpu: f64,
    p50: f64,
    p99: f64,
    other_max: f64,
    errors: Vec<String>,
}

impl Medians {
    /// An edge that does not take part in a row.
    fn absent() -> Medians {
        Medians {
            rate: f64::NAN,
            cpu: f64::NAN,
            p50: f64::NAN,
            p99: f64::NAN,
            other_max: 0.0,
            errors: Vec::new(),
        }
    }
}

struct Memory {
    idle_kb: u64,
    run: client::IdleRun,
}

fn url(front: &Front) -> String {
    format!("https://{}/", front.addr)
}

/// The forward-auth row's URL at `front`.
fn auth_url(front: &Front) -> Result<String> {
    let addr = front
        .auth_addr
        .with_context(|| format!("{} has no forward-auth listener", front.name))?;
    Ok(format!("https://{addr}{}", fronts::AUTH_PATH))
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `55593.4` as `55,593`.
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "-".to_owned();
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "rates ≥ 0, far below 2^63"
    )]
    let n = x.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_thousands() {
        assert!((median([3.0, 1.0, 2.0].into_iter()) - 2.0).abs() < 1e-9);
        assert!((median([4.0, 1.0].into_iter()) - 2.5).abs() < 1e-9);
        assert_eq!(thousands(55_593.4), "55,593");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
    }
}
