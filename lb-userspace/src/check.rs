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
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            return Findings {
                errors: vec![errors.to_string()],
                warnings: Vec::new(),
            }
        }
    };
    let file = path.display();
    let mut errors = Vec::new();
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
