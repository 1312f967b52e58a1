//! The demo's second half: what sluice is for beyond spreading connections. An edge listener
//! terminates TLS, requires a client certificate and hands it (and the real client address) to
//! backends that print what they received; `sluice drain` takes a backend out under load
//! without a failed request; a graceful SIGTERM walks through the shutdown phases.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use sluice_tests::certs::TestPki;
use sluice_tests::curl::{http_status, Curl};
use sluice_tests::load::{self, Load};
use sluice_tests::topology::{backend_addr4, CLIENT_ADDR4, GW_CLIENT_ADDR4};
use sluice_tests::{http_headers_backend, NetNs, ServerHandle, Topology};

/// The edge listener's port on the gateway, and the port its backends serve on.
pub const EDGE_PORT: u16 = 8443;
const EDGE_BACKEND_PORT: u16 = 8080;
/// The name the edge's certificate is issued for.
const SERVER_NAME: &str = "idp.demo";
/// The management port inside the gateway namespace.
pub const MANAGEMENT: &str = "127.0.0.1:9000";

/// The `[[edge]]` table and the settings the tour needs, appended to the demo's config.
pub fn config(pki: &TestPki, vip_port: u16) -> String {
    format!(
        "\n# The tour: an edge listener with a required client certificate in front of the same\n\
         # backends (port {EDGE_BACKEND_PORT}), picked by the VIP's Maglev table.\n\
         [[edge]]\nname = \"idp\"\naddress = \"{GW_CLIENT_ADDR4}:{EDGE_PORT}\"\npool = \"web\"\n\
         backend_port = {EDGE_BACKEND_PORT}\nclient_cert_header = [\"nginx\", \"haproxy\"]\n\
         forwarded_headers = [\"x-forwarded\"]\n\n[edge.tls]\n\
         certificates = [{{ cert = \"{}\", key = \"{}\" }}]\nclient_auth = \"required\"\n\
         client_ca = \"{}\"\n# (VIP port {vip_port} stays the L4 fast path.)\n",
        pki.server.chain().display(),
        pki.server.key().display(),
        pki.ca_cert().display(),
    )
}

/// Top-level settings (before any table) for the tour's graceful shutdown.
pub const SHUTDOWN_SETTINGS: &str =
    "shutdown_delay = \"2s\"\nshutdown_timeout = \"1s\"\n[management]\naddress = \"127.0.0.1:9000\"\n";

/// Header-echo servers on every backend, for the edge.
pub fn edge_backends(topo: &Topology) -> Result<Vec<ServerHandle>> {
    topo.backends()
        .iter()
        .enumerate()
        .map(|(i, ns)| {
            http_headers_backend(ns, &format!("backend-{i}"), EDGE_BACKEND_PORT)
                .with_context(|| format!("starting the header-echo server on backend-{i}"))
        })
        .collect()
}

/// curl to the edge from the client namespace; `extra` are more curl arguments.
fn curl(topo: &Topology, pki: &TestPki, extra: &[&str]) -> Result<String> {
    let at = SocketAddr::new(GW_CLIENT_ADDR4.into(), EDGE_PORT);
    Curl::https(SERVER_NAME, at, "/realms/demo/account", pki.ca_cert())
        .fail()
        .args(extra)
        .run(topo.client())
}

/// The edge step: a verified client, a forger, and a client without a certificate.
pub fn edge(topo: &Topology, pki: &TestPki, dir: &Path) -> Result<()> {
    println!("\n== 2. the edge: TLS, a required client certificate, headers the backend can trust");
    println!(
        "curl https://{SERVER_NAME}:{EDGE_PORT}/realms/demo/account with the client certificate, \
         forging X-Forwarded-For and X-SSL-Client-Cert on the way:"
    );
    let (cert, key) = (
        pki.client.chain().display().to_string(),
        pki.client.key().display().to_string(),
    );
    let body = curl(
        topo,
        pki,
        &[
            "--cert",
            &cert,
            "--key",
            &key,
            "-H",
            "X-Forwarded-For: 203.0.113.66",
            "-H",
            "X-SSL-Client-Cert: forged",
        ],
    )
    .context("curl with the client certificate")?;
    let mut lines = body.lines();
    let backend = lines.next().unwrap_or_default();
    println!("  {backend} received:");
    let mut der_b64 = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "ssl-client-verify"
            | "ssl-client-subject-dn"
            | "ssl-client-issuer-dn"
            | "x-forwarded-for"
            | "x-forwarded-proto"
            | "x-real-ip" => {
                println!("    {name}: {value}");
            }
            "x-ssl-client-cert" => {
                println!(
                    "    {name}: {}... ({} bytes of base64 DER)",
                    &value[..value.len().min(24)],
                    value.len()
                );
                der_b64 = Some(value.to_owned());
            }
            _ => {}
        }
    }
    let der_b64 = der_b64.context("the backend got no X-SSL-Client-Cert")?;
    let decoded = decode_certificate(&der_b64, dir)?;
    println!("  X-SSL-Client-Cert decoded by openssl:");
    for line in decoded.lines() {
        println!("    {line}");
    }
    if !body.contains(&format!("x-forwarded-for: {CLIENT_ADDR4}")) || body.contains("203.0.113.66")
    {
        bail!("the forged X-Forwarded-For was not replaced by the client address:\n{body}");
    }
    println!("  (the forged values never reached the backend: sluice removed them first)");

    println!("the same request without a client certificate:");
    match curl(topo, pki, &[]) {
        Ok(body) => bail!("a client without a certificate was served:\n{body}"),
        Err(err) => {
            let reason = format!("{err:#}");
            let reason = reason
                .rsplit_once("): ")
                .map_or(reason.as_str(), |(_, r)| r);
            println!("  refused in the TLS handshake ({})", reason.trim());
        }
    }
    Ok(())
}

fn decode_certificate(b64: &str, dir: &Path) -> Result<String> {
    let path = dir.join("client-from-header.b64");
    std::fs::write(&path, format!("{b64}\n"))?;
    let script = format!(
        "base64 -d {} | openssl x509 -inform DER -noout -subject -issuer -ext subjectAltName",
        path.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .context("running openssl x509")?;
    if !out.status.success() {
        bail!(
            "openssl could not decode the header: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The drain step: a steady load on the VIP while one backend is drained.
pub fn drain(
    topo: &Topology,
    sluice_cli: &dyn Fn(&[&str]) -> Result<String>,
    vip: SocketAddr,
) -> Result<()> {
    let drained = backend_addr4(1);
    println!("\n== 3. sluice drain web {drained} under load");
    let load = Load {
        target: vip,
        sources: vec![IpAddr::V4(CLIENT_ADDR4); 4],
        path: "/".to_owned(),
        duration: Duration::from_secs(4),
        pause: Duration::from_millis(20),
        max_requests: 10_000,
    };
    let (report, at) = load::run(topo.client(), &load, || {
        thread::sleep(Duration::from_secs(2));
        let said = sluice_cli(&["drain", "web", &drained.to_string()]);
        // New connections from here on: the drain is in the kernel once the command returns.
        (Instant::now(), said)
    });
    let (at, said) = at;
    print!("  {}", said.context("sluice drain")?);
    let before = report.bodies_sent_between(report.started, at);
    let after = report.bodies_sent_between(at, Instant::now());
    let mut table = String::new();
    let _ = writeln!(
        table,
        "  {:<10}  {:>14}  {:>13}",
        "backend", "before drain", "after drain"
    );
    for i in 0..topo.backends().len() {
        let name = format!("backend-{i}");
        let _ = writeln!(
            table,
            "  {name:<10}  {:>14}  {:>13}",
            before.get(&name).copied().unwrap_or(0),
            after.get(&name).copied().unwrap_or(0)
        );
    }
    print!("{table}");
    let failed = report.failures().len();
    println!("  {} requests, {failed} failed", report.samples.len());
    if failed > 0 || after.get("backend-1").copied().unwrap_or(0) > 0 {
        bail!("the drain lost requests or backend-1 still got new ones:\n{report}");
    }
    Ok(())
}

/// Polls `/health/ready` and the edge until the daemon is gone, printing each change, while
/// `stop` sends SIGTERM and waits for the exit.
pub fn shutdown(gateway: &NetNs, stop: impl FnOnce() -> Result<()>) -> Result<()> {
    println!("\n== 4. graceful shutdown: SIGTERM with shutdown_delay = 2s, shutdown_timeout = 1s");
    println!("  before:  {}", probe(gateway));
    let started = Instant::now();
    thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut last = String::new();
            while started.elapsed() < Duration::from_secs(10) {
                let now = probe(gateway);
                if now != last {
                    println!("  +{:>5.2}s  {now}", started.elapsed().as_secs_f64());
                    if now.starts_with("gone") {
                        return;
                    }
                    last = now;
                }
                thread::sleep(Duration::from_millis(50));
            }
        });
        let stopped = stop();
        let _ = poller.join();
        stopped
    })
}

/// What an upstream balancer's health check sees right now.
fn probe(gateway: &NetNs) -> String {
    let ready = http_status(gateway, &format!("http://{MANAGEMENT}/health/ready"), 1)
        .map_or_else(|_| "no answer".to_owned(), |code| code.to_string());
    match ready.as_str() {
        "200" => "serving: /health/ready 200".to_owned(),
        "503" => {
            "draining: /health/ready 503, requests still served with Connection: close".to_owned()
        }
        _ => "gone: the daemon has exited".to_owned(),
    }
}
