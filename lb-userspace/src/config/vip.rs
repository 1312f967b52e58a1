//! `[[vip]]` tables and their `[[vip.backend]]`s, including the checks across VIPs.

use std::{collections::HashMap, net::IpAddr};

use lb_common::maglev::{check_table_size, is_prime, MAX_TABLE_SIZE, MIN_TABLE_SIZE};
use toml::Spanned;

use ipnet::IpNet;

use super::{
    errors::{written_or, Report},
    fields, health, raw, Backend, HashKey, HealthCheck, Protocol, ProxyProtocol, Vip,
};

/// A table needs this many slots per backend for shares to stay within about 1% of their
/// weight (Maglev's own guidance).
const SLOTS_PER_BACKEND: u64 = 100;

pub(super) fn vips(r: &mut Report, raw: &[Spanned<raw::Vip>]) -> Option<Vec<Vip>> {
    let max = lb_common::MAX_VIPS as usize;
    let mut ok = true;
    if let Some(extra) = raw.get(max) {
        r.invalid(
            extra.get_ref().name.span(),
            format!("vip[{max}]"),
            format!("at most {max} VIPs fit the dataplane's maps; remove the VIPs from here on"),
        );
        ok = false;
    }
    let typed: Vec<Option<Vip>> = raw.iter().enumerate().map(|(i, v)| vip(r, i, v)).collect();
    let mut names = HashMap::new();
    let mut services = HashMap::new();
    for (i, (v, t)) in raw.iter().zip(&typed).enumerate() {
        let name = &v.get_ref().name;
        let first = *names.entry(name.get_ref().as_str()).or_insert(i);
        if first != i {
            r.invalid(
                name.span(),
                format!("vip[{i}].name"),
                format!(
                    "\"{}\" is already the name of vip[{first}]; VIP names must be unique",
                    name.get_ref()
                ),
            );
            ok = false;
        }
        let Some(t) = t else { continue };
        let first = *services.entry((t.address, t.port, t.protocol)).or_insert(i);
        if first != i {
            r.invalid(
                v.get_ref().address.span(),
                format!("vip[{i}].address"),
                format!(
                    "vip[{first}] already serves this address, port and protocol; change one \
                     of them"
                ),
            );
            ok = false;
        }
    }
    let vips: Option<Vec<Vip>> = typed.into_iter().collect();
    let vips = vips.filter(|_| ok)?;
    let cidrs: usize = vips
        .iter()
        .map(|v| v.trusted_proxies.len() + v.allow_clients.len() + v.deny_clients.len())
        .sum();
    let max = lb_common::MAX_CIDRS as usize;
    if cidrs > max {
        let span = raw.first().map_or(0..0, Spanned::span);
        r.invalid(
            span,
            "vip",
            format!(
                "{cidrs} entries in trusted_proxies, allow_clients and deny_clients together; \
                 at most {max} fit the dataplane's CIDR map: merge adjacent prefixes"
            ),
        );
        return None;
    }
    Some(vips)
}

fn vip(r: &mut Report, i: usize, table: &Spanned<raw::Vip>) -> Option<Vip> {
    let v = table.get_ref();
    let field = |key: &str| format!("vip[{i}].{key}");
    let name = if v.name.get_ref().is_empty() {
        r.invalid(
            v.name.span(),
            field("name"),
            "must not be empty; the CLI and metrics refer to the VIP by it",
        );
        None
    } else {
        Some(v.name.get_ref().clone())
    };
    let address = fields::socket_address(r, &v.address, &field("address"), "198.19.0.10:80");
    let port = address.map(|a| a.port());
    let protocol = fields::choice(
        r,
        &v.protocol,
        &field("protocol"),
        &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)],
    );
    let hash = fields::choice(
        r,
        &v.hash,
        &field("hash"),
        &[
            ("5-tuple", HashKey::FiveTuple),
            ("source-ip", HashKey::SourceIp),
        ],
    );
    let table_size = table_size(r, table, &field("table_size"));
    // Outer None: the check is broken; inner None: the VIP has no check.
    let check: Option<Option<HealthCheck>> = match &v.health_check {
        None => Some(None),
        Some(check) => health::check(r, check, &field("health_check"), port).map(Some),
    };
    let backends = backends(r, i, v, port, check.as_ref());
    let proxy_protocol = fields::proxy_protocol(r, &v.proxy_protocol, &field("proxy_protocol"));
    let trusted_proxies = cidrs(r, &v.trusted_proxies, &field("trusted_proxies"));
    let allow_clients = cidrs(r, &v.allow_clients, &field("allow_clients"));
    let deny_clients = cidrs(r, &v.deny_clients, &field("deny_clients"));
    if let (Some(policy), Some(protocol)) = (proxy_protocol, protocol) {
        proxy_rules(r, v, &field, policy, protocol)?;
    }
    Some(Vip {
        name: name?,
        address: address?.ip(),
        port: port?,
        protocol: protocol?,
        hash: hash?,
        table_size: table_size?,
        seed: v.seed,
        proxy_protocol: proxy_protocol?,
        trusted_proxies: trusted_proxies?,
        allow_clients: allow_clients?,
        deny_clients: deny_clients?,
        backends: backends?,
    })
}

/// A PROXY policy needs a TCP VIP and someone trusted to send headers; a trust list without
/// a policy would be silently ignored.
fn proxy_rules(
    r: &mut Report,
    v: &raw::Vip,
    field: &dyn Fn(&str) -> String,
    policy: ProxyProtocol,
    protocol: Protocol,
) -> Option<()> {
    let written = v.proxy_protocol.get_ref();
    if policy == ProxyProtocol::Off {
        if let Some(first) = v.trusted_proxies.first() {
            r.invalid(
                first.span(),
                field("trusted_proxies"),
                "has no effect while proxy_protocol = \"off\"; set proxy_protocol = \
                 \"optional\" or \"required\", or remove the list",
            );
            return None;
        }
        return Some(());
    }
    if protocol != Protocol::Tcp {
        r.invalid(
            v.proxy_protocol.span(),
            field("proxy_protocol"),
            format!(
                "\"{written}\" needs a TCP VIP: PROXY protocol v2 headers start TCP streams; \
                 use \"off\" for UDP"
            ),
        );
        return None;
    }
    if v.trusted_proxies.is_empty() {
        r.invalid(
            v.proxy_protocol.span(),
            field("trusted_proxies"),
            format!(
                "proxy_protocol = \"{written}\" needs trusted_proxies: without them every \
                 PROXY header is refused as forged; list the upstream balancers, e.g. \
                 trusted_proxies = [\"198.18.0.0/24\"]"
            ),
        );
        return None;
    }
    Some(())
}

/// CIDRs (or single addresses) without host bits: `10.0.0.1/8` is almost always a typo for
/// one host or for the network, and the kernel would match the network.
pub(super) fn cidrs(r: &mut Report, list: &[Spanned<String>], field: &str) -> Option<Vec<IpNet>> {
    let mut ok = true;
    let mut nets = Vec::with_capacity(list.len());
    for (j, item) in list.iter().enumerate() {
        let text = item.get_ref().trim();
        let field = format!("{field}[{j}]");
        let net = text
            .parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
        match net {
            Some(net) if net.trunc() == net => nets.push(net),
            Some(net) => {
                r.invalid(
                    item.span(),
                    field,
                    format!(
                        "\"{text}\" has host bits set; write \"{}\" for the network or \"{}\" \
                         for the one host",
                        net.trunc(),
                        IpNet::from(net.addr())
                    ),
                );
                ok = false;
            }
            None => {
                r.invalid(
                    item.span(),
                    field,
                    format!(
                        "\"{text}\" is not a CIDR or an address; write e.g. \"198.18.0.0/24\", \
                         \"198.18.0.7\" or \"2001:db8::/32\""
                    ),
                );
                ok = false;
            }
        }
    }
    ok.then_some(nets)
}

/// A prime with enough slots for every backend to get its share.
fn table_size(r: &mut Report, table: &Spanned<raw::Vip>, field: &str) -> Option<u32> {
    let v = table.get_ref();
    let size = fields::int::<u32>(
        r,
        &v.table_size,
        field,
        i64::from(MIN_TABLE_SIZE)..=i64::from(MAX_TABLE_SIZE),
        "Maglev table slots; the default is 65537",
    )?;
    if let Err(e) = check_table_size(size) {
        r.invalid(v.table_size.span(), field, e.to_string());
        return None;
    }
    let needed = v.backends.len() as u64 * SLOTS_PER_BACKEND;
    if needed > u64::from(size) {
        // The default size can be too small too: then the error is the VIP's, not the key's.
        let span = written_or(v.table_size.span(), table.span());
        r.invalid(
            span,
            field,
            format!(
                "{size} slots are too few for {} backends: use a prime above {needed} \
                 (100 per backend, for an even spread), such as {}",
                v.backends.len(),
                prime_above(needed)
            ),
        );
        return None;
    }
    Some(size)
}

fn prime_above(n: u64) -> u32 {
    let start = u32::try_from(n).unwrap_or(MAX_TABLE_SIZE);
    (start.saturating_add(1)..MAX_TABLE_SIZE)
        .find(|&m| is_prime(m))
        .unwrap_or(MAX_TABLE_SIZE)
}

fn backends(
    r: &mut Report,
    i: usize,
    v: &raw::Vip,
    port: Option<u16>,
    vip_check: Option<&Option<HealthCheck>>,
) -> Option<Vec<Backend>> {
    let mut seen: HashMap<IpAddr, usize> = HashMap::new();
    let mut ok = true;
    let mut backends = Vec::with_capacity(v.backends.len());
    for (j, table) in v.backends.iter().enumerate() {
        let b = table.get_ref();
        let field = |key: &str| format!("vip[{i}].backend[{j}].{key}");
        let address = b.address.get_ref().parse::<IpAddr>().ok();
        if let Some(addr) = address {
            let first = *seen.entry(addr).or_insert(j);
            if first != j {
                r.invalid(
                    b.address.span(),
                    field("address"),
                    format!(
                        "{addr} is listed twice (also backend[{first}]); list each backend once \
                         and raise its weight for a larger share"
                    ),
                );
                ok = false;
            }
        } else {
            r.invalid(
                b.address.span(),
                field("address"),
                format!(
                    "\"{}\" is not an IP address; write e.g. \"198.18.10.2\" or \
                     \"2001:db8:a::2\" (no port: the tunnel keeps the VIP's)",
                    b.address.get_ref()
                ),
            );
        }
        // A backend's own check replaces the VIP's whole check.
        let health = match &b.health_check {
            Some(own) => health::check(r, own, &field("health_check"), port).map(Some),
            None => vip_check.cloned(),
        };
        if let (Some(address), Some(health)) = (address, health) {
            backends.push(Backend {
                address,
                weight: b.weight,
                health,
            });
        } else {
            ok = false;
        }
    }
    ok.then_some(backends)
}

/// The `[[vip]]` `name` names, whose backends serve a listener or a route: it must exist and
/// be TCP. (With broken VIPs the names are unknown: callers do not ask, their errors are
/// reported already.)
pub(super) fn pool<'v>(
    r: &mut Report,
    name_written: &Spanned<String>,
    field: &str,
    vips: &'v [Vip],
) -> Option<&'v Vip> {
    let name = name_written.get_ref();
    match vips.iter().find(|v| &v.name == name) {
        Some(v) if v.protocol == Protocol::Tcp => Some(v),
        Some(_) => {
            r.invalid(
                name_written.span(),
                field,
                format!("vip \"{name}\" is UDP; an HTTP listener needs a TCP VIP's backends"),
            );
            None
        }
        None => {
            let known: Vec<&str> = vips.iter().map(|v| v.name.as_str()).collect();
            r.invalid(
                name_written.span(),
                field,
                format!(
                    "no [[vip]] is named \"{name}\"; name one of: {}",
                    known.join(", ")
                ),
            );
            None
        }
    }
}
