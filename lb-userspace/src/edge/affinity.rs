//! A proxy route's affinity at request time: which backend the request's cookie asks for, and
//! whether it may have it. Compiled once with the route table; a request allocates nothing here.
//!
//! | Mode | Request | Backend | Counted as |
//! |---|---|---|---|
//! | any | no such cookie (or an empty value) | the pool's choice by client address | `no_cookie` |
//! | `auth-session-route` | `AUTH_SESSION_ID` (else `AUTH_SESSION_ID_LEGACY`) whose suffix after the first dot is a configured route, backend up or draining | that backend | `hit` |
//! | `auth-session-route` | that route's backend down (or out of the pool) | the pool's choice | `fallback_down` |
//! | `auth-session-route` | no dot, or a suffix no route names | the pool's choice | `invalid` |
//! | any | a value that is no RFC 6265 cookie value (unbalanced quote, space, comma, ...) | the pool's choice | `invalid` |
//! | `cookie-hash` | the named cookie | the pool's Maglev table at the FNV-1a hash of its value | `hit` |
//! | `cookie` | sluice's cookie naming a backend of the pool that is up or draining | that backend | `hit` |
//! | `cookie` | sluice's cookie naming a backend of the pool that is down | the pool's choice, and a new cookie | `fallback_down` |
//! | `cookie` | anything else under its name: forged, malformed, another route's or key's, a removed backend's | the pool's choice, and a new cookie | `invalid` |
//!
//! (`cookie` mode: see [`cookie`] for the value, and when `Set-Cookie` is sent.)
//!
//! Cookies are read from every `cookie` header (HTTP/2 may split them, RFC 9113 8.2.3), pairs
//! split on `;`, names compared exactly, values with optional DQUOTEs (RFC 6265 4.1.1) removed;
//! of a name sent twice the first counts (what browsers send first is the most specific path).
//! The cookie itself is passed on untouched.

pub mod cookie;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use hyper::{header, HeaderMap};

use super::pool::{Key, Pool};
use crate::config::affinity::Affinity;
use cookie::{Cookie, Read};

/// Keycloak's sticky-session cookie, and the copy older Keycloak versions (before 24) also set.
const AUTH_SESSION_COOKIES: [&str; 2] = ["AUTH_SESSION_ID", "AUTH_SESSION_ID_LEGACY"];

/// How an affinity decided, the label on `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    FallbackDown,
    NoCookie,
    Invalid,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Hit,
        Outcome::FallbackDown,
        Outcome::NoCookie,
        Outcome::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::FallbackDown => "fallback_down",
            Outcome::NoCookie => "no_cookie",
            Outcome::Invalid => "invalid",
        }
    }
}

/// A route's outcome counters, by [`Outcome::ALL`] order.
pub type Counters = Arc<[AtomicU64; 4]>;

/// Where a request should go, before the pool's own choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    /// This backend (it keeps sessions).
    Backend(IpAddr),
    /// The pool's table at this key.
    Key(Key),
}

/// One route's affinity, compiled.
#[derive(Debug)]
pub struct Sticky {
    how: How,
    counters: Counters,
}

#[derive(Debug)]
enum How {
    AuthSession(BTreeMap<String, IpAddr>),
    CookieHash(String),
    Cookie(Box<Cookie>),
}

/// What a route's affinity decided for one request, kept until its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Where the request should go, before the pool's own choice.
    pub prefer: Option<Prefer>,
    placed: Placed,
}

/// Where a request's session is, as far as a cookie the response may set is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// Not `cookie` mode: sluice never sets a cookie.
    Never,
    /// `cookie` mode, and no valid cookie for a backend keeping sessions: the response places
    /// the session.
    Nowhere,
    /// `cookie` mode, on this backend (up or draining): only another backend's answer moves it.
    On(IpAddr),
}

/// The same route's affinity (what comparing a [`super::route::Routed`] asks).
impl PartialEq for Sticky {
    fn eq(&self, other: &Sticky) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Sticky {}

impl Sticky {
    /// The affinity of the route named `route` (a `cookie` mode's cookies are bound to it).
    pub fn new(affinity: &Affinity, route: &str, counters: Counters) -> Sticky {
        let how = match affinity {
            Affinity::AuthSessionRoute { routes } => How::AuthSession(routes.clone()),
            Affinity::CookieHash { cookie } => How::CookieHash(cookie.clone()),
            Affinity::Cookie(settings) => How::Cookie(Box::new(Cookie::new(settings, route))),
        };
        Sticky { how, counters }
    }

    /// The backend the request's cookie asks for, counted; `None`: the pool's normal choice.
    pub fn prefer(&self, headers: &HeaderMap, pool: &Pool) -> Option<Prefer> {
        self.choose(headers, pool).prefer
    }

    /// [`Sticky::prefer`], and what [`Sticky::answer`] needs to place the session.
    pub fn choose(&self, headers: &HeaderMap, pool: &Pool) -> Choice {
        let (outcome, choice) = if let How::Cookie(c) = &self.how {
            Self::by_cookie(c, headers, pool)
        } else {
            let (outcome, prefer) = self.decide(headers, pool);
            (
                outcome,
                Choice {
                    prefer,
                    placed: Placed::Never,
                },
            )
        };
        if let Some(c) = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .and_then(|i| self.counters.get(i))
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
        choice
    }

    /// The `Set-Cookie` a response from `served` needs, if any: only when the request's cookie
    /// did not already name it (`cookie` mode only).
    pub fn answer(
        &self,
        choice: &Choice,
        served: IpAddr,
        pool: &Pool,
    ) -> Option<header::HeaderValue> {
        let How::Cookie(c) = &self.how else {
            return None;
        };
        match choice.placed {
            Placed::Never => None,
            Placed::On(b) if b == served => None,
            Placed::On(_) | Placed::Nowhere => c.set_cookie(served, &pool.snapshot()),
        }
    }

    fn by_cookie(c: &Cookie, headers: &HeaderMap, pool: &Pool) -> (Outcome, Choice) {
        let snapshot = pool.snapshot();
        let (outcome, backend) = match c.read(cookie(headers, c.name()), &snapshot) {
            Read::Missing => (Outcome::NoCookie, None),
            Read::Up(b) => (Outcome::Hit, Some(b)),
            Read::Down(_) => (Outcome::FallbackDown, None),
            Read::Invalid => (Outcome::Invalid, None),
        };
        (
            outcome,
            Choice {
                prefer: backend.map(Prefer::Backend),
                placed: backend.map_or(Placed::Nowhere, Placed::On),
            },
        )
    }

    fn decide(&self, headers: &HeaderMap, pool: &Pool) -> (Outcome, Option<Prefer>) {
        let value = match &self.how {
            How::AuthSession(_) => AUTH_SESSION_COOKIES
                .iter()
                .find_map(|name| cookie(headers, name)),
            How::CookieHash(name) => cookie(headers, name),
            // `choose` reads this mode itself (`by_cookie`).
            How::Cookie(_) => return (Outcome::Invalid, None),
        };
        let Some(value) = value else {
            return (Outcome::NoCookie, None);
        };
        // An unbalanced quote, a space, a comma: not a value a server set.
        if !value.bytes().all(is_cookie_octet) {
            return (Outcome::Invalid, None);
        }
        match &self.how {
            How::AuthSession(routes) => {
                let backend = value
                    .split_once('.')
                    .and_then(|(_, route)| routes.get(route));
                match backend {
                    None => (Outcome::Invalid, None),
                    Some(b) if pool.keeps_sessions(*b) => (Outcome::Hit, Some(Prefer::Backend(*b))),
                    Some(_) => (Outcome::FallbackDown, None),
                }
            }
            How::CookieHash(_) => (
                Outcome::Hit,
                Some(Prefer::Key(Key::Hash(fnv1a(value.as_bytes())))),
            ),
            How::Cookie(_) => (Outcome::Invalid, None),
        }
    }
}

/// The value of the first cookie called `name` in the request's `cookie` headers, without
/// optional DQUOTEs; `None` when there is none or it is empty.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            (n.trim() == name).then(|| unquote(v.trim()))
        })
        .filter(|v| !v.is_empty())
}

/// An RFC 6265 cookie-octet.
fn is_cookie_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// FNV-1a, folded to 32 bits: fixed and keyless, so every gateway hashes a value alike.
#[allow(clippy::cast_possible_truncation)] // folding to 32 bits is the point
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // Both halves, so the slot depends on every bit.
    ((h >> 32) ^ h) as u32
}

#[cfg(test)]
mod tests;
