//! Human-readable durations, parsed and printed in one place for
//! configuration files, scenario files, fault plans and the command line.
//!
//! A duration is one or more `<number><unit>` parts: `250ms`, `1.5s`, `90s`,
//! `5m`, `2h`, `1d`, `1h30m`, `10us`, `3ns`. Units: `ns`, `us` (or `µs`),
//! `ms`, `s`, `m`, `h`, `d`. A bare number is refused: the unit is never
//! guessed. Parsing is exact to the nanosecond, with no floating point, so
//! a printed value (a shrunk fault plan, say) reads back to the very same
//! duration. Clock offsets ([`parse_offset`]) take a sign: `-2s`, `+500ms`.

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

const UNIT_NAMES: &str = "ns, us, ms, s, m, h, d";

/// Parse a non-negative duration such as `250ms`, `1.5s` or `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(format!(
            "invalid duration `{trimmed}`: negative; durations cannot be"
        ));
    }
    let nanos = parse_magnitude(trimmed.strip_prefix('+').unwrap_or(trimmed))?;
    let nanos = u64::try_from(nanos).map_err(|_| out_of_range(trimmed))?;
    Ok(Duration::from_nanos(nanos))
}

/// Parse a signed clock offset (`-2s`, `+500ms`, `3ms`), in nanoseconds.
pub fn parse_offset(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    let (negative, magnitude) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let nanos = parse_magnitude(magnitude)?;
    let nanos = i64::try_from(nanos).map_err(|_| out_of_range(trimmed))?;
    Ok(if negative { -nanos } else { nanos })
}

fn out_of_range(text: &str) -> String {
    format!("invalid duration `{text}`: out of range")
}

/// The sum of the `<number><unit>` parts of `text`, in nanoseconds.
fn parse_magnitude(text: &str) -> Result<u128, String> {
    if text.is_empty() {
        return Err("empty duration (expected e.g. `90s`, `5m`, `2h`)".into());
    }
    let mut total: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration `{text}`: expected a number at `{rest}` (like `1.5s` or `1h30m`)"
            ));
        }
        let number = &rest[..digits];
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_nanos = match UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, nanos)) => *nanos,
            None if unit.is_empty() => {
                return Err(format!(
                    "invalid duration `{text}`: missing unit ({UNIT_NAMES})"
                ))
            }
            None => {
                return Err(format!(
                    "invalid duration `{text}`: unknown unit `{unit}` ({UNIT_NAMES})"
                ))
            }
        };
        let part = scale(text, number, unit_nanos)?;
        total = total.checked_add(part).ok_or_else(|| out_of_range(text))?;
    }
    Ok(total)
}

/// `number` (decimal, maybe with a fraction) times `unit_nanos`, exactly.
fn scale(text: &str, number: &str, unit_nanos: u128) -> Result<u128, String> {
    let bad_number = || format!("invalid duration `{text}`: bad number `{number}`");
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) || fraction.contains('.') {
        return Err(bad_number());
    }
    let whole: u128 = whole.parse().map_err(|_| out_of_range(text))?;
    let mut nanos = whole
        .checked_mul(unit_nanos)
        .ok_or_else(|| out_of_range(text))?;
    if !fraction.is_empty() {
        if fraction.len() > 18 {
            return Err(format!(
                "invalid duration `{text}`: more decimals than a nanosecond resolves"
            ));
        }
        let denominator = 10u128.pow(fraction.len() as u32);
        let digits: u128 = fraction.parse().map_err(|_| bad_number())?;
        let scaled = digits * unit_nanos;
        if !scaled.is_multiple_of(denominator) {
            return Err(format!(
                "invalid duration `{text}`: finer than a nanosecond"
            ));
        }
        nanos = nanos
            .checked_add(scaled / denominator)
            .ok_or_else(|| out_of_range(text))?;
    }
    Ok(nanos)
}

/// Print a duration in the largest exact units, as configuration files
/// write them: `1h30m`, `1s500ms`, `250ms`.
pub fn format_duration(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    let mut left = nanos;
    let mut out = String::new();
    for (name, size) in UNITS.iter().rev() {
        if *name == "µs" {
            continue;
        }
        if left >= *size {
            out.push_str(&format!("{}{name}", left / size));
            left %= size;
        }
    }
    out
}

/// Print a duration as one number and unit, as fault plans and reports
/// write them: seconds with up to three decimals from one second on
/// (`1.5s`, `12.301s`), else the largest exact unit (`250ms`, `10us`).
pub fn format_decimal(duration: Duration) -> String {
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

/// Print a signed offset so that [`parse_offset`] gives it back exactly.
pub fn format_offset(offset_nanos: i64) -> String {
    let magnitude = format_decimal(Duration::from_nanos(offset_nanos.unsigned_abs()));
    if offset_nanos < 0 {
        format!("-{magnitude}")
    } else {
        format!("+{magnitude}")
    }
}

/// Serde helpers: `#[serde(with = "faultline_core::duration::serde_text")]`
/// reads and writes a `Duration` as text like `90s`.
pub mod serde_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as text.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::format_duration(*duration))
    }

    /// Deserialize from text.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        super::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_compounds_exactly() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse_duration("10us"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("10µs"), Ok(Duration::from_micros(10)));
        assert_eq!(parse_duration("3ns"), Ok(Duration::from_nanos(3)));
        assert_eq!(parse_duration("0.000000001s"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse_duration("+2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("0.1s"),
            Ok(Duration::from_millis(100)),
            "exact, where floating point would not be"
        );
    }

    #[test]
    fn bad_durations_say_why() {
        for (text, problem) in [
            ("", "empty duration"),
            ("-1s", "negative"),
            ("90", "missing unit"),
            ("3w", "unknown unit `w`"),
            ("s", "expected a number"),
            ("1.s", "bad number"),
            ("1.2.3s", "bad number"),
            ("0.5ns", "finer than a nanosecond"),
            ("0.0000000000000000001s", "more decimals"),
            ("99999999999999h", "out of range"),
        ] {
            let error = parse_duration(text).expect_err(text);
            assert!(error.contains(problem), "{text:?}: {error}");
        }
    }

    #[test]
    fn offsets_take_a_sign() {
        assert_eq!(parse_offset("-2s"), Ok(-2_000_000_000));
        assert_eq!(parse_offset("+500ms"), Ok(500_000_000));
        assert_eq!(parse_offset("3ms"), Ok(3_000_000));
        assert!(parse_offset("-").is_err());
    }

    #[test]
    fn both_printers_round_trip_to_the_nanosecond() {
        for nanos in [
            0,
            1,
            999,
            1_000,
            1_500_000,
            1_000_000_000,
            1_500_000_000,
            12_301_000_000,
            5_400_000_000_000,
            1_000_000_001,
            86_400_000_000_123,
        ] {
            let duration = Duration::from_nanos(nanos);
            assert_eq!(
                parse_duration(&format_duration(duration)),
                Ok(duration),
                "{nanos}"
            );
            assert_eq!(
                parse_duration(&format_decimal(duration)),
                Ok(duration),
                "{nanos}"
            );
        }
        for offset in [-2_000_000_000, 0, 1, -1_500_000] {
            assert_eq!(parse_offset(&format_offset(offset)), Ok(offset));
        }
    }

    #[test]
    fn printers_pick_the_largest_exact_units() {
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1_500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_nanos(1_001)), "1us1ns");
        assert_eq!(format_decimal(Duration::from_millis(1_500)), "1.5s");
        assert_eq!(format_decimal(Duration::from_millis(250)), "250ms");
        assert_eq!(format_decimal(Duration::from_micros(10)), "10us");
        assert_eq!(format_offset(-1_500_000_000), "-1.5s");
    }
}
