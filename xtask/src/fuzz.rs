//! `cargo xtask fuzz [TARGET] [--seconds N]` and the short fuzz stage of `cargo xtask test`.
//!
//! The targets live in `fuzz/` (cargo-fuzz, outside the workspace). They are built on the
//! stable toolchain with `RUSTC_BOOTSTRAP=1` (cargo-fuzz's instrumentation flags are
//! nightly-only; the same toolchain then builds everything) and without a sanitizer: the code
//! under test is safe Rust, so coverage-guided search and panics are what find its bugs.
//! Each run starts from the checked-in seeds in `fuzz/corpus/<target>/`; what libFuzzer adds
//! goes to a scratch directory beside the build, so a run never edits the repository.
//! A crash leaves its input in `fuzz/artifacts/<target>/` and fails the run.
//!
//! The build lives in `~/.cache/sluice/fuzz-target`, not in the clone's `target/`: it shares
//! nothing with the workspace's build (every crate is instrumented), a cold one takes minutes,
//! and CI starts from a fresh clone each time. Only sluice's own crates rebuild there when they
//! change; the scratch corpora grow across runs, which is what continuous fuzzing wants.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cargo::Workspace, process, setup, test_summary::Counts};

/// Every target, in the order they run.
pub const TARGETS: [&str; 6] = [
    "proxy_parse",
    "forwarded",
    "client_cert",
    "config",
    "http_request",
    "maglev",
];

/// The cargo-fuzz release `setup` installs when `cargo fuzz` is missing.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// `cargo fuzz`, installed into the xtask cache (not `~/.cargo/bin`) when absent.
pub fn ensure_cargo_fuzz() -> Result<PathBuf> {
    let root = setup::cache_dir()?.join("cargo-fuzz");
    let bin = root.join("bin").join("cargo-fuzz");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!("[fuzz] installing cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)");
    process::run(
        Command::new(crate::cargo::cargo_program())
            .args([
                "install",
                "cargo-fuzz",
                "--locked",
                "--version",
                CARGO_FUZZ_VERSION,
            ])
            .arg("--root")
            .arg(&root)
            .current_dir(setup::cache_dir()?),
    )?;
    Ok(bin)
}

/// How a fuzz run is set up: the built targets and where their scratch corpora go.
pub struct Fuzzer {
    cargo_fuzz: PathBuf,
    fuzz_dir: PathBuf,
    target_dir: PathBuf,
    /// Where `cargo fuzz build` put the target binaries.
    bin_dir: PathBuf,
    ws: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

impl Fuzzer {
    /// Builds every target (release, debug assertions on, no sanitizer).
    pub fn build(ws: &Workspace) -> Result<Fuzzer> {
        let target_dir = setup::cache_dir()?.join("fuzz-target");
        let fuzzer = Fuzzer {
            cargo_fuzz: ensure_cargo_fuzz()?,
            fuzz_dir: ws.root().join("fuzz"),
            bin_dir: target_dir.join(setup::host_triple()?).join("release"),
            target_dir,
            ws: crate::cargo::build_env()?,
        };
        let mut cmd = fuzzer.command();
        cmd.args(["build", "--sanitizer", "none"]);
        process::run(&mut cmd).context("building the fuzz targets")?;
        Ok(fuzzer)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.cargo_fuzz);
        // `cargo-fuzz` is run as a cargo subcommand: its first argument is its own name.
        cmd.arg("fuzz")
            .current_dir(&self.fuzz_dir)
            .envs(self.ws.iter().map(|(k, v)| (k, v)))
            // The targets reach lb-userspace, whose eBPF object they never load.
            .env("AYA_BUILD_SKIP", "1")
            .env("CARGO_TARGET_DIR", &self.target_dir);
        cmd
    }

    /// Runs `target` for `seconds` from its seeds; `Ok(false)` when it found a crash.
    pub fn run(&self, target: &str, seconds: u64) -> Result<bool> {
        let seeds = seeds(&self.fuzz_dir, target);
        let scratch = self.target_dir.join("corpus").join(target);
        fs::create_dir_all(&scratch)
            .with_context(|| format!("cannot create {}", scratch.display()))?;
        let artifacts = self.fuzz_dir.join("artifacts").join(target);
        fs::create_dir_all(&artifacts)
            .with_context(|| format!("cannot create {}", artifacts.display()))?;
        // The binary `build` made, run directly: `cargo fuzz run` would first rebuild the
        // whole dependency tree under flags of its own.
        let mut cmd = Command::new(self.bin_dir.join(target));
        cmd.arg(&scratch)
            .arg(&seeds)
            .arg(format!("-artifact_prefix={}/", artifacts.display()))
            .arg(format!("-max_total_time={seconds}"))
            // One line per second of progress is plenty in a CI log.
            .args(["-print_final_stats=1", "-verbosity=0"]);
        process::announce(&cmd);
        // libFuzzer reports every new coverage point: the log keeps it, the console gets the
        // final statistics, or the end of the log when the target failed.
        let log_path = self.target_dir.join(format!("{target}.log"));
        let log = fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let status = cmd
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .with_context(|| format!("cannot run the {target} fuzz target"))?;
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if status.success() {
            for line in lines.iter().filter(|l| {
                l.starts_with("Done ")
                    || l.starts_with("stat::average_exec_per_sec")
                    || l.starts_with("stat::number_of_executed_units")
            }) {
                eprintln!("[fuzz {target}] {line}");
            }
        } else {
            eprintln!("[fuzz {target}] failed; the end of {}:", log_path.display());
            for line in &lines[lines.len().saturating_sub(60)..] {
                eprintln!("{line}");
            }
        }
        Ok(status.success())
    }
}

/// `cargo xtask fuzz`: one target or all, for `seconds` each.
pub fn command(ws: &Workspace, target: Option<&str>, seconds: u64) -> Result<bool> {
    let targets: Vec<&str> = match target {
        Some(t) if TARGETS.contains(&t) => vec![t],
        Some(t) => bail!(
            "no fuzz target {t:?}; the targets are {}",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    let fuzzer = Fuzzer::build(ws)?;
    let mut ok = true;
    for t in targets {
        ok &= fuzzer.run(t, seconds)?;
    }
    Ok(ok)
}

/// The fuzz stage of `cargo xtask test`: every target briefly; one test per target.
pub fn stage(ws: &Workspace, seconds: u64) -> Counts {
    let mut counts = Counts::default();
    let fuzzer = match Fuzzer::build(ws) {
        Ok(f) => f,
        Err(err) => {
            eprintln!("error: the fuzz targets did not build: {err:#}");
            counts.failed += 1;
            return counts;
        }
    };
    for t in TARGETS {
        match fuzzer.run(t, seconds) {
            Ok(true) => {
                eprintln!("fuzz {t} ... ok");
                counts.passed += 1;
            }
            Ok(false) => {
                eprintln!("fuzz {t} ... FAILED (input in fuzz/artifacts/{t}/)");
                counts.failed += 1;
            }
            Err(err) => {
                eprintln!("fuzz {t} ... FAILED: {err:#}");
                counts.failed += 1;
            }
        }
    }
    counts
}

/// Where the checked-in seeds of `target` are, under `fuzz/`.
fn seeds(fuzz_dir: &Path, target: &str) -> PathBuf {
    fuzz_dir.join("corpus").join(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_seeds_and_a_source() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("root");
        for t in TARGETS {
            let source = root.join("fuzz/fuzz_targets").join(format!("{t}.rs"));
            assert!(source.is_file(), "{} missing", source.display());
            let n = fs::read_dir(seeds(&root.join("fuzz"), t)).map_or(0, Iterator::count);
            assert!(n > 0, "no seeds for {t}");
        }
    }
}
