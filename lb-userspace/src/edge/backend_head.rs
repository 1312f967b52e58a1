//! The request head a backend receives: the client's, judged and cleaned, carrying exactly the
//! headers sluice vouches for (see the module docs of `server`, `request_head`, `managed` and
//! `forwarded` for the rules). No I/O here: the listener calls it for every request, and the
//! `http_request` fuzz target calls it on arbitrary heads.

use hyper::{
    header::{self, HeaderName, HeaderValue},
    http::{request, uri},
    Uri, Version,
};

use super::{
    forwarded::{self, Hop, Policy, Untrusted},
    managed::Managed,
    request_head::{self, Refused},
};
use crate::config::path_prefix::PathPrefix;

/// What one connection contributes to each request it carries.
pub struct Vouched<'a> {
    /// The header names sluice vouches for, whose client copies are removed.
    pub managed: &'a Managed,
    /// The client-certificate headers of the connection (`Err`: they could not be built).
    pub cert_headers: &'a Result<Vec<(HeaderName, HeaderValue)>, String>,
    pub forwarded: &'a Policy,
    pub hop: Hop,
    /// What `forwarded` writes for this connection's client, built once, when it is not
    /// trusted: [`Untrusted::for_connection`] of `forwarded` and `hop`.
    pub untrusted: Option<&'a Untrusted>,
    /// The authority requests without one (HTTP/1.0) are served under.
    pub own_authority: &'a str,
    /// Only requests under it are proxied, without it.
    pub path_prefix: Option<&'a PathPrefix>,
}

/// Why a request is answered by sluice instead of being forwarded.
#[derive(Debug, PartialEq, Eq)]
pub enum NotForwarded {
    /// The head itself is refused (400, or 405 for CONNECT).
    Refused(Refused),
    /// Outside the listener's path prefix: 404.
    OutsidePrefix,
    /// The connection's certificate headers could not be built: 502.
    CertHeaders(String),
}

/// Rewrites `parts` (a client's request head) into the backend's. Returns whether it is a
/// WebSocket upgrade (the only upgrade forwarded).
pub fn rewrite(parts: &mut request::Parts, v: &Vouched<'_>) -> Result<bool, NotForwarded> {
    let host = request_head::authority(
        &parts.method,
        parts.version,
        &parts.uri,
        &parts.headers,
        v.own_authority,
    )
    .map_err(NotForwarded::Refused)?;
    let target = match v.path_prefix {
        Some(prefix) => {
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", uri::PathAndQuery::as_str);
            Target::Stripped(prefix.strip(path).ok_or(NotForwarded::OutsidePrefix)?)
        }
        None => Target::Same,
    };
    let websocket = request_head::websocket(&parts.headers);
    // The client's connection-scoped headers go first, so that nothing it names in
    // `Connection` can remove what sluice adds below.
    request_head::remove_client_hop_by_hop(&mut parts.headers, v.managed);
    v.managed.strip(&mut parts.headers);
    let cert_headers = v
        .cert_headers
        .as_ref()
        .map_err(|e| NotForwarded::CertHeaders(e.clone()))?;
    for (name, value) in cert_headers {
        parts.headers.append(name.clone(), value.clone());
    }
    match v.untrusted {
        Some(untrusted) => untrusted.apply(&mut parts.headers, Some(&host)),
        None => forwarded::apply(&mut parts.headers, v.forwarded, &v.hop, Some(&host)),
    }
    let host =
        HeaderValue::from_str(&host).map_err(|_| NotForwarded::Refused(Refused::BadAuthority))?;
    parts.headers.insert(header::HOST, host);
    let upgrade = websocket.is_some();
    if let Some(to) = websocket {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, to);
    }
    parts.uri = target.uri(&parts.uri);
    parts.version = Version::HTTP_11;
    Ok(upgrade)
}

/// The request target sent to the backend.
enum Target {
    /// The client's path and query (or `/` without one).
    Same,
    /// What is left under the listener's path prefix.
    Stripped(String),
}

impl Target {
    /// The origin-form target for the backend, from the client's `uri`.
    fn uri(self, uri: &Uri) -> Uri {
        match self {
            // The client's own path and query, shared rather than parsed again.
            Target::Same => {
                let mut target = uri::Parts::default();
                target.path_and_query = uri.path_and_query().cloned();
                Uri::from_parts(target).unwrap_or_else(|_| Uri::from_static("/"))
            }
            Target::Stripped(path) => path
                .parse::<Uri>()
                .unwrap_or_else(|_| Uri::from_static("/")),
        }
    }
}
