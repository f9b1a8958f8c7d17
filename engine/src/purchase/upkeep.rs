//! Work a core does on its shards by itself: resuming unfinished purchases at start and
//! expiring old ones.

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_util::StreamExt as _;

use super::owner::load;
use super::record::Step;
use super::state::{now_ms, ShardOwner};
use super::world::RunningGuard;
use crate::metrics::Counter;
use crate::state::Core;

/// Resumes every unfinished purchase of this core's shards: all are registered as
/// running at once (so a replay answers 409 rather than starting a second saga), and at
/// most `purchases.recovery_concurrency` sagas run at a time, so a long outage's backlog
/// does not flood the partners or starve new requests.
pub fn recover(core: &Rc<Core>) -> usize {
    let mut pending = Vec::new();
    for (index, owner) in &core.purchases.shards {
        let ids = match owner.commit.shard().unfinished() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(shard = index, error = %e, "cannot list unfinished purchases");
                continue;
            }
        };
        for id in ids {
            match load(owner, &id) {
                Ok(Some(p)) if p.step != Step::Done => {
                    owner.running.borrow_mut().insert(id.clone(), Vec::new());
                    tracing::info!(purchase = %id, step = ?p.step, "resuming a purchase");
                    core.shared
                        .metrics
                        .inc_counter(core.index, Counter::PurchasesRecovered);
                    let guard = RunningGuard::enter(core, &p.customer);
                    pending.push((Rc::clone(owner), p, guard));
                }
                Ok(_) => {}
                Err(_) => tracing::error!(purchase = %id, "cannot resume a purchase"),
            }
        }
    }
    let resumed = pending.len();
    if resumed > 0 {
        let limit = core.shared.config.purchases.recovery_concurrency.max(1);
        let core = Rc::clone(core);
        crate::rt::spawn(async move {
            futures_util::stream::iter(pending)
                .for_each_concurrent(limit, |(owner, p, guard)| {
                    super::world::run(Rc::clone(&core), owner, p, guard)
                })
                .await;
        })
        .detach();
    }
    resumed
}

/// Removes expired purchases and keys from this core's shards, a slice at a time, and
/// compacts (off the reactor thread) after removing some.
pub async fn expire_loop(core: Rc<Core>, every: Duration) {
    let owners: HashMap<u32, Rc<ShardOwner>> = core.purchases.shards.clone();
    loop {
        crate::rt::sleep(every).await;
        for owner in owners.values() {
            let mut removed = 0;
            loop {
                match owner.commit.shard().expire(now_ms(), 256) {
                    Ok(0) => break,
                    Ok(n) => {
                        removed += n;
                        // Let requests run between slices.
                        crate::rt::yield_now().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "expiring purchases failed");
                        break;
                    }
                }
            }
            if removed > 0 {
                tracing::info!(
                    removed,
                    shard = owner.commit.shard().index(),
                    "expired purchases removed"
                );
                let shard = owner.commit.shard().clone();
                if let Err(e) = crate::rt::spawn_blocking(move || shard.compact()).await {
                    tracing::warn!(error = %e, "compaction after expiry failed");
                }
            }
        }
    }
}
