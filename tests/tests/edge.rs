//! The edge listener end to end: the real `sluice run` in the gateway namespace terminates TLS
//! with client certificates and proxies to backends that echo the request head they received,
//! driven by the real curl in the client namespace over HTTP/1.1 and HTTP/2.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge -- --test-threads=1`.

use std::fmt::Write as _;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use sluice_tests::{
    certs::TestPki,
    daemon::{Daemon, Scratch},
    http_headers_backend, require_root,
    topology::{backend_addr4, CLIENT_ADDR4, GW_CLIENT_ADDR4, GW_CLIENT_IFNAME},
    ServerHandle, Topology, VIP4,
};

const SERVER_NAME: &str = "kc.test";
const EDGE_PORT: u16 = 8443;
const BACKEND_PORT: u16 = 8080;
const BACKENDS: usize = 2;

/// Client, gateway running sluice with one edge listener, header-echoing backends.
struct Lab {
    daemon: Daemon,
    _servers: Vec<ServerHandle>,
    pki: TestPki,
    topo: Topology,
    _scratch: Scratch,
}

impl Lab {
    fn start(prefix: &str) -> Lab {
        let topo = Topology::build(prefix, BACKENDS).expect("build topology");
        let scratch = Scratch::create(prefix).expect("scratch directory");
        let pki = TestPki::generate(&scratch.path().join("pki"), &[SERVER_NAME])
            .expect("generate the test PKI");
        let instance = format!("test-{prefix}");
        let mut text = format!(
            "instance = \"{instance}\"\ninterfaces = [\"{GW_CLIENT_IFNAME}\"]\n\
             conntrack_entries = 65536\n\n[admin]\nsocket = \"{}\"\n\n[management]\n\
             address = \"127.0.0.1:9019\"\n\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
             source_v6 = \"2001:db8:ffff::/96\"\n\n[[vip]]\nname = \"web\"\n\
             address = \"{VIP4}:80\"\ntable_size = 251\n",
            Daemon::socket_in(scratch.path()).display(),
        );
        for i in 0..BACKENDS {
            let _ = write!(
                text,
                "[[vip.backend]]\naddress = \"{}\"\n",
                backend_addr4(i)
            );
        }
        let _ = write!(
            text,
            "\n[[edge]]\nname = \"kc\"\naddress = \"{GW_CLIENT_ADDR4}:{EDGE_PORT}\"\npool = \"web\"\n\
             backend_port = {BACKEND_PORT}\nclient_cert_header = [\"rfc9440\", \"nginx\"]\n\n\
             [edge.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\
             client_auth = \"optional\"\nclient_ca = \"{}\"\n",
            pki.server.chain().display(),
            pki.server.key().display(),
            pki.ca_cert().display(),
        );
        let daemon = Daemon::start(topo.gateway(), scratch.path(), &instance, &text)
            .expect("start sluice run with an edge listener");
        let servers = topo
            .backends()
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                http_headers_backend(ns, &format!("backend-{i}"), BACKEND_PORT)
                    .expect("header-echo backend")
            })
            .collect();
        Lab {
            daemon,
            _servers: servers,
            pki,
            topo,
            _scratch: scratch,
        }
    }

    /// curl from the client namespace; `extra` are more curl arguments. Returns the body.
    fn curl(&self, extra: &[&str]) -> String {
        let resolve = format!("{SERVER_NAME}:{EDGE_PORT}:{GW_CLIENT_ADDR4}");
        let url = format!("https://{SERVER_NAME}:{EDGE_PORT}/realms/x?y=1");
        let ca = self.pki.ca_cert().display().to_string();
        let mut args = vec![
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "--resolve",
            &resolve,
            "--cacert",
            &ca,
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        self.topo.client().run(&args).unwrap_or_else(|err| {
            panic!(
                "curl {extra:?}: {err:#}\nsluice:\n{}",
                self.daemon.log_text()
            )
        })
    }

    fn with_client_cert(&self, extra: &[&str]) -> String {
        let cert = self.pki.client.chain().display().to_string();
        let key = self.pki.client.key().display().to_string();
        let mut args = vec!["--cert", cert.as_str(), "--key", key.as_str()];
        args.extend_from_slice(extra);
        self.curl(&args)
    }
}

/// The request head lines the backend echoed, lowercased names, as `name: value`.
fn headers(body: &str) -> Vec<String> {
    body.lines()
        .skip(2) // the backend's name, the request line
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| format!("{}: {}", n.trim().to_ascii_lowercase(), v.trim()))
        .collect()
}

fn values<'a>(headers: &'a [String], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter_map(|h| h.strip_prefix(name).and_then(|r| r.strip_prefix(": ")))
        .collect()
}

/// Headers a client might forge to impersonate a certificate or an address.
const FORGED: [&str; 8] = [
    "-H",
    "Client-Cert: :Zm9yZ2VkIGNlcnQ=:",
    "-H",
    "SSL-CLIENT-CERT: forged",
    "-H",
    "x-forwarded-for: 203.0.113.66",
    "-H",
    "Forwarded: for=203.0.113.66",
];

#[test]
fn edge_hands_the_verified_certificate_and_the_real_client_to_the_backend() {
    require_root();
    let lab = Lab::start("sle1");
    let leaf_b64 = STANDARD.encode(lab.pki.client.der().as_ref());
    let chain_b64 = STANDARD.encode(lab.pki.client.intermediates()[0].as_ref());
    for http in ["--http1.1", "--http2"] {
        let mut extra = vec![http];
        extra.extend_from_slice(&FORGED);
        let body = lab.with_client_cert(&extra);
        assert!(body.starts_with("backend-"), "{http}: {body}");
        assert!(
            body.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("GET /realms/x?y=1 HTTP/1.1")),
            "{http}: the path and query reach the backend unchanged: {body}"
        );
        let h = headers(&body);
        assert_eq!(
            values(&h, "client-cert"),
            [format!(":{leaf_b64}:").as_str()],
            "{http}: exactly the verified leaf, RFC 9440 byte sequence: {body}"
        );
        assert_eq!(
            values(&h, "client-cert-chain"),
            [format!(":{chain_b64}:").as_str()],
            "{http}: {body}"
        );
        assert_eq!(
            values(&h, "ssl-client-verify"),
            ["SUCCESS"],
            "{http}: {body}"
        );
        assert_eq!(values(&h, "ssl-client-cert").len(), 1, "{http}: {body}");
        assert!(
            !body.contains("forged") && !body.contains("Zm9yZ2Vk"),
            "{http}: {body}"
        );
        assert!(
            !body.contains("203.0.113.66"),
            "{http}: forged addresses pass: {body}"
        );
        assert_eq!(
            values(&h, "x-forwarded-for"),
            [CLIENT_ADDR4.to_string().as_str()],
            "{http}: {body}"
        );
        assert_eq!(values(&h, "x-forwarded-proto"), ["https"], "{http}: {body}");
        let fwd = values(&h, "forwarded");
        assert!(
            fwd.len() == 1 && fwd[0].starts_with(&format!("for=\"{CLIENT_ADDR4}:")),
            "{http}: {body}"
        );
        assert_eq!(
            values(&h, "host"),
            [format!("{SERVER_NAME}:{EDGE_PORT}").as_str()],
            "{http}: Host is preserved: {body}"
        );
    }

    // Optional client auth without a certificate: served, and no certificate header at all.
    let mut extra = vec!["--http1.1"];
    extra.extend_from_slice(&FORGED);
    let body = lab.curl(&extra);
    let h = headers(&body);
    assert!(values(&h, "client-cert").is_empty(), "{body}");
    assert!(values(&h, "client-cert-chain").is_empty(), "{body}");
    assert!(values(&h, "ssl-client-cert").is_empty(), "{body}");
    assert_eq!(values(&h, "ssl-client-verify"), ["NONE"], "{body}");
    assert!(!body.contains("203.0.113.66"), "{body}");

    // A certificate from an unknown CA is refused in the handshake.
    let cert = lab.pki.unknown_ca_client.chain().display().to_string();
    let key = lab.pki.unknown_ca_client.key().display().to_string();
    let resolve = format!("{SERVER_NAME}:{EDGE_PORT}:{GW_CLIENT_ADDR4}");
    let ca = lab.pki.ca_cert().display().to_string();
    let url = format!("https://{SERVER_NAME}:{EDGE_PORT}/");
    let refused = lab.topo.client().run(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        &resolve,
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        &url,
    ]);
    assert!(
        refused.is_err(),
        "an unknown CA's client got through: {refused:?}"
    );
}

impl Lab {
    /// The DER of the leaf certificate the edge presents for [`SERVER_NAME`], as base64.
    fn served_leaf(&self) -> String {
        let connect = format!("{GW_CLIENT_ADDR4}:{EDGE_PORT}");
        let pem = self
            .topo
            .client()
            .run(&[
                "sh",
                "-c",
                &format!(
                    "openssl s_client -connect {connect} -servername {SERVER_NAME} </dev/null \
                     2>/dev/null | openssl x509 -outform DER | base64 -w0"
                ),
            ])
            .expect("openssl s_client");
        pem.trim().to_owned()
    }

    fn reload(&self) -> std::process::Output {
        self.daemon.cli(&["reload"]).expect("run sluice reload")
    }
}

#[test]
fn reload_rotates_certificates_all_or_nothing() {
    require_root();
    let lab = Lab::start("sle2");
    let original = STANDARD.encode(lab.pki.server.der().as_ref());
    assert_eq!(lab.served_leaf(), original);

    // Rotated on disk under the same paths, then reloaded: new handshakes get the new one.
    let rotated = lab
        .pki
        .issue_server("rotated", &[SERVER_NAME])
        .expect("issue a second server certificate");
    std::fs::copy(rotated.chain(), lab.pki.server.chain()).expect("rotate the chain");
    std::fs::copy(rotated.key(), lab.pki.server.key()).expect("rotate the key");
    let out = lab.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let new = STANDARD.encode(rotated.der().as_ref());
    assert_eq!(
        lab.served_leaf(),
        new,
        "the rotated certificate is served after reload"
    );

    // A key that does not match: the reload fails, says why, and the last good one stays.
    std::fs::copy(lab.pki.client.key(), lab.pki.server.key()).expect("break the key");
    let out = lab.reload();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a broken key was accepted");
    assert!(
        stderr.contains("kc"),
        "the failure names the edge: {stderr}"
    );
    assert_eq!(
        lab.served_leaf(),
        new,
        "a failed reload keeps the certificate in use"
    );
    assert!(lab.with_client_cert(&["--http1.1"]).starts_with("backend-"));
}
