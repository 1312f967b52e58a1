//! PROXY protocol v2 with a real, independent sender: Debian's haproxy (`send-proxy-v2`) in its
//! own namespace in front of the real `sluice run`, backends that read the header and say which
//! client it named. Needs root and haproxy.
//!
//! ```text
//!  client (198.18.0.2, .3) ── gwc ┐
//!  proxy: haproxy 198.18.1.2 ── gwp ┴ gateway (sluice_xdp on both) ══ IPIP ══ backends
//! ```
//!
//! The client reaches haproxy through the gateway's routing (no VIP involved); haproxy connects to
//! the VIP, and the backends answer the TCP peer (haproxy, or the client when it connects
//! directly) straight back (DSR).

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use lb_userspace::dataplane::Decap;
use sluice_tests::daemon::{Daemon, Scratch};
use sluice_tests::gateway_config::backend_tables;
use sluice_tests::haproxy::{Haproxy, HaproxySpec};
use sluice_tests::proxy_backend::{send_and_read_line, Header, ProxyBackend, Reply, Seen};
use sluice_tests::topology::{
    backend_addr4, CLIENT_ADDR4, GW_CLIENT_IFNAME, GW_PROXY_IFNAME, PROXY_ADDR4,
};
use sluice_tests::{connect_tcp_from, require_root, Topology, VIP4};

const VIP_NAME: &str = "pp4";
const VIP_PORT: u16 = 7;
/// Where haproxy's frontend listens, on the proxy host.
const FRONTEND_PORT: u16 = 7000;
const TABLE_SIZE: u32 = 4099;
const MANAGEMENT: &str = "127.0.0.1:9000";
/// How long a client waits for an answer that must not come. Only a read timeout: a dropped
/// flow is one that stays silent at least this long.
const SILENCE: Duration = Duration::from_millis(1500);
/// The client's second address, for allow/deny lists that tell two clients apart.
const CLIENT_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 3);

fn vip() -> SocketAddr {
    SocketAddr::new(VIP4.into(), VIP_PORT)
}

fn frontend() -> SocketAddr {
    SocketAddr::new(PROXY_ADDR4.into(), FRONTEND_PORT)
}

/// The VIP's client policy (the PROXY part is always `required` from haproxy's address).
#[derive(Clone, Default)]
struct Policy {
    allow: Vec<Ipv4Addr>,
    deny: Vec<Ipv4Addr>,
}

fn config_text(instance: &str, scratch: &Scratch, backends: usize, policy: &Policy) -> String {
    let list = |addrs: &[Ipv4Addr]| {
        addrs
            .iter()
            .map(|a| format!("\"{a}/32\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut text = format!(
        "instance = \"{instance}\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\", \"{GW_PROXY_IFNAME}\"]\n\
         conntrack_entries = 65536\n\n[admin]\nsocket = \"{}\"\n\n[management]\naddress = \"{MANAGEMENT}\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\nname = \"{VIP_NAME}\"\naddress = \"{}\"\ntable_size = {TABLE_SIZE}\n\
         proxy_protocol = \"required\"\ntrusted_proxies = [\"{PROXY_ADDR4}/32\"]\n",
        Daemon::socket_in(scratch.path()).display(),
        vip(),
    );
    if !policy.allow.is_empty() {
        let _ = writeln!(text, "allow_clients = [{}]", list(&policy.allow));
    }
    if !policy.deny.is_empty() {
        let _ = writeln!(text, "deny_clients = [{}]", list(&policy.deny));
    }
    text.push_str(&backend_tables(backends));
    text
}

/// Client, proxy host, gateway with the daemon, PROXY-aware backends, and (optionally) haproxy.
/// Fields drop in order: haproxy and the daemon first, the namespaces last.
struct Lab {
    haproxy: Option<Haproxy>,
    daemon: Daemon,
    _decaps: Vec<Decap>,
    backends: Vec<ProxyBackend>,
    topo: Topology,
    scratch: Scratch,
    instance: String,
}

impl Lab {
    fn start(
        prefix: &str,
        backends: usize,
        policy: &Policy,
        haproxy: Option<&HaproxySpec>,
    ) -> Self {
        let mut topo = Topology::build(prefix, backends).expect("build topology");
        topo.add_proxy().expect("add the proxy host");
        topo.add_client_addr4(CLIENT_B)
            .expect("second client address");
        let scratch = Scratch::create(prefix).expect("scratch directory");
        let instance = format!("test-{prefix}");
        let text = config_text(&instance, &scratch, backends, policy);
        let daemon = Daemon::start(topo.gateway(), scratch.path(), &instance, &text)
            .expect("start sluice run");
        let mut decaps = Vec::new();
        let mut servers = Vec::new();
        for (i, ns) in topo.backends().iter().enumerate() {
            let decap = topo.attach_decap(i, &[VIP4.into()]);
            decaps.push(decap);
            let server = ProxyBackend::start(ns, i, VIP_PORT)
                .unwrap_or_else(|err| panic!("PROXY backend {i}: {err:#}"));
            servers.push(server);
        }
        let haproxy = haproxy
            .map(|spec| Haproxy::start(topo.proxy(), scratch.path(), spec).expect("start haproxy"));
        Self {
            haproxy,
            daemon,
            _decaps: decaps,
            backends: servers,
            topo,
            scratch,
            instance,
        }
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        self.daemon
            .cli_json(args)
            .unwrap_or_else(|err| panic!("{err:#}\n{}", self.daemon.log_text()))
    }

    fn stats(&self) -> Counts {
        Counts(self.json(&["stats"]))
    }

    fn flows(&self) -> Vec<serde_json::Value> {
        self.json(&["flows", "--vip", VIP_NAME, "--limit", "1000"])
            .as_array()
            .expect("flows is a list")
            .clone()
    }

    /// A connection from the client namespace, from `from`, to `to`.
    fn connect_client(&self, from: Ipv4Addr, to: SocketAddr) -> TcpStream {
        connect_tcp_from(self.topo.client(), from.into(), to)
            .unwrap_or_else(|err| panic!("connect {from} -> {to}: {err:#}"))
    }

    /// Every backend's records of connections whose TCP peer was `peer`.
    fn seen_from(&self, peer: SocketAddr) -> Vec<Seen> {
        self.backends
            .iter()
            .flat_map(|b| b.seen_from(peer))
            .collect()
    }

    /// Every record, from every backend, whose header named a client at `ip`.
    fn seen_client_ip(&self, ip: Ipv4Addr) -> Vec<Seen> {
        self.backends
            .iter()
            .flat_map(ProxyBackend::seen)
            .filter(|s| s.client().is_some_and(|c| c.ip() == IpAddr::V4(ip)))
            .collect()
    }

    fn haproxy_log(&self) -> String {
        self.haproxy
            .as_ref()
            .map_or_else(String::new, Haproxy::log_text)
    }

    /// Through haproxy from `from`: the backend must answer naming this connection's own
    /// address as the client, and echo. Returns the stream (kept open so its flow stays
    /// listed), the client address and the backend's index.
    fn served_through_haproxy(&self, from: Ipv4Addr) -> (TcpStream, SocketAddr, usize) {
        let mut stream = self.connect_client(from, frontend());
        let local = stream.local_addr().expect("local address");
        let reply = send_and_read_line(&mut stream, b"ping\n", Duration::from_secs(5))
            .expect("exchange through haproxy");
        let (client, backend) = reply.answer().unwrap_or_else(|err| {
            panic!(
                "{from} through haproxy: {err:#}\nhaproxy:\n{}\nsluice:\n{}",
                self.haproxy_log(),
                self.daemon.log_text()
            )
        });
        assert_eq!(
            client,
            local.to_string(),
            "the backend learned the real client from haproxy's header"
        );
        let echo = send_and_read_line(&mut stream, b"", Duration::from_secs(5)).expect("echo");
        assert_eq!(
            echo,
            Reply::Line("ping".into()),
            "data after the header is echoed"
        );
        (stream, local, backend)
    }

    /// Through haproxy from `from`: the connection to haproxy opens, but nothing comes back
    /// and no backend hears of this client.
    fn refused_through_haproxy(&self, from: Ipv4Addr) -> SocketAddr {
        let seen_before = self.seen_client_ip(from).len();
        let mut stream = self.connect_client(from, frontend());
        let local = stream.local_addr().expect("local address");
        let reply = send_and_read_line(&mut stream, b"ping\n", SILENCE).expect("read");
        assert_eq!(
            reply,
            Reply::Silent(String::new()),
            "{from} through haproxy must get no answer"
        );
        assert_eq!(
            self.seen_client_ip(from).len(),
            seen_before,
            "no backend may see a header naming {from}: {:?}",
            self.seen_client_ip(from)
        );
        local
    }

    /// Sends `data` on a connection made straight to the VIP and checks the policy refused it
    /// as `outcome`: no answer, the outcome counted once, every data packet dropped, and the
    /// backend that got the handshake got none of the data.
    fn refused_direct(&self, mut stream: TcpStream, data: &[u8], outcome: &str) {
        let before = self.stats();
        let local = stream.local_addr().expect("local address");
        let reply = send_and_read_line(&mut stream, data, SILENCE).expect("read");
        assert_eq!(
            reply,
            Reply::Silent(String::new()),
            "a flow refused as {outcome} gets no answer"
        );
        let after = self.stats();
        assert_eq!(after.grew(&before, outcome), 1, "{}", after.0);
        assert!(after.counter("drop_proxy") > before.counter("drop_proxy"));
        assert_eq!(after.grew(&before, "accepted"), 0, "{}", after.0);
        let seen = self.seen_from(local);
        assert_eq!(
            seen.len(),
            1,
            "the handshake reached one backend (only the data is dropped): {seen:?}"
        );
        assert_eq!(
            seen[0].bytes, 0,
            "the backend got none of the data: {seen:?}"
        );
        let row = flow_of(&self.flows(), local);
        assert_eq!(row["proxy"], outcome, "{row}");
        assert!(row["real_client"].is_null(), "{row}");
    }
}

/// `sluice stats --json`, read by name.
struct Counts(serde_json::Value);

impl Counts {
    /// Flows of the test VIP that PROXY/client policy outcome `outcome` decided.
    fn outcome(&self, outcome: &str) -> u64 {
        let rows = self.0["proxy"].as_array().expect("stats has a proxy list");
        let row = rows
            .iter()
            .find(|r| r["vip"] == VIP_NAME && r["outcome"] == outcome)
            .unwrap_or_else(|| panic!("no proxy row for {VIP_NAME}/{outcome}: {}", self.0));
        row["flows"].as_u64().expect("flows is a number")
    }

    /// How many more flows `outcome` decided than in `before`.
    fn grew(&self, before: &Counts, outcome: &str) -> u64 {
        self.outcome(outcome) - before.outcome(outcome)
    }

    /// A dataplane counter by name (e.g. `drop_proxy`).
    fn counter(&self, name: &str) -> u64 {
        let rows = self.0["counters"].as_array().expect("stats has counters");
        let row = rows
            .iter()
            .find(|r| r["name"] == name)
            .unwrap_or_else(|| panic!("no counter {name}: {}", self.0));
        row["value"].as_u64().expect("value is a number")
    }
}

/// The `sluice flows --json` row whose TCP peer is `peer`.
fn flow_of(flows: &[serde_json::Value], peer: SocketAddr) -> serde_json::Value {
    flows
        .iter()
        .find(|f| f["client"] == peer.to_string().as_str())
        .cloned()
        .unwrap_or_else(|| panic!("sluice flows lists no flow from {peer}: {flows:?}"))
}

/// Polls `f` every 100 ms until it holds, for at most 10 s; on timeout the panic shows `why()`.
fn wait_until(what: &str, mut f: impl FnMut() -> bool, why: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            why()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A value on the management port's `/metrics`.
fn metric(lab: &Lab, name: &str, labels: &[(&str, &str)]) -> f64 {
    lab.daemon
        .metric(
            lab.topo.gateway(),
            MANAGEMENT.parse().expect("addr"),
            name,
            labels,
        )
        .expect("GET /metrics")
}

#[test]
fn haproxy_names_the_real_client_and_a_replayed_header_is_dropped() {
    require_root();
    let spec = HaproxySpec {
        frontend: frontend(),
        server: vip(),
        local_checks: Some(Duration::from_millis(200)),
    };
    let lab = Lab::start("slh1", 3, &Policy::default(), Some(&spec));
    let before = lab.stats();

    // Through haproxy: accepted, the backend and `sluice flows` know the real client.
    let conns: Vec<_> = (0..6)
        .map(|_| lab.served_through_haproxy(CLIENT_ADDR4))
        .collect();
    let after = lab.stats();
    assert_eq!(
        after.outcome("accepted") - before.outcome("accepted"),
        6,
        "{}",
        after.0
    );
    let flows = lab.flows();
    for (_, local, backend) in &conns {
        let seen: Vec<_> = lab
            .backends
            .iter()
            .flat_map(ProxyBackend::seen)
            .filter(|s| s.client() == Some(*local))
            .collect();
        assert_eq!(
            seen.len(),
            1,
            "one backend connection for {local}: {seen:?}"
        );
        let peer = seen[0].peer;
        assert_eq!(
            peer.ip(),
            IpAddr::V4(PROXY_ADDR4),
            "haproxy is the TCP peer"
        );
        let row = flow_of(&flows, peer);
        assert_eq!(row["real_client"], local.to_string().as_str(), "{row}");
        assert_eq!(row["proxy"], "accepted", "{row}");
        assert_eq!(
            row["backend"],
            backend_addr4(*backend).to_string().as_str(),
            "{row}"
        );
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let exported = metric(
        &lab,
        "sluice_vip_proxy_flows_total",
        &[("vip", VIP_NAME), ("outcome", "accepted")],
    ) as u64;
    assert_eq!(
        exported,
        after.outcome("accepted"),
        "/metrics agrees with sluice stats"
    );

    // haproxy's health checks carry a LOCAL header: allowed, counted, no client recorded.
    wait_until(
        "a LOCAL health check to reach a backend",
        || {
            lab.backends
                .iter()
                .flat_map(ProxyBackend::seen)
                .any(|s| s.header == Some(Header::Local) && s.peer.ip() == IpAddr::V4(PROXY_ADDR4))
        },
        || {
            let seen: Vec<_> = lab.backends.iter().flat_map(ProxyBackend::seen).collect();
            format!(
                "backends saw: {seen:?}\nstats: {}\nhaproxy:\n{}",
                lab.stats().0["proxy"],
                lab.haproxy_log()
            )
        },
    );
    assert!(lab.stats().outcome("local") >= 1, "{}", lab.stats().0);

    // The same header bytes, straight from the client, which is no trusted proxy.
    let raw = lab
        .backends
        .iter()
        .flat_map(ProxyBackend::seen)
        .find(|s| s.client() == Some(conns[0].1))
        .and_then(|s| s.raw_header)
        .expect("haproxy's header as the backend received it");
    let forged = lab.connect_client(CLIENT_ADDR4, vip());
    lab.refused_direct(forged, &[&raw[..], b"ping\n"].concat(), "untrusted");
    drop(conns);
}

#[test]
fn denied_real_clients_are_dropped_and_allow_lists_apply_on_reload() {
    require_root();
    let spec = HaproxySpec {
        frontend: frontend(),
        server: vip(),
        local_checks: None,
    };
    let deny_b = Policy {
        allow: Vec::new(),
        deny: vec![CLIENT_B],
    };
    let lab = Lab::start("slh2", 2, &deny_b, Some(&spec));

    let before = lab.stats();
    lab.refused_through_haproxy(CLIENT_B);
    let (_a, local_a, _) = lab.served_through_haproxy(CLIENT_ADDR4);
    assert_eq!(local_a.ip(), IpAddr::V4(CLIENT_ADDR4));
    let after = lab.stats();
    assert_eq!(after.grew(&before, "client_denied"), 1, "{}", after.0);
    assert_eq!(after.grew(&before, "accepted"), 1, "{}", after.0);
    assert!(after.counter("drop_proxy") > before.counter("drop_proxy"));

    // Now only B is allowed (and nobody denied): the roles swap.
    let allow_b = Policy {
        allow: vec![CLIENT_B],
        deny: Vec::new(),
    };
    let text = config_text(&lab.instance, &lab.scratch, 2, &allow_b);
    std::fs::write(lab.daemon.config_path(), text).expect("write config");
    lab.daemon
        .cli_ok(&["reload"])
        .unwrap_or_else(|err| panic!("{err:#}"));
    let before = lab.stats();
    let (_b, local_b, _) = lab.served_through_haproxy(CLIENT_B);
    assert_eq!(local_b.ip(), IpAddr::V4(CLIENT_B));
    lab.refused_through_haproxy(CLIENT_ADDR4);
    let after = lab.stats();
    assert_eq!(after.grew(&before, "client_denied"), 1, "{}", after.0);
    assert_eq!(after.grew(&before, "accepted"), 1, "{}", after.0);
}

#[test]
fn a_trusted_proxy_without_a_header_is_dropped_when_required() {
    require_root();
    let lab = Lab::start("slh3", 2, &Policy::default(), None);
    let stream = connect_tcp_from(lab.topo.proxy(), PROXY_ADDR4.into(), vip())
        .expect("connect from the proxy host to the VIP");
    lab.refused_direct(stream, b"no header here\n", "missing");
}
