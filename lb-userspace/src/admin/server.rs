//! The daemon's side of the admin socket: one JSON request line per connection, one JSON
//! response line, then close.

use std::{
    io,
    os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::oneshot,
    task::{JoinHandle, JoinSet},
};

use super::protocol::{Request, Response};

/// A request line longer than this is refused: real requests are a few hundred bytes.
pub const MAX_REQUEST_BYTES: u64 = 64 * 1024;
/// How long a client gets to send its request (and to take the answer) before the server hangs
/// up, so a stuck client cannot pin a task forever.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long probing an existing socket may take; a daemon too busy to accept within this is
/// still alive.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Answers admin requests; implemented by the daemon.
pub trait Handler: Send + Sync + 'static {
    /// May block (map reads, reload): the server calls it on the blocking thread pool.
    fn handle(&self, request: Request) -> Response;
}

impl<F> Handler for F
where
    F: Fn(Request) -> Response + Send + Sync + 'static,
{
    fn handle(&self, request: Request) -> Response {
        self(request)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("creating the admin socket directory {}: {error}", dir.display())]
    CreateDir { dir: PathBuf, error: io::Error },
    #[error(
        "{} exists and is not a socket; refusing to replace it (move it away or configure another admin socket path)",
        path.display()
    )]
    NotASocket { path: PathBuf },
    #[error("another sluice daemon is listening on {} (stop it first, or give this one another admin socket path)", path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("checking the existing admin socket {}: {error}", path.display())]
    Probe { path: PathBuf, error: io::Error },
    #[error("removing the stale admin socket {}: {error}", path.display())]
    RemoveStale { path: PathBuf, error: io::Error },
    #[error("binding the admin socket {}: {error}", path.display())]
    Bind { path: PathBuf, error: io::Error },
    #[error("restricting the admin socket {} to mode 0600: {error}", path.display())]
    Chmod { path: PathBuf, error: io::Error },
}

/// The listening admin socket. Dropping it stops serving and removes the socket file.
pub struct AdminServer {
    path: PathBuf,
    /// Device and inode of the socket we bound, so Drop never unlinks a socket that a later
    /// daemon bound at the same path.
    identity: (u64, u64),
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl AdminServer {
    /// Binds `path` (creating the parent directory with mode 0700 if missing), chmod 0600, and
    /// serves until dropped or shut down.
    ///
    /// A socket file left by a killed daemon is replaced; a live daemon on `path`, or anything
    /// at `path` that is not a socket, is an error.
    pub async fn bind(path: &Path, handler: Arc<dyn Handler>) -> Result<AdminServer, AdminError> {
        create_parent(path)?;
        clear_stale(path).await?;
        let listener = UnixListener::bind(path).map_err(|error| match error.kind() {
            // Someone bound it between our probe and our bind.
            io::ErrorKind::AddrInUse => AdminError::AlreadyRunning {
                path: path.to_owned(),
            },
            _ => AdminError::Bind {
                path: path.to_owned(),
                error,
            },
        })?;
        // Between bind and chmod the socket has the umask's mode; the 0700 parent directory
        // (when we created it) keeps others out of that window.
        let meta = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::metadata(path))
            .map_err(|error| {
                // Leave no socket with the wrong mode behind.
                let _ = std::fs::remove_file(path);
                AdminError::Chmod {
                    path: path.to_owned(),
                    error,
                }
            })?;
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(serve(listener, handler, stopped));
        tracing::debug!(path = %path.display(), "admin socket listening");
        Ok(AdminServer {
            path: path.to_owned(),
            identity: (meta.dev(), meta.ino()),
            stop: Some(stop),
            task,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, waits for the requests already being answered, and removes the socket.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Err(e) = (&mut self.task).await {
            if e.is_panic() {
                tracing::error!("admin socket task panicked: {e}");
            }
        }
    }
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.task.abort();
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.file_type().is_socket() && (m.dev(), m.ino()) == self.identity);
        if ours {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), "removing the admin socket: {e}");
            }
        }
    }
}

fn create_parent(path: &Path) -> Result<(), AdminError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() {
        // An existing directory is the operator's choice; its mode is not ours to change.
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|error| AdminError::CreateDir {
            dir: dir.to_owned(),
            error,
        })
}

/// Removes a socket nobody answers on; refuses to touch anything else.
async fn clear_stale(path: &Path) -> Result<(), AdminError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(AdminError::Probe {
                path: path.to_owned(),
                error,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(AdminError::NotASocket {
            path: path.to_owned(),
        });
    }
    match tokio::time::timeout(PROBE_TIMEOUT, UnixStream::connect(path)).await {
        // Connected, or the peer's backlog is full: either way a daemon is alive there.
        Ok(Ok(_)) | Err(_) => Err(AdminError::AlreadyRunning {
            path: path.to_owned(),
        }),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "removing the stale admin socket of a previous daemon");
            std::fs::remove_file(path).map_err(|error| AdminError::RemoveStale {
                path: path.to_owned(),
                error,
            })
        }
        Ok(Err(error)) => Err(AdminError::Probe {
            path: path.to_owned(),
            error,
        }),
    }
}

async fn serve(listener: UnixListener, handler: Arc<dyn Handler>, mut stop: oneshot::Receiver<()>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(answer(stream, Arc::clone(&handler)));
                }
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning on the error.
                    tracing::warn!("admin socket accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn answer(stream: UnixStream, handler: Arc<dyn Handler>) {
    let (read, mut write) = stream.into_split();
    let response = match tokio::time::timeout(IO_TIMEOUT, read_request(read)).await {
        Err(_) => Response::error(format!(
            "bad request: no complete request line within {}s",
            IO_TIMEOUT.as_secs()
        )),
        // The peer connected and hung up without asking anything (e.g. a liveness probe).
        Ok(Ok(None)) => return,
        Ok(Ok(Some(line))) => match serde_json::from_slice::<Request>(&line) {
            Err(e) => Response::error(format!("bad request: {e}")),
            Ok(request) => {
                tracing::debug!(?request, "admin request");
                let handler = Arc::clone(&handler);
                match tokio::task::spawn_blocking(move || handler.handle(request)).await {
                    Ok(response) => response,
                    Err(e) => {
                        tracing::error!("admin handler failed: {e}");
                        Response::error("internal error: the request handler panicked")
                    }
                }
            }
        },
        Ok(Err(message)) => Response::error(format!("bad request: {message}")),
    };
    let mut line = match serde_json::to_vec(&response) {
        Ok(line) => line,
        Err(e) => {
            tracing::error!("encoding an admin response: {e}");
            return;
        }
    };
    line.push(b'\n');
    let sent = tokio::time::timeout(IO_TIMEOUT, async {
        write.write_all(&line).await?;
        write.shutdown().await
    })
    .await;
    match sent {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("admin client went away: {e}"),
        Err(_) => tracing::debug!("admin client did not take its answer in time"),
    }
}

/// One request line without its newline; `None` when the peer sent nothing at all. A last line
/// without a newline counts, so `printf '{...}' | socat` works.
async fn read_request(read: impl tokio::io::AsyncRead + Unpin) -> Result<Option<Vec<u8>>, String> {
    let mut reader = BufReader::new(read.take(MAX_REQUEST_BYTES + 1));
    let mut line = Vec::new();
    let read = reader
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if line.len() as u64 > MAX_REQUEST_BYTES {
        return Err(format!(
            "request longer than {} KiB",
            MAX_REQUEST_BYTES / 1024
        ));
    }
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err("empty request".to_owned());
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests;
