//! Helpers shared by the JSON codecs (json seller, payment, admin).

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{DecodeError, RequestError};
use crate::http::{retry_after_ms, HttpResponse, Reply};
use crate::money::{Currency, Money};

/// Parses a JSON body with simd-json. The parser works in place, so the body is copied
/// once (linear in its size).
pub(crate) fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    // Deserializing walks nested values recursively; a peer could otherwise overflow
    // the stack (and abort the process) with a few kilobytes of brackets.
    // Some servers start UTF-8 bodies with a byte-order mark; JSON parsers reject it.
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if nesting_depth(body) > MAX_JSON_DEPTH {
        return Err(format!("JSON nested deeper than {MAX_JSON_DEPTH} levels"));
    }
    let mut copy = body.to_vec();
    simd_json::serde::from_slice::<T>(&mut copy).map_err(|e| match e.error() {
        // Field-level problems (missing field, unknown currency) say it best themselves.
        simd_json::ErrorType::Serde(message) => format!("invalid JSON body: {}", shorten(message)),
        other => format!("invalid JSON at byte {}: {other:?}", e.index()),
    })
}

/// Deepest JSON nesting accepted; real answers are four levels deep.
const MAX_JSON_DEPTH: usize = 64;

/// The deepest nesting of arrays and objects in `body`, ignoring brackets inside strings.
/// One pass, no allocation; invalid JSON is left for the parser to reject.
fn nesting_depth(body: &[u8]) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// [`from_json`] for answers from a peer.
pub(crate) fn decode_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, DecodeError> {
    from_json(body).map_err(DecodeError::Malformed)
}

/// [`from_json`] for requests from a client.
pub(crate) fn decode_request<T: DeserializeOwned>(body: &[u8]) -> Result<T, RequestError> {
    from_json(body).map_err(RequestError::Malformed)
}

/// The error for a status an operation does not expect: 429 and 503 are overload.
pub(crate) fn unexpected_status(reply: &Reply<'_>) -> DecodeError {
    match reply.status {
        429 | 503 => DecodeError::Busy {
            retry_after_ms: retry_after_ms(reply.retry_after),
        },
        other => DecodeError::Status(other),
    }
}

/// The error code partners answer, with 409, to a repeat of an idempotency key whose
/// first request is still running (Stripe's wording; json sellers use it too).
pub(crate) const KEY_IN_USE: &str = "idempotency_key_in_use";

/// `{"value": "39.99", "currency": "USD"}` as it travels.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct WireAmount {
    pub value: String,
    pub currency: String,
}

impl WireAmount {
    pub fn from_money(m: Money) -> WireAmount {
        WireAmount {
            value: m.to_decimal(),
            currency: m.currency.code().to_string(),
        }
    }

    pub fn to_money(&self) -> Result<Money, String> {
        let currency = Currency::parse(self.currency.trim()).map_err(|e| e.to_string())?;
        Money::parse_decimal(&self.value, currency).map_err(|e| e.to_string())
    }
}

/// `{"error": "…"}`.
#[derive(Debug, Deserialize, Serialize)]
pub(crate) struct WireError {
    pub error: String,
}

/// A JSON answer. Serializing these plain structs cannot fail; should it ever, the
/// answer is a 500 with an empty object rather than a panic.
pub(crate) fn json_response<T: Serialize>(status: u16, value: &T) -> HttpResponse {
    match serde_json::to_vec(value) {
        Ok(body) => HttpResponse {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body,
        },
        Err(_) => HttpResponse {
            status: 500,
            content_type: "application/json",
            headers: Vec::new(),
            body: b"{}".to_vec(),
        },
    }
}

/// Serializes a request body (see [`json_response`] on failure).
pub(crate) fn json_body<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// Limits a peer's text before it goes into an error message.
pub(crate) fn shorten(text: &str) -> String {
    const MAX: usize = 120;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(MAX).collect();
        s.push('…');
        s
    }
}

/// Reads a seller search query: `isbn=…`, or the protocol's title parameter
/// (`q` for json sellers, `title` for xml sellers).
pub(crate) fn decode_search_query(
    query: &str,
    title_param: &'static str,
    missing: &'static str,
) -> Result<crate::offer::QuoteQuery, RequestError> {
    use crate::http::{parse_query, query_param};
    use crate::offer::QuoteQuery;
    let pairs = parse_query(query)?;
    if let Some(isbn) = query_param(&pairs, "isbn") {
        let isbn = crate::isbn::Isbn::parse(isbn).map_err(|e| RequestError::Invalid {
            field: "isbn",
            reason: e.to_string(),
        })?;
        return Ok(QuoteQuery::Isbn(isbn));
    }
    match query_param(&pairs, title_param) {
        Some(t) if !t.trim().is_empty() => Ok(QuoteQuery::Title(t.to_string())),
        Some(_) => Err(RequestError::Invalid {
            field: title_param,
            reason: "empty".to_string(),
        }),
        None => Err(RequestError::Missing(missing)),
    }
}

/// A JSON error answer `{"error": …}` with any status, with `Retry-After` when given.
pub(crate) fn json_error(status: u16, error: &str, retry_after_s: Option<u64>) -> HttpResponse {
    let mut resp = json_response(
        status,
        &WireError {
            error: error.to_string(),
        },
    );
    if let Some(s) = retry_after_s {
        resp.headers.push(("retry-after", s.to_string()));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_order_mark_is_skipped() {
        let body = b"\xEF\xBB\xBF{\"error\":\"x\"}";
        assert_eq!(from_json::<WireError>(body).unwrap().error, "x");
    }

    #[test]
    fn nesting_depth_ignores_strings() {
        assert_eq!(nesting_depth(b"1"), 0);
        assert_eq!(nesting_depth(br#"{"a":[1,{"b":[]}]}"#), 4);
        assert_eq!(nesting_depth(br#"{"a":"[[[[\"[[[{{{"}"#), 1);
        assert_eq!(nesting_depth(br#"]]]][{"#), 2);
    }

    #[test]
    fn deep_json_is_refused_not_a_stack_overflow() {
        for depth in [65usize, 10_000, 1_000_000] {
            let body = format!("{{\"e\":{}1{}}}", "[".repeat(depth), "]".repeat(depth));
            let r: Result<WireError, String> = from_json(body.as_bytes());
            assert!(r.unwrap_err().contains("nested"));
        }
        let ok = format!(
            "{{\"error\":\"x\",\"n\":{}1{}}}",
            "[".repeat(60),
            "]".repeat(60)
        );
        assert_eq!(from_json::<WireError>(ok.as_bytes()).unwrap().error, "x");
    }
}
