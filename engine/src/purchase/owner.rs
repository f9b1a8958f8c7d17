//! The owning core's side: its lane inbox, the idempotency decision for a key (new,
//! replay, conflict), and starting or resuming a saga.

use std::rc::Rc;
use std::time::Duration;

use bookbroker_storage::{Batch, IdempotencyRecord};
use futures_channel::oneshot;
use futures_util::future::{select, Either};

use super::api::PurchaseRequest;
use super::ids::new_id;
use super::lane::{Answer, Job};
use super::record::{Outcome, Purchase, Wanted};
use super::state::{now_ms, ShardOwner};
use super::world::RunningGuard;
use crate::cluster::Membership;
use crate::metrics::Counter;
use crate::problem::ApiProblem;
use crate::state::Core;

/// Serves this core's inbox until every sender is gone.
pub async fn serve_lane(core: Rc<Core>, inbox: super::lane::LaneReceiver) {
    while let Some(job) = inbox.next().await {
        let core = Rc::clone(&core);
        crate::rt::spawn(async move {
            match job {
                Job::Post {
                    request,
                    shard,
                    reply,
                } => {
                    let answer = handle_post(&core, *request, shard).await;
                    let _ = reply.send(answer);
                }
                Job::Get {
                    id,
                    customer,
                    shard,
                    reply,
                } => {
                    let _ = reply.send(handle_get(&core, &id, &customer, shard));
                }
            }
        })
        .detach();
    }
}

pub(super) fn shard_owner(core: &Core, shard: u32) -> Result<Rc<ShardOwner>, ApiProblem> {
    core.purchases.shards.get(&shard).cloned().ok_or_else(|| {
        tracing::error!(
            shard,
            core = core.index,
            "a purchase reached a core that does not own its shard"
        );
        ApiProblem::internal()
    })
}

pub(super) fn load(owner: &ShardOwner, id: &str) -> Result<Option<Purchase>, ApiProblem> {
    let raw = owner.commit.shard().purchase(id).map_err(|e| {
        tracing::error!(error = %e, "cannot read a purchase");
        ApiProblem::internal()
    })?;
    raw.map(|bytes| {
        serde_json::from_slice::<Purchase>(&bytes).map_err(|e| {
            tracing::error!(error = %e, purchase = id, "a stored purchase does not decode");
            ApiProblem::internal()
        })
    })
    .transpose()
}

pub(super) fn handle_get(core: &Core, id: &str, customer: &str, shard: u32) -> Answer {
    let owner = match shard_owner(core, shard) {
        Ok(o) => o,
        Err(p) => return answer_problem(&p),
    };
    match load(&owner, id) {
        Ok(Some(p)) if p.customer == customer => {
            // The resource exists whatever its state: 200, with the body a replay of the
            // POST returns (or `pending`).
            let mut a = match &p.outcome {
                Some(o) => answer_outcome(o),
                None => answer_pending(&p),
            };
            a.status = 200;
            a.location = None;
            a
        }
        // Another customer's purchase does not exist for this one.
        Ok(_) => answer_problem(&ApiProblem::not_found()),
        Err(p) => answer_problem(&p),
    }
}

pub(super) async fn handle_post(core: &Rc<Core>, req: PurchaseRequest, shard: u32) -> Answer {
    let owner = match shard_owner(core, shard) {
        Ok(o) => o,
        Err(p) => return answer_problem(&p),
    };
    // Everything from the key lookup to registering a new purchase as running happens
    // without an await, so two requests with one key can never both start a purchase.
    let existing = match owner.commit.shard().idempotency(&req.customer, &req.key) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "cannot read an idempotency record");
            return answer_problem(&ApiProblem::internal());
        }
    };
    let (purchase, wait) = match existing {
        Some(rec) if rec.fingerprint != req.fingerprint => {
            return answer_problem(&ApiProblem::unprocessable(
                "this Idempotency-Key was used with a different request body",
            ))
        }
        Some(rec) => {
            if owner.running.borrow().contains_key(&rec.purchase_id) {
                return answer_problem(&ApiProblem::conflict(
                    "a request with this Idempotency-Key is still being processed; retry later",
                ));
            }
            match load(&owner, &rec.purchase_id) {
                Ok(Some(p)) => match &p.outcome {
                    Some(o) => {
                        core.shared
                            .metrics
                            .inc_counter(core.index, Counter::PurchaseReplays);
                        return answer_outcome(o);
                    }
                    // Unfinished and not running: its intent could not be made durable
                    // earlier and could not be forgotten either. The same request asks
                    // again, so take it up again (the intent is synced below first).
                    None => match resume(core, &owner, p, &req.customer) {
                        Ok(started) => started,
                        Err(p) => return answer_problem(&p),
                    },
                },
                Ok(None) => {
                    tracing::error!(purchase = %rec.purchase_id, "idempotency record without its purchase");
                    return answer_problem(&ApiProblem::internal());
                }
                Err(p) => return answer_problem(&p),
            }
        }
        None => match start(core, &owner, shard, &req) {
            Ok(started) => started,
            Err(p) => return answer_problem(&p),
        },
    };
    let (ticket, guard) = wait;
    // The intent must be on disk before the saga makes its first external call.
    if let Err(e) = owner
        .commit
        .durable(ticket, &core.shared.metrics, core.index)
        .await
    {
        tracing::error!(error = %e, "the purchase intent could not be made durable");
        owner.running.borrow_mut().remove(&purchase.id);
        drop(guard);
        // Nothing was sent to any partner: forget the intent so the key is free for the
        // client's retry. Should even that fail, the retry finds the record unfinished
        // and not running, and takes it up again.
        let mut forget = Batch::default();
        forget.forget_intent(&purchase.id, &purchase.customer, &purchase.key);
        if let Err(e) = owner.commit.write(forget) {
            tracing::error!(error = %e, purchase = %purchase.id, "cannot forget an intent that did not sync");
        }
        return answer_problem(&ApiProblem::service_unavailable(
            "the purchase could not be recorded; retry with the same key",
        ));
    }
    let (done_tx, done_rx) = oneshot::channel();
    if let Some(waiters) = owner.running.borrow_mut().get_mut(&purchase.id) {
        waiters.push(done_tx);
    }
    let pending = answer_pending(&purchase);
    let id = purchase.id.clone();
    crate::rt::spawn(super::world::run(
        Rc::clone(core),
        Rc::clone(&owner),
        purchase,
        guard,
    ))
    .detach();
    if req.respond_async {
        return pending;
    }
    let wait = Duration::from_millis(core.shared.config.purchases.wait_ms);
    let timer = std::pin::pin!(crate::rt::sleep(wait));
    match select(done_rx, timer).await {
        Either::Left(_) => match load(&owner, &id) {
            Ok(Some(p)) => match &p.outcome {
                Some(o) => answer_outcome(o),
                None => pending,
            },
            Ok(None) => pending,
            Err(p) => answer_problem(&p),
        },
        Either::Right(_) => pending,
    }
}

/// Refuses a new saga when this core or this customer already runs as many as allowed:
/// a flood of purchases must not take every core's capacity or one customer's share.
pub(super) fn admit_saga(core: &Core, customer: &str) -> Result<(), ApiProblem> {
    let cfg = &core.shared.config.purchases;
    let refuse = |detail: String| {
        core.shared
            .metrics
            .inc_counter(core.index, Counter::PurchasesRefused);
        Err(ApiProblem::too_many_requests(detail))
    };
    if core.purchases.running.get() >= cfg.max_running_per_core {
        return refuse("too many purchases are running; retry shortly".into());
    }
    if core.shared.running_per_customer.get(customer) >= cfg.max_running_per_customer {
        return refuse(format!(
            "this customer already has {} purchases running; retry when one ends",
            cfg.max_running_per_customer
        ));
    }
    Ok(())
}

/// Takes up an unfinished purchase that is not running again (its intent write is
/// re-synced by the caller).
pub(super) fn resume(
    core: &Rc<Core>,
    owner: &ShardOwner,
    p: Purchase,
    customer: &str,
) -> Result<(Purchase, (u64, RunningGuard)), ApiProblem> {
    admit_saga(core, customer)?;
    let ticket = owner.commit.write(Batch::default()).map_err(|e| {
        tracing::error!(error = %e, "cannot write to a shard");
        ApiProblem::internal()
    })?;
    owner.running.borrow_mut().insert(p.id.clone(), Vec::new());
    tracing::info!(purchase = %p.id, "taking up an unfinished purchase again");
    let guard = RunningGuard::enter(core, customer);
    Ok((p, (ticket, guard)))
}

/// Records a new purchase (intent) and registers it as running. Returns the purchase,
/// the write's ticket for group commit and its place in the running counts.
pub(super) fn start(
    core: &Rc<Core>,
    owner: &ShardOwner,
    shard: u32,
    req: &PurchaseRequest,
) -> Result<(Purchase, (u64, RunningGuard)), ApiProblem> {
    admit_saga(core, &req.customer)?;
    let purchases = &core.purchases;
    let internal = |what: &str, e: String| {
        tracing::error!(error = %e, "{what}");
        ApiProblem::internal()
    };
    let random = purchases
        .cipher
        .random_hex(8)
        .map_err(|e| internal("no randomness", e.to_string()))?;
    let sealed = purchases
        .cipher
        .seal(
            &serde_json::to_vec(&(req.payment_token.expose(), req.shipping_token.expose()))
                .map_err(|e| internal("cannot encode tokens", e.to_string()))?,
        )
        .map_err(|e| internal("cannot seal tokens", e.to_string()))?;
    let now = now_ms();
    let p = Purchase::intent(
        Membership::of(&core.shared.config).name_id(new_id(shard, &random)),
        req.customer.clone(),
        req.key.clone(),
        now,
        Wanted {
            isbn: req.isbn.as_ref().map(|i| i.as_str().to_string()),
            title: req.title.clone(),
            max_price: req.max_price,
            currency: req.currency.code().to_string(),
            condition: super::api::condition_name(req.condition).to_string(),
        },
        sealed,
    );
    let mut batch = Batch::default();
    batch
        .put_idempotency(
            &req.customer,
            &req.key,
            &IdempotencyRecord {
                purchase_id: p.id.clone(),
                fingerprint: req.fingerprint.clone(),
                created_ms: now,
            },
        )
        .map_err(|e| internal("cannot encode an idempotency record", e.to_string()))?;
    let record =
        serde_json::to_vec(&p).map_err(|e| internal("cannot encode a purchase", e.to_string()))?;
    batch.put_purchase(&p.id, &record, true);
    batch.append_journal(&p.id, 0, br#"{"step":"quoting","note":"intent"}"#);
    let ticket = owner
        .commit
        .write(batch)
        .map_err(|e| internal("cannot record a purchase intent", e.to_string()))?;
    owner.running.borrow_mut().insert(p.id.clone(), Vec::new());
    core.shared
        .metrics
        .inc_counter(core.index, Counter::PurchasesStarted);
    let guard = RunningGuard::enter(core, &req.customer);
    Ok((p, (ticket, guard)))
}

fn answer_problem(p: &ApiProblem) -> Answer {
    Answer {
        status: p.status,
        body: p.body(),
        problem: true,
        location: None,
    }
}

fn answer_outcome(o: &Outcome) -> Answer {
    Answer {
        status: o.status,
        body: serde_json::to_vec(&o.body).unwrap_or_default(),
        problem: false,
        location: None,
    }
}

fn answer_pending(p: &Purchase) -> Answer {
    Answer {
        status: 202,
        body: serde_json::to_vec(&p.pending_body()).unwrap_or_default(),
        problem: false,
        location: Some(format!("/v1/purchases/{}", p.id)),
    }
}
