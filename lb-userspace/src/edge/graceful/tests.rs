use std::{future::pending, sync::Arc, time::Duration};

use tokio::{sync::Notify, time::Instant};

use super::*;

/// How long after the start a connection that ends when asked was asked, under `state`, with
/// its first request beginning after `first_request` (never with `None`).
async fn asked_after(state: NodeState, h2: bool, first_request: Option<Duration>) -> Duration {
    let (_tx, phase) = watch::channel(state);
    let asked = Arc::new(Notify::new());
    let conn = {
        let asked = Arc::clone(&asked);
        async move { asked.notified().await }
    };
    let first = async move {
        match first_request {
            Some(after) => tokio::time::sleep(after).await,
            None => pending().await,
        }
    };
    let start = Instant::now();
    let ended = drive(
        conn,
        phase,
        h2,
        |_| asked.notify_one(),
        first,
        pending(),
        Duration::from_secs(1),
    )
    .await;
    assert!(ended.is_some(), "the connection ended by itself");
    start.elapsed()
}

#[tokio::test]
async fn a_closed_node_asks_a_connection_that_began_a_request_at_once() {
    let took = asked_after(NodeState::Closed, false, Some(Duration::ZERO)).await;
    assert!(took < Duration::from_millis(500), "asked after {took:?}");
}

#[tokio::test]
async fn a_closed_node_waits_for_the_first_request_before_asking() {
    let took = asked_after(NodeState::Closed, false, Some(Duration::from_millis(300))).await;
    assert!(
        took >= Duration::from_millis(300) && took < FIRST_REQUEST_GRACE,
        "asked after {took:?}"
    );
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_asked_after_the_grace() {
    let took = asked_after(NodeState::Closed, true, None).await;
    assert!(
        took >= FIRST_REQUEST_GRACE && took < FIRST_REQUEST_GRACE * 2,
        "asked after {took:?}"
    );
}

#[tokio::test]
async fn draining_asks_http2_connections_only() {
    let took = asked_after(NodeState::Draining, true, Some(Duration::ZERO)).await;
    assert!(took < Duration::from_millis(500), "h2 asked after {took:?}");
    let h1 = tokio::time::timeout(
        Duration::from_millis(300),
        asked_after(NodeState::Draining, false, Some(Duration::ZERO)),
    )
    .await;
    assert!(
        h1.is_err(),
        "an HTTP/1.1 connection is not asked while draining"
    );
}
