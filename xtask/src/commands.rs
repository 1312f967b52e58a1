//! The commands after `setup`: build, test, demo, bench.

use std::process::ExitCode;

use anyhow::Result;

use crate::{
    cargo::Workspace,
    fuzz, process,
    test_summary::{self, Counts},
};

/// Debug build of everything that runs on the host; lb-userspace's build.rs builds the eBPF
/// object (lb-ebpf) once on the way.
pub fn build(ws: &Workspace) -> Result<()> {
    process::run(ws.cargo().args([
        "build",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--all-targets",
    ]))
}

/// Seconds each fuzz target runs in `cargo xtask test` (six targets: 2 minutes).
const FUZZ_SECONDS: u64 = 20;

/// Unit tests, then the root-only integration tests (netns, XDP, `BPF_PROG_TEST_RUN`), then one
/// summary line. `args` go after `--` to both runs (test name filters and libtest flags).
pub fn test(ws: &Workspace, args: &[String]) -> Result<ExitCode> {
    let mut unit = Counts::default();
    let mut integration = Counts::default();
    let mut extra_failures = Counts::default();

    if let Err(err) = build(ws) {
        eprintln!("error: build failed, not running tests: {err:#}");
        extra_failures.failed += 1;
    } else {
        let mut cmd = ws.cargo();
        cmd.args([
            "test",
            "--workspace",
            "--exclude",
            "lb-ebpf",
            "--exclude",
            "sluice-tests",
            "--no-fail-fast",
        ]);
        if !args.is_empty() {
            cmd.arg("--").args(args);
        }
        unit = test_summary::run_counting(&mut cmd)?;

        if process::is_root() {
            let mut cmd = ws.cargo();
            cmd.args(["test", "-p", "sluice-tests", "--no-fail-fast", "--"])
                .arg("--test-threads=1")
                .env("SLUICE_BIN", ws.sluice_bin("debug")?)
                .args(args);
            integration = test_summary::run_counting(&mut cmd)?;
        } else {
            eprintln!(
                "error: the integration tests (sluice-tests) need root: they create network \
                 namespaces and load XDP programs. Run `cargo xtask test` as root \
                 (counting this as 1 failure)."
            );
            integration.failed += 1;
        }
    }

    // Last, so a slow fuzz build never delays the suites' results; skipped when the run is
    // filtered to some tests.
    let fuzzed = if args.is_empty() {
        fuzz::stage(ws, FUZZ_SECONDS)
    } else {
        Counts::default()
    };

    let mut total = unit;
    total += integration;
    total += fuzzed;
    total += extra_failures;
    println!(
        "sluice test summary: {total} (unit {}, integration {}, fuzz {})",
        unit.ran(),
        integration.ran(),
        fuzzed.ran()
    );
    Ok(if total.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Build, then replace this process with the demo so its exit status and Ctrl-C handling are
/// the caller's.
pub fn demo(ws: &Workspace) -> Result<ExitCode> {
    build(ws)?;
    let sluice = ws.sluice_bin("debug")?;
    let mut cmd = ws.cargo();
    cmd.args(["run", "-p", "sluice-tests", "--bin", "demo"])
        .env("SLUICE_BIN", &sluice);
    Err(process::exec(&mut cmd))
}

/// Release build, then the soak (`tests/src/bin/soak.rs`) for `minutes`.
pub fn soak(ws: &Workspace, minutes: u64) -> Result<ExitCode> {
    release_run(ws, "soak", &["--minutes".to_owned(), minutes.to_string()])
}

/// Release build of the sluice binary and the bench runner, then exec the runner with `what`.
/// `maglev` is lb-common's criterion bench instead (no root, no eBPF build needed).
pub fn bench(ws: &Workspace, what: &[String]) -> Result<ExitCode> {
    if let Some((first, rest)) = what.split_first() {
        if first == "maglev" {
            let mut cmd = ws.cargo();
            cmd.args(["bench", "-p", "lb-common", "--bench", "maglev", "--"])
                .args(rest);
            return Err(process::exec(&mut cmd));
        }
    }
    release_run(ws, "bench", what)
}

/// Release build of the sluice binary and the test crate's programs, then exec `program`.
fn release_run(ws: &Workspace, program: &str, args: &[String]) -> Result<ExitCode> {
    process::run(ws.cargo().args([
        "build",
        "--release",
        "-p",
        "lb-userspace",
        "-p",
        "sluice-tests",
        "--bins",
    ]))?;
    let sluice = ws.sluice_bin("release")?;
    let mut cmd = ws.cargo();
    cmd.args([
        "run",
        "--release",
        "-p",
        "sluice-tests",
        "--bin",
        program,
        "--",
    ])
    .args(args)
    .env("SLUICE_BIN", &sluice);
    Err(process::exec(&mut cmd))
}
