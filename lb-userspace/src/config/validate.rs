//! From the raw file to typed values: the top-level keys and small tables (VIPs are in `vip`,
//! health checks in `health`). Every check runs even after one failed, so a single run lists
//! every mistake in the file.

use std::{collections::HashMap, time::Duration};

use toml::Spanned;

use super::{
    bgp, edge,
    errors::{ConfigErrors, Report},
    fields, raw, schema, vip, Admin, Config, Encap, KernelLog, Management, Shutdown, Vip, XdpMode,
};

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;
/// `IFNAMSIZ` is 16 including the terminating NUL.
const MAX_IFNAME: usize = 15;

/// [`parse`] that also returns what validated around the schema errors (see
/// `Config::load_all`).
pub fn parse_all(text: &str) -> (Option<Config>, Option<ConfigErrors>) {
    let checked = match schema::deserialize(text) {
        Ok(checked) => checked,
        Err(errors) => return (None, Some(errors)),
    };
    let schema_errors = checked.errors.clone();
    let mut report = Report::new(&checked.text);
    let config = validate(&mut report, &checked.raw);
    match report.finish(config) {
        Ok(config) if schema_errors.is_empty() => (Some(config), None),
        Ok(config) => {
            let mut errors = schema_errors;
            errors.sort_by_key(|e| (e.position().is_none(), e.position()));
            (Some(config), Some(ConfigErrors(errors)))
        }
        Err(errors) => (None, Some(errors)),
    }
}

/// More threads than this is a typo, not a host.
const MAX_WORKER_THREADS: i64 = 1024;

pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    // Schema errors and validation errors are reported together: validation reads what the
    // schema check could still read, at the same offsets.
    let checked = schema::deserialize(text)?;
    let mut report = Report::new(&checked.text);
    report.extend(checked.errors);
    let config = validate(&mut report, &checked.raw);
    report.finish(config)
}

fn validate(r: &mut Report, raw: &raw::Config) -> Option<Config> {
    let instance = instance(r, &raw.instance);
    let interfaces = interfaces(r, &raw.interfaces);
    let xdp_mode = fields::choice(
        r,
        &raw.xdp_mode,
        "xdp_mode",
        &[("native", XdpMode::Native), ("skb", XdpMode::Skb)],
    );
    let kernel_log = fields::choice(
        r,
        &raw.kernel_log,
        "kernel_log",
        &[
            ("off", KernelLog::Off),
            ("info", KernelLog::Info),
            ("debug", KernelLog::Debug),
        ],
    );
    let conntrack_entries = fields::int(
        r,
        &raw.conntrack_entries,
        "conntrack_entries",
        1..=i64::from(u32::MAX),
        "flows tracked across all VIPs; the default is 1048576",
    );
    let worker_threads = raw.worker_threads.as_ref().map(|w| {
        fields::int::<usize>(
            r,
            w,
            "worker_threads",
            1..=MAX_WORKER_THREADS,
            "threads serving the edge listeners; leave it out for one per CPU available",
        )
    });
    let bpffs = fields::absolute_path(r, &raw.bpffs, "bpffs", "/sys/fs/bpf");
    let admin = admin(r, &raw.admin);
    let management = fields::socket_address(
        r,
        &raw.management.address,
        "management.address",
        "127.0.0.1:9000",
    );
    let shutdown = shutdown(r, raw);
    let vips = vip::vips(r, &raw.vips);
    let encap = encap(r, &raw.encap, &raw.vips, vips.as_deref());
    let edges = edge::edges(r, &raw.edges, vips.as_deref());
    let bgp = raw.bgp.as_ref().map(|b| bgp::bgp(r, b, vips.as_deref()));
    Some(Config {
        instance: instance?,
        interfaces: interfaces?,
        xdp_mode: xdp_mode?,
        conntrack_entries: conntrack_entries?,
        worker_threads: match worker_threads {
            Some(w) => Some(w?),
            None => None,
        },
        keep_dataplane: raw.keep_dataplane,
        kernel_log: kernel_log?,
        bpffs: bpffs?,
        admin: admin?,
        management: Management {
            address: management?,
        },
        shutdown: shutdown?,
        encap: encap?,
        vips: vips?,
        edges: edges?,
        bgp: match bgp {
            Some(b) => Some(b?),
            None => None,
        },
    })
}

fn instance(r: &mut Report, v: &Spanned<String>) -> Option<String> {
    let name = v.get_ref();
    // It becomes a directory name under bpffs, so nothing that could escape it.
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Some(name.clone())
    } else {
        r.invalid(
            v.span(),
            "instance",
            format!("\"{name}\" is not a valid name; use letters, digits, '-' and '_' only"),
        );
        None
    }
}

fn interfaces(r: &mut Report, list: &Spanned<Vec<Spanned<String>>>) -> Option<Vec<String>> {
    if list.get_ref().is_empty() {
        r.invalid(
            list.span(),
            "interfaces",
            "name at least one interface to attach to, e.g. [\"eth0\"]",
        );
        return None;
    }
    let mut seen = HashMap::new();
    let mut ok = true;
    for (i, v) in list.get_ref().iter().enumerate() {
        let name = v.get_ref();
        let field = format!("interfaces[{i}]");
        // The kernel's own rule (dev_valid_name), so a typo fails here, not at attach time.
        let valid = !name.is_empty()
            && name.len() <= MAX_IFNAME
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == ':' || c.is_whitespace());
        if !valid {
            r.invalid(
                v.span(),
                field,
                format!(
                    "\"{name}\" is not an interface name; Linux names are 1 to {MAX_IFNAME} \
                     bytes without '/', ':' or spaces (see `ip link`)"
                ),
            );
            ok = false;
            continue;
        }
        let first = *seen.entry(name.as_str()).or_insert(i);
        if first != i {
            r.invalid(
                v.span(),
                field,
                format!("\"{name}\" is already interfaces[{first}]; list each interface once"),
            );
            ok = false;
        }
    }
    ok.then(|| list.get_ref().iter().map(|v| v.get_ref().clone()).collect())
}

fn admin(r: &mut Report, raw: &raw::Admin) -> Option<Admin> {
    let field = "admin.socket";
    let socket = fields::absolute_path(r, &raw.socket, field, "/run/sluice/admin.sock")?;
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        r.invalid(
            raw.socket.span(),
            field,
            format!("Unix socket paths are at most {MAX_SOCKET_PATH} bytes; use a shorter one"),
        );
        return None;
    }
    Some(Admin { socket })
}

fn shutdown(r: &mut Report, raw: &raw::Config) -> Option<Shutdown> {
    let delay = fields::duration(
        r,
        &raw.shutdown_delay,
        "shutdown_delay",
        Duration::ZERO,
        "0 stops at once",
    );
    let timeout = fields::duration(
        r,
        &raw.shutdown_timeout,
        "shutdown_timeout",
        Duration::from_nanos(1),
        "in-flight work needs some time to finish; use e.g. \"1s\"",
    );
    Some(Shutdown {
        delay: delay?,
        timeout: timeout?,
    })
}

/// The tunnel source prefixes, each needed only when some VIP has backends of its family.
fn encap(
    r: &mut Report,
    raw: &raw::Encap,
    raw_vips: &[Spanned<raw::Vip>],
    vips: Option<&[Vip]>,
) -> Option<Encap> {
    let source_v4 = raw
        .source_v4
        .as_ref()
        .map(|v| prefix(r, v, "encap.source_v4", "IPv4", "198.19.255.0/24"));
    let source_v6 = raw
        .source_v6
        .as_ref()
        .map(|v| prefix(r, v, "encap.source_v6", "IPv6", "2001:db8:ffff::/96"));
    let mut ok = true;
    for (i, vip) in vips.unwrap_or_default().iter().enumerate() {
        for (v6, given, field, tunnel, example) in [
            (
                false,
                source_v4.is_some(),
                "encap.source_v4",
                "IPIP",
                "198.19.255.0/24",
            ),
            (
                true,
                source_v6.is_some(),
                "encap.source_v6",
                "IP6IP6",
                "2001:db8:ffff::/96",
            ),
        ] {
            if given || !vip.backends.iter().any(|b| b.address.is_ipv6() == v6) {
                continue;
            }
            let span = raw_vips.get(i).map(Spanned::span).unwrap_or_default();
            r.invalid(
                span,
                field,
                format!(
                    "vip \"{}\" has IPv{} backends, reached through {tunnel} tunnels whose \
                     outer source addresses come from {field}; add it under [encap], e.g. \
                     {} = \"{example}\"",
                    vip.name,
                    if v6 { 6 } else { 4 },
                    field.trim_start_matches("encap."),
                ),
            );
            ok = false;
        }
    }
    let source_v4 = source_v4.map_or(Some(None), |p| p.map(Some));
    let source_v6 = source_v6.map_or(Some(None), |p| p.map(Some));
    ok.then_some(())?;
    Some(Encap {
        source_v4: source_v4?,
        source_v6: source_v6?,
    })
}

fn prefix<T: std::str::FromStr>(
    r: &mut Report,
    v: &Spanned<String>,
    field: &str,
    family: &str,
    example: &str,
) -> Option<T> {
    let parsed = v.get_ref().parse().ok();
    if parsed.is_none() {
        r.invalid(
            v.span(),
            field,
            format!(
                "\"{}\" is not an {family} prefix; write address/length, e.g. \"{example}\"",
                v.get_ref()
            ),
        );
    }
    parsed
}
