//! Edge listeners: TLS termination with client certificates, the headers that carry the verified
//! certificate and the real client to the backend, and HTTP proxying to the VIP's pool.
//!
//! Work in progress (issue 5): the pure pieces come first, each with its own tests; the
//! listener that ties them together follows.

pub mod client_cert;
pub mod forwarded;
pub mod pool;
pub mod proxy_header;
pub mod server;
pub mod stats;
pub mod tls;
pub mod upstream;
