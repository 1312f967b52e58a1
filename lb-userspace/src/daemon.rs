//! `sluice run`: the daemon.
//!
//! Start-up binds the admin socket and the management port first (a port in use fails before
//! the dataplane is touched), then loads or adopts the dataplane, writes the maps, attaches and
//! pins. It then serves until SIGINT/SIGTERM, reloading on SIGHUP.

mod core;
mod state;
mod views;

use std::{
    path::Path,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};

use self::core::{Core, Inner};
use crate::{
    admin::server::AdminServer,
    config::Config,
    dataplane::{Dataplane, Options},
    edge::{
        self,
        client_cert::Names,
        forwarded::Policy,
        pool::Pool,
        server::Listener,
        tls::{server_config, Reloadable},
        upstream::Upstream,
    },
    health::Checker,
    management,
};

/// Conntrack entries idle this long are removed: LRU alone never forgets a flow that ended.
const FLOW_IDLE_TIMEOUT: Duration = Duration::from_mins(5);
const FLOW_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Runs the daemon with the config at `path` until SIGINT/SIGTERM.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(serve(path, config))
}

async fn serve(path: &Path, config: Config) -> anyhow::Result<()> {
    let management = tokio::net::TcpListener::bind(config.management.address)
        .await
        .with_context(|| format!("binding the management port {}", config.management.address))?;
    let (health_tx, mut health_rx) = mpsc::unbounded_channel();
    let dp = start_dataplane(&config)?;
    let pools = config
        .edges
        .iter()
        .map(|e| (e.pool.clone(), Arc::new(Pool::default())))
        .collect();
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
    let core = Arc::new(Core::new(path.to_path_buf(), inner)?);
    core.lock().refresh_pools();
    let edges = match start_edges(&core).await {
        Ok(e) => e,
        Err(e) => {
            stop(&core, config.keep_dataplane);
            return Err(e);
        }
    };
    let admin = match AdminServer::bind(&config.admin.socket, core.clone()).await {
        Ok(a) => a,
        Err(e) => {
            stop(&core, config.keep_dataplane);
            return Err(e).context("opening the admin socket");
        }
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mgmt = tokio::spawn(management::serve(management, core.clone(), shutdown_rx));
    let health_core = core.clone();
    tokio::spawn(async move {
        while let Some(t) = health_rx.recv().await {
            let core = health_core.clone();
            let _ = tokio::task::spawn_blocking(move || core.health_transition(&t)).await;
        }
    });
    let sweep_core = core.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLOW_SWEEP_INTERVAL);
        loop {
            tick.tick().await;
            let core = sweep_core.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let n = core.lock().dp.expire_flows(FLOW_IDLE_TIMEOUT);
                if n > 0 {
                    tracing::debug!(expired = n, "idle flows removed from conntrack");
                }
            })
            .await;
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
    wait_for_stop(&core).await?;
    core.shutting_down.store(true, Ordering::Relaxed);
    // The config as last reloaded decides, so an operator can flip it before a stop.
    let keep = core.lock().config.keep_dataplane;
    tracing::info!(keep_dataplane = keep, "stopping");
    let _ = shutdown_tx.send(true);
    for e in edges {
        e.abort();
    }
    let _ = mgmt.await;
    drop(admin);
    stop(&core, keep);
    Ok(())
}

/// Loads or adopts the dataplane and makes it serve `config`. A failure after a fresh load
/// removes what was pinned; an adopted dataplane is left running as it was found.
/// Binds every edge listener and reads its certificates; any failure stops the start.
async fn start_edges(core: &Arc<Core>) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let (edges, pools) = {
        let inner = core.lock();
        (inner.config.edges.clone(), inner.pools.clone())
    };
    let mut tasks = Vec::new();
    for e in edges {
        let tls = match &e.tls {
            Some(t) => {
                let tls = Arc::new(Reloadable::new(
                    server_config(t).with_context(|| format!("edge \"{}\": TLS", e.name))?,
                ));
                core.lock()
                    .edge_tls
                    .insert(e.name.clone(), Arc::clone(&tls));
                Some(tls)
            }
            None => None,
        };
        let socket = tokio::net::TcpListener::bind(e.address)
            .await
            .with_context(|| format!("edge \"{}\": binding {}", e.name, e.address))?;
        let upstream = Arc::new(Upstream::new(e.backend_port, e.send_proxy));
        core.lock()
            .upstreams
            .entry(e.pool.clone())
            .or_default()
            .push(Arc::clone(&upstream));
        let listener = Listener {
            name: e.name.clone(),
            tls,
            formats: e.client_cert_header.clone(),
            names: Names::default(),
            forwarded: Policy {
                styles: e.forwarded_headers.clone(),
                trusted_proxies: e.trusted_proxies.clone(),
                prefix: None,
            },
            pool: Arc::clone(&pools[&e.pool]),
            upstream: Arc::clone(&upstream),
            proxy_protocol: e.proxy_protocol,
            stats: Arc::clone(core.lock().edge_stats.entry(e.name.clone()).or_default()),
        };
        tracing::info!(edge = e.name, address = %e.address, tls = e.tls.is_some(), "edge listener up");
        tasks.push(tokio::spawn(edge::server::serve(
            socket,
            Arc::new(listener),
        )));
    }
    Ok(tasks)
}

fn start_dataplane(config: &Config) -> anyhow::Result<Dataplane> {
    let mut dp = Dataplane::load(&Options {
        conntrack_entries: config.conntrack_entries,
        ring_slots: ring_slots(config),
        pins: Some((config.bpffs.clone(), config.pin_dir())),
    })
    .context("loading sluice_xdp")?;
    let result = (|| -> anyhow::Result<()> {
        dp.apply(config).context("writing the maps")?;
        for iface in &config.interfaces {
            dp.attach(iface, config.xdp_mode)
                .with_context(|| format!("attaching to {iface}"))?;
        }
        dp.finish_pinning(&config.interfaces)
            .context("pinning the dataplane")
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
            if !dp.adopted() {
                if let Err(error) = dp.close(false) {
                    tracing::error!(%error, "cleaning up after a failed start");
                }
            }
            Err(e)
        }
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

/// Serves SIGHUP (reload) until SIGINT or SIGTERM.
async fn wait_for_stop(core: &Arc<Core>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading {}", core.config_path.display());
                let c = core.clone();
                let _ = tokio::task::spawn_blocking(move || c.reload()).await;
            }
        }
    }
}

/// Hands the dataplane back: left pinned and forwarding with `keep`, removed otherwise.
fn stop(core: &Core, keep: bool) {
    if let Err(error) = core.lock().dp.close(keep) {
        tracing::error!(%error, "releasing the dataplane");
    } else if keep {
        tracing::info!("dataplane left pinned and forwarding (keep_dataplane = true)");
    } else {
        tracing::info!("dataplane detached and unpinned");
    }
}
