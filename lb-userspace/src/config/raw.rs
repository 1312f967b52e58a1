//! The file as written: every field documented, defaults in one place (`defaults`).
//!
//! Values that validation can reject are `Spanned`, so an error can point at them. A default
//! carries an empty span: nothing written in a file is empty, so an empty span tells validation
//! the key was left out and it should point at the enclosing table instead.

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of this sluice instance on the host (pinned objects live under it).
    #[serde(default = "defaults::instance")]
    pub instance: Spanned<String>,
    /// Interfaces that receive VIP traffic; `sluice_xdp` is attached to each.
    pub interfaces: Spanned<Vec<Spanned<String>>>,
    /// `native` (driver mode, default) or `skb` (generic mode, any device).
    #[serde(default = "defaults::xdp_mode")]
    pub xdp_mode: Spanned<String>,
    /// Capacity of the connection table (flows across all VIPs; LRU beyond that).
    #[serde(default = "defaults::conntrack_entries")]
    pub conntrack_entries: Spanned<i64>,
    /// Threads serving the edge listeners, health checks and management (the tokio runtime's
    /// workers). Default: the CPUs this process may run on.
    pub worker_threads: Option<Spanned<i64>>,
    /// Leave XDP forwarding running (programs, maps and links pinned) when the daemon stops.
    #[serde(default = "defaults::keep_dataplane")]
    pub keep_dataplane: bool,
    /// Kernel diagnostics from `sluice_xdp`: `off` (default), `info` or `debug`.
    #[serde(default = "defaults::kernel_log")]
    pub kernel_log: Spanned<String>,
    /// The bpffs mount everything is pinned under.
    #[serde(default = "defaults::bpffs")]
    pub bpffs: Spanned<String>,
    /// The CLI's control socket.
    #[serde(default)]
    pub admin: Admin,
    /// The HTTP endpoint for probes and metrics.
    #[serde(default)]
    pub management: Management,
    /// On SIGTERM/SIGINT the node reports not ready but keeps serving this long, so upstream
    /// balancers and probes move traffic away first (e.g. `"5s"`; `"0s"` closes at once).
    #[serde(default = "defaults::shutdown_delay")]
    pub shutdown_delay: Spanned<String>,
    /// Then, with new connections refused, in-flight requests get this long to finish.
    #[serde(default = "defaults::shutdown_timeout")]
    pub shutdown_timeout: Spanned<String>,
    /// Tunnel settings (needed for the address families the VIPs' backends use).
    #[serde(default)]
    pub encap: Encap,
    /// The L4 virtual services.
    #[serde(default, rename = "vip")]
    pub vips: Vec<Spanned<Vip>>,
    /// Edge listeners: TLS termination and HTTP proxying to a VIP's backends.
    #[serde(default, rename = "edge")]
    pub edges: Vec<Spanned<Edge>>,
    /// Announce the VIPs to routers over BGP (see `config::bgp`).
    pub bgp: Option<Spanned<super::bgp::RawBgp>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    /// Unique name, used in logs and metrics.
    pub name: Spanned<String>,
    /// `IP:port` the listener accepts connections on (an address of this host).
    pub address: Spanned<String>,
    /// Name of the `[[vip]]` whose backends serve this listener: the same pool, health and
    /// drains, and the same Maglev table (by client address).
    pub pool: Spanned<String>,
    /// Port of the backends' plain HTTP service. Default: the pool VIP's port.
    pub backend_port: Option<Spanned<i64>>,
    /// Client-certificate header formats to send to the backend (`rfc9440`, `nginx`, `apache`,
    /// `haproxy`, `traefik`, `envoy`). Needs `tls.client_auth` other than `none`.
    #[serde(default)]
    pub client_cert_header: Vec<Spanned<String>>,
    /// Names of the `apache` and `haproxy` certificate headers, to match what the Keycloak
    /// provider reads. Default: `SSL_CLIENT_CERT` / `CERT_CHAIN`, `X-SSL-Client-Cert` /
    /// `X-SSL-Client-Cert-Chain`.
    pub client_cert_names: Option<Spanned<ClientCertNames>>,
    /// The most chain certificates each format's headers carry, the ones nearest the leaf
    /// (0 to 10), e.g. `{ rfc9440 = 2 }`. Defaults are Keycloak's: 1 for `rfc9440`, `apache`,
    /// `haproxy` and `traefik` (each provider's `certificate-chain-length` default), 10 for
    /// `envoy` (no such option: Keycloak takes the whole chain). Change it together with the
    /// provider's `certificate-chain-length`.
    pub client_cert_chain_length: Option<Spanned<ClientCertChainLength>>,
    /// Whether the chain headers end with the trust anchor (the `client_ca` certificate the
    /// verified path ends at), within each format's length. Default false.
    pub client_cert_chain_anchor: Option<Spanned<bool>>,
    /// Forwarded headers to set: `forwarded` (RFC 7239) and/or `x-forwarded`. Default: both.
    #[serde(default = "defaults::forwarded_headers")]
    pub forwarded_headers: Vec<Spanned<String>>,
    /// Peers whose forwarded headers are kept and extended (CIDRs or addresses); anyone
    /// else's are replaced. They are also the only senders of PROXY headers this listener
    /// believes (see `proxy_protocol`).
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// PROXY protocol (v1 or v2) before TLS, from an upstream balancer in `trusted_proxies`:
    /// `off` (default: no header is ever read), `optional` (a trusted peer must send one; any
    /// other peer is served as a direct client, and a header it sends breaks its own TLS/HTTP)
    /// or `required` (connections from peers outside `trusted_proxies` are closed). A trusted
    /// peer has 3 s to send the whole header; without a valid one its connection is closed.
    /// The header's source becomes the client in the forwarded headers (a LOCAL header leaves
    /// the peer as the client). Needs a non-empty `trusted_proxies`.
    #[serde(default = "defaults::proxy_protocol")]
    pub proxy_protocol: Spanned<String>,
    /// `v2`: every backend connection starts with a PROXY v2 header naming the client and the
    /// listener address it reached (for backends that read one, such as Keycloak with
    /// `proxy-protocol-enabled`). Such a connection then serves that client connection only.
    /// Default `off`.
    #[serde(default = "defaults::send_proxy_protocol")]
    pub send_proxy_protocol: Spanned<String>,
    /// Only requests for this path or below it are proxied (`/auth`: `/auth` and `/auth/...`,
    /// not `/authx`), with the prefix removed (`/auth/realms/x?y=1` reaches the backend as
    /// `/realms/x?y=1`, `/auth` as `/`) and named in `X-Forwarded-Prefix`; any other path gets
    /// 404 from sluice. A plain path: no trailing `/`, `?`, `#`, `%`, `//` or dot segments.
    /// Default: every path, unchanged.
    pub path_prefix: Option<Spanned<String>>,
    /// A ready-made route table: `keycloak` (the public paths of Keycloak's reverse-proxy
    /// guide: `/realms`, `/resources`, `/.well-known`) or `keycloak-admin` (those and `/admin`,
    /// for the listener the admin console is reached on). Not with `route` or `path_prefix`.
    pub preset: Option<Spanned<String>>,
    /// Ordered routes (`[[edge.route]]`): the first that matches a request's normalised path
    /// (and host) decides it; no match is 404. Default: one route proxying every path.
    #[serde(rename = "route")]
    pub routes: Option<Spanned<Vec<Spanned<Route>>>>,
    /// How long a backend may take to accept a connection before another backend is tried
    /// (`"500ms"`, `"2s"`; at least 1ms). Default 2s.
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: Spanned<String>,
    /// How long a backend may take, once the request is sent, to start its response; after it
    /// the client gets 504 (at least 1ms). Default 60s.
    #[serde(default = "defaults::response_timeout")]
    pub response_timeout: Spanned<String>,
    /// How long a client has for a whole request head: the first one from the end of the TLS
    /// handshake, a later one from its first byte (an HTTP/2 header block from its HEADERS
    /// frame). A head cut this way is answered 408 (HTTP/1.x) and the connection closed; one
    /// that never began is closed without an answer (at least 100ms). Default 10s.
    #[serde(default = "defaults::request_header_timeout")]
    pub request_header_timeout: Spanned<String>,
    /// How long a keep-alive connection may wait, after its last response, for the first byte
    /// of another request before it is closed (HTTP/2: with a GOAWAY; at least 100ms).
    /// Default 75s.
    #[serde(default = "defaults::idle_timeout")]
    pub idle_timeout: Spanned<String>,
    /// Client connections open at once on this listener; any more are closed as soon as they
    /// are accepted and counted (1 to 1000000). Default 10000.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: Spanned<i64>,
    /// TLS termination; without it the listener speaks plain HTTP.
    pub tls: Option<Spanned<EdgeTls>>,
}

/// One `[[edge.route]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// The route's label on `/metrics` (letters, digits, `-`, `_`, `.`). Default `route<i>`.
    pub name: Option<Spanned<String>>,
    /// Path prefix, matched segment by segment on the normalised path (`/realms` matches
    /// `/realms` and `/realms/x`, never `/realmsx`); `/` matches every path.
    pub path: Spanned<String>,
    /// Host name (no port) the request must name, case-insensitive. Default: any host.
    pub host: Option<Spanned<String>>,
    /// `proxy` (default), `status` or `redirect`.
    #[serde(default = "defaults::route_action")]
    pub action: Spanned<String>,
    /// `proxy` only: the `[[vip]]` whose backends serve the route. Default: the edge's `pool`.
    pub pool: Option<Spanned<String>>,
    /// `proxy` only: the port of the route pool's backends. Default: the edge's `backend_port`
    /// for the edge's pool, else the route pool VIP's port.
    pub backend_port: Option<Spanned<i64>>,
    /// `proxy` only: remove `path` before the backend (named in `X-Forwarded-Prefix`).
    pub strip_prefix: Option<Spanned<bool>>,
    /// `proxy` only: put this path in front of what the backend receives.
    pub add_prefix: Option<Spanned<String>>,
    /// `status`: 403 or 404; `redirect`: 301, 302, 303, 307 or 308 (default 302).
    pub status: Option<Spanned<i64>>,
    /// `redirect` only: the `Location` sent.
    pub location: Option<Spanned<String>>,
    /// `proxy` only: which backend a client session stays on (see `Affinity`).
    pub affinity: Option<Spanned<Affinity>>,
    /// `proxy` only: ask this auth service first (see `ForwardAuth`).
    pub auth: Option<Spanned<ForwardAuth>>,
}

/// A proxy route's `auth = { url = ..., ... }`: forward authentication, oauth2-proxy's
/// `/oauth2/auth` contract (as nginx `auth_request` and Traefik `forwardAuth` use it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardAuth {
    /// The auth endpoint, `http://host[:port]/path`, e.g. `http://127.0.0.1:4180/oauth2/auth`.
    pub url: Spanned<String>,
    /// Where a 401 sends the client (`rd=` is appended), e.g. `/oauth2/start`. Needed with
    /// `on_unauthorized = "redirect"`.
    pub signin_url: Option<Spanned<String>>,
    /// `redirect` (default: a 302 to `signin_url`) or `pass` (the client gets the 401).
    pub on_unauthorized: Option<Spanned<String>>,
    /// How long the auth service may take to answer (connect included; at least 1ms).
    /// Default 5s.
    pub timeout: Option<Spanned<String>>,
    /// Headers of the auth service's 2xx copied onto the request. Default oauth2-proxy's
    /// `X-Auth-Request-User`, `-Email`, `-Groups`, `-Preferred-Username`, `-Access-Token` and
    /// `Authorization`.
    pub response_headers: Option<Spanned<Vec<Spanned<String>>>>,
    /// Pass the auth service's `Set-Cookie` on to the client. Default false.
    pub pass_set_cookie: Option<Spanned<bool>>,
}

/// A proxy route's `affinity = { mode = ..., ... }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affinity {
    /// `auth-session-route` (Keycloak's `AUTH_SESSION_ID` route suffix), `cookie-hash` or
    /// `cookie` (sluice's own keyed cookie).
    pub mode: Spanned<String>,
    /// `auth-session-route`: Keycloak route name → backend address of the pool.
    pub routes: Option<Spanned<std::collections::BTreeMap<String, Spanned<String>>>>,
    /// `cookie-hash`: the cookie whose value is hashed onto the pool; `cookie`: the name of
    /// sluice's own cookie (default `SLUICE_AFFINITY`).
    pub cookie: Option<Spanned<String>>,
    /// `cookie` only: `Secure` (default true).
    pub secure: Option<Spanned<bool>>,
    /// `cookie` only: `HttpOnly` (default true).
    pub http_only: Option<Spanned<bool>>,
    /// `cookie` only: `SameSite`, `Lax` (default), `Strict` or `None` (needs `secure`).
    pub same_site: Option<Spanned<String>>,
    /// `cookie` only: `Max-Age` as a duration (`"8h"`); default none, a session cookie.
    pub max_age: Option<Spanned<String>>,
    /// `cookie` only: the cookie's `Path`; default the route's path.
    pub path: Option<Spanned<String>>,
    /// `cookie` only: the HMAC key (at least 32 bytes, not readable by every user); default a
    /// random key made at start.
    pub key_file: Option<Spanned<String>>,
}

/// Each value is the exact setting of the Keycloak provider of that format
/// (`ssl-client-cert`, `ssl-cert-chain-prefix`); sluice sends intermediate `n` (0 to 9) as
/// `<prefix>_<n>`. Names are HTTP tokens, compared without regard to case, and may not clash
/// with each other or with any header sluice manages (Host, Content-Length, hop-by-hop and
/// forwarded headers, the other formats' certificate headers).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientCertNames {
    /// The `apache` format's leaf header. Default `SSL_CLIENT_CERT`.
    pub apache_cert: Option<Spanned<String>>,
    /// The `apache` format's chain header prefix. Default `CERT_CHAIN` (`CERT_CHAIN_0`, ...).
    pub apache_chain_prefix: Option<Spanned<String>>,
    /// The `haproxy` format's leaf header. Default `X-SSL-Client-Cert`.
    pub haproxy_cert: Option<Spanned<String>>,
    /// The `haproxy` format's chain header prefix. Default `X-SSL-Client-Cert-Chain`.
    pub haproxy_chain_prefix: Option<Spanned<String>>,
}

/// One optional length per format that carries a chain; `nginx` is accepted only to be refused
/// with a reason (nginx carries no chain).
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientCertChainLength {
    pub rfc9440: Option<Spanned<i64>>,
    pub nginx: Option<Spanned<i64>>,
    pub apache: Option<Spanned<i64>>,
    pub haproxy: Option<Spanned<i64>>,
    pub traefik: Option<Spanned<i64>>,
    pub envoy: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeTls {
    /// Certificates and their keys (absolute paths, PEM); chosen by SNI, the first when the
    /// client names none that matches.
    pub certificates: Spanned<Vec<CertFiles>>,
    /// `none` (default), `optional` or `required`.
    #[serde(default = "defaults::client_auth")]
    pub client_auth: Spanned<String>,
    /// PEM bundle of the CAs client certificates must chain to.
    pub client_ca: Option<Spanned<String>>,
    /// Most intermediate certificates a client chain may have. Default 3.
    #[serde(default = "defaults::max_chain_depth")]
    pub max_chain_depth: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertFiles {
    /// Certificate chain, leaf first.
    pub cert: Spanned<String>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Admin {
    /// Absolute path of the Unix socket the CLI talks to.
    pub socket: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Management {
    /// `IP:port` serving `/health/*` and `/metrics`.
    pub address: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Encap {
    /// IPv4 prefix the outer source addresses of IPIP tunnels are drawn from (by flow hash,
    /// for backend RSS); needed when a VIP has IPv4 backends.
    pub source_v4: Option<Spanned<String>>,
    /// IPv6 prefix for IP6IP6 tunnels (only the last 32 bits vary); needed when a VIP has
    /// IPv6 backends.
    pub source_v6: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vip {
    /// Unique name, used by the CLI and in metrics.
    pub name: Spanned<String>,
    /// `IP:port` clients connect to (`[v6]:port` for IPv6).
    pub address: Spanned<String>,
    /// `tcp` (default) or `udp`.
    #[serde(default = "defaults::protocol")]
    pub protocol: Spanned<String>,
    /// `5-tuple` (default) or `source-ip` (all flows of a client to one backend).
    #[serde(default = "defaults::hash")]
    pub hash: Spanned<String>,
    /// Maglev table size: a prime, above 100 × the number of backends.
    #[serde(default = "defaults::table_size")]
    pub table_size: Spanned<i64>,
    /// Maglev seed; gateways that must agree on flows use the same seed.
    #[serde(default = "defaults::seed")]
    pub seed: u32,
    /// PROXY protocol v2 from an upstream balancer, policed in the kernel: `off` (default),
    /// `optional` (a header is used when present) or `required` (flows without one are
    /// dropped). TCP VIPs only.
    #[serde(default = "defaults::proxy_protocol")]
    pub proxy_protocol: Spanned<String>,
    /// Who may send a PROXY header (CIDRs or addresses); a header from anyone else is forged
    /// and its flow dropped.
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// When set, only these clients are served (the real client from a PROXY header, else the
    /// TCP peer).
    #[serde(default)]
    pub allow_clients: Vec<Spanned<String>>,
    /// Clients refused, even when `allow_clients` lists them.
    #[serde(default)]
    pub deny_clients: Vec<Spanned<String>>,
    /// Active check of every backend of this VIP that has none of its own.
    pub health_check: Option<Spanned<HealthCheck>>,
    /// The backends; the tunnel goes to `address`.
    #[serde(default, rename = "backend")]
    pub backends: Vec<Spanned<Backend>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Backend IP address (the tunnel destination; the VIP must be local on the backend).
    pub address: Spanned<String>,
    /// Relative share of new flows (default 1; 0 takes no new flows).
    #[serde(default = "defaults::weight")]
    pub weight: u32,
    /// Replaces the VIP's check for this backend (a whole check, not merged with the VIP's).
    pub health_check: Option<Spanned<HealthCheck>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    /// `tcp` (the handshake completes; default) or `http` (a GET answers `expect_status`).
    #[serde(default = "defaults::check_kind")]
    pub kind: Spanned<String>,
    /// Port probed on the backend address (default: the VIP's port).
    pub port: Option<Spanned<i64>>,
    /// HTTP only: the path requested (default `defaults::HTTP_PATH`).
    pub path: Option<Spanned<String>>,
    /// HTTP only: the Host header (default: the backend address).
    pub host: Option<Spanned<String>>,
    /// HTTP only: the status that means healthy (default `defaults::EXPECT_STATUS`).
    pub expect_status: Option<Spanned<i64>>,
    /// Time between probes of one backend.
    #[serde(default = "defaults::check_interval")]
    pub interval: Spanned<String>,
    /// How long a probe may take; at most `interval`.
    #[serde(default = "defaults::check_timeout")]
    pub timeout: Spanned<String>,
    /// Consecutive successes that bring a down backend up.
    #[serde(default = "defaults::rise")]
    pub rise: Spanned<i64>,
    /// Consecutive failures that take an up backend down.
    #[serde(default = "defaults::fall")]
    pub fall: Spanned<i64>,
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            socket: defaults::admin_socket(),
        }
    }
}

impl Default for Management {
    fn default() -> Self {
        Management {
            address: defaults::management_address(),
        }
    }
}

pub mod defaults {
    use toml::Spanned;

    /// HTTP checks request this path unless told otherwise.
    pub const HTTP_PATH: &str = "/";
    /// HTTP checks expect this status unless told otherwise.
    pub const EXPECT_STATUS: u16 = 200;

    /// A value the file did not give (see the module doc for why the span is empty).
    fn unwritten<T>(value: T) -> Spanned<T> {
        Spanned::new(0..0, value)
    }

    pub fn route_action() -> Spanned<String> {
        unwritten("proxy".into())
    }
    pub fn instance() -> Spanned<String> {
        unwritten("default".into())
    }
    pub fn xdp_mode() -> Spanned<String> {
        unwritten("native".into())
    }
    pub fn conntrack_entries() -> Spanned<i64> {
        unwritten(lb_common::CONNTRACK_ENTRIES.into())
    }
    pub fn keep_dataplane() -> bool {
        false
    }
    pub fn kernel_log() -> Spanned<String> {
        unwritten("off".into())
    }
    pub fn bpffs() -> Spanned<String> {
        unwritten("/sys/fs/bpf".into())
    }
    pub fn admin_socket() -> Spanned<String> {
        unwritten("/run/sluice/admin.sock".into())
    }
    pub fn management_address() -> Spanned<String> {
        unwritten("127.0.0.1:9000".into())
    }
    pub fn shutdown_delay() -> Spanned<String> {
        unwritten("1s".into())
    }
    pub fn shutdown_timeout() -> Spanned<String> {
        unwritten("1s".into())
    }
    pub fn protocol() -> Spanned<String> {
        unwritten("tcp".into())
    }
    pub fn forwarded_headers() -> Vec<Spanned<String>> {
        vec![
            unwritten("forwarded".into()),
            unwritten("x-forwarded".into()),
        ]
    }
    pub fn client_auth() -> Spanned<String> {
        unwritten("none".into())
    }
    pub fn max_chain_depth() -> Spanned<i64> {
        unwritten(i64::from(crate::config::tls::DEFAULT_MAX_CHAIN_DEPTH))
    }
    pub fn connect_timeout() -> Spanned<String> {
        unwritten("2s".into())
    }
    pub fn response_timeout() -> Spanned<String> {
        unwritten("60s".into())
    }
    pub fn request_header_timeout() -> Spanned<String> {
        unwritten("10s".into())
    }
    pub fn idle_timeout() -> Spanned<String> {
        unwritten("75s".into())
    }
    pub fn max_connections() -> Spanned<i64> {
        unwritten(10_000)
    }
    pub fn proxy_protocol() -> Spanned<String> {
        unwritten("off".into())
    }
    pub fn send_proxy_protocol() -> Spanned<String> {
        unwritten("off".into())
    }
    pub fn hash() -> Spanned<String> {
        unwritten("5-tuple".into())
    }
    pub fn table_size() -> Spanned<i64> {
        unwritten(lb_common::DEFAULT_RING_SIZE.into())
    }
    pub fn seed() -> u32 {
        0
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn check_kind() -> Spanned<String> {
        unwritten("tcp".into())
    }
    pub fn check_interval() -> Spanned<String> {
        unwritten("2s".into())
    }
    pub fn check_timeout() -> Spanned<String> {
        unwritten("1s".into())
    }
    pub fn rise() -> Spanned<i64> {
        unwritten(2)
    }
    pub fn fall() -> Spanned<i64> {
        unwritten(3)
    }
}
