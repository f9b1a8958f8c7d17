//! Request errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every 4xx the engine sends is one of these, so a client always gets a machine-readable
//! `type`, a stable `title`, the `status` and a `detail` that says what to fix.

use serde::Serialize;

/// A problem answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiProblem {
    /// HTTP status.
    pub status: u16,
    /// Short slug naming the kind of problem; `type` is `/problems/<kind>`.
    pub kind: &'static str,
    /// Human title, the same for every problem of this kind.
    pub title: &'static str,
    /// What exactly is wrong with this request.
    pub detail: String,
    /// Extension members (RFC 9457 section 3.2) a program can act on, e.g. the node that
    /// owns a misdirected purchase. Empty for most problems.
    pub extensions: Vec<(&'static str, serde_json::Value)>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(flatten)]
    extensions: serde_json::Map<String, serde_json::Value>,
}

impl ApiProblem {
    /// The content type of problem bodies.
    pub const CONTENT_TYPE: &'static str = "application/problem+json";

    fn new(
        status: u16,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        ApiProblem {
            status,
            kind,
            title,
            detail: detail.into(),
            extensions: Vec::new(),
        }
    }

    /// 400: the request is malformed or a field is invalid.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(400, "invalid-request", "Invalid request", detail)
    }
    /// 401: missing or wrong API key.
    pub fn unauthorized() -> Self {
        Self::new(
            401,
            "unauthorized",
            "Unauthorized",
            "send a valid API key as 'Authorization: Bearer <key>'",
        )
    }
    /// 404: no such route or resource.
    pub fn not_found() -> Self {
        Self::new(404, "not-found", "Not found", "no such resource")
    }
    /// 405: the route exists but not with this method.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "method-not-allowed",
            "Method not allowed",
            "see the Allow header",
        )
    }
    /// 409: the same idempotency key is still being processed.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(409, "conflict", "Conflict", detail)
    }
    /// 408: the request body did not arrive in time.
    pub fn request_timeout(limit_ms: u64) -> Self {
        Self::new(
            408,
            "request-timeout",
            "Request timeout",
            format!("the request body must arrive within {limit_ms} ms"),
        )
    }
    /// 429: too much at once from this customer or on this engine; retry after the
    /// `Retry-After` delay.
    pub fn too_many_requests(detail: impl Into<String>) -> Self {
        Self::new(429, "too-many-requests", "Too many requests", detail)
    }
    /// 413: the body is too large.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            413,
            "payload-too-large",
            "Payload too large",
            format!("request bodies are limited to {limit} bytes"),
        )
    }
    /// 414: the request target (path and query) is longer than the engine accepts.
    pub fn uri_too_long(limit: usize) -> Self {
        Self::new(
            414,
            "uri-too-long",
            "URI too long",
            format!("request targets are limited to {limit} bytes"),
        )
    }
    /// 415: wrong content type.
    pub fn unsupported_media_type() -> Self {
        Self::new(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "send the body as application/json",
        )
    }
    /// 422: the same idempotency key was used with another request.
    pub fn unprocessable(detail: impl Into<String>) -> Self {
        Self::new(422, "unprocessable", "Unprocessable request", detail)
    }
    /// 431: too many or too large headers.
    pub fn too_many_headers() -> Self {
        Self::new(
            431,
            "headers-too-large",
            "Request header fields too large",
            "send fewer or smaller headers",
        )
    }
    /// 503: the engine is overloaded or shutting down; retry later.
    pub fn service_unavailable(detail: impl Into<String>) -> Self {
        Self::new(503, "unavailable", "Service unavailable", detail)
    }
    /// 421: the request belongs to another node of the cluster (a purchase of another
    /// partition); nothing was started. `partition` and `owner` name where it belongs.
    pub fn misdirected(detail: impl Into<String>, partition: u32, owner: &str) -> Self {
        let mut p = Self::new(421, "misdirected", "Misdirected request", detail);
        p.extensions = vec![
            ("partition", serde_json::Value::from(partition)),
            ("owner", serde_json::Value::from(owner)),
        ];
        p
    }
    /// 500: a bug in the engine.
    pub fn internal() -> Self {
        Self::new(
            500,
            "internal",
            "Internal error",
            "the engine failed; this is a bug",
        )
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        let body = Body {
            kind: format!("/problems/{}", self.kind),
            title: self.title,
            status: self.status,
            detail: &self.detail,
            extensions: self
                .extensions
                .iter()
                .map(|(k, v)| ((*k).to_string(), v.clone()))
                .collect(),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_rfc9457_members() {
        let v: serde_json::Value =
            serde_json::from_slice(&ApiProblem::bad_request("isbn: bad \"x\"").body()).unwrap();
        assert_eq!(v["type"], "/problems/invalid-request");
        assert_eq!(v["title"], "Invalid request");
        assert_eq!(v["status"], 400);
        assert_eq!(v["detail"], "isbn: bad \"x\"");
        assert_eq!(v.as_object().map(|o| o.len()), Some(4));
    }

    #[test]
    fn misdirected_names_the_owner() {
        let v: serde_json::Value = serde_json::from_slice(
            &ApiProblem::misdirected("elsewhere", 2, "10.0.0.3:8080").body(),
        )
        .unwrap();
        assert_eq!(v["type"], "/problems/misdirected");
        assert_eq!(v["status"], 421);
        assert_eq!(v["partition"], 2);
        assert_eq!(v["owner"], "10.0.0.3:8080");
    }
}
