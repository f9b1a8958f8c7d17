//! The io_uring backend: one compio runtime per core, its ring set up with the flags
//! that keep completions from interrupting the core (`DEFER_TASKRUN | SINGLE_ISSUER`, or
//! `COOP_TASKRUN | TASKRUN_FLAG` on kernels too old for that). Sends and receives are
//! ring operations, and the runtime reaps them with one `io_uring_enter` per turn.
//!
//! When the core has nothing to run, it does not sleep until the first completion, as
//! compio's own loop does: it waits for up to [`Coalesce::events`] completions or
//! [`Coalesce::window_us`], whichever comes first (the kernel's minimum wait, Linux
//! 6.12), like a network card coalescing interrupts. Below saturation a quote's twelve
//! socket operations otherwise complete one at a time, each waking the core for a turn
//! of its own; measured, this costs about a quarter of the engine's CPU per quote at
//! 1,000 to 6,000 quotes/s, for at most the window in added latency per wait.

use std::cell::RefCell;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};
use std::time::Duration;

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

/// How an idle core waits for completions: for up to `events` of them or `window_us`
/// microseconds, whichever comes first (and then for the first one, however long).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coalesce {
    /// The longest a completion waits for others before the core takes it (µs, > 0).
    pub window_us: u32,
    /// Completions that end the wait at once (≥ 1).
    pub events: u32,
}

/// What the probe found out about io_uring on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingProbe {
    /// The best ring setup allowed.
    pub setup: RingSetup,
    /// Whether the kernel honours a minimum wait (`IORING_FEAT_MIN_TIMEOUT`, Linux
    /// 6.12), which [`Coalesce`] needs.
    pub min_wait: bool,
}

/// The io_uring backend as it runs: the ring setup, and how completions are coalesced
/// (`None`: not at all, compio's own loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoUring {
    /// The ring setup.
    pub setup: RingSetup,
    /// Completion coalescing, when asked for and the kernel can.
    pub coalesce: Option<Coalesce>,
}

/// The best ring setup this host allows, or why io_uring cannot be used (the refusal
/// of the last setup tried).
pub fn ring_setup() -> Result<RingProbe, IoUringRefusal> {
    let mut last = None;
    for setup in [RingSetup::Deferred, RingSetup::Cooperative] {
        match probe::io_uring_features(setup.flags()) {
            Ok(features) => {
                return Ok(RingProbe {
                    setup,
                    min_wait: features & probe::FEAT_MIN_TIMEOUT != 0,
                })
            }
            Err(r) => last = Some(r),
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

/// Builds a compio runtime as `ring` says on this thread, pins the thread to `cpu` and
/// runs `main` on it.
pub fn run_core<F, Fut, T>(core: usize, cpu: usize, ring: IoUring, main: F) -> Result<T, RtError>
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
    match ring.setup {
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
    Ok(match ring.coalesce {
        None => runtime.block_on(main()),
        Some(coalesce) => block_on_coalescing(core, &runtime, main(), coalesce),
    })
}

/// `IORING_ENTER_GETEVENTS`.
const ENTER_GETEVENTS: u32 = 1;
/// `IORING_ENTER_EXT_ARG`: the last argument is a `struct io_uring_getevents_arg`.
const ENTER_EXT_ARG: u32 = 1 << 3;

/// `struct io_uring_getevents_arg` (Linux 6.12 layout).
#[repr(C)]
struct GetEventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

/// The longest one coalescing wait lasts when no timer is due sooner. A cross-thread
/// wake reaches a sleeping core through an eventfd that compio polls on the ring; in
/// the rare turn where that poll has ended and compio has not yet armed it again, this
/// bounds how late such a wake is seen, for about a hundred empty turns a second on an
/// idle core.
const LONGEST_WAIT: Duration = Duration::from_millis(10);

/// Runs `future` on `runtime` as compio's `block_on` does, except that an idle core
/// waits for completions as `coalesce` says (see the module docs).
///
/// compio's public turn-by-turn calls make this possible without a fork: `run` runs
/// ready tasks, `flush` submits what they queued and re-arms the cross-thread wake-up
/// (so a wake from another thread during our wait writes the eventfd), the wait is our
/// own `io_uring_enter` on compio's ring, and `poll_with(0)` then reaps what arrived.
fn block_on_coalescing<Fut: Future>(
    core: usize,
    runtime: &::compio::runtime::Runtime,
    future: Fut,
    coalesce: Coalesce,
) -> Fut::Output {
    let ring = runtime.as_raw_fd();
    runtime.enter(|| {
        let waker = runtime.waker();
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        let mut coalescing = true;
        // Arms compio's cross-thread wake-up before the first wait of ours.
        runtime.poll_with(Some(Duration::ZERO));
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                runtime.run();
                return out;
            }
            if runtime.run() {
                runtime.poll_with(Some(Duration::ZERO));
                continue;
            }
            if !coalescing || super::urgent_work() {
                runtime.poll();
                continue;
            }
            if runtime.flush() {
                // Woken while running: there is work already, so no wait.
                runtime.poll_with(Some(Duration::ZERO));
                continue;
            }
            let timeout = runtime
                .current_timeout()
                .map_or(LONGEST_WAIT, |t| t.min(LONGEST_WAIT));
            if let Err(e) = wait_coalesced(ring, timeout, coalesce) {
                tracing::warn!(
                    core,
                    error = %e,
                    "io_uring: waiting for coalesced completions failed; this core \
                     goes on without coalescing"
                );
                coalescing = false;
            }
            runtime.poll_with(Some(Duration::ZERO));
        }
    })
}

/// One `io_uring_enter` on `ring` that submits nothing and waits for `coalesce.events`
/// completions for at most `coalesce.window_us`, then for the first one, for at most
/// `timeout` in all. Running out of time or a signal is no error.
fn wait_coalesced(ring: i32, timeout: Duration, coalesce: Coalesce) -> std::io::Result<()> {
    let ts = KernelTimespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let arg = GetEventsArg {
        sigmask: 0,
        sigmask_sz: 0,
        min_wait_usec: coalesce.window_us,
        ts: &ts as *const KernelTimespec as u64,
    };
    // SAFETY: io_uring_enter reads `arg` (its size is passed) and the timespec it
    // points to, both alive on this stack for the whole call, and writes nothing of
    // ours; `ring` is this thread's compio ring, entered from the thread that created it
    // (as SINGLE_ISSUER requires). It submits nothing (to_submit = 0), so compio's
    // submission queue is untouched; completions it waits for stay in the completion
    // ring for compio to reap. No crate offers the minimum wait, hence the raw call,
    // here in the seam and nowhere else.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_io_uring_enter,
            ring,
            0u32,
            coalesce.events,
            ENTER_GETEVENTS | ENTER_EXT_ARG,
            &arg as *const GetEventsArg,
            std::mem::size_of::<GetEventsArg>(),
        )
    };
    if rc >= 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ETIME | libc::EINTR | libc::EAGAIN | libc::EBUSY) => Ok(()),
        _ => Err(err),
    }
}
