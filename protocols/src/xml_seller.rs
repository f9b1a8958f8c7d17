//! The `xml` seller protocol (HTTP/1.1, modelled on AbeBooks' search service).
//!
//! Client side (the engine): [`encode_quote`], [`decode_quote`], [`encode_order`],
//! [`decode_order`], [`encode_cancel`], [`decode_cancel`].
//! Server side (`sellersim`): the [`server`] module. Whitespace around element text is
//! trimmed and entities are decoded.

use crate::error::DecodeError;
use crate::http::{HttpRequest, Reply};
use crate::offer::{CancelOutcome, OrderOutcome, OrderRequest, QuoteQuery, SellerOffer};

/// `GET /search?isbn=…` or `?title=…`.
pub fn encode_quote(query: &QuoteQuery) -> HttpRequest {
    let _ = query;
    todo!()
}

/// Decodes `<searchResults>…<Book>…</Book></searchResults>`; `503` is
/// [`DecodeError::Busy`].
pub fn decode_quote(reply: Reply<'_>) -> Result<Vec<SellerOffer>, DecodeError> {
    let _ = reply;
    todo!()
}

/// `POST /order` with an `<order>` body (the idempotency key is `requestId`).
pub fn encode_order(order: &OrderRequest) -> HttpRequest {
    let _ = order;
    todo!()
}

/// Decodes `<orderResult>` with status `ok`, `soldOut` or `priceChanged`.
pub fn decode_order(reply: Reply<'_>) -> Result<OrderOutcome, DecodeError> {
    let _ = reply;
    todo!()
}

/// `POST /order/cancel` with `<cancel><orderId>…</orderId></cancel>`.
pub fn encode_cancel(order_id: &str) -> HttpRequest {
    let _ = order_id;
    todo!()
}

/// Decodes `<cancelResult><status>ok</status></cancelResult>`.
pub fn decode_cancel(reply: Reply<'_>) -> Result<CancelOutcome, DecodeError> {
    let _ = reply;
    todo!()
}

/// The server side, for simulated sellers.
pub mod server {
    use crate::error::RequestError;
    use crate::http::HttpResponse;
    use crate::money::Currency;
    use crate::offer::{OrderOutcome, OrderRequest, QuoteQuery, SellerOffer};

    /// A request an xml seller understands.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Route {
        /// `GET /search`.
        Quote,
        /// `POST /order`.
        Order,
        /// `POST /order/cancel`.
        Cancel,
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

    /// Reads the query of `GET /search` (`isbn=` or `title=`).
    pub fn decode_quote(query: &str) -> Result<QuoteQuery, RequestError> {
        let _ = query;
        todo!()
    }

    /// `200 <searchResults>` (text escaped).
    pub fn encode_quote(offers: &[SellerOffer]) -> HttpResponse {
        let _ = offers;
        todo!()
    }

    /// Reads an `<order>` body. `currency` is the seller's own, used when the
    /// `expectedTotal` element has no `currency` attribute.
    pub fn decode_order(body: &[u8], currency: Currency) -> Result<OrderRequest, RequestError> {
        let _ = (body, currency);
        todo!()
    }

    /// `200 <orderResult>`.
    pub fn encode_order(outcome: &OrderOutcome) -> HttpResponse {
        let _ = outcome;
        todo!()
    }

    /// Reads a `<cancel>` body, giving the order id.
    pub fn decode_cancel(body: &[u8]) -> Result<String, RequestError> {
        let _ = body;
        todo!()
    }

    /// `200 <cancelResult><status>ok</status></cancelResult>`.
    pub fn encode_cancel() -> HttpResponse {
        todo!()
    }

    /// `503` with `Retry-After` (overload), or another status with a short XML error.
    pub fn encode_error(status: u16, error: &str, retry_after_s: Option<u64>) -> HttpResponse {
        let _ = (status, error, retry_after_s);
        todo!()
    }
}
