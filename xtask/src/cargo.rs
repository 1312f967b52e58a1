//! The workspace and the one place that decides the environment every cargo run gets.

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{process, setup};

pub struct Workspace {
    root: PathBuf,
    /// Target directory of the cargo runs this xtask starts (see [`Workspace::locate`]).
    target_dir: PathBuf,
    env: Vec<(OsString, OsString)>,
}

impl Workspace {
    /// The workspace this xtask was compiled in (xtask/ sits directly under the root).
    pub fn locate() -> Result<Self> {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf();
        let base = cargo_target_dir(&root);
        // Some crates (proc-macro2, anyhow, thiserror) rebuild, and with them nearly the whole
        // tree, whenever RUSTC_BOOTSTRAP differs from their last build. `cargo xtask` built this
        // binary (and those crates) with our own environment, so if that lacked
        // RUSTC_BOOTSTRAP=1 (no `[env]` entry in .cargo/config.toml), sharing the target
        // directory would rebuild everything twice on every `cargo xtask` run. Then keep our
        // builds apart, in <target>/xtask.
        let outer_has_bootstrap = env::var_os("RUSTC_BOOTSTRAP").is_some_and(|v| v == "1");
        let target_dir = if outer_has_bootstrap {
            base
        } else {
            base.join("xtask")
        };
        let mut env = build_env()?;
        env.push(("CARGO_TARGET_DIR".into(), target_dir.clone().into()));
        Ok(Self {
            root,
            target_dir,
            env,
        })
    }

    /// `cargo` run from the workspace root with [`build_env`] applied (and `CARGO_TARGET_DIR`).
    pub fn cargo(&self) -> Command {
        let mut cmd = Command::new(cargo_program());
        cmd.current_dir(&self.root);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// The workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The target directory of the cargo runs this xtask starts.
    pub fn target_dir(&self) -> &Path {
        &self.target_dir
    }

    /// Path of the `sluice` binary for a profile directory name (`debug` or `release`).
    pub fn sluice_bin(&self, profile_dir: &str) -> Result<PathBuf> {
        let bin = self.target_dir.join(profile_dir).join("sluice");
        if !bin.is_file() {
            bail!(
                "expected the sluice binary at {} but it is not there",
                bin.display()
            );
        }
        Ok(bin)
    }
}

/// The cargo that started this xtask (`cargo run` sets `CARGO`), else `cargo` from `PATH`.
pub fn cargo_program() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Environment for every cargo invocation that may build lb-ebpf (through lb-userspace's
/// build.rs and aya-build):
/// - `PATH` starts with the bpf-linker that `setup` installed;
/// - `RUSTC_BOOTSTRAP=1` lets aya-build pass `-Z build-std=core` to the stable toolchain for the
///   tier-3 BPF target. Cargo only reads it from the environment of the whole invocation.
pub fn build_env() -> Result<Vec<(OsString, OsString)>> {
    let linker_bin = setup::bpf_linker_root()?.join("bin");
    let mut paths = vec![linker_bin];
    if let Some(path) = env::var_os("PATH") {
        paths.extend(env::split_paths(&path));
    }
    let path = env::join_paths(paths).context("cannot build PATH for cargo")?;
    Ok(vec![
        ("PATH".into(), path),
        ("RUSTC_BOOTSTRAP".into(), "1".into()),
    ])
}

/// Cargo's target directory as `cargo metadata` reports it (honours `CARGO_TARGET_DIR` and
/// `build.target-dir`); falls back to `<root>/target`.
fn cargo_target_dir(root: &Path) -> PathBuf {
    let mut cmd = Command::new(cargo_program());
    cmd.current_dir(root)
        .args(["metadata", "--format-version", "1", "--no-deps"]);
    let dir = process::output(&mut cmd).and_then(|json| {
        json_string_field(&json, "target_directory")
            .context("`cargo metadata` output has no target_directory")
    });
    match dir {
        Ok(dir) => PathBuf::from(dir),
        Err(err) => {
            let fallback = root.join("target");
            eprintln!("warning: {err:#}; assuming {}", fallback.display());
            fallback
        }
    }
}

/// Extracts a top-level string field from compact JSON such as `cargo metadata` prints.
/// Good enough for paths; avoids a JSON dependency.
fn json_string_field(json: &str, field: &str) -> Option<String> {
    let key = format!("\"{field}\":");
    let start = json.find(&key)? + key.len();
    let rest = json[start..].trim_start().strip_prefix('"')?;
    let mut out = String::new();
    let mut chars = rest.chars();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::json_string_field;

    #[test]
    fn finds_target_directory() {
        let json = r#"{"packages":[],"target_directory":"/work/main/tar\"get\\x","version":1}"#;
        assert_eq!(
            json_string_field(json, "target_directory").as_deref(),
            Some(r#"/work/main/tar"get\x"#)
        );
        assert_eq!(json_string_field(json, "workspace_root"), None);
    }
}
