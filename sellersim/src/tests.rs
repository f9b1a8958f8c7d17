//! Unit tests of the simulator: scenario validation, the catalogue, the order model, the
//! payment provider, and a few round trips over real loopback sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::Duration;

use bookbroker_protocols::payment::{LedgerKind, SettleOutcome};
use bookbroker_protocols::{
    Condition, Currency, FxTable, Isbn, Money, OrderOutcome, OrderRequest, QuoteQuery, SellerOffer,
};

use super::catalogue::{books, seller_offers, SellerCatalogueSpec};
use super::payment::{PaymentOp, PaymentState};
use super::scenario::PriceBounds;
use super::seller::{
    self, CancelError, Fault, LieModel, OrderError, OrderReply, Placed, RequestKind, SellerSetup,
    SellerState,
};
use super::*;

impl SellerState {
    /// The outcome of an order, without any wait (the order model alone).
    fn order_sync(&self, req: &OrderRequest) -> Result<OrderOutcome, OrderError> {
        match self.place(req)? {
            Placed::Now(OrderReply::Outcome(outcome)) | Placed::Held { outcome, .. } => Ok(outcome),
            Placed::Now(OrderReply::InProgress) => panic!("key in progress"),
        }
    }
}

const DEMO: &str = DEMO_SCENARIO;
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn minimal(extra_seller_lines: &str) -> String {
    format!(
        "[fx]\nbase = \"USD\"\nrates = {{ EUR = 1.08 }}\n\n[[sellers]]\nname = \"a\"\nprotocol = \"json\"\n{extra_seller_lines}\n"
    )
}

fn invalid_field(text: &str) -> String {
    match Scenario::from_toml_str(text) {
        Err(SimError::Invalid { field, .. }) => field,
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn demo_scenario_is_valid_and_covers_the_brief() {
    let s = Scenario::from_toml_str(DEMO).expect("demo.toml");
    assert!(s.sellers.len() >= 5);
    for p in [Protocol::Json, Protocol::Xml, Protocol::Line] {
        assert!(s.sellers.iter().any(|x| x.protocol == p), "{p:?}");
    }
    assert!(s.sellers.iter().any(|x| x.tls));
    let currencies: std::collections::HashSet<_> =
        s.sellers.iter().map(|x| x.currency.as_str()).collect();
    assert!(currencies.len() >= 3);
    assert!(s
        .sellers
        .iter()
        .all(|x| x.port == 0 && (0.6..=1.0).contains(&x.stock_share)));
    assert!(s
        .customers
        .iter()
        .any(|c| c.id == "demo" && c.api_key == DEMO_API_KEY));
}

#[test]
fn defaults_follow_the_spec() {
    let s = Scenario::from_toml_str(&minimal("")).expect("valid");
    assert_eq!(s.catalogue.seed, 42);
    assert_eq!(s.catalogue.isbns, 200);
    let a = &s.sellers[0];
    assert_eq!((a.port, a.endpoints, a.tls), (0, 1, false));
    assert_eq!(a.currency, "USD");
    assert_eq!((a.stock_share, a.offers_per_isbn, a.stock), (1.0, 1, 5));
    assert_eq!(
        (a.price_min.as_str(), a.price_max.as_str()),
        ("5.00", "60.00")
    );
    assert_eq!(
        (a.shipping_min.as_str(), a.shipping_max.as_str()),
        ("0.00", "6.00")
    );
    assert_eq!((a.timeout_ms, a.max_concurrency), (150, 256));
    assert_eq!(
        (a.latency.base_ms, a.latency.jitter_ms, a.latency.slow_share),
        (2.0, 1.0, 0.0)
    );
    assert_eq!(
        (a.faults.retry_after_s, a.faults.drift_pct, a.faults.hang),
        (1, 10.0, false)
    );
}

#[test]
fn validation_errors_name_the_field() {
    assert_eq!(
        invalid_field(&minimal("[sellers.latency]\nslow_share = 1.5")),
        "sellers[0] (a).latency.slow_share"
    );
    assert_eq!(
        invalid_field(&minimal("currency = \"XYZ\"")),
        "sellers[0] (a).currency"
    );
    assert_eq!(
        invalid_field(&minimal("currency = \"GBP\"")),
        "sellers[0] (a).currency"
    );
    assert_eq!(
        invalid_field(&minimal("price_min = \"70.00\"")),
        "sellers[0] (a).price_min"
    );
    assert_eq!(
        invalid_field(&minimal("price_max = \"1.234\"")),
        "sellers[0] (a).price_max"
    );
    assert_eq!(
        invalid_field(&minimal("stock_share = -0.1")),
        "sellers[0] (a).stock_share"
    );
    assert_eq!(
        invalid_field(&minimal("endpoints = 0")),
        "sellers[0] (a).endpoints"
    );
    assert_eq!(
        invalid_field(&minimal(
            "[sellers.faults]\nerror_rate = 0.7\noverload_rate = 0.7"
        )),
        "sellers[0] (a).faults"
    );
    assert_eq!(
        invalid_field(&minimal("[sellers.faults]\ndrift_rate = 2")),
        "sellers[0] (a).faults.drift_rate"
    );
    let xml_tls = "[[sellers]]\nname = \"x\"\nprotocol = \"xml\"\ntls = true\n";
    assert_eq!(invalid_field(xml_tls), "sellers[0] (x).tls");
    let dup = "[[sellers]]\nname = \"x\"\nprotocol = \"xml\"\n[[sellers]]\nname = \"x\"\nprotocol = \"line\"\n";
    assert_eq!(invalid_field(dup), "sellers[1].name");
    let clash = "[payment]\nport = 9100\n[[sellers]]\nname = \"x\"\nprotocol = \"xml\"\nport = 9099\nendpoints = 2\n";
    assert_eq!(invalid_field(clash), "sellers[0] (x).port");
    assert_eq!(
        invalid_field("[fx]\nbase = \"usd\"\n[[sellers]]\nname = \"x\"\nprotocol = \"xml\"\n"),
        "fx.base"
    );
    assert_eq!(
        invalid_field("[catalogue]\nisbns = 0\n[[sellers]]\nname = \"x\"\nprotocol = \"xml\"\n"),
        "catalogue.isbns"
    );
    assert_eq!(invalid_field(""), "sellers");
    let cust = "[[customers]]\nid = \"c\"\napi_key = \"\"\n[[sellers]]\nname = \"x\"\nprotocol = \"xml\"\n";
    assert_eq!(invalid_field(cust), "customers[0].api_key");
}

#[test]
fn parse_errors_name_the_key() {
    let err = Scenario::from_toml_str(&minimal("latency_ms = 3")).expect_err("unknown field");
    assert!(err.to_string().contains("latency_ms"), "{err}");
    let err = Scenario::from_toml_str("[[sellers]]\nname = \"x\"\nprotocol = \"soap\"\n")
        .expect_err("bad protocol");
    assert!(
        err.to_string().contains("soap") && err.to_string().contains("json"),
        "{err}"
    );
    let err = Scenario::from_toml_str("[[sellers]]\nname = \"x\"\n").expect_err("missing protocol");
    assert!(err.to_string().contains("protocol"), "{err}");
}

#[test]
fn catalogue_is_deterministic_and_valid() {
    let a = books(42, 500);
    let b = books(42, 500);
    assert_eq!(a, b);
    assert_eq!(a.len(), 500);
    let distinct: std::collections::HashSet<_> = a.iter().map(|x| x.isbn).collect();
    assert_eq!(distinct.len(), 500);
    for book in &a {
        let text = book.isbn.as_str();
        assert!(text.starts_with("978") || text.starts_with("979"));
        assert_eq!(Isbn::parse(text).expect("valid isbn"), book.isbn);
        assert!(!book.title.is_empty());
    }
    assert!(
        a.iter().any(|x| !x.title.is_ascii()),
        "some titles are non-ASCII"
    );
    assert_ne!(books(43, 500), a);
}

fn spec(name: &str, share: f64, offers: u32) -> SellerCatalogueSpec<'_> {
    SellerCatalogueSpec {
        seed: 7,
        name,
        protocol: Protocol::Xml,
        currency: Currency::EUR,
        stock_share: share,
        offers_per_isbn: offers,
        bounds: PriceBounds {
            price_min: 500,
            price_max: 6000,
            shipping_min: 0,
            shipping_max: 600,
        },
        stock: 3,
    }
}

#[test]
fn seller_offers_are_deterministic_per_seed_and_name() {
    let all = books(7, 400);
    let x1 = seller_offers(&all, &spec("x", 0.5, 2));
    let x2 = seller_offers(&all, &spec("x", 0.5, 2));
    assert_eq!(x1, x2);
    let y = seller_offers(&all, &spec("y", 0.5, 2));
    assert_ne!(x1, y);
    // About half the books, two offers each, one new and one used.
    let isbns: std::collections::HashSet<_> = x1.iter().map(|o| o.isbn).collect();
    assert!((150..250).contains(&isbns.len()), "{}", isbns.len());
    assert_eq!(x1.len(), isbns.len() * 2);
    assert!(x1
        .iter()
        .all(|o| (500..=6000).contains(&o.price) && (0..=600).contains(&o.shipping)));
    assert!(x1
        .iter()
        .all(|o| o.offer_id.starts_with("b-") && o.quantity == 3));
    assert!(
        x1.iter().any(|o| o.condition == Condition::New)
            && x1.iter().any(|o| o.condition == Condition::Used)
    );
    // A larger share stocks a superset.
    let full: std::collections::HashSet<_> = seller_offers(&all, &spec("x", 1.0, 1))
        .iter()
        .map(|o| o.isbn)
        .collect();
    assert_eq!(full.len(), 400);
    assert!(isbns.is_subset(&full));
    assert!(seller_offers(&all, &spec("x", 0.0, 1)).is_empty());
}

fn offer(id: &str, price: i64, shipping: i64, stock: u32, title: &str) -> SellerOffer {
    SellerOffer {
        offer_id: id.to_string(),
        isbn: Isbn::parse("9780131103627").expect("isbn"),
        title: title.to_string(),
        condition: Condition::New,
        price,
        shipping,
        currency: Currency::USD,
        quantity: stock,
    }
}

fn seller(faults: FaultSpec) -> SellerState {
    SellerState::new(SellerSetup {
        name: "t".into(),
        protocol: Protocol::Json,
        currency: Currency::USD,
        seed: 1,
        offers: vec![
            offer("o-1", 1000, 300, 2, "The Café of Ærø"),
            offer("o-2", 2000, 0, 1, "Plain Title"),
        ],
        latency: LatencySpec::default(),
        faults,
        title_results_max: 100,
        stale_listings: false,
        lie: None,
    })
}

fn order(offer_id: &str, total: i64, key: &str) -> OrderRequest {
    OrderRequest {
        offer_id: offer_id.into(),
        expected_total: Money::new(total, Currency::USD),
        idempotency_key: key.into(),
        shipping_token: "ship_home".into(),
    }
}

fn quantity(s: &SellerState, offer_id: &str) -> Option<u32> {
    let isbn = Isbn::parse("9780131103627").expect("isbn");
    s.quote(&QuoteQuery::Isbn(isbn))
        .into_iter()
        .find(|o| o.offer_id == offer_id)
        .map(|o| o.quantity)
}

#[test]
fn orders_decrement_stock_are_idempotent_and_cancel_restores() {
    let s = seller(FaultSpec::default());
    assert_eq!(s.offer_count(), 2);
    assert_eq!(quantity(&s, "o-1"), Some(2));
    let first = s.order_sync(&order("o-1", 1300, "k1")).expect("order");
    let OrderOutcome::Ordered { order_id, total } = first.clone() else {
        panic!("{first:?}")
    };
    assert_eq!(total, Money::new(1300, Currency::USD));
    assert_eq!(quantity(&s, "o-1"), Some(1));
    // Same key: same answer, no second decrement.
    assert_eq!(
        s.order_sync(&order("o-1", 1300, "k1")).expect("repeat"),
        first
    );
    assert_eq!(quantity(&s, "o-1"), Some(1));
    let second = s.order_sync(&order("o-1", 1300, "k2")).expect("order 2");
    assert!(matches!(second, OrderOutcome::Ordered { .. }));
    assert_eq!(
        quantity(&s, "o-1"),
        None,
        "sold out offers leave the quotes"
    );
    assert_eq!(
        s.order_sync(&order("o-1", 1300, "k3")).expect("sold out"),
        OrderOutcome::SoldOut
    );
    s.cancel(&order_id).expect("cancel");
    assert_eq!(quantity(&s, "o-1"), Some(1));
    s.cancel(&order_id).expect("cancel twice");
    assert_eq!(
        quantity(&s, "o-1"),
        Some(1),
        "a second cancel gives nothing back"
    );
    // The cancelled order's key still answers with the first result.
    assert_eq!(
        s.order_sync(&order("o-1", 1300, "k1")).expect("repeat"),
        first
    );
    let admin = s.admin_orders();
    assert_eq!(admin.seller, "t");
    assert_eq!(admin.orders.len(), 2);
    assert_eq!(admin.orders[0].order_id, order_id);
    assert_eq!(
        admin.orders[0].status,
        bookbroker_protocols::admin::AdminOrderStatus::Cancelled
    );
    assert_eq!(
        admin.orders[1].status,
        bookbroker_protocols::admin::AdminOrderStatus::Placed
    );
    assert_eq!(admin.orders[1].idempotency_key, "k2");
    assert_eq!(
        s.order_sync(&order("nope", 1, "k9")),
        Err(OrderError::UnknownOffer)
    );
    assert_eq!(s.cancel("so-99"), Err(CancelError::UnknownOrder));
    let mut eur = order("o-2", 2000, "k10");
    eur.expected_total = Money::new(2000, Currency::EUR);
    assert!(matches!(
        s.order_sync(&eur),
        Err(OrderError::WrongCurrency { .. })
    ));
    // A stale (lower) expectation meets the current price.
    assert_eq!(
        s.order_sync(&order("o-2", 1999, "k11")).expect("stale"),
        OrderOutcome::PriceChanged {
            total: Money::new(2000, Currency::USD)
        }
    );
}

#[test]
fn drift_raises_the_price_and_accepts_the_drifted_total() {
    let s = seller(FaultSpec {
        drift_rate: 1.0,
        drift_pct: 10.0,
        ..FaultSpec::default()
    });
    let changed = s.order_sync(&order("o-1", 1300, "d1")).expect("order");
    assert_eq!(
        changed,
        OrderOutcome::PriceChanged {
            total: Money::new(1430, Currency::USD)
        }
    );
    assert_eq!(quantity(&s, "o-1"), Some(2), "no copy taken");
    let ok = s
        .order_sync(&order("o-1", 1430, "d1"))
        .expect("order at drifted price");
    assert!(
        matches!(ok, OrderOutcome::Ordered { total, .. } if total.minor == 1430),
        "{ok:?}"
    );
    // Partial drift: deterministic per key, roughly the configured share.
    let half = seller(FaultSpec {
        drift_rate: 0.5,
        ..FaultSpec::default()
    });
    let mut drifted = 0;
    for i in 0..400 {
        let key = format!("key-{i}");
        let a = half.order_sync(&order("nope", 0, &key));
        assert_eq!(a, Err(OrderError::UnknownOffer));
        let outcome = half.order_sync(&order("o-2", 1, &key)).expect("order");
        if outcome
            == (OrderOutcome::PriceChanged {
                total: Money::new(2200, Currency::USD),
            })
        {
            drifted += 1;
            assert_eq!(
                half.order_sync(&order("o-2", 1, &key)).expect("again"),
                outcome,
                "same key, same price"
            );
        }
    }
    assert!((140..260).contains(&drifted), "{drifted}");
    let none = seller(FaultSpec::default());
    assert!(matches!(
        none.order_sync(&order("o-1", 1300, "n1")).expect("order"),
        OrderOutcome::Ordered { .. }
    ));
}

#[test]
fn title_search_is_case_insensitive_and_unicode_aware() {
    let s = seller(FaultSpec::default());
    let hits = s.quote(&QuoteQuery::Title("CAFÉ OF æRØ".into()));
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].offer_id, "o-1");
    assert_eq!(s.quote(&QuoteQuery::Title("title".into())).len(), 1);
    assert!(s.quote(&QuoteQuery::Title("absent".into())).is_empty());
    assert!(s.quote(&QuoteQuery::Title("  ".into())).is_empty());
}

#[test]
fn faults_are_drawn_by_kind() {
    let hang = seller(FaultSpec {
        hang: true,
        ..FaultSpec::default()
    });
    assert_eq!(hang.draw_fault(RequestKind::Quote), Fault::Hang);
    assert_eq!(hang.draw_fault(RequestKind::Order), Fault::None);
    let busy = seller(FaultSpec {
        overload_rate: 1.0,
        ..FaultSpec::default()
    });
    assert!((0..50).all(|_| busy.draw_fault(RequestKind::Order) == Fault::Overload));
    let garbage = seller(FaultSpec {
        garbage_rate: 1.0,
        ..FaultSpec::default()
    });
    assert_eq!(garbage.draw_fault(RequestKind::Quote), Fault::Garbage);
    assert_eq!(garbage.draw_fault(RequestKind::Cancel), Fault::None);
    let mixed = seller(FaultSpec {
        error_rate: 0.25,
        close_rate: 0.25,
        ..FaultSpec::default()
    });
    let n = 4000;
    let errors = (0..n)
        .filter(|_| mixed.draw_fault(RequestKind::Quote) == Fault::Error)
        .count();
    assert!((800..1200).contains(&errors), "{errors}");
    let slow = SellerState::new(SellerSetup {
        name: "s".into(),
        protocol: Protocol::Line,
        currency: Currency::USD,
        seed: 1,
        offers: Vec::new(),
        latency: LatencySpec {
            base_ms: 1.0,
            jitter_ms: 1.0,
            slow_share: 1.0,
            slow_ms: 50.0,
        },
        faults: FaultSpec::default(),
        title_results_max: 1,
        stale_listings: false,
        lie: None,
    });
    assert_eq!(slow.delay(), Duration::from_millis(50));
    let plain = seller(FaultSpec::default());
    let d = plain.delay();
    assert!(
        d >= Duration::from_millis(2) && d <= Duration::from_millis(3),
        "{d:?}"
    );
}

fn status_of(r: &bookbroker_protocols::http::HttpResponse) -> (u16, serde_json::Value) {
    (
        r.status,
        serde_json::from_slice(&r.body).expect("json body"),
    )
}

#[test]
fn payment_provider_authorizes_captures_voids_refunds_once() {
    let p = PaymentState::default();
    let auth = br#"{"payment_token": "tok_ok_4242", "amount": 2000, "currency": "USD"}"#;
    let (st, body) = status_of(&p.execute(&PaymentOp::Authorize, "/v1/authorizations", "a1", auth));
    assert_eq!(st, 201, "{body}");
    let id = body["id"].as_str().expect("id").to_string();
    // Same key: same answer, no second hold.
    let (st2, body2) =
        status_of(&p.execute(&PaymentOp::Authorize, "/v1/authorizations", "a1", auth));
    assert_eq!((st2, &body2), (201, &body));
    let cap = br#"{"amount": 1649}"#;
    let cap_path = format!("/v1/authorizations/{id}/capture");
    let (st, charge) = status_of(&p.execute(&PaymentOp::Capture(id.clone()), &cap_path, "c1", cap));
    assert_eq!(st, 200, "{charge}");
    assert_eq!(charge["amount"], 1649);
    let (st, _) = status_of(&p.execute(&PaymentOp::Capture(id.clone()), &cap_path, "c1", cap));
    assert_eq!(st, 200, "repeat of the same capture");
    let (st, again) = status_of(&p.execute(&PaymentOp::Capture(id.clone()), &cap_path, "c2", cap));
    assert_eq!(st, 409, "{again}");
    let void_path = format!("/v1/authorizations/{id}/void");
    assert_eq!(
        p.execute(&PaymentOp::Void(id.clone()), &void_path, "v1", b"")
            .status,
        409
    );
    let charge_id = charge["id"].as_str().expect("charge id").to_string();
    let refund_path = format!("/v1/charges/{charge_id}/refund");
    assert_eq!(
        p.execute(
            &PaymentOp::Refund(charge_id.clone()),
            &refund_path,
            "r1",
            b""
        )
        .status,
        200
    );
    assert_eq!(
        p.execute(
            &PaymentOp::Refund(charge_id.clone()),
            &refund_path,
            "r2",
            b""
        )
        .status,
        409
    );

    // Void, then capture refused.
    let (_, b) = status_of(&p.execute(&PaymentOp::Authorize, "/v1/authorizations", "a2", auth));
    let id2 = b["id"].as_str().expect("id").to_string();
    let void2 = format!("/v1/authorizations/{id2}/void");
    assert_eq!(
        p.execute(&PaymentOp::Void(id2.clone()), &void2, "v2", b"")
            .status,
        200
    );
    let cap2 = format!("/v1/authorizations/{id2}/capture");
    assert_eq!(
        p.execute(&PaymentOp::Capture(id2.clone()), &cap2, "c3", cap)
            .status,
        409
    );
    // Over the authorized amount.
    let (_, b) = status_of(&p.execute(&PaymentOp::Authorize, "/v1/authorizations", "a3", auth));
    let id3 = b["id"].as_str().expect("id").to_string();
    let cap3 = format!("/v1/authorizations/{id3}/capture");
    assert_eq!(
        p.execute(
            &PaymentOp::Capture(id3.clone()),
            &cap3,
            "c4",
            br#"{"amount": 2001}"#
        )
        .status,
        409
    );

    let decline = br#"{"payment_token": "tok_decline_1", "amount": 2000, "currency": "USD"}"#;
    let (st, b) = status_of(&p.execute(&PaymentOp::Authorize, "/v1/authorizations", "a4", decline));
    assert_eq!((st, b["error"].as_str()), (402, Some("card_declined")));
    let fail = br#"{"payment_token": "tok_capture_fail_9", "amount": 2000, "currency": "EUR"}"#;
    let (st, b) = status_of(&p.execute(&PaymentOp::Authorize, "/v1/authorizations", "a5", fail));
    assert_eq!(st, 201);
    let id5 = b["id"].as_str().expect("id").to_string();
    let cap5 = format!("/v1/authorizations/{id5}/capture");
    let (st, b) = status_of(&p.execute(&PaymentOp::Capture(id5.clone()), &cap5, "c5", cap));
    assert_eq!((st, b["error"].as_str()), (409, Some("capture_failed")));
    assert_eq!(
        p.execute(&PaymentOp::Capture("auth_999".into()), "/x", "c6", cap)
            .status,
        404
    );

    let ledger = p.ledger();
    let kinds: Vec<LedgerKind> = ledger.entries.iter().map(|e| e.kind).collect();
    use LedgerKind::*;
    assert_eq!(
        kinds,
        vec![
            Authorization,
            Capture,
            Refund,
            Authorization,
            Void,
            Authorization,
            Decline,
            Authorization
        ]
    );
    assert_eq!(ledger.entries[1].amount, 1649);
    assert_eq!(ledger.entries[1].idempotency_key, "c1");
    let _ = SettleOutcome::Refused {
        error: String::new(),
    };
}

// ---- over real sockets -------------------------------------------------------------

fn small_scenario() -> Scenario {
    let text = r#"
[catalogue]
seed = 3
isbns = 20
[fx]
base = "USD"
rates = { EUR = 1.08, GBP = 1.27 }
[[customers]]
id = "c"
api_key = "secret-key"
[[sellers]]
name = "js"
protocol = "json"
tls = true
[sellers.latency]
base_ms = 0.0
jitter_ms = 0.0
[[sellers]]
name = "xs"
protocol = "xml"
currency = "EUR"
[sellers.latency]
base_ms = 0.0
jitter_ms = 0.0
[[sellers]]
name = "ls"
protocol = "line"
currency = "GBP"
endpoints = 2
[sellers.latency]
base_ms = 0.0
jitter_ms = 5.0
"#;
    Scenario::from_toml_str(text).expect("scenario")
}

fn connect(url: &str) -> TcpStream {
    let addr = url.split("://").nth(1).expect("url");
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s
}

/// One HTTP/1.1 request on a kept-alive connection; returns status and body.
fn http(
    reader: &mut BufReader<TcpStream>,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    reader.get_mut().write_all(req.as_bytes()).expect("write");
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("status");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .expect("status code")
        .parse()
        .expect("number");
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).expect("header");
        if h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("length");
        }
    }
    let mut buf = vec![0; len];
    reader.read_exact(&mut buf).expect("body");
    (status, String::from_utf8(buf).expect("utf8"))
}

#[test]
fn running_sim_serves_every_protocol_and_emits_a_config() {
    let sim = RunningSim::start(small_scenario(), LOCALHOST).expect("start");
    let isbns = sim.isbns();
    assert_eq!(isbns.len(), 20);
    let isbn = isbns[0].clone();
    let sellers = sim.sellers().to_vec();
    assert!(sellers[0].endpoints[0].starts_with("https://127.0.0.1:"));
    assert!(sellers[1].endpoints[0].starts_with("http://127.0.0.1:"));
    assert_eq!(sellers[2].endpoints.len(), 2);
    assert!(sellers[2].endpoints[1].starts_with("tcp://127.0.0.1:"));

    // xml over one kept-alive connection: quote, order, repeat, cancel, admin.
    let mut xml = BufReader::new(connect(&sellers[1].endpoints[0]));
    let (st, body) = http(&mut xml, "GET", &format!("/search?isbn={isbn}"), "", "");
    assert_eq!(st, 200, "{body}");
    let book_id = body
        .split("<bookId>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("bookId")
        .to_string();
    let offers =
        bookbroker_protocols::xml_seller::decode_quote(bookbroker_protocols::http::Reply {
            status: 200,
            retry_after: None,
            body: body.as_bytes(),
        })
        .expect("decodes");
    let first = offers
        .iter()
        .find(|o| o.offer_id == book_id)
        .expect("offer");
    let total = first.total();
    let order_xml = format!(
        "<order><bookId>{book_id}</bookId><expectedTotal currency=\"EUR\">{}</expectedTotal><requestId>K1</requestId><shipTo>ship_home</shipTo></order>",
        total.to_decimal()
    );
    let (st, a) = http(
        &mut xml,
        "POST",
        "/order",
        "Content-Type: application/xml\r\n",
        &order_xml,
    );
    assert_eq!(st, 200, "{a}");
    assert!(a.contains("<status>ok</status>"), "{a}");
    let (_, b) = http(
        &mut xml,
        "POST",
        "/order",
        "Content-Type: application/xml\r\n",
        &order_xml,
    );
    assert_eq!(a, b, "idempotent");
    let order_id = a
        .split("<orderId>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("orderId")
        .to_string();
    let (st, c) = http(
        &mut xml,
        "POST",
        "/order/cancel",
        "",
        &format!("<cancel><orderId>{order_id}</orderId></cancel>"),
    );
    assert_eq!(st, 200, "{c}");
    let (st, admin) = http(&mut xml, "GET", "/admin/orders", "", "");
    assert_eq!(st, 200);
    let admin: bookbroker_protocols::admin::AdminOrders =
        serde_json::from_str(&admin).expect("admin json");
    assert_eq!(admin.orders.len(), 1);
    assert_eq!(
        admin.orders[0].status,
        bookbroker_protocols::admin::AdminOrderStatus::Cancelled
    );
    assert_eq!(admin.orders[0].idempotency_key, "K1");

    // line, pipelined: several quotes and the admin listing on one connection.
    let mut line = BufReader::new(connect(&sellers[2].endpoints[1]));
    let mut batch = String::new();
    for (i, isbn) in isbns.iter().take(5).enumerate() {
        batch.push_str(&format!("QUOTE t{i}\tISBN\t{isbn}\n"));
    }
    batch.push_str("BOGUS x1\n");
    line.get_mut().write_all(batch.as_bytes()).expect("write");
    let mut ends = std::collections::HashSet::new();
    let mut saw_err = false;
    while ends.len() < 5 || !saw_err {
        let mut l = String::new();
        line.read_line(&mut l).expect("line");
        if let Some(tag) = l.strip_prefix("END ") {
            ends.insert(tag.trim().to_string());
        } else if l.starts_with("ERR x1\t") {
            saw_err = true;
        } else {
            assert!(l.starts_with("OFFER t"), "{l:?}");
            assert!(l.contains("\tGBP\t"), "{l:?}");
        }
    }

    // The payment provider: stats count connections and requests.
    let mut pay = BufReader::new(connect(&sim.payment_url()));
    let (st, stats) = http(&mut pay, "GET", "/admin/stats", "", "");
    assert_eq!(st, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("stats json");
    let xs = &stats["sellers"][1];
    assert_eq!(xs["name"], "xs");
    assert_eq!(xs["protocol"], "xml");
    assert_eq!(
        xs["connections_accepted"], 1,
        "keep-alive kept one connection"
    );
    assert_eq!(xs["requests"]["quote"], 1);
    assert_eq!(xs["requests"]["order"], 2);
    assert_eq!(xs["requests"]["cancel"], 1);
    assert_eq!(xs["requests"]["other"], 1);
    assert_eq!(stats["sellers"][2]["requests"]["quote"], 5);
    assert_eq!(stats["sellers"][2]["requests"]["other"], 1);
    let (st, ledger) = http(&mut pay, "GET", "/v1/ledger", "", "");
    assert_eq!((st, ledger.as_str()), (200, r#"{"entries":[]}"#));
    let (st, _) = http(
        &mut pay,
        "POST",
        "/v1/authorizations",
        "",
        r#"{"payment_token":"tok_ok","amount":5,"currency":"USD"}"#,
    );
    assert_eq!(st, 400, "no idempotency key");

    // The emitted config.
    let dir = std::env::temp_dir().join(format!("sellersim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca = dir.join("ca.pem");
    let text = sim.engine_config(&ca).expect("config");
    let pem = std::fs::read_to_string(&ca).expect("ca written");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let cfg: toml::Value = toml::from_str(&text).expect("config is TOML");
    assert_eq!(
        cfg["payment"]["url"].as_str(),
        Some(sim.payment_url().as_str())
    );
    assert_eq!(cfg["fx"]["base"].as_str(), Some("USD"));
    let emitted = cfg["sellers"].as_array().expect("sellers");
    assert_eq!(emitted.len(), 3);
    assert_eq!(
        emitted[0]["ca_file"].as_str(),
        Some(ca.to_str().expect("utf8 path"))
    );
    assert!(emitted[1].get("ca_file").is_none());
    assert_eq!(emitted[2]["protocol"].as_str(), Some("line"));
    assert_eq!(emitted[2]["endpoints"].as_array().map(Vec::len), Some(2));
    assert_eq!(emitted[1]["currency"].as_str(), Some("EUR"));
    assert_eq!(emitted[0]["timeout_ms"].as_integer(), Some(150));
    assert_eq!(
        cfg["customers"][0]["api_key_sha256"].as_str(),
        Some(api_key_sha256("secret-key").as_str())
    );
    assert!(!text.contains("secret-key"));
    let _ = std::fs::remove_dir_all(&dir);

    let endpoint = sellers[1].endpoints[0].clone();
    sim.stop();
    let addr = endpoint.trim_start_matches("http://");
    assert!(TcpStream::connect(addr).is_err(), "port closed after stop");
}

#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let text = format!("[[sellers]]\nname = \"busy\"\nprotocol = \"line\"\nport = {port}\n");
    let err = RunningSim::start(Scenario::from_toml_str(&text).expect("scenario"), LOCALHOST)
        .expect_err("in use");
    let msg = err.to_string();
    assert!(
        msg.contains(&port.to_string()) && msg.contains("busy"),
        "{msg}"
    );
}

#[test]
fn line_faults_over_a_socket() {
    let text = r#"
[catalogue]
isbns = 5
[[sellers]]
name = "flaky"
protocol = "line"
[sellers.latency]
base_ms = 0.0
jitter_ms = 0.0
[sellers.faults]
overload_rate = 1.0
retry_after_s = 2
"#;
    let sim = RunningSim::start(Scenario::from_toml_str(text).expect("scenario"), LOCALHOST)
        .expect("start");
    let isbn = sim.isbns()[0].clone();
    let mut c = BufReader::new(connect(&sim.sellers()[0].endpoints[0]));
    c.get_mut()
        .write_all(format!("QUOTE q\tISBN\t{isbn}\n").as_bytes())
        .expect("write");
    let mut l = String::new();
    c.read_line(&mut l).expect("line");
    assert_eq!(l, "BUSY q\t2000\n");
    sim.stop();
}

#[test]
fn a_silent_line_seller_stays_silent_on_old_connections_only() {
    let text = r#"
[catalogue]
isbns = 5
[[sellers]]
name = "silent"
protocol = "line"
[sellers.latency]
base_ms = 0.0
jitter_ms = 0.0
[sellers.faults]
silence_after = 2
silence_ms = 300
"#;
    let sim = RunningSim::start(Scenario::from_toml_str(text).expect("scenario"), LOCALHOST)
        .expect("start");
    let isbn = sim.isbns()[0].clone();
    let endpoint = sim.sellers()[0].endpoints[0].clone();
    let quote = |c: &mut BufReader<std::net::TcpStream>, tag: &str| -> Option<String> {
        c.get_mut()
            .write_all(format!("QUOTE {tag}\tISBN\t{isbn}\n").as_bytes())
            .expect("write");
        // The whole answer, up to its END line.
        let mut answer = String::new();
        loop {
            let mut l = String::new();
            match c.read_line(&mut l) {
                Ok(n) if n > 0 => answer.push_str(&l),
                _ => return None,
            }
            if l.starts_with("END ") {
                return Some(answer);
            }
        }
    };
    let mut old = BufReader::new(connect(&endpoint));
    old.get_mut()
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    assert!(
        quote(&mut old, "a").is_some(),
        "the first request is answered"
    );
    assert!(
        quote(&mut old, "b").is_none(),
        "the second starts the silence"
    );
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        quote(&mut old, "c").is_none(),
        "an old connection stays silent"
    );
    let mut new = BufReader::new(connect(&endpoint));
    new.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert!(quote(&mut new, "d").is_some(), "a new connection is served");
    sim.stop();
}

#[test]
fn stale_listings_keep_quoting_sold_out_offers() {
    let s = SellerState::new(SellerSetup {
        name: "stale".into(),
        protocol: Protocol::Line,
        currency: Currency::USD,
        seed: 1,
        offers: vec![offer("L1", 500, 100, 1, "Only Copy")],
        latency: LatencySpec::default(),
        faults: FaultSpec::default(),
        title_results_max: 10,
        stale_listings: true,
        lie: None,
    });
    assert!(matches!(
        s.order_sync(&order("L1", 600, "s1")).expect("order"),
        OrderOutcome::Ordered { .. }
    ));
    assert_eq!(quantity(&s, "L1"), Some(1), "still listed");
    assert_eq!(
        s.order_sync(&order("L1", 600, "s2")).expect("order"),
        OrderOutcome::SoldOut
    );
}

#[test]
fn http_faults_over_a_socket() {
    let text = r#"
[catalogue]
isbns = 5
[[sellers]]
name = "busy"
protocol = "json"
[sellers.faults]
overload_rate = 1.0
retry_after_s = 3
[[sellers]]
name = "closer"
protocol = "json"
[sellers.faults]
close_rate = 1.0
[[sellers]]
name = "hang"
protocol = "xml"
[sellers.faults]
hang = true
"#;
    let sim = RunningSim::start(Scenario::from_toml_str(text).expect("scenario"), LOCALHOST)
        .expect("start");
    let isbn = sim.isbns()[0].clone();
    let request = format!("GET /v1/offers?isbn={isbn} HTTP/1.1\r\nHost: x\r\n\r\n");

    let mut busy = connect(&sim.sellers()[0].endpoints[0]);
    busy.write_all(request.as_bytes()).expect("write");
    let mut head = [0u8; 256];
    let n = busy.read(&mut head).expect("read");
    let head = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 429"), "{head}");
    assert!(head.contains("retry-after: 3"), "{head}");

    let mut closer = connect(&sim.sellers()[1].endpoints[0]);
    closer.write_all(request.as_bytes()).expect("write");
    let mut all = Vec::new();
    closer.read_to_end(&mut all).expect("read to the close");
    let all = String::from_utf8_lossy(&all).to_string();
    let (head, body) = all.split_once("\r\n\r\n").expect("headers arrived");
    let promised: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .expect("content-length")
        .parse()
        .expect("number");
    assert!(
        !body.is_empty() && body.len() < promised,
        "{} of {promised}",
        body.len()
    );

    let mut hang = connect(&sim.sellers()[2].endpoints[0]);
    hang.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    hang.write_all(format!("GET /search?isbn={isbn} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("write");
    let mut buf = [0u8; 16];
    let err = hang.read(&mut buf).expect_err("no answer");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    sim.stop();
}

// ---- partner behaviours: options and validation -------------------------------------

#[test]
fn partner_options_default_to_off() {
    let s = Scenario::from_toml_str(&minimal("")).expect("valid");
    let f = &s.sellers[0].faults;
    assert_eq!(
        (
            f.confirm_lie_rate,
            f.confirm_lie,
            f.confirm_currency.as_deref()
        ),
        (0.0, None, None)
    );
    assert_eq!(f.inflate_pct, 10.0);
    assert_eq!((f.order_slow_first_rate, f.order_slow_first_ms), (0.0, 0));
    assert_eq!((f.cancel_stall_rate, f.cancel_stall_ms), (0.0, 0));
    let p = &s.payment;
    assert_eq!((p.slow_first_rate, p.slow_first_ms), (0.0, 0));
    assert_eq!(
        (p.error_rate, p.reset_rate, p.fault_after_effect),
        (0.0, 0.0, 0.5)
    );
    assert_eq!(
        p.faults_on,
        vec![
            PaymentCall::Authorize,
            PaymentCall::Capture,
            PaymentCall::Void
        ]
    );
    assert_eq!(p, &PaymentSpec::default());
    let all = Scenario::from_toml_str(&minimal(
        "[sellers.faults]\nconfirm_lie_rate = 0.5\nconfirm_lie = \"other_currency\"\nconfirm_currency = \"EUR\"\ninflate_pct = 2.5\norder_slow_first_rate = 0.25\norder_slow_first_ms = 300\ncancel_stall_rate = 1\ncancel_stall_ms = 50",
    ))
    .expect("valid");
    let f = &all.sellers[0].faults;
    assert_eq!(f.confirm_lie, Some(ConfirmLie::OtherCurrency));
    assert_eq!(f.confirm_currency.as_deref(), Some("EUR"));
    assert_eq!((f.inflate_pct, f.order_slow_first_ms), (2.5, 300));
    let pay = Scenario::from_toml_str(&format!(
        "[payment]\nslow_first_rate = 0.1\nslow_first_ms = 900\nerror_rate = 0.2\nreset_rate = 0.3\nfaults_on = [\"capture\", \"refund\"]\nfault_after_effect = 1.0\n{}",
        minimal("")
    ))
    .expect("valid");
    assert_eq!(
        pay.payment.faults_on,
        vec![PaymentCall::Capture, PaymentCall::Refund]
    );
    assert_eq!(pay.payment.slow_first_ms, 900);
}

#[test]
fn partner_option_errors_name_the_field() {
    let seller = |lines: &str| invalid_field(&minimal(&format!("[sellers.faults]\n{lines}")));
    let at = "sellers[0] (a).faults";
    for (lines, field) in [
        (
            "confirm_lie_rate = 1.5\nconfirm_lie = \"negative\"",
            "confirm_lie_rate",
        ),
        ("confirm_lie_rate = -0.1", "confirm_lie_rate"),
        ("confirm_lie_rate = 0.5", "confirm_lie"),
        (
            "confirm_lie_rate = 0.5\nconfirm_lie = \"other_currency\"",
            "confirm_currency",
        ),
        ("confirm_currency = \"XYZ\"", "confirm_currency"),
        ("confirm_currency = \"usd\"", "confirm_currency"),
        ("confirm_currency = \"GBP\"", "confirm_currency"),
        ("confirm_currency = \"USD\"", "confirm_currency"),
        ("inflate_pct = -1", "inflate_pct"),
        ("inflate_pct = 1001", "inflate_pct"),
        ("inflate_pct = nan", "inflate_pct"),
        ("order_slow_first_rate = 1.01", "order_slow_first_rate"),
        ("order_slow_first_ms = 3600001", "order_slow_first_ms"),
        ("cancel_stall_rate = 2", "cancel_stall_rate"),
        ("cancel_stall_ms = 99999999", "cancel_stall_ms"),
    ] {
        assert_eq!(seller(lines), format!("{at}.{field}"), "{lines}");
    }
    let payment = |lines: &str| invalid_field(&format!("[payment]\n{lines}\n{}", minimal("")));
    for (lines, field) in [
        ("slow_first_rate = 1.5", "payment.slow_first_rate"),
        ("slow_first_ms = 3600001", "payment.slow_first_ms"),
        ("error_rate = -1", "payment.error_rate"),
        ("reset_rate = 1.1", "payment.reset_rate"),
        ("fault_after_effect = 2", "payment.fault_after_effect"),
        ("error_rate = 0.6\nreset_rate = 0.6", "payment"),
    ] {
        assert_eq!(payment(lines), field, "{lines}");
    }
    // Unknown names are parse errors that name the value or the key.
    for (text, needle) in [
        (minimal("[sellers.faults]\nconfirm_lie = \"fibs\""), "fibs"),
        (
            format!("[payment]\nfaults_on = [\"refnd\"]\n{}", minimal("")),
            "refnd",
        ),
        (
            format!("[payment]\nslow_ms = 3\n{}", minimal("")),
            "slow_ms",
        ),
        (
            minimal("[sellers.faults]\nslow_first_ms = 3"),
            "slow_first_ms",
        ),
        (
            minimal("[sellers.faults]\norder_slow_first_ms = -5"),
            "order_slow_first_ms",
        ),
    ] {
        let err = Scenario::from_toml_str(&text).expect_err(needle);
        assert!(matches!(err, SimError::Parse(_)), "{err}");
        assert!(err.to_string().contains(needle), "{err}");
    }
    // A rate table the converter cannot use is named when a lie needs it.
    let bad_fx = "[fx]\nbase = \"USD\"\nrates = { USD = 2.0, EUR = 1.08 }\n[[sellers]]\nname = \"a\"\nprotocol = \"json\"\n[sellers.faults]\nconfirm_lie_rate = 1.0\nconfirm_lie = \"other_currency\"\nconfirm_currency = \"EUR\"\n";
    assert_eq!(invalid_field(bad_fx), "fx.rates");
}

#[test]
fn partners_scenario_is_purchases_with_every_partner_option_off() {
    // tests/scenarios/partners.toml is what other tests derive partner scenarios from.
    let partners = include_str!("../../tests/scenarios/partners.toml");
    let purchases = include_str!("../../tests/scenarios/purchases.toml");
    assert_eq!(
        Scenario::from_toml_str(partners).expect("partners.toml"),
        Scenario::from_toml_str(purchases).expect("purchases.toml")
    );
    // Its commented hints are valid once uncommented.
    let hinted = partners
        .replace("# confirm_lie", "confirm_lie")
        .replace("# confirm_currency", "confirm_currency")
        .replace("confirm_lie_rate = 0.0", "confirm_lie_rate = 0.5");
    let s = Scenario::from_toml_str(&hinted).expect("hints");
    let lies: Vec<_> = s.sellers.iter().map(|x| x.faults.confirm_lie).collect();
    assert_eq!(
        lies,
        vec![
            Some(ConfirmLie::Negative),
            Some(ConfirmLie::OtherCurrency),
            Some(ConfirmLie::Inflated)
        ]
    );
}

// ---- partner behaviours: the order and payment models -------------------------------

fn lying_seller(currency: Currency, lie: LieModel, rate: f64) -> SellerState {
    let mut first = offer("o-1", 1500, 251, 1000, "Lies");
    first.currency = currency;
    SellerState::new(SellerSetup {
        name: "liar".into(),
        protocol: Protocol::Xml,
        currency,
        seed: 1,
        offers: vec![first],
        latency: LatencySpec::default(),
        faults: FaultSpec {
            confirm_lie_rate: rate,
            ..FaultSpec::default()
        },
        title_results_max: 10,
        stale_listings: false,
        lie: Some(lie),
    })
}

fn order_in(currency: Currency, total: i64, key: &str) -> OrderRequest {
    OrderRequest {
        expected_total: Money::new(total, currency),
        ..order("o-1", total, key)
    }
}

#[test]
fn lies_change_the_confirmation_and_inflation_the_booking() {
    use bookbroker_protocols::admin::AdminOrderStatus;
    let fx = Arc::new(FxTable::new(Currency::USD, &[(Currency::EUR, "1.08")]).expect("fx"));
    // The brief's example: booked EUR 17.51, confirmed USD 18.91.
    let s = lying_seller(
        Currency::EUR,
        LieModel::OtherCurrency {
            to: Currency::USD,
            fx,
        },
        1.0,
    );
    let first = s
        .order_sync(&order_in(Currency::EUR, 1751, "k1"))
        .expect("order");
    assert_eq!(
        first,
        OrderOutcome::Ordered {
            order_id: "x-1".into(),
            total: Money::new(1891, Currency::USD)
        }
    );
    assert_eq!(
        s.order_sync(&order_in(Currency::EUR, 1751, "k1"))
            .expect("repeat"),
        first,
        "a repeat gets the same lie"
    );
    let booked = &s.admin_orders().orders[0];
    assert_eq!(
        (booked.total_minor, booked.currency.as_str()),
        (1751, "EUR")
    );
    assert_eq!(booked.status, AdminOrderStatus::Placed);

    let s = lying_seller(Currency::EUR, LieModel::Negative, 1.0);
    assert_eq!(
        s.order_sync(&order_in(Currency::EUR, 1751, "k1"))
            .expect("order"),
        OrderOutcome::Ordered {
            order_id: "x-1".into(),
            total: Money::new(-1751, Currency::EUR)
        }
    );
    assert_eq!(s.admin_orders().orders[0].total_minor, 1751);

    // Inflated: booked and confirmed alike, 10 % up, half to even.
    let s = lying_seller(
        Currency::EUR,
        LieModel::Inflated { basis_points: 1000 },
        1.0,
    );
    assert_eq!(
        s.order_sync(&order_in(Currency::EUR, 1751, "k1"))
            .expect("order"),
        OrderOutcome::Ordered {
            order_id: "x-1".into(),
            total: Money::new(1926, Currency::EUR)
        }
    );
    assert_eq!(s.admin_orders().orders[0].total_minor, 1926);
    assert_eq!(seller::inflate(1751, 1000), 1926); // 1926.1
    assert_eq!(seller::inflate(5, 1000), 6); // 5.5 rounds to even 6
    assert_eq!(seller::inflate(15, 1000), 16); // 16.5 rounds to even 16
    assert_eq!(seller::inflate(2000, 0), 2000);
    assert_eq!(seller::inflate(1000, 250), 1025);

    // A share of keys lies, decided per key; the others confirm the truth.
    let s = lying_seller(Currency::EUR, LieModel::Negative, 0.5);
    let mut lies = 0;
    for i in 0..400 {
        let key = format!("share-{i}");
        let OrderOutcome::Ordered { total, .. } = s
            .order_sync(&order_in(Currency::EUR, 1751, &key))
            .expect("order")
        else {
            panic!("not ordered")
        };
        assert!(total.minor == 1751 || total.minor == -1751, "{total:?}");
        if total.minor < 0 {
            lies += 1;
        }
    }
    assert!((140..260).contains(&lies), "{lies}");
    assert!(s
        .admin_orders()
        .orders
        .iter()
        .all(|o| o.total_minor == 1751));
}

#[test]
fn slow_first_attempts_hold_their_key_in_progress() {
    let s = seller(FaultSpec {
        order_slow_first_rate: 1.0,
        order_slow_first_ms: 250,
        ..FaultSpec::default()
    });
    let first = s.place(&order("o-1", 1300, "k1")).expect("place");
    let Placed::Held { outcome, hold } = first else {
        panic!("{first:?}")
    };
    assert_eq!(hold, Duration::from_millis(250));
    assert!(matches!(outcome, OrderOutcome::Ordered { .. }));
    assert_eq!(s.admin_orders().orders.len(), 1, "booked at the start");
    assert_eq!(quantity(&s, "o-1"), Some(1));
    assert_eq!(
        s.place(&order("o-1", 1300, "k1")).expect("repeat"),
        Placed::Now(OrderReply::InProgress)
    );
    s.first_answered("k1");
    assert_eq!(
        s.place(&order("o-1", 1300, "k1")).expect("repeat"),
        Placed::Now(OrderReply::Outcome(outcome)),
        "repeats after the answer get the stored result, never slow"
    );
    // A slow first attempt that is refused holds its key too, and is not remembered.
    let held = s.place(&order("o-2", 1, "k2")).expect("place");
    assert!(matches!(
        held,
        Placed::Held {
            outcome: OrderOutcome::PriceChanged { .. },
            ..
        }
    ));
    assert_eq!(
        s.place(&order("o-2", 2000, "k2")).expect("repeat"),
        Placed::Now(OrderReply::InProgress)
    );
    s.first_answered("k2");
    assert!(matches!(
        s.place(&order("o-2", 2000, "k2")).expect("new attempt"),
        Placed::Held {
            outcome: OrderOutcome::Ordered { .. },
            ..
        }
    ));
    // Off: never held.
    let plain = seller(FaultSpec::default());
    assert!(matches!(
        plain.place(&order("o-1", 1300, "k1")).expect("place"),
        Placed::Now(OrderReply::Outcome(OrderOutcome::Ordered { .. }))
    ));
}

// ---- partner behaviours over real sockets -------------------------------------------

/// A scenario of plain, instant sellers given as (name, protocol, currency, lines under
/// `[sellers.faults]`), with `payment` lines under `[payment]`.
fn partner_scenario(sellers: &[(&str, &str, &str, &str)], payment: &str) -> Scenario {
    let mut text = format!(
        "[catalogue]\nseed = 5\nisbns = 10\n[fx]\nbase = \"USD\"\nrates = {{ EUR = 1.08, GBP = 1.27 }}\n[payment]\n{payment}\n"
    );
    for (name, protocol, currency, faults) in sellers {
        text.push_str(&format!(
            "[[sellers]]\nname = \"{name}\"\nprotocol = \"{protocol}\"\ncurrency = \"{currency}\"\nstock = 50\n[sellers.latency]\nbase_ms = 0.0\njitter_ms = 0.0\n[sellers.faults]\n{faults}\n"
        ));
    }
    Scenario::from_toml_str(&text).expect("scenario")
}

/// One seller per protocol (json USD, xml EUR, line GBP), all with `faults`.
fn one_per_protocol(faults: &str) -> Scenario {
    partner_scenario(
        &[
            ("js", "json", "USD", faults),
            ("xs", "xml", "EUR", faults),
            ("ls", "line", "GBP", faults),
        ],
        "",
    )
}

/// Sends a request built by a client-side codec on a new connection.
fn try_send_http(
    url: &str,
    req: &bookbroker_protocols::http::HttpRequest,
) -> std::io::Result<(u16, String)> {
    let mut conn = BufReader::new(connect(url));
    let mut bytes = format!(
        "{} {} HTTP/1.1\r\nHost: x\r\n",
        req.method, req.path_and_query
    );
    for (name, value) in &req.headers {
        bytes.push_str(&format!("{name}: {value}\r\n"));
    }
    bytes.push_str(&format!("Content-Length: {}\r\n\r\n", req.body.len()));
    let mut bytes = bytes.into_bytes();
    bytes.extend_from_slice(&req.body);
    conn.get_mut().write_all(&bytes)?;
    let mut status_line = String::new();
    if conn.read_line(&mut status_line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        conn.read_line(&mut h)?;
        if h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().expect("length");
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body)?;
    Ok((status, String::from_utf8(body).expect("utf8")))
}

fn send_http(url: &str, req: &bookbroker_protocols::http::HttpRequest) -> (u16, String) {
    try_send_http(url, req).expect("an answer")
}

/// Sends one line-protocol request on a new connection; its answer's lines, LF dropped.
fn send_line(url: &str, req: &bookbroker_protocols::line::Request) -> Vec<String> {
    let mut out = Vec::new();
    req.encode(&mut out);
    send_raw_line(url, &String::from_utf8_lossy(&out))
}

/// Sends one request line as it is and reads its answer lines.
fn send_raw_line(url: &str, request: &str) -> Vec<String> {
    let mut conn = BufReader::new(connect(url));
    conn.get_mut().write_all(request.as_bytes()).expect("write");
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        conn.read_line(&mut l).expect("line");
        assert!(!l.is_empty(), "connection closed");
        let l = l.trim_end_matches('\n').to_string();
        let more = l.starts_with("OFFER ") || l.starts_with("ORDERREC ");
        lines.push(l);
        if !more {
            return lines;
        }
    }
}

fn reply(status: u16, body: &str) -> bookbroker_protocols::http::Reply<'_> {
    bookbroker_protocols::http::Reply {
        status,
        retry_after: None,
        body: body.as_bytes(),
    }
}

/// The first offer a seller quotes for `isbn`, asked in its own protocol.
fn first_offer(info: &SellerInfo, isbn: &str) -> SellerOffer {
    use bookbroker_protocols::{json_seller, line, xml_seller};
    let query = QuoteQuery::Isbn(Isbn::parse(isbn).expect("isbn"));
    let url = &info.endpoints[0];
    let offers = match info.protocol {
        Protocol::Json => {
            let (st, body) = send_http(url, &json_seller::encode_quote(&query));
            json_seller::decode_quote(reply(st, &body)).expect("offers")
        }
        Protocol::Xml => {
            let (st, body) = send_http(url, &xml_seller::encode_quote(&query));
            xml_seller::decode_quote(reply(st, &body)).expect("offers")
        }
        Protocol::Line => send_line(
            url,
            &line::Request::Quote {
                tag: "q".into(),
                query,
            },
        )
        .iter()
        .filter_map(|l| match line::Response::decode(l.as_bytes()) {
            Ok(line::Response::Offer { offer, .. }) => Some(offer),
            _ => None,
        })
        .collect(),
    };
    offers.into_iter().next().expect("an offer")
}

/// Orders `offer` at its quoted total; the answer as it came: `"<status> <body>"` over
/// HTTP, the line (tag `o`) for `line`.
fn send_order(info: &SellerInfo, offer: &SellerOffer, key: &str) -> String {
    use bookbroker_protocols::{json_seller, line, xml_seller};
    let order = OrderRequest {
        offer_id: offer.offer_id.clone(),
        expected_total: offer.total(),
        idempotency_key: key.to_string(),
        shipping_token: "ship_home".into(),
    };
    let url = &info.endpoints[0];
    match info.protocol {
        Protocol::Json => {
            let (st, body) = send_http(url, &json_seller::encode_order(&order));
            format!("{st} {body}")
        }
        Protocol::Xml => {
            let (st, body) = send_http(url, &xml_seller::encode_order(&order));
            format!("{st} {body}")
        }
        Protocol::Line => send_line(
            url,
            &line::Request::Order {
                tag: "o".into(),
                order,
            },
        )
        .join("\n"),
    }
}

/// Cancels an order; the answer as it came (tag `c` for `line`).
fn send_cancel(info: &SellerInfo, order_id: &str) -> String {
    use bookbroker_protocols::{json_seller, line, xml_seller};
    let url = &info.endpoints[0];
    match info.protocol {
        Protocol::Json => {
            let (st, body) = send_http(url, &json_seller::encode_cancel(order_id));
            format!("{st} {body}")
        }
        Protocol::Xml => {
            let (st, body) = send_http(url, &xml_seller::encode_cancel(order_id));
            format!("{st} {body}")
        }
        Protocol::Line => send_line(
            url,
            &line::Request::Cancel {
                tag: "c".into(),
                order_id: order_id.to_string(),
            },
        )
        .join("\n"),
    }
}

/// The seller's admin listing, in its protocol.
fn admin_orders(info: &SellerInfo) -> Vec<bookbroker_protocols::admin::AdminOrder> {
    use bookbroker_protocols::admin;
    let url = &info.endpoints[0];
    match info.protocol {
        Protocol::Json | Protocol::Xml => {
            let (st, body) = send_http(url, &admin::encode_request());
            admin::decode_response(reply(st, &body))
                .expect("listing")
                .orders
        }
        Protocol::Line => send_raw_line(url, "ORDERS a\n")
            .iter()
            .filter_map(|l| match admin::decode_line(l.as_bytes()) {
                Ok(admin::LineListing::Record(record)) => Some(record),
                _ => None,
            })
            .collect(),
    }
}

fn between<'t>(text: &'t str, start: &str, end: &str) -> &'t str {
    text.split_once(start)
        .and_then(|(_, rest)| rest.split_once(end))
        .map(|(v, _)| v)
        .unwrap_or_else(|| panic!("no {start}…{end} in {text}"))
}

/// What a successful order answer confirms: (order id, total), read straight off the
/// wire (the engine's decoders refuse some lies, such as a negative `line` total).
fn confirmation(info: &SellerInfo, answer: &str) -> (String, Money) {
    let money = |value: &str, code: &str| {
        let currency = Currency::parse(code).expect("currency");
        Money::parse_decimal(value, currency).expect("amount")
    };
    match info.protocol {
        Protocol::Json => {
            let body = answer.strip_prefix("201 ").expect("201 created");
            let v: serde_json::Value = serde_json::from_str(body).expect("json");
            (
                v["order_id"].as_str().expect("order_id").to_string(),
                money(
                    v["total"]["value"].as_str().expect("value"),
                    v["total"]["currency"].as_str().expect("currency"),
                ),
            )
        }
        Protocol::Xml => {
            assert!(
                answer.starts_with("200 <orderResult><status>ok</status>"),
                "{answer}"
            );
            (
                between(answer, "<orderId>", "</orderId>").to_string(),
                money(
                    between(answer, "\">", "</total>"),
                    between(answer, "currency=\"", "\""),
                ),
            )
        }
        Protocol::Line => {
            let fields: Vec<&str> = answer.split('\t').collect();
            assert_eq!(fields.len(), 4, "{answer}");
            assert_eq!(fields[0], "ORDERED o", "{answer}");
            let currency = Currency::parse(fields[3]).expect("currency");
            let minor: i64 = fields[2].parse().expect("minor units");
            (fields[1].to_string(), Money::new(minor, currency))
        }
    }
}

fn in_progress_answer(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Json => "409 {\"error\":\"idempotency_key_in_use\"}",
        Protocol::Xml => "200 <orderResult><status>inProgress</status></orderResult>",
        Protocol::Line => "BUSY o\t100",
    }
}

#[test]
fn slow_first_order_is_booked_at_once_and_repeats_meanwhile_are_in_progress() {
    use bookbroker_protocols::admin::AdminOrderStatus;
    let sim = RunningSim::start(
        one_per_protocol("order_slow_first_rate = 1.0\norder_slow_first_ms = 800"),
        LOCALHOST,
    )
    .expect("start");
    let isbn = sim.isbns()[0].clone();
    for info in sim.sellers().to_vec() {
        let offer = first_offer(&info, &isbn);
        let key = format!("slow-{}", info.name);
        let started = std::time::Instant::now();
        let first = {
            let (info, offer, key) = (info.clone(), offer.clone(), key.clone());
            std::thread::spawn(move || send_order(&info, &offer, &key))
        };
        std::thread::sleep(Duration::from_millis(200));
        let during = admin_orders(&info);
        assert_eq!(during.len(), 1, "{}: booked at the start", info.name);
        assert_eq!(during[0].idempotency_key, key);
        assert_eq!(
            send_order(&info, &offer, &key),
            in_progress_answer(info.protocol),
            "{}: a repeat while the first attempt runs",
            info.name
        );
        let first = first.join().expect("first attempt");
        assert!(
            started.elapsed() >= Duration::from_millis(800),
            "{}: answered after {:?}",
            info.name,
            started.elapsed()
        );
        let (order_id, total) = confirmation(&info, &first);
        assert_eq!(total, offer.total(), "{}", info.name);
        assert_eq!(
            send_order(&info, &offer, &key),
            first,
            "{}: a later repeat gets the stored confirmation",
            info.name
        );
        let after = admin_orders(&info);
        assert_eq!(after.len(), 1, "{}: exactly one order", info.name);
        assert_eq!(
            (after[0].order_id.as_str(), after[0].status),
            (order_id.as_str(), AdminOrderStatus::Placed)
        );
    }
    sim.stop();
}

#[test]
fn lying_confirmations_on_every_protocol_while_the_listing_tells_the_truth() {
    let negative = "confirm_lie_rate = 1.0\nconfirm_lie = \"negative\"";
    let to_usd =
        "confirm_lie_rate = 1.0\nconfirm_lie = \"other_currency\"\nconfirm_currency = \"USD\"";
    let to_eur =
        "confirm_lie_rate = 1.0\nconfirm_lie = \"other_currency\"\nconfirm_currency = \"EUR\"";
    let inflated = "confirm_lie_rate = 1.0\nconfirm_lie = \"inflated\"\ninflate_pct = 10";
    let sim = RunningSim::start(
        partner_scenario(
            &[
                ("js-negative", "json", "USD", negative),
                ("xs-negative", "xml", "EUR", negative),
                ("ls-negative", "line", "GBP", negative),
                ("js-fx", "json", "USD", to_eur),
                ("xs-fx", "xml", "EUR", to_usd),
                ("ls-fx", "line", "GBP", to_usd),
                ("js-inflated", "json", "USD", inflated),
                ("xs-inflated", "xml", "EUR", inflated),
                ("ls-inflated", "line", "GBP", inflated),
            ],
            "",
        ),
        LOCALHOST,
    )
    .expect("start");
    let fx = sim.scenario().fx_table().expect("fx");
    let isbn = sim.isbns()[1].clone();
    for info in sim.sellers().to_vec() {
        let offer = first_offer(&info, &isbn);
        let honest = offer.total();
        let key = format!("lie-{}", info.name);
        let answer = send_order(&info, &offer, &key);
        let (order_id, confirmed) = confirmation(&info, &answer);
        let booked = if info.name.ends_with("-negative") {
            assert_eq!(confirmed, Money::new(-honest.minor, honest.currency));
            // On the wire: a minus sign before the amount, in every protocol.
            let needle = match info.protocol {
                Protocol::Json => "\"value\":\"-",
                Protocol::Xml => "\">-",
                Protocol::Line => "\t-",
            };
            assert!(answer.contains(needle), "{answer}");
            honest.minor
        } else if info.name.ends_with("-fx") {
            let to = if honest.currency == Currency::USD {
                Currency::EUR
            } else {
                Currency::USD
            };
            assert_eq!(
                confirmed,
                fx.convert(honest, to).expect("convert"),
                "{answer}"
            );
            assert_eq!(confirmed.currency, to);
            honest.minor
        } else {
            // 110 % of the honest total, rounded half to even.
            let (q, r) = ((honest.minor * 110) / 100, (honest.minor * 110) % 100);
            let up = r > 50 || (r == 50 && q % 2 == 1);
            let inflated = q + i64::from(up);
            assert!(inflated > honest.minor);
            assert_eq!(confirmed, Money::new(inflated, honest.currency), "{answer}");
            inflated
        };
        assert_eq!(
            send_order(&info, &offer, &key),
            answer,
            "{}: a repeat gets the same confirmation, lie included",
            info.name
        );
        let listing = admin_orders(&info);
        assert_eq!(listing.len(), 1, "{}", info.name);
        assert_eq!(listing[0].order_id, order_id);
        assert_eq!(
            (listing[0].total_minor, listing[0].currency.as_str()),
            (booked, info.currency.as_str()),
            "{}: the listing shows what was booked",
            info.name
        );
    }
    sim.stop();
}

#[test]
fn stalled_cancel_takes_effect_when_it_answers_on_every_protocol() {
    use bookbroker_protocols::admin::AdminOrderStatus;
    let sim = RunningSim::start(
        one_per_protocol("cancel_stall_rate = 1.0\ncancel_stall_ms = 700"),
        LOCALHOST,
    )
    .expect("start");
    let isbn = sim.isbns()[2].clone();
    for info in sim.sellers().to_vec() {
        let offer = first_offer(&info, &isbn);
        let (order_id, _) = confirmation(&info, &send_order(&info, &offer, "stall-1"));
        let started = std::time::Instant::now();
        let cancel = {
            let (info, order_id) = (info.clone(), order_id.clone());
            std::thread::spawn(move || send_cancel(&info, &order_id))
        };
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            admin_orders(&info)[0].status,
            AdminOrderStatus::Placed,
            "{}: not cancelled before the answer",
            info.name
        );
        let answer = cancel.join().expect("cancel");
        assert!(started.elapsed() >= Duration::from_millis(700));
        let cancelled = match info.protocol {
            Protocol::Json => {
                format!("200 {{\"order_id\":\"{order_id}\",\"status\":\"cancelled\"}}")
            }
            Protocol::Xml => "200 <cancelResult><status>ok</status></cancelResult>".to_string(),
            Protocol::Line => "CANCELLED c".to_string(),
        };
        assert_eq!(answer, cancelled, "{}", info.name);
        assert_eq!(admin_orders(&info)[0].status, AdminOrderStatus::Cancelled);
        assert_eq!(send_cancel(&info, &order_id), cancelled, "a repeat is fine");
        assert_eq!(quantity_of(&info, &isbn, &offer.offer_id), offer.quantity);
    }
    sim.stop();
}

/// The quoted quantity of one offer.
fn quantity_of(info: &SellerInfo, isbn: &str, offer_id: &str) -> u32 {
    let offer = first_offer(info, isbn);
    assert_eq!(offer.offer_id, offer_id);
    offer.quantity
}

// ---- partner behaviours: the payment provider ---------------------------------------

#[test]
fn payment_faults_are_drawn_for_the_listed_calls_only() {
    use super::payment::PaymentFault;
    let off = PaymentState::default();
    assert!((0..100).all(|_| off.draw_fault(&PaymentOp::Authorize) == PaymentFault::None));
    let p = PaymentState::new(&PaymentSpec {
        error_rate: 0.25,
        reset_rate: 0.25,
        fault_after_effect: 0.5,
        ..PaymentSpec::default()
    });
    assert!((0..100).all(|_| p.draw_fault(&PaymentOp::Refund("ch_1".into())) == PaymentFault::None));
    let (mut errors, mut resets, mut after, mut before) = (0, 0, 0, 0);
    for _ in 0..4000 {
        let f = p.draw_fault(&PaymentOp::Capture("auth_1".into()));
        match f {
            PaymentFault::Error { .. } => errors += 1,
            PaymentFault::Reset { .. } => resets += 1,
            PaymentFault::None => continue,
        }
        if f.before_effect() {
            before += 1;
        } else {
            after += 1;
        }
    }
    assert!((800..1200).contains(&errors), "{errors}");
    assert!((800..1200).contains(&resets), "{resets}");
    assert!((700..1300).contains(&before) && (700..1300).contains(&after));
}

fn authorize_request(key: &str, amount: i64) -> bookbroker_protocols::http::HttpRequest {
    use bookbroker_protocols::payment::{encode_authorize, AuthorizeRequest};
    encode_authorize(
        &AuthorizeRequest {
            payment_token: "tok_ok_4242".into(),
            amount: Money::new(amount, Currency::USD),
        },
        key,
    )
}

fn ledger_of(sim: &RunningSim) -> bookbroker_protocols::payment::Ledger {
    use bookbroker_protocols::payment;
    let started = std::time::Instant::now();
    let (st, body) = send_http(&sim.payment_url(), &payment::encode_ledger());
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "the ledger is never slow"
    );
    payment::decode_ledger(reply(st, &body)).expect("ledger")
}

fn payment_sim(payment: &str) -> RunningSim {
    RunningSim::start(
        partner_scenario(&[("js", "json", "USD", "")], payment),
        LOCALHOST,
    )
    .expect("start")
}

#[test]
fn payment_slow_first_attempt_is_in_use_and_takes_effect_when_it_answers() {
    use bookbroker_protocols::payment::encode_capture;
    let sim = payment_sim("slow_first_rate = 1.0\nslow_first_ms = 800");
    let url = sim.payment_url();
    let in_use = (409, "{\"error\":\"idempotency_key_in_use\"}".to_string());

    let auth = authorize_request("a1", 2000);
    let first = {
        let (url, auth) = (url.clone(), auth.clone());
        std::thread::spawn(move || send_http(&url, &auth))
    };
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        ledger_of(&sim).entries.is_empty(),
        "no effect before it answers"
    );
    assert_eq!(send_http(&url, &auth), in_use);
    let (st, body) = first.join().expect("first");
    assert_eq!(st, 201, "{body}");
    assert_eq!(send_http(&url, &auth), (st, body.clone()), "stored result");
    let id = serde_json::from_str::<serde_json::Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();

    let capture = encode_capture(&id, 1500, "c1");
    let first = {
        let (url, capture) = (url.clone(), capture.clone());
        std::thread::spawn(move || send_http(&url, &capture))
    };
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(send_http(&url, &capture), in_use);
    assert_eq!(
        ledger_of(&sim).entries.len(),
        1,
        "the capture has not happened"
    );
    let captured = first.join().expect("first capture");
    assert_eq!(captured.0, 200, "{}", captured.1);
    assert_eq!(send_http(&url, &capture), captured);
    let kinds: Vec<LedgerKind> = ledger_of(&sim).entries.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![LedgerKind::Authorization, LedgerKind::Capture]);
    sim.stop();
}

#[test]
fn payment_errors_before_the_effect_change_nothing() {
    use bookbroker_protocols::payment::encode_capture;
    let sim = payment_sim("error_rate = 1.0\nfault_after_effect = 0.0\nfaults_on = [\"capture\"]");
    let url = sim.payment_url();
    let (st, body) = send_http(&url, &authorize_request("a1", 2000));
    assert_eq!(st, 201, "authorize is not in faults_on");
    let id = serde_json::from_str::<serde_json::Value>(&body).expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    for _ in 0..3 {
        assert_eq!(
            send_http(&url, &encode_capture(&id, 1500, "c1")),
            (500, "{\"error\":\"internal\"}".to_string())
        );
    }
    let kinds: Vec<LedgerKind> = ledger_of(&sim).entries.iter().map(|e| e.kind).collect();
    assert_eq!(kinds, vec![LedgerKind::Authorization]);
    let (st, _) = send_http(
        &url,
        &bookbroker_protocols::http::HttpRequest {
            method: "GET",
            path_and_query: "/admin/stats".into(),
            headers: Vec::new(),
            body: Vec::new(),
        },
    );
    assert_eq!(st, 200, "stats are never faulty");
    sim.stop();
}

#[test]
fn payment_errors_after_the_effect_store_the_result_for_repeats() {
    let sim = payment_sim("error_rate = 0.5\nfault_after_effect = 1.0");
    let url = sim.payment_url();
    // Half the requests fail: find a key whose first attempt failed.
    let key = (0..60)
        .map(|i| format!("a{i}"))
        .find(|key| send_http(&url, &authorize_request(key, 2000)).0 == 500)
        .expect("some attempt failed");
    let ledger = ledger_of(&sim);
    let entry = ledger
        .entries
        .iter()
        .find(|e| e.idempotency_key == key)
        .expect("the failed authorization took effect");
    let answer = (0..60)
        .map(|_| send_http(&url, &authorize_request(&key, 2000)))
        .find(|(st, _)| *st != 500)
        .expect("some repeat answered");
    assert_eq!(answer.0, 201, "{}", answer.1);
    let v: serde_json::Value = serde_json::from_str(&answer.1).expect("json");
    assert_eq!(
        v["id"].as_str(),
        Some(entry.id.as_str()),
        "the stored result"
    );
    let same_key = ledger_of(&sim)
        .entries
        .iter()
        .filter(|e| e.idempotency_key == key)
        .count();
    assert_eq!(same_key, 1, "once");
    sim.stop();
}

#[test]
fn payment_reset_after_the_effect_leaves_no_answer_but_the_capture() {
    use bookbroker_protocols::payment::encode_capture;
    let sim = payment_sim("reset_rate = 0.5\nfault_after_effect = 1.0\nfaults_on = [\"capture\"]");
    let url = sim.payment_url();
    let mut reset = None;
    for i in 0..60 {
        let (st, body) = send_http(&url, &authorize_request(&format!("a{i}"), 2000));
        assert_eq!(st, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        let id = v["id"].as_str().expect("id").to_string();
        let key = format!("c{i}");
        match try_send_http(&url, &encode_capture(&id, 1234, &key)) {
            Ok((200, _)) => continue,
            Ok(other) => panic!("{other:?}"),
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
                reset = Some((id, key));
                break;
            }
        }
    }
    let (id, key) = reset.expect("some capture was reset");
    let ledger = ledger_of(&sim);
    let capture = ledger
        .entries
        .iter()
        .find(|e| e.idempotency_key == key)
        .expect("the capture happened");
    assert_eq!(
        (
            capture.kind,
            capture.amount,
            capture.authorization_id.as_str()
        ),
        (LedgerKind::Capture, 1234, id.as_str())
    );
    let answer = (0..60)
        .find_map(|_| try_send_http(&url, &encode_capture(&id, 1234, &key)).ok())
        .expect("some repeat answered");
    assert_eq!(answer.0, 200, "{}", answer.1);
    let v: serde_json::Value = serde_json::from_str(&answer.1).expect("json");
    assert_eq!(
        (v["id"].as_str(), v["status"].as_str(), v["amount"].as_i64()),
        (Some(capture.id.as_str()), Some("captured"), Some(1234))
    );
    let captures = ledger_of(&sim)
        .entries
        .iter()
        .filter(|e| e.kind == LedgerKind::Capture && e.authorization_id == id)
        .count();
    assert_eq!(captures, 1);
    sim.stop();
}
