//! Limits a hostile or careless client meets: a long request target, slow headers and
//! idle keep-alive connections, too many connections on a core, one customer's request
//! rate; and what a bug in a core does to the process (it aborts, and a restart serves).

use std::time::{Duration, Instant};

use bookbroker_tests::{Client, Engine, EngineOptions, Sim, BOB_KEY, KEY};

#[test]
fn a_request_target_over_the_limit_gets_problem_json_414() {
    let sim = Sim::start("three_protocols.toml");
    let engine = Engine::start(&sim.config, 1);
    let mut c = engine.client();
    let long = format!("/v1/quotes?title={}", "a".repeat(9000));
    let r = c.get(&long, Some(KEY));
    r.assert_problem(414);
    assert_eq!(r.json()["type"], "/problems/uri-too-long");
    // The connection stays usable, and a target under the limit is served.
    let ok = c.get("/v1/quotes?title=the%20hobbit", Some(KEY));
    assert_eq!(ok.status, 200, "{}", ok.text());

    // What the HTTP parser refuses before any route runs is problem+json too: a target
    // over its own 64 KiB limit, a head that is not HTTP, too many headers.
    let huge = format!(
        "GET /v1/quotes?title={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let r = engine.client().raw(huge.as_bytes()).expect("an answer");
    r.assert_problem(414);
    let r = engine
        .client()
        .raw(b"HELLO THERE\r\n\r\n")
        .expect("an answer");
    r.assert_problem(400);
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-Filler-{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    let r = engine.client().raw(many.as_bytes()).expect("an answer");
    r.assert_problem(431);
    // And the engine is fine.
    assert_eq!(engine.get("/healthz").status, 200);
}

#[test]
fn idle_keep_alive_and_slow_headers_have_their_own_timeouts() {
    let sim = Sim::start("three_protocols.toml");
    let config = sim.config_with(|c| {
        c.replace(
            "[server]\n",
            "[server]\nheader_read_timeout_ms = 400\nidle_timeout_ms = 2500\n",
        )
    });
    let engine = Engine::start(&config, 1);

    // Idle between requests for longer than the header timeout: still open.
    let mut idle = engine.client();
    assert_eq!(idle.get("/healthz", None).status, 200);
    assert!(
        !idle
            .closed_within(Duration::from_millis(1200))
            .expect("read"),
        "an idle keep-alive connection was closed by the header timeout"
    );
    assert_eq!(idle.get("/healthz", None).status, 200);
    // ... but not for longer than the idle timeout.
    let t = Instant::now();
    assert!(
        idle.closed_within(Duration::from_secs(6)).expect("read"),
        "an idle connection outlived idle_timeout_ms"
    );
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(2000),
        "closed after {waited:?}, before idle_timeout_ms"
    );

    // Headers that stop half-way: closed after the header timeout.
    let mut slow = engine.client();
    slow.raw_write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .expect("write");
    assert!(
        slow.closed_within(Duration::from_secs(2)).expect("read"),
        "a half-sent request head kept its connection"
    );

    // A connection that never sends a byte: the same.
    let mut silent = engine.client();
    assert!(
        silent.closed_within(Duration::from_secs(2)).expect("read"),
        "a silent new connection was kept"
    );

    assert!(engine.metric("bookbroker_connections_timed_out_total") >= 3.0);
}

#[test]
fn connections_over_max_connections_per_core_are_closed_at_once() {
    let sim = Sim::start("three_protocols.toml");
    let config =
        sim.config_with(|c| c.replace("[server]\n", "[server]\nmax_connections_per_core = 3\n"));
    let engine = Engine::start(&config, 1);
    // The start-up readiness check's connection may still count for a moment after it
    // closed: a refused connection is tried again.
    let mut held: Vec<Client> = (0..3).map(|_| healthy_connection(&engine)).collect();
    let mut extra = engine.client();
    assert!(
        extra.closed_within(Duration::from_secs(2)).expect("read"),
        "a fourth connection on a core limited to three was kept"
    );
    // The held ones are untouched.
    for c in &mut held {
        assert_eq!(c.get("/healthz", None).status, 200);
    }
    assert!(metric_on(&mut held[0], "bookbroker_load_shed_total") >= 1.0);
    // Closing one makes room for one.
    drop(held.pop());
    healthy_connection(&engine);
}

/// A connection that has been served once, retried for up to 5 s while the engine
/// refuses it.
fn healthy_connection(engine: &Engine) -> Client {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = engine.client();
        match c.request("GET", "/healthz", &[], b"") {
            Ok(r) if r.status == 200 => return c,
            _ if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
            other => panic!("no connection served within 5 s: {other:?}"),
        }
    }
}

/// A metric read over a connection the caller already holds (a new one might be over
/// the connection limit).
fn metric_on(c: &mut Client, name: &str) -> f64 {
    let text = c.get("/metrics", None).text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[test]
fn one_customer_over_its_rate_gets_429_and_others_are_served() {
    let sim = Sim::start("purchases.toml");
    let config = sim.config_with(|c| {
        c.replacen(
            "id = \"demo\"\n",
            "id = \"demo\"\nrate_per_sec = 5\nburst = 5\n",
            1,
        )
    });
    assert!(
        std::fs::read_to_string(&config)
            .expect("config")
            .contains("rate_per_sec = 5"),
        "the emitted config has no customer demo"
    );
    let engine = Engine::start(&config, 2);
    let isbn = &sim.isbns[0];
    let path = format!("/v1/quotes?isbn={isbn}");
    // Over several connections, so both cores see the customer: the limit is one for
    // the whole engine.
    let mut clients: Vec<Client> = (0..4).map(|_| engine.client()).collect();
    let start = Instant::now();
    let mut ok = 0;
    let mut limited = Vec::new();
    for i in 0..30 {
        let r = clients[i % 4].get(&path, Some(KEY));
        match r.status {
            200 => ok += 1,
            429 => limited.push(r),
            s => panic!("unexpected {s}: {}", r.text()),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let allowed = 5.0 + 5.0 * elapsed;
    assert!(
        f64::from(ok) <= allowed + 1.0,
        "{ok} quotes served in {elapsed:.2} s at 5/s with a burst of 5"
    );
    assert!(ok >= 5, "only {ok} served; the burst is 5");
    let first = limited.first().expect("none refused");
    let retry: u64 = first
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    first.assert_problem(429);
    // Another customer is not limited by demo's rate.
    for _ in 0..20 {
        assert_eq!(clients[0].get(&path, Some(BOB_KEY)).status, 200);
    }
    // After Retry-After demo is served again.
    std::thread::sleep(Duration::from_secs(retry));
    assert_eq!(clients[1].get(&path, Some(KEY)).status, 200);
    assert!(engine.metric("bookbroker_rate_limited_total") >= limited.len() as f64);
}

#[test]
fn a_panic_on_a_core_aborts_the_process_and_a_restart_serves() {
    let sim = Sim::start("three_protocols.toml");
    let data = tempfile::tempdir().expect("tempdir");
    let opts = EngineOptions {
        data_dir: Some(data.path().to_path_buf()),
        env: vec![("BOOKBROKER_FAILPOINT".into(), "panic-on-quote".into())],
        ..EngineOptions::default()
    };
    let mut engine = Engine::start_opts(&sim.config, 2, &opts);
    let mut c = engine.client();
    assert!(
        c.request(
            "GET",
            "/v1/quotes?title=__panic__",
            &[("Authorization", &format!("Bearer {KEY}"))],
            b""
        )
        .is_err(),
        "the panicking request was answered"
    );
    let status = engine
        .wait_exit(Duration::from_secs(10))
        .expect("the engine kept running after a core panicked");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    let log = engine.log_plain();
    assert!(log.contains("failpoint panic-on-quote"), "{log}");
    assert!(log.contains("a panic while serving: aborting"), "{log}");

    // The supervisor's restart, on the same address and data: every core serves.
    let again = Engine::start_at(&sim.config, 2, data.path(), engine.addr);
    for _ in 0..8 {
        let r = again.get("/v1/quotes?title=the%20hobbit");
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[test]
fn more_cores_than_cpus_is_said_at_start() {
    let sim = Sim::start("three_protocols.toml");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let engine = Engine::start(&sim.config, cpus + 1);
    let log = engine.log_plain();
    assert!(
        log.contains("some executors share a CPU"),
        "no warning with {} executors on {cpus} CPUs:\n{log}",
        cpus + 1
    );
    assert_eq!(engine.get("/v1/quotes?title=the%20hobbit").status, 200);
}
