//! What a client can and cannot make the edge forward (issue 12, items 1, 2, 6 and 8): the
//! real `sluice run` with a TLS listener (every certificate header format, client certificate
//! optional) in front of a backend that echoes the raw request bytes it received (head, body
//! and trailers) and accepts every protocol upgrade, as Hypercorn or Vert.x accept `h2c`.
//! Clients: curl over HTTP/1.1 and HTTP/2, `openssl s_client` for raw request heads, nghttp
//! for HTTP/2 fields curl will not send.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge_headers -- --test-threads=1`.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};

use sluice_tests::{
    connect_tcp,
    edge_lab::{
        edge4, Lab, Listener, ALL_FORMATS, BACKEND_PORT, EDGE_PORT, FORWARDED_HEADERS,
        LEAF_CERT_HEADERS, SERVER_NAME,
    },
    require_root,
    servers::tcp_server,
    topology::CLIENT_ADDR4,
};

/// Reads one request: the head, then a `Content-Length` or chunked body with its trailers.
/// `None` when the connection ended first.
fn read_request(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = find(&raw, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let body_start = end + 4;
            let complete = if head.contains("transfer-encoding: chunked") {
                // The last chunk, then trailer lines, then an empty line.
                find(&raw[body_start..], b"0\r\n").is_some_and(|zero| {
                    find(&raw[body_start + zero..], b"\r\n\r\n").is_some()
                        || raw[body_start + zero..].starts_with(b"0\r\n\r\n")
                })
            } else {
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                raw.len() >= body_start + len
            };
            if complete {
                return Ok(Some(raw));
            }
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Requests the raw backends received, in this test process.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

fn requests() -> u64 {
    REQUESTS.load(Ordering::Relaxed)
}

/// The backend: answers every request `200` with the raw request as its body; a request with
/// an `Upgrade` header, or for `/switch`, gets `101 Switching Protocols` to what it asked (or
/// `h2c`), after which every byte that arrives is echoed back prefixed with `TUNNEL:`.
fn raw_backend(mut stream: TcpStream, _name: &str) -> std::io::Result<()> {
    while let Some(raw) = read_request(&mut stream)? {
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        let text = String::from_utf8_lossy(&raw).into_owned();
        let lower = text.to_ascii_lowercase();
        let upgrade = lower
            .lines()
            .find_map(|l| l.strip_prefix("upgrade:"))
            .map(str::trim);
        if upgrade.is_some() || text.starts_with("GET /switch ") {
            let to = upgrade.unwrap_or("h2c");
            write!(
                stream,
                "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {to}\r\n\r\n"
            )?;
            let mut buf = [0u8; 4096];
            loop {
                let n = stream.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                stream.write_all(b"TUNNEL:")?;
                stream.write_all(&buf[..n])?;
            }
        }
        write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
            text.len()
        )?;
    }
    Ok(())
}

fn lab(prefix: &str) -> Lab {
    let mut listener = Listener::v4("hdr", EDGE_PORT);
    listener.formats = &ALL_FORMATS;
    let mut lab = Lab::start(prefix, &[listener]);
    lab.replace_backends(|ns, i| {
        tcp_server(ns, &format!("raw-{i}"), BACKEND_PORT, raw_backend).expect("raw backend")
    });
    lab
}

/// The header lines of the request the backend echoed (up to the blank line), as
/// `(lowercase name, value)`.
fn echoed_headers(body: &str) -> Vec<(String, String)> {
    let head = body.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

fn values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The status code of the first response in `raw`, or 0.
fn status(raw: &str) -> u16 {
    raw.lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn h2c_upgrades_never_open_a_tunnel_to_the_backend() {
    require_root();
    let lab = lab("slh2c");
    // A client asks for h2c and sends what it would say inside the tunnel right behind it.
    let asked = "GET /h2c HTTP/1.1\r\nHost: kc.test\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                 Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n\
                 Client-Cert: :Zm9yZ2Vk:\r\n\r\n";
    let got = lab.raw_tls(asked, true);
    assert_eq!(
        status(&got),
        200,
        "the request is served, not upgraded:\n{got}"
    );
    assert!(
        !got.contains("101 Switching"),
        "no 101 reaches the client:\n{got}"
    );
    assert!(!got.contains("TUNNEL:"), "nothing was tunnelled:\n{got}");
    let body = &got[got.find("\r\n\r\n").expect("a response head") + 4..];
    let h = echoed_headers(body);
    for gone in ["upgrade", "http2-settings", "connection"] {
        assert!(
            values(&h, gone).is_empty(),
            "{gone} reached the backend:\n{body}"
        );
    }
    assert_eq!(values(&h, "x-forwarded-for"), [CLIENT_ADDR4.to_string()]);

    // Listed next to WebSocket, h2c is dropped and the WebSocket upgrade alone goes through.
    let both = "GET /ws HTTP/1.1\r\nHost: kc.test\r\nConnection: Upgrade\r\n\
                Upgrade: h2c, websocket\r\n\r\nhello";
    let got = lab.raw_tls(both, true);
    assert_eq!(status(&got), 101, "{got}");
    assert!(
        got.to_ascii_lowercase().contains("upgrade: websocket"),
        "{got}"
    );
    assert!(
        got.contains("TUNNEL:hello"),
        "the WebSocket bytes flow:\n{got}"
    );

    // A backend that switches protocols on a request that asked for no upgrade gets the
    // client a 502, never a tunnel.
    let got = lab.raw_tls(
        "GET /switch HTTP/1.1\r\nHost: kc.test\r\nConnection: close\r\n\r\n",
        true,
    );
    assert_eq!(status(&got), 502, "{got}");
    assert!(!got.contains("TUNNEL:"), "{got}");

    // CONNECT would make a tunnel too.
    let got = lab.raw_tls(
        "CONNECT kc.test:443 HTTP/1.1\r\nHost: kc.test:443\r\n\r\n",
        true,
    );
    assert_eq!(status(&got), 405, "{got}");
}

/// Every header sluice sets for a client with a verified certificate (no intermediate), all
/// formats selected.
fn set_by_sluice() -> Vec<&'static str> {
    ["host"]
        .into_iter()
        .chain(LEAF_CERT_HEADERS)
        .chain(FORWARDED_HEADERS)
        .collect()
}

#[test]
fn a_clients_connection_header_cannot_remove_what_sluice_sets() {
    require_root();
    let lab = lab("slconn");
    let mut named = set_by_sluice();
    named.extend([
        "cert_chain_0",
        "client-cert-chain",
        "x-ssl-client-cert-chain_0",
        "x-forwarded-prefix",
        "content-length",
        "x-gone",
    ]);
    let connection = format!("Connection: keep-alive, {}", named.join(", "));
    let body = lab.with_client_cert(
        edge4(),
        &[
            "--http1.1",
            "-H",
            &connection,
            "-H",
            "X-Gone: 1",
            "-H",
            "X-Kept: 1",
        ],
    );
    let h = echoed_headers(&body);
    for name in set_by_sluice() {
        assert_eq!(
            values(&h, name).len(),
            1,
            "{name} once, set by sluice:\n{body}"
        );
    }
    assert_eq!(values(&h, "x-forwarded-for"), [CLIENT_ADDR4.to_string()]);
    assert_eq!(values(&h, "x-real-ip"), [CLIENT_ADDR4.to_string()]);
    assert_eq!(values(&h, "host"), [format!("{SERVER_NAME}:{EDGE_PORT}")]);
    assert_eq!(values(&h, "ssl-client-verify"), ["SUCCESS"]);
    // What the client may name is still removed; the rest passes.
    assert!(values(&h, "x-gone").is_empty(), "{body}");
    assert_eq!(values(&h, "x-kept"), ["1"]);
    assert!(values(&h, "connection").is_empty(), "{body}");
}

/// Spellings of managed headers that backends mapping `_` and `-` to one variable read as the
/// real thing, and chain headers beyond the ten sluice writes.
const VARIANTS: [&str; 14] = [
    "X_Forwarded_For: 203.0.113.66",
    "X_Real_IP: 203.0.113.66",
    "X-Forwarded_Proto: http",
    "X_Forwarded_Host: evil.test",
    "X_SSL_Client_Cert: forged",
    "Client_Cert: :Zm9yZ2Vk:",
    "Client_Cert_Chain: :Zm9yZ2Vk:",
    "SSL-CLIENT-CERT-CHAIN-0: forged",
    "SSL_CLIENT_CERT_CHAIN_1: forged",
    "CERT-CHAIN-0: forged",
    "CERT_CHAIN_10: forged",
    "X-SSL-Client-Cert-Chain_10: forged",
    "X_Forwarded_Client_Cert: By=evil",
    "SSL_Client_Verify: SUCCESS",
];

#[test]
fn underscore_and_index_variants_of_managed_headers_never_reach_the_backend() {
    require_root();
    let lab = lab("slvar");
    let mut args: Vec<&str> = VARIANTS.iter().flat_map(|v| ["-H", *v]).collect();
    args.extend(["-H", "X_Unrelated_Header: kept"]);
    for version in ["--http1.1", "--http2"] {
        let mut with = args.clone();
        with.push(version);
        // Without a certificate sluice sets no certificate header of these names itself.
        let body = lab.curl(edge4(), &with);
        let h = echoed_headers(&body);
        let folded = |n: &str| n.to_ascii_lowercase().replace('_', "-");
        for variant in VARIANTS {
            let name = folded(variant.split(':').next().unwrap_or_default());
            let forged: Vec<&(String, String)> = h
                .iter()
                .filter(|(n, v)| {
                    folded(n) == name && v.contains("forged")
                        || folded(n) == name
                            && (v.contains("203.0.113.66")
                                || v.contains("evil")
                                || v.contains("Zm9yZ2Vk")
                                || v.contains("By=evil"))
                })
                .collect();
            assert!(
                forged.is_empty(),
                "{version}: {variant} passed as {forged:?}:\n{body}"
            );
        }
        assert_eq!(
            values(&h, "x-forwarded-for"),
            [CLIENT_ADDR4.to_string()],
            "{version}"
        );
        assert_eq!(values(&h, "ssl-client-verify"), ["NONE"], "{version}");
        assert_eq!(values(&h, "x_unrelated_header"), ["kept"], "{version}");
    }
}

#[test]
fn host_rules_follow_rfc_9112_and_9113() {
    require_root();
    let lab = lab("slhost");
    let before = requests();
    let refused = [
        (
            "HTTP/1.1 without Host",
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: kc.test\r\nHost: other.test\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "Host with userinfo",
            "GET / HTTP/1.1\r\nHost: user@kc.test\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "empty Host",
            "GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
            400,
        ),
    ];
    for (what, request, code) in refused {
        let got = lab.raw_tls(request, false);
        assert_eq!(status(&got), code, "{what}:\n{got}");
    }
    assert_eq!(requests(), before, "no refused request reached a backend");

    // HTTP/1.0 without Host is served under the listener's own authority.
    let got = lab.raw_tls("GET /old HTTP/1.0\r\n\r\n", false);
    assert_eq!(status(&got), 200, "{got}");
    let body = &got[got.find("\r\n\r\n").expect("a response head") + 4..];
    let h = echoed_headers(body);
    assert_eq!(
        values(&h, "host"),
        [format!("{SERVER_NAME}:{EDGE_PORT}")],
        "{body}"
    );
    assert!(body.starts_with("GET /old HTTP/1.1\r\n"), "{body}");

    // HTTP/2: `:authority` wins over a different `host`; userinfo, padded values and two
    // `host` fields are refused.
    let served = h2_get(&lab, "kc.test:8443", &[("host", "other.test")]);
    assert_eq!(served.0, 200, "{}", served.1);
    assert_eq!(values(&echoed_headers(&served.1), "host"), ["kc.test:8443"]);
    for (what, authority, fields) in [
        ("userinfo in :authority", "user@kc.test:8443", &[][..]),
        ("leading space", "kc.test:8443", &[("x-padded", " v")][..]),
        ("trailing tab", "kc.test:8443", &[("x-padded", "v\t")][..]),
        (
            "two host fields",
            "kc.test:8443",
            &[("host", "a.test"), ("host", "b.test")][..],
        ),
    ] {
        let got = h2_get(&lab, authority, fields);
        assert_eq!(got.0, 400, "{what}: {}", got.1);
    }
    assert_eq!(requests(), before + 2, "only the two served requests");
}

/// One HTTP/2 `GET /h2` from the client namespace with `:authority` and extra fields sent
/// exactly as given (curl and nghttp trim values): the status and the body.
fn h2_get(lab: &Lab, authority: &str, fields: &[(&str, &str)]) -> (u16, String) {
    use tokio_rustls::rustls::{self, pki_types::pem::PemObject as _, pki_types::CertificateDer};

    let stream = connect_tcp(lab.topo.client(), edge4()).expect("connect to the edge");
    stream.set_nonblocking(true).expect("non-blocking");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(lab.pki.ca_cert()).expect("CA file") {
        roots.add(cert.expect("CA certificate")).expect("add CA");
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let tcp = tokio::net::TcpStream::from_std(stream).expect("tokio stream");
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).expect("server name");
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake");
        let (mut client, connection) = h2::client::handshake(tls).await.expect("h2 handshake");
        tokio::spawn(connection);
        let mut request = hyper::http::Request::get(format!("https://{authority}/h2"));
        for (name, value) in fields {
            request = request.header(
                *name,
                hyper::http::HeaderValue::from_bytes(value.as_bytes()).expect("value"),
            );
        }
        let request = request.body(()).expect("request");
        let (response, _) = client
            .send_request(request, true)
            .expect("send the request");
        let response = tokio::time::timeout(std::time::Duration::from_secs(5), response)
            .await
            .expect("an answer within 5 s")
            .expect("a response");
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("body");
            let _ = body.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        (status, String::from_utf8_lossy(&text).into_owned())
    })
}

#[test]
fn trailers_never_carry_headers_to_the_backend() {
    require_root();
    let lab = lab("sltrl");
    let request = "POST /t HTTP/1.1\r\nHost: kc.test\r\nTransfer-Encoding: chunked\r\n\
                   TE: trailers\r\nTrailer: X-Forwarded-For, Client-Cert, X-Trailer\r\n\
                   Connection: close\r\n\r\n\
                   5\r\nhello\r\n0\r\nX-Forwarded-For: 203.0.113.66\r\n\
                   Client-Cert: :Zm9yZ2Vk:\r\nX-Trailer: 1\r\n\r\n";
    let got = lab.raw_tls(request, true);
    assert_eq!(status(&got), 200, "{got}");
    let echoed = &got[got.find("\r\n\r\n").expect("a response head") + 4..];
    assert!(echoed.contains("hello"), "the body arrives:\n{echoed}");
    for forged in ["203.0.113.66", "Zm9yZ2Vk", "X-Trailer", "x-trailer"] {
        assert!(
            !echoed.contains(forged),
            "{forged} crossed in a trailer:\n{echoed}"
        );
    }
    let h = echoed_headers(echoed);
    assert_eq!(values(&h, "x-forwarded-for"), [CLIENT_ADDR4.to_string()]);
    assert!(values(&h, "trailer").is_empty(), "{echoed}");
}

#[test]
fn pipelined_requests_each_carry_exactly_sluices_headers() {
    require_root();
    let lab = lab("slpipe");
    // Three requests in one write: the later ones forge what the first did not, and the
    // second names a managed header in `Connection`.
    let pipelined = "GET /one HTTP/1.1\r\nHost: kc.test\r\n\r\n\
                     GET /two HTTP/1.1\r\nHost: kc.test\r\nConnection: X-Forwarded-For\r\n\
                     X-Forwarded-For: 203.0.113.66\r\nClient-Cert: :Zm9yZ2Vk:\r\n\r\n\
                     GET /three HTTP/1.1\r\nHost: kc.test\r\nX_SSL_Client_Cert: forged\r\n\
                     Connection: close\r\n\r\n";
    let got = lab.raw_tls(pipelined, true);
    let answers: Vec<&str> = got.split("HTTP/1.1 200 OK").skip(1).collect();
    assert_eq!(answers.len(), 3, "three answers, in order:\n{got}");
    for (answer, path) in answers.iter().zip(["/one", "/two", "/three"]) {
        let body = &answer[answer.find("\r\n\r\n").expect("a response head") + 4..];
        assert!(body.starts_with(&format!("GET {path} HTTP/1.1")), "{body}");
        let h = echoed_headers(body);
        assert_eq!(
            values(&h, "x-forwarded-for"),
            [CLIENT_ADDR4.to_string()],
            "{path}"
        );
        assert_eq!(values(&h, "client-cert").len(), 1, "{path}: {body}");
        assert_eq!(values(&h, "ssl-client-verify"), ["SUCCESS"], "{path}");
        for forged in ["203.0.113.66", "Zm9yZ2Vk", "forged"] {
            assert!(!body.contains(forged), "{path}: {forged} passed:\n{body}");
        }
    }
}
