//! The real `sluice run` stopping with no balancer in front: `/health/ready` turns 503 at once,
//! and once the node is closed a new connection to an edge listener is refused at once, for
//! IPv4 and IPv6, while a request still in flight keeps the daemon in its `closed` phase. In
//! skb mode the RST is the one `sluice_xdp` builds (counted); on a veth in native mode, whose
//! `XDP_TX` frames reach a peer without XDP nowhere, the kernel's. The client's veth runs no
//! XDP program, as a container's or an upstream balancer's would not. The RST's bytes are
//! checked in `node_rst.rs`.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test shutdown_rst -- --test-threads=1`.

use std::{
    fmt::Write as _,
    io::{ErrorKind, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use sluice_tests::{
    certs::TestPki,
    daemon::{Daemon, Scratch},
    require_root,
    servers::{http_delay_backend, silent_backend},
    topology::{backend_addr4, GW_CLIENT_ADDR4, GW_CLIENT_ADDR6, GW_CLIENT_IFNAME},
    Topology, VIP4,
};

const EDGE_PORT: u16 = 8443;
const BACKEND_PORT: u16 = 9080;
const MANAGEMENT: &str = "127.0.0.1:9031";

fn connect(topo: &Topology, to: SocketAddr) -> std::io::Result<(TcpStream, Duration)> {
    topo.client()
        .exec(move || {
            let start = Instant::now();
            TcpStream::connect_timeout(&to, Duration::from_secs(10)).map(|s| (s, start.elapsed()))
        })
        .expect("run in the client namespace")
}

#[test]
fn a_closed_node_refuses_new_edge_connections_at_once_with_the_rst_of_xdp() {
    closed_node_refuses("slsdr", "skb");
}

/// Without the kernel's own RST here every SYN to the closed node was lost (`XDP_TX` on a veth
/// whose peer runs no XDP) and retransmitted until the daemon exited.
#[test]
fn a_closed_node_on_a_veth_refuses_new_edge_connections_at_once_with_the_kernels_rst() {
    closed_node_refuses("slsdn", "native");
}

#[expect(
    clippy::float_cmp,
    reason = "counter values are small integers, exact in an f64"
)]
fn closed_node_refuses(prefix: &str, xdp_mode: &str) {
    require_root();
    let topo = Topology::build(prefix, 1).expect("build topology");
    let scratch = Scratch::create(prefix).expect("scratch directory");
    let instance = format!("test-{prefix}");
    let edges = [
        SocketAddr::new(GW_CLIENT_ADDR4.into(), EDGE_PORT),
        SocketAddr::new(GW_CLIENT_ADDR6.into(), EDGE_PORT),
    ];
    let mut text = format!(
        "instance = \"{instance}\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\"]\n\
         xdp_mode = \"{xdp_mode}\"\nconntrack_entries = 4096\nshutdown_delay = \"500ms\"\nshutdown_timeout = \"4s\"\n\n\
         [admin]\nsocket = \"{}\"\n\n[management]\naddress = \"{MANAGEMENT}\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP4}:80\"\ntable_size = 251\n\
         backend = [{{ address = \"{}\" }}]\n",
        Daemon::socket_in(scratch.path()).display(),
        backend_addr4(0),
    );
    for (i, edge) in edges.iter().enumerate() {
        let _ = write!(
            text,
            "\n[[edge]]\nname = \"e{i}\"\naddress = \"{edge}\"\npool = \"web\"\n\
             backend_port = {BACKEND_PORT}\nresponse_timeout = \"30s\"\n"
        );
    }
    let mut daemon =
        Daemon::start(topo.gateway(), scratch.path(), &instance, &text).expect("start sluice");
    // A backend that never answers: a request to it stays in flight through the shutdown.
    let _backend = silent_backend(&topo.backends()[0], "silent", BACKEND_PORT).expect("backend");
    let management: SocketAddr = MANAGEMENT.parse().expect("address");
    let ready = || {
        daemon
            .management_get(topo.gateway(), management, "/health/ready")
            .expect("GET /health/ready")
            .0
    };
    let metric = |name: &str, labels: &[(&str, &str)]| {
        daemon
            .metric(topo.gateway(), management, name, labels)
            .expect("scrape /metrics")
    };
    assert_eq!(ready(), 200);
    for to in edges {
        connect(&topo, to).unwrap_or_else(|e| panic!("serving: {to}: {e}"));
    }

    let (mut pending, _) = connect(&topo, edges[0]).expect("connect for the long request");
    pending
        .write_all(b"GET /slow HTTP/1.1\r\nHost: edge.test\r\n\r\n")
        .expect("send the long request");
    let in_flight = || metric("sluice_edge_requests_in_flight", &[("edge", "e0")]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_flight() < 1.0 {
        assert!(Instant::now() < deadline, "the request never got in flight");
        std::thread::sleep(Duration::from_millis(20));
    }

    daemon.signal(libc::SIGTERM).expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready() != 503 {
        assert!(Instant::now() < deadline, "/health/ready never turned 503");
        std::thread::sleep(Duration::from_millis(10));
    }
    while metric("sluice_phase", &[("phase", "closed")]) < 1.0 {
        assert!(Instant::now() < deadline, "the node never closed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let rst = || metric("sluice_xdp_events_total", &[("event", "tx_rst_closed")]);
    let before = rst();
    for to in edges {
        let err = connect(&topo, to).expect_err("a closed node must refuse");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{to}: {err}");
    }
    // Measured for the record: far below the 1 s of a first SYN retransmission.
    for to in edges {
        let start = Instant::now();
        let _ = connect(&topo, to);
        eprintln!("closed: {to} refused after {:?}", start.elapsed());
    }
    let by_xdp = if xdp_mode == "skb" { 4.0 } else { 0.0 };
    assert_eq!(rst() - before, by_xdp, "who refused ({xdp_mode} mode)");
    assert_eq!(in_flight(), 1.0, "the long request is still in flight");
    assert_eq!(
        metric("sluice_phase", &[("phase", "closed")]),
        1.0,
        "refused while the node is closed, not once the daemon is gone"
    );

    // The 4 s timeout cuts the request (no second signal: that would skip the wait).
    let status = daemon
        .wait_exit(Duration::from_secs(15))
        .expect("the daemon exits");
    assert!(status.success(), "exit status {status}");
    let cut = daemon
        .log_events()
        .into_iter()
        .find_map(|e| e["cut"].as_u64());
    assert_eq!(cut, Some(1), "the long request was cut and counted");
}

/// An HTTP/2 connection gets a GOAWAY as soon as the node drains; the stream it carries
/// finishes. nghttp (Debian's nghttp2-client) prints the frames it receives.
#[test]
fn draining_sends_http2_clients_a_goaway_and_finishes_their_streams() {
    require_root();
    let topo = Topology::build("slsd2", 1).expect("build topology");
    let scratch = Scratch::create("slsd2").expect("scratch directory");
    let pki = TestPki::generate(&scratch.path().join("pki"), &["edge.test"]).expect("test PKI");
    let text = format!(
        "instance = \"test-slsd2\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\"]\n\
         conntrack_entries = 4096\nshutdown_delay = \"10s\"\nshutdown_timeout = \"5s\"\n\n\
         [admin]\nsocket = \"{}\"\n\n[management]\naddress = \"{MANAGEMENT}\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP4}:80\"\ntable_size = 251\n\
         backend = [{{ address = \"{}\" }}]\n\n\
         [[edge]]\nname = \"e0\"\naddress = \"{GW_CLIENT_ADDR4}:{EDGE_PORT}\"\npool = \"web\"\n\
         backend_port = {BACKEND_PORT}\n\n[edge.tls]\n\
         certificates = [{{ cert = \"{}\", key = \"{}\" }}]\n",
        Daemon::socket_in(scratch.path()).display(),
        backend_addr4(0),
        pki.server_cert().display(),
        pki.server_key().display(),
    );
    let mut daemon =
        Daemon::start(topo.gateway(), scratch.path(), "test-slsd2", &text).expect("start sluice");
    let _backend = http_delay_backend(&topo.backends()[0], "slow", BACKEND_PORT).expect("backend");
    let management: SocketAddr = MANAGEMENT.parse().expect("address");
    let in_flight = || {
        daemon
            .metric(
                topo.gateway(),
                management,
                "sluice_edge_requests_in_flight",
                &[("edge", "e0")],
            )
            .expect("scrape /metrics")
    };
    let url = format!("https://{GW_CLIENT_ADDR4}:{EDGE_PORT}/delay/2000");
    let nghttp = topo
        .client()
        .command(&["nghttp", "-v", "-n", &url])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start nghttp");
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_flight() < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the h2 request never got in flight"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    daemon.signal(libc::SIGTERM).expect("SIGTERM");
    let out = nghttp.wait_with_output().expect("nghttp ends");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "nghttp: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("recv GOAWAY frame"), "no GOAWAY:\n{text}");
    assert!(
        text.contains(":status: 200"),
        "the stream did not finish:\n{text}"
    );
    // Still draining (10 s): the GOAWAY came from the drain, not from the close.
    daemon.check_running().expect("still draining");
    let status = daemon.stop().expect("a second SIGTERM ends the drain");
    assert!(status.success(), "exit status {status}");
}
