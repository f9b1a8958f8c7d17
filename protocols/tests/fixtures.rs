//! Recorded-looking seller and payment traffic fed through the client-side decoders.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test or benchmark: panicking is how it fails

mod common;

use bookbroker_protocols::admin::{AdminOrder, AdminOrderStatus};
use bookbroker_protocols::line::{LineBuffer, Request, Response};
use bookbroker_protocols::offer::{CancelOutcome, Condition, OrderOutcome, QuoteQuery};
use bookbroker_protocols::payment::{self, AuthorizeOutcome, SettleOutcome};
use bookbroker_protocols::{json_seller, xml_seller};
use bookbroker_protocols::{Currency, DecodeError, Isbn, Money, SellerOffer};
use common::{fixture, fixture_bytes};

fn isbn(s: &str) -> Isbn {
    Isbn::parse(s).unwrap()
}

#[allow(clippy::too_many_arguments)]
fn offer(
    id: &str,
    isbn13: &str,
    title: &str,
    condition: Condition,
    price: i64,
    shipping: i64,
    currency: Currency,
    quantity: u32,
) -> SellerOffer {
    SellerOffer {
        offer_id: id.into(),
        isbn: isbn(isbn13),
        title: title.into(),
        condition,
        price,
        shipping,
        currency,
        quantity,
    }
}

#[test]
fn helper_dechunks() {
    let raw = fixture("json_quote_chunked.http");
    assert_eq!(raw.status, 200);
    assert!(raw.header("Transfer-Encoding").is_some());
    assert!(std::str::from_utf8(&raw.body).is_ok());
    assert!(raw.body.starts_with(b"{\"offers\""));
    assert!(raw.body.ends_with(b"]}"));
}

#[test]
fn json_quote_pretty_unknown_fields_any_order() {
    let raw = fixture("json_quote_ok.http");
    let offers = json_seller::decode_quote(raw.reply()).unwrap();
    let usd = Currency::USD;
    assert_eq!(
        offers,
        vec![
            offer(
                "o-1",
                "9780131103627",
                "The C Programming Language",
                Condition::New,
                3999,
                399,
                usd,
                3
            ),
            offer(
                "o-2",
                "9780131103627",
                "Les Misérables — \"tome 1\"",
                Condition::Used,
                1250,
                0,
                usd,
                1
            ),
            offer(
                "o-3",
                "9780131103627",
                "Über die Programmiersprache C",
                Condition::New,
                4000,
                450,
                usd,
                12
            ),
            offer(
                "o-4",
                "9784274068560",
                "プログラミング言語C 日本",
                Condition::Used,
                2500,
                725,
                usd,
                2
            ),
        ]
    );
}

#[test]
fn json_quote_chunked() {
    let raw = fixture("json_quote_chunked.http");
    let offers = json_seller::decode_quote(raw.reply()).unwrap();
    let eur = Currency::EUR;
    assert_eq!(
        offers,
        vec![
            offer(
                "h-100",
                "9791090636071",
                "Le Petit Prince — édition illustrée",
                Condition::New,
                890,
                210,
                eur,
                5
            ),
            offer(
                "h-101",
                "9780804429573",
                "日本の本",
                Condition::Used,
                120000,
                0,
                eur,
                1
            ),
        ]
    );
}

#[test]
fn json_quote_empty() {
    let raw = fixture("json_quote_empty.http");
    assert_eq!(json_seller::decode_quote(raw.reply()).unwrap(), vec![]);
}

#[test]
fn json_quote_overload_and_failures() {
    let busy = |name| json_seller::decode_quote(fixture(name).reply()).unwrap_err();
    assert_eq!(
        busy("json_quote_429.http"),
        DecodeError::Busy {
            retry_after_ms: Some(2000)
        }
    );
    assert_eq!(
        busy("json_quote_503.http"),
        DecodeError::Busy {
            retry_after_ms: Some(1000)
        }
    );
    assert_eq!(busy("json_quote_500.http"), DecodeError::Status(500));
    assert!(busy("json_quote_429.http").is_retryable());
    for name in [
        "json_quote_bad_isbn.http",
        "json_quote_mixed_currency.http",
        "json_quote_float_amount.http",
    ] {
        assert!(matches!(busy(name), DecodeError::Malformed(_)), "{name}");
    }
}

#[test]
fn json_order_answers() {
    let decode = |name| json_seller::decode_order(fixture(name).reply());
    assert_eq!(
        decode("json_order_created.http").unwrap(),
        OrderOutcome::Ordered {
            order_id: "so-1".into(),
            total: Money::new(4398, Currency::USD)
        }
    );
    assert_eq!(
        decode("json_order_sold_out.http").unwrap(),
        OrderOutcome::SoldOut
    );
    assert_eq!(
        decode("json_order_price_changed.http").unwrap(),
        OrderOutcome::PriceChanged {
            total: Money::new(4598, Currency::USD)
        }
    );
    assert_eq!(
        decode("json_quote_429.http").unwrap_err(),
        DecodeError::Busy {
            retry_after_ms: Some(2000)
        }
    );
    assert_eq!(
        json_seller::decode_cancel(fixture("json_cancel_ok.http").reply()).unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(
        json_seller::error_code(&fixture("json_order_sold_out.http").body).as_deref(),
        Some("sold_out")
    );
}

#[test]
fn xml_quote_whitespace_entities_cdata_unknown_elements() {
    let raw = fixture("xml_quote_ok.http");
    let offers = xml_seller::decode_quote(raw.reply()).unwrap();
    let eur = Currency::EUR;
    // resultCount says 7; the three Book elements are what counts.
    assert_eq!(
        offers,
        vec![
            offer(
                "b-9",
                "9780131103627",
                "Brian W. Kernighan & Dennis M. Ritchie: The C Programming Language",
                Condition::Used,
                1200,
                350,
                eur,
                2
            ),
            offer(
                "b-10",
                "9791090636071",
                "Les Mis<é>rables & co",
                Condition::New,
                900,
                0,
                eur,
                1
            ),
            offer(
                "b-11",
                "9784274068560",
                "Café 日本 <Ausgabe> für Anfänger",
                Condition::New,
                2010,
                400,
                eur,
                4
            ),
        ]
    );
}

#[test]
fn xml_quote_chunked_empty_busy_truncated() {
    let offers = xml_seller::decode_quote(fixture("xml_quote_chunked.http").reply()).unwrap();
    assert_eq!(
        offers,
        vec![offer(
            "b-1",
            "9780131103627",
            "Schöne Grüße",
            Condition::Used,
            500,
            199,
            Currency::GBP,
            1
        )]
    );
    assert_eq!(
        xml_seller::decode_quote(fixture("xml_quote_empty.http").reply()).unwrap(),
        vec![]
    );
    assert_eq!(
        xml_seller::decode_quote(fixture("xml_quote_503.http").reply()).unwrap_err(),
        DecodeError::Busy {
            retry_after_ms: Some(3000)
        }
    );
    assert!(matches!(
        xml_seller::decode_quote(fixture("xml_quote_truncated.http").reply()),
        Err(DecodeError::Malformed(_))
    ));
    // A JSON body is not XML.
    assert!(matches!(
        xml_seller::decode_quote(fixture("json_quote_ok.http").reply()),
        Err(DecodeError::Malformed(_))
    ));
}

#[test]
fn xml_order_and_cancel_answers() {
    let decode = |name| xml_seller::decode_order(fixture(name).reply());
    assert_eq!(
        decode("xml_order_ok.http").unwrap(),
        OrderOutcome::Ordered {
            order_id: "x-4".into(),
            total: Money::new(1550, Currency::EUR)
        }
    );
    assert_eq!(
        decode("xml_order_soldout.http").unwrap(),
        OrderOutcome::SoldOut
    );
    assert_eq!(
        decode("xml_order_pricechanged.http").unwrap(),
        OrderOutcome::PriceChanged {
            total: Money::new(1625, Currency::EUR)
        }
    );
    assert_eq!(
        decode("xml_order_unknown_status.http").unwrap_err(),
        DecodeError::Remote {
            code: "fraudSuspected".into(),
            message: "call us".into()
        }
    );
    assert_eq!(
        xml_seller::decode_cancel(fixture("xml_cancel_ok.http").reply()).unwrap(),
        CancelOutcome::Cancelled
    );
}

#[test]
fn payment_answers() {
    let fx = fixture;
    assert_eq!(
        payment::decode_authorize(fx("payment_authorize_created.http").reply()).unwrap(),
        AuthorizeOutcome::Authorized {
            id: "auth_1".into(),
            amount: Money::new(2000, Currency::USD)
        }
    );
    assert_eq!(
        payment::decode_authorize(fx("payment_authorize_declined.http").reply()).unwrap(),
        AuthorizeOutcome::Declined {
            error: "card_declined".into()
        }
    );
    assert_eq!(
        payment::decode_settle(fx("payment_capture_ok.http").reply()).unwrap(),
        SettleOutcome::Done {
            id: "ch_1".into(),
            amount: Some(1649)
        }
    );
    assert_eq!(
        payment::decode_settle(fx("payment_capture_refused.http").reply()).unwrap(),
        SettleOutcome::Refused {
            error: "already_captured".into()
        }
    );
    assert_eq!(
        payment::decode_settle(fx("payment_void_ok.http").reply()).unwrap(),
        SettleOutcome::Done {
            id: "auth_1".into(),
            amount: None
        }
    );
    assert_eq!(
        payment::decode_settle(fx("payment_refund_ok.http").reply()).unwrap(),
        SettleOutcome::Done {
            id: "re_1".into(),
            amount: Some(1649)
        }
    );
    assert_eq!(
        payment::decode_authorize(fx("payment_busy.http").reply()).unwrap_err(),
        DecodeError::Busy {
            retry_after_ms: Some(5000)
        }
    );
}

#[test]
fn line_requests_transcript() {
    let raw = fixture_bytes("line_requests.txt");
    let mut buf = LineBuffer::new();
    buf.extend(&raw);
    let mut got = Vec::new();
    while let Some(line) = buf.next_line() {
        got.push(Request::decode(line.unwrap()).unwrap());
    }
    assert_eq!(got.len(), 5);
    assert_eq!(
        got[0],
        Request::Quote {
            tag: "q1".into(),
            query: QuoteQuery::Isbn(isbn("9780131103627"))
        }
    );
    assert_eq!(
        got[1],
        Request::Quote {
            tag: "q2".into(),
            query: QuoteQuery::Title("Les Misérables  tome 1".into())
        }
    );
    match &got[2] {
        Request::Order { tag, order } => {
            assert_eq!(tag, "o1");
            assert_eq!(order.offer_id, "L-77");
            assert_eq!(order.expected_total, Money::new(1649, Currency::GBP));
            assert_eq!(order.idempotency_key, "cust-alice:key-42:order:L-77");
            assert_eq!(order.shipping_token, "ship_home");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        got[3],
        Request::Quote {
            tag: "q3".into(),
            query: QuoteQuery::Isbn(isbn("9784274068560"))
        }
    );
    // Re-encoding gives canonical lines (ISBN-13, LF only).
    let mut out = Vec::new();
    for r in &got {
        r.encode(&mut out);
    }
    let canonical = String::from_utf8(raw)
        .unwrap()
        .replace("\r\n", "\n")
        .replace("978-4-274-06856-0", "9784274068560");
    assert_eq!(String::from_utf8(out).unwrap(), canonical);
}

#[test]
fn line_responses_interleaved_in_any_chunking() {
    let raw = fixture_bytes("line_responses.txt");
    for chunk in [1usize, 2, 3, 7, 64, raw.len()] {
        let mut buf = LineBuffer::new();
        let mut by_tag: std::collections::BTreeMap<String, Vec<Response>> = Default::default();
        for piece in raw.chunks(chunk) {
            buf.extend(piece);
            while let Some(line) = buf.next_line() {
                let r = Response::decode(line.unwrap()).unwrap();
                by_tag.entry(r.tag().to_string()).or_default().push(r);
            }
        }
        assert_eq!(buf.pending(), 0);
        let q1 = &by_tag["q1"];
        assert_eq!(q1.len(), 4);
        assert!(q1.last().unwrap().is_final());
        let offers: Vec<_> = q1
            .iter()
            .filter_map(|r| match r {
                Response::Offer { offer, .. } => Some((
                    offer.offer_id.as_str(),
                    offer.condition,
                    offer.title.as_str(),
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            offers,
            vec![
                ("L-77", Condition::New, "The C Programming Language"),
                ("L-78", Condition::Used, ""),
                ("L-79", Condition::New, "プログラミング言語C 日本語版"),
            ]
        );
        assert_eq!(by_tag["q2"].len(), 2);
        assert_eq!(
            by_tag["q3"],
            vec![Response::Busy {
                tag: "q3".into(),
                retry_after_ms: 250
            }]
        );
        assert_eq!(
            by_tag["o1"],
            vec![Response::Ordered {
                tag: "o1".into(),
                order_id: "LS-10".into(),
                total: Money::new(1649, Currency::GBP)
            }]
        );
        assert_eq!(by_tag["c1"], vec![Response::Cancelled { tag: "c1".into() }]);
    }
}

/// Partners answer a repeat of a key whose first request still runs with "in use": an
/// unknown outcome, never a refusal (a refusal would make the engine move on while the
/// first request may still succeed).
#[test]
fn keys_in_progress_are_unknown_not_refused() {
    let fx = fixture;
    let in_progress = |e: DecodeError| matches!(e, DecodeError::InProgress { .. });
    assert_eq!(
        json_seller::decode_order(fx("json_order_key_in_use.http").reply()).unwrap_err(),
        DecodeError::InProgress {
            retry_after_ms: Some(1000)
        }
    );
    assert!(in_progress(
        xml_seller::decode_order(fx("xml_order_in_progress.http").reply()).unwrap_err()
    ));
    let payment = fx("payment_key_in_use.http");
    assert!(in_progress(
        payment::decode_authorize(payment.reply()).unwrap_err()
    ));
    let settle = payment::decode_settle(payment.reply()).unwrap_err();
    assert!(in_progress(settle.clone()), "{settle:?}");
    assert!(settle.is_retryable());
}

/// A confirmation names an order even when its total is nonsense: the order id must come
/// through so the order can be cancelled; the total must not become a price.
#[test]
fn confirmations_that_make_no_sense() {
    let fx = fixture;
    assert_eq!(
        json_seller::decode_order(fx("json_order_unknown_currency.http").reply()).unwrap_err(),
        DecodeError::Unconfirmed {
            order_id: "so-77".into(),
            reason: "unknown currency \"XBT\"".into()
        }
    );
    // A negative total reads fine; judging it is the engine's business.
    assert_eq!(
        json_seller::decode_order(fx("json_order_negative_total.http").reply()).unwrap(),
        OrderOutcome::Ordered {
            order_id: "so-78".into(),
            total: Money::new(-2512, Currency::USD)
        }
    );
    // The total's own currency wins over the seller's.
    assert_eq!(
        xml_seller::decode_order(fx("xml_order_total_in_usd.http").reply()).unwrap(),
        OrderOutcome::Ordered {
            order_id: "x-9".into(),
            total: Money::new(1891, Currency::USD)
        }
    );
    match xml_seller::decode_order(fx("xml_order_unreadable_total.http").reply()) {
        Err(DecodeError::Unconfirmed { order_id, .. }) => assert_eq!(order_id, "x-10"),
        other => panic!("expected Unconfirmed, got {other:?}"),
    }
}

/// A line seller's confirmations that make no sense still decode, with their order ids.
#[test]
fn line_confirmations_that_make_no_sense() {
    let text = fixture_bytes("line_order_lies.txt");
    let lines: Vec<&[u8]> = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(
        Response::decode(lines[0]).unwrap(),
        Response::Ordered {
            tag: "17".into(),
            order_id: "LO-88".into(),
            total: Money::new(-2512, Currency::GBP)
        }
    );
    for (raw, id) in [(lines[1], "LO-89"), (lines[2], "LO-90")] {
        match Response::decode(raw).unwrap() {
            Response::OrderedUnreadable { order_id, .. } => assert_eq!(order_id, id),
            other => panic!("expected OrderedUnreadable, got {other:?}"),
        }
        // It encodes back to the same line.
        let mut out = Vec::new();
        Response::decode(raw).unwrap().encode(&mut out);
        assert_eq!(out.strip_suffix(b"\n").unwrap(), raw);
    }
    assert_eq!(
        Response::decode(lines[3]).unwrap(),
        Response::Price {
            tag: "20".into(),
            total: Money::new(-100, Currency::GBP)
        }
    );
}

/// The simulator's admin listing on a `line` seller: `ORDERS`, then one `ORDERREC` per
/// order and `END`. It is not part of the product protocol (`line::Request` and
/// `line::Response` do not know it).
#[test]
fn line_admin_listing() {
    use bookbroker_protocols::admin::{decode_line, decode_line_request, LineListing};
    let raw = fixture_bytes("line_admin_listing.txt");
    let mut buf = LineBuffer::new();
    buf.extend(&raw);
    let first = buf.next_line().unwrap().unwrap().to_vec();
    assert_eq!(decode_line_request(&first), Some(Ok("adm".to_string())));
    assert!(Request::decode(&first).is_err());
    let mut got = Vec::new();
    while let Some(line) = buf.next_line() {
        got.push(decode_line(line.unwrap()).unwrap());
    }
    assert_eq!(got.len(), 3);
    assert_eq!(
        got[0],
        LineListing::Record(AdminOrder {
            order_id: "LS-9".into(),
            offer_id: "L-12".into(),
            isbn: "9780131103627".into(),
            total_minor: 1500,
            currency: "GBP".into(),
            status: AdminOrderStatus::Cancelled,
            idempotency_key: "cust-bob:k1:order:L-12".into(),
        })
    );
    assert_eq!(got[2], LineListing::End);
}
