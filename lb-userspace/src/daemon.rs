//! `sluice run`: the daemon.

use std::path::Path;

/// Runs the daemon with the config at `path` until SIGINT/SIGTERM.
pub fn run(path: &Path) -> anyhow::Result<()> {
    let _ = path;
    anyhow::bail!("not implemented yet")
}
