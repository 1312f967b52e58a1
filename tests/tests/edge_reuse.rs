//! The edge listener's backend connections are kept open and reused: requests one after the
//! other over one client connection travel over one backend connection, and concurrent client
//! connections never need more backend connections than they have requests in flight.
//!
//! The backends keep their connections open and count those they accept; sluice counts the
//! requests it sent over a new and over a reused backend connection
//! (`sluice_edge_backend_requests_total`).
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge_reuse -- --test-threads=1`.

use std::thread;

use sluice_tests::{
    edge_lab::{edge4, Lab, Listener, BACKEND_PORT, EDGE_PORT, HTTP_VERSIONS, SERVER_NAME},
    require_root,
    servers::http_keepalive_backend,
};

const EDGE: &str = "kc";
const MANAGEMENT: &str = "127.0.0.1:9019";
/// Requests per client connection.
const REQUESTS: u32 = 200;
/// Client connections at once in the concurrent test.
const CLIENTS: u32 = 10;

/// A lab whose backends keep their connections open.
fn lab(prefix: &str) -> Lab {
    let mut lab = Lab::start(prefix, &[Listener::v4(EDGE, EDGE_PORT)]);
    lab.replace_backends(|ns, i| {
        http_keepalive_backend(ns, &format!("backend-{i}"), BACKEND_PORT)
            .expect("keep-alive backend")
    });
    lab
}

/// One curl (one client connection): `REQUESTS` requests one after the other over `http`
/// (`--http1.1` or `--http2`); each must come back from a backend.
fn sequential(lab: &Lab, http: &str) {
    let out = lab
        .https(edge4(), "/realms/x")
        .fail()
        .max_time(60)
        .args(&[http, "-w", "\n"])
        .run_times(lab.topo.client(), REQUESTS as usize)
        .unwrap_or_else(|err| panic!("curl {http}: {err:#}\nsluice:\n{}", lab.daemon.log_text()));
    let answered = out.lines().filter(|l| l.starts_with("backend-")).count();
    assert_eq!(answered, REQUESTS as usize, "{http}: {out}");
}

fn metric(lab: &Lab, name: &str, labels: &[(&str, &str)]) -> f64 {
    lab.daemon
        .metric(
            lab.topo.gateway(),
            MANAGEMENT.parse().unwrap(),
            name,
            labels,
        )
        .expect("scrape /metrics")
}

fn backend_requests(lab: &Lab, connection: &str) -> f64 {
    metric(
        lab,
        "sluice_edge_backend_requests_total",
        &[("edge", EDGE), ("connection", connection)],
    )
}

/// Client TLS handshakes the listener completed.
fn handshakes(lab: &Lab) -> f64 {
    metric(
        lab,
        "sluice_edge_tls_handshakes_total",
        &[("edge", EDGE), ("outcome", "ok")],
    )
}

#[test]
#[allow(clippy::float_cmp)] // every value is a small integer, exact in f64
fn sequential_requests_on_one_client_connection_share_one_backend_connection() {
    require_root();
    let lab = lab("sereuse1");
    for (n, http) in (0u32..).zip(["--http1.1", "--http2"]) {
        sequential(&lab, http);
        assert_eq!(
            handshakes(&lab),
            f64::from(n + 1),
            "{http}: one client connection"
        );
        // The first request opens the one backend connection (the client's backend keeps it
        // from the HTTP/1.1 round for the HTTP/2 one); every later request reuses it.
        assert_eq!(
            lab.backend_connections(),
            1,
            "{http}: backend connections for {REQUESTS} requests one after the other"
        );
    }
    assert_eq!(backend_requests(&lab, "opened"), 1.0);
    assert_eq!(
        backend_requests(&lab, "reused"),
        f64::from(2 * REQUESTS - 1)
    );
}

#[test]
#[allow(clippy::float_cmp)] // every value is a small integer, exact in f64
fn concurrent_client_connections_need_no_more_backend_connections_than_clients() {
    require_root();
    let lab = lab("sereuse2");
    for http in HTTP_VERSIONS {
        thread::scope(|s| {
            for _ in 0..CLIENTS {
                s.spawn(|| sequential(&lab, http));
            }
        });
        // At most one request per client connection is in flight at a time: the backend
        // connection it used is idle again before the client's next request.
        let connections = lab.backend_connections();
        assert!(
            connections <= u64::from(CLIENTS),
            "{http}: {connections} backend connections for {CLIENTS} client connections"
        );
    }
    let opened = backend_requests(&lab, "opened");
    assert!(opened <= f64::from(CLIENTS), "opened {opened}");
    assert_eq!(
        opened + backend_requests(&lab, "reused"),
        f64::from(2 * CLIENTS * REQUESTS)
    );
}

/// One HTTP/2 client connection with `STREAMS` requests in flight needs that many backend
/// connections at once (HTTP/1.1 to the backends), and keeps them idle between waves: a
/// smaller idle list per backend (64 once) closed the surplus after every wave and opened it
/// again for the next, thousands of times in a load test.
#[test]
fn a_hundred_concurrent_streams_keep_their_backend_connections_between_waves() {
    const STREAMS: u32 = 100;
    const TOTAL: u32 = 3000;
    require_root();
    let lab = lab("sereuse3");
    let url = format!("https://{}/realms/x", edge4());
    let out = lab
        .topo
        .client()
        .run(&[
            "h2load",
            "-c1",
            &format!("-m{STREAMS}"),
            &format!("-n{TOTAL}"),
            &url,
        ])
        .unwrap_or_else(|err| panic!("h2load: {err:#}\nsluice:\n{}", lab.daemon.log_text()));
    assert!(
        out.contains(&format!("{TOTAL} succeeded, 0 failed")),
        "every request answered:\n{out}"
    );
    let opened = backend_requests(&lab, "opened");
    assert!(
        opened <= f64::from(STREAMS),
        "{opened} backend connections opened for {STREAMS} streams in flight"
    );
    assert!(lab.backend_connections() <= u64::from(STREAMS));
}

/// Each HTTP/2 response ends with its last DATA frame (`END_STREAM` set on the frame that
/// carries the body), not with an extra empty DATA frame after it: handing the backend
/// connection back no longer costs the client a frame. Read with `nghttp -v`, which prints
/// every frame it receives.
#[test]
fn an_h2_response_ends_with_its_last_data_frame() {
    require_root();
    let lab = lab("seh2end");
    // Three requests over the one connection (nghttp fetches a URL once).
    let urls: Vec<String> = (1..=3)
        .map(|n| format!("https://{}/realms/x?{n}", edge4()))
        .collect();
    let authority = format!("{SERVER_NAME}:{EDGE_PORT}");
    let out = lab
        .topo
        .client()
        .run(&[
            "nghttp",
            "-nv",
            "--header",
            &format!(":authority: {authority}"),
            &urls[0],
            &urls[1],
            &urls[2],
        ])
        .unwrap_or_else(|err| panic!("nghttp: {err:#}\nsluice:\n{}", lab.daemon.log_text()));
    let frames: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("recv DATA frame"))
        .collect();
    assert_eq!(frames.len(), 3, "one DATA frame per response:\n{out}");
    for f in &frames {
        assert!(
            f.contains("flags=0x01") && !f.contains("length=0,"),
            "the body's DATA frame ends the stream: {f}\n{out}"
        );
    }
}
