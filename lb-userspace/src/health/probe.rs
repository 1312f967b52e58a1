//! One probe of one backend: a TCP connect or an HTTP GET, bounded by the check's timeout.
//!
//! Both outcomes carry a sentence for operators (`sluice backends` shows the last one), so a
//! failure names the address and the error the kernel or the server gave.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::{CONNECTION, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::{CheckKind, HealthCheck};

/// `Ok(what succeeded)` or `Err(why it failed)`.
pub type Outcome = Result<String, String>;

pub async fn probe(backend: IpAddr, check: &HealthCheck) -> Outcome {
    let addr = SocketAddr::new(backend, check.port);
    let attempt = async {
        match &check.kind {
            CheckKind::Tcp => connect(addr).await.map(|_| format!("connected to {addr}")),
            CheckKind::Http {
                path,
                host,
                expect_status,
            } => {
                let host = host.clone().unwrap_or_else(|| default_host(addr));
                http(addr, path, &host, *expect_status).await
            }
        }
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "timed out after {}",
            humantime::format_duration(check.timeout)
        )),
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// The backend's address as a Host header: IPv6 bracketed, the port only when not 80 (RFC 9110
/// §7.2 omits the scheme's default port).
fn default_host(addr: SocketAddr) -> String {
    match (addr.ip(), addr.port()) {
        (IpAddr::V4(ip), 80) => ip.to_string(),
        (IpAddr::V6(ip), 80) => format!("[{ip}]"),
        _ => addr.to_string(),
    }
}

async fn http(addr: SocketAddr, path: &str, host: &str, expect: u16) -> Outcome {
    let stream = connect(addr).await?;
    let request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(HOST, host)
        .header(CONNECTION, "close")
        .header(USER_AGENT, "sluice-health")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("HTTP request for {path}: {e}"))?;
    let failed = |e: hyper::Error| format!("HTTP GET {path} on {addr}: {e}");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    // The connection is driven here rather than in a spawned task, so aborting the check (or
    // its timeout) drops the socket with it.
    let send = sender.send_request(request);
    tokio::pin!(conn, send);
    let response = tokio::select! {
        biased;
        response = &mut send => response,
        // The connection can finish (Connection: close) in the same poll that hands the
        // response over: the response is still there to take.
        _ = &mut conn => send.await,
    }
    .map_err(failed)?;
    let status = response.status().as_u16();
    if status == expect {
        Ok(format!("HTTP status {status}"))
    } else {
        Err(format!("HTTP status {status}, expected {expect}"))
    }
}

#[cfg(test)]
mod tests {
    use super::default_host;

    #[test]
    fn default_host_brackets_ipv6_and_omits_port_80() {
        let host = |s: &str| default_host(s.parse().unwrap());
        assert_eq!(host("198.18.10.2:80"), "198.18.10.2");
        assert_eq!(host("198.18.10.2:8080"), "198.18.10.2:8080");
        assert_eq!(host("[2001:db8::2]:80"), "[2001:db8::2]");
        assert_eq!(host("[2001:db8::2]:8080"), "[2001:db8::2]:8080");
    }
}
