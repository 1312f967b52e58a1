//! The backend side of an edge listener: HTTP/1.1 connections to the pool's backends, kept
//! open and reused, and a second backend tried when the first cannot be connected.
//!
//! A connection goes back to the idle list only once hyper says it is ready for the next
//! request (the previous response's body was read to its end), so a request never waits
//! behind another one on a shared connection.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hyper::{body::Incoming, client::conn::http1::SendRequest, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::pool::Pool;

/// How long a backend may take to accept a connection before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a backend may take to start its response.
const RESPONSE_TIMEOUT: Duration = Duration::from_mins(1);
/// Idle connections kept per backend; more are closed when they come back.
const MAX_IDLE: usize = 64;

pub struct Upstream {
    port: u16,
    idle: Mutex<HashMap<SocketAddr, Vec<SendRequest<Incoming>>>>,
}

impl Upstream {
    pub fn new(port: u16) -> Upstream {
        Upstream {
            port,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `req` to `client`'s backend and returns its response. With `upgrade` the
    /// connection is handed over with the response (WebSocket) and never reused.
    pub async fn send(
        self: &Arc<Self>,
        pool: &Pool,
        client: IpAddr,
        req: Request<Incoming>,
        upgrade: bool,
    ) -> Result<Response<Incoming>, StatusCode> {
        let (backend, mut sender) = self.sender(pool, client, upgrade).await?;
        let resp = match tokio::time::timeout(RESPONSE_TIMEOUT, sender.send_request(req)).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(error)) => {
                tracing::info!(%backend, %error, "backend request failed");
                return Err(StatusCode::BAD_GATEWAY);
            }
            Err(_) => return Err(StatusCode::GATEWAY_TIMEOUT),
        };
        if !upgrade {
            let this = Arc::clone(self);
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    this.put_back(backend, sender);
                }
            });
        }
        Ok(resp)
    }

    /// An idle connection to the client's backend, or a new one; when the backend cannot be
    /// connected, a new one to the next backend.
    async fn sender(
        &self,
        pool: &Pool,
        client: IpAddr,
        fresh: bool,
    ) -> Result<(SocketAddr, SendRequest<Incoming>), StatusCode> {
        let first = pool
            .pick(client, None)
            .ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
        let first = SocketAddr::new(first, self.port);
        if !fresh {
            if let Some(s) = self.take_idle(first) {
                return Ok((first, s));
            }
        }
        match connect(first).await {
            Ok(s) => Ok((first, s)),
            Err(error) => {
                tracing::info!(backend = %first, %error, "backend connect failed; trying another");
                let second = pool
                    .pick(client, Some(first.ip()))
                    .ok_or(StatusCode::BAD_GATEWAY)?;
                let second = SocketAddr::new(second, self.port);
                connect(second)
                    .await
                    .map(|s| (second, s))
                    .map_err(|_| StatusCode::BAD_GATEWAY)
            }
        }
    }

    fn take_idle(&self, backend: SocketAddr) -> Option<SendRequest<Incoming>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(&backend)?;
        // The backend may have closed a connection while it sat idle.
        while let Some(s) = list.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn put_back(&self, backend: SocketAddr, sender: SendRequest<Incoming>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(backend).or_default();
        if list.len() < MAX_IDLE {
            list.push(sender);
        }
    }

    /// Closes the idle connections to every backend `keep` refuses (drained, down or gone):
    /// it gets no new requests, and its pooled connections should not linger.
    pub fn retain(&self, keep: impl Fn(IpAddr) -> bool) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|addr, _| keep(addr.ip()));
    }
}

async fn connect(backend: SocketAddr) -> Result<SendRequest<Incoming>, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%backend, %error, "backend connection ended");
        }
    });
    Ok(sender)
}
