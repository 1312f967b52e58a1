//! The real oauth2-proxy as a test peer: the binary `cargo xtask setup` built from the Go
//! module proxy (see `xtask/src/oauth2_proxy.rs`), found through
//! `<cache>/oauth2-proxy.manifest`, started in a test namespace with Keycloak as its OIDC
//! provider (`--provider=keycloak-oidc`) in the mode a forward-auth front end calls it:
//! `--reverse-proxy`, `--set-xauthrequest`, `--upstream=static://202`, so `/oauth2/auth`
//! answers 202 with the `X-Auth-Request-*` headers for a signed-in cookie and 401 without.
//!
//! There is no stand-in: when oauth2-proxy is missing the tests fail and say why.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::curl::http_status;
use crate::daemon::spawn_tied;
use crate::netns::{ChildGuard, NetNs};

/// How long oauth2-proxy may take to answer `/ping` (it fetches the provider's discovery
/// document first, through sluice, from a Keycloak that is already up).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What `cargo xtask setup` recorded.
#[derive(Debug, Clone)]
pub struct Installation {
    pub version: String,
    pub binary: PathBuf,
}

impl Installation {
    /// Reads the manifest; the error says why oauth2-proxy is not there and what to do.
    pub fn find() -> Result<Installation> {
        let path = crate::keycloak::cache_dir()?.join("oauth2-proxy.manifest");
        let text = fs::read_to_string(&path).with_context(|| {
            format!(
                "oauth2-proxy is not installed: cannot read {} (run `cargo xtask setup`, which \
                 builds it from the Go module proxy)",
                path.display()
            )
        })?;
        let fields: BTreeMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        if let Some(reason) = fields.get("unavailable") {
            bail!(
                "oauth2-proxy {} is unavailable: `cargo xtask setup` could not build it: {reason}",
                fields.get("version").unwrap_or(&"?")
            );
        }
        let field = |name: &str| {
            fields
                .get(name)
                .map(|v| (*v).to_owned())
                .with_context(|| format!("{} has no {name}= line", path.display()))
        };
        let binary = PathBuf::from(field("binary")?);
        if !binary.is_file() {
            bail!(
                "{} names {}, which is missing; run `cargo xtask setup` again",
                path.display(),
                binary.display()
            );
        }
        Ok(Installation {
            version: field("version")?,
            binary,
        })
    }
}

/// One oauth2-proxy to start.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `--http-address`.
    pub listen: SocketAddr,
    /// `--oidc-issuer-url`: Keycloak's realm URL as the browser reaches it.
    pub issuer: String,
    /// CA bundle for the TLS connection to the issuer (`--provider-ca-file`).
    pub provider_ca: PathBuf,
    pub client_id: String,
    pub client_secret: String,
    /// `--redirect-url`: oauth2-proxy's callback as the browser reaches it.
    pub redirect_url: String,
    /// More flags.
    pub extra: Vec<String>,
}

impl Spec {
    /// The flags: the forward-auth contract (`--reverse-proxy`, `--set-xauthrequest`, a
    /// static 202 upstream), Keycloak as provider, any e-mail domain, and a cookie usable over
    /// the plain HTTP of the test network.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec![
            "--provider=keycloak-oidc".to_owned(),
            format!("--oidc-issuer-url={}", self.issuer),
            format!("--provider-ca-file={}", self.provider_ca.display()),
            format!("--client-id={}", self.client_id),
            format!("--client-secret={}", self.client_secret),
            format!("--redirect-url={}", self.redirect_url),
            format!("--http-address={}", self.listen),
            "--reverse-proxy".into(),
            "--set-xauthrequest".into(),
            "--upstream=static://202".into(),
            "--email-domain=*".into(),
            "--skip-provider-button".into(),
            "--code-challenge-method=S256".into(),
            // 32 bytes, taken as they are: the session cookie is encrypted with AES-256.
            "--cookie-secret=sluice-test-cookie-secret-32byte".into(),
            "--cookie-secure=false".into(),
        ];
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// A running oauth2-proxy; stopped on drop (by its guard).
#[derive(Debug)]
pub struct OAuth2Proxy {
    guard: ChildGuard,
    log: PathBuf,
}

impl OAuth2Proxy {
    /// Starts `install`'s binary in `ns` with `spec`, its output appended to
    /// `dir/oauth2-proxy.log` (a restart keeps what the earlier run wrote), and waits until
    /// `/ping` answers 200.
    pub fn start(ns: &NetNs, dir: &Path, install: &Installation, spec: &Spec) -> Result<Self> {
        let log = dir.join("oauth2-proxy.log");
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let binary = install
            .binary
            .to_str()
            .context("non-UTF-8 oauth2-proxy path")?;
        let args = spec.args();
        let mut all = vec![binary];
        all.extend(args.iter().map(String::as_str));
        let mut cmd = ns.command(&all);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = spawn_tied(&mut cmd, None)
            .with_context(|| format!("starting oauth2-proxy in {}", ns.name()))?;
        let mut proxy = OAuth2Proxy {
            guard: ChildGuard::new(child),
            log,
        };
        let url = format!("http://{}/ping", spec.listen);
        let started = Instant::now();
        loop {
            if let Some(child) = proxy.guard.child_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "oauth2-proxy {} exited ({status}) at start; log:\n{}",
                        install.version,
                        proxy.log_text()
                    );
                }
            }
            if http_status(ns, &url, 2).is_ok_and(|code| code == 200) {
                return Ok(proxy);
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "oauth2-proxy {} not answering {url} after {READY_TIMEOUT:?}; log:\n{}",
                    install.version,
                    proxy.log_text()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log)
            .unwrap_or_else(|err| format!("(cannot read {}: {err})", self.log.display()))
    }

    pub fn stop(&mut self) -> Result<()> {
        self.guard.terminate(Duration::from_secs(5)).map(drop)
    }
}

/// `/etc/netns/<ns>/hosts`, which `ip netns exec` bind-mounts over `/etc/hosts` for every
/// program started in `ns`: how a program without curl's `--resolve` (oauth2-proxy's Go
/// resolver) finds the test's host names. Removed on drop.
#[derive(Debug)]
pub struct NetnsHosts {
    dir: PathBuf,
}

impl NetnsHosts {
    /// `entries` are `(address, name)` lines.
    pub fn write(ns: &NetNs, entries: &[(&str, &str)]) -> Result<NetnsHosts> {
        let dir = Path::new("/etc/netns").join(ns.name());
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut text = String::from("127.0.0.1 localhost\n");
        for (addr, name) in entries {
            let _ = writeln!(text, "{addr} {name}");
        }
        fs::write(dir.join("hosts"), text)?;
        Ok(NetnsHosts { dir })
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
        // Only succeeds when no other namespace has files there.
        let _ = fs::remove_dir("/etc/netns");
    }
}
