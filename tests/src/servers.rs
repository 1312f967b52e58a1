//! Tiny backends that run inside test namespaces (the matching clients are in
//! [`crate::clients`] and re-exported here).
//!
//! Each backend answers with its own name, so a client can tell which backend the load
//! balancer picked. Servers listen dual-stack on `[::]` so one server covers both VIPs.
//! Sockets are opened inside the namespace and keep belonging to it, so the serving
//! threads themselves need not be in the namespace.

use std::io::{ErrorKind, IoSlice, IoSliceMut, Read, Write};
use std::net::{Ipv6Addr, SocketAddrV6, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use nix::errno::Errno;
use nix::sys::socket::{
    bind, listen, recvmsg, sendmsg, setsockopt, socket, sockopt, AddressFamily, Backlog,
    ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, SockaddrIn6,
};
use nix::sys::time::TimeVal;

use crate::netns::NetNs;

pub use crate::clients::{connect_tcp, http_get_many, udp_ask, CLIENT_TIMEOUT, UDP_TIMEOUT};

/// How often a server's accept/receive loop looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);
/// How long a backend waits for a client to send its request.
pub const CONN_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head the HTTP backend reads.
const MAX_HEAD: usize = 16 * 1024;

/// A server thread; dropping the handle stops it (within [`POLL`]).
#[derive(Debug)]
pub struct ServerHandle {
    port: u16,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// Runs `serve(stop, served)` on a thread named `thread_name`: it serves on `port` until
    /// `stop` is set, counting what it served in `served`.
    fn spawn(
        port: u16,
        thread_name: String,
        serve: impl FnOnce(Arc<AtomicBool>, Arc<AtomicU64>) + Send + 'static,
    ) -> Result<ServerHandle> {
        let (stop, served) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (stop2, served2) = (stop.clone(), served.clone());
        let thread = thread::Builder::new()
            .name(thread_name)
            .spawn(move || serve(stop2, served2))?;
        Ok(ServerHandle {
            port,
            stop,
            served,
            thread: Some(thread),
        })
    }

    /// The port the server listens on (useful when it was started with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections (TCP) or datagrams (UDP) handled so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                eprintln!("warning: server thread on port {} panicked", self.port);
            }
        }
    }
}

/// HTTP backend: replies `200 OK` with body `name` to every request, then closes.
pub fn http_backend(ns: &NetNs, name: &str, port: u16) -> Result<ServerHandle> {
    tcp_server(ns, name, port, serve_http)
}

/// HTTP backend that shows what reached it: replies `200 OK` with body `name`, a newline and
/// the request head exactly as received (request line and every header line), then closes.
pub fn http_headers_backend(ns: &NetNs, name: &str, port: u16) -> Result<ServerHandle> {
    tcp_server(ns, name, port, |stream, name| {
        respond(stream, |head| {
            let head = String::from_utf8_lossy(head);
            let head = head.split("\r\n\r\n").next().unwrap_or_default();
            format!("{name}\n{head}\r\n")
        })
    })
}

/// HTTP/1.1 backend that keeps its connections open: every request head (requests without a
/// body) is answered `200 OK` with body `name`, until the client closes. [`ServerHandle::served`]
/// counts the connections it accepted, so a test can tell how many a proxy opened.
pub fn http_keepalive_backend(ns: &NetNs, name: &str, port: u16) -> Result<ServerHandle> {
    tcp_server(ns, name, port, |mut stream, name| {
        // A proxy keeps an idle connection as long as it likes; only EOF ends it.
        stream.set_read_timeout(None)?;
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
            name.len()
        );
        let mut pending = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                pending.drain(..end + 4);
                stream.write_all(response.as_bytes())?;
            }
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&buf[..n]);
        }
    })
}

/// HTTP backend that takes its time: a request for `/delay/<ms>` is answered `200 OK` with
/// body `name` after `<ms>` milliseconds, any other path at once; then the connection closes.
pub fn http_delay_backend(ns: &NetNs, name: &str, port: u16) -> Result<ServerHandle> {
    tcp_server(ns, name, port, |stream, name| {
        respond(stream, |head| {
            if let Some(delay) = requested_delay(head) {
                thread::sleep(delay);
            }
            name.to_owned()
        })
    })
}

/// The `<ms>` of a request line `GET /delay/<ms> ...`.
fn requested_delay(head: &[u8]) -> Option<Duration> {
    let head = String::from_utf8_lossy(head);
    let path = head.lines().next()?.split_whitespace().nth(1)?;
    let ms = path.strip_prefix("/delay/")?.parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// [`http_headers_backend`] for a sender of PROXY v2 headers: the body's second line is
/// `proxy <source> <destination>` as the connection's header named them (`proxy none` when the
/// connection did not start with a complete, valid one), then the request head.
pub fn http_proxy_headers_backend(ns: &NetNs, name: &str, port: u16) -> Result<ServerHandle> {
    use lb_common::proxy::parse::{parse, Addresses, Error, Header};
    // The v2 signature itself starts with CR LF CR LF: the request head ends after the header.
    let split = |bytes: &[u8]| match parse(bytes) {
        Ok(p) => {
            let named = match p.header {
                Header::V2(h) => match h.addresses {
                    Addresses::Inet {
                        source,
                        destination,
                    } => format!("{source} {destination}"),
                    _ => "not inet".to_owned(),
                },
                Header::V1(_) => "v1".to_owned(),
            };
            Some((named, p.len))
        }
        Err(Error::Incomplete) => None,
        Err(_) => Some(("none".to_owned(), 0)),
    };
    tcp_server(ns, name, port, move |stream, name| {
        respond_when(
            stream,
            |bytes| split(bytes).is_some_and(|(_, at)| head_complete(&bytes[at..])),
            |bytes| {
                let (named, at) = split(bytes).unwrap_or(("none".to_owned(), 0));
                let head = String::from_utf8_lossy(&bytes[at..]);
                let head = head.split("\r\n\r\n").next().unwrap_or_default();
                format!("{name}\nproxy {named}\n{head}\r\n")
            },
        )
    })
}

/// How long a [`silent_backend`] keeps a connection nobody writes to.
pub const SILENT_HOLD: Duration = Duration::from_secs(30);

/// TCP backend that accepts and reads but never answers: for response timeouts. A connection
/// stays open until the peer closes it, or nothing arrived on it for [`SILENT_HOLD`].
pub fn silent_backend(ns: &NetNs, name: &str, port: u16) -> Result<ServerHandle> {
    tcp_server(ns, name, port, |mut stream, _| {
        stream.set_read_timeout(Some(SILENT_HOLD))?;
        let mut buf = [0u8; 4096];
        while stream.read(&mut buf)? > 0 {}
        Ok(())
    })
}

/// Stream backend for long-lived flows: sends `name\n`, then echoes until EOF.
pub fn tcp_echo_backend(ns: &NetNs, name: &str, port: u16) -> Result<ServerHandle> {
    tcp_server(ns, name, port, serve_echo)
}

/// UDP backend: answers every datagram with `name`.
///
/// Replies leave from the address the datagram was sent to (via `IPV6_PKTINFO`, which
/// also covers v4-mapped IPv4), so a reply to a VIP comes from the VIP and a client's
/// connected socket accepts it; a plain `send_to` would pick the interface address.
pub fn udp_backend(ns: &NetNs, name: &str, port: u16) -> Result<ServerHandle> {
    let fd = ns.exec(|| -> Result<OwnedFd> {
        let fd = dual_stack_socket(SockType::Datagram, port)?;
        setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)?;
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000))?;
        Ok(fd)
    })??;
    let port = UdpSocket::from(fd.try_clone()?).local_addr()?.port();
    let reply = name.as_bytes().to_vec();
    ServerHandle::spawn(port, format!("udp-{name}"), move |stop, served| {
        while !stop.load(Ordering::Relaxed) {
            match udp_answer(&fd, &reply) {
                Ok(true) => {
                    served.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(err) => eprintln!("udp backend: {err:#}"),
            }
        }
    })
}

/// Receives one datagram and answers it from its destination address. Returns
/// `Ok(false)` when the receive timed out.
fn udp_answer(fd: &OwnedFd, reply: &[u8]) -> Result<bool> {
    let mut buf = [0u8; 2048];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
    let msg = match recvmsg::<SockaddrIn6>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    ) {
        Ok(msg) => msg,
        Err(Errno::EAGAIN | Errno::EINTR) => return Ok(false),
        Err(err) => return Err(err).context("recvmsg"),
    };
    let peer = msg
        .address
        .ok_or_else(|| anyhow!("datagram without a source address"))?;
    let mut info = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::Ipv6PacketInfo(mut pktinfo) = cmsg {
            // Route by destination, not by the interface the datagram came in on.
            pktinfo.ipi6_ifindex = 0;
            info = Some(pktinfo);
        }
    }
    let cmsgs: Vec<ControlMessage> = info.iter().map(ControlMessage::Ipv6PacketInfo).collect();
    sendmsg(
        fd.as_raw_fd(),
        &[IoSlice::new(reply)],
        &cmsgs,
        MsgFlags::empty(),
        Some(&peer),
    )
    .with_context(|| format!("reply to {peer}"))?;
    Ok(true)
}

/// Runs `handler` on its own thread for each accepted connection (dual-stack on `[::]:port`).
/// The connection has a read timeout of [`CONN_TIMEOUT`]; errors of `handler` are ignored.
pub fn tcp_server<F>(ns: &NetNs, name: &str, port: u16, handler: F) -> Result<ServerHandle>
where
    F: Fn(TcpStream, &str) -> std::io::Result<()> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let listener = ns.exec(|| -> Result<TcpListener> {
        let fd = dual_stack_socket(SockType::Stream, port)?;
        listen(&fd, Backlog::new(1024)?).context("listen")?;
        // accept(2) honours SO_RCVTIMEO: it wakes at once for a connection and every
        // POLL otherwise to check the stop flag.
        setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(0, 100_000))?;
        Ok(TcpListener::from(fd))
    })??;
    let port = listener.local_addr()?.port();
    let name = Arc::<str>::from(name);
    ServerHandle::spawn(port, format!("tcp-{name}"), move |stop, served| {
        while !stop.load(Ordering::Relaxed) {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(err) if is_timeout(&err) => continue,
                Err(err) => {
                    eprintln!("tcp backend {name}: accept: {err}");
                    thread::sleep(POLL);
                    continue;
                }
            };
            served.fetch_add(1, Ordering::Relaxed);
            let (name, handler) = (name.clone(), handler.clone());
            let spawned = thread::Builder::new().spawn(move || {
                // Clients cut connections short on purpose in some tests.
                let _ = stream.set_read_timeout(Some(CONN_TIMEOUT));
                let _ = handler(stream, &name);
            });
            if let Err(err) = spawned {
                eprintln!("tcp backend: spawning a connection thread: {err}");
            }
        }
    })
}

fn serve_http(stream: TcpStream, name: &str) -> std::io::Result<()> {
    respond(stream, |_| name.to_owned())
}

/// Reads one request head and answers `200 OK` with the body `body(head)`, then closes.
fn respond(stream: TcpStream, body: impl Fn(&[u8]) -> String) -> std::io::Result<()> {
    respond_when(stream, head_complete, body)
}

fn head_complete(bytes: &[u8]) -> bool {
    bytes.windows(4).any(|w| w == b"\r\n\r\n")
}

/// Reads until `complete` says the request is all there (or `MAX_HEAD`, or EOF), then answers
/// `200 OK` with `body` of what was read and closes.
fn respond_when(
    mut stream: TcpStream,
    complete: impl Fn(&[u8]) -> bool,
    body: impl Fn(&[u8]) -> String,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while !complete(&head) && head.len() < MAX_HEAD {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = body(&head);
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)
}

fn serve_echo(mut stream: TcpStream, name: &str) -> std::io::Result<()> {
    // Long-lived flows may idle for a while; only EOF ends them.
    stream.set_read_timeout(None)?;
    stream.write_all(format!("{name}\n").as_bytes())?;
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n])?;
    }
}

/// A socket bound to `[::]:port` that also accepts IPv4 (v4-mapped) traffic.
fn dual_stack_socket(kind: SockType, port: u16) -> Result<OwnedFd> {
    let fd = socket(AddressFamily::Inet6, kind, SockFlag::SOCK_CLOEXEC, None).context("socket")?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    let addr = SockaddrIn6::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0));
    bind(fd.as_raw_fd(), &addr).with_context(|| format!("bind [::]:{port}"))?;
    Ok(fd)
}

fn is_timeout(err: &std::io::Error) -> bool {
    matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}
