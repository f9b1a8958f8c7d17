//! The simulated payment provider: authorizations, captures, voids, refunds, an
//! idempotency cache and a ledger of everything that happened.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bookbroker_protocols::http::HttpResponse;
use bookbroker_protocols::payment::server as codec;
use bookbroker_protocols::payment::{
    AuthorizeOutcome, Ledger, LedgerEntry, LedgerKind, SettleOutcome,
};
use bookbroker_protocols::Currency;

use super::rng::fast_unit;
use super::scenario::{PaymentCall, PaymentSpec};

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
    /// (operation path, idempotency key) of slow first attempts still running.
    in_flight: HashSet<(String, String)>,
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
    /// Slowness and faults (all off by default).
    model: PaymentModel,
}

/// The `[payment]` slowness and fault settings the provider applies.
#[derive(Debug, Default, Clone)]
struct PaymentModel {
    slow_first_rate: f64,
    slow_first: Duration,
    error_rate: f64,
    reset_rate: f64,
    faults_on: Vec<PaymentCall>,
    fault_after_effect: f64,
}

/// The fault drawn for one payment request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PaymentFault {
    /// Answer normally.
    None,
    /// Answer `500 {"error": "internal"}`; `after_effect`: only once the operation took
    /// effect.
    Error { after_effect: bool },
    /// Reset the connection without an answer; `after_effect` as for `Error`.
    Reset { after_effect: bool },
}

impl PaymentFault {
    /// Whether the fault strikes before the operation takes effect (so it never does).
    pub(crate) fn before_effect(&self) -> bool {
        matches!(
            self,
            PaymentFault::Error {
                after_effect: false
            } | PaymentFault::Reset {
                after_effect: false
            }
        )
    }
}

/// What [`PaymentState::begin`] decided.
enum Begin {
    /// The answer: stored, "in use", or the operation's result.
    Answer(HttpResponse),
    /// A slow first attempt, marked in flight: run [`PaymentState::finish`] after the
    /// hold.
    Held,
}

/// An operation that changes state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PaymentOp {
    Authorize,
    Capture(String),
    Void(String),
    Refund(String),
}

impl PaymentOp {
    /// The call as `[payment] faults_on` names it.
    fn call(&self) -> PaymentCall {
        match self {
            PaymentOp::Authorize => PaymentCall::Authorize,
            PaymentOp::Capture(_) => PaymentCall::Capture,
            PaymentOp::Void(_) => PaymentCall::Void,
            PaymentOp::Refund(_) => PaymentCall::Refund,
        }
    }
}

impl PaymentState {
    /// A provider with the scenario's slowness and faults.
    pub(crate) fn new(spec: &PaymentSpec) -> PaymentState {
        PaymentState {
            book: Mutex::new(Book::default()),
            model: PaymentModel {
                slow_first_rate: spec.slow_first_rate,
                slow_first: Duration::from_millis(spec.slow_first_ms),
                error_rate: spec.error_rate,
                reset_rate: spec.reset_rate,
                faults_on: spec.faults_on.clone(),
                fault_after_effect: spec.fault_after_effect,
            },
        }
    }

    /// Draws the fault of one request (none for calls outside `faults_on`).
    pub(crate) fn draw_fault(&self, op: &PaymentOp) -> PaymentFault {
        let m = &self.model;
        if m.error_rate + m.reset_rate <= 0.0 || !m.faults_on.contains(&op.call()) {
            return PaymentFault::None;
        }
        let u = fast_unit();
        let after_effect = || fast_unit() < m.fault_after_effect;
        if u < m.error_rate {
            PaymentFault::Error {
                after_effect: after_effect(),
            }
        } else if u < m.error_rate + m.reset_rate {
            PaymentFault::Reset {
                after_effect: after_effect(),
            }
        } else {
            PaymentFault::None
        }
    }

    /// Runs one POST operation as the model says: a slow first attempt of a key holds
    /// for `slow_first_ms` and only then takes effect; a repeat meanwhile is "in use".
    /// The hold runs in a task of its own, so the operation takes effect (once) even
    /// when the client gives up on this request.
    pub(crate) async fn run(
        self: &Arc<Self>,
        op: &PaymentOp,
        path: &str,
        key: &str,
        body: &[u8],
    ) -> HttpResponse {
        let slow = self.model.slow_first_rate > 0.0 && fast_unit() < self.model.slow_first_rate;
        match self.begin(op, path, key, body, slow) {
            Begin::Answer(answer) => answer,
            Begin::Held => {
                let state = self.clone();
                let owned = (op.clone(), path.to_string(), key.to_string(), body.to_vec());
                let hold = self.model.slow_first;
                let task = tokio::spawn(async move {
                    tokio::time::sleep(hold).await;
                    let (op, path, key, body) = owned;
                    state.finish(&op, &path, &key, &body)
                });
                match task.await {
                    Ok(answer) => answer,
                    // The task cannot panic; should it ever, the key must not stay stuck.
                    Err(_) => {
                        self.book().in_flight.remove(&path_key(path, key));
                        json_error(500, "internal")
                    }
                }
            }
        }
    }

    /// Looks the key up: "in use" while its slow first attempt runs, the stored answer
    /// once there is one; otherwise runs the operation now, or (when `slow`) marks the
    /// key in flight for [`PaymentState::finish`].
    fn begin(&self, op: &PaymentOp, path: &str, key: &str, body: &[u8], slow: bool) -> Begin {
        let mut book = self.book();
        let cache_key = path_key(path, key);
        if book.in_flight.contains(&cache_key) {
            // 409 idempotency_key_in_use, as Stripe answers it.
            return Begin::Answer(codec::encode_in_progress());
        }
        if let Some(answer) = book.answers.get(&cache_key) {
            return Begin::Answer(answer.clone());
        }
        if slow {
            book.in_flight.insert(cache_key);
            return Begin::Held;
        }
        Begin::Answer(apply(&mut book, op, cache_key, key, body))
    }

    /// Ends a slow first attempt: the operation takes effect now.
    fn finish(&self, op: &PaymentOp, path: &str, key: &str, body: &[u8]) -> HttpResponse {
        let mut book = self.book();
        let cache_key = path_key(path, key);
        book.in_flight.remove(&cache_key);
        apply(&mut book, op, cache_key, key, body)
    }

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

    /// Runs one POST operation under its idempotency key, never slow (tests of the
    /// operations themselves); a repeated key gets the first answer back unchanged.
    #[cfg(test)]
    pub(crate) fn execute(
        &self,
        op: &PaymentOp,
        path: &str,
        key: &str,
        body: &[u8],
    ) -> HttpResponse {
        match self.begin(op, path, key, body, false) {
            Begin::Answer(answer) => answer,
            Begin::Held => self.finish(op, path, key, body),
        }
    }
}

fn path_key(path: &str, key: &str) -> (String, String) {
    (path.to_string(), key.to_string())
}

/// Runs an operation whose key has no stored answer, and stores its answer (request
/// errors are not remembered, so a fixed retry works).
fn apply(
    book: &mut Book,
    op: &PaymentOp,
    cache_key: (String, String),
    key: &str,
    body: &[u8],
) -> HttpResponse {
    let answer = match op {
        PaymentOp::Authorize => authorize(book, key, body),
        PaymentOp::Capture(id) => capture(book, key, id, body),
        PaymentOp::Void(id) => void(book, key, id),
        PaymentOp::Refund(id) => refund(book, key, id),
    };
    if answer.status != 400 && answer.status != 404 {
        book.answers.insert(cache_key, answer.clone());
    }
    answer
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
