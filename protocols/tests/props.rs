//! Property tests of the vocabulary (ISBN, money, FX) and the line protocol.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test or benchmark: panicking is how it fails

use bookbroker_protocols::line::{sanitize_field, LineBuffer, Request, Response, MAX_LINE};
use bookbroker_protocols::offer::{Condition, OrderRequest, QuoteQuery, SellerOffer};
use bookbroker_protocols::{Currency, FxError, FxTable, Isbn, IsbnError, Money};
use proptest::prelude::*;

fn isbn10_check(nine: &[u8]) -> char {
    let sum: u32 = nine
        .iter()
        .enumerate()
        .map(|(i, d)| u32::from(*d) * (10 - i as u32))
        .sum();
    match (11 - sum % 11) % 11 {
        10 => 'X',
        c => char::from(b'0' + c as u8),
    }
}

fn isbn13_check(twelve: &[u8]) -> u8 {
    let sum: u32 = twelve
        .iter()
        .enumerate()
        .map(|(i, d)| u32::from(*d) * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

fn digits_str(d: &[u8]) -> String {
    d.iter().map(|d| char::from(b'0' + d)).collect()
}

fn currency() -> impl Strategy<Value = Currency> {
    let all: Vec<Currency> = Currency::all().collect();
    proptest::sample::select(all)
}

fn isbn() -> impl Strategy<Value = Isbn> {
    (
        prop_oneof![Just("978"), Just("979")],
        proptest::collection::vec(0u8..10, 9),
    )
        .prop_map(|(p, d)| Isbn::from_prefix12(&format!("{p}{}", digits_str(&d))).unwrap())
}

proptest! {
    #[test]
    fn isbn10_converts_to_isbn13(nine in proptest::collection::vec(0u8..10, 9), hyphens in any::<bool>()) {
        let check = isbn10_check(&nine);
        let mut text = format!("{}{}", digits_str(&nine), check);
        if hyphens {
            text.insert(1, '-');
            text.insert(5, '-');
            text.insert(11, '-');
        }
        let isbn = Isbn::parse(&text).unwrap();
        let mut twelve = vec![9, 7, 8];
        twelve.extend_from_slice(&nine);
        let expected = format!("{}{}", digits_str(&twelve), isbn13_check(&twelve));
        prop_assert_eq!(isbn.as_str(), expected.as_str());
        prop_assert_eq!(Isbn::parse(&expected).unwrap(), isbn);
        prop_assert_eq!(isbn.to_isbn10().unwrap(), format!("{}{}", digits_str(&nine), check));
        prop_assert_eq!(Isbn::parse(&text.to_lowercase()).unwrap(), isbn);
    }

    #[test]
    fn isbn10_single_digit_change_rejected(
        nine in proptest::collection::vec(0u8..10, 9),
        pos in 0usize..10,
        replacement in "[0-9X]",
    ) {
        let text: Vec<char> = format!("{}{}", digits_str(&nine), isbn10_check(&nine)).chars().collect();
        let replacement = replacement.chars().next().unwrap();
        prop_assume!(text[pos] != replacement);
        let mut changed = text.clone();
        changed[pos] = replacement;
        let changed: String = changed.into_iter().collect();
        let result = Isbn::parse(&changed);
        if replacement == 'X' && pos != 9 {
            prop_assert_eq!(result, Err(IsbnError::InvalidCharacter('X')));
        } else {
            prop_assert_eq!(result, Err(IsbnError::WrongCheckDigit));
        }
    }

    #[test]
    fn isbn13_valid_accepted_single_change_rejected(isbn in isbn(), pos in 0usize..13, digit in 0u8..10) {
        let text = isbn.as_str().to_string();
        prop_assert_eq!(Isbn::parse(&text).unwrap(), isbn);
        let spaced = format!("{}-{} {}", &text[..3], &text[3..7], &text[7..]);
        prop_assert_eq!(Isbn::parse(&spaced).unwrap(), isbn);
        let mut bytes = text.into_bytes();
        prop_assume!(bytes[pos] != b'0' + digit);
        bytes[pos] = b'0' + digit;
        let changed = String::from_utf8(bytes).unwrap();
        let result = Isbn::parse(&changed);
        prop_assert!(
            matches!(result, Err(IsbnError::WrongCheckDigit) | Err(IsbnError::WrongPrefix)),
            "{} gave {:?}", changed, result
        );
    }

    #[test]
    fn isbn_parse_is_total(s in "\\PC{0,40}") {
        let _ = Isbn::parse(&s);
    }

    #[test]
    fn money_decimal_round_trip(minor in any::<i64>(), currency in currency()) {
        let m = Money::new(minor, currency);
        let text = m.to_decimal();
        prop_assert_eq!(Money::parse_decimal(&text, currency), Ok(m));
        let digits = usize::from(currency.minor_digits());
        match text.split_once('.') {
            Some((_, frac)) => prop_assert_eq!(frac.len(), digits),
            None => prop_assert_eq!(digits, 0),
        }
        // Extra zeros and surrounding whitespace change nothing.
        let padded = if digits == 0 { format!(" {text}.000 ") } else { format!("\t{text}00\n") };
        prop_assert_eq!(Money::parse_decimal(&padded, currency), Ok(m));
    }

    #[test]
    fn money_parses_written_decimals(int in 0u64..1_000_000_000, frac in "[0-9]{0,3}", currency in currency()) {
        let digits = usize::from(currency.minor_digits());
        let text = if frac.is_empty() { int.to_string() } else { format!("{int}.{frac}") };
        let result = Money::parse_decimal(&text, currency);
        let significant = frac.trim_end_matches('0');
        if significant.len() > digits {
            prop_assert!(result.is_err());
        } else {
            let mut padded = significant.to_string();
            while padded.len() < digits {
                padded.push('0');
            }
            let expected = (int as i64) * 10i64.pow(digits as u32)
                + if padded.is_empty() { 0 } else { padded.parse::<i64>().unwrap() };
            prop_assert_eq!(result.unwrap().minor, expected);
        }
    }

    #[test]
    fn money_parse_is_total(s in "\\PC{0,30}", currency in currency()) {
        let _ = Money::parse_decimal(&s, currency);
        let _ = Currency::parse(&s);
    }

    #[test]
    fn fx_same_currency_is_identity(minor in any::<i64>(), currency in currency(), rate in 1u64..1_000_000_000_000) {
        prop_assume!(currency != Currency::USD);
        let rate = format!("{}.{:012}", rate / 1_000_000_000_000, rate % 1_000_000_000_000);
        let table = FxTable::new(Currency::USD, &[(currency, rate.as_str())]).unwrap();
        let m = Money::new(minor, currency);
        prop_assert_eq!(table.convert(m, currency), Ok(m));
    }

    #[test]
    fn fx_equal_rates_and_digits_are_identity(minor in -1_000_000_000_000i64..1_000_000_000_000, rate in "[1-9][0-9]{0,3}\\.[0-9]{1,6}") {
        let eur = Currency::EUR;
        let gbp = Currency::GBP;
        let table = FxTable::new(Currency::USD, &[(eur, rate.as_str()), (gbp, rate.as_str())]).unwrap();
        prop_assert_eq!(table.convert(Money::new(minor, eur), gbp), Ok(Money::new(minor, gbp)));
    }

    #[test]
    fn fx_half_even_on_ties(n in -1_000_000_000i64..1_000_000_000) {
        // One JPY is half a US cent, so every odd yen amount lands on a tie.
        let table = FxTable::new(Currency::USD, &[(Currency::JPY, "0.005")]).unwrap();
        let got = table.convert(Money::new(n, Currency::JPY), Currency::USD).unwrap().minor;
        let floor = n.div_euclid(2);
        let tie = n.rem_euclid(2) == 1;
        let expected = if tie && floor % 2 != 0 { floor + 1 } else { floor };
        prop_assert_eq!(got, expected);
        if n % 2 != 0 {
            prop_assert_eq!(got % 2, 0, "a tie rounds to even");
        }
    }

    #[test]
    fn fx_rounds_to_nearest_once(
        minor in -10_000_000_000i64..10_000_000_000,
        a in 1u64..10_000_000_000_000,
        b in 1u64..10_000_000_000_000,
        from in currency(),
        to in currency(),
    ) {
        prop_assume!(from != to && from != Currency::USD && to != Currency::USD);
        let text = |r: u64| format!("{}.{:012}", r / 1_000_000_000_000, r % 1_000_000_000_000);
        let (ta, tb) = (text(a), text(b));
        let table = FxTable::new(Currency::USD, &[(from, ta.as_str()), (to, tb.as_str())]).unwrap();
        let got = table.convert(Money::new(minor, from), to).unwrap();
        prop_assert_eq!(got.currency, to);
        // Exact value: minor × a × 10^dt / (b × 10^df). The result is within half a
        // minor unit, and on an exact half it is even.
        let num = i128::from(minor) * i128::from(a) * 10i128.pow(u32::from(to.minor_digits()));
        let den = i128::from(b) * 10i128.pow(u32::from(from.minor_digits()));
        let diff = (i128::from(got.minor) * den - num).abs() * 2;
        prop_assert!(diff <= den, "{:?} -> {:?}", minor, got);
        if diff == den {
            prop_assert_eq!(got.minor % 2, 0);
        }
        // Monotone.
        let next = table.convert(Money::new(minor + 1, from), to).unwrap();
        prop_assert!(next.minor >= got.minor);
    }

    #[test]
    fn fx_missing_rate(minor in any::<i64>()) {
        let table = FxTable::new(Currency::USD, &[]).unwrap();
        prop_assert_eq!(table.convert(Money::new(minor, Currency::EUR), Currency::USD), Err(FxError::NoRate(Currency::EUR)));
    }

    #[test]
    fn fx_rate_text_from_f64_reads_back(rate in 1e-6f64..1e6) {
        let text = FxTable::rate_text_from_f64(rate);
        prop_assert!(!text.contains('e') && !text.contains('E'));
        prop_assert_eq!(text.parse::<f64>().unwrap(), rate);
    }
}

// ---- line protocol ----

/// Arbitrary text with a fair share of TAB, CR and LF, short enough to fit a line.
fn text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => any::<char>(),
            1 => Just('\t'),
            1 => Just('\n'),
            1 => Just('\r'),
            1 => Just(' '),
        ],
        0..40,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn clean(s: &str) -> String {
    sanitize_field(s).into_owned()
}

fn money() -> impl Strategy<Value = Money> {
    (0i64..=i64::MAX, currency()).prop_map(|(m, c)| Money::new(m, c))
}

fn condition() -> impl Strategy<Value = Condition> {
    prop_oneof![Just(Condition::New), Just(Condition::Used)]
}

fn offer() -> impl Strategy<Value = SellerOffer> {
    (
        text(),
        isbn(),
        text(),
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

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (text(), isbn()).prop_map(|(tag, i)| Request::Quote {
            tag,
            query: QuoteQuery::Isbn(i)
        }),
        (text(), text()).prop_map(|(tag, t)| Request::Quote {
            tag,
            query: QuoteQuery::Title(t)
        }),
        (text(), text(), money(), text(), text()).prop_map(
            |(tag, offer_id, expected_total, idempotency_key, shipping_token)| {
                Request::Order {
                    tag,
                    order: OrderRequest {
                        offer_id,
                        expected_total,
                        idempotency_key,
                        shipping_token,
                    },
                }
            }
        ),
        (text(), text()).prop_map(|(tag, order_id)| Request::Cancel { tag, order_id }),
    ]
}

fn sanitized_request(r: &Request) -> Request {
    match r.clone() {
        Request::Quote { tag, query } => Request::Quote {
            tag: clean(&tag),
            query: match query {
                QuoteQuery::Title(t) => QuoteQuery::Title(clean(&t)),
                q => q,
            },
        },
        Request::Order { tag, order } => Request::Order {
            tag: clean(&tag),
            order: OrderRequest {
                offer_id: clean(&order.offer_id),
                idempotency_key: clean(&order.idempotency_key),
                shipping_token: clean(&order.shipping_token),
                ..order
            },
        },
        Request::Cancel { tag, order_id } => Request::Cancel {
            tag: clean(&tag),
            order_id: clean(&order_id),
        },
    }
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (text(), offer()).prop_map(|(tag, offer)| Response::Offer { tag, offer }),
        text().prop_map(|tag| Response::End { tag }),
        (text(), text(), money()).prop_map(|(tag, order_id, total)| Response::Ordered {
            tag,
            order_id,
            total
        }),
        text().prop_map(|tag| Response::SoldOut { tag }),
        (text(), money()).prop_map(|(tag, total)| Response::Price { tag, total }),
        text().prop_map(|tag| Response::Cancelled { tag }),
        (text(), any::<u64>()).prop_map(|(tag, retry_after_ms)| Response::Busy {
            tag,
            retry_after_ms
        }),
        (text(), text(), text()).prop_map(|(tag, code, message)| Response::Err {
            tag,
            code,
            message
        }),
    ]
}

fn sanitized_response(r: &Response) -> Response {
    match r.clone() {
        Response::Offer { tag, offer } => Response::Offer {
            tag: clean(&tag),
            offer: SellerOffer {
                offer_id: clean(&offer.offer_id),
                title: clean(&offer.title),
                ..offer
            },
        },
        Response::End { tag } => Response::End { tag: clean(&tag) },
        Response::Ordered {
            tag,
            order_id,
            total,
        } => Response::Ordered {
            tag: clean(&tag),
            order_id: clean(&order_id),
            total,
        },
        Response::OrderedUnreadable {
            tag,
            order_id,
            total,
            currency,
        } => Response::OrderedUnreadable {
            tag: clean(&tag),
            order_id: clean(&order_id),
            total: clean(&total),
            currency: clean(&currency),
        },
        Response::SoldOut { tag } => Response::SoldOut { tag: clean(&tag) },
        Response::Price { tag, total } => Response::Price {
            tag: clean(&tag),
            total,
        },
        Response::Cancelled { tag } => Response::Cancelled { tag: clean(&tag) },
        Response::Busy {
            tag,
            retry_after_ms,
        } => Response::Busy {
            tag: clean(&tag),
            retry_after_ms,
        },
        Response::Err { tag, code, message } => Response::Err {
            tag: clean(&tag),
            code: clean(&code),
            message: clean(&message),
        },
    }
}

proptest! {
    #[test]
    fn line_request_round_trip(r in request()) {
        let mut out = Vec::new();
        r.encode(&mut out);
        prop_assert_eq!(out.last(), Some(&b'\n'));
        prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        prop_assert!(out.len() <= MAX_LINE);
        prop_assert_eq!(Request::decode(&out).unwrap(), sanitized_request(&r));
    }

    #[test]
    fn line_response_round_trip(r in response()) {
        let mut out = Vec::new();
        r.encode(&mut out);
        prop_assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        prop_assert_eq!(Response::decode(&out).unwrap(), sanitized_response(&r));
    }

    #[test]
    fn line_stream_round_trip(rs in proptest::collection::vec(response(), 0..20), chunk in 1usize..100) {
        let mut wire = Vec::new();
        for r in &rs {
            r.encode(&mut wire);
        }
        let mut buf = LineBuffer::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            buf.extend(piece);
            while let Some(line) = buf.next_line() {
                got.push(Response::decode(line.unwrap()).unwrap());
            }
        }
        prop_assert_eq!(buf.pending(), 0);
        let expected: Vec<Response> = rs.iter().map(sanitized_response).collect();
        prop_assert_eq!(got, expected);
    }

    #[test]
    fn line_decoders_are_total(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Request::decode(&bytes);
        let _ = Response::decode(&bytes);
        let mut buf = LineBuffer::new();
        buf.extend(&bytes);
        for _ in 0..400 {
            match buf.next_line() {
                None | Some(Err(_)) => break,
                Some(Ok(line)) => {
                    let _ = Request::decode(line);
                    let _ = Response::decode(line);
                }
            }
        }
    }

    #[test]
    fn line_decoders_total_on_plausible_lines(
        verb in prop_oneof![
            Just("QUOTE"), Just("ORDER"), Just("CANCEL"), Just("ORDERS"), Just("OFFER"), Just("END"),
            Just("ORDERED"), Just("SOLDOUT"), Just("PRICE"), Just("CANCELLED"), Just("BUSY"),
            Just("ERR"), Just("ORDERREC"),
        ],
        fields in proptest::collection::vec("[a-zA-Z0-9 .-]{0,14}|9780131103627|USD|[0-9]{1,21}", 0..10),
    ) {
        let line = format!("{verb} t\t{}", fields.join("\t"));
        let _ = Request::decode(line.as_bytes());
        let _ = Response::decode(line.as_bytes());
    }
}
