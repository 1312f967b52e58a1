//! sluice's routes in front of the real Keycloak (issue 20, item 4) and the real oauth2-proxy
//! meeting it (the ground for item 6); sticky sessions are `keycloak_sticky.rs`:
//!
//! - the Keycloak presets: what the public listener exposes reaches Keycloak and works (OIDC
//!   discovery, tokens, the login page and its resources); what it hides never reaches
//!   Keycloak in any spelling (Keycloak's own access log has no line for it); the admin
//!   console works on the `keycloak-admin` listener only; the management port is never a
//!   backend port;
//! - oauth2-proxy with Keycloak as its OIDC provider, through sluice.
//!
//! Needs root, and the Keycloak and oauth2-proxy that `cargo xtask setup` fetches and builds;
//! without them the tests fail and say why. Run with
//! `cargo test -p sluice-tests --test keycloak_routes -- --test-threads=1`.

#![allow(clippy::float_cmp)] // every metric compared is a small integer count, exact in f64

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::{
    keycloak::{ADMIN_PASSWORD, ADMIN_USER, HTTP_PORT, MANAGEMENT_PORT},
    keycloak_browser::{jwt_claims, login_form_action, Browser},
    keycloak_edge::{
        access_lines, EdgeLab, ADMIN_PORT, EMAIL, MANAGEMENT, PASSWORD, PROXY_CLIENT, PROXY_LISTEN,
        PROXY_SECRET, PUBLIC_PORT, REALM, SERVER_NAME, USER, WEB_CLIENT,
    },
    netns::NetNs,
    oauth2_proxy::{Installation as ProxyInstallation, NetnsHosts, OAuth2Proxy, Spec as ProxySpec},
    require_root,
    topology::{backend_addr4, GW_CLIENT_ADDR4},
};

const HTTP: [&str; 2] = ["--http1.1", "--http2"];

/// curl from the client namespace to `port` of the gateway, the path sent as written, with
/// `X-Flow: flow` (Keycloak logs it): status and body.
fn fetch(
    client: &NetNs,
    ca: &str,
    port: u16,
    path: &str,
    flow: &str,
    extra: &[&str],
) -> (u16, String) {
    let resolve = format!("{SERVER_NAME}:{port}:{GW_CLIENT_ADDR4}");
    let url = format!("https://{SERVER_NAME}:{port}{path}");
    let flow = format!("X-Flow: {flow}");
    let mut args = vec![
        "curl",
        "-sS",
        "--max-time",
        "60",
        "--path-as-is",
        "--resolve",
        &resolve,
        "--cacert",
        ca,
        "-H",
        &flow,
        "-w",
        "\n%{http_code}",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = client
        .run(&args)
        .unwrap_or_else(|e| panic!("curl {url}: {e:#}"));
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    let code = code
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no status in {out:?}"));
    (code, body.to_owned())
}

fn metric(lab: &EdgeLab, name: &str, labels: &[(&str, &str)]) -> f64 {
    let management: SocketAddr = MANAGEMENT.parse().expect("management address");
    lab.daemon
        .metric(lab.topo.gateway(), management, name, labels)
        .unwrap_or_else(|e| panic!("scrape /metrics: {e:#}"))
}

/// The first `/resources/...` URL path Keycloak's login page loads (its stylesheet or script).
fn resource_path(page: &str) -> Option<String> {
    let at = page.find("\"/resources/")? + 1;
    let end = page[at..].find('"')? + at;
    Some(page[at..end].replace("&amp;", "&"))
}

/// TCP sockets in `ns` with one end on `port`, other than its listener and loopback ones.
fn sockets_on_port(ns: &NetNs, port: u16) -> Vec<String> {
    let out = ns
        .run(&["ss", "-Htan"])
        .unwrap_or_else(|e| panic!("ss in {}: {e:#}", ns.name()));
    out.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() >= 5
                && f[0] != "LISTEN"
                && (f[3].ends_with(&format!(":{port}")) || f[4].ends_with(&format!(":{port}")))
                && !f[4].starts_with("127.")
        })
        .map(str::to_owned)
        .collect()
}

/// Item 4: the presets in front of the real Keycloak.
#[test]
fn keycloak_preset_exposes_realms_and_resources_and_nothing_else_reaches_keycloak() {
    require_root();
    let lab = EdgeLab::start("kr1");
    let client = lab.topo.client();
    let ca = lab.pki.ca_cert().display().to_string();
    let get = |port: u16, path: &str, flow: &str, extra: &[&str]| {
        fetch(client, &ca, port, path, flow, extra)
    };
    let issuer = format!("https://{SERVER_NAME}:{PUBLIC_PORT}/realms/{REALM}");
    let mut reached = Vec::new();

    // Exposed: discovery, a token, the login page and what it loads.
    for http in HTTP {
        let flow = format!("public-discovery{http}");
        let (code, body) = get(
            PUBLIC_PORT,
            &format!("/realms/{REALM}/.well-known/openid-configuration"),
            &flow,
            &[http],
        );
        assert_eq!(code, 200, "{http}: {body}\n{}", lab.logs());
        let doc: Value = serde_json::from_str(&body).expect("discovery JSON");
        assert_eq!(doc["issuer"], issuer.as_str(), "{http}: {body}");
        reached.push(flow);

        let flow = format!("public-token{http}");
        let user = format!("username={USER}");
        let password = format!("password={PASSWORD}");
        let (code, body) = get(
            PUBLIC_PORT,
            &format!("/realms/{REALM}/protocol/openid-connect/token"),
            &flow,
            &[
                http,
                "-d",
                "grant_type=password",
                "-d",
                "client_id=app",
                "-d",
                &user,
                "-d",
                &password,
            ],
        );
        assert_eq!(code, 200, "{http}: {body}");
        let token: Value = serde_json::from_str(&body).expect("token JSON");
        let claims = jwt_claims(token["access_token"].as_str().expect("access_token"))
            .expect("token claims");
        assert_eq!(claims["preferred_username"], USER, "{http}: {claims}");
        assert_eq!(claims["iss"], issuer.as_str(), "{http}: {claims}");
        reached.push(flow);

        let flow = format!("public-login{http}");
        let (code, page) = get(
            PUBLIC_PORT,
            &format!(
                "/realms/{REALM}/protocol/openid-connect/auth?client_id={WEB_CLIENT}&\
                 response_type=code&scope=openid&redirect_uri=https%3A%2F%2Fapp.test%2Fcallback"
            ),
            &flow,
            &[http],
        );
        assert_eq!(code, 200, "{http}: {page}");
        assert!(page.contains("id=\"kc-form-login\""), "{http}: {page}");
        reached.push(flow);

        let resource = resource_path(&page)
            .unwrap_or_else(|| panic!("the login page loads nothing under /resources/:\n{page}"));
        let flow = format!("public-resource{http}");
        let (code, body) = get(PUBLIC_PORT, &resource, &flow, &[http]);
        assert_eq!(code, 200, "{http} {resource}: {body}");
        reached.push(flow);
    }

    // Hidden on the public listener, in every spelling: sluice answers, Keycloak never sees
    // the request (which it would have answered: see the direct requests below).
    let hidden: [(&str, u16); 16] = [
        ("/admin/", 404),
        ("/admin", 404),
        ("/admin/master/console/", 404),
        ("/admin/realms/sluice", 404),
        ("/metrics", 404),
        ("/health", 404),
        ("/health/ready", 404),
        ("/", 404),
        ("/realms/../admin/", 404),
        ("/%61dmin/", 404),
        ("//admin", 404),
        ("/realms/%2e%2e/admin/", 404),
        ("/realms/%2E%2E/admin/master/console/", 404),
        ("/realms/..;/admin/", 400),
        ("/admin;jsessionid=x/", 400),
        ("/realms/%2e%2e%2fadmin/", 400),
    ];
    let sent = metric(
        &lab,
        "sluice_edge_backend_requests_total",
        &[("edge", "kc")],
    );
    let mut n = 0;
    for http in HTTP {
        for (path, want) in hidden {
            n += 1;
            let (code, body) = get(PUBLIC_PORT, path, &format!("hidden-{n}"), &[http]);
            assert_eq!(code, want, "{http} {path}: {body}");
        }
        // The management paths on the admin listener too.
        for path in ["/metrics", "/health", "/health/ready", "/health/live"] {
            n += 1;
            let (code, body) = get(ADMIN_PORT, path, &format!("hidden-{n}"), &[http]);
            assert_eq!(code, 404, "admin listener, {http} {path}: {body}");
        }
    }
    assert_eq!(
        metric(
            &lab,
            "sluice_edge_backend_requests_total",
            &[("edge", "kc")]
        ),
        sent,
        "a hidden path reached Keycloak"
    );
    assert_eq!(
        metric(
            &lab,
            "sluice_edge_unrouted_requests_total",
            &[("edge", "kc"), ("outcome", "no_route")]
        ),
        26.0
    );
    assert_eq!(
        metric(
            &lab,
            "sluice_edge_unrouted_requests_total",
            &[("edge", "kc"), ("outcome", "bad_path")]
        ),
        6.0
    );

    // The admin console and API work on the admin listener only.
    let console = format!("https://{SERVER_NAME}:{ADMIN_PORT}/admin/master/console/");
    for http in HTTP {
        let flow = format!("admin-redirect{http}");
        let (code, location) = get(
            ADMIN_PORT,
            "/admin",
            &flow,
            // Replaces `fetch`'s `-w`, still ending with the status line it reads.
            &[
                http,
                "-o",
                "/dev/null",
                "-w",
                "%{redirect_url}\n%{http_code}",
            ],
        );
        assert_eq!((code, location.trim()), (302, console.as_str()), "{http}");
        reached.push(flow);
        let flow = format!("admin-console{http}");
        let (code, body) = get(ADMIN_PORT, "/admin/master/console/", &flow, &[http]);
        assert_eq!(code, 200, "{http}: {body}");
        assert!(
            body.contains("<div id=\"app\""),
            "{http}: not the console: {body}"
        );
        reached.push(flow);
    }
    let admin_user = format!("username={ADMIN_USER}");
    let admin_password = format!("password={ADMIN_PASSWORD}");
    let (code, body) = get(
        ADMIN_PORT,
        "/realms/master/protocol/openid-connect/token",
        "admin-token",
        &[
            "-d",
            "grant_type=password",
            "-d",
            "client_id=admin-cli",
            "-d",
            &admin_user,
            "-d",
            &admin_password,
        ],
    );
    assert_eq!(code, 200, "{body}");
    reached.push("admin-token".into());
    let token: Value = serde_json::from_str(&body).expect("admin token JSON");
    let bearer = format!(
        "Authorization: Bearer {}",
        token["access_token"].as_str().expect("admin access token")
    );
    let (code, body) = get(
        ADMIN_PORT,
        &format!("/admin/realms/{REALM}"),
        "admin-api",
        &["-H", &bearer],
    );
    assert_eq!(code, 200, "{body}");
    let realm: Value = serde_json::from_str(&body).expect("realm JSON");
    assert_eq!(realm["realm"], REALM, "{body}");
    reached.push("admin-api".into());
    // The same call, token and all, on the public listener: sluice's 404.
    let (code, body) = get(
        PUBLIC_PORT,
        &format!("/admin/realms/{REALM}"),
        "hidden-api",
        &["-H", &bearer],
    );
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        metric(
            &lab,
            "sluice_edge_route_requests_total",
            &[("edge", "kc-admin"), ("route", "admin")]
        ),
        5.0
    );

    // A last exposed request: once it is logged, everything sent before it would be too.
    let (code, body) = get(
        PUBLIC_PORT,
        &format!("/realms/{REALM}/.well-known/openid-configuration"),
        "last",
        &[],
    );
    assert_eq!(code, 200, "{body}");
    reached.push("last".into());
    let log = lab.keycloak_log();
    let mut lines = access_lines(&log);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lines.iter().any(|l| l.0 == "last") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        lines = access_lines(&log);
    }
    for flow in &reached {
        assert!(
            lines.iter().any(|l| &l.0 == flow),
            "Keycloak's access log has no line for {flow}:\n{lines:?}"
        );
    }
    let leaked: Vec<_> = lines
        .iter()
        .filter(|l| l.0.starts_with("hidden-"))
        .collect();
    assert!(
        leaked.is_empty(),
        "hidden requests reached Keycloak: {leaked:?}"
    );

    // The management port: no connection from sluice's side, nor to Keycloak's, ever used it
    // (sluice proxies to backend_port only; this lab has no health check).
    let gateway = lab.topo.gateway();
    let backend = &lab.topo.backends()[0];
    assert_eq!(
        sockets_on_port(gateway, MANAGEMENT_PORT),
        Vec::<String>::new()
    );
    assert_eq!(
        sockets_on_port(backend, MANAGEMENT_PORT),
        Vec::<String>::new()
    );

    // Controls: Keycloak itself serves what sluice hid, asked directly from the gateway.
    let direct = |port: u16, path: &str| {
        sluice_tests::curl::http_status(
            gateway,
            &format!("http://{}:{port}{path}", backend_addr4(0)),
            10,
        )
        .unwrap_or_else(|e| panic!("direct {path}: {e:#}"))
    };
    assert_eq!(direct(HTTP_PORT, "/admin/master/console/"), 200);
    assert_eq!(direct(MANAGEMENT_PORT, "/metrics"), 200);
    assert_eq!(direct(MANAGEMENT_PORT, "/health/ready"), 200);
    eprintln!(
        "exposed requests reached Keycloak ({} access lines), {n} hidden ones did not; \
         Keycloak ready after {:.1} s",
        lines.len(),
        lab.keycloak_start.as_secs_f64()
    );
}

/// Item 6's ground: oauth2-proxy with Keycloak (through sluice's public listener) as its
/// OIDC provider, in the mode a forward-auth front end calls it.
#[test]
fn oauth2_proxy_signs_in_through_keycloak_behind_sluice() {
    require_root();
    let proxy_install = ProxyInstallation::find().unwrap_or_else(|err| panic!("{err:#}"));
    let lab = EdgeLab::start("kr3");
    let client = lab.topo.client();
    // oauth2-proxy's Go resolver reads /etc/hosts, not curl's --resolve.
    let _hosts = NetnsHosts::write(client, &[(&GW_CLIENT_ADDR4.to_string(), SERVER_NAME)])
        .expect("hosts file for the client namespace");
    let spec = ProxySpec {
        listen: PROXY_LISTEN.parse().expect("listen address"),
        issuer: format!("https://{SERVER_NAME}:{PUBLIC_PORT}/realms/{REALM}"),
        provider_ca: lab.pki.ca_cert().to_path_buf(),
        client_id: PROXY_CLIENT.into(),
        client_secret: PROXY_SECRET.into(),
        redirect_url: format!("http://{PROXY_LISTEN}/oauth2/callback"),
        extra: Vec::new(),
    };
    let proxy = OAuth2Proxy::start(client, lab.scratch.path(), &proxy_install, &spec)
        .unwrap_or_else(|err| panic!("oauth2-proxy: {err:#}\n{}", lab.logs()));
    let logs = || format!("oauth2-proxy:\n{}\n{}", proxy.log_text(), lab.logs());
    let browser = Browser::new(
        client.name(),
        lab.scratch.path().join("o2p.jar"),
        lab.pki.ca_cert(),
    )
    .resolve(SERVER_NAME, PUBLIC_PORT, GW_CLIENT_ADDR4);
    let base = format!("http://{PROXY_LISTEN}");

    let auth = browser
        .get(&format!("{base}/oauth2/auth"))
        .expect("/oauth2/auth");
    assert_eq!(auth.status, 401, "without a cookie: {auth:?}\n{}", logs());

    let start = browser
        .get(&format!("{base}/oauth2/start?rd=%2Fapp"))
        .expect("/oauth2/start");
    assert_eq!(start.status, 302, "{start:?}\n{}", logs());
    let login_url = start.location().expect("sign-in redirect").to_owned();
    let authorize =
        format!("https://{SERVER_NAME}:{PUBLIC_PORT}/realms/{REALM}/protocol/openid-connect/auth?");
    assert!(login_url.starts_with(&authorize), "{login_url}");
    let page = browser.get(&login_url).expect("Keycloak's login page");
    assert_eq!(page.status, 200, "{page:?}\n{}", logs());
    let action = login_form_action(&page.body).expect("login form");
    let posted = browser
        .post_form(
            &action,
            &[
                ("username", USER),
                ("password", PASSWORD),
                ("credentialId", ""),
            ],
        )
        .expect("login form post");
    assert_eq!(posted.status, 302, "{posted:?}\n{}", logs());
    let callback = posted.location().expect("callback redirect").to_owned();
    assert!(
        callback.starts_with(&format!("{base}/oauth2/callback?")),
        "{callback}"
    );
    let done = browser.get(&callback).expect("oauth2-proxy callback");
    assert_eq!(done.status, 302, "{done:?}\n{}", logs());
    assert_eq!(done.location().expect("back to rd"), "/app");

    let auth = browser
        .get(&format!("{base}/oauth2/auth"))
        .expect("/oauth2/auth");
    assert_eq!(auth.status, 202, "signed in: {auth:?}\n{}", logs());
    let got = (
        auth.header("x-auth-request-user"),
        auth.header("x-auth-request-email"),
        auth.header("x-auth-request-preferred-username"),
    );
    eprintln!(
        "oauth2-proxy {} /oauth2/auth: {got:?}",
        proxy_install.version
    );
    let sub = user_subject(&lab);
    assert_eq!(
        got,
        (Some(sub.as_str()), Some(EMAIL), Some(USER)),
        "{auth:?}"
    );
}

/// erin's `sub` (Keycloak's user id), from a direct-grant token.
fn user_subject(lab: &EdgeLab) -> String {
    let ca = lab.pki.ca_cert().display().to_string();
    let user = format!("username={USER}");
    let password = format!("password={PASSWORD}");
    let (code, body) = fetch(
        lab.topo.client(),
        &ca,
        PUBLIC_PORT,
        &format!("/realms/{REALM}/protocol/openid-connect/token"),
        "sub",
        &[
            "-d",
            "grant_type=password",
            "-d",
            "client_id=app",
            "-d",
            &user,
            "-d",
            &password,
        ],
    );
    assert_eq!(code, 200, "{body}");
    let token: Value = serde_json::from_str(&body).expect("token JSON");
    jwt_claims(token["access_token"].as_str().expect("access_token")).expect("claims")["sub"]
        .as_str()
        .expect("sub")
        .to_owned()
}
