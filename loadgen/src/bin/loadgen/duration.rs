//! Durations as people type them on a command line: `30s`, `500ms`, `2m`, `1.5s`.
//!
//! Hand-written rather than `humantime`: humantime refuses fractions (`1.5s`), which
//! load runs are often given in, and this is twenty lines.

use std::time::Duration;

/// Parses a duration: a non-negative decimal number followed by a unit (`ns`, `us`,
/// `ms`, `s`, `m`, `h`); a bare number means seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(format!("`{text}` is not a duration (try 30s, 500ms, 2m)"));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 30s, 500ms, 2m)"))?;
    let nanos_per_unit = match unit.trim() {
        "ns" => 1.0,
        "us" | "µs" => 1e3,
        "ms" => 1e6,
        "" | "s" => 1e9,
        "m" | "min" => 60e9,
        "h" => 3600e9,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use ns, us, ms, s, m or h)"
            ))
        }
    };
    let nanos = value * nanos_per_unit;
    // A week is far beyond any sensible load test and keeps the arithmetic in range.
    if !nanos.is_finite() || nanos > 7.0 * 86400e9 {
        return Err(format!("duration `{text}` is too long"));
    }
    Ok(Duration::from_nanos(nanos.round() as u64))
}

/// Formats a duration compactly (`10s`, `500ms`), the way [`parse_duration`] reads it.
#[cfg(test)]
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns.is_multiple_of(1_000_000_000) {
        format!("{}s", ns / 1_000_000_000)
    } else if ns.is_multiple_of(1_000_000) {
        format!("{}ms", ns / 1_000_000)
    } else if ns.is_multiple_of(1_000) {
        format!("{}us", ns / 1_000)
    } else {
        format!("{ns}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("250ns"), Ok(Duration::from_nanos(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "s",
            "ms",
            "-1s",
            "10x",
            "1.2.3s",
            "abc",
            "1e3s",
            "99999999h",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_back() {
        for s in ["10s", "500ms", "100us", "7ns"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(format_duration(d), s);
        }
    }
}
