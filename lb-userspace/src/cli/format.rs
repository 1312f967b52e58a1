//! Numbers for humans; `--json` keeps the raw values.

use std::time::Duration;

/// `512 B`, `1.2 KiB`, `3.0 GiB`.
pub fn bytes(n: u64) -> String {
    #[expect(clippy::cast_precision_loss, reason = "one decimal is shown")]
    bytes_f(n as f64)
}

/// `1.2 MiB/s`.
pub fn bytes_rate(per_sec: f64) -> String {
    format!("{}/s", bytes_f(per_sec))
}

fn bytes_f(n: f64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024.0 {
        return format!("{n:.0} B");
    }
    let mut value = n / 1024.0;
    let mut unit = UNITS[0];
    for next in &UNITS[1..] {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    format!("{value:.1} {unit}")
}

/// A per-second rate with an SI suffix: `0`, `0.5`, `12.0`, `12.3k`, `4.1M`.
pub fn rate(per_sec: f64) -> String {
    if per_sec == 0.0 {
        return "0".to_owned();
    }
    let mut value = per_sec;
    for suffix in ["", "k", "M", "G"] {
        if value < 1000.0 {
            return format!("{value:.1}{suffix}");
        }
        value /= 1000.0;
    }
    format!("{value:.1}T")
}

/// Flow ages and idle times: `350ms`, `4.2s`, `3m 7s`, `2h 5m 1s`.
pub fn millis(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", ms / 1000, ms % 1000 / 100),
        _ => humantime::format_duration(Duration::from_secs(ms / 1000)).to_string(),
    }
}

/// Daemon uptime: whole seconds.
pub fn uptime(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1_258_291), "1.2 MiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
        assert_eq!(bytes_rate(2048.0), "2.0 KiB/s");
    }

    #[test]
    fn rates_use_si_suffixes() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(0.5), "0.5");
        assert_eq!(rate(999.0), "999.0");
        assert_eq!(rate(12_345.0), "12.3k");
        assert_eq!(rate(4_100_000.0), "4.1M");
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(millis(350), "350ms");
        assert_eq!(millis(4_250), "4.2s");
        assert_eq!(millis(187_900), "3m 7s");
        assert_eq!(uptime(7_501), "2h 5m 1s");
    }
}
