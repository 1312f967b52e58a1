//! Smoke tests of the test-support library itself: the topology routes plainly between
//! client and backends, the helper servers answer across it, and everything is removed
//! again. Needs root; skips itself otherwise.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{IpAddr, SocketAddr};

use sluice_tests::servers::{
    connect_tcp, http_backend, http_get_many, tcp_echo_backend, udp_ask, udp_backend,
};
use sluice_tests::{require_root, NetNs, Topology, VIP4, VIP6};

fn namespaces() -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

#[test]
fn routed_reachability_and_cleanup() {
    require_root();
    let topo = Topology::build("slt1", 2).expect("build topology");
    assert_eq!(topo.backend_count(), 2);
    for target in [
        "198.18.10.2",
        "2001:db8:a::2",
        "198.18.11.2",
        "2001:db8:b::2",
    ] {
        topo.client()
            .run(&["ping", "-c1", "-W2", target])
            .unwrap_or_else(|err| panic!("ping {target}: {err:#}"));
    }
    let names: Vec<String> = [
        topo.client(),
        topo.gateway(),
        topo.backend(0),
        topo.backend(1),
    ]
    .iter()
    .map(|ns| ns.name().to_owned())
    .collect();
    let listed = namespaces();
    for name in &names {
        assert!(
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name)),
            "{name} missing"
        );
    }
    drop(topo);
    let listed = namespaces();
    for name in &names {
        assert!(!NetNs::exists(name), "{name} still exists: {listed}");
    }
}

#[test]
fn servers_answer_across_topology() {
    require_root();
    let mut topo = Topology::build("slt2", 1).expect("build topology");
    assert_eq!(topo.add_backend().expect("add backend"), 1);
    let _http = http_backend(topo.backend(1), "b1", 8080).expect("http backend");
    let _udp = udp_backend(topo.backend(1), "u1", 5353).expect("udp backend");
    let _echo = tcp_echo_backend(topo.backend(1), "e1", 7000).expect("echo backend");
    let addrs: [IpAddr; 2] = [topo.backend_addr4(1).into(), topo.backend_addr6(1).into()];
    for ip in addrs {
        let tally = http_get_many(topo.client(), SocketAddr::new(ip, 8080), 200, 16).expect("http");
        assert_eq!(tally.get("b1"), Some(&200), "{tally:?}");

        let replies = udp_ask(topo.client(), SocketAddr::new(ip, 5353), 5).expect("udp");
        assert_eq!(replies, vec!["u1"; 5]);

        let stream = connect_tcp(topo.client(), SocketAddr::new(ip, 7000)).expect("connect echo");
        let mut reader = BufReader::new(stream.try_clone().expect("clone"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("greeting");
        assert_eq!(line, "e1\n");
        (&stream).write_all(b"hello\n").expect("send");
        line.clear();
        reader.read_line(&mut line).expect("echo");
        assert_eq!(line, "hello\n");
    }
    // Route the VIPs plainly to backend 1 (standing in for the load balancer): the
    // backend accepts them on `lo`, and UDP replies come from the VIP, or the client's
    // connected socket would drop them.
    let gw = topo.gateway();
    gw.ip(&[
        "route",
        "add",
        &format!("{VIP4}/32"),
        "via",
        &topo.backend_addr4(1).to_string(),
    ])
    .expect("route VIP4");
    gw.ip(&[
        "-6",
        "route",
        "add",
        &format!("{VIP6}/128"),
        "via",
        &topo.backend_addr6(1).to_string(),
    ])
    .expect("route VIP6");
    for vip in [IpAddr::from(VIP4), IpAddr::from(VIP6)] {
        let replies = udp_ask(topo.client(), SocketAddr::new(vip, 5353), 3).expect("udp to VIP");
        assert_eq!(replies, vec!["u1"; 3]);
        let tally = http_get_many(topo.client(), SocketAddr::new(vip, 8080), 20, 4).expect("http");
        assert_eq!(tally.get("b1"), Some(&20), "{tally:?}");
    }
}

#[test]
fn cleanup_on_panic_and_leftovers() {
    require_root();
    // A leftover from a killed run must not stop the next build.
    let _ = std::process::Command::new("ip")
        .args(["netns", "add", "slt3-gw"])
        .status();
    let result = std::panic::catch_unwind(|| {
        let topo = Topology::build("slt3", 1).expect("build over leftover");
        let _sleeper = topo.backend(0).spawn(&["sleep", "60"]).expect("spawn");
        let _server = http_backend(topo.backend(0), "b0", 0).expect("http backend");
        panic!("simulated test failure");
    });
    assert!(result.is_err());
    for name in ["slt3-client", "slt3-gw", "slt3-b0"] {
        assert!(!NetNs::exists(name), "{name} left behind: {}", namespaces());
    }
}
