//! A `line` seller that goes silent without a reset (it reads, never answers, never
//! closes) and then comes back for new connections: the engine must give up on the
//! silent connections by itself, so that quotes from that seller succeed again on every
//! core, and its open descriptors must not keep growing meanwhile.

use std::time::{Duration, Instant};

use bookbroker_tests::{statuses, Engine, Sim, KEY};

const SELLER: &str = "quiet-line";
/// `silence_ms` of the scenario.
const SILENCE: Duration = Duration::from_millis(2000);

/// The line seller's status in one quote over a fresh connection (so the kernel picks
/// the core anew each time).
fn line_status(engine: &Engine, isbn: &str) -> String {
    let q = engine
        .client()
        .get(&format!("/v1/quotes?isbn={isbn}"), Some(KEY));
    assert_eq!(q.status, 200, "{}", q.text());
    let st = statuses(&q.json());
    assert_eq!(
        st["steady"], "ok",
        "the other seller is not affected: {st:?}"
    );
    st[SELLER].clone()
}

#[test]
fn a_silent_line_seller_is_reconnected_once_it_is_back_and_fds_do_not_grow() {
    let sim = Sim::start("silent_line.toml");
    let engine = Engine::start(&sim.config, 2);
    let isbns = &sim.isbns;

    // Before the silence: served on both cores (the 20th request starts the silence;
    // six quotes send at most twelve with hedges).
    for isbn in isbns.iter().take(6) {
        assert_eq!(line_status(&engine, isbn), "ok");
    }
    let baseline = engine.open_fds();

    // Ask until the silence shows, then through it.
    let until = Instant::now() + Duration::from_secs(30);
    let mut k = 0;
    let silent_since = loop {
        assert!(Instant::now() < until, "the seller never went silent");
        k += 1;
        if line_status(&engine, &isbns[k % isbns.len()]) != "ok" {
            break Instant::now();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The silence began at most one quote (300 ms) before it showed, so it surely lasts
    // until 1.5 s after that; by then the engine has had to give up on connections.
    let mut during = Vec::new();
    while silent_since.elapsed() < SILENCE - Duration::from_millis(500) {
        for isbn in isbns.iter().take(4) {
            let status = line_status(&engine, isbn);
            assert_ne!(
                status, "ok",
                "every connection is silent during the silence"
            );
        }
        during.push(engine.open_fds());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(700));

    // Back: within the breaker's longest cool-downs, every core must reach the seller
    // again. Twenty successes in a row over fresh connections: the kernel spreads fresh
    // connections over both cores, so a core left with a dead connection would show.
    let until = Instant::now() + Duration::from_secs(45);
    let mut streak = 0;
    let mut last = String::new();
    let mut i = 0;
    while streak < 20 {
        assert!(
            Instant::now() < until,
            "{SELLER} did not come back on every core within 45 s of the end of its \
             silence: last status {last:?}, {streak} ok in a row"
        );
        last = line_status(&engine, &isbns[i % isbns.len()]);
        i += 1;
        streak = if last == "ok" { streak + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(50));
    }

    // Descriptors: back near the baseline, and steady under more quotes.
    let after = engine.open_fds();
    for isbn in isbns.iter().cycle().take(40) {
        assert_eq!(line_status(&engine, isbn), "ok");
    }
    let later = engine.open_fds();
    let peak = during.iter().copied().max().unwrap_or(0);
    eprintln!("open fds: {baseline} before, peak {peak} during, {after} after, {later} later");
    assert!(
        after <= baseline + 10 && later <= after + 4,
        "open fds: {baseline} before the silence, up to {peak} during it, {after} after, \
         {later} later"
    );
}
