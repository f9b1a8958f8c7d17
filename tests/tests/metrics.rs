//! /metrics, /healthz and /readyz.

use bookbroker_tests::{Engine, Sim};

#[test]
fn metrics_count_requests_and_seller_outcomes() {
    let sim = Sim::start("three_protocols.toml");
    let engine = Engine::start(&sim.config, 2);
    for isbn in sim.isbns.iter().take(10) {
        assert_eq!(engine.get(&format!("/v1/quotes?isbn={isbn}")).status, 200);
    }
    assert_eq!(engine.client().get("/healthz", None).status, 200);
    assert_eq!(engine.client().get("/readyz", None).status, 200);
    let m = engine.client().get("/metrics", None);
    assert_eq!(m.status, 200);
    assert!(m.header("content-type").unwrap().starts_with("text/plain"));
    let text = m.text();
    let quotes_200: u64 = text
        .lines()
        .find(|l| l.starts_with("bookbroker_http_requests_total{route=\"quotes\",code=\"200\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert_eq!(quotes_200, 10, "{text}");
    for seller in ["json-plain", "json-tls", "xml-eur", "line-gbp"] {
        let line =
            format!("bookbroker_seller_requests_total{{seller=\"{seller}\",outcome=\"ok\"}} ");
        let n: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(n >= 10, "{seller}: {n}");
        assert!(text.contains(&format!(
            "bookbroker_seller_latency_seconds_count{{seller=\"{seller}\"}}"
        )));
    }
}
