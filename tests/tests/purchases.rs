//! Purchases end to end (design section 2, issue 3 item 7): what customers are told,
//! checked against what the payment provider's ledger and the sellers' order books
//! recorded.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use bookbroker_protocols::http::{HttpRequest, Reply};
use bookbroker_protocols::payment::{self, AuthorizeOutcome, AuthorizeRequest, LedgerKind};
use bookbroker_protocols::{
    json_seller, line, xml_seller, Currency, Isbn, Money, OrderOutcome, OrderRequest, QuoteQuery,
};
use bookbroker_tests::{
    authorizations, poll_until_not_pending, purchase_body, purchase_until_final, reconcile, Client,
    Engine, EngineOptions, Resp, Sim, SimSeller, BOB_KEY, KEY,
};
use serde_json::Value;

/// How long any one purchase may take to reach its final answer.
const WAIT: Duration = Duration::from_secs(60);

/// Generous: above every offer of every scenario here.
const PLENTY: i64 = 100_000;

/// Asserts that the books agree (see [`reconcile`]) for these final answers.
fn assert_books(sim: &Sim, answers: &[Value]) {
    let problems = reconcile(answers, &sim.ledger(), &sim.orders());
    assert!(
        problems.is_empty(),
        "the books disagree with what customers were told:\n{problems:#?}\nledger: {:#?}\norders: {:#?}",
        sim.ledger(),
        sim.orders()
    );
}

/// Asserts a `201 purchased` answer and returns its body.
fn assert_purchased(r: &Resp, max_price: i64, currency: &str) -> Value {
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["status"], "purchased", "{v}");
    assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    for field in ["seller", "offer_id", "seller_order_id"] {
        assert!(
            v[field].as_str().is_some_and(|s| !s.is_empty()),
            "{field}: {v}"
        );
    }
    for field in ["price", "shipping", "total"] {
        assert!(v[field].is_i64(), "{field}: {v}");
    }
    let total = v["total"].as_i64().unwrap();
    assert!(
        total > 0 && total <= max_price,
        "total {total} vs max {max_price}: {v}"
    );
    assert_eq!(v["currency"], currency, "{v}");
    v
}

/// The landed totals (USD) of a book's offers, by seller.
fn quoted_totals(engine: &Engine, isbn: &str) -> Vec<(String, i64)> {
    let q = engine.get(&format!("/v1/quotes?isbn={isbn}&currency=USD"));
    assert_eq!(q.status, 200, "{}", q.text());
    let v = q.json();
    assert_eq!(v["complete"], true, "{v}");
    v["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["seller"].as_str().unwrap().to_string(),
                o["total"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Sends a codec-built request over a new connection.
fn send(addr: std::net::SocketAddr, req: &HttpRequest) -> Resp {
    let headers: Vec<(&str, &str)> = req.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    Client::connect(addr)
        .request(req.method, &req.path_and_query, &headers, &req.body)
        .unwrap()
}

/// Orders a book from a seller directly (no engine): quote, then order at the quoted total.
fn order_directly(seller: &SimSeller, isbn: &Isbn, key: &str) -> (String, i64) {
    let query = QuoteQuery::Isbn(*isbn);
    let addr = seller.addr();
    if seller.protocol == "line" {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        let mut out = Vec::new();
        line::Request::Quote {
            tag: "q".into(),
            query,
        }
        .encode(&mut out);
        stream.write_all(&out).unwrap();
        let mut lines = BufReader::new(stream.try_clone().unwrap()).lines();
        let mut offer = None;
        for l in lines.by_ref() {
            match line::Response::decode(l.unwrap().as_bytes()).unwrap() {
                line::Response::Offer { offer: o, .. } => offer = offer.or(Some(o)),
                line::Response::End { .. } => break,
                other => panic!("{other:?}"),
            }
        }
        let offer = offer.expect("an offer");
        let mut out = Vec::new();
        line::Request::Order {
            tag: "o".into(),
            order: OrderRequest {
                offer_id: offer.offer_id.clone(),
                expected_total: offer.total(),
                idempotency_key: key.into(),
                shipping_token: "ship_home".into(),
            },
        }
        .encode(&mut out);
        stream.write_all(&out).unwrap();
        return match line::Response::decode(lines.next().unwrap().unwrap().as_bytes()).unwrap() {
            line::Response::Ordered {
                order_id, total, ..
            } => (order_id, total.minor),
            other => panic!("{other:?}"),
        };
    }
    let xml = seller.protocol == "xml";
    let quote = if xml {
        xml_seller::encode_quote(&query)
    } else {
        json_seller::encode_quote(&query)
    };
    let r = send(addr, &quote);
    let reply = Reply {
        status: r.status,
        retry_after: None,
        body: &r.body,
    };
    let offers = if xml {
        xml_seller::decode_quote(reply).unwrap()
    } else {
        json_seller::decode_quote(reply).unwrap()
    };
    let order = OrderRequest {
        offer_id: offers[0].offer_id.clone(),
        expected_total: offers[0].total(),
        idempotency_key: key.into(),
        shipping_token: "ship_home".into(),
    };
    let req = if xml {
        xml_seller::encode_order(&order)
    } else {
        json_seller::encode_order(&order)
    };
    let r = send(addr, &req);
    let reply = Reply {
        status: r.status,
        retry_after: None,
        body: &r.body,
    };
    let outcome = if xml {
        xml_seller::decode_order(reply).unwrap()
    } else {
        json_seller::decode_order(reply).unwrap()
    };
    match outcome {
        OrderOutcome::Ordered { order_id, total } => (order_id, total.minor),
        other => panic!("{other:?}"),
    }
}

/// The harness itself, without an engine: it reads every protocol's order book and the
/// ledger, and `reconcile` spots a charge without a standing order.
#[test]
fn the_harness_reads_every_order_book_and_the_ledger() {
    let sim = Sim::start("purchases.toml");
    let sellers = sim.sellers();
    let protocols: Vec<&str> = sellers.iter().map(|s| s.protocol.as_str()).collect();
    assert_eq!(protocols, ["json", "xml", "line"]);
    assert!(sim.orders().is_empty() && sim.ledger().entries.is_empty());
    let isbn = Isbn::parse(&sim.isbns[0]).unwrap();
    let mut placed = Vec::new();
    for s in &sellers {
        let (order_id, total) = order_directly(s, &isbn, &format!("direct-{}", s.name));
        placed.push((s.name.clone(), order_id, total));
    }
    let orders = sim.orders();
    assert_eq!(orders.len(), 3, "{orders:#?}");
    for (o, (seller, order_id, total)) in orders.iter().zip(&placed) {
        assert_eq!((&o.seller, &o.order.order_id), (seller, order_id));
        assert_eq!(o.order.total_minor, *total);
        assert_eq!(o.order.idempotency_key, format!("direct-{seller}"));
        assert!(o.is_placed());
    }
    let auth = |key: &str| {
        let req = payment::encode_authorize(
            &AuthorizeRequest {
                payment_token: "tok_ok_direct".into(),
                amount: Money::new(5_000, Currency::USD),
            },
            key,
        );
        let r = send(sim.payment, &req);
        match payment::decode_authorize(Reply {
            status: r.status,
            retry_after: None,
            body: &r.body,
        })
        .unwrap()
        {
            AuthorizeOutcome::Authorized { id, .. } => id,
            other => panic!("{other:?}"),
        }
    };
    let a1 = auth("direct-auth-1");
    let a2 = auth("direct-auth-2");
    assert_eq!(
        send(
            sim.payment,
            &payment::encode_capture(&a1, 1_234, "direct-cap-1")
        )
        .status,
        200
    );
    assert_eq!(
        send(sim.payment, &payment::encode_void(&a2, "direct-void-2")).status,
        200
    );
    let ledger = sim.ledger();
    let auths = authorizations(&ledger);
    assert_eq!(auths.len(), 2);
    assert_eq!(auths[&a1].captures.len(), 1);
    assert_eq!(auths[&a1].amount, 5_000);
    assert_eq!(auths[&a1].idempotency_key, "direct-auth-1");
    assert!(auths[&a2].voided);
    // One charge, three standing orders and nobody told: reconcile says so.
    let problems = reconcile(&[], &ledger, &orders);
    assert_eq!(problems.len(), 4, "{problems:#?}");
}

#[test]
fn fifty_concurrent_requests_with_one_key_buy_exactly_once() {
    let sim = Sim::start("purchases.toml");
    let engine = Engine::start(&sim.config, 2);
    let body = purchase_body(&sim.isbns[0], PLENTY, "USD", "tok_ok_4242", "ship_home");
    let key = "fifty-at-once-1";
    let barrier = Arc::new(Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let body = body.clone();
            let addr = engine.addr;
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                client.set_read_timeout(WAIT).unwrap();
                barrier.wait();
                client
                    .post_purchase(KEY, Some(key), body.as_bytes(), &[])
                    .expect("an answer")
            })
        })
        .collect();
    let answers: Vec<Resp> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    let mut finals = Vec::new();
    for r in &answers {
        if r.status == 409 {
            r.assert_problem(409);
        } else {
            finals.push(r);
        }
    }
    assert!(
        !finals.is_empty(),
        "every one of 50 answers was 409; the one that started it must get the final answer"
    );
    let first = finals[0];
    let v = assert_purchased(first, PLENTY, "USD");
    for r in &finals {
        assert_eq!(
            (r.status, r.text()),
            (first.status, first.text()),
            "every answer is 409 or the one final answer"
        );
    }
    eprintln!("{} of 50 got the final answer, the rest 409", finals.len());

    let replay = engine.purchase(key, &body);
    assert_eq!((replay.status, replay.text()), (first.status, first.text()));

    let ledger = sim.ledger();
    let count = |kind| ledger.entries.iter().filter(|e| e.kind == kind).count();
    assert_eq!(count(LedgerKind::Authorization), 1, "{ledger:#?}");
    assert_eq!(count(LedgerKind::Capture), 1, "{ledger:#?}");
    assert_eq!(count(LedgerKind::Void), 0, "{ledger:#?}");
    let capture = ledger
        .entries
        .iter()
        .find(|e| e.kind == LedgerKind::Capture)
        .unwrap();
    assert_eq!(capture.amount, v["total"].as_i64().unwrap());
    assert_eq!(capture.currency, "USD");
    let orders = sim.orders();
    assert_eq!(orders.len(), 1, "one seller order: {orders:#?}");
    assert!(orders[0].is_placed());
    assert_eq!(orders[0].seller, v["seller"].as_str().unwrap());
    assert_eq!(
        orders[0].order.order_id,
        v["seller_order_id"].as_str().unwrap()
    );
    assert_books(&sim, &[v]);
}

#[test]
fn idempotency_keys_and_bad_input_are_checked_and_purchases_are_private() {
    let sim = Sim::start("purchases.toml");
    let engine = Engine::start(&sim.config, 2);
    let addr = engine.addr;
    let isbn = sim.isbns[1].clone();
    let body_a = purchase_body(&isbn, PLENTY, "USD", "tok_ok_1111", "ship_home");
    let body_b = purchase_body(&isbn, PLENTY + 1, "USD", "tok_ok_1111", "ship_home");
    let mut answers = Vec::new();

    // A purchase, then the same key with another body: 422, and the first answer stands.
    let first = purchase_until_final(addr, KEY, "key-a", &body_a, &[], WAIT);
    let a = assert_purchased(&first, PLENTY, "USD");
    answers.push(a.clone());
    engine.purchase("key-a", &body_b).assert_problem(422);
    let again = engine.purchase("key-a", &body_a);
    assert_eq!((again.status, again.text()), (first.status, first.text()));

    // Keys are per customer: bob's "key-a" with another body is a purchase of its own.
    let bobs = purchase_until_final(addr, BOB_KEY, "key-a", &body_b, &[], WAIT);
    let b = assert_purchased(&bobs, PLENTY + 1, "USD");
    assert_ne!(a["id"], b["id"]);
    answers.push(b.clone());

    // A customer sees its own purchases, and only those.
    let id_a = a["id"].as_str().unwrap();
    let id_b = b["id"].as_str().unwrap();
    let own = engine.get(&format!("/v1/purchases/{id_a}"));
    assert!(matches!(own.status, 200 | 201), "{}", own.text());
    assert_eq!(own.json(), a);
    engine
        .client()
        .get(&format!("/v1/purchases/{id_b}"), Some(KEY))
        .assert_problem(404);
    engine
        .client()
        .get(&format!("/v1/purchases/{id_a}"), Some(BOB_KEY))
        .assert_problem(404);
    engine
        .get("/v1/purchases/pur_no_such_purchase")
        .assert_problem(404);
    engine
        .client()
        .get(&format!("/v1/purchases/{id_a}"), None)
        .assert_problem(401);

    // Idempotency-Key: required, 1..=255 visible ASCII characters.
    let post = |key: Option<&str>, body: &str| {
        engine
            .client()
            .post_purchase(KEY, key, body.as_bytes(), &[])
            .expect("an answer")
    };
    post(None, &body_a).assert_problem(400);
    post(Some(""), &body_a).assert_problem(400);
    post(Some(&"k".repeat(256)), &body_a).assert_problem(400);
    post(Some("clé-non-ascii"), &body_a).assert_problem(400);
    for bad in ["tab\there", "ctl\u{1}here", "del\u{7f}here"] {
        // Some of these never reach the engine's code (the HTTP parser refuses the
        // header), so only the status is checked.
        let r = post(Some(bad), &body_a);
        assert_eq!(r.status, 400, "key {bad:?}: {}", r.text());
    }
    let longest = "k".repeat(255);
    let r = purchase_until_final(addr, KEY, &longest, &body_a, &[], WAIT);
    answers.push(assert_purchased(&r, PLENTY, "USD"));

    // Bad bodies and headers: a clear 4xx, and nothing is authorized or ordered.
    let good = |max_price: Value, currency: &str, isbn: &str| {
        serde_json::json!({"isbn": isbn, "max_price": max_price, "currency": currency,
            "condition": "any", "payment_token": "tok_ok_1111", "shipping_token": "ship_home"})
        .to_string()
    };
    let bad_bodies = [
        (
            "malformed JSON",
            format!("{{\"isbn\": \"{isbn}\", \"max_pri"),
        ),
        ("not an object", "[1, 2, 3]".to_string()),
        ("unknown currency", good(2000.into(), "XYZ", &isbn)),
        ("negative max_price", good((-1).into(), "USD", &isbn)),
        ("absurd max_price", good(i64::MAX.into(), "USD", &isbn)),
        ("fractional max_price", good(20.5.into(), "USD", &isbn)),
        ("max_price as a string", good("2000".into(), "USD", &isbn)),
        (
            "wrong ISBN check digit",
            good(2000.into(), "USD", "9780131103628"),
        ),
        (
            "unknown condition",
            serde_json::json!({"isbn": isbn, "max_price": 2000, "currency": "USD",
                "condition": "mint", "payment_token": "tok_ok_1111",
                "shipping_token": "ship_home"})
            .to_string(),
        ),
        (
            "no payment token",
            serde_json::json!({"isbn": isbn, "max_price": 2000, "currency": "USD",
                "condition": "any", "shipping_token": "ship_home"})
            .to_string(),
        ),
        (
            "neither isbn nor title",
            serde_json::json!({"max_price": 2000, "currency": "USD", "condition": "any",
                "payment_token": "tok_ok_1111", "shipping_token": "ship_home"})
            .to_string(),
        ),
    ];
    for (i, (what, body)) in bad_bodies.iter().enumerate() {
        let r = post(Some(&format!("bad-body-{i}")), body);
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        r.assert_problem(400);
    }
    let r = engine
        .client()
        .request(
            "POST",
            "/v1/purchases",
            &[
                ("Authorization", &format!("Bearer {KEY}")),
                ("Content-Type", "text/plain"),
                ("Idempotency-Key", "wrong-content-type"),
            ],
            body_a.as_bytes(),
        )
        .unwrap();
    r.assert_problem(415);
    engine
        .client()
        .post_purchase("wrong-key", Some("wrong-api-key"), body_a.as_bytes(), &[])
        .unwrap()
        .assert_problem(401);

    let auths = authorizations(&sim.ledger());
    assert_eq!(
        auths.len(),
        3,
        "three purchases, three authorizations; bad requests authorize nothing: {auths:#?}"
    );
    assert_eq!(sim.orders().len(), 3);
    assert_books(&sim, &answers);
}

#[test]
fn two_customers_racing_for_the_last_copy_never_pay_for_a_book_they_do_not_get() {
    let sim = Sim::start("purchases_race.toml");
    let engine = Engine::start(&sim.config, 2);
    let mut answers = Vec::new();
    let (mut demo_won, mut bob_won) = (0, 0);
    for (round, isbn) in sim.isbns.iter().take(8).enumerate() {
        let totals = quoted_totals(&engine, isbn);
        let total_of = |seller: &str| {
            totals
                .iter()
                .find(|(s, _)| s == seller)
                .map(|(_, t)| *t)
                .unwrap_or_else(|| panic!("{seller} does not quote {isbn}: {totals:?}"))
        };
        let (cheap, dear) = (total_of("cheap"), total_of("dear"));
        assert!(cheap < dear);
        // demo can afford every seller; bob only the last cheap copy.
        let demo_max = PLENTY + round as i64;
        let bob_max = dear - 1;
        let barrier = Arc::new(Barrier::new(2));
        let racer = |api_key: &'static str, max_price: i64, token: &str| {
            let barrier = Arc::clone(&barrier);
            let body = purchase_body(isbn, max_price, "USD", token, "ship_home");
            let key = format!("race-{round}");
            let addr = engine.addr;
            std::thread::spawn(move || {
                barrier.wait();
                purchase_until_final(addr, api_key, &key, &body, &[], WAIT)
            })
        };
        let demo = racer(KEY, demo_max, "tok_ok_demo");
        let bob = racer(BOB_KEY, bob_max, "tok_ok_bob");
        let (demo, bob) = (demo.join().unwrap(), bob.join().unwrap());
        let (d, b) = (demo.json(), bob.json());
        if d["status"] == "purchased" && d["seller"] == "cheap" {
            demo_won += 1;
            assert_purchased(&demo, demo_max, "USD");
            assert_eq!(d["total"].as_i64(), Some(cheap), "{d}");
            assert_eq!(bob.status, 200, "{b}");
            assert_eq!(b["status"], "no_offer_within_limit", "{b}");
            if b.get("lowest").is_some() {
                assert!(b["lowest"]["total"].is_i64(), "{b}");
            }
        } else {
            bob_won += 1;
            assert_purchased(&bob, bob_max, "USD");
            assert_eq!(
                b["seller"], "cheap",
                "one of the two gets the cheap copy: {d} {b}"
            );
            assert_eq!(b["total"].as_i64(), Some(cheap), "{b}");
            assert_purchased(&demo, demo_max, "USD");
            assert_eq!(
                d["seller"], "dear",
                "the next seller within demo's limit: {d}"
            );
            assert_eq!(d["total"].as_i64(), Some(dear), "{d}");
        }
        answers.push(d);
        answers.push(b);
    }
    eprintln!("the cheap copy went to demo {demo_won} times, to bob {bob_won} times");
    let cheap_orders: Vec<_> = sim
        .orders()
        .into_iter()
        .filter(|o| o.seller == "cheap" && o.is_placed())
        .collect();
    assert_eq!(
        cheap_orders.len(),
        8,
        "one copy per book: {cheap_orders:#?}"
    );
    assert_books(&sim, &answers);
}

/// The total the drifting seller of `purchases_drift.toml` confirms for an order quoted
/// at `total` (drift_pct = 10, rounded as the simulator does, at least one cent).
fn drifted(total: i64) -> i64 {
    total + ((total * 1_000 + 5_000) / 10_000).max(1)
}

#[test]
fn a_price_that_rises_past_the_limit_buys_nothing_and_voids_the_hold() {
    let sim = Sim::start("purchases_drift.toml");
    let engine = Engine::start(&sim.config, 1);
    let mut answers = Vec::new();
    for (i, isbn) in sim.isbns.iter().take(3).enumerate() {
        let totals = quoted_totals(&engine, isbn);
        assert_eq!(totals.len(), 1, "{totals:?}");
        let quoted = totals[0].1;
        let risen = drifted(quoted);
        // Within the limit when quoted, over it when ordered.
        let max_price = quoted + (risen - quoted) / 2;
        assert!(quoted <= max_price && max_price < risen);
        let body = purchase_body(isbn, max_price, "USD", "tok_ok_drift", "ship_home");
        let r = purchase_until_final(engine.addr, KEY, &format!("drift-{i}"), &body, &[], WAIT);
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        match v["status"].as_str() {
            Some("no_offer_within_limit") => {}
            Some("failed") => assert!(v["reason"].as_str().is_some_and(|s| !s.is_empty())),
            _ => panic!("no purchase expected: {v}"),
        }
        answers.push(v);
    }
    let ledger = sim.ledger();
    assert!(
        !ledger.entries.iter().any(|e| e.kind == LedgerKind::Capture),
        "{ledger:#?}"
    );
    for a in authorizations(&ledger).values() {
        assert!(a.voided, "every hold is voided: {a:?}");
    }
    let orders = sim.orders();
    assert!(
        !orders.iter().any(|o| o.is_placed()),
        "no order stands: {orders:#?}"
    );
    assert_books(&sim, &answers);
}

#[test]
fn a_price_that_rises_within_the_limit_is_bought_at_the_confirmed_total() {
    let sim = Sim::start("purchases_drift.toml");
    let engine = Engine::start(&sim.config, 1);
    let isbn = &sim.isbns[0];
    let quoted = quoted_totals(&engine, isbn)[0].1;
    let risen = drifted(quoted);
    let max_price = risen + 100;
    let body = purchase_body(isbn, max_price, "USD", "tok_ok_drift", "ship_home");
    let r = purchase_until_final(engine.addr, KEY, "drift-ok", &body, &[], WAIT);
    let v = assert_purchased(&r, max_price, "USD");
    assert_eq!(
        v["total"].as_i64(),
        Some(risen),
        "the seller's confirmed total, not the quote: {v}"
    );
    assert_books(&sim, &[v]);
}

#[test]
fn a_capture_that_fails_cancels_the_order_voids_the_hold_and_says_failed() {
    let sim = Sim::start("purchases.toml");
    let engine = Engine::start(&sim.config, 1);
    let body = purchase_body(
        &sim.isbns[2],
        PLENTY,
        "USD",
        "tok_capture_fail_0001",
        "ship_home",
    );
    let r = purchase_until_final(engine.addr, KEY, "capture-fails", &body, &[], WAIT);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["status"], "failed", "{v}");
    assert!(
        v["reason"].as_str().is_some_and(|s| !s.is_empty()),
        "a failure says why: {v}"
    );
    let replay = engine.purchase("capture-fails", &body);
    assert_eq!((replay.status, replay.text()), (r.status, r.text()));

    let ledger = sim.ledger();
    let auths = authorizations(&ledger);
    assert_eq!(auths.len(), 1, "{ledger:#?}");
    let auth = auths.values().next().unwrap();
    assert!(auth.captures.is_empty() && auth.voided, "{auth:?}");
    let orders = sim.orders();
    assert!(
        !orders.is_empty(),
        "the book was ordered before the capture"
    );
    assert!(
        orders.iter().all(|o| !o.is_placed()),
        "every order cancelled: {orders:#?}"
    );
    assert_books(&sim, &[v]);
}

#[test]
fn a_declined_card_is_402_and_nothing_is_ordered() {
    let sim = Sim::start("purchases.toml");
    let engine = Engine::start(&sim.config, 1);
    let body = purchase_body(
        &sim.isbns[3],
        PLENTY,
        "USD",
        "tok_decline_0002",
        "ship_home",
    );
    let r = purchase_until_final(engine.addr, KEY, "declined", &body, &[], WAIT);
    assert_eq!(r.status, 402, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["status"], "payment_declined", "{v}");
    assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    let replay = engine.purchase("declined", &body);
    assert_eq!((replay.status, replay.text()), (r.status, r.text()));

    let ledger = sim.ledger();
    assert!(
        ledger.entries.iter().all(|e| e.kind == LedgerKind::Decline),
        "{ledger:#?}"
    );
    assert!(!ledger.entries.is_empty(), "the card was tried");
    assert!(
        sim.orders().is_empty(),
        "no seller order: {:#?}",
        sim.orders()
    );
    for seller in sim.stats()["sellers"].as_array().unwrap() {
        assert_eq!(seller["requests"]["order"], 0, "{seller}");
    }
}

#[test]
fn respond_async_answers_202_and_the_location_reaches_the_final_answer() {
    let sim = Sim::start("purchases.toml");
    let engine = Engine::start(&sim.config, 2);
    let body = purchase_body(&sim.isbns[4], PLENTY, "GBP", "tok_ok_async", "ship_home");
    let prefer = [("Prefer", "respond-async")];
    let r = engine
        .client()
        .post_purchase(KEY, Some("async-1"), body.as_bytes(), &prefer)
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["status"], "pending", "{v}");
    let id = v["id"].as_str().unwrap();
    let location = r.header("location").expect("Location").to_string();
    assert_eq!(location, format!("/v1/purchases/{id}"));

    let done = poll_until_not_pending(engine.addr, KEY, &location, WAIT);
    let replay = purchase_until_final(engine.addr, KEY, "async-1", &body, &prefer, WAIT);
    let final_body = assert_purchased(&replay, PLENTY, "GBP");
    assert_eq!(final_body["id"], id);
    assert_eq!(done.json(), final_body, "GET shows what a replay answers");
    assert!(
        done.status == 200 || done.status == replay.status,
        "GET status {}",
        done.status
    );
    let again = engine
        .client()
        .post_purchase(KEY, Some("async-1"), body.as_bytes(), &prefer)
        .unwrap();
    assert_eq!((again.status, again.text()), (replay.status, replay.text()));
    engine
        .client()
        .get(&location, Some(BOB_KEY))
        .assert_problem(404);
    assert_books(&sim, &[final_body]);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn no_token_or_api_key_reaches_the_log_or_the_disk_in_clear() {
    let sim = Sim::start("purchases.toml");
    let data = tempfile::tempdir().unwrap();
    let token_key = "5e".repeat(32);
    let mut engine = Engine::start_opts(
        &sim.config,
        2,
        &EngineOptions {
            data_dir: Some(data.path().to_path_buf()),
            env: vec![
                ("RUST_LOG".into(), "debug".into()),
                ("BOOKBROKER_TOKEN_KEY".into(), token_key.clone()),
            ],
            ..EngineOptions::default()
        },
    );
    let addr = engine.addr;
    let isbn = &sim.isbns[5];
    let ok = ("tok_ok_leakcheck_5f3c9a", "ship_leakcheck_home_9e2b41");
    let decline = ("tok_decline_leakcheck_77ab12", "ship_leakcheck_decl_4c1d");
    let capture_fail = (
        "tok_capture_fail_leakcheck_31d0",
        "ship_leakcheck_capf_8a7e",
    );
    let bad = (
        "tok_ok_leakcheck_badreq_c0ffee",
        "ship_leakcheck_badreq_d00d",
    );
    let conflict = (
        "tok_ok_leakcheck_conflict_1234",
        "ship_leakcheck_conflict_77",
    );
    let bob = ("tok_ok_leakcheck_bob_6b0b", "ship_leakcheck_bob_b0b6");
    let wrong_key = "wrong-key-leakcheck-a1b2c3";

    let mut answers = Vec::new();
    for (key, (token, ship), api_key) in [
        ("leak-ok", ok, KEY),
        ("leak-decline", decline, KEY),
        ("leak-capture-fail", capture_fail, KEY),
        ("leak-bob", bob, BOB_KEY),
    ] {
        let body = purchase_body(isbn, PLENTY, "USD", token, ship);
        let r = purchase_until_final(addr, api_key, key, &body, &[], WAIT);
        assert!(matches!(r.status, 200 | 201 | 402), "{}", r.text());
        answers.push(r.json());
    }
    // Asynchronously too, then the same key with another body (422).
    let body = purchase_body(isbn, PLENTY, "EUR", conflict.0, conflict.1);
    let r = engine
        .client()
        .post_purchase(
            KEY,
            Some("leak-async"),
            body.as_bytes(),
            &[("Prefer", "respond-async")],
        )
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let location = r.header("location").unwrap().to_string();
    poll_until_not_pending(addr, KEY, &location, WAIT);
    answers.push(purchase_until_final(addr, KEY, "leak-async", &body, &[], WAIT).json());
    let other = purchase_body(isbn, PLENTY + 1, "EUR", conflict.0, conflict.1);
    engine.purchase("leak-async", &other).assert_problem(422);
    // Bad requests that carry secrets.
    for (i, body) in [
        format!(
            r#"{{"isbn": "{isbn}", "payment_token": "{}", "shipping_token": "{}""#,
            bad.0, bad.1
        ),
        purchase_body(isbn, -5, "USD", bad.0, bad.1),
        purchase_body(isbn, PLENTY, "XYZ", bad.0, bad.1),
    ]
    .iter()
    .enumerate()
    {
        let r = engine.purchase(&format!("leak-bad-{i}"), body);
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(
            !r.text().contains(bad.0) && !r.text().contains(bad.1),
            "an error echoes a token: {}",
            r.text()
        );
    }
    let body = purchase_body(isbn, PLENTY, "USD", bad.0, bad.1);
    engine
        .client()
        .post_purchase(wrong_key, Some("leak-401"), body.as_bytes(), &[])
        .unwrap()
        .assert_problem(401);
    engine
        .client()
        .get("/v1/purchases/pur_unknown", Some(wrong_key))
        .assert_problem(401);
    let metrics = engine.client().get("/metrics", None).text();
    assert_books(&sim, &answers);

    // Stop cleanly so every log line is written out.
    let status = engine.terminate(Duration::from_secs(10));
    assert!(status.is_some(), "engine did not stop on SIGTERM");
    let log = engine.log_text();
    assert!(
        !log.is_empty(),
        "the engine logged something at debug level"
    );
    let mut secrets: Vec<&str> = vec![KEY, BOB_KEY, wrong_key, &token_key];
    for (token, ship) in [ok, decline, capture_fail, bad, conflict, bob] {
        secrets.push(token);
        secrets.push(ship);
    }
    for secret in &secrets {
        assert!(
            !log.contains(secret),
            "the engine log contains the secret {secret:?}:\n{}",
            log.lines()
                .filter(|l| l.contains(secret))
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            !metrics.contains(secret),
            "/metrics contains the secret {secret:?}"
        );
    }
    // Tokens that must be kept for recovery are encrypted at rest: no file of the data
    // directory holds one (or an API key) in clear.
    let files = files_under(data.path());
    assert!(!files.is_empty(), "the engine wrote its data directory");
    let mut leaks = BTreeSet::new();
    for file in &files {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        for secret in &secrets {
            if bytes.windows(secret.len()).any(|w| w == secret.as_bytes()) {
                leaks.insert(format!("{} holds {secret:?}", file.display()));
            }
        }
    }
    assert!(leaks.is_empty(), "secrets in clear on disk: {leaks:#?}");
}
