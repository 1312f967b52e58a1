//! `forwarded_headers`: which family of forwarded headers an edge listener writes, and the
//! names of every header the families own, which the listener strips from each request
//! (`edge::forwarded` has the rules) and the configuration refuses as custom names.

use std::fmt;

use hyper::header::HeaderName;

/// Which family of headers a listener writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Style {
    /// RFC 7239 `Forwarded`.
    Forwarded,
    /// `X-Forwarded-For` / `-Proto` / `-Host` / `-Port` / `-Prefix` and `X-Real-IP`.
    XForwarded,
}

impl Style {
    /// Every style.
    pub const ALL: [Style; 2] = [Style::Forwarded, Style::XForwarded];

    /// The name used in the configuration.
    pub const fn name(self) -> &'static str {
        match self {
            Style::Forwarded => "forwarded",
            Style::XForwarded => "x-forwarded",
        }
    }
}

impl fmt::Display for Style {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

static MANAGED: [HeaderName; 7] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-prefix"),
    HeaderName::from_static("x-real-ip"),
];

/// Names of every header the styles own: `forwarded`, `x-forwarded-for`, `-proto`, `-host`,
/// `-port`, `-prefix`, `x-real-ip` (lowercase, in this order: `edge::forwarded` reads them by
/// position).
pub fn managed() -> &'static [HeaderName] {
    &MANAGED
}
