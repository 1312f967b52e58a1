//! `affinity = { mode = "cookie", ... }`: sluice's own affinity cookie, whose value is a keyed
//! MAC naming a backend of the pool (the edge's `affinity::cookie` makes and reads it).
//!
//! | Key | Default | |
//! |---|---|---|
//! | `cookie` | `SLUICE_AFFINITY` | the cookie's name; `__Secure-` needs `secure`, `__Host-` also `path = "/"` |
//! | `secure` | `true` | `Secure`: browsers send it over HTTPS only |
//! | `http_only` | `true` | `HttpOnly`: scripts cannot read it |
//! | `same_site` | `"Lax"` | `"Lax"`, `"Strict"` or `"None"` (which needs `secure`: browsers drop it otherwise) |
//! | `max_age` | none: a session cookie | `Max-Age`, a duration of at least `1s` |
//! | `path` | the route's path | `Path`: the browser sends the cookie only below it, so two routes' cookies never meet |
//! | `key_file` | none: a random key made at start | the HMAC-SHA256 key, 32 to 4096 bytes, read at load; not readable by every user |
//!
//! With the random key a restart, and every other gateway, makes cookies the others do not
//! honour (their clients get a new cookie, for the pool's normal choice): gateways that share
//! clients need the same `key_file`. The file is read at load, so a reload that finds it changed
//! is refused like any change of the route table; a new key takes a restart.

use std::{
    fmt,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use toml::Spanned;

use super::{cookie_name, fields, raw, Report};

/// The cookie's name when `cookie` is left out.
pub const DEFAULT_COOKIE: &str = "SLUICE_AFFINITY";

/// A key shorter than this is refused: HMAC-SHA256's own output size (RFC 2104 section 3).
const MIN_KEY: u64 = 32;
/// A larger file is surely not a key (a certificate bundle, a log): refused before reading.
const MAX_KEY: u64 = 4096;

/// sluice's own cookie, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSettings {
    pub name: String,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: SameSite,
    /// `Max-Age` in seconds; `None`: a session cookie.
    pub max_age: Option<u64>,
    /// `Path`: the route's path unless set.
    pub path: String,
    pub key: CookieKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// Where the MAC key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieKey {
    /// A random key, made when the listener starts (kept across reloads, lost on restart).
    Random,
    /// `key_file`'s bytes, read at load.
    File { path: PathBuf, key: Secret },
}

/// Key bytes: compared (a reload that changes them is refused) but never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// The `cookie` mode's keys of `a`; `path` is the route's.
pub(super) fn settings(
    r: &mut Report,
    a: &raw::Affinity,
    path: Option<&str>,
    f: &dyn Fn(&str) -> String,
) -> Option<CookieSettings> {
    let name = match &a.cookie {
        Some(c) => cookie_name(r, c, &f("cookie")),
        None => Some(DEFAULT_COOKIE.to_owned()),
    };
    let secure = a.secure.as_ref().is_none_or(|s| *s.get_ref());
    let http_only = a.http_only.as_ref().is_none_or(|s| *s.get_ref());
    let same_site = match &a.same_site {
        None => Some(SameSite::Lax),
        Some(s) => same_site(r, s, secure, &f("same_site")),
    };
    let max_age = match &a.max_age {
        None => Some(None),
        Some(m) => fields::duration(
            r,
            m,
            &f("max_age"),
            Duration::from_secs(1),
            "it is how long the browser keeps the cookie (leave max_age out for a cookie that \
             ends with the browser session)",
        )
        .map(|d| Some(d.as_secs())),
    };
    let path = match &a.path {
        Some(p) => cookie_path(r, p, &f("path")),
        None => path.map(str::to_owned),
    };
    let key = match &a.key_file {
        None => Some(CookieKey::Random),
        Some(k) => key_file(r, k, &f("key_file")),
    };
    let (name, path) = (name?, path?);
    // Browsers refuse prefixed names without what the prefix promises (RFC 6265bis 4.1.3):
    // such a cookie would never come back, and no session would ever stick.
    if let Some(c) = &a.cookie {
        let promise = if name.starts_with("__Host-") {
            (!secure || path != "/").then_some("secure = true and path = \"/\"")
        } else if name.starts_with("__Secure-") {
            (!secure).then_some("secure = true")
        } else {
            None
        };
        if let Some(needs) = promise {
            r.invalid(
                c.span(),
                f("cookie"),
                format!(
                    "\"{name}\" has a prefix browsers accept only with {needs} (RFC 6265bis \
                     4.1.3), so the cookie would never come back; set {needs}, or use a name \
                     without the prefix"
                ),
            );
            return None;
        }
    }
    Some(CookieSettings {
        name,
        secure,
        http_only,
        same_site: same_site?,
        max_age: max_age?,
        path,
        key: key?,
    })
}

fn same_site(r: &mut Report, v: &Spanned<String>, secure: bool, field: &str) -> Option<SameSite> {
    let choice = fields::choice(
        r,
        v,
        field,
        &[
            ("Lax", SameSite::Lax),
            ("Strict", SameSite::Strict),
            ("None", SameSite::None),
        ],
    )?;
    if choice == SameSite::None && !secure {
        r.invalid(
            v.span(),
            field,
            "\"None\" needs secure = true: browsers drop a SameSite=None cookie without \
             Secure, so no session would stick; remove secure = false, or use \"Lax\"",
        );
        return None;
    }
    Some(choice)
}

/// A `Path` attribute: from the root, visible ASCII without `;` (which would end it).
fn cookie_path(r: &mut Report, v: &Spanned<String>, field: &str) -> Option<String> {
    let p = v.get_ref();
    if p.starts_with('/')
        && p.len() <= 1024
        && p.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';')
    {
        return Some(p.clone());
    }
    r.invalid(
        v.span(),
        field,
        format!(
            "\"{p}\" is not a cookie path; write a path from the root without spaces or ';', \
             e.g. \"/realms\" (or leave path out: the route's path)"
        ),
    );
    None
}

/// `key_file`'s key: an absolute path to 32 to 4096 bytes nobody but the owner and group reads.
fn key_file(r: &mut Report, v: &Spanned<String>, field: &str) -> Option<CookieKey> {
    let path = fields::absolute_path(r, v, field, "/etc/sluice/affinity.key")?;
    match read_key(&path) {
        Ok(key) => Some(CookieKey::File {
            path,
            key: Secret(key.into()),
        }),
        Err(why) => {
            r.invalid(v.span(), field, format!("\"{}\" {why}", path.display()));
            None
        }
    }
}

/// The key in `path`, or what is wrong with it (completing "`path` ...").
fn read_key(path: &Path) -> Result<Vec<u8>, String> {
    let create = "create it with `openssl rand -out FILE 32; chmod 600 FILE`";
    let meta = std::fs::metadata(path).map_err(|e| {
        format!("cannot be read ({e}); point key_file at the key file, or {create}")
    })?;
    if !meta.is_file() {
        return Err(format!("is not a file; {create}"));
    }
    let mode = meta.permissions().mode();
    if mode & 0o007 != 0 {
        return Err(format!(
            "is open to every user (mode {:o}), and whoever reads it can make cookies sluice \
             honours; `chmod 600` it (or 640 with the daemon's group)",
            mode & 0o777
        ));
    }
    if meta.len() < MIN_KEY || meta.len() > MAX_KEY {
        return Err(format!(
            "holds {} bytes; the key must be {MIN_KEY} to {MAX_KEY} random bytes: {create}",
            meta.len()
        ));
    }
    let key = std::fs::read(path)
        .map_err(|e| format!("cannot be read ({e}); check that the daemon's user can read it"))?;
    // It may have changed since the metadata was read.
    if (key.len() as u64) < MIN_KEY {
        return Err(format!(
            "holds {} bytes; the key must be {MIN_KEY} to {MAX_KEY} random bytes: {create}",
            key.len()
        ));
    }
    Ok(key)
}
