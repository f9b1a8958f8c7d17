//! The `json` seller protocol (HTTP/1.1, modelled on eBay's Browse API): amounts are
//! decimal strings with a currency.
//!
//! Client side (the engine): [`encode_quote`], [`decode_quote`], [`encode_order`],
//! [`decode_order`], [`encode_cancel`], [`decode_cancel`].
//! Server side (`sellersim`): the [`server`] module.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::http::retry_after_ms;
use crate::http::{encode_path_segment, encode_query_value, HttpRequest, Reply};
use crate::isbn::Isbn;
use crate::offer::{CancelOutcome, Condition, OrderOutcome, OrderRequest, QuoteQuery, SellerOffer};
use crate::wire::{
    decode_json, json_body, shorten, unexpected_status, WireAmount, WireError, KEY_IN_USE,
};

/// `GET /v1/offers?isbn=…` or `?q=<title>`.
pub fn encode_quote(query: &QuoteQuery) -> HttpRequest {
    let path_and_query = match query {
        QuoteQuery::Isbn(isbn) => format!("/v1/offers?isbn={isbn}"),
        QuoteQuery::Title(title) => format!("/v1/offers?q={}", encode_query_value(title)),
    };
    HttpRequest {
        method: "GET",
        path_and_query,
        headers: vec![("accept", "application/json".to_string())],
        body: Vec::new(),
    }
}

#[derive(Deserialize)]
struct WireOffers {
    offers: Vec<WireOfferIn>,
}

#[derive(Deserialize)]
struct WireOfferIn {
    offer_id: String,
    isbn: String,
    #[serde(default)]
    title: String,
    condition: String,
    price: WireAmount,
    shipping: WireAmount,
    #[serde(default = "one")]
    quantity: u32,
}

fn one() -> u32 {
    1
}

#[derive(Serialize)]
struct WireOfferOut<'a> {
    offer_id: &'a str,
    isbn: &'a str,
    title: &'a str,
    condition: &'static str,
    price: WireAmount,
    shipping: WireAmount,
    quantity: u32,
}

#[derive(Serialize)]
struct WireOffersOut<'a> {
    offers: Vec<WireOfferOut<'a>>,
}

fn offer_from_wire(w: WireOfferIn) -> Result<SellerOffer, String> {
    let isbn =
        Isbn::parse(&w.isbn).map_err(|e| format!("offer {:?}: {e}", shorten(&w.offer_id)))?;
    let price = w
        .price
        .to_money()
        .map_err(|e| format!("offer {:?} price: {e}", shorten(&w.offer_id)))?;
    let shipping = w
        .shipping
        .to_money()
        .map_err(|e| format!("offer {:?} shipping: {e}", shorten(&w.offer_id)))?;
    if price.currency != shipping.currency {
        return Err(format!(
            "offer {:?}: price in {} but shipping in {}",
            shorten(&w.offer_id),
            price.currency,
            shipping.currency
        ));
    }
    if price.minor < 0 || shipping.minor < 0 {
        return Err(format!("offer {:?}: negative amount", shorten(&w.offer_id)));
    }
    Ok(SellerOffer {
        offer_id: w.offer_id,
        isbn,
        title: w.title,
        condition: Condition::from_seller(&w.condition),
        price: price.minor,
        shipping: shipping.minor,
        currency: price.currency,
        quantity: w.quantity,
    })
}

/// Decodes a quote answer: `200 {"offers": [...]}`; 429/503 are [`DecodeError::Busy`],
/// other statuses [`DecodeError::Status`]. Unknown fields are ignored; offers whose ISBN,
/// amount or currency is invalid make the whole answer malformed.
pub fn decode_quote(reply: Reply<'_>) -> Result<Vec<SellerOffer>, DecodeError> {
    if reply.status != 200 {
        return Err(unexpected_status(&reply));
    }
    let wire: WireOffers = decode_json(reply.body)?;
    wire.offers
        .into_iter()
        .map(|w| offer_from_wire(w).map_err(DecodeError::Malformed))
        .collect()
}

#[derive(Deserialize, Serialize)]
struct WireOrderRequest {
    offer_id: String,
    expected_total: WireAmount,
    #[serde(default)]
    shipping_token: String,
}

/// `POST /v1/orders` with `Idempotency-Key`.
pub fn encode_order(order: &OrderRequest) -> HttpRequest {
    let body = json_body(&WireOrderRequest {
        offer_id: order.offer_id.clone(),
        expected_total: WireAmount::from_money(order.expected_total),
        shipping_token: order.shipping_token.clone(),
    });
    HttpRequest {
        method: "POST",
        path_and_query: "/v1/orders".to_string(),
        headers: vec![
            ("content-type", "application/json".to_string()),
            ("idempotency-key", order.idempotency_key.clone()),
        ],
        body,
    }
}

#[derive(Deserialize, Serialize)]
struct WireOrdered {
    order_id: String,
    total: WireAmount,
}

#[derive(Deserialize, Serialize)]
struct WireOrderConflict {
    error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    total: Option<WireAmount>,
}

/// Just the order id of a confirmation, read first so that a confirmation whose total
/// cannot be read still names the order that must be undone.
#[derive(Deserialize)]
struct WireOrderId {
    order_id: String,
}

/// Decodes `201 {"order_id", "total"}`, `409 {"error":"sold_out"}`,
/// `409 {"error":"price_changed","total":{…}}`, and `409
/// {"error":"idempotency_key_in_use"}` ([`DecodeError::InProgress`]). A confirmation
/// with an order id but an unreadable total is [`DecodeError::Unconfirmed`].
pub fn decode_order(reply: Reply<'_>) -> Result<OrderOutcome, DecodeError> {
    match reply.status {
        200 | 201 => {
            let id: WireOrderId = decode_json(reply.body)?;
            if id.order_id.is_empty() {
                return Err(DecodeError::Malformed("empty order_id".to_string()));
            }
            let unconfirmed = |reason: String| DecodeError::Unconfirmed {
                order_id: id.order_id.clone(),
                reason,
            };
            let wire: WireOrdered =
                decode_json(reply.body).map_err(|e| unconfirmed(e.to_string()))?;
            let total = wire.total.to_money().map_err(unconfirmed)?;
            Ok(OrderOutcome::Ordered {
                order_id: wire.order_id,
                total,
            })
        }
        409 => {
            let wire: WireOrderConflict = decode_json(reply.body)?;
            match wire.error.as_str() {
                KEY_IN_USE => Err(DecodeError::InProgress {
                    retry_after_ms: retry_after_ms(reply.retry_after),
                }),
                "sold_out" => Ok(OrderOutcome::SoldOut),
                "price_changed" => {
                    let total = wire
                        .total
                        .ok_or_else(|| {
                            DecodeError::Malformed("price_changed without total".to_string())
                        })?
                        .to_money()
                        .map_err(DecodeError::Malformed)?;
                    Ok(OrderOutcome::PriceChanged { total })
                }
                other => Err(DecodeError::Remote {
                    code: shorten(other),
                    message: "order refused".to_string(),
                }),
            }
        }
        _ => Err(unexpected_status(&reply)),
    }
}

/// `POST /v1/orders/{order_id}/cancel` (the id is percent-encoded into the path).
pub fn encode_cancel(order_id: &str) -> HttpRequest {
    HttpRequest {
        method: "POST",
        path_and_query: format!("/v1/orders/{}/cancel", encode_path_segment(order_id)),
        headers: vec![("content-type", "application/json".to_string())],
        body: b"{}".to_vec(),
    }
}

#[derive(Deserialize, Serialize)]
struct WireCancelled {
    #[serde(default)]
    order_id: String,
    status: String,
}

/// Decodes `200 {"order_id", "status": "cancelled"}`.
pub fn decode_cancel(reply: Reply<'_>) -> Result<CancelOutcome, DecodeError> {
    if reply.status != 200 {
        return Err(unexpected_status(&reply));
    }
    let wire: WireCancelled = decode_json(reply.body)?;
    if wire.status.eq_ignore_ascii_case("cancelled") {
        Ok(CancelOutcome::Cancelled)
    } else {
        Err(DecodeError::Remote {
            code: shorten(&wire.status),
            message: "cancel not confirmed".to_string(),
        })
    }
}

/// Reads `{"error": "…"}` from an error answer, when the body has one.
pub fn error_code(body: &[u8]) -> Option<String> {
    decode_json::<WireError>(body).ok().map(|e| e.error)
}

/// The server side, for simulated sellers.
pub mod server {
    use super::{
        WireCancelled, WireOfferOut, WireOffersOut, WireOrderConflict, WireOrderRequest,
        WireOrdered,
    };
    use crate::error::RequestError;
    use crate::http::{percent_decode, HttpResponse};
    use crate::offer::{OrderOutcome, OrderRequest, QuoteQuery, SellerOffer};
    use crate::wire::{decode_request, json_response, WireAmount};

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
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match (method, path) {
            ("GET", "/v1/offers") => Route::Quote,
            ("POST", "/v1/orders") => Route::Order,
            ("GET", "/admin/orders") => Route::AdminOrders,
            ("POST", p) => {
                let id = p
                    .strip_prefix("/v1/orders/")
                    .and_then(|rest| rest.strip_suffix("/cancel"));
                match id {
                    Some(id) if !id.is_empty() && !id.contains('/') => {
                        match percent_decode(id, false) {
                            Ok(id) => Route::Cancel(id),
                            Err(_) => Route::NotFound,
                        }
                    }
                    _ => Route::NotFound,
                }
            }
            _ => Route::NotFound,
        }
    }

    /// Reads the query of `GET /v1/offers` (`isbn=` or `q=`).
    pub fn decode_quote(query: &str) -> Result<QuoteQuery, RequestError> {
        crate::wire::decode_search_query(query, "q", "isbn or q")
    }

    /// `200 {"offers": [...]}` with decimal-string amounts.
    pub fn encode_quote(offers: &[SellerOffer]) -> HttpResponse {
        let out = WireOffersOut {
            offers: offers
                .iter()
                .map(|o| WireOfferOut {
                    offer_id: &o.offer_id,
                    isbn: o.isbn.as_str(),
                    title: &o.title,
                    condition: o.condition.as_str(),
                    price: WireAmount::from_money(crate::Money::new(o.price, o.currency)),
                    shipping: WireAmount::from_money(crate::Money::new(o.shipping, o.currency)),
                    quantity: o.quantity,
                })
                .collect(),
        };
        json_response(200, &out)
    }

    /// Reads the body of `POST /v1/orders` and its `Idempotency-Key` header.
    pub fn decode_order(
        idempotency_key: Option<&str>,
        body: &[u8],
    ) -> Result<OrderRequest, RequestError> {
        let key = idempotency_key
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(RequestError::Missing("Idempotency-Key"))?;
        let wire: WireOrderRequest = decode_request(body)?;
        if wire.offer_id.is_empty() {
            return Err(RequestError::Missing("offer_id"));
        }
        let expected_total =
            wire.expected_total
                .to_money()
                .map_err(|reason| RequestError::Invalid {
                    field: "expected_total",
                    reason,
                })?;
        Ok(OrderRequest {
            offer_id: wire.offer_id,
            expected_total,
            idempotency_key: key.to_string(),
            shipping_token: wire.shipping_token,
        })
    }

    /// `201`, or `409` with `sold_out` / `price_changed`.
    pub fn encode_order(outcome: &OrderOutcome) -> HttpResponse {
        match outcome {
            OrderOutcome::Ordered { order_id, total } => json_response(
                201,
                &WireOrdered {
                    order_id: order_id.clone(),
                    total: WireAmount::from_money(*total),
                },
            ),
            OrderOutcome::SoldOut => json_response(
                409,
                &WireOrderConflict {
                    error: "sold_out".to_string(),
                    total: None,
                },
            ),
            OrderOutcome::PriceChanged { total } => json_response(
                409,
                &WireOrderConflict {
                    error: "price_changed".to_string(),
                    total: Some(WireAmount::from_money(*total)),
                },
            ),
        }
    }

    /// `200 {"order_id": …, "status": "cancelled"}`.
    pub fn encode_cancel(order_id: &str) -> HttpResponse {
        json_response(
            200,
            &WireCancelled {
                order_id: order_id.to_string(),
                status: "cancelled".to_string(),
            },
        )
    }

    /// A JSON error answer such as `400 {"error": "…"}` or `429` with `Retry-After`.
    pub fn encode_error(status: u16, error: &str, retry_after_s: Option<u64>) -> HttpResponse {
        crate::wire::json_error(status, error, retry_after_s)
    }

    /// `409 {"error": "idempotency_key_in_use"}`: an order with this idempotency key is
    /// still being worked on (design section 3, "Keys in progress"). The outcome is
    /// unknown, not refused: the client asks again with the same key.
    pub fn encode_in_progress() -> HttpResponse {
        encode_error(409, crate::wire::KEY_IN_USE, None)
    }

    #[cfg(test)]
    mod tests {
        use super::encode_in_progress;

        #[test]
        fn in_progress_is_409_idempotency_key_in_use() {
            let r = encode_in_progress();
            assert_eq!(r.status, 409);
            assert_eq!(r.content_type, "application/json");
            assert!(r.headers.is_empty());
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v, serde_json::json!({"error": "idempotency_key_in_use"}));
            assert_eq!(
                crate::json_seller::error_code(&r.body).as_deref(),
                Some("idempotency_key_in_use")
            );
        }
    }
}
