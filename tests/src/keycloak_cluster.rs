//! Two clustered Keycloak nodes behind sluice (issue 20, item 7): Debian's `PostgreSQL` in the
//! gateway namespace (the nodes share its database and find each other through it, Keycloak's
//! default `jdbc-ping` discovery), one node on each backend, sluice health-checking each node's
//! `/health/ready` on its management port 9000, clients logging in with passwords through the
//! edge listener.
//!
//! ```text
//!  client 198.18.0.2 (+ .11-.14) ── gwc ┐ gateway: sluice (edge :8443), PostgreSQL :5432
//!                                       ├─ gwb0 ── Keycloak node 0 198.18.10.2
//!                                       └─ gwb1 ── Keycloak node 1 198.18.11.2
//! ```

use std::fmt::Write as _;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::{
    certs::TestPki,
    daemon::{Daemon, Scratch},
    edge_lab::Listener,
    gateway_config::web_gateway,
    keycloak::{Installation, Keycloak, Spec, HTTP_PORT, MANAGEMENT_PORT},
    keycloak_edge::{access_log_options, realm},
    netns::{run_cmd, ChildGuard, NetNs},
    topology::{backend_addr4, gw_backend_addr4, GW_CLIENT_IFNAME},
    Topology,
};

pub const SERVER_NAME: &str = "kc.test";
pub const EDGE_PORT: u16 = 8443;
pub const NODES: usize = 2;
/// The user of the realm both nodes import ([`realm`]).
pub use crate::keycloak_edge::{PASSWORD, USER};
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PG_PORT: u16 = 5432;

/// `PostgreSQL` running as the `postgres` user in a namespace, its data in a scratch directory.
pub struct Postgres {
    guard: ChildGuard,
    log: PathBuf,
}

impl Postgres {
    /// `initdb` (trust authentication: only the test network reaches it), start listening on
    /// every address of `ns`, create the `keycloak` database and user.
    pub fn start(ns: &NetNs, dir: &Path) -> Result<Postgres> {
        let data = dir.join("pgdata");
        fs::create_dir_all(&data)?;
        run_cmd(
            std::process::Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir),
        )?;
        let data_s = data.to_str().context("non-UTF-8 path")?;
        run_cmd(std::process::Command::new("runuser").args([
            "-u",
            "postgres",
            "--",
            &format!("{PG_BIN}/initdb"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-D",
            data_s,
        ]))
        .context("initdb (is Debian's postgresql installed? `cargo xtask setup` installs it)")?;
        // initdb trusts only loopback; the nodes connect over their links.
        let hba = data.join("pg_hba.conf");
        let mut rules = fs::read_to_string(&hba)?;
        rules.push_str("host all all 0.0.0.0/0 trust\n");
        fs::write(&hba, rules)?;
        let log = dir.join("postgres.log");
        let out = fs::File::create(&log)?;
        let child = ns
            .command(&[
                "runuser",
                "-u",
                "postgres",
                "--",
                &format!("{PG_BIN}/postgres"),
                "-D",
                data_s,
                "-c",
                "listen_addresses=*",
                "-c",
                &format!("port={PG_PORT}"),
                "-c",
                &format!("unix_socket_directories={}", dir.display()),
            ])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting postgres")?;
        let pg = Postgres {
            guard: ChildGuard::new(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_mins(1);
        let psql = |sql: &str| {
            ns.run(&[
                "runuser",
                "-u",
                "postgres",
                "--",
                &format!("{PG_BIN}/psql"),
                "-h",
                "127.0.0.1",
                "-p",
                &PG_PORT.to_string(),
                "-U",
                "postgres",
                "-c",
                sql,
            ])
        };
        while psql("select 1").is_err() {
            if Instant::now() > deadline {
                bail!("PostgreSQL did not start:\n{}", pg.log_text());
            }
            thread::sleep(Duration::from_millis(200));
        }
        psql("create user keycloak password 'keycloak'")?;
        psql("create database keycloak owner keycloak")?;
        Ok(pg)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn id(&self) -> Option<u32> {
        self.guard.id()
    }
}

/// Node `i`'s Keycloak: the shared database, the cluster bound to its own link address, the
/// forwarded headers from sluice, and Keycloak's own graceful shutdown (`shutdown-delay`:
/// not ready at once, still serving, so a health-checking balancer moves traffic first).
/// Its cluster node name is [`node_name`]`(i)`, which Keycloak appends to `AUTH_SESSION_ID` as
/// the route of the sessions it owns; its access log goes to its output.
pub fn node_spec(i: usize) -> Spec {
    let mut spec = Spec {
        build: "postgres".into(),
        options: vec![
            "--http-enabled=true".into(),
            format!("--http-port={HTTP_PORT}"),
            "--hostname-strict=false".into(),
            "--proxy-headers=xforwarded".into(),
            format!("--proxy-trusted-addresses={}", gw_backend_addr4(i)),
            format!(
                "--db-url=jdbc:postgresql://{}:{PG_PORT}/keycloak",
                gw_backend_addr4(i)
            ),
            "--db-username=keycloak".into(),
            "--db-password=keycloak".into(),
            format!("--cache-embedded-network-bind-address={}", backend_addr4(i)),
            // Longer than sluice's interval x fall (3 s), so sluice takes the node out while it
            // still serves. Not shorter checks instead: a node's readiness dips for about a
            // second when its peer leaves the cluster, and two such dips would leave no node.
            "--shutdown-delay=8s".into(),
            "--shutdown-timeout=10s".into(),
            "--import-realm".into(),
            // Keycloak 26 refuses `-Djboss.node.name` and names this option instead; without
            // it the node name (and so the route) is generated at each start.
            format!("--spi-cache-embedded-default-node-name={}", node_name(i)),
            // The default, said out loud: sticky sessions on AUTH_SESSION_ID need it.
            "--spi-sticky-session-encoder-infinispan-should-attach-route=true".into(),
        ],
        realms: vec![realm()],
    };
    spec.options.extend(access_log_options());
    spec
}

/// Node `i`'s cluster node name: the route suffix of the `AUTH_SESSION_ID` it sets.
pub fn node_name(i: usize) -> String {
    format!("kc-{i}")
}

/// Fields drop in order: Keycloak nodes, sluice, `PostgreSQL`, then the namespaces.
pub struct Cluster {
    pub nodes: Vec<Option<Keycloak>>,
    pub daemon: Daemon,
    pub postgres: Postgres,
    pub pki: TestPki,
    pub install: Installation,
    pub topo: Topology,
    pub scratch: Scratch,
}

impl Cluster {
    pub fn start(prefix: &str) -> Cluster {
        Cluster::start_with(prefix, &[])
    }

    /// [`Cluster::start`] with more `[[edge]]` settings (routes) on the listener.
    pub fn start_with(prefix: &str, listener_settings: &[String]) -> Cluster {
        let install = Installation::find().unwrap_or_else(|err| panic!("{err:#}"));
        let topo = Topology::build(prefix, NODES).expect("build topology");
        let scratch = Scratch::create(prefix).expect("scratch directory");
        let pki = TestPki::generate(&scratch.path().join("pki"), &[SERVER_NAME])
            .expect("generate the test PKI");
        let postgres = Postgres::start(topo.gateway(), &scratch.path().join("pg"))
            .unwrap_or_else(|err| panic!("PostgreSQL: {err:#}"));
        let instance = format!("test-{prefix}");
        let health_check = format!(
            "\n[vip.health_check]\nkind = \"http\"\nport = {MANAGEMENT_PORT}\n\
             path = \"/health/ready\"\ninterval = \"1s\"\ntimeout = \"1s\"\nrise = 2\nfall = 3\n"
        );
        let mut text = web_gateway(
            &instance,
            &[GW_CLIENT_IFNAME],
            scratch.path(),
            "127.0.0.1:9019",
            &health_check,
            NODES,
        );
        let mut listener = Listener::v4("kc", EDGE_PORT);
        listener.client_auth = "none";
        listener.formats = &[];
        listener.settings = vec![
            "forwarded_headers = [\"x-forwarded\"]".into(),
            "connect_timeout = \"5s\"".into(),
            "response_timeout = \"120s\"".into(),
        ];
        listener.settings.extend(listener_settings.iter().cloned());
        text.push_str(&listener.toml(&pki));
        let daemon = Daemon::start(topo.gateway(), scratch.path(), &instance, &text)
            .expect("start sluice run");
        let mut cluster = Cluster {
            nodes: Vec::new(),
            daemon,
            postgres,
            pki,
            install,
            topo,
            scratch,
        };
        // One after the other: both would create the schema in the empty database at once.
        for i in 0..NODES {
            let node = cluster.spawn_node(i);
            cluster.nodes.push(Some(node));
            cluster.wait_node_ready(i);
        }
        for i in 0..NODES {
            assert!(
                cluster.wait_backend_state(i, "up"),
                "sluice does not report node {i} up once it is ready\n{}",
                cluster.logs()
            );
        }
        cluster
    }

    /// Node `i`'s output of its latest start (its access log included).
    pub fn node_log(&self, i: usize) -> PathBuf {
        self.node_dir(i).join("keycloak.log")
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.scratch.path().join(format!("node-{i}"))
    }

    pub fn spawn_node(&self, i: usize) -> Keycloak {
        let dir = self.node_dir(i);
        fs::create_dir_all(&dir).expect("node directory");
        Keycloak::spawn(&self.topo.backends()[i], &dir, &self.install, &node_spec(i))
            .unwrap_or_else(|err| panic!("Keycloak node {i}: {err:#}"))
    }

    pub fn wait_node_ready(&mut self, i: usize) {
        let ns = &self.topo.backends()[i];
        let node = self.nodes[i].as_mut().expect("node running");
        let took = node
            .wait_ready(ns)
            .unwrap_or_else(|err| panic!("Keycloak node {i}: {err:#}"));
        eprintln!("Keycloak node {i} ready after {:.1} s", took.as_secs_f64());
    }

    /// sluice's `state` of node `i`'s backend (`up`, `draining`, `down`).
    pub fn backend_state(&self, i: usize) -> Result<String> {
        let addr = backend_addr4(i).to_string();
        let rows = self.daemon.cli_json(&["backends"])?;
        let row = rows
            .as_array()
            .and_then(|r| r.iter().find(|r| r["address"] == addr.as_str()))
            .with_context(|| format!("no backend row for {addr}: {rows}"))?;
        Ok(row["state"].as_str().unwrap_or("?").to_owned())
    }

    /// Waits up to a minute for sluice to report node `i`'s backend in `state`.
    pub fn wait_backend_state(&self, i: usize, state: &str) -> bool {
        let deadline = Instant::now() + Duration::from_mins(1);
        while Instant::now() < deadline {
            if self.backend_state(i).is_ok_and(|s| s == state) {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn logs(&self) -> String {
        let mut text = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(node) = node {
                let _ = writeln!(text, "Keycloak node {i}:\n{}", node.log_tail(40));
            }
        }
        let _ = writeln!(text, "sluice:\n{}", self.daemon.log_text());
        text
    }
}

impl Drop for Cluster {
    /// Stops the nodes together: each waits out its `shutdown-delay` before it exits, so one
    /// after the other (the fields' own drops) would add those waits up.
    fn drop(&mut self) {
        for node in self.nodes.iter().flatten() {
            if let Err(err) = node.begin_stop() {
                eprintln!("warning: could not signal a Keycloak node: {err:#}");
            }
        }
        let deadline = Instant::now() + Duration::from_mins(1);
        while Instant::now() < deadline
            && self
                .nodes
                .iter_mut()
                .flatten()
                .any(|node| !node.has_exited().unwrap_or(true))
        {
            thread::sleep(Duration::from_millis(100));
        }
        // Reaps the exited ones; a node still running is stopped as `Keycloak::stop` does.
        for node in self.nodes.iter_mut().flatten() {
            if let Err(err) = node.stop() {
                eprintln!("warning: could not stop a Keycloak node: {err:#}");
            }
        }
    }
}

/// One password login through sluice from `source` (an address of the client namespace
/// `client_ns`, named so load threads need not borrow the topology); `ca` is the test root.
pub fn login(client_ns: &str, ca: &Path, source: Ipv4Addr) -> Result<()> {
    let resolve = format!(
        "{SERVER_NAME}:{EDGE_PORT}:{}",
        crate::topology::GW_CLIENT_ADDR4
    );
    let url =
        format!("https://{SERVER_NAME}:{EDGE_PORT}/realms/sluice/protocol/openid-connect/token");
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            client_ns,
            "curl",
            "-sS",
            "--max-time",
            "60",
        ])
        .args(["--interface", &source.to_string(), "--resolve", &resolve])
        .arg("--cacert")
        .arg(ca)
        .args(["-w", "\n%{http_code}", "-d", "grant_type=password", "-d"])
        .args(["client_id=app", "-d", &format!("username={USER}"), "-d"])
        .arg(format!("password={PASSWORD}"))
        .arg(&url)
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    if !out.status.success() || code.trim() != "200" || !body.contains("\"access_token\"") {
        bail!(
            "curl {}: answered {}: {body} {}",
            out.status,
            code.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
