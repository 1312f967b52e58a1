//! `sluice stats --watch`: sample the counters every interval and show per-second rates.

use std::{
    collections::HashMap,
    io::IsTerminal as _,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use serde::Serialize;

use super::{
    ask, decode, format, out,
    table::{Align, Table},
    Failure, QUERY_TIMEOUT,
};
use crate::admin::protocol::{CounterKind, Request, Stats, TrafficRow};

/// Home the cursor and clear the screen, as `top` and `watch` do.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Rates between two samples, per second of the daemon's clock.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rates {
    pub uptime_ms: u64,
    /// Daemon time between the two samples.
    pub interval_ms: u64,
    pub counters: Vec<CounterRate>,
    pub vips: Vec<TrafficRate>,
    pub backends: Vec<TrafficRate>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterRate {
    pub name: String,
    pub kind: CounterKind,
    pub total: u64,
    pub per_sec: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrafficRate {
    pub vip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<IpAddr>,
    pub packets_per_sec: f64,
    pub bytes_per_sec: f64,
    pub new_flows_per_sec: f64,
}

/// Per-second rates from `prev` to `cur`, timed by the daemon's uptime so the CLI's own
/// scheduling jitter does not skew them. `None` when the daemon restarted in between (its
/// uptime went back) or no time passed: `cur` is then only a new baseline.
///
/// A row or counter missing from `prev`, or smaller than in `prev`, started from zero within
/// the interval (a VIP or backend added by a reload), so its whole value is the delta.
pub fn rates(prev: &Stats, cur: &Stats) -> Option<Rates> {
    let interval_ms = cur
        .uptime_ms
        .checked_sub(prev.uptime_ms)
        .filter(|&d| d > 0)?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "intervals are far below 2^52 ms"
    )]
    let secs = interval_ms as f64 / 1000.0;
    #[expect(clippy::cast_precision_loss, reason = "rates are shown to 3 digits")]
    let per_sec = |now: u64, before: Option<u64>| {
        let delta = match before {
            Some(before) if before <= now => now - before,
            _ => now,
        };
        delta as f64 / secs
    };

    let before: HashMap<&str, u64> = prev
        .counters
        .iter()
        .map(|c| (c.name.as_str(), c.value))
        .collect();
    let counters = cur
        .counters
        .iter()
        .map(|c| CounterRate {
            name: c.name.clone(),
            kind: c.kind,
            total: c.value,
            per_sec: per_sec(c.value, before.get(c.name.as_str()).copied()),
        })
        .collect();

    let traffic = |prev: &[TrafficRow], cur: &[TrafficRow]| -> Vec<TrafficRate> {
        let before: HashMap<(&str, Option<IpAddr>), &TrafficRow> = prev
            .iter()
            .map(|row| ((row.vip.as_str(), row.backend), row))
            .collect();
        cur.iter()
            .map(|row| {
                let old = before.get(&(row.vip.as_str(), row.backend));
                TrafficRate {
                    vip: row.vip.clone(),
                    backend: row.backend,
                    packets_per_sec: per_sec(row.packets, old.map(|o| o.packets)),
                    bytes_per_sec: per_sec(row.bytes, old.map(|o| o.bytes)),
                    new_flows_per_sec: per_sec(row.new_flows, old.map(|o| o.new_flows)),
                }
            })
            .collect()
    };

    Some(Rates {
        uptime_ms: cur.uptime_ms,
        interval_ms,
        counters,
        vips: traffic(&prev.vips, &cur.vips),
        backends: traffic(&prev.backends, &cur.backends),
    })
}

/// Samples until the process is interrupted (Ctrl-C ends it) or the daemon goes away.
pub(super) fn run(socket: &Path, json: bool, interval: Duration) -> Result<(), Failure> {
    if interval.is_zero() {
        return Err(Failure::Usage(
            "--interval must be longer than 0".to_owned(),
        ));
    }
    let terminal = std::io::stdout().is_terminal();
    let mut prev: Option<Stats> = None;
    let mut next = Instant::now();
    loop {
        let cur = decode::<Stats>(ask(socket, &Request::Stats, QUERY_TIMEOUT)?)?;
        let rates = prev.as_ref().and_then(|prev| rates(prev, &cur));
        if json {
            // One object per line; the first sample only sets the baseline.
            if let Some(rates) = &rates {
                out(&format!("{}\n", serde_json::to_string(rates)?))?;
            }
        } else {
            let screen = render(rates.as_ref(), interval, cur.uptime_ms);
            out(&if terminal {
                format!("{CLEAR}{screen}")
            } else {
                format!("{screen}\n")
            })?;
        }
        prev = Some(cur);
        // Fixed ticks, so a slow answer does not stretch every later interval.
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

fn render(rates: Option<&Rates>, interval: Duration, uptime_ms: u64) -> String {
    let mut text = format!(
        "sluice stats: per-second rates every {} (Ctrl-C to stop); daemon up {}\n\n",
        humantime::format_duration(interval),
        format::uptime(uptime_ms / 1000),
    );
    let Some(rates) = rates else {
        text.push_str("waiting for a second sample...\n");
        return text;
    };
    text.push_str(&traffic_table(&rates.vips, false));
    text.push('\n');
    text.push_str(&traffic_table(&rates.backends, true));
    text.push('\n');
    let mut counters = Table::new(&[
        ("COUNTER", Align::Left),
        ("KIND", Align::Left),
        ("PER SEC", Align::Right),
        ("TOTAL", Align::Right),
    ]);
    for c in rates.counters.iter().filter(|c| c.total != 0) {
        counters.row(vec![
            c.name.clone(),
            c.kind.to_string(),
            format::rate(c.per_sec),
            c.total.to_string(),
        ]);
    }
    text.push_str(&counters.render());
    text
}

fn traffic_table(rows: &[TrafficRate], per_backend: bool) -> String {
    super::render::traffic_table(
        ["PACKETS/S", "BYTES/S", "NEW FLOWS/S"],
        per_backend,
        rows.iter().map(|r| {
            (
                r.vip.as_str(),
                r.backend,
                [
                    format::rate(r.packets_per_sec),
                    format::bytes_rate(r.bytes_per_sec),
                    format::rate(r.new_flows_per_sec),
                ],
            )
        }),
    )
}

#[cfg(test)]
mod tests;
