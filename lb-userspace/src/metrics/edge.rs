//! The edge listeners' families: requests by code, time to response headers, requests in
//! flight, open connections, TLS handshakes, client certificates, PROXY headers, connections
//! cut for a slow client, connections refused and backend connections opened or reused, each
//! labelled `edge`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{counters, gauges, EdgeProxyLabels};
use crate::edge::stats::{EdgeCounts, DURATION_BUCKETS};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    edge: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    edge: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    edge: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    edge: String,
    connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    edge: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AffinityLabels {
    edge: String,
    route: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    edge: String,
    reason: String,
}

fn edge(e: &EdgeCounts) -> EdgeLabels {
    EdgeLabels {
        edge: e.edge.clone(),
    }
}

fn outcome(e: &EdgeCounts, outcome: &str) -> EdgeProxyLabels {
    EdgeProxyLabels {
        edge: e.edge.clone(),
        outcome: outcome.to_owned(),
    }
}

pub(super) fn register(registry: &mut Registry, edges: &[EdgeCounts]) {
    counters(
        registry,
        "edge_requests",
        "Responses of the edge listener (sluice's own included), by status code",
        edges.iter().flat_map(|e| {
            e.responses.iter().map(|(code, n)| {
                let labels = CodeLabels {
                    edge: e.edge.clone(),
                    code: code.to_string(),
                };
                (labels, *n)
            })
        }),
    );
    registry.register(
        "edge_request_duration_seconds",
        "Time from a request's arrival to its response headers",
        Histograms(edges.iter().map(|e| (edge(e), histogram(e))).collect()),
    );
    gauges(
        registry,
        "edge_requests_in_flight",
        "Requests whose response body is not done yet",
        edges.iter().map(|e| (edge(e), e.in_flight)),
    );
    gauges(
        registry,
        "edge_connections_open",
        "Client connections of the edge listener that are open",
        edges.iter().map(|e| (edge(e), e.connections_open)),
    );
    let tls = || edges.iter().filter_map(|e| e.tls.as_ref().map(|t| (e, t)));
    counters(
        registry,
        "edge_tls_handshakes",
        "TLS handshakes of the edge listener, by outcome",
        tls().flat_map(|(e, t)| {
            t.handshakes
                .iter()
                .map(move |(o, n)| (outcome(e, o.as_str()), *n))
        }),
    );
    counters(
        registry,
        "edge_client_certs",
        "Completed TLS handshakes with a verified client certificate, or none",
        tls().flat_map(|(e, t)| {
            [("verified", t.verified), ("none", t.none)].map(|(o, n)| (outcome(e, o), n))
        }),
    );
    counters(
        registry,
        "edge_proxy_headers",
        "PROXY headers the edge listener read, by outcome",
        edges.iter().flat_map(|e| {
            e.proxy_headers
                .iter()
                .flatten()
                .map(move |(o, n)| (outcome(e, o), *n))
        }),
    );
    counters(
        registry,
        "edge_timeouts",
        "Client connections the edge listener closed because the client overstayed a limit, \
         by kind (request_header, idle)",
        edges.iter().flat_map(|e| {
            e.timeouts.iter().map(|(kind, n)| {
                let labels = KindLabels {
                    edge: e.edge.clone(),
                    kind: (*kind).to_owned(),
                };
                (labels, *n)
            })
        }),
    );
    counters(
        registry,
        "edge_connections_refused",
        "Client connections the edge listener closed at accept, by reason (limit: \
         max_connections were open)",
        edges.iter().flat_map(|e| {
            e.refused.iter().map(|(reason, n)| {
                let labels = ReasonLabels {
                    edge: e.edge.clone(),
                    reason: (*reason).to_owned(),
                };
                (labels, *n)
            })
        }),
    );
    register_backend(registry, edges);
    register_routes(registry, edges);
}

fn register_routes(registry: &mut Registry, edges: &[EdgeCounts]) {
    counters(
        registry,
        "edge_route_requests",
        "Requests each route of the edge listener decided (proxied or answered), by route name",
        edges.iter().flat_map(|e| {
            e.routes.iter().map(|(route, n)| {
                let labels = RouteLabels {
                    edge: e.edge.clone(),
                    route: route.clone(),
                };
                (labels, *n)
            })
        }),
    );
    counters(
        registry,
        "edge_unrouted_requests",
        "Requests the edge listener answered without a route, by outcome (bad_path: 400, \
         misdirected: 421, no_route: 404)",
        edges
            .iter()
            .flat_map(|e| e.unrouted.iter().map(move |(o, n)| (outcome(e, o), *n))),
    );
    counters(
        registry,
        "edge_route_affinity",
        "Requests of routes with an affinity, by route and outcome (hit: the cookie's backend \
         or hash; fallback_down: its backend is down; no_cookie; invalid: a cookie naming no \
         known backend); all but hit get the pool's choice by client address",
        edges.iter().flat_map(|e| {
            e.affinity.iter().map(|(route, o, n)| {
                let labels = AffinityLabels {
                    edge: e.edge.clone(),
                    route: route.clone(),
                    outcome: (*o).to_owned(),
                };
                (labels, *n)
            })
        }),
    );
    counters(
        registry,
        "edge_route_auth",
        "Requests of routes with forward authentication, by route and outcome (allowed: 2xx, \
         proxied; unauthorized: 401, redirected to sign in or passed; forbidden: 403; error: \
         any other answer or no connection, 503; timeout: no answer in time, 503)",
        edges.iter().flat_map(|e| {
            e.auth.iter().map(|(route, o, n)| {
                let labels = AffinityLabels {
                    edge: e.edge.clone(),
                    route: route.clone(),
                    outcome: (*o).to_owned(),
                };
                (labels, *n)
            })
        }),
    );
}

fn register_backend(registry: &mut Registry, edges: &[EdgeCounts]) {
    counters(
        registry,
        "edge_backend_requests",
        "Requests the edge listener sent to a backend, by connection (opened: a new backend \
         connection; reused: one kept open after an earlier request)",
        edges.iter().flat_map(|e| {
            e.backend.iter().map(|(connection, n)| {
                let labels = ConnectionLabels {
                    edge: e.edge.clone(),
                    connection: (*connection).to_owned(),
                };
                (labels, *n)
            })
        }),
    );
}

/// One histogram's `(sum, count, non-cumulative buckets)` as the encoder takes them.
struct Histogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

fn histogram(e: &EdgeCounts) -> Histogram {
    let bounds = DURATION_BUCKETS.iter().copied().chain([f64::INFINITY]);
    Histogram {
        sum: e.durations.sum_seconds,
        count: e.durations.count(),
        buckets: bounds.zip(e.durations.buckets.iter().copied()).collect(),
    }
}

/// A histogram family built from counts already taken: prometheus-client's own `Histogram`
/// can only be fed one observation at a time.
#[derive(Debug)]
struct Histograms(Vec<(EdgeLabels, Histogram)>);

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, h) in &self.0 {
            encoder
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets, None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
