//! `[bgp]`: the speaker that announces the VIPs to routers (see `crate::bgp`). Restart-only:
//! sessions are opened with these settings at start, and a reload that changes them is
//! refused with "restart to apply".

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::{errors::Report, fields, Vip};

/// The section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBgp {
    /// This gateway's AS number (1 to 4294967295; 4-octet ASes are sent as RFC 6793 asks).
    pub local_as: Spanned<i64>,
    /// The BGP identifier, an IPv4 address unique among the peers' neighbours (usually this
    /// host's address towards the router).
    pub router_id: Spanned<String>,
    /// The next hop announced with IPv4 VIPs: this host's address on the router's link.
    /// Needed when a VIP is IPv4.
    pub next_hop_v4: Option<Spanned<String>>,
    /// The next hop announced with IPv6 VIPs (`MP_REACH_NLRI`, RFC 4760). Needed when a VIP is
    /// IPv6.
    pub next_hop_v6: Option<Spanned<String>>,
    /// The routers: `{ address = "10.0.0.1", as = 65000 }`, optionally `port` (default 179)
    /// and `hold_time` in seconds (0, or 3 and above; default 90).
    #[serde(default, rename = "peer")]
    pub peers: Vec<Spanned<RawPeer>>,
    /// Communities (RFC 1997, `"ASN:value"`) announced with a VIP, by VIP name, e.g.
    /// `web = ["65000:100"]`.
    #[serde(default)]
    pub communities: BTreeMap<String, Spanned<Vec<Spanned<String>>>>,
    /// RFC 8326: on a stop, announce every VIP again with the `GRACEFUL_SHUTDOWN` community
    /// (65535:0) added and keep serving for this long before the withdrawal, so routers that
    /// lower the preference of such routes move the traffic away first. A duration such as
    /// `"5s"`; `"0s"` (the default) withdraws at once.
    pub graceful_shutdown: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    pub address: Spanned<String>,
    #[serde(rename = "as")]
    pub remote_as: Spanned<i64>,
    pub port: Option<Spanned<i64>>,
    pub hold_time: Option<Spanned<i64>>,
    /// TCP MD5 signatures (RFC 2385) on the session, with this key (1 to 80 bytes); the
    /// router must have the same one for this neighbour.
    pub password: Option<Spanned<RawSecret>>,
    /// The same, read from this file (absolute path; one trailing newline is dropped), so the
    /// key need not be in the config.
    pub password_file: Option<Spanned<String>>,
}

/// A secret as written; its `Debug` never shows it.
#[derive(Deserialize)]
#[serde(transparent)]
pub struct RawSecret(String);

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawSecret(<redacted>)")
    }
}

/// The validated section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bgp {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    pub peers: Vec<BgpPeer>,
    /// By VIP name; each community is `ASN << 16 | value`.
    pub communities: BTreeMap<String, Vec<u32>>,
    /// How long a stop announces `GRACEFUL_SHUTDOWN` before withdrawing; zero: off.
    pub graceful_shutdown: Duration,
}

/// How long a stop waits for each change (the `GRACEFUL_SHUTDOWN` announcement, the
/// withdrawals) to be written to every established session.
pub const SEND_WAIT: Duration = Duration::from_secs(2);

impl Bgp {
    /// The longest the BGP steps can add to a graceful stop, before `shutdown_delay` starts:
    /// what a service manager's stop timeout must leave room for.
    pub fn stop_wait(&self) -> Duration {
        if self.graceful_shutdown.is_zero() {
            SEND_WAIT
        } else {
            SEND_WAIT + self.graceful_shutdown + SEND_WAIT
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BgpPeer {
    pub address: IpAddr,
    pub remote_as: u32,
    pub port: u16,
    /// Seconds; 0 turns keepalives and the hold timer off.
    pub hold_time: u16,
    /// The TCP MD5 key, from `password` or `password_file`.
    pub password: Option<Password>,
}

/// Linux's `TCP_MD5SIG_MAXKEYLEN`: the longest key the kernel takes.
pub const MAX_PASSWORD_LEN: usize = 80;

/// A TCP MD5 key (RFC 2385), 1 to [`MAX_PASSWORD_LEN`] bytes. Its `Debug` never shows it, and
/// nothing else prints it: status, logs and errors name the peer, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(Vec<u8>);

impl Password {
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// A key the config did not check, for tests of what uses it.
    #[cfg(test)]
    pub fn for_tests(key: &[u8]) -> Password {
        Password(key.to_vec())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

const DEFAULT_PORT: u16 = 179;
const DEFAULT_HOLD_TIME: u16 = 90;

pub(super) fn bgp(r: &mut Report, raw: &Spanned<RawBgp>, vips: Option<&[Vip]>) -> Option<Bgp> {
    let b = raw.get_ref();
    let local_as = as_number(r, &b.local_as, "bgp.local_as");
    let router_id = match b.router_id.get_ref().parse::<Ipv4Addr>() {
        Ok(id) if !id.is_unspecified() => Some(id),
        _ => {
            r.invalid(
                b.router_id.span(),
                "bgp.router_id",
                format!(
                    "\"{}\" is not a usable router id; write a non-zero IPv4 address, usually \
                     this host's address towards the router, e.g. \"10.0.0.2\"",
                    b.router_id.get_ref()
                ),
            );
            None
        }
    };
    let mut hops_ok = true;
    let next_hop_v4 = next_hop::<Ipv4Addr>(
        r,
        b.next_hop_v4.as_ref(),
        ("bgp.next_hop_v4", "IPv4", "10.0.0.2"),
        &mut hops_ok,
    );
    let next_hop_v6 = next_hop::<Ipv6Addr>(
        r,
        b.next_hop_v6.as_ref(),
        ("bgp.next_hop_v6", "IPv6", "2001:db8::2"),
        &mut hops_ok,
    );
    let peers = peers(r, raw);
    let mut ok = hops_ok;
    if let (Some(vips), true) = (vips, hops_ok) {
        ok &= next_hops_cover(r, raw, vips, next_hop_v4.is_some(), next_hop_v6.is_some());
    }
    let communities = communities(r, b, vips);
    let graceful_shutdown = match &b.graceful_shutdown {
        Some(v) => fields::duration(
            r,
            v,
            "bgp.graceful_shutdown",
            Duration::ZERO,
            "\"0s\" withdraws at once",
        ),
        None => Some(Duration::ZERO),
    };
    if !ok {
        return None;
    }
    Some(Bgp {
        local_as: local_as?,
        router_id: router_id?,
        next_hop_v4,
        next_hop_v6,
        peers: peers?,
        communities: communities?,
        graceful_shutdown: graceful_shutdown?,
    })
}

/// `None` when left out or unusable (then `ok` is cleared).
fn next_hop<T: std::str::FromStr>(
    r: &mut Report,
    v: Option<&Spanned<String>>,
    (field, family, example): (&str, &str, &str),
    ok: &mut bool,
) -> Option<T> {
    let v = v?;
    if let Ok(a) = v.get_ref().parse::<T>() {
        return Some(a);
    }
    r.invalid(
        v.span(),
        field,
        format!(
            "\"{}\" is not an {family} address; write e.g. \"{example}\"",
            v.get_ref()
        ),
    );
    *ok = false;
    None
}

/// Each VIP's family needs its next hop: a route without one cannot be announced.
fn next_hops_cover(
    r: &mut Report,
    raw: &Spanned<RawBgp>,
    vips: &[Vip],
    v4: bool,
    v6: bool,
) -> bool {
    let mut ok = true;
    for (ipv4, have, key, example) in [
        (true, v4, "bgp.next_hop_v4", "10.0.0.2"),
        (false, v6, "bgp.next_hop_v6", "2001:db8::2"),
    ] {
        let Some(vip) = vips.iter().find(|v| v.address.is_ipv4() == ipv4) else {
            continue;
        };
        if !have {
            r.invalid(
                raw.span(),
                key,
                format!(
                    "VIP \"{}\" is {}, so its announcements need a next hop: add \
                     {key} = \"{example}\" (this host's address on the router's link)",
                    vip.name,
                    if ipv4 { "IPv4" } else { "IPv6" }
                ),
            );
            ok = false;
        }
    }
    ok
}

fn peers(r: &mut Report, raw: &Spanned<RawBgp>) -> Option<Vec<BgpPeer>> {
    let b = raw.get_ref();
    let mut ok = true;
    if b.peers.is_empty() {
        r.invalid(
            raw.span(),
            "bgp.peer",
            "add at least one [[bgp.peer]] with address and as, e.g. { address = \"10.0.0.1\", as = 65000 }",
        );
        ok = false;
    }
    let mut peers = Vec::new();
    let mut seen = HashMap::new();
    for (i, p) in b.peers.iter().enumerate() {
        let Some(peer) = peer(r, i, p.get_ref()) else {
            ok = false;
            continue;
        };
        if let Some(first) = seen.insert((peer.address, peer.port), i) {
            r.invalid(
                p.get_ref().address.span(),
                format!("bgp.peer[{i}].address"),
                format!("bgp.peer[{first}] is already this peer; list each router once"),
            );
            ok = false;
        }
        peers.push(peer);
    }
    ok.then_some(peers)
}

fn communities(
    r: &mut Report,
    b: &RawBgp,
    vips: Option<&[Vip]>,
) -> Option<BTreeMap<String, Vec<u32>>> {
    let mut ok = true;
    let mut communities = BTreeMap::new();
    for (vip, list) in &b.communities {
        let field = format!("bgp.communities.{vip}");
        if let Some(vips) = vips {
            if !vips.iter().any(|v| &v.name == vip) {
                r.invalid(
                    list.span(),
                    &field,
                    format!("there is no [[vip]] named \"{vip}\"; use a configured VIP's name"),
                );
                ok = false;
                continue;
            }
        }
        let mut values = Vec::new();
        for c in list.get_ref() {
            if let Some(v) = community(c.get_ref()) {
                values.push(v);
            } else {
                r.invalid(
                    c.span(),
                    &field,
                    format!(
                        "\"{}\" is not a community; write \"ASN:value\" with each part \
                         0 to 65535, e.g. \"65000:100\"",
                        c.get_ref()
                    ),
                );
                ok = false;
            }
        }
        communities.insert(vip.clone(), values);
    }
    ok.then_some(communities)
}

fn as_number(r: &mut Report, v: &Spanned<i64>, field: &str) -> Option<u32> {
    fields::int(
        r,
        v,
        field,
        1..=i64::from(u32::MAX),
        "AS 0 is reserved (RFC 7607); private ASes are 64512-65534 and 4200000000-4294967294",
    )
}

fn peer(r: &mut Report, i: usize, p: &RawPeer) -> Option<BgpPeer> {
    let field = |k: &str| format!("bgp.peer[{i}].{k}");
    let address = p.address.get_ref().parse::<IpAddr>();
    if address.is_err() {
        r.invalid(
            p.address.span(),
            field("address"),
            format!(
                "\"{}\" is not an IP address; write the router's address, e.g. \"10.0.0.1\" \
                 (no port: that is `port`; host names are not resolved)",
                p.address.get_ref()
            ),
        );
    }
    let remote_as = as_number(r, &p.remote_as, &field("as"));
    let port = match &p.port {
        Some(v) => fields::int(r, v, &field("port"), 1..=65535, "BGP listens on 179"),
        None => Some(DEFAULT_PORT),
    };
    let hold_time = match &p.hold_time {
        Some(v) if matches!(v.get_ref(), 1 | 2) => {
            r.invalid(
                v.span(),
                field("hold_time"),
                format!(
                    "{} seconds is not allowed: RFC 4271 needs 0 (no keepalives) or at least 3; \
                     write e.g. 3 for a fast failover or 90 (the default)",
                    v.get_ref()
                ),
            );
            None
        }
        Some(v) => fields::int(
            r,
            v,
            &field("hold_time"),
            0..=65535,
            "seconds; 0, or at least 3",
        ),
        None => Some(DEFAULT_HOLD_TIME),
    };
    let password = password(r, p, &field).ok();
    Some(BgpPeer {
        address: address.ok()?,
        remote_as: remote_as?,
        port: port?,
        hold_time: hold_time?,
        password: password?,
    })
}

/// `password` or `password_file` (not both): `Ok(None)` when neither is given, `Err` when
/// reported. Messages give the key's length, never the key.
fn password(
    r: &mut Report,
    p: &RawPeer,
    field: &dyn Fn(&str) -> String,
) -> Result<Option<Password>, ()> {
    let (key, span, name) = match (&p.password, &p.password_file) {
        (None, None) => return Ok(None),
        (Some(_), Some(file)) => {
            r.invalid(
                file.span(),
                field("password_file"),
                "give the key once: either password or password_file, not both",
            );
            return Err(());
        }
        (Some(v), None) => (v.get_ref().0.as_bytes().to_vec(), v.span(), "password"),
        (None, Some(v)) => {
            let path = fields::absolute_path(r, v, &field("password_file"), "/etc/sluice/bgp.key")
                .ok_or(())?;
            match std::fs::read(&path) {
                Ok(mut bytes) => {
                    // A file written by `echo` ends in a newline that is not part of the key.
                    if bytes.ends_with(b"\n") {
                        bytes.pop();
                        if bytes.ends_with(b"\r") {
                            bytes.pop();
                        }
                    }
                    (bytes, v.span(), "password_file")
                }
                Err(e) => {
                    r.invalid(
                        v.span(),
                        field("password_file"),
                        format!(
                            "cannot read {}: {e}; give a file the daemon can read (root, mode \
                             0600), holding only the key",
                            path.display()
                        ),
                    );
                    return Err(());
                }
            }
        }
    };
    let what = if name == "password" {
        "the password"
    } else {
        "the key in the file"
    };
    if key.is_empty() {
        r.invalid(
            span,
            field(name),
            format!("{what} is empty; give the key the router has for this neighbour (1 to {MAX_PASSWORD_LEN} bytes), or leave {name} out for no TCP MD5"),
        );
        return Err(());
    }
    if key.len() > MAX_PASSWORD_LEN {
        r.invalid(
            span,
            field(name),
            format!(
                "{what} is {} bytes long; Linux takes TCP MD5 keys of at most {MAX_PASSWORD_LEN} \
                 bytes (TCP_MD5SIG_MAXKEYLEN): use a shorter key on both sides",
                key.len()
            ),
        );
        return Err(());
    }
    Ok(Some(Password(key)))
}

/// `"65000:100"` → `65000 << 16 | 100`.
fn community(text: &str) -> Option<u32> {
    let (high, low) = text.split_once(':')?;
    let high: u16 = high.parse().ok()?;
    let low: u16 = low.parse().ok()?;
    Some(u32::from(high) << 16 | u32::from(low))
}
