//! The real Keycloak as a test peer: the server distribution `cargo xtask setup` fetched and
//! built (see `xtask/src/keycloak.rs`), found through `<cache>/keycloak.manifest`, started with
//! `kc.sh start --optimized` in a test namespace on a private copy of one build (hard links; a
//! running server writes only under its own `data/`), with realms imported at start.
//!
//! There is no stand-in: when Keycloak is missing the tests fail and say why.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::curl::http_status;
use crate::daemon::spawn_tied;
use crate::netns::{ChildGuard, NetNs};

/// The bootstrap administrator of the master realm (only reachable inside the test network).
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_PASSWORD: &str = "sluice-admin";
/// Keycloak's plain HTTP port, what sluice proxies to.
pub const HTTP_PORT: u16 = 8080;
/// Keycloak's management interface: `/health/*`, `/metrics`.
pub const MANAGEMENT_PORT: u16 = 9000;
/// How long one Keycloak may take to become ready. A cold JVM on a loaded two-core machine
/// needs 30 to 90 s; this only bounds a hung start.
pub const READY_TIMEOUT: Duration = Duration::from_mins(10);
/// How long a stopping Keycloak gets before its process group is killed.
const STOP_GRACE: Duration = Duration::from_mins(1);

/// What `cargo xtask setup` recorded.
#[derive(Debug, Clone)]
pub struct Installation {
    pub version: String,
    pub java_home: PathBuf,
    pub java_version: String,
    builds: BTreeMap<String, PathBuf>,
}

impl Installation {
    /// Reads the manifest; the error says why Keycloak is not there and what to do.
    pub fn find() -> Result<Installation> {
        let path = cache_dir()?.join("keycloak.manifest");
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "Keycloak is not installed: cannot read {} (run `cargo xtask setup`, which \
                 fetches it from Maven Central)",
                path.display()
            )
        })?;
        let fields: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        if let Some(reason) = fields.get("unavailable") {
            bail!(
                "Keycloak {} is unavailable: `cargo xtask setup` could not fetch or build it: \
                 {reason}",
                fields.get("version").unwrap_or(&"?")
            );
        }
        let field = |name: &str| {
            fields
                .get(name)
                .map(|v| (*v).to_owned())
                .with_context(|| format!("{} has no {name}= line", path.display()))
        };
        let builds = fields
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("build.")?.to_owned(), PathBuf::from(v))))
            .collect();
        Ok(Installation {
            version: field("version")?,
            java_home: PathBuf::from(field("java_home")?),
            java_version: field("java_version")?,
            builds,
        })
    }

    /// The build made for `name` (an x509 lookup provider).
    pub fn build(&self, name: &str) -> Result<&Path> {
        let dir = self.builds.get(name).with_context(|| {
            format!("no Keycloak build {name:?}; run `cargo xtask setup` again")
        })?;
        if !dir.join("bin").join("kc.sh").is_file() {
            bail!(
                "Keycloak build {} is incomplete; run `cargo xtask setup` again",
                dir.display()
            );
        }
        Ok(dir)
    }
}

/// `$SLUICE_CACHE_DIR`, else `$HOME/.cache/sluice`, as in xtask.
pub(crate) fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set; cannot find ~/.cache/sluice")?;
    Ok(Path::new(&home).join(".cache").join("sluice"))
}

/// One server to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Which build (x509 lookup provider).
    pub build: String,
    /// Runtime options after `start --optimized`.
    pub options: Vec<String>,
    /// Realm representations (JSON) imported at start.
    pub realms: Vec<String>,
}

/// A running Keycloak; stopped (its whole process group) on drop.
#[derive(Debug)]
pub struct Keycloak {
    guard: Option<ChildGuard>,
    log: PathBuf,
    started: Instant,
}

impl Keycloak {
    /// Copies the build into `dir/keycloak`, writes the realms into its `data/import`, starts
    /// it in `ns` and returns at once (see [`Keycloak::wait_ready`]).
    pub fn spawn(ns: &NetNs, dir: &Path, install: &Installation, spec: &Spec) -> Result<Self> {
        let build = install.build(&spec.build)?;
        let home = dir.join("keycloak");
        let _ = fs::remove_dir_all(&home);
        let linked = Command::new("cp")
            .arg("-al")
            .arg(build)
            .arg(&home)
            .status()
            .is_ok_and(|s| s.success());
        if !linked {
            let _ = fs::remove_dir_all(&home);
            let ok = Command::new("cp")
                .arg("-a")
                .arg(build)
                .arg(&home)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                bail!("cannot copy {} to {}", build.display(), home.display());
            }
        }
        let import = home.join("data").join("import");
        fs::create_dir_all(&import).with_context(|| format!("creating {}", import.display()))?;
        for (i, realm) in spec.realms.iter().enumerate() {
            fs::write(import.join(format!("realm-{i}.json")), realm)?;
        }
        let log = dir.join("keycloak.log");
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let kc = home.join("bin").join("kc.sh");
        let kc = kc.to_str().context("non-UTF-8 Keycloak path")?;
        let mut args = vec![kc, "start", "--optimized"];
        args.extend(spec.options.iter().map(String::as_str));
        let mut cmd = ns.command(&args);
        cmd.env("JAVA_HOME", &install.java_home)
            .env("KC_BOOTSTRAP_ADMIN_USERNAME", ADMIN_USER)
            .env("KC_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // kc.sh and the JVM it starts share a group, so a stop can reach both.
            .process_group(0);
        // `ip netns exec` execs kc.sh in this process, which keeps the death signal: a test
        // process that dies outright still stops kc.sh, and kc.sh stops the JVM.
        let child = spawn_tied(&mut cmd, None)
            .with_context(|| format!("starting Keycloak in {}", ns.name()))?;
        Ok(Keycloak {
            guard: Some(ChildGuard::new(child)),
            log,
            started: Instant::now(),
        })
    }

    /// Waits until `/health/ready` on the management port answers 200; returns how long the
    /// start took. Fails with the log if Keycloak exits or takes longer than
    /// [`READY_TIMEOUT`].
    pub fn wait_ready(&mut self, ns: &NetNs) -> Result<Duration> {
        let url = format!("http://127.0.0.1:{MANAGEMENT_PORT}/health/ready");
        loop {
            if let Some(child) = self.guard.as_mut().and_then(ChildGuard::child_mut) {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "Keycloak exited ({status}) before it was ready; log:\n{}",
                        self.log_tail(80)
                    );
                }
            }
            if http_status(ns, &url, 5).is_ok_and(|code| code == 200) {
                return Ok(self.started.elapsed());
            }
            if self.started.elapsed() > READY_TIMEOUT {
                bail!(
                    "Keycloak not ready after {READY_TIMEOUT:?}; log:\n{}",
                    self.log_tail(80)
                );
            }
            thread::sleep(Duration::from_millis(500));
        }
    }

    /// Sends SIGTERM to kc.sh (which passes it to the JVM) and returns at once.
    pub fn begin_stop(&self) -> Result<()> {
        let pid = self
            .guard
            .as_ref()
            .and_then(ChildGuard::id)
            .context("Keycloak is not running")?;
        nix::sys::signal::kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM)?;
        Ok(())
    }

    /// Whether Keycloak has exited (reaping it if so).
    pub fn has_exited(&mut self) -> Result<bool> {
        let Some(child) = self.guard.as_mut().and_then(ChildGuard::child_mut) else {
            return Ok(true);
        };
        Ok(child.try_wait()?.is_some())
    }

    /// The first `ERROR` lines and the last `lines` lines of Keycloak's output (a failed
    /// start ends in long stack traces that bury the cause).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log)
            .unwrap_or_else(|err| format!("(cannot read {}: {err})", self.log.display()));
        let all: Vec<&str> = text.lines().collect();
        let errors: Vec<&str> = all
            .iter()
            .filter(|l| l.contains(" ERROR ") || l.contains(" FATAL "))
            .take(10)
            .copied()
            .collect();
        format!(
            "first errors:\n{}\nlast lines:\n{}",
            errors.join("\n"),
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// SIGTERM to kc.sh (which passes it to the JVM), then after [`STOP_GRACE`] SIGKILL to the
    /// whole group.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let mut guard = self.guard.take().context("Keycloak is not running")?;
        let pgid = guard
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        let status = guard.terminate(STOP_GRACE);
        if let Some(pgid) = pgid {
            // Whatever of the group is left (the JVM if kc.sh was killed first).
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        status
    }
}

impl Drop for Keycloak {
    fn drop(&mut self) {
        if self.guard.is_some() {
            if let Err(err) = self.stop() {
                eprintln!("warning: could not stop Keycloak: {err:#}");
            }
        }
    }
}
