//! `cargo xtask bench xdp`: nanoseconds per packet of `sluice_xdp` by path beside a trivial
//! program, and live-frame forwarding rates, see [`xdp`].
//!
//! `cargo xtask bench edge`: the edge listener beside nginx and haproxy, see [`edge`].
//!
//! `cargo xtask bench control`: the daemon's probes, scrapes, idle CPU and SIGTERM with
//! conntrack full, see [`control`].
//!
//! (`cargo xtask bench maglev` is lb-common's criterion bench, not this program.)

mod control;
mod edge;
mod xdp;

use std::process::ExitCode;

use sluice_tests::is_root;

fn main() -> ExitCode {
    let what: Vec<String> = std::env::args().skip(1).collect();
    let run = match what.first().map(String::as_str) {
        Some("xdp") => xdp::run,
        Some("edge") => edge::run,
        Some("control") => control::run,
        _ => {
            eprintln!("usage: bench xdp|edge|control (and `cargo xtask bench maglev`)");
            return ExitCode::from(2);
        }
    };
    if !is_root() {
        eprintln!("bench needs root (BPF and network namespaces)");
        return ExitCode::FAILURE;
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
