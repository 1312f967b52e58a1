//! What one edge listener counts for `/metrics`: responses by status code, the time to
//! response headers, requests in flight, open connections, TLS handshake and client
//! certificate outcomes, PROXY header outcomes, connections cut for a slow client and
//! connections refused over the listener's limit.
//!
//! The daemon keeps one [`EdgeStats`] per edge name and hands it to each listener it builds
//! for that name, so a reload that builds new listeners does not reset the counts. Everything
//! is a plain atomic in a fixed slot (a status code indexes its own counter, an outcome its
//! own): counting a request allocates nothing and takes no lock. [`EdgeStats::counts`] copies
//! them out for one scrape.

#[cfg(test)]
mod tests;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use hyper::StatusCode;

use super::{
    affinity::{Counters, Outcome},
    client_timeouts::Expired,
    forward_auth, proxy_header,
    route::Unrouted,
    tls::HandshakeOutcome,
    upstream::BackendConnections,
};

/// Upper bounds (seconds) of the request-duration buckets, from 1 ms to the backend's one
/// minute to start a response; slower answers land in `+Inf`.
pub const DURATION_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The lowest status code `http` accepts; codes run up to 999.
const FIRST_CODE: u16 = 100;
const CODES: usize = 900;

/// The live counters of one edge listener (by name, across reloads).
pub struct EdgeStats {
    /// PROXY header outcomes, counted by [`proxy_header::client`].
    pub proxy: proxy_header::Counters,
    /// Responses by status code, at index `code - 100`.
    responses: [AtomicU64; CODES],
    /// Requests per duration bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    duration_nanos: AtomicU64,
    in_flight: AtomicU64,
    connections_open: AtomicU64,
    handshakes: [AtomicU64; HandshakeOutcome::ALL.len()],
    certs_verified: AtomicU64,
    certs_none: AtomicU64,
    /// Connections cut for a slow client, by [`Expired`] (`as usize`).
    timeouts: [AtomicU64; Expired::ALL.len()],
    /// Connections closed at accept because `max_connections` were open.
    refused_limit: AtomicU64,
    /// Backend connections opened, and requests sent over one kept open.
    pub backend: BackendConnections,
    /// Requests each route decided, by route name, in the order the names were first seen
    /// (a route table takes its counters once, when it is compiled).
    routes: Mutex<Vec<(String, Arc<AtomicU64>)>>,
    /// Requests no route took, by [`Unrouted::index`].
    unrouted: [AtomicU64; Unrouted::OUTCOMES.len()],
    /// Affinity outcomes of each route that has one, by route name (kept like `routes`).
    affinity: Mutex<Vec<(String, Counters)>>,
    /// Forward-auth outcomes of each route that has one, by route name (kept like `routes`).
    auth: Mutex<Vec<(String, forward_auth::Counters)>>,
    /// Woken when the last open connection closes.
    closed: tokio::sync::Notify,
}

impl Default for EdgeStats {
    fn default() -> Self {
        EdgeStats {
            proxy: proxy_header::Counters::default(),
            responses: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_nanos: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            connections_open: AtomicU64::new(0),
            handshakes: std::array::from_fn(|_| AtomicU64::new(0)),
            certs_verified: AtomicU64::new(0),
            certs_none: AtomicU64::new(0),
            timeouts: std::array::from_fn(|_| AtomicU64::new(0)),
            refused_limit: AtomicU64::new(0),
            backend: BackendConnections::default(),
            routes: Mutex::default(),
            unrouted: std::array::from_fn(|_| AtomicU64::new(0)),
            affinity: Mutex::default(),
            auth: Mutex::default(),
            closed: tokio::sync::Notify::new(),
        }
    }
}

impl std::fmt::Debug for EdgeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStats")
            .field("in_flight", &self.in_flight)
            .field("connections_open", &self.connections_open)
            .finish_non_exhaustive()
    }
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl EdgeStats {
    /// Counts a connection as open until the returned guard drops, unless `max` are open
    /// already: then it counts a refusal and returns `None`.
    pub fn try_open(self: &Arc<Self>, max: u64) -> Option<Open> {
        let opened =
            self.connections_open
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                });
        if opened.is_err() {
            add(&self.refused_limit);
            return None;
        }
        Some(Open(Arc::clone(self)))
    }

    /// The counter of the route `name`: the same one for every table that names it, so a
    /// route's count survives a reload.
    pub fn route(&self, name: &str) -> Arc<AtomicU64> {
        let mut routes = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, c)) = routes.iter().find(|(n, _)| n == name) {
            return Arc::clone(c);
        }
        let counter = Arc::new(AtomicU64::new(0));
        routes.push((name.to_owned(), Arc::clone(&counter)));
        counter
    }

    /// The affinity outcome counters of the route `name`, shared like [`EdgeStats::route`]'s.
    pub fn affinity(&self, name: &str) -> Counters {
        let mut all = self.affinity.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, c)) = all.iter().find(|(n, _)| n == name) {
            return Arc::clone(c);
        }
        let counters = Counters::default();
        all.push((name.to_owned(), Arc::clone(&counters)));
        counters
    }

    /// The forward-auth outcome counters of the route `name` (made on first use).
    pub fn auth(&self, name: &str) -> forward_auth::Counters {
        let mut all = self.auth.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, c)) = all.iter().find(|(n, _)| n == name) {
            return Arc::clone(c);
        }
        let counters = forward_auth::Counters::default();
        all.push((name.to_owned(), Arc::clone(&counters)));
        counters
    }

    /// Counts a request no route took.
    pub fn unrouted(&self, why: Unrouted) {
        if let Some(c) = self.unrouted.get(why.index()) {
            add(c);
        }
    }

    /// Counts a connection cut because its client overstayed a limit.
    pub fn timed_out(&self, expired: Expired) {
        if let Some(c) = self.timeouts.get(expired as usize) {
            add(c);
        }
    }

    pub fn in_flight(&self) -> u64 {
        read(&self.in_flight)
    }

    /// Resolves once no connection is open (a shutdown waits for it).
    pub async fn finished(&self) {
        loop {
            let closed = self.closed.notified();
            if read(&self.connections_open) == 0 {
                return;
            }
            closed.await;
        }
    }

    /// Counts a completed TLS handshake, with or without a verified client certificate.
    pub fn handshake_ok(&self, client_cert: bool) {
        self.count_handshake(HandshakeOutcome::Ok);
        add(if client_cert {
            &self.certs_verified
        } else {
            &self.certs_none
        });
    }

    /// Counts a TLS handshake that did not complete.
    pub fn handshake_failed(&self, outcome: HandshakeOutcome) {
        self.count_handshake(outcome);
    }

    fn count_handshake(&self, outcome: HandshakeOutcome) {
        if let Some(c) = self.handshakes.get(outcome as usize) {
            add(c);
        }
    }

    /// Counts a request in flight until the returned guard drops (which should be when its
    /// response body is done).
    pub fn request(self: &Arc<Self>) -> InFlight {
        add(&self.in_flight);
        InFlight {
            stats: Arc::clone(self),
            started: Instant::now(),
        }
    }

    fn answered(&self, status: StatusCode, took: Duration) {
        let index = usize::from(status.as_u16().saturating_sub(FIRST_CODE));
        if let Some(c) = self.responses.get(index) {
            add(c);
        }
        let seconds = took.as_secs_f64();
        let bucket = DURATION_BUCKETS.partition_point(|&bound| bound < seconds);
        if let Some(b) = self.buckets.get(bucket) {
            add(b);
        }
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.duration_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// A copy of every counter of the listener `edge`, for one scrape. `tls` and `proxy` say
    /// whether the listener terminates TLS and reads PROXY headers: the counts that cannot
    /// happen otherwise are left out rather than reported as zeros forever.
    pub fn counts(&self, edge: &str, tls: bool, proxy: bool) -> EdgeCounts {
        let responses = self
            .responses
            .iter()
            .zip(FIRST_CODE..)
            .map(|(c, code)| (code, read(c)))
            .filter(|(_, n)| *n > 0)
            .collect();
        let buckets: Vec<u64> = self.buckets.iter().map(read).collect();
        let tls = tls.then(|| TlsCounts {
            handshakes: HandshakeOutcome::ALL
                .iter()
                .zip(&self.handshakes)
                .map(|(o, c)| (*o, read(c)))
                .collect(),
            verified: read(&self.certs_verified),
            none: read(&self.certs_none),
        });
        let p = &self.proxy;
        let proxy_headers = proxy.then(|| {
            vec![
                ("accepted", read(&p.accepted)),
                ("local", read(&p.local)),
                ("invalid", read(&p.invalid)),
                ("untrusted", read(&p.untrusted)),
            ]
        });
        #[expect(
            clippy::cast_precision_loss,
            reason = "a sum of durations in seconds; f64 is what the exposition carries"
        )]
        let sum_seconds = read(&self.duration_nanos) as f64 / 1e9;
        EdgeCounts {
            edge: edge.to_owned(),
            responses,
            durations: Durations {
                buckets,
                sum_seconds,
            },
            in_flight: read(&self.in_flight),
            connections_open: read(&self.connections_open),
            tls,
            proxy_headers,
            timeouts: Expired::ALL
                .iter()
                .zip(&self.timeouts)
                .map(|(e, c)| (e.as_str(), read(c)))
                .collect(),
            refused: vec![("limit", read(&self.refused_limit))],
            backend: vec![
                ("opened", self.backend.opened()),
                ("reused", self.backend.reused()),
            ],
            routes: self
                .routes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|(name, c)| (name.clone(), read(c)))
                .collect(),
            unrouted: Unrouted::OUTCOMES
                .iter()
                .zip(&self.unrouted)
                .map(|(o, c)| (*o, read(c)))
                .collect(),
            affinity: self
                .affinity
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .flat_map(|(name, c)| {
                    Outcome::ALL
                        .iter()
                        .zip(c.iter())
                        .map(|(o, n)| (name.clone(), o.as_str(), read(n)))
                })
                .collect(),
            auth: self
                .auth
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .flat_map(|(name, c)| {
                    forward_auth::Outcome::ALL
                        .iter()
                        .zip(c.iter())
                        .map(|(o, n)| (name.clone(), o.as_str(), read(n)))
                })
                .collect(),
        }
    }
}

/// An open connection; closes (in the count) on drop.
pub struct Open(Arc<EdgeStats>);

impl Drop for Open {
    fn drop(&mut self) {
        if self.0.connections_open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.closed.notify_waiters();
        }
    }
}

/// A request in flight, from its start until its response body is done or dropped.
pub struct InFlight {
    stats: Arc<EdgeStats>,
    started: Instant,
}

impl InFlight {
    /// Counts the response's `status` and the time since the request started (to its headers).
    pub fn answered(&self, status: StatusCode) {
        self.stats.answered(status, self.started.elapsed());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that keeps its request [`InFlight`] until the last frame was taken (or
/// the body dropped, when the client went away first).
pub type Metered<B> = super::body_guard::Guarded<B, InFlight>;

/// What one edge listener counted, copied out at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeCounts {
    pub edge: String,
    /// Responses by status code, lowest code first; codes never answered are left out.
    pub responses: Vec<(u16, u64)>,
    pub durations: Durations,
    pub in_flight: u64,
    pub connections_open: u64,
    /// `None` for a plain-HTTP listener.
    pub tls: Option<TlsCounts>,
    /// PROXY header outcomes by name; `None` when the listener reads no PROXY headers.
    pub proxy_headers: Option<Vec<(&'static str, u64)>>,
    /// Connections cut for a slow client, by kind (`request_header`, `idle`).
    pub timeouts: Vec<(&'static str, u64)>,
    /// Connections refused at accept, by reason (`limit`).
    pub refused: Vec<(&'static str, u64)>,
    /// Requests sent to a backend by how their connection came: `opened` for it, or
    /// `reused` (kept open after an earlier request).
    pub backend: Vec<(&'static str, u64)>,
    /// Requests each route decided, by route name.
    pub routes: Vec<(String, u64)>,
    /// Requests no route took, by outcome (`bad_path`, `misdirected`, `no_route`).
    pub unrouted: Vec<(&'static str, u64)>,
    /// Requests of routes with an affinity, by route name and outcome (`hit`,
    /// `fallback_down`, `no_cookie`, `invalid`).
    pub affinity: Vec<(String, &'static str, u64)>,
    /// Requests of routes with forward authentication, by route name and outcome
    /// (`allowed`, `unauthorized`, `forbidden`, `error`, `timeout`).
    pub auth: Vec<(String, &'static str, u64)>,
}

/// The time to response headers as a histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Durations {
    /// Requests per bucket of [`DURATION_BUCKETS`], not cumulative, then the `+Inf` bucket.
    pub buckets: Vec<u64>,
    pub sum_seconds: f64,
}

impl Durations {
    /// Every request counted, whatever its bucket.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCounts {
    /// Every outcome, in [`HandshakeOutcome::ALL`] order.
    pub handshakes: Vec<(HandshakeOutcome, u64)>,
    /// Successful handshakes with a verified client certificate.
    pub verified: u64,
    /// Successful handshakes without a client certificate.
    pub none: u64,
}
