//! The pieces every line is made of: the head, fields, numbers and currencies, and their
//! checks.

use super::{LineError, MAX_LINE};
use crate::money::Currency;

/// Replaces TAB, CR and LF in a field with spaces.
pub fn sanitize_field(field: &str) -> std::borrow::Cow<'_, str> {
    if field.contains(['\t', '\n', '\r']) {
        std::borrow::Cow::Owned(field.replace(['\t', '\n', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(field)
    }
}

pub(crate) fn head(out: &mut Vec<u8>, verb: &str, tag: &str) {
    out.extend_from_slice(verb.as_bytes());
    out.push(b' ');
    out.extend_from_slice(sanitize_field(tag).as_bytes());
}

pub(crate) fn field(out: &mut Vec<u8>, value: &str) {
    out.push(b'\t');
    out.extend_from_slice(sanitize_field(value).as_bytes());
}

pub(crate) fn number(out: &mut Vec<u8>, value: i64) {
    out.push(b'\t');
    out.extend_from_slice(value.to_string().as_bytes());
}

/// The last field of a line, cut at a character boundary so the whole line (from
/// `line_start`, LF included) stays within [`MAX_LINE`].
pub(crate) fn last_field(out: &mut Vec<u8>, line_start: usize, value: &str) {
    out.push(b'\t');
    let used = out.len().saturating_sub(line_start) + 1;
    let room = MAX_LINE.saturating_sub(used);
    let value = sanitize_field(value);
    let mut cut = value.len().min(room);
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    out.extend_from_slice(value.get(..cut).unwrap_or("").as_bytes());
}

pub(crate) fn bad(verb: &'static str, reason: impl Into<String>) -> LineError {
    LineError::BadFields {
        verb,
        reason: reason.into(),
    }
}

pub(crate) fn shorten(text: &str) -> String {
    text.chars().take(32).collect()
}

/// Splits `VERB SP TAG [TAB rest]`, after dropping a final LF (or CRLF).
pub(crate) fn split_line(line: &[u8]) -> Result<(&str, &str, Option<&str>), LineError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() >= MAX_LINE {
        return Err(LineError::TooLong);
    }
    // A CR can only end a line: inside one, the field that holds it could not be sent
    // back (encoders write it as a space), so an offer id with a CR could never be
    // ordered.
    if line.contains(&b'\r') {
        return Err(bad("line", "CR inside the line"));
    }
    let line = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    let (head, rest) = match line.split_once('\t') {
        Some((h, r)) => (h, Some(r)),
        None => (line, None),
    };
    let (verb, tag) = head
        .split_once(' ')
        .ok_or_else(|| LineError::UnknownVerb(shorten(head)))?;
    Ok((verb, tag, rest))
}

/// Exactly `N` TAB-separated fields.
pub(crate) fn fields<'a, const N: usize>(
    verb: &'static str,
    rest: Option<&'a str>,
) -> Result<[&'a str; N], LineError> {
    let mut out = [""; N];
    let mut it = rest.map(|r| r.split('\t'));
    let mut count = 0usize;
    if let Some(it) = it.as_mut() {
        for f in it {
            if let Some(slot) = out.get_mut(count) {
                *slot = f;
            }
            count += 1;
        }
    }
    if count != N {
        return Err(bad(verb, format!("expected {N} fields, found {count}")));
    }
    Ok(out)
}

/// A non-negative decimal integer: ASCII digits only, no sign.
pub(crate) fn parse_digits(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok()
}

pub(crate) fn parse_amount(verb: &'static str, name: &str, text: &str) -> Result<i64, LineError> {
    parse_digits(text)
        .and_then(|v| i64::try_from(v).ok())
        .ok_or_else(|| bad(verb, format!("invalid {name}")))
}

/// A total as a seller states it: digits with an optional leading `-`.
pub(crate) fn parse_signed_amount(
    verb: &'static str,
    name: &str,
    text: &str,
) -> Result<i64, LineError> {
    match text.strip_prefix('-') {
        Some(digits) => parse_amount(verb, name, digits).map(|v| -v),
        None => parse_amount(verb, name, text),
    }
}

pub(crate) fn parse_currency(verb: &'static str, text: &str) -> Result<Currency, LineError> {
    Currency::parse(text).map_err(|e| bad(verb, e.to_string()))
}
