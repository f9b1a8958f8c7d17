//! Hedged quote requests with a budget ("The Tail at Scale"; Finagle's
//! BackupRequestFilter and RetryBudget).
//!
//! Per (seller, core): a [`LatencyWindow`] of recent successful latencies, and a
//! [`Budget`] of tokens. A quote not answered by the window's p(1−b) latency is sent again
//! (to another connection or endpoint) if the budget has a token; the first answer wins.
//! Every primary request deposits `b` tokens and every hedge withdraws one, plus a small
//! per-second floor, so hedges never exceed `b` × primaries + floor × seconds: under
//! overload, when every request is slow, hedging switches itself off instead of doubling
//! the load. Only quotes are hedged; orders and payments never are.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Fewest samples before the window's percentile is trusted.
pub const MIN_SAMPLES: u64 = 20;

/// Recent successful latencies: two rotating HdrHistograms, so the percentile always
/// reflects between one and two windows of history.
pub struct LatencyWindow {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    started: Instant,
    window: Duration,
}

impl LatencyWindow {
    /// A window of `window` length (microsecond resolution, 1 µs to 60 s).
    pub fn new(window: Duration) -> Result<LatencyWindow, hdrhistogram::CreationError> {
        Ok(LatencyWindow {
            current: Histogram::new_with_bounds(1, 60_000_000, 2)?,
            previous: Histogram::new_with_bounds(1, 60_000_000, 2)?,
            started: Instant::now(),
            window,
        })
    }

    fn rotate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.started);
        if elapsed >= self.window * 2 {
            // Idle for two windows: everything we knew is stale.
            self.previous.reset();
            self.current.reset();
            self.started = now;
        } else if elapsed >= self.window {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.reset();
            self.started = now;
        }
    }

    /// Records one successful request's latency.
    pub fn record(&mut self, latency: Duration, now: Instant) {
        self.rotate(now);
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.current.saturating_record(us);
    }

    /// The `quantile` latency over the last one to two windows, once there are enough
    /// samples.
    pub fn quantile(&mut self, quantile: f64, now: Instant) -> Option<Duration> {
        self.rotate(now);
        let n = self.current.len() + self.previous.len();
        if n < MIN_SAMPLES {
            return None;
        }
        // Merge lazily: the larger window answers alone when the other is nearly empty.
        let us = if self.previous.is_empty() {
            self.current.value_at_quantile(quantile)
        } else if self.current.is_empty() {
            self.previous.value_at_quantile(quantile)
        } else {
            let mut merged = self.previous.clone();
            if merged.add(&self.current).is_err() {
                return None;
            }
            merged.value_at_quantile(quantile)
        };
        Some(Duration::from_micros(us))
    }
}

/// A token budget for hedges and retries.
pub struct Budget {
    ratio: f64,
    floor_per_sec: f64,
    tokens: f64,
    max_tokens: f64,
    last: Instant,
}

impl Budget {
    /// `ratio` tokens per primary request plus `floor_per_sec` tokens per second, holding
    /// at most `max_tokens`.
    pub fn new(ratio: f64, floor_per_sec: f64, max_tokens: f64, now: Instant) -> Budget {
        Budget {
            ratio: ratio.max(0.0),
            floor_per_sec: floor_per_sec.max(0.0),
            tokens: 0.0,
            max_tokens: max_tokens.max(1.0),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let secs = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + secs * self.floor_per_sec).min(self.max_tokens);
    }

    /// A primary request was sent.
    pub fn deposit(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = (self.tokens + self.ratio).min(self.max_tokens);
    }

    /// Takes a token for a hedge or retry; false when the budget is empty.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One seller's hedging state on one core.
pub struct HedgeState {
    /// Recent successful latencies.
    pub window: LatencyWindow,
    /// Tokens for hedges.
    pub budget: Budget,
    quantile: f64,
    /// The last computed delay and when: computing a quantile over two histograms costs
    /// microseconds, so it is refreshed every [`DELAY_REFRESH`], not per request.
    cached: Option<(Instant, Option<Duration>)>,
}

/// How long a computed hedge delay is reused.
pub const DELAY_REFRESH: Duration = Duration::from_millis(50);

impl HedgeState {
    /// State for a budget of `b` hedges per primary request (hedging after the p(1−b)
    /// latency) plus `floor_per_sec`.
    pub fn new(
        b: f64,
        floor_per_sec: f64,
        now: Instant,
    ) -> Result<HedgeState, hdrhistogram::CreationError> {
        Ok(HedgeState {
            window: LatencyWindow::new(Duration::from_secs(10))?,
            // A burst allowance of ten seconds of floor, at least a few tokens.
            budget: Budget::new(b, floor_per_sec, (floor_per_sec * 10.0).max(5.0), now),
            quantile: (1.0 - b).clamp(0.5, 0.999),
            cached: None,
        })
    }

    /// When to send a hedge for a request sent now, if the window knows enough.
    pub fn hedge_delay(&mut self, now: Instant) -> Option<Duration> {
        if let Some((at, delay)) = self.cached {
            if now.saturating_duration_since(at) < DELAY_REFRESH {
                return delay;
            }
        }
        let delay = self
            .window
            .quantile(self.quantile, now)
            .map(|d| d.max(Duration::from_micros(500)));
        self.cached = Some((now, delay));
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_bounds_hedges_to_ratio_plus_floor() {
        let t0 = Instant::now();
        let mut b = Budget::new(0.05, 1.0, 10.0, t0);
        let mut hedges = 0;
        // 10,000 primaries over 10 simulated seconds, every one wanting a hedge.
        for i in 0..10_000u32 {
            let now = t0 + Duration::from_millis(u64::from(i));
            b.deposit(now);
            if b.try_withdraw(now) {
                hedges += 1;
            }
        }
        // 5% of 10,000 plus one per second for 10 s.
        assert!(hedges <= 500 + 10, "{hedges}");
        assert!(hedges >= 450, "{hedges}");
    }

    #[test]
    fn window_needs_samples_then_reports_the_quantile() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::new(Duration::from_secs(10)).unwrap();
        for _ in 0..10 {
            w.record(Duration::from_millis(2), t0);
        }
        assert_eq!(w.quantile(0.95, t0), None);
        for i in 0..90 {
            let ms = if i < 85 { 2 } else { 40 };
            w.record(Duration::from_millis(ms), t0);
        }
        let p95 = w.quantile(0.95, t0).unwrap();
        assert!(
            p95 >= Duration::from_millis(2) && p95 < Duration::from_millis(3),
            "{p95:?}"
        );
        let p99 = w.quantile(0.99, t0).unwrap();
        assert!(p99 >= Duration::from_millis(39), "{p99:?}");
    }

    #[test]
    fn window_forgets_after_two_windows() {
        let t0 = Instant::now();
        let mut w = LatencyWindow::new(Duration::from_secs(1)).unwrap();
        for _ in 0..100 {
            w.record(Duration::from_millis(50), t0);
        }
        let later = t0 + Duration::from_millis(2500);
        assert_eq!(w.quantile(0.5, later), None);
    }
}
