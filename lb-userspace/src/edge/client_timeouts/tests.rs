use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{h2_frames::Framing, watchdog, Activity, Expired, Limits, Watched};

const LIMITS: Limits = Limits {
    request_header: Duration::from_secs(10),
    idle: Duration::from_secs(75),
};
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// An HTTP/2 frame header: length, type, flags, stream 1.
fn frame(len: u32, kind: u8, flags: u8) -> Vec<u8> {
    let l = len.to_be_bytes();
    vec![l[1], l[2], l[3], kind, flags, 0, 0, 0, 1]
}

#[test]
fn http1_is_anything_but_the_preface() {
    let mut f = Framing::new();
    assert_eq!(f.feed(b"P"), None);
    assert!(!f.is_h1());
    assert_eq!(f.feed(b"OST / HTTP/1.1\r\n"), None);
    assert!(f.is_h1());
    let mut f = Framing::new();
    f.feed(b"GET");
    assert!(f.is_h1());
}

#[test]
fn an_http2_header_block_is_open_from_headers_to_end_headers() {
    let mut f = Framing::new();
    // The preface split anywhere, then SETTINGS with a payload: no block.
    assert_eq!(f.feed(&PREFACE[..5]), None);
    let mut bytes = PREFACE[5..].to_vec();
    bytes.extend(frame(6, 0x4, 0));
    bytes.extend([0; 6]);
    assert_eq!(f.feed(&bytes), None);
    assert!(!f.is_h1());
    // HEADERS without END_HEADERS (flags: END_STREAM only) opens a block, its payload is
    // skipped even when it holds bytes that look like a frame header.
    let mut headers = frame(9, 0x1, 0x1);
    headers.extend(frame(0, 0x9, 0x4));
    assert_eq!(f.feed(&headers[..4]), None);
    assert_eq!(f.feed(&headers[4..]), Some(true));
    // CONTINUATION without END_HEADERS keeps it open, one with closes it; byte by byte.
    let mut rest = frame(3, 0x9, 0);
    rest.extend([1, 2, 3]);
    rest.extend(frame(2, 0x9, 0x4));
    rest.extend([1, 2]);
    let mut changes = Vec::new();
    for b in &rest {
        changes.extend(f.feed(std::slice::from_ref(b)));
    }
    assert_eq!(changes, [false]);
    // HEADERS with END_HEADERS (and PADDED, PRIORITY) opens nothing.
    let mut whole = frame(5, 0x1, 0x4 | 0x8 | 0x20);
    whole.extend([0; 5]);
    assert_eq!(f.feed(&whole), None);
}

#[test]
fn the_first_request_head_has_request_header_timeout_from_the_start() {
    let a = Activity::new();
    assert_eq!(
        a.due(LIMITS),
        Some((a.start + LIMITS.request_header, Expired::RequestHeader))
    );
    // Its bytes do not move the deadline.
    a.h1_bytes();
    assert_eq!(
        a.due(LIMITS),
        Some((a.start + LIMITS.request_header, Expired::RequestHeader))
    );
}

#[test]
fn a_request_in_flight_is_never_cut_and_idle_time_starts_at_its_end() {
    let a = Activity::new();
    let busy = a.busy();
    a.h1_bytes(); // its body, or a pipelined head: not a new head
    assert_eq!(a.due(LIMITS), None);
    let second = a.busy();
    drop(busy);
    assert_eq!(a.due(LIMITS), None);
    drop(second);
    let ended = a.at(a.idle_since.load(Ordering::Relaxed)).unwrap();
    assert!(ended >= a.start);
    assert_eq!(a.due(LIMITS), Some((ended + LIMITS.idle, Expired::Idle)));
}

#[test]
fn a_later_head_has_request_header_timeout_from_its_first_byte() {
    let a = Activity::new();
    drop(a.busy());
    std::thread::sleep(Duration::from_millis(2));
    a.h1_bytes();
    let began = a.at(a.head_since.load(Ordering::Relaxed)).unwrap();
    let idle = a.at(a.idle_since.load(Ordering::Relaxed)).unwrap();
    assert!(began > idle);
    std::thread::sleep(Duration::from_millis(2));
    a.h1_bytes(); // more of the same head: the clock runs on
    assert_eq!(
        a.due(LIMITS),
        Some((began + LIMITS.request_header, Expired::RequestHeader))
    );
    // The head completes: a request in flight, then idle again.
    let busy = a.busy();
    assert_eq!(a.due(LIMITS), None);
    drop(busy);
    assert_eq!(a.due(LIMITS).map(|d| d.1), Some(Expired::Idle));
}

#[test]
fn an_open_http2_header_block_is_cut_even_beside_a_request_in_flight() {
    let a = Activity::new();
    let _busy = a.busy();
    a.h2_block(true);
    let began = a.at(a.h2_block_since.load(Ordering::Relaxed)).unwrap();
    assert_eq!(
        a.due(LIMITS),
        Some((began + LIMITS.request_header, Expired::RequestHeader))
    );
    a.h2_block(false);
    assert_eq!(a.due(LIMITS), None);
}

#[tokio::test]
async fn the_watchdog_resolves_once_the_deadline_passed() {
    let limits = Limits {
        request_header: Duration::from_millis(100),
        idle: Duration::from_millis(150),
    };
    let a = Activity::new();
    drop(a.busy());
    let idle = tokio::time::Instant::now();
    assert_eq!(watchdog(&a, limits).await, Expired::Idle);
    assert!(idle.elapsed() >= limits.idle);
}

#[tokio::test]
async fn a_cut_http1_head_is_answered_408_then_the_read_fails() {
    let (client, server) = tokio::io::duplex(4096);
    let a = Activity::new();
    let mut watched = Watched::new(server, std::sync::Arc::clone(&a));
    let (mut client_read, mut client_write) = tokio::io::split(client);
    client_write
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = watched.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\nHost: a\r\n");
    a.expire_head();
    // The client goes on sending, then stops: its bytes are read and dropped.
    client_write.write_all(b"X-Slow: 1\r\n").await.unwrap();
    client_write.shutdown().await.unwrap();
    let err = watched.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    let mut answer = String::new();
    client_read.read_to_string(&mut answer).await.unwrap();
    assert_eq!(
        answer,
        "HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-type: text/plain\r\n\
         content-length: 20\r\n\r\n408 Request Timeout\n"
    );
}

#[tokio::test]
async fn a_cut_without_any_http1_bytes_fails_without_an_answer() {
    let (client, server) = tokio::io::duplex(4096);
    let a = Activity::new();
    let mut watched = Watched::new(server, std::sync::Arc::clone(&a));
    a.expire_head();
    let mut buf = [0u8; 8];
    let err = watched.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    drop(watched);
    let mut answer = Vec::new();
    let (mut client_read, _w) = tokio::io::split(client);
    client_read.read_to_end(&mut answer).await.unwrap();
    assert!(answer.is_empty(), "{answer:?}");
}
