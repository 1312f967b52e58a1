//! The real Keycloak that `tests/tests/keycloak.rs` runs against. `cargo xtask setup` fetches
//! its server distribution from Maven Central, checks it against a pinned SHA-256, unpacks it
//! once and runs `kc.sh build` once per build-time configuration the tests need, all under
//! `<cache>/keycloak-<version>/`; nothing goes into the repository. The tests find everything
//! through `<cache>/keycloak.manifest`, which says either where the builds are or, when they
//! could not be made, why (the tests then fail with that reason instead of passing unproven).
//!
//! ```text
//! <cache>/keycloak-26.7.3/download/keycloak-quarkus-dist-26.7.3.tar.gz
//!                        /dist/                 pristine unpacked distribution
//!                        /build-<name>/         hard links into dist/, own lib/quarkus/
//! <cache>/keycloak.manifest                     version, JDK, build directories
//! ```

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{
    process,
    setup::{cache_dir, recorded},
};

/// The Keycloak release the interop tests prove sluice against.
pub const VERSION: &str = "26.7.3";

/// SHA-256 of `org.keycloak:keycloak-quarkus-dist:26.7.3:tar.gz` as Maven Central served it
/// (checked here rather than trusting the `.sha1` from the same server).
const DIST_SHA256: &str = "77657f30b7e90d70f727712ce1c967f430fd6a5e9f458d32d8c6df0635345f47";

/// Pinned so `mvn` resolves the same goal on every machine.
const DEPENDENCY_PLUGIN: &str = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1";

/// The JDK majors Keycloak 26.7 supports (its "Supported Configurations" guide: 17, 21, 25),
/// newest first: the newest one installed under `/usr/lib/jvm` runs it.
const JDK_MAJORS: [u32; 3] = [25, 21, 17];

const JVM_DIR: &str = "/usr/lib/jvm";

/// Options every build gets: the management interface (port 9000) with health and metrics.
const COMMON_BUILD_OPTIONS: &[&str] = &["--health-enabled=true", "--metrics-enabled=true"];

/// One build per x509 lookup provider: `spi-x509cert-lookup--provider` is a build-time option
/// in Keycloak 26 (`kc.sh start --optimized` refuses to change it), so each header format
/// needs its own; the provider's header names and chain length are runtime options. These use
/// the embedded H2 database (said out loud: Keycloak warns about the implicit default). The
/// `postgres` build is for the two-node cluster, whose nodes share one database (and
/// find each other through it, Keycloak's default `jdbc-ping` discovery).
const BUILDS: &[(&str, &[&str])] = &[
    (
        "rfc9440",
        &["--db=dev-file", "--spi-x509cert-lookup--provider=rfc9440"],
    ),
    (
        "nginx",
        &["--db=dev-file", "--spi-x509cert-lookup--provider=nginx"],
    ),
    (
        "apache",
        &["--db=dev-file", "--spi-x509cert-lookup--provider=apache"],
    ),
    (
        "haproxy",
        &["--db=dev-file", "--spi-x509cert-lookup--provider=haproxy"],
    ),
    (
        "traefik",
        &["--db=dev-file", "--spi-x509cert-lookup--provider=traefik"],
    ),
    (
        "envoy",
        &["--db=dev-file", "--spi-x509cert-lookup--provider=envoy"],
    ),
    ("postgres", &["--db=postgres"]),
];

/// Written into each build directory: the options and JDK it was built with, so a change to
/// either rebuilds it.
const BUILD_STAMP: &str = "sluice-build";

/// `<cache>/keycloak.manifest`.
fn manifest_path() -> Result<PathBuf> {
    Ok(cache_dir()?.join("keycloak.manifest"))
}

/// The setup step: make sure every build exists and the manifest names them. A failure is
/// recorded in the manifest (and returned), so the Keycloak tests can say why they cannot run.
pub fn ensure() -> Result<String> {
    recorded("Keycloak", VERSION, &manifest_path()?, prepare)
}

fn prepare() -> Result<String> {
    let (java_home, java_version) = newest_jdk()?;
    let root = cache_dir()?.join(format!("keycloak-{VERSION}"));
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let dist = root.join("dist");
    let mut done = Vec::new();
    if !dist.join("version.txt").is_file() {
        let tarball = download(&root)?;
        unpack(&tarball, &root, &dist)?;
        done.push("fetched and unpacked");
    }
    let mut manifest = format!(
        "version={VERSION}\njava_home={}\njava_version={java_version}\n",
        java_home.display()
    );
    let mut built = Vec::new();
    for (name, extra) in BUILDS {
        let dir = root.join(format!("build-{name}"));
        let mut options: Vec<&str> = COMMON_BUILD_OPTIONS.to_vec();
        options.extend_from_slice(extra);
        if build(&dist, &dir, &options, &java_home)? {
            built.push(*name);
        }
        let _ = writeln!(manifest, "build.{name}={}", dir.display());
    }
    let path = manifest_path()?;
    fs::write(&path, manifest).with_context(|| format!("cannot write {}", path.display()))?;
    let names: Vec<&str> = BUILDS.iter().map(|(n, _)| *n).collect();
    if done.is_empty() && built.is_empty() {
        return Ok(format!(
            "already present ({VERSION} on Java {java_version}, builds {})",
            names.join(", ")
        ));
    }
    if !built.is_empty() {
        done.push("built");
    }
    Ok(format!(
        "{VERSION} {} on Java {java_version} in {} (builds {}; new: {})",
        done.join(" and "),
        root.display(),
        names.join(", "),
        built.join(", ")
    ))
}

/// The newest JDK Keycloak supports under `/usr/lib/jvm`: its home and full version.
fn newest_jdk() -> Result<(PathBuf, String)> {
    let mut found: Vec<(u32, PathBuf, String)> = Vec::new();
    let entries =
        fs::read_dir(JVM_DIR).with_context(|| format!("no JDK: cannot list {JVM_DIR}"))?;
    for entry in entries.filter_map(Result::ok) {
        let home = entry.path();
        // Debian's alternatives add symlinked aliases of the same JDK; one name is enough.
        if fs::symlink_metadata(&home).is_ok_and(|m| m.file_type().is_symlink()) {
            continue;
        }
        let Ok(release) = fs::read_to_string(home.join("release")) else {
            continue;
        };
        let Some(version) = release
            .lines()
            .find_map(|l| l.strip_prefix("JAVA_VERSION="))
            .map(|v| v.trim_matches('"').to_owned())
        else {
            continue;
        };
        let major = version.split('.').next().and_then(|m| m.parse().ok());
        if let Some(major) = major.filter(|m| JDK_MAJORS.contains(m)) {
            if home.join("bin").join("java").is_file() {
                found.push((major, home, version));
            }
        }
    }
    found.sort();
    let Some((_, home, version)) = found.pop() else {
        bail!(
            "no JDK Keycloak {VERSION} supports (OpenJDK {}) under {JVM_DIR}; install one, e.g. \
             `apt-get install openjdk-17-jre-headless`",
            JDK_MAJORS.map(|m| m.to_string()).join(", ")
        );
    };
    Ok((home, version))
}

/// Fetches the distribution with Maven (unless a verified copy is already there); returns the
/// tarball's path.
fn download(root: &Path) -> Result<PathBuf> {
    let dir = root.join("download");
    let tarball = dir.join(format!("keycloak-quarkus-dist-{VERSION}.tar.gz"));
    if tarball.is_file() && sha256(&tarball)? == DIST_SHA256 {
        return Ok(tarball);
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    eprintln!(
        "[setup] fetching Keycloak {VERSION} (about 170 MB) from Maven Central; then one \
         `kc.sh build` per x509 lookup provider, about 40 s each"
    );
    process::run(
        Command::new("mvn")
            .args(["-q", "-B"])
            .arg(format!("{DEPENDENCY_PLUGIN}:copy"))
            .arg(format!(
                "-Dartifact=org.keycloak:keycloak-quarkus-dist:{VERSION}:tar.gz"
            ))
            .arg(format!("-DoutputDirectory={}", dir.display())),
    )
    .context("Maven could not fetch the Keycloak distribution (is Maven Central reachable?)")?;
    let actual = sha256(&tarball)?;
    if actual != DIST_SHA256 {
        let _ = fs::remove_file(&tarball);
        bail!(
            "{} has SHA-256 {actual}, expected {DIST_SHA256}: not the Keycloak {VERSION} this \
             project pinned; removed it",
            tarball.display()
        );
    }
    Ok(tarball)
}

fn sha256(file: &Path) -> Result<String> {
    let out = process::output(Command::new("sha256sum").arg(file))?;
    out.split_whitespace()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("sha256sum printed nothing for {}", file.display()))
}

/// Unpacks into `<root>/dist.partial`, then renames it to `dist`, so an interrupted unpack is
/// never taken for a complete one.
fn unpack(tarball: &Path, root: &Path, dist: &Path) -> Result<()> {
    let partial = root.join("dist.partial");
    remove_dir(&partial)?;
    remove_dir(dist)?;
    fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    process::run(
        Command::new("tar")
            .arg("-xzf")
            .arg(tarball)
            .arg("--strip-components=1")
            .arg("-C")
            .arg(&partial),
    )?;
    if !partial.join("bin").join("kc.sh").is_file() {
        bail!("{} has no bin/kc.sh", tarball.display());
    }
    fs::rename(&partial, dist)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), dist.display()))
}

/// Makes `dir` a copy of `dist` built with `options` unless its stamp says it already is.
/// Returns whether it built. Everything but `lib/quarkus` (the only thing `kc.sh build`
/// rewrites; a started server writes only under `data/`) is a hard link into `dist`.
fn build(dist: &Path, dir: &Path, options: &[&str], java_home: &Path) -> Result<bool> {
    let stamp = format!("{}\njava_home={}\n", options.join(" "), java_home.display());
    if fs::read_to_string(dir.join(BUILD_STAMP)).is_ok_and(|s| s == stamp) {
        return Ok(false);
    }
    let partial = dir.with_extension("partial");
    remove_dir(&partial)?;
    remove_dir(dir)?;
    link_copy(dist, &partial)?;
    let quarkus = partial.join("lib").join("quarkus");
    remove_dir(&quarkus)?;
    process::run(
        Command::new("cp")
            .arg("-a")
            .arg(dist.join("lib").join("quarkus"))
            .arg(&quarkus),
    )?;
    process::run(
        Command::new(partial.join("bin").join("kc.sh"))
            .arg("build")
            .args(options)
            .env("JAVA_HOME", java_home),
    )
    .with_context(|| format!("`kc.sh build` failed in {}", partial.display()))?;
    fs::write(partial.join(BUILD_STAMP), stamp)
        .with_context(|| format!("cannot write the stamp in {}", partial.display()))?;
    fs::rename(&partial, dir)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), dir.display()))?;
    Ok(true)
}

/// `cp -al`: a tree of hard links (same file system as the cache), else a full copy.
fn link_copy(from: &Path, to: &Path) -> Result<()> {
    let linked = Command::new("cp")
        .arg("-al")
        .arg(from)
        .arg(to)
        .status()
        .is_ok_and(|s| s.success());
    if !linked {
        remove_dir(to)?;
        process::run(Command::new("cp").arg("-a").arg(from).arg(to))?;
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", dir.display())),
    }
}
