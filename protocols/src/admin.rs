//! The admin listing of a simulated seller's orders (`GET /admin/orders` for json and
//! xml sellers, `ORDERS` for line sellers), used by tests to check that nothing was
//! ordered twice.

use serde::{Deserialize, Serialize};

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
