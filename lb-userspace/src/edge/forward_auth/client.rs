//! HTTP/1.1 connections to one auth service, kept open and reused like the pool's backend
//! connections (`edge::upstream`): a connection goes back to the idle list once its answer was
//! read to the end and hyper says it is ready for the next request.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{client::conn::http1::SendRequest, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Answer, AskError};

/// Idle connections kept; more are closed when they come back. Each concurrent check needs a
/// connection of its own, so this is the check concurrency that runs without connecting.
const MAX_IDLE: usize = 256;

/// The most of an answer's body read (and thrown away) so its connection can be reused; a
/// longer one closes the connection instead. oauth2-proxy's bodies are a few bytes.
const MAX_BODY: usize = 64 * 1024;

type Sender = SendRequest<Empty<Bytes>>;

/// One auth service's connections.
pub struct Client {
    /// As written in the URL (brackets around an IPv6 address removed).
    host: String,
    port: u16,
    /// Shared with the tasks that hand a connection back once it is ready.
    idle: Arc<Mutex<Vec<Sender>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub fn new(host: &str, port: u16) -> Client {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        Client {
            host: host.to_owned(),
            port,
            idle: Arc::default(),
        }
    }

    /// Sends the request `make` builds (bodiless, so it may be sent twice) and reads the
    /// answer. A kept connection the service closed while it sat idle fails the request: it
    /// is then built and sent once more on a new connection.
    pub(super) async fn ask(
        &self,
        make: impl Fn() -> Request<Empty<Bytes>>,
    ) -> Result<Answer, AskError> {
        if let Some(sender) = self.take() {
            if let Ok(answer) = self.exchange(sender, make()).await {
                return Ok(answer);
            }
        }
        let sender = self.connect().await?;
        self.exchange(sender, make()).await
    }

    async fn exchange(
        &self,
        mut sender: Sender,
        req: Request<Empty<Bytes>>,
    ) -> Result<Answer, AskError> {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| AskError::Failed(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        // Read to its end, so the connection can serve the next check; a body too long to
        // bother with closes it instead (the answer stands: it is in the head). The answer
        // does not wait for the connection to turn ready: hyper's connection task marks it so
        // after reading the end, often only after this task went on.
        if Limited::new(body, MAX_BODY).collect().await.is_ok() {
            if sender.is_ready() {
                put_back(&self.idle, sender);
            } else {
                let idle = Arc::clone(&self.idle);
                tokio::spawn(async move {
                    if sender.ready().await.is_ok() {
                        put_back(&idle, sender);
                    }
                });
            }
        }
        Ok(Answer {
            status: parts.status,
            headers: parts.headers,
        })
    }

    fn take(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    async fn connect(&self) -> Result<Sender, AskError> {
        let stream = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| AskError::Failed(format!("connecting to {}: {e}", self.host)))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| AskError::Failed(e.to_string()))?;
        let host = self.host.clone();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%host, %error, "auth service connection ended");
            }
        });
        Ok(sender)
    }
}

fn put_back(idle: &Mutex<Vec<Sender>>, sender: Sender) {
    let mut idle = idle.lock().unwrap_or_else(PoisonError::into_inner);
    if idle.len() < MAX_IDLE {
        idle.push(sender);
    }
}
