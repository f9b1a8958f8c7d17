//! Test helper: splits a raw HTTP/1.1 response, as it appears on the wire, into status,
//! headers and a de-chunked body, and hands it to a decoder as a `Reply`.

#![allow(dead_code)]

use std::path::PathBuf;

use bookbroker_protocols::http::{HttpResponse, Reply};

/// A parsed response.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// Parses one complete response (Content-Length or chunked framing).
    pub fn parse(raw: &[u8]) -> RawResponse {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(raw).expect("valid response head") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("incomplete response head"),
        };
        let status = resp.code.expect("status code");
        let headers: Vec<(String, String)> = resp
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8(h.value.to_vec()).expect("header is UTF-8"),
                )
            })
            .collect();
        let rest = &raw[head_len..];
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            dechunk(rest)
        } else if let Some(len) = header("content-length") {
            let len: usize = len.trim().parse().expect("numeric content-length");
            assert!(rest.len() >= len, "body shorter than Content-Length");
            rest[..len].to_vec()
        } else {
            rest.to_vec()
        };
        RawResponse {
            status,
            headers,
            body,
        }
    }

    /// Reads and parses `tests/fixtures/<name>`.
    pub fn fixture(name: &str) -> RawResponse {
        RawResponse::parse(&fixture_bytes(name))
    }

    /// A header's value (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
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
}

/// Removes chunked framing (chunk extensions and trailers allowed).
pub fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let (consumed, size) = match httparse::parse_chunk_size(rest).expect("valid chunk size") {
            httparse::Status::Complete(x) => x,
            httparse::Status::Partial => panic!("incomplete chunk size line"),
        };
        rest = &rest[consumed..];
        let size = usize::try_from(size).expect("chunk size fits");
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n", "chunk not followed by CRLF");
        rest = &rest[size + 2..];
    }
    body
}

pub fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

pub fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
