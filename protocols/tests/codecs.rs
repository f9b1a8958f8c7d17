//! Client encoders against server decoders and server encoders against client decoders,
//! for every HTTP protocol; decoders must be total on any bytes.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test or benchmark: panicking is how it fails

mod common;

use bookbroker_protocols::admin::{self, AdminOrder, AdminOrderStatus, AdminOrders};
use bookbroker_protocols::http::{HttpRequest, Reply};
use bookbroker_protocols::offer::{
    CancelOutcome, Condition, OrderOutcome, OrderRequest, QuoteQuery,
};
use bookbroker_protocols::payment::{
    self, AuthorizeOutcome, AuthorizeRequest, Ledger, LedgerEntry, LedgerKind, SettleOutcome,
};
use bookbroker_protocols::{json_seller, xml_seller};
use bookbroker_protocols::{Currency, DecodeError, Isbn, Money, RequestError, SellerOffer};
use common::{fixture_bytes, parse, RawResponse};
use proptest::prelude::*;

fn currency() -> impl Strategy<Value = Currency> {
    let all: Vec<Currency> = Currency::all().collect();
    proptest::sample::select(all)
}

fn isbn() -> impl Strategy<Value = Isbn> {
    (prop_oneof![Just("978"), Just("979")], "[0-9]{9}")
        .prop_map(|(p, d)| Isbn::from_prefix12(&format!("{p}{d}")).unwrap())
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![Just(Condition::New), Just(Condition::Used)]
}

/// Any string at all (JSON carries every one).
fn any_text() -> impl Strategy<Value = String> + Clone {
    any::<String>()
}

/// Text an XML document can carry, with no whitespace at the ends (trimmed on decode).
fn xml_text() -> impl Strategy<Value = String> + Clone {
    "\\PC{0,30}".prop_map(|s| s.trim().to_string())
}

fn offer_with(text: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = SellerOffer> {
    (
        text.clone(),
        isbn(),
        text,
        condition(),
        0i64..=i64::MAX,
        0i64..=i64::MAX,
        currency(),
        any::<u32>(),
    )
        .prop_map(
            |(offer_id, isbn, title, condition, price, shipping, currency, quantity)| SellerOffer {
                offer_id,
                isbn,
                title,
                condition,
                price,
                shipping,
                currency,
                quantity,
            },
        )
}

fn money() -> impl Strategy<Value = Money> {
    (0i64..=i64::MAX, currency()).prop_map(|(m, c)| Money::new(m, c))
}

/// An idempotency key or token as the engine sends them: visible ASCII.
fn key() -> impl Strategy<Value = String> {
    "[!-~]{1,40}"
}

fn outcome() -> impl Strategy<Value = OrderOutcome> {
    prop_oneof![
        ("[!-~]{1,20}", money())
            .prop_map(|(order_id, total)| OrderOutcome::Ordered { order_id, total }),
        Just(OrderOutcome::SoldOut),
        money().prop_map(|total| OrderOutcome::PriceChanged { total }),
    ]
}

fn reply(resp: &RawResponse) -> Reply<'_> {
    resp.reply()
}

fn split(req: &HttpRequest) -> (&str, &str) {
    req.path_and_query
        .split_once('?')
        .unwrap_or((req.path_and_query.as_str(), ""))
}

fn header<'r>(req: &'r HttpRequest, name: &str) -> Option<&'r str> {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn query() -> impl Strategy<Value = QuoteQuery> {
    prop_oneof![
        isbn().prop_map(QuoteQuery::Isbn),
        any_text()
            .prop_filter("non-blank", |t| !t.trim().is_empty())
            .prop_map(QuoteQuery::Title),
    ]
}

proptest! {
    #[test]
    fn json_quote_round_trip(offers in proptest::collection::vec(offer_with(any_text()), 0..8)) {
        let resp = json_seller::server::encode_quote(&offers);
        prop_assert_eq!(resp.status, 200);
        let raw = RawResponse::from_encoded(&resp);
        prop_assert_eq!(json_seller::decode_quote(reply(&raw)).unwrap(), offers);
    }

    #[test]
    fn xml_quote_round_trip(offers in proptest::collection::vec(offer_with(xml_text()), 0..8)) {
        let resp = xml_seller::server::encode_quote(&offers);
        let raw = RawResponse::from_encoded(&resp);
        prop_assert_eq!(xml_seller::decode_quote(reply(&raw)).unwrap(), offers);
    }

    #[test]
    fn json_query_round_trip(q in query()) {
        let req = json_seller::encode_quote(&q);
        let (path, query) = split(&req);
        prop_assert_eq!(json_seller::server::route(req.method, path), json_seller::server::Route::Quote);
        prop_assert_eq!(json_seller::server::decode_quote(query).unwrap(), q);
    }

    #[test]
    fn xml_query_round_trip(q in query()) {
        let req = xml_seller::encode_quote(&q);
        let (path, query) = split(&req);
        prop_assert_eq!(xml_seller::server::route(req.method, path), xml_seller::server::Route::Quote);
        prop_assert_eq!(xml_seller::server::decode_quote(query).unwrap(), q);
    }

    #[test]
    fn json_order_round_trip(offer_id in any_text().prop_filter("non-empty", |s| !s.is_empty()), total in money(), key in key(), ship in any_text(), out in outcome()) {
        let order = OrderRequest { offer_id, expected_total: total, idempotency_key: key, shipping_token: ship };
        let req = json_seller::encode_order(&order);
        prop_assert_eq!(json_seller::server::route(req.method, &req.path_and_query), json_seller::server::Route::Order);
        let back = json_seller::server::decode_order(header(&req, "idempotency-key"), &req.body).unwrap();
        prop_assert_eq!(back, order);
        let raw = RawResponse::from_encoded(&json_seller::server::encode_order(&out));
        prop_assert_eq!(json_seller::decode_order(reply(&raw)).unwrap(), out);
    }

    #[test]
    fn xml_order_round_trip(offer_id in xml_text().prop_filter("non-empty", |s| !s.is_empty()), total in money(), key in key(), ship in xml_text(), out in outcome()) {
        let order = OrderRequest { offer_id, expected_total: total, idempotency_key: key, shipping_token: ship };
        let req = xml_seller::encode_order(&order);
        prop_assert_eq!(xml_seller::server::route(req.method, &req.path_and_query), xml_seller::server::Route::Order);
        let back = xml_seller::server::decode_order(&req.body, Currency::USD).unwrap();
        prop_assert_eq!(back, order);
        let raw = RawResponse::from_encoded(&xml_seller::server::encode_order(&out));
        prop_assert_eq!(xml_seller::decode_order(reply(&raw)).unwrap(), out);
    }

    #[test]
    fn cancel_round_trips(id in any_text().prop_filter("non-empty", |s| !s.is_empty()), xid in xml_text().prop_filter("non-empty", |s| !s.is_empty())) {
        let req = json_seller::encode_cancel(&id);
        prop_assert_eq!(json_seller::server::route(req.method, &req.path_and_query), json_seller::server::Route::Cancel(id.clone()));
        let raw = RawResponse::from_encoded(&json_seller::server::encode_cancel(&id));
        prop_assert_eq!(json_seller::decode_cancel(reply(&raw)).unwrap(), CancelOutcome::Cancelled);

        let req = xml_seller::encode_cancel(&xid);
        prop_assert_eq!(xml_seller::server::route(req.method, &req.path_and_query), xml_seller::server::Route::Cancel);
        prop_assert_eq!(xml_seller::server::decode_cancel(&req.body).unwrap(), xid);
        let raw = RawResponse::from_encoded(&xml_seller::server::encode_cancel());
        prop_assert_eq!(xml_seller::decode_cancel(reply(&raw)).unwrap(), CancelOutcome::Cancelled);
    }

    #[test]
    fn payment_round_trips(token in key(), amount in 1i64..=i64::MAX, cur in currency(), id in any_text().prop_filter("non-empty", |s| !s.is_empty()), key in key(), capture in 0i64..=i64::MAX) {
        use payment::server::{self as srv, Route};
        let auth = AuthorizeRequest { payment_token: token, amount: Money::new(amount, cur) };
        let req = payment::encode_authorize(&auth, &key);
        prop_assert_eq!(header(&req, "idempotency-key"), Some(key.as_str()));
        prop_assert_eq!(srv::route(req.method, &req.path_and_query), Route::Authorize);
        prop_assert_eq!(srv::decode_authorize(&req.body).unwrap(), auth);

        let req = payment::encode_capture(&id, capture, &key);
        prop_assert_eq!(srv::route(req.method, &req.path_and_query), Route::Capture(id.clone()));
        prop_assert_eq!(srv::decode_capture(&req.body).unwrap(), capture);
        let req = payment::encode_void(&id, &key);
        prop_assert_eq!(srv::route(req.method, &req.path_and_query), Route::Void(id.clone()));
        let req = payment::encode_refund(&id, &key);
        prop_assert_eq!(srv::route(req.method, &req.path_and_query), Route::Refund(id.clone()));

        for out in [
            AuthorizeOutcome::Authorized { id: id.clone(), amount: Money::new(amount, cur) },
            AuthorizeOutcome::Declined { error: "card_declined".into() },
        ] {
            let raw = RawResponse::from_encoded(&srv::encode_authorize(&out));
            prop_assert_eq!(payment::decode_authorize(reply(&raw)).unwrap(), out);
        }
        for out in [
            SettleOutcome::Done { id: id.clone(), amount: Some(capture) },
            SettleOutcome::Done { id: id.clone(), amount: None },
            SettleOutcome::Refused { error: "already_captured".into() },
        ] {
            let raw = RawResponse::from_encoded(&srv::encode_settle(&out, "captured"));
            prop_assert_eq!(payment::decode_settle(reply(&raw)).unwrap(), out);
        }
    }

    #[test]
    fn client_decoders_are_total(status in prop_oneof![Just(200u16), Just(201), Just(402), Just(409), Just(429), Just(503), 100u16..600], retry in proptest::option::of("\\PC{0,12}"), body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let reply = Reply { status, retry_after: retry.as_deref(), body: &body };
        let _ = json_seller::decode_quote(reply);
        let _ = json_seller::decode_order(reply);
        let _ = json_seller::decode_cancel(reply);
        let _ = xml_seller::decode_quote(reply);
        let _ = xml_seller::decode_order(reply);
        let _ = xml_seller::decode_cancel(reply);
        let _ = payment::decode_authorize(reply);
        let _ = payment::decode_settle(reply);
        let _ = payment::decode_ledger(reply);
        let _ = admin::decode_response(reply);
    }

    #[test]
    fn server_decoders_are_total(body in proptest::collection::vec(any::<u8>(), 0..200), text in "\\PC{0,60}", key in proptest::option::of("\\PC{0,10}")) {
        let _ = json_seller::server::decode_order(key.as_deref(), &body);
        let _ = xml_seller::server::decode_order(&body, Currency::EUR);
        let _ = xml_seller::server::decode_cancel(&body);
        let _ = payment::server::decode_authorize(&body);
        let _ = payment::server::decode_capture(&body);
        let _ = json_seller::server::decode_quote(&text);
        let _ = xml_seller::server::decode_quote(&text);
        for method in ["GET", "POST", "PUT"] {
            let _ = json_seller::server::route(method, &text);
            let _ = xml_seller::server::route(method, &text);
            let _ = payment::server::route(method, &text);
        }
    }

    /// Valid answers with bytes flipped, cut or spliced reach deeper into the parsers than
    /// random bytes do.
    #[test]
    fn decoders_total_on_mutated_fixtures(
        fixture in proptest::sample::select(FIXTURES.to_vec()),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let raw = parse(&fixture_bytes(fixture));
        let mut body = raw.body.clone();
        for (at, byte) in edits {
            if !body.is_empty() {
                let i = at.index(body.len());
                body[i] = byte;
            }
        }
        for body in [&body[..], &body[..cut.index(body.len() + 1)]] {
            for status in [200, 201, 402, 409, raw.status] {
                let reply = Reply { status, retry_after: raw.header("retry-after"), body };
                let _ = json_seller::decode_quote(reply);
                let _ = json_seller::decode_order(reply);
                let _ = json_seller::decode_cancel(reply);
                let _ = xml_seller::decode_quote(reply);
                let _ = xml_seller::decode_order(reply);
                let _ = xml_seller::decode_cancel(reply);
                let _ = payment::decode_authorize(reply);
                let _ = payment::decode_settle(reply);
            }
            let _ = json_seller::server::decode_order(Some("k"), body);
            let _ = xml_seller::server::decode_order(body, Currency::EUR);
            let _ = xml_seller::server::decode_cancel(body);
            let _ = payment::server::decode_authorize(body);
        }
    }
}

const FIXTURES: &[&str] = &[
    "json_quote_ok.http",
    "json_quote_chunked.http",
    "json_order_created.http",
    "json_order_price_changed.http",
    "json_cancel_ok.http",
    "xml_quote_ok.http",
    "xml_quote_chunked.http",
    "xml_order_ok.http",
    "xml_order_pricechanged.http",
    "xml_cancel_ok.http",
    "payment_authorize_created.http",
    "payment_capture_ok.http",
];

#[test]
fn server_encoders_match_the_design() {
    let offer = SellerOffer {
        offer_id: "o-1".into(),
        isbn: Isbn::parse("9780131103627").unwrap(),
        title: "C & <Unix>".into(),
        condition: Condition::New,
        price: 3999,
        shipping: 399,
        currency: Currency::USD,
        quantity: 3,
    };
    let json = json_seller::server::encode_quote(std::slice::from_ref(&offer));
    assert_eq!(json.content_type, "application/json");
    assert_eq!(
        String::from_utf8(json.body).unwrap(),
        r#"{"offers":[{"offer_id":"o-1","isbn":"9780131103627","title":"C & <Unix>","condition":"new","price":{"value":"39.99","currency":"USD"},"shipping":{"value":"3.99","currency":"USD"},"quantity":3}]}"#
    );
    let xml = xml_seller::server::encode_quote(&[SellerOffer {
        currency: Currency::EUR,
        condition: Condition::Used,
        price: 1200,
        shipping: 350,
        quantity: 2,
        offer_id: "b-9".into(),
        ..offer.clone()
    }]);
    assert_eq!(xml.content_type, "application/xml");
    assert_eq!(
        String::from_utf8(xml.body).unwrap(),
        "<searchResults><resultCount>1</resultCount><Book><bookId>b-9</bookId>\
         <isbn13>9780131103627</isbn13><title>C &amp; &lt;Unix&gt;</title>\
         <itemCondition>Used</itemCondition><quantity>2</quantity>\
         <vendorCurrency>EUR</vendorCurrency><listingPrice>12.00</listingPrice>\
         <firstBookShipCost>3.50</firstBookShipCost></Book></searchResults>"
    );
    let ordered = OrderOutcome::Ordered {
        order_id: "so-1".into(),
        total: Money::new(4398, Currency::USD),
    };
    let r = json_seller::server::encode_order(&ordered);
    assert_eq!(
        (r.status, String::from_utf8(r.body).unwrap().as_str()),
        (
            201,
            r#"{"order_id":"so-1","total":{"value":"43.98","currency":"USD"}}"#
        )
    );
    let r = json_seller::server::encode_order(&OrderOutcome::SoldOut);
    assert_eq!(
        (r.status, String::from_utf8(r.body).unwrap().as_str()),
        (409, r#"{"error":"sold_out"}"#)
    );
    let r = json_seller::server::encode_order(&OrderOutcome::PriceChanged {
        total: Money::new(4598, Currency::USD),
    });
    assert_eq!(
        (r.status, String::from_utf8(r.body).unwrap().as_str()),
        (
            409,
            r#"{"error":"price_changed","total":{"value":"45.98","currency":"USD"}}"#
        )
    );
    let r = json_seller::server::encode_cancel("so-1");
    assert_eq!(
        (r.status, String::from_utf8(r.body).unwrap().as_str()),
        (200, r#"{"order_id":"so-1","status":"cancelled"}"#)
    );
    let r = json_seller::server::encode_error(429, "rate_limited", Some(2));
    assert_eq!(r.status, 429);
    assert_eq!(r.headers, vec![("retry-after", "2".to_string())]);
    let raw = RawResponse::from_encoded(&r);
    assert_eq!(
        json_seller::decode_quote(raw.reply()).unwrap_err(),
        DecodeError::Busy {
            retry_after_ms: Some(2000)
        }
    );

    let r = xml_seller::server::encode_order(&OrderOutcome::Ordered {
        order_id: "x-4".into(),
        total: Money::new(1550, Currency::EUR),
    });
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        r#"<orderResult><status>ok</status><orderId>x-4</orderId><total currency="EUR">15.50</total></orderResult>"#
    );
    let r = xml_seller::server::encode_cancel();
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        "<cancelResult><status>ok</status></cancelResult>"
    );
    let r = xml_seller::server::encode_error(503, "busy", Some(1));
    let raw = RawResponse::from_encoded(&r);
    assert_eq!(
        xml_seller::decode_quote(raw.reply()).unwrap_err(),
        DecodeError::Busy {
            retry_after_ms: Some(1000)
        }
    );

    let r = payment::server::encode_authorize(&AuthorizeOutcome::Authorized {
        id: "auth_1".into(),
        amount: Money::new(2000, Currency::USD),
    });
    assert_eq!(
        (r.status, String::from_utf8(r.body).unwrap().as_str()),
        (
            201,
            r#"{"id":"auth_1","status":"authorized","amount":2000,"currency":"USD"}"#
        )
    );
    let r = payment::server::encode_authorize(&AuthorizeOutcome::Declined {
        error: "card_declined".into(),
    });
    assert_eq!(
        (r.status, String::from_utf8(r.body).unwrap().as_str()),
        (402, r#"{"error":"card_declined"}"#)
    );
    let r = payment::server::encode_settle(
        &SettleOutcome::Done {
            id: "ch_1".into(),
            amount: Some(1649),
        },
        "captured",
    );
    assert_eq!(
        (r.status, String::from_utf8(r.body).unwrap().as_str()),
        (200, r#"{"id":"ch_1","status":"captured","amount":1649}"#)
    );
    let r = payment::server::encode_settle(
        &SettleOutcome::Refused {
            error: "already_captured".into(),
        },
        "captured",
    );
    assert_eq!(
        (r.status, String::from_utf8(r.body).unwrap().as_str()),
        (409, r#"{"error":"already_captured"}"#)
    );
}

#[test]
fn client_encoders_match_the_design() {
    let isbn = Isbn::parse("9780131103627").unwrap();
    assert_eq!(
        json_seller::encode_quote(&QuoteQuery::Isbn(isbn)).path_and_query,
        "/v1/offers?isbn=9780131103627"
    );
    assert_eq!(
        json_seller::encode_quote(&QuoteQuery::Title("C & C++".into())).path_and_query,
        "/v1/offers?q=C%20%26%20C%2B%2B"
    );
    assert_eq!(
        xml_seller::encode_quote(&QuoteQuery::Isbn(isbn)).path_and_query,
        "/search?isbn=9780131103627"
    );
    assert_eq!(
        xml_seller::encode_quote(&QuoteQuery::Title("Les Misérables".into())).path_and_query,
        "/search?title=Les%20Mis%C3%A9rables"
    );
    let order = OrderRequest {
        offer_id: "o-1".into(),
        expected_total: Money::new(4398, Currency::USD),
        idempotency_key: "KEY".into(),
        shipping_token: "ship_home".into(),
    };
    let req = json_seller::encode_order(&order);
    assert_eq!(
        (req.method, req.path_and_query.as_str()),
        ("POST", "/v1/orders")
    );
    assert_eq!(header(&req, "Idempotency-Key"), Some("KEY"));
    assert_eq!(
        String::from_utf8(req.body).unwrap(),
        r#"{"offer_id":"o-1","expected_total":{"value":"43.98","currency":"USD"},"shipping_token":"ship_home"}"#
    );
    let req = xml_seller::encode_order(&OrderRequest {
        expected_total: Money::new(1550, Currency::EUR),
        offer_id: "b-9".into(),
        ..order
    });
    assert_eq!(
        String::from_utf8(req.body).unwrap(),
        r#"<order><bookId>b-9</bookId><expectedTotal currency="EUR">15.50</expectedTotal><requestId>KEY</requestId><shipTo>ship_home</shipTo></order>"#
    );
    assert_eq!(
        json_seller::encode_cancel("so/1").path_and_query,
        "/v1/orders/so%2F1/cancel"
    );
    assert_eq!(
        String::from_utf8(xml_seller::encode_cancel("x-4").body).unwrap(),
        "<cancel><orderId>x-4</orderId></cancel>"
    );
    let req = payment::encode_authorize(
        &AuthorizeRequest {
            payment_token: "tok_ok_4242".into(),
            amount: Money::new(2000, Currency::USD),
        },
        "k1",
    );
    assert_eq!(
        String::from_utf8(req.body).unwrap(),
        r#"{"payment_token":"tok_ok_4242","amount":2000,"currency":"USD"}"#
    );
    assert_eq!(
        payment::encode_capture("auth_1", 1649, "k2").path_and_query,
        "/v1/authorizations/auth_1/capture"
    );
    assert_eq!(
        String::from_utf8(payment::encode_capture("auth_1", 1649, "k2").body).unwrap(),
        r#"{"amount":1649}"#
    );
    assert_eq!(
        payment::encode_void("auth_1", "k3").path_and_query,
        "/v1/authorizations/auth_1/void"
    );
    assert_eq!(
        payment::encode_refund("ch_1", "k4").path_and_query,
        "/v1/charges/ch_1/refund"
    );
}

#[test]
fn server_decoders_reject_bad_requests() {
    use json_seller::server as js;
    use xml_seller::server as xs;
    assert_eq!(
        js::decode_quote(""),
        Err(RequestError::Missing("isbn or q"))
    );
    assert!(matches!(
        js::decode_quote("isbn=9780131103628"),
        Err(RequestError::Invalid { field: "isbn", .. })
    ));
    assert!(matches!(
        js::decode_quote("q=%zz"),
        Err(RequestError::Malformed(_))
    ));
    assert!(matches!(
        js::decode_quote("q=+"),
        Err(RequestError::Invalid { field: "q", .. })
    ));
    assert_eq!(
        js::decode_quote("isbn=0-13-110362-8&limit=5").unwrap(),
        QuoteQuery::Isbn(Isbn::parse("9780131103627").unwrap())
    );
    assert_eq!(
        xs::decode_quote("title=Le+Petit+Prince").unwrap(),
        QuoteQuery::Title("Le Petit Prince".into())
    );
    let body = br#"{"offer_id":"o-1","expected_total":{"value":"43.98","currency":"USD"},"shipping_token":"s"}"#;
    assert_eq!(
        js::decode_order(None, body),
        Err(RequestError::Missing("Idempotency-Key"))
    );
    assert_eq!(
        js::decode_order(Some(" "), body),
        Err(RequestError::Missing("Idempotency-Key"))
    );
    assert!(js::decode_order(Some("k"), body).is_ok());
    assert!(matches!(
        js::decode_order(Some("k"), b"{"),
        Err(RequestError::Malformed(_))
    ));
    assert!(matches!(
        js::decode_order(Some("k"), b""),
        Err(RequestError::Malformed(_))
    ));
    assert!(matches!(
        js::decode_order(
            Some("k"),
            br#"{"offer_id":"o","expected_total":{"value":"4.398","currency":"USD"}}"#
        ),
        Err(RequestError::Invalid {
            field: "expected_total",
            ..
        })
    ));
    assert!(matches!(
        js::decode_order(
            Some("k"),
            br#"{"offer_id":"o","expected_total":{"value":"4","currency":"XYZ"}}"#
        ),
        Err(RequestError::Invalid {
            field: "expected_total",
            ..
        })
    ));
    assert_eq!(
        js::decode_order(
            Some("k"),
            br#"{"offer_id":"","expected_total":{"value":"4","currency":"USD"}}"#
        ),
        Err(RequestError::Missing("offer_id"))
    );
    // XML: the attribute is optional (the seller's currency applies), the rest is not.
    let order = xs::decode_order(b"<order><bookId>b-9</bookId><expectedTotal>15.50</expectedTotal><requestId>K</requestId></order>", Currency::EUR).unwrap();
    assert_eq!(order.expected_total, Money::new(1550, Currency::EUR));
    assert_eq!(order.shipping_token, "");
    assert_eq!(
        xs::decode_order(
            b"<order><expectedTotal>1</expectedTotal><requestId>K</requestId></order>",
            Currency::EUR
        ),
        Err(RequestError::Missing("bookId"))
    );
    assert_eq!(
        xs::decode_order(
            b"<order><bookId>b</bookId><requestId>K</requestId></order>",
            Currency::EUR
        ),
        Err(RequestError::Missing("expectedTotal"))
    );
    assert_eq!(
        xs::decode_order(
            b"<order><bookId>b</bookId><expectedTotal>1</expectedTotal></order>",
            Currency::EUR
        ),
        Err(RequestError::Missing("requestId"))
    );
    assert!(matches!(
        xs::decode_order(b"<cancel><orderId>x</orderId></cancel>", Currency::EUR),
        Err(RequestError::Malformed(_))
    ));
    assert!(matches!(
        xs::decode_order(b"<order><bookId>b</bookId>", Currency::EUR),
        Err(RequestError::Malformed(_))
    ));
    assert!(matches!(
        xs::decode_order(b"<order/><order/>", Currency::EUR),
        Err(RequestError::Malformed(_))
    ));
    assert_eq!(
        xs::decode_cancel(b"<cancel><orderId> x-4 </orderId></cancel>").unwrap(),
        "x-4"
    );
    assert_eq!(
        xs::decode_cancel(b"<cancel/>"),
        Err(RequestError::Missing("orderId"))
    );
    let deep = "<a>".repeat(10_000);
    assert!(matches!(
        xs::decode_cancel(deep.as_bytes()),
        Err(RequestError::Malformed(_))
    ));
    // Payment.
    use payment::server as ps;
    assert_eq!(
        ps::decode_authorize(br#"{"payment_token":"","amount":1,"currency":"USD"}"#),
        Err(RequestError::Missing("payment_token"))
    );
    assert!(matches!(
        ps::decode_authorize(br#"{"payment_token":"t","amount":0,"currency":"USD"}"#),
        Err(RequestError::Invalid {
            field: "amount",
            ..
        })
    ));
    assert!(matches!(
        ps::decode_authorize(br#"{"payment_token":"t","amount":1,"currency":"usd"}"#),
        Err(RequestError::Malformed(_))
    ));
    assert!(matches!(
        ps::decode_authorize(br#"{"payment_token":"t","amount":1.5,"currency":"USD"}"#),
        Err(RequestError::Malformed(_))
    ));
    assert!(matches!(
        ps::decode_capture(br#"{"amount":-1}"#),
        Err(RequestError::Invalid { .. })
    ));
    assert!(matches!(
        ps::decode_capture(br#"{"amount":99999999999999999999}"#),
        Err(RequestError::Malformed(_))
    ));
    // Routes.
    assert_eq!(js::route("GET", "/v1/offers"), js::Route::Quote);
    assert_eq!(js::route("POST", "/v1/offers"), js::Route::NotFound);
    assert_eq!(js::route("POST", "/v1/orders//cancel"), js::Route::NotFound);
    assert_eq!(
        js::route("POST", "/v1/orders/a/b/cancel"),
        js::Route::NotFound
    );
    assert_eq!(
        js::route("POST", "/v1/orders/so-1/cancel"),
        js::Route::Cancel("so-1".into())
    );
    assert_eq!(js::route("GET", "/admin/orders"), js::Route::AdminOrders);
    assert_eq!(xs::route("GET", "/admin/orders"), xs::Route::AdminOrders);
    assert_eq!(xs::route("POST", "/order/cancel"), xs::Route::Cancel);
    assert_eq!(xs::route("GET", "/order"), xs::Route::NotFound);
    assert_eq!(ps::route("GET", "/v1/ledger"), ps::Route::Ledger);
    assert_eq!(
        ps::route("POST", "/v1/authorizations/x/refund"),
        ps::Route::NotFound
    );
}

#[test]
fn ledger_and_admin_round_trip() {
    let ledger = Ledger {
        entries: vec![LedgerEntry {
            kind: LedgerKind::Capture,
            id: "ch_1".into(),
            authorization_id: "auth_1".into(),
            amount: 1649,
            currency: "USD".into(),
            idempotency_key: "k".into(),
        }],
    };
    let raw = RawResponse::from_encoded(&payment::server::encode_ledger(&ledger));
    assert_eq!(payment::decode_ledger(raw.reply()).unwrap(), ledger);
    assert_eq!(payment::encode_ledger().path_and_query, "/v1/ledger");

    let orders = AdminOrders {
        seller: "harbor-books".into(),
        orders: vec![AdminOrder {
            order_id: "so-1".into(),
            offer_id: "o-1".into(),
            isbn: "9780131103627".into(),
            total_minor: 4398,
            currency: "USD".into(),
            status: AdminOrderStatus::Placed,
            idempotency_key: "k".into(),
        }],
    };
    let raw = RawResponse::from_encoded(&admin::encode_response(&orders));
    assert_eq!(admin::decode_response(raw.reply()).unwrap(), orders);
    assert_eq!(admin::encode_request().path_and_query, "/admin/orders");
    let mut out = Vec::new();
    admin::encode_line("adm", &orders.orders, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "ORDERREC adm\tso-1\to-1\t9780131103627\t4398\tUSD\tplaced\tk\nEND adm\n"
    );
}

/// Big answers decode in time linear in their size (a quadratic decoder would take
/// minutes here even in a debug build).
#[test]
fn large_bodies_decode_in_linear_time() {
    let offers: Vec<SellerOffer> = (0..20_000)
        .map(|i| SellerOffer {
            offer_id: format!("o-{i}"),
            isbn: Isbn::from_prefix12(&format!("978{:09}", i)).unwrap(),
            title: format!("Title number {i} — ünïcödé"),
            condition: if i % 2 == 0 {
                Condition::New
            } else {
                Condition::Used
            },
            price: 1000 + i,
            shipping: 399,
            currency: Currency::GBP,
            quantity: 1,
        })
        .collect();
    let start = std::time::Instant::now();
    let json = json_seller::server::encode_quote(&offers);
    let raw = RawResponse::from_encoded(&json);
    assert_eq!(
        json_seller::decode_quote(raw.reply()).unwrap().len(),
        offers.len()
    );
    let xml = xml_seller::server::encode_quote(&offers);
    let raw = RawResponse::from_encoded(&xml);
    assert_eq!(xml_seller::decode_quote(raw.reply()).unwrap(), offers);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}
