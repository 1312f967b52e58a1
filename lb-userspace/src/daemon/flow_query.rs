//! `sluice flows --backend/--client/--sort`: which conntrack entries a query keeps, and their
//! order.

use std::cmp::Reverse;

use crate::{
    admin::protocol::{FlowQuery, FlowSort},
    dataplane::FlowInfo,
};

/// Whether `f` passes the query's backend and client filters (the VIP filter is applied on
/// the raw entry, before this).
pub fn matches(q: &FlowQuery, f: &FlowInfo) -> bool {
    if q.backend.is_some_and(|b| f.backend != Some(b)) {
        return false;
    }
    if let Some(net) = q.client {
        let peer = net.contains(&f.client.ip());
        let real = f.real_client.is_some_and(|c| net.contains(&c.ip()));
        if !(peer || real) {
            return false;
        }
    }
    true
}

/// Orders `rows` as `sort` says; ties keep a stable, readable order (by client).
pub fn sort(rows: &mut [FlowInfo], sort: FlowSort) {
    // The client an operator thinks of: the real one behind a PROXY header, else the peer.
    let client = |f: &FlowInfo| f.real_client.unwrap_or(f.client);
    match sort {
        FlowSort::Age => rows.sort_by_key(|f| (Reverse(f.age), client(f))),
        FlowSort::Idle => rows.sort_by_key(|f| (Reverse(f.idle), client(f))),
        FlowSort::Client => rows.sort_by_key(|f| (client(f), f.vip)),
        // Flows on no known backend (a backend removed by a reload) last.
        FlowSort::Backend => rows.sort_by_key(|f| (f.backend.is_none(), f.backend, client(f))),
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Duration};

    use super::*;

    fn flow(client: &str, backend: &str, age: u64, idle: u64) -> FlowInfo {
        FlowInfo {
            client: client.parse().unwrap(),
            vip: "198.19.0.10:80".parse().unwrap(),
            vip_name: Some("web".into()),
            protocol: lb_common::PROTO_TCP,
            backend: Some(backend.parse().unwrap()),
            backend_id: 0,
            age: Duration::from_secs(age),
            idle: Duration::from_secs(idle),
            real_client: None,
            proxy: None,
        }
    }

    fn clients(rows: &[FlowInfo]) -> Vec<String> {
        rows.iter().map(|f| f.client.to_string()).collect()
    }

    #[test]
    fn filters_by_backend_and_client_network() {
        let rows = [
            flow("10.0.0.1:1000", "198.18.10.2", 5, 1),
            flow("10.0.1.7:1001", "198.18.11.2", 9, 2),
            flow("10.0.0.9:1002", "198.18.11.2", 1, 3),
        ];
        let q = FlowQuery {
            backend: Some("198.18.11.2".parse().unwrap()),
            ..FlowQuery::default()
        };
        let kept: Vec<_> = rows.iter().filter(|f| matches(&q, f)).cloned().collect();
        assert_eq!(clients(&kept), ["10.0.1.7:1001", "10.0.0.9:1002"]);
        let q = FlowQuery {
            client: Some("10.0.0.0/24".parse().unwrap()),
            ..FlowQuery::default()
        };
        let kept: Vec<_> = rows.iter().filter(|f| matches(&q, f)).cloned().collect();
        assert_eq!(clients(&kept), ["10.0.0.1:1000", "10.0.0.9:1002"]);
        let q = FlowQuery {
            client: Some("10.0.0.0/24".parse().unwrap()),
            backend: Some("198.18.11.2".parse().unwrap()),
            ..FlowQuery::default()
        };
        let kept: Vec<_> = rows.iter().filter(|f| matches(&q, f)).cloned().collect();
        assert_eq!(clients(&kept), ["10.0.0.9:1002"]);
    }

    #[test]
    fn a_proxied_flow_matches_its_real_client() {
        let mut f = flow("198.18.0.5:40000", "198.18.10.2", 1, 1);
        f.real_client = Some("203.0.113.7:5555".parse::<SocketAddr>().unwrap());
        let q = |net: &str| FlowQuery {
            client: Some(net.parse().unwrap()),
            ..FlowQuery::default()
        };
        assert!(matches(&q("203.0.113.7/32"), &f));
        assert!(matches(&q("198.18.0.0/16"), &f));
        assert!(!matches(&q("192.0.2.0/24"), &f));
    }

    #[test]
    fn sorts_by_age_idle_client_and_backend() {
        let mut rows = vec![
            flow("10.0.0.2:1", "198.18.11.2", 5, 7),
            flow("10.0.0.1:1", "198.18.12.2", 9, 1),
            flow("10.0.0.3:1", "198.18.10.2", 1, 3),
        ];
        sort(&mut rows, FlowSort::Age);
        assert_eq!(clients(&rows), ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]);
        sort(&mut rows, FlowSort::Idle);
        assert_eq!(clients(&rows), ["10.0.0.2:1", "10.0.0.3:1", "10.0.0.1:1"]);
        sort(&mut rows, FlowSort::Client);
        assert_eq!(clients(&rows), ["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]);
        sort(&mut rows, FlowSort::Backend);
        assert_eq!(clients(&rows), ["10.0.0.3:1", "10.0.0.2:1", "10.0.0.1:1"]);
    }
}
