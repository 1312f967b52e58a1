//! The real curl against an HTTPS listener by name: every edge test, the demo and the
//! Keycloak labs reach a listener as `https://<name>:<port>/…`, resolved to the listener's
//! address with `--resolve` and trusting the test root with `--cacert`. One builder, so the
//! flags they all need (`-sS`, a time limit, the resolve and CA pair) are written once.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Result;

use crate::certs::Identity;
use crate::NetNs;

/// A curl command line to `https://<server_name>:<port><path>` at one address.
#[derive(Debug, Clone)]
pub struct Curl {
    args: Vec<String>,
    url: String,
}

impl Curl {
    /// `curl -sS --max-time 10 --resolve <server_name>:<port>:<ip> --cacert <ca>` for `path`
    /// (with its query) at `at`.
    pub fn https(server_name: &str, at: SocketAddr, path: &str, ca: &Path) -> Curl {
        let ip = match at.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        let port = at.port();
        Curl {
            args: [
                "-sS",
                "--max-time",
                "10",
                "--resolve",
                &format!("{server_name}:{port}:{ip}"),
                "--cacert",
                &ca.display().to_string(),
            ]
            .map(str::to_owned)
            .to_vec(),
            url: format!("https://{server_name}:{port}{path}"),
        }
    }

    /// `--fail`: an HTTP error status is a failure (curl exit 22), not a body.
    pub fn fail(self) -> Curl {
        self.args(&["--fail"])
    }

    /// Replaces the time limit (seconds).
    pub fn max_time(mut self, seconds: u32) -> Curl {
        let at = self
            .args
            .iter()
            .position(|a| a == "--max-time")
            .expect("set in Curl::https");
        self.args[at + 1] = seconds.to_string();
        self
    }

    /// Presents `id`'s whole chain file and its key.
    pub fn identity(self, id: &Identity) -> Curl {
        self.cert(id.chain(), id.key())
    }

    /// Presents the certificate file `cert` (leaf first) with `key`.
    pub fn cert(self, cert: &Path, key: &Path) -> Curl {
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        self.args(&["--cert", &cert, "--key", &key])
    }

    /// More arguments, before the URL.
    pub fn args(mut self, more: &[&str]) -> Curl {
        self.args.extend(more.iter().map(|a| (*a).to_owned()));
        self
    }

    /// The URL this command fetches.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs it in `ns` for the URL `times` times over (curl reuses one connection for them);
    /// curl's stdout, or its failure with stderr.
    pub fn run_times(&self, ns: &NetNs, times: usize) -> Result<String> {
        let mut argv: Vec<&str> = vec!["curl"];
        argv.extend(self.args.iter().map(String::as_str));
        argv.extend(std::iter::repeat_n(self.url.as_str(), times));
        ns.run(&argv)
    }

    /// Runs it in `ns`: curl's stdout, or its failure with stderr.
    pub fn run(&self, ns: &NetNs) -> Result<String> {
        self.run_times(ns, 1)
    }

    /// Runs it without `--fail`, asking curl to append the status code: the status and the
    /// body.
    pub fn status_and_body(&self, ns: &NetNs) -> Result<(u16, String)> {
        let out = self.clone().args(&["-w", "\n%{http_code}"]).run(ns)?;
        let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
        let code = code
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("curl {}: no status in {out:?}", self.url))?;
        Ok((code, body.to_owned()))
    }
}

/// `GET url` with curl in `ns`, for its status only (a health check's view); curl's failure
/// when nothing answered within `max_time` seconds.
pub fn http_status(ns: &NetNs, url: &str, max_time: u32) -> Result<u16> {
    let max_time = max_time.to_string();
    let code = ns.run(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        &max_time,
        url,
    ])?;
    code.trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("curl {url}: no status in {code:?}"))
}
