//! A bounded HTTP load: a few keep-alive connections that each send `GET` after `GET`, a short
//! pause between them, for a fixed time, recording every outcome with the moment its request
//! was sent. A test does its disruptive part (a SIGTERM, a drain) while the load runs, then
//! asks the report what happened before and after.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::clients::connect_tcp_from;
use crate::http1::KeepAlive;
use crate::netns::NetNs;

/// What to send.
#[derive(Clone, Debug)]
pub struct Load {
    pub target: SocketAddr,
    /// One connection per entry, from that address (one of the namespace's own).
    pub sources: Vec<IpAddr>,
    pub path: String,
    /// The load runs at least this long, and on until the disruptive part has returned.
    pub duration: Duration,
    /// Between one answer and the next request on a connection.
    pub pause: Duration,
    /// Most requests per connection, whatever the time.
    pub max_requests: usize,
}

/// What one request got: the status and body, or why there was none.
#[derive(Clone, Debug)]
pub struct Sample {
    pub connection: usize,
    pub sent: Instant,
    /// From sending (connecting first, if needed) to the end of the answer or the failure.
    pub took: Duration,
    pub outcome: Result<(u16, String), String>,
}

impl Sample {
    /// The body of a `200` answer.
    pub fn ok_body(&self) -> Option<&str> {
        match &self.outcome {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }
}

/// Every sample of a run, in no particular order across connections.
#[derive(Debug)]
pub struct Report {
    pub started: Instant,
    pub samples: Vec<Sample>,
}

impl Report {
    /// Requests answered with anything but `200`, or not answered.
    pub fn failures(&self) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| s.ok_body().is_none())
            .collect()
    }

    /// How often each `200` body came back for requests sent in `[from, to)`.
    pub fn bodies_sent_between(&self, from: Instant, to: Instant) -> BTreeMap<String, usize> {
        let mut tally = BTreeMap::new();
        for s in &self.samples {
            if let (true, Some(body)) = (s.sent >= from && s.sent < to, s.ok_body()) {
                *tally.entry(body.to_owned()).or_default() += 1;
            }
        }
        tally
    }
}

impl fmt::Display for Report {
    /// A summary and the first failures, for assertion messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failures = self.failures();
        writeln!(
            f,
            "{} requests, {} failed",
            self.samples.len(),
            failures.len()
        )?;
        for s in failures.iter().take(10) {
            writeln!(
                f,
                "  connection {} at +{:?}: {:?}",
                s.connection,
                s.sent.duration_since(self.started),
                s.outcome
            )?;
        }
        Ok(())
    }
}

/// Runs `load` from `ns` while `during` runs on the calling thread; returns the report and
/// what `during` returned. A panic in `during` stops the load before it unwinds further.
pub fn run<T>(ns: &NetNs, load: &Load, during: impl FnOnce() -> T) -> (Report, T) {
    let started = Instant::now();
    let done = AtomicBool::new(false);
    let (samples, out) = thread::scope(|scope| {
        let workers: Vec<_> = load
            .sources
            .iter()
            .enumerate()
            .map(|(k, source)| {
                let done = &done;
                scope.spawn(move || connection(ns, load, k, *source, started, done))
            })
            .collect();
        let out = {
            let _stop = SetOnDrop(&done);
            during()
        };
        let samples: Vec<Sample> = workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (samples, out)
    });
    (Report { started, samples }, out)
}

/// Sets the flag when dropped, also while unwinding.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One connection's requests; a new connection whenever the last one ended or failed.
fn connection(
    ns: &NetNs,
    load: &Load,
    k: usize,
    source: IpAddr,
    started: Instant,
    done: &AtomicBool,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut conn: Option<KeepAlive> = None;
    while samples.len() < load.max_requests
        && !(done.load(Ordering::Relaxed) && started.elapsed() >= load.duration)
    {
        let sent = Instant::now();
        let c = match conn.take() {
            Some(c) => Ok(c),
            None => connect_tcp_from(ns, source, load.target)
                .and_then(KeepAlive::new)
                .map_err(|e| format!("{e:#}")),
        };
        let outcome = c.and_then(|mut c| {
            let reply = c.get(&load.path).map_err(|e| format!("{e:#}"))?;
            if c.is_open() {
                conn = Some(c);
            }
            Ok((reply.status, reply.body))
        });
        samples.push(Sample {
            connection: k,
            sent,
            took: sent.elapsed(),
            outcome,
        });
        thread::sleep(load.pause);
    }
    samples
}
