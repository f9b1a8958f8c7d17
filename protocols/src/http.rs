//! Transport-neutral HTTP values. Client-side encoders produce an [`HttpRequest`] and
//! decoders take a [`Reply`]; server-side decoders take the request's parts and encoders
//! produce an [`HttpResponse`]. Whoever owns the socket (hyper in the engine and in
//! `sellersim`) moves these onto the wire.

/// An HTTP request to send, as a client-side encoder built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Path and query, already percent-encoded (e.g. `/v1/offers?isbn=978…`).
    pub path_and_query: String,
    /// Extra headers (content type, idempotency key).
    pub headers: Vec<(&'static str, String)>,
    /// The body (empty for GET).
    pub body: Vec<u8>,
}

/// An HTTP answer as a decoder sees it.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// Status code.
    pub status: u16,
    /// The `Retry-After` header, if any (seconds, as sent).
    pub retry_after: Option<&'a str>,
    /// The whole (de-chunked) body.
    pub body: &'a [u8],
}

/// An HTTP answer to send, as a server-side encoder built it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Content type of the body.
    pub content_type: &'static str,
    /// Extra headers (e.g. `Retry-After`).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Percent-encodes a query-string value (RFC 3986 unreserved characters stay as they are).
pub fn encode_query_value(value: &str) -> String {
    let _ = value;
    todo!()
}

/// Splits a query string (without `?`) into decoded `(name, value)` pairs; `+` is a space.
/// Invalid percent escapes or UTF-8 are an error.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, crate::RequestError> {
    let _ = query;
    todo!()
}

/// Parses `Retry-After` given in seconds into milliseconds.
pub fn retry_after_ms(value: Option<&str>) -> Option<u64> {
    value.and_then(|v| v.trim().parse::<u64>().ok()).map(|s| s.saturating_mul(1000))
}
