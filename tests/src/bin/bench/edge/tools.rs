//! The load generators an operator would use, wrk and h2load, run in the client namespace with
//! the client certificate from the shim, and what their output says: requests, time, latency
//! percentiles and every kind of failure they count.

use std::fs;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use sluice_tests::NetNs;

use super::shim::Shim;
use super::Latency;

/// What one load-generator run measured.
pub struct ToolRun {
    /// Requests answered 2xx within the run.
    pub requests: u64,
    pub elapsed: Duration,
    pub latency: Latency,
    /// Every failure the tool counted (non-2xx answers, socket errors, failed or timed-out
    /// requests), described; empty when there were none.
    pub errors: Vec<String>,
    /// The tool's own CPU time (user + system), for the other-load check.
    pub cpu: Duration,
}

/// `wrk --latency` for `secs` over `conns` kept-alive HTTP/1.1 connections.
pub fn wrk(
    ns: &NetNs,
    shim: &Shim,
    url: &str,
    conns: usize,
    threads: usize,
    secs: u64,
    dir: &Path,
) -> Result<ToolRun> {
    wrk_with(ns, shim, url, &[], conns, threads, secs, dir)
}

/// [`wrk`] sending `headers` (`Name: value`) with every request.
#[expect(
    clippy::too_many_arguments,
    reason = "wrk's own knobs, all named at the call sites"
)]
pub fn wrk_with(
    ns: &NetNs,
    shim: &Shim,
    url: &str,
    headers: &[&str],
    conns: usize,
    threads: usize,
    secs: u64,
    dir: &Path,
) -> Result<ToolRun> {
    let mut args = vec![
        "wrk".to_owned(),
        format!("-t{threads}"),
        format!("-c{conns}"),
        format!("-d{secs}s"),
        "--latency".to_owned(),
        "--timeout".to_owned(),
        "5s".to_owned(),
    ];
    for h in headers {
        args.extend(["-H".to_owned(), (*h).to_owned()]);
    }
    args.push(url.to_owned());
    let (out, cpu) = run(ns, shim, &args, &dir.join("wrk.out"), secs)?;
    let mut run = parse_wrk(&out).with_context(|| format!("reading wrk's output:\n{out}"))?;
    run.cpu = cpu;
    Ok(run)
}

/// `h2load` for `secs` over `conns` connections, `streams` requests in flight on each: HTTP/2
/// (ALPN h2), or HTTP/1.1 with `h1` (then `streams` must be 1: more would be pipelining).
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per row kind, all named"
)]
pub fn h2load(
    ns: &NetNs,
    shim: &Shim,
    url: &str,
    conns: usize,
    threads: usize,
    streams: usize,
    h1: bool,
    secs: u64,
    dir: &Path,
) -> Result<ToolRun> {
    // Per-request latencies go to a file: h2load prints no percentiles. It writes one line
    // per request, the same for every edge.
    let log = dir.join("h2load.log");
    let mut args = vec![
        "h2load".to_owned(),
        format!("-t{threads}"),
        format!("-c{conns}"),
        format!("-m{streams}"),
        format!("-D{secs}"),
        format!("--log-file={}", log.display()),
    ];
    if h1 {
        args.push("--h1".to_owned());
    }
    args.push(url.to_owned());
    let (out, cpu) = run(ns, shim, &args, &dir.join("h2load.out"), secs)?;
    let want = if h1 { "http/1.1" } else { "h2" };
    let mut run =
        parse_h2load(&out, want).with_context(|| format!("reading h2load's output:\n{out}"))?;
    let text = fs::read_to_string(&log).with_context(|| format!("reading {}", log.display()))?;
    let _ = fs::remove_file(&log);
    run.latency = parse_h2load_log(&text)?;
    run.cpu = cpu;
    Ok(run)
}

/// Runs `args` in `ns` with the shim, output to `out`; returns the output and the CPU time the
/// program used. A run that outlives `secs` by far is killed.
fn run(
    ns: &NetNs,
    shim: &Shim,
    args: &[String],
    out: &Path,
    secs: u64,
) -> Result<(String, Duration)> {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let file = fs::File::create(out)?;
    let mut cmd: Command = ns.command(&argv);
    shim.apply(&mut cmd);
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // `ip netns exec` execs the program, so this pid is the tool's.
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} in {}", args[0], ns.name()))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;

    // Watchdog: the tools stop on their own after `secs`; one that hangs is killed. `exited`
    // is set (under the lock the watchdog kills under) before the pid is reaped, so the kill
    // can never reach a reused pid.
    let exited = Arc::new(Mutex::new(false));
    let watchdog = {
        let exited = exited.clone();
        let deadline = Instant::now() + Duration::from_secs(secs + 30);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let done = exited
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *done {
                return false;
            }
            if Instant::now() > deadline {
                // SAFETY: the pid is our unreaped child (see above).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                return true;
            }
        })
    };
    wait_exit_unreaped(pid)?;
    *exited
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
    let (status, rusage) = reap(pid)?;
    let killed = watchdog.join().unwrap_or(false);
    let text = fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    ensure!(
        !killed,
        "{} hung and was killed after {}s:\n{text}",
        args[0],
        secs + 30
    );
    ensure!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{} failed (wait status {status:#x}):\n{text}",
        args.join(" ")
    );
    drop(child); // already reaped: dropping a Child neither waits nor kills
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Ok((text, tv(rusage.ru_utime) + tv(rusage.ru_stime)))
}

/// Blocks until `pid` has exited, leaving it a zombie (so its pid stays ours).
fn wait_exit_unreaped(pid: i32) -> Result<()> {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waits on our own child; `info` is valid for writes.
        let r = unsafe {
            libc::waitid(
                libc::P_PID,
                libc::id_t::try_from(pid).unwrap_or(0),
                &raw mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("waitid on the load generator");
        }
    }
}

/// Reaps `pid`: its wait status and resource usage.
fn reap(pid: i32) -> Result<(i32, libc::rusage)> {
    loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid out-parameter.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: reaps our own exited child; both pointers are valid for writes.
        let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("wait4 on the load generator");
        }
    }
}

/// A duration as wrk and h2load print them: a number and `us`, `ms`, `s`, `m` or `h`.
fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in duration {s:?}"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("bad number in duration {s:?}"))?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("unknown unit in duration {s:?}"),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// The numbers before each of `names` in a line like `3 total, 2 started, ...`.
fn counts(line: &str, names: &[&str]) -> Result<Vec<u64>> {
    names
        .iter()
        .map(|name| {
            line.split(',')
                .map(str::trim)
                .find_map(|part| {
                    let (n, label) = part.split_once(' ')?;
                    (label.trim() == *name).then(|| n.parse::<u64>().ok())?
                })
                .with_context(|| format!("no `N {name}` in {line:?}"))
        })
        .collect()
}

fn parse_wrk(out: &str) -> Result<ToolRun> {
    let mut requests_elapsed = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = Vec::new();
    let mut in_distribution = false;
    for line in out.lines() {
        let t = line.trim();
        if t == "Latency Distribution" {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            match t.split_whitespace().collect::<Vec<_>>()[..] {
                ["50%", v] => p50 = Some(parse_duration(v)?),
                ["99%", v] => p99 = Some(parse_duration(v)?),
                [p, _] if p.ends_with('%') => {}
                _ => in_distribution = false,
            }
        }
        // "250000 requests in 5.00s, 30.00MB read"
        if let Some((n, rest)) = t.split_once(" requests in ") {
            let time = rest.split(',').next().unwrap_or_default();
            requests_elapsed = Some((
                n.parse::<u64>()
                    .with_context(|| format!("bad count in {t:?}"))?,
                parse_duration(time)?,
            ));
        }
        if t.starts_with("Socket errors:") || t.starts_with("Non-2xx or 3xx responses:") {
            errors.push(t.to_owned());
        }
    }
    let (requests, elapsed) = requests_elapsed.context("no `N requests in T` line")?;
    Ok(ToolRun {
        requests,
        elapsed,
        latency: Latency {
            p50: p50.context("no 50% line in wrk's latency distribution")?,
            p99: p99.context("no 99% line in wrk's latency distribution")?,
        },
        errors,
        cpu: Duration::ZERO,
    })
}

fn parse_h2load(out: &str, protocol: &str) -> Result<ToolRun> {
    let line = |prefix: &str| {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .with_context(|| format!("no `{prefix}` line"))
    };
    let negotiated = line("Application protocol:")?.trim();
    ensure!(
        negotiated == protocol,
        "h2load negotiated {negotiated:?}, the row needs {protocol:?}"
    );
    // "finished in 5.00s, 45000.00 req/s, 3.00MB/s"
    let finished = line("finished in ")?;
    let elapsed = parse_duration(finished.split(',').next().unwrap_or_default())?;
    let [done, succeeded, failed, errored, timeout] = counts(
        line("requests:")?,
        &["done", "succeeded", "failed", "errored", "timeout"],
    )?[..] else {
        unreachable!("counts returns one number per name")
    };
    let [ok, s3, s4, s5] = counts(line("status codes:")?, &["2xx", "3xx", "4xx", "5xx"])?[..]
    else {
        unreachable!("counts returns one number per name")
    };
    let mut errors = Vec::new();
    if failed + errored + timeout > 0 || succeeded != done {
        errors.push(format!(
            "requests: {done} done, {succeeded} succeeded, {failed} failed, {errored} errored, \
             {timeout} timeout"
        ));
    }
    if s3 + s4 + s5 > 0 {
        errors.push(format!(
            "status codes: {ok} 2xx, {s3} 3xx, {s4} 4xx, {s5} 5xx"
        ));
    }
    Ok(ToolRun {
        requests: ok,
        elapsed,
        latency: Latency::default(),
        errors,
        cpu: Duration::ZERO,
    })
}

/// p50 and p99 of h2load's `--log-file`: start (µs since the epoch), status, µs to the end of
/// the response, tab-separated, one request a line.
fn parse_h2load_log(text: &str) -> Result<Latency> {
    let mut us: Vec<u64> = text
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse().ok())
        .collect();
    ensure!(!us.is_empty(), "h2load logged no requests");
    us.sort_unstable();
    let at = |q: usize| Duration::from_micros(us[(us.len() - 1) * q / 100]);
    Ok(Latency {
        p50: at(50),
        p99: at(99),
    })
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    const WRK: &str = "Running 5s test @ https://198.18.0.1:8443/
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  500.00us  20.00ms   90.00%
    Req/Sec    24.00k     1.00k   26.00k    70.00%
  Latency Distribution
     50%  826.00us
     75%    1.10ms
     90%    1.50ms
     99%    3.25ms
  250000 requests in 5.00s, 30.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 0
  Non-2xx or 3xx responses: 12
Requests/sec:  50000.00
Transfer/sec:      6.00MB
";

    #[test]
    fn wrk_output() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 250_000);
        assert_eq!(r.elapsed, Duration::from_secs(5));
        assert_eq!(r.latency.p50, Duration::from_micros(826));
        assert_eq!(r.latency.p99, Duration::from_micros(3250));
        assert_eq!(
            r.errors,
            [
                "Socket errors: connect 0, read 3, write 0, timeout 0",
                "Non-2xx or 3xx responses: 12"
            ]
        );
    }

    const H2LOAD: &str = "starting benchmark...
Protocol: TLSv1.3
Application protocol: h2
progress: 10% of clients started

finished in 5.00s, 45000.00 req/s, 3.00MB/s
requests: 225000 total, 225050 started, 225000 done, 225000 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 224990 2xx, 0 3xx, 10 4xx, 0 5xx
";

    #[test]
    fn h2load_output() {
        let r = parse_h2load(H2LOAD, "h2").unwrap();
        assert_eq!(r.requests, 224_990);
        assert_eq!(r.elapsed, Duration::from_secs(5));
        assert_eq!(r.errors, ["status codes: 224990 2xx, 0 3xx, 10 4xx, 0 5xx"]);
        assert!(parse_h2load(H2LOAD, "http/1.1").is_err());
    }

    #[test]
    fn h2load_log_percentiles() {
        let mut text = String::new();
        for i in 1..=100 {
            writeln!(text, "1700000000000000\t200\t{i}").unwrap();
        }
        let l = parse_h2load_log(&text).unwrap();
        assert_eq!(l.p50, Duration::from_micros(50));
        assert_eq!(l.p99, Duration::from_micros(99));
    }
}
