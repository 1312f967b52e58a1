//! Which text format a scrape gets. prometheus-client writes `OpenMetrics`; Prometheus asks for
//! it in its `Accept` header and gets it. Everyone else (curl, `promtool check metrics`, older
//! scrapers) gets the Prometheus text format 0.0.4, which differs in three ways: a counter's
//! `HELP`/`TYPE` name it with its `_total` suffix, there is no `# UNIT` and no `# EOF`, and
//! `unknown` is spelled `untyped`.

use std::collections::HashSet;

/// The Prometheus text format's media type.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a request's `Accept` header asks for `OpenMetrics`.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',').any(|part| {
            let mut params = part.split(';').map(str::trim);
            let media = params.next().unwrap_or_default();
            let refused = params.any(|p| p.replace(' ', "") == "q=0");
            media.eq_ignore_ascii_case("application/openmetrics-text") && !refused
        })
    })
}

/// `OpenMetrics` text turned into the Prometheus text format 0.0.4 (see the module docs).
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .filter(|(_, kind)| kind.trim() == "counter")
        .map(|(name, _)| name)
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|tag| {
            let rest = line.strip_prefix(tag)?;
            let (name, text) = rest.split_once(' ')?;
            let text = if *tag == "# TYPE " && text.trim() == "unknown" {
                "untyped"
            } else {
                text
            };
            let suffix = if counters.contains(name) {
                "_total"
            } else {
                ""
            };
            Some(format!("{tag}{name}{suffix} {text}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_negotiation() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(wants_openmetrics(Some("application/openmetrics-text")));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text; q=0, text/plain"
        )));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }

    #[test]
    fn counters_are_named_with_total_and_openmetrics_only_lines_go() {
        let om = "# HELP sluice_reloads Reloads.\n# TYPE sluice_reloads counter\n\
                  sluice_reloads_total{outcome=\"ok\"} 2\n# HELP sluice_up Up.\n\
                  # TYPE sluice_up gauge\n# UNIT sluice_up seconds\nsluice_up 1\n\
                  # TYPE sluice_x unknown\nsluice_x 3\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP sluice_reloads_total Reloads.\n# TYPE sluice_reloads_total counter\n\
             sluice_reloads_total{outcome=\"ok\"} 2\n# HELP sluice_up Up.\n\
             # TYPE sluice_up gauge\nsluice_up 1\n# TYPE sluice_x untyped\nsluice_x 3\n"
        );
    }
}
