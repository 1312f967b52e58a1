//! The Keycloak lab: the real `sluice run` on the gateway with an edge listener in front of
//! one real Keycloak on backend 0 (plain HTTP, port 8080), curl on the client, and optionally
//! Debian's haproxy on the proxy host sending PROXY v2 to a second listener.
//!
//! ```text
//!  client 198.18.0.2 ── gwc ┐ gateway: sluice, listener "kc" on 198.18.0.1:8443 (TLS,
//!  proxy: haproxy 198.18.1.2 ── gwp ┘   optional client certificates), "kc-behind-haproxy"
//!                                        on :8444 (PROXY v2 required) ── Keycloak 198.18.10.2
//! ```
//!
//! Realms `sluice` (X.509 direct grant, user by subject CN) and `sluice-email` (user by SAN
//! e-mail) hold alice, carol and dave; Keycloak re-validates each certificate's path against
//! its truststore, so the intermediates must arrive in the headers too (nginx excepted: it
//! cannot send them, and Keycloak completes its chain from the truststore).

use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use rcgen::SanType;
use serde_json::{json, Value};

use crate::{
    certs::{client_params, Identity, TestPki},
    daemon::{Daemon, Scratch},
    edge_lab::Listener,
    haproxy::{Haproxy, HaproxySpec},
    keycloak::{Installation, Keycloak, Spec, ADMIN_PASSWORD, ADMIN_USER, HTTP_PORT},
    topology::{
        backend_addr4, gw_backend_addr4, GW_CLIENT_ADDR4, GW_CLIENT_IFNAME, GW_PROXY_IFNAME,
        PROXY_ADDR4,
    },
    Topology, VIP4,
};

pub const SERVER_NAME: &str = "kc.test";
pub const EDGE_PORT: u16 = 8443;
/// The listener that only haproxy (PROXY v2, required) talks to.
pub const BEHIND_HAPROXY_PORT: u16 = 8444;
/// haproxy's frontend on the proxy host.
pub const HAPROXY_PORT: u16 = 7443;
/// The public base URL every Keycloak URL must carry.
pub const PUBLIC_BASE: &str = "https://kc.test:8443";
/// The intermediates dave's chain carries, and the chain length every provider is given.
pub const CHAIN_LENGTH: usize = 3;

/// How Keycloak learns the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientInfo {
    /// `proxy-headers=xforwarded`, sluice writes `X-Forwarded-*` only.
    XForwarded,
    /// `proxy-headers=forwarded`, sluice writes `Forwarded` only.
    Forwarded,
    /// `proxy-protocol-enabled=true`, sluice sends PROXY v2 (`send_proxy_protocol`).
    ProxyProtocol,
}

/// One lab: which format Keycloak reads, how it learns the client, whether haproxy is in front.
#[derive(Clone, Copy, Debug)]
pub struct NodeSpec {
    pub prefix: &'static str,
    pub format: &'static str,
    pub client_info: ClientInfo,
    pub upstream_haproxy: bool,
}

/// The lab's own identities on top of the standard test PKI.
pub struct People {
    /// `CN=alice`, SAN e-mail alice@example.test, one intermediate.
    pub alice: Identity,
    /// `CN=carol`, SANs e-mail, two DNS names and two URIs, one intermediate.
    pub carol: Identity,
    /// `CN=dave`, SAN e-mail, three intermediates below the root.
    pub dave: Identity,
    /// The root alone (what Keycloak trusts, so the headers must bring the intermediates).
    pub roots: PathBuf,
    /// Root and every intermediate (for nginx, which cannot send them).
    pub all_cas: PathBuf,
}

/// Fields drop in order: Keycloak, haproxy and sluice before the namespaces.
pub struct KcLab {
    pub keycloak: Keycloak,
    pub haproxy: Option<Haproxy>,
    pub daemon: Daemon,
    pub people: People,
    pub pki: TestPki,
    pub install: Installation,
    pub spec: NodeSpec,
    /// How long Keycloak took to become ready.
    pub keycloak_start: Duration,
    pub topo: Topology,
    _scratch: Scratch,
}

impl KcLab {
    /// Builds everything and waits for Keycloak. Panics (failing the test) with the reason
    /// when Keycloak is not installed or does not start.
    pub fn start(spec: NodeSpec) -> KcLab {
        let install = Installation::find().unwrap_or_else(|err| panic!("{err:#}"));
        let mut topo = Topology::build(spec.prefix, 1).expect("build topology");
        if spec.upstream_haproxy {
            topo.add_proxy().expect("add the proxy host");
        }
        let scratch = Scratch::create(spec.prefix).expect("scratch directory");
        let pki = TestPki::generate(&scratch.path().join("pki"), &[SERVER_NAME])
            .expect("generate the test PKI");
        let people = people(&pki).expect("issue alice, carol and dave");
        let kc_spec = keycloak_spec(&spec, &people);
        let mut keycloak = Keycloak::spawn(&topo.backends()[0], scratch.path(), &install, &kc_spec)
            .unwrap_or_else(|err| panic!("Keycloak {}: {err:#}", install.version));
        let text = sluice_config(&spec, &pki, scratch.path());
        let instance = format!("test-{}", spec.prefix);
        let daemon = Daemon::start(topo.gateway(), scratch.path(), &instance, &text)
            .expect("start sluice run");
        let haproxy = spec.upstream_haproxy.then(|| {
            let hp = HaproxySpec {
                frontend: SocketAddr::new(PROXY_ADDR4.into(), HAPROXY_PORT),
                server: SocketAddr::new(GW_CLIENT_ADDR4.into(), BEHIND_HAPROXY_PORT),
                local_checks: None,
            };
            Haproxy::start(topo.proxy(), scratch.path(), &hp).expect("start haproxy")
        });
        let keycloak_start = keycloak
            .wait_ready(&topo.backends()[0])
            .unwrap_or_else(|err| panic!("Keycloak {}: {err:#}", install.version));
        eprintln!(
            "Keycloak {} ({} provider, Java {}) ready after {:.1} s",
            install.version,
            spec.format,
            install.java_version,
            keycloak_start.as_secs_f64()
        );
        KcLab {
            keycloak,
            haproxy,
            daemon,
            people,
            pki,
            install,
            spec,
            keycloak_start,
            topo,
            _scratch: scratch,
        }
    }

    /// Keycloak's, haproxy's and sluice's logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "Keycloak (last lines):\n{}\nhaproxy:\n{}\nsluice:\n{}",
            self.keycloak.log_tail(60),
            self.haproxy
                .as_ref()
                .map(Haproxy::log_text)
                .unwrap_or_default(),
            self.daemon.log_text()
        )
    }

    /// curl from the client namespace: `method` on `path` at the listener reached through
    /// `via`, as `id` (its whole chain) or without a certificate. Returns status and body.
    pub fn request(
        &self,
        via: Via,
        id: Option<&Identity>,
        path: &str,
        extra: &[&str],
    ) -> Result<(u16, String)> {
        let (ip, port) = match via {
            Via::Direct => (GW_CLIENT_ADDR4, EDGE_PORT),
            Via::Haproxy => (PROXY_ADDR4, HAPROXY_PORT),
        };
        let resolve = format!("{SERVER_NAME}:{port}:{ip}");
        let url = format!("https://{SERVER_NAME}:{port}{path}");
        let ca = self.pki.ca_cert().display().to_string();
        let mut args = vec![
            "curl".to_owned(),
            "-sS".into(),
            "--max-time".into(),
            "60".into(),
            "--resolve".into(),
            resolve,
            "--cacert".into(),
            ca,
            "-w".into(),
            "\n%{http_code}".into(),
        ];
        if let Some(id) = id {
            args.extend([
                "--cert".into(),
                id.chain().display().to_string(),
                "--key".into(),
                id.key().display().to_string(),
            ]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(url);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.topo.client().run(&args)?;
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        let code = code
            .trim()
            .parse()
            .with_context(|| format!("no status in {out:?}"))?;
        Ok((code, body.to_owned()))
    }

    /// A direct-grant token request in `realm` as `id`, with more curl arguments (headers).
    pub fn login(&self, via: Via, realm: &str, id: Option<&Identity>, extra: &[&str]) -> Login {
        let path = format!("/realms/{realm}/protocol/openid-connect/token");
        let mut args = vec![
            "-d",
            "grant_type=password",
            "-d",
            "client_id=x509",
            "-d",
            "scope=openid",
        ];
        args.extend_from_slice(extra);
        match self.request(via, id, &path, &args) {
            Ok((code, body)) => Login::from_response(code, &body),
            Err(err) => Login::Failed(format!("{err:#}")),
        }
    }

    /// An access token of the master realm's administrator (through sluice).
    pub fn admin_token(&self) -> Result<String> {
        let user = format!("username={ADMIN_USER}");
        let password = format!("password={ADMIN_PASSWORD}");
        let (code, body) = self.request(
            Via::Direct,
            None,
            "/realms/master/protocol/openid-connect/token",
            &[
                "-d",
                "grant_type=password",
                "-d",
                "client_id=admin-cli",
                "-d",
                &user,
                "-d",
                &password,
            ],
        )?;
        let json: Value = serde_json::from_str(&body)
            .with_context(|| format!("admin token answer {code}: {body}"))?;
        json["access_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no admin token ({code}): {body}"))
    }

    /// Every `LOGIN` event of `realm`, newest first: user name and the IP address Keycloak
    /// recorded.
    pub fn login_events(&self, realm: &str) -> Result<Vec<(String, String)>> {
        let token = self.admin_token()?;
        let auth = format!("Authorization: Bearer {token}");
        let (code, body) = self.request(
            Via::Direct,
            None,
            &format!("/admin/realms/{realm}/events?type=LOGIN&max=1000"),
            &["-H", &auth],
        )?;
        if code != 200 {
            bail!("events answered {code}: {body}");
        }
        let events: Vec<Value> = serde_json::from_str(&body).context("events JSON")?;
        Ok(events
            .iter()
            .map(|e| {
                (
                    e["details"]["username"].as_str().unwrap_or("?").to_owned(),
                    e["ipAddress"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect())
    }

    /// The realm's `OpenID` configuration, fetched with more curl arguments (headers).
    pub fn openid_configuration(&self, via: Via, realm: &str, extra: &[&str]) -> Result<Value> {
        let (code, body) = self.request(
            via,
            None,
            &format!("/realms/{realm}/.well-known/openid-configuration"),
            extra,
        )?;
        if code != 200 {
            bail!("openid-configuration answered {code}: {body}");
        }
        serde_json::from_str(&body).context("openid-configuration JSON")
    }

    /// The `Location` of Keycloak's redirect for `/admin`.
    pub fn admin_redirect(&self, via: Via, extra: &[&str]) -> Result<String> {
        // This `-w` replaces `request`'s and still ends with the status line it reads.
        let mut args = vec!["-o", "/dev/null", "-w", "%{redirect_url}\n%{http_code}"];
        args.extend_from_slice(extra);
        let (code, location) = self.request(via, None, "/admin", &args)?;
        if code != 302 {
            bail!("/admin answered {code}, not 302");
        }
        Ok(location.trim().to_owned())
    }
}

/// Which way a request reaches sluice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// curl straight to the listener.
    Direct,
    /// curl to haproxy on the proxy host, which passes the TLS stream on with PROXY v2.
    Haproxy,
}

/// What a token request got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Login {
    /// A token for this user (`preferred_username` of the access token).
    Token(String),
    /// Refused with this status and `error_description`.
    Refused(u16, String),
    /// Anything else (curl failed, unreadable answer).
    Failed(String),
}

impl Login {
    fn from_response(code: u16, body: &str) -> Login {
        let Ok(json) = serde_json::from_str::<Value>(body) else {
            return Login::Failed(format!("{code}: {body}"));
        };
        if let Some(token) = json["access_token"].as_str() {
            return match preferred_username(token) {
                Some(user) if code == 200 => Login::Token(user),
                _ => Login::Failed(format!("{code} with an unreadable token: {body}")),
            };
        }
        match json["error_description"].as_str() {
            Some(description) => Login::Refused(code, description.to_owned()),
            None => Login::Failed(format!("{code}: {body}")),
        }
    }
}

/// The `preferred_username` claim of a JWT (not verified: Keycloak issued it over TLS).
fn preferred_username(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["preferred_username"].as_str().map(str::to_owned)
}

fn people(pki: &TestPki) -> Result<People> {
    let email = |user: &str| -> Result<SanType> {
        Ok(SanType::Rfc822Name(
            format!("{user}@example.test").try_into()?,
        ))
    };
    let mut params = client_params("alice")?;
    params.subject_alt_names = vec![email("alice")?];
    let alice = pki.issue("alice", &params, &pki.intermediate, &[&pki.intermediate])?;

    let mut params = client_params("carol")?;
    params.subject_alt_names = vec![
        email("carol")?,
        SanType::DnsName("carol.example.test".try_into()?),
        SanType::DnsName("carol.clients.example.test".try_into()?),
        SanType::URI("spiffe://example.test/user/carol".try_into()?),
        SanType::URI("https://example.test/people/carol".try_into()?),
    ];
    let carol = pki.issue("carol", &params, &pki.intermediate, &[&pki.intermediate])?;

    // root ── intermediate ── sub-intermediate ── third ── dave
    let third = pki.sub_ca(
        "third-intermediate",
        "sluice test third intermediate CA",
        &pki.sub_intermediate,
    )?;
    let mut params = client_params("dave")?;
    params.subject_alt_names = vec![email("dave")?];
    let dave = pki.issue(
        "dave",
        &params,
        &third,
        &[&third, &pki.sub_intermediate, &pki.intermediate],
    )?;

    let roots = pki.dir().join("keycloak-roots.pem");
    fs::copy(pki.ca_cert(), &roots)?;
    let mut all = fs::read_to_string(pki.ca_cert())?;
    for ca in [&pki.intermediate, &pki.sub_intermediate, &third] {
        all.push_str(&fs::read_to_string(ca.cert())?);
    }
    let all_cas = pki.dir().join("keycloak-all-cas.pem");
    fs::write(&all_cas, all)?;
    Ok(People {
        alice,
        carol,
        dave,
        roots,
        all_cas,
    })
}

/// A realm whose direct grant is Keycloak's "X509/Validate Username" alone, re-validating the
/// certificate path against the truststore, users mapped by `mapping`.
fn realm(name: &str, mapping: &str) -> String {
    let user = |name: &str, first: &str| {
        json!({
            "username": name, "email": format!("{name}@example.test"), "emailVerified": true,
            "firstName": first, "lastName": "Test", "enabled": true
        })
    };
    json!({
        "realm": name,
        "enabled": true,
        "eventsEnabled": true,
        "directGrantFlow": "x509 direct grant",
        "users": [user("alice", "Alice"), user("carol", "Carol"), user("dave", "Dave")],
        "clients": [{
            "clientId": "x509", "enabled": true, "publicClient": true,
            "directAccessGrantsEnabled": true, "standardFlowEnabled": false
        }],
        "authenticationFlows": [{
            "alias": "x509 direct grant", "description": "X.509 client certificate only",
            "providerId": "basic-flow", "topLevel": true, "builtIn": false,
            "authenticationExecutions": [{
                "authenticator": "direct-grant-auth-x509-username",
                "authenticatorConfig": "x509", "requirement": "REQUIRED", "priority": 10,
                "authenticatorFlow": false, "userSetupAllowed": false
            }]
        }],
        "authenticatorConfig": [{
            "alias": "x509",
            "config": {
                "x509-cert-auth.mapping-source-selection": mapping,
                "x509-cert-auth.mapper-selection": "Username or Email",
                "x509-cert-auth.regular-expression": "(.*?)(?:$)",
                "x509-cert-auth.revalidate-certificate-enabled": "true",
                "x509-cert-auth.timestamp-validation-enabled": "true",
                "x509-cert-auth.crl-checking-enabled": "false",
                "x509-cert-auth.ocsp-checking-enabled": "false"
            }
        }]
    })
    .to_string()
}

/// Keycloak's options: the lookup provider's header names and chain length set to what
/// sluice sends, how it learns the client, the truststore.
fn keycloak_spec(spec: &NodeSpec, people: &People) -> Spec {
    let mut options: Vec<String> = vec![
        "--http-enabled=true".into(),
        format!("--http-port={HTTP_PORT}"),
        "--import-realm".into(),
    ];
    let provider = |option: &str, value: &str| {
        format!("--spi-x509cert-lookup--{}--{option}={value}", spec.format)
    };
    let truststore = if spec.format == "nginx" {
        &people.all_cas
    } else {
        &people.roots
    };
    options.push(format!("--truststore-paths={}", truststore.display()));
    let length = CHAIN_LENGTH.to_string();
    match spec.format {
        "rfc9440" | "traefik" => options.push(provider("certificate-chain-length", &length)),
        "nginx" => {
            options.push(provider("ssl-client-cert", "ssl-client-cert"));
            options.push(provider("trust-proxy-verification", "true"));
        }
        "apache" => {
            options.push(provider("ssl-client-cert", "SSL_CLIENT_CERT"));
            options.push(provider("ssl-cert-chain-prefix", "CERT_CHAIN"));
            options.push(provider("certificate-chain-length", &length));
        }
        "haproxy" => {
            options.push(provider("ssl-client-cert", "X-SSL-Client-Cert"));
            options.push(provider("ssl-cert-chain-prefix", "X-SSL-Client-Cert-Chain"));
            options.push(provider("certificate-chain-length", &length));
        }
        // The envoy provider has no options: it reads the whole `Chain`.
        _ => {}
    }
    // Only sluice (its address towards the backend) may vouch for forwarded headers.
    let trusted = format!("--proxy-trusted-addresses={}", gw_backend_addr4(0));
    match spec.client_info {
        ClientInfo::XForwarded => {
            options.extend(["--proxy-headers=xforwarded".into(), trusted]);
            options.push("--hostname-strict=false".into());
        }
        ClientInfo::Forwarded => {
            options.extend(["--proxy-headers=forwarded".into(), trusted]);
            options.push("--hostname-strict=false".into());
        }
        ClientInfo::ProxyProtocol => {
            // No forwarded headers at all: the public URL is configured.
            options.push("--proxy-protocol-enabled=true".into());
            options.push(format!("--hostname={PUBLIC_BASE}"));
        }
    }
    Spec {
        build: spec.format.to_owned(),
        options,
        realms: vec![
            realm("sluice", "Subject's Common Name"),
            realm("sluice-email", "Subject's Alternative Name E-mail"),
        ],
    }
}

/// sluice's configuration: the listener (and the one behind haproxy) in the node's format,
/// with the chain length Keycloak is given.
fn sluice_config(spec: &NodeSpec, pki: &TestPki, dir: &std::path::Path) -> String {
    let instance = format!("test-{}", spec.prefix);
    let interfaces = if spec.upstream_haproxy {
        format!("\"{GW_CLIENT_IFNAME}\", \"{GW_PROXY_IFNAME}\"")
    } else {
        format!("\"{GW_CLIENT_IFNAME}\"")
    };
    let base = format!(
        "instance = \"{instance}\"\ninterfaces = [{interfaces}]\nconntrack_entries = 65536\n\n\
         [admin]\nsocket = \"{}\"\n\n[management]\naddress = \"127.0.0.1:9019\"\n\n\
         [encap]\nsource_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\n\
         [[vip]]\nname = \"web\"\naddress = \"{VIP4}:80\"\ntable_size = 251\n\
         [[vip.backend]]\naddress = \"{}\"\n",
        Daemon::socket_in(dir).display(),
        backend_addr4(0),
    );
    let formats: &'static [&'static str] = match spec.format {
        "rfc9440" => &["rfc9440"],
        "nginx" => &["nginx"],
        "apache" => &["apache"],
        "haproxy" => &["haproxy"],
        "traefik" => &["traefik"],
        _ => &["envoy"],
    };
    let listeners = {
        // A loaded machine: a cold Keycloak may take a while to answer its first requests.
        let mut settings = vec![
            "connect_timeout = \"5s\"".to_owned(),
            "response_timeout = \"120s\"".to_owned(),
        ];
        match spec.client_info {
            ClientInfo::XForwarded => settings.push("forwarded_headers = [\"x-forwarded\"]".into()),
            ClientInfo::Forwarded => settings.push("forwarded_headers = [\"forwarded\"]".into()),
            ClientInfo::ProxyProtocol => settings.push("send_proxy_protocol = \"v2\"".into()),
        }
        // What sluice sends and what Keycloak reads agree (nginx carries no chain).
        if spec.format != "nginx" {
            settings.push(format!(
                "client_cert_chain_length = {{ {} = {CHAIN_LENGTH} }}",
                spec.format
            ));
        }
        let mut main = Listener::v4("kc", EDGE_PORT);
        main.formats = formats;
        main.settings.clone_from(&settings);
        let mut text = main.toml(pki);
        if spec.upstream_haproxy {
            let mut behind = Listener::v4("kc-behind-haproxy", BEHIND_HAPROXY_PORT);
            behind.formats = formats;
            behind.trusted_proxies = vec![format!("{PROXY_ADDR4}/32")];
            behind.settings = settings;
            behind.settings.push("proxy_protocol = \"required\"".into());
            text.push_str(&behind.toml(pki));
        }
        text
    };
    format!("{base}{listeners}")
}

/// The client-certificate headers of every format, each carrying alice's certificate (and
/// intermediate), `ssl-client-verify: SUCCESS` included: what a client forging an identity
/// sends. curl `-H` arguments.
pub fn forged_headers(alice: &Identity) -> Vec<String> {
    use base64::engine::general_purpose::STANDARD;
    let leaf = STANDARD.encode(alice.der());
    let int = STANDARD.encode(&alice.intermediates()[0]);
    let pem = |b64: &str| {
        let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            s.push_str(&String::from_utf8_lossy(chunk));
            s.push('\n');
        }
        s.push_str("-----END CERTIFICATE-----\n");
        s
    };
    let one_line =
        |b64: &str| format!("-----BEGIN CERTIFICATE----- {b64} -----END CERTIFICATE-----");
    let escaped = |text: &str| {
        let mut out = String::new();
        for b in text.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
        out
    };
    vec![
        format!("Client-Cert: :{leaf}:"),
        format!("Client-Cert-Chain: :{int}:"),
        format!("ssl-client-cert: {}", escaped(&pem(&leaf))),
        "ssl-client-verify: SUCCESS".into(),
        format!("SSL_CLIENT_CERT: {}", one_line(&leaf)),
        format!("CERT_CHAIN_0: {}", one_line(&int)),
        format!("X-SSL-Client-Cert: {leaf}"),
        format!("X-SSL-Client-Cert-Chain_0: {int}"),
        format!("X-Forwarded-Tls-Client-Cert: {leaf},{int}"),
        format!(
            "x-forwarded-client-cert: Cert=\"{}\";Chain=\"{}\"",
            escaped(&pem(&leaf)),
            escaped(&format!("{}{}", pem(&leaf), pem(&int)))
        ),
    ]
}

/// The address the client namespace uses.
pub const CLIENT: IpAddr = IpAddr::V4(crate::topology::CLIENT_ADDR4);
/// haproxy's address (what Keycloak must never record as the client).
pub const HAPROXY: IpAddr = IpAddr::V4(PROXY_ADDR4);
/// A forged client address.
pub const FORGED: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 66);

// sluice's lab listeners proxy to the edge lab's backend port: Keycloak must listen there.
const _: () = assert!(HTTP_PORT == crate::edge_lab::BACKEND_PORT);
