//! The BGP speaker against BIRD 2 (`merge paths on` into the kernel table of the router
//! namespace, `fib_multipath_hash_policy = 1`), in the lab of `sluice_tests::bgp_lab` that the
//! FRR test (bgp.rs) also uses: three gateways running sluice with the same VIPs.
//!
//! What is proved, each through BIRD's own view (`birdc show route ... all`, `show protocols`)
//! and the kernel table BIRD writes:
//! - every gateway's route for the IPv4 and the IPv6 VIP arrives, and BIRD merges them into one
//!   multipath kernel route with one next hop per gateway; 300 connections spread over the
//!   gateways and reach both backends; SIGTERM withdraws a gateway's routes first and breaks
//!   none of them, nor does SIGKILL (the routes go within the hold time);
//! - `[bgp] graceful_shutdown`: on SIGTERM the routes come back with the `GRACEFUL_SHUTDOWN`
//!   community (65535:0), which BIRD's import filter turns into `LOCAL_PREF` 0 as RFC 8326 asks,
//!   so the kernel route loses that gateway while its route is still there and the daemon is
//!   still `serving`; only then are they withdrawn, and only then does draining start;
//! - TCP MD5 (`password`, `password_file`): sessions whose key matches BIRD's come up; one
//!   with another key does not (BIRD shows it not established, `sluice status` says why), and
//!   no key is ever printed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use sluice_tests::{
    bgp_lab::{
        broken, gw_addr4, gw_addr6, ip, vip4_prefix, vip6_prefix, GatewayExtra, Lab, Router,
        GATEWAYS, HOLD_SECS, ROUTER_AS,
    },
    require_root, ChildGuard, NetNs,
};

const PREFIX: &str = "bd";
/// RFC 8326's well-known community as BIRD prints it.
const GSHUT: &str = "(65535,0)";
/// The TCP MD5 key BIRD has for every gateway.
const KEY: &str = "bd-md5-key-7f3a";

/// BIRD 2 in the router namespace, in the foreground as this test's child (so it is reaped);
/// stopped and its files removed on drop.
struct Bird {
    child: ChildGuard,
    dir: PathBuf,
}

impl Bird {
    /// BIRD as an RFC 8326 router: routes carrying `GRACEFUL_SHUTDOWN` get `LOCAL_PREF` 0. It
    /// only listens (`passive`: the speaker connects, never accepts), with `password` for
    /// every gateway when given.
    fn start(ns: &NetNs, password: Option<&str>) -> Result<Bird> {
        let dir = PathBuf::from(format!("/run/sluice-test-{PREFIX}-bird"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let mut conf = format!(
            "router id 198.18.100.1;\nlog \"{log}\" all;\n\
             protocol device {{ scan time 1; }}\n\
             protocol kernel kernel4 {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n\
             protocol kernel kernel6 {{ ipv6 {{ import none; export all; }}; merge paths on; }}\n\
             filter rfc8326 {{\n  if (65535, 0) ~ bgp_community then bgp_local_pref = 0;\n  accept;\n}}\n\
             template bgp sluice_gw {{\n  local as {ROUTER_AS};\n  passive on;\n\
               hold time {HOLD_SECS};\n  keepalive time 1;\n\
               ipv4 {{ import filter rfc8326; export none; }};\n\
               ipv6 {{ import filter rfc8326; export none; }};\n}}\n",
            log = dir.join("bird.log").display()
        );
        for g in 0..GATEWAYS {
            let _ = write!(
                conf,
                "protocol bgp gw{g} from sluice_gw {{ neighbor {} as 65001; ",
                gw_addr4(g)
            );
            if let Some(p) = password {
                let _ = write!(conf, "password \"{p}\"; ");
            }
            conf.push_str("}\n");
        }
        let path = dir.join("bird.conf");
        fs::write(&path, conf)?;
        let socket = dir.join("bird.ctl");
        let child = ns
            .spawn(&[
                "bird",
                "-f",
                "-c",
                path.to_str().unwrap_or_default(),
                "-s",
                socket.to_str().unwrap_or_default(),
            ])
            .context("starting BIRD")?;
        let bird = Bird { child, dir };
        let start = Instant::now();
        while bird.birdc("show status").is_err() {
            if start.elapsed() > Duration::from_secs(5) {
                bail!(
                    "BIRD did not open {} within 5s; its log: {}",
                    socket.display(),
                    fs::read_to_string(bird.dir.join("bird.log")).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(bird)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    /// `birdc -s <socket> <command>`'s output.
    fn birdc(&self, command: &str) -> Result<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(self.socket())
            .args(command.split_whitespace())
            .output()
            .context("running birdc")?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // birdc also exits 1 for an answer that is an error code, such as "Network not found".
        if !out.status.success() && !text.starts_with("BIRD ") {
            bail!(
                "birdc {command}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(text)
    }

    /// BIRD's routes for `prefix` (`show route <prefix> all`), by next hop.
    fn routes(&self, prefix: &str) -> Result<BTreeMap<String, BirdRoute>> {
        let text = self.birdc(&format!("show route {prefix} all"))?;
        if text.contains("Network not found") {
            return Ok(BTreeMap::new());
        }
        let mut out = BTreeMap::new();
        let mut current: Option<BirdRoute> = None;
        let mut via = None;
        for line in text.lines() {
            let t = line.trim();
            if t.contains("unicast [") {
                if let (Some(r), Some(v)) = (current.take(), via.take()) {
                    out.insert(v, r);
                }
                current = Some(BirdRoute::default());
            } else if let Some(rest) = t.strip_prefix("via ") {
                via = rest.split_whitespace().next().map(str::to_owned);
            } else if let (Some(r), Some(c)) = (current.as_mut(), t.strip_prefix("BGP.community:"))
            {
                r.communities = c.split_whitespace().map(str::to_owned).collect();
            } else if let (Some(r), Some(p)) = (current.as_mut(), t.strip_prefix("BGP.local_pref:"))
            {
                r.local_pref = p.trim().parse().ok();
            }
        }
        if let (Some(r), Some(v)) = (current, via) {
            out.insert(v, r);
        }
        Ok(out)
    }

    /// The protocols (gw0, gw1, ...) BIRD shows as `Established`.
    fn established(&self) -> Result<BTreeSet<String>> {
        let text = self.birdc("show protocols")?;
        Ok(text
            .lines()
            .filter(|l| l.contains("BGP") && l.trim_end().ends_with("Established"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect())
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        let _ = self.child.terminate(ChildGuard::GRACE);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct BirdRoute {
    communities: Vec<String>,
    local_pref: Option<u32>,
}

/// The next hops of the kernel route BIRD wrote for `prefix` (`proto bird`), one per path of
/// a multipath route.
fn kernel_next_hops(ns: &NetNs, prefix: &str) -> Result<BTreeSet<String>> {
    let family = if prefix.contains(':') { "-6" } else { "-4" };
    let out = ip(
        ns,
        &format!("{family} -j route show exact {prefix} proto bird"),
    )?;
    let routes: serde_json::Value = serde_json::from_str(&out).with_context(|| out.clone())?;
    let mut hops = BTreeSet::new();
    for r in routes.as_array().into_iter().flatten() {
        if let Some(g) = r["gateway"].as_str() {
            hops.insert(g.to_owned());
        }
        for nh in r["nexthops"].as_array().into_iter().flatten() {
            if let Some(g) = nh["gateway"].as_str() {
                hops.insert(g.to_owned());
            }
        }
    }
    Ok(hops)
}

impl Router for Bird {
    /// What the kernel forwards by, and only once `birdc show route` agrees: the next hops
    /// of BIRD's routes for `prefix` that are as preferred as the best one.
    fn next_hops(&self, ns: &NetNs, prefix: &str) -> Result<BTreeSet<String>> {
        let kernel = kernel_next_hops(ns, prefix)?;
        let routes = self.routes(prefix)?;
        let best = routes.values().filter_map(|r| r.local_pref).max();
        let bird: BTreeSet<String> = routes
            .iter()
            .filter(|(_, r)| r.local_pref == best)
            .map(|(v, _)| v.clone())
            .collect();
        if bird == kernel {
            Ok(kernel)
        } else {
            Ok(BTreeSet::from([format!(
                "birdc {bird:?} != kernel {kernel:?}"
            )]))
        }
    }

    fn summary(&self, _: &NetNs) -> String {
        self.birdc("show protocols").unwrap_or_default()
    }
}

fn lab(password: Option<&'static str>, extra: impl Fn(usize) -> GatewayExtra) -> Result<Lab<Bird>> {
    Lab::build(PREFIX, |ns| Bird::start(ns, password), extra)
}

#[test]
fn bird_merges_the_gateways_routes_and_flows_survive_sigterm_and_sigkill() -> Result<()> {
    require_root();
    let mut lab = lab(None, |_| GatewayExtra::default())?;
    lab.wait_for(&[0, 1, 2], Duration::from_secs(20))?;
    // birdc has one route per gateway for each VIP, with its next hop, no community.
    for (prefix, addr) in [
        (vip4_prefix(), gw_addr4 as fn(usize) -> String),
        (vip6_prefix(), gw_addr6),
    ] {
        let routes = lab.routerd.routes(&prefix)?;
        let want: BTreeMap<String, BirdRoute> = (0..GATEWAYS)
            .map(|g| {
                (
                    addr(g),
                    BirdRoute {
                        communities: vec![],
                        local_pref: Some(100),
                    },
                )
            })
            .collect();
        assert_eq!(routes, want, "{prefix}");
    }
    let mut conns = lab.open_spread_connections()?;

    // SIGTERM: withdrawn first; the flows the router moves keep their backend.
    lab.gw(0).signal(libc::SIGTERM)?;
    let took = lab.wait_for(&[1, 2], Duration::from_secs(3))?;
    let phase = lab.gw(0).cli_json(&["status"])?["phase"].clone();
    let after_withdrawal = broken(&mut conns);
    lab.gateways[0]
        .as_mut()
        .expect("running")
        .wait_exit(Duration::from_secs(20))?;
    lab.gateways[0] = None;
    let after_exit = broken(&mut conns);
    eprintln!(
        "SIGTERM: routes withdrawn after {took:?} (gateway {phase}); broken connections \
         {after_withdrawal} after the withdrawal, {after_exit} after the exit"
    );
    // The withdrawal comes first and the drain right after it, so the router may see it a
    // moment before the phase changes; either way before the 4 s delay ends.
    assert!(
        phase == "serving" || phase == "draining",
        "routes withdrawn only at {phase}"
    );
    assert_eq!((after_withdrawal, after_exit), (0, 0));

    // SIGKILL: the session ends with the process; the route goes within the hold time.
    lab.gw(1).signal(libc::SIGKILL)?;
    let took = lab.wait_for(&[2], Duration::from_secs(HOLD_SECS))?;
    let after_kill = broken(&mut conns);
    eprintln!("SIGKILL: routes gone after {took:?}; broken connections {after_kill}");
    assert_eq!(after_kill, 0);
    Ok(())
}

#[test]
fn graceful_shutdown_community_reaches_bird_before_the_withdrawal() -> Result<()> {
    require_root();
    let mut lab = lab(None, |_| GatewayExtra {
        bgp: "graceful_shutdown = \"3s\"\n".into(),
        ..GatewayExtra::default()
    })?;
    lab.wait_for(&[0, 1, 2], Duration::from_secs(20))?;
    let mut conns = lab.open_spread_connections()?;

    lab.gw(0).signal(libc::SIGTERM)?;
    let signalled = Instant::now();
    // Gateway 0's routes come back with 65535:0, BIRD lowers their LOCAL_PREF to 0 and the
    // kernel route leaves gateway 0 out, while gateway 0 is still serving.
    let took = lab.wait_for(&[1, 2], Duration::from_secs(2))?;
    let phase = lab.gw(0).cli_json(&["status"])?["phase"].clone();
    for (prefix, hop) in [(vip4_prefix(), gw_addr4(0)), (vip6_prefix(), gw_addr6(0))] {
        let routes = lab.routerd.routes(&prefix)?;
        assert_eq!(
            routes.get(&hop),
            Some(&BirdRoute {
                communities: vec![GSHUT.into()],
                local_pref: Some(0),
            }),
            "{prefix}: {routes:?}"
        );
    }
    assert_eq!(
        phase, "serving",
        "GRACEFUL_SHUTDOWN is announced before the drain"
    );
    eprintln!("GRACEFUL_SHUTDOWN: gateway 0 left the kernel route after {took:?}, still serving");

    // Then the withdrawal (after the 3 s), and only then the drain.
    let start = Instant::now();
    loop {
        let v4 = lab.routerd.routes(&vip4_prefix())?;
        let v6 = lab.routerd.routes(&vip6_prefix())?;
        if !v4.contains_key(&gw_addr4(0)) && !v6.contains_key(&gw_addr6(0)) {
            break;
        }
        if let Some(r) = v4.get(&gw_addr4(0)) {
            assert_eq!(r.communities, [GSHUT], "until withdrawn");
        }
        assert!(
            start.elapsed() < Duration::from_secs(6),
            "not withdrawn: {v4:?} {v6:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let withdrawn_after = signalled.elapsed();
    // The drain follows the withdrawal (which the router may see a moment before the phase
    // changes) and lasts shutdown_delay, 4 s.
    let drain_start = Instant::now();
    let phase = loop {
        let phase = lab.gw(0).cli_json(&["status"])?["phase"].clone();
        if phase != "serving" || drain_start.elapsed() > Duration::from_secs(2) {
            break phase;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let after_withdrawal = broken(&mut conns);
    eprintln!(
        "GRACEFUL_SHUTDOWN: withdrawn {withdrawn_after:?} after SIGTERM, then {phase}; \
         broken connections {after_withdrawal}"
    );
    assert!(
        withdrawn_after >= Duration::from_secs(3),
        "withdrawn before graceful_shutdown ended: {withdrawn_after:?}"
    );
    assert_eq!(phase, "draining");
    lab.gateways[0]
        .as_mut()
        .expect("running")
        .wait_exit(Duration::from_secs(20))?;
    lab.gateways[0] = None;
    let after_exit = broken(&mut conns);
    eprintln!("GRACEFUL_SHUTDOWN: broken connections {after_exit} after the exit");
    assert_eq!((after_withdrawal, after_exit), (0, 0));
    Ok(())
}

#[test]
fn tcp_md5_sessions_come_up_with_birds_key_and_not_with_another() -> Result<()> {
    require_root();
    let key_dir = tempfile::tempdir()?;
    let key_file = key_dir.path().join("router.key");
    fs::write(&key_file, format!("{KEY}\n"))?;
    let file = key_file.display().to_string();
    // Gateway 0 reads the key from a file, gateway 1 has another key, gateway 2 has it inline.
    let lab = lab(Some(KEY), move |g| GatewayExtra {
        peer: match g {
            0 => format!("password_file = \"{file}\"\n"),
            1 => "password = \"not-the-routers-key\"\n".into(),
            _ => format!("password = \"{KEY}\"\n"),
        },
        ..GatewayExtra::default()
    })?;
    lab.wait_for(&[0, 2], Duration::from_secs(20))?;
    assert_eq!(
        lab.routerd.established()?,
        BTreeSet::from(["gw0".to_owned(), "gw2".to_owned()])
    );

    // Gateway 1's SYNs carry a signature BIRD's kernel rejects: no session, and its status
    // says so once the connect attempt gives up.
    let start = Instant::now();
    let status = loop {
        let status = lab.gw(1).cli_json(&["status"])?;
        if status["bgp"]["peers"][0]["last_error"].is_string() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{status}");
        thread::sleep(Duration::from_millis(200));
    };
    let peer = &status["bgp"]["peers"][0];
    eprintln!("wrong key: {peer}");
    assert_ne!(peer["state"], "established", "{peer}");
    assert_eq!(
        peer["last_error"],
        "connecting: no answer within 5s; with TCP MD5 on, a router that has another key (or \
         none) for this neighbour drops the connection without a word: check the password on \
         both sides"
    );
    assert_eq!(peer["announced"], serde_json::json!([]));
    assert!(!lab.routerd.established()?.contains("gw1"));
    assert_eq!(
        kernel_next_hops(&lab.router, &vip4_prefix())?,
        BTreeSet::from([gw_addr4(0), gw_addr4(2)])
    );

    // No key is ever printed: not in status, not in the logs.
    for (g, d) in lab.gateways.iter().enumerate() {
        let d = d.as_ref().expect("running");
        let text = format!("{}{}", d.cli_ok(&["status"])?, d.log_text());
        for secret in [KEY, "not-the-routers-key"] {
            assert!(!text.contains(secret), "gateway {g} printed a key");
        }
    }
    Ok(())
}
