//! `[[edge]]` listeners and their `[edge.tls]`. Certificate files are named here and read when
//! the listener starts (or reloads), so `sluice check` stays a check of the text.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use toml::Spanned;

use super::{
    cert_chain, cert_names,
    errors::{written_or, Report},
    fields, raw,
    vip::{self, cidrs},
    Edge, Protocol, ProxyProtocol, SendProxy, Vip,
};
use super::{
    client_cert::Format,
    forwarded::Style,
    route,
    tls::{CertFiles, ClientAuth, TlsSettings},
    Limits,
};

/// Client chains longer than this are almost always a misconfigured CA bundle.
const MAX_CHAIN_DEPTH: i64 = 10;
/// A backend timeout of 0 would fail every request without trying.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// Shorter client limits would cut ordinary clients whose bytes merely cross a slow network.
const MIN_CLIENT_TIMEOUT: Duration = Duration::from_millis(100);
/// More connections than this per listener is a typo rather than a plan (each also needs file
/// descriptors: one for the client and one per backend connection).
const MAX_CONNECTIONS: i64 = 1_000_000;

pub(super) fn edges(
    r: &mut Report,
    raw: &[Spanned<raw::Edge>],
    vips: Option<&[Vip]>,
) -> Option<Vec<Edge>> {
    let typed: Vec<Option<Edge>> = raw
        .iter()
        .enumerate()
        .map(|(i, e)| edge(r, i, e, vips))
        .collect();
    let mut ok = true;
    let mut names = HashMap::new();
    let mut addresses: HashMap<SocketAddr, usize> = HashMap::new();
    for (i, (e, t)) in raw.iter().zip(&typed).enumerate() {
        let name = &e.get_ref().name;
        let first = *names.entry(name.get_ref().as_str()).or_insert(i);
        if first != i {
            r.invalid(
                name.span(),
                format!("edge[{i}].name"),
                format!(
                    "\"{}\" is already the name of edge[{first}]; edge names must be unique",
                    name.get_ref()
                ),
            );
            ok = false;
        }
        let Some(t) = t else { continue };
        let first = *addresses.entry(t.address).or_insert(i);
        let vip_clash = vips.into_iter().flatten().find(|v| {
            v.protocol == Protocol::Tcp && v.address == t.address.ip() && v.port == t.address.port()
        });
        if first != i || vip_clash.is_some() {
            let other =
                vip_clash.map_or(format!("edge[{first}]"), |v| format!("vip \"{}\"", v.name));
            r.invalid(
                e.get_ref().address.span(),
                format!("edge[{i}].address"),
                format!(
                    "{other} already serves {}; use another address or port",
                    t.address
                ),
            );
            ok = false;
        }
    }
    let edges: Option<Vec<Edge>> = typed.into_iter().collect();
    let edges = edges.filter(|_| ok)?;
    if let (Some(vips), Some(first)) = (vips, raw.first()) {
        capacity(r, first.span(), vips, &edges)?;
    }
    Some(edges)
}

/// Edges with a specific address take a VIP entry and index each, and their
/// `trusted_proxies` share the VIPs' CIDR map.
fn capacity(
    r: &mut Report,
    span: std::ops::Range<usize>,
    vips: &[Vip],
    edges: &[Edge],
) -> Option<()> {
    let max = lb_common::MAX_VIPS as usize;
    let entries = vips.len() + edges.len();
    if entries > max {
        r.invalid(
            span,
            "edge",
            format!(
                "{} VIPs and {} edges together; at most {max} fit the dataplane's VIP map",
                vips.len(),
                edges.len()
            ),
        );
        return None;
    }
    let max = lb_common::MAX_CIDRS as usize;
    let cidrs: usize = vips
        .iter()
        .map(|v| v.trusted_proxies.len() + v.allow_clients.len() + v.deny_clients.len())
        .chain(edges.iter().map(|e| e.trusted_proxies.len()))
        .sum();
    if cidrs > max {
        r.invalid(
            span,
            "edge",
            format!(
                "{cidrs} CIDRs in the VIPs' and edges' trusted_proxies, allow_clients and \
                 deny_clients together; at most {max} fit the dataplane's CIDR map: merge \
                 adjacent prefixes"
            ),
        );
        return None;
    }
    Some(())
}

fn edge(
    r: &mut Report,
    i: usize,
    table: &Spanned<raw::Edge>,
    vips: Option<&[Vip]>,
) -> Option<Edge> {
    let e = table.get_ref();
    let field = |key: &str| format!("edge[{i}].{key}");
    let name = if e.name.get_ref().is_empty() {
        r.invalid(
            e.name.span(),
            field("name"),
            "must not be empty; logs and metrics name the listener by it",
        );
        None
    } else {
        Some(e.name.get_ref().clone())
    };
    let address = fields::socket_address(r, &e.address, &field("address"), "198.19.0.10:443");
    let pool = vips.and_then(|vips| vip::pool(r, &e.pool, &field("pool"), vips));
    let backend_port = backend_port(r, e, pool, &field("backend_port"))
        .and_then(|port| not_keycloak_management(r, e, port, table.span(), &field));
    let formats = list(
        r,
        &e.client_cert_header,
        &field("client_cert_header"),
        &FORMATS,
    );
    let names = cert_names::names(
        r,
        e.client_cert_names.as_ref(),
        formats.as_deref(),
        &field("client_cert_names"),
    );
    let chain = cert_chain::settings(r, e, formats.as_deref(), &field);
    let styles = list(
        r,
        &e.forwarded_headers,
        &field("forwarded_headers"),
        &STYLES,
    );
    let trusted_proxies = cidrs(r, &e.trusted_proxies, &field("trusted_proxies"));
    let proxy_protocol = proxy_protocol(r, e, &field);
    let send_proxy = fields::choice(
        r,
        &e.send_proxy_protocol,
        &field("send_proxy_protocol"),
        &[("off", SendProxy::Off), ("v2", SendProxy::V2)],
    );
    let listener = route::Listener {
        vips,
        pool,
        backend_port,
    };
    let routes = route::routes(r, e, table.span(), &listener, &field);
    let (connect_timeout, response_timeout) = timeouts(r, e, &field);
    let (client_limits, max_connections) = clients(r, e, &field);
    let tls = match &e.tls {
        Some(t) => tls(r, t, &field("tls")).map(Some),
        None => Some(None),
    };
    if let (Some(formats), Some(tls)) = (&formats, &tls) {
        let verifies = tls
            .as_ref()
            .is_some_and(|t| t.client_auth != ClientAuth::None);
        if !formats.is_empty() && !verifies {
            let span = written_or(
                e.client_cert_header.first().map_or(0..0, Spanned::span),
                table.span(),
            );
            r.invalid(
                span,
                field("client_cert_header"),
                "no certificate is ever verified on this listener, so these headers would never \
                 be set; add [edge.tls] with client_auth = \"optional\" or \"required\" and a \
                 client_ca",
            );
            return None;
        }
    }
    Some(Edge {
        name: name?,
        address: address?,
        pool: pool?.name.clone(),
        backend_port: backend_port?,
        client_cert_header: formats?,
        client_cert_names: names?,
        client_cert_chain: chain?,
        forwarded_headers: styles?,
        trusted_proxies: trusted_proxies?,
        proxy_protocol: proxy_protocol?,
        send_proxy: send_proxy?,
        routes: routes?,
        connect_timeout: connect_timeout?,
        response_timeout: response_timeout?,
        client_limits: client_limits?,
        max_connections: max_connections?,
        tls: tls?,
    })
}

/// `backend_port`, by default the pool VIP's port.
fn backend_port(r: &mut Report, e: &raw::Edge, pool: Option<&Vip>, field: &str) -> Option<u16> {
    match (&e.backend_port, pool) {
        (Some(p), _) => fields::int(
            r,
            p,
            field,
            1..=i64::from(u16::MAX),
            "the backends' plain HTTP port",
        ),
        (None, Some(v)) => Some(v.port),
        (None, None) => None,
    }
}

/// Keycloak serves health and metrics on its management port 9000, which the Keycloak
/// presets exist to keep private: proxying to it would expose exactly those.
const KEYCLOAK_MANAGEMENT_PORT: u16 = 9000;

/// `port`, unless a Keycloak preset would proxy to Keycloak's management port.
fn not_keycloak_management(
    r: &mut Report,
    e: &raw::Edge,
    port: u16,
    table: std::ops::Range<usize>,
    field: &dyn Fn(&str) -> String,
) -> Option<u16> {
    let Some(preset) = &e.preset else {
        return Some(port);
    };
    if port != KEYCLOAK_MANAGEMENT_PORT {
        return Some(port);
    }
    let span = e
        .backend_port
        .as_ref()
        .map_or_else(|| preset.span(), Spanned::span);
    r.invalid(
        written_or(span, table),
        field("backend_port"),
        format!(
            "is {KEYCLOAK_MANAGEMENT_PORT}, Keycloak's management port (health and metrics), \
             which preset = \"{}\" must never proxy; set the port Keycloak serves HTTP on, \
             e.g. backend_port = 8080",
            preset.get_ref()
        ),
    );
    None
}

/// `proxy_protocol` and who may send it: a policy other than `off` with nobody trusted would
/// refuse every header (`optional`) or every connection (`required`).
fn proxy_protocol(
    r: &mut Report,
    e: &raw::Edge,
    field: &dyn Fn(&str) -> String,
) -> Option<ProxyProtocol> {
    let policy = fields::proxy_protocol(r, &e.proxy_protocol, &field("proxy_protocol"))?;
    if policy != ProxyProtocol::Off && e.trusted_proxies.is_empty() {
        r.invalid(
            e.proxy_protocol.span(),
            field("trusted_proxies"),
            format!(
                "proxy_protocol = \"{}\" needs trusted_proxies: a PROXY header is only read \
                 from them, so without any every header is ignored; list the upstream \
                 balancers, e.g. trusted_proxies = [\"198.18.0.0/24\"]",
                e.proxy_protocol.get_ref()
            ),
        );
        return None;
    }
    Some(policy)
}

/// `connect_timeout` and `response_timeout`.
fn timeouts(
    r: &mut Report,
    e: &raw::Edge,
    field: &dyn Fn(&str) -> String,
) -> (Option<Duration>, Option<Duration>) {
    let connect = fields::duration(
        r,
        &e.connect_timeout,
        &field("connect_timeout"),
        MIN_TIMEOUT,
        "it is how long a backend gets to accept a connection before another is tried",
    );
    let response = fields::duration(
        r,
        &e.response_timeout,
        &field("response_timeout"),
        MIN_TIMEOUT,
        "it is how long a backend gets to start its response before the client gets 504",
    );
    (connect, response)
}

/// `request_header_timeout`, `idle_timeout` and `max_connections`.
fn clients(
    r: &mut Report,
    e: &raw::Edge,
    field: &dyn Fn(&str) -> String,
) -> (Option<Limits>, Option<u32>) {
    let request_header = fields::duration(
        r,
        &e.request_header_timeout,
        &field("request_header_timeout"),
        MIN_CLIENT_TIMEOUT,
        "it is how long a client has to send a whole request head",
    );
    let idle = fields::duration(
        r,
        &e.idle_timeout,
        &field("idle_timeout"),
        MIN_CLIENT_TIMEOUT,
        "it is how long a keep-alive connection may wait for its next request",
    );
    let max_connections = fields::int(
        r,
        &e.max_connections,
        &field("max_connections"),
        1..=MAX_CONNECTIONS,
        "client connections open at once on this listener; more are closed at accept",
    );
    let limits = request_header
        .zip(idle)
        .map(|(request_header, idle)| Limits {
            request_header,
            idle,
        });
    (limits, max_connections)
}

/// The config names are the formats' own (`Format::as_str`): the one parser of a format.
const FORMATS: [(&str, Format); Format::ALL.len()] = {
    let mut out = [("", Format::Rfc9440); Format::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = (Format::ALL[i].as_str(), Format::ALL[i]);
        i += 1;
    }
    out
};

/// The config names are the styles' own (`Style::name`): the one parser of a style.
const STYLES: [(&str, Style); Style::ALL.len()] = {
    let mut out = [("", Style::Forwarded); Style::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = (Style::ALL[i].name(), Style::ALL[i]);
        i += 1;
    }
    out
};

/// Each item one of `options`, each at most once.
fn list<T: Copy + PartialEq>(
    r: &mut Report,
    items: &[Spanned<String>],
    field: &str,
    options: &[(&str, T)],
) -> Option<Vec<T>> {
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (j, item) in items.iter().enumerate() {
        let Some(v) = fields::choice(r, item, &format!("{field}[{j}]"), options) else {
            ok = false;
            continue;
        };
        if out.contains(&v) {
            r.invalid(
                item.span(),
                format!("{field}[{j}]"),
                format!("\"{}\" is listed twice", item.get_ref()),
            );
            ok = false;
        }
        out.push(v);
    }
    ok.then_some(out)
}

fn tls(r: &mut Report, t: &Spanned<raw::EdgeTls>, field: &str) -> Option<TlsSettings> {
    let tv = t.get_ref();
    let f = |key: &str| format!("{field}.{key}");
    let mut certificates = Vec::new();
    let mut ok = true;
    if tv.certificates.get_ref().is_empty() {
        r.invalid(
            tv.certificates.span(),
            f("certificates"),
            "list at least one { cert = \"/etc/sluice/site.pem\", key = \"/etc/sluice/site.key\" }",
        );
        ok = false;
    }
    for (j, c) in tv.certificates.get_ref().iter().enumerate() {
        let cert = fields::absolute_path(
            r,
            &c.cert,
            &f(&format!("certificates[{j}].cert")),
            "/etc/sluice/site.pem",
        );
        let key = fields::absolute_path(
            r,
            &c.key,
            &f(&format!("certificates[{j}].key")),
            "/etc/sluice/site.key",
        );
        match (cert, key) {
            (Some(cert), Some(key)) => certificates.push(CertFiles { cert, key }),
            _ => ok = false,
        }
    }
    let client_auth = fields::choice(
        r,
        &tv.client_auth,
        &f("client_auth"),
        &[
            ("none", ClientAuth::None),
            ("optional", ClientAuth::Optional),
            ("required", ClientAuth::Required),
        ],
    );
    let client_ca = match &tv.client_ca {
        Some(p) => {
            fields::absolute_path(r, p, &f("client_ca"), "/etc/sluice/clients-ca.pem").map(Some)
        }
        None => Some(None),
    };
    let depth = fields::int::<u8>(
        r,
        &tv.max_chain_depth,
        &f("max_chain_depth"),
        1..=MAX_CHAIN_DEPTH,
        "intermediate certificates a client chain may carry",
    );
    if let (Some(auth), Some(None)) = (client_auth, &client_ca) {
        if auth != ClientAuth::None {
            r.invalid(
                tv.client_auth.span(),
                f("client_ca"),
                format!(
                    "client_auth = \"{}\" needs client_ca, the PEM bundle of the CAs client \
                     certificates must chain to",
                    tv.client_auth.get_ref()
                ),
            );
            ok = false;
        }
    }
    if !ok {
        return None;
    }
    Some(TlsSettings {
        certificates,
        client_auth: client_auth?,
        client_ca: client_ca?,
        max_chain_depth: depth?,
        alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
    })
}
