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
//! * [`capture`]: a captured HTTP response read from bytes, for fixtures, fuzzers and
//!   benchmarks.
//!
//! # Example
//!
//! A seller's JSON answer decoded into offers, and a price converted for the customer:
//!
//! ```
//! use bookbroker_protocols::http::Reply;
//! use bookbroker_protocols::{json_seller, Currency, FxTable, Isbn, Money};
//!
//! let body = br#"{"offers": [{"offer_id": "o-1", "isbn": "0-13-110362-8",
//!     "title": "The C Programming Language", "condition": "NEW",
//!     "price": {"value": "39.99", "currency": "EUR"},
//!     "shipping": {"value": "3.99", "currency": "EUR"}, "quantity": 3}]}"#;
//! let offers = json_seller::decode_quote(Reply { status: 200, retry_after: None, body })?;
//! assert_eq!(offers[0].isbn, Isbn::parse("9780131103627")?);
//! assert_eq!(offers[0].total(), Money::new(4398, Currency::EUR));
//!
//! let fx = FxTable::new(Currency::USD, &[(Currency::EUR, "1.08")])?;
//! assert_eq!(fx.convert(offers[0].total(), Currency::USD)?, Money::new(4750, Currency::USD));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod capture;
pub mod error;
pub mod fx;
pub mod http;
pub mod http1;
pub mod isbn;
pub mod json_seller;
pub mod line;
pub mod money;
pub mod offer;
pub mod payment;
mod wire;
pub mod xml_seller;

pub use error::{DecodeError, RequestError};
pub use fx::{FxError, FxTable};
pub use isbn::{Isbn, IsbnError};
pub use money::{Currency, Money, MoneyError};
pub use offer::{
    CancelOutcome, Condition, ConditionFilter, OrderOutcome, OrderRequest, QuoteQuery, SellerOffer,
};
