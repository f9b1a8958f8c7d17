//! The per-core quote cache with single-flight.
//!
//! Keyed by (seller, query). A fresh entry answers without asking the seller; a request
//! for a key whose upstream call is already in flight joins that call instead of making
//! another ("single-flight"), so a burst for a popular book costs each seller one request
//! per core. Only successful answers are kept, for `quotes.cache_ttl_ms`. Cached prices
//! are hints: the purchase lane re-checks the price with the seller when it orders.

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
    Fresh { expires: Instant, offers: Offers },
    InFlight { flight: Flight, started: Instant },
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
    map: HashMap<Key, Entry>,
}

impl QuoteCache {
    /// A cache keeping answers for `ttl`, holding at most about `max_entries` keys.
    pub fn new(ttl: Duration, max_entries: usize) -> QuoteCache {
        QuoteCache {
            ttl,
            max_entries: max_entries.max(16),
            map: HashMap::new(),
        }
    }

    /// Looks `key` up at `now`.
    pub fn lookup(&mut self, key: &Key, now: Instant) -> Lookup {
        let Some(entry) = self.map.get_mut(key) else {
            return Lookup::Miss;
        };
        // A flight whose starter went away before recording it has finished all the
        // same: settle it here so it is neither joined forever nor kept past its TTL.
        if let Entry::InFlight { flight, started } = entry {
            if let Some((result, _)) = flight.peek() {
                match result {
                    Ok(offers) => {
                        *entry = Entry::Fresh {
                            expires: *started + self.ttl,
                            offers: Rc::clone(offers),
                        }
                    }
                    Err(_) => {
                        self.map.remove(key);
                        return Lookup::Miss;
                    }
                }
            }
        }
        match self.map.get(key) {
            Some(Entry::Fresh { expires, offers }) if now < *expires => {
                Lookup::Hit(Rc::clone(offers))
            }
            Some(Entry::InFlight { flight, .. }) => Lookup::Join(flight.clone()),
            Some(Entry::Fresh { .. }) => {
                self.map.remove(key);
                Lookup::Miss
            }
            None => Lookup::Miss,
        }
    }

    /// Records that a call for `key` started at `now`.
    pub fn start(&mut self, key: Key, flight: Flight, now: Instant) {
        if self.map.len() >= self.max_entries {
            self.evict(now);
        }
        self.map.insert(
            key,
            Entry::InFlight {
                flight,
                started: now,
            },
        );
    }

    /// Records the call's result: kept until `started + ttl` if it succeeded.
    pub fn complete(&mut self, key: &Key, result: &Result<Offers, SellerError>, started: Instant) {
        match result {
            Ok(offers) => {
                if let Some(entry) = self.map.get_mut(key) {
                    *entry = Entry::Fresh {
                        expires: started + self.ttl,
                        offers: Rc::clone(offers),
                    };
                }
            }
            Err(_) => {
                self.map.remove(key);
            }
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

    /// Drops expired entries; if that is not enough, drops every settled entry.
    fn evict(&mut self, now: Instant) {
        self.map.retain(|_, e| {
            matches!(e, Entry::InFlight { .. })
                || matches!(e, Entry::Fresh { expires, .. } if now < *expires)
        });
        if self.map.len() >= self.max_entries {
            self.map.retain(|_, e| matches!(e, Entry::InFlight { .. }));
        }
    }
}

/// Wraps a future as a joinable flight.
pub fn flight(fut: impl std::future::Future<Output = FlightOutput> + 'static) -> Flight {
    fut.boxed_local().shared()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bookbroker_protocols::Isbn;

    fn key() -> Key {
        (0, QuoteQuery::Isbn(Isbn::parse("9780131103627").unwrap()))
    }

    #[test]
    fn fresh_answers_hit_until_they_expire() {
        let t0 = Instant::now();
        let mut c = QuoteCache::new(Duration::from_millis(100), 100);
        let f = flight(async { (Ok(Rc::new(Vec::new())), false) });
        c.start(key(), f, t0);
        assert!(matches!(c.lookup(&key(), t0), Lookup::Join(_)));
        c.complete(&key(), &Ok(Rc::new(Vec::new())), t0);
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
        let mut c = QuoteCache::new(Duration::from_secs(1), 100);
        c.start(
            key(),
            flight(async { (Err(SellerError::Timeout), false) }),
            t0,
        );
        c.complete(&key(), &Err(SellerError::Timeout), t0);
        assert!(matches!(c.lookup(&key(), t0), Lookup::Miss));
    }

    #[test]
    fn a_finished_flight_nobody_recorded_is_settled_on_lookup() {
        let t0 = Instant::now();
        let mut c = QuoteCache::new(Duration::from_secs(1), 100);
        let f = flight(async { (Ok(Rc::new(Vec::new())), false) });
        // Drive it to completion without recording it, as if its starter was dropped.
        let _ = futures_lite::future::block_on(f.clone());
        c.start(key(), f, t0);
        assert!(matches!(c.lookup(&key(), t0), Lookup::Hit(_)));
    }
}
