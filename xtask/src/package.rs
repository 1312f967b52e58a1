//! `cargo xtask package`: the Debian package, `target/debian/sluice_<version>_<arch>.deb`.
//!
//! Plain `dpkg-deb --build` of a staging tree rather than cargo-deb: dpkg-deb and
//! dpkg-shlibdeps come with every Debian build machine, the tree below is the whole recipe,
//! and there is no extra tool to install and keep in step with the toolchain.
//!
//! Contents: `/usr/bin/sluice` (release build), `/lib/systemd/system/sluice.service`,
//! `/etc/sluice/sluice.toml` (a conffile: upgrades keep the operator's edits), and the README
//! and full example config under `/usr/share/doc/sluice/`. The maintainer scripts only reload
//! systemd and stop the service on removal; nothing is enabled or started on install, since
//! the shipped config must first name the host's interfaces and VIPs.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{cargo::Workspace, process};

/// Where the package's files come from in the repository, and where they go.
const FILES: &[(&str, &str, u32)] = &[
    (
        "deploy/systemd/sluice.service",
        "lib/systemd/system/sluice.service",
        0o644,
    ),
    ("deploy/debian/sluice.toml", "etc/sluice/sluice.toml", 0o644),
    ("README.md", "usr/share/doc/sluice/README.md", 0o644),
    (
        "examples/sluice.toml",
        "usr/share/doc/sluice/examples/sluice.toml",
        0o644,
    ),
    ("deploy/debian/postinst", "DEBIAN/postinst", 0o755),
    ("deploy/debian/prerm", "DEBIAN/prerm", 0o755),
    ("deploy/debian/postrm", "DEBIAN/postrm", 0o755),
];

/// Release build of the daemon, then the package under `<target>/debian/`.
pub fn command(ws: &Workspace) -> Result<PathBuf> {
    process::run(
        ws.cargo()
            .args(["build", "--release", "-p", "lb-userspace"]),
    )?;
    let binary = ws.sluice_bin("release")?;
    let out_dir = ws.target_dir().join("debian");
    let deb = build(ws.root(), &binary, env!("CARGO_PKG_VERSION"), &out_dir)?;
    println!("{}", deb.display());
    Ok(deb)
}

/// Builds `sluice_<version>_<arch>.deb` in `out_dir` from the repository at `root` and the
/// daemon at `binary`; returns its path.
pub fn build(root: &Path, binary: &Path, version: &str, out_dir: &Path) -> Result<PathBuf> {
    let arch = process::output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let staging = out_dir.join(format!("sluice_{version}_{arch}"));
    if staging.exists() {
        fs::remove_dir_all(&staging)
            .with_context(|| format!("removing the old staging tree {}", staging.display()))?;
    }
    install(binary, &staging.join("usr/bin/sluice"), 0o755)?;
    for (from, to, mode) in FILES {
        install(&root.join(from), &staging.join(to), *mode)?;
    }
    fs::write(
        staging.join("DEBIAN/conffiles"),
        "/etc/sluice/sluice.toml\n",
    )
    .context("writing DEBIAN/conffiles")?;
    let control = control(version, &arch, &depends(binary)?, installed_kib(&staging)?);
    fs::write(staging.join("DEBIAN/control"), control).context("writing DEBIAN/control")?;
    let deb = out_dir.join(format!("sluice_{version}_{arch}.deb"));
    process::run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build"])
            .arg(&staging)
            .arg(&deb),
    )?;
    fs::remove_dir_all(&staging).ok();
    Ok(deb)
}

fn control(version: &str, arch: &str, depends: &str, installed_kib: u64) -> String {
    format!(
        "Package: sluice\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: sluice developers <sluice@localhost>\n\
         Section: net\n\
         Priority: optional\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Description: XDP layer-4 load balancer with a TLS edge\n \
         sluice picks a backend per flow by Maglev hashing in XDP, forwards packets\n \
         encapsulated to backends that answer clients directly, and terminates TLS with\n \
         client certificates on its edge listeners. The daemon runs as sluice.service.\n"
    )
}

/// The shared libraries the binary links, as Debian dependencies (`libc6 (>= 2.34), ...`),
/// from dpkg-shlibdeps, which needs a `debian/control` beside it to run at all.
fn depends(binary: &Path) -> Result<String> {
    let dir = tempdir()?;
    fs::create_dir_all(dir.join("debian"))?;
    fs::write(
        dir.join("debian/control"),
        "Source: sluice\n\nPackage: sluice\nArchitecture: any\n",
    )?;
    let out = process::output(
        Command::new("dpkg-shlibdeps")
            .current_dir(&dir)
            .arg("-O")
            .arg(binary),
    );
    fs::remove_dir_all(&dir).ok();
    let out = out?;
    let Some(line) = out.lines().find_map(|l| l.strip_prefix("shlibs:Depends=")) else {
        bail!(
            "dpkg-shlibdeps printed no shlibs:Depends line for {}: {out}",
            binary.display()
        );
    };
    Ok(line.trim().to_owned())
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sluice-package-{}", std::process::id()));
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Copies `from` to `to` with `mode`, creating the directories on the way.
fn install(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", to.display()))
}

/// What the files take on disk, in KiB, for `Installed-Size` (the control files excluded).
fn installed_kib(staging: &Path) -> Result<u64> {
    fn walk(dir: &Path, total: &mut u64) -> Result<()> {
        for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                if entry.file_name() != "DEBIAN" {
                    walk(&entry.path(), total)?;
                }
            } else {
                *total += meta.len().div_ceil(1024);
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(staging, &mut total)?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dpkg-deb -f/-c` of a package built from the repository's files and a stand-in binary
    /// (a real ELF, so dpkg-shlibdeps has libraries to name): the files, their modes, the
    /// conffile and the dependencies line.
    #[test]
    fn package_has_the_binary_the_unit_and_the_config_as_a_conffile() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let out = std::env::temp_dir().join(format!("sluice-package-test-{}", std::process::id()));
        // Any dynamically linked ELF stands in for the daemon: the test is about the package.
        let deb = build(root, Path::new("/bin/true"), "0.1.0", &out).unwrap();
        let arch = process::output(Command::new("dpkg").arg("--print-architecture")).unwrap();
        assert_eq!(
            deb.file_name().unwrap().to_str().unwrap(),
            format!("sluice_0.1.0_{}.deb", arch.trim())
        );

        let field = |name: &str| {
            process::output(Command::new("dpkg-deb").args(["-f"]).arg(&deb).arg(name))
                .unwrap()
                .trim()
                .to_owned()
        };
        assert_eq!(field("Package"), "sluice");
        assert_eq!(field("Version"), "0.1.0");
        let depends = field("Depends");
        assert!(depends.starts_with("libc6 (>= 2."), "Depends: {depends}");

        let info = |file: &str| {
            process::output(Command::new("dpkg-deb").arg("-I").arg(&deb).arg(file)).unwrap()
        };
        // Upgrades keep the operator's config; nothing else is a conffile.
        assert_eq!(info("conffiles").trim(), "/etc/sluice/sluice.toml");
        for script in ["postinst", "prerm", "postrm"] {
            assert!(info(script).starts_with("#!/bin/sh"), "{script}");
        }

        let listing = process::output(Command::new("dpkg-deb").arg("-c").arg(&deb)).unwrap();
        let entries: Vec<(String, String, String)> = listing
            .lines()
            .map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols[0].to_owned(), cols[1].to_owned(), cols[5].to_owned())
            })
            .collect();
        let mode_of = |path: &str| {
            entries
                .iter()
                .find(|(_, _, p)| p == path)
                .map(|(m, owner, _)| format!("{m} {owner}"))
        };
        assert_eq!(
            mode_of("./usr/bin/sluice").as_deref(),
            Some("-rwxr-xr-x root/root")
        );
        assert_eq!(
            mode_of("./lib/systemd/system/sluice.service").as_deref(),
            Some("-rw-r--r-- root/root")
        );
        assert_eq!(
            mode_of("./etc/sluice/sluice.toml").as_deref(),
            Some("-rw-r--r-- root/root")
        );
        assert!(mode_of("./usr/share/doc/sluice/examples/sluice.toml").is_some());
        fs::remove_dir_all(&out).ok();
    }
}
