//! Forwarded headers: what the backend learns about the client and the hops in between.
//!
//! sluice writes RFC 7239 `Forwarded` and/or the de-facto `X-Forwarded-*` family (plus
//! `X-Real-IP`), and only vouches for what it can check. Trust is decided by **who wrote the
//! HTTP request**: the TCP peer, or, when a trusted peer opened with a PROXY header, the client
//! that header names (a TCP-mode balancer such as `HAProxy` with `send-proxy-v2` passes the
//! client's bytes through untouched, so every header in them is the client's). A sender inside
//! `trusted_proxies` is another proxy whose headers describe earlier hops;
//! any other peer is a client, and whatever it claims about forwarding is discarded.
//!
//! # Rules
//!
//! The managed headers are listed by [`managed`] (with the styles, in `config::forwarded`). Every incoming copy of each of them (HTTP
//! header names are case-insensitive, and every line of a repeated header counts) is taken out
//! of the request first; then, per header:
//!
//! | header | untrusted peer | trusted peer |
//! |---|---|---|
//! | `Forwarded` | one element for this hop | incoming elements kept (several lines merged into one list, in order) and this hop's element appended |
//! | `X-Forwarded-For` | the client address | incoming list kept, `, <client>` appended |
//! | `X-Forwarded-Proto` / `-Host` / `-Port` | set from this hop | kept **as a group**: if the peer sent any of the three, all three are passed on exactly as the peer sent them (absent ones stay absent); if it sent none, all three are set from this hop |
//! | `X-Forwarded-Prefix` | the prefix the request's route strips, else absent | the route strips none: kept as sent; it strips one: the peer's single prefix joined with ours (`/a` + `/b` = `/a/b`), or ours alone if the peer's value is absent or not one plain path ([`route_prefix`], after [`apply`]) |
//! | `X-Real-IP` | the client address | kept if the peer sent exactly one IP address; otherwise the rightmost address of `X-Forwarded-For` + client that is not a trusted proxy |
//!
//! Why the group rule for proto/host/port: the first hop saw the URL the user typed, so its view
//! is the meaningful one; filling in only the missing ones from this hop would mix two hops'
//! views (a peer's `X-Forwarded-Proto: https` plus this listener's port 8080 would make
//! backends build `https://host:8080/` links).
//!
//! Further rules:
//! - Only the styles the policy lists are written. Headers of a style that is not listed are
//!   removed whatever the peer: a forged `X-Forwarded-For` must never pass an untrusted hop, and
//!   a trusted peer's chain that sluice doesn't extend would name the wrong last hop.
//! - The client appended is [`Hop::client`] (the PROXY header's source) only when the peer is
//!   trusted; for an untrusted peer it is the peer, whatever `client` says.
//! - IPv4-mapped IPv6 addresses (dual-stack sockets) are treated and written as IPv4, both for
//!   the trust check and in the headers.
//! - `Forwarded` elements written here: `for=<client ip:port>[;by=<listener ip:port>];proto=..;
//!   host=..` with RFC 7239 quoting (see [`node`]; a host with a port is quoted). `X-Forwarded-For`
//!   gets the bare address (IPv6 without brackets, no port).
//! - `Host` is never touched. The `host` given to [`apply`] is echoed into `host=` and
//!   `X-Forwarded-Host` only if it is a plain authority (letters, digits, `-._~:[]%`, at most
//!   255 bytes); anything else (a comma, a quote, a space...) is left out rather than escaped.
//! - Malformed `Forwarded` values from a trusted peer are kept verbatim, element by element; the
//!   only change is that a quoted-string left open at the end of a line is closed, so that the
//!   element appended here is never swallowed into it.
//! - Chains longer than [`MAX_CHAIN_LEN`] bytes (`Forwarded` and `X-Forwarded-For` separately)
//!   lose their **oldest** elements, whole elements only, until the result fits. Dropping from the
//!   left keeps the part a backend can verify (walking right to left over its trusted proxies);
//!   the far left of a very long chain is the part most likely forged anyway. Refusing the
//!   request would let one misbehaving upstream take the service down.
//! - Header values never contain CR, LF or other control characters: incoming values cannot
//!   (the parser rejects them) and everything written here is built through [`HeaderValue`]'s
//!   checks; a value that fails them is left out, never panicked on.

mod syntax;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};

use hyper::header::{HeaderMap, HeaderValue};
use ipnet::IpNet;

use crate::config::forwarded::{managed, Style};

pub use syntax::node;
use syntax::{
    chain, is_plain_authority, is_plain_prefix, is_token, join_prefix, kept_tail, parse_ip, quote,
    split_forwarded, split_list,
};

/// Longest `Forwarded` / `X-Forwarded-For` value (in bytes, this hop included) passed to a
/// backend; older elements are dropped beyond it.
pub const MAX_CHAIN_LEN: usize = 8 * 1024;

/// A listener's forwarding configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The header families written (duplicates are harmless).
    pub styles: Vec<Style>,
    /// TCP peers whose forwarding headers are believed and extended.
    pub trusted_proxies: Vec<IpNet>,
}

impl Policy {
    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    fn writes(&self, style: Style) -> bool {
        self.styles.contains(&style)
    }
}

/// This hop: who sent the request and where it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The PROXY header's source when the peer is a trusted proxy that sent one, else `peer`.
    pub client: SocketAddr,
    /// `"https"` or `"http"`.
    pub proto: &'static str,
    /// The port the request arrived on, for `X-Forwarded-Port`.
    pub listener_port: u16,
    /// The listener's address, for `Forwarded` `by=`.
    pub by: Option<SocketAddr>,
}

// Positions in `managed()`.
const FORWARDED: usize = 0;
const X_FORWARDED_FOR: usize = 1;
const X_FORWARDED_PROTO: usize = 2;
const X_FORWARDED_HOST: usize = 3;
const X_FORWARDED_PORT: usize = 4;
const X_FORWARDED_PREFIX: usize = 5;
const X_REAL_IP: usize = 6;

/// Rewrites `headers` (the incoming request's) for the backend, following the rules in the
/// module documentation. `host` is the request's authority (`Host`, or `:authority` for h2).
pub fn apply(headers: &mut HeaderMap, policy: &Policy, hop: &Hop, host: Option<&str>) {
    // Who wrote this request: the PROXY header's source when a trusted peer sent one (the
    // listener reads it from trusted peers only; checked again here), else the peer.
    let client = if policy.trusts(hop.peer.ip()) {
        hop.client
    } else {
        hop.peer
    };
    let trusted = policy.trusts(client.ip());
    if !trusted {
        Untrusted::new(policy, hop).apply(headers, host);
        return;
    }
    // Take every copy of every managed header out; only a trusted peer's are looked at again.
    let incoming: Vec<Vec<HeaderValue>> = managed()
        .iter()
        .map(|name| {
            let values: Vec<HeaderValue> = headers.get_all(name).iter().cloned().collect();
            headers.remove(name);
            if trusted {
                values
            } else {
                Vec::new()
            }
        })
        .collect();
    let incoming = |index: usize| incoming.get(index).map_or(&[][..], Vec::as_slice);

    let client = SocketAddr::new(client.ip().to_canonical(), client.port());
    let host = host.filter(|h| is_plain_authority(h));

    if policy.writes(Style::Forwarded) {
        let mut elements = Vec::new();
        for line in incoming(FORWARDED) {
            split_forwarded(line.as_bytes(), &mut elements);
        }
        let ours = forwarded_element(client, hop, host);
        insert(headers, FORWARDED, &chain(&elements, ours.as_bytes()));
    }

    if policy.writes(Style::XForwarded) {
        let mut entries = Vec::new();
        for line in incoming(X_FORWARDED_FOR) {
            split_list(line.as_bytes(), &mut entries);
        }
        let ours = client.ip().to_string();
        let kept = kept_tail(&entries, ours.len());
        insert(headers, X_FORWARDED_FOR, &chain(kept, ours.as_bytes()));

        let group = [X_FORWARDED_PROTO, X_FORWARDED_HOST, X_FORWARDED_PORT];
        if group.iter().any(|&i| !incoming(i).is_empty()) {
            for i in group {
                for value in incoming(i) {
                    headers.append(managed()[i].clone(), value.clone());
                }
            }
        } else {
            if is_token(hop.proto.as_bytes()) {
                insert(headers, X_FORWARDED_PROTO, hop.proto.as_bytes());
            }
            if let Some(host) = host {
                insert(headers, X_FORWARDED_HOST, host.as_bytes());
            }
            insert(
                headers,
                X_FORWARDED_PORT,
                hop.listener_port.to_string().as_bytes(),
            );
        }

        // Kept as sent: a route that strips a prefix joins ours to it (`route_prefix`).
        for value in incoming(X_FORWARDED_PREFIX) {
            headers.append(managed()[X_FORWARDED_PREFIX].clone(), value.clone());
        }

        let real = match incoming(X_REAL_IP) {
            [one] => parse_ip(one.as_bytes()),
            _ => None,
        }
        .unwrap_or_else(|| real_ip(kept, client.ip(), policy));
        insert(headers, X_REAL_IP, real.to_string().as_bytes());
    }
}

/// `X-Forwarded-Prefix` for a request whose route strips `ours`, once [`apply`] or
/// [`Untrusted::apply`] ran: the copies they left (a trusted peer's; an untrusted one's are
/// gone) are replaced by ours joined to the peer's single plain prefix, or by ours alone.
pub fn route_prefix(headers: &mut HeaderMap, policy: &Policy, ours: &str) {
    if !policy.writes(Style::XForwarded) {
        return;
    }
    let name = &managed()[X_FORWARDED_PREFIX];
    let theirs: Vec<HeaderValue> = headers.get_all(name).iter().cloned().collect();
    headers.remove(name);
    match theirs.as_slice() {
        [theirs] if is_plain_prefix(theirs.as_bytes()) => {
            let joined = join_prefix(theirs.as_bytes(), ours.as_bytes());
            insert(headers, X_FORWARDED_PREFIX, &joined);
        }
        _ => insert(headers, X_FORWARDED_PREFIX, ours.as_bytes()),
    }
}

/// What [`apply`] writes for a client it does not trust: its own view of the hop alone, which
/// depends on the connection only (and the request's Host). A listener builds it once per
/// connection ([`Untrusted::for_connection`]) instead of formatting it for every request.
#[derive(Debug, Clone)]
pub struct Untrusted {
    /// This hop's `Forwarded` element without `host=` (`None`: no `Forwarded` written).
    forwarded: Option<String>,
    /// Whether the `X-Forwarded-*` headers are written at all.
    x_forwarded: bool,
    /// `None` where [`insert`] would leave the header absent.
    x_forwarded_for: Option<HeaderValue>,
    x_forwarded_proto: Option<HeaderValue>,
    x_forwarded_port: Option<HeaderValue>,
    x_real_ip: Option<HeaderValue>,
}

impl Untrusted {
    /// The connection's part of the rewrite when its client is not trusted; `None` when it is
    /// (its requests' headers are then read, by [`apply`]).
    pub fn for_connection(policy: &Policy, hop: &Hop) -> Option<Untrusted> {
        let client = if policy.trusts(hop.peer.ip()) {
            hop.client
        } else {
            hop.peer
        };
        (!policy.trusts(client.ip())).then(|| Untrusted::new(policy, hop))
    }

    /// [`apply`]'s output for an untrusted client (the caller checked that it is one).
    fn new(policy: &Policy, hop: &Hop) -> Untrusted {
        let client = if policy.trusts(hop.peer.ip()) {
            hop.client
        } else {
            hop.peer
        };
        let client = SocketAddr::new(client.ip().to_canonical(), client.port());
        let value = |bytes: &[u8]| HeaderValue::from_bytes(bytes).ok();
        let x_forwarded = policy.writes(Style::XForwarded);
        let ip = client.ip().to_string();
        Untrusted {
            forwarded: policy
                .writes(Style::Forwarded)
                .then(|| forwarded_element(client, hop, None)),
            x_forwarded,
            x_forwarded_for: value(ip.as_bytes()),
            x_forwarded_proto: is_token(hop.proto.as_bytes())
                .then(|| value(hop.proto.as_bytes()))
                .flatten(),
            x_forwarded_port: value(hop.listener_port.to_string().as_bytes()),
            // An untrusted client's own address (see `real_ip`).
            x_real_ip: value(ip.as_bytes()),
        }
    }

    /// Rewrites `headers` as [`apply`] does for this connection's untrusted client: every copy
    /// of every managed header goes, then sluice's own are added, in `apply`'s order.
    pub fn apply(&self, headers: &mut HeaderMap, host: Option<&str>) {
        for name in managed() {
            headers.remove(name);
        }
        let host = host.filter(|h| is_plain_authority(h));
        if let Some(element) = &self.forwarded {
            match host {
                Some(host) => {
                    let quoted = quote(host);
                    let mut value = String::with_capacity(element.len() + 6 + quoted.len());
                    value.push_str(element);
                    value.push_str(";host=");
                    value.push_str(&quoted);
                    insert(headers, FORWARDED, value.as_bytes());
                }
                None => insert(headers, FORWARDED, element.as_bytes()),
            }
        }
        if !self.x_forwarded {
            return;
        }
        let put = |headers: &mut HeaderMap, index: usize, value: &Option<HeaderValue>| {
            if let Some(value) = value {
                headers.insert(managed()[index].clone(), value.clone());
            }
        };
        put(headers, X_FORWARDED_FOR, &self.x_forwarded_for);
        put(headers, X_FORWARDED_PROTO, &self.x_forwarded_proto);
        if let Some(host) = host {
            insert(headers, X_FORWARDED_HOST, host.as_bytes());
        }
        put(headers, X_FORWARDED_PORT, &self.x_forwarded_port);
        put(headers, X_REAL_IP, &self.x_real_ip);
    }
}

/// This hop's `Forwarded` element.
fn forwarded_element(client: SocketAddr, hop: &Hop, host: Option<&str>) -> String {
    let mut element = format!("for={}", node(client, true));
    if let Some(by) = hop.by {
        element.push_str(";by=");
        element.push_str(&node(by, true));
    }
    if is_token(hop.proto.as_bytes()) {
        element.push_str(";proto=");
        element.push_str(hop.proto);
    }
    if let Some(host) = host {
        element.push_str(";host=");
        element.push_str(&quote(host));
    }
    element
}

/// Sets `managed()[index]` to `value`, or leaves it absent if `value` isn't a valid field value.
fn insert(headers: &mut HeaderMap, index: usize, value: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.insert(managed()[index].clone(), value);
    }
}

/// The client as the backend should see it: walking `X-Forwarded-For` + `client` from the
/// right, the first address that is not a trusted proxy (or the last one checked, when an
/// entry is not an address or all are trusted).
fn real_ip(chain: &[Vec<u8>], client: IpAddr, policy: &Policy) -> IpAddr {
    let mut real = client;
    if !policy.trusts(real) {
        return real;
    }
    for entry in chain.iter().rev() {
        match parse_ip(entry) {
            Some(ip) => {
                real = ip;
                if !policy.trusts(ip) {
                    break;
                }
            }
            None => break,
        }
    }
    real
}
