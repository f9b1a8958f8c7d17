//! ISBN-10 and ISBN-13: parsing with hyphens and spaces, check digits, and the canonical
//! 13-digit form every other part of bookbroker uses.

use std::fmt;

/// A valid ISBN in canonical ISBN-13 form (13 ASCII digits, prefix 978 or 979, correct
/// check digit). ISBN-10 input is converted on parse.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Isbn([u8; 13]);

/// Why a string is not an ISBN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IsbnError {
    /// Nothing but separators.
    #[error("ISBN is empty")]
    Empty,
    /// A character other than a digit, hyphen, space or a final `X` of an ISBN-10.
    #[error("ISBN contains invalid character {0:?}")]
    InvalidCharacter(char),
    /// Neither 10 nor 13 digits.
    #[error("ISBN must have 10 or 13 digits, found {0}")]
    WrongLength(usize),
    /// The check digit does not match.
    #[error("ISBN check digit is wrong")]
    WrongCheckDigit,
    /// An ISBN-13 must start with 978 or 979.
    #[error("ISBN-13 must start with 978 or 979")]
    WrongPrefix,
}

impl Isbn {
    /// Parses an ISBN-10 or ISBN-13; hyphens and spaces are ignored, a lower-case `x`
    /// counts as `X`.
    pub fn parse(s: &str) -> Result<Isbn, IsbnError> {
        // Longest accepted input is 13 digits; anything beyond is counted, not stored.
        let mut digits = [0u8; 13];
        let mut n = 0usize;
        let mut x_seen = false;
        for c in s.chars() {
            match c {
                '-' | ' ' => continue,
                '0'..='9' if !x_seen => {
                    if let Some(slot) = digits.get_mut(n) {
                        *slot = c as u8;
                    }
                    n += 1;
                }
                'X' | 'x' if !x_seen && n == 9 => {
                    // Only valid as the tenth character of an ISBN-10.
                    if let Some(slot) = digits.get_mut(n) {
                        *slot = b'X';
                    }
                    n += 1;
                    x_seen = true;
                }
                _ => return Err(IsbnError::InvalidCharacter(c)),
            }
        }
        match n {
            0 => Err(IsbnError::Empty),
            10 => {
                let mut d10 = [0u8; 10];
                d10.copy_from_slice(&digits[..10]);
                Isbn::from_isbn10(&d10)
            }
            13 => {
                let mut d13 = [0u8; 13];
                d13.copy_from_slice(&digits);
                if !(d13.starts_with(b"978") || d13.starts_with(b"979")) {
                    return Err(IsbnError::WrongPrefix);
                }
                let mut first12 = [0u8; 12];
                first12.copy_from_slice(&d13[..12]);
                if check13(&first12) != d13[12] {
                    return Err(IsbnError::WrongCheckDigit);
                }
                Ok(Isbn(d13))
            }
            other => Err(IsbnError::WrongLength(other)),
        }
    }

    /// Converts ten validated characters (nine digits and a digit or `X`).
    fn from_isbn10(d: &[u8; 10]) -> Result<Isbn, IsbnError> {
        let mut sum = 0u32;
        for (i, &c) in d.iter().enumerate() {
            let v = if c == b'X' { 10 } else { u32::from(c - b'0') };
            sum += v * (10 - i as u32);
        }
        if sum % 11 != 0 {
            return Err(IsbnError::WrongCheckDigit);
        }
        let mut first12 = [0u8; 12];
        first12[..3].copy_from_slice(b"978");
        first12[3..].copy_from_slice(&d[..9]);
        let mut out = [0u8; 13];
        out[..12].copy_from_slice(&first12);
        out[12] = check13(&first12);
        Ok(Isbn(out))
    }

    /// The ISBN-10 form (only for 978-prefixed ISBNs; 979 has no ISBN-10).
    pub fn to_isbn10(&self) -> Option<String> {
        if !self.0.starts_with(b"978") {
            return None;
        }
        let body = &self.0[3..12];
        let mut sum = 0u32;
        for (i, &c) in body.iter().enumerate() {
            sum += u32::from(c - b'0') * (10 - i as u32);
        }
        let check = (11 - sum % 11) % 11;
        let mut s: String = body.iter().map(|&b| b as char).collect();
        s.push(if check == 10 {
            'X'
        } else {
            char::from(b'0' + check as u8)
        });
        Some(s)
    }

    /// Builds an ISBN-13 from its first 12 digits, computing the check digit.
    /// Returns `None` unless `first12` is 12 ASCII digits starting with 978 or 979.
    pub fn from_prefix12(first12: &str) -> Option<Isbn> {
        let bytes: &[u8; 12] = first12.as_bytes().try_into().ok()?;
        if !bytes.iter().all(u8::is_ascii_digit)
            || !(bytes.starts_with(b"978") || bytes.starts_with(b"979"))
        {
            return None;
        }
        let mut out = [0u8; 13];
        out[..12].copy_from_slice(bytes);
        out[12] = check13(bytes);
        Some(Isbn(out))
    }

    /// The 13 digits.
    pub fn as_str(&self) -> &str {
        // The bytes are ASCII digits by construction.
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

/// The ISBN-13 check digit (as an ASCII digit) of 12 ASCII digits.
fn check13(first12: &[u8; 12]) -> u8 {
    let mut sum = 0u32;
    for (i, &c) in first12.iter().enumerate() {
        let w = if i % 2 == 0 { 1 } else { 3 };
        sum += u32::from(c.wrapping_sub(b'0')) * w;
    }
    b'0' + ((10 - sum % 10) % 10) as u8
}

impl fmt::Display for Isbn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Isbn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Isbn({})", self.as_str())
    }
}

impl std::str::FromStr for Isbn {
    type Err = IsbnError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Isbn::parse(s)
    }
}

impl serde::Serialize for Isbn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Isbn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Isbn::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_isbn13_with_separators() {
        let isbn = Isbn::parse("978-0-13-110362-7").unwrap();
        assert_eq!(isbn.as_str(), "9780131103627");
        assert_eq!(Isbn::parse(" 978 0131103627 ").unwrap(), isbn);
        assert_eq!(isbn.to_string(), "9780131103627");
        assert_eq!(format!("{isbn:?}"), "Isbn(9780131103627)");
    }

    #[test]
    fn converts_isbn10() {
        assert_eq!(
            Isbn::parse("0-13-110362-8").unwrap().as_str(),
            "9780131103627"
        );
        assert_eq!(Isbn::parse("080442957X").unwrap().as_str(), "9780804429573");
        assert_eq!(
            Isbn::parse("0-8044-2957-x").unwrap().as_str(),
            "9780804429573"
        );
        assert_eq!(
            Isbn::parse("9780804429573").unwrap().to_isbn10().as_deref(),
            Some("080442957X")
        );
        assert_eq!(Isbn::parse("9791090636071").unwrap().to_isbn10(), None);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(Isbn::parse(""), Err(IsbnError::Empty));
        assert_eq!(Isbn::parse(" - "), Err(IsbnError::Empty));
        assert_eq!(Isbn::parse("978013110362"), Err(IsbnError::WrongLength(12)));
        assert_eq!(
            Isbn::parse("97801311036271"),
            Err(IsbnError::WrongLength(14))
        );
        assert_eq!(
            Isbn::parse("9780131103628"),
            Err(IsbnError::WrongCheckDigit)
        );
        assert_eq!(Isbn::parse("0131103627"), Err(IsbnError::WrongCheckDigit));
        assert_eq!(Isbn::parse("9770131103627"), Err(IsbnError::WrongPrefix));
        assert_eq!(
            Isbn::parse("97801311036X7"),
            Err(IsbnError::InvalidCharacter('X'))
        );
        assert_eq!(
            Isbn::parse("080442957X1"),
            Err(IsbnError::InvalidCharacter('1'))
        );
        assert_eq!(
            Isbn::parse("978013110362٧"),
            Err(IsbnError::InvalidCharacter('٧'))
        );
        assert_eq!(
            Isbn::parse("978_0131103627"),
            Err(IsbnError::InvalidCharacter('_'))
        );
        // Many digits must not overflow anything.
        assert_eq!(
            Isbn::parse(&"9".repeat(10_000)),
            Err(IsbnError::WrongLength(10_000))
        );
    }

    #[test]
    fn from_prefix12() {
        assert_eq!(
            Isbn::from_prefix12("978013110362").unwrap().as_str(),
            "9780131103627"
        );
        assert_eq!(
            Isbn::from_prefix12("979109063607").unwrap().as_str(),
            "9791090636071"
        );
        assert_eq!(Isbn::from_prefix12("977013110362"), None);
        assert_eq!(Isbn::from_prefix12("97801311036"), None);
        assert_eq!(Isbn::from_prefix12("97801311036a"), None);
        assert_eq!(Isbn::from_prefix12("978013110362é"), None);
    }

    #[test]
    fn serde_as_string() {
        let isbn = Isbn::parse("0131103628").unwrap();
        assert_eq!(serde_json::to_string(&isbn).unwrap(), "\"9780131103627\"");
        let back: Isbn = serde_json::from_str("\"0-13-110362-8\"").unwrap();
        assert_eq!(back, isbn);
        assert!(serde_json::from_str::<Isbn>("\"0131103627\"").is_err());
    }
}
