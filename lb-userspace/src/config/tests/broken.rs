//! Broken configs: each must give exactly one error, on the expected line, saying what is wrong
//! and how to fix it.

use super::{edit, Config};

/// Replaces line 39 of `GOOD` (the last backend's address) with itself and an `[[edge]]` that
/// verifies client certificates; the keys given land on lines 45, 46, ...
macro_rules! edge {
    ($($key:expr),*) => {
        concat!(
            "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\n",
            "address = \"198.19.0.10:443\"\npool = \"web\"\n",
            $($key, "\n",)*
            "[edge.tls]\ncertificates = [{ cert = \"/etc/s.pem\", key = \"/etc/s.key\" }]\n",
            "client_auth = \"optional\"\nclient_ca = \"/etc/ca.pem\""
        )
    };
}

/// An edge with the apache and haproxy formats and these `client_cert_names` (on line 46).
macro_rules! names {
    ($names:expr) => {
        edge!(
            "client_cert_header = [\"apache\", \"haproxy\"]",
            concat!("client_cert_names = { ", $names, " }")
        )
    };
}

/// A broken config: its base text with some lines replaced, and the one error it must give.
pub(super) struct Case {
    pub(super) name: &'static str,
    /// Lines of the base text (`GOOD` here) to replace.
    pub(super) edits: &'static [(usize, &'static str)],
    pub(super) line: usize,
    /// Part of the error as displayed (`line L, column C: ` then this).
    pub(super) message: &'static str,
}

const CASES: &[Case] = &[
    Case {
        name: "syntax error",
        edits: &[(4, "conntrack_entries = 65 536")],
        line: 4,
        message: "expected newline, `#`",
    },
    Case {
        name: "unknown top-level key",
        edits: &[(6, "colour = \"blue\"")],
        line: 6,
        message: "colour: unknown key `colour` (expected one of `instance`, `interfaces`",
    },
    Case {
        name: "unknown key in a backend",
        edits: &[(30, "wieght = 3")],
        line: 30,
        message: "vip[0].backend[1].wieght: unknown key `wieght`; did you mean `weight`? \
                  (expected one of `address`, `weight`, `health_check`)",
    },
    Case {
        name: "wrong type",
        edits: &[(4, "conntrack_entries = \"many\"")],
        line: 4,
        message: "conntrack_entries: expected an integer (no quotes), found the string \"many\"",
    },
    Case {
        name: "bad instance",
        edits: &[(1, "instance = \"gw/1\"")],
        line: 1,
        message: "instance: \"gw/1\" is not a valid name; use letters, digits, '-' and '_' only",
    },
    Case {
        name: "empty interfaces",
        edits: &[(2, "interfaces = []")],
        line: 2,
        message: "interfaces: name at least one interface to attach to, e.g. [\"eth0\"]",
    },
    Case {
        name: "bad interface name",
        edits: &[(2, "interfaces = [\"eth0\", \"a-very-long-ifname0\"]")],
        line: 2,
        message: "interfaces[1]: \"a-very-long-ifname0\" is not an interface name",
    },
    Case {
        name: "duplicate interface",
        edits: &[(2, "interfaces = [\"eth0\", \"eth0\"]")],
        line: 2,
        message: "interfaces[1]: \"eth0\" is already interfaces[0]; list each interface once",
    },
    Case {
        name: "bad xdp_mode",
        edits: &[(3, "xdp_mode = \"fast\"")],
        line: 3,
        message: "xdp_mode: \"fast\" is not a valid choice; use \"native\" or \"skb\"",
    },
    Case {
        name: "zero conntrack entries",
        edits: &[(4, "conntrack_entries = 0")],
        line: 4,
        message: "conntrack_entries: 0 is out of range: must be at least 1",
    },
    Case {
        name: "zero worker threads",
        edits: &[(4, "worker_threads = 0")],
        line: 4,
        message: "worker_threads: 0 is out of range: must be between 1 and 1024 (threads serving \
                  the edge listeners; leave it out for one per CPU available)",
    },
    Case {
        name: "relative bpffs",
        edits: &[(5, "bpffs = \"sys/fs/bpf\"")],
        line: 5,
        message: "bpffs: \"sys/fs/bpf\" is not an absolute path",
    },
    Case {
        name: "relative admin socket",
        edits: &[(8, "socket = \"admin.sock\"")],
        line: 8,
        message: "admin.socket: \"admin.sock\" is not an absolute path; write it from the root, \
                  e.g. \"/run/sluice/admin.sock\"",
    },
    Case {
        name: "bad management address",
        edits: &[(11, "address = \"localhost:9000\"")],
        line: 11,
        message: "management.address: \"localhost:9000\" is not an IP:port; write e.g. \
                  \"127.0.0.1:9000\"",
    },
    Case {
        name: "zero shutdown timeout",
        edits: &[(6, "shutdown_timeout = \"0s\"")],
        line: 6,
        message: "shutdown_timeout: \"0s\" is too short: must be above 0",
    },
    Case {
        name: "bad CIDR",
        edits: &[(14, "source_v4 = \"198.19.255.0/33\"")],
        line: 14,
        message: "encap.source_v4: \"198.19.255.0/33\" is not an IPv4 prefix; write \
                  address/length, e.g. \"198.19.255.0/24\"",
    },
    Case {
        name: "IPv6 backends without encap.source_v6",
        edits: &[(15, "")],
        line: 33,
        message: "encap.source_v6: vip \"dns\" has IPv6 backends, reached through IP6IP6 \
                  tunnels whose outer source addresses come from encap.source_v6; add it \
                  under [encap], e.g. source_v6 = \"2001:db8:ffff::/96\"",
    },
    Case {
        name: "IPv4 backends without encap.source_v4",
        edits: &[(14, "")],
        line: 17,
        message: "encap.source_v4: vip \"web\" has IPv4 backends",
    },
    Case {
        name: "port 0",
        edits: &[(19, "address = \"198.19.0.10:0\"")],
        line: 19,
        message: "vip[0].address: port 0 cannot be connected to",
    },
    Case {
        name: "non-prime table size",
        edits: &[(20, "table_size = 65536")],
        line: 20,
        message: "vip[0].table_size: Maglev table size 65536 is not prime; use a prime such as \
                  65537",
    },
    Case {
        name: "table too small for its backends",
        edits: &[(20, "table_size = 101")],
        line: 20,
        message: "vip[0].table_size: 101 slots are too few for 2 backends: use a prime above \
                  200 (100 per backend, for an even spread), such as 211",
    },
    Case {
        name: "bad duration",
        edits: &[(24, "interval = \"5 parsecs\"")],
        line: 24,
        message: "vip[0].health_check.interval: \"5 parsecs\" is not a duration (unknown time \
                  unit \"parsecs\"",
    },
    Case {
        name: "zero interval",
        edits: &[(24, "interval = \"0s\"")],
        line: 24,
        message: "vip[0].health_check.interval: \"0s\" is too short: must be at least 10ms",
    },
    Case {
        name: "timeout above interval",
        edits: &[(24, "timeout = \"3s\"")],
        line: 24,
        message: "vip[0].health_check.timeout: 3s is longer than the interval (2s): a probe \
                  must end before the next one starts; lower timeout or raise interval",
    },
    Case {
        name: "default timeout above a written interval points at the interval",
        edits: &[(24, "interval = \"500ms\"")],
        line: 24,
        message: "vip[0].health_check.timeout: 1s is longer than the interval (500ms)",
    },
    Case {
        name: "http keys on a tcp check",
        edits: &[(22, "kind = \"tcp\"")],
        line: 23,
        message: "vip[0].health_check.path: only HTTP checks use path; set kind = \"http\" or \
                  remove path",
    },
    Case {
        name: "http key on a backend's tcp check",
        edits: &[(31, "health_check = { expect_status = 204 }")],
        line: 31,
        message: "vip[0].backend[1].health_check.expect_status: only HTTP checks use \
                  expect_status",
    },
    Case {
        name: "bad http path",
        edits: &[(23, "path = \"healthz\"")],
        line: 23,
        message: "vip[0].health_check.path: \"healthz\" is not a request path; start it with '/'",
    },
    Case {
        name: "rise 0",
        edits: &[(24, "rise = 0")],
        line: 24,
        message: "vip[0].health_check.rise: 0 is out of range: must be at least 1 (consecutive \
                  successes that bring a down backend up; the default is 2)",
    },
    Case {
        name: "check port out of range",
        edits: &[(31, "health_check = { port = 70000 }")],
        line: 31,
        message: "vip[0].backend[1].health_check.port: 70000 is out of range: must be between 1 \
                  and 65535",
    },
    Case {
        name: "duplicate backend",
        edits: &[(29, "address = \"198.18.10.2\"")],
        line: 29,
        message: "vip[0].backend[1].address: 198.18.10.2 is listed twice (also backend[0]); \
                  list each backend once and raise its weight for a larger share",
    },
    Case {
        name: "backend with a port",
        edits: &[(29, "address = \"198.18.10.3:80\"")],
        line: 29,
        message: "vip[0].backend[1].address: \"198.18.10.3:80\" is not an IP address",
    },
    Case {
        name: "duplicate VIP name",
        edits: &[(34, "name = \"web\"")],
        line: 34,
        message: "vip[1].name: \"web\" is already the name of vip[0]; VIP names must be unique",
    },
    Case {
        name: "duplicate VIP service",
        edits: &[
            (35, "address = \"198.19.0.10:80\""),
            (36, "protocol = \"tcp\""),
        ],
        line: 35,
        message: "vip[1].address: vip[0] already serves this address, port and protocol",
    },
    Case {
        name: "bad protocol",
        edits: &[(36, "protocol = \"sctp\"")],
        line: 36,
        message: "vip[1].protocol: \"sctp\" is not a valid choice; use \"tcp\" or \"udp\"",
    },
    Case {
        name: "unknown PROXY policy",
        edits: &[(20, "proxy_protocol = \"v2\"")],
        line: 20,
        message: "vip[0].proxy_protocol: \"v2\" is not a valid choice; use \"off\", \"optional\" \
                  or \"required\"",
    },
    Case {
        name: "PROXY policy without trusted proxies",
        edits: &[(20, "proxy_protocol = \"required\"")],
        line: 20,
        message: "vip[0].trusted_proxies: proxy_protocol = \"required\" needs trusted_proxies: \
                  without them every PROXY header is refused as forged",
    },
    Case {
        name: "trusted proxies without a PROXY policy",
        edits: &[(20, "trusted_proxies = [\"198.18.0.0/24\"]")],
        line: 20,
        message: "vip[0].trusted_proxies: has no effect while proxy_protocol = \"off\"",
    },
    Case {
        name: "PROXY policy on a UDP VIP",
        edits: &[(37, "proxy_protocol = \"optional\"")],
        line: 37,
        message: "vip[1].proxy_protocol: \"optional\" needs a TCP VIP",
    },
    Case {
        name: "client CIDR with host bits",
        edits: &[(20, "allow_clients = [\"198.18.0.0/24\", \"10.1.2.3/8\"]")],
        line: 20,
        message: "vip[0].allow_clients[1]: \"10.1.2.3/8\" has host bits set; write \"10.0.0.0/8\" \
                  for the network or \"10.1.2.3/32\" for the one host",
    },
    Case {
        name: "client CIDR that is not one",
        edits: &[(20, "deny_clients = [\"10.0.0.0/33\"]")],
        line: 20,
        message: "vip[0].deny_clients[0]: \"10.0.0.0/33\" is not a CIDR or an address",
    },
    Case {
        name: "edge PROXY required without trusted proxies",
        edits: &[(39, "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\naddress = \"198.19.0.10:443\"\npool = \"web\"\nproxy_protocol = \"required\"")],
        line: 45,
        message: "edge[0].trusted_proxies: proxy_protocol = \"required\" needs trusted_proxies",
    },
    Case {
        name: "edge PROXY optional without trusted proxies",
        edits: &[(39, "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\naddress = \"198.19.0.10:443\"\npool = \"web\"\nproxy_protocol = \"optional\"\ntrusted_proxies = []")],
        line: 45,
        message: "edge[0].trusted_proxies: proxy_protocol = \"optional\" needs trusted_proxies",
    },
    Case {
        name: "edge PROXY policy that does not exist",
        edits: &[(39, "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\naddress = \"198.19.0.10:443\"\npool = \"web\"\nproxy_protocol = \"v2\"\ntrusted_proxies = [\"198.18.0.1\"]")],
        line: 45,
        message: "edge[0].proxy_protocol: \"v2\" is not a valid choice; use \"off\", \"optional\"",
    },
    Case {
        name: "edge pool that is no VIP",
        edits: &[(39, "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\naddress = \"198.19.0.10:443\"\npool = \"kc\"")],
        line: 44,
        message: "edge[0].pool: no [[vip]] is named \"kc\"; name one of: web, dns",
    },
    Case {
        name: "edge pool that is a UDP VIP",
        edits: &[(39, "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\naddress = \"198.19.0.10:443\"\npool = \"dns\"")],
        line: 44,
        message: "edge[0].pool: vip \"dns\" is UDP",
    },
    Case {
        name: "edge on a VIP's address",
        edits: &[(39, "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\naddress = \"198.19.0.10:80\"\npool = \"web\"")],
        line: 43,
        message: "edge[0].address: vip \"web\" already serves 198.19.0.10:80",
    },
    Case {
        name: "client certificate headers without client auth",
        edits: &[(39, "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\naddress = \"198.19.0.10:443\"\npool = \"web\"\nclient_cert_header = [\"rfc9440\"]")],
        line: 45,
        message: "edge[0].client_cert_header: no certificate is ever verified on this listener",
    },
    Case {
        name: "unknown client certificate header format",
        edits: &[(39, "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\naddress = \"198.19.0.10:443\"\npool = \"web\"\nclient_cert_header = [\"f5\"]")],
        line: 45,
        message: "edge[0].client_cert_header[0]: \"f5\" is not a valid choice; use \"rfc9440\"",
    },
    Case {
        name: "client auth without a CA",
        edits: &[(39, "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\naddress = \"198.19.0.10:443\"\npool = \"web\"\n[edge.tls]\ncertificates = [{ cert = \"/etc/s.pem\", key = \"/etc/s.key\" }]\nclient_auth = \"required\"")],
        line: 47,
        message: "edge[0].tls.client_ca: client_auth = \"required\" needs client_ca",
    },
    Case {
        name: "relative certificate path",
        edits: &[(39, "address = \"2001:db8:a::2\"\n\n[[edge]]\nname = \"tls\"\naddress = \"198.19.0.10:443\"\npool = \"web\"\n[edge.tls]\ncertificates = [{ cert = \"s.pem\", key = \"/etc/s.key\" }]")],
        line: 46,
        message: "edge[0].tls.certificates[0].cert: \"s.pem\" is not an absolute path",
    },
    Case {
        name: "empty client certificate header name",
        edits: &[(39, names!("apache_cert = \"\""))],
        line: 46,
        message: "edge[0].client_cert_names.apache_cert: must not be empty; write an HTTP header \
                  name, or leave the key out for the default",
    },
    Case {
        name: "client certificate header name that is no token",
        edits: &[(39, names!("haproxy_cert = \"X SSL Cert\""))],
        line: 46,
        message: "edge[0].client_cert_names.haproxy_cert: \"X SSL Cert\" is not an HTTP header \
                  name: ' ' is not allowed; use letters, digits and !#$%&'*+-.^_`|~",
    },
    Case {
        name: "chain prefix that is no token",
        edits: &[(39, names!("apache_chain_prefix = \"CERT/CHAIN\""))],
        line: 46,
        message: "edge[0].client_cert_names.apache_chain_prefix: \"CERT/CHAIN\" is not a header \
                  name prefix: '/' is not allowed",
    },
    Case {
        name: "empty chain prefix",
        edits: &[(39, names!("haproxy_chain_prefix = \"\""))],
        line: 46,
        message: "edge[0].client_cert_names.haproxy_chain_prefix: must not be empty; write a \
                  header name prefix",
    },
    Case {
        name: "client certificate header named Host",
        edits: &[(39, names!("apache_cert = \"Host\""))],
        line: 46,
        message: "edge[0].client_cert_names.apache_cert: \"Host\" is the Host header, which \
                  sluice manages itself; choose another name",
    },
    Case {
        name: "client certificate header named Content-Length",
        edits: &[(39, names!("haproxy_cert = \"content-length\""))],
        line: 46,
        message: "edge[0].client_cert_names.haproxy_cert: \"content-length\" is Content-Length, \
                  which frames the body, which sluice manages itself",
    },
    Case {
        name: "client certificate header named like a forwarded header",
        edits: &[(39, names!("haproxy_cert = \"X-Forwarded-For\""))],
        line: 46,
        message: "edge[0].client_cert_names.haproxy_cert: \"X-Forwarded-For\" is a forwarded \
                  header, which sluice manages itself; choose another name",
    },
    Case {
        name: "client certificate header named like a hop-by-hop header",
        edits: &[(39, names!("apache_cert = \"Keep-Alive\""))],
        line: 46,
        message: "edge[0].client_cert_names.apache_cert: \"Keep-Alive\" is a hop-by-hop header, \
                  which sluice manages itself; choose another name",
    },
    Case {
        name: "client certificate header of another format",
        edits: &[(39, names!("apache_cert = \"ssl-client-verify\""))],
        line: 46,
        message: "edge[0].client_cert_names.apache_cert: \"ssl-client-verify\" is a header of \
                  the nginx format, which sluice manages itself; choose another name",
    },
    Case {
        name: "two configured client certificate headers with one name",
        edits: &[(39, names!("apache_cert = \"X-Client\", haproxy_cert = \"x-CLIENT\""))],
        line: 46,
        message: "edge[0].client_cert_names.haproxy_cert: \"x-CLIENT\" is also a header of \
                  apache_cert (\"X-Client\"); each client certificate header needs a name of its \
                  own",
    },
    Case {
        name: "client certificate header named like another format's default",
        edits: &[(39, names!("apache_cert = \"X-SSL-Client-Cert\""))],
        line: 46,
        message: "edge[0].client_cert_names.apache_cert: \"X-SSL-Client-Cert\" is also a header \
                  of haproxy_cert (\"x-ssl-client-cert\", the default)",
    },
    Case {
        name: "client certificate header that is one of the chain headers",
        edits: &[(39, names!("apache_cert = \"CERT_CHAIN_3\""))],
        line: 46,
        message: "edge[0].client_cert_names.apache_cert: \"CERT_CHAIN_3\" is also a header of \
                  apache_chain_prefix (\"CERT_CHAIN\", the default)",
    },
    Case {
        name: "chain prefix shared by both formats",
        edits: &[(39, names!("apache_chain_prefix = \"X-SSL-Client-Cert-Chain\""))],
        line: 46,
        message: "edge[0].client_cert_names.apache_chain_prefix: \"X-SSL-Client-Cert-Chain\" \
                  makes the header \"x-ssl-client-cert-chain_0\", which is also a header of \
                  haproxy_chain_prefix (\"X-SSL-Client-Cert-Chain\", the default)",
    },
    Case {
        name: "client certificate header name for a format not selected",
        edits: &[(39, edge!("client_cert_header = [\"apache\"]", "client_cert_names = { haproxy_cert = \"X-Client\" }"))],
        line: 46,
        message: "edge[0].client_cert_names.haproxy_cert: has no effect: client_cert_header \
                  does not list \"haproxy\"; add it there or leave haproxy_cert out",
    },
    Case {
        name: "unknown client certificate name key",
        edits: &[(39, names!("nginx_cert = \"X-Client\""))],
        line: 46,
        message: "edge[0].client_cert_names.nginx_cert: unknown key `nginx_cert` (expected one \
                  of `apache_cert`, `apache_chain_prefix`, `haproxy_cert`, `haproxy_chain_prefix`)",
    },
    Case {
        name: "path prefix without a leading slash",
        edits: &[(39, edge!("path_prefix = \"auth\""))],
        line: 45,
        message: "edge[0].path_prefix: \"auth\" does not start with '/'; write it like \"/auth\"",
    },
    Case {
        name: "path prefix that is the root",
        edits: &[(39, edge!("path_prefix = \"/\""))],
        line: 45,
        message: "edge[0].path_prefix: \"/\" is every path; leave path_prefix out to proxy all \
                  of them",
    },
    Case {
        name: "path prefix with a trailing slash",
        edits: &[(39, edge!("path_prefix = \"/auth/\""))],
        line: 45,
        message: "edge[0].path_prefix: \"/auth/\" ends with '/'; leave that off (\"/auth\" \
                  covers \"/auth/...\" as well)",
    },
    Case {
        name: "path prefix with a query",
        edits: &[(39, edge!("path_prefix = \"/auth?x=1\""))],
        line: 45,
        message: "edge[0].path_prefix: \"/auth?x=1\" holds '?'; a prefix is a plain path: \
                  letters, digits and -._~!$&'()*+;=:@ between single '/' (no query, fragment or \
                  percent-encoding)",
    },
    Case {
        name: "path prefix with a fragment",
        edits: &[(39, edge!("path_prefix = \"/auth#top\""))],
        line: 45,
        message: "edge[0].path_prefix: \"/auth#top\" holds '#'",
    },
    Case {
        name: "path prefix with percent-encoding",
        edits: &[(39, edge!("path_prefix = \"/a%75th\""))],
        line: 45,
        message: "edge[0].path_prefix: \"/a%75th\" holds '%'",
    },
    Case {
        name: "path prefix with an empty segment",
        edits: &[(39, edge!("path_prefix = \"/kc//auth\""))],
        line: 45,
        message: "edge[0].path_prefix: \"/kc//auth\" holds \"//\" (an empty segment); use \
                  single '/'",
    },
    Case {
        name: "path prefix with a dot segment",
        edits: &[(39, edge!("path_prefix = \"/kc/./auth\""))],
        line: 45,
        message: "edge[0].path_prefix: \"/kc/./auth\" holds a \".\" or \"..\" segment; write the \
                  path it stands for",
    },
    Case {
        name: "path prefix with a dot-dot segment",
        edits: &[(39, edge!("path_prefix = \"/kc/..\""))],
        line: 45,
        message: "edge[0].path_prefix: \"/kc/..\" holds a \".\" or \"..\" segment",
    },
    Case {
        name: "route with an unknown action",
        edits: &[(39, edge!("[[edge.route]]", "path = \"/realms\"", "action = \"drop\""))],
        line: 47,
        message: "edge[0].route[0].action: \"drop\" is not a valid choice; use \"proxy\", \
                  \"status\" or \"redirect\"",
    },
    Case {
        name: "route an earlier one shadows",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "[[edge.route]]",
                "path = \"/realms/main\""
            ),
        )],
        line: 48,
        message: "edge[0].route[1].path: can never match: route[0] (path = \"/realms\") comes \
                  first and takes every request this route would; move this route above it, or \
                  remove it",
    },
    Case {
        name: "route after a catch-all",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/\"",
                "[[edge.route]]",
                "path = \"/admin\"",
                "action = \"status\"",
                "status = 404"
            ),
        )],
        line: 48,
        message: "edge[0].route[1].path: can never match: route[0] (path = \"/\") comes first",
    },
    Case {
        name: "route host with a port",
        edits: &[(
            39,
            edge!("[[edge.route]]", "path = \"/\"", "host = \"kc.example.com:443\"")
        )],
        line: 47,
        message: "edge[0].route[0].host: \"kc.example.com:443\" holds a port; a route matches \
                  the host name alone (the port is the listener's): write host = \
                  \"kc.example.com\"",
    },
    Case {
        name: "route path without a leading slash",
        edits: &[(39, edge!("[[edge.route]]", "path = \"realms\""))],
        line: 46,
        message: "edge[0].route[0].path: \"realms\" does not start with '/'",
    },
    Case {
        name: "route path with a trailing slash",
        edits: &[(39, edge!("[[edge.route]]", "path = \"/realms/\""))],
        line: 46,
        message: "edge[0].route[0].path: \"/realms/\" ends with '/'; leave that off \
                  (\"/realms\" matches itself and every path below it)",
    },
    Case {
        name: "path_prefix beside routes",
        edits: &[(
            39,
            edge!("path_prefix = \"/auth\"", "[[edge.route]]", "path = \"/\"")
        )],
        line: 45,
        message: "edge[0].path_prefix: is set beside [[edge.route]]; path_prefix is the route \
                  { path = \"/auth\", strip_prefix = true }: add that as the first \
                  [[edge.route]] and remove path_prefix",
    },
    Case {
        name: "empty route list",
        edits: &[(39, edge!("route = []"))],
        line: 45,
        message: "edge[0].route: is empty, so every request would get 404; add a \
                  [[edge.route]] with path = \"/\" to proxy every path, or leave route out",
    },
    Case {
        name: "unknown preset",
        edits: &[(39, edge!("preset = \"keycloak-25\""))],
        line: 45,
        message: "edge[0].preset: \"keycloak-25\" is not a valid choice; use \"keycloak\" or \
                  \"keycloak-admin\"",
    },
    Case {
        name: "keycloak preset proxying to the management port",
        edits: &[(
            39,
            edge!("preset = \"keycloak\"", "backend_port = 9000")
        )],
        line: 46,
        message: "edge[0].backend_port: is 9000, Keycloak's management port (health and \
                  metrics), which preset = \"keycloak\" must never proxy",
    },
    Case {
        name: "preset beside routes",
        edits: &[(
            39,
            edge!("preset = \"keycloak\"", "[[edge.route]]", "path = \"/admin\"")
        )],
        line: 45,
        message: "edge[0].preset: is set beside [[edge.route]]; a preset is a whole route \
                  table",
    },
    Case {
        name: "status route without a status",
        edits: &[(
            39,
            edge!("[[edge.route]]", "path = \"/admin\"", "action = \"status\"")
        )],
        line: 45,
        message: "edge[0].route[0].status: is needed: one of 403, 404",
    },
    Case {
        name: "status route with a status it cannot answer",
        edits: &[(
            39,
            edge!("[[edge.route]]", "path = \"/admin\"", "action = \"status\"", "status = 200")
        )],
        line: 48,
        message: "edge[0].route[0].status: 200 is not one of 403, 404",
    },
    Case {
        name: "redirect without a location",
        edits: &[(
            39,
            edge!("[[edge.route]]", "path = \"/\"", "action = \"redirect\"")
        )],
        line: 45,
        message: "edge[0].route[0].location: action = \"redirect\" needs location",
    },
    Case {
        name: "proxy key on a status route",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/admin\"",
                "action = \"status\"",
                "status = 403",
                "strip_prefix = true"
            )
        )],
        line: 49,
        message: "edge[0].route[0].strip_prefix: has no effect with action = \"status\"; it \
                  belongs to action = \"proxy\": remove it or change the action",
    },
    Case {
        name: "affinity on a route sluice answers itself",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/admin\"",
                "action = \"status\"",
                "status = 403",
                "affinity = { mode = \"cookie-hash\", cookie = \"sid\" }"
            )
        )],
        line: 49,
        message: "edge[0].route[0].affinity: has no effect with action = \"status\"; it \
                  belongs to action = \"proxy\": remove it or change the action",
    },
    Case {
        name: "auth-session-route without a routes table",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"auth-session-route\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.routes: is needed with mode = \
                  \"auth-session-route\": map each Keycloak node's route name (the \
                  AUTH_SESSION_ID suffix) to its backend, e.g. routes = { \"kc-0\" = \
                  \"198.18.10.2\" }",
    },
    Case {
        name: "auth-session-route naming a backend outside the pool",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"auth-session-route\", routes = { \"kc-0\" = \
                 \"198.18.10.2\", \"kc-1\" = \"198.18.99.2\" } }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.routes.\"kc-1\": 198.18.99.2 is not a backend of \
                  vip \"web\", so no request could ever go there; name one of: 198.18.10.2, \
                  198.18.10.3",
    },
    Case {
        name: "unknown affinity mode",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/\"",
                "affinity = { mode = \"cookies\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.mode: \"cookies\" is not a valid choice; use \
                  \"auth-session-route\", \"cookie-hash\" or \"cookie\"",
    },
    Case {
        name: "cookie-hash without a cookie name",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/\"",
                "affinity = { mode = \"cookie-hash\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.cookie: is needed with mode = \"cookie-hash\"",
    },
    Case {
        name: "cookie SameSite=None without Secure",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", secure = false, same_site = \"None\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.same_site: \"None\" needs secure = true: browsers drop a SameSite=None cookie without Secure, so no session would stick; remove secure = false, or use \"Lax\"",
    },
    Case {
        name: "cookie SameSite spelled in lower case",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", same_site = \"lax\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.same_site: \"lax\" is not a valid choice; use \"Lax\", \"Strict\" or \"None\"",
    },
    Case {
        name: "cookie max_age of zero",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", max_age = \"0s\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.max_age: \"0s\" is too short: must be at least 1s; it is how long the browser keeps the cookie (leave max_age out for a cookie that ends with the browser session)",
    },
    Case {
        name: "cookie max_age that is no duration",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", max_age = \"3600\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.max_age: \"3600\" is not a duration",
    },
    Case {
        name: "cookie path not from the root",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", path = \"realms\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.path: \"realms\" is not a cookie path; write a path from the root without spaces or \';\', e.g. \"/realms\" (or leave path out: the route\'s path)",
    },
    Case {
        name: "cookie path that would end the attribute",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", path = \"/realms; Domain=evil.test\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.path: \"/realms; Domain=evil.test\" is not a cookie path",
    },
    Case {
        name: "cookie name that is no token",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", cookie = \"my cookie\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.cookie: \"my cookie\" is not a cookie name; use letters, digits and !#$%&\'*+-.^_`|~ only, e.g. \"JSESSIONID\"",
    },
    Case {
        name: "cookie __Host- prefix off the root path",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", cookie = \"__Host-kc\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.cookie: \"__Host-kc\" has a prefix browsers accept only with secure = true and path = \"/\" (RFC 6265bis 4.1.3), so the cookie would never come back; set secure = true and path = \"/\", or use a name without the prefix",
    },
    Case {
        name: "cookie __Secure- prefix without Secure",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", cookie = \"__Secure-kc\", secure = false }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.cookie: \"__Secure-kc\" has a prefix browsers accept only with secure = true",
    },
    Case {
        name: "cookie key_file relative",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", key_file = \"affinity.key\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.key_file: \"affinity.key\" is not an absolute path; write it from the root, e.g. \"/etc/sluice/affinity.key\"",
    },
    Case {
        name: "cookie key_file missing",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", key_file = \"/nonexistent/sluice/affinity.key\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.key_file: \"/nonexistent/sluice/affinity.key\" cannot be read (No such file or directory (os error 2)); point key_file at the key file, or create it with `openssl rand -out FILE 32; chmod 600 FILE`",
    },
    Case {
        name: "cookie settings on cookie-hash",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie-hash\", cookie = \"sid\", max_age = \"1h\" }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.max_age: has no effect with mode = \"cookie-hash\"; it belongs to mode = \"cookie\": remove it or change the mode",
    },
    Case {
        name: "auth-session-route routes on cookie",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"cookie\", routes = { \"kc-0\" = \"198.18.10.2\" } }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.routes: has no effect with mode = \"cookie\"; it belongs to mode = \"auth-session-route\": remove it or change the mode",
    },
    Case {
        name: "cookie name on auth-session-route",
        edits: &[(
            39,
            edge!(
                "[[edge.route]]",
                "path = \"/realms\"",
                "affinity = { mode = \"auth-session-route\", cookie = \"sid\", routes = { \"kc-0\" = \"198.18.10.2\" } }"
            )
        )],
        line: 47,
        message: "edge[0].route[0].affinity.cookie: has no effect with mode = \"auth-session-route\"; it belongs to mode = \"cookie-hash\" or mode = \"cookie\": remove it or change the mode",
    },
    Case {
        name: "zero connect timeout",
        edits: &[(39, edge!("connect_timeout = \"0s\""))],
        line: 45,
        message: "edge[0].connect_timeout: \"0s\" is too short: must be at least 1ms; it is how \
                  long a backend gets to accept a connection before another is tried",
    },
    Case {
        name: "connect timeout that is no duration",
        edits: &[(39, edge!("connect_timeout = \"2\""))],
        line: 45,
        message: "edge[0].connect_timeout: \"2\" is not a duration",
    },
    Case {
        name: "response timeout below a millisecond",
        edits: &[(39, edge!("response_timeout = \"500us\""))],
        line: 45,
        message: "edge[0].response_timeout: \"500us\" is too short: must be at least 1ms; it is \
                  how long a backend gets to start its response before the client gets 504",
    },
    Case {
        name: "request header timeout too short to cross a network",
        edits: &[(39, edge!("request_header_timeout = \"50ms\""))],
        line: 45,
        message: "edge[0].request_header_timeout: \"50ms\" is too short: must be at least 100ms; \
                  it is how long a client has to send a whole request head",
    },
    Case {
        name: "idle timeout that is no duration",
        edits: &[(39, edge!("idle_timeout = \"forever\""))],
        line: 45,
        message: "edge[0].idle_timeout: \"forever\" is not a duration",
    },
    Case {
        name: "no connection allowed",
        edits: &[(39, edge!("max_connections = 0"))],
        line: 45,
        message: "edge[0].max_connections: 0 is out of range: must be between 1 and 1000000 \
                  (client connections open at once on this listener; more are closed at accept)",
    },
];

/// Parses `edit(case.edits)` for each case and checks it gives exactly one error, placed on
/// the case's line and saying its message; reports every mismatch at once.
pub(super) fn check_cases(cases: &[Case], edit: fn(&[(usize, &str)]) -> String) {
    let mut failures = Vec::new();
    for case in cases {
        let text = edit(case.edits);
        let Err(errors) = Config::parse(&text) else {
            failures.push(format!("{}: accepted", case.name));
            continue;
        };
        let [error] = &errors.0[..] else {
            failures.push(format!("{}: expected one error, got:\n{errors}", case.name));
            continue;
        };
        let shown = error.to_string();
        let prefix = format!("line {}, column ", case.line);
        if error.line() != Some(case.line) || !shown.starts_with(&prefix) {
            failures.push(format!(
                "{}: expected line {}: {shown}",
                case.name, case.line
            ));
        }
        if !shown.contains(case.message) {
            failures.push(format!(
                "{}: expected {:?} in: {shown}",
                case.name, case.message
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn broken_configs_give_line_field_and_fix() {
    check_cases(CASES, edit);
}
