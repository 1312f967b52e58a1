//! The config loader on arbitrary text and on mutated copies of `examples/sluice.toml` (the
//! corpus seeds).
//!
//! Invariants: no panic; every error names a line; `sluice check`'s loader (`parse_all`) and
//! `sluice run`'s (`parse`) accept and reject the same texts.

use lb_userspace::config::Config;

/// Checks the invariants on one input.
///
/// # Panics
/// When an invariant fails.
pub fn check(data: &[u8]) {
    // The loader reads the file as UTF-8 first; other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let run = Config::parse(text);
    let (config, errors) = Config::parse_all(text);
    match (&run, &errors) {
        (Ok(_), None) => assert!(config.is_some(), "check lost an accepted config"),
        (Err(e), Some(_)) => {
            assert!(!e.0.is_empty(), "rejected without an error");
            for error in &e.0 {
                assert!(error.line().is_some(), "error without a line: {error}");
            }
        }
        (Ok(_), Some(e)) => panic!("run accepts what check rejects: {e}"),
        (Err(e), None) => panic!("check accepts what run rejects: {e}"),
    }
    if let Some(errors) = &errors {
        for error in &errors.0 {
            assert!(
                error.line().is_some(),
                "check: error without a line: {error}"
            );
        }
    }
}
