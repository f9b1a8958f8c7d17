//! HTTP/1.1 client framing, sans-IO: a request written into a buffer, and a response
//! read incrementally from whatever bytes have arrived.
//!
//! The engine's quote path asks sellers over kept-alive HTTP/1.1 connections. This is
//! the framing it needs and nothing more: one request at a time, `Content-Length`,
//! chunked or read-to-close bodies, `1xx` heads skipped, `Connection: close` and
//! HTTP/1.0 honoured. [`ResponseReader`] keeps its state between calls, so a response
//! split at any byte (a slow or hostile partner) costs no re-parsing, and a body larger
//! than the limit is refused as it arrives, not after.
//!
//! Total: any input gives a response or an [`Http1Error`], never a panic.
//!
//! ```
//! use bookbroker_protocols::http::HttpRequest;
//! use bookbroker_protocols::http1::{write_request, ResponseReader};
//!
//! let req = HttpRequest {
//!     method: "GET",
//!     path_and_query: "/v1/offers?isbn=9780131103627".into(),
//!     headers: vec![("accept", "application/json".into())],
//!     body: Vec::new(),
//! };
//! let mut out = Vec::new();
//! write_request(&req, "books.example:8080", &mut out);
//! assert!(out.starts_with(b"GET /v1/offers?isbn=9780131103627 HTTP/1.1\r\nhost: books.example:8080\r\n"));
//!
//! let mut reader = ResponseReader::new(1 << 20);
//! let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
//! // The answer arrives in two pieces; the first is only part of the head.
//! assert_eq!(reader.feed(&wire[..10]).unwrap(), 0);
//! assert_eq!(reader.feed(wire).unwrap(), wire.len());
//! let resp = reader.finish().unwrap();
//! assert_eq!((resp.status, resp.body.as_slice(), resp.keep_alive), (200, &b"{}"[..], true));
//! ```

use std::io::Write;

use crate::http::HttpRequest;

/// Most header lines read in a response head.
const MAX_HEADERS: usize = 64;

/// Longest response head accepted (status line and headers).
pub const MAX_HEAD: usize = 16 * 1024;

/// Longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 1024;

/// Why a response could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Http1Error {
    /// The head is not HTTP/1.x, or a header is malformed.
    #[error("malformed response head: {0}")]
    Head(String),
    /// The head is longer than [`MAX_HEAD`].
    #[error("response head longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    /// `Content-Length` or the chunked framing is broken.
    #[error("malformed response body framing: {0}")]
    Framing(&'static str),
    /// The body is longer than the limit.
    #[error("response body longer than {0} bytes")]
    BodyTooLong(usize),
    /// The connection ended before the response did.
    #[error("connection closed before the response was complete")]
    Incomplete,
}

/// A response read whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Retry-After`, if present and UTF-8.
    pub retry_after: Option<String>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
    /// Whether the connection may carry another request.
    pub keep_alive: bool,
}

/// Writes `req` as an HTTP/1.1 request for `host` into `out` (appended). A body gets a
/// `content-length`; so does a `POST` without one.
pub fn write_request(req: &HttpRequest, host: &str, out: &mut Vec<u8>) {
    out.reserve(128 + req.path_and_query.len() + req.body.len());
    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &req.headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !req.body.is_empty() || req.method != "GET" {
        // Writing into a Vec cannot fail.
        let _ = write!(out, "content-length: {}\r\n", req.body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&req.body);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for a complete head.
    Head,
    /// This many body bytes still to come.
    Length(usize),
    /// Waiting for a chunk-size line.
    ChunkSize,
    /// This many bytes of the current chunk still to come.
    ChunkData(usize),
    /// Waiting for the CRLF after a chunk's data.
    ChunkEnd,
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// The body runs until the peer closes.
    UntilClose,
    /// The response is complete.
    Done,
}

/// Reads one response from bytes as they arrive. See the module docs for an example.
#[derive(Debug)]
pub struct ResponseReader {
    max_body: usize,
    state: State,
    status: u16,
    retry_after: Option<String>,
    keep_alive: bool,
    body: Vec<u8>,
}

impl ResponseReader {
    /// A reader that refuses bodies longer than `max_body`.
    pub fn new(max_body: usize) -> ResponseReader {
        ResponseReader {
            max_body,
            state: State::Head,
            status: 0,
            retry_after: None,
            keep_alive: true,
            body: Vec::new(),
        }
    }

    /// Takes what it can from `input` and says how many bytes it took. Bytes not taken
    /// (an incomplete head or chunk-size line) must be offered again, followed by what
    /// arrives next. Bytes after a complete response are not taken.
    pub fn feed(&mut self, input: &[u8]) -> Result<usize, Http1Error> {
        let mut taken = 0;
        loop {
            let rest = input.get(taken..).unwrap_or_default();
            let step = match self.state {
                State::Done => return Ok(taken),
                State::Head => self.head(rest)?,
                State::Length(left) => {
                    let n = left.min(rest.len());
                    self.push_body(rest.get(..n).unwrap_or_default())?;
                    self.state = match left - n {
                        0 => State::Done,
                        more => State::Length(more),
                    };
                    n
                }
                State::ChunkSize => self.chunk_size(rest)?,
                State::ChunkData(left) => {
                    let n = left.min(rest.len());
                    self.push_body(rest.get(..n).unwrap_or_default())?;
                    self.state = match left - n {
                        0 => State::ChunkEnd,
                        more => State::ChunkData(more),
                    };
                    n
                }
                State::ChunkEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        self.state = State::ChunkSize;
                        2
                    }
                    [] | [b'\r'] => 0,
                    _ => return Err(Http1Error::Framing("chunk data not followed by CRLF")),
                },
                State::Trailers => self.trailer(rest)?,
                State::UntilClose => {
                    self.push_body(rest)?;
                    rest.len()
                }
            };
            if step == 0 {
                return Ok(taken);
            }
            taken += step;
        }
    }

    /// Whether the response is complete.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether any of the response has been read (a complete head at least).
    pub fn started(&self) -> bool {
        self.state != State::Head
    }

    /// The peer closed the connection: completes a body that runs until close.
    pub fn close(&mut self) {
        if self.state == State::UntilClose {
            self.state = State::Done;
        }
    }

    /// The response, if complete.
    pub fn finish(self) -> Result<Response, Http1Error> {
        if self.state != State::Done {
            return Err(Http1Error::Incomplete);
        }
        Ok(Response {
            status: self.status,
            retry_after: self.retry_after,
            body: self.body,
            keep_alive: self.keep_alive,
        })
    }

    fn push_body(&mut self, data: &[u8]) -> Result<(), Http1Error> {
        if self.body.len().saturating_add(data.len()) > self.max_body {
            return Err(Http1Error::BodyTooLong(self.max_body));
        }
        self.body.extend_from_slice(data);
        Ok(())
    }

    fn head(&mut self, input: &[u8]) -> Result<usize, Http1Error> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        let len = match resp.parse(input) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if input.len() > MAX_HEAD => {
                return Err(Http1Error::HeadTooLong)
            }
            Ok(httparse::Status::Partial) => return Ok(0),
            Err(e) => return Err(Http1Error::Head(e.to_string())),
        };
        if len > MAX_HEAD {
            return Err(Http1Error::HeadTooLong);
        }
        let status = resp.code.unwrap_or(0);
        if (100..200).contains(&status) {
            // An interim answer (100 Continue, 103 Early Hints): the real one follows.
            return Ok(len);
        }
        self.status = status;
        self.keep_alive = resp.version == Some(1);
        let mut chunked = false;
        let mut length = None;
        for h in resp.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or(Http1Error::Framing("bad content-length"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(Http1Error::Framing("conflicting content-length"));
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = h
                    .value
                    .rsplit(|b| *b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                if !chunked {
                    return Err(Http1Error::Framing("unsupported transfer-encoding"));
                }
            } else if h.name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|b| *b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        self.keep_alive = false;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && resp.version == Some(0) {
                        self.keep_alive = true;
                    }
                }
            } else if h.name.eq_ignore_ascii_case("retry-after") {
                self.retry_after = std::str::from_utf8(h.value).ok().map(str::to_owned);
            }
        }
        self.state = if matches!(status, 204 | 304) {
            State::Done
        } else if chunked {
            State::ChunkSize
        } else if let Some(n) = length {
            if n > self.max_body {
                return Err(Http1Error::BodyTooLong(self.max_body));
            }
            self.body.reserve(n);
            if n == 0 {
                State::Done
            } else {
                State::Length(n)
            }
        } else {
            self.keep_alive = false;
            State::UntilClose
        };
        Ok(len)
    }

    fn chunk_size(&mut self, input: &[u8]) -> Result<usize, Http1Error> {
        match httparse::parse_chunk_size(input) {
            Ok(httparse::Status::Complete((len, size))) => {
                let size =
                    usize::try_from(size).map_err(|_| Http1Error::Framing("chunk too large"))?;
                if self.body.len().saturating_add(size) > self.max_body {
                    return Err(Http1Error::BodyTooLong(self.max_body));
                }
                self.state = if size == 0 {
                    State::Trailers
                } else {
                    State::ChunkData(size)
                };
                Ok(len)
            }
            Ok(httparse::Status::Partial) if input.len() > MAX_CHUNK_LINE => {
                Err(Http1Error::Framing("chunk-size line too long"))
            }
            Ok(httparse::Status::Partial) => Ok(0),
            Err(_) => Err(Http1Error::Framing("bad chunk size")),
        }
    }

    fn trailer(&mut self, input: &[u8]) -> Result<usize, Http1Error> {
        let Some(end) = input.windows(2).position(|w| w == b"\r\n") else {
            return if input.len() > MAX_HEAD {
                Err(Http1Error::HeadTooLong)
            } else {
                Ok(0)
            };
        };
        if end == 0 {
            self.state = State::Done;
        }
        Ok(end + 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(wire: &[u8], max: usize) -> Result<(Response, usize), Http1Error> {
        let mut r = ResponseReader::new(max);
        let n = r.feed(wire)?;
        if !r.is_done() {
            r.close();
        }
        r.finish().map(|resp| (resp, n))
    }

    #[test]
    fn lengths_chunks_and_close_delimited_bodies() {
        let (r, n) = read_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcNEXT", 100).unwrap();
        assert_eq!(
            (r.body.as_slice(), n, r.keep_alive),
            (&b"abc"[..], 41, true)
        );
        let (r, _) = read_all(
            b"HTTP/1.1 503 Busy\r\nRetry-After: 2\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
            100,
        )
        .unwrap();
        assert_eq!(
            (r.status, r.retry_after.as_deref(), r.body.as_slice()),
            (503, Some("2"), &b"abcde"[..])
        );
        let (r, _) = read_all(b"HTTP/1.0 200 OK\r\n\r\nuntil close", 100).unwrap();
        assert_eq!(
            (r.body.as_slice(), r.keep_alive),
            (&b"until close"[..], false)
        );
        let (r, _) = read_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
            100,
        )
        .unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        let (r, _) = read_all(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            100,
        )
        .unwrap();
        assert!(!r.keep_alive);
    }

    #[test]
    fn broken_or_oversized_answers_are_errors() {
        let e = |wire: &[u8]| read_all(wire, 8).unwrap_err();
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc"),
            Http1Error::BodyTooLong(8)
        );
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc"),
            Http1Error::Incomplete
        );
        assert!(matches!(
            e(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
            Http1Error::Framing(_)
        ));
        assert!(matches!(
            e(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Http1Error::Framing(_)
        ));
        assert!(matches!(
            e(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Http1Error::Framing(_)
        ));
        assert!(matches!(e(b"SMTP ready\r\n\r\n"), Http1Error::Head(_)));
        assert_eq!(
            e(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n"),
            Http1Error::BodyTooLong(8)
        );
        assert_eq!(e(b"HTTP/1.1 200"), Http1Error::Incomplete);
        let mut long = b"HTTP/1.1 200 OK\r\n".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_HEAD + 10));
        assert_eq!(read_all(&long, 8).unwrap_err(), Http1Error::HeadTooLong);
    }

    #[test]
    fn requests_carry_host_headers_and_length() {
        let req = HttpRequest {
            method: "POST",
            path_and_query: "/v1/orders".into(),
            headers: vec![("idempotency-key", "k1".into())],
            body: b"{}".to_vec(),
        };
        let mut out = Vec::new();
        write_request(&req, "h:1", &mut out);
        assert_eq!(
            out,
            b"POST /v1/orders HTTP/1.1\r\nhost: h:1\r\nidempotency-key: k1\r\ncontent-length: 2\r\n\r\n{}"
        );
    }
}
