//! The state of one simulated seller: its offers with live stock, its orders, its fault
//! and latency model and its request counters. Protocol-neutral: the HTTP and line
//! front ends call into it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bookbroker_protocols::admin::{AdminOrder, AdminOrderStatus, AdminOrders};
use bookbroker_protocols::{
    Currency, Isbn, Money, OrderOutcome, OrderRequest, QuoteQuery, SellerOffer,
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
    record: AdminOrder,
    listing: usize,
}

/// Orders of a seller. Orders are far rarer than quotes, so one lock per seller is fine;
/// it makes "check the idempotency key, take a copy, record the order" one atomic step.
#[derive(Debug, Default)]
struct OrderBook {
    by_key: HashMap<String, usize>,
    by_id: HashMap<String, usize>,
    orders: Vec<OrderEntry>,
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
    title_results_max: usize,
    stale_listings: bool,
}

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
        SellerState {
            decision_seed: mix(setup.seed, fnv1a(setup.name.as_bytes()) ^ 0xD21F7),
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

    /// Places an order (or returns the first result for a known idempotency key).
    pub(crate) fn order(&self, req: &OrderRequest) -> Result<OrderOutcome, OrderError> {
        let index = *self
            .by_offer_id
            .get(&req.offer_id)
            .ok_or(OrderError::UnknownOffer)?;
        let listing = self.listings.get(index).ok_or(OrderError::UnknownOffer)?;
        let mut book = self.book();
        if let Some(entry) = book
            .by_key
            .get(&req.idempotency_key)
            .and_then(|i| book.orders.get(*i))
        {
            return Ok(OrderOutcome::Ordered {
                order_id: entry.record.order_id.clone(),
                total: Money::new(entry.record.total_minor, self.currency),
            });
        }
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
        let record = AdminOrder {
            order_id: order_id.clone(),
            offer_id: listing.offer.offer_id.clone(),
            isbn: listing.offer.isbn.as_str().to_string(),
            total_minor: total,
            currency: self.currency.code().to_string(),
            status: AdminOrderStatus::Placed,
            idempotency_key: req.idempotency_key.clone(),
        };
        let at = book.orders.len();
        book.orders.push(OrderEntry {
            record,
            listing: index,
        });
        book.by_key.insert(req.idempotency_key.clone(), at);
        book.by_id.insert(order_id.clone(), at);
        Ok(OrderOutcome::Ordered {
            order_id,
            total: Money::new(total, self.currency),
        })
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
