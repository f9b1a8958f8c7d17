//! Quotes from sellers of all three protocols plus one over TLS: every offer is there,
//! converted exactly, and ranked by landed total.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use bookbroker_protocols::http::Reply;
use bookbroker_protocols::line::{Request, Response};
use bookbroker_protocols::{
    json_seller, xml_seller, Currency, FxTable, Isbn, Money, QuoteQuery, SellerOffer,
};
use bookbroker_tests::{statuses, Client, Engine, Sim, KEY};

fn fx() -> FxTable {
    FxTable::new(
        Currency::USD,
        &[(Currency::EUR, "1.08"), (Currency::GBP, "1.27")],
    )
    .unwrap()
}

fn host_port(endpoint: &str) -> std::net::SocketAddr {
    endpoint
        .split("://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// What a seller answers when asked directly, decoded with the protocols crate.
fn direct(sim: &Sim, seller: &str, isbn: &Isbn) -> Vec<SellerOffer> {
    let endpoint = sim.endpoint(seller);
    let addr = host_port(&endpoint);
    let query = QuoteQuery::Isbn(*isbn);
    if endpoint.starts_with("tcp://") {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut line = Vec::new();
        Request::Quote {
            tag: "t1".into(),
            query,
        }
        .encode(&mut line);
        s.write_all(&line).unwrap();
        let mut offers = Vec::new();
        for l in BufReader::new(s).lines() {
            match Response::decode(l.unwrap().as_bytes()).unwrap() {
                Response::Offer { offer, .. } => offers.push(offer),
                Response::End { .. } => return offers,
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("no END");
    }
    let req = if seller.starts_with("xml") {
        xml_seller::encode_quote(&query)
    } else {
        json_seller::encode_quote(&query)
    };
    let resp = Client::connect(addr).get(&req.path_and_query, None);
    let reply = Reply {
        status: resp.status,
        retry_after: None,
        body: &resp.body,
    };
    if seller.starts_with("xml") {
        xml_seller::decode_quote(reply).unwrap()
    } else {
        json_seller::decode_quote(reply).unwrap()
    }
}

#[test]
fn quotes_from_every_protocol_are_converted_exactly_and_ranked() {
    let sim = Sim::start("three_protocols.toml");
    let engine = Engine::start(&sim.config, 2);
    let fx = fx();
    for isbn_text in sim.isbns.iter().take(5) {
        let isbn = Isbn::parse(isbn_text).unwrap();
        for currency in ["USD", "EUR", "GBP"] {
            let q = engine.get(&format!("/v1/quotes?isbn={isbn_text}&currency={currency}"));
            assert_eq!(q.status, 200, "{}", q.text());
            assert_eq!(q.header("content-type"), Some("application/json"));
            let v = q.json();
            assert_eq!(v["query"]["isbn"], isbn_text.as_str());
            assert_eq!(v["currency"], currency);
            assert_eq!(v["complete"], true, "{v}");
            let st = statuses(&v);
            assert_eq!(st.len(), 4);
            assert!(st.values().all(|s| s == "ok"), "{st:?}");

            // Expected: every seller's own answer, converted with the documented rule.
            let to = Currency::parse(currency).unwrap();
            let mut expected: BTreeMap<(String, String), (i64, i64, SellerOffer)> = BTreeMap::new();
            for seller in ["json-plain", "xml-eur", "line-gbp"] {
                for o in direct(&sim, seller, &isbn) {
                    let p = fx
                        .convert(Money::new(o.price, o.currency), to)
                        .unwrap()
                        .minor;
                    let s = fx
                        .convert(Money::new(o.shipping, o.currency), to)
                        .unwrap()
                        .minor;
                    expected.insert((seller.to_string(), o.offer_id.clone()), (p, s, o));
                }
            }
            let offers = v["offers"].as_array().unwrap();
            let mut seen = 0;
            for o in offers {
                let seller = o["seller"].as_str().unwrap();
                let total = o["total"].as_i64().unwrap();
                assert_eq!(
                    total,
                    o["price"].as_i64().unwrap() + o["shipping"].as_i64().unwrap()
                );
                assert_eq!(o["currency"], currency);
                assert_eq!(o["isbn"], isbn_text.as_str());
                if seller == "json-tls" {
                    assert_eq!(o["original"]["currency"], "USD");
                    continue;
                }
                let key = (
                    seller.to_string(),
                    o["offer_id"].as_str().unwrap().to_string(),
                );
                let (p, s, raw) = expected
                    .get(&key)
                    .unwrap_or_else(|| panic!("unexpected offer {o}"));
                seen += 1;
                assert_eq!(o["price"].as_i64().unwrap(), *p, "{o}");
                assert_eq!(o["shipping"].as_i64().unwrap(), *s, "{o}");
                assert_eq!(o["title"], raw.title.as_str());
                assert_eq!(o["condition"], raw.condition.as_str());
                assert_eq!(o["original"]["price"].as_i64().unwrap(), raw.price);
                assert_eq!(o["original"]["shipping"].as_i64().unwrap(), raw.shipping);
                assert_eq!(
                    o["original"]["total"].as_i64().unwrap(),
                    raw.price + raw.shipping
                );
                assert_eq!(o["original"]["currency"], raw.currency.code());
            }
            assert_eq!(seen, expected.len(), "every non-TLS offer is in the answer");
            assert!(
                offers.iter().any(|o| o["seller"] == "json-tls"),
                "the TLS seller's offers are there"
            );
            let totals: Vec<i64> = offers
                .iter()
                .map(|o| o["total"].as_i64().unwrap())
                .collect();
            assert!(
                totals.windows(2).all(|w| w[0] <= w[1]),
                "sorted by total: {totals:?}"
            );
        }
    }
}

#[test]
fn isbn10_with_hyphens_is_answered_as_isbn13_and_filters_work() {
    let sim = Sim::start("three_protocols.toml");
    let engine = Engine::start(&sim.config, 1);
    let isbn = Isbn::parse(&sim.isbns[0]).unwrap();
    if let Some(ten) = isbn.to_isbn10() {
        let hyphenated = format!("{}-{}-{}", &ten[..1], &ten[1..5], &ten[5..]);
        let v = engine.get(&format!("/v1/quotes?isbn={hyphenated}")).json();
        assert_eq!(v["query"]["isbn"], isbn.as_str());
        assert_eq!(v["currency"], "USD", "the FX base is the default currency");
    }
    let all = engine.get(&format!("/v1/quotes?isbn={}", isbn)).json();
    for condition in ["new", "used"] {
        let v = engine
            .get(&format!("/v1/quotes?isbn={isbn}&condition={condition}"))
            .json();
        let offers = v["offers"].as_array().unwrap();
        assert!(offers.iter().all(|o| o["condition"] == condition), "{v}");
        let expected = all["offers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["condition"] == condition)
            .count();
        assert_eq!(offers.len(), expected);
    }
}

#[test]
fn title_search_is_forwarded_to_every_seller() {
    let sim = Sim::start("three_protocols.toml");
    let engine = Engine::start(&sim.config, 1);
    let first = engine
        .get(&format!("/v1/quotes?isbn={}", sim.isbns[0]))
        .json();
    let title = first["offers"][0]["title"].as_str().unwrap().to_string();
    let word = title.split_whitespace().max_by_key(|w| w.len()).unwrap();
    let encoded: String = word
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let v = engine
        .get(&format!("/v1/quotes?title={encoded}&currency=EUR"))
        .json();
    assert_eq!(v["query"]["title"], word);
    assert_eq!(v["complete"], true);
    let offers = v["offers"].as_array().unwrap();
    assert!(!offers.is_empty());
    let sellers: std::collections::BTreeSet<&str> = offers
        .iter()
        .map(|o| o["seller"].as_str().unwrap())
        .collect();
    assert_eq!(
        sellers.len(),
        4,
        "every seller matched the title: {sellers:?}"
    );
    let _ = KEY;
}
