//! The epoll backend: one tokio current-thread runtime per core, pinned to its CPU,
//! with a `LocalSet` so tasks need not be `Send`.

use std::future::Future;

use super::RtError;

/// Builds a current-thread tokio runtime on this thread, pins the thread to `cpu`, and
/// runs `main` inside a `LocalSet`.
pub fn run_core<F, Fut, T>(core: usize, cpu: usize, main: F) -> Result<T, RtError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T> + 'static,
    T: 'static,
{
    // The blocking pool's threads are started from this thread and would inherit its
    // pinning; they fsync and compact, which must not compete with the reactor for its
    // core, so they get the affinity the process started with.
    let original = affinity();
    if let Err(e) = pin(cpu) {
        // A container's cpuset may not contain `cpu`: serve unpinned rather than not at all.
        tracing::warn!(core, cpu, error = %e, "cannot pin the executor thread to its CPU");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(format!("core{core}-blocking"))
        .on_thread_start(move || {
            if let Some(set) = &original {
                restore(set);
            }
        })
        .build()
        .map_err(|e| RtError::Executor(format!("cannot start a tokio runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    let out = local.block_on(&runtime, main());
    // Tasks still parked in the LocalSet (idle connections, timers) are dropped here,
    // on the thread that owns them.
    drop(local);
    Ok(out)
}

/// This thread's CPU set, to give back to threads it starts.
pub(super) fn affinity() -> Option<Box<libc::cpu_set_t>> {
    // SAFETY: cpu_set_t is plain bits, all-zero is a valid (empty) set, and
    // sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into it.
    unsafe {
        let mut set: Box<libc::cpu_set_t> = Box::new(std::mem::zeroed());
        let rc = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut *set);
        (rc == 0).then_some(set)
    }
}

pub(super) fn restore(set: &libc::cpu_set_t) {
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of a set we own.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), set) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot unpin a blocking-pool thread"
        );
    }
}

/// Pins this thread to `cpu`. The standard library and tokio have no affinity call, and
/// this one libc call does not justify another crate.
pub(super) fn pin(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::other(format!("CPU {cpu} is out of range")));
    }
    // SAFETY: cpu_set_t is plain bits, all-zero is the empty set, CPU_SET writes one bit
    // within it (checked above), and sched_setaffinity only reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
