use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use super::{route, serve, JSON};
use crate::metrics;
use crate::observe::{Observe, Snapshot};

/// An [`Observe`] whose answer the test changes between requests.
struct Fake(Mutex<Result<Snapshot, String>>);

impl Fake {
    fn new(snapshot: Result<Snapshot, String>) -> Fake {
        Fake(Mutex::new(snapshot))
    }

    fn edit(&self, f: impl FnOnce(&mut Snapshot)) {
        f(self.0.lock().unwrap().as_mut().unwrap());
    }
}

impl Observe for Fake {
    fn snapshot(&self) -> Result<Snapshot, String> {
        self.0.lock().unwrap().clone()
    }
}

fn healthy() -> Fake {
    Fake::new(Ok(metrics::tests::snapshot()))
}

fn get_json(path: &str, source: &Fake) -> (StatusCode, Value) {
    let reply = route(&Method::GET, path, source);
    assert_eq!(reply.content_type, JSON, "{path}");
    (reply.status, serde_json::from_str(&reply.body).unwrap())
}

fn check<'a>(body: &'a Value, name: &str) -> &'a Value {
    let checks = body["checks"].as_array().unwrap();
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{name}: {body}"))
}

#[test]
fn live_and_started_are_up_when_the_dataplane_is_in_place() {
    let source = healthy();
    let (status, body) = get_json("/health/live", &source);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "UP");
    assert_eq!(check(&body, "sluice daemon")["data"]["instance"], "edge1");

    let (status, body) = get_json("/health/started", &source);
    assert_eq!(status, StatusCode::OK, "{body}");

    source.edit(|s| s.attached = false);
    let (status, body) = get_json("/health/started", &source);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], "DOWN");
    assert_eq!(check(&body, "dataplane")["data"]["attached"], false);
    // Liveness does not depend on the dataplane: restarting would not help.
    assert_eq!(get_json("/health/live", &source).0, StatusCode::OK);
}

#[test]
fn ready_has_one_check_per_vip() {
    let source = healthy();
    source.edit(|s| s.backends.retain(|b| b.vip == "web"));
    let (status, body) = get_json("/health/ready", &source);
    // The fixture's `dns` VIP now has no backend: it is DOWN, and so is readiness.
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let web = check(&body, "vip web");
    assert_eq!(web["status"], "UP");
    assert_eq!(web["data"]["backends_up"], 1);
    assert_eq!(web["data"]["backends_total"], 2);
    assert_eq!(check(&body, "vip dns")["status"], "DOWN");
    assert_eq!(check(&body, "dataplane")["status"], "UP");
    assert_eq!(check(&body, "shutdown")["status"], "UP");

    source.edit(|s| {
        s.status.vips.retain(|v| v.name == "web");
    });
    let (status, body) = get_json("/health/ready", &source);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "UP");

    source.edit(|s| s.shutting_down = true);
    let (status, body) = get_json("/health/ready", &source);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(check(&body, "shutdown")["status"], "DOWN");
}

/// A checked backend is up from the start (no flow is blackholed while the first probes
/// run) but makes its VIP ready only once a probe passed; an unchecked one needs none.
#[test]
fn a_vip_whose_only_taking_backend_has_passed_no_probe_is_not_ready() {
    let source = healthy();
    source.edit(|s| s.status.vips.retain(|v| v.name == "web"));
    let (status, body) = get_json("/health/ready", &source);
    assert_eq!(status, StatusCode::OK, "unchecked: ready at once: {body}");
    assert_eq!(check(&body, "vip web")["data"]["backends_ready"], 1);
    source.edit(|s| {
        for b in s.backends.iter_mut().filter(|b| b.vip == "web") {
            b.unproven = true;
        }
    });
    let (status, body) = get_json("/health/ready", &source);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let web = check(&body, "vip web");
    assert_eq!(web["status"], "DOWN", "{body}");
    assert_eq!(
        web["data"]["backends_taking_new_flows"], 1,
        "it still takes flows"
    );
    assert_eq!(web["data"]["backends_ready"], 0);
    assert!(!super::ready(&source), "sd_notify's READY=1 waits too");
    // Its first probe passed.
    source.edit(|s| {
        for b in s.backends.iter_mut().filter(|b| b.vip == "web") {
            b.unproven = false;
        }
    });
    assert_eq!(get_json("/health/ready", &source).0, StatusCode::OK);
    assert!(super::ready(&source));
}

#[test]
fn a_vip_whose_up_backends_all_weigh_zero_is_not_ready() {
    let source = healthy();
    source.edit(|s| s.status.vips.retain(|v| v.name == "web"));
    assert_eq!(get_json("/health/ready", &source).0, StatusCode::OK);
    // `web`'s one up backend weighted 0 (its other one is draining): it is in no table slot,
    // so every new flow is dropped.
    source.edit(|s| {
        for b in s.backends.iter_mut().filter(|b| b.vip == "web") {
            b.weight = 0;
        }
    });
    let (status, body) = get_json("/health/ready", &source);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let web = check(&body, "vip web");
    assert_eq!(web["status"], "DOWN", "{body}");
    assert_eq!(web["data"]["backends_up"], 1);
    assert_eq!(web["data"]["backends_taking_new_flows"], 0);
}

#[test]
fn health_aggregates_every_check_once() {
    let source = healthy();
    source.edit(|s| s.status.vips.retain(|v| v.name == "web"));
    let (status, body) = get_json("/health", &source);
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "UP");
    let names: Vec<&str> = body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["sluice daemon", "dataplane", "vip web", "shutdown"]);
    // Any check DOWN takes the whole report DOWN, as in Keycloak.
    source.edit(|s| s.shutting_down = true);
    let (status, body) = get_json("/health", &source);
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "DOWN");
    assert_eq!(check(&body, "sluice daemon")["status"], "UP");
}

#[test]
fn a_snapshot_error_is_down_with_the_reason() {
    let source = Fake::new(Err("reading sluice_backends_v1: EPERM".into()));
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/health/started",
    ] {
        let (status, body) = get_json(path, &source);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(body["status"], "DOWN");
        let error = &body["checks"][0]["data"]["error"];
        assert_eq!(error, "reading sluice_backends_v1: EPERM", "{path}");
    }
    let reply = route(&Method::GET, "/metrics", &source);
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(reply.body.contains("EPERM"), "{}", reply.body);
}

#[test]
fn only_reads_known_paths() {
    let source = healthy();
    let reply = route(&Method::GET, "/metrics", &source);
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.content_type, metrics::CONTENT_TYPE);
    assert!(reply.body.contains("sluice_ready 1"), "{}", reply.body);
    assert_eq!(
        route(&Method::HEAD, "/health/live", &source).status,
        StatusCode::OK
    );
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let reply = route(&method, "/metrics", &source);
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    assert_eq!(
        route(&Method::GET, "/", &source).status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        route(&Method::GET, "/health/other", &source).status,
        StatusCode::NOT_FOUND
    );
}

/// One request on a fresh connection: (status, headers, body).
async fn request(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
) -> (StatusCode, hyper::HeaderMap, Bytes) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test]
async fn serve_answers_over_http_until_shutdown() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let source = healthy();
    source.edit(|s| s.status.vips.retain(|v| v.name == "web"));
    let server = tokio::spawn(serve(listener, Arc::new(source), shutdown));

    let (status, headers, body) = request(addr, Method::GET, "/health/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["status"], "UP");

    let (status, headers, body) = request(addr, Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    // No Accept header: the Prometheus text format.
    assert_eq!(
        headers["content-type"],
        crate::metrics::exposition::PROMETHEUS_CONTENT_TYPE
    );
    assert!(!body.ends_with(b"# EOF\n"));

    let (status, headers, body) = request(addr, Method::HEAD, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_ne!(headers["content-length"], "0");

    let (status, headers, _) = request(addr, Method::POST, "/metrics").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["allow"], "GET, HEAD");

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns on shutdown")
        .unwrap();
}
