//! sluice's own affinity cookie (`mode = "cookie"`): its value names a backend of the pool
//! without showing its address, and cannot be made without the key.
//!
//! **Value.** `base64url(0x01 || tag)` without padding, 23 characters, where `tag` is the first
//! 16 bytes (128 bits) of `HMAC-SHA256(key, "sluice-affinity-v1" 0 route 0 address)`: `route`
//! is the route's name, `address` the backend's 16 bytes (IPv4 as IPv4-mapped IPv6). The tag
//! is both the backend's id and its MAC: only the key's holder can make one, it reveals nothing
//! of the address, and it is bound to the route (another route's cookie names no backend here).
//!
//! **Backend id.** The backend's address, not its place in the pool: a reload that adds or
//! removes a backend leaves every other backend's cookies valid, and gateways with the same
//! key and backend addresses make and accept the same cookies. A cookie for a backend the pool
//! no longer has (removed by a reload) names none of its members and counts as `invalid`.
//!
//! **Reading.** A request's cookie is matched against the tags of the pool's members, computed
//! once per change of the pool (not per request) and compared in constant time. Only a
//! member's tag matches, so a cookie can never lead outside the pool: a member up or draining
//! is a `hit`, a member down a `fallback_down`, anything else (forged, malformed, another
//! route's, another key's, a removed backend's) `invalid`; all but a hit get the pool's normal
//! choice.
//!
//! **Writing.** `Set-Cookie` goes out only when the backend that answered is not the one the
//! request's cookie validly named: no cookie, an invalid one, a down backend, or a backend that
//! refused the connection so that another one answered. A hit gets none (so `Max-Age` counts
//! from when the session was placed, not from the last request).

use std::{
    fmt::Write as _,
    net::IpAddr,
    sync::{Arc, PoisonError, RwLock},
};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use hyper::header::HeaderValue;
use ring::{hmac, rand};

use super::super::pool::Snapshot;
use crate::config::affinity::{CookieKey, CookieSettings};

/// Bytes of the MAC kept: 128 bits, so a forged cookie matches a backend with odds 2^-128.
pub const TAG: usize = 16;
/// The value's format, its first byte, so that a later format can be told apart.
const VERSION: u8 = 1;
/// Length of a value: base64url of `VERSION` and the tag, unpadded.
const VALUE_LEN: usize = (1 + TAG).div_ceil(3) * 4 - 1;
/// What every tag's MAC starts with: these MACs are for nothing else.
const CONTEXT: &[u8] = b"sluice-affinity-v1\0";

pub type Tag = [u8; TAG];

/// One route's cookie: how to make and read it.
pub struct Cookie {
    name: String,
    key: hmac::Key,
    /// The route's name, which every tag is bound to.
    route: String,
    /// `; Path=...; Max-Age=...; Secure; HttpOnly; SameSite=...`.
    attributes: String,
    /// The tags of the pool's members, for the snapshot they were made from.
    known: RwLock<Arc<Known>>,
}

impl std::fmt::Debug for Cookie {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cookie")
            .field("name", &self.name)
            .field("route", &self.route)
            .field("attributes", &self.attributes)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Known {
    /// Held, so that its address cannot be reused by a later snapshot while it is compared.
    snapshot: Option<Arc<Snapshot>>,
    members: Vec<Member>,
}

struct Member {
    backend: IpAddr,
    tag: Tag,
    keeps_sessions: bool,
    set_cookie: Option<HeaderValue>,
}

/// What a request's cookie says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// No such cookie, or an empty one.
    Missing,
    /// A backend of the pool that keeps sessions (up or draining).
    Up(IpAddr),
    /// A backend of the pool that is down.
    Down(IpAddr),
    /// Not a value sluice made for a member of this pool on this route.
    Invalid,
}

impl Cookie {
    /// The cookie of the route named `route`; a random key unless `settings` names a file.
    pub fn new(settings: &CookieSettings, route: &str) -> Cookie {
        let key = match &settings.key {
            CookieKey::File { key, .. } => hmac::Key::new(hmac::HMAC_SHA256, key.bytes()),
            CookieKey::Random => random_key(),
        };
        Cookie::with_key(settings, route, key)
    }

    fn with_key(settings: &CookieSettings, route: &str, key: hmac::Key) -> Cookie {
        let mut attributes = format!("; Path={}", settings.path);
        if let Some(age) = settings.max_age {
            let _ = write!(attributes, "; Max-Age={age}");
        }
        if settings.secure {
            attributes.push_str("; Secure");
        }
        if settings.http_only {
            attributes.push_str("; HttpOnly");
        }
        attributes.push_str("; SameSite=");
        attributes.push_str(settings.same_site.as_str());
        Cookie {
            name: settings.name.clone(),
            key,
            route: route.to_owned(),
            attributes,
            known: RwLock::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tag naming `backend` on this route.
    pub fn tag(&self, backend: IpAddr) -> Tag {
        let address = match backend {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        };
        let mut mac = hmac::Context::with_key(&self.key);
        mac.update(CONTEXT);
        mac.update(self.route.as_bytes());
        mac.update(&[0]);
        mac.update(&address);
        let mut tag = [0; TAG];
        tag.copy_from_slice(&mac.sign().as_ref()[..TAG]);
        tag
    }

    /// What `value` (the request's cookie, if any) names in `pool`.
    pub fn read(&self, value: Option<&str>, pool: &Arc<Snapshot>) -> Read {
        let Some(value) = value else {
            return Read::Missing;
        };
        let Some(tag) = decode(value) else {
            return Read::Invalid;
        };
        let known = self.known(pool);
        // Every member is compared, each in constant time: the time taken says nothing of
        // how near a forged tag came.
        let mut found = Read::Invalid;
        for m in &known.members {
            if same(&m.tag, &tag) {
                found = if m.keeps_sessions {
                    Read::Up(m.backend)
                } else {
                    Read::Down(m.backend)
                };
            }
        }
        found
    }

    /// The `Set-Cookie` that places the session on `backend`.
    pub fn set_cookie(&self, backend: IpAddr, pool: &Arc<Snapshot>) -> Option<HeaderValue> {
        let known = self.known(pool);
        if let Some(m) = known.members.iter().find(|m| m.backend == backend) {
            return m.set_cookie.clone();
        }
        // Not a member of the pool as it is now (it changed while the request was out).
        self.header(&self.tag(backend))
    }

    fn header(&self, tag: &Tag) -> Option<HeaderValue> {
        // Name (a token), value (base64url) and attributes (config checked them) are visible
        // ASCII: always a header value.
        HeaderValue::from_str(&format!("{}={}{}", self.name, encode(tag), self.attributes)).ok()
    }

    /// The members' tags for `pool`, made again only when the pool changed.
    fn known(&self, pool: &Arc<Snapshot>) -> Arc<Known> {
        {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            if known
                .snapshot
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, pool))
            {
                return Arc::clone(&known);
            }
        }
        let members = pool
            .members()
            .iter()
            .map(|&backend| {
                let tag = self.tag(backend);
                Member {
                    backend,
                    tag,
                    keeps_sessions: pool.keeps_sessions(backend),
                    set_cookie: self.header(&tag),
                }
            })
            .collect();
        let known = Arc::new(Known {
            snapshot: Some(Arc::clone(pool)),
            members,
        });
        *self.known.write().unwrap_or_else(PoisonError::into_inner) = Arc::clone(&known);
        known
    }
}

/// Whether two tags are equal, in a time that does not depend on where they differ.
fn same(a: &Tag, b: &Tag) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // Keeps the compiler from turning the fold into a loop that stops at the first difference.
    std::hint::black_box(diff) == 0
}

/// A key from the system's random source, for a listener without `key_file`.
fn random_key() -> hmac::Key {
    let rng = rand::SystemRandom::new();
    // `getrandom` fails only where there is no random source at all, which no kernel sluice
    // runs on (XDP needs Linux 5.x, getrandom(2) is 3.17): there, stop rather than sign with a
    // guessable key.
    hmac::Key::generate(hmac::HMAC_SHA256, &rng).expect("the system random source")
}

/// The cookie value carrying `tag`.
pub fn encode(tag: &Tag) -> String {
    let mut bytes = [0u8; 1 + TAG];
    bytes[0] = VERSION;
    bytes[1..].copy_from_slice(tag);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The tag in a cookie value, if it is one sluice could have made.
pub fn decode(value: &str) -> Option<Tag> {
    if value.len() != VALUE_LEN {
        return None;
    }
    let mut bytes = [0u8; 1 + TAG + 2];
    let n = URL_SAFE_NO_PAD
        .decode_slice(value.as_bytes(), &mut bytes)
        .ok()?;
    if n != 1 + TAG || bytes[0] != VERSION {
        return None;
    }
    let mut tag = [0; TAG];
    tag.copy_from_slice(&bytes[1..=TAG]);
    Some(tag)
}

/// A cookie with a fixed key, for tests.
#[cfg(test)]
pub(super) fn with_key(settings: &CookieSettings, route: &str, key: &[u8]) -> Cookie {
    Cookie::with_key(settings, route, hmac::Key::new(hmac::HMAC_SHA256, key))
}

#[cfg(test)]
mod tests;
