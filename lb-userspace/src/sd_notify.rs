//! systemd's readiness protocol (`Type=notify`, `sd_notify(3)`): one datagram of `KEY=value`
//! lines to the socket named by `$NOTIFY_SOCKET`. The daemon sends `READY=1` the first time
//! `/health/ready` would answer UP and `STOPPING=1` when a stop signal arrives. Without
//! `$NOTIFY_SOCKET` (not started by systemd, or by a unit of another type) every call does
//! nothing. Written here on std's `UnixDatagram`, not a crate: the protocol is this file, and
//! it needs no unsafe.

use std::{
    io,
    os::unix::net::{SocketAddr, UnixDatagram},
    sync::Arc,
    time::Duration,
};

use crate::observe::Observe;

/// How often readiness is looked at until it first holds: the probe reads state the daemon
/// keeps at hand (no lock, no map), so this costs nothing worth counting.
const READY_POLL: Duration = Duration::from_millis(50);

/// Where the notifications go, read once from `$NOTIFY_SOCKET`.
#[derive(Debug, Clone)]
pub struct Notifier {
    /// `None`: not run under a notify unit; every message is dropped.
    target: Option<String>,
}

impl Notifier {
    /// The socket systemd (or a test) named in `$NOTIFY_SOCKET`.
    pub fn from_env() -> Notifier {
        Notifier {
            target: std::env::var("NOTIFY_SOCKET")
                .ok()
                .filter(|s| !s.is_empty()),
        }
    }

    /// Starts the task that sends `READY=1` once `source` is ready (see [`ready_when_ready`]);
    /// returns the notifier for `STOPPING=1`.
    #[must_use = "the notifier sends STOPPING=1 at the stop signal"]
    pub fn when_ready(self, source: Arc<dyn Observe>) -> Notifier {
        tokio::spawn(ready_when_ready(source, self.clone()));
        self
    }

    /// The service is up: systemd finishes `systemctl start` and starts units ordered after it.
    pub fn ready(&self) {
        self.send_logged("READY=1\nSTATUS=serving");
    }

    /// The service is stopping: systemd shows `deactivating` at once instead of waiting for
    /// the process to exit.
    pub fn stopping(&self) {
        self.send_logged("STOPPING=1\nSTATUS=draining");
    }

    /// A lost notification costs readiness (systemd then times the start out) but never the
    /// data path: log it and go on.
    fn send_logged(&self, message: &str) {
        if let Err(error) = self.send(message) {
            tracing::warn!(%error, message, "sd_notify to $NOTIFY_SOCKET");
        }
    }

    /// Sends `message` as one datagram; `Ok` without a socket to send to.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let Some(target) = &self.target else {
            return Ok(());
        };
        let socket = UnixDatagram::unbound()?;
        let addr = socket_addr(target)?;
        let sent = socket.send_to_addr(message.as_bytes(), &addr)?;
        if sent == message.len() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                message.len()
            )))
        }
    }
}

/// Sends `READY=1` the first time `source` is ready as `/health/ready` judges it (dataplane
/// attached, every VIP with a backend that takes new flows, not shutting down). Returns
/// without sending if shutdown starts first: systemd then hears `STOPPING=1` only.
pub async fn ready_when_ready(source: Arc<dyn Observe>, notifier: Notifier) {
    if notifier.target.is_none() {
        return;
    }
    loop {
        if crate::management::ready(source.as_ref()) {
            notifier.ready();
            return;
        }
        if source.health().is_ok_and(|s| s.shutting_down) {
            return;
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// `$NOTIFY_SOCKET` is a path, or `@name` for Linux's abstract namespace (systemd uses both).
fn socket_addr(target: &str) -> io::Result<SocketAddr> {
    match target.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(target),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notifier(target: &str) -> Notifier {
        Notifier {
            target: Some(target.to_owned()),
        }
    }

    #[test]
    fn sends_one_datagram_to_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        notifier(path.to_str().unwrap()).ready();
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }

    #[test]
    fn reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("sluice-sd-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
            .unwrap();
        notifier(&format!("@{name}")).stopping();
        let mut buf = [0u8; 256];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1\nSTATUS=draining");
    }

    #[test]
    fn without_a_socket_nothing_is_sent() {
        assert!(Notifier { target: None }.send("READY=1").is_ok());
    }

    #[test]
    fn a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = notifier(dir.path().join("absent").to_str().unwrap())
            .send("READY=1")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
