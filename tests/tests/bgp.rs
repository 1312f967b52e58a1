//! The BGP speaker against a real router: FRR (`zebra` + `bgpd`, `maximum-paths`) in a
//! namespace, peering with three gateways that run sluice with the same VIPs.
//!
//! ```text
//!                 bgp-rtr (AS 65000, FRR)
//!   g0 198.18.100.1 | g1 198.18.101.1 | g2 198.18.102.1     (2001:db8:10{g}::1)
//!        |                  |                  |
//!   bgp-gw0 eth0 .2    bgp-gw1 eth0 .2    bgp-gw2 eth0 .2    (AS 65001, sluice)
//! ```
//!
//! What is proved: the router's FIB holds one next hop per announcing gateway for the IPv4
//! and the IPv6 VIP; `sluice bgp withdraw/announce` moves one gateway out and back; SIGTERM
//! withdraws a gateway's routes while it is still running (draining), before it exits;
//! SIGKILL takes them away within the hold time; `status` and `/metrics` show the sessions.

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    fs,
    net::SocketAddr,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use lb_userspace::{config::XdpMode, dataplane::Decap};
use sluice_tests::{
    daemon::{Daemon, Scratch},
    netns::run_cmd,
    require_root, tcp_echo_backend, EchoConn, NetNs, ServerHandle, VIP4, VIP6,
};

const PREFIX: &str = "bgp";
const GATEWAYS: usize = 3;
/// Short, so a killed gateway's routes go quickly: RFC 4271's smallest non-zero hold time.
const HOLD_SECS: u64 = 3;
const MANAGEMENT: &str = "127.0.0.1:9000";
/// FRR's run directory for this test's router (`-N`).
const PATHSPACE: &str = "bgp-rtr";
const BACKENDS: usize = 2;
/// Room for the tunnel header on every link the gateways' encapsulated packets cross.
const MTU: u32 = 1600;
/// The echo service on the backends (and the VIPs' port).
const PORT: u16 = 80;

fn router_addr4(g: usize) -> String {
    format!("198.18.{}.1", 100 + g)
}
fn gw_addr4(g: usize) -> String {
    format!("198.18.{}.2", 100 + g)
}
fn gw_addr6(g: usize) -> String {
    format!("2001:db8:10{g}::2")
}

fn backend_addr4(i: usize) -> String {
    format!("198.18.{}.2", 10 + i)
}
fn backend_addr6(i: usize) -> String {
    format!("2001:db8:{:x}::2", 0xa + i)
}

fn ip(ns: &NetNs, cmd: &str) -> Result<String> {
    ns.ip(&cmd.split_whitespace().collect::<Vec<_>>())
}

fn host(name: &str) -> Result<NetNs> {
    let ns = NetNs::create(name)?;
    for (k, v) in [
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ] {
        ns.sysctl(k, v)?;
    }
    Ok(ns)
}

/// FRR's zebra and bgpd in the router namespace; stopped and cleaned up on drop.
struct Frr {
    run_dir: std::path::PathBuf,
}

impl Frr {
    fn start(ns: &NetNs) -> Result<Frr> {
        let run_dir = std::path::Path::new("/var/run/frr").join(PATHSPACE);
        let frr = Frr {
            run_dir: run_dir.clone(),
        };
        frr.stop();
        fs::create_dir_all(&run_dir)?;
        let mut conf = String::from(
            "frr defaults datacenter\nhostname bgp-rtr\nlog stdout\n\
             router bgp 65000\n bgp router-id 198.18.100.1\n no bgp ebgp-requires-policy\n\
             bgp bestpath as-path multipath-relax\n",
        );
        for g in 0..GATEWAYS {
            let peer = gw_addr4(g);
            let _ = write!(
                conf,
                " neighbor {peer} remote-as 65001\n neighbor {peer} timers 1 {HOLD_SECS}\n\
                  neighbor {peer} timers connect 1\n"
            );
        }
        conf.push_str(" address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\n");
        conf.push_str(" address-family ipv6 unicast\n  maximum-paths 8\n");
        for g in 0..GATEWAYS {
            let _ = writeln!(conf, "  neighbor {} activate", gw_addr4(g));
        }
        conf.push_str(" exit-address-family\n");
        let path = run_dir.join("frr.conf");
        fs::write(&path, conf)?;
        run_cmd(Command::new("chown").args(["-R", "frr:frr"]).arg(&run_dir))?;
        for daemon in ["zebra", "bgpd"] {
            let bin = format!("/usr/lib/frr/{daemon}");
            ns.run(&[
                &bin,
                "-d",
                "-N",
                PATHSPACE,
                "-F",
                "traditional",
                "-f",
                path.to_str().unwrap_or_default(),
            ])
            .with_context(|| format!("starting FRR {daemon}"))?;
        }
        Ok(frr)
    }

    fn vtysh(ns: &NetNs, command: &str) -> Result<serde_json::Value> {
        let out = ns
            .command(&["vtysh", "-N", PATHSPACE, "-c", command])
            .output()
            .context("running vtysh")?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("vtysh {command}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// The next hops the router's FIB has for `prefix` (empty when it has no route).
    fn next_hops(ns: &NetNs, prefix: &str) -> Result<BTreeSet<String>> {
        let family = if prefix.contains(':') { "ipv6" } else { "ip" };
        let table = Frr::vtysh(ns, &format!("show {family} route json"))?;
        let mut out = BTreeSet::new();
        for route in table[prefix].as_array().into_iter().flatten() {
            if route["protocol"] != "bgp" {
                continue;
            }
            for nh in route["nexthops"].as_array().into_iter().flatten() {
                if nh["fib"] == true {
                    if let Some(ip) = nh["ip"].as_str() {
                        out.insert(ip.to_owned());
                    }
                }
            }
        }
        Ok(out)
    }

    fn stop(&self) {
        for daemon in ["bgpd", "zebra"] {
            let pid_file = self.run_dir.join(format!("{daemon}.pid"));
            if let Ok(pid) = fs::read_to_string(&pid_file) {
                if let Ok(pid) = pid.trim().parse::<i32>() {
                    // SAFETY: kill(2) on the pid FRR wrote for this test's daemon.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = fs::remove_dir_all(&self.run_dir);
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Lab {
    // Field order is drop order: the daemons, servers and FRR stop before their namespaces go.
    gateways: Vec<Option<Daemon>>,
    _servers: Vec<ServerHandle>,
    _decaps: Vec<Decap>,
    _frr: Frr,
    _scratch: Vec<Scratch>,
    gw_ns: Vec<NetNs>,
    _backends: Vec<NetNs>,
    client: NetNs,
    router: NetNs,
}

fn gateway_config(g: usize, scratch: &Scratch) -> String {
    format!(
        "instance = \"bgp-gw{g}\"\ninterfaces = [\"eth0\"]\nconntrack_entries = 65536\n\
         xdp_mode = \"skb\"\nshutdown_delay = \"4s\"\n\n\
         [admin]\nsocket = \"{socket}\"\n\n[management]\naddress = \"{MANAGEMENT}\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP4}:{PORT}\"\ntable_size = 251\nseed = 7\n\
         [[vip.backend]]\naddress = \"{b0}\"\n[[vip.backend]]\naddress = \"{b1}\"\n\n\
         [[vip]]\nname = \"web6\"\naddress = \"[{VIP6}]:{PORT}\"\ntable_size = 251\nseed = 7\n\
         [[vip.backend]]\naddress = \"{b6_0}\"\n[[vip.backend]]\naddress = \"{b6_1}\"\n\n\
         [bgp]\nlocal_as = 65001\nrouter_id = \"{nh4}\"\nnext_hop_v4 = \"{nh4}\"\n\
         next_hop_v6 = \"{nh6}\"\n\n\
         [[bgp.peer]]\naddress = \"{peer}\"\nas = 65000\nhold_time = {HOLD_SECS}\n",
        socket = Daemon::socket_in(scratch.path()).display(),
        nh4 = gw_addr4(g),
        nh6 = gw_addr6(g),
        peer = router_addr4(g),
        b0 = backend_addr4(0),
        b1 = backend_addr4(1),
        b6_0 = backend_addr6(0),
        b6_1 = backend_addr6(1),
    )
}

/// A veth from the router (`rtr_if`, `.1` / `::1`) to `ns` (`eth0`, `.2` / `::2`), both up;
/// `ns` routes everything through the router.
fn link(router: &NetNs, rtr_if: &str, ns: &NetNs, net4: &str, net6: &str, mtu: u32) -> Result<()> {
    ip(
        router,
        &format!(
            "link add {rtr_if} mtu {mtu} type veth peer name eth0 mtu {mtu} netns {}",
            ns.name()
        ),
    )?;
    ip(router, &format!("addr add {net4}.1/24 dev {rtr_if}"))?;
    ip(
        router,
        &format!("-6 addr add {net6}::1/64 dev {rtr_if} nodad"),
    )?;
    ip(router, &format!("link set {rtr_if} up"))?;
    ip(ns, &format!("addr add {net4}.2/24 dev eth0"))?;
    ip(ns, &format!("-6 addr add {net6}::2/64 dev eth0 nodad"))?;
    ip(ns, "link set eth0 up")?;
    ip(ns, &format!("route add default via {net4}.1"))?;
    ip(ns, &format!("-6 route add default via {net6}::1"))?;
    Ok(())
}

impl Lab {
    /// The router, a client and two backends running `sluice_decap` and an echo service on
    /// the VIPs behind it, FRR on the router, and the three gateways running sluice.
    fn build() -> Result<Lab> {
        let router = host(&format!("{PREFIX}-rtr"))?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        // ECMP by the 5-tuple, so the flows of one client spread over the gateways.
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        router.sysctl("net.ipv6.fib_multipath_hash_policy", "1")?;
        let client = host(&format!("{PREFIX}-cl"))?;
        link(&router, "cl", &client, "198.18.99", "2001:db8:99", 1500)?;
        // No TSO: segments stay MTU-sized, so each one fits the tunnel.
        client.run(&["ethtool", "-K", "eth0", "tx", "off"])?;
        let mut backends = Vec::new();
        let mut decaps = Vec::new();
        let mut servers = Vec::new();
        for i in 0..BACKENDS {
            let ns = host(&format!("{PREFIX}-b{i}"))?;
            ns.sysctl("net.ipv4.conf.all.arp_ignore", "1")?;
            ns.sysctl("net.ipv4.conf.all.arp_announce", "2")?;
            link(
                &router,
                &format!("b{i}"),
                &ns,
                &format!("198.18.{}", 10 + i),
                &format!("2001:db8:{:x}", 0xa + i),
                MTU,
            )?;
            ip(&ns, &format!("addr add {VIP4}/32 dev lo"))?;
            ip(&ns, &format!("-6 addr add {VIP6}/128 dev lo nodad"))?;
            let vips = [VIP4.into(), VIP6.into()];
            decaps.push(ns.exec(|| Decap::attach("eth0", XdpMode::Native, &vips))??);
            servers.push(tcp_echo_backend(&ns, &format!("backend-{i}"), PORT)?);
            backends.push(ns);
        }
        let mut gw_ns = Vec::new();
        for g in 0..GATEWAYS {
            let ns = host(&format!("{PREFIX}-gw{g}"))?;
            link(
                &router,
                &format!("g{g}"),
                &ns,
                &format!("198.18.{}", 100 + g),
                &format!("2001:db8:10{g}"),
                MTU,
            )?;
            // The router's IPv6 neighbour entry: BGP runs over IPv4, so nothing else would
            // resolve it before the first IPv6 flow needs it as the tunnel's next hop.
            ns.run(&[
                "ping",
                "-6",
                "-c",
                "1",
                "-W",
                "2",
                &format!("2001:db8:10{g}::1"),
            ])?;
            gw_ns.push(ns);
        }
        let frr = Frr::start(&router)?;
        let mut scratch = Vec::new();
        let mut gateways = Vec::new();
        for (g, ns) in gw_ns.iter().enumerate() {
            let dir = Scratch::create(&format!("bgp-gw{g}"))?;
            let d = Daemon::start(
                ns,
                dir.path(),
                &format!("bgp-gw{g}"),
                &gateway_config(g, &dir),
            )?;
            gateways.push(Some(d));
            scratch.push(dir);
        }
        Ok(Lab {
            gateways,
            _servers: servers,
            _decaps: decaps,
            _frr: frr,
            _scratch: scratch,
            gw_ns,
            _backends: backends,
            client,
            router,
        })
    }

    fn gw(&self, g: usize) -> &Daemon {
        self.gateways[g].as_ref().expect("gateway stopped")
    }

    /// Waits (up to `limit`) until the router's next hops for both VIPs are exactly those of
    /// `gateways`; returns how long it took.
    fn wait_for(&self, gateways: &[usize], limit: Duration) -> Result<Duration> {
        let want4: BTreeSet<String> = gateways.iter().map(|&g| gw_addr4(g)).collect();
        let want6: BTreeSet<String> = gateways.iter().map(|&g| gw_addr6(g)).collect();
        let start = Instant::now();
        loop {
            let got4 = Frr::next_hops(&self.router, &format!("{VIP4}/32"))?;
            let got6 = Frr::next_hops(&self.router, &format!("{VIP6}/128"))?;
            if got4 == want4 && got6 == want6 {
                return Ok(start.elapsed());
            }
            if start.elapsed() > limit {
                bail!(
                    "after {limit:?} the router has {got4:?} and {got6:?}, expected {want4:?} \
                     and {want6:?}; bgp summary: {}",
                    Frr::vtysh(&self.router, "show bgp summary json")
                        .map(|v| v.to_string())
                        .unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn gateways_announce_to_frr_and_withdraw_on_sigterm_sigkill_and_by_hand() -> Result<()> {
    require_root();
    let mut lab = Lab::build()?;
    // Sessions come up within FRR's 1 s connect retry and the speaker's 1 s backoff.
    lab.wait_for(&[0, 1, 2], Duration::from_secs(20))?;

    // status and /metrics say what the router has.
    let status = lab.gw(0).cli_json(&["status"])?;
    let peer = &status["bgp"]["peers"][0];
    assert_eq!(peer["peer"], "198.18.100.1:179", "{status}");
    assert_eq!(peer["state"], "established", "{status}");
    assert_eq!(
        peer["announced"],
        serde_json::json!([VIP4.to_string(), VIP6.to_string()]),
        "{status}"
    );
    let management: SocketAddr = MANAGEMENT.parse()?;
    let up = lab.gw(0).metric(
        &lab.gw_ns[0],
        management,
        "sluice_bgp_session_up",
        &[("peer", "198.18.100.1:179")],
    )?;
    assert!((up - 1.0).abs() < f64::EPSILON, "session_up {up}");
    let announced = lab.gw(0).metric(
        &lab.gw_ns[0],
        management,
        "sluice_bgp_announced_prefixes",
        &[("peer", "198.18.100.1:179")],
    )?;
    assert!(
        (announced - 2.0).abs() < f64::EPSILON,
        "announced {announced}"
    );

    // By hand: gateway 2 withdraws the IPv4 VIP only, then announces it again.
    lab.gw(2).cli_ok(&["bgp", "withdraw", "web"])?;
    let start = Instant::now();
    loop {
        let v4 = Frr::next_hops(&lab.router, &format!("{VIP4}/32"))?;
        let v6 = Frr::next_hops(&lab.router, &format!("{VIP6}/128"))?;
        if v4 == BTreeSet::from([gw_addr4(0), gw_addr4(1)]) {
            assert_eq!(v6.len(), 3, "the IPv6 VIP stays announced: {v6:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "not withdrawn: {v4:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    lab.gw(2).cli_ok(&["bgp", "announce", "web"])?;
    lab.wait_for(&[0, 1, 2], Duration::from_secs(10))?;

    // SIGTERM: gateway 0's routes go while it is still draining (shutdown_delay 4 s).
    lab.gw(0).signal(libc::SIGTERM)?;
    lab.wait_for(&[1, 2], Duration::from_secs(3))?;
    let draining = lab.gw(0).cli_json(&["status"])?;
    assert_eq!(
        draining["phase"], "draining",
        "routes withdrawn before the delay ended"
    );
    let exit = lab.gateways[0]
        .as_mut()
        .expect("running")
        .wait_exit(Duration::from_secs(20))?;
    assert!(exit.success(), "{exit}");

    // SIGKILL: the session dies with the process; the route goes within the hold time.
    lab.gw(1).signal(libc::SIGKILL)?;
    let took = lab.wait_for(&[2], Duration::from_secs(HOLD_SECS))?;
    eprintln!("SIGKILL: routes withdrawn after {took:?}");
    let _ = lab.gateways[1]
        .as_mut()
        .expect("running")
        .wait_exit(Duration::from_secs(5));
    Ok(())
}

/// New flows `vip` took on each gateway still running (0 for a stopped one).
fn new_flows(lab: &Lab, vip: &str) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for d in &lab.gateways {
        let Some(d) = d else {
            out.push(0);
            continue;
        };
        let stats = d.cli_json(&["stats"])?;
        let n = stats["vips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["vip"] == vip)
            .filter_map(|r| r["new_flows"].as_u64())
            .sum();
        out.push(n);
    }
    Ok(out)
}

/// One echo exchange on every connection; the number that failed.
fn broken(conns: &mut [EchoConn]) -> usize {
    conns
        .iter_mut()
        .map(EchoConn::exchange)
        .filter(Result::is_err)
        .count()
}

#[test]
fn flows_spread_over_ecmp_gateways_and_survive_sigterm_and_sigkill() -> Result<()> {
    require_root();
    let mut lab = Lab::build()?;
    lab.wait_for(&[0, 1, 2], Duration::from_secs(20))?;

    let v4: SocketAddr = (VIP4, PORT).into();
    let v6: SocketAddr = (VIP6, PORT).into();
    let mut conns = Vec::new();
    for k in 0..300 {
        let vip = if k % 3 == 2 { v6 } else { v4 };
        conns.push(EchoConn::open(&lab.client, vip).with_context(|| format!("connection {k}"))?);
    }
    // Every gateway took some of them, and every backend served some.
    let flows4 = new_flows(&lab, "web")?;
    let flows6 = new_flows(&lab, "web6")?;
    eprintln!("new flows per gateway: IPv4 {flows4:?}, IPv6 {flows6:?}");
    assert_eq!(flows4.iter().sum::<u64>(), 200, "{flows4:?}");
    assert_eq!(flows6.iter().sum::<u64>(), 100, "{flows6:?}");
    assert!(
        flows4.iter().chain(&flows6).all(|&n| n > 0),
        "{flows4:?} {flows6:?}"
    );
    for b in 0..BACKENDS {
        assert!(
            conns.iter().any(|c| c.backend == b),
            "backend {b} served none"
        );
    }

    // SIGTERM: withdrawn first; the flows the router moves keep their backend.
    lab.gw(0).signal(libc::SIGTERM)?;
    lab.wait_for(&[1, 2], Duration::from_secs(3))?;
    let after_withdrawal = broken(&mut conns);
    lab.gateways[0]
        .as_mut()
        .expect("running")
        .wait_exit(Duration::from_secs(20))?;
    lab.gateways[0] = None;
    let after_exit = broken(&mut conns);
    eprintln!("SIGTERM: broken connections {after_withdrawal} after the withdrawal, {after_exit} after the exit");
    assert_eq!((after_withdrawal, after_exit), (0, 0));

    // SIGKILL: the session ends with the process; what the router still sends there meets
    // the dataplane the daemon left attached, and then the route is gone.
    lab.gw(1).signal(libc::SIGKILL)?;
    let took = lab.wait_for(&[2], Duration::from_secs(HOLD_SECS))?;
    let after_kill = broken(&mut conns);
    eprintln!("SIGKILL: routes gone after {took:?}; broken connections {after_kill}");
    assert_eq!(after_kill, 0);
    Ok(())
}
