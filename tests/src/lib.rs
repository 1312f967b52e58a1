//! Test support for sluice: network namespaces, the standard client/gateway/backend
//! topology, and tiny backends and clients that run inside it.
//!
//! Everything here needs root (network namespaces); tests should call
//! [`netns::is_root`] and skip themselves when it is false. All hosts live in
//! namespaces that the helpers create and delete again on drop, also on panic, and
//! all addresses are from the benchmarking ranges `198.18.0.0/15` and `2001:db8::/32`.

pub mod auth_service;
pub mod bgp_lab;
pub mod certs;
pub mod clients;
pub mod curl;
pub mod daemon;
pub mod edge_lab;
pub mod gateway_config;
pub mod haproxy;
pub mod http1;
pub mod keycloak;
pub mod keycloak_browser;
pub mod keycloak_cluster;
pub mod keycloak_decode;
pub mod keycloak_edge;
pub mod keycloak_lab;
pub mod load;
pub mod netns;
pub mod nginx;
pub mod oauth2_proxy;
pub mod packet_builder;
pub mod packet_check;
pub mod packet_env;
pub mod proxy_backend;
pub mod servers;
pub mod streams;
pub mod topology;

pub use clients::{
    backend_index, connect_tcp, connect_tcp_from, echo_greetings, http_get_many, udp_ask, EchoConn,
};
pub use netns::{is_root, require_root, ChildGuard, NetNs};
pub use servers::{
    http_backend, http_delay_backend, http_headers_backend, tcp_echo_backend, udp_backend,
    ServerHandle,
};
pub use topology::{Topology, VIP4, VIP6};
