//! The checks behind every fuzz target, as plain functions of the input bytes.
//!
//! Each function feeds one decoder what a hostile peer could send and asserts what must
//! hold whatever it is: no panic, and where a decoder accepts the input, the values are
//! ones the engine can use (encoded again, they decode to the same thing; a refusal of
//! a customer request is a 400). The `fuzz/` crate wraps each in `fuzz_target!` for
//! libFuzzer (nightly, `make fuzz`); `tests/replay.rs` runs the committed corpora and
//! every crash input found so far through them on stable, as part of `make test`.
//!
//! ```
//! // A seller's answer, as captured on the wire, through the json target's checks.
//! let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"offers\":[]}";
//! bookbroker_fuzz_bodies::json_seller(raw);
//! ```

use bookbroker_engine::auth::ApiKeys;
use bookbroker_engine::config::{parse_url, Config};
use bookbroker_engine::purchase::api::parse_body;
use bookbroker_engine::purchase::secrets::TokenCipher;
use bookbroker_engine::quotes::parse_request;
use bookbroker_engine::ratelimit::RateLimits;
use bookbroker_protocols::admin;
use bookbroker_protocols::capture::RawResponse;
use bookbroker_protocols::http1;
use bookbroker_protocols::line::{LineBuffer, Request, Response};
use bookbroker_protocols::{json_seller, payment, xml_seller, Currency, FxTable};

/// One target's checks.
pub type Check = fn(&[u8]);

/// Every target, by the name of its corpus directory, for the replay test.
pub const TARGETS: &[(&str, Check)] = &[
    ("json_seller", json_seller),
    ("xml_seller", xml_seller),
    ("line_seller", line_seller),
    ("line_chunks", line_chunks),
    ("http1_response", http1_response),
    ("payment", payment),
    ("quote_query", quote_query),
    ("purchase_body", purchase_body),
    ("config", config),
];

/// A json seller's answer to a quote, an order and a cancel (the same bytes through
/// all three decoders), and a request to a simulated json seller.
pub fn json_seller(data: &[u8]) {
    if let Some(raw) = RawResponse::parse(data) {
        let reply = raw.reply();
        if let Ok(offers) = json_seller::decode_quote(reply) {
            // What we accepted, a seller could have sent in our own encoding.
            let again = RawResponse::from_encoded(&json_seller::server::encode_quote(&offers));
            assert_eq!(json_seller::decode_quote(again.reply()).ok(), Some(offers));
        }
        let _ = json_seller::decode_order(reply);
        let _ = json_seller::decode_cancel(reply);
        let _ = json_seller::error_code(&raw.body);
    }
    // The same bytes as what sellersim's json seller reads.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = json_seller::server::route("POST", text);
        let _ = json_seller::server::decode_quote(text);
    }
    let _ = json_seller::server::decode_order(Some("k"), data);
}

/// An xml seller's answer to a quote, an order and a cancel, and a request to a
/// simulated xml seller.
pub fn xml_seller(data: &[u8]) {
    if let Some(raw) = RawResponse::parse(data) {
        let reply = raw.reply();
        if let Ok(offers) = xml_seller::decode_quote(reply) {
            let again = RawResponse::from_encoded(&xml_seller::server::encode_quote(&offers));
            assert_eq!(xml_seller::decode_quote(again.reply()).ok(), Some(offers));
        }
        let _ = xml_seller::decode_order(reply);
        let _ = xml_seller::decode_cancel(reply);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = xml_seller::server::decode_quote(text);
    }
    let _ = xml_seller::server::decode_order(data, Currency::USD);
    let _ = xml_seller::server::decode_cancel(data);
}

/// Lines of a `line` seller's answer (and of a request to one), one per LF.
pub fn line_seller(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        if let Ok(response) = Response::decode(line) {
            let mut out = Vec::new();
            response.encode(&mut out);
            let encoded = out.strip_suffix(b"\n").unwrap_or(&out);
            assert_eq!(Response::decode(encoded).ok(), Some(response));
        }
        if let Ok(request) = Request::decode(line) {
            let mut out = Vec::new();
            request.encode(&mut out);
            let encoded = out.strip_suffix(b"\n").unwrap_or(&out);
            assert_eq!(Request::decode(encoded).ok(), Some(request));
        }
        let _ = admin::decode_line(line);
        let _ = admin::decode_line_request(line);
    }
}

/// A `line` stream cut into reads of arbitrary sizes: the lines that come out must not
/// depend on where the reads end. The first byte chooses the cut sizes.
pub fn line_chunks(data: &[u8]) {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let whole = lines_of(std::iter::once(stream));
    assert_eq!(lines_of(cut_into_reads(seed, stream).into_iter()), whole);
}

/// `stream` cut into reads of 1 to at most 31 bytes, in a cycle `seed` chooses.
fn cut_into_reads(seed: u8, stream: &[u8]) -> Vec<&[u8]> {
    let mut sizes = (1..=usize::from(seed % 31) + 1).cycle();
    let mut rest = stream;
    let mut reads = Vec::new();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).min(rest.len());
        let (read, tail) = rest.split_at(n);
        reads.push(read);
        rest = tail;
    }
    reads
}

/// A seller's HTTP/1.1 answer cut into reads of arbitrary sizes, read the way the quote
/// client reads it (bytes not taken are offered again with the next read): the outcome
/// must not depend on where the reads end. The first byte chooses the cut sizes.
pub fn http1_response(data: &[u8]) {
    let Some((&seed, wire)) = data.split_first() else {
        return;
    };
    let whole = read_http1(std::iter::once(wire));
    let cut = read_http1(cut_into_reads(seed, wire).into_iter());
    match (&whole, &cut) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        _ => panic!("whole: {whole:?}, cut: {cut:?}"),
    }
}

/// The response these reads make, then the end of the stream.
fn read_http1<'a>(
    reads: impl Iterator<Item = &'a [u8]>,
) -> Result<http1::Response, http1::Http1Error> {
    let mut reader = http1::ResponseReader::new(1 << 16);
    let mut pending = Vec::new();
    for read in reads {
        if reader.is_done() {
            break;
        }
        pending.extend_from_slice(read);
        let taken = reader.feed(&pending)?;
        pending.drain(..taken);
    }
    reader.close();
    reader.finish()
}

/// The lines (or the framing error that ends the stream) and the bytes left over.
type Framed = (Vec<Result<Vec<u8>, String>>, usize);

/// Every line (or the framing error that ends the stream) a [`LineBuffer`] gives for
/// these reads, and what it still holds at the end.
fn lines_of<'a>(reads: impl Iterator<Item = &'a [u8]>) -> Framed {
    let mut buffer = LineBuffer::new();
    let mut lines = Vec::new();
    for read in reads {
        buffer.extend(read);
        while let Some(line) = buffer.next_line() {
            match line {
                Ok(line) => lines.push(Ok(line.to_vec())),
                Err(e) => {
                    // The stream is closed after a framing error: nothing after it counts.
                    lines.push(Err(e.to_string()));
                    return (lines, 0);
                }
            }
        }
    }
    let pending = buffer.pending();
    (lines, pending)
}

/// The payment provider's answers (authorize, settle, ledger) and the requests a
/// simulated provider reads.
pub fn payment(data: &[u8]) {
    if let Some(raw) = RawResponse::parse(data) {
        let reply = raw.reply();
        if let Ok(outcome) = payment::decode_authorize(reply) {
            let again = RawResponse::from_encoded(&payment::server::encode_authorize(&outcome));
            assert_eq!(payment::decode_authorize(again.reply()).ok(), Some(outcome));
        }
        let _ = payment::decode_settle(reply);
        let _ = payment::decode_ledger(reply);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = payment::server::route("POST", text);
    }
    let _ = payment::server::decode_authorize(data);
    let _ = payment::server::decode_capture(data);
}

/// The currencies a customer may ask for in the targets below.
fn fx() -> Option<FxTable> {
    FxTable::new(
        Currency::USD,
        &[(Currency::EUR, "1.08"), (Currency::GBP, "1.27")],
    )
    .ok()
}

/// The query string of `GET /v1/quotes`: accepted, it names a known currency; refused,
/// it is a 400.
pub fn quote_query(data: &[u8]) {
    let (Ok(query), Some(fx)) = (std::str::from_utf8(data), fx()) else {
        return;
    };
    match parse_request(Some(query), &fx) {
        Ok(request) => assert!(fx.knows(request.currency)),
        Err(problem) => assert_eq!(problem.status, 400, "{problem:?}"),
    }
}

/// The body of `POST /v1/purchases`: accepted, it is a purchase the engine can run;
/// refused, it is a 400 whose detail never repeats the payment token.
pub fn purchase_body(data: &[u8]) {
    let (Ok(cipher), Some(fx)) = (TokenCipher::from_bytes(&[7; 32]), fx()) else {
        return;
    };
    match parse_body("alice", "key-1".to_string(), data, &fx, &cipher, false) {
        Ok(request) => {
            assert!(request.max_price > 0);
            assert!(request.isbn.is_some() != request.title.is_some());
            assert!(fx.knows(request.currency));
        }
        Err(problem) => {
            assert_eq!(problem.status, 400, "{problem:?}");
            let token = serde_json::from_slice::<serde_json::Value>(data)
                .ok()
                .and_then(|v| v.get("payment_token")?.as_str().map(str::to_string));
            if let Some(token) = token.filter(|t| t.len() >= 8) {
                assert!(!problem.detail.contains(&token), "{problem:?}");
            }
        }
    }
}

/// A TOML config: whatever it holds, reading and checking it answers; a config with no
/// problems gives the engine everything it derives at start, and every number in it is
/// one the engine can compute with.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = Config::from_toml_str(text) else {
        return;
    };
    if !config.problems().is_empty() {
        return;
    }
    assert!(config.fx_table().is_ok());
    assert!(ApiKeys::from_config(&config.customers).is_ok());
    let _ = RateLimits::from_config(&config.customers);
    let hedging = &config.hedging;
    // An infinite floor would hedge every request without limit; a NaN one never.
    assert!(hedging.budget.is_finite() && hedging.floor_per_sec.is_finite());
    assert!(hedging.floor_per_sec >= 0.0);
    assert!(parse_url(&config.payment.url).is_ok());
    for seller in &config.sellers {
        assert!(!seller.endpoints.is_empty());
        for endpoint in &seller.endpoints {
            assert!(parse_url(endpoint).is_ok(), "{endpoint:?}");
        }
        assert!(Currency::parse(&seller.currency).is_ok());
    }
}
