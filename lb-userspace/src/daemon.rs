//! `sluice run`: the daemon.
//!
//! Start-up binds the management port and every edge listener and reads their certificates
//! first (a port in use or a bad key fails before the dataplane is touched), then loads or
//! adopts the dataplane, writes the maps, attaches and pins, and opens the admin socket. It
//! then serves until SIGINT/SIGTERM, reloading on SIGHUP, and shuts down gracefully (see
//! `crate::shutdown`).

mod bgp_routes;
pub(crate) mod core;
mod flow_census;
mod flow_query;
mod instance_lock;
mod next_hops;
mod restart_only;
mod state;
mod views;

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::{mpsc, watch},
};
use tracing::Instrument as _;

use self::core::{Core, Inner};
use self::instance_lock::InstanceLock;
use crate::{
    admin::server::AdminServer,
    config::{
        self,
        route::{Action, RoutePool},
        Config,
    },
    dataplane::{Dataplane, Options},
    edge::{
        self,
        forwarded::Policy,
        pool::Pool,
        route::Table,
        server::Listener,
        stats::EdgeStats,
        tls::{server_config, Reloadable},
        upstream::{Target, Timeouts, Upstream},
    },
    health::Checker,
    management,
    shutdown::NodeState,
    shutdown::Overrides,
};

/// Conntrack entries idle this long are removed: LRU alone never forgets a flow that ended.
const FLOW_IDLE_TIMEOUT: Duration = Duration::from_mins(5);

/// Runs the daemon with the config at `path` until SIGINT/SIGTERM and a graceful shutdown.
pub fn run(path: &Path, overrides: Overrides) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Before anything else: a second daemon of this instance must not touch the first one's
    // pins, ports or socket. Held until this function returns.
    let _instance = InstanceLock::take(Path::new(instance_lock::LOCK_DIR), &config.instance)?;
    for warning in config.warnings() {
        tracing::warn!("{}: {warning}", path.display());
    }
    let workers = config.worker_threads.unwrap_or_else(|| {
        // The CPUs this process may run on (its affinity and cgroup quota); one if unknown.
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    crate::allocator::return_large_blocks_to_the_system();
    tracing::info!(worker_threads = workers, "starting the runtime");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let result = runtime.block_on(serve(path, config, overrides));
    // Whatever still runs (a connection cut by the timeout, a health probe) ends with the
    // process; waiting for it would only delay the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

async fn serve(path: &Path, config: Config, overrides: Overrides) -> anyhow::Result<()> {
    let mut signals = Signals::new()?;
    let management = tokio::net::TcpListener::bind(config.management.address)
        .await
        .with_context(|| format!("binding the management port {}", config.management.address))?;
    // Certificates and listening sockets first: a bad key or a port in use fails the start
    // before the dataplane is touched.
    let prepared = prepare_edges(&config).await?;
    let (health_tx, mut health_rx) = mpsc::unbounded_channel();
    let dp = start_dataplane(&config)?;
    let pools = pools(&config);
    let inner = Inner {
        dp,
        config: config.clone(),
        metas: std::collections::HashMap::new(),
        checker: Checker::new(health_tx),
        pools,
        edge_tls: std::collections::HashMap::new(),
        upstreams: std::collections::HashMap::new(),
        edge_stats: std::collections::HashMap::new(),
    };
    let core = match Core::new(path.to_path_buf(), inner, FLOW_IDLE_TIMEOUT) {
        Ok(core) => Arc::new(core),
        Err((error, mut dp)) => {
            abandon(&mut dp);
            return Err(error).context("opening conntrack and the node map");
        }
    };
    if let Err(error) = core.start() {
        abandon(&mut core.lock().dp);
        return Err(error).context("writing the backend states");
    }
    core.lock().refresh_pools();
    let mut edges = start_edges(&core, prepared);
    let admin = match AdminServer::bind(&config.admin.socket, core.clone()).await {
        Ok(a) => a,
        Err(e) => {
            abandon(&mut core.lock().dp);
            return Err(e).context("opening the admin socket");
        }
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mgmt = tokio::spawn(management::serve(management, core.clone(), shutdown_rx));
    let health_core = core.clone();
    tokio::spawn(async move {
        while let Some(t) = health_rx.recv().await {
            let core = health_core.clone();
            let _ = tokio::task::spawn_blocking(move || core.health_event(&t)).await;
        }
    });
    next_hops::spawn(core.clone());
    if let Some(bgp) = &config.bgp {
        bgp_routes::spawn(&core, bgp);
    }
    // One paced walk of conntrack counts live flows per backend and removes idle ones; it
    // holds no lock (see `flow_census`).
    let census_core = core.clone();
    tokio::spawn(async move {
        loop {
            let core = census_core.clone();
            let walked = tokio::task::spawn_blocking(move || core.census.walk()).await;
            let took = match walked {
                Ok(Ok(census)) => census.took,
                Ok(Err(error)) => {
                    tracing::warn!(%error, "walking conntrack");
                    Duration::ZERO
                }
                Err(_) => Duration::ZERO,
            };
            tokio::time::sleep(flow_census::FlowCensus::pause_after(took)).await;
        }
    });
    {
        let inner = core.lock();
        tracing::info!(
            instance = inner.config.instance,
            interfaces = ?inner.config.interfaces,
            vips = inner.config.vips.len(),
            adopted = inner.dp.adopted(),
            management = %config.management.address,
            admin = %config.admin.socket.display(),
            "serving"
        );
    }
    let notifier = crate::sd_notify::Notifier::from_env().when_ready(core.clone());
    signals.until_stop(&core).await;
    notifier.stopping();
    shut_down(&core, &mut signals, overrides, &mut edges).await;
    // The config as last reloaded decides, so an operator can flip it before a stop.
    let keep = core.lock().config.keep_dataplane;
    let stopping = tracing::info_span!("shutdown", phase = %"stopping");
    stopping.in_scope(|| tracing::info!(keep_dataplane = keep, "stopping"));
    let _ = shutdown_tx.send(true);
    for e in edges {
        e.task.abort();
    }
    let _ = mgmt.await;
    drop(admin);
    stopping.in_scope(|| stop(&core, keep));
    Ok(())
}

/// An edge listener ready to start: its certificates read and its socket bound.
struct PreparedEdge {
    config: crate::config::Edge,
    tls: Option<Arc<Reloadable>>,
    socket: tokio::net::TcpListener,
}

/// A running edge listener: its accept task and its counts (open connections, requests in
/// flight).
struct Edge {
    task: tokio::task::JoinHandle<()>,
    stats: Arc<EdgeStats>,
}

/// Reads every edge listener's certificates and binds its socket; any failure stops the start.
async fn prepare_edges(config: &Config) -> anyhow::Result<Vec<PreparedEdge>> {
    let mut out = Vec::new();
    for e in &config.edges {
        let tls = match &e.tls {
            Some(t) => Some(Arc::new(Reloadable::new(
                server_config(t).with_context(|| format!("edge \"{}\": TLS", e.name))?,
            ))),
            None => None,
        };
        let socket = tokio::net::TcpListener::bind(e.address)
            .await
            .with_context(|| format!("edge \"{}\": binding {}", e.name, e.address))?;
        out.push(PreparedEdge {
            config: e.clone(),
            tls,
            socket,
        });
    }
    Ok(out)
}

/// A pool for every VIP a listener or a route sends to. Route tables are fixed until a
/// restart, so this set is too; the pools' contents follow every change.
fn pools(config: &Config) -> HashMap<String, Arc<Pool>> {
    config
        .edges
        .iter()
        .flat_map(edge_pools)
        .map(|vip| (vip.to_owned(), Arc::new(Pool::default())))
        .collect()
}

/// The VIP names whose backends the listener `e` sends to: its `pool` and its routes' own.
fn edge_pools(e: &config::Edge) -> impl Iterator<Item = &str> {
    e.routes
        .iter()
        .filter_map(|r| match &r.action {
            Action::Proxy { pool: Some(p), .. } => Some(p.vip.as_str()),
            _ => None,
        })
        .chain(std::iter::once(e.pool.as_str()))
}

/// Starts accepting on every prepared listener.
fn start_edges(core: &Arc<Core>, prepared: Vec<PreparedEdge>) -> Vec<Edge> {
    let mut inner = core.lock();
    let mut edges = Vec::new();
    for PreparedEdge {
        config: e,
        tls,
        socket,
    } in prepared
    {
        if let Some(tls) = &tls {
            inner.edge_tls.insert(e.name.clone(), Arc::clone(tls));
        }
        let timeouts = Timeouts {
            connect: e.connect_timeout,
            response: e.response_timeout,
        };
        let upstream = Arc::new(Upstream::new(e.backend_port, e.send_proxy, timeouts));
        inner
            .upstreams
            .entry(e.pool.clone())
            .or_default()
            .push(Arc::clone(&upstream));
        let stats = Arc::clone(inner.edge_stats.entry(e.name.clone()).or_default());
        // Routes with a pool of their own: one target per pool and port, whose connections
        // the pool's refresh prunes like the listener's.
        let mut targets: HashMap<RoutePool, Arc<Target>> = HashMap::new();
        let mut target = |p: &RoutePool| {
            let t = targets.entry(p.clone()).or_insert_with(|| {
                let upstream = Arc::new(Upstream::new(p.backend_port, e.send_proxy, timeouts));
                inner
                    .upstreams
                    .entry(p.vip.clone())
                    .or_default()
                    .push(Arc::clone(&upstream));
                let pool = Arc::clone(inner.pools.entry(p.vip.clone()).or_default());
                Arc::new(Target { pool, upstream })
            });
            Arc::clone(t)
        };
        let listener = Listener {
            name: e.name.clone(),
            tls,
            formats: e.client_cert_header.clone(),
            names: e.client_cert_names.clone(),
            chain: e.client_cert_chain,
            forwarded: Policy {
                styles: e.forwarded_headers.clone(),
                trusted_proxies: e.trusted_proxies.clone(),
            },
            routes: Table::counted(
                &e.routes,
                |name| stats.route(name),
                |name| stats.affinity(name),
            )
            .auth_counted(|name| stats.auth(name))
            .pooled(&mut target),
            pool: Arc::clone(&inner.pools[&e.pool]),
            upstream,
            proxy_protocol: e.proxy_protocol,
            stats: Arc::clone(&stats),
            phase: core.watch_phase(),
            limits: e.client_limits,
            max_connections: u64::from(e.max_connections),
        };
        tracing::info!(edge = e.name, address = %e.address, tls = e.tls.is_some(), "edge listener up");
        let task = tokio::spawn(edge::server::serve(socket, Arc::new(listener)));
        edges.push(Edge { task, stats });
    }
    edges
}

/// Loads or adopts the dataplane and makes it serve `config`. A failure after a fresh load
/// removes what was pinned; an adopted dataplane is left running as it was found.
fn start_dataplane(config: &Config) -> anyhow::Result<Dataplane> {
    let mut dp = Dataplane::load(&Options {
        conntrack_entries: config.conntrack_entries,
        ring_slots: ring_slots(config),
        pins: Some((config.bpffs.clone(), config.pin_dir())),
        kernel_log: config.kernel_log,
    })
    .context("loading sluice_xdp")?;
    let result = (|| -> anyhow::Result<()> {
        dp.apply(config).context("writing the maps")?;
        for iface in &config.interfaces {
            dp.attach(iface, config.xdp_mode)
                .with_context(|| format!("attaching to {iface}"))?;
        }
        dp.finish_pinning(&config.interfaces)
            .context("pinning the dataplane")?;
        if let Some(reader) = dp.take_kernel_log() {
            reader
                .spawn()
                .context("starting the kernel_log reader thread")?;
            tracing::info!(
                kernel_log = config.kernel_log.name(),
                "kernel reports forwarded to the log"
            );
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            tracing::info!(
                pin_dir = %config.pin_dir().display(),
                adopted = dp.adopted(),
                "sluice_xdp attached and pinned"
            );
            Ok(dp)
        }
        Err(e) => {
            abandon(&mut dp);
            Err(e)
        }
    }
}

/// Gives up a dataplane after a failed start. One this daemon loaded is removed; one it
/// adopted is left pinned and forwarding, whatever `keep_dataplane` says: it carried traffic
/// before this daemon came, and the next daemon adopts it again.
fn abandon(dp: &mut Dataplane) {
    let adopted = dp.adopted();
    if let Err(error) = dp.close(adopted) {
        tracing::error!(%error, "cleaning up after a failed start");
    } else if adopted {
        tracing::info!("the adopted dataplane is left pinned and forwarding");
    }
}

/// Room for every VIP's two tables, twice over so a reload can stage resized or new VIPs, and
/// never less than the default.
fn ring_slots(cfg: &Config) -> u32 {
    let needed: u64 = cfg.vips.iter().map(|v| 4 * u64::from(v.table_size)).sum();
    u32::try_from(needed)
        .unwrap_or(u32::MAX)
        .max(lb_common::DEFAULT_RING_SLOTS)
}

/// SIGINT and SIGTERM stop the daemon; SIGHUP reloads it.
struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("SIGHUP handler")?,
        })
    }

    /// Serves SIGHUP (reload) until SIGINT or SIGTERM.
    async fn until_stop(&mut self, core: &Arc<Core>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => {
                    tracing::info!("SIGHUP: reloading {}", core.config_path.display());
                    let c = core.clone();
                    // Not awaited: a stop signal that comes during a reload is seen at once
                    // (reloads still run one at a time, under the daemon's lock).
                    drop(tokio::task::spawn_blocking(move || c.reload()));
                }
            }
        }
    }

    /// The next SIGINT or SIGTERM.
    async fn stop(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// The graceful shutdown: `draining` for the delay, then `closed` until in-flight requests
/// finish or the timeout ends. A second stop signal skips whatever waiting is left.
async fn shut_down(
    core: &Arc<Core>,
    signals: &mut Signals,
    overrides: Overrides,
    edges: &mut [Edge],
) {
    // The published settings, not the lock: the stop signal never waits for anything.
    let (delay, timeout) = overrides.apply(&core.published().shutdown);
    let hurried = async {
        tracing::info!(
            delay = %humantime::format_duration(delay),
            timeout = %humantime::format_duration(timeout),
            "stop signal: draining; not ready, still serving"
        );
        // Routers first: they move new flows to the other gateways before readiness matters.
        let hurried = bgp_routes::withdraw_all(core, signals.stop()).await;
        core.set_phase(NodeState::Draining);
        if hurried {
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            () = signals.stop() => true,
        }
    }
    .instrument(phase_span(NodeState::Draining))
    .await;
    closed(core, signals, timeout, edges, hurried)
        .instrument(phase_span(NodeState::Closed))
        .await;
}

/// The span of one shutdown phase: `shutdown{phase=draining}`.
fn phase_span(phase: NodeState) -> tracing::Span {
    tracing::info_span!("shutdown", %phase)
}

/// The `closed` phase: in-flight requests get up to `timeout` (none when `hurried`).
async fn closed(
    core: &Arc<Core>,
    signals: &mut Signals,
    timeout: Duration,
    edges: &mut [Edge],
    hurried: bool,
) {
    core.set_phase(NodeState::Closed);
    let in_flight = |edges: &[Edge]| edges.iter().map(|e| e.stats.in_flight()).sum::<u64>();
    tracing::info!(
        in_flight = in_flight(edges),
        hurried,
        "closed: new edge connections are reset; in-flight requests finishing"
    );
    if !hurried {
        let finished = async {
            for e in edges.iter_mut() {
                // The listener first takes what the kernel queued before it closed, and
                // counts it open.
                let _ = (&mut e.task).await;
                e.stats.finished().await;
            }
        };
        tokio::select! {
            () = finished => tracing::info!("every edge connection finished"),
            () = tokio::time::sleep(timeout) => tracing::info!("shutdown_timeout reached"),
            () = signals.stop() => tracing::info!("second stop signal: not waiting any longer"),
        }
    }
    let cut = in_flight(edges);
    if cut > 0 {
        tracing::warn!(cut, "cutting the requests still in flight");
    }
}

/// Hands the dataplane back: left pinned and forwarding with `keep`, removed otherwise.
fn stop(core: &Core, keep: bool) {
    let closed = core.lock().dp.close(keep);
    if let Err(error) = closed {
        tracing::error!(%error, "releasing the dataplane");
    } else if keep {
        tracing::info!("dataplane left pinned and forwarding (keep_dataplane = true)");
    } else {
        tracing::info!("dataplane detached and unpinned");
    }
}

#[cfg(test)]
mod tests;
