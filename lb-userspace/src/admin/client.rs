//! The CLI's side of the admin socket: connect, send one request line, read one response line.

use std::{
    io::{self, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::protocol::{Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no sluice daemon is running (nothing listening on {})", path.display())]
    NotRunning { path: PathBuf },
    #[error("permission denied on {} (the admin socket is root-only; run as root)", path.display())]
    PermissionDenied { path: PathBuf },
    #[error("connecting to the sluice daemon on {}: {error}", path.display())]
    Connect { path: PathBuf, error: io::Error },
    #[error("the sluice daemon on {} did not answer within {}", path.display(), humantime::format_duration(*timeout))]
    Timeout { path: PathBuf, timeout: Duration },
    #[error("talking to the sluice daemon on {}: {error}", path.display())]
    Io { path: PathBuf, error: io::Error },
    #[error("the sluice daemon on {} closed the connection without answering", path.display())]
    NoAnswer { path: PathBuf },
    #[error("unreadable answer from the sluice daemon on {}: {error}", path.display())]
    BadResponse {
        path: PathBuf,
        error: serde_json::Error,
    },
}

/// Sends `request` to the daemon listening on `path` and waits for its answer; `timeout` bounds
/// the whole exchange, not each read.
pub fn request(path: &Path, request: &Request, timeout: Duration) -> Result<Response, ClientError> {
    let deadline = Instant::now() + timeout;
    let mut stream = UnixStream::connect(path).map_err(|e| connect_error(path, e))?;
    let io_error = |error: io::Error| match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout {
            path: path.to_owned(),
            timeout,
        },
        _ => ClientError::Io {
            path: path.to_owned(),
            error,
        },
    };

    let mut line = serde_json::to_vec(request).map_err(|e| ClientError::Io {
        path: path.to_owned(),
        error: e.into(),
    })?;
    line.push(b'\n');
    stream
        .set_write_timeout(Some(remaining(deadline, path, timeout)?))
        .map_err(io_error)?;
    stream.write_all(&line).map_err(io_error)?;

    // Read until the newline rather than EOF, so an answer is complete even if the server kept
    // the connection open; re-arm the timeout each read so `timeout` is a deadline.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline, path, timeout)?))
            .map_err(io_error)?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error(e)),
        };
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.last() == Some(&b'\n') {
            break;
        }
    }
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Err(ClientError::NoAnswer {
            path: path.to_owned(),
        });
    }
    serde_json::from_slice(&answer).map_err(|error| ClientError::BadResponse {
        path: path.to_owned(),
        error,
    })
}

fn remaining(deadline: Instant, path: &Path, timeout: Duration) -> Result<Duration, ClientError> {
    // `set_*_timeout(Some(0))` is an error, so an expired deadline is reported here.
    match deadline.checked_duration_since(Instant::now()) {
        Some(left) if !left.is_zero() => Ok(left),
        _ => Err(ClientError::Timeout {
            path: path.to_owned(),
            timeout,
        }),
    }
}

/// Turns a failed connect into what the operator should do about it.
fn connect_error(path: &Path, error: io::Error) -> ClientError {
    let path = path.to_owned();
    match error.kind() {
        // Missing file: never started or cleanly stopped. Refused: killed, socket left behind.
        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
            ClientError::NotRunning { path }
        }
        io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { path },
        _ => ClientError::Connect { path, error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_socket_reads_as_no_daemon() {
        let path = std::env::temp_dir().join(format!("sluice-no-such-{}.sock", std::process::id()));
        let err = request(&path, &Request::Status, Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "no sluice daemon is running (nothing listening on {})",
                path.display()
            )
        );
    }

    #[test]
    fn connect_errors_are_actionable() {
        let path = Path::new("/run/sluice/admin.sock");
        let denied = connect_error(path, io::ErrorKind::PermissionDenied.into());
        assert_eq!(
            denied.to_string(),
            "permission denied on /run/sluice/admin.sock (the admin socket is root-only; run as root)"
        );
        let refused = connect_error(path, io::ErrorKind::ConnectionRefused.into());
        assert_eq!(
            refused.to_string(),
            "no sluice daemon is running (nothing listening on /run/sluice/admin.sock)"
        );
    }

    #[test]
    fn silent_server_times_out() {
        let dir = std::env::temp_dir().join(format!("sluice-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("silent.sock");
        let _ = std::fs::remove_file(&path);
        // Accepted by the kernel backlog, never answered.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = request(&path, &Request::Status, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert!(
            err.to_string().contains("did not answer within 200ms"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
