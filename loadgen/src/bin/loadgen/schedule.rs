//! The constant-rate timetable (wrk2's open model): global request `j` is due at
//! `start + j / rate`, whatever happened to earlier requests. With several worker
//! threads, thread `k` of `n` owns the global requests `k, k + n, k + 2n, …`, so the
//! threads interleave into one even stream instead of sending in bursts.
//!
//! With a burst period `B` (`--burst`), the same requests are instead due in bursts:
//! every request whose even-spaced time falls in `[k·B, (k+1)·B)` is due at `k·B`.
//! That is the traffic oha's `-q` sends (its tokio timer wakes once a millisecond),
//! offered so the two tools can be compared on the same traffic; latency is still
//! measured from each request's (now burst-aligned) intended time.
//!
//! All arithmetic is on nanosecond offsets from the common start.

/// The part of the timetable one worker thread (a "lane") sends.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Global requests per second.
    rate: f64,
    lane: u64,
    lanes: u64,
    /// Global requests in warm-up plus measurement (intended time before the end).
    global_total: u64,
    /// First global request whose intended time is at or after the warm-up's end.
    first_measured: u64,
    /// Burst period, ns; 0 = evenly spaced.
    burst_ns: u64,
}

/// `ceil(seconds * rate)` = how many global requests are due strictly before `seconds`.
fn requests_before(nanos: u64, rate: f64) -> u64 {
    (nanos as f64 * rate / 1e9).ceil() as u64
}

impl Schedule {
    /// The evenly spaced timetable of lane `lane` (of `lanes`) for a run of
    /// `warmup_ns + duration_ns`.
    pub fn new(rate: f64, lane: usize, lanes: usize, warmup_ns: u64, duration_ns: u64) -> Schedule {
        let lanes = lanes.max(1) as u64;
        Schedule {
            rate,
            lane: (lane as u64).min(lanes - 1),
            lanes,
            global_total: requests_before(warmup_ns.saturating_add(duration_ns), rate),
            first_measured: requests_before(warmup_ns, rate),
            burst_ns: 0,
        }
    }

    /// The same requests, due in bursts every `burst_ns` (0 = evenly spaced).
    pub fn with_burst(mut self, burst_ns: u64) -> Schedule {
        self.burst_ns = burst_ns;
        self
    }

    /// Even-spaced intended time of global request `g`, ns after the start.
    fn even_offset(&self, g: u64) -> u64 {
        (g as f64 * 1e9 / self.rate) as u64
    }

    /// How many of this lane's requests are among the first `global` global ones.
    fn lane_count(&self, global: u64) -> u64 {
        if global > self.lane {
            (global - self.lane).div_ceil(self.lanes)
        } else {
            0
        }
    }

    /// This lane's requests in the whole run (warm-up included).
    pub fn total(&self) -> u64 {
        self.lane_count(self.global_total)
    }

    /// This lane's requests in the measured part of the run.
    pub fn measured_total(&self) -> u64 {
        self.total() - self.lane_count(self.first_measured)
    }

    /// This lane's requests whose intended time is at or before `elapsed_ns`.
    pub fn due(&self, elapsed_ns: u64) -> u64 {
        let global = match elapsed_ns.checked_div(self.burst_ns) {
            None => (elapsed_ns as f64 * self.rate / 1e9).floor() as u64 + 1,
            Some(period) => {
                // Due: every request whose even time lies before the end of the
                // current burst period. Estimated, then corrected against
                // `even_offset` itself so that `due` and `offset_ns` can never
                // disagree through float rounding.
                let end = (period + 1).saturating_mul(self.burst_ns);
                let mut g = requests_before(end, self.rate).min(self.global_total);
                while g > 0 && self.even_offset(g - 1) >= end {
                    g -= 1;
                }
                while g < self.global_total && self.even_offset(g) < end {
                    g += 1;
                }
                g
            }
        };
        self.lane_count(global.min(self.global_total))
    }

    /// Global index of this lane's `i`-th request.
    fn global_index(&self, i: u64) -> u64 {
        self.lane + self.lanes * i
    }

    /// Intended send time of this lane's `i`-th request, in ns after the start.
    pub fn offset_ns(&self, i: u64) -> u64 {
        let even = self.even_offset(self.global_index(i));
        match even.checked_div(self.burst_ns) {
            Some(period) => period * self.burst_ns,
            None => even,
        }
    }

    /// Whether this lane's `i`-th request falls in the measured part (after warm-up).
    pub fn is_measured(&self, i: u64) -> bool {
        self.global_index(i) >= self.first_measured
    }

    /// This lane's first measured request: `is_measured(i)` iff `i >= this`.
    pub fn first_measured_index(&self) -> u64 {
        self.lane_count(self.first_measured)
    }

    /// Period of the release timer: a whole number of this lane's request intervals,
    /// at least `min_tick_ns`, rounded up so a tick never comes before the requests it
    /// is meant to release. In burst mode, the burst period.
    pub fn tick_ns(&self, min_tick_ns: u64) -> u64 {
        if self.burst_ns > 0 {
            return self.burst_ns;
        }
        let lane_period = self.lanes as f64 * 1e9 / self.rate;
        let per_tick = (min_tick_ns as f64 / lane_period).ceil().max(1.0);
        (per_tick * lane_period).ceil().max(1.0) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn one_lane_counts() {
        let s = Schedule::new(1000.0, 0, 1, 0, 10 * S);
        assert_eq!(s.total(), 10_000);
        assert_eq!(s.measured_total(), 10_000);
        // Request 0 is due at once, request 1 after 1 ms.
        assert_eq!(s.due(0), 1);
        assert_eq!(s.due(999_999), 1);
        assert_eq!(s.due(1_000_000), 2);
        assert_eq!(s.due(S / 2), 501);
        // Never more than the run holds, however late we look.
        assert_eq!(s.due(100 * S), 10_000);
        assert_eq!(s.offset_ns(0), 0);
        assert_eq!(s.offset_ns(1), 1_000_000);
        assert_eq!(s.offset_ns(9_999), 9_999_000_000);
    }

    #[test]
    fn fractional_rates() {
        // 3 per second for 1 s: at 0, 1/3 and 2/3 s.
        let s = Schedule::new(3.0, 0, 1, 0, S);
        assert_eq!(s.total(), 3);
        assert_eq!(s.offset_ns(1), 333_333_333);
        assert_eq!(s.due(333_333_332), 1);
        assert_eq!(s.due(333_333_334), 2);
        // 0.5 per second for 3 s: at 0 and 2 s.
        let s = Schedule::new(0.5, 0, 1, 0, 3 * S);
        assert_eq!(s.total(), 2);
        assert_eq!(s.offset_ns(1), 2 * S);
    }

    #[test]
    fn lanes_partition_the_global_stream() {
        let rate = 50_000.0;
        let lanes = 3;
        let all: Vec<Schedule> = (0..lanes)
            .map(|k| Schedule::new(rate, k, lanes, 2 * S, 10 * S))
            .collect();
        assert_eq!(all.iter().map(Schedule::total).sum::<u64>(), 600_000);
        assert_eq!(
            all.iter().map(Schedule::measured_total).sum::<u64>(),
            500_000
        );
        for t in [
            0,
            1,
            19_999,
            20_000,
            20_001,
            1_234_567,
            S,
            7 * S + 3,
            13 * S,
        ] {
            let sum: u64 = all.iter().map(|s| s.due(t)).sum();
            let global = ((t as f64 * rate / 1e9).floor() as u64 + 1).min(600_000);
            assert_eq!(sum, global, "at {t} ns");
        }
        // Lane 1's requests sit at global indices 1, 4, 7, …
        assert_eq!(all[1].offset_ns(0), 20_000);
        assert_eq!(all[1].offset_ns(2), 7 * 20_000);
        // Warm-up: global requests 0..100_000 are not measured.
        assert!(!all[0].is_measured(33_333)); // global 99_999
        assert!(all[1].is_measured(33_333)); // global 100_000
        for s in &all {
            let f = s.first_measured_index();
            assert!(s.is_measured(f) && (f == 0 || !s.is_measured(f - 1)));
        }
    }

    #[test]
    fn offsets_and_due_agree() {
        for &rate in &[1.0, 7.0, 999.0, 50_000.0, 123_456.7] {
            for lanes in 1..4 {
                for lane in 0..lanes {
                    let s = Schedule::new(rate, lane, lanes, 0, 2 * S);
                    for i in [0u64, 1, 2, 5, 17, s.total().saturating_sub(1)] {
                        if i >= s.total() {
                            continue;
                        }
                        let at = s.offset_ns(i);
                        // Due one ns after its intended time, not due one ns before.
                        assert!(s.due(at + 1) > i, "rate {rate} lane {lane}/{lanes} i {i}");
                        if at > 0 {
                            assert!(s.due(at - 1) <= i, "rate {rate} lane {lane}/{lanes} i {i}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bursts() {
        // 50 000/s in 1 ms bursts: 50 requests at 0, 50 at 1 ms, …
        let s = Schedule::new(50_000.0, 0, 1, 0, S).with_burst(1_000_000);
        assert_eq!(s.total(), 50_000);
        assert_eq!(s.due(0), 50);
        assert_eq!(s.due(999_999), 50);
        assert_eq!(s.due(1_000_000), 100);
        assert_eq!(s.due(100 * S), 50_000);
        assert_eq!(s.offset_ns(0), 0);
        assert_eq!(s.offset_ns(49), 0);
        assert_eq!(s.offset_ns(50), 1_000_000);
        assert_eq!(s.offset_ns(49_999), 999_000_000);
        assert_eq!(s.tick_ns(50_000), 1_000_000);
        // Awkward rates and several lanes: `due` and `offset_ns` agree exactly.
        for &rate in &[7.0, 999.0, 33_333.3, 123_456.7] {
            for lanes in 1..4 {
                for lane in 0..lanes {
                    let s = Schedule::new(rate, lane, lanes, 0, 2 * S).with_burst(1_000_000);
                    let mut prev = 0;
                    for i in (0..s.total()).step_by(97).chain([s.total() - 1]) {
                        let at = s.offset_ns(i);
                        assert_eq!(at % 1_000_000, 0);
                        assert!(at >= prev);
                        prev = at;
                        assert!(s.due(at) > i, "rate {rate} lane {lane}/{lanes} i {i}");
                        if at > 0 {
                            assert!(s.due(at - 1) <= i, "rate {rate} lane {lane}/{lanes} i {i}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn tick_is_a_whole_number_of_periods() {
        let s = Schedule::new(50_000.0, 0, 1, 0, S);
        assert_eq!(s.tick_ns(100_000), 100_000); // 5 requests a tick
        assert_eq!(s.tick_ns(1), 20_000); // one a tick
        let s = Schedule::new(3.0, 0, 1, 0, S);
        assert_eq!(s.tick_ns(100_000), 333_333_334); // never early
        let s = Schedule::new(30_000.0, 1, 2, 0, S);
        // Lane period 66_666.7 ns: two of them.
        assert_eq!(s.tick_ns(100_000), 133_334);
    }
}
