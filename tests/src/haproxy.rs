//! Debian's haproxy as an upstream balancer in a test namespace: TCP mode, one frontend, one
//! server that gets a PROXY protocol v2 header on every connection (`send-proxy-v2`)
//! ([`HaproxySpec`]); or HTTP mode, round robin over health-checked servers
//! ([`HttpBalancerSpec`]).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::netns::{run_cmd, ChildGuard, NetNs};

/// How long haproxy gets to start listening.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// What the generated configuration contains.
#[derive(Clone, Debug)]
pub struct HaproxySpec {
    /// Where the frontend listens (an address of the namespace haproxy runs in).
    pub frontend: SocketAddr,
    /// The one server every frontend connection goes to, with `send-proxy-v2`.
    pub server: SocketAddr,
    /// If set, a second backend that no frontend uses checks `server` at this interval with
    /// `check-send-proxy`, so each check opens a connection that starts with a v2 LOCAL
    /// header, and expects an answer that contains `local` (as [`crate::proxy_backend`] gives).
    /// haproxy ends checks with a reset; waiting for the answer first lets the backend read
    /// the header. Traffic does not depend on the check's result.
    pub local_checks: Option<Duration>,
}

impl HaproxySpec {
    /// The `haproxy.cfg` text.
    pub fn config_text(&self) -> String {
        let mut text = format!(
            "global\n    maxconn 256\n\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 10s\n    \
             timeout server 10s\n\n\
             frontend fe\n    bind {}\n    default_backend be\n\n\
             backend be\n    server s1 {} send-proxy-v2\n",
            self.frontend, self.server
        );
        if let Some(every) = self.local_checks {
            let _ = write!(
                text,
                "\nbackend health\n    option tcp-check\n    tcp-check expect string local\n    \
                 server hc {} send-proxy-v2 check check-send-proxy inter {}ms\n",
                self.server,
                every.as_millis()
            );
        }
        text
    }
}

/// One server of an [`HttpBalancerSpec`].
#[derive(Clone, Debug)]
pub struct CheckedServer {
    /// Where requests go.
    pub address: SocketAddr,
    /// The port on the same address that answers the health check (a management port).
    pub check_port: u16,
}

/// haproxy in HTTP mode, as operators run it in front of a fleet: keep-alive on both sides,
/// round robin over `servers`, each taken out after two failed checks and back after two good
/// ones.
#[derive(Clone, Debug)]
pub struct HttpBalancerSpec {
    /// Where the frontend listens (an address of the namespace haproxy runs in).
    pub frontend: SocketAddr,
    pub servers: Vec<CheckedServer>,
    /// `GET` on every server's check port; anything but `200` fails the check.
    pub check_path: String,
    pub check_interval: Duration,
}

impl HttpBalancerSpec {
    /// The `haproxy.cfg` text. `retries 0`: a request haproxy sent to a server that refused or
    /// dropped it comes back to the client as an error instead of being retried elsewhere, so
    /// a lost request shows.
    pub fn config_text(&self) -> String {
        let mut text = format!(
            "global\n    maxconn 256\n\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    \
             timeout server 10s\n    timeout check 1s\n    retries 0\n\n\
             frontend fe\n    bind {}\n    default_backend be\n\n\
             backend be\n    balance roundrobin\n    option httpchk\n    \
             http-check send meth GET uri {} ver HTTP/1.1 hdr Host sluice.test\n    \
             http-check expect status 200\n",
            self.frontend, self.check_path
        );
        for (i, s) in self.servers.iter().enumerate() {
            let _ = writeln!(
                text,
                "    server s{i} {} check port {} inter {}ms fall 2 rise 2",
                s.address,
                s.check_port,
                self.check_interval.as_millis()
            );
        }
        text
    }
}

/// `haproxy -f <cfg> -db` (foreground) in a namespace; stopped on drop.
#[derive(Debug)]
pub struct Haproxy {
    guard: ChildGuard,
    log: PathBuf,
}

impl Haproxy {
    /// Writes `dir/haproxy.cfg`, checks it with `haproxy -c`, starts haproxy in `ns` and waits
    /// until the frontend listens. Its output goes to `dir/haproxy.log`.
    pub fn start(ns: &NetNs, dir: &Path, spec: &HaproxySpec) -> Result<Self> {
        Self::launch(ns, dir, spec.frontend, &spec.config_text())
    }

    /// [`Haproxy::start`] in HTTP mode.
    pub fn start_http(ns: &NetNs, dir: &Path, spec: &HttpBalancerSpec) -> Result<Self> {
        Self::launch(ns, dir, spec.frontend, &spec.config_text())
    }

    fn launch(ns: &NetNs, dir: &Path, frontend: SocketAddr, config: &str) -> Result<Self> {
        let cfg = dir.join("haproxy.cfg");
        fs::write(&cfg, config).with_context(|| format!("writing {}", cfg.display()))?;
        let cfg_arg = cfg.to_str().context("non-UTF-8 config path")?;
        ns.run(&["haproxy", "-c", "-q", "-f", cfg_arg])
            .context("haproxy rejects the generated config")?;
        let log = dir.join("haproxy.log");
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = ns
            .command(&["haproxy", "-f", cfg_arg, "-db"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting haproxy in {}", ns.name()))?;
        let mut haproxy = Self {
            guard: ChildGuard::new(child),
            log,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let filter = format!("src {frontend}");
        loop {
            if let Some(child) = haproxy.guard.child_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("haproxy exited ({status}):\n{}", haproxy.log_text());
                }
            }
            // Asks the kernel, not haproxy: a test connection would reach the VIP too.
            let listening = run_cmd(ns.command(&["ss", "-Hltn"]).args(filter.split_whitespace()))?;
            if !listening.trim().is_empty() {
                return Ok(haproxy);
            }
            if Instant::now() > deadline {
                bail!(
                    "haproxy does not listen on {frontend} after {START_TIMEOUT:?}:\n{}",
                    haproxy.log_text()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// haproxy's output so far.
    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|err| format!("(cannot read {}: {err})", self.log.display()))
    }
}
