//! Duration strings: a positive decimal number and a unit, e.g. `250ms`, `3s`, `1.5m`, `1h`.

use std::time::Duration;

/// What a duration field must look like; part of every duration error message.
pub(crate) const EXPECTED: &str = "expected a positive number and a unit (us, ms, s, m, h), e.g. `250ms`, `3s`, `1.5m`";

/// The longest duration accepted anywhere: a week. Longer values are typos, and deadlines computed from them could
/// overflow a clock.
pub(crate) const MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses `text` into a non-zero duration of at most [`MAX`]. The error is a complete, user-facing message.
pub fn parse(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration `{text}`: {EXPECTED}");
    if text.starts_with('-') {
        return Err(format!("duration `{text}` is negative: {EXPECTED}"));
    }
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let unit_nanos: u128 = match unit {
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        _ => return Err(invalid()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits_ok(whole) || !digits_ok(fraction) || (number.contains('.') && fraction.is_empty()) {
        return Err(invalid());
    }
    if fraction.len() > 9 {
        return Err(format!("duration `{text}` has more than 9 decimal places: {EXPECTED}"));
    }
    let too_large = || format!("duration `{text}` is too large");
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let fraction_value: u128 = if fraction.is_empty() { 0 } else { fraction.parse().map_err(|_| invalid())? };
    let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| invalid())?);
    let nanos = whole
        .checked_mul(unit_nanos)
        .and_then(|n| n.checked_add(fraction_value * unit_nanos / scale))
        .ok_or_else(too_large)?;
    if nanos == 0 {
        return Err(format!("duration `{text}` must be greater than zero: {EXPECTED}"));
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_large())?;
    let sub = u32::try_from(nanos % 1_000_000_000).map_err(|_| too_large())?;
    let duration = Duration::new(secs, sub);
    if duration > MAX {
        return Err(format!("duration `{text}` is longer than the maximum of 168h (a week)"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_durations_longer_than_a_week() {
        assert_eq!(parse("168h"), Ok(MAX));
        assert!(parse("169h").unwrap_err().contains("maximum"));
        assert!(parse("18446744073709551615s").is_err());
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("500us"), Ok(Duration::from_micros(500)));
    }

    #[test]
    fn parses_fractions_exactly() {
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0.25m"), Ok(Duration::from_secs(15)));
        assert_eq!(parse("0.001s"), Ok(Duration::from_millis(1)));
        assert_eq!(parse("1.000000001s"), Ok(Duration::new(1, 1)));
    }

    #[test]
    fn rejects_zero() {
        for text in ["0s", "0ms", "0.0s", "0.0001us"] {
            let err = parse(text).unwrap_err();
            assert!(err.contains("greater than zero"), "{text}: {err}");
        }
    }

    #[test]
    fn rejects_negative() {
        let err = parse("-1s").unwrap_err();
        assert!(err.contains("negative"), "{err}");
    }

    #[test]
    fn rejects_malformed_with_the_expected_form() {
        for text in ["", "5", "s", "1.s", ".5s", "1..5s", "1 s", " 1s", "1sec", "1d", "1S", "1e3ms", "1s30ms", "+1s"] {
            let err = parse(text).unwrap_err();
            assert!(err.contains("e.g. `250ms`"), "{text:?}: {err}");
        }
    }

    #[test]
    fn rejects_overflow() {
        let err = parse("99999999999999999999999999999999999999h").unwrap_err();
        assert!(err.contains("too large"), "{err}");
        assert!(parse("18446744073709551616s").is_err());
    }
}
