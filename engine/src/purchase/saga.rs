//! The purchase saga: a state machine over one [`Purchase`] record, run by the core that
//! owns the purchase's shard.
//!
//! quote → authorize `max_price` → order the cheapest candidate (the next one on
//! `sold_out`, a refusal, or a price that no longer fits) → check the confirmed total →
//! capture it → done. Compensation: void when nothing could be ordered; void and cancel
//! when the capture is refused.
//!
//! The saga talks to the world only through [`Partners`], so the same code runs on a
//! core (see [`super::world`]) and against a scripted fake in the unit tests below.
//!
//! Three rules carry the money invariants:
//!
//! * **Unknown is unknown.** A call that got no definite answer (timeout, broken
//!   connection, 5xx, "this key is still in progress", an answer we cannot read) may or
//!   may not have happened upstream. It is repeated with the same idempotency key, after
//!   a pause, until the partner answers definitely; the saga never moves to another
//!   offer and never compensates while a call's fate is open. After
//!   `purchases.step_retry_ms` it keeps repeating in the background with longer pauses
//!   (the purchase stays `pending`, and is counted as stuck).
//! * **Confirmations are checked, not trusted.** A confirmed total is converted from the
//!   currency it is stated in; a total that is not positive, cannot be read or converted,
//!   or lands above the limit is not a price: that order is cancelled and the next
//!   candidate tried. The amount captured is re-checked against the limit right before
//!   the capture.
//! * **Write first, then call.** Each step is written to the shard before its external
//!   call, and every call carries a key derived from (customer, client key, step, offer),
//!   so recovery after a crash repeats calls rather than duplicating them. A state is
//!   only taken as reached once its write succeeded.

// Money is computed here: every sum and index is checked (docs/style.md).
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use bookbroker_protocols::payment::{AuthorizeOutcome, AuthorizeRequest, SettleOutcome};
use bookbroker_protocols::{Currency, FxTable, Money, OrderRequest};
use rand::Rng as _;
use sha2::{Digest as _, Sha256};

use super::record::{
    Attempt, Candidate, Lowest, OrderRef, Outcome, PlacedOrder, Purchase, Step, Wanted,
};
use super::secrets::Secret;

/// How a partner call ended when it gave no answer the saga can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The partner clearly refused (a 4xx, an `ERR`): nothing happened upstream. The
    /// fault is upstream and asking again does not help.
    #[error("refused: {0}")]
    Refused(String),
    /// No definite answer: timeout, broken connection, 5xx, key in progress, an answer
    /// we cannot read. It may or may not have happened upstream; asking again with the
    /// same key tells.
    #[error("outcome unknown: {why}")]
    Unknown {
        /// What happened.
        why: String,
        /// How long the partner asked us to wait, when it said.
        retry_after: Option<Duration>,
    },
}

/// A partner's definite "no" to a purchase call (a decline, an `ERR`, a 4xx), as
/// [`Saga::until_definite`] ends with it. Upstream's decision, not a fault of ours or
/// of the network: asking again with the same key would get the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the partner: {0}")]
pub struct Refusal(pub String);

/// A seller's answer to an order, in the saga's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderReply {
    /// Placed; `total` as the seller stated it (any currency, any sign: checked later).
    Ordered {
        /// The seller's order id.
        order_id: String,
        /// The confirmed total as stated.
        total: Money,
    },
    /// Placed, but the confirmed total cannot be read: the order must be undone.
    Unconfirmed {
        /// The seller's order id.
        order_id: String,
        /// What is wrong with the total.
        reason: String,
    },
    /// Nothing left.
    SoldOut,
    /// The price moved; nothing was placed.
    PriceChanged {
        /// The new total as stated.
        total: Money,
    },
}

/// Why a step could not run. Always our side, never a partner's answer; the step is
/// retried after a pause, because giving up could leave money held or an order standing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SagaError {
    /// Our storage failed to write or sync the record.
    #[error("storage: {0}")]
    Storage(String),
    /// The sealed payment and shipping tokens cannot be opened (the token key changed or
    /// `token.key` was lost). Restoring the key lets the purchase go on.
    #[error("the sealed tokens cannot be opened: {0}")]
    Secrets(String),
    /// The record contradicts itself or the configuration (a seller no longer
    /// configured, a currency we do not know).
    #[error("the purchase record cannot be followed: {0}")]
    Inconsistent(String),
}

impl SagaError {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SagaError::Storage(_) => "storage",
            SagaError::Secrets(_) => "secrets",
            SagaError::Inconsistent(_) => "inconsistent",
        }
    }
}

/// A partner's answer that makes no sense as money: the partner's fault, never a price.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BrokenAnswer(pub String);

/// What a quote round found.
#[derive(Debug, Clone, Default)]
pub struct Quotes {
    /// Every offer, landed in the customer's currency, cheapest first.
    pub landed: Vec<Candidate>,
    /// Whether some seller did not answer (or answered nonsense).
    pub any_failed: bool,
}

/// Something the saga reports for metrics and operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A call's outcome was unknown; it is repeated with the same key.
    CallRepeated,
    /// An order confirmation made no sense; the order is cancelled.
    BrokenConfirmation,
    /// A step failed on our side and is retried.
    StepError,
    /// The purchase cannot move on by itself right now (true) or can again (false).
    Stuck(bool),
    /// The purchase ended; `purchased` when the customer was charged.
    Finished {
        /// Whether it ended `purchased`.
        purchased: bool,
    },
}

/// Everything the saga does to the world: partners, storage, time. Implemented over a
/// core by [`super::world::CoreWorld`] and by a scripted fake in tests.
///
/// Every partner call takes `attempt`, the number of times the same call was made
/// before (0 the first time), so an implementation can allow a repeat more time.
#[allow(async_fn_in_trait)] // Single-threaded: no `Send` bound is wanted.
pub trait Partners {
    /// Asks every seller for offers for `wanted`.
    async fn quote(&self, wanted: &Wanted) -> Result<Quotes, SagaError>;
    /// `POST /v1/authorizations` with `key`.
    async fn authorize(
        &self,
        req: &AuthorizeRequest,
        key: &str,
        attempt: u32,
    ) -> Result<AuthorizeOutcome, CallError>;
    /// Places an order at `seller`.
    async fn order(
        &self,
        seller: &str,
        req: &OrderRequest,
        attempt: u32,
    ) -> Result<OrderReply, CallError>;
    /// Cancels `order_id` at `seller` (repeating a cancel is harmless).
    async fn cancel(&self, seller: &str, order_id: &str, attempt: u32) -> Result<(), CallError>;
    /// Captures `amount` (customer's currency) of `authorization` with `key`.
    async fn capture(
        &self,
        authorization: &str,
        amount: i64,
        key: &str,
        attempt: u32,
    ) -> Result<SettleOutcome, CallError>;
    /// Voids `authorization` with `key`.
    async fn void(
        &self,
        authorization: &str,
        key: &str,
        attempt: u32,
    ) -> Result<SettleOutcome, CallError>;
    /// Writes the record; with `sync`, waits until it is on disk.
    async fn save(&self, p: &Purchase, note: &str, sync: bool) -> Result<(), SagaError>;
    /// Waits (always yields: a saga must never hold its core).
    async fn sleep(&self, pause: Duration);
    /// Opens the sealed (payment token, shipping token).
    fn open_tokens(&self, sealed: &str) -> Result<(Secret, Secret), SagaError>;
    /// The FX table confirmations are converted with.
    fn fx(&self) -> &FxTable;
    /// Reports an event.
    fn observe(&self, event: Event);
}

/// The saga's knobs.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long unknown outcomes are retried with short pauses before the purchase
    /// counts as stuck and retries with long ones (`purchases.step_retry_ms`).
    pub step_retry: Duration,
    /// How many times one candidate may be re-ordered at a changed price within the
    /// limit before it is skipped (`purchases.max_reorders`).
    pub max_reorders: u32,
}

/// Longest pause between repeats while the step is young.
const FOREGROUND_PAUSE_MAX: Duration = Duration::from_secs(2);
/// Longest pause between repeats once the step has been unresolved for `step_retry`.
const BACKGROUND_PAUSE_MAX: Duration = Duration::from_secs(30);
/// Longest pause after a failure on our side.
const ERROR_PAUSE_MAX: Duration = Duration::from_secs(60);

/// The idempotency key of one external call: a digest of (customer, client key, step,
/// detail), so a repeat of the same step is the same call upstream, and the client's
/// key is not revealed to partners.
pub fn call_key(p: &Purchase, step: &str, detail: &str) -> String {
    let mut h = Sha256::new();
    for part in [p.customer.as_str(), p.key.as_str(), step, detail] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    format!("bb-{}", &hex::encode(h.finalize())[..40])
}

fn failed(p: &Purchase, reason: &str) -> Outcome {
    Outcome {
        status: 200,
        body: serde_json::json!({"id": p.id, "status": "failed", "reason": reason}),
    }
}

fn no_offer(p: &Purchase) -> Outcome {
    let mut body = serde_json::json!({"id": p.id, "status": "no_offer_within_limit"});
    if let (Some(l), Some(fields)) = (&p.lowest, body.as_object_mut()) {
        fields.insert(
            "lowest".into(),
            serde_json::json!({"seller": l.seller, "total": l.total, "currency": l.currency}),
        );
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

/// A confirmed total in the customer's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Landed {
    price: i64,
    shipping: i64,
    total: i64,
}

/// A running saga over `world`.
pub struct Saga<'w, W: Partners> {
    world: &'w W,
    settings: Settings,
    p: Purchase,
    stuck: Cell<bool>,
}

impl<'w, W: Partners> Saga<'w, W> {
    /// A saga for `p` (new, or found unfinished at start).
    pub fn new(world: &'w W, settings: Settings, p: Purchase) -> Saga<'w, W> {
        Saga {
            world,
            settings,
            p,
            stuck: Cell::new(false),
        }
    }

    /// Drives the purchase to its end and returns the final record.
    pub async fn run(mut self) -> Purchase {
        let mut failures = 0u32;
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
            match result {
                Ok(()) if failures > 0 => {
                    failures = 0;
                    self.set_stuck(false);
                }
                Ok(()) => {}
                Err(e) => {
                    // Our side failed (storage, tokens, a record we cannot follow). The
                    // step is retried, as recovery after a restart would, with a pause
                    // that grows so a lasting fault costs nothing but a log line.
                    failures = failures.saturating_add(1);
                    self.world.observe(Event::StepError);
                    self.set_stuck(true);
                    tracing::error!(purchase = %self.p.id, ?step, kind = e.kind(), error = %e,
                        "purchase step failed on our side; retrying");
                    self.world.sleep(backoff(failures, ERROR_PAUSE_MAX)).await;
                }
            }
        }
        self.set_stuck(false);
        self.p
    }

    fn set_stuck(&self, stuck: bool) {
        if self.stuck.replace(stuck) != stuck {
            self.world.observe(Event::Stuck(stuck));
        }
    }

    /// Writes `next` and only then takes it as the current state.
    async fn commit(
        &mut self,
        mut next: Purchase,
        note: &str,
        sync: bool,
    ) -> Result<(), SagaError> {
        next.journal_seq = next.journal_seq.saturating_add(1);
        self.world.save(&next, note, sync).await?;
        self.p = next;
        Ok(())
    }

    /// Ends the purchase with `outcome`, from state `next`. Until the final record is
    /// written the purchase is not done (a failed write is retried by [`Saga::run`]).
    async fn finish_from(
        &mut self,
        mut next: Purchase,
        outcome: Outcome,
        note: &str,
    ) -> Result<(), SagaError> {
        let is_purchased = outcome.status == 201;
        tracing::info!(
            purchase = %next.id,
            status = %outcome.body.get("status").unwrap_or(&serde_json::Value::Null),
            "purchase finished"
        );
        next.outcome = Some(outcome);
        next.step = Step::Done;
        // The tokens are no longer needed: erase them.
        next.sealed_tokens = None;
        self.commit(next, note, false).await?;
        self.world.observe(Event::Finished {
            purchased: is_purchased,
        });
        Ok(())
    }

    async fn finish(&mut self, outcome: Outcome, note: &str) -> Result<(), SagaError> {
        self.finish_from(self.p.clone(), outcome, note).await
    }

    /// Moves to compensation, which ends with `outcome`.
    async fn compensate_with(&mut self, outcome: Outcome, note: &str) -> Result<(), SagaError> {
        let mut next = self.p.clone();
        next.compensation = Some(outcome);
        next.step = Step::Compensating;
        next.attempt = None;
        self.commit(next, note, false).await
    }

    fn tokens(&self) -> Result<(Secret, Secret), SagaError> {
        let sealed = self.p.sealed_tokens.as_deref().ok_or_else(|| {
            SagaError::Inconsistent("tokens were erased before the purchase ended".into())
        })?;
        self.world.open_tokens(sealed)
    }

    fn customer_currency(&self) -> Result<Currency, SagaError> {
        Currency::parse(&self.p.wanted.currency).map_err(|e| SagaError::Inconsistent(e.to_string()))
    }

    /// The most the customer may be charged: the limit, and never more than was held.
    fn limit(&self) -> i64 {
        match self.p.authorized_amount {
            Some(held) => self.p.wanted.max_price.min(held),
            None => self.p.wanted.max_price,
        }
    }

    /// Repeats `call` until the partner answers definitely: `Ok` with the answer, or
    /// `Err` with a refusal. An unknown outcome is never returned. `call` gets the number
    /// of the attempt (0 first), so a partner that is always slower than our timeout can
    /// be given more time on each repeat.
    async fn until_definite<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, Refusal>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let mut attempt = 0u32;
        let mut waited = Duration::ZERO;
        loop {
            match call(attempt).await {
                Ok(v) => {
                    self.set_stuck(false);
                    return Ok(v);
                }
                Err(CallError::Refused(why)) => {
                    self.set_stuck(false);
                    return Err(Refusal(why));
                }
                Err(CallError::Unknown { why, retry_after }) => {
                    attempt = attempt.saturating_add(1);
                    self.world.observe(Event::CallRepeated);
                    let background = waited >= self.settings.step_retry;
                    if background && !self.stuck.get() {
                        tracing::warn!(purchase = %self.p.id, what, %why, attempt,
                            "a purchase call's outcome is still unknown; repeating it in the background");
                        self.set_stuck(true);
                    } else {
                        tracing::debug!(purchase = %self.p.id, what, %why, attempt,
                            "a purchase call's outcome is unknown; repeating it with the same key");
                    }
                    let cap = if background {
                        BACKGROUND_PAUSE_MAX
                    } else {
                        FOREGROUND_PAUSE_MAX
                    };
                    let pause = retry_after
                        .unwrap_or_else(|| backoff(attempt, cap))
                        .min(cap);
                    self.world.sleep(pause).await;
                    waited = waited.saturating_add(pause);
                }
            }
        }
    }

    async fn quote(&mut self) -> Result<(), SagaError> {
        let quotes = self.world.quote(&self.p.wanted).await?;
        let max = self.p.wanted.max_price;
        let mut next = self.p.clone();
        let lowest = |c: &Candidate| Lowest {
            seller: c.seller.clone(),
            total: c.total,
            currency: self.p.wanted.currency.clone(),
        };
        let Some(cheapest) = quotes.landed.first() else {
            let outcome = if quotes.any_failed {
                failed(&next, "sellers_unavailable")
            } else {
                Outcome {
                    status: 200,
                    body: serde_json::json!({"id": next.id, "status": "not_found"}),
                }
            };
            return self.finish_from(next, outcome, "no offers").await;
        };
        let candidates: Vec<Candidate> = quotes
            .landed
            .iter()
            .filter(|c| c.total > 0 && c.total <= max)
            .cloned()
            .collect();
        if candidates.is_empty() {
            next.lowest = Some(lowest(cheapest));
            let outcome = no_offer(&next);
            return self
                .finish_from(next, outcome, "nothing within the limit")
                .await;
        }
        next.lowest = quotes.landed.iter().find(|c| c.total > max).map(lowest);
        next.candidates = candidates;
        next.step = Step::Authorizing;
        // Synced: recovery must order from exactly this list, never from a new quote.
        self.commit(next, "candidates chosen", true).await
    }

    async fn authorize(&mut self) -> Result<(), SagaError> {
        // Without the tokens the call cannot be repeated, and a crash may have sent it
        // already: the purchase waits (stuck) rather than guess.
        let (payment_token, _) = self.tokens()?;
        let currency = self.customer_currency()?;
        let req = AuthorizeRequest {
            payment_token: payment_token.expose().to_string(),
            amount: Money::new(self.p.wanted.max_price, currency),
        };
        let key = call_key(&self.p, "authorize", "");
        let world = self.world;
        let answer = self
            .until_definite("authorize", |n| world.authorize(&req, &key, n))
            .await;
        let mut next = self.p.clone();
        match answer {
            Ok(AuthorizeOutcome::Authorized { id, amount }) => {
                next.authorization = Some(id);
                if amount.currency != currency || amount.minor <= 0 {
                    // A hold we cannot use: release it, charge nothing.
                    tracing::warn!(purchase = %self.p.id, ?amount, "the payment provider authorized an amount we cannot use; voiding it");
                    next.compensation = Some(failed(&next, "payment_refused"));
                    next.step = Step::Compensating;
                    return self.commit(next, "authorization unusable", false).await;
                }
                next.authorized_amount = Some(amount.minor);
                next.step = Step::Ordering;
                self.commit(next, "authorized", false).await
            }
            Ok(AuthorizeOutcome::Declined { .. }) => {
                let outcome = Outcome {
                    status: 402,
                    body: serde_json::json!({"id": next.id, "status": "payment_declined"}),
                };
                self.finish_from(next, outcome, "declined").await
            }
            Err(Refusal(why)) => {
                tracing::warn!(purchase = %self.p.id, %why, "the payment provider refused the authorization");
                let outcome = failed(&next, "payment_refused");
                self.finish_from(next, outcome, "authorization refused")
                    .await
            }
        }
    }

    /// A confirmed (or changed) total in the customer's currency, or why it is not money.
    fn land(&self, c: &Candidate, total: Money) -> Result<Landed, BrokenAnswer> {
        let broken = |why: String| BrokenAnswer(why);
        if total.minor <= 0 {
            return Err(broken(format!(
                "total {} {} is not positive",
                total.to_decimal(),
                total.currency.code()
            )));
        }
        let seller_currency = Currency::parse(&c.seller_currency)
            .map_err(|e| broken(format!("seller currency: {e}")))?;
        let customer = Currency::parse(&self.p.wanted.currency)
            .map_err(|e| broken(format!("customer currency: {e}")))?;
        let fx = self.world.fx();
        let convert = |m: Money| {
            fx.convert(m, customer)
                .map(|m| m.minor)
                .map_err(|e| broken(format!("{} {}: {e}", m.to_decimal(), m.currency.code())))
        };
        let landed = if total.currency == seller_currency {
            if c.seller_price.checked_add(c.seller_shipping) == Some(total.minor) {
                Landed {
                    price: c.price,
                    shipping: c.shipping,
                    total: c.total,
                }
            } else {
                // The seller changed its total: take the change as a change of price,
                // shipping staying as quoted, and convert each part as quotes do.
                let shipping_s = c.seller_shipping.clamp(0, total.minor);
                let price_s = total.minor.saturating_sub(shipping_s);
                let price = convert(Money::new(price_s, seller_currency))?;
                let shipping = convert(Money::new(shipping_s, seller_currency))?;
                let sum = price
                    .checked_add(shipping)
                    .ok_or_else(|| broken("total overflows".into()))?;
                Landed {
                    price,
                    shipping,
                    total: sum,
                }
            }
        } else {
            // Stated in another currency: convert the total as one amount, and keep the
            // quoted shipping inside it.
            let sum = convert(total)?;
            let shipping = c.shipping.clamp(0, sum.max(0));
            Landed {
                price: sum.saturating_sub(shipping),
                shipping,
                total: sum,
            }
        };
        if landed.total <= 0 || landed.price < 0 {
            return Err(broken(format!(
                "total converts to {} {}",
                landed.total,
                customer.code()
            )));
        }
        Ok(landed)
    }

    /// Remembers the cheapest total seen above the limit.
    fn note_lowest(&self, next: &mut Purchase, seller: &str, total: i64) {
        if next.lowest.as_ref().is_none_or(|l| total < l.total) {
            next.lowest = Some(Lowest {
                seller: seller.to_string(),
                total,
                currency: self.p.wanted.currency.clone(),
            });
        }
    }

    fn candidate(&self, index: usize) -> Result<Candidate, SagaError> {
        self.p
            .candidates
            .get(index)
            .cloned()
            .ok_or_else(|| SagaError::Inconsistent(format!("no candidate {index}")))
    }

    async fn order(&mut self) -> Result<(), SagaError> {
        if let Some(doomed) = self.p.cancelling.clone() {
            // An order we cannot keep (confirmed above the limit, or nonsense): undo it
            // before anything else is ordered.
            self.cancel_until_done(&doomed).await;
            let mut next = self.p.clone();
            next.cancelling = None;
            next.skipped = next.skipped.saturating_add(1);
            return self
                .commit(next, "cancelled an order we could not keep", false)
                .await;
        }
        let attempt = match self.p.attempt.clone() {
            Some(a) => {
                // Resumed (after a crash) or re-ordering at a new price: the order call
                // may have gone out, so it must be repeated with its key.
                self.tokens()?;
                a
            }
            None => {
                // Offers above what may be captured (a hold smaller than asked) are not
                // worth an order.
                let limit = self.limit();
                let index = self
                    .p
                    .candidates
                    .iter()
                    .enumerate()
                    .skip(self.p.skipped)
                    .find(|(_, c)| c.total <= limit)
                    .map_or(self.p.candidates.len(), |(i, _)| i);
                let Some(c) = self.p.candidates.get(index) else {
                    // Every candidate sold out or no longer fits: release the money.
                    let outcome = if self.p.lowest.is_some() {
                        no_offer(&self.p)
                    } else {
                        failed(&self.p, "sold_out")
                    };
                    return self.compensate_with(outcome, "no candidate left").await;
                };
                if let Err(e) = self.tokens() {
                    // No order call has gone out: undo the hold and say so, rather than
                    // hold the customer's money while an operator restores the key.
                    tracing::error!(purchase = %self.p.id, error = %e, "cannot order: the tokens do not open");
                    self.world.observe(Event::StepError);
                    let outcome = failed(&self.p, "internal_error");
                    return self.compensate_with(outcome, "tokens do not open").await;
                }
                let expected_total = c
                    .seller_price
                    .checked_add(c.seller_shipping)
                    .ok_or_else(|| SagaError::Inconsistent("candidate total overflows".into()))?;
                let a = Attempt {
                    candidate: index,
                    expected_total,
                    reorders: 0,
                };
                let mut next = self.p.clone();
                next.attempt = Some(a.clone());
                // `skipped` names the candidate being tried; moving on adds one.
                next.skipped = index;
                self.commit(next, "ordering", false).await?;
                a
            }
        };
        let c = self.candidate(attempt.candidate)?;
        let (_, shipping_token) = self.tokens()?;
        let seller_currency = Currency::parse(&c.seller_currency)
            .map_err(|e| SagaError::Inconsistent(e.to_string()))?;
        // Re-orders at a new price get a key of their own; the first order's key is the
        // same as it always was, so records written before re-orders counted still
        // resume with their key.
        let mut detail = format!(
            "{}\u{0}{}\u{0}{}",
            c.seller, c.offer_id, attempt.expected_total
        );
        if attempt.reorders > 0 {
            detail.push_str(&format!("\u{0}{}", attempt.reorders));
        }
        let req = OrderRequest {
            offer_id: c.offer_id.clone(),
            expected_total: Money::new(attempt.expected_total, seller_currency),
            idempotency_key: call_key(&self.p, "order", &detail),
            shipping_token: shipping_token.expose().to_string(),
        };
        let world = self.world;
        let answer = self
            .until_definite("order", |n| world.order(&c.seller, &req, n))
            .await;
        let limit = self.limit();
        let mut next = self.p.clone();
        next.attempt = None;
        match answer {
            Ok(OrderReply::Ordered { order_id, total }) => match self.land(&c, total) {
                Ok(landed) if landed.total <= limit => {
                    next.order = Some(PlacedOrder {
                        seller: c.seller.clone(),
                        offer_id: c.offer_id.clone(),
                        order_id,
                        price: landed.price,
                        shipping: landed.shipping,
                        total: landed.total,
                    });
                    next.step = Step::Capturing;
                    self.commit(next, "ordered", false).await
                }
                Ok(landed) => {
                    tracing::info!(purchase = %self.p.id, seller = %c.seller, total = landed.total, limit,
                        "the seller confirmed more than the limit; cancelling that order");
                    self.note_lowest(&mut next, &c.seller, landed.total);
                    next.cancelling = Some(OrderRef {
                        seller: c.seller.clone(),
                        order_id,
                    });
                    self.commit(next, "confirmed above the limit", false).await
                }
                Err(broken) => self.reject_order(next, &c, order_id, &broken.0).await,
            },
            Ok(OrderReply::Unconfirmed { order_id, reason }) => {
                self.reject_order(next, &c, order_id, &reason).await
            }
            Ok(OrderReply::SoldOut) => {
                next.skipped = next.skipped.saturating_add(1);
                self.commit(next, "sold out", false).await
            }
            Ok(OrderReply::PriceChanged { total }) => match self.land(&c, total) {
                Ok(landed)
                    if landed.total <= limit
                        && total.currency == seller_currency
                        && total.minor != attempt.expected_total
                        && attempt.reorders < self.settings.max_reorders =>
                {
                    // Still within the limit: order again at the new price, a bounded
                    // number of times (a seller whose price never settles is skipped).
                    next.attempt = Some(Attempt {
                        candidate: attempt.candidate,
                        expected_total: total.minor,
                        reorders: attempt.reorders.saturating_add(1),
                    });
                    self.commit(next, "price changed within the limit", false)
                        .await
                }
                Ok(landed) => {
                    if landed.total > limit {
                        self.note_lowest(&mut next, &c.seller, landed.total);
                    }
                    next.skipped = next.skipped.saturating_add(1);
                    self.commit(next, "price changed; skipping the offer", false)
                        .await
                }
                Err(broken) => {
                    tracing::warn!(purchase = %self.p.id, seller = %c.seller, why = %broken,
                        "a price change makes no sense; skipping the offer");
                    next.skipped = next.skipped.saturating_add(1);
                    self.commit(next, "price change makes no sense", false)
                        .await
                }
            },
            Err(Refusal(why)) => {
                tracing::warn!(purchase = %self.p.id, seller = %c.seller, %why, "seller refused the order");
                next.skipped = next.skipped.saturating_add(1);
                self.commit(next, "order refused", false).await
            }
        }
    }

    /// A confirmation that is not money: the order stands at the seller but cannot be
    /// paid for. It is cancelled (next turn) and the next candidate tried.
    async fn reject_order(
        &mut self,
        mut next: Purchase,
        c: &Candidate,
        order_id: String,
        why: &str,
    ) -> Result<(), SagaError> {
        tracing::warn!(purchase = %self.p.id, seller = %c.seller, order = %order_id, %why,
            "an order confirmation makes no sense; cancelling that order");
        self.world.observe(Event::BrokenConfirmation);
        next.cancelling = Some(OrderRef {
            seller: c.seller.clone(),
            order_id,
        });
        self.commit(next, "confirmation makes no sense", false)
            .await
    }

    /// Cancels an order until the seller confirms. A refusal is not final here: an order
    /// must not stay standing, so the saga keeps asking (and says so in the log).
    async fn cancel_until_done(&self, order: &OrderRef) {
        let world = self.world;
        let result = self
            .until_definite("cancel", |n| async move {
                match world.cancel(&order.seller, &order.order_id, n).await {
                    Err(CallError::Refused(why)) => Err(CallError::Unknown {
                        why: format!("cancel refused: {why}"),
                        retry_after: None,
                    }),
                    other => other,
                }
            })
            .await;
        // `until_definite` returns a refusal only, and refusals were turned into
        // unknowns above: Ok is the only way out.
        debug_assert!(result.is_ok());
    }

    async fn capture(&mut self) -> Result<(), SagaError> {
        let (Some(auth), Some(order)) = (self.p.authorization.clone(), self.p.order.clone()) else {
            return Err(SagaError::Inconsistent(
                "capture without an authorization and an order".into(),
            ));
        };
        if order.total <= 0 || order.total > self.limit() {
            // Ordering checked this already; a money path checks twice.
            tracing::error!(purchase = %self.p.id, total = order.total, limit = self.limit(),
                "refusing to capture an amount outside the limit");
            let outcome = failed(&self.p, "internal_error");
            return self
                .compensate_with(outcome, "capture amount out of bounds")
                .await;
        }
        let key = call_key(&self.p, "capture", "");
        let world = self.world;
        let answer = self
            .until_definite("capture", |n| world.capture(&auth, order.total, &key, n))
            .await;
        match answer {
            Ok(SettleOutcome::Done { amount, .. }) => {
                if let Some(amount) = amount.filter(|a| *a != order.total) {
                    tracing::error!(purchase = %self.p.id, asked = order.total, captured = amount,
                        "the payment provider says it captured another amount than asked");
                }
                let outcome = purchased(&self.p, &order);
                self.finish(outcome, "captured").await
            }
            Ok(SettleOutcome::Refused { error: why }) | Err(Refusal(why)) => {
                tracing::warn!(purchase = %self.p.id, %why, "capture refused; compensating");
                let outcome = failed(&self.p, "capture_refused");
                self.compensate_with(outcome, "capture refused").await
            }
        }
    }

    async fn compensate(&mut self) -> Result<(), SagaError> {
        if let (Some(auth), false) = (self.p.authorization.clone(), self.p.voided) {
            let key = call_key(&self.p, "void", "");
            let world = self.world;
            let answer = self
                .until_definite("void", |n| world.void(&auth, &key, n))
                .await;
            match answer {
                Ok(SettleOutcome::Refused { error }) if error == "already_captured" => {
                    // The money was taken after all: if the order stands, the purchase
                    // succeeded.
                    if let (Some(order), false) = (self.p.order.clone(), self.p.order_cancelled) {
                        let outcome = purchased(&self.p, &order);
                        return self.finish(outcome, "capture had succeeded").await;
                    }
                    tracing::error!(purchase = %self.p.id, "authorization captured without a standing order; needs a refund");
                }
                Ok(SettleOutcome::Refused { error }) => {
                    tracing::info!(purchase = %self.p.id, %error, "void refused: nothing is held");
                }
                Ok(SettleOutcome::Done { .. }) => {}
                Err(Refusal(why)) => {
                    tracing::warn!(purchase = %self.p.id, %why, "void refused: nothing is held");
                }
            }
            let mut next = self.p.clone();
            next.voided = true;
            self.commit(next, "authorization voided", false).await?;
        }
        if let (Some(order), false) = (self.p.order.clone(), self.p.order_cancelled) {
            let doomed = OrderRef {
                seller: order.seller,
                order_id: order.order_id,
            };
            self.cancel_until_done(&doomed).await;
            let mut next = self.p.clone();
            next.order_cancelled = true;
            self.commit(next, "order cancelled", false).await?;
        }
        let outcome = self
            .p
            .compensation
            .clone()
            .unwrap_or_else(|| failed(&self.p, "compensated"));
        self.finish(outcome, "compensated").await
    }
}

/// Exponential backoff with jitter: about 50 ms, 100 ms, … up to `cap`.
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    let cap_ms = u64::try_from(cap.as_millis()).unwrap_or(u64::MAX).max(1);
    let base = 50u64
        .saturating_mul(1u64 << attempt.clamp(1, 16).saturating_sub(1))
        .min(cap_ms);
    let jitter = rand::thread_rng().gen_range(0..=base / 2);
    Duration::from_millis(
        (base / 2)
            .saturating_add(jitter)
            .saturating_add(base / 4)
            .min(cap_ms),
    )
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests;
