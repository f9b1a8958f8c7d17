//! Bounds on purchases: a body that trickles in, too many purchases at once, and a
//! purchase that cannot go on after a restart (its tokens no longer open) — none of
//! them may hold a slot or a core for ever.

use std::time::{Duration, Instant};

use bookbroker_tests::{
    purchase_body, purchase_until_final, reconcile, Client, Engine, Sim, BOB_KEY, KEY,
};

/// Above every offer in the purchase scenarios.
const PLENTY: i64 = 100_000;

#[test]
fn a_body_that_trickles_in_gets_408_and_frees_its_slot() {
    let sim = Sim::start("purchases.toml");
    let config = sim.config_with(|c| c.replace("[server]\n", "[server]\nbody_timeout_ms = 300\n"));
    let engine = Engine::start(&config, 1);
    let mut client = engine.client();
    let head = format!(
        "POST /v1/purchases HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: slow-body\r\nContent-Length: 200\r\n\r\n{{\"isbn\": "
    );
    let started = Instant::now();
    let r = client.raw(head.as_bytes()).expect("an answer, not a hang");
    assert_eq!(r.status, 408, "{}", r.text());
    r.assert_problem(408);
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing was started under that key: the same key works with a whole body.
    let body = purchase_body(&sim.isbns[0], PLENTY, "USD", "tok_ok_4242", "ship_home");
    let r = engine.purchase("slow-body", &body);
    assert_eq!(r.status, 201, "{}", r.text());
}

#[test]
fn running_purchases_are_capped_per_customer_with_429_and_retry_after() {
    let sim = Sim::start("purchases_slow_payment.toml");
    let config = sim.config_with(|c| format!("{c}\n[purchases]\nmax_running_per_customer = 2\n"));
    let engine = Engine::start(&config, 2);
    let body = |i: usize| {
        purchase_body(
            &sim.isbns[i % sim.isbns.len()],
            PLENTY,
            "USD",
            "tok_ok_4242",
            "ship_home",
        )
    };
    let post = |api: &str, key: &str, i: usize| {
        Client::connect(engine.addr)
            .post_purchase(
                api,
                Some(key),
                body(i).as_bytes(),
                &[("Prefer", "respond-async")],
            )
            .unwrap()
    };
    assert_eq!(post(KEY, "cap-1", 1).status, 202);
    assert_eq!(post(KEY, "cap-2", 2).status, 202);
    let refused = post(KEY, "cap-3", 3);
    assert_eq!(refused.status, 429, "{}", refused.text());
    refused.assert_problem(429);
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Another customer is not held back by this one.
    let bob = post(BOB_KEY, "cap-bob", 4);
    assert_eq!(bob.status, 202, "{}", bob.text());
    assert!(engine.metric("bookbroker_purchases_refused_total") >= 1.0);

    // The refused key started nothing: once a slot frees, it is a new purchase.
    let mut answers = Vec::new();
    for (api, key, i) in [
        (KEY, "cap-1", 1),
        (KEY, "cap-2", 2),
        (BOB_KEY, "cap-bob", 4),
        (KEY, "cap-3", 3),
    ] {
        let r = purchase_until_final(
            engine.addr,
            api,
            key,
            &body(i),
            &[],
            Duration::from_secs(60),
        );
        answers.push(r.json());
    }
    assert!(
        answers.iter().all(|a| a["status"] == "purchased"),
        "{answers:#?}"
    );
    let problems = reconcile(&answers, &sim.ledger(), &sim.orders());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn tokens_that_no_longer_open_after_a_restart_stop_no_core() {
    let sim = Sim::start("purchases_slow_payment.toml");
    let config = sim.config_with(|c| format!("{c}\n[purchases]\nstep_retry_ms = 2000\n"));
    let data = tempfile::tempdir().unwrap();
    let mut engine = Engine::start_with(&config, 2, data.path());
    let body = purchase_body(&sim.isbns[0], PLENTY, "USD", "tok_ok_4242", "ship_home");
    let r = Client::connect(engine.addr)
        .post_purchase(
            KEY,
            Some("lost-key"),
            body.as_bytes(),
            &[("Prefer", "respond-async")],
        )
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // Mid-authorization (the provider takes 1.5 s), the engine dies and its token key
    // is lost: the purchase's tokens can no longer be opened.
    std::thread::sleep(Duration::from_millis(600));
    engine.kill9();
    std::fs::remove_file(data.path().join("token.key")).unwrap();
    let engine = Engine::start_with(&config, 2, data.path());

    // Well past step_retry_ms: every core still answers quotes at once.
    std::thread::sleep(Duration::from_secs(4));
    for _ in 0..20 {
        let started = Instant::now();
        let q = engine.get(&format!("/v1/quotes?isbn={}&currency=USD", sim.isbns[1]));
        assert_eq!(q.status, 200, "{}", q.text());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    // The purchase waits (it cannot know whether its authorization went out), and says
    // so where an operator looks.
    let p = Client::connect(engine.addr).get(&format!("/v1/purchases/{id}"), Some(KEY));
    assert_eq!(p.json()["status"], "pending", "{}", p.text());
    assert!(engine.metric("bookbroker_purchase_step_errors_total") >= 2.0);
    assert!(engine.metric("bookbroker_purchases_stuck") >= 1.0);
    assert!(engine
        .log_text()
        .contains("the sealed tokens cannot be opened"));
}
