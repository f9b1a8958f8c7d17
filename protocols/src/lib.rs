//! The vocabulary of bookbroker and a sans-IO codec for every seller protocol and the
//! payment API.
//!
//! Nothing in this crate opens a socket or reads a clock: every codec is a pure function
//! from bytes to typed values and back, so the same code serves the engine (client side),
//! `sellersim` (server side), fixture tests, fuzzers and benchmarks.
//!
//! * [`isbn`], [`money`], [`fx`], [`offer`]: the vocabulary.
//! * [`http`]: transport-neutral request/response values that the HTTP codecs produce and
//!   consume, plus query-string helpers.
//! * [`json_seller`], [`xml_seller`], [`line`]: the three seller protocols.
//! * [`payment`]: the payment provider's API.
//! * [`admin`]: the order listings that simulated sellers expose for checks.

pub mod admin;
pub mod error;
pub mod fx;
pub mod http;
pub mod isbn;
pub mod json_seller;
pub mod line;
pub mod money;
pub mod offer;
pub mod payment;
pub mod xml_seller;

pub use error::{DecodeError, RequestError};
pub use fx::{FxError, FxTable};
pub use isbn::{Isbn, IsbnError};
pub use money::{Currency, Money, MoneyError};
pub use offer::{
    CancelOutcome, Condition, ConditionFilter, OrderOutcome, OrderRequest, QuoteQuery,
    SellerOffer,
};
