//! A proxy route's `auth`: forward authentication as oauth2-proxy's `/oauth2/auth` endpoint
//! (and nginx `auth_request`, Traefik `forwardAuth`) define it. Before the request is proxied,
//! sluice asks `url`; a 2xx lets it through with `response_headers` copied onto it, a 401
//! redirects to `signin_url` (or is passed through), a 403 is a 403, and anything else (any
//! other status, a timeout, no connection) is a 503: never an open door. The edge side is
//! `edge::forward_auth`.

use std::time::Duration;

use hyper::header::{self, HeaderName};
use toml::Spanned;

use crate::config::{cert_names, errors::Report, fields, raw};

/// How long the auth service may take, connect included, unless `timeout` says otherwise.
/// oauth2-proxy answers from its cookie alone (or one session-store lookup) in well under a
/// millisecond; a service that takes seconds is in trouble, and a client is better served by a
/// prompt 503 than by waiting on it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// oauth2-proxy's identity headers (`--set-xauthrequest`, `--pass-access-token`,
/// `--set-authorization-header`): what a 2xx carries onto the request by default.
pub const DEFAULT_RESPONSE_HEADERS: [&str; 6] = [
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-groups",
    "x-auth-request-preferred-username",
    "x-auth-request-access-token",
    "authorization",
];

/// A route's forward authentication, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuth {
    pub url: AuthUrl,
    /// The whole exchange with the auth service, connect included.
    pub timeout: Duration,
    pub on_unauthorized: OnUnauthorized,
    /// Copied from a 2xx onto the request, after every client copy of them (in any case or
    /// `_`/`-` spelling) was removed.
    pub response_headers: Vec<HeaderName>,
    /// The auth service's `Set-Cookie` headers reach the client (on the redirect, the 401 or
    /// 403, and the proxied response).
    pub pass_set_cookie: bool,
}

/// The auth endpoint: plain HTTP to `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUrl {
    /// A DNS name, IPv4 address or bracketed IPv6 address, as written.
    pub host: String,
    pub port: u16,
    /// Origin-form target, `/` when the URL has no path.
    pub path_and_query: String,
}

impl AuthUrl {
    /// `host[:port]` as the subrequest's `Host`.
    pub fn authority(&self) -> String {
        if self.port == 80 {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// What a 401 from the auth service gets the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnUnauthorized {
    /// A 302 to this URL, with `rd=` set to the request's URL (percent-encoded).
    Redirect { signin_url: String },
    /// The 401 itself (with the auth service's `WWW-Authenticate`).
    Pass,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Redirect,
    Pass,
}

/// `v` checked.
pub(super) fn forward_auth(
    r: &mut Report,
    v: &Spanned<raw::ForwardAuth>,
    field: &str,
) -> Option<ForwardAuth> {
    let spec = v.get_ref();
    let f = |key: &str| format!("{field}.{key}");
    let url = url(r, &spec.url, &f("url"));
    let timeout = match &spec.timeout {
        Some(text) => fields::duration(
            r,
            text,
            &f("timeout"),
            Duration::from_millis(1),
            "it is how long the auth service gets to answer, connect included, before the \
             client gets 503",
        ),
        None => Some(DEFAULT_TIMEOUT),
    };
    let mode = match &spec.on_unauthorized {
        Some(m) => fields::choice(
            r,
            m,
            &f("on_unauthorized"),
            &[("redirect", Mode::Redirect), ("pass", Mode::Pass)],
        ),
        None => Some(Mode::Redirect),
    };
    let on_unauthorized = match (mode, &spec.signin_url) {
        (Some(Mode::Redirect), Some(s)) => signin_url(r, s, &f("signin_url"))
            .map(|signin_url| OnUnauthorized::Redirect { signin_url }),
        (Some(Mode::Redirect), None) => {
            r.invalid(
                v.span(),
                f("signin_url"),
                "is needed with on_unauthorized = \"redirect\" (the default): where a client \
                 the auth service answers 401 is sent to sign in, e.g. signin_url = \
                 \"/oauth2/start\"; or set on_unauthorized = \"pass\" to answer the 401",
            );
            None
        }
        (Some(Mode::Pass), Some(s)) => {
            r.invalid(
                s.span(),
                f("signin_url"),
                "has no effect with on_unauthorized = \"pass\" (the client gets the 401): \
                 remove it, or set on_unauthorized = \"redirect\"",
            );
            None
        }
        (Some(Mode::Pass), None) => Some(OnUnauthorized::Pass),
        (None, _) => None,
    };
    let response_headers = match &spec.response_headers {
        Some(list) => response_headers(r, list, &f("response_headers")),
        None => Some(
            DEFAULT_RESPONSE_HEADERS
                .iter()
                .map(|n| HeaderName::from_static(n))
                .collect(),
        ),
    };
    Some(ForwardAuth {
        url: url?,
        timeout: timeout?,
        on_unauthorized: on_unauthorized?,
        response_headers: response_headers?,
        pass_set_cookie: spec.pass_set_cookie.as_ref().is_some_and(|p| *p.get_ref()),
    })
}

fn url(r: &mut Report, v: &Spanned<String>, field: &str) -> Option<AuthUrl> {
    let text = v.get_ref();
    let bad = |r: &mut Report, why: &str| {
        r.invalid(
            v.span(),
            field,
            format!(
                "\"{text}\" {why}; write the auth endpoint as http://host[:port]/path, e.g. \
                 \"http://127.0.0.1:4180/oauth2/auth\" (oauth2-proxy's --http-address)"
            ),
        );
    };
    if text.starts_with("https://") {
        bad(
            r,
            "is https, which sluice does not speak to an auth service yet; reach it over \
             http on a private address",
        );
        return None;
    }
    let Some(rest) = text.strip_prefix("http://") else {
        bad(r, "is not an http URL");
        return None;
    };
    if text.bytes().any(|b| !(0x21..0x7f).contains(&b)) || text.contains('#') {
        bad(
            r,
            "holds a space, a control or non-ASCII character or a fragment",
        );
        return None;
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        bad(r, "holds user information, which sluice never sends");
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
            let Ok(port) = p.parse::<u16>() else {
                bad(r, "has no valid port");
                return None;
            };
            (h, port)
        }
        _ => (authority, 80),
    };
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    };
    if !host_ok || port == 0 {
        bad(r, "names no valid host and port");
        return None;
    }
    let path_and_query = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    if path_and_query.parse::<hyper::Uri>().is_err() {
        bad(r, "has a path that is not a valid request target");
        return None;
    }
    Some(AuthUrl {
        host: host.to_owned(),
        port,
        path_and_query,
    })
}

fn signin_url(r: &mut Report, v: &Spanned<String>, field: &str) -> Option<String> {
    let l = v.get_ref();
    let fine = (l.starts_with('/') && !l.starts_with("//"))
        || l.starts_with("https://")
        || l.starts_with("http://");
    if fine && !l.contains('#') && l.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        return Some(l.clone());
    }
    r.invalid(
        v.span(),
        field,
        format!(
            "\"{l}\" is not a sign-in URL; write an absolute URL (\"https://app.example.com/\
             oauth2/start\") or a path from the root (\"/oauth2/start\"), visible ASCII only and \
             without a fragment (sluice appends rd=)"
        ),
    );
    None
}

fn response_headers(
    r: &mut Report,
    list: &Spanned<Vec<Spanned<String>>>,
    field: &str,
) -> Option<Vec<HeaderName>> {
    let reserved = cert_names::reserved();
    let mut out: Vec<HeaderName> = Vec::new();
    let mut ok = true;
    for (i, v) in list.get_ref().iter().enumerate() {
        let f = format!("{field}[{i}]");
        let text = v.get_ref();
        let Ok(name) = HeaderName::from_bytes(text.as_bytes()) else {
            r.invalid(
                v.span(),
                &f,
                format!(
                    "\"{text}\" is not a header name; use letters, digits and \
                     !#$%&'*+-.^_`|~ only, e.g. \"X-Auth-Request-User\""
                ),
            );
            ok = false;
            continue;
        };
        let spelled = |n: &HeaderName| n.as_str().replace('_', "-");
        let theirs = spelled(&name);
        if let Some((_, why)) = reserved.iter().find(|(n, _)| spelled(n) == theirs) {
            r.invalid(
                v.span(),
                &f,
                format!(
                    "\"{text}\" is {why}, which sluice sets or removes itself; an auth service \
                     cannot set it: remove it from the list"
                ),
            );
            ok = false;
            continue;
        }
        if name == header::SET_COOKIE || name == header::COOKIE {
            r.invalid(
                v.span(),
                &f,
                format!(
                    "\"{text}\" cannot be copied onto the request; the auth service's \
                     Set-Cookie reaches the client with pass_set_cookie = true"
                ),
            );
            ok = false;
            continue;
        }
        if out.iter().any(|n| spelled(n) == theirs) {
            r.invalid(
                v.span(),
                &f,
                format!("\"{text}\" is listed twice; remove one"),
            );
            ok = false;
            continue;
        }
        out.push(name);
    }
    ok.then_some(out)
}
