//! A `hyper::rt::Timer` for the engine's executors.
//!
//! hyper wants `Sleep` futures that are `Send + Sync` (for `header_read_timeout`, the
//! slowloris guard); not every executor's timers are `Send`. So each executor thread keeps its
//! own map of deadlines, and a [`Sleep`] holds only its deadline and an id: it is
//! `Send + Sync` by construction, without `unsafe`. One task per executor (started by
//! [`CoreTimer::start_driver`]) sleeps on the executor's timer until the earliest deadline and
//! wakes whoever is due.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// hyper's timer on the current executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct CoreTimer;

/// The live sleeps of one executor, earliest first. A sleep leaves the map when it fires
/// or is dropped, so the map holds only what is still pending: most sleeps are timeouts
/// that never fire (a request's deadline, a connection's header timeout), and leaving
/// them in until they came due kept tens of thousands of dead entries at a few thousand
/// requests per second.
struct Wheel {
    sleeps: BTreeMap<(Instant, u64), Waker>,
    next_id: u64,
    /// The driver's waker and the deadline it sleeps until, so an earlier deadline can
    /// wake it.
    driver: Option<(Waker, Option<Instant>)>,
}

/// Gives each thread's wheel its own range of ids, so a key never names another
/// thread's sleep.
static WHEELS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Default for Wheel {
    fn default() -> Self {
        let wheel = WHEELS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Wheel {
            sleeps: BTreeMap::new(),
            next_id: wheel << 40,
            driver: None,
        }
    }
}

impl Wheel {
    fn earliest(&self) -> Option<Instant> {
        self.sleeps.first_key_value().map(|((at, _), _)| *at)
    }
}

thread_local! {
    static WHEEL: RefCell<Wheel> = RefCell::new(Wheel::default());
}

impl CoreTimer {
    /// Starts this executor's timer driver. Call once per executor, inside it.
    pub fn start_driver() {
        crate::rt::spawn(drive()).detach();
    }
}

async fn drive() {
    let mut due = Vec::new();
    loop {
        let now = Instant::now();
        let next = WHEEL.with(|w| {
            let mut w = w.borrow_mut();
            while let Some(entry) = w.sleeps.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                due.push(entry.remove());
            }
            w.earliest()
        });
        for waker in due.drain(..) {
            waker.wake();
        }
        let mut sleep = next.map(|at| {
            Box::pin(crate::rt::sleep(
                at.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
        });
        std::future::poll_fn(|cx| {
            if let Some(timer) = sleep.as_mut() {
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            WHEEL.with(|w| {
                let mut w = w.borrow_mut();
                if w.earliest() != next {
                    // The earliest deadline changed since we looked: an earlier one was
                    // added (which wakes us) or the one we slept for was dropped (then
                    // we wake at its time once, for nothing).
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

/// Sleeps on this executor's wheel. Request timeouts use this rather than an executor
/// timer each: on glommio that is an io_uring timeout operation, submitted and then
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
        let deadline = self.deadline;
        if Instant::now() >= deadline {
            if let Some(id) = self.id.take() {
                WHEEL.with(|w| w.borrow_mut().sleeps.remove(&(deadline, id)));
            }
            return Poll::Ready(());
        }
        let known = self.id;
        let id = WHEEL.with(|w| {
            let mut w = w.borrow_mut();
            match known {
                Some(id) => match w.sleeps.get_mut(&(deadline, id)) {
                    Some(waker) => {
                        waker.clone_from(cx.waker());
                        Some(id)
                    }
                    // The driver took it out: it is due, and this poll came first.
                    None => None,
                },
                None => {
                    let id = w.next_id;
                    w.next_id = w.next_id.wrapping_add(1);
                    w.sleeps.insert((deadline, id), cx.waker().clone());
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
                    Some(id)
                }
            }
        });
        match id {
            Some(id) => {
                self.id = Some(id);
                Poll::Pending
            }
            None => {
                self.id = None;
                Poll::Ready(())
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            // A Sleep dropped on another thread finds nothing here (each thread's ids are
            // its own); its entry fires harmlessly when due.
            let key = (self.deadline, id);
            let _ = WHEEL.try_with(|w| {
                if let Ok(mut w) = w.try_borrow_mut() {
                    w.sleeps.remove(&key);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> usize {
        WHEEL.with(|w| w.borrow().sleeps.len())
    }

    #[test]
    fn sleeps_fire_in_order_and_dropped_ones_leave_at_once() {
        let backends = [
            crate::rt::RuntimeChoice::Epoll,
            crate::rt::RuntimeChoice::IoUring,
            crate::rt::RuntimeChoice::Glommio,
        ]
        .into_iter()
        .filter_map(|c| crate::rt::select(c, None).ok())
        .map(|s| s.backend);
        for backend in backends {
            crate::rt::run_core(backend, 0, 0, || async {
                CoreTimer::start_driver();
                // A thousand timeouts that never fire, as a request's deadline usually is.
                for _ in 0..1000 {
                    let mut s = Box::pin(sleep(Duration::from_secs(30)));
                    let waker = futures_util::task::noop_waker();
                    assert!(s
                        .as_mut()
                        .poll(&mut Context::from_waker(&waker))
                        .is_pending());
                }
                assert_eq!(live(), 0, "dropped sleeps are removed, not left until due");

                let started = Instant::now();
                let order = std::rc::Rc::new(RefCell::new(Vec::new()));
                let tasks: Vec<_> = [30u64, 10, 20]
                    .into_iter()
                    .map(|ms| {
                        let order = order.clone();
                        crate::rt::spawn(async move {
                            sleep(Duration::from_millis(ms)).await;
                            order.borrow_mut().push(ms);
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await;
                }
                assert_eq!(*order.borrow(), vec![10, 20, 30]);
                assert!(started.elapsed() >= Duration::from_millis(30));
                assert_eq!(live(), 0);
            })
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        }
    }
}
