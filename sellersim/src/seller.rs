//! The state of one simulated seller: its offers with live stock, its orders, its fault
//! and latency model and its request counters. Protocol-neutral: the HTTP and line
//! front ends call into it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bookbroker_protocols::admin::{AdminOrder, AdminOrderStatus, AdminOrders};
use bookbroker_protocols::{
    Currency, FxTable, Isbn, Money, OrderOutcome, OrderRequest, QuoteQuery, SellerOffer,
};
use serde::Serialize;

use super::rng::{fast_unit, fnv1a, mix, unit_of};
use super::scenario::{FaultSpec, LatencySpec, Protocol};

/// An offer with its live stock.
#[derive(Debug)]
struct Listing {
    /// The offer as generated; `quantity` there is the initial stock.
    offer: SellerOffer,
    /// Lower-case title for case-insensitive search.
    title_lower: String,
    /// Copies left. Read without locks by quotes; changed only under the order book lock.
    stock: AtomicU32,
}

/// One recorded order.
#[derive(Debug, Clone)]
struct OrderEntry {
    /// What the seller booked (the admin listing reports this).
    record: AdminOrder,
    /// What the confirmation states: the booked total, unless this order's
    /// confirmation lies. Kept so a repeat of the key gets the same confirmation.
    confirmed: Money,
    listing: usize,
}

/// Orders of a seller. Orders are far rarer than quotes, so one lock per seller is fine;
/// it makes "check the idempotency key, take a copy, record the order" one atomic step.
#[derive(Debug, Default)]
struct OrderBook {
    by_key: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    orders: Vec<OrderEntry>,
    /// Keys whose slow first attempt has not answered yet.
    in_flight: HashSet<String>,
}

/// How this seller's lying confirmations lie, ready to apply.
#[derive(Debug, Clone)]
pub(crate) enum LieModel {
    /// Confirm the booked total negated.
    Negative,
    /// Confirm the booked total converted into `to`.
    OtherCurrency { to: Currency, fx: Arc<FxTable> },
    /// Book and confirm the honest total plus `basis_points` / 100 percent.
    Inflated { basis_points: i128 },
}

/// What one order request gets, once any wait is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OrderReply {
    /// An outcome to send.
    Outcome(OrderOutcome),
    /// The first attempt with this key is still running; the caller should ask again.
    InProgress,
}

/// What [`SellerState::place`] decided, before any wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placed {
    /// Answer now.
    Now(OrderReply),
    /// A slow first attempt: already booked (when it is an order) and marked in flight;
    /// answer `outcome` after `hold`, once [`SellerState::first_answered`] has run.
    Held {
        outcome: OrderOutcome,
        hold: Duration,
    },
}

/// Request counters of a seller, reported by `GET /admin/stats`.
#[derive(Debug, Default)]
pub(crate) struct SellerStats {
    pub connections_accepted: AtomicU64,
    pub quote: AtomicU64,
    pub order: AtomicU64,
    pub cancel: AtomicU64,
    pub other: AtomicU64,
}

/// What kind of request a fault is drawn for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RequestKind {
    Quote,
    Order,
    Cancel,
}

/// The fault (if any) to inject into one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// Never answer.
    Hang,
    /// 429 / 503 / `BUSY`.
    Overload,
    /// 500 / `ERR`.
    Error,
    /// Garbage bytes with a success status.
    Garbage,
    /// Cut the answer short and close the connection.
    Close,
}

/// Why an order was refused outright (not sold out, not a price change).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OrderError {
    #[error("unknown offer")]
    UnknownOffer,
    #[error("expected_total is in {found}, this seller sells in {expected}")]
    WrongCurrency { found: Currency, expected: Currency },
}

/// Why a cancel was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CancelError {
    #[error("unknown order")]
    UnknownOrder,
}

/// Per-seller stats as `GET /admin/stats` shows them.
#[derive(Debug, Serialize)]
pub(crate) struct SellerStatsView {
    pub name: String,
    pub protocol: &'static str,
    pub endpoints: Vec<String>,
    pub connections_accepted: u64,
    pub requests: RequestCounts,
}

/// Requests by kind.
#[derive(Debug, Serialize)]
pub(crate) struct RequestCounts {
    pub quote: u64,
    pub order: u64,
    pub cancel: u64,
    pub other: u64,
}

/// Everything needed to build a seller.
pub(crate) struct SellerSetup {
    pub name: String,
    pub protocol: Protocol,
    pub currency: Currency,
    pub seed: u64,
    pub offers: Vec<SellerOffer>,
    pub latency: LatencySpec,
    pub faults: FaultSpec,
    pub title_results_max: usize,
    pub stale_listings: bool,
    /// How lying confirmations lie (`None` when `confirm_lie_rate` is 0).
    pub lie: Option<LieModel>,
}

/// One simulated seller.
#[derive(Debug)]
pub(crate) struct SellerState {
    pub name: String,
    pub protocol: Protocol,
    pub currency: Currency,
    /// Filled once every port is bound.
    pub endpoints: Vec<String>,
    pub latency: LatencySpec,
    pub faults: FaultSpec,
    pub stats: SellerStats,
    listings: Vec<Listing>,
    by_isbn: HashMap<Isbn, Vec<usize>>,
    by_offer_id: HashMap<String, usize>,
    orders: Mutex<OrderBook>,
    /// Seed of deterministic per-key decisions (drift).
    decision_seed: u64,
    /// Seed of the per-key lie decision: apart from drift's, so the two are independent.
    lie_seed: u64,
    /// Seed of the per-key slow-first decision.
    slow_seed: u64,
    lie: Option<LieModel>,
    title_results_max: usize,
    stale_listings: bool,
    /// Requests counted towards `faults.silence_after`.
    silence_count: AtomicU64,
    /// When the silence began, once it has.
    silence_start: OnceLock<Instant>,
}

/// `line` answers "in progress" as `BUSY tag\t<this>`: a short wait, since the first
/// attempt is already running.
pub(crate) const IN_PROGRESS_RETRY_MS: u64 = 100;

impl SellerState {
    pub(crate) fn new(setup: SellerSetup) -> SellerState {
        let mut by_isbn: HashMap<Isbn, Vec<usize>> = HashMap::new();
        let mut by_offer_id = HashMap::with_capacity(setup.offers.len());
        let mut listings = Vec::with_capacity(setup.offers.len());
        for (i, offer) in setup.offers.into_iter().enumerate() {
            by_isbn.entry(offer.isbn).or_default().push(i);
            by_offer_id.insert(offer.offer_id.clone(), i);
            listings.push(Listing {
                title_lower: offer.title.to_lowercase(),
                stock: AtomicU32::new(offer.quantity),
                offer,
            });
        }
        let decision_seed = mix(setup.seed, fnv1a(setup.name.as_bytes()) ^ 0xD21F7);
        SellerState {
            decision_seed,
            lie_seed: mix(decision_seed, 0x11E5),
            slow_seed: mix(decision_seed, 0x5105),
            lie: setup.lie,
            name: setup.name,
            protocol: setup.protocol,
            currency: setup.currency,
            endpoints: Vec::new(),
            latency: setup.latency,
            faults: setup.faults,
            stats: SellerStats::default(),
            listings,
            by_isbn,
            by_offer_id,
            orders: Mutex::new(OrderBook::default()),
            title_results_max: setup.title_results_max,
            stale_listings: setup.stale_listings,
            silence_count: AtomicU64::new(0),
            silence_start: OnceLock::new(),
        }
    }

    /// Counts one quote, order or cancel towards `faults.silence_after` and says whether
    /// it goes unanswered: the seller is silent on a connection accepted at `accepted`
    /// from the moment the silence begins, for good, if the connection was accepted
    /// before the silence ended.
    pub(crate) fn silenced(&self, accepted: Instant) -> bool {
        let after = self.faults.silence_after;
        if after == 0 {
            return false;
        }
        let n = self.silence_count.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= after {
            let _ = self.silence_start.set(Instant::now());
        }
        match self.silence_start.get() {
            Some(start) => accepted < *start + Duration::from_millis(self.faults.silence_ms),
            None => false,
        }
    }

    /// ISBNs this seller stocks (at start).
    pub(crate) fn isbns(&self) -> impl Iterator<Item = &Isbn> {
        self.by_isbn.keys()
    }

    /// Whether the seller has any offer for `isbn`.
    pub(crate) fn stocks(&self, isbn: &Isbn) -> bool {
        self.by_isbn.contains_key(isbn)
    }

    /// Number of offers.
    #[cfg(test)]
    pub(crate) fn offer_count(&self) -> usize {
        self.listings.len()
    }

    fn current(&self, listing: &Listing) -> Option<SellerOffer> {
        let stock = listing.stock.load(Ordering::Relaxed);
        if stock == 0 && !self.stale_listings {
            // Sold-out listings disappear from search, as on real marketplaces.
            return None;
        }
        let mut offer = listing.offer.clone();
        offer.quantity = stock.max(1);
        Some(offer)
    }

    /// Offers matching a query, with their current stock; sold-out ones are left out.
    pub(crate) fn quote(&self, query: &QuoteQuery) -> Vec<SellerOffer> {
        match query {
            QuoteQuery::Isbn(isbn) => self
                .by_isbn
                .get(isbn)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|i| self.listings.get(*i))
                        .filter_map(|l| self.current(l))
                        .collect()
                })
                .unwrap_or_default(),
            QuoteQuery::Title(text) => {
                let needle = text.trim().to_lowercase();
                if needle.is_empty() {
                    return Vec::new();
                }
                self.listings
                    .iter()
                    .filter(|l| l.title_lower.contains(&needle))
                    .filter_map(|l| self.current(l))
                    .take(self.title_results_max)
                    .collect()
            }
        }
    }

    fn book(&self) -> MutexGuard<'_, OrderBook> {
        // A panic while holding the lock cannot leave the book half-updated in a way that
        // matters for a simulator, so a poisoned lock is simply taken over.
        self.orders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The total an order meets: the quoted one, or the drifted one when this order's
    /// idempotency key falls into the drift share. Deterministic per key, so a retry of
    /// the same order sees the same price.
    fn price_for(&self, listing: &Listing, key: &str) -> (i64, bool) {
        let base = listing.offer.price.saturating_add(listing.offer.shipping);
        let f = &self.faults;
        if f.drift_rate > 0.0 && unit_of(self.decision_seed, key.as_bytes()) < f.drift_rate {
            let basis_points = (f.drift_pct * 100.0).round() as i128;
            let extra = (i128::from(base) * basis_points + 5_000) / 10_000;
            let extra = i64::try_from(extra).unwrap_or(i64::MAX).max(1);
            (base.saturating_add(extra), true)
        } else {
            (base, false)
        }
    }

    /// What an order booked at the honest total `honest` is booked and confirmed at:
    /// both `honest`, unless this key falls into the lie share. Deterministic per key,
    /// like drift.
    fn booked_and_confirmed(&self, key: &str, honest: i64) -> (i64, Money) {
        let truth = (honest, Money::new(honest, self.currency));
        let Some(lie) = &self.lie else {
            return truth;
        };
        let rate = self.faults.confirm_lie_rate;
        if rate <= 0.0 || unit_of(self.lie_seed, key.as_bytes()) >= rate {
            return truth;
        }
        match lie {
            LieModel::Negative => (honest, Money::new(honest.saturating_neg(), self.currency)),
            LieModel::OtherCurrency { to, fx } => {
                match fx.convert(Money::new(honest, self.currency), *to) {
                    Ok(converted) => (honest, converted),
                    // Only absurd amounts overflow; confirm honestly rather than fail.
                    Err(_) => truth,
                }
            }
            LieModel::Inflated { basis_points } => {
                let booked = inflate(honest, *basis_points);
                (booked, Money::new(booked, self.currency))
            }
        }
    }

    /// Whether the first attempt of `key` is slow, and for how long. Deterministic per
    /// key, like drift.
    fn slow_first(&self, key: &str) -> Option<Duration> {
        let f = &self.faults;
        if f.order_slow_first_rate > 0.0
            && unit_of(self.slow_seed, key.as_bytes()) < f.order_slow_first_rate
        {
            Some(Duration::from_millis(f.order_slow_first_ms))
        } else {
            None
        }
    }

    /// Decides an order: the stored confirmation for a known idempotency key, "in
    /// progress" while the key's slow first attempt runs, else the outcome of a new
    /// attempt (booked at once when it is an order, so a concurrent repeat sees it).
    pub(crate) fn place(&self, req: &OrderRequest) -> Result<Placed, OrderError> {
        let index = *self
            .by_offer_id
            .get(&req.offer_id)
            .ok_or(OrderError::UnknownOffer)?;
        let listing = self.listings.get(index).ok_or(OrderError::UnknownOffer)?;
        let mut book = self.book();
        if book.in_flight.contains(&req.idempotency_key) {
            return Ok(Placed::Now(OrderReply::InProgress));
        }
        if let Some(entry) = book
            .by_key
            .get(&req.idempotency_key)
            .and_then(|i| book.orders.get(*i))
        {
            return Ok(Placed::Now(OrderReply::Outcome(OrderOutcome::Ordered {
                order_id: entry.record.order_id.clone(),
                total: entry.confirmed,
            })));
        }
        let outcome = self.new_attempt(&mut book, index, listing, req)?;
        match self.slow_first(&req.idempotency_key) {
            Some(hold) => {
                book.in_flight.insert(req.idempotency_key.clone());
                Ok(Placed::Held { outcome, hold })
            }
            None => Ok(Placed::Now(OrderReply::Outcome(outcome))),
        }
    }

    /// The first (or a not remembered) attempt of a key: currency, stock and price
    /// checks, then the booking.
    fn new_attempt(
        &self,
        book: &mut OrderBook,
        index: usize,
        listing: &Listing,
        req: &OrderRequest,
    ) -> Result<OrderOutcome, OrderError> {
        if req.expected_total.currency != self.currency {
            return Err(OrderError::WrongCurrency {
                found: req.expected_total.currency,
                expected: self.currency,
            });
        }
        if listing.stock.load(Ordering::Relaxed) == 0 {
            return Ok(OrderOutcome::SoldOut);
        }
        let (total, drifted) = self.price_for(listing, &req.idempotency_key);
        let expected = req.expected_total.minor;
        let accept = if drifted {
            expected == total
        } else {
            expected >= total
        };
        if !accept {
            return Ok(OrderOutcome::PriceChanged {
                total: Money::new(total, self.currency),
            });
        }
        // Only changed under the book lock, so load + store cannot race with another order.
        let left = listing.stock.load(Ordering::Relaxed);
        listing
            .stock
            .store(left.saturating_sub(1), Ordering::Relaxed);
        let n = book.orders.len() + 1;
        let order_id = match self.protocol {
            Protocol::Json => format!("so-{n}"),
            Protocol::Xml => format!("x-{n}"),
            Protocol::Line => format!("LO{n}"),
        };
        let (booked, confirmed) = self.booked_and_confirmed(&req.idempotency_key, total);
        let record = AdminOrder {
            order_id: order_id.clone(),
            offer_id: listing.offer.offer_id.clone(),
            isbn: listing.offer.isbn.as_str().to_string(),
            total_minor: booked,
            currency: self.currency.code().to_string(),
            status: AdminOrderStatus::Placed,
            idempotency_key: req.idempotency_key.clone(),
        };
        let at = book.orders.len();
        book.orders.push(OrderEntry {
            record,
            confirmed,
            listing: index,
        });
        book.by_key.insert(req.idempotency_key.clone(), at);
        book.by_id.insert(order_id.clone(), at);
        Ok(OrderOutcome::Ordered {
            order_id,
            total: confirmed,
        })
    }

    /// Ends the "in progress" window of a key's slow first attempt.
    pub(crate) fn first_answered(&self, key: &str) {
        self.book().in_flight.remove(key);
    }

    /// Places an order and waits as the model says: a slow first attempt answers after
    /// its hold. The hold runs in a task of its own, so the key leaves "in progress" on
    /// time even when the client gives up on this request.
    pub(crate) async fn order(
        self: &Arc<Self>,
        req: &OrderRequest,
    ) -> Result<OrderReply, OrderError> {
        match self.place(req)? {
            Placed::Now(reply) => Ok(reply),
            Placed::Held { outcome, hold } => {
                let seller = self.clone();
                let key = req.idempotency_key.clone();
                let task = tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    seller.first_answered(&key);
                });
                if task.await.is_err() {
                    // The task cannot panic; should it ever, do not leave the key stuck.
                    self.first_answered(&req.idempotency_key);
                }
                Ok(OrderReply::Outcome(outcome))
            }
        }
    }

    /// Cancels an order and gives its copy back; cancelling twice is fine.
    pub(crate) fn cancel(&self, order_id: &str) -> Result<(), CancelError> {
        let mut book = self.book();
        let at = *book.by_id.get(order_id).ok_or(CancelError::UnknownOrder)?;
        let entry = book.orders.get_mut(at).ok_or(CancelError::UnknownOrder)?;
        if entry.record.status == AdminOrderStatus::Placed {
            entry.record.status = AdminOrderStatus::Cancelled;
            if let Some(listing) = self.listings.get(entry.listing) {
                let left = listing.stock.load(Ordering::Relaxed);
                listing
                    .stock
                    .store(left.saturating_add(1), Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// How long this cancel request stalls before it takes effect, if it does.
    fn cancel_stall(&self) -> Option<Duration> {
        let f = &self.faults;
        if f.cancel_stall_rate > 0.0 && fast_unit() < f.cancel_stall_rate {
            Some(Duration::from_millis(f.cancel_stall_ms))
        } else {
            None
        }
    }

    /// Cancels an order as the model says: a stalled cancel takes effect (and answers)
    /// only after its stall, in a task of its own so that it takes effect then even when
    /// the client has given up.
    pub(crate) async fn cancel_answer(self: &Arc<Self>, order_id: &str) -> Result<(), CancelError> {
        let Some(stall) = self.cancel_stall() else {
            return self.cancel(order_id);
        };
        let seller = self.clone();
        let id = order_id.to_string();
        let task = tokio::spawn(async move {
            tokio::time::sleep(stall).await;
            seller.cancel(&id)
        });
        match task.await {
            Ok(result) => result,
            // The task cannot panic; should it ever, cancel here rather than not at all.
            Err(_) => self.cancel(order_id),
        }
    }

    /// Every order, oldest first.
    pub(crate) fn admin_orders(&self) -> AdminOrders {
        let book = self.book();
        AdminOrders {
            seller: self.name.clone(),
            orders: book.orders.iter().map(|e| e.record.clone()).collect(),
        }
    }

    /// Draws the fault for one request.
    pub(crate) fn draw_fault(&self, kind: RequestKind) -> Fault {
        let f = &self.faults;
        if kind == RequestKind::Quote && f.hang {
            return Fault::Hang;
        }
        let sum = f.overload_rate + f.error_rate + f.garbage_rate + f.close_rate + f.hang_rate;
        if sum <= 0.0 {
            return Fault::None;
        }
        let u = fast_unit();
        let mut edge = f.overload_rate;
        if u < edge {
            return Fault::Overload;
        }
        edge += f.error_rate;
        if u < edge {
            return Fault::Error;
        }
        if kind == RequestKind::Quote {
            edge += f.garbage_rate;
            if u < edge {
                return Fault::Garbage;
            }
            edge += f.close_rate;
            if u < edge {
                return Fault::Close;
            }
            edge += f.hang_rate;
            if u < edge {
                return Fault::Hang;
            }
        }
        Fault::None
    }

    /// The delay of one answer.
    pub(crate) fn delay(&self) -> Duration {
        let l = &self.latency;
        let ms = if l.slow_share > 0.0 && fast_unit() < l.slow_share {
            l.slow_ms
        } else if l.jitter_ms > 0.0 {
            l.base_ms + fast_unit() * l.jitter_ms
        } else {
            l.base_ms
        };
        Duration::from_secs_f64((ms / 1000.0).max(0.0))
    }

    /// The counters.
    pub(crate) fn stats_view(&self) -> SellerStatsView {
        let s = &self.stats;
        SellerStatsView {
            name: self.name.clone(),
            protocol: self.protocol.as_str(),
            endpoints: self.endpoints.clone(),
            connections_accepted: s.connections_accepted.load(Ordering::Relaxed),
            requests: RequestCounts {
                quote: s.quote.load(Ordering::Relaxed),
                order: s.order.load(Ordering::Relaxed),
                cancel: s.cancel.load(Ordering::Relaxed),
                other: s.other.load(Ordering::Relaxed),
            },
        }
    }
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// `honest` raised by `basis_points` hundredths of a percent, rounded half to even to the
/// minor unit (exact integer arithmetic, as the engine's FX rounding).
pub(crate) fn inflate(honest: i64, basis_points: i128) -> i64 {
    let numerator = i128::from(honest) * (10_000 + basis_points);
    let q = numerator.div_euclid(10_000);
    let r = numerator.rem_euclid(10_000);
    let up = match (r * 2).cmp(&10_000) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => q % 2 != 0,
    };
    let rounded = if up { q + 1 } else { q };
    i64::try_from(rounded).unwrap_or(i64::MAX)
}
