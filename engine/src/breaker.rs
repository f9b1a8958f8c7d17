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
//!
//! A request is let through as an [`Admission`], which records its outcome. A probe's
//! admission dropped without an outcome (the probe was refused by our own concurrency
//! cap, or its customer went away) hands the probe to the next request instead of
//! leaving the breaker waiting for an answer that will never be recorded.

use std::cell::RefCell;
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
    /// Counts probes let through, so an old probe's admission cannot end a newer probe.
    probes: u64,
}

/// A request the breaker let through. Record its outcome with [`Admission::success`],
/// [`Admission::failure`] or [`Admission::busy`]; dropping it records nothing.
#[derive(Debug)]
pub struct Admission<'a> {
    breaker: &'a RefCell<Breaker>,
    /// `Some(n)` when this request is the `n`-th half-open probe.
    probe: Option<u64>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: State::Closed { failures: 0 },
            cooldown: BASE_COOLDOWN,
            not_before: None,
            probes: 0,
        }
    }
}

impl Breaker {
    /// Lets a request through `breaker` if it may be sent now.
    pub fn enter(breaker: &RefCell<Breaker>, now: Instant) -> Result<Admission<'_>, Refusal> {
        let mut b = breaker.borrow_mut();
        let was_probing = matches!(b.state, State::HalfOpen { probing: true });
        b.admit(now)?;
        let probe =
            (!was_probing && matches!(b.state, State::HalfOpen { probing: true })).then(|| {
                b.probes = b.probes.wrapping_add(1);
                b.probes
            });
        Ok(Admission { breaker, probe })
    }

    /// Whether a request may be sent now. Prefer [`Breaker::enter`]: a probe let
    /// through here must be ended by an outcome, or the breaker stays half-open with
    /// its probe out for good.
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

    /// Probe `n` ended without an outcome. It counts as neither a success nor a failure:
    /// the seller was not asked (our own concurrency cap refused the request) or we
    /// stopped listening (the customer went away), so we learned nothing about it.
    /// Counting it a failure would double the cool-down for our own reasons (mass
    /// disconnects could keep a healthy seller out for the longest cool-down); a success
    /// would send full traffic to a seller that may still be broken. The breaker stays
    /// half-open and the next request is the probe.
    fn abandon_probe(&mut self, n: u64) {
        if self.probes == n && self.state == (State::HalfOpen { probing: true }) {
            self.state = State::HalfOpen { probing: false };
        }
    }
}

impl Admission<'_> {
    /// Whether this request is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// The request answered usefully.
    pub fn success(mut self) {
        self.probe = None;
        self.with(Breaker::on_success);
    }

    /// The request timed out or failed. Returns whether this opened the breaker.
    pub fn failure(mut self, now: Instant) -> bool {
        self.probe = None;
        self.with(|b| b.on_failure(now)).unwrap_or(false)
    }

    /// The seller said it is overloaded and named a delay (or not).
    pub fn busy(mut self, now: Instant, retry_after: Option<Duration>) {
        self.probe = None;
        self.with(|b| b.on_busy(now, retry_after));
    }

    fn with<T>(&self, f: impl FnOnce(&mut Breaker) -> T) -> Option<T> {
        match self.breaker.try_borrow_mut() {
            Ok(mut b) => Some(f(&mut b)),
            // Nothing holds the breaker across an await, so this does not happen; should
            // it, one outcome is lost, which the next one makes up for.
            Err(_) => {
                tracing::warn!("circuit breaker busy; an outcome was not recorded");
                None
            }
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if let Some(n) = self.probe.take() {
            self.with(|b| b.abandon_probe(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

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

    fn open_breaker(b: &RefCell<Breaker>, now: Instant) {
        for _ in 0..FAILURES_TO_OPEN {
            let a = Breaker::enter(b, now).expect("closed");
            a.failure(now);
        }
        assert_eq!(Breaker::enter(b, now).err(), Some(Refusal::Open));
    }

    #[test]
    fn an_abandoned_probe_hands_the_probe_to_the_next_request() {
        let t0 = Instant::now();
        let b = RefCell::new(Breaker::default());
        open_breaker(&b, t0);
        let later = t0 + BASE_COOLDOWN;
        let probe = Breaker::enter(&b, later).expect("one probe");
        assert!(probe.is_probe());
        assert_eq!(Breaker::enter(&b, later).err(), Some(Refusal::Open));
        // The probe ends `unavailable` (our cap was full) or its customer went away.
        drop(probe);
        let next = Breaker::enter(&b, later).expect("the next request probes");
        assert!(next.is_probe());
        assert_eq!(Breaker::enter(&b, later).err(), Some(Refusal::Open));
        // Neither a failure (no doubled cool-down) nor a success (still one probe).
        assert!(next.failure(later));
        assert_eq!(
            Breaker::enter(&b, later + BASE_COOLDOWN * 2).err(),
            None,
            "one failed probe doubled the cool-down once, not twice"
        );
    }

    #[test]
    fn a_stale_probe_does_not_end_a_newer_one() {
        let t0 = Instant::now();
        let b = RefCell::new(Breaker::default());
        open_breaker(&b, t0);
        let t1 = t0 + BASE_COOLDOWN;
        let first = Breaker::enter(&b, t1).expect("probe");
        // Something else reopens the breaker while the first probe is still out.
        b.borrow_mut().on_failure(t1);
        let t2 = t1 + BASE_COOLDOWN * 2;
        let second = Breaker::enter(&b, t2).expect("a new probe");
        assert!(second.is_probe());
        drop(first);
        assert_eq!(
            Breaker::enter(&b, t2).err(),
            Some(Refusal::Open),
            "still one probe at a time"
        );
        second.success();
        assert!(Breaker::enter(&b, t2).is_ok());
    }
}
