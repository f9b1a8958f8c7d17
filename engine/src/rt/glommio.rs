//! The glommio backend: one glommio executor (io_uring) pinned per core.

use std::future::Future;

use ::glommio::{LocalExecutorBuilder, Placement};

use super::probe::{self, IoUringRefusal};
use super::RtError;

/// Memory each executor registers with io_uring. The engine does no file I/O through
/// glommio (RocksDB has its own), so a small amount keeps the locked-memory need low.
pub const IO_MEMORY_PER_EXECUTOR: usize = 512 << 10;

/// What each executor locks, about: its registered buffers plus its rings' bookkeeping.
const LOCKED_PER_EXECUTOR: u64 = (IO_MEMORY_PER_EXECUTOR as u64) + (256 << 10);

/// The oldest kernel glommio 0.9 runs on (it panics on older ones).
const MIN_KERNEL: (u32, u32) = (5, 8);

/// Why glommio cannot run here, if it cannot: io_uring refused (probed with a real
/// `io_uring_setup` and `io_uring_enter`, as glommio creates its rings: no setup flags)
/// or a kernel older than glommio supports. Checked before any executor starts, because
/// glommio itself panics or hangs on these instead of returning an error.
pub fn refusal() -> Option<IoUringRefusal> {
    if let Some(r) = probe::io_uring_refusal(0) {
        return Some(r);
    }
    match probe::kernel_version() {
        Some(v) if v < MIN_KERNEL => Some(IoUringRefusal::new(format!(
            "the kernel is {}.{}, older than the {}.{} glommio needs",
            v.0, v.1, MIN_KERNEL.0, MIN_KERNEL.1
        ))),
        _ => None,
    }
}

/// Builds a glommio executor pinned to `cpu` on this thread and runs `main` on it.
pub fn run_core<F, Fut, T>(core: usize, cpu: usize, main: F) -> Result<T, RtError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T> + 'static,
    T: 'static,
{
    let executor = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("core{core}"))
        .io_memory(IO_MEMORY_PER_EXECUTOR)
        .make()
        .map_err(|e| RtError::Executor(executor_error_hint(&e)))?;
    Ok(executor.run(main()))
}

/// The locked-memory limit, for messages.
fn memlock_text() -> String {
    match probe::memlock_limit() {
        Some(n) => format!("{} KiB", n / 1024),
        None => "unlimited".into(),
    }
}

/// glommio's error, with what to change.
fn executor_error_hint(e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    let per_core = LOCKED_PER_EXECUTOR / 1024;
    let memlock = format!(
        "each executor locks about {per_core} KiB of memory for io_uring and the \
         locked-memory limit here is {} (`ulimit -l`): raise it with `ulimit -l unlimited` \
         (or at least {per_core} KiB per core), or run with --runtime epoll (or auto), which \
         needs no locked memory",
        memlock_text(),
    );
    let io_uring = "glommio needs io_uring (Linux 5.8 or later, not refused by a seccomp \
         profile or kernel.io_uring_disabled): run with --runtime epoll (or auto) where it \
         is refused";
    let hint = if text.contains("MemLock")
        || text.contains("ENOMEM")
        || text.contains("Cannot allocate memory")
    {
        memlock
    } else if text.contains("ENOSYS")
        || text.contains("not implemented")
        || text.contains("EPERM")
        || text.contains("Operation not permitted")
    {
        io_uring.to_string()
    } else {
        format!("{io_uring}; and {memlock}")
    };
    format!("cannot start a glommio executor ({text}): {hint}")
}
