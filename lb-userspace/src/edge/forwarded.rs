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
//! The managed headers are listed by [`managed`]. Every incoming copy of each of them (HTTP
//! header names are case-insensitive, and every line of a repeated header counts) is taken out
//! of the request first; then, per header:
//!
//! | header | untrusted peer | trusted peer |
//! |---|---|---|
//! | `Forwarded` | one element for this hop | incoming elements kept (several lines merged into one list, in order) and this hop's element appended |
//! | `X-Forwarded-For` | the client address | incoming list kept, `, <client>` appended |
//! | `X-Forwarded-Proto` / `-Host` / `-Port` | set from this hop | kept **as a group**: if the peer sent any of the three, all three are passed on exactly as the peer sent them (absent ones stay absent); if it sent none, all three are set from this hop |
//! | `X-Forwarded-Prefix` | the configured prefix, else absent | no prefix configured: kept as sent; prefix configured: the peer's single prefix joined with ours (`/a` + `/b` = `/a/b`), or ours alone if the peer's value is absent or not one plain path |
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

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Longest `Forwarded` / `X-Forwarded-For` value (in bytes, this hop included) passed to a
/// backend; older elements are dropped beyond it.
pub const MAX_CHAIN_LEN: usize = 8 * 1024;

/// Longest host echoed into `X-Forwarded-Host` / `host=`.
const MAX_HOST_LEN: usize = 255;

/// Which family of headers a listener writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Style {
    /// RFC 7239 `Forwarded`.
    #[serde(rename = "forwarded")]
    Forwarded,
    /// `X-Forwarded-For` / `-Proto` / `-Host` / `-Port` / `-Prefix` and `X-Real-IP`.
    #[serde(rename = "x-forwarded")]
    XForwarded,
}

impl Style {
    /// The name used in the configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Style::Forwarded => "forwarded",
            Style::XForwarded => "x-forwarded",
        }
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A configuration name that is neither `forwarded` nor `x-forwarded`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown forwarded header style {0:?} (expected \"forwarded\" or \"x-forwarded\")")]
pub struct UnknownStyle(pub String);

impl FromStr for Style {
    type Err = UnknownStyle;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("forwarded") {
            Ok(Style::Forwarded)
        } else if s.eq_ignore_ascii_case("x-forwarded") {
            Ok(Style::XForwarded)
        } else {
            Err(UnknownStyle(s.to_owned()))
        }
    }
}

/// A listener's forwarding configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// The header families written (duplicates are harmless).
    pub styles: Vec<Style>,
    /// TCP peers whose forwarding headers are believed and extended.
    pub trusted_proxies: Vec<IpNet>,
    /// The path prefix stripped before the backend, sent as `X-Forwarded-Prefix`.
    pub prefix: Option<String>,
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

const FORWARDED: usize = 0;
const X_FORWARDED_FOR: usize = 1;
const X_FORWARDED_PROTO: usize = 2;
const X_FORWARDED_HOST: usize = 3;
const X_FORWARDED_PORT: usize = 4;
const X_FORWARDED_PREFIX: usize = 5;
const X_REAL_IP: usize = 6;

static MANAGED: [HeaderName; 7] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-real-ip"),
];

/// Names of every header this module manages: `forwarded`, `x-forwarded-for`, `-proto`,
/// `-host`, `-port`, `-prefix`, `x-real-ip` (lowercase).
pub fn managed() -> &'static [HeaderName] {
    &MANAGED
}

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
    let incoming: Vec<Vec<HeaderValue>> = MANAGED
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
                    headers.append(MANAGED[i].clone(), value.clone());
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

        match (&policy.prefix, incoming(X_FORWARDED_PREFIX)) {
            (None, theirs) => {
                for value in theirs {
                    headers.append(MANAGED[X_FORWARDED_PREFIX].clone(), value.clone());
                }
            }
            (Some(ours), [theirs]) if is_plain_prefix(theirs.as_bytes()) => {
                let joined = join_prefix(theirs.as_bytes(), ours.as_bytes());
                insert(headers, X_FORWARDED_PREFIX, &joined);
            }
            (Some(ours), _) => insert(headers, X_FORWARDED_PREFIX, ours.as_bytes()),
        }

        let real = match incoming(X_REAL_IP) {
            [one] => parse_ip(one.as_bytes()),
            _ => None,
        }
        .unwrap_or_else(|| real_ip(kept, client.ip(), policy));
        insert(headers, X_REAL_IP, real.to_string().as_bytes());
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
    x_forwarded_prefix: Option<HeaderValue>,
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
            x_forwarded_prefix: policy.prefix.as_ref().and_then(|p| value(p.as_bytes())),
            // An untrusted client's own address (see `real_ip`).
            x_real_ip: value(ip.as_bytes()),
        }
    }

    /// Rewrites `headers` as [`apply`] does for this connection's untrusted client: every copy
    /// of every managed header goes, then sluice's own are added, in `apply`'s order.
    pub fn apply(&self, headers: &mut HeaderMap, host: Option<&str>) {
        for name in &MANAGED {
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
                headers.insert(MANAGED[index].clone(), value.clone());
            }
        };
        put(headers, X_FORWARDED_FOR, &self.x_forwarded_for);
        put(headers, X_FORWARDED_PROTO, &self.x_forwarded_proto);
        if let Some(host) = host {
            insert(headers, X_FORWARDED_HOST, host.as_bytes());
        }
        put(headers, X_FORWARDED_PORT, &self.x_forwarded_port);
        put(headers, X_FORWARDED_PREFIX, &self.x_forwarded_prefix);
        put(headers, X_REAL_IP, &self.x_real_ip);
    }
}

/// Formats one RFC 7239 node (the value of `for=` / `by=`): IPv4 bare (`192.0.2.1`), IPv4 with
/// a port quoted (`"192.0.2.1:4711"`), IPv6 always quoted and bracketed (`"[2001:db8::1]"`,
/// `"[2001:db8::1]:4711"`). IPv4-mapped IPv6 addresses are written as IPv4.
pub fn node(addr: SocketAddr, with_port: bool) -> String {
    match (addr.ip().to_canonical(), with_port) {
        (IpAddr::V4(ip), false) => ip.to_string(),
        (IpAddr::V4(ip), true) => format!("\"{ip}:{}\"", addr.port()),
        (IpAddr::V6(ip), false) => format!("\"[{ip}]\""),
        (IpAddr::V6(ip), true) => format!("\"[{ip}]:{}\"", addr.port()),
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

/// Sets `MANAGED[index]` to `value`, or leaves it absent if `value` isn't a valid field value.
fn insert(headers: &mut HeaderMap, index: usize, value: &[u8]) {
    if let Ok(value) = HeaderValue::from_bytes(value) {
        headers.insert(MANAGED[index].clone(), value);
    }
}

/// The newest elements of `existing` that fit beside an element of `new_len` bytes in
/// [`MAX_CHAIN_LEN`], joined by `", "`.
fn kept_tail(existing: &[Vec<u8>], new_len: usize) -> &[Vec<u8>] {
    let mut total = new_len;
    let mut start = existing.len();
    for element in existing.iter().rev() {
        total = total.saturating_add(element.len() + 2);
        if total > MAX_CHAIN_LEN {
            break;
        }
        start -= 1;
    }
    &existing[start..]
}

/// `existing` (truncated from the left to fit) then `new`, joined by `", "`.
fn chain(existing: &[Vec<u8>], new: &[u8]) -> Vec<u8> {
    let kept = kept_tail(existing, new.len());
    let mut out = Vec::with_capacity(
        MAX_CHAIN_LEN.min(kept.iter().map(|e| e.len() + 2).sum::<usize>() + new.len()),
    );
    for element in kept {
        out.extend_from_slice(element);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(new);
    out
}

/// Splits one `Forwarded` line into its elements (commas outside quoted-strings), trimmed,
/// empty ones dropped. A quoted-string still open at the end of the line is closed (after
/// completing a dangling `\` escape), so nothing appended later can end up inside it.
fn split_forwarded(line: &[u8], out: &mut Vec<Vec<u8>>) {
    let mut current = Vec::new();
    let mut in_quote = false;
    let mut escaped = false;
    for &b in line {
        if in_quote {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_quote = false;
            }
            current.push(b);
        } else if b == b',' {
            push_trimmed(out, &current);
            current.clear();
        } else {
            in_quote = b == b'"';
            current.push(b);
        }
    }
    if escaped {
        current.push(b'"');
    }
    if in_quote {
        current.push(b'"');
    }
    push_trimmed(out, &current);
}

/// Splits one comma-separated line (`X-Forwarded-For`) into trimmed, non-empty entries.
fn split_list(line: &[u8], out: &mut Vec<Vec<u8>>) {
    for entry in line.split(|&b| b == b',') {
        push_trimmed(out, entry);
    }
}

fn push_trimmed(out: &mut Vec<Vec<u8>>, element: &[u8]) {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = element.iter().position(|b| !is_ows(b));
    let end = element.iter().rposition(|b| !is_ows(b));
    if let (Some(start), Some(end)) = (start, end) {
        out.push(element[start..=end].to_vec());
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

/// An address as found in `X-Forwarded-For` / `X-Real-IP`: bare, with a port, or bracketed.
fn parse_ip(value: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let ip = text
        .parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            text.strip_prefix('[')?
                .strip_suffix(']')?
                .parse::<IpAddr>()
                .ok()
        })?;
    Some(ip.to_canonical())
}

/// RFC 7230 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().copied().all(is_tchar)
}

/// `s` as an RFC 7239 value: a token if it is one, else a quoted-string.
fn quote(s: &str) -> String {
    if is_token(s.as_bytes()) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A host (with an optional port) made only of characters a DNS name, an IP literal and a port
/// need.
fn is_plain_authority(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:[]%".contains(&b))
}

/// One path starting with `/`, no list separator, visible ASCII only.
fn is_plain_prefix(value: &[u8]) -> bool {
    value.first() == Some(&b'/') && value.iter().all(|&b| b.is_ascii_graphic() && b != b',')
}

/// `/a` + `/b` = `/a/b` (`/a/` + `b` likewise); an empty result is `/`.
fn join_prefix(theirs: &[u8], ours: &[u8]) -> Vec<u8> {
    let theirs = trim_trailing_slashes(theirs);
    let ours = trim_trailing_slashes(ours);
    let ours = ours.strip_prefix(b"/").unwrap_or(ours);
    let mut out = theirs.to_vec();
    if !ours.is_empty() {
        out.push(b'/');
        out.extend_from_slice(ours);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fn trim_trailing_slashes(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: &[Style] = &[Style::Forwarded, Style::XForwarded];
    const FWD_ONLY: &[Style] = &[Style::Forwarded];
    const X_ONLY: &[Style] = &[Style::XForwarded];
    const TRUSTED: &[&str] = &["10.0.0.0/8", "2001:db8:ffff::/48"];

    /// Every managed header a client might forge, in odd cases and repeated.
    const FORGED: &[(&str, &str)] = &[
        ("X-Forwarded-For", "1.1.1.1"),
        ("x-forwarded-for", "2.2.2.2, 3.3.3.3"),
        ("FORWARDED", "for=1.1.1.1;host=evil"),
        ("Forwarded", "for=2.2.2.2"),
        ("X-Forwarded-Proto", "http"),
        ("x-forwarded-PROTO", "ftp"),
        ("X-FORWARDED-HOST", "evil.example"),
        ("x-Forwarded-Port", "1"),
        ("X-Forwarded-Prefix", "/evil"),
        ("X-Real-IP", "1.1.1.1"),
        ("x-real-ip", "2.2.2.2"),
        ("Host", "example.com"),
        ("User-Agent", "test"),
    ];

    /// Expected managed headers for `BASE` (an untrusted IPv4 client over https).
    const UNTRUSTED_V4: &[(&str, &str)] = &[
        (
            "forwarded",
            r#"for="203.0.113.7:51000";proto=https;host=example.com"#,
        ),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "example.com"),
        ("x-forwarded-port", "443"),
        ("x-real-ip", "203.0.113.7"),
    ];

    struct Case {
        name: &'static str,
        styles: &'static [Style],
        peer: &'static str,
        /// The PROXY header's source; `None` = the peer.
        client: Option<&'static str>,
        by: Option<&'static str>,
        proto: &'static str,
        port: u16,
        host: Option<&'static str>,
        prefix: Option<&'static str>,
        incoming: &'static [(&'static str, &'static str)],
        /// Every managed header's values, in order; a managed header not listed must be absent.
        expect: &'static [(&'static str, &'static str)],
    }

    const BASE: Case = Case {
        name: "",
        styles: BOTH,
        peer: "203.0.113.7:51000",
        client: None,
        by: None,
        proto: "https",
        port: 443,
        host: Some("example.com"),
        prefix: None,
        incoming: &[],
        expect: UNTRUSTED_V4,
    };

    const CASES: &[Case] = &[
        Case {
            name: "untrusted peer, no incoming headers",
            ..BASE
        },
        Case {
            name: "untrusted peer: forged headers in mixed case and repeated lines all replaced",
            incoming: FORGED,
            ..BASE
        },
        Case {
            name: "untrusted peer, only Forwarded enabled: forged X-Forwarded-* and X-Real-IP gone",
            styles: FWD_ONLY,
            incoming: FORGED,
            expect: &[(
                "forwarded",
                r#"for="203.0.113.7:51000";proto=https;host=example.com"#,
            )],
            ..BASE
        },
        Case {
            name: "untrusted peer, only X-Forwarded enabled: forged Forwarded gone",
            styles: X_ONLY,
            incoming: FORGED,
            expect: &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "203.0.113.7"),
            ],
            ..BASE
        },
        Case {
            name: "no style enabled: every managed header removed",
            styles: &[],
            incoming: FORGED,
            expect: &[],
            ..BASE
        },
        Case {
            name: "untrusted peer claiming a PROXY client: the TCP peer is what counts",
            client: Some("198.51.100.9:4000"),
            incoming: FORGED,
            ..BASE
        },
        Case {
            name: "trusted peer: chains extended, first hop's proto/host/port kept",
            peer: "10.0.0.2:40000",
            proto: "http",
            port: 8080,
            host: Some("app.example"),
            incoming: &[
                ("X-Forwarded-For", "198.51.100.1"),
                ("Forwarded", "for=198.51.100.1;proto=https;host=app.example"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "app.example"),
                ("X-Forwarded-Port", "443"),
            ],
            expect: &[
                (
                    "forwarded",
                    r#"for=198.51.100.1;proto=https;host=app.example, for="10.0.0.2:40000";proto=http;host=app.example"#,
                ),
                ("x-forwarded-for", "198.51.100.1, 10.0.0.2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "app.example"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "198.51.100.1"),
            ],
            ..BASE
        },
        Case {
            name: "trusted peer that sent nothing: this hop described",
            peer: "10.0.0.2:40000",
            expect: &[
                (
                    "forwarded",
                    r#"for="10.0.0.2:40000";proto=https;host=example.com"#,
                ),
                ("x-forwarded-for", "10.0.0.2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "10.0.0.2"),
            ],
            ..BASE
        },
        Case {
            name: "trusted peer with a PROXY-carried client, no incoming headers",
            peer: "10.0.0.2:40000",
            client: Some("198.51.100.9:4000"),
            expect: &[
                (
                    "forwarded",
                    r#"for="198.51.100.9:4000";proto=https;host=example.com"#,
                ),
                ("x-forwarded-for", "198.51.100.9"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "198.51.100.9"),
            ],
            ..BASE
        },
        Case {
            // A TCP-mode balancer passes the client's bytes through: the headers are the
            // client's own, and the client is not a trusted proxy.
            name: "trusted peer with a PROXY-carried client: the client's headers are replaced",
            peer: "10.0.0.2:40000",
            client: Some("198.51.100.9:4000"),
            incoming: &[
                ("x-forwarded-for", "192.0.2.1"),
                ("forwarded", "for=192.0.2.1"),
                ("x-forwarded-proto", "http"),
                ("x-real-ip", "192.0.2.1"),
            ],
            expect: &[
                (
                    "forwarded",
                    r#"for="198.51.100.9:4000";proto=https;host=example.com"#,
                ),
                ("x-forwarded-for", "198.51.100.9"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "198.51.100.9"),
            ],
            ..BASE
        },
        Case {
            // A proxy (trusted) behind a TCP balancer (trusted): its chains are kept.
            name: "trusted peer with a PROXY-carried client that is a trusted proxy itself",
            peer: "10.0.0.2:40000",
            client: Some("10.0.0.7:4000"),
            incoming: &[
                ("x-forwarded-for", "192.0.2.1"),
                ("forwarded", "for=192.0.2.1"),
            ],
            expect: &[
                (
                    "forwarded",
                    r#"for=192.0.2.1, for="10.0.0.7:4000";proto=https;host=example.com"#,
                ),
                ("x-forwarded-for", "192.0.2.1, 10.0.0.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "192.0.2.1"),
            ],
            ..BASE
        },
        Case {
            name: "trusted IPv4 peer with a PROXY-carried IPv6 client",
            peer: "10.0.0.2:40000",
            client: Some("[2001:db8::5]:443"),
            styles: &[Style::Forwarded, Style::XForwarded, Style::Forwarded],
            expect: &[
                (
                    "forwarded",
                    r#"for="[2001:db8::5]:443";proto=https;host=example.com"#,
                ),
                ("x-forwarded-for", "2001:db8::5"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "2001:db8::5"),
            ],
            ..BASE
        },
        Case {
            name:
                "untrusted IPv6 client: quoted and bracketed in Forwarded, bare in X-Forwarded-For",
            peer: "[2001:db8::1]:4711",
            incoming: FORGED,
            expect: &[
                (
                    "forwarded",
                    r#"for="[2001:db8::1]:4711";proto=https;host=example.com"#,
                ),
                ("x-forwarded-for", "2001:db8::1"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "2001:db8::1"),
            ],
            ..BASE
        },
        Case {
            name: "trusted IPv6 peer extends an IPv6 chain",
            peer: "[2001:db8:ffff::2]:5000",
            incoming: &[
                ("Forwarded", r#"For="[2001:db8:cafe::17]:4711""#),
                ("X-Forwarded-For", "2001:db8:cafe::17"),
            ],
            expect: &[
                (
                    "forwarded",
                    r#"For="[2001:db8:cafe::17]:4711", for="[2001:db8:ffff::2]:5000";proto=https;host=example.com"#,
                ),
                ("x-forwarded-for", "2001:db8:cafe::17, 2001:db8:ffff::2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "2001:db8:cafe::17"),
            ],
            ..BASE
        },
        Case {
            name: "IPv4-mapped IPv6 peer is trusted by an IPv4 range and written as IPv4",
            peer: "[::ffff:10.0.0.2]:40000",
            styles: FWD_ONLY,
            incoming: &[("forwarded", "for=192.0.2.1")],
            expect: &[(
                "forwarded",
                r#"for=192.0.2.1, for="10.0.0.2:40000";proto=https;host=example.com"#,
            )],
            ..BASE
        },
        Case {
            name: "several Forwarded lines from a trusted peer merged in order",
            peer: "10.0.0.2:40000",
            styles: FWD_ONLY,
            incoming: &[
                ("Forwarded", "for=192.0.2.43, for=198.51.100.17"),
                ("forwarded", "for=unknown;proto=http"),
                ("FORWARDED", r#"  for="_gazonk" ,, "#),
            ],
            expect: &[(
                "forwarded",
                r#"for=192.0.2.43, for=198.51.100.17, for=unknown;proto=http, for="_gazonk", for="10.0.0.2:40000";proto=https;host=example.com"#,
            )],
            ..BASE
        },
        Case {
            name: "malformed Forwarded from a trusted peer kept verbatim, open quotes closed",
            peer: "10.0.0.2:40000",
            styles: FWD_ONLY,
            incoming: &[
                ("forwarded", r#"for="unterminated, by=x"#),
                ("forwarded", r#"for="a,b";by=x"#),
                ("forwarded", "garbage;;="),
                ("forwarded", r#"for="dangling\"#),
            ],
            expect: &[(
                "forwarded",
                r#"for="unterminated, by=x", for="a,b";by=x, garbage;;=, for="dangling\"", for="10.0.0.2:40000";proto=https;host=example.com"#,
            )],
            ..BASE
        },
        Case {
            name: "X-Real-IP skips trusted proxies from the right",
            peer: "10.0.0.2:40000",
            styles: X_ONLY,
            host: None,
            incoming: &[("x-forwarded-for", "192.0.2.9, 198.51.100.1,10.1.1.1")],
            expect: &[
                (
                    "x-forwarded-for",
                    "192.0.2.9, 198.51.100.1, 10.1.1.1, 10.0.0.2",
                ),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "198.51.100.1"),
            ],
            ..BASE
        },
        Case {
            name: "X-Real-IP walk stops at an entry that is not an address",
            peer: "10.0.0.2:40000",
            styles: X_ONLY,
            host: None,
            incoming: &[("x-forwarded-for", "198.51.100.1, unknown")],
            expect: &[
                ("x-forwarded-for", "198.51.100.1, unknown, 10.0.0.2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "10.0.0.2"),
            ],
            ..BASE
        },
        Case {
            name: "a trusted peer's single X-Real-IP is kept",
            peer: "10.0.0.2:40000",
            styles: X_ONLY,
            host: None,
            incoming: &[
                ("x-forwarded-for", "198.51.100.1"),
                ("X-Real-Ip", "192.0.2.77"),
            ],
            expect: &[
                ("x-forwarded-for", "198.51.100.1, 10.0.0.2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "192.0.2.77"),
            ],
            ..BASE
        },
        Case {
            name: "trusted peer sent only X-Forwarded-Proto: host and port not filled in",
            peer: "10.0.0.2:40000",
            styles: X_ONLY,
            proto: "http",
            port: 8080,
            incoming: &[("X-Forwarded-Proto", "https"), ("x-forwarded-proto", "wss")],
            expect: &[
                ("x-forwarded-for", "10.0.0.2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-proto", "wss"),
                ("x-real-ip", "10.0.0.2"),
            ],
            ..BASE
        },
        Case {
            name: "plain http listener on 8080",
            proto: "http",
            port: 8080,
            host: Some("example.com:8080"),
            incoming: &[("Host", "example.com:8080")],
            expect: &[
                (
                    "forwarded",
                    r#"for="203.0.113.7:51000";proto=http;host="example.com:8080""#,
                ),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "example.com:8080"),
                ("x-forwarded-port", "8080"),
                ("x-real-ip", "203.0.113.7"),
            ],
            ..BASE
        },
        Case {
            name: "IPv6 literal host quoted in Forwarded",
            styles: FWD_ONLY,
            host: Some("[2001:db8::10]:8443"),
            incoming: &[("host", "[2001:db8::10]:8443")],
            expect: &[(
                "forwarded",
                r#"for="203.0.113.7:51000";proto=https;host="[2001:db8::10]:8443""#,
            )],
            ..BASE
        },
        Case {
            name: "a host that is not a plain authority is left out",
            host: Some("example.com, evil\"x"),
            incoming: &[("Host", "example.com, evil\"x")],
            expect: &[
                ("forwarded", r#"for="203.0.113.7:51000";proto=https"#),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-port", "443"),
                ("x-real-ip", "203.0.113.7"),
            ],
            ..BASE
        },
        Case {
            name: "by= names the listener",
            styles: FWD_ONLY,
            by: Some("[2001:db8::443]:443"),
            expect: &[(
                "forwarded",
                r#"for="203.0.113.7:51000";by="[2001:db8::443]:443";proto=https;host=example.com"#,
            )],
            ..BASE
        },
        Case {
            name: "prefix configured, untrusted peer: ours replaces the forged one",
            styles: X_ONLY,
            prefix: Some("/app"),
            incoming: &[("X-Forwarded-Prefix", "/evil")],
            expect: &[
                ("x-forwarded-for", "203.0.113.7"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-port", "443"),
                ("x-forwarded-prefix", "/app"),
                ("x-real-ip", "203.0.113.7"),
            ],
            ..BASE
        },
        Case {
            name: "prefix configured, trusted peer's prefix joined with ours",
            styles: X_ONLY,
            peer: "10.0.0.2:40000",
            prefix: Some("/app/"),
            incoming: &[
                ("X-Forwarded-Prefix", "/edge/"),
                ("X-Forwarded-Host", "app.example"),
            ],
            expect: &[
                ("x-forwarded-for", "10.0.0.2"),
                ("x-forwarded-host", "app.example"),
                ("x-forwarded-prefix", "/edge/app"),
                ("x-real-ip", "10.0.0.2"),
            ],
            ..BASE
        },
        Case {
            name: "prefix configured, trusted peer's prefix not one plain path: ours alone",
            styles: X_ONLY,
            peer: "10.0.0.2:40000",
            prefix: Some("/app"),
            incoming: &[
                ("X-Forwarded-Prefix", "/a, /b"),
                ("X-Forwarded-Port", "443"),
            ],
            expect: &[
                ("x-forwarded-for", "10.0.0.2"),
                ("x-forwarded-port", "443"),
                ("x-forwarded-prefix", "/app"),
                ("x-real-ip", "10.0.0.2"),
            ],
            ..BASE
        },
        Case {
            name: "no prefix configured: a trusted peer's prefix is kept",
            styles: X_ONLY,
            peer: "10.0.0.2:40000",
            incoming: &[("x-forwarded-prefix", "/edge")],
            expect: &[
                ("x-forwarded-for", "10.0.0.2"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "example.com"),
                ("x-forwarded-port", "443"),
                ("x-forwarded-prefix", "/edge"),
                ("x-real-ip", "10.0.0.2"),
            ],
            ..BASE
        },
    ];

    fn policy(styles: &[Style], prefix: Option<&str>) -> Policy {
        Policy {
            styles: styles.to_vec(),
            trusted_proxies: TRUSTED.iter().map(|n| n.parse().unwrap()).collect(),
            prefix: prefix.map(str::to_owned),
        }
    }

    fn header_map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn values<'a>(headers: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn table() {
        for case in CASES {
            let peer: SocketAddr = case.peer.parse().unwrap();
            let hop = Hop {
                peer,
                client: case.client.map_or(peer, |c| c.parse().unwrap()),
                proto: case.proto,
                listener_port: case.port,
                by: case.by.map(|b| b.parse().unwrap()),
            };
            let mut headers = header_map(case.incoming);
            apply(
                &mut headers,
                &policy(case.styles, case.prefix),
                &hop,
                case.host,
            );
            for name in managed() {
                let want: Vec<&str> = case
                    .expect
                    .iter()
                    .filter(|(n, _)| n == name)
                    .map(|(_, v)| *v)
                    .collect();
                assert_eq!(
                    values(&headers, name.as_str()),
                    want,
                    "{}: {name}",
                    case.name
                );
            }
            for (name, _) in case.expect {
                assert!(
                    managed().iter().any(|m| m == name),
                    "{}: {name} is not managed",
                    case.name
                );
            }
            // Everything else, Host included, passes untouched.
            for (name, _) in case.incoming {
                let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
                if managed().contains(&name) {
                    continue;
                }
                let want: Vec<&str> = case
                    .incoming
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_str()))
                    .map(|(_, v)| *v)
                    .collect();
                assert_eq!(
                    values(&headers, name.as_str()),
                    want,
                    "{}: {name}",
                    case.name
                );
            }
        }
    }

    #[test]
    fn node_formats() {
        let cases: &[(&str, bool, &str)] = &[
            ("192.0.2.1:4711", false, "192.0.2.1"),
            ("192.0.2.1:4711", true, r#""192.0.2.1:4711""#),
            ("[2001:db8::1]:4711", false, r#""[2001:db8::1]""#),
            ("[2001:db8::1]:4711", true, r#""[2001:db8::1]:4711""#),
            (
                "[2001:db8:cafe::17]:4711",
                true,
                r#""[2001:db8:cafe::17]:4711""#,
            ),
            ("[::ffff:198.51.100.1]:80", false, "198.51.100.1"),
            ("[::ffff:198.51.100.1]:80", true, r#""198.51.100.1:80""#),
            ("[fe80::1%7]:80", true, r#""[fe80::1]:80""#),
            ("[::1]:0", false, r#""[::1]""#),
        ];
        for (addr, with_port, want) in cases {
            assert_eq!(node(addr.parse().unwrap(), *with_port), *want, "{addr}");
        }
    }

    #[test]
    fn style_names() {
        let cases: &[(&str, Option<Style>)] = &[
            ("forwarded", Some(Style::Forwarded)),
            ("x-forwarded", Some(Style::XForwarded)),
            ("X-Forwarded", Some(Style::XForwarded)),
            ("x_forwarded", None),
            ("", None),
            ("forwarded ", None),
        ];
        for (name, want) in cases {
            assert_eq!(name.parse::<Style>().ok(), *want, "{name:?}");
        }
        for style in [Style::Forwarded, Style::XForwarded] {
            assert_eq!(style.to_string().parse::<Style>(), Ok(style));
            let json = serde_json::to_string(&style).unwrap();
            assert_eq!(json, format!("\"{style}\""));
            assert_eq!(serde_json::from_str::<Style>(&json).unwrap(), style);
        }
        assert!("nope"
            .parse::<Style>()
            .unwrap_err()
            .to_string()
            .contains("\"nope\""));
    }

    #[test]
    fn managed_names() {
        let names: Vec<&str> = managed().iter().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            [
                "forwarded",
                "x-forwarded-for",
                "x-forwarded-proto",
                "x-forwarded-host",
                "x-forwarded-port",
                "x-forwarded-prefix",
                "x-real-ip",
            ]
        );
    }

    fn trusted_hop() -> Hop {
        let peer: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        Hop {
            peer,
            client: peer,
            proto: "https",
            listener_port: 443,
            by: None,
        }
    }

    /// A long chain from a trusted peer loses its oldest elements, whole, and ends with ours.
    #[test]
    fn long_chains_drop_the_oldest_elements() {
        let xff: Vec<String> = (0..2000u32)
            .map(|i| format!("198.51.{}.{}", i / 256, i % 256))
            .collect();
        let fwd: Vec<String> = xff
            .iter()
            .map(|ip| format!("for={ip};proto=https"))
            .collect();
        let mut headers = HeaderMap::new();
        for (i, ip) in xff.iter().enumerate() {
            // Spread over many lines, as a chain of proxies appending lines would.
            let name = if i % 2 == 0 {
                "x-forwarded-for"
            } else {
                "X-Forwarded-For"
            };
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(ip).unwrap(),
            );
        }
        headers.insert("forwarded", HeaderValue::from_str(&fwd.join(",")).unwrap());
        apply(
            &mut headers,
            &policy(BOTH, None),
            &trusted_hop(),
            Some("example.com"),
        );

        let ours = r#"for="10.0.0.2:40000";proto=https;host=example.com"#;
        for (name, all, ours) in [
            ("x-forwarded-for", &xff, "10.0.0.2"),
            ("forwarded", &fwd, ours),
        ] {
            let got = values(&headers, name);
            assert_eq!(got.len(), 1, "{name}");
            let got = got[0];
            assert!(got.len() <= MAX_CHAIN_LEN, "{name}: {}", got.len());
            assert!(got.len() > MAX_CHAIN_LEN - 64, "{name}: {}", got.len());
            let elements: Vec<&str> = got.split(", ").collect();
            assert_eq!(elements.last(), Some(&ours), "{name}");
            let kept = &elements[..elements.len() - 1];
            assert_eq!(kept, &all[all.len() - kept.len()..], "{name}");
        }
        assert_eq!(values(&headers, "x-real-ip"), ["198.51.7.207"]);
    }

    #[test]
    fn an_element_longer_than_the_limit_is_dropped() {
        let huge = format!("for=\"_{}\"", "a".repeat(MAX_CHAIN_LEN));
        let mut headers = header_map(&[("forwarded", "for=192.0.2.1")]);
        headers.append("forwarded", HeaderValue::from_str(&huge).unwrap());
        headers.append("forwarded", HeaderValue::from_static("for=192.0.2.2"));
        apply(&mut headers, &policy(FWD_ONLY, None), &trusted_hop(), None);
        assert_eq!(
            values(&headers, "forwarded"),
            [r#"for=192.0.2.2, for="10.0.0.2:40000";proto=https"#]
        );
    }

    /// Splits a `Forwarded` value the way a strict RFC 7239 reader does.
    fn strict_elements(value: &[u8]) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new()];
        let (mut in_quote, mut escaped) = (false, false);
        for &b in value {
            let last = out.last_mut().unwrap();
            if in_quote {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_quote = false;
                }
                last.push(b);
            } else if b == b',' {
                out.push(Vec::new());
            } else {
                in_quote = b == b'"';
                last.push(b);
            }
        }
        assert!(
            !in_quote,
            "open quote in {:?}",
            String::from_utf8_lossy(value)
        );
        out.into_iter()
            .map(|e| e.trim_ascii().to_vec())
            .filter(|e| !e.is_empty())
            .collect()
    }

    /// Any bytes a peer can send: no panic, no control characters out, and this hop's
    /// `Forwarded` element always parses as the last element.
    #[test]
    fn arbitrary_values_never_break_our_element() {
        const ALPHABET: &[u8] = b"\"\\,;= \t\x7f\x80\xff:[]for_a1.";
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let policy = policy(BOTH, Some("/p"));
        for round in 0..2000 {
            let mut headers = HeaderMap::new();
            for name in managed() {
                for _ in 0..next() % 3 {
                    let len = usize::try_from(next() % 24).unwrap();
                    let value: Vec<u8> = (0..len)
                        .map(|_| {
                            let i = usize::try_from(next()).unwrap() % ALPHABET.len();
                            ALPHABET[i]
                        })
                        .collect();
                    if let Ok(value) = HeaderValue::from_bytes(&value) {
                        headers.append(name.clone(), value);
                    }
                }
            }
            let mut hop = trusted_hop();
            if round % 2 == 1 {
                hop.peer = "[2001:db8::1]:4711".parse().unwrap();
            }
            apply(&mut headers, &policy, &hop, Some("h\"o\\st"));
            for value in headers.values() {
                assert!(
                    !value
                        .as_bytes()
                        .iter()
                        .any(|&b| b < 0x20 && b != b'\t' || b == 0x7f),
                    "{value:?}"
                );
            }
            let fwd = values_bytes(&headers, "forwarded");
            assert_eq!(fwd.len(), 1);
            let elements = strict_elements(&fwd[0]);
            let ours = format!("for={};proto=https", node(hop.peer, true));
            assert_eq!(elements.last().map(Vec::as_slice), Some(ours.as_bytes()));
            assert_eq!(values(&headers, "x-forwarded-prefix").len(), 1);
        }
    }

    fn values_bytes(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
        headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    }
}
