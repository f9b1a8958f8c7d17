//! Partners that behave as real ones do — slow first attempts answered "in progress",
//! confirmations that lie, payment calls that fail or reset after taking effect, cancels
//! that stall — and the strict bank check after each: what customers were told against
//! what the payment provider and every seller recorded.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bookbroker_protocols::payment::LedgerKind;
use bookbroker_tests::{
    purchase_body, purchase_until_final, reconcile_strict, scenario, Engine, Sim, KEY,
};
use serde_json::Value;

/// Above every offer of the scenario.
const PLENTY: i64 = 100_000;

/// How long one purchase may take to reach its final answer (slow partners take
/// seconds per call, and a call may be repeated several times).
const WAIT: Duration = Duration::from_secs(120);

/// A scenario derived from `partners.toml`, written to a folder the caller keeps.
struct Derived {
    text: String,
    dir: tempfile::TempDir,
}

impl Derived {
    fn new() -> Derived {
        let text = std::fs::read_to_string(scenario("partners.toml")).expect("partners.toml");
        Derived {
            text,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Sets `key = value` in the block that starts at the first line equal to `marker`
    /// (up to the next `[[`), replacing the key's line (commented out or not), or adding
    /// it right after `marker`.
    fn set(mut self, marker: &str, key: &str, value: &str) -> Derived {
        let start = self
            .text
            .find(&format!("\n{marker}\n"))
            .unwrap_or_else(|| panic!("no {marker} in partners.toml"))
            + 1;
        let end = self.text[start + marker.len()..]
            .find("\n[[")
            .map_or(self.text.len(), |i| start + marker.len() + i);
        let block = &self.text[start..end];
        let mut found = false;
        let edited: Vec<String> = block
            .lines()
            .map(|line| {
                let bare = line.trim_start_matches('#').trim_start();
                if !found && bare.starts_with(&format!("{key} ")) {
                    found = true;
                    format!("{key} = {value}")
                } else {
                    line.to_string()
                }
            })
            .collect();
        let mut edited = edited.join("\n");
        if !found {
            // Not spelled out in partners.toml: add it to the block's own table.
            edited = edited.replacen(marker, &format!("{marker}\n{key} = {value}"), 1);
        }
        self.text.replace_range(start..end, &format!("{edited}\n"));
        self
    }

    /// Sets a fault option of one seller.
    fn seller(self, name: &str, key: &str, value: &str) -> Derived {
        self.set(&format!("name = \"{name}\""), key, value)
    }

    /// Sets an option of the payment provider.
    fn payment(self, key: &str, value: &str) -> Derived {
        self.set("[payment]", key, value)
    }

    /// Starts sellersim on it.
    fn start(self) -> (Sim, tempfile::TempDir) {
        let path: PathBuf = self.dir.path().join("scenario.toml");
        std::fs::write(&path, &self.text).expect("write scenario");
        let sim = Sim::start(path.to_str().expect("utf-8 path"));
        (sim, self.dir)
    }
}

/// Buys `isbns[i]` once per entry, from `clients` threads at once, each retrying its
/// key until the answer is final; returns the final bodies in order.
fn buy_all(engine: &Engine, isbns: &[String], currency: &str, max_price: i64) -> Vec<Value> {
    let answers = Arc::new(Mutex::new(vec![Value::Null; isbns.len()]));
    let clients = 6;
    std::thread::scope(|s| {
        for c in 0..clients {
            let answers = Arc::clone(&answers);
            let addr = engine.addr;
            s.spawn(move || {
                for (i, isbn) in isbns.iter().enumerate().skip(c).step_by(clients) {
                    let body = purchase_body(isbn, max_price, currency, "tok_ok_4242", "ship_home");
                    let key = format!("partners-{currency}-{i}");
                    let r = purchase_until_final(addr, KEY, &key, &body, &[], WAIT);
                    answers.lock().unwrap()[i] = r.json();
                }
            });
        }
    });
    Arc::try_unwrap(answers).unwrap().into_inner().unwrap()
}

/// Asserts the strict bank check.
fn assert_books(sim: &Sim, answers: &[Value], max_price: i64) {
    let problems = reconcile_strict(answers, &sim.ledger(), &sim.orders(), &sim.fx(), |_| {
        Some(max_price)
    });
    assert!(
        problems.is_empty(),
        "the books disagree with what customers were told:\n{problems:#?}\nanswers: {answers:#?}"
    );
}

fn count(answers: &[Value], status: &str) -> usize {
    answers.iter().filter(|a| a["status"] == status).count()
}

/// `n` ISBNs, cycling through those the sellers stock.
fn isbns(sim: &Sim, n: usize) -> Vec<String> {
    sim.isbns.iter().cycle().take(n).cloned().collect()
}

#[test]
fn slow_partners_answering_in_progress_charge_nobody_wrongly() {
    // A third of first attempts take 2.6 s, longer than the engine's 2 s call timeout,
    // and meanwhile a repeat of the key is answered "in progress". Stock is plentiful:
    // every purchase can succeed, and every one must.
    let (sim, _dir) = Derived::new()
        .payment("slow_first_rate", "0.3")
        .payment("slow_first_ms", "2600")
        .seller("json-usd", "order_slow_first_rate", "0.3")
        .seller("json-usd", "order_slow_first_ms", "2600")
        .seller("xml-eur", "order_slow_first_rate", "0.3")
        .seller("xml-eur", "order_slow_first_ms", "2600")
        .seller("line-gbp", "order_slow_first_rate", "0.3")
        .seller("line-gbp", "order_slow_first_ms", "2600")
        .start();
    let engine = Engine::start(&sim.config, 2);
    let answers = buy_all(&engine, &isbns(&sim, 24), "USD", PLENTY);
    assert_eq!(count(&answers, "purchased"), 24, "{answers:#?}");
    assert_books(&sim, &answers, PLENTY);
    assert!(engine.metric("bookbroker_purchase_calls_repeated_total") > 0.0);
    let log = engine.log_text();
    assert!(!log.contains("refused the authorization"), "{log}");
    assert!(!log.contains("capture refused"), "{log}");
}

#[test]
fn lying_confirmations_are_checked_not_trusted() {
    // json confirms negative totals, xml states its EUR totals in USD, line books and
    // confirms 10 % more than it quoted.
    let (sim, _dir) = Derived::new()
        .seller("json-usd", "confirm_lie_rate", "1.0")
        .seller("json-usd", "confirm_lie", "\"negative\"")
        .seller("xml-eur", "confirm_lie_rate", "1.0")
        .seller("xml-eur", "confirm_lie", "\"other_currency\"")
        .seller("xml-eur", "confirm_currency", "\"USD\"")
        .seller("line-gbp", "confirm_lie_rate", "1.0")
        .seller("line-gbp", "confirm_lie", "\"inflated\"")
        .start();
    let engine = Engine::start(&sim.config, 2);
    let answers = buy_all(&engine, &isbns(&sim, 18), "USD", PLENTY);
    assert_eq!(count(&answers, "purchased"), 18, "{answers:#?}");
    assert!(
        answers.iter().all(|a| a["seller"] != "json-usd"),
        "nothing is bought on a negative confirmation: {answers:#?}"
    );
    assert_books(&sim, &answers, PLENTY);
    let json_orders: Vec<_> = sim
        .orders()
        .into_iter()
        .filter(|o| o.seller == "json-usd")
        .collect();
    assert!(!json_orders.is_empty(), "the json seller was asked");
    assert!(
        json_orders.iter().all(|o| !o.is_placed()),
        "{json_orders:#?}"
    );
    assert!(engine.metric("bookbroker_purchase_broken_confirmations_total") > 0.0);
    for kind in sim.ledger().entries.iter().map(|e| e.kind) {
        assert_ne!(kind, LedgerKind::Refund);
    }
}

#[test]
fn lies_on_the_other_protocols_too() {
    // The same lies, moved round: line confirms negative totals, json states its USD in
    // EUR, xml inflates. Customers pay in GBP, so every conversion is a real one.
    let (sim, _dir) = Derived::new()
        .seller("line-gbp", "confirm_lie_rate", "1.0")
        .seller("line-gbp", "confirm_lie", "\"negative\"")
        .seller("json-usd", "confirm_lie_rate", "1.0")
        .seller("json-usd", "confirm_lie", "\"other_currency\"")
        .seller("json-usd", "confirm_currency", "\"EUR\"")
        .seller("xml-eur", "confirm_lie_rate", "1.0")
        .seller("xml-eur", "confirm_lie", "\"inflated\"")
        .start();
    let engine = Engine::start(&sim.config, 2);
    let answers = buy_all(&engine, &isbns(&sim, 18), "GBP", PLENTY);
    assert_eq!(count(&answers, "purchased"), 18, "{answers:#?}");
    assert!(
        answers.iter().all(|a| a["seller"] != "line-gbp"),
        "{answers:#?}"
    );
    assert_books(&sim, &answers, PLENTY);
}

#[test]
fn a_confirmation_above_the_limit_is_cancelled_never_captured() {
    // Every seller books and confirms 10 % above its quote; the customer's limit is the
    // cheapest quote plus 5 %, so no confirmation fits.
    let (sim, _dir) = Derived::new()
        .seller("json-usd", "confirm_lie_rate", "1.0")
        .seller("json-usd", "confirm_lie", "\"inflated\"")
        .seller("xml-eur", "confirm_lie_rate", "1.0")
        .seller("xml-eur", "confirm_lie", "\"inflated\"")
        .seller("line-gbp", "confirm_lie_rate", "1.0")
        .seller("line-gbp", "confirm_lie", "\"inflated\"")
        .start();
    let engine = Engine::start(&sim.config, 2);
    let mut answers = Vec::new();
    for (i, isbn) in isbns(&sim, 4).iter().enumerate() {
        let q = engine.get(&format!("/v1/quotes?isbn={isbn}&currency=USD"));
        let cheapest = q.json()["offers"][0]["total"].as_i64().expect("an offer");
        let max = cheapest + cheapest / 20;
        let body = purchase_body(isbn, max, "USD", "tok_ok_4242", "ship_home");
        let r = purchase_until_final(engine.addr, KEY, &format!("limit-{i}"), &body, &[], WAIT);
        let v = r.json();
        assert_eq!(v["status"], "no_offer_within_limit", "{v}");
        assert!(v["lowest"]["total"].as_i64().unwrap() > max, "{v}");
        answers.push(v);
    }
    let ledger = sim.ledger();
    assert!(ledger.entries.iter().all(|e| e.kind != LedgerKind::Capture));
    assert_books(&sim, &answers, PLENTY);
    assert!(sim.orders().iter().all(|o| !o.is_placed()));
}

#[test]
fn payment_errors_and_resets_are_unknown_outcomes_not_refusals() {
    // A fifth of payment calls answer 500 and a fifth reset the connection, half of them
    // after taking effect. One copy per seller of each book and listings that lag, so
    // later purchases of a book meet `sold_out` everywhere and must void their hold.
    let (sim, _dir) = Derived::new()
        .payment("error_rate", "0.2")
        .payment("reset_rate", "0.2")
        .seller("json-usd", "stock", "1")
        .seller("json-usd", "stale_listings", "true")
        .seller("xml-eur", "stock", "1")
        .seller("xml-eur", "stale_listings", "true")
        .seller("line-gbp", "stock", "1")
        .seller("line-gbp", "stale_listings", "true")
        .start();
    // Short foreground retries: a payment call still unknown after them must go on being
    // repeated, not turn into a refusal.
    let config = sim.config_with(|c| format!("{c}\n[purchases]\nstep_retry_ms = 2000\n"));
    let engine = Engine::start(&config, 2);
    let books: Vec<String> = sim.isbns.iter().take(4).cloned().collect();
    let wanted: Vec<String> = books
        .iter()
        .flat_map(|b| std::iter::repeat_n(b.clone(), 5))
        .collect();
    let answers = buy_all(&engine, &wanted, "USD", PLENTY);
    // Three copies of each book: three buyers get one, two are told it sold out.
    assert_eq!(count(&answers, "purchased"), 12, "{answers:#?}");
    assert_eq!(count(&answers, "failed"), 8, "{answers:#?}");
    assert!(answers
        .iter()
        .filter(|a| a["status"] == "failed")
        .all(|a| a["reason"] == "sold_out"));
    assert_books(&sim, &answers, PLENTY);
    let voids = sim
        .ledger()
        .entries
        .iter()
        .filter(|e| e.kind == LedgerKind::Void)
        .count();
    assert_eq!(
        voids, 8,
        "every hold of a sold-out purchase is released once"
    );
}

#[test]
fn cancels_that_stall_are_repeated_until_the_seller_confirms() {
    // json confirms negative totals, so each of its orders must be cancelled, and its
    // cancels take 2.5 s, longer than the engine's 2 s call timeout.
    let (sim, _dir) = Derived::new()
        .seller("json-usd", "confirm_lie_rate", "1.0")
        .seller("json-usd", "confirm_lie", "\"negative\"")
        .seller("json-usd", "cancel_stall_rate", "1.0")
        .seller("json-usd", "cancel_stall_ms", "2500")
        .start();
    let engine = Engine::start(&sim.config, 2);
    let answers = buy_all(&engine, &isbns(&sim, 8), "USD", PLENTY);
    assert_eq!(count(&answers, "purchased"), 8, "{answers:#?}");
    assert_books(&sim, &answers, PLENTY);
    let json_orders: Vec<_> = sim
        .orders()
        .into_iter()
        .filter(|o| o.seller == "json-usd")
        .collect();
    assert!(!json_orders.is_empty());
    assert!(
        json_orders.iter().all(|o| !o.is_placed()),
        "{json_orders:#?}"
    );
}
