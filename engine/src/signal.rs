//! A one-shot, executor-local broadcast: many tasks wait, one call wakes them all.
//!
//! Used for graceful shutdown inside one core: the accept loop and every connection task
//! wait on the same [`LocalSignal`]. It is `!Send` on purpose (it lives in one executor),
//! so it needs no atomics or locks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A flag that can be raised once, with tasks waiting for it.
#[derive(Default)]
pub struct LocalSignal {
    raised: Cell<bool>,
    /// Wakers of pending waiters; a waiter that goes away frees its slot, so a
    /// long-running core with many short-lived connections does not accumulate wakers.
    slots: RefCell<Vec<Option<Waker>>>,
    free: RefCell<Vec<usize>>,
}

impl LocalSignal {
    /// A new, lowered signal.
    pub fn new() -> Rc<LocalSignal> {
        Rc::new(LocalSignal::default())
    }

    /// Raises the signal and wakes every waiter. Idempotent.
    pub fn raise(&self) {
        self.raised.set(true);
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether the signal was raised.
    pub fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// A future that completes once the signal is raised.
    pub fn wait(self: &Rc<Self>) -> Raised {
        Raised {
            signal: Rc::clone(self),
            slot: None,
        }
    }
}

/// Future returned by [`LocalSignal::wait`].
pub struct Raised {
    signal: Rc<LocalSignal>,
    slot: Option<usize>,
}

impl Future for Raised {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.raised.get() {
            return Poll::Ready(());
        }
        let waker = Some(cx.waker().clone());
        match self.slot {
            Some(i) => {
                if let Some(slot) = self.signal.slots.borrow_mut().get_mut(i) {
                    *slot = waker;
                }
            }
            None => {
                let i = match self.signal.free.borrow_mut().pop() {
                    Some(i) => {
                        if let Some(slot) = self.signal.slots.borrow_mut().get_mut(i) {
                            *slot = waker;
                        }
                        i
                    }
                    None => {
                        let mut slots = self.signal.slots.borrow_mut();
                        slots.push(waker);
                        slots.len() - 1
                    }
                };
                self.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        if let Some(i) = self.slot.take() {
            if let Some(slot) = self.signal.slots.borrow_mut().get_mut(i) {
                *slot = None;
            }
            self.signal.free.borrow_mut().push(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_by_later_waiters() {
        let signal = LocalSignal::new();
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            let mut w = Box::pin(signal.wait());
            assert!(w.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(signal.slots.borrow().len(), 1);
        let mut w = Box::pin(signal.wait());
        assert!(w.as_mut().poll(&mut cx).is_pending());
        signal.raise();
        assert!(w.as_mut().poll(&mut cx).is_ready());
    }
}
