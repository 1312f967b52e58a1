//! Kernel diagnostics (`kernel_log`): the level `sluice_xdp`'s aya-log calls are loaded with,
//! and their records forwarded to `tracing` under the target `sluice::kernel`.
//!
//! The level is the `.rodata` global `AYA_LOG_LEVEL` of lb-ebpf's `log.rs`. The object's own
//! value enables everything, so every load of sluice's object goes through [`loader`]; `off`
//! loads 0, which the verifier folds in and prunes the reporting code with.

use std::os::fd::AsFd as _;

use aya::EbpfLoader;
use aya_log::EbpfLogger;
use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
};

use crate::config::KernelLog;

/// A loader for sluice's object with the reports of `level` compiled in (by the verifier).
pub fn loader(level: KernelLog) -> EbpfLoader<'static> {
    // aya-log-ebpf's levels: error 1, warn 2, info 3, debug 4; a report runs when its level
    // is at most this.
    let value: &'static u8 = match level {
        KernelLog::Off => &0,
        KernelLog::Info => &3,
        KernelLog::Debug => &4,
    };
    let mut loader = EbpfLoader::new();
    loader.override_global(aya_log::LEVEL, value, true);
    loader
}

/// The reader of the reports' ring buffer, taken from the loaded object.
pub struct Reader(EbpfLogger<ToTracing>);

impl Reader {
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<Reader, aya_log::Error> {
        EbpfLogger::init_with_logger(ebpf, ToTracing).map(Reader)
    }

    /// Forwards reports as they arrive, on a thread of its own for the daemon's lifetime: the
    /// ring buffer is polled with poll(2) (tokio's `AsyncFd` would need `unsafe` here).
    pub fn spawn(self) -> std::io::Result<()> {
        let mut logger = self.0;
        std::thread::Builder::new()
            .name("kernel-log".into())
            .spawn(move || loop {
                let mut fds = [PollFd::new(logger.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) | Err(Errno::EINTR) => logger.flush(),
                    Err(error) => {
                        tracing::warn!(%error, "kernel_log: polling the report ring buffer failed; no more kernel reports");
                        return;
                    }
                }
            })
            .map(drop)
    }
}

/// Every report at INFO: `kernel_log` alone chooses what the kernel reports, so
/// `kernel_log = "debug"` needs no change to `SLUICE_LOG`. The kernel's level is a field.
pub struct ToTracing;

impl log::Log for ToTracing {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let level = record.level().as_str().to_ascii_lowercase();
        tracing::info!(target: "sluice::kernel", kernel_level = %level, "{}", record.args());
    }

    fn flush(&self) {}
}
