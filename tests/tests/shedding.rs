//! A saturated core sheds load with a fast 503 instead of queueing.

use std::time::{Duration, Instant};

use bookbroker_tests::{Client, Engine, Sim, KEY};

#[test]
fn requests_beyond_the_in_flight_limit_get_503_at_once() {
    let sim = Sim::start("slow.toml");
    let config =
        sim.config_with(|text| text.replace("[server]", "[server]\nmax_in_flight_per_core = 1"));
    let engine = Engine::start(&config, 1);
    let path = format!("/v1/quotes?isbn={}", sim.isbns[0]);
    let mut first = Client::connect(engine.addr);
    let slow_path = path.clone();
    let slow = std::thread::spawn(move || first.get(&slow_path, Some(KEY)));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let shed = engine.get(&path);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "shed at once"
    );
    shed.assert_problem(503);
    assert_eq!(shed.header("retry-after"), Some("1"));
    assert_eq!(
        slow.join().unwrap().status,
        200,
        "the admitted request still completes"
    );
    assert_eq!(engine.get(&path).status, 200, "capacity is back");
    let metrics = engine.client().get("/metrics", None).text();
    assert!(
        metrics.contains("bookbroker_load_shed_total 1"),
        "{metrics}"
    );
}
