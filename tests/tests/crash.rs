//! The crash test (issue 3 item 7): under a steady stream of purchases with distinct
//! keys, `kill -9` the engine at random moments, restart it at once on the same address
//! and data directory (sometimes with another `--cores`), as a service manager would, and
//! let the clients retry every key until it has a final answer. Then every key has exactly
//! one outcome, nobody is charged twice or for a book they did not get, every hold is
//! captured or voided, and nearly every ordinary buy is purchased.
//!
//! Two runs: with quick, well-behaved partners, and with partners that stall (slow first
//! attempts answered "in progress", payment calls and cancels slower than the engine's
//! timeouts), so kills land while calls of unknown outcome are being repeated.
//!
//! Quick mode (the default): 20 kills (10 with stalling partners).
//! `BOOKBROKER_CRASH_ROUNDS=N` runs N kills (the long mode); `BOOKBROKER_CRASH_SEED=S`
//! repeats the random moments of an earlier run (each run prints its seed).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bookbroker_tests::{
    authorizations, is_final, purchase_body, reconcile, AuthRecord, Client, Engine, Rng, Sim, KEY,
};
use serde_json::Value;

/// Kills in quick mode.
const QUICK_ROUNDS: usize = 20;

/// Kills in quick mode with stalling partners (each kill costs seconds of stalls).
const QUICK_ROUNDS_STALLED: usize = 10;

/// Client threads sending purchases.
const CLIENTS: usize = 4;

/// Client threads with stalling partners: each key takes seconds, so more of them keep
/// the stream steady.
const CLIENTS_STALLED: usize = 8;

/// The least share of ordinary buys ([`Kind::Buy`]) that must end `purchased`.
///
/// Nothing in the scenario makes an ordinary buy fail (every seller has plenty of stock,
/// the card is good): only a kill can, and then only the one key each client has in
/// flight. The engine resumes those: every buy was purchased in each of fourteen quick
/// runs (1145 to 1851 buys per run) and in a run of 60 kills (4048 buys). An engine that
/// compensated every purchase a kill interrupts instead, which the test's other checks
/// allow, would lose at most `CLIENTS` buys per kill: 80 of about 1500 here, some 5%.
/// 90% passes both with room for a slower machine, and fails an engine that fails
/// purchases for no reason.
const MIN_PURCHASED_SHARE: f64 = 0.9;

/// What a key's purchase is meant to meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A normal purchase that should succeed.
    Buy,
    /// A card that is declined.
    Decline,
    /// A card that authorizes but can never be captured (order cancelled, hold voided).
    CaptureFail,
    /// A limit below every offer.
    NoOffer,
}

/// One purchase a client sends, under its own idempotency key.
#[derive(Debug, Clone)]
struct Spec {
    key: String,
    body: String,
    max_price: i64,
    kind: Kind,
}

impl Spec {
    /// The `index`-th purchase of run `run`. Every `max_price` is distinct, so the
    /// provider's authorization of `max_price` tells which key it belongs to even when the
    /// engine's derived idempotency keys are opaque.
    fn new(index: usize, run: u64, isbns: &[String]) -> Spec {
        let kind = match index % 20 {
            0 => Kind::Decline,
            1 => Kind::CaptureFail,
            2 => Kind::NoOffer,
            _ => Kind::Buy,
        };
        let max_price = match kind {
            // Every offer of the crash scenario costs at least 20.00.
            Kind::NoOffer => 100 + (index / 20) as i64,
            _ => 100_000 + index as i64,
        };
        let token = match kind {
            Kind::Decline => format!("tok_decline_{index}"),
            Kind::CaptureFail => format!("tok_capture_fail_{index}"),
            Kind::Buy | Kind::NoOffer => format!("tok_ok_{index}"),
        };
        let isbn = &isbns[(index * 7) % isbns.len()];
        Spec {
            key: format!("crash-{run:08x}-{index:06}"),
            body: purchase_body(isbn, max_price, "USD", &token, "ship_home"),
            max_price,
            kind,
        }
    }
}

/// A key's final answer.
#[derive(Debug, Clone)]
struct Done {
    spec: Spec,
    status: u16,
    body: Vec<u8>,
    attempts: u32,
}

impl Done {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// What the main thread and the clients share.
struct Shared {
    /// Where the engine listens now (the same address across restarts); `None` while it
    /// is down.
    addr: RwLock<Option<SocketAddr>>,
    /// Set when no new key should be started.
    stop: AtomicBool,
    next: AtomicUsize,
    done: Mutex<Vec<Done>>,
    /// Keys that never got a final answer, with the last thing seen.
    unfinished: Mutex<Vec<(Spec, String)>>,
    /// When clients give up on a key (keeps the test bounded whatever happens).
    give_up: Instant,
    run: u64,
    isbns: Vec<String>,
}

/// Sends one key until its answer is final (anything but 202, 409, 503 or a connection
/// error), across engine restarts.
fn drive(
    shared: &Shared,
    spec: &Spec,
    conn: &mut Option<(SocketAddr, Client)>,
) -> Result<Done, String> {
    let mut attempts = 0;
    let mut last = String::from("never sent");
    loop {
        if Instant::now() > shared.give_up {
            return Err(last);
        }
        let Some(addr) = *shared.addr.read().unwrap() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        if conn.as_ref().map(|(a, _)| *a) != Some(addr) {
            *conn = Client::try_connect(addr).ok().map(|c| (addr, c));
        }
        let Some((_, client)) = conn.as_mut() else {
            last = format!("cannot connect to {addr}");
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        attempts += 1;
        match client.post_purchase(KEY, Some(&spec.key), spec.body.as_bytes(), &[]) {
            Ok(r) if is_final(r.status) => {
                return Ok(Done {
                    spec: spec.clone(),
                    status: r.status,
                    body: r.body,
                    attempts,
                })
            }
            Ok(r) => {
                last = format!("{} {}", r.status, r.text());
                if r.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    *conn = None;
                }
                let pause = if r.status == 202 { 50 } else { 20 };
                std::thread::sleep(Duration::from_millis(pause));
            }
            Err(e) => {
                last = e.to_string();
                *conn = None;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A client: new keys one after another until told to stop; each to its final answer.
fn client_loop(shared: &Shared) {
    let mut conn = None;
    while !shared.stop.load(Ordering::SeqCst) {
        let index = shared.next.fetch_add(1, Ordering::SeqCst);
        let spec = Spec::new(index, shared.run, &shared.isbns);
        match drive(shared, &spec, &mut conn) {
            Ok(done) => shared.done.lock().unwrap().push(done),
            Err(last) => shared.unfinished.lock().unwrap().push((spec, last)),
        }
    }
}

/// The engine's log for failure messages: every panic message, then the last lines
/// (backtrace frames left out).
fn log_tail(engine: &Engine) -> String {
    let log = engine.log_text();
    let lines: Vec<&str> = log.lines().collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if l.contains("panicked at") {
            out.extend(lines.iter().skip(i).take(2));
        }
    }
    let plain: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| !l.starts_with(' '))
        .collect();
    out.push("...");
    out.extend(&plain[plain.len().saturating_sub(30)..]);
    out.join("\n")
}

/// Which key an authorization belongs to: the client key inside the engine's derived
/// idempotency key if it is there in clear, else the distinct `max_price` it holds.
fn key_of(auth: &AuthRecord, run: u64, by_price: &BTreeMap<i64, String>) -> Option<String> {
    let prefix = format!("crash-{run:08x}-");
    if let Some(at) = auth.idempotency_key.find(&prefix) {
        let rest = &auth.idempotency_key[at + prefix.len()..];
        if rest.len() >= 6 && rest.as_bytes()[..6].iter().all(u8::is_ascii_digit) {
            return Some(format!("{prefix}{}", &rest[..6]));
        }
    }
    by_price.get(&auth.amount).cloned()
}

#[test]
fn kill_9_at_random_moments_never_charges_twice_or_loses_a_purchase() {
    crash_test("purchases_crash.toml", QUICK_ROUNDS, CLIENTS, 50);
}

#[test]
fn kill_9_while_partners_stall_never_charges_twice_or_loses_a_purchase() {
    crash_test(
        "purchases_crash_stalled.toml",
        QUICK_ROUNDS_STALLED,
        CLIENTS_STALLED,
        30,
    );
}

/// The crash test on `scenario`, with `quick_rounds` kills unless
/// `BOOKBROKER_CRASH_ROUNDS` says otherwise, `clients` client threads, and at least
/// `min_keys` keys finished (a steady stream, not a trickle; the last engine serves
/// until there are that many, up to 30 s).
fn crash_test(scenario: &str, quick_rounds: usize, clients: usize, min_keys: usize) {
    let started = Instant::now();
    let rounds = std::env::var("BOOKBROKER_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(quick_rounds);
    let (mut rng, seed) = Rng::from_env_or_clock("BOOKBROKER_CRASH_SEED");
    eprintln!("crash test on {scenario}: {rounds} kills, BOOKBROKER_CRASH_SEED={seed}");

    let sim = Sim::start(scenario);
    // A short synchronous wait, so a purchase slowed by a restart answers 202 (and its
    // client retries) well before the client's read timeout.
    let config = sim.config_with(|c| format!("{c}\n[purchases]\nwait_ms = 3000\n"));
    let data = tempfile::tempdir().unwrap();
    let mut cores = 1;
    let mut engine = Engine::start_with(&config, cores, data.path());
    // Every restart is on this address: the clients' keep-alive connections leave the
    // killed engine's side of them in TIME_WAIT there, which must not stop the restart.
    let addr = engine.addr;

    let give_up_after = Duration::from_secs(90 + 4 * rounds as u64);
    let shared = Arc::new(Shared {
        addr: RwLock::new(Some(engine.addr)),
        stop: AtomicBool::new(false),
        next: AtomicUsize::new(0),
        done: Mutex::new(Vec::new()),
        unfinished: Mutex::new(Vec::new()),
        give_up: Instant::now() + give_up_after,
        run: seed & 0xFFFF_FFFF,
        isbns: sim.isbns.clone(),
    });
    let clients: Vec<_> = (0..clients)
        .map(|_| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || client_loop(&shared))
        })
        .collect();

    let mut core_counts = Vec::new();
    for round in 0..rounds {
        std::thread::sleep(Duration::from_millis(rng.range(100, 1_200)));
        assert!(
            engine.is_running(),
            "the engine died on its own before kill {round}:\n{}",
            log_tail(&engine)
        );
        *shared.addr.write().unwrap() = None;
        engine.kill9();
        // Both core counts for sure, then at random.
        cores = match round {
            0 => 2,
            1 => 1,
            _ => rng.range(1, 3) as usize,
        };
        core_counts.push(cores);
        engine = Engine::start_at(&config, cores, data.path(), addr);
        *shared.addr.write().unwrap() = Some(engine.addr);
    }
    // Steady traffic on the last engine until `min_keys` keys are final (at least
    // 500 ms, at most 30 s: how many keys the kills left final depends on how fast this
    // machine is, and a slow shared CI box must not fail for it), then no new keys;
    // every key already started is retried until it is final.
    let steady_until = Instant::now() + Duration::from_secs(30);
    std::thread::sleep(Duration::from_millis(500));
    while shared.done.lock().unwrap().len() < min_keys && Instant::now() < steady_until {
        assert!(
            engine.is_running(),
            "the engine died on its own during the last steady traffic:\n{}",
            log_tail(&engine)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    shared.stop.store(true, Ordering::SeqCst);
    // Fail fast (rather than at the clients' give-up time) if the engine dies on its own.
    while !clients.iter().all(|c| c.is_finished()) {
        assert!(
            engine.is_running(),
            "the engine died on its own while clients finished their keys:\n{}",
            log_tail(&engine)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in clients {
        c.join().expect("client thread");
    }
    let unfinished = shared.unfinished.lock().unwrap().clone();
    assert!(
        unfinished.is_empty(),
        "{} keys never got a final answer within {give_up_after:?}, e.g. {:?}\nengine log:\n{}",
        unfinished.len(),
        unfinished.first(),
        log_tail(&engine)
    );
    let done = shared.done.lock().unwrap().clone();
    let retried = done.iter().filter(|d| d.attempts > 1).count();
    eprintln!(
        "{} keys final after {rounds} kills (cores {core_counts:?}); {retried} needed more than one attempt; {:?} so far",
        done.len(),
        started.elapsed()
    );
    assert!(
        done.len() >= min_keys,
        "a steady stream: only {} purchases",
        done.len()
    );

    // Once more, with no traffic: every answer survives a kill -9 as it was given.
    *shared.addr.write().unwrap() = None;
    engine.kill9();
    engine = Engine::start_at(&config, 3 - cores, data.path(), addr);
    let mut client = engine.client();
    let mut replay_problems = Vec::new();
    for d in &done {
        let r = match client.post_purchase(KEY, Some(&d.spec.key), d.spec.body.as_bytes(), &[]) {
            Ok(r) => r,
            Err(_) => {
                client = engine.client();
                client
                    .post_purchase(KEY, Some(&d.spec.key), d.spec.body.as_bytes(), &[])
                    .expect("replay")
            }
        };
        if (r.status, &r.body) != (d.status, &d.body) {
            replay_problems.push(format!(
                "{}: first {} {}, replay {} {}",
                d.spec.key,
                d.status,
                d.text(),
                r.status,
                r.text()
            ));
        }
    }
    assert!(
        replay_problems.is_empty(),
        "{} keys answer differently on replay: {:#?}",
        replay_problems.len(),
        &replay_problems[..replay_problems.len().min(10)]
    );

    // Background compensation may still be finishing: wait until every hold is settled.
    let settle_until = Instant::now() + Duration::from_secs(20);
    let mut ledger = sim.ledger();
    while Instant::now() < settle_until
        && authorizations(&ledger)
            .values()
            .any(|a| a.captures.is_empty() && !a.voided)
    {
        std::thread::sleep(Duration::from_millis(200));
        ledger = sim.ledger();
    }
    let orders = sim.orders();
    let answers: Vec<Value> = done.iter().map(Done::json).collect();
    let mut problems = reconcile(&answers, &ledger, &orders);

    // Key by key.
    let by_price: BTreeMap<i64, String> = done
        .iter()
        .map(|d| (d.spec.max_price, d.spec.key.clone()))
        .collect();
    let mut auths_of: BTreeMap<String, Vec<AuthRecord>> = BTreeMap::new();
    for a in authorizations(&ledger).into_values() {
        match key_of(&a, shared.run, &by_price) {
            Some(key) => auths_of.entry(key).or_default().push(a),
            None => problems.push(format!("authorization belongs to no key: {a:?}")),
        }
    }
    let standing: BTreeMap<(String, String), i64> = orders
        .iter()
        .filter(|o| o.is_placed())
        .map(|o| {
            assert_eq!(o.order.currency, "USD", "the crash scenario sells in USD");
            (
                (o.seller.clone(), o.order.order_id.clone()),
                o.order.total_minor,
            )
        })
        .collect();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for d in &done {
        let key = &d.spec.key;
        let v = d.json();
        let status = v["status"].as_str().unwrap_or("?").to_string();
        *outcomes
            .entry(format!("{} {status}", d.status))
            .or_default() += 1;
        let auths = auths_of.get(key).map(Vec::as_slice).unwrap_or_default();
        if auths.len() > 1 {
            problems.push(format!("{key}: {} authorizations: {auths:?}", auths.len()));
        }
        let captures: Vec<_> = auths.iter().flat_map(|a| a.captures.iter()).collect();
        if captures.len() > 1 {
            problems.push(format!(
                "{key}: captured {} times: {captures:?}",
                captures.len()
            ));
        }
        for c in &captures {
            if c.amount > d.spec.max_price {
                problems.push(format!(
                    "{key}: captured {} over its max_price {}",
                    c.amount, d.spec.max_price
                ));
            }
        }
        let expected = match (d.spec.kind, d.status, status.as_str()) {
            (Kind::Buy, 201, "purchased") => true,
            // Any purchase may fail (e.g. recovery compensates instead of resuming), as
            // long as it says why; the books are checked below either way.
            (_, 200, "failed") => v["reason"].as_str().is_some_and(|r| !r.is_empty()),
            (Kind::Decline, 402, "payment_declined") => true,
            (Kind::NoOffer, 200, "no_offer_within_limit") => true,
            _ => false,
        };
        if !expected {
            problems.push(format!(
                "{key} ({:?}): unexpected answer {} {}",
                d.spec.kind,
                d.status,
                d.text()
            ));
        }
        if d.status == 201 {
            let total = v["total"].as_i64().unwrap_or(-1);
            if captures.len() != 1 || captures[0].amount != total {
                problems.push(format!(
                    "{key}: purchased for {total} but captured {captures:?}"
                ));
            }
            let order = (
                v["seller"].as_str().unwrap_or_default().to_string(),
                v["seller_order_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            match standing.get(&order) {
                Some(t) if *t == total => {}
                other => problems.push(format!(
                    "{key}: purchased {order:?} for {total}, the seller has {other:?}"
                )),
            }
        } else if !captures.is_empty() {
            problems.push(format!(
                "{key}: answered {} {status} but captured {captures:?}",
                d.status
            ));
        }
    }
    eprintln!("outcomes: {outcomes:?}; {:?} in all", started.elapsed());
    assert!(
        problems.is_empty(),
        "{} problems after {rounds} kills (BOOKBROKER_CRASH_SEED={seed}):\n{:#?}\nengine log:\n{}",
        problems.len(),
        &problems[..problems.len().min(30)],
        log_tail(&engine)
    );

    // "failed" is an acceptable answer to any key (see above), so the books alone would
    // pass an engine that fails every purchase. Ordinary buys must mostly succeed.
    let buys: Vec<&Done> = done.iter().filter(|d| d.spec.kind == Kind::Buy).collect();
    let purchased = buys
        .iter()
        .filter(|d| d.status == 201 && d.json()["status"] == "purchased")
        .count();
    let share = purchased as f64 / buys.len().max(1) as f64;
    eprintln!(
        "purchased: {purchased} of {} ordinary buys ({:.1}%)",
        buys.len(),
        share * 100.0
    );
    assert!(
        share >= MIN_PURCHASED_SHARE,
        "only {purchased} of {} ordinary buys were purchased ({:.1}%, want at least {:.0}%; \
         BOOKBROKER_CRASH_SEED={seed}); outcomes {outcomes:?}",
        buys.len(),
        share * 100.0,
        MIN_PURCHASED_SHARE * 100.0
    );
}
