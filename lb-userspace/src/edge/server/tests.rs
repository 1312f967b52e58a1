use std::io::{Read as _, Write as _};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::*;

#[tokio::test]
async fn closing_takes_the_connections_the_kernel_completed_instead_of_resetting_them() {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    // Established from the client's side, and a request already sent, before anything
    // accepted them.
    let mut clients: Vec<std::net::TcpStream> = (0..3)
        .map(|i| {
            let mut c = std::net::TcpStream::connect(address).unwrap();
            c.write_all(format!("request {i}").as_bytes()).unwrap();
            c
        })
        .collect();

    let queued = take_queued(socket);

    assert_eq!(
        queued.len(),
        clients.len(),
        "every completed connection taken"
    );
    for (mut stream, peer) in queued {
        let mut request = [0u8; 9];
        stream.read_exact(&mut request).await.unwrap();
        let i = clients
            .iter()
            .position(|c| c.local_addr().unwrap() == peer)
            .expect("the peer is one of the clients");
        assert_eq!(request, *format!("request {i}").as_bytes());
        stream.write_all(b"answer").await.unwrap();
        let mut answer = [0u8; 6];
        clients[i].read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"answer", "the client is answered, not reset");
    }
    assert!(
        std::net::TcpStream::connect(address).is_err(),
        "the listening socket is closed: later connections are refused"
    );
}

/// A log line inside a request names its connection (listener, peer, id) and the request
/// (method, path); the request span exists at debug level only, so the keep-alive path
/// builds none at the default `info`.
#[test]
fn log_lines_name_their_connection_and_request() {
    use tracing::level_filters::LevelFilter;

    use crate::test_log::captured;

    let peer: SocketAddr = "198.51.100.7:40001".parse().unwrap();
    let req = Request::get("/realms/x?y=1").body(()).unwrap();
    let ((), debug) = captured(LevelFilter::DEBUG, || {
        let conn = connection_span("idp", peer);
        conn.in_scope(|| {
            request_span(&req).in_scope(|| tracing::info!("backend request failed"));
        });
    });
    let line = debug.lines().next().unwrap_or_default();
    assert!(
        line.contains("conn{listener=idp peer=198.51.100.7:40001 id=")
            && line.contains("}:request{method=GET path=/realms/x}: backend request failed"),
        "{debug}"
    );

    let (disabled, info) = captured(LevelFilter::INFO, || {
        let conn = connection_span("idp", peer);
        conn.in_scope(|| {
            let request = request_span(&req);
            tracing::info!("backend request failed");
            request.is_disabled()
        })
    });
    assert!(disabled, "no request span at info");
    assert!(
        info.contains("conn{listener=idp peer=198.51.100.7:40001 id=")
            && !info.contains("request{"),
        "{info}"
    );
}
