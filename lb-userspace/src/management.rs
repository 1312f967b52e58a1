//! The management port: read-only HTTP for orchestrators and Prometheus.
//!
//! `/health/live`, `/health/ready`, `/health/started`, `/health` (all of them; JSON, 200 UP /
//! 503 DOWN) and `/metrics`
//! (`OpenMetrics` text). Nothing here changes the daemon: it only reads [`Observe`] snapshots.

mod probes;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::{self, exposition};
use crate::observe::{Observe, Snapshot};
use probes::Probe;

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// A client that sends no request head within this long is dropped (slow clients must not pin
/// connections forever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// One answer of the management port, independent of the HTTP plumbing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    fn text(status: StatusCode, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: TEXT,
            body: body.into(),
        }
    }
}

/// Answers `method path` from one snapshot of `source`. The body is the GET body also for HEAD:
/// hyper sends a HEAD response's headers (with that length) and never its body.
pub fn route(method: &Method, path: &str, source: &dyn Observe) -> Reply {
    let probe = Probe::from_path(path);
    if probe.is_none() && path != "/metrics" {
        return Reply::text(StatusCode::NOT_FOUND, "not found\n");
    }
    if method != Method::GET && method != Method::HEAD {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET or HEAD\n");
    }
    match probe {
        Some(probe) => health(probe, &source.health()),
        None => scrape(&source.snapshot()),
    }
}

/// Whether `/health/ready` would answer UP now: the daemon tells systemd it is ready by the
/// same checks (see `crate::sd_notify`).
pub fn ready(source: &dyn Observe) -> bool {
    probes::report(Probe::Ready, &source.health()).status == probes::Status::Up
}

fn health(probe: Probe, snapshot: &Result<Snapshot, String>) -> Reply {
    let report = probes::report(probe, snapshot);
    let status = match report.status {
        probes::Status::Up => StatusCode::OK,
        probes::Status::Down => StatusCode::SERVICE_UNAVAILABLE,
    };
    match serde_json::to_string(&report) {
        Ok(body) => Reply {
            status,
            content_type: JSON,
            body,
        },
        Err(e) => Reply::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding health: {e}\n"),
        ),
    }
}

fn scrape(snapshot: &Result<Snapshot, String>) -> Reply {
    let encoded = match snapshot {
        Ok(s) => metrics::encode(s).map_err(|e| format!("encoding metrics: {e}")),
        Err(e) => Err(format!("snapshot: {e}")),
    };
    match encoded {
        Ok(body) => Reply {
            status: StatusCode::OK,
            content_type: metrics::CONTENT_TYPE,
            body,
        },
        Err(e) => Reply::text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// Serves the management port on `listener` until `shutdown` becomes true (or its sender is
/// dropped), then lets in-flight requests finish for a short grace period.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn Observe>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            () = stopping(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let source = Arc::clone(&source);
                    connections.spawn(connection(stream, source, shutdown.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "management: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow with every scrape.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::debug!("management: aborting connections still open after the grace period");
    }
    // Dropping the set aborts whatever is left.
}

/// Completes once shutdown begins, or when its sender is gone (nobody could signal it any more).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not across the caller's awaits.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

async fn connection(
    stream: TcpStream,
    source: Arc<dyn Observe>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = service_fn(move |req: Request<Incoming>| {
        let source = Arc::clone(&source);
        async move { Ok::<_, Infallible>(respond(&req, source).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stopping(&mut shutdown) => {
            // Closes an idle keep-alive connection now, a busy one after its response.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "management: connection ended with an error");
    }
}

async fn respond(req: &Request<Incoming>, source: Arc<dyn Observe>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    // A probe reads only state the daemon keeps at hand (`Observe::health`): answered here,
    // with no hop through the blocking pool. A scrape reads kernel maps: kept off the async
    // workers.
    let reply = if Probe::from_path(&path).is_some() {
        route(&method, &path, &*source)
    } else {
        tokio::task::spawn_blocking(move || route(&method, &path, &*source))
            .await
            .unwrap_or_else(|e| {
                Reply::text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("snapshot task: {e}\n"),
                )
            })
    };
    let mut reply = reply;
    if reply.content_type == metrics::CONTENT_TYPE {
        let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
        if !exposition::wants_openmetrics(accept) {
            reply.body = exposition::prometheus_text(&reply.body);
            reply.content_type = exposition::PROMETHEUS_CONTENT_TYPE;
        }
    }
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = reply.status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
    if reply.status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    response
}
