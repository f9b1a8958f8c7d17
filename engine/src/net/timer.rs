//! A `hyper::rt::Timer` for glommio executors.
//!
//! hyper wants `Sleep` futures that are `Send + Sync` (for `header_read_timeout`, the
//! slowloris guard); glommio's timers are not `Send`. So each executor thread keeps its
//! own deadline heap, and a [`Sleep`] holds only its deadline and a slot id: it is
//! `Send + Sync` by construction, without `unsafe`. One task per executor (started by
//! [`CoreTimer::start_driver`]) sleeps on a glommio timer until the earliest deadline and
//! wakes whoever is due.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// hyper's timer on the current glommio executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreTimer;

#[derive(Default)]
struct Wheel {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    wakers: HashMap<u64, Waker>,
    next_id: u64,
    /// The driver's waker and the deadline it sleeps until, so an earlier deadline can
    /// wake it.
    driver: Option<(Waker, Option<Instant>)>,
}

thread_local! {
    static WHEEL: RefCell<Wheel> = RefCell::new(Wheel::default());
}

impl CoreTimer {
    /// Starts this executor's timer driver. Call once per executor, inside it.
    pub fn start_driver() {
        glommio::spawn_local(drive()).detach();
    }
}

async fn drive() {
    loop {
        let now = Instant::now();
        let (due, next) = WHEEL.with(|w| {
            let mut w = w.borrow_mut();
            let mut due = Vec::new();
            while let Some(Reverse((at, id))) = w.heap.peek().copied() {
                if at > now {
                    break;
                }
                w.heap.pop();
                if let Some(waker) = w.wakers.remove(&id) {
                    due.push(waker);
                }
            }
            (due, w.heap.peek().map(|Reverse((at, _))| *at))
        });
        for waker in due {
            waker.wake();
        }
        let sleep = next.map(|at| {
            Box::pin(glommio::timer::Timer::new(
                at.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
        });
        let mut sleep = sleep;
        std::future::poll_fn(|cx| {
            if let Some(timer) = sleep.as_mut() {
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            WHEEL.with(|w| {
                let mut w = w.borrow_mut();
                let earliest = w.heap.peek().map(|Reverse((at, _))| *at);
                if earliest != next {
                    // Someone registered an earlier deadline since we looked.
                    w.driver = None;
                    Poll::Ready(())
                } else {
                    w.driver = Some((cx.waker().clone(), next));
                    Poll::Pending
                }
            })
        })
        .await;
    }
}

/// Sleeps on this executor's wheel. Request timeouts use this rather than a glommio
/// timer each: a glommio timer is an io_uring timeout operation, submitted and then
/// cancelled for every request, while the wheel keeps one timer for all of them. Its
/// resolution is about a millisecond. Needs [`CoreTimer::start_driver`] on the executor.
pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        deadline: Instant::now() + duration,
        id: None,
    }
}

/// A sleep registered with the current thread's wheel.
pub struct Sleep {
    deadline: Instant,
    id: Option<u64>,
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            if let Some(id) = self.id.take() {
                WHEEL.with(|w| w.borrow_mut().wakers.remove(&id));
            }
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let known = self.id;
        let id = WHEEL.with(|w| {
            let mut w = w.borrow_mut();
            let id = match known {
                Some(id) => id,
                None => {
                    let id = w.next_id;
                    w.next_id = w.next_id.wrapping_add(1);
                    w.heap.push(Reverse((deadline, id)));
                    // Wake the driver if it sleeps past this deadline (or sleeps with none).
                    let wake = match &w.driver {
                        Some((_, Some(at))) => deadline < *at,
                        Some((_, None)) => true,
                        None => false,
                    };
                    if wake {
                        if let Some((waker, _)) = w.driver.take() {
                            waker.wake();
                        }
                    }
                    id
                }
            };
            w.wakers.insert(id, cx.waker().clone());
            id
        });
        self.id = Some(id);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            // A Sleep dropped on another thread finds nothing here; its heap entry is
            // skipped when it comes due.
            let _ = WHEEL.try_with(|w| {
                if let Ok(mut w) = w.try_borrow_mut() {
                    w.wakers.remove(&id);
                }
            });
        }
    }
}

impl hyper::rt::Sleep for Sleep {}

impl hyper::rt::Timer for CoreTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Sleep { deadline, id: None })
    }
}
