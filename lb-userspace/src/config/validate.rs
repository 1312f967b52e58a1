//! From the raw file to typed values; every error names its field and how to fix it.

use std::{collections::HashSet, net::SocketAddr, path::Path};

use lb_common::maglev::check_table_size;

use super::{raw, Backend, Config, Encap, HashKey, Protocol, Vip, XdpMode};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot read config {path}: {error}")]
    Read { path: String, error: String },
    #[error("{0}")]
    Syntax(String),
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{path}: {inner}")]
    InFile {
        path: String,
        inner: Box<ConfigError>,
    },
}

impl ConfigError {
    pub(super) fn in_file(self, path: &Path) -> ConfigError {
        ConfigError::InFile {
            path: path.display().to_string(),
            inner: Box::new(self),
        }
    }

    pub(super) fn read(path: &Path, e: &std::io::Error) -> ConfigError {
        ConfigError::Read {
            path: path.display().to_string(),
            error: e.to_string(),
        }
    }
}

/// Every error found in one config, one per line when displayed.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl ConfigErrors {
    pub(super) fn in_file(self, path: &Path) -> ConfigErrors {
        ConfigErrors(self.0.into_iter().map(|e| e.in_file(path)).collect())
    }
}

pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let raw: raw::Config = toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
    Ok(validate(raw)?)
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

pub fn validate(raw: raw::Config) -> Result<Config, ConfigError> {
    if raw.instance.is_empty()
        || !raw
            .instance
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(invalid("instance", "use letters, digits, '-' and '_' only"));
    }
    if raw.interfaces.is_empty() {
        return Err(invalid(
            "interfaces",
            "name at least one interface, e.g. [\"eth0\"]",
        ));
    }
    let xdp_mode = match raw.xdp_mode.as_str() {
        "native" => XdpMode::Native,
        "skb" => XdpMode::Skb,
        other => {
            return Err(invalid(
                "xdp_mode",
                format!("\"{other}\": use \"native\" or \"skb\""),
            ))
        }
    };
    if raw.conntrack_entries == 0 {
        return Err(invalid(
            "conntrack_entries",
            "must be at least 1 (default 1048576)",
        ));
    }
    let encap = Encap {
        source_v4: raw.encap.source_v4.parse().map_err(|_| {
            invalid(
                "encap.source_v4",
                "expected an IPv4 prefix like 198.19.255.0/24",
            )
        })?,
        source_v6: raw.encap.source_v6.parse().map_err(|_| {
            invalid(
                "encap.source_v6",
                "expected an IPv6 prefix like 2001:db8:ffff::/96",
            )
        })?,
    };
    if raw.vips.len() > lb_common::MAX_VIPS as usize {
        return Err(invalid(
            "vip",
            format!("at most {} VIPs", lb_common::MAX_VIPS),
        ));
    }
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    let mut vips = Vec::with_capacity(raw.vips.len());
    for (i, v) in raw.vips.into_iter().enumerate() {
        let vip = vip(i, v)?;
        if !names.insert(vip.name.clone()) {
            return Err(invalid(
                format!("vip[{i}].name"),
                format!("\"{}\" is used twice", vip.name),
            ));
        }
        if !addresses.insert((vip.address, vip.port, vip.protocol)) {
            return Err(invalid(
                format!("vip[{i}].address"),
                "another VIP has this address, port and protocol",
            ));
        }
        vips.push(vip);
    }
    Ok(Config {
        instance: raw.instance,
        interfaces: raw.interfaces,
        xdp_mode,
        conntrack_entries: raw.conntrack_entries,
        keep_dataplane: false,
        bpffs: "/sys/fs/bpf".into(),
        admin: super::Admin {
            socket: "/run/sluice/admin.sock".into(),
        },
        management: super::Management {
            address: SocketAddr::from(([127, 0, 0, 1], 9000)),
        },
        shutdown: super::Shutdown {
            delay: std::time::Duration::from_secs(1),
            timeout: std::time::Duration::from_secs(1),
        },
        encap,
        vips,
    })
}

fn vip(i: usize, v: raw::Vip) -> Result<Vip, ConfigError> {
    let f = |name: &str| format!("vip[{i}].{name}");
    if v.name.is_empty() {
        return Err(invalid(f("name"), "must not be empty"));
    }
    let addr: SocketAddr = v.address.parse().map_err(|_| {
        invalid(
            f("address"),
            format!(
                "\"{}\": expected IP:port, e.g. 198.19.0.10:80 or [2001:db8::10]:443",
                v.address
            ),
        )
    })?;
    if addr.port() == 0 {
        return Err(invalid(f("address"), "port 0 is not a service port"));
    }
    let protocol = match v.protocol.as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return Err(invalid(
                f("protocol"),
                format!("\"{other}\": use \"tcp\" or \"udp\""),
            ))
        }
    };
    let hash = match v.hash.as_str() {
        "5-tuple" => HashKey::FiveTuple,
        "source-ip" => HashKey::SourceIp,
        other => {
            return Err(invalid(
                f("hash"),
                format!("\"{other}\": use \"5-tuple\" or \"source-ip\""),
            ))
        }
    };
    check_table_size(v.table_size).map_err(|e| invalid(f("table_size"), e.to_string()))?;
    let mut seen = HashSet::new();
    let mut backends = Vec::with_capacity(v.backends.len());
    for (j, b) in v.backends.into_iter().enumerate() {
        let field = f(&format!("backend[{j}].address"));
        let address = b
            .address
            .parse()
            .map_err(|_| invalid(&field, format!("\"{}\": expected an IP address", b.address)))?;
        if !seen.insert(address) {
            return Err(invalid(field, format!("{address} is listed twice")));
        }
        backends.push(Backend {
            address,
            weight: b.weight,
            health: None,
        });
    }
    if backends.len() as u64 * 100 > u64::from(v.table_size) {
        return Err(invalid(
            f("table_size"),
            "must be above 100 × the number of backends for an even spread",
        ));
    }
    Ok(Vip {
        name: v.name,
        address: addr.ip(),
        port: addr.port(),
        protocol,
        hash,
        table_size: v.table_size,
        seed: v.seed,
        backends,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, HashKey, Protocol};

    const GOOD: &str = r#"
interfaces = ["eth0"]
[encap]
source_v4 = "198.19.255.0/24"
source_v6 = "2001:db8:ffff::/96"
[[vip]]
name = "web"
address = "198.19.0.10:80"
[[vip.backend]]
address = "198.18.10.2"
[[vip.backend]]
address = "2001:db8:a::2"
weight = 3
"#;

    fn error_of(text: &str) -> String {
        Config::parse(text)
            .expect_err("config should be rejected")
            .to_string()
    }

    #[test]
    fn good_config_has_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.instance, "default");
        assert_eq!(c.vips[0].table_size, 65537);
        assert_eq!(c.vips[0].protocol, Protocol::Tcp);
        assert_eq!(c.vips[0].hash, HashKey::FiveTuple);
        assert_eq!(c.vips[0].backends[1].weight, 3);
    }

    #[test]
    fn broken_configs_name_field_and_fix() {
        let web = "name = \"web\"";
        let cases = [
            (
                "bad CIDR",
                GOOD.replace("/24", "/33"),
                "encap.source_v4: expected an IPv4 prefix",
            ),
            (
                "unknown key",
                GOOD.replace("[encap]", "colour = 1\n[encap]"),
                "unknown field `colour`",
            ),
            (
                "non-prime",
                GOOD.replace(web, "name = \"web\"\ntable_size = 65536"),
                "not prime",
            ),
            (
                "port 0",
                GOOD.replace(":80", ":0"),
                "vip[0].address: port 0",
            ),
            (
                "duplicate backend",
                GOOD.replace("2001:db8:a::2", "198.18.10.2"),
                "vip[0].backend[1].address: 198.18.10.2 is listed twice",
            ),
            (
                "bad protocol",
                GOOD.replace(web, "name = \"web\"\nprotocol = \"sctp\""),
                "use \"tcp\" or \"udp\"",
            ),
        ];
        for (name, text, expect) in &cases {
            let e = error_of(text);
            assert!(e.contains(expect), "{name}: {e}");
        }
    }

    #[test]
    fn syntax_errors_give_the_line() {
        let e = error_of("interfaces = [\"eth0\"\n[encap]\n");
        assert!(e.contains("line"), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = Config::load(std::path::Path::new("/nonexistent/sluice.toml")).unwrap_err();
        assert!(matches!(e.0[0], ConfigError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/sluice.toml"));
    }
}
