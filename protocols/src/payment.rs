//! The payment provider's API (JSON over HTTP/1.1, modelled on Stripe). Every POST
//! carries an `Idempotency-Key`; repeating it returns the first result.
//!
//! Client side (the engine): `encode_*` / `decode_*`. Server side (the simulator): the
//! [`server`] module. [`Ledger`] is what `GET /v1/ledger` returns.

use serde::{Deserialize, Serialize};

use crate::error::DecodeError;
use crate::http::retry_after_ms;
use crate::http::{encode_path_segment, HttpRequest, Reply};
use crate::money::{Currency, Money};
use crate::wire::{decode_json, json_body, shorten, unexpected_status, WireError, KEY_IN_USE};

/// `POST /v1/authorizations` body. Its `Debug` output hides the payment token.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// The customer's payment token (a secret: never logged).
    pub payment_token: String,
    /// Amount to hold, in the customer's currency.
    pub amount: Money,
}

impl std::fmt::Debug for AuthorizeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorizeRequest")
            .field("payment_token", &"<redacted>")
            .field("amount", &self.amount)
            .finish()
    }
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
    post(
        "/v1/authorizations".to_string(),
        idempotency_key,
        json_body(&WireAuthorizeRequest {
            payment_token: req.payment_token.clone(),
            amount: req.amount.minor,
            currency: req.amount.currency,
        }),
    )
}

fn post(path_and_query: String, idempotency_key: &str, body: Vec<u8>) -> HttpRequest {
    HttpRequest {
        method: "POST",
        path_and_query,
        headers: vec![
            ("content-type", "application/json".to_string()),
            ("idempotency-key", idempotency_key.to_string()),
        ],
        body,
    }
}

#[derive(Deserialize, Serialize)]
struct WireAuthorizeRequest {
    payment_token: String,
    amount: i64,
    currency: Currency,
}

#[derive(Deserialize, Serialize)]
struct WireAuthorized {
    id: String,
    #[serde(default = "authorized")]
    status: String,
    amount: i64,
    currency: Currency,
}

fn authorized() -> String {
    "authorized".to_string()
}

#[derive(Deserialize, Serialize)]
struct WireSettled {
    id: String,
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    amount: Option<i64>,
}

#[derive(Deserialize, Serialize)]
struct WireCapture {
    amount: i64,
}

/// The error code of a `{"error": …}` body, or `fallback` when there is none.
fn error_of(body: &[u8], fallback: &str) -> String {
    decode_json::<WireError>(body)
        .map(|e| shorten(&e.error))
        .unwrap_or_else(|_| fallback.to_string())
}

/// `409 {"error": "idempotency_key_in_use"}`: the provider still works on the first
/// request with this key, so its outcome is unknown.
fn in_progress(reply: &Reply<'_>) -> Option<DecodeError> {
    (reply.status == 409 && error_of(reply.body, "") == KEY_IN_USE).then(|| {
        DecodeError::InProgress {
            retry_after_ms: retry_after_ms(reply.retry_after),
        }
    })
}

/// Decodes `201` or `402`; 429/503 are busy, `409 idempotency_key_in_use` is
/// [`DecodeError::InProgress`], other statuses [`DecodeError::Status`].
pub fn decode_authorize(reply: Reply<'_>) -> Result<AuthorizeOutcome, DecodeError> {
    if let Some(e) = in_progress(&reply) {
        return Err(e);
    }
    match reply.status {
        200 | 201 => {
            let wire: WireAuthorized = decode_json(reply.body)?;
            if wire.status != "authorized" {
                return Err(DecodeError::Remote {
                    code: shorten(&wire.status),
                    message: "authorization not granted".to_string(),
                });
            }
            if wire.amount < 0 {
                return Err(DecodeError::Malformed("negative amount".to_string()));
            }
            Ok(AuthorizeOutcome::Authorized {
                id: wire.id,
                amount: Money::new(wire.amount, wire.currency),
            })
        }
        402 => Ok(AuthorizeOutcome::Declined {
            error: error_of(reply.body, "card_declined"),
        }),
        _ => Err(unexpected_status(&reply)),
    }
}

/// `POST /v1/authorizations/{id}/capture {"amount": …}`.
pub fn encode_capture(authorization_id: &str, amount: i64, idempotency_key: &str) -> HttpRequest {
    post(
        format!(
            "/v1/authorizations/{}/capture",
            encode_path_segment(authorization_id)
        ),
        idempotency_key,
        json_body(&WireCapture { amount }),
    )
}

/// `POST /v1/authorizations/{id}/void`.
pub fn encode_void(authorization_id: &str, idempotency_key: &str) -> HttpRequest {
    post(
        format!(
            "/v1/authorizations/{}/void",
            encode_path_segment(authorization_id)
        ),
        idempotency_key,
        b"{}".to_vec(),
    )
}

/// `POST /v1/charges/{id}/refund`.
pub fn encode_refund(charge_id: &str, idempotency_key: &str) -> HttpRequest {
    post(
        format!("/v1/charges/{}/refund", encode_path_segment(charge_id)),
        idempotency_key,
        b"{}".to_vec(),
    )
}

/// Decodes the answer to a capture, void or refund (`200` or `409`). A 409 that says the
/// key is still in use is not a refusal: it is [`DecodeError::InProgress`].
pub fn decode_settle(reply: Reply<'_>) -> Result<SettleOutcome, DecodeError> {
    if let Some(e) = in_progress(&reply) {
        return Err(e);
    }
    match reply.status {
        200 | 201 => {
            let wire: WireSettled = decode_json(reply.body)?;
            Ok(SettleOutcome::Done {
                id: wire.id,
                amount: wire.amount,
            })
        }
        409 => Ok(SettleOutcome::Refused {
            error: error_of(reply.body, "conflict"),
        }),
        _ => Err(unexpected_status(&reply)),
    }
}

/// `GET /v1/ledger`.
pub fn encode_ledger() -> HttpRequest {
    HttpRequest {
        method: "GET",
        path_and_query: "/v1/ledger".to_string(),
        headers: vec![("accept", "application/json".to_string())],
        body: Vec::new(),
    }
}

/// Decodes `200` with a [`Ledger`] body.
pub fn decode_ledger(reply: Reply<'_>) -> Result<Ledger, DecodeError> {
    if reply.status != 200 {
        return Err(unexpected_status(&reply));
    }
    decode_json(reply.body)
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
    use super::{
        AuthorizeOutcome, AuthorizeRequest, Ledger, SettleOutcome, WireAuthorizeRequest,
        WireAuthorized, WireCapture, WireSettled,
    };
    use crate::error::RequestError;
    use crate::http::{percent_decode, HttpResponse};
    use crate::money::Money;
    use crate::wire::{decode_request, json_response, WireError};

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
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        match (method, path) {
            ("POST", "/v1/authorizations") => return Route::Authorize,
            ("GET", "/v1/ledger") => return Route::Ledger,
            ("POST", _) => {}
            _ => return Route::NotFound,
        }
        let id_between = |prefix: &str, suffix: &str| -> Option<String> {
            let id = path.strip_prefix(prefix)?.strip_suffix(suffix)?;
            if id.is_empty() || id.contains('/') {
                return None;
            }
            percent_decode(id, false).ok()
        };
        if let Some(id) = id_between("/v1/authorizations/", "/capture") {
            Route::Capture(id)
        } else if let Some(id) = id_between("/v1/authorizations/", "/void") {
            Route::Void(id)
        } else if let Some(id) = id_between("/v1/charges/", "/refund") {
            Route::Refund(id)
        } else {
            Route::NotFound
        }
    }

    /// Reads an authorization body.
    pub fn decode_authorize(body: &[u8]) -> Result<AuthorizeRequest, RequestError> {
        let wire: WireAuthorizeRequest = decode_request(body)?;
        if wire.payment_token.is_empty() {
            return Err(RequestError::Missing("payment_token"));
        }
        if wire.amount <= 0 {
            return Err(RequestError::Invalid {
                field: "amount",
                reason: "must be positive".to_string(),
            });
        }
        Ok(AuthorizeRequest {
            payment_token: wire.payment_token,
            amount: Money::new(wire.amount, wire.currency),
        })
    }

    /// Reads a capture body, giving the amount.
    pub fn decode_capture(body: &[u8]) -> Result<i64, RequestError> {
        let wire: WireCapture = decode_request(body)?;
        if wire.amount < 0 {
            return Err(RequestError::Invalid {
                field: "amount",
                reason: "must not be negative".to_string(),
            });
        }
        Ok(wire.amount)
    }

    /// `201` or `402`.
    pub fn encode_authorize(outcome: &AuthorizeOutcome) -> HttpResponse {
        match outcome {
            AuthorizeOutcome::Authorized { id, amount } => json_response(
                201,
                &WireAuthorized {
                    id: id.clone(),
                    status: "authorized".to_string(),
                    amount: amount.minor,
                    currency: amount.currency,
                },
            ),
            AuthorizeOutcome::Declined { error } => json_response(
                402,
                &WireError {
                    error: error.clone(),
                },
            ),
        }
    }

    /// `200 {"id", "status", "amount"}` or `409 {"error"}`; `status` is `captured`,
    /// `voided` or `refunded` as `kind` says.
    pub fn encode_settle(outcome: &SettleOutcome, status: &str) -> HttpResponse {
        match outcome {
            SettleOutcome::Done { id, amount } => json_response(
                200,
                &WireSettled {
                    id: id.clone(),
                    status: status.to_string(),
                    amount: *amount,
                },
            ),
            SettleOutcome::Refused { error } => json_response(
                409,
                &WireError {
                    error: error.clone(),
                },
            ),
        }
    }

    /// `200` with the ledger.
    pub fn encode_ledger(ledger: &Ledger) -> HttpResponse {
        json_response(200, ledger)
    }

    /// An error answer `{"error": …}` with any status (400 for a bad request, 404, 429
    /// or 503 with `Retry-After` for overload).
    pub fn encode_error(status: u16, error: &str, retry_after_s: Option<u64>) -> HttpResponse {
        crate::wire::json_error(status, error, retry_after_s)
    }

    /// `409 {"error": "idempotency_key_in_use"}`: the first request with this
    /// idempotency key is still running, as Stripe answers it. The outcome is unknown,
    /// not refused: the client asks again with the same key.
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
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v, serde_json::json!({"error": "idempotency_key_in_use"}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_payment_token() {
        let req = AuthorizeRequest {
            payment_token: "tok_secret_4242".into(),
            amount: Money::new(1, Currency::USD),
        };
        assert!(!format!("{req:?}").contains("secret"));
    }

    #[test]
    fn request_errors_do_not_echo_the_token() {
        let body =
            br#"{"payment_token":"tok_secret_4242","amount":"tok_secret_4242x","currency":"USD"}"#;
        let err = server::decode_authorize(body).unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
    }
}
