//! The `sluice` command: the daemon (`run`), config checking, backend-side decap, and the
//! operator subcommands that talk to a running daemon.

#![forbid(unsafe_code)]

use std::{io::IsTerminal as _, net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use lb_userspace::{
    check,
    cli::{self, AdminCommand},
    config::XdpMode,
    daemon,
    dataplane::Decap,
};

/// jemalloc rather than glibc's malloc: the edge allocates a request's buffers on one worker
/// thread and often frees them on another (an h2 stream's task, the backend connection's),
/// which glibc's per-thread arenas handle with a lock. Its settings (.cargo/config.toml) return
/// freed memory within a second, so the idle daemon stays under 20 MB; what it saves per
/// request is in README (Benchmarks, `bench edge`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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

/// For the subcommands that log as they run (`run`, `decap attach`).
#[derive(Args)]
struct Logging {
    /// Log format: `human` (coloured on a terminal) or `json` (one object per line).
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: load or adopt the dataplane, serve until SIGINT/SIGTERM, reload on SIGHUP.
    Run {
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
        /// How long to keep serving, not ready, after SIGTERM (e.g. `16s`, `500ms`); wins over
        /// the config's `shutdown_delay`.
        #[arg(long, value_parser = duration)]
        shutdown_delay: Option<Duration>,
        /// How long in-flight requests get once the node is closed; wins over the config's
        /// `shutdown_timeout`.
        #[arg(long, value_parser = positive_duration)]
        shutdown_timeout: Option<Duration>,
        #[command(flatten)]
        logging: Logging,
    },
    /// Validate a config file as `run` would, reading every certificate, key and CA file it
    /// names, and exit (0 when valid, warnings aside; otherwise every error, non-zero).
    Check {
        #[arg(short, long, default_value = "/etc/sluice/sluice.toml")]
        config: PathBuf,
    },
    /// Backend-side decapsulation (for hosts without the ipip / `ip6_tunnel` modules).
    Decap {
        #[command(subcommand)]
        command: DecapCommand,
    },
    #[command(flatten)]
    Admin(AdminCommand),
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
        #[command(flatten)]
        logging: Logging,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Run { logging, .. }
        | Command::Decap {
            command: DecapCommand::Attach { logging, .. },
        } => logging.log_format,
        _ => LogFormat::Human,
    };
    init_logging(format);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // The whole chain; each error names its own cause once (see the crate's doc).
            eprintln!("sluice: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a file or a journal.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// `500ms`, `1s`, `2m`, ...
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("\"{text}\" is not a duration ({e}); write e.g. \"500ms\" or \"16s\""))
}

fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        Duration::ZERO => Err("must be above 0: in-flight requests need time to finish".into()),
        d => Ok(d),
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check { config } => {
            let findings = check::check(&config);
            for warning in &findings.warnings {
                eprintln!("warning: {warning}");
            }
            if findings.errors.is_empty() {
                println!("{}: OK", config.display());
                Ok(ExitCode::SUCCESS)
            } else {
                for error in &findings.errors {
                    eprintln!("{error}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Run {
            config,
            shutdown_delay,
            shutdown_timeout,
            ..
        } => {
            let overrides = lb_userspace::shutdown::Overrides {
                delay: shutdown_delay,
                timeout: shutdown_timeout,
            };
            daemon::run(&config, overrides).map(|()| ExitCode::SUCCESS)
        }
        Command::Decap {
            command:
                DecapCommand::Attach {
                    iface,
                    vips,
                    skb_mode,
                    ..
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
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(command) => Ok(cli::run(command)),
    }
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
