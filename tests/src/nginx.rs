//! Debian's nginx as an upstream balancer in a test namespace, the way many sit in front of
//! gateways: round robin over the servers, passive failover only (a server that fails a
//! connection is skipped and the request retried on the next), no health checks.

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::haproxy::START_TIMEOUT;
use crate::netns::{run_cmd, ChildGuard, NetNs};

/// An HTTP balancer: `frontend` proxies every request to `servers` in turn.
#[derive(Clone, Debug)]
pub struct PassiveBalancerSpec {
    pub frontend: SocketAddr,
    pub servers: Vec<SocketAddr>,
    /// `proxy_connect_timeout`: how long a SYN may go unanswered before the next server.
    pub connect_timeout: Duration,
}

/// A running nginx; stopped when dropped.
pub struct Nginx {
    _guard: ChildGuard,
    dir: PathBuf,
}

impl Nginx {
    /// Writes the configuration into `dir`, checks it with `nginx -t` and starts nginx in `ns`
    /// in the foreground; returns once it listens on the frontend.
    pub fn start(ns: &NetNs, dir: &Path, spec: &PassiveBalancerSpec) -> Result<Nginx> {
        let d = dir.display();
        let mut servers = String::new();
        for s in &spec.servers {
            let _ = writeln!(servers, "    server {s};");
        }
        let config = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n\
             client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
             scgi_temp_path {d}/scgi;\n  upstream gateways {{\n{servers}  }}\n\
             server {{\n    listen {};\n    location / {{\n      proxy_pass http://gateways;\n\
             proxy_connect_timeout {}ms;\n      proxy_next_upstream error timeout;\n    }}\n  }}\n}}\n",
            spec.frontend,
            spec.connect_timeout.as_millis(),
        );
        let cfg = dir.join("nginx.conf");
        fs::write(&cfg, config).with_context(|| format!("writing {}", cfg.display()))?;
        let cfg_arg = cfg.to_str().context("non-UTF-8 config path")?;
        let prefix = dir.to_str().context("non-UTF-8 directory")?;
        ns.run(&["nginx", "-t", "-q", "-p", prefix, "-c", cfg_arg])
            .context("nginx rejects the generated config")?;
        let child = ns
            .command(&["nginx", "-p", prefix, "-c", cfg_arg, "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting nginx in {}", ns.name()))?;
        let mut guard = ChildGuard::new(child);
        let deadline = Instant::now() + START_TIMEOUT;
        let filter = format!("src {}", spec.frontend);
        loop {
            if let Some(child) = guard.child_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("nginx exited ({status})");
                }
            }
            let listening = run_cmd(ns.command(&["ss", "-Hltn"]).args(filter.split_whitespace()))?;
            if !listening.trim().is_empty() {
                return Ok(Nginx {
                    _guard: guard,
                    dir: dir.to_owned(),
                });
            }
            if Instant::now() > deadline {
                bail!(
                    "nginx does not listen on {} after {START_TIMEOUT:?}",
                    spec.frontend
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// nginx's error log so far: one line per failed upstream connection, saying why
    /// (`Connection refused`, `upstream timed out`).
    pub fn error_log(&self) -> String {
        fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}
