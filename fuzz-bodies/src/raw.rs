//! A raw HTTP/1.1 response, as a seller or the payment provider puts it on the wire, cut
//! into what a decoder sees. The engine gets this from hyper; the fuzzers get it from
//! bytes, so the corpora can be real captures (the fixture files) and a mutated head or
//! chunked body reaches the decoders the way a broken partner would send it.
//!
//! Total: any input gives `None` or a reply, never a panic.

use bookbroker_protocols::http::Reply;

/// Most headers read; more make the input uninteresting rather than an error.
const MAX_HEADERS: usize = 64;

/// A response cut into status, `Retry-After` and a de-chunked body.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// `Retry-After`, when present and UTF-8.
    pub retry_after: Option<String>,
    /// The body: Content-Length bytes, de-chunked, or everything after the head.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Parses one response; `None` when the head is incomplete or not HTTP, or the
    /// framing is broken (as hyper would refuse it).
    pub fn parse(raw: &[u8]) -> Option<RawResponse> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(raw) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return None,
        };
        let status = resp.code?;
        let find = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .and_then(|h| std::str::from_utf8(h.value).ok())
        };
        let rest = raw.get(head_len..)?;
        let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            dechunk(rest)?
        } else if let Some(len) = find("content-length") {
            let len: usize = len.trim().parse().ok()?;
            rest.get(..len)?.to_vec()
        } else {
            rest.to_vec()
        };
        Some(RawResponse {
            status,
            retry_after: find("retry-after").map(str::to_string),
            body,
        })
    }

    /// What a decoder sees.
    pub fn reply(&self) -> Reply<'_> {
        Reply {
            status: self.status,
            retry_after: self.retry_after.as_deref(),
            body: &self.body,
        }
    }
}

/// Joins the chunks of a chunked body (extensions and trailers skipped); `None` when the
/// framing is broken.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_line = std::str::from_utf8(rest.get(..eol)?).ok()?;
        let size_hex = size_line.split(';').next()?.trim();
        let size = usize::from_str_radix(size_hex, 16).ok()?;
        rest = rest.get(eol + 2..)?;
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
        assert_eq!(r.retry_after.as_deref(), Some("2"));
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
