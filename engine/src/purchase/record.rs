//! What a purchase stores: its request, where its saga stands, and, once it is over,
//! the answer every replay returns. Serialized as JSON into its shard.

use serde::{Deserialize, Serialize};

/// Where the saga stands. Each step is stored *before* the external call it makes, so
/// recovery knows which call to repeat (every call is idempotent upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Intent recorded; next: ask the sellers for offers.
    Quoting,
    /// Candidates chosen; next: authorize the payment.
    Authorizing,
    /// Authorized; next: cancel `cancelling` if set, else order `candidates[skipped]`
    /// (or repeat `attempt`).
    Ordering,
    /// Ordered; next: capture the confirmed total.
    Capturing,
    /// Undoing: void the authorization (if any), then cancel `order` (if any), then end
    /// with `compensation`.
    Compensating,
    /// Over: `outcome` is the answer.
    Done,
}

/// An offer the purchase may order, cheapest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Seller name.
    pub seller: String,
    /// The seller's offer id.
    pub offer_id: String,
    /// Price in the seller's currency, minor units.
    pub seller_price: i64,
    /// Shipping in the seller's currency.
    pub seller_shipping: i64,
    /// The seller's currency.
    pub seller_currency: String,
    /// Price in the customer's currency.
    pub price: i64,
    /// Shipping in the customer's currency.
    pub shipping: i64,
    /// `price + shipping`.
    pub total: i64,
}

/// The order being placed: which candidate and at which expected total (the seller's
/// currency). Part of the order's idempotency key, so a repeat after a crash is the
/// same order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Index into `candidates`.
    pub candidate: usize,
    /// Expected total in the seller's currency.
    pub expected_total: i64,
    /// How many times this candidate was re-ordered at a changed price (bounded by
    /// `purchases.max_reorders`).
    #[serde(default)]
    pub reorders: u32,
}

/// An order the seller placed that the purchase cannot keep (confirmed above the limit,
/// or with a total that makes no sense): it is cancelled before anything else happens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRef {
    /// Seller name.
    pub seller: String,
    /// The seller's order id.
    pub order_id: String,
}

/// An order the seller confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacedOrder {
    /// Seller name.
    pub seller: String,
    /// The seller's offer id.
    pub offer_id: String,
    /// The seller's order id.
    pub order_id: String,
    /// Price in the customer's currency.
    pub price: i64,
    /// Shipping in the customer's currency.
    pub shipping: i64,
    /// Confirmed total in the customer's currency: what is captured.
    pub total: i64,
}

/// The final answer of a purchase: status code and JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// HTTP status of the answer to `POST`.
    pub status: u16,
    /// The body.
    pub body: serde_json::Value,
}

/// The cheapest offer seen, for `no_offer_within_limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lowest {
    /// Seller name.
    pub seller: String,
    /// Total in the customer's currency.
    pub total: i64,
    /// The customer's currency.
    pub currency: String,
}

/// What the customer asked for (tokens are sealed separately).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wanted {
    /// ISBN-13, when searching by ISBN.
    pub isbn: Option<String>,
    /// Title, when searching by title.
    pub title: Option<String>,
    /// Highest total the customer pays, in `currency`.
    pub max_price: i64,
    /// The customer's currency.
    pub currency: String,
    /// `any`, `new` or `used`.
    pub condition: String,
}

/// A purchase as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Purchase {
    /// `pur_…`.
    pub id: String,
    /// Customer id.
    pub customer: String,
    /// The client's idempotency key.
    pub key: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// The request.
    pub wanted: Wanted,
    /// Payment and shipping tokens, encrypted; erased when the purchase ends.
    pub sealed_tokens: Option<String>,
    /// The current step.
    pub step: Step,
    /// Offers within the limit, cheapest first.
    #[serde(default)]
    pub candidates: Vec<Candidate>,
    /// The cheapest offer seen above the limit (or whose price rose above it).
    pub lowest: Option<Lowest>,
    /// The order being attempted.
    pub attempt: Option<Attempt>,
    /// The candidate being tried (or the next to try): every one before it sold out,
    /// was refused or no longer fits.
    #[serde(default)]
    pub skipped: usize,
    /// The payment authorization.
    pub authorization: Option<String>,
    /// The amount the provider says it holds (customer's currency); nothing above it
    /// is ever captured.
    #[serde(default)]
    pub authorized_amount: Option<i64>,
    /// The confirmed seller order.
    pub order: Option<PlacedOrder>,
    /// An order being cancelled before the next candidate is tried.
    #[serde(default)]
    pub cancelling: Option<OrderRef>,
    /// The authorization has been voided.
    #[serde(default)]
    pub voided: bool,
    /// The seller order has been cancelled.
    #[serde(default)]
    pub order_cancelled: bool,
    /// What the purchase ends with once compensation is done.
    pub compensation: Option<Outcome>,
    /// The final answer.
    pub outcome: Option<Outcome>,
    /// Next journal sequence number.
    pub journal_seq: u32,
}

impl Purchase {
    /// A purchase as its intent is recorded: nothing asked of anyone yet.
    pub fn intent(
        id: String,
        customer: String,
        key: String,
        created_ms: u64,
        wanted: Wanted,
        sealed_tokens: String,
    ) -> Purchase {
        Purchase {
            id,
            customer,
            key,
            created_ms,
            wanted,
            sealed_tokens: Some(sealed_tokens),
            step: Step::Quoting,
            candidates: Vec::new(),
            lowest: None,
            attempt: None,
            skipped: 0,
            authorization: None,
            authorized_amount: None,
            order: None,
            cancelling: None,
            voided: false,
            order_cancelled: false,
            compensation: None,
            outcome: None,
            journal_seq: 0,
        }
    }

    /// The body of a `pending` answer.
    pub fn pending_body(&self) -> serde_json::Value {
        serde_json::json!({"id": self.id, "status": "pending"})
    }
}
