//! One edge listener: accept, terminate TLS, rewrite the request's trust-carrying headers and
//! proxy it to a backend of the pool.
//!
//! Every request is judged and cleaned first (`request_head`: authority, hop-by-hop headers,
//! upgrades), then loses whatever client-certificate and forwarded headers the client sent,
//! in any spelling (`managed`), before sluice adds its own: a backend behind sluice can take
//! them at face value.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::{
    body::Incoming,
    header::{self, HeaderName, HeaderValue},
    service::service_fn,
    upgrade::OnUpgrade,
    Request, Response, StatusCode,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tracing::Instrument as _;

use crate::{
    config::{
        client_cert::{ChainSettings, Format, Names},
        Limits, ProxyProtocol,
    },
    shutdown::NodeState,
};

use super::{
    backend_head::{self, NotForwarded, Vouched},
    client_cert::{self, ClientCert},
    client_timeouts::{self, Activity, Expired, Holding, Watched},
    forward_auth::Check,
    forwarded::{Hop, Policy, Untrusted},
    graceful::{self, Ending},
    managed::Managed,
    pool::Pool,
    proxy_header,
    request_head::{self, Refused},
    route::Table,
    stats::{EdgeStats, Metered},
    tls::{PathError, Reloadable, VerifiedChain, HANDSHAKE_TIMEOUT},
    upstream::{Origin, Served, Upstream},
};

type Body = BoxBody<Bytes, hyper::Error>;

/// What a listener needs, fixed for its lifetime (a reload builds a new one).
pub struct Listener {
    pub name: String,
    pub tls: Option<Arc<Reloadable>>,
    pub formats: Vec<Format>,
    pub names: Names,
    /// What of a verified client certificate's path the chain headers carry.
    pub chain: ChainSettings,
    /// Which forwarded headers are written, and whose are believed.
    pub forwarded: Policy,
    /// Which requests are proxied, where, and which sluice answers itself.
    pub routes: Table,
    /// The listener's pool and its backend connections: routes without a pool of their own
    /// send there.
    pub pool: Arc<Pool>,
    pub upstream: Arc<Upstream>,
    /// PROXY headers before TLS, read from `forwarded.trusted_proxies` only.
    pub proxy_protocol: ProxyProtocol,
    /// What `/metrics` reports for the listener; the daemon keeps it across reloads, and a
    /// shutdown waits for its open connections.
    pub stats: Arc<EdgeStats>,
    /// The node's shutdown phase (see `graceful`).
    pub phase: watch::Receiver<NodeState>,
    /// How long a client may take over a request head, or stay idle.
    pub limits: Limits,
    /// Connections open at once (counted in `stats`, across reloads); more are closed as soon
    /// as they are accepted.
    pub max_connections: u64,
}

/// What one connection established, shared by its requests.
struct Conn {
    listener: Arc<Listener>,
    peer: SocketAddr,
    /// The client (the PROXY header's source when a trusted peer sent one, else `peer`), the
    /// address it reached, and backend connections of its own.
    origin: Origin,
    /// The client-certificate headers for this connection's verified certificate (or its
    /// absence), built once: the certificate cannot change within a connection. `Err` when
    /// they cannot be built; every request then fails with 502.
    cert_headers: Result<Vec<(HeaderName, HeaderValue)>, String>,
    /// The header names sluice vouches for, whose client copies are removed.
    managed: Arc<Managed>,
    /// The authority requests without one (HTTP/1.0) are served under.
    own_authority: String,
    /// The port the client connected to: the listener's, or the upstream balancer's frontend
    /// port a PROXY header named (`X-Forwarded-Port`).
    public_port: u16,
    /// The forwarded headers for an untrusted client, built once (`None`: a trusted one, whose
    /// requests' own forwarded headers are read each time).
    untrusted: Option<Untrusted>,
    /// The TLS server name the client sent.
    sni: Option<String>,
}

impl Conn {
    fn new(
        listener: Arc<Listener>,
        peer: SocketAddr,
        origin: Origin,
        managed: Arc<Managed>,
        cert_headers: Result<Vec<(HeaderName, HeaderValue)>, String>,
        own_authority: String,
        public_port: u16,
    ) -> Conn {
        let mut conn = Conn {
            listener,
            peer,
            origin,
            cert_headers,
            managed,
            own_authority,
            public_port,
            untrusted: None,
            sni: None,
        };
        conn.untrusted = Untrusted::for_connection(&conn.listener.forwarded, &conn.hop());
        conn
    }

    /// This hop, as the forwarded headers describe it.
    fn hop(&self) -> Hop {
        Hop {
            peer: self.peer,
            client: self.origin.client,
            proto: if self.listener.tls.is_some() {
                "https"
            } else {
                "http"
            },
            listener_port: self.public_port,
            by: Some(self.origin.local),
        }
    }
}

/// Accepts connections until the node closes (or the task is dropped); connections already
/// accepted go on, tracked, until they end.
pub async fn serve(socket: TcpListener, listener: Arc<Listener>) {
    let managed = Arc::new(Managed::new(&listener.names));
    let mut phase = listener.phase.clone();
    loop {
        let accepted = tokio::select! {
            a = socket.accept() => a,
            closed = phase.wait_for(|p| *p == NodeState::Closed) => {
                if closed.is_ok() {
                    let queued = take_queued(socket);
                    tracing::info!(
                        listener = %listener.name,
                        queued = queued.len(),
                        "closed: no longer accepting"
                    );
                    for (stream, peer) in queued {
                        admit(stream, peer, &listener, &managed);
                    }
                }
                return;
            }
        };
        match accepted {
            Ok((stream, peer)) => admit(stream, peer, &listener, &managed),
            Err(error) => {
                tracing::warn!(listener = %listener.name, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves one accepted connection on a task of its own, tracked in the listener's counts.
fn admit(stream: TcpStream, peer: SocketAddr, listener: &Arc<Listener>, managed: &Arc<Managed>) {
    // Over the limit the connection is closed at once (and counted), never queued: the
    // client can go elsewhere now rather than time out.
    let Some(open) = listener.stats.try_open(listener.max_connections) else {
        tracing::debug!(listener = %listener.name, %peer, "max_connections open: refused");
        return;
    };
    let span = connection_span(&listener.name, peer);
    let listener = Arc::clone(listener);
    let managed = Arc::clone(managed);
    tokio::spawn(
        async move {
            let _open = open;
            if let Err(error) = connection(stream, peer, listener, managed).await {
                tracing::debug!(%error, "edge connection ended with an error");
            }
        }
        .instrument(span),
    );
}

/// The span every log line of one edge connection carries: `conn{listener=idp peer=... id=7}`.
/// Created once per connection (not per request), so keep-alive requests pay nothing for it.
fn connection_span(listener: &str, peer: SocketAddr) -> tracing::Span {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    tracing::info_span!("conn", %listener, %peer, id)
}

/// The span of one request within its connection's: `request{method=GET path=/x}`. At debug
/// level only: below it `debug_span!` is a cached callsite check that evaluates no field
/// and returns a disabled span, so the keep-alive hot path pays nothing for it.
fn request_span<B>(req: &Request<B>) -> tracing::Span {
    tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
}

/// Closes the listening socket, first taking every connection the kernel already completed.
/// Their clients consider them established and may have sent a request already: closing the
/// socket with them queued would reset them, and a proxy in front may not retry a
/// non-idempotent request it already sent.
fn take_queued(socket: TcpListener) -> Vec<(TcpStream, SocketAddr)> {
    let mut queued = Vec::new();
    // Nonblocking, as tokio leaves it.
    let Ok(socket) = socket.into_std() else {
        return queued;
    };
    loop {
        match socket.accept() {
            Ok((stream, peer)) => {
                let stream = stream
                    .set_nonblocking(true)
                    .and_then(|()| TcpStream::from_std(stream));
                match stream {
                    Ok(s) => queued.push((s, peer)),
                    Err(error) => tracing::warn!(%peer, %error, "queued connection lost"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return queued,
        }
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<Listener>,
    managed: Arc<Managed>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let local = stream.local_addr()?;
    let _ = stream.set_nodelay(true);
    let trusted = listener.forwarded.trusts(peer.ip());
    let client = proxy_header::client(
        &mut stream,
        peer,
        listener.proxy_protocol,
        trusted,
        &listener.stats.proxy,
        proxy_header::HEADER_TIMEOUT,
    )
    .await?;
    // The address the client reached: the upstream balancer's frontend when a PROXY header
    // says which, else the listener.
    let reached = client.reached.unwrap_or(local);
    let public_port = reached.port();
    let client = client.addr;
    let Some(tls) = &listener.tls else {
        let conn = Arc::new(Conn::new(
            Arc::clone(&listener),
            peer,
            origin(client, local),
            managed,
            cert_headers(&listener, None),
            request_head::own_authority(None, reached, false),
            public_port,
        ));
        return http(stream, conn, false).await;
    };
    let (stream, tls) = match tls.handshake(stream, HANDSHAKE_TIMEOUT).await {
        Ok(s) => s,
        Err(e) => {
            listener.stats.handshake_failed(e.outcome());
            return Err(e.into());
        }
    };
    let chain = tls.peer_chain(stream.get_ref().1);
    listener.stats.handshake_ok(chain.is_some());
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let server_name = stream.get_ref().1.server_name();
    let mut conn = Conn::new(
        Arc::clone(&listener),
        peer,
        origin(client, local),
        managed,
        cert_headers(&listener, chain.as_ref()),
        request_head::own_authority(server_name, reached, true),
        public_port,
    );
    conn.sni = server_name.map(str::to_owned);
    http(stream, Arc::new(conn), h2).await
}

fn origin(client: SocketAddr, local: SocketAddr) -> Origin {
    Origin {
        client,
        local,
        own: Arc::default(),
    }
}

/// The headers that carry `chain` (the verified leaf and the path verification built) to the
/// backend: the path's intermediates, then its anchor if the listener sends it.
fn cert_headers(
    listener: &Listener,
    chain: Option<&Result<VerifiedChain, PathError>>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let chain = chain
        .map(|c| c.as_ref().map_err(ToString::to_string))
        .transpose()?;
    let path: Vec<&[u8]> = chain
        .map(|c| {
            let anchor = listener.chain.anchor.then_some(&c.path.anchor);
            c.path
                .intermediates
                .iter()
                .chain(anchor)
                .map(AsRef::as_ref)
                .collect()
        })
        .unwrap_or_default();
    let cert = match chain {
        Some(c) => ClientCert::Verified {
            leaf: c.leaf.as_ref(),
            chain: &path,
        },
        None => ClientCert::None,
    };
    let (formats, names) = (&listener.formats, &listener.names);
    client_cert::headers(formats, names, &listener.chain.lengths, &cert).map_err(|e| e.to_string())
}

async fn http<S>(
    stream: S,
    conn: Arc<Conn>,
    h2: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = conn.listener.phase.clone();
    let activity = Activity::new();
    let io = TokioIo::new(Watched::new(stream, Arc::clone(&activity)));
    let watchdog = watchdog(Arc::clone(&activity), Arc::clone(&conn));
    let first_request = {
        let activity = Arc::clone(&activity);
        async move { activity.first_request().await }
    };
    let service = service_fn(move |req| {
        let conn = Arc::clone(&conn);
        // From the complete head until the response body is done: no client limit runs.
        let busy = activity.busy();
        let span = request_span(&req);
        async move {
            let http1 = req.version() < hyper::Version::HTTP_2;
            let mut resp = measured(req, &conn).instrument(span).await;
            // Draining: the client reconnects for its next request, through whichever
            // balancer now avoids this node. (An upgrade's 101 keeps its `Connection: upgrade`.)
            let draining = *conn.listener.phase.borrow() != NodeState::Serving;
            if http1 && draining && resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(resp.map(|body| Holding::new(body, busy)))
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let ended = graceful::drive(
        builder.serve_connection_with_upgrades(io, service),
        phase,
        h2,
        auto::UpgradeableConnection::graceful_shutdown,
        first_request,
        watchdog,
        client_timeouts::CUT_GRACE,
    )
    .await;
    // `None`: cut after a client limit passed, which the watchdog counted and logged.
    ended.unwrap_or(Ok(()))
}

/// Waits until the connection's client overstays a limit, counts it, and says how the
/// connection ends: a cut request head fails the stream's next read (after a 408 for
/// HTTP/1.x), an idle connection is asked to close.
async fn watchdog(activity: Arc<Activity>, conn: Arc<Conn>) -> Ending {
    let l = &conn.listener;
    let expired = client_timeouts::watchdog(&activity, l.limits).await;
    l.stats.timed_out(expired);
    tracing::debug!(listener = %l.name, peer = %conn.peer, kind = expired.as_str(), "client too slow: closing");
    match expired {
        Expired::RequestHeader => {
            activity.expire_head();
            Ending::Fails
        }
        Expired::Idle => Ending::Ask,
    }
}

/// [`handle`], counted: the response's status and time to headers when it is ready, and the
/// request in flight until its body is done.
async fn measured(req: Request<Incoming>, conn: &Conn) -> Response<Metered<Body>> {
    let in_flight = conn.listener.stats.request();
    let resp = handle(req, conn).await;
    in_flight.answered(resp.status());
    resp.map(|body| Metered::new(body, in_flight))
}

async fn handle(req: Request<Incoming>, conn: &Conn) -> Response<Body> {
    let l = &conn.listener;
    let (mut parts, body) = req.into_parts();
    let vouched = Vouched {
        managed: &conn.managed,
        cert_headers: &conn.cert_headers,
        forwarded: &l.forwarded,
        hop: conn.hop(),
        untrusted: conn.untrusted.as_ref(),
        own_authority: &conn.own_authority,
        routes: &l.routes,
        sni: conn.sni.as_deref(),
    };
    let (websocket, sticky, auth, to) = match backend_head::rewrite(&mut parts, &vouched) {
        Ok(forward) => (forward.websocket, forward.sticky, forward.auth, forward.to),
        Err(NotForwarded::Refused(refused)) => return refuse(l, refused),
        // No route, or a route sluice answers itself: the backend never sees such a request.
        Err(NotForwarded::Unrouted(unrouted)) => {
            tracing::debug!(listener = %l.name, ?unrouted, "request matched no route");
            l.stats.unrouted(unrouted);
            return status(unrouted.status());
        }
        Err(NotForwarded::Answer {
            status: code,
            location,
        }) => {
            let mut resp = status(code);
            if let Some(location) = location {
                resp.headers_mut().insert(header::LOCATION, location);
            }
            return resp;
        }
        Err(NotForwarded::CertHeaders(error)) => {
            tracing::warn!(listener = %l.name, %error, "client certificate headers");
            return status(StatusCode::BAD_GATEWAY);
        }
    };
    let set_cookies = match authorize(auth.as_ref(), &mut parts).await {
        Ok(cookies) => cookies,
        Err(denied) => return denied,
    };
    // A WebSocket upgrade: the backend's 101 hands both connections over to a byte copy.
    let upgrade = if websocket {
        parts.extensions.remove::<OnUpgrade>()
    } else {
        None
    };
    // The route's pool, whose backends alone may serve it (affinity included).
    let (pool, upstream) = match to {
        Some(t) => (&*t.pool, &*t.upstream),
        None => (&*l.pool, &*l.upstream),
    };
    // The route's affinity first; else hashed by the real client, so a trusted proxy's
    // clients spread like direct ones.
    let choice = sticky.map(|s| (s, s.choose(&parts.headers, pool)));
    let prefer = choice.and_then(|(_, c)| c.prefer);
    let req = Request::from_parts(parts, body);
    let mut resp = match upstream
        .send(
            pool,
            &conn.origin,
            prefer,
            req,
            upgrade.is_some(),
            &l.stats.backend,
        )
        .await
    {
        Ok(resp) => resp,
        Err(code) => return status(code),
    };
    // An affinity cookie places the session on the backend that answered.
    if let (Some((sticky, choice)), Some(served)) = (choice, resp.extensions().get::<Served>()) {
        if let Some(set) = sticky.answer(&choice, served.0.ip(), pool) {
            resp.headers_mut().append(header::SET_COOKIE, set);
        }
    }
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        // Only to the WebSocket upgrade asked for: a 101 to anything else (or to nothing)
        // would hand the client a tunnel past every header rule.
        let to_websocket = resp
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
        let Some(client_side) = upgrade.filter(|_| to_websocket) else {
            tracing::info!(listener = %l.name, "backend switched protocols without a WebSocket upgrade");
            return status(StatusCode::BAD_GATEWAY);
        };
        let backend_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(c), Ok(b)) = (client_side.await, backend_side.await) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(b)).await;
            }
        });
        let (mut parts, body) = resp.into_parts();
        append_cookies(&mut parts.headers, set_cookies);
        return Response::from_parts(parts, body.boxed());
    }
    let (mut parts, body) = resp.into_parts();
    request_head::remove_response_hop_by_hop(&mut parts.headers);
    append_cookies(&mut parts.headers, set_cookies);
    Response::from_parts(parts, body.boxed())
}

/// Forward authentication, when the route has it: the auth service's answer decides. The
/// `Set-Cookie` headers to pass on, or sluice's answer instead of the backend's.
async fn authorize(
    check: Option<&Check<'_>>,
    parts: &mut hyper::http::request::Parts,
) -> Result<Vec<HeaderValue>, Response<Body>> {
    let Some(check) = check else {
        return Ok(Vec::new());
    };
    check.run(parts).await.map_err(|denied| {
        let mut resp = status(denied.status);
        resp.headers_mut().extend(denied.headers);
        resp
    })
}

/// The auth service's `Set-Cookie` headers, beside the backend's.
fn append_cookies(headers: &mut hyper::HeaderMap, cookies: Vec<HeaderValue>) {
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie);
    }
}

/// sluice's own answer to a request it will not forward.
fn refuse(l: &Listener, refused: Refused) -> Response<Body> {
    tracing::debug!(listener = %l.name, reason = %refused, "request refused");
    status(refused.status())
}

fn status(code: StatusCode) -> Response<Body> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{code}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = code;
    resp
}

#[cfg(test)]
mod tests;
