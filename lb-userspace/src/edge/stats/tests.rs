use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::StatusCode;

use super::{EdgeStats, Metered, DURATION_BUCKETS};
use crate::edge::client_timeouts::Expired;
use crate::edge::proxy_header::Counters;
use crate::edge::tls::HandshakeOutcome;

#[test]
fn responses_are_counted_by_code_and_bucketed_by_time_to_headers() {
    let stats = EdgeStats::default();
    let ms = Duration::from_millis;
    stats.answered(StatusCode::OK, Duration::from_micros(300));
    stats.answered(StatusCode::OK, ms(1)); // on a bound: that bucket (`le`)
    stats.answered(StatusCode::NOT_FOUND, Duration::from_micros(1500));
    stats.answered(StatusCode::BAD_GATEWAY, ms(400));
    stats.answered(StatusCode::GATEWAY_TIMEOUT, Duration::from_secs(61));
    stats.answered(StatusCode::from_u16(999).unwrap(), ms(60_000));
    stats.answered(StatusCode::CONTINUE, ms(2));

    let c = stats.counts("kc", false, false);
    assert_eq!(c.edge, "kc");
    assert_eq!(
        c.responses,
        [(100, 1), (200, 2), (404, 1), (502, 1), (504, 1), (999, 1)]
    );
    let mut want = vec![0; DURATION_BUCKETS.len() + 1];
    want[0] = 2; // <= 1 ms
    want[1] = 2; // 1.5 ms and 2 ms: <= 2.5 ms
    want[8] = 1; // 400 ms: <= 0.5 s
    want[14] = 1; // exactly 60 s
    want[15] = 1; // 61 s: +Inf
    assert_eq!(c.durations.buckets, want);
    assert_eq!(c.durations.count(), 7);
    let total_ms = 0.3 + 1.0 + 1.5 + 400.0 + 61_000.0 + 60_000.0 + 2.0;
    assert!(
        (c.durations.sum_seconds - total_ms / 1000.0).abs() < 1e-9,
        "{}",
        c.durations.sum_seconds
    );
    assert_eq!(c.tls, None);
    assert_eq!(c.proxy_headers, None);
}

#[test]
fn handshakes_count_their_outcome_and_successful_ones_their_client_certificate() {
    let stats = EdgeStats::default();
    stats.handshake_ok(true);
    stats.handshake_ok(true);
    stats.handshake_ok(false);
    stats.handshake_failed(HandshakeOutcome::CertExpired);
    stats.handshake_failed(HandshakeOutcome::Timeout);
    let tls = stats.counts("kc", true, false).tls.unwrap();
    let want: Vec<(HandshakeOutcome, u64)> = HandshakeOutcome::ALL
        .iter()
        .map(|o| {
            let n = match o {
                HandshakeOutcome::Ok => 3,
                HandshakeOutcome::CertExpired | HandshakeOutcome::Timeout => 1,
                _ => 0,
            };
            (*o, n)
        })
        .collect();
    assert_eq!(tls.handshakes, want);
    assert_eq!((tls.verified, tls.none), (2, 1));
}

#[test]
fn proxy_header_outcomes_come_from_the_listeners_counters() {
    let stats = EdgeStats::default();
    Counters::count(&stats.proxy.accepted);
    Counters::count(&stats.proxy.accepted);
    Counters::count(&stats.proxy.untrusted);
    let c = stats.counts("kc", false, true);
    assert_eq!(
        c.proxy_headers,
        Some(vec![
            ("accepted", 2),
            ("local", 0),
            ("invalid", 0),
            ("untrusted", 1)
        ])
    );
}

#[test]
fn connections_are_open_while_their_guard_lives() {
    let stats = Arc::new(EdgeStats::default());
    let a = stats.try_open(10).unwrap();
    let b = stats.try_open(10).unwrap();
    assert_eq!(stats.counts("kc", false, false).connections_open, 2);
    drop(a);
    assert_eq!(stats.counts("kc", false, false).connections_open, 1);
    drop(b);
    assert_eq!(stats.counts("kc", false, false).connections_open, 0);
}

#[test]
fn connections_over_the_limit_are_refused_and_counted() {
    let stats = Arc::new(EdgeStats::default());
    let a = stats.try_open(2).unwrap();
    let b = stats.try_open(2).unwrap();
    assert!(stats.try_open(2).is_none());
    assert!(stats.try_open(2).is_none());
    let c = stats.counts("kc", false, false);
    assert_eq!((c.connections_open, c.refused), (2, vec![("limit", 2)]));
    // A closed connection makes room again.
    drop(a);
    let again = stats.try_open(2).unwrap();
    assert_eq!(stats.counts("kc", false, false).connections_open, 2);
    drop((b, again));
}

#[test]
fn cut_connections_are_counted_by_kind() {
    let stats = EdgeStats::default();
    stats.timed_out(Expired::RequestHeader);
    stats.timed_out(Expired::RequestHeader);
    stats.timed_out(Expired::Idle);
    assert_eq!(
        stats.counts("kc", false, false).timeouts,
        [("request_header", 2), ("idle", 1)]
    );
}

#[tokio::test]
async fn a_request_is_in_flight_until_its_body_is_done() {
    let stats = Arc::new(EdgeStats::default());
    let in_flight = || stats.counts("kc", false, false).in_flight;

    let request = stats.request();
    assert_eq!(in_flight(), 1);
    request.answered(StatusCode::OK);
    // Answered (headers ready) but the body is still to be sent.
    let body = Metered::new(Full::new(Bytes::from_static(b"hello")), request);
    assert_eq!(in_flight(), 1);
    let c = stats.counts("kc", false, false);
    assert_eq!(
        (c.responses.as_slice(), c.durations.count()),
        (&[(200, 1)][..], 1)
    );
    let collected = body.collect().await.unwrap().to_bytes();
    assert_eq!(&collected[..], b"hello");
    assert_eq!(in_flight(), 0);

    // A client that goes away before its response: in flight until dropped, never answered.
    let gone = stats.request();
    assert_eq!(in_flight(), 1);
    drop(gone);
    assert_eq!(in_flight(), 0);
    assert_eq!(stats.counts("kc", false, false).durations.count(), 1);

    // A body dropped half way also ends the request.
    let request = stats.request();
    request.answered(StatusCode::BAD_GATEWAY);
    drop(Metered::new(Full::new(Bytes::from_static(b"x")), request));
    assert_eq!(in_flight(), 0);
    assert_eq!(
        stats.counts("kc", false, false).responses,
        [(200, 1), (502, 1)]
    );
}
