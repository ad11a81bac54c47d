//! Human-readable durations (`250ms`, `90s`, `5m`, `2h`, `1d`, `1h30m`) for
//! configuration files, scenario files and the command line, parsed and
//! printed in one place.

use std::time::Duration;

/// Parse a duration such as `250ms`, `90s`, `5m`, `2h`, `1d` or `1h30m`.
/// A bare number is refused: the unit is never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration (expected e.g. `90s`, `5m`, `2h`)".into());
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration `{trimmed}`: expected a number at `{rest}`"
            ));
        }
        let number: f64 = rest[..digits].parse().map_err(|_| {
            format!(
                "invalid duration `{trimmed}`: bad number `{}`",
                &rest[..digits]
            )
        })?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let unit_secs = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3_600.0,
            "d" => 86_400.0,
            "" => {
                return Err(format!(
                    "invalid duration `{trimmed}`: missing unit (ms, s, m, h, d)"
                ))
            }
            other => {
                return Err(format!(
                    "invalid duration `{trimmed}`: unknown unit `{other}` (ms, s, m, h, d)"
                ))
            }
        };
        let part = Duration::try_from_secs_f64(number * unit_secs)
            .map_err(|_| format!("invalid duration `{trimmed}`: out of range"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("invalid duration `{trimmed}`: out of range"))?;
    }
    Ok(total)
}

/// Print a duration the way [`parse_duration`] reads it, in the largest exact units.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis == 0 {
        return "0s".into();
    }
    let units: [(&str, u128); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let mut left = millis;
    let mut out = String::new();
    for (name, size) in units {
        if left >= size {
            out.push_str(&format!("{}{name}", left / size));
            left %= size;
        }
    }
    out
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
    fn parses_every_unit_and_compounds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7_200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1_500)));
    }

    #[test]
    fn refuses_missing_or_unknown_units() {
        assert!(parse_duration("90")
            .expect_err("no unit")
            .contains("missing unit"));
        assert!(parse_duration("3w")
            .expect_err("unknown unit")
            .contains("unknown unit `w`"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn format_round_trips() {
        for text in ["250ms", "90s", "5m", "2h", "1d", "1h30m", "1m1s1ms"] {
            let duration = parse_duration(text).expect("valid");
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
    }
}
