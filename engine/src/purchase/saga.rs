//! The purchase saga, run by the core that owns the purchase's shard.
//!
//! quote → authorize `max_price` → order the cheapest candidate (the next one on
//! `sold_out`, or on a price that no longer fits) → check the confirmed total → capture
//! it → done. Compensation: void when nothing could be ordered; cancel and void when the
//! capture fails. Each step is written to the shard *before* its external call, and every
//! call carries an idempotency key derived from (customer, client key, step, offer), so
//! recovery after a crash repeats calls rather than duplicating them.
//!
//! A call whose outcome is unknown (timeout, broken connection, 5xx, garbage) is retried
//! with backoff for `purchases.step_retry_ms`; after that the purchase compensates, and
//! compensation retries until it succeeds (the purchase stays `pending` meanwhile),
//! because giving up there could leave money held or an order standing.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bookbroker_protocols::payment::{self, AuthorizeOutcome, AuthorizeRequest, SettleOutcome};
use bookbroker_protocols::{
    ConditionFilter, Currency, DecodeError, Isbn, Money, OrderOutcome, OrderRequest, QuoteQuery,
};
use bookbroker_storage::Batch;
use futures_channel::oneshot;
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

use super::durable::GroupCommit;
use super::record::{Attempt, Candidate, Lowest, Outcome, PlacedOrder, Purchase, Step};
use super::secrets::{Secret, TokenCipher};
use crate::metrics::Counter;
use crate::net::{Endpoint, HttpPool, NetError};
use crate::quotes::{self, QuoteRequest};
use crate::sellers::SellerError;
use crate::server::Core;

/// One shard as its owning core sees it: storage plus the purchases running on it.
pub struct ShardOwner {
    /// The shard with its group commit.
    pub commit: Rc<GroupCommit>,
    /// Purchases in progress, by id, each with the tasks waiting for its end.
    pub running: RefCell<HashMap<String, Vec<oneshot::Sender<()>>>>,
}

/// A core's purchase machinery: the shards it owns and its payment client.
pub struct Purchases {
    /// Owned shards by index.
    pub shards: HashMap<u32, Rc<ShardOwner>>,
    /// Shards in the data directory.
    pub shard_count: u32,
    /// The payment provider, over this core's connections.
    pub payment: HttpPool,
    /// Token encryption and request fingerprints.
    pub cipher: Arc<TokenCipher>,
}

impl Purchases {
    /// Builds the payment client for `url`.
    pub fn payment_pool(url: &str) -> Result<HttpPool, NetError> {
        let endpoint = Endpoint::parse(url)?;
        let tls = if url.starts_with("https://") {
            Some(crate::net::client_config(None)?)
        } else {
            None
        };
        HttpPool::new(vec![endpoint], tls, 4096)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The idempotency key of one external call: a digest of (customer, client key, step,
/// detail), so a repeat of the same step is the same call upstream, and the client's
/// key is not revealed to sellers.
pub fn call_key(p: &Purchase, step: &str, detail: &str) -> String {
    let mut h = Sha256::new();
    for part in [p.customer.as_str(), p.key.as_str(), step, detail] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("bb-{}", &hex::encode(h.finalize())[..40])
}

/// How an external call ended when it did not succeed.
enum Failure {
    /// The peer clearly refused: nothing happened upstream.
    Definite(String),
    /// Unknown: it may or may not have happened. Retrying with the same key tells.
    Unknown(String, Option<Duration>),
}

impl From<SellerError> for Failure {
    fn from(e: SellerError) -> Self {
        match e {
            SellerError::Refused(why) => Failure::Definite(why),
            SellerError::RateLimited { retry_after_ms } => Failure::Unknown(
                "seller busy".into(),
                retry_after_ms.map(Duration::from_millis),
            ),
            other => Failure::Unknown(other.to_string(), None),
        }
    }
}

impl From<NetError> for Failure {
    fn from(e: NetError) -> Self {
        Failure::Unknown(e.to_string(), None)
    }
}

impl From<DecodeError> for Failure {
    fn from(e: DecodeError) -> Self {
        match e {
            DecodeError::Busy { retry_after_ms } => Failure::Unknown(
                "payment provider busy".into(),
                retry_after_ms.map(Duration::from_millis),
            ),
            DecodeError::Remote { .. } => Failure::Definite(e.to_string()),
            DecodeError::Status(s) if s < 500 => Failure::Definite(e.to_string()),
            other => Failure::Unknown(other.to_string(), None),
        }
    }
}

/// A running saga.
pub struct Saga {
    core: Rc<Core>,
    owner: Rc<ShardOwner>,
    p: Purchase,
}

/// What `finish` needs to build a `no_offer_within_limit` or `failed` answer.
fn failed(p: &Purchase, reason: &str) -> Outcome {
    Outcome {
        status: 200,
        body: serde_json::json!({"id": p.id, "status": "failed", "reason": reason}),
    }
}

fn no_offer(p: &Purchase) -> Outcome {
    let mut body = serde_json::json!({"id": p.id, "status": "no_offer_within_limit"});
    if let Some(l) = &p.lowest {
        body["lowest"] =
            serde_json::json!({"seller": l.seller, "total": l.total, "currency": l.currency});
    }
    Outcome { status: 200, body }
}

fn purchased(p: &Purchase, o: &PlacedOrder) -> Outcome {
    Outcome {
        status: 201,
        body: serde_json::json!({
            "id": p.id, "status": "purchased", "seller": o.seller, "offer_id": o.offer_id,
            "price": o.price, "shipping": o.shipping, "total": o.total,
            "currency": p.wanted.currency, "seller_order_id": o.order_id,
        }),
    }
}

impl Saga {
    /// A saga for `p` (new, or found unfinished at start).
    pub fn new(core: Rc<Core>, owner: Rc<ShardOwner>, p: Purchase) -> Saga {
        Saga { core, owner, p }
    }

    fn cfg(&self) -> &crate::config::PurchasesConfig {
        &self.core.shared.config.purchases
    }

    /// Drives the purchase to its end, then wakes everyone waiting for it.
    pub async fn run(mut self) {
        let mut storage_failures = 0u32;
        while self.p.step != Step::Done {
            let step = self.p.step;
            let result = match step {
                Step::Quoting => self.quote().await,
                Step::Authorizing => self.authorize().await,
                Step::Ordering => self.order().await,
                Step::Capturing => self.capture().await,
                Step::Compensating => self.compensate().await,
                Step::Done => Ok(()),
            };
            if let Err(e) = result {
                // Only storage (or a broken setup) ends up here: the step is retried, as
                // recovery would after a restart.
                storage_failures += 1;
                tracing::error!(purchase = %self.p.id, ?step, error = %e, "purchase step failed; retrying");
                glommio::timer::sleep(backoff(storage_failures)).await;
            }
        }
        let waiters = self.owner.running.borrow_mut().remove(&self.p.id);
        for w in waiters.into_iter().flatten() {
            let _ = w.send(());
        }
    }

    /// Writes the record (and a journal entry). `sync` waits for the disk (group commit).
    async fn persist(&mut self, note: &str, sync: bool) -> Result<(), String> {
        self.p.journal_seq += 1;
        let record = serde_json::to_vec(&self.p).map_err(|e| e.to_string())?;
        let entry = serde_json::to_vec(&serde_json::json!({
            "at_ms": now_ms(), "step": self.p.step, "note": note,
        }))
        .map_err(|e| e.to_string())?;
        let mut batch = Batch::default();
        let done = self.p.step == Step::Done;
        batch.put_purchase(&self.p.id, &record, !done);
        batch.append_journal(&self.p.id, self.p.journal_seq, &entry);
        if done {
            let keep = self.cfg().key_retention_hours.saturating_mul(3_600_000);
            batch
                .expire_at(&self.p.id, &self.p.customer, &self.p.key, now_ms() + keep)
                .map_err(|e| e.to_string())?;
        }
        let ticket = self.owner.commit.write(batch).map_err(|e| e.to_string())?;
        if sync {
            self.owner.commit.durable(ticket, &self.core).await?;
        }
        Ok(())
    }

    async fn finish(&mut self, outcome: Outcome, note: &str) -> Result<(), String> {
        tracing::info!(purchase = %self.p.id, status = %outcome.body["status"], "purchase finished");
        let counter = if outcome.status == 201 {
            Counter::PurchasesPurchased
        } else {
            Counter::PurchasesNotPurchased
        };
        self.core
            .shared
            .metrics
            .inc_counter(self.core.index, counter);
        self.p.outcome = Some(outcome);
        self.p.step = Step::Done;
        // The tokens are no longer needed: erase them.
        self.p.sealed_tokens = None;
        self.persist(note, false).await
    }

    async fn compensate_with(&mut self, outcome: Outcome, note: &str) -> Result<(), String> {
        self.p.compensation = Some(outcome);
        self.p.step = Step::Compensating;
        self.persist(note, false).await
    }

    fn tokens(&self) -> Result<(Secret, Secret), String> {
        let sealed = self
            .p
            .sealed_tokens
            .as_deref()
            .ok_or_else(|| "tokens were erased before the purchase ended".to_string())?;
        let plain = self
            .core
            .purchases
            .cipher
            .open(sealed)
            .map_err(|e| e.to_string())?;
        let pair: (String, String) =
            serde_json::from_slice(&plain).map_err(|_| "sealed tokens are damaged".to_string())?;
        Ok((Secret::new(pair.0), Secret::new(pair.1)))
    }

    /// Calls `f` until it succeeds, fails definitely, or (unless `forever`) the step's
    /// retry time is over.
    async fn retry<T, F, Fut>(&self, what: &str, forever: bool, mut f: F) -> Result<T, Failure>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let until = Instant::now() + Duration::from_millis(self.cfg().step_retry_ms);
        let mut attempt = 0u32;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(Failure::Definite(why)) => return Err(Failure::Definite(why)),
                Err(Failure::Unknown(why, wait)) => {
                    attempt += 1;
                    let pause = wait
                        .unwrap_or_else(|| backoff(attempt))
                        .min(Duration::from_secs(5));
                    if !forever && Instant::now() + pause >= until {
                        tracing::warn!(purchase = %self.p.id, what, %why, attempt, "giving up on a purchase step");
                        return Err(Failure::Unknown(why, None));
                    }
                    tracing::debug!(purchase = %self.p.id, what, %why, attempt, "retrying a purchase step");
                    glommio::timer::sleep(pause).await;
                }
            }
        }
    }

    fn step_timeout(&self) -> Duration {
        Duration::from_millis(self.cfg().step_timeout_ms)
    }

    async fn quote(&mut self) -> Result<(), String> {
        let w = &self.p.wanted;
        let query = match (&w.isbn, &w.title) {
            (Some(i), _) => QuoteQuery::Isbn(Isbn::parse(i).map_err(|e| e.to_string())?),
            (None, Some(t)) => QuoteQuery::Title(t.clone()),
            (None, None) => return Err("purchase without isbn or title".into()),
        };
        let currency = Currency::parse(&w.currency).map_err(|e| e.to_string())?;
        let req = QuoteRequest {
            query,
            currency,
            condition: ConditionFilter::parse(&w.condition).unwrap_or(ConditionFilter::Any),
        };
        let deadline =
            Instant::now() + Duration::from_millis(self.core.shared.config.quotes.deadline_ms);
        let results = quotes::fan_out(&self.core, &req.query, deadline).await;
        let names: Vec<&str> = self.core.sellers.iter().map(|s| &*s.name).collect();
        let mut landed = Vec::new();
        let mut any_failed = false;
        for r in &results {
            let name = names.get(r.seller).copied().unwrap_or("?");
            match &r.outcome {
                Ok(offers) => {
                    if quotes::land(&req, name, offers, &self.core.fx, &mut landed).is_err() {
                        any_failed = true;
                    }
                }
                Err(_) => any_failed = true,
            }
        }
        landed.sort_by(|a, b| {
            a.total
                .cmp(&b.total)
                .then_with(|| a.seller.cmp(b.seller))
                .then_with(|| a.offer.offer_id.cmp(&b.offer.offer_id))
        });
        let max = self.p.wanted.max_price;
        let candidates: Vec<Candidate> = landed
            .iter()
            .filter(|l| l.total <= max)
            .map(|l| Candidate {
                seller: l.seller.to_string(),
                offer_id: l.offer.offer_id.clone(),
                seller_price: l.offer.price,
                seller_shipping: l.offer.shipping,
                seller_currency: l.offer.currency.code().to_string(),
                price: l.price,
                shipping: l.shipping,
                total: l.total,
            })
            .collect();
        self.p.lowest = landed.iter().find(|l| l.total > max).map(|l| Lowest {
            seller: l.seller.to_string(),
            total: l.total,
            currency: self.p.wanted.currency.clone(),
        });
        if landed.is_empty() {
            let outcome = if any_failed {
                failed(&self.p, "sellers_unavailable")
            } else {
                Outcome {
                    status: 200,
                    body: serde_json::json!({"id": self.p.id, "status": "not_found"}),
                }
            };
            return self.finish(outcome, "no offers").await;
        }
        if candidates.is_empty() {
            if let Some(cheapest) = landed.first() {
                self.p.lowest = Some(Lowest {
                    seller: cheapest.seller.to_string(),
                    total: cheapest.total,
                    currency: self.p.wanted.currency.clone(),
                });
            }
            let outcome = no_offer(&self.p);
            return self.finish(outcome, "nothing within the limit").await;
        }
        self.p.candidates = candidates;
        self.p.step = Step::Authorizing;
        // Synced: recovery must order from exactly this list, never from a new quote.
        self.persist("candidates chosen", true).await
    }

    async fn authorize_call(&self) -> Result<AuthorizeOutcome, Failure> {
        let (payment_token, _) = self.tokens().map_err(|e| Failure::Unknown(e, None))?;
        let currency = Currency::parse(&self.p.wanted.currency)
            .map_err(|e| Failure::Definite(e.to_string()))?;
        let req = AuthorizeRequest {
            payment_token: payment_token.expose().to_string(),
            amount: Money::new(self.p.wanted.max_price, currency),
        };
        let key = call_key(&self.p, "authorize", "");
        let timeout = self.step_timeout();
        let purchases = &self.core.purchases;
        self.retry("authorize", false, || async {
            let reply = purchases
                .payment
                .send(&payment::encode_authorize(&req, &key), timeout, 0)
                .await?;
            Ok(payment::decode_authorize(reply.as_reply())?)
        })
        .await
    }

    async fn authorize(&mut self) -> Result<(), String> {
        match self.authorize_call().await {
            Ok(AuthorizeOutcome::Authorized { id, .. }) => {
                self.p.authorization = Some(id);
                self.p.step = Step::Ordering;
                self.persist("authorized", false).await
            }
            Ok(AuthorizeOutcome::Declined { .. }) => {
                let outcome = Outcome {
                    status: 402,
                    body: serde_json::json!({"id": self.p.id, "status": "payment_declined"}),
                };
                self.finish(outcome, "declined").await
            }
            Err(Failure::Definite(why)) => {
                tracing::warn!(purchase = %self.p.id, %why, "the payment provider refused the authorization");
                let outcome = failed(&self.p, "payment_refused");
                self.finish(outcome, "authorization refused").await
            }
            Err(Failure::Unknown(..)) => {
                // It may exist upstream: compensation finds out and voids it.
                self.p.auth_unresolved = true;
                let outcome = failed(&self.p, "payment_unavailable");
                self.compensate_with(outcome, "authorization unresolved")
                    .await
            }
        }
    }

    fn order_request(&self, a: &Attempt) -> Result<(OrderRequest, usize), String> {
        let c = self
            .p
            .candidates
            .get(a.candidate)
            .ok_or_else(|| "attempt names no candidate".to_string())?;
        let seller = self
            .core
            .sellers
            .iter()
            .position(|s| *s.name == *c.seller)
            .ok_or_else(|| format!("seller {} is no longer configured", c.seller))?;
        let currency = Currency::parse(&c.seller_currency).map_err(|e| e.to_string())?;
        let (_, shipping_token) = self.tokens()?;
        let detail = format!("{}\u{0}{}\u{0}{}", c.seller, c.offer_id, a.expected_total);
        Ok((
            OrderRequest {
                offer_id: c.offer_id.clone(),
                expected_total: Money::new(a.expected_total, currency),
                idempotency_key: call_key(&self.p, "order", &detail),
                shipping_token: shipping_token.expose().to_string(),
            },
            seller,
        ))
    }

    async fn order_call(&self, a: &Attempt, forever: bool) -> Result<OrderOutcome, Failure> {
        let (req, seller) = self.order_request(a).map_err(Failure::Definite)?;
        let timeout = self.step_timeout();
        let client = &self.core.sellers[seller];
        self.retry("order", forever, || async {
            Ok(client.order(&req, timeout).await?)
        })
        .await
    }

    /// The customer-currency amounts of a confirmed seller total.
    fn landed_total(&self, c: &Candidate, seller_total: i64) -> Result<(i64, i64, i64), String> {
        if seller_total == c.seller_price + c.seller_shipping {
            return Ok((c.price, c.shipping, c.total));
        }
        // The seller changed its total: treat the change as a change of price, shipping
        // staying as quoted, and convert each part on its own as quotes do.
        let from = Currency::parse(&c.seller_currency).map_err(|e| e.to_string())?;
        let to = Currency::parse(&self.p.wanted.currency).map_err(|e| e.to_string())?;
        let fx = &self.core.fx;
        let part = |minor: i64| {
            fx.convert(Money::new(minor, from), to)
                .map(|m| m.minor)
                .map_err(|e| e.to_string())
        };
        let shipping = part(c.seller_shipping.min(seller_total))?;
        let price = part(seller_total - c.seller_shipping.min(seller_total))?;
        Ok((price, shipping, price + shipping))
    }

    fn note_lowest(&mut self, seller: &str, total: i64) {
        if self.p.lowest.as_ref().is_none_or(|l| total < l.total) {
            self.p.lowest = Some(Lowest {
                seller: seller.to_string(),
                total,
                currency: self.p.wanted.currency.clone(),
            });
        }
    }

    async fn order(&mut self) -> Result<(), String> {
        let attempt = match self.p.attempt.clone() {
            Some(a) => a,
            None => {
                let next = self.p.skipped;
                let Some(c) = self.p.candidates.get(next) else {
                    // Every candidate sold out or no longer fits: release the money.
                    let outcome = if self.p.lowest.is_some() {
                        no_offer(&self.p)
                    } else {
                        failed(&self.p, "sold_out")
                    };
                    return self.compensate_with(outcome, "no candidate left").await;
                };
                let a = Attempt {
                    candidate: next,
                    expected_total: c.seller_price + c.seller_shipping,
                };
                self.p.attempt = Some(a.clone());
                self.persist("ordering", false).await?;
                a
            }
        };
        let c = self
            .p
            .candidates
            .get(attempt.candidate)
            .cloned()
            .ok_or_else(|| "attempt names no candidate".to_string())?;
        match self.order_call(&attempt, false).await {
            Ok(OrderOutcome::Ordered { order_id, total }) => {
                let (price, shipping, landed) = self.landed_total(&c, total.minor)?;
                let placed = PlacedOrder {
                    seller: c.seller.clone(),
                    offer_id: c.offer_id.clone(),
                    order_id,
                    price,
                    shipping,
                    total: landed,
                };
                if landed > self.p.wanted.max_price {
                    // The seller confirmed more than the limit: undo this order (until the
                    // seller confirms) and try the next candidate.
                    self.p.order = Some(placed);
                    self.persist("confirmed above the limit", false).await?;
                    self.cancel_order().await?;
                    self.note_lowest(&c.seller, landed);
                    self.p.order = None;
                    self.p.order_cancelled = false;
                    self.p.attempt = None;
                    self.p.skipped += 1;
                    return self
                        .persist("cancelled an order above the limit", false)
                        .await;
                }
                self.p.order = Some(placed);
                self.p.attempt = None;
                self.p.step = Step::Capturing;
                self.persist("ordered", false).await
            }
            Ok(OrderOutcome::SoldOut) => {
                self.p.attempt = None;
                self.p.skipped += 1;
                self.persist("sold out", false).await
            }
            Ok(OrderOutcome::PriceChanged { total }) => {
                let (_, _, landed) = self.landed_total(&c, total.minor)?;
                if landed <= self.p.wanted.max_price && total.minor != attempt.expected_total {
                    // Still within the limit: order again at the new price.
                    self.p.attempt = Some(Attempt {
                        candidate: attempt.candidate,
                        expected_total: total.minor,
                    });
                    return self.persist("price changed within the limit", false).await;
                }
                self.note_lowest(&c.seller, landed);
                self.p.attempt = None;
                self.p.skipped += 1;
                self.persist("price changed beyond the limit", false).await
            }
            Err(Failure::Definite(why)) => {
                tracing::warn!(purchase = %self.p.id, seller = %c.seller, %why, "seller refused the order");
                self.p.attempt = None;
                self.p.skipped += 1;
                self.persist("order refused", false).await
            }
            Err(Failure::Unknown(..)) => {
                self.p.order_unresolved = Some(attempt);
                self.p.attempt = None;
                let outcome = failed(&self.p, "seller_unavailable");
                self.compensate_with(outcome, "order unresolved").await
            }
        }
    }

    async fn settle_call(
        &self,
        what: &str,
        forever: bool,
        make: impl Fn() -> bookbroker_protocols::http::HttpRequest,
    ) -> Result<SettleOutcome, Failure> {
        let timeout = self.step_timeout();
        let purchases = &self.core.purchases;
        let make = &make;
        self.retry(what, forever, || async move {
            let reply = purchases.payment.send(&make(), timeout, 0).await?;
            Ok(payment::decode_settle(reply.as_reply())?)
        })
        .await
    }

    async fn capture(&mut self) -> Result<(), String> {
        let (Some(auth), Some(order)) = (self.p.authorization.clone(), self.p.order.clone()) else {
            return Err("capture without an authorization and an order".into());
        };
        let key = call_key(&self.p, "capture", "");
        let outcome = self
            .settle_call("capture", false, || {
                payment::encode_capture(&auth, order.total, &key)
            })
            .await;
        match outcome {
            Ok(SettleOutcome::Done { .. }) => {
                let outcome = purchased(&self.p, &order);
                self.finish(outcome, "captured").await
            }
            Ok(SettleOutcome::Refused { error }) => {
                tracing::warn!(purchase = %self.p.id, %error, "capture refused; compensating");
                let outcome = failed(&self.p, "capture_refused");
                self.compensate_with(outcome, "capture refused").await
            }
            Err(Failure::Definite(why)) | Err(Failure::Unknown(why, _)) => {
                tracing::warn!(purchase = %self.p.id, %why, "capture failed; compensating");
                // Compensation voids first: a void refused as `already_captured` means
                // the capture did happen, and the purchase succeeded after all.
                let outcome = failed(&self.p, "payment_unavailable");
                self.compensate_with(outcome, "capture unresolved").await
            }
        }
    }

    async fn cancel_order(&mut self) -> Result<(), String> {
        let Some(order) = self.p.order.clone() else {
            return Ok(());
        };
        if self.p.order_cancelled {
            return Ok(());
        }
        let Some(seller) = self.core.sellers.iter().find(|s| *s.name == *order.seller) else {
            return Err(format!("seller {} is no longer configured", order.seller));
        };
        let timeout = self.step_timeout();
        let result = self
            .retry("cancel", true, || async {
                match seller.cancel(&order.order_id, timeout).await {
                    Ok(()) => Ok(()),
                    // A refusal of a cancel is not final for us: an order must not
                    // stay standing, so keep asking (and say so in the log).
                    Err(SellerError::Refused(why)) => Err(Failure::Unknown(why, None)),
                    Err(e) => Err(e.into()),
                }
            })
            .await;
        match result {
            Ok(()) => {
                self.p.order_cancelled = true;
                self.persist("order cancelled", false).await
            }
            Err(Failure::Definite(why)) | Err(Failure::Unknown(why, _)) => Err(why),
        }
    }

    async fn compensate(&mut self) -> Result<(), String> {
        if self.p.auth_unresolved {
            // Repeat the authorization (same key) until the provider says what happened.
            let outcome = loop {
                match self.authorize_call().await {
                    Err(Failure::Unknown(..)) => continue,
                    other => break other,
                }
            };
            if let Ok(AuthorizeOutcome::Authorized { id, .. }) = outcome {
                self.p.authorization = Some(id);
            }
            self.p.auth_unresolved = false;
            self.persist("authorization resolved", false).await?;
        }
        if let Some(attempt) = self.p.order_unresolved.clone() {
            let outcome = loop {
                match self.order_call(&attempt, true).await {
                    Err(Failure::Unknown(..)) => continue,
                    other => break other,
                }
            };
            if let Ok(OrderOutcome::Ordered { order_id, total }) = outcome {
                let c = self
                    .p
                    .candidates
                    .get(attempt.candidate)
                    .cloned()
                    .ok_or_else(|| "attempt names no candidate".to_string())?;
                let (price, shipping, landed) = self.landed_total(&c, total.minor)?;
                self.p.order = Some(PlacedOrder {
                    seller: c.seller,
                    offer_id: c.offer_id,
                    order_id,
                    price,
                    shipping,
                    total: landed,
                });
            }
            self.p.order_unresolved = None;
            self.persist("order resolved", false).await?;
        }
        if let (Some(auth), false) = (self.p.authorization.clone(), self.p.voided) {
            let key = call_key(&self.p, "void", "");
            let result = self
                .settle_call("void", true, || payment::encode_void(&auth, &key))
                .await;
            match result {
                Ok(SettleOutcome::Refused { error }) if error == "already_captured" => {
                    if let Some(order) = self.p.order.clone() {
                        if !self.p.order_cancelled {
                            let outcome = purchased(&self.p, &order);
                            return self.finish(outcome, "capture had succeeded").await;
                        }
                    }
                    tracing::error!(purchase = %self.p.id, "authorization captured without a standing order; needs a refund");
                }
                Ok(_) => {}
                Err(Failure::Definite(why)) | Err(Failure::Unknown(why, _)) => {
                    tracing::error!(purchase = %self.p.id, %why, "void refused");
                }
            }
            self.p.voided = true;
            self.persist("authorization voided", false).await?;
        }
        self.cancel_order().await?;
        let outcome = self
            .p
            .compensation
            .clone()
            .unwrap_or_else(|| failed(&self.p, "compensated"));
        self.finish(outcome, "compensated").await
    }
}

/// Exponential backoff with jitter: about 50 ms, 100 ms, … up to 2 s.
fn backoff(attempt: u32) -> Duration {
    let base = 50u64
        .saturating_mul(1 << attempt.min(6).saturating_sub(1))
        .min(2000);
    let jitter = rand::thread_rng().gen_range(0..=base / 2);
    Duration::from_millis(base / 2 + jitter + base / 4)
}
