//! The purchase lane: how a core that accepted a purchase request hands it to the core
//! that owns the purchase's shard.
//!
//! One crossbeam channel per core carries [`Job`]s in; crossbeam wakes nobody, so each
//! sender also wakes the owner's receiving task through an [`AtomicWaker`] (the executor
//! turns a wake from another thread into an eventfd write to the owner's reactor). The
//! answer travels back on a oneshot channel, which wakes the accepting core the same
//! way. No core ever blocks waiting for another.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use futures_channel::oneshot;
use futures_util::task::AtomicWaker;

use super::api::PurchaseRequest;

/// The answer to a purchase route, built on the owning core.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `application/json` body (a purchase) or, for 4xx, a problem+json body.
    pub body: Vec<u8>,
    /// Whether `body` is a problem (`application/problem+json`).
    pub problem: bool,
    /// `Location` header, for `202`.
    pub location: Option<String>,
}

/// Work for the core that owns a shard.
pub enum Job {
    /// `POST /v1/purchases`.
    Post {
        /// The validated request.
        request: Box<PurchaseRequest>,
        /// Its shard, as the accepting core computed it.
        shard: u32,
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
    /// `GET /v1/purchases/{id}`.
    Get {
        /// The purchase id.
        id: String,
        /// Who asks: another customer's purchase is a 404.
        customer: String,
        /// Shard the id names.
        shard: u32,
        /// Where the answer goes.
        reply: oneshot::Sender<Answer>,
    },
}

struct Inbox {
    tx: Sender<Job>,
    waker: Arc<AtomicWaker>,
}

/// Every core's inbox; shared by all cores.
pub struct Lanes {
    inboxes: Vec<Inbox>,
}

/// One core's end of its inbox.
pub struct LaneReceiver {
    rx: Receiver<Job>,
    waker: Arc<AtomicWaker>,
}

impl Lanes {
    /// Inboxes for `cores` cores, and the receiving end of each, in core order.
    pub fn new(cores: usize) -> (Lanes, Vec<LaneReceiver>) {
        let mut inboxes = Vec::with_capacity(cores);
        let mut receivers = Vec::with_capacity(cores);
        for _ in 0..cores {
            let (tx, rx) = crossbeam_channel::unbounded();
            let waker = Arc::new(AtomicWaker::new());
            inboxes.push(Inbox {
                tx,
                waker: Arc::clone(&waker),
            });
            receivers.push(LaneReceiver { rx, waker });
        }
        (Lanes { inboxes }, receivers)
    }

    /// Sends `job` to `core`. Fails only when that core has stopped.
    pub fn send(&self, core: usize, job: Job) -> Result<(), Job> {
        let Some(inbox) = self.inboxes.get(core) else {
            return Err(job);
        };
        match inbox.tx.send(job) {
            Ok(()) => {
                inbox.waker.wake();
                Ok(())
            }
            Err(e) => Err(e.into_inner()),
        }
    }
}

impl LaneReceiver {
    /// The next job; `None` once every sender is gone.
    pub async fn next(&self) -> Option<Job> {
        poll_fn(|cx| match self.rx.try_recv() {
            Ok(job) => Poll::Ready(Some(job)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => {
                self.waker.register(cx.waker());
                // A job sent between the first look and the registration would have
                // found no waker to wake: look again.
                match self.rx.try_recv() {
                    Ok(job) => Poll::Ready(Some(job)),
                    Err(TryRecvError::Disconnected) => Poll::Ready(None),
                    Err(TryRecvError::Empty) => Poll::Pending,
                }
            }
        })
        .await
    }
}
