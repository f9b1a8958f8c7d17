//! A captured HTTP/1.1 response, as it appears on the wire, cut into what a decoder sees.
//! The engine reads its answers with `http1` (quotes) or hyper (orders, payments);
//! fixture tests, fuzzers and benchmarks get them from bytes, so their inputs can be real
//! captures and a broken head or chunked body reaches the decoders the way a broken
//! partner would send it.
//!
//! Total: any input gives `None` or a response, never a panic.

use crate::http::{HttpResponse, Reply};

/// Most headers read; a capture with more is refused.
const MAX_HEADERS: usize = 64;

/// A response cut into status, headers and a de-chunked body.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names in lower case (values that are not UTF-8 are left out).
    pub headers: Vec<(String, String)>,
    /// The body: Content-Length bytes, de-chunked, or everything after the head.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Parses one response; `None` when the head is incomplete or not HTTP, or the body's
    /// framing is broken (as hyper would refuse it).
    pub fn parse(raw: &[u8]) -> Option<RawResponse> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(raw) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return None,
        };
        let status = resp.code?;
        let headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .filter_map(|h| {
                let value = std::str::from_utf8(h.value).ok()?;
                Some((h.name.to_ascii_lowercase(), value.to_string()))
            })
            .collect();
        let mut out = RawResponse {
            status,
            headers,
            body: Vec::new(),
        };
        let rest = raw.get(head_len..)?;
        out.body = if out
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            dechunk(rest)?
        } else if let Some(len) = out.header("content-length") {
            let len: usize = len.trim().parse().ok()?;
            rest.get(..len)?.to_vec()
        } else {
            rest.to_vec()
        };
        Some(out)
    }

    /// The same view of a server-side encoder's answer.
    pub fn from_encoded(resp: &HttpResponse) -> RawResponse {
        let mut headers = vec![("content-type".to_string(), resp.content_type.to_string())];
        headers.extend(
            resp.headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone())),
        );
        RawResponse {
            status: resp.status,
            headers,
            body: resp.body.clone(),
        }
    }

    /// A header's value (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// What a decoder sees.
    pub fn reply(&self) -> Reply<'_> {
        Reply {
            status: self.status,
            retry_after: self.header("retry-after"),
            body: &self.body,
        }
    }
}

/// Joins the chunks of a chunked body (extensions and trailers allowed); `None` when the
/// framing is broken.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let (consumed, size) = match httparse::parse_chunk_size(rest) {
            Ok(httparse::Status::Complete(x)) => x,
            _ => return None,
        };
        rest = rest.get(consumed..)?;
        let size = usize::try_from(size).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_chunked_answer() {
        let raw = b"HTTP/1.1 503 Busy\r\nRetry-After: 2\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let r = RawResponse::parse(raw).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.reply().retry_after, Some("2"));
        assert_eq!(r.body, b"abcde");
    }

    #[test]
    fn broken_framing_is_none() {
        assert!(RawResponse::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc").is_none());
        assert!(
            RawResponse::parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
                .is_none()
        );
        assert!(RawResponse::parse(b"HTTP/1.1 200").is_none());
    }
}
