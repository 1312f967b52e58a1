//! The `sluice` command: the daemon (`run`) and operator subcommands.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lb_userspace::{
    config::{Config, XdpMode},
    dataplane::{Dataplane, Decap, Options},
};

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "XDP load balancer for Linux gateway hosts"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load `sluice_xdp`, attach it to the configured interfaces and serve until SIGINT/SIGTERM.
    Run {
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
    },
    /// Validate a config file and exit (0 when valid).
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Backend-side decapsulation (for hosts without the ipip / `ip6_tunnel` modules).
    Decap {
        #[command(subcommand)]
        command: DecapCommand,
    },
}

#[derive(Subcommand)]
enum DecapCommand {
    /// Attach `sluice_decap` to IFACE for the given VIPs; stays in the foreground until
    /// SIGINT/SIGTERM, then detaches.
    Attach {
        #[arg(long)]
        iface: String,
        /// A VIP address local to this host (repeat for several).
        #[arg(long = "vip", required = true)]
        vips: Vec<IpAddr>,
        /// Use generic (skb) mode instead of driver mode.
        #[arg(long)]
        skb_mode: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt().with_target(false).init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Check { config } => {
            Config::load(&config)?;
            println!("{}: OK", config.display());
            Ok(())
        }
        Command::Run { config } => {
            let cfg = Config::load(&config)?;
            let mut dp = Dataplane::load(Options {
                conntrack_entries: cfg.conntrack_entries,
                ring_slots: ring_slots(&cfg),
            })?;
            dp.apply(&cfg)?;
            for iface in &cfg.interfaces {
                dp.attach(iface, cfg.xdp_mode)?;
                tracing::info!(iface, "sluice_xdp attached");
            }
            tracing::info!(vips = cfg.vips.len(), "serving");
            wait_for_signal()?;
            tracing::info!("stopping; detaching");
            Ok(())
        }
        Command::Decap {
            command:
                DecapCommand::Attach {
                    iface,
                    vips,
                    skb_mode,
                },
        } => {
            let mode = if skb_mode {
                XdpMode::Skb
            } else {
                XdpMode::Native
            };
            let _decap = Decap::attach(&iface, mode, &vips)?;
            tracing::info!(iface, ?vips, "sluice_decap attached");
            wait_for_signal()?;
            Ok(())
        }
    }
}

/// Room for every VIP's two tables, twice over so a reload can stage resized or new VIPs, and
/// never less than the default.
fn ring_slots(cfg: &Config) -> u32 {
    let needed: u64 = cfg.vips.iter().map(|v| 4 * u64::from(v.table_size)).sum();
    u32::try_from(needed)
        .unwrap_or(u32::MAX)
        .max(lb_common::DEFAULT_RING_SLOTS)
}

fn wait_for_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })
    .context("waiting for a signal")
}
