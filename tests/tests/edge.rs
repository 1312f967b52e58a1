//! The edge listener end to end: the real `sluice run` in the gateway namespace terminates TLS
//! with client certificates and proxies to backends that echo the request head they received,
//! driven by the real curl (and `openssl s_client`) in the client namespace over HTTP/1.1 and
//! HTTP/2.
//!
//! Each test starts its own lab with the listeners it needs ([`Listener`]: client auth, header
//! formats, trusted proxies, IPv4 or IPv6 address), all in one daemon.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge -- --test-threads=1`.

use std::net::{IpAddr, SocketAddr};

use base64::{engine::general_purpose::STANDARD, Engine as _};
use sluice_tests::{
    edge_lab::{
        assert_decoded, backend_of, edge4, header_args, headers, single, values, Lab, Listener,
        ALL_FORMATS, EDGE_PORT, FORWARDED_HEADERS, HTTP_VERSIONS, LEAF_CERT_HEADERS, SERVER_NAME,
    },
    keycloak_decode::{b64_der, form_url_decode, pem_der, xfcc_pairs},
    require_root,
    topology::{backend_addr4, CLIENT_ADDR4, CLIENT_ADDR6, GW_CLIENT_ADDR6},
};

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

/// Every header name sluice manages for [`ALL_FORMATS`] with the default names, and the
/// forwarded ones, lowercase; `true` if sluice sets it for a client with a one-intermediate
/// chain (over TLS, no path prefix).
fn managed_names() -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = LEAF_CERT_HEADERS
        .into_iter()
        .chain(["client-cert-chain"])
        .chain(FORWARDED_HEADERS)
        .map(|n| (n.to_owned(), true))
        .collect();
    out.push(("x-forwarded-prefix".to_owned(), false));
    for i in 0..10 {
        out.push((format!("cert_chain_{i}"), i == 0));
        out.push((format!("x-ssl-client-cert-chain_{i}"), i == 0));
    }
    out
}

/// Whether sluice sets the managed header `name` for a client without a certificate (all
/// formats selected).
fn set_without_cert(name: &str) -> bool {
    name == "ssl-client-verify" || FORWARDED_HEADERS.contains(&name)
}

/// Two `-H` per managed name, one upper case and one in alternating case, each with a value
/// that contains "forged".
fn forge_every_managed_header() -> Vec<String> {
    header_args(
        managed_names()
            .into_iter()
            .enumerate()
            .flat_map(|(n, (name, _))| {
                let mixed: String = name
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        if i % 2 == 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c
                        }
                    })
                    .collect();
                [name.to_ascii_uppercase(), mixed]
                    .into_iter()
                    .enumerate()
                    .map(move |(variant, spelled)| (spelled, format!("forged-{n}-{variant}")))
            }),
    )
}

/// An RFC 9440 byte sequence (`:base64:`) as DER.
fn sf_der(value: &str) -> Vec<u8> {
    b64_der(
        value
            .strip_prefix(':')
            .and_then(|v| v.strip_suffix(':'))
            .expect("sf byte sequence"),
    )
}

/// nginx's `$ssl_client_escaped_cert` (form-URL-encoded PEM) as DER.
fn nginx_der(value: &str) -> Vec<u8> {
    pem_der(&form_url_decode(value))
}

#[test]
fn edge_hands_the_verified_certificate_and_the_real_client_to_the_backend() {
    require_root();
    let lab = Lab::start("sle1", &[Listener::v4("kc", EDGE_PORT)]);
    let leaf_b64 = STANDARD.encode(lab.pki.client.der().as_ref());
    let chain_b64 = STANDARD.encode(lab.pki.client.intermediates()[0].as_ref());
    for http in HTTP_VERSIONS {
        let (body, h) = lab.echo(edge4(), http, Some(&lab.pki.client), &FORGED);
        assert!(body.starts_with("backend-"), "{http}: {body}");
        assert!(
            body.lines()
                .nth(1)
                .is_some_and(|l| l.starts_with("GET /realms/x?y=1 HTTP/1.1")),
            "{http}: the path and query reach the backend unchanged: {body}"
        );
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
        assert!(!body.contains("Zm9yZ2Vk"), "{http}: {body}");
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
    let (body, h) = lab.echo(edge4(), "--http1.1", None, &FORGED);
    assert!(values(&h, "client-cert").is_empty(), "{body}");
    assert!(values(&h, "client-cert-chain").is_empty(), "{body}");
    assert!(values(&h, "ssl-client-cert").is_empty(), "{body}");
    assert_eq!(values(&h, "ssl-client-verify"), ["NONE"], "{body}");
    assert!(!body.contains("203.0.113.66"), "{body}");

    // A certificate from an unknown CA is refused in the handshake.
    let refused = lab.try_curl_as(&lab.pki.unknown_ca_client, edge4(), &[]);
    assert!(
        refused.is_err(),
        "an unknown CA's client got through: {refused:?}"
    );
}

#[test]
fn required_client_auth_serves_only_verified_clients() {
    require_root();
    let mut listener = Listener::v4("kc", EDGE_PORT);
    listener.client_auth = "required";
    let lab = Lab::start("sle2", &[listener]);
    let leaf = format!(":{}:", STANDARD.encode(lab.pki.client.der().as_ref()));
    for http in HTTP_VERSIONS {
        let (body, h) = lab.echo::<&str>(edge4(), http, Some(&lab.pki.client), &[]);
        assert!(body.starts_with("backend-"), "{http}: {body}");
        assert_eq!(values(&h, "client-cert"), [leaf.as_str()], "{http}: {body}");
    }

    let served = lab.backend_connections();
    for http in HTTP_VERSIONS {
        for (who, result) in lab.refused_clients(http) {
            let err = result
                .err()
                .unwrap_or_else(|| panic!("{http}: the {who} client was served"));
            let text = format!("{err:#}");
            // curl 35 (TLS handshake), or with TLS 1.3, where the client finishes first and the
            // server's alert arrives after: 55 (send) or 56 (receive). Never 22 (an HTTP error
            // status: the request got through) nor 28 (a timeout).
            assert!(
                ["35", "55", "56"]
                    .iter()
                    .any(|code| text.contains(&format!("exit status: {code})"))),
                "{http}: the {who} client failed, but not in TLS: {text}"
            );
        }
    }
    assert_eq!(
        lab.backend_connections(),
        served,
        "a refused client's request reached a backend"
    );

    // openssl s_client over TLS 1.2 (where the server decides inside the handshake): the
    // expired certificate fails the handshake, and no response comes back.
    let out = lab.s_client_tls12(&lab.pki.expired_client, edge4());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    let all = format!(
        "status {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(!out.status.success(), "s_client succeeded:\n{all}");
    assert!(
        stderr.contains("alert")
            && (stderr.contains("certificate expired")
                || stderr.contains("bad certificate")
                || stderr.contains("handshake failure")),
        "s_client does not report a refused handshake:\n{all}"
    );
    assert!(!stdout.contains("HTTP/1.1 200"), "{all}");
    // The same s_client with the valid client completes the handshake and is served: the
    // refusal above is about the certificate, not about s_client.
    let ok = lab.s_client_tls12(&lab.pki.client, edge4());
    let ok_out = String::from_utf8_lossy(&ok.stdout);
    assert!(
        ok_out.contains("HTTP/1.1 200") && ok_out.contains("backend-"),
        "s_client with the valid client:\n{ok_out}\n{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn every_format_at_once_decodes_to_the_client_certificate_and_forgeries_never_pass() {
    require_root();
    let mut listener = Listener::v4("kc", EDGE_PORT);
    listener.formats = &ALL_FORMATS;
    let lab = Lab::start("sle3", &[listener]);
    let leaf = lab.pki.client.der().as_ref().to_vec();
    let inter = lab.pki.client.intermediates()[0].as_ref().to_vec();
    let forged = forge_every_managed_header();
    for http in HTTP_VERSIONS {
        // Forged copies, whatever their case or count, never reach the backend; each managed
        // header sluice sets arrives exactly once.
        let (body, h) = lab.echo(edge4(), http, Some(&lab.pki.client), &forged);
        for (name, set) in managed_names() {
            assert_eq!(
                values(&h, &name).len(),
                usize::from(set),
                "{http}: {name} count:\n{body}"
            );
        }

        // Each the way Keycloak's provider for it decodes it: rfc9440
        // (Rfc9440ClientCertificateLookup) byte sequences; nginx
        // (NginxProxySslClientCertificateLookup) form-URL-decoded PEM; apache
        // (ApacheProxySslClientCertificateLookup) PEM leaf and chain headers; haproxy
        // (HaProxySslClientCertificateLookup) bare base64 DER.
        assert_decoded(
            &h,
            &body,
            http,
            &[
                ("client-cert", sf_der, &leaf, "rfc9440"),
                ("client-cert-chain", sf_der, &inter, "rfc9440 chain"),
                ("ssl-client-cert", nginx_der, &leaf, "nginx"),
                ("ssl_client_cert", pem_der, &leaf, "apache"),
                ("cert_chain_0", pem_der, &inter, "apache chain"),
                ("x-ssl-client-cert", b64_der, &leaf, "haproxy"),
                (
                    "x-ssl-client-cert-chain_0",
                    b64_der,
                    &inter,
                    "haproxy chain",
                ),
            ],
        );
        let nginx = single(&h, "ssl-client-cert", &body);
        assert!(
            !nginx.contains(['+', '/', '=', ' ']),
            "{http}: nginx escaping: {nginx}"
        );
        assert_eq!(single(&h, "ssl-client-verify", &body), "SUCCESS");
        let subject = single(&h, "ssl-client-subject-dn", &body);
        assert!(
            subject.contains("Doe") && subject.contains("Example"),
            "{http}: {subject}"
        );

        // traefik (TraefikProxySslClientCertificateLookup): bare base64 DER split on ','.
        let traefik: Vec<Vec<u8>> = single(&h, "x-forwarded-tls-client-cert", &body)
            .split(',')
            .map(|p| b64_der(p.trim()))
            .collect();
        assert_eq!(traefik, [leaf.clone(), inter.clone()], "{http}: traefik");

        // envoy (EnvoyProxySslClientCertificateLookup): one XFCC element; Cert and Chain are
        // URL-encoded PEM.
        let xfcc = single(&h, "x-forwarded-client-cert", &body);
        let pairs = xfcc_pairs(xfcc);
        let get = |k: &str| {
            let found: Vec<&String> = pairs
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v)
                .collect();
            assert_eq!(found.len(), 1, "{http}: {k} in {xfcc}");
            found[0].clone()
        };
        assert_eq!(
            pem_der(&form_url_decode(&get("Cert"))),
            leaf,
            "{http}: envoy Cert"
        );
        let chain = form_url_decode(&get("Chain"));
        let chain: Vec<Vec<u8>> = chain
            .split_inclusive("-----END CERTIFICATE-----")
            .filter(|p| !p.trim().is_empty())
            .map(pem_der)
            .collect();
        assert_eq!(chain, [leaf.clone(), inter.clone()], "{http}: envoy Chain");
        let hash = get("Hash");
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{http}: envoy Hash {hash}"
        );
        assert!(get("Subject").contains("Doe"), "{http}: {xfcc}");
    }

    // Without a certificate (optional): none of the certificate headers, whatever was forged.
    let (body, h) = lab.echo(edge4(), "--http1.1", None, &forged);
    for (name, _) in managed_names() {
        let want = usize::from(set_without_cert(&name));
        assert_eq!(values(&h, &name).len(), want, "{name}:\n{body}");
    }
    assert_eq!(values(&h, "ssl-client-verify"), ["NONE"], "{body}");
}

/// A client's own forwarding headers.
const THEIRS: [&str; 4] = [
    "-H",
    "X-Forwarded-For: 198.51.100.9",
    "-H",
    "Forwarded: for=198.51.100.9",
];

#[test]
fn a_trusted_peers_forwarded_headers_are_kept_and_extended() {
    require_root();
    let mut trusted = Listener::v4("trusted", EDGE_PORT);
    trusted.trusted_proxies = vec![format!("{CLIENT_ADDR4}/32")];
    let lab = Lab::start("sle4", &[trusted]);
    for http in HTTP_VERSIONS {
        let (body, h) = lab.echo(edge4(), http, None, &THEIRS);
        assert_eq!(
            values(&h, "x-forwarded-for"),
            [format!("198.51.100.9, {CLIENT_ADDR4}").as_str()],
            "{http}: a trusted peer's X-Forwarded-For is kept and extended:\n{body}"
        );
        let fwd = single(&h, "forwarded", &body);
        assert!(
            fwd.starts_with(&format!("for=198.51.100.9, for=\"{CLIENT_ADDR4}:")),
            "{http}: a trusted peer's Forwarded is kept and extended: {fwd}"
        );
    }
}

#[test]
fn untrusted_and_ipv6_clients_get_forwarded_headers_of_their_own() {
    require_root();
    let mut untrusted = Listener::v4("untrusted", EDGE_PORT);
    // A list that does not cover the client: trust is by address, not by having a list.
    untrusted.trusted_proxies = vec!["198.18.1.0/24".to_owned()];
    let mut v6 = Listener::v4("v6", EDGE_PORT + 1);
    v6.address = SocketAddr::new(IpAddr::V6(GW_CLIENT_ADDR6), EDGE_PORT + 1);
    let v6_at = v6.address;
    let lab = Lab::start("sle6", &[untrusted, v6]);
    for http in HTTP_VERSIONS {
        let (body, h) = lab.echo(edge4(), http, None, &THEIRS);
        assert!(
            !body.contains("198.51.100.9"),
            "{http}: kept from an untrusted peer:\n{body}"
        );
        assert_eq!(
            values(&h, "x-forwarded-for"),
            [CLIENT_ADDR4.to_string().as_str()],
            "{http}: {body}"
        );
        assert!(
            single(&h, "forwarded", &body).starts_with(&format!("for=\"{CLIENT_ADDR4}:")),
            "{http}: {body}"
        );

        let (body, h) = lab.echo(v6_at, http, None, &THEIRS);
        assert!(!body.contains("198.51.100.9"), "{http}: {body}");
        assert_eq!(
            values(&h, "x-forwarded-for"),
            [CLIENT_ADDR6.to_string().as_str()],
            "{http}: {body}"
        );
        let fwd = single(&h, "forwarded", &body);
        let port = fwd
            .strip_prefix(&format!("for=\"[{CLIENT_ADDR6}]:"))
            .and_then(|r| r.split_once('"'))
            .map(|(port, _)| port);
        assert!(
            port.is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p != 0)),
            "{http}: RFC 7239 IPv6 node, quoted with brackets and port: {fwd}"
        );
        assert!(
            fwd.contains(&format!(";by=\"[{GW_CLIENT_ADDR6}]:{}\"", EDGE_PORT + 1)),
            "{http}: {fwd}"
        );
        assert_eq!(
            values(&h, "x-forwarded-port"),
            [(EDGE_PORT + 1).to_string().as_str()],
            "{http}: {body}"
        );
    }
}

#[test]
fn a_drained_backend_gets_no_more_edge_requests() {
    require_root();
    let lab = Lab::start("sle5", &[Listener::v4("kc", EDGE_PORT)]);
    let ask = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| {
                let http = if i % 2 == 0 { "--http1.1" } else { "--http2" };
                backend_of(&lab.curl(edge4(), &[http])).to_owned()
            })
            .collect()
    };
    // One client address, so Maglev by source address picks the same backend every time.
    let before = ask(4);
    let chosen = before[0].clone();
    assert!(before.iter().all(|b| *b == chosen), "{before:?}");
    let index: usize = chosen
        .strip_prefix("backend-")
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("not a backend name: {chosen}"));
    let addr = backend_addr4(index).to_string();

    lab.daemon
        .cli_ok(&["drain", "web", &addr])
        .unwrap_or_else(|err| panic!("{err:#}"));
    let during = ask(6);
    assert!(
        during.iter().all(|b| *b != chosen),
        "{chosen} was drained but still served: {during:?}"
    );

    lab.daemon
        .cli_ok(&["undrain", "web", &addr])
        .unwrap_or_else(|err| panic!("{err:#}"));
    let after = ask(2);
    assert!(
        after.iter().all(|b| *b == chosen),
        "undrained, the client's own backend serves it again: {after:?}"
    );
}

#[test]
fn reload_rotates_certificates_all_or_nothing() {
    require_root();
    let lab = Lab::start("sle7", &[Listener::v4("kc", EDGE_PORT)]);
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
    assert!(lab
        .with_client_cert(edge4(), &["--http1.1"])
        .starts_with("backend-"));
}

/// Every name a client forges in [`custom_certificate_header_names_reach_the_backend`]: the
/// listener's own and the defaults it replaced, each in two spellings.
const FORGED_NAMES: [&str; 8] = [
    "X-Client-PEM",
    "X-Client-Chain_0",
    "X-Client-DER",
    "X-Client-DER-Chain_0",
    "SSL_CLIENT_CERT",
    "CERT_CHAIN_0",
    "X-SSL-Client-Cert",
    "X-SSL-Client-Cert-Chain_0",
];

#[test]
fn custom_certificate_header_names_reach_the_backend() {
    require_root();
    let mut listener = Listener::v4("kc", EDGE_PORT);
    listener.formats = &["apache", "haproxy"];
    listener.settings = vec![
        "client_cert_names = { apache_cert = \"X-Client-PEM\", apache_chain_prefix = \
         \"X-Client-Chain\", haproxy_cert = \"X-Client-DER\", haproxy_chain_prefix = \
         \"X-Client-DER-Chain\" }"
            .to_owned(),
    ];
    let lab = Lab::start("slecfg1", &[listener]);
    let leaf = lab.pki.client.der().as_ref().to_vec();
    let inter = lab.pki.client.intermediates()[0].as_ref().to_vec();
    let forged = header_args(FORGED_NAMES.iter().enumerate().flat_map(|(i, name)| {
        [name.to_ascii_uppercase(), name.to_ascii_lowercase()]
            .map(|spelled| (spelled, format!("forged-{i}")))
    }));
    for http in HTTP_VERSIONS {
        let (body, h) = lab.echo(edge4(), http, Some(&lab.pki.client), &forged);
        assert_decoded(
            &h,
            &body,
            http,
            &[
                ("x-client-pem", pem_der, &leaf, "apache"),
                ("x-client-chain_0", pem_der, &inter, "apache chain"),
                ("x-client-der", b64_der, &leaf, "haproxy"),
                ("x-client-der-chain_0", b64_der, &inter, "haproxy chain"),
            ],
        );
        for absent in [
            "x-client-chain_1",
            "x-client-der-chain_1",
            "ssl_client_cert",
            "cert_chain_0",
            "x-ssl-client-cert",
            "x-ssl-client-cert-chain_0",
        ] {
            assert!(
                values(&h, absent).is_empty(),
                "{http}: {absent} set:\n{body}"
            );
        }
    }

    // Without a certificate none of them is set, and no forgery passes either.
    let (body, h) = lab.echo(edge4(), "--http1.1", None, &forged);
    assert!(body.starts_with("backend-"), "{body}");
    for name in FORGED_NAMES {
        assert!(
            values(&h, &name.to_ascii_lowercase()).is_empty(),
            "{name}:\n{body}"
        );
    }
}

#[test]
fn path_prefix_serves_only_its_paths_and_removes_it() {
    require_root();
    let mut listener = Listener::v4("kc", EDGE_PORT);
    listener.settings = vec!["path_prefix = \"/auth\"".to_owned()];
    let lab = Lab::start("slecfg2", &[listener]);
    for http in HTTP_VERSIONS {
        let (code, body) = lab.fetch(
            edge4(),
            "/auth/realms/x?y=1",
            &[http, "-H", "X-Forwarded-Prefix: /forged"],
        );
        assert_eq!(code, 200, "{http}: {body}");
        assert_eq!(
            body.lines().nth(1),
            Some("GET /realms/x?y=1 HTTP/1.1"),
            "{http}: the prefix is removed, the query kept:\n{body}"
        );
        let h = headers(&body);
        assert_eq!(
            values(&h, "x-forwarded-prefix"),
            ["/auth"],
            "{http}: {body}"
        );

        let (code, body) = lab.fetch(edge4(), "/auth", &[http]);
        assert_eq!(code, 200, "{http}: {body}");
        assert_eq!(
            body.lines().nth(1),
            Some("GET / HTTP/1.1"),
            "{http}: {body}"
        );

        let served = lab.backend_connections();
        for outside in ["/other", "/authx/realms", "/", "/other?p=/auth"] {
            let (code, body) = lab.fetch(edge4(), outside, &[http]);
            assert_eq!(code, 404, "{http} {outside}: {body}");
            assert!(!body.contains("backend-"), "{http} {outside}: {body}");
        }
        assert_eq!(
            lab.backend_connections(),
            served,
            "{http}: a request outside the prefix reached a backend"
        );
    }
}

#[test]
fn a_backend_that_never_answers_gets_the_client_a_504() {
    require_root();
    let mut listener = Listener::v4("kc", EDGE_PORT);
    listener.settings = vec!["response_timeout = \"1s\"".to_owned()];
    let mut lab = Lab::start("slecfg3", &[listener]);
    assert!(lab.curl(edge4(), &["--http1.1"]).starts_with("backend-"));
    lab.silence_backends();
    for (n, http) in ["--http1.1", "--http2"].into_iter().enumerate() {
        let (code, body) = lab.fetch(edge4(), "/realms/x", &[http]);
        assert_eq!(code, 504, "{http}: {body}");
        assert_eq!(
            lab.backend_connections(),
            n as u64 + 1,
            "{http}: the silent backend took the request (no retry on another)"
        );
    }
}

/// A sample of the lab daemon's `/metrics` (summed over the samples whose labels include
/// `labels`; 0 when there is none).
fn metric(lab: &Lab, name: &str, labels: &[(&str, &str)]) -> f64 {
    let management: SocketAddr = "127.0.0.1:9019".parse().expect("management address");
    lab.daemon
        .metric(lab.topo.gateway(), management, name, labels)
        .unwrap_or_else(|e| panic!("scrape /metrics: {e:#}"))
}

/// Every `sluice_edge_tls_handshakes_total` outcome.
const HANDSHAKE_OUTCOMES: [&str; 12] = [
    "ok",
    "no_client_cert",
    "cert_expired",
    "cert_not_yet_valid",
    "unknown_ca",
    "chain_too_deep",
    "bad_cert",
    "client_alert",
    "protocol",
    "eof",
    "timeout",
    "io",
];

#[test]
#[allow(clippy::float_cmp)] // every value is a small integer, exact in f64
fn edge_metrics_count_responses_handshakes_and_client_certificates_across_a_reload() {
    require_root();
    let mut listener = Listener::v4("kc", EDGE_PORT);
    listener.client_auth = "required";
    let mut lab = Lab::start("slem1", &[listener]);
    let kc = ("edge", "kc");
    let handshakes = |lab: &Lab, outcome| {
        metric(
            lab,
            "sluice_edge_tls_handshakes_total",
            &[kc, ("outcome", outcome)],
        )
    };
    for outcome in HANDSHAKE_OUTCOMES {
        assert_eq!(
            handshakes(&lab, outcome),
            0.0,
            "{outcome} before any traffic"
        );
    }

    // Good requests on both sides of a reload: the counts carry on.
    let good = |lab: &Lab, n: usize| {
        for i in 0..n {
            let http = if i % 2 == 0 { "--http1.1" } else { "--http2" };
            let body = lab.with_client_cert(edge4(), &[http]);
            assert!(body.starts_with("backend-"), "{http}: {body}");
        }
    };
    good(&lab, 2);
    let out = lab.reload();
    assert!(
        out.status.success(),
        "sluice reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    good(&lab, 2);

    // Handshakes the verifier refuses.
    for (who, result) in lab.refused_clients("--http1.1") {
        assert!(result.is_err(), "the {who} client was served");
    }

    // No backend listens any more: sluice answers 502 itself (curl --fail: exit 22).
    lab.servers.clear();
    let err = lab
        .try_curl_as(&lab.pki.client, edge4(), &["--http1.1"])
        .expect_err("served without a backend");
    assert!(
        format!("{err:#}").contains("exit status: 22)"),
        "not an HTTP error status: {err:#}"
    );

    let code = |lab: &Lab, code| metric(lab, "sluice_edge_requests_total", &[kc, ("code", code)]);
    assert_eq!(code(&lab, "200"), 4.0, "{}", lab.daemon.log_text());
    assert_eq!(code(&lab, "502"), 1.0);
    let answered = metric(&lab, "sluice_edge_requests_total", &[kc]);
    assert_eq!(answered, 5.0, "responses of any code");
    assert_eq!(
        metric(&lab, "sluice_edge_request_duration_seconds_count", &[kc]),
        answered,
        "every response is in the duration histogram"
    );
    for outcome in HANDSHAKE_OUTCOMES {
        let want = match outcome {
            "ok" => 5.0,
            "no_client_cert" | "cert_expired" | "unknown_ca" => 1.0,
            _ => 0.0,
        };
        assert_eq!(handshakes(&lab, outcome), want, "handshakes: {outcome}");
    }
    let certs = |lab: &Lab, outcome| {
        metric(
            lab,
            "sluice_edge_client_certs_total",
            &[kc, ("outcome", outcome)],
        )
    };
    assert_eq!(certs(&lab, "verified"), 5.0);
    assert_eq!(certs(&lab, "none"), 0.0);

    // Every client has gone: nothing stays open or in flight (the listener may notice the
    // last close a moment after curl exits).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let open = metric(&lab, "sluice_edge_connections_open", &[kc]);
        let in_flight = metric(&lab, "sluice_edge_requests_in_flight", &[kc]);
        if open == 0.0 && in_flight == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} connections open, {in_flight} requests in flight"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
