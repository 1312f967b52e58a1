//! PROXY protocol v1/v2 headers on an edge listener, from trusted proxies only.
//!
//! [`read`] takes the header off the start of a TCP stream and returns the client it names.
//! It never consumes a byte past the header, because the TLS handshake (or plain HTTP) follows
//! on the same stream:
//! - v2: the 16 fixed bytes, then exactly the length they announce;
//! - v1: the line is read up to and including its first `\n` (found by peeking), never more
//!   than the 107 bytes the spec allows.
//!
//! The whole header must arrive within the caller's timeout ([`HEADER_TIMEOUT`] on the
//! listener). Whether the peer may send a header at all is the caller's decision (the
//! listener's `trusted_proxies`); this module only reads.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use lb_common::proxy::{
    parse::{self, v1::V1_MAX_LEN, Addresses, Command, Header, Transport, V1Header},
    V2_FIXED_LEN,
};
use tokio::{io::AsyncReadExt as _, net::TcpStream};

use crate::config::ProxyProtocol;

/// How long a trusted proxy has to send the whole header once connected.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest v2 header: the fixed part and the most its 16-bit length can announce.
const V2_MAX_LEN: usize = V2_FIXED_LEN + u16::MAX as usize;

/// The shortest v1 line that can be valid (`PROXY UNKNOWN\r\n`), which is also shorter than
/// any v2 header: that many bytes can be read before the version is known.
const MIN_HEADER_LEN: usize = 15;

/// Why a connection's header was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("connection closed after {0} bytes, before the PROXY header was complete")]
    Closed(usize),
    #[error("reading the PROXY header: {0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Invalid(parse::Error),
    #[error("PROXY v2 header announces a datagram transport on a TCP stream")]
    Datagram,
    #[error("peer outside trusted_proxies on a listener with proxy_protocol = \"required\"")]
    Untrusted,
}

// By hand, not `#[from]`: the message prints the cause, so it is not also the `source()`.
impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Error {
        Error::Io(error)
    }
}

/// Per-listener counts of what happened to PROXY headers.
#[derive(Debug, Default)]
pub struct Counters {
    /// Headers that named a client.
    pub accepted: AtomicU64,
    /// Headers that named none (v2 LOCAL, v1 UNKNOWN, v2 UNIX addresses): the peer is the client.
    pub local: AtomicU64,
    /// Connections closed because their header was missing, malformed, late or cut short.
    pub invalid: AtomicU64,
    /// Connections closed because a peer outside `trusted_proxies` connected under `required`.
    pub untrusted: AtomicU64,
}

impl Counters {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Who a connection comes from once any PROXY header is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    /// The TCP peer, or the source of the PROXY header a trusted peer sent.
    pub addr: SocketAddr,
    /// The address the client connected to, as that PROXY header names it (the upstream
    /// balancer's own frontend): the port the client sees, for `X-Forwarded-Port`.
    pub reached: Option<SocketAddr>,
}

impl Client {
    fn direct(peer: SocketAddr) -> Client {
        Client {
            addr: peer,
            reached: None,
        }
    }
}

/// The connection's client under the listener's `policy`: the TCP `peer`, or the source of the
/// PROXY header a `trusted` peer sent. An error means the connection must be closed: a trusted
/// peer's header is missing, malformed or late (`optional` and `required` alike), or an
/// untrusted peer connected under `required`. An untrusted peer under `optional` is a direct
/// client and nothing is read: whatever it sent is the start of its TLS/HTTP stream.
pub async fn client(
    stream: &mut TcpStream,
    peer: SocketAddr,
    policy: ProxyProtocol,
    trusted: bool,
    counters: &Counters,
    timeout: Duration,
) -> Result<Client, Error> {
    match policy {
        ProxyProtocol::Off => Ok(Client::direct(peer)),
        _ if trusted => match read_addresses(stream, timeout).await {
            Ok(Some((source, destination))) => {
                Counters::count(&counters.accepted);
                Ok(Client {
                    addr: source,
                    reached: Some(destination),
                })
            }
            Ok(None) => {
                Counters::count(&counters.local);
                Ok(Client::direct(peer))
            }
            Err(e) => {
                Counters::count(&counters.invalid);
                Err(e)
            }
        },
        ProxyProtocol::Optional => Ok(Client::direct(peer)),
        ProxyProtocol::Required => {
            Counters::count(&counters.untrusted);
            Err(Error::Untrusted)
        }
    }
}

/// Reads the PROXY header at the start of `stream`, within `timeout`. `Ok(Some(client))` for
/// a header that names a TCP client, `Ok(None)` for one that names none (the peer stays the
/// client). On success the stream is positioned at the first byte after the header.
pub async fn read(stream: &mut TcpStream, timeout: Duration) -> Result<Option<SocketAddr>, Error> {
    Ok(read_addresses(stream, timeout)
        .await?
        .map(|(source, _)| source))
}

/// [`read`], with the destination the header names next to the source.
async fn read_addresses(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<(SocketAddr, SocketAddr)>, Error> {
    let mut buf = Vec::with_capacity(MIN_HEADER_LEN + 1);
    match tokio::time::timeout(timeout, read_header(stream, &mut buf)).await {
        Ok(result) => result,
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

async fn read_header(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Result<Option<(SocketAddr, SocketAddr)>, Error> {
    loop {
        match parse::parse(buf) {
            Ok(parsed) => return named_client(&parsed.header),
            Err(parse::Error::Incomplete) => {}
            Err(e) => return Err(Error::Invalid(e)),
        }
        let want = next_read(stream, buf).await?;
        if want == 0 {
            // Only when the v1 line is already at its limit; the parser refuses it then.
            return Err(Error::Invalid(parse::Error::V1TooLong));
        }
        let start = buf.len();
        buf.resize(start + want, 0);
        let dst = buf.get_mut(start..).unwrap_or_default();
        let n = stream.read(dst).await;
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                buf.truncate(start);
                return Err(Error::Io(e));
            }
        };
        buf.truncate(start + n);
        if n == 0 {
            return Err(Error::Closed(start));
        }
    }
}

/// How many more bytes may be read without passing the end of the header.
async fn next_read(stream: &TcpStream, buf: &[u8]) -> Result<usize, Error> {
    if buf.len() < MIN_HEADER_LEN {
        return Ok(MIN_HEADER_LEN - buf.len());
    }
    if parse::v2::signature_matches(buf) {
        if buf.len() < V2_FIXED_LEN {
            return Ok(V2_FIXED_LEN - buf.len());
        }
        let fixed = parse::v2::fixed(buf).map_err(Error::Invalid)?;
        let total = (V2_FIXED_LEN + fixed.len).min(V2_MAX_LEN);
        return Ok(total.saturating_sub(buf.len()));
    }
    // v1: the line ends at its first LF (a lone LF is refused by the parser). Peek at what has
    // arrived and take it up to that LF, or all of it when there is none yet.
    let room = V1_MAX_LEN.saturating_sub(buf.len());
    if room == 0 {
        return Ok(0);
    }
    let mut peek = [0u8; V1_MAX_LEN];
    let window = peek.get_mut(..room).unwrap_or_default();
    let n = stream.peek(window).await?;
    if n == 0 {
        return Err(Error::Closed(buf.len()));
    }
    let seen = window.get(..n).unwrap_or_default();
    Ok(seen.iter().position(|&b| b == b'\n').map_or(n, |i| i + 1))
}

/// The client (source) and the address it reached (destination), when the header names them.
fn named_client(header: &Header<'_>) -> Result<Option<(SocketAddr, SocketAddr)>, Error> {
    match header {
        Header::V1(V1Header::Tcp {
            source,
            destination,
        }) => Ok(Some((*source, *destination))),
        Header::V1(V1Header::Unknown) => Ok(None),
        // LOCAL, and PROXY over UNIX sockets, name no TCP client.
        Header::V2(h) => match (h.command, h.transport, &h.addresses) {
            (Command::Proxy, Transport::Datagram, _) => Err(Error::Datagram),
            (
                Command::Proxy,
                _,
                Addresses::Inet {
                    source,
                    destination,
                },
            ) => Ok(Some((*source, *destination))),
            _ => Ok(None),
        },
    }
}

#[cfg(test)]
mod tests;
