//! Decoding and encoding each seller protocol's messages, on answers shaped like what
//! sellers send: 1 offer and 20 offers per quote.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // a test or benchmark: panicking is how it fails

use bookbroker_bench::{isbn, offers};
use bookbroker_protocols::http::Reply;
use bookbroker_protocols::line::{LineBuffer, Request, Response};
use bookbroker_protocols::{json_seller, payment, xml_seller, Currency, Isbn, QuoteQuery};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn reply(body: &[u8]) -> Reply<'_> {
    Reply {
        status: 200,
        retry_after: None,
        body,
    }
}

fn quotes(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_quote");
    for n in [1usize, 20] {
        let json = json_seller::server::encode_quote(&offers(n, Currency::USD)).body;
        let xml = xml_seller::server::encode_quote(&offers(n, Currency::EUR)).body;
        let mut line = Vec::new();
        for offer in offers(n, Currency::GBP) {
            Response::Offer {
                tag: "42".into(),
                offer,
            }
            .encode(&mut line);
        }
        Response::End { tag: "42".into() }.encode(&mut line);

        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("json", n), &json, |b, body| {
            b.iter(|| json_seller::decode_quote(reply(black_box(body))))
        });
        g.bench_with_input(BenchmarkId::new("xml", n), &xml, |b, body| {
            b.iter(|| xml_seller::decode_quote(reply(black_box(body))))
        });
        g.bench_with_input(BenchmarkId::new("line", n), &line, |b, bytes| {
            b.iter(|| {
                let mut buf = LineBuffer::new();
                buf.extend(black_box(bytes));
                let mut got = 0;
                while let Some(Ok(l)) = buf.next_line() {
                    if Response::decode(l).is_ok() {
                        got += 1;
                    }
                }
                got
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encode_request");
    let q = QuoteQuery::Isbn(isbn());
    g.bench_function("json_quote", |b| {
        b.iter(|| json_seller::encode_quote(black_box(&q)))
    });
    g.bench_function("xml_quote", |b| {
        b.iter(|| xml_seller::encode_quote(black_box(&q)))
    });
    g.bench_function("line_quote", |b| {
        let mut out = Vec::with_capacity(128);
        b.iter(|| {
            out.clear();
            Request::Quote {
                tag: "7".into(),
                query: black_box(q.clone()),
            }
            .encode(&mut out);
            out.len()
        })
    });
    g.finish();

    let auth = br#"{"id":"auth_1","status":"authorized","amount":2000,"currency":"USD"}"#;
    c.bench_function("decode_authorize", |b| {
        b.iter(|| {
            payment::decode_authorize(Reply {
                status: 201,
                retry_after: None,
                body: black_box(auth),
            })
        })
    });
}

fn isbns(c: &mut Criterion) {
    let mut g = c.benchmark_group("isbn_parse");
    for (name, text) in [
        ("isbn13", "9780131103627"),
        ("isbn10_hyphens", "0-13-110362-8"),
        ("invalid", "9780131103628"),
    ] {
        g.bench_function(name, |b| b.iter(|| Isbn::parse(black_box(text))));
    }
    g.finish();
}

criterion_group!(benches, quotes, isbns);
criterion_main!(benches);
