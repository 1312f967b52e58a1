//! sluice's routes in front of the real Keycloak (issue 20, item 4) and forward auth with the
//! real oauth2-proxy and Keycloak (item 6); sticky sessions are `keycloak_sticky.rs`. Both
//! items run on one Keycloak start (one test function: Keycloak's start is most of the time):
//!
//! - the Keycloak presets: what the public listener exposes reaches Keycloak and works (OIDC
//!   discovery, tokens, the login page and its resources); what it hides never reaches
//!   Keycloak in any spelling (Keycloak's own access log has no line for it); the admin
//!   console works on the `keycloak-admin` listener only; the management port is never a
//!   backend port;
//! - forward auth: an app behind an `auth` route asking oauth2-proxy (Keycloak its OIDC
//!   provider, both reached through sluice): a browser without a session is sent to sign in;
//!   after a scripted login the app gets the user's `X-Auth-Request-*` headers from
//!   oauth2-proxy and never the client's copies; oauth2-proxy down is a 503 the app never sees.
//!
//! Needs root, and the Keycloak and oauth2-proxy that `cargo xtask setup` fetches and builds;
//! without them the tests fail and say why. Run with
//! `cargo test -p sluice-tests --test keycloak_routes -- --test-threads=1`.

#![allow(clippy::float_cmp)] // every metric compared is a small integer count, exact in f64

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::{
    edge_lab::{headers, values},
    keycloak::{ADMIN_PASSWORD, ADMIN_USER, HTTP_PORT, MANAGEMENT_PORT},
    keycloak_browser::{jwt_claims, login_form_action, Browser},
    keycloak_edge::{
        access_lines, proxy_callback, EdgeLab, ADMIN_PORT, APP_BACKEND_PORT, APP_PORT, EMAIL,
        MANAGEMENT, PASSWORD, PROXY_CLIENT, PROXY_PORT, PROXY_SECRET, PUBLIC_PORT, REALM,
        SERVER_NAME, SIGNIN_PATH, USER, WEB_CLIENT,
    },
    netns::NetNs,
    oauth2_proxy::{Installation as ProxyInstallation, NetnsHosts, OAuth2Proxy, Spec as ProxySpec},
    require_root,
    servers::http_headers_backend,
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

/// Items 4 and 6 on one Keycloak: the presets, then forward auth (which adds oauth2-proxy's
/// requests to the public listener, so it comes second).
#[test]
fn keycloak_presets_and_forward_auth_with_oauth2_proxy() {
    require_root();
    let lab = EdgeLab::start("kr1");
    exposed_paths(&lab);
    forward_auth(&lab);
}

/// Item 4: the presets in front of the real Keycloak.
fn exposed_paths(lab: &EdgeLab) {
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
    let sent = metric(lab, "sluice_edge_backend_requests_total", &[("edge", "kc")]);
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
        metric(lab, "sluice_edge_backend_requests_total", &[("edge", "kc")]),
        sent,
        "a hidden path reached Keycloak"
    );
    assert_eq!(
        metric(
            lab,
            "sluice_edge_unrouted_requests_total",
            &[("edge", "kc"), ("outcome", "no_route")]
        ),
        26.0
    );
    assert_eq!(
        metric(
            lab,
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
            lab,
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

/// Client copies of the names oauth2-proxy vouches for, sent on every request to the app.
const FORGED: [&str; 4] = [
    "X-Auth-Request-User: forged-admin",
    "X-Auth-Request-Email: forged-admin@evil.test",
    "X-Auth-Request-Preferred-Username: forged-admin",
    "Authorization: Bearer forged-admin",
];

/// Item 6: the app's route asks oauth2-proxy, which signs the browser in with Keycloak.
fn forward_auth(lab: &EdgeLab) {
    let install = ProxyInstallation::find().unwrap_or_else(|err| panic!("{err:#}"));
    let node = &lab.topo.backends()[0];
    // oauth2-proxy reaches Keycloak through sluice's public listener, by name: its Go resolver
    // reads /etc/hosts, not curl's --resolve.
    let _hosts = NetnsHosts::write(node, &[(&GW_CLIENT_ADDR4.to_string(), SERVER_NAME)])
        .expect("hosts file for the node's namespace");
    let app = http_headers_backend(node, "app", APP_BACKEND_PORT).expect("the app");
    let spec = ProxySpec {
        listen: SocketAddr::new(backend_addr4(0).into(), PROXY_PORT),
        issuer: format!("https://{SERVER_NAME}:{PUBLIC_PORT}/realms/{REALM}"),
        provider_ca: lab.pki.ca_cert().to_path_buf(),
        client_id: PROXY_CLIENT.into(),
        client_secret: PROXY_SECRET.into(),
        redirect_url: proxy_callback(),
        extra: vec![
            // rd= is an absolute URL on the app's listener.
            format!("--whitelist-domain={SERVER_NAME}:{APP_PORT}"),
            // sluice terminates TLS: the browser only ever sends the cookie over https.
            "--cookie-secure=true".into(),
        ],
    };
    let mut proxy = OAuth2Proxy::start(node, lab.scratch.path(), &install, &spec)
        .unwrap_or_else(|err| panic!("oauth2-proxy: {err:#}\n{}", lab.logs()));
    let log_path = lab.scratch.path().join("oauth2-proxy.log");
    let logs = || {
        format!(
            "oauth2-proxy:\n{}\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default(),
            lab.logs()
        )
    };
    let sub = user_subject(lab);
    let app_url = |path: &str| format!("https://{SERVER_NAME}:{APP_PORT}{path}");
    let authorize =
        format!("https://{SERVER_NAME}:{PUBLIC_PORT}/realms/{REALM}/protocol/openid-connect/auth?");
    // Requests the app answered (it closes every connection after one answer); the
    // listener's backend requests count oauth2-proxy's pages too.
    let app_requests = || app.served();
    let auth_outcome = |outcome: &str| {
        metric(
            lab,
            "sluice_edge_route_auth_total",
            &[("edge", "kc-app"), ("route", "app"), ("outcome", outcome)],
        )
    };
    // The app's echo: its name, the request line, the head as it arrived.
    let identity = |body: &str| {
        let h = headers(body);
        let one = |name: &str| values(&h, name).join(" | ");
        assert!(
            !body.contains("forged"),
            "a client copy reached the app:\n{body}"
        );
        assert!(
            values(&h, "authorization").is_empty(),
            "an Authorization header reached the app:\n{body}"
        );
        (
            one("x-auth-request-user"),
            one("x-auth-request-email"),
            one("x-auth-request-preferred-username"),
        )
    };
    let signed_in = (sub.clone(), EMAIL.to_owned(), USER.to_owned());

    let mut browsers = Vec::new();
    for http in HTTP {
        let browser = Browser::new(
            lab.topo.client().name(),
            lab.scratch.path().join(format!("browser{http}.jar")),
            lab.pki.ca_cert(),
        )
        .resolve(SERVER_NAME, PUBLIC_PORT, GW_CLIENT_ADDR4)
        .resolve(SERVER_NAME, APP_PORT, GW_CLIENT_ADDR4)
        .arg(http);
        let forging = FORGED.iter().fold(browser.clone(), |b, h| b.header(h));

        // No session, forged identity: sent to sign in, the app never asked.
        let before = app.served();
        let first = forging
            .get(&app_url("/app/page?q=1"))
            .expect("the app, signed out");
        assert_eq!(first.status, 302, "{http}: {first:?}\n{}", logs());
        let rd = "https%3A%2F%2Fkc.test%3A8447%2Fapp%2Fpage%3Fq%3D1";
        let start = format!("{SIGNIN_PATH}?rd={rd}");
        assert_eq!(first.location().expect("sign-in"), start, "{http}");
        assert_eq!(
            app.served(),
            before,
            "{http}: the app saw a signed-out request"
        );

        // The scripted login: oauth2-proxy's start page, Keycloak's form, the callback.
        let started = browser.get(&app_url(&start)).expect("/oauth2/start");
        assert_eq!(started.status, 302, "{http}: {started:?}\n{}", logs());
        let login_url = started.location().expect("to Keycloak").to_owned();
        assert!(login_url.starts_with(&authorize), "{http}: {login_url}");
        let page = browser.get(&login_url).expect("Keycloak's login page");
        assert_eq!(page.status, 200, "{http}: {page:?}\n{}", logs());
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
        assert_eq!(posted.status, 302, "{http}: {posted:?}\n{}", logs());
        let callback = posted.location().expect("callback").to_owned();
        assert!(
            callback.starts_with(&format!("{}?", proxy_callback())),
            "{http}: {callback}"
        );
        let done = browser.get(&callback).expect("oauth2-proxy's callback");
        assert_eq!(done.status, 302, "{http}: {done:?}\n{}", logs());
        assert_eq!(
            done.location().expect("back to the app"),
            app_url("/app/page?q=1"),
            "{http}"
        );

        // Signed in, still forging: the app gets erin, once each, from oauth2-proxy only.
        let back = forging.get(&app_url("/app/page?q=1")).expect("the app");
        assert_eq!(back.status, 200, "{http}: {back:?}\n{}", logs());
        assert!(
            back.body.starts_with("app\nGET /app/page?q=1 HTTP/1.1\r\n"),
            "{http}: {}",
            back.body
        );
        assert_eq!(identity(&back.body), signed_in, "{http}: {}", back.body);
        browsers.push((http, forging));
    }
    assert_eq!(auth_outcome("unauthorized"), 2.0);
    assert_eq!(auth_outcome("allowed"), 2.0);
    assert_eq!(app_requests(), 2);

    // oauth2-proxy down: sluice answers 503, the app sees nothing.
    proxy.stop().expect("stop oauth2-proxy");
    let before = app.served();
    for (http, browser) in &browsers {
        let down = browser.get(&app_url("/app/down")).expect("the app");
        assert_eq!(down.status, 503, "{http}: {down:?}");
    }
    assert_eq!(
        app.served(),
        before,
        "the app saw a request while oauth2-proxy was down"
    );
    assert_eq!(app_requests(), 2);
    assert_eq!(auth_outcome("error"), 2.0);

    // Started again: the same sessions work (the session is in the cookie).
    let _proxy = OAuth2Proxy::start(node, lab.scratch.path(), &install, &spec)
        .unwrap_or_else(|err| panic!("oauth2-proxy again: {err:#}\n{}", lab.logs()));
    for (http, browser) in &browsers {
        let back = browser.get(&app_url("/app/up")).expect("the app");
        assert_eq!(back.status, 200, "{http}: {back:?}\n{}", logs());
        assert_eq!(identity(&back.body), signed_in, "{http}: {}", back.body);
    }
    assert_eq!(auth_outcome("allowed"), 4.0);
    assert_eq!(app_requests(), 4);
    eprintln!(
        "oauth2-proxy {}: signed in over HTTP/1.1 and h2, the app got {signed_in:?}",
        install.version
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
