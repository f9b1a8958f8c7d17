//! A per-(seller, core) circuit breaker that also honours the seller's `Retry-After`.
//!
//! Closed: every request goes. After [`FAILURES_TO_OPEN`] consecutive failures
//! (timeouts or errors) it opens: nothing is sent for a cool-down, and the seller is
//! reported `unavailable` at once instead of costing every customer the full timeout.
//! Then one probe is let through (half-open); its success closes the breaker, its
//! failure opens it again for twice as long (up to [`MAX_COOLDOWN`]).
//! A seller that says it is overloaded (429/503 `Retry-After`, `BUSY`) is not asked again
//! before the time it named (capped at [`MAX_RETRY_AFTER`]), and is reported
//! `rate_limited` meanwhile.

use std::time::{Duration, Instant};

/// Consecutive failures that open the breaker.
pub const FAILURES_TO_OPEN: u32 = 5;
/// First cool-down.
pub const BASE_COOLDOWN: Duration = Duration::from_millis(500);
/// Longest cool-down.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(10);
/// Longest back-off a seller's `Retry-After` can impose.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(10);

/// Why a request was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The breaker is open (or a probe is already out).
    Open,
    /// The seller asked us to wait.
    RetryAfter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The breaker.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
    cooldown: Duration,
    not_before: Option<Instant>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed { failures: 0 },
            cooldown: BASE_COOLDOWN,
            not_before: None,
        }
    }
}

impl Breaker {
    /// Whether a request may be sent now.
    pub fn admit(&mut self, now: Instant) -> Result<(), Refusal> {
        if let Some(t) = self.not_before {
            if now < t {
                return Err(Refusal::RetryAfter);
            }
            self.not_before = None;
        }
        match self.state {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(Refusal::Open),
            State::Open { .. } | State::HalfOpen { probing: false } => {
                self.state = State::HalfOpen { probing: true };
                Ok(())
            }
            State::HalfOpen { probing: true } => Err(Refusal::Open),
        }
    }

    /// The request answered usefully.
    pub fn on_success(&mut self) {
        self.state = State::Closed { failures: 0 };
        self.cooldown = BASE_COOLDOWN;
    }

    /// The request timed out or failed. Returns whether this opened the breaker.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { failures } if failures + 1 < FAILURES_TO_OPEN => {
                self.state = State::Closed {
                    failures: failures + 1,
                };
                false
            }
            State::Closed { .. } => {
                self.open(now);
                true
            }
            State::HalfOpen { .. } => {
                self.cooldown = (self.cooldown * 2).min(MAX_COOLDOWN);
                self.open(now);
                true
            }
            State::Open { .. } => false,
        }
    }

    /// The seller said it is overloaded and named a delay (or not).
    pub fn on_busy(&mut self, now: Instant, retry_after: Option<Duration>) {
        if let Some(d) = retry_after {
            self.not_before = Some(now + d.min(MAX_RETRY_AFTER));
        }
        // An overloaded seller is alive: a probe that gets BUSY ends the half-open state
        // without counting as a failure.
        if let State::HalfOpen { .. } = self.state {
            self.state = State::Closed { failures: 0 };
        }
    }

    /// Whether the breaker is open now (for metrics).
    pub fn is_open(&self, now: Instant) -> bool {
        matches!(self.state, State::Open { until } if now < until)
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open {
            until: now + self.cooldown,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_consecutive_failures_then_probes_once() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..FAILURES_TO_OPEN {
            assert_eq!(b.admit(t0), Ok(()));
            b.on_failure(t0);
        }
        assert_eq!(b.admit(t0), Err(Refusal::Open));
        let later = t0 + BASE_COOLDOWN;
        assert_eq!(b.admit(later), Ok(()), "one probe");
        assert_eq!(b.admit(later), Err(Refusal::Open), "only one probe");
        b.on_failure(later);
        assert_eq!(
            b.admit(later + BASE_COOLDOWN),
            Err(Refusal::Open),
            "cool-down doubled"
        );
        let t2 = later + BASE_COOLDOWN * 2;
        assert_eq!(b.admit(t2), Ok(()));
        b.on_success();
        assert_eq!(b.admit(t2), Ok(()));
        assert_eq!(b.admit(t2), Ok(()));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..FAILURES_TO_OPEN - 1 {
            b.on_failure(t0);
        }
        b.on_success();
        b.on_failure(t0);
        assert_eq!(b.admit(t0), Ok(()));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        b.on_busy(t0, Some(Duration::from_secs(1)));
        assert_eq!(
            b.admit(t0 + Duration::from_millis(999)),
            Err(Refusal::RetryAfter)
        );
        assert_eq!(b.admit(t0 + Duration::from_secs(1)), Ok(()));
        b.on_busy(t0, Some(Duration::from_secs(3600)));
        assert_eq!(b.admit(t0 + MAX_RETRY_AFTER), Ok(()));
    }
}
