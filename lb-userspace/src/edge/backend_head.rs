//! The request head a backend receives: the client's, judged and cleaned, carrying exactly the
//! headers sluice vouches for (see the module docs of `server`, `request_head`, `managed` and
//! `forwarded` for the rules). No I/O here: the listener calls it for every request, and the
//! `http_request` fuzz target calls it on arbitrary heads.

use hyper::{
    header::{self, HeaderName, HeaderValue},
    http::request,
    StatusCode, Uri, Version,
};

use super::{
    affinity::Sticky,
    forward_auth::Check,
    forwarded::{self, Hop, Policy, Untrusted},
    managed::Managed,
    request_head::{self, Refused},
    route::{Names, Routed, Table, Unrouted},
    upstream::Target,
};

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
    /// The listener's routes: they decide whether and where the request goes.
    pub routes: &'a Table,
    /// The TLS server name the client sent, which must agree with the request's host when a
    /// route names hosts.
    pub sni: Option<&'a str>,
}

/// Why a request is answered by sluice instead of being forwarded.
#[derive(Debug, PartialEq, Eq)]
pub enum NotForwarded {
    /// The head itself is refused (400, or 405 for CONNECT).
    Refused(Refused),
    /// No route takes it (400 for a path without a safe normal form, 421, 404).
    Unrouted(Unrouted),
    /// A route answers it itself (`status` or `redirect`).
    Answer {
        status: StatusCode,
        location: Option<HeaderValue>,
    },
    /// The connection's certificate headers could not be built: 502.
    CertHeaders(String),
}

/// A request to forward.
#[derive(Debug)]
pub struct Forward<'t> {
    /// It is a WebSocket upgrade (the only upgrade forwarded).
    pub websocket: bool,
    /// Its route's affinity, which picks the backend with the pool.
    pub sticky: Option<&'t Sticky>,
    /// Its route's forward authentication, to ask before it is sent.
    pub auth: Option<Check<'t>>,
    /// Its route's own pool; `None`: the listener's.
    pub to: Option<&'t Target>,
}

/// Rewrites `parts` (a client's request head) into the backend's.
pub fn rewrite<'t>(
    parts: &mut request::Parts,
    v: &Vouched<'t>,
) -> Result<Forward<'t>, NotForwarded> {
    let host = request_head::authority(
        &parts.method,
        parts.version,
        &parts.uri,
        &parts.headers,
        v.own_authority,
    )
    .map_err(NotForwarded::Refused)?;
    let names = Names {
        authority: &host,
        host_header: parts.headers.get(header::HOST),
        sni: v.sni,
    };
    let (target, forwarded_prefix, sticky, auth, to) = match v
        .routes
        .route(&parts.uri, &names)
        .map_err(NotForwarded::Unrouted)?
    {
        Routed::Proxy {
            target,
            forwarded_prefix,
            sticky,
            auth,
            to,
        } => (target, forwarded_prefix, sticky, auth, to),
        Routed::Answer { status, location } => {
            return Err(NotForwarded::Answer {
                status,
                location: location.cloned(),
            })
        }
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
    if let Some(prefix) = forwarded_prefix {
        forwarded::route_prefix(&mut parts.headers, v.forwarded, prefix);
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
    // The normalised path the route matched (a valid origin-form target: normalising only
    // removes, decodes unreserved characters or upper-cases hex).
    parts.uri = target.parse::<Uri>().map_err(|_| {
        NotForwarded::Unrouted(Unrouted::BadPath(super::route::BadPath::NotAbsolute))
    })?;
    parts.version = Version::HTTP_11;
    Ok(Forward {
        websocket: upgrade,
        sticky,
        auth: auth.map(|(gate, uri)| Check {
            gate,
            uri,
            proto: v.hop.proto,
            client: v.hop.client.ip(),
        }),
        to,
    })
}
