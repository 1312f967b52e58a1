//! An edge listener's part in a graceful shutdown: how each connection is asked to end (the
//! listener's `EdgeStats` count what is still open).
//!
//! While the node drains, HTTP/1.1 responses carry `Connection: close` (the client reconnects,
//! through whichever balancer now avoids this node) and HTTP/2 connections get a GOAWAY; new
//! connections and requests are still served. Once closed, the listener stops accepting, idle
//! connections close, and in-flight requests finish; what outlives the timeout is cut when the
//! daemon exits.

use std::{
    future::Future,
    pin::{pin, Pin},
};

use tokio::sync::watch;

use crate::dataplane::NodeState;

/// Drives `conn` to its end, asking it to end when the phase says so: an HTTP/2 connection
/// (`h2`, known from ALPN) as soon as the node drains, any connection once it is closed.
/// `ask` is the connection's graceful shutdown (hyper's drains in-flight requests first).
pub async fn drive<C: Future>(
    conn: C,
    mut phase: watch::Receiver<NodeState>,
    h2: bool,
    ask: impl Fn(Pin<&mut C>),
) -> C::Output {
    let mut conn = pin!(conn);
    let mut asked = false;
    loop {
        let now = *phase.borrow_and_update();
        let due = match now {
            NodeState::Serving => false,
            NodeState::Draining => h2,
            NodeState::Closed => true,
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
