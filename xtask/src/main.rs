//! `cargo xtask`: sets up the machine and builds, tests, demonstrates and benchmarks sluice.
//!
//! Every command except `setup` runs `setup` first, so a fresh Debian machine needs nothing
//! but `cargo xtask <command>`.

mod cargo;
mod commands;
mod fuzz;
mod keycloak;
mod oauth2_proxy;
mod package;
mod process;
mod setup;
mod test_summary;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test, demo and benchmark sluice"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing needs (rust-src, bpf-linker, Debian packages, bpffs,
    /// the Keycloak and oauth2-proxy the interop tests run).
    Setup,
    /// Build the workspace (debug, all targets; the eBPF object is built by lb-userspace's build.rs).
    Build,
    /// Run unit tests, then the root-only integration tests; print one summary line.
    Test {
        /// Test name filters / libtest arguments, passed to both `cargo test` runs.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build, then run the demo (namespaces, XDP on a gateway, real connections to a VIP).
    Demo,
    /// Run a benchmark in release mode: `cargo xtask bench xdp`, `bench edge`, `bench control`
    /// or `bench maglev`.
    Bench {
        /// What to benchmark (`xdp`, `edge`, `control` or `maglev`), plus any arguments for the
        /// bench binary (for `maglev`, criterion's).
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        what: Vec<String>,
    },
    /// Soak the release daemon under L4 and mTLS edge traffic while its config churns
    /// (reloads, drains, health flips, certificate swaps); not part of `test`.
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Build the Debian package `target/debian/sluice_<version>_<arch>.deb` (release binary,
    /// systemd unit, /etc/sluice/sluice.toml as a conffile).
    Package,
    /// Fuzz one target (or all of them) from its seeds in fuzz/corpus/; fails on a crash.
    Fuzz {
        /// One of `proxy_parse`, `forwarded`, `client_cert`, `config`, `http_request`, `maglev`
        /// (default: all).
        target: Option<String>,
        /// How long each target runs.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            // Print the cause chain without a backtrace (RUST_BACKTRACE is often set in CI).
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    setup::run()?;
    let ws = cargo::Workspace::locate;
    match command {
        Command::Setup => Ok(ExitCode::SUCCESS),
        Command::Build => commands::build(&ws()?).map(|()| ExitCode::SUCCESS),
        Command::Test { args } => commands::test(&ws()?, &args),
        Command::Demo => commands::demo(&ws()?),
        Command::Bench { what } => commands::bench(&ws()?, &what),
        Command::Soak { minutes } => commands::soak(&ws()?, minutes),
        Command::Package => package::command(&ws()?).map(|_| ExitCode::SUCCESS),
        Command::Fuzz { target, seconds } => {
            let ok = fuzz::command(&ws()?, target.as_deref(), seconds)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
