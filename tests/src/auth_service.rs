//! A stand-in for oauth2-proxy's `/oauth2/auth` endpoint (its documented behaviour under
//! `--reverse-proxy --set-xauthrequest --pass-access-token --set-authorization-header`, as
//! nginx `auth_request` and Traefik `forwardAuth` call it), and a backend that echoes request
//! bodies: what the forward-auth tests put beside sluice.
//!
//! The stand-in decides by the `_oauth2_proxy` cookie, or a bearer token when there is none,
//! records every request it received, and keeps connections open (HTTP/1.1 keep-alive), as
//! oauth2-proxy does:
//!
//! | `_oauth2_proxy` | Answer |
//! |---|---|
//! | `alice` | 202 with every `X-Auth-Request-*` header, `Authorization: Bearer token-alice` and a refreshed `Set-Cookie` |
//! | `bob` | 202 with `X-Auth-Request-User: bob` only (the other headers left out) |
//! | `forbidden` | 403 |
//! | `slow` | 202 as for `alice`, after [`SLOW`] |
//! | `expired` | 401 with a `Set-Cookie` that clears the cookie |
//! | none, with `Authorization: Bearer svc-token` | 202 with `X-Auth-Request-User: svc` |
//! | anything else | 401 |

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Result;

use crate::{servers::tcp_server, NetNs, ServerHandle};

/// The port oauth2-proxy listens on by default (`--http-address=127.0.0.1:4180`).
pub const AUTH_PORT: u16 = 4180;
/// How long the `slow` cookie waits before its answer.
pub const SLOW: Duration = Duration::from_secs(3);
/// How often an idle connection looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// `alice`'s identity, as the stand-in sends it on a 202.
pub const ALICE: [(&str, &str); 6] = [
    ("x-auth-request-user", "alice"),
    ("x-auth-request-email", "alice@example.test"),
    ("x-auth-request-groups", "admins,devs"),
    ("x-auth-request-preferred-username", "alice.a"),
    ("x-auth-request-access-token", "token-alice"),
    ("authorization", "Bearer token-alice"),
];
/// The cookie the stand-in refreshes on `alice`'s 202.
pub const ALICE_SET_COOKIE: &str = "_oauth2_proxy=alice-refreshed; Path=/; Secure; HttpOnly";
/// The cookie the stand-in clears on an `expired` 401.
pub const EXPIRED_SET_COOKIE: &str = "_oauth2_proxy=; Path=/; Max-Age=0";

/// One request the stand-in received: its request line and headers (names lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// Every value of `name` (lowercase), in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The running stand-in; dropping it stops it and closes every connection it holds.
pub struct AuthService {
    server: Option<ServerHandle>,
    seen: Arc<Mutex<Vec<Seen>>>,
    down: Arc<AtomicBool>,
}

impl AuthService {
    /// Listens on `port` in `ns` (dual-stack).
    pub fn start(ns: &NetNs, port: u16) -> Result<AuthService> {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let (seen2, down2) = (Arc::clone(&seen), Arc::clone(&down));
        let server = tcp_server(ns, "auth-stand-in", port, move |stream, _| {
            serve(stream, &seen2, &down2)
        })?;
        Ok(AuthService {
            server: Some(server),
            seen,
            down,
        })
    }

    /// The requests received since the last call, oldest first.
    pub fn take_seen(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Stops listening and closes every open connection (within [`POLL`]).
    pub fn stop(&mut self) {
        self.down.store(true, Ordering::Relaxed);
        self.server.take();
        std::thread::sleep(POLL * 3);
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.down.store(true, Ordering::Relaxed);
    }
}

/// Serves one connection's requests until the client closes it or the stand-in stops.
fn serve(stream: TcpStream, seen: &Mutex<Vec<Seen>>, down: &AtomicBool) -> std::io::Result<()> {
    stream.set_read_timeout(Some(POLL))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request) = read_head(&mut reader, down)? else {
            return Ok(());
        };
        let cookie = request
            .values("cookie")
            .iter()
            .flat_map(|c| c.split(';'))
            .filter_map(|pair| pair.trim().strip_prefix("_oauth2_proxy="))
            .map(str::to_owned)
            .next();
        let bearer = request
            .values("authorization")
            .first()
            .map(|s| (*s).to_owned());
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request);
        let mut headers: Vec<(&str, &str)> = Vec::new();
        let status = match (cookie.as_deref(), bearer.as_deref()) {
            (Some("alice" | "slow"), _) => {
                if cookie.as_deref() == Some("slow") {
                    std::thread::sleep(SLOW);
                }
                headers.extend(ALICE);
                headers.push(("set-cookie", ALICE_SET_COOKIE));
                "202 Accepted"
            }
            (Some("bob"), _) => {
                headers.push(("x-auth-request-user", "bob"));
                "202 Accepted"
            }
            (Some("forbidden"), _) => "403 Forbidden",
            (Some("expired"), _) => {
                headers.push(("set-cookie", EXPIRED_SET_COOKIE));
                "401 Unauthorized"
            }
            (None, Some("Bearer svc-token")) => {
                headers.push(("x-auth-request-user", "svc"));
                "202 Accepted"
            }
            _ => "401 Unauthorized",
        };
        let mut out = format!("HTTP/1.1 {status}\r\n");
        for (n, v) in headers {
            let _ = write!(out, "{n}: {v}\r\n");
        }
        out.push_str("content-length: 0\r\n\r\n");
        if down.load(Ordering::Relaxed) {
            return Ok(());
        }
        writer.write_all(out.as_bytes())?;
    }
}

/// The next request head (requests to the stand-in carry no body); `None` at EOF or once the
/// stand-in stops.
fn read_head(
    reader: &mut BufReader<TcpStream>,
    down: &AtomicBool,
) -> std::io::Result<Option<Seen>> {
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        if down.load(Ordering::Relaxed) {
            return Ok(None);
        }
        match reader.read_line(&mut line) {
            Ok(0) => return Ok(None),
            Ok(_) => {
                if !line.ends_with('\n') {
                    continue;
                }
                let l = line.trim_end().to_owned();
                line.clear();
                if l.is_empty() {
                    if lines.is_empty() {
                        continue;
                    }
                    break;
                }
                lines.push(l);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e),
        }
    }
    let request_line = lines.remove(0);
    let headers = lines
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Some(Seen {
        request_line,
        headers,
    }))
}

/// A backend that answers `200 OK` with body `name`, a newline, the request head as received,
/// a blank line and then the request body as received (Content-Length or chunked, decoded),
/// then closes.
pub fn body_echo_backend(ns: &NetNs, name: &str, port: u16) -> Result<ServerHandle> {
    tcp_server(ns, name, port, |stream, name| {
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let end = line == "\r\n";
            head.push_str(&line);
            if end {
                break;
            }
        }
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_owned())
            })
        };
        let mut body = Vec::new();
        if let Some(len) = header("content-length").and_then(|l| l.parse::<usize>().ok()) {
            body.resize(len, 0);
            reader.read_exact(&mut body)?;
        } else if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                    .unwrap_or(0);
                if size == 0 {
                    // Trailers (none) and the final CRLF.
                    let mut rest = String::new();
                    while reader.read_line(&mut rest)? > 0 && rest != "\r\n" {
                        rest.clear();
                    }
                    break;
                }
                let at = body.len();
                body.resize(at + size, 0);
                reader.read_exact(&mut body[at..])?;
                let mut crlf = [0u8; 2];
                reader.read_exact(&mut crlf)?;
            }
        }
        let mut out = format!("{name}\n{head}").into_bytes();
        out.extend_from_slice(&body);
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            out.len()
        )
        .into_bytes();
        response.extend_from_slice(&out);
        writer.write_all(&response)?;
        writer.shutdown(std::net::Shutdown::Write)
    })
}
