//! Settings that are valid but almost certainly not what was meant: `sluice check` prints them
//! and `sluice run` logs them (at start and on every reload), and neither refuses the config.

use super::Config;

impl Config {
    /// One line per suspicious setting, each starting with the field at fault.
    pub fn warnings(&self) -> Vec<String> {
        self.vips
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.backends.is_empty() && v.backends.iter().all(|b| b.weight == 0))
            .map(|(i, v)| {
                format!(
                    "vip[{i}].backend: every backend of \"{}\" has weight 0, so none takes new \
                     flows: each new flow is dropped (drop_no_backend) and /health/ready stays \
                     503; give at least one backend a weight above 0",
                    v.name
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_vip_whose_every_backend_weighs_zero_is_warned_about() {
        let text = super::super::tests::GOOD;
        let mut c = Config::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.warnings(), Vec::<String>::new());
        for b in &mut c.vips[0].backends {
            b.weight = 0;
        }
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("vip[0].backend: "), "{w:?}");
        assert!(w[0].contains(&format!("\"{}\"", c.vips[0].name)), "{w:?}");
        // One backend with a weight is enough.
        c.vips[0].backends[0].weight = 1;
        assert_eq!(c.warnings(), Vec::<String>::new());
    }
}
