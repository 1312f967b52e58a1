//! A minimal HTTP/1.1 client connection that stays open between requests, as browsers and
//! upstream balancers keep theirs: the kind of client a graceful shutdown must not break. It
//! keeps every response header, so a test can see `Connection: close`.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};

/// Largest response body read (the test backends answer a line or a request head).
const MAX_BODY: usize = 1 << 20;

/// One response.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    /// Header lines in order, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a `Connection` header lists `close`: the server ends the connection after it.
    pub fn asks_to_close(&self) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("close"))
    }
}

/// `GET path` from the calling thread's namespace on a new connection to `addr` with
/// `Connection: close` and the `extra` headers, the answer read to the end (the body as sent,
/// not decoded), each step within `timeout`.
pub fn get_closing(
    addr: SocketAddr,
    path: &str,
    extra: &[(&str, &str)],
    timeout: Duration,
) -> Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in extra {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("Connection: close\r\n\r\n");
    s.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: no end of headers in {raw:?}"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("GET {path}: no status in {head:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// A keep-alive connection: requests one after the other, each answer read to its end.
#[derive(Debug)]
pub struct KeepAlive {
    reader: BufReader<TcpStream>,
    peer: SocketAddr,
    /// False once a response asked to close or ended with the connection.
    open: bool,
}

impl KeepAlive {
    /// Wraps a connected stream (timeouts as the caller set them).
    pub fn new(stream: TcpStream) -> Result<Self> {
        let peer = stream.peer_addr().context("peer address")?;
        Ok(Self {
            reader: BufReader::new(stream),
            peer,
            open: true,
        })
    }

    /// Whether the connection may carry another request.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// `GET path` and its whole response.
    pub fn get(&mut self, path: &str) -> Result<Reply> {
        if !self.open {
            bail!("the connection to {} was asked to close", self.peer);
        }
        let request = format!("GET {path} HTTP/1.1\r\nHost: sluice.test\r\n\r\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .with_context(|| format!("sending GET {path} to {}", self.peer))?;
        let reply = self
            .read_reply()
            .with_context(|| format!("the answer to GET {path} from {}", self.peer));
        match &reply {
            Ok(r) if !r.asks_to_close() => {}
            _ => self.open = false,
        }
        reply
    }

    /// Whether the server has closed its side: reads and expects end of file, nothing else.
    pub fn at_eof(&mut self) -> Result<bool> {
        let mut byte = [0u8; 1];
        match self.reader.read(&mut byte) {
            Ok(0) => Ok(true),
            Ok(_) => Ok(false),
            Err(err) => Err(err).with_context(|| format!("reading from {}", self.peer)),
        }
    }

    fn read_reply(&mut self) -> Result<Reply> {
        let Some(status_line) = self.next_line()? else {
            bail!("the connection closed before a response");
        };
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| anyhow!("not an HTTP/1 status line: {status_line:?}"))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| anyhow!("malformed header line {line:?}"))?;
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut reply = Reply {
            status,
            headers,
            body: String::new(),
        };
        let body = if reply
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            self.chunked()?
        } else if let Some(len) = reply.header("content-length") {
            let len: usize = len
                .parse()
                .map_err(|_| anyhow!("bad Content-Length {len:?}"))?;
            if len > MAX_BODY {
                bail!("a {len}-byte body is more than the tests expect");
            }
            let mut body = vec![0u8; len];
            self.reader
                .read_exact(&mut body)
                .context("reading the body")?;
            body
        } else if matches!(status, 100..=199 | 204 | 304) {
            Vec::new()
        } else {
            // Delimited by the end of the connection.
            self.open = false;
            let mut body = Vec::new();
            self.reader
                .by_ref()
                .take(MAX_BODY as u64)
                .read_to_end(&mut body)
                .context("reading the body")?;
            body
        };
        reply.body = String::from_utf8_lossy(&body).into_owned();
        Ok(reply)
    }

    fn chunked(&mut self) -> Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line()?;
            let size = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| anyhow!("bad chunk size line {size_line:?}"))?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            if body.len() + size > MAX_BODY {
                bail!("a chunked body longer than the tests expect");
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.reader
                .read_exact(&mut body[start..])
                .context("reading a chunk")?;
            if !self.line()?.is_empty() {
                bail!("a chunk not followed by CRLF");
            }
        }
    }

    /// One line of a response under way, without its CRLF.
    fn line(&mut self) -> Result<String> {
        self.next_line()?
            .ok_or_else(|| anyhow!("the connection closed in the middle of a response"))
    }

    /// One line without its CRLF; `None` at end of file.
    fn next_line(&mut self) -> Result<Option<String>> {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).context("reading a line")?;
        Ok((n > 0).then(|| line.trim_end_matches(['\r', '\n']).to_owned()))
    }
}
