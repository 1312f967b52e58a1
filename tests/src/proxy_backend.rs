//! A backend that speaks the PROXY protocol (v2) as Keycloak or nginx do with it enabled: each
//! connection starts with a header from the upstream balancer, and the backend takes the client
//! it names for the real one.
//!
//! It answers one line naming what it learned, `client=<addr:port> backend=<i>\n` (or
//! `client=none backend=<i>\n` when the stream does not start with a header), then echoes; a
//! LOCAL header (a health check) gets `local backend=<i>\n` and the end of the connection. Every
//! connection is recorded ([`Seen`]): the TCP peer, the raw header, the client it named and how
//! many bytes arrived, so a test can prove that a connection reached the backend but its data
//! did not.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use lb_common::proxy::parse::{parse, Addresses, Command, Error, Header as ParsedHeader, Parsed};
use lb_common::proxy::V2_FIXED_LEN;

use crate::netns::NetNs;
use crate::servers::{tcp_server, ServerHandle};

/// Longest header the backend waits for (the v2 length field's maximum plus the fixed part).
const MAX_HEADER: usize = V2_FIXED_LEN + u16::MAX as usize;

/// What the start of a connection said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Header {
    /// A v2 PROXY command naming the real client and the address it connected to.
    Proxy {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// A v2 LOCAL command (the upstream's own health check).
    Local,
    /// The stream does not start with the v2 signature.
    Absent,
    /// The v2 signature followed by something this backend does not accept.
    Malformed,
}

/// One connection the backend accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The TCP peer (the upstream balancer, or whoever connected directly).
    pub peer: SocketAddr,
    /// The header's bytes as received, once complete.
    pub raw_header: Option<Vec<u8>>,
    /// What the header said, once the start of the stream was read.
    pub header: Option<Header>,
    /// Bytes received on the connection (header included).
    pub bytes: usize,
}

impl Seen {
    /// The client a PROXY header named.
    pub fn client(&self) -> Option<SocketAddr> {
        match self.header {
            Some(Header::Proxy { source, .. }) => Some(source),
            _ => None,
        }
    }
}

/// A running PROXY-aware backend; dropping it stops accepting (as [`ServerHandle`] does).
#[derive(Debug)]
pub struct ProxyBackend {
    server: ServerHandle,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ProxyBackend {
    /// Listens dual-stack on `[::]:port` in `ns`; `index` is the backend number its answers
    /// name.
    pub fn start(ns: &NetNs, index: usize, port: u16) -> Result<Self> {
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let log = seen.clone();
        let server = tcp_server(
            ns,
            &format!("proxy-backend-{index}"),
            port,
            move |stream, _name| serve(stream, index, &log),
        )?;
        Ok(Self { server, seen })
    }

    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Every connection accepted so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The connections whose TCP peer was `peer`.
    pub fn seen_from(&self, peer: SocketAddr) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| same_endpoint(s.peer, peer))
            .collect()
    }
}

/// Whether two socket addresses are the same endpoint, treating a v4-mapped IPv6 address (as
/// a dual-stack listener reports IPv4 peers) as the IPv4 address.
pub fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    unmap(a) == unmap(b)
}

fn unmap(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

fn serve(mut stream: TcpStream, index: usize, log: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    let peer = unmap(stream.peer_addr()?);
    let slot = {
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        log.push(Seen {
            peer,
            raw_header: None,
            header: None,
            bytes: 0,
        });
        log.len() - 1
    };
    let update = |f: &dyn Fn(&mut Seen)| {
        let mut log = log.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut log[slot]);
    };

    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let (header, used) = loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        update(&|s| s.bytes += n);
        if let Some(done) = parse_header(&buf) {
            break done;
        }
        if buf.len() > MAX_HEADER {
            break (Header::Malformed, 0);
        }
    };
    let raw = buf[..used].to_vec();
    update(&|s| {
        s.raw_header = (used > 0).then(|| raw.clone());
        s.header = Some(header.clone());
    });
    let greeting = match header {
        Header::Proxy { source, .. } => format!("client={source} backend={index}\n"),
        Header::Absent => format!("client=none backend={index}\n"),
        // A health check gets one line and the end of the connection.
        Header::Local => {
            stream.write_all(format!("local backend={index}\n").as_bytes())?;
            return Ok(());
        }
        // A bad header ends the connection, as a strict PROXY-aware server does.
        Header::Malformed => return Ok(()),
    };
    stream.write_all(greeting.as_bytes())?;
    stream.write_all(&buf[used..])?;
    stream.set_read_timeout(None)?;
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        update(&|s| s.bytes += n);
        stream.write_all(&chunk[..n])?;
    }
}

/// Reads a v2 header at the start of `buf`: `None` while it is incomplete, else what it says
/// and how many bytes it took (0 when there is none).
///
/// What the start of the stream says, and how many bytes the header takes; `None` until
/// enough bytes are there to tell. Read with sluice's own userspace parser, TLVs and CRC32C
/// included, as the edge listener will.
fn parse_header(buf: &[u8]) -> Option<(Header, usize)> {
    match parse(buf) {
        Ok(Parsed {
            header: ParsedHeader::V2(h),
            len,
        }) => {
            let header = match (h.command, h.addresses) {
                (
                    Command::Proxy,
                    Addresses::Inet {
                        source,
                        destination,
                    },
                ) => Header::Proxy {
                    source,
                    destination,
                },
                (Command::Local, _) => Header::Local,
                // A backend of a TCP service takes no UDP or UNIX clients.
                (Command::Proxy, _) => Header::Malformed,
            };
            Some((header, len))
        }
        Err(Error::Incomplete) => None,
        Err(Error::NotProxy) => Some((Header::Absent, 0)),
        // v1 headers and every malformation: the backend refuses the stream.
        Ok(Parsed { len, .. }) => Some((Header::Malformed, len)),
        Err(_) => Some((Header::Malformed, buf.len())),
    }
}

/// What a client got back within its wait.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A complete line (without the newline).
    Line(String),
    /// The peer closed the connection after sending these bytes (maybe none).
    Closed(String),
    /// Nothing, or no complete line, within the wait: the bytes that did arrive.
    Silent(String),
}

impl Reply {
    /// The `client=` and `backend=` of a backend's answer line.
    pub fn answer(&self) -> Result<(String, usize)> {
        let Reply::Line(line) = self else {
            bail!("no answer line: {self:?}");
        };
        let mut client = None;
        let mut backend = None;
        for field in line.split_whitespace() {
            if let Some(v) = field.strip_prefix("client=") {
                client = Some(v.to_owned());
            } else if let Some(v) = field.strip_prefix("backend=") {
                backend = v.parse().ok();
            }
        }
        Ok((
            client.ok_or_else(|| anyhow!("no client= in {line:?}"))?,
            backend.ok_or_else(|| anyhow!("no backend= in {line:?}"))?,
        ))
    }
}

/// Writes `data` on `stream` (if any), then reads one line, waiting at most `wait`.
pub fn send_and_read_line(stream: &mut TcpStream, data: &[u8], wait: Duration) -> Result<Reply> {
    if !data.is_empty() {
        stream.write_all(data).context("sending")?;
    }
    stream.set_read_timeout(Some(wait))?;
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(0) => return Ok(Reply::Closed(String::from_utf8_lossy(&got).into_owned())),
            Ok(_) if byte[0] == b'\n' => {
                return Ok(Reply::Line(String::from_utf8_lossy(&got).into_owned()))
            }
            Ok(_) => got.push(byte[0]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(Reply::Silent(String::from_utf8_lossy(&got).into_owned()))
            }
            Err(err) => return Err(err).context("reading the reply"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_common::proxy::{V2_CMD_LOCAL, V2_CMD_PROXY, V2_FAM_TCP4, V2_SIGNATURE};

    fn v4_header(cmd: u8) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x20 | cmd, V2_FAM_TCP4, 0, 12]);
        h.extend_from_slice(&[198, 18, 0, 2, 198, 18, 1, 2]);
        h.extend_from_slice(&40000u16.to_be_bytes());
        h.extend_from_slice(&7000u16.to_be_bytes());
        h
    }

    #[test]
    fn parser_reads_what_haproxy_sends() {
        let h = v4_header(V2_CMD_PROXY);
        assert_eq!(parse_header(&h[..15]), None);
        let (header, used) = parse_header(&[&h[..], b"data"].concat()).expect("complete");
        assert_eq!(used, 28);
        assert_eq!(
            header,
            Header::Proxy {
                source: "198.18.0.2:40000".parse().unwrap(),
                destination: "198.18.1.2:7000".parse().unwrap(),
            }
        );
        assert_eq!(
            parse_header(&v4_header(V2_CMD_LOCAL)),
            Some((Header::Local, 28))
        );
        assert_eq!(parse_header(b"hello"), Some((Header::Absent, 0)));
        let mut bad = v4_header(V2_CMD_PROXY);
        bad[12] = 0x11;
        assert_eq!(parse_header(&bad), Some((Header::Malformed, 28)));
    }

    #[test]
    fn replies_name_client_and_backend() {
        let r = Reply::Line("client=198.18.0.2:40000 backend=2".into());
        assert_eq!(r.answer().unwrap(), ("198.18.0.2:40000".into(), 2));
        assert!(Reply::Silent(String::new()).answer().is_err());
    }
}
