//! Counters and latency histograms of a run, and the final report (text and JSON).

use std::collections::BTreeMap;

use hdrhistogram::{CreationError, Histogram};
use serde::Serialize;

/// Histogram bounds: 1 µs .. 60 s, 3 significant digits (values in µs).
pub fn new_histogram() -> Result<Histogram<u64>, CreationError> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
}

/// Largest HTTP status code counted individually.
const MAX_STATUS: usize = 1000;

/// Everything one worker measured (measured window only; warm-up is left out).
#[derive(Clone)]
pub struct Stats {
    /// Latency of every HTTP response, from the intended start, in µs.
    pub all: Histogram<u64>,
    /// Latency of quote responses.
    pub quotes: Histogram<u64>,
    /// Latency of purchase responses (fresh and duplicate keys).
    pub purchases: Histogram<u64>,
    /// Of each answered request's latency, the part before a connection took it:
    /// from the intended start to dispatch (timer lateness, loadgen's own CPU,
    /// waiting for a free connection), µs.
    pub dispatch: Histogram<u64>,
    /// The rest: from dispatch to the whole answer, µs (no correction).
    pub service: Histogram<u64>,
    /// Responses by status code.
    pub status: Vec<u64>,
    /// Requests that failed because no TCP connection could be made.
    pub connect_errors: u64,
    /// Requests without a complete answer within `--timeout`.
    pub timeouts: u64,
    /// Requests that failed on a broken or closed connection.
    pub io_errors: u64,
    /// Requests whose answer was not valid HTTP/1.1.
    pub protocol_errors: u64,
    /// Requests due in the measured window.
    pub scheduled: u64,
    /// Requests handed to a connection.
    pub sent: u64,
    /// Requests that got an HTTP response (any status).
    pub responses: u64,
    /// Requests handed to a connection later than the behind threshold.
    pub fell_behind: u64,
    /// Requests that, when due, found every connection busy.
    pub waited: u64,
    /// Purchases that re-sent an earlier key.
    pub duplicates: u64,
    /// Quotes sent.
    pub quotes_sent: u64,
    /// Purchases sent (duplicates included).
    pub purchases_sent: u64,
}

impl Stats {
    /// Empty statistics.
    pub fn new() -> Result<Stats, CreationError> {
        Ok(Stats {
            all: new_histogram()?,
            quotes: new_histogram()?,
            purchases: new_histogram()?,
            dispatch: new_histogram()?,
            service: new_histogram()?,
            status: vec![0; MAX_STATUS],
            connect_errors: 0,
            timeouts: 0,
            io_errors: 0,
            protocol_errors: 0,
            scheduled: 0,
            sent: 0,
            responses: 0,
            fell_behind: 0,
            waited: 0,
            duplicates: 0,
            quotes_sent: 0,
            purchases_sent: 0,
        })
    }

    /// Counts a response with status `code`.
    pub fn count_status(&mut self, code: u16) {
        if let Some(c) = self.status.get_mut(usize::from(code)) {
            *c += 1;
        }
    }

    /// Adds another worker's figures.
    pub fn merge(&mut self, o: &Stats) {
        // Same bounds everywhere, so adding cannot fail.
        let _ = self.all.add(&o.all);
        let _ = self.quotes.add(&o.quotes);
        let _ = self.purchases.add(&o.purchases);
        let _ = self.dispatch.add(&o.dispatch);
        let _ = self.service.add(&o.service);
        for (a, b) in self.status.iter_mut().zip(&o.status) {
            *a += b;
        }
        self.connect_errors += o.connect_errors;
        self.timeouts += o.timeouts;
        self.io_errors += o.io_errors;
        self.protocol_errors += o.protocol_errors;
        self.scheduled += o.scheduled;
        self.sent += o.sent;
        self.responses += o.responses;
        self.fell_behind += o.fell_behind;
        self.waited += o.waited;
        self.duplicates += o.duplicates;
        self.quotes_sent += o.quotes_sent;
        self.purchases_sent += o.purchases_sent;
    }

    fn class(&self, first: usize) -> u64 {
        self.status.iter().skip(first).take(100).sum()
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// 99.99th percentile.
    pub p99_99: f64,
    /// Largest.
    pub max: f64,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl Latency {
    /// Summarises a histogram of µs values.
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency {
                count: 0,
                min: 0.0,
                mean: 0.0,
                stdev: 0.0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                p99_99: 0.0,
                max: 0.0,
            };
        }
        Latency {
            count: h.len(),
            min: ms(h.min()),
            mean: h.mean() / 1000.0,
            stdev: h.stdev() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p99_9: ms(h.value_at_quantile(0.999)),
            p99_99: ms(h.value_at_quantile(0.9999)),
            max: ms(h.max()),
        }
    }
}

/// Failed requests by kind. HTTP answers with 4xx/5xx status are counted here too
/// (they are also in the status counts and in the latency histogram).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Errors {
    /// No TCP connection could be made.
    pub connect: u64,
    /// No complete answer within the timeout.
    pub timeout: u64,
    /// Connection reset or closed mid-request.
    pub io: u64,
    /// The answer was not valid HTTP/1.1.
    pub protocol: u64,
    /// Answers with a 4xx status.
    pub status_4xx: u64,
    /// Answers with a 5xx status.
    pub status_5xx: u64,
    /// Sum of the above.
    pub total: u64,
}

/// The final report; `--json FILE` writes exactly this object. Field names are stable:
///
/// | field | meaning |
/// |---|---|
/// | `target` | the `--target` URL |
/// | `scenario` | `quotes`, `purchases` or `mix` |
/// | `target_rate` | requested rate, requests/s |
/// | `duration_s`, `warmup_s` | measured window and warm-up before it, seconds |
/// | `connections`, `threads` | as given |
/// | `burst_ms` | `--burst` period, ms; 0 = requests evenly spaced |
/// | `requests` | requests scheduled in the measured window (`ceil(duration × rate)`) |
/// | `sent` | of those, handed to a connection |
/// | `unsent` | `requests − sent`: still waiting for a free connection when the window closed |
/// | `responses` | HTTP answers received (any status) |
/// | `achieved_rate` | `sent / duration_s` |
/// | `response_rate` | `responses / duration_s` |
/// | `latency_ms` | `{count, min, mean, stdev, p50, p90, p99, p99_9, p99_99, max}` of every HTTP answer, measured from the request's intended start (coordinated omission corrected), milliseconds |
/// | `latency_ms_by_kind` | the same for `quotes` and `purchases` separately (only kinds that were sent) |
/// | `dispatch_delay_ms` | the same figures for the first part of each answered request's latency: from its intended start until a connection took it (timer lateness, loadgen's own CPU, waiting for a free connection). Large values mean the generator, not the server, added latency |
/// | `service_ms` | the same figures for the second part: from that moment to the whole answer, not corrected for coordinated omission |
/// | `errors` | `{connect, timeout, io, protocol, status_4xx, status_5xx, total}` |
/// | `status_classes` | `{"1xx", "2xx", "3xx", "4xx", "5xx"}` counts |
/// | `status_codes` | count per status code, keys are the codes as strings |
/// | `fell_behind` | requests handed to a connection more than `behind_threshold_ms` after their intended time |
/// | `behind_threshold_ms` | that threshold |
/// | `waited_for_connection` | requests that, when due, found every connection busy |
/// | `quotes_sent`, `purchases_sent`, `duplicate_purchases` | requests sent by kind; duplicates re-send an earlier idempotency key and body |
///
/// Errors (connect, timeout, io, protocol) have no latency sample; requests never
/// sent (`unsent`) have neither a sample nor an error.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `--target`.
    pub target: String,
    /// Scenario name.
    pub scenario: String,
    /// Requested rate.
    pub target_rate: f64,
    /// Measured window, s.
    pub duration_s: f64,
    /// Warm-up, s.
    pub warmup_s: f64,
    /// Connections.
    pub connections: usize,
    /// Worker threads.
    pub threads: usize,
    /// Burst period, ms (0 = evenly spaced).
    pub burst_ms: f64,
    /// Scheduled in the window.
    pub requests: u64,
    /// Sent.
    pub sent: u64,
    /// Never sent.
    pub unsent: u64,
    /// HTTP answers.
    pub responses: u64,
    /// sent / duration.
    pub achieved_rate: f64,
    /// responses / duration.
    pub response_rate: f64,
    /// All answers.
    pub latency_ms: Latency,
    /// Per kind.
    pub latency_ms_by_kind: BTreeMap<String, Latency>,
    /// Intended start to dispatch.
    pub dispatch_delay_ms: Latency,
    /// Dispatch to answer.
    pub service_ms: Latency,
    /// Errors.
    pub errors: Errors,
    /// Status classes.
    pub status_classes: BTreeMap<String, u64>,
    /// Status codes.
    pub status_codes: BTreeMap<String, u64>,
    /// Late dispatches.
    pub fell_behind: u64,
    /// Threshold for `fell_behind`.
    pub behind_threshold_ms: f64,
    /// Found all connections busy.
    pub waited_for_connection: u64,
    /// Quotes sent.
    pub quotes_sent: u64,
    /// Purchases sent.
    pub purchases_sent: u64,
    /// Duplicate-key purchases sent.
    pub duplicate_purchases: u64,
}

/// The run's settings that the report repeats.
pub struct RunInfo {
    /// `--target`.
    pub target: String,
    /// Scenario name.
    pub scenario: String,
    /// Requested rate.
    pub rate: f64,
    /// Measured window, s.
    pub duration_s: f64,
    /// Warm-up, s.
    pub warmup_s: f64,
    /// Connections.
    pub connections: usize,
    /// Threads.
    pub threads: usize,
    /// `fell_behind` threshold, ms.
    pub behind_threshold_ms: f64,
    /// Burst period, ms (0 = evenly spaced).
    pub burst_ms: f64,
}

impl Report {
    /// Builds the report from merged statistics.
    pub fn new(info: RunInfo, s: &Stats) -> Report {
        let mut by_kind = BTreeMap::new();
        if s.quotes_sent > 0 {
            by_kind.insert("quotes".to_string(), Latency::of(&s.quotes));
        }
        if s.purchases_sent > 0 {
            by_kind.insert("purchases".to_string(), Latency::of(&s.purchases));
        }
        let status_4xx = s.class(400);
        let status_5xx = s.class(500);
        let errors = Errors {
            connect: s.connect_errors,
            timeout: s.timeouts,
            io: s.io_errors,
            protocol: s.protocol_errors,
            status_4xx,
            status_5xx,
            total: s.connect_errors
                + s.timeouts
                + s.io_errors
                + s.protocol_errors
                + status_4xx
                + status_5xx,
        };
        let status_classes = (1..=5)
            .map(|c| (format!("{c}xx"), s.class(c * 100)))
            .collect();
        let status_codes = s
            .status
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(code, &n)| (code.to_string(), n))
            .collect();
        let per_s = |n: u64| {
            if info.duration_s > 0.0 {
                n as f64 / info.duration_s
            } else {
                0.0
            }
        };
        Report {
            target: info.target,
            scenario: info.scenario,
            target_rate: info.rate,
            duration_s: info.duration_s,
            warmup_s: info.warmup_s,
            connections: info.connections,
            threads: info.threads,
            burst_ms: info.burst_ms,
            requests: s.scheduled,
            sent: s.sent,
            unsent: s.scheduled.saturating_sub(s.sent),
            responses: s.responses,
            achieved_rate: per_s(s.sent),
            response_rate: per_s(s.responses),
            latency_ms: Latency::of(&s.all),
            latency_ms_by_kind: by_kind,
            dispatch_delay_ms: Latency::of(&s.dispatch),
            service_ms: Latency::of(&s.service),
            errors,
            status_classes,
            status_codes,
            fell_behind: s.fell_behind,
            behind_threshold_ms: info.behind_threshold_ms,
            waited_for_connection: s.waited,
            quotes_sent: s.quotes_sent,
            purchases_sent: s.purchases_sent,
            duplicate_purchases: s.duplicates,
        }
    }

    /// The human-readable report printed on stdout.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "loadgen: {} against {} for {}s (warm-up {}s), {} connections, {} thread(s)",
            self.scenario,
            self.target,
            self.duration_s,
            self.warmup_s,
            self.connections,
            self.threads
        );
        if self.burst_ms > 0.0 {
            let _ = writeln!(
                o,
                "  target rate    {:>12.1} req/s, in bursts every {} ms",
                self.target_rate, self.burst_ms
            );
        } else {
            let _ = writeln!(o, "  target rate    {:>12.1} req/s", self.target_rate);
        }
        let _ = writeln!(
            o,
            "  achieved rate  {:>12.1} req/s sent, {:.1} responses/s",
            self.achieved_rate, self.response_rate
        );
        let _ = writeln!(
            o,
            "  requests       {:>12} scheduled, {} sent, {} responses, {} unsent",
            self.requests, self.sent, self.responses, self.unsent
        );
        if self.scenario != "quotes" {
            let _ = writeln!(
                o,
                "  by kind        {:>12} quotes, {} purchases ({} duplicate keys)",
                self.quotes_sent, self.purchases_sent, self.duplicate_purchases
            );
        }
        let line = |o: &mut String, name: &str, l: &Latency| {
            let _ = writeln!(
                o,
                "  {name:<14} p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  p99.99 {:.3}  max {:.3}  (mean {:.3}, n {})",
                l.p50, l.p90, l.p99, l.p99_9, l.p99_99, l.max, l.mean, l.count
            );
        };
        line(&mut o, "latency ms", &self.latency_ms);
        if self.latency_ms_by_kind.len() > 1 {
            for (kind, l) in &self.latency_ms_by_kind {
                line(&mut o, &format!("  {kind}"), l);
            }
        }
        line(&mut o, "  dispatch", &self.dispatch_delay_ms);
        line(&mut o, "  service", &self.service_ms);
        let e = &self.errors;
        let _ = writeln!(
            o,
            "  errors         {:>12} total: connect {}, timeout {}, io {}, protocol {}, 4xx {}, 5xx {}",
            e.total, e.connect, e.timeout, e.io, e.protocol, e.status_4xx, e.status_5xx
        );
        let classes: Vec<String> = self
            .status_classes
            .iter()
            .filter(|(_, &n)| n > 0)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let codes: Vec<String> = self
            .status_codes
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        let _ = writeln!(
            o,
            "  status         {:>12} ({})",
            if classes.is_empty() {
                "none".to_string()
            } else {
                classes.join(", ")
            },
            codes.join(", ")
        );
        let _ = writeln!(
            o,
            "  fell behind    {:>12} (sent > {} ms late), {} found every connection busy",
            self.fell_behind, self.behind_threshold_ms, self.waited_for_connection
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_in_ms() {
        let mut s = Stats::new().unwrap();
        for us in 1..=10_000u64 {
            s.all.saturating_record(us);
        }
        s.scheduled = 10_000;
        s.sent = 10_000;
        s.responses = 10_000;
        s.count_status(200);
        s.count_status(503);
        s.count_status(404);
        let mut t = Stats::new().unwrap();
        t.timeouts = 2;
        s.merge(&t);
        let r = Report::new(
            RunInfo {
                target: "http://x".into(),
                scenario: "quotes".into(),
                rate: 1000.0,
                duration_s: 10.0,
                warmup_s: 0.0,
                connections: 1,
                threads: 1,
                behind_threshold_ms: 1.0,
                burst_ms: 0.0,
            },
            &s,
        );
        assert!((r.latency_ms.p50 - 5.0).abs() < 0.01);
        assert!((r.latency_ms.p99 - 9.9).abs() < 0.01);
        assert!((r.latency_ms.max - 10.0).abs() < 0.01);
        assert_eq!(r.achieved_rate, 1000.0);
        assert_eq!(r.errors.timeout, 2);
        assert_eq!(r.errors.status_4xx, 1);
        assert_eq!(r.errors.status_5xx, 1);
        assert_eq!(r.errors.total, 4);
        assert_eq!(r.status_codes.get("503"), Some(&1));
        assert_eq!(r.status_classes.get("2xx"), Some(&1));
        let json = serde_json::to_value(&r).unwrap();
        for key in [
            "target_rate",
            "achieved_rate",
            "requests",
            "latency_ms",
            "dispatch_delay_ms",
            "service_ms",
            "errors",
            "status_codes",
            "status_classes",
            "fell_behind",
            "waited_for_connection",
            "unsent",
        ] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
        assert!(json["latency_ms"].get("p99_99").is_some());
        assert!(r.to_text().contains("p99.9"));
    }

    #[test]
    fn empty_histogram_is_zero() {
        let l = Latency::of(&new_histogram().unwrap());
        assert_eq!(l.count, 0);
        assert_eq!(l.max, 0.0);
    }
}
