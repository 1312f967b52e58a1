//! `cargo xtask demo`: the whole job of sluice on real connections, in four steps.
//!
//! Builds the standard test network (client, gateway and three backends, each in its own
//! network namespace), runs the real `sluice` binary on the gateway (`sluice run`) and on every
//! backend (`sluice decap attach`), then:
//! 1. opens a few hundred connections to the L4 VIP and prints how they spread next to the
//!    share Maglev expected;
//! 2. sends requests to an edge listener with a required client certificate and prints what
//!    the backend received (the certificate header decoded, the real client address);
//! 3. drains one backend under a steady load and counts the failed requests (none);
//! 4. stops the gateway with SIGTERM and prints the shutdown phases as a balancer sees them.
//!
//! Everything it creates is removed again: on success, on failure (guards drop before
//! `main` returns) and on Ctrl-C / SIGTERM (a signal thread stops the children, deletes the
//! namespaces and the temporary directory, and exits 130).
//!
//! `SLUICE_BIN` names the `sluice` binary; without it, `sluice` next to this program is used.

use std::fmt::Write as _;

use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use lb_userspace::config::Config;
use lb_userspace::dataplane::expected_shares;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use sluice_tests::certs::TestPki;
use sluice_tests::daemon::{sluice_bin, spawn_tied};
use sluice_tests::netns::run_cmd;
use sluice_tests::topology::{backend_addr4, BACKEND_IFNAME, CLIENT_ADDR4, GW_CLIENT_IFNAME};
use sluice_tests::{http_backend, http_get_many, is_root, ChildGuard, NetNs, Topology, VIP4};

mod tour;

/// Namespace prefix: `sldemo-client`, `sldemo-gw`, `sldemo-b0`, ...
const PREFIX: &str = "sldemo";
const BACKENDS: usize = 3;
const CONNECTIONS: usize = 300;
const CONCURRENCY: usize = 16;
const PORT: u16 = 80;
const TABLE_SIZE: u32 = 65537;
/// How long loading and attaching an XDP program may take.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(20);

/// What the signal thread has to undo when the demo is interrupted: the children it must
/// stop and the temporary directory. Namespaces are found by their prefix.
struct Cleanup {
    pids: Vec<i32>,
    dir: Option<PathBuf>,
}

static CLEANUP: Mutex<Cleanup> = Mutex::new(Cleanup {
    pids: Vec::new(),
    dir: None,
});

/// Set by the signal thread before it cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn cleanup_list() -> std::sync::MutexGuard<'static, Cleanup> {
    CLEANUP.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Once interrupted, the signal thread owns the cleanup and ends the process: the main thread
/// stops wherever it checks this, instead of tearing down (or reporting errors) in parallel.
fn yield_if_interrupted() {
    while INTERRUPTED.load(Ordering::SeqCst) {
        thread::park();
    }
}

fn main() -> ExitCode {
    if let Err(err) = install_signal_handler() {
        eprintln!("demo: cannot install the signal handler: {err:#}");
        return ExitCode::FAILURE;
    }
    // Every guard (children, servers, namespaces, temp dir) lives inside `run` and has been
    // dropped, i.e. cleaned up, by the time it returns.
    let result = run();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            yield_if_interrupted();
            eprintln!("\ndemo failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Blocks SIGINT and SIGTERM in this (the main) thread before any other thread exists, so every
/// later thread inherits the mask, and waits for them on a dedicated thread. Child processes
/// inherit the mask too; `Daemon::spawn` clears it for the long-running `sluice` children.
fn install_signal_handler() -> Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.thread_block().context("blocking SIGINT/SIGTERM")?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let Ok(signal) = set.wait() else { return };
            INTERRUPTED.store(true, Ordering::SeqCst);
            eprintln!("\n{signal} received: stopping sluice and removing the demo namespaces...");
            interrupted_cleanup();
            eprintln!("cleaned up");
            std::process::exit(130);
        })
        .context("spawning the signal thread")?;
    Ok(())
}

/// Undoes everything from the signal thread while the main thread may be anywhere.
fn interrupted_cleanup() {
    let (pids, dir) = {
        let list = cleanup_list();
        (list.pids.clone(), list.dir.clone())
    };
    // sluice detaches its XDP programs when it gets SIGTERM.
    for &pid in &pids {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + ChildGuard::GRACE;
    let mut running = pids;
    while !running.is_empty() && Instant::now() < deadline {
        running.retain(|&pid| {
            // ECHILD: the main thread reaped it first, so it has exited too.
            matches!(
                waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)),
                Ok(WaitStatus::StillAlive)
            )
        });
        thread::sleep(Duration::from_millis(20));
    }
    for pid in running {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(pid), None);
    }
    for name in demo_namespaces() {
        if let Err(err) = run_cmd(Command::new("ip").args(["netns", "del", &name])) {
            eprintln!("warning: {err:#}");
        }
    }
    if let Some(dir) = dir {
        let _ = fs::remove_dir_all(dir);
    }
}

/// Namespaces whose name starts with the demo's prefix.
fn demo_namespaces() -> Vec<String> {
    let listed = run_cmd(Command::new("ip").args(["netns", "list"])).unwrap_or_default();
    listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| name.starts_with(&format!("{PREFIX}-")))
        .map(str::to_owned)
        .collect()
}

fn run() -> Result<()> {
    if !is_root() {
        bail!("the demo needs root (network namespaces and XDP); run it with sudo");
    }
    let sluice = sluice_bin()?;
    println!("sluice binary: {}", sluice.display());

    let dir = TempDir::create()?;
    let config_path = dir.path().join("sluice.toml");
    let socket = dir.path().join("admin.sock");
    let pki = TestPki::generate(&dir.path().join("pki"), &["idp.demo"])
        .context("generating the demo's certificates")?;
    let text = config_text(&socket, &pki);
    let config = Config::parse(&text).context("the demo's own config does not parse")?;
    fs::write(&config_path, &text).with_context(|| format!("writing {}", config_path.display()))?;
    println!("config written to {}", config_path.display());

    println!(
        "creating namespaces {PREFIX}-client, {PREFIX}-gw and {PREFIX}-b0..b{}...",
        BACKENDS - 1
    );
    let topo =
        TopologyGuard(Topology::build(PREFIX, BACKENDS).context("building the demo network")?);
    println!(
        "  client {CLIENT_ADDR4} -> gateway -> backends {}; VIP {VIP4} on every backend's lo",
        (0..BACKENDS)
            .map(|i| backend_addr4(i).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );

    println!("starting `sluice run` in {}...", topo.gateway().name());
    let config_arg = config_path.to_string_lossy().into_owned();
    let mut gateway = Daemon::spawn(
        topo.gateway(),
        &sluice,
        &["run", "-c", &config_arg],
        &dir.path().join("gateway.log"),
    )?;
    gateway.wait_for_xdp(topo.gateway(), GW_CLIENT_IFNAME)?;
    println!("sluice_xdp attached on gateway interface {GW_CLIENT_IFNAME}");

    let mut decaps = Vec::with_capacity(BACKENDS);
    for (i, ns) in topo.backends().iter().enumerate() {
        let mut decap = Daemon::spawn(
            ns,
            &sluice,
            &[
                "decap",
                "attach",
                "--iface",
                BACKEND_IFNAME,
                "--vip",
                &VIP4.to_string(),
            ],
            &dir.path().join(format!("decap-{i}.log")),
        )?;
        decap.wait_for_xdp(ns, BACKEND_IFNAME)?;
        println!("sluice_decap attached on backend-{i} {BACKEND_IFNAME}");
        decaps.push(decap);
    }

    let mut servers = Vec::with_capacity(BACKENDS);
    for (i, ns) in topo.backends().iter().enumerate() {
        let name = format!("backend-{i}");
        servers.push(
            http_backend(ns, &name, PORT)
                .with_context(|| format!("starting the HTTP server on {name}"))?,
        );
    }
    let edge_servers = tour::edge_backends(&topo)?;
    println!("HTTP servers listening on port {PORT} on every backend (and header-echo servers on 8080 for the edge)");
    println!("\n== 1. the L4 fast path: Maglev in XDP, direct server return");

    let vip = SocketAddr::new(VIP4.into(), PORT);
    println!(
        "opening {CONNECTIONS} connections to {vip} from the client ({CONCURRENCY} at a time)..."
    );
    let tally = http_get_many(topo.client(), vip, CONNECTIONS, CONCURRENCY)?;
    for daemon in std::iter::once(&mut gateway).chain(decaps.iter_mut()) {
        daemon.check_running()?;
    }

    let shares = expected_shares(&config.vips[0]).context("computing the Maglev shares")?;
    println!();
    println!(
        "{:<10}  {:<12}  {:>11}  {:>6}  {:>15}",
        "backend", "address", "connections", "share", "Maglev expects"
    );
    let mut total = 0;
    for (i, (address, expected)) in shares.iter().enumerate() {
        let served = tally.get(&format!("backend-{i}")).copied().unwrap_or(0);
        total += served;
        println!(
            "{:<10}  {:<12}  {served:>11}  {:>5.1}%  {:>14.1}%",
            format!("backend-{i}"),
            address.to_string(),
            percent(served, CONNECTIONS),
            100.0 * expected
        );
    }
    println!("{:<10}  {:<12}  {total:>11}", "total", "");
    println!();
    if total != CONNECTIONS {
        bail!("{total} of {CONNECTIONS} answers came from a known backend: {tally:?}");
    }

    let cli = |args: &[&str]| sluice_cli(&sluice, &socket, args);
    println!("what the operator sees: sluice backends");
    println!("{}", cli(&["backends"])?);

    tour::edge(&topo, &pki, dir.path())?;
    tour::drain(&topo, &cli, vip)?;
    gateway.check_running()?;
    tour::shutdown(topo.gateway(), || gateway.stop("sluice run on the gateway"))?;
    println!("  the daemon's own account of it:");
    for line in gateway.log_text().lines().filter(|l| {
        l.contains("phase")
            || l.contains("shutdown")
            || l.contains("finished")
            || l.contains("detached")
    }) {
        println!("    {}", without_colours(line).trim());
    }

    println!("\nstopping the HTTP servers and the backends' sluice...");
    drop(servers);
    drop(edge_servers);
    for (i, mut decap) in decaps.into_iter().enumerate() {
        decap.stop(&format!("sluice decap on backend-{i}"))?;
    }
    let link = topo.gateway().ip(&["link", "show", GW_CLIENT_IFNAME])?;
    if link.contains("xdp") {
        bail!("sluice exited but XDP is still attached to {GW_CLIENT_IFNAME}: {link}");
    }
    println!("sluice_xdp detached");
    println!("removing the namespaces...");
    drop(topo);
    drop(dir);
    println!("done: namespaces and {} removed", config_path.display());
    Ok(())
}

#[allow(clippy::cast_precision_loss)]
fn percent(part: usize, whole: usize) -> f64 {
    100.0 * part as f64 / whole as f64
}

/// `line` without ANSI colour sequences (`ESC [ ... m`).
fn without_colours(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A `sluice` CLI command against the demo's daemon: its output, or its error message.
fn sluice_cli(sluice: &Path, socket: &Path, args: &[&str]) -> Result<String> {
    let (command, rest) = args.split_first().context("no sluice subcommand")?;
    // Options belong to the subcommand: `sluice drain --socket S web 198.18.1.2`.
    let out = Command::new(sluice)
        .arg(command)
        .arg("--socket")
        .arg(socket)
        .args(rest)
        .output()
        .with_context(|| format!("running sluice {}", args.join(" ")))?;
    if !out.status.success() {
        bail!(
            "sluice {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn config_text(socket: &Path, pki: &TestPki) -> String {
    let mut text = format!(
        "# Written by the sluice demo.\n\
         instance = \"demo\"\n\
         interfaces = [\"{GW_CLIENT_IFNAME}\"]\n\
         xdp_mode = \"native\"\n\
         conntrack_entries = 65536\n\
         {}\n\
         [admin]\n\
         socket = \"{}\"\n\n\
         [encap]\n\
         source_v4 = \"198.19.255.0/24\"\n\
         source_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\n\
         name = \"web\"\n\
         address = \"{VIP4}:{PORT}\"\n\
         protocol = \"tcp\"\n\
         table_size = {TABLE_SIZE}\n",
        tour::SHUTDOWN_SETTINGS,
        socket.display()
    );
    for i in 0..BACKENDS {
        let _ = write!(
            text,
            "\n[[vip.backend]]\naddress = \"{}\"\n",
            backend_addr4(i)
        );
    }
    text.push_str(&tour::config(pki, PORT));
    text
}

/// A `sluice` process in a namespace, its output going to a log file that is shown when it
/// fails. Stopped (SIGTERM, so it detaches its programs) when dropped.
struct Daemon {
    guard: ChildGuard,
    pid: i32,
    log: PathBuf,
}

impl Daemon {
    fn spawn(ns: &NetNs, sluice: &Path, args: &[&str], log: &Path) -> Result<Self> {
        let program = sluice.to_string_lossy();
        let mut argv = vec![program.as_ref()];
        argv.extend_from_slice(args);
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = ns.command(&argv);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = spawn_tied(&mut cmd, None)
            .with_context(|| format!("starting {argv:?} in {}", ns.name()))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        cleanup_list().pids.push(pid);
        Ok(Self {
            guard: ChildGuard::new(child),
            pid,
            log: log.to_owned(),
        })
    }

    /// Fails with the log if the process has exited.
    fn check_running(&mut self) -> Result<()> {
        yield_if_interrupted();
        let child = self.guard.child_mut().context("child already reaped")?;
        if let Some(status) = child.try_wait()? {
            bail!("sluice exited ({status}); its output:\n{}", self.log_text());
        }
        Ok(())
    }

    /// Waits until `ip link` shows an XDP program on `iface` in `ns`.
    fn wait_for_xdp(&mut self, ns: &NetNs, iface: &str) -> Result<()> {
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            self.check_running()
                .with_context(|| format!("attaching to {iface} in {}", ns.name()))?;
            if ns.ip(&["link", "show", iface])?.contains("xdp") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "no XDP program on {iface} in {} after {ATTACH_TIMEOUT:?}; sluice's output:\n{}",
                    ns.name(),
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and an error if it did not exit cleanly.
    fn stop(&mut self, what: &str) -> Result<()> {
        let status = self.guard.terminate(ChildGuard::GRACE)?;
        cleanup_list().pids.retain(|&p| p != self.pid);
        if !status.success() {
            bail!(
                "{what} exited with {status}; its output:\n{}",
                self.log_text()
            );
        }
        println!("  {what} stopped");
        Ok(())
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|err| format!("(cannot read {}: {err})", self.log.display()))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        yield_if_interrupted();
        if self.guard.id().is_some() {
            if let Err(err) = self.guard.terminate(ChildGuard::GRACE) {
                eprintln!("warning: stopping sluice (pid {}): {err:#}", self.pid);
            }
        }
        cleanup_list().pids.retain(|&p| p != self.pid);
    }
}

/// `/tmp/sluice-demo-<pid>`: the config and the daemons' logs; removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn create() -> Result<Self> {
        remove_stale_dirs();
        let path = std::env::temp_dir().join(format!("sluice-demo-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        cleanup_list().dir = Some(path.clone());
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

/// Directories left by a demo that was killed outright (SIGKILL), whose process is gone.
fn remove_stale_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("sluice-demo-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        yield_if_interrupted();
        cleanup_list().dir = None;
        if let Err(err) = fs::remove_dir_all(&self.0) {
            if err.kind() != std::io::ErrorKind::NotFound {
                eprintln!("warning: could not remove {}: {err}", self.0.display());
            }
        }
    }
}

/// The demo network; deletes its namespaces on drop unless the signal thread is doing that.
struct TopologyGuard(Topology);

impl std::ops::Deref for TopologyGuard {
    type Target = Topology;
    fn deref(&self) -> &Topology {
        &self.0
    }
}

impl Drop for TopologyGuard {
    fn drop(&mut self) {
        // Parks for good when interrupted; `Topology`'s own drop then never runs.
        yield_if_interrupted();
    }
}
