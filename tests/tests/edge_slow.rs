//! Slow, idle and too many clients on the edge listener: the real `sluice run` in the gateway
//! namespace, driven from the client namespace by a small blocking rustls client that writes
//! raw HTTP/1.1 bytes and raw HTTP/2 frames, so it can stall exactly where a slowloris does.
//!
//! Each test starts its own lab with short limits (`request_header_timeout`, `idle_timeout`,
//! `max_connections`) and asserts what the client saw (the 408, a GOAWAY, the close, a refused
//! handshake) and what `/metrics` counted. The only times asserted are upper bounds: a cut
//! must come before its limit plus a margin, where today's listener waits forever.
//!
//! Needs root. Run with `cargo test -p sluice-tests --test edge_slow -- --test-threads=1`.

#![expect(
    clippy::float_cmp,
    reason = "metric values compared are small integer counts, exact in an f64"
)]

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_tests::{
    connect_tcp,
    edge_lab::{self, edge4, Listener, BACKEND_PORT, EDGE_PORT, SERVER_NAME},
    http_delay_backend, require_root,
};
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject as _, CertificateDer, ServerName},
    ClientConnection, StreamOwned,
};

/// The lab's one listener ([`edge4`]).
const EDGE: &str = "slow";
/// The edge lab's management port.
const MANAGEMENT: &str = "127.0.0.1:9019";
/// What the listener answers a cut HTTP/1.x head with, byte for byte.
const ANSWER_408: &str = "HTTP/1.1 408 Request Timeout\r\nconnection: close\r\n\
                          content-type: text/plain\r\ncontent-length: 20\r\n\r\n\
                          408 Request Timeout\n";
/// Added to a limit for the latest moment its cut may come: the 1 s the listener gives a cut
/// connection to write its answer and close, and scheduling on a busy test machine.
const MARGIN: Duration = Duration::from_secs(4);

/// The limits of the lab's one listener.
struct Limits {
    request_header: Duration,
    idle: Duration,
    max_connections: u32,
}

const SHORT: Limits = Limits {
    request_header: Duration::from_secs(1),
    idle: Duration::from_secs(2),
    max_connections: 100,
};

/// The edge lab with one TLS listener (`slow`, on [`edge4`], no client certificates) with
/// `limits`, and plain HTTP backends (`backend-<i>`; `/delay/<ms>` answers after `<ms>`).
struct Lab {
    lab: edge_lab::Lab,
}

impl Lab {
    fn start(prefix: &str, limits: &Limits) -> Lab {
        let mut listener = Listener::v4(EDGE, EDGE_PORT);
        listener.client_auth = "none";
        listener.formats = &[];
        listener.settings = vec![
            format!(
                "request_header_timeout = \"{}ms\"",
                limits.request_header.as_millis()
            ),
            format!("idle_timeout = \"{}ms\"", limits.idle.as_millis()),
            format!("max_connections = {}", limits.max_connections),
        ];
        let mut lab = edge_lab::Lab::start(prefix, &[listener]);
        lab.replace_backends(|ns, i| {
            http_delay_backend(ns, &format!("backend-{i}"), BACKEND_PORT).expect("HTTP backend")
        });
        Lab { lab }
    }

    /// Requests the backends answered so far (one connection each).
    fn served(&self) -> u64 {
        self.lab.backend_connections()
    }

    /// A TLS connection from the client namespace with `alpn`, handshake done.
    fn connect(&self, alpn: &[u8]) -> std::io::Result<Client> {
        let tcp = connect_tcp(self.lab.topo.client(), edge4()).map_err(std::io::Error::other)?;
        Client::handshake(tcp, self.lab.pki.ca_cert(), alpn)
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.lab
            .daemon
            .metric(
                self.lab.topo.gateway(),
                MANAGEMENT.parse().unwrap(),
                name,
                labels,
            )
            .expect("scrape /metrics")
    }

    fn timeouts(&self, kind: &str) -> f64 {
        self.metric(
            "sluice_edge_timeouts_total",
            &[("edge", EDGE), ("kind", kind)],
        )
    }

    /// Panics with the daemon's log when `ok` is false.
    fn check(&self, ok: bool, what: &str) {
        assert!(ok, "{what}\nsluice:\n{}", self.lab.daemon.log_text());
    }
}

/// A whole `200 OK` from one of the backends: their body is their name.
fn is_response(got: &[u8]) -> bool {
    got.starts_with(b"HTTP/1.1 200 OK\r\n")
        && (got.ends_with(b"\r\n\r\nbackend-0") || got.ends_with(b"\r\n\r\nbackend-1"))
}

/// How a connection's reading ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// TLS `close_notify`, or the TCP connection closed or reset: the listener let go.
    Closed,
    /// Still open when the client stopped waiting.
    StillOpen,
}

/// A blocking rustls client over a TCP socket of the client namespace.
struct Client {
    tls: StreamOwned<ClientConnection, TcpStream>,
}

impl Client {
    fn handshake(tcp: TcpStream, ca: &std::path::Path, alpn: &[u8]) -> std::io::Result<Client> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let conn = ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
        let mut tls = StreamOwned::new(conn, tcp);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        assert_eq!(tls.conn.alpn_protocol(), Some(alpn), "ALPN");
        Ok(Client { tls })
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// Reads for at most `wait`; returns what arrived and whether the connection closed.
    fn read_for(&mut self, wait: Duration) -> (Vec<u8>, Ended) {
        let until = Instant::now() + wait;
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (got, Ended::StillOpen);
            }
            self.tls
                .sock
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .unwrap();
            match self.tls.read(&mut buf) {
                Ok(0) => return (got, Ended::Closed),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return (got, Ended::Closed),
            }
        }
    }

    /// Reads one HTTP/1.1 response from a backend (its body is the backend's name).
    fn read_response(&mut self, wait: Duration) -> String {
        let mut got = Vec::new();
        let until = Instant::now() + wait;
        while !is_response(&got) && Instant::now() < until {
            let (more, ended) = self.read_for(Duration::from_millis(200));
            got.extend(more);
            if ended == Ended::Closed {
                break;
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Reads HTTP/2 frames until one matching `done` arrived (or `wait` passed); returns all
    /// read so far.
    fn read_frames_until(
        &mut self,
        wait: Duration,
        done: impl Fn(&Frame) -> bool,
    ) -> (Vec<Frame>, Ended) {
        let until = Instant::now() + wait;
        let mut bytes = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let (more, ended) = self.read_for(left.min(Duration::from_millis(200)));
            bytes.extend(more);
            let frames = frames(&bytes);
            if frames.iter().any(&done) || ended == Ended::Closed || Instant::now() >= until {
                return (frames, ended);
            }
        }
    }
}

/// One HTTP/2 frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The whole frames in `bytes`.
fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes.len() < 9 + len {
            break;
        }
        out.push(Frame {
            kind: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        });
        bytes = &bytes[9 + len..];
    }
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// HPACK for `GET https://kc.test/`: indexed `:method GET`, `:scheme https`, `:path /`, and
/// `:authority` as a literal with an indexed name.
fn get_block() -> Vec<u8> {
    let mut block = vec![
        0x82,
        0x87,
        0x84,
        0x41,
        u8::try_from(SERVER_NAME.len()).unwrap(),
    ];
    block.extend(SERVER_NAME.as_bytes());
    block
}

/// [`get_block`] for `path` instead of `/` (a literal with the indexed name `:path`).
fn get_path_block(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x44, u8::try_from(path.len()).unwrap()];
    block.extend(path.as_bytes());
    block.extend([0x41, u8::try_from(SERVER_NAME.len()).unwrap()]);
    block.extend(SERVER_NAME.as_bytes());
    block
}

#[test]
fn a_partial_request_head_is_answered_408_and_closed() {
    require_root();
    let lab = Lab::start("slw1", &SHORT);
    let mut client = lab.connect(b"http/1.1").expect("TLS handshake");
    client
        .send(format!("GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\n").as_bytes())
        .unwrap();
    let (got, ended) = client.read_for(SHORT.request_header + MARGIN);
    lab.check(
        ended == Ended::Closed,
        "a partial head must be cut within request_header_timeout",
    );
    assert_eq!(String::from_utf8_lossy(&got), ANSWER_408);
    assert_eq!(lab.timeouts("request_header"), 1.0);
    assert_eq!(lab.timeouts("idle"), 0.0);
    assert_eq!(lab.served(), 0);
}

#[test]
fn slowloris_header_lines_do_not_extend_the_head_deadline() {
    require_root();
    let limits = Limits {
        request_header: Duration::from_secs(2),
        ..SHORT
    };
    let lab = Lab::start("slw2", &limits);
    let mut client = lab.connect(b"http/1.1").expect("TLS handshake");
    let started = Instant::now();
    client
        .send(format!("GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\n").as_bytes())
        .unwrap();
    // One more header line every 250 ms, for as long as the listener takes them.
    let mut lines = 0;
    let mut got = Vec::new();
    let ended = loop {
        let (more, ended) = client.read_for(Duration::from_millis(250));
        got.extend(more);
        if ended == Ended::Closed || started.elapsed() > limits.request_header + MARGIN {
            break ended;
        }
        if client
            .send(format!("X-Slow-{lines}: a\r\n").as_bytes())
            .is_err()
        {
            let (more, ended) = client.read_for(Duration::from_secs(1));
            got.extend(more);
            break ended;
        }
        lines += 1;
    };
    lab.check(
        ended == Ended::Closed,
        &format!("a trickled head must be cut within request_header_timeout ({lines} lines sent)"),
    );
    assert!(
        lines >= 4,
        "the client kept trickling for a while: {lines} lines"
    );
    assert_eq!(String::from_utf8_lossy(&got), ANSWER_408);
    assert_eq!(lab.timeouts("request_header"), 1.0);
}

#[test]
fn a_connection_that_never_sends_a_request_is_closed_without_an_answer() {
    require_root();
    let lab = Lab::start("slw3", &SHORT);
    let mut client = lab.connect(b"http/1.1").expect("TLS handshake");
    let (got, ended) = client.read_for(SHORT.request_header + MARGIN);
    lab.check(
        ended == Ended::Closed,
        "a connection without a request must be closed within request_header_timeout",
    );
    assert_eq!(got, b"");
    assert_eq!(lab.timeouts("request_header"), 1.0);
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    require_root();
    let lab = Lab::start("slw4", &SHORT);
    let mut client = lab.connect(b"http/1.1").expect("TLS handshake");
    let request = format!("GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n");
    client.send(request.as_bytes()).unwrap();
    // The whole response, then nothing until the close.
    let (got, ended) = client.read_for(SHORT.idle + MARGIN);
    lab.check(
        ended == Ended::Closed,
        "an idle keep-alive connection must be closed within idle_timeout",
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(is_response(text.as_bytes()), "{text}");
    assert_eq!(lab.served(), 1);
    assert_eq!(lab.timeouts("idle"), 1.0);
    assert_eq!(lab.timeouts("request_header"), 0.0);

    // A later head on a keep-alive connection has its own deadline from its first byte.
    let mut client = lab.connect(b"http/1.1").expect("TLS handshake");
    client.send(request.as_bytes()).unwrap();
    let text = client.read_response(Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    client
        .send(format!("GET /second HTTP/1.1\r\nHost: {SERVER_NAME}\r\n").as_bytes())
        .unwrap();
    let (got, ended) = client.read_for(SHORT.request_header + MARGIN);
    lab.check(ended == Ended::Closed, "the second head must be cut");
    assert_eq!(String::from_utf8_lossy(&got), ANSWER_408);
    assert_eq!(lab.timeouts("request_header"), 1.0);
    assert_eq!(lab.served(), 2);
}

#[test]
fn an_http2_header_block_without_end_headers_is_cut() {
    require_root();
    let lab = Lab::start("slw5", &SHORT);
    let mut client = lab.connect(b"h2").expect("TLS handshake");
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    // END_STREAM but no END_HEADERS: a CONTINUATION must follow, and never does.
    bytes.extend(frame(HEADERS, END_STREAM, 1, &get_block()));
    client.send(&bytes).unwrap();
    let (frames, ended) = client.read_frames_until(SHORT.request_header + MARGIN, |_| false);
    lab.check(
        ended == Ended::Closed,
        "an unfinished HTTP/2 header block must be cut within request_header_timeout",
    );
    assert!(
        frames.iter().all(|f| f.stream == 0),
        "no stream was answered: {frames:?}"
    );
    assert_eq!(lab.timeouts("request_header"), 1.0);
    assert_eq!(lab.served(), 0);
}

#[test]
fn an_idle_http2_connection_gets_a_goaway_and_is_closed() {
    require_root();
    let lab = Lab::start("slw6", &SHORT);
    let mut client = lab.connect(b"h2").expect("TLS handshake");
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1, &get_block()));
    client.send(&bytes).unwrap();
    // Everything the listener sends until it closes: the response, later a GOAWAY.
    let (frames, ended) = client.read_frames_until(SHORT.idle + MARGIN, |_| false);
    lab.check(
        ended == Ended::Closed,
        "an idle HTTP/2 connection must be closed within idle_timeout",
    );
    let answered = frames
        .iter()
        .position(|f| f.stream == 1 && f.kind == DATA && f.flags & END_STREAM != 0);
    let goaway = frames
        .iter()
        .position(|f| f.kind == GOAWAY && f.stream == 0);
    assert!(
        matches!((answered, goaway), (Some(a), Some(g)) if a < g),
        "the response, then a GOAWAY: {frames:?}"
    );
    assert_eq!(lab.timeouts("idle"), 1.0);
    assert_eq!(lab.timeouts("request_header"), 0.0);
    assert_eq!(lab.served(), 1);
}

#[test]
fn connections_over_max_connections_are_refused_at_once_and_counted() {
    require_root();
    let limits = Limits {
        request_header: Duration::from_secs(30),
        idle: Duration::from_secs(30),
        max_connections: 2,
    };
    let lab = Lab::start("slw7", &limits);
    let first = lab.connect(b"http/1.1").expect("first connection");
    let _second = lab.connect(b"http/1.1").expect("second connection");
    let started = Instant::now();
    let refused = lab.connect(b"http/1.1");
    lab.check(
        refused.is_err(),
        "a third connection over max_connections = 2 must be refused",
    );
    // Closed at once, not left to the client's own timeout (5 s on the socket).
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        lab.metric(
            "sluice_edge_connections_refused_total",
            &[("edge", EDGE), ("reason", "limit")]
        ),
        1.0
    );
    assert_eq!(
        lab.metric("sluice_edge_connections_open", &[("edge", EDGE)]),
        2.0
    );
    // A closed connection makes room for the next one.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(5);
    while lab.metric("sluice_edge_connections_open", &[("edge", EDGE)]) > 1.0 {
        assert!(
            Instant::now() < deadline,
            "the first connection never closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut third = lab
        .connect(b"http/1.1")
        .expect("a connection once there is room");
    third
        .send(
            format!("GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let text = third.read_response(Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(lab.timeouts("request_header"), 0.0);
}

#[test]
fn a_request_in_flight_outlives_both_client_limits() {
    require_root();
    let lab = Lab::start("slw8", &SHORT);
    // The backend answers after longer than request_header_timeout, idle_timeout and the
    // grace together: a request in flight is the backend's time, not the client's.
    let delay = Duration::from_secs(4);
    let slow = format!("/delay/{}", delay.as_millis());
    let mut client = lab.connect(b"http/1.1").expect("TLS handshake");
    client
        .send(format!("GET {slow} HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n").as_bytes())
        .unwrap();
    let text = client.read_response(delay + MARGIN);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(is_response(text.as_bytes()), "{text}");
    // And the connection is still there for the next request.
    client
        .send(format!("GET / HTTP/1.1\r\nHost: {SERVER_NAME}\r\n\r\n").as_bytes())
        .unwrap();
    let text = client.read_response(Duration::from_secs(5));
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");

    drop(client);

    // The same over HTTP/2, where the stream runs beside the connection's own frames.
    let mut client = lab.connect(b"h2").expect("TLS handshake");
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    bytes.extend(frame(
        HEADERS,
        END_STREAM | END_HEADERS,
        1,
        &get_path_block(&slow),
    ));
    client.send(&bytes).unwrap();
    let answered = |f: &Frame| f.stream == 1 && f.kind == DATA && f.flags & END_STREAM != 0;
    let (frames, ended) = client.read_frames_until(delay + MARGIN, answered);
    assert!(
        frames.iter().any(answered),
        "answered: {frames:?} ({ended:?})"
    );
    assert!(
        !frames.iter().any(|f| f.kind == GOAWAY),
        "no GOAWAY while the stream ran: {frames:?}"
    );
    assert_eq!(lab.timeouts("request_header"), 0.0);
    assert_eq!(lab.timeouts("idle"), 0.0);
    assert_eq!(lab.served(), 3);
}
