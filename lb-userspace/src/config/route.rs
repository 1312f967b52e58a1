//! A listener's routes: `[[edge.route]]`, `preset` and the older `path_prefix`, read into one
//! ordered list. The first route whose path (and host, when it names one) matches a request
//! decides it; a request no route matches gets 404 from sluice. The edge compiles the list
//! once per listener (`edge::route`) and normalises each request's path before matching.
//!
//! - `path_prefix = "/auth"` is the single route `{ path = "/auth", strip_prefix = true }`
//!   (named `path_prefix`), so old configs keep their meaning; it cannot be combined with
//!   routes or a preset (the error says how to move it into the list).
//! - Neither routes, preset nor `path_prefix`: the single route `{ path = "/" }` (`all`).
//! - A route that an earlier one always takes first can never match, and is refused.
//! - A `proxy` route sends to the listener's `pool` unless it names its own (`pool`,
//!   `backend_port`: see [`RoutePool`]), so one listener can serve several services (an app
//!   and the oauth2-proxy in front of it).

mod action;
pub mod auth;
mod pool;

use toml::Spanned;

pub use auth::ForwardAuth;

use super::{
    affinity::Affinity,
    errors::{written_or, Report},
    fields,
    path_prefix::{self, PathPrefix},
    raw, Vip,
};

/// One route, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its label on `/metrics`.
    pub name: String,
    pub path: RoutePath,
    /// Lowercase host name without port or trailing dot; `None`: any host.
    pub host: Option<String>,
    pub action: Action,
}

/// The paths a route matches, segment by segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutePath {
    /// `/`: every path.
    All,
    /// The prefix itself and everything below it.
    Under(PathPrefix),
}

impl RoutePath {
    /// Whether every path `other` matches is matched by `self` too.
    pub fn covers(&self, other: &RoutePath) -> bool {
        match (self, other) {
            (RoutePath::All, _) => true,
            (RoutePath::Under(_), RoutePath::All) => false,
            (RoutePath::Under(a), RoutePath::Under(b)) => {
                let (a, b) = (a.as_str(), b.as_str());
                b == a || b.strip_prefix(a).is_some_and(|rest| rest.starts_with('/'))
            }
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            RoutePath::All => "/",
            RoutePath::Under(p) => p.as_str(),
        }
    }
}

/// What a matched request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Sent to the route's pool (the listener's unless `pool` names another). `strip_prefix` removes the route's path (the backend sees
    /// the rest, `/` for the path itself) and names it in `X-Forwarded-Prefix`; `add_prefix`
    /// is put in front of what is sent.
    Proxy {
        strip_prefix: bool,
        add_prefix: Option<PathPrefix>,
        /// Which backend a client session stays on; `None`: the pool's choice by client
        /// address.
        affinity: Option<Affinity>,
        /// Forward authentication before proxying; `None`: none. Boxed: most routes have
        /// none, and every route carries the variant.
        auth: Option<Box<ForwardAuth>>,
        /// The pool the route sends to; `None`: the listener's (`pool` and `backend_port`).
        pool: Option<RoutePool>,
    },
    /// sluice answers with this status (403 or 404); the backend never sees the request.
    Status(u16),
    /// sluice answers with a redirect to `location`.
    Redirect { status: u16, location: String },
}

/// A proxy route's own pool: the backends of `[[vip]]` `vip`, on `backend_port`. Only a
/// route whose pool or port differs from the listener's has one, so equal targets compare
/// equal however they were written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RoutePool {
    pub vip: String,
    pub backend_port: u16,
}

/// What a listener's routes are checked against: the VIPs, and the listener's own pool and
/// backend port (`None` when broken, reported already).
pub(super) struct Listener<'v> {
    pub vips: Option<&'v [Vip]>,
    pub pool: Option<&'v Vip>,
    pub backend_port: Option<u16>,
}

/// Ready-made route tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// The public paths of Keycloak's reverse-proxy guide ("Exposed path recommendations",
    /// Keycloak 26.x): `/realms/`, `/resources/`, `/.well-known/`. `/`, `/admin/`,
    /// `/metrics` and `/health` are not exposed (404).
    Keycloak,
    /// [`Preset::Keycloak`] and `/admin/`: for the listener the admin console is reached on
    /// (an internal address); still never `/metrics` or `/health`.
    KeycloakAdmin,
}

const PRESETS: [(&str, Preset); 2] = [
    ("keycloak", Preset::Keycloak),
    ("keycloak-admin", Preset::KeycloakAdmin),
];

impl Preset {
    /// The routes the preset stands for.
    pub fn routes(self) -> Vec<Route> {
        let public = [
            ("realms", "/realms"),
            ("resources", "/resources"),
            ("well-known", "/.well-known"),
        ];
        let admin = match self {
            Preset::Keycloak => None,
            Preset::KeycloakAdmin => Some(("admin", "/admin")),
        };
        public
            .into_iter()
            .chain(admin)
            .filter_map(|(name, path)| {
                Some(Route {
                    name: name.to_owned(),
                    path: RoutePath::Under(path.parse().ok()?),
                    host: None,
                    action: Action::Proxy {
                        strip_prefix: false,
                        add_prefix: None,
                        affinity: None,
                        auth: None,
                        pool: None,
                    },
                })
            })
            .collect()
    }
}

/// The listener's routes from `path_prefix`, `preset` and `[[edge.route]]`.
pub(super) fn routes(
    r: &mut Report,
    e: &raw::Edge,
    table: std::ops::Range<usize>,
    listener: &Listener<'_>,
    field: &dyn Fn(&str) -> String,
) -> Option<Vec<Route>> {
    let listed = e.routes.as_ref();
    if let (Some(prefix), true) = (&e.path_prefix, listed.is_some() || e.preset.is_some()) {
        r.invalid(
            prefix.span(),
            field("path_prefix"),
            format!(
                "is set beside {}; path_prefix is the route {{ path = \"{}\", strip_prefix = \
                 true }}: add that as the first [[edge.route]] and remove path_prefix",
                if listed.is_some() {
                    "[[edge.route]]"
                } else {
                    "preset"
                },
                prefix.get_ref()
            ),
        );
        return None;
    }
    if let (Some(preset), Some(_)) = (&e.preset, listed) {
        r.invalid(
            preset.span(),
            field("preset"),
            "is set beside [[edge.route]]; a preset is a whole route table: remove preset \
             and list its routes (path = \"/realms\", \"/resources\", \"/.well-known\") \
             among yours",
        );
        return None;
    }
    if let Some(preset) = &e.preset {
        return fields::choice(r, preset, &field("preset"), &PRESETS).map(Preset::routes);
    }
    if let Some(prefix) = &e.path_prefix {
        let prefix = parse_prefix(r, prefix, &field("path_prefix"))?;
        return Some(vec![Route {
            name: "path_prefix".to_owned(),
            path: RoutePath::Under(prefix),
            host: None,
            action: Action::Proxy {
                strip_prefix: true,
                add_prefix: None,
                affinity: None,
                auth: None,
                pool: None,
            },
        }]);
    }
    let Some(listed) = listed else {
        return Some(vec![Route {
            name: "all".to_owned(),
            path: RoutePath::All,
            host: None,
            action: Action::Proxy {
                strip_prefix: false,
                add_prefix: None,
                affinity: None,
                auth: None,
                pool: None,
            },
        }]);
    };
    if listed.get_ref().is_empty() {
        r.invalid(
            written_or(listed.span(), table),
            field("route"),
            "is empty, so every request would get 404; add a [[edge.route]] with path = \"/\" \
             to proxy every path, or leave route out",
        );
        return None;
    }
    let checked: Vec<Option<Route>> = listed
        .get_ref()
        .iter()
        .enumerate()
        .map(|(i, route)| one(r, i, route, listener, &field(&format!("route[{i}]"))))
        .collect();
    let checked: Vec<Route> = checked.into_iter().collect::<Option<_>>()?;
    in_order(r, listed.get_ref(), checked, field)
}

/// `checked` (the routes of `listed`) when none is shadowed by an earlier one and no name is
/// used twice.
fn in_order(
    r: &mut Report,
    listed: &[Spanned<raw::Route>],
    checked: Vec<Route>,
    field: &dyn Fn(&str) -> String,
) -> Option<Vec<Route>> {
    let mut ok = true;
    for (j, later) in checked.iter().enumerate() {
        let raw = listed[j].get_ref();
        if let Some(i) = checked[..j]
            .iter()
            .position(|earlier| shadows(earlier, later))
        {
            r.invalid(
                raw.path.span(),
                field(&format!("route[{j}].path")),
                format!(
                    "can never match: route[{i}] (path = \"{}\"{}) comes first and takes every \
                     request this route would; move this route above it, or remove it",
                    checked[i].path.as_str(),
                    checked[i]
                        .host
                        .as_ref()
                        .map_or(String::new(), |h| format!(", host = \"{h}\"")),
                ),
            );
            ok = false;
        }
        if let Some(i) = checked[..j].iter().position(|e| e.name == later.name) {
            r.invalid(
                raw.name.as_ref().map_or(raw.path.span(), Spanned::span),
                field(&format!("route[{j}].name")),
                format!(
                    "\"{}\" is already the name of route[{i}]; route names label /metrics and \
                     must be unique",
                    later.name
                ),
            );
            ok = false;
        }
    }
    ok.then_some(checked)
}

/// Whether `earlier` takes every request `later` would match.
fn shadows(earlier: &Route, later: &Route) -> bool {
    let host = match (&earlier.host, &later.host) {
        (None, _) => true,
        (Some(a), Some(b)) => a == b,
        (Some(_), None) => false,
    };
    host && earlier.path.covers(&later.path)
}

fn parse_prefix(r: &mut Report, v: &Spanned<String>, field: &str) -> Option<PathPrefix> {
    match v.get_ref().parse() {
        Ok(prefix) => Some(prefix),
        Err(error) => {
            r.invalid(v.span(), field, format!("\"{}\" {error}", v.get_ref()));
            None
        }
    }
}

fn one(
    r: &mut Report,
    index: usize,
    route: &Spanned<raw::Route>,
    listener: &Listener<'_>,
    field: &str,
) -> Option<Route> {
    let spec = route.get_ref();
    let f = |key: &str| format!("{field}.{key}");
    let name = match &spec.name {
        Some(n) => name(r, n, &f("name")),
        None => Some(format!("route{index}")),
    };
    let path = match spec.path.get_ref().as_str() {
        "/" => Some(RoutePath::All),
        _ => match spec.path.get_ref().parse::<PathPrefix>() {
            Ok(p) => Some(RoutePath::Under(p)),
            // A route's "/" is every path; the prefix rules' other refusals stand.
            Err(path_prefix::Error::TrailingSlash) => {
                r.invalid(
                    spec.path.span(),
                    f("path"),
                    format!(
                        "\"{}\" ends with '/'; leave that off (\"{}\" matches itself and every \
                         path below it)",
                        spec.path.get_ref(),
                        spec.path.get_ref().trim_end_matches('/')
                    ),
                );
                None
            }
            Err(error) => {
                r.invalid(
                    spec.path.span(),
                    f("path"),
                    format!("\"{}\" {error}", spec.path.get_ref()),
                );
                None
            }
        },
    };
    let host = match &spec.host {
        Some(h) => host(r, h, &f("host")).map(Some),
        None => Some(None),
    };
    let action = action::action(r, spec, route.span(), path.as_ref(), listener, &f);
    Some(Route {
        name: name?,
        path: path?,
        host: host?,
        action: action?,
    })
}

fn name(r: &mut Report, v: &Spanned<String>, field: &str) -> Option<String> {
    let n = v.get_ref();
    let fine = !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if fine {
        return Some(n.clone());
    }
    r.invalid(
        v.span(),
        field,
        format!(
            "\"{n}\" is not a route name; use 1 to 64 letters, digits, '-', '_' or '.', e.g. \
             \"realms\""
        ),
    );
    None
}

/// A host name or IPv4 address, without port; lowercased, trailing dot dropped.
fn host(r: &mut Report, v: &Spanned<String>, field: &str) -> Option<String> {
    let text = v.get_ref();
    if let Some((name, port)) = text.rsplit_once(':') {
        if !name.is_empty() && !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) {
            r.invalid(
                v.span(),
                field,
                format!(
                    "\"{text}\" holds a port; a route matches the host name alone (the port \
                     is the listener's): write host = \"{name}\""
                ),
            );
            return None;
        }
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.len() <= 253 && name.split('.').all(label_ok) {
        return Some(name);
    }
    r.invalid(
        v.span(),
        field,
        format!(
            "\"{text}\" is not a host name; write a DNS name or IPv4 address without scheme, \
             port or path, e.g. \"kc.example.com\""
        ),
    );
    None
}
