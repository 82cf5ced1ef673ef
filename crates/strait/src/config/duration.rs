//! Durations as written in the file: `250ms`, `5s`, `10m`, `1h` (and `0s`).

use std::time::Duration;

/// Parses `250ms`, `5s`, `10m`, `1h`, `2d`; returns a sentence on error.
pub fn parse_duration(_s: &str) -> Result<Duration, String> {
    todo!()
}

/// The inverse of [`parse_duration`], choosing the largest exact unit.
pub fn format_duration(_d: Duration) -> String {
    todo!()
}
