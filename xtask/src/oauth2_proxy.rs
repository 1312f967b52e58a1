//! The real oauth2-proxy that `tests/tests/keycloak_routes.rs` runs against Keycloak. `cargo
//! xtask setup` builds it from the Go module proxy with the machine's Go (`go install
//! module@version`, whose module checksums the Go checksum database vouches for), everything
//! under `<cache>/oauth2-proxy-<version>/`; nothing goes into the repository. The tests find
//! the binary through `<cache>/oauth2-proxy.manifest`, which says either where it is or, when
//! it could not be built, why (the tests then fail with that reason).
//!
//! ```text
//! <cache>/oauth2-proxy-v7.15.6/bin/oauth2-proxy   the binary (GOBIN)
//!                             /go/                GOPATH, with the module cache in go/pkg/mod
//! <cache>/oauth2-proxy.manifest                   version and binary, or why it is missing
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    process,
    setup::{cache_dir, recorded},
};

/// The oauth2-proxy release the forward-auth interop tests run.
pub const VERSION: &str = "v7.15.6";

const MODULE: &str = "github.com/oauth2-proxy/oauth2-proxy/v7";

/// `go install` leaves the release's version string unset ("undefined"); the release builds
/// set it with this linker flag, and so does setup, so `oauth2-proxy --version` names it.
const VERSION_VARIABLE: &str = "github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION";

fn manifest_path() -> Result<PathBuf> {
    Ok(cache_dir()?.join("oauth2-proxy.manifest"))
}

/// The setup step: build the binary unless it is there and names this version. A failure is
/// recorded in the manifest (and returned), so the tests can say why they cannot run.
pub fn ensure() -> Result<String> {
    recorded("oauth2-proxy", VERSION, &manifest_path()?, prepare)
}

fn prepare() -> Result<String> {
    let root = cache_dir()?.join(format!("oauth2-proxy-{VERSION}"));
    let bin = root.join("bin").join("oauth2-proxy");
    let present = built_version(&bin).is_some_and(|v| v.contains(VERSION));
    if !present {
        build(&root)?;
    }
    let Some(version) = built_version(&bin) else {
        bail!(
            "{} was built but `oauth2-proxy --version` does not run",
            bin.display()
        );
    };
    if !version.contains(VERSION) {
        bail!("{} reports {version:?}, not {VERSION}", bin.display());
    }
    let manifest = manifest_path()?;
    fs::write(
        &manifest,
        format!("version={VERSION}\nbinary={}\n", bin.display()),
    )
    .with_context(|| format!("cannot write {}", manifest.display()))?;
    Ok(if present {
        format!("already present ({version}, {})", bin.display())
    } else {
        format!("built ({version}, {})", bin.display())
    })
}

/// `oauth2-proxy --version` (e.g. `oauth2-proxy v7.15.6 (built with go1.26.8)`), if it runs.
fn built_version(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// `go install MODULE@VERSION` with its GOPATH, module cache and GOBIN under `root`; the build
/// cache is a temporary directory under `root`, removed afterwards (about 400 MB that only a
/// rebuild of this one version would use).
fn build(root: &Path) -> Result<()> {
    let go = which_go()?;
    let gopath = root.join("go");
    let build_cache = root.join("go-build.tmp");
    fs::create_dir_all(&gopath).with_context(|| format!("cannot create {}", gopath.display()))?;
    eprintln!(
        "[setup] building oauth2-proxy {VERSION} from the Go module proxy with {} (about 750 MB \
         of modules unpacked, then a one-minute build)",
        go.display()
    );
    let result = process::run(
        Command::new(&go)
            .args(["install", "-trimpath"])
            .arg(format!("-ldflags=-X {VERSION_VARIABLE}={VERSION}"))
            .arg(format!("{MODULE}@{VERSION}"))
            .env("GOPATH", &gopath)
            .env("GOMODCACHE", gopath.join("pkg").join("mod"))
            .env("GOCACHE", &build_cache)
            .env("GOBIN", root.join("bin"))
            // Module files read-only by default would make the cache undeletable by `rm -rf`.
            .env("GOFLAGS", "-modcacherw")
            // Whatever the machine's Go is set to, fetch through the public proxy and check
            // against the public checksum database, not a private mirror that skips it.
            .env("GOPROXY", "https://proxy.golang.org,direct")
            .env("GONOSUMDB", "")
            .env("GOPRIVATE", "")
            .env("GOTOOLCHAIN", "local"),
    )
    .context(
        "`go install` of oauth2-proxy failed (is the Go module proxy reachable, and Go at least \
         the version its go.mod asks for?)",
    );
    let _ = fs::remove_dir_all(&build_cache);
    result
}

/// The machine's `go`: on `PATH`, else the official tarball's `/usr/local/go/bin/go`.
fn which_go() -> Result<PathBuf> {
    if let Ok(out) = Command::new("go").arg("version").output() {
        if out.status.success() {
            return Ok(PathBuf::from("go"));
        }
    }
    let fallback = Path::new("/usr/local/go/bin/go");
    if fallback.is_file() {
        return Ok(fallback.to_path_buf());
    }
    bail!(
        "no Go toolchain: `go` is not on PATH and {} does not exist; install Go from \
         https://go.dev/dl/ (oauth2-proxy {VERSION} needs the version its go.mod names)",
        fallback.display()
    )
}
