//! The operator subcommands that talk to a running daemon over the admin socket.

mod format;
mod render;
mod table;
mod watch;

use std::{
    io::{self, Write as _},
    net::IpAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;

use crate::admin::{
    client::{self, ClientError},
    protocol::{
        BackendRow, BgpAction, FlowQuery, FlowRow, FlowSort, ReloadOutcome, Request, Stats, Status,
    },
};

/// Reads of daemon state answer in milliseconds; this only bounds a wedged daemon.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A reload re-reads the config and rewrites the maps; give it room before giving up.
const RELOAD_TIMEOUT: Duration = Duration::from_mins(1);

/// Which daemon an admin subcommand talks to, and how it prints the answer.
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// The daemon's admin socket.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print machine-readable JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Where `[admin] socket` points unless configured.
pub const DEFAULT_SOCKET: &str = "/run/sluice/admin.sock";

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Show the daemon's state: phase, readiness, VIPs, reloads.
    Status {
        #[command(flatten)]
        to: AdminArgs,
    },
    /// List every backend of every VIP with its state, health and traffic.
    Backends {
        #[command(flatten)]
        to: AdminArgs,
    },
    /// Stop sending new flows to a backend; established flows stay until they end.
    Drain {
        /// The VIP's name in the config.
        vip: String,
        /// The backend's address.
        backend: IpAddr,
        #[command(flatten)]
        to: AdminArgs,
    },
    /// Undo `drain`: the backend takes new flows again (when healthy).
    Undrain {
        /// The VIP's name in the config.
        vip: String,
        /// The backend's address.
        backend: IpAddr,
        #[command(flatten)]
        to: AdminArgs,
    },
    /// List tracked flows (connection tracking entries).
    Flows {
        /// Only flows of this VIP (its name in the config).
        #[arg(long)]
        vip: Option<String>,
        /// Show at most this many flows.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only flows on this backend (its address).
        #[arg(long, value_name = "ADDR")]
        backend: Option<IpAddr>,
        /// Only flows from this client address or network (e.g. 203.0.113.7, 10.0.0.0/8);
        /// a PROXY header's real client counts as the client too.
        #[arg(long, value_name = "ADDR_OR_CIDR", value_parser = parse_client)]
        client: Option<ipnet::IpNet>,
        /// Order the flows: age (oldest first), idle (longest idle first), client, backend.
        /// Without it they come in conntrack's order.
        #[arg(long, value_enum)]
        sort: Option<FlowSort>,
        #[command(flatten)]
        to: AdminArgs,
    },
    /// Show the dataplane's counters and per-VIP and per-backend traffic.
    Stats {
        /// Refresh every --interval and show per-second rates, like `top` (Ctrl-C stops).
        #[arg(long)]
        watch: bool,
        /// How often --watch samples (e.g. 500ms, 2s).
        #[arg(long, default_value = "1s")]
        interval: humantime::Duration,
        #[command(flatten)]
        to: AdminArgs,
    },
    /// Re-read the config file and apply it (same as SIGHUP, but reports the outcome).
    Reload {
        #[command(flatten)]
        to: AdminArgs,
    },
    /// Withdraw a VIP's BGP announcement for maintenance (`withdraw`), or let it be announced
    /// again while it qualifies (`announce`).
    Bgp {
        action: BgpAction,
        /// The VIP's name in the config.
        vip: String,
        #[command(flatten)]
        to: AdminArgs,
    },
}

impl AdminCommand {
    /// The socket and output format this command was given.
    pub fn args(&self) -> &AdminArgs {
        match self {
            AdminCommand::Status { to }
            | AdminCommand::Backends { to }
            | AdminCommand::Drain { to, .. }
            | AdminCommand::Undrain { to, .. }
            | AdminCommand::Flows { to, .. }
            | AdminCommand::Stats { to, .. }
            | AdminCommand::Reload { to }
            | AdminCommand::Bgp { to, .. } => to,
        }
    }
}

/// Why a subcommand failed, already phrased for the operator: printed as one line, exit 1.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon answered `ok: false`.
    #[error("{0}")]
    Daemon(String),
    #[error("unexpected answer from the daemon (is it a different sluice version?): {0}")]
    Decode(serde_json::Error),
    #[error("{0}")]
    Usage(String),
    #[error("writing the output: {0}")]
    Output(io::Error),
}

// By hand, not `#[from]` (which would also make the cause the `source()`): the messages above
// print their cause, so exposing it too would print it twice in a chain.
impl From<serde_json::Error> for Failure {
    fn from(error: serde_json::Error) -> Failure {
        Failure::Decode(error)
    }
}

impl From<io::Error> for Failure {
    fn from(error: io::Error) -> Failure {
        Failure::Output(error)
    }
}

/// Runs one admin subcommand against the daemon at its `--socket`. Failures are reported on
/// stderr here and turn into exit code 1, so the caller never prints a context chain for them.
pub fn run(command: AdminCommand) -> ExitCode {
    let AdminArgs { socket, json } = command.args().clone();
    run_at(&socket, json, command)
}

fn run_at(socket: &Path, json: bool, command: AdminCommand) -> ExitCode {
    match dispatch(socket, json, command) {
        Ok(()) => ExitCode::SUCCESS,
        // `sluice flows | head`: the reader has what it wanted.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(socket: &Path, json: bool, command: AdminCommand) -> Result<(), Failure> {
    let (request, timeout) = match command {
        AdminCommand::Stats {
            watch: true,
            interval,
            ..
        } => return watch::run(socket, json, interval.into()),
        AdminCommand::Status { .. } => (Request::Status, QUERY_TIMEOUT),
        AdminCommand::Backends { .. } => (Request::Backends, QUERY_TIMEOUT),
        AdminCommand::Drain { vip, backend, .. } => {
            (Request::Drain { vip, backend }, QUERY_TIMEOUT)
        }
        AdminCommand::Undrain { vip, backend, .. } => {
            (Request::Undrain { vip, backend }, QUERY_TIMEOUT)
        }
        AdminCommand::Flows {
            vip,
            limit,
            backend,
            client,
            sort,
            ..
        } => (
            Request::Flows(FlowQuery {
                vip,
                limit,
                backend,
                client,
                sort,
            }),
            QUERY_TIMEOUT,
        ),
        AdminCommand::Stats { watch: false, .. } => (Request::Stats, QUERY_TIMEOUT),
        AdminCommand::Reload { .. } => (Request::Reload, RELOAD_TIMEOUT),
        AdminCommand::Bgp { action, vip, .. } => (Request::Bgp { action, vip }, QUERY_TIMEOUT),
    };
    let data = ask(socket, &request, timeout)?;
    if json {
        let text = serde_json::to_string_pretty(&data.unwrap_or(serde_json::Value::Null))?;
        return out(&format!("{text}\n"));
    }
    let text = match request {
        Request::Status => render::status(&decode::<Status>(data)?),
        Request::Backends => render::backends(&decode::<Vec<BackendRow>>(data)?),
        Request::Flows(FlowQuery { limit, .. }) => {
            let rows = decode::<Vec<FlowRow>>(data)?;
            if let Some(note) = render::flows_truncated(rows.len(), limit) {
                eprintln!("{note}");
            }
            render::flows(&rows)
        }
        Request::Stats => render::stats(&decode::<Stats>(data)?),
        Request::Reload => {
            let outcome = decode::<ReloadOutcome>(data)?;
            format!(
                "reloaded: {} VIPs, {} backends\n",
                outcome.vips, outcome.backends
            )
        }
        Request::Drain { vip, backend } => format!(
            "draining {backend} of {vip}: no new flows; established flows stay until they end\n"
        ),
        Request::Bgp {
            action: BgpAction::Withdraw,
            vip,
        } => format!("{vip}: withdrawn from every BGP peer until `sluice bgp announce {vip}`\n"),
        Request::Bgp {
            action: BgpAction::Announce,
            vip,
        } => format!("{vip}: announced again while it has a backend taking new flows\n"),
        Request::Undrain { vip, backend } => {
            format!("undrained {backend} of {vip}: it takes new flows again when healthy\n")
        }
    };
    out(&text)
}

/// Sends one request; the daemon's `data` on success.
fn ask(
    socket: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Option<serde_json::Value>, Failure> {
    let response = client::request(socket, request, timeout)?;
    if response.ok {
        Ok(response.data)
    } else {
        Err(Failure::Daemon(response.error.unwrap_or_else(|| {
            "the daemon refused the request without saying why".to_owned()
        })))
    }
}

fn decode<T: DeserializeOwned>(data: Option<serde_json::Value>) -> Result<T, Failure> {
    Ok(serde_json::from_value(
        data.unwrap_or(serde_json::Value::Null),
    )?)
}

/// Writes and flushes, so `--watch` output appears per sample even when piped.
fn out(text: &str) -> Result<(), Failure> {
    let mut stdout = io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests;

/// `--client`: a network, or one address as its /32 or /128.
fn parse_client(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text:?} is neither an address nor a network (like 10.0.0.0/8)"))
}
