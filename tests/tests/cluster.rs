//! Issue 13: three engine nodes behind HAProxy (Debian's package, installed by
//! `scripts/ensure-deps.sh` when missing), configured by `bookbroker haproxy-config`.
//!
//! - `three_nodes_behind_haproxy_lose_nothing_when_one_is_killed`: purchases and quotes
//!   through HAProxy; HAProxy routes every key to the node the engine's partition
//!   function names (checked against an independent CRC-32); a node asked for another's
//!   purchase answers 421; then `kill -9` of one node under a stream of purchases from
//!   several clients, each retrying its key until the answer is final. While it is
//!   down, quotes all succeed, purchases of its partition get 503 + `Retry-After` at
//!   once, the others complete. It restarts on its data directory, every key reaches its
//!   final answer, and the books balance (payment ledger against every seller's orders).
//! - `failover_drill_moves_a_dead_partition_to_another_address`: the dead node's data
//!   directory is started as the same partition on another address, HAProxy is
//!   repointed with `set server … addr` on its runtime API, and the purchases that were
//!   running on the dead node finish there.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bookbroker_tests::cluster::{partition, partition_of_id, Cluster, Haproxy};
use bookbroker_tests::{
    authorizations, free_port, is_final, purchase_body, reconcile_strict, Client, Engine,
    EngineOptions, Resp, Sim, KEY,
};
use serde_json::Value;

/// Nodes in the cluster.
const NODES: usize = 3;

/// The node that is killed.
const VICTIM: usize = 1;

/// Client threads sending purchases through HAProxy.
const CLIENTS: usize = 6;

/// Every node serves on one core: three nodes share this machine's cores.
const CORES: usize = 1;

/// The synchronous wait of every node: short, so a purchase slowed by the kill answers
/// 202 well before a client's read timeout.
const NODE_EXTRA: &str = "[purchases]\nwait_ms = 3000\n";

/// Index bases of the families of keys (see [`Spec`]). A limit below every offer is
/// `100 + index / 20` and must stay under 20.00: no family reaches 36 000.
const STREAM: usize = 0;
const STRAY: usize = 20_000;
const DOWN: usize = 24_000;
const ALIVE: usize = 28_000;

/// What a key's purchase is meant to meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Buy,
    Decline,
    CaptureFail,
    NoOffer,
}

/// One purchase under its own idempotency key; every `max_price` is distinct, so an
/// authorization tells which key it belongs to. Each family of keys in a test starts its
/// indexes at its own base ([`STREAM`], [`STRAY`], …) to keep them so.
#[derive(Debug, Clone)]
struct Spec {
    key: String,
    body: String,
    max_price: i64,
    kind: Kind,
}

impl Spec {
    fn new(prefix: &str, index: usize, isbns: &[String]) -> Spec {
        let kind = match index % 20 {
            0 => Kind::Decline,
            1 => Kind::CaptureFail,
            2 => Kind::NoOffer,
            _ => Kind::Buy,
        };
        let max_price = match kind {
            // Every offer of the scenario costs at least 20.00.
            Kind::NoOffer => 100 + (index / 20) as i64,
            _ => 100_000 + index as i64,
        };
        let token = match kind {
            Kind::Decline => format!("tok_decline_{index}"),
            Kind::CaptureFail => format!("tok_capture_fail_{index}"),
            Kind::Buy | Kind::NoOffer => format!("tok_ok_{index}"),
        };
        Spec {
            key: format!("{prefix}-{index:06}"),
            body: purchase_body(
                &isbns[(index * 7) % isbns.len()],
                max_price,
                "USD",
                &token,
                "ship_home",
            ),
            max_price,
            kind,
        }
    }

    /// The first spec at index `*from` or later whose key is in partition `part` (or
    /// not in it, with `inside` false) and whose kind `want` accepts; `*from` moves past
    /// it.
    fn in_partition(
        prefix: &str,
        from: &mut usize,
        part: usize,
        inside: bool,
        want: impl Fn(Kind) -> bool,
        isbns: &[String],
    ) -> Spec {
        let (index, spec) = (*from..)
            .map(|i| (i, Spec::new(prefix, i, isbns)))
            .find(|(_, s)| (partition(&s.key, NODES) == part) == inside && want(s.kind))
            .expect("some key");
        *from = index + 1;
        spec
    }
}

/// A key's final answer.
#[derive(Debug, Clone)]
struct Done {
    spec: Spec,
    status: u16,
    body: Vec<u8>,
}

impl Done {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends `spec` through the balancer at `addr` until its answer is final, as a client
/// does: a 503 waits for its `Retry-After` (at most a second), a 202 or 409 a moment, a
/// broken connection (the node died under it: 502) is retried. `on_answer` sees every
/// answer. `None` after `give_up`.
fn drive(
    addr: SocketAddr,
    spec: &Spec,
    conn: &mut Option<Client>,
    give_up: Instant,
    mut on_answer: impl FnMut(&Resp),
) -> Option<Done> {
    while Instant::now() < give_up {
        if conn.is_none() {
            *conn = Client::try_connect(addr).ok();
        }
        let Some(client) = conn.as_mut() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        match client.post_purchase(KEY, Some(&spec.key), spec.body.as_bytes(), &[]) {
            Ok(r) => {
                on_answer(&r);
                if is_final(r.status) && r.status != 502 && r.status != 504 {
                    return Some(Done {
                        spec: spec.clone(),
                        status: r.status,
                        body: r.body,
                    });
                }
                if r.header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("close"))
                {
                    *conn = None;
                }
                let pause = match r.status {
                    503 => r
                        .header("retry-after")
                        .and_then(|v| v.parse::<u64>().ok())
                        .map_or(200, |s| (s * 1000).min(1000)),
                    _ => 50,
                };
                std::thread::sleep(Duration::from_millis(pause));
            }
            Err(_) => {
                *conn = None;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    None
}

/// What the client threads share.
struct Stream {
    balancer: SocketAddr,
    stop: AtomicBool,
    next: AtomicUsize,
    done: Mutex<Vec<Done>>,
    unfinished: Mutex<Vec<Spec>>,
    /// Answers that break the routing rules: a 421 through the balancer, or a
    /// partition-unavailable 503 for a key whose node was up.
    misrouted: Mutex<Vec<String>>,
    give_up: Instant,
    prefix: String,
    isbns: Vec<String>,
}

fn client_loop(s: &Stream) {
    let mut conn = None;
    while !s.stop.load(Ordering::SeqCst) {
        let index = s.next.fetch_add(1, Ordering::SeqCst);
        let spec = Spec::new(&s.prefix, index, &s.isbns);
        let part = partition(&spec.key, NODES);
        let done = drive(s.balancer, &spec, &mut conn, s.give_up, |r| {
            let text = r.text();
            if r.status == 421
                || (r.status == 503 && text.contains("partition-unavailable") && part != VICTIM)
            {
                s.misrouted.lock().unwrap().push(format!(
                    "{} (partition {part}): {} {text}",
                    spec.key, r.status
                ));
            }
        });
        match done {
            Some(d) => s.done.lock().unwrap().push(d),
            None => s.unfinished.lock().unwrap().push(spec),
        }
    }
}

/// Sends `request` until the answer is not a 502, and returns it with the time the last
/// request took. In the first moments after a `kill -9` the dead node's listener still
/// completes handshakes (the kernel tears down its io_uring some milliseconds after the
/// process), so HAProxy may see a connection close without an answer: a 502, which the
/// client retries with the same key. That must be over within a second of `killed`.
fn until_not_502(killed: Instant, request: impl Fn() -> Resp) -> (Resp, Duration) {
    loop {
        let t = Instant::now();
        let r = request();
        let took = t.elapsed();
        if r.status != 502 {
            return (r, took);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "502 a second after the kill: {}",
            r.text()
        );
        assert!(r.header("retry-after").is_some(), "502 without Retry-After");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A counter of a node's `/metrics`, summed over its label sets that contain `labels`.
fn metric(engine: &Engine, name: &str, labels: &str) -> u64 {
    let text = engine.client().get("/metrics", None).text();
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The bank check over `done`: the strict reconciliation (ledger against every
/// seller's orders, amounts included), then key by key: at most one authorization and
/// one capture, none above `max_price`, a capture exactly for every `purchased` answer
/// and none for any other, and every purchase's id naming its key's partition.
fn bank_check(sim: &Sim, done: &[Done]) {
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
    let by_id: BTreeMap<String, i64> = done
        .iter()
        .filter_map(|d| Some((d.json()["id"].as_str()?.to_string(), d.spec.max_price)))
        .collect();
    let mut problems = reconcile_strict(&answers, &ledger, &orders, &sim.fx(), |a| {
        a["id"].as_str().and_then(|id| by_id.get(id).copied())
    });
    let by_price: BTreeMap<i64, &Done> = done.iter().map(|d| (d.spec.max_price, d)).collect();
    let mut auths_of: BTreeMap<String, usize> = BTreeMap::new();
    let mut captures_of: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for a in authorizations(&ledger).into_values() {
        match by_price.get(&a.amount) {
            Some(d) => {
                *auths_of.entry(d.spec.key.clone()).or_default() += 1;
                captures_of
                    .entry(d.spec.key.clone())
                    .or_default()
                    .extend(a.captures.iter().map(|c| c.amount));
            }
            None => problems.push(format!("authorization of no key: {a:?}")),
        }
    }
    for d in done {
        let key = &d.spec.key;
        let v = d.json();
        if auths_of.get(key).copied().unwrap_or(0) > 1 {
            problems.push(format!("{key}: {} authorizations", auths_of[key]));
        }
        let captures = captures_of.get(key).cloned().unwrap_or_default();
        if captures.iter().any(|c| *c > d.spec.max_price) {
            problems.push(format!(
                "{key}: captured {captures:?} over {}",
                d.spec.max_price
            ));
        }
        if d.status == 201 {
            if captures != vec![v["total"].as_i64().unwrap_or(-1)] {
                problems.push(format!("{key}: purchased {v} but captured {captures:?}"));
            }
        } else if !captures.is_empty() {
            problems.push(format!(
                "{key}: answered {} {v} but captured {captures:?}",
                d.status
            ));
        }
        match v["id"].as_str() {
            Some(id) if partition_of_id(id) == Some(partition(key, NODES)) => {}
            Some(id) => problems.push(format!(
                "{key} (partition {}) got id {id}: run by the wrong node",
                partition(key, NODES)
            )),
            None if d.status == 402 || d.status == 200 || d.status == 201 => {
                problems.push(format!("{key}: answer without an id: {v}"))
            }
            None => problems.push(format!("{key}: not a purchase answer: {} {v}", d.status)),
        }
        let expected = match (d.spec.kind, d.status, v["status"].as_str().unwrap_or("?")) {
            (Kind::Buy, 201, "purchased") => true,
            (_, 200, "failed") => v["reason"].as_str().is_some_and(|r| !r.is_empty()),
            (Kind::Decline, 402, "payment_declined") => true,
            (Kind::NoOffer, 200, "no_offer_within_limit") => true,
            _ => false,
        };
        if !expected {
            problems.push(format!(
                "{key} ({:?}): unexpected {} {v}",
                d.spec.kind, d.status
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems in the books:\n{:#?}",
        problems.len(),
        &problems[..problems.len().min(30)]
    );
}

#[test]
fn three_nodes_behind_haproxy_lose_nothing_when_one_is_killed() {
    let started = Instant::now();
    let sim = Sim::start("cluster.toml");
    let mut cluster = Cluster::start(&sim, NODES, CORES, NODE_EXTRA);
    let haproxy = Haproxy::start(cluster.config(0));
    haproxy.wait_all_up(Duration::from_secs(10));
    let balancer = haproxy.addr;
    let isbn = sim.isbns[0].clone();
    let prefix = format!(
        "cl-{:08x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
            & 0xFFFF_FFFF
    );
    let mut done: Vec<Done> = Vec::new();

    // 1. HAProxy's own routes answer without asking any node.
    let mut c = haproxy.client();
    assert_eq!(c.get("/healthz", None).status, 200);
    assert_eq!(c.get("/readyz", None).status, 200);
    let m = c.get("/metrics", None);
    assert!(
        m.status == 200 && m.text().contains("haproxy_"),
        "{}",
        m.text()
    );

    // 1. Quotes through HAProxy, spread over every node.
    let quote_path = format!("/v1/quotes?isbn={isbn}&currency=USD");
    for _ in 0..30 {
        let r = haproxy.client().get(&quote_path, Some(KEY));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.json()["offers"].as_array().is_some_and(|o| !o.is_empty()));
    }
    for i in 0..NODES {
        let served = metric(
            cluster.node(i),
            "bookbroker_http_requests_total",
            "route=\"quotes\",code=\"200\"",
        );
        assert!(served > 0, "node {i} served no quote of 30 (leastconn)");
    }

    // 1. Purchases through HAProxy: every key lands on the node its CRC-32 names (the id
    // says which node ran it; a node of another partition would have answered 421).
    // Keys with commas, semicolons and quotes check that HAProxy hashes the header whole.
    let odd = [
        "a,b",
        "x;y=z",
        "\"quoted\"",
        "~!@#$%^&*()_+{}|:<>?",
        "with,many,commas,in,it",
    ];
    let mut routed = BTreeMap::new();
    for (n, key) in odd
        .iter()
        .map(|k| format!("{prefix}-{k}"))
        .chain((0..40).map(|i| format!("{prefix}-route-{i}")))
        .enumerate()
    {
        let spec = Spec {
            key: key.clone(),
            body: purchase_body(&isbn, 50_000 + n as i64, "USD", "tok_ok_1", "ship_home"),
            max_price: 50_000 + n as i64,
            kind: Kind::Buy,
        };
        let r = haproxy
            .client()
            .post_purchase(KEY, Some(&key), spec.body.as_bytes(), &[])
            .unwrap();
        assert_eq!(r.status, 201, "{key}: {}", r.text());
        let id = r.json()["id"].as_str().unwrap().to_string();
        assert_eq!(
            partition_of_id(&id),
            Some(partition(&key, NODES)),
            "{key}: HAProxy sent it to another node than crc32 mod {NODES} names ({id})"
        );
        *routed.entry(partition(&key, NODES)).or_insert(0) += 1;
        // The id routes too: GET through HAProxy shows what the POST answered.
        let g = haproxy
            .client()
            .get(&format!("/v1/purchases/{id}"), Some(KEY));
        assert_eq!((g.status, g.json()), (200, r.json()), "GET {id}");
        done.push(Done {
            spec,
            status: r.status,
            body: r.body,
        });
    }
    assert_eq!(routed.len(), NODES, "every partition got keys: {routed:?}");
    // Two Idempotency-Key headers: the engine reads the first, and HAProxy hashes the
    // first (`req.fhdr(…,1)`), so the request still lands on the node that owns it.
    let first = format!("{prefix}-twice");
    let second = (0..)
        .map(|i| format!("{prefix}-other-{i}"))
        .find(|k| partition(k, NODES) != partition(&first, NODES))
        .unwrap();
    let spec = Spec {
        key: first.clone(),
        body: purchase_body(&isbn, 49_999, "USD", "tok_ok_1", "ship_home"),
        max_price: 49_999,
        kind: Kind::Buy,
    };
    let r = haproxy
        .client()
        .post_purchase(
            KEY,
            Some(&first),
            spec.body.as_bytes(),
            &[("Idempotency-Key", &second)],
        )
        .unwrap();
    assert_eq!(r.status, 201, "two keys: {}", r.text());
    assert_eq!(
        partition_of_id(r.json()["id"].as_str().unwrap()),
        Some(partition(&first, NODES))
    );
    done.push(Done {
        spec,
        status: r.status,
        body: r.body,
    });
    eprintln!("routing: keys per partition {routed:?}, each on the node its CRC-32 names");

    // 1. A node asked for another partition's purchase answers 421, naming the owner, and
    // starts nothing: the owner then runs it as the only one.
    let stray = Spec::in_partition(
        &format!("{prefix}-stray"),
        &mut { STRAY },
        2,
        true,
        |k| k == Kind::Buy,
        &sim.isbns,
    );
    let r = cluster
        .node(0)
        .client()
        .post_purchase(KEY, Some(&stray.key), stray.body.as_bytes(), &[])
        .unwrap();
    r.assert_problem(421);
    assert_eq!(r.json()["partition"], 2);
    assert_eq!(r.json()["owner"], cluster.addrs[2].to_string());
    let first_id = done[0].json()["id"].as_str().unwrap().to_string();
    let owner_of_first = partition_of_id(&first_id).unwrap();
    let wrong = cluster.node((owner_of_first + 1) % NODES);
    wrong
        .client()
        .get(&format!("/v1/purchases/{first_id}"), Some(KEY))
        .assert_problem(421);
    let stray_done = drive(
        balancer,
        &stray,
        &mut None,
        Instant::now() + Duration::from_secs(20),
        |_| {},
    )
    .expect("stray key final through HAProxy");
    assert_eq!(stray_done.status, 201, "{:?}", stray_done.json());
    done.push(stray_done);

    // 2. A stream of purchases with distinct keys from several clients, through HAProxy.
    let stream = Arc::new(Stream {
        balancer,
        stop: AtomicBool::new(false),
        next: AtomicUsize::new(STREAM),
        done: Mutex::new(Vec::new()),
        unfinished: Mutex::new(Vec::new()),
        misrouted: Mutex::new(Vec::new()),
        give_up: Instant::now() + Duration::from_secs(90),
        prefix: format!("{prefix}-stream"),
        isbns: sim.isbns.clone(),
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let s = Arc::clone(&stream);
            std::thread::spawn(move || client_loop(&s))
        })
        .collect();
    // At least 1.5 s and more than ten keys final before the kill; a slow shared
    // machine gets up to 15 s for them, so the count is not a speed test.
    let streaming = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    while stream.done.lock().unwrap().len() <= 10 && streaming.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before_kill = stream.done.lock().unwrap().len();
    assert!(
        before_kill > 10,
        "a steady stream: {before_kill} keys in {:?}",
        streaming.elapsed()
    );

    // 2. kill -9 of one node in the middle of it.
    cluster.kill9(VICTIM);
    let killed = Instant::now();

    // 3. While it is down: purchases of its partition get 503 + Retry-After at once.
    let mut probes = Vec::new();
    let mut from = DOWN;
    for _ in 0..5 {
        let spec = Spec::in_partition(
            &format!("{prefix}-down"),
            &mut from,
            VICTIM,
            true,
            |_| true,
            &sim.isbns,
        );
        let (r, took) = until_not_502(killed, || {
            haproxy
                .client()
                .post_purchase(KEY, Some(&spec.key), spec.body.as_bytes(), &[])
                .unwrap()
        });
        r.assert_problem(503);
        assert!(
            r.header("retry-after")
                .is_some_and(|v| v.parse::<u32>().is_ok()),
            "503 without Retry-After: {:?}",
            r.headers
        );
        assert!(
            took < Duration::from_millis(500),
            "503 took {took:?}: not at once"
        );
        probes.push(spec);
    }
    // The balancer marks the node down on its first refused connection.
    haproxy.wait_node(VICTIM, "DOWN", Duration::from_secs(3));
    let r = haproxy.client().get("/readyz", None);
    assert_eq!(r.status, 200, "the balancer is ready while some node is up");

    // 3. Quotes through HAProxy all succeed within a few seconds of the kill (here at
    // once: a refused connection is redispatched to another node).
    let mut quotes = 0;
    let mut quote_failures = Vec::new();
    while killed.elapsed() < Duration::from_secs(3) {
        let r = haproxy.client().get(&quote_path, Some(KEY));
        quotes += 1;
        if r.status != 200 {
            quote_failures.push(format!(
                "{:?} after the kill: {} {}",
                killed.elapsed(),
                r.status,
                r.text()
            ));
        }
    }
    assert!(
        quote_failures.is_empty(),
        "{} of {quotes} quotes failed while a node was down: {quote_failures:?}",
        quote_failures.len()
    );

    // 3. The other partitions' purchases complete.
    let mut others_done = 0;
    let mut from = ALIVE;
    for _ in 0..10 {
        let spec = Spec::in_partition(
            &format!("{prefix}-alive"),
            &mut from,
            VICTIM,
            false,
            |_| true,
            &sim.isbns,
        );
        let d = drive(
            balancer,
            &spec,
            &mut None,
            Instant::now() + Duration::from_secs(10),
            |r| assert_ne!(r.status, 503, "{}: {}", spec.key, r.text()),
        )
        .unwrap_or_else(|| panic!("{} not final while node {VICTIM} is down", spec.key));
        others_done += 1;
        done.push(d);
    }
    let down_for = killed.elapsed();
    eprintln!(
        "while node {VICTIM} was down ({down_for:?}): 5 purchases of its partition got 503 + \
         Retry-After at once, {quotes} quotes all succeeded, {others_done} purchases of \
         other partitions completed"
    );

    // 4. The node restarts on its data directory and address; HAProxy sees it again.
    cluster.restart_at(VICTIM, cluster.addrs[VICTIM]);
    haproxy.wait_node(VICTIM, "UP", Duration::from_secs(10));
    eprintln!("node {VICTIM} back after {:?}", killed.elapsed());
    // The probes' clients retry their keys until the answer is final.
    for spec in &probes {
        let d = drive(
            balancer,
            spec,
            &mut None,
            Instant::now() + Duration::from_secs(30),
            |_| {},
        )
        .unwrap_or_else(|| panic!("{} not final after the restart", spec.key));
        done.push(d);
    }
    std::thread::sleep(Duration::from_millis(1000));
    stream.stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().expect("client thread");
    }
    let unfinished = stream.unfinished.lock().unwrap().clone();
    assert!(
        unfinished.is_empty(),
        "{} keys never got a final answer, e.g. {:?}",
        unfinished.len(),
        unfinished.first()
    );
    let misrouted = stream.misrouted.lock().unwrap().clone();
    assert!(misrouted.is_empty(), "misrouted answers: {misrouted:#?}");
    let streamed = stream.done.lock().unwrap().clone();
    let victims = streamed
        .iter()
        .filter(|d| partition(&d.spec.key, NODES) == VICTIM)
        .count();
    eprintln!(
        "stream: {} keys final ({victims} of node {VICTIM}'s partition) from {CLIENTS} clients",
        streamed.len()
    );
    assert!(
        victims > 0,
        "the stream had keys of the killed node's partition"
    );
    done.extend(streamed);

    // Every answer is final and stays so: a replay through HAProxy answers the same.
    let mut client = haproxy.client();
    for d in &done {
        let r = client
            .post_purchase(KEY, Some(&d.spec.key), d.spec.body.as_bytes(), &[])
            .unwrap();
        assert_eq!(
            (r.status, &r.body),
            (d.status, &d.body),
            "{}: replay differs",
            d.spec.key
        );
    }

    // 5. The bank check.
    bank_check(&sim, &done);
    let buys: Vec<&Done> = done.iter().filter(|d| d.spec.kind == Kind::Buy).collect();
    let purchased = buys.iter().filter(|d| d.status == 201).count();
    eprintln!(
        "{} keys in all, {purchased} of {} buys purchased; books balance; {:?}",
        done.len(),
        buys.len(),
        started.elapsed()
    );
    assert!(
        purchased * 10 >= buys.len() * 9,
        "only {purchased} of {} buys purchased",
        buys.len()
    );
}

#[test]
fn failover_drill_moves_a_dead_partition_to_another_address() {
    let sim = Sim::start("cluster.toml");
    let mut cluster = Cluster::start(&sim, NODES, CORES, NODE_EXTRA);
    let haproxy = Haproxy::start(cluster.config(0));
    haproxy.wait_all_up(Duration::from_secs(10));
    let prefix = format!("drill-{}", free_port());

    // Purchases of partition 1 accepted asynchronously, so they are still running...
    let mut specs = Vec::new();
    let mut ids = Vec::new();
    let mut from = 0;
    for _ in 0..12 {
        let spec = Spec::in_partition(&prefix, &mut from, VICTIM, true, |_| true, &sim.isbns);
        let r = haproxy
            .client()
            .post_purchase(
                KEY,
                Some(&spec.key),
                spec.body.as_bytes(),
                &[("Prefer", "respond-async")],
            )
            .unwrap();
        assert_eq!(r.status, 202, "{}", r.text());
        let id = r.json()["id"].as_str().unwrap().to_string();
        assert_eq!(partition_of_id(&id), Some(VICTIM));
        assert_eq!(
            r.header("location"),
            Some(format!("/v1/purchases/{id}").as_str())
        );
        ids.push(id);
        specs.push(spec);
    }
    // ...when their node dies.
    cluster.kill9(VICTIM);
    let old = cluster.addrs[VICTIM];
    let (r, _) = until_not_502(Instant::now(), || {
        haproxy
            .client()
            .get(&format!("/v1/purchases/{}", ids[0]), Some(KEY))
    });
    r.assert_problem(503);
    assert!(r.header("retry-after").is_some());

    // The data directory keeps its partition: started as another node, it refuses.
    let wrong = Engine::try_start_opts(
        cluster.config(2),
        CORES,
        &EngineOptions {
            data_dir: Some(cluster.data[VICTIM].path().to_path_buf()),
            ..EngineOptions::default()
        },
    );
    match wrong {
        Ok(_) => panic!("node {VICTIM}'s data directory started as node 2"),
        Err(why) => assert!(why.contains("holds partition 1 of 3"), "{why}"),
    }

    // The drill: the same partition, its data directory, on another address...
    let new: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    cluster.restart_at(VICTIM, new);
    // ...and HAProxy repointed through its runtime API.
    let answers = haproxy.repoint(VICTIM, new);
    eprintln!("drill: node {VICTIM} moved from {old} to {new}; runtime API answered {answers:?}");
    haproxy.wait_node(VICTIM, "UP", Duration::from_secs(10));
    assert!(
        haproxy
            .command("show servers state")
            .contains(&new.port().to_string()),
        "HAProxy does not show the new address"
    );

    // The purchases resume there and end.
    let mut done = Vec::new();
    for (spec, id) in specs.iter().zip(&ids) {
        let until = Instant::now() + Duration::from_secs(30);
        let r = loop {
            let r = haproxy
                .client()
                .get(&format!("/v1/purchases/{id}"), Some(KEY));
            assert_eq!(r.status, 200, "{id}: {}", r.text());
            if r.json()["status"] != "pending" {
                break r;
            }
            assert!(Instant::now() < until, "{id} still pending after the drill");
            std::thread::sleep(Duration::from_millis(100));
        };
        // The final answer, as a replay of the POST gives it (status and body).
        let replay = haproxy
            .client()
            .post_purchase(KEY, Some(&spec.key), spec.body.as_bytes(), &[])
            .unwrap();
        assert_eq!(replay.json(), r.json(), "{id}: GET and replay differ");
        done.push(Done {
            spec: spec.clone(),
            status: replay.status,
            body: replay.body,
        });
    }
    let recovered = metric(
        cluster.node(VICTIM),
        "bookbroker_purchases_recovered_total",
        "",
    );
    eprintln!(
        "drill: {recovered} purchases resumed on {new}; outcomes {:?}",
        done.iter()
            .map(|d| d.json()["status"].as_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>()
    );
    assert!(
        recovered > 0,
        "no purchase was still running when node {VICTIM} was killed"
    );

    // New purchases of the partition run on the new address.
    for _ in 0..3 {
        let spec = Spec::in_partition(&prefix, &mut from, VICTIM, true, |_| true, &sim.isbns);
        let d = drive(
            haproxy.addr,
            &spec,
            &mut None,
            Instant::now() + Duration::from_secs(20),
            |_| {},
        )
        .expect("final");
        assert_eq!(
            partition_of_id(d.json()["id"].as_str().unwrap()),
            Some(VICTIM)
        );
        done.push(d);
    }
    bank_check(&sim, &done);
}
