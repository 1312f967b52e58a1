use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc::{self, error::TryRecvError, UnboundedReceiver};
use tokio::task::JoinHandle;

use super::probe::probe;
use super::{Checker, Event, Target, Tracker, Transition};
use crate::config::{CheckKind, HealthCheck};

/// Bound on every wait: generous, so a loaded CI machine does not flake; tests finish long
/// before it when things work.
const PATIENCE: Duration = Duration::from_secs(5);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn check(kind: CheckKind, port: u16, rise: u32, fall: u32) -> HealthCheck {
    HealthCheck {
        kind,
        port,
        interval: Duration::from_millis(50),
        timeout: Duration::from_secs(1),
        rise,
        fall,
    }
}

fn http_check(port: u16) -> HealthCheck {
    let kind = CheckKind::Http {
        path: "/healthz".into(),
        host: None,
        expect_status: 200,
    };
    check(kind, port, 1, 1)
}

fn target(check: HealthCheck) -> Target {
    Target {
        start_healthy: true,
        vip: "web".into(),
        backend: LOCALHOST,
        check,
    }
}

/// The next transition; first-pass events before it are skipped.
async fn next(rx: &mut UnboundedReceiver<Event>) -> Transition {
    loop {
        let event = tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("a transition in time")
            .expect("checker alive");
        if let Event::Transition(t) = event {
            return t;
        }
    }
}

/// The next event, whatever it is.
async fn next_event(rx: &mut UnboundedReceiver<Event>) -> Event {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("an event in time")
        .expect("checker alive")
}

fn passed() -> Event {
    Event::Passed {
        vip: "web".into(),
        backend: LOCALHOST,
    }
}

/// Accepts (and drops) connections on `listener`, counting them, until aborted.
fn accept_forever(listener: TcpListener, accepted: Arc<AtomicUsize>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if listener.accept().await.is_ok() {
                accepted.fetch_add(1, Ordering::SeqCst);
            }
        }
    })
}

/// Stops `task` and waits until its listener is closed (the task's future is dropped).
/// A checker and the receiver of its transitions.
fn checker() -> (Checker, UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Checker::new(tx), rx)
}

/// A listener on localhost that accepts every connection ([`accept_forever`]): its port, the
/// number accepted so far, its task.
async fn counting_server() -> (u16, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let server = accept_forever(listener, Arc::clone(&accepted));
    (port, accepted, server)
}

async fn stop(task: JoinHandle<()>) {
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
}

/// A port nothing listens on (until the test binds it again).
async fn closed_port() -> u16 {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    listener.local_addr().unwrap().port()
}

/// Answers every request with `status_line` and sends the request head on the channel.
async fn http_server(status_line: &'static str) -> (u16, UnboundedReceiver<String>) {
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (heads, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                let response = format!("HTTP/1.1 {status_line}\r\ncontent-length: 0\r\n\r\n");
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (port, rx)
}

#[test]
fn tracker_counts_consecutive_contrary_probes() {
    let mut t = Tracker::new(true, 2, 3);
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(true), None, "a success resets the failure streak");
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(false), Some(false));
    assert_eq!(t.observe(false), None, "already unhealthy");
    assert_eq!(t.observe(true), None);
    assert_eq!(t.observe(true), Some(true));
    let mut zero = Tracker::new(true, 0, 0);
    assert_eq!(zero.observe(false), Some(false), "fall 0 acts as 1");
}

/// A backend a previous daemon had taken down starts unhealthy and only comes back once
/// `rise` probes succeed.
#[tokio::test]
async fn a_target_can_start_unhealthy_and_rise() {
    let (port, accepted, server) = counting_server().await;
    let (mut checker, mut rx) = checker();
    let mut t = target(check(CheckKind::Tcp, port, 3, 1));
    t.start_healthy = false;
    checker.update(vec![t]);
    assert!(!checker.states()[0].2, "starts unhealthy");
    let up = next(&mut rx).await;
    assert!(up.healthy, "{up:?}");
    assert!(
        accepted.load(Ordering::SeqCst) >= 3,
        "only after `rise` probes"
    );
    stop(server).await;
}

#[tokio::test]
async fn tcp_open_port_stays_healthy() {
    let (port, accepted, server) = counting_server().await;
    let (mut checker, mut rx) = checker();
    checker.update(vec![target(check(CheckKind::Tcp, port, 2, 2))]);

    let probed = async {
        while accepted.load(Ordering::SeqCst) < 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, probed)
        .await
        .expect("5 probes");
    assert_eq!(rx.try_recv(), Ok(passed()), "the first pass, once");
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "no transition");
    assert_eq!(
        checker.states(),
        vec![("web".into(), LOCALHOST, true, None)]
    );
    stop(server).await;
}

#[tokio::test]
async fn tcp_closed_port_goes_unhealthy_then_recovers_on_reopen() {
    let (port, _, server) = counting_server().await;
    let (mut checker, mut rx) = checker();
    checker.update(vec![target(check(CheckKind::Tcp, port, 2, 3))]);

    stop(server).await;
    let down = next(&mut rx).await;
    assert!(!down.healthy);
    assert_eq!((down.vip.as_str(), down.backend), ("web", LOCALHOST));
    let refused = format!("connect 127.0.0.1:{port}: Connection refused");
    assert!(down.reason.starts_with(&refused), "{}", down.reason);
    let state = checker.states().remove(0);
    assert_eq!((state.2, state.3), (false, Some(down.reason)));

    let listener = TcpListener::bind((LOCALHOST, port)).await.unwrap();
    let server = accept_forever(listener, Arc::default());
    let up = next(&mut rx).await;
    assert!(up.healthy);
    assert_eq!(up.reason, format!("connected to 127.0.0.1:{port}"));
    assert!(checker.states()[0].2);
    stop(server).await;
}

#[tokio::test]
async fn http_503_goes_unhealthy() {
    let (port, _heads) = http_server("503 Service Unavailable").await;
    let (mut checker, mut rx) = checker();
    checker.update(vec![target(http_check(port))]);
    let down = next(&mut rx).await;
    assert!(!down.healthy);
    assert_eq!(down.reason, "HTTP status 503, expected 200");
}

#[tokio::test]
async fn http_probe_sends_a_plain_get() {
    let (port, mut heads) = http_server("200 OK").await;
    let outcome = probe(LOCALHOST, &http_check(port)).await;
    assert_eq!(outcome, Ok("HTTP status 200".into()));
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.starts_with("get /healthz http/1.1\r\n"), "{head}");
    for header in [
        format!("host: 127.0.0.1:{port}\r\n"),
        "connection: close\r\n".into(),
        "user-agent: sluice-health\r\n".into(),
    ] {
        assert!(head.contains(&header), "{header:?} in {head}");
    }

    let mut named = http_check(port);
    if let CheckKind::Http { host, .. } = &mut named.kind {
        *host = Some("app.example".into());
    }
    assert!(probe(LOCALHOST, &named).await.is_ok());
    let head = heads.recv().await.unwrap().to_ascii_lowercase();
    assert!(head.contains("host: app.example\r\n"), "{head}");
}

#[tokio::test]
async fn http_probe_times_out_on_a_silent_server() {
    // The kernel completes the handshake from the backlog; nobody ever answers.
    let listener = TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let mut silent = http_check(listener.local_addr().unwrap().port());
    silent.timeout = Duration::from_millis(100);
    let outcome = probe(LOCALHOST, &silent).await;
    assert_eq!(outcome, Err("timed out after 100ms".into()));
}

#[tokio::test]
async fn update_keeps_unchanged_targets_and_stops_removed_ones() {
    let port = closed_port().await;
    let (mut checker, mut rx) = checker();
    let refused = target(check(CheckKind::Tcp, port, 1, 1));
    checker.update(vec![refused.clone()]);
    let down = next(&mut rx).await;
    assert!(!down.healthy);

    let key = ("web".to_owned(), LOCALHOST);
    let task = checker.running[&key].task.id();
    checker.update(vec![refused.clone()]);
    assert_eq!(checker.running[&key].task.id(), task, "not restarted");
    assert_eq!(checker.states()[0].3.as_deref(), Some(down.reason.as_str()));

    let abort = checker.running[&key].task.abort_handle();
    checker.update(vec![]);
    assert!(checker.states().is_empty());
    let finished = async {
        while !abort.is_finished() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, finished)
        .await
        .expect("task stopped");
}

#[tokio::test]
async fn a_changed_check_restarts_with_the_current_health() {
    let port = closed_port().await;
    let (mut checker, mut rx) = checker();
    let mut refused = target(check(CheckKind::Tcp, port, 1, 1));
    checker.update(vec![refused.clone()]);
    assert!(!next(&mut rx).await.healthy);

    let key = ("web".to_owned(), LOCALHOST);
    let task = checker.running[&key].task.id();
    refused.check.rise = 2;
    checker.update(vec![refused]);
    assert_ne!(checker.running[&key].task.id(), task, "restarted");
    assert!(!checker.states()[0].2, "still unhealthy");

    // Started healthy, the new check would never report the recovery.
    let listener = TcpListener::bind((LOCALHOST, port)).await.unwrap();
    let server = accept_forever(listener, Arc::default());
    assert!(next(&mut rx).await.healthy);
    stop(server).await;
}

/// A checked backend starts healthy but has proven nothing: the first probe that passes is
/// reported (once), and a dead one never reports it, only its fall.
#[tokio::test]
async fn the_first_passing_probe_is_reported_once_and_a_dead_backend_never_passes() {
    let (port, accepted, server) = counting_server().await;
    let (mut checker, mut rx) = checker();
    checker.update(vec![target(check(CheckKind::Tcp, port, 2, 2))]);
    assert_eq!(next_event(&mut rx).await, passed());
    let probed = async {
        while accepted.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, probed)
        .await
        .expect("4 probes");
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "reported once");
    stop(server).await;

    drop(checker);
    let dead = closed_port().await;
    let (mut dead_checker, mut rx) = self::checker();
    dead_checker.update(vec![target(check(CheckKind::Tcp, dead, 2, 3))]);
    match next_event(&mut rx).await {
        Event::Transition(t) => assert!(!t.healthy, "{t:?}"),
        other @ Event::Passed { .. } => panic!("a closed port passed: {other:?}"),
    }
}

/// A changed check restarts with the state of the old one, including that it passed: the
/// new task does not report a first pass again.
#[tokio::test]
async fn a_restarted_check_does_not_report_its_first_pass_again() {
    let (port, accepted, server) = counting_server().await;
    let (mut checker, mut rx) = checker();
    let mut t = target(check(CheckKind::Tcp, port, 2, 2));
    checker.update(vec![t.clone()]);
    assert_eq!(next_event(&mut rx).await, passed());
    t.check.rise = 3;
    checker.update(vec![t]);
    let before = accepted.load(Ordering::SeqCst);
    let probed = async {
        while accepted.load(Ordering::SeqCst) < before + 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(PATIENCE, probed)
        .await
        .expect("3 probes of the new check");
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    stop(server).await;
}
