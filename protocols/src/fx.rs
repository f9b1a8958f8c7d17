//! Currency conversion through a base currency, with one documented rounding rule.
//!
//! A rate is the value of one unit of a currency in the base currency (config `[fx]
//! rates`). Rates are held exactly as decimal fractions (up to 12 decimal places), never
//! as floats in arithmetic. An amount in currency A becomes currency B as
//! `amount_A × rate_A / rate_B`, scaled between the two currencies' minor digits and
//! computed exactly in 128-bit integers, then rounded **once**, half to even, to B's
//! minor unit.

use crate::money::{Currency, Money};

/// Why a conversion or a rate table is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FxError {
    /// No rate for this currency (and it is not the base).
    #[error("no exchange rate for {0}")]
    NoRate(Currency),
    /// A rate that is zero, negative, not finite or absurdly precise.
    #[error("invalid exchange rate for {currency}: {reason}")]
    InvalidRate {
        /// The currency.
        currency: Currency,
        /// What is wrong.
        reason: String,
    },
    /// The converted amount does not fit in 64 bits.
    #[error("converted amount out of range")]
    Overflow,
}

/// An exchange-rate table: a base currency and the value of one unit of each other
/// currency in the base.
#[derive(Debug, Clone)]
pub struct FxTable {
    base: Currency,
    /// (currency, rate in units of 10^-12 of the base).
    rates: Vec<(Currency, u128)>,
}

impl FxTable {
    /// Builds a table. Rates are given as decimal text (`"1.08"`) so nothing is lost;
    /// use [`FxTable::rate_text_from_f64`] for rates read from TOML floats.
    pub fn new(base: Currency, rates: &[(Currency, &str)]) -> Result<FxTable, FxError> {
        let _ = (base, rates);
        todo!()
    }

    /// The shortest decimal text that reads back as `rate` (what the config author wrote).
    pub fn rate_text_from_f64(rate: f64) -> String {
        format!("{rate}")
    }

    /// The base currency.
    pub fn base(&self) -> Currency {
        self.base
    }

    /// Whether `currency` can be converted (it is the base or has a rate).
    pub fn knows(&self, currency: Currency) -> bool {
        currency == self.base || self.rates.iter().any(|(c, _)| *c == currency)
    }

    /// Converts `amount` into `to`, rounding half to even once.
    pub fn convert(&self, amount: Money, to: Currency) -> Result<Money, FxError> {
        let _ = (amount, to);
        todo!()
    }
}
