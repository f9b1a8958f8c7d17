//! Validation of `POST /v1/purchases`: headers, body, and the request fingerprint that
//! decides whether a reused idempotency key carries the same request. Pure functions,
//! so every rule is tested without sockets.

use bookbroker_protocols::{ConditionFilter, Currency, FxTable, Isbn};
use serde::Deserialize;

use super::secrets::{Secret, TokenCipher};
use crate::problem::ApiProblem;
use bookbroker_protocols::offer::MAX_TITLE_BYTES;

/// Longest idempotency key (the draft's limit for this API).
pub const MAX_KEY_LEN: usize = 255;
/// Longest payment or shipping token.
pub const MAX_TOKEN_LEN: usize = 256;
/// Highest `max_price` accepted, in minor units: anything above is a typo.
pub const MAX_PRICE_LIMIT: i64 = 100_000_000;

/// A validated purchase request, ready for the owning core.
#[derive(Debug)]
pub struct PurchaseRequest {
    /// Customer id.
    pub customer: String,
    /// Idempotency key.
    pub key: String,
    /// ISBN-13 or title (exactly one).
    pub isbn: Option<Isbn>,
    /// Title, when given instead of an ISBN.
    pub title: Option<String>,
    /// Highest total, minor units of `currency`.
    pub max_price: i64,
    /// Customer currency.
    pub currency: Currency,
    /// Condition filter.
    pub condition: ConditionFilter,
    /// Payment token (secret).
    pub payment_token: Secret,
    /// Shipping token (secret).
    pub shipping_token: Secret,
    /// Keyed digest of everything above but the key: equal for equal requests.
    pub fingerprint: String,
    /// `Prefer: respond-async`.
    pub respond_async: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(default, deserialize_with = "present")]
    isbn: Option<String>,
    #[serde(default, deserialize_with = "present")]
    title: Option<String>,
    max_price: serde_json::Value,
    #[serde(default, deserialize_with = "present")]
    currency: Option<String>,
    #[serde(default, deserialize_with = "present")]
    condition: Option<String>,
    #[serde(default, deserialize_with = "present")]
    payment_token: Option<String>,
    #[serde(default, deserialize_with = "present")]
    shipping_token: Option<String>,
}

/// A field that may be left out but, when present, is a string: `"condition": null` is a
/// wrong type (400), not a silent default.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// Checks an `Idempotency-Key` header value: 1–255 visible ASCII characters.
pub fn check_key(key: Option<&[u8]>) -> Result<String, ApiProblem> {
    let key = key.ok_or_else(|| {
        ApiProblem::bad_request("the Idempotency-Key header is required for purchases")
    })?;
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(ApiProblem::bad_request(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} characters"
        )));
    }
    if !key.iter().all(|b| (0x21..=0x7e).contains(b)) {
        return Err(ApiProblem::bad_request(
            "Idempotency-Key must be visible ASCII characters",
        ));
    }
    Ok(String::from_utf8_lossy(key).into_owned())
}

/// Whether a `Prefer` header asks for `respond-async`.
pub fn prefers_async(prefer: Option<&[u8]>) -> bool {
    prefer.is_some_and(|v| {
        String::from_utf8_lossy(v)
            .split([',', ';'])
            .any(|p| p.trim().eq_ignore_ascii_case("respond-async"))
    })
}

fn token(value: Option<String>, field: &str) -> Result<Secret, ApiProblem> {
    let v = value.ok_or_else(|| ApiProblem::bad_request(format!("{field} is required")))?;
    if v.is_empty() || v.len() > MAX_TOKEN_LEN || !v.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        // The value is a secret: the message never repeats it.
        return Err(ApiProblem::bad_request(format!(
            "{field} must be 1 to {MAX_TOKEN_LEN} visible ASCII characters"
        )));
    }
    Ok(Secret::new(v))
}

/// Parses and validates the JSON body. Every problem is a 400 naming the field.
pub fn parse_body(
    customer: &str,
    key: String,
    body: &[u8],
    fx: &FxTable,
    cipher: &TokenCipher,
    respond_async: bool,
) -> Result<PurchaseRequest, ApiProblem> {
    let b: Body = serde_json::from_slice(body).map_err(|e| {
        // serde's message may quote the input, tokens included: keep only its position.
        ApiProblem::bad_request(format!(
            "the body is not a valid purchase request (line {}, column {}): {}",
            e.line(),
            e.column(),
            match e.classify() {
                serde_json::error::Category::Data =>
                    "a field is missing, unknown or of the wrong type",
                _ => "malformed JSON",
            }
        ))
    })?;
    let (isbn, title) = match (b.isbn, b.title) {
        (Some(_), Some(_)) => return Err(ApiProblem::bad_request("give isbn or title, not both")),
        (None, None) => return Err(ApiProblem::bad_request("isbn or title is required")),
        (Some(i), None) => (
            Some(Isbn::parse(&i).map_err(|e| ApiProblem::bad_request(format!("isbn: {e}")))?),
            None,
        ),
        (None, Some(t)) => {
            if t.trim().is_empty() || t.len() > MAX_TITLE_BYTES || t.chars().any(char::is_control) {
                return Err(ApiProblem::bad_request(format!(
                    "title must be 1 to {MAX_TITLE_BYTES} bytes without control characters"
                )));
            }
            (None, Some(t))
        }
    };
    let max_price = b
        .max_price
        .as_i64()
        .filter(|p| (1..=MAX_PRICE_LIMIT).contains(p))
        .ok_or_else(|| {
            ApiProblem::bad_request(format!(
                "max_price must be a whole number of minor units from 1 to {MAX_PRICE_LIMIT}"
            ))
        })?;
    let code = b
        .currency
        .ok_or_else(|| ApiProblem::bad_request("currency is required"))?;
    let currency = Currency::parse(&code)
        .ok()
        .filter(|c| fx.knows(*c))
        .ok_or_else(|| ApiProblem::bad_request("currency: unknown or without an exchange rate"))?;
    let condition = match b.condition.as_deref() {
        None => ConditionFilter::Any,
        Some(c) => ConditionFilter::parse(c)
            .ok_or_else(|| ApiProblem::bad_request("condition: expected any, new or used"))?,
    };
    let payment_token = token(b.payment_token, "payment_token")?;
    let shipping_token = token(b.shipping_token, "shipping_token")?;
    // Canonical form: equal requests written differently (spacing, field order) have
    // one fingerprint. Tokens are part of the request, so they are in it too, and the
    // digest is keyed so it cannot be reversed into a token.
    let canonical = serde_json::json!([
        isbn.as_ref().map(|i| i.as_str().to_string()),
        title,
        max_price,
        currency.code(),
        condition_name(condition),
        payment_token.expose(),
        shipping_token.expose(),
    ]);
    let fingerprint = cipher.fingerprint(canonical.to_string().as_bytes());
    Ok(PurchaseRequest {
        customer: customer.to_string(),
        key,
        isbn,
        title,
        max_price,
        currency,
        condition,
        payment_token,
        shipping_token,
        fingerprint,
        respond_async,
    })
}

/// The name of a condition filter, as the API spells it.
pub fn condition_name(c: ConditionFilter) -> &'static str {
    match c {
        ConditionFilter::Any => "any",
        ConditionFilter::New => "new",
        ConditionFilter::Used => "used",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx() -> FxTable {
        FxTable::new(Currency::parse("USD").unwrap(), &[]).unwrap()
    }

    fn cipher() -> TokenCipher {
        TokenCipher::from_bytes(&[1u8; 32]).unwrap()
    }

    fn parse(body: &str) -> Result<PurchaseRequest, ApiProblem> {
        parse_body(
            "alice",
            "k".into(),
            body.as_bytes(),
            &fx(),
            &cipher(),
            false,
        )
    }

    const OK: &str = r#"{"isbn":"978-0-13-110362-7","max_price":2000,"currency":"USD","payment_token":"tok_ok_4242","shipping_token":"ship_home"}"#;

    #[test]
    fn a_valid_body_parses_and_its_fingerprint_ignores_layout() {
        let a = parse(OK).unwrap();
        assert_eq!(a.isbn.as_ref().unwrap().as_str(), "9780131103627");
        let spaced = OK
            .replace(',', " , ")
            .replace("978-0-13-110362-7", "9780131103627");
        assert_eq!(parse(&spaced).unwrap().fingerprint, a.fingerprint);
        let other = OK.replace("2000", "2001");
        assert_ne!(parse(&other).unwrap().fingerprint, a.fingerprint);
    }

    #[test]
    fn bad_fields_are_400_and_never_echo_tokens() {
        for bad in [
            "{",
            "[]",
            &OK.replace("2000", "-5"),
            &OK.replace("2000", "1e12"),
            &OK.replace("2000", "\"20\""),
            &OK.replace("USD", "XXX"),
            &OK.replace("USD", "EUR"),
            &OK.replace("9780131103627", "9780131103628")
                .replace("978-0-13-110362-7", "9780131103628"),
            &OK.replace("\"ship_home\"", "\"\""),
            &OK.replace("tok_ok_4242", "tok with space"),
            &OK.replace("}", ",\"extra\":1}"),
            &OK.replace("}", ",\"condition\":null}"),
            &OK.replace("\"USD\"", "null"),
            &OK.replace("\"tok_ok_4242\"", "null"),
        ] {
            let p = parse(bad).unwrap_err();
            assert_eq!(p.status, 400, "{bad}");
            let text = String::from_utf8(p.body()).unwrap();
            assert!(!text.contains("tok_"), "{text}");
        }
    }

    #[test]
    fn keys_and_prefer() {
        assert!(check_key(None).is_err());
        assert!(check_key(Some(b"")).is_err());
        assert!(check_key(Some(&[b'a'; 256])).is_err());
        assert!(check_key(Some(b"has space")).is_err());
        assert_eq!(check_key(Some(&[b'a'; 255])).unwrap().len(), 255);
        assert!(prefers_async(Some(b"respond-async, wait=10")));
        assert!(!prefers_async(Some(b"return=minimal")));
        assert!(!prefers_async(None));
    }
}
