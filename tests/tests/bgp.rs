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
    fs,
    net::{IpAddr, SocketAddr},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sluice_tests::{
    daemon::{Daemon, Scratch},
    netns::run_cmd,
    require_root, NetNs, VIP4, VIP6,
};

const PREFIX: &str = "bgp";
const GATEWAYS: usize = 3;
/// Short, so a killed gateway's routes go quickly: RFC 4271's smallest non-zero hold time.
const HOLD_SECS: u64 = 3;
const MANAGEMENT: &str = "127.0.0.1:9000";
/// FRR's run directory for this test's router (`-N`).
const PATHSPACE: &str = "bgp-rtr";

fn router_addr4(g: usize) -> String {
    format!("198.18.{}.1", 100 + g)
}
fn gw_addr4(g: usize) -> String {
    format!("198.18.{}.2", 100 + g)
}
fn router_addr6(g: usize) -> String {
    format!("2001:db8:10{g}::1")
}
fn gw_addr6(g: usize) -> String {
    format!("2001:db8:10{g}::2")
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
            conf.push_str(&format!(
                " neighbor {peer} remote-as 65001\n neighbor {peer} timers 1 {HOLD_SECS}\n\
                  neighbor {peer} timers connect 1\n"
            ));
        }
        conf.push_str(" address-family ipv4 unicast\n  maximum-paths 8\n exit-address-family\n");
        conf.push_str(" address-family ipv6 unicast\n  maximum-paths 8\n");
        for g in 0..GATEWAYS {
            conf.push_str(&format!("  neighbor {} activate\n", gw_addr4(g)));
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
    // Field order is drop order: the daemons and FRR stop before their namespaces go.
    gateways: Vec<Option<Daemon>>,
    frr: Frr,
    _scratch: Vec<Scratch>,
    gw_ns: Vec<NetNs>,
    router: NetNs,
}

fn gateway_config(g: usize, scratch: &Scratch) -> String {
    format!(
        "instance = \"bgp-gw{g}\"\ninterfaces = [\"eth0\"]\nconntrack_entries = 65536\n\
         shutdown_delay = \"4s\"\n\n\
         [admin]\nsocket = \"{socket}\"\n\n[management]\naddress = \"{MANAGEMENT}\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP4}:80\"\ntable_size = 251\nseed = 7\n\
         [[vip.backend]]\naddress = \"198.18.10.2\"\n\
         [[vip.backend]]\naddress = \"198.18.11.2\"\n\n\
         [[vip]]\nname = \"web6\"\naddress = \"[{VIP6}]:80\"\ntable_size = 251\nseed = 7\n\
         [[vip.backend]]\naddress = \"198.18.10.2\"\n\n\
         [bgp]\nlocal_as = 65001\nrouter_id = \"{nh4}\"\nnext_hop_v4 = \"{nh4}\"\n\
         next_hop_v6 = \"{nh6}\"\n\n\
         [[bgp.peer]]\naddress = \"{peer}\"\nas = 65000\nhold_time = {HOLD_SECS}\n",
        socket = Daemon::socket_in(scratch.path()).display(),
        nh4 = gw_addr4(g),
        nh6 = gw_addr6(g),
        peer = router_addr4(g),
    )
}

impl Lab {
    fn build() -> Result<Lab> {
        let router = host(&format!("{PREFIX}-rtr"))?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        router.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        router.sysctl("net.ipv4.fib_multipath_hash_policy", "1")?;
        router.sysctl("net.ipv6.fib_multipath_hash_policy", "1")?;
        let mut gw_ns = Vec::new();
        for g in 0..GATEWAYS {
            let ns = host(&format!("{PREFIX}-gw{g}"))?;
            ip(
                &router,
                &format!("link add g{g} type veth peer name eth0 netns {}", ns.name()),
            )?;
            ip(
                &router,
                &format!("addr add {}/24 dev g{g}", router_addr4(g)),
            )?;
            ip(
                &router,
                &format!("-6 addr add {}/64 dev g{g} nodad", router_addr6(g)),
            )?;
            ip(&router, &format!("link set g{g} up"))?;
            ip(&ns, &format!("addr add {}/24 dev eth0", gw_addr4(g)))?;
            ip(
                &ns,
                &format!("-6 addr add {}/64 dev eth0 nodad", gw_addr6(g)),
            )?;
            ip(&ns, "link set eth0 up")?;
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
            frr,
            _scratch: scratch,
            gw_ns,
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
    assert_eq!(up, 1.0);
    let announced = lab.gw(0).metric(
        &lab.gw_ns[0],
        management,
        "sluice_bgp_announced_prefixes",
        &[("peer", "198.18.100.1:179")],
    )?;
    assert_eq!(announced, 2.0);

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
