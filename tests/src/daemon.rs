//! `sluice run` as a test fixture: a real daemon process in a namespace, driven through the
//! real CLI over its admin socket, read through its management port.
//!
//! Each fixture has its own instance name (so its own pin directory), admin socket and
//! scratch directory; dropping it stops the daemon and removes whatever it left pinned, also
//! when the test failed.

use std::fs::{self, File};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::http1::get_closing;
use crate::netns::{ChildGuard, NetNs};

/// How long a daemon gets to come up (load, verify, attach, first health round).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The `sluice` binary: `SLUICE_BIN`, else `sluice` next to the test binary's directory
/// (`target/debug/deps/..`).
pub fn sluice_bin() -> Result<PathBuf> {
    let path = if let Some(path) = std::env::var_os("SLUICE_BIN") {
        PathBuf::from(path)
    } else {
        let exe = std::env::current_exe().context("locating the test binary")?;
        let dir = exe.parent().context("test binary without a directory")?;
        let dir = if dir.ends_with("deps") {
            dir.parent().unwrap_or(dir)
        } else {
            dir
        };
        dir.join("sluice")
    };
    if !path.is_file() {
        bail!(
            "sluice binary {} not found: set SLUICE_BIN or run `cargo build -p lb-userspace`",
            path.display()
        );
    }
    // `ip netns exec` runs it from another working directory.
    fs::canonicalize(&path).with_context(|| format!("resolving {}", path.display()))
}

/// Spawns `cmd` as a child tied to this process: it starts with no signal blocked (the demo
/// blocks SIGINT and SIGTERM in its own threads, and std keeps the mask across exec, but sluice
/// must get them to detach its programs), and the kernel sends it SIGTERM if this process dies
/// outright, so it still stops. With `netns`, it enters that network namespace first (only
/// the network namespace, unlike `ip netns exec`: a daemon must see the host's bpffs).
pub fn spawn_tied(cmd: &mut Command, netns: Option<&File>) -> std::io::Result<Child> {
    let netns = netns.map(AsRawFd::as_raw_fd);
    // SAFETY: only async-signal-safe calls (setns, sigemptyset, pthread_sigmask, prctl) on
    // the child's own state between fork and exec; `netns` stays open until `spawn` returns,
    // after the exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = netns {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            let mut empty = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(empty.as_mut_ptr());
            if libc::pthread_sigmask(libc::SIG_SETMASK, empty.as_ptr(), std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // `ip netns exec` execs its command, which keeps the setting.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// A scratch directory `/tmp/sluice-test-<name>`, emptied first and removed on drop. Named
/// after the test rather than random (unlike a `tempfile::TempDir`): what a run killed
/// outright leaves behind is removed by the next run of the same test, or by name by
/// `bench`'s clean-up of dead runs.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn create(name: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("sluice-test-{name}"));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One parsed `/metrics` exposition.
pub struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    pub fn parse(text: &str) -> Result<Scrape> {
        let lines = text
            .lines()
            .filter(|l| *l != "# EOF")
            .map(|l| Ok(l.to_owned()));
        Ok(Scrape(
            prometheus_parse::Scrape::parse(lines).context("parsing /metrics")?,
        ))
    }

    /// The sum of the samples called `name` whose labels include `labels` (0 when none).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    }
}

/// A `sluice run` process in a namespace.
#[derive(Debug)]
pub struct Daemon {
    guard: Option<ChildGuard>,
    ns_name: String,
    instance: String,
    bin: PathBuf,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Daemon {
    /// Writes `config_text` to `dir/sluice.toml` and starts the daemon. The config must set
    /// `instance` to `instance` and `[admin] socket` to [`Daemon::socket_in`]`(dir)`. Unless it
    /// sets `shutdown_delay`, it gets `shutdown_delay = "0s"`: only the tests of graceful
    /// shutdown wait for it.
    pub fn start(ns: &NetNs, dir: &Path, instance: &str, config_text: &str) -> Result<Self> {
        let config = dir.join("sluice.toml");
        let text = if config_text.contains("shutdown_delay") {
            config_text.to_owned()
        } else {
            // Top-level keys come before any table, so it goes first.
            format!("shutdown_delay = \"0s\"\n{config_text}")
        };
        fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let mut d = Self {
            guard: None,
            ns_name: ns.name().to_string(),
            instance: instance.to_string(),
            bin: sluice_bin()?,
            socket: Self::socket_in(dir),
            config,
            log: dir.join("sluice.log"),
        };
        // A killed earlier run may have left this instance pinned.
        remove_pins(instance);
        d.restart(ns)?;
        Ok(d)
    }

    /// The admin socket path a fixture in `dir` uses.
    pub fn socket_in(dir: &Path) -> PathBuf {
        dir.join("admin.sock")
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Starts the daemon again (after [`Daemon::stop`]) and waits until it answers.
    pub fn restart(&mut self, ns: &NetNs) -> Result<()> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        // Only the network namespace is entered, not a private mount namespace as with
        // `ip netns exec`: the daemon must see the host's bpffs, as it does in production,
        // or its pins would vanish with the process.
        let netns =
            File::open(ns.path()).with_context(|| format!("opening {}", ns.path().display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["run", "--log-format", "json", "-c"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = spawn_tied(&mut cmd, Some(&netns))
            .with_context(|| format!("starting sluice in {}", self.ns_name))?;
        self.guard = Some(ChildGuard::new(child));
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.check_running()?;
            if self.cli(&["status"]).is_ok_and(|o| o.status.success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "sluice did not answer on {} within {START_TIMEOUT:?}; log:\n{}",
                    self.socket.display(),
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fails with the log if the daemon has exited.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(child) = self.guard.as_mut().and_then(ChildGuard::child_mut) else {
            bail!("sluice is not running");
        };
        if let Some(status) = child.try_wait()? {
            bail!("sluice exited ({status}); log:\n{}", self.log_text());
        }
        Ok(())
    }

    /// Runs the CLI against this daemon: `sluice <subcommand> --socket S <flags> <rest>`, where
    /// `<flags>` are any options given before the subcommand (`["--json", "stats"]`): options
    /// belong to the subcommand that honours them.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let at = args.iter().position(|a| !a.starts_with('-')).unwrap_or(0);
        let (flags, rest) = args.split_at(at);
        let (command, rest) = rest.split_first().context("no subcommand")?;
        Command::new(&self.bin)
            .arg(command)
            .arg("--socket")
            .arg(&self.socket)
            .args(flags)
            .args(rest)
            .output()
            .with_context(|| format!("running sluice {args:?}"))
    }

    /// Runs the CLI ([`Daemon::cli`]) and returns what it printed; fails with its stderr and
    /// the daemon's log unless it exited 0.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "sluice {args:?} failed ({}): {}\nlog:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                self.log_text()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs the CLI with `--json` and returns the parsed output; fails unless it exited 0.
    pub fn cli_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cli_ok(&all)?;
        serde_json::from_str(&out)
            .with_context(|| format!("sluice {args:?} printed no JSON: {out}"))
    }

    /// The `sluice backends --json` row of backend `address` of VIP `vip`.
    pub fn backend_row(&self, vip: &str, address: IpAddr) -> Result<serde_json::Value> {
        let rows = self.cli_json(&["backends"])?;
        let address = address.to_string();
        rows.as_array()
            .context("sluice backends printed no list")?
            .iter()
            .find(|r| r["vip"] == vip && r["address"] == address.as_str())
            .cloned()
            .with_context(|| format!("no backend {address} of {vip}: {rows}"))
    }

    /// The `state` (`up`, `draining`, `down`) of backend `address` of VIP `vip`.
    pub fn backend_state(&self, vip: &str, address: IpAddr) -> Result<String> {
        let row = self.backend_row(vip, address)?;
        row["state"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no state in {row}"))
    }

    /// Rewrites the daemon's config file with `edit` and reloads it; fails unless the reload
    /// succeeded.
    pub fn reload_with(&self, edit: impl FnOnce(String) -> String) -> Result<()> {
        let path = self.config_path();
        let text = fs::read_to_string(path)
            .with_context(|| format!("read the daemon's config {}", path.display()))?;
        fs::write(path, edit(text))
            .with_context(|| format!("write the daemon's config {}", path.display()))?;
        self.cli_ok(&["reload"]).map(drop)
    }

    /// The daemon's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.guard.as_ref().and_then(ChildGuard::id)
    }

    /// Sends a signal to the daemon.
    pub fn signal(&self, sig: libc::c_int) -> Result<()> {
        let pid = self
            .guard
            .as_ref()
            .and_then(ChildGuard::id)
            .context("sluice is not running")?;
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(i32::try_from(pid)?, sig) };
        if rc != 0 {
            bail!("kill: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let mut guard = self.guard.take().context("sluice is not running")?;
        guard.terminate(Duration::from_secs(10))
    }

    /// Waits up to `limit` for the daemon to exit on its own (after a signal sent with
    /// [`Daemon::signal`]); never signals it.
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        let guard = self.guard.as_mut().context("sluice is not running")?;
        let child = guard.child_mut().context("sluice was already reaped")?;
        loop {
            if let Some(status) = child.try_wait()? {
                self.guard = None;
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("sluice still running after {limit:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's log lines so far that are JSON objects (the daemon logs with
    /// `--log-format json`).
    pub fn log_events(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The daemon's log so far (all its runs).
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|err| format!("(cannot read {}: {err})", self.log.display()))
    }

    /// `GET path` on the management port `addr` (inside the daemon's namespace):
    /// `(status, body)`.
    pub fn management_get(
        &self,
        ns: &NetNs,
        addr: SocketAddr,
        path: &str,
    ) -> Result<(u16, String)> {
        let reply = ns.exec(|| get_closing(addr, path, &[], Duration::from_secs(5)))??;
        Ok((reply.status, reply.body))
    }

    /// The sum of the `/metrics` samples called `name` (a counter's name includes `_total`)
    /// whose labels include `labels`; 0 when there is none, as Prometheus reads absence.
    pub fn metric(
        &self,
        ns: &NetNs,
        management: SocketAddr,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Result<f64> {
        let (code, text) = self.management_get(ns, management, "/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}: {text}");
        }
        Ok(Scrape::parse(&text)?.value(name, labels))
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            let _ = guard.terminate(Duration::from_secs(10));
        }
        remove_pins(&self.instance);
    }
}

/// The pin directory of `instance` under the default bpffs.
pub fn pin_dir(instance: &str) -> PathBuf {
    Path::new("/sys/fs/bpf/sluice").join(instance)
}

/// Removes an instance's pins (which detaches its XDP links and frees its maps).
pub fn remove_pins(instance: &str) {
    let dir = pin_dir(instance);
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    let _ = fs::remove_dir(&dir);
    // Only succeeds when no other instance is pinned.
    let _ = fs::remove_dir("/sys/fs/bpf/sluice");
}
