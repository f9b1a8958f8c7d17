//! Money as integer minor units with an ISO-4217 currency; exact decimal-string parsing
//! and formatting. No floating point anywhere.

use std::fmt;

/// An ISO-4217 currency code known to bookbroker, with its number of minor digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

/// Why an amount or a currency is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    /// Not a known ISO-4217 code (three upper-case letters from the built-in list).
    #[error("unknown currency {0:?}")]
    UnknownCurrency(String),
    /// Not a decimal number (`"12"`, `"12.5"`, `"12.50"`; optional leading `-`).
    #[error("invalid amount {0:?}")]
    InvalidAmount(String),
    /// More fractional digits than the currency has (other than trailing zeros).
    #[error("amount {amount:?} has more than {digits} decimal places")]
    TooPrecise {
        /// The text.
        amount: String,
        /// The currency's minor digits.
        digits: u8,
    },
    /// The amount does not fit in 64-bit minor units.
    #[error("amount out of range")]
    OutOfRange,
}

impl Currency {
    /// US dollar.
    pub const USD: Currency = Currency(*b"USD");
    /// Euro.
    pub const EUR: Currency = Currency(*b"EUR");
    /// Pound sterling.
    pub const GBP: Currency = Currency(*b"GBP");
    /// Japanese yen (no minor unit).
    pub const JPY: Currency = Currency(*b"JPY");

    /// Parses a known ISO-4217 code; exactly three upper-case ASCII letters.
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        let _ = code;
        todo!()
    }

    /// The code, e.g. `"USD"`.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Number of minor-unit digits (2 for USD, 0 for JPY, 3 for KWD).
    pub fn minor_digits(&self) -> u8 {
        todo!()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount of money: integer minor units (cents) of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    /// Minor units; may be negative only where a codec allows it (never for prices).
    pub minor: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// Builds a value.
    pub fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    /// Parses a decimal string such as `"39.99"` exactly into minor units of `currency`.
    pub fn parse_decimal(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let _ = (text, currency);
        todo!()
    }

    /// Formats as a decimal string with exactly the currency's minor digits (`"39.90"`,
    /// `"1200"` for JPY).
    pub fn to_decimal(&self) -> String {
        todo!()
    }
}
