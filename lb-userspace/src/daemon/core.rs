//! The daemon's shared state and every operation on it: reload, drain, health transitions and
//! the read-only views. Admin requests, signals and health tasks all come through here, one at
//! a time (the dataplane sits behind one lock), so two changes never interleave.
//!
//! Nothing slow runs under that lock, and the paths that must answer at once never take it:
//! each change publishes what readiness and `status` read ([`Published`]), the phase is
//! written through a node-map handle of its own, and conntrack is walked by the
//! [`FlowCensus`] on its own handle.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    time::{Duration, Instant},
};

use crate::{
    config::{Config, ConfigErrors},
    dataplane::{Dataplane, DataplaneError},
    edge::{
        pool::Pool,
        stats::EdgeStats,
        tls::{server_config, Reloadable, TlsError},
        upstream::Upstream,
    },
    health::{Checker, Event, Target, Transition},
    shutdown::NodeState,
};

use super::{
    flow_census::FlowCensus,
    restart_only::{restart_only, NeedsRestart},
    state::{BackendMeta, Metas},
};
use crate::{
    admin::protocol::{BackendRow, BackendState},
    config::Shutdown,
    dataplane::NodeSwitch,
};

/// What the daemon's last change left, for the readers that must never wait for its lock
/// (probes, `status`, the stop signal). Replaced whole after every change, under the lock.
#[derive(Debug, Clone)]
pub struct Published {
    /// `status` without the fields read at answer time (phase, uptime, reload counters).
    pub status: crate::admin::protocol::Status,
    /// Every backend's state and weight (traffic and flows as of the change).
    pub backends: Vec<BackendRow>,
    pub shutdown: Shutdown,
}

/// What the daemon owns; behind one lock.
pub struct Inner {
    pub dp: Dataplane,
    pub config: Config,
    pub metas: Metas,
    pub checker: Checker,
    /// The pools edge listeners pick backends from, by VIP name.
    pub pools: HashMap<String, Arc<Pool>>,
    /// Each TLS edge listener's current certificates, by edge name.
    pub edge_tls: HashMap<String, Arc<Reloadable>>,
    /// Each edge listener's backend connections, by pool VIP name.
    pub upstreams: HashMap<String, Vec<Arc<Upstream>>>,
    /// Each edge listener's counters, by edge name: listeners built for the same name share
    /// them, so a reload does not reset what `/metrics` reports.
    pub edge_stats: HashMap<String, Arc<EdgeStats>>,
}

impl Inner {
    /// Gives every edge pool its VIP's current table, after anything that changes tables,
    /// and closes idle connections to backends that left it.
    pub fn refresh_pools(&self) {
        for (vip, pool) in &self.pools {
            let table = self.dp.pool_table(vip).unwrap_or_default();
            let serving: HashSet<IpAddr> = table.iter().copied().collect();
            for u in self.upstreams.get(vip).into_iter().flatten() {
                u.retain(|b| serving.contains(&b));
            }
            pool.update(table, self.dp.pool_sessions(vip), self.dp.pool_members(vip));
        }
    }
}

pub struct Core {
    pub config_path: PathBuf,
    pub started: Instant,
    inner: Mutex<Inner>,
    /// Edge listeners subscribe to it; `sluice status` and the probes read it. Private: a
    /// `watch` borrow is a read lock, and one held while anything else is locked or the phase
    /// borrowed again deadlocks against `set_phase`'s write (a queued writer blocks new
    /// readers). [`Core::phase`] and [`Core::watch_phase`] are the only ways in.
    phase: tokio::sync::watch::Sender<NodeState>,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// Reloads tried so far (SIGHUP or `sluice reload`): the `generation` of the reload span
    /// every log line of a reload carries.
    reload_generation: AtomicU64,
    pub last_reload_error: Mutex<Option<String>>,
    /// Live flows per backend and the idle sweep: one paced walk, off the lock.
    pub census: FlowCensus,
    /// The node map on its own handle: `set_phase` never waits for the lock.
    node: Mutex<NodeSwitch>,
    /// Held only to clone or replace the `Arc`, never across another lock.
    published: Mutex<Arc<Published>>,
    /// The BGP speaker, once started (never with no `[bgp]`).
    pub bgp: std::sync::OnceLock<Arc<crate::bgp::Speaker>>,
    /// Neighbour resolutions the next-hop resolver made the kernel start (see
    /// `dataplane::resolver`), for `/metrics`.
    pub neighbour_resolves: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error("edge \"{edge}\": {error}")]
    EdgeTls {
        edge: String,
        // Boxed: rustls' errors would make every `CoreError` (and its `Result`s) large.
        error: Box<TlsError>,
    },
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error(transparent)]
    NeedsRestart(#[from] NeedsRestart),
    #[error("VIP \"{0}\" is not configured")]
    UnknownVip(String),
    #[error("VIP \"{vip}\" has no backend {backend}")]
    UnknownBackend { vip: String, backend: IpAddr },
    #[error("BGP is not configured: add a [bgp] section and restart")]
    NoBgp,
}

impl Core {
    /// The daemon's state around `inner`; [`Core::start`] then makes the kernel match it.
    ///
    /// Fails only if the second handles on conntrack or the node map cannot be opened; the
    /// dataplane comes back then, for the caller to give up as after any failed start.
    pub fn new(
        config_path: PathBuf,
        mut inner: Inner,
        flow_idle_timeout: Duration,
    ) -> Result<Core, (CoreError, Box<Dataplane>)> {
        // A daemon that adopted a dataplane keeps the drains the previous one had.
        let mut metas = Metas::new();
        for vip in &inner.config.vips {
            for b in &vip.backends {
                let mut meta = BackendMeta::new(b.health.is_some());
                let adopted = inner
                    .dp
                    .backend_state(&vip.name, b.address)
                    .map(BackendState::from_code);
                meta.drained = adopted == Some(BackendState::Draining);
                // A checked backend the previous daemon had taken down stays down until its
                // checks pass again, rather than taking new flows for `fall` rounds.
                meta.healthy = !(meta.checked && adopted == Some(BackendState::Down));
                metas.insert((vip.name.clone(), b.address), meta);
            }
        }
        inner.metas = metas;
        let handles = inner
            .dp
            .conntrack()
            .and_then(|c| Ok((c, inner.dp.node_switch()?)));
        let (conntrack, node) = match handles {
            Ok(h) => h,
            Err(error) => return Err((error.into(), Box::new(inner.dp))),
        };
        let census = FlowCensus::new(Box::new(conntrack), flow_idle_timeout);
        let node = Mutex::new(node);
        let shutdown = inner.config.shutdown;
        let core = Core {
            config_path,
            started: Instant::now(),
            inner: Mutex::new(inner),
            phase: tokio::sync::watch::Sender::new(NodeState::Serving),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            reload_generation: AtomicU64::new(0),
            last_reload_error: Mutex::new(None),
            census,
            node,
            // Replaced at once below, from `inner`.
            published: Mutex::new(Arc::new(Published {
                status: Core::empty_status(),
                backends: Vec::new(),
                shutdown,
            })),
            bgp: std::sync::OnceLock::new(),
            neighbour_resolves: AtomicU64::new(0),
        };
        core.publish(&core.lock());
        Ok(core)
    }

    /// Makes what `inner` now says visible to the lock-free readers. Called under the lock at
    /// the end of every change, so readers see changes in order.
    pub fn publish(&self, inner: &Inner) {
        let published = Published {
            status: self.status_of(inner),
            backends: Core::rows_of(inner, &HashMap::new()).unwrap_or_default(),
            shutdown: inner.config.shutdown,
        };
        *self
            .published
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(published);
    }

    /// The last published state.
    pub fn published(&self) -> Arc<Published> {
        Arc::clone(
            &self
                .published
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Writes every backend's state to the kernel and starts the health checks.
    pub fn start(&self) -> Result<(), CoreError> {
        let mut inner = self.lock();
        sync_kernel_states(&mut inner)?;
        let targets = targets(&inner.config, &inner.metas);
        inner.checker.update(targets);
        self.publish(&inner);
        drop(inner);
        Ok(())
    }

    /// Moves the node to `phase`: readiness, edge listeners and the node map follow.
    pub fn set_phase(&self, phase: NodeState) {
        // The kernel first: once listeners stop accepting, a new SYN must already get its RST.
        // Through the node map's own handle: the daemon's lock may be held by anything.
        let written = self
            .node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .set(phase);
        if let Err(error) = written {
            tracing::error!(%error, phase = phase.name(), "writing the node state");
        }
        self.phase.send_replace(phase);
        tracing::info!(phase = phase.name(), "node phase");
    }

    /// The current phase, copied out: the read guard never outlives this call.
    #[expect(
        clippy::disallowed_methods,
        reason = "the one place the phase is borrowed: copied out in one statement"
    )]
    pub fn phase(&self) -> NodeState {
        *self.phase.borrow()
    }

    /// A receiver that sees every phase change (for edge listeners).
    pub fn watch_phase(&self) -> tokio::sync::watch::Receiver<NodeState> {
        self.phase.subscribe()
    }

    /// The lock is only poisoned if an operation panicked half way; the state it guards is
    /// still the last committed one (every change commits at its end), so carry on.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Reads the config file again and applies it, all or nothing.
    pub fn reload(&self) -> Result<(usize, usize), CoreError> {
        let generation = self.reload_generation.fetch_add(1, Ordering::Relaxed) + 1;
        // Synchronous throughout (no await), so the guard spans exactly this reload.
        let _span = tracing::info_span!("reload", generation).entered();
        let result = self.try_reload();
        if result.is_err() {
            // A reload that failed after the maps changed (a backend state write) left a
            // state the readers must see too.
            let inner = self.lock();
            self.publish(&inner);
        }
        match &result {
            Ok((vips, backends)) => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                *self
                    .last_reload_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
                tracing::info!(vips, backends, "config reloaded");
            }
            Err(error) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                *self
                    .last_reload_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error.to_string());
                tracing::error!(%error, "reload rejected; the running config is unchanged");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<(usize, usize), CoreError> {
        let config = Config::load(&self.config_path)?;
        for warning in config.warnings() {
            tracing::warn!("{}: {warning}", self.config_path.display());
        }
        let mut inner = self.lock();
        restart_only(&inner.config, &config)?;
        // Certificates and CA bundles are read again (they may have been rotated on disk);
        // one that fails stops the reload before anything changed.
        let mut certificates = Vec::new();
        for e in &config.edges {
            if let (Some(settings), Some(current)) = (&e.tls, inner.edge_tls.get(&e.name)) {
                let fresh = server_config(settings).map_err(|error| CoreError::EdgeTls {
                    edge: e.name.clone(),
                    error: Box::new(error),
                })?;
                certificates.push((Arc::clone(current), fresh));
            }
        }
        inner.dp.apply(&config)?;
        for (current, fresh) in certificates {
            current.replace(fresh);
        }
        let mut metas = Metas::new();
        for vip in &config.vips {
            for b in &vip.backends {
                let key = (vip.name.clone(), b.address);
                let mut meta = inner
                    .metas
                    .remove(&key)
                    .unwrap_or_else(|| BackendMeta::new(b.health.is_some()));
                if meta.checked != b.health.is_some() {
                    // A check added or removed starts from a clean, healthy slate.
                    meta = BackendMeta {
                        drained: meta.drained,
                        ..BackendMeta::new(b.health.is_some())
                    };
                }
                metas.insert(key, meta);
            }
        }
        inner.metas = metas;
        inner
            .edge_stats
            .retain(|name, _| config.edges.iter().any(|e| e.name == *name));
        inner.config = config;
        sync_kernel_states(&mut inner)?;
        let targets = targets(&inner.config, &inner.metas);
        inner.checker.update(targets);
        inner.refresh_pools();
        self.publish(&inner);
        let backends = inner.config.vips.iter().map(|v| v.backends.len()).sum();
        Ok((inner.config.vips.len(), backends))
    }

    pub fn set_drained(&self, vip: &str, backend: IpAddr, drained: bool) -> Result<(), CoreError> {
        let mut inner = self.lock();
        let vips = inner_vips(&inner.config);
        let meta = inner
            .metas
            .get_mut(&(vip.to_string(), backend))
            .ok_or_else(|| unknown(&vips, vip, backend))?;
        meta.drained = drained;
        let state = meta.kernel_state();
        let written = inner.dp.set_backend_state(vip, backend, state.code());
        inner.refresh_pools();
        // Published whether or not the write took: the drain flag changed either way.
        self.publish(&inner);
        written?;
        tracing::info!(vip, %backend, drained, "backend {}", if drained { "drained" } else { "undrained" });
        Ok(())
    }

    /// Applies what a health check reported.
    pub fn health_event(&self, event: &Event) {
        match event {
            Event::Transition(t) => self.health_transition(t),
            Event::Passed { vip, backend } => self.health_passed(vip, *backend),
        }
    }

    /// A check's first passing probe: the backend now makes its VIP ready (if it takes flows).
    fn health_passed(&self, vip: &str, backend: IpAddr) {
        let mut inner = self.lock();
        let Some(meta) = inner.metas.get_mut(&(vip.to_owned(), backend)) else {
            return; // a check of a backend removed by a reload a moment ago
        };
        if meta.passed || !meta.checked {
            return;
        }
        meta.passed = true;
        tracing::debug!(vip, %backend, "first health probe passed");
        self.publish(&inner);
    }

    pub fn health_transition(&self, t: &Transition) {
        let mut inner = self.lock();
        let Some(meta) = inner.metas.get_mut(&(t.vip.clone(), t.backend)) else {
            return; // a check of a backend removed by a reload a moment ago
        };
        meta.healthy = t.healthy;
        meta.reason = Some(t.reason.clone());
        if t.healthy {
            meta.to_healthy += 1;
        } else {
            meta.to_unhealthy += 1;
        }
        let state = meta.kernel_state();
        if let Err(error) = inner.dp.set_backend_state(&t.vip, t.backend, state.code()) {
            tracing::error!(vip = t.vip, backend = %t.backend, %error, "could not apply a health transition");
        }
        inner.refresh_pools();
        self.publish(&inner);
    }
}

/// Makes every backend's kernel state match its meta (after a start or a reload).
fn sync_kernel_states(inner: &mut Inner) -> Result<(), CoreError> {
    let wanted: Vec<(String, IpAddr, u8)> = inner
        .metas
        .iter()
        .map(|((v, b), m)| (v.clone(), *b, m.kernel_state().code()))
        .collect();
    for (vip, backend, state) in wanted {
        if inner.dp.backend_state(&vip, backend) != Some(state) {
            inner.dp.set_backend_state(&vip, backend, state)?;
        }
    }
    Ok(())
}

fn targets(config: &Config, metas: &Metas) -> Vec<Target> {
    config
        .vips
        .iter()
        .flat_map(|v| {
            v.backends.iter().filter_map(|b| {
                b.health.clone().map(|check| Target {
                    vip: v.name.clone(),
                    backend: b.address,
                    check,
                    start_healthy: metas
                        .get(&(v.name.clone(), b.address))
                        .is_none_or(|m| m.healthy),
                })
            })
        })
        .collect()
}

fn inner_vips(config: &Config) -> Vec<String> {
    config.vips.iter().map(|v| v.name.clone()).collect()
}

fn unknown(vips: &[String], vip: &str, backend: IpAddr) -> CoreError {
    if vips.iter().any(|v| v == vip) {
        CoreError::UnknownBackend {
            vip: vip.into(),
            backend,
        }
    } else {
        CoreError::UnknownVip(vip.into())
    }
}
