//! Rendering `/metrics`: the engine's hand-written Prometheus text beside the
//! `prometheus` crate's registry and `TextEncoder` holding the same families and values
//! (six sellers, every route, every seller outcome, both histograms, the 25 counters and
//! three gauges). The engine keeps its own renderer only while it is the faster of the
//! two; BENCHMARKS.md records the figures.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test or benchmark: panicking is how it fails

use std::time::Duration;

use bookbroker_engine::metrics::{Counter, Metrics, BUCKETS, OUTCOMES, ROUTES};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

const CODES: [u16; 3] = [200, 400, 503];
const COUNTERS: usize = 25;
const GAUGES: usize = 3;

fn sellers() -> Vec<String> {
    (0..6).map(|i| format!("seller-{i}")).collect()
}

/// The engine's metrics on two cores, every series touched.
fn engine() -> std::sync::Arc<Metrics> {
    let names = sellers();
    let m = Metrics::new(2, &names);
    for core in 0..2 {
        for (i, (route, _)) in ROUTES.iter().enumerate() {
            for (j, code) in CODES.iter().enumerate() {
                let latency = Duration::from_micros(300 * (i as u64 + 1) * (j as u64 + 1));
                m.record_request(core, *route, *code, latency);
            }
        }
        for seller in 0..names.len() {
            for (k, (outcome, _)) in OUTCOMES.iter().enumerate() {
                m.record_seller(core, seller, *outcome, Duration::from_millis(k as u64 + 1));
            }
        }
        m.inc_counter(core, Counter::HedgesSent);
        m.add_connection(core, 3);
    }
    m
}

/// The same families and values in a `prometheus` registry.
fn registry() -> Registry {
    let r = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new("bookbroker_http_requests_total", "Requests answered."),
        &["route", "code"],
    )
    .unwrap();
    let durations = HistogramVec::new(
        HistogramOpts::new(
            "bookbroker_http_request_duration_seconds",
            "Time to answer.",
        )
        .buckets(BUCKETS.to_vec()),
        &["route"],
    )
    .unwrap();
    let seller_requests = IntCounterVec::new(
        Opts::new("bookbroker_seller_requests_total", "Seller quote requests."),
        &["seller", "outcome"],
    )
    .unwrap();
    let seller_latency = HistogramVec::new(
        HistogramOpts::new("bookbroker_seller_latency_seconds", "Seller latency.")
            .buckets(BUCKETS.to_vec()),
        &["seller"],
    )
    .unwrap();
    for (i, (_, route)) in ROUTES.iter().enumerate() {
        for (j, code) in CODES.iter().enumerate() {
            requests
                .with_label_values(&[route, &code.to_string()])
                .inc_by(2);
            let latency = 300e-6 * (i + 1) as f64 * (j + 1) as f64;
            durations.with_label_values(&[route]).observe(latency);
            durations.with_label_values(&[route]).observe(latency);
        }
    }
    for seller in sellers() {
        for (k, (_, outcome)) in OUTCOMES.iter().enumerate() {
            seller_requests
                .with_label_values(&[&seller, outcome])
                .inc_by(2);
            seller_latency
                .with_label_values(&[&seller])
                .observe((k + 1) as f64 / 1e3);
        }
    }
    r.register(Box::new(requests)).unwrap();
    r.register(Box::new(durations)).unwrap();
    r.register(Box::new(seller_requests)).unwrap();
    r.register(Box::new(seller_latency)).unwrap();
    for i in 0..COUNTERS {
        let c = IntCounter::new(format!("bookbroker_counter_{i}_total"), "A counter.").unwrap();
        c.inc_by(2);
        r.register(Box::new(c)).unwrap();
    }
    for i in 0..GAUGES {
        let g = IntGauge::new(format!("bookbroker_gauge_{i}"), "A gauge.").unwrap();
        g.set(6);
        r.register(Box::new(g)).unwrap();
    }
    r
}

fn render(c: &mut Criterion) {
    let m = engine();
    let r = registry();
    let encoder = TextEncoder::new();
    // Both texts hold the same series: compare their sizes once, as a sanity check.
    let mut theirs = Vec::new();
    encoder.encode(&r.gather(), &mut theirs).unwrap();
    eprintln!(
        "metrics: engine text {} bytes, prometheus text {} bytes",
        m.render().len(),
        theirs.len()
    );
    let mut g = c.benchmark_group("metrics_render");
    g.bench_function("engine_hand_written", |b| b.iter(|| black_box(m.render())));
    g.bench_function("prometheus_crate", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(16 * 1024);
            encoder.encode(&r.gather(), &mut out).unwrap();
            black_box(out)
        })
    });
    g.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
