//! Sellers that hang, send garbage, fail, say they are busy or cut the connection: each
//! is reported with the right status, the answer still comes by the deadline, and the
//! engine keeps serving.

use std::time::{Duration, Instant};

use bookbroker_tests::{statuses, Engine, Sim};

#[test]
fn every_kind_of_misbehaving_seller_gets_its_status_within_the_deadline() {
    let sim = Sim::start("faults.toml");
    let engine = Engine::start(&sim.config, 2);
    let isbn = &sim.isbns[0];
    let started = Instant::now();
    let q = engine.get(&format!("/v1/quotes?isbn={isbn}"));
    let took = started.elapsed();
    assert_eq!(q.status, 200, "{}", q.text());
    // deadline_ms = 300 in the scenario; allow scheduling noise on a busy machine.
    assert!(took < Duration::from_millis(300 + 250), "took {took:?}");
    let v = q.json();
    assert_eq!(v["complete"], false);
    let st = statuses(&v);
    let expect = [
        ("healthy", "ok"),
        ("hangs", "timeout"),
        ("garbage-json", "error"),
        ("garbage-xml", "error"),
        ("garbage-line", "error"),
        ("fails-500", "error"),
        ("err-line", "error"),
        ("busy-429", "rate_limited"),
        ("busy-503", "rate_limited"),
        ("busy-line", "rate_limited"),
        ("cuts-json", "error"),
        ("cuts-line", "error"),
    ];
    for (seller, status) in expect {
        assert_eq!(
            st.get(seller).map(String::as_str),
            Some(status),
            "{seller}: {st:?}"
        );
    }
    let offers = v["offers"].as_array().unwrap();
    assert!(!offers.is_empty(), "the healthy seller's offers are there");
    assert!(offers.iter().all(|o| o["seller"] == "healthy"));
    let timeout = v["sellers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["seller"] == "hangs")
        .unwrap();
    let ms = timeout["latency_ms"].as_f64().unwrap();
    assert!(
        (250.0..600.0).contains(&ms),
        "the hung seller waited for the deadline: {ms}"
    );
}

#[test]
fn the_engine_keeps_serving_and_stops_asking_broken_sellers() {
    let sim = Sim::start("faults.toml");
    let engine = Engine::start(&sim.config, 1);
    let mut client = engine.client();
    let mut last = serde_json::Value::Null;
    for isbn in sim.isbns.iter().cycle().take(12) {
        let q = client.get(
            &format!("/v1/quotes?isbn={isbn}"),
            Some(bookbroker_tests::KEY),
        );
        assert_eq!(q.status, 200);
        last = q.json();
        assert_eq!(statuses(&last)["healthy"], "ok");
    }
    let st = statuses(&last);
    // After repeated failures the breaker opens: broken sellers are reported at once.
    for seller in ["hangs", "garbage-json", "fails-500", "cuts-line"] {
        assert!(
            st[seller] == "unavailable" || st[seller] == "error" || st[seller] == "timeout",
            "{seller}: {st:?}"
        );
    }
    assert!(
        st.values().any(|s| s == "unavailable"),
        "some breaker opened: {st:?}"
    );
    // Busy sellers stay rate_limited (their Retry-After is honoured, not counted as failure).
    assert_eq!(st["busy-429"], "rate_limited");
    assert_eq!(st["busy-line"], "rate_limited");
    let health = engine.client().get("/healthz", None);
    assert_eq!(health.status, 200);
    let metrics = engine.client().get("/metrics", None).text();
    assert!(
        metrics.contains("bookbroker_breaker_opened_total"),
        "{metrics}"
    );
}
