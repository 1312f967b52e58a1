//! Settings fixed at start: changing them needs new maps, sockets, attachments or listeners,
//! so a reload that changes one is refused, naming the field (`edge[1].response_timeout`) and
//! both values when they are short enough to read.

use std::fmt::Debug;

use crate::config::{Config, Edge};

/// A restart-only setting that a reload would change.
#[derive(Debug, thiserror::Error)]
pub enum NeedsRestart {
    #[error("{field} cannot change on reload (it is {old}, the new config says {new}); restart the daemon to change it")]
    Quoted {
        field: String,
        old: String,
        new: String,
    },
    /// For a value too long to quote (a certificate list, a header set).
    #[error("{field} changed, and it cannot change on reload; restart the daemon to change it")]
    Changed { field: String },
}

/// Longer values are not quoted in the answer: the field name says what to look at.
const QUOTE_UP_TO: usize = 60;

/// The first restart-only setting that differs between `old` and `new`, as an error.
pub fn restart_only(old: &Config, new: &Config) -> Result<(), NeedsRestart> {
    same("instance", &old.instance, &new.instance)?;
    same("interfaces", &old.interfaces, &new.interfaces)?;
    same("xdp_mode", &old.xdp_mode, &new.xdp_mode)?;
    // The level is a constant the verifier folds in at load.
    same("kernel_log", &old.kernel_log, &new.kernel_log)?;
    same(
        "conntrack_entries",
        &old.conntrack_entries,
        &new.conntrack_entries,
    )?;
    same("worker_threads", &old.worker_threads, &new.worker_threads)?;
    same("bpffs", &old.bpffs, &new.bpffs)?;
    // Sessions are opened with these at start.
    same("bgp", &old.bgp, &new.bgp)?;
    same("admin.socket", &old.admin.socket, &new.admin.socket)?;
    same(
        "management.address",
        &old.management.address,
        &new.management.address,
    )?;
    // Listeners are bound, and their certificates read, at start (a reload re-reads the
    // files, but not which files).
    let names = |c: &Config| c.edges.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
    same("edge (the listeners)", &names(old), &names(new))?;
    for (i, (o, n)) in old.edges.iter().zip(&new.edges).enumerate() {
        edge(i, o, n)?;
    }
    Ok(())
}

fn edge(i: usize, o: &Edge, n: &Edge) -> Result<(), NeedsRestart> {
    let field = |key: &str| format!("edge[{i}].{key}");
    same(field("address"), &o.address, &n.address)?;
    same(field("pool"), &o.pool, &n.pool)?;
    same(field("backend_port"), &o.backend_port, &n.backend_port)?;
    same(
        field("client_cert_header"),
        &o.client_cert_header,
        &n.client_cert_header,
    )?;
    same(
        field("client_cert_names"),
        &o.client_cert_names,
        &n.client_cert_names,
    )?;
    same(
        field("client_cert_chain_length"),
        &o.client_cert_chain.lengths,
        &n.client_cert_chain.lengths,
    )?;
    same(
        field("client_cert_chain_anchor"),
        &o.client_cert_chain.anchor,
        &n.client_cert_chain.anchor,
    )?;
    same(
        field("forwarded_headers"),
        &o.forwarded_headers,
        &n.forwarded_headers,
    )?;
    same(
        field("trusted_proxies"),
        &o.trusted_proxies,
        &n.trusted_proxies,
    )?;
    same(
        field("proxy_protocol"),
        &o.proxy_protocol,
        &n.proxy_protocol,
    )?;
    same(field("send_proxy_protocol"), &o.send_proxy, &n.send_proxy)?;
    // The route table is compiled into the listener, which a reload keeps.
    same(field("route"), &o.routes, &n.routes)?;
    same(
        field("connect_timeout"),
        &o.connect_timeout,
        &n.connect_timeout,
    )?;
    same(
        field("response_timeout"),
        &o.response_timeout,
        &n.response_timeout,
    )?;
    match (&o.tls, &n.tls) {
        (Some(ot), Some(nt)) => {
            same(
                field("tls.certificates"),
                &ot.certificates,
                &nt.certificates,
            )?;
            same(field("tls.client_auth"), &ot.client_auth, &nt.client_auth)?;
            same(field("tls.client_ca"), &ot.client_ca, &nt.client_ca)?;
            same(
                field("tls.max_chain_depth"),
                &ot.max_chain_depth,
                &nt.max_chain_depth,
            )?;
            same(field("tls"), ot, nt)?;
        }
        (ot, nt) => same(field("tls"), &ot.is_some(), &nt.is_some())?,
    }
    // A setting added to `[[edge]]` after this list was written is still caught, by name of
    // the listener.
    if o != n {
        return Err(NeedsRestart::Changed {
            field: format!("a setting of edge[{i}] (\"{}\")", o.name),
        });
    }
    Ok(())
}

fn same<T: PartialEq + Debug>(
    field: impl Into<String>,
    old: &T,
    new: &T,
) -> Result<(), NeedsRestart> {
    if old == new {
        return Ok(());
    }
    let (old, new) = (format!("{old:?}"), format!("{new:?}"));
    let field = field.into();
    if old.len().max(new.len()) > QUOTE_UP_TO {
        Err(NeedsRestart::Changed { field })
    } else {
        Err(NeedsRestart::Quoted { field, old, new })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TEXT: &str = "instance = \"gw\"\ninterfaces = [\"eth0\"]\n[encap]\n\
        source_v4 = \"198.19.255.0/24\"\nsource_v6 = \"2001:db8:ffff::/96\"\n\
        [[vip]]\nname = \"web\"\naddress = \"198.19.0.10:80\"\n\
        [[vip.backend]]\naddress = \"198.18.1.2\"\n\
        [[edge]]\nname = \"a\"\naddress = \"0.0.0.0:8080\"\npool = \"web\"\n\
        [[edge]]\nname = \"b\"\naddress = \"0.0.0.0:8081\"\npool = \"web\"\n";

    fn config() -> Config {
        Config::parse(TEXT).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn an_edge_setting_is_named_with_both_values() {
        let old = config();
        let mut new = old.clone();
        assert!(restart_only(&old, &new).is_ok());
        new.edges[1].response_timeout = Duration::from_secs(5);
        let e = restart_only(&old, &new).unwrap_err().to_string();
        assert_eq!(
            e,
            "edge[1].response_timeout cannot change on reload (it is 60s, the new config says \
             5s); restart the daemon to change it"
        );
    }

    #[test]
    fn kernel_log_takes_a_restart() {
        let old = config();
        let mut new = old.clone();
        new.kernel_log = crate::config::KernelLog::Info;
        let e = restart_only(&old, &new).unwrap_err().to_string();
        assert!(e.starts_with("kernel_log cannot change on reload"), "{e}");
    }

    #[test]
    fn a_long_value_is_named_not_dumped() {
        let old = config();
        let mut new = old.clone();
        new.edges[0].trusted_proxies = (0..20)
            .map(|i| format!("198.18.{i}.0/24").parse().unwrap())
            .collect();
        let e = restart_only(&old, &new).unwrap_err().to_string();
        assert!(e.starts_with("edge[0].trusted_proxies changed"), "{e}");
        assert!(e.contains("restart"), "{e}");
        assert!(e.len() < 120, "{e}");
    }

    #[test]
    fn a_changed_route_table_is_refused_as_a_whole() {
        let old = config();
        let mut new = old.clone();
        new.edges[1].routes = crate::config::route::Preset::Keycloak.routes();
        let e = restart_only(&old, &new).unwrap_err().to_string();
        assert!(e.starts_with("edge[1].route changed"), "{e}");
    }

    #[test]
    fn a_route_sent_to_another_pool_is_a_changed_route_table() {
        let old = config();
        let mut new = old.clone();
        if let crate::config::route::Action::Proxy { pool, .. } = &mut new.edges[0].routes[0].action
        {
            *pool = Some(crate::config::route::RoutePool {
                vip: "web".into(),
                backend_port: 4180,
            });
        }
        let e = restart_only(&old, &new).unwrap_err().to_string();
        assert!(e.starts_with("edge[0].route changed"), "{e}");
    }

    #[test]
    fn listeners_added_or_removed_are_named() {
        let old = config();
        let mut new = old.clone();
        new.edges.pop();
        let e = restart_only(&old, &new).unwrap_err().to_string();
        assert!(e.starts_with("edge (the listeners) cannot change"), "{e}");
        assert!(e.contains(r#"["a", "b"]"#) && e.contains(r#"["a"]"#), "{e}");
    }
}
