//! Running external commands with loud, specific failures.

use std::{
    os::unix::{fs::MetadataExt as _, process::CommandExt as _},
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context as _, Result};

/// A shell-like rendering of `cmd` for logs and error messages (environment changes other than
/// `PATH` are shown as `KEY=value` prefixes).
pub fn display(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        if key == "PATH" {
            continue;
        }
        if let Some(value) = value {
            parts.push(format!(
                "{}={}",
                key.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    parts.push(quote(&cmd.get_program().to_string_lossy()));
    parts.extend(cmd.get_args().map(|arg| quote(&arg.to_string_lossy())));
    parts.join(" ")
}

fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Prints the command line the way CI logs should show it.
pub fn announce(cmd: &Command) {
    eprintln!("$ {}", display(cmd));
}

/// Runs `cmd` with inherited stdio and fails if it does not exit successfully.
pub fn run(cmd: &mut Command) -> Result<()> {
    announce(cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its trimmed standard output; fails (with its stderr) if it
/// does not exit successfully.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Replaces this process with `cmd`, so its exit status (and its handling of Ctrl-C) is the
/// caller's. Only returns if the exec itself failed.
pub fn exec(cmd: &mut Command) -> anyhow::Error {
    announce(cmd);
    let err = cmd.exec();
    anyhow!(err).context(format!("could not execute `{}`", display(cmd)))
}

/// Whether this process runs with effective user id 0 (the owner of `/proc/self`).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
