//! Edge listeners: TLS termination with client certificates, the headers that carry the verified
//! certificate and the real client to the backend, and HTTP proxying to the VIP's pool.
//!
//! What it takes from the rest of sluice: its settings from `config` (the types each setting is
//! read into live there), the node's phase from `shutdown`, and from the dataplane only the
//! backend table the daemon hands to [`pool::Pool::update`] (plain addresses): it imports
//! nothing of the dataplane (`tests/module_graph.rs` checks this).

pub mod affinity;
pub mod backend_head;
pub mod body_guard;
pub mod client_cert;
pub mod client_timeouts;
pub mod forward_auth;
pub mod forwarded;
pub mod graceful;
pub mod managed;
pub mod pool;
pub mod proxy_header;
pub mod request_head;
pub mod route;
pub mod server;
pub mod stats;
pub mod tls;
pub mod upstream;
