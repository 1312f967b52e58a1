use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::IpAddr,
    os::unix::net::{UnixListener as StdListener, UnixStream as StdStream},
};

use super::*;
use crate::admin::{
    client,
    protocol::{FlowQuery, FlowSort},
};
use crate::test_support::Scratch;

/// The admin socket's path in `dir`.
fn socket(dir: &Scratch) -> PathBuf {
    dir.path("admin.sock")
}

/// Answers every request with the request itself, so a round trip proves both directions.
fn echo() -> Arc<dyn Handler> {
    Arc::new(|request: Request| Response::data(&request))
}

/// The client blocks, so it runs off the runtime's worker threads.
async fn ask(path: &Path, request: Request) -> Result<Response, client::ClientError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || client::request(&path, &request, Duration::from_secs(5)))
        .await
        .unwrap()
}

/// Sends raw bytes and returns the raw answer line.
async fn raw(path: &Path, bytes: &'static [u8]) -> Response {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = StdStream::connect(&path).unwrap();
        stream.write_all(bytes).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_round_trips() {
    let dir = Scratch::new();
    let server = AdminServer::bind(&socket(&dir), echo()).await.unwrap();
    let backend: IpAddr = "198.18.10.2".parse().unwrap();
    let requests = [
        Request::Status,
        Request::Backends,
        Request::Drain {
            vip: "web".into(),
            backend,
        },
        Request::Undrain {
            vip: "web".into(),
            backend,
        },
        Request::Flows(FlowQuery {
            vip: Some("web".into()),
            limit: 7,
            ..FlowQuery::default()
        }),
        Request::Flows(FlowQuery {
            vip: None,
            limit: 100,
            backend: Some("198.18.10.2".parse().unwrap()),
            client: Some("10.0.0.0/8".parse().unwrap()),
            sort: Some(FlowSort::Idle),
        }),
        Request::Stats,
        Request::Reload,
    ];
    for request in requests {
        let response = ask(server.path(), request.clone()).await.unwrap();
        assert!(response.ok, "{response:?}");
        let echoed: Request = serde_json::from_value(response.data.unwrap()).unwrap();
        assert_eq!(echoed, request);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn handler_errors_reach_the_client() {
    let dir = Scratch::new();
    let handler: Arc<dyn Handler> = Arc::new(|_: Request| Response::error("no VIP named api"));
    let server = AdminServer::bind(&socket(&dir), handler).await.unwrap();
    let response = ask(server.path(), Request::Backends).await.unwrap();
    assert_eq!(response, Response::error("no VIP named api"));
}

#[tokio::test(flavor = "multi_thread")]
async fn panicking_handler_answers_internal_error() {
    let dir = Scratch::new();
    let handler: Arc<dyn Handler> = Arc::new(|_: Request| -> Response { panic!("boom") });
    let server = AdminServer::bind(&socket(&dir), handler).await.unwrap();
    let response = ask(server.path(), Request::Status).await.unwrap();
    assert!(!response.ok);
    assert!(response.error.unwrap().starts_with("internal error"));
    // The server survives a panicking handler.
    assert!(!ask(server.path(), Request::Status).await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_is_owner_only_and_parent_is_created_0700() {
    let dir = Scratch::new();
    let path = dir.path("run").join("sluice").join("admin.sock");
    let server = AdminServer::bind(&path, echo()).await.unwrap();
    let mode = std::fs::metadata(server.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let parent = std::fs::metadata(path.parent().unwrap()).unwrap();
    // The umask can only take bits away from 0700.
    assert_eq!(parent.permissions().mode() & 0o077, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_socket_is_replaced() {
    let dir = Scratch::new();
    let path = socket(&dir);
    // A killed daemon leaves its socket file behind: nothing accepts on it any more.
    drop(StdListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = AdminServer::bind(&path, echo()).await.unwrap();
    assert!(ask(server.path(), Request::Status).await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn second_daemon_is_refused() {
    let dir = Scratch::new();
    let path = socket(&dir);
    let first = AdminServer::bind(&path, echo()).await.unwrap();
    let Err(err) = AdminServer::bind(&path, echo()).await else {
        panic!("a second bind on a live socket succeeded");
    };
    assert!(matches!(err, AdminError::AlreadyRunning { .. }));
    assert!(
        err.to_string().starts_with(&format!(
            "another sluice daemon is listening on {}",
            path.display()
        )),
        "{err}"
    );
    // The probe did not disturb the first daemon.
    assert!(ask(first.path(), Request::Status).await.unwrap().ok);
}

#[tokio::test(flavor = "multi_thread")]
async fn regular_file_is_left_alone() {
    let dir = Scratch::new();
    let path = socket(&dir);
    std::fs::write(&path, "precious").unwrap();
    let Err(err) = AdminServer::bind(&path, echo()).await else {
        panic!("bind replaced a regular file");
    };
    assert!(matches!(err, AdminError::NotASocket { .. }));
    assert!(err.to_string().contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "precious");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_requests_get_bad_request() {
    let dir = Scratch::new();
    let server = AdminServer::bind(&socket(&dir), echo()).await.unwrap();
    for bytes in [&b"not json\n"[..], b"{\"command\":\"explode\"}\n", b"\n"] {
        let response = raw(server.path(), bytes).await;
        assert!(!response.ok);
        let error = response.error.unwrap();
        assert!(error.starts_with("bad request: "), "{error}");
    }
    // A final line without a newline is still a request.
    let response = raw(server.path(), b"{\"command\":\"status\"}").await;
    assert!(response.ok, "{response:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_request_is_refused() {
    static HUGE: [u8; 70 * 1024] = [b' '; 70 * 1024];
    let dir = Scratch::new();
    let server = AdminServer::bind(&socket(&dir), echo()).await.unwrap();
    let response = raw(server.path(), &HUGE).await;
    assert_eq!(
        response.error.unwrap(),
        "bad request: request longer than 64 KiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_and_shutdown_remove_the_socket() {
    let dir = Scratch::new();
    let path = socket(&dir);
    drop(AdminServer::bind(&path, echo()).await.unwrap());
    assert!(!path.exists());
    AdminServer::bind(&path, echo())
        .await
        .unwrap()
        .shutdown()
        .await;
    assert!(!path.exists());
    let err = ask(&path, Request::Status).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "no sluice daemon is running (nothing listening on {})",
            path.display()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_spares_a_successors_socket() {
    let dir = Scratch::new();
    let path = socket(&dir);
    let old = AdminServer::bind(&path, echo()).await.unwrap();
    // Someone replaced the file under the old server (e.g. the operator removed it and a new
    // daemon bound); the old server's Drop must not unlink the new socket.
    std::fs::remove_file(&path).unwrap();
    let new = AdminServer::bind(&path, echo()).await.unwrap();
    drop(old);
    assert!(ask(new.path(), Request::Status).await.unwrap().ok);
}
