//! The client-certificate shim wrk and h2load run with (see `client_cert_shim.c`): built here
//! with the system C compiler against Debian's libssl-dev (`cargo xtask setup` installs both),
//! into the bench's scratch directory, so nothing outside the run depends on it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _, Result};

const SOURCE: &str = include_str!("client_cert_shim.c");

/// A built shim and the client certificate it presents.
pub struct Shim {
    library: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Shim {
    /// Compiles the shim into `dir`; `cert` (PEM chain, leaf first) and `key` are what every
    /// program run with [`Shim::apply`] presents.
    pub fn build(dir: &Path, cert: &Path, key: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let source = dir.join("client_cert_shim.c");
        let library = dir.join("client_cert_shim.so");
        std::fs::write(&source, SOURCE)?;
        let out = Command::new("cc")
            .args([
                "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-Werror", "-o",
            ])
            .arg(&library)
            .arg(&source)
            .args(["-lssl", "-lcrypto", "-ldl"])
            .output()
            .context(
                "running `cc` to build the client-certificate shim for wrk and h2load \
                 (`cargo xtask setup` installs gcc and libssl-dev)",
            )?;
        ensure!(
            out.status.success(),
            "building the client-certificate shim failed (are gcc and libssl-dev installed? \
             `cargo xtask setup` installs them):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(Self {
            library,
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// Makes `cmd` (an OpenSSL client) present the certificate on every connection.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("LD_PRELOAD", &self.library)
            .env("SLUICE_SHIM_CERT", &self.cert)
            .env("SLUICE_SHIM_KEY", &self.key);
    }
}
