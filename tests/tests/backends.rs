//! A smoke subset on every executor backend, chosen explicitly with `--runtime` (the rest
//! of the suite runs on the default, `auto`): quotes from all three protocols (TLS and
//! pipelined `line` included), a purchase, recovery after `kill -9`, and a graceful drain.

use std::sync::Arc;
use std::time::Duration;

use bookbroker_tests::{
    poll_until_not_pending, purchase_body, purchase_until_final, reconcile, statuses, Client,
    Engine, EngineOptions, Sim, KEY,
};

fn options(runtime: &str) -> EngineOptions {
    EngineOptions {
        runtime: Some(runtime.to_string()),
        ..EngineOptions::default()
    }
}

fn start(sim: &Sim, runtime: &str) -> Engine {
    let engine = Engine::start_opts(&sim.config, 2, &options(runtime));
    assert_eq!(
        engine.backend().as_deref(),
        Some(runtime),
        "{}",
        engine.log_plain()
    );
    engine
}

fn assert_books(sim: &Sim, answers: &[serde_json::Value]) {
    let problems = reconcile(answers, &sim.ledger(), &sim.orders());
    assert!(problems.is_empty(), "the books disagree: {problems:#?}");
}

/// Many quotes at once from eight client connections: on each core the `line` seller's
/// few connections carry several requests at a time (pipelined), and the TLS seller's
/// connections are reused.
fn quotes_from_every_protocol(runtime: &str) {
    let sim = Arc::new(Sim::start("three_protocols.toml"));
    let engine = start(&sim, runtime);
    let addr = engine.addr;
    let clients: Vec<_> = (0..8)
        .map(|c| {
            let sim = Arc::clone(&sim);
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0..10 {
                    let isbn = &sim.isbns[(c * 10 + i) % sim.isbns.len()];
                    let q = client.get(&format!("/v1/quotes?isbn={isbn}&currency=EUR"), Some(KEY));
                    assert_eq!(q.status, 200, "{}", q.text());
                    let v = q.json();
                    let st = statuses(&v);
                    for seller in ["json-plain", "json-tls", "xml-eur", "line-gbp"] {
                        assert_eq!(st.get(seller).map(String::as_str), Some("ok"), "{v}");
                    }
                    assert_eq!(v["complete"], true, "{v}");
                    let offers = v["offers"].as_array().expect("offers");
                    assert!(
                        offers.iter().any(|o| o["seller"] == "line-gbp")
                            && offers.iter().any(|o| o["seller"] == "json-tls"),
                        "{v}"
                    );
                    let totals: Vec<i64> = offers
                        .iter()
                        .map(|o| o["total"].as_i64().unwrap())
                        .collect();
                    assert!(totals.windows(2).all(|w| w[0] <= w[1]), "{totals:?}");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
}

fn a_purchase(runtime: &str) {
    let sim = Sim::start("purchases.toml");
    let engine = start(&sim, runtime);
    let body = purchase_body(&sim.isbns[0], 100_000, "USD", "tok_ok_4242", "ship_home");
    let r = purchase_until_final(
        engine.addr,
        KEY,
        &format!("smoke-{runtime}"),
        &body,
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert_eq!(v["status"], "purchased", "{v}");
    assert_books(&sim, &[v]);
}

/// A purchase in flight (the payment provider takes 1.5 s a call) when the engine is
/// killed: the restarted engine, on the same backend and data directory, finishes it.
fn recovery_after_kill_9(runtime: &str) {
    let sim = Sim::start("purchases_slow_payment.toml");
    let data = tempfile::tempdir().unwrap();
    let opts = EngineOptions {
        data_dir: Some(data.path().to_path_buf()),
        ..options(runtime)
    };
    let mut engine = Engine::start_opts(&sim.config, 2, &opts);
    let body = purchase_body(&sim.isbns[1], 100_000, "USD", "tok_ok_4242", "ship_home");
    let r = engine
        .client()
        .post_purchase(
            KEY,
            Some("smoke-crash"),
            body.as_bytes(),
            &[("Prefer", "respond-async")],
        )
        .expect("post");
    assert_eq!(r.status, 202, "{}", r.text());
    let location = r.header("location").expect("Location").to_string();
    std::thread::sleep(Duration::from_millis(600));
    engine.kill9();
    let engine = Engine::start_opts(&sim.config, 2, &opts);
    assert_eq!(engine.backend().as_deref(), Some(runtime));
    let done = poll_until_not_pending(engine.addr, KEY, &location, Duration::from_secs(60));
    let v = done.json();
    assert_eq!(v["status"], "purchased", "{v}\n{}", engine.log_plain());
    assert_books(&sim, &[v]);
}

/// SIGTERM with a quote in flight: the quote is answered, the engine exits 0.
fn graceful_drain(runtime: &str) {
    let sim = Sim::start("slow.toml");
    let mut engine = start(&sim, runtime);
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

macro_rules! smoke {
    ($backend:ident) => {
        mod $backend {
            #[test]
            fn quotes_from_every_protocol() {
                super::quotes_from_every_protocol(stringify!($backend));
            }

            #[test]
            fn a_purchase() {
                super::a_purchase(stringify!($backend));
            }

            #[test]
            fn recovery_after_kill_9() {
                super::recovery_after_kill_9(stringify!($backend));
            }

            #[test]
            fn graceful_drain() {
                super::graceful_drain(stringify!($backend));
            }
        }
    };
}

smoke!(epoll);
smoke!(glommio);
smoke!(io_uring);
