//! The saga against a scripted fake partner: every unknown-outcome branch, every
//! confirmation that makes no sense, and our own failures.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bookbroker_protocols::payment::{AuthorizeOutcome, AuthorizeRequest, SettleOutcome};
use bookbroker_protocols::{Currency, FxTable, Money, OrderRequest};

use super::*;
use crate::purchase::record::{Candidate, Purchase, Step, Wanted};

/// Runs a future whose every await completes at once (the fake never waits).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("the saga did not finish");
}

fn unknown(why: &str) -> CallError {
    CallError::Unknown {
        why: why.into(),
        retry_after: None,
    }
}

#[derive(Default)]
struct Fake {
    quotes: RefCell<Quotes>,
    authorize: RefCell<VecDeque<Result<AuthorizeOutcome, CallError>>>,
    order: RefCell<VecDeque<Result<OrderReply, CallError>>>,
    cancel: RefCell<VecDeque<Result<(), CallError>>>,
    capture: RefCell<VecDeque<Result<SettleOutcome, CallError>>>,
    void: RefCell<VecDeque<Result<SettleOutcome, CallError>>>,
    /// Saves that fail, in order (true = fail).
    save_fails: RefCell<VecDeque<bool>>,
    /// Token openings that fail before they work again.
    token_fails: Cell<u32>,
    calls: RefCell<Vec<String>>,
    saved: RefCell<Vec<Purchase>>,
    events: RefCell<Vec<Event>>,
    slept: Cell<Duration>,
    fx: Option<FxTable>,
}

impl Fake {
    fn new() -> Fake {
        Fake {
            fx: Some(FxTable::new(Currency::USD, &[(Currency::EUR, "1.08")]).unwrap()),
            ..Fake::default()
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn calls_of(&self, kind: &str) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with(kind))
            .collect()
    }

    fn events(&self) -> Vec<Event> {
        self.events.borrow().clone()
    }
}

impl Partners for Fake {
    async fn quote(&self, _wanted: &Wanted) -> Result<Quotes, SagaError> {
        self.calls.borrow_mut().push("quote".into());
        Ok(self.quotes.borrow().clone())
    }

    async fn authorize(
        &self,
        req: &AuthorizeRequest,
        key: &str,
        _attempt: u32,
    ) -> Result<AuthorizeOutcome, CallError> {
        self.calls
            .borrow_mut()
            .push(format!("authorize {} {key}", req.amount.minor));
        self.authorize.borrow_mut().pop_front().unwrap_or_else(|| {
            Ok(AuthorizeOutcome::Authorized {
                id: "auth_1".into(),
                amount: req.amount,
            })
        })
    }

    async fn order(
        &self,
        seller: &str,
        req: &OrderRequest,
        _attempt: u32,
    ) -> Result<OrderReply, CallError> {
        self.calls.borrow_mut().push(format!(
            "order {seller} {} {} {}",
            req.offer_id, req.expected_total.minor, req.idempotency_key
        ));
        self.order.borrow_mut().pop_front().unwrap_or_else(|| {
            Ok(OrderReply::Ordered {
                order_id: format!("so-{}", req.offer_id),
                total: req.expected_total,
            })
        })
    }

    async fn cancel(&self, seller: &str, order_id: &str, _attempt: u32) -> Result<(), CallError> {
        self.calls
            .borrow_mut()
            .push(format!("cancel {seller} {order_id}"));
        self.cancel.borrow_mut().pop_front().unwrap_or(Ok(()))
    }

    async fn capture(
        &self,
        authorization: &str,
        amount: i64,
        key: &str,
        _attempt: u32,
    ) -> Result<SettleOutcome, CallError> {
        self.calls
            .borrow_mut()
            .push(format!("capture {authorization} {amount} {key}"));
        self.capture
            .borrow_mut()
            .pop_front()
            .unwrap_or(Ok(SettleOutcome::Done {
                id: "ch_1".into(),
                amount: Some(amount),
            }))
    }

    async fn void(
        &self,
        authorization: &str,
        key: &str,
        _attempt: u32,
    ) -> Result<SettleOutcome, CallError> {
        self.calls
            .borrow_mut()
            .push(format!("void {authorization} {key}"));
        self.void
            .borrow_mut()
            .pop_front()
            .unwrap_or(Ok(SettleOutcome::Done {
                id: authorization.into(),
                amount: None,
            }))
    }

    async fn save(&self, p: &Purchase, _note: &str, _sync: bool) -> Result<(), SagaError> {
        if self.save_fails.borrow_mut().pop_front().unwrap_or(false) {
            return Err(SagaError::Storage("disk full".into()));
        }
        self.saved.borrow_mut().push(p.clone());
        Ok(())
    }

    async fn sleep(&self, pause: Duration) {
        self.slept.set(self.slept.get() + pause);
    }

    fn open_tokens(&self, _sealed: &str) -> Result<(Secret, Secret), SagaError> {
        if self.token_fails.get() > 0 {
            self.token_fails.set(self.token_fails.get() - 1);
            return Err(SagaError::Secrets("aead::Error".into()));
        }
        Ok((
            Secret::new("tok_ok_4242".into()),
            Secret::new("ship_home".into()),
        ))
    }

    fn fx(&self) -> &FxTable {
        self.fx.as_ref().unwrap()
    }

    fn observe(&self, event: Event) {
        self.events.borrow_mut().push(event);
    }
}

const SETTINGS: Settings = Settings {
    step_retry: Duration::from_secs(10),
    max_reorders: 3,
};

/// A USD candidate at `seller` costing `total` cents (shipping 300 of it).
fn usd(seller: &str, offer: &str, total: i64) -> Candidate {
    Candidate {
        seller: seller.into(),
        offer_id: offer.into(),
        seller_price: total - 300,
        seller_shipping: 300,
        seller_currency: "USD".into(),
        price: total - 300,
        shipping: 300,
        total,
    }
}

/// A EUR candidate: 15.00 + 2.50 EUR, landed at 16.20 + 2.70 USD.
fn eur(seller: &str, offer: &str) -> Candidate {
    Candidate {
        seller: seller.into(),
        offer_id: offer.into(),
        seller_price: 1500,
        seller_shipping: 250,
        seller_currency: "EUR".into(),
        price: 1620,
        shipping: 270,
        total: 1890,
    }
}

fn purchase(max_price: i64) -> Purchase {
    Purchase::intent(
        "pur_0000_0123456789abcdef".into(),
        "alice".into(),
        "k1".into(),
        1,
        Wanted {
            isbn: Some("9780131103627".into()),
            title: None,
            max_price,
            currency: "USD".into(),
            condition: "any".into(),
        },
        "sealed".into(),
    )
}

fn run(fake: &Fake, p: Purchase) -> Purchase {
    block_on(Saga::new(fake, SETTINGS, p).run())
}

fn offers(fake: &Fake, landed: Vec<Candidate>) {
    *fake.quotes.borrow_mut() = Quotes {
        landed,
        any_failed: false,
    };
}

fn status(p: &Purchase) -> String {
    let o = p.outcome.as_ref().expect("an outcome");
    o.body["status"].as_str().unwrap_or_default().to_string()
}

/// The key of the nth call of a kind (last field).
fn key_of(call: &str) -> String {
    call.rsplit(' ').next().unwrap().to_string()
}

#[test]
fn a_plain_purchase_authorizes_orders_and_captures_the_confirmed_total() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500), usd("b", "o-2", 1800)]);
    let end = run(&fake, purchase(2000));
    assert_eq!(end.step, Step::Done);
    let o = end.outcome.clone().unwrap();
    assert_eq!(o.status, 201);
    assert_eq!(o.body["total"], 1500);
    assert_eq!(o.body["seller_order_id"], "so-o-1");
    let calls = fake.calls();
    assert_eq!(calls.len(), 4, "{calls:?}");
    assert!(calls[1].starts_with("authorize 2000 "));
    assert!(calls[2].starts_with("order a o-1 1500 "));
    assert!(calls[3].starts_with("capture auth_1 1500 "));
    assert!(end.sealed_tokens.is_none(), "tokens are erased at the end");
    assert!(fake.events().contains(&Event::Finished { purchased: true }));
}

#[test]
fn an_authorization_of_unknown_outcome_is_repeated_with_its_key_until_definite() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500)]);
    fake.authorize.borrow_mut().extend([
        Err(unknown("timed out")),
        Err(CallError::Unknown {
            why: "upstream is still working on this idempotency key".into(),
            retry_after: Some(Duration::from_millis(700)),
        }),
        Err(unknown("upstream answered HTTP 502")),
        Err(unknown("connection reset")),
    ]);
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "purchased");
    let auths = fake.calls_of("authorize");
    assert_eq!(auths.len(), 5);
    assert!(
        auths.iter().all(|c| key_of(c) == key_of(&auths[0])),
        "{auths:?}"
    );
    assert!(fake.calls_of("void").is_empty(), "nothing to compensate");
    assert!(
        fake.slept.get() >= Duration::from_millis(700),
        "the partner's wait is kept"
    );
    assert_eq!(
        fake.events()
            .iter()
            .filter(|e| **e == Event::CallRepeated)
            .count(),
        4
    );
}

#[test]
fn an_order_of_unknown_outcome_never_moves_to_another_offer() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500), usd("b", "o-2", 1600)]);
    fake.order.borrow_mut().extend([
        Err(unknown("timed out")),
        Err(unknown("seller still working on this key")),
        Err(unknown("timed out")),
    ]);
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "purchased");
    let orders = fake.calls_of("order");
    assert_eq!(orders.len(), 4);
    assert!(orders.iter().all(|c| c.starts_with("order a o-1 1500 ")));
    assert!(orders.iter().all(|c| key_of(c) == key_of(&orders[0])));
    assert!(fake.calls_of("cancel").is_empty());
    assert!(fake.calls_of("void").is_empty());
}

#[test]
fn a_call_unknown_past_step_retry_goes_on_in_the_background_and_counts_as_stuck() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500)]);
    fake.capture
        .borrow_mut()
        .extend((0..40).map(|_| Err(unknown("timed out"))));
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "purchased");
    assert_eq!(fake.calls_of("capture").len(), 41);
    let events = fake.events();
    let stuck_at = events
        .iter()
        .position(|e| *e == Event::Stuck(true))
        .unwrap();
    let unstuck_at = events
        .iter()
        .position(|e| *e == Event::Stuck(false))
        .unwrap();
    assert!(stuck_at < unstuck_at);
    assert!(fake.slept.get() > SETTINGS.step_retry);
    assert!(
        fake.calls_of("void").is_empty(),
        "never compensated while unknown"
    );
}

#[test]
fn a_capture_in_progress_is_waited_for_not_compensated() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500)]);
    fake.capture.borrow_mut().extend([
        Err(CallError::Unknown {
            why: "upstream is still working on this idempotency key".into(),
            retry_after: None,
        }),
        Err(unknown("timed out")),
    ]);
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "purchased");
    let captures = fake.calls_of("capture");
    assert_eq!(captures.len(), 3);
    assert!(captures.iter().all(|c| key_of(c) == key_of(&captures[0])));
    assert!(fake.calls_of("cancel").is_empty());
}

#[test]
fn a_refused_capture_voids_and_cancels_even_through_unknown_answers() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500)]);
    fake.capture
        .borrow_mut()
        .push_back(Ok(SettleOutcome::Refused {
            error: "authorization_expired".into(),
        }));
    fake.void
        .borrow_mut()
        .extend([Err(unknown("reset")), Err(unknown("HTTP 500"))]);
    fake.cancel.borrow_mut().extend([
        Err(unknown("timed out")),
        Err(CallError::Refused("seller error 503: try later".into())),
    ]);
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "failed");
    assert_eq!(end.outcome.unwrap().body["reason"], "capture_refused");
    assert_eq!(fake.calls_of("void").len(), 3);
    assert_eq!(
        fake.calls_of("cancel").len(),
        3,
        "a refused cancel is asked again"
    );
    assert!(end.voided && end.order_cancelled);
}

#[test]
fn a_void_refused_as_already_captured_means_the_purchase_succeeded() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500)]);
    fake.capture
        .borrow_mut()
        .push_back(Err(CallError::Refused("upstream answered HTTP 400".into())));
    fake.void.borrow_mut().push_back(Ok(SettleOutcome::Refused {
        error: "already_captured".into(),
    }));
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "purchased");
    assert!(fake.calls_of("cancel").is_empty());
}

#[test]
fn a_negative_confirmation_is_cancelled_and_the_next_offer_bought() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500), usd("b", "o-2", 1800)]);
    fake.order.borrow_mut().push_back(Ok(OrderReply::Ordered {
        order_id: "so-neg".into(),
        total: Money::new(-2512, Currency::USD),
    }));
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "purchased");
    let o = end.outcome.unwrap();
    assert_eq!(o.body["seller"], "b");
    assert_eq!(o.body["total"], 1800);
    assert_eq!(fake.calls_of("cancel"), vec!["cancel a so-neg".to_string()]);
    assert!(fake
        .calls_of("capture")
        .iter()
        .all(|c| c.contains(" 1800 ")));
    assert!(fake.events().contains(&Event::BrokenConfirmation));
}

#[test]
fn zero_and_unreadable_confirmations_are_broken_answers_too() {
    let fake = Fake::new();
    offers(
        &fake,
        vec![
            usd("a", "o-1", 1500),
            usd("b", "o-2", 1600),
            usd("c", "o-3", 1700),
        ],
    );
    fake.order.borrow_mut().extend([
        Ok(OrderReply::Ordered {
            order_id: "so-zero".into(),
            total: Money::new(0, Currency::USD),
        }),
        Ok(OrderReply::Unconfirmed {
            order_id: "so-xbt".into(),
            reason: "unknown currency \"XBT\"".into(),
        }),
    ]);
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "purchased");
    assert_eq!(end.outcome.unwrap().body["seller"], "c");
    assert_eq!(
        fake.calls_of("cancel"),
        vec![
            "cancel a so-zero".to_string(),
            "cancel b so-xbt".to_string()
        ]
    );
}

#[test]
fn a_confirmation_in_a_currency_without_a_rate_is_cancelled() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500), usd("b", "o-2", 1600)]);
    fake.order.borrow_mut().push_back(Ok(OrderReply::Ordered {
        order_id: "so-gbp".into(),
        total: Money::new(1200, Currency::GBP),
    }));
    let end = run(&fake, purchase(2000));
    assert_eq!(end.outcome.unwrap().body["seller"], "b");
    assert_eq!(fake.calls_of("cancel"), vec!["cancel a so-gbp".to_string()]);
}

#[test]
fn a_total_stated_in_another_currency_is_converted_before_it_is_captured() {
    let fake = Fake::new();
    // The EUR seller books 17.50 EUR and states it as 18.90 USD.
    offers(&fake, vec![eur("rive", "b-9")]);
    fake.order.borrow_mut().push_back(Ok(OrderReply::Ordered {
        order_id: "x-4".into(),
        total: Money::new(1890, Currency::USD),
    }));
    let end = run(&fake, purchase(2000));
    let o = end.outcome.unwrap();
    assert_eq!(o.body["total"], 1890);
    assert_eq!(o.body["shipping"], 270);
    assert_eq!(o.body["price"], 1620);
    assert!(fake.calls_of("capture")[0].contains(" 1890 "));

    // The same seller states a total of 18.91 EUR: that is 20.42 USD, over the limit.
    let fake = Fake::new();
    offers(&fake, vec![eur("rive", "b-9")]);
    fake.order.borrow_mut().push_back(Ok(OrderReply::Ordered {
        order_id: "x-5".into(),
        total: Money::new(1891, Currency::EUR),
    }));
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "no_offer_within_limit");
    let o = end.outcome.unwrap();
    assert_eq!(o.body["lowest"]["total"], 2042);
    assert_eq!(fake.calls_of("cancel"), vec!["cancel rive x-5".to_string()]);
    assert!(fake.calls_of("capture").is_empty());
    assert_eq!(fake.calls_of("void").len(), 1, "the hold is released");
}

#[test]
fn a_confirmation_above_the_limit_is_cancelled_and_never_captured() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500)]);
    fake.order.borrow_mut().push_back(Ok(OrderReply::Ordered {
        order_id: "so-big".into(),
        total: Money::new(2500, Currency::USD),
    }));
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "no_offer_within_limit");
    assert_eq!(end.outcome.unwrap().body["lowest"]["total"], 2500);
    assert!(fake.calls_of("capture").is_empty());
    assert_eq!(fake.calls_of("cancel").len(), 1);
    assert_eq!(fake.calls_of("void").len(), 1);
}

#[test]
fn a_price_that_keeps_changing_within_the_limit_is_reordered_a_bounded_number_of_times() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500), usd("b", "o-2", 1900)]);
    fake.order.borrow_mut().extend((0..5).map(|i| {
        Ok(OrderReply::PriceChanged {
            total: Money::new(1510 + i, Currency::USD),
        })
    }));
    let end = run(&fake, purchase(2000));
    let orders = fake.calls_of("order a ");
    assert_eq!(
        orders.len(),
        1 + SETTINGS.max_reorders as usize,
        "{orders:?}"
    );
    let mut keys: Vec<String> = orders.iter().map(|c| key_of(c)).collect();
    keys.dedup();
    assert_eq!(keys.len(), orders.len(), "each re-order has its own key");
    // Then the next offer: its first order answers "price changed" too (within the
    // limit), and the re-order is placed.
    assert_eq!(status(&end), "purchased");
    assert_eq!(end.outcome.unwrap().body["seller"], "b");
}

#[test]
fn sold_out_and_refused_orders_move_on_to_the_next_offer() {
    let fake = Fake::new();
    offers(
        &fake,
        vec![
            usd("a", "o-1", 1500),
            usd("b", "o-2", 1600),
            usd("c", "o-3", 1700),
        ],
    );
    fake.order.borrow_mut().extend([
        Ok(OrderReply::SoldOut),
        Err(CallError::Refused("seller error E42: no such offer".into())),
    ]);
    let end = run(&fake, purchase(2000));
    assert_eq!(end.outcome.unwrap().body["seller"], "c");
}

#[test]
fn every_offer_sold_out_releases_the_hold() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500)]);
    fake.order.borrow_mut().push_back(Ok(OrderReply::SoldOut));
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "failed");
    assert_eq!(end.outcome.unwrap().body["reason"], "sold_out");
    assert_eq!(fake.calls_of("void").len(), 1);
}

#[test]
fn declined_and_refused_authorizations_end_without_compensation() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500)]);
    fake.authorize
        .borrow_mut()
        .push_back(Ok(AuthorizeOutcome::Declined {
            error: "card_declined".into(),
        }));
    let end = run(&fake, purchase(2000));
    assert_eq!(end.outcome.unwrap().status, 402);
    assert!(fake.calls_of("order").is_empty());

    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500)]);
    fake.authorize
        .borrow_mut()
        .push_back(Err(CallError::Refused("upstream answered HTTP 400".into())));
    let end = run(&fake, purchase(2000));
    assert_eq!(end.outcome.unwrap().body["reason"], "payment_refused");
    assert!(fake.calls_of("void").is_empty());
}

#[test]
fn a_hold_smaller_than_asked_caps_what_may_be_captured() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500), usd("b", "o-2", 1600)]);
    fake.authorize
        .borrow_mut()
        .push_back(Ok(AuthorizeOutcome::Authorized {
            id: "auth_9".into(),
            amount: Money::new(1550, Currency::USD),
        }));
    fake.order.borrow_mut().push_back(Ok(OrderReply::Ordered {
        order_id: "so-1".into(),
        total: Money::new(1560, Currency::USD),
    }));
    let end = run(&fake, purchase(2000));
    assert_ne!(status(&end), "purchased");
    assert!(fake.calls_of("capture").is_empty());
    assert_eq!(fake.calls_of("cancel"), vec!["cancel a so-1".to_string()]);
    // b at 16.00 is over the 15.50 held: never ordered.
    assert!(fake.calls_of("order b").is_empty());
}

#[test]
fn tokens_that_do_not_open_before_ordering_release_the_hold() {
    let fake = Fake::new();
    let mut p = purchase(2000);
    p.step = Step::Ordering;
    p.candidates = vec![usd("a", "o-1", 1500)];
    p.authorization = Some("auth_1".into());
    fake.token_fails.set(1);
    let end = run(&fake, p);
    assert_eq!(end.outcome.unwrap().body["reason"], "internal_error");
    assert!(fake.calls_of("order").is_empty());
    assert_eq!(fake.calls_of("void").len(), 1);
}

#[test]
fn tokens_that_do_not_open_mid_call_park_the_purchase_with_pauses() {
    // Resumed in Authorizing: the first authorization may have gone out, and it cannot
    // be repeated without the token. The saga waits (yielding) until the key is back.
    let fake = Fake::new();
    let mut p = purchase(2000);
    p.step = Step::Authorizing;
    p.candidates = vec![usd("a", "o-1", 1500)];
    fake.token_fails.set(5);
    let end = run(&fake, p);
    assert_eq!(status(&end), "purchased");
    let errors = fake
        .events()
        .iter()
        .filter(|e| **e == Event::StepError)
        .count();
    assert_eq!(errors, 5);
    assert!(fake.slept.get() >= Duration::from_millis(5 * 25));
    assert!(fake.events().contains(&Event::Stuck(true)));
    assert_eq!(
        fake.events().last(),
        Some(&Event::Finished { purchased: true })
    );
}

#[test]
fn a_final_state_that_fails_to_persist_is_retried_not_reported() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500)]);
    // quote, ordering intent... fail the saves around the end: intent(1) candidates(2)
    // authorized(3) ordering(4) ordered(5) then the final one fails twice.
    fake.save_fails
        .borrow_mut()
        .extend([false, false, false, false, true, true]);
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "purchased");
    let saved = fake.saved.borrow();
    assert_eq!(saved.last().unwrap().step, Step::Done);
    // The repeat of the capture used the same key: one charge upstream.
    let captures = fake.calls_of("capture");
    assert!(captures.iter().all(|c| key_of(c) == key_of(&captures[0])));
    assert!(fake.events().contains(&Event::StepError));
}

#[test]
fn each_call_is_written_before_it_is_made() {
    let fake = Fake::new();
    offers(&fake, vec![usd("a", "o-1", 1500)]);
    let end = run(&fake, purchase(2000));
    assert_eq!(status(&end), "purchased");
    let saved = fake.saved.borrow();
    let order_key = key_of(&fake.calls_of("order")[0]);
    let p = &saved[0];
    let c = &p.candidates[0];
    let detail = format!("{}\u{0}{}\u{0}{}", c.seller, c.offer_id, 1500);
    assert_eq!(call_key(p, "order", &detail), order_key);
    // Before the order call the record held the attempt.
    assert!(saved
        .iter()
        .any(|s| s.attempt.is_some() && s.order.is_none()));
    assert!(
        saved[0].step == Step::Authorizing,
        "candidates saved before authorizing"
    );
}

#[test]
fn backoff_grows_and_stays_under_its_cap() {
    let cap = Duration::from_secs(2);
    let first = backoff(1, cap);
    assert!(first >= Duration::from_millis(37) && first <= Duration::from_millis(75));
    for attempt in 1..100 {
        assert!(backoff(attempt, cap) <= cap);
    }
    assert!(backoff(30, cap) >= Duration::from_millis(1500));
}
