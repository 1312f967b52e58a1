//! Read-only views of the daemon for the admin socket and the management port.

use std::{collections::HashMap, net::SocketAddr, sync::atomic::Ordering};

use lb_common::{Counter, PROTO_TCP};

use super::{
    core::{Core, CoreError, Inner},
    flow_query,
};
use crate::{
    admin::{
        protocol::{
            makes_vip_ready, BackendRow, BackendState, BgpAction, CounterKind, FlowQuery, FlowRow,
            Health, NamedCounter, NextHopView, ProxyRow, ReloadOutcome, Request, Response, Stats,
            Status, TrafficRow, VipSummary,
        },
        server::Handler,
    },
    config::{Protocol, ProxyProtocol, Vip},
    dataplane::{flow_info, now_ns},
    edge::stats::EdgeCounts,
    observe::{ConntrackWalk, HealthTransitions, Observe, Snapshot},
    shutdown::NodeState,
};

impl Core {
    /// `sluice status`: the published state with the phase, uptime and reload counters read
    /// now. Never takes the daemon's lock.
    pub fn status(&self) -> Status {
        self.status_in(self.phase())
    }

    /// The published status with `phase` as the node's phase.
    fn status_in(&self, phase: NodeState) -> Status {
        self.with_live_fields(self.published().status.clone(), phase)
    }

    /// `status` (from `status_of`) with the fields read at answer time: `phase`, readiness,
    /// uptime and the reload counters.
    fn with_live_fields(&self, mut status: Status, phase: NodeState) -> Status {
        // A VIP whose every backend is down, drained or weighted 0 drops every new flow; one
        // whose only such backends are checked and never passed a probe may be dead.
        status.ready =
            phase == NodeState::Serving && status.vips.iter().all(|v| v.backends_ready > 0);
        status.phase = phase;
        status.bgp = self.bgp.get().map(|s| s.status());
        status.uptime_secs = self.uptime().as_secs();
        status.reloads_ok = self.reloads_ok.load(Ordering::Relaxed);
        status.reloads_failed = self.reloads_failed.load(Ordering::Relaxed);
        status.last_reload_error.clone_from(
            &self
                .last_reload_error
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        status
    }

    /// A status with nothing in it, until the first [`Core::publish`].
    pub(super) fn empty_status() -> Status {
        Status {
            instance: String::new(),
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            uptime_secs: 0,
            config: String::new(),
            phase: NodeState::Serving,
            ready: false,
            interfaces: Vec::new(),
            pin_dir: String::new(),
            adopted: false,
            keep_dataplane: false,
            reloads_ok: 0,
            reloads_failed: 0,
            last_reload_error: None,
            vips: Vec::new(),
            // Read at answer time (see `with_live_fields`).
            bgp: None,
        }
    }

    /// What `inner` says for `status` (see [`Core::with_live_fields`] for the fields read
    /// later).
    pub(super) fn status_of(&self, inner: &Inner) -> Status {
        let state = |vip: &str, backend| {
            inner
                .dp
                .backend_state(vip, backend)
                .map(BackendState::from_code)
        };
        let vips: Vec<VipSummary> = inner
            .config
            .vips
            .iter()
            .map(|v| VipSummary {
                name: v.name.clone(),
                address: SocketAddr::new(v.address, v.port),
                protocol: protocol_name(v.protocol).into(),
                backends_up: v
                    .backends
                    .iter()
                    .filter(|b| state(&v.name, b.address) == Some(BackendState::Up))
                    .count(),
                backends_total: v.backends.len(),
                backends_taking_new_flows: v
                    .backends
                    .iter()
                    .filter(|b| b.weight > 0 && state(&v.name, b.address) == Some(BackendState::Up))
                    .count(),
                backends_ready: v
                    .backends
                    .iter()
                    .filter(|b| {
                        let unproven = inner
                            .metas
                            .get(&(v.name.clone(), b.address))
                            .is_some_and(super::state::BackendMeta::unproven);
                        state(&v.name, b.address)
                            .is_some_and(|s| makes_vip_ready(s, b.weight, unproven))
                    })
                    .count(),
            })
            .collect();
        Status {
            instance: inner.config.instance.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            uptime_secs: 0,
            config: self.config_path.display().to_string(),
            phase: NodeState::Serving,
            ready: false,
            interfaces: inner.config.interfaces.clone(),
            pin_dir: inner
                .dp
                .pin_dir()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            adopted: inner.dp.adopted(),
            keep_dataplane: inner.config.keep_dataplane,
            reloads_ok: 0,
            reloads_failed: 0,
            last_reload_error: None,
            vips,
            // Read at answer time (see `status_in`).
            bgp: None,
        }
    }

    /// Backends with their state and traffic; live flows from the census (a fresh walk while
    /// the table is small, the paced walk's last result when it is not), read before the lock
    /// is taken so no walk ever runs under it.
    pub fn backend_rows(&self) -> Result<Vec<BackendRow>, CoreError> {
        let census = self.census.current()?;
        let inner = self.lock();
        Core::rows_of(&inner, &census.per_backend)
    }

    /// Backend rows from `inner` with `counts` as live flows per backend id.
    pub(super) fn rows_of(
        inner: &Inner,
        counts: &HashMap<u32, u64>,
    ) -> Result<Vec<BackendRow>, CoreError> {
        Ok(inner
            .dp
            .backends()?
            .into_iter()
            .map(|b| {
                let meta = inner.metas.get(&(b.vip.clone(), b.address));
                BackendRow {
                    health: meta.map_or(Health::Unchecked, super::state::BackendMeta::health),
                    health_reason: meta.and_then(|m| m.reason.clone()),
                    drained: meta.is_some_and(|m| m.drained),
                    unproven: meta.is_some_and(super::state::BackendMeta::unproven),
                    flows: counts.get(&b.id).copied().unwrap_or(0),
                    state: BackendState::from_code(b.state),
                    vip: b.vip,
                    address: b.address,
                    weight: b.weight,
                    packets: b.traffic.packets,
                    bytes: b.traffic.bytes,
                    new_flows: b.traffic.new_flows,
                    next_hop: b.next_hop.map(|c| NextHopView {
                        interface: interface_name(c.hop.ifindex),
                        ifindex: c.hop.ifindex,
                        dst_mac: mac(c.hop.dst_mac),
                        src_mac: mac(c.hop.src_mac),
                        mtu: c.hop.mtu,
                        generation: c.generation,
                    }),
                }
            })
            .collect())
    }

    /// `sluice flows`: the names are taken under the lock, the walk runs without it.
    pub fn flow_rows(&self, query: &FlowQuery) -> Result<Vec<FlowRow>, CoreError> {
        let (labels, only) = {
            let inner = self.lock();
            let only = match &query.vip {
                Some(name) => Some(inner.dp.vip_index_of(name)?),
                None => None,
            };
            (inner.dp.flow_labels(), only)
        };
        let now = now_ns();
        let mut rows = Vec::new();
        // Without a sort the first `limit` matches will do; with one, every match is needed.
        let enough = if query.sort.is_some() {
            usize::MAX
        } else {
            query.limit
        };
        let source = self.census.source();
        source.for_each(&mut |k, e| {
            if rows.len() >= enough || only.is_some_and(|i| i != u32::from(e.vip_index)) {
                return;
            }
            let f = flow_info(&labels, now, k, e, source.proxy_flow(k, e));
            if flow_query::matches(query, &f) {
                rows.push(f);
            }
        })?;
        if let Some(order) = query.sort {
            flow_query::sort(&mut rows, order);
        }
        rows.truncate(query.limit);
        Ok(rows
            .into_iter()
            .map(|f| FlowRow {
                client: f.client,
                vip: f.vip,
                vip_name: f.vip_name,
                protocol: if f.protocol == PROTO_TCP {
                    "tcp"
                } else {
                    "udp"
                }
                .into(),
                backend: f.backend,
                age_ms: millis(f.age),
                idle_ms: millis(f.idle),
                real_client: f.real_client,
                proxy: f.proxy.map(|o| o.name().to_owned()),
            })
            .collect())
    }

    pub fn stats(&self) -> Result<Stats, CoreError> {
        self.stats_of(&self.lock())
    }

    fn stats_of(&self, inner: &Inner) -> Result<Stats, CoreError> {
        let counters = inner
            .dp
            .counters()?
            .into_iter()
            .map(|(c, value)| NamedCounter {
                name: c.name().into(),
                kind: counter_kind(c),
                value,
            })
            .collect();
        let mut vips = Vec::new();
        for v in &inner.config.vips {
            let t = inner.dp.vip_traffic(&v.name)?;
            vips.push(TrafficRow {
                vip: v.name.clone(),
                backend: None,
                packets: t.packets,
                bytes: t.bytes,
                new_flows: t.new_flows,
            });
        }
        let backends = inner
            .dp
            .backends()?
            .into_iter()
            .map(|b| TrafficRow {
                vip: b.vip,
                backend: Some(b.address),
                packets: b.traffic.packets,
                bytes: b.traffic.bytes,
                new_flows: b.traffic.new_flows,
            })
            .collect();
        let mut proxy = Vec::new();
        for v in inner.config.vips.iter().filter(|v| policed(v)) {
            for (o, flows) in inner.dp.proxy_outcomes(&v.name)? {
                proxy.push(ProxyRow {
                    vip: v.name.clone(),
                    outcome: o.name().into(),
                    flows,
                });
            }
        }
        let mut edge_proxy = Vec::new();
        for e in &inner.config.edges {
            // A wildcard listener has no kernel entry and so no counts.
            if e.proxy_protocol == ProxyProtocol::Off || e.address.ip().is_unspecified() {
                continue;
            }
            for (o, flows) in inner.dp.edge_proxy_outcomes(&e.name)? {
                edge_proxy.push(ProxyRow {
                    vip: e.name.clone(),
                    outcome: o.name().into(),
                    flows,
                });
            }
        }
        Ok(Stats {
            uptime_ms: millis(self.uptime()),
            counters,
            vips,
            backends,
            proxy,
            edge_proxy,
        })
    }
}

/// What every configured edge listener counted; an edge without counters yet (not started) is
/// left out.
fn edge_counts(inner: &Inner) -> Vec<EdgeCounts> {
    inner
        .config
        .edges
        .iter()
        .filter_map(|e| {
            let stats = inner.edge_stats.get(&e.name)?;
            Some(stats.counts(
                &e.name,
                e.tls.is_some(),
                e.proxy_protocol != ProxyProtocol::Off,
            ))
        })
        .collect()
}

fn health_transitions(inner: &Inner) -> Vec<HealthTransitions> {
    let mut out: Vec<HealthTransitions> = inner
        .metas
        .iter()
        .filter(|(_, m)| m.checked)
        .map(|((vip, backend), m)| HealthTransitions {
            vip: vip.clone(),
            backend: *backend,
            to_healthy: m.to_healthy,
            to_unhealthy: m.to_unhealthy,
        })
        .collect();
    out.sort_by(|a, b| (&a.vip, a.backend).cmp(&(&b.vip, b.backend)));
    out
}

impl Handler for Core {
    fn handle(&self, request: Request) -> Response {
        let result = match request {
            Request::Status => Ok(Response::data(&self.status())),
            Request::Backends => self.backend_rows().map(|r| Response::data(&r)),
            Request::Drain { vip, backend } => self.set_drained(&vip, backend, true).map(|()| {
                Response::data(
                    &serde_json::json!({"vip": vip, "backend": backend, "drained": true}),
                )
            }),
            Request::Undrain { vip, backend } => self.set_drained(&vip, backend, false).map(|()| {
                Response::data(
                    &serde_json::json!({"vip": vip, "backend": backend, "drained": false}),
                )
            }),
            Request::Flows(query) => self.flow_rows(&query).map(|r| Response::data(&r)),
            Request::Stats => self.stats().map(|s| Response::data(&s)),
            Request::Bgp { action, vip } => match self.bgp.get() {
                None => Err(CoreError::NoBgp),
                Some(_) if !self.lock().config.vips.iter().any(|v| v.name == vip) => {
                    Err(CoreError::UnknownVip(vip))
                }
                Some(speaker) => {
                    speaker.hold(&vip, action == BgpAction::Withdraw);
                    Ok(Response::data(
                        &serde_json::json!({"vip": vip, "action": action}),
                    ))
                }
            },
            Request::Reload => self
                .reload()
                .map(|(vips, backends)| Response::data(&ReloadOutcome { vips, backends })),
        };
        result.unwrap_or_else(|e| Response::error(e.to_string()))
    }
}

impl Observe for Core {
    fn snapshot(&self) -> Result<Snapshot, String> {
        // The census (which may walk conntrack) and the phase first, then everything else
        // under one hold of the lock, so no change lands between two parts of the snapshot.
        // Nothing here locks again while the guard is held (a guard kept across a call that
        // locks again is how a probe once deadlocked SIGTERM).
        let census = self.census.current().map_err(|e| e.to_string())?;
        let phase = self.phase();
        let inner = self.lock();
        let backends = Core::rows_of(&inner, &census.per_backend).map_err(|e| e.to_string())?;
        let traffic = self.stats_of(&inner).map_err(|e| e.to_string())?;
        let status = self.status_of(&inner);
        let health_transitions = health_transitions(&inner);
        let edges = edge_counts(&inner);
        drop(inner);
        let conntrack = census.at.map(|at| ConntrackWalk {
            entries: census.entries,
            took_seconds: census.took.as_secs_f64(),
            age_seconds: at.elapsed().as_secs_f64(),
        });
        Ok(Snapshot {
            shutting_down: phase != NodeState::Serving,
            status: self.with_live_fields(status, phase),
            backends,
            stats: traffic,
            health_transitions,
            edges,
            // A Core exists only once the first config is written and every interface attached.
            maps_written: true,
            attached: true,
            conntrack,
            neighbour_resolves: self.neighbour_resolves.load(Ordering::Relaxed),
        })
    }

    /// The probes' view: the published state and the phase, no lock and no map read, so a
    /// probe answers at once whatever the daemon is doing and however large conntrack is.
    /// Traffic, flows and edge counts are left out (the probes read none of them).
    fn health(&self) -> Result<Snapshot, String> {
        let phase = self.phase();
        let published = self.published();
        Ok(Snapshot {
            shutting_down: phase != NodeState::Serving,
            status: self.status_in(phase),
            backends: published.backends.clone(),
            stats: Stats::default(),
            health_transitions: Vec::new(),
            edges: Vec::new(),
            maps_written: true,
            attached: true,
            conntrack: None,
            neighbour_resolves: 0,
        })
    }
}

fn counter_kind(c: Counter) -> CounterKind {
    if c.is_drop() {
        CounterKind::Drop
    } else if c.name().starts_with("pass_") {
        CounterKind::Pass
    } else {
        CounterKind::Event
    }
}

fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether the kernel polices the VIP's flows (and so counts outcomes for it).
fn policed(v: &Vip) -> bool {
    v.proxy_protocol != ProxyProtocol::Off
        || !v.allow_clients.is_empty()
        || !v.deny_clients.is_empty()
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The interface's name in the daemon's namespace, or `#index` if it has none (any more).
fn interface_name(ifindex: u32) -> String {
    nix::net::if_::if_indextoname(ifindex).map_or_else(
        |_| format!("#{ifindex}"),
        |n| n.to_string_lossy().into_owned(),
    )
}
