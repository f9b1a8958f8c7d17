//! Group commit: many purchases on one shard share one fsync, done on the executor's
//! blocking thread pool so the core keeps serving while the disk works.
//!
//! A write gets a ticket (a sequence number). [`GroupCommit::durable`] waits until a
//! sync that *started after* the write has finished. While one sync runs, every new
//! write waits for the next one, which then covers all of them: under load the number
//! of fsyncs stays near one per disk round trip, whatever the purchase rate.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use bookbroker_storage::{Batch, Shard, StorageError};
use futures_channel::oneshot;

use crate::metrics::{Counter, Metrics};

/// Why a write is not known to be on disk. Always our side's fault, never the client's;
/// the write itself happened, so the caller decides whether to sync again or give the
/// purchase up.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DurableError {
    /// The fsync failed (shared by every write it was to cover).
    #[error("syncing shard {shard} failed: {source}")]
    Sync {
        /// The shard.
        shard: u32,
        /// What storage said.
        source: Arc<StorageError>,
    },
    /// The sync task ended before it answered: the core is stopping.
    #[error("the sync task ended before the write was durable")]
    Abandoned,
}

#[derive(Default)]
struct State {
    written: u64,
    synced: u64,
    syncing: bool,
    waiters: Vec<(u64, oneshot::Sender<Result<(), DurableError>>)>,
}

/// One shard with its group commit, owned by one core.
pub struct GroupCommit {
    shard: Shard,
    grouped: bool,
    state: RefCell<State>,
}

impl GroupCommit {
    /// Wraps `shard`. With `grouped` false, every [`GroupCommit::durable`] call does an
    /// fsync of its own (the baseline the benchmark compares against).
    pub fn new(shard: Shard, grouped: bool) -> Rc<GroupCommit> {
        Rc::new(GroupCommit {
            shard,
            grouped,
            state: RefCell::new(State::default()),
        })
    }

    /// The shard.
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// Writes `batch` (surviving a process crash at once) and returns its ticket for
    /// [`GroupCommit::durable`].
    pub fn write(&self, batch: Batch) -> Result<u64, StorageError> {
        self.shard.write(batch)?;
        let mut st = self.state.borrow_mut();
        st.written += 1;
        Ok(st.written)
    }

    /// Waits until the write with `ticket` is on disk. Syncs are counted in core
    /// `core`'s slot of `metrics`.
    pub async fn durable(
        self: &Rc<Self>,
        ticket: u64,
        metrics: &Arc<Metrics>,
        core: usize,
    ) -> Result<(), DurableError> {
        if !self.grouped {
            metrics.inc_counter(core, Counter::StorageSyncs);
            return self.sync().await;
        }
        let (rx, start_syncing) = {
            let mut st = self.state.borrow_mut();
            if st.synced >= ticket {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push((ticket, tx));
            let start = !st.syncing;
            st.syncing = true;
            (rx, start)
        };
        // Spawned with no borrow held: the new task may run before this one resumes.
        if start_syncing {
            let me = Rc::clone(self);
            let metrics = Arc::clone(metrics);
            crate::rt::spawn(async move { me.sync_loop(&metrics, core).await }).detach();
        }
        rx.await.unwrap_or(Err(DurableError::Abandoned))
    }

    /// One fsync of the shard, off the core's thread.
    async fn sync(&self) -> Result<(), DurableError> {
        let shard = self.shard.clone();
        let index = self.shard.index();
        crate::rt::spawn_blocking(move || shard.sync())
            .await
            .map_err(|e| DurableError::Sync {
                shard: index,
                source: Arc::new(e),
            })
    }

    async fn sync_loop(self: Rc<Self>, metrics: &Metrics, core: usize) {
        loop {
            let target = {
                let mut st = self.state.borrow_mut();
                if st.waiters.is_empty() {
                    st.syncing = false;
                    return;
                }
                st.written
            };
            metrics.inc_counter(core, Counter::StorageSyncs);
            let result = self.sync().await;
            let done: Vec<_> = {
                let mut st = self.state.borrow_mut();
                if result.is_ok() {
                    st.synced = st.synced.max(target);
                }
                let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut st.waiters)
                    .into_iter()
                    .partition(|(t, _)| *t <= target);
                st.waiters = waiting;
                ready
            };
            if let Err(e) = &result {
                tracing::error!(error = %e, shard = self.shard.index(), "fsync of the purchase log failed");
            }
            for (_, tx) in done {
                let _ = tx.send(result.clone());
            }
        }
    }
}
