//! Durations and clock offsets as written in fault plans: a decimal number
//! and a unit, `250ms`, `1.5s`, `2m`, `1h`, `1d`, `10us`, `3ns`; offsets
//! take a sign, `-2s`, `+500ms`. Parsing is exact to the nanosecond (no
//! floating point, unlike `faultline_core::duration`, which rounds to the
//! millisecond): a shrunk plan must replay exactly. Printing round-trips.

use std::time::Duration;

const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Parse a non-negative duration.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.starts_with('-') {
        return Err(format!(
            "{text:?} is negative; durations and times cannot be"
        ));
    }
    let nanos = parse_magnitude(text.strip_prefix('+').unwrap_or(text))?;
    let nanos = u64::try_from(nanos).map_err(|_| format!("{text:?} is too large"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Parse a signed clock offset, in nanoseconds.
pub fn parse_offset(text: &str) -> Result<i64, String> {
    let (negative, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let nanos = parse_magnitude(magnitude)?;
    let nanos = i64::try_from(nanos).map_err(|_| format!("{text:?} is too large"))?;
    Ok(if negative { -nanos } else { nanos })
}

fn parse_magnitude(text: &str) -> Result<u128, String> {
    let expected = || {
        format!("{text:?} is not a duration: expected a number and a unit (ns, us, ms, s, m, h, d), like \"1.5s\"")
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(expected)?;
    let (number, unit) = text.split_at(split);
    let unit_nanos = UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, nanos)| *nanos)
        .ok_or_else(expected)?;
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) || fraction.contains('.') {
        return Err(expected());
    }
    let too_large = || format!("{text:?} is too large");
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(too_large)?;
    if !fraction.is_empty() {
        if fraction.len() > 18 {
            return Err(format!(
                "{text:?} has more decimals than a nanosecond resolves"
            ));
        }
        let scale = 10u128.pow(fraction.len() as u32);
        let digits: u128 = fraction.parse().map_err(|_| expected())?;
        let scaled = digits * unit_nanos;
        if !scaled.is_multiple_of(scale) {
            return Err(format!("{text:?} is finer than a nanosecond"));
        }
        nanos = nanos.checked_add(scaled / scale).ok_or_else(too_large)?;
    }
    Ok(nanos)
}

/// Print a duration so that [`parse_duration`] gives it back exactly.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos >= 1_000_000_000 && nanos.is_multiple_of(1_000_000) {
        let seconds = nanos / 1_000_000_000;
        let millis = nanos % 1_000_000_000 / 1_000_000;
        if millis == 0 {
            format!("{seconds}s")
        } else {
            let decimals = format!("{millis:03}");
            format!("{seconds}.{}s", decimals.trim_end_matches('0'))
        }
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// Print an offset so that [`parse_offset`] gives it back exactly.
pub fn format_offset(offset_nanos: i64) -> String {
    let magnitude = format_duration(Duration::from_nanos(offset_nanos.unsigned_abs()));
    if offset_nanos < 0 {
        format!("-{magnitude}")
    } else {
        format!("+{magnitude}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_exactly() {
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3_600)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("0.000000001s"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why() {
        for (text, problem) in [
            ("-1s", "negative"),
            ("1", "not a duration"),
            ("s", "not a duration"),
            ("1.s", "not a duration"),
            ("1.2.3s", "not a duration"),
            ("1x", "not a duration"),
            ("0.5ns", "finer than a nanosecond"),
            ("99999999999999h", "too large"),
        ] {
            let error = parse_duration(text).expect_err(text);
            assert!(error.contains(problem), "{text}: {error}");
        }
    }

    #[test]
    fn offsets_take_a_sign() {
        assert_eq!(parse_offset("-2s"), Ok(-2_000_000_000));
        assert_eq!(parse_offset("+500ms"), Ok(500_000_000));
        assert_eq!(parse_offset("3ms"), Ok(3_000_000));
    }

    #[test]
    fn printing_round_trips() {
        for nanos in [
            0,
            1,
            999,
            1_000,
            1_500_000,
            1_000_000_000,
            1_500_000_000,
            12_301_000_000,
            7_200_000_000_000,
            1_000_000_001,
        ] {
            let duration = Duration::from_nanos(nanos);
            assert_eq!(
                parse_duration(&format_duration(duration)),
                Ok(duration),
                "{nanos}"
            );
        }
        for offset in [-2_000_000_000, 0, 1, -1_500_000] {
            assert_eq!(parse_offset(&format_offset(offset)), Ok(offset));
        }
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }
}
