//! The `json` seller protocol (HTTP/1.1, modelled on eBay's Browse API): amounts are
//! decimal strings with a currency.
//!
//! Client side (the engine): [`encode_quote`], [`decode_quote`], [`encode_order`],
//! [`decode_order`], [`encode_cancel`], [`decode_cancel`].
//! Server side (`sellersim`): the [`server`] module.

use crate::error::DecodeError;
use crate::http::{HttpRequest, Reply};
use crate::offer::{CancelOutcome, OrderOutcome, OrderRequest, QuoteQuery, SellerOffer};

/// `GET /v1/offers?isbn=…` or `?q=<title>`.
pub fn encode_quote(query: &QuoteQuery) -> HttpRequest {
    let _ = query;
    todo!()
}

/// Decodes a quote answer: `200 {"offers": [...]}`; 429/503 are [`DecodeError::Busy`],
/// other statuses [`DecodeError::Status`]. Unknown fields are ignored; offers whose ISBN,
/// amount or currency is invalid make the whole answer malformed.
pub fn decode_quote(reply: Reply<'_>) -> Result<Vec<SellerOffer>, DecodeError> {
    let _ = reply;
    todo!()
}

/// `POST /v1/orders` with `Idempotency-Key`.
pub fn encode_order(order: &OrderRequest) -> HttpRequest {
    let _ = order;
    todo!()
}

/// Decodes `201 {"order_id", "total"}`, `409 {"error":"sold_out"}`,
/// `409 {"error":"price_changed","total":{…}}`.
pub fn decode_order(reply: Reply<'_>) -> Result<OrderOutcome, DecodeError> {
    let _ = reply;
    todo!()
}

/// `POST /v1/orders/{order_id}/cancel` (the id is percent-encoded into the path).
pub fn encode_cancel(order_id: &str) -> HttpRequest {
    let _ = order_id;
    todo!()
}

/// Decodes `200 {"order_id", "status": "cancelled"}`.
pub fn decode_cancel(reply: Reply<'_>) -> Result<CancelOutcome, DecodeError> {
    let _ = reply;
    todo!()
}

/// The server side, for simulated sellers.
pub mod server {
    use crate::error::RequestError;
    use crate::http::HttpResponse;
    use crate::offer::{OrderOutcome, OrderRequest, QuoteQuery, SellerOffer};

    /// A request a json seller understands, decoded from method, path and query.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Route {
        /// `GET /v1/offers`.
        Quote,
        /// `POST /v1/orders`.
        Order,
        /// `POST /v1/orders/{id}/cancel`.
        Cancel(String),
        /// `GET /admin/orders`.
        AdminOrders,
        /// Anything else.
        NotFound,
    }

    /// Routes a request by method and path (without query).
    pub fn route(method: &str, path: &str) -> Route {
        let _ = (method, path);
        todo!()
    }

    /// Reads the query of `GET /v1/offers` (`isbn=` or `q=`).
    pub fn decode_quote(query: &str) -> Result<QuoteQuery, RequestError> {
        let _ = query;
        todo!()
    }

    /// `200 {"offers": [...]}` with decimal-string amounts.
    pub fn encode_quote(offers: &[SellerOffer]) -> HttpResponse {
        let _ = offers;
        todo!()
    }

    /// Reads the body of `POST /v1/orders` and its `Idempotency-Key` header.
    pub fn decode_order(
        idempotency_key: Option<&str>,
        body: &[u8],
    ) -> Result<OrderRequest, RequestError> {
        let _ = (idempotency_key, body);
        todo!()
    }

    /// `201`, or `409` with `sold_out` / `price_changed`.
    pub fn encode_order(outcome: &OrderOutcome) -> HttpResponse {
        let _ = outcome;
        todo!()
    }

    /// `200 {"order_id": …, "status": "cancelled"}`.
    pub fn encode_cancel(order_id: &str) -> HttpResponse {
        let _ = order_id;
        todo!()
    }

    /// A JSON error answer such as `400 {"error": "…"}` or `429` with `Retry-After`.
    pub fn encode_error(status: u16, error: &str, retry_after_s: Option<u64>) -> HttpResponse {
        let _ = (status, error, retry_after_s);
        todo!()
    }
}
