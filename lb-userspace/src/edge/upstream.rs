//! The backend side of an edge listener: HTTP/1.1 connections to the pool's backends, kept
//! open and reused, and a second backend tried when the first cannot be connected.
//!
//! A connection goes back to the idle list only once hyper says it is ready for the next
//! request (the previous response's body was read to its end), so a request never waits
//! behind another one on a shared connection. The response body itself hands it back
//! ([`BackendBody`]), before the client sees the response end: the client's next request on
//! the same connection then always finds it idle, and never opens a second one. (Handing it
//! back from a task of its own raced the next request, which under load often arrived first
//! and opened an extra backend connection, later closed as one too many.)
//!
//! With `send_proxy_protocol = "v2"` each backend connection starts with a PROXY header naming
//! one client, so it may only ever carry that client connection's requests: such connections
//! are kept in the client connection's own idle list and close with it.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::http1::SendRequest,
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use lb_common::proxy::parse::{write_v2, Command};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

use super::{
    affinity::Prefer,
    pool::{Key, Pool},
};
use crate::config::SendProxy;

/// Idle connections kept per backend; more are closed when they come back. Each concurrent
/// request needs a connection of its own (HTTP/1.1 to the backend), so this is the request
/// concurrency per backend that runs without opening connections: 64 made an h2 client with
/// 10 streams on each of 50 connections open ~3,000 backend connections a second, where nginx
/// (`keepalive 512`) and `HAProxy` (`http-reuse`) kept theirs. Idle ones cost a socket and a few
/// KiB each, and backends close them after their own keep-alive timeout.
const MAX_IDLE: usize = 1024;

/// A listener's `connect_timeout` and `response_timeout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// How long a backend may take to accept a connection before the next one is tried.
    pub connect: Duration,
    /// How long a backend may take to start its response (504 after that).
    pub response: Duration,
}

/// Where a route's requests go: a pool, and the connections to its backends. A listener has
/// one for its own `pool`; a route naming another pool (or port) has its own.
pub struct Target {
    pub pool: Arc<Pool>,
    pub upstream: Arc<Upstream>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("port", &self.upstream.port)
            .finish_non_exhaustive()
    }
}

/// The same target: the same pool and connections, not merely equal ones.
impl PartialEq for Target {
    fn eq(&self, other: &Target) -> bool {
        Arc::ptr_eq(&self.pool, &other.pool) && Arc::ptr_eq(&self.upstream, &other.upstream)
    }
}

impl Eq for Target {}

pub struct Upstream {
    port: u16,
    send_proxy: SendProxy,
    timeouts: Timeouts,
    /// Connections any client's requests may use (without PROXY headers).
    shared: Arc<Idle>,
}

/// How requests found their backend connection (`sluice_edge_backend_requests_total`); the
/// listener's `EdgeStats` keeps them across reloads.
#[derive(Debug, Default)]
pub struct BackendConnections {
    /// Backend connections opened for a request.
    opened: AtomicU64,
    /// Requests sent over a backend connection kept open from an earlier one.
    reused: AtomicU64,
}

impl BackendConnections {
    fn count_opened(&self) {
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    fn count_reused(&self) {
        self.reused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }
}

/// Idle backend connections, by backend.
#[derive(Default)]
pub struct Idle(Mutex<HashMap<SocketAddr, Vec<SendRequest<Incoming>>>>);

/// The backend that answered, in its response's extensions (an affinity cookie names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served(pub SocketAddr);

/// Where a request comes from.
pub struct Origin {
    /// The real client: the backend is picked by its address, and a PROXY header names it.
    pub client: SocketAddr,
    /// The listener address the client reached (a PROXY header's destination).
    pub local: SocketAddr,
    /// Backend connections that serve this client connection alone.
    pub own: Arc<Idle>,
}

impl Upstream {
    pub fn new(port: u16, send_proxy: SendProxy, timeouts: Timeouts) -> Upstream {
        Upstream {
            port,
            send_proxy,
            timeouts,
            shared: Arc::default(),
        }
    }

    /// Sends `req` to the client's backend and returns its response, whose body hands the
    /// backend connection back once it is done. With `upgrade` the connection is handed over
    /// with the response (WebSocket) and never reused.
    pub async fn send(
        &self,
        pool: &Pool,
        origin: &Origin,
        prefer: Option<Prefer>,
        req: Request<Incoming>,
        upgrade: bool,
        counts: &BackendConnections,
    ) -> Result<Response<BackendBody>, StatusCode> {
        let idle = match self.send_proxy {
            SendProxy::Off => &self.shared,
            SendProxy::V2 => &origin.own,
        };
        let (backend, mut sender) = self
            .sender(pool, origin, prefer, idle, upgrade, counts)
            .await?;
        // Without a request body the connection is ready as soon as the response is read: the
        // response body may wait for that. With one, a backend that answered early waits for
        // the rest of it, which a client expecting `100 Continue` never sends.
        let bodiless = req.body().is_end_stream();
        let mut resp = match tokio::time::timeout(self.timeouts.response, sender.send_request(req))
            .await
        {
            Ok(Ok(resp)) => resp,
            Ok(Err(error)) => {
                tracing::info!(%backend, %error, "backend request failed");
                return Err(StatusCode::BAD_GATEWAY);
            }
            Err(_) => {
                tracing::info!(%backend, timeout = ?self.timeouts.response, "backend did not answer in time");
                return Err(StatusCode::GATEWAY_TIMEOUT);
            }
        };
        resp.extensions_mut().insert(Served(backend));
        let back = (!upgrade).then(|| Back {
            idle: Arc::clone(idle),
            backend,
            sender,
            wait: bodiless,
        });
        Ok(resp.map(|inner| BackendBody {
            inner,
            inner_done: false,
            last: None,
            back,
        }))
    }

    /// An idle connection to the client's backend, or a new one; when the backend cannot be
    /// connected, a new one to the next backend.
    async fn sender(
        &self,
        pool: &Pool,
        origin: &Origin,
        prefer: Option<Prefer>,
        idle: &Idle,
        fresh: bool,
        counts: &BackendConnections,
    ) -> Result<(SocketAddr, SendRequest<Incoming>), StatusCode> {
        // The affinity's backend or key, else the client's; a failed first backend is
        // replaced by the pool's next choice for the same key.
        let key = match prefer {
            Some(Prefer::Key(key)) => key,
            _ => Key::Client(origin.client.ip()),
        };
        let first = match prefer {
            Some(Prefer::Backend(b)) => b,
            _ => pool
                .pick(key, None)
                .ok_or(StatusCode::SERVICE_UNAVAILABLE)?,
        };
        let first = SocketAddr::new(first, self.port);
        if !fresh {
            if let Some(s) = idle.take(first) {
                counts.count_reused();
                return Ok((first, s));
            }
        }
        counts.count_opened();
        let header = match self.send_proxy {
            SendProxy::Off => None,
            SendProxy::V2 => Some(proxy_v2(origin.client, origin.local).map_err(|error| {
                tracing::error!(%error, "writing a PROXY v2 header");
                StatusCode::BAD_GATEWAY
            })?),
        };
        let timeout = self.timeouts.connect;
        match connect(first, header.as_deref(), timeout).await {
            Ok(s) => Ok((first, s)),
            Err(error) => {
                tracing::info!(backend = %first, %error, "backend connect failed; trying another");
                let second = pool
                    .pick(key, Some(first.ip()))
                    .ok_or(StatusCode::BAD_GATEWAY)?;
                let second = SocketAddr::new(second, self.port);
                connect(second, header.as_deref(), timeout)
                    .await
                    .map(|s| (second, s))
                    .map_err(|_| StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// Closes the idle connections to every backend `keep` refuses (drained, down or gone):
    /// it gets no new requests, and its pooled connections should not linger. (Connections
    /// owned by a client connection are never picked for such a backend again and close with
    /// their client connection.)
    pub fn retain(&self, keep: impl Fn(IpAddr) -> bool) {
        let mut idle = self.shared.0.lock().unwrap_or_else(PoisonError::into_inner);
        idle.retain(|addr, _| keep(addr.ip()));
    }
}

impl Idle {
    fn take(&self, backend: SocketAddr) -> Option<SendRequest<Incoming>> {
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
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
        let mut idle = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(backend).or_default();
        if list.len() < MAX_IDLE {
            list.push(sender);
        }
    }
}

/// A backend response body that puts its connection back in the idle list when it is done
/// (or, dropped early, once the connection turns out ready).
pub struct BackendBody {
    inner: Incoming,
    /// The inner body returned its last frame (held in `last` until it is taken) or its end.
    inner_done: bool,
    last: Option<Frame<Bytes>>,
    /// `None` once handed back, and for an upgrade's connection.
    back: Option<Back>,
}

struct Back {
    idle: Arc<Idle>,
    backend: SocketAddr,
    sender: SendRequest<Incoming>,
    /// The body ends only once the connection is ready (see [`Upstream::send`]); else a
    /// connection not ready at once is handed back by a task of its own.
    wait: bool,
}

impl Back {
    /// Hands the connection back when it is ready, from a task of its own.
    fn later(mut self) {
        // Dropped outside a runtime (never while serving): the connection just closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if self.sender.ready().await.is_ok() {
                    self.idle.put_back(self.backend, self.sender);
                }
            });
        }
    }
}

impl Body for BackendBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if !this.inner_done {
            match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                // The last frame of a body of known length is held until the connection
                // went back, and then leaves as the end: an h2 client gets it in the DATA
                // frame that ends the stream, not followed by an empty one.
                Some(Ok(frame)) if this.inner.is_end_stream() => {
                    this.inner_done = true;
                    this.last = Some(frame);
                }
                Some(Ok(frame)) => return Poll::Ready(Some(Ok(frame))),
                Some(Err(e)) => {
                    // A broken response: the connection is not reused.
                    this.back = None;
                    return Poll::Ready(Some(Err(e)));
                }
                None => this.inner_done = true,
            }
        }
        if let Some(back) = &mut this.back {
            // hyper's connection task marks the connection ready right after it read the
            // response's end, which usually happened before this body even started.
            match back.sender.poll_ready(cx) {
                Poll::Ready(r) => {
                    if let Some(back) = this.back.take() {
                        if r.is_ok() {
                            back.idle.put_back(back.backend, back.sender);
                        }
                    }
                }
                Poll::Pending if back.wait => return Poll::Pending,
                Poll::Pending => {
                    if let Some(back) = this.back.take() {
                        back.later();
                    }
                }
            }
        }
        Poll::Ready(this.last.take().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        // Not before the connection went back: the end is where that happens.
        self.back.is_none()
            && self.last.is_none()
            && (self.inner_done || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.last {
            Some(frame) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                SizeHint::with_exact(len)
            }
            None if self.inner_done => SizeHint::with_exact(0),
            None => self.inner.size_hint(),
        }
    }
}

impl Drop for BackendBody {
    fn drop(&mut self) {
        if let Some(back) = self.back.take() {
            if back.sender.is_ready() {
                back.idle.put_back(back.backend, back.sender);
            } else {
                back.later();
            }
        }
    }
}

/// A PROXY v2 header naming `client` and the listener address it reached. The header carries
/// one address family: when they differ, both are written as IPv6 (IPv4-mapped).
fn proxy_v2(
    client: SocketAddr,
    local: SocketAddr,
) -> Result<Vec<u8>, lb_common::proxy::parse::Error> {
    let (source, destination) = if client.is_ipv4() == local.is_ipv4() {
        (client, local)
    } else {
        (as_v6(client), as_v6(local))
    };
    let mut buf = [0u8; 64];
    let n = write_v2(&mut buf, Command::Proxy, source, destination, &[], false)?;
    Ok(buf[..n].to_vec())
}

fn as_v6(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V4(v4) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        v6 @ SocketAddr::V6(_) => v6,
    }
}

async fn connect(
    backend: SocketAddr,
    proxy_header: Option<&[u8]>,
    timeout: Duration,
) -> Result<SendRequest<Incoming>, String> {
    let mut stream = tokio::time::timeout(timeout, TcpStream::connect(backend))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    if let Some(h) = proxy_header {
        // One write, so the header travels in the first segment (the kernel of a gateway in
        // front of the backend judges the header there).
        stream.write_all(h).await.map_err(|e| e.to_string())?;
    }
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

#[cfg(test)]
mod tests {
    use lb_common::proxy::parse::{parse, Addresses, Header};

    use super::*;

    fn named(h: &[u8]) -> (SocketAddr, SocketAddr) {
        let p = parse(h).unwrap();
        assert_eq!(p.len, h.len());
        match p.header {
            Header::V2(v) => match v.addresses {
                Addresses::Inet {
                    source,
                    destination,
                } => (source, destination),
                other => panic!("{other:?}"),
            },
            Header::V1(v) => panic!("{v:?}"),
        }
    }

    #[test]
    fn the_header_names_client_and_listener_in_one_family() {
        let c4: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let l4: SocketAddr = "198.18.0.1:443".parse().unwrap();
        let c6: SocketAddr = "[2001:db8::2]:40001".parse().unwrap();
        let l6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(named(&proxy_v2(c4, l4).unwrap()), (c4, l4));
        assert_eq!(named(&proxy_v2(c6, l6).unwrap()), (c6, l6));
        // A client named by an IPv6 PROXY header on an IPv4 listener.
        let l4_mapped: SocketAddr = "[::ffff:198.18.0.1]:443".parse().unwrap();
        assert_eq!(named(&proxy_v2(c6, l4).unwrap()), (c6, l4_mapped));
    }
}
