//! Named network namespaces that clean up after themselves.
//!
//! Setup goes through the `ip` tool on purpose: every step is a command a person can
//! copy into a shell to reproduce or debug a failing test. Code that must *live* inside a
//! namespace (sockets, XDP attachment) runs on a thread that switched its network
//! namespace with `setns(2)`, which is per-thread, so no child process is needed.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Directory where `ip netns` keeps its bind-mounted namespace files.
const NETNS_DIR: &str = "/run/netns";

/// A network namespace created by `ip netns add` and deleted again on drop.
///
/// Dropping also happens while a failing test unwinds, so a panic does not leave
/// namespaces behind. A namespace left by a run that was killed outright is removed by
/// the next [`NetNs::create`] of the same name.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace `name` (deleting a leftover one of that name first) and
    /// brings its loopback interface up.
    pub fn create(name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            bail!("invalid network namespace name {name:?}");
        }
        if Self::exists(name) {
            // A leftover from a killed run; `ip netns add` would fail on it.
            run_cmd(Command::new("ip").args(["netns", "del", name]))
                .with_context(|| format!("removing leftover namespace {name}"))?;
        }
        run_cmd(Command::new("ip").args(["netns", "add", name]))?;
        // From here on, `ns` deletes the namespace again if a later step fails.
        let ns = Self {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Whether a namespace called `name` is currently registered with `ip netns`.
    pub fn exists(name: &str) -> bool {
        PathBuf::from(NETNS_DIR).join(name).exists()
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file (`/run/netns/<name>`), usable with `setns(2)`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// A `Command` for `ip netns exec <name> <args..>`, for callers that want to set up
    /// stdio or environment themselves.
    ///
    /// # Panics
    /// If `args` is empty (a programming error in the caller).
    pub fn command(&self, args: &[&str]) -> Command {
        assert!(!args.is_empty(), "NetNs::command needs a program to run");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `args` inside the namespace and returns its stdout. A non-zero exit is an
    /// error that names the command and carries its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        if args.is_empty() {
            bail!("NetNs::run needs a program to run");
        }
        run_cmd(&mut self.command(args))
    }

    /// Runs `ip -n <name> <args..>` (no `netns exec` needed for `ip` itself).
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run_cmd(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Sets a sysctl inside the namespace (`sysctl -qw key=value`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.run(&["sysctl", "-qw", &format!("{key}={value}")])
            .map(drop)
    }

    /// Runs `f` on a new thread that has joined this namespace.
    ///
    /// Returns once the thread is inside the namespace, so a failure to enter it is
    /// reported here rather than as a panic at `join`. Threads that `f` spawns inherit
    /// the namespace; sockets it opens stay in the namespace wherever they are used.
    pub fn enter<T, F>(&self, f: F) -> Result<JoinHandle<T>>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let file = self.open()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let handle = thread::Builder::new()
            .name(format!("ns-{}", self.name))
            .spawn(move || {
                let entered = setns(&file, CloneFlags::CLONE_NEWNET);
                drop(file);
                let ok = entered.is_ok();
                // The receiver only disappears if `enter` itself panicked; nothing to do then.
                let _ = tx.send(entered);
                if !ok {
                    // Never run `f` outside the namespace. `resume_unwind` ends the thread
                    // without the panic hook's message; `enter` reports the real error.
                    std::panic::resume_unwind(Box::new("setns failed"));
                }
                f()
            })
            .context("spawning a thread for the namespace")?;
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(errno)) => {
                let _ = handle.join();
                Err(errno).with_context(|| format!("setns into {}", self.name))
            }
            Err(_) => {
                let _ = handle.join();
                bail!(
                    "namespace thread for {} ended before entering it",
                    self.name
                )
            }
        }
    }

    /// Runs `f` inside the namespace and waits for it; a panic in `f` is re-raised here.
    ///
    /// Unlike [`NetNs::enter`], `f` may borrow from the caller (a scoped thread runs it).
    pub fn exec<T, F>(&self, f: F) -> Result<T>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        let file = self.open()?;
        thread::scope(|scope| {
            let worker = scope.spawn(move || -> Result<T> {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns into {}", self.name))?;
                drop(file);
                Ok(f())
            });
            worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Starts a long-running process inside the namespace (`ip netns exec` replaces
    /// itself with the program, so the guard's pid is the program's). Its stdout and
    /// stderr are inherited so they show up in the test's output.
    pub fn spawn(&self, args: &[&str]) -> Result<ChildGuard> {
        if args.is_empty() {
            bail!("NetNs::spawn needs a program to run");
        }
        let child = self
            .command(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {args:?} in {}", self.name))?;
        Ok(ChildGuard::new(child))
    }

    fn open(&self) -> Result<File> {
        File::open(self.path()).with_context(|| format!("opening {}", self.path().display()))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let result = run_cmd(Command::new("ip").args(["netns", "del", &self.name]));
        if let Err(err) = result {
            eprintln!(
                "warning: could not delete network namespace {}: {err:#}",
                self.name
            );
        }
    }
}

/// A child process that is stopped when the guard drops (also while a test unwinds).
#[derive(Debug)]
pub struct ChildGuard {
    child: Option<Child>,
}

impl ChildGuard {
    /// Grace period a process gets after SIGTERM before it is killed.
    pub const GRACE: Duration = Duration::from_secs(3);

    /// Takes ownership of `child`.
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    /// The guarded process's id.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The child, e.g. to take its piped stdout or to `try_wait` on it.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Sends SIGTERM, waits up to `grace` for the process to exit (so it can detach
    /// XDP programs and unpin maps), then SIGKILLs it.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("child process already reaped");
        };
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        // ESRCH just means it exited meanwhile; `wait` below collects it either way.
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        Ok(child.wait()?)
    }

    /// Hands the child back without stopping it.
    pub fn into_inner(mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.child.is_some() {
            if let Err(err) = self.terminate(Self::GRACE) {
                eprintln!("warning: could not stop child process: {err:#}");
            }
        }
    }
}

/// Runs `cmd` to completion; a failure names the command and includes its stderr.
pub fn run_cmd(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !status.success() {
        bail!(
            "{shown} failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// Whether this process can create namespaces (tests skip themselves otherwise).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails the calling test unless it runs as root, as CI does: a skipped namespace test would
/// pass without proving anything.
pub fn require_root() {
    assert!(
        is_root(),
        "needs root (network namespaces, XDP, BPF_PROG_TEST_RUN); run as root, as CI does"
    );
}
