//! The gateway configuration the edge labs start from: one instance on the client-facing
//! interfaces with its admin socket in the lab's scratch directory, and one Maglev VIP `web`
//! on [`VIP4`]`:80` over the first backends of the topology. Each lab appends its own
//! `[[edge]]` tables.

use std::fmt::Write as _;
use std::path::Path;

use crate::daemon::Daemon;
use crate::topology::backend_addr4;
use crate::VIP4;

/// The configuration text: `instance`, `interfaces`, the admin socket in `scratch`, the
/// management `address`, and the VIP `web` with `backends` backends; `vip_tables` (for example
/// a `[vip.health_check]` table) goes between the VIP and its backends.
pub fn web_gateway(
    instance: &str,
    interfaces: &[&str],
    scratch: &Path,
    management: &str,
    vip_tables: &str,
    backends: usize,
) -> String {
    let interfaces = interfaces
        .iter()
        .map(|i| format!("\"{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = format!(
        "instance = \"{instance}\"\ninterfaces = [{interfaces}]\n\
         conntrack_entries = 65536\n\n[admin]\nsocket = \"{}\"\n\n[management]\n\
         address = \"{management}\"\n\n[encap]\nsource_v4 = \"198.19.255.0/24\"\n\
         source_v6 = \"2001:db8:ffff::/96\"\n\n[[vip]]\nname = \"web\"\n\
         address = \"{VIP4}:80\"\ntable_size = 251\n{vip_tables}",
        Daemon::socket_in(scratch).display(),
    );
    text.push_str(&backend_tables(backends));
    text
}

/// A `[[vip.backend]]` table for each of the first `backends` backends of the topology.
pub fn backend_tables(backends: usize) -> String {
    let mut text = String::new();
    for i in 0..backends {
        let _ = write!(
            text,
            "[[vip.backend]]\naddress = \"{}\"\n",
            backend_addr4(i)
        );
    }
    text
}
