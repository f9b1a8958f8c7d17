//! Per-customer request rates (`customers[].rate_per_sec`), shared by every core.
//!
//! Each limited customer has one atomic word: the generic cell rate algorithm's
//! "theoretical arrival time". A request moves it one emission interval ahead with a
//! compare-and-swap and is refused when that would put it further ahead of now than the
//! burst allows. One word per customer keeps the limit exact across cores, where a share
//! per core would starve a customer whose few keep-alive connections the kernel happened
//! to put on one core. The word is contended only by that customer's own requests.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::CustomerConfig;

/// One customer's limit.
#[derive(Debug)]
struct Cell {
    /// Nanoseconds between requests at the configured rate.
    interval_ns: u64,
    /// How far ahead of now the arrival time may run: `burst × interval`.
    tolerance_ns: u64,
    /// The theoretical arrival time of the next request, in nanoseconds since `epoch`.
    tat_ns: AtomicU64,
}

/// Every limited customer's cell; customers without `rate_per_sec` are not in it.
#[derive(Debug)]
pub struct RateLimits {
    epoch: Instant,
    by_id: HashMap<Box<str>, Cell>,
}

impl RateLimits {
    /// The limits of the configured customers.
    pub fn from_config(customers: &[CustomerConfig]) -> RateLimits {
        let by_id = customers
            .iter()
            .filter_map(|c| {
                let rate = u64::from(c.rate_per_sec?.max(1));
                let burst = u64::from(c.burst.unwrap_or(c.rate_per_sec?).max(1));
                let interval_ns = 1_000_000_000 / rate;
                Some((
                    Box::from(c.id.as_str()),
                    Cell {
                        interval_ns,
                        tolerance_ns: interval_ns.saturating_mul(burst),
                        tat_ns: AtomicU64::new(0),
                    },
                ))
            })
            .collect();
        RateLimits {
            epoch: Instant::now(),
            by_id,
        }
    }

    /// Takes one request of `customer` at `now`: `Ok` when it is within the limit, or
    /// how long until the next one would be.
    pub fn take(&self, customer: &str, now: Instant) -> Result<(), Duration> {
        if self.by_id.is_empty() {
            return Ok(());
        }
        let Some(cell) = self.by_id.get(customer) else {
            return Ok(());
        };
        let now_ns =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut tat = cell.tat_ns.load(Ordering::Relaxed);
        loop {
            let next = tat.max(now_ns).saturating_add(cell.interval_ns);
            let ahead = next.saturating_sub(now_ns);
            if ahead > cell.tolerance_ns {
                return Err(Duration::from_nanos(ahead - cell.tolerance_ns));
            }
            match cell
                .tat_ns
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(seen) => tat = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: Option<u32>) -> RateLimits {
        RateLimits::from_config(&[
            CustomerConfig {
                id: "alice".into(),
                api_key_sha256: String::new(),
                rate_per_sec: Some(rate),
                burst,
            },
            CustomerConfig {
                id: "bob".into(),
                api_key_sha256: String::new(),
                rate_per_sec: None,
                burst: None,
            },
        ])
    }

    #[test]
    fn allows_the_burst_then_one_per_interval() {
        let l = limits(10, Some(3));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take("alice", t0).is_ok());
        }
        let wait = l.take("alice", t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        // One interval later exactly one more fits.
        let t1 = t0 + Duration::from_millis(100);
        assert!(l.take("alice", t1).is_ok());
        assert!(l.take("alice", t1).is_err());
        // After a long pause the burst is back, not more.
        let t2 = t1 + Duration::from_secs(10);
        for _ in 0..3 {
            assert!(l.take("alice", t2).is_ok());
        }
        assert!(l.take("alice", t2).is_err());
    }

    #[test]
    fn unlimited_and_unknown_customers_pass() {
        let l = limits(1, None);
        let t = Instant::now();
        for _ in 0..1000 {
            assert!(l.take("bob", t).is_ok());
            assert!(l.take("nobody", t).is_ok());
        }
    }

    #[test]
    fn holds_across_threads() {
        let l = std::sync::Arc::new(limits(100, Some(50)));
        let t = Instant::now();
        let ok: usize = (0..4)
            .map(|_| {
                let l = std::sync::Arc::clone(&l);
                std::thread::spawn(move || (0..100).filter(|_| l.take("alice", t).is_ok()).count())
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(ok, 50);
    }
}
