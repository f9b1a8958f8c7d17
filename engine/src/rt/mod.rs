//! The executor seam: everything the engine asks of an async runtime, in one place.
//!
//! The engine is thread-per-core: one executor pinned to each core, local (`!Send`)
//! tasks, nothing shared on the request path. What it needs from the executor is
//! small and generic: start and pin a core, spawn a local task (cancelled when its
//! handle drops), sleep, a blocking pool for fsync and compaction, listen and accept,
//! connect with a timeout, TLS on a client connection, hyper's I/O traits, and yielding.
//! This module offers exactly that, and is the only part of the engine that names a
//! runtime crate. Which backend runs is chosen once at start ([`select`]) and recorded
//! per executor thread, so the rest of the engine never knows.
//!
//! Backends:
//! * [`Backend::IoUring`]: compio, its ring set up so completions do not interrupt the
//!   core (`DEFER_TASKRUN | SINGLE_ISSUER`, or `COOP_TASKRUN | TASKRUN_FLAG`).
//! * [`Backend::Glommio`]: glommio's io_uring executor (the design's named runtime).
//! * [`Backend::Epoll`]: one tokio current-thread runtime per core with a `LocalSet`,
//!   for hosts that refuse io_uring (Docker's default seccomp profile, gVisor,
//!   `kernel.io_uring_disabled`).
//!
//! Semantics are the same on every backend; in particular a [`Task`] handle cancels its
//! task when dropped (tokio's own handle would detach it instead).

mod compio;
mod epoll;
mod glommio;
mod net;
mod probe;
mod ring;

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

pub use net::{connect, tls_connect, HyperIo, TcpListener, TcpStream, TlsStream};
pub use probe::{io_uring_refusal, IoUringRefusal};

/// The executor implementations the engine can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// compio: io_uring with the ring set up, and completions coalesced, as it says.
    IoUring(compio::IoUring),
    /// glommio: io_uring, one executor per core.
    Glommio,
    /// tokio's current-thread runtime per core: epoll, runs where io_uring is refused.
    Epoll,
}

impl Backend {
    /// The name used in logs, config and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::IoUring(_) => "io_uring",
            Backend::Glommio => "glommio",
            Backend::Epoll => "epoll",
        }
    }
}

pub use compio::{Coalesce, IoUring, RingProbe, RingSetup};

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the operator asked for (`server.runtime`, `--runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeChoice {
    /// io_uring when the host allows it, else epoll.
    #[default]
    Auto,
    /// The io_uring backend (compio); fails when the host refuses io_uring.
    IoUring,
    /// The epoll backend.
    Epoll,
    /// glommio; fails when the host refuses io_uring.
    Glommio,
}

impl RuntimeChoice {
    /// Every choice, as written in the config.
    pub const NAMES: [&'static str; 4] = ["auto", "io_uring", "epoll", "glommio"];

    /// The choice named `name` (as in the config).
    pub fn parse(name: &str) -> Option<RuntimeChoice> {
        match name {
            "auto" => Some(RuntimeChoice::Auto),
            "io_uring" => Some(RuntimeChoice::IoUring),
            "epoll" => Some(RuntimeChoice::Epoll),
            "glommio" => Some(RuntimeChoice::Glommio),
            _ => None,
        }
    }

    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            RuntimeChoice::Auto => "auto",
            RuntimeChoice::IoUring => "io_uring",
            RuntimeChoice::Epoll => "epoll",
            RuntimeChoice::Glommio => "glommio",
        }
    }
}

/// The backend chosen at start, and why (logged once).
#[derive(Debug, Clone)]
pub struct Selection {
    /// The backend every core runs.
    pub backend: Backend,
    /// One sentence saying why, for the log.
    pub why: String,
}

/// Why a backend cannot run here, or a core could not start on it.
#[derive(Debug, thiserror::Error)]
pub enum RtError {
    /// The operator asked for an io_uring backend and the host refuses io_uring.
    #[error(
        "the {choice} runtime needs io_uring, but {refusal}; use --runtime epoll \
         (or auto, which falls back to epoll by itself)"
    )]
    IoUringRefused {
        /// What was asked for.
        choice: &'static str,
        /// What the probe found.
        refusal: IoUringRefusal,
    },
    /// The executor could not be built on this thread.
    #[error("{0}")]
    Executor(String),
}

/// Picks the backend for `choice` on this host. `auto` takes the io_uring backend when
/// io_uring works here with the ring flags it needs (probed with a real
/// `io_uring_setup`), else epoll; a kernel that knows neither `DEFER_TASKRUN` nor
/// `COOP_TASKRUN` (before 5.19) gets epoll too, rather than rings that interrupt the
/// core on every completion. `coalesce` is how the io_uring backend should coalesce
/// completions (`None`: not at all); a kernel without the minimum wait it needs
/// (before 6.12) runs without, and the sentence says so.
pub fn select(choice: RuntimeChoice, coalesce: Option<Coalesce>) -> Result<Selection, RtError> {
    let io_uring = |probe: RingProbe, asked: &str| {
        let ring = IoUring {
            setup: probe.setup,
            coalesce: coalesce.filter(|_| probe.min_wait),
        };
        let coalescing = match (coalesce, ring.coalesce) {
            (_, Some(c)) => format!(
                "completions coalesced up to {} µs or {} at a time",
                c.window_us, c.events
            ),
            (Some(_), None) => "completions not coalesced: this kernel has no minimum wait \
                                (Linux 6.12)"
                .to_string(),
            (None, None) => "completions not coalesced".to_string(),
        };
        Selection {
            backend: Backend::IoUring(ring),
            why: format!(
                "{asked}; rings set up with {}, {coalescing}",
                probe.setup.name()
            ),
        }
    };
    match choice {
        RuntimeChoice::IoUring => match compio::ring_setup() {
            Ok(probe) => Ok(io_uring(probe, "io_uring was asked for and works here")),
            Err(refusal) => Err(RtError::IoUringRefused {
                choice: choice.name(),
                refusal,
            }),
        },
        RuntimeChoice::Auto => match compio::ring_setup() {
            Ok(probe) => Ok(io_uring(probe, "io_uring works here; using io_uring")),
            Err(refusal) => Ok(Selection {
                backend: Backend::Epoll,
                why: format!("{refusal}; using epoll"),
            }),
        },
        RuntimeChoice::Epoll => Ok(Selection {
            backend: Backend::Epoll,
            why: "epoll was asked for".into(),
        }),
        RuntimeChoice::Glommio => {
            if let Some(refusal) = glommio::refusal() {
                return Err(RtError::IoUringRefused {
                    choice: choice.name(),
                    refusal,
                });
            }
            Ok(Selection {
                backend: Backend::Glommio,
                why: format!("{} was asked for and io_uring works here", choice.name()),
            })
        }
    }
}

thread_local! {
    /// The backend of the executor running on this thread, set by [`run_core`].
    static CURRENT: Cell<Option<Backend>> = const { Cell::new(None) };
}

thread_local! {
    /// How many [`Urgent`] marks are alive on this thread's core.
    static URGENT: Cell<usize> = const { Cell::new(0) };
}

/// Marks work on this core that waits for one completion at a time (a purchase: an
/// fsync, then a partner call, then the next). While one is alive the io_uring backend
/// does not coalesce completions on this core: coalescing pays off for a quote's burst
/// of socket completions, but would add its whole window to every step of such a
/// chain. Dropping the mark ends it; marks nest. On the other backends it is a
/// thread-local count and nothing more.
#[must_use = "the mark lasts as long as the value"]
pub struct Urgent {
    /// Not `Send`: the mark must end on the core that set it.
    _core: std::marker::PhantomData<*const ()>,
}

/// Sets an [`Urgent`] mark on this core.
pub fn urgent() -> Urgent {
    URGENT.with(|u| u.set(u.get().saturating_add(1)));
    Urgent {
        _core: std::marker::PhantomData,
    }
}

impl Drop for Urgent {
    fn drop(&mut self) {
        URGENT.with(|u| u.set(u.get().saturating_sub(1)));
    }
}

/// Whether an [`Urgent`] mark is alive on this core.
fn urgent_work() -> bool {
    URGENT.with(|u| u.get() > 0)
}

/// The backend of this thread's executor. Engine code runs only inside
/// [`run_core`]; anywhere else this is a bug, and the runtime's own calls would panic
/// just the same, so glommio's are made (its message names the problem).
fn current() -> Backend {
    CURRENT.with(Cell::get).unwrap_or(Backend::Glommio)
}

/// Runs `main` to completion on this thread, as core `core`'s executor pinned to CPU
/// `cpu`, on `backend`. Every other function of this module works inside `main` (and
/// the tasks it spawns).
pub fn run_core<F, Fut, T>(backend: Backend, core: usize, cpu: usize, main: F) -> Result<T, RtError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = T> + 'static,
    T: 'static,
{
    CURRENT.with(|c| c.set(Some(backend)));
    let out = match backend {
        Backend::IoUring(ring) => compio::run_core(core, cpu, ring, main),
        Backend::Glommio => glommio::run_core(core, cpu, main),
        Backend::Epoll => epoll::run_core(core, cpu, main),
    };
    CURRENT.with(|c| c.set(None));
    out
}

/// A handle to a spawned local task. Dropping it cancels the task (on every backend);
/// [`Task::detach`] lets the task run on by itself. Awaiting it gives the task's output
/// (a panic in the task is resumed in the awaiting task).
#[must_use = "dropping a Task cancels it; call detach() to let it run"]
pub struct Task<T>(Option<TaskInner<T>>);

enum TaskInner<T> {
    Compio(::compio::runtime::JoinHandle<T>),
    Glommio(::glommio::Task<T>),
    Tokio(tokio::task::JoinHandle<T>),
}

impl<T> Task<T> {
    /// Lets the task run to its end without a handle.
    pub fn detach(mut self) {
        match self.0.take() {
            Some(TaskInner::Compio(t)) => t.detach(),
            Some(TaskInner::Glommio(t)) => {
                t.detach();
            }
            // Dropping a tokio JoinHandle detaches; taken out, our Drop does not abort it.
            Some(TaskInner::Tokio(h)) => drop(h),
            None => {}
        }
    }
}

impl<T> Drop for Task<T> {
    fn drop(&mut self) {
        // glommio's handle cancels its task when dropped; tokio's only detaches it.
        if let Some(TaskInner::Tokio(h)) = &self.0 {
            h.abort();
        }
    }
}

impl<T> Future for Task<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match &mut self.0 {
            Some(TaskInner::Compio(t)) => match Pin::new(t).poll(cx) {
                Poll::Ready(Ok(v)) => Poll::Ready(v),
                Poll::Ready(Err(::compio::runtime::JoinError::Panicked(payload))) => {
                    std::panic::resume_unwind(payload)
                }
                // Cancelled: as for tokio below.
                Poll::Ready(Err(_)) => Poll::Pending,
                Poll::Pending => Poll::Pending,
            },
            Some(TaskInner::Glommio(t)) => Pin::new(t).poll(cx),
            Some(TaskInner::Tokio(h)) => match Pin::new(h).poll(cx) {
                Poll::Ready(Ok(v)) => Poll::Ready(v),
                Poll::Ready(Err(e)) => match e.try_into_panic() {
                    Ok(payload) => std::panic::resume_unwind(payload),
                    // Cancelled: only the runtime shutting down does that while a handle
                    // exists, and then nobody is left to see the output.
                    Err(_) => Poll::Pending,
                },
                Poll::Pending => Poll::Pending,
            },
            None => Poll::Pending,
        }
    }
}

/// Spawns `future` as a local task of this core's executor. The new task first runs
/// when the caller yields (at its next `await` that is not ready), on every backend:
/// code between a spawn and the next `await` runs before the task does.
pub fn spawn<F>(future: F) -> Task<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    match current() {
        Backend::IoUring(_) => Task(Some(TaskInner::Compio(::compio::runtime::spawn(future)))),
        Backend::Glommio => {
            // glommio's spawn_local polls the new task at once, inside the caller, while
            // tokio queues it. Scheduling it on the caller's own queue gives both the
            // same order; otherwise a task could act before its spawner finished a step
            // it relies on (start-up resumed a purchase a lane job had just started).
            let queue = ::glommio::executor().current_task_queue();
            match ::glommio::spawn_local_into(future, queue) {
                Ok(task) => Task(Some(TaskInner::Glommio(task))),
                Err(e) => {
                    // The caller's own queue exists while it runs; this is unreachable.
                    tracing::error!(error = %e, "cannot schedule a task on the current queue");
                    Task(None)
                }
            }
        }
        Backend::Epoll => Task(Some(TaskInner::Tokio(tokio::task::spawn_local(future)))),
    }
}

/// Sleeps for `duration` on the executor's own timer. For the many short-lived
/// timeouts of the request path, `net::sleep` (one timer for all of them) is cheaper.
pub async fn sleep(duration: Duration) {
    match current() {
        Backend::IoUring(_) => ::compio::time::sleep(duration).await,
        Backend::Glommio => ::glommio::timer::sleep(duration).await,
        Backend::Epoll => tokio::time::sleep(duration).await,
    }
}

/// Runs `f` on the executor's blocking thread pool (for calls that block their thread:
/// fsync, compaction) and waits for its result without blocking the core. A panic in
/// `f` is resumed here.
pub async fn spawn_blocking<F, R>(f: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match current() {
        Backend::IoUring(_) => match ::compio::runtime::spawn_blocking(compio::unpinned(f)).await {
            Ok(r) => r,
            Err(::compio::runtime::JoinError::Panicked(payload)) => {
                std::panic::resume_unwind(payload)
            }
            // Cancelled only when the runtime shuts down, after this core's work.
            Err(_) => std::future::pending().await,
        },
        Backend::Glommio => ::glommio::executor().spawn_blocking(f).await,
        Backend::Epoll => match tokio::task::spawn_blocking(f).await {
            Ok(r) => r,
            Err(e) => match e.try_into_panic() {
                Ok(payload) => std::panic::resume_unwind(payload),
                // Cancelled only when the runtime shuts down, after this core's work.
                Err(_) => std::future::pending().await,
            },
        },
    }
}

/// Lets the core's other tasks run before this one continues (between slices of a long
/// job).
pub async fn yield_now() {
    match current() {
        Backend::IoUring(_) => {
            // compio has no yield of its own: wake ourselves and step aside once.
            let mut yielded = false;
            std::future::poll_fn(|cx| {
                if yielded {
                    Poll::Ready(())
                } else {
                    yielded = true;
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await
        }
        Backend::Glommio => ::glommio::executor().yield_task_queue_now().await,
        Backend::Epoll => tokio::task::yield_now().await,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Runs `test` on every backend this host can start.
    pub(crate) fn on_each_backend(test: impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()>>>) {
        let mut backends = vec![Backend::Epoll];
        if let Ok(probe) = compio::ring_setup() {
            backends.push(Backend::IoUring(IoUring {
                setup: probe.setup,
                coalesce: None,
            }));
            if probe.min_wait {
                backends.push(Backend::IoUring(IoUring {
                    setup: probe.setup,
                    coalesce: Some(Coalesce {
                        window_us: 500,
                        events: 16,
                    }),
                }));
            }
        }
        if glommio::refusal().is_none() {
            backends.push(Backend::Glommio);
        }
        for b in backends {
            run_core(b, 0, 0, &test).unwrap_or_else(|e| panic!("{b}: {e}"));
        }
    }

    #[test]
    fn urgent_marks_nest_and_end_when_dropped() {
        assert!(!urgent_work());
        let outer = urgent();
        let inner = urgent();
        drop(outer);
        assert!(urgent_work());
        drop(inner);
        assert!(!urgent_work());
    }

    #[test]
    fn a_dropped_task_is_cancelled_and_a_detached_one_runs() {
        on_each_backend(|| {
            Box::pin(async {
                let ran = Rc::new(RefCell::new(Vec::new()));
                let r = Rc::clone(&ran);
                let dropped = spawn(async move {
                    sleep(Duration::from_millis(20)).await;
                    r.borrow_mut().push("dropped");
                });
                let r = Rc::clone(&ran);
                spawn(async move {
                    sleep(Duration::from_millis(20)).await;
                    r.borrow_mut().push("detached");
                })
                .detach();
                drop(dropped);
                let joined = spawn(async { 7 });
                assert_eq!(joined.await, 7);
                sleep(Duration::from_millis(60)).await;
                assert_eq!(*ran.borrow(), vec!["detached"]);
                assert_eq!(spawn_blocking(|| 3 + 4).await, 7);
                yield_now().await;
            })
        });
    }

    #[test]
    fn a_spawned_task_runs_only_once_its_spawner_yields() {
        on_each_backend(|| {
            Box::pin(async {
                let order = Rc::new(RefCell::new(Vec::new()));
                let o = Rc::clone(&order);
                let task = spawn(async move { o.borrow_mut().push("task") });
                order.borrow_mut().push("spawner");
                task.await;
                assert_eq!(*order.borrow(), vec!["spawner", "task"]);
            })
        });
    }

    #[test]
    fn choices_parse_by_their_config_names() {
        for name in RuntimeChoice::NAMES {
            assert_eq!(
                RuntimeChoice::parse(name).map(RuntimeChoice::name),
                Some(name)
            );
        }
        assert_eq!(RuntimeChoice::parse("uring"), None);
        let s = select(RuntimeChoice::Epoll, None).unwrap();
        assert_eq!(s.backend, Backend::Epoll);
    }
}
