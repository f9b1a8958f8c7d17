//! Exchanges whose caller stopped waiting, run to their end by one task per executor.
//!
//! A quote asks each seller with a deadline, and a hedge or the deadline can make the
//! caller drop its half-done exchange. The exchange should still read the answer to the
//! end, so that its kept-alive connection goes back to the pool instead of being closed.
//! Giving every exchange a task of its own up front pays for that on every exchange (a
//! task to allocate and schedule, a channel, a second wake-up when the answer comes) to
//! cover the few that are abandoned. Instead the caller polls the exchange itself through
//! a [`RunToEnd`], and only a `RunToEnd` dropped unfinished hands its exchange here, where
//! the executor's orphanage task polls it to its end, within a time cap.
//!
//! Nothing is spawned from a destructor: the orphanage task is started once per executor
//! ([`start_driver`]), and adopting only queues the future and wakes that task. Without a
//! running orphanage (the executor is stopping, or never started one), an orphan is
//! dropped at once, which closes its connection: the behaviour without this module.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

/// A future the orphanage owns.
type Orphan = Pin<Box<dyn Future<Output = ()>>>;

#[derive(Default)]
struct Home {
    /// Orphans not yet picked up by the orphanage task.
    arrivals: Vec<Orphan>,
    /// Wakes the orphanage task.
    waker: Option<Waker>,
    /// The orphanage task is alive on this thread.
    running: bool,
}

thread_local! {
    static HOME: RefCell<Home> = RefCell::new(Home::default());
}

/// Starts this executor's orphanage task. Call once per executor, inside it.
pub fn start_driver() {
    let started = HOME
        .try_with(|h| !std::mem::replace(&mut h.borrow_mut().running, true))
        .unwrap_or(false);
    if started {
        crate::rt::spawn(drive()).detach();
    }
}

/// Orphans adopted and not yet finished or given up on this thread.
#[cfg(test)]
fn pending() -> usize {
    LIVE.with(|n| *n.borrow())
}

#[cfg(test)]
thread_local! {
    static LIVE: RefCell<usize> = const { RefCell::new(0) };
}

fn adopt(orphan: Orphan) {
    let refused = HOME
        .try_with(|h| {
            let mut h = h.borrow_mut();
            if !h.running {
                return Some(orphan);
            }
            h.arrivals.push(orphan);
            if let Some(w) = h.waker.take() {
                w.wake();
            }
            None
        })
        .unwrap_or(None);
    // Dropped outside the borrow: dropping may touch other thread-locals.
    drop(refused);
}

/// Clears the orphanage when its task ends (the executor is stopping): later orphans
/// are dropped where they are abandoned, and queued ones are dropped here, while the
/// executor's thread-locals (timers, pools) still exist.
struct Closing;

impl Drop for Closing {
    fn drop(&mut self) {
        let queued = HOME
            .try_with(|h| {
                let mut h = h.borrow_mut();
                h.running = false;
                h.waker = None;
                std::mem::take(&mut h.arrivals)
            })
            .unwrap_or_default();
        drop(queued);
    }
}

async fn drive() {
    let _closing = Closing;
    let mut live: FuturesUnordered<Orphan> = FuturesUnordered::new();
    std::future::poll_fn(move |cx| loop {
        let arrived = HOME
            .try_with(|h| {
                let mut h = h.borrow_mut();
                if !h.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    h.waker = Some(cx.waker().clone());
                }
                std::mem::take(&mut h.arrivals)
            })
            .unwrap_or_default();
        if arrived.is_empty() {
            while let Poll::Ready(Some(())) = live.poll_next_unpin(cx) {}
            #[cfg(test)]
            let _ = LIVE.try_with(|n| *n.borrow_mut() = live.len());
            return Poll::<()>::Pending;
        }
        live.extend(arrived);
    })
    .await;
}

/// Runs `F` in the caller; if dropped before `F` finished, hands `F` to the orphanage,
/// which runs it for at most `cap` more.
pub struct RunToEnd<F: Future + 'static> {
    fut: Option<Pin<Box<F>>>,
    cap: Duration,
}

impl<F: Future + 'static> RunToEnd<F> {
    /// Wraps `fut`; `cap` bounds how long it may run once abandoned.
    pub fn new(fut: F, cap: Duration) -> RunToEnd<F> {
        RunToEnd {
            fut: Some(Box::pin(fut)),
            cap,
        }
    }
}

impl<F: Future + 'static> Future for RunToEnd<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(fut) = self.fut.as_mut() else {
            // Polled after it finished: a caller's mistake; never finish twice.
            return Poll::Pending;
        };
        let out = std::task::ready!(fut.as_mut().poll(cx));
        self.fut = None;
        Poll::Ready(out)
    }
}

impl<F: Future + 'static> Drop for RunToEnd<F> {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            let cap = self.cap;
            adopt(Box::pin(async move {
                let _ = super::with_timeout(cap, fut).await;
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// An abandoned exchange is finished by the orphanage; one still awaited is not
    /// handed over; without an orphanage the abandoned one is dropped.
    #[test]
    fn abandoned_futures_run_to_their_end() {
        crate::rt::tests::on_each_backend(|| {
            Box::pin(async {
                crate::net::CoreTimer::start_driver();
                start_driver();
                let done = Rc::new(Cell::new(0));
                let d = Rc::clone(&done);
                let slow = RunToEnd::new(
                    async move {
                        crate::net::sleep(Duration::from_millis(30)).await;
                        d.set(d.get() + 1);
                    },
                    Duration::from_secs(5),
                );
                // The caller gives up after 5 ms.
                assert!(crate::net::with_timeout(Duration::from_millis(5), slow)
                    .await
                    .is_none());
                assert_eq!(done.get(), 0);
                crate::net::sleep(Duration::from_millis(100)).await;
                assert_eq!(done.get(), 1, "the orphanage finished the abandoned future");

                let d = Rc::clone(&done);
                let fast =
                    RunToEnd::new(async move { d.set(d.get() + 10) }, Duration::from_secs(5));
                fast.await;
                assert_eq!(done.get(), 11);

                // Past its cap an orphan is dropped unfinished.
                let d = Rc::clone(&done);
                let stuck = RunToEnd::new(
                    async move {
                        crate::net::sleep(Duration::from_secs(60)).await;
                        d.set(d.get() + 100);
                    },
                    Duration::from_millis(20),
                );
                assert!(crate::net::with_timeout(Duration::from_millis(1), stuck)
                    .await
                    .is_none());
                crate::net::sleep(Duration::from_millis(100)).await;
                assert_eq!(done.get(), 11);
                assert_eq!(pending(), 0);
            })
        });
    }
}
