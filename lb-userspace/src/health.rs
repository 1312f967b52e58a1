//! Active health checks: one tokio task per (VIP, backend) probing it every `interval`.
//!
//! A backend starts healthy, as `HAProxy` treats a fresh server, so starting or reloading the
//! daemon never blackholes traffic while the first probes run. `fall` consecutive failures make
//! it unhealthy and `rise` consecutive successes make it healthy again. Those transitions are
//! reported on the channel given to [`Checker::new`], and so is a check's first probe that
//! passes ([`Event::Passed`]): until then the backend takes flows but does not make its VIP
//! ready (a backend that starts healthy may well be dead).

mod probe;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::HealthCheck;

/// Floor for `interval`: `tokio::time::interval` panics on zero, and a busy loop of probes
/// would be an attack on the backend.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// One backend of one VIP to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub vip: String,
    pub backend: IpAddr,
    pub check: HealthCheck,
    /// The health a new check starts from: healthy for a fresh backend (as haproxy does, so a
    /// start does not blackhole traffic), unhealthy for one a previous daemon had taken down,
    /// so it takes no new flows until `rise` probes succeed.
    pub start_healthy: bool,
}

/// A backend changed health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub vip: String,
    pub backend: IpAddr,
    pub healthy: bool,
    /// The outcome of the probe that completed the transition, e.g. "HTTP status 503, expected
    /// 200" or "connect 198.18.10.2:8080: Connection refused (os error 111)".
    pub reason: String,
}

/// What a check reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The check's first probe that passed (sent once per check task, whatever the health it
    /// started from; a check restarted with the state of one that passed sends none).
    Passed {
        vip: String,
        backend: IpAddr,
    },
    Transition(Transition),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    healthy: bool,
    /// Why the last transition happened; `None` until there was one.
    reason: Option<String>,
    /// A probe has passed (kept when a changed check restarts).
    passed: bool,
}

impl Verdict {
    const FRESH: Verdict = Verdict {
        healthy: true,
        reason: None,
        passed: false,
    };
}

/// A check's task and what it last concluded.
struct Running {
    check: HealthCheck,
    verdict: Arc<Mutex<Verdict>>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    // A removed target (or a dropped Checker) must stop probing its backend.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Runs the checks of the current targets.
pub struct Checker {
    runtime: Handle,
    tx: UnboundedSender<Event>,
    running: HashMap<(String, IpAddr), Running>,
}

impl Checker {
    /// # Panics
    /// Outside a tokio runtime: the checks run on the runtime that creates the checker.
    pub fn new(tx: UnboundedSender<Event>) -> Checker {
        Checker {
            runtime: Handle::current(),
            tx,
            running: HashMap::new(),
        }
    }

    /// Starts checks for new targets, stops removed ones, and keeps the state and the task of
    /// targets whose (vip, backend, check) is unchanged.
    ///
    /// A target whose check changed is restarted with the health it had: restarting it
    /// healthy would leave a backend the daemon took out for good, since a healthy check
    /// reports nothing until it fails.
    pub fn update(&mut self, targets: Vec<Target>) {
        let mut next = HashMap::with_capacity(targets.len());
        for target in targets {
            let key = (target.vip.clone(), target.backend);
            if next.contains_key(&key) {
                tracing::warn!(vip = %target.vip, backend = %target.backend,
                    "health: backend listed twice for the VIP, keeping the first check");
                continue;
            }
            let running = match self.running.remove(&key) {
                Some(old) if old.check == target.check => old,
                Some(old) => {
                    let verdict = lock(&old.verdict).clone();
                    drop(old);
                    self.spawn(target, verdict)
                }
                None => {
                    let verdict = Verdict {
                        healthy: target.start_healthy,
                        ..Verdict::FRESH
                    };
                    self.spawn(target, verdict)
                }
            };
            next.insert(key, running);
        }
        // Whatever is left was removed; dropping it aborts its task.
        self.running = next;
    }

    /// Current view, sorted: (vip, backend, healthy, reason of the last transition).
    pub fn states(&self) -> Vec<(String, IpAddr, bool, Option<String>)> {
        let mut states: Vec<_> = self
            .running
            .iter()
            .map(|((vip, backend), running)| {
                let verdict = lock(&running.verdict).clone();
                (vip.clone(), *backend, verdict.healthy, verdict.reason)
            })
            .collect();
        states.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        states
    }

    fn spawn(&self, target: Target, verdict: Verdict) -> Running {
        let check = target.check.clone();
        let verdict = Arc::new(Mutex::new(verdict));
        let task = self
            .runtime
            .spawn(run(target, Arc::clone(&verdict), self.tx.clone()));
        Running {
            check,
            verdict,
            task,
        }
    }
}

/// The verdict is plain data, consistent after any panic, so a poisoned lock is still usable.
fn lock(verdict: &Mutex<Verdict>) -> MutexGuard<'_, Verdict> {
    verdict.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn run(target: Target, verdict: Arc<Mutex<Verdict>>, tx: UnboundedSender<Event>) {
    let check = &target.check;
    let (healthy, mut passed) = {
        let v = lock(&verdict);
        (v.healthy, v.passed)
    };
    let mut tracker = Tracker::new(healthy, check.rise, check.fall);
    // The first tick completes at once: a new backend is probed right away.
    let mut ticker = tokio::time::interval(check.interval.max(MIN_INTERVAL));
    // A probe that outlives the interval (timeout > interval) delays the next one rather than
    // firing a burst to catch up.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let outcome = probe::probe(target.backend, check).await;
        if outcome.is_ok() && !passed {
            passed = true;
            lock(&verdict).passed = true;
            let first = Event::Passed {
                vip: target.vip.clone(),
                backend: target.backend,
            };
            if tx.send(first).is_err() {
                return;
            }
        }
        let Some(healthy) = tracker.observe(outcome.is_ok()) else {
            continue;
        };
        let (Ok(reason) | Err(reason)) = outcome;
        *lock(&verdict) = Verdict {
            healthy,
            reason: Some(reason.clone()),
            passed,
        };
        let (vip, backend) = (&target.vip, target.backend);
        if healthy {
            tracing::info!(vip = %vip, backend = %backend, reason = %reason, "backend healthy");
        } else {
            tracing::warn!(vip = %vip, backend = %backend, reason = %reason, "backend unhealthy");
        }
        let transition = Transition {
            vip: vip.clone(),
            backend,
            healthy,
            reason,
        };
        if tx.send(Event::Transition(transition)).is_err() {
            // Nobody listens any more: the daemon is going away.
            return;
        }
    }
}

/// Counts consecutive probe results that disagree with the current health.
#[derive(Debug)]
struct Tracker {
    healthy: bool,
    contrary: u32,
    rise: u32,
    fall: u32,
}

impl Tracker {
    /// A `rise` or `fall` of 0 means 1: a single probe is the least that can change health.
    fn new(healthy: bool, rise: u32, fall: u32) -> Tracker {
        Tracker {
            healthy,
            contrary: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Records one probe; `Some(new health)` when it completes a transition.
    fn observe(&mut self, success: bool) -> Option<bool> {
        if success == self.healthy {
            self.contrary = 0;
            return None;
        }
        self.contrary += 1;
        let needed = if self.healthy { self.fall } else { self.rise };
        if self.contrary < needed {
            return None;
        }
        self.healthy = success;
        self.contrary = 0;
        Some(success)
    }
}
