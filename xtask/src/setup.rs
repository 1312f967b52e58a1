//! `cargo xtask setup`: everything a fresh Debian 12 machine needs, each step skipped when its
//! result is already there (so the second run takes well under a second).

use std::{
    env,
    ffi::OsStr,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context as _, Result};

use crate::{keycloak, oauth2_proxy, process};

/// bpf-linker release known to build against rustc's LLVM 22 (see TOOLCHAIN.md).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the tests, the demo and the benchmarks call.
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "iputils-ping",
    "ethtool",
    "curl",
    "socat",
    // `openssl s_client` in the TLS tests.
    "openssl",
    // An independent PROXY protocol v2 sender for the interop tests.
    "haproxy",
    // Real BGP routers (zebra, bgpd, vtysh; bird, birdc) the speaker's announcements are
    // checked against.
    "frr",
    "bird2",
    // The front ends and load tools `cargo xtask bench edge` compares against and beside.
    "nginx",
    "wrk",
    "nghttp2-client",
    // The LD_PRELOAD shim that gives wrk and h2load a client certificate, which `bench edge`
    // compiles with the C compiler against OpenSSL's headers.
    "gcc",
    "libssl-dev",
    // jemalloc, the daemon's allocator, is built from source by tikv-jemalloc-sys (configure
    // and make).
    "make",
    // libFuzzer, which the fuzz targets (`cargo xtask fuzz`, the fuzz stage of `test`) link,
    // is C++ built by libfuzzer-sys.
    "g++",
    // `perf record` of the daemon under load (`SLUICE_EDGE_BENCH_PROFILE`).
    "linux-perf",
    // `promtool check metrics` on a real scrape.
    "prometheus",
    // Fetches the Keycloak distribution (and brings OpenJDK 17, on which it also runs) for
    // the Keycloak interop tests.
    "maven",
    // The database the two clustered Keycloak nodes of the rolling-restart test share.
    "postgresql",
    // `systemd-analyze verify` of deploy/systemd/sluice.service (tests/tests/deploy.rs).
    "systemd",
    // dpkg-shlibdeps, for the Debian package's Depends line (`cargo xtask package`).
    "dpkg-dev",
];

const BPFFS: &str = "/sys/fs/bpf";

/// A real peer's setup step (`prepare`), with a failure written to its `manifest` (and
/// returned), so the tests that need the peer can say why they cannot run instead of skipping.
pub fn recorded(
    peer: &str,
    version: &str,
    manifest: &Path,
    prepare: impl FnOnce() -> Result<String>,
) -> Result<String> {
    prepare().or_else(|err| {
        let reason = format!("{err:#}").replace('\n', " ");
        fs::write(
            manifest,
            format!("version={version}\nunavailable={reason}\n"),
        )
        .with_context(|| format!("cannot write {}", manifest.display()))?;
        Err(err.context(format!(
            "{peer} {version} is not available; the {peer} interop tests will fail (reason \
             recorded in {})",
            manifest.display()
        )))
    })
}

/// Where setup keeps what it builds: `$SLUICE_CACHE_DIR`, else `$HOME/.cache/sluice`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = env::var_os("SLUICE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set; cannot locate ~/.cache/sluice")?;
    Ok(Path::new(&home).join(".cache").join("sluice"))
}

/// `cargo install --root` of bpf-linker; its `bin/` goes first on cargo's `PATH`.
pub fn bpf_linker_root() -> Result<PathBuf> {
    Ok(cache_dir()?.join("bpf-linker"))
}

pub fn run() -> Result<()> {
    let started = Instant::now();
    step("rust-src (stable)", rust_src)?;
    step("bpf-linker", bpf_linker)?;
    step("Debian packages", debian_packages)?;
    step("bpffs", bpffs)?;
    // Without Keycloak only the Keycloak tests fail (saying why); everything else still runs.
    if let Err(err) = step("Keycloak", keycloak::ensure) {
        eprintln!("[setup] warning: {err:#}");
    }
    // Likewise oauth2-proxy: only the tests that run it fail without it.
    if let Err(err) = step("oauth2-proxy", oauth2_proxy::ensure) {
        eprintln!("[setup] warning: {err:#}");
    }
    eprintln!("[setup] done in {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn step(name: &str, f: fn() -> Result<String>) -> Result<()> {
    let started = Instant::now();
    let outcome = f().with_context(|| format!("setup step `{name}` failed"))?;
    let secs = started.elapsed().as_secs_f64();
    if secs >= 1.0 {
        eprintln!("[setup] {name}: {outcome} ({secs:.1} s)");
    } else {
        eprintln!("[setup] {name}: {outcome}");
    }
    Ok(())
}

fn rustup() -> Command {
    Command::new("rustup")
}

fn rust_src() -> Result<String> {
    let installed = process::output(rustup().args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "stable",
    ]))
    .context("sluice needs rustup with a `stable` toolchain")?;
    if installed
        .lines()
        .any(|l| l.trim() == "rust-src" || l.trim().starts_with("rust-src-"))
    {
        return Ok("already present".into());
    }
    process::run(rustup().args(["component", "add", "rust-src", "--toolchain", "stable"]))?;
    Ok("installed".into())
}

/// `bpf-linker --version` if the binary runs (without help from `LD_LIBRARY_PATH`, which
/// `cargo run` points at the toolchain's libLLVM: the rpath must do).
fn bpf_linker_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin)
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn bpf_linker() -> Result<String> {
    let root = bpf_linker_root()?;
    let bin = root.join("bin").join("bpf-linker");
    if let Some(version) = bpf_linker_version(&bin) {
        return Ok(format!("already present ({version}, {})", bin.display()));
    }

    // bpf-linker must use an LLVM of the same major version as rustc. Debian has none that new,
    // but the stable toolchain ships its own libLLVM: point LLVM_PREFIX at a directory whose
    // lib/ links to it. The linker keeps an rpath into that directory, so it must stay.
    let sysroot = PathBuf::from(process::output(
        rustup().args(["run", "stable", "rustc", "--print", "sysroot"]),
    )?);
    let libllvm = find_libllvm(&sysroot.join("lib"))?;
    let llvm_major = rustc_llvm_major()?;
    let prefix = cache_dir()?.join("llvm");
    let lib_dir = prefix.join("lib");
    fs::create_dir_all(&lib_dir).with_context(|| format!("cannot create {}", lib_dir.display()))?;
    let own_name = libllvm
        .file_name()
        .context("libLLVM path has no file name")?
        .to_os_string();
    let mut names = vec![OsStr::new("libLLVM.so"), own_name.as_os_str()];
    names.dedup();
    for name in names {
        let link = lib_dir.join(name);
        if fs::symlink_metadata(&link).is_ok() {
            fs::remove_file(&link).with_context(|| format!("cannot replace {}", link.display()))?;
        }
        symlink(&libllvm, &link)
            .with_context(|| format!("cannot link {} -> {}", link.display(), libllvm.display()))?;
    }
    eprintln!(
        "[setup] building bpf-linker {BPF_LINKER_VERSION} against {} (LLVM {llvm_major}); \
         this takes about a minute",
        libllvm.display()
    );

    let features = format!("llvm-{llvm_major}");
    let install = |locked: bool| {
        let mut cmd = rustup();
        cmd.args(["run", "stable", "cargo", "install", "bpf-linker"])
            .args(["--version", BPF_LINKER_VERSION])
            .args(locked.then_some("--locked"))
            .args(["--no-default-features", "--features", &features])
            .arg("--root")
            .arg(&root)
            .env("LLVM_PREFIX", &prefix)
            // Outside the workspace so its .cargo/config.toml cannot interfere.
            .current_dir(cache_dir()?);
        process::run(&mut cmd)
    };
    if let Err(err) = install(true) {
        eprintln!("[setup] `cargo install --locked` failed ({err:#}); retrying without --locked");
        install(false)?;
    }

    match bpf_linker_version(&bin) {
        Some(version) => Ok(format!("installed ({version}, {})", bin.display())),
        None => bail!(
            "{} was installed but `bpf-linker --version` does not run",
            bin.display()
        ),
    }
}

/// The toolchain's shared libLLVM, `libLLVM.so.*` (e.g. `libLLVM.so.22.1-rust-1.95.0-stable`).
/// Not `libLLVM-22-rust-*.so` next to it: that is a linker script, which `LLVM_PREFIX` cannot use.
fn find_libllvm(lib_dir: &Path) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .collect();
    found.sort();
    let lib = found.into_iter().next().with_context(|| {
        format!(
            "no libLLVM.so.* in {} (is the `stable` toolchain installed by rustup?)",
            lib_dir.display()
        )
    })?;
    // Link to the real file (and name the second link after it), not to a symlink.
    fs::canonicalize(&lib).with_context(|| format!("cannot resolve {}", lib.display()))
}

/// A line of the stable rustc's `rustc -vV`, after `key:`.
fn rustc_info(key: &str) -> Result<String> {
    let info = process::output(rustup().args(["run", "stable", "rustc", "-vV"]))?;
    info.lines()
        .find_map(|l| Some(l.strip_prefix(key)?.strip_prefix(':')?.trim().to_owned()))
        .with_context(|| format!("no `{key}:` line in `rustc -vV`:\n{info}"))
}

/// Major version of the LLVM inside the stable rustc (`LLVM version: 22.1.2`).
fn rustc_llvm_major() -> Result<u32> {
    let version = rustc_info("LLVM version")?;
    version
        .split('.')
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("`LLVM version: {version}` in `rustc -vV` is not N.x"))
}

/// The triple rustc builds for by default (`host: x86_64-unknown-linux-gnu`).
pub fn host_triple() -> Result<String> {
    rustc_info("host")
}

fn debian_packages() -> Result<String> {
    let mut missing = Vec::new();
    for pkg in DEBIAN_PACKAGES {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Status}", pkg])
            .output()
            .context("cannot run dpkg-query: sluice's setup expects a Debian machine")?;
        let status = String::from_utf8_lossy(&out.stdout);
        if !(out.status.success() && status.trim() == "install ok installed") {
            missing.push(*pkg);
        }
    }
    if missing.is_empty() {
        return Ok(format!("already present ({})", DEBIAN_PACKAGES.join(", ")));
    }
    if !process::is_root() {
        bail!(
            "missing Debian packages {}; run as root (or `apt-get install -y {}`)",
            missing.join(", "),
            missing.join(" ")
        );
    }
    eprintln!("[setup] installing Debian packages: {}", missing.join(", "));
    process::run(Command::new("apt-get").arg("update"))?;
    process::run(
        Command::new("apt-get")
            .args(["install", "-y"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(format!("installed {}", missing.join(", ")))
}

fn bpffs_mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (_, dir, fstype) = (fields.next(), fields.next(), fields.next());
        dir == Some(BPFFS) && fstype == Some("bpf")
    }))
}

fn bpffs() -> Result<String> {
    if bpffs_mounted()? {
        return Ok(format!("already mounted at {BPFFS}"));
    }
    if !process::is_root() {
        bail!("bpffs is not mounted at {BPFFS}; run as root (or `mount -t bpf bpf {BPFFS}`)");
    }
    fs::create_dir_all(BPFFS).with_context(|| format!("cannot create {BPFFS}"))?;
    process::run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS]))?;
    if !bpffs_mounted()? {
        bail!("`mount -t bpf bpf {BPFFS}` succeeded but {BPFFS} is still not a bpf mount");
    }
    Ok(format!("mounted at {BPFFS}"))
}
