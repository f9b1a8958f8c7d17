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
    percent_encode(value)
}

/// Percent-encodes a path segment (RFC 3986 unreserved characters stay as they are), so
/// an id with `/` or `?` cannot change the route.
pub fn encode_path_segment(value: &str) -> String {
    percent_encode(value)
}

fn percent_encode(value: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(value.len());
    for &b in value.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`); invalid escapes or
/// UTF-8 are an error.
///
/// Hand-written rather than `percent-encoding`/`form_urlencoded`: those pass an invalid
/// escape through as text and replace invalid UTF-8 with U+FFFD, and a customer's
/// malformed query must be a 400 naming it, not a search for something else.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, crate::RequestError> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(h), Some(l)) => out.push(h << 4 | l),
                    _ => {
                        return Err(crate::RequestError::Malformed(
                            "invalid percent escape".to_string(),
                        ))
                    }
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map_err(|_| crate::RequestError::Malformed("query is not UTF-8".to_string()))
}

/// Splits a query string (without `?`) into decoded `(name, value)` pairs; `+` is a space.
/// Invalid percent escapes or UTF-8 are an error.
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, crate::RequestError> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(name, true)?, percent_decode(value, true)?))
        })
        .collect()
}

/// The first value of query parameter `name`, if present.
pub fn query_param<'q>(pairs: &'q [(String, String)], name: &str) -> Option<&'q str> {
    pairs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Parses `Retry-After` given in seconds into milliseconds.
/// (An HTTP-date form is not understood and gives `None`.)
pub fn retry_after_ms(value: Option<&str>) -> Option<u64> {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| s.saturating_mul(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(encode_query_value("abc-._~XYZ09"), "abc-._~XYZ09");
        assert_eq!(
            encode_query_value("C & C++ / é?"),
            "C%20%26%20C%2B%2B%20%2F%20%C3%A9%3F"
        );
        assert_eq!(encode_path_segment("so/1?x"), "so%2F1%3Fx");
    }

    #[test]
    fn parses_queries() {
        let q = parse_query("isbn=978&q=C+%26+C%2B%2B&flag&=v&&x=%C3%A9").unwrap();
        assert_eq!(
            q,
            vec![
                ("isbn".into(), "978".into()),
                ("q".into(), "C & C++".into()),
                ("flag".into(), String::new()),
                (String::new(), "v".into()),
                ("x".into(), "é".into()),
            ]
        );
        assert_eq!(query_param(&q, "q"), Some("C & C++"));
        assert_eq!(query_param(&q, "nope"), None);
        assert_eq!(parse_query("").unwrap(), vec![]);
        assert_eq!(parse_query("?a=b").unwrap(), vec![("a".into(), "b".into())]);
        for bad in ["a=%", "a=%4", "a=%zz", "a=%FF", "%C3=1"] {
            assert!(parse_query(bad).is_err(), "{bad}");
        }
        let title = "Les Misérables: tome 1 & 2 / 日本 +x";
        let q = parse_query(&format!("q={}", encode_query_value(title))).unwrap();
        assert_eq!(query_param(&q, "q"), Some(title));
    }

    #[test]
    fn retry_after() {
        assert_eq!(retry_after_ms(Some(" 2 ")), Some(2000));
        assert_eq!(retry_after_ms(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after_ms(None), None);
        assert_eq!(retry_after_ms(Some("99999999999999999999")), None);
        assert_eq!(retry_after_ms(Some("18446744073709551615")), Some(u64::MAX));
    }
}
