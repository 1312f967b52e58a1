//! The admin socket: the daemon serves it, the CLI talks to it.

pub mod client;
pub mod protocol;
pub mod server;
