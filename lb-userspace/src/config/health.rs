//! Health check tables: a VIP's `[vip.health_check]` and a backend's own `health_check`.

use std::time::Duration;

use humantime::format_duration;
use toml::Spanned;

use super::{
    errors::{written_or, Report},
    fields,
    raw::{self, defaults},
    CheckKind, HealthCheck,
};

/// Probing faster only loads the backends; failures are noticed within `fall` intervals anyway.
const MIN_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Clone, Copy)]
enum Kind {
    Tcp,
    Http,
}

/// The check at `field`; `vip_port` is the default port (`None` if the VIP's address is
/// broken, which was reported already).
pub(super) fn check(
    r: &mut Report,
    sh: &Spanned<raw::HealthCheck>,
    field: &str,
    vip_port: Option<u16>,
) -> Option<HealthCheck> {
    let h = sh.get_ref();
    let f = |key: &str| format!("{field}.{key}");
    let kind = match fields::choice(
        r,
        &h.kind,
        &f("kind"),
        &[("tcp", Kind::Tcp), ("http", Kind::Http)],
    ) {
        Some(Kind::Tcp) => tcp(r, h, field),
        Some(Kind::Http) => http(r, h, field),
        None => None,
    };
    let port = match &h.port {
        Some(p) => fields::int(
            r,
            p,
            &f("port"),
            1..=i64::from(u16::MAX),
            "the port probed on each backend; leave it out to probe the VIP's port",
        ),
        None => vip_port,
    };
    let interval = fields::duration(
        r,
        &h.interval,
        &f("interval"),
        MIN_INTERVAL,
        "probing more often only loads the backends; the default is \"2s\"",
    );
    let timeout = fields::duration(
        r,
        &h.timeout,
        &f("timeout"),
        Duration::from_nanos(1),
        "a probe needs time to answer; the default is \"1s\"",
    );
    let mut timing = interval.zip(timeout);
    if let Some((interval, timeout)) = timing.filter(|(i, t)| t > i) {
        // Point at whichever of the two was written (the other is a default).
        let span = written_or(h.timeout.span(), written_or(h.interval.span(), sh.span()));
        r.invalid(
            span,
            f("timeout"),
            format!(
                "{} is longer than the interval ({}): a probe must end before the next one \
                 starts; lower timeout or raise interval",
                format_duration(timeout),
                format_duration(interval)
            ),
        );
        timing = None;
    }
    let rise = fields::int(
        r,
        &h.rise,
        &f("rise"),
        1..=i64::from(u32::MAX),
        "consecutive successes that bring a down backend up; the default is 2",
    );
    let fall = fields::int(
        r,
        &h.fall,
        &f("fall"),
        1..=i64::from(u32::MAX),
        "consecutive failures that take an up backend down; the default is 3",
    );
    let (interval, timeout) = timing?;
    Some(HealthCheck {
        kind: kind?,
        port: port?,
        interval,
        timeout,
        rise: rise?,
        fall: fall?,
    })
}

/// A TCP check, rejecting the HTTP-only keys: they would silently do nothing.
fn tcp(r: &mut Report, h: &raw::HealthCheck, field: &str) -> Option<CheckKind> {
    let http_only = [
        ("path", h.path.as_ref().map(Spanned::span)),
        ("host", h.host.as_ref().map(Spanned::span)),
        ("expect_status", h.expect_status.as_ref().map(Spanned::span)),
    ];
    let mut ok = true;
    for (key, span) in http_only {
        if let Some(span) = span {
            r.invalid(
                span,
                format!("{field}.{key}"),
                format!("only HTTP checks use {key}; set kind = \"http\" or remove {key}"),
            );
            ok = false;
        }
    }
    ok.then_some(CheckKind::Tcp)
}

fn http(r: &mut Report, h: &raw::HealthCheck, field: &str) -> Option<CheckKind> {
    // Whitespace or control characters would break the request line or header.
    let clean = |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    let path = match &h.path {
        None => Some(defaults::HTTP_PATH.to_string()),
        Some(p) if p.get_ref().starts_with('/') && clean(p.get_ref()) => Some(p.get_ref().clone()),
        Some(p) => {
            r.invalid(
                p.span(),
                format!("{field}.path"),
                format!(
                    "\"{}\" is not a request path; start it with '/' and leave out spaces, \
                     e.g. \"/health/ready\"",
                    p.get_ref()
                ),
            );
            None
        }
    };
    let host = match &h.host {
        None => Some(None),
        Some(v) if clean(v.get_ref()) => Some(Some(v.get_ref().clone())),
        Some(v) => {
            r.invalid(
                v.span(),
                format!("{field}.host"),
                format!(
                    "\"{}\" is not a Host header value; write a name like \"kc.example\", or \
                     leave host out to send the backend address",
                    v.get_ref()
                ),
            );
            None
        }
    };
    let expect_status = match &h.expect_status {
        None => Some(defaults::EXPECT_STATUS),
        Some(v) => fields::int(
            r,
            v,
            &format!("{field}.expect_status"),
            100..=599,
            "an HTTP status code; the default is 200",
        ),
    };
    Some(CheckKind::Http {
        path: path?,
        host: host?,
        expect_status: expect_status?,
    })
}
