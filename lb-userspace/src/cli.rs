//! The operator subcommands that talk to a running daemon over the admin socket.

use std::{path::Path, process::ExitCode};

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Show the daemon's state: phase, readiness, VIPs, reloads.
    Status,
}

/// Runs one admin subcommand against the daemon at `socket`.
pub fn run(socket: &Path, json: bool, command: AdminCommand) -> anyhow::Result<ExitCode> {
    let _ = (socket, json, command);
    anyhow::bail!("not implemented yet")
}
