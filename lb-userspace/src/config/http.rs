//! HTTP facts the edge settings are checked against: the hop-by-hop headers, which the
//! listener removes (`edge::request_head`) and so no custom header name may take.

use hyper::header::{self, HeaderName};

/// The headers that describe one connection rather than the message, never forwarded.
/// `Trailer` is among them so that no trailer field is ever forwarded (see `edge::request_head`).
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("http2-settings"),
];
