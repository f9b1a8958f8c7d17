//! The admin listing of a simulated seller's orders (`GET /admin/orders` for json and
//! xml sellers, `ORDERS` for line sellers), used by tests to check that nothing was
//! ordered twice.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::http::{HttpRequest, HttpResponse, Reply};
use crate::wire::{decode_json, json_response, unexpected_status};

/// Whether an order still stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminOrderStatus {
    /// Placed and not cancelled.
    Placed,
    /// Cancelled.
    Cancelled,
}

/// One order as the seller recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOrder {
    /// The seller's order id.
    pub order_id: String,
    /// The offer ordered.
    pub offer_id: String,
    /// The book (ISBN-13).
    pub isbn: String,
    /// Confirmed total, minor units.
    pub total_minor: i64,
    /// The seller's currency.
    pub currency: String,
    /// Placed or cancelled.
    pub status: AdminOrderStatus,
    /// The idempotency key the order came with.
    pub idempotency_key: String,
}

/// `GET /admin/orders` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOrders {
    /// The seller's name.
    pub seller: String,
    /// Every order, oldest first.
    pub orders: Vec<AdminOrder>,
}

/// `GET /admin/orders` (json and xml sellers alike answer in JSON).
pub fn encode_request() -> HttpRequest {
    HttpRequest {
        method: "GET",
        path_and_query: "/admin/orders".to_string(),
        headers: vec![("accept", "application/json".to_string())],
        body: Vec::new(),
    }
}

/// Decodes `200` with an [`AdminOrders`] body.
pub fn decode_response(reply: Reply<'_>) -> Result<AdminOrders, DecodeError> {
    if reply.status != 200 {
        return Err(unexpected_status(&reply));
    }
    decode_json(reply.body)
}

/// `200` with the listing, as JSON.
pub fn encode_response(orders: &AdminOrders) -> HttpResponse {
    json_response(200, orders)
}

/// The listing as line-protocol answers: one `ORDERREC` per order, then `END`.
pub fn encode_line(tag: &str, orders: &[AdminOrder], out: &mut Vec<u8>) {
    for record in orders {
        crate::line::Response::OrderRecord {
            tag: tag.to_string(),
            record: record.clone(),
        }
        .encode(out);
    }
    crate::line::Response::End {
        tag: tag.to_string(),
    }
    .encode(out);
}
