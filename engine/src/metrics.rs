//! Metrics in the Prometheus text format, without locks on the hot path.
//!
//! Each core owns one slot of atomic counters and fixed-bucket histograms and is the only
//! writer of it (relaxed adds, no contention); `GET /metrics` sums the slots when it
//! renders. Slots are cache-line aligned so cores never share a line.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Routes, as labelled in metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /v1/quotes`.
    Quotes,
    /// `POST /v1/purchases`.
    Purchases,
    /// `GET /v1/purchases/{id}`.
    PurchaseGet,
    /// `GET /metrics`.
    Metrics,
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// Anything else.
    Other,
}

/// Every route with its `route` label value.
pub const ROUTES: [(Route, &str); 7] = [
    (Route::Quotes, "quotes"),
    (Route::Purchases, "purchases"),
    (Route::PurchaseGet, "purchase_get"),
    (Route::Metrics, "metrics"),
    (Route::Healthz, "healthz"),
    (Route::Readyz, "readyz"),
    (Route::Other, "other"),
];

/// Status codes counted on their own; everything else is `other`.
const CODES: [u16; 16] = [
    200, 201, 202, 204, 400, 401, 402, 404, 405, 409, 413, 415, 422, 431, 500, 503,
];

/// How one seller request ended, labelled as the API's seller statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SellerOutcome {
    /// Answered.
    Ok,
    /// No answer in time.
    Timeout,
    /// Failed.
    Error,
    /// Said it was overloaded.
    RateLimited,
    /// Not asked (circuit open or concurrency limit).
    Unavailable,
}

/// Every seller outcome with its `outcome` label value.
pub const OUTCOMES: [(SellerOutcome, &str); 5] = [
    (SellerOutcome::Ok, "ok"),
    (SellerOutcome::Timeout, "timeout"),
    (SellerOutcome::Error, "error"),
    (SellerOutcome::RateLimited, "rate_limited"),
    (SellerOutcome::Unavailable, "unavailable"),
];

/// Plain counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Client connections accepted.
    ConnectionsAccepted,
    /// Quote answers with `complete: false`.
    QuotesPartial,
    /// Connections opened to sellers.
    UpstreamConnectionsOpened,
    /// Hedged seller requests sent.
    HedgesSent,
    /// Hedges that answered first.
    HedgesWon,
    /// Hedges not sent because the budget was empty.
    HedgeBudgetExhausted,
    /// Quote cache hits.
    CacheHits,
    /// Quote cache misses.
    CacheMisses,
    /// Requests or connections refused because the engine was saturated.
    LoadShed,
    /// Seller requests not sent because the seller's circuit breaker was open.
    BreakerRefusals,
    /// Seller requests not sent because the seller's `Retry-After` had not passed.
    RetryAfterRefusals,
    /// Circuit breakers that opened.
    BreakerOpened,
    /// Seller requests retried after a transient failure.
    Retries,
    /// Purchases started (new idempotency keys).
    PurchasesStarted,
    /// Purchases that ended `purchased`.
    PurchasesPurchased,
    /// Purchases that ended any other way.
    PurchasesNotPurchased,
    /// Unfinished purchases resumed at start.
    PurchasesRecovered,
    /// Purchase requests answered from a stored outcome (replays).
    PurchaseReplays,
    /// fsyncs of purchase shards (group commit shares one among many writes).
    StorageSyncs,
    /// Partner calls of a purchase whose outcome was unknown (timeout, reset, 5xx, key
    /// in progress) and were repeated with the same idempotency key.
    PurchaseCallsRepeated,
    /// Order confirmations that made no sense (total not positive, unreadable, not
    /// convertible) and were cancelled.
    BrokenConfirmations,
    /// Purchase steps that failed on our side (storage, tokens that no longer open) and
    /// were retried after a pause.
    PurchaseStepErrors,
    /// Purchase requests refused with 429 because too many purchases were running.
    PurchasesRefused,
    /// `/v1` requests refused with 429 because their customer was over its
    /// `rate_per_sec`.
    RateLimited,
    /// Client connections closed because they sat idle past `server.idle_timeout_ms`
    /// or sent a request's headers slower than `server.header_read_timeout_ms`.
    ConnectionsTimedOut,
}

/// Gauges: values that go up and down, summed over cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gauge {
    /// Purchases whose saga is running.
    PurchasesRunning,
    /// Purchases that cannot move on by themselves right now: a partner call whose
    /// outcome stayed unknown past `purchases.step_retry_ms`, or a step failing on our
    /// side. They keep retrying; an operator should look.
    PurchasesStuck,
}

const GAUGES: [(Gauge, &str, &str); 2] = [
    (
        Gauge::PurchasesRunning,
        "bookbroker_purchases_running",
        "Purchases whose saga is running.",
    ),
    (
        Gauge::PurchasesStuck,
        "bookbroker_purchases_stuck",
        "Purchases retrying a partner call of unknown outcome past purchases.step_retry_ms, or a step failing on our side.",
    ),
];

const COUNTERS: [(Counter, &str, &str); 25] = [
    (
        Counter::RateLimited,
        "bookbroker_rate_limited_total",
        "Requests refused with 429 because their customer was over its rate_per_sec.",
    ),
    (
        Counter::ConnectionsTimedOut,
        "bookbroker_connections_timed_out_total",
        "Client connections closed idle past idle_timeout_ms or slow past header_read_timeout_ms.",
    ),
    (
        Counter::PurchaseCallsRepeated,
        "bookbroker_purchase_calls_repeated_total",
        "Purchase calls to partners whose outcome was unknown and were repeated with the same key.",
    ),
    (
        Counter::BrokenConfirmations,
        "bookbroker_purchase_broken_confirmations_total",
        "Order confirmations that made no sense (not positive, unreadable, not convertible) and were cancelled.",
    ),
    (
        Counter::PurchaseStepErrors,
        "bookbroker_purchase_step_errors_total",
        "Purchase steps that failed on our side (storage, unreadable tokens) and were retried.",
    ),
    (
        Counter::PurchasesRefused,
        "bookbroker_purchases_refused_total",
        "Purchase requests refused with 429 because too many purchases were running.",
    ),
    (
        Counter::PurchasesStarted,
        "bookbroker_purchases_started_total",
        "Purchases started (new idempotency keys).",
    ),
    (
        Counter::PurchasesPurchased,
        "bookbroker_purchases_purchased_total",
        "Purchases that ended purchased.",
    ),
    (
        Counter::PurchasesNotPurchased,
        "bookbroker_purchases_not_purchased_total",
        "Purchases that ended without a purchase (no offer, not found, declined, failed).",
    ),
    (
        Counter::PurchasesRecovered,
        "bookbroker_purchases_recovered_total",
        "Unfinished purchases resumed at start.",
    ),
    (
        Counter::PurchaseReplays,
        "bookbroker_purchase_replays_total",
        "Purchase requests answered from a stored outcome.",
    ),
    (
        Counter::StorageSyncs,
        "bookbroker_storage_syncs_total",
        "fsyncs of purchase shards.",
    ),
    (
        Counter::ConnectionsAccepted,
        "bookbroker_http_connections_accepted_total",
        "Client connections accepted.",
    ),
    (
        Counter::QuotesPartial,
        "bookbroker_quotes_partial_total",
        "Quote answers in which some seller was not ok.",
    ),
    (
        Counter::UpstreamConnectionsOpened,
        "bookbroker_upstream_connections_opened_total",
        "Connections opened to sellers.",
    ),
    (
        Counter::HedgesSent,
        "bookbroker_hedges_sent_total",
        "Hedged seller requests sent.",
    ),
    (
        Counter::HedgesWon,
        "bookbroker_hedges_won_total",
        "Hedged seller requests that answered first.",
    ),
    (
        Counter::HedgeBudgetExhausted,
        "bookbroker_hedge_budget_exhausted_total",
        "Hedges not sent because the budget was empty.",
    ),
    (
        Counter::CacheHits,
        "bookbroker_quote_cache_hits_total",
        "Quote cache hits.",
    ),
    (
        Counter::CacheMisses,
        "bookbroker_quote_cache_misses_total",
        "Quote cache misses.",
    ),
    (
        Counter::LoadShed,
        "bookbroker_load_shed_total",
        "Requests or connections refused because the engine was saturated.",
    ),
    (
        Counter::BreakerRefusals,
        "bookbroker_breaker_refusals_total",
        "Seller requests not sent because the seller's circuit breaker was open.",
    ),
    (
        Counter::RetryAfterRefusals,
        "bookbroker_retry_after_refusals_total",
        "Seller requests not sent because the seller asked us to wait (Retry-After, BUSY).",
    ),
    (
        Counter::BreakerOpened,
        "bookbroker_breaker_opened_total",
        "Times a seller's circuit breaker opened.",
    ),
    (
        Counter::Retries,
        "bookbroker_seller_retries_total",
        "Seller requests retried after a transient failure (drawing on the hedging budget).",
    ),
];

#[derive(Default)]
struct Hist {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Hist {
    fn record(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| s <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Relaxed);
            }
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_us
            .fetch_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX), Relaxed);
    }
}

/// One core's metrics.
#[repr(align(128))]
struct Slot {
    requests: Vec<[AtomicU64; CODES.len() + 1]>,
    request_latency: Vec<Hist>,
    seller_outcomes: Vec<[AtomicU64; OUTCOMES.len()]>,
    seller_latency: Vec<Hist>,
    counters: [AtomicU64; COUNTERS.len()],
    gauges: [AtomicI64; GAUGES.len()],
    connections_open: AtomicI64,
}

impl Slot {
    fn new(sellers: usize) -> Slot {
        Slot {
            requests: (0..ROUTES.len()).map(|_| Default::default()).collect(),
            request_latency: (0..ROUTES.len()).map(|_| Hist::default()).collect(),
            seller_outcomes: (0..sellers).map(|_| Default::default()).collect(),
            seller_latency: (0..sellers).map(|_| Hist::default()).collect(),
            counters: Default::default(),
            gauges: Default::default(),
            connections_open: AtomicI64::new(0),
        }
    }
}

/// The engine's metrics: one slot per core.
pub struct Metrics {
    slots: Vec<Slot>,
    sellers: Vec<String>,
}

fn route_index(r: Route) -> usize {
    ROUTES
        .iter()
        .position(|(x, _)| *x == r)
        .unwrap_or(ROUTES.len() - 1)
}

impl Metrics {
    /// Metrics for `cores` cores and the named sellers (in config order).
    pub fn new(cores: usize, sellers: &[String]) -> Arc<Metrics> {
        Arc::new(Metrics {
            slots: (0..cores.max(1))
                .map(|_| Slot::new(sellers.len()))
                .collect(),
            sellers: sellers.to_vec(),
        })
    }

    fn slot(&self, core: usize) -> Option<&Slot> {
        self.slots.get(core)
    }

    /// Counts an answered request.
    pub fn record_request(&self, core: usize, route: Route, status: u16, latency: Duration) {
        let Some(slot) = self.slot(core) else { return };
        let r = route_index(route);
        let c = CODES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(CODES.len());
        if let Some(cell) = slot.requests.get(r).and_then(|row| row.get(c)) {
            cell.fetch_add(1, Relaxed);
        }
        if let Some(h) = slot.request_latency.get(r) {
            h.record(latency);
        }
    }

    /// Counts one seller request's outcome and latency.
    pub fn record_seller(
        &self,
        core: usize,
        seller: usize,
        outcome: SellerOutcome,
        latency: Duration,
    ) {
        let Some(slot) = self.slot(core) else { return };
        let o = OUTCOMES
            .iter()
            .position(|(x, _)| *x == outcome)
            .unwrap_or(0);
        if let Some(cell) = slot.seller_outcomes.get(seller).and_then(|row| row.get(o)) {
            cell.fetch_add(1, Relaxed);
        }
        if outcome == SellerOutcome::Ok {
            if let Some(h) = slot.seller_latency.get(seller) {
                h.record(latency);
            }
        }
    }

    /// Changes the open-connections gauge.
    pub fn add_connection(&self, core: usize, delta: i64) {
        if let Some(slot) = self.slot(core) {
            slot.connections_open.fetch_add(delta, Relaxed);
        }
    }

    /// Increments a counter.
    pub fn inc_counter(&self, core: usize, counter: Counter) {
        self.add_counter(core, counter, 1);
    }

    /// Adds to a counter.
    pub fn add_counter(&self, core: usize, counter: Counter, n: u64) {
        let Some(slot) = self.slot(core) else { return };
        if let Some(i) = COUNTERS.iter().position(|(c, _, _)| *c == counter) {
            if let Some(cell) = slot.counters.get(i) {
                cell.fetch_add(n, Relaxed);
            }
        }
    }

    /// Moves a gauge by `delta`.
    pub fn add_gauge(&self, core: usize, gauge: Gauge, delta: i64) {
        let Some(slot) = self.slot(core) else { return };
        if let Some(i) = GAUGES.iter().position(|(g, _, _)| *g == gauge) {
            if let Some(cell) = slot.gauges.get(i) {
                cell.fetch_add(delta, Relaxed);
            }
        }
    }

    /// The current value of a gauge summed over cores.
    pub fn gauge(&self, gauge: Gauge) -> i64 {
        let Some(i) = GAUGES.iter().position(|(g, _, _)| *g == gauge) else {
            return 0;
        };
        self.slots
            .iter()
            .filter_map(|s| s.gauges.get(i))
            .map(|c| c.load(Relaxed))
            .sum()
    }

    /// The current value of a counter summed over cores.
    pub fn counter(&self, counter: Counter) -> u64 {
        let Some(i) = COUNTERS.iter().position(|(c, _, _)| *c == counter) else {
            return 0;
        };
        self.slots
            .iter()
            .filter_map(|s| s.counters.get(i))
            .map(|c| c.load(Relaxed))
            .sum()
    }

    /// Renders every metric in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let sum = |f: &dyn Fn(&Slot) -> u64| -> u64 { self.slots.iter().map(f).sum() };

        out.push_str(
            "# HELP bookbroker_http_requests_total Requests answered, by route and status code.\n",
        );
        out.push_str("# TYPE bookbroker_http_requests_total counter\n");
        for (r, (_, route)) in ROUTES.iter().enumerate() {
            for c in 0..=CODES.len() {
                let n = sum(&|s| {
                    s.requests
                        .get(r)
                        .and_then(|row| row.get(c))
                        .map_or(0, |x| x.load(Relaxed))
                });
                if n == 0 {
                    continue;
                }
                let code = CODES
                    .get(c)
                    .map_or_else(|| "other".to_string(), |x| x.to_string());
                let _ = writeln!(
                    out,
                    "bookbroker_http_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}"
                );
            }
        }
        self.render_hists(
            &mut out,
            "bookbroker_http_request_duration_seconds",
            "Time to answer a request, by route.",
            "route",
            ROUTES.iter().map(|(_, n)| *n),
            |s, i| s.request_latency.get(i),
        );

        out.push_str("# HELP bookbroker_seller_requests_total Seller quote requests, by seller and outcome.\n");
        out.push_str("# TYPE bookbroker_seller_requests_total counter\n");
        for (i, name) in self.sellers.iter().enumerate() {
            for (o, (_, label)) in OUTCOMES.iter().enumerate() {
                let n = sum(&|s| {
                    s.seller_outcomes
                        .get(i)
                        .and_then(|row| row.get(o))
                        .map_or(0, |x| x.load(Relaxed))
                });
                let _ = writeln!(
                    out,
                    "bookbroker_seller_requests_total{{seller=\"{name}\",outcome=\"{label}\"}} {n}"
                );
            }
        }
        self.render_hists(
            &mut out,
            "bookbroker_seller_latency_seconds",
            "Latency of successful seller quote requests.",
            "seller",
            self.sellers.iter().map(String::as_str),
            |s, i| s.seller_latency.get(i),
        );

        for (i, (_, name, help)) in COUNTERS.iter().enumerate() {
            let n = sum(&|s| s.counters.get(i).map_or(0, |x| x.load(Relaxed)));
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {n}"
            );
        }
        for (i, (_, name, help)) in GAUGES.iter().enumerate() {
            let v: i64 = self
                .slots
                .iter()
                .map(|s| s.gauges.get(i).map_or(0, |x| x.load(Relaxed)))
                .sum();
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        }
        let open: i64 = self
            .slots
            .iter()
            .map(|s| s.connections_open.load(Relaxed))
            .sum();
        let _ = writeln!(
            out,
            "# HELP bookbroker_http_connections_open Client connections open.\n\
             # TYPE bookbroker_http_connections_open gauge\nbookbroker_http_connections_open {open}"
        );
        out
    }

    fn render_hists<'a>(
        &self,
        out: &mut String,
        name: &str,
        help: &str,
        label: &str,
        values: impl Iterator<Item = &'a str>,
        get: impl Fn(&Slot, usize) -> Option<&Hist>,
    ) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, value) in values.enumerate() {
            let load = |f: &dyn Fn(&Hist) -> u64| -> u64 {
                self.slots.iter().filter_map(|s| get(s, i)).map(f).sum()
            };
            let count = load(&|h| h.count.load(Relaxed));
            let mut cumulative = 0;
            for (b, le) in BUCKETS.iter().enumerate() {
                cumulative += load(&|h| h.buckets.get(b).map_or(0, |x| x.load(Relaxed)));
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{label}=\"{value}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {count}"
            );
            let sum_s = load(&|h| h.sum_us.load(Relaxed)) as f64 / 1e6;
            let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {sum_s}");
            let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {count}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sum_over_cores_and_render_is_well_formed() {
        let m = Metrics::new(2, &["a".to_string(), "b".to_string()]);
        m.record_request(0, Route::Quotes, 200, Duration::from_millis(3));
        m.record_request(1, Route::Quotes, 200, Duration::from_millis(30));
        m.record_request(1, Route::Quotes, 418, Duration::from_millis(1));
        m.record_seller(1, 1, SellerOutcome::Timeout, Duration::from_millis(200));
        m.inc_counter(0, Counter::HedgesSent);
        m.inc_counter(1, Counter::HedgesSent);
        m.add_connection(0, 1);
        let text = m.render();
        assert!(
            text.contains("bookbroker_http_requests_total{route=\"quotes\",code=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("bookbroker_http_requests_total{route=\"quotes\",code=\"other\"} 1"));
        assert!(text.contains(
            "bookbroker_http_request_duration_seconds_bucket{route=\"quotes\",le=\"0.005\"} 2"
        ));
        assert!(text.contains("bookbroker_http_request_duration_seconds_count{route=\"quotes\"} 3"));
        assert!(
            text.contains("bookbroker_seller_requests_total{seller=\"b\",outcome=\"timeout\"} 1")
        );
        assert!(text.contains("bookbroker_hedges_sent_total 2"));
        assert!(text.contains("bookbroker_http_connections_open 1"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
        }
        assert_eq!(m.counter(Counter::HedgesSent), 2);
    }
}
