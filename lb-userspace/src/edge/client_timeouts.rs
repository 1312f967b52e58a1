//! How long an edge connection may wait on its client: for a request head, and idle between
//! requests. Slow clients (slowloris: one header line at a time, an HTTP/2 HEADERS frame that
//! never gets its `END_HEADERS`, a connection that never sends a request) are cut here.
//!
//! The rules, per connection:
//! - the first request head must be complete within `request_header` of the end of the TLS
//!   handshake (nothing sent at all counts too: the connection is closed without an answer);
//! - after a response, a keep-alive connection with no byte of a new request is closed after
//!   `idle` (HTTP/1.1 quietly, HTTP/2 with a GOAWAY);
//! - once the first byte of a later HTTP/1.1 request head arrives, the head must be complete
//!   within `request_header` of it;
//! - an HTTP/2 header block (HEADERS without `END_HEADERS`, then CONTINUATION) must be complete
//!   within `request_header` of its first frame, whatever else is going on: no other frame may
//!   come between, so a stalled block stalls the whole connection.
//!
//! An HTTP/1.x head cut this way is answered `408 Request Timeout` with `Connection: close`
//! (RFC 9110, 15.5.9), unless a response is still being written; HTTP/2 has no answer for a
//! stream that never opened, so its connection is closed. While a request is in flight none of
//! this applies: the backend's `response_timeout` and the shutdown's timeout bound that time.
//!
//! Not covered: a request body sent slowly (the request is in flight), and the bytes of a
//! pipelined HTTP/1.1 head that arrived while the previous request was in flight (they wait
//! under `idle`, not `request_header`, and are closed without a 408).
//!
//! The pieces: [`Activity`] is what the connection shares (requests in flight, when it went
//! idle, when a head began); [`Watched`] wraps the client stream, records when a head begins
//! and answers 408 when told; [`Busy`] marks a request in flight until its response body is
//! done ([`Holding`]); [`watchdog`] sleeps until the next deadline and says which one passed.
//! hyper's own `header_read_timeout` is not used: it closes without an answer, covers no idle
//! time before the first request and nothing of HTTP/2.

mod h2_frames;
#[cfg(test)]
mod tests;
mod watched;

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

pub use watched::Watched;

use crate::config::Limits;

/// After a cut, how long the connection still gets to write its 408 or GOAWAY and close before
/// it is dropped: a client that does not read must not hold it open.
pub const CUT_GRACE: Duration = Duration::from_secs(1);

/// Which limit a connection overstayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// A request head (or the first request) did not arrive whole in time.
    RequestHeader,
    /// No request for the idle time.
    Idle,
}

impl Expired {
    pub const ALL: [Expired; 2] = [Expired::RequestHeader, Expired::Idle];

    /// The `kind` label of `sluice_edge_timeouts_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Expired::RequestHeader => "request_header",
            Expired::Idle => "idle",
        }
    }
}

/// What one connection's parts tell each other. Times are nanoseconds since `start`, plus
/// one, so that 0 means "none".
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    in_flight: AtomicU64,
    /// A request has begun on this connection.
    served: AtomicBool,
    /// Wakes [`Activity::first_request`].
    first: Notify,
    /// When the last request in flight ended.
    idle_since: AtomicU64,
    /// When the first byte of an HTTP/1.x head arrived while nothing was in flight.
    head_since: AtomicU64,
    /// When an HTTP/2 header block without its end began.
    h2_block_since: AtomicU64,
    /// The watchdog cut a request head: the stream answers (or fails) its next read.
    head_expired: AtomicBool,
}

impl Activity {
    /// A connection whose TLS handshake (or accept, without TLS) just ended.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            start: Instant::now(),
            in_flight: AtomicU64::new(0),
            served: AtomicBool::new(false),
            first: Notify::new(),
            idle_since: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            h2_block_since: AtomicU64::new(0),
            head_expired: AtomicBool::new(false),
        })
    }

    /// Marks a request in flight until the returned guard drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if !self.served.load(Ordering::Relaxed) {
            self.served.store(true, Ordering::Relaxed);
            self.first.notify_waiters();
        }
        self.head_since.store(0, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// Resolves once the connection's first request has begun.
    pub async fn first_request(&self) {
        loop {
            let first = self.first.notified();
            if self.served.load(Ordering::Relaxed) {
                return;
            }
            first.await;
        }
    }

    fn stamp(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn at(&self, stamp: u64) -> Option<Instant> {
        (stamp != 0).then(|| self.start + Duration::from_nanos(stamp - 1))
    }

    /// Bytes of an HTTP/1.x request arrived: the head's clock starts unless a request is in
    /// flight (its body, or a pipelined head hyper reads later) or the clock runs already.
    fn h1_bytes(&self) {
        let idle = self.in_flight.load(Ordering::Relaxed) == 0;
        if idle && self.head_since.load(Ordering::Relaxed) == 0 {
            let now = self.stamp();
            let _ = self
                .head_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// An HTTP/2 header block began (`true`) or ended.
    fn h2_block(&self, open: bool) {
        let value = if open { self.stamp() } else { 0 };
        self.h2_block_since.store(value, Ordering::Relaxed);
    }

    /// The next deadline and what passing it means; `None` while a request is in flight.
    fn due(&self, limits: Limits) -> Option<(Instant, Expired)> {
        if let Some(t) = self.at(self.h2_block_since.load(Ordering::Relaxed)) {
            return Some((t + limits.request_header, Expired::RequestHeader));
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        if !self.served.load(Ordering::Relaxed) {
            return Some((self.start + limits.request_header, Expired::RequestHeader));
        }
        if let Some(t) = self.at(self.head_since.load(Ordering::Relaxed)) {
            return Some((t + limits.request_header, Expired::RequestHeader));
        }
        let idle = self.at(self.idle_since.load(Ordering::Relaxed));
        Some((idle.unwrap_or(self.start) + limits.idle, Expired::Idle))
    }

    /// Tells the stream that its request head was cut (see [`Watched`]).
    pub fn expire_head(&self) {
        self.head_expired.store(true, Ordering::Relaxed);
    }

    fn head_expired(&self) -> bool {
        self.head_expired.load(Ordering::Relaxed)
    }
}

/// Resolves when the connection overstays one of `limits`.
///
/// It wakes at the next deadline and at least once per the shorter limit, so a deadline that
/// appears in between (a head begun, a request ended) is met on time without the connection
/// having to wake it on every request.
pub async fn watchdog(activity: &Activity, limits: Limits) -> Expired {
    let check = limits.request_header.min(limits.idle);
    loop {
        let now = Instant::now();
        let next = match activity.due(limits) {
            Some((at, expired)) if at <= now => return expired,
            Some((at, _)) => at.min(now + check),
            None => now + check,
        };
        tokio::time::sleep_until(next).await;
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let a = &self.0;
        // Every end is stamped, before the count drops (released to the watchdog's acquire):
        // a connection the watchdog sees idle never has a stale idle time.
        a.idle_since.store(a.stamp(), Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Release);
    }
}

/// A response body that keeps its request [`Busy`] until the last frame was taken (or the
/// body dropped).
pub type Holding<B> = super::body_guard::Guarded<B, Busy>;
