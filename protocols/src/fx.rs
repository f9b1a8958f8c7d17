//! Currency conversion through a base currency, with one documented rounding rule.
//!
//! A rate is the value of one unit of a currency in the base currency (config `[fx]
//! rates`). Rates are held exactly as decimal fractions (up to 12 decimal places), never
//! as floats in arithmetic. An amount in currency A becomes currency B as
//! `amount_A × rate_A / rate_B`, scaled between the two currencies' minor digits and
//! computed exactly in 128-bit integers, then rounded **once**, half to even, to B's
//! minor unit.

// Money is computed here: every sum and index is checked (docs/style.md).
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

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
        let mut table = FxTable {
            base,
            rates: Vec::with_capacity(rates.len()),
        };
        for &(currency, text) in rates {
            let rate =
                parse_rate(text).map_err(|reason| FxError::InvalidRate { currency, reason })?;
            if currency == base {
                // A rate for the base itself must be 1, or the table contradicts itself.
                if rate != RATE_ONE {
                    return Err(FxError::InvalidRate {
                        currency,
                        reason: "the base currency's rate must be 1".to_string(),
                    });
                }
                continue;
            }
            match table.rates.iter_mut().find(|(c, _)| *c == currency) {
                Some(slot) if slot.1 != rate => {
                    return Err(FxError::InvalidRate {
                        currency,
                        reason: "given twice with different values".to_string(),
                    })
                }
                Some(_) => {}
                None => table.rates.push((currency, rate)),
            }
        }
        Ok(table)
    }

    /// The rate of `currency` in units of 10^-12 of the base (10^12 for the base).
    fn rate(&self, currency: Currency) -> Result<u128, FxError> {
        if currency == self.base {
            return Ok(RATE_ONE);
        }
        self.rates
            .iter()
            .find(|(c, _)| *c == currency)
            .map(|(_, r)| *r)
            .ok_or(FxError::NoRate(currency))
    }

    /// The shortest decimal text that reads back as `rate` (what the config author wrote).
    pub fn rate_text_from_f64(rate: f64) -> String {
        // Rust's `Display` for f64 prints the shortest text that reads back as the same
        // float and never uses exponent notation, so `1.08` stays `"1.08"` and `0.0067`
        // stays `"0.0067"`. Non-finite values give text that `new` rejects.
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
        if amount.currency == to {
            return Ok(amount);
        }
        let rate_from = self.rate(amount.currency)?;
        let rate_to = self.rate(to)?;
        let from_digits = u32::from(amount.currency.minor_digits());
        let to_digits = u32::from(to.minor_digits());
        // value_in_to_minor = minor × rate_from × 10^to_digits / (rate_to × 10^from_digits)
        // Rates are at most 10^21 (1e9 with 12 decimals) and amounts at most 2^63, so the
        // numerator fits in i128 only with care: multiply step by step, checked.
        let scale_up = 10i128.pow(to_digits);
        let scale_down = 10i128.pow(from_digits);
        let numerator = i128::from(amount.minor)
            .checked_mul(i128::try_from(rate_from).map_err(|_| FxError::Overflow)?)
            .and_then(|v| v.checked_mul(scale_up))
            .ok_or(FxError::Overflow)?;
        let denominator = i128::try_from(rate_to)
            .map_err(|_| FxError::Overflow)?
            .checked_mul(scale_down)
            .ok_or(FxError::Overflow)?;
        let rounded = div_round_half_even(numerator, denominator).ok_or(FxError::Overflow)?;
        let minor = i64::try_from(rounded).map_err(|_| FxError::Overflow)?;
        Ok(Money::new(minor, to))
    }
}

/// One unit of the base, in rate units.
const RATE_ONE: u128 = 1_000_000_000_000;
/// Decimal places a rate may have.
const RATE_DECIMALS: usize = 12;
/// The largest rate accepted (one unit worth a billion units of the base).
const RATE_MAX: u128 = 1_000_000_000 * RATE_ONE;

/// Parses rate text exactly into units of 10^-12.
fn parse_rate(text: &str) -> Result<u128, String> {
    let t = text.trim();
    if t.starts_with('-') {
        return Err("must be positive".to_string());
    }
    let (int_part, frac_part) = t.split_once('.').unwrap_or((t, ""));
    let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (int_part.is_empty() && frac_part.is_empty())
        || !is_digits(int_part)
        || !is_digits(frac_part)
    {
        return Err(format!("{:?} is not a decimal number", shorten(t)));
    }
    let frac_trimmed = frac_part.trim_end_matches('0');
    if frac_trimmed.len() > RATE_DECIMALS {
        return Err(format!("more than {RATE_DECIMALS} decimal places"));
    }
    let int_trimmed = int_part.trim_start_matches('0');
    // Eleven integer digits are far beyond RATE_MAX; refuse before any arithmetic.
    if int_trimmed.len() > 10 {
        return Err("absurdly large".to_string());
    }
    // Checked although the lengths above already bound every value far below u128's
    // range: this is money, and the check costs nothing here.
    let digits = |text: &str| -> Option<u128> {
        text.bytes().try_fold(0u128, |acc, b| {
            acc.checked_mul(10)?
                .checked_add(u128::from(b.saturating_sub(b'0')))
        })
    };
    let absurd = || "absurdly large".to_string();
    let int_value = digits(int_trimmed)
        .and_then(|v| v.checked_mul(RATE_ONE))
        .ok_or_else(absurd)?;
    let mut frac_value = digits(frac_trimmed).ok_or_else(absurd)?;
    for _ in frac_trimmed.len()..RATE_DECIMALS {
        frac_value = frac_value.checked_mul(10).ok_or_else(absurd)?;
    }
    let value = int_value.checked_add(frac_value).ok_or_else(absurd)?;
    if value == 0 {
        return Err("must be positive".to_string());
    }
    if value > RATE_MAX {
        return Err("absurdly large".to_string());
    }
    Ok(value)
}

fn shorten(t: &str) -> String {
    t.chars().take(32).collect()
}

/// `n / d` rounded half to even; `d` must be positive.
fn div_round_half_even(n: i128, d: i128) -> Option<i128> {
    if d <= 0 {
        return None;
    }
    let q = n.div_euclid(d);
    let r = n.rem_euclid(d); // 0 <= r < d
    let twice = r.checked_mul(2)?;
    let up = match twice.cmp(&d) {
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Equal => q % 2 != 0,
    };
    if up {
        q.checked_add(1)
    } else {
        Some(q)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod tests {
    use super::*;

    fn table() -> FxTable {
        FxTable::new(
            Currency::USD,
            &[
                (Currency::EUR, "1.08"),
                (Currency::GBP, "1.27"),
                (Currency::JPY, "0.0067"),
                (Currency::parse("KWD").unwrap(), "3.25"),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rate_text_from_float_is_what_was_written() {
        assert_eq!(FxTable::rate_text_from_f64(1.08), "1.08");
        assert_eq!(FxTable::rate_text_from_f64(0.0067), "0.0067");
        assert_eq!(FxTable::rate_text_from_f64(1.0), "1");
        assert_eq!(FxTable::rate_text_from_f64(1e-7), "0.0000001");
        assert_eq!(FxTable::rate_text_from_f64(1e9), "1000000000");
        assert_eq!(FxTable::rate_text_from_f64(1e21), "1000000000000000000000");
        assert_eq!(
            parse_rate(&FxTable::rate_text_from_f64(0.0067)),
            Ok(6_700_000_000)
        );
        assert!(parse_rate(&FxTable::rate_text_from_f64(f64::NAN)).is_err());
        assert!(parse_rate(&FxTable::rate_text_from_f64(f64::INFINITY)).is_err());
        assert!(parse_rate(&FxTable::rate_text_from_f64(1e21)).is_err());
        assert!(parse_rate(&FxTable::rate_text_from_f64(1e-13)).is_err());
    }

    #[test]
    fn parses_rates() {
        assert_eq!(parse_rate("1"), Ok(RATE_ONE));
        assert_eq!(parse_rate("1.08"), Ok(1_080_000_000_000));
        assert_eq!(parse_rate(" 0.000000000001 "), Ok(1));
        assert_eq!(parse_rate("2.500000000000000"), Ok(2_500_000_000_000));
        assert_eq!(parse_rate("1000000000"), Ok(RATE_MAX));
        for bad in [
            "0",
            "0.0",
            "-1",
            "1e3",
            "",
            ".",
            "abc",
            "1.0000000000001",
            "1000000000.5",
            "99999999999999999999999999",
            "+1",
            "1.2.3",
            "NaN",
            "inf",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn table_validation() {
        assert!(FxTable::new(Currency::USD, &[(Currency::USD, "1")]).is_ok());
        assert!(FxTable::new(Currency::USD, &[(Currency::USD, "1.1")]).is_err());
        assert!(FxTable::new(
            Currency::USD,
            &[(Currency::EUR, "1.1"), (Currency::EUR, "1.2")]
        )
        .is_err());
        assert!(matches!(
            FxTable::new(Currency::USD, &[(Currency::EUR, "0")]),
            Err(FxError::InvalidRate {
                currency: Currency::EUR,
                ..
            })
        ));
        let t = table();
        assert!(t.knows(Currency::USD) && t.knows(Currency::EUR));
        assert!(!t.knows(Currency::parse("CHF").unwrap()));
        assert_eq!(t.base(), Currency::USD);
    }

    #[test]
    fn converts_through_base() {
        let t = table();
        let m = |minor, c| Money::new(minor, c);
        assert_eq!(
            t.convert(m(1157, Currency::EUR), Currency::USD),
            Ok(m(1250, Currency::USD))
        );
        assert_eq!(
            t.convert(m(1000, Currency::USD), Currency::EUR),
            Ok(m(926, Currency::EUR))
        );
        // EUR -> GBP goes through USD: 10.00 × 1.08 / 1.27 = 8.5039… → 8.50.
        assert_eq!(
            t.convert(m(1000, Currency::EUR), Currency::GBP),
            Ok(m(850, Currency::GBP))
        );
        // JPY has no minor unit: 1500 JPY × 0.0067 = 10.05 USD.
        assert_eq!(
            t.convert(m(1500, Currency::JPY), Currency::USD),
            Ok(m(1005, Currency::USD))
        );
        assert_eq!(
            t.convert(m(1005, Currency::USD), Currency::JPY),
            Ok(m(1500, Currency::JPY))
        );
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(
            t.convert(m(1000, kwd), Currency::USD),
            Ok(m(325, Currency::USD))
        );
        assert_eq!(
            t.convert(m(1, Currency::EUR), Currency::parse("CHF").unwrap()),
            Err(FxError::NoRate(Currency::parse("CHF").unwrap()))
        );
        assert_eq!(
            t.convert(m(-1157, Currency::EUR), Currency::USD),
            Ok(m(-1250, Currency::USD))
        );
        assert_eq!(
            t.convert(m(i64::MAX, Currency::EUR), Currency::USD),
            Err(FxError::Overflow)
        );
        assert_eq!(
            t.convert(m(i64::MAX, Currency::EUR), Currency::EUR),
            Ok(m(i64::MAX, Currency::EUR))
        );
    }

    #[test]
    fn rounds_half_to_even() {
        // 0.5 rate: odd minor amounts land exactly on a half.
        let t = FxTable::new(Currency::USD, &[(Currency::EUR, "0.5")]).unwrap();
        let usd = |minor| {
            t.convert(Money::new(minor, Currency::EUR), Currency::USD)
                .unwrap()
                .minor
        };
        assert_eq!(usd(1), 0); // 0.5 -> 0
        assert_eq!(usd(3), 2); // 1.5 -> 2
        assert_eq!(usd(5), 2); // 2.5 -> 2
        assert_eq!(usd(7), 4); // 3.5 -> 4
        assert_eq!(usd(-1), 0);
        assert_eq!(usd(-3), -2);
        assert_eq!(usd(-5), -2);
        assert_eq!(div_round_half_even(10, 4), Some(2));
        assert_eq!(div_round_half_even(14, 4), Some(4));
        assert_eq!(div_round_half_even(11, 4), Some(3));
        assert_eq!(div_round_half_even(9, 4), Some(2));
        assert_eq!(div_round_half_even(1, 0), None);
    }
}
