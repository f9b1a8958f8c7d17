//! The saga's world on a core: the sellers and the payment provider over this core's
//! connections, the shard's storage with group commit, the core's timer and metrics.
//!
//! This is where transport and codec errors are sorted into the saga's two kinds of
//! partner failure: a clear refusal (nothing happened upstream) and an unknown outcome
//! (repeat with the same key).

use std::rc::Rc;
use std::time::{Duration, Instant};

use bookbroker_protocols::payment::{self, AuthorizeOutcome, AuthorizeRequest, SettleOutcome};
use bookbroker_protocols::{
    ConditionFilter, Currency, DecodeError, FxTable, Isbn, OrderOutcome, OrderRequest, QuoteQuery,
};
use bookbroker_storage::Batch;

use super::record::{Candidate, Purchase, Step, Wanted};
use super::saga::{CallError, Event, OrderReply, Partners, Quotes, Saga, SagaError, Settings};
use super::secrets::Secret;
use super::state::{now_ms, ShardOwner};
use crate::metrics::{Counter, Gauge};
use crate::net::{NetError, OwnedReply};
use crate::quotes::{self, QuoteRequest};
use crate::sellers::SellerError;
use crate::state::Core;

/// Sorts a seller failure during a purchase: a clear refusal, or an unknown outcome.
fn seller_failure(e: SellerError) -> CallError {
    match e {
        SellerError::Refused(why) => CallError::Refused(why),
        SellerError::RateLimited { retry_after_ms }
        | SellerError::InProgress { retry_after_ms } => CallError::Unknown {
            why: e.to_string(),
            retry_after: retry_after_ms.map(Duration::from_millis),
        },
        // Timeouts, broken connections, 5xx, unreadable answers: the partner may have
        // acted. `Unavailable` (our own concurrency cap) sent nothing, and asking again
        // later is right for it too.
        other => CallError::Unknown {
            why: other.to_string(),
            retry_after: None,
        },
    }
}

/// Sorts a payment provider failure the same way.
fn payment_failure(e: DecodeError) -> CallError {
    match e {
        DecodeError::Busy { retry_after_ms } | DecodeError::InProgress { retry_after_ms } => {
            CallError::Unknown {
                why: e.to_string(),
                retry_after: retry_after_ms.map(Duration::from_millis),
            }
        }
        DecodeError::Status(s) if s < 500 => CallError::Refused(e.to_string()),
        DecodeError::Remote { .. } => CallError::Refused(e.to_string()),
        other => CallError::Unknown {
            why: other.to_string(),
            retry_after: None,
        },
    }
}

fn net_failure(e: NetError) -> CallError {
    CallError::Unknown {
        why: format!("payment provider: {e}"),
        retry_after: None,
    }
}

/// The saga's world on one core, for purchases of one shard.
pub struct CoreWorld {
    core: Rc<Core>,
    owner: Rc<ShardOwner>,
}

/// The timeout of the `attempt`-th repeat of a call: doubled on each repeat, up to
/// eight times the configured one or a minute. A partner that always takes a little
/// longer than our timeout (a cancel that stalls, a provider under load) is otherwise
/// never heard from, and its call repeated for ever.
fn patient(base_ms: u64, attempt: u32) -> Duration {
    let grown = base_ms.saturating_mul(1u64 << attempt.min(3));
    Duration::from_millis(grown.min(base_ms.max(60_000)))
}

impl CoreWorld {
    fn step_timeout(&self, attempt: u32) -> Duration {
        patient(self.core.shared.config.purchases.step_timeout_ms, attempt)
    }

    async fn pay(
        &self,
        req: &bookbroker_protocols::http::HttpRequest,
        attempt: u32,
    ) -> Result<OwnedReply, CallError> {
        let timeout = patient(self.core.shared.config.payment.timeout_ms, attempt);
        self.core
            .purchases
            .payment
            .call(req, timeout)
            .await
            .map_err(net_failure)
    }

    fn seller(&self, name: &str) -> Result<&crate::sellers::SellerClient, CallError> {
        // A seller removed from the config cannot be asked; the outcome of what it was
        // asked before stays unknown, so the purchase waits for the seller to return.
        self.core
            .sellers
            .iter()
            .find(|s| *s.name == *name)
            .ok_or_else(|| CallError::Unknown {
                why: format!("seller {name} is no longer configured"),
                retry_after: Some(Duration::from_secs(30)),
            })
    }
}

impl Partners for CoreWorld {
    async fn quote(&self, wanted: &Wanted) -> Result<Quotes, SagaError> {
        let inconsistent = |e: String| SagaError::Inconsistent(e);
        let query = match (&wanted.isbn, &wanted.title) {
            (Some(i), _) => {
                QuoteQuery::Isbn(Isbn::parse(i).map_err(|e| inconsistent(e.to_string()))?)
            }
            (None, Some(t)) => QuoteQuery::Title(t.clone()),
            (None, None) => return Err(inconsistent("purchase without isbn or title".into())),
        };
        let currency =
            Currency::parse(&wanted.currency).map_err(|e| inconsistent(e.to_string()))?;
        let req = QuoteRequest {
            query,
            currency,
            condition: ConditionFilter::parse(&wanted.condition).unwrap_or(ConditionFilter::Any),
        };
        let core = &self.core;
        let deadline =
            Instant::now() + Duration::from_millis(core.shared.config.quotes.deadline_ms);
        let results = quotes::fan_out(core, &req.query, deadline).await;
        let mut landed = Vec::new();
        let mut any_failed = false;
        for r in &results {
            let name = core.sellers.get(r.seller).map_or("?", |s| &*s.name);
            match &r.outcome {
                Ok(offers) => {
                    if quotes::land(&req, name, offers, &core.fx, &mut landed).is_err() {
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
        let landed = landed
            .iter()
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
        Ok(Quotes { landed, any_failed })
    }

    async fn authorize(
        &self,
        req: &AuthorizeRequest,
        key: &str,
        attempt: u32,
    ) -> Result<AuthorizeOutcome, CallError> {
        let reply = self
            .pay(&payment::encode_authorize(req, key), attempt)
            .await?;
        payment::decode_authorize(reply.as_reply()).map_err(payment_failure)
    }

    async fn order(
        &self,
        seller: &str,
        req: &OrderRequest,
        attempt: u32,
    ) -> Result<OrderReply, CallError> {
        let client = self.seller(seller)?;
        match client.order(req, self.step_timeout(attempt)).await {
            Ok(OrderOutcome::Ordered { order_id, total }) => {
                Ok(OrderReply::Ordered { order_id, total })
            }
            Ok(OrderOutcome::SoldOut) => Ok(OrderReply::SoldOut),
            Ok(OrderOutcome::PriceChanged { total }) => Ok(OrderReply::PriceChanged { total }),
            Err(SellerError::Unconfirmed { order_id, reason }) => {
                Ok(OrderReply::Unconfirmed { order_id, reason })
            }
            Err(e) => Err(seller_failure(e)),
        }
    }

    async fn cancel(&self, seller: &str, order_id: &str, attempt: u32) -> Result<(), CallError> {
        let client = self.seller(seller)?;
        client
            .cancel(order_id, self.step_timeout(attempt))
            .await
            .map_err(seller_failure)
    }

    async fn capture(
        &self,
        authorization: &str,
        amount: i64,
        key: &str,
        attempt: u32,
    ) -> Result<SettleOutcome, CallError> {
        let reply = self
            .pay(
                &payment::encode_capture(authorization, amount, key),
                attempt,
            )
            .await?;
        payment::decode_settle(reply.as_reply()).map_err(payment_failure)
    }

    async fn void(
        &self,
        authorization: &str,
        key: &str,
        attempt: u32,
    ) -> Result<SettleOutcome, CallError> {
        let reply = self
            .pay(&payment::encode_void(authorization, key), attempt)
            .await?;
        payment::decode_settle(reply.as_reply()).map_err(payment_failure)
    }

    async fn save(&self, p: &Purchase, note: &str, sync: bool) -> Result<(), SagaError> {
        let storage = |e: String| SagaError::Storage(e);
        let record = serde_json::to_vec(p).map_err(|e| storage(e.to_string()))?;
        let entry = serde_json::to_vec(&serde_json::json!({
            "at_ms": now_ms(), "step": p.step, "note": note,
        }))
        .map_err(|e| storage(e.to_string()))?;
        let mut batch = Batch::default();
        let done = p.step == Step::Done;
        batch.put_purchase(&p.id, &record, !done);
        batch.append_journal(&p.id, p.journal_seq, &entry);
        if done {
            let keep = self
                .core
                .shared
                .config
                .purchases
                .key_retention_hours
                .saturating_mul(3_600_000);
            batch
                .expire_at(&p.id, &p.customer, &p.key, now_ms().saturating_add(keep))
                .map_err(|e| storage(e.to_string()))?;
        }
        let ticket = self
            .owner
            .commit
            .write(batch)
            .map_err(|e| storage(e.to_string()))?;
        if sync {
            self.owner
                .commit
                .durable(ticket, &self.core.shared.metrics, self.core.index)
                .await
                .map_err(|e| storage(e.to_string()))?;
        }
        Ok(())
    }

    async fn sleep(&self, pause: Duration) {
        crate::net::sleep(pause).await;
    }

    fn open_tokens(&self, sealed: &str) -> Result<(Secret, Secret), SagaError> {
        let plain = self
            .core
            .purchases
            .cipher
            .open(sealed)
            .map_err(|e| SagaError::Secrets(e.to_string()))?;
        let pair: (String, String) = serde_json::from_slice(&plain)
            .map_err(|_| SagaError::Secrets("the sealed tokens are damaged".into()))?;
        Ok((Secret::new(pair.0), Secret::new(pair.1)))
    }

    fn fx(&self) -> &FxTable {
        &self.core.fx
    }

    fn observe(&self, event: Event) {
        let metrics = &self.core.shared.metrics;
        let core = self.core.index;
        match event {
            Event::CallRepeated => metrics.inc_counter(core, Counter::PurchaseCallsRepeated),
            Event::BrokenConfirmation => metrics.inc_counter(core, Counter::BrokenConfirmations),
            Event::StepError => metrics.inc_counter(core, Counter::PurchaseStepErrors),
            Event::Stuck(stuck) => {
                metrics.add_gauge(core, Gauge::PurchasesStuck, if stuck { 1 } else { -1 })
            }
            Event::Finished { purchased } => metrics.inc_counter(
                core,
                if purchased {
                    Counter::PurchasesPurchased
                } else {
                    Counter::PurchasesNotPurchased
                },
            ),
        }
    }
}

/// Runs the saga of `p` on this core to its end, then wakes everyone waiting for it and
/// releases its place in the running counts. `p` must already be registered in
/// `owner.running` and counted by [`RunningGuard::enter`].
pub async fn run(core: Rc<Core>, owner: Rc<ShardOwner>, p: Purchase, guard: RunningGuard) {
    let cfg = &core.shared.config.purchases;
    let settings = Settings {
        step_retry: Duration::from_millis(cfg.step_retry_ms),
        max_reorders: cfg.max_reorders,
    };
    let world = CoreWorld {
        core: Rc::clone(&core),
        owner: Rc::clone(&owner),
    };
    let end = Saga::new(&world, settings, p).run().await;
    let waiters = owner.running.borrow_mut().remove(&end.id);
    drop(guard);
    for w in waiters.into_iter().flatten() {
        let _ = w.send(());
    }
}

/// A running saga's place in the per-core and per-customer counts; released on drop.
/// It also marks the core [`crate::rt::Urgent`] for the saga's life: a saga waits for
/// one fsync or partner answer at a time, and completion coalescing would add its
/// window to each of them.
pub struct RunningGuard {
    core: Rc<Core>,
    customer: String,
    _urgent: crate::rt::Urgent,
}

impl RunningGuard {
    /// Counts a saga of `customer` as running on `core`.
    pub fn enter(core: &Rc<Core>, customer: &str) -> RunningGuard {
        core.purchases
            .running
            .set(core.purchases.running.get().saturating_add(1));
        core.shared.running_per_customer.enter(customer);
        core.shared
            .metrics
            .add_gauge(core.index, Gauge::PurchasesRunning, 1);
        RunningGuard {
            core: Rc::clone(core),
            customer: customer.to_string(),
            _urgent: crate::rt::urgent(),
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let core = &self.core;
        core.purchases
            .running
            .set(core.purchases.running.get().saturating_sub(1));
        core.shared.running_per_customer.leave(&self.customer);
        core.shared
            .metrics
            .add_gauge(core.index, Gauge::PurchasesRunning, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::patient;
    use std::time::Duration;

    #[test]
    fn repeats_get_more_time_up_to_a_bound() {
        assert_eq!(patient(2000, 0), Duration::from_millis(2000));
        assert_eq!(patient(2000, 1), Duration::from_millis(4000));
        assert_eq!(patient(2000, 3), Duration::from_millis(16_000));
        assert_eq!(patient(2000, 30), Duration::from_millis(16_000));
        assert_eq!(patient(30_000, 5), Duration::from_millis(60_000));
        assert_eq!(patient(60_000, 5), Duration::from_millis(60_000));
    }
}
