//! One daemon per instance: `sluice run` takes an exclusive `flock` on
//! `/run/sluice/<instance>.lock` before anything else, so a second daemon of the same instance
//! stops before it touches bpffs, the ports or the admin socket, naming the first one's pid.
//!
//! The kernel releases the lock when the process ends, however it ends, so a killed daemon
//! never leaves a stale lock behind. The file itself stays: removing it would let a third
//! daemon lock a new file while a second still waits on the old one.

use std::{
    fs::File,
    io::{self, Read as _, Seek as _, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::Duration,
};

use nix::{
    errno::Errno,
    fcntl::{Flock, FlockArg},
};

/// Where the lock files live (tmpfs: emptied at boot, like the locks themselves).
pub const LOCK_DIR: &str = "/run/sluice";

/// How long to wait for the holder's pid when its lock is taken but the pid not yet written.
const PID_WAIT: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "instance \"{instance}\" is already run by sluice pid {} (it holds {}); stop it first, or give this daemon another `instance`",
        pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
        path.display()
    )]
    Held {
        instance: String,
        pid: Option<u32>,
        path: PathBuf,
    },
    #[error("creating {}: {reason}", dir.display())]
    CreateDir { dir: PathBuf, reason: io::Error },
    #[error("opening the instance lock {}: {reason}", path.display())]
    Open { path: PathBuf, reason: io::Error },
    #[error("locking {}: {reason}", path.display())]
    Lock { path: PathBuf, reason: Errno },
    #[error("writing this daemon's pid to {}: {reason}", path.display())]
    WritePid { path: PathBuf, reason: io::Error },
}

/// Held for the daemon's whole life; dropping it (or exiting) releases the instance.
#[derive(Debug)]
pub struct InstanceLock {
    _file: Flock<File>,
}

impl InstanceLock {
    /// Takes `<dir>/<instance>.lock`, or says which process holds it.
    pub fn take(dir: &Path, instance: &str) -> Result<InstanceLock, LockError> {
        // 0700 as the admin socket's server would create it: the default socket lives here
        // too, and the directory keeps others out while the socket still has the umask's mode.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|reason| LockError::CreateDir {
                dir: dir.to_owned(),
                reason,
            })?;
        // `instance` is validated to letters, digits, '-' and '_': a plain file name.
        let path = dir.join(format!("{instance}.lock"));
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|reason| LockError::Open {
                path: path.clone(),
                reason,
            })?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((held, Errno::EWOULDBLOCK)) => {
                return Err(LockError::Held {
                    instance: instance.to_owned(),
                    pid: holder(held),
                    path,
                })
            }
            Err((_, reason)) => return Err(LockError::Lock { path, reason }),
        };
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .map_err(|reason| LockError::WritePid { path, reason })?;
        Ok(InstanceLock { _file: file })
    }
}

/// The pid the holder wrote, waiting briefly for a holder that has only just locked.
fn holder(mut file: File) -> Option<u32> {
    let deadline = std::time::Instant::now() + PID_WAIT;
    loop {
        let mut text = String::new();
        let read = file.rewind().and_then(|()| file.read_to_string(&mut text));
        if let Some(pid) = read.ok().and_then(|_| text.trim().parse().ok()) {
            return Some(pid);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_told_the_first_ones_pid() {
        let dir = std::env::temp_dir().join(format!("sluice-lock-test-{}", std::process::id()));
        let first = InstanceLock::take(&dir, "a").expect("first lock");
        // flock locks belong to the open file description: a second open in the same process
        // conflicts just as another process would.
        match InstanceLock::take(&dir, "a") {
            Err(LockError::Held { pid, instance, .. }) => {
                assert_eq!(pid, Some(std::process::id()));
                assert_eq!(instance, "a");
            }
            other => panic!("expected Held, got {other:?}"),
        }
        // Another instance is independent.
        let other = InstanceLock::take(&dir, "b").expect("another instance");
        drop(first);
        let again = InstanceLock::take(&dir, "a").expect("free again once dropped");
        drop((other, again));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
