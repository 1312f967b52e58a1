//! A proxy route's `affinity`: which backend a client session stays on.
//!
//! | `mode` | The request carries | It goes to |
//! |---|---|---|
//! | `auth-session-route` | Keycloak's `AUTH_SESSION_ID=<id>.<route>` cookie (or `AUTH_SESSION_ID_LEGACY`) | the backend `routes` maps `<route>` (the part after the first dot) to, while it is up or draining |
//! | `cookie-hash` | the cookie named `cookie` | the backend the pool's Maglev table gives its value's hash: every gateway agrees, without shared state |
//!
//! Anything else (no cookie, an unknown route, its backend down) gets the pool's normal choice
//! by client address; sluice never rewrites the cookie. Settings are read at start: a reload
//! that changes them is refused, like any change of the route table.

use std::{collections::BTreeMap, net::IpAddr};

use toml::Spanned;

use super::{errors::Report, fields, raw, Vip};

/// A route's affinity, checked against its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affinity {
    /// Keycloak route name (its node name, the cookie's suffix) → backend of the pool.
    AuthSessionRoute { routes: BTreeMap<String, IpAddr> },
    /// The cookie whose value is hashed onto the pool.
    CookieHash { cookie: String },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    AuthSessionRoute,
    CookieHash,
}

const MODES: [(&str, Mode); 2] = [
    ("auth-session-route", Mode::AuthSessionRoute),
    ("cookie-hash", Mode::CookieHash),
];

/// `v` checked; `pool` is the listener's `[[vip]]` (`None` when it is broken, reported already).
pub(super) fn affinity(
    r: &mut Report,
    v: &Spanned<raw::Affinity>,
    pool: Option<&Vip>,
    field: &str,
) -> Option<Affinity> {
    let a = v.get_ref();
    let f = |key: &str| format!("{field}.{key}");
    let mode = fields::choice(r, &a.mode, &f("mode"), &MODES)?;
    let misplaced = |r: &mut Report, key: &str, span: std::ops::Range<usize>, owner: &str| {
        r.invalid(
            span,
            f(key),
            format!(
                "has no effect with mode = \"{}\"; it belongs to mode = \"{owner}\": remove it \
                 or change the mode",
                a.mode.get_ref()
            ),
        );
    };
    match mode {
        Mode::AuthSessionRoute => {
            if let Some(c) = &a.cookie {
                misplaced(r, "cookie", c.span(), "cookie-hash");
                return None;
            }
            let Some(routes) = &a.routes else {
                r.invalid(
                    v.span(),
                    f("routes"),
                    "is needed with mode = \"auth-session-route\": map each Keycloak node's \
                     route name (the AUTH_SESSION_ID suffix) to its backend, e.g. routes = \
                     { \"kc-0\" = \"198.18.10.2\" }",
                );
                return None;
            };
            session_routes(r, routes, pool, &f("routes"))
                .map(|routes| Affinity::AuthSessionRoute { routes })
        }
        Mode::CookieHash => {
            if let Some(t) = &a.routes {
                misplaced(r, "routes", t.span(), "auth-session-route");
                return None;
            }
            let Some(cookie) = &a.cookie else {
                r.invalid(
                    v.span(),
                    f("cookie"),
                    "is needed with mode = \"cookie-hash\": the name of the cookie whose value \
                     picks the backend, e.g. cookie = \"JSESSIONID\"",
                );
                return None;
            };
            let name = cookie.get_ref();
            if name.is_empty() || !name.bytes().all(is_token) {
                r.invalid(
                    cookie.span(),
                    f("cookie"),
                    format!(
                        "\"{name}\" is not a cookie name; use letters, digits and \
                         !#$%&'*+-.^_`|~ only, e.g. \"JSESSIONID\""
                    ),
                );
                return None;
            }
            Some(Affinity::CookieHash {
                cookie: name.clone(),
            })
        }
    }
}

/// The `routes` table: names a cookie value can carry, addresses of the pool's backends.
fn session_routes(
    r: &mut Report,
    routes: &Spanned<BTreeMap<String, Spanned<String>>>,
    pool: Option<&Vip>,
    field: &str,
) -> Option<BTreeMap<String, IpAddr>> {
    if routes.get_ref().is_empty() {
        r.invalid(
            routes.span(),
            field,
            "is empty, so no session would ever stick; map each Keycloak route name to its \
             backend, e.g. { \"kc-0\" = \"198.18.10.2\" }",
        );
        return None;
    }
    let mut ok = true;
    let mut out = BTreeMap::new();
    for (name, address) in routes.get_ref() {
        let f = format!("{field}.\"{name}\"");
        if name.is_empty() || !name.bytes().all(is_cookie_octet) {
            r.invalid(
                address.span(),
                &f,
                format!(
                    "\"{name}\" can never be a cookie's route suffix; use letters, digits, \
                     '-', '_' or '.', e.g. \"kc-0\""
                ),
            );
            ok = false;
            continue;
        }
        let Ok(ip) = address.get_ref().parse::<IpAddr>() else {
            r.invalid(
                address.span(),
                &f,
                format!(
                    "\"{}\" is not an IP address; name a backend of the pool, e.g. \
                     \"198.18.10.2\"",
                    address.get_ref()
                ),
            );
            ok = false;
            continue;
        };
        if let Some(vip) = pool {
            if !vip.backends.iter().any(|b| b.address == ip) {
                let known: Vec<String> =
                    vip.backends.iter().map(|b| b.address.to_string()).collect();
                r.invalid(
                    address.span(),
                    &f,
                    format!(
                        "{ip} is not a backend of vip \"{}\", so no request could ever go \
                         there; name one of: {}",
                        vip.name,
                        known.join(", ")
                    ),
                );
                ok = false;
                continue;
            }
        }
        out.insert(name.clone(), ip);
    }
    ok.then_some(out)
}

/// An RFC 9110 token character (a cookie name).
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// An RFC 6265 cookie-octet: what a cookie value may hold.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}
