//! One peer's session (RFC 4271 §8, reduced to what an announce-only speaker that never
//! accepts connections needs): connect, OPEN, KEEPALIVE, then UPDATEs that make the peer's
//! view of this speaker's routes match what the daemon wants, until an error, after which it
//! waits (1 s, doubling to 30 s; back to 1 s after a session that was established) and starts
//! over. UPDATEs the peer sends are read and dropped: nothing is ever installed.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpSocket, TcpStream,
    },
    sync::{mpsc, watch},
    time::sleep_until,
};

use super::message::{self, Family, Open, Path, ProtocolError};
use super::Desired;
use crate::config::Password;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 4271 §8: "a large value (... 4 minutes)" for the hold timer before the OPEN arrives.
const OPEN_WAIT: Duration = Duration::from_mins(4);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Where a session is (RFC 4271's FSM states, without Active: the speaker never listens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    Idle,
    Connect,
    OpenSent,
    OpenConfirm,
    Established,
}

impl SessionState {
    pub const fn name(self) -> &'static str {
        match self {
            SessionState::Idle => "idle",
            SessionState::Connect => "connect",
            SessionState::OpenSent => "open-sent",
            SessionState::OpenConfirm => "open-confirm",
            SessionState::Established => "established",
        }
    }
}

/// What `status` and `/metrics` read about one peer.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub state: SessionState,
    /// When the session became established.
    pub since: Option<Instant>,
    /// The routes the peer has from this speaker now.
    pub announced: Vec<IpAddr>,
    /// The `Desired::generation` the peer's view matches.
    pub synced: u64,
    pub last_error: Option<String>,
}

impl Default for PeerView {
    fn default() -> Self {
        PeerView {
            state: SessionState::Idle,
            since: None,
            announced: Vec::new(),
            synced: 0,
            last_error: None,
        }
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("connecting: {0}")]
    Connect(std::io::Error),
    #[error(
        "connecting: no answer within {}s{}",
        CONNECT_TIMEOUT.as_secs(),
        if *md5 {
            "; with TCP MD5 on, a router that has another key (or none) for this neighbour \
             drops the connection without a word: check the password on both sides"
        } else {
            ""
        }
    )]
    ConnectTimeout { md5: bool },
    #[error("setting the TCP MD5 key (TCP_MD5SIG): {0}")]
    Md5(std::io::Error),
    #[error("the connection failed: {0}")]
    Io(std::io::Error),
    #[error("the peer closed the connection")]
    Closed,
    #[error("the peer sent NOTIFICATION {code}/{subcode} ({})", message::notification_name(*code, *subcode))]
    Notified { code: u8, subcode: u8 },
    /// This speaker found the error and sent the NOTIFICATION.
    #[error("sent {0}")]
    Protocol(ProtocolError),
    #[error("no OPEN from the peer within {}s", OPEN_WAIT.as_secs())]
    OpenTimeout,
}

/// This speaker's side of every session.
#[derive(Debug, Clone)]
pub struct Local {
    pub open: Open,
    pub path: Path,
}

/// The peer as configured.
#[derive(Debug, Clone)]
pub struct Peer {
    pub address: SocketAddr,
    pub remote_as: u32,
    pub hold_time: u16,
    /// The TCP MD5 key (its `Debug` is redacted).
    pub password: Option<Password>,
}

/// Runs `peer`'s session, and runs it again after every failure, until the daemon exits
/// (the task is never joined: the session ends with the process, and so do its routes).
pub async fn run(
    peer: Peer,
    local: Local,
    mut desired: watch::Receiver<Desired>,
    view: Arc<Mutex<PeerView>>,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        set(&view, |v| v.state = SessionState::Connect);
        let result = session(&peer, &local, &mut desired, &view).await;
        let was_established = view_of(&view).since.is_some();
        let error = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        tracing::warn!(peer = %peer.address, %error, "BGP session down");
        set(&view, |v| {
            *v = PeerView {
                last_error: Some(error.to_string()),
                ..PeerView::default()
            };
        });
        if was_established {
            backoff = FIRST_BACKOFF;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn set(view: &Mutex<PeerView>, f: impl FnOnce(&mut PeerView)) {
    f(&mut view
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner));
}

fn view_of(view: &Mutex<PeerView>) -> PeerView {
    view.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

type Message = (u8, Vec<u8>);

async fn read_message(rd: &mut OwnedReadHalf) -> Result<Message, SessionError> {
    let mut head = [0u8; message::HEADER_LEN];
    match rd.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            return Err(SessionError::Closed)
        }
        Err(e) => return Err(SessionError::Io(e)),
    }
    let (kind, len) = message::header(&head).map_err(SessionError::Protocol)?;
    let mut body = vec![0u8; len - message::HEADER_LEN];
    rd.read_exact(&mut body).await.map_err(SessionError::Io)?;
    Ok((kind, body))
}

/// The reader task, stopped when the session ends: a peer that vanished would otherwise keep
/// it (and the socket) waiting forever.
struct Reader(tokio::task::JoinHandle<()>);

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads messages into a channel, so the session's `select!` never cancels a half-read one.
fn reader(mut rd: OwnedReadHalf) -> (mpsc::Receiver<Result<Message, SessionError>>, Reader) {
    let (tx, rx) = mpsc::channel(16);
    let task = tokio::spawn(async move {
        loop {
            let m = read_message(&mut rd).await;
            let stop = m.is_err();
            if tx.send(m).await.is_err() || stop {
                return;
            }
        }
    });
    (rx, Reader(task))
}

/// `Ok(())` only when the daemon dropped the speaker (it is exiting).
async fn session(
    peer: &Peer,
    local: &Local,
    desired: &mut watch::Receiver<Desired>,
    view: &Mutex<PeerView>,
) -> Result<(), SessionError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect(peer))
        .await
        .map_err(|_| SessionError::ConnectTimeout {
            md5: peer.password.is_some(),
        })??;
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    let (mut rx, _reader) = reader(rd);
    let (hold, families) = handshake(peer, local, &mut wr, &mut rx, view).await?;
    set(view, |v| {
        v.state = SessionState::Established;
        v.since = Some(Instant::now());
        v.last_error = None;
    });
    tracing::info!(peer = %peer.address, hold_secs = hold.as_secs(), "BGP session established");

    let path = Path {
        internal: peer.remote_as == local.path.local_as,
        ..local.path.clone()
    };
    let mut sent: BTreeMap<IpAddr, Vec<u32>> = BTreeMap::new();
    // Hold time 0: no keepalives and no hold timer, so "never".
    let far = Duration::from_hours(24 * 365);
    let keepalive_every = if hold.is_zero() { far } else { hold / 3 };
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + keepalive_every,
        keepalive_every,
    );
    let mut hold_deadline = tokio::time::Instant::now() + if hold.is_zero() { far } else { hold };
    let mut dirty = true;
    loop {
        if dirty {
            dirty = false;
            let latest = desired.borrow_and_update().clone();
            sync(&mut wr, &path, &families, &latest, &mut sent).await?;
            set(view, |v| {
                v.announced = sent.keys().copied().collect();
                v.synced = latest.generation;
            });
        }
        tokio::select! {
            changed = desired.changed() => {
                if changed.is_err() {
                    // The daemon is exiting: say so, rather than leave the peer to time out.
                    let _ = wr.write_all(&message::notification(message::ADMINISTRATIVE_SHUTDOWN)).await;
                    return Ok(());
                }
                dirty = true;
            }
            _ = keepalive.tick() => {
                wr.write_all(&message::keepalive()).await.map_err(SessionError::Io)?;
            }
            m = rx.recv() => {
                let (kind, body) = match m {
                    None => return Err(SessionError::Closed),
                    Some(Err(SessionError::Protocol(e))) => return Err(refuse(&mut wr, e).await),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(m)) => m,
                };
                if !hold.is_zero() {
                    hold_deadline = tokio::time::Instant::now() + hold;
                }
                match kind {
                    message::NOTIFICATION => return Err(notified(&body)),
                    message::OPEN => return Err(refuse(&mut wr, message::FSM_ERROR).await),
                    // Announce-only: the peer's routes are read and dropped.
                    _ => {}
                }
            }
            () = sleep_until(hold_deadline) => {
                return Err(refuse(&mut wr, message::HOLD_TIMER_EXPIRED).await);
            }
        }
    }
}

/// A TCP connection to the peer, signed with its MD5 key from the SYN on when it has one.
async fn connect(peer: &Peer) -> Result<TcpStream, SessionError> {
    let socket = match peer.address {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(SessionError::Connect)?;
    if let Some(key) = &peer.password {
        use std::os::fd::AsFd as _;
        crate::ffi::set_tcp_md5(socket.as_fd(), peer.address.ip(), key.bytes())
            .map_err(SessionError::Md5)?;
    }
    socket
        .connect(peer.address)
        .await
        .map_err(SessionError::Connect)
}

/// OPEN, the peer's OPEN checked against the configuration, KEEPALIVE both ways: the hold
/// time agreed on and the families the peer takes.
async fn handshake(
    peer: &Peer,
    local: &Local,
    wr: &mut OwnedWriteHalf,
    rx: &mut mpsc::Receiver<Result<Message, SessionError>>,
    view: &Mutex<PeerView>,
) -> Result<(Duration, Vec<Family>), SessionError> {
    let mut open = local.open.clone();
    open.hold_time = peer.hold_time;
    wr.write_all(&open.encode())
        .await
        .map_err(SessionError::Io)?;
    set(view, |v| v.state = SessionState::OpenSent);

    // OpenSent: the peer's OPEN, checked against what is configured.
    let (kind, body) = next(rx, OPEN_WAIT).await?;
    if kind != message::OPEN {
        return Err(refuse(wr, message::FSM_ERROR).await);
    }
    let theirs = match message::parse_open(&body) {
        Ok(o) => o,
        Err(e) => return Err(refuse(wr, e).await),
    };
    if !theirs.four_octet_as {
        // The AS_PATH is encoded with 4-octet ASes; a 2-octet-only peer would misread it.
        return Err(refuse(wr, message::UNSUPPORTED_CAPABILITY).await);
    }
    if theirs.peer_as != peer.remote_as {
        return Err(refuse(wr, message::BAD_PEER_AS).await);
    }
    if theirs.hold_time == 1 || theirs.hold_time == 2 {
        return Err(refuse(wr, message::UNACCEPTABLE_HOLD_TIME).await);
    }
    let hold = Duration::from_secs(u64::from(peer.hold_time.min(theirs.hold_time)));
    // RFC 4760 §8: a peer that sends no multiprotocol capability speaks IPv4 unicast only.
    let families = if theirs.families.is_empty() {
        vec![Family::Ipv4]
    } else {
        theirs.families
    };
    wr.write_all(&message::keepalive())
        .await
        .map_err(SessionError::Io)?;
    set(view, |v| v.state = SessionState::OpenConfirm);

    // OpenConfirm: the peer's KEEPALIVE.
    let wait = if hold.is_zero() { OPEN_WAIT } else { hold };
    let (kind, _) = next(rx, wait).await?;
    if kind != message::KEEPALIVE {
        return Err(refuse(wr, message::FSM_ERROR).await);
    }
    Ok((hold, families))
}

/// The next message within `wait`; a NOTIFICATION ends the session with its code.
async fn next(
    rx: &mut mpsc::Receiver<Result<Message, SessionError>>,
    wait: Duration,
) -> Result<Message, SessionError> {
    match tokio::time::timeout(wait, rx.recv()).await {
        Err(_) => Err(SessionError::OpenTimeout),
        Ok(None) => Err(SessionError::Closed),
        Ok(Some(Err(e))) => Err(e),
        Ok(Some(Ok((message::NOTIFICATION, body)))) => Err(notified(&body)),
        Ok(Some(Ok(m))) => Ok(m),
    }
}

fn notified(body: &[u8]) -> SessionError {
    SessionError::Notified {
        code: body.first().copied().unwrap_or(0),
        subcode: body.get(1).copied().unwrap_or(0),
    }
}

/// Sends the NOTIFICATION for `e` (best effort: the session ends either way).
async fn refuse(wr: &mut OwnedWriteHalf, e: ProtocolError) -> SessionError {
    let _ = wr.write_all(&message::notification(e)).await;
    SessionError::Protocol(e)
}

/// Sends what makes the peer's routes from this speaker equal `want` (in the families the
/// session carries): withdrawals first, then announcements.
async fn sync(
    wr: &mut OwnedWriteHalf,
    path: &Path,
    families: &[Family],
    want: &Desired,
    sent: &mut BTreeMap<IpAddr, Vec<u32>>,
) -> Result<(), SessionError> {
    let wanted: BTreeMap<IpAddr, Vec<u32>> = want
        .routes
        .iter()
        .filter(|(a, _)| families.contains(&Family::of(**a)))
        .map(|(a, c)| (*a, c.clone()))
        .collect();
    let mut out = Vec::new();
    for gone in sent.keys().filter(|a| !wanted.contains_key(a)) {
        out.extend_from_slice(&message::withdraw(*gone));
    }
    for (address, communities) in &wanted {
        if sent.get(address) != Some(communities) {
            out.extend_from_slice(&message::announce(path, *address, communities));
        }
    }
    if !out.is_empty() {
        wr.write_all(&out).await.map_err(SessionError::Io)?;
    }
    *sent = wanted;
    Ok(())
}

#[cfg(test)]
mod tests;
