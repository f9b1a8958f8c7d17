//! SIGTERM: stop accepting, finish what is in flight, exit 0.

use std::time::Duration;

use bookbroker_tests::{statuses, Client, Engine, Sim, KEY};

#[test]
fn sigterm_lets_the_in_flight_quote_finish_and_exits_zero() {
    let sim = Sim::start("slow.toml");
    let mut engine = Engine::start(&sim.config, 2);
    let addr = engine.addr;
    let path = format!("/v1/quotes?isbn={}", sim.isbns[0]);
    let mut client = Client::connect(addr);
    let in_flight = std::thread::spawn(move || client.get(&path, Some(KEY)));
    std::thread::sleep(Duration::from_millis(250));
    let status = engine
        .terminate(Duration::from_secs(5))
        .expect("exited within 5 s");
    assert!(status.success(), "{status}");
    let answer = in_flight.join().unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(statuses(&answer.json())["slow"], "ok");
    assert!(Client::try_connect(addr).is_err(), "no longer accepting");
}
