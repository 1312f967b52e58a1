//! An edge listener's part in a graceful shutdown: how each connection is asked to end (the
//! listener's `EdgeStats` count what is still open).
//!
//! While the node drains, HTTP/1.1 responses carry `Connection: close` (the client reconnects,
//! through whichever balancer now avoids this node) and HTTP/2 connections get a GOAWAY; new
//! connections and requests are still served. Once closed, the listener stops accepting, idle
//! connections close, and in-flight requests finish; what outlives the timeout is cut when the
//! daemon exits.
//!
//! The same loop ends a connection whose client overstayed a limit (`client_timeouts`): it is
//! asked to end like at shutdown, or its stream fails, and it is dropped if it has not ended
//! within a short grace.

use std::{
    future::Future,
    pin::{pin, Pin},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

use crate::shutdown::NodeState;

/// What a connection's watchdog asks for when a limit passes (see `client_timeouts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Ask the connection to end gracefully (an idle HTTP/1.1 connection closes at once, an
    /// HTTP/2 one gets a GOAWAY).
    Ask,
    /// The connection ends by itself: its stream fails the next read.
    Fails,
}

/// How long a connection the node closes before its first request still gets to send one.
/// A client that connected while the listener still accepted has usually sent its request
/// already, or has it on the wire: closing the connection unread would reset it, and a proxy in
/// front does not retry a non-idempotent request it already sent.
pub const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(1);

/// Drives `conn` to its end, asking it to end when the phase says so: an HTTP/2 connection
/// (`h2`, known from ALPN) as soon as the node drains, any connection once it is closed.
/// `ask` is the connection's graceful shutdown (hyper's drains in-flight requests first).
/// A connection whose first request has not begun (`first_request` pending) is asked only once
/// it begins, or after [`FIRST_REQUEST_GRACE`].
///
/// When `watchdog` resolves the connection overstayed a client limit: it is asked to end (or
/// left to fail), and dropped if it has not ended within `grace`; that returns `None`.
pub async fn drive<C: Future>(
    conn: C,
    mut phase: watch::Receiver<NodeState>,
    h2: bool,
    ask: impl Fn(Pin<&mut C>),
    first_request: impl Future<Output = ()>,
    watchdog: impl Future<Output = Ending>,
    grace: Duration,
) -> Option<C::Output> {
    let mut conn = pin!(conn);
    let mut first_request = pin!(first_request);
    let mut watchdog = pin!(watchdog);
    let mut asked = false;
    let mut begun = false;
    let mut waiting_since: Option<Instant> = None;
    let mut cut_at: Option<Instant> = None;
    loop {
        let now = *phase.borrow_and_update();
        let due = match now {
            NodeState::Serving => false,
            NodeState::Draining => h2,
            NodeState::Closed => true,
        };
        if due && !asked {
            if begun {
                ask(conn.as_mut());
                asked = true;
            } else {
                waiting_since.get_or_insert_with(Instant::now);
            }
        }
        let first_request_by = waiting_since.map(|t| t + FIRST_REQUEST_GRACE);
        tokio::select! {
            out = conn.as_mut() => return Some(out),
            changed = phase.changed(), if !asked => {
                if changed.is_err() {
                    // The daemon is gone; nothing will ask any more.
                    return Some(conn.await);
                }
            }
            () = first_request.as_mut(), if !begun => begun = true,
            () = tokio::time::sleep_until(first_request_by.unwrap_or_else(Instant::now)),
                if !begun && first_request_by.is_some() => begun = true,
            ending = watchdog.as_mut(), if cut_at.is_none() => {
                if ending == Ending::Ask && !asked {
                    ask(conn.as_mut());
                    asked = true;
                }
                cut_at = Some(Instant::now() + grace);
            }
            () = tokio::time::sleep_until(cut_at.unwrap_or_else(Instant::now)), if cut_at.is_some() => {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests;
