//! Forward authentication at request time: before a route with `auth` proxies a request, the
//! auth service is asked (oauth2-proxy's `/oauth2/auth` contract, as nginx `auth_request`
//! speaks it) and its answer decides.
//!
//! | Auth service answers | The client gets | Counted as |
//! |---|---|---|
//! | 2xx | the backend's response; the request carries the auth service's `response_headers`, and no client copy of any of them | `allowed` |
//! | 401 | a 302 to `signin_url` with `rd=<the request's URL>` (or, `on_unauthorized = "pass"`, the 401 with its `WWW-Authenticate`) | `unauthorized` |
//! | 403 | 403 | `forbidden` |
//! | anything else, no connection, a broken answer | 503 | `error` |
//! | nothing within `timeout` | 503 | `timeout` |
//!
//! The subrequest is a `GET` without a body to the configured URL carrying
//! `X-Forwarded-Method`, `X-Forwarded-Uri` (the normalised path the route matched, with the
//! query as sent: what the auth service judges is what the backend is asked for),
//! `X-Forwarded-Host`, `-Proto` and `-For` (the values sluice vouches for on the backend
//! request, else this hop's), and the client's `Cookie` and `Authorization`. With
//! `pass_set_cookie` the auth service's `Set-Cookie` headers reach the client whatever the
//! outcome. Every request asks anew: nothing is cached.

mod client;
#[cfg(test)]
mod tests;

use std::{
    fmt::Write as _,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{
    header::{self, HeaderName, HeaderValue},
    http::request,
    HeaderMap, Method, Request, StatusCode, Uri, Version,
};

use crate::config::route::{auth::OnUnauthorized, ForwardAuth};

pub use client::Client;

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// How an auth check ended, the label on `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Unauthorized,
    Forbidden,
    Error,
    Timeout,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Allowed,
        Outcome::Unauthorized,
        Outcome::Forbidden,
        Outcome::Error,
        Outcome::Timeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Unauthorized => "unauthorized",
            Outcome::Forbidden => "forbidden",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
        }
    }
}

/// A route's auth outcome counters, by [`Outcome::ALL`] order.
pub type Counters = Arc<[AtomicU64; 5]>;

/// One route's forward authentication, compiled with the route table: the parsed target,
/// the `Host` it is sent with and a pool of connections to the auth service.
#[derive(Debug)]
pub struct Gate {
    /// The route's name, for logs.
    route: String,
    target: Uri,
    host: HeaderValue,
    timeout: Duration,
    on_unauthorized: OnUnauthorized,
    /// Names copied from a 2xx onto the request.
    copy: Box<[HeaderName]>,
    /// The same names with `_` spelled `-`: every client header that matches one is removed.
    strip: Box<[String]>,
    pass_set_cookie: bool,
    client: Client,
    counters: Counters,
}

impl PartialEq for Gate {
    /// The same route's gate: a table holds each once.
    fn eq(&self, other: &Gate) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Gate {}

/// What [`Check::run`] needs to know of the request besides its (rewritten) head.
#[derive(Debug)]
pub struct Check<'t> {
    pub gate: &'t Gate,
    /// The normalised path the route matched and the query as sent.
    pub uri: String,
    /// This hop's scheme and client, for when the listener writes no `X-Forwarded-*`.
    pub proto: &'static str,
    pub client: IpAddr,
}

/// The client's answer when the auth service does not let the request through.
#[derive(Debug)]
pub struct Denied {
    pub status: StatusCode,
    /// `Location`, `WWW-Authenticate`, `Set-Cookie` as the outcome calls for.
    pub headers: HeaderMap,
}

/// The auth service's answer, as far as it matters.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
}

/// Why no answer came.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
}

impl Gate {
    pub fn new(route: &str, auth: &ForwardAuth) -> Gate {
        let authority = auth.url.authority();
        Gate {
            route: route.to_owned(),
            // Config checked both: a valid origin-form target, an ASCII host[:port].
            target: auth.url.path_and_query.parse().unwrap_or_default(),
            host: HeaderValue::from_str(&authority)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            timeout: auth.timeout,
            on_unauthorized: auth.on_unauthorized.clone(),
            copy: auth.response_headers.clone().into_boxed_slice(),
            strip: auth
                .response_headers
                .iter()
                .map(|n| n.as_str().replace('_', "-"))
                .collect(),
            pass_set_cookie: auth.pass_set_cookie,
            client: Client::new(&auth.url.host, auth.url.port),
            counters: Arc::default(),
        }
    }

    /// Counts this gate's outcomes in `counters` (the listener's, kept across reloads).
    pub fn count_in(&mut self, counters: Counters) {
        self.counters = counters;
    }

    fn count(&self, outcome: Outcome) {
        if let Some(c) = self.counters.get(outcome as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Check<'_> {
    /// Asks the auth service about the request whose backend head is `parts` (already
    /// rewritten: sluice's own forwarded headers, the client's cookies and credentials). On a
    /// 2xx, removes every client copy of the copied names, copies the auth service's values
    /// onto `parts` and returns the `Set-Cookie` headers to pass to the client.
    pub async fn run(&self, parts: &mut request::Parts) -> Result<Vec<HeaderValue>, Denied> {
        let gate = self.gate;
        let ask = gate.client.ask(|| self.subrequest(parts));
        let answer = match tokio::time::timeout(gate.timeout, ask).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => {
                tracing::info!(route = %gate.route, %error, "auth service failed");
                gate.count(Outcome::Error);
                return Err(unavailable());
            }
            Err(_) => {
                tracing::info!(route = %gate.route, timeout = ?gate.timeout, "auth service did not answer in time");
                gate.count(Outcome::Timeout);
                return Err(unavailable());
            }
        };
        let mut headers = HeaderMap::new();
        if gate.pass_set_cookie {
            for cookie in answer.headers.get_all(header::SET_COOKIE) {
                headers.append(header::SET_COOKIE, cookie.clone());
            }
        }
        match answer.status {
            s if s.is_success() => {
                gate.count(Outcome::Allowed);
                strip(&mut parts.headers, &gate.strip);
                for name in &gate.copy {
                    for value in answer.headers.get_all(name) {
                        parts.headers.append(name.clone(), value.clone());
                    }
                }
                Ok(headers
                    .get_all(header::SET_COOKIE)
                    .iter()
                    .cloned()
                    .collect())
            }
            StatusCode::UNAUTHORIZED => {
                gate.count(Outcome::Unauthorized);
                if let OnUnauthorized::Redirect { signin_url } = &gate.on_unauthorized {
                    // The URL as the subrequest described it (401s only pay for it).
                    let rd = original_url(&self.subrequest(parts));
                    // Config admits visible ASCII only, and rd is percent-encoded.
                    let Ok(location) = HeaderValue::from_str(&signin_location(signin_url, &rd))
                    else {
                        return Err(unavailable());
                    };
                    headers.insert(header::LOCATION, location);
                    return Err(Denied {
                        status: StatusCode::FOUND,
                        headers,
                    });
                }
                for v in answer.headers.get_all(header::WWW_AUTHENTICATE) {
                    headers.append(header::WWW_AUTHENTICATE, v.clone());
                }
                Err(Denied {
                    status: StatusCode::UNAUTHORIZED,
                    headers,
                })
            }
            StatusCode::FORBIDDEN => {
                gate.count(Outcome::Forbidden);
                Err(Denied {
                    status: StatusCode::FORBIDDEN,
                    headers,
                })
            }
            other => {
                tracing::info!(route = %gate.route, status = %other, "auth service answered neither 2xx, 401 nor 403");
                gate.count(Outcome::Error);
                Err(unavailable())
            }
        }
    }

    /// The subrequest for `parts`.
    fn subrequest(&self, parts: &request::Parts) -> Request<Empty<Bytes>> {
        let gate = self.gate;
        let mut req = Request::new(Empty::new());
        *req.method_mut() = Method::GET;
        *req.uri_mut() = gate.target.clone();
        *req.version_mut() = Version::HTTP_11;
        let h = req.headers_mut();
        h.insert(header::HOST, gate.host.clone());
        h.insert(
            X_FORWARDED_METHOD,
            HeaderValue::from_str(parts.method.as_str())
                .unwrap_or_else(|_| HeaderValue::from_static("GET")),
        );
        if let Ok(uri) = HeaderValue::from_str(&self.uri) {
            h.insert(X_FORWARDED_URI, uri);
        }
        let from = &parts.headers;
        // What sluice tells the backend, when it does; else this hop as it is.
        let host = from
            .get(&X_FORWARDED_HOST)
            .or_else(|| from.get(header::HOST))
            .cloned();
        if let Some(host) = host {
            h.insert(X_FORWARDED_HOST, host);
        }
        h.insert(
            X_FORWARDED_PROTO,
            from.get(&X_FORWARDED_PROTO)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static(self.proto)),
        );
        let client = match from.get(&X_FORWARDED_FOR) {
            Some(v) => v.clone(),
            None => HeaderValue::from_str(&self.client.to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
        };
        h.insert(X_FORWARDED_FOR, client);
        // HTTP/2 clients may split cookies over several fields (RFC 9113 8.2.3); an HTTP/1.1
        // request carries one.
        let mut cookies = from.get_all(header::COOKIE).iter();
        if let Some(first) = cookies.next() {
            let mut joined = first.as_bytes().to_vec();
            for more in cookies {
                joined.extend_from_slice(b"; ");
                joined.extend_from_slice(more.as_bytes());
            }
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                h.insert(header::COOKIE, v);
            }
        }
        for v in from.get_all(header::AUTHORIZATION) {
            h.append(header::AUTHORIZATION, v.clone());
        }
        req
    }
}

/// The URL the client asked for, from the subrequest's forwarded headers: what `rd=` names.
fn original_url(sub: &Request<Empty<Bytes>>) -> String {
    let h = sub.headers();
    let get = |n: &HeaderName| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default();
    // Behind a trusted chain the headers may list hops: the first is the client's view.
    let first = |s: &str| s.split(',').next().unwrap_or_default().trim().to_owned();
    format!(
        "{}://{}{}",
        first(get(&X_FORWARDED_PROTO)),
        first(get(&X_FORWARDED_HOST)),
        get(&X_FORWARDED_URI)
    )
}

/// `signin_url` with `rd=` set to `rd`, percent-encoded.
fn signin_location(signin_url: &str, rd: &str) -> String {
    let mut out = String::with_capacity(signin_url.len() + rd.len() * 3 + 4);
    out.push_str(signin_url);
    out.push(if signin_url.contains('?') { '&' } else { '?' });
    out.push_str("rd=");
    for b in rd.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Removes every header whose name, with `_` spelled `-`, is one of `names` (lowercase):
/// backends that map `_` to `-` (CGI, WSGI) must not read a client's `X_Auth_Request_User`
/// as the auth service's.
fn strip(headers: &mut HeaderMap, names: &[String]) {
    let matches = |n: &HeaderName| {
        let n = n.as_str();
        names.iter().any(|want| {
            want.len() == n.len()
                && want
                    .bytes()
                    .zip(n.bytes())
                    .all(|(w, c)| w == c || (w == b'-' && c == b'_'))
        })
    };
    if !headers.keys().any(matches) {
        return;
    }
    let doomed: Vec<HeaderName> = headers.keys().filter(|n| matches(n)).cloned().collect();
    for name in doomed {
        headers.remove(name);
    }
}

fn unavailable() -> Denied {
    Denied {
        status: StatusCode::SERVICE_UNAVAILABLE,
        headers: HeaderMap::new(),
    }
}
