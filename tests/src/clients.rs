//! Clients that run inside a test namespace and report which backend answered.
//!
//! Backends answer with their name (see [`crate::servers`]), so tallying the answers
//! shows how the load balancer spread the flows.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use nix::sys::socket::{
    bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};
use nix::sys::time::TimeVal;

use crate::netns::NetNs;

/// Timeout of every client connect, read and write.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long [`udp_ask`] waits for each reply.
pub const UDP_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a TCP connection from inside `ns` (the socket stays usable from any thread).
pub fn connect_tcp(ns: &NetNs, addr: SocketAddr) -> Result<TcpStream> {
    ns.exec(|| -> Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(stream)
    })?
}

/// Opens a TCP connection from inside `ns` whose source address is `local` (one of the
/// namespace's addresses, port chosen by the kernel), so one namespace can act as several
/// clients. Connect, read and write time out after [`CLIENT_TIMEOUT`].
pub fn connect_tcp_from(ns: &NetNs, local: IpAddr, addr: SocketAddr) -> Result<TcpStream> {
    ns.exec(|| -> Result<TcpStream> {
        let family = match addr {
            SocketAddr::V4(_) => AddressFamily::Inet,
            SocketAddr::V6(_) => AddressFamily::Inet6,
        };
        let fd =
            socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).context("socket")?;
        // A blocking connect(2) gives up after SO_SNDTIMEO.
        let timeout = TimeVal::new(
            i64::try_from(CLIENT_TIMEOUT.as_secs()).unwrap_or(i64::MAX),
            0,
        );
        setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
        bind(
            fd.as_raw_fd(),
            &SockaddrStorage::from(SocketAddr::new(local, 0)),
        )
        .with_context(|| format!("bind {local}"))?;
        connect(fd.as_raw_fd(), &SockaddrStorage::from(addr))
            .with_context(|| format!("connecting from {local} to {addr}"))?;
        let stream = TcpStream::from(fd);
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
        Ok(stream)
    })?
}

/// Makes `count` HTTP requests from `ns` to `addr`, each on a new connection (so a new
/// source port and flow), `concurrency` at a time, and counts the answering backends.
///
/// Stops at the first failure and reports how many requests had succeeded.
pub fn http_get_many(
    ns: &NetNs,
    addr: SocketAddr,
    count: usize,
    concurrency: usize,
) -> Result<BTreeMap<String, usize>> {
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let tally = Mutex::new(BTreeMap::<String, usize>::new());
    let first_error = Mutex::new(None::<anyhow::Error>);
    ns.exec(|| {
        // Threads spawned here inherit the namespace of this (entered) thread.
        thread::scope(|scope| {
            for _ in 0..concurrency.clamp(1, count.max(1)) {
                scope.spawn(|| {
                    while !failed.load(Ordering::Relaxed)
                        && next.fetch_add(1, Ordering::Relaxed) < count
                    {
                        match http_get(addr) {
                            Ok(name) => {
                                done.fetch_add(1, Ordering::Relaxed);
                                let mut tally =
                                    tally.lock().unwrap_or_else(PoisonError::into_inner);
                                *tally.entry(name).or_default() += 1;
                            }
                            Err(err) => {
                                failed.store(true, Ordering::Relaxed);
                                let mut first =
                                    first_error.lock().unwrap_or_else(PoisonError::into_inner);
                                first.get_or_insert(err);
                            }
                        }
                    }
                });
            }
        });
    })?;
    if let Some(err) = first_error
        .into_inner()
        .unwrap_or_else(PoisonError::into_inner)
    {
        let ok = done.load(Ordering::Relaxed);
        return Err(err.context(format!(
            "HTTP GET {addr}: {ok} of {count} requests succeeded"
        )));
    }
    Ok(tally.into_inner().unwrap_or_else(PoisonError::into_inner))
}

/// One request on a fresh connection; returns the body (the backend's name).
fn http_get(addr: SocketAddr) -> Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, CLIENT_TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .context("reading the response")?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("incomplete HTTP response: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("unexpected HTTP response: {head:?}");
    }
    Ok(body.to_owned())
}

/// Sends `payloads` datagrams to `addr` from one socket (a single flow), waiting for
/// each reply, and returns the replies (backend names) in order.
pub fn udp_ask(ns: &NetNs, addr: SocketAddr, payloads: usize) -> Result<Vec<String>> {
    ns.exec(|| -> Result<Vec<String>> {
        let local: SocketAddr = match addr {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(addr)?;
        socket.set_read_timeout(Some(UDP_TIMEOUT))?;
        let mut replies = Vec::with_capacity(payloads);
        let mut buf = [0u8; 2048];
        for k in 0..payloads {
            socket.send(format!("ping {k}").as_bytes())?;
            let n = socket.recv(&mut buf).with_context(|| {
                format!("UDP {addr}: no reply to datagram {k} ({k} of {payloads} answered)")
            })?;
            replies.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        Ok(replies)
    })?
}

/// Index of the backend whose servers answer with `name`.
pub fn backend_index(name: &str) -> usize {
    name.strip_prefix("backend-")
        .and_then(|i| i.parse().ok())
        .unwrap_or_else(|| panic!("answer {name:?} is not a backend name"))
}

/// A long-lived connection to the echo service: the greeting names the backend.
pub struct EchoConn {
    reader: BufReader<TcpStream>,
    /// Index of the backend that greeted.
    pub backend: usize,
    /// The client side of the connection.
    pub local: SocketAddr,
    pub vip: SocketAddr,
    rounds: u8,
}

/// A connection from `ns` to the echo service at `vip` whose greeting was read: the reader,
/// the client's own address, and the index of the backend that greeted.
pub fn greeted(ns: &NetNs, vip: SocketAddr) -> Result<(BufReader<TcpStream>, SocketAddr, usize)> {
    let stream = connect_tcp(ns, vip)?;
    let local = stream.local_addr()?;
    let mut reader = BufReader::new(stream);
    let mut greeting = String::new();
    reader
        .read_line(&mut greeting)
        .context("reading the echo greeting")?;
    let name = greeting
        .strip_suffix('\n')
        .ok_or_else(|| anyhow!("incomplete greeting {greeting:?}"))?;
    Ok((reader, local, backend_index(name)))
}

impl EchoConn {
    /// Connects from `ns` and does one exchange.
    pub fn open(ns: &NetNs, vip: SocketAddr) -> Result<Self> {
        let (reader, local, backend) = greeted(ns, vip)?;
        let mut conn = Self {
            backend,
            reader,
            local,
            vip,
            rounds: 0,
        };
        conn.exchange()?;
        Ok(conn)
    }

    /// Sends 8 × 16 KiB (full-size segments through the tunnel) and checks the echo.
    pub fn exchange(&mut self) -> Result<()> {
        self.rounds = self.rounds.wrapping_add(1);
        for chunk in 0..8u8 {
            let data: Vec<u8> = (0..16 * 1024usize)
                .map(|k| {
                    #[allow(clippy::cast_possible_truncation)]
                    let b = k as u8;
                    b ^ chunk ^ self.rounds
                })
                .collect();
            self.reader
                .get_mut()
                .write_all(&data)
                .with_context(|| format!("sending round {} to {}", self.rounds, self.vip))?;
            let mut back = vec![0u8; data.len()];
            self.reader
                .read_exact(&mut back)
                .with_context(|| format!("echo of round {} from {}", self.rounds, self.vip))?;
            ensure!(
                back == data,
                "echo from {} differs from what was sent",
                self.vip
            );
        }
        Ok(())
    }
}

/// Opens `count` new connections to the echo service one after the other and tallies the
/// backends that greeted them.
pub fn echo_greetings(ns: &NetNs, vip: SocketAddr, count: usize) -> Result<BTreeMap<usize, usize>> {
    ns.exec(|| -> Result<BTreeMap<usize, usize>> {
        let mut tally = BTreeMap::new();
        for k in 0..count {
            let stream = TcpStream::connect_timeout(&vip, CLIENT_TIMEOUT)
                .with_context(|| format!("connection {k} of {count} to {vip}"))?;
            stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
            let mut line = String::new();
            BufReader::new(stream)
                .read_line(&mut line)
                .with_context(|| format!("greeting on connection {k} to {vip}"))?;
            let Some(name) = line.strip_suffix('\n') else {
                bail!("incomplete greeting {line:?} from {vip}");
            };
            *tally.entry(backend_index(name)).or_default() += 1;
        }
        Ok(tally)
    })?
}
