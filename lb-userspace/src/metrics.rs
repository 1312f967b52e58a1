//! Prometheus exposition of one [`Snapshot`].
//!
//! The values live in kernel maps and the daemon, not in this process's metric objects, so every
//! scrape builds a fresh registry from the snapshot: nothing is shared between scrapes, and a
//! counter's value is exactly what the snapshot says.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::{
    admin::protocol::{BackendState, CounterKind},
    observe::Snapshot,
    shutdown::NodeState,
};

mod edge;
pub mod exposition;

/// What `/metrics` answers with: the type [`text::encode`] writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type U64Gauge = Gauge<u64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VipLabels {
    vip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BackendLabels {
    vip: String,
    backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    vip: String,
    backend: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    vip: String,
    backend: String,
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: String,
    instance: String,
}

/// The `OpenMetrics` text of `snapshot`, ending with `# EOF`.
pub fn encode(snapshot: &Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("sluice");
    register_daemon(&mut registry, snapshot);
    register_vips(&mut registry, snapshot);
    register_proxy(&mut registry, snapshot);
    register_backends(&mut registry, snapshot);
    register_xdp(&mut registry, snapshot);
    edge::register(&mut registry, &snapshot.edges);
    register_bgp(&mut registry, snapshot);
    let mut out = String::new();
    text::encode(&mut out, &registry)?;
    Ok(out)
}

fn register_daemon(registry: &mut Registry, snapshot: &Snapshot) {
    let status = &snapshot.status;
    let info = Family::<InfoLabels, U64Gauge>::default();
    info.get_or_create(&InfoLabels {
        version: status.version.clone(),
        instance: status.instance.clone(),
    })
    .set(1);
    registry.register("info", "sluice version and instance name (always 1)", info);

    let ready = U64Gauge::default();
    ready.set(u64::from(status.ready));
    registry.register("ready", "1 when the daemon is ready to serve", ready);

    gauges(
        registry,
        "phase",
        "1 for the node's current phase: serving, draining (shutting down, still serving) or \
         closed (new connections refused, in-flight requests finishing)",
        NodeState::ALL.map(|p| {
            let current = u64::from(status.phase == p);
            let phase = p.name().to_owned();
            (PhaseLabels { phase }, current)
        }),
    );

    if let Some(walk) = snapshot.conntrack {
        let entries = U64Gauge::default();
        entries.set(walk.entries);
        registry.register(
            "conntrack_entries",
            "Live conntrack entries at the end of the last walk (what backend_flows counts)",
            entries,
        );
        seconds(
            registry,
            "conntrack_walk_duration_seconds",
            "How long the last conntrack walk took (walks are paced to about 0.5 % of a core)",
            walk.took_seconds,
        );
        seconds(
            registry,
            "conntrack_walk_age_seconds",
            "How long ago the last conntrack walk ended: the age of backend_flows",
            walk.age_seconds,
        );
    }

    let resolves = Counter::<u64, AtomicU64>::default();
    resolves.inc_by(snapshot.neighbour_resolves);
    registry.register(
        "next_hop_neighbour_resolves",
        "Times the daemon made the kernel resolve a backend's next-hop neighbour (no entry, \
         FAILED or STALE), so the first flow finds it cached",
        resolves,
    );

    counters(
        registry,
        "reloads",
        "Configuration reloads by outcome",
        [
            ("success", status.reloads_ok),
            ("failure", status.reloads_failed),
        ]
        .map(|(outcome, n)| {
            let outcome = outcome.to_owned();
            (OutcomeLabels { outcome }, n)
        }),
    );
}

fn register_vips(registry: &mut Registry, snapshot: &Snapshot) {
    let vips = &snapshot.stats.vips;
    let labels = |vip: &String| VipLabels { vip: vip.clone() };
    counters(
        registry,
        "vip_packets",
        "Packets steered to a backend of the VIP",
        vips.iter().map(|r| (labels(&r.vip), r.packets)),
    );
    counters(
        registry,
        "vip_bytes",
        "Bytes steered to a backend of the VIP",
        vips.iter().map(|r| (labels(&r.vip), r.bytes)),
    );
    counters(
        registry,
        "vip_new_flows",
        "Flows of the VIP recorded in conntrack",
        vips.iter().map(|r| (labels(&r.vip), r.new_flows)),
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    vip: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeProxyLabels {
    edge: String,
    outcome: String,
}

fn register_proxy(registry: &mut Registry, snapshot: &Snapshot) {
    counters(
        registry,
        "vip_proxy_flows",
        "Flows of the VIP decided by its PROXY protocol or client policy, by outcome",
        snapshot.stats.proxy.iter().map(|r| {
            let labels = ProxyLabels {
                vip: r.vip.clone(),
                outcome: r.outcome.clone(),
            };
            (labels, r.flows)
        }),
    );
    counters(
        registry,
        "edge_proxy_flows",
        "Connections to the edge listener decided by the kernel's PROXY policy, by outcome",
        snapshot.stats.edge_proxy.iter().map(|r| {
            let labels = EdgeProxyLabels {
                edge: r.vip.clone(),
                outcome: r.outcome.clone(),
            };
            (labels, r.flows)
        }),
    );
}

fn register_backends(registry: &mut Registry, snapshot: &Snapshot) {
    let rows = &snapshot.backends;
    let labels = |vip: &String, backend: &dyn ToString| BackendLabels {
        vip: vip.clone(),
        backend: backend.to_string(),
    };
    counters(
        registry,
        "backend_packets",
        "Packets steered to the backend",
        rows.iter().map(|r| (labels(&r.vip, &r.address), r.packets)),
    );
    counters(
        registry,
        "backend_bytes",
        "Bytes steered to the backend",
        rows.iter().map(|r| (labels(&r.vip, &r.address), r.bytes)),
    );
    counters(
        registry,
        "backend_new_flows",
        "Flows recorded in conntrack for the backend",
        rows.iter()
            .map(|r| (labels(&r.vip, &r.address), r.new_flows)),
    );
    gauges(
        registry,
        "backend_flows",
        "Live conntrack entries pointing at the backend",
        rows.iter().map(|r| (labels(&r.vip, &r.address), r.flows)),
    );
    gauges(
        registry,
        "backend_up",
        "1 when the kernel map has the backend up",
        rows.iter().map(|r| {
            (
                labels(&r.vip, &r.address),
                u64::from(r.state == BackendState::Up),
            )
        }),
    );
    gauges(
        registry,
        "backend_state",
        "Kernel map state of the backend: 1 for the current state",
        rows.iter().flat_map(|r| {
            BackendState::ALL.map(move |state| {
                let labels = StateLabels {
                    vip: r.vip.clone(),
                    backend: r.address.to_string(),
                    state: state.name().to_owned(),
                };
                (labels, u64::from(r.state == state))
            })
        }),
    );
    counters(
        registry,
        "backend_health_transitions",
        "Health check transitions of the backend",
        snapshot.health_transitions.iter().flat_map(|t| {
            [("healthy", t.to_healthy), ("unhealthy", t.to_unhealthy)].map(|(to, n)| {
                let labels = TransitionLabels {
                    vip: t.vip.clone(),
                    backend: t.backend.to_string(),
                    to: to.to_owned(),
                };
                (labels, n)
            })
        }),
    );
}

fn register_xdp(registry: &mut Registry, snapshot: &Snapshot) {
    let all = &snapshot.stats.counters;
    let of_kind = |kind: CounterKind| all.iter().filter(move |c| c.kind == kind);
    // The kind already says drop or pass, so the label keeps only the reason proper.
    let reason = |name: &str, prefix: &str| ReasonLabels {
        reason: name.strip_prefix(prefix).unwrap_or(name).to_owned(),
    };
    counters(
        registry,
        "xdp_drops",
        "Packets sluice_xdp dropped, by reason",
        of_kind(CounterKind::Drop).map(|c| (reason(&c.name, "drop_"), c.value)),
    );
    counters(
        registry,
        "xdp_passes",
        "Packets sluice_xdp passed to the network stack, by reason",
        of_kind(CounterKind::Pass).map(|c| (reason(&c.name, "pass_"), c.value)),
    );
    counters(
        registry,
        "xdp_events",
        "Other sluice_xdp events (tx, redirect, conntrack, ...)",
        of_kind(CounterKind::Event).map(|c| {
            let event = c.name.clone();
            (EventLabels { event }, c.value)
        }),
    );
    let value_of = |name: &str| all.iter().filter(|c| c.name == name).map(|c| c.value).sum();
    let hits = Counter::<u64>::default();
    hits.inc_by(value_of("conntrack_hit"));
    registry.register(
        "conntrack_hits",
        "Conntrack lookups that found the flow",
        hits,
    );
    let misses = Counter::<u64>::default();
    misses.inc_by(value_of("conntrack_miss"));
    registry.register(
        "conntrack_misses",
        "Conntrack lookups that did not find the flow",
        misses,
    );
}

/// Registers a counter family holding `samples` (the registry appends `_total`).
fn counters<S>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, u64)>,
) where
    S: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static,
{
    let family = Family::<S, Counter>::default();
    for (labels, value) in samples {
        family.get_or_create(&labels).inc_by(value);
    }
    registry.register(name, help, family);
}

/// Registers one gauge holding a duration or age in seconds.
fn seconds(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let gauge = Gauge::<f64, AtomicU64>::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

/// Registers a gauge family holding `samples`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabels {
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PrefixLabels {
    peer: String,
    prefix: String,
}

/// Only with `[bgp]`: a gateway without a speaker has no sessions to report.
fn register_bgp(registry: &mut Registry, snapshot: &Snapshot) {
    let Some(bgp) = &snapshot.status.bgp else {
        return;
    };
    gauges(
        registry,
        "bgp_session_up",
        "1 while the BGP session with the peer is established",
        bgp.peers.iter().map(|p| {
            (
                PeerLabels {
                    peer: p.peer.to_string(),
                },
                u64::from(p.state == "established"),
            )
        }),
    );
    gauges(
        registry,
        "bgp_announced_prefixes",
        "VIP host routes the peer has from this gateway",
        bgp.peers.iter().map(|p| {
            (
                PeerLabels {
                    peer: p.peer.to_string(),
                },
                p.announced.len() as u64,
            )
        }),
    );
    gauges(
        registry,
        "bgp_announced",
        "1 for each VIP host route (/32, /128) the peer has from this gateway",
        bgp.peers.iter().flat_map(|p| {
            p.announced.iter().map(|a| {
                let len = if a.is_ipv4() { 32 } else { 128 };
                (
                    PrefixLabels {
                        peer: p.peer.to_string(),
                        prefix: format!("{a}/{len}"),
                    },
                    1,
                )
            })
        }),
    );
}

fn gauges<S>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (S, u64)>,
) where
    S: EncodeLabelSet + Clone + Hash + Eq + Debug + Send + Sync + 'static,
{
    let family = Family::<S, U64Gauge>::default();
    for (labels, value) in samples {
        family.get_or_create(&labels).set(value);
    }
    registry.register(name, help, family);
}

#[cfg(test)]
pub(crate) mod tests;
