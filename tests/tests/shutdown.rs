//! Graceful shutdown and backend drains of the edge under load, proved with real parts: the
//! real `sluice run` in the gateway namespace with plain-HTTP edge listeners, backends that
//! answer with their name, keep-alive clients that count every failed request, and Debian's
//! haproxy as the upstream balancer that has to notice a stopping instance. Needs root and
//! haproxy.
//!
//! ```text
//!  client ── gwc 198.18.0.1 ┐ gateway: sluice "a" (XDP on gwc, edge and management on .0.1)
//!  proxy: haproxy ── gwp 198.18.1.1 ┘          sluice "b" (XDP on gwp, edge and management on .1.1)
//!                                   gateway ── backends (HTTP; a's edge and b's on their own ports)
//! ```
//!
//! The only durations asserted are the issue's own bound: a stopped daemon exits within
//! `shutdown_delay + shutdown_timeout`, plus [`SLACK`].

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitStatus;
use std::thread;
use std::time::{Duration, Instant};

use sluice_tests::daemon::{Daemon, Scratch};
use sluice_tests::gateway_config::backend_tables;
use sluice_tests::haproxy::{CheckedServer, Haproxy, HttpBalancerSpec};
use sluice_tests::http1::{KeepAlive, Reply};
use sluice_tests::load::{self, Load, Report};
use sluice_tests::nginx::{Nginx, PassiveBalancerSpec};
use sluice_tests::topology::{
    backend_addr4, CLIENT_ADDR4, GW_CLIENT_ADDR4, GW_CLIENT_IFNAME, GW_PROXY_ADDR4,
    GW_PROXY_IFNAME, PROXY_ADDR4,
};
use sluice_tests::{
    connect_tcp, http_backend, http_delay_backend, require_root, NetNs, ServerHandle, Topology,
    VIP4,
};

/// Every edge listener's port (each instance on its own address).
const EDGE_PORT: u16 = 8080;
/// Every management port (on the edge's address, where haproxy checks it).
const MANAGEMENT_PORT: u16 = 9000;
/// haproxy's frontend port, on the proxy host.
const FRONTEND_PORT: u16 = 8000;
/// The backends' ports for the two instances of the haproxy test: there they answer with the
/// instance's letter, so every answer says which sluice served it.
const PORT_A: u16 = 8081;
const PORT_B: u16 = 8082;
/// The issue's "(+ slack)" on top of delay + timeout for a stopped daemon to exit.
const SLACK: Duration = Duration::from_secs(3);
/// Bound for waiting on something that happens in the background (a signal handled, a
/// balancer putting a server in rotation).
const SETTLE: Duration = Duration::from_secs(10);

/// One `sluice run` with one plain-HTTP edge listener on `address`, whose pool VIP names
/// `backends` backends; the edge reaches them on `backend_port`.
struct Node {
    daemon: Daemon,
    edge: SocketAddr,
    management: SocketAddr,
    _scratch: Scratch,
}

struct NodeSpec {
    name: &'static str,
    interface: &'static str,
    address: Ipv4Addr,
    backend_port: u16,
    backends: usize,
    shutdown_delay: &'static str,
    shutdown_timeout: &'static str,
}

impl Node {
    fn start(gateway: &NetNs, spec: &NodeSpec) -> Node {
        let scratch = Scratch::create(spec.name).expect("scratch directory");
        let instance = format!("test-{}", spec.name);
        let edge = SocketAddr::new(spec.address.into(), EDGE_PORT);
        let management = SocketAddr::new(spec.address.into(), MANAGEMENT_PORT);
        let mut text = format!(
            "shutdown_delay = \"{}\"\nshutdown_timeout = \"{}\"\ninstance = \"{instance}\"\n\
             interfaces = [\"{}\"]\nconntrack_entries = 65536\n\n[admin]\nsocket = \"{}\"\n\n\
             [management]\naddress = \"{management}\"\n\n[encap]\n\
             source_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\n\
             [[vip]]\nname = \"web\"\naddress = \"{VIP4}:80\"\ntable_size = 1009\n",
            spec.shutdown_delay,
            spec.shutdown_timeout,
            spec.interface,
            Daemon::socket_in(scratch.path()).display(),
        );
        text.push_str(&backend_tables(spec.backends));
        let _ = write!(
            text,
            "\n[[edge]]\nname = \"plain\"\naddress = \"{edge}\"\npool = \"web\"\n\
             backend_port = {}\n",
            spec.backend_port
        );
        let daemon = Daemon::start(gateway, scratch.path(), &instance, &text)
            .unwrap_or_else(|err| panic!("start sluice {}: {err:#}", spec.name));
        Node {
            daemon,
            edge,
            management,
            _scratch: scratch,
        }
    }

    /// `GET /health/ready` on the management port: the status code.
    fn ready(&self, gateway: &NetNs) -> u16 {
        self.daemon
            .management_get(gateway, self.management, "/health/ready")
            .unwrap_or_else(|err| panic!("GET /health/ready: {err:#}"))
            .0
    }

    /// The JSON log events that have a `cut` field (the shutdown timeout's warning).
    fn cut_events(&self) -> Vec<serde_json::Value> {
        self.daemon
            .log_events()
            .into_iter()
            .filter(|e| e.get("cut").is_some())
            .collect()
    }
}

/// A keep-alive connection from `ns` to `addr`.
fn keep_alive(ns: &NetNs, addr: SocketAddr) -> KeepAlive {
    connect_tcp(ns, addr)
        .and_then(KeepAlive::new)
        .unwrap_or_else(|err| panic!("connecting to {addr}: {err:#}"))
}

/// One request on a new connection.
fn get_once(ns: &NetNs, addr: SocketAddr, path: &str) -> anyhow::Result<Reply> {
    connect_tcp(ns, addr).and_then(KeepAlive::new)?.get(path)
}

/// Polls `f` until it is true, for at most [`SETTLE`].
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {SETTLE:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `balancer` at `frontend` has answered `client` through both instances (their
/// backends' names start `a-` and `b-`).
fn wait_for_both_instances(balancer: &str, client: &NetNs, frontend: SocketAddr) {
    let mut seen = [false, false];
    wait_for(
        &format!("{balancer} to answer through both instances"),
        || {
            if let Ok(reply) = get_once(client, frontend, "/") {
                seen[0] |= reply.body.starts_with("a-");
                seen[1] |= reply.body.starts_with("b-");
            }
            seen == [true, true]
        },
    );
}

/// An HTTP backend `backend-<i>` on [`EDGE_PORT`] in each backend namespace.
fn http_backends(topo: &Topology) -> Vec<ServerHandle> {
    topo.backends()
        .iter()
        .enumerate()
        .map(|(i, ns)| http_backend(ns, &format!("backend-{i}"), EDGE_PORT).expect("backend"))
        .collect()
}

/// Four clients on the client's address asking `frontend` for `/` every 10 ms for `duration`.
fn steady_load(frontend: SocketAddr, duration: Duration) -> Load {
    Load {
        target: frontend,
        sources: vec![IpAddr::V4(CLIENT_ADDR4); 4],
        path: "/".into(),
        duration,
        pause: Duration::from_millis(10),
        max_requests: 2000,
    }
}

/// The load behind the balancer lost no request, and sluice b, stopped under it, exited 0;
/// `logs` go with either failure.
fn assert_no_request_lost_and_b_exited_cleanly(report: &Report, status: ExitStatus, logs: &str) {
    assert!(report.failures().is_empty(), "{report}{logs}");
    assert!(status.success(), "sluice b exited with {status}\n{logs}");
}

/// Two instances on one gateway, `names.0` on the client side and `names.1` on the proxy side,
/// each with its own edge over `backends` backends (on [`PORT_A`] / [`PORT_B`]), and the proxy
/// host.
fn two_nodes(
    prefix: &str,
    names: (&'static str, &'static str),
    backends: usize,
    shutdown_delay: &'static str,
    shutdown_timeout: &'static str,
) -> (Topology, Node, Node) {
    let mut topo = Topology::build(prefix, backends).expect("build topology");
    topo.add_proxy().expect("add the proxy host");
    let node = |name, interface, address, backend_port| NodeSpec {
        name,
        interface,
        address,
        backend_port,
        backends,
        shutdown_delay,
        shutdown_timeout,
    };
    let a = Node::start(
        topo.gateway(),
        &node(names.0, GW_CLIENT_IFNAME, GW_CLIENT_ADDR4, PORT_A),
    );
    let b = Node::start(
        topo.gateway(),
        &node(names.1, GW_PROXY_IFNAME, GW_PROXY_ADDR4, PORT_B),
    );
    (topo, a, b)
}

#[test]
fn haproxy_in_front_loses_no_request_while_one_instance_stops() {
    require_root();
    // The delay is far longer than haproxy needs to take b out (two failed checks 200 ms
    // apart).
    let (topo, a, mut b) = two_nodes("sls1", ("sls1-a", "sls1-b"), 2, "2s", "1s");
    let _servers: Vec<ServerHandle> = topo
        .backends()
        .iter()
        .enumerate()
        .flat_map(|(i, ns)| {
            [("a", PORT_A), ("b", PORT_B)].map(|(letter, port)| {
                http_backend(ns, &format!("{letter}-{i}"), port)
                    .unwrap_or_else(|err| panic!("HTTP backend {i} on {port}: {err:#}"))
            })
        })
        .collect();
    let frontend = SocketAddr::new(PROXY_ADDR4.into(), FRONTEND_PORT);
    let spec = HttpBalancerSpec {
        frontend,
        servers: [&a, &b]
            .iter()
            .map(|n| CheckedServer {
                address: n.edge,
                check_port: MANAGEMENT_PORT,
            })
            .collect(),
        check_path: "/health/ready".into(),
        check_interval: Duration::from_millis(200),
    };
    let haproxy_dir = Scratch::create("sls1-haproxy").expect("scratch directory");
    let haproxy =
        Haproxy::start_http(topo.proxy(), haproxy_dir.path(), &spec).expect("start haproxy");

    // Both instances in rotation before the load starts.
    wait_for_both_instances("haproxy", topo.client(), frontend);

    let load = steady_load(frontend, Duration::from_secs(6));
    let (report, (sigterm, exited, status)) = load::run(topo.client(), &load, || {
        thread::sleep(Duration::from_millis(1500));
        let sigterm = Instant::now();
        let status = b.daemon.stop().expect("stop sluice b");
        (sigterm, Instant::now(), status)
    });
    let end = Instant::now();
    println!(
        "{report}b took {:?} to exit; answers before SIGTERM {:?}, while b stopped {:?}, \
         after it exited {:?}",
        exited - sigterm,
        report.bodies_sent_between(report.started, sigterm),
        report.bodies_sent_between(sigterm, exited),
        report.bodies_sent_between(exited, end),
    );
    let logs = || {
        format!(
            "sluice b:\n{}\nhaproxy:\n{}",
            b.daemon.log_text(),
            haproxy.log_text()
        )
    };
    assert_no_request_lost_and_b_exited_cleanly(&report, status, &logs());
    assert!(
        exited - sigterm < Duration::from_secs(2 + 1) + SLACK,
        "sluice b took {:?} to exit with a 2 s delay and a 1 s timeout\n{}",
        exited - sigterm,
        logs()
    );
    let before = report.bodies_sent_between(report.started, sigterm);
    for letter in ["a-", "b-"] {
        assert!(
            before.keys().any(|k| k.starts_with(letter)),
            "no answer through sluice {letter} before the SIGTERM: {before:?}"
        );
    }
    let after = report.bodies_sent_between(exited, end);
    assert!(!after.is_empty(), "no requests after b exited: {report}");
    assert!(
        after.keys().all(|k| k.starts_with("a-")),
        "answers after b exited: {after:?}"
    );
    // Nothing was left in flight for the timeout to cut.
    assert_eq!(
        b.cut_events(),
        Vec::<serde_json::Value>::new(),
        "{}",
        logs()
    );
    assert_eq!(a.ready(topo.gateway()), 200, "the survivor stays ready");
}

#[test]
fn shutdown_timeout_cuts_a_long_request_and_lets_a_short_one_finish() {
    require_root();
    let topo = Topology::build("sls2", 1).expect("build topology");
    let mut node = Node::start(
        topo.gateway(),
        &NodeSpec {
            name: "sls2",
            interface: GW_CLIENT_IFNAME,
            address: GW_CLIENT_ADDR4,
            backend_port: EDGE_PORT,
            backends: 1,
            shutdown_delay: "0s",
            shutdown_timeout: "1s",
        },
    );
    let server = http_delay_backend(topo.backend(0), "backend-0", EDGE_PORT).expect("backend");
    let client = topo.client();
    let edge = node.edge;
    let (long, short, status, took) = thread::scope(|s| {
        let long = s.spawn(|| get_once(client, edge, "/delay/3000"));
        let short = s.spawn(|| get_once(client, edge, "/delay/300"));
        // The backend accepted both: sluice has both requests in flight.
        wait_for("both requests to reach the backend", || {
            server.served() == 2
        });
        let sigterm = Instant::now();
        let status = node.daemon.stop().expect("stop sluice");
        let took = sigterm.elapsed();
        let join = |h: thread::ScopedJoinHandle<'_, anyhow::Result<Reply>>| {
            h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        };
        (join(long), join(short), status, took)
    });
    let log = node.daemon.log_text();
    let short = short.unwrap_or_else(|err| panic!("the short request failed: {err:#}\n{log}"));
    assert_eq!((short.status, short.body.as_str()), (200, "backend-0"));
    assert!(
        short.asks_to_close(),
        "an answer after the stop signal says Connection: close: {short:?}"
    );
    assert!(
        long.is_err(),
        "the request that outlived the timeout was cut: {long:?}"
    );
    assert!(status.success(), "sluice exited with {status}\n{log}");
    assert!(
        took < Duration::from_secs(1) + SLACK,
        "sluice took {took:?} to exit with no delay and a 1 s timeout\n{log}"
    );
    let cut = node.cut_events();
    assert_eq!(cut.len(), 1, "one shutdown_timeout warning: {cut:?}\n{log}");
    assert_eq!(cut[0]["cut"], 1, "{}", cut[0]);
    assert_eq!(cut[0]["level"], "WARN", "{}", cut[0]);
    assert_eq!(server.served(), 2, "nothing retried the cut request");
}

#[test]
fn draining_turns_not_ready_at_once_and_asks_keep_alive_clients_to_close() {
    require_root();
    let backends = 2;
    let topo = Topology::build("sls3", backends).expect("build topology");
    let mut node = Node::start(
        topo.gateway(),
        &NodeSpec {
            name: "sls3",
            interface: GW_CLIENT_IFNAME,
            address: GW_CLIENT_ADDR4,
            backend_port: EDGE_PORT,
            backends,
            // Longer than the whole test: only the second signal ends it.
            shutdown_delay: "60s",
            shutdown_timeout: "1s",
        },
    );
    let _servers = http_backends(&topo);
    let (client, gateway) = (topo.client(), topo.gateway());
    let mut conn = keep_alive(client, node.edge);
    let first = conn.get("/").expect("a request while serving");
    assert_eq!(first.status, 200, "{first:?}");
    assert!(!first.asks_to_close(), "{first:?}");
    assert_eq!(node.ready(gateway), 200);

    node.daemon.signal(libc::SIGTERM).expect("SIGTERM");
    // As soon as the signal is handled, well inside the 60 s delay.
    wait_for("/health/ready to answer 503", || node.ready(gateway) == 503);
    let status = node.daemon.cli_json(&["status"]).expect("sluice status");
    assert_eq!(status["phase"], "draining", "{status}");

    let second = conn
        .get("/")
        .expect("the keep-alive connection still serves while draining");
    assert_eq!(second.status, 200, "{second:?}");
    assert!(
        second.asks_to_close(),
        "the next answer asks to close: {second:?}"
    );
    assert!(
        conn.at_eof().expect("read after Connection: close"),
        "sluice closed the connection after that answer"
    );
    let fresh = get_once(client, node.edge, "/").expect("a new connection while draining");
    assert_eq!(fresh.status, 200, "{fresh:?}");
    assert!(fresh.asks_to_close(), "{fresh:?}");
    node.daemon.check_running().expect("still draining");

    // The second signal skips the rest of the delay: the fixture's stop waits 10 s before it
    // kills, and a killed daemon does not exit 0.
    let status = node.daemon.stop().expect("second SIGTERM");
    assert!(
        status.success(),
        "exit {status}\n{}",
        node.daemon.log_text()
    );
    let hurried = node
        .daemon
        .log_events()
        .iter()
        .any(|e| e["hurried"] == true);
    assert!(
        hurried,
        "the log says the wait was cut short:\n{}",
        node.daemon.log_text()
    );
}

#[test]
fn drained_edge_backend_gets_no_request_after_the_drain_is_acknowledged() {
    require_root();
    let backends = 3;
    let topo = Topology::build("sls4", backends).expect("build topology");
    // Clients spread over the backends by address: four clients, one connection each.
    let sources: Vec<IpAddr> = (2..=5)
        .map(|host| IpAddr::V4(Ipv4Addr::new(198, 18, 0, host)))
        .collect();
    for s in &sources[1..] {
        let IpAddr::V4(s) = s else { unreachable!() };
        topo.add_client_addr4(*s).expect("client address");
    }
    let node = Node::start(
        topo.gateway(),
        &NodeSpec {
            name: "sls4",
            interface: GW_CLIENT_IFNAME,
            address: GW_CLIENT_ADDR4,
            backend_port: EDGE_PORT,
            backends,
            shutdown_delay: "0s",
            shutdown_timeout: "1s",
        },
    );
    let servers = http_backends(&topo);
    let load = Load {
        target: node.edge,
        sources,
        path: "/".into(),
        duration: Duration::from_secs(3),
        pause: Duration::from_millis(5),
        max_requests: 2000,
    };
    let (report, (drained, acked, served_at_ack)) = load::run(topo.client(), &load, || {
        thread::sleep(Duration::from_secs(1));
        // The busiest backend, so the drain moves live traffic.
        let (drained, busiest) = servers
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.served())
            .expect("backends");
        assert!(busiest.served() > 0, "no backend served anything yet");
        let addr = backend_addr4(drained).to_string();
        node.daemon
            .cli_ok(&["drain", "web", &addr])
            .unwrap_or_else(|err| panic!("{err:#}"));
        let acked = Instant::now();
        let served_at_ack = busiest.served();
        thread::sleep(Duration::from_millis(1500));
        (drained, acked, served_at_ack)
    });
    let end = Instant::now();
    let name = format!("backend-{drained}");
    let before = report.bodies_sent_between(report.started, acked);
    let after = report.bodies_sent_between(acked, end);
    println!("{report}drained {name}; answers before {before:?}, after {after:?}");
    assert!(
        report.failures().is_empty(),
        "{report}\n{}",
        node.daemon.log_text()
    );
    assert!(before.contains_key(&name), "{before:?}");
    assert!(!after.is_empty(), "no requests after the drain: {report}");
    assert!(
        !after.contains_key(&name),
        "{name} answered after its drain: {after:?}"
    );
    assert_eq!(
        servers[drained].served(),
        served_at_ack,
        "{name} accepted connections after the drain was acknowledged"
    );
}

/// nginx with passive failover only (no health checks, `proxy_connect_timeout 2s`) in front of
/// two instances: while one is closed and still finishing a request, every connection nginx
/// opens to it must be refused at once, so nginx retries the other instance without waiting
/// for its connect timeout. The proxy's veth runs no XDP program, as a real balancer's would
/// not: an `XDP_TX` RST would never reach it, so the kernel answers there.
#[test]
fn nginx_in_front_never_waits_for_a_connect_timeout_while_one_instance_stops() {
    require_root();
    let (topo, a, mut b) = two_nodes("sls4", ("sls4-a", "sls4-b"), 1, "200ms", "5s");
    let backend = topo.backend(0);
    let _servers = [
        http_backend(backend, "a-0", PORT_A).expect("backend for a"),
        http_delay_backend(backend, "b-0", PORT_B).expect("backend for b"),
    ];
    let frontend = SocketAddr::new(PROXY_ADDR4.into(), FRONTEND_PORT);
    let nginx_dir = Scratch::create("sls4-nginx").expect("scratch directory");
    let nginx = Nginx::start(
        topo.proxy(),
        nginx_dir.path(),
        &PassiveBalancerSpec {
            frontend,
            servers: vec![a.edge, b.edge],
            connect_timeout: Duration::from_secs(2),
        },
    )
    .expect("start nginx");
    wait_for_both_instances("nginx", topo.client(), frontend);

    let load = steady_load(frontend, Duration::from_secs(5));
    let client = topo.client();
    let b_edge = b.edge;
    let (report, status) = load::run(client, &load, || {
        thread::scope(|s| {
            // Keeps b closed, with this request in flight, for about three seconds.
            let long = s.spawn(|| get_once(client, b_edge, "/delay/3000"));
            thread::sleep(Duration::from_secs(1));
            let status = b.daemon.stop().expect("stop sluice b");
            let _ = long.join();
            status
        })
    });
    let errors = nginx.error_log();
    let upstream_lines: Vec<&str> = errors.lines().filter(|l| l.contains("upstream")).collect();
    let logs = || format!("nginx:\n{errors}\nsluice b:\n{}", b.daemon.log_text());
    assert_no_request_lost_and_b_exited_cleanly(&report, status, &logs());
    assert!(
        upstream_lines.iter().all(|l| !l.contains("timed out")),
        "nginx waited for a connect timeout:\n{}",
        logs()
    );
    assert!(
        upstream_lines
            .iter()
            .any(|l| l.contains("Connection refused") && l.contains(&b_edge.to_string())),
        "nginx never met the closed instance, so this proved nothing:\n{}",
        logs()
    );
    assert_eq!(a.ready(topo.gateway()), 200, "the survivor stays ready");
}
