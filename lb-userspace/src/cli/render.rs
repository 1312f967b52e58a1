//! Human output of the one-shot subcommands. Each function returns the whole text so tests can
//! compare it.

use super::{
    format,
    table::{key_values, Align, Table},
};
use crate::admin::protocol::{
    BackendRow, FlowRow, Health, NamedCounter, ProxyRow, Stats, Status, TrafficRow,
};

pub fn status(s: &Status) -> String {
    let mut pairs = vec![
        ("instance", s.instance.clone()),
        ("version", s.version.clone()),
        ("pid", s.pid.to_string()),
        ("uptime", format::uptime(s.uptime_secs)),
        ("phase", s.phase.to_string()),
        ("ready", format::yes_no(s.ready)),
        ("config", s.config.clone()),
        ("interfaces", or_dash(&s.interfaces.join(", "))),
        ("pin dir", s.pin_dir.clone()),
        (
            "dataplane",
            if s.adopted {
                "adopted from a previous daemon"
            } else {
                "loaded by this daemon"
            }
            .to_owned(),
        ),
        ("keep dataplane", format::yes_no(s.keep_dataplane)),
        (
            "reloads",
            format!("{} ok, {} failed", s.reloads_ok, s.reloads_failed),
        ),
    ];
    if let Some(error) = &s.last_reload_error {
        pairs.push(("last reload error", error.clone()));
    }
    let mut table = Table::new(&[
        ("VIP", Align::Left),
        ("ADDRESS", Align::Left),
        ("PROTO", Align::Left),
        ("BACKENDS UP", Align::Right),
        // Up with a weight above 0: none here and the VIP drops every new flow (not ready).
        ("TAKING NEW FLOWS", Align::Right),
    ]);
    for vip in &s.vips {
        table.row(vec![
            vip.name.clone(),
            vip.address.to_string(),
            vip.protocol.clone(),
            format!("{}/{}", vip.backends_up, vip.backends_total),
            vip.backends_taking_new_flows.to_string(),
        ]);
    }
    let mut out = format!("{}\n{}", key_values(&pairs), table.render());
    if let Some(bgp) = &s.bgp {
        out.push('\n');
        out.push_str(&bgp_status(bgp));
    }
    out
}

/// The BGP part of `status`: one row per peer with what it has from this gateway.
fn bgp_status(b: &crate::bgp::BgpStatus) -> String {
    let list = |a: &[std::net::IpAddr]| {
        or_dash(
            &a.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        )
    };
    let mut pairs = vec![("bgp wanted", list(&b.wanted))];
    if !b.withdrawn_by_hand.is_empty() {
        pairs.push(("bgp withdrawn by hand", b.withdrawn_by_hand.join(", ")));
    }
    let mut table = Table::new(&[
        ("BGP PEER", Align::Left),
        ("AS", Align::Right),
        ("STATE", Align::Left),
        ("UP", Align::Right),
        ("ANNOUNCED", Align::Left),
        ("LAST ERROR", Align::Left),
    ]);
    for p in &b.peers {
        table.row(vec![
            p.peer.to_string(),
            p.remote_as.to_string(),
            p.state.clone(),
            p.established_secs
                .map_or_else(|| "-".to_owned(), format::uptime),
            list(&p.announced),
            or_dash(p.last_error.as_deref().unwrap_or("")),
        ]);
    }
    format!("{}\n{}", key_values(&pairs), table.render())
}

pub fn backends(rows: &[BackendRow]) -> String {
    let mut table = Table::new(&[
        ("VIP", Align::Left),
        ("BACKEND", Align::Left),
        ("WEIGHT", Align::Right),
        ("STATE", Align::Left),
        ("HEALTH", Align::Left),
        ("FLOWS", Align::Right),
        ("PACKETS", Align::Right),
        ("BYTES", Align::Right),
        ("NEW FLOWS", Align::Right),
        ("NEXT HOP", Align::Left),
    ]);
    for row in rows {
        // The kernel state alone cannot say whether health checks or the operator drained it.
        let state = if row.drained {
            format!("{} (operator)", row.state)
        } else {
            row.state.to_string()
        };
        let health = match &row.health_reason {
            Some(reason) if row.health != Health::Healthy => format!("{} ({reason})", row.health),
            _ => row.health.to_string(),
        };
        table.row(vec![
            row.vip.clone(),
            row.address.to_string(),
            row.weight.to_string(),
            state,
            health,
            row.flows.to_string(),
            row.packets.to_string(),
            format::bytes(row.bytes),
            row.new_flows.to_string(),
            // "route lookup": no cached next hop, the kernel looks the route up per packet.
            row.next_hop.as_ref().map_or_else(
                || "route lookup".into(),
                |h| format!("{} {}", h.interface, h.dst_mac),
            ),
        ]);
    }
    table.render()
}

/// `CLIENT` is the TCP peer; behind a trusted proxy, `REAL CLIENT` is who the PROXY header
/// named and `PROXY` what the policy decided.
pub fn flows(rows: &[FlowRow]) -> String {
    let mut table = Table::new(&[
        ("CLIENT", Align::Left),
        ("REAL CLIENT", Align::Left),
        ("VIP", Align::Left),
        ("PROTO", Align::Left),
        ("BACKEND", Align::Left),
        ("PROXY", Align::Left),
        ("AGE", Align::Right),
        ("IDLE", Align::Right),
    ]);
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    for row in rows {
        table.row(vec![
            row.client.to_string(),
            or_dash(row.real_client.map(|c| c.to_string())),
            row.vip_name.clone().unwrap_or_else(|| row.vip.to_string()),
            row.protocol.clone(),
            or_dash(row.backend.map(|b| b.to_string())),
            or_dash(row.proxy.clone()),
            format::millis(row.age_ms),
            format::millis(row.idle_ms),
        ]);
    }
    table.render()
}

pub fn stats(stats: &Stats) -> String {
    let mut out = counters(&stats.counters);
    out.push('\n');
    out.push_str(&traffic(&stats.vips, false));
    out.push('\n');
    out.push_str(&traffic(&stats.backends, true));
    let proxy: Vec<(String, &ProxyRow)> = stats
        .proxy
        .iter()
        .map(|r| (r.vip.clone(), r))
        .chain(
            stats
                .edge_proxy
                .iter()
                .map(|r| (format!("edge/{}", r.vip), r)),
        )
        .filter(|(_, r)| r.flows > 0)
        .collect();
    if !proxy.is_empty() {
        let mut table = Table::new(&[
            ("VIP", Align::Left),
            ("PROXY OUTCOME", Align::Left),
            ("FLOWS", Align::Right),
        ]);
        for (name, r) in proxy {
            table.row(vec![name, r.outcome.clone(), r.flows.to_string()]);
        }
        out.push('\n');
        out.push_str(&table.render());
    }
    out
}

/// Only the counters that moved: most of the drop reasons are zero on a healthy host.
fn counters(counters: &[NamedCounter]) -> String {
    let mut table = Table::new(&[
        ("COUNTER", Align::Left),
        ("KIND", Align::Left),
        ("VALUE", Align::Right),
    ]);
    for c in counters.iter().filter(|c| c.value != 0) {
        table.row(vec![
            c.name.clone(),
            c.kind.to_string(),
            c.value.to_string(),
        ]);
    }
    if table.is_empty() {
        return "(every counter is zero)\n".to_owned();
    }
    table.render()
}

fn traffic(rows: &[TrafficRow], per_backend: bool) -> String {
    traffic_table(
        ["PACKETS", "BYTES", "NEW FLOWS"],
        per_backend,
        rows.iter().map(|r| {
            (
                r.vip.as_str(),
                r.backend,
                [
                    r.packets.to_string(),
                    format::bytes(r.bytes),
                    r.new_flows.to_string(),
                ],
            )
        }),
    )
}

/// A per-VIP (or per-backend) table with three numeric columns: totals in `sluice stats`,
/// rates in `--watch`.
pub(super) fn traffic_table<'a>(
    titles: [&'static str; 3],
    per_backend: bool,
    rows: impl Iterator<Item = (&'a str, Option<std::net::IpAddr>, [String; 3])>,
) -> String {
    let mut columns = vec![("VIP", Align::Left)];
    if per_backend {
        columns.push(("BACKEND", Align::Left));
    }
    columns.extend(titles.map(|t| (t, Align::Right)));
    let mut table = Table::new(&columns);
    for (vip, backend, numbers) in rows {
        let mut cells = vec![vip.to_owned()];
        if per_backend {
            cells.push(backend.map_or_else(|| "-".to_owned(), |b| b.to_string()));
        }
        cells.extend(numbers);
        table.row(cells);
    }
    table.render()
}

/// The footer `sluice flows` prints when the daemon may have had more to show.
pub fn flows_truncated(shown: usize, limit: usize) -> Option<String> {
    (shown >= limit)
        .then(|| format!("(showing the first {limit} flows; raise --limit to see more)"))
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-" } else { s }.to_owned()
}

#[cfg(test)]
mod tests;
