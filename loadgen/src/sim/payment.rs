//! The simulated payment provider: authorizations, captures, voids, refunds, an
//! idempotency cache and a ledger of everything that happened.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use bookbroker_protocols::http::HttpResponse;
use bookbroker_protocols::payment::server as codec;
use bookbroker_protocols::payment::{
    AuthorizeOutcome, Ledger, LedgerEntry, LedgerKind, SettleOutcome,
};
use bookbroker_protocols::Currency;

/// Token prefix that makes an authorization fail.
const DECLINE_PREFIX: &str = "tok_decline";
/// Token prefix whose authorizations can never be captured.
const CAPTURE_FAIL_PREFIX: &str = "tok_capture_fail";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthState {
    Authorized,
    Captured,
    Voided,
}

#[derive(Debug)]
struct Authorization {
    amount: i64,
    currency: Currency,
    state: AuthState,
    capture_fails: bool,
}

#[derive(Debug)]
struct Charge {
    authorization_id: String,
    amount: i64,
    currency: Currency,
    refunded: bool,
}

#[derive(Debug, Default)]
struct Book {
    /// Id counters per prefix (`auth`, `ch`, `re`), so ids read like the provider's.
    next_ids: HashMap<&'static str, u64>,
    authorizations: HashMap<String, Authorization>,
    charges: HashMap<String, Charge>,
    /// (operation path, idempotency key) to the first answer.
    answers: HashMap<(String, String), HttpResponse>,
    ledger: Vec<LedgerEntry>,
}

impl Book {
    fn next(&mut self, prefix: &'static str) -> String {
        let n = self.next_ids.entry(prefix).or_insert(0);
        *n += 1;
        format!("{prefix}_{n}")
    }
}

/// A JSON error body `{"error": code}`.
pub(crate) fn json_error(status: u16, code: &str) -> HttpResponse {
    HttpResponse {
        status,
        content_type: "application/json",
        headers: Vec::new(),
        body: serde_json::json!({ "error": code })
            .to_string()
            .into_bytes(),
    }
}

/// The payment provider's state. Payments are one per purchase, far rarer than quotes,
/// so a single lock keeps every operation and its ledger entry atomic.
#[derive(Debug, Default)]
pub(crate) struct PaymentState {
    book: Mutex<Book>,
}

/// An operation that changes state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PaymentOp {
    Authorize,
    Capture(String),
    Void(String),
    Refund(String),
}

impl PaymentState {
    fn book(&self) -> MutexGuard<'_, Book> {
        self.book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The ledger.
    pub(crate) fn ledger(&self) -> Ledger {
        Ledger {
            entries: self.book().ledger.clone(),
        }
    }

    /// Runs one POST operation under its idempotency key; a repeated key gets the first
    /// answer back unchanged (request errors are not remembered, so a fixed retry works).
    pub(crate) fn execute(
        &self,
        op: &PaymentOp,
        path: &str,
        key: &str,
        body: &[u8],
    ) -> HttpResponse {
        let mut book = self.book();
        let cache_key = (path.to_string(), key.to_string());
        if let Some(answer) = book.answers.get(&cache_key) {
            return answer.clone();
        }
        let answer = match op {
            PaymentOp::Authorize => authorize(&mut book, key, body),
            PaymentOp::Capture(id) => capture(&mut book, key, id, body),
            PaymentOp::Void(id) => void(&mut book, key, id),
            PaymentOp::Refund(id) => refund(&mut book, key, id),
        };
        if answer.status != 400 && answer.status != 404 {
            book.answers.insert(cache_key, answer.clone());
        }
        answer
    }
}

fn authorize(book: &mut Book, key: &str, body: &[u8]) -> HttpResponse {
    let req = match codec::decode_authorize(body) {
        Ok(req) => req,
        Err(e) => return json_error(400, &format!("invalid_request: {e}")),
    };
    if req.amount.minor <= 0 {
        return json_error(400, "invalid_amount");
    }
    if req.payment_token.starts_with(DECLINE_PREFIX) {
        book.ledger.push(LedgerEntry {
            kind: LedgerKind::Decline,
            id: String::new(),
            authorization_id: String::new(),
            amount: req.amount.minor,
            currency: req.amount.currency.code().to_string(),
            idempotency_key: key.to_string(),
        });
        return codec::encode_authorize(&AuthorizeOutcome::Declined {
            error: "card_declined".into(),
        });
    }
    let id = book.next("auth");
    book.authorizations.insert(
        id.clone(),
        Authorization {
            amount: req.amount.minor,
            currency: req.amount.currency,
            state: AuthState::Authorized,
            capture_fails: req.payment_token.starts_with(CAPTURE_FAIL_PREFIX),
        },
    );
    book.ledger.push(LedgerEntry {
        kind: LedgerKind::Authorization,
        id: id.clone(),
        authorization_id: id.clone(),
        amount: req.amount.minor,
        currency: req.amount.currency.code().to_string(),
        idempotency_key: key.to_string(),
    });
    codec::encode_authorize(&AuthorizeOutcome::Authorized {
        id,
        amount: req.amount,
    })
}

fn refused(error: &str) -> HttpResponse {
    codec::encode_settle(
        &SettleOutcome::Refused {
            error: error.to_string(),
        },
        "refused",
    )
}

fn capture(book: &mut Book, key: &str, auth_id: &str, body: &[u8]) -> HttpResponse {
    let amount = match codec::decode_capture(body) {
        Ok(amount) => amount,
        Err(e) => return json_error(400, &format!("invalid_request: {e}")),
    };
    if amount <= 0 {
        return json_error(400, "invalid_amount");
    }
    let Some(auth) = book.authorizations.get_mut(auth_id) else {
        return json_error(404, "no_such_authorization");
    };
    match auth.state {
        AuthState::Captured => return refused("already_captured"),
        AuthState::Voided => return refused("authorization_voided"),
        AuthState::Authorized => {}
    }
    if auth.capture_fails {
        return refused("capture_failed");
    }
    if amount > auth.amount {
        return refused("amount_exceeds_authorization");
    }
    auth.state = AuthState::Captured;
    let currency = auth.currency;
    let charge_id = book.next("ch");
    book.charges.insert(
        charge_id.clone(),
        Charge {
            authorization_id: auth_id.to_string(),
            amount,
            currency,
            refunded: false,
        },
    );
    book.ledger.push(LedgerEntry {
        kind: LedgerKind::Capture,
        id: charge_id.clone(),
        authorization_id: auth_id.to_string(),
        amount,
        currency: currency.code().to_string(),
        idempotency_key: key.to_string(),
    });
    codec::encode_settle(
        &SettleOutcome::Done {
            id: charge_id,
            amount: Some(amount),
        },
        "captured",
    )
}

fn void(book: &mut Book, key: &str, auth_id: &str) -> HttpResponse {
    let Some(auth) = book.authorizations.get_mut(auth_id) else {
        return json_error(404, "no_such_authorization");
    };
    match auth.state {
        AuthState::Captured => return refused("already_captured"),
        // Voiding twice changes nothing and is not an error: compensation may repeat.
        AuthState::Voided => {}
        AuthState::Authorized => {
            auth.state = AuthState::Voided;
            let currency = auth.currency;
            book.ledger.push(LedgerEntry {
                kind: LedgerKind::Void,
                id: auth_id.to_string(),
                authorization_id: auth_id.to_string(),
                amount: 0,
                currency: currency.code().to_string(),
                idempotency_key: key.to_string(),
            });
        }
    }
    codec::encode_settle(
        &SettleOutcome::Done {
            id: auth_id.to_string(),
            amount: None,
        },
        "voided",
    )
}

fn refund(book: &mut Book, key: &str, charge_id: &str) -> HttpResponse {
    let Some(charge) = book.charges.get_mut(charge_id) else {
        return json_error(404, "no_such_charge");
    };
    if charge.refunded {
        return refused("already_refunded");
    }
    charge.refunded = true;
    let (amount, currency, authorization_id) = (
        charge.amount,
        charge.currency,
        charge.authorization_id.clone(),
    );
    let refund_id = book.next("re");
    book.ledger.push(LedgerEntry {
        kind: LedgerKind::Refund,
        id: refund_id.clone(),
        authorization_id,
        amount,
        currency: currency.code().to_string(),
        idempotency_key: key.to_string(),
    });
    codec::encode_settle(
        &SettleOutcome::Done {
            id: refund_id,
            amount: Some(amount),
        },
        "refunded",
    )
}
