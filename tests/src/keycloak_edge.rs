//! One real Keycloak behind sluice's Keycloak presets (issue 20, items 4 and 6): a public
//! listener with `preset = "keycloak"` and an admin listener with `preset = "keycloak-admin"`,
//! both proxying to Keycloak's plain HTTP port 8080, never to its management port 9000.
//! Keycloak writes an access log line for every request it receives, carrying the request's
//! `X-Flow` header, so a test can tell which of its requests reached Keycloak at all.
//!
//! Beside them the forward-auth layout of item 6, on one app listener: the route `/oauth2`
//! proxies to oauth2-proxy itself, every other path asks oauth2-proxy's `/oauth2/auth` before
//! proxying to a header-echo app. The three peers share Keycloak's node (the listener's pool);
//! each route names its `backend_port`. oauth2-proxy runs in the node's namespace and reaches
//! Keycloak through sluice's public listener, as the browser does, so both see the same
//! issuer.
//!
//! ```text
//!  client 198.18.0.2 ── gwc ┐ gateway: sluice, "kc" on 198.18.0.1:8443 (keycloak preset),
//!                           │   "kc-admin" on :8445 (keycloak-admin preset),
//!                           │   "kc-app" on :8447 (/oauth2, and / with auth)
//!                           └─ gwb0 ── node 198.18.10.2: Keycloak (:8080 HTTP, :9000
//!                                      management), app (:8081), oauth2-proxy (:4180)
//! ```

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::{
    certs::TestPki,
    daemon::{Daemon, Scratch},
    edge_lab::Listener,
    gateway_config::web_gateway,
    keycloak::{Installation, Keycloak, Spec, HTTP_PORT},
    topology::{backend_addr4, gw_backend_addr4, GW_CLIENT_IFNAME},
    Topology,
};

pub const SERVER_NAME: &str = "kc.test";
pub const PUBLIC_PORT: u16 = 8443;
pub const ADMIN_PORT: u16 = 8445;
pub const MANAGEMENT: &str = "127.0.0.1:9019";
pub const REALM: &str = "sluice";
pub const USER: &str = "erin";
pub const PASSWORD: &str = "erin-password";
pub const EMAIL: &str = "erin@example.test";
/// A public client for the browser flow.
pub const WEB_CLIENT: &str = "web";
pub const WEB_REDIRECT: &str = "https://app.test/callback";
/// oauth2-proxy's confidential client.
pub const PROXY_CLIENT: &str = "oauth2-proxy";
pub const PROXY_SECRET: &str = "oauth2-proxy-secret";
/// The app listener: `/oauth2/...` to oauth2-proxy, every other path asks it first.
pub const APP_PORT: u16 = 8447;
/// The header-echo app's port on the node.
pub const APP_BACKEND_PORT: u16 = 8081;
/// oauth2-proxy's port on the node (its default).
pub const PROXY_PORT: u16 = 4180;

/// oauth2-proxy's callback as the browser reaches it: through the app listener.
pub fn proxy_callback() -> String {
    format!("https://{SERVER_NAME}:{APP_PORT}/oauth2/callback")
}

/// The app route's `auth` URL: oauth2-proxy on the node, asked directly by sluice.
pub fn proxy_auth_url() -> String {
    format!("http://{}:{PROXY_PORT}/oauth2/auth", backend_addr4(0))
}

/// Where the app route sends a browser without a session: the `/oauth2` route beside it.
pub const SIGNIN_PATH: &str = "/oauth2/start";

/// Marks Keycloak's access log lines: `kc-access <X-Flow> <method> <path> <status>`.
pub const ACCESS_MARK: &str = "kc-access";

/// The realm (also the two-node cluster's): erin with a password; `app`, a public client for
/// direct grants only; `web`, a public client with the browser flow (and direct grants);
/// `oauth2-proxy`, a confidential client whose tokens name it as audience.
pub fn realm() -> String {
    json!({
        "realm": REALM,
        "enabled": true,
        // Cheap hashing: the load is logins on a two-core machine.
        "passwordPolicy": "hashAlgorithm(pbkdf2-sha256) and hashIterations(1000)",
        "users": [{
            "username": USER, "email": EMAIL, "emailVerified": true,
            "firstName": "Erin", "lastName": "Test", "enabled": true,
            "credentials": [{"type": "password", "value": PASSWORD, "temporary": false}]
        }],
        "clients": [
            {
                "clientId": "app", "enabled": true, "publicClient": true,
                "directAccessGrantsEnabled": true, "standardFlowEnabled": false
            },
            {
                "clientId": WEB_CLIENT, "enabled": true, "publicClient": true,
                "standardFlowEnabled": true, "directAccessGrantsEnabled": true,
                "redirectUris": [WEB_REDIRECT]
            },
            {
                "clientId": PROXY_CLIENT, "enabled": true, "publicClient": false,
                "secret": PROXY_SECRET, "standardFlowEnabled": true,
                "directAccessGrantsEnabled": false,
                "redirectUris": [proxy_callback()],
                "protocolMappers": [{
                    "name": "audience", "protocol": "openid-connect",
                    "protocolMapper": "oidc-audience-mapper",
                    "config": {
                        "included.client.audience": PROXY_CLIENT,
                        "id.token.claim": "false", "access.token.claim": "true"
                    }
                }]
            }
        ]
    })
    .to_string()
}

/// Keycloak's access log options: every request on its HTTP port logged to its console with
/// the request's `X-Flow` header (`-` without one).
pub fn access_log_options() -> Vec<String> {
    vec![
        "--http-access-log-enabled=true".into(),
        format!("--http-access-log-pattern={ACCESS_MARK} %{{i,X-Flow}} %m %U %s"),
    ]
}

/// The access log lines in Keycloak's output `log`: `(flow, method, path, status)`.
pub fn access_lines(log: &Path) -> Vec<(String, String, String, String)> {
    let text = fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let at = line.find(ACCESS_MARK)? + ACCESS_MARK.len();
            let mut f = line[at..].split_whitespace();
            Some((
                f.next()?.to_owned(),
                f.next()?.to_owned(),
                f.next()?.to_owned(),
                f.next()?.to_owned(),
            ))
        })
        .collect()
}

/// Fields drop in order: Keycloak, sluice, then the namespaces.
pub struct EdgeLab {
    pub keycloak: Keycloak,
    pub daemon: Daemon,
    pub pki: TestPki,
    pub install: Installation,
    pub keycloak_start: Duration,
    pub topo: Topology,
    pub scratch: Scratch,
}

impl EdgeLab {
    /// Builds everything and waits for Keycloak. Panics (failing the test) with the reason
    /// when Keycloak is not installed or does not start.
    pub fn start(prefix: &str) -> EdgeLab {
        let install = Installation::find().unwrap_or_else(|err| panic!("{err:#}"));
        let topo = Topology::build(prefix, 1).expect("build topology");
        let scratch = Scratch::create(prefix).expect("scratch directory");
        let pki = TestPki::generate(&scratch.path().join("pki"), &[SERVER_NAME])
            .expect("generate the test PKI");
        let mut options = vec![
            "--http-enabled=true".to_owned(),
            format!("--http-port={HTTP_PORT}"),
            "--hostname-strict=false".into(),
            "--proxy-headers=xforwarded".into(),
            format!("--proxy-trusted-addresses={}", gw_backend_addr4(0)),
            "--import-realm".into(),
        ];
        options.extend(access_log_options());
        // The x509 lookup provider of this build plays no part here.
        let spec = Spec {
            build: "rfc9440".into(),
            options,
            realms: vec![realm()],
        };
        let mut keycloak = Keycloak::spawn(&topo.backends()[0], scratch.path(), &install, &spec)
            .unwrap_or_else(|err| panic!("Keycloak {}: {err:#}", install.version));
        let instance = format!("test-{prefix}");
        // No health check: nothing of sluice's may touch the management port in this lab.
        let mut text = web_gateway(
            &instance,
            &[GW_CLIENT_IFNAME],
            scratch.path(),
            MANAGEMENT,
            "",
            1,
        );
        for (name, port, preset) in [
            ("kc", PUBLIC_PORT, "keycloak"),
            ("kc-admin", ADMIN_PORT, "keycloak-admin"),
        ] {
            let mut listener = Listener::v4(name, port);
            listener.client_auth = "none";
            listener.formats = &[];
            listener.settings = vec![
                format!("preset = \"{preset}\""),
                "forwarded_headers = [\"x-forwarded\"]".into(),
                "connect_timeout = \"5s\"".into(),
                "response_timeout = \"120s\"".into(),
            ];
            text.push_str(&listener.toml(&pki));
        }
        text.push_str(&forward_auth_listener(&pki));
        let daemon = Daemon::start(topo.gateway(), scratch.path(), &instance, &text)
            .expect("start sluice run");
        let keycloak_start = keycloak
            .wait_ready(&topo.backends()[0])
            .unwrap_or_else(|err| panic!("Keycloak {}: {err:#}", install.version));
        eprintln!(
            "Keycloak {} (Java {}) ready after {:.1} s",
            install.version,
            install.java_version,
            keycloak_start.as_secs_f64()
        );
        EdgeLab {
            keycloak,
            daemon,
            pki,
            install,
            keycloak_start,
            topo,
            scratch,
        }
    }

    /// Keycloak's output (its access log included).
    pub fn keycloak_log(&self) -> std::path::PathBuf {
        self.scratch.path().join("keycloak.log")
    }

    pub fn logs(&self) -> String {
        format!(
            "Keycloak (last lines):\n{}\nsluice:\n{}",
            self.keycloak.log_tail(60),
            self.daemon.log_text()
        )
    }
}

/// The app listener of item 6 (see the module comment).
fn forward_auth_listener(pki: &TestPki) -> String {
    let mut listener = Listener::v4("kc-app", APP_PORT);
    listener.client_auth = "none";
    listener.formats = &[];
    listener.settings = vec![
        "forwarded_headers = [\"x-forwarded\"]".into(),
        "connect_timeout = \"5s\"".into(),
        "[[edge.route]]".into(),
        "name = \"oauth2\"".into(),
        "path = \"/oauth2\"".into(),
        format!("backend_port = {PROXY_PORT}"),
        "[[edge.route]]".into(),
        "name = \"app\"".into(),
        "path = \"/\"".into(),
        format!("backend_port = {APP_BACKEND_PORT}"),
        format!(
            "auth = {{ url = \"{}\", signin_url = \"{SIGNIN_PATH}\", timeout = \"5s\", \
             pass_set_cookie = true }}",
            proxy_auth_url()
        ),
    ];
    listener.toml(pki)
}
