//! Money as integer minor units with an ISO-4217 currency; exact decimal-string parsing
//! and formatting. No floating point anywhere.

// Money is computed here: every sum and index is checked (docs/style.md).
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

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
        let known = CURRENCIES
            .iter()
            .find(|(c, _)| c.as_bytes() == code.as_bytes());
        match known {
            Some((c, _)) => {
                let mut b = [0u8; 3];
                b.copy_from_slice(c.as_bytes());
                Ok(Currency(b))
            }
            None => Err(MoneyError::UnknownCurrency(code.chars().take(16).collect())),
        }
    }

    /// Every currency bookbroker knows, in code order.
    pub fn all() -> impl Iterator<Item = Currency> {
        CURRENCIES
            .iter()
            .filter_map(|(c, _)| Currency::parse(c).ok())
    }

    /// The code, e.g. `"USD"`.
    pub fn code(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Number of minor-unit digits (2 for USD, 0 for JPY, 3 for KWD).
    pub fn minor_digits(&self) -> u8 {
        // Every `Currency` comes from the list, so the default is never used.
        CURRENCIES
            .iter()
            .find(|(c, _)| c.as_bytes() == self.0)
            .map_or(2, |(_, d)| *d)
    }
}

/// ISO-4217 codes and their minor digits, sorted by code.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EGP", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("NGN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PEN", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("QAR", 2),
    ("RON", 2),
    ("SAR", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("THB", 2),
    ("TND", 3),
    ("TRY", 2),
    ("TWD", 2),
    ("UAH", 2),
    ("USD", 2),
    ("VND", 0),
    ("ZAR", 2),
];

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

impl std::str::FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::parse(s)
    }
}

impl serde::Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> serde::Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Currency::parse(&s).map_err(serde::de::Error::custom)
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
        let digits = currency.minor_digits();
        let invalid = || MoneyError::InvalidAmount(text.chars().take(64).collect());
        let t = text.trim();
        let (negative, t) = match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        };
        let (int_part, frac_part) = match t.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (t, None),
        };
        // "12." and ".5" are not amounts a seller should send; require digits on both
        // sides of a point.
        if int_part.is_empty()
            || !int_part.bytes().all(|b| b.is_ascii_digit())
            || frac_part.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(invalid());
        }
        let frac = frac_part.unwrap_or("");
        let (kept, extra) = frac.split_at(frac.len().min(usize::from(digits)));
        if !extra.bytes().all(|b| b == b'0') {
            return Err(MoneyError::TooPrecise {
                amount: text.chars().take(64).collect(),
                digits,
            });
        }
        let mut minor: i64 = 0;
        let push = |acc: i64, b: u8| -> Result<i64, MoneyError> {
            acc.checked_mul(10)
                .and_then(|v| v.checked_add(i64::from(b.saturating_sub(b'0'))))
                .ok_or(MoneyError::OutOfRange)
        };
        for b in int_part.bytes() {
            minor = push(minor, b)?;
        }
        for b in kept.bytes() {
            minor = push(minor, b)?;
        }
        for _ in kept.len()..usize::from(digits) {
            minor = minor.checked_mul(10).ok_or(MoneyError::OutOfRange)?;
        }
        if negative {
            minor = minor.checked_neg().ok_or(MoneyError::OutOfRange)?;
        }
        Ok(Money { minor, currency })
    }

    /// Formats as a decimal string with exactly the currency's minor digits (`"39.90"`,
    /// `"1200"` for JPY).
    pub fn to_decimal(&self) -> String {
        let digits = u32::from(self.currency.minor_digits());
        let abs = self.minor.unsigned_abs();
        let sign = if self.minor < 0 { "-" } else { "" };
        if digits == 0 {
            return format!("{sign}{abs}");
        }
        // At most three minor digits (`Currency::minor_digits`), so `scale` is 1000 at
        // most and never 0.
        let scale = 10u64.saturating_pow(digits).max(1);
        format!(
            "{sign}{}.{:0width$}",
            abs.checked_div(scale).unwrap_or(0),
            abs.checked_rem(scale).unwrap_or(0),
            width = digits as usize
        )
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.to_decimal(), self.currency)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn usd(text: &str) -> Result<i64, MoneyError> {
        Money::parse_decimal(text, Currency::USD).map(|m| m.minor)
    }

    #[test]
    fn currencies() {
        assert_eq!(Currency::parse("USD").unwrap(), Currency::USD);
        assert_eq!(Currency::parse("JPY").unwrap().minor_digits(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().minor_digits(), 3);
        assert_eq!(Currency::parse("BHD").unwrap().minor_digits(), 3);
        assert_eq!(Currency::EUR.minor_digits(), 2);
        for bad in ["usd", "US", "USDD", "", "XXX", "ÉUR"] {
            assert!(Currency::parse(bad).is_err(), "{bad}");
        }
        for code in [
            "USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "SEK", "NOK", "DKK", "PLN", "CZK",
            "HUF", "INR", "CNY", "KRW", "BRL", "MXN", "ZAR", "NZD", "SGD", "HKD", "KWD", "BHD",
        ] {
            assert_eq!(Currency::parse(code).unwrap().code(), code);
        }
        assert!(
            CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0),
            "sorted, no duplicates"
        );
        assert_eq!(Currency::all().count(), CURRENCIES.len());
    }

    #[test]
    fn parses_decimals_exactly() {
        assert_eq!(usd("39.99"), Ok(3999));
        assert_eq!(usd("40"), Ok(4000));
        assert_eq!(usd("12.5"), Ok(1250));
        assert_eq!(usd(" 3.99\n"), Ok(399));
        assert_eq!(usd("-1.05"), Ok(-105));
        assert_eq!(usd("0.10"), Ok(10));
        assert_eq!(usd("1.2300"), Ok(123));
        assert_eq!(usd("007.00"), Ok(700));
        assert_eq!(usd("92233720368547758.07"), Ok(i64::MAX));
        assert_eq!(usd("92233720368547758.08"), Err(MoneyError::OutOfRange));
        assert_eq!(usd("99999999999999999999999"), Err(MoneyError::OutOfRange));
        assert_eq!(
            Money::parse_decimal("1200", Currency::JPY).unwrap().minor,
            1200
        );
        assert_eq!(
            Money::parse_decimal("1.234", Currency::parse("KWD").unwrap())
                .unwrap()
                .minor,
            1234
        );
        for bad in [
            "1e3", "", ".", "1.2.3", "+-", "+1", "-", "--1", "1.", ".5", "1,5", "1 000", "0x10",
            "١٢",
        ] {
            assert!(
                matches!(usd(bad), Err(MoneyError::InvalidAmount(_))),
                "{bad:?} gave {:?}",
                usd(bad)
            );
        }
        assert!(matches!(
            usd("1.001"),
            Err(MoneyError::TooPrecise { digits: 2, .. })
        ));
        assert!(matches!(
            Money::parse_decimal("1.5", Currency::JPY),
            Err(MoneyError::TooPrecise { digits: 0, .. })
        ));
        assert_eq!(
            Money::parse_decimal("15.00", Currency::JPY).unwrap().minor,
            15
        );
    }

    #[test]
    fn formats_with_currency_digits() {
        assert_eq!(Money::new(3990, Currency::USD).to_decimal(), "39.90");
        assert_eq!(Money::new(5, Currency::USD).to_decimal(), "0.05");
        assert_eq!(Money::new(-5, Currency::USD).to_decimal(), "-0.05");
        assert_eq!(Money::new(1200, Currency::JPY).to_decimal(), "1200");
        assert_eq!(
            Money::new(1, Currency::parse("KWD").unwrap()).to_decimal(),
            "0.001"
        );
        assert_eq!(
            Money::new(i64::MIN, Currency::USD).to_decimal(),
            "-92233720368547758.08"
        );
        assert_eq!(Money::new(4398, Currency::EUR).to_string(), "43.98 EUR");
    }
}
