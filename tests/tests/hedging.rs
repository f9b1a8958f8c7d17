//! Hedges stay within their budget: b × primaries plus the per-second floor, counted at
//! the seller, even when a fifth of all requests (four times the budget) look like they
//! need one.

use std::time::Instant;

use bookbroker_tests::{Engine, Sim, KEY};

const CLIENTS: usize = 8;
const PER_CLIENT: usize = 100;

/// Sends CLIENTS × PER_CLIENT quotes concurrently; returns how long it took.
fn load(engine: &Engine, isbns: &[String]) -> f64 {
    let start = Instant::now();
    std::thread::scope(|s| {
        for c in 0..CLIENTS {
            let mut client = engine.client();
            s.spawn(move || {
                for i in 0..PER_CLIENT {
                    let isbn = &isbns[(c * PER_CLIENT + i) % isbns.len()];
                    let r = client.get(&format!("/v1/quotes?isbn={isbn}"), Some(KEY));
                    assert_eq!(r.status, 200);
                }
            });
        }
    });
    start.elapsed().as_secs_f64()
}

fn quotes_received(sim: &Sim) -> u64 {
    sim.stats()["sellers"][0]["requests"]["quote"]
        .as_u64()
        .unwrap()
}

fn counter(engine: &Engine, name: &str) -> u64 {
    let text = engine.client().get("/metrics", None).text();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn upstream_requests_stay_within_the_hedging_budget() {
    let sim = Sim::start("hangs_a_fifth.toml");
    let cores = 2;
    let config = sim.config_with(|text| {
        format!("{text}\n[hedging]\nenabled = true\nbudget = 0.05\nfloor_per_sec = 1.0\n")
    });
    let engine = Engine::start(&config, cores);
    let secs = load(&engine, &sim.isbns);
    let primaries = (CLIENTS * PER_CLIENT) as f64;
    let received = quotes_received(&sim) as f64;
    let hedges = counter(&engine, "bookbroker_hedges_sent_total");
    eprintln!(
        "primaries {primaries}, received {received}, hedges {hedges}, breaker refusals {}, {secs:.2} s",
        counter(&engine, "bookbroker_breaker_refusals_total")
    );
    assert!(hedges > 0, "hedging happened");
    // b × primaries, plus per core: the floor over the run and the initial burst.
    let allowance = 0.05 * primaries + cores as f64 * (1.0 * secs.ceil() + 10.0);
    assert!(
        received <= primaries + allowance,
        "{received} upstream requests for {primaries} primaries in {secs:.1} s (allowance {allowance:.0}, hedges {hedges})"
    );
    assert!(
        counter(&engine, "bookbroker_hedge_budget_exhausted_total") > 0,
        "the budget said no"
    );
}

#[test]
fn with_hedging_off_every_quote_is_one_upstream_request() {
    let sim = Sim::start("hangs_a_fifth.toml");
    let config = sim.config_with(|text| format!("{text}\n[hedging]\nenabled = false\n"));
    let engine = Engine::start(&config, 2);
    load(&engine, &sim.isbns);
    let refused = counter(&engine, "bookbroker_breaker_refusals_total");
    let received = quotes_received(&sim);
    assert_eq!(received + refused, (CLIENTS * PER_CLIENT) as u64);
    assert_eq!(counter(&engine, "bookbroker_hedges_sent_total"), 0);
}

#[test]
fn with_hedging_off_failures_are_still_retried_within_the_budget() {
    let sim = Sim::start("errors_a_tenth.toml");
    let cores = 2;
    let config = sim.config_with(|text| {
        format!("{text}\n[hedging]\nenabled = false\nbudget = 0.05\nfloor_per_sec = 1.0\n")
    });
    let engine = Engine::start(&config, cores);
    let secs = load(&engine, &sim.isbns);
    let primaries = (CLIENTS * PER_CLIENT) as f64;
    let received = quotes_received(&sim) as f64;
    let retries = counter(&engine, "bookbroker_seller_retries_total");
    let refused = counter(&engine, "bookbroker_breaker_refusals_total") as f64;
    eprintln!("primaries {primaries}, received {received}, retries {retries}, refused {refused}, {secs:.2} s");
    assert_eq!(counter(&engine, "bookbroker_hedges_sent_total"), 0);
    assert!(retries > 0, "failed quotes were retried with hedging off");
    assert_eq!(received + refused, primaries + retries as f64);
    let allowance = 0.05 * primaries + cores as f64 * (1.0 * secs.ceil() + 10.0);
    assert!(
        retries as f64 <= allowance,
        "{retries} retries for {primaries} primaries in {secs:.1} s (allowance {allowance:.0})"
    );
}
