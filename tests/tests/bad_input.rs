//! Bad customer input gets a clear 4xx problem+json, never a 5xx, a hang or a crash.

use bookbroker_tests::{Client, Engine, Sim, KEY};

#[test]
fn invalid_queries_are_400_problems() {
    let sim = Sim::start("three_protocols.toml");
    let engine = Engine::start(&sim.config, 1);
    let isbn = &sim.isbns[0];
    for query in [
        "isbn=9780131103628".to_string(), // wrong check digit
        "isbn=97801311036".to_string(),   // wrong length
        "isbn=".to_string(),
        format!("isbn={isbn}&currency=XYZ"), // unknown currency
        format!("isbn={isbn}&currency=JPY"), // known but no rate
        format!("isbn={isbn}&currency=usd"),
        "currency=USD".to_string(),     // neither isbn nor title
        format!("isbn={isbn}&title=x"), // both
        "title=%ZZ".to_string(),        // malformed escape
        "title=%FF%FE".to_string(),     // not UTF-8
        format!("isbn={isbn}&condition=bogus"),
        format!("isbn={isbn}&isbn={isbn}"),
        format!("isbm={isbn}"), // unknown parameter
    ] {
        let r = engine.get(&format!("/v1/quotes?{query}"));
        r.assert_problem(400);
    }
}

#[test]
fn missing_or_wrong_keys_are_401() {
    let sim = Sim::start("three_protocols.toml");
    let engine = Engine::start(&sim.config, 1);
    let path = format!("/v1/quotes?isbn={}", sim.isbns[0]);
    engine.client().get(&path, None).assert_problem(401);
    engine
        .client()
        .get(&path, Some("wrong-key"))
        .assert_problem(401);
    let r = engine
        .client()
        .request(
            "GET",
            &path,
            &[("Authorization", "Basic ZGVtbzpkZW1v")],
            b"",
        )
        .unwrap();
    r.assert_problem(401);
    assert_eq!(engine.client().get(&path, Some(KEY)).status, 200);
}

#[test]
fn wrong_routes_methods_and_malformed_http_are_rejected_and_survived() {
    let sim = Sim::start("three_protocols.toml");
    let engine = Engine::start(&sim.config, 1);
    engine.get("/nope").assert_problem(404);
    let r = engine
        .client()
        .request(
            "POST",
            "/v1/quotes?isbn=9780131103627",
            &[("Authorization", &format!("Bearer {KEY}"))],
            b"{}",
        )
        .unwrap();
    r.assert_problem(405);
    // A 100 KB URI: a 4xx or a closed connection, never a 5xx.
    let long = format!("/v1/quotes?title={}", "a".repeat(100_000));
    if let Ok(r) = engine.client().request("GET", &long, &[], b"") {
        assert!((400..500).contains(&r.status), "{}", r.status);
    }
    // Too many headers.
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    if let Ok(r) = engine.client().raw(many.as_bytes()) {
        assert!((400..500).contains(&r.status), "{}", r.status);
    }
    // Not HTTP at all.
    if let Ok(r) = Client::connect(engine.addr).raw(b"GARBAGE\r\n\r\n") {
        assert_eq!(r.status, 400);
    }
    if let Ok(r) = Client::connect(engine.addr).raw(&[0xff; 64]) {
        assert!((400..500).contains(&r.status));
    }
    assert_eq!(engine.client().get("/healthz", None).status, 200);
    assert_eq!(
        engine
            .get(&format!("/v1/quotes?isbn={}", sim.isbns[0]))
            .status,
        200
    );
}
