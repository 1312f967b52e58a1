//! The client's request head, judged and cleaned before sluice adds anything of its own.
//!
//! - **Authority** (RFC 9112 §3.2, RFC 9113 §8.3.1): `:authority` or the absolute-form target
//!   wins over `Host`; an HTTP/1.1 request without `Host`, with two, with an empty one, or with
//!   one that is not `host[:port]` (userinfo included) is refused with 400; HTTP/1.0 without
//!   `Host` gets the listener's own authority, as nginx and haproxy serve it.
//! - **HTTP/2 field values** with leading or trailing whitespace make the request malformed
//!   (RFC 9113 §8.2.1): 400, never forwarded.
//! - **Hop-by-hop** headers (RFC 9110 §7.6.1) and those the client's `Connection` names are
//!   removed from the client's request *before* sluice adds its own headers, and a `Connection`
//!   token that names `Host`, framing or a header sluice manages is ignored: a client must not
//!   delete what sluice vouches for (the class of Traefik's CVE-2024-45410).
//! - **Upgrades**: only WebSocket passes. `h2c`/`h2` tokens and `HTTP2-Settings` are dropped
//!   (as `HAProxy` does): a backend that accepted them would tunnel HTTP/2 past every header
//!   rule. `CONNECT` is refused (405) for the same reason.
//!
//! Trailers never cross: hyper writes trailer fields only when the outgoing request declares
//! them in `Trailer`, which is hop-by-hop here, so a forged header in a trailer is dropped.

use std::{net::SocketAddr, str::FromStr as _};

use hyper::{
    header::{self, HeaderMap, HeaderName, HeaderValue},
    http::uri::Authority,
    Method, StatusCode, Uri, Version,
};

use super::managed::Managed;
use crate::config::http::HOP_BY_HOP;

/// Why a request is answered by sluice itself instead of a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("HTTP/1.1 request without Host")]
    NoHost,
    #[error("more than one Host header")]
    SeveralHosts,
    #[error("Host or :authority is not host[:port]")]
    BadAuthority,
    #[error("HTTP/2 field value with leading or trailing whitespace")]
    Whitespace,
    #[error("CONNECT is not proxied")]
    Connect,
}

impl Refused {
    pub fn status(self) -> StatusCode {
        match self {
            Refused::Connect => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Checks the request head and returns the authority to send as `Host`. `own` is the
/// listener's authority, for HTTP/1.0 requests that name none.
pub fn authority(
    method: &Method,
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
    own: &str,
) -> Result<String, Refused> {
    if method == Method::CONNECT {
        return Err(Refused::Connect);
    }
    if version == Version::HTTP_2 && headers.values().any(padded) {
        return Err(Refused::Whitespace);
    }
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refused::SeveralHosts);
    }
    if let Some(target) = uri.authority() {
        return plain(target.as_str());
    }
    match host {
        Some(h) => plain(h.to_str().map_err(|_| Refused::BadAuthority)?),
        None if version <= Version::HTTP_10 => Ok(own.to_owned()),
        None => Err(Refused::NoHost),
    }
}

/// `host[:port]`, nothing else: no userinfo, not empty.
fn plain(text: &str) -> Result<String, Refused> {
    match Authority::from_str(text) {
        Ok(a) if !a.as_str().contains('@') && !a.host().is_empty() => Ok(a.as_str().to_owned()),
        _ => Err(Refused::BadAuthority),
    }
}

fn padded(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    let ws = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    ws(bytes.first()) || ws(bytes.last())
}

/// The `Upgrade` value to forward: `Some` only when the client asks `Connection: upgrade` for
/// WebSocket, and then only the WebSocket token(s) of its list.
pub fn websocket(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let tokens: Vec<&str> = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| t.eq_ignore_ascii_case("websocket"))
        .collect();
    let first = tokens.first()?;
    HeaderValue::from_str(first).ok()
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes the client's hop-by-hop headers, and those its `Connection` header names unless
/// they are `Host`, body framing or managed by sluice (RFC 9110, 7.6.1).
pub fn remove_client_hop_by_hop(headers: &mut HeaderMap, managed: &Managed) {
    remove_hop_by_hop(headers, |name| protected(name, managed));
}

fn protected(name: &HeaderName, managed: &Managed) -> bool {
    *name == header::HOST || *name == header::CONTENT_LENGTH || managed.covers(name.as_str())
}

/// Removes a backend response's hop-by-hop headers and those its `Connection` names, but
/// keeps its `Trailer`: that is the backend's own list of its trailer fields (RFC 9110 §6.6.2
/// does not count it hop-by-hop), and hyper's HTTP/1.1 server writes only the trailer fields
/// it lists (to a client that sent `TE: trailers`), so without it a response's trailers reached
/// HTTP/2 clients but never HTTP/1.1 ones. (A request's `Trailer` is still removed: no trailer
/// field of a client's is ever forwarded.)
pub fn remove_response_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("trailer"));
    let declared: Vec<HeaderValue> = if named {
        Vec::new()
    } else {
        headers.get_all(header::TRAILER).iter().cloned().collect()
    };
    remove_hop_by_hop(headers, |_| false);
    for value in declared {
        headers.append(header::TRAILER, value);
    }
}

/// Removes [`HOP_BY_HOP`] and what `Connection` names, except the names `keep` accepts.
fn remove_hop_by_hop(headers: &mut HeaderMap, keep: impl Fn(&HeaderName) -> bool) {
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .filter(|n| !keep(n))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The authority a request without one is served under: the TLS server name when the client
/// sent one, else the listener's address; the port only when it is not the scheme's default.
pub fn own_authority(server_name: Option<&str>, local: SocketAddr, tls: bool) -> String {
    let default_port = if tls { 443 } else { 80 };
    let host = server_name.map_or_else(
        || match local.ip().to_canonical() {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        },
        str::to_owned,
    );
    if local.port() == default_port {
        host
    } else {
        format!("{host}:{}", local.port())
    }
}

#[cfg(test)]
mod tests;
