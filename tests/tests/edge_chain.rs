//! Client certificate chains through the real daemon (issue 12, items 3 to 5): the real
//! `sluice run` in the gateway namespace verifies client certificates presented by the real
//! curl in the client namespace and hands them to header-echoing backends, in every format.
//!
//! - Item 3: whatever a client sends after its leaf (an unrelated self-signed root, a
//!   certificate of an unknown CA, duplicates, reversed order; before, between and after the
//!   real intermediates), every format's chain is the path verification built: the
//!   intermediates used, leaf's issuer first, and the trust anchor only when configured.
//! - Item 4: a certificate with two DNS and two URI SANs reaches the backend in an XFCC header
//!   Keycloak's envoy provider can read (its map of `;`/`=` pairs has no repeated key).
//! - Item 5: by default each format carries as many chain certificates as the Keycloak
//!   provider of that name reads by default (rfc9440 / apache / haproxy / traefik: 1, envoy:
//!   all); `client_cert_chain_length` raises it.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge_chain -- --test-threads=1`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use sluice_tests::{
    certs::TestPki,
    curl::Curl,
    daemon::{Daemon, Scratch},
    edge_lab::header_echo_backends,
    edge_lab::LabBase,
    keycloak_decode::{b64_der, form_url_decode, keycloak_xfcc, pem_der},
    require_root,
    topology::{GW_CLIENT_ADDR4, GW_CLIENT_IFNAME},
    ServerHandle, Topology,
};

const SERVER_NAME: &str = "kc.test";
const BACKEND_PORT: u16 = 8080;
const BACKENDS: usize = 1;
/// Every format that carries a chain (nginx carries the leaf only).
const CHAIN_FORMATS: [&str; 5] = ["rfc9440", "apache", "haproxy", "traefik", "envoy"];
const ALL_FORMATS: &str = r#"["rfc9440", "nginx", "apache", "haproxy", "traefik", "envoy"]"#;

/// One `[[edge]]` listener: every format, required client auth, chains up to 10 deep, and
/// `settings` (more `key = value` lines of the `[[edge]]` table).
struct Listener {
    name: &'static str,
    port: u16,
    settings: &'static str,
}

impl Listener {
    fn address(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(GW_CLIENT_ADDR4), self.port)
    }
}

/// A second root with a leaf that has two DNS and two URI SANs, written as PEM files.
struct SpiffePki {
    root: PathBuf,
    leaf: PathBuf,
    key: PathBuf,
    leaf_der: Vec<u8>,
}

fn spiffe_pki(dir: &Path) -> SpiffePki {
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name = DistinguishedName::new();
    ca.distinguished_name
        .push(DnType::CommonName, "chain test SPIFFE root");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec![
        "first.workload.example".to_owned(),
        "second.workload.example".to_owned(),
    ])
    .unwrap();
    leaf.subject_alt_names.extend([
        SanType::URI("spiffe://example.org/ns/a/sa/first".try_into().unwrap()),
        SanType::URI("spiffe://example.org/ns/a/sa/second".try_into().unwrap()),
    ]);
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name
        .push(DnType::CommonName, "spiffe workload");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    SpiffePki {
        root: write("spiffe-root.crt", &ca.pem()),
        leaf: write("spiffe.crt", &cert.pem()),
        key: write("spiffe.key", &key.serialize_pem()),
        leaf_der: cert.der().to_vec(),
    }
}

/// Client, gateway running sluice with the listeners, one header-echoing backend.
struct Lab {
    daemon: Daemon,
    _servers: Vec<ServerHandle>,
    pki: TestPki,
    spiffe: SpiffePki,
    topo: Topology,
    scratch: Scratch,
}

impl Lab {
    fn start(prefix: &str, listeners: &[Listener]) -> Lab {
        let base = LabBase::new(prefix, BACKENDS, false);
        let pki = &base.pki;
        let spiffe = spiffe_pki(pki.dir());
        // Two anchors: the path must end at the right one.
        let bundle = pki.dir().join("client-ca-bundle.crt");
        let text = [spiffe.root.as_path(), pki.ca_cert()]
            .map(|p| std::fs::read_to_string(p).unwrap())
            .concat();
        std::fs::write(&bundle, text).unwrap();
        let mut text = base.gateway_config(&[GW_CLIENT_IFNAME], "127.0.0.1:9019");
        for l in listeners {
            let _ = write!(
                text,
                "\n[[edge]]\nname = \"{}\"\naddress = \"{}\"\npool = \"web\"\n\
                 backend_port = {BACKEND_PORT}\nclient_cert_header = {ALL_FORMATS}\n{}\n\n\
                 [edge.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]\n\
                 client_auth = \"required\"\nclient_ca = \"{}\"\nmax_chain_depth = 10\n",
                l.name,
                l.address(),
                l.settings,
                pki.server.chain().display(),
                pki.server.key().display(),
                bundle.display(),
            );
        }
        let daemon = base.start_daemon(&text);
        let LabBase {
            topo, scratch, pki, ..
        } = base;
        let servers = header_echo_backends(&topo, BACKEND_PORT);
        Lab {
            daemon,
            _servers: servers,
            pki,
            spiffe,
            topo,
            scratch,
        }
    }

    /// A PEM file of these certificate files, in order, for curl's `--cert`.
    fn cert_file(&self, name: &str, parts: &[&Path]) -> PathBuf {
        let path = self.scratch.path().join(name);
        let text = parts
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect::<String>();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// curl from the client namespace presenting `cert` (leaf first, then whatever follows)
    /// with `key`; returns the backend's echo of the request head.
    fn curl(&self, at: SocketAddr, cert: &Path, key: &Path) -> String {
        let curl = Curl::https(SERVER_NAME, at, "/realms/x", self.pki.ca_cert())
            .fail()
            .args(&["--http1.1"])
            .cert(cert, key);
        curl.run(self.topo.client()).unwrap_or_else(|err| {
            panic!(
                "curl --cert {} to {at}: {err:#}\nsluice:\n{}",
                cert.display(),
                self.daemon.log_text()
            )
        })
    }
}

// ---- decoding, as the Keycloak provider of each format does ----

/// The request head lines the backend echoed, lowercased names, as `(name, value)`.
fn headers(body: &str) -> Vec<(String, String)> {
    body.lines()
        .skip(2) // the backend's name, the request line
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

/// The only value of `name`, or `None`; panics on two.
fn one<'h>(h: &'h [(String, String)], name: &str) -> Option<&'h str> {
    let mut found = h.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let first = found.next();
    assert!(found.next().is_none(), "{name} twice: {h:?}");
    first
}

/// The chain (leaf first) that `format`'s headers carry, decoded the way the Keycloak provider
/// of that name decodes it (without its length limit: every chain header is read).
fn chain_of(format: &str, h: &[(String, String)]) -> Vec<Vec<u8>> {
    let get = |name: &str| one(h, name).unwrap_or_else(|| panic!("{format}: no {name}: {h:?}"));
    let indexed = |leaf: Vec<u8>, prefix: &str, decode: fn(&str) -> Vec<u8>| {
        let mut out = vec![leaf];
        for i in 0..10 {
            if let Some(v) = one(h, &format!("{prefix}_{i}")) {
                out.push(decode(v));
            }
        }
        out
    };
    match format {
        "rfc9440" => {
            let seq = |v: &str| {
                b64_der(
                    v.strip_prefix(':')
                        .and_then(|v| v.strip_suffix(':'))
                        .expect("byte sequence"),
                )
            };
            let mut out = vec![seq(get("client-cert"))];
            if let Some(list) = one(h, "client-cert-chain") {
                out.extend(list.split(',').map(|e| seq(e.trim())));
            }
            out
        }
        "apache" => indexed(pem_der(get("ssl_client_cert")), "cert_chain", pem_der),
        "haproxy" => indexed(
            b64_der(get("x-ssl-client-cert")),
            "x-ssl-client-cert-chain",
            b64_der,
        ),
        "traefik" => get("x-forwarded-tls-client-cert")
            .split(',')
            .map(b64_der)
            .collect(),
        "envoy" => {
            let xfcc = get("x-forwarded-client-cert");
            let map = keycloak_xfcc(xfcc).unwrap_or_else(|e| panic!("{e}"));
            let chain = form_url_decode(map["Chain"]).replace(['"', '\r', '\n'], "");
            chain
                .split_inclusive("-----END CERTIFICATE-----")
                .filter(|p| !p.trim().is_empty())
                .map(pem_der)
                .collect()
        }
        other => panic!("no chain in {other}"),
    }
}

fn der(path: &Path) -> Vec<u8> {
    pem_der(&std::fs::read_to_string(path).unwrap())
}

/// Lengths that let every format carry the whole path.
const LONG: &str =
    "client_cert_chain_length = { rfc9440 = 10, apache = 10, haproxy = 10, traefik = 10, envoy = 10 }";

#[test]
fn chain_headers_carry_only_the_verified_path_whatever_the_client_sends() {
    require_root();
    let whole = Listener {
        name: "whole",
        port: 8443,
        settings: LONG,
    };
    let anchored = Listener {
        name: "anchored",
        port: 8444,
        settings: "client_cert_chain_length = { rfc9440 = 10, apache = 10, haproxy = 10, \
                   traefik = 10, envoy = 10 }\nclient_cert_chain_anchor = true",
    };
    let lab = Lab::start("chn", &[whole, anchored]);
    let pki = &lab.pki;
    let (deep, sub, inter, root) = (
        pki.deep_client.leaf(),
        pki.sub_intermediate.cert(),
        pki.intermediate.cert(),
        pki.root.cert(),
    );
    let (stranger, unknown) = (pki.other_root.cert(), pki.unknown_ca_client.leaf());
    let path = vec![der(deep), der(sub), der(inter)];
    let mut anchored_path = path.clone();
    anchored_path.push(der(root));

    let arrangements: [(&str, Vec<&Path>); 6] = [
        ("as issued", vec![deep, sub, inter]),
        ("extras before", vec![deep, stranger, unknown, sub, inter]),
        ("extras between", vec![deep, sub, stranger, unknown, inter]),
        (
            "extras after",
            vec![deep, sub, inter, unknown, stranger, root],
        ),
        ("reversed", vec![deep, inter, sub]),
        ("duplicates", vec![deep, inter, sub, inter, sub, root]),
    ];
    // Every arrangement, listener and format is checked before failing, so a failure lists
    // all that carry something else.
    let mut wrong = Vec::new();
    for (i, (what, parts)) in arrangements.iter().enumerate() {
        let cert = lab.cert_file(&format!("presented-{i}.crt"), parts);
        for (listener, want) in [(8443, &path), (8444, &anchored_path)] {
            let at = SocketAddr::new(IpAddr::V4(GW_CLIENT_ADDR4), listener);
            let body = lab.curl(at, &cert, pki.deep_client.key());
            let h = headers(&body);
            for format in CHAIN_FORMATS {
                // A header that does not even decode (e.g. cut at the echo backend's 16 KiB
                // head limit by extras) is one more wrong format, not the end of the test.
                let Ok(got) = std::panic::catch_unwind(|| chain_of(format, &h)) else {
                    wrong.push(format!(
                        "{what}, port {listener}, {format}: does not decode"
                    ));
                    continue;
                };
                if got != *want {
                    wrong.push(format!(
                        "{what}, port {listener}, {format}: {} certificates, not the {} of the \
                         verified path",
                        got.len(),
                        want.len()
                    ));
                }
            }
            assert_eq!(
                pem_der(&form_url_decode(one(&h, "ssl-client-cert").expect("nginx"))),
                path[0],
                "{what}: nginx leaf"
            );
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_format_defaults_to_its_keycloak_providers_chain_length() {
    require_root();
    let defaults = Listener {
        name: "defaults",
        port: 8443,
        settings: "",
    };
    let lab = Lab::start("chl", &[defaults]);
    let pki = &lab.pki;
    let (deep, sub, inter) = (
        pki.deep_client.leaf(),
        pki.sub_intermediate.cert(),
        pki.intermediate.cert(),
    );
    let cert = lab.cert_file("deep-chain.crt", &[deep, sub, inter]);
    let at = SocketAddr::new(IpAddr::V4(GW_CLIENT_ADDR4), 8443);
    let body = lab.curl(at, &cert, pki.deep_client.key());
    let h = headers(&body);
    let nearest = vec![der(deep), der(sub)];
    let whole = vec![der(deep), der(sub), der(inter)];
    // Keycloak's certificate-chain-length defaults: 1 for these, and rfc9440 refuses more.
    for format in ["rfc9440", "apache", "haproxy", "traefik"] {
        assert!(
            chain_of(format, &h) == nearest,
            "{format}: want the leaf and its issuer only\n{body}"
        );
    }
    assert!(one(&h, "cert_chain_1").is_none(), "{body}");
    assert!(one(&h, "x-ssl-client-cert-chain_1").is_none(), "{body}");
    // Envoy's provider has no limit: the whole path.
    assert!(chain_of("envoy", &h) == whole, "envoy\n{body}");
}

#[test]
fn envoy_header_with_two_sans_of_each_kind_is_readable_by_keycloak() {
    require_root();
    let envoy = Listener {
        name: "envoy",
        port: 8443,
        settings: "",
    };
    let lab = Lab::start("chs", &[envoy]);
    let at = SocketAddr::new(IpAddr::V4(GW_CLIENT_ADDR4), 8443);
    let body = lab.curl(at, &lab.spiffe.leaf, &lab.spiffe.key);
    let h = headers(&body);
    let xfcc = one(&h, "x-forwarded-client-cert").expect("xfcc");
    let map = keycloak_xfcc(xfcc).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(map.get("DNS"), Some(&"first.workload.example"), "{xfcc}");
    assert_eq!(
        map.get("URI"),
        Some(&"spiffe://example.org/ns/a/sa/first"),
        "{xfcc}"
    );
    assert!(
        chain_of("envoy", &h) == [lab.spiffe.leaf_der.clone()],
        "{body}"
    );
}
