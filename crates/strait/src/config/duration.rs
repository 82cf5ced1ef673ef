//! Durations as written in the file: `250ms`, `5s`, `10m`, `1h`, `2d` (and `0s`).

use std::time::Duration;

const UNITS: &str = "ms, s, m, h or d";

/// Parses `250ms`, `5s`, `10m`, `1h`, `2d`: a whole number directly followed by a unit.
/// On error returns a sentence that quotes the text.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(digits_end);
    if s.is_empty() {
        return Err(format!(
            "the duration is empty; write a whole number followed by a unit ({UNITS}), such as 5s"
        ));
    }
    if digits.is_empty() {
        return Err(format!(
            "{s:?} is not a duration; write a whole number followed by a unit ({UNITS}), such as 5s"
        ));
    }
    let too_large = || format!("{s:?} is too large a duration");
    let n: u64 = digits.parse().map_err(|_| too_large())?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(too_large)
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(86_400),
        "" => Err(format!(
            "{s:?} has no unit; write a unit right after the number ({UNITS}), as in {n}s"
        )),
        _ if unit.starts_with('.') || unit.starts_with(',') => Err(format!(
            "{s:?} has a fraction; durations are whole numbers, so use a smaller unit (1500ms rather than 1.5s)"
        )),
        _ if unit.starts_with(char::is_whitespace)
            && ["ms", "s", "m", "h", "d"].contains(&unit.trim()) =>
        {
            Err(format!(
                "{s:?} has a space between the number and the unit; write them together, as in {n}{}",
                unit.trim()
            ))
        }
        _ => Err(format!(
            "{s:?} has an unknown unit {:?}; the units are {UNITS}",
            unit.trim()
        )),
    }
}

/// The inverse of [`parse_duration`], choosing the largest exact unit (`90s`, `1h`, `250ms`).
/// Zero is `0s`; anything finer than a millisecond is rounded down to whole milliseconds.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let units: [(&str, u128); 4] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ];
    for (unit, size) in units {
        if ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
    }

    #[test]
    fn zero_is_allowed() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_malformed_durations_with_a_reason() {
        let cases = [
            ("", "empty"),
            ("5", "no unit"),
            ("5 s", "space"),
            ("-1s", "not a duration"),
            ("1.5s", "fraction"),
            ("5sec", "unknown unit"),
            ("s", "not a duration"),
            ("99999999999999999999s", "too large"),
            ("18446744073709551615d", "too large"),
        ];
        for (text, reason) in cases {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn formats_with_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(172_800)), "2d");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_nanos(1_000_500)), "1ms");
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in 0u64..(1 << 50)) {
            let d = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
