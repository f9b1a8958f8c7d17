//! The payment provider's API (JSON over HTTP/1.1, modelled on Stripe). Every POST
//! carries an `Idempotency-Key`; repeating it returns the first result.
//!
//! Client side (the engine): `encode_*` / `decode_*`. Server side (the simulator): the
//! [`server`] module. [`Ledger`] is what `GET /v1/ledger` returns.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::http::{HttpRequest, Reply};
use crate::money::{Currency, Money};

/// `POST /v1/authorizations` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// The customer's payment token (a secret: never logged).
    pub payment_token: String,
    /// Amount to hold, in the customer's currency.
    pub amount: Money,
}

/// Answer to an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeOutcome {
    /// `201`: held.
    Authorized {
        /// Authorization id.
        id: String,
        /// Amount held.
        amount: Money,
    },
    /// `402`: the card was declined.
    Declined {
        /// The provider's error code (e.g. `card_declined`).
        error: String,
    },
}

/// Answer to a capture, void or refund.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleOutcome {
    /// `200`: done. `id` is the charge id for a capture, the authorization or refund id
    /// otherwise.
    Done {
        /// Id of the resulting object.
        id: String,
        /// Amount captured or refunded, when the operation has one.
        amount: Option<i64>,
    },
    /// `409`: refused (already captured, voided, over the authorized amount…).
    Refused {
        /// The provider's error code.
        error: String,
    },
}

/// `POST /v1/authorizations`.
pub fn encode_authorize(req: &AuthorizeRequest, idempotency_key: &str) -> HttpRequest {
    let _ = (req, idempotency_key);
    todo!()
}

/// Decodes `201` or `402`; 429/503 are busy, other statuses [`DecodeError::Status`].
pub fn decode_authorize(reply: Reply<'_>) -> Result<AuthorizeOutcome, DecodeError> {
    let _ = reply;
    todo!()
}

/// `POST /v1/authorizations/{id}/capture {"amount": …}`.
pub fn encode_capture(authorization_id: &str, amount: i64, idempotency_key: &str) -> HttpRequest {
    let _ = (authorization_id, amount, idempotency_key);
    todo!()
}

/// `POST /v1/authorizations/{id}/void`.
pub fn encode_void(authorization_id: &str, idempotency_key: &str) -> HttpRequest {
    let _ = (authorization_id, idempotency_key);
    todo!()
}

/// `POST /v1/charges/{id}/refund`.
pub fn encode_refund(charge_id: &str, idempotency_key: &str) -> HttpRequest {
    let _ = (charge_id, idempotency_key);
    todo!()
}

/// Decodes the answer to a capture, void or refund (`200` or `409`).
pub fn decode_settle(reply: Reply<'_>) -> Result<SettleOutcome, DecodeError> {
    let _ = reply;
    todo!()
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerKind {
    /// A hold.
    Authorization,
    /// A capture of a hold.
    Capture,
    /// A void of a hold.
    Void,
    /// A refund of a capture.
    Refund,
    /// A declined authorization.
    Decline,
}

/// One line of the provider's ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// What happened.
    pub kind: LedgerKind,
    /// Id of the object created (authorization, charge, refund).
    pub id: String,
    /// The authorization it concerns.
    pub authorization_id: String,
    /// Amount in minor units (0 for a void).
    pub amount: i64,
    /// Currency code.
    pub currency: String,
    /// The idempotency key of the request.
    pub idempotency_key: String,
}

/// `GET /v1/ledger` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Every entry, oldest first.
    pub entries: Vec<LedgerEntry>,
}

/// The server side, for the simulated provider.
pub mod server {
    use super::{AuthorizeOutcome, AuthorizeRequest, SettleOutcome};
    use crate::error::RequestError;
    use crate::http::HttpResponse;

    /// A request the provider understands.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Route {
        /// `POST /v1/authorizations`.
        Authorize,
        /// `POST /v1/authorizations/{id}/capture`.
        Capture(String),
        /// `POST /v1/authorizations/{id}/void`.
        Void(String),
        /// `POST /v1/charges/{id}/refund`.
        Refund(String),
        /// `GET /v1/ledger`.
        Ledger,
        /// Anything else.
        NotFound,
    }

    /// Routes by method and path.
    pub fn route(method: &str, path: &str) -> Route {
        let _ = (method, path);
        todo!()
    }

    /// Reads an authorization body.
    pub fn decode_authorize(body: &[u8]) -> Result<AuthorizeRequest, RequestError> {
        let _ = body;
        todo!()
    }

    /// Reads a capture body, giving the amount.
    pub fn decode_capture(body: &[u8]) -> Result<i64, RequestError> {
        let _ = body;
        todo!()
    }

    /// `201` or `402`.
    pub fn encode_authorize(outcome: &AuthorizeOutcome) -> HttpResponse {
        let _ = outcome;
        todo!()
    }

    /// `200 {"id", "status", "amount"}` or `409 {"error"}`; `status` is `captured`,
    /// `voided` or `refunded` as `kind` says.
    pub fn encode_settle(outcome: &SettleOutcome, status: &str) -> HttpResponse {
        let _ = (outcome, status);
        todo!()
    }
}
