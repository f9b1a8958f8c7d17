//! Offers, quote queries, orders: what every seller protocol carries, independent of the
//! wire format.

use crate::isbn::Isbn;
use crate::money::{Currency, Money};

/// Condition of a copy. Sellers send it in any case; anything but "new" is used.
/// Serialized in lower case, as the customer API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// A new copy.
    New,
    /// Anything else.
    Used,
}

impl Condition {
    /// Reads a seller's condition text: `new` in any case (after trimming) is
    /// [`Condition::New`], everything else [`Condition::Used`].
    pub fn from_seller(text: &str) -> Condition {
        if text.trim().eq_ignore_ascii_case("new") {
            Condition::New
        } else {
            Condition::Used
        }
    }

    /// Lower-case name, as the customer API shows it.
    pub fn as_str(&self) -> &'static str {
        match self {
            Condition::New => "new",
            Condition::Used => "used",
        }
    }
}

/// The customer's condition filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ConditionFilter {
    /// Any condition.
    #[default]
    Any,
    /// Only new copies.
    New,
    /// Only used copies.
    Used,
}

impl ConditionFilter {
    /// Parses `any`, `new` or `used` (lower case, as the API documents).
    pub fn parse(text: &str) -> Option<ConditionFilter> {
        match text {
            "any" => Some(ConditionFilter::Any),
            "new" => Some(ConditionFilter::New),
            "used" => Some(ConditionFilter::Used),
            _ => None,
        }
    }

    /// Whether an offer of `condition` passes.
    pub fn accepts(&self, condition: Condition) -> bool {
        match self {
            ConditionFilter::Any => true,
            ConditionFilter::New => condition == Condition::New,
            ConditionFilter::Used => condition == Condition::Used,
        }
    }
}

/// Longest title a customer may search for or buy by, in bytes: every seller protocol
/// carries it, and `line` puts it on one line.
pub const MAX_TITLE_BYTES: usize = 512;

/// What a customer searches for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QuoteQuery {
    /// By ISBN.
    Isbn(Isbn),
    /// By title, forwarded to the sellers as given.
    Title(String),
}

/// One offer as a seller quoted it, in the seller's currency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SellerOffer {
    /// The seller's own id for the offer, unchanged.
    pub offer_id: String,
    /// The book.
    pub isbn: Isbn,
    /// The title as the seller has it.
    pub title: String,
    /// Condition.
    pub condition: Condition,
    /// Price in minor units of `currency`.
    pub price: i64,
    /// Shipping in minor units of `currency`.
    pub shipping: i64,
    /// The seller's currency.
    pub currency: Currency,
    /// Copies available.
    pub quantity: u32,
}

impl SellerOffer {
    /// Price plus shipping, in the seller's currency.
    pub fn total(&self) -> Money {
        Money::new(self.price.saturating_add(self.shipping), self.currency)
    }
}

/// An order the engine places with a seller. Its `Debug` output hides the shipping
/// token.
#[derive(Clone, PartialEq, Eq)]
pub struct OrderRequest {
    /// The seller's offer id.
    pub offer_id: String,
    /// The total the engine expects to pay, in the seller's currency, exactly as quoted.
    pub expected_total: Money,
    /// Idempotency key: repeating it returns the same order.
    pub idempotency_key: String,
    /// Opaque shipping token.
    pub shipping_token: String,
}

impl std::fmt::Debug for OrderRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderRequest")
            .field("offer_id", &self.offer_id)
            .field("expected_total", &self.expected_total)
            .field("idempotency_key", &self.idempotency_key)
            .field("shipping_token", &"<redacted>")
            .finish()
    }
}

/// A seller's answer to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    /// Ordered; `total` is the seller's confirmed total.
    Ordered {
        /// The seller's order id.
        order_id: String,
        /// Confirmed total, in the seller's currency.
        total: Money,
    },
    /// No copies left.
    SoldOut,
    /// The price changed; `total` is the new one.
    PriceChanged {
        /// The new total.
        total: Money,
    },
}

/// A seller's answer to a cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The order is cancelled (also when it already was).
    Cancelled,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        for new in ["new", "New", "NEW", " new\n"] {
            assert_eq!(Condition::from_seller(new), Condition::New);
        }
        for used in ["used", "Very Good", "like new", "", "neW-ish"] {
            assert_eq!(Condition::from_seller(used), Condition::Used);
        }
        assert_eq!(ConditionFilter::parse("any"), Some(ConditionFilter::Any));
        assert_eq!(ConditionFilter::parse("NEW"), None);
        assert!(ConditionFilter::Used.accepts(Condition::Used));
        assert!(!ConditionFilter::New.accepts(Condition::Used));
        assert_eq!(serde_json::to_string(&Condition::New).unwrap(), "\"new\"");
    }

    #[test]
    fn debug_hides_the_shipping_token() {
        let order = OrderRequest {
            offer_id: "o".into(),
            expected_total: Money::new(1, Currency::USD),
            idempotency_key: "k".into(),
            shipping_token: "ship_secret_home".into(),
        };
        assert!(!format!("{order:?}").contains("secret"));
    }
}
