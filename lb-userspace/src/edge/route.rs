//! A listener's routes, compiled once when the listener is built: each request's path is
//! normalised ([`path::normalise`]) and the first route whose path covers it (segment by
//! segment) and whose host, if it names one, is the request's decides what happens. Nothing of
//! the table is built per request; the normalised path is the one string a request allocates.
//!
//! | Request | Answer | Counted as |
//! |---|---|---|
//! | path without a safe normal form | 400 | `bad_path` |
//! | routes name hosts, and SNI, `Host` and `:authority` do not all name the same host | 421 | `misdirected` |
//! | no route matches | 404 | `no_route` |
//! | a `status` / `redirect` route matches | its status (and `Location`) | the route |
//! | a `proxy` route matches | the backend's (of the route's pool), which receives the normalised path (prefix stripped / added as configured) and the query as sent | the route |
//!
//! The host checks run only when some route names a host: without one the host decides
//! nothing, and a client whose `Host` differs from its SNI is served as before.

pub mod path;

#[cfg(test)]
mod tests;

use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc,
};

use hyper::{header::HeaderValue, StatusCode, Uri};

use super::{
    affinity::{Counters, Sticky},
    forward_auth::{self, Gate},
    upstream::Target,
};
use crate::config::route::{Action, Route, RoutePath, RoutePool};

pub use path::BadPath;

/// Why a request matched no route (sluice answers it itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrouted {
    BadPath(BadPath),
    /// SNI, `Host` and `:authority` name different hosts.
    Misdirected,
    NoRoute,
}

impl Unrouted {
    pub const OUTCOMES: [&'static str; 3] = ["bad_path", "misdirected", "no_route"];

    pub fn status(self) -> StatusCode {
        match self {
            Unrouted::BadPath(_) => StatusCode::BAD_REQUEST,
            Unrouted::Misdirected => StatusCode::MISDIRECTED_REQUEST,
            Unrouted::NoRoute => StatusCode::NOT_FOUND,
        }
    }

    /// Its index in [`Unrouted::OUTCOMES`].
    pub fn index(self) -> usize {
        match self {
            Unrouted::BadPath(_) => 0,
            Unrouted::Misdirected => 1,
            Unrouted::NoRoute => 2,
        }
    }
}

/// What the matched route does with the request.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed<'t> {
    /// Send it to the pool with this path and query; name `forwarded_prefix` in
    /// `X-Forwarded-Prefix` when it is set.
    Proxy {
        target: String,
        forwarded_prefix: Option<&'t str>,
        /// The route's affinity, which may ask for a backend.
        sticky: Option<&'t Sticky>,
        /// The route's forward authentication, and what it is asked about: the normalised
        /// path the route matched, with the query as sent (built only for such a route).
        auth: Option<(&'t Gate, String)>,
        /// The route's own pool; `None`: the listener's.
        to: Option<&'t Target>,
    },
    /// sluice answers with `status` (and `location`).
    Answer {
        status: StatusCode,
        location: Option<&'t HeaderValue>,
    },
}

/// What a request names as its host.
pub struct Names<'a> {
    /// The authority sent on as `Host` (`:authority`, the absolute-form target, or `Host`).
    pub authority: &'a str,
    /// The `Host` header, when the request had one as well.
    pub host_header: Option<&'a HeaderValue>,
    /// The TLS server name, when the client sent one.
    pub sni: Option<&'a str>,
}

/// A listener's routes, in order.
#[derive(Debug)]
pub struct Table {
    routes: Box<[Compiled]>,
    /// Some route names a host: the request's names must agree.
    by_host: bool,
}

#[derive(Debug)]
struct Compiled {
    path: RoutePath,
    host: Option<String>,
    action: Do,
    /// Requests this route decided (shared with the listener's stats, across reloads).
    hits: Arc<AtomicU64>,
    name: String,
}

#[derive(Debug)]
enum Do {
    Proxy {
        /// The route's path, removed before the backend.
        strip: Option<String>,
        add: Option<String>,
        sticky: Option<Sticky>,
        /// Boxed: most routes have none, and the table stays small.
        gate: Option<Box<Gate>>,
        /// The route's own pool as configured, and the target it was given
        /// ([`Table::pooled`]); without a target the listener's pool serves it.
        pool: Option<RoutePool>,
        to: Option<Arc<Target>>,
    },
    Answer {
        status: StatusCode,
        location: Option<HeaderValue>,
    },
}

impl Table {
    /// Compiles `routes` (config checked them); `counter` gives each route name its counter.
    pub fn new(routes: &[Route], counter: impl Fn(&str) -> Arc<AtomicU64>) -> Table {
        Table::counted(routes, counter, |_| Arc::default())
    }

    /// [`Table::new`], with `affinity` giving each route name its affinity outcome counters.
    pub fn counted(
        routes: &[Route],
        counter: impl Fn(&str) -> Arc<AtomicU64>,
        affinity: impl Fn(&str) -> Counters,
    ) -> Table {
        let routes: Box<[Compiled]> = routes
            .iter()
            .map(|r| Compiled {
                path: r.path.clone(),
                host: r.host.clone(),
                action: match &r.action {
                    Action::Proxy {
                        strip_prefix,
                        add_prefix,
                        affinity: sticky,
                        auth,
                        pool,
                    } => Do::Proxy {
                        strip: strip_prefix.then(|| r.path.as_str().to_owned()),
                        add: add_prefix.as_ref().map(|p| p.as_str().to_owned()),
                        sticky: sticky
                            .as_ref()
                            .map(|a| Sticky::new(a, &r.name, affinity(&r.name))),
                        gate: auth.as_ref().map(|a| Box::new(Gate::new(&r.name, a))),
                        pool: pool.clone(),
                        to: None,
                    },
                    Action::Status(code) => Do::Answer {
                        status: status(*code),
                        location: None,
                    },
                    Action::Redirect {
                        status: code,
                        location,
                    } => Do::Answer {
                        status: status(*code),
                        // Config admits visible ASCII only, which is always a header value.
                        location: HeaderValue::from_str(location).ok(),
                    },
                },
                hits: counter(&r.name),
                name: r.name.clone(),
            })
            .collect();
        let by_host = routes.iter().any(|r| r.host.is_some());
        Table { routes, by_host }
    }

    /// Counts each forward-auth route's outcomes in the counters `auth` gives its name.
    #[must_use]
    pub fn auth_counted(mut self, auth: impl Fn(&str) -> forward_auth::Counters) -> Table {
        for r in &mut self.routes {
            if let Do::Proxy {
                gate: Some(gate), ..
            } = &mut r.action
            {
                gate.count_in(auth(&r.name));
            }
        }
        self
    }

    /// Gives each route with a pool of its own the target `target` gives that pool (the
    /// daemon shares one per pool and port within a listener).
    #[must_use]
    pub fn pooled(mut self, mut target: impl FnMut(&RoutePool) -> Arc<Target>) -> Table {
        for r in &mut self.routes {
            if let Do::Proxy {
                pool: Some(pool),
                to,
                ..
            } = &mut r.action
            {
                *to = Some(target(pool));
            }
        }
        self
    }

    /// The route for a request to `uri` naming `names`.
    pub fn route(&self, uri: &Uri, names: &Names<'_>) -> Result<Routed<'_>, Unrouted> {
        let path = path::normalise(uri.path()).map_err(Unrouted::BadPath)?;
        let host = host_name(names.authority);
        if self.by_host {
            let header = names
                .host_header
                .and_then(|h| h.to_str().ok())
                .map(host_name);
            let agree = |other: Option<&str>| other.is_none_or(|o| o.eq_ignore_ascii_case(host));
            if !agree(header) || !agree(names.sni.map(|s| s.trim_end_matches('.'))) {
                return Err(Unrouted::Misdirected);
            }
        }
        let route = self
            .routes
            .iter()
            .find(|r| {
                r.host
                    .as_deref()
                    .is_none_or(|h| h.eq_ignore_ascii_case(host))
                    && covers(&r.path, &path)
            })
            .ok_or(Unrouted::NoRoute)?;
        route.hits.fetch_add(1, Ordering::Relaxed);
        match &route.action {
            Do::Answer { status, location } => Ok(Routed::Answer {
                status: *status,
                location: location.as_ref(),
            }),
            Do::Proxy {
                strip,
                add,
                sticky,
                gate,
                to,
                ..
            } => {
                let auth = gate.as_deref().map(|g| {
                    let uri = match uri.query() {
                        Some(q) => format!("{path}?{q}"),
                        None => path.clone(),
                    };
                    (g, uri)
                });
                let rest = match strip {
                    Some(prefix) => match &path[prefix.len()..] {
                        "" => "/",
                        rest => rest,
                    },
                    None => path.as_str(),
                };
                let mut target = String::with_capacity(
                    add.as_ref().map_or(0, String::len)
                        + rest.len()
                        + uri.query().map_or(0, |q| q.len() + 1),
                );
                if let Some(add) = add {
                    target.push_str(add);
                }
                target.push_str(rest);
                if let Some(query) = uri.query() {
                    target.push('?');
                    target.push_str(query);
                }
                Ok(Routed::Proxy {
                    target,
                    forwarded_prefix: strip.as_deref(),
                    sticky: sticky.as_ref(),
                    auth,
                    to: to.as_deref(),
                })
            }
        }
    }
}

/// Whether the route path covers the normalised `path`: itself or a path below it.
fn covers(route: &RoutePath, path: &str) -> bool {
    match route {
        RoutePath::All => true,
        RoutePath::Under(prefix) => prefix.covers(path),
    }
}

/// The host of a `host[:port]` authority (`request_head` checked its form), without a trailing
/// dot.
fn host_name(authority: &str) -> &str {
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Config admits only codes `StatusCode` knows.
fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND)
}
