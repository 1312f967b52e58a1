//! A proxy route's `affinity`: which backend a client session stays on.
//!
//! | `mode` | The request carries | It goes to |
//! |---|---|---|
//! | `auth-session-route` | Keycloak's `AUTH_SESSION_ID=<id>.<route>` cookie (or `AUTH_SESSION_ID_LEGACY`) | the backend `routes` maps `<route>` (the part after the first dot) to, while it is up or draining |
//! | `cookie-hash` | the cookie named `cookie` | the backend the pool's Maglev table gives its value's hash: every gateway agrees, without shared state |
//! | `cookie` | sluice's own cookie (`cookie`, default `SLUICE_AFFINITY`), set by sluice | the backend whose keyed MAC it holds, while it is up or draining (see [`cookie`]) |
//!
//! Anything else (no cookie, an unknown route, its backend down) gets the pool's normal choice
//! by client address; sluice never rewrites the first two modes' cookies. Settings are read at
//! start: a reload that changes them is refused, like any change of the route table.

mod cookie;

use std::{collections::BTreeMap, net::IpAddr};

use toml::Spanned;

use super::{errors::Report, fields, raw, Vip};

pub use cookie::{CookieKey, CookieSettings, SameSite, DEFAULT_COOKIE};

/// A route's affinity, checked against its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affinity {
    /// Keycloak route name (its node name, the cookie's suffix) → backend of the pool.
    AuthSessionRoute { routes: BTreeMap<String, IpAddr> },
    /// The cookie whose value is hashed onto the pool.
    CookieHash { cookie: String },
    /// sluice's own affinity cookie.
    Cookie(CookieSettings),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    AuthSessionRoute,
    CookieHash,
    Cookie,
}

const MODES: [(&str, Mode); 3] = [
    ("auth-session-route", Mode::AuthSessionRoute),
    ("cookie-hash", Mode::CookieHash),
    ("cookie", Mode::Cookie),
];

/// `v` checked; `pool` is the listener's `[[vip]]` (`None` when it is broken, reported
/// already), `path` the route's path (`None`: broken, reported already).
pub(super) fn affinity(
    r: &mut Report,
    v: &Spanned<raw::Affinity>,
    pool: Option<&Vip>,
    path: Option<&str>,
    field: &str,
) -> Option<Affinity> {
    let a = v.get_ref();
    let f = |key: &str| format!("{field}.{key}");
    let mode = fields::choice(r, &a.mode, &f("mode"), &MODES)?;
    if !only_keys_of(r, a, mode, &f) {
        return None;
    }
    match mode {
        Mode::AuthSessionRoute => {
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
            let Some(cookie) = &a.cookie else {
                r.invalid(
                    v.span(),
                    f("cookie"),
                    "is needed with mode = \"cookie-hash\": the name of the cookie whose value \
                     picks the backend, e.g. cookie = \"JSESSIONID\"",
                );
                return None;
            };
            cookie_name(r, cookie, &f("cookie")).map(|cookie| Affinity::CookieHash { cookie })
        }
        Mode::Cookie => cookie::settings(r, a, path, &f).map(Affinity::Cookie),
    }
}

/// Whether `a` holds only keys of `mode` (each other one is reported: it would be ignored).
fn only_keys_of(r: &mut Report, a: &raw::Affinity, mode: Mode, f: &dyn Fn(&str) -> String) -> bool {
    use std::ops::Range;
    // Each key, where it is written, and the modes it belongs to.
    type Key<'a> = (&'a str, Option<Range<usize>>, &'a [Mode]);
    let keys: [Key; 8] = [
        (
            "routes",
            a.routes.as_ref().map(Spanned::span),
            &[Mode::AuthSessionRoute],
        ),
        (
            "cookie",
            a.cookie.as_ref().map(Spanned::span),
            &[Mode::CookieHash, Mode::Cookie],
        ),
        (
            "secure",
            a.secure.as_ref().map(Spanned::span),
            &[Mode::Cookie],
        ),
        (
            "http_only",
            a.http_only.as_ref().map(Spanned::span),
            &[Mode::Cookie],
        ),
        (
            "same_site",
            a.same_site.as_ref().map(Spanned::span),
            &[Mode::Cookie],
        ),
        (
            "max_age",
            a.max_age.as_ref().map(Spanned::span),
            &[Mode::Cookie],
        ),
        ("path", a.path.as_ref().map(Spanned::span), &[Mode::Cookie]),
        (
            "key_file",
            a.key_file.as_ref().map(Spanned::span),
            &[Mode::Cookie],
        ),
    ];
    let mut ok = true;
    for (key, at, modes) in keys {
        let Some(at) = at else { continue };
        if modes.contains(&mode) {
            continue;
        }
        let owners: Vec<String> = MODES
            .iter()
            .filter(|(_, m)| modes.contains(m))
            .map(|(n, _)| format!("mode = \"{n}\""))
            .collect();
        r.invalid(
            at,
            f(key),
            format!(
                "has no effect with mode = \"{}\"; it belongs to {}: remove it or change the \
                 mode",
                a.mode.get_ref(),
                owners.join(" or ")
            ),
        );
        ok = false;
    }
    ok
}

/// A cookie name (an RFC 9110 token).
fn cookie_name(r: &mut Report, cookie: &Spanned<String>, field: &str) -> Option<String> {
    let name = cookie.get_ref();
    if name.is_empty() || !name.bytes().all(is_token) {
        r.invalid(
            cookie.span(),
            field,
            format!(
                "\"{name}\" is not a cookie name; use letters, digits and \
                 !#$%&'*+-.^_`|~ only, e.g. \"JSESSIONID\""
            ),
        );
        return None;
    }
    Some(name.clone())
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
