//! The io_uring backend: one compio runtime per core, its ring set up with the flags
//! that keep completions from interrupting the core (`DEFER_TASKRUN | SINGLE_ISSUER`, or
//! `COOP_TASKRUN | TASKRUN_FLAG` on kernels too old for that). Sends and receives are
//! ring operations, and the runtime reaps them with one `io_uring_enter` per turn.

use std::cell::RefCell;
use std::future::Future;

use super::probe::{self, IoUringRefusal};
use super::RtError;

/// `IORING_SETUP_COOP_TASKRUN`: completions wait for the next kernel entry instead of
/// interrupting the thread with an IPI (Linux 5.19).
const COOP_TASKRUN: u32 = 1 << 8;
/// `IORING_SETUP_TASKRUN_FLAG`: with COOP_TASKRUN, tell the runtime there is work.
const TASKRUN_FLAG: u32 = 1 << 9;
/// `IORING_SETUP_SINGLE_ISSUER`: only the creating thread submits (Linux 6.0).
const SINGLE_ISSUER: u32 = 1 << 12;
/// `IORING_SETUP_DEFER_TASKRUN`: completion work runs only when the thread asks for
/// completions (Linux 6.1; needs SINGLE_ISSUER).
const DEFER_TASKRUN: u32 = 1 << 13;

/// The ring setups this backend uses, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingSetup {
    /// `DEFER_TASKRUN | SINGLE_ISSUER`.
    Deferred,
    /// `COOP_TASKRUN | TASKRUN_FLAG`.
    Cooperative,
}

impl RingSetup {
    fn flags(self) -> u32 {
        match self {
            RingSetup::Deferred => DEFER_TASKRUN | SINGLE_ISSUER,
            RingSetup::Cooperative => COOP_TASKRUN | TASKRUN_FLAG,
        }
    }

    /// The flags, as the log names them.
    pub fn name(self) -> &'static str {
        match self {
            RingSetup::Deferred => "DEFER_TASKRUN|SINGLE_ISSUER",
            RingSetup::Cooperative => "COOP_TASKRUN|TASKRUN_FLAG",
        }
    }
}

/// The best ring setup this host allows, or why io_uring cannot be used (the refusal
/// of the last setup tried).
pub fn ring_setup() -> Result<RingSetup, IoUringRefusal> {
    let mut last = None;
    for setup in [RingSetup::Deferred, RingSetup::Cooperative] {
        match probe::io_uring_refusal(setup.flags()) {
            None => return Ok(setup),
            Some(r) => last = Some(r),
        }
    }
    Err(last.unwrap_or_else(|| IoUringRefusal::new("io_uring refused".into())))
}

thread_local! {
    /// The CPU set this core's thread had before it was pinned, for the blocking pool.
    static UNPINNED: RefCell<Option<libc::cpu_set_t>> = const { RefCell::new(None) };
}

/// Wraps a blocking job so that it runs on the CPUs the process started with: compio's
/// blocking threads are started from the pinned core thread and inherit its pinning,
/// and an fsync or a compaction must not compete with the reactor for its core.
pub fn unpinned<F, R>(f: F) -> impl FnOnce() -> R + Send + 'static
where
    F: FnOnce() -> R + Send + 'static,
{
    let set = UNPINNED.with(|s| *s.borrow());
    move || {
        if let Some(set) = &set {
            super::epoll::restore(set);
        }
        f()
    }
}

/// Builds a compio runtime with `setup` on this thread, pins the thread to `cpu` and
/// runs `main` on it.
pub fn run_core<F, Fut, T>(core: usize, cpu: usize, setup: RingSetup, main: F) -> Result<T, RtError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T> + 'static,
    T: 'static,
{
    let original = super::epoll::affinity().map(|set| *set);
    UNPINNED.with(|s| *s.borrow_mut() = original);
    if let Err(e) = super::epoll::pin(cpu) {
        tracing::warn!(core, cpu, error = %e, "cannot pin the executor thread to its CPU");
    }
    let mut proactor = ::compio::driver::ProactorBuilder::new();
    match setup {
        RingSetup::Deferred => proactor.defer_taskrun(true).single_issuer(true),
        RingSetup::Cooperative => proactor.coop_taskrun(true).taskrun_flag(true),
    };
    let runtime = ::compio::runtime::RuntimeBuilder::new()
        .with_proactor(proactor)
        .build()
        .map_err(|e| {
            RtError::Executor(format!(
                "cannot start an io_uring runtime ({e}): run with --runtime epoll (or auto)"
            ))
        })?;
    Ok(runtime.block_on(main()))
}
