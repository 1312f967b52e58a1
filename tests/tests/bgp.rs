//! The BGP speaker against a real router: FRR (`zebra` + `bgpd`, `maximum-paths`) in a
//! namespace, peering with three gateways that run sluice with the same VIPs (the lab is
//! `sluice_tests::bgp_lab`, shared with the BIRD test in `bgp_bird.rs`).
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

use anyhow::{Context as _, Result};
use sluice_tests::{
    bgp_lab::{
        broken, gw_addr4, vip4_prefix, vip6_prefix, GatewayExtra, Lab, Router, GATEWAYS, HOLD_SECS,
        MANAGEMENT,
    },
    netns::run_cmd,
    require_root, NetNs, VIP4, VIP6,
};

const PREFIX: &str = "bgp";
/// FRR's run directory for this test's router (`-N`).
const PATHSPACE: &str = "bgp-rtr";

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
    fn fib_next_hops(ns: &NetNs, prefix: &str) -> Result<BTreeSet<String>> {
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

impl Router for Frr {
    fn next_hops(&self, ns: &NetNs, prefix: &str) -> Result<BTreeSet<String>> {
        Frr::fib_next_hops(ns, prefix)
    }

    fn summary(&self, ns: &NetNs) -> String {
        Frr::vtysh(ns, "show bgp summary json")
            .map(|v| v.to_string())
            .unwrap_or_default()
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lab() -> Result<Lab<Frr>> {
    Lab::build(PREFIX, Frr::start, |_| GatewayExtra::default())
}

#[test]
fn gateways_announce_to_frr_and_withdraw_on_sigterm_sigkill_and_by_hand() -> Result<()> {
    require_root();
    let mut lab = lab()?;
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
        let v4 = Frr::fib_next_hops(&lab.router, &vip4_prefix())?;
        let v6 = Frr::fib_next_hops(&lab.router, &vip6_prefix())?;
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
    // The withdrawal comes first and the drain right after it, so a fast router may see it
    // a moment before the phase changes; either way before the 4 s delay ends.
    assert!(
        draining["phase"] == "serving" || draining["phase"] == "draining",
        "routes withdrawn only at {}",
        draining["phase"]
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

#[test]
fn flows_spread_over_ecmp_gateways_and_survive_sigterm_and_sigkill() -> Result<()> {
    require_root();
    let mut lab = lab()?;
    lab.wait_for(&[0, 1, 2], Duration::from_secs(20))?;
    let mut conns = lab.open_spread_connections()?;

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
