//! Purchases: `POST /v1/purchases` and `GET /v1/purchases/{id}`.
//!
//! The accepting core validates the request ([`api`]) and hands it over the purchase
//! lane ([`lane`]) to the core that owns the purchase's shard. That core alone reads and
//! writes the shard, decides what the idempotency key means (new, replay, conflict), and
//! runs the saga ([`saga`], over [`world`]). At start each core resumes the unfinished
//! purchases of its shards ([`recover`]) and later expires old ones ([`expire_loop`]).

pub mod api;
pub mod durable;
pub mod lane;
pub mod record;
pub mod saga;
pub mod secrets;
pub mod world;

use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bookbroker_storage::{shard_for, Batch, IdempotencyRecord};
use bytes::Bytes;
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use futures_util::StreamExt as _;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;

use self::api::PurchaseRequest;
use self::lane::{Answer, Job};
use self::record::{Outcome, Purchase, Step, Wanted};
use self::world::{now_ms, RunningGuard, ShardOwner};
use crate::auth::CustomerId;
use crate::cluster::Membership;
use crate::metrics::Counter;
use crate::problem::ApiProblem;
use crate::server::{Body, Core};

/// Purchase ids name their shard, so any core can route a `GET` to the owner:
/// `pur_` + 4 hex digits of shard + `_` + 16 random hex digits. In a cluster
/// (`[cluster]`) the id also names its partition in front, `p2-pur_…`
/// (`crate::cluster::Membership::name_id`), so the load balancer routes it to the node.
pub fn new_id(shard: u32, random: &str) -> String {
    format!("pur_{shard:04x}_{random}")
}

/// The shard an id names, if it is one of ours (with or without a partition prefix).
pub fn shard_of(id: &str) -> Option<u32> {
    let (_, local) = crate::cluster::split_id(id)?;
    let rest = local.strip_prefix("pur_")?;
    let (shard, random) = rest.split_once('_')?;
    if shard.len() != 4 || random.len() != 16 || !random.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(shard, 16).ok()
}

/// The core that owns `shard`.
pub fn owner_core(shard: u32, cores: usize) -> usize {
    shard as usize % cores.max(1)
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

fn to_response(a: Answer) -> Response<Body> {
    let mut r = if a.problem {
        let mut r = Response::new(Full::new(Bytes::from(a.body)));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(ApiProblem::CONTENT_TYPE),
        );
        r
    } else {
        crate::server::json(StatusCode::OK, a.body)
    };
    *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if a.status == 429 {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Some(loc) = a.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    r
}

/// Sends `job` to the core owning `shard` and waits for its answer.
async fn over_the_lane(
    core: &Rc<Core>,
    shard: u32,
    job: Job,
    rx: oneshot::Receiver<Answer>,
) -> Response<Body> {
    let owner = owner_core(shard, core.shared.cores);
    if core.shared.lanes.send(owner, job).is_err() {
        return crate::server::problem(&ApiProblem::service_unavailable(
            "the core owning this purchase has stopped; retry shortly",
        ));
    }
    match rx.await {
        Ok(a) => to_response(a),
        Err(_) => crate::server::problem(&ApiProblem::service_unavailable(
            "the purchase could not be handled; retry with the same key",
        )),
    }
}

/// `POST /v1/purchases` on the accepting core.
pub async fn post(core: &Rc<Core>, req: Request<Incoming>, customer: CustomerId) -> Response<Body> {
    let purchases = &core.purchases;
    let headers = req.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return crate::server::problem(&ApiProblem::unsupported_media_type());
    }
    let key = match api::check_key(headers.get("idempotency-key").map(|v| v.as_bytes())) {
        Ok(k) => k,
        Err(p) => return crate::server::problem(&p),
    };
    // Another node's purchase: say whose, before reading the body or starting anything.
    if let Err(p) = Membership::of(&core.shared.config).check_key(&key) {
        return crate::server::problem(&p);
    }
    let respond_async = api::prefers_async(headers.get("prefer").map(|v| v.as_bytes()));
    let limit = core.shared.config.server.max_body_bytes;
    // A body that trickles in must not hold an in-flight slot for ever.
    let body_timeout_ms = core.shared.config.server.body_timeout_ms;
    let read = crate::net::with_timeout(
        Duration::from_millis(body_timeout_ms),
        Limited::new(req.into_body(), limit).collect(),
    )
    .await;
    let Some(read) = read else {
        return crate::server::problem(&ApiProblem::request_timeout(body_timeout_ms));
    };
    let body = match read {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                return crate::server::problem(&ApiProblem::payload_too_large(limit));
            }
            return crate::server::problem(&ApiProblem::bad_request(
                "the request body could not be read",
            ));
        }
    };
    let request = match api::parse_body(
        customer.as_str(),
        key,
        &body,
        &core.fx,
        &purchases.cipher,
        respond_async,
    ) {
        Ok(r) => r,
        Err(p) => return crate::server::problem(&p),
    };
    let shard = shard_for(&request.customer, &request.key, purchases.shard_count);
    let (reply, rx) = oneshot::channel();
    let job = Job::Post {
        request: Box::new(request),
        shard,
        reply,
    };
    over_the_lane(core, shard, job, rx).await
}

/// `GET /v1/purchases/{id}` on the accepting core.
pub async fn get(core: &Rc<Core>, id: &str, customer: CustomerId) -> Response<Body> {
    if let Err(p) = Membership::of(&core.shared.config).check_id(id) {
        return crate::server::problem(&p);
    }
    let Some(shard) = shard_of(id).filter(|s| *s < core.purchases.shard_count) else {
        return crate::server::problem(&ApiProblem::not_found());
    };
    let (reply, rx) = oneshot::channel();
    let job = Job::Get {
        id: id.to_string(),
        customer: customer.as_str().to_string(),
        shard,
        reply,
    };
    over_the_lane(core, shard, job, rx).await
}

/// Serves this core's inbox until every sender is gone.
pub async fn serve_lane(core: Rc<Core>, inbox: lane::LaneReceiver) {
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

fn shard_owner(core: &Core, shard: u32) -> Result<Rc<ShardOwner>, ApiProblem> {
    core.purchases.shards.get(&shard).cloned().ok_or_else(|| {
        tracing::error!(
            shard,
            core = core.index,
            "a purchase reached a core that does not own its shard"
        );
        ApiProblem::internal()
    })
}

fn load(owner: &ShardOwner, id: &str) -> Result<Option<Purchase>, ApiProblem> {
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

fn handle_get(core: &Core, id: &str, customer: &str, shard: u32) -> Answer {
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

async fn handle_post(core: &Rc<Core>, req: PurchaseRequest, shard: u32) -> Answer {
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
    if let Err(e) = owner.commit.durable(ticket, core).await {
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
    crate::rt::spawn(world::run(
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
fn admit_saga(core: &Core, customer: &str) -> Result<(), ApiProblem> {
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
fn resume(
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
fn start(
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
            condition: api::condition_name(req.condition).to_string(),
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
                    world::run(Rc::clone(&core), owner, p, guard)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_shard() {
        let id = new_id(7, "0123456789abcdef");
        assert_eq!(shard_of(&id), Some(7));
        assert_eq!(shard_of("pur_0007_0123"), None);
        assert_eq!(shard_of("order_1"), None);
        assert_eq!(shard_of("pur_zzzz_0123456789abcdef"), None);
        assert_eq!(shard_of(&format!("p2-{id}")), Some(7));
        assert_eq!(shard_of(&format!("p02-{id}")), None);
        assert_eq!(owner_core(7, 2), 1);
        assert_eq!(owner_core(7, 1), 0);
    }
}
