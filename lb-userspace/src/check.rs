//! `sluice check`: everything `sluice run` would refuse in a config, found without touching the
//! system. The file is validated as `run` validates it, then every certificate, key and CA
//! bundle an edge listener names is read and checked as `run` reads it, each on its own so one
//! bad file does not hide the next (as `nginx -t` and `haproxy -c` load theirs).

use std::path::Path;

use crate::{config::Config, edge::tls::check_files};

/// What `check` found: errors make `run` refuse the config, warnings do not.
#[derive(Debug, Default)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn check(path: &Path) -> Findings {
    // Schema errors do not stop the file checks: what validated around them is checked too.
    let (config, config_errors) = Config::load_all(path);
    let mut errors: Vec<String> = config_errors.map(|e| e.to_string()).into_iter().collect();
    let Some(config) = config else {
        return Findings {
            errors,
            warnings: Vec::new(),
        };
    };
    let file = path.display();
    for (i, edge) in config.edges.iter().enumerate() {
        let Some(tls) = &edge.tls else { continue };
        for (field, error) in check_files(tls) {
            let field = if field.is_empty() {
                format!("edge[{i}].tls")
            } else {
                format!("edge[{i}].tls.{field}")
            };
            errors.push(format!("{file}: {field}: {error}"));
        }
    }
    let warnings = config
        .warnings()
        .into_iter()
        .map(|w| format!("{file}: {w}"))
        .collect();
    Findings { errors, warnings }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_errors_and_missing_files_come_in_one_run() {
        let dir = std::env::temp_dir().join(format!("sluice-check-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.toml");
        std::fs::write(
            &path,
            "interfaces = [\"eth0\"]\nconntrak_entries = 4096\n[encap]\n\
             source_v4 = \"198.19.255.0/24\"\n[[vip]]\nname = \"web\"\n\
             address = \"198.19.0.10:80\"\ntable_size = \"251\"\n[[vip.backend]]\n\
             address = \"198.18.10.2\"\n[[edge]]\nname = \"idp\"\n\
             address = \"198.19.0.10:443\"\npool = \"web\"\n[edge.tls]\n\
             certificates = [{ cert = \"/nonexistent/c.pem\", key = \"/nonexistent/c.key\" }]\n",
        )
        .unwrap();
        let found = check(&path);
        let all = found.errors.join("\n");
        let _ = std::fs::remove_dir_all(&dir);
        for want in [
            ":2:1: conntrak_entries: unknown key `conntrak_entries`; did you mean",
            ":8:14: vip[0].table_size: expected an integer",
            "edge[0].tls.certificates[0].cert: /nonexistent/c.pem: cannot read",
            "edge[0].tls.certificates[0].key: /nonexistent/c.key: cannot read",
        ] {
            assert!(all.contains(want), "{want:?} missing in:\n{all}");
        }
        assert_eq!(all.lines().count(), 4, "{all}");
    }
}
