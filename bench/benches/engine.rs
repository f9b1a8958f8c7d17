//! The engine's pure per-request work: ranking offers from five sellers in four
//! currencies with FX conversion and serializing the answer (exactly the code that
//! serves `GET /v1/quotes`), and the hedging decision.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test or benchmark: panicking is how it fails

use std::time::{Duration, Instant};

use bookbroker_bench::offers;
use bookbroker_engine::hedge::HedgeState;
use bookbroker_engine::quotes::{build_answer, QuoteRequest, SellerResult};
use bookbroker_protocols::{ConditionFilter, Currency, FxTable, QuoteQuery};
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn ranking(c: &mut Criterion) {
    let fx = FxTable::new(
        Currency::USD,
        &[
            (Currency::EUR, "1.08"),
            (Currency::GBP, "1.27"),
            (Currency::JPY, "0.0067"),
        ],
    )
    .unwrap();
    let currencies = [
        Currency::USD,
        Currency::EUR,
        Currency::GBP,
        Currency::JPY,
        Currency::USD,
    ];
    let names = ["a", "b", "c", "d", "e"];
    let results: Vec<SellerResult> = currencies
        .iter()
        .enumerate()
        .map(|(i, cur)| SellerResult {
            seller: i,
            outcome: Ok(offers(4, *cur)),
            latency: Duration::from_micros(1500),
            hedged: false,
        })
        .collect();
    let req = QuoteRequest {
        query: QuoteQuery::Isbn(bookbroker_bench::isbn()),
        currency: Currency::EUR,
        condition: ConditionFilter::Any,
    };
    c.bench_function("rank_5_sellers_x4_offers_fx_and_serialize", |b| {
        b.iter(|| build_answer(black_box(&req), &names, black_box(&results), &fx))
    });
}

fn hedging(c: &mut Criterion) {
    let now = Instant::now();
    let mut h = HedgeState::new(0.05, 1.0, now).unwrap();
    for i in 0..1000u64 {
        h.window
            .record(Duration::from_micros(1000 + i * 7 % 3000), now);
    }
    c.bench_function("hedge_decision", |b| {
        b.iter(|| {
            h.budget.deposit(now);
            let delay = h.hedge_delay(black_box(now));
            let take = h.budget.try_withdraw(now);
            (delay, take)
        })
    });
    c.bench_function("hedge_record_latency", |b| {
        b.iter(|| h.window.record(black_box(Duration::from_micros(1800)), now))
    });
}

criterion_group!(benches, ranking, hedging);
criterion_main!(benches);
