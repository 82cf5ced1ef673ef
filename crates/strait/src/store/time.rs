//! History timestamps: RFC 3339 in UTC with milliseconds, computed from `SystemTime` with
//! the proleptic Gregorian calendar (no date crate needed for this one format).

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

const SECONDS_PER_DAY: u64 = 86_400;

/// `2024-05-01T12:34:56.789Z`. A clock set before 1970 reads as the epoch.
pub(crate) fn rfc3339_millis(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (year, month, day, of_day) = civil(since.as_secs());
    let millis = u64::from(since.subsec_millis());
    // Written digit by digit: `format!` cost ~3,000 instructions per access-log line.
    let mut text = *b"0000-00-00T00:00:00.000Z";
    let fields = [
        (0..4, year),
        (5..7, month),
        (8..10, day),
        (11..13, of_day / 3600),
        (14..16, of_day % 3600 / 60),
        (17..19, of_day % 60),
        (20..23, millis),
    ];
    if year > 9999 || !put_fields(&mut text, fields) {
        return format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            of_day / 3600,
            of_day % 3600 / 60,
            of_day % 60,
        );
    }
    String::from_utf8(text.to_vec()).unwrap_or_default()
}

/// Appends nginx's `$time_local` in UTC: `02/Dec/2026:01:52:46 +0000`.
pub(crate) fn push_combined_time(out: &mut String, time: SystemTime) {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let (year, month, day, of_day) = civil(seconds);
    let name = usize::try_from(month)
        .ok()
        .and_then(|m| MONTHS.get(m.wrapping_sub(1)))
        .unwrap_or(&b"Jan");
    let mut text = *b"00/Mon/0000:00:00:00 +0000";
    if let Some(slot) = text.get_mut(3..6) {
        slot.copy_from_slice(*name);
    }
    let fields = [
        (0..2, day),
        (7..11, year),
        (12..14, of_day / 3600),
        (15..17, of_day % 3600 / 60),
        (18..20, of_day % 60),
    ];
    let written = year <= 9999 && put_fields(&mut text, fields);
    match std::str::from_utf8(&text) {
        Ok(text) if written => out.push_str(text),
        _ => {
            let _ = write!(
                out,
                "{day:02}/{}/{year:04}:{:02}:{:02}:{:02} +0000",
                String::from_utf8_lossy(*name),
                of_day / 3600,
                of_day % 3600 / 60,
                of_day % 60,
            );
        }
    }
}

/// (year, month, day, second of the day) of `seconds` after the epoch.
fn civil(seconds: u64) -> (u64, u64, u64, u64) {
    // `u64::MAX / 86_400` fits in an i64 with room to spare.
    let days = i64::try_from(seconds / SECONDS_PER_DAY).unwrap_or(i64::MAX / 2);
    let (year, month, day) = civil_from_days(days);
    let unsigned = |n: i64| u64::try_from(n).unwrap_or(0);
    (
        unsigned(year),
        unsigned(month),
        unsigned(day),
        seconds % SECONDS_PER_DAY,
    )
}

/// Writes each value as decimal digits filling its range of `text`, zero-padded; false if a
/// range is not in `text` (nothing then says which digits were written).
fn put_fields<const N: usize>(text: &mut [u8], fields: [(std::ops::Range<usize>, u64); N]) -> bool {
    for (range, mut value) in fields {
        let Some(slot) = text.get_mut(range) else {
            return false;
        };
        for digit in slot.iter_mut().rev() {
            // `value % 10` is below 10: always a digit.
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    true
}

/// (year, month 1..=12, day 1..=31) of the day `days` after 1970-01-01, after Howard
/// Hinnant's `civil_from_days` (<https://howardhinnant.github.io/date_algorithms.html>).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    // Shift the epoch to 0000-03-01 so that the leap day ends each 400-year era's year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097); // 0..=146_096
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // 0..=399
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // 0..=365
    let month_from_march = (5 * day_of_year + 2) / 153; // 0..=11
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1; // 1..=31
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: u64, millis: u64) -> String {
        rfc3339_millis(UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis))
    }

    #[test]
    fn known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(946_684_799, 999), "1999-12-31T23:59:59.999Z");
        assert_eq!(at(1_735_689_599, 5), "2024-12-31T23:59:59.005Z");
        assert_eq!(at(4_107_542_400, 120), "2100-03-01T00:00:00.120Z");
        assert_eq!(at(1_714_566_896, 789), "2024-05-01T12:34:56.789Z");
    }

    #[test]
    fn combined_times() {
        let at = |seconds| {
            let mut text = String::new();
            push_combined_time(&mut text, UNIX_EPOCH + Duration::from_secs(seconds));
            text
        };
        assert_eq!(at(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(at(951_782_400), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(at(1_764_640_366), "02/Dec/2025:01:52:46 +0000");
        assert_eq!(at(4_107_542_400), "01/Mar/2100:00:00:00 +0000");
    }

    /// Past year 9999 the digits outgrow their places: written as `format!` would.
    #[test]
    fn years_past_9999_keep_every_digit() {
        let at = UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 86_400 + 3_661);
        assert_eq!(rfc3339_millis(at), "10000-01-02T01:01:01.000Z");
        let mut combined = "[".to_owned();
        push_combined_time(&mut combined, at);
        assert_eq!(combined, "[02/Jan/10000:01:01:01 +0000", "appended");
    }

    #[test]
    fn a_clock_before_1970_reads_as_the_epoch() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(rfc3339_millis(before), "1970-01-01T00:00:00.000Z");
    }

    /// Walks the calendar one day at a time for a thousand years and compares.
    #[test]
    fn agrees_with_counting_days() {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut year, mut month, mut day) = (1970, 1, 1);
        for days in 0..366_000 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let length = match month {
                2 if leap(year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }
}
