//! An edge listener's part in a graceful shutdown: what it has open, and how each connection
//! is asked to end.
//!
//! While the node drains, HTTP/1.1 responses carry `Connection: close` (the client reconnects,
//! through whichever balancer now avoids this node) and HTTP/2 connections get a GOAWAY; new
//! connections and requests are still served. Once closed, the listener stops accepting, idle
//! connections close, and in-flight requests finish; what outlives the timeout is cut when the
//! daemon exits.

use std::{
    future::Future,
    pin::{pin, Pin},
    sync::atomic::{AtomicU64, Ordering},
};

use tokio::sync::{watch, Notify};

use crate::shutdown::Phase;

/// Open connections and in-flight requests of one listener.
#[derive(Debug, Default)]
pub struct Tracker {
    connections: AtomicU64,
    in_flight: AtomicU64,
    /// Requests still in flight when the timeout cut them.
    cut: AtomicU64,
    idle: Notify,
}

impl Tracker {
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn cut_requests(&self) -> u64 {
        self.cut.load(Ordering::Relaxed)
    }

    /// Records the requests in flight as cut (the daemon exits next).
    pub fn cut(&self) {
        self.cut.fetch_add(self.in_flight(), Ordering::Relaxed);
    }

    /// Resolves once no connection is open.
    pub async fn finished(&self) {
        loop {
            let idle = self.idle.notified();
            if self.connections() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Counts a connection until the guard drops.
    pub fn connection(&self) -> Guard<'_> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        Guard {
            tracker: self,
            request: false,
        }
    }

    /// Counts a request in flight until the guard drops.
    pub fn request(&self) -> Guard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Guard {
            tracker: self,
            request: true,
        }
    }
}

pub struct Guard<'a> {
    tracker: &'a Tracker,
    request: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if self.request {
            self.tracker.in_flight.fetch_sub(1, Ordering::Relaxed);
        } else if self.tracker.connections.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.tracker.idle.notify_waiters();
        }
    }
}

/// Drives `conn` to its end, asking it to end when the phase says so: an HTTP/2 connection
/// (`h2`, known from ALPN) as soon as the node drains, any connection once it is closed.
/// `ask` is the connection's graceful shutdown (hyper's drains in-flight requests first).
pub async fn drive<C: Future>(
    conn: C,
    mut phase: watch::Receiver<Phase>,
    h2: bool,
    ask: impl Fn(Pin<&mut C>),
) -> C::Output {
    let mut conn = pin!(conn);
    let mut asked = false;
    loop {
        let now = *phase.borrow_and_update();
        let due = match now {
            Phase::Serving => false,
            Phase::Draining => h2,
            Phase::Closed => true,
        };
        if due && !asked {
            ask(conn.as_mut());
            asked = true;
        }
        tokio::select! {
            out = conn.as_mut() => return out,
            changed = phase.changed(), if !asked => {
                if changed.is_err() {
                    // The daemon is gone; nothing will ask any more.
                    return conn.await;
                }
            }
        }
    }
}
