//! The per-core quote cache with single-flight.
//!
//! Keyed by (seller, query). A fresh entry answers without asking the seller; a request
//! for a key whose upstream call is already in flight joins that call instead of making
//! another ("single-flight"), so a burst for a popular book costs each seller one request
//! per core. Only successful answers are kept, for `quotes.cache_ttl_ms`. Cached prices
//! are hints: the purchase lane re-checks the price with the seller when it orders.
//!
//! Bounds: at most `max_entries` keys and `max_bytes` of answers (an estimate of what
//! the entries hold on the heap). An answer larger than `max_bytes` is not kept at all.
//! When a bound is reached, expired answers go first, then the oldest ones. A call in
//! flight is held by its starter's [`Starter`]: if the starter goes away without an
//! answer (its client disconnected, its future was dropped), the entry goes with it, so
//! abandoned calls cannot pile up past the bounds.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::{FutureExt, LocalBoxFuture, Shared};

use bookbroker_protocols::{QuoteQuery, SellerOffer};

use crate::sellers::SellerError;

/// Offers shared between the cache and its readers.
pub type Offers = Rc<Vec<SellerOffer>>;

/// What an upstream call yields: the offers or why not, and whether it was hedged.
pub type FlightOutput = (Result<Offers, SellerError>, bool);

/// An upstream call that several requests may await.
pub type Flight = Shared<LocalBoxFuture<'static, FlightOutput>>;

/// Cache key: seller index and query.
pub type Key = (usize, QuoteQuery);

enum Entry {
    Fresh {
        expires: Instant,
        offers: Offers,
        /// What [`weight`] said when it was stored, so removal subtracts the same.
        bytes: usize,
    },
    InFlight {
        flight: Flight,
        started: Instant,
        /// Which start this is, so a late [`Starter`] cannot touch a newer call's entry.
        id: u64,
    },
}

/// What a lookup found.
pub enum Lookup {
    /// A fresh answer.
    Hit(Offers),
    /// A call in flight to join.
    Join(Flight),
    /// Nothing usable: make the call.
    Miss,
}

/// One core's cache.
pub struct QuoteCache {
    ttl: Duration,
    max_entries: usize,
    max_bytes: usize,
    map: HashMap<Key, Entry>,
    /// Sum of the fresh entries' `bytes`.
    bytes: usize,
    next_id: u64,
}

/// The starter's hold on an in-flight entry. [`Starter::complete`] records the answer;
/// dropping it without an answer removes the entry (see [`single_flight`]).
pub struct Starter<'a> {
    cache: &'a RefCell<QuoteCache>,
    /// `None` once completed, or when the call was not recorded (the cache was full of
    /// calls in flight).
    key: Option<Key>,
    id: u64,
    started: Instant,
}

impl QuoteCache {
    /// A cache keeping answers for `ttl`, holding at most `max_entries` keys (at least
    /// 16) and `max_bytes` of answers.
    pub fn new(ttl: Duration, max_entries: usize, max_bytes: usize) -> QuoteCache {
        QuoteCache {
            ttl,
            max_entries: max_entries.max(16),
            max_bytes,
            map: HashMap::new(),
            bytes: 0,
            next_id: 0,
        }
    }

    /// Looks `key` up at `now`.
    pub fn lookup(&mut self, key: &Key, now: Instant) -> Lookup {
        // A flight that finished without being recorded (its starter gave up between the
        // answer and recording it) is settled here, so it is neither joined forever nor
        // kept past its TTL.
        if let Some(Entry::InFlight {
            flight, started, ..
        }) = self.map.get(key)
        {
            if let Some((result, _)) = flight.peek() {
                let (result, started) = (result.clone(), *started);
                self.settle(key, &result, started);
            }
        }
        match self.map.get(key) {
            Some(Entry::Fresh {
                expires, offers, ..
            }) if now < *expires => Lookup::Hit(Rc::clone(offers)),
            Some(Entry::InFlight { flight, .. }) => Lookup::Join(flight.clone()),
            Some(Entry::Fresh { .. }) => {
                self.remove(key);
                Lookup::Miss
            }
            None => Lookup::Miss,
        }
    }

    /// Records that a call for `key` started at `now`, unless the cache is full of calls
    /// in flight. Returns the start's id, or `None` when it was not recorded (the call
    /// then simply is not shared).
    pub fn start(&mut self, key: Key, flight: Flight, now: Instant) -> Option<u64> {
        self.remove(&key);
        if self.map.len() >= self.max_entries {
            self.evict(now, 0);
        }
        if self.map.len() >= self.max_entries {
            return None;
        }
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.map.insert(
            key,
            Entry::InFlight {
                flight,
                started: now,
                id,
            },
        );
        Some(id)
    }

    /// Records the result of start `id` of `key`: kept until `started + ttl` if it
    /// succeeded and fits, forgotten otherwise. Nothing happens when the entry is no
    /// longer that start's (evicted, or replaced by a newer call).
    pub fn complete(
        &mut self,
        key: &Key,
        id: u64,
        result: &Result<Offers, SellerError>,
        started: Instant,
    ) {
        if matches!(self.map.get(key), Some(Entry::InFlight { id: held, .. }) if *held == id) {
            self.settle(key, result, started);
        }
    }

    /// Start `id` of `key` ended without an answer for its starter. Its flight may have
    /// finished all the same (then it is recorded); otherwise the entry goes. Requests
    /// that joined it keep the call going themselves (any clone of a shared future drives
    /// it) and still get its answer; the next request for the key starts a new call.
    pub fn abandon(&mut self, key: &Key, id: u64) {
        let Some(Entry::InFlight {
            flight,
            started,
            id: held,
        }) = self.map.get(key)
        else {
            return;
        };
        if *held != id {
            return;
        }
        match flight.peek() {
            Some((result, _)) => {
                let (result, started) = (result.clone(), *started);
                self.settle(key, &result, started);
            }
            None => self.remove(key),
        }
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of answers held (the estimate the bound applies to).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Turns the entry of `key` into a fresh answer or removes it.
    fn settle(&mut self, key: &Key, result: &Result<Offers, SellerError>, started: Instant) {
        self.remove(key);
        let Ok(offers) = result else {
            return;
        };
        let expires = started + self.ttl;
        let bytes = weight(key, offers);
        if bytes > self.max_bytes {
            return;
        }
        if self.bytes + bytes > self.max_bytes || self.map.len() >= self.max_entries {
            self.evict(Instant::now(), bytes);
        }
        if self.bytes + bytes > self.max_bytes || self.map.len() >= self.max_entries {
            // Only calls in flight are left; keeping this answer would break a bound.
            return;
        }
        self.bytes += bytes;
        self.map.insert(
            key.clone(),
            Entry::Fresh {
                expires,
                offers: Rc::clone(offers),
                bytes,
            },
        );
    }

    fn remove(&mut self, key: &Key) {
        if let Some(Entry::Fresh { bytes, .. }) = self.map.remove(key) {
            self.bytes = self.bytes.saturating_sub(bytes);
        }
    }

    /// Makes room for one more entry of `incoming` bytes: drops expired answers, then the
    /// oldest answers, down to seven eighths of each bound so that eviction (a pass over
    /// the map) runs once per eighth of the cache filled rather than on every insert.
    /// Calls in flight are never dropped here; their starters hold them.
    fn evict(&mut self, now: Instant, incoming: usize) {
        let mut freed = 0;
        self.map.retain(|_, e| match e {
            Entry::Fresh { expires, bytes, .. } if now >= *expires => {
                freed += *bytes;
                false
            }
            _ => true,
        });
        self.bytes = self.bytes.saturating_sub(freed);
        let entry_goal = self.max_entries - self.max_entries / 8;
        let byte_goal = (self.max_bytes - self.max_bytes / 8).saturating_sub(incoming);
        if self.map.len() < entry_goal && self.bytes <= byte_goal {
            return;
        }
        // Every answer lives for the same TTL, so the earliest to expire is the oldest.
        let mut fresh: Vec<(Instant, usize)> = self
            .map
            .values()
            .filter_map(|e| match e {
                Entry::Fresh { expires, bytes, .. } => Some((*expires, *bytes)),
                Entry::InFlight { .. } => None,
            })
            .collect();
        fresh.sort_unstable_by_key(|(expires, _)| *expires);
        let mut entries = self.map.len();
        let mut bytes = self.bytes;
        let mut cutoff = None;
        for (expires, b) in fresh {
            if entries < entry_goal && bytes <= byte_goal {
                break;
            }
            entries -= 1;
            bytes = bytes.saturating_sub(b);
            cutoff = Some(expires);
        }
        let Some(cutoff) = cutoff else {
            return;
        };
        let mut freed = 0;
        self.map.retain(|_, e| match e {
            Entry::Fresh { expires, bytes, .. } if *expires <= cutoff => {
                freed += *bytes;
                false
            }
            _ => true,
        });
        self.bytes = self.bytes.saturating_sub(freed);
    }
}

impl Starter<'_> {
    /// Records the call's answer in the cache.
    pub fn complete(mut self, result: &Result<Offers, SellerError>) {
        if let Some(key) = self.key.take() {
            match self.cache.try_borrow_mut() {
                Ok(mut cache) => cache.complete(&key, self.id, result, self.started),
                Err(_) => tracing::warn!("quote cache busy; an answer was not recorded"),
            }
        }
    }
}

impl Drop for Starter<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            // Nothing holds the cache across an await, so this borrow does not fail; if
            // it ever did, the entry would stay until a lookup settles or replaces it.
            match self.cache.try_borrow_mut() {
                Ok(mut cache) => cache.abandon(&key, self.id),
                Err(_) => tracing::warn!("quote cache busy; an abandoned call was kept"),
            }
        }
    }
}

/// Makes `flight` the call for `key`, awaits it and records its answer. If this future
/// is dropped before the answer (the customer went away), the entry is removed, or
/// recorded when the call finished anyway.
pub async fn single_flight(
    cache: &RefCell<QuoteCache>,
    key: Key,
    flight: Flight,
    now: Instant,
) -> FlightOutput {
    let id = cache.borrow_mut().start(key.clone(), flight.clone(), now);
    let starter = Starter {
        cache,
        key: id.is_some().then_some(key),
        id: id.unwrap_or(0),
        started: now,
    };
    let out = flight.await;
    starter.complete(&out.0);
    out
}

/// Wraps a future as a joinable flight.
pub fn flight(fut: impl std::future::Future<Output = FlightOutput> + 'static) -> Flight {
    fut.boxed_local().shared()
}

/// An estimate of what an entry holds: the entry and its key, and each offer with its
/// strings. Allocator overhead and spare capacity are left out; the bound is a budget,
/// not an accounting of the heap.
fn weight(key: &Key, offers: &[SellerOffer]) -> usize {
    let key_bytes = std::mem::size_of::<Key>()
        + match &key.1 {
            QuoteQuery::Title(t) => t.len(),
            QuoteQuery::Isbn(_) => 0,
        };
    let offer_bytes: usize = offers
        .iter()
        .map(|o| std::mem::size_of::<SellerOffer>() + o.offer_id.len() + o.title.len())
        .sum();
    std::mem::size_of::<Entry>() + key_bytes + offer_bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use bookbroker_protocols::Isbn;
    use std::cell::RefCell;
    use std::future::Future;

    fn key() -> Key {
        (0, QuoteQuery::Isbn(Isbn::parse("9780131103627").unwrap()))
    }

    #[test]
    fn fresh_answers_hit_until_they_expire() {
        let t0 = Instant::now();
        let mut c = QuoteCache::new(Duration::from_millis(100), 100, 1 << 20);
        let f = flight(async { (Ok(Rc::new(Vec::new())), false) });
        let id = c.start(key(), f, t0).unwrap();
        assert!(matches!(c.lookup(&key(), t0), Lookup::Join(_)));
        c.complete(&key(), id, &Ok(Rc::new(Vec::new())), t0);
        assert!(matches!(
            c.lookup(&key(), t0 + Duration::from_millis(99)),
            Lookup::Hit(_)
        ));
        assert!(matches!(
            c.lookup(&key(), t0 + Duration::from_millis(100)),
            Lookup::Miss
        ));
        assert!(c.is_empty());
    }

    #[test]
    fn failures_are_not_kept() {
        let t0 = Instant::now();
        let mut c = QuoteCache::new(Duration::from_secs(1), 100, 1 << 20);
        let id = c
            .start(
                key(),
                flight(async { (Err(SellerError::Timeout), false) }),
                t0,
            )
            .unwrap();
        c.complete(&key(), id, &Err(SellerError::Timeout), t0);
        assert!(matches!(c.lookup(&key(), t0), Lookup::Miss));
    }

    #[test]
    fn a_finished_flight_nobody_recorded_is_settled_on_lookup() {
        let t0 = Instant::now();
        let mut c = QuoteCache::new(Duration::from_secs(1), 100, 1 << 20);
        let f = flight(async { (Ok(Rc::new(Vec::new())), false) });
        // Drive it to completion without recording it, as if its starter was dropped.
        let _ = futures_lite::future::block_on(f.clone());
        c.start(key(), f, t0);
        assert!(matches!(c.lookup(&key(), t0), Lookup::Hit(_)));
    }

    fn title_key(i: usize) -> Key {
        (0, QuoteQuery::Title(format!("random title {i}")))
    }

    fn offers(n: usize, title_len: usize) -> Offers {
        let offer = SellerOffer {
            offer_id: "o-1".into(),
            isbn: Isbn::parse("9780131103627").unwrap(),
            title: "x".repeat(title_len),
            condition: bookbroker_protocols::Condition::New,
            price: 1000,
            shipping: 100,
            currency: bookbroker_protocols::Currency::parse("USD").unwrap(),
            quantity: 1,
        };
        Rc::new(vec![offer; n])
    }

    /// Polls `fut` once, then drops it: a request whose client went away mid-call.
    fn poll_once_and_drop<F: std::future::Future>(fut: F) {
        let mut fut = std::pin::pin!(fut);
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
    }

    #[test]
    fn a_dropped_starter_leaves_no_entry_and_its_joiner_still_gets_the_answer() {
        let t0 = Instant::now();
        let cache = RefCell::new(QuoteCache::new(Duration::from_secs(1), 100, 1 << 20));
        let (tx, rx) = futures_channel::oneshot::channel::<()>();
        let f = flight(async move {
            let _ = rx.await;
            (Ok(Rc::new(Vec::new())), false)
        });
        let mut starter = Box::pin(single_flight(&cache, key(), f, t0));
        let waker = futures_util::task::noop_waker();
        assert!(starter
            .as_mut()
            .poll(&mut std::task::Context::from_waker(&waker))
            .is_pending());
        let Lookup::Join(joined) = cache.borrow_mut().lookup(&key(), t0) else {
            panic!("a call in flight is joined");
        };
        // The customer who started the call goes away.
        drop(starter);
        assert_eq!(cache.borrow().len(), 0, "the abandoned call is not kept");
        assert!(matches!(
            cache.borrow_mut().lookup(&key(), t0),
            Lookup::Miss
        ));
        // The request that joined drives the call itself and gets the answer.
        let _ = tx.send(());
        let (out, _) = futures_lite::future::block_on(joined);
        assert!(out.is_ok());
    }

    #[test]
    fn entries_stay_within_the_bound_when_starters_are_dropped() {
        let t0 = Instant::now();
        let cache = RefCell::new(QuoteCache::new(Duration::from_secs(60), 16, 1 << 20));
        for i in 0..1000 {
            let f = flight(std::future::pending());
            poll_once_and_drop(single_flight(&cache, title_key(i), f, t0));
            assert!(
                cache.borrow().len() <= 16,
                "{} entries",
                cache.borrow().len()
            );
        }
        // Calls still running (nobody dropped them) do not push it past the bound either.
        let mut running = Vec::new();
        for i in 0..100 {
            let f = flight(std::future::pending());
            let mut call = Box::pin(single_flight(&cache, title_key(5000 + i), f, t0));
            let waker = futures_util::task::noop_waker();
            assert!(call
                .as_mut()
                .poll(&mut std::task::Context::from_waker(&waker))
                .is_pending());
            running.push(call);
            assert!(
                cache.borrow().len() <= 16,
                "{} entries",
                cache.borrow().len()
            );
        }
    }

    #[test]
    fn bytes_stay_within_the_bound_and_an_oversized_answer_is_not_kept() {
        let t0 = Instant::now();
        let max_bytes = 64 * 1024;
        let cache = RefCell::new(QuoteCache::new(Duration::from_secs(60), 100_000, max_bytes));
        for i in 0..200 {
            let answer = offers(10, 200);
            let f = flight(async move { (Ok(answer), false) });
            let (out, _) =
                futures_lite::future::block_on(single_flight(&cache, title_key(i), f, t0));
            assert!(out.is_ok());
            let held = cache.borrow().bytes();
            assert!(held <= max_bytes, "{held} bytes held, bound {max_bytes}");
        }
        assert!(
            cache.borrow().len() > 1,
            "the bound still lets answers be kept"
        );
        // The newest answer is kept; the oldest went first.
        assert!(matches!(
            cache.borrow_mut().lookup(&title_key(199), t0),
            Lookup::Hit(_)
        ));
        assert!(matches!(
            cache.borrow_mut().lookup(&title_key(0), t0),
            Lookup::Miss
        ));

        let huge = offers(1000, 200);
        let f = flight(async move { (Ok(huge), false) });
        let (out, _) = futures_lite::future::block_on(single_flight(&cache, key(), f, t0));
        assert_eq!(
            out.map(|o| o.len()).ok(),
            Some(1000),
            "the caller still gets it"
        );
        assert!(matches!(
            cache.borrow_mut().lookup(&key(), t0),
            Lookup::Miss
        ));
        assert!(cache.borrow().bytes() <= max_bytes);
    }
}
