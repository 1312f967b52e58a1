//! A route's `action` and the keys that belong to it: `proxy` (`pool`, `backend_port`,
//! `strip_prefix`, `add_prefix`, `affinity`, `auth`),
//! `status` (`status`) and `redirect` (`status`, `location`). A key of another action is
//! refused rather than ignored.

use toml::Spanned;

use super::{auth, parse_prefix, pool, Action, Listener, RoutePath};
use crate::config::{affinity, errors::Report, fields, raw};

const STATUSES: [i64; 2] = [403, 404];
const REDIRECTS: [i64; 5] = [301, 302, 303, 307, 308];

pub(super) fn action(
    r: &mut Report,
    v: &raw::Route,
    table: std::ops::Range<usize>,
    path: Option<&RoutePath>,
    listener: &Listener<'_>,
    f: &dyn Fn(&str) -> String,
) -> Option<Action> {
    let kind = fields::choice(
        r,
        &v.action,
        &f("action"),
        &[("proxy", 0u8), ("status", 1), ("redirect", 2)],
    )?;
    // Keys that belong to another action would be silently ignored: refuse them.
    let misplaced = |r: &mut Report, key: &str, span: std::ops::Range<usize>, owner: &str| {
        r.invalid(
            span,
            f(key),
            format!(
                "has no effect with action = \"{}\"; it belongs to action = \"{owner}\": \
                 remove it or change the action",
                v.action.get_ref()
            ),
        );
    };
    let mut ok = true;
    if kind != 0 {
        let proxy_keys = [
            ("pool", v.pool.as_ref().map(Spanned::span)),
            ("backend_port", v.backend_port.as_ref().map(Spanned::span)),
            ("strip_prefix", v.strip_prefix.as_ref().map(Spanned::span)),
            ("add_prefix", v.add_prefix.as_ref().map(Spanned::span)),
            ("affinity", v.affinity.as_ref().map(Spanned::span)),
            ("auth", v.auth.as_ref().map(Spanned::span)),
        ];
        for (key, span) in proxy_keys {
            if let Some(span) = span {
                misplaced(r, key, span, "proxy");
                ok = false;
            }
        }
    }
    if kind != 2 {
        if let Some(s) = &v.location {
            misplaced(r, "location", s.span(), "redirect");
            ok = false;
        }
    }
    if kind == 0 {
        if let Some(s) = &v.status {
            misplaced(r, "status", s.span(), "status\" or \"redirect");
            ok = false;
        }
    }
    match kind {
        0 => {
            // The route's pool first: its affinity names backends of that pool.
            let (vip, target) = pool::route_pool(r, v, listener, f)?;
            let strip_prefix = v.strip_prefix.as_ref().is_some_and(|s| *s.get_ref());
            if strip_prefix && path == Some(&RoutePath::All) {
                if let Some(s) = &v.strip_prefix {
                    r.invalid(
                        s.span(),
                        f("strip_prefix"),
                        "the route's path is \"/\", so there is no prefix to strip; remove \
                         strip_prefix",
                    );
                }
                return None;
            }
            let add_prefix = match &v.add_prefix {
                Some(p) => Some(parse_prefix(r, p, &f("add_prefix"))?),
                None => None,
            };
            let affinity = match &v.affinity {
                Some(a) => Some(affinity::affinity(
                    r,
                    a,
                    vip,
                    path.map(RoutePath::as_str),
                    &f("affinity"),
                )?),
                None => None,
            };
            let auth = match &v.auth {
                Some(a) => Some(Box::new(auth::forward_auth(r, a, &f("auth"))?)),
                None => None,
            };
            ok.then_some(Action::Proxy {
                strip_prefix,
                add_prefix,
                affinity,
                auth,
                pool: target,
            })
        }
        1 => {
            let status = code(r, v.status.as_ref(), table, &f("status"), &STATUSES, None)?;
            ok.then_some(Action::Status(status))
        }
        _ => redirect(r, v, table, f).filter(|_| ok),
    }
}

/// `status` (default 302) and `location` of a redirect.
fn redirect(
    r: &mut Report,
    v: &raw::Route,
    table: std::ops::Range<usize>,
    f: &dyn Fn(&str) -> String,
) -> Option<Action> {
    let status = code(
        r,
        v.status.as_ref(),
        table.clone(),
        &f("status"),
        &REDIRECTS,
        Some(302),
    )?;
    let Some(location) = &v.location else {
        r.invalid(
            table,
            f("location"),
            "action = \"redirect\" needs location, e.g. location = \
             \"https://kc.example.com/realms/main/account\"",
        );
        return None;
    };
    let l = location.get_ref();
    let fine = (l.starts_with('/') && !l.starts_with("//"))
        || l.starts_with("https://")
        || l.starts_with("http://");
    if !fine || l.bytes().any(|b| !(0x21..0x7f).contains(&b)) {
        r.invalid(
            location.span(),
            f("location"),
            format!(
                "\"{l}\" is not a redirect target; write an absolute URL \
                 (\"https://kc.example.com/realms/main\") or a path from the root \
                 (\"/realms/main\"), visible ASCII only (percent-encode the rest)"
            ),
        );
        return None;
    }
    Some(Action::Redirect {
        status,
        location: l.clone(),
    })
}

/// A status among `allowed`, or `default` when left out.
fn code(
    r: &mut Report,
    v: Option<&Spanned<i64>>,
    table: std::ops::Range<usize>,
    field: &str,
    allowed: &[i64],
    default: Option<u16>,
) -> Option<u16> {
    let list = allowed
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    match v {
        None => {
            if default.is_none() {
                r.invalid(table, field, format!("is needed: one of {list}"));
            }
            default
        }
        Some(s) if allowed.contains(s.get_ref()) => u16::try_from(*s.get_ref()).ok(),
        Some(s) => {
            r.invalid(
                s.span(),
                field,
                format!("{} is not one of {list}", s.get_ref()),
            );
            None
        }
    }
}
